//! Which file a URL path designates: the served trees (`/` and, for Grendel
//! compatibility, `/repo/`) and the checks that keep requests inside them.
use anyhow::{Context, Result};
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// URL prefix of the Grendel repo tree (`GET /repo/postscript.sh`).
pub const REPO_PREFIX: &[u8] = b"/repo/";

/// Why a path is not served. Every case is answered with 404 (nothing tells
/// a client whether a file exists outside the trees); the reason goes to the
/// debug log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("bad percent-encoding or NUL byte")]
    BadEncoding,
    #[error("`..` component")]
    DotDot,
    #[error("no such file")]
    Missing,
    #[error("resolves outside the served directory")]
    Outside,
    #[error("not a regular file")]
    NotAFile,
    #[error("/repo/ is not served (no --repo)")]
    NoRepo,
}

/// The directories bootd serves, canonicalized once at startup.
#[derive(Debug, Clone)]
pub struct Trees {
    root: PathBuf,
    repo: Option<PathBuf>,
}

/// An opened file to send.
#[derive(Debug)]
pub struct Artifact {
    pub path: PathBuf,
    pub file: File,
    pub meta: Metadata,
}

impl Trees {
    /// `root` is served at `/`, `repo` (if any) at `/repo/`, which then
    /// hides a `repo` directory under `root`.
    pub fn new(root: &Path, repo: Option<&Path>) -> Result<Trees> {
        let dir = |d: &Path, opt: &str| -> Result<PathBuf> {
            let c = d
                .canonicalize()
                .with_context(|| format!("{opt} {}", d.display()))?;
            anyhow::ensure!(c.is_dir(), "{opt} {}: not a directory", d.display());
            Ok(c)
        };
        Ok(Trees {
            root: dir(root, "--root")?,
            repo: repo.map(|r| dir(r, "--repo")).transpose()?,
        })
    }

    /// Map a request path (still percent-encoded, query removed) to a
    /// regular file inside one of the trees.
    pub fn lookup(&self, url_path: &str) -> Result<PathBuf, Refused> {
        let decoded = crate::http::percent_decode(url_path).ok_or(Refused::BadEncoding)?;
        match decoded.strip_prefix(REPO_PREFIX) {
            Some(rel) => resolve(self.repo.as_deref().ok_or(Refused::NoRepo)?, rel),
            None => resolve(&self.root, &decoded),
        }
    }

    /// [`lookup`](Self::lookup), then open the file and check, on the open
    /// descriptor, that it is still a regular file.
    pub fn open(&self, url_path: &str) -> Result<Artifact, Refused> {
        let path = self.lookup(url_path)?;
        let file = File::open(&path).map_err(|_| Refused::Missing)?;
        let meta = file.metadata().map_err(|_| Refused::Missing)?;
        if !meta.is_file() {
            return Err(Refused::NotAFile);
        }
        Ok(Artifact { path, file, meta })
    }
}

/// Resolve decoded path bytes inside the canonical directory `dir`: any `..`
/// component is refused outright (even one that would stay inside), a
/// leading `/` or repeated slashes are harmless (the path is always taken
/// relative to `dir`), and the result is canonicalized so that a symlink
/// leading out of `dir` is refused. Symlinks that stay inside are followed.
pub fn resolve(dir: &Path, rel: &[u8]) -> Result<PathBuf, Refused> {
    let mut p = dir.to_path_buf();
    for c in Path::new(OsStr::from_bytes(rel)).components() {
        match c {
            Component::Normal(s) => p.push(s),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return Err(Refused::DotDot),
        }
    }
    let real = p.canonicalize().map_err(|_| Refused::Missing)?;
    if !real.starts_with(dir) {
        return Err(Refused::Outside);
    }
    if !real.is_file() {
        return Err(Refused::NotAFile);
    }
    Ok(real)
}

/// `Content-Type` from the file name; `application/octet-stream` for
/// everything else (kernels, initramfs, squashfs).
pub fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(OsStr::to_str) {
        Some("sh" | "txt" | "ipxe" | "sha256" | "cfg" | "conf") => "text/plain; charset=utf-8",
        Some("json") => "application/json",
        Some("html") => "text/html; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        _d: tempfile::TempDir,
        trees: Trees,
        no_repo: Trees,
    }

    /// www/{a.img, sub/b, in -> a.img, out -> ../secret, outdir -> ..,
    /// sub/up -> ../../secret}, repo/postscript.sh, secret.
    fn fixture() -> Fixture {
        let d = tempfile::tempdir().unwrap();
        let www = d.path().join("www");
        let repo = d.path().join("repo");
        std::fs::create_dir_all(www.join("sub")).unwrap();
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::write(www.join("a.img"), "x").unwrap();
        std::fs::write(www.join("sub/b"), "y").unwrap();
        std::fs::write(www.join("a b"), "z").unwrap();
        std::fs::write(repo.join("postscript.sh"), "#!/bin/sh\n").unwrap();
        std::fs::write(d.path().join("secret"), "s").unwrap();
        let ln = |target: &str, at: &str| std::os::unix::fs::symlink(target, www.join(at)).unwrap();
        ln("a.img", "in");
        ln("../secret", "out");
        ln("..", "outdir");
        ln("../../secret", "sub/up");
        ln(d.path().join("secret").to_str().unwrap(), "abs");
        let trees = Trees::new(&www, Some(&repo)).unwrap();
        let no_repo = Trees::new(&www, None).unwrap();
        Fixture {
            _d: d,
            trees,
            no_repo,
        }
    }

    #[test]
    fn serves_files_in_the_trees() {
        let f = fixture();
        for ok in [
            "/a.img",
            "/sub/b",
            "//sub//./b",
            "/a%20b",
            "/%61.img",
            "/sub%2Fb",
            "/in",
        ] {
            let p = f.trees.lookup(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert!(p.starts_with(&f.trees.root), "{ok}");
        }
        let p = f.trees.lookup("/repo/postscript.sh").unwrap();
        assert!(p.ends_with("repo/postscript.sh"));
        assert!(f.trees.lookup("/repo%2Fpostscript.sh").is_ok());
        let a = f.trees.open("/a.img").unwrap();
        assert_eq!(a.meta.len(), 1);
    }

    #[test]
    fn refusals() {
        use Refused::*;
        let f = fixture();
        let rows: &[(&str, Refused)] = &[
            // `..`, plain and encoded (the decoder runs first).
            ("/../secret", DotDot),
            ("/sub/../../secret", DotDot),
            ("/sub/../a.img", DotDot),
            ("/%2e%2e/secret", DotDot),
            ("/%2E%2E%2Fsecret", DotDot),
            ("/.%2e/secret", DotDot),
            ("/sub%2F..%2F..%2Fsecret", DotDot),
            ("/repo/../secret", DotDot),
            ("/repo/%2e%2e/secret", DotDot),
            // Absolute paths stay relative to the root.
            ("//etc/passwd", Missing),
            ("/%2Fetc%2Fpasswd", Missing),
            ("/%2F%2Fetc/passwd", Missing),
            // Symlinks leading out.
            ("/out", Outside),
            ("/abs", Outside),
            ("/sub/up", Outside),
            ("/outdir/secret", Outside),
            // NUL and broken escapes.
            ("/a.img%00.txt", BadEncoding),
            ("/a%zz", BadEncoding),
            ("/a%2", BadEncoding),
            // Directories: no listings.
            ("/", NotAFile),
            ("/sub", NotAFile),
            ("/sub/", NotAFile),
            ("/repo/", NotAFile),
            ("/outdir", Outside),
            ("/missing", Missing),
            ("/repo/missing", Missing),
        ];
        for (path, want) in rows {
            assert_eq!(f.trees.lookup(path).as_ref(), Err(want), "{path}");
        }
        assert_eq!(f.no_repo.lookup("/repo/postscript.sh"), Err(NoRepo));
        assert_eq!(f.trees.open("/sub").unwrap_err(), NotAFile);
    }

    #[test]
    fn bad_trees_are_startup_errors() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "").unwrap();
        let e = Trees::new(&f, None).unwrap_err();
        assert!(format!("{e:#}").contains("not a directory"), "{e:#}");
        let e = Trees::new(d.path(), Some(&d.path().join("nope"))).unwrap_err();
        assert!(format!("{e:#}").starts_with("--repo "), "{e:#}");
    }

    #[test]
    fn content_types() {
        assert_eq!(
            content_type(Path::new("postscript.sh")),
            "text/plain; charset=utf-8"
        );
        assert_eq!(
            content_type(Path::new("live.squashfs")),
            "application/octet-stream"
        );
        assert_eq!(
            content_type(Path::new("vmlinuz")),
            "application/octet-stream"
        );
    }
}
