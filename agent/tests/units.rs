//! Every unit the nodectl package ships (the node's units in systemd/ and
//! the initrd's in the dracut module) passes `systemd-analyze verify` as
//! shipped, with ExecStart pointed at the nodectl just built (verify checks
//! that the command exists) and its man pages found where the package puts
//! them (here: `nodectl generate-docs`, the pages the package ships).
use std::path::{Path, PathBuf};
use std::process::Command;

fn units() -> Vec<PathBuf> {
    let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut v = Vec::new();
    for dir in ["systemd", "dracut-module/90nodeboot"] {
        for e in std::fs::read_dir(top.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "service") {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

fn verify(unit: &Path, manpath: &Path) -> (bool, String) {
    let o = Command::new("systemd-analyze")
        .env("MANPATH", manpath)
        .arg("verify")
        .arg(unit)
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

/// The unit's text with ExecStart's /usr/bin/nodectl replaced by the built binary.
fn with_built(dir: &Path, name: &str, text: &str) -> PathBuf {
    let shipped = "ExecStart=/usr/bin/nodectl ";
    assert!(text.contains(shipped), "{name}: no {shipped:?}");
    let built = format!("ExecStart={} ", env!("CARGO_BIN_EXE_nodectl"));
    let p = dir.join(name);
    std::fs::write(&p, text.replace(shipped, &built)).unwrap();
    p
}

#[test]
fn every_shipped_unit_verifies() {
    let units = units();
    let names: Vec<String> = units
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "nodectl-live.service",
        "nodectl-provision.service",
        "nodectl-services.service",
        "nodeboot-status.service",
        "nodectl-serve-chunks.service",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} not found: {names:?}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    let st = Command::new(env!("CARGO_BIN_EXE_nodectl"))
        .arg("generate-docs")
        .arg(&docs)
        .status()
        .unwrap();
    assert!(st.success(), "nodectl generate-docs: {st}");
    let manpath = docs.join("man");
    for (p, name) in units.iter().zip(&names) {
        let text = std::fs::read_to_string(p).unwrap();
        let (ok, out) = verify(&with_built(dir.path(), name, &text), &manpath);
        assert!(
            ok && out.trim().is_empty(),
            "systemd-analyze verify {name}:\n{out}"
        );
    }
    // The check can fail: a misspelt key.
    let text = std::fs::read_to_string(&units[0]).unwrap();
    let bad = with_built(
        dir.path(),
        &names[0],
        &text.replacen("[Service]", "[Service]\nTypo=oneshot", 1),
    );
    let (ok, out) = verify(&bad, &manpath);
    assert!(!ok || out.contains("Typo"), "a misspelt key passed:\n{out}");
    // And a page the package does not ship.
    let text = std::fs::read_to_string(&units[0]).unwrap();
    let nodoc = with_built(
        dir.path(),
        &names[0],
        &text.replacen("[Unit]", "[Unit]\nDocumentation=man:nodectl-nosuch(1)", 1),
    );
    let (ok, out) = verify(&nodoc, &manpath);
    assert!(
        !ok || out.contains("nodectl-nosuch"),
        "a missing page passed:\n{out}"
    );
}
