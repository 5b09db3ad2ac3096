#![no_main]
//! Fuzz target: see `protocol::fuzz_checks::chat_header` for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| protocol::fuzz_checks::chat_header(data));
