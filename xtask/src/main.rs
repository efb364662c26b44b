//! `cargo xtask …`: build, demo, test and bench nodeboot.
use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use std::process::Command;

mod bench;
mod build;
mod cacheboot;
mod deps;
mod dist;
mod docs;
mod e2e;
mod fuzz;
mod hostile;
mod metrics;
mod peersboot;
mod pxe;
mod scenarios;
mod secureboot;
mod site;
mod slurm;

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the static nodectl (prints its path).
    Build,
    /// Install what is missing, build everything, boot the demo node, show its console and report.
    Demo,
    /// Everything CI checks: lints, unit and integration tests (the docs'
    /// examples and links among them), the docs' site and its screenshot,
    /// the QEMU boots.
    Test {
        /// Skip the QEMU boots (lints and cargo tests only).
        #[arg(long)]
        no_qemu: bool,
    },
    /// Run QEMU boots: boot, chunked, bad-digest, unreachable, resume, postscript,
    /// postscript-fails, disk, cache, peers, slurm-user, slurm-wrong-hostkey, slurm-tpm, slurm-nfs-missing, slurm-nfs-down, slurm-grendel, pxe, pxe-uefi, httpboot, secureboot, secureboot-unsigned, hostile (default: all).
    E2e { names: Vec<String> },
    /// The .deb packages nodeboot-nodectl, nodeboot-bootd and
    /// nodeboot-nodeimg (static binaries, man pages, completions, units),
    /// checked with lintian (fails on an error).
    Dist {
        /// Where to write the packages. [default: TARGET_DIR/dist]
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Also the .rpm packages for EL sites (cargo-generate-rpm), listed
        /// with rpm -qlp.
        #[arg(long)]
        rpm: bool,
    },
    /// The documentation site (mdBook) into TARGET_DIR/docs, after writing
    /// the command reference pages from the binaries' clap definitions
    /// (prints the start page's path), and a screenshot of its start page
    /// in headless Chromium (TARGET_DIR/docs-start.png) when installed.
    Docs,
    /// Benchmarks against the tools users would use instead.
    Bench {
        #[command(subcommand)]
        what: bench::What,
    },
    /// Fuzz the parsers (cargo-fuzz, nightly): TARGET, else every target
    /// one after the other, N seconds each. Not part of `test`, whose
    /// `cargo test` replays the corpora instead.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        target: Option<String>,
    },
    /// The attacker of the QEMU boot `hostile` (run inside its network
    /// namespace by the scenario): slow HTTP connections, unacknowledged
    /// TFTP requests, a DHCP flood, until SIGINT.
    #[command(hide = true)]
    HostileLoad {
        #[arg(long)]
        server: std::net::Ipv4Addr,
        #[arg(long)]
        http_port: u16,
        /// Where to write what the attack did (JSON, every second).
        #[arg(long)]
        stats: std::path::PathBuf,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Build => {
            let p = build::nodectl_static()?;
            println!("{}", p.display());
            Ok(())
        }
        Cmd::Demo => demo(),
        Cmd::Test { no_qemu } => test(no_qemu),
        Cmd::E2e { names } => {
            deps::ensure()?;
            e2e_run(&names, false)
        }
        Cmd::Dist { out, rpm } => {
            deps::ensure_packages(deps::DIST_PACKAGES)?;
            let out = out.unwrap_or_else(dist::default_out);
            for deb in dist::run(&out)? {
                println!("{}", deb.display());
            }
            if rpm {
                deps::ensure_packages(&["rpm"])?;
                for rpm in dist::rpms(&dist::PACKAGES, &out)? {
                    println!("{}", rpm.display());
                }
            }
            Ok(())
        }
        Cmd::Docs => {
            let index = docs::build()?;
            if std::path::Path::new(docs::CHROMIUM).exists() {
                let png = docs::screenshot_path();
                docs::screenshot(&index, &png)?;
                eprintln!("xtask: screenshot of the start page: {}", png.display());
            } else {
                eprintln!("xtask: no {}: no screenshot", docs::CHROMIUM);
            }
            println!("{}", index.display());
            Ok(())
        }
        Cmd::Bench { what } => {
            deps::ensure()?;
            bench::run(what)
        }
        Cmd::HostileLoad {
            server,
            http_port,
            stats,
        } => hostile::load(server, http_port, &stats),
        Cmd::Fuzz { seconds, target } => fuzz::run(seconds, target.as_deref()),
    }
}

fn demo() -> Result<()> {
    deps::ensure()?;
    let ctx = scenarios::Ctx::new(true)?;
    let report = scenarios::run(&ctx, "boot")?;
    println!(
        "\n== report ({}) ==",
        e2e::e2e_dir().join("report.json").display()
    );
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Run the named scenarios (all when empty); print "N passed, M failed".
fn e2e_run(names: &[String], echo: bool) -> Result<()> {
    if !deps::nix_is_root() {
        bail!("the QEMU boots need root (debootstrap, chroot, loop mounts)");
    }
    let names: Vec<String> = if names.is_empty() {
        scenarios::NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        names.to_vec()
    };
    let ctx = scenarios::Ctx::new(echo)?;
    let mut failed = Vec::new();
    let mut summary = serde_json::Map::new();
    for n in &names {
        eprintln!("xtask: e2e {n} …");
        match scenarios::run(&ctx, n) {
            Ok(v) => {
                eprintln!("xtask: e2e {n}: PASS");
                summary.insert(n.clone(), serde_json::json!({"passed": true, "result": v}));
            }
            Err(e) => {
                eprintln!("xtask: e2e {n}: FAIL: {e:#}");
                summary.insert(
                    n.clone(),
                    serde_json::json!({"passed": false, "error": format!("{e:#}")}),
                );
                failed.push(n.clone());
            }
        }
    }
    e2e::write_json(
        &e2e::e2e_dir().join("scenarios.json"),
        &serde_json::Value::Object(summary),
    )?;
    println!(
        "e2e: {} passed, {} failed",
        names.len() - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        bail!("QEMU boots failed: {}", failed.join(", "));
    }
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(build::root());
    c
}

fn test(no_qemu: bool) -> Result<()> {
    deps::ensure()?;
    let root = build::root();
    build::run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    build::run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    let scripts = [
        "dracut-module/90nodeboot/module-setup.sh",
        "dracut-module/90nodeboot/nodeboot-generator.sh",
        "dracut-module/90nodeboot/parse-nodeboot.sh",
        ".ci/run",
        // The Grendel path's scripts (e2e slurm-grendel).
        "xtask/src/site/grendel/postscript.sh",
        "xtask/src/site/grendel/post.sh",
        "xtask/src/site/grendel/postscripts/ldap",
        "xtask/src/site/grendel/postscripts/fs_mount",
        "xtask/src/site/grendel/postscripts/slurm",
        "xtask/src/site/grendel/postscripts/set-motd",
    ];
    build::run(
        Command::new("shellcheck")
            .current_dir(&root)
            .args(["-S", "warning"])
            .args(scripts),
    )?;
    // nodectl must be one static binary.
    let nodectl = build::nodectl_static()?;
    let out = Command::new("file").arg(&nodectl).output()?;
    let desc = String::from_utf8_lossy(&out.stdout);
    if !desc.contains("statically linked") {
        bail!("{} is not statically linked: {desc}", nodectl.display());
    }
    eprintln!(
        "xtask: nodectl is static, {} bytes",
        std::fs::metadata(&nodectl)?.len()
    );
    build::run(cargo().args(["test", "--workspace"]))?;
    // The docs' site builds (its examples and links were checked by the
    // tests above), and its start page renders: the screenshot is kept.
    let index = docs::build()?;
    let png = docs::screenshot_path();
    docs::screenshot(&index, &png)?;
    eprintln!(
        "xtask: docs site {}, screenshot {}",
        index.display(),
        png.display()
    );
    // The packages a site installs, lintian-clean; the QEMU boots' image
    // is made by installing nodeboot-nodectl's .deb into the node root.
    dist::run(&dist::default_out())?;
    if no_qemu {
        return Ok(());
    }
    e2e_run(&[], false)
}
