#![no_main]
//! `cargo xtask fuzz inventory`: the body is nodeboot_fuzz_targets::inventory, which
//! the stable test suite replays over fuzz/corpus/inventory and fuzz/artifacts/inventory.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nodeboot_fuzz_targets::inventory(data));
