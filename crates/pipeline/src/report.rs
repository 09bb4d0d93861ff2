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
    ScoreOptions,
};
use lmcompare_report::metrics_json;
use serde_json::{json, Value};

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

/// Every model's metrics with intervals on the same test examples, pairwise tests,
/// verdicts and the Pareto set.
pub fn comparison_doc(
    runs: &[ModelRun],
    test: &[&Example],
    dataset_labels: &[String],
    s: &Scoring,
) -> Result<Value> {
    // Score all models over the dataset's label set, on the same test examples. A model that
    // classifies by generating text may answer something that is no label: such answers get
    // their own `invalid` column (predicted, never gold), outside the macro averages.
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
    let mut doc = metrics_json(&card);
    for ((m, r), (_, preds)) in doc["models"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .zip(runs)
        .zip(&scored)
    {
        if r.predictions.iter().any(|p| p.label == INVALID) {
            add_invalid_column(m, preds, dataset_labels);
        }
        m["spec"] = json!(r.spec);
        m["backend"] = json!(r.backend);
        m["efficiency"] = serde_json::to_value(&r.efficiency)?;
        m["computed_examples"] = json!(r.computed);
        m["reused_examples"] = json!(r.reused);
        if let Some(x) = r.invariance {
            m["batch_invariance_max_abs_change"] = json!(x);
        }
    }
    doc["pareto"] = pareto_json(&doc, runs, s.metric);
    doc["verdicts"] = json!(doc["pairwise"]
        .as_array()
        .map(|ps| ps.iter().map(|p| p["verdict"].clone()).collect::<Vec<_>>())
        .unwrap_or_default());
    Ok(doc)
}

/// The confusion matrix of a model with invalid answers gets their column: gold label by
/// row, `invalid` as the last predicted column.
fn add_invalid_column(m: &mut Value, preds: &Predictions, dataset_labels: &[String]) {
    let selected = dataset_labels.len();
    let invalid = selected as u32;
    let mut col = vec![0u64; selected];
    for (&g, &p) in preds.gold().iter().zip(preds.pred()) {
        if p == invalid {
            col[g as usize] += 1;
        }
    }
    let cm = &mut m["confusion_matrix"];
    let matrix: Vec<Vec<u64>> = serde_json::from_value(cm["matrix"].clone()).unwrap_or_default();
    cm["predicted_labels"] = json!([dataset_labels, &[INVALID.to_owned()]].concat());
    cm["matrix"] = json!(with_invalid_column(&matrix, selected, &col));
}

/// Pareto set: models no other model beats on the main metric and on FLOPs per example
/// (latency where FLOPs are unknown).
fn pareto_json(doc: &Value, runs: &[ModelRun], main: Metric) -> Value {
    let points: Vec<(f64, f64)> = doc["models"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    let q = m["metrics"][main.key()].as_f64().unwrap_or(f64::NAN);
                    let q = if main.higher_is_better() { q } else { -q };
                    let c = m["efficiency"]["flops_per_example"]
                        .as_f64()
                        .or(m["efficiency"]["latency_ms_p50"].as_f64())
                        .unwrap_or(f64::INFINITY);
                    (q, c)
                })
                .collect()
        })
        .unwrap_or_default();
    let names: Vec<&str> = pareto_front(&points)
        .into_iter()
        .map(|i| runs[i].name.as_str())
        .collect();
    json!({"quality": main.key(), "cost": "flops_per_example", "models": names})
}

#[cfg(test)]
mod tests {
    use lmcompare_engine::data::Split;
    use lmcompare_report::doc::Efficiency;

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
        let err = comparison_doc(
            &[run("m", &["a", "b", "zebra", "b"])],
            &test,
            &labels,
            &SCORING,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"zebra\"") && err.contains("e2"), "{err}");
        let good =
            comparison_doc(&[run("m", &["a", "b", "b", "b"])], &test, &labels, &SCORING).unwrap();
        assert_eq!(good["models"][0]["metrics"]["accuracy"], 0.75);
    }

    #[test]
    fn invalid_answers_get_their_own_column_and_stay_in_the_matrix() {
        let ex = test_examples();
        let test: Vec<&Example> = ex.iter().collect();
        let labels = vec!["a".to_owned(), "b".to_owned()];
        let doc = comparison_doc(
            &[
                run("gen", &["a", INVALID, INVALID, "b"]),
                run("cls", &["a", "b", "a", "a"]),
            ],
            &test,
            &labels,
            &SCORING,
        )
        .unwrap();
        let cm = &doc["models"][0]["confusion_matrix"];
        assert_eq!(cm["predicted_labels"], json!(["a", "b", "invalid"]));
        assert_eq!(cm["matrix"][0], json!([1, 0, 1]));
        assert_eq!(cm["matrix"][1], json!([0, 1, 1]));
        assert_eq!(doc["models"][0]["metrics"]["accuracy"], 0.5);
        assert!(doc["models"][1]["confusion_matrix"]
            .get("predicted_labels")
            .is_none());
    }
}
