//! `GET /metrics`: bootd's counters in the Prometheus text format (0.0.4).
//!
//! Every label has a fixed set of values, known at compile time: routes
//! from [`Route`], status codes from [`CODES`] (anything else is `other`),
//! phases from [`Phase`], outcomes from the enums below. Nothing a client
//! sends (a path, a MAC, a host name) becomes a label value, so an
//! anonymous client on the provisioning network cannot grow the series
//! (the trust model of `shared/design.md`): the registry is a set of
//! arrays of atomics, allocated once, and a scrape costs the same at any
//! load. `/metrics` is therefore served without the admin token: it holds
//! counts only, no host name, MAC, address or token, and costs a fixed few
//! kilobytes to render.
//!
//! Hand-written rather than the `prometheus-client` crate: that crate's
//! labelled families are maps that grow on first use (the bound would be
//! ours to keep anyway), and with fixed arrays the whole exposition is the
//! ~100 lines of [`Metrics::render`]; `tests/metrics.rs` checks its output
//! with Debian's real `promtool check metrics`.
//!
//! One registry per process, [`global`], so that the DHCP, TFTP and HTTP
//! threads count without a handle threaded through them; tests of the
//! rendering use their own [`Metrics::new`].
use crate::status::Phase;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Path of the exposition (`GET`, no token).
pub const PATH: &str = "/metrics";

/// The process's registry.
pub fn global() -> &'static Metrics {
    static GLOBAL: Metrics = Metrics::new();
    &GLOBAL
}

/// What an HTTP request asked for, by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Ipxe,
    Grub,
    /// A file of `--root` (GET/HEAD of any other path, found or not).
    Files,
    Repo,
    Status,
    Secrets,
    Identity,
    Nodes,
    /// The status page at `/`.
    Page,
    Admin,
    Metrics,
    /// Other methods on other paths, and heads that did not parse.
    Other,
}

impl Route {
    pub const ALL: [Route; 12] = [
        Route::Ipxe,
        Route::Grub,
        Route::Files,
        Route::Repo,
        Route::Status,
        Route::Secrets,
        Route::Identity,
        Route::Nodes,
        Route::Page,
        Route::Admin,
        Route::Metrics,
        Route::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Route::Ipxe => "/boot/ipxe",
            Route::Grub => "/boot/grub",
            Route::Files => "files",
            Route::Repo => "/repo",
            Route::Status => "/status",
            Route::Secrets => "/secrets",
            Route::Identity => "/identity",
            Route::Nodes => "/nodes",
            Route::Page => "/",
            Route::Admin => "/admin",
            Route::Metrics => "/metrics",
            Route::Other => "other",
        }
    }

    /// The route of a request for `path` (without its query) by `method`;
    /// `None`: the head did not parse.
    pub fn of(path: Option<&str>, method: &str) -> Route {
        let Some(p) = path else {
            return Route::Other;
        };
        let under = |prefix: &str| p == prefix || p.starts_with(&format!("{prefix}/"));
        match p {
            crate::server::IPXE_PATH => Route::Ipxe,
            crate::server::GRUB_PATH => Route::Grub,
            crate::server::STATUS_PATH => Route::Status,
            crate::server::NODES_PATH => Route::Nodes,
            "/" => Route::Page,
            PATH => Route::Metrics,
            _ if under("/secrets") => Route::Secrets,
            _ if under("/identity") => Route::Identity,
            _ if under("/admin") => Route::Admin,
            _ if under("/repo") => Route::Repo,
            _ if method == "GET" || method == "HEAD" => Route::Files,
            _ => Route::Other,
        }
    }
}

/// The status codes counted by number; any other is `code="other"`.
pub const CODES: [u16; 18] = [
    200, 204, 206, 304, 400, 401, 403, 404, 405, 408, 409, 411, 413, 416, 429, 431, 500, 503,
];
const NCODES: usize = CODES.len() + 1;
const NROUTES: usize = Route::ALL.len();

fn code_index(status: u16) -> usize {
    CODES
        .iter()
        .position(|c| *c == status)
        .unwrap_or(CODES.len())
}

fn code_label(i: usize) -> String {
    CODES
        .get(i)
        .map_or_else(|| "other".to_string(), |c| c.to_string())
}

/// What became of one DHCP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dhcp {
    Answered,
    /// Not for bootd: an unknown MAC, not a boot request, another server's.
    Ignored,
    /// Held back by the answers-per-MAC-per-second limit.
    RateLimited,
    Undecodable,
    /// The answer could not be encoded or sent.
    SendFailed,
}

impl Dhcp {
    const ALL: [Dhcp; 5] = [
        Dhcp::Answered,
        Dhcp::Ignored,
        Dhcp::RateLimited,
        Dhcp::Undecodable,
        Dhcp::SendFailed,
    ];
    fn label(self) -> &'static str {
        match self {
            Dhcp::Answered => "answered",
            Dhcp::Ignored => "ignored",
            Dhcp::RateLimited => "rate_limited",
            Dhcp::Undecodable => "undecodable",
            Dhcp::SendFailed => "send_failed",
        }
    }
}

/// What became of one IPv6 router solicitation ([`crate::ndp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ndp {
    /// A router advertisement (lifetime 0, no prefix) went back.
    Answered,
    /// Not from an inventory MAC's link-local address, or hop limit not 255.
    Ignored,
    /// Held back by the answers-per-MAC or in-all limit.
    RateLimited,
    Malformed,
    /// The advertisement could not be sent.
    SendFailed,
}

impl Ndp {
    const ALL: [Ndp; 5] = [
        Ndp::Answered,
        Ndp::Ignored,
        Ndp::RateLimited,
        Ndp::Malformed,
        Ndp::SendFailed,
    ];
    fn label(self) -> &'static str {
        match self {
            Ndp::Answered => "answered",
            Ndp::Ignored => "ignored",
            Ndp::RateLimited => "rate_limited",
            Ndp::Malformed => "malformed",
            Ndp::SendFailed => "send_failed",
        }
    }
}

/// Why a TFTP request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TftpRefused {
    /// Too many transfers in flight (all, or the client's).
    Limit,
    /// No such file (nor GRUB config).
    NotFound,
    /// Outside the root, not a regular file, or unreadable.
    Denied,
    /// A write request: bootd's TFTP is read-only.
    Write,
}

impl TftpRefused {
    const ALL: [TftpRefused; 4] = [
        TftpRefused::Limit,
        TftpRefused::NotFound,
        TftpRefused::Denied,
        TftpRefused::Write,
    ];
    fn label(self) -> &'static str {
        match self {
            TftpRefused::Limit => "limit",
            TftpRefused::NotFound => "not_found",
            TftpRefused::Denied => "denied",
            TftpRefused::Write => "write",
        }
    }
}

/// What became of an enrollment (`POST /identity/enroll`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enrollment {
    /// A new key taken (first, armed, or pinned).
    Accepted,
    /// The node presented the key bootd already had.
    Same,
    Refused,
}

impl Enrollment {
    const ALL: [Enrollment; 3] = [Enrollment::Accepted, Enrollment::Same, Enrollment::Refused];
    fn label(self) -> &'static str {
        match self {
            Enrollment::Accepted => "accepted",
            Enrollment::Same => "same",
            Enrollment::Refused => "refused",
        }
    }
}

/// Upper bounds of the boot-duration buckets, in seconds (a QEMU boot
/// takes 30 s to 2 min; a real node's firmware adds minutes).
pub const BOOT_BUCKETS: [u64; 12] = [15, 30, 45, 60, 90, 120, 180, 300, 600, 900, 1800, 3600];

/// A histogram over fixed buckets, summed to the millisecond.
#[derive(Debug)]
pub struct Histogram {
    /// Observations at most each bound (not cumulative; rendered so).
    buckets: [AtomicU64; BOOT_BUCKETS.len()],
    count: AtomicU64,
    sum_ms: AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BOOT_BUCKETS.len()],
            count: AtomicU64::new(0),
            sum_ms: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if let Some(i) = BOOT_BUCKETS.iter().position(|b| ms <= b * 1000) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_ms.fetch_add(ms, Relaxed);
    }
}

/// A gauge held up while its guard lives.
pub struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

fn held(g: &AtomicU64) -> InFlight<'_> {
    g.fetch_add(1, Relaxed);
    InFlight(g)
}

/// bootd's counters. All fields are fixed-size.
#[derive(Debug)]
pub struct Metrics {
    http_requests: [[AtomicU64; NCODES]; NROUTES],
    http_bytes: [[AtomicU64; NCODES]; NROUTES],
    http_transfers: AtomicU64,
    /// Refused at accept: [per client, full].
    http_refused: [AtomicU64; 2],
    dhcp_received: AtomicU64,
    dhcp: [AtomicU64; Dhcp::ALL.len()],
    ndp: [AtomicU64; Ndp::ALL.len()],
    tftp_started: AtomicU64,
    /// [completed, stopped].
    tftp_ended: [AtomicU64; 2],
    tftp_refused: [AtomicU64; TftpRefused::ALL.len()],
    tftp_bytes: AtomicU64,
    tftp_transfers: AtomicU64,
    phases: [AtomicU64; Phase::ALL.len()],
    boot_duration: Histogram,
    /// [served, refused].
    secrets: [AtomicU64; 2],
    tokens_minted: AtomicU64,
    enrollments: [AtomicU64; Enrollment::ALL.len()],
    state_write_errors: AtomicU64,
    started: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// Gauges read at scrape time from the server's state.
#[derive(Debug, Default, Clone, Copy)]
pub struct Now {
    /// HTTP connections open.
    pub connections: usize,
    /// Nodes in the status table by phase, in [`Phase::ALL`] order.
    pub nodes: [usize; 5],
}

impl Metrics {
    pub const fn new() -> Metrics {
        Metrics {
            http_requests: [const { [const { AtomicU64::new(0) }; NCODES] }; NROUTES],
            http_bytes: [const { [const { AtomicU64::new(0) }; NCODES] }; NROUTES],
            http_transfers: AtomicU64::new(0),
            http_refused: [const { AtomicU64::new(0) }; 2],
            dhcp_received: AtomicU64::new(0),
            dhcp: [const { AtomicU64::new(0) }; Dhcp::ALL.len()],
            ndp: [const { AtomicU64::new(0) }; Ndp::ALL.len()],
            tftp_started: AtomicU64::new(0),
            tftp_ended: [const { AtomicU64::new(0) }; 2],
            tftp_refused: [const { AtomicU64::new(0) }; TftpRefused::ALL.len()],
            tftp_bytes: AtomicU64::new(0),
            tftp_transfers: AtomicU64::new(0),
            phases: [const { AtomicU64::new(0) }; Phase::ALL.len()],
            boot_duration: Histogram::new(),
            secrets: [const { AtomicU64::new(0) }; 2],
            tokens_minted: AtomicU64::new(0),
            enrollments: [const { AtomicU64::new(0) }; Enrollment::ALL.len()],
            state_write_errors: AtomicU64::new(0),
            started: AtomicU64::new(0),
        }
    }

    /// Note when the process started (`process_start_time_seconds`).
    pub fn start(&self, at: std::time::SystemTime) {
        let s = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.started.store(s, Relaxed);
    }

    /// One HTTP request answered: its path (`None`: the head did not
    /// parse), method, status and the body bytes sent. A `/secrets/` answer
    /// also counts as a secret served (200) or refused.
    pub fn http(&self, path: Option<&str>, method: &str, status: u16, bytes: u64) {
        let route = Route::of(path, method);
        let (r, c) = (route as usize, code_index(status));
        self.http_requests[r][c].fetch_add(1, Relaxed);
        self.http_bytes[r][c].fetch_add(bytes, Relaxed);
        if route == Route::Secrets {
            self.secrets[usize::from(status != 200)].fetch_add(1, Relaxed);
        }
    }

    /// A connection refused at accept (503): by its client's limit (`true`)
    /// or by the total.
    pub fn http_refused(&self, per_client: bool) {
        self.http_refused[usize::from(!per_client)].fetch_add(1, Relaxed);
    }

    /// A file body being sent: `bootd_http_transfers_in_flight` while the
    /// guard lives.
    pub fn http_transfer(&self) -> InFlight<'_> {
        held(&self.http_transfers)
    }

    /// A DHCP datagram read.
    pub fn dhcp_received(&self) {
        self.dhcp_received.fetch_add(1, Relaxed);
    }

    pub fn dhcp(&self, what: Dhcp) {
        self.dhcp[what as usize].fetch_add(1, Relaxed);
    }

    pub fn ndp(&self, what: Ndp) {
        self.ndp[what as usize].fetch_add(1, Relaxed);
    }

    /// A TFTP transfer starts: `bootd_tftp_transfers_in_flight` while the
    /// guard lives.
    pub fn tftp_started(&self) -> InFlight<'_> {
        self.tftp_started.fetch_add(1, Relaxed);
        held(&self.tftp_transfers)
    }

    /// A TFTP transfer ended, whole (`completed`) or not, having sent `bytes`.
    pub fn tftp_ended(&self, completed: bool, bytes: u64) {
        self.tftp_ended[usize::from(!completed)].fetch_add(1, Relaxed);
        self.tftp_bytes.fetch_add(bytes, Relaxed);
    }

    pub fn tftp_refused(&self, why: TftpRefused) {
        self.tftp_refused[why as usize].fetch_add(1, Relaxed);
    }

    /// A status report accepted.
    pub fn phase(&self, p: Phase) {
        self.phases[p as usize].fetch_add(1, Relaxed);
    }

    /// A boot's first `fetching` to its first `ready`.
    pub fn boot_done(&self, d: Duration) {
        self.boot_duration.observe(d);
    }

    pub fn token_minted(&self) {
        self.tokens_minted.fetch_add(1, Relaxed);
    }

    pub fn enrollment(&self, what: Enrollment) {
        self.enrollments[what as usize].fetch_add(1, Relaxed);
    }

    /// Node state that could not be written to `STATE/nodes.redb`.
    pub fn state_write_error(&self) {
        self.state_write_errors.fetch_add(1, Relaxed);
    }

    /// The exposition: every counter, the gauges of `now`. HTTP series
    /// appear once their route and code have been seen (the 12 × 19
    /// possible pairs are mostly zero); all others always.
    pub fn render(&self, now: &Now) -> String {
        let mut o = String::with_capacity(8 * 1024);
        let load = |a: &AtomicU64| a.load(Relaxed);
        let head = |o: &mut String, name: &str, kind: &str, help: &str| {
            let _ = write!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        };

        head(
            &mut o,
            "bootd_http_requests_total",
            "counter",
            "HTTP requests answered, by route and status code.",
        );
        self.http_series(&mut o, "bootd_http_requests_total", &self.http_requests);
        head(
            &mut o,
            "bootd_http_response_bytes_total",
            "counter",
            "HTTP response body bytes sent, by route and status code.",
        );
        self.http_series(&mut o, "bootd_http_response_bytes_total", &self.http_bytes);
        head(
            &mut o,
            "bootd_http_transfers_in_flight",
            "gauge",
            "File bodies being sent over HTTP.",
        );
        let _ = writeln!(
            o,
            "bootd_http_transfers_in_flight {}",
            load(&self.http_transfers)
        );
        head(
            &mut o,
            "bootd_http_connections_open",
            "gauge",
            "HTTP connections open.",
        );
        let _ = writeln!(o, "bootd_http_connections_open {}", now.connections);
        head(
            &mut o,
            "bootd_http_connections_refused_total",
            "counter",
            "Connections answered 503 at accept, by the limit reached.",
        );
        for (i, why) in ["per_client", "total"].iter().enumerate() {
            let _ = writeln!(
                o,
                "bootd_http_connections_refused_total{{limit=\"{why}\"}} {}",
                load(&self.http_refused[i])
            );
        }

        head(
            &mut o,
            "bootd_dhcp_packets_received_total",
            "counter",
            "DHCP datagrams read (ports 67 and 4011).",
        );
        let _ = writeln!(
            o,
            "bootd_dhcp_packets_received_total {}",
            load(&self.dhcp_received)
        );
        head(
            &mut o,
            "bootd_dhcp_packets_total",
            "counter",
            "DHCP datagrams by what became of them.",
        );
        for d in Dhcp::ALL {
            let _ = writeln!(
                o,
                "bootd_dhcp_packets_total{{outcome=\"{}\"}} {}",
                d.label(),
                load(&self.dhcp[d as usize])
            );
        }
        head(
            &mut o,
            "bootd_ndp_router_solicitations_total",
            "counter",
            "IPv6 router solicitations on the DHCP interface, by what became of them.",
        );
        for d in Ndp::ALL {
            let _ = writeln!(
                o,
                "bootd_ndp_router_solicitations_total{{outcome=\"{}\"}} {}",
                d.label(),
                load(&self.ndp[d as usize])
            );
        }

        head(
            &mut o,
            "bootd_tftp_transfers_started_total",
            "counter",
            "TFTP read requests accepted.",
        );
        let _ = writeln!(
            o,
            "bootd_tftp_transfers_started_total {}",
            load(&self.tftp_started)
        );
        head(
            &mut o,
            "bootd_tftp_transfers_total",
            "counter",
            "TFTP transfers ended: completed, or failed (the client stopped or went away).",
        );
        for (i, r) in ["completed", "failed"].iter().enumerate() {
            let _ = writeln!(
                o,
                "bootd_tftp_transfers_total{{result=\"{r}\"}} {}",
                load(&self.tftp_ended[i])
            );
        }
        head(
            &mut o,
            "bootd_tftp_requests_refused_total",
            "counter",
            "TFTP requests refused, by reason.",
        );
        for r in TftpRefused::ALL {
            let _ = writeln!(
                o,
                "bootd_tftp_requests_refused_total{{reason=\"{}\"}} {}",
                r.label(),
                load(&self.tftp_refused[r as usize])
            );
        }
        head(
            &mut o,
            "bootd_tftp_sent_bytes_total",
            "counter",
            "File bytes sent over TFTP (counted when a transfer ends).",
        );
        let _ = writeln!(o, "bootd_tftp_sent_bytes_total {}", load(&self.tftp_bytes));
        head(
            &mut o,
            "bootd_tftp_transfers_in_flight",
            "gauge",
            "TFTP transfers in flight.",
        );
        let _ = writeln!(
            o,
            "bootd_tftp_transfers_in_flight {}",
            load(&self.tftp_transfers)
        );

        head(
            &mut o,
            "bootd_node_reports_total",
            "counter",
            "Node status reports accepted, by phase.",
        );
        for p in Phase::ALL {
            let _ = writeln!(
                o,
                "bootd_node_reports_total{{phase=\"{p}\"}} {}",
                load(&self.phases[p as usize])
            );
        }
        head(
            &mut o,
            "bootd_nodes",
            "gauge",
            "Nodes in the status table, by their last phase.",
        );
        for (p, n) in Phase::ALL.iter().zip(now.nodes) {
            let _ = writeln!(o, "bootd_nodes{{phase=\"{p}\"}} {n}");
        }
        head(
            &mut o,
            "bootd_boot_duration_seconds",
            "histogram",
            "From a boot's first fetching report to its first ready.",
        );
        let h = &self.boot_duration;
        let mut cumulative = 0;
        for (i, b) in BOOT_BUCKETS.iter().enumerate() {
            cumulative += load(&h.buckets[i]);
            let _ = writeln!(
                o,
                "bootd_boot_duration_seconds_bucket{{le=\"{b}\"}} {cumulative}"
            );
        }
        let count = load(&h.count);
        let _ = writeln!(
            o,
            "bootd_boot_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = load(&h.sum_ms);
        let _ = writeln!(
            o,
            "bootd_boot_duration_seconds_sum {}.{:03}",
            sum / 1000,
            sum % 1000
        );
        let _ = writeln!(o, "bootd_boot_duration_seconds_count {count}");

        head(
            &mut o,
            "bootd_secret_fetches_total",
            "counter",
            "GET /secrets/NAME answers: served (sealed to the node's key) or refused.",
        );
        for (i, r) in ["served", "refused"].iter().enumerate() {
            let _ = writeln!(
                o,
                "bootd_secret_fetches_total{{result=\"{r}\"}} {}",
                load(&self.secrets[i])
            );
        }
        head(
            &mut o,
            "bootd_tokens_minted_total",
            "counter",
            "Boot tokens minted into iPXE scripts and GRUB configs.",
        );
        let _ = writeln!(o, "bootd_tokens_minted_total {}", load(&self.tokens_minted));
        head(
            &mut o,
            "bootd_enrollments_total",
            "counter",
            "Node key enrollments: accepted (a new key), same (the known key), refused.",
        );
        for e in Enrollment::ALL {
            let _ = writeln!(
                o,
                "bootd_enrollments_total{{result=\"{}\"}} {}",
                e.label(),
                load(&self.enrollments[e as usize])
            );
        }
        head(
            &mut o,
            "bootd_state_write_errors_total",
            "counter",
            "Node state changes that could not be written to STATE/nodes.redb.",
        );
        let _ = writeln!(
            o,
            "bootd_state_write_errors_total {}",
            load(&self.state_write_errors)
        );
        head(
            &mut o,
            "bootd_build_info",
            "gauge",
            "bootd's version (always 1).",
        );
        let _ = writeln!(
            o,
            "bootd_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        head(
            &mut o,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, in seconds.",
        );
        let _ = writeln!(o, "process_start_time_seconds {}", load(&self.started));
        o
    }

    fn http_series(&self, o: &mut String, name: &str, table: &[[AtomicU64; NCODES]; NROUTES]) {
        for route in Route::ALL {
            for (c, v) in table[route as usize].iter().enumerate() {
                let v = v.load(Relaxed);
                if v > 0 {
                    let _ = writeln!(
                        o,
                        "{name}{{route=\"{}\",code=\"{}\"}} {v}",
                        route.label(),
                        code_label(c)
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .map(|l| &l[series.len() + 1..])
    }

    #[test]
    fn routes_come_from_a_fixed_list() {
        for (path, method, want) in [
            (Some("/boot/ipxe"), "GET", "/boot/ipxe"),
            (Some("/boot/grub"), "HEAD", "/boot/grub"),
            (Some("/live.squashfs"), "GET", "files"),
            (Some("/no/such/file"), "HEAD", "files"),
            (Some("/repo/postscript.sh"), "GET", "/repo"),
            (Some("/repository"), "GET", "files"),
            (Some("/status"), "POST", "/status"),
            (Some("/secrets/munge.key"), "GET", "/secrets"),
            (Some("/secrets"), "GET", "/secrets"),
            (Some("/identity/nonce"), "GET", "/identity"),
            (Some("/identity/enroll"), "POST", "/identity"),
            (Some("/nodes"), "GET", "/nodes"),
            (Some("/"), "GET", "/"),
            (Some("/admin/arm"), "POST", "/admin"),
            (Some("/metrics"), "GET", "/metrics"),
            (Some("/anything"), "DELETE", "other"),
            (None, "", "other"),
        ] {
            assert_eq!(Route::of(path, method).label(), want, "{path:?} {method}");
        }
    }

    #[test]
    fn a_flood_of_strange_requests_adds_no_series() {
        let m = Metrics::new();
        let empty = m.render(&Now::default()).lines().count();
        for i in 0..1000u16 {
            let p = format!("/x{i}/{}", "y".repeat(usize::from(i)));
            m.http(Some(&p), &format!("M{i}"), 100 + i, 1);
        }
        let text = m.render(&Now::default());
        // One route (other) and the codes of the list that were hit, plus "other".
        let series = text.lines().count() - empty;
        assert!(series <= 2 * NCODES, "{series} series added");
        assert!(!text.contains("/x1"), "no path in a label");
        assert_eq!(
            line(
                &text,
                r#"bootd_http_requests_total{route="other",code="other"}"#
            ),
            Some("982")
        );
    }

    #[test]
    fn counts_and_histogram() {
        let m = Metrics::new();
        m.http(Some("/live.squashfs"), "GET", 206, 4096);
        m.http(Some("/live.squashfs"), "GET", 206, 100);
        m.http(Some("/secrets/a"), "GET", 200, 10);
        m.http(Some("/secrets/a"), "GET", 401, 10);
        m.http(Some("/secrets/a"), "GET", 403, 10);
        m.dhcp_received();
        m.dhcp(Dhcp::RateLimited);
        {
            let _t = m.tftp_started();
            let _h = m.http_transfer();
            let text = m.render(&Now::default());
            assert_eq!(line(&text, "bootd_tftp_transfers_in_flight"), Some("1"));
            assert_eq!(line(&text, "bootd_http_transfers_in_flight"), Some("1"));
        }
        m.tftp_ended(true, 70_000);
        m.tftp_refused(TftpRefused::Limit);
        m.phase(Phase::Ready);
        m.boot_done(Duration::from_millis(29_500));
        m.boot_done(Duration::from_secs(100));
        m.boot_done(Duration::from_secs(99_999));
        m.enrollment(Enrollment::Refused);
        let now = Now {
            connections: 3,
            nodes: [0, 0, 0, 2, 1],
        };
        let text = m.render(&now);
        let at = |s: &str| line(&text, s).unwrap_or_else(|| panic!("{s} missing:\n{text}"));
        assert_eq!(
            at(r#"bootd_http_response_bytes_total{route="files",code="206"}"#),
            "4196"
        );
        assert_eq!(at(r#"bootd_secret_fetches_total{result="served"}"#), "1");
        assert_eq!(at(r#"bootd_secret_fetches_total{result="refused"}"#), "2");
        assert_eq!(at("bootd_tftp_transfers_in_flight"), "0");
        assert_eq!(at(r#"bootd_tftp_transfers_total{result="completed"}"#), "1");
        assert_eq!(at("bootd_tftp_sent_bytes_total"), "70000");
        assert_eq!(
            at(r#"bootd_dhcp_packets_total{outcome="rate_limited"}"#),
            "1"
        );
        assert_eq!(at(r#"bootd_node_reports_total{phase="ready"}"#), "1");
        assert_eq!(at(r#"bootd_nodes{phase="failed"}"#), "1");
        assert_eq!(at("bootd_http_connections_open"), "3");
        assert_eq!(at(r#"bootd_boot_duration_seconds_bucket{le="15"}"#), "0");
        assert_eq!(at(r#"bootd_boot_duration_seconds_bucket{le="30"}"#), "1");
        assert_eq!(at(r#"bootd_boot_duration_seconds_bucket{le="120"}"#), "2");
        assert_eq!(at(r#"bootd_boot_duration_seconds_bucket{le="3600"}"#), "2");
        assert_eq!(at(r#"bootd_boot_duration_seconds_bucket{le="+Inf"}"#), "3");
        assert_eq!(at("bootd_boot_duration_seconds_count"), "3");
        assert_eq!(at("bootd_boot_duration_seconds_sum"), "100128.500");
        assert_eq!(at(r#"bootd_enrollments_total{result="refused"}"#), "1");
    }
}
