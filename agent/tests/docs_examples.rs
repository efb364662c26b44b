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

/// Every kernel command-line key named in nodectl's source (a string
/// literal starting `nodeboot.`, `grendel.`, `rd.live.` or `rd.neednet`)
/// is in the reference's table.
#[test]
fn every_cmdline_key_is_in_the_reference() {
    let page = docs().join("reference/kernel-cmdline.md");
    let text = std::fs::read_to_string(&page).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut keys = std::collections::BTreeSet::new();
    let mut todo = vec![src];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let s = std::fs::read_to_string(&p).unwrap();
            for (i, _) in s.match_indices('"') {
                let rest = &s[i + 1..];
                if !["nodeboot.", "grendel.", "rd.live.", "rd.neednet"]
                    .iter()
                    .any(|k| rest.starts_with(k))
                {
                    continue;
                }
                let key: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_')
                    .collect();
                keys.insert(key.trim_end_matches('.').to_string());
            }
        }
    }
    assert!(keys.len() >= 15, "only {} keys found: {keys:?}", keys.len());
    let missing: Vec<_> = keys
        .iter()
        .filter(|k| !text.contains(&format!("`{k}=")) && !text.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "{}: keys nodectl reads but the table does not name: {missing:?}",
        page.display()
    );
}
