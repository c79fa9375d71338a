//! libFuzzer entry for `acrpull::fuzzing::server_suffix` (the body is shared with the stable corpus replay).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| acrpull::fuzzing::server_suffix(data));
