//! Intervals and paired tests for scores that are aggregates over units (documents for
//! perplexity, prompts for generation): every model is resampled with the same bootstrap
//! draws, so the difference between two models is paired.

use lmcompare_metrics::stats::{adjust_p_values, quantile_sorted};
use lmcompare_metrics::Correction;
use serde_json::{json, Value};

/// The 95% percentile interval of bootstrap values (sorted in place); null when there are none.
pub(crate) fn percentile_ci(xs: &mut [f64]) -> Value {
    if xs.is_empty() {
        return Value::Null;
    }
    xs.sort_by(f64::total_cmp);
    json!({"low": quantile_sorted(xs, 0.025), "high": quantile_sorted(xs, 0.975), "confidence": 0.95})
}

/// One model's score on the full data and on each bootstrap resample.
pub(crate) struct Resampled<'a> {
    pub name: &'a str,
    pub point: f64,
    pub boot: Vec<f64>,
}

/// Every pair (a, b): the difference a − b under `delta_key`, its bootstrap interval, the
/// two-sided paired bootstrap p-value, the p-values adjusted by `correction` and by Holm,
/// and `verdict(a, b, delta, p_holm)`.
pub(crate) fn bootstrap_pairs(
    models: &[Resampled<'_>],
    delta_key: &str,
    correction: Correction,
    verdict: impl Fn(&str, &str, f64, f64) -> String,
) -> Vec<Value> {
    let mut pairs = Vec::new();
    let mut raw = Vec::new();
    for (i, a) in models.iter().enumerate() {
        for b in &models[i + 1..] {
            let mut ds: Vec<f64> = a.boot.iter().zip(&b.boot).map(|(x, y)| x - y).collect();
            let n = ds.len().max(1) as f64;
            let le = ds.iter().filter(|d| **d <= 0.0).count() as f64 / n;
            let ge = ds.iter().filter(|d| **d >= 0.0).count() as f64 / n;
            let p = (2.0 * le.min(ge)).min(1.0);
            raw.push(p);
            let mut v =
                json!({"a": a.name, "b": b.name, "ci": percentile_ci(&mut ds), "p_bootstrap": p});
            v[delta_key] = json!(a.point - b.point);
            pairs.push(v);
        }
    }
    let adjusted = adjust_p_values(&raw, correction);
    let holm = adjust_p_values(&raw, Correction::Holm);
    for ((p, adj), h) in pairs.iter_mut().zip(&adjusted).zip(&holm) {
        p["p_adjusted"] = json!(adj);
        p["p_holm"] = json!(h);
        let d = p[delta_key].as_f64().unwrap_or(f64::NAN);
        let text = verdict(
            p["a"].as_str().unwrap_or(""),
            p["b"].as_str().unwrap_or(""),
            d,
            *h,
        );
        p["verdict"] = json!(text);
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_paired_and_corrected() {
        let models = [
            Resampled {
                name: "a",
                point: 0.9,
                boot: vec![0.9, 0.8, 0.95, 0.85],
            },
            Resampled {
                name: "b",
                point: 0.5,
                boot: vec![0.5, 0.4, 0.55, 0.45],
            },
            Resampled {
                name: "c",
                point: 0.5,
                boot: vec![0.6, 0.3, 0.55, 0.45],
            },
        ];
        let pairs = bootstrap_pairs(&models, "delta", Correction::None, |a, b, d, h| {
            format!("{a}{b}{d:.1}{h}")
        });
        assert_eq!(pairs.len(), 3);
        // a beats b on every resample: p = 0; b and c cross: p > 0.
        assert_eq!(pairs[0]["p_bootstrap"], 0.0);
        assert!((pairs[0]["delta"].as_f64().unwrap() - 0.4).abs() < 1e-12);
        assert!(pairs[2]["p_bootstrap"].as_f64().unwrap() > 0.0);
        let raw: Vec<f64> = pairs
            .iter()
            .map(|p| p["p_bootstrap"].as_f64().unwrap())
            .collect();
        let holm = adjust_p_values(&raw, Correction::Holm);
        assert_eq!(pairs[2]["p_holm"], json!(holm[2]));
        assert_eq!(percentile_ci(&mut []), Value::Null);
    }
}
