//! Files bootd reloads when they change (the inventory; the TLS certificate
//! and key): one poll of their mtimes and sizes every second, beside the
//! reload on SIGHUP. A file that does not load is logged by its owner and
//! the previous contents kept; its stamp is still taken, so a bad file is
//! tried once per change, not once per second.
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The mtimes and sizes of a reloadable's files, in the order of
/// [`Reloadable::paths`] (`None`: the file is missing or unreadable).
pub type Stamp = Vec<Option<(SystemTime, u64)>>;

pub fn stamp<P: AsRef<Path>>(paths: &[P]) -> Stamp {
    paths
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

/// What [`watch`] polls.
pub trait Reloadable: Send + Sync + 'static {
    /// The files it is made of.
    fn paths(&self) -> Vec<&Path>;
    /// Their [`Stamp`] when last loaded (or tried): set by `reload_logged`.
    fn last(&self) -> &Mutex<Stamp>;
    /// Load the files again, logging the outcome; `true` when they loaded.
    fn reload_logged(&self) -> bool;
}

/// Take the stamp of `r`'s files into [`Reloadable::last`] (before a load).
pub fn mark<R: Reloadable + ?Sized>(r: &R) {
    *r.last().lock().unwrap_or_else(|p| p.into_inner()) = stamp(&r.paths());
}

/// A thread `name` that polls `r`'s files every second and reloads them
/// when their stamp differs from the last load's.
pub fn watch<R: Reloadable>(r: &Arc<R>, name: &str) -> std::io::Result<()> {
    let r = r.clone();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            let now = stamp(&r.paths());
            if now != *r.last().lock().unwrap_or_else(|p| p.into_inner()) {
                r.reload_logged();
            }
        })?;
    Ok(())
}
