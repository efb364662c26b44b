//! `nodectl status`: one line saying how this node booted, read from the
//! initramfs record (`/run/nodeboot/boot.json`) and the running system.
use anyhow::{Context, Result};
use std::path::Path;

/// The line's prefix: a stable marker the QEMU harness and log searches key on.
pub const PREFIX: &str = "nodeboot-status ";

/// Build the status JSON from the boot record at `record`, the hostname the
/// kernel has now, and `/proc/uptime` (path given).
/// `multi_user` is the state systemd reports for multi-user.target.
pub fn status(
    record: &Path,
    hostname: &str,
    multi_user: &str,
    uptime: &Path,
) -> Result<serde_json::Value> {
    let rec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(record).with_context(|| format!("reading {}", record.display()))?,
    )
    .with_context(|| format!("parsing {}", record.display()))?;
    let up = std::fs::read_to_string(uptime).ok().and_then(|s| {
        s.split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
    });
    // Provisioning's status, beside the record (`nodectl provision`).
    let provision = std::fs::read(record.with_file_name("status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let fetch = &rec["fetch"];
    Ok(serde_json::json!({
        "hostname": hostname,
        "multi_user": multi_user,
        "expected_hostname": rec["params"]["hostname"],
        "url": rec["params"]["live_url"],
        "fetch": {
            "bytes": fetch["bytes"],
            "seconds": fetch["seconds"],
            "sha256": fetch["sha256"],
            "verified_by": fetch["verified_by"],
            "resumes": fetch["resumes"],
        },
        "cache": {
            "outcome": rec["cache"]["outcome"],
            "bytes_fetched": rec["cache"]["bytes_fetched"],
            "booted_from": rec["cache"]["booted_from"],
            "stored": rec["cache"]["stored"],
            "verify_seconds": rec["cache"]["verify_seconds"],
            "message": rec["cache"]["message"],
        },
        // The chunked fetch (nodeboot.index=): what came from where.
        "chunked": rec.get("chunked").map(|c| serde_json::json!({
            "index_url": c["index_url"],
            "fetched_bytes": c["fetched_bytes"],
            "fetched_chunks": c["fetched_chunks"],
            "seed_chunks": c["seed_chunks"],
            "chunks": c["assembly"]["chunks"],
            "seconds": c["seconds"],
        })),
        "chunked_error": rec.get("chunked_error"),
        "initrd_seconds": rec["timings"]["total"],
        "firmware": rec["firmware"],
        "uptime": up,
        "error": rec["error"],
        "provision": provision,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_record() {
        let d = tempfile::tempdir().unwrap();
        let rec = d.path().join("boot.json");
        std::fs::write(
            &rec,
            r#"{"params":{"hostname":"cn1","live_url":"http://x/y"},"fetch":{"bytes":5,"seconds":0.5,"sha256":"ab","verified_by":"sidecar","resumes":1},"timings":{"total":2.0},"error":null}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("uptime"), "12.5 20.0\n").unwrap();
        let s = status(&rec, "cn1", "active", &d.path().join("uptime")).unwrap();
        assert_eq!(s["hostname"], "cn1");
        assert_eq!(s["multi_user"], "active");
        assert_eq!(s["fetch"]["bytes"], 5);
        assert_eq!(s["fetch"]["resumes"], 1);
        assert_eq!(s["uptime"], 12.5);
        assert!(s["cache"]["outcome"].is_null(), "no cache in the record");
    }

    #[test]
    fn missing_record_is_named() {
        let e = status(
            Path::new("/nonexistent/boot.json"),
            "x",
            "active",
            Path::new("/proc/uptime"),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("reading /nonexistent/boot.json"));
    }
}
