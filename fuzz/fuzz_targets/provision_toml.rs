#![no_main]
//! `cargo xtask fuzz provision_toml`: the body is nodeboot_fuzz_targets::provision_toml, which
//! the stable test suite replays over fuzz/corpus/provision_toml and fuzz/artifacts/provision_toml.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nodeboot_fuzz_targets::provision_toml(data));
