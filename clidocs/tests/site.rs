//! The docs' site (`docs/src`) as a whole: no broken link or anchor, and
//! every TOML or JSON block says which parser checks it (the crates'
//! `tests/docs_examples.rs` load them); `fragment`s are at least TOML/JSON.
use nodeboot_clidocs::examples;

fn docs() -> std::path::PathBuf {
    examples::docs_src(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn links_and_anchors_resolve() {
    let broken = examples::broken_links(&docs()).unwrap();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_toml_and_json_block_names_its_parser() {
    let mut bad = Vec::new();
    let mut n = 0;
    for b in examples::blocks(&docs()).unwrap() {
        if b.lang != "toml" && b.lang != "json" {
            continue;
        }
        n += 1;
        match b.kind.as_deref() {
            Some(k) if examples::KINDS.contains(&k) => {}
            k => bad.push(format!(
                "{}: ```{} needs a kind ({}), has {k:?}",
                b.at,
                b.lang,
                examples::KINDS.join(", ")
            )),
        }
        if b.kind.as_deref() == Some("fragment") {
            let r = if b.lang == "toml" {
                b.text
                    .parse::<toml::Table>()
                    .map(drop)
                    .map_err(|e| e.to_string())
            } else {
                serde_json::from_str::<serde_json::Value>(&b.text)
                    .map(drop)
                    .map_err(|e| e.to_string())
            };
            if let Err(e) = r {
                bad.push(format!("{}: not {}: {e}", b.at, b.lang));
            }
        }
    }
    assert!(n >= 6, "only {n} TOML/JSON blocks");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
