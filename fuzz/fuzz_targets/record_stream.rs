#![no_main]
//! Fuzz target: see `protocol::fuzz_checks::record_stream` for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| protocol::fuzz_checks::record_stream(data));
