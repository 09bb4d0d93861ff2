//! Metrics that are functions of the confusion matrix alone.
//!
//! Everything here works on `f64` cell counts so the same code serves the point estimate
//! and every bootstrap resample (where counts come from multiplicities).

use crate::metric::Metric;

/// What a ratio evaluates to when it is 0/0 (scikit-learn's `zero_division`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZeroDivision {
    #[default]
    Zero,
    One,
    Nan,
}

impl ZeroDivision {
    pub fn value(self) -> f64 {
        match self {
            ZeroDivision::Zero => 0.0,
            ZeroDivision::One => 1.0,
            ZeroDivision::Nan => f64::NAN,
        }
    }
}

impl std::str::FromStr for ZeroDivision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "0" | "warn" => Ok(ZeroDivision::Zero),
            "1" => Ok(ZeroDivision::One),
            "nan" | "NaN" => Ok(ZeroDivision::Nan),
            _ => Err(format!("--zero-division must be 0, 1 or nan, not {s:?}")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassStats {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: f64,
}

/// Per-class sums of a `k × k` confusion matrix (rows gold, columns predicted).
pub(crate) struct Margins<'a> {
    pub tp: &'a [f64],
    pub true_sum: &'a [f64],
    pub pred_sum: &'a [f64],
    pub total: f64,
}

/// Reusable buffers so a bootstrap resample allocates nothing.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConfusionScratch {
    tp: Vec<f64>,
    true_sum: Vec<f64>,
    pred_sum: Vec<f64>,
    precision: Vec<f64>,
    recall: Vec<f64>,
    f1: Vec<f64>,
    sub: Vec<f64>,
}

pub(crate) fn margins<'a>(cm: &[f64], k: usize, s: &'a mut ConfusionScratch) -> Margins<'a> {
    s.tp.clear();
    s.tp.resize(k, 0.0);
    s.true_sum.clear();
    s.true_sum.resize(k, 0.0);
    s.pred_sum.clear();
    s.pred_sum.resize(k, 0.0);
    let mut total = 0.0;
    for g in 0..k {
        let row = &cm[g * k..(g + 1) * k];
        s.tp[g] = row[g];
        let mut row_sum = 0.0;
        for (p, &v) in row.iter().enumerate() {
            row_sum += v;
            s.pred_sum[p] += v;
        }
        s.true_sum[g] = row_sum;
        total += row_sum;
    }
    Margins {
        tp: &s.tp,
        true_sum: &s.true_sum,
        pred_sum: &s.pred_sum,
        total,
    }
}

#[inline]
fn prf_divide(num: f64, den: f64, zd: ZeroDivision) -> f64 {
    if den == 0.0 {
        zd.value()
    } else {
        num / den
    }
}

/// NumPy's `np.average` over the non-NaN entries (scikit-learn's `_nanaverage`): NaN when
/// every entry is NaN, and an unweighted mean when the remaining weights sum to zero.
fn nan_average(values: &[f64], weights: Option<&[f64]>) -> f64 {
    let mut sum = 0.0;
    let mut wsum = 0.0;
    let mut plain_sum = 0.0;
    let mut count = 0usize;
    for (i, &v) in values.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        let w = weights.map_or(1.0, |w| w[i]);
        sum += v * w;
        wsum += w;
        plain_sum += v;
        count += 1;
    }
    if count == 0 {
        f64::NAN
    } else if wsum == 0.0 {
        plain_sum / count as f64
    } else {
        sum / wsum
    }
}

/// Per-class precision, recall, F1 for labels `0..selected`, written into scratch.
fn per_class(m: &Margins<'_>, selected: usize, zd: ZeroDivision, s: &mut ConfusionScratchPrf) {
    s.precision.clear();
    s.recall.clear();
    s.f1.clear();
    for c in 0..selected {
        s.precision.push(prf_divide(m.tp[c], m.pred_sum[c], zd));
        s.recall.push(prf_divide(m.tp[c], m.true_sum[c], zd));
        // F = 2tp / (true + pred): scikit-learn's form, so F is a real 0 (not 0/0) when
        // tp = 0 but the class was predicted or present.
        s.f1.push(prf_divide(2.0 * m.tp[c], m.true_sum[c] + m.pred_sum[c], zd));
    }
}

pub(crate) struct ConfusionScratchPrf {
    precision: Vec<f64>,
    recall: Vec<f64>,
    f1: Vec<f64>,
}

/// Options that shape confusion-matrix metrics.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConfusionSpec {
    pub k: usize,
    pub selected: usize,
    pub zero_division: ZeroDivision,
    /// Index of the positive label for `average="binary"` metrics.
    pub pos: Option<usize>,
}

/// Writes every confusion-derived metric into `out` (indexed by `Metric::slot`).
pub(crate) fn confusion_metrics(
    cm: &[f64],
    spec: &ConfusionSpec,
    scratch: &mut ConfusionScratch,
    out: &mut [f64],
) {
    let k = spec.k;
    let zd = spec.zero_division;
    let mut prf = ConfusionScratchPrf {
        precision: std::mem::take(&mut scratch.precision),
        recall: std::mem::take(&mut scratch.recall),
        f1: std::mem::take(&mut scratch.f1),
    };
    let mut sub = std::mem::take(&mut scratch.sub);
    {
        let m = margins(cm, k, scratch);
        let trace: f64 = m.tp.iter().sum();
        out[Metric::Accuracy.slot()] = trace / m.total;

        // Recall averaged over classes present in the gold labels only.
        let (mut rsum, mut rcount) = (0.0, 0usize);
        for c in 0..k {
            if m.true_sum[c] > 0.0 {
                rsum += m.tp[c] / m.true_sum[c];
                rcount += 1;
            }
        }
        out[Metric::BalancedAccuracy.slot()] = rsum / rcount as f64;

        per_class(&m, spec.selected, zd, &mut prf);
        let sel = spec.selected;
        let tp: f64 = m.tp[..sel].iter().sum();
        let ps: f64 = m.pred_sum[..sel].iter().sum();
        let ts: f64 = m.true_sum[..sel].iter().sum();
        out[Metric::PrecisionMicro.slot()] = prf_divide(tp, ps, zd);
        out[Metric::RecallMicro.slot()] = prf_divide(tp, ts, zd);
        out[Metric::F1Micro.slot()] = prf_divide(2.0 * tp, ts + ps, zd);
        out[Metric::PrecisionMacro.slot()] = nan_average(&prf.precision, None);
        out[Metric::RecallMacro.slot()] = nan_average(&prf.recall, None);
        out[Metric::F1Macro.slot()] = nan_average(&prf.f1, None);
        let w = &m.true_sum[..sel];
        out[Metric::PrecisionWeighted.slot()] = nan_average(&prf.precision, Some(w));
        out[Metric::RecallWeighted.slot()] = nan_average(&prf.recall, Some(w));
        out[Metric::F1Weighted.slot()] = nan_average(&prf.f1, Some(w));
        if let Some(p) = spec.pos {
            out[Metric::Precision.slot()] = prf_divide(m.tp[p], m.pred_sum[p], zd);
            out[Metric::Recall.slot()] = prf_divide(m.tp[p], m.true_sum[p], zd);
            out[Metric::F1.slot()] = prf_divide(2.0 * m.tp[p], m.true_sum[p] + m.pred_sum[p], zd);
        }
        out[Metric::Mcc.slot()] = mcc(&m);
    }
    // Kappa is computed on the confusion matrix restricted to the reported labels.
    let sel = spec.selected;
    sub.clear();
    for g in 0..sel {
        sub.extend_from_slice(&cm[g * k..g * k + sel]);
    }
    out[Metric::CohenKappa.slot()] = cohen_kappa(&sub, sel, KappaWeights::None, scratch);
    out[Metric::CohenKappaLinear.slot()] = cohen_kappa(&sub, sel, KappaWeights::Linear, scratch);
    out[Metric::CohenKappaQuadratic.slot()] =
        cohen_kappa(&sub, sel, KappaWeights::Quadratic, scratch);
    scratch.precision = prf.precision;
    scratch.recall = prf.recall;
    scratch.f1 = prf.f1;
    scratch.sub = sub;
}

/// Per-class statistics for labels `0..selected` (point estimate only).
pub(crate) fn class_stats(cm: &[f64], spec: &ConfusionSpec) -> Vec<ClassStats> {
    let mut scratch = ConfusionScratch::default();
    let m = margins(cm, spec.k, &mut scratch);
    let mut prf = ConfusionScratchPrf {
        precision: Vec::new(),
        recall: Vec::new(),
        f1: Vec::new(),
    };
    per_class(&m, spec.selected, spec.zero_division, &mut prf);
    (0..spec.selected)
        .map(|c| ClassStats {
            precision: prf.precision[c],
            recall: prf.recall[c],
            f1: prf.f1[c],
            support: m.true_sum[c],
        })
        .collect()
}

/// Matthews correlation (multi-class, Gorodkin's R_K), 0 when the denominator is 0.
fn mcc(m: &Margins<'_>) -> f64 {
    let n = m.total;
    let correct: f64 = m.tp.iter().sum();
    let dot_tp: f64 = m.true_sum.iter().zip(m.pred_sum).map(|(t, p)| t * p).sum();
    let dot_pp: f64 = m.pred_sum.iter().map(|p| p * p).sum();
    let dot_tt: f64 = m.true_sum.iter().map(|t| t * t).sum();
    let cov_ytyp = correct * n - dot_tp;
    let cov_ypyp = n * n - dot_pp;
    let cov_ytyt = n * n - dot_tt;
    if cov_ypyp * cov_ytyt == 0.0 {
        0.0
    } else {
        cov_ytyp / (cov_ytyt * cov_ypyp).sqrt()
    }
}

#[derive(Clone, Copy)]
enum KappaWeights {
    None,
    Linear,
    Quadratic,
}

/// Cohen's kappa as scikit-learn computes it; NaN when 0/0.
fn cohen_kappa(cm: &[f64], k: usize, weights: KappaWeights, s: &mut ConfusionScratch) -> f64 {
    let m = margins(cm, k, s);
    let total = m.total;
    let mut observed = 0.0;
    let mut expected = 0.0;
    for i in 0..k {
        for j in 0..k {
            let w = match weights {
                KappaWeights::None => {
                    if i == j {
                        0.0
                    } else {
                        1.0
                    }
                }
                KappaWeights::Linear => (i as f64 - j as f64).abs(),
                KappaWeights::Quadratic => (i as f64 - j as f64).powi(2),
            };
            observed += w * cm[i * k + j];
            // expected = outer(pred_sum, true_sum) / total; only its weighted sum matters.
            expected += w * (m.true_sum[i] * m.pred_sum[j] / total);
        }
    }
    1.0 - observed / expected
}
