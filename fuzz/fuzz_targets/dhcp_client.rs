#![no_main]
//! `cargo xtask fuzz dhcp_client`: the body is nodeboot_fuzz_targets::dhcp_client, which
//! the stable test suite replays over fuzz/corpus/dhcp_client and fuzz/artifacts/dhcp_client.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nodeboot_fuzz_targets::dhcp_client(data));
