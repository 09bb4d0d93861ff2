//! The typed report documents: what the pipeline produces and every exporter reads. Field
//! names are the JSON contract (snake_case, scikit-learn's metric names); optional blocks
//! that a backend cannot fill are left out rather than guessed.

use serde::{Deserialize, Serialize};

/// What running a model cost, measured on the run itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Efficiency {
    pub parameters: Option<u64>,
    pub size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_parameters: Option<u64>,
    pub flops_per_example: Option<f64>,
    pub tokens_per_example: Option<f64>,
    #[serde(default, with = "nan_as_null")]
    pub latency_ms_p50: f64,
    #[serde(default, with = "nan_as_null")]
    pub latency_ms_p95: f64,
    pub latency_unit: String,
    pub throughput_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_s: Option<f64>,
    /// This model's own peak resident memory (see `peak_rss_scope`).
    pub peak_rss_bytes: Option<u64>,
    /// What `peak_rss_bytes` covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_scope: Option<String>,
    /// Remote models: requests of the run, and how many were sent now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_sent: Option<usize>,
    /// Local decoders: contexts cut from the left to fit the positions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated_contexts: Option<usize>,
    /// Classification by generation: answers generated now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_now: Option<usize>,
}

/// Non-finite floats as JSON null (and null back as NaN).
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// `serde_json::Map` keeps the metrics in the order the metrics crate gives them.
pub type Ordered<T> = serde_json::Map<String, T>;

/// A bootstrap interval of one metric.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IntervalReport {
    pub low: Option<f64>,
    pub high: Option<f64>,
    pub defined_resamples: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConfusionMatrix {
    /// Gold labels (rows), and predicted labels when no `predicted_labels` is given.
    pub labels: Vec<String>,
    pub matrix: Vec<Vec<u64>>,
    /// The predicted columns when they differ from the rows (the `invalid` column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_labels: Option<Vec<String>>,
}

/// One model in a comparison: its metrics with intervals, how it ran, what it cost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelReport {
    pub name: String,
    pub n: usize,
    pub labels: Vec<String>,
    /// Metric key → value (null where undefined).
    pub metrics: Ordered<serde_json::Value>,
    pub ci: Ordered<serde_json::Value>,
    pub per_class: Ordered<serde_json::Value>,
    pub confusion_matrix: ConfusionMatrix,
    pub warnings: Vec<String>,
    #[serde(default)]
    pub spec: String,
    #[serde(default)]
    pub backend: String,
    /// The model's content hash (weights, tokenizer and head files; a server's identity).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub content_hash: String,
    #[serde(default)]
    pub efficiency: Efficiency,
    #[serde(default)]
    pub computed_examples: usize,
    #[serde(default)]
    pub reused_examples: usize,
    /// Earlier runs (same data and settings) this run's reused predictions were taken from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reused_from_runs: Vec<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_invariance_max_abs_change: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_examples: Option<usize>,
    /// Task-specific blocks (`multiple_choice`, `generation`).
    #[serde(flatten)]
    pub extra: Ordered<serde_json::Value>,
}

impl ModelReport {
    /// A metric's value; NaN when undefined or not computed.
    pub fn metric(&self, key: &str) -> f64 {
        self.metrics
            .get(key)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(f64::NAN)
    }

    /// A metric's interval, when there is one.
    pub fn interval(&self, key: &str) -> Option<(f64, f64)> {
        let ci = self.ci.get(key)?;
        Some((
            ci["low"].as_f64().unwrap_or(f64::NAN),
            ci["high"].as_f64().unwrap_or(f64::NAN),
        ))
    }
}

/// The Pareto set on the main metric against a cost.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pareto {
    pub quality: String,
    pub cost: String,
    pub models: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExcludedExample {
    pub id: String,
    pub errors: Vec<String>,
}

/// Examples left out for every model because some model's requests failed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Excluded {
    pub count: usize,
    pub reason: String,
    pub examples: Vec<ExcludedExample>,
}

/// What the data was.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DatasetInfo {
    pub path: std::path::PathBuf,
    pub sha256: String,
    pub rows_per_split: serde_json::Value,
    pub labels: Vec<String>,
    pub split: String,
    pub evaluated_test_examples: usize,
    pub train_examples_used: usize,
}

/// The `compare` document (and the comparison block of `tune`): the source of truth that
/// every exporter renders and the store keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareReport {
    pub lmcompare_version: String,
    pub models: Vec<ModelReport>,
    /// Paired tests of every pair, as the metrics crate reports them.
    pub pairwise: Vec<serde_json::Value>,
    pub method: serde_json::Value,
    pub pareto: Pareto,
    pub verdicts: Vec<String>,
    pub task: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded_examples: Option<Excluded>,
    pub dataset: DatasetInfo,
    /// Provenance: run id and key, version, seed, threads, backends, times.
    pub run: serde_json::Value,
    /// The evidence behind the numbers (curves, examples, tokenizers) for the HTML report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Details>,
    /// `compare --explain N`: attributions of the examples where the models disagree most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanations: Option<serde_json::Value>,
}

/// What the pictures are drawn from beyond the metrics: each model's reliability, ROC and
/// precision-recall curves, a capped sample of test examples (disagreements first) and the
/// tokenizers' statistics on the test texts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Details {
    pub curves: Vec<ModelCurves>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub examples: Option<ExampleSample>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokenizers: Vec<TokenizerStats>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelCurves {
    pub model: String,
    #[serde(flatten)]
    pub curves: lmcompare_metrics::curves::Curves,
}

/// Test examples with every model's prediction: those where the models disagree (for a
/// single model, its errors) first, then the rest, at most `cap`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExampleSample {
    /// Scored test examples, and how many of them the models disagree on.
    pub total: usize,
    pub disagreements: usize,
    pub cap: usize,
    /// Model names, in the order of each row's predictions.
    pub models: Vec<String>,
    pub rows: Vec<ExampleRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExampleRow {
    pub id: String,
    /// The text (cut at 2,000 characters); none when the source had no text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub gold: String,
    pub disagree: bool,
    pub predictions: Vec<ExamplePrediction>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExamplePrediction {
    pub label: String,
    /// The probability the model gave its predicted label (none for generated answers).
    pub probability: Option<f64>,
}

/// One model's tokenizer on the scored test texts (as `lmcompare tokenize` measures it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenizerStats {
    pub model: String,
    pub tokenizer: String,
    pub max_length: usize,
    /// Non-special tokens per whitespace word.
    pub tokens_per_word: Option<f64>,
    pub unk_rate: Option<f64>,
    /// Texts cut at `max_length`.
    pub truncated_fraction: f64,
    pub mean_tokens: f64,
}

/// `leaderboard`: every model the store has scored on one dataset, grouped by the settings
/// that change predictions, each group compared as one `compare` of all its models.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Leaderboard {
    pub lmcompare_version: String,
    pub dataset: LeaderboardDataset,
    /// The main metric models are ranked on.
    pub metric: String,
    pub groups: Vec<LeaderboardGroup>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LeaderboardDataset {
    pub path: std::path::PathBuf,
    pub sha256: String,
}

/// Models scored under the same settings, on the examples all of them have.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaderboardGroup {
    /// 1-based, in the order of the groups' first runs.
    pub group: usize,
    pub task: String,
    /// Every setting that changes a prediction (the run key's settings without the model list).
    pub settings: serde_json::Value,
    /// The settings whose values differ from another group's.
    pub differs: serde_json::Map<String, serde_json::Value>,
    /// The runs whose predictions were gathered.
    pub runs: Vec<i64>,
    pub ranking: Vec<RankedModel>,
    /// What was left out so every model is scored on the same examples.
    pub notes: Vec<String>,
    pub comparison: CompareReport,
}

/// One model's place in a group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RankedModel {
    pub rank: usize,
    pub model: String,
    pub content_hash: String,
    /// Every name the model was run under in this group.
    pub names: Vec<String>,
    /// The runs its predictions come from (the newest first).
    pub runs: Vec<i64>,
    /// Predictions it has in the store for this group, before the common examples are kept.
    pub stored_examples: usize,
    pub metric: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    /// Share of paired bootstrap resamples in which this model is best.
    pub p_best: Option<f64>,
    pub mean_rank: Option<f64>,
    pub rank_low: Option<f64>,
    pub rank_high: Option<f64>,
    pub pareto: bool,
}
