#![no_main]
//! `cargo xtask fuzz ldap`: the body is nodeboot_fuzz_targets::ldap, which
//! the stable test suite replays over fuzz/corpus/ldap and fuzz/artifacts/ldap.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nodeboot_fuzz_targets::ldap(data));
