//! `compare`: every model on the same data; the ten key metrics with intervals, efficiency
//! measured on the run itself, paired tests, verdicts and the Pareto set. Every batch is
//! committed to the store, so an interrupted run resumes where it stopped.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use lmcompare_engine::data::{load_dataset, Example, Split};
use lmcompare_engine::store::{timestamp, NewRun, Store};
use serde_json::{json, Value};

use crate::cache::{encoder_hash, sha};
use crate::config::{CompareConfig, DecoderScoring, Task};
use crate::models::{parse_named_specs, resolve, NamedSpec, ResolveOptions, Resolved};
use crate::report::{comparison_doc, dataset_info, ReportContext, Scoring};
use crate::runner::{limited, ModelRun, RunContext};
use crate::tasks::encoder::{run_encoder, EncoderInputs};
use crate::tasks::generation::{classify_by_generation, generate_options};
use crate::tasks::loglik::run_loglik;
use crate::tasks::prompts::{choice_dataset, prompt_settings};
use crate::{bad, fail, Error, Result};
use lmcompare_report::doc::{CompareReport, Excluded, ExcludedExample};

fn load_label_map(path: Option<&Path>) -> Result<HashMap<String, String>> {
    let Some(p) = path else {
        return Ok(HashMap::new());
    };
    let text = lmcompare_engine::data::read_text_file(p)?;
    serde_json::from_str(&text).map_err(|e| {
        bad!(
            "{}: expected a JSON object of model label -> dataset label: {e}",
            p.display()
        )
    })
}

pub(crate) fn label_descriptions(
    label_desc: &[String],
    labels: &[String],
) -> Result<HashMap<String, String>> {
    let mut descriptions = HashMap::new();
    for d in label_desc {
        let (l, t) = d
            .split_once('=')
            .ok_or_else(|| bad!("--label-desc {d:?}: expected LABEL=TEXT"))?;
        if !labels.iter().any(|x| x == l) {
            return Err(bad!(
                "--label-desc: {l:?} is not a dataset label ({})",
                labels.join(", ")
            ));
        }
        descriptions.insert(l.to_owned(), t.to_owned());
    }
    Ok(descriptions)
}

/// A resolved model and its content hash for the run key.
struct Competitor {
    spec: NamedSpec,
    resolved: Resolved,
    hash: String,
}

fn competitors(cfg: &CompareConfig, store: &Store) -> Result<Vec<Competitor>> {
    let opts = ResolveOptions {
        remote: &cfg.remote,
        seed: cfg.seed,
        quiet: cfg.quiet,
        generate_api: cfg.prompt.generate_api,
        max_length: cfg.max_length,
    };
    let mut out = Vec::new();
    for m in parse_named_specs(&cfg.models)? {
        let resolved = resolve(&m, store, &opts)?;
        let hash = match &resolved {
            // A generative model by its identity (a server's URL and model id, a local
            // decoder's file hashes), whatever the backend.
            Resolved::Generative(g) => sha(g.identity()),
            Resolved::Encoder(r) => {
                if cfg.task == Task::MultipleChoice {
                    return Err(bad!(
                        "model {}: multiple-choice scores generative models (a .gguf file, a causal-LM folder or openai:URL#MODEL); {} is an encoder",
                        m.name,
                        m.spec
                    ));
                }
                encoder_hash(store, r)?
            }
        };
        let backend = match &resolved {
            Resolved::Generative(_) => "generative",
            Resolved::Encoder(_) => "encoder",
        };
        store.register_model(&hash, &m.spec, backend)?;
        out.push(Competitor {
            spec: m,
            resolved,
            hash,
        });
    }
    Ok(out)
}

/// What `compare` reports: the typed comparison of classification-style tasks, or the
/// document of a task scored over units (perplexity, generate).
pub enum Document {
    Compare(Box<CompareReport>),
    Units(Value),
}

impl Document {
    pub fn to_json(&self) -> Result<Value> {
        Ok(match self {
            Document::Compare(r) => serde_json::to_value(r)?,
            Document::Units(v) => v.clone(),
        })
    }

    /// A stored document, read back: typed when it is a comparison.
    pub fn from_json(v: Value) -> Result<Document> {
        match v["task"].as_str() {
            Some("perplexity" | "generate") => Ok(Document::Units(v)),
            _ => Ok(Document::Compare(Box::new(
                serde_json::from_value(v).map_err(|e| {
                    fail!("the stored report is not a comparison this lmcompare can read ({e})")
                })?,
            ))),
        }
    }
}

/// Runs `compare` and returns its report (also stored as the run's result).
pub fn compare(cfg: &CompareConfig) -> Result<Document> {
    let started = Instant::now();
    match cfg.task {
        Task::Perplexity => {
            return Ok(Document::Units(crate::tasks::perplexity::perplexity(
                cfg, started,
            )?))
        }
        Task::Generate => {
            return Ok(Document::Units(crate::tasks::generation::generate(
                cfg, started,
            )?))
        }
        _ => {}
    }
    if cfg.batch_size == 0 {
        return Err(bad!("--batch-size must be at least 1"));
    }
    let (ds, choices) = if cfg.task == Task::MultipleChoice {
        let (ds, choices) = choice_dataset(&cfg.data)?;
        (ds, Some(choices))
    } else {
        (
            load_dataset(&cfg.data, &cfg.cols.columns(), cfg.test_size, cfg.seed)?,
            None,
        )
    };
    let test = limited(&ds, Split::Test, cfg.limit);
    let train = limited(&ds, Split::Train, cfg.limit);
    if cfg.task == Task::Probe {
        check_probe_train(&cfg.data, &train)?;
    }
    let label_map = load_label_map(cfg.label_map.as_deref())?;
    let descriptions = label_descriptions(&cfg.label_desc, &ds.labels)?;
    let mut store = Store::open(&cfg.db)?;
    let models = competitors(cfg, &store)?;
    // The run key covers everything that changes results (batch size does not: inference
    // is per sequence, see --check-invariance).
    let p = &cfg.prompt;
    let settings = json!({
        "task": cfg.task.key(), "models": models.iter().map(|m| json!([m.spec.name, m.hash])).collect::<Vec<_>>(),
        "dataset": ds.sha256, "columns": cfg.cols.names(),
        "limit": cfg.limit, "max_length": cfg.max_length, "seed": cfg.seed, "test_size": cfg.test_size,
        "label_map": cfg.label_map.as_ref().map(|_| &label_map), "label_desc": &cfg.label_desc,
        "template": &p.template, "verbalizers": &p.verbalizers, "shots": p.shots,
        "length_norm": format!("{:?}", p.length_norm), "circular": p.circular,
        "decoder_scoring": format!("{:?}", p.decoder_scoring), "max_tokens": p.max_tokens, "stop": &p.stop,
    });
    let key = sha(&settings.to_string());
    let names: Vec<&str> = models.iter().map(|m| m.spec.name.as_str()).collect();
    let (run_id, resumed) = store.begin_run(&NewRun {
        key: &key,
        task: cfg.task.key(),
        dataset_sha: &ds.sha256,
        dataset_path: &cfg.data.display().to_string(),
        rows: ds.examples.len(),
        models: &names.join(","),
        settings: &settings.to_string(),
    })?;
    crate::runner::claim_or_wait(&store, run_id)?;
    // A model earlier runs scored on the same data under the same settings is not run
    // again: its predictions are copied into this run and reported as reused.
    let mut reused_from = Vec::new();
    for m in &models {
        let mut from = Vec::new();
        for (run, name) in
            crate::leaderboard::earlier_predictions(&store, run_id, &ds.sha256, &settings, &m.hash)?
        {
            if store.copy_predictions(run, &name, run_id, &m.spec.name)? > 0 {
                from.push((run, name));
            }
        }
        reused_from.push(from);
    }
    let prompts = if models
        .iter()
        .any(|m| matches!(m.resolved, Resolved::Generative(_)))
    {
        Some(prompt_settings(p, cfg.seed, &ds.labels, &train, choices)?)
    } else {
        None
    };
    let inputs = EncoderInputs {
        task: cfg.task,
        labels: &ds.labels,
        test: &test,
        train: &train,
        label_map: &label_map,
        descriptions: &descriptions,
        max_length: cfg.max_length,
        check_invariance: cfg.check_invariance,
    };
    let mut ctx = RunContext {
        store: &mut store,
        run_id,
        batch_size: cfg.batch_size,
        quiet: cfg.quiet,
    };
    let hashes: Vec<String> = models.iter().map(|m| m.hash.clone()).collect();
    let texts: Vec<&str> = test.iter().map(|e| e.text.as_str()).collect();
    let mut tokenizers = Vec::new();
    for m in &models {
        if let (Resolved::Encoder(r), false) = (&m.resolved, texts.is_empty()) {
            let (stats, _, _) =
                crate::inspect::measure_tokenizer(&m.spec.name, &r.dir, cfg.max_length, &texts)
                    .map_err(|e| with_model(e, &m.spec.name))?;
            tokenizers.push(stats);
        }
    }
    // How explain can run on each model, as the comparison scored it (with --explain).
    let explainable: Vec<crate::explain::ComparisonModel> = models
        .iter()
        .filter(|_| cfg.explain > 0)
        .map(|m| {
            use crate::explain::ExplainKind;
            let kind = match &m.resolved {
                Resolved::Encoder(r) if r.onnx.is_some() && cfg.task != Task::Classify => {
                    ExplainKind::PooledOnnx
                }
                Resolved::Encoder(r) if r.onnx.is_some() => ExplainKind::Unsupported(
                    "an ONNX classifier has no gradient path; lmcompare explain --method occlusion covers ONNX graphs under --task probe or zero-shot".into(),
                ),
                Resolved::Encoder(r) if cfg.task == Task::Classify => {
                    ExplainKind::Classifier(r.dir.clone())
                }
                Resolved::Encoder(r) => ExplainKind::Pooled(r.dir.clone()),
                Resolved::Generative(_) => match crate::models::local_decoder_path(&m.spec.spec) {
                    Some(path)
                        if p.decoder_scoring != DecoderScoring::Generate
                            && prompts.as_ref().is_some_and(|s| s.choices.is_none()) =>
                    {
                        ExplainKind::Decoder(path)
                    }
                    Some(_) => ExplainKind::Unsupported(
                        "answers by generation have no label probabilities to attribute".into(),
                    ),
                    None => ExplainKind::Unsupported(
                        "a remote model; lmcompare explain --method occlusion or shapley explains it through the answer cache".into(),
                    ),
                },
            };
            crate::explain::ComparisonModel {
                name: m.spec.name.clone(),
                spec: m.spec.spec.clone(),
                kind,
            }
        })
        .collect();
    let mut runs = Vec::new();
    for m in models {
        let name = &m.spec.name;
        let r = match (m.resolved, &prompts) {
            (Resolved::Generative(g), Some(s))
                if p.decoder_scoring == DecoderScoring::Generate && s.choices.is_none() =>
            {
                let opts = generate_options(p);
                classify_by_generation(&mut ctx, name, g.as_ref(), &ds.labels, &test, s, &opts)
            }
            (Resolved::Generative(g), Some(s)) => run_loglik(
                &mut ctx,
                name,
                g.as_ref(),
                &ds.labels,
                &test,
                s,
                p.length_norm,
            ),
            (Resolved::Generative(_), None) => Err(fail!("no prompt settings")),
            (Resolved::Encoder(r), _) => run_encoder(&mut ctx, name, &m.hash, r, &inputs),
        };
        let mut r = r.map_err(|e| with_model(e, name))?;
        let from = &reused_from[runs.len()];
        if r.computed == 0 && !from.is_empty() {
            if let Some(e) = crate::leaderboard::measured_efficiency(&*ctx.store, from) {
                r.efficiency = e;
            }
        }
        runs.push(r);
    }
    let scored = scored_examples(&runs, &test)?;
    let ctx = ReportContext {
        task: cfg.task.key().to_owned(),
        dataset: dataset_info(&ds, &cfg.data, scored.examples.len(), train.len()),
        run: json!({
            "id": run_id, "key": key, "resumed": resumed, "lmcompare_version": env!("CARGO_PKG_VERSION"),
            "seed": cfg.seed, "batch_size": cfg.batch_size, "threads": rayon::current_num_threads(),
            "backends": {"native": "lmcompare kernels on gemm 0.19", "onnx": "onnxruntime 1.22 via ort 2.0.0-rc.10"},
            "started": store.run_started(run_id)?, "finished": timestamp(),
            "wall_seconds": started.elapsed().as_secs_f64(), "db": cfg.db,
            "protocol": protocol(cfg, prompts.as_ref(), &runs),
        }),
        excluded: Some(scored.excluded()),
        hashes,
        examples_cap: cfg.html_examples,
        tokenizers,
    };
    let mut report = comparison_doc(&runs, &scored.examples, &ds.labels, &scoring(cfg), ctx)?;
    if cfg.explain > 0 {
        let inputs = crate::explain::ComparisonInputs {
            task: cfg.task,
            labels: &ds.labels,
            train: &train,
            descriptions: &descriptions,
            prompts: prompts.as_ref(),
            length_norm: p.length_norm,
            max_length: cfg.max_length,
        };
        report.explanations = Some(crate::explain::for_comparison(
            &runs,
            &explainable,
            &scored.examples,
            &inputs,
            cfg.explain,
        )?);
    }
    for (m, from) in report.models.iter_mut().zip(reused_from) {
        m.reused_from_runs = from.into_iter().map(|(run, _)| run).collect();
    }
    store.finish_run(run_id, &serde_json::to_string(&report)?)?;
    Ok(Document::Compare(Box::new(report)))
}

/// How the models were asked, on the record: what a reader needs to reproduce the numbers
/// with another harness.
fn protocol(
    cfg: &CompareConfig,
    prompts: Option<&crate::tasks::prompts::PromptSettings>,
    runs: &[ModelRun],
) -> Value {
    let truncated: serde_json::Map<String, Value> = runs
        .iter()
        .map(|r| (r.name.clone(), json!(r.efficiency.truncated_contexts)))
        .collect();
    let mut v = json!({
        "seeds": {
            "split": format!("seed {} for the stratified train/test split (when the data has no split column; test fraction {})", cfg.seed, cfg.test_size),
            "statistics": format!("seed {} for bootstrap resamples and permutations", cfg.seed),
        },
        "encoders": {
            "truncation": "right, at --max-length or the model's own limit; the special tokens ([CLS]/[SEP], <s>/</s>) are kept",
            "max_length": cfg.max_length,
        },
        "truncated": truncated,
    });
    if let Some(s) = prompts {
        let p = &cfg.prompt;
        v["seeds"]["few_shot"] = json!(format!(
            "seed {} (xor 0x73686f74) shuffles the train split; the first {} are the shots",
            cfg.seed, p.shots
        ));
        v["decoders"] = json!({
            "beginning_of_sequence": "every sequence starts with what the tokenizer's encoding of an empty string yields (BOS for Llama- and Gemma-style tokenizers, nothing for GPT-2- and Qwen-style ones; an empty context then starts from BOS or end-of-text), as lm-evaluation-harness 0.4 does by default",
            "template": s.template,
            "few_shot_delimiter": "\n\n",
            "target_delimiter": "none: each verbaliser carries its own leading space",
            "verbalizers": s.verbalizers,
            "shots": s.shots.len(),
            "context_continuation_split": "trailing spaces of the context move to the continuation; context + continuation are encoded whole and the continuation is what follows the context's own tokens (lm-evaluation-harness)",
            "truncation": "left: context + continuation - 1 tokens must fit the positions (or --max-length); beyond, each continuation keeps the last (positions + 1 - its length) context tokens, as lm-evaluation-harness's (context + continuation)[-(max_length + 1):][:-1]",
            "max_length": cfg.max_length,
            "scoring": format!("{:?}", p.decoder_scoring).to_lowercase(),
            "length_normalisation": format!("{:?}", p.length_norm).to_lowercase(),
            "generation": {"max_tokens": p.max_tokens, "stop": p.stop, "decoding": "greedy"},
        });
    }
    v
}

/// The model's name in front of its error (same kind of error).
fn with_model(e: Error, name: &str) -> Error {
    let prefix = format!("model {name}");
    match &e {
        Error::BadInput(m) | Error::Failed(m) if m.starts_with(&prefix) => e,
        _ => e.context(prefix),
    }
}

fn check_probe_train(data: &Path, train: &[&Example]) -> Result<()> {
    if train.is_empty() {
        return Err(bad!(
            "{}: the train split is empty; the probe task trains on it",
            data.display()
        ));
    }
    let mut present: Vec<&str> = train.iter().map(|e| e.label.as_str()).collect();
    present.sort();
    present.dedup();
    if present.len() < 2 {
        return Err(bad!(
            "{}: the train split has a single label; a probe needs at least two",
            data.display()
        ));
    }
    Ok(())
}

pub(crate) fn scoring(cfg: &CompareConfig) -> Scoring {
    Scoring {
        bootstrap: cfg.stats.bootstrap,
        permutations: cfg.stats.permutations,
        seed: cfg.seed,
        metric: cfg.metric,
        correction: cfg.stats.correction,
    }
}

/// The test examples every model has a prediction for, and the rest with why.
pub struct ScoredExamples<'a> {
    pub examples: Vec<&'a Example>,
    /// Example id → "model: why" per model that failed it.
    pub excluded: BTreeMap<String, Vec<String>>,
}

impl ScoredExamples<'_> {
    fn excluded(&self) -> Excluded {
        Excluded {
            count: self.excluded.len(),
            reason: "requests failed past their retries; excluded for every model, retried on the next run".into(),
            examples: self
                .excluded
                .iter()
                .map(|(id, why)| ExcludedExample {
                    id: id.clone(),
                    errors: why.clone(),
                })
                .collect(),
        }
    }
}

/// An example a model has no prediction for (its requests failed past their retries) is
/// left out for every model, so all are scored on the same examples; it is listed, and
/// retried when the same command runs again.
pub fn scored_examples<'a>(runs: &[ModelRun], test: &[&'a Example]) -> Result<ScoredExamples<'a>> {
    let mut excluded: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in runs {
        for (id, why) in &r.failed {
            excluded
                .entry(id.clone())
                .or_default()
                .push(format!("{}: {why}", r.name));
        }
    }
    let examples: Vec<&Example> = test
        .iter()
        .copied()
        .filter(|e| !excluded.contains_key(&e.id))
        .collect();
    if examples.is_empty() {
        return Err(if test.is_empty() {
            bad!("no test examples to score (check --limit and the data's split column)")
        } else {
            fail!(
                "every test example failed for some model; nothing to score (rerun to retry them)"
            )
        });
    }
    Ok(ScoredExamples { examples, excluded })
}
