//! Live-image fetcher: http(s) GET with sha256 computed while streaming (on a
//! second thread), Range resume after a dropped or stalled connection, retries
//! with exponential backoff under one overall deadline, and short progress
//! lines for a serial console.
//!
//! The body goes to `<dest>.part`, which is renamed to `dest` only once its
//! digest is verified; on any failure the part file is removed, so an
//! unverified image is never found under the final name. The part file is
//! opened without following a symbolic link; a link, a hard link, another
//! user's file or anything but a regular file found there is refused before
//! any request (a leftover regular part file of ours is emptied and reused).
//!
//! Several origins ([`fetch_from`]: `root=live:` then `nodeboot.mirror=`,
//! [`crate::cmdline::Origins`]) are tried in order under the one deadline:
//! an origin gets [`ORIGIN_ATTEMPTS`] attempts in a row, then the next one
//! takes over, resuming the part file with `Range` (no `If-Range`: another
//! server's validators mean nothing here; a server that answers with
//! another size or ignores the range starts over from byte 0); the final
//! digest decides whether the bytes, wherever they came from, are the
//! image. An origin that answers with an error retrying will not fix (404,
//! 403, TLS) or whose bytes fail the digest is dropped (after a digest
//! failure the download starts over from byte 0 on the next origin);
//! the others are tried again, round after round, until the deadline.
//! Without a pinned digest the sidecar comes from the first origin that
//! serves one; a presigned URL (its signature covers its own path only) is
//! not asked for one. A single origin behaves as before: retried until
//! the deadline.
//!
//! What is retried (until the deadline): connection errors, DNS failures,
//! timeouts, HTTP 5xx/408/429, and errors in the middle of the body (which
//! resume with `Range: bytes=N-`, `If-Range` when the server gave a
//! validator). Anything else fails at once: other 4xx, TLS certificate
//! errors, a bad URL, local I/O errors.
pub mod chunked;
mod sink;
#[cfg(test)]
mod tests;

pub use sink::{BUFFERS, BUF_SIZE};

use nodeboot_common::retry::{Failed, Policy, Retry, Verdict};
use serde::Serialize;
use sink::Sink;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// First retry delay; it doubles after each failed attempt.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
/// Cap of the retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Bound on TCP connect + TLS handshake of one attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest sidecar accepted (a `sha256sum` line is ~100 bytes).
const SIDECAR_MAX: u64 = 64 * 1024;
/// Attempts in a row one origin gets before the next takes over (with
/// more than one origin).
pub const ORIGIN_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Expected lowercase hex sha256; when `None` and `sidecar` is true, `<url>.sha256` is fetched.
    pub expected_sha256: Option<String>,
    pub sidecar: bool,
    /// Extra PEM roots for https (in addition to the embedded webpki roots).
    pub ca_file: Option<PathBuf>,
    /// Overall deadline for the whole download, retries included.
    pub deadline: Duration,
    /// Period of the progress lines.
    pub progress_interval: Duration,
    /// A connection that delivers no byte for this long is dropped and resumed.
    pub stall_timeout: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            expected_sha256: None,
            sidecar: true,
            ca_file: None,
            deadline: Duration::from_secs(600),
            progress_interval: Duration::from_secs(3),
            stall_timeout: Duration::from_secs(15),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FetchReport {
    pub url: String,
    pub bytes: u64,
    pub seconds: f64,
    pub sha256: String,
    /// How the expected digest was known: "cmdline", "sidecar", "none".
    pub verified_by: String,
    /// HTTP requests made for the file (the sidecar not counted).
    pub attempts: u32,
    /// Times the download continued from where it broke off (HTTP 206).
    pub resumes: u32,
    /// Times the download started over from byte 0 (server ignored Range).
    pub restarts: u32,
    /// Times another origin took over (0 with one origin).
    pub failovers: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: sha256 mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{url}: gave up after {seconds:.0}s (deadline) and {attempts} attempts: {last_error}")]
    Deadline {
        url: String,
        seconds: f64,
        attempts: u32,
        last_error: String,
    },
    /// The chunked fetch ran out of time: how far it got.
    #[error(
        "{url}: the fetch deadline of {limit:.0}s (nodeboot.fetch.timeout=, nodectl fetch --timeout) \
         passed with {done} of {total} chunks assembled; the chunk stores and peers are too slow \
         or unreachable"
    )]
    ChunkedDeadline {
        url: String,
        limit: f64,
        done: u64,
        total: u64,
    },
    /// An HTTP status that retrying will not fix (404, 403, …).
    #[error("{url}: HTTP {status} {reason} (not retried)")]
    Http {
        url: String,
        status: u16,
        reason: String,
    },
    /// No usable `<url>.sha256` while the digest was not given.
    #[error(
        "{url}: {problem}: refusing an unverified image; publish the `sha256sum` \
         output there or give the digest (nodeboot.sha256= / nodectl fetch --sha256)"
    )]
    Sidecar {
        url: String,
        problem: String,
        /// The HTTP status when the server refused it.
        status: Option<u16>,
    },
    /// TLS failure (most often: the server's certificate is not trusted).
    #[error("{url}: TLS: {message}")]
    Tls { url: String, message: String },
    /// Local file error.
    #[error("{what} {path}: {error}")]
    Io {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    /// Every origin failed (more than one was given): each one's last error.
    #[error("no origin gave the image in {seconds:.0}s: {}", .failures.join("; "))]
    Origins { failures: Vec<String>, seconds: f64 },
    #[error("{0}")]
    Other(String),
}

impl FetchError {
    /// Exit status of `nodectl fetch` for this error: 3 digest mismatch,
    /// 4 deadline (unreachable), 5 HTTP error that is not retried, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            FetchError::DigestMismatch { .. } => 3,
            FetchError::Deadline { .. }
            | FetchError::Origins { .. }
            | FetchError::ChunkedDeadline { .. } => 4,
            FetchError::Http { .. } => 5,
            FetchError::Sidecar {
                status: Some(_), ..
            } => 5,
            _ => 1,
        }
    }
}

/// Download `url` to `dest`, verifying its sha256 (see the module doc).
pub fn fetch(url: &str, dest: &Path, opts: &FetchOptions) -> Result<FetchReport, FetchError> {
    fetch_from(&[url.to_string()], dest, opts)
}

/// Download the image from `origins` (tried in order, with failover: see
/// the module doc) to `dest`, verifying its sha256.
pub fn fetch_from(
    origins: &[String],
    dest: &Path,
    opts: &FetchOptions,
) -> Result<FetchReport, FetchError> {
    let start = Instant::now();
    let Some(first) = origins.first() else {
        return Err(FetchError::Other("no URL to fetch".into()));
    };
    for url in origins {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(FetchError::Other(format!(
                "{url}: unsupported URL (expected http:// or https://)"
            )));
        }
    }
    let given = match &opts.expected_sha256 {
        Some(h) => Some(parse_digest(h).ok_or_else(|| {
            FetchError::Other(format!(
                "expected sha256 {h:?} for {first}: not 64 hexadecimal digits"
            ))
        })?),
        None => None,
    };
    let agent = agent(opts)?;
    let clock = Clock {
        start,
        deadline: opts.deadline,
    };
    let (expected, verified_by) = match given {
        Some(h) => (Some(h), "cmdline"),
        None if opts.sidecar => (
            Some(sidecar_from(&agent, origins, &clock, opts)?),
            "sidecar",
        ),
        None => {
            warn!("fetch: no sha256 given and no sidecar asked for: {first} will not be verified");
            (None, "none")
        }
    };

    let n = origins.len();
    let label = |i: usize| {
        if n == 1 {
            origins[i].clone()
        } else {
            format!("origin {}/{n} {}", i + 1, origins[i])
        }
    };
    let per_turn = (n > 1).then_some(ORIGIN_ATTEMPTS);
    let part = part_path(dest);
    let mut dl = Download::new(first, &agent, opts, Sink::create(&part)?);
    let mut dropped = vec![false; n];
    let mut failures: Vec<Option<String>> = vec![None; n];
    let (mut attempts, mut failovers) = (0u32, 0u32);
    let mut current: Option<usize> = None;
    let mut i = 0;
    loop {
        if dropped.iter().all(|d| *d) || (current.is_some() && clock.left().is_zero()) {
            return Err(FetchError::Origins {
                failures: failures
                    .iter()
                    .enumerate()
                    .map(|(k, f)| format!("{}: {}", label(k), f.as_deref().unwrap_or("not tried")))
                    .collect(),
                seconds: start.elapsed().as_secs_f64(),
            });
        }
        if dropped[i] {
            i = (i + 1) % n;
            continue;
        }
        if current.is_some_and(|c| c != i) {
            failovers += 1;
            dl.validator = None;
            if dl.offset > 0 {
                info!(
                    "fetch: trying {}, resuming at {} MB",
                    label(i),
                    dl.offset / 1_000_000
                );
            } else {
                info!("fetch: trying {}", label(i));
            }
        }
        current = Some(i);
        dl.url = &origins[i];
        let r = retries(&clock, per_turn, |remaining| dl.attempt(remaining));
        match r {
            Ok(((), a)) => {
                attempts += a;
                let digest = hex::encode(dl.sink.finish()?);
                let bytes = dl.offset;
                match &expected {
                    Some(e) if *e != digest => {
                        let mismatch = FetchError::DigestMismatch {
                            url: origins[i].clone(),
                            expected: e.clone(),
                            actual: digest,
                        };
                        if n == 1 {
                            // Dropping the sink removes the part file.
                            return Err(mismatch);
                        }
                        warn!(
                            "fetch: {}: sha256 mismatch (expected {e}): dropping this origin; starting over from byte 0",
                            label(i)
                        );
                        failures[i] = Some(format!("sha256 mismatch: got {}", short(&mismatch)));
                        dropped[i] = true;
                        // The old sink goes first (it removes the part
                        // file), then a new one starts from byte 0.
                        let (resumes, restarts) = (dl.resumes, dl.restarts + 1);
                        drop(dl);
                        dl = Download::new(first, &agent, opts, Sink::create(&part)?);
                        dl.resumes = resumes;
                        dl.restarts = restarts;
                    }
                    _ => {
                        let seconds = dl.progress.start.elapsed().as_secs_f64();
                        let (resumes, restarts) = (dl.resumes, dl.restarts);
                        dl.sink.commit(dest)?;
                        info!(
                            "fetch: done {bytes} bytes in {seconds:.1}s, {:.0} MB/s, sha256 {digest}{}",
                            mbps(bytes, seconds),
                            if n > 1 { format!(" (from {})", label(i)) } else { String::new() }
                        );
                        return Ok(FetchReport {
                            url: origins[i].clone(),
                            bytes,
                            seconds: start.elapsed().as_secs_f64(),
                            sha256: digest,
                            verified_by: verified_by.to_string(),
                            attempts,
                            resumes,
                            restarts,
                            failovers,
                        });
                    }
                }
            }
            Err(End::Fatal(e, a)) => {
                attempts += a;
                if n == 1 {
                    return Err(e);
                }
                warn!("fetch: {}: {e}: dropping this origin", label(i));
                failures[i] = Some(e.to_string());
                dropped[i] = true;
            }
            Err(End::GaveUp {
                last,
                attempts: a,
                deadline,
            }) => {
                attempts += a;
                if n == 1 {
                    return Err(FetchError::Deadline {
                        url: origins[i].clone(),
                        seconds: start.elapsed().as_secs_f64(),
                        attempts,
                        last_error: last,
                    });
                }
                failures[i] = Some(format!("{last} ({a} attempts)"));
                if !deadline {
                    warn!(
                        "fetch: {}: {a} attempts failed, the last: {last}; next origin",
                        label(i)
                    );
                }
            }
        }
        i = (i + 1) % n;
    }
}

/// The digest a mismatch error found (for the one-line failure list).
fn short(e: &FetchError) -> String {
    match e {
        FetchError::DigestMismatch { actual, .. } => actual.clone(),
        e => e.to_string(),
    }
}

/// Is `url` presigned (its query carries a signature that covers its own
/// path only: S3 v4 and v2, GCS, Azure SAS)? Its sidecar cannot be derived.
pub fn is_presigned(url: &str) -> bool {
    let Some((_, query)) = url.split_once('?') else {
        return false;
    };
    let query = query.split('#').next().unwrap_or_default();
    query.split('&').any(|kv| {
        let k = kv.split('=').next().unwrap_or_default();
        ["X-Amz-Signature", "X-Goog-Signature", "Signature", "sig"]
            .iter()
            .any(|s| k.eq_ignore_ascii_case(s))
    })
}

/// The digest the image must have, and how it is known ("cmdline" when
/// given in `opts`, else "sidecar": `<url>.sha256` is fetched from the
/// first origin that serves one, with the
/// retries and deadline of [`fetch`]). What the live image cache needs to
/// tell whether the image it holds is the current one without downloading
/// the image.
pub fn expected_digest(
    origins: &[String],
    opts: &FetchOptions,
) -> Result<(String, &'static str), FetchError> {
    let Some(url) = origins.first() else {
        return Err(FetchError::Other("no URL to fetch".into()));
    };
    if let Some(h) = &opts.expected_sha256 {
        let d = parse_digest(h).ok_or_else(|| {
            FetchError::Other(format!(
                "expected sha256 {h:?} for {url}: not 64 hexadecimal digits"
            ))
        })?;
        return Ok((d, "cmdline"));
    }
    for url in origins {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(FetchError::Other(format!(
                "{url}: unsupported URL (expected http:// or https://)"
            )));
        }
    }
    let agent = agent(opts)?;
    let clock = Clock {
        start: Instant::now(),
        deadline: opts.deadline,
    };
    Ok((sidecar_from(&agent, origins, &clock, opts)?, "sidecar"))
}

/// The digest from the first origin that serves a sidecar (presigned URLs
/// skipped); the last error when none does.
fn sidecar_from(
    agent: &ureq::Agent,
    origins: &[String],
    clock: &Clock,
    opts: &FetchOptions,
) -> Result<String, FetchError> {
    let candidates: Vec<&String> = origins.iter().filter(|u| !is_presigned(u)).collect();
    if candidates.is_empty() {
        return Err(FetchError::Sidecar {
            url: sidecar_url(&origins[0]),
            problem: "every origin is a presigned URL, whose signature does not cover \
                      another path"
                .into(),
            status: None,
        });
    }
    let per_turn = (candidates.len() > 1).then_some(ORIGIN_ATTEMPTS);
    let mut last = None;
    for (k, url) in candidates.iter().enumerate() {
        match sidecar(agent, url, clock, opts, per_turn) {
            Ok(d) => return Ok(d),
            Err(e) => {
                if k + 1 < candidates.len() {
                    warn!("fetch: {e}; asking the next origin for the digest");
                }
                last = Some(e);
            }
        }
    }
    Err(last.expect("at least one candidate"))
}

/// `<dest>.part`, beside `dest` so that the final rename stays in one filesystem.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut p = dest.as_os_str().to_owned();
    p.push(".part");
    PathBuf::from(p)
}

/// The sidecar URL: `.sha256` appended to the path (before any `?query`).
pub fn sidecar_url(url: &str) -> String {
    match url.find(['?', '#']) {
        Some(i) => format!("{}.sha256{}", &url[..i], &url[i..]),
        None => format!("{url}.sha256"),
    }
}

/// A 64-hex-digit sha256, lowercased; `None` if it is not one.
fn parse_digest(s: &str) -> Option<String> {
    let s = s.trim();
    (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_ascii_lowercase())
}

/// The digest in a sidecar: `sha256sum` output (first token of the first
/// non-empty line) or BSD style `SHA256 (file) = digest`.
pub fn parse_sidecar(text: &str) -> Option<String> {
    let line = text.lines().find(|l| !l.trim().is_empty())?;
    if line.starts_with("SHA256 (") {
        return parse_digest(line.rsplit(" = ").next()?);
    }
    parse_digest(line.split_whitespace().next()?)
}

fn mbps(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / 1e6 / seconds.max(1e-9)
}

/// The ureq agent: status codes as responses, redirects followed, stall and
/// connect timeouts, webpki roots plus the operator's.
fn agent(opts: &FetchOptions) -> Result<ureq::Agent, FetchError> {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(ca) = &opts.ca_file {
        tls = tls.root_certs(roots_with(ca)?);
    }
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(10)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_per_read(Some(opts.stall_timeout))
        .timeout_per_write(Some(opts.stall_timeout))
        .input_buffer_size(BUF_SIZE)
        .user_agent(concat!("nodectl/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls.build())
        .build();
    Ok(ureq::Agent::new_with_config(config))
}

/// The embedded Mozilla roots plus every certificate of the PEM file `ca`.
fn roots_with(ca: &Path) -> Result<ureq::tls::RootCerts, FetchError> {
    use ureq::tls::{Certificate, PemItem};
    let pem = std::fs::read(ca).map_err(|error| FetchError::Io {
        what: "reading CA file",
        path: ca.to_path_buf(),
        error,
    })?;
    let mut certs: Vec<Certificate<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    let builtin = certs.len();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(FetchError::Other(format!("CA file {}: {e}", ca.display()))),
        }
    }
    if certs.len() == builtin {
        return Err(FetchError::Other(format!(
            "CA file {}: no PEM certificate in it",
            ca.display()
        )));
    }
    tracing::debug!(
        "{}: {} CA certificates",
        ca.display(),
        certs.len() - builtin
    );
    Ok(ureq::tls::RootCerts::from(certs))
}

/// Start time and overall budget, shared by the sidecar's and the image's
/// retry loops.
struct Clock {
    start: Instant,
    deadline: Duration,
}

impl Clock {
    /// Time left before the deadline.
    fn left(&self) -> Duration {
        self.deadline.saturating_sub(self.start.elapsed())
    }
}

/// Outcome of a failed attempt.
enum Failure {
    /// Worth another attempt; `progressed` when this attempt received data
    /// (the backoff starts over).
    Retry {
        reason: String,
        progressed: bool,
    },
    Fatal(FetchError),
}

impl Failure {
    fn retry(reason: impl Into<String>) -> Failure {
        Failure::Retry {
            reason: reason.into(),
            progressed: false,
        }
    }
}

impl From<FetchError> for Failure {
    fn from(e: FetchError) -> Failure {
        Failure::Fatal(e)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Retry { reason, .. } => f.write_str(reason),
            Failure::Fatal(e) => write!(f, "{e}"),
        }
    }
}

/// How a bounded retry loop ended without success.
enum End {
    /// A fatal error, after this many attempts.
    Fatal(FetchError, u32),
    /// Out of attempts (or time, `deadline`); the last error.
    GaveUp {
        last: String,
        attempts: u32,
        deadline: bool,
    },
}

/// The retry loop (the shared one): exponential backoff from 0.5 s to 10 s,
/// one warn line per retry, at most `attempts` attempts (`None`: until the
/// deadline) and never past the clock's deadline. `f` gets the time left;
/// returns the value and the attempts made.
fn retries<T>(
    clock: &Clock,
    attempts: Option<u32>,
    mut f: impl FnMut(Duration) -> Result<T, Failure>,
) -> Result<(T, u32), End> {
    let mut policy = Policy::deadline(clock.deadline, BACKOFF_FIRST, BACKOFF_MAX);
    policy.attempts = attempts;
    let mut retry = Retry::since(policy, clock.start);
    let r = retry.run(
        "fetch",
        |a| {
            let remaining = a.remaining.unwrap_or_default();
            if remaining.is_zero() {
                // The sidecar took all the time: no request with no time.
                return Err(Failure::retry("no time left for a request"));
            }
            f(remaining)
        },
        |e| match e {
            Failure::Fatal(_) => Verdict::Fatal,
            Failure::Retry {
                progressed: true, ..
            } => Verdict::RetryFresh,
            Failure::Retry { .. } => Verdict::Retry,
        },
    );
    match r {
        Ok(v) => Ok((v, retry.attempts())),
        Err(Failed::Fatal(Failure::Fatal(e))) => Err(End::Fatal(e, retry.attempts())),
        Err(Failed::Fatal(f)) => Err(End::GaveUp {
            last: f.to_string(),
            attempts: retry.attempts(),
            deadline: false,
        }),
        Err(Failed::GaveUp { last, deadline, .. }) => Err(End::GaveUp {
            last: last.to_string(),
            attempts: retry.attempts(),
            deadline: deadline || clock.left().is_zero(),
        }),
    }
}

/// [`retries`] until the deadline, as one error: [`FetchError::Deadline`]
/// naming `url` once the clock runs out.
fn with_retries<T>(
    url: &str,
    clock: &Clock,
    attempts: Option<u32>,
    f: impl FnMut(Duration) -> Result<T, Failure>,
) -> Result<(T, u32), FetchError> {
    retries(clock, attempts, f).map_err(|e| match e {
        End::Fatal(e, _) => e,
        End::GaveUp { last, attempts, .. } => FetchError::Deadline {
            url: url.to_string(),
            seconds: clock.start.elapsed().as_secs_f64(),
            attempts,
            last_error: last,
        },
    })
}

/// Sort a ureq error into retry / fatal, with a reason an operator can read.
fn classify(e: ureq::Error, url: &str, opts: &FetchOptions) -> Failure {
    use ureq::Error as E;
    match e {
        E::Timeout(ureq::Timeout::Global) => Failure::retry("deadline reached"),
        E::Timeout(ureq::Timeout::PerRead) => {
            Failure::retry(format!("no data for {}s", opts.stall_timeout.as_secs_f64()))
        }
        E::Timeout(t) => Failure::retry(format!("timeout ({t})")),
        E::Io(e) => match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            // rustls reports handshake failures through the socket's io::Error.
            Some(tls) => tls_failure(url, tls.to_string()),
            None => Failure::retry(e.to_string()),
        },
        E::HostNotFound => Failure::retry("host not found (DNS)"),
        E::ConnectionFailed => Failure::retry("connection failed"),
        E::Protocol(e) => Failure::retry(format!("bad HTTP response: {e}")),
        E::BodyStalled => Failure::retry("body stalled"),
        E::Rustls(tls) => tls_failure(url, tls.to_string()),
        E::Tls(_) | E::Pem(_) => tls_failure(url, e.to_string()),
        E::BadUri(_) | E::Http(_) => {
            Failure::Fatal(FetchError::Other(format!("{url}: invalid URL: {e}")))
        }
        e => Failure::Fatal(FetchError::Other(format!("{url}: {e}"))),
    }
}

/// TLS errors are not retried: a certificate does not become trusted by waiting.
fn tls_failure(url: &str, message: String) -> Failure {
    let hint = if message.contains("certificate") {
        " (is the server's CA given: nodeboot.ca= / nodectl fetch --ca-file?)"
    } else {
        ""
    };
    Failure::Fatal(FetchError::Tls {
        url: url.to_string(),
        message: format!("{message}{hint}"),
    })
}

/// The status line's text, e.g. "Not Found".
fn reason(status: ureq::http::StatusCode) -> String {
    status.canonical_reason().unwrap_or("").to_string()
}

/// 408, 429 and 5xx are worth retrying.
fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

/// GET `<url>.sha256` (with retries) and parse it.
fn sidecar(
    agent: &ureq::Agent,
    url: &str,
    clock: &Clock,
    opts: &FetchOptions,
    attempts: Option<u32>,
) -> Result<String, FetchError> {
    let surl = sidecar_url(url);
    let (digest, _) = with_retries(&surl, clock, attempts, |remaining| {
        let mut resp = agent
            .get(&surl)
            .config()
            .timeout_global(Some(remaining))
            .build()
            .call()
            .map_err(|e| classify(e, &surl, opts))?;
        let status = resp.status();
        if retryable_status(status.as_u16()) {
            return Err(Failure::retry(format!(
                "{surl}: HTTP {} {}",
                status.as_u16(),
                reason(status)
            )));
        }
        if status.as_u16() != 200 {
            return Err(Failure::Fatal(FetchError::Sidecar {
                url: surl.clone(),
                problem: format!("HTTP {} {}", status.as_u16(), reason(status)),
                status: Some(status.as_u16()),
            }));
        }
        let text = resp
            .body_mut()
            .with_config()
            .limit(SIDECAR_MAX)
            .read_to_string()
            .map_err(|e| classify(e, &surl, opts))?;
        parse_sidecar(&text).ok_or_else(|| {
            Failure::Fatal(FetchError::Sidecar {
                url: surl.clone(),
                problem: format!(
                    "no sha256 in it (want 64 hex digits first, got {:?})",
                    text.lines()
                        .next()
                        .unwrap_or("")
                        .chars()
                        .take(40)
                        .collect::<String>()
                ),
                status: None,
            })
        })
    })?;
    info!("fetch: expecting sha256 {digest} (from {surl})");
    Ok(digest)
}

/// State of the image download across attempts.
struct Download<'a> {
    url: &'a str,
    agent: &'a ureq::Agent,
    opts: &'a FetchOptions,
    sink: Sink,
    /// Bytes written and hashed so far: where a resume starts.
    offset: u64,
    /// Size of the file, when the server said.
    total: Option<u64>,
    /// Strong ETag or Last-Modified of the first response, for If-Range.
    validator: Option<String>,
    resumes: u32,
    restarts: u32,
    progress: Progress,
}

impl<'a> Download<'a> {
    fn new(
        url: &'a str,
        agent: &'a ureq::Agent,
        opts: &'a FetchOptions,
        sink: Sink,
    ) -> Download<'a> {
        Download {
            url,
            agent,
            opts,
            sink,
            offset: 0,
            total: None,
            validator: None,
            resumes: 0,
            restarts: 0,
            progress: Progress::new(opts.progress_interval),
        }
    }

    /// Start over from byte 0.
    fn restart(&mut self) -> Result<(), FetchError> {
        self.sink.reset()?;
        self.offset = 0;
        self.total = None;
        self.validator = None;
        self.restarts += 1;
        Ok(())
    }

    /// One GET (ranged when resuming) and as much of the body as it gives.
    fn attempt(&mut self, remaining: Duration) -> Result<(), Failure> {
        let url = self.url;
        let mut req = self.agent.get(url);
        if self.offset > 0 {
            req = req.header("Range", format!("bytes={}-", self.offset));
            if let Some(v) = &self.validator {
                req = req.header("If-Range", v.as_str());
            }
        }
        let resp = req
            .config()
            .timeout_global(Some(remaining))
            .build()
            .call()
            .map_err(|e| classify(e, url, self.opts))?;
        let status = resp.status();
        let code = status.as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        match code {
            200 => {
                if self.offset > 0 {
                    info!(
                        "fetch: server ignored Range (HTTP 200), restarting from 0 (had {} MB)",
                        self.offset / 1_000_000
                    );
                    self.restart()?;
                }
                self.total = resp.body().content_length();
                if let Some(t) = self.total {
                    self.sink.check_room(t)?;
                }
                self.validator = header("etag")
                    .filter(|e| !e.starts_with("W/"))
                    .or_else(|| header("last-modified"));
            }
            206 if self.offset > 0 => {
                let cr = header("content-range").unwrap_or_default();
                match parse_content_range(&cr) {
                    Some((first, total)) if first == self.offset => {
                        if total.is_some() && self.total.is_some() && total != self.total {
                            self.restart()?;
                            return Err(Failure::retry(format!(
                                "size changed (Content-Range: {cr}), restarting from 0"
                            )));
                        }
                        self.total = total.or(self.total);
                        if let Some(t) = self.total {
                            self.sink.check_room(t.saturating_sub(self.offset))?;
                        }
                        self.resumes += 1;
                        info!("fetch: resuming at {} MB", self.offset / 1_000_000);
                    }
                    _ => {
                        let had = self.offset;
                        self.restart()?;
                        return Err(Failure::retry(format!(
                            "asked for bytes {had}- but got Content-Range {cr:?}, restarting from 0"
                        )));
                    }
                }
            }
            416 if self.offset > 0 => {
                self.restart()?;
                return Err(Failure::retry(
                    "HTTP 416 for the resume range (file changed?), restarting from 0",
                ));
            }
            c if retryable_status(c) => {
                return Err(Failure::retry(format!("HTTP {c} {}", reason(status))));
            }
            _ => {
                return Err(Failure::Fatal(FetchError::Http {
                    url: url.to_string(),
                    status: code,
                    reason: reason(status),
                }))
            }
        }

        let mut body = resp.into_body().into_reader();
        let before = self.offset;
        loop {
            let mut buf = self.sink.buffer()?;
            let cap = buf.len();
            let (n, err) = fill(&mut body, &mut buf);
            if n > 0 {
                self.sink.push(buf, n)?;
                self.offset += n as u64;
                self.progress.tick(self.offset, self.total, n as u64);
            } else {
                self.sink.push(buf, 0)?;
            }
            if let Some(e) = err {
                let mut f = classify(ureq::Error::from(e), url, self.opts);
                if let Failure::Retry { reason, progressed } = &mut f {
                    *reason = format!("interrupted at {} MB: {reason}", self.offset / 1_000_000);
                    *progressed = self.offset > before;
                }
                return Err(f);
            }
            if n < cap {
                break; // end of body
            }
        }
        match self.total {
            Some(t) if t != self.offset => Err(Failure::Retry {
                reason: format!("connection closed at {} of {t} bytes", self.offset),
                progressed: self.offset > before,
            }),
            _ => Ok(()),
        }
    }
}

/// Read until `buf` is full, the body ends, or an error; returns the bytes
/// read and the error, if any.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> (usize, Option<std::io::Error>) {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (n, Some(e)),
        }
    }
    (n, None)
}

/// `bytes FIRST-LAST/TOTAL` → (FIRST, TOTAL) (TOTAL `None` when `*`).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, _last) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((first.trim().parse().ok()?, total))
}

/// Periodic progress lines: done/total, percent, MB/s, ETA.
struct Progress {
    start: Instant,
    interval: Duration,
    next: Instant,
    /// Bytes received in this run (restarted bytes counted twice).
    received: u64,
}

impl Progress {
    fn new(interval: Duration) -> Self {
        let now = Instant::now();
        Progress {
            start: now,
            interval,
            next: now + interval,
            received: 0,
        }
    }

    fn tick(&mut self, done: u64, total: Option<u64>, n: u64) {
        self.received += n;
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + self.interval;
        let secs = (now - self.start).as_secs_f64();
        let rate = mbps(self.received, secs);
        match total {
            Some(t) if t > 0 => {
                let left = t.saturating_sub(done) as f64 / 1e6;
                info!(
                    "fetch: {}/{} MB {}% {rate:.0} MB/s ETA {:.0}s",
                    done / 1_000_000,
                    t / 1_000_000,
                    done * 100 / t,
                    left / rate.max(1e-3)
                );
            }
            _ => info!("fetch: {} MB {rate:.0} MB/s", done / 1_000_000),
        }
    }
}
