//! The terminal, Markdown and HTML views of an `explain` document: each example's words
//! coloured by the sign and strength of their attribution, model by model.

use std::fmt::Write;

use serde_json::Value;

use crate::text::markdown_escape;

fn settings_line(v: &Value) -> String {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k}: {s}"),
                    other => format!("{k}: {other}"),
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// The largest |word score| of a model's attribution (colour scale), at least tiny.
fn scale(words: &[Value]) -> f64 {
    words
        .iter()
        .map(|w| f(&w["score"]).abs())
        .filter(|v| v.is_finite())
        .fold(1e-12, f64::max)
}

pub(crate) fn summary(m: &Value) -> String {
    let fx = f(&m["f_input"]);
    let mut s = format!(
        "{} → {} (target {}, F(x) = {fx:.4}",
        m["model"].as_str().unwrap_or(""),
        m["predicted"].as_str().unwrap_or(""),
        m["target"].as_str().unwrap_or(""),
    );
    if let Some(fb) = m["f_baseline"].as_f64() {
        let _ = write!(s, ", F(baseline) = {fb:.4}");
        if let Some(g) = m["completeness_gap"].as_f64() {
            let denom = (fx - fb).abs();
            let _ = write!(
                s,
                ", completeness gap {g:.2e}{}",
                if denom > 0.0 {
                    format!(" = {:.2}% of |F(x) − F(baseline)|", 100.0 * g / denom)
                } else {
                    String::new()
                }
            );
        }
    }
    if m["truncated"].as_bool() == Some(true) {
        s.push_str(", text truncated");
    }
    s.push(')');
    s
}

fn top_words(words: &[Value], k: usize) -> String {
    let mut w: Vec<&Value> = words.iter().collect();
    w.sort_by(|a, b| f(&b["score"]).abs().total_cmp(&f(&a["score"]).abs()));
    w.iter()
        .take(k)
        .map(|x| {
            format!(
                "{} {:+.4}",
                x["word"].as_str().unwrap_or(""),
                f(&x["score"])
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Words coloured green (for the target) or red (against it), brighter when stronger;
/// plain text with signed scores when `color` is off (NO_COLOR, not a terminal). With
/// `color`, the text is printed as is: every piece of data in it is already escaped.
pub fn render_explain_table(doc: &Value, color: bool) -> String {
    let mut s = format!(
        "{} · {}\n",
        doc["method"].as_str().unwrap_or(""),
        settings_line(&doc["settings"])
    );
    for ex in doc["examples"].as_array().into_iter().flatten() {
        let _ = write!(
            s,
            "\n== {}",
            crate::text::escape_controls(ex["id"].as_str().unwrap_or(""))
        );
        if let Some(g) = ex["gold"].as_str() {
            let _ = write!(s, " (gold {})", crate::text::escape_controls(g));
        }
        s.push_str(" ==\n");
        for m in ex["models"].as_array().into_iter().flatten() {
            let words = m["words"].as_array().cloned().unwrap_or_default();
            let top = scale(&words);
            let _ = writeln!(s, "{}", crate::text::escape_controls(&summary(m)));
            let mut line = String::from("  ");
            for w in &words {
                let v = f(&w["score"]);
                // Escaped here: the colour codes must reach the terminal, data's must not.
                let word = crate::text::escape_controls(w["word"].as_str().unwrap_or(""));
                if color {
                    // 256-colour ramps: 5 steps of green or red by strength.
                    let level = ((v.abs() / top) * 4.0).round() as usize;
                    let code = if v >= 0.0 {
                        [252, 151, 114, 77, 40][level.min(4)]
                    } else {
                        [252, 217, 210, 203, 196][level.min(4)]
                    };
                    let _ = write!(line, "\x1b[38;5;{code}m{word}\x1b[0m ");
                } else {
                    let _ = write!(line, "{word}[{v:+.3}] ");
                }
            }
            let _ = writeln!(s, "{}", line.trim_end());
            let _ = writeln!(
                s,
                "  strongest: {}",
                crate::text::escape_controls(&top_words(&words, 5))
            );
        }
    }
    for w in doc["warnings"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "warning: {}",
            crate::text::escape_controls(w.as_str().unwrap_or(""))
        );
    }
    s
}

pub fn render_explain_markdown(doc: &Value) -> String {
    let mut s = format!(
        "# lmcompare explain: {}\n\n`{}`\n",
        markdown_escape(doc["method"].as_str().unwrap_or("")),
        settings_line(&doc["settings"])
    );
    for ex in doc["examples"].as_array().into_iter().flatten() {
        let _ = write!(
            s,
            "\n## {}",
            markdown_escape(ex["id"].as_str().unwrap_or(""))
        );
        if let Some(g) = ex["gold"].as_str() {
            let _ = write!(s, " (gold {})", markdown_escape(g));
        }
        s.push_str("\n\n");
        for m in ex["models"].as_array().into_iter().flatten() {
            let words = m["words"].as_array().cloned().unwrap_or_default();
            let _ = writeln!(s, "**{}**\n", markdown_escape(&summary(m)));
            s.push_str("| word | score |\n|---|---:|\n");
            for w in &words {
                let _ = writeln!(
                    s,
                    "| {} | {:+.5} |",
                    markdown_escape(w["word"].as_str().unwrap_or("")),
                    f(&w["score"])
                );
            }
            s.push('\n');
        }
    }
    for w in doc["warnings"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "- warning: {}",
            markdown_escape(w.as_str().unwrap_or(""))
        );
    }
    s
}

/// One model's words as HTML spans shaded by their score (green for, red against).
pub(crate) fn words_html(m: &Value) -> String {
    let words = m["words"].as_array().cloned().unwrap_or_default();
    let top = scale(&words);
    let mut h = String::new();
    for w in &words {
        let v = f(&w["score"]);
        let a = (v.abs() / top).clamp(0.0, 1.0) * 0.85;
        let rgb = if v >= 0.0 { "22,163,74" } else { "220,38,38" };
        let _ = write!(
            h,
            "<span class=\"attr\" style=\"background:rgba({rgb},{a:.3})\" title=\"{:+.5}\">{}</span> ",
            v,
            crate::html::esc(w["word"].as_str().unwrap_or(""))
        );
    }
    h
}
