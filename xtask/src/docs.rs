//! `cargo xtask docs`: the documentation site (mdBook) of `docs/`, built
//! into `TARGET_DIR/docs` (not committed). First the command reference
//! pages are written from the binaries' clap definitions (each binary's
//! hidden `generate-markdown FILE`), so the site says what the binaries
//! say; the crates' `tests/docs_examples.rs` fail when the committed pages
//! differ. `cargo xtask test` also opens the site in headless Chromium and
//! keeps a screenshot of its start page ([`screenshot`]).
use crate::build;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The binaries whose command reference the site holds: (package, binary).
const BINARIES: [(&str, &str); 3] = [
    ("nodeboot-agent", "nodectl"),
    ("nodeboot-boot-server", "bootd"),
    ("nodeboot-image-builder", "nodeimg"),
];

/// The browser of [`screenshot`] (Debian's chromium, which `deps` installs).
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Where [`screenshot`] keeps the start page's picture: TARGET_DIR/docs-start.png.
pub fn screenshot_path() -> PathBuf {
    build::target_dir().join("docs-start.png")
}

/// Where the site is built.
pub fn out_dir() -> PathBuf {
    build::target_dir().join("docs")
}

/// Write the command reference pages, then build the site with mdBook
/// into [`out_dir`]; returns its `index.html`.
pub fn build() -> Result<PathBuf> {
    let root = build::root();
    let mut cargo = Command::new(env!("CARGO"));
    cargo.current_dir(&root).args(["build", "--bins"]);
    for (pkg, _) in BINARIES {
        cargo.args(["-p", pkg]);
    }
    build::run(&mut cargo)?;
    let pages = root.join("docs/src/reference/commands");
    for (_, bin) in BINARIES {
        let exe = build::target_dir().join("debug").join(bin);
        let page = pages.join(format!("{bin}.md"));
        build::run(Command::new(&exe).arg("generate-markdown").arg(&page))?;
    }
    let mdbook = crate::deps::mdbook()?;
    let out = out_dir();
    build::run(
        Command::new(&mdbook)
            .current_dir(&root)
            .args(["build", "docs", "--dest-dir"])
            .arg(&out),
    )?;
    let index = out.join("index.html");
    let html =
        std::fs::read_to_string(&index).with_context(|| format!("reading {}", index.display()))?;
    if !html.contains("nodeboot") {
        bail!("{}: the start page does not name nodeboot", index.display());
    }
    Ok(index)
}

/// The start page `index` in headless Chromium, its screenshot written to
/// `png` (1280×900) and checked: a PNG of that size, not blank.
pub fn screenshot(index: &Path, png: &Path) -> Result<()> {
    let tmp = build::target_dir().join("docs-chromium");
    chromium_screenshot(
        &format!("file://{}", index.display()),
        png,
        (1280, 900),
        &tmp,
    )?;
    let bytes = std::fs::read(png).with_context(|| format!("reading {}", png.display()))?;
    check_png(&bytes, 1280, 900)
        .with_context(|| format!("the screenshot {} of {}", png.display(), index.display()))
}

/// `url` in headless Chromium, its screenshot written to `png` at `size`;
/// Chromium's profile, caches and log go to `tmp` (made afresh). Bounded
/// by 60 s; the error carries Chromium's log. Also the QEMU boots' picture
/// of bootd's status page.
pub fn chromium_screenshot(url: &str, png: &Path, size: (u32, u32), tmp: &Path) -> Result<()> {
    let chromium = Path::new(CHROMIUM);
    let _ = std::fs::remove_dir_all(tmp);
    std::fs::create_dir_all(tmp).with_context(|| format!("making {}", tmp.display()))?;
    let log = tmp.join("chromium.log");
    let out = std::fs::File::create(&log)?;
    let _ = std::fs::remove_file(png);
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--window-size={},{}", size.0, size.1))
        .arg(format!("--user-data-dir={}", tmp.join("profile").display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(url)
        // Keep Chromium's caches and crash reports out of $HOME.
        .env("HOME", tmp)
        .env("XDG_CONFIG_HOME", tmp)
        .env("XDG_CACHE_HOME", tmp)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", chromium.display()))?;
    let t0 = Instant::now();
    while child.try_wait()?.is_none() {
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "chromium still running after 60 s:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !png.exists() {
        bail!(
            "no screenshot {}:\n{}",
            png.display(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    Ok(())
}

/// `bytes` is a PNG of `w`×`h`, and not a blank page (a blank one
/// compresses to a few KB).
fn check_png(bytes: &[u8], w: u32, h: u32) -> Result<()> {
    if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") || bytes.len() < 24 || &bytes[12..16] != b"IHDR" {
        bail!("not a PNG");
    }
    let dim = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    if (dim(16), dim(20)) != (w, h) {
        bail!("{}×{}, not {w}×{h}", dim(16), dim(20));
    }
    if bytes.len() < 20_000 {
        bail!("{} bytes: a blank page?", bytes.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_checks() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend(1280u32.to_be_bytes());
        png.extend(900u32.to_be_bytes());
        let small = png.clone();
        png.resize(30_000, 0);
        check_png(&png, 1280, 900).unwrap();
        assert_eq!(
            check_png(&png, 1000, 500).unwrap_err().to_string(),
            "1280×900, not 1000×500"
        );
        assert!(check_png(&small, 1280, 900)
            .unwrap_err()
            .to_string()
            .contains("blank page"));
        assert_eq!(
            check_png(b"GIF89a", 1, 1).unwrap_err().to_string(),
            "not a PNG"
        );
    }
}
