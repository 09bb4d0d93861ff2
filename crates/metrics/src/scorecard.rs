//! Scores several models on the same examples: every metric with its bootstrap interval,
//! and every pair with paired tests and a multiple-comparison correction.

use crate::bootstrap::{bootstrap_intervals, BootstrapOptions, Interval};
use crate::evaluator::{Evaluation, Evaluator, MetricOptions};
use crate::labels::Predictions;
use crate::metric::Metric;
use crate::paired::{compare_pair, PairedOptions, PairedResult};
use crate::stats::{adjust_p_values, Correction};
use crate::MetricsError;

#[derive(Debug, Clone)]
pub struct ScoreOptions {
    pub metric: MetricOptions,
    pub bootstrap: BootstrapOptions,
    pub permutations: usize,
    /// The metric compared between pairs (default `f1_macro`).
    pub main_metric: Metric,
    pub correction: Correction,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        ScoreOptions {
            metric: MetricOptions::default(),
            bootstrap: BootstrapOptions::default(),
            permutations: 1000,
            main_metric: Metric::F1Macro,
            correction: Correction::Holm,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ModelScore {
    pub name: String,
    pub evaluation: Evaluation,
    pub intervals: Vec<(Metric, Interval)>,
}

#[derive(Debug, Clone)]
pub struct PairScore {
    pub a: usize,
    pub b: usize,
    pub result: PairedResult,
    /// The p-value that is corrected across pairs: the paired permutation test's, or the
    /// paired bootstrap's when permutations are off.
    pub p_value: f64,
    pub p_holm: f64,
    pub p_adjusted: f64,
}

#[derive(Debug, Clone)]
pub struct Scorecard {
    pub models: Vec<ModelScore>,
    pub pairs: Vec<PairScore>,
    pub options: ScoreOptions,
}

pub fn score_models(
    models: &[(String, Predictions)],
    opts: &ScoreOptions,
) -> Result<Scorecard, MetricsError> {
    let mut scores = Vec::with_capacity(models.len());
    for (name, preds) in models {
        let ev = Evaluator::new(preds, &opts.metric)?;
        let evaluation = ev.evaluate();
        let intervals = bootstrap_intervals(&ev, &opts.bootstrap);
        scores.push(ModelScore {
            name: name.clone(),
            evaluation,
            intervals,
        });
    }
    let paired = PairedOptions {
        bootstrap: opts.bootstrap,
        permutations: opts.permutations,
        metric: opts.main_metric,
    };
    let mut pairs = Vec::new();
    for a in 0..models.len() {
        for b in a + 1..models.len() {
            let result = compare_pair(&models[a].1, &models[b].1, &opts.metric, &paired)?;
            let p_value = if result.permutation_p.is_nan() {
                result.bootstrap_p
            } else {
                result.permutation_p
            };
            pairs.push(PairScore {
                a,
                b,
                result,
                p_value,
                p_holm: f64::NAN,
                p_adjusted: f64::NAN,
            });
        }
    }
    let raw: Vec<f64> = pairs.iter().map(|p| p.p_value).collect();
    let holm = adjust_p_values(&raw, Correction::Holm);
    let chosen = adjust_p_values(&raw, opts.correction);
    for ((pair, h), c) in pairs.iter_mut().zip(holm).zip(chosen) {
        pair.p_holm = h;
        pair.p_adjusted = c;
    }
    Ok(Scorecard {
        models: scores,
        pairs,
        options: opts.clone(),
    })
}
