//! Whether the site's directory answers sssd: after `sssd` starts,
//! `nodectl start-services` asks each LDAP server of sssd.conf what sssd
//! will ask it — a TCP connection, TLS with the node's trust store (for
//! `ldaps://`), a simple bind as `ldap_default_bind_dn` — and fails the
//! boot with what went wrong, naming the server. sssd itself starts
//! "offline" when its server is unreachable or untrusted, and the node
//! would join Slurm with no users: jobs then fail one by one with
//! "Invalid user".
//!
//! sssd.conf is read with its `conf.d/*.conf` snippets (in name order,
//! later values win, as sssd merges them). The LDAP reply is read through a
//! bounded parser ([`bind_result`], fuzzed): at most [`MAX_REPLY`] bytes.
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest bind reply read.
pub const MAX_REPLY: usize = 64 * 1024;
/// The largest sssd.conf (or snippet) read.
const MAX_CONF: u64 = 1 << 20;

/// An sssd domain whose identities come from LDAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub name: String,
    /// `ldap_uri`, in failover order.
    pub uris: Vec<String>,
    pub bind_dn: Option<String>,
    pub authtok: Option<String>,
    /// `ldap_tls_cacert`, else the system trust store.
    pub cacert: Option<PathBuf>,
    /// `ldap_tls_cipher_suite`, `ldap_tls_reqcert`: what sssd hands libldap.
    pub cipher_suite: Option<String>,
    pub reqcert: Option<String>,
}

type Ini = BTreeMap<String, BTreeMap<String, String>>;

fn parse_ini(text: &str, into: &mut Ini) {
    let mut section = String::new();
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.trim().to_string();
            continue;
        }
        if let Some((k, v)) = l.split_once('=') {
            into.entry(section.clone())
                .or_default()
                .insert(k.trim().to_lowercase(), v.trim().to_string());
        }
    }
}

fn read_bounded(p: &Path) -> Result<String> {
    let mut s = String::new();
    std::fs::File::open(p)
        .with_context(|| format!("reading {}", p.display()))?
        .take(MAX_CONF)
        .read_to_string(&mut s)
        .with_context(|| format!("reading {}", p.display()))?;
    Ok(s)
}

/// The LDAP domains of `sssd_conf` (and its `conf.d/*.conf`) that sssd
/// would use: those listed in `[sssd] domains` with `id_provider = ldap`.
pub fn domains(sssd_conf: &Path) -> Result<Vec<Domain>> {
    let mut ini = Ini::new();
    if !sssd_conf.exists() {
        return Ok(Vec::new()); // sssd runs its defaults: no LDAP domain
    }
    parse_ini(&read_bounded(sssd_conf)?, &mut ini);
    if let Some(dir) = sssd_conf.parent().map(|d| d.join("conf.d")) {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            let mut snippets: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "conf"))
                .collect();
            snippets.sort();
            for s in snippets {
                parse_ini(&read_bounded(&s)?, &mut ini);
            }
        }
    }
    Ok(from_ini(&ini))
}

/// The LDAP domains of sssd.conf's text and its snippets' (in order).
pub fn domains_in(texts: &[&str]) -> Vec<Domain> {
    let mut ini = Ini::new();
    for t in texts {
        parse_ini(t, &mut ini);
    }
    from_ini(&ini)
}

fn from_ini(ini: &Ini) -> Vec<Domain> {
    let listed = ini
        .get("sssd")
        .and_then(|s| s.get("domains"))
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for name in listed.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let Some(d) = ini.get(&format!("domain/{name}")) else {
            continue;
        };
        if d.get("id_provider").map(String::as_str) != Some("ldap") {
            continue;
        }
        let uris: Vec<String> = d
            .get("ldap_uri")
            .map(|u| {
                u.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        out.push(Domain {
            name: name.to_string(),
            uris,
            bind_dn: d.get("ldap_default_bind_dn").cloned(),
            authtok: d.get("ldap_default_authtok").cloned(),
            cacert: d.get("ldap_tls_cacert").map(PathBuf::from),
            cipher_suite: d.get("ldap_tls_cipher_suite").cloned(),
            reqcert: d.get("ldap_tls_reqcert").cloned(),
        });
    }
    out
}

/// (TLS, host, port) of an `ldap://` or `ldaps://` URI.
fn endpoint(uri: &str) -> Result<(bool, String, u16)> {
    let (tls, rest) = if let Some(r) = uri.strip_prefix("ldaps://") {
        (true, r)
    } else if let Some(r) = uri.strip_prefix("ldap://") {
        (false, r)
    } else {
        bail!("{uri}: not an ldap:// or ldaps:// URI");
    };
    let hostport = rest.split('/').next().unwrap_or_default();
    let default = if tls { 636 } else { 389 };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => match p.parse() {
            Ok(p) => (h, p),
            Err(_) => (hostport, default),
        },
        _ => (hostport, default),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        bail!("{uri}: no host");
    }
    Ok((tls, host.to_string(), port))
}

/// A BER length.
fn ber_len(n: usize, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn tlv(tag: u8, body: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    ber_len(body.len(), out);
    out.extend_from_slice(body);
}

/// LDAPv3 simple BindRequest, message id 1 (RFC 4511 4.2).
pub fn bind_request(dn: &str, password: &str) -> Vec<u8> {
    let mut op = Vec::new();
    tlv(0x02, &[3], &mut op);
    tlv(0x04, dn.as_bytes(), &mut op);
    tlv(0x80, password.as_bytes(), &mut op);
    let mut msg = Vec::new();
    tlv(0x02, &[1], &mut msg);
    tlv(0x60, &op, &mut msg);
    let mut out = Vec::new();
    tlv(0x30, &msg, &mut out);
    out
}

/// A BER element: (tag, body, rest).
fn element(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        (len, &rest[n..])
    };
    if len > rest.len() {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// How many bytes the first BER element of `b` takes, when its header is
/// complete (`None`: read more).
pub fn element_len(b: &[u8]) -> Option<usize> {
    let first = *b.get(1)?;
    if first < 0x80 {
        return Some(2 + first as usize);
    }
    let n = (first & 0x7f) as usize;
    if n == 0 || n > 4 {
        return Some(usize::MAX);
    }
    let bytes = b.get(2..2 + n)?;
    let len = bytes.iter().fold(0usize, |a, b| (a << 8) | *b as usize);
    Some(2 + n + len)
}

/// The result code and diagnostic message of a BindResponse (RFC 4511
/// 4.2.2) for message 1; `None` when `b` is not one.
pub fn bind_result(b: &[u8]) -> Option<(u32, String)> {
    let (tag, msg, _) = element(b)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, id, rest) = element(msg)?;
    if tag != 0x02 || id != [1] {
        return None;
    }
    let (tag, op, _) = element(rest)?;
    if tag != 0x61 {
        return None;
    }
    let (tag, code, rest) = element(op)?;
    if tag != 0x0a || code.is_empty() || code.len() > 4 {
        return None;
    }
    let code = code.iter().fold(0u32, |a, b| (a << 8) | *b as u32);
    let (_, _matched, rest) = element(rest)?;
    let diag = element(rest)
        .filter(|(t, _, _)| *t == 0x04)
        .map(|(_, d, _)| String::from_utf8_lossy(d).chars().take(200).collect())
        .unwrap_or_default();
    Some((code, diag))
}

/// RFC 4511's names of the result codes a bind may get.
fn result_name(code: u32) -> &'static str {
    match code {
        0 => "success",
        1 => "operationsError",
        2 => "protocolError",
        7 => "authMethodNotSupported",
        8 => "strongerAuthRequired",
        13 => "confidentialityRequired",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        _ => "other",
    }
}

/// The roots of `ca` (a PEM bundle).
fn roots(ca: &Path) -> Result<rustls::RootCertStore> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut store = rustls::RootCertStore::empty();
    let iter = CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("reading the trust store {}", ca.display()))?;
    for c in iter {
        let c = c.with_context(|| format!("reading the trust store {}", ca.display()))?;
        // A certificate rustls cannot use as a root is skipped, as GnuTLS would.
        let _ = store.add(c);
    }
    if store.is_empty() {
        bail!("the trust store {} holds no certificate", ca.display());
    }
    Ok(store)
}

/// Bind to `uri` as `d` says, within `timeout`.
fn try_server(d: &Domain, uri: &str, ca: &Path, timeout: Duration) -> Result<()> {
    let (tls, host, port) = endpoint(uri)?;
    let addrs: Vec<_> = (host.as_str(), port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .collect();
    let mut last = None;
    let mut tcp = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = Some(format!("connecting to {a}: {e}")),
        }
    }
    let Some(tcp) = tcp else {
        bail!(last.unwrap_or_else(|| format!("{host} has no address")));
    };
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let req = bind_request(
        d.bind_dn.as_deref().unwrap_or_default(),
        d.authtok.as_deref().unwrap_or_default(),
    );
    let reply = if tls {
        let store = roots(ca)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS settings")?
            .with_root_certificates(store)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .with_context(|| format!("{host}: not a TLS server name"))?;
        let conn = rustls::ClientConnection::new(Arc::new(config), name).context("TLS")?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        while s.conn.is_handshaking() {
            if let Err(e) = s.conn.complete_io(&mut s.sock) {
                let why = e
                    .get_ref()
                    .and_then(|i| i.downcast_ref::<rustls::Error>())
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| e.to_string());
                let hint = if why.contains("certificate") {
                    format!(
                        "; the node trusts the CAs of {} (the site CA goes in node.toml [[ca]], or sssd's ldap_tls_cacert)",
                        ca.display()
                    )
                } else {
                    String::new()
                };
                bail!("TLS with {host}:{port}: {why}{hint}");
            }
        }
        exchange(&mut s, &req)?
    } else {
        let mut s = tcp;
        exchange(&mut s, &req)?
    };
    let Some((code, diag)) = bind_result(&reply) else {
        bail!("{host}:{port} did not answer the bind as an LDAP server would");
    };
    if code != 0 {
        let who = d.bind_dn.as_deref().unwrap_or("anonymous");
        let hint = if code == 49 {
            ": check ldap_default_bind_dn and ldap_default_authtok"
        } else {
            ""
        };
        bail!(
            "bind as {who:?} refused: {} (LDAP result {code}){}{hint}",
            result_name(code),
            if diag.is_empty() {
                String::new()
            } else {
                format!(", {diag:?}")
            }
        );
    }
    Ok(())
}

/// Send `req`, read one BER element back (at most [`MAX_REPLY`] bytes).
fn exchange(s: &mut (impl Read + Write), req: &[u8]) -> Result<Vec<u8>> {
    s.write_all(req).context("sending the bind")?;
    s.flush().context("sending the bind")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(n) = element_len(&buf) {
            if n > MAX_REPLY {
                bail!("the bind reply is larger than {MAX_REPLY} bytes");
            }
            if buf.len() >= n {
                return Ok(buf);
            }
        }
        let n = s.read(&mut chunk).context("reading the bind reply")?;
        if n == 0 {
            bail!("the server closed the connection before answering the bind");
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REPLY {
            bail!("the bind reply is larger than {MAX_REPLY} bytes");
        }
    }
}

/// The same bind through sssd's own LDAP library: `ldapwhoami` (libldap,
/// GnuTLS on Debian, OpenSSL on EL) with sssd's TLS settings, when the
/// image has it (`None`: it does not). Catches what only that library
/// refuses — e.g. `ldap_tls_cipher_suite = HIGH`, an OpenSSL cipher list
/// that GnuTLS cannot parse, which leaves sssd offline.
fn libldap_check(d: &Domain, uri: &str, tmp: &Path, timeout: Duration) -> Option<Result<()>> {
    let tool = ["/usr/bin/ldapwhoami", "/bin/ldapwhoami"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    Some(libldap_bind(d, uri, tool, tmp, timeout))
}

fn libldap_bind(d: &Domain, uri: &str, tool: &str, tmp: &Path, timeout: Duration) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let pwfile = tmp.join("ldap-check.pw");
    let _ = std::fs::remove_file(&pwfile);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&pwfile)
        .and_then(|mut f| f.write_all(d.authtok.as_deref().unwrap_or_default().as_bytes()))
        .with_context(|| format!("writing {}", pwfile.display()))?;
    let mut argv: Vec<String> = vec!["env".into()];
    let mut shown = Vec::new();
    for (var, val) in [
        // As sssd: its ldap_tls_cacert, else what libldap's ldap.conf says.
        (
            "LDAPTLS_CACERT",
            d.cacert.as_ref().map(|p| p.display().to_string()),
        ),
        ("LDAPTLS_CIPHER_SUITE", d.cipher_suite.clone()),
        ("LDAPTLS_REQCERT", d.reqcert.clone()),
    ] {
        if let Some(v) = val {
            shown.push(format!("{var}={v}"));
            argv.push(format!("{var}={v}"));
        }
    }
    argv.extend([tool.into(), "-x".into(), "-H".into(), uri.into()]);
    argv.extend([
        "-o".into(),
        format!("nettimeout={}", timeout.as_secs().max(1)),
    ]);
    if let Some(dn) = &d.bind_dn {
        argv.extend([
            "-D".into(),
            dn.clone(),
            "-y".into(),
            pwfile.display().to_string(),
        ]);
    }
    let r = crate::cmd::run_bounded(&argv, timeout + Duration::from_secs(5));
    let _ = std::fs::remove_file(&pwfile);
    let (st, tail) = r?;
    if !st.success() {
        let settings = if shown.is_empty() {
            String::new()
        } else {
            format!(" with sssd's {}", shown.join(" "))
        };
        let mut hint = String::new();
        if d.cipher_suite.is_some() {
            hint.push_str(
                "; ldap_tls_cipher_suite must be in the syntax of the node's TLS library \
                 (GnuTLS on Debian: NORMAL, SECURE128; OpenSSL on EL: HIGH)",
            );
        }
        if d.cacert.is_none() {
            hint.push_str(
                "; without ldap_tls_cacert, libldap trusts what TLS_CACERT in its ldap.conf names \
                 (Debian: /etc/ldap/ldap.conf from libldap-common, the system bundle) and nothing \
                 when there is none",
            );
        }
        bail!(
            "nodectl's own TLS and bind succeeded, but sssd's LDAP library \
             (ldapwhoami{settings}) fails: {}{hint}",
            tail.join(" | ")
        );
    }
    Ok(())
}

/// Check `d` until one of its servers takes the bind or `bound` passes
/// (trying again every 2 s: a server may come up after the node). `ca` is
/// the system trust store, used when the domain names no `ldap_tls_cacert`.
/// After nodectl's own bind, the same through libldap (`ldapwhoami`, when
/// the image has it), its password in a 0600 file under `tmp`.
pub fn check(d: &Domain, ca: &Path, tmp: &Path, bound: Duration) -> Result<()> {
    if d.uris.is_empty() {
        bail!("sssd domain {}: no ldap_uri", d.name);
    }
    let ca = d.cacert.as_deref().unwrap_or(ca);
    let t = Instant::now();
    loop {
        let mut errors = Vec::new();
        for uri in &d.uris {
            let left = bound
                .saturating_sub(t.elapsed())
                .max(Duration::from_secs(1));
            let each = left.min(Duration::from_secs(10));
            let r = try_server(d, uri, ca, each)
                .and_then(|()| libldap_check(d, uri, tmp, each).unwrap_or(Ok(())));
            match r {
                Ok(()) => {
                    tracing::info!(domain = %d.name, "LDAP server {uri} takes sssd's bind");
                    return Ok(());
                }
                Err(e) => errors.push(format!("{uri}: {e:#}")),
            }
        }
        if t.elapsed() + Duration::from_secs(2) >= bound {
            bail!(
                "sssd domain {}: no LDAP server answered within {}s: {}",
                d.name,
                bound.as_secs(),
                errors.join("; ")
            );
        }
        tracing::warn!(domain = %d.name, "{}; retrying in 2s", errors.join("; "));
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_merge_snippets_and_skip_others() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("conf.d")).unwrap();
        std::fs::write(
            d.path().join("sssd.conf"),
            "[sssd]\ndomains = site, local\n[domain/site]\nid_provider = ldap\n\
             ldap_uri = ldaps://a.example, ldap://b.example:3389\n\
             ldap_default_bind_dn = cn=Directory Manager\n# ldap_default_authtok = no\n\
             [domain/local]\nid_provider = files\n[domain/unlisted]\nid_provider = ldap\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("conf.d/50-bind.conf"),
            "[domain/site]\nldap_default_authtok = s3cret=x\n",
        )
        .unwrap();
        let got = domains(&d.path().join("sssd.conf")).unwrap();
        assert_eq!(
            got,
            vec![Domain {
                name: "site".into(),
                uris: vec!["ldaps://a.example".into(), "ldap://b.example:3389".into()],
                bind_dn: Some("cn=Directory Manager".into()),
                authtok: Some("s3cret=x".into()),
                cacert: None,
                cipher_suite: None,
                reqcert: None,
            }]
        );
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint("ldaps://ldap.example.com").unwrap(),
            (true, "ldap.example.com".into(), 636)
        );
        assert_eq!(
            endpoint("ldap://10.0.2.2:3389/").unwrap(),
            (false, "10.0.2.2".into(), 3389)
        );
        assert_eq!(
            endpoint("ldaps://[::1]:6360").unwrap(),
            (true, "::1".into(), 6360)
        );
        assert_eq!(
            endpoint("https://x").unwrap_err().to_string(),
            "https://x: not an ldap:// or ldaps:// URI"
        );
    }

    #[test]
    fn bind_request_and_reply() {
        let r = bind_request("cn=Directory Manager", "pw");
        assert_eq!(
            r,
            [
                &[0x30, 0x22, 0x02, 0x01, 0x01, 0x60, 0x1d, 0x02, 0x01, 0x03, 0x04, 0x14][..],
                b"cn=Directory Manager",
                &[0x80, 0x02],
                b"pw"
            ]
            .concat()
        );
        // A long DN takes the long length form.
        let long = bind_request(&"x".repeat(300), "");
        assert_eq!(&long[..4], &[0x30, 0x82, 0x01, 0x3c]);
        assert_eq!(element_len(&long), Some(long.len()));
        // invalidCredentials, as slapd sends it.
        let reply = [
            0x30, 0x0c, 0x02, 0x01, 0x01, 0x61, 0x07, 0x0a, 0x01, 0x31, 0x04, 0x00, 0x04, 0x00,
        ];
        assert_eq!(bind_result(&reply), Some((49, String::new())));
        assert_eq!(element_len(&reply), Some(reply.len()));
        for bad in [
            &reply[..5],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff][..],
            &[][..],
            &[0x30][..],
        ] {
            assert_eq!(bind_result(bad), None, "{bad:?}");
        }
    }
}
