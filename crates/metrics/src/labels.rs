use std::collections::HashMap;

use crate::MetricsError;

/// An ordered set of class labels. Index order is the order of every per-class output, of
/// probability columns and of the confusion matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelSet {
    names: Vec<String>,
    index: HashMap<String, u32>,
}

impl LabelSet {
    pub fn new(names: Vec<String>) -> Result<Self, MetricsError> {
        let mut index = HashMap::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            if index.insert(name.clone(), i as u32).is_some() {
                return Err(MetricsError::DuplicateLabel(name.clone()));
            }
        }
        Ok(LabelSet { names, index })
    }

    /// scikit-learn's default: the sorted union of every label seen. Rust's `str` ordering is
    /// by UTF-8 bytes, which equals NumPy's code-point order for Unicode strings.
    pub fn sorted_union<'a, I: IntoIterator<Item = &'a str>>(labels: I) -> Self {
        // Deduplicate before sorting: inputs are one label per example, outputs a handful.
        let unique: std::collections::HashSet<&str> = labels.into_iter().collect();
        let mut names: Vec<String> = unique.into_iter().map(str::to_owned).collect();
        names.sort_unstable();
        // Cannot fail: deduplicated above.
        LabelSet::new(names).unwrap_or_else(|_| unreachable!())
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn name(&self, index: u32) -> &str {
        &self.names[index as usize]
    }

    pub fn index_of(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }
}

/// One model's outputs on a labelled set, encoded against a label set.
///
/// `labels` is the *universe* of labels (every label that occurs, plus any listed by the
/// user); the first `selected` of them are the ones averaged over and reported per class.
/// They differ only when the user lists a subset of the labels that occur, as
/// scikit-learn's `labels=` allows.
#[derive(Debug, Clone)]
pub struct Predictions {
    labels: LabelSet,
    selected: usize,
    gold: Vec<u32>,
    pred: Vec<u32>,
    proba: Option<Vec<f64>>,
}

impl Predictions {
    /// Encodes string labels. `explicit` fixes the reported label set and its order;
    /// otherwise it is the sorted union of gold and predicted labels.
    pub fn from_strings(
        gold: &[&str],
        pred: &[&str],
        explicit: Option<&[String]>,
    ) -> Result<Self, MetricsError> {
        if gold.len() != pred.len() {
            return Err(MetricsError::Shape {
                what: "predictions",
                got: pred.len(),
                expected: gold.len(),
            });
        }
        let (labels, selected) = match explicit {
            Some(listed) => {
                let mut names: Vec<String> = listed.to_vec();
                let listed_set = LabelSet::new(names.clone())?;
                let mut rest: Vec<&str> = gold
                    .iter()
                    .chain(pred.iter())
                    .copied()
                    .filter(|l| listed_set.index_of(l).is_none())
                    .collect();
                rest.sort_unstable();
                rest.dedup();
                names.extend(rest.into_iter().map(str::to_owned));
                (LabelSet::new(names)?, listed.len())
            }
            None => {
                let set = LabelSet::sorted_union(gold.iter().chain(pred.iter()).copied());
                let k = set.len();
                (set, k)
            }
        };
        let encode = |v: &[&str]| -> Vec<u32> {
            v.iter()
                .map(|l| labels.index_of(l).unwrap_or_else(|| unreachable!()))
                .collect()
        };
        let gold = encode(gold);
        let pred = encode(pred);
        Self::from_indices(labels, selected, gold, pred, None)
    }

    /// `proba`, when present, is row-major `n × labels.len()`.
    pub fn from_indices(
        labels: LabelSet,
        selected: usize,
        gold: Vec<u32>,
        pred: Vec<u32>,
        proba: Option<Vec<f64>>,
    ) -> Result<Self, MetricsError> {
        let k = labels.len();
        if gold.len() != pred.len() {
            return Err(MetricsError::Shape {
                what: "predictions",
                got: pred.len(),
                expected: gold.len(),
            });
        }
        if let Some(p) = &proba {
            if p.len() != gold.len() * k {
                return Err(MetricsError::Shape {
                    what: "probabilities",
                    got: p.len(),
                    expected: gold.len() * k,
                });
            }
            for (i, &v) in p.iter().enumerate() {
                if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                    return Err(MetricsError::BadProbability {
                        example: i / k,
                        label: labels.name((i % k) as u32).to_owned(),
                        value: v,
                    });
                }
            }
        }
        assert!(selected <= k, "selected labels exceed the label set");
        debug_assert!(gold.iter().chain(pred.iter()).all(|&g| (g as usize) < k));
        Ok(Predictions {
            labels,
            selected,
            gold,
            pred,
            proba,
        })
    }

    pub fn with_probabilities(self, proba: Vec<f64>) -> Result<Self, MetricsError> {
        Self::from_indices(
            self.labels,
            self.selected,
            self.gold,
            self.pred,
            Some(proba),
        )
    }

    pub fn len(&self) -> usize {
        self.gold.len()
    }

    pub fn is_empty(&self) -> bool {
        self.gold.is_empty()
    }

    pub fn labels(&self) -> &LabelSet {
        &self.labels
    }

    /// Number of labels reported and averaged over (a prefix of `labels()`).
    pub fn selected(&self) -> usize {
        self.selected
    }

    pub fn gold(&self) -> &[u32] {
        &self.gold
    }

    pub fn pred(&self) -> &[u32] {
        &self.pred
    }

    pub fn proba(&self) -> Option<&[f64]> {
        self.proba.as_deref()
    }
}
