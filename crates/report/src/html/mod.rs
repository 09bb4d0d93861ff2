//! The HTML report: one self-contained file (inline CSS and SVG, the report's JSON embedded,
//! no network request of any kind) that answers which model is best, whether that is real,
//! what it costs and where it fails.

mod charts;
mod escape;
mod page;
mod svg;

use std::fmt::Write;

use lmcompare_metrics::Metric;
use serde_json::Value;

use crate::doc::{CompareReport, Details, ExampleSample, ModelReport, TokenizerStats};
use charts::{
    cost_chart, heatmap, interval_chart, line_chart, reliability, CostPoint, IntervalRow, LineAxes,
    Series,
};
pub use escape::{esc, script_json};
use page::Page;

fn higher_is_better(key: &str) -> bool {
    key.parse::<Metric>().map_or(true, Metric::higher_is_better)
}

/// A metric value for a table: four decimals, a dash when undefined.
fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.4}")
    } else {
        "—".into()
    }
}

/// A p-value: four decimals, small ones in scientific notation.
fn pnum(v: f64) -> String {
    if v.is_finite() && v > 0.0 && v < 1e-4 {
        format!("{v:.1e}")
    } else {
        num(v)
    }
}

fn opt_num(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

fn figure(svg: String, caption: &str) -> String {
    format!(
        "<figure>{svg}<figcaption>{}</figcaption></figure>",
        esc(caption)
    )
}

fn p_text(p: f64) -> String {
    if !p.is_finite() {
        "p undefined".into()
    } else if p < 0.001 {
        "p < 0.001".into()
    } else {
        format!("p = {p:.3}")
    }
}

/// `compare` (and `report --run` of a comparison).
pub fn render_compare_html(doc: &CompareReport) -> String {
    let mut page = Page {
        title: format!(
            "lmcompare: {} on {}",
            doc.task,
            file_name(&doc.dataset.path)
        ),
        subtitle: format!(
            "{} models · {} test examples · main metric {}",
            doc.models.len(),
            doc.dataset.evaluated_test_examples,
            doc.pareto.quality
        ),
        sections: Vec::new(),
        data: serde_json::to_value(doc).unwrap_or_default(),
    };
    comparison_sections(&mut page, doc, false);
    page.finish()
}

/// `leaderboard`: every group's ranking, then the first group's full comparison.
pub fn render_leaderboard_html(lb: &crate::doc::Leaderboard) -> String {
    let mut page = Page {
        title: format!("lmcompare leaderboard: {}", file_name(&lb.dataset.path)),
        subtitle: format!(
            "{} group(s) of settings · ranked on {} · from the store, nothing run",
            lb.groups.len(),
            lb.metric
        ),
        sections: Vec::new(),
        data: serde_json::to_value(lb).unwrap_or_default(),
    };
    let mut h = String::new();
    for g in &lb.groups {
        let differs: Vec<String> = g.differs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = write!(
            h,
            "<h3>Group {}: {} · {} common test examples</h3>",
            g.group,
            esc(&g.task),
            g.comparison.dataset.evaluated_test_examples
        );
        if !differs.is_empty() {
            let _ = write!(
                h,
                "<p>Settings unlike the other groups: <code>{}</code></p>",
                esc(&differs.join(", "))
            );
        }
        let _ = write!(
            h,
            "<table class=\"sortable\"><thead><tr><th class=\"num\">rank</th><th>model</th><th class=\"num\">{}</th><th>95% CI</th><th class=\"num\">P(best)</th><th class=\"num\">mean rank</th><th class=\"num\">examples</th><th>runs</th><th>also run as</th></tr></thead><tbody>",
            esc(&lb.metric)
        );
        for r in &g.ranking {
            let runs: Vec<String> = r.runs.iter().map(i64::to_string).collect();
            let other: Vec<&str> = r
                .names
                .iter()
                .map(String::as_str)
                .filter(|n| *n != r.model)
                .collect();
            let _ = write!(
                h,
                "<tr><td class=\"num\">{}{}</td><td>{}</td><td class=\"num\">{}</td><td>[{}, {}]</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                r.rank,
                if r.pareto { " ★" } else { "" },
                esc(&r.model),
                num(opt_num(r.metric)),
                num(opt_num(r.ci_low)),
                num(opt_num(r.ci_high)),
                num(opt_num(r.p_best)),
                num(opt_num(r.mean_rank)),
                r.stored_examples,
                esc(&runs.join(", ")),
                esc(&other.join(", "))
            );
        }
        h.push_str("</tbody></table>");
        for n in &g.notes {
            let _ = write!(h, "<p class=\"note\">{}</p>", esc(n));
        }
    }
    h.push_str("<p>P(best): the share of paired bootstrap resamples in which the model is best. ★ the Pareto set (quality against FLOPs per example). Every number comes from the store; no model was run.</p>");
    page.push("leaderboard", "Leaderboard", h);
    if let Some(first) = lb.groups.first() {
        if lb.groups.len() > 1 {
            page.push(
                "group",
                "The first group in full",
                format!(
                    "<p>Below: group {} compared in full. The other groups' comparisons are in the embedded JSON; <code>--group N</code> renders one of them.</p>",
                    first.group
                ),
            );
        }
        comparison_sections(&mut page, &first.comparison, false);
    }
    page.finish()
}

/// `explain`: each example's words shaded by every model's attributions, side by side.
pub fn render_explain_html(doc: &Value) -> String {
    let examples = doc["examples"].as_array().cloned().unwrap_or_default();
    let mut page = Page {
        title: format!(
            "lmcompare explain: {}",
            doc["method"].as_str().unwrap_or("")
        ),
        subtitle: format!(
            "{} example(s) · green for the target class, red against it, stronger when darker",
            examples.len()
        ),
        sections: Vec::new(),
        data: doc.clone(),
    };
    page.push("attributions", "Attributions", explanations_html(&examples));
    let mut meta = String::from("<dl class=\"meta\">");
    for (k, v) in doc["settings"].as_object().into_iter().flatten() {
        let _ = write!(meta, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(&compact(v)));
    }
    meta.push_str("</dl>");
    for w in doc["warnings"].as_array().into_iter().flatten() {
        let _ = write!(
            meta,
            "<p class=\"note\">{}</p>",
            esc(w.as_str().unwrap_or(""))
        );
    }
    page.push("method", "How they were computed", meta);
    page.finish()
}

/// Examples, each a table of models with their shaded words.
fn explanations_html(examples: &[Value]) -> String {
    let mut h = String::new();
    for ex in examples {
        let _ = write!(h, "<h3>{}", esc(ex["id"].as_str().unwrap_or("")));
        if let Some(g) = ex["gold"].as_str() {
            let _ = write!(h, " <span class=\"muted\">gold {}</span>", esc(g));
        }
        h.push_str("</h3><table><tbody>");
        for m in ex["models"].as_array().into_iter().flatten() {
            let _ = write!(
                h,
                "<tr><td><b>{}</b><br><span class=\"muted\">{}</span></td><td>{}</td></tr>",
                esc(m["model"].as_str().unwrap_or("")),
                esc(&crate::explain_report::summary(m)),
                crate::explain_report::words_html(m)
            );
        }
        h.push_str("</tbody></table>");
    }
    h
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Every section of a comparison, in reading order.
/// `nested`: the comparison inside another report (`tune`), which has its own overview and
/// provenance.
fn comparison_sections(page: &mut Page, doc: &CompareReport, nested: bool) {
    let main = doc.pareto.quality.as_str();
    if !nested {
        page.push("overview", "At a glance", overview(doc, main));
    }
    page.push(
        "summary",
        if nested {
            "Tuned against untuned: every metric"
        } else {
            "Every metric"
        },
        summary_table(&doc.models, main, true),
    );
    page.push(
        "main-metric",
        "Is the difference real?",
        main_metric(&doc.models, &doc.pairwise, main),
    );
    page.push(
        "cost",
        "Quality against cost",
        cost_section(&doc.models, main),
    );
    if let Some(mc) = multiple_choice(&doc.models) {
        page.push("multiple-choice", "Multiple choice", mc);
    }
    page.push(
        "models",
        "Per model: where it fails",
        per_model(&doc.models, doc.details.as_ref()),
    );
    if let Some(ex) = doc.details.as_ref().and_then(|d| d.examples.as_ref()) {
        page.push("examples", "Examples", examples(ex));
    }
    if let Some(x) = &doc.explanations {
        let mut h = format!(
            "<p class=\"muted\">{}; {} ({} steps). Green words push towards the model's own prediction, red ones against it.</p>",
            esc(x["selection"].as_str().unwrap_or("")),
            esc(x["method"].as_str().unwrap_or("")),
            x["settings"]["n_steps"]
        );
        h.push_str(&explanations_html(
            x["examples"].as_array().map_or(&[][..], Vec::as_slice),
        ));
        for w in x["warnings"].as_array().into_iter().flatten() {
            let _ = write!(h, "<p class=\"note\">{}</p>", esc(w.as_str().unwrap_or("")));
        }
        page.push("explanations", "Why they disagree", h);
    }
    if let Some(d) = doc.details.as_ref().filter(|d| !d.tokenizers.is_empty()) {
        page.push("tokenizers", "Tokenizers", tokenizers(&d.tokenizers));
    }
    if !nested {
        page.push("provenance", "How this was run", provenance(doc));
    }
}

/// The index of the best model on `main`.
fn best_model(models: &[ModelReport], main: &str) -> Option<usize> {
    let up = higher_is_better(main);
    models
        .iter()
        .enumerate()
        .filter(|(_, m)| m.metric(main).is_finite())
        .max_by(|a, b| {
            let (x, y) = (a.1.metric(main), b.1.metric(main));
            if up {
                x.total_cmp(&y)
            } else {
                y.total_cmp(&x)
            }
        })
        .map(|(i, _)| i)
}

fn with_ci(m: &ModelReport, key: &str) -> String {
    match m.interval(key) {
        Some((l, h)) if l.is_finite() && h.is_finite() => {
            format!("{} [{}, {}]", num(m.metric(key)), num(l), num(h))
        }
        _ => num(m.metric(key)),
    }
}

fn overview(doc: &CompareReport, main: &str) -> String {
    let mut h = String::from("<div class=\"glance\">");
    let best = best_model(&doc.models, main);
    if let Some(b) = best {
        let m = &doc.models[b];
        let _ = write!(
            h,
            "<div><b>Best</b><strong>{}</strong>: {} {}</div>",
            esc(&m.name),
            esc(main),
            esc(&with_ci(m, main))
        );
        // Is it real: the pairs with the best model, by the corrected p-value.
        let (mut beats, mut ties, mut total) = (Vec::new(), Vec::new(), 0);
        for p in &doc.pairwise {
            let (a, b) = (p["a"].as_str().unwrap_or(""), p["b"].as_str().unwrap_or(""));
            let other = if a == m.name {
                b
            } else if b == m.name {
                a
            } else {
                continue;
            };
            total += 1;
            // delta is a − b; the best model's lead is positive when it is better.
            let d = p["delta"].as_f64().unwrap_or(f64::NAN) * if a == m.name { 1.0 } else { -1.0 };
            let lead = if higher_is_better(main) { d } else { -d };
            let padj = p["p_adjusted"].as_f64().unwrap_or(f64::NAN);
            if padj < 0.05 && lead > 0.0 {
                beats.push(format!("{other} ({})", p_text(padj)));
            } else {
                ties.push(other.to_owned());
            }
        }
        let real = if total == 0 {
            "one model: nothing to compare it with".to_owned()
        } else {
            let mut parts = Vec::new();
            if !beats.is_empty() {
                parts.push(format!("significantly better than {}", beats.join(", ")));
            }
            if !ties.is_empty() {
                parts.push(format!("not distinguishable from {}", ties.join(", ")));
            }
            format!(
                "{} (corrected p < 0.05; see the forest plot)",
                parts.join("; ")
            )
        };
        let _ = write!(h, "<div><b>Is it real?</b>{}</div>", esc(&real));
        let e = &m.efficiency;
        let mut cost = Vec::new();
        if let Some(f) = e.flops_per_example {
            cost.push(format!("{} FLOPs/example", svg::si(f)));
        }
        if let Some(t) = e.throughput_per_s.filter(|t| t.is_finite() && *t > 0.0) {
            cost.push(format!("{:.1} examples/s", t));
        }
        if e.latency_ms_p50.is_finite() {
            cost.push(format!("{:.1} ms {} p50", e.latency_ms_p50, e.latency_unit));
        }
        if let Some(p) = e.parameters {
            cost.push(format!("{} parameters", svg::si(p as f64)));
        }
        let front = if doc.pareto.models.is_empty() {
            String::new()
        } else {
            format!(
                " · Pareto front ({} vs {}): {}",
                doc.pareto.quality,
                doc.pareto.cost,
                doc.pareto.models.join(", ")
            )
        };
        let _ = write!(
            h,
            "<div><b>What it costs</b>{}{}</div>",
            esc(&if cost.is_empty() {
                "not measured".to_owned()
            } else {
                cost.join(" · ")
            }),
            esc(&front)
        );
        let _ = write!(
            h,
            "<div><b>Where it fails</b>{}</div>",
            esc(&worst_confusion(m))
        );
    }
    h.push_str("</div>");
    if !doc.verdicts.is_empty() {
        h.push_str("<h3>Verdicts</h3><ul class=\"verdicts\">");
        for v in &doc.verdicts {
            let _ = write!(h, "<li>{}</li>", esc(v));
        }
        h.push_str("</ul>");
    }
    let warnings: Vec<String> = doc
        .models
        .iter()
        .flat_map(|m| m.warnings.iter().map(move |w| format!("{}: {w}", m.name)))
        .collect();
    if !warnings.is_empty() || doc.excluded_examples.as_ref().is_some_and(|e| e.count > 0) {
        h.push_str("<h3>Warnings</h3><ul class=\"warn\">");
        for w in &warnings {
            let _ = write!(h, "<li>{}</li>", esc(w));
        }
        if let Some(x) = doc.excluded_examples.as_ref().filter(|e| e.count > 0) {
            let _ = write!(
                h,
                "<li>{} example(s) excluded for every model: {}</li>",
                x.count,
                esc(&x.reason)
            );
            for e in x.examples.iter().take(20) {
                let _ = write!(
                    h,
                    "<li><code>{}</code>: {}</li>",
                    esc(&e.id),
                    esc(&e.errors.join("; "))
                );
            }
        }
        h.push_str("</ul>");
    }
    h
}

/// The largest off-diagonal cell of the confusion matrix, in words.
fn worst_confusion(m: &ModelReport) -> String {
    let cm = &m.confusion_matrix;
    let cols = cm.predicted_labels.as_ref().unwrap_or(&cm.labels);
    let mut worst: Option<(u64, usize, usize)> = None;
    for (i, row) in cm.matrix.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let same = cols.get(j).is_some_and(|c| cm.labels.get(i) == Some(c));
            if !same && v > 0 && worst.is_none_or(|w| v > w.0) {
                worst = Some((v, i, j));
            }
        }
    }
    match worst {
        None => "no errors on these examples".into(),
        Some((v, i, j)) => {
            let support: u64 = cm.matrix[i].iter().sum();
            format!(
                "most often predicts {:?} for gold {:?} ({v} of {support}); errors are listed under Examples",
                cols.get(j).map_or("?", String::as_str),
                cm.labels.get(i).map_or("?", String::as_str),
            )
        }
    }
}

/// Which efficiency columns exist, with (key, heading, higher is better).
const COSTS: [(&str, &str, bool); 7] = [
    ("parameters", "parameters", false),
    ("size_bytes", "bytes", false),
    ("flops_per_example", "FLOPs / example", false),
    ("latency_ms_p50", "latency p50", false),
    ("latency_ms_p95", "latency p95", false),
    ("throughput_per_s", "examples / s", true),
    ("peak_rss_bytes", "peak RSS", false),
];

fn cost_value(m: &ModelReport, key: &str) -> f64 {
    let e = &m.efficiency;
    match key {
        "parameters" => e.parameters.map_or(f64::NAN, |v| v as f64),
        "size_bytes" => e.size_bytes.map_or(f64::NAN, |v| v as f64),
        "flops_per_example" => opt_num(e.flops_per_example),
        "latency_ms_p50" => e.latency_ms_p50,
        "latency_ms_p95" => e.latency_ms_p95,
        "throughput_per_s" => opt_num(e.throughput_per_s),
        "peak_rss_bytes" => e.peak_rss_bytes.map_or(f64::NAN, |v| v as f64),
        // Comparable across backends whose latency is per batch or per example.
        "ms_per_example" => 1e3 / opt_num(e.throughput_per_s),
        _ => f64::NAN,
    }
}

/// The best finite value of a column, by its direction.
fn best_of(values: &[f64], up: bool) -> Option<f64> {
    values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .reduce(|a, b| if (b > a) == up { b } else { a })
}

fn summary_table(models: &[ModelReport], main: &str, costs: bool) -> String {
    let mut keys: Vec<String> = Vec::new();
    for m in models {
        for k in m.metrics.keys() {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    }
    // The main metric first.
    if let Some(i) = keys.iter().position(|k| k == main) {
        let k = keys.remove(i);
        keys.insert(0, k);
    }
    let cost_cols: Vec<&(&str, &str, bool)> = if costs {
        COSTS
            .iter()
            .filter(|(k, _, _)| models.iter().any(|m| cost_value(m, k).is_finite()))
            .collect()
    } else {
        Vec::new()
    };
    let mut h = String::from("<p class=\"muted\">Point estimates with 95% bootstrap intervals; ★ marks the best value of each column (click a heading to sort).</p><div style=\"overflow-x:auto\"><table class=\"sortable\" id=\"summary-table\"><thead><tr><th>model</th>");
    for k in &keys {
        let _ = write!(h, "<th class=\"num\">{}</th>", esc(k));
    }
    for (_, head, _) in &cost_cols {
        let _ = write!(h, "<th class=\"num\">{head}</th>");
    }
    h.push_str("</tr></thead><tbody>");
    let best: Vec<Option<f64>> = keys
        .iter()
        .map(|k| {
            let v: Vec<f64> = models.iter().map(|m| m.metric(k)).collect();
            best_of(&v, higher_is_better(k))
        })
        .collect();
    let best_cost: Vec<Option<f64>> = cost_cols
        .iter()
        .map(|(k, _, up)| {
            let v: Vec<f64> = models.iter().map(|m| cost_value(m, k)).collect();
            best_of(&v, *up)
        })
        .collect();
    for m in models {
        let _ = write!(h, "<tr><td>{}</td>", esc(&m.name));
        for (k, b) in keys.iter().zip(&best) {
            let v = m.metric(k);
            let cls = if models.len() > 1 && b.is_some_and(|b| b == v) {
                "num best"
            } else {
                "num"
            };
            let ci = match m.interval(k) {
                Some((l, hi)) if l.is_finite() && hi.is_finite() => {
                    format!("<br><span class=\"ci\">[{}, {}]</span>", num(l), num(hi))
                }
                _ => String::new(),
            };
            let _ = write!(
                h,
                "<td class=\"{cls}\" data-v=\"{}\">{}{ci}</td>",
                data_v(v),
                num(v)
            );
        }
        for ((k, _, _), b) in cost_cols.iter().zip(&best_cost) {
            let v = cost_value(m, k);
            let cls = if models.len() > 1 && b.is_some_and(|b| b == v) {
                "num best"
            } else {
                "num"
            };
            let shown = match *k {
                "latency_ms_p50" | "latency_ms_p95" if v.is_finite() => {
                    format!("{v:.2} ms {}", esc(&m.efficiency.latency_unit))
                }
                "throughput_per_s" if v.is_finite() => format!("{v:.1}"),
                "size_bytes" | "peak_rss_bytes" if v.is_finite() => format!("{}B", svg::si(v)),
                _ if v.is_finite() => svg::si(v),
                _ => "—".into(),
            };
            let _ = write!(
                h,
                "<td class=\"{cls}\" data-v=\"{}\">{shown}</td>",
                data_v(v)
            );
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table></div>");
    h
}

fn data_v(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        String::new()
    }
}

fn main_metric(models: &[ModelReport], pairwise: &[Value], main: &str) -> String {
    let best = best_model(models, main);
    let rows: Vec<IntervalRow> = models
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (low, high) = m
                .interval(main)
                .map_or((None, None), |(l, h)| (Some(l), Some(h)));
            IntervalRow {
                label: m.name.clone(),
                value: m.metric(main),
                low,
                high,
                note: String::new(),
                strong: Some(i) == best,
            }
        })
        .collect();
    let mut h = figure(
        interval_chart(&rows, main, false),
        &format!("{main} per model with its 95% bootstrap interval; the best model in green."),
    );
    let forest: Vec<IntervalRow> = pairwise
        .iter()
        .map(|p| {
            let padj = p["p_adjusted"].as_f64().unwrap_or(f64::NAN);
            let pholm = p["p_holm"].as_f64().unwrap_or(f64::NAN);
            IntervalRow {
                label: pair_label(p),
                value: p["delta"].as_f64().unwrap_or(f64::NAN),
                low: p["ci_low"].as_f64(),
                high: p["ci_high"].as_f64(),
                note: format!("p_holm {}", p_text(pholm).trim_start_matches("p ")),
                strong: padj < 0.05,
            }
        })
        .collect();
    if !forest.is_empty() {
        h.push_str(&figure(
            interval_chart(&forest, &format!("difference in {main} (a − b)"), true),
            "Every pair's paired difference with its paired-bootstrap 95% interval and Holm-corrected p-value; an interval that crosses the dashed zero line is no evidence of a difference. Bold: significant after correction.",
        ));
        h.push_str(&pair_table(pairwise));
    }
    h
}

/// "a − b", each name cut so both show.
fn pair_label(p: &Value) -> String {
    let name = |k: &str| charts::short(p[k].as_str().unwrap_or("?"), 17);
    format!("{} − {}", name("a"), name("b"))
}

fn pair_table(pairwise: &[Value]) -> String {
    let mut h = String::from("<table class=\"sortable\"><thead><tr><th>a</th><th>b</th><th class=\"num\">delta</th><th class=\"num\">95% CI</th><th class=\"num\">McNemar p</th><th class=\"num\">bootstrap p</th><th class=\"num\">permutation p</th><th class=\"num\">p_holm</th><th>verdict</th></tr></thead><tbody>");
    for p in pairwise {
        let f = |k: &str| p[k].as_f64().unwrap_or(f64::NAN);
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"num\" data-v=\"{}\">{}</td><td class=\"num\">[{}, {}]</td><td class=\"num\" data-v=\"{}\">{}</td><td class=\"num\" data-v=\"{}\">{}</td><td class=\"num\" data-v=\"{}\">{}</td><td class=\"num\" data-v=\"{}\">{}</td><td>{}</td></tr>",
            esc(p["a"].as_str().unwrap_or("")),
            esc(p["b"].as_str().unwrap_or("")),
            data_v(f("delta")), num(f("delta")),
            num(f("ci_low")), num(f("ci_high")),
            data_v(f("mcnemar_p")), pnum(f("mcnemar_p")),
            data_v(f("bootstrap_p")), pnum(f("bootstrap_p")),
            data_v(f("permutation_p")), pnum(f("permutation_p")),
            data_v(f("p_holm")), pnum(f("p_holm")),
            esc(p["verdict"].as_str().unwrap_or("")),
        );
    }
    h.push_str("</tbody></table>");
    h
}

fn cost_section(models: &[ModelReport], main: &str) -> String {
    let up = higher_is_better(main);
    let mut h = String::from("<div class=\"charts\">");
    let mut missing = Vec::new();
    for (key, title) in [
        ("flops_per_example", "FLOPs per example (log)"),
        ("ms_per_example", "ms per example, 1 / throughput (log)"),
        ("parameters", "parameters (log)"),
    ] {
        let pts: Vec<CostPoint> = models
            .iter()
            .map(|m| {
                let (low, high) = m
                    .interval(main)
                    .map_or((None, None), |(l, h)| (Some(l), Some(h)));
                CostPoint {
                    label: m.name.clone(),
                    cost: cost_value(m, key),
                    quality: m.metric(main),
                    low,
                    high,
                }
            })
            .collect();
        let absent: Vec<&str> = pts
            .iter()
            .filter(|p| !(p.cost.is_finite() && p.cost > 0.0))
            .map(|p| p.label.as_str())
            .collect();
        if absent.len() == pts.len() {
            missing.push(format!("{title}: not reported by any model"));
            continue;
        }
        if !absent.is_empty() {
            missing.push(format!("{title}: not reported for {}", absent.join(", ")));
        }
        h.push_str(&figure(
            cost_chart(&pts, title, main, up),
            &format!("{main} against {title}; the green staircase is the Pareto front (no model is both better and cheaper)."),
        ));
    }
    h.push_str("</div>");
    for m in missing {
        let _ = write!(h, "<p class=\"muted\">{}</p>", esc(&m));
    }
    h
}

fn multiple_choice(models: &[ModelReport]) -> Option<String> {
    let with: Vec<(&ModelReport, &Value)> = models
        .iter()
        .filter_map(|m| m.extra.get("multiple_choice").map(|v| (m, v)))
        .collect();
    if with.is_empty() {
        return None;
    }
    let mut h = String::from("<table class=\"sortable\"><thead><tr><th>model</th><th class=\"num\">questions</th><th class=\"num\">acc</th><th class=\"num\">acc_norm</th><th class=\"num\">acc_bytes</th><th class=\"num\">acc_circular</th></tr></thead><tbody>");
    for (m, v) in &with {
        let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&m.name),
            v["questions"].as_u64().unwrap_or(0),
            num(f("acc")), num(f("acc_norm")), num(f("acc_bytes")), num(f("acc_circular")),
        );
    }
    h.push_str("</tbody></table>");
    let mut rows = Vec::new();
    for (m, v) in &with {
        for key in ["acc", "acc_norm", "acc_circular"] {
            if let Some(x) = v[key].as_f64() {
                rows.push(IntervalRow {
                    label: format!("{} · {key}", m.name),
                    value: x,
                    low: None,
                    high: None,
                    note: String::new(),
                    strong: false,
                });
            }
        }
    }
    h.push_str(&figure(
        interval_chart(&rows, "accuracy", false),
        "acc: highest log-likelihood; acc_norm: per character (lm-evaluation-harness); acc_circular: right under every rotation of the choices, a drop from acc shows position bias.",
    ));
    if let Some(bias) = position_bias(&with) {
        h.push_str(&bias);
    }
    Some(h)
}

/// How often each model picks each listed position, from circular runs' tallies.
fn position_bias(with: &[(&ModelReport, &Value)]) -> Option<String> {
    let mut rows = Vec::new();
    for (m, v) in with {
        let Some(picks) = v["picked_position"].as_array() else {
            continue;
        };
        let total: f64 = picks.iter().filter_map(Value::as_f64).sum();
        if total <= 0.0 {
            continue;
        }
        for (i, p) in picks.iter().enumerate() {
            let share = p.as_f64().unwrap_or(0.0) / total;
            rows.push(IntervalRow {
                label: format!(
                    "{} · position {}",
                    m.name,
                    char::from(b'A' + (i as u8 % 26))
                ),
                value: share,
                low: None,
                high: None,
                note: format!("{:.1}%", share * 100.0),
                strong: false,
            });
        }
    }
    (!rows.is_empty()).then(|| {
        figure(
            interval_chart(&rows, "share of answers at each listed position", false),
            "Circular runs list every question under each rotation of its choices, so the right answer is equally often at each position; an unbiased model's picks are spread evenly.",
        )
    })
}

fn per_model(models: &[ModelReport], details: Option<&Details>) -> String {
    let mut h = String::new();
    for (i, m) in models.iter().enumerate() {
        let _ = write!(
            h,
            "<details class=\"model\"{}><summary>{} <span class=\"muted\">({})</span></summary>",
            if i == 0 { " open" } else { "" },
            esc(&m.name),
            esc(&m.backend)
        );
        h.push_str("<div class=\"charts\">");
        h.push_str(&confusion(m));
        h.push_str("</div>");
        h.push_str(&per_class(m));
        if let Some(c) = details.and_then(|d| d.curves.iter().find(|c| c.model == m.name)) {
            h.push_str("<div class=\"charts\">");
            h.push_str(&figure(
                reliability(&c.curves.reliability, m.metric("ece"), &format!("{} reliability", m.name)),
                "Accuracy against confidence per equal-width bin (bars, count above), mean confidence as red dots; bars on the diagonal are perfectly calibrated.",
            ));
            for (curves, what, axes) in [
                (
                    &c.curves.roc,
                    "ROC",
                    LineAxes {
                        x_title: "false positive rate".into(),
                        y_title: "true positive rate".into(),
                        x_domain: Some((0.0, 1.0)),
                        y_domain: Some((0.0, 1.0)),
                        diagonal: true,
                        ..LineAxes::default()
                    },
                ),
                (
                    &c.curves.pr,
                    "precision-recall",
                    LineAxes {
                        x_title: "recall".into(),
                        y_title: "precision".into(),
                        x_domain: Some((0.0, 1.0)),
                        y_domain: Some((0.0, 1.0)),
                        ..LineAxes::default()
                    },
                ),
            ] {
                if curves.is_empty() {
                    continue;
                }
                let series: Vec<Series> = curves
                    .iter()
                    .enumerate()
                    .map(|(j, cv)| Series {
                        name: format!(
                            "{} ({} {:.3})",
                            cv.label,
                            if what == "ROC" { "AUC" } else { "AP" },
                            cv.area
                        ),
                        points: cv.points.iter().map(|p| (p[0], p[1])).collect(),
                        dashed: false,
                        markers: false,
                        colour: j,
                    })
                    .collect();
                let one_vs_rest = if curves.len() > 1 {
                    ", one-vs-rest per label"
                } else {
                    ""
                };
                h.push_str(&figure(
                    line_chart(&series, &axes, &format!("{} {what}", m.name)),
                    &format!("{what} curve{one_vs_rest}."),
                ));
            }
            h.push_str("</div>");
        }
        h.push_str("</details>");
    }
    h
}

fn confusion(m: &ModelReport) -> String {
    let cm = &m.confusion_matrix;
    let cols = cm
        .predicted_labels
        .clone()
        .unwrap_or_else(|| cm.labels.clone());
    let max = cm
        .matrix
        .iter()
        .flatten()
        .copied()
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let counts: Vec<Vec<f64>> = cm
        .matrix
        .iter()
        .map(|r| r.iter().map(|&v| v as f64 / max).collect())
        .collect();
    let count_text: Vec<Vec<String>> = cm
        .matrix
        .iter()
        .map(|r| r.iter().map(u64::to_string).collect())
        .collect();
    let norm: Vec<Vec<f64>> = cm
        .matrix
        .iter()
        .map(|r| {
            let s = r.iter().sum::<u64>().max(1) as f64;
            r.iter().map(|&v| v as f64 / s).collect()
        })
        .collect();
    let norm_text: Vec<Vec<String>> = norm
        .iter()
        .map(|r| r.iter().map(|v| format!("{:.0}%", v * 100.0)).collect())
        .collect();
    let invalid = if cm.predicted_labels.is_some() {
        " The last column holds answers that named no label (invalid), counted as wrong."
    } else {
        ""
    };
    format!(
        "{}{}",
        figure(heatmap(&cm.labels, &cols, &counts, &count_text, &format!("{} confusion counts", m.name)), &format!("Counts; rows are gold labels.{invalid}")),
        figure(heatmap(&cm.labels, &cols, &norm, &norm_text, &format!("{} confusion, row-normalised", m.name)), "Row-normalised: each gold label's share predicted as each column (recall on the diagonal)."),
    )
}

fn per_class(m: &ModelReport) -> String {
    if m.per_class.is_empty() {
        return String::new();
    }
    let mut h = String::from("<table class=\"sortable\"><thead><tr><th>label</th><th class=\"num\">precision</th><th class=\"num\">recall</th><th class=\"num\">F1</th><th class=\"num\">support</th></tr></thead><tbody>");
    for (label, s) in &m.per_class {
        let f = |k: &str| s[k].as_f64().unwrap_or(f64::NAN);
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"num\" data-v=\"{}\">{}</td><td class=\"num\" data-v=\"{}\">{}</td><td class=\"num\" data-v=\"{}\">{}</td><td class=\"num\">{}</td></tr>",
            esc(label),
            data_v(f("precision")), num(f("precision")),
            data_v(f("recall")), num(f("recall")),
            data_v(f("f1")), num(f("f1")),
            s["support"].as_u64().unwrap_or(0)
        );
    }
    h.push_str("</tbody></table>");
    h
}

fn examples(ex: &ExampleSample) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<p class=\"muted\">{} scored test examples; the models disagree on {} ({}). The {} kept here put disagreements first (<code>--html-examples</code> sets how many).</p>",
        ex.total,
        ex.disagreements,
        if ex.models.len() == 1 { "for one model: its errors" } else { "different predicted labels" },
        ex.rows.len()
    );
    h.push_str("<div class=\"controls\"><label>show <select id=\"ex-filter\"><option value=\"disagree\" selected>where the models disagree</option><option value=\"wrong\">where some model is wrong</option><option value=\"all\">all kept examples</option></select></label><input id=\"ex-search\" type=\"search\" placeholder=\"filter by text, id or label\" aria-label=\"filter examples\"><span id=\"ex-count\" class=\"muted\"></span></div>");
    let has_text = ex.rows.iter().any(|r| r.text.is_some());
    h.push_str("<div style=\"overflow-x:auto\"><table class=\"sortable\" id=\"examples-table\"><thead><tr><th>id</th>");
    if has_text {
        h.push_str("<th>text</th>");
    }
    h.push_str("<th>gold</th>");
    for m in &ex.models {
        let _ = write!(h, "<th>{}</th>", esc(m));
    }
    h.push_str("</tr></thead><tbody>");
    for r in &ex.rows {
        let wrong = r.predictions.iter().any(|p| p.label != r.gold);
        let _ = write!(
            h,
            "<tr data-disagree=\"{}\" data-wrong=\"{}\"><td><code>{}</code></td>",
            u8::from(r.disagree),
            u8::from(wrong),
            esc(&r.id)
        );
        if has_text {
            let _ = write!(
                h,
                "<td class=\"text\">{}</td>",
                esc(r.text.as_deref().unwrap_or(""))
            );
        }
        let _ = write!(h, "<td>{}</td>", esc(&r.gold));
        for p in &r.predictions {
            let prob = p.probability.map_or(String::new(), |v| {
                format!(" <span class=\"ci\">{v:.3}</span>")
            });
            let _ = write!(
                h,
                "<td class=\"{}\" data-v=\"{}\">{}{prob}</td>",
                if p.label == r.gold { "right" } else { "wrong" },
                p.probability.map_or(String::new(), |v| v.to_string()),
                esc(&p.label)
            );
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table></div>");
    h
}

fn tokenizers(stats: &[TokenizerStats]) -> String {
    let mut h = String::from("<table class=\"sortable\"><thead><tr><th>model</th><th>tokenizer</th><th class=\"num\">max length</th><th class=\"num\">tokens / word</th><th class=\"num\">unknown-token rate</th><th class=\"num\">truncated</th><th class=\"num\">mean tokens</th></tr></thead><tbody>");
    for s in stats {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{:.1}%</td><td class=\"num\">{:.1}</td></tr>",
            esc(&s.model),
            esc(&s.tokenizer),
            s.max_length,
            num(opt_num(s.tokens_per_word)),
            num(opt_num(s.unk_rate)),
            s.truncated_fraction * 100.0,
            s.mean_tokens
        );
    }
    h.push_str("</tbody></table>");
    let rows = |f: &dyn Fn(&TokenizerStats) -> f64| -> Vec<IntervalRow> {
        stats
            .iter()
            .map(|s| IntervalRow {
                label: s.model.clone(),
                value: f(s),
                low: None,
                high: None,
                note: String::new(),
                strong: false,
            })
            .collect()
    };
    h.push_str("<div class=\"charts\">");
    h.push_str(&figure(
        interval_chart(&rows(&|s| opt_num(s.tokens_per_word)), "tokens per word", false),
        "Non-special tokens per whitespace word on the test texts: more tokens per word means longer sequences (cost) and more fragmented words.",
    ));
    h.push_str(&figure(
        interval_chart(
            &rows(&|s| s.truncated_fraction),
            "share of texts truncated",
            false,
        ),
        "Texts cut at the maximum length: the model never saw their end.",
    ));
    h.push_str("</div>");
    h
}

fn provenance(doc: &CompareReport) -> String {
    let d = &doc.dataset;
    let r = &doc.run;
    let mut h = String::from("<dl class=\"meta\">");
    let mut row = |k: &str, v: String| {
        let _ = write!(h, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(&v));
    };
    row("task", doc.task.clone());
    row("dataset", d.path.display().to_string());
    row("sha256", d.sha256.clone());
    row("rows per split", compact(&d.rows_per_split));
    row("split", d.split.clone());
    row("labels", d.labels.join(", "));
    row(
        "evaluated",
        format!(
            "{} test examples, {} train examples used",
            d.evaluated_test_examples, d.train_examples_used
        ),
    );
    for (k, label) in [
        ("id", "run"),
        ("seed", "seed"),
        ("threads", "threads"),
        ("started", "started"),
        ("finished", "finished"),
        ("wall_seconds", "seconds"),
    ] {
        if !r[k].is_null() {
            row(label, compact(&r[k]));
        }
    }
    row("lmcompare", doc.lmcompare_version.clone());
    h.push_str("</dl>");
    h.push_str("<table><thead><tr><th>model</th><th>spec</th><th>backend</th><th>content hash</th><th class=\"num\">computed</th><th class=\"num\">reused</th></tr></thead><tbody>");
    for m in &doc.models {
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td><code title=\"{}\">{}</code></td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&m.name),
            esc(&m.spec),
            esc(&m.backend),
            esc(&m.content_hash),
            esc(&m.content_hash.chars().take(12).collect::<String>()),
            m.computed_examples,
            if m.reused_from_runs.is_empty() {
                m.reused_examples.to_string()
            } else {
                let runs: Vec<String> = m.reused_from_runs.iter().map(i64::to_string).collect();
                format!("{} (from run {})", m.reused_examples, runs.join(", "))
            }
        );
    }
    h.push_str("</tbody></table>");
    if let Some(obj) = doc.run["protocol"].as_object() {
        h.push_str("<h3>Protocol</h3><dl class=\"meta\">");
        for (k, v) in obj {
            let _ = write!(h, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(&compact(v)));
        }
        h.push_str("</dl>");
    }
    if let Some(obj) = doc.method.as_object() {
        h.push_str("<h3>Method</h3><dl class=\"meta\">");
        for (k, v) in obj {
            let _ = write!(h, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(&compact(v)));
        }
        h.push_str("</dl>");
    }
    h
}

fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `metrics`: the summary, the main metric with the forest plot, and each model's
/// confusion matrix, per-class table and curves (sections 2, 3 and 5).
pub fn render_metrics_html(doc: &Value) -> String {
    let models: Vec<ModelReport> =
        serde_json::from_value(doc["models"].clone()).unwrap_or_default();
    let pairwise: Vec<Value> = doc["pairwise"].as_array().cloned().unwrap_or_default();
    let details: Option<Details> = serde_json::from_value(doc["details"].clone()).ok();
    let main = doc["method"]["main_metric"]
        .as_str()
        .unwrap_or("f1_macro")
        .to_owned();
    let mut page = Page {
        title: "lmcompare: prediction files".into(),
        subtitle: format!(
            "{} model(s) · {} examples · main metric {main}",
            models.len(),
            models.first().map_or(0, |m| m.n)
        ),
        sections: Vec::new(),
        data: doc.clone(),
    };
    page.push(
        "summary",
        "Every metric",
        summary_table(&models, &main, false),
    );
    page.push(
        "main-metric",
        "Is the difference real?",
        main_metric(&models, &pairwise, &main),
    );
    page.push(
        "models",
        "Per model: where it fails",
        per_model(&models, details.as_ref()),
    );
    if let Some(ex) = details.as_ref().and_then(|d| d.examples.as_ref()) {
        page.push("examples", "Examples", examples(ex));
    }
    page.finish()
}

/// `compare --task generate` and `--task perplexity`: scores with intervals, paired
/// differences, and (generate) example answers.
pub fn render_units_html(doc: &Value) -> String {
    let task = doc["task"].as_str().unwrap_or("");
    let (block, metrics, delta_key): (&str, &[&str], &str) = if task == "perplexity" {
        (
            "perplexity",
            &["bits_per_byte", "token_perplexity"],
            "delta_bits_per_byte",
        )
    } else {
        ("generate", &["f1", "exact_match"], "delta_f1")
    };
    let models = doc["models"].as_array().cloned().unwrap_or_default();
    let mut page = Page {
        title: format!(
            "lmcompare: {task} on {}",
            doc["dataset"]["path"]
                .as_str()
                .map_or("?".into(), |p| file_name(std::path::Path::new(p)))
        ),
        subtitle: format!("{} model(s)", models.len()),
        sections: Vec::new(),
        data: doc.clone(),
    };
    let mut overview = String::from("<ul class=\"verdicts\">");
    for p in doc["pairwise"].as_array().into_iter().flatten() {
        let _ = write!(
            overview,
            "<li>{}</li>",
            esc(p["verdict"].as_str().unwrap_or(""))
        );
    }
    overview.push_str("</ul>");
    let mut table = String::from("<table class=\"sortable\"><thead><tr><th>model</th>");
    for k in metrics {
        let _ = write!(table, "<th class=\"num\">{k}</th>");
    }
    table.push_str(
        "<th class=\"num\">latency p50</th><th class=\"num\">tokens / s</th></tr></thead><tbody>",
    );
    for m in &models {
        let _ = write!(
            table,
            "<tr><td>{}</td>",
            esc(m["name"].as_str().unwrap_or(""))
        );
        for k in metrics {
            let v = m[block][k].as_f64().unwrap_or(f64::NAN);
            let ci = &m[block]["ci"][k];
            let ci = match (ci["low"].as_f64(), ci["high"].as_f64()) {
                (Some(l), Some(h)) => {
                    format!("<br><span class=\"ci\">[{}, {}]</span>", num(l), num(h))
                }
                _ => String::new(),
            };
            let _ = write!(
                table,
                "<td class=\"num\" data-v=\"{}\">{}{ci}</td>",
                data_v(v),
                num(v)
            );
        }
        let e = &m["efficiency"];
        let _ = write!(
            table,
            "<td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            e["latency_ms_p50"]
                .as_f64()
                .map_or("—".into(), |v| format!("{v:.1}")),
            e["tokens_per_s"]
                .as_f64()
                .map_or("—".into(), |v| format!("{v:.1}"))
        );
    }
    table.push_str("</tbody></table>");
    page.push("overview", "At a glance", overview + &table);
    let mut charts = String::new();
    for k in metrics
        .iter()
        .take(if task == "perplexity" { 1 } else { 2 })
    {
        let rows: Vec<IntervalRow> = models
            .iter()
            .map(|m| IntervalRow {
                label: m["name"].as_str().unwrap_or("").to_owned(),
                value: m[block][k].as_f64().unwrap_or(f64::NAN),
                low: m[block]["ci"][k]["low"].as_f64(),
                high: m[block]["ci"][k]["high"].as_f64(),
                note: String::new(),
                strong: false,
            })
            .collect();
        charts.push_str(&figure(
            interval_chart(&rows, k, false),
            &format!(
                "{k} per model with its 95% bootstrap interval{}.",
                if *k == "bits_per_byte" {
                    " (lower is better; comparable across tokenizers)"
                } else {
                    ""
                }
            ),
        ));
    }
    let forest: Vec<IntervalRow> = doc["pairwise"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| IntervalRow {
            label: pair_label(p),
            value: p[delta_key].as_f64().unwrap_or(f64::NAN),
            low: p["ci"]["low"].as_f64(),
            high: p["ci"]["high"].as_f64(),
            note: format!(
                "p_holm {}",
                p_text(p["p_holm"].as_f64().unwrap_or(f64::NAN)).trim_start_matches("p ")
            ),
            strong: p["p_adjusted"].as_f64().is_some_and(|x| x < 0.05),
        })
        .collect();
    if !forest.is_empty() {
        charts.push_str(&figure(
            interval_chart(
                &forest,
                &format!("{} (a − b)", delta_key.trim_start_matches("delta_")),
                true,
            ),
            "Paired bootstrap differences with 95% intervals and Holm-corrected p-values.",
        ));
    }
    page.push("main-metric", "Is the difference real?", charts);
    if task == "generate" {
        let mut h = String::new();
        for m in &models {
            let _ = write!(h, "<h3>{}</h3><table><thead><tr><th>id</th><th>answer</th><th>reference(s)</th></tr></thead><tbody>", esc(m["name"].as_str().unwrap_or("")));
            for a in m["answers"].as_array().into_iter().flatten() {
                let refs: Vec<String> = a["reference"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(compact)
                    .collect();
                let _ = write!(
                    h,
                    "<tr><td><code>{}</code></td><td class=\"text\">{}</td><td class=\"text\">{}</td></tr>",
                    esc(&compact(&a["id"])),
                    esc(a["answer"].as_str().unwrap_or("")),
                    esc(&refs.join(" | "))
                );
            }
            h.push_str("</tbody></table>");
        }
        page.push("examples", "Example answers", h);
    }
    let mut meta = String::from("<dl class=\"meta\">");
    for (k, v) in doc["dataset"]
        .as_object()
        .into_iter()
        .flatten()
        .chain(doc["run"].as_object().into_iter().flatten())
    {
        let _ = write!(meta, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(&compact(v)));
    }
    meta.push_str("</dl>");
    page.push("provenance", "How this was run", meta);
    page.finish()
}

/// `tune`: the trials, learning curves (pruned trials dashed), each hyperparameter against
/// the metric, and the tuned-vs-untuned comparison.
pub fn render_tune_html(doc: &Value) -> String {
    let metric = doc["search"]["metric"]
        .as_str()
        .unwrap_or("metric")
        .to_owned();
    let trials = doc["trials"].as_array().cloned().unwrap_or_default();
    let comparison: Option<CompareReport> = serde_json::from_value(doc["comparison"].clone()).ok();
    let mut page = Page {
        title: "lmcompare: hyperparameter search".into(),
        subtitle: format!(
            "{} trial(s) · {} sampler · validation {metric}",
            trials.len(),
            doc["search"]["sampler"].as_str().unwrap_or("?")
        ),
        sections: Vec::new(),
        data: doc.clone(),
    };
    let mut overview = String::from("<div class=\"glance\">");
    if let Some(b) = doc["best"].as_object() {
        let _ = write!(
            overview,
            "<div><b>Best trial</b>{} trial {}: {metric} {}</div><div><b>Its configuration</b><code>{}</code></div>",
            esc(b.get("model").and_then(Value::as_str).unwrap_or("")),
            b.get("trial").map_or(String::new(), compact),
            num(b.get("metric").and_then(Value::as_f64).unwrap_or(f64::NAN)),
            esc(&b.get("config").map_or(String::new(), compact))
        );
    }
    let _ = write!(
        overview,
        "<div><b>Trained</b>{}</div></div>",
        esc(doc["search"]["trained"].as_str().unwrap_or(""))
    );
    page.push("overview", "At a glance", overview);
    let mut t = String::from("<table class=\"sortable\"><thead><tr><th class=\"num\">id</th><th>model</th><th>status</th><th class=\"num\">");
    t.push_str(&esc(&metric));
    t.push_str("</th><th class=\"num\">best epoch</th><th class=\"num\">seconds</th><th>configuration</th></tr></thead><tbody>");
    for tr in &trials {
        let m = tr["metric"].as_f64().unwrap_or(f64::NAN);
        let _ = write!(
            t,
            "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\" data-v=\"{}\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td><code>{}</code></td></tr>",
            compact(&tr["id"]),
            esc(tr["model"].as_str().unwrap_or("")),
            esc(tr["status"].as_str().unwrap_or("")),
            data_v(m),
            num(m),
            compact(&tr["best_epoch"]),
            tr["wall_seconds"].as_f64().map_or("—".into(), |s| format!("{s:.1}")),
            esc(&compact(&tr["config"]))
        );
    }
    t.push_str("</tbody></table>");
    page.push("trials", "Trials", t);
    // Learning curves, one chart per model and quantity.
    let mut models: Vec<String> = Vec::new();
    for tr in &trials {
        let m = tr["model"].as_str().unwrap_or("").to_owned();
        if !models.contains(&m) {
            models.push(m);
        }
    }
    let mut curves = String::from("<div class=\"charts\">");
    for model in &models {
        for (key, title) in [
            ("val_metric", format!("validation {metric}")),
            ("train_loss", "train loss".to_owned()),
        ] {
            let series: Vec<Series> = trials
                .iter()
                .filter(|tr| tr["model"].as_str() == Some(model))
                .enumerate()
                .map(|(j, tr)| Series {
                    name: format!(
                        "trial {}{}",
                        compact(&tr["trial"]),
                        if tr["status"] == "pruned" {
                            " (pruned)"
                        } else {
                            ""
                        }
                    ),
                    points: tr["epochs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|e| Some((e["epoch"].as_f64()?, e[key].as_f64()?)))
                        .collect(),
                    dashed: tr["status"] == "pruned",
                    markers: false,
                    colour: j,
                })
                .filter(|s| !s.points.is_empty())
                .collect();
            if series.is_empty() {
                continue;
            }
            curves.push_str(&figure(
                line_chart(
                    &series,
                    &LineAxes {
                        x_title: "epoch".into(),
                        y_title: title.clone(),
                        ..LineAxes::default()
                    },
                    &format!("{model}: {title}"),
                ),
                &format!("{model}: {title} per epoch, one line per trial; pruned trials dashed."),
            ));
        }
    }
    curves.push_str("</div>");
    page.push("learning-curves", "Learning curves", curves);
    page.push(
        "hyperparameters",
        "Each hyperparameter against the metric",
        hyperparameters(&trials, &models, &metric),
    );
    if let Some(c) = &comparison {
        comparison_sections(&mut page, c, true);
    }
    page.finish()
}

fn hyperparameters(trials: &[Value], models: &[String], metric: &str) -> String {
    let mut keys: Vec<String> = Vec::new();
    for tr in trials {
        for k in tr["config"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    }
    let mut h = String::from("<div class=\"charts\">");
    for k in &keys {
        let values: Vec<&Value> = trials.iter().map(|t| &t["config"][k]).collect();
        let numeric = values.iter().all(|v| v.is_number());
        let mut categories: Vec<String> = Vec::new();
        if !numeric {
            for v in &values {
                let s = compact(v);
                if !categories.contains(&s) {
                    categories.push(s);
                }
            }
        }
        let nums: Vec<f64> = values.iter().filter_map(|v| v.as_f64()).collect();
        let lo = nums.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = nums.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let x_log = numeric && lo > 0.0 && hi / lo >= 50.0;
        let series: Vec<Series> = models
            .iter()
            .enumerate()
            .map(|(i, model)| Series {
                name: model.clone(),
                points: trials
                    .iter()
                    .filter(|t| t["model"].as_str() == Some(model))
                    .filter_map(|t| {
                        let y = t["metric"].as_f64()?;
                        let v = &t["config"][k];
                        let x = if numeric {
                            v.as_f64()?
                        } else {
                            categories.iter().position(|c| *c == compact(v))? as f64
                        };
                        Some((x, y))
                    })
                    .collect(),
                dashed: false,
                markers: true,
                colour: i,
            })
            .collect();
        if series.iter().all(|s| s.points.is_empty()) {
            continue;
        }
        let axes = LineAxes {
            x_title: format!("{k}{}", if x_log { " (log)" } else { "" }),
            y_title: metric.to_owned(),
            x_log,
            x_categories: categories,
            ..LineAxes::default()
        };
        h.push_str(&figure(
            line_chart(&series, &axes, &format!("{metric} against {k}")),
            &format!("Each finished trial's validation {metric} against its {k}."),
        ));
    }
    h.push_str("</div>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn generate_reports_show_scores_differences_and_escaped_answers() {
        let model = |name: &str, f1: f64| {
            json!({"name": name, "spec": "x.gguf",
                "generate": {"exact_match": f1 - 0.1, "f1": f1,
                    "ci": {"exact_match": {"low": f1 - 0.2, "high": f1, "confidence": 0.95},
                           "f1": {"low": f1 - 0.1, "high": f1 + 0.1, "confidence": 0.95}}},
                "answers": [{"id": "p1", "answer": "</script><img src=x onerror=alert(1)>", "reference": ["Paris"]}],
                "efficiency": {"latency_ms_p50": 12.0, "tokens_per_s": 30.0}})
        };
        let doc = json!({
            "task": "generate", "models": [model("a", 0.6), model("b", 0.4)],
            "pairwise": [{"a": "a", "b": "b", "delta_f1": 0.2, "ci": {"low": 0.05, "high": 0.35},
                "p_bootstrap": 0.01, "p_adjusted": 0.01, "p_holm": 0.01, "verdict": "a answers better than b"}],
            "dataset": {"path": "/d/prompts.jsonl", "sha256": "00"}, "run": {"id": 1},
        });
        let html = render_units_html(&doc);
        assert!(
            html.contains("<section id=\"main-metric\">")
                && html.contains("<section id=\"examples\">")
        );
        assert!(html.contains("&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"));
        // Outside the JSON block, the answer never appears unescaped.
        let json_at = html.find("id=\"lmcompare-report\"").unwrap();
        assert!(!html[..json_at].contains("<img"));
        assert!(!html[json_at..].contains("</script><img"));
        assert!(html.contains("zero") && html.contains("p_holm = 0.010"));
        assert!(html.contains("lmcompare: generate on prompts.jsonl"));
    }

    #[test]
    fn the_best_model_and_its_worst_confusion_are_named() {
        let m = |name: &str, acc: f64, matrix: Vec<Vec<u64>>| -> ModelReport {
            serde_json::from_value(json!({"name": name, "n": 10, "labels": ["x", "y"],
                "metrics": {"accuracy": acc}, "ci": {"accuracy": {"low": acc - 0.1, "high": acc + 0.1, "defined_resamples": 100}},
                "per_class": {}, "confusion_matrix": {"labels": ["x", "y"], "matrix": matrix}, "warnings": []}))
            .unwrap()
        };
        let models = vec![
            m("low", 0.5, vec![vec![3, 2], vec![3, 2]]),
            m("high", 0.8, vec![vec![5, 0], vec![2, 3]]),
        ];
        assert_eq!(best_model(&models, "accuracy"), Some(1));
        assert_eq!(best_model(&models, "log_loss"), None, "no model reports it");
        assert!(worst_confusion(&models[1]).contains("predicts \"x\" for gold \"y\" (2 of 5)"));
    }
}
