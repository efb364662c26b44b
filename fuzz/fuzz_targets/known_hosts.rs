#![no_main]
//! `cargo xtask fuzz known_hosts`: the body is nodeboot_fuzz_targets::known_hosts, which
//! the stable test suite replays over fuzz/corpus/known_hosts and fuzz/artifacts/known_hosts.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nodeboot_fuzz_targets::known_hosts(data));
