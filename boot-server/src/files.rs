//! Mapping URL paths to files under a served directory, safely.
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Resolve a decoded URL path (relative to a mount point such as `/` or
/// `/repo/`) to a regular file inside `root`. `None` (→ 404) for `..`,
/// absolute tricks, directories, missing files, and symlinks that lead out of
/// `root`.
pub fn resolve(root: &Path, rel: &[u8]) -> Option<PathBuf> {
    let rel = Path::new(std::ffi::OsStr::from_bytes(rel));
    let mut p = root.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(s) => p.push(s),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    let real = p.canonicalize().ok()?;
    let root = root.canonicalize().ok()?;
    if !real.starts_with(&root) || !real.is_file() {
        return None;
    }
    Some(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_and_symlinks_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("www");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("a.img"), "x").unwrap();
        std::fs::write(root.join("sub/b"), "y").unwrap();
        std::fs::write(d.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), root.join("out")).unwrap();
        std::os::unix::fs::symlink("a.img", root.join("in")).unwrap();
        assert!(resolve(&root, b"/a.img").is_some());
        assert!(resolve(&root, b"/sub/b").is_some());
        assert!(
            resolve(&root, b"/in").is_some(),
            "a symlink inside the root is fine"
        );
        for bad in [
            &b"/../secret"[..],
            b"/sub/../../secret",
            b"/out",
            b"/sub",
            b"/",
            b"/missing",
            b"//etc/passwd",
        ] {
            assert!(
                resolve(&root, bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
