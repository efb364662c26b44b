//! The docs' site (`docs/src`) against the real bootd: every inventory,
//! bootd.toml and Grendel JSON example loads with the parsers bootd uses,
//! every `bootd …` command line parses with its clap definition, and the
//! generated command reference is what the binary says now.
use nodeboot_boot_server::config::Options;
use nodeboot_boot_server::inventory::{import_grendel_files, Inventory};
use nodeboot_clidocs::examples;
use std::path::Path;

fn docs() -> std::path::PathBuf {
    examples::docs_src(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn inventory_examples_load() {
    let blocks = examples::blocks_of(&docs(), "toml", "inventory").unwrap();
    assert!(
        blocks.len() >= 2,
        "only {} inventory examples",
        blocks.len()
    );
    for b in blocks {
        if let Err(e) = Inventory::parse(&b.text, "inventory.toml") {
            panic!("{}: the inventory example is refused: {e}", b.at);
        }
    }
}

#[test]
fn bootd_toml_examples_load() {
    let blocks = examples::blocks_of(&docs(), "toml", "bootd").unwrap();
    assert!(!blocks.is_empty(), "no bootd.toml example");
    for b in blocks {
        if let Err(e) = Options::parse(&b.text, "bootd.toml") {
            panic!("{}: the bootd.toml example is refused: {e}", b.at);
        }
    }
}

#[test]
fn grendel_examples_import() {
    let blocks = examples::blocks_of(&docs(), "json", "grendel").unwrap();
    assert!(blocks.len() >= 2, "only {} Grendel examples", blocks.len());
    for b in blocks {
        if let Err(e) = import_grendel_files(&[("grendel.json", &b.text)]) {
            panic!("{}: the Grendel example does not import: {e:#}", b.at);
        }
    }
}

/// The migration guide's inventory is what `import-grendel` makes of the
/// guide's Grendel files, and its notes are the guide's.
#[test]
fn migration_guide_shows_the_real_import() {
    let page = docs().join("migrating-from-grendel.md");
    let at = page.display().to_string();
    let of_page = |b: &examples::Block| b.at.starts_with(&format!("{at}:"));
    let json: Vec<_> = examples::blocks_of(&docs(), "json", "grendel")
        .unwrap()
        .into_iter()
        .filter(of_page)
        .collect();
    assert_eq!(json.len(), 2, "the guide's hosts and images");
    let files = [
        ("hosts.json", json[0].text.as_str()),
        ("images.json", json[1].text.as_str()),
    ];
    let (toml, notes) = import_grendel_files(&files).unwrap();
    let inv = examples::blocks_of(&docs(), "toml", "inventory")
        .unwrap()
        .into_iter()
        .find(of_page)
        .expect("the guide's inventory");
    assert_eq!(inv.text.trim(), toml.trim(), "{}", inv.at);
    let text = std::fs::read_to_string(&page).unwrap();
    for n in notes {
        assert!(
            text.contains(&format!("bootd: {n}")),
            "{at}: note missing: {n}"
        );
    }
}

#[test]
fn bootd_command_lines_parse() {
    let bin = Path::new(env!("CARGO_BIN_EXE_bootd"));
    let (n, refused) = examples::refused_command_lines(bin, "bootd", &docs()).unwrap();
    assert!(n >= 3, "only {n} bootd command lines in the docs");
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
}

#[test]
fn bootd_command_reference_is_current() {
    let bin = Path::new(env!("CARGO_BIN_EXE_bootd"));
    if let Some(d) = examples::markdown_drift(bin, "bootd", &docs()).unwrap() {
        panic!("{d}");
    }
}
