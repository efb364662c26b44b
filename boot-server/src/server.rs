//! The artifact server: one thread per connection, keep-alive, GET/HEAD,
//! Range, ETag, zero-copy bodies (std's io::copy from a File to a TcpStream
//! uses sendfile on Linux).
use crate::files::resolve;
use crate::http::{parse_range, percent_decode, read_request, write_head, RangeReq, Request};
use anyhow::{Context, Result};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

#[derive(Debug, Clone)]
pub struct Config {
    /// Served at `/`.
    pub root: PathBuf,
    /// Served at `/repo/` (Grendel's repo directory: postscript.sh).
    pub repo: Option<PathBuf>,
    /// Bytes per second per connection; None: unlimited (sendfile).
    pub rate_limit: Option<u64>,
}

pub fn serve(listener: TcpListener, cfg: Config) -> Result<()> {
    let cfg = Arc::new(cfg);
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let cfg = cfg.clone();
        std::thread::spawn(move || {
            let peer = stream
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            if let Err(e) = connection(stream, &cfg) {
                tracing::debug!("{peer}: {e:#}");
            }
        });
    }
    Ok(())
}

fn connection(stream: TcpStream, cfg: &Config) -> Result<()> {
    stream.set_nodelay(true).ok();
    stream.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    while let Some(req) = read_request(&mut reader)? {
        let t = Instant::now();
        let (status, sent) = respond(&req, &mut out, cfg)?;
        tracing::info!(
            "{} {} range={} {} {}B {}ms",
            req.method,
            req.path,
            req.header("range").unwrap_or("-"),
            status,
            sent,
            t.elapsed().as_millis()
        );
        if !req.keep_alive {
            break;
        }
    }
    Ok(())
}

fn etag(md: &std::fs::Metadata) -> String {
    let mtime = md
        .modified()
        .ok()
        .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default();
    format!("\"{:x}-{:x}\"", md.size(), mtime.as_nanos())
}

fn http_date(md: &std::fs::Metadata) -> String {
    // RFC 7231 IMF-fixdate from a Unix time.
    let secs = md.mtime().max(0) as u64;
    let days = secs / 86400;
    let (h, m, s) = ((secs % 86400) / 3600, (secs % 3600) / 60, secs % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if mo <= 2 { 1 } else { 0 };
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let mn = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(mo - 1) as usize];
    format!("{wd}, {d:02} {mn} {y} {h:02}:{m:02}:{s:02} GMT")
}

fn simple(out: &mut TcpStream, status: u16, reason: &str, head_only: bool) -> Result<(u16, u64)> {
    let body = format!("{status} {reason}\n");
    write_head(
        out,
        status,
        reason,
        &[
            ("Content-Type", "text/plain".into()),
            ("Content-Length", body.len().to_string()),
        ],
    )?;
    if !head_only {
        out.write_all(body.as_bytes())?;
    }
    Ok((status, 0))
}

fn respond(req: &Request, out: &mut TcpStream, cfg: &Config) -> Result<(u16, u64)> {
    let head_only = req.method == "HEAD";
    if req.method != "GET" && !head_only {
        return simple(out, 405, "Method Not Allowed", false);
    }
    let path = req.path.split(['?', '#']).next().unwrap_or("");
    let Some(decoded) = percent_decode(path) else {
        return simple(out, 404, "Not Found", head_only);
    };
    let file = match (decoded.strip_prefix(b"/repo/"), &cfg.repo) {
        (Some(rel), Some(repo)) => resolve(repo, rel),
        (Some(_), None) => None,
        (None, _) => resolve(&cfg.root, &decoded),
    };
    let Some(file) = file else {
        return simple(out, 404, "Not Found", head_only);
    };
    let mut f = File::open(&file).with_context(|| format!("opening {}", file.display()))?;
    let md = f.metadata()?;
    let size = md.len();
    let tag = etag(&md);
    let mut headers = vec![
        ("Accept-Ranges", "bytes".to_string()),
        ("ETag", tag.clone()),
        ("Last-Modified", http_date(&md)),
        ("Content-Type", "application/octet-stream".to_string()),
    ];
    if req
        .header("if-none-match")
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"))
    {
        write_head(out, 304, "Not Modified", &headers)?;
        return Ok((304, 0));
    }
    let mut range = parse_range(req.header("range"), size);
    // If-Range: the range only applies to the same representation.
    if let Some(ir) = req.header("if-range") {
        if ir != tag && ir != http_date(&md) {
            range = RangeReq::Full;
        }
    }
    let (status, reason, start, len) = match range {
        RangeReq::Full => (200, "OK", 0, size),
        RangeReq::Partial(s, e) => {
            headers.push(("Content-Range", format!("bytes {s}-{e}/{size}")));
            (206, "Partial Content", s, e - s + 1)
        }
        RangeReq::Unsatisfiable => {
            headers.push(("Content-Range", format!("bytes */{size}")));
            headers.push(("Content-Length", "0".into()));
            write_head(out, 416, "Range Not Satisfiable", &headers)?;
            return Ok((416, 0));
        }
    };
    headers.push(("Content-Length", len.to_string()));
    write_head(out, status, reason, &headers)?;
    if head_only {
        return Ok((status, 0));
    }
    f.seek(SeekFrom::Start(start))?;
    let sent = match cfg.rate_limit {
        None => std::io::copy(&mut f.take(len), out)?,
        Some(rate) => throttled(&mut f.take(len), out, rate)?,
    };
    Ok((status, sent))
}

/// Copy at about `rate` bytes/s (tests that stop a server mid-download).
fn throttled(r: &mut impl Read, w: &mut impl Write, rate: u64) -> std::io::Result<u64> {
    let chunk = (rate / 20).clamp(1024, 1 << 20) as usize;
    let mut buf = vec![0u8; chunk];
    let t = Instant::now();
    let mut sent = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(sent);
        }
        w.write_all(&buf[..n])?;
        sent += n as u64;
        let due = Duration::from_secs_f64(sent as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(t.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}
