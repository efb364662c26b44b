//! The source of an image: a directory or a tar / tar.zst archive, read into
//! one sorted tree of nodes before anything is written.
//!
//! Names are raw bytes (non-UTF-8 names are kept as they are), children are
//! sorted bytewise, hard links are grouped, symlinks are never followed. File
//! contents stay where they are: a path on disk, or a range of an unlinked
//! spool file for archive members.
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Index of a node in [`Tree::nodes`]; the root is 0.
pub type NodeId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits (mode & 0o7777).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch, already clamped to what the image can hold.
    pub mtime: u32,
}

#[derive(Debug, Clone)]
pub enum Content {
    /// A file on disk.
    Path(PathBuf),
    /// `size` bytes at `offset` of the tree's spool file.
    Spool { offset: u64 },
}

#[derive(Debug, Clone)]
pub enum Kind {
    /// Children sorted by name.
    Dir(Vec<NodeId>),
    File {
        size: u64,
        content: Content,
    },
    Symlink(Vec<u8>),
    BlockDev(u64),
    CharDev(u64),
    Fifo,
    Socket,
    /// Another name of the inode of that node (a hard link).
    Link(NodeId),
}

#[derive(Debug, Clone)]
pub struct Node {
    pub name: Vec<u8>,
    pub meta: Meta,
    /// Full names (`security.capability`) and values, sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub kind: Kind,
}

pub struct Tree {
    pub nodes: Vec<Node>,
    spool: Option<File>,
    /// Where the tree came from, for messages.
    pub origin: PathBuf,
}

/// How a source is read.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Globs relative to the root; a matching entry is left out with everything under it.
    pub exclude: Vec<glob::Pattern>,
    /// SOURCE_DATE_EPOCH: mtimes newer than this are clamped to it.
    pub clamp_mtime: Option<u64>,
}

impl ReadOptions {
    pub fn new(exclude: &[String], clamp_mtime: Option<u64>) -> Result<ReadOptions> {
        let exclude = exclude
            .iter()
            .map(|g| {
                glob::Pattern::new(g.trim_start_matches('/').trim_end_matches('/'))
                    .with_context(|| format!("--exclude {g}: not a valid glob"))
            })
            .collect::<Result<_>>()?;
        Ok(ReadOptions {
            exclude,
            clamp_mtime,
        })
    }

    fn excluded(&self, rel: &[u8]) -> bool {
        if self.exclude.is_empty() {
            return false;
        }
        let rel = String::from_utf8_lossy(rel);
        let opts = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        };
        self.exclude.iter().any(|p| p.matches_with(&rel, opts))
    }

    fn mtime(&self, secs: i64) -> u32 {
        let t = match self.clamp_mtime {
            Some(c) if secs > c as i64 => c as i64,
            _ => secs,
        };
        t.clamp(0, u32::MAX as i64) as u32
    }
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        let mut p = parent.to_vec();
        p.push(b'/');
        p.extend_from_slice(name);
        p
    }
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Read the extended attributes of `path` (not following a symlink).
/// Names outside user., trusted. and security. cannot be stored in squashfs:
/// they are reported and left out.
fn read_xattrs(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("{}: NUL byte in path", path.display()))?;
    let mut buf = vec![0u8; 1024];
    let n = loop {
        // SAFETY: c is a valid C string, buf is writable for buf.len() bytes.
        let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => buf.resize(buf.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e).with_context(|| format!("listing xattrs of {}", path.display())),
        }
    };
    let mut out = Vec::new();
    for name in buf[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        if crate::squashfs::xattr_prefix(name).is_none() {
            tracing::warn!(
                "{}: xattr {} cannot be stored in squashfs (only user., trusted., security.); left out",
                path.display(),
                show(name)
            );
            continue;
        }
        let cname = CString::new(name).expect("split on NUL");
        let mut val = vec![0u8; 256];
        let len = loop {
            // SAFETY: valid C strings, val writable for val.len() bytes.
            let r = unsafe {
                libc::lgetxattr(
                    c.as_ptr(),
                    cname.as_ptr(),
                    val.as_mut_ptr().cast(),
                    val.len(),
                )
            };
            if r >= 0 {
                break r as usize;
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                val.resize(val.len() * 16, 0);
                continue;
            }
            return Err(e)
                .with_context(|| format!("reading xattr {} of {}", show(name), path.display()));
        };
        val.truncate(len);
        out.push((name.to_vec(), val));
    }
    out.sort();
    Ok(out)
}

impl Tree {
    fn root_node(meta: Meta) -> Node {
        Node {
            name: Vec::new(),
            meta,
            xattrs: Vec::new(),
            kind: Kind::Dir(Vec::new()),
        }
    }

    /// Read a directory tree (lstat, never following symlinks).
    pub fn from_dir(root: &Path, opts: &ReadOptions) -> Result<Tree> {
        let md = std::fs::symlink_metadata(root)
            .with_context(|| format!("source {}", root.display()))?;
        if !md.is_dir() {
            bail!("source {} is not a directory", root.display());
        }
        let mut t = Tree {
            nodes: vec![Tree::root_node(meta_of(&md, opts))],
            spool: None,
            origin: root.to_path_buf(),
        };
        t.nodes[0].xattrs = read_xattrs(root)?;
        // (dev, ino) of files with several names → the node holding the inode.
        let mut links: HashMap<(u64, u64), NodeId> = HashMap::new();
        t.walk(0, root, &[], opts, &mut links)?;
        Ok(t)
    }

    fn walk(
        &mut self,
        dir: NodeId,
        path: &Path,
        rel: &[u8],
        opts: &ReadOptions,
        links: &mut HashMap<(u64, u64), NodeId>,
    ) -> Result<()> {
        let mut names: Vec<Vec<u8>> = std::fs::read_dir(path)
            .with_context(|| format!("reading directory {}", path.display()))?
            .map(|e| e.map(|e| e.file_name().as_bytes().to_vec()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("reading directory {}", path.display()))?;
        names.sort();
        let mut children = Vec::with_capacity(names.len());
        for name in names {
            let crel = join(rel, &name);
            if opts.excluded(&crel) {
                continue;
            }
            let cpath = path.join(OsStr::from_bytes(&name));
            let md = std::fs::symlink_metadata(&cpath)
                .with_context(|| format!("reading {}", cpath.display()))?;
            let meta = meta_of(&md, opts);
            let ft = md.mode() & libc::S_IFMT;
            let id = self.nodes.len();
            let kind = if ft != libc::S_IFDIR && md.nlink() > 1 {
                match links.get(&(md.dev(), md.ino())) {
                    Some(&first) => Some(Kind::Link(first)),
                    None => {
                        links.insert((md.dev(), md.ino()), id);
                        None
                    }
                }
            } else {
                None
            };
            let kind = match kind {
                Some(k) => k,
                None => match ft {
                    libc::S_IFDIR => Kind::Dir(Vec::new()),
                    libc::S_IFREG => Kind::File {
                        size: md.len(),
                        content: Content::Path(cpath.clone()),
                    },
                    libc::S_IFLNK => Kind::Symlink(
                        std::fs::read_link(&cpath)
                            .with_context(|| format!("reading symlink {}", cpath.display()))?
                            .as_os_str()
                            .as_bytes()
                            .to_vec(),
                    ),
                    libc::S_IFBLK => Kind::BlockDev(md.rdev()),
                    libc::S_IFCHR => Kind::CharDev(md.rdev()),
                    libc::S_IFIFO => Kind::Fifo,
                    libc::S_IFSOCK => Kind::Socket,
                    other => bail!("{}: unknown file type {other:o}", cpath.display()),
                },
            };
            let xattrs = if matches!(kind, Kind::Link(_)) {
                Vec::new()
            } else {
                read_xattrs(&cpath)?
            };
            let is_dir = matches!(kind, Kind::Dir(_));
            self.nodes.push(Node {
                name,
                meta,
                xattrs,
                kind,
            });
            children.push(id);
            if is_dir {
                self.walk(id, &cpath, &crel, opts, links)?;
            }
        }
        self.nodes[dir].kind = Kind::Dir(children);
        Ok(())
    }

    /// Read a tar or tar.zst archive. Member contents are copied into an
    /// unlinked spool file created in `spool_dir` (holes stay holes).
    pub fn from_tar(archive: &Path, spool_dir: &Path, opts: &ReadOptions) -> Result<Tree> {
        let f = File::open(archive).with_context(|| format!("source {}", archive.display()))?;
        let reader = open_archive(f).with_context(|| format!("source {}", archive.display()))?;
        let spool = tempfile::tempfile_in(spool_dir)
            .with_context(|| format!("creating a spool file in {}", spool_dir.display()))?;
        Tree::from_tar_reader(reader, Some(spool), archive, opts)
    }

    /// The tree of an archive read from `reader` (already decompressed);
    /// member contents go to `spool`, or are read and dropped without one.
    fn from_tar_reader(
        reader: impl Read,
        spool: Option<File>,
        archive: &Path,
        opts: &ReadOptions,
    ) -> Result<Tree> {
        let mut b = TarBuilder {
            tree: Tree {
                nodes: vec![Tree::root_node(Meta {
                    perm: 0o755,
                    uid: 0,
                    gid: 0,
                    mtime: opts.mtime(0),
                })],
                spool: None,
                origin: archive.to_path_buf(),
            },
            children: vec![BTreeMap::new()],
            spool,
            spool_len: 0,
            opts,
            archive,
        };
        let mut ar = crate::tar::Reader::new(reader);
        while let Some(m) = ar
            .next_member()
            .with_context(|| format!("reading archive {}", archive.display()))?
        {
            b.add(m, &mut ar)?;
        }
        b.finish()
    }

    /// Read `len` bytes of a file node's content at `off` into `buf`.
    pub fn content_reader(&self, id: NodeId) -> Result<ContentReader<'_>> {
        let Kind::File { size, content } = &self.nodes[id].kind else {
            bail!("internal: node {id} is not a file");
        };
        Ok(match content {
            Content::Path(p) => ContentReader {
                file: Cow::Owned(
                    File::open(p).with_context(|| format!("opening {}", p.display()))?,
                ),
                base: 0,
                size: *size,
                what: p.display().to_string(),
            },
            Content::Spool { offset } => ContentReader {
                file: Cow::Borrowed(self.spool.as_ref().context("internal: no spool")?),
                base: *offset,
                size: *size,
                what: format!("{} member {}", self.origin.display(), self.path_of(id)),
            },
        })
    }

    /// The path of a node relative to the root (for messages; slow).
    pub fn path_of(&self, id: NodeId) -> String {
        fn find(t: &Tree, at: NodeId, want: NodeId, acc: &mut Vec<u8>) -> bool {
            if at == want {
                return true;
            }
            if let Kind::Dir(ch) = &t.nodes[at].kind {
                for &c in ch {
                    let len = acc.len();
                    if !acc.is_empty() {
                        acc.push(b'/');
                    }
                    acc.extend_from_slice(&t.nodes[c].name);
                    if find(t, c, want, acc) {
                        return true;
                    }
                    acc.truncate(len);
                }
            }
            false
        }
        let mut acc = Vec::new();
        find(self, 0, id, &mut acc);
        show(&acc)
    }

    /// Look a relative path up (no symlinks followed).
    pub fn lookup(&self, rel: &str) -> Option<NodeId> {
        let mut at = 0;
        for comp in rel.split('/').filter(|c| !c.is_empty()) {
            let Kind::Dir(ch) = &self.nodes[at].kind else {
                return None;
            };
            at = *ch
                .iter()
                .find(|&&c| self.nodes[c].name == comp.as_bytes())?;
        }
        Some(at)
    }
}

enum Cow<'a> {
    Owned(File),
    Borrowed(&'a File),
}

/// Positional reads of one file's content.
pub struct ContentReader<'a> {
    file: Cow<'a>,
    base: u64,
    pub size: u64,
    /// The file, for messages.
    pub what: String,
}

impl ContentReader<'_> {
    fn file(&self) -> &File {
        match &self.file {
            Cow::Owned(f) => f,
            Cow::Borrowed(f) => f,
        }
    }

    /// Fill `buf` from content offset `off`.
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.file()
            .read_exact_at(buf, self.base + off)
            .with_context(|| {
                format!(
                    "reading {} at offset {off} ({} bytes expected; did it change during the build?)",
                    self.what, self.size
                )
            })
    }

    /// The content offset of the next data at or after `off` (SEEK_DATA), or
    /// `size` when only a hole follows. Falls back to `off` where unsupported.
    pub fn next_data(&self, off: u64) -> u64 {
        use std::os::fd::AsRawFd;
        // SAFETY: lseek on a valid fd; pread does not depend on the offset.
        let r = unsafe {
            libc::lseek(
                self.file().as_raw_fd(),
                (self.base + off) as libc::off_t,
                libc::SEEK_DATA,
            )
        };
        if r < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
                return self.size;
            }
            return off;
        }
        (r as u64).saturating_sub(self.base).min(self.size)
    }
}

/// A tar or tar.zst archive from its first bytes: a zstd frame (or a
/// skippable frame, as pzstd writes first) or a block with a valid tar
/// header checksum (v7 headers have no magic).
fn open_archive<'a>(mut r: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    let mut head = [0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading the archive's first block"),
        }
    }
    let zstd = n >= 4
        && (head[..4] == [0x28, 0xb5, 0x2f, 0xfd]
            || (head[0] & 0xf0 == 0x50 && head[1..4] == [0x2a, 0x4d, 0x18]));
    let again = std::io::Cursor::new(head[..n].to_vec()).chain(r);
    if zstd {
        let d = zstd::stream::read::Decoder::new(again).context("opening the zstd stream")?;
        Ok(Box::new(d))
    } else if n == 512 && crate::tar::is_header(&head) {
        Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, again)))
    } else {
        bail!("neither a directory nor a tar / tar.zst archive")
    }
}

/// What [`scan_tar`] found in an archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TarScan {
    /// Paths in the tree, the root included.
    pub entries: usize,
    /// Bytes of regular file contents (real sizes, holes included).
    pub file_bytes: u64,
}

/// Parse a tar or tar.zst archive held in `input` exactly as `nodeimg build`
/// does (format detection, the tar reader with its limits, path checks,
/// hard links, the tree) but write nothing: contents are read, checked and
/// dropped. Bounded like a build (see [`crate::tar`]), never panics on any
/// input; an error is what `nodeimg build` would report. Meant for fuzzing:
/// `nodeimg::tree::scan_tar(data)`.
pub fn scan_tar(input: impl Read) -> Result<TarScan> {
    let reader = open_archive(input)?;
    let t = Tree::from_tar_reader(reader, None, Path::new("<input>"), &ReadOptions::default())?;
    let file_bytes = t
        .nodes
        .iter()
        .map(|n| match n.kind {
            Kind::File { size, .. } => size,
            _ => 0,
        })
        .sum();
    Ok(TarScan {
        entries: t.nodes.len(),
        file_bytes,
    })
}

fn meta_of(md: &std::fs::Metadata, opts: &ReadOptions) -> Meta {
    Meta {
        perm: (md.mode() & 0o7777) as u16,
        uid: md.uid(),
        gid: md.gid(),
        mtime: opts.mtime(md.mtime()),
    }
}

struct TarBuilder<'a> {
    tree: Tree,
    /// Per node (directories only): name → child.
    children: Vec<BTreeMap<Vec<u8>, NodeId>>,
    /// None: contents are read and dropped ([`scan_tar`]).
    spool: Option<File>,
    spool_len: u64,
    opts: &'a ReadOptions,
    archive: &'a Path,
}

/// Split an archive path into components: `./a//b/` → [a, b]; `..` and
/// absolute paths are refused (the reason is returned).
fn components(path: &[u8]) -> std::result::Result<Vec<&[u8]>, &'static str> {
    if path.first() == Some(&b'/') {
        return Err("is an absolute path");
    }
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("has a \"..\" component, which leaves the root"),
            c if c.len() > 255 => return Err("has a component longer than 255 bytes (NAME_MAX)"),
            c => out.push(c),
        }
    }
    Ok(out)
}

impl TarBuilder<'_> {
    fn add<R: Read>(
        &mut self,
        m: crate::tar::Member,
        ar: &mut crate::tar::Reader<R>,
    ) -> Result<()> {
        use crate::tar::Type;
        let comps = components(&m.path).map_err(|why| {
            anyhow::anyhow!(
                "archive {}: entry \"{}\" {why}",
                self.archive.display(),
                show(&m.path)
            )
        })?;
        let rel = comps.join(&b'/');
        if !rel.is_empty() && self.opts.excluded(&rel) {
            return Ok(());
        }
        let mut xattrs = Vec::new();
        for (name, value) in &m.xattrs {
            if crate::squashfs::xattr_prefix(name).is_some() {
                xattrs.push((name.clone(), value.clone()));
            } else {
                tracing::warn!(
                    "archive {}: {}: xattr {} cannot be stored in squashfs; left out",
                    self.archive.display(),
                    show(&rel),
                    show(name)
                );
            }
        }
        xattrs.sort();
        xattrs.dedup_by(|a, b| a.0 == b.0);
        let meta = Meta {
            // Linux shows every symlink as 0777, whatever the archive says.
            perm: if m.ty == Type::Symlink {
                0o777
            } else {
                (m.mode & 0o7777) as u16
            },
            uid: m.uid.min(u32::MAX as u64) as u32,
            gid: m.gid.min(u32::MAX as u64) as u32,
            mtime: self.opts.mtime(m.mtime),
        };
        if comps.is_empty() {
            // "./": the root's own metadata.
            if m.ty == Type::Dir {
                self.tree.nodes[0].meta = meta;
                self.tree.nodes[0].xattrs = xattrs;
            }
            return Ok(());
        }
        let kind = match m.ty {
            Type::Dir => Kind::Dir(Vec::new()),
            Type::File => {
                let offset = self.spool_len;
                self.spool_member(&m, ar, offset, &rel)?;
                Kind::File {
                    size: m.size,
                    content: Content::Spool { offset },
                }
            }
            Type::Symlink => Kind::Symlink(m.link.clone()),
            Type::HardLink => {
                let target = &m.link;
                let tcomps = components(target).map_err(|why| {
                    anyhow::anyhow!(
                        "archive {}: entry \"{}\" is a hard link to \"{}\", which {why}",
                        self.archive.display(),
                        show(&rel),
                        show(target)
                    )
                })?;
                let id = self.resolve(&tcomps).with_context(|| {
                    format!(
                        "archive {}: entry \"{}\" is a hard link to \"{}\", which is not earlier in the archive",
                        self.archive.display(),
                        show(&rel),
                        show(target)
                    )
                })?;
                let id = match self.tree.nodes[id].kind {
                    Kind::Dir(_) => bail!(
                        "archive {}: entry \"{}\" is a hard link to the directory \"{}\"",
                        self.archive.display(),
                        show(&rel),
                        show(target)
                    ),
                    Kind::Link(first) => first,
                    _ => id,
                };
                Kind::Link(id)
            }
            Type::Char => Kind::CharDev(libc::makedev(m.dev_major, m.dev_minor)),
            Type::Block => Kind::BlockDev(libc::makedev(m.dev_major, m.dev_minor)),
            Type::Fifo => Kind::Fifo,
            Type::Other(t) => {
                tracing::warn!(
                    "archive {}: entry {} of type {:?} left out",
                    self.archive.display(),
                    show(&rel),
                    t as char
                );
                return Ok(());
            }
        };
        self.insert(&comps, &rel, meta, xattrs, kind)
    }

    /// Copy a member's content into the spool at `at`; all-zero 64 KiB
    /// pieces (and a sparse member's holes) become holes of the spool.
    fn spool_member<R: Read>(
        &mut self,
        m: &crate::tar::Member,
        ar: &mut crate::tar::Reader<R>,
        at: u64,
        rel: &[u8],
    ) -> Result<()> {
        let archive = self.archive;
        let spool = self.spool.as_ref();
        ar.read_data(m, &mut |off, bytes| {
            if let Some(f) = spool {
                if !crate::squashfs::is_zero(bytes) {
                    f.write_all_at(bytes, at + off)?;
                }
            }
            Ok(())
        })
        .with_context(|| format!("archive {}: reading {}", archive.display(), show(rel)))?;
        self.spool_len = at
            .checked_add(m.size)
            .with_context(|| format!("archive {}: {}: too large", archive.display(), show(rel)))?;
        // Holes at the end are not writes: give the spool its length.
        if let Some(f) = &self.spool {
            if f.metadata()?.len() < self.spool_len {
                f.set_len(self.spool_len).with_context(|| {
                    format!("archive {}: spooling {}", self.archive.display(), show(rel))
                })?;
            }
        }
        Ok(())
    }

    /// The node at `comps`, following nothing.
    fn resolve(&self, comps: &[&[u8]]) -> Option<NodeId> {
        let mut at = 0;
        for c in comps {
            at = *self.children.get(at)?.get(*c)?;
        }
        Some(at)
    }

    fn insert(
        &mut self,
        comps: &[&[u8]],
        rel: &[u8],
        meta: Meta,
        xattrs: Vec<(Vec<u8>, Vec<u8>)>,
        kind: Kind,
    ) -> Result<()> {
        let (last, parents) = comps.split_last().expect("non-empty");
        let mut at = 0;
        let mut so_far: Vec<u8> = Vec::new();
        for c in parents {
            so_far = join(&so_far, c);
            let next = self.children[at].get(*c).copied();
            at = match next {
                Some(n) => match &self.tree.nodes[n].kind {
                    Kind::Dir(_) => n,
                    Kind::Symlink(target) => bail!(
                        "archive {}: entry \"{}\" goes through the symlink \"{}\" (-> {}), \
                         which could lead out of the root",
                        self.archive.display(),
                        show(rel),
                        show(&so_far),
                        show(target)
                    ),
                    _ => bail!(
                        "archive {}: entry \"{}\": \"{}\" is not a directory",
                        self.archive.display(),
                        show(rel),
                        show(&so_far)
                    ),
                },
                None => {
                    // A parent the archive does not list: make it.
                    let m = Meta {
                        perm: 0o755,
                        uid: 0,
                        gid: 0,
                        mtime: self.opts.mtime(0),
                    };
                    self.push(at, c, m, Vec::new(), Kind::Dir(Vec::new()))
                }
            };
        }
        match self.children[at].get(*last).copied() {
            Some(existing) => {
                let n = &mut self.tree.nodes[existing];
                if matches!(n.kind, Kind::Dir(_)) && matches!(kind, Kind::Dir(_)) {
                    n.meta = meta;
                    n.xattrs = xattrs;
                } else if matches!(n.kind, Kind::Dir(_)) {
                    bail!(
                        "archive {}: entry \"{}\" replaces a directory",
                        self.archive.display(),
                        show(rel)
                    );
                } else {
                    // A later member of the same name wins, as when extracting.
                    *n = Node {
                        name: last.to_vec(),
                        meta,
                        xattrs,
                        kind,
                    };
                }
            }
            None => {
                self.push(at, last, meta, xattrs, kind);
            }
        }
        Ok(())
    }

    fn push(
        &mut self,
        parent: NodeId,
        name: &[u8],
        meta: Meta,
        xattrs: Vec<(Vec<u8>, Vec<u8>)>,
        kind: Kind,
    ) -> NodeId {
        let id = self.tree.nodes.len();
        self.tree.nodes.push(Node {
            name: name.to_vec(),
            meta,
            xattrs,
            kind,
        });
        self.children.push(BTreeMap::new());
        self.children[parent].insert(name.to_vec(), id);
        id
    }

    fn finish(mut self) -> Result<Tree> {
        // Children in name order (BTreeMap is bytewise sorted).
        for (id, ch) in self.children.iter().enumerate() {
            if let Kind::Dir(v) = &mut self.tree.nodes[id].kind {
                *v = ch.values().copied().collect();
            }
        }
        // A hard link whose target was later replaced by another member is
        // left pointing at a node that is not a file any more: refuse it.
        for (id, n) in self.tree.nodes.iter().enumerate() {
            if let Kind::Link(t) = n.kind {
                if matches!(self.tree.nodes[t].kind, Kind::Dir(_) | Kind::Link(_)) {
                    bail!(
                        "archive {}: hard link {} lost its target",
                        self.archive.display(),
                        self.tree.path_of(id)
                    );
                }
            }
        }
        self.tree.spool = self.spool;
        Ok(self.tree)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzzing entry point on a valid archive, then on every truncation
    /// and on single-byte corruptions of it: an answer each time, no panic.
    #[test]
    fn scan_tar_takes_any_input() {
        let mut b = ::tar::Builder::new(Vec::new());
        let mut h = ::tar::Header::new_gnu();
        h.set_entry_type(::tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, "etc/", &[][..]).unwrap();
        let mut h = ::tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(5);
        b.append_data(&mut h, "etc/hostname", &b"node\n"[..])
            .unwrap();
        let mut h = ::tar::Header::new_gnu();
        h.set_entry_type(::tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "etc/link", "hostname").unwrap();
        let ar = b.into_inner().unwrap();
        let ok = scan_tar(&ar[..]).unwrap();
        assert_eq!(ok.entries, 4);
        assert_eq!(ok.file_bytes, 5);
        let z = zstd::encode_all(&ar[..], 3).unwrap();
        assert_eq!(scan_tar(&z[..]).unwrap(), ok);
        for n in 0..ar.len() {
            let _ = scan_tar(&ar[..n]);
        }
        for i in (0..ar.len()).step_by(7) {
            for v in [0u8, 0x80, 0xff, b'7'] {
                let mut c = ar.clone();
                c[i] = v;
                let _ = scan_tar(&c[..]);
            }
        }
        assert!(scan_tar(&b"not a tar"[..]).is_err());
    }

    #[test]
    fn archive_paths() {
        assert_eq!(components(b"./a//b/").unwrap(), vec![&b"a"[..], b"b"]);
        assert!(components(b"./").unwrap().is_empty());
        assert_eq!(components(b"/etc/x").unwrap_err(), "is an absolute path");
        assert!(components(b"a/../../x")
            .unwrap_err()
            .contains("leaves the root"));
        assert!(components(b"..").is_err());
        // A name that merely starts with dots is fine.
        assert_eq!(components(b"a/..b").unwrap(), vec![&b"a"[..], b"..b"]);
    }

    #[test]
    fn excludes_are_anchored_and_stop_at_slashes() {
        let o = ReadOptions::new(
            &["boot/*".into(), "lib/modules/*/kernel/sound".into()],
            None,
        )
        .unwrap();
        assert!(o.excluded(b"boot/vmlinuz"));
        assert!(!o.excluded(b"boot"));
        assert!(!o.excluded(b"x/boot/vmlinuz"));
        assert!(o.excluded(b"lib/modules/6.1.0-50-amd64/kernel/sound"));
        assert!(!o.excluded(b"lib/modules/6.1/x/kernel/sound"));
        let e = ReadOptions::new(&["[".into()], None).unwrap_err();
        assert!(format!("{e:#}").contains("--exclude ["), "{e:#}");
    }

    #[test]
    fn mtimes_are_clamped() {
        let o = ReadOptions::new(&[], Some(1_700_000_000)).unwrap();
        assert_eq!(o.mtime(1_800_000_000), 1_700_000_000);
        assert_eq!(o.mtime(5), 5);
        assert_eq!(o.mtime(-5), 0);
        let o = ReadOptions::new(&[], None).unwrap();
        assert_eq!(o.mtime(1 << 40), u32::MAX);
    }

    #[test]
    fn dir_tree_is_sorted_and_links_grouped() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir(p.join("b")).unwrap();
        std::fs::write(p.join("b/z"), "z").unwrap();
        std::fs::write(p.join("a"), "a").unwrap();
        std::fs::hard_link(p.join("a"), p.join("c")).unwrap();
        std::os::unix::fs::symlink("/nowhere", p.join("d")).unwrap();
        let t = Tree::from_dir(p, &ReadOptions::default()).unwrap();
        let Kind::Dir(ch) = &t.nodes[0].kind else {
            panic!()
        };
        let names: Vec<_> = ch.iter().map(|&c| t.nodes[c].name.clone()).collect();
        assert_eq!(
            names,
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]
        );
        let a = t.lookup("a").unwrap();
        assert!(matches!(t.nodes[t.lookup("c").unwrap()].kind, Kind::Link(x) if x == a));
        assert!(
            matches!(&t.nodes[t.lookup("d").unwrap()].kind, Kind::Symlink(s) if s == b"/nowhere")
        );
        assert_eq!(t.path_of(t.lookup("b/z").unwrap()), "b/z");
        let Err(e) = Tree::from_dir(&p.join("nope"), &ReadOptions::default()) else {
            panic!("a missing source was read")
        };
        assert!(format!("{e:#}").contains("nope"), "{e:#}");
    }
}
