//! `cargo xtask fuzz [--seconds N] [TARGET]`: run the cargo-fuzz targets of
//! `fuzz/` (nightly toolchain, libFuzzer), one after the other, each for N
//! seconds over its corpus `fuzz/corpus/TARGET` (new inputs are added
//! there; crashers land in `fuzz/artifacts/TARGET/`), then one summary
//! line per target: runs, coverage, new corpus files, crashes.
//!
//! The bodies of the targets live in `fuzz/targets` (a workspace member);
//! `cargo test` replays every corpus and artifact file through them on the
//! stable toolchain (`fuzz/targets/tests/replay.rs`).
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What one target's run did.
#[derive(Debug, Default)]
struct Summary {
    runs: u64,
    per_sec: u64,
    cov: u64,
    new_files: usize,
    crashes: Vec<PathBuf>,
    failed: bool,
}

fn fuzz_dir() -> PathBuf {
    crate::build::root().join("fuzz")
}

/// The targets: `fuzz/fuzz_targets/*.rs`, sorted.
pub fn targets() -> Result<Vec<String>> {
    let dir = fuzz_dir().join("fuzz_targets");
    let mut v = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "rs") {
            v.push(p.file_stem().unwrap().to_string_lossy().into_owned());
        }
    }
    v.sort();
    Ok(v)
}

/// Install cargo-fuzz when `cargo fuzz` is not there.
fn ensure_cargo_fuzz() -> Result<()> {
    let have = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        eprintln!("xtask: installing cargo-fuzz");
        crate::build::run(Command::new("cargo").args(["install", "cargo-fuzz"]))?;
    }
    Ok(())
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The number after `key` in a libFuzzer line (`cov: 123`, `stat::x: 5`).
fn number_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Run `target` for `seconds`; its libFuzzer output goes to
/// `fuzz/target/xtask-logs/TARGET.log`.
fn run_one(target: &str, seconds: u64) -> Result<Summary> {
    let fuzz = fuzz_dir();
    let corpus = fuzz.join("corpus").join(target);
    let artifacts = fuzz.join("artifacts").join(target);
    std::fs::create_dir_all(&corpus)?;
    std::fs::create_dir_all(&artifacts)?;
    let before = files(&corpus).len();
    let crashes_before = files(&artifacts);
    let logs = fuzz.join("target").join("xtask-logs");
    std::fs::create_dir_all(&logs)?;
    let log_path = logs.join(format!("{target}.log"));
    let mut log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    eprintln!(
        "xtask: fuzz {target} for {seconds} s (log: {})",
        log_path.display()
    );
    let mut child = Command::new("cargo")
        .current_dir(&fuzz)
        // fuzz/target, whatever the stable build uses.
        .env_remove("CARGO_TARGET_DIR")
        .args(["+nightly", "fuzz", "run", target])
        .arg(format!("corpus/{target}"))
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .args(["-rss_limit_mb=2048", "-timeout=20", "-print_final_stats=1"])
        // gtmpl lexes on a thread of its own per template: LeakSanitizer
        // takes glibc's thread-exit bookkeeping (32 bytes from
        // __cxa_thread_atexit_impl) for a leak. Memory is bounded by
        // -rss_limit_mb (and the malloc limit that follows it) instead.
        .arg("-detect_leaks=0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting cargo +nightly fuzz run")?;
    let mut s = Summary::default();
    let stderr = child.stderr.take().expect("piped stderr");
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap_or_default();
        writeln!(log, "{line}")?;
        if let Some(c) = number_after(&line, "cov:") {
            s.cov = c;
        }
        if let Some(n) = number_after(&line, "stat::number_of_executed_units:") {
            s.runs = n;
        }
        if let Some(n) = number_after(&line, "stat::average_exec_per_sec:") {
            s.per_sec = n;
        }
        // The run's own progress lines, for a long run watched live.
        if line.contains(" pulse ") || line.contains("ERROR:") || line.contains("panicked at") {
            eprintln!("  {target}: {line}");
        }
    }
    let st = child.wait()?;
    s.failed = !st.success();
    s.new_files = files(&corpus).len().saturating_sub(before);
    s.crashes = files(&artifacts)
        .into_iter()
        .filter(|p| !crashes_before.contains(p))
        .collect();
    Ok(s)
}

/// `cargo xtask fuzz`: `target` (else every target) for `seconds` each.
pub fn run(seconds: u64, target: Option<&str>) -> Result<()> {
    let all = targets()?;
    let chosen: Vec<String> = match target {
        Some(t) if all.iter().any(|a| a == t) => vec![t.to_string()],
        Some(t) => bail!("no fuzz target {t:?} (targets: {})", all.join(", ")),
        None => all,
    };
    ensure_cargo_fuzz()?;
    let mut lines = Vec::new();
    let mut bad = Vec::new();
    for t in &chosen {
        let s = run_one(t, seconds)?;
        let line = format!(
            "fuzz {t}: {} runs ({}/s) in {seconds} s, cov {}, {} new corpus files, {} crashes{}",
            s.runs,
            s.per_sec,
            s.cov,
            s.new_files,
            s.crashes.len(),
            s.crashes
                .iter()
                .map(|p| format!(" {}", p.display()))
                .collect::<String>(),
        );
        eprintln!("{line}");
        lines.push(line);
        if s.failed || !s.crashes.is_empty() {
            bad.push(t.clone());
        }
    }
    println!("{}", lines.join("\n"));
    if !bad.is_empty() {
        bail!(
            "fuzzing found problems in: {} (see fuzz/artifacts/ and fuzz/target/xtask-logs/)",
            bad.join(", ")
        );
    }
    Ok(())
}
