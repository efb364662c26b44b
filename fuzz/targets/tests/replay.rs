//! Every file of `fuzz/corpus/<target>/` and `fuzz/artifacts/<target>/`
//! through the target's body, on the stable toolchain: what the fuzzer
//! found interesting (and every crasher, once fixed) stays a test. A
//! target whose corpus directory is missing or empty fails the test, so a
//! corpus cannot vanish unnoticed.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("fuzz/")
        .to_path_buf()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

/// Panics in any thread (gtmpl lexes on a thread of its own, out of
/// reach of `catch_unwind`), counted by the panic hook.
static PANICS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn replay_every_corpus_and_artifact() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default(info);
    }));
    let fuzz = fuzz_dir();
    let mut problems = Vec::new();
    let mut total = 0;
    for (name, body) in nodeboot_fuzz_targets::TARGETS {
        let corpus = files(&fuzz.join("corpus").join(name));
        if corpus.is_empty() {
            problems.push(format!("fuzz/corpus/{name}/ is missing or empty"));
        }
        let artifacts = files(&fuzz.join("artifacts").join(name));
        for f in corpus.iter().chain(&artifacts) {
            let data = match std::fs::read(f) {
                Ok(d) => d,
                // Replaced by a fuzzer running beside the test (libFuzzer
                // swaps in smaller inputs as it goes).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("{}: {e}", f.display()),
            };
            let before = PANICS.load(Ordering::SeqCst);
            let r = std::panic::catch_unwind(|| body(&data));
            if r.is_err() || PANICS.load(Ordering::SeqCst) != before {
                problems.push(format!("{name}: {} panics", f.display()));
            }
            total += 1;
        }
        eprintln!(
            "replay {name}: {} corpus files, {} artifacts",
            corpus.len(),
            artifacts.len()
        );
    }
    // Every target has a fuzz_targets/ file that calls it, and nothing more.
    for entry in std::fs::read_dir(fuzz.join("fuzz_targets")).expect("fuzz/fuzz_targets") {
        let p = entry.unwrap().path();
        let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
        if nodeboot_fuzz_targets::target(&stem).is_none() {
            problems.push(format!("{} is not in TARGETS", p.display()));
        }
    }
    for (name, _) in nodeboot_fuzz_targets::TARGETS {
        let f = fuzz.join("fuzz_targets").join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        if !text.contains(&format!("nodeboot_fuzz_targets::{name}(data)")) {
            problems.push(format!("{} does not call {name}", f.display()));
        }
    }
    eprintln!("replayed {total} inputs");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
