#![no_main]
//! `cargo xtask fuzz router_solicitation`: the body is nodeboot_fuzz_targets::router_solicitation, which
//! the stable test suite replays over fuzz/corpus/router_solicitation and fuzz/artifacts/router_solicitation.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nodeboot_fuzz_targets::router_solicitation(data));
