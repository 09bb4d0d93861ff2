//! `embed`, `predict` and `tokenize`: run encoders on texts.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use lmcompare_engine::pooling::PoolingMode;
use lmcompare_engine::spec::resolve;
use lmcompare_engine::{EngineError, LoadOptions, TextEncoder};
use lmcompare_report::Format;
use serde_json::{json, Map, Value};

use crate::texts::load_texts;
use crate::{emit, resolve_format, BadInput};

/// Engine errors the user can fix exit 2, the rest 1.
pub fn engine(e: EngineError) -> anyhow::Error {
    if e.is_bad_input() {
        BadInput(e.to_string()).into()
    } else {
        anyhow::anyhow!(e.to_string())
    }
}

#[derive(Args, Clone)]
pub struct TextInput {
    /// A text to run on (repeatable).
    #[arg(long = "text", value_name = "TEXT")]
    pub text: Vec<String>,
    /// A file of texts: JSONL (field --text-col), CSV/TSV (column --text-col) or plain
    /// text, one per line.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    #[arg(long, default_value = "text")]
    pub text_col: String,
}

#[derive(Args)]
pub struct EmbedArgs {
    /// Model: a folder in Hugging Face layout, an .onnx file, or hf:org/name[@revision].
    #[arg(long)]
    model: String,
    #[command(flatten)]
    input: TextInput,
    /// Pooling of token states: mean, cls or max (default: the folder's
    /// sentence-transformers config, else mean).
    #[arg(long)]
    pooling: Option<PoolingMode>,
    /// L2-normalise embeddings (default: as the folder's modules.json says).
    #[arg(long)]
    normalize: Option<bool>,
    #[arg(long)]
    max_length: Option<usize>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// json (default) or table.
    #[arg(long)]
    format: Option<Format>,
}

#[derive(Args)]
pub struct PredictArgs {
    #[arg(long)]
    model: String,
    #[command(flatten)]
    input: TextInput,
    #[arg(long)]
    max_length: Option<usize>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long)]
    format: Option<Format>,
}

#[derive(Args)]
pub struct TokenizeArgs {
    /// Model (repeatable): its tokenizer is used, with the model's maximum length.
    #[arg(long = "model", required = true)]
    models: Vec<String>,
    #[command(flatten)]
    input: TextInput,
    #[arg(long)]
    max_length: Option<usize>,
    #[arg(long)]
    format: Option<Format>,
}

fn load(spec: &str, opts: &LoadOptions) -> Result<TextEncoder> {
    let resolved = resolve(spec).map_err(engine)?;
    TextEncoder::load(resolved, opts).map_err(engine)
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
    let encoded = model.tokenizer.encode_batch(&refs).map_err(engine)?;
    let truncated = encoded.iter().filter(|e| e.truncated).count();
    let warnings: Vec<String> =
        truncation_warning(spec, truncated, texts.len(), model.tokenizer.max_length())
            .into_iter()
            .collect();
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    Ok(Prepared {
        model,
        encoded,
        truncated,
        warnings,
    })
}

pub fn embed(args: EmbedArgs) -> Result<()> {
    let texts = load_texts(
        &args.input.text,
        args.input.input.as_deref(),
        &args.input.text_col,
    )?;
    let opts = LoadOptions {
        max_length: args.max_length,
        pooling: args.pooling,
        normalize: args.normalize,
    };
    let Prepared {
        model,
        encoded,
        truncated,
        warnings,
    } = prepare(&args.model, &texts, &opts)?;
    let emb = model.embed(&encoded, args.batch_size).map_err(engine)?;
    let dim = emb.first().map_or(0, Vec::len);
    let doc = json!({
        "model": args.model,
        "backend": model.backend(),
        "pooling": model.pooling.mode.key(),
        "normalized": model.pooling.normalize,
        "dim": dim,
        "max_length": model.tokenizer.max_length(),
        "truncated": truncated,
        "warnings": warnings,
        "embeddings": emb,
    });
    match resolve_format(args.format.or(Some(Format::Json))) {
        Format::Table | Format::Markdown => {
            let mut s = format!(
                "{} ({}, {} pooling, normalized: {}), dim {dim}\n",
                args.model,
                model.backend(),
                model.pooling.mode.key(),
                model.pooling.normalize
            );
            for (t, e) in texts.iter().zip(&emb) {
                let head: Vec<String> = e.iter().take(6).map(|v| format!("{v:+.5}")).collect();
                s.push_str(&format!(
                    "{:<40}  [{} ...]\n",
                    ellipsis(t, 40),
                    head.join(", ")
                ));
            }
            emit(&s)
        }
        Format::Json => emit(&(serde_json::to_string(&doc)? + "\n")),
    }
}

fn ellipsis(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let cut: String = s.chars().take(n - 1).collect();
        format!("{cut}…")
    }
}

pub fn predict(args: PredictArgs) -> Result<()> {
    let texts = load_texts(
        &args.input.text,
        args.input.input.as_deref(),
        &args.input.text_col,
    )?;
    let opts = LoadOptions {
        max_length: args.max_length,
        ..Default::default()
    };
    let Prepared {
        model,
        encoded,
        truncated,
        warnings,
    } = prepare(&args.model, &texts, &opts)?;
    let probs = model.classify(&encoded, args.batch_size).map_err(engine)?;
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
    match resolve_format(args.format.or(Some(Format::Json))) {
        Format::Json => emit(
            &(serde_json::to_string(&json!({
                "model": args.model,
                "labels": labels,
                "truncated": truncated,
                "warnings": warnings,
                "predictions": predictions,
            }))? + "\n"),
        ),
        _ => {
            let mut s = String::new();
            for (t, p) in texts.iter().zip(&predictions) {
                let label = p["label"].as_str().unwrap_or_default();
                let conf = p["probabilities"][label].as_f64().unwrap_or(f64::NAN);
                s.push_str(&format!("{:<50}  {label} ({conf:.3})\n", ellipsis(t, 50)));
            }
            emit(&s)
        }
    }
}

pub fn tokenize(args: TokenizeArgs) -> Result<()> {
    let texts = load_texts(
        &args.input.text,
        args.input.input.as_deref(),
        &args.input.text_col,
    )?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut models = Vec::new();
    for spec in &args.models {
        let resolved = resolve(spec).map_err(engine)?;
        let limit = match std::fs::read_to_string(resolved.dir.join("config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| lmcompare_engine::config::EncoderConfig::from_value(&v).ok())
        {
            Some(c) => c.max_tokens(),
            None => 512,
        };
        let max_length = args.max_length.map_or(limit, |m| m.min(limit));
        let tok = lmcompare_engine::tokenize::TextTokenizer::load(&resolved.dir, max_length)
            .map_err(engine)?;
        let enc = tok.encode_batch(&refs).map_err(engine)?;
        let n = enc.len() as f64;
        let words: usize = enc.iter().map(|e| e.words).sum();
        let content: usize = enc.iter().map(|e| e.content_tokens).sum();
        let unk: usize = enc.iter().map(|e| e.unknown_tokens).sum();
        let total: usize = enc.iter().map(|e| e.ids.len()).sum();
        models.push(json!({
            "name": spec,
            "tokenizer": tok.source(),
            "vocab_size": tok.vocab_size(),
            "max_length": max_length,
            "tokens": enc.iter().map(|e| e.tokens.clone()).collect::<Vec<_>>(),
            "ids": enc.iter().map(|e| e.ids.clone()).collect::<Vec<_>>(),
            "stats": {
                "tokens_per_word": if words > 0 { content as f64 / words as f64 } else { f64::NAN },
                "unk_rate": if content > 0 { unk as f64 / content as f64 } else { 0.0 },
                "truncated_fraction": enc.iter().filter(|e| e.truncated).count() as f64 / n,
                "mean_tokens": total as f64 / n,
            },
        }));
    }
    match resolve_format(args.format) {
        Format::Json => emit(
            &(serde_json::to_string_pretty(&json!({"texts": texts, "models": models}))? + "\n"),
        ),
        _ => emit(&tokenize_table(&texts, &models)),
    }
}

fn tokenize_table(texts: &[String], models: &[Value]) -> String {
    let mut s = String::new();
    for (i, t) in texts.iter().enumerate() {
        s.push_str(&format!("text {}: {}\n", i + 1, ellipsis(t, 100)));
        for m in models {
            let toks: Vec<&str> = m["tokens"][i]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
                .unwrap_or_default();
            s.push_str(&format!(
                "  {:<30} {:>4} tokens  {}\n",
                ellipsis(m["name"].as_str().unwrap_or(""), 30),
                toks.len(),
                toks.join(" ")
            ));
        }
    }
    s.push_str(
        "\nmodel                           vocab  tokens/word  unk rate  truncated  mean tokens\n",
    );
    for m in models {
        let st = &m["stats"];
        s.push_str(&format!(
            "{:<30} {:>6}  {:>11.3}  {:>8.4}  {:>9.3}  {:>11.2}\n",
            ellipsis(m["name"].as_str().unwrap_or(""), 30),
            m["vocab_size"],
            st["tokens_per_word"].as_f64().unwrap_or(f64::NAN),
            st["unk_rate"].as_f64().unwrap_or(f64::NAN),
            st["truncated_fraction"].as_f64().unwrap_or(f64::NAN),
            st["mean_tokens"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    s
}
