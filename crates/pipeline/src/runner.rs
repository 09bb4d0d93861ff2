//! What every task shares when it runs a model: the run in the store (resume), progress
//! bars, the per-model result the comparison is built from, and the efficiency block.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lmcompare_engine::data::{Dataset, Example, Split};
use lmcompare_engine::profile::percentile;
use lmcompare_engine::store::{Store, StoredPrediction};
use lmcompare_report::doc::Efficiency;
use serde_json::Value;

use crate::models::{GenerativeModel, ScoringCost};
use crate::Result;

/// The predicted label of a generated answer that names no dataset label.
pub const INVALID: &str = "invalid";

/// The run being written: where predictions go and how models are batched.
pub struct RunContext<'s> {
    pub store: &'s mut Store,
    pub run_id: i64,
    pub batch_size: usize,
    pub quiet: bool,
}

/// One model's outcome on the test examples: what the comparison is built from.
pub struct ModelRun {
    pub name: String,
    pub spec: String,
    pub predictions: Vec<StoredPrediction>,
    /// Test examples computed now and reused from the store.
    pub computed: usize,
    pub reused: usize,
    pub efficiency: Efficiency,
    pub backend: String,
    pub invariance: Option<f64>,
    /// Test examples without a prediction: (id, why).
    pub failed: Vec<(String, String)>,
    /// Task-specific results merged into the model's block (e.g. multiple-choice tallies).
    pub extra: Value,
    /// What the user should know about this model's results (e.g. truncated inputs).
    pub warnings: Vec<String>,
}

/// A progress bar on stderr, hidden when quiet or not a terminal.
pub fn bar(quiet: bool, len: usize, prefix: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    if quiet || !std::io::stderr().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(
        ProgressStyle::with_template("{prefix:>16} {bar:30} {pos}/{len} {per_sec} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_prefix(prefix.to_owned());
    pb
}

/// At most `limit` examples of a split, in file order.
pub fn limited(ds: &Dataset, split: Split, limit: Option<usize>) -> Vec<&Example> {
    let mut v = ds.split(split);
    if let Some(n) = limit {
        v.truncate(n);
    }
    v
}

pub fn argmax(p: &[f64]) -> usize {
    p.iter()
        .enumerate()
        .fold(0, |b, (i, v)| if *v > p[b] { i } else { b })
}

/// The position of `label` in `labels`, or an error naming it: a label outside the set is
/// never quietly taken for the first class.
pub fn label_index(labels: &[String], label: &str, what: &str) -> Result<usize> {
    labels.iter().position(|l| l == label).ok_or_else(|| {
        crate::fail!(
            "{what}: label {label:?} is not one of [{}]",
            labels.join(", ")
        )
    })
}

/// This model's own peak memory: the high-water mark is reset before each model runs.
pub struct PeakMemory;

impl PeakMemory {
    pub fn start() -> PeakMemory {
        lmcompare_engine::profile::reset_peak_rss();
        PeakMemory
    }

    pub fn read(&self) -> (Option<u64>, &'static str) {
        (
            lmcompare_engine::profile::peak_rss_bytes(),
            lmcompare_engine::profile::peak_rss_scope(),
        )
    }
}

/// Efficiency of a generative model scored by log-likelihood, from what the run stored
/// (so a resumed run reports the same): parameters, FLOPs from the real token counts,
/// per-example latency, throughput, memory; `requests` counts the run's requests and how
/// many were sent now.
pub fn loglik_efficiency(
    model: &dyn GenerativeModel,
    predictions: &[StoredPrediction],
    cost: Option<ScoringCost>,
    requests: (usize, usize),
    peak: &PeakMemory,
) -> Result<Efficiency> {
    let size = model.size()?;
    let n = predictions.len().max(1) as f64;
    let tokens: f64 = predictions.iter().map(|p| p.tokens as f64).sum::<f64>();
    let lat: Vec<f64> = predictions.iter().map(|p| p.batch_latency_ms).collect();
    let seconds: f64 = lat.iter().sum::<f64>() / 1e3;
    let rate = |x: f64| if seconds > 0.0 { x / seconds } else { f64::NAN };
    let (peak_rss_bytes, peak_rss_scope) = peak.read();
    let local = cost.is_some();
    Ok(Efficiency {
        parameters: size.parameters,
        size_bytes: size.bytes,
        parameter_source: Some(size.source),
        embedding_parameters: size.embedding_parameters,
        flops_per_example: cost.map(|c| c.flops / n),
        tokens_per_example: Some(tokens / n),
        latency_ms_p50: percentile(&lat, 0.5),
        latency_ms_p95: percentile(&lat, 0.95),
        latency_unit: if local {
            "per example (batch time / batch size)"
        } else {
            "per example (all label requests, sequential sum)"
        }
        .into(),
        throughput_per_s: Some(rate(n)),
        tokens_per_s: Some(rate(cost.map_or(tokens, |c| c.fed_tokens as f64))),
        peak_rss_bytes,
        peak_rss_scope: Some(peak_rss_scope.into()),
        requests: (!local).then_some(requests.0),
        requests_sent: (!local).then_some(requests.1),
        truncated_contexts: cost.map(|c| c.truncated),
        generated_now: None,
    })
}

/// Waits while another process computes run `run_id` on this store (an identical command
/// started earlier), then claims it: the first computes, the second reuses its stored
/// predictions and answers instead of computing them again. Says so on stderr.
pub fn claim_or_wait(store: &lmcompare_engine::store::Store, run_id: i64) -> Result<()> {
    use lmcompare_engine::store::RunClaim;
    let mut said = false;
    loop {
        match store.claim_run(run_id)? {
            RunClaim::Acquired => {
                if said {
                    eprintln!(
                        "note: run {run_id} is free now; reusing what the other process stored"
                    );
                }
                return Ok(());
            }
            RunClaim::HeldBy { pid, host, since } => {
                if !said {
                    eprintln!(
                        "note: run {run_id} is being computed by another lmcompare (pid {pid} on {}, since {since}); waiting for it, to reuse its work",
                        lmcompare_report::escape_controls(&host)
                    );
                    said = true;
                }
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
        }
    }
}
