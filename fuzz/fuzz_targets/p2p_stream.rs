#![no_main]
//! Fuzz target: see `protocol::fuzz_checks::p2p_stream` for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| protocol::fuzz_checks::p2p_stream(data));
