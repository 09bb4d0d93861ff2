//! `compare --task perplexity`: generative models on the same texts, scored by per-token
//! perplexity and bits per byte (comparable across tokenizers), with bootstrap intervals
//! over documents and paired bootstrap tests between models. Long documents are cut into
//! windows of whole words; each window after the first is scored after the end of the
//! previous text as context (a sliding window), so every character is scored once.

use std::collections::BTreeMap;
use std::path::Path;

use lmcompare_engine::profile::percentile;
use lmcompare_metrics::text_match::{bits_per_byte, token_perplexity};
use lmcompare_metrics::unit_bootstrap::{bootstrap_pairs, percentile_interval, Resampled, Wording};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde_json::{json, Value};

use crate::cache::{sha, CachedModel};
use crate::config::CompareConfig;
use crate::models::{RollingRequest, RollingScore};
use crate::runner::bar;
use crate::{bad, fail, Result};

/// Documents of a text file (paragraphs separated by blank lines) or a JSONL file (one per
/// line, `--text-col`, `--id-col` when present), and the file's sha256.
fn documents(path: &Path, text_col: &str, id_col: &str) -> Result<(Vec<(String, String)>, String)> {
    let text = lmcompare_engine::data::read_text_file(path)?;
    let digest = sha(&text);
    let mut docs = Vec::new();
    if lmcompare_engine::data::format_extension(path) == "jsonl" {
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v: Value = serde_json::from_str(line)
                .map_err(|e| bad!("{}: line {}: not valid JSON: {e}", path.display(), i + 1))?;
            let t = v[text_col].as_str().ok_or_else(|| {
                bad!(
                    "{}: line {}: no string field `{text_col}` (--text-col)",
                    path.display(),
                    i + 1
                )
            })?;
            let id = v[id_col]
                .as_str()
                .map_or_else(|| format!("doc{}", docs.len()), str::to_owned);
            docs.push((id, t.to_owned()));
        }
    } else {
        for para in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
            docs.push((format!("doc{}", docs.len()), para.to_owned()));
        }
    }
    if docs.is_empty() {
        return Err(bad!("{}: the file is empty (no text)", path.display()));
    }
    Ok((docs, digest))
}

/// (context, window) pairs covering `text`: windows of at most `window` characters cut at
/// whitespace, each after up to `context` characters of the text before it.
pub fn windows(text: &str, window: usize, context: usize) -> Vec<RollingRequest> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut start = 0;
    while start < chars.len() {
        let mut end = (start + window).min(chars.len());
        if end < chars.len() {
            if let Some(cut) = (start + 1..end).rev().find(|&i| chars[i].is_whitespace()) {
                end = cut;
            }
        }
        out.push(RollingRequest {
            context: chars[start.saturating_sub(context)..start].iter().collect(),
            text: chars[start..end].iter().collect(),
        });
        start = end;
    }
    out
}

pub fn perplexity(cfg: &CompareConfig, started: std::time::Instant) -> Result<Value> {
    let mut session = super::UnitTask::open(cfg, "perplexity")?;
    let p = &cfg.prompt;
    if p.window_chars < 16 {
        return Err(bad!("--window-chars must be at least 16"));
    }
    let (docs, digest) = documents(&cfg.data, &cfg.cols.text_col, &cfg.cols.id_col)?;
    let settings = json!({"task": "perplexity", "models": &cfg.models, "data": digest,
        "window_chars": p.window_chars, "context_chars": p.context_chars});
    let (run_id, resumed, key) = session.begin(cfg, &settings, &digest, docs.len())?;
    // The windows of every document, the same for every model, and their documents.
    let mut requests: Vec<RollingRequest> = Vec::new();
    let mut doc_of: Vec<usize> = Vec::new();
    for (d, (_, text)) in docs.iter().enumerate() {
        for w in windows(text, p.window_chars, p.context_chars) {
            requests.push(w);
            doc_of.push(d);
        }
    }
    // Per model and document: (nll, tokens, bytes), or None when a request failed.
    let mut per_model: Vec<Vec<Option<RollingScore>>> = Vec::new();
    let mut failed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut model_docs = Vec::new();
    for (name, model) in &session.models {
        let pb = bar(cfg.quiet, requests.len(), name);
        let a = CachedModel::new(model.as_ref())
            .loglikelihood_rolling(&mut session.store, &requests, &pb)
            .map_err(|e| e.name_input(|j| format!("document `{}`", docs[doc_of[j]].0)))?;
        pb.finish_and_clear();
        let zero = RollingScore {
            nll: 0.0,
            tokens: 0,
            bytes: 0,
        };
        let mut sums: Vec<Option<RollingScore>> = vec![Some(zero); docs.len()];
        for (j, answer) in a.answers.iter().enumerate() {
            let d = doc_of[j];
            match (answer, &mut sums[d]) {
                (Ok(s), Some(acc)) => {
                    acc.nll += s.nll;
                    acc.tokens += s.tokens;
                    acc.bytes += s.bytes;
                }
                (Err(why), slot) => {
                    *slot = None;
                    failed
                        .entry(docs[d].0.clone())
                        .or_default()
                        .push(format!("{name}: {why}"));
                }
                _ => {}
            }
        }
        per_model.push(sums);
        model_docs.push(
            json!({"requests": requests.len(), "requests_sent": a.computed,
            "latency_ms_p50": percentile(&a.ms, 0.5),
            "latency_ms_p95": percentile(&a.ms, 0.95)}),
        );
    }
    let kept: Vec<usize> = (0..docs.len())
        .filter(|&d| per_model.iter().all(|m| m[d].is_some()))
        .collect();
    if kept.is_empty() {
        return Err(fail!(
            "every document failed for some model; nothing to score (rerun to retry)"
        ));
    }
    let stats = |m: usize, idx: &[usize]| -> (f64, f64) {
        let (mut nll, mut tok, mut bytes) = (0.0, 0usize, 0usize);
        for &d in idx {
            if let Some(s) = per_model[m][d] {
                nll += s.nll;
                tok += s.tokens;
                bytes += s.bytes;
            }
        }
        (token_perplexity(nll, tok), bits_per_byte(nll, bytes))
    };
    // Bootstrap over documents: the same resamples for every model, so pairs are paired.
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
    let resamples: Vec<Vec<usize>> = (0..cfg.stats.bootstrap)
        .map(|_| {
            (0..kept.len())
                .map(|_| kept[rng.gen_range(0..kept.len())])
                .collect()
        })
        .collect();
    let boot: Vec<Vec<(f64, f64)>> = (0..session.models.len())
        .map(|m| resamples.iter().map(|r| stats(m, r)).collect())
        .collect();
    let mut out_models = Vec::new();
    for (m, (name, model)) in session.models.iter().enumerate() {
        let (ppl, bpb) = stats(m, &kept);
        let (tok, bytes) = kept
            .iter()
            .filter_map(|&d| per_model[m][d])
            .fold((0, 0), |a, x| (a.0 + x.tokens, a.1 + x.bytes));
        let mut ppl_s: Vec<f64> = boot[m].iter().map(|x| x.0).collect();
        let mut bpb_s: Vec<f64> = boot[m].iter().map(|x| x.1).collect();
        out_models.push(json!({
            "name": name, "spec": model.describe(),
            "perplexity": {"token_perplexity": ppl, "bits_per_byte": bpb, "tokens": tok, "bytes": bytes,
                "ci": {"token_perplexity": percentile_interval(&mut ppl_s), "bits_per_byte": percentile_interval(&mut bpb_s)}},
            "efficiency": model_docs[m],
        }));
    }
    let resampled: Vec<Resampled<'_>> = session
        .models
        .iter()
        .enumerate()
        .map(|(m, (name, _))| Resampled {
            name,
            point: stats(m, &kept).1,
            boot: boot[m].iter().map(|x| x.1).collect(),
        })
        .collect();
    let pairs = super::pairs_json(
        &bootstrap_pairs(
            &resampled,
            cfg.stats.correction,
            &Wording {
                better: "models the text better than",
                score: "bits per byte",
                lower_is_better: true,
            },
        ),
        "delta_bits_per_byte",
    );
    let doc = json!({
        "task": "perplexity", "models": out_models, "pairwise": pairs,
        "method": {"unit": "document", "bootstrap": cfg.stats.bootstrap, "seed": cfg.seed,
            "window_chars": p.window_chars, "context_chars": p.context_chars,
            "token_perplexity": "exp(total NLL / scored tokens); depends on each model's tokenizer",
            "bits_per_byte": "total NLL / (ln 2 · UTF-8 bytes scored): comparable across tokenizers",
            "p_value": "two-sided paired bootstrap over documents", "correction": format!("{:?}", cfg.stats.correction)},
        "excluded_examples": {"count": failed.len(), "examples": failed.iter().map(|(id, w)| json!({"id": id, "errors": w})).collect::<Vec<_>>()},
        "dataset": {"path": cfg.data, "sha256": digest, "documents": docs.len(), "scored_documents": kept.len(),
            "windows": requests.len()},
        "run": {"id": run_id, "key": key, "resumed": resumed, "lmcompare_version": env!("CARGO_PKG_VERSION"),
            "finished": lmcompare_engine::store::timestamp(), "wall_seconds": started.elapsed().as_secs_f64(), "db": cfg.db},
    });
    session.store.finish_run(run_id, &doc.to_string())?;
    Ok(doc)
}
