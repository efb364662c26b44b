//! `GET /`: the node status page, plain HTML that reloads itself every five
//! seconds (no JavaScript). Everything a node sent is HTML-escaped.
use crate::http::rfc3339;
use crate::status::{Node, Page, Phase};
use std::fmt::Write;
use std::time::{Duration, SystemTime};

/// `&`, `<`, `>`, `"` and `'` as character references.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `4.2 s`, `3 min 07 s`, `2 h 05 min`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{:.1} s", d.as_secs_f64())
    } else if s < 3600 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    }
}

/// `2023-11-14 22:13:20 UTC`: [`rfc3339`] to the second, for people.
fn shown(t: SystemTime) -> String {
    format!("{} UTC", rfc3339(t)[..19].replacen('T', " ", 1))
}

const STYLE: &str = "\
body{font-family:sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em;margin:0 0 .2em}\
p.sub{color:#666;margin:0 0 1em}\
table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid #ddd;vertical-align:top}\
th{background:#f3f3f3}\
td.mono{font-family:monospace}\
.nw{white-space:nowrap}\
td.msg,td.img{max-width:22em;overflow-wrap:anywhere}\
td.steps{font-size:.85em;color:#444}\
.phase{display:inline-block;padding:.1em .6em;border-radius:.8em;font-weight:bold;color:#fff}\
.ready{background:#2e7d32}.failed{background:#c62828}.busy{background:#e69500}\
.ago,.none{color:#888}.ago{font-size:.85em}";

/// Characters of a message shown on the page (the JSON has them all).
pub const MESSAGE_SHOWN: usize = 300;

/// Steps of the history shown in a row (the JSON has them all).
pub const STEPS_SHOWN: usize = 8;

/// The phases of the node's current boot (from its first `fetching`, else
/// its whole history), repeats folded (`fetching ×3`), at most the last
/// [`STEPS_SHOWN`], joined by arrows; the times are in the cell's title.
pub fn steps(n: &Node) -> (String, String) {
    let h: Vec<_> = n.history.iter().collect();
    let start = (0..h.len())
        .rev()
        .find(|&i| h[i].phase == Phase::Fetching && (i == 0 || h[i - 1].phase != Phase::Fetching))
        .unwrap_or(0);
    let mut folded: Vec<(Phase, usize)> = Vec::new();
    for e in &h[start..] {
        match folded.last_mut() {
            Some((p, k)) if *p == e.phase => *k += 1,
            _ => folded.push((e.phase, 1)),
        }
    }
    let skip = folded.len().saturating_sub(STEPS_SHOWN);
    let mut shown: Vec<String> = folded[skip..]
        .iter()
        .map(|(p, k)| match k {
            1 => p.to_string(),
            k => format!("{p} ×{k}"),
        })
        .collect();
    if skip > 0 {
        shown.insert(0, "…".into());
    }
    let title: Vec<String> = h[start..]
        .iter()
        .map(|e| format!("{} {}", e.phase, &rfc3339(e.at)[11..19]))
        .collect();
    (shown.join(" → "), title.join(", "))
}

/// The page for one [`Page`] of nodes at `now`: counts of all nodes by
/// phase, then the page's rows, and a link to the next page.
pub fn render(page: &Page, now: SystemTime) -> String {
    let nodes = &page.nodes;
    let mut h = String::new();
    let counts: Vec<String> = Phase::ALL
        .iter()
        .zip(page.by_phase)
        .filter(|(_, n)| *n > 0)
        .map(|(p, n)| format!("{n} {p}"))
        .collect();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"refresh\" content=\"5\">\n<title>bootd: nodes</title>\n\
         <style>{STYLE}</style>\n</head>\n<body>\n<h1>bootd: node status</h1>\n\
         <p class=\"sub\">{} node{}{} · {} · refreshes every 5 s · \
         <a href=\"/nodes\">JSON</a></p>\n",
        page.total,
        if page.total == 1 { "" } else { "s" },
        if counts.is_empty() {
            String::new()
        } else {
            format!(" ({})", counts.join(", "))
        },
        shown(now),
    );
    if nodes.is_empty() {
        let none = if page.total == 0 {
            "no node has reported yet"
        } else {
            "no node on this page"
        };
        let _ = write!(h, "<p class=\"none\">{none}</p>\n</body>\n</html>\n");
        return h;
    }
    if page.offset > 0 || page.next().is_some() {
        let _ = writeln!(
            h,
            "<p class=\"sub\">nodes {} to {} of {}</p>",
            page.offset + 1,
            page.offset + nodes.len(),
            page.total
        );
    }
    h.push_str(
        "<table>\n<tr><th>hostname</th><th>MAC</th><th>phase</th><th>message</th>\
         <th>image</th><th>last seen</th><th>boot</th><th>this boot</th></tr>\n",
    );
    for n in nodes {
        let class = match n.phase {
            Phase::Ready => "ready",
            Phase::Failed => "failed",
            _ => "busy",
        };
        let opt = |v: &Option<String>| match v {
            Some(s) => escape(s),
            None => "<span class=\"none\">–</span>".to_string(),
        };
        let ago = now.duration_since(n.last_seen).unwrap_or_default();
        let boot = match (n.boot_seconds, n.boot_started) {
            (Some(d), _) => duration(d),
            (None, Some(t)) if !matches!(n.phase, Phase::Ready | Phase::Failed) => format!(
                "<span class=\"ago\">{} so far</span>",
                duration(now.duration_since(t).unwrap_or_default())
            ),
            _ => "<span class=\"none\">–</span>".to_string(),
        };
        let (steps, times) = steps(n);
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"mono nw\">{}</td>\
             <td><span class=\"phase {class}\">{}</span></td>\
             <td class=\"msg\">{}</td><td class=\"img mono\">{}</td>\
             <td class=\"nw\"><time datetime=\"{last}\" title=\"{last}\">{}</time>\
             <br><span class=\"ago\">{} ago</span></td><td class=\"nw\">{boot}</td>\
             <td class=\"steps\" title=\"{times} UTC\">{steps}</td></tr>",
            escape(&n.hostname),
            opt(&n.mac),
            n.phase,
            opt(&n
                .message
                .as_ref()
                .map(|m| match m.char_indices().nth(MESSAGE_SHOWN) {
                    Some((i, _)) => format!("{}…", &m[..i]),
                    None => m.clone(),
                })),
            opt(&n.image),
            shown(n.last_seen),
            if ago.as_secs() < 60 {
                format!("{} s", ago.as_secs())
            } else {
                duration(ago)
            },
            last = rfc3339(n.last_seen),
        );
    }
    h.push_str("</table>\n");
    if let Some(next) = page.next() {
        let _ = writeln!(
            h,
            "<p><a href=\"/?offset={next}&amp;limit={}\">next {} nodes</a></p>",
            nodes.len(),
            nodes.len().min(page.total - next)
        );
    }
    h.push_str("</body>\n</html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Nodes, Report};
    use std::time::UNIX_EPOCH;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
        assert_eq!(escape("plain é"), "plain é");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(Duration::from_millis(4_250)), "4.2 s");
        assert_eq!(duration(Duration::from_secs(187)), "3 min 07 s");
        assert_eq!(duration(Duration::from_secs(7_500)), "2 h 05 min");
    }

    #[test]
    fn empty_page() {
        let p = render(&Nodes::default().page(0, 10), at(0));
        assert!(p.contains("no node has reported yet"), "{p}");
        assert!(p.contains(r#"<meta http-equiv="refresh" content="5">"#));
        assert!(!p.contains("<table>"));
    }

    #[test]
    fn rows() {
        let n = Nodes::default();
        let post = |j: &str, t| n.record(Report::parse(j.as_bytes()).unwrap(), at(t));
        post(r#"{"hostname":"cn1","phase":"fetching"}"#, 0);
        post(r#"{"hostname":"cn1","phase":"ready"}"#, 75);
        post(
            r#"{"hostname":"cn2","mac":"52:54:00:00:00:02","phase":"failed","message":"<b>x</b>"}"#,
            80,
        );
        post(r#"{"hostname":"cn3","phase":"fetching"}"#, 90);
        let p = render(&n.page(0, crate::status::PAGE), at(100));
        assert!(p.contains("3 nodes"), "{p}");
        assert!(
            p.contains(">2023-11-14 22:14:50 UTC</time>"),
            "cn3 last seen: {p}"
        );
        assert!(
            p.contains(r#"<span class="phase ready">ready</span>"#),
            "{p}"
        );
        assert!(
            p.contains(r#"<span class="phase failed">failed</span>"#),
            "{p}"
        );
        assert!(
            p.contains(r#"<span class="phase busy">fetching</span>"#),
            "{p}"
        );
        assert!(
            p.contains("&lt;b&gt;x&lt;/b&gt;") && !p.contains("<b>x"),
            "{p}"
        );
        assert!(p.contains("1 min 15 s"), "cn1's boot: {p}");
        assert!(p.contains("10.0 s so far"), "cn3's boot in progress: {p}");
        assert!(p.contains("25 s ago"), "{p}");
        assert!(p.find("cn1") < p.find("cn2") && p.find("cn2") < p.find("cn3"));
        assert!(
            p.contains(r#"title="fetching 22:13:20, ready 22:14:35 UTC">fetching → ready</td>"#),
            "{p}"
        );
    }

    #[test]
    fn steps_of_the_current_boot() {
        let n = Nodes::default();
        let post = |ph: &str, t| {
            let j = format!(r#"{{"hostname":"cn1","phase":"{ph}"}}"#);
            n.record(Report::parse(j.as_bytes()).unwrap(), at(t))
        };
        let shown = || steps(&n.snapshot()[0]).0;
        post("booted", 0);
        post("ready", 1);
        assert_eq!(shown(), "booted → ready", "no fetch seen: all of it");
        for (i, ph) in ["fetching", "fetching", "fetching", "booted", "provisioning"]
            .iter()
            .enumerate()
        {
            post(ph, 10 + i as u64);
        }
        assert_eq!(shown(), "fetching ×3 → booted → provisioning");
        for i in 0..10 {
            post(if i % 2 == 0 { "provisioning" } else { "failed" }, 20 + i);
        }
        assert_eq!(
            shown(),
            "… → provisioning → failed → provisioning → failed → provisioning → failed → provisioning → failed"
        );
        post("fetching", 40);
        assert_eq!(shown(), "fetching", "a new boot");
    }
}
