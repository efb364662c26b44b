#![no_main]
//! `cargo xtask fuzz identity`: the body is nodeboot_fuzz_targets::identity,
//! which the stable test suite replays over fuzz/corpus/identity and
//! fuzz/artifacts/identity.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nodeboot_fuzz_targets::identity(data));
