//! The terminal table and Markdown exporters of a `compare` document (the typed
//! [`CompareReport`]; `report` re-renders a stored run from the same document).

use serde_json::Value;

use crate::doc::CompareReport;
use crate::text::{aligned, interval, markdown_table, num, pval};

const SHOWN: [&str; 10] = [
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "mcc",
    "log_loss",
    "brier",
    "ece",
    "roc_auc",
    "roc_auc_ovr_macro",
];

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn shown_metrics(doc: &CompareReport) -> Vec<String> {
    let Some(first) = doc.models.first() else {
        return Vec::new();
    };
    SHOWN
        .iter()
        .filter(|k| first.metrics.get(**k).is_some_and(|v| !v.is_null()))
        .map(|k| k.to_string())
        .collect()
}

fn human(n: f64) -> String {
    if !n.is_finite() {
        return "n/a".into();
    }
    for (scale, suffix) in [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")] {
        if n.abs() >= scale {
            return format!("{:.2}{suffix}", n / scale);
        }
    }
    format!("{n:.0}")
}

fn quality_rows(doc: &CompareReport) -> (Vec<String>, Vec<Vec<String>>) {
    let keys = shown_metrics(doc);
    let mut header = vec!["model".to_owned()];
    header.extend(keys.iter().cloned());
    let rows = doc
        .models
        .iter()
        .map(|m| {
            let mut r = vec![m.name.clone()];
            for k in &keys {
                let cell = match m.interval(k) {
                    Some((low, high)) => format!("{} {}", num(m.metric(k)), interval(low, high)),
                    None => num(m.metric(k)),
                };
                r.push(cell);
            }
            r
        })
        .collect();
    (header, rows)
}

fn cost_rows(doc: &CompareReport) -> (Vec<String>, Vec<Vec<String>>) {
    let header = [
        "model",
        "params",
        "size",
        "FLOPs/ex",
        "tokens/ex",
        "p50 ms/batch",
        "p95 ms/batch",
        "ex/s",
        "peak RSS",
        "computed/reused",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let opt = |x: Option<f64>| x.unwrap_or(f64::NAN);
    let int = |x: Option<u64>| x.map_or(f64::NAN, |v| v as f64);
    let rows = doc
        .models
        .iter()
        .map(|m| {
            let e = &m.efficiency;
            vec![
                m.name.clone(),
                human(int(e.parameters)),
                format!("{}B", human(int(e.size_bytes))),
                human(opt(e.flops_per_example)),
                format!("{:.1}", opt(e.tokens_per_example)),
                format!("{:.1}", e.latency_ms_p50),
                format!("{:.1}", e.latency_ms_p95),
                format!("{:.1}", opt(e.throughput_per_s)),
                format!("{}B", human(int(e.peak_rss_bytes))),
                computed_reused(m),
            ]
        })
        .collect();
    (header, rows)
}

/// Examples this run computed and reused from the store (and from which earlier runs).
fn computed_reused(m: &crate::doc::ModelReport) -> String {
    let mut s = format!("{}/{}", m.computed_examples, m.reused_examples);
    if !m.reused_from_runs.is_empty() {
        let runs: Vec<String> = m.reused_from_runs.iter().map(i64::to_string).collect();
        s.push_str(&format!(" (run {})", runs.join(",")));
    }
    s
}

fn pair_rows(doc: &CompareReport) -> (Vec<String>, Vec<Vec<String>>) {
    let header = [
        "a vs b",
        "delta",
        "95% CI",
        "McNemar p",
        "bootstrap p",
        "permutation p",
        "p_holm",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let rows = doc
        .pairwise
        .iter()
        .map(|p| {
            vec![
                format!(
                    "{} vs {}",
                    p["a"].as_str().unwrap_or(""),
                    p["b"].as_str().unwrap_or("")
                ),
                num(f(&p["delta"])),
                interval(f(&p["ci_low"]), f(&p["ci_high"])),
                pval(f(&p["mcnemar_p"])),
                pval(f(&p["bootstrap_p"])),
                pval(f(&p["permutation_p"])),
                pval(f(&p["p_holm"])),
            ]
        })
        .collect();
    (header, rows)
}

fn header_line(doc: &CompareReport) -> String {
    title_line(doc) + &excluded_line(doc)
}

fn title_line(doc: &CompareReport) -> String {
    let d = &doc.dataset;
    let run = match doc.run["runs"].as_array() {
        // A leaderboard group: gathered from several runs.
        Some(runs) => {
            let ids: Vec<String> = runs.iter().map(Value::to_string).collect();
            format!("from the stored runs {}", ids.join(", "))
        }
        None => format!("run {}", doc.run["id"]),
    };
    format!(
        "task {} on {} ({} test examples; labels: {}), {run}{}",
        doc.task,
        d.path.display(),
        d.evaluated_test_examples,
        d.labels.join(", "),
        if doc.run["resumed"].as_bool() == Some(true) {
            " (resumed)"
        } else {
            ""
        }
    )
}

/// Examples left out because a model's requests failed: the count and the first few ids.
fn excluded_line(doc: &CompareReport) -> String {
    match &doc.excluded_examples {
        Some(ex) if ex.count > 0 => {
            let n = ex.count;
            let ids: Vec<&str> = ex.examples.iter().take(5).map(|e| e.id.as_str()).collect();
            format!(
                "\n{n} test example(s) excluded for every model: requests failed past their retries ({}{}); rerun to retry them",
                ids.join(", "),
                if n > 5 { ", ..." } else { "" }
            )
        }
        _ => String::new(),
    }
}

pub fn render_compare_table(doc: &CompareReport) -> String {
    let mut s = format!("{}\n\n", header_line(doc));
    let (h, r) = quality_rows(doc);
    let mut rows = vec![h];
    rows.extend(r);
    s.push_str(&aligned(&rows));
    s.push('\n');
    let (h, r) = cost_rows(doc);
    let mut rows = vec![h];
    rows.extend(r);
    s.push_str(&aligned(&rows));
    s.push('\n');
    let (h, r) = pair_rows(doc);
    if !r.is_empty() {
        s.push_str(&format!(
            "paired tests on {}\n",
            doc.method["main_metric"].as_str().unwrap_or("")
        ));
        let mut rows = vec![h];
        rows.extend(r);
        s.push_str(&aligned(&rows));
        s.push('\n');
    }
    for v in &doc.verdicts {
        s.push_str(&format!("* {v}\n"));
    }
    s.push_str(&format!(
        "Pareto set ({} vs FLOPs per example): {}\n",
        doc.pareto.quality,
        doc.pareto.models.join(", ")
    ));
    for m in &doc.models {
        for w in &m.warnings {
            s.push_str(&format!("warning ({}): {w}\n", m.name));
        }
    }
    if let Some(x) = &doc.explanations {
        s.push_str(&format!(
            "explanations of the {} examples where the models disagree most: in the JSON and HTML report\n",
            x["examples"].as_array().map_or(0, Vec::len)
        ));
    }
    s
}

pub fn render_compare_markdown(doc: &CompareReport) -> String {
    let mut s = format!(
        "# lmcompare: {}\n\n",
        crate::text::markdown_escape(&title_line(doc))
    );
    let excluded = excluded_line(doc);
    if !excluded.is_empty() {
        s.push_str(&format!(
            "{}\n\n",
            crate::text::markdown_escape(excluded.trim())
        ));
    }
    for (title, (h, r)) in [
        ("Quality (95% bootstrap CI)", quality_rows(doc)),
        ("Cost", cost_rows(doc)),
        ("Paired tests", pair_rows(doc)),
    ] {
        if r.is_empty() {
            continue;
        }
        let hr: Vec<&str> = h.iter().map(String::as_str).collect();
        s.push_str(&format!("## {title}\n\n{}\n", markdown_table(&hr, &r)));
    }
    s.push_str("## Verdicts\n\n");
    for v in &doc.verdicts {
        s.push_str(&format!("- {}\n", crate::text::markdown_escape(v)));
    }
    let warnings: Vec<String> = doc
        .models
        .iter()
        .flat_map(|m| m.warnings.iter().map(move |w| format!("{}: {w}", m.name)))
        .collect();
    if !warnings.is_empty() {
        s.push_str("\n## Warnings\n\n");
        for w in &warnings {
            s.push_str(&format!("- {}\n", crate::text::markdown_escape(w)));
        }
    }
    if let Some(x) = &doc.explanations {
        s.push_str("\n## Why they disagree\n\n");
        for line in crate::explain_report::render_explain_markdown(x)
            .lines()
            .skip(1)
        {
            // The explain document's headings one level down.
            if line.starts_with('#') {
                s.push_str(&format!("#{line}\n"));
            } else {
                s.push_str(line);
                s.push('\n');
            }
        }
    }
    s
}
