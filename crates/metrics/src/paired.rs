//! Paired comparison of two models scored on the same examples.
//!
//! * McNemar's test on per-example correctness: exact two-sided binomial when the
//!   discordant pairs number fewer than 25, else chi-square with continuity correction
//!   (as statsmodels' `mcnemar`).
//! * Paired bootstrap: both models' metrics on the *same* resample, giving a percentile CI
//!   for the difference of every metric and a two-sided p-value for the main metric from
//!   the null-centred bootstrap distribution, p = (1 + #{|δ*−δ| ≥ |δ|}) / (B + 1).
//! * Paired permutation (approximate randomisation): each example's two predictions are
//!   swapped with probability ½, p = (1 + #{|δ_π| ≥ |δ|}) / (R + 1).

use rayon::prelude::*;

use crate::bootstrap::{
    percentile_interval, BootstrapOptions, Drawn, Multiplicities, RESAMPLES_PER_JOB,
};
use crate::evaluator::{EvalScratch, Evaluator, MetricOptions, SLOTS};
use crate::labels::Predictions;
use crate::metric::Metric;
use crate::probabilistic::Unit;
use crate::stats::{binomial_half_cdf, chi2_sf_1, multinomial, stream};
use crate::MetricsError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McNemarMethod {
    ExactBinomial,
    ChiSquareCorrected,
}

impl McNemarMethod {
    pub fn key(self) -> &'static str {
        match self {
            McNemarMethod::ExactBinomial => "exact_binomial",
            McNemarMethod::ChiSquareCorrected => "chi2_continuity_corrected",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct McNemar {
    /// Examples the first model gets right and the second wrong.
    pub b: u64,
    /// Examples the first model gets wrong and the second right.
    pub c: u64,
    pub statistic: f64,
    pub p_value: f64,
    pub method: McNemarMethod,
}

/// McNemar's test from the two discordant counts.
pub fn mcnemar(b: u64, c: u64) -> McNemar {
    let n = b + c;
    if n < 25 {
        let small = b.min(c);
        let p = if n == 0 {
            1.0
        } else {
            (2.0 * binomial_half_cdf(small, n)).min(1.0)
        };
        McNemar {
            b,
            c,
            statistic: small as f64,
            p_value: p,
            method: McNemarMethod::ExactBinomial,
        }
    } else {
        let diff = (b as f64 - c as f64).abs() - 1.0;
        let stat = diff * diff / n as f64;
        McNemar {
            b,
            c,
            statistic: stat,
            p_value: chi2_sf_1(stat),
            method: McNemarMethod::ChiSquareCorrected,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PairedOptions {
    pub bootstrap: BootstrapOptions,
    pub permutations: usize,
    /// The metric whose difference is tested.
    pub metric: Metric,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricDelta {
    pub metric: Metric,
    /// Model a minus model b.
    pub delta: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

#[derive(Debug, Clone)]
pub struct PairedResult {
    pub metric: Metric,
    pub delta: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub deltas: Vec<MetricDelta>,
    pub mcnemar: McNemar,
    pub bootstrap_p: f64,
    pub permutation_p: f64,
}

/// Compares model `a` with model `b` on the same examples (same order, same gold labels,
/// same label set).
pub fn compare_pair(
    a: &Predictions,
    b: &Predictions,
    metric_opts: &MetricOptions,
    opts: &PairedOptions,
) -> Result<PairedResult, MetricsError> {
    if a.labels() != b.labels() || a.selected() != b.selected() {
        return Err(MetricsError::LabelSetMismatch);
    }
    if a.len() != b.len() {
        return Err(MetricsError::Shape {
            what: "paired predictions",
            got: b.len(),
            expected: a.len(),
        });
    }
    if let Some(i) = a.gold().iter().zip(b.gold()).position(|(x, y)| x != y) {
        return Err(MetricsError::GoldMismatch(i));
    }
    let ea = Evaluator::new(a, metric_opts)?;
    let eb = Evaluator::new(b, metric_opts)?;
    let main = opts.metric;
    if !ea.metrics().contains(&main) || !eb.metrics().contains(&main) {
        return Err(if main.needs_probabilities() {
            MetricsError::NeedsProbabilities(main.key())
        } else {
            MetricsError::NotApplicable(main.key())
        });
    }
    let mut scratch = EvalScratch::default();
    let (mut oa, mut ob) = ([f64::NAN; SLOTS], [f64::NAN; SLOTS]);
    ea.eval_weighted(&Unit, &mut scratch, &mut oa);
    eb.eval_weighted(&Unit, &mut scratch, &mut ob);
    let observed = |m: Metric| oa[m.slot()] - ob[m.slot()];
    let delta = observed(main);

    let common: Vec<Metric> = ea
        .metrics()
        .iter()
        .copied()
        .filter(|m| eb.metrics().contains(m))
        .collect();

    let boot = paired_resamples(&ea, &eb, &opts.bootstrap);
    let mut column = Vec::with_capacity(boot.len());
    let deltas: Vec<MetricDelta> = common
        .iter()
        .map(|&m| {
            column.clear();
            column.extend(boot.iter().map(|d| d[m.slot()]));
            let ci = percentile_interval(&column, opts.bootstrap.confidence);
            MetricDelta {
                metric: m,
                delta: observed(m),
                ci_low: ci.low,
                ci_high: ci.high,
            }
        })
        .collect();
    let main_delta = deltas
        .iter()
        .find(|d| d.metric == main)
        .copied()
        .unwrap_or(MetricDelta {
            metric: main,
            delta,
            ci_low: f64::NAN,
            ci_high: f64::NAN,
        });
    let bootstrap_p = {
        let finite: Vec<f64> = boot
            .iter()
            .map(|d| d[main.slot()])
            .filter(|v| v.is_finite())
            .collect();
        if finite.is_empty() || !delta.is_finite() {
            f64::NAN
        } else {
            let extreme = finite
                .iter()
                .filter(|&&d| (d - delta).abs() >= delta.abs() - tolerance(delta))
                .count();
            (1 + extreme) as f64 / (finite.len() + 1) as f64
        }
    };

    let (mut right_wrong, mut wrong_right) = (0u64, 0u64);
    for ((&g, &pa), &pb) in a.gold().iter().zip(a.pred()).zip(b.pred()) {
        match (pa == g, pb == g) {
            (true, false) => right_wrong += 1,
            (false, true) => wrong_right += 1,
            _ => {}
        }
    }

    let permutation_p = permutation_test(a, b, &ea, &eb, metric_opts, opts, delta)?;

    Ok(PairedResult {
        metric: main,
        delta,
        ci_low: main_delta.ci_low,
        ci_high: main_delta.ci_high,
        deltas,
        mcnemar: mcnemar(right_wrong, wrong_right),
        bootstrap_p,
        permutation_p,
    })
}

/// Floating-point slack when comparing a resampled difference to the observed one, so
/// that a permutation reproducing the observed split counts as "as extreme".
fn tolerance(delta: f64) -> f64 {
    1e-12 * delta.abs().max(1.0)
}

/// Metric differences (a − b) on each paired bootstrap resample.
fn paired_resamples(ea: &Evaluator, eb: &Evaluator, opts: &BootstrapOptions) -> Vec<[f64; SLOTS]> {
    if opts.resamples == 0 {
        return Vec::new();
    }
    let k = ea.k();
    let diff = |x: &[f64; SLOTS], y: &[f64; SLOTS]| {
        let mut d = [f64::NAN; SLOTS];
        for i in 0..SLOTS {
            d[i] = x[i] - y[i];
        }
        d
    };
    if ea.confusion_only() && eb.confusion_only() {
        // Joint cells (gold, pred_a, pred_b): a resample is a multinomial over them.
        let mut joint = std::collections::BTreeMap::<(u32, u32, u32), u64>::new();
        for ((&g, &pa), &pb) in ea.gold().iter().zip(ea.pred()).zip(eb.pred()) {
            *joint.entry((g, pa, pb)).or_default() += 1;
        }
        let cells: Vec<(u32, u32, u32)> = joint.keys().copied().collect();
        let counts: Vec<u64> = joint.values().copied().collect();
        (0..opts.resamples)
            .into_par_iter()
            // Each rayon job builds its own scratch (n-sized for per-example resampling):
            // keep jobs few and long.
            .with_min_len(RESAMPLES_PER_JOB)
            .map_init(
                || {
                    (
                        EvalScratch::default(),
                        vec![0u64; counts.len()],
                        vec![0.0; k * k],
                        vec![0.0; k * k],
                    )
                },
                |(scratch, draw, cma, cmb), r| {
                    let mut rng = stream(opts.seed, r as u64);
                    multinomial(&mut rng, &counts, draw);
                    cma.fill(0.0);
                    cmb.fill(0.0);
                    for (&(g, pa, pb), &x) in cells.iter().zip(draw.iter()) {
                        cma[g as usize * k + pa as usize] += x as f64;
                        cmb[g as usize * k + pb as usize] += x as f64;
                    }
                    let (mut oa, mut ob) = ([f64::NAN; SLOTS], [f64::NAN; SLOTS]);
                    ea.eval_confusion(cma, scratch, &mut oa);
                    eb.eval_confusion(cmb, scratch, &mut ob);
                    diff(&oa, &ob)
                },
            )
            .collect()
    } else {
        let n = ea.n();
        (0..opts.resamples)
            .into_par_iter()
            // Each rayon job builds its own scratch (n-sized for per-example resampling):
            // keep jobs few and long.
            .with_min_len(RESAMPLES_PER_JOB)
            .map_init(
                || (EvalScratch::default(), Multiplicities::new(n)),
                |(scratch, w), r| {
                    let (mut oa, mut ob) = ([f64::NAN; SLOTS], [f64::NAN; SLOTS]);
                    match w.draw(opts.seed, r as u64) {
                        Drawn::Small(w) => {
                            ea.eval_weighted(w, scratch, &mut oa);
                            eb.eval_weighted(w, scratch, &mut ob);
                        }
                        Drawn::Wide(w) => {
                            ea.eval_weighted(w, scratch, &mut oa);
                            eb.eval_weighted(w, scratch, &mut ob);
                        }
                    }
                    diff(&oa, &ob)
                },
            )
            .collect()
    }
}

fn permutation_test(
    a: &Predictions,
    b: &Predictions,
    ea: &Evaluator,
    eb: &Evaluator,
    metric_opts: &MetricOptions,
    opts: &PairedOptions,
    delta: f64,
) -> Result<f64, MetricsError> {
    let main = opts.metric;
    if opts.permutations == 0 || !delta.is_finite() {
        return Ok(f64::NAN);
    }
    // The permutation stream is kept apart from the bootstrap's.
    let seed = opts.bootstrap.seed ^ 0x005E_ED0F_9E4D_u64;
    let threshold = delta.abs() - tolerance(delta);
    let extreme: usize = if main.from_confusion() {
        // Only examples where the two predictions differ change anything under a swap;
        // grouped by (gold, pred_a, pred_b), a swap count per group is Binomial(m, ½).
        let k = ea.k();
        let mut groups = std::collections::BTreeMap::<(u32, u32, u32), u64>::new();
        let mut cma = vec![0.0; k * k];
        let mut cmb = vec![0.0; k * k];
        for ((&g, &pa), &pb) in a.gold().iter().zip(a.pred()).zip(b.pred()) {
            cma[g as usize * k + pa as usize] += 1.0;
            cmb[g as usize * k + pb as usize] += 1.0;
            if pa != pb {
                *groups.entry((g, pa, pb)).or_default() += 1;
            }
        }
        let cells: Vec<(u32, u32, u32)> = groups.keys().copied().collect();
        let sizes: Vec<u64> = groups.values().copied().collect();
        (0..opts.permutations)
            .into_par_iter()
            // Each rayon job builds its own scratch (n-sized for per-example resampling):
            // keep jobs few and long.
            .with_min_len(RESAMPLES_PER_JOB)
            .map_init(
                || (EvalScratch::default(), cma.clone(), cmb.clone()),
                |(scratch, pa_cm, pb_cm), r| {
                    let mut rng = stream(seed, r as u64);
                    pa_cm.copy_from_slice(&cma);
                    pb_cm.copy_from_slice(&cmb);
                    for (&(g, x, y), &m) in cells.iter().zip(&sizes) {
                        let s = rand_distr::Distribution::sample(
                            &rand_distr::Binomial::new(m, 0.5).unwrap_or_else(|_| unreachable!()),
                            &mut rng,
                        ) as f64;
                        let (g, x, y) = (g as usize, x as usize, y as usize);
                        pa_cm[g * k + x] -= s;
                        pa_cm[g * k + y] += s;
                        pb_cm[g * k + y] -= s;
                        pb_cm[g * k + x] += s;
                    }
                    let (mut oa, mut ob) = ([f64::NAN; SLOTS], [f64::NAN; SLOTS]);
                    ea.eval_confusion(pa_cm, scratch, &mut oa);
                    eb.eval_confusion(pb_cm, scratch, &mut ob);
                    let d = oa[main.slot()] - ob[main.slot()];
                    usize::from(d.abs() >= threshold)
                },
            )
            .sum()
    } else {
        // Probability metrics: swap whole example outputs (label and probability row).
        let k = a.labels().len();
        let (pa, pb) = match (a.proba(), b.proba()) {
            (Some(x), Some(y)) => (x, y),
            _ => return Err(MetricsError::NeedsProbabilities(main.key())),
        };
        let results: Result<Vec<usize>, MetricsError> = (0..opts.permutations)
            .into_par_iter()
            .map(|r| {
                let mut rng = stream(seed, r as u64);
                let n = a.len();
                let (mut xa, mut xb) = (a.pred().to_vec(), b.pred().to_vec());
                let (mut qa, mut qb) = (pa.to_vec(), pb.to_vec());
                for i in 0..n {
                    if rand::Rng::gen::<bool>(&mut rng) {
                        std::mem::swap(&mut xa[i], &mut xb[i]);
                        qa[i * k..(i + 1) * k].swap_with_slice(&mut qb[i * k..(i + 1) * k]);
                    }
                }
                let build = |pred: Vec<u32>, q: Vec<f64>| {
                    Predictions::from_indices(
                        a.labels().clone(),
                        a.selected(),
                        a.gold().to_vec(),
                        pred,
                        Some(q),
                    )
                };
                let va = Evaluator::new(&build(xa, qa)?, metric_opts)?.evaluate();
                let vb = Evaluator::new(&build(xb, qb)?, metric_opts)?.evaluate();
                let d = va.get(main).unwrap_or(f64::NAN) - vb.get(main).unwrap_or(f64::NAN);
                Ok(usize::from(d.abs() >= threshold))
            })
            .collect();
        results?.into_iter().sum()
    };
    Ok((1 + extreme) as f64 / (opts.permutations + 1) as f64)
}
