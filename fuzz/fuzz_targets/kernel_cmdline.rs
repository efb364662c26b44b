#![no_main]
//! `cargo xtask fuzz kernel_cmdline`: the body is nodeboot_fuzz_targets::kernel_cmdline, which
//! the stable test suite replays over fuzz/corpus/kernel_cmdline and fuzz/artifacts/kernel_cmdline.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nodeboot_fuzz_targets::kernel_cmdline(data));
