//! The generated root tree that `bench image` builds.
use super::*;

// ---------------------------------------------------------------------------
// The generated tree of `bench image`
//
// A root filesystem's mix, deterministic for a given machine (fixed seed;
// the binaries are copies of this machine's, picked in a seeded order), built
// once per generator version and size under `$NODEBOOT_CACHE/bench-tree-v<V>-<N>M/`:
// `root/` is the tree, `stats.json` what went into it. Shares of the size:
// ~45 % binaries and libraries, ~30 % text (prose, config, source, tables;
// 100 B–20 KB files in nested package dirs, identical copyright files), ~20 %
// large files (half random bytes, half records with random fields), ~5 %
// duplicates of other files under new names; plus merged-/usr symlinks, the
// libraries' own symlinks, generated ones, hardlinks, a few non-root owners.

/// Bump whenever the generator writes something different: the cache key.
pub(super) const TREE_VERSION: u32 = 1;
pub(super) const TREE_SEED: u64 = 0x6e6f_6465_626f_6f74;
/// Where the binaries come from (regular files up to 16 MiB).
pub(super) const BIN_DIRS: [&str; 4] = [
    "/usr/bin",
    "/usr/sbin",
    "/usr/libexec",
    "/usr/lib/x86_64-linux-gnu",
];
pub(super) const BIN_MAX: u64 = 16 << 20;

pub(super) struct Tree {
    pub(super) root: PathBuf,
    /// Entries as unsquashfs lists them (the root included).
    pub(super) entries: usize,
    /// Bytes of regular-file content (hardlinks once).
    pub(super) bytes: u64,
    pub(super) stats: serde_json::Value,
}

/// The cached tree of `size_mib`, generated first when missing.
pub(super) fn bench_tree(size_mib: u64) -> Result<Tree> {
    let cache = crate::e2e::cache_dir();
    let name = format!("bench-tree-v{TREE_VERSION}-{size_mib}M");
    let dir = cache.join(&name);
    let stats_file = dir.join("stats.json");
    if !stats_file.exists() {
        std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
        // Leftovers of interrupted generations (their process is gone).
        for e in
            std::fs::read_dir(&cache).with_context(|| format!("reading {}", cache.display()))?
        {
            let e = e?;
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = n.strip_prefix(&format!("{name}.tmp.")) {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let tmp = cache.join(format!("{name}.tmp.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        eprintln!(
            "xtask: bench image: generating a {size_mib} MiB tree in {} (once)",
            tmp.display()
        );
        let t = Instant::now();
        let stats = generate_tree(&tmp.join("root"), size_mib << 20)?;
        std::fs::write(
            tmp.join("stats.json"),
            serde_json::to_string_pretty(&stats)? + "\n",
        )
        .with_context(|| format!("writing {}", tmp.join("stats.json").display()))?;
        if dir.exists() {
            // An incomplete one (no stats.json): ours replaces it.
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        if let Err(e) = std::fs::rename(&tmp, &dir) {
            // Another run finished the same tree first: use it.
            let _ = std::fs::remove_dir_all(&tmp);
            if !stats_file.exists() {
                return Err(e)
                    .with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()));
            }
        }
        eprintln!(
            "xtask: bench image: tree generated in {:.0}s",
            t.elapsed().as_secs_f64()
        );
    }
    let stats: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&stats_file)
            .with_context(|| format!("reading {}", stats_file.display()))?,
    )
    .with_context(|| format!("parsing {}", stats_file.display()))?;
    let entries = stats["entries"].as_u64().unwrap_or(0) as usize;
    let bytes = stats["bytes"].as_u64().unwrap_or(0);
    if entries == 0 {
        bail!("{}: no entry count", stats_file.display());
    }
    Ok(Tree {
        root: dir.join("root"),
        entries,
        bytes,
        stats,
    })
}

/// splitmix64: small, fast, good enough for test data.
pub(super) struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
    /// Uniform in lo..=hi.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    /// Log-uniform in lo..=hi: as many files of 100 B–1 KB as of 1–10 KB.
    fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        let (l, h) = ((lo as f64).ln(), (hi as f64 + 1.0).ln());
        ((l + self.unit() * (h - l)).exp() as u64).clamp(lo, hi)
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let x = self.next().to_le_bytes();
            c.copy_from_slice(&x[..c.len()]);
        }
    }
}

pub(super) const COMMON_WORDS: [&str; 40] = [
    "the", "of", "and", "to", "a", "in", "is", "for", "on", "that", "with", "be", "as", "by", "it",
    "or", "are", "this", "from", "not", "file", "if", "when", "default", "value", "set", "use",
    "can", "will", "system", "see", "data", "user", "all", "new", "name", "option", "error",
    "path", "which",
];
pub(super) const SYLLABLES: [&str; 40] = [
    "ka", "ro", "mi", "sen", "tal", "or", "ve", "lin", "dus", "pra", "che", "ni", "bo", "ex",
    "qui", "ter", "al", "ung", "sto", "fe", "ri", "mon", "za", "ple", "gu", "ad", "is", "tor",
    "ne", "wa", "con", "fig", "dev", "net", "pol", "ser", "an", "ti", "lo", "mar",
];
pub(super) const KEYWORDS_PY: [&str; 8] = [
    "if", "for", "return", "elif", "while", "with", "raise", "yield",
];
pub(super) const KEYWORDS_C: [&str; 8] = [
    "if", "for", "return", "while", "switch", "static", "const", "unsigned",
];

/// A Zipf-distributed vocabulary: common English words first, then
/// pseudo-words.
pub(super) struct Words(Vec<String>);

impl Words {
    fn new(rng: &mut Rng) -> Words {
        let mut v: Vec<String> = COMMON_WORDS.iter().map(|w| w.to_string()).collect();
        let mut seen: HashSet<String> = v.iter().cloned().collect();
        while v.len() < 4000 {
            let n = 1 + rng.below(3) + rng.below(2) * rng.below(2);
            let w: String = (0..n).map(|_| *rng.pick(&SYLLABLES)).collect();
            if seen.insert(w.clone()) {
                v.push(w);
            }
        }
        Words(v)
    }
    /// Rank r with probability ∝ 1/(r+1).
    fn word(&self, rng: &mut Rng) -> &str {
        let n = self.0.len();
        let r = ((n as f64 + 1.0).powf(rng.unit()) - 1.0) as usize;
        &self.0[r.min(n - 1)]
    }
    /// A word that is not one of the common English ones (names).
    fn name(&self, rng: &mut Rng) -> &str {
        let n = self.0.len() as u64;
        &self.0[rng.range(COMMON_WORDS.len() as u64, n - 1) as usize]
    }
    /// An identifier of 1–3 words joined by `_`.
    fn ident(&self, rng: &mut Rng) -> String {
        let n = rng.range(1, 3);
        (0..n).map(|_| self.word(rng)).collect::<Vec<_>>().join("_")
    }
}

#[derive(Clone, Copy)]
pub(super) enum TextKind {
    Prose,
    Config,
    Python,
    C,
    Table,
}

/// `size` bytes of text of `kind`.
pub(super) fn gen_text(kind: TextKind, size: usize, rng: &mut Rng, w: &Words) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(size + 1024);
    let mut col = 0usize;
    let push = |out: &mut Vec<u8>, col: &mut usize, word: &str| {
        if *col > 0 {
            if *col + 1 + word.len() > 72 {
                out.push(b'\n');
                *col = 0;
            } else {
                out.push(b' ');
                *col += 1;
            }
        }
        out.extend_from_slice(word.as_bytes());
        *col += word.len();
    };
    while out.len() < size {
        match kind {
            TextKind::Prose => {
                for _ in 0..rng.range(2, 8) {
                    let n = rng.range(4, 18);
                    for i in 0..n {
                        let mut word = w.word(rng).to_string();
                        if i == 0 {
                            word[..1].make_ascii_uppercase();
                        }
                        if i == n - 1 {
                            word.push('.');
                        } else if rng.chance(0.08) {
                            word.push(',');
                        }
                        push(&mut out, &mut col, &word);
                    }
                }
                out.extend_from_slice(b"\n\n");
                col = 0;
            }
            TextKind::Config => {
                if rng.chance(0.1) {
                    out.extend_from_slice(format!("\n[{}]\n", w.ident(rng)).as_bytes());
                }
                if rng.chance(0.3) {
                    out.extend_from_slice(b"#");
                    for _ in 0..rng.range(3, 12) {
                        out.push(b' ');
                        out.extend_from_slice(w.word(rng).as_bytes());
                    }
                    out.push(b'\n');
                }
                let key = w.ident(rng);
                let value = match rng.below(5) {
                    0 => rng.log_uniform(1, 100_000).to_string(),
                    1 => w.word(rng).to_string(),
                    2 => format!("/usr/lib/{}/{}", w.name(rng), w.word(rng)),
                    3 => rng.pick(&["yes", "no", "true", "false"]).to_string(),
                    _ => format!("\"{} {} {}\"", w.word(rng), w.word(rng), w.word(rng)),
                };
                let sep = if rng.chance(0.5) { " = " } else { "=" };
                out.extend_from_slice(format!("{key}{sep}{value}\n").as_bytes());
            }
            TextKind::Python => {
                let mut args = vec!["self".to_string()];
                args.extend((0..rng.range(0, 3)).map(|_| w.ident(rng)));
                out.extend_from_slice(
                    format!("\ndef {}({}):\n", w.ident(rng), args.join(", ")).as_bytes(),
                );
                if rng.chance(0.5) {
                    out.extend_from_slice(b"    \"\"\"");
                    for _ in 0..rng.range(4, 12) {
                        out.push(b' ');
                        out.extend_from_slice(w.word(rng).as_bytes());
                    }
                    out.extend_from_slice(b".\"\"\"\n");
                }
                for _ in 0..rng.range(2, 12) {
                    let indent = "    ".repeat(rng.range(1, 3) as usize);
                    let line = match rng.below(4) {
                        0 => format!(
                            "{} {} {}:",
                            rng.pick(&KEYWORDS_PY),
                            w.ident(rng),
                            rng.pick(&["in self.items()", "is None", "== 0", ""])
                        ),
                        1 => format!("# {} {} {}", w.word(rng), w.word(rng), w.word(rng)),
                        _ => format!(
                            "{} = self.{}({}, {})",
                            w.ident(rng),
                            w.ident(rng),
                            w.ident(rng),
                            rng.below(256)
                        ),
                    };
                    out.extend_from_slice(format!("{indent}{line}\n").as_bytes());
                }
            }
            TextKind::C => {
                out.extend_from_slice(
                    format!(
                        "\n/* {} {} {} */\nstatic int {}(struct {} *{}, {} {})\n{{\n",
                        w.word(rng),
                        w.word(rng),
                        w.word(rng),
                        w.ident(rng),
                        w.ident(rng),
                        w.word(rng),
                        rng.pick(&["int", "size_t", "const char *", "unsigned long"]),
                        w.word(rng)
                    )
                    .as_bytes(),
                );
                for _ in 0..rng.range(2, 12) {
                    let line = match rng.below(3) {
                        0 => format!(
                            "\t{} ({}->{} > {})\n\t\treturn -E{};",
                            rng.pick(&KEYWORDS_C),
                            w.word(rng),
                            w.ident(rng),
                            rng.below(4096),
                            rng.pick(&["INVAL", "NOMEM", "IO", "AGAIN"])
                        ),
                        _ => format!(
                            "\t{} = {}({}, 0x{:x});",
                            w.ident(rng),
                            w.ident(rng),
                            w.word(rng),
                            rng.below(1 << 16)
                        ),
                    };
                    out.extend_from_slice(line.as_bytes());
                    out.push(b'\n');
                }
                out.extend_from_slice(b"\treturn 0;\n}\n");
            }
            TextKind::Table => {
                let line = if rng.chance(0.3) {
                    format!(
                        "\t{:04x}  {} {}\n",
                        rng.below(1 << 16),
                        w.name(rng),
                        w.word(rng)
                    )
                } else {
                    format!(
                        "{:04x}  {} {} {}\n",
                        rng.below(1 << 16),
                        w.name(rng),
                        w.word(rng),
                        w.name(rng)
                    )
                };
                out.extend_from_slice(line.as_bytes());
            }
        }
    }
    out.truncate(size);
    out
}

/// Byte counters of what the generator wrote, per share.
#[derive(Default)]
pub(super) struct GenBytes {
    binaries: u64,
    text: u64,
    large_random: u64,
    large_records: u64,
    duplicates: u64,
}

pub(super) struct Gen {
    root: PathBuf,
    words: Words,
    /// Regular files written (relative path, size): for duplicates and hardlinks.
    files: Vec<(PathBuf, u64)>,
    /// Relative paths of non-directories, and of directories.
    taken: HashSet<PathBuf>,
    dirs: HashSet<PathBuf>,
    bytes: GenBytes,
    symlinks: u64,
    hardlinks: u64,
    duplicates: u64,
}

impl Gen {
    /// Claim `rel` for a non-directory: false when it (or a directory of that
    /// name, or a non-directory on its way) exists already. Creates the parents.
    fn claim(&mut self, rel: &Path) -> Result<bool> {
        if self.taken.contains(rel) || self.dirs.contains(rel) {
            return Ok(false);
        }
        if rel.ancestors().skip(1).any(|a| self.taken.contains(a)) {
            return Ok(false);
        }
        for a in rel.ancestors().skip(1) {
            if !self.dirs.insert(a.to_path_buf()) {
                break;
            }
        }
        if let Some(parent) = rel.parent() {
            let d = self.root.join(parent);
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        self.taken.insert(rel.to_path_buf());
        Ok(true)
    }

    fn write(&mut self, rel: &Path, data: &[u8], mode: u32) -> Result<bool> {
        use std::os::unix::fs::PermissionsExt;
        if !self.claim(rel)? {
            return Ok(false);
        }
        let p = self.root.join(rel);
        std::fs::write(&p, data).with_context(|| format!("writing {}", p.display()))?;
        if mode != 0o644 {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("chmod {}", p.display()))?;
        }
        self.files.push((rel.to_path_buf(), data.len() as u64));
        Ok(true)
    }

    fn symlink(&mut self, target: &str, rel: &Path) -> Result<bool> {
        if !self.claim(rel)? {
            return Ok(false);
        }
        let p = self.root.join(rel);
        std::os::unix::fs::symlink(target, &p)
            .with_context(|| format!("symlink {} -> {target}", p.display()))?;
        self.symlinks += 1;
        Ok(true)
    }

    fn mkdir(&mut self, rel: &str, mode: u32) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let p = self.root.join(rel);
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", p.display()))?;
        for a in Path::new(rel).ancestors() {
            self.dirs.insert(a.to_path_buf());
        }
        Ok(())
    }

    /// The skeleton of a merged-/usr Debian root.
    fn skeleton(&mut self) -> Result<()> {
        for d in [
            "boot",
            "dev",
            "home",
            "media",
            "mnt",
            "opt",
            "proc",
            "run",
            "srv",
            "sys",
            "usr/local/bin",
            "var/log",
            "var/lib",
            "var/cache",
        ] {
            self.mkdir(d, 0o755)?;
        }
        self.mkdir("root", 0o700)?;
        self.mkdir("tmp", 0o1777)?;
        self.mkdir("var/tmp", 0o1777)?;
        for (l, t) in [
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
            ("etc/mtab", "../proc/self/mounts"),
            ("var/run", "/run"),
            (
                "usr/lib64/ld-linux-x86-64.so.2",
                "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            ),
        ] {
            self.symlink(t, Path::new(l))?;
        }
        Ok(())
    }

    /// Copies of this machine's binaries and libraries, in a seeded order,
    /// until `budget`; then their symlinks whose targets were copied.
    fn binaries(&mut self, rng: &mut Rng, budget: u64) -> Result<()> {
        let mut found: Vec<(PathBuf, u64)> = Vec::new();
        let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
        for d in BIN_DIRS {
            if !Path::new(d).is_dir() {
                continue;
            }
            walk(Path::new(d), &mut |p, m| {
                if m.is_file() && m.len() > 0 && m.len() <= BIN_MAX {
                    found.push((p.to_path_buf(), m.len()));
                } else if m.file_type().is_symlink() {
                    if let Ok(t) = std::fs::read_link(p) {
                        links.push((p.to_path_buf(), t));
                    }
                }
                Ok(())
            })?;
        }
        found.sort();
        for i in (1..found.len()).rev() {
            found.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut chosen = Vec::new();
        let mut total = 0;
        for (p, len) in found {
            if total >= budget {
                break;
            }
            total += len;
            chosen.push(p);
        }
        if total < budget {
            eprintln!(
                "xtask: bench image: only {} MiB of binaries on this machine (wanted {} MiB)",
                total >> 20,
                budget >> 20
            );
        }
        chosen.sort();
        for src in chosen {
            let rel = src.strip_prefix("/").unwrap_or(&src).to_path_buf();
            if !self.claim(&rel)? {
                continue;
            }
            let dst = self.root.join(&rel);
            match std::fs::copy(&src, &dst) {
                Ok(n) => {
                    self.bytes.binaries += n;
                    self.files.push((rel, n));
                }
                // Removed meanwhile (an apt run): skip it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.taken.remove(&rel);
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("copying {} to {}", src.display(), dst.display()))
                }
            }
        }
        // Relative symlinks (libfoo.so.1 -> libfoo.so.1.2.3, chains too)
        // whose target is in the tree.
        links.sort();
        for _ in 0..3 {
            for (p, t) in &links {
                let rel = p.strip_prefix("/").unwrap_or(p);
                if t.is_absolute() || self.taken.contains(rel) {
                    continue;
                }
                let target = normalize(&rel.parent().unwrap_or(Path::new("")).join(t));
                if self.taken.contains(&target) {
                    self.symlink(&t.to_string_lossy(), rel)?;
                }
            }
        }
        Ok(())
    }

    /// Packages' text files until `budget`.
    fn text(&mut self, rng: &mut Rng, budget: u64) -> Result<()> {
        let licenses: Vec<Vec<u8>> = (0..12)
            .map(|_| {
                let n = rng.log_uniform(1500, 18000) as usize;
                gen_text(TextKind::Prose, n, rng, &self.words)
            })
            .collect();
        let mut pkgs: HashSet<String> = HashSet::new();
        while self.bytes.text < budget {
            let mut pkg = self.words.name(rng).to_string();
            if rng.chance(0.3) {
                pkg = format!("lib{pkg}");
            }
            const SUFFIXES: [&str; 9] =
                ["", "", "", "-common", "-data", "-utils", "-dev", "2", "3"];
            let suffix = rng.pick::<&str>(&SUFFIXES);
            pkg.push_str(suffix);
            if !pkgs.insert(pkg.clone()) {
                continue;
            }
            let doc = PathBuf::from(format!("usr/share/doc/{pkg}"));
            let lic = rng.pick(&licenses).clone();
            if self.write(&doc.join("copyright"), &lic, 0o644)? {
                self.bytes.text += lic.len() as u64;
            }
            // A package ships into 1-3 places (plus its doc dir), with a
            // few subdirectories: ~7 files per directory, as in a real root.
            let mut places: Vec<u64> = (0..8).collect();
            for i in (1..places.len()).rev() {
                places.swap(i, rng.below(i as u64 + 1) as usize);
            }
            places.truncate(rng.range(1, 3) as usize);
            let subs: Vec<String> = (0..rng.range(1, 3))
                .map(|_| {
                    (0..rng.range(0, 2))
                        .map(|_| format!("{}/", self.words.name(rng)))
                        .collect()
                })
                .collect();
            let mut pkg_files: Vec<PathBuf> = Vec::new();
            for _ in 0..rng.log_uniform(2, 60) {
                let mut size = rng.log_uniform(100, 20_000) as usize;
                if rng.chance(0.02) {
                    size = 0;
                }
                let name = self.words.name(rng).to_string();
                let sub = rng.pick(&subs).clone();
                let place = if rng.chance(0.15) {
                    8
                } else {
                    *rng.pick(&places)
                };
                let (rel, kind, mode) = match place {
                    0 => (format!("etc/{pkg}/{name}.conf"), TextKind::Config, 0o644),
                    1 => (
                        format!(
                            "usr/lib/python3/dist-packages/{}/{sub}{name}.py",
                            pkg.replace('-', "_"),
                        ),
                        TextKind::Python,
                        0o644,
                    ),
                    2 => (
                        format!("usr/include/{pkg}/{sub}{name}.h"),
                        TextKind::C,
                        0o644,
                    ),
                    3 => {
                        let sect = rng.pick(&[1, 5, 8]);
                        (
                            format!("usr/share/man/man{sect}/{name}.{sect}"),
                            TextKind::Prose,
                            0o644,
                        )
                    }
                    4 => (
                        format!("usr/share/{pkg}/{sub}{name}.tab"),
                        TextKind::Table,
                        0o644,
                    ),
                    5 => (
                        format!("usr/share/{pkg}/scripts/{name}"),
                        TextKind::Python,
                        0o755,
                    ),
                    6 => (
                        format!(
                            "usr/share/{pkg}/{sub}{name}.{}",
                            rng.pick(&["xml", "json", "rules", "conf", "txt"])
                        ),
                        *rng.pick(&[TextKind::Config, TextKind::Prose, TextKind::Table]),
                        0o644,
                    ),
                    7 => (
                        format!("usr/lib/{pkg}/{sub}{name}.pl"),
                        TextKind::Python,
                        0o644,
                    ),
                    _ => (
                        format!("{}/{name}.txt", doc.display()),
                        TextKind::Prose,
                        0o644,
                    ),
                };
                let data = gen_text(kind, size, rng, &self.words);
                let rel = PathBuf::from(rel);
                if self.write(&rel, &data, mode)? {
                    self.bytes.text += data.len() as u64;
                    pkg_files.push(rel);
                }
            }
            // Symlinks as packages ship them: ~1 per package.
            for _ in 0..rng.below(3) {
                if pkg_files.is_empty() {
                    break;
                }
                let t = rng.pick(&pkg_files).clone();
                let name = self.words.name(rng).to_string();
                match rng.below(4) {
                    0 | 1 => self.symlink(
                        &format!("../../{}", t.display()),
                        Path::new(&format!("usr/bin/{name}")),
                    )?,
                    2 => self.symlink(
                        &format!("/{}", t.display()),
                        Path::new(&format!("etc/alternatives/{name}")),
                    )?,
                    _ => self.symlink(&pkg, Path::new(&format!("usr/share/doc/{name}")))?,
                };
            }
            if rng.chance(0.02) {
                let l = PathBuf::from(format!("etc/{pkg}.d/{}", self.words.name(rng)));
                self.symlink("/nonexistent/dangling", &l)?;
            }
        }
        Ok(())
    }

    /// A few large files until `budget`: half random bytes, half records
    /// with random fields (log lines, CSV, fixed-size binary records).
    fn large(&mut self, rng: &mut Rng, budget: u64) -> Result<()> {
        const N: u64 = 6;
        let each = budget / N;
        let hosts: Vec<String> = (0..512).map(|i| format!("cn{i:03}")).collect();
        let procs: Vec<String> = (0..8).map(|_| self.words.name(rng).to_string()).collect();
        let mut buf = vec![0u8; 1 << 20];
        for i in 0..N {
            let dir = format!(
                "{}/{}",
                rng.pick(&[
                    "usr/share",
                    "opt",
                    "var/lib",
                    "usr/lib/firmware",
                    "var/cache"
                ]),
                self.words.name(rng)
            );
            let random = i % 2 == 0;
            let rel = PathBuf::from(match i {
                1 => format!("var/log/{}.log", self.words.name(rng)),
                3 => format!("{dir}/{}.db", self.words.name(rng)),
                5 => format!("{dir}/{}.csv", self.words.name(rng)),
                _ => format!(
                    "{dir}/{}.{}",
                    self.words.name(rng),
                    rng.pick(&["pack", "bin", "img"])
                ),
            });
            if !self.claim(&rel)? {
                continue;
            }
            let p = self.root.join(&rel);
            let mut f = std::io::BufWriter::with_capacity(
                1 << 20,
                std::fs::File::create(&p).with_context(|| format!("creating {}", p.display()))?,
            );
            let mut left = each;
            let mut seq = 0u64;
            let mut t = 1_700_000_000u64;
            while left > 0 {
                let chunk: Vec<u8> = if random {
                    rng.fill(&mut buf);
                    buf.clone()
                } else {
                    let mut c = Vec::with_capacity(1 << 16);
                    while c.len() < 1 << 16 {
                        seq += 1;
                        t += rng.below(3);
                        match i {
                            1 => c.extend_from_slice(
                                format!(
                                    "{} {} {}[{}]: job {} step {} state={} rc={} cpu={}.{:03} mem={}K\n",
                                    t,
                                    rng.pick(&hosts),
                                    rng.pick(&procs),
                                    rng.range(100, 99_999),
                                    rng.range(1_000_000, 9_999_999),
                                    rng.below(8),
                                    rng.pick(&["COMPLETED", "RUNNING", "FAILED", "PENDING"]),
                                    rng.below(3),
                                    rng.below(5000),
                                    rng.below(1000),
                                    rng.log_uniform(1000, 64_000_000)
                                )
                                .as_bytes(),
                            ),
                            3 => {
                                c.extend_from_slice(b"NBREC\0\0\x01");
                                c.extend_from_slice(&seq.to_le_bytes());
                                for _ in 0..4 {
                                    c.extend_from_slice(&(rng.next() as u32).to_le_bytes());
                                }
                                let mut name = [0u8; 16];
                                let w = self.words.word(rng).as_bytes();
                                name[..w.len().min(16)].copy_from_slice(&w[..w.len().min(16)]);
                                c.extend_from_slice(&name);
                                for _ in 0..16 {
                                    c.push(rng.below(4) as u8);
                                }
                            }
                            _ => c.extend_from_slice(
                                format!(
                                    "{seq},{},{},{}.{:04},{:08x},{}\n",
                                    self.words.word(rng),
                                    rng.pick(&hosts),
                                    rng.below(1000),
                                    rng.below(10_000),
                                    rng.next() as u32,
                                    rng.log_uniform(1, 1 << 40)
                                )
                                .as_bytes(),
                            ),
                        }
                    }
                    c
                };
                let n = (left as usize).min(chunk.len());
                f.write_all(&chunk[..n])
                    .with_context(|| format!("writing {}", p.display()))?;
                left -= n as u64;
            }
            f.flush()
                .with_context(|| format!("writing {}", p.display()))?;
            if random {
                self.bytes.large_random += each;
            } else {
                self.bytes.large_records += each;
            }
            self.files.push((rel, each));
        }
        Ok(())
    }

    /// Copies of a few % of the files (binaries and text) under other names,
    /// until `budget`; then hardlinks to ~0.5 % of them.
    fn duplicates_and_links(&mut self, rng: &mut Rng, budget: u64) -> Result<()> {
        let candidates: Vec<(PathBuf, u64)> = self
            .files
            .iter()
            .filter(|(_, n)| *n <= 4 << 20)
            .cloned()
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let vendors: Vec<String> = (0..3).map(|_| self.words.name(rng).to_string()).collect();
        let max = (candidates.len() as u64 * 4 / 100).max(1);
        let mut tries = 0;
        while self.bytes.duplicates < budget && self.duplicates < max && tries < 10 * max {
            tries += 1;
            let (src, n) = rng.pick(&candidates).clone();
            let dst = if rng.chance(0.5) {
                let mut s = src.clone().into_os_string();
                s.push(rng.pick(&[".dpkg-old", ".orig", ".bak", ".1"]));
                PathBuf::from(s)
            } else {
                Path::new("opt").join(rng.pick(&vendors)).join(&src)
            };
            if !self.claim(&dst)? {
                continue;
            }
            let (s, d) = (self.root.join(&src), self.root.join(&dst));
            std::fs::copy(&s, &d)
                .with_context(|| format!("copying {} to {}", s.display(), d.display()))?;
            self.bytes.duplicates += n;
            self.duplicates += 1;
        }
        let links = candidates.len() / 200 + 1;
        for _ in 0..links {
            let (src, _) = rng.pick(&candidates).clone();
            let mut s = src.clone().into_os_string();
            s.push(format!("-{}.{}", rng.range(1, 9), rng.below(20)));
            let dst = PathBuf::from(s);
            if !self.claim(&dst)? {
                continue;
            }
            let (s, d) = (self.root.join(&src), self.root.join(&dst));
            std::fs::hard_link(&s, &d)
                .with_context(|| format!("hardlinking {} to {}", d.display(), s.display()))?;
            self.hardlinks += 1;
        }
        Ok(())
    }
}

/// `a/b/../c` → `a/c`, lexically.
pub(super) fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// FNV-1a then a splitmix round: a stable hash of a path.
pub(super) fn path_hash(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &c in b {
        h = (h ^ c as u64).wrapping_mul(0x100_0000_01b3);
    }
    Rng::new(h).next()
}

/// Write the tree under `root` (created); its stats.
pub(super) fn generate_tree(root: &Path, size: u64) -> Result<serde_json::Value> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let mut rng = Rng::new(TREE_SEED);
    let words = Words::new(&mut rng);
    let mut g = Gen {
        root: root.to_path_buf(),
        words,
        files: Vec::new(),
        taken: HashSet::new(),
        dirs: HashSet::new(),
        bytes: GenBytes::default(),
        symlinks: 0,
        hardlinks: 0,
        duplicates: 0,
    };
    // One generator per share, so that changing one leaves the others alone.
    g.skeleton()?;
    g.binaries(&mut Rng::new(TREE_SEED ^ 1), size * 45 / 100)?;
    g.text(&mut Rng::new(TREE_SEED ^ 2), size * 30 / 100)?;
    g.large(&mut Rng::new(TREE_SEED ^ 3), size * 20 / 100)?;
    g.duplicates_and_links(&mut Rng::new(TREE_SEED ^ 4), size * 5 / 100)?;

    // Owners and mtimes from a hash of the path; count what is there.
    let owners: [(u32, u32); 4] = [(1000, 1000), (33, 33), (0, 8), (65534, 65534)];
    let (mut entries, mut dirs, mut regular, mut symlinks, mut bytes) =
        (1u64, 1u64, 0u64, 0u64, 0u64);
    let mut inodes: HashSet<u64> = HashSet::new();
    let set_time = |p: &Path, h: u64| -> Result<()> {
        let c = std::ffi::CString::new(p.as_os_str().as_bytes())?;
        let t = libc::timespec {
            tv_sec: 1_672_531_200 + (h % (365 * 86_400)) as libc::time_t,
            tv_nsec: 0,
        };
        let ts = [t, t];
        // SAFETY: c is NUL-terminated, ts holds the two timespecs utimensat reads.
        let r = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                ts.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("setting the mtime of {}", p.display()));
        }
        Ok(())
    };
    walk(root, &mut |p, m| {
        entries += 1;
        let rel = p.strip_prefix(root).unwrap_or(p);
        let h = path_hash(rel.as_os_str().as_bytes());
        if m.is_dir() {
            dirs += 1;
        } else if m.file_type().is_symlink() {
            symlinks += 1;
        } else if m.is_file() {
            regular += 1;
            if inodes.insert(m.ino()) {
                bytes += m.len();
            }
            // chown clears setuid/setgid: leave those files to root.
            if h % 100 < 2 && m.mode() & 0o6000 == 0 {
                let (u, gid) = owners[(h >> 8) as usize % owners.len()];
                std::os::unix::fs::lchown(p, Some(u), Some(gid))
                    .with_context(|| format!("chown {}", p.display()))?;
            }
        }
        set_time(p, h)
    })?;
    for a in g.dirs.iter().filter(|d| !d.as_os_str().is_empty()) {
        // Directory mtimes moved when their entries were made: set them again.
        set_time(&root.join(a), path_hash(a.as_os_str().as_bytes()))?;
    }
    set_time(root, 0)?;
    Ok(serde_json::json!({
        "version": TREE_VERSION,
        "seed": TREE_SEED,
        "size_bytes": size,
        "entries": entries,
        "bytes": bytes,
        "directories": dirs,
        "regular_files": regular,
        "symlinks": symlinks,
        "hardlinks": g.hardlinks,
        "duplicates": g.duplicates,
        "share_bytes": {
            "binaries": g.bytes.binaries,
            "text": g.bytes.text,
            "large_random": g.bytes.large_random,
            "large_records": g.bytes.large_records,
            "duplicates": g.bytes.duplicates,
        },
        "binaries_from": BIN_DIRS,
    }))
}
