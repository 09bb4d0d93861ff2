//! Encoders in a comparison: `classify` (the model's own classification head, its labels
//! mapped to the dataset's), `probe` (frozen embeddings and a logistic-regression head
//! trained on the train split) and `zero-shot` (cosine similarity to a description of each
//! label). Predictions are committed batch by batch; embeddings are cached by text, so
//! probe and zero-shot reruns embed nothing twice.

use std::collections::HashMap;
use std::path::Path;

use lmcompare_engine::data::Example;
use lmcompare_engine::encoder_model::{softmax64, weights_file};
use lmcompare_engine::model::Hidden;
use lmcompare_engine::probe::{Probe, ProbeOptions};
use lmcompare_engine::profile::{count_from_config, count_safetensors, encoder_flops, percentile};
use lmcompare_engine::spec::ResolvedModel;
use lmcompare_engine::store::{CachedEmbedding, StoredPrediction};
use lmcompare_engine::tokenize::Encoded;
use lmcompare_engine::weights::WeightFile;
use lmcompare_engine::{LoadOptions, TextEncoder};
use lmcompare_report::doc::Efficiency;
use serde_json::Value;

use crate::cache::{cached_vectors, sha, EmbeddingRequest};
use crate::config::Task;
use crate::error::at_input;
use crate::runner::{argmax, bar, label_index, ModelRun, PeakMemory, RunContext};
use crate::{bad, Error, Result};

/// What the encoder tasks need besides the model.
pub struct EncoderInputs<'a> {
    pub task: Task,
    pub labels: &'a [String],
    pub test: &'a [&'a Example],
    pub train: &'a [&'a Example],
    /// Model label → dataset label (classify).
    pub label_map: &'a HashMap<String, String>,
    /// Dataset label → the text zero-shot compares with.
    pub descriptions: &'a HashMap<String, String>,
    pub max_length: Option<usize>,
    pub check_invariance: bool,
}

/// (tokens, batch latency ms, batch size) of each test example, for the efficiency block.
type CostRows = Vec<(usize, f64, usize)>;

/// Runs one encoder on the task; `hash` is its content hash (cache and run keys).
pub fn run_encoder(
    run: &mut RunContext<'_>,
    name: &str,
    hash: &str,
    resolved: ResolvedModel,
    t: &EncoderInputs<'_>,
) -> Result<ModelRun> {
    let peak = PeakMemory::start();
    let spec = resolved.spec.clone();
    let dir = resolved.dir.clone();
    let is_onnx = resolved.onnx.is_some();
    let model = TextEncoder::load(
        resolved,
        &LoadOptions {
            max_length: t.max_length,
            ..Default::default()
        },
    )?;
    run.store.register_model(hash, &spec, model.backend())?;
    let (done, rows, head_labels, invariance) = match t.task {
        Task::Classify => classify(run, name, &spec, &model, t)?,
        Task::Probe | Task::ZeroShot => by_embeddings(run, name, hash, &model, t)?,
        Task::MultipleChoice | Task::Perplexity | Task::Generate => {
            return Err(bad!(
                "{spec}: {} scores generative models (a .gguf file, a causal-LM folder or openai:URL#MODEL)",
                t.task.key()
            ))
        }
    };
    let predictions: Vec<StoredPrediction> = run
        .store
        .predictions(run.run_id, name)?
        .into_values()
        .collect();
    let rows = rows.unwrap_or_else(|| {
        predictions
            .iter()
            .map(|p| (p.tokens, p.batch_latency_ms, p.batch_size))
            .collect()
    });
    let mut efficiency = encoder_efficiency(&model, is_onnx, &dir, &rows, head_labels, &peak)?;
    // Over every test text, computed now or reused: tokenizing is cheap next to the model.
    let texts: Vec<&str> = t.test.iter().map(|e| e.text.as_str()).collect();
    let max_length = model.tokenizer.max_length();
    let encoded = model.tokenizer.encode_batch(&texts)?;
    efficiency.truncated_contexts = Some(encoded.iter().filter(|e| e.truncated).count());
    // How the model saw each example, for `export` and `--log-samples`.
    let logs: Vec<(String, String)> = t
        .test
        .iter()
        .zip(&encoded)
        .enumerate()
        .map(|(index, (e, enc))| {
            let log = serde_json::json!({
                "index": index, "input": e.text, "gold": e.label, "tokens": enc.ids.len(),
                "truncated": enc.truncated, "max_length": max_length,
            });
            (e.id.clone(), log.to_string())
        })
        .collect();
    run.store.save_samples(run.run_id, name, &logs)?;
    let warnings = truncation_warning(efficiency.truncated_contexts, t.test.len(), max_length);
    Ok(ModelRun {
        name: name.to_owned(),
        spec,
        computed: done.0,
        reused: done.1,
        predictions,
        efficiency,
        backend: model.backend().to_owned(),
        invariance,
        failed: Vec::new(),
        warnings: warnings.into_iter().collect(),
        extra: Value::Null,
    })
}

/// (computed, reused), cost rows when not the predictions', head labels, invariance.
type Outcome = ((usize, usize), Option<CostRows>, Option<usize>, Option<f64>);

fn classify(
    run: &mut RunContext<'_>,
    name: &str,
    spec: &str,
    model: &TextEncoder,
    t: &EncoderInputs<'_>,
) -> Result<Outcome> {
    let labels = t.labels;
    let model_labels = model.labels().map(<[String]>::to_vec).ok_or_else(|| {
        bad!("{spec} has no classification head; use --task probe or --task zero-shot")
    })?;
    let mapping: Vec<usize> = model_labels
        .iter()
        .map(|l| {
            let target = t.label_map.get(l).unwrap_or(l);
            labels.iter().position(|x| x == target)
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            bad!(
                "cannot map the model's labels [{}] to the dataset's [{}]; pass --label-map FILE with a JSON object model_label -> dataset_label",
                model_labels.join(", "),
                labels.join(", ")
            )
        })?;
    let existing = run.store.predictions(run.run_id, name)?;
    let todo: Vec<&Example> = t
        .test
        .iter()
        .copied()
        .filter(|e| !existing.contains_key(&e.id))
        .collect();
    let texts: Vec<&str> = todo.iter().map(|e| e.text.as_str()).collect();
    let encoded = model.tokenizer.encode_batch(&texts)?;
    let pb = bar(run.quiet, t.test.len(), name);
    pb.set_position((t.test.len() - todo.len()) as u64);
    let mut err = None;
    let (store, run_id) = (&mut *run.store, run.run_id);
    model
        .run_batches(&encoded, run.batch_size, |idx, hidden, timing| {
            let rows = match classify_rows(
                name,
                model,
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
        .map_err(|e| at_input(e, name, |i| format!("example `{}`", todo[i].id)))?;
    pb.finish_and_clear();
    if let Some(e) = err {
        return Err(e);
    }
    let invariance = if t.check_invariance {
        let enc = sample(model, t.test)?;
        let a = model.classify(&enc, 1)?;
        let b = model.classify(&enc, run.batch_size)?;
        Some(max_abs(&a, &b))
    } else {
        None
    };
    Ok((
        (todo.len(), t.test.len() - todo.len()),
        None,
        Some(model_labels.len()),
        invariance,
    ))
}

/// The first 16 test texts, for the batch-invariance check.
fn sample(model: &TextEncoder, test: &[&Example]) -> Result<Vec<Encoded>> {
    let texts: Vec<&str> = test.iter().take(16).map(|e| e.text.as_str()).collect();
    Ok(model.tokenizer.encode_batch(&texts)?)
}

#[allow(clippy::too_many_arguments)]
fn classify_rows(
    name: &str,
    model: &TextEncoder,
    idx: &[usize],
    hidden: &Hidden,
    todo: &[&Example],
    encoded: &[Encoded],
    mapping: &[usize],
    labels: &[String],
    latency_ms: f64,
) -> Result<Vec<StoredPrediction>> {
    let logits = model
        .head_logits(hidden, idx)
        .map_err(|e| at_input(e, name, |i| format!("example `{}`", todo[i].id)))?
        .ok_or_else(|| crate::fail!("no classification head"))?;
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

/// Probe and zero-shot: the texts' embeddings (cached by text), then a head on them.
fn by_embeddings(
    run: &mut RunContext<'_>,
    name: &str,
    hash: &str,
    model: &TextEncoder,
    t: &EncoderInputs<'_>,
) -> Result<Outcome> {
    let labels = t.labels;
    let existing = run.store.predictions(run.run_id, name)?;
    let settings = format!(
        "max_length={};pooling={};normalize={}",
        model.tokenizer.max_length(),
        model.pooling.mode.key(),
        model.pooling.normalize
    );
    let needed: Vec<&Example> = if t.task == Task::Probe {
        t.train.iter().chain(t.test.iter()).copied().collect()
    } else {
        t.test.to_vec()
    };
    let texts: Vec<&str> = needed.iter().map(|e| e.text.as_str()).collect();
    let pb = bar(run.quiet, needed.len(), name);
    let pooling = model.pooling;
    let (cache, missing) = cached_vectors(
        run.store,
        model,
        &EmbeddingRequest {
            model_hash: hash,
            settings: &settings,
            batch_size: run.batch_size,
            layers: None,
            model_name: name,
        },
        &texts,
        &pb,
        &|states, dim| pooling.pool(states, dim),
        &|i| format!("example `{}`", needed[i].id),
    )?;
    pb.finish_and_clear();
    let probs: Vec<Vec<f64>> = if t.task == Task::Probe {
        probe(&cache, labels, t.train, t.test)?
    } else {
        zero_shot(&cache, model, labels, t, run.batch_size)?
    };
    let rows: Vec<StoredPrediction> = t
        .test
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
    run.store.save_predictions(run.run_id, name, &rows)?;
    let invariance = if t.check_invariance {
        let enc = sample(model, t.test)?;
        let a = model.embed(&enc, 1)?;
        let b = model.embed(&enc, run.batch_size)?;
        Some(max_abs(&a, &b))
    } else {
        None
    };
    let cost_rows: CostRows = t
        .test
        .iter()
        .filter_map(|e| {
            cache
                .get(&sha(&e.text))
                .map(|c| (c.tokens, c.batch_latency_ms, c.batch_size))
        })
        .collect();
    let distinct: std::collections::HashSet<String> = needed.iter().map(|e| sha(&e.text)).collect();
    Ok((
        (missing, distinct.len() - missing),
        Some(cost_rows),
        None,
        invariance,
    ))
}

/// The report's line on test texts cut at the encoder's maximum length.
fn truncation_warning(truncated: Option<usize>, total: usize, max_length: usize) -> Option<String> {
    truncated.filter(|n| *n > 0).map(|n| {
        format!(
            "{n} of {total} test texts were longer than {max_length} tokens and were cut at the end (the model did not see their tail); --max-length sets the limit, up to the model's positions"
        )
    })
}

fn embedding<'c>(cache: &'c HashMap<String, CachedEmbedding>, e: &Example) -> Result<&'c Vec<f32>> {
    cache
        .get(&sha(&e.text))
        .map(|c| &c.vector)
        .ok_or_else(|| crate::fail!("missing embedding for {}", e.id))
}

fn probe(
    cache: &HashMap<String, CachedEmbedding>,
    labels: &[String],
    train: &[&Example],
    test: &[&Example],
) -> Result<Vec<Vec<f64>>> {
    let x: Vec<Vec<f32>> = train
        .iter()
        .map(|e| embedding(cache, e).cloned())
        .collect::<Result<_>>()?;
    let y: Vec<usize> = train
        .iter()
        .map(|e| label_index(labels, &e.label, &format!("train example {}", e.id)))
        .collect::<Result<_>>()?;
    let probe = Probe::fit(&x, &y, labels.len(), &ProbeOptions::default());
    test.iter()
        .map(|e| Ok(probe.predict_proba(embedding(cache, e)?)))
        .collect()
}

fn zero_shot(
    cache: &HashMap<String, CachedEmbedding>,
    model: &TextEncoder,
    labels: &[String],
    t: &EncoderInputs<'_>,
    batch_size: usize,
) -> Result<Vec<Vec<f64>>> {
    let label_emb = label_embeddings(model, labels, t.descriptions, batch_size)?;
    t.test
        .iter()
        .map(|e| Ok(zero_shot_probabilities(embedding(cache, e)?, &label_emb)))
        .collect()
}

/// The embedding of each label's description (the label itself where none is given).
pub(crate) fn label_embeddings(
    model: &TextEncoder,
    labels: &[String],
    descriptions: &HashMap<String, String>,
    batch_size: usize,
) -> Result<Vec<Vec<f32>>> {
    let desc: Vec<String> = labels
        .iter()
        .map(|l| descriptions.get(l).cloned().unwrap_or_else(|| l.clone()))
        .collect();
    let refs: Vec<&str> = desc.iter().map(String::as_str).collect();
    let enc = model.tokenizer.encode_batch(&refs)?;
    model.embed(&enc, batch_size).map_err(|e| {
        at_input(e, &model.resolved.spec, |i| {
            format!("the description of label `{}`", labels[i])
        })
    })
}

/// Cosine similarity scaled by 20 (sentence-transformers' contrastive scale) through a
/// softmax: probabilities that track similarity.
pub(crate) fn zero_shot_probabilities(v: &[f32], label_emb: &[Vec<f32>]) -> Vec<f64> {
    let scale = lmcompare_engine::model::ZERO_SHOT_SCALE as f32;
    let sims: Vec<f32> = label_emb.iter().map(|l| scale * cosine(v, l)).collect();
    softmax64(&sims)
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

/// Efficiency from what this run measured and stored (so a resumed run reports the same).
/// `rows`: (tokens, batch latency ms, batch size) per example.
pub fn encoder_efficiency(
    model: &TextEncoder,
    is_onnx: bool,
    dir: &Path,
    rows: &[(usize, f64, usize)],
    labels: Option<usize>,
    peak: &PeakMemory,
) -> Result<Efficiency> {
    let params = if is_onnx {
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
                .map_err(Error::from)?,
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
    let (peak_rss_bytes, scope) = peak.read();
    Ok(Efficiency {
        parameters: Some(params.parameters),
        size_bytes: Some(params.bytes),
        parameter_source: Some(params.source),
        flops_per_example: flops,
        tokens_per_example: Some(tokens),
        latency_ms_p50: percentile(&lat, 0.5),
        latency_ms_p95: percentile(&lat, 0.95),
        latency_unit: "per batch".into(),
        throughput_per_s: Some(rows.len() as f64 / seconds),
        peak_rss_bytes,
        peak_rss_scope: Some(scope.into()),
        ..Efficiency::default()
    })
}
