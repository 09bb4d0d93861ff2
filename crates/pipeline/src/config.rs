//! What a command asks the pipeline to do, as plain data: the command line builds these
//! (and so could any other front end); nothing here knows about argument parsing.

use std::path::PathBuf;

use lmcompare_engine::data::Columns;
use lmcompare_metrics::{Correction, Metric};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Task {
    /// Models with a classification head; their labels mapped to the dataset's.
    Classify,
    /// Frozen embeddings + a logistic-regression head trained on the train split.
    Probe,
    /// Cosine similarity between each text and a description of each label.
    ZeroShot,
    /// Generative models on JSONL {"id", "question", "choices", "answer"}: the choice with
    /// the highest log-likelihood (acc), per character (acc_norm), per byte (acc_bytes).
    MultipleChoice,
    /// Generative models on a text file (paragraphs) or JSONL: per-token perplexity and
    /// bits per byte, sliding windows over long texts.
    Perplexity,
    /// Generative models answer JSONL {"id", "prompt", "answer"} greedily: exact match and
    /// token F1 (SQuAD normalisation).
    Generate,
}

impl Task {
    pub fn key(self) -> &'static str {
        match self {
            Task::Classify => "classify",
            Task::Probe => "probe",
            Task::ZeroShot => "zero-shot",
            Task::MultipleChoice => "multiple-choice",
            Task::Perplexity => "perplexity",
            Task::Generate => "generate",
        }
    }

    /// Tasks that classify the dataset's labels (encoders and generative models alike).
    pub fn classifies(self) -> bool {
        matches!(self, Task::Classify | Task::Probe | Task::ZeroShot)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum LengthNorm {
    /// Sum of the continuation's token log-probabilities.
    None,
    /// Divided by its token count.
    Tokens,
    /// Divided by its length in characters (lm-evaluation-harness's acc_norm).
    Chars,
    /// Divided by its length in UTF-8 bytes (acc_bytes).
    Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum DecoderScoring {
    /// The label whose verbaliser is most likely after the prompt (probabilities included).
    Loglik,
    /// A greedy answer that must name a label (or its verbaliser); no probabilities.
    Generate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum GenerateApi {
    /// POST {base}/chat/completions with the prompt as one user message.
    Chat,
    /// POST {base}/completions with the prompt as is.
    Completions,
}

/// How intervals and tests are computed.
#[derive(Debug, Clone)]
pub struct StatsConfig {
    pub bootstrap: usize,
    pub permutations: usize,
    pub correction: Correction,
}

/// Which columns of a data file hold what.
#[derive(Debug, Clone)]
pub struct ColumnNames {
    pub text_col: String,
    pub label_col: String,
    pub split_col: String,
    pub id_col: String,
}

impl Default for ColumnNames {
    fn default() -> Self {
        ColumnNames {
            text_col: "text".into(),
            label_col: "label".into(),
            split_col: "split".into(),
            id_col: "id".into(),
        }
    }
}

impl ColumnNames {
    pub fn columns(&self) -> Columns {
        Columns {
            text: self.text_col.clone(),
            label: self.label_col.clone(),
            split: self.split_col.clone(),
            id: self.id_col.clone(),
        }
    }

    /// The column names, for the keys that identify a run.
    pub fn names(&self) -> [&str; 4] {
        [
            &self.text_col,
            &self.label_col,
            &self.split_col,
            &self.id_col,
        ]
    }
}

/// Settings of a remote (OpenAI-compatible) client.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// Requests in flight at once per remote model.
    pub concurrency: usize,
    pub max_rps: Option<f64>,
    /// Seconds before a request counts as timed out.
    pub timeout: f64,
    pub retries: usize,
    pub backoff_ms: u64,
    /// Name of the environment variable holding the API key.
    pub api_key_env: Option<String>,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            concurrency: 4,
            max_rps: None,
            timeout: 60.0,
            retries: 5,
            backoff_ms: 200,
            api_key_env: None,
        }
    }
}

/// How generative models are prompted and scored.
#[derive(Debug, Clone)]
pub struct PromptConfig {
    /// Prompt with {text} (or {question}, {choices}) where the example goes.
    pub template: String,
    /// LABEL=TEXT: the continuation scored for a label.
    pub verbalizers: Vec<String>,
    pub shots: usize,
    pub length_norm: LengthNorm,
    pub circular: bool,
    pub decoder_scoring: DecoderScoring,
    /// Generation: most new tokens per answer, and where answers stop.
    pub max_tokens: usize,
    pub stop: Vec<String>,
    pub generate_api: GenerateApi,
    /// Perplexity: characters per scored window, and of preceding context.
    pub window_chars: usize,
    pub context_chars: usize,
}

/// The template `compare` uses when none is given.
pub const DEFAULT_TEMPLATE: &str = "{text}\nAnswer:";

impl Default for PromptConfig {
    fn default() -> Self {
        PromptConfig {
            template: DEFAULT_TEMPLATE.into(),
            verbalizers: Vec::new(),
            shots: 0,
            length_norm: LengthNorm::None,
            circular: false,
            decoder_scoring: DecoderScoring::Loglik,
            max_tokens: 32,
            stop: vec!["\n".into()],
            generate_api: GenerateApi::Chat,
            window_chars: 2000,
            context_chars: 500,
        }
    }
}

/// Everything `compare` needs.
#[derive(Debug, Clone)]
pub struct CompareConfig {
    /// NAME=SPEC, one per model.
    pub models: Vec<String>,
    pub data: PathBuf,
    pub cols: ColumnNames,
    pub task: Task,
    pub label_map: Option<PathBuf>,
    pub label_desc: Vec<String>,
    pub limit: Option<usize>,
    pub batch_size: usize,
    pub max_length: Option<usize>,
    pub seed: u64,
    pub test_size: f64,
    pub db: PathBuf,
    pub stats: StatsConfig,
    pub metric: Metric,
    pub check_invariance: bool,
    pub quiet: bool,
    pub prompt: PromptConfig,
    pub remote: RemoteConfig,
    /// Test examples kept in the report for its examples table (disagreements first).
    pub html_examples: usize,
    /// Attributions for this many test examples where the models disagree most.
    pub explain: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum SearchKind {
    /// Every combination of the listed values.
    Grid,
    /// Independent draws (log-uniform for log(lo,hi) ranges).
    Random,
    /// Tree-structured Parzen estimator (Optuna's default sampler) after 10 random trials.
    Tpe,
    /// Random draws with successive-halving pruning (ASHA run sequentially).
    Halving,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum PrunerKind {
    /// Halving for --search halving, none otherwise.
    Auto,
    None,
    /// Stop a trial whose best value is below the median of finished trials at that epoch.
    Median,
    /// Successive halving: rungs at 1, 3, 9, ... epochs keep the top third.
    Halving,
}

/// Everything `tune` needs.
#[derive(Debug, Clone)]
pub struct TuneConfig {
    pub models: Vec<String>,
    pub data: PathBuf,
    pub cols: ColumnNames,
    pub search: SearchKind,
    pub space: String,
    pub trials: Option<usize>,
    pub metric: Metric,
    pub pruner: PrunerKind,
    pub patience: usize,
    pub min_delta: f64,
    pub folds: usize,
    pub baseline: String,
    pub unfreeze: String,
    pub save: PathBuf,
    pub seed: u64,
    pub limit: Option<usize>,
    pub max_length: Option<usize>,
    pub test_size: f64,
    pub infer_batch_size: usize,
    pub db: PathBuf,
    pub stats: StatsConfig,
    pub quiet: bool,
    /// Test examples kept in the comparison for the report's examples table.
    pub html_examples: usize,
}

pub const DEFAULT_SPACE: &str = "lr=log(1e-4,3e-2);batch_size=[16,32,64];epochs=[5,10,20];optimizer=[adam,adamw,sgd];scheduler=[constant,step(3,0.5),cosine,warmup_linear(0.1)];weight_decay=[0,0.01]";
pub const DEFAULT_BASELINE: &str =
    "lr=5e-5;batch_size=8;epochs=3;optimizer=adamw;scheduler=warmup_linear(0);weight_decay=0";
