//! Where the body goes: a three-stage pipeline over a small pool of large
//! buffers, so that reading the socket, writing `<dest>.part` and hashing
//! run on three threads at once:
//!
//! ```text
//! socket thread ──buf──▶ writer thread ──buf──▶ sha256 thread ──buf──▶ pool
//!  (fill from body)       (write .part)          (hash)                   │
//!        ▲────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Buffers travel in order through both stages, so the file and the digest
//! see the same bytes in the same order; a `Reset` travels the same way (the
//! writer truncates, the hasher starts over). No buffer is copied: the only
//! copies are the kernel's (socket → buffer → page cache).
//!
//! Writing into a tmpfs is the most expensive step (the kernel copies into
//! freshly allocated pages), so it gets a thread of its own; SHA-256 with
//! SHA-NI (sha2 detects it at run time, ≈1.5 GB/s here) is the other.
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;

use super::FetchError;

/// Size of one buffer: the unit of reads, writes and hand-offs.
pub const BUF_SIZE: usize = 1 << 20;
/// Buffers in the pool.
pub const BUFFERS: usize = 8;

enum Msg {
    /// A buffer and how many of its bytes are data.
    Data(Vec<u8>, usize),
    /// Forget what came so far (the download restarts from byte 0).
    Reset,
}

/// A failed file operation in the writer thread.
type WriteError = (&'static str, std::io::Error);

/// `<dest>.part` plus its writer and hasher threads. Dropping it without
/// [`Sink::commit`] removes the part file.
pub struct Sink {
    part: PathBuf,
    data_tx: Option<Sender<Msg>>,
    free_rx: Receiver<Vec<u8>>,
    writer: Option<JoinHandle<Result<(), WriteError>>>,
    hasher: Option<JoinHandle<[u8; 32]>>,
    /// Set once the part file was renamed: nothing to clean up then.
    committed: bool,
    /// Device and inode of the file we opened: the one we may rename.
    id: (u64, u64),
}

/// Open (create or truncate) `part` for writing, never through a symbolic
/// link: one placed at `<dest>.part` by someone else would redirect the
/// download (and its truncation) anywhere we may write. `O_NOFOLLOW` makes
/// the kernel refuse a link there (dangling or not) instead of following it;
/// what was opened must then be a regular file of ours with one name (a
/// leftover part file of an earlier run, which is emptied and reused), else
/// it is refused and left as it is for the operator to look at.
/// (`O_NONBLOCK`: opening a FIFO must not hang; it has no effect on a
/// regular file. `O_NOCTTY`: nor may a terminal become ours.)
pub fn open_part(part: &Path) -> Result<File, FetchError> {
    let refuse = |why: String| FetchError::Io {
        what: "refusing to write the download to",
        path: part.to_path_buf(),
        error: std::io::Error::other(why),
    };
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(part)
        .map_err(|error| match error.raw_os_error() {
            Some(libc::ELOOP) => refuse(
                "it is a symbolic link, which is not followed; remove it if it is yours".into(),
            ),
            _ => FetchError::Io {
                what: "creating",
                path: part.to_path_buf(),
                error,
            },
        })?;
    let io = |what: &'static str| {
        let path = part.to_path_buf();
        move |error| FetchError::Io { what, path, error }
    };
    let md = file.metadata().map_err(io("checking"))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !md.file_type().is_file() {
        return Err(refuse(format!(
            "it is not a regular file ({:?})",
            md.file_type()
        )));
    }
    if md.uid() != me {
        return Err(refuse(format!(
            "it belongs to uid {}, not to this process (uid {me})",
            md.uid()
        )));
    }
    if md.nlink() != 1 {
        return Err(refuse(format!(
            "it has {} names (hard links); a part file has one",
            md.nlink()
        )));
    }
    file.set_len(0).map_err(io("truncating"))?;
    Ok(file)
}

fn spawn<T: Send + 'static>(
    name: &str,
    part: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, FetchError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|error| FetchError::Io {
            what: "starting a thread for",
            path: part.to_path_buf(),
            error,
        })
}

/// The writer stage: write each buffer, pass it on; truncate on Reset;
/// flush at the end.
fn write_stage(mut file: File, rx: Receiver<Msg>, tx: Sender<Msg>) -> Result<(), WriteError> {
    for m in rx {
        match &m {
            Msg::Data(buf, n) => file.write_all(&buf[..*n]).map_err(|e| ("writing", e))?,
            Msg::Reset => file
                .set_len(0)
                .and_then(|()| file.rewind())
                .map_err(|e| ("truncating", e))?,
        }
        // The hasher only stops when this sender is dropped.
        let _ = tx.send(m);
    }
    file.sync_data().map_err(|e| ("syncing", e))
}

/// The hasher stage: hash each buffer and give it back to the pool.
fn hash_stage(rx: Receiver<Msg>, free: Sender<Vec<u8>>) -> [u8; 32] {
    let mut h = Sha256::new();
    for m in rx {
        match m {
            Msg::Data(buf, n) => {
                h.update(&buf[..n]);
                // The socket thread may be gone (error path): nothing to do then.
                let _ = free.send(buf);
            }
            Msg::Reset => h = Sha256::new(),
        }
    }
    h.finalize().into()
}

impl Sink {
    /// Create (or empty) `part` with [`open_part`] and start the writer
    /// and hasher threads.
    pub fn create(part: &Path) -> Result<Sink, FetchError> {
        let file = open_part(part)?;
        let id = file
            .metadata()
            .map(|m| (m.dev(), m.ino()))
            .map_err(|error| FetchError::Io {
                what: "checking",
                path: part.to_path_buf(),
                error,
            })?;
        let (data_tx, data_rx) = channel::<Msg>();
        let (hash_tx, hash_rx) = channel::<Msg>();
        let (free_tx, free_rx) = channel::<Vec<u8>>();
        for _ in 0..BUFFERS {
            free_tx.send(vec![0u8; BUF_SIZE]).expect("receiver alive");
        }
        let mut sink = Sink {
            part: part.to_path_buf(),
            data_tx: Some(data_tx),
            free_rx,
            writer: None,
            hasher: None,
            committed: false,
            id,
        };
        sink.hasher = Some(spawn("sha256", part, move || hash_stage(hash_rx, free_tx))?);
        sink.writer = Some(spawn("write", part, move || {
            write_stage(file, data_rx, hash_tx)
        })?);
        Ok(sink)
    }

    /// Why the pipeline broke: the writer's error if it had one.
    fn broken(&mut self) -> FetchError {
        drop(self.data_tx.take());
        let w = self.writer.take().map(|h| h.join());
        if let Some(Ok(Err((what, error)))) = w {
            return FetchError::Io {
                what,
                path: self.part.clone(),
                error,
            };
        }
        FetchError::Other(format!(
            "{}: a writer or sha256 thread stopped unexpectedly",
            self.part.display()
        ))
    }

    /// A free buffer of [`BUF_SIZE`] bytes (waits while all are in flight).
    pub fn buffer(&mut self) -> Result<Vec<u8>, FetchError> {
        match self.free_rx.recv() {
            Ok(b) => Ok(b),
            Err(_) => Err(self.broken()),
        }
    }

    /// Queue `buf[..n]` for writing and hashing (`n` may be 0: the buffer
    /// just goes back to the pool).
    pub fn push(&mut self, buf: Vec<u8>, n: usize) -> Result<(), FetchError> {
        self.send(Msg::Data(buf, n))
    }

    /// Fail now if the filesystem has no room for `more` bytes. (Not a
    /// reservation: preallocating a tmpfs file zeroes every page first,
    /// which costs more than the whole download.)
    pub fn check_room(&self, more: u64) -> Result<(), FetchError> {
        let Ok(st) = nix::sys::statvfs::statvfs(&self.part) else {
            return Ok(());
        };
        let free = st.blocks_available() * st.fragment_size();
        if free < more {
            return Err(FetchError::Io {
                what: "no room for the download in",
                path: self.part.clone(),
                error: std::io::Error::other(format!(
                    "{} MB needed, {} MB free",
                    more.div_ceil(1_000_000),
                    free / 1_000_000
                )),
            });
        }
        Ok(())
    }

    /// Start over: empty the part file and the hash.
    pub fn reset(&mut self) -> Result<(), FetchError> {
        self.send(Msg::Reset)
    }

    fn send(&mut self, m: Msg) -> Result<(), FetchError> {
        let sent = match &self.data_tx {
            Some(tx) => tx.send(m).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self.broken())
        }
    }

    /// Wait until everything is written, synced and hashed; the sha256 of
    /// all the data pushed since the last reset.
    pub fn finish(&mut self) -> Result<[u8; 32], FetchError> {
        drop(self.data_tx.take());
        match self.writer.take().map(|h| h.join()) {
            Some(Ok(Ok(()))) => {}
            Some(Ok(Err((what, error)))) => {
                return Err(FetchError::Io {
                    what,
                    path: self.part.clone(),
                    error,
                })
            }
            _ => return Err(self.broken()),
        }
        match self.hasher.take().map(|h| h.join()) {
            Some(Ok(d)) => Ok(d),
            _ => Err(self.broken()),
        }
    }

    /// Rename the (verified) part file to `dest`. Call after [`Sink::finish`].
    pub fn commit(mut self, dest: &Path) -> Result<(), FetchError> {
        // The name must still be the file we wrote and verified (not one
        // put in its place since).
        let same = std::fs::symlink_metadata(&self.part)
            .map(|m| (m.dev(), m.ino()) == self.id)
            .unwrap_or(false);
        if !same {
            self.committed = true; // not ours any more: leave it alone
            return Err(FetchError::Io {
                what: "refusing to rename to the destination",
                path: self.part.clone(),
                error: std::io::Error::other(
                    "it was replaced after the download was written to it",
                ),
            });
        }
        std::fs::rename(&self.part, dest).map_err(|error| FetchError::Io {
            what: "renaming the downloaded file to",
            path: dest.to_path_buf(),
            error,
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        drop(self.data_tx.take());
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
        if let Some(h) = self.hasher.take() {
            let _ = h.join();
        }
        if !self.committed {
            // Never leave a partial or unverified file behind.
            let _ = std::fs::remove_file(&self.part);
        }
    }
}
