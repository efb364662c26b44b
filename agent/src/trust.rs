//! A site CA added to the node's trust store without the distribution's
//! full refresh.
//!
//! Debian's `update-ca-certificates` rebuilds the bundle and the links of
//! all ~150 CAs in a shell loop (several processes per certificate) and
//! then `openssl rehash`es /etc/ssl/certs: 68 s of the boot under QEMU's
//! TCG. The site CA needs none of that: it is
//! - kept where the full refresh finds it (Debian
//!   `/usr/local/share/ca-certificates/nodeboot/NAME.crt`, EL
//!   `/etc/pki/ca-trust/source/anchors/nodeboot-NAME.crt`), so a later
//!   `update-ca-certificates` / `update-ca-trust` (a package update) keeps it;
//! - appended to the bundle (curl, GnuTLS, libldap's `TLS_CACERT`, sssd) when
//!   not in it already;
//! - linked in the hashed directory OpenSSL's `CApath` reads, as
//!   `HASH.N` → `nodeboot-NAME.pem` (HASH from `openssl x509 -hash`; the
//!   next free N when another CA has the same subject hash).
//!
//! Idempotent: a certificate already in the bundle (same base64 body) is not
//! appended again, a link already pointing at it is left alone.
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::nodeos::TrustStore;

/// Largest CA file taken from the repository.
const PEM_MAX: u64 = 1024 * 1024;
/// Most certificates in one CA file.
const CERTS_MAX: usize = 64;
/// Largest bundle read (Debian's is ~220 KB).
const BUNDLE_MAX: u64 = 64 * 1024 * 1024;
/// `HASH.0` … `HASH.31`: subject hash collisions tolerated.
const LINKS_MAX: u32 = 32;
/// Symbolic links followed inside the root.
const SYMLINKS_MAX: u32 = 16;

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// One PEM certificate: its text (BEGIN to END, trimmed lines) and its
/// base64 body without whitespace (what identifies it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemCert {
    pub text: String,
    pub body: String,
}

/// The certificates of a PEM text, at most `max` (more: an error).
pub fn certificates(text: &str, max: usize) -> Result<Vec<PemCert>> {
    let mut out = Vec::new();
    let mut cur: Option<(String, String)> = None;
    for line in text.lines() {
        let line = line.trim();
        match &mut cur {
            None if line == BEGIN => cur = Some((format!("{BEGIN}\n"), String::new())),
            None => {}
            Some((t, b)) => {
                t.push_str(line);
                t.push('\n');
                if line == END {
                    let (text, body) = cur.take().unwrap_or_default();
                    if out.len() == max {
                        bail!("more than {max} certificates");
                    }
                    out.push(PemCert { text, body });
                } else if line.starts_with("-----") {
                    bail!("{line:?} inside a certificate");
                } else {
                    b.extend(line.chars().filter(|c| !c.is_whitespace()));
                }
            }
        }
    }
    if cur.is_some() {
        bail!("a certificate without its {END} line");
    }
    Ok(out)
}

/// `p` (absolute on the node) inside `root`, symbolic links followed and
/// kept inside `root` (an absolute target is taken under `root` too).
fn resolve(root: &Path, p: &Path) -> Result<PathBuf> {
    let mut cur = root.join(p.strip_prefix("/").unwrap_or(p));
    for _ in 0..SYMLINKS_MAX {
        match std::fs::read_link(&cur) {
            Ok(t) if t.is_absolute() => cur = root.join(t.strip_prefix("/").unwrap_or(&t)),
            Ok(t) => {
                cur = cur.parent().unwrap_or(root).join(t);
            }
            Err(_) => return Ok(cur),
        }
    }
    bail!("{}: too many symbolic links", p.display())
}

/// Add the CA certificates of `pem` (the repository's file `name`, whose
/// stem names what is installed) to the trust store `store` of the tree
/// under `root`; returns what was done, one line each.
pub fn add(root: &Path, store: &TrustStore, name: &Path, pem: &[u8]) -> Result<Vec<String>> {
    if pem.len() as u64 > PEM_MAX {
        bail!(
            "{} has {} bytes: too large for CA certificates (at most {} KiB)",
            name.display(),
            pem.len(),
            PEM_MAX / 1024
        );
    }
    let text =
        std::str::from_utf8(pem).with_context(|| format!("{} is not PEM text", name.display()))?;
    let certs =
        certificates(text, CERTS_MAX).with_context(|| format!("reading {}", name.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate ({BEGIN})", name.display());
    }
    let stem = name
        .file_stem()
        .map(|s| s.to_string_lossy().replace(['/', ' '], "_"))
        .filter(|s| !s.is_empty() && !s.starts_with('.'))
        .unwrap_or_else(|| "ca".into());
    let mut done = Vec::new();

    // Kept for the distribution's own refresh.
    let anchor = resolve(root, &store.anchors)?.join(format!("{}{stem}.crt", store.anchor_prefix));
    done.push(crate::nodetoml::install_bytes(pem, &anchor, 0, 0, 0o644)?);

    // The bundle.
    let bundle = resolve(root, &store.bundle)?;
    let mut current = String::new();
    match std::fs::File::open(&bundle) {
        Ok(f) => {
            f.take(BUNDLE_MAX + 1)
                .read_to_string(&mut current)
                .with_context(|| format!("reading {}", bundle.display()))?;
            if current.len() as u64 > BUNDLE_MAX {
                bail!("{}: larger than {} MiB", bundle.display(), BUNDLE_MAX >> 20);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", bundle.display())),
    }
    let present: Vec<String> = certificates(&current, usize::MAX)
        .with_context(|| format!("reading {}", bundle.display()))?
        .into_iter()
        .map(|c| c.body)
        .collect();
    let missing: Vec<&PemCert> = certs
        .iter()
        .filter(|c| !present.contains(&c.body))
        .collect();
    if missing.is_empty() {
        done.push(format!("{}: {stem} already", store.bundle.display()));
    } else {
        if !current.is_empty() && !current.ends_with('\n') {
            current.push('\n');
        }
        for c in &missing {
            current.push_str(&c.text);
        }
        crate::nodetoml::install_bytes(current.as_bytes(), &bundle, 0, 0, 0o644)?;
        done.push(format!(
            "{}: {stem} added ({} certificate{})",
            store.bundle.display(),
            missing.len(),
            if missing.len() == 1 { "" } else { "s" }
        ));
    }

    // The hashed directory.
    let Some(hashed) = &store.hashed else {
        return Ok(done);
    };
    let dir = resolve(root, hashed)?;
    if !dir.is_dir() {
        done.push(format!("no {}: no hashed links", hashed.display()));
        return Ok(done);
    }
    for (i, c) in certs.iter().enumerate() {
        let file = if certs.len() == 1 {
            format!("nodeboot-{stem}.pem")
        } else {
            format!("nodeboot-{stem}-{i}.pem")
        };
        crate::nodetoml::install_bytes(c.text.as_bytes(), &dir.join(&file), 0, 0, 0o644)?;
        let hash = match subject_hash(&dir.join(&file)) {
            Ok(h) => h,
            Err(e) => {
                // The bundle has it: most readers are served.
                tracing::warn!("{e:#}");
                done.push(format!("{file} not linked in {}: {e:#}", hashed.display()));
                continue;
            }
        };
        done.push(link(&dir, hashed, &hash, &file, &c.body)?);
    }
    Ok(done)
}

/// `HASH.N` → `file` in `dir` for the first N free or already holding the
/// certificate `body`.
fn link(dir: &Path, shown: &Path, hash: &str, file: &str, body: &str) -> Result<String> {
    for n in 0..LINKS_MAX {
        let name = format!("{hash}.{n}");
        let p = dir.join(&name);
        match std::fs::symlink_metadata(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::os::unix::fs::symlink(file, &p)
                    .with_context(|| format!("linking {} -> {file}", p.display()))?;
                return Ok(format!("{}/{name} -> {file}", shown.display()));
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
            Ok(_) => {
                let mut text = String::new();
                let same = std::fs::File::open(&p)
                    .and_then(|f| f.take(PEM_MAX).read_to_string(&mut text))
                    .ok()
                    .and_then(|_| certificates(&text, CERTS_MAX).ok())
                    .is_some_and(|cs| cs.iter().any(|c| c.body == body));
                if same {
                    return Ok(format!("{}/{name} already", shown.display()));
                }
            }
        }
    }
    bail!(
        "{}: {hash}.0 to {hash}.{} are all taken by other certificates",
        shown.display(),
        LINKS_MAX - 1
    )
}

/// OpenSSL's subject name hash of the certificate in `file` (8 hex digits).
fn subject_hash(file: &Path) -> Result<String> {
    let out = crate::cmd::run(&[
        Path::new("openssl").as_os_str(),
        "x509".as_ref(),
        "-hash".as_ref(),
        "-noout".as_ref(),
        "-in".as_ref(),
        file.as_os_str(),
    ])
    .with_context(|| format!("the subject hash of {}", file.display()))?;
    let h = out.trim();
    if h.len() != 8 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "the subject hash of {}: openssl said {h:?}, not 8 hex digits",
            file.display()
        );
    }
    Ok(h.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodeos::NodeOs;
    use std::process::{Command, Stdio};

    fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .expect("running openssl");
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    }

    fn ok(dir: &Path, args: &[&str]) -> String {
        let (good, out) = openssl(dir, args);
        assert!(good, "openssl {args:?}: {out}");
        out
    }

    /// A CA (ca.pem), a server certificate it signed (leaf.pem) and an
    /// unrelated CA (other.pem), made by the real openssl in `dir`.
    fn pki(dir: &Path) {
        for (name, cn) in [("ca", "nodeboot test site CA"), ("other", "someone else")] {
            ok(
                dir,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.pem"),
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN={cn}"),
                ],
            );
        }
        ok(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "leaf.key",
                "-out",
                "leaf.csr",
                "-subj",
                "/CN=ldap.example.org",
            ],
        );
        ok(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "leaf.pem",
                "-days",
                "1",
            ],
        );
    }

    /// The leaf verifies against the bundle and against the hashed
    /// directory (each alone), and only with the site CA added.
    fn verifies(work: &Path, bundle: &Path, hashed: Option<&Path>) -> (bool, bool) {
        let leaf = work.join("leaf.pem");
        let leaf = leaf.to_str().unwrap();
        let by_file = openssl(
            work,
            &[
                "verify",
                "-no-CApath",
                "-CAfile",
                bundle.to_str().unwrap(),
                leaf,
            ],
        )
        .0;
        let by_dir = hashed.is_some_and(|h| {
            openssl(
                work,
                &["verify", "-no-CAfile", "-CApath", h.to_str().unwrap(), leaf],
            )
            .0
        });
        (by_file, by_dir)
    }

    #[test]
    fn debian_shaped_tree_gets_the_ca_in_the_bundle_and_the_hashed_dir_once() {
        let w = tempfile::tempdir().unwrap();
        pki(w.path());
        let root = w.path().join("root");
        crate::nodeos::tests::debian_tree(&root);
        // The bundle has some other CA already, and no final newline.
        let other = std::fs::read_to_string(w.path().join("other.pem")).unwrap();
        let bundle = root.join("etc/ssl/certs/ca-certificates.crt");
        std::fs::write(&bundle, other.trim_end()).unwrap();
        let hashed = root.join("etc/ssl/certs");
        assert_eq!(verifies(w.path(), &bundle, Some(&hashed)), (false, false));

        let store = NodeOs::detect(&root).trust();
        let pem = std::fs::read(w.path().join("ca.pem")).unwrap();
        let done = add(&root, &store, Path::new("files/certs/site-ca.pem"), &pem).unwrap();
        eprintln!("{done:#?}");
        assert_eq!(verifies(w.path(), &bundle, Some(&hashed)), (true, true));
        // Kept where update-ca-certificates finds it.
        assert_eq!(
            std::fs::read(root.join("usr/local/share/ca-certificates/nodeboot/site-ca.crt"))
                .unwrap(),
            pem
        );
        // The other CA is still there.
        let text = std::fs::read_to_string(&bundle).unwrap();
        assert_eq!(certificates(&text, 10).unwrap().len(), 2);
        let hash = ok(w.path(), &["x509", "-hash", "-noout", "-in", "ca.pem"]);
        let link = hashed.join(format!("{}.0", hash.trim()));
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            Path::new("nodeboot-site-ca.pem")
        );

        // Again: nothing appended, no second link.
        let again = add(&root, &store, Path::new("files/certs/site-ca.pem"), &pem).unwrap();
        assert!(again.iter().all(|l| l.contains("already")), "{again:?}");
        assert_eq!(std::fs::read_to_string(&bundle).unwrap(), text);
        assert!(!hashed.join(format!("{}.1", hash.trim())).exists());
    }

    #[test]
    fn el_shaped_tree_and_a_subject_hash_taken_by_another_ca() {
        let w = tempfile::tempdir().unwrap();
        pki(w.path());
        let root = w.path().join("root");
        crate::nodeos::tests::el_tree(&root);
        // EL's ca-bundle.crt is a link to the extracted bundle.
        let extracted = root.join("etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem");
        std::fs::write(&extracted, "").unwrap();
        std::fs::create_dir_all(root.join("etc/pki/tls/certs")).unwrap();
        std::os::unix::fs::symlink(
            "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
            root.join("etc/pki/tls/certs/ca-bundle.crt"),
        )
        .unwrap();
        let hashed = root.join("etc/pki/ca-trust/extracted/pem/directory-hash");
        // Another certificate already holds HASH.0 (a collision).
        let hash = ok(w.path(), &["x509", "-hash", "-noout", "-in", "ca.pem"]);
        std::fs::copy(w.path().join("other.pem"), hashed.join("other.pem")).unwrap();
        std::os::unix::fs::symlink("other.pem", hashed.join(format!("{}.0", hash.trim()))).unwrap();

        let store = NodeOs::detect(&root).trust();
        let pem = std::fs::read(w.path().join("ca.pem")).unwrap();
        let done = add(&root, &store, Path::new("site-ca.pem"), &pem).unwrap();
        eprintln!("{done:#?}");
        assert_eq!(verifies(w.path(), &extracted, Some(&hashed)), (true, true));
        // Paths on the node are resolved inside the root, links included.
        assert_eq!(
            resolve(&root, Path::new("/etc/pki/tls/certs/ca-bundle.crt")).unwrap(),
            extracted
        );
        assert_eq!(
            std::fs::read_link(hashed.join(format!("{}.1", hash.trim()))).unwrap(),
            Path::new("nodeboot-site-ca.pem")
        );
        assert!(root
            .join("etc/pki/ca-trust/source/anchors/nodeboot-site-ca.crt")
            .is_file());
        let again = add(&root, &store, Path::new("site-ca.pem"), &pem).unwrap();
        assert!(again.iter().all(|l| l.contains("already")), "{again:?}");
    }

    #[test]
    fn bad_ca_files_are_named() {
        let d = tempfile::tempdir().unwrap();
        let store = NodeOs::detect(d.path()).trust();
        for (pem, want) in [
            (&b"hello\n"[..], "certs/x.pem holds no PEM certificate"),
            (
                b"-----BEGIN CERTIFICATE-----\nMIIB\n",
                "a certificate without its -----END CERTIFICATE----- line",
            ),
            (b"\xff\xfe", "certs/x.pem is not PEM text"),
        ] {
            let e = format!(
                "{:#}",
                add(d.path(), &store, Path::new("certs/x.pem"), pem).unwrap_err()
            );
            assert!(e.contains(want), "{e}");
        }
        // Nothing was written.
        assert!(!d.path().join("etc").exists() && !d.path().join("usr").exists());
    }
}
