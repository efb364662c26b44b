//! `cargo xtask dist`: the .deb packages of nodectl, bootd and nodeimg.
//!
//! The static release binaries ([`build`]), their man pages and shell
//! completions (each binary's hidden `generate-docs DIR`, checked: a page
//! per subcommand of `--help`, groff renders each without a warning), then
//! cargo-deb with each crate's `[package.metadata.deb]`, then lintian, which
//! must report no error.
use crate::{build, deps};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One package: the crate holding its metadata (name, directory), the
/// package's name, the binary.
pub struct Package {
    pub krate: &'static str,
    pub dir: &'static str,
    pub deb: &'static str,
    pub bin: &'static str,
}

pub const NODECTL: Package = Package {
    krate: "nodeboot-agent",
    dir: "agent",
    deb: "nodeboot-nodectl",
    bin: "nodectl",
};
pub const BOOTD: Package = Package {
    krate: "nodeboot-boot-server",
    dir: "boot-server",
    deb: "nodeboot-bootd",
    bin: "bootd",
};
pub const NODEIMG: Package = Package {
    krate: "nodeboot-image-builder",
    dir: "image-builder",
    deb: "nodeboot-nodeimg",
    bin: "nodeimg",
};
pub const PACKAGES: [&Package; 3] = [&NODECTL, &BOOTD, &NODEIMG];

/// Where the packages go by default: `TARGET_DIR/dist`.
pub fn default_out() -> PathBuf {
    build::target_dir().join("dist")
}

/// `cargo xtask dist`: build the three packages into `out`, run lintian on
/// each; fails on a lintian error, lists its warnings.
pub fn run(out: &Path) -> Result<Vec<PathBuf>> {
    let debs = debs(&PACKAGES, out)?;
    let mut errors = 0;
    let mut report = String::new();
    for deb in &debs {
        let tags = lintian(deb)?;
        let e = tags.iter().filter(|t| t.starts_with("E: ")).count();
        let w = tags.iter().filter(|t| t.starts_with("W: ")).count();
        eprintln!(
            "xtask: {} ({} bytes): lintian {e} errors, {w} warnings",
            deb.display(),
            std::fs::metadata(deb)?.len()
        );
        for t in &tags {
            eprintln!("  {t}");
            report.push_str(t);
            report.push('\n');
        }
        errors += e;
    }
    let path = out.join("lintian.txt");
    std::fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    if errors > 0 {
        bail!(
            "lintian: {errors} errors (listed above, and in {})",
            path.display()
        );
    }
    Ok(debs)
}

/// Build the release binaries, then the packages `pkgs` into `out`
/// (made if missing); returns the .deb files, in the order of `pkgs`.
pub fn debs(pkgs: &[&Package], out: &Path) -> Result<Vec<PathBuf>> {
    let bins = build::nodectl_static()?
        .parent()
        .context("release directory")?
        .to_path_buf();
    let cargo_deb = deps::cargo_deb()?;
    std::fs::create_dir_all(out).with_context(|| format!("making {}", out.display()))?;
    let version = workspace_version()?;
    let mut debs = Vec::new();
    for p in pkgs {
        check_changelog(p, &version)?;
        // cargo-deb reads them as target/release/docs/BIN/… (its name for
        // the release directory of --target).
        let docs = bins.join("docs").join(p.bin);
        if docs.exists() {
            std::fs::remove_dir_all(&docs)
                .with_context(|| format!("removing {}", docs.display()))?;
        }
        let bin = bins.join(p.bin);
        build::run(
            Command::new(&bin)
                .arg("generate-docs")
                .arg(&docs)
                .stdout(Stdio::null()),
        )?;
        let pages = check_docs(&bin, &docs)?;
        eprintln!("xtask: {}: {} man pages, all render", p.bin, pages.len());
        // Compressed here: cargo-deb compresses the pages it finds outside
        // target/, not the ones made by the build (lintian: uncompressed-manual-page).
        build::run(Command::new("gzip").args(["-9", "-n"]).args(&pages))?;
        let o = Command::new(&cargo_deb)
            .current_dir(build::root())
            .args(["deb", "--no-build", "--no-strip", "--target", build::TARGET])
            .args(["-p", p.krate, "-o"])
            .arg(out)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", cargo_deb.display()))?;
        if !o.status.success() {
            bail!("cargo-deb -p {} failed ({})", p.krate, o.status);
        }
        let deb = String::from_utf8_lossy(&o.stdout)
            .lines()
            .rev()
            .find(|l| l.trim_end().ends_with(".deb"))
            .map(|l| PathBuf::from(l.trim()))
            .with_context(|| format!("cargo-deb -p {}: no .deb path in its output", p.krate))?;
        debs.push(deb);
    }
    Ok(debs)
}

/// The .rpm packages of `pkgs` into `out` with cargo-generate-rpm, from the
/// binaries and docs [`debs`] left (run it first); each is checked with
/// `rpm -qlp`: it holds the binary and its man page.
pub fn rpms(pkgs: &[&Package], out: &Path) -> Result<Vec<PathBuf>> {
    let tool = deps::cargo_generate_rpm()?;
    let mut rpms = Vec::new();
    for p in pkgs {
        let rpm = out.join(format!("{}-{}.x86_64.rpm", p.deb, workspace_version()?));
        build::run(
            Command::new(&tool)
                .current_dir(build::root())
                .args(["generate-rpm", "--target", build::TARGET, "-p", p.dir, "-o"])
                .arg(&rpm),
        )?;
        let o = Command::new("rpm")
            .arg("-qlp")
            .arg(&rpm)
            .output()
            .context("running rpm (Debian package rpm)")?;
        let list = String::from_utf8_lossy(&o.stdout);
        if !o.status.success() {
            bail!("rpm -qlp {}: {}", rpm.display(), o.status);
        }
        for want in [
            format!("/usr/bin/{}", p.bin),
            format!("/usr/share/man/man1/{}.1.gz", p.bin),
        ] {
            if !list.lines().any(|l| l == want) {
                bail!("{}: no {want} in rpm -qlp:\n{list}", rpm.display());
            }
        }
        eprintln!(
            "xtask: {} ({} bytes, {} files)",
            rpm.display(),
            std::fs::metadata(&rpm)?.len(),
            list.lines().count()
        );
        rpms.push(rpm);
    }
    Ok(rpms)
}

/// The workspace's version (`[workspace.package] version`).
fn workspace_version() -> Result<String> {
    let path = build::root().join("Cargo.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut in_section = false;
    for l in text.lines() {
        let l = l.trim();
        if l.starts_with('[') {
            in_section = l == "[workspace.package]";
        } else if let (true, Some(v)) = (in_section, l.strip_prefix("version")) {
            if let Some(v) = v.trim().strip_prefix('=') {
                return Ok(v.trim().trim_matches('"').to_string());
            }
        }
    }
    bail!("{}: no version in [workspace.package]", path.display())
}

/// The package's `dist/changelog` starts with `DEB (VERSION-…)`: lintian
/// and dpkg read the package's version there too.
fn check_changelog(p: &Package, version: &str) -> Result<()> {
    let path = build::root().join(p.dir).join("dist/changelog");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let first = text.lines().next().unwrap_or_default();
    check_changelog_line(first, p.deb, version).with_context(|| path.display().to_string())
}

fn check_changelog_line(first: &str, deb: &str, version: &str) -> Result<()> {
    let want = format!("{deb} ({version}-");
    if !first.starts_with(&want) {
        bail!(
            "the first entry is `{first}`, expected `{want}N) …`: add an entry for version {version}"
        );
    }
    Ok(())
}

/// Every subcommand that `BIN … --help` lists has its page `BIN-…​.1` in
/// `docs/man/man1`, and groff renders every page there without a warning.
/// Returns the pages.
fn check_docs(bin: &Path, docs: &Path) -> Result<Vec<PathBuf>> {
    let name = bin
        .file_name()
        .context("binary name")?
        .to_string_lossy()
        .into_owned();
    let man = docs.join("man/man1");
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    while let Some(path) = todo.pop() {
        let o = Command::new(bin)
            .args(&path)
            .arg("--help")
            .output()
            .with_context(|| format!("running {} --help", bin.display()))?;
        let help = String::from_utf8_lossy(&o.stdout);
        let page = std::iter::once(name.as_str())
            .chain(path.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join("-");
        if !man.join(format!("{page}.1")).is_file() {
            bail!(
                "no man page {} for `{name} {}`",
                man.join(format!("{page}.1")).display(),
                path.join(" ")
            );
        }
        for sub in subcommands(&help) {
            let mut p = path.clone();
            p.push(sub);
            todo.push(p);
        }
    }
    let mut pages = Vec::new();
    for e in std::fs::read_dir(&man).with_context(|| format!("listing {}", man.display()))? {
        let page = e?.path();
        let o = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&page)
            .output()
            .context("running groff (Debian package groff-base)")?;
        let err = String::from_utf8_lossy(&o.stderr);
        if !o.status.success() || !err.trim().is_empty() {
            bail!("groff -man -ww {}: {}{err}", page.display(), o.status);
        }
        pages.push(page);
    }
    pages.sort();
    Ok(pages)
}

/// The subcommands of a clap `--help` text (its `Commands:` section), but
/// `help`.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim_end() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l[2..].starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| *w != "help")
        .map(String::from)
        .collect()
}

/// lintian's tags for `deb` (`E: …`, `W: …`, `I: …`, `N: …` lines, overrides
/// applied); an error only when lintian itself fails.
pub fn lintian(deb: &Path) -> Result<Vec<String>> {
    let o = Command::new("lintian")
        .args([
            "--display-info",
            "--no-tag-display-limit",
            "--fail-on",
            "none",
        ])
        .arg(deb)
        .output()
        .context("running lintian (Debian package lintian)")?;
    if !o.status.success() {
        bail!(
            "lintian {} failed ({}): {}",
            deb.display(),
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(tags(&String::from_utf8_lossy(&o.stdout)))
}

fn tags(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| ["E: ", "W: ", "I: "].iter().any(|p| l.starts_with(p)))
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subcommands_of_a_clap_help() {
        let help = "nodeboot node agent\n\nUsage: nodectl <COMMAND>\n\nCommands:\n  \
            fetch           Fetch a file over http(s) with sha256 verification, resume\n                  \
            and retries\n  secret          This host's secrets\n  format-disk     Partition\n  \
            help            Print this message\n\nOptions:\n  -h, --help     Print help\n";
        assert_eq!(subcommands(help), ["fetch", "secret", "format-disk"]);
        assert!(subcommands("Usage: x [OPTIONS]\n\nOptions:\n  -h  help\n").is_empty());
    }

    #[test]
    fn changelog_must_name_the_package_and_version() {
        assert!(check_changelog_line(
            "nodeboot-bootd (0.1.0-1) unstable; urgency=medium",
            "nodeboot-bootd",
            "0.1.0"
        )
        .is_ok());
        let e = check_changelog_line(
            "nodeboot-bootd (0.0.9-1) unstable; urgency=medium",
            "nodeboot-bootd",
            "0.1.0",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("expected `nodeboot-bootd (0.1.0-N) …`"), "{e}");
    }

    #[test]
    fn the_changelogs_in_the_tree_match_the_workspace_version() {
        let v = workspace_version().unwrap();
        for p in PACKAGES {
            check_changelog(p, &v).unwrap();
        }
    }

    #[test]
    fn lintian_tags_are_the_tag_lines() {
        let out = "E: nodeboot-nodectl: embedded-library usr/bin/nodectl\n\
                   N: explanation\nW: nodeboot-bootd: no-manual-page usr/bin/x\n";
        assert_eq!(tags(out).len(), 2);
    }
}
