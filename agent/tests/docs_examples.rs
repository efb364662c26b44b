//! The docs' site (`docs/src`) against the real nodectl: every node.toml
//! and provision.toml example loads with nodectl's parsers, every
//! `nodectl …` command line parses with its clap definition, and the
//! generated command reference is what the binary says now.
use nodeboot_agent::{nodetoml, provision};
use nodeboot_clidocs::examples;
use std::path::Path;

fn docs() -> std::path::PathBuf {
    examples::docs_src(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn node_toml_examples_load() {
    let blocks = examples::blocks_of(&docs(), "toml", "node").unwrap();
    assert!(
        blocks.len() >= 2,
        "only {} node.toml examples",
        blocks.len()
    );
    for b in blocks {
        if let Err(e) = nodetoml::parse(&b.text, Path::new("node.toml")) {
            panic!("{}: the node.toml example is refused: {e:#}", b.at);
        }
    }
}

#[test]
fn provision_toml_examples_load() {
    let blocks = examples::blocks_of(&docs(), "toml", "provision").unwrap();
    assert!(!blocks.is_empty(), "no provision.toml example");
    for b in blocks {
        if let Err(e) = provision::parse_config(&b.text, Path::new("provision.toml")) {
            panic!("{}: the provision.toml example is refused: {e:#}", b.at);
        }
    }
}

#[test]
fn nodectl_command_lines_parse() {
    let bin = Path::new(env!("CARGO_BIN_EXE_nodectl"));
    let (n, refused) = examples::refused_command_lines(bin, "nodectl", &docs()).unwrap();
    assert!(n >= 5, "only {n} nodectl command lines in the docs");
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
}

#[test]
fn nodectl_command_reference_is_current() {
    let bin = Path::new(env!("CARGO_BIN_EXE_nodectl"));
    if let Some(d) = examples::markdown_drift(bin, "nodectl", &docs()).unwrap() {
        panic!("{d}");
    }
}
