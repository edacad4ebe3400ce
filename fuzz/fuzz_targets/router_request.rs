#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aviary_local::router::router_request(data));
