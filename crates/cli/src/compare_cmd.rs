//! `compare` and `demo`: arguments → [`CompareConfig`] → the pipeline → an exporter.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use lmcompare_metrics::{Correction, Metric};
use lmcompare_pipeline::bad;
use lmcompare_pipeline::compare::Document;
use lmcompare_pipeline::config::{
    ColumnNames, CompareConfig, DecoderScoring, GenerateApi, LengthNorm, PromptConfig,
    RemoteConfig, StatsConfig, Task,
};
use lmcompare_report::Format;

use crate::output::render_comparison;
use crate::shared_args::{ColumnArgs, StatsArgs};

#[derive(Args, Clone)]
pub struct CompareArgs {
    /// A model to compare, as NAME=SPEC (SPEC: a folder, .onnx or .gguf file, hf:org/name, or
    /// openai:URL#MODEL). One evaluates it; two or more are compared.
    #[arg(long = "model", required = true, value_name = "NAME=SPEC")]
    pub models: Vec<String>,
    /// Labelled data: JSONL, CSV or TSV (optionally .gz/.bz2), or Parquet.
    #[arg(long)]
    pub data: PathBuf,
    #[command(flatten)]
    pub cols: ColumnArgs,
    #[arg(long, value_enum, default_value = "classify")]
    pub task: Task,
    /// JSON object mapping model labels to dataset labels (classify).
    #[arg(long)]
    pub label_map: Option<PathBuf>,
    /// LABEL=DESCRIPTION for zero-shot (repeatable; default: the label itself).
    #[arg(long = "label-desc", value_name = "LABEL=TEXT")]
    pub label_desc: Vec<String>,
    /// Use at most N examples of each split (file order).
    #[arg(long, value_parser = crate::numbers::positive)]
    pub limit: Option<usize>,
    #[arg(long, value_parser = crate::numbers::positive, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, value_parser = crate::numbers::max_length)]
    pub max_length: Option<usize>,
    /// Load local decoders' weights in f32 (4 bytes per weight): GGUF blocks dequantised
    /// instead of multiplied with int8 kernels, bf16/f16 checkpoints widened at load instead
    /// of kept in 16 bits; the same as giving each local decoder spec the `dequantize:` prefix.
    #[arg(long)]
    pub dequantize: bool,
    #[arg(long, value_parser = crate::numbers::seed, default_value_t = 0)]
    pub seed: u64,
    /// Test fraction of the stratified split when the data has no split column.
    #[arg(long, value_parser = crate::numbers::fraction, default_value_t = 0.2)]
    pub test_size: f64,
    /// The SQLite store.
    #[arg(long, default_value = "lmcompare.db")]
    pub db: PathBuf,
    /// Also write report.json, report.md and report.html into this folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// table (default on a terminal), json (default otherwise), markdown or html (one
    /// offline file with charts; to stdout, or DIR/report.html with --out).
    #[arg(long)]
    pub format: Option<Format>,
    /// Test examples kept for the report's examples table (disagreements first).
    #[arg(long, value_parser = crate::numbers::count, default_value_t = 500)]
    pub html_examples: usize,
    /// Explain (integrated gradients, 50 steps) the N test examples where the models
    /// disagree most, for every native encoder classifier among them: in the JSON and
    /// side by side in the HTML report.
    #[arg(long, value_name = "N", value_parser = crate::numbers::count, default_value_t = 0)]
    pub explain: usize,
    /// Also write the run's per-example predictions and sample logs (prompts as sent,
    /// continuations' log-likelihoods, generated text, truncation) into this folder, as
    /// `lmcompare export` does.
    #[arg(long, value_name = "DIR")]
    pub log_samples: Option<PathBuf>,
    #[command(flatten)]
    pub stats: StatsArgs,
    #[arg(long, default_value = "f1_macro")]
    pub metric: Metric,
    /// Rerun a sample at batch size 1 and report the largest change in outputs.
    #[arg(long)]
    pub check_invariance: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Prompt for generative models, with {text} where the example goes.
    #[arg(long, default_value = "{text}\nAnswer:")]
    pub template: String,
    /// LABEL=TEXT: the continuation scored for a label (repeatable; default " LABEL").
    #[arg(long = "verbalizer", value_name = "LABEL=TEXT")]
    pub verbalizers: Vec<String>,
    /// Solved train examples put before each prompt (seeded draw).
    #[arg(long, value_parser = crate::numbers::count, default_value_t = 0)]
    pub shots: usize,
    /// Length normalisation of a label's log-likelihood.
    #[arg(long, value_enum, default_value = "none")]
    pub length_norm: LengthNorm,
    /// Requests in flight at once per remote model.
    #[arg(long, value_parser = crate::numbers::positive, default_value_t = 4)]
    pub concurrency: usize,
    /// At most this many requests per second per remote model.
    #[arg(long, value_parser = crate::numbers::positive_real)]
    pub max_rps: Option<f64>,
    /// Seconds before a request counts as timed out.
    #[arg(long, value_parser = crate::numbers::positive_real, default_value_t = 60.0)]
    pub timeout: f64,
    /// Retries of a failed request (429, 5xx, timeout, dropped connection, bad JSON).
    #[arg(long, value_parser = crate::numbers::count, default_value_t = 5)]
    pub retries: usize,
    /// Backoff before the first retry, doubled each time (jittered).
    #[arg(long, value_parser = crate::numbers::seed, default_value_t = 200)]
    pub backoff_ms: u64,
    /// Name of the environment variable holding the API key (the key is never printed or stored).
    #[arg(long)]
    pub api_key_env: Option<String>,
    /// Multiple choice: also ask every rotation of the choices (listed in the prompt with
    /// {choices}); a question counts only if all are right, which exposes position bias.
    #[arg(long)]
    pub circular: bool,
    /// Generate: most new tokens per answer.
    #[arg(long, value_parser = crate::numbers::positive, default_value_t = 32)]
    pub max_tokens: usize,
    /// Generate: stop an answer at this text (repeatable; the default stops at a newline).
    #[arg(long, default_values_t = vec!["\n".to_string()])]
    pub stop: Vec<String>,
    /// How generative models classify: by the log-likelihood of each label's verbaliser, or
    /// by generating an answer that must name one (answers naming none are counted as
    /// `invalid`, in their own confusion-matrix column).
    #[arg(long, value_enum, default_value = "loglik")]
    pub decoder_scoring: DecoderScoring,
    /// Generate: the server API a remote model answers through.
    #[arg(long, value_enum, default_value = "chat")]
    pub generate_api: GenerateApi,
    /// Perplexity: characters per scored window (cut at whitespace).
    #[arg(long, value_parser = crate::numbers::positive, default_value_t = 2000)]
    pub window_chars: usize,
    /// Perplexity: characters of preceding text given as context to each later window.
    #[arg(long, value_parser = crate::numbers::count, default_value_t = 500)]
    pub context_chars: usize,
}

impl CompareArgs {
    pub fn config(&self) -> CompareConfig {
        CompareConfig {
            models: if self.dequantize {
                self.models
                    .iter()
                    .map(|m| lmcompare_pipeline::models::dequantized_spec(m))
                    .collect()
            } else {
                self.models.clone()
            },
            data: self.data.clone(),
            cols: self.cols.config(),
            task: self.task,
            label_map: self.label_map.clone(),
            label_desc: self.label_desc.clone(),
            limit: self.limit,
            batch_size: self.batch_size,
            max_length: self.max_length,
            seed: self.seed,
            test_size: self.test_size,
            db: self.db.clone(),
            stats: self.stats.config(),
            metric: self.metric,
            check_invariance: self.check_invariance,
            quiet: self.quiet,
            prompt: PromptConfig {
                template: self.template.clone(),
                verbalizers: self.verbalizers.clone(),
                shots: self.shots,
                length_norm: self.length_norm,
                circular: self.circular,
                decoder_scoring: self.decoder_scoring,
                max_tokens: self.max_tokens,
                stop: self.stop.clone(),
                generate_api: self.generate_api,
                window_chars: self.window_chars,
                context_chars: self.context_chars,
            },
            remote: RemoteConfig {
                concurrency: self.concurrency,
                max_rps: self.max_rps,
                timeout: self.timeout,
                retries: self.retries,
                backoff_ms: self.backoff_ms,
                api_key_env: self.api_key_env.clone(),
            },
            html_examples: self.html_examples,
            explain: self.explain,
        }
    }
}

pub fn run(args: CompareArgs) -> Result<()> {
    let cfg = args.config();
    if args.log_samples.is_some() && !cfg.task.classifies() && cfg.task != Task::MultipleChoice {
        return Err(bad!(
            "--log-samples keeps per-example logs of classify, probe, zero-shot and multiple-choice runs; {} reports its per-unit results in its own document",
            cfg.task.key()
        )
        .into());
    }
    let doc = lmcompare_pipeline::compare(&cfg)?;
    if let (Some(dir), Document::Compare(r)) = (&args.log_samples, &doc) {
        let run = r.run["id"]
            .as_i64()
            .ok_or_else(|| anyhow::anyhow!("the report has no run id"))?;
        let done = lmcompare_pipeline::stored::export(&cfg.db, run, None, None, dir)?;
        crate::store_cmds::say_exported(&done);
    }
    render_comparison(&doc, args.format, args.out.as_deref())
}

#[derive(Args)]
pub struct DemoArgs {
    #[arg(long, default_value = "lmcompare.db")]
    db: PathBuf,
    /// Use at most N reviews per split (default: all 4,866).
    #[arg(long, value_parser = crate::numbers::positive)]
    limit: Option<usize>,
    #[arg(long)]
    format: Option<Format>,
    #[arg(long)]
    quiet: bool,
}

/// The shipped comparison: MiniLM-L6 (safetensors), its int8 ONNX export and the 3-layer
/// MiniLM (ONNX) as frozen encoders with a logistic-regression probe, beside Gemma 3 270M
/// (GGUF) zero-shot by label log-likelihood, on the Rotten Tomatoes fresh/rotten reviews.
pub fn demo(args: DemoArgs) -> Result<()> {
    let assets = Path::new("assets");
    let need = [
        "models/all-MiniLM-L6-v2",
        "models/all-MiniLM-L6-v2-int8-onnx",
        "models/paraphrase-MiniLM-L3-v2-onnx",
        "models/gemma-3-270m-q4_k_m.gguf",
        "data/rotten_tomatoes_binary.jsonl",
    ];
    if let Some(missing) = need.iter().find(|p| !assets.join(p).exists()) {
        return Err(bad!("assets/{missing} is missing: run `bash scripts/fetch-assets.sh` first (from the repository root)").into());
    }
    let cfg = CompareConfig {
        models: vec![
            "minilm-l6=assets/models/all-MiniLM-L6-v2".into(),
            "minilm-l6-int8=assets/models/all-MiniLM-L6-v2-int8-onnx".into(),
            "minilm-l3=assets/models/paraphrase-MiniLM-L3-v2-onnx".into(),
            // A generative LLM beside the encoders: zero-shot, by label log-likelihood.
            "gemma-270m=assets/models/gemma-3-270m-q4_k_m.gguf".into(),
        ],
        data: assets.join("data/rotten_tomatoes_binary.jsonl"),
        cols: ColumnNames::default(),
        task: Task::Probe,
        label_map: None,
        label_desc: Vec::new(),
        limit: args.limit,
        batch_size: 32,
        max_length: Some(128),
        seed: 0,
        test_size: 0.2,
        db: args.db,
        stats: StatsConfig {
            bootstrap: 1000,
            permutations: 1000,
            correction: Correction::Holm,
        },
        metric: Metric::F1Macro,
        check_invariance: false,
        quiet: args.quiet,
        prompt: PromptConfig {
            template: "Review: {text}\nSentiment:".into(),
            verbalizers: vec!["fresh= positive".into(), "rotten= negative".into()],
            ..PromptConfig::default()
        },
        remote: RemoteConfig::default(),
        html_examples: 500,
        explain: 0,
    };
    let doc = lmcompare_pipeline::compare(&cfg)?;
    // The picture of the comparison, beside the store it came from.
    let html_path = cfg
        .db
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("report.html");
    if let Document::Compare(r) = &doc {
        std::fs::write(&html_path, lmcompare_report::render_compare_html(r))
            .map_err(|e| bad!("{}: cannot write: {e}", html_path.display()))?;
        if !cfg.quiet {
            eprintln!("wrote {} (open it in a browser)", html_path.display());
        }
    }
    render_comparison(&doc, args.format, None)
}
