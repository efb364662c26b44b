//! `cargo xtask bench first-job`: time to the first Slurm job, the Grendel
//! path (the seed's shell postscript: `e2e slurm-grendel`) against the
//! native one (`e2e slurm-user`), the same site, image, kernel and VM,
//! booted in turns (the order alternates each round). Per milestone (seconds
//! since QEMU start, see `slurm::bench_milestones`): medians over the
//! rounds, and the ratio native / Grendel of the first job.
use crate::scenarios::Ctx;
use crate::slurm::Variant;
use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

/// The milestones, in boot order, with the table's labels.
const MILESTONES: &[(&str, &str)] = &[
    ("switch_root", "switch-root"),
    ("provision_start", "provisioning starts"),
    ("cloned", "postscripts cloned"),
    (
        "configured",
        "configured (node.toml + post.sh / postscript)",
    ),
    ("munge_active", "munge active"),
    ("sssd_active", "sssd active"),
    ("slurmd_active", "slurmd active"),
    ("first_job", "first job (srun -w cn1 hostname)"),
];

/// The goal of issue 17: native ≤ 0.5 × Grendel to the first job.
const GOAL: f64 = 0.5;

fn median(v: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Medians per milestone (`<name>_s`) and the first job after switch-root,
/// from each round's milestones.
fn summary(rounds: &[Value]) -> Value {
    let mut m = Map::new();
    for (name, _) in MILESTONES {
        let xs: Vec<f64> = rounds.iter().filter_map(|r| r[*name].as_f64()).collect();
        m.insert(format!("{name}_s"), json!(median(&xs).map(round1)));
    }
    let after: Vec<f64> = rounds
        .iter()
        .filter_map(|r| Some(r["first_job"].as_f64()? - r["switch_root"].as_f64()?))
        .collect();
    m.insert(
        "first_job_after_switch_root_s".into(),
        json!(median(&after).map(round1)),
    );
    m.insert("rounds".into(), json!(rounds));
    Value::Object(m)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn cell(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |x| format!("{x:.1}"))
}

/// The side-by-side table (markdown).
fn table(n: u32, grendel: &Value, native: &Value, ratio: Option<f64>) -> String {
    let mut t = format!(
        "| milestone (s since QEMU start, median of {n}) | Grendel postscript | native (nodectl) |\n|---|---|---|\n"
    );
    for (name, label) in MILESTONES {
        let k = format!("{name}_s");
        t += &format!(
            "| {label} | {} | {} |\n",
            cell(&grendel[&k]),
            cell(&native[&k])
        );
    }
    let k = "first_job_after_switch_root_s";
    t += &format!(
        "| first job after switch-root | {} | {} |\n",
        cell(&grendel[k]),
        cell(&native[k])
    );
    t += &format!(
        "| **ratio native / Grendel, first job** | | **{}** (goal ≤ {GOAL}) |\n",
        ratio.map_or("–".into(), |r| format!("{r:.2}"))
    );
    t
}

pub fn run(rounds: u32, json_out: bool) -> Result<()> {
    if !crate::deps::nix_is_root() {
        bail!("the QEMU boots need root (debootstrap, chroot, loop mounts, namespaces)");
    }
    let ctx = Ctx::new(false)?;
    let base = crate::e2e::e2e_dir().join("bench-first-job");
    let mut seen: [Vec<Value>; 2] = [Vec::new(), Vec::new()];
    let variants = [(Variant::Grendel, "grendel"), (Variant::Good, "native")];
    for round in 0..rounds {
        // Alternate who goes first: neither always boots on a warmer machine.
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let (variant, name) = variants[i];
            let dir = base.join(format!("{name}-{round}"));
            std::fs::create_dir_all(&dir)?;
            eprintln!(
                "xtask: bench first-job: round {}/{rounds}, {name}",
                round + 1
            );
            let out = crate::slurm::run(&ctx, &dir, variant)
                .with_context(|| format!("round {}, the {name} path", round + 1))?;
            let b = out["bench"].clone();
            eprintln!("xtask: {name}: {b}");
            seen[i].push(b);
        }
    }
    let (grendel, native) = (summary(&seen[0]), summary(&seen[1]));
    let ratio = match (
        native["first_job_s"].as_f64(),
        grendel["first_job_s"].as_f64(),
    ) {
        (Some(n), Some(g)) if g > 0.0 => Some((n / g * 1000.0).round() / 1000.0),
        _ => None,
    };
    let doc = json!({
        "rounds": rounds,
        "accel": ctx.accel,
        "load": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "grendel": grendel,
        "native": native,
        "ratio_first_job": ratio,
    });
    let path = crate::build::root().join("target/bench-first-job.json");
    crate::e2e::write_json(&path, &doc)?;
    if json_out {
        println!("{}", serde_json::to_string(&doc)?);
    } else {
        println!("{}", table(rounds, &doc["grendel"], &doc["native"], ratio));
        eprintln!("xtask: results in {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_the_table() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        let r = |sr: f64, fj: f64| json!({"switch_root": sr, "first_job": fj});
        let g = summary(&[r(30.0, 200.0), r(32.0, 180.0)]);
        let n = summary(&[r(31.0, 80.0), r(33.0, 90.0)]);
        assert_eq!(g["first_job_s"], json!(190.0));
        assert_eq!(n["first_job_after_switch_root_s"], json!(53.0));
        // A milestone no round has is shown as missing, not as 0.
        assert_eq!(n["sssd_active_s"], Value::Null);
        let t = table(2, &g, &n, Some(0.447));
        assert!(
            t.contains("| first job (srun -w cn1 hostname) | 190.0 | 85.0 |"),
            "{t}"
        );
        assert!(t.contains("| sssd active | – | – |"), "{t}");
        assert!(t.contains("**0.45** (goal ≤ 0.5)"), "{t}");
    }
}
