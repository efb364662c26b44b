#![no_main]
//! `cargo xtask fuzz dhcp_server`: the body is nodeboot_fuzz_targets::dhcp_server, which
//! the stable test suite replays over fuzz/corpus/dhcp_server and fuzz/artifacts/dhcp_server.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nodeboot_fuzz_targets::dhcp_server(data));
