/// Formats a metric value for people: four decimals, "n/a" where undefined.
pub(crate) fn num(v: f64) -> String {
    if v.is_nan() {
        "n/a".to_owned()
    } else {
        format!("{v:.4}")
    }
}

/// p-values: scientific notation once they get small, so 1e-12 does not print as 0.0000.
pub(crate) fn pval(p: f64) -> String {
    if p.is_nan() {
        "n/a".to_owned()
    } else if p < 1e-4 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

pub(crate) fn interval(low: f64, high: f64) -> String {
    if low.is_nan() || high.is_nan() {
        "n/a".to_owned()
    } else {
        format!("[{}, {}]", num(low), num(high))
    }
}

/// Left-aligned first column, right-aligned others, padded to the widest cell.
pub(crate) fn aligned(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let pad = width[c].saturating_sub(cell.chars().count());
            if c == 0 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str("  ");
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Control characters of data (labels, texts, paths) made visible, so nothing printed for a
/// person can move the cursor, clear the screen or retitle the terminal (`\x1b[2J`, OSC
/// `\x1b]0;…\x07`), rewrite a line (`\r`) or reorder text (bidirectional overrides).
/// Newlines and tabs stay. The escapes are JSON's (`\u001b`), so a JSON document stays
/// valid and decodes to the original text.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    let hidden = |c: char| {
        (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(hidden) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if hidden(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Text from data made literal in Markdown: HTML's `<`, `>`, `&` as entities (so a label
/// of `<script>` is text in every renderer) and Markdown's punctuation backslash-escaped (so
/// `__label__pos` is not emphasis and `[x](javascript:…)` is not a link). Line breaks
/// become spaces: one value stays on one line of a list or table.
pub fn markdown_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '#' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A cell the renderer itself wrote as inline code (a metric key): kept as code.
fn is_own_code_span(s: &str) -> bool {
    s.len() > 2
        && s.starts_with('`')
        && s.ends_with('`')
        && s[1..s.len() - 1]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(crate) fn markdown_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let esc = |s: &str| {
        if is_own_code_span(s) {
            s.to_owned()
        } else {
            markdown_escape(s)
        }
    };
    let mut out = format!(
        "| {} |\n|{}|\n",
        header
            .iter()
            .map(|h| esc(h))
            .collect::<Vec<_>>()
            .join(" | "),
        header
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { "---" } else { "---:" })
            .collect::<Vec<_>>()
            .join("|")
    );
    for r in rows {
        out.push_str(&format!(
            "| {} |\n",
            r.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | ")
        ));
    }
    out
}

/// The body of a report on a task scored over units (documents, prompts): the table, one
/// line per model pair (`delta` = (JSON key, heading)), and the excluded units, after the
/// caller's `intro` line; Markdown gets a title above it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn unit_task_body(
    doc: &serde_json::Value,
    markdown: bool,
    task: &str,
    intro: &str,
    header: &[&str],
    rows: &[Vec<String>],
    delta: (&str, &str),
    units: &str,
) -> String {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    let mut out = if markdown {
        markdown_escape(intro.trim_end()) + "\n\n"
    } else {
        intro.to_owned()
    };
    if markdown {
        out.push_str(&markdown_table(header, rows));
    } else {
        let mut all = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
        all.extend(rows.iter().cloned());
        out.push_str(&aligned(&all));
    }
    out.push('\n');
    let text = |v: &serde_json::Value| {
        let s = v.as_str().unwrap_or("");
        if markdown {
            markdown_escape(s)
        } else {
            s.to_owned()
        }
    };
    for p in doc["pairwise"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{} {} vs {}: {} {} {}, p_holm {} — {}\n",
            if markdown { "-" } else { "*" },
            text(&p["a"]),
            text(&p["b"]),
            delta.1,
            num(f(&p[delta.0])),
            interval(f(&p["ci"]["low"]), f(&p["ci"]["high"])),
            pval(f(&p["p_holm"])),
            text(&p["verdict"])
        ));
    }
    if let Some(n) = doc["excluded_examples"]["count"]
        .as_u64()
        .filter(|n| *n > 0)
    {
        out.push_str(&format!(
            "{n} {units} excluded: requests failed past their retries; rerun to retry them\n"
        ));
    }
    if markdown {
        format!("# lmcompare {task}\n\n{out}")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible_json_escapes() {
        let s = "a\x1b[2Jb\x1b]0;title\x07c\rd\u{202e}e\u{9b}f\x7f";
        let e = escape_controls(s);
        assert_eq!(
            e,
            "a\\u001b[2Jb\\u001b]0;title\\u0007c\\u000dd\\u202ee\\u009bf\\u007f"
        );
        assert!(!e.chars().any(|c| c.is_control()));
        assert_eq!(escape_controls("tab\tand\nnewline"), "tab\tand\nnewline");
        // Inside a JSON string the escapes decode back to the original text.
        let json = format!("\"{}\"", escape_controls("x\u{9b}y\u{202e}"));
        assert_eq!(
            serde_json::from_str::<String>(&json).unwrap(),
            "x\u{9b}y\u{202e}"
        );
    }

    #[test]
    fn markdown_escape_makes_data_literal() {
        assert_eq!(
            markdown_escape("<script>alert(1)</script>"),
            "&lt;script&gt;alert(1)&lt;/script&gt;"
        );
        assert_eq!(markdown_escape("__label__pos"), "\\_\\_label\\_\\_pos");
        assert_eq!(
            markdown_escape("[x](javascript:y)"),
            "\\[x\\](javascript:y)"
        );
        assert_eq!(markdown_escape("a|b\nc"), "a\\|b c");
        let t = markdown_table(&["label", "n"], &[vec!["<b>|".into(), "`f1_macro`".into()]]);
        assert!(t.contains("| &lt;b&gt;\\| | `f1_macro` |"), "{t}");
    }
}
