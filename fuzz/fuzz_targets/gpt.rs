#![no_main]
//! `cargo xtask fuzz gpt`: the body is nodeboot_fuzz_targets::gpt, which
//! the stable test suite replays over fuzz/corpus/gpt and fuzz/artifacts/gpt.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nodeboot_fuzz_targets::gpt(data));
