//! The lmcompare pipeline as a library.
//!
//! ```text
//! config (CompareConfig, TuneConfig, MetricsConfig)
//!   └─ models::resolve ── once per --model ──► Resolved::Encoder | Resolved::Generative(dyn GenerativeModel)
//!        └─ tasks (encoder, loglik, generation, perplexity) build requests, score answers
//!             └─ cache::CachedModel / cached_vectors: every answer through the store
//!                  └─ runner: RunContext (run, resume, progress), ModelRun, efficiency
//!                       └─ report::comparison_doc ── metrics crate ──► the report document
//! ```
//!
//! The command line is one front end: it turns arguments into a config, calls
//! [`compare`], [`tune::tune`], [`score_files::score_files`] or an [`inspect`] function, and
//! hands the document to an exporter of the `lmcompare-report` crate.

mod cache;
pub mod compare;
pub mod config;
mod error;
pub mod explain;
pub mod inspect;
pub mod leaderboard;
pub mod models;
pub mod prediction_files;
pub mod report;
pub mod runner;
pub mod score_files;
pub mod stored;
pub mod tasks;
pub mod tune;

pub use cache::{sha, Answers, CachedModel};
pub use compare::compare;
pub use error::{Error, Result};
