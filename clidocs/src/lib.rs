//! Man pages and shell completions made from a binary's clap definition.
//!
//! Each binary (nodectl, bootd, nodeimg) calls [`run_if_asked`] first
//! thing in `main`: `NAME generate-docs DIR` then calls [`generate`] and
//! exits. The word is not part of the clap definition, so no page and no
//! completion offers it. `cargo xtask dist` runs it and the packages
//! install what it writes:
//!
//! - `DIR/man/man1/NAME.1`, and `NAME-SUB.1` (`NAME-SUB-SUBSUB.1`, …) for
//!   every subcommand that is not hidden;
//! - `DIR/completions/bash/NAME`, `DIR/completions/zsh/_NAME`,
//!   `DIR/completions/fish/NAME.fish`.
use anyhow::{Context, Result};

pub mod examples;
use clap_complete::Shell;
use std::path::{Path, PathBuf};

/// Where [`generate`] puts a shell's completion script, relative to its `DIR`.
pub fn completion_path(shell: Shell, name: &str) -> PathBuf {
    let file = match shell {
        Shell::Zsh => format!("_{name}"),
        Shell::Fish => format!("{name}.fish"),
        _ => name.to_string(),
    };
    Path::new("completions").join(shell.to_string()).join(file)
}

/// The shells whose completions [`generate`] writes.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// The hidden first argument that makes a binary write its docs.
pub const SUBCOMMAND: &str = "generate-docs";

/// The hidden first argument that makes a binary check a command line
/// (`NAME check-args ARG…`, the docs' examples) without running it.
pub const CHECK_ARGS: &str = "check-args";

/// The hidden first argument that makes a binary write its command
/// reference in markdown (`NAME generate-markdown FILE`, the docs' site).
pub const MARKDOWN: &str = "generate-markdown";

/// When the process was run as `NAME generate-docs DIR`: write the docs of
/// `cmd()` under DIR, list the files on stdout and exit (status 1 with the
/// error on stderr, 2 for a bad command line). `NAME check-args ARG…`:
/// parse `NAME ARG…` with `cmd()` and exit 0, or print clap's error and
/// exit 2. `NAME generate-markdown FILE`: write [`markdown`] of `cmd()` to
/// FILE and exit. Otherwise return.
pub fn run_if_asked(cmd: impl FnOnce() -> clap::Command) {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == CHECK_ARGS) {
        let cmd = cmd();
        let name = cmd.get_name().to_string();
        let argv = std::iter::once(name.into()).chain(args[2..].iter().cloned());
        match cmd.try_get_matches_from(argv) {
            Ok(_) => std::process::exit(0),
            Err(e) if !e.use_stderr() => std::process::exit(0), // --help, --version
            Err(e) => {
                eprint!("{}", e.render());
                std::process::exit(2);
            }
        }
    }
    if args.get(1).is_some_and(|a| a == MARKDOWN) {
        let cmd = cmd();
        let name = cmd.get_name().to_string();
        let [_, _, file] = &args[..] else {
            eprintln!("usage: {name} {MARKDOWN} FILE");
            std::process::exit(2);
        };
        if let Err(e) = std::fs::write(file, markdown(cmd)) {
            eprintln!("{name}: error: writing {}: {e}", Path::new(file).display());
            std::process::exit(1);
        }
        std::process::exit(0);
    }
    if args.get(1).is_none_or(|a| a != SUBCOMMAND) {
        return;
    }
    let cmd = cmd();
    let name = cmd.get_name().to_string();
    let [_, _, dir] = &args[..] else {
        eprintln!("usage: {name} {SUBCOMMAND} DIR");
        std::process::exit(2);
    };
    match generate(cmd, Path::new(dir)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Write the man pages and completions of `cmd` under `dir` (made if
/// missing); returns the files written, sorted.
pub fn generate(cmd: clap::Command, dir: &Path) -> Result<Vec<PathBuf>> {
    let man = dir.join("man/man1");
    std::fs::create_dir_all(&man).with_context(|| format!("making {}", man.display()))?;
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    man_pages(&cmd, &man, &mut written)?;
    let name = cmd.get_name().to_string();
    for shell in SHELLS {
        let path = dir.join(completion_path(shell, &name));
        let parent = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent).with_context(|| format!("making {}", parent.display()))?;
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd, &name, &mut buf);
        std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    written.sort();
    Ok(written)
}

/// The page of `cmd` and of its visible subcommands, recursively; a
/// subcommand's page is named by its display name (`nodectl-secret-fetch`).
fn man_pages(cmd: &clap::Command, man: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, man, written)?;
    }
    let page = clap_mangen::Man::new(cmd.clone());
    let path = man.join(page.get_filename());
    let mut buf = Vec::new();
    page.render(&mut buf)
        .with_context(|| format!("rendering {}", path.display()))?;
    let text = String::from_utf8(buf).with_context(|| format!("rendering {}", path.display()))?;
    std::fs::write(&path, ascii_roff(&text))
        .with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    Ok(())
}

/// The command reference of `cmd` in markdown: one section per visible
/// command and subcommand, each its `--help` text verbatim (so the page
/// says exactly what the binary says, and cannot drift from it).
pub fn markdown(cmd: clap::Command) -> String {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let name = cmd.get_name().to_string();
    let mut out = format!(
        "# {name}\n\n<!-- Generated by `{name} {MARKDOWN}` (cargo xtask docs) from its clap \
         definition: do not edit; a test fails when it differs. -->\n"
    );
    markdown_section(&mut cmd, &name, 2, &mut out);
    out
}

fn markdown_section(cmd: &mut clap::Command, path: &str, level: usize, out: &mut String) {
    let help = cmd.render_long_help().to_string();
    let help: Vec<&str> = help.lines().map(str::trim_end).collect();
    out.push_str(&format!(
        "\n{} `{path}`\n\n```text\n{}\n```\n",
        "#".repeat(level.min(6)),
        help.join("\n").trim_end()
    ));
    for sub in cmd.get_subcommands_mut().filter(|s| !s.is_hide_set()) {
        let sub_path = format!("{path} {}", sub.get_name());
        markdown_section(sub, &sub_path, level + 1, out);
    }
}

/// `text` with every non-ASCII character as a groff escape (`…` → `\[u2026]`):
/// the page renders the same whatever the reader's locale and input
/// encoding (groff reads Latin-1 unless preconv runs first).
fn ascii_roff(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\[u{:04X}]", u32::from(c)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn sample() -> clap::Command {
        clap::Command::new("tool")
            .version("1.2.3")
            .about("a sample tool")
            .arg(clap::arg!(-v --verbose "say more"))
            .subcommand(
                clap::Command::new("fetch")
                    .about("fetch a file")
                    .long_about("fetch a file … with retries → FILE")
                    .arg(clap::arg!(<URL> "what to fetch"))
                    .arg(clap::arg!(-o --output <FILE> "where to write it")),
            )
            .subcommand(
                clap::Command::new("secret")
                    .about("secrets")
                    .subcommand(clap::Command::new("get").about("get one")),
            )
            .subcommand(clap::Command::new("debug").hide(true))
    }

    #[test]
    fn markdown_a_section_per_visible_command_with_its_help() {
        let md = markdown(sample());
        let heads: Vec<&str> = md.lines().filter(|l| l.starts_with('#')).collect();
        assert_eq!(
            heads,
            [
                "# tool",
                "## `tool`",
                "### `tool fetch`",
                "### `tool secret`",
                "#### `tool secret get`"
            ]
        );
        assert!(md.contains("fetch a file … with retries → FILE"), "{md}");
        assert!(md.contains("Usage: tool fetch [OPTIONS] <URL>"), "{md}");
        assert!(!md.contains("debug"), "a hidden subcommand shows:\n{md}");
        assert!(!md.contains('\x1b'), "escape codes in:\n{md}");
    }

    fn names(files: &[PathBuf], dir: &Path) -> Vec<String> {
        files
            .iter()
            .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn a_page_per_visible_subcommand_and_three_shells() {
        let t = tempfile::tempdir().unwrap();
        let files = generate(sample(), t.path()).unwrap();
        assert_eq!(
            names(&files, t.path()),
            [
                "completions/bash/tool",
                "completions/fish/tool.fish",
                "completions/zsh/_tool",
                "man/man1/tool-fetch.1",
                "man/man1/tool-secret-get.1",
                "man/man1/tool-secret.1",
                "man/man1/tool.1",
            ]
        );
        let top = std::fs::read_to_string(t.path().join("man/man1/tool.1")).unwrap();
        assert!(top.contains("tool\\-fetch(1)"), "{top}");
        assert!(top.contains("tool\\-secret(1)"), "{top}");
        assert!(!top.contains("debug"), "hidden subcommand listed: {top}");
        let fetch = std::fs::read_to_string(t.path().join("man/man1/tool-fetch.1")).unwrap();
        assert!(fetch.contains("\\-\\-output"), "{fetch}");
        assert!(fetch.is_ascii(), "{fetch}");
        assert!(
            fetch.contains("\\[u2026] with retries \\[u2192] FILE"),
            "{fetch}"
        );
        let bash = std::fs::read_to_string(t.path().join("completions/bash/tool")).unwrap();
        assert!(
            bash.contains("fetch") && bash.contains("--output"),
            "{bash}"
        );
    }

    /// groff renders every page without a warning (-ww), and the bash
    /// completion is valid bash.
    #[test]
    fn pages_render_without_warnings() {
        let t = tempfile::tempdir().unwrap();
        let files = generate(sample(), t.path()).unwrap();
        for f in files
            .iter()
            .filter(|f| f.extension().is_some_and(|x| x == "1"))
        {
            let out = Command::new("groff")
                .args(["-man", "-Tutf8", "-ww", "-P-cbou"])
                .arg(f)
                .output()
                .expect("groff (Debian package groff-base)");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && err.is_empty(),
                "{}: {err}",
                f.display()
            );
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("NAME"), "{}: {text}", f.display());
            if f.ends_with("tool-fetch.1") {
                assert!(
                    text.contains("fetch a file … with retries → FILE"),
                    "{text}"
                );
            }
        }
        let st = Command::new("bash")
            .arg("-n")
            .arg(t.path().join("completions/bash/tool"))
            .status()
            .unwrap();
        assert!(st.success());
    }

    #[test]
    fn unwritable_dir_is_named() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("file");
        std::fs::write(&file, "").unwrap();
        let e = format!("{:#}", generate(sample(), &file).unwrap_err());
        assert!(e.contains(&file.display().to_string()), "{e}");
    }
}
