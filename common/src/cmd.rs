//! The one helper for running external commands: argv only, never a shell.
use anyhow::{bail, Context, Result};
use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many of the last output lines an error carries.
const TAIL_LINES: usize = 10;

fn shown<S: AsRef<OsStr>>(argv: &[S]) -> Vec<String> {
    argv.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect()
}

/// Run `argv[0]` with the remaining arguments, stdin from /dev/null.
/// Logs argv at debug; on failure the error names the command and carries
/// the tail of its stderr. Returns stdout.
pub fn run<S: AsRef<OsStr>>(argv: &[S]) -> Result<String> {
    let (prog, args) = argv.split_first().context("run: empty argv")?;
    let shown = shown(argv);
    tracing::debug!(argv = ?shown, "running");
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {}", shown.join(" ")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(TAIL_LINES).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{} failed ({}): {}",
            shown.join(" "),
            out.status,
            tail.join("\n")
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like [`run`], for long commands whose progress an operator wants to see
/// (debootstrap, apt, dracut): their stdout and stderr go to our stderr line
/// by line as they come, and on failure the error names the command and
/// carries the last lines of that output.
pub fn run_streaming<S: AsRef<OsStr>>(argv: &[S]) -> Result<()> {
    let (status, tail) = stream(argv, None, None)?;
    if !status.success() {
        bail!(
            "{} failed ({}): {}",
            shown(argv).join(" "),
            status,
            tail.join("\n")
        );
    }
    Ok(())
}

/// Like [`run_streaming`], for a program that must not run for ever (a
/// site's postscript): it runs in its own process group, which gets SIGTERM
/// when `timeout` is reached and SIGKILL 5 s later; that is an error naming
/// the command. The exit status is returned, whatever it is, with the last
/// lines of output.
pub fn run_bounded<S: AsRef<OsStr>>(
    argv: &[S],
    timeout: Duration,
) -> Result<(ExitStatus, Vec<String>)> {
    stream(argv, Some(timeout), None)
}

/// [`run_bounded`] in the working directory `dir` (a repository's `post.sh`).
pub fn run_bounded_in<S: AsRef<OsStr>>(
    argv: &[S],
    timeout: Duration,
    dir: &std::path::Path,
) -> Result<(ExitStatus, Vec<String>)> {
    stream(argv, Some(timeout), Some(dir))
}

fn stream<S: AsRef<OsStr>>(
    argv: &[S],
    timeout: Option<Duration>,
    dir: Option<&std::path::Path>,
) -> Result<(ExitStatus, Vec<String>)> {
    let (prog, args) = argv.split_first().context("run: empty argv")?;
    let shown = shown(argv);
    tracing::debug!(argv = ?shown, "running");
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if timeout.is_some() {
        cmd.process_group(0);
    }
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", shown.join(" ")))?;
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES + 1)));
    let pumps = [
        pump(
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn Read + Send>),
            &tail,
        ),
        pump(
            child
                .stderr
                .take()
                .map(|e| Box::new(e) as Box<dyn Read + Send>),
            &tail,
        ),
    ];
    let start = Instant::now();
    let mut killed = None;
    let status = loop {
        let Some(limit) = timeout else {
            break child
                .wait()
                .with_context(|| format!("waiting for {}", shown.join(" ")))?;
        };
        if let Some(st) = child
            .try_wait()
            .with_context(|| format!("waiting for {}", shown.join(" ")))?
        {
            break st;
        }
        let pgid = child.id() as libc::pid_t;
        match killed {
            None if start.elapsed() >= limit => {
                tracing::warn!(
                    "{} still runs after {}s: SIGTERM",
                    shown.join(" "),
                    limit.as_secs()
                );
                // SAFETY: kill(2) on the child's own process group.
                unsafe { libc::kill(-pgid, libc::SIGTERM) };
                killed = Some(Instant::now());
            }
            Some(t) if t.elapsed() >= Duration::from_secs(5) => {
                // SAFETY: as above.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // A bounded program may leave a background child holding its output
    // (`daemon &` in a post.sh): give the pumps a moment, then stop waiting
    // for them rather than hang the boot.
    let drained = Instant::now();
    for p in pumps.into_iter().flatten() {
        if timeout.is_some() {
            while !p.is_finished() && drained.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if !p.is_finished() {
                tracing::warn!(
                    "{} exited but left processes holding its output; not waiting for them",
                    shown.join(" ")
                );
                continue;
            }
        }
        let _ = p.join();
    }
    let tail: Vec<String> = tail
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect();
    if killed.is_some() {
        bail!(
            "{} did not finish within {}s and was killed: {}",
            shown.join(" "),
            timeout.unwrap_or_default().as_secs(),
            tail.join("\n")
        );
    }
    Ok((status, tail))
}

/// Copy `r` to our stderr line by line, keeping the last lines in `tail`.
fn pump(
    r: Option<Box<dyn Read + Send>>,
    tail: &Arc<Mutex<VecDeque<String>>>,
) -> Option<std::thread::JoinHandle<()>> {
    let r = r?;
    let tail = Arc::clone(tail);
    Some(std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        while let Ok(n) = r.read_until(b'\n', &mut buf) {
            if n == 0 {
                break;
            }
            let _ = std::io::stderr().lock().write_all(&buf);
            let line = String::from_utf8_lossy(&buf).trim_end().to_string();
            let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
            t.push_back(line);
            if t.len() > TAIL_LINES {
                t.pop_front();
            }
            buf.clear();
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounded_program_leaving_a_child_on_its_output_does_not_hang() {
        // post.sh doing `daemon &`: the child keeps stdout open for 30 s.
        let t = Instant::now();
        let (st, tail) = run_bounded(
            &["/bin/sh", "-c", "sleep 30 & echo started"],
            Duration::from_secs(20),
        )
        .unwrap();
        assert!(st.success());
        assert_eq!(tail, ["started"]);
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }

    #[test]
    fn ok_returns_stdout() {
        assert_eq!(run(&["echo", "hi"]).unwrap(), "hi\n");
    }

    #[test]
    fn failure_names_command_and_stderr() {
        let e = run(&["ls", "/nonexistent-nodeboot"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("ls /nonexistent-nodeboot failed"), "{e}");
        assert!(e.contains("No such file"), "{e}");
    }

    #[test]
    fn missing_program_is_named() {
        let e = format!("{:#}", run(&["nodeboot-no-such-prog"]).unwrap_err());
        assert!(e.contains("starting nodeboot-no-such-prog"), "{e}");
    }

    #[test]
    fn streaming_ok() {
        run_streaming(&["echo", "streamed"]).unwrap();
    }

    #[test]
    fn streaming_failure_carries_output_tail() {
        let e = run_streaming(&["ls", "/nonexistent-nodeboot"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("ls /nonexistent-nodeboot failed"), "{e}");
        assert!(e.contains("No such file"), "{e}");
    }

    #[test]
    fn streaming_missing_program_is_named() {
        let e = format!(
            "{:#}",
            run_streaming(&["nodeboot-no-such-prog"]).unwrap_err()
        );
        assert!(e.contains("starting nodeboot-no-such-prog"), "{e}");
    }

    #[test]
    fn bounded_returns_the_exit_status() {
        let (st, tail) = run_bounded(
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(st.code(), Some(3));
        assert!(
            tail.contains(&"out".to_string()) && tail.contains(&"err".to_string()),
            "{tail:?}"
        );
    }

    #[test]
    fn bounded_kills_the_whole_group_at_the_timeout() {
        let t = Instant::now();
        // The child of the shell would keep the output pipe open if only
        // the shell were killed.
        let e = run_bounded(&["sh", "-c", "sleep 30 & sleep 30"], Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("did not finish within 1s and was killed"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }
}
