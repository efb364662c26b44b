#![no_main]
//! `cargo xtask fuzz tftp_request`: the body is nodeboot_fuzz_targets::tftp_request, which
//! the stable test suite replays over fuzz/corpus/tftp_request and fuzz/artifacts/tftp_request.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nodeboot_fuzz_targets::tftp_request(data));
