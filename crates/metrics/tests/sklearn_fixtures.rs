//! Every metric against the values scikit-learn 1.9 computed on the committed fixtures
//! (`scripts/gen_metric_fixtures.py` writes them; no Python is needed to run this test).

use lmcompare_metrics::stats::quantile_sorted;
use lmcompare_metrics::{
    adjust_p_values, mcnemar, Correction, EceStrategy, Evaluation, Evaluator, Metric,
    MetricOptions, Predictions, ZeroDivision,
};
use serde_json::Value;

const TOL: f64 = 1e-9;

fn fixtures() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sklearn_cases.json"
    );
    let text = std::fs::read_to_string(path).expect("committed fixture file");
    serde_json::from_str(&text).unwrap()
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s.eq_ignore_ascii_case("nan") => Some(f64::NAN),
        _ => None,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= TOL * b.abs().max(1.0)
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect()
}

fn evaluate(case: &Value, strategy: EceStrategy, bins: usize) -> Result<Evaluation, String> {
    let gold = strs(&case["y_true"]);
    let pred = strs(&case["y_pred"]);
    let labels = strs(&case["labels"]);
    let explicit = case["explicit_labels"].as_bool().unwrap();
    let g: Vec<&str> = gold.iter().map(String::as_str).collect();
    let p: Vec<&str> = pred.iter().map(String::as_str).collect();
    let mut preds = Predictions::from_strings(&g, &p, explicit.then_some(&labels[..]))
        .map_err(|e| e.to_string())?;
    if let Some(rows) = case["proba"].as_array() {
        // Fixture columns follow `labels`; our universe starts with the same labels.
        let k = preds.labels().len();
        let mut flat = vec![0.0; rows.len() * k];
        for (i, row) in rows.iter().enumerate() {
            for (j, v) in row.as_array().unwrap().iter().enumerate() {
                let c = preds.labels().index_of(&labels[j]).unwrap() as usize;
                flat[i * k + c] = v.as_f64().unwrap();
            }
        }
        preds = preds.with_probabilities(flat).map_err(|e| e.to_string())?;
    }
    let zd: ZeroDivision = case["zero_division"].as_str().unwrap().parse().unwrap();
    let opts = MetricOptions {
        zero_division: zd,
        pos_label: case["pos_label"].as_str().map(str::to_owned),
        ece_bins: bins,
        ece_strategy: strategy,
    };
    let ev = Evaluator::new(&preds, &opts).map_err(|e| e.to_string())?;
    Ok(ev.evaluate())
}

#[test]
fn metrics_equal_scikit_learn() {
    let fx = fixtures();
    let mut failures = Vec::new();
    let mut checked = 0usize;
    for case in fx["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let expected = &case["expected"];
        let ev = match evaluate(case, EceStrategy::Uniform, 15) {
            Ok(ev) => ev,
            Err(e) => {
                failures.push(format!("{name}: evaluation failed: {e}"));
                continue;
            }
        };
        for (key, want) in expected.as_object().unwrap() {
            let ours = match key.as_str() {
                "per_class" | "confusion_matrix" | "warnings" => continue,
                k if k.ends_with("_sklearn_direct") => continue,
                "ece_uniform_15" => ev.get(Metric::Ece),
                "ece_quantile_10" => evaluate(case, EceStrategy::Quantile, 10)
                    .ok()
                    .and_then(|e| e.get(Metric::Ece)),
                k => match k.parse::<Metric>() {
                    Ok(m) => ev.get(m),
                    Err(_) => {
                        failures.push(format!("{name}: unknown fixture key {k}"));
                        continue;
                    }
                },
            };
            let Some(want) = number(want) else {
                // scikit-learn raised: we must report the metric as undefined or leave it out.
                if let Some(v) = ours {
                    if !v.is_nan() {
                        let err = want["error"].as_str().unwrap_or("?");
                        failures.push(format!(
                            "{name}.{key}: scikit-learn refuses ({err}) but we report {v}"
                        ));
                    }
                }
                continue;
            };
            checked += 1;
            match ours {
                Some(v) if close(v, want) => {}
                // Undefined either way: scikit-learn's NaN, our absent metric.
                None if want.is_nan() => {}
                // Documented: with a single label no probability metric is reported.
                None if case["labels"].as_array().unwrap().len() == 1
                    && (key.starts_with("ece_")
                        || key.parse::<Metric>().is_ok_and(|m| m.needs_probabilities())) => {}
                other => {
                    failures.push(format!("{name}.{key}: ours {other:?}, scikit-learn {want}"))
                }
            }
        }
        if let Some(pc) = expected["per_class"].as_object() {
            for (label, stats) in pc {
                let Some((_, s)) = ev.per_class.iter().find(|(l, _)| l == label) else {
                    failures.push(format!("{name}: per-class label {label} missing"));
                    continue;
                };
                for (field, ours) in [
                    ("precision", s.precision),
                    ("recall", s.recall),
                    ("f1", s.f1),
                    ("support", s.support),
                ] {
                    checked += 1;
                    let want = number(&stats[field]).unwrap();
                    if !close(ours, want) {
                        failures.push(format!(
                            "{name}.per_class[{label}].{field}: ours {ours}, scikit-learn {want}"
                        ));
                    }
                }
            }
        }
        if let Some(cm) = expected["confusion_matrix"].as_array() {
            let want: Vec<Vec<u64>> = cm
                .iter()
                .map(|r| {
                    r.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_u64().unwrap())
                        .collect()
                })
                .collect();
            checked += 1;
            if want != ev.confusion_matrix {
                failures.push(format!(
                    "{name}.confusion_matrix: ours {:?}, scikit-learn {want:?}",
                    ev.confusion_matrix
                ));
            }
        }
    }
    assert!(checked > 300, "only {checked} values checked");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn mcnemar_equals_statsmodels() {
    let fx = fixtures();
    for case in fx["mcnemar"].as_array().unwrap() {
        let (b, c) = (case["b"].as_u64().unwrap(), case["c"].as_u64().unwrap());
        let ours = mcnemar(b, c);
        let want = if b + c < 25 {
            number(&case["exact_p"]).unwrap()
        } else {
            number(&case["chi2_corrected_p"]).unwrap()
        };
        assert!(
            close(ours.p_value, want),
            "{}: b={b} c={c}: ours {}, statsmodels {want}",
            case["name"],
            ours.p_value
        );
    }
}

#[test]
fn corrections_equal_statsmodels() {
    let fx = fixtures();
    for case in fx["multipletests"].as_array().unwrap() {
        let p: Vec<f64> = case["pvals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        for (key, c) in [
            ("holm", Correction::Holm),
            ("bh", Correction::BenjaminiHochberg),
        ] {
            let want: Vec<f64> = case[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let ours = adjust_p_values(&p, c);
            for (o, w) in ours.iter().zip(&want) {
                assert!(
                    close(*o, *w),
                    "{key} of {p:?}: ours {ours:?}, statsmodels {want:?}"
                );
            }
        }
    }
}

#[test]
fn quantiles_equal_numpy() {
    let fx = fixtures();
    for case in fx["bootstrap_quantiles"].as_array().unwrap() {
        let mut values: Vec<f64> = case["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        values.sort_by(f64::total_cmp);
        let qs = case["q"].as_array().unwrap();
        let want = case["numpy"].as_array().unwrap();
        for (q, w) in qs.iter().zip(want) {
            let (q, w) = (q.as_f64().unwrap(), w.as_f64().unwrap());
            let ours = quantile_sorted(&values, q);
            assert!(
                close(ours, w),
                "q={q} of {values:?}: ours {ours}, numpy {w}"
            );
        }
    }
}
