//! The one caching layer over the store (lm-evaluation-harness's `CachingLM` idea): every
//! answer a model gives is kept under a key this module alone builds — the request kind,
//! the model's content identity and the request — so a rerun, a resumed run or another run
//! asking the same thing computes nothing twice. Answers are written as they arrive, so an
//! interruption loses at most the batch in flight. Store errors are errors, never misses.

use std::collections::{HashMap, HashSet};

use indicatif::ProgressBar;
use lmcompare_engine::store::{CachedEmbedding, Store};
use lmcompare_engine::TextEncoder;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::models::{
    Answer, Done, GenerateOptions, GenerativeModel, LoglikRequest, LoglikScore, RollingRequest,
    RollingScore,
};
use crate::Result;

pub fn sha(text: &str) -> String {
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// Content hash of an encoder's config and weights (the hash of its files' sha256, cached
/// in the store): two runs with the same content share cached work.
pub fn encoder_hash(
    store: &Store,
    resolved: &lmcompare_engine::spec::ResolvedModel,
) -> Result<String> {
    let mut h = Sha256::new();
    for f in lmcompare_engine::encoder_model::identity_files(resolved) {
        h.update(store.file_sha256(&f)?.as_bytes());
    }
    // int8 gives other numbers: its own predictions in the store.
    if resolved.int8 {
        h.update(b"\nint8");
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Answers to a list of requests, in request order.
pub struct Answers<T> {
    pub answers: Vec<Answer<T>>,
    /// Milliseconds each answer took when it was computed (also when read back).
    pub ms: Vec<f64>,
    /// How many were computed now (the rest came from the store).
    pub computed: usize,
}

/// A generative model with the store in front of it.
pub struct CachedModel<'a> {
    pub model: &'a dyn GenerativeModel,
}

/// Answers buffered before a store write.
const WRITE_EVERY: usize = 64;

impl<'a> CachedModel<'a> {
    pub fn new(model: &'a dyn GenerativeModel) -> Self {
        CachedModel { model }
    }

    fn key(&self, kind: &str, parts: &[&str]) -> String {
        let mut text = format!("{kind}\n{}", self.model.identity());
        for p in parts {
            text.push('\n');
            text.push_str(p);
        }
        sha(&text)
    }

    pub fn loglikelihood(
        &self,
        store: &mut Store,
        requests: &[LoglikRequest],
        pb: &ProgressBar,
    ) -> Result<Answers<LoglikScore>> {
        let keys = requests
            .iter()
            .map(|r| self.key("loglikelihood", &[&r.context, &r.continuation]))
            .collect();
        through_cache(store, keys, pb, |todo, done| {
            let sub: Vec<LoglikRequest> = todo.iter().map(|&i| requests[i].clone()).collect();
            self.model.loglikelihood(&sub, done)
        })
    }

    pub fn loglikelihood_rolling(
        &self,
        store: &mut Store,
        requests: &[RollingRequest],
        pb: &ProgressBar,
    ) -> Result<Answers<RollingScore>> {
        let keys = requests
            .iter()
            .map(|r| self.key("loglikelihood_rolling", &[&r.context, &r.text]))
            .collect();
        through_cache(store, keys, pb, |todo, done| {
            let sub: Vec<RollingRequest> = todo.iter().map(|&i| requests[i].clone()).collect();
            self.model.loglikelihood_rolling(&sub, done)
        })
    }

    pub fn generate_until(
        &self,
        store: &mut Store,
        prompts: &[String],
        options: &GenerateOptions,
        pb: &ProgressBar,
    ) -> Result<Answers<String>> {
        let settings = serde_json::to_string(options)?;
        let keys = prompts
            .iter()
            .map(|p| self.key("generate_until", &[&settings, p]))
            .collect();
        through_cache(store, keys, pb, |todo, done| {
            let sub: Vec<String> = todo.iter().map(|&i| prompts[i].clone()).collect();
            self.model.generate_until(&sub, options, done)
        })
    }
}

/// Answers for `keys` from the store; the rest from `compute(missing, done)`, where `done`
/// takes answers by position in `missing` and writes them to the store in batches.
/// Failed requests are returned, not stored, so the next run asks again.
fn through_cache<T: Serialize + DeserializeOwned>(
    store: &mut Store,
    keys: Vec<String>,
    pb: &ProgressBar,
    compute: impl FnOnce(&[usize], &mut Done<'_, T>) -> Result<()>,
) -> Result<Answers<T>> {
    let n = keys.len();
    let mut answers: Vec<Option<Answer<T>>> = (0..n).map(|_| None).collect();
    let mut ms = vec![0.0; n];
    let mut todo = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        match store.cached_answer(k)? {
            Some((text, t)) => {
                let v: T = serde_json::from_str(&text).map_err(|e| {
                    crate::fail!("store: the cached answer {k} is not valid ({e}); delete the store or use another --db")
                })?;
                answers[i] = Some(Ok(v));
                ms[i] = t;
            }
            None => todo.push(i),
        }
    }
    pb.inc((n - todo.len()) as u64);
    if !todo.is_empty() {
        let mut pending: Vec<(String, String, f64)> = Vec::new();
        let result = {
            let mut done = |j: usize, a: Answer<T>, t: f64| -> Result<()> {
                let i = todo[j];
                // What is stored is what is used: a rerun reading it back reports
                // bit-identical numbers.
                let a = match a {
                    Ok(v) => {
                        let text = serde_json::to_string(&v)?;
                        let back: T = serde_json::from_str(&text)?;
                        pending.push((keys[i].clone(), text, t));
                        Ok(back)
                    }
                    Err(e) => Err(e),
                };
                answers[i] = Some(a);
                ms[i] = t;
                pb.inc(1);
                if pending.len() >= WRITE_EVERY {
                    store.save_answers(&pending)?;
                    pending.clear();
                }
                Ok(())
            };
            compute(&todo, &mut done)
        };
        // What arrived is kept even when the rest failed.
        store.save_answers(&pending)?;
        result.map_err(|e| e.remap_input(|j| todo.get(j).copied().unwrap_or(j)))?;
    }
    Ok(Answers {
        answers: answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err("no answer".to_owned())))
            .collect(),
        ms,
        computed: todo.len(),
    })
}

/// Vectors of `texts` keyed by text sha256: from the store where cached, the rest computed
/// in batches (`pool` turns a sequence's token states into its vector) and committed batch
/// by batch, so an interrupted run keeps them. Returns the vectors and how many were computed.
pub struct EmbeddingRequest<'a> {
    /// The model's content hash.
    pub model_hash: &'a str,
    /// Everything else that changes a vector (max length, pooling, features).
    pub settings: &'a str,
    pub batch_size: usize,
    /// Stop the encoder after this many layers (all when None).
    pub layers: Option<usize>,
    /// The model's name, for errors.
    pub model_name: &'a str,
}

pub fn cached_vectors(
    store: &mut Store,
    model: &TextEncoder,
    req: &EmbeddingRequest<'_>,
    texts: &[&str],
    pb: &ProgressBar,
    pool: &dyn Fn(&[f32], usize) -> Vec<f32>,
    name_text: &dyn Fn(usize) -> String,
) -> Result<(HashMap<String, CachedEmbedding>, usize)> {
    let mut cache = store.embeddings(req.model_hash, req.settings)?;
    let mut missing: Vec<(&str, String)> = Vec::new();
    let mut seen = HashSet::new();
    for t in texts {
        let h = sha(t);
        if !cache.contains_key(&h) && seen.insert(h.clone()) {
            missing.push((t, h));
        }
    }
    let todo: Vec<&str> = missing.iter().map(|m| m.0).collect();
    let encoded = model.tokenizer.encode_batch(&todo)?;
    pb.set_position((texts.len() - missing.len()) as u64);
    model
        .run_batches_to(
            &encoded,
            req.batch_size,
            req.layers,
            |idx, hidden, timing| {
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
                store.save_embeddings(req.model_hash, req.settings, &rows, timing.seconds * 1e3)?;
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
            },
        )
        .map_err(|e| {
            crate::error::at_input(e, req.model_name, |i| {
                let text = missing.get(i).map_or("", |m| m.0);
                texts
                    .iter()
                    .position(|t| *t == text)
                    .map_or_else(|| format!("input {i}"), name_text)
            })
        })?;
    Ok((cache, missing.len()))
}
