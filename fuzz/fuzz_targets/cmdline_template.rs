#![no_main]
//! `cargo xtask fuzz cmdline_template`: the body is nodeboot_fuzz_targets::cmdline_template, which
//! the stable test suite replays over fuzz/corpus/cmdline_template and fuzz/artifacts/cmdline_template.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nodeboot_fuzz_targets::cmdline_template(data));
