//! `embed`, `predict`, `tokenize` and `profile`: one encoder (or several tokenizers) on
//! texts, as report documents. Texts come from `--text` values or a file (JSONL with a text
//! field, CSV/TSV with a text column, or plain text one per line).

use std::path::{Path, PathBuf};

use lmcompare_engine::encoder_model::weights_file;
use lmcompare_engine::pooling::PoolingMode;
use lmcompare_engine::profile::{
    count_from_config, count_safetensors, encoder_flops, peak_rss_bytes, percentile,
};
use lmcompare_engine::spec::resolve;
use lmcompare_engine::tokenize::{Encoded, TextTokenizer};
use lmcompare_engine::weights::WeightFile;
use lmcompare_engine::{LoadOptions, TextEncoder};
use serde_json::{json, Map, Value};

use lmcompare_report::doc::TokenizerStats;

use crate::{bad, Result};

/// Where the texts come from.
#[derive(Debug, Clone, Default)]
pub struct TextInput {
    pub text: Vec<String>,
    pub input: Option<PathBuf>,
    pub text_col: String,
}

pub fn load_texts(texts: &[String], input: Option<&Path>, text_col: &str) -> Result<Vec<String>> {
    match (texts.is_empty(), input) {
        (false, Some(_)) => Err(bad!("give --text or --input, not both")),
        (true, None) => Err(bad!(
            "nothing to run on: give --text (repeatable) or --input FILE"
        )),
        (false, None) => Ok(texts.to_vec()),
        (true, Some(path)) => read_input(path, text_col),
    }
}

fn read_input(path: &Path, text_col: &str) -> Result<Vec<String>> {
    let text = lmcompare_engine::data::read_text_file(path)?;
    let ext = lmcompare_engine::data::format_extension(path);
    let out: Vec<String> = match ext.as_str() {
        "jsonl" | "json" | "ndjson" => {
            let mut v = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let obj: serde_json::Value = serde_json::from_str(line).map_err(|e| {
                    bad!("{}:{}: not a valid JSON object: {e}", path.display(), i + 1)
                })?;
                let t = obj[text_col].as_str().ok_or_else(|| {
                    bad!(
                        "{}:{}: missing string field `{text_col}`",
                        path.display(),
                        i + 1
                    )
                })?;
                v.push(t.to_owned());
            }
            v
        }
        "csv" | "tsv" => {
            let mut r = csv::ReaderBuilder::new()
                .delimiter(if ext == "tsv" { b'\t' } else { b',' })
                .from_reader(text.as_bytes());
            let headers = r
                .headers()
                .map_err(|e| bad!("{}: cannot read the header: {e}", path.display()))?
                .clone();
            let col = headers.iter().position(|h| h == text_col).ok_or_else(|| {
                bad!(
                    "{}: missing column `{text_col}` (columns: {})",
                    path.display(),
                    headers.iter().collect::<Vec<_>>().join(", ")
                )
            })?;
            let mut v = Vec::new();
            for (i, rec) in r.records().enumerate() {
                let rec = rec.map_err(|e| bad!("{}:{}: {e}", path.display(), i + 2))?;
                v.push(rec.get(col).unwrap_or("").to_owned());
            }
            v
        }
        _ => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect(),
    };
    if out.is_empty() {
        return Err(bad!("{}: the file is empty (no texts)", path.display()));
    }
    Ok(out)
}

fn load(spec: &str, opts: &LoadOptions) -> Result<TextEncoder> {
    let resolved = resolve(spec)?;
    TextEncoder::load(resolved, opts).map_err(Into::into)
}

fn truncation_warning(
    model: &str,
    truncated: usize,
    total: usize,
    max_length: usize,
) -> Option<String> {
    (truncated > 0).then(|| {
        format!("{model}: {truncated} of {total} input(s) were truncated to {max_length} tokens")
    })
}

/// A loaded model with the texts tokenized, and the truncation count said on stderr.
struct Prepared {
    model: TextEncoder,
    encoded: Vec<lmcompare_engine::tokenize::Encoded>,
    truncated: usize,
    warnings: Vec<String>,
}

fn prepare(spec: &str, texts: &[String], opts: &LoadOptions) -> Result<Prepared> {
    let model = load(spec, opts)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let encoded = model.tokenizer.encode_batch(&refs)?;
    let truncated = encoded.iter().filter(|e| e.truncated).count();
    let warnings: Vec<String> =
        truncation_warning(spec, truncated, texts.len(), model.tokenizer.max_length())
            .into_iter()
            .collect();
    for w in &warnings {
        eprintln!("warning: {}", lmcompare_report::escape_controls(w));
    }
    Ok(Prepared {
        model,
        encoded,
        truncated,
        warnings,
    })
}

/// A non-finite output named by the text it came from (its number and first characters).
fn name_text(e: lmcompare_engine::EngineError, model: &str, texts: &[String]) -> crate::Error {
    crate::error::at_input(e, model, |i| {
        let text = texts.get(i).map_or("", String::as_str);
        let head: String = text.chars().take(40).collect();
        let more = if head.len() < text.len() { "…" } else { "" };
        format!("text {} ({head:?}{more})", i + 1)
    })
}

/// `embed`: sentence embeddings of `texts` (pooling as the model folder says unless given).
pub struct EmbedConfig {
    pub model: String,
    pub pooling: Option<PoolingMode>,
    pub normalize: Option<bool>,
    pub max_length: Option<usize>,
    pub batch_size: usize,
}

pub fn embed(cfg: &EmbedConfig, texts: &[String]) -> Result<Value> {
    if cfg.batch_size == 0 {
        return Err(bad!("--batch-size must be at least 1"));
    }
    let opts = LoadOptions {
        max_length: cfg.max_length,
        pooling: cfg.pooling,
        normalize: cfg.normalize,
    };
    let Prepared {
        model,
        encoded,
        truncated,
        warnings,
    } = prepare(&cfg.model, texts, &opts)?;
    let emb = model
        .embed(&encoded, cfg.batch_size)
        .map_err(|e| name_text(e, &cfg.model, texts))?;
    let dim = emb.first().map_or(0, Vec::len);
    Ok(json!({
        "model": cfg.model,
        "backend": model.backend(),
        "pooling": model.pooling.mode.key(),
        "normalized": model.pooling.normalize,
        "dim": dim,
        "max_length": model.tokenizer.max_length(),
        "truncated": truncated,
        "warnings": warnings,
        "embeddings": emb,
    }))
}

/// `predict`: class probabilities from a model with a classification head.
pub struct PredictConfig {
    pub model: String,
    pub max_length: Option<usize>,
    pub batch_size: usize,
}

pub fn predict(cfg: &PredictConfig, texts: &[String]) -> Result<Value> {
    if cfg.batch_size == 0 {
        return Err(bad!("--batch-size must be at least 1"));
    }
    let opts = LoadOptions {
        max_length: cfg.max_length,
        ..Default::default()
    };
    let Prepared {
        model,
        encoded,
        truncated,
        warnings,
    } = prepare(&cfg.model, texts, &opts)?;
    let probs = model
        .classify(&encoded, cfg.batch_size)
        .map_err(|e| name_text(e, &cfg.model, texts))?;
    let labels = model.labels().unwrap_or_default().to_vec();
    let predictions: Vec<Value> = probs
        .iter()
        .map(|p| {
            let best = p
                .iter()
                .enumerate()
                .fold(0, |b, (i, v)| if *v > p[b] { i } else { b });
            let mut m = Map::new();
            for (l, v) in labels.iter().zip(p) {
                m.insert(l.clone(), json!(v));
            }
            json!({"label": labels[best], "probabilities": m})
        })
        .collect();
    Ok(json!({
        "model": cfg.model,
        "labels": labels,
        "truncated": truncated,
        "warnings": warnings,
        "predictions": predictions,
    }))
}

/// `tokenize`: each model's tokenizer on `texts`, with tokens per word, unknown-token rate,
/// truncation and mean length.
pub fn tokenize(models: &[String], max_length: Option<usize>, texts: &[String]) -> Result<Value> {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut out = Vec::new();
    for spec in models {
        let resolved = resolve(spec)?;
        let (stats, tok, enc) = measure_tokenizer(spec, &resolved.dir, max_length, &refs)?;
        out.push(json!({
            "name": spec,
            "tokenizer": stats.tokenizer,
            "vocab_size": tok.vocab_size(),
            "max_length": stats.max_length,
            "tokens": enc.iter().map(|e| e.tokens.clone()).collect::<Vec<_>>(),
            "ids": enc.iter().map(|e| e.ids.clone()).collect::<Vec<_>>(),
            "stats": {
                "tokens_per_word": stats.tokens_per_word.unwrap_or(f64::NAN),
                "unk_rate": stats.unk_rate.unwrap_or(0.0),
                "truncated_fraction": stats.truncated_fraction,
                "mean_tokens": stats.mean_tokens,
            },
        }));
    }
    Ok(json!({"texts": texts, "models": out}))
}

/// An encoder folder's tokenizer on `texts`, cut at `max_length` (at most the model's
/// positions): tokens per word, unknown-token rate, truncation and mean length.
pub fn measure_tokenizer(
    name: &str,
    dir: &Path,
    max_length: Option<usize>,
    texts: &[&str],
) -> Result<(TokenizerStats, TextTokenizer, Vec<Encoded>)> {
    let limit = match std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| lmcompare_engine::config::EncoderConfig::from_value(&v).ok())
    {
        Some(c) => c.max_tokens(),
        None => 512,
    };
    let max_length = max_length.map_or(limit, |m| m.min(limit));
    let tok = TextTokenizer::load(dir, max_length)?;
    let enc = tok.encode_batch(texts)?;
    let n = enc.len().max(1) as f64;
    let words: usize = enc.iter().map(|e| e.words).sum();
    let content: usize = enc.iter().map(|e| e.content_tokens).sum();
    let unk: usize = enc.iter().map(|e| e.unknown_tokens).sum();
    let total: usize = enc.iter().map(|e| e.ids.len()).sum();
    let stats = TokenizerStats {
        model: name.to_owned(),
        tokenizer: tok.source().to_owned(),
        max_length,
        tokens_per_word: (words > 0).then(|| content as f64 / words as f64),
        unk_rate: (content > 0).then(|| unk as f64 / content as f64),
        truncated_fraction: enc.iter().filter(|e| e.truncated).count() as f64 / n,
        mean_tokens: total as f64 / n,
    };
    Ok((stats, tok, enc))
}

/// `profile`: what a model costs, measured after warm-up.
pub struct ProfileConfig {
    pub model: String,
    pub batch_size: usize,
    /// Tokens per synthetic input when no `input` is given.
    pub seq_len: usize,
    pub input: Option<PathBuf>,
    pub text_col: String,
    pub runs: usize,
    pub warmup: usize,
}

pub fn profile(cfg: &ProfileConfig) -> Result<Value> {
    if cfg.batch_size == 0 || cfg.runs == 0 {
        return Err(bad!("--batch-size and --runs must be at least 1"));
    }
    let resolved = resolve(&cfg.model)?;
    let model = TextEncoder::load(resolved.clone(), &LoadOptions::default())?;
    let params = match &resolved.onnx {
        None => count_safetensors(&WeightFile::open(
            &weights_file(&resolved.dir).unwrap_or_else(|| resolved.dir.join("model.safetensors")),
        )?),
        Some(path) => {
            let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            match &model.config {
                Some(cfg) => count_from_config(cfg, bytes),
                None => Default::default(),
            }
        }
    };
    let encoded: Vec<Encoded> = match &cfg.input {
        Some(path) => {
            let texts = load_texts(&[], Some(path), &cfg.text_col)?;
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            model.tokenizer.encode_batch(&refs)?
        }
        None => {
            if cfg.seq_len < 2 || cfg.seq_len > model.tokenizer.max_length() {
                return Err(bad!(
                    "--seq-len must be between 2 and the model's maximum of {}",
                    model.tokenizer.max_length()
                ));
            }
            // A long filler text cut at exactly seq_len tokens.
            let filler = "the quick brown fox jumps over the lazy dog ".repeat(cfg.seq_len);
            let one = model.tokenizer.encode_batch(&[filler.as_str()])?;
            let mut e = one[0].clone();
            e.ids.truncate(cfg.seq_len);
            vec![e; cfg.batch_size * cfg.runs]
        }
    };
    let warm: Vec<Encoded> = encoded
        .iter()
        .take(cfg.batch_size * cfg.warmup)
        .cloned()
        .collect();
    if !warm.is_empty() {
        model.run_batches(&warm, cfg.batch_size, |_, _, _| Ok(()))?;
    }
    let mut batch_ms = Vec::new();
    let mut example_ms = Vec::new();
    let (mut examples, mut tokens, mut seconds) = (0usize, 0usize, 0.0f64);
    model.run_batches(&encoded, cfg.batch_size, |_, _, t| {
        batch_ms.push(t.seconds * 1e3);
        example_ms.push(t.seconds * 1e3 / t.examples as f64);
        examples += t.examples;
        tokens += t.tokens;
        seconds += t.seconds;
        Ok(())
    })?;
    let labels = model.labels().map(<[String]>::len);
    let flops = model.config.as_ref().map(|cfg| {
        encoded
            .iter()
            .map(|e| encoder_flops(cfg, e.ids.len(), labels))
            .sum::<f64>()
            / encoded.len() as f64
    });
    let mut comps = Map::new();
    for c in &params.components {
        comps.insert(
            c.name.clone(),
            json!({"parameters": c.parameters, "bytes": c.bytes}),
        );
    }
    let threads = rayon::current_num_threads();
    let doc = json!({
        "model": cfg.model,
        "backend": model.backend(),
        "threads": threads,
        "parameters": params.parameters,
        "size_bytes": params.bytes,
        "dtypes": params.dtypes,
        "parameter_source": params.source,
        "components": comps,
        "flops_per_example": flops,
        "tokens_per_example": tokens as f64 / examples.max(1) as f64,
        "workload": match &cfg.input { Some(p) => json!({"input": p, "examples": examples}), None => json!({"batch_size": cfg.batch_size, "seq_len": cfg.seq_len}) },
        "warmup_batches": cfg.warmup,
        "timed_batches": batch_ms.len(),
        "latency_ms_p50": percentile(&batch_ms, 0.5),
        "latency_ms_p95": percentile(&batch_ms, 0.95),
        "latency_ms_p99": percentile(&batch_ms, 0.99),
        "latency_ms_per_example_p50": percentile(&example_ms, 0.5),
        "throughput_per_s": examples as f64 / seconds,
        "tokens_per_s": tokens as f64 / seconds,
        "peak_rss_bytes": peak_rss_bytes(),
        "note": "latencies are per batch; warm-up batches are excluded",
    });
    Ok(doc)
}
