//! Intervals and paired tests for scores that are aggregates over units (documents for
//! perplexity, prompts for generation): every model is resampled with the same bootstrap
//! draws, so the difference between two models is paired.

use crate::stats::{adjust_p_values, quantile_sorted, Correction};

/// A 95% percentile interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PercentileInterval {
    pub low: f64,
    pub high: f64,
    pub confidence: f64,
}

/// The 95% percentile interval of bootstrap values (sorted in place); None when there are none.
pub fn percentile_interval(xs: &mut [f64]) -> Option<PercentileInterval> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    Some(PercentileInterval {
        low: quantile_sorted(xs, 0.025),
        high: quantile_sorted(xs, 0.975),
        confidence: 0.95,
    })
}

/// One model's score on the full data and on each bootstrap resample.
pub struct Resampled<'a> {
    pub name: &'a str,
    pub point: f64,
    pub boot: Vec<f64>,
}

/// How a pair's verdict reads: "{winner} {better} {loser}: {score} {lower|higher} by …".
pub struct Wording<'a> {
    /// e.g. "models the text better than".
    pub better: &'a str,
    /// e.g. "bits per byte".
    pub score: &'a str,
    pub lower_is_better: bool,
}

/// One pair (a, b): the difference a − b, its paired bootstrap interval, the two-sided
/// p-value, the p-values adjusted by the chosen correction and by Holm, and the verdict
/// (decided by the chosen correction).
#[derive(Debug, Clone, PartialEq)]
pub struct UnitPair {
    pub a: String,
    pub b: String,
    pub delta: f64,
    pub ci: Option<PercentileInterval>,
    pub p_bootstrap: f64,
    pub p_adjusted: f64,
    pub p_holm: f64,
    pub verdict: String,
}

impl Wording<'_> {
    fn verdict(&self, a: &str, b: &str, d: f64, p: f64, p_name: &str) -> String {
        if p < 0.05 {
            let a_wins = (d < 0.0) == self.lower_is_better;
            let (w, l) = if a_wins { (a, b) } else { (b, a) };
            let side = if self.lower_is_better {
                "lower"
            } else {
                "higher"
            };
            format!(
                "{w} {} {l}: {} {side} by {:.4}, {p_name} = {p:.4}",
                self.better,
                self.score,
                d.abs()
            )
        } else {
            format!(
                "no significant difference between {a} and {b} in {} (delta {d:.4}, {p_name} = {p:.4})",
                self.score
            )
        }
    }
}

/// The name of a corrected p-value in a verdict.
pub fn adjusted_p_name(correction: Correction) -> &'static str {
    match correction {
        Correction::Holm => "p_holm",
        Correction::BenjaminiHochberg => "p_bh",
        Correction::None => "p",
    }
}

/// Every pair (a, b) of `models`, in order, with `correction` across all pairs.
pub fn bootstrap_pairs(
    models: &[Resampled<'_>],
    correction: Correction,
    wording: &Wording<'_>,
) -> Vec<UnitPair> {
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
            pairs.push(UnitPair {
                a: a.name.to_owned(),
                b: b.name.to_owned(),
                delta: a.point - b.point,
                ci: percentile_interval(&mut ds),
                p_bootstrap: p,
                p_adjusted: f64::NAN,
                p_holm: f64::NAN,
                verdict: String::new(),
            });
        }
    }
    let adjusted = adjust_p_values(&raw, correction);
    let holm = adjust_p_values(&raw, Correction::Holm);
    for ((p, adj), h) in pairs.iter_mut().zip(&adjusted).zip(&holm) {
        p.p_adjusted = *adj;
        p.p_holm = *h;
        p.verdict = wording.verdict(&p.a, &p.b, p.delta, *adj, adjusted_p_name(correction));
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> [Resampled<'static>; 3] {
        [
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
        ]
    }

    const WORDING: Wording<'static> = Wording {
        better: "beats",
        score: "score",
        lower_is_better: false,
    };

    #[test]
    fn pairs_are_paired_and_corrected() {
        let pairs = bootstrap_pairs(&three(), Correction::Holm, &WORDING);
        assert_eq!(pairs.len(), 3);
        assert_eq!(
            pairs[0].verdict,
            "a beats b: score higher by 0.4000, p_holm = 0.0000"
        );
        assert!(pairs[2]
            .verdict
            .starts_with("no significant difference between b and c in score"));
        // a beats b on every resample: p = 0; b and c cross: p > 0.
        assert_eq!(pairs[0].p_bootstrap, 0.0);
        assert!((pairs[0].delta - 0.4).abs() < 1e-12);
        assert!(pairs[2].p_bootstrap > 0.0);
        let raw: Vec<f64> = pairs.iter().map(|p| p.p_bootstrap).collect();
        assert_eq!(pairs[2].p_holm, adjust_p_values(&raw, Correction::Holm)[2]);
        assert_eq!(percentile_interval(&mut []), None);
    }

    #[test]
    fn the_verdict_follows_the_chosen_correction() {
        // Two pairs with raw p = 0.04 each: Holm makes them 0.08 (not significant), no
        // correction leaves them significant; the verdict must say what --correction says.
        let boot_a: Vec<f64> = (0..100).map(|i| if i < 2 { -1.0 } else { 1.0 }).collect();
        let zeros = vec![0.0; 100];
        let models = [
            Resampled {
                name: "a",
                point: 1.0,
                boot: boot_a.clone(),
            },
            Resampled {
                name: "b",
                point: 0.0,
                boot: zeros.clone(),
            },
        ];
        let none = bootstrap_pairs(&models, Correction::None, &WORDING);
        assert!((none[0].p_bootstrap - 0.04).abs() < 1e-12);
        assert!(
            none[0].verdict.starts_with("a beats b"),
            "{}",
            none[0].verdict
        );
        assert!(
            none[0].verdict.ends_with("p = 0.0400"),
            "{}",
            none[0].verdict
        );
        let models3 = [
            Resampled {
                name: "a",
                point: 1.0,
                boot: boot_a.clone(),
            },
            Resampled {
                name: "b",
                point: 0.0,
                boot: zeros.clone(),
            },
            Resampled {
                name: "c",
                point: 1.0,
                boot: boot_a,
            },
        ];
        let holm = bootstrap_pairs(&models3, Correction::Holm, &WORDING);
        assert!(
            holm[0].verdict.starts_with("no significant difference"),
            "{}",
            holm[0].verdict
        );
        let none3 = bootstrap_pairs(&models3, Correction::None, &WORDING);
        assert!(
            none3[0].verdict.starts_with("a beats b"),
            "{}",
            none3[0].verdict
        );
    }
}
