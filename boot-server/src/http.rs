//! HTTP/1.1 pieces: request head parsing (httparse), byte ranges, responses.
use std::io::{BufRead, Write};

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub keep_alive: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Read one request head (up to the blank line). `Ok(None)` at a clean EOF.
pub fn read_request<R: BufRead>(r: &mut R) -> std::io::Result<Option<Request>> {
    let mut head = Vec::new();
    loop {
        let n = r.read_until(b'\n', &mut head)?;
        if n == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "truncated request",
                ))
            };
        }
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            break;
        }
        if head.len() > 16 * 1024 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
    }
    let mut hbuf = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut hbuf);
    match req.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "malformed request",
            ))
        }
    }
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect();
    let version = req.version.unwrap_or(1);
    let conn = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("connection"))
        .map(|(_, v)| v.to_ascii_lowercase());
    let keep_alive = match conn.as_deref() {
        Some("close") => false,
        Some("keep-alive") => true,
        _ => version == 1,
    };
    Ok(Some(Request {
        method: req.method.unwrap_or("").to_string(),
        path: req.path.unwrap_or("").to_string(),
        headers,
        keep_alive,
    }))
}

/// The outcome of a `Range` header against a file of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeReq {
    /// No (usable) range: the whole file.
    Full,
    /// Inclusive byte range.
    Partial(u64, u64),
    /// 416.
    Unsatisfiable,
}

/// Parse `bytes=a-b`, `bytes=a-`, `bytes=-n`. Several ranges: the whole file
/// (allowed by RFC 9110, and all a boot client needs).
pub fn parse_range(h: Option<&str>, size: u64) -> RangeReq {
    let Some(spec) = h.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeReq::Full;
    };
    if spec.contains(',') {
        return RangeReq::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeReq::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let r = if a.is_empty() {
        match b.parse::<u64>() {
            Ok(0) => return RangeReq::Unsatisfiable,
            Ok(n) if size > 0 => Some((size.saturating_sub(n), size - 1)),
            Ok(_) => return RangeReq::Unsatisfiable,
            Err(_) => None,
        }
    } else {
        match (a.parse::<u64>(), b.is_empty()) {
            (Ok(s), true) => Some((s, size.saturating_sub(1))),
            (Ok(s), false) => b
                .parse::<u64>()
                .ok()
                .map(|e| (s, e.min(size.saturating_sub(1)))),
            _ => None,
        }
    };
    match r {
        None => RangeReq::Full,
        Some((s, _)) if s >= size => RangeReq::Unsatisfiable,
        Some((s, e)) if e < s => RangeReq::Full,
        Some((s, e)) => RangeReq::Partial(s, e),
    }
}

/// Percent-decode a URL path; `None` for bad escapes or NUL.
pub fn percent_decode(p: &str) -> Option<Vec<u8>> {
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    (!out.contains(&0)).then_some(out)
}

/// Write a status line and headers (and the blank line).
pub fn write_head<W: Write>(
    w: &mut W,
    status: u16,
    reason: &str,
    headers: &[(&str, String)],
) -> std::io::Result<()> {
    let mut s = format!("HTTP/1.1 {status} {reason}\r\nServer: bootd\r\n");
    for (k, v) in headers {
        s.push_str(k);
        s.push_str(": ");
        s.push_str(v);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    w.write_all(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let rows: &[(Option<&str>, u64, RangeReq)] = &[
            (None, 100, RangeReq::Full),
            (Some("bytes=0-9"), 100, RangeReq::Partial(0, 9)),
            (Some("bytes=90-"), 100, RangeReq::Partial(90, 99)),
            (Some("bytes=-10"), 100, RangeReq::Partial(90, 99)),
            (Some("bytes=-1000"), 100, RangeReq::Partial(0, 99)),
            (Some("bytes=50-1000"), 100, RangeReq::Partial(50, 99)),
            (Some("bytes=100-"), 100, RangeReq::Unsatisfiable),
            (Some("bytes=-0"), 100, RangeReq::Unsatisfiable),
            (Some("bytes=0-1,5-6"), 100, RangeReq::Full),
            (Some("bytes=9-3"), 100, RangeReq::Full),
            (Some("items=0-3"), 100, RangeReq::Full),
            (Some("bytes=x-3"), 100, RangeReq::Full),
            (Some("bytes=0-"), 0, RangeReq::Unsatisfiable),
        ];
        for (h, size, want) in rows {
            assert_eq!(parse_range(*h, *size), *want, "{h:?} of {size}");
        }
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("/a%20b"), Some(b"/a b".to_vec()));
        assert_eq!(percent_decode("/%2e%2e/x"), Some(b"/../x".to_vec()));
        assert_eq!(percent_decode("/a%00"), None);
        assert_eq!(percent_decode("/a%zz"), None);
        assert_eq!(percent_decode("/a%2"), None);
    }

    #[test]
    fn request_head() {
        let raw = b"GET /x HTTP/1.1\r\nHost: a\r\nRange: bytes=1-2\r\n\r\n";
        let r = read_request(&mut &raw[..]).unwrap().unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.keep_alive),
            ("GET", "/x", true)
        );
        assert_eq!(r.header("range"), Some("bytes=1-2"));
        let raw = b"GET /x HTTP/1.0\r\n\r\n";
        assert!(!read_request(&mut &raw[..]).unwrap().unwrap().keep_alive);
        assert!(read_request(&mut &b""[..]).unwrap().is_none());
        assert!(read_request(&mut &b"garbage\r\n\r\n"[..]).is_err());
    }
}
