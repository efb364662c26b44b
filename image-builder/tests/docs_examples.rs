//! The docs' site (`docs/src`) against the real nodeimg: every `nodeimg …`
//! command line parses with its clap definition, and the generated command
//! reference is what the binary says now.
use nodeboot_clidocs::examples;
use std::path::Path;

fn docs() -> std::path::PathBuf {
    examples::docs_src(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn nodeimg_command_lines_parse() {
    let bin = Path::new(env!("CARGO_BIN_EXE_nodeimg"));
    let (n, refused) = examples::refused_command_lines(bin, "nodeimg", &docs()).unwrap();
    assert!(n >= 3, "only {n} nodeimg command lines in the docs");
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
}

#[test]
fn nodeimg_command_reference_is_current() {
    let bin = Path::new(env!("CARGO_BIN_EXE_nodeimg"));
    if let Some(d) = examples::markdown_drift(bin, "nodeimg", &docs()).unwrap() {
        panic!("{d}");
    }
}
