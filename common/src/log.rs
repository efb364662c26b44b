//! The one logging setup of nodeboot's binaries: `tracing` to stderr without
//! timestamps (journald adds them), colours only on a terminal, the filter
//! from the environment variable `var` (default `info`).
//!
//! Under systemd (stderr is the journal stream named by `JOURNAL_STREAM`,
//! and not in an initrd: no `/etc/initrd-release`), events go to journald
//! natively instead, with their fields (`NODEBOOT_PHASE=failed`,
//! `NODEBOOT_URL=…`, `SYSLOG_IDENTIFIER=` the program's name), so the
//! journal holds each event once, fields included (`journalctl
//! NODEBOOT_PEER=…` for bootd). With [`Console::Mirror`] (nodectl on a
//! booting node) the same lines also go as text to /dev/console, so an
//! operator on the serial console still sees the progress. What child
//! processes (a postscript, post.sh) print still goes through stderr to the
//! journal.
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn filter(var: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env(var)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// Is stderr the journal stream systemd gave us (`JOURNAL_STREAM=dev:ino`)?
pub fn stderr_is_journal(journal_stream: Option<&str>, stderr: &std::fs::Metadata) -> bool {
    let Some((dev, ino)) = journal_stream.and_then(|v| v.split_once(':')) else {
        return false;
    };
    dev.parse() == Ok(stderr.dev()) && ino.parse() == Ok(stderr.ino())
}

fn journald_mode() -> bool {
    if std::path::Path::new("/etc/initrd-release").exists() {
        return false;
    }
    let Ok(md) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stderr_is_journal(std::env::var("JOURNAL_STREAM").ok().as_deref(), &md)
}

/// Whether journald mode also writes each line to /dev/console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// nodectl on a booting node: the serial console shows the progress.
    Mirror,
    /// A server (bootd) or an admin's tool (nodeimg): the journal only.
    Off,
}

/// Set up logging for the process (see the module doc); `var` names the
/// filter's environment variable (`NODECTL_LOG`, `BOOTD_LOG`, …).
pub fn init(var: &str, console: Console) {
    if journald_mode() {
        if let Ok(j) = tracing_journald::layer() {
            let j = j
                .with_field_prefix(Some("NODEBOOT".into()))
                .with_syslog_identifier(
                    std::env::args()
                        .next()
                        .and_then(|a| a.rsplit('/').next().map(str::to_string))
                        .unwrap_or_else(|| "nodeboot".into()),
                );
            let console = (console == Console::Mirror)
                .then(|| {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .custom_flags(libc::O_NOCTTY)
                        .open("/dev/console")
                        .ok()
                })
                .flatten()
                .map(|f| {
                    tracing_subscriber::fmt::layer()
                        .without_time()
                        .with_target(false)
                        .with_ansi(false)
                        .with_writer(std::sync::Mutex::new(f))
                });
            tracing_subscriber::registry()
                .with(filter(var))
                .with(j)
                .with(console)
                .init();
            return;
        }
    }
    tracing_subscriber::fmt()
        .without_time()
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter(var))
        .init();
}

#[cfg(test)]
mod tests {
    #[test]
    fn journal_stream_is_matched_by_device_and_inode() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let md = f.as_file().metadata().unwrap();
        use std::os::unix::fs::MetadataExt;
        let v = format!("{}:{}", md.dev(), md.ino());
        assert!(super::stderr_is_journal(Some(&v), &md));
        assert!(!super::stderr_is_journal(Some("1:2"), &md));
        assert!(!super::stderr_is_journal(Some("garbage"), &md));
        assert!(!super::stderr_is_journal(None, &md));
    }
}
