//! Metric identities that must hold for any input.

use lmcompare_metrics::{
    bootstrap_intervals, compare_pair, BootstrapOptions, Evaluator, LabelSet, Metric,
    MetricOptions, PairedOptions, Predictions,
};
use proptest::prelude::*;

fn labels(k: usize) -> LabelSet {
    LabelSet::new((0..k).map(|i| format!("c{i}")).collect()).unwrap()
}

/// Random (gold, pred, probability rows) over k labels.
fn dataset() -> impl Strategy<Value = (usize, Vec<u32>, Vec<u32>, Vec<f64>)> {
    (2usize..6).prop_flat_map(|k| {
        (1usize..80).prop_flat_map(move |n| {
            (
                Just(k),
                prop::collection::vec(0..k as u32, n),
                prop::collection::vec(0..k as u32, n),
                prop::collection::vec(0.01f64..1.0, n * k),
            )
        })
    })
}

fn normalise(raw: &[f64], k: usize) -> Vec<f64> {
    raw.chunks(k)
        .flat_map(|r| {
            let s: f64 = r.iter().sum();
            r.iter().map(move |v| v / s).collect::<Vec<_>>()
        })
        .collect()
}

fn eval(k: usize, gold: &[u32], pred: &[u32], proba: Option<Vec<f64>>) -> Vec<(Metric, f64)> {
    let p = Predictions::from_indices(labels(k), k, gold.to_vec(), pred.to_vec(), proba).unwrap();
    Evaluator::new(&p, &MetricOptions::default())
        .unwrap()
        .evaluate()
        .metrics
}

fn same(a: f64, b: f64, tol: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= tol
}

proptest! {
    #[test]
    fn micro_f1_equals_accuracy((k, gold, pred, _) in dataset()) {
        let m = eval(k, &gold, &pred, None);
        let get = |x: Metric| m.iter().find(|(y, _)| *y == x).unwrap().1;
        prop_assert!(same(get(Metric::F1Micro), get(Metric::Accuracy), 1e-12));
        prop_assert!(same(get(Metric::PrecisionMicro), get(Metric::Accuracy), 1e-12));
        prop_assert!(same(get(Metric::RecallMicro), get(Metric::Accuracy), 1e-12));
    }

    #[test]
    fn invariant_to_row_order((k, gold, pred, raw) in dataset(), seed in any::<u64>()) {
        let proba = normalise(&raw, k);
        let n = gold.len();
        let mut perm: Vec<usize> = (0..n).collect();
        // Fisher–Yates with a tiny LCG: deterministic per case.
        let mut s = seed | 1;
        for i in (1..n).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            perm.swap(i, (s >> 33) as usize % (i + 1));
        }
        let g2: Vec<u32> = perm.iter().map(|&i| gold[i]).collect();
        let p2: Vec<u32> = perm.iter().map(|&i| pred[i]).collect();
        let q2: Vec<f64> = perm.iter().flat_map(|&i| proba[i * k..(i + 1) * k].to_vec()).collect();
        let a = eval(k, &gold, &pred, Some(proba.clone()));
        let b = eval(k, &g2, &p2, Some(q2));
        for ((m, x), (_, y)) in a.iter().zip(&b) {
            if *m == Metric::Ece {
                continue; // equal-width bins are order-free, but ties at bin edges are not
            }
            prop_assert!(same(*x, *y, 1e-9), "{m}: {x} vs {y}");
        }
    }

    #[test]
    fn invariant_to_label_renaming((k, gold, pred, raw) in dataset(), rot in 1usize..5) {
        // A cyclic relabelling changes the sorted order of the labels, so the per-class rows
        // move; every order-free metric must stay the same.
        let proba = normalise(&raw, k);
        let r = rot % k;
        let map = |c: u32| ((c as usize + r) % k) as u32;
        let g2: Vec<u32> = gold.iter().map(|&c| map(c)).collect();
        let p2: Vec<u32> = pred.iter().map(|&c| map(c)).collect();
        let mut q2 = vec![0.0; proba.len()];
        for i in 0..gold.len() {
            for c in 0..k {
                q2[i * k + map(c as u32) as usize] = proba[i * k + c];
            }
        }
        let a = eval(k, &gold, &pred, Some(proba.clone()));
        let b = eval(k, &g2, &p2, Some(q2));
        for ((m, x), (_, y)) in a.iter().zip(&b) {
            if matches!(m, Metric::CohenKappaLinear | Metric::CohenKappaQuadratic) {
                continue; // these weight disagreements by label order, by definition
            }
            if k == 2 && m.needs_probabilities() && !matches!(m, Metric::LogLoss) {
                continue; // binary: the positive class is the greater label, which moves
            }
            if *m == Metric::Ece {
                continue; // argmax ties break towards the first label, which moves
            }
            prop_assert!(same(*x, *y, 1e-9), "{m}: {x} vs {y}");
        }
    }

    #[test]
    fn perfect_predictor_scores_one((k, gold, _, _) in dataset()) {
        let m = eval(k, &gold, &gold, None);
        let distinct = {
            let mut g = gold.clone();
            g.sort();
            g.dedup();
            g.len()
        };
        for (metric, v) in m {
            let expect_one = match metric {
                Metric::Mcc | Metric::CohenKappa | Metric::CohenKappaLinear | Metric::CohenKappaQuadratic => distinct >= 2,
                // labels of the label set that never occur hit zero_division = 0 in macro averages
                Metric::PrecisionMacro | Metric::RecallMacro | Metric::F1Macro => distinct == k,
                _ => true,
            };
            if expect_one {
                prop_assert!((v - 1.0).abs() < 1e-12, "{metric} = {v}");
            }
        }
    }

    #[test]
    fn identical_models_are_not_different((k, gold, pred, raw) in dataset()) {
        let proba = normalise(&raw, k);
        let p = Predictions::from_indices(labels(k), k, gold.clone(), pred.clone(), Some(proba)).unwrap();
        let opts = PairedOptions {
            bootstrap: BootstrapOptions { resamples: 50, seed: 1, confidence: 0.95 },
            permutations: 50,
            metric: Metric::Accuracy,
        };
        let r = compare_pair(&p, &p, &MetricOptions::default(), &opts).unwrap();
        prop_assert_eq!(r.mcnemar.p_value, 1.0);
        prop_assert_eq!(r.delta, 0.0);
        prop_assert_eq!(r.permutation_p, 1.0);
        prop_assert_eq!(r.bootstrap_p, 1.0);
    }
}

#[test]
fn bootstrap_is_reproducible_and_independent_of_thread_count() {
    let gold: Vec<u32> = (0..500).map(|i| (i * 7 % 3) as u32).collect();
    let pred: Vec<u32> = (0..500).map(|i| (i * 11 % 3) as u32).collect();
    let raw: Vec<f64> = (0..1500)
        .map(|i| ((i * 37 % 101) as f64 + 1.0) / 102.0)
        .collect();
    let p = Predictions::from_indices(labels(3), 3, gold, pred, Some(normalise(&raw, 3))).unwrap();
    let ev = Evaluator::new(&p, &MetricOptions::default()).unwrap();
    let opts = BootstrapOptions {
        resamples: 200,
        seed: 42,
        confidence: 0.9,
    };
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let two = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let a = one.install(|| bootstrap_intervals(&ev, &opts));
    let b = two.install(|| bootstrap_intervals(&ev, &opts));
    assert_eq!(a, b);
    let c = bootstrap_intervals(&ev, &BootstrapOptions { seed: 43, ..opts });
    assert_ne!(a, c, "a different seed must give different resamples");
    let point = ev.evaluate();
    for (m, iv) in &a {
        let v = point.get(*m).unwrap();
        assert!(iv.low <= iv.high, "{m}");
        assert!(iv.defined > 0, "{m}");
        // Not a theorem, but a 90% interval far from the point estimate on 500 examples
        // would mean the resampling is broken.
        assert!(
            iv.low - 0.05 <= v && v <= iv.high + 0.05,
            "{m}: {v} outside {iv:?}"
        );
    }
}

#[test]
fn confidence_interval_narrows_with_more_data() {
    let make = |n: usize| {
        let gold: Vec<u32> = (0..n).map(|i| (i % 2) as u32).collect();
        let pred: Vec<u32> = (0..n)
            .map(|i| {
                if i % 5 == 0 {
                    1 - (i % 2) as u32
                } else {
                    (i % 2) as u32
                }
            })
            .collect();
        let p = Predictions::from_indices(labels(2), 2, gold, pred, None).unwrap();
        let ev = Evaluator::new(&p, &MetricOptions::default()).unwrap();
        let iv = bootstrap_intervals(&ev, &BootstrapOptions::default());
        let acc = iv.iter().find(|(m, _)| *m == Metric::Accuracy).unwrap().1;
        acc.high - acc.low
    };
    let (small, large) = (make(100), make(10_000));
    assert!(large < small / 5.0, "{large} vs {small}");
}
