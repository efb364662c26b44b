//! Kernel command line templates: Go `text/template` as Grendel renders
//! `BootImage.CommandLine`, through the `gtmpl` crate, with Sprig's
//! `toString` and `replace` (what the seed's `{{ $.nic.MAC | toString |
//! replace ":" "-" }}` needs).
//!
//! gtmpl 0.7 quirks handled here: an action left open at the end of the
//! text (`{{ $.host.Name `) makes its parser spin forever, so [`check`]
//! refuses it first; its builtins index their arguments without checking
//! the count (`{{ not }}` panics), so they are replaced by wrappers that
//! check it; its error messages carry a line number of its own, dropped.
use gtmpl::{Context, Func, FuncError, Template, Value};
use std::collections::HashMap;

/// Why a template cannot be parsed or rendered (one line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

/// Go's `%v` of a value: strings as they are, lists as `[a b]`, maps as
/// `map[k:v]`, nil as `<nil>` (what Sprig's `toString` gives).
pub fn go_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(go_string).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(m) | Value::Map(m) => {
            let mut keys: Vec<_> = m.keys().collect();
            keys.sort();
            let kv: Vec<_> = keys
                .iter()
                .map(|k| format!("{k}:{}", go_string(&m[*k])))
                .collect();
            format!("map[{}]", kv.join(" "))
        }
        Value::Nil | Value::NoValue => "<nil>".into(),
        Value::Function(_) => "<func>".into(),
    }
}

fn arity(name: &str, args: &[Value], min: usize, max: Option<usize>) -> Result<(), FuncError> {
    let ok = args.len() >= min && max.is_none_or(|m| args.len() <= m);
    if ok {
        Ok(())
    } else {
        let want = match max {
            Some(m) if m == min => format!("{min}"),
            Some(m) => format!("{min} to {m}"),
            None => format!("at least {min}"),
        };
        Err(FuncError::Generic(format!(
            "{name}: wants {want} arguments, got {}",
            args.len()
        )))
    }
}

/// Sprig `toString`: `%v` of its argument.
fn to_string(args: &[Value]) -> Result<Value, FuncError> {
    arity("toString", args, 1, Some(1))?;
    Ok(Value::from(go_string(&args[0])))
}

/// Sprig `replace OLD NEW STRING`: every OLD in STRING becomes NEW (so it
/// takes the piped value last).
fn replace(args: &[Value]) -> Result<Value, FuncError> {
    arity("replace", args, 3, Some(3))?;
    let (old, new, s) = (
        go_string(&args[0]),
        go_string(&args[1]),
        go_string(&args[2]),
    );
    Ok(Value::from(s.replace(&old, &new)))
}

macro_rules! checked {
    ($($wrap:ident = $name:literal, $f:path, $min:expr, $max:expr;)*) => {
        $(fn $wrap(args: &[Value]) -> Result<Value, FuncError> {
            arity($name, args, $min, $max)?;
            $f(args)
        })*
        const CHECKED: &[(&str, Func)] = &[$(($name, $wrap as Func)),*];
    };
}

checked! {
    eq_ = "eq", gtmpl::funcs::eq, 2, None;
    ne_ = "ne", gtmpl::funcs::ne, 2, Some(2);
    lt_ = "lt", gtmpl::funcs::lt, 2, Some(2);
    le_ = "le", gtmpl::funcs::le, 2, Some(2);
    gt_ = "gt", gtmpl::funcs::gt, 2, Some(2);
    ge_ = "ge", gtmpl::funcs::ge, 2, Some(2);
    len_ = "len", gtmpl::funcs::len, 1, Some(1);
    and_ = "and", gtmpl::funcs::and, 1, None;
    or_ = "or", gtmpl::funcs::or, 1, None;
    not_ = "not", gtmpl::funcs::not, 1, Some(1);
    urlquery_ = "urlquery", gtmpl::funcs::urlquery, 1, None;
    printf_ = "printf", gtmpl::funcs::printf, 1, None;
    index_ = "index", gtmpl::funcs::index, 1, None;
    call_ = "call", gtmpl::funcs::call, 1, None;
}

/// gtmpl's messages start with `template: :N:` (its own, off-by-one line).
fn clean(e: impl std::fmt::Display) -> String {
    let s = e.to_string();
    let rest = s.strip_prefix("template: ").unwrap_or(&s);
    match rest.strip_prefix(':').and_then(|r| r.split_once(':')) {
        Some((n, msg)) if n.bytes().all(|b| b.is_ascii_digit()) => msg.trim().to_string(),
        _ => rest.to_string(),
    }
}

/// Deepest nesting of blocks, and of parentheses in an action, accepted
/// (a kernel command line needs a few).
const MAX_NESTING: usize = 32;

/// Refuse what gtmpl cannot parse safely: an action (`{{`) still open at
/// the end of the text, and a non-ASCII character inside an action but
/// outside a quoted string, raw string, character constant or comment
/// (gtmpl's lexer backs up one byte after such a character and panics
/// slicing inside it: `{{ $˓ }}`, found by `cargo xtask fuzz
/// cmdline_template`). Quotes, raw strings, character constants and a
/// comment opening an action are skipped; a quote or comment left open is
/// left to gtmpl, which reports it. (`/*` later in an action is no comment
/// for gtmpl: taken for one, `{{ /* .` spun gtmpl forever; fuzzing found it.)
fn check_closed(text: &str) -> Result<(), TemplateError> {
    let b = text.as_bytes();
    // A kernel command line is printable text: control characters (CR,
    // NUL, …; tab and newline aside) are refused anywhere, before gtmpl,
    // whose lexer could hang on them in an open character constant.
    if let Some(at) = b
        .iter()
        .position(|&c| (c < 0x20 && c != b'\t' && c != b'\n') || c == 0x7f)
    {
        let col = text[..at].chars().count() + 1;
        return Err(TemplateError(format!(
            "control character {:#04x} at character {col}: a command line template is printable text",
            b[at]
        )));
    }
    let unclosed = |what: &str, at: usize| {
        let col = text[..at].chars().count() + 1;
        TemplateError(format!("unclosed {what} at character {col}"))
    };
    let mut i = 0;
    // Blocks (if, range, with, block, define … end) open: gtmpl parses them,
    // and parentheses, by recursion; deep nesting overflowed the stack.
    let mut blocks = 0usize;
    while let Some(off) = text[i..].find("{{") {
        let start = i + off;
        i = start + 2;
        // A comment only opens an action (`{{/*`, `{{- /*`), as in Go;
        // elsewhere `/*` is two characters of the action.
        let comment_at = if b[i..].starts_with(b"- ") { i + 2 } else { i };
        let word: String = text[comment_at..]
            .trim_start()
            .chars()
            .take_while(char::is_ascii_alphabetic)
            .collect();
        match word.as_str() {
            "if" | "range" | "with" | "block" | "define" => blocks += 1,
            "end" => blocks = blocks.saturating_sub(1),
            _ => {}
        }
        let mut parens = 0usize;
        if blocks > MAX_NESTING {
            let col = text[..start].chars().count() + 1;
            return Err(TemplateError(format!(
                "blocks nested more than {MAX_NESTING} deep at character {col}"
            )));
        }
        loop {
            if i >= b.len() {
                let col = text[..start].chars().count() + 1;
                return Err(TemplateError(format!(
                    "unclosed action: the `{{{{` at character {col} has no `}}}}`"
                )));
            }
            if b[i..].starts_with(b"}}") {
                i += 2;
                break;
            }
            if i == comment_at && b[i..].starts_with(b"/*") {
                match text[i + 2..].find("*/") {
                    Some(e) => i += 2 + e + 2,
                    None => return Err(unclosed("comment", i)),
                }
                continue;
            }
            match b[i] {
                q @ (b'"' | b'\'') => {
                    let open = i;
                    i += 1;
                    let (mut escapes, mut non_ascii) = (false, false);
                    while i < b.len() && b[i] != q && b[i] != b'\n' {
                        if b[i] == b'\\' {
                            check_escape(text, i)?;
                            escapes = true;
                            i += 2;
                        } else {
                            non_ascii |= !b[i].is_ascii();
                            i += 1;
                        }
                    }
                    if escapes && non_ascii {
                        let col = text[..open].chars().count() + 1;
                        return Err(TemplateError(format!(
                            "the quoted text at character {col} has both escapes and non-ASCII characters"
                        )));
                    }
                    if i >= b.len() || b[i] != q {
                        let what = if q == b'"' {
                            "quoted string"
                        } else {
                            "character constant"
                        };
                        return Err(unclosed(what, open));
                    }
                    i += 1;
                }
                // gtmpl unquotes raw strings too, escapes and all.
                b'`' => match text[i + 1..].find('`') {
                    Some(e) => {
                        let (open, end) = (i, i + 1 + e);
                        let mut j = i + 1;
                        let mut escapes = false;
                        while j < end {
                            if b[j] == b'\\' {
                                check_escape(text, j)?;
                                escapes = true;
                                j += 2;
                            } else {
                                j += 1;
                            }
                        }
                        if escapes && !text[open..end].is_ascii() {
                            let col = text[..open].chars().count() + 1;
                            return Err(TemplateError(format!(
                                "the quoted text at character {col} has both escapes and non-ASCII characters"
                            )));
                        }
                        i = end + 1;
                    }
                    None => return Err(unclosed("raw string", i)),
                },
                b'(' => {
                    parens += 1;
                    if parens > MAX_NESTING {
                        let col = text[..i].chars().count() + 1;
                        return Err(TemplateError(format!(
                            "parentheses nested more than {MAX_NESTING} deep at character {col}"
                        )));
                    }
                    i += 1;
                }
                b')' => {
                    parens = parens.saturating_sub(1);
                    i += 1;
                }
                c if !c.is_ascii() => {
                    let col = text[..i].chars().count() + 1;
                    return Err(TemplateError(format!(
                        "non-ASCII character at character {col} inside an action (only in quotes)"
                    )));
                }
                b'\\' => {
                    let col = text[..i].chars().count() + 1;
                    return Err(TemplateError(format!(
                        "backslash at character {col} inside an action (only in quotes)"
                    )));
                }
                _ => i += 1,
            }
        }
    }
    Ok(())
}

/// The escape at `i` (a backslash) in a quoted string of an action: one
/// gtmpl unquotes without looping or slicing inside a character: `\b \f
/// \n \r \t \' \" \\`, `\x` and 2 hex digits, `\u` and 4, `\U` and 8
/// (`"\x-"` spun gtmpl forever: found by `cargo xtask fuzz cmdline_template`).
fn check_escape(text: &str, i: usize) -> Result<(), TemplateError> {
    let b = text.as_bytes();
    let hex = |n: usize| {
        b.get(i + 2..i + 2 + n)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    };
    let ok = match b.get(i + 1) {
        Some(b'b' | b'f' | b'n' | b'r' | b't' | b'\'' | b'"' | b'\\') => true,
        Some(b'x') => hex(2),
        Some(b'u') => hex(4),
        Some(b'U') => hex(8),
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let col = text[..i].chars().count() + 1;
    Err(TemplateError(format!(
        "bad escape at character {col} (\\b \\f \\n \\r \\t \\' \\\" \\\\ \\xHH \\uHHHH \\UHHHHHHHH)"
    )))
}

/// A parsed template with the functions registered.
fn parse(text: &str) -> Result<Template, TemplateError> {
    check_closed(text)?;
    let mut t = Template::default();
    t.add_funcs(CHECKED);
    t.add_func("toString", to_string);
    t.add_func("replace", replace);
    t.parse(text).map_err(|e| TemplateError(clean(e)))?;
    Ok(t)
}

/// Check that `text` parses.
pub fn check(text: &str) -> Result<(), TemplateError> {
    parse(text).map(|_| ())
}

/// Render `text` with `data` as `.` (and `$`).
pub fn render(text: &str, data: &Value) -> Result<String, TemplateError> {
    let t = parse(text)?;
    t.render(&Context::from(data.clone()))
        .map_err(|e| TemplateError(clean(e)))
}

/// A Go-style object (struct fields by name) from pairs.
pub fn object(fields: Vec<(&str, Value)>) -> Value {
    Value::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<HashMap<_, _>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Value {
        object(vec![
            (
                "host",
                object(vec![
                    ("Name", "cn1".into()),
                    (
                        "Tags",
                        Value::from(vec![Value::from("compute"), "gpu".into()]),
                    ),
                    ("Provision", true.into()),
                ]),
            ),
            (
                "nic",
                object(vec![
                    ("MAC", "52:54:00:12:34:56".into()),
                    ("IP", "10.0.2.15/24".into()),
                ]),
            ),
            ("image", object(vec![("Name", "squareos-9.2".into())])),
            ("liveimg", "http://10.0.2.2:8080/live.squashfs".into()),
            ("address", "http://10.0.2.2:8080".into()),
        ])
    }

    #[test]
    fn renders_like_grendel() {
        let cases: &[(&str, &str)] = &[
            (
                r#"BOOTIF=01-{{ $.nic.MAC | toString | replace ":" "-" }} grendel.hostname={{ $.host.Name }}"#,
                "BOOTIF=01-52-54-00-12-34-56 grendel.hostname=cn1",
            ),
            (
                "root=live:{{ $.liveimg }}",
                "root=live:http://10.0.2.2:8080/live.squashfs",
            ),
            (
                "grendel.address={{ .address }}",
                "grendel.address=http://10.0.2.2:8080",
            ),
            (
                "{{ $.image.Name }} {{ $.nic.IP }}",
                "squareos-9.2 10.0.2.15/24",
            ),
            ("{{ $.host.Tags | toString }}", "[compute gpu]"),
            ("{{ $.host.Provision }}", "true"),
            (
                "{{ range $i, $t := $.host.Tags }}{{ $i }}={{ $t }},{{ end }}",
                "0=compute,1=gpu,",
            ),
            (
                r#"{{ if eq $.host.Name "cn1" }}first{{ else }}other{{ end }}"#,
                "first",
            ),
            (r#"{{ replace "-" "" "a-b-c" }}"#, "abc"),
            (
                r#"{{ printf "%s.%s" $.host.Name "cluster" }}"#,
                "cn1.cluster",
            ),
            ("{{- $.host.Name -}} x", "cn1x"),
            ("no actions at all", "no actions at all"),
            ("quoted {{ \"}}\" }}", "quoted }}"),
            // Non-ASCII outside actions, and in quotes and comments inside.
            ("né {{ \"→\" }}{{/* ü */}} {{ `ß` }}", "né → ß"),
        ];
        for (t, want) in cases {
            assert_eq!(render(t, &data()).as_deref(), Ok(*want), "{t}");
        }
    }

    #[test]
    fn refuses() {
        let cases: &[(&str, &str)] = &[
            (
                "{{ $.host.Name ",
                "unclosed action: the `{{` at character 1 has no `}}`",
            ),
            (
                "a {{ }} b {{ ",
                "unclosed action: the `{{` at character 11 has no `}}`",
            ),
            ("{{ $.host.Name | nosuch }}", "function nosuch not defined"),
            ("{{ if $.host.Name }}", "unexpected EOF"),
            ("{{ \"abc }}", "unclosed quoted string at character 4"),
            ("{{ 'a }}", "unclosed character constant at character 4"),
            ("{{ `a }}", "unclosed raw string at character 4"),
            // fuzz/artifacts/cmdline_template/crash-4f67cb…: gtmpl's lexer
            // panics on these.
            (
                "root=live:{{ $\u{2d3}iveimg }}",
                "non-ASCII character at character 15 inside an action (only in quotes)",
            ),
            (
                "é {{ $.host.Name }} {{ .x\u{702} }}",
                "non-ASCII character at character 26 inside an action (only in quotes)",
            ),
            // fuzz/artifacts/cmdline_template/timeout-e19a51…: `/*` inside
            // an action is no comment, and gtmpl spun on the open action.
            (
                "{{ /* .",
                "unclosed action: the `{{` at character 1 has no `}}`",
            ),
            (
                "{{ \"a\" }} {{ {{/*   .",
                "unclosed action: the `{{` at character 11 has no `}}`",
            ),
            ("{{/* x", "unclosed comment at character 3"),
            // fuzz/artifacts/cmdline_template/timeout-621bc1…: an open
            // character constant with CRs and NULs hung gtmpl's lexer.
            (
                "{{ if and \r\r'1.\\\\]\0 }}",
                "control character 0x0d at character 11: a command line template is printable text",
            ),
            (
                "{{ 1 \\ 2 }}",
                "backslash at character 6 inside an action (only in quotes)",
            ),
            // fuzz/artifacts/cmdline_template/timeout-0daa30…: escapes
            // gtmpl loops on, or slices inside a character for.
            (
                r#"{{ replace ":<" "\x-" "a" }}"#,
                "bad escape at character 18 (\\b \\f \\n \\r \\t \\' \\\" \\\\ \\xHH \\uHHHH \\UHHHHHHHH)",
            ),
            (
                r#"{{ "\u12" }}"#,
                "bad escape at character 5 (\\b \\f \\n \\r \\t \\' \\\" \\\\ \\xHH \\uHHHH \\UHHHHHHHH)",
            ),
            (
                "{{ \"\\x41abcé\" }}",
                "the quoted text at character 4 has both escapes and non-ASCII characters",
            ),
            // fuzz/artifacts/cmdline_template/crash-390dac…: a raw string
            // ending with a backslash (gtmpl unquotes raw strings too).
            (
                "{{ `raw\\` }}",
                "bad escape at character 8 (\\b \\f \\n \\r \\t \\' \\\" \\\\ \\xHH \\uHHHH \\UHHHHHHHH)",
            ),
        ];
        for (t, want) in cases {
            assert_eq!(check(t), Err(TemplateError(want.to_string())), "{t}");
        }
        // fuzz/corpus/inventory/e3b38f…: 300 nested parentheses overflowed
        // the stack of a debug build in gtmpl's recursive parser.
        let deep = format!("{{{{ {}1{} }}}}", "(".repeat(33), ")".repeat(33));
        assert_eq!(
            check(&deep),
            Err(TemplateError(
                "parentheses nested more than 32 deep at character 36".into()
            ))
        );
        let ok = format!("{{{{ {}1{} }}}}", "(".repeat(32), ")".repeat(32));
        assert_eq!(render(&ok, &data()).as_deref(), Ok("1"));
        let ifs = "{{ if 1 }}".repeat(33) + &"{{ end }}".repeat(33);
        assert!(check(&ifs)
            .unwrap_err()
            .0
            .starts_with("blocks nested more than 32 deep"));
        // Render-time errors (Go reports them at Execute too).
        assert!(render("{{ $.nic.Nope }}", &data()).is_err());
        assert_eq!(
            render("{{ not }}", &data()),
            Err(TemplateError("not: wants 1 arguments, got 0".into()))
        );
        assert!(render(r#"{{ replace "a" }}"#, &data())
            .unwrap_err()
            .0
            .contains("replace: wants 3"));
    }
}
