#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aviary_providers::loadtester::fuzz::loadtester_json(data));
