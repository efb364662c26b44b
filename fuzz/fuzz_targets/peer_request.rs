#![no_main]
//! `cargo xtask fuzz peer_request`: the body is nodeboot_fuzz_targets::peer_request, which
//! the stable test suite replays over fuzz/corpus/peer_request and fuzz/artifacts/peer_request.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nodeboot_fuzz_targets::peer_request(data));
