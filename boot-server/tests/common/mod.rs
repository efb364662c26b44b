//! What the bootd integration tests share.
use std::path::Path;
use std::time::{Duration, Instant};

/// The port bootd bound, once it has written `port_file` (`--port-file`);
/// fails the test when that takes more than 10 s.
pub fn wait_for_port(port_file: &Path) -> u16 {
    let t0 = Instant::now();
    loop {
        if let Some(p) = std::fs::read_to_string(port_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "bootd did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The admin token the tests give bootd (`--admin-token`).
#[allow(dead_code)]
pub const ADMIN: &str = "test-admin-token-0123456789abcdef";

/// `dir/admin.token` holding [`ADMIN`] (mode 0600), for `--admin-token`.
#[allow(dead_code)]
pub fn admin_token_file(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("admin.token");
    std::fs::write(&p, format!("{ADMIN}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}
