//! Metrics over predicted probabilities: log-loss, Brier, ECE, ROC-AUC, average precision.
//!
//! Each is written over per-example multiplicities (`Weights`) so that the point estimate
//! (all ones) and every bootstrap resample run the same code.

/// Per-example multiplicity: 1 for the observed sample, a bootstrap count otherwise.
pub(crate) trait Weights: Sync {
    fn w(&self, i: usize) -> f64;
    fn count(&self, i: usize) -> u64;
}

pub(crate) struct Unit;

impl Weights for Unit {
    #[inline(always)]
    fn w(&self, _: usize) -> f64 {
        1.0
    }
    #[inline(always)]
    fn count(&self, _: usize) -> u64 {
        1
    }
}

impl Weights for [u8] {
    #[inline(always)]
    fn w(&self, i: usize) -> f64 {
        self[i] as f64
    }
    #[inline(always)]
    fn count(&self, i: usize) -> u64 {
        u64::from(self[i])
    }
}

impl Weights for [u32] {
    #[inline(always)]
    fn w(&self, i: usize) -> f64 {
        self[i] as f64
    }
    #[inline(always)]
    fn count(&self, i: usize) -> u64 {
        u64::from(self[i])
    }
}

/// scikit-learn clips probabilities to [eps, 1 - eps], eps = float64 machine epsilon.
pub(crate) fn log_loss_term(p_gold: f64) -> f64 {
    let eps = f64::EPSILON;
    -p_gold.clamp(eps, 1.0 - eps).ln()
}

/// Examples sorted by one class's score, highest first, arranged for a fast weighted
/// ROC-AUC and average precision.
///
/// Only tie groups that contain a positive need arithmetic; the negatives ranked between two
/// such groups only add to the false-positive count, whatever their ties. So the ranking is
/// stored as alternating runs: a run of negatives (summed in a tight gather loop) followed
/// by one group holding at least one positive.
#[derive(Debug, Clone)]
pub(crate) struct Ranking {
    /// Example indices of negatives outside positive-holding groups, in rank order.
    negatives: Vec<u32>,
    /// Members of the positive-holding groups, positive flag in bit 31.
    members: Vec<u32>,
    /// Per positive-holding group: end of its preceding negative run in `negatives`, and end
    /// of its members in `members`.
    groups: Vec<(u32, u32)>,
}

const POSITIVE: u32 = 1 << 31;
const INDEX: u32 = POSITIVE - 1;

/// Maps an f64 to a u64 whose unsigned order is the float's total order.
fn order_key(x: f64) -> u64 {
    let b = x.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

impl Ranking {
    pub fn new(scores: impl Fn(usize) -> f64, positive: impl Fn(usize) -> bool, n: usize) -> Self {
        assert!(n <= INDEX as usize, "too many examples for one ranking");
        // Descending score, ties in example order (a stable sort, done as an integer sort).
        let mut keyed: Vec<(u64, u32)> =
            (0..n).map(|i| (!order_key(scores(i)), i as u32)).collect();
        keyed.sort_unstable();
        let mut negatives = Vec::with_capacity(n);
        let mut members = Vec::new();
        let mut groups = Vec::new();
        let mut start = 0;
        while start < n {
            let mut end = start + 1;
            while end < n && keyed[end].0 == keyed[start].0 {
                end += 1;
            }
            let group = &keyed[start..end];
            if group.iter().any(|&(_, i)| positive(i as usize)) {
                for &(_, i) in group {
                    members.push(if positive(i as usize) {
                        i | POSITIVE
                    } else {
                        i
                    });
                }
                groups.push((negatives.len() as u32, members.len() as u32));
            } else {
                negatives.extend(group.iter().map(|&(_, i)| i));
            }
            start = end;
        }
        Ranking {
            negatives,
            members,
            groups,
        }
    }

    /// Returns (ROC-AUC, average precision) under integer multiplicities, given the total
    /// positive and negative multiplicity. AUC is NaN when only one class is present; AP is 0
    /// when there are no positives (scikit-learn sets recall to 1 and the only precision step
    /// is 0).
    pub fn auc_ap<W: Weights + ?Sized>(&self, w: &W, total_pos: u64, total_neg: u64) -> (f64, f64) {
        let (mut tp, mut fp) = (0u64, 0u64);
        // Twice the Mann–Whitney numerator, exact in integers: positives beat every negative
        // ranked below and tie (half) with the negatives of their own group.
        let mut auc2: u64 = 0;
        let mut ap = 0.0;
        let (mut neg_at, mut member_at) = (0usize, 0usize);
        for &(neg_end, member_end) in &self.groups {
            let neg_end = neg_end as usize;
            fp += self.negatives[neg_at..neg_end]
                .iter()
                .map(|&i| w.count(i as usize))
                .sum::<u64>();
            neg_at = neg_end;
            let (mut gp, mut gn) = (0u64, 0u64);
            for &e in &self.members[member_at..member_end as usize] {
                let wi = w.count((e & INDEX) as usize);
                let pos = u64::from(e >> 31);
                gp += wi * pos;
                gn += wi * (1 - pos);
            }
            member_at = member_end as usize;
            auc2 += 2 * gp * (total_neg - fp - gn) + gp * gn;
            tp += gp;
            fp += gn;
            // Branch-free: in a resample a third of the positives have multiplicity 0, an
            // unpredictable branch. Signed integers convert to f64 in one instruction.
            ap += (gp as i64) as f64 * ((tp as i64) as f64 / ((tp + fp).max(1) as i64) as f64);
        }
        let auc = if total_pos == 0 || total_neg == 0 {
            f64::NAN
        } else {
            auc2 as f64 / (2.0 * total_pos as f64 * total_neg as f64)
        };
        let ap = if total_pos == 0 {
            0.0
        } else {
            ap / total_pos as f64
        };
        (auc, ap)
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
