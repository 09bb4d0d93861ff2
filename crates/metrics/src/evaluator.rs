//! Turns one model's predictions into every applicable metric, for the observed sample
//! and for resamples of it.

use crate::classification::{
    class_stats, confusion_metrics, ClassStats, ConfusionScratch, ConfusionSpec, ZeroDivision,
};
use crate::labels::Predictions;
use crate::metric::Metric;
use crate::probabilistic::{
    ece_from_bins, log_loss_term, quantile_ece, uniform_bin, Ranking, Unit, Weights,
};
use crate::MetricsError;
use rayon::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EceStrategy {
    /// Equal-width bins over [0, 1].
    #[default]
    Uniform,
    /// Equal-count bins (HELM uses 10 of these).
    Quantile,
}

impl std::str::FromStr for EceStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "uniform" => Ok(EceStrategy::Uniform),
            "quantile" => Ok(EceStrategy::Quantile),
            _ => Err(format!(
                "--ece-strategy must be uniform or quantile, not {s:?}"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MetricOptions {
    pub zero_division: ZeroDivision,
    /// Enables `average="binary"` precision/recall/F1 and fixes the positive class of binary
    /// ROC-AUC, average precision and Brier.
    pub pos_label: Option<String>,
    pub ece_bins: usize,
    pub ece_strategy: EceStrategy,
}

impl Default for MetricOptions {
    fn default() -> Self {
        MetricOptions {
            zero_division: ZeroDivision::Zero,
            pos_label: None,
            ece_bins: 15,
            ece_strategy: EceStrategy::Uniform,
        }
    }
}

/// The observed value of every applicable metric, with the per-class breakdown.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub n: usize,
    /// Applicable metrics in `Metric::ALL` order; NaN where undefined (see `warnings`).
    pub metrics: Vec<(Metric, f64)>,
    /// Reported labels with their precision, recall, F1 and support.
    pub per_class: Vec<(String, ClassStats)>,
    pub confusion_labels: Vec<String>,
    /// Rows are gold labels, columns predicted labels.
    pub confusion_matrix: Vec<Vec<u64>>,
    pub warnings: Vec<String>,
}

impl Evaluation {
    pub fn get(&self, metric: Metric) -> Option<f64> {
        self.metrics
            .iter()
            .find(|(m, _)| *m == metric)
            .map(|(_, v)| *v)
    }
}

struct ProbabilityKernel {
    log_loss: Vec<f64>,
    brier: Vec<f64>,
    conf: Vec<f64>,
    correct: Vec<f64>,
    uniform_bin: Vec<u16>,
    conf_order: Vec<u32>,
    /// One ranking for binary ROC/AP (positive class), or one per class for one-vs-rest.
    rankings: Vec<Ranking>,
    binary: bool,
    pos_col: usize,
    /// One-vs-rest ROC-AUC is refused (NaN) when rows are not probability distributions,
    /// as scikit-learn refuses it.
    ovr_undefined: bool,
}

/// Precomputed per-example quantities for fast repeated evaluation.
pub struct Evaluator {
    spec: ConfusionSpec,
    gold: Vec<u32>,
    pred: Vec<u32>,
    metrics: Vec<Metric>,
    prob: Option<ProbabilityKernel>,
    ece_bins: usize,
    ece_strategy: EceStrategy,
    labels: Vec<String>,
    proba_row_sums_off: usize,
}

/// Reusable buffers for one thread's evaluations.
#[derive(Default, Clone)]
pub(crate) struct EvalScratch {
    pub cm: Vec<f64>,
    confusion: ConfusionScratch,
    bins: [Vec<f64>; 3],
    class_auc: Vec<f64>,
    class_ap: Vec<f64>,
    class_pos: Vec<f64>,
    class_count: Vec<u64>,
}

pub(crate) const SLOTS: usize = Metric::ALL.len();

impl Evaluator {
    pub fn new(p: &Predictions, opts: &MetricOptions) -> Result<Self, MetricsError> {
        if p.is_empty() {
            return Err(MetricsError::Empty);
        }
        let k = p.labels().len();
        let labels = p.labels().names().to_vec();
        let pos = match &opts.pos_label {
            None => None,
            Some(name) => Some(binary_pos_label(p, name)?),
        };
        let spec = ConfusionSpec {
            k,
            selected: p.selected(),
            zero_division: opts.zero_division,
            pos,
        };
        let mut metrics: Vec<Metric> = Metric::ALL
            .iter()
            .copied()
            .filter(|m| m.from_confusion())
            .filter(|m| {
                pos.is_some() || !matches!(m, Metric::Precision | Metric::Recall | Metric::F1)
            })
            .collect();
        let mut row_sums_off = 0;
        let mut rows_not_distributions = 0usize;
        // A one-label problem has nothing to rank or calibrate against (scikit-learn refuses
        // its log-loss and Brier too), so no probability metric is reported.
        let proba = p.proba().filter(|_| k >= 2);
        // Labels past the selected ones are only ever predicted (such as a generative model's
        // `invalid` answers): they carry no probability, so calibration and ranking metrics
        // are over the selected labels' columns.
        let k_all = k;
        let compact: Option<Vec<f64>> = proba.filter(|_| p.selected() < k_all).map(|pr| {
            pr.chunks_exact(k_all)
                .flat_map(|row| row[..p.selected()].iter().copied())
                .collect()
        });
        let proba = compact.as_deref().or(proba);
        let prob = match proba {
            None => None,
            Some(proba) => {
                let k = if compact.is_some() {
                    p.selected()
                } else {
                    k_all
                };
                let n = p.len();
                let gold = p.gold();
                let mut log_loss = Vec::with_capacity(n);
                let mut brier = Vec::with_capacity(n);
                let mut conf = Vec::with_capacity(n);
                let mut correct = Vec::with_capacity(n);
                let binary = k == 2;
                // Binary Brier and ROC use the positive class: the given one, else the
                // greater label (scikit-learn's convention).
                let pos_col = pos.unwrap_or(if k >= 2 { 1 } else { 0 });
                for i in 0..n {
                    let row = &proba[i * k..(i + 1) * k];
                    let g = gold[i] as usize;
                    log_loss.push(log_loss_term(row[g]));
                    let sum: f64 = row.iter().sum();
                    if (sum - 1.0).abs() > 1e-8 + f64::EPSILON.sqrt() {
                        row_sums_off += 1;
                    }
                    if (sum - 1.0).abs() > 1e-8 + 1e-5 {
                        rows_not_distributions += 1;
                    }
                    if binary {
                        let y = if g == pos_col { 1.0 } else { 0.0 };
                        brier.push((row[pos_col] - y).powi(2));
                    } else {
                        brier.push(
                            row.iter()
                                .enumerate()
                                .map(|(c, &v)| (v - if c == g { 1.0 } else { 0.0 }).powi(2))
                                .sum(),
                        );
                    }
                    let (mut best, mut best_p) = (0usize, row[0]);
                    for (c, &v) in row.iter().enumerate().skip(1) {
                        if v > best_p {
                            best = c;
                            best_p = v;
                        }
                    }
                    conf.push(best_p);
                    correct.push(if best == g { 1.0 } else { 0.0 });
                }
                let uniform_bins = conf
                    .iter()
                    .map(|&c| uniform_bin(c, opts.ece_bins))
                    .collect();
                let mut conf_order: Vec<u32> = (0..n as u32).collect();
                conf_order.sort_by(|&a, &b| conf[a as usize].total_cmp(&conf[b as usize]));
                let rankings = if binary {
                    vec![Ranking::new(
                        |i| proba[i * k + pos_col],
                        |i| gold[i] as usize == pos_col,
                        n,
                    )]
                } else if k > 2 {
                    (0..k)
                        .into_par_iter()
                        .map(|c| Ranking::new(|i| proba[i * k + c], |i| gold[i] as usize == c, n))
                        .collect()
                } else {
                    Vec::new()
                };
                metrics.extend([Metric::LogLoss, Metric::Brier, Metric::Ece]);
                if binary {
                    metrics.extend([Metric::RocAuc, Metric::AveragePrecision]);
                } else if k > 2 {
                    metrics.extend([
                        Metric::RocAucOvrMacro,
                        Metric::RocAucOvrWeighted,
                        Metric::AveragePrecisionMacro,
                        Metric::AveragePrecisionWeighted,
                    ]);
                }
                let ovr_needs_distributions = !binary && rows_not_distributions > 0;
                Some(ProbabilityKernel {
                    log_loss,
                    brier,
                    conf,
                    correct,
                    uniform_bin: uniform_bins,
                    conf_order,
                    rankings,
                    binary,
                    pos_col,
                    ovr_undefined: ovr_needs_distributions,
                })
            }
        };
        metrics.sort();
        Ok(Evaluator {
            spec,
            gold: p.gold().to_vec(),
            pred: p.pred().to_vec(),
            metrics,
            prob,
            ece_bins: opts.ece_bins.max(1),
            ece_strategy: opts.ece_strategy,
            labels,
            proba_row_sums_off: row_sums_off,
        })
    }

    pub fn n(&self) -> usize {
        self.gold.len()
    }

    pub fn metrics(&self) -> &[Metric] {
        &self.metrics
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    pub fn gold(&self) -> &[u32] {
        &self.gold
    }

    pub fn pred(&self) -> &[u32] {
        &self.pred
    }

    pub(crate) fn k(&self) -> usize {
        self.spec.k
    }

    /// True when every applicable metric is a function of confusion counts alone.
    pub(crate) fn confusion_only(&self) -> bool {
        self.metrics.iter().all(|m| m.from_confusion())
    }

    pub(crate) fn confusion_from_counts<W: Weights + ?Sized>(&self, w: &W, cm: &mut Vec<f64>) {
        let k = self.spec.k;
        cm.clear();
        cm.resize(k * k, 0.0);
        for (i, (&g, &p)) in self.gold.iter().zip(&self.pred).enumerate() {
            cm[g as usize * k + p as usize] += w.w(i);
        }
    }

    /// Confusion-derived metrics of a given confusion matrix into `out`.
    pub(crate) fn eval_confusion(&self, cm: &[f64], s: &mut EvalScratch, out: &mut [f64; SLOTS]) {
        confusion_metrics(cm, &self.spec, &mut s.confusion, out);
    }

    /// Every applicable metric under per-example multiplicities `w`.
    pub(crate) fn eval_weighted<W: Weights + ?Sized>(
        &self,
        w: &W,
        s: &mut EvalScratch,
        out: &mut [f64; SLOTS],
    ) {
        let mut cm = std::mem::take(&mut s.cm);
        self.confusion_from_counts(w, &mut cm);
        self.eval_confusion(&cm, s, out);
        s.cm = cm;
        if let Some(pk) = &self.prob {
            self.eval_probabilities(pk, w, s, out);
        }
    }

    fn eval_probabilities<W: Weights + ?Sized>(
        &self,
        pk: &ProbabilityKernel,
        w: &W,
        s: &mut EvalScratch,
        out: &mut [f64; SLOTS],
    ) {
        let n = self.gold.len();
        let (mut total, mut ll, mut br) = (0.0, 0.0, 0.0);
        for i in 0..n {
            let wi = w.w(i);
            total += wi;
            ll += wi * pk.log_loss[i];
            br += wi * pk.brier[i];
        }
        out[Metric::LogLoss.slot()] = ll / total;
        out[Metric::Brier.slot()] = br / total;
        out[Metric::Ece.slot()] = match self.ece_strategy {
            EceStrategy::Uniform => {
                let [count, conf_sum, correct_sum] = &mut s.bins;
                for v in [&mut *count, &mut *conf_sum, &mut *correct_sum] {
                    v.clear();
                    v.resize(self.ece_bins, 0.0);
                }
                for i in 0..n {
                    let wi = w.w(i);
                    let b = pk.uniform_bin[i] as usize;
                    count[b] += wi;
                    conf_sum[b] += wi * pk.conf[i];
                    correct_sum[b] += wi * pk.correct[i];
                }
                ece_from_bins(count, conf_sum, correct_sum)
            }
            EceStrategy::Quantile => quantile_ece(
                &pk.conf_order,
                &pk.conf,
                &pk.correct,
                self.ece_bins,
                w,
                &mut s.bins,
            ),
        };
        if pk.rankings.is_empty() {
            return;
        }
        // Multiplicity of each gold class, shared by every one-vs-rest ranking.
        let k = self.spec.k;
        s.class_pos.clear();
        s.class_pos.resize(k, 0.0);
        let class_count = &mut s.class_count;
        class_count.clear();
        class_count.resize(k, 0);
        for (i, &g) in self.gold.iter().enumerate() {
            class_count[g as usize] += w.count(i);
        }
        let all: u64 = class_count.iter().sum();
        if pk.binary {
            let pos: u64 = class_count[pk.pos_col];
            let (auc, ap) = pk.rankings[0].auc_ap(w, pos, all - pos);
            out[Metric::RocAuc.slot()] = auc;
            out[Metric::AveragePrecision.slot()] = ap;
        } else {
            s.class_auc.clear();
            s.class_ap.clear();
            for (c, r) in pk.rankings.iter().enumerate() {
                let pos = class_count[c];
                let (auc, ap) = r.auc_ap(w, pos, all - pos);
                s.class_auc.push(auc);
                s.class_ap.push(ap);
                s.class_pos[c] = pos as f64;
            }
            if pk.ovr_undefined {
                out[Metric::RocAucOvrMacro.slot()] = f64::NAN;
                out[Metric::RocAucOvrWeighted.slot()] = f64::NAN;
            } else {
                out[Metric::RocAucOvrMacro.slot()] = mean(&s.class_auc, None);
                out[Metric::RocAucOvrWeighted.slot()] = mean(&s.class_auc, Some(&s.class_pos));
            }
            out[Metric::AveragePrecisionMacro.slot()] = mean(&s.class_ap, None);
            out[Metric::AveragePrecisionWeighted.slot()] = mean(&s.class_ap, Some(&s.class_pos));
        }
    }

    /// The observed value of every metric with per-class detail and warnings.
    pub fn evaluate(&self) -> Evaluation {
        let mut s = EvalScratch::default();
        let mut out = [f64::NAN; SLOTS];
        self.eval_weighted(&Unit, &mut s, &mut out);
        let cm = s.cm.clone();
        let k = self.spec.k;
        let sel = self.spec.selected;
        let stats = class_stats(&cm, &self.spec);
        let per_class = self.labels[..sel]
            .iter()
            .cloned()
            .zip(stats.iter().copied())
            .collect();
        let confusion_matrix = (0..sel)
            .map(|g| (0..sel).map(|p| cm[g * k + p] as u64).collect())
            .collect();
        let metrics = self.metrics.iter().map(|&m| (m, out[m.slot()])).collect();
        let warnings = self.warnings(&cm, &out);
        Evaluation {
            n: self.gold.len(),
            metrics,
            per_class,
            confusion_labels: self.labels[..sel].to_vec(),
            confusion_matrix,
            warnings,
        }
    }

    fn warnings(&self, cm: &[f64], out: &[f64; SLOTS]) -> Vec<String> {
        let k = self.spec.k;
        let sel = self.spec.selected;
        let zd = match self.spec.zero_division {
            ZeroDivision::Zero => "0",
            ZeroDivision::One => "1",
            ZeroDivision::Nan => "nan",
        };
        let mut warnings = Vec::new();
        let true_sum: Vec<f64> = (0..k)
            .map(|g| cm[g * k..(g + 1) * k].iter().sum())
            .collect();
        let pred_sum: Vec<f64> = (0..k)
            .map(|p| (0..k).map(|g| cm[g * k + p]).sum())
            .collect();
        let names = |pred: &dyn Fn(usize) -> bool| -> Vec<String> {
            (0..sel)
                .filter(|&c| pred(c))
                .map(|c| format!("{:?}", self.labels[c]))
                .collect()
        };
        let no_pred = names(&|c| pred_sum[c] == 0.0);
        let no_true = names(&|c| true_sum[c] == 0.0);
        let neither = names(&|c| pred_sum[c] == 0.0 && true_sum[c] == 0.0);
        let mut ill = |metrics: &str, what: &str, labels: &[String]| {
            if !labels.is_empty() {
                warnings.push(format!(
                    "{metrics}: ill-defined (0/0) for label(s) {} with {what}; set to {zd} by zero_division",
                    labels.join(", ")
                ));
            }
        };
        ill(
            "precision_macro, precision_weighted, per-class precision",
            "no predicted samples",
            &no_pred,
        );
        ill(
            "recall_macro, recall_weighted, per-class recall",
            "no true samples",
            &no_true,
        );
        ill(
            "f1_macro, f1_weighted, per-class f1",
            "neither true nor predicted samples",
            &neither,
        );
        if let Some(p) = self.spec.pos {
            let name = format!("{:?}", self.labels[p]);
            if pred_sum[p] == 0.0 {
                warnings.push(format!("precision: ill-defined (0/0), no samples predicted as {name}; set to {zd} by zero_division"));
            }
            if true_sum[p] == 0.0 {
                warnings.push(format!("recall: ill-defined (0/0), no true samples of {name}; set to {zd} by zero_division"));
            }
            if pred_sum[p] == 0.0 && true_sum[p] == 0.0 {
                warnings.push(format!(
                    "f1: ill-defined (0/0) for {name}; set to {zd} by zero_division"
                ));
            }
        }
        let sel_pred: f64 = pred_sum[..sel].iter().sum();
        let sel_true: f64 = true_sum[..sel].iter().sum();
        if sel_pred == 0.0 {
            warnings.push(format!("precision_micro: ill-defined (0/0), nothing predicted in the reported labels; set to {zd} by zero_division"));
        }
        if sel_true == 0.0 {
            warnings.push(format!("recall_micro: ill-defined (0/0), no true samples in the reported labels; set to {zd} by zero_division"));
        }
        let absent_from_gold = (0..k)
            .filter(|&c| true_sum[c] == 0.0 && pred_sum[c] > 0.0)
            .count();
        if absent_from_gold > 0 {
            warnings.push("balanced_accuracy: some predicted labels never occur in the gold labels; recall is averaged over gold labels only".to_owned());
        }
        for &m in &self.metrics {
            let v = out[m.slot()];
            // zero_division="nan" asks for NaN where a ratio is 0/0 (said above, label by
            // label); any other NaN (kappa, ROC-AUC) still gets its reason.
            let by_zero_division = matches!(self.spec.zero_division, ZeroDivision::Nan)
                && ["precision", "recall", "f1", "fbeta", "jaccard"]
                    .iter()
                    .any(|p| m.to_string().starts_with(p));
            if v.is_nan() && !by_zero_division {
                let why = match m {
                    Metric::CohenKappa | Metric::CohenKappaLinear | Metric::CohenKappaQuadratic => {
                        "undefined: expected disagreement is 0 (a single label on both sides)"
                    }
                    Metric::RocAucOvrMacro | Metric::RocAucOvrWeighted
                        if self.prob.as_ref().is_some_and(|pk| pk.ovr_undefined) =>
                    {
                        "undefined: one-vs-rest ROC-AUC needs every probability row to sum to 1 (as scikit-learn requires)"
                    }
                    Metric::RocAuc | Metric::RocAucOvrMacro | Metric::RocAucOvrWeighted => {
                        "undefined: some class has only positive or only negative gold examples"
                    }
                    _ => "undefined (NaN)",
                };
                warnings.push(format!("{m}: {why}; reported as null"));
            }
        }
        if let Some(pk) = &self.prob {
            if self.proba_row_sums_off > 0 {
                warnings.push(format!(
                    "log_loss: probabilities of {} example(s) do not sum to 1; they are used as given, not renormalised",
                    self.proba_row_sums_off
                ));
            }
            let absent: Vec<String> = if pk.binary {
                Vec::new()
            } else {
                (0..pk.rankings.len())
                    .filter(|&c| true_sum[c] == 0.0)
                    .map(|c| format!("{:?}", self.labels[c]))
                    .collect()
            };
            if !absent.is_empty() && !pk.rankings.is_empty() {
                warnings.push(format!(
                    "average_precision_macro, average_precision_weighted: no gold examples of {}; their average precision is 0",
                    absent.join(", ")
                ));
            }
        }
        warnings
    }
}

/// scikit-learn's `_average_binary_score`: a plain mean lets NaN through; the weighted mean
/// forces zero-weight classes to 0 (so an undefined score of an absent class does not
/// spoil it) and is 0 when every weight is 0.
fn mean(v: &[f64], weights: Option<&[f64]>) -> f64 {
    match weights {
        None => v.iter().sum::<f64>() / v.len() as f64,
        Some(w) => {
            let ws: f64 = w.iter().sum();
            if ws == 0.0 {
                return 0.0;
            }
            v.iter()
                .zip(w)
                .map(|(a, b)| if *b == 0.0 { 0.0 } else { a * b })
                .sum::<f64>()
                / ws
        }
    }
}

/// Validates `pos_label` as scikit-learn's `average="binary"` does: at most two labels may
/// occur in the data, and the positive label must be one of them (or the only other one).
fn binary_pos_label(p: &Predictions, name: &str) -> Result<usize, MetricsError> {
    let k = p.labels().len();
    let mut present = vec![false; k];
    for &g in p.gold().iter().chain(p.pred()) {
        present[g as usize] = true;
    }
    let present_names: Vec<String> = (0..k)
        .filter(|&c| present[c])
        .map(|c| p.labels().name(c as u32).to_owned())
        .collect();
    if present_names.len() > 2 {
        return Err(MetricsError::BinaryOnMulticlass(present_names.len()));
    }
    match p.labels().index_of(name) {
        Some(i) if present[i as usize] || present_names.len() < 2 => Ok(i as usize),
        _ => Err(MetricsError::InvalidPosLabel {
            label: name.to_owned(),
            valid: present_names,
        }),
    }
}
