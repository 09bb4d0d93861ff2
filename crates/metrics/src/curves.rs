//! The curves behind the calibration and ranking metrics, for pictures: the reliability
//! diagram (the bins ECE is computed from) and ROC and precision-recall curves (binary: the
//! positive class; multi-class: one-vs-rest per label).
//!
//! Points follow scikit-learn's `roc_curve(drop_intermediate=False)` and
//! `precision_recall_curve` (one point per distinct score, ties together), and the areas
//! computed from them are its `roc_auc_score` and `average_precision_score`. A curve with
//! more points than asked is thinned for drawing; its area is from the full curve.

use serde::{Deserialize, Serialize};

use crate::labels::Predictions;
use crate::probabilistic::uniform_bin;

/// One equal-width confidence bin `(lower, upper]` of the reliability diagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    pub lower: f64,
    pub upper: f64,
    pub count: u64,
    /// Mean top-label probability and accuracy of the bin's examples (none when empty).
    pub mean_confidence: Option<f64>,
    pub accuracy: Option<f64>,
}

/// A ROC (x = false positive rate, y = true positive rate) or precision-recall (x = recall,
/// y = precision) curve of one label against the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    pub label: String,
    /// ROC-AUC or average precision, from the full curve.
    pub area: f64,
    pub positives: u64,
    pub points: Vec<[f64; 2]>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curves {
    pub reliability: Vec<ReliabilityBin>,
    pub roc: Vec<Curve>,
    pub pr: Vec<Curve>,
}

/// The curves of `p`, or none without probabilities. `pos` is the binary positive column
/// (default: the second label, scikit-learn's greater label); curves keep at most
/// `max_points` points each.
pub fn curves(
    p: &Predictions,
    bins: usize,
    pos: Option<usize>,
    max_points: usize,
) -> Option<Curves> {
    let all = p.proba()?;
    let k_all = p.labels().len();
    let k = p.selected();
    if k < 2 || p.is_empty() {
        return None;
    }
    let n = p.len();
    // Only the selected labels carry probabilities (see the evaluator).
    let row = |i: usize| &all[i * k_all..i * k_all + k];
    let gold = p.gold();
    let bins = bins.max(1);
    let mut count = vec![0u64; bins];
    let mut conf_sum = vec![0.0; bins];
    let mut correct_sum = vec![0.0; bins];
    for (i, &g) in gold.iter().enumerate() {
        let r = row(i);
        let (mut best, mut best_p) = (0usize, r[0]);
        for (c, &v) in r.iter().enumerate().skip(1) {
            if v > best_p {
                best = c;
                best_p = v;
            }
        }
        let b = uniform_bin(best_p, bins) as usize;
        count[b] += 1;
        conf_sum[b] += best_p;
        correct_sum[b] += f64::from(u8::from(best == g as usize));
    }
    let reliability = (0..bins)
        .map(|b| ReliabilityBin {
            lower: b as f64 / bins as f64,
            upper: (b + 1) as f64 / bins as f64,
            count: count[b],
            mean_confidence: (count[b] > 0).then(|| conf_sum[b] / count[b] as f64),
            accuracy: (count[b] > 0).then(|| correct_sum[b] / count[b] as f64),
        })
        .collect();
    let columns: Vec<usize> = if k == 2 {
        vec![pos.unwrap_or(1)]
    } else {
        (0..k).collect()
    };
    let mut roc = Vec::new();
    let mut pr = Vec::new();
    for c in columns {
        let scores: Vec<f64> = (0..n).map(|i| row(i)[c]).collect();
        let positive: Vec<bool> = gold.iter().map(|&g| g as usize == c).collect();
        let label = p.labels().name(c as u32).to_owned();
        let (r, q) = roc_pr(&scores, &positive);
        let positives = positive.iter().filter(|&&x| x).count() as u64;
        if let Some((area, points)) = r {
            roc.push(Curve {
                label: label.clone(),
                area,
                positives,
                points: thin(points, max_points),
            });
        }
        if let Some((area, points)) = q {
            pr.push(Curve {
                label,
                area,
                positives,
                points: thin(points, max_points),
            });
        }
    }
    Some(Curves {
        reliability,
        roc,
        pr,
    })
}

type AreaPoints = Option<(f64, Vec<[f64; 2]>)>;

/// (ROC-AUC, ROC points) and (average precision, PR points); ROC is undefined with a single
/// class present, PR without positives.
fn roc_pr(scores: &[f64], positive: &[bool]) -> (AreaPoints, AreaPoints) {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    // Cumulative (tp, fp) at each distinct threshold, highest first.
    let mut steps: Vec<(f64, f64)> = Vec::new();
    let (mut tp, mut fp) = (0.0, 0.0);
    for (j, &i) in order.iter().enumerate() {
        if positive[i] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        let last_of_tie = j + 1 == order.len() || scores[order[j + 1]] != scores[i];
        if last_of_tie {
            steps.push((tp, fp));
        }
    }
    let (pos, neg) = (tp, fp);
    let roc = (pos > 0.0 && neg > 0.0).then(|| {
        let mut points = vec![[0.0, 0.0]];
        points.extend(steps.iter().map(|&(t, f)| [f / neg, t / pos]));
        let area = points
            .windows(2)
            .map(|w| (w[1][0] - w[0][0]) * (w[1][1] + w[0][1]) / 2.0)
            .sum();
        (area, points)
    });
    let pr = (pos > 0.0).then(|| {
        // scikit-learn: from the lowest threshold up, then (recall 0, precision 1); AP is
        // the step sum Σ (R_i − R_{i+1}) P_i.
        let mut points: Vec<[f64; 2]> = steps
            .iter()
            .rev()
            .map(|&(t, f)| [t / pos, t / (t + f)])
            .collect();
        points.push([0.0, 1.0]);
        let area = points
            .windows(2)
            .map(|w| (w[0][0] - w[1][0]) * w[0][1])
            .sum();
        (area, points)
    });
    (roc, pr)
}

/// At most `max` points, evenly spaced along the curve, first and last kept.
fn thin(points: Vec<[f64; 2]>, max: usize) -> Vec<[f64; 2]> {
    let max = max.max(2);
    if points.len() <= max {
        return points;
    }
    let last = points.len() - 1;
    (0..max)
        .map(|j| points[(j * last + (max - 1) / 2) / (max - 1)])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Evaluator, LabelSet, Metric, MetricOptions};

    fn preds(gold: &[u32], proba: &[f64], k: usize) -> Predictions {
        let labels = LabelSet::new((0..k).map(|c| format!("c{c}")).collect()).unwrap();
        let pred: Vec<u32> = proba
            .chunks(k)
            .map(|r| {
                r.iter()
                    .enumerate()
                    .fold(0, |b, (i, v)| if *v > r[b] { i } else { b }) as u32
            })
            .collect();
        Predictions::from_indices(labels, k, gold.to_vec(), pred, Some(proba.to_vec())).unwrap()
    }

    #[test]
    fn roc_and_pr_points_are_scikit_learns() {
        // sklearn.metrics.roc_curve([0,0,1,1], [0.1,0.4,0.35,0.8], drop_intermediate=False):
        // fpr [0, 0, .5, .5, 1], tpr [0, .5, .5, 1, 1]; precision_recall_curve: precision
        // [.5, .667, .5, 1, 1], recall [1, 1, .5, .5, 0]; AUC .75, AP .8333.
        let s = [0.1, 0.4, 0.35, 0.8];
        let proba: Vec<f64> = s.iter().flat_map(|&x| [1.0 - x, x]).collect();
        let c = curves(&preds(&[0, 0, 1, 1], &proba, 2), 10, None, 100).unwrap();
        assert_eq!(c.roc.len(), 1);
        assert_eq!(
            c.roc[0].points,
            vec![[0.0, 0.0], [0.0, 0.5], [0.5, 0.5], [0.5, 1.0], [1.0, 1.0]]
        );
        assert!((c.roc[0].area - 0.75).abs() < 1e-15);
        let pr: Vec<[f64; 2]> = c.pr[0].points.clone();
        let want = [
            [1.0, 0.5],
            [1.0, 2.0 / 3.0],
            [0.5, 0.5],
            [0.5, 1.0],
            [0.0, 1.0],
        ];
        for (a, b) in pr.iter().zip(want) {
            assert!(
                (a[0] - b[0]).abs() < 1e-15 && (a[1] - b[1]).abs() < 1e-15,
                "{pr:?}"
            );
        }
        assert!((c.pr[0].area - 0.8333333333333333).abs() < 1e-15);
    }

    #[test]
    fn areas_equal_the_evaluators_metrics_with_ties_and_many_classes() {
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as f64 / (1u64 << 31) as f64
        };
        let (n, k) = (300, 3);
        let mut proba = Vec::new();
        let mut gold = Vec::new();
        for i in 0..n {
            // Rounded to make ties.
            let raw: Vec<f64> = (0..k).map(|_| (next() * 8.0).round() + 0.5).collect();
            let s: f64 = raw.iter().sum();
            proba.extend(raw.iter().map(|x| x / s));
            gold.push(((next() * k as f64) as u32 + (i % 2) as u32) % k as u32);
        }
        let p = preds(&gold, &proba, k);
        let c = curves(&p, 15, None, 50).unwrap();
        let e = Evaluator::new(&p, &MetricOptions::default())
            .unwrap()
            .evaluate();
        let macro_auc: f64 = c.roc.iter().map(|r| r.area).sum::<f64>() / k as f64;
        let macro_ap: f64 = c.pr.iter().map(|r| r.area).sum::<f64>() / k as f64;
        assert!((macro_auc - e.get(Metric::RocAucOvrMacro).unwrap()).abs() < 1e-12);
        assert!((macro_ap - e.get(Metric::AveragePrecisionMacro).unwrap()).abs() < 1e-12);
        assert!(c.roc.iter().all(|r| r.points.len() <= 50));
        // ECE recomputed from the bins is the evaluator's.
        let ece: f64 = c
            .reliability
            .iter()
            .filter(|b| b.count > 0)
            .map(|b| {
                b.count as f64 / n as f64 * (b.accuracy.unwrap() - b.mean_confidence.unwrap()).abs()
            })
            .sum();
        assert!((ece - e.get(Metric::Ece).unwrap()).abs() < 1e-12);
        assert_eq!(c.reliability.iter().map(|b| b.count).sum::<u64>(), n as u64);
    }

    #[test]
    fn thinning_keeps_the_ends_and_at_most_max_points() {
        let pts: Vec<[f64; 2]> = (0..1000).map(|i| [i as f64, 0.0]).collect();
        let t = thin(pts, 7);
        assert_eq!(t.len(), 7);
        assert_eq!(t[0][0], 0.0);
        assert_eq!(t[6][0], 999.0);
    }

    #[test]
    fn no_probabilities_no_curves_and_one_class_no_roc() {
        let labels = LabelSet::new(vec!["a".into(), "b".into()]).unwrap();
        let p = Predictions::from_indices(labels, 2, vec![0, 1], vec![0, 0], None).unwrap();
        assert!(curves(&p, 10, None, 10).is_none());
        let c = curves(&preds(&[0, 0], &[0.7, 0.3, 0.4, 0.6], 2), 10, None, 10).unwrap();
        assert!(c.roc.is_empty() && c.pr.is_empty());
        assert_eq!(c.reliability.len(), 10);
    }
}
