//! Classification metrics, calibration, bootstrap confidence intervals and paired
//! significance tests for comparing models on the same examples.
//!
//! Conventions follow scikit-learn 1.9 exactly (label sets, `zero_division`, NaN handling,
//! clipping); the committed fixtures in `tests/fixtures/` hold its values and the tests
//! compare every number to 1e-9. No ML dependencies live here, so this crate builds and
//! tests in seconds.

mod bootstrap;
pub mod choice;
mod classification;
pub mod curves;
mod error;
mod evaluator;
pub mod invalid;
mod labels;
mod metric;
mod paired;
pub mod pareto;
mod probabilistic;
mod ranking;
pub mod stats;
pub mod text_match;
pub mod unit_bootstrap;

pub use bootstrap::{bootstrap_intervals, BootstrapOptions, Interval};
pub use classification::{ClassStats, ZeroDivision};
pub use error::MetricsError;
pub use evaluator::{EceStrategy, Evaluation, Evaluator, MetricOptions};
pub use labels::{LabelSet, Predictions};
pub use metric::Metric;
pub use paired::{
    compare_pair, mcnemar, McNemar, McNemarMethod, MetricDelta, PairedOptions, PairedResult,
};
pub use ranking::{rank_shares, RankShare};
pub use scorecard::{score_models, ModelScore, PairScore, ScoreOptions, Scorecard};
pub use stats::{adjust_p_values, Correction};
mod scorecard;
