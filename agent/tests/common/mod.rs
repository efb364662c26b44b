//! What the agent's root tests share: loop devices and the nodectl binary.
#![allow(dead_code)] // each test crate uses its part
use std::path::PathBuf;
use std::process::{Command, Output};

pub const NODECTL: &str = env!("CARGO_BIN_EXE_nodectl");
pub const MIB: u64 = 1 << 20;

pub fn run(argv: &[&str]) -> Output {
    Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

/// A TCP port of 127.0.0.1 that nothing listens on (just freed).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn ok(argv: &[&str]) -> String {
    let o = run(argv);
    assert!(
        o.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Run nodectl with `args`, echoing the command and its output to the test log.
pub fn nodectl(args: &[&str]) -> Output {
    let o = Command::new(NODECTL)
        .args(args)
        .env("NODECTL_LOG", "info")
        .output()
        .unwrap();
    eprintln!(
        "$ nodectl {}\n{}{}-> {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        o.status
    );
    o
}

/// What a nodectl run gave: exit code and output, as text.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Run nodectl with `args` (stdin null, log level info) and keep its output.
pub fn nodectl_out(args: &[&str]) -> Out {
    let o = Command::new(NODECTL)
        .args(args)
        .env("NODECTL_LOG", "info")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running nodectl");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// A sparse 512 MiB file on a loop device with partition scanning;
/// detached (and its partitions gone) on drop.
pub struct Loop {
    pub dev: String,
    pub img: PathBuf,
    _dir: tempfile::TempDir,
}

impl Loop {
    pub fn new() -> Loop {
        Loop::sized(512 * MIB)
    }

    pub fn sized(bytes: u64) -> Loop {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        std::fs::File::create(&img).unwrap().set_len(bytes).unwrap();
        let dev = ok(&[
            "losetup",
            "--find",
            "--show",
            "--partscan",
            img.to_str().unwrap(),
        ])
        .trim()
        .to_string();
        Loop {
            dev,
            img,
            _dir: dir,
        }
    }

    pub fn part(&self, n: u32) -> String {
        format!("{}p{n}", self.dev)
    }

    /// sha256 of the whole backing file (what the disk holds); sha256sum
    /// because sha2 in a debug build takes seconds per 512 MiB.
    pub fn digest(&self) -> String {
        ok(&["blockdev", "--flushbufs", &self.dev]);
        ok(&["sha256sum", self.img.to_str().unwrap()])
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).output();
    }
}
