#![no_main]
//! `cargo xtask fuzz tar`: the body is nodeboot_fuzz_targets::tar, which
//! the stable test suite replays over fuzz/corpus/tar and fuzz/artifacts/tar.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nodeboot_fuzz_targets::tar(data));
