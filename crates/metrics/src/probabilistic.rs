//! Metrics over predicted probabilities: log-loss, Brier, ECE, ROC-AUC, average precision.
//!
//! Each is written over per-example multiplicities (`Weights`) so that the point estimate
//! (all ones) and every bootstrap resample run the same code.

/// Per-example multiplicity: 1 for the observed sample, a bootstrap count otherwise.
pub(crate) trait Weights: Sync {
    fn w(&self, i: usize) -> f64;
}

pub(crate) struct Unit;

impl Weights for Unit {
    #[inline(always)]
    fn w(&self, _: usize) -> f64 {
        1.0
    }
}

impl Weights for [u32] {
    #[inline(always)]
    fn w(&self, i: usize) -> f64 {
        self[i] as f64
    }
}

/// scikit-learn clips probabilities to [eps, 1 - eps], eps = float64 machine epsilon.
pub(crate) fn log_loss_term(p_gold: f64) -> f64 {
    let eps = f64::EPSILON;
    -p_gold.clamp(eps, 1.0 - eps).ln()
}

/// Examples sorted by one class's score, highest first, with tie groups marked, so a
/// weighted ROC-AUC / average precision is one linear walk.
#[derive(Debug, Clone)]
pub(crate) struct Ranking {
    /// Example indices, score descending (stable).
    order: Vec<u32>,
    /// Positive-class flag per position in `order`.
    positive: Vec<bool>,
    /// Exclusive end position of each tie group.
    group_ends: Vec<u32>,
}

impl Ranking {
    pub fn new(scores: impl Fn(usize) -> f64, positive: impl Fn(usize) -> bool, n: usize) -> Self {
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_by(|&a, &b| scores(b as usize).total_cmp(&scores(a as usize)));
        let mut group_ends = Vec::new();
        for j in 1..n {
            if scores(order[j] as usize) != scores(order[j - 1] as usize) {
                group_ends.push(j as u32);
            }
        }
        if n > 0 {
            group_ends.push(n as u32);
        }
        let positive = order.iter().map(|&i| positive(i as usize)).collect();
        Ranking {
            order,
            positive,
            group_ends,
        }
    }

    /// Returns (ROC-AUC, average precision, positive weight). AUC is NaN when only one class
    /// is present; AP is 0 when there are no positives (scikit-learn sets recall to 1 and the
    /// only precision step is 0).
    pub fn auc_ap<W: Weights + ?Sized>(&self, w: &W) -> (f64, f64, f64) {
        let (mut total_pos, mut total_neg) = (0.0, 0.0);
        for (j, &i) in self.order.iter().enumerate() {
            let wi = w.w(i as usize);
            if self.positive[j] {
                total_pos += wi;
            } else {
                total_neg += wi;
            }
        }
        let (mut tp, mut fp) = (0.0, 0.0);
        let mut auc_num = 0.0;
        let mut ap = 0.0;
        let mut start = 0usize;
        for &end in &self.group_ends {
            let end = end as usize;
            let (mut gp, mut gn) = (0.0, 0.0);
            for j in start..end {
                let wi = w.w(self.order[j] as usize);
                if self.positive[j] {
                    gp += wi;
                } else {
                    gn += wi;
                }
            }
            // Positives in this group beat every negative ranked below and tie with the
            // negatives in the group (counted half).
            auc_num += gp * (total_neg - fp - gn) + 0.5 * gp * gn;
            tp += gp;
            fp += gn;
            if gp > 0.0 && total_pos > 0.0 {
                ap += (gp / total_pos) * (tp / (tp + fp));
            }
            start = end;
        }
        let auc = if total_pos == 0.0 || total_neg == 0.0 {
            f64::NAN
        } else {
            auc_num / (total_pos * total_neg)
        };
        (auc, ap, total_pos)
    }
}

/// Expected calibration error bins: equal-width over [0, 1] or equal-count.
pub(crate) fn uniform_bin(conf: f64, bins: usize) -> u16 {
    // Intervals (lo, hi]; a confidence of exactly 0 falls in the first bin.
    let b = (conf * bins as f64).ceil() as i64 - 1;
    b.clamp(0, bins as i64 - 1) as u16
}

/// ECE = Σ_b (n_b / n) · |accuracy_b − confidence_b| from per-bin sums.
pub(crate) fn ece_from_bins(count: &[f64], conf_sum: &[f64], correct_sum: &[f64]) -> f64 {
    let total: f64 = count.iter().sum();
    let mut ece = 0.0;
    for b in 0..count.len() {
        if count[b] > 0.0 {
            ece += (count[b] / total) * (correct_sum[b] / count[b] - conf_sum[b] / count[b]).abs();
        }
    }
    ece
}

/// Equal-count ECE: the confidences sorted ascending (stable) and split as
/// `numpy.array_split` does (the first `n mod B` bins one longer), each example repeated by
/// its multiplicity.
pub(crate) fn quantile_ece<W: Weights + ?Sized>(
    order: &[u32],
    conf: &[f64],
    correct: &[f64],
    bins: usize,
    w: &W,
    [count, conf_sum, correct_sum]: &mut [Vec<f64>; 3],
) -> f64 {
    let total: f64 = order.iter().map(|&i| w.w(i as usize)).sum();
    let total_n = total as u64;
    let base = total_n / bins as u64;
    let extra = total_n % bins as u64;
    let capacity = |b: usize| base + u64::from((b as u64) < extra);
    for v in [&mut *count, &mut *conf_sum, &mut *correct_sum] {
        v.clear();
        v.resize(bins, 0.0);
    }
    let mut bin = 0usize;
    let mut left = capacity(0);
    for &i in order {
        let i = i as usize;
        let mut remaining = w.w(i) as u64;
        while remaining > 0 {
            while left == 0 && bin + 1 < bins {
                bin += 1;
                left = capacity(bin);
            }
            let take = remaining.min(left.max(1));
            let t = take as f64;
            count[bin] += t;
            conf_sum[bin] += t * conf[i];
            correct_sum[bin] += t * correct[i];
            remaining -= take;
            left = left.saturating_sub(take);
        }
    }
    ece_from_bins(count, conf_sum, correct_sum)
}
