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

/// How a pair's verdict reads: "{winner} {better} {loser}: {score} {lower|higher} by …".
pub(crate) struct Wording<'a> {
    /// e.g. "models the text better than".
    pub better: &'a str,
    /// e.g. "bits per byte".
    pub score: &'a str,
    pub lower_is_better: bool,
}

impl Wording<'_> {
    fn verdict(&self, a: &str, b: &str, d: f64, h: f64) -> String {
        if h < 0.05 {
            let a_wins = (d < 0.0) == self.lower_is_better;
            let (w, l) = if a_wins { (a, b) } else { (b, a) };
            let side = if self.lower_is_better {
                "lower"
            } else {
                "higher"
            };
            format!(
                "{w} {} {l}: {} {side} by {:.4}, p_holm = {h:.4}",
                self.better,
                self.score,
                d.abs()
            )
        } else {
            format!(
                "no significant difference between {a} and {b} in {} (delta {d:.4}, p_holm = {h:.4})",
                self.score
            )
        }
    }
}

/// Every pair (a, b): the difference a − b under `delta_key`, its bootstrap interval, the
/// two-sided paired bootstrap p-value, the p-values adjusted by `correction` and by Holm,
/// and a verdict in `wording`.
pub(crate) fn bootstrap_pairs(
    models: &[Resampled<'_>],
    delta_key: &str,
    correction: Correction,
    wording: &Wording<'_>,
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
        let text = wording.verdict(
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
        let wording = Wording {
            better: "beats",
            score: "score",
            lower_is_better: false,
        };
        let pairs = bootstrap_pairs(&models, "delta", Correction::None, &wording);
        assert_eq!(
            pairs[0]["verdict"],
            "a beats b: score higher by 0.4000, p_holm = 0.0000"
        );
        assert!(pairs[2]["verdict"]
            .as_str()
            .unwrap()
            .starts_with("no significant difference between b and c in score"));
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
