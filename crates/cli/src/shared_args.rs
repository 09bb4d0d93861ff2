//! Argument groups several commands take, and their configs.

use clap::Args;
use lmcompare_metrics::Correction;
use lmcompare_pipeline::config::{ColumnNames, StatsConfig};

/// How intervals and tests are computed.
#[derive(Args, Clone)]
pub struct StatsArgs {
    /// Bootstrap resamples for confidence intervals (0: none).
    #[arg(long, value_parser = crate::numbers::resamples, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Permutations for the paired permutation test (0: none).
    #[arg(long, value_parser = crate::numbers::resamples, default_value_t = 1000)]
    pub permutations: usize,
    #[arg(long, default_value = "holm")]
    pub correction: Correction,
}

impl StatsArgs {
    pub fn config(&self) -> StatsConfig {
        StatsConfig {
            bootstrap: self.bootstrap,
            permutations: self.permutations,
            correction: self.correction,
        }
    }
}

/// Which columns of a data file hold what.
#[derive(Args, Clone)]
pub struct ColumnArgs {
    #[arg(long, default_value = "text")]
    pub text_col: String,
    #[arg(long, default_value = "label")]
    pub label_col: String,
    /// Column with train/validation/test; without it, a seeded stratified train/test split.
    #[arg(long, default_value = "split")]
    pub split_col: String,
    #[arg(long, default_value = "id")]
    pub id_col: String,
}

impl ColumnArgs {
    pub fn config(&self) -> ColumnNames {
        ColumnNames {
            text_col: self.text_col.clone(),
            label_col: self.label_col.clone(),
            split_col: self.split_col.clone(),
            id_col: self.id_col.clone(),
        }
    }
}
