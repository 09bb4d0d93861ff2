//! `metrics`: prediction files from any model (JSONL/CSV/TSV), aligned by example id and
//! scored: every metric with bootstrap intervals, and paired tests between files.

use std::path::PathBuf;

use lmcompare_metrics::{
    score_models, BootstrapOptions, Correction, EceStrategy, Metric, MetricOptions, ScoreOptions,
    Scorecard, ZeroDivision,
};

use lmcompare_report::doc::Details;

use crate::prediction_files::{align, parse_prediction_file, read_text};
use crate::report::details;
use crate::{bad, Error, Result};

/// Everything `metrics` needs.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub pred: Vec<PathBuf>,
    /// Display names, one per file (default: the file stems).
    pub name: Vec<String>,
    pub labels: Option<Vec<String>>,
    pub pos_label: Option<String>,
    pub zero_division: ZeroDivision,
    pub bootstrap: usize,
    pub permutations: usize,
    pub seed: u64,
    pub confidence: f64,
    pub metric: Metric,
    pub correction: Correction,
    pub ece_bins: usize,
    pub ece_strategy: EceStrategy,
    /// Examples kept for the HTML report's examples table.
    pub html_examples: usize,
}

/// The scorecard of the prediction files, with what the HTML report draws.
pub struct ScoredFiles {
    pub card: Scorecard,
    /// Curves of each file with probabilities, and a sample of examples (ids, no texts).
    pub details: Details,
}

impl ScoredFiles {
    /// The `metrics` JSON document; with `details`, the curves and examples too.
    pub fn document(&self, details: bool) -> serde_json::Value {
        let mut doc = lmcompare_report::metrics_json(&self.card);
        if details {
            doc["details"] = serde_json::to_value(&self.details).unwrap_or_default();
        }
        doc
    }
}

pub fn score_files(cfg: &MetricsConfig) -> Result<ScoredFiles> {
    if !cfg.name.is_empty() && cfg.name.len() != cfg.pred.len() {
        return Err(bad!(
            "--name was given {} time(s) for {} --pred file(s); give one name per file or none",
            cfg.name.len(),
            cfg.pred.len()
        ));
    }
    if !(cfg.confidence > 0.0 && cfg.confidence < 1.0) {
        return Err(bad!(
            "--confidence must be in (0, 1), not {}",
            cfg.confidence
        ));
    }
    if cfg.ece_bins == 0 {
        return Err(bad!("--ece-bins must be at least 1"));
    }
    let names: Vec<String> = if cfg.name.is_empty() {
        cfg.pred
            .iter()
            .map(|p| {
                p.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| p.display().to_string())
            })
            .collect()
    } else {
        cfg.name.clone()
    };
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return Err(bad!(
                "two prediction files are both named {n:?}; name them with --name"
            ));
        }
    }
    let bad_input = |e: crate::prediction_files::InputError| Error::BadInput(e.to_string());
    let texts = cfg
        .pred
        .iter()
        .map(|p| read_text(p))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(bad_input)?;
    let files = cfg
        .pred
        .iter()
        .zip(&texts)
        .map(|(p, t)| parse_prediction_file(p, t))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(bad_input)?;
    let predictions = align(&files, cfg.labels.as_deref()).map_err(bad_input)?;
    let has_probs = predictions.iter().all(|p| p.proba().is_some());
    if cfg.metric.needs_probabilities() && !has_probs && predictions.len() > 1 {
        return Err(bad!(
            "--metric {} needs probabilities in every prediction file",
            cfg.metric
        ));
    }
    let opts = ScoreOptions {
        metric: MetricOptions {
            zero_division: cfg.zero_division,
            pos_label: cfg.pos_label.clone(),
            ece_bins: cfg.ece_bins,
            ece_strategy: cfg.ece_strategy,
        },
        bootstrap: BootstrapOptions {
            resamples: cfg.bootstrap,
            seed: cfg.seed,
            confidence: cfg.confidence,
        },
        permutations: cfg.permutations,
        main_metric: cfg.metric,
        correction: cfg.correction,
    };
    let models: Vec<(String, _)> = names.into_iter().zip(predictions).collect();
    let mut card = score_models(&models, &opts).map_err(|e| bad!("{e}"))?;
    if let Some(listed) = &cfg.labels {
        for (f, m) in files.iter().zip(card.models.iter_mut()) {
            let outside: Vec<&str> = f
                .rows
                .iter()
                .filter(|r| {
                    !listed.iter().any(|l| *l == *r.label)
                        || !listed.iter().any(|l| *l == *r.prediction)
                })
                .map(|r| &*r.id)
                .collect();
            if !outside.is_empty() {
                let shown: Vec<&str> = outside.iter().take(5).copied().collect();
                m.evaluation.warnings.push(format!(
                    "--labels averages over {}; {} example(s) have a gold label or prediction outside it (ids {}{}): they count as false positives or negatives of the listed labels, as scikit-learn's labels= does, and are left out of the per-class table",
                    listed.join(", "),
                    outside.len(),
                    shown.join(", "),
                    if outside.len() > shown.len() { ", …" } else { "" }
                ));
            }
        }
    }
    // Rows are aligned in the first file's order.
    let ids: Vec<&str> = files[0].rows.iter().map(|r| &*r.id).collect();
    let pos = cfg
        .pos_label
        .as_deref()
        .and_then(|l| models[0].1.labels().index_of(l))
        .map(|i| i as usize);
    let details = details(&models, None, &ids, cfg.html_examples, cfg.ece_bins, pos);
    Ok(ScoredFiles { card, details })
}
