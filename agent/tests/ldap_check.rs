//! nodectl's LDAP check (what `start-services` asks the directory after
//! sssd starts) against a real OpenLDAP `slapd` (Debian's `slapd`) on
//! 127.0.0.1 serving `ldaps://` with a certificate from a test CA, bound as
//! the seed's `cn=Directory Manager`: the message an operator sees for a
//! server that is down, a CA the node does not trust, and a wrong bind
//! password — and a pass when all is right.
mod common;
use common::{free_port, ok};
use nodeboot_agent::ldapcheck::{check, domains, Domain};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SLAPD: &str = "/usr/sbin/slapd";
const DN: &str = "cn=Directory Manager";

struct Slapd(Child);

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A CA (`name.pem`, `name.key`) in `d`.
fn ca(d: &Path, name: &str) {
    let s = |f: &str| d.join(f).to_string_lossy().into_owned();
    ok(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &s(&format!("{name}.key")),
        "-out",
        &s(&format!("{name}.pem")),
        "-days",
        "2",
        "-subj",
        &format!("/CN={name}"),
    ]);
}

/// slapd with only the seed's bind DN (a null database), ldaps on `port`
/// with a certificate for 127.0.0.1 from `d/site-ca`.
fn slapd(d: &Path, port: u16, password: &str) -> Slapd {
    let s = |f: &str| d.join(f).to_string_lossy().into_owned();
    ca(d, "site-ca");
    std::fs::write(
        d.join("server.ext"),
        "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
    )
    .unwrap();
    ok(&[
        "openssl",
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &s("server.key"),
        "-out",
        &s("server.csr"),
        "-subj",
        "/CN=ldap",
    ]);
    ok(&[
        "openssl",
        "x509",
        "-req",
        "-in",
        &s("server.csr"),
        "-CA",
        &s("site-ca.pem"),
        "-CAkey",
        &s("site-ca.key"),
        "-CAcreateserial",
        "-out",
        &s("server.pem"),
        "-days",
        "2",
        "-extfile",
        &s("server.ext"),
    ]);
    let conf = d.join("slapd.conf");
    std::fs::write(
        &conf,
        format!(
            "include /etc/ldap/schema/core.schema\npidfile {p}\nmodulepath /usr/lib/ldap\n\
             moduleload back_null\nTLSCertificateFile {c}\nTLSCertificateKeyFile {k}\n\
             database null\nsuffix \"{DN}\"\nrootdn \"{DN}\"\nrootpw {password}\n",
            p = s("slapd.pid"),
            c = s("server.pem"),
            k = s("server.key"),
        ),
    )
    .unwrap();
    let child = Command::new(SLAPD)
        .args(["-d", "none", "-f"])
        .arg(&conf)
        .args(["-h", &format!("ldaps://127.0.0.1:{port}/")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.join("slapd.log")).unwrap())
        .spawn()
        .unwrap();
    let srv = Slapd(child);
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "slapd did not listen: {}",
            std::fs::read_to_string(d.join("slapd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    srv
}

fn have_slapd() -> bool {
    if Path::new(SLAPD).exists() {
        return true;
    }
    eprintln!("SKIP: needs Debian's slapd (apt-get install slapd; cargo xtask test installs it)");
    false
}

/// The seed's domain with `ldap_tls_cacert = ca` (this machine's own
/// libldap must not read its system trust store for the test CA).
fn domain(port: u16, password: &str, ca: &Path) -> Domain {
    Domain {
        name: "deepsquare-ldap".into(),
        uris: vec![format!("ldaps://127.0.0.1:{port}")],
        bind_dn: Some(DN.into()),
        authtok: Some(password.into()),
        cacert: Some(ca.to_path_buf()),
        cipher_suite: None,
        reqcert: None,
    }
}

#[test]
fn the_directory_answers_or_the_operator_is_told_why() {
    if !have_slapd() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let _srv = slapd(d.path(), port, "bind-secret");
    let site_ca = d.path().join("site-ca.pem");
    let bound = Duration::from_secs(3);
    // All right: the site CA trusted, the right password.
    check(
        &domain(port, "bind-secret", &site_ca),
        &site_ca,
        d.path(),
        bound,
    )
    .unwrap();
    // The node does not trust the site CA (node.toml has no [[ca]]).
    ca(d.path(), "other-ca");
    let other = d.path().join("other-ca.pem");
    let e = format!(
        "{:#}",
        check(
            &domain(port, "bind-secret", &other),
            &other,
            d.path(),
            bound
        )
        .unwrap_err()
    );
    assert!(
        e.starts_with(&format!(
            "sssd domain deepsquare-ldap: no LDAP server answered within 3s: ldaps://127.0.0.1:{port}: \
             TLS with 127.0.0.1:{port}: invalid peer certificate: UnknownIssuer; the node trusts the CAs of {}",
            other.display()
        )),
        "{e}"
    );
    // A wrong bind password.
    let e = format!(
        "{:#}",
        check(&domain(port, "wrong", &site_ca), &site_ca, d.path(), bound).unwrap_err()
    );
    assert!(
        e.ends_with(
            "bind as \"cn=Directory Manager\" refused: invalidCredentials (LDAP result 49): \
             check ldap_default_bind_dn and ldap_default_authtok"
        ),
        "{e}"
    );
    // An OpenSSL cipher list, as in the seed's sssd.conf: nodectl's own TLS
    // takes it, the node's libldap (GnuTLS) does not, and neither would sssd.
    if Path::new("/usr/bin/ldapwhoami").exists() {
        let mut high = domain(port, "bind-secret", &site_ca);
        high.cipher_suite = Some("HIGH".into());
        let e = format!("{:#}", check(&high, &site_ca, d.path(), bound).unwrap_err());
        assert!(
            e.contains(&format!(
                "nodectl's own TLS and bind succeeded, but sssd's LDAP library (ldapwhoami with sssd's \
                 LDAPTLS_CACERT={} LDAPTLS_CIPHER_SUITE=HIGH) fails: "
                , site_ca.display()
            )) && e.ends_with("(GnuTLS on Debian: NORMAL, SECURE128; OpenSSL on EL: HIGH)"),
            "{e}"
        );
        assert!(
            !d.path().join("ldap-check.pw").exists(),
            "the password file was left behind"
        );
        // No ldap_tls_cacert: sssd's libldap trusts only what its ldap.conf
        // names (this machine's: the system bundle, without the test CA)
        // while the node's store (here: the site CA) has it — the first
        // slurm-user boot, where sssd stayed offline.
        let mut none = domain(port, "bind-secret", &site_ca);
        none.cacert = None;
        let e = format!("{:#}", check(&none, &site_ca, d.path(), bound).unwrap_err());
        assert!(
            e.contains("but sssd's LDAP library (ldapwhoami) fails: ")
                && e.ends_with(
                    "without ldap_tls_cacert, libldap trusts what TLS_CACERT in its ldap.conf names \
                     (Debian: /etc/ldap/ldap.conf from libldap-common, the system bundle) and nothing \
                     when there is none"
                ),
            "{e}"
        );
    } else {
        eprintln!("SKIP: the libldap half: no ldapwhoami (apt-get install ldap-utils)");
    }
    // Nothing listens: told within the bound, naming the server.
    let down = free_port();
    let t = Instant::now();
    let e = format!(
        "{:#}",
        check(
            &domain(down, "bind-secret", &site_ca),
            &site_ca,
            d.path(),
            bound
        )
        .unwrap_err()
    );
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    assert!(
        e.contains(&format!(
            "ldaps://127.0.0.1:{down}: connecting to 127.0.0.1:{down}: Connection refused"
        )),
        "{e}"
    );
}

#[test]
fn the_bind_password_comes_from_a_snippet() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("conf.d")).unwrap();
    // postscripts/files/sssd/sssd.conf, as shipped, and the secret's snippet.
    let reference = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../postscripts/files/sssd/sssd.conf"),
    )
    .unwrap();
    std::fs::write(d.path().join("sssd.conf"), reference).unwrap();
    std::fs::write(
        d.path().join("conf.d/50-bind.conf"),
        "[domain/deepsquare-ldap]\nldap_default_authtok = from-bootd\n",
    )
    .unwrap();
    let got = domains(&d.path().join("sssd.conf")).unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].uris, ["ldaps://ldap.example.com"]);
    assert_eq!(got[0].bind_dn.as_deref(), Some(DN));
    assert_eq!(got[0].authtok.as_deref(), Some("from-bootd"));
}
