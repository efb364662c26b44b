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
