//! `metrics`: arguments → [`MetricsConfig`] → the pipeline → an exporter.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use lmcompare_metrics::{Correction, EceStrategy, Metric, ZeroDivision};
use lmcompare_pipeline::score_files::{score_files, MetricsConfig};
use lmcompare_report::{render_markdown, render_metrics_html, render_table, Format};

use crate::output::{emit, pretty, resolve_format, write_files};

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
    #[arg(long, value_parser = crate::numbers::resamples, default_value_t = 1000)]
    bootstrap: usize,
    /// Paired permutation-test rounds per pair (0 turns the test off).
    #[arg(long, value_parser = crate::numbers::resamples, default_value_t = 1000)]
    permutations: usize,
    #[arg(long, value_parser = crate::numbers::seed, default_value_t = 0)]
    seed: u64,
    /// Confidence level of the intervals.
    #[arg(long, value_parser = crate::numbers::fraction, default_value_t = 0.95)]
    confidence: f64,
    /// Metric compared between models.
    #[arg(long, default_value = "f1_macro")]
    metric: Metric,
    /// Multiple-comparison correction across pairs: holm, bh or none.
    #[arg(long, default_value = "holm")]
    correction: Correction,
    #[arg(long, value_parser = crate::numbers::positive, default_value_t = 15)]
    ece_bins: usize,
    /// uniform (equal-width) or quantile (equal-count; HELM uses 10 bins).
    #[arg(long, default_value = "uniform")]
    ece_strategy: EceStrategy,
    /// table (default on a terminal), json (default otherwise), markdown or html (charts;
    /// to stdout, or DIR/report.html with --out).
    #[arg(long)]
    format: Option<Format>,
    /// Also write report.json, report.md and report.html into this folder.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Examples kept for the HTML report's examples table (disagreements first).
    #[arg(long, value_parser = crate::numbers::count, default_value_t = 500)]
    html_examples: usize,
}

pub fn run(args: MetricsArgs) -> Result<()> {
    let scored = score_files(&MetricsConfig {
        pred: args.pred,
        name: args.name,
        labels: args.labels,
        pos_label: args.pos_label,
        zero_division: args.zero_division,
        bootstrap: args.bootstrap,
        permutations: args.permutations,
        seed: args.seed,
        confidence: args.confidence,
        metric: args.metric,
        correction: args.correction,
        ece_bins: args.ece_bins,
        ece_strategy: args.ece_strategy,
        html_examples: args.html_examples,
    })?;
    let card = &scored.card;
    let html = || render_metrics_html(&scored.document(true));
    if let Some(dir) = &args.out {
        write_files(
            dir,
            &[
                ("report.json", pretty(&scored.document(false))?),
                ("report.md", render_markdown(card)),
                ("report.html", html()),
            ],
        )?;
    }
    match resolve_format(args.format) {
        Format::Json => emit(&pretty(&scored.document(false))?),
        Format::Table => emit(&render_table(card)),
        Format::Markdown => emit(&render_markdown(card)),
        Format::Html if args.out.is_some() => {
            eprintln!(
                "wrote {}",
                args.out.unwrap_or_default().join("report.html").display()
            );
            Ok(())
        }
        Format::Html => emit(&html()),
    }
}
