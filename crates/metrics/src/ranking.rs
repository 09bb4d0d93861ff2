//! How sure a ranking is: every model is scored on the same bootstrap resamples of the
//! examples (paired, as the tests are), ranked on each, and the shares of resamples in
//! which each model is best, and its ranks, summarise the ranking's uncertainty.

use rayon::prelude::*;

use crate::bootstrap::{BootstrapOptions, Drawn, Multiplicities, RESAMPLES_PER_JOB};
use crate::evaluator::{EvalScratch, Evaluator, MetricOptions, SLOTS};
use crate::labels::Predictions;
use crate::metric::Metric;
use crate::stats::quantile_sorted;
use crate::MetricsError;

/// One model's place across the resamples.
#[derive(Debug, Clone, PartialEq)]
pub struct RankShare {
    /// Share of resamples in which this model is best (a tie for best splits the resample).
    pub best: f64,
    /// Mean rank (1 = best; tied models share the mean of their ranks).
    pub mean_rank: f64,
    /// The 2.5% and 97.5% quantiles of its rank.
    pub rank_low: f64,
    pub rank_high: f64,
    /// Resamples on which every model's metric was defined.
    pub resamples: usize,
}

/// Ranks of `values` (1 = best), ties sharing the mean of their ranks.
fn ranks(values: &[f64], higher_is_better: bool) -> Vec<f64> {
    values
        .iter()
        .map(|&v| {
            let better = values
                .iter()
                .filter(|&&o| if higher_is_better { o > v } else { o < v })
                .count();
            let tied = values.iter().filter(|&&o| o == v).count();
            better as f64 + (tied as f64 + 1.0) / 2.0
        })
        .collect()
}

/// Each model's share of resamples in which it is best on `metric`, and its rank
/// distribution, over `opts.resamples` paired resamples (resample `b` draws the same
/// per-example multiplicities for every model, from stream `(seed, b)`).
pub fn rank_shares(
    models: &[&Predictions],
    metric_opts: &MetricOptions,
    metric: Metric,
    opts: &BootstrapOptions,
) -> Result<Vec<RankShare>, MetricsError> {
    let evaluators = models
        .iter()
        .map(|p| Evaluator::new(p, metric_opts))
        .collect::<Result<Vec<_>, _>>()?;
    if evaluators.iter().any(|e| !e.metrics().contains(&metric)) {
        return Err(if metric.needs_probabilities() {
            MetricsError::NeedsProbabilities(metric.key())
        } else {
            MetricsError::NotApplicable(metric.key())
        });
    }
    let n = models.first().map_or(0, |p| p.len());
    if let Some(p) = models.iter().find(|p| p.len() != n) {
        return Err(MetricsError::Shape {
            what: "ranked predictions",
            got: p.len(),
            expected: n,
        });
    }
    let higher = metric.higher_is_better();
    let per_resample: Vec<Option<Vec<f64>>> = (0..opts.resamples)
        .into_par_iter()
        .with_min_len(RESAMPLES_PER_JOB)
        .map_init(
            || (EvalScratch::default(), Multiplicities::new(n)),
            |(scratch, w), b| {
                let mut values = Vec::with_capacity(evaluators.len());
                let mut out = [f64::NAN; SLOTS];
                let drawn = w.draw(opts.seed, b as u64);
                for ev in &evaluators {
                    match &drawn {
                        Drawn::Small(w) => ev.eval_weighted(*w, scratch, &mut out),
                        Drawn::Wide(w) => ev.eval_weighted(*w, scratch, &mut out),
                    }
                    values.push(out[metric.slot()]);
                }
                values
                    .iter()
                    .all(|v| v.is_finite())
                    .then(|| ranks(&values, higher))
            },
        )
        .collect();
    let defined: Vec<&Vec<f64>> = per_resample.iter().flatten().collect();
    let count = defined.len();
    Ok((0..models.len())
        .map(|m| {
            let mut r: Vec<f64> = defined.iter().map(|ranks| ranks[m]).collect();
            let best: f64 = defined
                .iter()
                .map(|ranks| {
                    let min = ranks.iter().copied().fold(f64::INFINITY, f64::min);
                    let tied_best = ranks.iter().filter(|&&x| x == min).count();
                    if ranks[m] == min {
                        1.0 / tied_best as f64
                    } else {
                        0.0
                    }
                })
                .sum();
            r.sort_by(f64::total_cmp);
            let share = |x: f64| {
                if count == 0 {
                    f64::NAN
                } else {
                    x / count as f64
                }
            };
            RankShare {
                best: share(best),
                mean_rank: share(r.iter().sum()),
                rank_low: quantile_sorted(&r, 0.025),
                rank_high: quantile_sorted(&r, 0.975),
                resamples: count,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::LabelSet;

    fn preds(gold: &[u32], pred: &[u32]) -> Predictions {
        let labels = LabelSet::new(vec!["a".into(), "b".into()]).unwrap();
        Predictions::from_indices(labels, 2, gold.to_vec(), pred.to_vec(), None).unwrap()
    }

    #[test]
    fn ties_share_their_ranks() {
        assert_eq!(ranks(&[0.5, 0.9, 0.5], true), vec![2.5, 1.0, 2.5]);
        assert_eq!(ranks(&[0.5, 0.9, 0.5], false), vec![1.5, 3.0, 1.5]);
    }

    #[test]
    fn a_model_right_everywhere_is_best_in_every_resample_and_shares_sum_to_one() {
        let gold: Vec<u32> = (0..60).map(|i| i % 2).collect();
        let perfect = preds(&gold, &gold);
        let half: Vec<u32> = (0..60).map(|i| (i / 2) % 2).collect();
        let coin = preds(&gold, &half);
        let wrong: Vec<u32> = gold.iter().map(|g| 1 - g).collect();
        let worst = preds(&gold, &wrong);
        let opts = BootstrapOptions {
            resamples: 300,
            seed: 7,
            confidence: 0.95,
        };
        let r = rank_shares(
            &[&coin, &perfect, &worst],
            &MetricOptions::default(),
            Metric::Accuracy,
            &opts,
        )
        .unwrap();
        assert_eq!(r[1].best, 1.0);
        assert_eq!((r[1].rank_low, r[1].rank_high), (1.0, 1.0));
        assert_eq!(r[2].mean_rank, 3.0);
        let total: f64 = r.iter().map(|x| x.best).sum();
        assert!((total - 1.0).abs() < 1e-12);
        assert_eq!(r[0].resamples, 300);
        // Same seed, same answer, whatever the thread count.
        let again = rank_shares(
            &[&coin, &perfect, &worst],
            &MetricOptions::default(),
            Metric::Accuracy,
            &opts,
        )
        .unwrap();
        assert_eq!(r, again);
    }

    #[test]
    fn two_equal_models_split_every_resample() {
        let gold: Vec<u32> = (0..20).map(|i| i % 2).collect();
        let pred: Vec<u32> = (0..20).map(|i| (i / 3) % 2).collect();
        let a = preds(&gold, &pred);
        let b = preds(&gold, &pred);
        let r = rank_shares(
            &[&a, &b],
            &MetricOptions::default(),
            Metric::F1Macro,
            &BootstrapOptions::default(),
        )
        .unwrap();
        assert!(r
            .iter()
            .all(|x| (x.best - 0.5).abs() < 1e-12 && x.mean_rank == 1.5));
    }
}
