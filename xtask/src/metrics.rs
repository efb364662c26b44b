//! bootd's `GET /metrics` in the QEMU boots: scraped with curl (inside the
//! scenario's network namespace), checked with Debian's `promtool check
//! metrics` (package `prometheus`), and parsed into the samples the
//! scenario asserts on and reports.
use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The samples of one exposition: `name{labels}` exactly as bootd
/// renders it → value.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub samples: BTreeMap<String, f64>,
}

impl Scrape {
    /// Parse the text format: `series value` lines; comments and blank
    /// lines skipped; a line without a number is an error naming it.
    pub fn parse(text: &str) -> Result<Scrape> {
        let mut samples = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .with_context(|| format!("metrics line {}: no value: {line:?}", i + 1))?;
            let v: f64 = value
                .parse()
                .with_context(|| format!("metrics line {}: bad value: {line:?}", i + 1))?;
            samples.insert(series.to_string(), v);
        }
        Ok(Scrape { samples })
    }

    /// One series' value (0 when absent: bootd omits HTTP series not yet seen).
    pub fn get(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    /// The sum of every series of metric `name`.
    pub fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(k, _)| k.split('{').next() == Some(name))
            .map(|(_, v)| v)
            .sum()
    }
}

/// `promtool check metrics` on `text`; its complaint as the error.
pub fn promtool_check(text: &str) -> Result<()> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting promtool (Debian's prometheus package: apt-get install prometheus)")?;
    child
        .stdin
        .take()
        .context("promtool's stdin")?
        .write_all(text.as_bytes())
        .context("writing to promtool")?;
    let o = child.wait_with_output().context("waiting for promtool")?;
    if !o.status.success() {
        bail!(
            "promtool check metrics refused bootd's /metrics ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout).trim(),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

/// GET `base/metrics` with curl (inside network namespace `netns` when
/// given), check it with promtool, parse it.
pub fn scrape_and_check(netns: Option<&str>, base: &str) -> Result<Scrape> {
    let url = format!("{}/metrics", base.trim_end_matches('/'));
    let mut argv: Vec<&str> = Vec::new();
    if let Some(ns) = netns {
        argv.extend(["ip", "netns", "exec", ns]);
    }
    argv.extend(["curl", "-sS", "--fail", "--max-time", "10", &url]);
    let text = crate::slurm::run_cmd(&argv).with_context(|| format!("scraping {url}"))?;
    promtool_check(&text)?;
    Scrape::parse(&text)
}

/// What a network boot that reached multi-user must have moved: each
/// series > 0 (the TFTP one unless `tftp` is false).
pub fn boot_requirements(tftp: bool) -> Vec<&'static str> {
    let mut v = vec![
        r#"bootd_dhcp_packets_total{outcome="answered"}"#,
        r#"bootd_http_requests_total{route="/boot/ipxe",code="200"}"#,
        r#"bootd_http_requests_total{route="files",code="200"}"#,
        r#"bootd_node_reports_total{phase="fetching"}"#,
        r#"bootd_node_reports_total{phase="ready"}"#,
    ];
    if tftp {
        v.push(r#"bootd_tftp_transfers_total{result="completed"}"#);
    }
    v
}

/// Scrape until every series of `required` is above zero (the last
/// report's counters move just after its log line), at most 10 s; the
/// values for the scenario's report.
pub fn after_boot(netns: Option<&str>, base: &str, required: &[&str]) -> Result<Value> {
    let t0 = Instant::now();
    let m = loop {
        let m = scrape_and_check(netns, base)?;
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|s| m.get(s) <= 0.0)
            .collect();
        if missing.is_empty() {
            break m;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            bail!(
                "bootd's /metrics after the boot: still zero: {}",
                missing.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let mut phases = Map::new();
    for p in ["fetching", "booted", "provisioning", "ready", "failed"] {
        phases.insert(
            p.into(),
            json!(m.get(&format!("bootd_node_reports_total{{phase=\"{p}\"}}"))),
        );
    }
    Ok(json!({
        "dhcp_received": m.get("bootd_dhcp_packets_received_total"),
        "dhcp_answered": m.get(r#"bootd_dhcp_packets_total{outcome="answered"}"#),
        "tftp_completed": m.get(r#"bootd_tftp_transfers_total{result="completed"}"#),
        "tftp_bytes": m.get("bootd_tftp_sent_bytes_total"),
        "http_requests": m.sum("bootd_http_requests_total"),
        "http_bytes": m.sum("bootd_http_response_bytes_total"),
        "node_reports": phases,
        "boots_timed": m.get("bootd_boot_duration_seconds_count"),
        "boot_seconds_sum": m.get("bootd_boot_duration_seconds_sum"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP bootd_x_total x\n# TYPE bootd_x_total counter\n\
        bootd_x_total{route=\"/boot/ipxe\",code=\"200\"} 2\n\
        bootd_x_total{route=\"files\",code=\"206\"} 3\n\
        # HELP bootd_y_seconds y\n# TYPE bootd_y_seconds gauge\nbootd_y_seconds 1.5\n";

    #[test]
    fn parses_and_sums() {
        let m = Scrape::parse(TEXT).unwrap();
        assert_eq!(m.get(r#"bootd_x_total{route="files",code="206"}"#), 3.0);
        assert_eq!(m.sum("bootd_x_total"), 5.0);
        assert_eq!(m.get("bootd_y_seconds"), 1.5);
        assert_eq!(m.get("absent"), 0.0);
        let e = Scrape::parse("ok 1\nbroken\n").unwrap_err().to_string();
        assert_eq!(e, "metrics line 2: no value: \"broken\"");
    }

    #[test]
    fn promtool_judges() {
        if Command::new("promtool").arg("--version").output().is_err() {
            panic!("promtool missing: apt-get install prometheus (xtask's deps list has it)");
        }
        promtool_check(TEXT).unwrap();
        let e = promtool_check("# TYPE bootd_x counter\nbootd_x 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("_total"), "{e}");
    }
}
