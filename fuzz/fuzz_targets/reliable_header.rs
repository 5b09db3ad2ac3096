#![no_main]
//! Fuzz target: see `protocol::fuzz_checks::reliable_header` for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| protocol::fuzz_checks::reliable_header(data));
