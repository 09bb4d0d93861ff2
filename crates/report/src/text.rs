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

pub(crate) fn markdown_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let esc = |s: &str| s.replace('|', "\\|");
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
    let mut out = intro.to_owned();
    if markdown {
        out.push_str(&markdown_table(header, rows));
    } else {
        let mut all = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
        all.extend(rows.iter().cloned());
        out.push_str(&aligned(&all));
    }
    out.push('\n');
    for p in doc["pairwise"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{} {} vs {}: {} {} {}, p_holm {} — {}\n",
            if markdown { "-" } else { "*" },
            p["a"].as_str().unwrap_or(""),
            p["b"].as_str().unwrap_or(""),
            delta.1,
            num(f(&p[delta.0])),
            interval(f(&p["ci"]["low"]), f(&p["ci"]["high"])),
            pval(f(&p["p_holm"])),
            p["verdict"].as_str().unwrap_or("")
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
