//! The examples of the docs' site (`docs/src`), for the tests that load
//! them with the real parsers and command lines.
//!
//! A fenced block's info string says what it holds: ```` ```toml,inventory ````
//! (language, then kind: `inventory`, `bootd`, `node`, `provision`,
//! `grendel`, or `fragment` for a piece of a file that is only checked to
//! be TOML/JSON). An mdBook `{{#include PATH}}` line inside a block is
//! replaced by the file it names (relative to the page). The command
//! lines of ```` ```sh ```` blocks are checked against the binaries' clap
//! definitions (see [`command_lines`]).
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The kinds a TOML or JSON block may name.
pub const KINDS: [&str; 6] = [
    "inventory",
    "bootd",
    "node",
    "provision",
    "grendel",
    "fragment",
];

/// `docs/src` of the workspace, from a crate's `CARGO_MANIFEST_DIR`.
pub fn docs_src(manifest_dir: &str) -> PathBuf {
    Path::new(manifest_dir).join("../docs/src")
}

/// One fenced block of a page.
#[derive(Debug, Clone)]
pub struct Block {
    /// `docs/src/…/page.md:LINE` of the opening fence.
    pub at: String,
    /// The language: the info string's first word (`toml`, `sh`, …).
    pub lang: String,
    /// The kind: its second word, if any.
    pub kind: Option<String>,
    /// The text, includes resolved.
    pub text: String,
}

/// The markdown pages under `dir`, sorted.
pub fn pages(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "md") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Every fenced block of every page under `dir`.
pub fn blocks(dir: &Path) -> Result<Vec<Block>> {
    let mut out = Vec::new();
    for page in pages(dir)? {
        let text = std::fs::read_to_string(&page)
            .with_context(|| format!("reading {}", page.display()))?;
        let mut open: Option<(usize, String, String)> = None;
        for (i, line) in text.lines().enumerate() {
            if let Some(info) = line.trim_start().strip_prefix("```") {
                match open.take() {
                    None => open = Some((i + 1, info.trim().to_string(), String::new())),
                    Some((at, info, body)) => {
                        let mut words = info.split([',', ' ']).filter(|w| !w.is_empty());
                        out.push(Block {
                            at: format!("{}:{at}", page.display()),
                            lang: words.next().unwrap_or("").to_string(),
                            kind: words.next().map(str::to_string),
                            text: body,
                        });
                    }
                }
                continue;
            }
            if let Some((_, _, body)) = open.as_mut() {
                let t = line.trim();
                if let Some(inc) = t
                    .strip_prefix("{{#include ")
                    .and_then(|r| r.strip_suffix("}}"))
                {
                    let file = page.parent().unwrap_or(dir).join(inc.trim());
                    let inc = std::fs::read_to_string(&file).with_context(|| {
                        format!("{}:{}: including {}", page.display(), i + 1, file.display())
                    })?;
                    body.push_str(&inc);
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
        if let Some((at, _, _)) = open {
            bail!("{}:{at}: fenced block never closed", page.display());
        }
    }
    Ok(out)
}

/// The blocks of language `lang` (`toml`, `json`) and kind `kind`.
pub fn blocks_of(dir: &Path, lang: &str, kind: &str) -> Result<Vec<Block>> {
    Ok(blocks(dir)?
        .into_iter()
        .filter(|b| b.lang == lang && b.kind.as_deref() == Some(kind))
        .collect())
}

/// The command lines of `name` in the `sh` blocks under `dir`: each line
/// (a `\` at its end joins the next), a leading `$ ` or `# ` prompt and a
/// trailing `# comment` dropped, split into words as the shell would
/// (quotes), cut at the first `|`, `;`, `&&`, `||` or redirection; those
/// whose first word is `name` (or `sudo name`), as (where, arguments).
pub fn command_lines(dir: &Path, name: &str) -> Result<Vec<(String, Vec<String>)>> {
    let mut out = Vec::new();
    for b in blocks(dir)?.into_iter().filter(|b| b.lang == "sh") {
        let mut joined = String::new();
        for (i, line) in b.text.lines().enumerate() {
            if let Some(l) = line.strip_suffix('\\') {
                joined.push_str(l);
                joined.push(' ');
                continue;
            }
            joined.push_str(line);
            let words = shell_words(&joined);
            joined.clear();
            let mut words = words.as_slice();
            if words.first().is_some_and(|w| w == "$" || w == "#") {
                words = &words[1..];
            }
            if words.first().is_some_and(|w| w == "sudo") {
                words = &words[1..];
            }
            if words.first().is_some_and(|w| w == name) {
                out.push((format!("{} (line {})", b.at, i + 1), words[1..].to_vec()));
            }
        }
    }
    Ok(out)
}

/// Run `bin check-args ARGS…` for every command line of `name` in the
/// docs under `dir`; returns the refused ones with clap's message, and how
/// many were checked.
pub fn refused_command_lines(bin: &Path, name: &str, dir: &Path) -> Result<(usize, Vec<String>)> {
    let lines = command_lines(dir, name)?;
    let mut refused = Vec::new();
    for (at, args) in &lines {
        let out = std::process::Command::new(bin)
            .arg(crate::CHECK_ARGS)
            .args(args)
            .output()
            .with_context(|| format!("running {}", bin.display()))?;
        if !out.status.success() {
            refused.push(format!(
                "{at}: {name} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok((lines.len(), refused))
}

/// The docs' command reference of `bin` (`docs/src/reference/commands/NAME.md`)
/// differs from what `bin generate-markdown` writes now: the difference,
/// with how to bring it up to date (`cargo xtask docs`).
pub fn markdown_drift(bin: &Path, name: &str, dir: &Path) -> Result<Option<String>> {
    let tmp = tempfile::tempdir()?;
    let fresh = tmp.path().join("fresh.md");
    let st = std::process::Command::new(bin)
        .arg(crate::MARKDOWN)
        .arg(&fresh)
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    if !st.success() {
        bail!("{} {}: {st}", bin.display(), crate::MARKDOWN);
    }
    let fresh = std::fs::read_to_string(&fresh)?;
    let page = dir.join("reference/commands").join(format!("{name}.md"));
    let old = std::fs::read_to_string(&page).unwrap_or_default();
    if old == fresh {
        return Ok(None);
    }
    let first = old
        .lines()
        .zip(fresh.lines())
        .position(|(a, b)| a != b)
        .unwrap_or(old.lines().count().min(fresh.lines().count()));
    Ok(Some(format!(
        "{} is not what {name} {} writes (first difference at line {}: {:?} vs {:?}); \
         run `cargo xtask docs` and commit it",
        page.display(),
        crate::MARKDOWN,
        first + 1,
        old.lines().nth(first).unwrap_or(""),
        fresh.lines().nth(first).unwrap_or("")
    )))
}

/// `line` split into words as sh would for a simple command: quotes
/// removed, stopping at a comment or an operator.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => cur.extend(chars.next()),
                        c => cur.push(c),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            '|' | ';' | '&' | '>' | '<' => break,
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// The broken links of the pages under `dir`: a relative link whose file
/// does not exist, or whose `#anchor` is not a heading of that page (as
/// mdBook makes its ids). Links outside the site (`http:`, `https:`,
/// `mailto:`) are not followed.
pub fn broken_links(dir: &Path) -> Result<Vec<String>> {
    let mut broken = Vec::new();
    for page in pages(dir)? {
        let text = std::fs::read_to_string(&page)
            .with_context(|| format!("reading {}", page.display()))?;
        for (i, line) in outside_code(&text) {
            let mut rest = line;
            while let Some(p) = rest.find("](") {
                rest = &rest[p + 2..];
                let Some(end) = rest.find(')') else { break };
                let target = &rest[..end];
                rest = &rest[end..];
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (file, anchor) = match target.split_once('#') {
                    Some((f, a)) => (f, Some(a)),
                    None => (target, None),
                };
                let file = if file.is_empty() {
                    page.clone()
                } else {
                    page.parent().unwrap_or(dir).join(file)
                };
                let at = format!("{}:{}: {target}", page.display(), i + 1);
                if !file.is_file() {
                    broken.push(format!("{at}: no file {}", file.display()));
                    continue;
                }
                if let Some(a) = anchor {
                    let t = std::fs::read_to_string(&file)?;
                    if !heading_ids(&t).iter().any(|id| id == a) {
                        broken.push(format!("{at}: no heading #{a} in {}", file.display()));
                    }
                }
            }
        }
    }
    Ok(broken)
}

/// The lines of `text` outside fenced blocks, numbered from 0.
fn outside_code(text: &str) -> Vec<(usize, &str)> {
    let mut fence = false;
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim_start().starts_with("```") {
            fence = !fence;
        } else if !fence {
            out.push((i, l));
        }
    }
    out
}

/// The ids mdBook gives the headings of a page: lowercased, spaces to
/// `-`, only alphanumerics, `-` and `_` kept; repeats get `-1`, `-2`, ….
pub fn heading_ids(text: &str) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for (_, l) in outside_code(text) {
        let Some(h) = l.strip_prefix('#') else {
            continue;
        };
        let h = h.trim_start_matches('#');
        if !h.starts_with(' ') {
            continue;
        }
        let mut id: String = h
            .trim()
            .chars()
            .filter_map(|c| {
                if c.is_alphanumeric() || c == '_' || c == '-' {
                    Some(c.to_lowercase().next().unwrap_or(c))
                } else if c == ' ' {
                    Some('-')
                } else {
                    None
                }
            })
            .collect();
        let n = seen.entry(id.clone()).or_insert(0);
        if *n > 0 {
            id = format!("{id}-{n}");
        }
        *n += 1;
        ids.push(id);
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_quotes_prompts_and_operators() {
        assert_eq!(
            shell_words("nodectl fetch 'a b' \"c\\\"d\" -o x | tee y # no"),
            ["nodectl", "fetch", "a b", "c\"d", "-o", "x"]
        );
        assert_eq!(shell_words("bootd serve # comment"), ["bootd", "serve"]);
        assert_eq!(shell_words("a=b#c"), ["a=b#c"]);
    }

    #[test]
    fn mdbook_heading_ids() {
        assert_eq!(
            heading_ids(
                "# Why nodectl does DHCP\n```\n# not\n```\n## `bootd.toml` keys\n## a\n## a\n"
            ),
            ["why-nodectl-does-dhcp", "bootdtoml-keys", "a", "a-1"]
        );
    }

    #[test]
    fn blocks_kinds_includes_commands_and_links() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::write(d.join("inc.toml"), "a = 1\n").unwrap();
        std::fs::write(
            d.join("p.md"),
            "# P\n\n- a list item:\n\n  ```toml,node\n  {{#include inc.toml}}\n  ```\n\n```sh\n$ nodectl status \\\n  --json\nls\n```\n[ok](p.md#p) [bad](q.md) [anchor](#nope) [web](https://example.org/)\n",
        )
        .unwrap();
        let b = blocks(d).unwrap();
        assert_eq!(b[0].kind.as_deref(), Some("node"));
        assert_eq!(b[0].text, "a = 1\n");
        let c = command_lines(d, "nodectl").unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].1, ["status", "--json"]);
        let broken = broken_links(d).unwrap();
        assert_eq!(broken.len(), 2, "{broken:?}");
        assert!(broken[0].contains("q.md: no file"), "{broken:?}");
        assert!(broken[1].contains("no heading #nope"), "{broken:?}");
    }
}
