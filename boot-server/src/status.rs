//! Node status: the phases nodes report with `POST /status` (nodectl posts
//! `{"hostname","mac","phase","message","image"}` as it boots), validated
//! here and kept in memory, and the `GET /nodes` document built from them.
//!
//! A node is keyed by its MAC (normalised to lowercase `aa:bb:cc:dd:ee:ff`)
//! when it sends one, else by its hostname. A boot starts at the first
//! `fetching` after any other phase (or the node's first report);
//! `boot_seconds` runs from there to the boot's first `ready`.
//!
//! With `--state DIR` the table lasts: every change is written to
//! `DIR/nodes.redb` ([`crate::store`]) before the report is answered, and
//! read back at start. Without it, the table lives in memory only.
use crate::store::{Op, Store};
use serde::{Deserialize, Serialize, Serializer};
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest `POST /status` body accepted (413 above).
pub const MAX_BODY: usize = 16 * 1024;
/// Longest hostname, in characters (letters, digits, `.` and `-`).
pub const MAX_HOSTNAME: usize = 64;
/// Longest message, in characters.
pub const MAX_MESSAGE: usize = 4096;
/// Longest image URL, in characters.
pub const MAX_IMAGE: usize = 2048;
/// Phases kept per node (in memory and in `STATE/nodes.redb`).
pub const HISTORY: usize = 64;
/// Nodes kept; a new node beyond this replaces the one seen least recently.
pub const MAX_NODES: usize = 10_000;

/// Where a node is in its boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// In the initramfs, downloading the live image.
    Fetching,
    /// Switched to the live root.
    Booted,
    /// Running the site's provisioning.
    Provisioning,
    /// Provisioned: the boot is complete.
    Ready,
    /// The boot or the provisioning failed (see the message).
    Failed,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Fetching,
        Phase::Booted,
        Phase::Provisioning,
        Phase::Ready,
        Phase::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Fetching => "fetching",
            Phase::Booted => "booted",
            Phase::Provisioning => "provisioning",
            Phase::Ready => "ready",
            Phase::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a status body was refused (400). The message names the field and
/// fits on one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("body: not JSON: {0}")]
    Json(String),
    #[error("body: not a JSON object")]
    NotObject,
    #[error("{0}: missing")]
    Missing(&'static str),
    #[error("{0}: not a string")]
    NotString(&'static str),
    #[error("{0}: empty")]
    Empty(&'static str),
    #[error("{field}: longer than {max} characters")]
    TooLong { field: &'static str, max: usize },
    #[error("hostname: only letters, digits, '.' and '-' are allowed")]
    HostnameChars,
    #[error("phase: unknown phase {0:?} (fetching, booted, provisioning, ready, failed)")]
    Phase(String),
    #[error("mac: {0:?} is not a MAC address (aa:bb:cc:dd:ee:ff)")]
    Mac(String),
}

/// One validated `POST /status` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub hostname: String,
    /// Normalised: lowercase, colon-separated.
    pub mac: Option<String>,
    pub phase: Phase,
    pub message: Option<String>,
    pub image: Option<String>,
}

/// At most 40 characters of a refused value, for an error message.
fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

impl Report {
    /// Parse and check a status body. Unknown fields are ignored; `mac`,
    /// `message` and `image` may be absent, null or empty.
    pub fn parse(body: &[u8]) -> Result<Report, Invalid> {
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| Invalid::Json(e.to_string()))?;
        let obj = v.as_object().ok_or(Invalid::NotObject)?;
        let text = |field: &'static str, max: usize| -> Result<Option<String>, Invalid> {
            match obj.get(field) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) if s.chars().count() > max => {
                    Err(Invalid::TooLong { field, max })
                }
                Some(serde_json::Value::String(s)) => Ok((!s.is_empty()).then(|| s.clone())),
                Some(_) => Err(Invalid::NotString(field)),
            }
        };
        let hostname = match obj.get("hostname") {
            None | Some(serde_json::Value::Null) => return Err(Invalid::Missing("hostname")),
            Some(_) => text("hostname", MAX_HOSTNAME)?.ok_or(Invalid::Empty("hostname"))?,
        };
        if !hostname
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(Invalid::HostnameChars);
        }
        let phase = match obj.get("phase") {
            None | Some(serde_json::Value::Null) => return Err(Invalid::Missing("phase")),
            Some(serde_json::Value::String(s)) => {
                Phase::parse(s).ok_or_else(|| Invalid::Phase(clip(s)))?
            }
            Some(_) => return Err(Invalid::NotString("phase")),
        };
        let mac = text("mac", usize::MAX)?
            .map(|m| normalise_mac(&m).ok_or_else(|| Invalid::Mac(clip(&m))))
            .transpose()?;
        Ok(Report {
            hostname,
            mac,
            phase,
            message: text("message", MAX_MESSAGE)?,
            image: text("image", MAX_IMAGE)?,
        })
    }
}

/// `52:54:00:AB:cd:EF` or `52-54-00-ab-cd-ef` → `52:54:00:ab:cd:ef`.
pub fn normalise_mac(s: &str) -> Option<String> {
    let sep = if s.contains('-') { '-' } else { ':' };
    let parts: Vec<&str> = s.split(sep).collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then(|| parts.join(":").to_ascii_lowercase())
}

/// One entry of a node's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub phase: Phase,
    #[serde(serialize_with = "time")]
    pub at: SystemTime,
}

/// What bootd knows about one node.
#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub hostname: String,
    pub mac: Option<String>,
    pub phase: Phase,
    pub message: Option<String>,
    pub image: Option<String>,
    #[serde(serialize_with = "time")]
    pub first_seen: SystemTime,
    #[serde(serialize_with = "time")]
    pub last_seen: SystemTime,
    /// The current boot's first `fetching`; `None` when bootd has not seen it.
    #[serde(serialize_with = "opt_time")]
    pub boot_started: Option<SystemTime>,
    /// From `boot_started` to the boot's first `ready`.
    #[serde(serialize_with = "opt_secs")]
    pub boot_seconds: Option<Duration>,
    /// The last [`HISTORY`] phases, oldest first.
    pub history: VecDeque<Event>,
}

fn time<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::http::rfc3339(*t))
}

fn opt_time<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => time(t, s),
        None => s.serialize_none(),
    }
}

/// Seconds, to the millisecond.
fn opt_secs<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_millis() as f64 / 1000.0),
        None => s.serialize_none(),
    }
}

impl Node {
    fn new(r: &Report, now: SystemTime) -> Node {
        Node {
            hostname: r.hostname.clone(),
            mac: r.mac.clone(),
            phase: r.phase,
            message: None,
            image: None,
            first_seen: now,
            last_seen: now,
            boot_started: None,
            boot_seconds: None,
            history: VecDeque::new(),
        }
    }

    /// Apply `r`; the boot's duration when `r` completes it.
    fn update(&mut self, r: Report, now: SystemTime) -> Option<Duration> {
        let previous = self.history.back().map(|e| e.phase);
        let new_boot = r.phase == Phase::Fetching && previous != Some(Phase::Fetching);
        if new_boot {
            self.boot_started = Some(now);
            self.boot_seconds = None;
            self.image = None;
        }
        let mut done = None;
        if r.phase == Phase::Ready && self.boot_seconds.is_none() {
            self.boot_seconds = self
                .boot_started
                .map(|t| now.duration_since(t).unwrap_or_default());
            done = self.boot_seconds;
        }
        self.hostname = r.hostname;
        self.mac = r.mac;
        self.phase = r.phase;
        self.message = r.message;
        // The image URL is known in the initramfs; later phases may omit it.
        self.image = r.image.or(self.image.take());
        self.last_seen = now;
        self.history.push_back(Event {
            phase: r.phase,
            at: now,
        });
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
        done
    }

    /// The key of the table (and of the stored record).
    fn key(&self) -> String {
        self.mac.clone().unwrap_or_else(|| self.hostname.clone())
    }

    /// The record written to `STATE/nodes.redb`.
    fn to_record(&self) -> Vec<u8> {
        let r = Record {
            v: RECORD_VERSION,
            hostname: self.hostname.clone(),
            mac: self.mac.clone(),
            phase: self.phase,
            message: self.message.clone(),
            image: self.image.clone(),
            first_seen: ms(self.first_seen),
            last_seen: ms(self.last_seen),
            boot_started: self.boot_started.map(ms),
            boot_ms: self
                .boot_seconds
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            history: self
                .history
                .iter()
                .map(|e| (e.phase as u8, ms(e.at)))
                .collect(),
        };
        serde_json::to_vec(&r).unwrap_or_default()
    }

    /// A node read back from a record stored under `key`, checked as a
    /// report is (the file is input too).
    fn from_record(key: &str, bytes: &[u8]) -> Result<Node, String> {
        let r: Record = serde_json::from_slice(bytes).map_err(|e| format!("not a record: {e}"))?;
        if r.v != RECORD_VERSION {
            return Err(format!("record version {} (want {RECORD_VERSION})", r.v));
        }
        // The report the record says the node last sent: the same checks.
        let as_report = serde_json::json!({
            "hostname": r.hostname, "mac": r.mac, "phase": r.phase,
            "message": r.message, "image": r.image,
        });
        let checked = Report::parse(as_report.to_string().as_bytes()).map_err(|e| e.to_string())?;
        if checked.mac != r.mac {
            return Err("mac: not normalised".into());
        }
        let mut history = VecDeque::new();
        for (phase, at) in &r.history {
            let phase = *Phase::ALL
                .get(usize::from(*phase))
                .ok_or_else(|| format!("history: no phase {phase}"))?;
            history.push_back(Event {
                phase,
                at: from_ms(*at),
            });
        }
        while history.len() > HISTORY {
            history.pop_front();
        }
        let node = Node {
            hostname: r.hostname,
            mac: r.mac,
            phase: r.phase,
            message: r.message,
            image: r.image,
            first_seen: from_ms(r.first_seen),
            last_seen: from_ms(r.last_seen),
            boot_started: r.boot_started.map(from_ms),
            boot_seconds: r.boot_ms.map(Duration::from_millis),
            history,
        };
        if node.key() != key {
            return Err(format!("stored under {key:?}, not its own key"));
        }
        Ok(node)
    }
}

/// Version of [`Record`]; another is dropped at start (with a warning).
const RECORD_VERSION: u32 = 1;

/// A node as `STATE/nodes.redb` holds it (JSON; times in Unix ms).
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    v: u32,
    hostname: String,
    mac: Option<String>,
    phase: Phase,
    message: Option<String>,
    image: Option<String>,
    first_seen: u64,
    last_seen: u64,
    boot_started: Option<u64>,
    boot_ms: Option<u64>,
    /// (index in [`Phase::ALL`], Unix ms), oldest first: 64 of them fit
    /// in ~1.2 KiB.
    history: Vec<(u8, u64)>,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH)
}

/// The nodes' state, shared by the connection threads.
#[derive(Debug)]
pub struct Nodes {
    map: Mutex<BTreeMap<String, Node>>,
    cap: usize,
    /// "forgetting" lines: one a minute.
    evicted: crate::Ration,
    /// Where the table lasts (`--state`).
    store: Option<Store>,
}

impl Default for Nodes {
    fn default() -> Nodes {
        Nodes::with_capacity(MAX_NODES)
    }
}

impl Nodes {
    /// At most `cap` nodes are kept (at least one).
    pub fn with_capacity(cap: usize) -> Nodes {
        Nodes {
            map: Mutex::new(BTreeMap::new()),
            cap: cap.max(1),
            evicted: crate::Ration::new(1),
            store: None,
        }
    }

    /// With a state directory, the table of `state/nodes.redb` (made if
    /// missing; see [`crate::store`] for a damaged one), kept there from now
    /// on; without, [`Nodes::with_capacity`]. Records that do not check
    /// out are dropped with a warning; beyond `cap` nodes, those seen least
    /// recently are.
    pub fn open(state: Option<&Path>, cap: usize) -> anyhow::Result<Nodes> {
        let mut nodes = Nodes::with_capacity(cap);
        let Some(dir) = state else {
            return Ok(nodes);
        };
        let (store, records) = Store::open(dir)?;
        let mut map = BTreeMap::new();
        let mut drop_keys = Vec::new();
        for (key, bytes) in records {
            match Node::from_record(&key, &bytes) {
                Ok(n) => {
                    map.insert(key, n);
                }
                Err(e) => {
                    tracing::warn!(
                        "{}: dropping the record of {:?}: {e}",
                        store.path().display(),
                        crate::clean(&key)
                    );
                    drop_keys.push(key);
                }
            }
        }
        if map.len() > nodes.cap {
            let mut by_age: Vec<(SystemTime, String)> =
                map.iter().map(|(k, n)| (n.last_seen, k.clone())).collect();
            by_age.sort();
            let over = map.len() - nodes.cap;
            tracing::warn!(
                "{}: {} nodes, more than --max-nodes {}: forgetting the {over} seen least recently",
                store.path().display(),
                map.len(),
                nodes.cap
            );
            for (_, k) in by_age.into_iter().take(over) {
                map.remove(&k);
                drop_keys.push(k);
            }
        }
        tracing::info!(
            "{} nodes' status and history from {}",
            map.len(),
            store.path().display()
        );
        store.apply(drop_keys.into_iter().map(Op::Delete).collect());
        nodes.map = Mutex::new(map);
        nodes.store = Some(store);
        Ok(nodes)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Node>> {
        // A panic elsewhere cannot leave a node half-updated in a way that
        // matters more than losing the page: keep serving.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Apply a report received at `now`; with a state directory, return
    /// once it is on disk.
    pub fn record(&self, r: Report, now: SystemTime) {
        let metrics = crate::metrics::global();
        metrics.phase(r.phase);
        let mut map = self.lock();
        let mut ops = Vec::new();
        let key = r.mac.clone().unwrap_or_else(|| r.hostname.clone());
        if !map.contains_key(&key) {
            // A node that reported by hostname before it sent its MAC keeps
            // its history (hostnames hold no ':', MACs always do).
            let adopted = match r.mac {
                Some(_) => map.remove(&r.hostname),
                None => None,
            };
            if adopted.is_some() {
                ops.push(Op::Delete(r.hostname.clone()));
            }
            if adopted.is_none() && map.len() >= self.cap {
                let oldest = map
                    .iter()
                    .min_by_key(|(_, n)| n.last_seen)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    // One line a minute at most: a flood of new names
                    // cannot flood the log.
                    if let Some(before) = self.evicted.take() {
                        tracing::warn!(
                            "more than {} nodes: forgetting {k} ({} forgotten since the last line)",
                            self.cap,
                            before + 1
                        );
                    }
                    map.remove(&k);
                    ops.push(Op::Delete(k));
                }
            }
            map.insert(key.clone(), adopted.unwrap_or_else(|| Node::new(&r, now)));
        }
        if let Some(node) = map.get_mut(&key) {
            if let Some(d) = node.update(r, now) {
                metrics.boot_done(d);
            }
            ops.push(Op::Put(key, node.to_record()));
        }
        // Queued in the table's order, written after its lock is released.
        let batch = self.store.as_ref().map(|s| (s, s.queue(ops)));
        drop(map);
        if let Some((s, b)) = batch {
            s.wait(b);
        }
    }

    /// Nodes by their last phase, in [`Phase::ALL`] order.
    pub fn by_phase(&self) -> [usize; 5] {
        let mut by_phase = [0usize; 5];
        for n in self.lock().values() {
            by_phase[n.phase as usize] += 1;
        }
        by_phase
    }

    /// The nodes, sorted by hostname (then MAC).
    pub fn snapshot(&self) -> Vec<Node> {
        self.page(0, usize::MAX).nodes
    }

    /// At most `limit` nodes from `offset` in hostname (then MAC) order,
    /// with the count of all: only the page is copied, so a reader's memory
    /// is bounded by `limit`, not by the table.
    pub fn page(&self, offset: usize, limit: usize) -> Page {
        let map = self.lock();
        let mut v: Vec<&Node> = map.values().collect();
        v.sort_by(|a, b| (&a.hostname, &a.mac).cmp(&(&b.hostname, &b.mac)));
        let mut by_phase = [0usize; 5];
        for n in &v {
            by_phase[Phase::ALL.iter().position(|p| *p == n.phase).unwrap_or(0)] += 1;
        }
        let nodes = v
            .iter()
            .skip(offset)
            .take(limit)
            .map(|n| (*n).clone())
            .collect();
        Page {
            total: v.len(),
            offset,
            by_phase,
            nodes,
        }
    }
}

/// One page of the node table.
#[derive(Debug, Clone)]
pub struct Page {
    /// All nodes.
    pub total: usize,
    /// Of the first node here.
    pub offset: usize,
    /// All nodes by phase, in [`Phase::ALL`] order.
    pub by_phase: [usize; 5],
    pub nodes: Vec<Node>,
}

impl Page {
    /// Offset of the next page, if there is one.
    pub fn next(&self) -> Option<usize> {
        let end = self.offset.saturating_add(self.nodes.len());
        (end < self.total && !self.nodes.is_empty()).then_some(end)
    }
}

/// Nodes on one page of `GET /nodes` or `/` unless `?limit=` says fewer.
pub const PAGE: usize = 500;
/// The most `?limit=` may ask.
pub const MAX_PAGE: usize = 1000;

/// The `GET /nodes` document: `{"now": RFC 3339, "total", "offset",
/// "next" (the offset of the next page, or null), "nodes": [...]}`.
pub fn nodes_json(page: &Page, now: SystemTime) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        #[serde(serialize_with = "time")]
        now: SystemTime,
        total: usize,
        offset: usize,
        next: Option<usize>,
        nodes: &'a [Node],
    }
    let doc = Doc {
        now,
        total: page.total,
        offset: page.offset,
        next: page.next(),
        nodes: &page.nodes,
    };
    let mut s = serde_json::to_string_pretty(&doc)
        .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn report(json: &str) -> Result<Report, String> {
        Report::parse(json.as_bytes()).map_err(|e| e.to_string())
    }

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    fn post(nodes: &Nodes, json: &str, t: u64) {
        nodes.record(report(json).unwrap(), at(t));
    }

    #[test]
    fn valid_reports() {
        let r = report(
            r#"{"hostname":"cn1","mac":"52:54:00:12:34:5F","phase":"fetching",
                "message":"get <x>","image":"http://h/live.squashfs","extra":1}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Report {
                hostname: "cn1".into(),
                mac: Some("52:54:00:12:34:5f".into()),
                phase: Phase::Fetching,
                message: Some("get <x>".into()),
                image: Some("http://h/live.squashfs".into()),
            }
        );
        let r = report(r#"{"hostname":"a-b.c","phase":"ready","mac":null,"message":""}"#).unwrap();
        assert_eq!((r.mac, r.message, r.image), (None, None, None));
        let long = "x".repeat(MAX_HOSTNAME);
        assert!(report(&format!(r#"{{"hostname":"{long}","phase":"ready"}}"#)).is_ok());
        let m = "é".repeat(MAX_MESSAGE);
        assert!(report(&format!(
            r#"{{"hostname":"a","phase":"ready","message":"{m}"}}"#
        ))
        .is_ok());
    }

    #[test]
    fn refusals_name_the_field() {
        let h65 = "x".repeat(MAX_HOSTNAME + 1);
        let m = "m".repeat(MAX_MESSAGE + 1);
        let i = "i".repeat(MAX_IMAGE + 1);
        let rows: Vec<(String, &str)> = vec![
            ("{".into(), "body: not JSON: "),
            ("[1]".into(), "body: not a JSON object"),
            (r#"{"phase":"ready"}"#.into(), "hostname: missing"),
            (
                r#"{"hostname":null,"phase":"ready"}"#.into(),
                "hostname: missing",
            ),
            (
                r#"{"hostname":"","phase":"ready"}"#.into(),
                "hostname: empty",
            ),
            (
                r#"{"hostname":7,"phase":"ready"}"#.into(),
                "hostname: not a string",
            ),
            (
                format!(r#"{{"hostname":"{h65}","phase":"ready"}}"#),
                "hostname: longer than 64 characters",
            ),
            (
                r#"{"hostname":"cn 1","phase":"ready"}"#.into(),
                "hostname: only letters",
            ),
            (
                r#"{"hostname":"cn:1","phase":"ready"}"#.into(),
                "hostname: only letters",
            ),
            (r#"{"hostname":"cn1"}"#.into(), "phase: missing"),
            (
                r#"{"hostname":"cn1","phase":"Ready"}"#.into(),
                r#"phase: unknown phase "Ready" (fetching"#,
            ),
            (
                r#"{"hostname":"cn1","phase":1}"#.into(),
                "phase: not a string",
            ),
            (
                r#"{"hostname":"cn1","phase":"ready","mac":"52:54:00:12:34"}"#.into(),
                r#"mac: "52:54:00:12:34" is not a MAC"#,
            ),
            (
                r#"{"hostname":"cn1","phase":"ready","mac":"52:54:00:12:34:5g"}"#.into(),
                "mac: ",
            ),
            (
                format!(r#"{{"hostname":"cn1","phase":"ready","message":"{m}"}}"#),
                "message: longer than 4096 characters",
            ),
            (
                r#"{"hostname":"cn1","phase":"ready","message":["x"]}"#.into(),
                "message: not a string",
            ),
            (
                format!(r#"{{"hostname":"cn1","phase":"ready","image":"{i}"}}"#),
                "image: longer than 2048 characters",
            ),
        ];
        for (body, want) in rows {
            let e = report(&body).unwrap_err();
            assert!(e.starts_with(want), "{body:.80}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn macs() {
        for (raw, want) in [
            ("52:54:00:12:34:56", Some("52:54:00:12:34:56")),
            ("52-54-00-AB-CD-EF", Some("52:54:00:ab:cd:ef")),
            ("52:54:00:Ab:cD:eF", Some("52:54:00:ab:cd:ef")),
            ("52:54:00:12:34", None),
            ("52:54:00:12:34:56:78", None),
            ("525400123456", None),
            ("52:54:00-12:34:56", None),
            ("5:54:00:12:34:56", None),
        ] {
            assert_eq!(normalise_mac(raw).as_deref(), want, "{raw}");
        }
    }

    #[test]
    fn a_boot_from_fetching_to_ready() {
        let n = Nodes::default();
        let mac = r#""mac":"52:54:00:12:34:56""#;
        post(
            &n,
            &format!(r#"{{"hostname":"cn1",{mac},"phase":"fetching","image":"http://h/l"}}"#),
            0,
        );
        post(
            &n,
            &format!(r#"{{"hostname":"cn1",{mac},"phase":"fetching"}}"#),
            2,
        );
        post(
            &n,
            &format!(r#"{{"hostname":"cn1",{mac},"phase":"booted"}}"#),
            10,
        );
        let v = n.snapshot();
        assert_eq!(
            v[0].boot_started,
            Some(at(0)),
            "a retried fetch is the same boot"
        );
        assert_eq!(v[0].boot_seconds, None);
        post(
            &n,
            &format!(r#"{{"hostname":"cn1",{mac},"phase":"provisioning"}}"#),
            12,
        );
        post(
            &n,
            &format!(r#"{{"hostname":"cn1",{mac},"phase":"ready"}}"#),
            30,
        );
        post(
            &n,
            &format!(r#"{{"hostname":"cn1",{mac},"phase":"ready"}}"#),
            40,
        );
        let v = n.snapshot();
        assert_eq!(v.len(), 1);
        let cn1 = &v[0];
        assert_eq!(cn1.boot_seconds, Some(Duration::from_secs(30)));
        assert_eq!((cn1.first_seen, cn1.last_seen), (at(0), at(40)));
        assert_eq!(cn1.image.as_deref(), Some("http://h/l"));
        assert_eq!(cn1.history.len(), 6);

        // The next boot: a new start, no duration until it is ready.
        post(
            &n,
            &format!(r#"{{"hostname":"cn1",{mac},"phase":"fetching"}}"#),
            100,
        );
        let cn1 = &n.snapshot()[0];
        assert_eq!((cn1.boot_started, cn1.boot_seconds), (Some(at(100)), None));
        assert_eq!(cn1.image, None);
        post(
            &n,
            &format!(r#"{{"hostname":"cn1",{mac},"phase":"failed","message":"x"}}"#),
            105,
        );
        post(
            &n,
            &format!(r#"{{"hostname":"cn1",{mac},"phase":"fetching"}}"#),
            200,
        );
        post(
            &n,
            &format!(r#"{{"hostname":"cn1",{mac},"phase":"ready"}}"#),
            207,
        );
        let cn1 = &n.snapshot()[0];
        assert_eq!(cn1.boot_seconds, Some(Duration::from_secs(7)));
        assert_eq!(cn1.message, None, "the message is the last report's");
        assert_eq!(cn1.first_seen, at(0));
    }

    #[test]
    fn ready_without_a_fetch_has_no_duration() {
        let n = Nodes::default();
        post(&n, r#"{"hostname":"cn1","phase":"booted"}"#, 0);
        post(&n, r#"{"hostname":"cn1","phase":"ready"}"#, 5);
        let cn1 = &n.snapshot()[0];
        assert_eq!((cn1.boot_started, cn1.boot_seconds), (None, None));
    }

    #[test]
    fn history_keeps_the_last_phases() {
        let n = Nodes::default();
        for t in 0..(HISTORY as u64 + 5) {
            post(&n, r#"{"hostname":"cn1","phase":"provisioning"}"#, t);
        }
        let h = &n.snapshot()[0].history;
        assert_eq!(h.len(), HISTORY);
        assert_eq!(h.front().unwrap().at, at(5));
        assert_eq!(h.back().unwrap().at, at(HISTORY as u64 + 4));
    }

    #[test]
    fn keys_sorting_and_capacity() {
        let n = Nodes::with_capacity(3);
        post(&n, r#"{"hostname":"cn2","phase":"booted"}"#, 0);
        // cn2 learns its MAC: the same node, keyed by MAC from now on.
        post(
            &n,
            r#"{"hostname":"cn2","mac":"AA-BB-CC-DD-EE-02","phase":"ready"}"#,
            1,
        );
        post(
            &n,
            r#"{"hostname":"cn1","mac":"aa:bb:cc:dd:ee:01","phase":"ready"}"#,
            2,
        );
        // Renamed, same MAC: still one node.
        post(
            &n,
            r#"{"hostname":"cn0","mac":"aa:bb:cc:dd:ee:01","phase":"ready"}"#,
            3,
        );
        let v = n.snapshot();
        let names: Vec<_> = v.iter().map(|n| n.hostname.as_str()).collect();
        assert_eq!(names, ["cn0", "cn2"]);
        assert_eq!(v[1].mac.as_deref(), Some("aa:bb:cc:dd:ee:02"));
        assert_eq!(v[1].history.len(), 2);
        post(&n, r#"{"hostname":"cn9","phase":"ready"}"#, 4);
        post(&n, r#"{"hostname":"cn8","phase":"ready"}"#, 5);
        let names: Vec<_> = n.snapshot().into_iter().map(|n| n.hostname).collect();
        assert_eq!(
            names,
            ["cn0", "cn8", "cn9"],
            "cn2, seen least recently, is gone"
        );
    }

    #[test]
    fn json_document() {
        let n = Nodes::default();
        post(&n, r#"{"hostname":"cn1","phase":"fetching"}"#, 0);
        post(&n, r#"{"hostname":"cn1","phase":"ready"}"#, 3);
        post(
            &n,
            r#"{"hostname":"cn0","phase":"booted","message":"a\"b"}"#,
            4,
        );
        let doc: serde_json::Value =
            serde_json::from_str(&nodes_json(&n.page(0, PAGE), at(5))).unwrap();
        assert_eq!(doc["now"], "2023-11-14T22:13:25.000Z");
        let nodes = doc["nodes"].as_array().unwrap();
        assert_eq!(nodes[0]["hostname"], "cn0");
        assert_eq!(nodes[0]["message"], "a\"b");
        assert_eq!(nodes[0]["boot_seconds"], serde_json::Value::Null);
        assert_eq!(nodes[0]["mac"], serde_json::Value::Null);
        assert_eq!(nodes[1]["boot_seconds"], 3.0);
        assert_eq!(nodes[1]["boot_started"], "2023-11-14T22:13:20.000Z");
        assert_eq!(nodes[1]["last_seen"], "2023-11-14T22:13:23.000Z");
        assert_eq!(nodes[1]["phase"], "ready");
        assert_eq!(nodes[1]["history"][0]["phase"], "fetching");
        assert_eq!(nodes[1]["history"][1]["at"], "2023-11-14T22:13:23.000Z");
    }

    #[test]
    fn the_table_lasts_in_the_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let n = Nodes::open(Some(dir.path()), 3).unwrap();
        post(&n, r#"{"hostname":"cn2","phase":"booted"}"#, 0);
        // cn2 learns its MAC: its record moves to the MAC's key.
        post(
            &n,
            r#"{"hostname":"cn2","mac":"aa:bb:cc:dd:ee:02","phase":"ready","message":"m","image":"http://h/i"}"#,
            1,
        );
        post(&n, r#"{"hostname":"cn1","phase":"fetching"}"#, 2);
        post(&n, r#"{"hostname":"cn1","phase":"ready"}"#, 5);
        let before = nodes_json(&n.page(0, PAGE), at(9));
        drop(n);
        let n = Nodes::open(Some(dir.path()), 3).unwrap();
        assert_eq!(nodes_json(&n.page(0, PAGE), at(9)), before);
        let cn1 = &n.snapshot()[0];
        assert_eq!(cn1.boot_seconds, Some(Duration::from_secs(3)));
        drop(n);

        // Records that do not check out are dropped; over the cap, the
        // least recently seen go.
        let (s, records) = Store::open(dir.path()).unwrap();
        assert_eq!(records.len(), 2, "cn2's hostname record went: {records:?}");
        let rec = |name: &str, t: u64| {
            let j = format!(r#"{{"hostname":"{name}","phase":"ready"}}"#);
            Node::new(&Report::parse(j.as_bytes()).unwrap(), at(t)).to_record()
        };
        let bad_phase = br#"{"v":1,"hostname":"cn8","mac":null,"phase":"ready","message":null,"image":null,"first_seen":0,"last_seen":0,"boot_started":null,"boot_ms":null,"history":[[9,0]]}"#;
        s.apply(vec![
            Op::Put("bad json".into(), b"{".to_vec()),
            Op::Put("cn 7".into(), rec("cn7", 7)),
            Op::Put("cn8".into(), bad_phase.to_vec()),
            Op::Put("cn9".into(), rec("cn9", 100)),
            Op::Put("cn0".into(), rec("cn0", 50)),
        ]);
        drop(s);
        let n = Nodes::open(Some(dir.path()), 3).unwrap();
        let names: Vec<_> = n.snapshot().into_iter().map(|n| n.hostname).collect();
        assert_eq!(
            names,
            ["cn0", "cn1", "cn9"],
            "cn2 (seen at 1) is the oldest"
        );
        drop(n);
        let (_s, records) = Store::open(dir.path()).unwrap();
        let keys: Vec<_> = records.into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["cn0", "cn1", "cn9"]);
    }
}
