//! `compare` and `demo`: every model on the same data, the ten key metrics with intervals,
//! efficiency measured on the run itself, paired tests, verdicts and the Pareto set; every
//! batch committed to the SQLite store so an interrupted run resumes.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lmcompare_engine::data::{load_dataset, Columns, Dataset, Example, Split};
use lmcompare_engine::decoder::Decoder;
use lmcompare_engine::encoder_model::weights_file;
use lmcompare_engine::encoder_model::{identity_files, softmax64};
use lmcompare_engine::probe::{Probe, ProbeOptions};
use lmcompare_engine::profile::{
    count_from_config, count_safetensors, encoder_flops, peak_rss_bytes, percentile,
};
use lmcompare_engine::remote::RemoteSpec;
use lmcompare_engine::spec::resolve;
use lmcompare_engine::store::{timestamp, CachedEmbedding, NewRun, Store, StoredPrediction};
use lmcompare_engine::tokenize::Encoded;
use lmcompare_engine::weights::WeightFile;
use lmcompare_engine::{LoadOptions, TextEncoder};
use lmcompare_metrics::{
    score_models, BootstrapOptions, Correction, LabelSet, Metric, MetricOptions, Predictions,
    ScoreOptions,
};
use lmcompare_report::{metrics_json, render_compare_markdown, render_compare_table, Format};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::encoder_cmds::engine;
use crate::{emit, resolve_format, BadInput};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
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
    fn key(self) -> &'static str {
        match self {
            Task::Classify => "classify",
            Task::Probe => "probe",
            Task::ZeroShot => "zero-shot",
            Task::MultipleChoice => "multiple-choice",
            Task::Perplexity => "perplexity",
            Task::Generate => "generate",
        }
    }
}

/// How intervals and tests are computed.
#[derive(Args, Clone)]
pub struct StatsArgs {
    /// Bootstrap resamples for confidence intervals (0: none).
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Permutations for the paired permutation test (0: none).
    #[arg(long, default_value_t = 1000)]
    pub permutations: usize,
    #[arg(long, default_value = "holm")]
    pub correction: Correction,
}

impl StatsArgs {
    pub(crate) fn scoring(&self, seed: u64, metric: Metric) -> Scoring {
        Scoring {
            bootstrap: self.bootstrap,
            permutations: self.permutations,
            seed,
            metric,
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

#[derive(Args, Clone)]
pub struct CompareArgs {
    /// A model to compare, as NAME=SPEC (SPEC: folder, .onnx file or hf:org/name). Two or more.
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
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long)]
    pub max_length: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Test fraction of the stratified split when the data has no split column.
    #[arg(long, default_value_t = 0.2)]
    pub test_size: f64,
    /// The SQLite store.
    #[arg(long, default_value = "lmcompare.db")]
    pub db: PathBuf,
    /// Also write report.json and report.md into this folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub format: Option<Format>,
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
    #[arg(long, default_value_t = 0)]
    pub shots: usize,
    /// Length normalisation of a label's log-likelihood.
    #[arg(long, value_enum, default_value = "none")]
    pub length_norm: crate::decoder_task::LengthNorm,
    /// Requests in flight at once per remote model.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// At most this many requests per second per remote model.
    #[arg(long)]
    pub max_rps: Option<f64>,
    /// Seconds before a request counts as timed out.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// Retries of a failed request (429, 5xx, timeout, dropped connection, bad JSON).
    #[arg(long, default_value_t = 5)]
    pub retries: usize,
    /// Backoff before the first retry, doubled each time (jittered).
    #[arg(long, default_value_t = 200)]
    pub backoff_ms: u64,
    /// Name of the environment variable holding the API key (the key is never printed or stored).
    #[arg(long)]
    pub api_key_env: Option<String>,
    /// Multiple choice: also ask every rotation of the choices (listed in the prompt with
    /// {choices}); a question counts only if all are right, which exposes position bias.
    #[arg(long)]
    pub circular: bool,
    /// Generate: most new tokens per answer.
    #[arg(long, default_value_t = 32)]
    pub max_tokens: usize,
    /// Generate: stop an answer at this text (repeatable; the default stops at a newline).
    #[arg(long, default_values_t = vec!["\n".to_string()])]
    pub stop: Vec<String>,
    /// How generative models classify: by the log-likelihood of each label's verbaliser, or
    /// by generating an answer that must name one (answers naming none are counted as
    /// `invalid`, in their own confusion-matrix column).
    #[arg(long, value_enum, default_value = "loglik")]
    pub decoder_scoring: crate::decoder_task::DecoderScoring,
    /// Generate: the server API a remote model answers through.
    #[arg(long, value_enum, default_value = "chat")]
    pub generate_api: crate::generate_task::GenerateApi,
    /// Perplexity: characters per scored window (cut at whitespace).
    #[arg(long, default_value_t = 2000)]
    pub window_chars: usize,
    /// Perplexity: characters of preceding text given as context to each later window.
    #[arg(long, default_value_t = 500)]
    pub context_chars: usize,
}

/// The predicted label of a generated answer that names no dataset label.
pub(crate) const INVALID: &str = "invalid";

pub(crate) struct ModelRun {
    pub name: String,
    pub spec: String,
    pub predictions: Vec<StoredPrediction>,
    pub computed: usize,
    pub reused: usize,
    pub efficiency: Value,
    pub backend: String,
    pub invariance: Option<f64>,
    /// Test examples without a prediction: (id, why).
    pub failed: Vec<(String, String)>,
    /// Task-specific results merged into the model's block (e.g. acc_norm).
    pub extra: Value,
}

pub(crate) fn bar(quiet: bool, len: usize, prefix: &str) -> ProgressBar {
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

pub(crate) fn sha(text: &str) -> String {
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

pub(crate) fn parse_models(specs: &[String]) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for s in specs {
        let (name, spec) = s
            .split_once('=')
            .filter(|(n, sp)| !n.is_empty() && !sp.is_empty())
            .ok_or_else(|| {
                BadInput(format!(
                    "--model {s:?}: expected NAME=SPEC, e.g. minilm=assets/models/all-MiniLM-L6-v2"
                ))
            })?;
        if out.iter().any(|(n, _)| n == name) {
            return Err(BadInput(format!(
                "two models are named {name:?}; give each --model a distinct NAME"
            ))
            .into());
        }
        out.push((name.to_owned(), spec.to_owned()));
    }
    if out.len() < 2 {
        return Err(BadInput(
            "compare needs at least two --model NAME=SPEC (use `predict` or `embed` for one model)"
                .into(),
        )
        .into());
    }
    Ok(out)
}

pub(crate) fn limited(ds: &Dataset, split: Split, limit: Option<usize>) -> Vec<&Example> {
    let mut v = ds.split(split);
    if let Some(n) = limit {
        v.truncate(n);
    }
    v
}

/// Efficiency from what this run measured and stored (so a resumed run reports the same).
pub(crate) fn efficiency(
    model: &TextEncoder,
    resolved_onnx: bool,
    dir: &Path,
    rows: &[(usize, f64, usize)],
    labels: Option<usize>,
) -> Result<Value> {
    let params = if resolved_onnx {
        let bytes = model
            .resolved
            .onnx
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        model
            .config
            .as_ref()
            .map(|c| count_from_config(c, bytes))
            .unwrap_or_default()
    } else {
        count_safetensors(
            &WeightFile::open(&weights_file(dir).unwrap_or_else(|| dir.join("model.safetensors")))
                .map_err(engine)?,
        )
    };
    let n = rows.len().max(1) as f64;
    let tokens: f64 = rows.iter().map(|r| r.0 as f64).sum::<f64>() / n;
    let flops = model.config.as_ref().map(|c| {
        rows.iter()
            .map(|r| encoder_flops(c, r.0, labels))
            .sum::<f64>()
            / n
    });
    // Distinct batches: rows of one batch share its latency and size.
    let mut batches: Vec<(u64, usize)> = rows.iter().map(|r| (r.1.to_bits(), r.2)).collect();
    batches.sort_unstable();
    batches.dedup();
    let lat: Vec<f64> = batches.iter().map(|b| f64::from_bits(b.0)).collect();
    let seconds: f64 = lat.iter().sum::<f64>() / 1e3;
    Ok(json!({
        "parameters": params.parameters,
        "size_bytes": params.bytes,
        "parameter_source": params.source,
        "flops_per_example": flops,
        "tokens_per_example": tokens,
        "latency_ms_p50": percentile(&lat, 0.5),
        "latency_ms_p95": percentile(&lat, 0.95),
        "latency_unit": "per batch",
        "throughput_per_s": rows.len() as f64 / seconds,
        "peak_rss_bytes": peak_rss_bytes(),
    }))
}

fn load_label_map(path: Option<&Path>) -> Result<HashMap<String, String>> {
    let Some(p) = path else {
        return Ok(HashMap::new());
    };
    let text = std::fs::read_to_string(p)
        .map_err(|e| BadInput(format!("{}: cannot read: {e}", p.display())))?;
    let v: HashMap<String, String> = serde_json::from_str(&text).map_err(|e| {
        BadInput(format!(
            "{}: expected a JSON object of model label -> dataset label: {e}",
            p.display()
        ))
    })?;
    Ok(v)
}

pub fn compare(args: &CompareArgs) -> Result<Value> {
    if args.task == Task::Perplexity {
        return crate::perplexity_task::perplexity(args);
    }
    if args.task == Task::Generate {
        return crate::generate_task::generate(args);
    }
    let started = Instant::now();
    let models = parse_models(&args.models)?;
    if args.batch_size == 0 {
        return Err(BadInput("--batch-size must be at least 1".into()).into());
    }
    let cols = args.cols.columns();
    let (ds, choices) = if args.task == Task::MultipleChoice {
        let (ds, choices) = crate::decoder_task::choice_dataset(&args.data)?;
        (ds, Some(choices))
    } else {
        (
            load_dataset(&args.data, &cols, args.test_size, args.seed).map_err(engine)?,
            None,
        )
    };
    let test = limited(&ds, Split::Test, args.limit);
    let train = limited(&ds, Split::Train, args.limit);
    if args.task == Task::Probe {
        if train.is_empty() {
            return Err(BadInput(format!(
                "{}: the train split is empty; the probe task trains on it",
                args.data.display()
            ))
            .into());
        }
        let mut present: Vec<&str> = train.iter().map(|e| e.label.as_str()).collect();
        present.sort();
        present.dedup();
        if present.len() < 2 {
            return Err(BadInput(format!(
                "{}: the train split has a single label; a probe needs at least two",
                args.data.display()
            ))
            .into());
        }
    }
    let label_map = load_label_map(args.label_map.as_deref())?;
    let mut descriptions: HashMap<String, String> = HashMap::new();
    for d in &args.label_desc {
        let (l, t) = d
            .split_once('=')
            .ok_or_else(|| BadInput(format!("--label-desc {d:?}: expected LABEL=TEXT")))?;
        if !ds.labels.iter().any(|x| x == l) {
            return Err(BadInput(format!(
                "--label-desc: {l:?} is not a dataset label ({})",
                ds.labels.join(", ")
            ))
            .into());
        }
        descriptions.insert(l.to_owned(), t.to_owned());
    }

    let mut store = Store::open(&args.db).map_err(engine)?;
    // The run key covers everything that changes results (batch size does not: inference is
    // per sequence, see --check-invariance).
    let mut hashes = Vec::new();
    // Generative models (a server's, or a local GGUF/causal-LM folder) are scored by
    // log-likelihood whatever the task says for encoders.
    let mut local_decoders: HashMap<String, std::path::PathBuf> = HashMap::new();
    for (name, spec) in &models {
        let remote = RemoteSpec::parse(spec);
        let local = if remote.is_none() {
            crate::decoder_task::local_decoder_path(spec)
        } else {
            None
        };
        if remote.is_some() || local.is_some() {
            if let Some(r) = remote {
                r.map_err(|e| BadInput(format!("model {name}: {e}")))?;
            }
            if !matches!(
                args.task,
                Task::Classify | Task::Probe | Task::ZeroShot | Task::MultipleChoice
            ) {
                return Err(BadInput(format!(
                    "model {name}: a generative model is scored with --task classify, probe or zero-shot (label log-likelihoods beside the encoders), multiple-choice or perplexity"
                ))
                .into());
            }
            match local {
                Some(path) => {
                    // The hash of the files' hashes, as for encoders below.
                    hashes.push(sha(&crate::decoder_task::decoder_identity(&store, &path)?));
                    local_decoders.insert(name.clone(), path);
                }
                // A server's model is identified by its URL and model id.
                None => hashes.push(sha(spec)),
            }
            continue;
        }
        if args.task == Task::MultipleChoice {
            return Err(BadInput(format!(
                "model {name}: multiple-choice scores generative models (a .gguf file, a causal-LM folder or openai:URL#MODEL); {spec} is an encoder"
            ))
            .into());
        }
        let resolved = resolve(spec).map_err(|e| BadInput(format!("model {name}: {e}")))?;
        // Content hash of config + weights: two runs with the same content share cached work.
        let mut h = Sha256::new();
        for f in identity_files(&resolved) {
            h.update(store.file_sha256(&f).map_err(engine)?.as_bytes());
        }
        hashes.push(format!("{:x}", h.finalize()));
    }
    let settings = json!({
        "task": args.task.key(), "models": models.iter().zip(&hashes).map(|((n, _), h)| json!([n, h])).collect::<Vec<_>>(),
        "dataset": ds.sha256, "columns": args.cols.names(),
        "limit": args.limit, "max_length": args.max_length, "seed": args.seed, "test_size": args.test_size,
        "label_map": args.label_map.as_ref().map(|_| &label_map), "label_desc": &args.label_desc,
        "template": &args.template, "verbalizers": &args.verbalizers, "shots": args.shots,
        "length_norm": format!("{:?}", args.length_norm), "circular": args.circular,
        "decoder_scoring": format!("{:?}", args.decoder_scoring), "max_tokens": args.max_tokens, "stop": &args.stop,
    });
    let key = sha(&settings.to_string());
    let model_names: Vec<&str> = models.iter().map(|(n, _)| n.as_str()).collect();
    let models_joined = model_names.join(",");
    let settings_text = settings.to_string();
    let dataset_path = args.data.display().to_string();
    let (run_id, resumed) = store
        .begin_run(&NewRun {
            key: &key,
            task: args.task.key(),
            dataset_sha: &ds.sha256,
            dataset_path: &dataset_path,
            rows: ds.examples.len(),
            models: &models_joined,
            settings: &settings_text,
        })
        .map_err(engine)?;

    let decoder = if models
        .iter()
        .any(|(n, s)| RemoteSpec::parse(s).is_some() || local_decoders.contains_key(n))
    {
        Some(crate::decoder_task::decoder_settings(
            args, &ds.labels, &train, choices,
        )?)
    } else {
        None
    };
    let mut runs = Vec::new();
    for ((name, spec), hash) in models.iter().zip(&hashes) {
        if let Some(settings) = &decoder {
            let model = match (RemoteSpec::parse(spec), local_decoders.get(name)) {
                (Some(Ok(remote)), _) => Some(crate::decoder_task::DecoderModel::Remote(remote)),
                (_, Some(path)) => Some(crate::decoder_task::DecoderModel::Local(Box::new(
                    Decoder::load(path).map_err(|e| match e.is_bad_input() {
                        true => anyhow::Error::from(BadInput(format!("model {name}: {e}"))),
                        false => anyhow::anyhow!("model {name}: {e}"),
                    })?,
                ))),
                _ => None,
            };
            if let Some(model) = model {
                runs.push(crate::decoder_task::run_decoder_model(
                    args, &mut store, run_id, name, &model, &ds.labels, &test, settings,
                )?);
                continue;
            }
        }
        let r = run_model(
            args,
            &mut store,
            run_id,
            name,
            spec,
            hash,
            &ds,
            &test,
            &train,
            &label_map,
            &descriptions,
        )
        .map_err(|e| match e.downcast::<BadInput>() {
            Ok(b) => anyhow::Error::from(BadInput(format!("model {name}: {b}"))),
            Err(e) => anyhow::anyhow!("model {name}: {e:#}"),
        })?;
        runs.push(r);
    }

    // An example a model has no prediction for (its requests failed past their retries) is
    // left out for every model, so all are scored on the same examples; it is listed, and
    // retried when the same command runs again.
    let failed: std::collections::BTreeMap<&str, Vec<String>> =
        runs.iter().fold(Default::default(), |mut m, r| {
            for (id, why) in &r.failed {
                m.entry(id.as_str())
                    .or_default()
                    .push(format!("{}: {why}", r.name));
            }
            m
        });
    let scored_test: Vec<&Example> = test
        .iter()
        .copied()
        .filter(|e| !failed.contains_key(e.id.as_str()))
        .collect();
    if scored_test.is_empty() {
        return Err(anyhow::anyhow!(
            "every test example failed for some model; nothing to score (rerun to retry them)"
        ));
    }
    let mut doc = comparison_doc(
        &runs,
        &scored_test,
        &ds.labels,
        &args.stats.scoring(args.seed, args.metric),
    )?;
    doc["task"] = json!(args.task.key());
    doc["excluded_examples"] = json!({
        "count": failed.len(),
        "reason": "requests failed past their retries; excluded for every model, retried on the next run",
        "examples": failed.iter().map(|(id, why)| json!({"id": id, "errors": why})).collect::<Vec<_>>(),
    });
    for (m, r) in doc["models"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .zip(&runs)
    {
        m["failed_examples"] = json!(r.failed.len());
        if let Value::Object(extra) = &r.extra {
            for (k, v) in extra {
                m[k] = v.clone();
            }
        }
        if let Some(n) = r.extra["generation"]["invalid_answers"]
            .as_u64()
            .filter(|n| *n > 0)
        {
            if let Some(w) = m["warnings"].as_array_mut() {
                w.push(json!(format!(
                    "generation: {n} of {} answers named no label; they are counted as wrong, in the `invalid` column of the confusion matrix",
                    r.predictions.len()
                )));
            }
        }
    }
    let per_split = ds.rows_per_split();
    doc["dataset"] = json!({
        "path": args.data, "sha256": ds.sha256, "rows_per_split": per_split, "labels": ds.labels,
        "split": ds.split_source, "evaluated_test_examples": scored_test.len(), "train_examples_used": train.len(),
    });
    doc["run"] = json!({
        "id": run_id, "key": key, "resumed": resumed, "lmcompare_version": env!("CARGO_PKG_VERSION"),
        "seed": args.seed, "batch_size": args.batch_size, "threads": rayon::current_num_threads(),
        "backends": {"native": "lmcompare kernels on gemm 0.19", "onnx": "onnxruntime 1.22 via ort 2.0.0-rc.10"},
        "started": store.run_started(run_id).map_err(engine)?, "finished": timestamp(),
        "wall_seconds": started.elapsed().as_secs_f64(), "db": args.db,
    });
    store.finish_run(run_id, &doc.to_string()).map_err(engine)?;
    Ok(doc)
}

/// Vectors of `texts` keyed by text sha256: from the store where cached, the rest computed
/// in batches (`pool` turns a sequence's token states into its vector) and committed batch
/// by batch, so an interrupted run keeps them. `layers` stops the encoder after that many
/// layers. Returns the vectors and how many were computed.
#[allow(clippy::too_many_arguments)]
pub(crate) fn cached_vectors(
    store: &mut Store,
    model: &TextEncoder,
    hash: &str,
    settings: &str,
    texts: &[&str],
    batch_size: usize,
    layers: Option<usize>,
    pb: &ProgressBar,
    pool: &dyn Fn(&[f32], usize) -> Vec<f32>,
) -> Result<(HashMap<String, CachedEmbedding>, usize)> {
    let mut cache = store.embeddings(hash, settings).map_err(engine)?;
    let mut missing: Vec<(&str, String)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for t in texts {
        let h = sha(t);
        if !cache.contains_key(&h) && seen.insert(h.clone()) {
            missing.push((t, h));
        }
    }
    let todo: Vec<&str> = missing.iter().map(|m| m.0).collect();
    let encoded = model.tokenizer.encode_batch(&todo).map_err(engine)?;
    pb.set_position((texts.len() - missing.len()) as u64);
    model
        .run_batches_to(&encoded, batch_size, layers, |idx, hidden, timing| {
            let rows: Vec<(String, Vec<f32>, usize)> = idx
                .iter()
                .enumerate()
                .map(|(j, &i)| {
                    (
                        missing[i].1.clone(),
                        pool(hidden.sequence(j), hidden.dim),
                        encoded[i].ids.len(),
                    )
                })
                .collect();
            store.save_embeddings(hash, settings, &rows, timing.seconds * 1e3)?;
            for (key, vector, tokens) in rows {
                cache.insert(
                    key,
                    CachedEmbedding {
                        vector,
                        tokens,
                        batch_latency_ms: timing.seconds * 1e3,
                        batch_size: idx.len(),
                    },
                );
            }
            pb.inc(idx.len() as u64);
            Ok(())
        })
        .map_err(engine)?;
    Ok((cache, missing.len()))
}

/// How a comparison is scored.
pub(crate) struct Scoring {
    pub bootstrap: usize,
    pub permutations: usize,
    pub seed: u64,
    pub metric: Metric,
    pub correction: Correction,
}

/// Every model's metrics with intervals on the same test examples, pairwise tests,
/// verdicts and the Pareto set: the document `compare` and `tune` report.
pub(crate) fn comparison_doc(
    runs: &[ModelRun],
    test: &[&Example],
    dataset_labels: &[String],
    s: &Scoring,
) -> Result<Value> {
    // Score all models over the dataset's label set, on the same test examples. A model that
    // classifies by generating text may answer something that is no label: such answers get
    // their own `invalid` column (predicted, never gold), outside the macro averages.
    let any_invalid = runs
        .iter()
        .any(|r| r.predictions.iter().any(|p| p.label == INVALID));
    let mut names = dataset_labels.to_vec();
    if any_invalid {
        names.push(INVALID.to_owned());
    }
    let labels = LabelSet::new(names).map_err(|e| anyhow::anyhow!(e.to_string()))?;
    let base = &labels;
    let selected = dataset_labels.len();
    let k = labels.len();
    let gold: Vec<u32> = test
        .iter()
        .map(|e| labels.index_of(&e.label).unwrap_or(0))
        .collect();
    let mut scored = Vec::new();
    for r in runs {
        let by_id: HashMap<&str, &StoredPrediction> = r
            .predictions
            .iter()
            .map(|p| (p.example_id.as_str(), p))
            .collect();
        let mut pred = Vec::with_capacity(test.len());
        let mut proba = Vec::with_capacity(test.len() * k);
        // Generated answers come without probabilities: no calibration metrics for them.
        let mut has_proba = true;
        for e in test {
            let p = by_id
                .get(e.id.as_str())
                .ok_or_else(|| anyhow::anyhow!("model {}: no prediction for {}", r.name, e.id))?;
            pred.push(labels.index_of(&p.label).unwrap_or(0));
            has_proba &= p.probabilities.len() == selected;
            proba.extend(p.probabilities.iter().copied());
            proba.extend(std::iter::repeat_n(0.0, k - selected));
        }
        let preds = Predictions::from_indices(
            labels.clone(),
            selected,
            gold.clone(),
            pred,
            has_proba.then_some(proba),
        )
        .map_err(|e| anyhow::anyhow!(e.to_string()))?;
        scored.push((r.name.clone(), preds));
    }
    let opts = ScoreOptions {
        metric: MetricOptions::default(),
        bootstrap: BootstrapOptions {
            resamples: s.bootstrap,
            seed: s.seed,
            confidence: 0.95,
        },
        permutations: s.permutations,
        main_metric: s.metric,
        correction: s.correction,
    };
    let card = score_models(&scored, &opts).map_err(|e| BadInput(e.to_string()))?;
    let mut doc = metrics_json(&card);
    let main = s.metric;
    for (m, r) in doc["models"].as_array_mut().into_iter().flatten().zip(runs) {
        // The confusion matrix of a model with invalid answers gets their column: gold label
        // by row, `invalid` as the last predicted column.
        let invalid: Vec<&str> = r
            .predictions
            .iter()
            .filter(|p| p.label == INVALID)
            .map(|p| p.example_id.as_str())
            .collect();
        if !invalid.is_empty() {
            let gold_of: HashMap<&str, usize> = test
                .iter()
                .map(|e| (e.id.as_str(), base.index_of(&e.label).unwrap_or(0) as usize))
                .collect();
            let mut col = vec![0u64; selected];
            for id in &invalid {
                if let Some(&g) = gold_of.get(id) {
                    col[g] += 1;
                }
            }
            let cm = &mut m["confusion_matrix"];
            cm["predicted_labels"] = json!([dataset_labels, &[INVALID.to_owned()]].concat());
            if let Some(rows) = cm["matrix"].as_array_mut() {
                for (row, c) in rows.iter_mut().zip(&col) {
                    if let Some(cells) = row.as_array_mut() {
                        cells.truncate(selected);
                        cells.push(json!(c));
                    }
                }
            }
        }
        m["spec"] = json!(r.spec);
        m["backend"] = json!(r.backend);
        m["efficiency"] = r.efficiency.clone();
        m["computed_examples"] = json!(r.computed);
        m["reused_examples"] = json!(r.reused);
        if let Some(x) = r.invariance {
            m["batch_invariance_max_abs_change"] = json!(x);
        }
    }
    // Pareto set: models no other model beats on the main metric and on FLOPs per example.
    let points: Vec<(f64, f64)> = doc["models"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    let q = m["metrics"][main.key()].as_f64().unwrap_or(f64::NAN);
                    let q = if main.higher_is_better() { q } else { -q };
                    let c = m["efficiency"]["flops_per_example"]
                        .as_f64()
                        .or(m["efficiency"]["latency_ms_p50"].as_f64())
                        .unwrap_or(f64::INFINITY);
                    (q, c)
                })
                .collect()
        })
        .unwrap_or_default();
    let pareto: Vec<&str> = runs
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            let (q, c) = points[*i];
            !points
                .iter()
                .enumerate()
                .any(|(j, &(q2, c2))| j != *i && q2 >= q && c2 <= c && (q2 > q || c2 < c))
        })
        .map(|(_, r)| r.name.as_str())
        .collect();
    doc["pareto"] = json!({"quality": main.key(), "cost": "flops_per_example", "models": pareto});
    doc["verdicts"] = json!(doc["pairwise"]
        .as_array()
        .map(|ps| ps.iter().map(|p| p["verdict"].clone()).collect::<Vec<_>>())
        .unwrap_or_default());
    Ok(doc)
}

#[allow(clippy::too_many_arguments)]
fn run_model(
    args: &CompareArgs,
    store: &mut Store,
    run_id: i64,
    name: &str,
    spec: &str,
    hash: &str,
    ds: &Dataset,
    test: &[&Example],
    train: &[&Example],
    label_map: &HashMap<String, String>,
    descriptions: &HashMap<String, String>,
) -> Result<ModelRun> {
    let resolved = resolve(spec).map_err(engine)?;
    let dir = resolved.dir.clone();
    let is_onnx = resolved.onnx.is_some();
    let model = TextEncoder::load(
        resolved,
        &LoadOptions {
            max_length: args.max_length,
            ..Default::default()
        },
    )
    .map_err(engine)?;
    store
        .register_model(hash, spec, model.backend())
        .map_err(engine)?;
    let existing = store.predictions(run_id, name).map_err(engine)?;
    let labels = &ds.labels;
    let mut invariance = None;
    // (work done now, work reused from the store): test examples for classify, distinct
    // texts embedded for probe and zero-shot.
    let ((computed, reused), rows_for_eff, head_labels) = match args.task {
        Task::Classify => {
            let model_labels = model.labels().map(<[String]>::to_vec).ok_or_else(|| {
                BadInput(format!(
                    "{spec} has no classification head; use --task probe or --task zero-shot"
                ))
            })?;
            let mapping: Vec<usize> = model_labels
                .iter()
                .map(|l| {
                    let target = label_map.get(l).unwrap_or(l);
                    labels.iter().position(|x| x == target)
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    BadInput(format!(
                        "cannot map the model's labels [{}] to the dataset's [{}]; pass --label-map FILE with a JSON object model_label -> dataset_label",
                        model_labels.join(", "),
                        labels.join(", ")
                    ))
                })?;
            let todo: Vec<&Example> = test
                .iter()
                .copied()
                .filter(|e| !existing.contains_key(&e.id))
                .collect();
            let texts: Vec<&str> = todo.iter().map(|e| e.text.as_str()).collect();
            let encoded = model.tokenizer.encode_batch(&texts).map_err(engine)?;
            let pb = bar(args.quiet, test.len(), name);
            pb.set_position((test.len() - todo.len()) as u64);
            let mut err = None;
            model
                .run_batches(&encoded, args.batch_size, |idx, hidden, timing| {
                    let rows: Vec<StoredPrediction> = match classify_rows(
                        &model,
                        idx,
                        hidden,
                        &todo,
                        &encoded,
                        &mapping,
                        labels,
                        timing.seconds * 1e3,
                    ) {
                        Ok(r) => r,
                        Err(e) => {
                            err = Some(e);
                            return Ok(());
                        }
                    };
                    store.save_predictions(run_id, name, &rows)?;
                    pb.inc(idx.len() as u64);
                    Ok(())
                })
                .map_err(engine)?;
            pb.finish_and_clear();
            if let Some(e) = err {
                return Err(e);
            }
            if args.check_invariance {
                let sample: Vec<&str> = test.iter().take(16).map(|e| e.text.as_str()).collect();
                let enc = model.tokenizer.encode_batch(&sample).map_err(engine)?;
                let a = model.classify(&enc, 1).map_err(engine)?;
                let b = model.classify(&enc, args.batch_size).map_err(engine)?;
                invariance = Some(max_abs(&a, &b));
            }
            (
                (todo.len(), test.len() - todo.len()),
                None,
                Some(model_labels.len()),
            )
        }
        Task::MultipleChoice | Task::Perplexity | Task::Generate => {
            return Err(BadInput(format!(
                "{spec}: multiple-choice scores generative models (openai:URL#MODEL)"
            ))
            .into())
        }
        Task::Probe | Task::ZeroShot => {
            let settings = format!(
                "max_length={};pooling={};normalize={}",
                model.tokenizer.max_length(),
                model.pooling.mode.key(),
                model.pooling.normalize
            );
            let needed: Vec<&Example> = if args.task == Task::Probe {
                train.iter().chain(test.iter()).copied().collect()
            } else {
                test.to_vec()
            };
            let texts: Vec<&str> = needed.iter().map(|e| e.text.as_str()).collect();
            let pb = bar(args.quiet, needed.len(), name);
            let pooling = model.pooling;
            let (cache, missing) = cached_vectors(
                store,
                &model,
                hash,
                &settings,
                &texts,
                args.batch_size,
                None,
                &pb,
                &|states, dim| pooling.pool(states, dim),
            )?;
            pb.finish_and_clear();
            let emb = |e: &Example| {
                cache
                    .get(&sha(&e.text))
                    .map(|c| &c.vector)
                    .ok_or_else(|| anyhow::anyhow!("missing embedding for {}", e.id))
            };
            let probs: Vec<Vec<f64>> = if args.task == Task::Probe {
                let x: Vec<Vec<f32>> = train
                    .iter()
                    .map(|e| emb(e).cloned())
                    .collect::<Result<_>>()?;
                let y: Vec<usize> = train
                    .iter()
                    .map(|e| labels.iter().position(|l| *l == e.label).unwrap_or(0))
                    .collect();
                let probe = Probe::fit(&x, &y, labels.len(), &ProbeOptions::default());
                test.iter()
                    .map(|e| Ok(probe.predict_proba(emb(e)?)))
                    .collect::<Result<_>>()?
            } else {
                let desc: Vec<String> = labels
                    .iter()
                    .map(|l| descriptions.get(l).cloned().unwrap_or_else(|| l.clone()))
                    .collect();
                let refs: Vec<&str> = desc.iter().map(String::as_str).collect();
                let enc = model.tokenizer.encode_batch(&refs).map_err(engine)?;
                let label_emb = model.embed(&enc, args.batch_size).map_err(engine)?;
                test.iter()
                    .map(|e| {
                        let v = emb(e)?;
                        // Cosine similarity scaled by 20 (sentence-transformers' contrastive
                        // scale) through a softmax: probabilities that track similarity.
                        let sims: Vec<f32> =
                            label_emb.iter().map(|l| 20.0 * cosine(v, l)).collect();
                        Ok(softmax64(&sims))
                    })
                    .collect::<Result<_>>()?
            };
            let rows: Vec<StoredPrediction> = test
                .iter()
                .zip(&probs)
                .map(|(e, p)| {
                    let c = cache.get(&sha(&e.text));
                    StoredPrediction {
                        example_id: e.id.clone(),
                        label: labels[argmax(p)].clone(),
                        probabilities: p.clone(),
                        tokens: c.map_or(0, |c| c.tokens),
                        batch_latency_ms: c.map_or(0.0, |c| c.batch_latency_ms),
                        batch_size: c.map_or(1, |c| c.batch_size),
                    }
                })
                .filter(|p| !existing.contains_key(&p.example_id))
                .collect();
            store
                .save_predictions(run_id, name, &rows)
                .map_err(engine)?;
            if args.check_invariance {
                let sample: Vec<&str> = test.iter().take(16).map(|e| e.text.as_str()).collect();
                let enc = model.tokenizer.encode_batch(&sample).map_err(engine)?;
                let a = model.embed(&enc, 1).map_err(engine)?;
                let b = model.embed(&enc, args.batch_size).map_err(engine)?;
                invariance = Some(max_abs(&a, &b));
            }
            let eff_rows: Vec<(usize, f64, usize)> = test
                .iter()
                .filter_map(|e| {
                    cache
                        .get(&sha(&e.text))
                        .map(|c| (c.tokens, c.batch_latency_ms, c.batch_size))
                })
                .collect();
            let distinct: std::collections::HashSet<String> =
                needed.iter().map(|e| sha(&e.text)).collect();
            ((missing, distinct.len() - missing), Some(eff_rows), None)
        }
    };
    let predictions: Vec<StoredPrediction> = store
        .predictions(run_id, name)
        .map_err(engine)?
        .into_values()
        .collect();
    let eff_rows = rows_for_eff.unwrap_or_else(|| {
        predictions
            .iter()
            .map(|p| (p.tokens, p.batch_latency_ms, p.batch_size))
            .collect()
    });
    let eff = efficiency(&model, is_onnx, &dir, &eff_rows, head_labels)?;
    Ok(ModelRun {
        name: name.to_owned(),
        spec: spec.to_owned(),
        reused,
        computed,
        predictions,
        efficiency: eff,
        backend: model.backend().to_owned(),
        invariance,
        failed: Vec::new(),
        extra: Value::Null,
    })
}

#[allow(clippy::too_many_arguments)]
fn classify_rows(
    model: &TextEncoder,
    idx: &[usize],
    hidden: &lmcompare_engine::model::Hidden,
    todo: &[&Example],
    encoded: &[Encoded],
    mapping: &[usize],
    labels: &[String],
    latency_ms: f64,
) -> Result<Vec<StoredPrediction>> {
    let logits = model
        .head_logits(hidden)
        .ok_or_else(|| anyhow::anyhow!("no classification head"))?;
    Ok(idx
        .iter()
        .enumerate()
        .map(|(j, &i)| {
            let p = softmax64(&logits[j]);
            let mut mapped = vec![0.0f64; labels.len()];
            for (c, v) in p.iter().enumerate() {
                mapped[mapping[c]] += v;
            }
            StoredPrediction {
                example_id: todo[i].id.clone(),
                label: labels[argmax(&mapped)].clone(),
                probabilities: mapped,
                tokens: encoded[i].ids.len(),
                batch_latency_ms: latency_ms,
                batch_size: idx.len(),
            }
        })
        .collect())
}

pub(crate) fn argmax(p: &[f64]) -> usize {
    p.iter()
        .enumerate()
        .fold(0, |b, (i, v)| if *v > p[b] { i } else { b })
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(1e-12)
}

fn max_abs(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs() as f64))
        .fold(0.0, f64::max)
}

fn render(doc: &Value, format: Option<Format>, out: Option<&Path>) -> Result<()> {
    if let Some(dir) = out {
        std::fs::create_dir_all(dir)
            .map_err(|e| BadInput(format!("{}: cannot create: {e}", dir.display())))?;
        std::fs::write(
            dir.join("report.json"),
            serde_json::to_string_pretty(doc)? + "\n",
        )?;
        let md = if doc["task"] == "perplexity" {
            lmcompare_report::render_perplexity(doc, true)
        } else if doc["task"] == "generate" {
            lmcompare_report::render_generate(doc, true)
        } else {
            render_compare_markdown(doc)
        };
        std::fs::write(dir.join("report.md"), md)?;
    }
    let perplexity = doc["task"] == "perplexity";
    let generate = doc["task"] == "generate";
    match resolve_format(format) {
        Format::Table if generate => emit(&lmcompare_report::render_generate(doc, false)),
        Format::Markdown if generate => emit(&lmcompare_report::render_generate(doc, true)),
        Format::Json => emit(&(serde_json::to_string_pretty(doc)? + "\n")),
        Format::Table if perplexity => emit(&lmcompare_report::render_perplexity(doc, false)),
        Format::Markdown if perplexity => emit(&lmcompare_report::render_perplexity(doc, true)),
        Format::Table => emit(&render_compare_table(doc)),
        Format::Markdown => emit(&render_compare_markdown(doc)),
    }
}

pub fn run(args: CompareArgs) -> Result<()> {
    let doc = compare(&args)?;
    render(&doc, args.format, args.out.as_deref())
}

#[derive(Args)]
pub struct DemoArgs {
    #[arg(long, default_value = "lmcompare.db")]
    db: PathBuf,
    /// Use at most N reviews per split (default: all 4,866).
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long)]
    format: Option<Format>,
    #[arg(long)]
    quiet: bool,
}

/// The shipped comparison: MiniLM-L6 (safetensors), its int8 ONNX export and the 3-layer
/// MiniLM (ONNX) as frozen encoders with a logistic-regression probe, on the Rotten Tomatoes
/// fresh/rotten reviews.
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
        return Err(BadInput(format!("assets/{missing} is missing: run `bash scripts/fetch-assets.sh` first (from the repository root)")).into());
    }
    let cmp = CompareArgs {
        models: vec![
            "minilm-l6=assets/models/all-MiniLM-L6-v2".into(),
            "minilm-l6-int8=assets/models/all-MiniLM-L6-v2-int8-onnx".into(),
            "minilm-l3=assets/models/paraphrase-MiniLM-L3-v2-onnx".into(),
            // A generative LLM beside the encoders: zero-shot, by label log-likelihood.
            "gemma-270m=assets/models/gemma-3-270m-q4_k_m.gguf".into(),
        ],
        data: assets.join("data/rotten_tomatoes_binary.jsonl"),
        cols: ColumnArgs {
            text_col: "text".into(),
            label_col: "label".into(),
            split_col: "split".into(),
            id_col: "id".into(),
        },
        task: Task::Probe,
        label_map: None,
        label_desc: Vec::new(),
        limit: args.limit,
        batch_size: 32,
        max_length: Some(128),
        seed: 0,
        test_size: 0.2,
        db: args.db,
        out: None,
        format: args.format,
        stats: StatsArgs {
            bootstrap: 1000,
            permutations: 1000,
            correction: Correction::Holm,
        },
        metric: Metric::F1Macro,
        check_invariance: false,
        quiet: args.quiet,
        template: "Review: {text}\nSentiment:".into(),
        verbalizers: vec!["fresh= positive".into(), "rotten= negative".into()],
        shots: 0,
        length_norm: crate::decoder_task::LengthNorm::None,
        concurrency: 4,
        max_rps: None,
        timeout: 60.0,
        retries: 5,
        backoff_ms: 200,
        api_key_env: None,
        circular: false,
        max_tokens: 32,
        stop: vec!["\n".into()],
        generate_api: crate::generate_task::GenerateApi::Chat,
        decoder_scoring: crate::decoder_task::DecoderScoring::Loglik,
        window_chars: 2000,
        context_chars: 500,
    };
    run(cmp)
}

#[derive(Args)]
pub struct RunsArgs {
    #[arg(long, default_value = "lmcompare.db")]
    db: PathBuf,
    #[arg(long)]
    format: Option<Format>,
}

pub fn runs(args: RunsArgs) -> Result<()> {
    if !args.db.exists() {
        return Err(BadInput(format!("{}: no such store", args.db.display())).into());
    }
    let store = Store::open(&args.db).map_err(engine)?;
    let runs = store.runs().map_err(engine)?;
    match resolve_format(args.format) {
        Format::Json => emit(&(serde_json::to_string_pretty(&json!(runs.iter().map(|r| json!({"id": r.id, "started": r.started, "finished": r.finished, "task": r.task, "dataset": r.dataset, "models": r.models.split(',').collect::<Vec<_>>()})).collect::<Vec<_>>()))? + "\n")),
        _ => {
            let mut s = format!("{:>4}  {:<20}  {:<9}  {:<9}  {:<40}  models\n", "id", "started", "status", "task", "dataset");
            for r in runs {
                s.push_str(&format!("{:>4}  {:<20}  {:<9}  {:<9}  {:<40}  {}\n", r.id, r.started, if r.finished.is_some() { "finished" } else { "partial" }, r.task, r.dataset, r.models));
            }
            emit(&s)
        }
    }
}

#[derive(Args)]
pub struct ReportArgs {
    #[arg(long)]
    run: i64,
    #[arg(long, default_value = "lmcompare.db")]
    db: PathBuf,
    #[arg(long)]
    format: Option<Format>,
}

pub fn report(args: ReportArgs) -> Result<()> {
    if !args.db.exists() {
        return Err(BadInput(format!("{}: no such store", args.db.display())).into());
    }
    let store = Store::open(&args.db).map_err(engine)?;
    let text = store.run_result(args.run).map_err(engine)?.ok_or_else(|| {
        BadInput(format!(
            "run {} did not finish; rerun the same compare command to resume it",
            args.run
        ))
    })?;
    let doc: Value = serde_json::from_str(&text)?;
    if doc.get("trials").is_some() {
        return match resolve_format(args.format) {
            Format::Json => emit(&(serde_json::to_string_pretty(&doc)? + "\n")),
            Format::Table => emit(&lmcompare_report::render_tune_table(&doc)),
            Format::Markdown => emit(&lmcompare_report::render_tune_markdown(&doc)),
        };
    }
    render(&doc, args.format, None)
}
