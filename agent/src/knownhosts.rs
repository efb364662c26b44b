//! The git server's host key checked against an admin's known_hosts, as
//! OpenSSH's client checks it: lines parsed by the `ssh-key` crate, matched
//! here (ssh-key parses, it does not match).
//!
//! - host patterns: `host`, `[host]:port` (the form for a port other than
//!   22), comma-separated lists, `*` and `?` wildcards, `!negation` (a line
//!   whose negated pattern matches does not apply), case-insensitive;
//! - hashed names (`|1|salt|hash`, `HashKnownHosts yes`, `ssh-keygen -H`):
//!   HMAC-SHA1 of the host (or `[host]:port`) keyed by the salt;
//! - `@cert-authority`: a host certificate the server presents is accepted
//!   when it is signed by such a key (the signature verified), is a host
//!   certificate, is valid now, names the host among its principals (or
//!   names none, as OpenSSH accepts) and has no critical option; otherwise
//!   its plain key is looked up like any key (OpenSSH does the same);
//! - `@revoked`: the key (a certificate's key, or the CA that signed it) is
//!   refused whatever else the file says.
//!
//! Lines that do not parse (an unknown key type, garbage) are skipped;
//! a line longer than 16 KiB too. Nothing here does I/O or panics on any
//! input (the fuzz target `known_hosts`).
use hmac013::{KeyInit, Mac};
use ssh_key::certificate::CertType;
use ssh_key::known_hosts::{Entry, HostPatterns, Marker};
use ssh_key::public::KeyData;
use ssh_key::{Certificate, HashAlg};

/// Longest known_hosts line considered (an RSA 16384-bit key is ~2.8 KiB).
const LINE_MAX: usize = 16 * 1024;

/// What a known_hosts file says of a server's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyVerdict {
    Known,
    Revoked,
    Unknown,
}

/// A check's verdict and what an operator needs to hear about it.
#[derive(Debug, Clone)]
pub struct Checked {
    pub verdict: HostKeyVerdict,
    /// The presented key's type (`ssh-ed25519`, or the certificate's
    /// `ssh-ed25519-cert-v01@openssh.com`).
    pub key_type: String,
    /// OpenSSH's `SHA256:…` fingerprint of the key (of a certificate's
    /// key: what `ssh-keygen -lf` of the host's `.pub` prints).
    pub fingerprint: String,
    /// Why a certificate was not accepted, when one was presented.
    pub note: Option<String>,
}

/// `host` as known_hosts names it: `host`, or `[host]:port` off port 22.
pub fn host_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// Check `blob` (the key or certificate the server presented, in SSH wire
/// form) for `host`:`port` against the text of a known_hosts file, at
/// `now` (seconds since 1970, for certificates).
pub fn check(text: &str, host: &str, port: u16, blob: &[u8], now: u64) -> Checked {
    let name = host_name(host, port);
    let presented = decode(blob);
    let (key, cert) = match &presented {
        Some(KeyData::Certificate(c)) => (Some(c.public_key().clone()), Some(c.as_ref())),
        Some(k) => (Some(k.clone()), None),
        None => (None, None),
    };
    let key_type = match (&presented, &cert) {
        (_, Some(c)) => c.algorithm().to_certificate_type(),
        (Some(k), None) => k.algorithm().as_str().to_string(),
        (None, None) => blob_type(blob),
    };
    let fingerprint = match &key {
        Some(k) => k.fingerprint(HashAlg::Sha256).to_string(),
        None => crate::repo::fingerprint(blob),
    };
    let mut out = Checked {
        verdict: HostKeyVerdict::Unknown,
        key_type,
        fingerprint,
        note: None,
    };
    let Some(key) = key else {
        return out;
    };
    let entries: Vec<Entry> = text
        .lines()
        .filter(|l| l.len() <= LINE_MAX)
        .filter_map(|l| {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                return None;
            }
            // ssh-key splits on single spaces; OpenSSH takes any blanks.
            l.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .parse::<Entry>()
                .ok()
        })
        .filter(|e| matches(e.host_patterns(), &name))
        .collect();
    let ca = cert.map(|c| c.signature_key());
    if entries.iter().any(|e| {
        e.marker() == Some(&Marker::Revoked)
            && (e.public_key().key_data() == &key || Some(e.public_key().key_data()) == ca)
    }) {
        out.verdict = HostKeyVerdict::Revoked;
        return out;
    }
    if let Some(c) = cert {
        let cas: Vec<&KeyData> = entries
            .iter()
            .filter(|e| e.marker() == Some(&Marker::CertAuthority))
            .map(|e| e.public_key().key_data())
            .collect();
        match certificate_problem(c, &cas, host, now) {
            None => {
                out.verdict = HostKeyVerdict::Known;
                return out;
            }
            Some(p) => out.note = Some(p),
        }
    }
    if entries
        .iter()
        .any(|e| e.marker().is_none() && e.public_key().key_data() == &key)
    {
        out.verdict = HostKeyVerdict::Known;
    }
    out
}

/// Why `cert` is not a valid host certificate for `host` from one of `cas`
/// at `now`; `None` when it is.
fn certificate_problem(
    cert: &Certificate,
    cas: &[&KeyData],
    host: &str,
    now: u64,
) -> Option<String> {
    let signer = cert.signature_key();
    let signer_fp = signer.fingerprint(HashAlg::Sha256);
    if !cas.contains(&signer) {
        return Some(format!(
            "its host certificate is signed by the CA {signer_fp}, which no @cert-authority line for this host names"
        ));
    }
    if cert.cert_type() != CertType::Host {
        return Some("its certificate is not a host certificate".into());
    }
    if let Err(e) = cert.validate_at(now, [&signer_fp]) {
        let (after, before) = (cert.valid_after(), cert.valid_before());
        return Some(if now < after || now >= before {
            format!(
                "its host certificate (signed by the CA {signer_fp}) is not valid now \
                 (valid from {after} to {before}, now {now}, seconds since 1970)"
            )
        } else {
            format!("its host certificate does not verify with the CA {signer_fp}: {e}")
        });
    }
    let host = host.to_ascii_lowercase();
    let principals = cert.valid_principals();
    if !principals.is_empty() && !principals.iter().any(|p| p.to_ascii_lowercase() == host) {
        return Some(format!(
            "its host certificate names {} but not {host}",
            principals.join(", ")
        ));
    }
    if !cert.critical_options().is_empty() {
        return Some(
            "its host certificate has critical options (none is defined for hosts)".into(),
        );
    }
    None
}

/// The key (or certificate) of an SSH wire-form blob.
fn decode(blob: &[u8]) -> Option<KeyData> {
    use ssh_key::encoding::{Decode, Reader};
    let mut r = blob;
    let k = KeyData::decode(&mut r).ok()?;
    r.finish(k).ok()
}

/// The key type named inside an SSH key blob, for a blob that does not decode.
fn blob_type(blob: &[u8]) -> String {
    if blob.len() >= 4 {
        let n = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
        if let Some(t) = blob.get(4..4usize.saturating_add(n)) {
            return String::from_utf8_lossy(t).into_owned();
        }
    }
    "unknown".into()
}

/// Does a line's host field apply to `name` (`host` or `[host]:port`)?
fn matches(patterns: &HostPatterns, name: &str) -> bool {
    match patterns {
        HostPatterns::HashedName { salt, hash } => {
            let Ok(mut mac) = hmac013::Hmac::<sha1::Sha1>::new_from_slice(salt) else {
                return false;
            };
            mac.update(name.as_bytes());
            mac.verify_slice(hash).is_ok()
        }
        HostPatterns::Patterns(list) => {
            let mut hit = false;
            for p in list {
                let p = p.to_ascii_lowercase();
                match p.strip_prefix('!') {
                    Some(neg) if glob(neg.as_bytes(), name.as_bytes()) => return false,
                    Some(_) => {}
                    None => hit |= glob(p.as_bytes(), name.as_bytes()),
                }
            }
            hit
        }
    }
}

/// OpenSSH's `match_pattern`: `*` any run, `?` one character (iterative,
/// no backtracking blow-up: O(pattern × name)).
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi.min(p.len())..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::{Command, Stdio};

    fn ok(dir: &Path, args: &[&str]) -> String {
        let o = Command::new(args[0])
            .args(&args[1..])
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `ssh-keygen -t ed25519` in `dir`: the public line "type base64 comment".
    fn keygen(dir: &Path, name: &str) -> String {
        ok(
            dir,
            &[
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                name,
                "-f",
                name,
            ],
        );
        std::fs::read_to_string(dir.join(format!("{name}.pub"))).unwrap()
    }

    /// The wire-form blob of an OpenSSH public key or certificate line.
    fn blob(line: &str) -> Vec<u8> {
        use ssh_key::encoding::Encode;
        let t = line.split_whitespace().next().unwrap();
        if t.contains("-cert-v01@") {
            Certificate::from_openssh(line.trim())
                .unwrap()
                .to_bytes()
                .unwrap()
        } else {
            let k: ssh_key::PublicKey = line.trim().parse().unwrap();
            let mut v = Vec::new();
            k.key_data().encode(&mut v).unwrap();
            v
        }
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn globs_like_openssh() {
        for (p, s, want) in [
            ("*.example.org", "git.example.org", true),
            ("*.example.org", "example.org", false),
            ("git?.example.org", "git1.example.org", true),
            ("git?.example.org", "git12.example.org", false),
            ("[*.example.org]:2222", "[git.example.org]:2222", true),
            ("[*.example.org]:2222", "[git.example.org]:22", false),
            ("*", "anything", true),
            ("10.0.*.*", "10.0.2.2", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("", "", true),
            ("**", "", true),
        ] {
            assert_eq!(glob(p.as_bytes(), s.as_bytes()), want, "{p} vs {s}");
        }
        // Long hostile inputs stay fast.
        let p = "*a".repeat(500);
        let s = "b".repeat(10_000);
        assert!(!glob(p.as_bytes(), s.as_bytes()));
    }

    #[test]
    fn plain_wildcard_negated_and_hashed_entries() {
        let d = tempfile::tempdir().unwrap();
        let host = keygen(d.path(), "host");
        let other = keygen(d.path(), "other");
        let b = blob(&host);
        let k = host
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let o = other
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let verdict = |text: &str, h: &str, port: u16| check(text, h, port, &b, now()).verdict;
        use HostKeyVerdict::*;
        // Plain, with a port, a list, tabs and extra blanks.
        assert_eq!(
            verdict(
                &format!("[127.0.0.1]:2222,gitsrv\t{k}  c\n"),
                "127.0.0.1",
                2222
            ),
            Known
        );
        assert_eq!(
            verdict(&format!("[127.0.0.1]:2222,gitsrv {k}\n"), "127.0.0.1", 22),
            Unknown
        );
        assert_eq!(
            verdict(&format!("[127.0.0.1]:2222,gitsrv {k}\n"), "GITSRV", 22),
            Known
        );
        // Another key for the host: unknown.
        assert_eq!(verdict(&format!("gitsrv {o}\n"), "gitsrv", 22), Unknown);
        // Wildcards and negation.
        let w = format!("*.example.org,!evil.example.org {k}\n");
        assert_eq!(verdict(&w, "git.example.org", 22), Known);
        assert_eq!(verdict(&w, "evil.example.org", 22), Unknown);
        assert_eq!(verdict(&w, "git.example.com", 22), Unknown);
        // Garbage lines and unknown key types around it are skipped.
        let noisy = format!("garbage\n@bogus x {k}\nhost ssh-foo AAAA\n|1|bad|bad {k}\n{w}");
        assert_eq!(verdict(&noisy, "git.example.org", 22), Known);
        // @revoked wins over a plain entry.
        let rev = format!("{w}@revoked *.example.org {k}\n");
        assert_eq!(verdict(&rev, "git.example.org", 22), Revoked);

        // Hashed by the real ssh-keygen -H (the default of an admin's file).
        let kh = d.path().join("known_hosts");
        std::fs::write(
            &kh,
            format!("git.example.org {k}\n[10.0.2.2]:2222 {k}\nother.example.org {o}\n"),
        )
        .unwrap();
        ok(d.path(), &["ssh-keygen", "-H", "-f", "known_hosts"]);
        let hashed = std::fs::read_to_string(&kh).unwrap();
        assert!(hashed.lines().all(|l| l.starts_with("|1|")), "{hashed}");
        assert_eq!(verdict(&hashed, "git.example.org", 22), Known);
        assert_eq!(verdict(&hashed, "10.0.2.2", 2222), Known);
        assert_eq!(verdict(&hashed, "10.0.2.2", 22), Unknown);
        assert_eq!(verdict(&hashed, "other.example.org", 22), Unknown);
        assert_eq!(verdict(&hashed, "git.example.com", 22), Unknown);

        // What an error shows: the presented key as ssh-keygen -lf prints it.
        let c = check("", "gitsrv", 22, &b, now());
        let lf = ok(d.path(), &["ssh-keygen", "-lf", "host.pub"]);
        assert!(lf.contains(&c.fingerprint), "{lf} vs {c:?}");
        assert_eq!(c.key_type, "ssh-ed25519");
    }

    #[test]
    fn host_certificates_signed_by_a_cert_authority() {
        let d = tempfile::tempdir().unwrap();
        let ca = keygen(d.path(), "ca");
        keygen(d.path(), "rogue_ca");
        let host = keygen(d.path(), "host");
        let ca_k = ca.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        let host_k = host
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        // Sign the host key (ssh-keygen -s), as a site CA does.
        let sign = |signer: &str, id: &str, opts: &[&str]| {
            let mut a = vec!["ssh-keygen", "-q", "-s", signer, "-I", id];
            a.extend(opts);
            a.push("host.pub");
            ok(d.path(), &a);
            std::fs::read_to_string(d.path().join("host-cert.pub")).unwrap()
        };
        let good = blob(&sign(
            "ca",
            "git",
            &["-h", "-n", "git.example.org,10.0.2.2", "-V", "-5m:+1h"],
        ));
        let text = format!("@cert-authority *.example.org,10.0.2.2 {ca_k}\n");
        let c = check(&text, "git.example.org", 22, &good, now());
        assert_eq!(c.verdict, HostKeyVerdict::Known, "{c:?}");
        assert_eq!(c.key_type, "ssh-ed25519-cert-v01@openssh.com");
        // The fingerprint shown is the host key's.
        let lf = ok(d.path(), &["ssh-keygen", "-lf", "host.pub"]);
        assert!(lf.contains(&c.fingerprint), "{lf} vs {c:?}");
        // A port other than 22: the line must name [host]:port (or a pattern of it).
        let c = check(&text, "10.0.2.2", 2222, &good, now());
        assert_eq!(c.verdict, HostKeyVerdict::Unknown, "{c:?}");
        let ported = format!("@cert-authority [10.0.2.2]:2222 {ca_k}\n");
        assert_eq!(
            check(&ported, "10.0.2.2", 2222, &good, now()).verdict,
            HostKeyVerdict::Known
        );
        // Not a principal of the certificate.
        let any = format!("@cert-authority * {ca_k}\n");
        let c = check(&any, "other.example.org", 22, &good, now());
        assert_eq!(c.verdict, HostKeyVerdict::Unknown);
        assert!(
            c.note
                .as_deref()
                .unwrap()
                .contains("names git.example.org, 10.0.2.2 but not other.example.org"),
            "{c:?}"
        );
        // Outside its validity.
        let c = check(&text, "git.example.org", 22, &good, now() + 7200);
        assert!(
            c.note.as_deref().unwrap().contains("is not valid now"),
            "{c:?}"
        );
        // Signed by a CA the file does not name; the plain key pinned still works.
        let rogue_cert = blob(&sign("rogue_ca", "git", &["-h", "-n", "git.example.org"]));
        let c = check(&text, "git.example.org", 22, &rogue_cert, now());
        assert_eq!(c.verdict, HostKeyVerdict::Unknown);
        assert!(
            c.note
                .as_deref()
                .unwrap()
                .contains("which no @cert-authority line"),
            "{c:?}"
        );
        let both = format!("{text}git.example.org {host_k}\n");
        assert_eq!(
            check(&both, "git.example.org", 22, &rogue_cert, now()).verdict,
            HostKeyVerdict::Known
        );
        // A user certificate is not a host certificate.
        let user = blob(&sign("ca", "git", &["-n", "git.example.org"]));
        let c = check(&text, "git.example.org", 22, &user, now());
        assert!(
            c.note
                .as_deref()
                .unwrap()
                .contains("not a host certificate"),
            "{c:?}"
        );
        // A revoked CA, or a revoked host key, refuses the certificate.
        let revoked_ca = format!("{text}@revoked * {ca_k}\n");
        assert_eq!(
            check(&revoked_ca, "git.example.org", 22, &good, now()).verdict,
            HostKeyVerdict::Revoked
        );
        let revoked_key = format!("{text}@revoked * {host_k}\n");
        assert_eq!(
            check(&revoked_key, "git.example.org", 22, &good, now()).verdict,
            HostKeyVerdict::Revoked
        );
    }

    #[test]
    fn any_bytes_are_a_verdict_not_a_panic() {
        for b in [
            &b""[..],
            b"\0\0\0\x0bssh-ed25519",
            b"\xff\xff\xff\xff",
            b"\0\0\0\x20ssh-ed25519-cert-v01@openssh.com",
        ] {
            let c = check("* ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDmJwXvqeW5l2wQ2xb7vC6BpdlWN8Rdh8h2YVg7UyS2g\n", "h", 22, b, 0);
            assert_eq!(c.verdict, HostKeyVerdict::Unknown);
            assert!(c.fingerprint.starts_with("SHA256:"));
        }
    }
}
