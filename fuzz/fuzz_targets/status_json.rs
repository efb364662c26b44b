#![no_main]
//! `cargo xtask fuzz status_json`: the body is nodeboot_fuzz_targets::status_json, which
//! the stable test suite replays over fuzz/corpus/status_json and fuzz/artifacts/status_json.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nodeboot_fuzz_targets::status_json(data));
