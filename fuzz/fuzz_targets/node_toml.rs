#![no_main]
//! `cargo xtask fuzz node_toml`: the body is nodeboot_fuzz_targets::node_toml, which
//! the stable test suite replays over fuzz/corpus/node_toml and fuzz/artifacts/node_toml.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nodeboot_fuzz_targets::node_toml(data));
