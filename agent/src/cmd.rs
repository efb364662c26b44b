//! The one helper for running external commands: argv only, never a shell.
use anyhow::{bail, Context, Result};
use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

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
    let (prog, args) = argv.split_first().context("run: empty argv")?;
    let shown = shown(argv);
    tracing::debug!(argv = ?shown, "running");
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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
    let status = child
        .wait()
        .with_context(|| format!("waiting for {}", shown.join(" ")))?;
    for p in pumps.into_iter().flatten() {
        let _ = p.join();
    }
    if !status.success() {
        let tail = tail.lock().unwrap_or_else(|e| e.into_inner());
        let tail: Vec<&str> = tail.iter().map(String::as_str).collect();
        bail!(
            "{} failed ({}): {}",
            shown.join(" "),
            status,
            tail.join("\n")
        );
    }
    Ok(())
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
}
