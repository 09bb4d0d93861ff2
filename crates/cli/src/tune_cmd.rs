//! `tune`: arguments → [`TuneConfig`] → the pipeline → an exporter.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use lmcompare_metrics::Metric;
use lmcompare_pipeline::config::{
    PrunerKind, SearchKind, TuneConfig, DEFAULT_BASELINE, DEFAULT_SPACE,
};
use lmcompare_report::Format;

use crate::output::render_tune;
use crate::shared_args::{ColumnArgs, StatsArgs};

#[derive(Args, Clone)]
pub struct TuneArgs {
    /// A model to tune, as NAME=SPEC or SPEC (a folder with safetensors or .bin weights, or
    /// hf:org/name). Repeat to tune several and compare their tuned heads.
    #[arg(long = "model", required = true, value_name = "NAME=SPEC")]
    pub models: Vec<String>,
    /// Labelled data: JSONL, CSV or TSV (optionally .gz/.bz2), or Parquet.
    #[arg(long)]
    pub data: PathBuf,
    #[command(flatten)]
    pub cols: ColumnArgs,
    #[arg(long, value_enum, default_value = "random")]
    pub search: SearchKind,
    /// The search space, e.g. 'lr=log(1e-5,1e-2);batch_size=[16,32];optimizer=[adam,adamw]'.
    #[arg(long, default_value = DEFAULT_SPACE)]
    pub space: String,
    /// Trials per model (default: the whole grid for grid search, else 20). A larger
    /// number later extends a finished search.
    #[arg(long, value_parser = crate::numbers::positive)]
    pub trials: Option<usize>,
    /// Selection metric (on validation), also the comparison's main metric.
    #[arg(long, default_value = "f1_macro")]
    pub metric: Metric,
    #[arg(long, value_enum, default_value = "auto")]
    pub pruner: PrunerKind,
    /// Stop a trial after this many epochs without improvement (0: never).
    #[arg(long, value_parser = crate::numbers::count, default_value_t = 3)]
    pub patience: usize,
    /// Smallest change that counts as an improvement for early stopping.
    #[arg(long, value_parser = crate::numbers::non_negative_real, default_value_t = 0.0)]
    pub min_delta: f64,
    /// Folds of cross-validation on the train split when the data has no validation split.
    #[arg(long, value_parser = crate::numbers::positive, default_value_t = 5)]
    pub folds: usize,
    /// The untuned baseline's settings (search-space syntax, single values); default: a
    /// Hugging Face Trainer's defaults.
    #[arg(long, default_value = DEFAULT_BASELINE)]
    pub baseline: String,
    /// What is trained: 0 = the classification head on frozen features.
    #[arg(long, default_value = "0")]
    pub unfreeze: String,
    /// Folder for the tuned models (one HF-style folder per model).
    #[arg(long, default_value = "tuned")]
    pub save: PathBuf,
    #[arg(long, value_parser = crate::numbers::seed, default_value_t = 0)]
    pub seed: u64,
    /// Use at most N examples of each split (file order).
    #[arg(long, value_parser = crate::numbers::positive)]
    pub limit: Option<usize>,
    #[arg(long, value_parser = crate::numbers::max_length)]
    pub max_length: Option<usize>,
    /// Test fraction of the stratified split when the data has no split column.
    #[arg(long, value_parser = crate::numbers::fraction, default_value_t = 0.2)]
    pub test_size: f64,
    /// Batch size of the encoder's forward passes (not a training hyperparameter).
    #[arg(long, value_parser = crate::numbers::positive, default_value_t = 32)]
    pub infer_batch_size: usize,
    #[arg(long, default_value = "lmcompare.db")]
    pub db: PathBuf,
    /// Also write tune.json, tune.md and report.html into this folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// table, json, markdown or html (trials, learning curves, the tuned-vs-untuned
    /// comparison).
    #[arg(long)]
    pub format: Option<Format>,
    /// Test examples kept for the report's examples table (disagreements first).
    #[arg(long, value_parser = crate::numbers::count, default_value_t = 500)]
    pub html_examples: usize,
    #[command(flatten)]
    pub stats: StatsArgs,
    #[arg(long)]
    pub quiet: bool,
}

impl TuneArgs {
    fn config(&self) -> TuneConfig {
        TuneConfig {
            models: self.models.clone(),
            data: self.data.clone(),
            cols: self.cols.config(),
            search: self.search,
            space: self.space.clone(),
            trials: self.trials,
            metric: self.metric,
            pruner: self.pruner,
            patience: self.patience,
            min_delta: self.min_delta,
            folds: self.folds,
            baseline: self.baseline.clone(),
            unfreeze: self.unfreeze.clone(),
            save: self.save.clone(),
            seed: self.seed,
            limit: self.limit,
            max_length: self.max_length,
            test_size: self.test_size,
            infer_batch_size: self.infer_batch_size,
            db: self.db.clone(),
            stats: self.stats.config(),
            quiet: self.quiet,
            html_examples: self.html_examples,
        }
    }
}

pub fn run(args: TuneArgs) -> Result<()> {
    let doc = lmcompare_pipeline::tune::tune(&args.config())?;
    render_tune(&doc, args.format, args.out.as_deref())
}
