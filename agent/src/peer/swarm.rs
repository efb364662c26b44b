//! The fetcher's side: a [`ChunkSource`] that gets each chunk from a peer
//! that holds it, else from the origin, verifying every one; and a
//! [`Picker`] that tells the assembler which chunk to fetch next.
//!
//! Peers come from bootd (`GET /peers?image=&port=`, asked every
//! [`REFRESH`] until [`MAPS_PER_ROUND`] peers are known, then every
//! [`BOOTD_SETTLED`]); what each holds, from its `have` bitmap (the
//! [`MAPS_PER_ROUND`] asked least recently are asked again every
//! [`REFRESH`], a peer that holds everything never again), from the map
//! each chunk answer carries, and from what the peers tell of themselves
//! when they ask this node's chunk server ([`Held::heard`]; this node tells
//! them the same in its requests).
//!
//! Choice ([`SwarmHandle::picker`]): the chunk the fewest known peers hold,
//! among those at least one holds (rarest first, ties at random), so that
//! what the origin sent spreads before it is asked again. A node asks the
//! origin only for chunks no known peer holds, a random one of them, at
//! most [`ORIGIN_SLOTS`] at a time ([`ALONE_SLOTS`] once it has been alone
//! for [`ALONE_AFTER`]), its other workers taking the rarest from the
//! peers: in a fleet booting at once the origin sends each chunk to few
//! nodes, as fast as its link goes, and the peers pass it on. A
//! chunk is marked held (served to the peers) once the assembler wrote it.
//!
//! For a chunk: a random peer whose bitmap has it is asked; a peer that
//! sends a wrong chunk is dropped for the rest of the fetch (and named in
//! the report), one that fails [`MAX_FAILURES`] times in a row too
//! (unreachable); a 404 only clears its bit, a 503 (its upload slots are
//! taken) leaves it. A chunk some peer holds waits up to [`PEER_WAIT`] for
//! one to give it before the origin is asked.
use super::{bit, chunk_path, have_path, Held};
use anyhow::{anyhow, bail, Result};
use nodeboot_chunks::assemble::{ChunkSource, Picker};
use nodeboot_chunks::ChunkId;
use serde::Serialize;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Bitmaps are refreshed this often, [`MAPS_PER_ROUND`] at a time (those
/// asked least recently: a peer's set only grows, so an older bitmap is
/// still true, only incomplete); bootd too while few peers are known.
pub const REFRESH: Duration = Duration::from_millis(500);
/// Bitmaps refreshed per round.
pub const MAPS_PER_ROUND: usize = 16;
/// Once [`MAPS_PER_ROUND`] peers are known, bootd is asked this often.
pub const BOOTD_SETTLED: Duration = Duration::from_secs(5);
/// Peers known at once (bootd answers at most this many too).
pub const MAX_PEERS: usize = 64;
/// Failed requests in a row after which a peer is dropped as unreachable.
pub const MAX_FAILURES: u32 = 3;
/// Origin chunks in flight per node while it knows peers (or may yet).
pub const ORIGIN_SLOTS: usize = 1;
/// Origin chunks in flight per node alone: no live peer known after
/// [`ALONE_AFTER`] (at once without bootd).
pub const ALONE_SLOTS: usize = 4;
pub const ALONE_AFTER: Duration = Duration::from_secs(5);
/// A chunk a known peer holds waits this long for a peer to give it (they
/// may be busy) before the origin is asked.
pub const PEER_WAIT: Duration = Duration::from_secs(4);
/// The picker waits at most this long for a chunk a peer holds or a free
/// origin slot.
pub const PICK_WAIT: Duration = Duration::from_secs(2);
/// Bound of one request to a peer (a chunk is at most a few hundred KiB).
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// What one peer gave (the fetch report's `peers`).
#[derive(Debug, Clone, Serialize)]
pub struct PeerReport {
    pub addr: String,
    pub chunks: u64,
    pub bytes: u64,
    /// Requests answered 404 (its bitmap was ahead of its file) or failed.
    pub misses: u64,
    /// Why it was dropped for the rest of the fetch, if it was.
    pub dropped: Option<String>,
}

/// The peer side of a fetch report.
#[derive(Debug, Clone, Serialize)]
pub struct SwarmReport {
    pub peers: Vec<PeerReport>,
    pub peer_chunks: u64,
    pub peer_bytes: u64,
    pub origin_chunks: u64,
    pub origin_bytes: u64,
}

struct Peer {
    addr: SocketAddr,
    have: Vec<u8>,
    /// When its bitmap was last asked for.
    asked: Option<Instant>,
    failures: u32,
    r: PeerReport,
}

impl Peer {
    fn new(addr: SocketAddr, have: Vec<u8>) -> Peer {
        Peer {
            addr,
            have,
            asked: None,
            failures: 0,
            r: PeerReport {
                addr: addr.to_string(),
                chunks: 0,
                bytes: 0,
                misses: 0,
                dropped: None,
            },
        }
    }
}

struct State {
    peers: Vec<Peer>,
    origin_busy: usize,
    /// Chunks the picker chose for the origin (each holds an origin slot
    /// until its `get`).
    reserved: Vec<ChunkId>,
    /// When bootd was last asked.
    bootd_asked: Option<Instant>,
    rng: u64,
}

struct Inner {
    image: String,
    bootd: Option<String>,
    /// This node's chunk server port (left out of bootd's answer).
    own_port: Option<u16>,
    agent: ureq::Agent,
    origin: Box<dyn ChunkSource>,
    held: Arc<Held>,
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
    origin_chunks: AtomicU64,
    origin_bytes: AtomicU64,
    started: Instant,
    /// The picker was handed out: it marks chunks held once written.
    picking: AtomicBool,
}

/// The swarm as a chunk source; [`SwarmHandle`] reads its report and stops
/// its refresh thread.
pub struct Swarm(Arc<Inner>);

/// See [`Swarm`].
pub struct SwarmHandle(Arc<Inner>);

/// What a swarm needs.
pub struct Config {
    /// The image's sha256 (the key of bootd's peer table and of the paths).
    pub image: String,
    /// bootd's base URL (`http://boot:8080`); without it, `peers` only.
    pub bootd: Option<String>,
    /// Peers known from the start (tests, a static list).
    pub peers: Vec<SocketAddr>,
    pub own_port: Option<u16>,
    /// The origin: the image's chunk store (mirrors behind it).
    pub origin: Box<dyn ChunkSource>,
    /// Where verified chunks are marked (the node's chunk server reads it).
    pub held: Arc<Held>,
}

impl Swarm {
    pub fn new(c: Config) -> (Swarm, SwarmHandle) {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(PEER_TIMEOUT))
                .timeout_connect(Some(Duration::from_secs(2)))
                .max_idle_connections(256)
                .max_idle_connections_per_host(4)
                .user_agent(concat!("nodectl/", env!("CARGO_PKG_VERSION")))
                .build(),
        );
        let mut seed = [0u8; 8];
        if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
            let _ = f.read_exact(&mut seed);
        }
        let inner = Arc::new(Inner {
            image: c.image,
            bootd: c.bootd.map(|b| b.trim_end_matches('/').to_string()),
            own_port: c.own_port,
            agent,
            origin: c.origin,
            held: c.held,
            state: Mutex::new(State {
                peers: Vec::new(),
                origin_busy: 0,
                reserved: Vec::new(),
                bootd_asked: None,
                rng: u64::from_le_bytes(seed) | 1,
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            origin_chunks: AtomicU64::new(0),
            origin_bytes: AtomicU64::new(0),
            started: Instant::now(),
            picking: AtomicBool::new(false),
        });
        inner.add_peers(&c.peers);
        let i2 = inner.clone();
        let _ = std::thread::Builder::new()
            .name("swarm".into())
            .spawn(move || i2.refresh_loop());
        (Swarm(inner.clone()), SwarmHandle(inner))
    }
}

impl SwarmHandle {
    /// The assembler's [`Picker`] for this swarm (rarest first; see the
    /// module doc). Once it is taken, a chunk is marked held (served to
    /// the peers) when the assembler tells it was written, no sooner.
    pub fn picker(&self) -> Arc<dyn Picker> {
        self.0.picking.store(true, Ordering::Relaxed);
        Arc::new(SwarmPicker(self.0.clone()))
    }

    /// Stop asking bootd and the peers; the report so far.
    pub fn finish(&self) -> SwarmReport {
        self.0.stop.store(true, Ordering::Relaxed);
        self.0.changed.notify_all();
        let st = self.0.lock();
        let peers: Vec<PeerReport> = st.peers.iter().map(|p| p.r.clone()).collect();
        SwarmReport {
            peer_chunks: peers.iter().map(|p| p.chunks).sum(),
            peer_bytes: peers.iter().map(|p| p.bytes).sum(),
            peers,
            origin_chunks: self.0.origin_chunks.load(Ordering::Relaxed),
            origin_bytes: self.0.origin_bytes.load(Ordering::Relaxed),
        }
    }
}

impl Drop for SwarmHandle {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
        self.0.changed.notify_all();
    }
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add_peers(&self, addrs: &[SocketAddr]) {
        let mut st = self.lock();
        for a in addrs {
            if st.peers.len() >= MAX_PEERS {
                break;
            }
            if st.peers.iter().any(|p| p.addr == *a) {
                continue;
            }
            st.peers.push(Peer::new(*a, Vec::new()));
        }
    }

    /// bootd's list of peers for the image.
    fn ask_bootd(&self, base: &str) -> Result<Vec<SocketAddr>> {
        let mut url = format!("{base}/peers?image={}", self.image);
        if let Some(p) = self.own_port {
            url.push_str(&format!("&port={p}"));
        }
        let mut resp = self.agent.get(&url).call()?;
        if resp.status().as_u16() != 200 {
            bail!("GET {url}: HTTP {}", resp.status().as_u16());
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 10)
            .read_to_vec()?;
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        Ok(v["peers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str()?.parse().ok())
                    .take(MAX_PEERS)
                    .collect()
            })
            .unwrap_or_default())
    }

    fn refresh_loop(&self) {
        while !self.stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let ask = self.bootd.as_ref().filter(|_| {
                let mut st = self.lock();
                let live = st.peers.iter().filter(|p| p.r.dropped.is_none()).count();
                let due = live < MAPS_PER_ROUND
                    || st.bootd_asked.is_none_or(|a| a.elapsed() >= BOOTD_SETTLED);
                if due {
                    st.bootd_asked = Some(t);
                }
                due
            });
            if let Some(base) = ask {
                match self.ask_bootd(base) {
                    Ok(v) => self.add_peers(&v),
                    Err(e) => tracing::debug!("peers from {base}: {e:#}"),
                }
            }
            let addrs: Vec<SocketAddr> = {
                let n = self.held.len();
                let mut st = self.lock();
                self.absorb(&mut st);
                // A peer that holds everything has nothing new to tell.
                let mut live: Vec<&mut Peer> = st
                    .peers
                    .iter_mut()
                    .filter(|p| p.r.dropped.is_none() && !complete(&p.have, n))
                    .collect();
                live.sort_by_key(|p| p.asked);
                live.into_iter()
                    .take(MAPS_PER_ROUND)
                    .map(|p| {
                        p.asked = Some(t);
                        p.addr
                    })
                    .collect()
            };
            for a in addrs {
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                let url = format!("http://{a}{}", have_path(&self.image));
                let got = self
                    .tell(self.agent.get(&url))
                    .call()
                    .map_err(|e| anyhow!("{e}"))
                    .and_then(|mut r| {
                        if r.status().as_u16() != 200 {
                            bail!("HTTP {}", r.status().as_u16());
                        }
                        let limit = self.held.len().div_ceil(8) as u64;
                        Ok(r.body_mut().with_config().limit(limit).read_to_vec()?)
                    });
                let mut st = self.lock();
                if let Some(p) = st.peers.iter_mut().find(|p| p.addr == a) {
                    match got {
                        Ok(map) => p.have = map,
                        // Busy (503) or unreachable: the old map stays a
                        // hint; its chunk requests tell the rest.
                        Err(e) => tracing::debug!("have map of {a}: {e:#}"),
                    }
                }
                drop(st);
                self.changed.notify_all();
            }
            self.changed.notify_all();
            let spent = t.elapsed();
            let st = self.lock();
            let _ = self
                .changed
                .wait_timeout(st, REFRESH.saturating_sub(spent))
                .map(|_| ());
        }
    }

    /// A random live peer whose bitmap has chunk `pos`, not in `tried`.
    fn pick(&self, pos: usize, tried: &[SocketAddr]) -> Option<SocketAddr> {
        let mut st = self.lock();
        let cands: Vec<SocketAddr> = st
            .peers
            .iter()
            .filter(|p| p.r.dropped.is_none() && bit(&p.have, pos) && !tried.contains(&p.addr))
            .map(|p| p.addr)
            .collect();
        if cands.is_empty() {
            return None;
        }
        let k = (xorshift(&mut st.rng) % cands.len() as u64) as usize;
        Some(cands[k])
    }

    fn with_peer(&self, addr: SocketAddr, f: impl FnOnce(&mut Peer)) {
        if let Some(p) = self.lock().peers.iter_mut().find(|p| p.addr == addr) {
            f(p);
        }
    }

    /// Chunk `id` from `addr`, verified; a peer that lied is dropped, one
    /// that failed counted.
    fn ask_peer(&self, addr: SocketAddr, id: &ChunkId, size: u32, pos: usize) -> Asked {
        let url = format!("http://{addr}{}", chunk_path(&self.image, id));
        let got = self
            .tell(self.agent.get(&url))
            .call()
            .map_err(|e| anyhow!("{e}"))
            .and_then(|mut r| {
                match r.status().as_u16() {
                    200 => {
                        let have = r
                            .headers()
                            .get(super::HAVE_HEADER)
                            .and_then(|v| hex::decode(v.as_bytes()).ok())
                            .filter(|m| m.len() == self.held.len().div_ceil(8));
                        if let Some(map) = have {
                            self.with_peer(addr, |p| p.have = map);
                        }
                        Ok(Ok(r
                            .body_mut()
                            .with_config()
                            .limit(u64::from(size) + 1)
                            .read_to_vec()?))
                    }
                    404 => Ok(Err(Asked::Missing)),
                    // Its upload slots are taken: another holder, or later.
                    503 => Ok(Err(Asked::Busy)),
                    c => bail!("HTTP {c}"),
                }
            });
        match got {
            Ok(Ok(data)) if data.len() == size as usize && ChunkId::of(&data) == *id => {
                self.with_peer(addr, |p| {
                    p.failures = 0;
                    p.r.chunks += 1;
                    p.r.bytes += u64::from(size);
                });
                Asked::Got(data)
            }
            Ok(Ok(data)) => {
                let why = format!(
                    "sent a wrong chunk for {id} ({} bytes hashing to {})",
                    data.len(),
                    ChunkId::of(&data)
                );
                tracing::warn!("peer {addr} dropped for the rest of the fetch: it {why}");
                self.with_peer(addr, |p| {
                    p.r.dropped = Some(why);
                    p.have.clear();
                });
                Asked::Failed
            }
            Ok(Err(a)) => {
                self.with_peer(addr, |p| {
                    p.r.misses += 1;
                    p.failures = 0;
                    if a == Asked::Missing {
                        if let Some(b) = p.have.get_mut(pos / 8) {
                            *b &= !(1 << (pos % 8));
                        }
                    }
                });
                a
            }
            Err(e) => {
                self.with_peer(addr, |p| {
                    p.r.misses += 1;
                    p.failures += 1;
                    if p.failures >= MAX_FAILURES {
                        let why = format!("{} failures in a row, the last: {e:#}", p.failures);
                        tracing::warn!("peer {addr} dropped: {why}");
                        p.r.dropped = Some(why);
                        p.have.clear();
                    }
                });
                Asked::Failed
            }
        }
    }

    /// A request to a peer, with what this node holds and where it serves
    /// it (when it does, and the map fits a header).
    fn tell<B>(&self, r: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        let Some(port) = self.own_port else {
            return r;
        };
        let map = self.held.bitmap();
        if map.len() > super::MAX_HAVE_HEADER / 2 {
            return r;
        }
        r.header(super::HAVE_HEADER, hex::encode(map))
            .header(super::PORT_HEADER, port.to_string())
    }

    /// Take in what askers of this node's chunk server said they hold.
    fn absorb(&self, st: &mut State) {
        for (addr, map) in self.held.heard() {
            if let Some(p) = st.peers.iter_mut().find(|p| p.addr == addr) {
                if p.r.dropped.is_none() {
                    // A peer's set only grows: both are true.
                    p.have.resize(map.len(), 0);
                    for (a, b) in p.have.iter_mut().zip(&map) {
                        *a |= b;
                    }
                }
            } else if st.peers.len() < MAX_PEERS {
                st.peers.push(Peer::new(addr, map));
            }
        }
    }

    /// Origin chunks this node may have in flight, `live` peers known.
    fn origin_slots(&self, live: usize) -> usize {
        let alone = live == 0 && (self.bootd.is_none() || self.started.elapsed() >= ALONE_AFTER);
        if alone {
            ALONE_SLOTS
        } else {
            ORIGIN_SLOTS
        }
    }

    /// A chunk verified here: served from now on (unless the picker does
    /// that once the chunk is written).
    fn got(&self, id: &ChunkId) {
        if !self.picking.load(Ordering::Relaxed) {
            self.held.set(id);
        }
    }
}

/// What asking a peer for a chunk gave.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    Got(Vec<u8>),
    /// 404: not held (its bit is cleared).
    Missing,
    /// 503: its upload slots are taken.
    Busy,
    /// Unreachable, an error, or a wrong chunk (then dropped).
    Failed,
}

/// Whether a `have` map of an index of `n` chunks has every bit.
fn complete(map: &[u8], n: usize) -> bool {
    map.len() == n.div_ceil(8) && (0..n).all(|i| bit(map, i))
}

/// The place in `wanted` of the chunk the fewest of the live `peers` hold,
/// among those at least one holds (ties at random; `None` when no live
/// peer holds any), and the places of those none holds.
fn rarest(
    peers: &[Peer],
    held: &Held,
    wanted: &[ChunkId],
    rng: &mut u64,
) -> (Option<usize>, Vec<usize>) {
    let mut count = vec![0u16; held.len()];
    for p in peers.iter().filter(|p| p.r.dropped.is_none()) {
        for (i, c) in count.iter_mut().enumerate() {
            if bit(&p.have, i) {
                *c += 1;
            }
        }
    }
    let mut best: Option<(u16, usize)> = None;
    let mut ties = 0u64;
    let mut none = Vec::new();
    for (k, id) in wanted.iter().enumerate() {
        let Some(c) = held.position(id).map(|pos| count[pos]) else {
            continue;
        };
        if c == 0 {
            none.push(k);
            continue;
        }
        match best {
            Some((b, _)) if c > b => {}
            Some((b, _)) if c == b => {
                ties += 1;
                if xorshift(rng).is_multiple_of(ties) {
                    best = Some((c, k));
                }
            }
            _ => {
                best = Some((c, k));
                ties = 1;
            }
        }
    }
    (best.map(|(_, k)| k), none)
}

/// See [`SwarmHandle::picker`].
struct SwarmPicker(Arc<Inner>);

impl Picker for SwarmPicker {
    fn pick(&self, wanted: &[ChunkId]) -> usize {
        let me = &self.0;
        let t = Instant::now();
        let mut st = me.lock();
        loop {
            me.absorb(&mut st);
            let State { peers, rng, .. } = &mut *st;
            let (best, none) = rarest(peers, &me.held, wanted, rng);
            let live = st.peers.iter().filter(|p| p.r.dropped.is_none()).count();
            let free = st.origin_busy + st.reserved.len() < me.origin_slots(live);
            // A free origin slot brings in a chunk no known peer holds, at
            // random (the other nodes choose theirs): the fleet gets what
            // it lacks as fast as the origin sends, and no sooner asks the
            // origin for what a peer has.
            if free && !none.is_empty() {
                let k = none[(xorshift(&mut st.rng) % none.len() as u64) as usize];
                st.reserved.push(wanted[k]);
                return k;
            }
            if let Some(k) = best {
                return k;
            }
            if free || me.stop.load(Ordering::Relaxed) || t.elapsed() >= PICK_WAIT {
                let k = (xorshift(&mut st.rng) % wanted.len().max(1) as u64) as usize;
                if free {
                    if let Some(id) = wanted.get(k) {
                        st.reserved.push(*id);
                    }
                }
                return k;
            }
            st = me
                .changed
                .wait_timeout(st, Duration::from_millis(100))
                .map_or_else(|e| e.into_inner().0, |g| g.0);
        }
    }

    fn written(&self, id: &ChunkId) {
        self.0.held.set(id);
        self.0.changed.notify_all();
    }
}

impl ChunkSource for Swarm {
    fn name(&self) -> String {
        match &self.0.bootd {
            Some(b) => format!("peers (from {b}/peers) and {}", self.0.origin.name()),
            None => format!("peers and {}", self.0.origin.name()),
        }
    }

    fn get(&self, id: &ChunkId, size: u32) -> Result<Vec<u8>> {
        let me = &self.0;
        let pos = me
            .held
            .position(id)
            .ok_or_else(|| anyhow!("chunk {id} is not in the image's index"))?;
        let t = Instant::now();
        // Chosen for the origin by the picker: its slot is held.
        let mut reserved = {
            let mut st = me.lock();
            match st.reserved.iter().position(|r| r == id) {
                Some(i) => {
                    st.reserved.swap_remove(i);
                    true
                }
                None => false,
            }
        };
        let mut tried = Vec::new();
        loop {
            if me.stop.load(Ordering::Relaxed) {
                bail!("fetch stopped");
            }
            if let Some(addr) = me.pick(pos, &tried) {
                tried.push(addr);
                if let Asked::Got(data) = me.ask_peer(addr, id, size, pos) {
                    me.got(id);
                    return Ok(data);
                }
                continue;
            }
            let slot = {
                let mut st = me.lock();
                let live = st.peers.iter().filter(|p| p.r.dropped.is_none()).count();
                let a_peer_has = st
                    .peers
                    .iter()
                    .any(|p| p.r.dropped.is_none() && bit(&p.have, pos));
                let may = reserved || !a_peer_has || t.elapsed() >= PEER_WAIT;
                if may && (reserved || st.origin_busy < me.origin_slots(live)) {
                    st.origin_busy += 1;
                    reserved = false;
                    true
                } else {
                    false
                }
            };
            if slot {
                let r = me.origin.get(id, size);
                me.lock().origin_busy -= 1;
                me.changed.notify_all();
                let data = r?;
                if data.len() != size as usize || ChunkId::of(&data) != *id {
                    bail!("{}: a wrong chunk for {id}", me.origin.name());
                }
                me.origin_chunks.fetch_add(1, Ordering::Relaxed);
                me.origin_bytes
                    .fetch_add(u64::from(size), Ordering::Relaxed);
                me.got(id);
                return Ok(data);
            }
            // Wait for a bitmap refresh or a free origin slot; peers tried
            // for this chunk (busy) may give it by then.
            let st = me.lock();
            let _ = me.changed.wait_timeout(st, Duration::from_millis(200));
            tried.clear();
        }
    }

    fn wire_bytes(&self) -> Option<u64> {
        None
    }
}

/// Tell bootd (`POST {bootd}/peers`) that this node serves `image` on
/// `port`, now and every [`RENEW`] until `stop`.
pub fn announce(bootd: &str, image: &str, port: u16, stop: Arc<AtomicBool>) {
    let url = format!("{}/peers", bootd.trim_end_matches('/'));
    let body = serde_json::json!({ "image": image, "port": port }).to_string();
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build(),
    );
    let _ = std::thread::Builder::new()
        .name("announce".into())
        .spawn(move || {
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if Instant::now() >= next {
                    match agent
                        .post(&url)
                        .header("Content-Type", "application/json")
                        .send(body.as_bytes())
                    {
                        Ok(r) if r.status().as_u16() == 204 => {
                            tracing::debug!("{url}: claimed port {port}")
                        }
                        Ok(r) => tracing::warn!(
                            "{url}: claim refused: HTTP {} (peers will not find this node)",
                            r.status().as_u16()
                        ),
                        Err(e) => tracing::warn!("{url}: {e}"),
                    }
                    next = Instant::now() + RENEW;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
}

/// A claim is renewed this often (bootd keeps one 10 minutes).
pub const RENEW: Duration = Duration::from_secs(200);
