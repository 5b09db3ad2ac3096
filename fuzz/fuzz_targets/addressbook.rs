#![no_main]
//! Fuzz target: see `protocol::fuzz_checks::addressbook` for the properties checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| protocol::fuzz_checks::addressbook(data));
