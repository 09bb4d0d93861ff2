use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use lmcompare_metrics::{
    score_models, BootstrapOptions, Correction, EceStrategy, Metric, MetricOptions, ScoreOptions,
    ZeroDivision,
};
use lmcompare_report::{metrics_json, render_markdown, render_table, Format};

use crate::prediction_files::{align, parse_prediction_file, read_text};
use crate::{emit, resolve_format, BadInput};

#[derive(Args)]
pub struct MetricsArgs {
    /// Prediction file (JSONL with id, label, prediction[, probabilities]; or CSV/TSV with
    /// columns id,label,prediction[,p:<label>...]). Repeat to compare models.
    #[arg(long = "pred", required = true, value_name = "FILE")]
    pred: Vec<PathBuf>,
    /// Display name of each --pred file, in order (default: the file stem).
    #[arg(long = "name", value_name = "NAME")]
    name: Vec<String>,
    /// The label set and its order (comma-separated); default: sorted union of all labels.
    #[arg(long, value_delimiter = ',', value_name = "LABELS")]
    labels: Option<Vec<String>>,
    /// Positive label: adds average="binary" precision/recall/f1 and fixes the positive
    /// class of binary ROC-AUC, average precision and Brier.
    #[arg(long, value_name = "LABEL")]
    pos_label: Option<String>,
    /// Value of a 0/0 ratio in precision/recall/F1: 0, 1 or nan (nan drops it from averages).
    #[arg(long, default_value = "0")]
    zero_division: ZeroDivision,
    /// Bootstrap resamples for confidence intervals (0 turns them off).
    #[arg(long, default_value_t = 1000)]
    bootstrap: usize,
    /// Paired permutation-test rounds per pair (0 turns the test off).
    #[arg(long, default_value_t = 1000)]
    permutations: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Confidence level of the intervals.
    #[arg(long, default_value_t = 0.95)]
    confidence: f64,
    /// Metric compared between models.
    #[arg(long, default_value = "f1_macro")]
    metric: Metric,
    /// Multiple-comparison correction across pairs: holm, bh or none.
    #[arg(long, default_value = "holm")]
    correction: Correction,
    #[arg(long, default_value_t = 15)]
    ece_bins: usize,
    /// uniform (equal-width) or quantile (equal-count; HELM uses 10 bins).
    #[arg(long, default_value = "uniform")]
    ece_strategy: EceStrategy,
    /// table (default on a terminal), json (default otherwise) or markdown.
    #[arg(long)]
    format: Option<Format>,
}

pub fn run(args: MetricsArgs) -> Result<()> {
    if !args.name.is_empty() && args.name.len() != args.pred.len() {
        return Err(BadInput(format!(
            "--name was given {} time(s) for {} --pred file(s); give one name per file or none",
            args.name.len(),
            args.pred.len()
        ))
        .into());
    }
    if !(args.confidence > 0.0 && args.confidence < 1.0) {
        return Err(BadInput(format!(
            "--confidence must be in (0, 1), not {}",
            args.confidence
        ))
        .into());
    }
    if args.ece_bins == 0 {
        return Err(BadInput("--ece-bins must be at least 1".into()).into());
    }
    let names: Vec<String> = if args.name.is_empty() {
        args.pred
            .iter()
            .map(|p| {
                p.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| p.display().to_string())
            })
            .collect()
    } else {
        args.name.clone()
    };
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return Err(BadInput(format!(
                "two prediction files are both named {n:?}; name them with --name"
            ))
            .into());
        }
    }
    let texts = args
        .pred
        .iter()
        .map(|p| read_text(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BadInput(e.to_string()))?;
    let files = args
        .pred
        .iter()
        .zip(&texts)
        .map(|(p, t)| parse_prediction_file(p, t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BadInput(e.to_string()))?;
    let predictions = align(&files, args.labels.as_deref()).map_err(|e| BadInput(e.to_string()))?;
    let has_probs = predictions.iter().all(|p| p.proba().is_some());
    if args.metric.needs_probabilities() && !has_probs && predictions.len() > 1 {
        return Err(BadInput(format!(
            "--metric {} needs probabilities in every prediction file",
            args.metric
        ))
        .into());
    }
    let opts = ScoreOptions {
        metric: MetricOptions {
            zero_division: args.zero_division,
            pos_label: args.pos_label.clone(),
            ece_bins: args.ece_bins,
            ece_strategy: args.ece_strategy,
        },
        bootstrap: BootstrapOptions {
            resamples: args.bootstrap,
            seed: args.seed,
            confidence: args.confidence,
        },
        permutations: args.permutations,
        main_metric: args.metric,
        correction: args.correction,
    };
    let models: Vec<(String, _)> = names.into_iter().zip(predictions).collect();
    let card = score_models(&models, &opts).map_err(|e| BadInput(e.to_string()))?;
    let text = match resolve_format(args.format) {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&metrics_json(&card))?;
            s.push('\n');
            s
        }
        Format::Table => render_table(&card),
        Format::Markdown => render_markdown(&card),
    };
    emit(&text)
}
