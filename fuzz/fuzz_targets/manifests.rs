#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aviary_core::fuzz::manifests(data));
