//! Generative models answering prompts greedily: `compare --task generate` (exact match and
//! token F1 against references, SQuAD's normalisation, bootstrap intervals over prompts and
//! paired bootstrap tests), and classification by generation (an answer must name a label;
//! one that names none is predicted as `invalid`, counted and listed, never dropped).
//! Every answer is cached, so a rerun or resumed run generates nothing twice.

use std::path::Path;

use lmcompare_engine::data::Example;
use lmcompare_engine::profile::percentile;
use lmcompare_engine::store::{Store, StoredPrediction};
use lmcompare_metrics::text_match::{best_over_references, normalize_answer};
use lmcompare_metrics::unit_bootstrap::{bootstrap_pairs, percentile_interval, Resampled, Wording};
use lmcompare_report::doc::Efficiency;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde_json::{json, Value};

use super::prompts::{prompt, PromptSettings};
use crate::cache::{sha, Answers, CachedModel};
use crate::config::{CompareConfig, GenerateApi, PromptConfig};
use crate::models::{Answer, GenerateOptions, GenerativeModel, RequestKind};
use crate::runner::{bar, ModelRun, PeakMemory, RunContext, INVALID};
use crate::{bad, fail, Result};

/// `text` cut before the first stop sequence.
pub fn cut_at_stop(text: &str, stops: &[String]) -> String {
    let end = stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
        .unwrap_or(text.len());
    text[..end].to_owned()
}

/// The generation settings of a run.
pub fn generate_options(p: &PromptConfig) -> GenerateOptions {
    GenerateOptions {
        max_tokens: p.max_tokens,
        stop: p.stop.clone(),
        api: match p.generate_api {
            GenerateApi::Chat => "chat",
            GenerateApi::Completions => "completions",
        },
    }
}

/// Greedy answers to `prompts`, through the store.
pub fn answers(
    store: &mut Store,
    name: &str,
    model: &dyn GenerativeModel,
    prompts: &[String],
    options: &GenerateOptions,
    quiet: bool,
) -> Result<Answers<String>> {
    let pb = bar(quiet, prompts.len(), name);
    let a = CachedModel::new(model).generate_until(store, prompts, options, &pb)?;
    pb.finish_and_clear();
    if !quiet {
        for note in model.notes() {
            eprintln!("note: {}", lmcompare_report::escape_controls(&note));
        }
    }
    Ok(a)
}

/// The label a generated answer names: its normalised text equals, or starts with as a whole
/// word, exactly one label's verbaliser or name.
pub fn label_of_answer(answer: &str, labels: &[String], verbalizers: &[String]) -> Option<usize> {
    let a = normalize_answer(answer);
    let hits: Vec<usize> = labels
        .iter()
        .zip(verbalizers)
        .enumerate()
        .filter(|(_, (l, v))| {
            [normalize_answer(v), normalize_answer(l)]
                .iter()
                .any(|c| !c.is_empty() && (a == *c || a.starts_with(&format!("{c} "))))
        })
        .map(|(i, _)| i)
        .collect();
    (hits.len() == 1).then(|| hits[0])
}

/// Classification by generation: each example's greedy answer is mapped to the label it
/// names, or to `invalid`.
pub fn classify_by_generation(
    run: &mut RunContext<'_>,
    name: &str,
    model: &dyn GenerativeModel,
    labels: &[String],
    test: &[&Example],
    settings: &PromptSettings,
    options: &GenerateOptions,
) -> Result<ModelRun> {
    let peak = PeakMemory::start();
    let prompts: Vec<String> = test
        .iter()
        .map(|e| prompt(&settings.template, &settings.shots, &e.text))
        .collect();
    let a = answers(run.store, name, model, &prompts, options, run.quiet)
        .map_err(|e| e.name_input(|i| format!("example `{}`", test[i].id)))?;
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    let mut invalid = Vec::new();
    let mut logs = Vec::new();
    for (index, (((e, answer), ms), sent)) in test
        .iter()
        .zip(&a.answers)
        .zip(&a.ms)
        .zip(&prompts)
        .enumerate()
    {
        match answer {
            Ok(text) => {
                logs.push((
                    e.id.clone(),
                    json!({"index": index, "input": e.text, "gold": e.label, "prompt": sent, "generated": text})
                        .to_string(),
                ));
                let label = match label_of_answer(text, labels, &settings.verbalizers) {
                    Some(i) => labels[i].clone(),
                    None => {
                        invalid.push(json!({"id": e.id, "answer": text}));
                        INVALID.to_owned()
                    }
                };
                rows.push(StoredPrediction {
                    example_id: e.id.clone(),
                    label,
                    probabilities: Vec::new(),
                    tokens: 0,
                    batch_latency_ms: *ms,
                    batch_size: 1,
                });
            }
            Err(why) => failed.push((e.id.clone(), why.clone())),
        }
    }
    run.store.save_predictions(run.run_id, name, &rows)?;
    run.store.save_samples(run.run_id, name, &logs)?;
    let seconds: f64 = a.ms.iter().sum::<f64>() / 1e3;
    let size = Some(model.size()?);
    let (peak_rss_bytes, scope) = peak.read();
    Ok(ModelRun {
        name: name.to_owned(),
        spec: model.describe(),
        efficiency: Efficiency {
            parameters: size.as_ref().and_then(|s| s.parameters),
            size_bytes: size.as_ref().and_then(|s| s.bytes),
            latency_ms_p50: percentile(&a.ms, 0.5),
            latency_ms_p95: percentile(&a.ms, 0.95),
            latency_unit: "per example (one greedy answer)".into(),
            generated_now: Some(a.computed),
            throughput_per_s: (seconds > 0.0).then(|| test.len() as f64 / seconds),
            peak_rss_bytes,
            peak_rss_scope: Some(scope.into()),
            ..Efficiency::default()
        },
        predictions: rows,
        computed: a.computed,
        reused: test.len() - a.computed.min(test.len()),
        backend: model.backend(RequestKind::Generate),
        invariance: None,
        failed,
        warnings: Vec::new(),
        extra: json!({"generation": {
            "invalid_answers": invalid.len(),
            "rule": "an answer names a label when, normalised, it equals or starts with exactly one label's verbaliser or name; otherwise it is counted in the `invalid` column",
            "invalid_examples": invalid.iter().take(20).collect::<Vec<_>>(),
        }}),
    })
}

/// One prompt of a generate file: its id, text and acceptable answers.
pub struct Prompt {
    pub id: String,
    pub prompt: String,
    pub answers: Vec<String>,
}

/// The prompts of a JSONL file, each line checked (file and line in every message), and the
/// file's sha256.
pub fn load_prompts(path: &Path) -> Result<(Vec<Prompt>, String)> {
    let text = lmcompare_engine::data::read_text_file(path)?;
    let mut out: Vec<Prompt> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let v: Value =
            serde_json::from_str(line).map_err(|e| bad!("{at}: not a JSON object: {e}"))?;
        let field = |k: &str| -> Result<String> {
            match &v[k] {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) if k == "id" => Ok(n.to_string()),
                Value::Null => Err(bad!("{at}: missing field {k:?}")),
                _ => Err(bad!("{at}: field {k:?} must be a string")),
            }
        };
        let answers = match &v["answer"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_string) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
            Value::Null => return Err(bad!("{at}: missing field \"answer\"")),
            _ => {
                return Err(bad!(
                    "{at}: \"answer\" must be a string or a non-empty list of strings"
                ))
            }
        };
        let id = field("id")?;
        if out.iter().any(|p| p.id == id) {
            return Err(bad!("{at}: duplicate id {id:?}"));
        }
        out.push(Prompt {
            id,
            prompt: field("prompt")?,
            answers,
        });
    }
    if out.is_empty() {
        return Err(bad!("{}: no prompts", path.display()));
    }
    Ok((out, sha(&text)))
}

/// `compare --task generate`.
pub fn generate(cfg: &CompareConfig, started: std::time::Instant) -> Result<Value> {
    let mut session = super::UnitTask::open(cfg, "generate")?;
    if cfg.prompt.max_tokens == 0 {
        return Err(bad!("--max-tokens must be at least 1"));
    }
    let (mut prompts, digest) = load_prompts(&cfg.data)?;
    if let Some(n) = cfg.limit {
        prompts.truncate(n);
    }
    let settings = json!({"task": "generate", "models": &cfg.models, "data": digest, "limit": cfg.limit,
        "max_tokens": cfg.prompt.max_tokens, "stop": &cfg.prompt.stop, "api": format!("{:?}", cfg.prompt.generate_api)});
    let (run_id, resumed, key) = session.begin(cfg, &settings, &digest, prompts.len())?;
    let options = generate_options(&cfg.prompt);
    let texts: Vec<String> = prompts.iter().map(|p| p.prompt.clone()).collect();
    let mut all: Vec<Vec<Answer<String>>> = Vec::new();
    let mut effs = Vec::new();
    for (name, model) in &session.models {
        let a = answers(
            &mut session.store,
            name,
            model.as_ref(),
            &texts,
            &options,
            cfg.quiet,
        )
        .map_err(|e| e.name_input(|i| format!("prompt `{}`", prompts[i].id)))?;
        effs.push(
            json!({"generated_now": a.computed, "prompts": prompts.len(),
            "latency_ms_p50": percentile(&a.ms, 0.5),
            "latency_ms_p95": percentile(&a.ms, 0.95),
            "latency_unit": "per prompt"}),
        );
        all.push(a.answers);
    }
    // A prompt some model has no answer for is left out for all, listed, retried on rerun.
    let names: Vec<&str> = session.models.iter().map(|m| m.0.as_str()).collect();
    let failed: Vec<(String, Vec<String>)> = prompts
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let why: Vec<String> = names
                .iter()
                .zip(&all)
                .filter_map(|(n, a)| a[i].as_ref().err().map(|e| format!("{n}: {e}")))
                .collect();
            (!why.is_empty()).then(|| (p.id.clone(), why))
        })
        .collect();
    let kept: Vec<usize> = (0..prompts.len())
        .filter(|&i| all.iter().all(|a| a[i].is_ok()))
        .collect();
    if kept.is_empty() {
        return Err(fail!(
            "every prompt failed for some model; nothing to score (rerun to retry)"
        ));
    }
    // Per model, per kept prompt: (exact match, F1), best over acceptable answers.
    let scores: Vec<Vec<(f64, f64)>> = all
        .iter()
        .map(|a| {
            kept.iter()
                .map(|&i| best_over_references(a[i].as_deref().unwrap_or(""), &prompts[i].answers))
                .collect()
        })
        .collect();
    let n = kept.len();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
    let resamples: Vec<Vec<usize>> = (0..cfg.stats.bootstrap)
        .map(|_| (0..n).map(|_| rng.gen_range(0..n)).collect())
        .collect();
    let mean = |m: usize, idx: &mut dyn Iterator<Item = usize>| -> (f64, f64) {
        let (mut em, mut f1, mut k) = (0.0, 0.0, 0.0);
        for j in idx {
            em += scores[m][j].0;
            f1 += scores[m][j].1;
            k += 1.0;
        }
        (em / k, f1 / k)
    };
    let boot: Vec<Vec<(f64, f64)>> = (0..session.models.len())
        .map(|m| {
            resamples
                .iter()
                .map(|r| mean(m, &mut r.iter().copied()))
                .collect()
        })
        .collect();
    let mut out_models = Vec::new();
    for (m, (name, model)) in session.models.iter().enumerate() {
        let (em, f1) = mean(m, &mut (0..n));
        let mut em_s: Vec<f64> = boot[m].iter().map(|x| x.0).collect();
        let mut f1_s: Vec<f64> = boot[m].iter().map(|x| x.1).collect();
        out_models.push(json!({
            "name": name,
            "spec": model.describe(),
            "generate": {"exact_match": em, "f1": f1,
                "ci": {"exact_match": percentile_interval(&mut em_s), "f1": percentile_interval(&mut f1_s)}},
            "answers": kept.iter().take(20).map(|&i| json!({"id": prompts[i].id,
                "answer": all[m][i].as_deref().unwrap_or(""), "reference": prompts[i].answers})).collect::<Vec<_>>(),
            "efficiency": effs[m],
        }));
    }
    let resampled: Vec<Resampled<'_>> = names
        .iter()
        .enumerate()
        .map(|(m, name)| Resampled {
            name,
            point: mean(m, &mut (0..n)).1,
            boot: boot[m].iter().map(|x| x.1).collect(),
        })
        .collect();
    let pairs = super::pairs_json(
        &bootstrap_pairs(
            &resampled,
            cfg.stats.correction,
            &Wording {
                better: "answers better than",
                score: "token F1",
                lower_is_better: false,
            },
        ),
        "delta_f1",
    );
    let doc = json!({
        "task": "generate", "models": out_models, "pairwise": pairs,
        "method": {"decoding": "greedy", "max_tokens": cfg.prompt.max_tokens, "stop": &cfg.prompt.stop,
            "normalisation": "SQuAD: lower case, punctuation and articles removed, whitespace collapsed",
            "exact_match": "normalised answer equals a normalised reference (best over references)",
            "f1": "token-level F1 against the best reference", "unit": "prompt",
            "bootstrap": cfg.stats.bootstrap, "seed": cfg.seed,
            "p_value": format!("two-sided paired bootstrap over prompts, {}", super::corrected(cfg.stats.correction))},
        "excluded_examples": {"count": failed.len(), "examples": failed.iter().map(|(id, w)| json!({"id": id, "errors": w})).collect::<Vec<_>>()},
        "dataset": {"path": cfg.data, "sha256": digest, "prompts": prompts.len(), "scored_prompts": n},
        "run": {"id": run_id, "key": key, "resumed": resumed, "lmcompare_version": env!("CARGO_PKG_VERSION"),
            "finished": lmcompare_engine::store::timestamp(), "wall_seconds": started.elapsed().as_secs_f64(), "db": cfg.db},
    });
    session.store.finish_run(run_id, &doc.to_string())?;
    Ok(doc)
}
