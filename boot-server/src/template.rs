//! Kernel command line templates: Go `text/template` as Grendel renders
//! `BootImage.CommandLine`, through the `gtmpl` crate: Go's built-ins (all
//! upstream Grendel offers) and a small set of Sprig's functions (the
//! SquareFactory fork's `sprig.FuncMap()`: [`SPRIG`], with `toString` and
//! `replace` that the seed's `{{ $.nic.MAC | toString | replace ":" "-" }}`
//! needs).
//!
//! Bounded: a template is at most [`MAX_TEMPLATE`] bytes, its output at
//! most [`MAX_OUTPUT`] (and so is every string a function makes), `range`
//! does not nest and its bodies hold at most [`MAX_RANGE_ACTIONS`] actions
//! (over lists of the data, or of `splitList`: at most [`MAX_LIST`]),
//! `define`/`template`/`block` (recursion) are refused, and `printf`
//! widths are at most [`MAX_OUTPUT`].
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
    out("toString", go_string(&args[0]))
}

/// Actions accepted inside `range` bodies, all together, and the longest
/// list `splitList` makes: what a range does is bounded by their product.
pub const MAX_RANGE_ACTIONS: usize = 16;
pub const MAX_LIST: usize = 64;

/// Longest template accepted (bytes).
pub const MAX_TEMPLATE: usize = 8 * 1024;
/// Longest output, and longest string a function may make (bytes): a
/// kernel command line is at most 2048 (x86) to 4096 bytes.
pub const MAX_OUTPUT: usize = 4096;

/// A string result, refused beyond [`MAX_OUTPUT`].
fn out(name: &str, s: String) -> Result<Value, FuncError> {
    if s.len() > MAX_OUTPUT {
        return Err(FuncError::Generic(format!(
            "{name}: its result would be longer than {MAX_OUTPUT} bytes"
        )));
    }
    Ok(Value::from(s))
}

/// A string argument, as Go passes one to a `string` parameter (anything
/// else is Go's "wrong type" error).
fn string<'a>(name: &str, v: &'a Value) -> Result<&'a str, FuncError> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(FuncError::Generic(format!(
            "{name}: wrong type for value; expected string; got {}",
            go_type(other)
        ))),
    }
}

fn go_type(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "string",
        Value::Bool(_) => "bool",
        Value::Number(_) => "int",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "struct",
        Value::Map(_) => "map[string]interface {}",
        Value::Function(_) => "func",
        Value::Nil | Value::NoValue => "<nil>",
    }
}

/// Sprig's `empty`: nil, "", 0, false, an empty list or map (a struct is
/// never empty).
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Nil | Value::NoValue => true,
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Array(a) => a.is_empty(),
        Value::Map(m) => m.is_empty(),
        Value::Object(_) | Value::Function(_) => false,
    }
}

/// Go's `strconv.Quote`.
fn go_quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\r' => q.push_str("\\r"),
            '\t' => q.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => q.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => q.push_str(&format!("\\u{:04x}", c as u32)),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

macro_rules! string_fns {
    ($($f:ident = $name:literal, |$($a:ident),*| $body:expr;)*) => {
        $(fn $f(args: &[Value]) -> Result<Value, FuncError> {
            const N: usize = [$(stringify!($a)),*].len();
            arity($name, args, N, Some(N))?;
            let mut it = args.iter();
            $(let $a = string($name, it.next().unwrap_or(&Value::Nil))?;)*
            out($name, $body)
        })*
    };
}

// Sprig's argument order: the piped value (the string worked on) last.
string_fns! {
    lower = "lower", |s| s.to_lowercase();
    upper = "upper", |s| s.to_uppercase();
    trim = "trim", |s| s.trim().to_string();
    trim_all = "trimAll", |cut, s| s.trim_matches(|c| cut.contains(c)).to_string();
    trim_prefix = "trimPrefix", |p, s| s.strip_prefix(p).unwrap_or(s).to_string();
    trim_suffix = "trimSuffix", |x, s| s.strip_suffix(x).unwrap_or(s).to_string();
    nospace = "nospace", |s| s.chars().filter(|c| !c.is_whitespace()).collect();
    replace_ = "replace", |old, new, s| go_replace(s, old, new)?;
}

/// Go's `strings.ReplaceAll`, bounded: an empty OLD matches before every
/// character and at the end.
fn go_replace(s: &str, old: &str, new: &str) -> Result<String, FuncError> {
    let count = if old.is_empty() {
        s.chars().count() + 1
    } else {
        s.matches(old).count()
    };
    if s.len() - count * old.len() + count * new.len() > MAX_OUTPUT {
        return Err(FuncError::Generic(format!(
            "replace: its result would be longer than {MAX_OUTPUT} bytes"
        )));
    }
    if !old.is_empty() {
        return Ok(s.replace(old, new));
    }
    let mut r = String::new();
    for c in s.chars() {
        r.push_str(new);
        r.push(c);
    }
    r.push_str(new);
    Ok(r)
}

fn bool_fn(name: &str, args: &[Value], f: fn(&str, &str) -> bool) -> Result<Value, FuncError> {
    arity(name, args, 2, Some(2))?;
    Ok(Value::from(f(
        string(name, &args[1])?,
        string(name, &args[0])?,
    )))
}

/// Sprig `contains SUBSTR STRING`.
fn contains(args: &[Value]) -> Result<Value, FuncError> {
    bool_fn("contains", args, |s, sub| s.contains(sub))
}

/// Sprig `hasPrefix PREFIX STRING`.
fn has_prefix(args: &[Value]) -> Result<Value, FuncError> {
    bool_fn("hasPrefix", args, |s, p| s.starts_with(p))
}

/// Sprig `hasSuffix SUFFIX STRING`.
fn has_suffix(args: &[Value]) -> Result<Value, FuncError> {
    bool_fn("hasSuffix", args, |s, x| s.ends_with(x))
}

/// Sprig `repeat COUNT STRING` (bounded).
fn repeat(args: &[Value]) -> Result<Value, FuncError> {
    arity("repeat", args, 2, Some(2))?;
    let n = match &args[0] {
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
    .ok_or_else(|| FuncError::Generic("repeat: the count is not an integer".into()))?;
    let s = string("repeat", &args[1])?;
    let n = usize::try_from(n).unwrap_or(0);
    if s.len().saturating_mul(n) > MAX_OUTPUT {
        return Err(FuncError::Generic(format!(
            "repeat: its result would be longer than {MAX_OUTPUT} bytes"
        )));
    }
    Ok(Value::from(s.repeat(n)))
}

/// Sprig `quote`: each argument (nil ones left out) as Go quotes it.
fn quote(args: &[Value]) -> Result<Value, FuncError> {
    let q: Vec<String> = args
        .iter()
        .filter(|v| !matches!(v, Value::Nil | Value::NoValue))
        .map(|v| go_quote(&go_string(v)))
        .collect();
    out("quote", q.join(" "))
}

/// Sprig `squote`: each argument in single quotes.
fn squote(args: &[Value]) -> Result<Value, FuncError> {
    let q: Vec<String> = args
        .iter()
        .filter(|v| !matches!(v, Value::Nil | Value::NoValue))
        .map(|v| format!("'{}'", go_string(v)))
        .collect();
    out("squote", q.join(" "))
}

/// Sprig `cat`: the arguments (nil ones left out), space-separated.
fn cat(args: &[Value]) -> Result<Value, FuncError> {
    let q: Vec<String> = args
        .iter()
        .filter(|v| !matches!(v, Value::Nil | Value::NoValue))
        .map(go_string)
        .collect();
    out("cat", q.join(" "))
}

/// Sprig `join SEP LIST` (a string is a list of itself, nil an empty one).
fn join(args: &[Value]) -> Result<Value, FuncError> {
    arity("join", args, 2, Some(2))?;
    let sep = string("join", &args[0])?;
    let items: Vec<String> = match &args[1] {
        Value::Array(a) => a
            .iter()
            .filter(|v| !matches!(v, Value::Nil | Value::NoValue))
            .map(go_string)
            .collect(),
        Value::Nil | Value::NoValue => vec![],
        v => vec![go_string(v)],
    };
    out("join", items.join(sep))
}

/// Sprig `splitList SEP STRING` (Go's `strings.Split`).
fn split_list(args: &[Value]) -> Result<Value, FuncError> {
    arity("splitList", args, 2, Some(2))?;
    let sep = string("splitList", &args[0])?;
    let s = string("splitList", &args[1])?;
    let parts: Vec<Value> = if sep.is_empty() {
        s.chars()
            .take(MAX_LIST + 1)
            .map(|c| Value::from(c.to_string()))
            .collect()
    } else {
        s.split(sep).take(MAX_LIST + 1).map(Value::from).collect()
    };
    if parts.len() > MAX_LIST {
        return Err(FuncError::Generic(format!(
            "splitList: more than {MAX_LIST} parts"
        )));
    }
    Ok(Value::from(parts))
}

/// Sprig `default DEFAULT GIVEN`: GIVEN unless it is empty (see `empty`).
fn default(args: &[Value]) -> Result<Value, FuncError> {
    arity("default", args, 1, Some(2))?;
    match args.get(1) {
        Some(v) if !is_empty(v) => Ok(v.clone()),
        _ => Ok(args[0].clone()),
    }
}

/// Sprig `empty X`.
fn empty(args: &[Value]) -> Result<Value, FuncError> {
    arity("empty", args, 1, Some(1))?;
    Ok(Value::from(is_empty(&args[0])))
}

/// Sprig `coalesce A B …`: the first not empty, or nil.
fn coalesce(args: &[Value]) -> Result<Value, FuncError> {
    Ok(args
        .iter()
        .find(|v| !is_empty(v))
        .cloned()
        .unwrap_or(Value::Nil))
}

/// Sprig `ternary IF-TRUE IF-FALSE BOOL`.
fn ternary(args: &[Value]) -> Result<Value, FuncError> {
    arity("ternary", args, 3, Some(3))?;
    match &args[2] {
        Value::Bool(b) => Ok(args[if *b { 0 } else { 1 }].clone()),
        v => Err(FuncError::Generic(format!(
            "ternary: wrong type for value; expected bool; got {}",
            go_type(v)
        ))),
    }
}

/// Go's `printf`, with widths and precisions up to [`MAX_OUTPUT`] and no
/// `*` (gtmpl would allocate any width it is given), and its result bounded.
fn printf(args: &[Value]) -> Result<Value, FuncError> {
    arity("printf", args, 1, None)?;
    if let Value::String(f) = &args[0] {
        let b = f.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'%' {
                i += 1;
                continue;
            }
            i += 1;
            let mut digits = 0usize;
            while i < b.len() && !b[i].is_ascii_alphabetic() && b[i] != b'%' {
                match b[i] {
                    b'*' => {
                        return Err(FuncError::Generic(
                            "printf: `*` widths are not supported".into(),
                        ))
                    }
                    b'0'..=b'9' => {
                        digits = digits
                            .saturating_mul(10)
                            .saturating_add(usize::from(b[i] - b'0'));
                        if digits > MAX_OUTPUT {
                            return Err(FuncError::Generic(format!(
                                "printf: a width or precision above {MAX_OUTPUT}"
                            )));
                        }
                    }
                    _ => digits = 0,
                }
                i += 1;
            }
            i += 1;
        }
    }
    let r = gtmpl::funcs::printf(args)?;
    match r {
        Value::String(s) => out("printf", s),
        v => Ok(v),
    }
}

/// Sprig's functions offered (the fork's `sprig.FuncMap()`, a subset: the
/// string ones a command line needs; the seed uses `toString` and `replace`).
pub const SPRIG: &[(&str, Func)] = &[
    ("toString", to_string as Func),
    ("replace", replace_ as Func),
    ("lower", lower as Func),
    ("upper", upper as Func),
    ("trim", trim as Func),
    ("trimAll", trim_all as Func),
    ("trimPrefix", trim_prefix as Func),
    ("trimSuffix", trim_suffix as Func),
    ("nospace", nospace as Func),
    ("contains", contains as Func),
    ("hasPrefix", has_prefix as Func),
    ("hasSuffix", has_suffix as Func),
    ("repeat", repeat as Func),
    ("quote", quote as Func),
    ("squote", squote as Func),
    ("cat", cat as Func),
    ("join", join as Func),
    ("splitList", split_list as Func),
    ("default", default as Func),
    ("empty", empty as Func),
    ("coalesce", coalesce as Func),
    ("ternary", ternary as Func),
];

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
    print_ = "print", gtmpl::funcs::print, 0, None;
    println_ = "println", gtmpl::funcs::println, 0, None;
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
    if text.len() > MAX_TEMPLATE {
        return Err(TemplateError(format!(
            "longer than {MAX_TEMPLATE} bytes ({})",
            text.len()
        )));
    }
    let unclosed = |what: &str, at: usize| {
        let col = text[..at].chars().count() + 1;
        TemplateError(format!("unclosed {what} at character {col}"))
    };
    let mut i = 0;
    // Blocks (if, range, with, block, define … end) open: gtmpl parses them,
    // and parentheses, by recursion; deep nesting overflowed the stack.
    // The open blocks, by keyword: `range` inside `range` is refused (the
    // work of nested loops multiplies).
    let mut blocks: Vec<&str> = Vec::new();
    // Actions inside ranges, all ranges together.
    let mut in_ranges = 0usize;
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
        let col = || text[..start].chars().count() + 1;
        if blocks.contains(&"range") && word != "end" {
            in_ranges += 1;
            if in_ranges > MAX_RANGE_ACTIONS {
                return Err(TemplateError(format!(
                    "more than {MAX_RANGE_ACTIONS} actions inside ranges (at character {})",
                    col()
                )));
            }
        }
        match word.as_str() {
            "if" | "with" => blocks.push("if"),
            "range" => {
                if blocks.contains(&"range") {
                    return Err(TemplateError(format!(
                        "a range inside a range at character {}: ranges do not nest in a command line",
                        col()
                    )));
                }
                blocks.push("range")
            }
            w @ ("define" | "template" | "block") => {
                return Err(TemplateError(format!(
                    "{{{{{w}}}}} at character {}: a command line has no named templates",
                    col()
                )))
            }
            "end" => {
                blocks.pop();
            }
            _ => {}
        }
        let mut parens = 0usize;
        if blocks.len() > MAX_NESTING {
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
    t.add_funcs(SPRIG);
    t.add_func("printf", printf);
    t.parse(index_calls(text))
        .map_err(|e| TemplateError(clean(e)))?;
    Ok(t)
}

/// Go methods with an argument that the data offers as a list:
/// `$.endpoints.InitrdURL N`.
const INDEXED: &[&str] = &[".InitrdURL"];

/// `text` with a command that starts with a call of an [`INDEXED`] method
/// (`{{ $.endpoints.InitrdURL 0 }}`, `(… $i)`, `{{ 0 | $.endpoints.InitrdURL }}`)
/// made an `index` of its list (gtmpl calls no method with arguments).
/// `text` has passed [`check_closed`].
fn index_calls(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while let Some(off) = text[i..].find("{{") {
        i += off + 2;
        // At the start of a command (after `{{`, `(`, `|`, `:=`, `=`, or a
        // keyword that takes a pipeline).
        let mut command = true;
        // A comment only opens an action (as `check_closed` has it).
        let trim = b[i..].starts_with(b"- ");
        let comment_at = if trim { i + 2 } else { i };
        while i < b.len() && !b[i..].starts_with(b"}}") {
            match b[i] {
                b'"' | b'\'' => {
                    let q = b[i];
                    i += 1;
                    while i < b.len() && b[i] != q {
                        i += if b[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 1;
                    command = false;
                }
                b'`' => {
                    i += text
                        .get(i + 1..)
                        .and_then(|r| r.find('`'))
                        .map_or(b.len(), |e| e + 2);
                    command = false;
                }
                b'/' if i == comment_at && b[i..].starts_with(b"/*") => {
                    i += text
                        .get(i + 2..)
                        .and_then(|r| r.find("*/"))
                        .map_or(b.len(), |e| e + 4);
                }
                b'(' | b'|' | b'=' => {
                    command = true;
                    i += 1;
                }
                c if c.is_ascii_whitespace() || c == b'-' && command => i += 1,
                _ => {
                    let end = text[i..]
                        .find(|c: char| c.is_ascii_whitespace() || "()|}\"'`".contains(c))
                        .map_or(b.len(), |e| i + e);
                    let word = &text[i..end];
                    if command && INDEXED.iter().any(|m| word.ends_with(m)) {
                        out.push_str(&text[copied..i]);
                        out.push_str("index ");
                        copied = i;
                    }
                    command = matches!(word, "if" | "range" | "with" | "else" | ":=");
                    i = end.max(i + 1);
                }
            }
        }
        i = (i + 2).min(b.len());
    }
    out.push_str(&text[copied..]);
    out
}

/// Check that `text` parses.
pub fn check(text: &str) -> Result<(), TemplateError> {
    parse(text).map(|_| ())
}

/// A parsed template, to render for many hosts.
pub struct Compiled(Template);

/// Parse `text` once (see [`Compiled::render`]).
pub fn compile(text: &str) -> Result<Compiled, TemplateError> {
    parse(text).map(Compiled)
}

/// Render `text` with `data` as `.` (and `$`).
pub fn render(text: &str, data: &Value) -> Result<String, TemplateError> {
    compile(text)?.render(data)
}

impl Compiled {
    /// Render with `data` as `.` (and `$`).
    pub fn render(&self, data: &Value) -> Result<String, TemplateError> {
        execute(&self.0, data)
    }
}

fn execute(t: &Template, data: &Value) -> Result<String, TemplateError> {
    let mut w = Bounded(Vec::new());
    match t.execute(&mut w, &Context::from(data.clone())) {
        Ok(()) => String::from_utf8(w.0).map_err(|e| TemplateError(e.to_string())),
        Err(_) if w.0.len() > MAX_OUTPUT => Err(TemplateError(format!(
            "the command line would be longer than {MAX_OUTPUT} bytes"
        ))),
        Err(e) => Err(TemplateError(exec_error(e))),
    }
}

/// An execution error in Go's words, naming the fields there are (gtmpl
/// would print the whole receiver).
fn exec_error(e: gtmpl::error::ExecError) -> String {
    use gtmpl::error::ExecError;
    match e {
        ExecError::NoFiledFor(field, Value::Object(m)) => {
            let mut names: Vec<&str> = m.keys().map(String::as_str).collect();
            names.sort_unstable();
            format!(
                "can't evaluate field {field} (names are case-sensitive; the fields: {})",
                names.join(" ")
            )
        }
        ExecError::NoFiledFor(field, _) => format!("can't evaluate field {field}"),
        ExecError::NotAFunctionButArguments(f) => {
            format!("{f} takes no arguments here (ProvisionURL is not offered)")
        }
        e => clean(e),
    }
}

/// The output, refused beyond [`MAX_OUTPUT`] (the first byte over is kept,
/// to tell why the execution stopped).
struct Bounded(Vec<u8>);

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_OUTPUT {
            let room = (MAX_OUTPUT + 1).saturating_sub(self.0.len());
            self.0.extend_from_slice(&buf[..room.min(buf.len())]);
            return Err(std::io::Error::other("output too long"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A Go map (`map[string]interface{}`, Grendel's top level): a missing
/// key prints `<no value>`.
pub fn map(fields: Vec<(&str, Value)>) -> Value {
    Value::Map(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<HashMap<_, _>>(),
    )
}

/// A Go-style object (struct fields by name) from pairs: a missing field
/// is an error, as Go's "can't evaluate field".
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
        map(vec![
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

    #[test]
    fn sprig_functions() {
        let cases: &[(&str, &str)] = &[
            (r#"{{ "AB:CD" | lower }} {{ "ab" | upper }}"#, "ab:cd AB"),
            (r#"{{ "  x " | trim }}|{{ "--x--" | trimAll "-" }}"#, "x|x"),
            (
                r#"{{ "cn1.cluster" | trimSuffix ".cluster" }} {{ "cn1" | trimPrefix "cn" }}"#,
                "cn1 1",
            ),
            (r#"{{ "a b\tc" | nospace }}"#, "abc"),
            (
                r#"{{ contains "d" "abcd" }} {{ hasPrefix "ab" "abcd" }} {{ hasSuffix "x" "abcd" }}"#,
                "true true false",
            ),
            (r#"{{ repeat 3 "ab" }}"#, "ababab"),
            (
                r#"{{ quote "a\"b" 1 }} {{ squote "x" }} {{ cat "a" 1 true }}"#,
                r#""a\"b" "1" 'x' a 1 true"#,
            ),
            (r#"{{ join "," $.host.Tags }}"#, "compute,gpu"),
            (r#"{{ splitList "." "a.b.c" | join "-" }}"#, "a-b-c"),
            (
                r#"{{ $.nope | default "d" }} {{ $.host.Name | default "d" }} {{ default "d" "" }}"#,
                "d cn1 d",
            ),
            (
                r#"{{ empty "" }} {{ empty $.host.Tags }} {{ empty $.nope }}"#,
                "true false true",
            ),
            (r#"{{ coalesce "" $.nope "x" }}"#, "x"),
            (r#"{{ ternary "y" "n" $.host.Provision }}"#, "y"),
            (r#"{{ replace "" "-" "ab" }}"#, "-a-b-"),
            (
                r#"{{ print "a" 1 2 "b" }} {{ printf "%5d|%-3s|" 42 "x" }}"#,
                "a1 2b    42|x  |",
            ),
            // Missing keys of the top-level map print Go's `<no value>`;
            // toString of one is Sprig's `<nil>`.
            (
                "{{ $.kickstart }} {{ .repo }} {{ $.nope | toString }}",
                "<no value> <no value> <nil>",
            ),
        ];
        for (t, want) in cases {
            assert_eq!(render(t, &data()).as_deref(), Ok(*want), "{t}");
        }
        // Go's typed parameters: a string function refuses a non-string.
        assert_eq!(
            render("{{ upper $.host.Provision }}", &data()),
            Err(TemplateError(
                "upper: wrong type for value; expected string; got bool".into()
            ))
        );
    }

    #[test]
    fn bounded() {
        let long = "x".repeat(MAX_OUTPUT + 1);
        assert_eq!(
            render(&long, &data()),
            Err(TemplateError(format!(
                "the command line would be longer than {MAX_OUTPUT} bytes"
            )))
        );
        assert_eq!(render(&long[1..], &data()).map(|s| s.len()), Ok(MAX_OUTPUT));
        let cases: &[(&str, &str)] = &[
            (
                r#"{{ repeat 4097 "a" }}"#,
                "repeat: its result would be longer than 4096 bytes",
            ),
            (
                r#"{{ repeat 2000 "ab" | replace "" "xyz" }}"#,
                "replace: its result would be longer than 4096 bytes",
            ),
            (
                r#"{{ printf "%999999999d" 1 }}"#,
                "printf: a width or precision above 4096",
            ),
            (
                r#"{{ printf "%.99999f" 1.5 }}"#,
                "printf: a width or precision above 4096",
            ),
            (
                r#"{{ printf "%*d" 5 1 }}"#,
                "printf: `*` widths are not supported",
            ),
            (
                "{{ range $.host.Tags }}{{ range $.host.Tags }}x{{ end }}{{ end }}",
                "a range inside a range at character 24: ranges do not nest in a command line",
            ),
            (
                r#"{{ define "a" }}{{ template "a" }}{{ end }}{{ template "a" }}"#,
                "{{define}} at character 1: a command line has no named templates",
            ),
            (
                &format!(
                    "{{{{ range $.host.Tags }}}}{}{{{{ end }}}}",
                    "{{ . }}".repeat(17)
                ),
                "more than 16 actions inside ranges (at character 136)",
            ),
            (
                r#"{{ splitList "" (repeat 65 "a") }}"#,
                "splitList: more than 64 parts",
            ),
            (
                r#"{{ block "a" . }}x{{ end }}"#,
                "{{block}} at character 1: a command line has no named templates",
            ),
        ];
        for (t, want) in cases {
            assert_eq!(
                render(t, &data()),
                Err(TemplateError(want.to_string())),
                "{t}"
            );
        }
        // Each range alone is fine, and so is one after another.
        assert_eq!(
            render(
                "{{ range $.host.Tags }}{{ . }}{{ end }}{{ range $.host.Tags }}{{ . }}{{ end }}",
                &data()
            )
            .as_deref(),
            Ok("computegpucomputegpu")
        );
        assert_eq!(
            check(&"x".repeat(MAX_TEMPLATE + 1)),
            Err(TemplateError(format!(
                "longer than {MAX_TEMPLATE} bytes (8193)"
            )))
        );
    }

    /// Odd templates: each gets an answer (rendered or refused), never a
    /// panic or a hang. (`*`: the output is a map's dump, in no fixed order.)
    #[test]
    fn odd_templates_answer() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("{{ }}", Err("missing value for command")),
            ("{{ . }}", Ok("*")),
            ("{{ $ }}", Ok("*")),
            (
                "{{ $.nic.MAC.Nope }}",
                Err("only maps and objects have fields"),
            ),
            (
                "{{ index $.host.Tags 5 }}",
                Err("unable to get 5 in [String(\"compute\"), String(\"gpu\")]"),
            ),
            (
                "{{ index $.host.Tags -1 }}",
                Err("unable to get -1 in [String(\"compute\"), String(\"gpu\")]"),
            ),
            ("{{ slice \"abc\" 1 }}", Err("function slice not defined")),
            ("{{ len 3 }}", Err("unable to call len on 3")),
            (
                "{{ call $.host.Name }}",
                Err("call requires the first argument to be a function"),
            ),
            (
                "{{ 1 | 2 }}",
                Err("non executable command in pipeline stage 3"),
            ),
            (
                "{{ $x := 1 }}{{ $x = 2 }}{{ $x }}",
                Err("unexpected = in operand"),
            ),
            ("{{ else }}", Err("unexpected {{else}}")),
            ("{{ end }}", Err("unexpected {{end}}")),
            (
                "{{ range 5 }}x{{ end }}",
                Err("invalid range Number(Number { n: U(5) })"),
            ),
            ("{{ with $.nope }}x{{ else }}y{{ end }}", Ok("y")),
            (
                "{{ printf \"%\" }}",
                Err("unable to terminate format arg: %"),
            ),
            ("{{ printf \"%d\" }}", Err("unable to process verb: ")),
            ("{{ printf \"%s %s\" 1 }}", Err("unable to format 1 as s")),
            ("{{ printf 3 }}", Err("printf requires a format string")),
            ("{{ repeat -1 \"a\" }}", Ok("")),
            (
                "{{ repeat \"a\" 2 }}",
                Err("repeat: the count is not an integer"),
            ),
            ("{{ toString }}", Err("toString: wants 1 arguments, got 0")),
            (
                "{{ ternary 1 2 3 }}",
                Err("ternary: wrong type for value; expected bool; got int"),
            ),
            ("{{ splitList \"\" \"é→\" | join \"|\" }}", Ok("é|→")),
            ("{{ trimAll \"\" \"abc\" }}", Ok("abc")),
            (
                "{{ default }}",
                Err("default: wants 1 to 2 arguments, got 0"),
            ),
            ("{{ quote }}{{ cat }}{{ coalesce }}", Ok("nil")),
            (
                "{{ join \",\" $.host }}",
                Ok("map[Name:cn1 Provision:true Tags:[compute gpu]]"),
            ),
            ("{{ \"\\u00e9\" }}", Ok("é")),
            ("{{/* c */}}", Ok("")),
        ];
        for (t, want) in cases {
            let got = render(t, &data());
            match (want, &got) {
                (Ok("*"), Ok(_)) => {}
                (Ok(w), Ok(g)) => assert_eq!(w, g, "{t}"),
                (Err(w), Err(TemplateError(g))) => assert_eq!(w, g, "{t}"),
                _ => panic!("{t}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn method_calls_with_an_argument_become_index() {
        let cases: &[(&str, &str)] = &[
            (
                "{{ $.endpoints.InitrdURL 0 }}",
                "{{ index $.endpoints.InitrdURL 0 }}",
            ),
            (
                "{{- 1 | $.endpoints.InitrdURL -}}",
                "{{- 1 | index $.endpoints.InitrdURL -}}",
            ),
            (
                "{{ if $e.InitrdURL 0 }}{{ ($e.InitrdURL $i) }}{{ end }}",
                "{{ if index $e.InitrdURL 0 }}{{ (index $e.InitrdURL $i) }}{{ end }}",
            ),
            (
                "{{ $x := .endpoints.InitrdURL 0 }}",
                "{{ $x := index .endpoints.InitrdURL 0 }}",
            ),
            // Not a command's start, in quotes, in a comment, outside actions:
            // left alone.
            (
                "{{ printf \"%v\" $.endpoints.InitrdURL }}",
                "{{ printf \"%v\" $.endpoints.InitrdURL }}",
            ),
            (
                "{{ \".InitrdURL 0\" }}{{/* .InitrdURL 0 */}}",
                "{{ \".InitrdURL 0\" }}{{/* .InitrdURL 0 */}}",
            ),
            (
                "$.endpoints.InitrdURL 0 {{ `.InitrdURL` }}",
                "$.endpoints.InitrdURL 0 {{ `.InitrdURL` }}",
            ),
        ];
        for (t, want) in cases {
            assert_eq!(index_calls(t), *want, "{t}");
        }
    }
}
