//! bootd's lasting node state: `STATE/nodes.redb`, one record per node
//! (its status and boot history, see [`crate::status`]) in a redb database.
//!
//! redb (pure Rust, no C library) commits a write transaction as a whole
//! or not at all: pages are copy-on-write and the commit flips a
//! checksummed root, fsync'd before the answer. A `kill -9`, a crash or a
//! power cut between two commits leaves the last commit; one in the middle
//! of a commit leaves the commit before it. There is never a half-written
//! node. The file also holds an exclusive lock: a second bootd on the same
//! `--state` is refused at start.
//!
//! A status report is answered (204) once its node is on disk. Reports
//! arriving together share one commit (group commit): the first writes,
//! those that come during its fsync wait, and one of them then writes all
//! of theirs at once, so a fleet booting together costs one fsync per
//! batch, not one per report.
//!
//! A file redb cannot read (corrupt, truncated, not a redb file) is moved
//! aside to `nodes.redb.corrupt-UNIXTIME` with a warning naming both files,
//! and bootd starts with no history: the history is what bootd saw, not
//! what it needs to boot nodes, and a fleet must not stop booting over it;
//! the moved file is kept for a post-mortem. Any other failure to open it
//! (permissions, another bootd holding it) stops bootd with an error
//! naming the file.
use anyhow::{bail, Context, Result};
use redb::{Database, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

/// The file under the state directory.
pub const FILE: &str = "nodes.redb";
/// Node key (MAC or hostname) → the node's record (JSON, see
/// [`crate::status`]).
const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
/// Largest record read back; a larger one is dropped as damaged (a node's
/// record is at most ~7.5 KiB: message, image URL and history are bounded).
pub const MAX_RECORD: usize = 64 * 1024;
/// Longest key read back.
const MAX_KEY: usize = 128;

/// One change to the stored nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(String, Vec<u8>),
    Delete(String),
}

/// Changes waiting for a commit.
#[derive(Debug, Default)]
struct Queue {
    ops: Vec<Op>,
    /// The batch `ops` will be committed as.
    filling: u64,
    /// The last batch committed (or failed).
    done: u64,
    /// A thread is committing batch `filling - 1`.
    writing: bool,
}

/// The open database.
pub struct Store {
    db: Database,
    path: PathBuf,
    queue: Mutex<Queue>,
    committed: Condvar,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Lines about failed commits: at most 10 a minute.
static WRITE_ERRORS: crate::Ration = crate::Ration::new(10);

/// A redb error, boxed (redb's is large).
#[derive(Debug)]
struct DbError(Box<redb::Error>);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DbError {}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for DbError {
            fn from(e: $t) -> DbError {
                DbError(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Records read back: (key, bytes).
pub type Records = Vec<(String, Vec<u8>)>;

/// Whether redb's error says the file's content is bad (rather than the
/// file being unreachable). redb reports a file that is not one of its own
/// (wrong magic number) as an I/O error of kind `InvalidData`, and reading
/// past the end of a truncated one as `UnexpectedEof`.
fn is_corrupt(e: &DbError) -> bool {
    match &*e.0 {
        redb::Error::Corrupted(_) | redb::Error::UpgradeRequired(_) => true,
        redb::Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// Open the file and read every record, or say why not. A panic inside
/// redb (a damaged file it does not expect) counts as corruption.
fn open_and_load(path: &Path) -> Result<(Database, Records), DbError> {
    let r = std::panic::catch_unwind(|| -> Result<_, DbError> {
        let db = Database::create(path)?;
        let records = load(&db)?;
        Ok((db, records))
    });
    r.unwrap_or_else(|p| {
        let why = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(redb::Error::Corrupted(format!("redb panicked: {why}")).into())
    })
}

fn load(db: &Database) -> Result<Records, DbError> {
    let tx = db.begin_read()?;
    let table = match tx.open_table(NODES) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for e in table.iter()? {
        let (k, v) = e?;
        let (k, v) = (k.value(), v.value());
        if k.len() > MAX_KEY || v.len() > MAX_RECORD {
            out.push((k.chars().take(MAX_KEY).collect(), Vec::new()));
            continue;
        }
        out.push((k.to_string(), v.to_vec()));
    }
    Ok(out)
}

impl Store {
    /// Open (or create) `dir/nodes.redb` and read its records (key,
    /// bytes; the bytes are empty for a record too large to be one of
    /// bootd's). A corrupt file is moved aside (see the module's text).
    pub fn open(dir: &Path) -> Result<(Store, Records)> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("--state {}", dir.display()))?;
        let path = dir.join(FILE);
        let (db, records) = match open_and_load(&path) {
            Ok(x) => x,
            Err(e) if is_corrupt(&e) => {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let aside = dir.join(format!("{FILE}.corrupt-{secs}"));
                std::fs::rename(&path, &aside).with_context(|| {
                    format!(
                        "{}: unreadable node state ({e}); moving it to {} failed",
                        path.display(),
                        aside.display()
                    )
                })?;
                tracing::warn!(
                    "{}: unreadable node state ({e}): moved to {}; starting with no node history",
                    path.display(),
                    aside.display()
                );
                open_and_load(&path)
                    .map_err(anyhow::Error::from)
                    .with_context(|| format!("creating {}", path.display()))?
            }
            Err(e) if matches!(*e.0, redb::Error::DatabaseAlreadyOpen) => bail!(
                "{}: in use by another process (another bootd with the same --state?)",
                path.display()
            ),
            Err(e) => {
                return Err(anyhow::Error::from(e))
                    .with_context(|| format!("opening the node state {}", path.display()))
            }
        };
        let store = Store {
            db,
            path,
            queue: Mutex::new(Queue {
                filling: 1,
                ..Queue::default()
            }),
            committed: Condvar::new(),
        };
        Ok((store, records))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue `ops` behind every change queued before; returns the batch to
    /// [`Store::wait`] for. Callers queue while they hold the lock that
    /// orders their changes (the node table's), and wait after releasing it.
    pub fn queue(&self, ops: Vec<Op>) -> u64 {
        let mut q = self.lock();
        q.ops.extend(ops);
        q.filling
    }

    /// Return once batch `batch` is committed (or failed: logged, counted
    /// in `bootd_state_write_errors_total`; the table in memory has it
    /// anyway). The caller may commit it, and the batches queued meanwhile.
    pub fn wait(&self, batch: u64) {
        let mut q = self.lock();
        loop {
            if q.done >= batch {
                return;
            }
            if q.writing {
                q = self.committed.wait(q).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            q.writing = true;
            let ops = std::mem::take(&mut q.ops);
            let this = q.filling;
            q.filling += 1;
            drop(q);
            let r = self.commit(&ops);
            if let Err(e) = r {
                crate::metrics::global().state_write_error();
                if let Some(quiet) = WRITE_ERRORS.take() {
                    tracing::error!(
                        "writing node state to {}: {e:#} ({} changes kept in memory only){}",
                        self.path.display(),
                        ops.len(),
                        crate::left_out(quiet)
                    );
                }
            }
            q = self.lock();
            q.writing = false;
            q.done = this;
            self.committed.notify_all();
        }
    }

    fn commit(&self, ops: &[Op]) -> Result<(), DbError> {
        if ops.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(NODES)?;
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        t.insert(k.as_str(), v.as_slice())?;
                    }
                    Op::Delete(k) => {
                        t.remove(k.as_str())?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Queue `ops` and wait for them.
    pub fn apply(&self, ops: Vec<Op>) {
        let b = self.queue(ops);
        self.wait(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> Op {
        Op::Put(k.into(), v.as_bytes().to_vec())
    }

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (s, r) = Store::open(dir.path()).unwrap();
        assert!(r.is_empty());
        s.apply(vec![put("a", "1"), put("b", "2"), put("a", "3")]);
        s.apply(vec![Op::Delete("b".into()), put("c", "4")]);
        drop(s);
        let (_s, r) = Store::open(dir.path()).unwrap();
        assert_eq!(
            r,
            vec![("a".into(), b"3".to_vec()), ("c".into(), b"4".to_vec())]
        );
    }

    #[test]
    fn a_second_opener_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_s, _) = Store::open(dir.path()).unwrap();
        let e = format!("{:#}", Store::open(dir.path()).unwrap_err());
        assert!(e.contains("nodes.redb: in use by another process"), "{e}");
    }

    #[test]
    fn concurrent_writers_share_commits_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path()).unwrap();
        std::thread::scope(|sc| {
            for t in 0..8 {
                let s = &s;
                sc.spawn(move || {
                    for i in 0..25 {
                        s.apply(vec![put(&format!("t{t}"), &i.to_string())]);
                    }
                });
            }
        });
        let batches = s.lock().done;
        assert!(batches <= 200, "{batches}");
        drop(s);
        let (_s, r) = Store::open(dir.path()).unwrap();
        assert_eq!(r.len(), 8);
        assert!(r.iter().all(|(_, v)| v == b"24"), "{r:?}");
    }

    /// A store of 50 records, damaged by `damage`.
    fn damaged(damage: impl Fn(&mut Vec<u8>)) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path()).unwrap();
        for i in 0..50 {
            s.apply(vec![Op::Put(format!("k{i}"), vec![7u8; 2000])]);
        }
        drop(s);
        let p = dir.path().join(FILE);
        let mut b = std::fs::read(&p).unwrap();
        damage(&mut b);
        std::fs::write(&p, b).unwrap();
        dir
    }

    #[test]
    fn a_corrupt_file_is_moved_aside() {
        let cases: Vec<(&str, tempfile::TempDir)> = vec![
            ("not a redb file", {
                let d = tempfile::tempdir().unwrap();
                std::fs::write(d.path().join(FILE), vec![0x5a; 10_000]).unwrap();
                d
            }),
            ("cut inside its header", damaged(|b| b.truncate(100))),
            // redb asserts (panics) on this one: caught.
            ("cut after its header", damaged(|b| b.truncate(4096))),
            ("header overwritten", damaged(|b| b[64..128].fill(0xff))),
        ];
        for (what, dir) in cases {
            let before = std::fs::read(dir.path().join(FILE)).unwrap();
            let (s, r) = Store::open(dir.path()).unwrap_or_else(|e| panic!("{what}: {e:#}"));
            assert!(r.is_empty(), "{what}");
            s.apply(vec![put("a", "1")]);
            let aside: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("nodes.redb.corrupt-"))
                .collect();
            assert_eq!(aside.len(), 1, "{what}: {aside:?}");
            assert!(
                std::fs::read(dir.path().join(&aside[0])).unwrap() == before,
                "{what}: the bad file is kept as it was"
            );
            drop(s);
            let (_s, r) = Store::open(dir.path()).unwrap();
            assert_eq!(r, vec![("a".into(), b"1".to_vec())], "{what}");
        }
    }

    #[test]
    fn a_file_that_cannot_be_opened_stops_bootd() {
        // Not corruption (here a directory in its place): nothing is moved.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(FILE)).unwrap();
        let e = format!("{:#}", Store::open(dir.path()).unwrap_err());
        assert!(e.starts_with("opening the node state "), "{e}");
        assert!(e.contains("nodes.redb"), "{e}");
        assert!(dir.path().join(FILE).is_dir());
    }
}
