use lmcompare_metrics::{Metric, PairScore, Scorecard};
use serde_json::{json, Map, Value};

use crate::text::{aligned, interval, markdown_table, num, pval};

/// How the numbers were computed, written into every JSON report so a reader can check it.
fn method(card: &Scorecard) -> Value {
    let o = &card.options;
    json!({
        "conventions": "scikit-learn 1.9: label set = sorted union of gold and predicted labels unless given (with several files: the union over all files, so every model is scored on the same labels); zero_division applies only to 0/0 and NaN entries are left out of averages",
        "confidence_intervals": format!("percentile bootstrap, {} resamples, confidence {}, seed {}", o.bootstrap.resamples, o.bootstrap.confidence, o.bootstrap.seed),
        "ece": format!("top-label confidence (argmax of the probabilities), {} {} bins", o.metric.ece_bins, match o.metric.ece_strategy { lmcompare_metrics::EceStrategy::Uniform => "equal-width", lmcompare_metrics::EceStrategy::Quantile => "equal-count" }),
        "mcnemar": "on per-example correctness; exact two-sided binomial when discordant pairs < 25, else chi-square with continuity correction",
        "paired_bootstrap": "both models on the same resamples; delta CI = percentile interval of the resampled differences; p = (1 + #{|d* - d| >= |d|}) / (B + 1), two-sided, null-centred",
        "paired_permutation": format!("{} random swaps of the two models' outputs per example; p = (1 + #{{|d_perm| >= |d|}}) / (R + 1), two-sided", o.permutations),
        "correction": format!("{} across all pairs, applied to the permutation p-value of the main metric (the bootstrap p-value when permutations are off); p_holm is always Holm-Bonferroni", o.correction.key()),
        "main_metric": o.main_metric.key(),
        "bootstrap_resamples": o.bootstrap.resamples,
        "permutations": o.permutations,
        "seed": o.bootstrap.seed,
        "correction_method": o.correction.key(),
    })
}

fn finite_or_null(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        Value::Null
    }
}

/// The `lmcompare metrics` JSON document.
pub fn metrics_json(card: &Scorecard) -> Value {
    let models: Vec<Value> = card
        .models
        .iter()
        .map(|m| {
            let e = &m.evaluation;
            let mut metrics = Map::new();
            for (metric, v) in &e.metrics {
                metrics.insert(metric.key().to_owned(), finite_or_null(*v));
            }
            let mut ci = Map::new();
            for (metric, iv) in &m.intervals {
                ci.insert(
                    metric.key().to_owned(),
                    json!({"low": finite_or_null(iv.low), "high": finite_or_null(iv.high), "defined_resamples": iv.defined}),
                );
            }
            let mut per_class = Map::new();
            for (label, s) in &e.per_class {
                per_class.insert(
                    label.clone(),
                    json!({"precision": finite_or_null(s.precision), "recall": finite_or_null(s.recall), "f1": finite_or_null(s.f1), "support": s.support as u64}),
                );
            }
            json!({
                "name": m.name,
                "n": e.n,
                "labels": e.confusion_labels,
                "metrics": metrics,
                "ci": ci,
                "per_class": per_class,
                "confusion_matrix": {"labels": e.confusion_labels, "matrix": e.confusion_matrix},
                "warnings": e.warnings,
            })
        })
        .collect();
    let pairwise: Vec<Value> = card.pairs.iter().map(|p| pair_json(card, p)).collect();
    json!({
        "lmcompare_version": env!("CARGO_PKG_VERSION"),
        "models": models,
        "pairwise": pairwise,
        "method": method(card),
    })
}

fn pair_json(card: &Scorecard, p: &PairScore) -> Value {
    let r = &p.result;
    let mut deltas = Map::new();
    for d in &r.deltas {
        deltas.insert(
            d.metric.key().to_owned(),
            json!({"delta": finite_or_null(d.delta), "ci_low": finite_or_null(d.ci_low), "ci_high": finite_or_null(d.ci_high)}),
        );
    }
    json!({
        "a": card.models[p.a].name,
        "b": card.models[p.b].name,
        "metric": r.metric.key(),
        "delta": finite_or_null(r.delta),
        "ci_low": finite_or_null(r.ci_low),
        "ci_high": finite_or_null(r.ci_high),
        "mcnemar_p": finite_or_null(r.mcnemar.p_value),
        "mcnemar_method": r.mcnemar.method.key(),
        "mcnemar_statistic": finite_or_null(r.mcnemar.statistic),
        "a_right_b_wrong": r.mcnemar.b,
        "a_wrong_b_right": r.mcnemar.c,
        "bootstrap_p": finite_or_null(r.bootstrap_p),
        "permutation_p": finite_or_null(r.permutation_p),
        "p_holm": finite_or_null(p.p_holm),
        "p_adjusted": finite_or_null(p.p_adjusted),
        "correction": card.options.correction.key(),
        "deltas": deltas,
        "verdict": verdict(card, p, 0.05),
    })
}

/// One plain sentence per pair, e.g. "a beats b on f1_macro by 0.041 [0.018, 0.066],
/// p_holm = 0.002".
pub fn verdict(card: &Scorecard, p: &PairScore, alpha: f64) -> String {
    let r = &p.result;
    let (a, b) = (&card.models[p.a].name, &card.models[p.b].name);
    let m: Metric = r.metric;
    let padj_name = match card.options.correction {
        lmcompare_metrics::Correction::Holm => "p_holm",
        lmcompare_metrics::Correction::BenjaminiHochberg => "p_bh",
        lmcompare_metrics::Correction::None => "p",
    };
    let padj = p.p_adjusted;
    if r.delta.is_nan() || padj.is_nan() {
        return format!("{a} vs {b}: {m} difference is undefined");
    }
    let a_better = (r.delta > 0.0) == m.higher_is_better();
    let (winner, loser) = if a_better { (a, b) } else { (b, a) };
    let mag = r.delta.abs();
    // The winner's improvement is ±delta; its interval flips with the sign.
    let sign = if a_better == m.higher_is_better() {
        1.0
    } else {
        -1.0
    };
    let ci = if r.ci_low.is_nan() {
        String::new()
    } else if sign > 0.0 {
        format!(" {}", interval(r.ci_low, r.ci_high))
    } else {
        format!(" {}", interval(-r.ci_high, -r.ci_low))
    };
    if padj < alpha {
        format!(
            "{winner} beats {loser} on {m} by {}{ci}, {padj_name} = {}",
            num(mag),
            pval(padj)
        )
    } else {
        format!(
            "no significant difference between {a} and {b} on {m}: delta = {}{}, {padj_name} = {}",
            num(r.delta),
            if r.ci_low.is_nan() {
                String::new()
            } else {
                format!(" {}", interval(r.ci_low, r.ci_high))
            },
            pval(padj)
        )
    }
}

/// `classification_report`-style block per model, a metric summary with intervals, then the
/// pairwise tests and verdicts.
pub fn render_table(card: &Scorecard) -> String {
    let conf = card.options.bootstrap.confidence * 100.0;
    let mut out = String::new();
    for m in &card.models {
        let e = &m.evaluation;
        out.push_str(&format!("== {} (n = {}) ==\n", m.name, e.n));
        let mut rows = vec![vec![
            String::new(),
            "precision".into(),
            "recall".into(),
            "f1-score".into(),
            "support".into(),
        ]];
        for (label, s) in &e.per_class {
            rows.push(vec![
                label.clone(),
                num(s.precision),
                num(s.recall),
                num(s.f1),
                format!("{}", s.support as u64),
            ]);
        }
        let get = |k: Metric| e.get(k).unwrap_or(f64::NAN);
        let total: u64 = e.per_class.iter().map(|(_, s)| s.support as u64).sum();
        rows.push(vec![
            "accuracy".into(),
            String::new(),
            String::new(),
            num(get(Metric::Accuracy)),
            format!("{}", e.n),
        ]);
        for (name, p, r, f) in [
            (
                "macro avg",
                Metric::PrecisionMacro,
                Metric::RecallMacro,
                Metric::F1Macro,
            ),
            (
                "weighted avg",
                Metric::PrecisionWeighted,
                Metric::RecallWeighted,
                Metric::F1Weighted,
            ),
        ] {
            rows.push(vec![
                name.into(),
                num(get(p)),
                num(get(r)),
                num(get(f)),
                format!("{total}"),
            ]);
        }
        out.push_str(&aligned(&rows));
        out.push('\n');
        let mut rows = vec![vec![
            "metric".to_owned(),
            "value".to_owned(),
            format!("{conf:.0}% CI"),
        ]];
        for (metric, v) in &e.metrics {
            let ci = m
                .intervals
                .iter()
                .find(|(x, _)| x == metric)
                .map(|(_, iv)| interval(iv.low, iv.high))
                .unwrap_or_default();
            rows.push(vec![metric.key().to_owned(), num(*v), ci]);
        }
        out.push_str(&aligned(&rows));
        if !e.warnings.is_empty() {
            out.push_str("warnings:\n");
            for w in &e.warnings {
                out.push_str(&format!("  - {w}\n"));
            }
        }
        out.push('\n');
    }
    if !card.pairs.is_empty() {
        out.push_str(&format!(
            "== paired comparison on {} ==\n",
            card.options.main_metric
        ));
        out.push_str(&aligned(&pair_rows(card)));
        out.push('\n');
        for p in &card.pairs {
            out.push_str(&format!("* {}\n", verdict(card, p, 0.05)));
        }
    }
    out
}

fn pair_rows(card: &Scorecard) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        "a vs b".to_owned(),
        "delta (a-b)".to_owned(),
        "CI".to_owned(),
        "mcnemar p".to_owned(),
        "bootstrap p".to_owned(),
        "permutation p".to_owned(),
        format!("p_{}", card.options.correction.key()),
    ]];
    for p in &card.pairs {
        let r = &p.result;
        rows.push(vec![
            format!("{} vs {}", card.models[p.a].name, card.models[p.b].name),
            num(r.delta),
            interval(r.ci_low, r.ci_high),
            pval(r.mcnemar.p_value),
            pval(r.bootstrap_p),
            pval(r.permutation_p),
            pval(p.p_adjusted),
        ]);
    }
    rows
}

pub fn render_markdown(card: &Scorecard) -> String {
    let conf = card.options.bootstrap.confidence * 100.0;
    let mut out = String::from("# lmcompare metrics\n\n");
    for m in &card.models {
        let e = &m.evaluation;
        out.push_str(&format!(
            "## {} (n = {})\n\n",
            crate::text::markdown_escape(&m.name),
            e.n
        ));
        let rows: Vec<Vec<String>> = e
            .per_class
            .iter()
            .map(|(l, s)| {
                vec![
                    l.clone(),
                    num(s.precision),
                    num(s.recall),
                    num(s.f1),
                    format!("{}", s.support as u64),
                ]
            })
            .collect();
        out.push_str(&markdown_table(
            &["label", "precision", "recall", "f1", "support"],
            &rows,
        ));
        out.push('\n');
        let ci_head = format!("{conf:.0}% CI");
        let rows: Vec<Vec<String>> = e
            .metrics
            .iter()
            .map(|(metric, v)| {
                let ci = m
                    .intervals
                    .iter()
                    .find(|(x, _)| x == metric)
                    .map(|(_, iv)| interval(iv.low, iv.high))
                    .unwrap_or_default();
                vec![format!("`{}`", metric.key()), num(*v), ci]
            })
            .collect();
        out.push_str(&markdown_table(&["metric", "value", &ci_head], &rows));
        if !e.warnings.is_empty() {
            out.push_str("\nWarnings:\n\n");
            for w in &e.warnings {
                out.push_str(&format!("- {}\n", crate::text::markdown_escape(w)));
            }
        }
        out.push('\n');
    }
    if !card.pairs.is_empty() {
        out.push_str(&format!(
            "## Paired comparison on `{}`\n\n",
            card.options.main_metric
        ));
        let rows = pair_rows(card);
        let header: Vec<&str> = rows[0].iter().map(String::as_str).collect();
        out.push_str(&markdown_table(&header, &rows[1..]));
        out.push('\n');
        for p in &card.pairs {
            out.push_str(&format!(
                "- {}\n",
                crate::text::markdown_escape(&verdict(card, p, 0.05))
            ));
        }
    }
    out
}
