//! The one helper for running external commands: argv only, never a shell.
use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::process::{Command, Stdio};

/// Run `argv[0]` with the remaining arguments, stdin from /dev/null.
/// Logs argv at debug; on failure the error names the command and carries
/// the tail of its stderr. Returns stdout.
pub fn run<S: AsRef<OsStr>>(argv: &[S]) -> Result<String> {
    let (prog, args) = argv.split_first().context("run: empty argv")?;
    let shown: Vec<String> = argv
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    tracing::debug!(argv = ?shown, "running");
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {}", shown.join(" ")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(10).collect();
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
}
