//! The comparison document `compare` and `tune` report, built in one place from the models'
//! runs: every metric with intervals over the same test examples (the metrics crate), the
//! `invalid` column, efficiency, pairwise tests, verdicts and the Pareto set.

use std::collections::HashMap;

use lmcompare_engine::data::Example;
use lmcompare_engine::store::StoredPrediction;
use lmcompare_metrics::invalid::with_invalid_column;
use lmcompare_metrics::pareto::pareto_front;
use lmcompare_metrics::{
    score_models, BootstrapOptions, Correction, LabelSet, Metric, MetricOptions, Predictions,
    ScoreOptions, Scorecard,
};
use lmcompare_report::doc::{
    CompareReport, ConfusionMatrix, DatasetInfo, Details, ExamplePrediction, ExampleRow,
    ExampleSample, Excluded, ModelCurves, ModelReport, Pareto, TokenizerStats,
};
use lmcompare_report::metrics_json;
use serde_json::Value;

use crate::runner::{label_index, ModelRun, INVALID};
use crate::{bad, fail, Result};

/// How a comparison is scored.
pub struct Scoring {
    pub bootstrap: usize,
    pub permutations: usize,
    pub seed: u64,
    pub metric: Metric,
    pub correction: Correction,
}

/// What the document says besides the models' scores.
pub struct ReportContext {
    pub task: String,
    pub dataset: DatasetInfo,
    pub run: Value,
    /// `compare`: the examples left out for every model (and each model's failed count).
    pub excluded: Option<Excluded>,
    /// Each run's model content hash, in run order (empty when unknown).
    pub hashes: Vec<String>,
    /// Test examples kept in the document for the HTML report.
    pub examples_cap: usize,
    /// The encoders' tokenizers on the test texts.
    pub tokenizers: Vec<TokenizerStats>,
}

/// The longest text kept per example in the document.
const TEXT_CHARS: usize = 2000;
/// Points per drawn curve (areas come from the full curves).
const CURVE_POINTS: usize = 200;

/// Curves of every model that has probabilities, and the capped example sample.
pub fn details(
    scored: &[(String, Predictions)],
    texts: Option<&[&str]>,
    ids: &[&str],
    cap: usize,
    ece_bins: usize,
    pos: Option<usize>,
) -> Details {
    let curves = scored
        .iter()
        .filter_map(|(name, p)| {
            lmcompare_metrics::curves::curves(p, ece_bins, pos, CURVE_POINTS).map(|curves| {
                ModelCurves {
                    model: name.clone(),
                    curves,
                }
            })
        })
        .collect();
    Details {
        curves,
        examples: example_sample(scored, texts, ids, cap),
        tokenizers: Vec::new(),
    }
}

fn example_sample(
    scored: &[(String, Predictions)],
    texts: Option<&[&str]>,
    ids: &[&str],
    cap: usize,
) -> Option<ExampleSample> {
    let (_, first) = scored.first()?;
    let n = first.len();
    let disagree = |i: usize| {
        let p0 = first.pred()[i];
        if scored.len() == 1 {
            p0 != first.gold()[i]
        } else {
            scored.iter().any(|(_, p)| p.pred()[i] != p0)
        }
    };
    let flags: Vec<bool> = (0..n).map(disagree).collect();
    let wrong = |i: usize| scored.iter().any(|(_, p)| p.pred()[i] != p.gold()[i]);
    // Disagreements, then examples some model got wrong, then the rest; file order within.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (!flags[i], !wrong(i)));
    let rows = order
        .into_iter()
        .take(cap)
        .map(|i| ExampleRow {
            id: ids[i].to_owned(),
            text: texts.map(|t| cut(t[i], TEXT_CHARS)),
            gold: first.labels().name(first.gold()[i]).to_owned(),
            disagree: flags[i],
            predictions: scored
                .iter()
                .map(|(_, p)| {
                    let c = p.pred()[i] as usize;
                    let k = p.labels().len();
                    ExamplePrediction {
                        label: p.labels().name(c as u32).to_owned(),
                        probability: p
                            .proba()
                            .filter(|_| c < p.selected())
                            .map(|pr| pr[i * k + c]),
                    }
                })
                .collect(),
        })
        .collect();
    Some(ExampleSample {
        total: n,
        disagreements: flags.iter().filter(|&&f| f).count(),
        cap,
        models: scored.iter().map(|(n, _)| n.clone()).collect(),
        rows,
    })
}

/// At most `max` characters of `text`, with an ellipsis when cut.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// What the document says about the data: `evaluated` test examples scored, `train` used.
pub fn dataset_info(
    ds: &lmcompare_engine::data::Dataset,
    path: &std::path::Path,
    evaluated: usize,
    train: usize,
) -> DatasetInfo {
    DatasetInfo {
        path: path.to_owned(),
        sha256: ds.sha256.clone(),
        rows_per_split: serde_json::json!(ds.rows_per_split()),
        labels: ds.labels.clone(),
        split: ds.split_source.clone(),
        evaluated_test_examples: evaluated,
        train_examples_used: train,
    }
}

/// Every model's metrics with intervals on the same test examples, pairwise tests,
/// verdicts and the Pareto set: the typed document `compare` and `tune` report.
pub fn comparison_doc(
    runs: &[ModelRun],
    test: &[&Example],
    dataset_labels: &[String],
    s: &Scoring,
    ctx: ReportContext,
) -> Result<CompareReport> {
    let (card, scored) = score(runs, test, dataset_labels, s)?;
    let mut doc = metrics_json(&card);
    let mut models: Vec<ModelReport> = serde_json::from_value(doc["models"].take())?;
    for ((m, r), (_, preds)) in models.iter_mut().zip(runs).zip(&scored) {
        if r.predictions.iter().any(|p| p.label == INVALID) {
            add_invalid_column(&mut m.confusion_matrix, preds, dataset_labels);
        }
        m.spec = r.spec.clone();
        m.backend = r.backend.clone();
        m.efficiency = r.efficiency.clone();
        m.computed_examples = r.computed;
        m.reused_examples = r.reused;
        m.batch_invariance_max_abs_change = r.invariance;
        if ctx.excluded.is_some() {
            m.failed_examples = Some(r.failed.len());
        }
        if let Value::Object(extra) = &r.extra {
            m.extra = extra.clone();
        }
        m.warnings.extend(r.warnings.iter().cloned());
        if let Some(n) = r.extra["generation"]["invalid_answers"]
            .as_u64()
            .filter(|n| *n > 0)
        {
            m.warnings.push(format!(
                "generation: {n} of {} answers named no label; they are counted as wrong, in the `invalid` column of the confusion matrix",
                r.predictions.len()
            ));
        }
    }
    for (m, hash) in models.iter_mut().zip(&ctx.hashes) {
        m.content_hash = hash.clone();
    }
    let texts: Vec<&str> = test.iter().map(|e| e.text.as_str()).collect();
    let ids: Vec<&str> = test.iter().map(|e| e.id.as_str()).collect();
    let mut details = details(
        &scored,
        Some(&texts),
        &ids,
        ctx.examples_cap,
        MetricOptions::default().ece_bins,
        None,
    );
    details.tokenizers = ctx.tokenizers;
    let pairwise: Vec<Value> = serde_json::from_value(doc["pairwise"].take())?;
    let verdicts = pairwise
        .iter()
        .map(|p| p["verdict"].as_str().unwrap_or_default().to_owned())
        .collect();
    Ok(CompareReport {
        lmcompare_version: env!("CARGO_PKG_VERSION").to_owned(),
        pareto: pareto(&models, s.metric),
        models,
        pairwise,
        method: doc["method"].take(),
        verdicts,
        task: ctx.task,
        excluded_examples: ctx.excluded,
        dataset: ctx.dataset,
        run: ctx.run,
        details: Some(details),
        explanations: None,
    })
}

/// Every model's predictions on the same test examples, over the dataset's labels (and
/// `invalid` when a model answered so), in the order of `test`.
pub(crate) fn predictions(
    runs: &[ModelRun],
    test: &[&Example],
    dataset_labels: &[String],
) -> Result<Vec<(String, Predictions)>> {
    let any_invalid = runs
        .iter()
        .any(|r| r.predictions.iter().any(|p| p.label == INVALID));
    let mut names = dataset_labels.to_vec();
    if any_invalid {
        names.push(INVALID.to_owned());
    }
    let labels = LabelSet::new(names.clone()).map_err(|e| fail!("{e}"))?;
    let selected = dataset_labels.len();
    let k = labels.len();
    let gold: Vec<u32> = test
        .iter()
        .map(|e| {
            Ok(label_index(dataset_labels, &e.label, &format!("test example {}", e.id))? as u32)
        })
        .collect::<Result<_>>()?;
    let mut scored = Vec::new();
    for r in runs {
        let by_id: HashMap<&str, &StoredPrediction> = r
            .predictions
            .iter()
            .map(|p| (p.example_id.as_str(), p))
            .collect();
        let mut pred = Vec::with_capacity(test.len());
        let mut proba = Vec::with_capacity(test.len() * k);
        // Generated answers come without probabilities: no calibration metrics for them.
        let mut has_proba = true;
        for e in test {
            let p = by_id
                .get(e.id.as_str())
                .ok_or_else(|| fail!("model {}: no prediction for {}", r.name, e.id))?;
            pred.push(label_index(
                &names,
                &p.label,
                &format!("model {}: the prediction for {}", r.name, e.id),
            )? as u32);
            has_proba &= p.probabilities.len() == selected;
            proba.extend(p.probabilities.iter().copied());
            proba.extend(std::iter::repeat_n(0.0, k - selected));
        }
        let preds = Predictions::from_indices(
            labels.clone(),
            selected,
            gold.clone(),
            pred,
            has_proba.then_some(proba),
        )
        .map_err(|e| fail!("{e}"))?;
        scored.push((r.name.clone(), preds));
    }
    Ok(scored)
}

/// The scorecard of every model on the same test examples.
fn score(
    runs: &[ModelRun],
    test: &[&Example],
    dataset_labels: &[String],
    s: &Scoring,
) -> Result<(Scorecard, Vec<(String, Predictions)>)> {
    let scored = predictions(runs, test, dataset_labels)?;
    let opts = ScoreOptions {
        metric: MetricOptions::default(),
        bootstrap: BootstrapOptions {
            resamples: s.bootstrap,
            seed: s.seed,
            confidence: 0.95,
        },
        permutations: s.permutations,
        main_metric: s.metric,
        correction: s.correction,
    };
    let card = score_models(&scored, &opts).map_err(|e| bad!("{e}"))?;
    Ok((card, scored))
}

/// The confusion matrix of a model with invalid answers gets their column: gold label by
/// row, `invalid` as the last predicted column.
fn add_invalid_column(cm: &mut ConfusionMatrix, preds: &Predictions, dataset_labels: &[String]) {
    let selected = dataset_labels.len();
    let invalid = selected as u32;
    let mut col = vec![0u64; selected];
    for (&g, &p) in preds.gold().iter().zip(preds.pred()) {
        if p == invalid {
            col[g as usize] += 1;
        }
    }
    cm.predicted_labels = Some([dataset_labels, &[INVALID.to_owned()]].concat());
    cm.matrix = with_invalid_column(&cm.matrix, selected, &col);
}

/// Pareto set: models no other model beats on the main metric and on FLOPs per example
/// (latency where FLOPs are unknown).
fn pareto(models: &[ModelReport], main: Metric) -> Pareto {
    let points: Vec<(f64, f64)> = models
        .iter()
        .map(|m| {
            let q = m.metric(main.key());
            let q = if main.higher_is_better() { q } else { -q };
            let e = &m.efficiency;
            let c = e
                .flops_per_example
                .filter(|f| f.is_finite())
                .or(Some(e.latency_ms_p50).filter(|l| l.is_finite()))
                .unwrap_or(f64::INFINITY);
            (q, c)
        })
        .collect();
    Pareto {
        quality: main.key().to_owned(),
        cost: "flops_per_example".to_owned(),
        models: pareto_front(&points)
            .into_iter()
            .map(|i| models[i].name.clone())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use lmcompare_engine::data::Split;
    use lmcompare_report::doc::Efficiency;
    use serde_json::json;

    use super::*;

    fn run(name: &str, labels: &[&str]) -> ModelRun {
        ModelRun {
            name: name.into(),
            spec: name.into(),
            predictions: labels
                .iter()
                .enumerate()
                .map(|(i, l)| StoredPrediction {
                    example_id: format!("e{i}"),
                    label: (*l).into(),
                    probabilities: Vec::new(),
                    tokens: 3,
                    batch_latency_ms: 1.0,
                    batch_size: 1,
                })
                .collect(),
            computed: labels.len(),
            reused: 0,
            efficiency: Efficiency::default(),
            backend: "test".into(),
            invariance: None,
            failed: Vec::new(),
            warnings: Vec::new(),
            extra: Value::Null,
        }
    }

    fn test_examples() -> Vec<Example> {
        ["a", "b", "a", "b"]
            .iter()
            .enumerate()
            .map(|(i, l)| Example {
                id: format!("e{i}"),
                text: format!("t{i}"),
                label: (*l).into(),
                split: Split::Test,
            })
            .collect()
    }

    fn ctx() -> ReportContext {
        ReportContext {
            task: "classify".into(),
            dataset: DatasetInfo {
                path: "d.jsonl".into(),
                sha256: "0".into(),
                rows_per_split: json!({"test": 4}),
                labels: vec!["a".into(), "b".into()],
                split: "given".into(),
                evaluated_test_examples: 4,
                train_examples_used: 0,
            },
            run: json!({"id": 1}),
            excluded: None,
            hashes: Vec::new(),
            examples_cap: 500,
            tokenizers: Vec::new(),
        }
    }

    const SCORING: Scoring = Scoring {
        bootstrap: 0,
        permutations: 0,
        seed: 0,
        metric: Metric::Accuracy,
        correction: Correction::Holm,
    };

    #[test]
    fn a_label_outside_the_set_is_an_error_not_class_zero() {
        let ex = test_examples();
        let test: Vec<&Example> = ex.iter().collect();
        let labels = vec!["a".to_owned(), "b".to_owned()];
        let bad_run = [run("m", &["a", "b", "zebra", "b"])];
        let err = comparison_doc(&bad_run, &test, &labels, &SCORING, ctx())
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"zebra\"") && err.contains("e2"), "{err}");
        let good_run = [run("m", &["a", "b", "b", "b"])];
        let good = comparison_doc(&good_run, &test, &labels, &SCORING, ctx()).unwrap();
        assert_eq!(good.models[0].metric("accuracy"), 0.75);
    }

    #[test]
    fn invalid_answers_get_their_own_column_and_stay_in_the_matrix() {
        let ex = test_examples();
        let test: Vec<&Example> = ex.iter().collect();
        let labels = vec!["a".to_owned(), "b".to_owned()];
        let mut generated = run("gen", &["a", INVALID, INVALID, "b"]);
        generated.extra = json!({"generation": {"invalid_answers": 2}});
        let runs = [generated, run("cls", &["a", "b", "a", "a"])];
        let doc = comparison_doc(&runs, &test, &labels, &SCORING, ctx()).unwrap();
        let cm = &doc.models[0].confusion_matrix;
        let expected: Vec<String> = vec!["a".into(), "b".into(), "invalid".into()];
        assert_eq!(cm.predicted_labels.as_ref(), Some(&expected));
        assert_eq!(cm.matrix[0], vec![1, 0, 1]);
        assert_eq!(cm.matrix[1], vec![0, 1, 1]);
        assert_eq!(doc.models[0].metric("accuracy"), 0.5);
        assert!(doc.models[0]
            .warnings
            .iter()
            .any(|w| w.contains("2 of 4 answers named no label")));
        assert!(doc.models[1].confusion_matrix.predicted_labels.is_none());
        assert_eq!(doc.models[0].extra["generation"]["invalid_answers"], 2);
        // The typed document is the JSON contract: it reads back as it was written.
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(
            json["models"][0]["confusion_matrix"]["predicted_labels"],
            json!(["a", "b", "invalid"])
        );
        let back: CompareReport = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), json);
    }

    #[test]
    fn five_models_on_ten_thousand_examples_make_a_report_under_five_megabytes() {
        let n = 10_000;
        let labels = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let ex: Vec<Example> = (0..n)
            .map(|i| Example {
                id: format!("example-{i:05}"),
                text: format!("{i} {}", "a long review text with words in it, ".repeat(8)),
                label: labels[i % 3].clone(),
                split: Split::Test,
            })
            .collect();
        let test: Vec<&Example> = ex.iter().collect();
        let runs: Vec<ModelRun> = (0..5)
            .map(|m| {
                let mut r = run(&format!("model-{m}"), &[]);
                r.predictions = (0..n)
                    .map(|i| {
                        let c = (i * (m + 1) / 7) % 3;
                        let mut p = vec![0.2, 0.2, 0.2];
                        p[c] = 0.6;
                        StoredPrediction {
                            example_id: format!("example-{i:05}"),
                            label: labels[c].clone(),
                            probabilities: p,
                            tokens: 40,
                            batch_latency_ms: 1.0,
                            batch_size: 1,
                        }
                    })
                    .collect();
                r
            })
            .collect();
        let mut c = ctx();
        c.dataset.labels = labels.clone();
        let doc = comparison_doc(&runs, &test, &labels, &SCORING, c).unwrap();
        let d = doc.details.as_ref().unwrap();
        assert_eq!(d.curves.len(), 5);
        assert!(d.curves.iter().all(|c| c.curves.roc.len() == 3
            && c.curves.roc.iter().all(|r| r.points.len() <= CURVE_POINTS)));
        let ex = d.examples.as_ref().unwrap();
        assert_eq!((ex.total, ex.rows.len()), (n, 500));
        // Disagreements come first.
        assert!(ex.rows[0].disagree && ex.disagreements > 500);
        let html = lmcompare_report::render_compare_html(&doc);
        assert!(html.len() < 5_000_000, "{} bytes", html.len());
    }

    #[test]
    fn the_example_sample_puts_disagreements_first_then_errors_and_cuts_long_texts() {
        let ex = test_examples();
        let mut long = ex.clone();
        long[3].text = "x".repeat(5000);
        let test: Vec<&Example> = long.iter().collect();
        let labels = vec!["a".to_owned(), "b".to_owned()];
        // gold a b a b; m1 a b b a; m2 a b a a: e2 disagrees, e3 both wrong, e0/e1 right.
        let runs = [
            run("m1", &["a", "b", "b", "a"]),
            run("m2", &["a", "b", "a", "a"]),
        ];
        let doc = comparison_doc(&runs, &test, &labels, &SCORING, ctx()).unwrap();
        let sample = doc.details.unwrap().examples.unwrap();
        let ids: Vec<&str> = sample.rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["e2", "e3", "e0", "e1"]);
        assert_eq!(sample.disagreements, 1);
        assert_eq!(
            sample.rows[1].text.as_ref().unwrap().chars().count(),
            TEXT_CHARS + 1
        );
        assert_eq!(sample.rows[0].predictions[0].label, "b");
        assert!(sample.rows[0].predictions[0].probability.is_none());
    }
}
