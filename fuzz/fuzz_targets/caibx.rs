#![no_main]
//! `cargo xtask fuzz caibx`: the body is nodeboot_fuzz_targets::caibx, which
//! the stable test suite replays over fuzz/corpus/caibx and fuzz/artifacts/caibx.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nodeboot_fuzz_targets::caibx(data));
