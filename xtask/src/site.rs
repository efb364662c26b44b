//! The site's own servers beside the slurm boots' controller, real and
//! in user space, in the controller's namespaces: OpenLDAP's `slapd`
//! (rfc2307bis users and groups over `ldaps://`, the bind DN of the seed's
//! sssd.conf) and NFS-Ganesha (the seed's network volumes over NFSv4.2).
use crate::slurm::{run_cmd, Daemon};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

/// The directory's suffix, as in the seed's sssd.conf.
pub const SUFFIX: &str = "dc=example,dc=com";
/// The seed's bind DN (389 Directory Server's administrator).
pub const BIND_DN: &str = "cn=Directory Manager";
/// The name in the LDAP server's certificate; the node's /etc/hosts maps it
/// to 10.0.2.2 (the namespace's 127.0.0.1 through QEMU).
pub const LDAP_NAME: &str = "ldap.cluster.test";
/// alice: uid and gid (her group `researchers`).
pub const ALICE_UID: u32 = 10001;

const SCHEMA: &str = include_str!("site/rfc2307bis.schema");

/// A site CA: its key `key` and self-signed certificate `pem` (EC P-256,
/// valid two days), named `subject` (`/CN=…`).
pub fn make_ca(key: &Path, pem: &Path, subject: &str) -> Result<()> {
    run_cmd(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &key.to_string_lossy(),
        "-out",
        &pem.to_string_lossy(),
        "-days",
        "2",
        "-subj",
        subject,
    ])?;
    Ok(())
}

/// A server's key and certificate, `dir/server.key` and `dir/server.pem`,
/// for `name` and the addresses in `ips`, signed by the site CA
/// `ca_key`/`ca_pem`.
pub fn server_cert(
    dir: &Path,
    ca_key: &Path,
    ca_pem: &Path,
    name: &str,
    ips: &[&str],
) -> Result<()> {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let (key, csr, pem, ext) = (
        dir.join("server.key"),
        dir.join("server.csr"),
        dir.join("server.pem"),
        dir.join("server.ext"),
    );
    let alt: Vec<String> = std::iter::once(format!("DNS:{name}"))
        .chain(ips.iter().map(|ip| format!("IP:{ip}")))
        .collect();
    std::fs::write(
        &ext,
        format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName={}\n",
            alt.join(",")
        ),
    )?;
    run_cmd(&[
        "openssl",
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &s(&key),
        "-out",
        &s(&csr),
        "-subj",
        &format!("/CN={name}"),
    ])?;
    run_cmd(&[
        "openssl",
        "x509",
        "-req",
        "-in",
        &s(&csr),
        "-CA",
        &s(ca_pem),
        "-CAkey",
        &s(ca_key),
        "-CAcreateserial",
        "-out",
        &s(&pem),
        "-days",
        "2",
        "-extfile",
        &s(&ext),
    ])?;
    Ok(())
}

/// slapd on 127.0.0.1:636 (ldaps, a certificate from the site CA) and a
/// unix socket, all of its state under `dir/ldap`, holding the seed's
/// layout (`ou=people`, `ou=groups`, `ou=sudoers`), alice and her group
/// (`groupOfNames` + `posixGroup`, `memberOf` kept by the overlay), and
/// [`BIND_DN`] with `bind_pw`.
pub fn ldap(dir: &Path, ca_key: &Path, ca_pem: &Path, bind_pw: &str) -> Result<Daemon> {
    let d = dir.join("ldap");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("db"))?;
    // For LDAP_NAME, 10.0.2.2 (the node's view) and 127.0.0.1.
    server_cert(&d, ca_key, ca_pem, LDAP_NAME, &["10.0.2.2", "127.0.0.1"])
        .context("the LDAP server's certificate")?;
    std::fs::write(d.join("rfc2307bis.schema"), SCHEMA)?;
    let conf = d.join("slapd.conf");
    // slapd takes a password for a root DN only inside its database's
    // suffix: a null database owns "cn=Directory Manager" and checks its
    // password; the directory names the same DN as its root.
    std::fs::write(
        &conf,
        format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include {d}/rfc2307bis.schema\n\
             pidfile {d}/slapd.pid\nargsfile {d}/slapd.args\n\
             modulepath /usr/lib/ldap\nmoduleload back_mdb\nmoduleload back_null\n\
             moduleload memberof\nmoduleload refint\n\
             TLSCACertificateFile {ca}\nTLSCertificateFile {d}/server.pem\n\
             TLSCertificateKeyFile {d}/server.key\n\n\
             database null\nsuffix \"{BIND_DN}\"\nrootdn \"{BIND_DN}\"\nrootpw {bind_pw}\n\n\
             database mdb\nsuffix \"{SUFFIX}\"\nrootdn \"{BIND_DN}\"\ndirectory {d}/db\n\
             maxsize 104857600\nindex objectClass eq\nindex uid,cn,uidNumber,gidNumber,memberUid eq\n\
             index member eq\n\
             access to attrs=userPassword\n  by self write\n  by anonymous auth\n  by * none\n\
             access to *\n  by users read\n  by * none\n\
             overlay memberof\nmemberof-group-oc groupOfNames\nmemberof-member-ad member\n\
             memberof-memberof-ad memberOf\nmemberof-refint TRUE\n\
             overlay refint\nrefint_attributes member\n",
            d = d.display(),
            ca = ca_pem.display(),
        ),
    )?;
    let sock = d.join("ldapi");
    let ldapi = format!("ldapi://{}", sock.to_string_lossy().replace('/', "%2F"));
    let log = dir.join("slapd.log");
    let mut slapd = Daemon::spawn(
        "slapd",
        Command::new("/usr/sbin/slapd")
            .args(["-d", "none", "-f"])
            .arg(&conf)
            .args(["-h", &format!("ldaps://127.0.0.1:636/ {ldapi}/")]),
        &log,
    )?;
    slapd.wait_port("127.0.0.1:636", &log)?;
    let data = d.join("data.ldif");
    std::fs::write(
        &data,
        format!(
            "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
             dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n\
             dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n\n\
             dn: ou=sudoers,{SUFFIX}\nobjectClass: organizationalUnit\nou: sudoers\n\n\
             dn: uid=alice,ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n\
             uid: alice\ncn: Alice Liddell\nsn: Liddell\nuidNumber: {ALICE_UID}\ngidNumber: {ALICE_UID}\n\
             homeDirectory: /home/alice\nloginShell: /bin/bash\n\n\
             dn: cn=researchers,ou=groups,{SUFFIX}\nobjectClass: groupOfNames\nobjectClass: posixGroup\n\
             cn: researchers\ngidNumber: {ALICE_UID}\nmember: uid=alice,ou=people,{SUFFIX}\n"
        ),
    )?;
    run_cmd(&[
        "ldapadd",
        "-x",
        "-H",
        &ldapi,
        "-D",
        BIND_DN,
        "-w",
        bind_pw,
        "-f",
        &data.to_string_lossy(),
    ])
    .context("loading the directory")?;
    // As sssd will: over ldaps with the site CA, bound as the seed's DN.
    let found = Command::new("ldapsearch")
        .env("LDAPTLS_CACERT", ca_pem)
        .args([
            "-x",
            "-LLL",
            "-H",
            "ldaps://127.0.0.1",
            "-D",
            BIND_DN,
            "-w",
            bind_pw,
        ])
        .args(["-b", SUFFIX, "(uid=alice)", "memberOf"])
        .output()
        .context("ldapsearch")?;
    let out = String::from_utf8_lossy(&found.stdout);
    if !out.contains(&format!("memberOf: cn=researchers,ou=groups,{SUFFIX}")) {
        bail!(
            "slapd does not give alice memberOf over ldaps: {out} {}",
            String::from_utf8_lossy(&found.stderr)
        );
    }
    Ok(slapd)
}

/// The NFS export's tree on the server: the seed's network volumes
/// (`home/ldap-users` with alice's home, `cache/{enroot,shared,persistent,world-tmp}`).
pub const NFS_DIRS: &[&str] = &[
    "home/ldap-users",
    "cache/enroot",
    "cache/shared",
    "cache/persistent",
    "cache/world-tmp",
];

/// NFS-Ganesha (VFS) serving `dir/nfs/export` as `/srv/cluster`, NFSv4
/// only (no rpcbind, lock manager or rquota), on port 2049 of the
/// namespace (the node's 10.0.2.2), state under `dir/nfs`; no grace period
/// (a restart does not block opens). Returns the server and the export's
/// path on this side.
pub fn nfs(dir: &Path) -> Result<(Daemon, std::path::PathBuf)> {
    use std::os::unix::fs::PermissionsExt;
    let d = dir.join("nfs");
    let _ = std::fs::remove_dir_all(&d);
    let export = d.join("export");
    for sub in NFS_DIRS {
        std::fs::create_dir_all(export.join(sub))?;
    }
    for sub in &NFS_DIRS[1..] {
        std::fs::set_permissions(export.join(sub), std::fs::Permissions::from_mode(0o1777))?;
    }
    let home = export.join("home/ldap-users/alice");
    std::fs::create_dir_all(&home)?;
    std::os::unix::fs::chown(&home, Some(ALICE_UID), Some(ALICE_UID))?;
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700))?;
    for s in ["recovery", "ccache"] {
        std::fs::create_dir_all(d.join(s))?;
    }
    let conf = d.join("ganesha.conf");
    std::fs::write(
        &conf,
        format!(
            "NFS_CORE_PARAM {{
  Protocols = 4;
  Enable_NLM = false;
  Enable_RQUOTA = false;
               Enable_UDP = false;
  NFS_Port = 2049;
}}
             NFSV4 {{
  RecoveryBackend = fs;
  RecoveryRoot = {d}/recovery;
  Graceless = true;
               Allow_Numeric_Owners = true;
  Only_Numeric_Owners = true;
}}
             NFS_KRB5 {{
  Active_krb5 = false;
  CCacheDir = {d}/ccache;
}}
             EXPORT_DEFAULTS {{
  Access_Type = None;
}}
             EXPORT {{
  Export_Id = 1;
  Path = {export};
  Pseudo = /srv/cluster;
               Access_Type = RW;
  Squash = No_Root_Squash;
  SecType = sys;
  Protocols = 4;
               Transports = TCP;
  PrivilegedPort = false;
  Attr_Expiration_Time = 0;
               FSAL {{
    Name = VFS;
  }}
}}
             LOG {{
  Default_Log_Level = EVENT;
}}
",
            d = d.display(),
            export = export.display(),
        ),
    )?;
    let log = dir.join("ganesha.log");
    // Its own messages go to -L; stdout/stderr hold only start-up noise.
    let mut g = Daemon::spawn(
        "ganesha.nfsd",
        Command::new("/usr/bin/ganesha.nfsd")
            .args(["-F", "-N", "NIV_EVENT", "-f"])
            .arg(&conf)
            .arg("-L")
            .arg(&log)
            .arg("-p")
            .arg(d.join("ganesha.pid")),
        &d.join("ganesha.out"),
    )?;
    g.wait_port("127.0.0.1:2049", &log)?;
    Ok((g, export))
}
