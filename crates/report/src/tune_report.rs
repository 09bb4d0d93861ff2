//! Rendering of a `tune` document: the trials sorted by the selection metric, the best
//! configuration per model, and the test-split comparison of tuned and untuned models.

use serde_json::Value;

use crate::compare_report::{render_compare_markdown, render_compare_table};
use crate::text::{aligned, markdown_table, num};

fn config_text(c: &Value) -> String {
    c.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k}={s}"),
                    Value::Number(n) => match n.as_f64() {
                        Some(x) if n.is_f64() => format!("{k}={}", short(x)),
                        _ => format!("{k}={n}"),
                    },
                    other => format!("{k}={other}"),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn short(x: f64) -> String {
    if x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e4) {
        format!("{x:.3e}")
    } else {
        let s = format!("{x:.6}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

fn trial_rows(doc: &Value) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let metric = doc["search"]["metric"].as_str().unwrap_or("metric");
    let header = vec![
        "trial", "model", "status", "metric", "epochs", "best", "config",
    ];
    let _ = metric;
    let rows = doc["trials"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            vec![
                t["id"].to_string(),
                t["model"].as_str().unwrap_or("").to_owned(),
                t["status"].as_str().unwrap_or("").to_owned(),
                t["metric"].as_f64().map_or("n/a".into(), num),
                t["epochs"].as_array().map_or(0, Vec::len).to_string(),
                t["best_epoch"].to_string(),
                config_text(&t["config"]),
            ]
        })
        .collect();
    (header, rows)
}

fn best_lines(doc: &Value) -> Vec<String> {
    let metric = doc["search"]["metric"].as_str().unwrap_or("metric");
    doc["best_per_model"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, b)| {
            format!(
                "{name}: trial {} — validation {metric} {} at epoch {} — {}",
                b["trial"],
                b["metric"].as_f64().map_or("n/a".into(), num),
                b["best_epoch"],
                config_text(&b["full_config"])
            )
        })
        .collect()
}

pub fn render_tune_table(doc: &Value) -> String {
    let s = &doc["search"];
    let mut out = format!(
        "Search: {} sampler, pruner {}, {} trials per model, selection on {} by {}\n\n",
        s["sampler"].as_str().unwrap_or(""),
        s["pruner"].as_str().unwrap_or(""),
        s["trials_per_model"],
        s["selection"].as_str().unwrap_or(""),
        s["metric"].as_str().unwrap_or("")
    );
    let (header, rows) = trial_rows(doc);
    let mut all = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    all.extend(rows);
    out.push_str(&aligned(&all));
    out.push_str("\nBest configuration\n");
    for l in best_lines(doc) {
        out.push_str(&format!("  {l}\n"));
    }
    if let Some(saved) = doc["saved_models"].as_object() {
        for (name, path) in saved {
            out.push_str(&format!(
                "  saved {name}: {}\n",
                path.as_str().unwrap_or("")
            ));
        }
    }
    out.push_str("\nTest split: tuned vs untuned\n");
    out.push_str(&comparison(doc, render_compare_table));
    out
}

pub fn render_tune_markdown(doc: &Value) -> String {
    let s = &doc["search"];
    let mut out = format!(
        "# lmcompare tune\n\n{} sampler, pruner {}, {} trials per model; selection on {} by `{}`.\n\n## Trials\n\n",
        s["sampler"].as_str().unwrap_or(""),
        s["pruner"].as_str().unwrap_or(""),
        s["trials_per_model"],
        s["selection"].as_str().unwrap_or(""),
        s["metric"].as_str().unwrap_or("")
    );
    let (header, rows) = trial_rows(doc);
    out.push_str(&markdown_table(&header, &rows));
    out.push_str("\n## Best configuration\n\n");
    for l in best_lines(doc) {
        out.push_str(&format!("- {}\n", crate::text::markdown_escape(&l)));
    }
    out.push_str("\n## Test split: tuned vs untuned\n\n");
    out.push_str(&comparison(doc, render_compare_markdown));
    out
}

/// The tune document's comparison block through `render`, or why it cannot be read.
fn comparison(doc: &Value, render: fn(&crate::doc::CompareReport) -> String) -> String {
    match serde_json::from_value::<crate::doc::CompareReport>(doc["comparison"].clone()) {
        Ok(c) => render(&c),
        Err(e) => format!("(the comparison block cannot be read: {e})\n"),
    }
}
