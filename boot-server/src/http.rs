//! HTTP/1.1 pieces: request heads (parsed by httparse), byte ranges,
//! validators, dates and response heads. No I/O policy lives here: the
//! server decides what to answer.
use std::io::{BufRead, Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

/// Largest request head accepted (request line + headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header fields accepted in one request.
const MAX_HEADERS: usize = 64;

/// Why a request head could not be read. The server answers `TooLarge` with
/// 431 and `Malformed` with 400, then closes; `Io` just closes.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("request head larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("malformed request head: {0}")]
    Malformed(String),
    #[error("reading the request head")]
    Io(#[from] std::io::Error),
}

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target as sent (origin-form, or absolute-form).
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first header field with this name (case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the client wants the connection kept open after the response
    /// (HTTP/1.1 default yes, HTTP/1.0 only with `Connection: keep-alive`).
    pub fn keep_alive(&self) -> bool {
        let tokens = |want: &str| {
            self.headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
                .flat_map(|(_, v)| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case(want))
        };
        if tokens("close") {
            false
        } else {
            self.minor_version >= 1 || tokens("keep-alive")
        }
    }

    /// Whether a body follows the head. bootd never reads request bodies, so
    /// such a connection is closed after the response.
    ///
    /// Every `Content-Length` field counts, not only the first: with
    /// `Content-Length: 0` then `Content-Length: 40`, the 40 bytes would
    /// otherwise be read as the next request (request smuggling).
    pub fn has_body(&self) -> bool {
        self.header("transfer-encoding").is_some()
            || self
                .headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .flat_map(|(_, v)| v.split(','))
                .any(|v| v.trim() != "0")
    }

    /// The path of the target, without query or fragment, still
    /// percent-encoded. `None` for targets that are not a path (`*`,
    /// authority-form) or an absolute-form without a path.
    pub fn path(&self) -> Option<&str> {
        let t = self.target.as_str();
        let t = match t.find("://") {
            // absolute-form: http://host:port/path (RFC 9112 §3.2.2).
            Some(i) if t[..i].eq_ignore_ascii_case("http") => {
                let rest = &t[i + 3..];
                &rest[rest.find('/').unwrap_or(rest.len())..]
            }
            _ => t,
        };
        let p = t.split(['?', '#']).next().unwrap_or("");
        p.starts_with('/').then_some(p)
    }
}

/// Read one request head (up to and including the blank line) and parse it.
/// `Ok(None)` at a clean EOF between requests. Never buffers more than
/// [`MAX_HEAD`] bytes of head.
pub fn read_request<R: BufRead>(r: &mut R) -> Result<Option<Request>, HeadError> {
    let mut head = Vec::new();
    loop {
        let room = (MAX_HEAD + 1 - head.len()) as u64;
        let n = r.by_ref().take(room).read_until(b'\n', &mut head)?;
        if n == 0 {
            return if head.iter().all(|b| b.is_ascii_whitespace()) {
                Ok(None)
            } else {
                Err(HeadError::Malformed(
                    "connection closed inside the head".into(),
                ))
            };
        }
        if head.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        // Empty lines before the request line are ignored (RFC 9112 §2.2).
        if head == b"\r\n" || head == b"\n" {
            head.clear();
            continue;
        }
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            break;
        }
    }
    let mut hbuf = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut hbuf);
    match req.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(HeadError::Malformed("incomplete head".into()));
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    }
    let headers = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect();
    Ok(Some(Request {
        method: req.method.unwrap_or_default().to_string(),
        target: req.path.unwrap_or_default().to_string(),
        minor_version: req.version.unwrap_or(1),
        headers,
    }))
}

/// Why a request body is not read: the server answers with
/// [`status`](BodyError::status) and the message, then closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("chunked request bodies are not accepted: send Content-Length")]
    Chunked,
    #[error("Content-Length required")]
    NoLength,
    #[error("bad Content-Length {0:?}")]
    BadLength(String),
    #[error("body of {len} bytes is larger than {max} bytes")]
    TooLarge { len: u64, max: usize },
}

impl BodyError {
    /// 411 without a length, 413 over the limit, 400 for a bad length.
    pub fn status(&self) -> u16 {
        match self {
            BodyError::Chunked | BodyError::NoLength => 411,
            BodyError::BadLength(_) => 400,
            BodyError::TooLarge { .. } => 413,
        }
    }
}

/// The length of a request body that must come with `Content-Length` and
/// be at most `max` bytes. Any `Transfer-Encoding` is refused; several
/// `Content-Length` fields (or a list) must all carry the same number
/// (RFC 9112 §6.3).
pub fn body_length(req: &Request, max: usize) -> Result<usize, BodyError> {
    if req.header("transfer-encoding").is_some() {
        return Err(BodyError::Chunked);
    }
    let mut len: Option<u64> = None;
    for v in req
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .flat_map(|(_, v)| v.split(','))
    {
        let v = v.trim();
        let bad = || BodyError::BadLength(v.chars().take(40).collect());
        if v.is_empty() || !v.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let n = v.parse::<u64>().unwrap_or(u64::MAX);
        if len.is_some_and(|l| l != n) {
            return Err(bad());
        }
        len = Some(n);
    }
    let len = len.ok_or(BodyError::NoLength)?;
    match usize::try_from(len) {
        Ok(n) if n <= max => Ok(n),
        _ => Err(BodyError::TooLarge { len, max }),
    }
}

/// The outcome of a `Range` header against a representation of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeReq {
    /// No usable range: send the whole file with 200.
    Full,
    /// One inclusive byte range: 206.
    Partial(u64, u64),
    /// 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Interpret `Range: bytes=a-b`, `bytes=a-` or `bytes=-n`.
///
/// Limits (all allowed by RFC 9110 §14.2, where a server may ignore Range):
/// several ranges (`bytes=0-1,5-6`) get the whole file with 200 rather than
/// a multipart body; a syntactically invalid header (other unit, `b < a`,
/// not numbers) is ignored, also giving 200.
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
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    let last = size.checked_sub(1);
    if a.is_empty() {
        // Suffix: the last n bytes.
        if !digits(b) {
            return RangeReq::Full;
        }
        return match (b.parse::<u64>(), last) {
            (Ok(0), _) | (_, None) => RangeReq::Unsatisfiable,
            (Ok(n), Some(last)) => RangeReq::Partial(size.saturating_sub(n), last),
            // More digits than u64: the whole file.
            (Err(_), Some(last)) => RangeReq::Partial(0, last),
        };
    }
    if !digits(a) || !(b.is_empty() || digits(b)) {
        return RangeReq::Full;
    }
    let Ok(start) = a.parse::<u64>() else {
        // A first byte beyond u64 is beyond any file.
        return RangeReq::Unsatisfiable;
    };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        b.parse::<u64>().unwrap_or(u64::MAX)
    };
    if end < start {
        return RangeReq::Full;
    }
    match last {
        Some(last) if start <= last => RangeReq::Partial(start, end.min(last)),
        _ => RangeReq::Unsatisfiable,
    }
}

/// Percent-decode a URL path. `None` for a malformed escape or a NUL byte
/// (raw or `%00`): such paths are answered with 404.
pub fn percent_decode(p: &str) -> Option<Vec<u8>> {
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    (!out.contains(&0)).then_some(out)
}

/// Whether an `If-None-Match` value matches `etag` (weak comparison, RFC
/// 9110 §13.1.2: `W/` prefixes are ignored; `*` matches any file).
pub fn none_match(header: &str, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let etag = strip(etag);
    header.split(',').any(|t| {
        let t = t.trim();
        t == "*" || strip(t) == etag
    })
}

/// Whether an `If-Range` value still designates this representation: the
/// same strong ETag, or exactly the Last-Modified date we send.
pub fn if_range_matches(header: &str, etag: &str, last_modified: &str) -> bool {
    let h = header.trim();
    if h.starts_with('"') || h.starts_with("W/") {
        h == etag // strong comparison: a weak tag never matches
    } else {
        h == last_modified
    }
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110 §5.6.7).
/// Times before 1970 are clamped to the epoch.
pub fn http_date(t: SystemTime) -> String {
    let c = Civil::of(t);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(c.days % 7) as usize];
    let mn = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(c.month - 1) as usize];
    format!(
        "{wd}, {:02} {mn} {} {:02}:{:02}:{:02} GMT",
        c.day, c.year, c.hour, c.min, c.sec
    )
}

/// An RFC 3339 UTC time with milliseconds (`1994-11-06T08:49:37.000Z`), as
/// the status JSON and page show them. Times before 1970 are clamped to the
/// epoch.
pub fn rfc3339(t: SystemTime) -> String {
    let c = Civil::of(t);
    format!(
        "{}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year, c.month, c.day, c.hour, c.min, c.sec, c.millis
    )
}

/// A UTC calendar date and time of day.
struct Civil {
    /// Days since 1970-01-01.
    days: u64,
    year: i64,
    month: i64,
    day: i64,
    hour: u64,
    min: u64,
    sec: u64,
    millis: u32,
}

impl Civil {
    fn of(t: SystemTime) -> Civil {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let days = secs / 86400;
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        Civil {
            days,
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: (secs % 86400) / 3600,
            min: (secs % 3600) / 60,
            sec: secs % 60,
            millis: since.subsec_millis(),
        }
    }
}

/// The reason phrase bootd sends with a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// Write a status line, `Server`, `Date`, the given headers and the blank
/// line, in one write.
pub fn write_head<W: Write>(
    w: &mut W,
    status: u16,
    headers: &[(&str, String)],
) -> std::io::Result<()> {
    let mut s = format!(
        "HTTP/1.1 {status} {}\r\nServer: bootd\r\nDate: {}\r\n",
        reason(status),
        http_date(SystemTime::now())
    );
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
    use std::time::Duration;

    #[test]
    fn ranges() {
        use RangeReq::*;
        let rows: &[(Option<&str>, u64, RangeReq)] = &[
            (None, 100, Full),
            (Some("bytes=0-9"), 100, Partial(0, 9)),
            (Some("bytes=0-0"), 100, Partial(0, 0)),
            (Some("bytes=90-"), 100, Partial(90, 99)),
            (Some("bytes=99-"), 100, Partial(99, 99)),
            (Some("bytes=-10"), 100, Partial(90, 99)),
            (Some("bytes=-1000"), 100, Partial(0, 99)),
            (Some("bytes=50-1000"), 100, Partial(50, 99)),
            (Some(" bytes= 5 - 6 "), 100, Partial(5, 6)),
            (Some("bytes=0-99999999999999999999999"), 100, Partial(0, 99)),
            (Some("bytes=-99999999999999999999999"), 100, Partial(0, 99)),
            (Some("bytes=100-"), 100, Unsatisfiable),
            (Some("bytes=100-200"), 100, Unsatisfiable),
            (Some("bytes=99999999999999999999999-"), 100, Unsatisfiable),
            (Some("bytes=-0"), 100, Unsatisfiable),
            (Some("bytes=0-"), 0, Unsatisfiable),
            (Some("bytes=-5"), 0, Unsatisfiable),
            // Ignored: the whole file.
            (Some("bytes=0-1,5-6"), 100, Full),
            (Some("bytes=9-3"), 100, Full),
            (Some("items=0-3"), 100, Full),
            (Some("bytes=x-3"), 100, Full),
            (Some("bytes=+1-3"), 100, Full),
            (Some("bytes=-"), 100, Full),
            (Some("bytes=5"), 100, Full),
        ];
        for (h, size, want) in rows {
            assert_eq!(parse_range(*h, *size), *want, "{h:?} of {size}");
        }
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("/a%20b"), Some(b"/a b".to_vec()));
        assert_eq!(percent_decode("/%2e%2E/x"), Some(b"/../x".to_vec()));
        assert_eq!(percent_decode("/a%2Fb"), Some(b"/a/b".to_vec()));
        assert_eq!(percent_decode("/%ff"), Some(vec![b'/', 0xff]));
        assert_eq!(percent_decode("/a%00"), None);
        assert_eq!(percent_decode("/a%zz"), None);
        assert_eq!(percent_decode("/a%+1"), None);
        assert_eq!(percent_decode("/a%2"), None);
        assert_eq!(percent_decode("/a%"), None);
    }

    #[test]
    fn request_head() {
        let raw = b"GET /x?y=1 HTTP/1.1\r\nHost: a\r\nRange:  bytes=1-2 \r\n\r\n";
        let r = read_request(&mut &raw[..]).unwrap().unwrap();
        assert_eq!(
            (r.method.as_str(), r.path(), r.keep_alive()),
            ("GET", Some("/x"), true)
        );
        assert_eq!(r.header("range"), Some("bytes=1-2"));
        assert!(!r.has_body());

        let r = |raw: &[u8]| read_request(&mut &raw[..]).unwrap().unwrap();
        assert!(!r(b"GET /x HTTP/1.0\r\n\r\n").keep_alive());
        assert!(r(b"GET /x HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive());
        assert!(!r(b"GET /x HTTP/1.1\r\nConnection: foo, close\r\n\r\n").keep_alive());
        assert!(r(b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\n").has_body());
        assert!(r(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").has_body());
        // Smuggling: a second (or listed) length is a body all the same.
        assert!(
            r(b"GET /x HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\n").has_body()
        );
        assert!(r(b"GET /x HTTP/1.1\r\nContent-Length: 0, 40\r\n\r\n").has_body());
        assert!(
            !r(b"GET /x HTTP/1.1\r\nContent-Length: 0\r\ncontent-length: 0\r\n\r\n").has_body()
        );
        assert_eq!(r(b"\r\nGET /x HTTP/1.1\r\n\r\n").path(), Some("/x"));
        assert_eq!(
            r(b"GET http://h:1/a/b?q HTTP/1.1\r\n\r\n").path(),
            Some("/a/b")
        );
        assert_eq!(r(b"GET http://h:1 HTTP/1.1\r\n\r\n").path(), None);
        assert_eq!(r(b"OPTIONS * HTTP/1.1\r\n\r\n").path(), None);

        assert!(read_request(&mut &b""[..]).unwrap().is_none());
        assert!(read_request(&mut &b"\r\n"[..]).unwrap().is_none());
        assert!(matches!(
            read_request(&mut &b"garbage\r\n\r\n"[..]),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            read_request(&mut &b"GET /x HTTP/1.1\r\nHost: a\r\n"[..]),
            Err(HeadError::Malformed(_))
        ));
    }

    #[test]
    fn pipelined_requests_are_read_one_at_a_time() {
        let raw = b"GET /a HTTP/1.1\r\n\r\nHEAD /b HTTP/1.1\r\n\r\n";
        let mut rd = &raw[..];
        assert_eq!(read_request(&mut rd).unwrap().unwrap().target, "/a");
        let r = read_request(&mut rd).unwrap().unwrap();
        assert_eq!((r.method.as_str(), r.target.as_str()), ("HEAD", "/b"));
        assert!(read_request(&mut rd).unwrap().is_none());
    }

    #[test]
    fn head_size_is_bounded() {
        // One endless line: refused without buffering it all.
        let endless = std::io::repeat(b'a');
        let mut rd = std::io::BufReader::new(endless);
        assert!(matches!(read_request(&mut rd), Err(HeadError::TooLarge)));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..100 {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(
            read_request(&mut &many[..]),
            Err(HeadError::TooLarge)
        ));
    }

    #[test]
    fn validators() {
        let tag = "\"186a0-1\"";
        assert!(none_match(tag, tag));
        assert!(none_match("\"x\", W/\"186a0-1\"", tag));
        assert!(none_match("*", tag));
        assert!(!none_match("\"186a0-2\"", tag));
        let lm = "Thu, 01 Jan 1970 00:00:00 GMT";
        assert!(if_range_matches(tag, tag, lm));
        assert!(if_range_matches(lm, tag, lm));
        assert!(!if_range_matches("W/\"186a0-1\"", tag, lm));
        assert!(!if_range_matches("\"other\"", tag, lm));
        assert!(!if_range_matches("Fri, 02 Jan 1970 00:00:00 GMT", tag, lm));
    }

    #[test]
    fn body_lengths() {
        let len = |raw: &[u8]| {
            let r = read_request(&mut &raw[..]).unwrap().unwrap();
            body_length(&r, 100)
        };
        assert_eq!(
            len(b"POST /s HTTP/1.1\r\nContent-Length: 12\r\n\r\n"),
            Ok(12)
        );
        assert_eq!(len(b"POST /s HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), Ok(0));
        assert_eq!(
            len(b"POST /s HTTP/1.1\r\nContent-Length: 100\r\n\r\n"),
            Ok(100)
        );
        assert_eq!(
            len(b"POST /s HTTP/1.1\r\ncontent-length: 7\r\nContent-Length: 7, 7\r\n\r\n"),
            Ok(7)
        );
        assert_eq!(len(b"POST /s HTTP/1.1\r\n\r\n"), Err(BodyError::NoLength));
        assert_eq!(
            len(b"POST /s HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
            Err(BodyError::Chunked)
        );
        assert_eq!(
            len(b"POST /s HTTP/1.1\r\nContent-Length: 101\r\n\r\n"),
            Err(BodyError::TooLarge { len: 101, max: 100 })
        );
        assert_eq!(
            len(b"POST /s HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n")
                .map_err(|e| e.status()),
            Err(413)
        );
        for bad in ["-1", "+3", "0x10", "1 2", "abc"] {
            let raw = format!("POST /s HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
            let e = len(raw.as_bytes()).unwrap_err();
            assert_eq!(
                (e.status(), matches!(e, BodyError::BadLength(_))),
                (400, true),
                "{bad}"
            );
        }
        let e = len(b"POST /s HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n");
        assert_eq!(e, Err(BodyError::BadLength("4".into())));
    }

    #[test]
    fn rfc3339_dates() {
        let at = |ms| rfc3339(UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(784_111_777_000), "1994-11-06T08:49:37.000Z");
        assert_eq!(at(951_825_600_042), "2000-02-29T12:00:00.042Z");
        assert_eq!(at(1_700_000_000_999), "2023-11-14T22:13:20.999Z");
        assert_eq!(at(4_102_444_799_000), "2099-12-31T23:59:59.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn dates() {
        let at = |s| http_date(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(at(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(at(951_825_600), "Tue, 29 Feb 2000 12:00:00 GMT");
        assert_eq!(at(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(
            http_date(UNIX_EPOCH - Duration::from_secs(5)),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
    }
}
