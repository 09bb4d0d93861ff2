//! `compare --task perplexity`: generative models on the same texts, scored by per-token
//! perplexity and bits per byte (comparable across tokenizers), with bootstrap intervals
//! over documents and paired bootstrap tests between models. Long documents are cut into
//! windows of whole words; each window after the first is scored after the end of the
//! previous text as context (a sliding window), so every character is scored once.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::Result;
use lmcompare_engine::decoder::{Decoder, ScoreRequest};
use lmcompare_engine::remote::RemoteClient;
use lmcompare_engine::store::{timestamp, Store};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde_json::{json, Value};

use crate::compare_cmd::{parse_models, sha, CompareArgs};
use crate::decoder_task::{
    begin_task_run, client_for, fetch_all, generative_models, Fetched, GenerativeSpec,
};
use crate::encoder_cmds::engine;
use crate::paired_means::{bootstrap_pairs, percentile_ci, Resampled, Wording};
use crate::BadInput;

/// Documents of a text file (paragraphs separated by blank lines) or a JSONL file (one per
/// line, `--text-col`, `--id-col` when present).
fn documents(path: &Path, text_col: &str, id_col: &str) -> Result<(Vec<(String, String)>, String)> {
    let bytes = std::fs::read(path)
        .map_err(|e| BadInput(format!("{}: cannot read: {e}", path.display())))?;
    let digest = sha(&String::from_utf8_lossy(&bytes));
    let text = String::from_utf8(bytes)
        .map_err(|_| BadInput(format!("{}: not UTF-8 text", path.display())))?;
    let mut docs = Vec::new();
    if path.extension().and_then(|e| e.to_str()) == Some("jsonl") {
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v: Value = serde_json::from_str(line).map_err(|e| {
                BadInput(format!(
                    "{}: line {}: not valid JSON: {e}",
                    path.display(),
                    i + 1
                ))
            })?;
            let t = v[text_col].as_str().ok_or_else(|| {
                BadInput(format!(
                    "{}: line {}: no string field `{text_col}` (--text-col)",
                    path.display(),
                    i + 1
                ))
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
        return Err(BadInput(format!("{}: the file is empty (no text)", path.display())).into());
    }
    Ok((docs, digest))
}

/// (context, window) pairs covering `text`: windows of at most `window` characters cut at
/// whitespace, each after up to `context` characters of the text before it.
fn windows(text: &str, window: usize, context: usize) -> Vec<(String, String)> {
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
        let ctx: String = chars[start.saturating_sub(context)..start].iter().collect();
        out.push((ctx, chars[start..end].iter().collect()));
        start = end;
    }
    out
}

/// Σ −log p, scored tokens and UTF-8 bytes of one echoed window, from character `start`
/// (the first token of a text has no log-probability and is not scored).
fn window_score(v: &Value, start: usize, full: &str) -> Option<(f64, usize, usize)> {
    let e = RemoteClient::parse_echo(v).ok()?;
    let mut nll = 0.0;
    let mut n = 0;
    let mut first: Option<usize> = None;
    let end = full.chars().count();
    for (lp, &off) in e.logprobs.iter().zip(&e.offsets) {
        if off < start || off >= end {
            continue;
        }
        match lp {
            Some(x) => {
                nll -= x;
                n += 1;
                first.get_or_insert(off);
            }
            None if off == 0 => {}
            None => return None,
        }
    }
    let from = first?;
    let bytes = full.chars().skip(from).collect::<String>().len();
    Some((nll, n, bytes))
}

pub(crate) fn perplexity(args: &CompareArgs) -> Result<Value> {
    let started = std::time::Instant::now();
    let models = parse_models(&args.models)?;
    let remotes = generative_models(&models, "perplexity")?;
    if args.window_chars < 16 {
        return Err(BadInput("--window-chars must be at least 16".into()).into());
    }
    let (docs, digest) = documents(&args.data, &args.cols.text_col, &args.cols.id_col)?;
    let mut store = Store::open(&args.db).map_err(engine)?;
    let settings = json!({"task": "perplexity", "models": &args.models, "data": digest,
        "window_chars": args.window_chars, "context_chars": args.context_chars});
    let (run_id, resumed, key) = begin_task_run(
        &mut store,
        args,
        "perplexity",
        &settings,
        &digest,
        docs.len(),
        &models,
    )?;
    // (doc, context chars, request text) per window, the same for every model.
    let mut windows_all: Vec<(usize, usize, String)> = Vec::new();
    for (d, (_, text)) in docs.iter().enumerate() {
        for (ctx, w) in windows(text, args.window_chars, args.context_chars) {
            windows_all.push((d, ctx.chars().count(), format!("{ctx}{w}")));
        }
    }
    // Per model and document: (nll, tokens, bytes), or None when a request failed.
    let mut per_model: Vec<Vec<Option<(f64, usize, usize)>>> = Vec::new();
    let mut failed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut model_docs = Vec::new();
    for (name, model) in &remotes {
        let (answers, failures, sent) = match model {
            GenerativeSpec::Remote(spec) => {
                let client = client_for(args, spec)?;
                let bodies: Vec<Value> = windows_all
                    .iter()
                    .map(|w| client.echo_request(&w.2))
                    .collect();
                let Fetched {
                    answers,
                    failures,
                    sent,
                } = fetch_all(
                    &client,
                    &mut store,
                    &bodies,
                    args,
                    name,
                    crate::decoder_task::ECHO,
                )?;
                (answers, failures, sent)
            }
            GenerativeSpec::Local(path) => {
                let (answers, sent) =
                    score_windows_locally(args, &mut store, name, path, &windows_all)?;
                (answers, HashMap::new(), sent)
            }
        };
        let mut sums: Vec<Option<(f64, usize, usize)>> = vec![Some((0.0, 0, 0)); docs.len()];
        let mut latency = Vec::new();
        for (j, (d, ctx, text)) in windows_all.iter().enumerate() {
            let score = answers.get(&j).and_then(|(v, ms)| {
                latency.push(*ms);
                match model {
                    GenerativeSpec::Remote(_) => window_score(v, *ctx, text),
                    GenerativeSpec::Local(_) => local_window_score(v),
                }
            });
            match (score, &mut sums[*d]) {
                (Some((a, b, c)), Some(acc)) => *acc = (acc.0 + a, acc.1 + b, acc.2 + c),
                (None, slot) => {
                    *slot = None;
                    let why = failures
                        .get(&j)
                        .map_or("no log-probabilities in the answer".to_owned(), |f| {
                            f.to_string()
                        });
                    failed
                        .entry(docs[*d].0.clone())
                        .or_default()
                        .push(format!("{name}: {why}"));
                }
                _ => {}
            }
        }
        per_model.push(sums);
        model_docs.push(json!({"requests": windows_all.len(), "requests_sent": sent,
            "latency_ms_p50": lmcompare_engine::profile::percentile(&latency, 0.5),
            "latency_ms_p95": lmcompare_engine::profile::percentile(&latency, 0.95)}));
    }
    let kept: Vec<usize> = (0..docs.len())
        .filter(|&d| per_model.iter().all(|m| m[d].is_some()))
        .collect();
    if kept.is_empty() {
        return Err(anyhow::anyhow!(
            "every document failed for some model; nothing to score (rerun to retry)"
        ));
    }
    let stats = |m: usize, idx: &[usize]| -> (f64, f64) {
        let (mut nll, mut tok, mut bytes) = (0.0, 0usize, 0usize);
        for &d in idx {
            if let Some((a, b, c)) = per_model[m][d] {
                nll += a;
                tok += b;
                bytes += c;
            }
        }
        (
            (nll / tok.max(1) as f64).exp(),
            nll / (std::f64::consts::LN_2 * bytes.max(1) as f64),
        )
    };
    // Bootstrap over documents: the same resamples for every model, so pairs are paired.
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(args.seed);
    let resamples: Vec<Vec<usize>> = (0..args.stats.bootstrap)
        .map(|_| {
            (0..kept.len())
                .map(|_| kept[rng.gen_range(0..kept.len())])
                .collect()
        })
        .collect();
    let boot: Vec<Vec<(f64, f64)>> = (0..remotes.len())
        .map(|m| resamples.iter().map(|r| stats(m, r)).collect())
        .collect();
    let mut out_models = Vec::new();
    for (m, (name, model)) in remotes.iter().enumerate() {
        let (ppl, bpb) = stats(m, &kept);
        let (tok, bytes) = kept
            .iter()
            .filter_map(|&d| per_model[m][d])
            .fold((0, 0), |a, x| (a.0 + x.1, a.1 + x.2));
        let mut ppl_s: Vec<f64> = boot[m].iter().map(|x| x.0).collect();
        let mut bpb_s: Vec<f64> = boot[m].iter().map(|x| x.1).collect();
        out_models.push(json!({
            "name": name, "spec": model.describe(),
            "perplexity": {"token_perplexity": ppl, "bits_per_byte": bpb, "tokens": tok, "bytes": bytes,
                "ci": {"token_perplexity": percentile_ci(&mut ppl_s), "bits_per_byte": percentile_ci(&mut bpb_s)}},
            "efficiency": model_docs[m],
        }));
    }
    let resampled: Vec<Resampled<'_>> = remotes
        .iter()
        .enumerate()
        .map(|(m, (name, _))| Resampled {
            name,
            point: stats(m, &kept).1,
            boot: boot[m].iter().map(|x| x.1).collect(),
        })
        .collect();
    let pairs = bootstrap_pairs(
        &resampled,
        "delta_bits_per_byte",
        args.stats.correction,
        &Wording {
            better: "models the text better than",
            score: "bits per byte",
            lower_is_better: true,
        },
    );
    let doc = json!({
        "task": "perplexity", "models": out_models, "pairwise": pairs,
        "method": {"unit": "document", "bootstrap": args.stats.bootstrap, "seed": args.seed,
            "window_chars": args.window_chars, "context_chars": args.context_chars,
            "token_perplexity": "exp(total NLL / scored tokens); depends on each model's tokenizer",
            "bits_per_byte": "total NLL / (ln 2 · UTF-8 bytes scored): comparable across tokenizers",
            "p_value": "two-sided paired bootstrap over documents", "correction": format!("{:?}", args.stats.correction)},
        "excluded_examples": {"count": failed.len(), "examples": failed.iter().map(|(id, w)| json!({"id": id, "errors": w})).collect::<Vec<_>>()},
        "dataset": {"path": args.data, "sha256": digest, "documents": docs.len(), "scored_documents": kept.len(),
            "windows": windows_all.len()},
        "run": {"id": run_id, "key": key, "resumed": resumed, "lmcompare_version": env!("CARGO_PKG_VERSION"),
            "finished": timestamp(), "wall_seconds": started.elapsed().as_secs_f64(), "db": args.db},
    });
    store.finish_run(run_id, &doc.to_string()).map_err(engine)?;
    Ok(doc)
}

/// A locally scored window as stored: `{"nll", "tokens", "bytes"}`.
fn local_window_score(v: &Value) -> Option<(f64, usize, usize)> {
    Some((
        v["nll"].as_f64()?,
        v["tokens"].as_u64()? as usize,
        v["bytes"].as_u64()? as usize,
    ))
}

/// Scores every window with a local decoder, the window's text as the continuation of its
/// context. Results are kept in the store's answer cache under a key of the model's content,
/// the context and the window, so a rerun or resumed run computes nothing twice. Returns
/// the answers by window (with per-window milliseconds) and how many were computed now.
#[allow(clippy::type_complexity)]
fn score_windows_locally(
    args: &CompareArgs,
    store: &mut Store,
    name: &str,
    path: &Path,
    windows: &[(usize, usize, String)],
) -> Result<(HashMap<usize, (Value, f64)>, usize)> {
    let identity = crate::decoder_task::decoder_identity(store, path)?;
    let keys: Vec<String> = windows
        .iter()
        .map(|(_, ctx, text)| sha(&format!("local-decoder\n{identity}\n{ctx}\n{text}")))
        .collect();
    let mut answers = HashMap::new();
    let mut todo = Vec::new();
    for (j, key) in keys.iter().enumerate() {
        match store.cached_response(key).map_err(engine)? {
            Some((text, ms)) => {
                answers.insert(j, (serde_json::from_str(&text)?, ms));
            }
            None => todo.push(j),
        }
    }
    if todo.is_empty() {
        return Ok((answers, 0));
    }
    let decoder = Decoder::load(path).map_err(|e| BadInput(format!("model {name}: {e}")))?;
    let pb = crate::compare_cmd::bar(args.quiet, windows.len(), name);
    pb.set_position((windows.len() - todo.len()) as u64);
    for chunk in todo.chunks(args.batch_size) {
        let mut requests = Vec::new();
        let mut bytes = Vec::new();
        for &j in chunk {
            let (_, ctx_chars, text) = &windows[j];
            let split = text
                .char_indices()
                .nth(*ctx_chars)
                .map_or(text.len(), |(b, _)| b);
            let (context, window) = text.split_at(split);
            let (ctx, cont) = decoder.encode_pair(context, window).map_err(engine)?;
            requests.push(ScoreRequest {
                context: ctx,
                continuations: vec![cont],
            });
            bytes.push(window.len());
        }
        let t0 = std::time::Instant::now();
        let (scores, _) = decoder.score(&requests).map_err(engine)?;
        let ms = t0.elapsed().as_secs_f64() * 1e3 / chunk.len() as f64;
        let mut rows = Vec::new();
        for ((&j, s), b) in chunk.iter().zip(&scores).zip(&bytes) {
            let text =
                json!({"nll": -s[0].sum(), "tokens": s[0].logprobs.len(), "bytes": b}).to_string();
            // Read back what is stored, so a rerun reports bit-identical numbers.
            answers.insert(j, (serde_json::from_str(&text)?, ms));
            rows.push((keys[j].clone(), text, ms));
        }
        store.save_responses(&rows).map_err(engine)?;
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok((answers, todo.len()))
}
