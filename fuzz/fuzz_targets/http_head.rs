#![no_main]
//! `cargo xtask fuzz http_head`: the body is nodeboot_fuzz_targets::http_head, which
//! the stable test suite replays over fuzz/corpus/http_head and fuzz/artifacts/http_head.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nodeboot_fuzz_targets::http_head(data));
