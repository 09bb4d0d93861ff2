//! Percentile bootstrap confidence intervals for every metric of one model.
//!
//! Two resampling paths, both exact resamples of the examples:
//! * metrics that depend only on the confusion matrix resample the *cells* of that matrix
//!   (a multinomial over at most k² cells per resample, independent of the number of
//!   examples);
//! * with probability metrics, each resample draws per-example multiplicities into a
//!   per-thread buffer and evaluates every metric in linear passes (rankings for ROC-AUC and
//!   average precision are sorted once, up front).
//!
//! Resample `b` always uses random stream `(seed, b)`, so results do not depend on the
//! number of threads.

use rayon::prelude::*;

use crate::evaluator::{EvalScratch, Evaluator, SLOTS};
use crate::metric::Metric;
use crate::stats::{multinomial, quantile_sorted, resample_counts, resample_counts_u8, stream};

/// Lower bound on resamples per rayon job, so per-job scratch buffers are built rarely.
pub(crate) const RESAMPLES_PER_JOB: usize = 32;

#[derive(Debug, Clone, Copy)]
pub struct BootstrapOptions {
    pub resamples: usize,
    pub seed: u64,
    pub confidence: f64,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        BootstrapOptions {
            resamples: 1000,
            seed: 0,
            confidence: 0.95,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
    /// Resamples on which the metric was defined (not NaN).
    pub defined: usize,
}

/// Percentile interval of the finite values in `values`.
pub(crate) fn percentile_interval(values: &[f64], confidence: f64) -> Interval {
    let mut finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    finite.sort_by(f64::total_cmp);
    let alpha = (1.0 - confidence) / 2.0;
    Interval {
        low: quantile_sorted(&finite, alpha),
        high: quantile_sorted(&finite, 1.0 - alpha),
        defined: finite.len(),
    }
}

/// Every applicable metric on each of `opts.resamples` bootstrap resamples.
pub(crate) fn resampled_metrics(ev: &Evaluator, opts: &BootstrapOptions) -> Vec<[f64; SLOTS]> {
    if ev.confusion_only() {
        let k = ev.k();
        let mut cells = vec![0u64; k * k];
        for (&g, &p) in ev.gold().iter().zip(ev.pred()) {
            cells[g as usize * k + p as usize] += 1;
        }
        let nonzero: Vec<usize> = (0..k * k).filter(|&c| cells[c] > 0).collect();
        let counts: Vec<u64> = nonzero.iter().map(|&c| cells[c]).collect();
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
                    )
                },
                |(scratch, draw, cm), b| {
                    let mut rng = stream(opts.seed, b as u64);
                    multinomial(&mut rng, &counts, draw);
                    cm.fill(0.0);
                    for (&cell, &x) in nonzero.iter().zip(draw.iter()) {
                        cm[cell] = x as f64;
                    }
                    let mut out = [f64::NAN; SLOTS];
                    ev.eval_confusion(cm, scratch, &mut out);
                    out
                },
            )
            .collect()
    } else {
        let n = ev.n();
        (0..opts.resamples)
            .into_par_iter()
            // Each rayon job builds its own scratch (n-sized for per-example resampling):
            // keep jobs few and long.
            .with_min_len(RESAMPLES_PER_JOB)
            .map_init(
                || (EvalScratch::default(), Multiplicities::new(n)),
                |(scratch, w), b| {
                    let mut out = [f64::NAN; SLOTS];
                    match w.draw(opts.seed, b as u64) {
                        Drawn::Small(w) => ev.eval_weighted(w, scratch, &mut out),
                        Drawn::Wide(w) => ev.eval_weighted(w, scratch, &mut out),
                    }
                    out
                },
            )
            .collect()
    }
}

/// Per-thread buffers for one resample's per-example multiplicities.
pub(crate) struct Multiplicities {
    small: Vec<u8>,
    wide: Vec<u32>,
}

impl Multiplicities {
    pub(crate) fn new(n: usize) -> Self {
        Multiplicities {
            small: vec![0; n],
            wide: Vec::new(),
        }
    }

    /// Draws resample `index` of stream `seed`: as bytes (the fast path), or as u32 in the
    /// astronomically rare case that one example is drawn more than 255 times.
    pub(crate) fn draw(&mut self, seed: u64, index: u64) -> Drawn<'_> {
        if resample_counts_u8(&mut stream(seed, index), &mut self.small) {
            Drawn::Small(&self.small)
        } else {
            self.wide.resize(self.small.len(), 0);
            resample_counts(&mut stream(seed, index), &mut self.wide);
            Drawn::Wide(&self.wide)
        }
    }
}

pub(crate) enum Drawn<'a> {
    Small(&'a [u8]),
    Wide(&'a [u32]),
}

/// Percentile bootstrap interval of every applicable metric.
pub fn bootstrap_intervals(ev: &Evaluator, opts: &BootstrapOptions) -> Vec<(Metric, Interval)> {
    if opts.resamples == 0 {
        return Vec::new();
    }
    let samples = resampled_metrics(ev, opts);
    let mut column = Vec::with_capacity(samples.len());
    ev.metrics()
        .iter()
        .map(|&m| {
            column.clear();
            column.extend(samples.iter().map(|s| s[m.slot()]));
            (m, percentile_interval(&column, opts.confidence))
        })
        .collect()
}
