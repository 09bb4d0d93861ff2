//! `embed`, `predict`, `tokenize` and `profile`: arguments → configs → the pipeline's
//! inspect functions → an exporter.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use lmcompare_engine::pooling::PoolingMode;
use lmcompare_pipeline::inspect::{self, EmbedConfig, PredictConfig, ProfileConfig};
use lmcompare_report::Format;

use crate::output::{emit, pretty, refuse_html, resolve_format};

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
    #[arg(long, value_parser = crate::numbers::max_length)]
    max_length: Option<usize>,
    #[arg(long, value_parser = crate::numbers::positive, default_value_t = 32)]
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
    #[arg(long, value_parser = crate::numbers::max_length)]
    max_length: Option<usize>,
    #[arg(long, value_parser = crate::numbers::positive, default_value_t = 32)]
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
    #[arg(long, value_parser = crate::numbers::max_length)]
    max_length: Option<usize>,
    #[arg(long)]
    format: Option<Format>,
}

impl TextInput {
    fn texts(&self) -> Result<Vec<String>> {
        Ok(inspect::load_texts(
            &self.text,
            self.input.as_deref(),
            &self.text_col,
        )?)
    }
}

/// One-line JSON (embeddings are long) unless a table or Markdown is asked for.
fn compact(doc: &serde_json::Value) -> Result<String> {
    Ok(serde_json::to_string(doc)? + "\n")
}

pub fn embed(args: EmbedArgs) -> Result<()> {
    refuse_html(args.format, "embed")?;
    let texts = args.input.texts()?;
    let doc = inspect::embed(
        &EmbedConfig {
            model: args.model,
            pooling: args.pooling,
            normalize: args.normalize,
            max_length: args.max_length,
            batch_size: args.batch_size,
        },
        &texts,
    )?;
    emit(&match resolve_format(args.format.or(Some(Format::Json))) {
        Format::Json => compact(&doc)?,
        _ => lmcompare_report::render_embed_table(&texts, &doc),
    })
}

pub fn predict(args: PredictArgs) -> Result<()> {
    refuse_html(args.format, "predict")?;
    let texts = args.input.texts()?;
    let doc = inspect::predict(
        &PredictConfig {
            model: args.model,
            max_length: args.max_length,
            batch_size: args.batch_size,
        },
        &texts,
    )?;
    emit(&match resolve_format(args.format.or(Some(Format::Json))) {
        Format::Json => compact(&doc)?,
        _ => lmcompare_report::render_predict_table(&texts, &doc),
    })
}

pub fn tokenize(args: TokenizeArgs) -> Result<()> {
    refuse_html(args.format, "tokenize")?;
    let doc = inspect::tokenize(&args.models, args.max_length, &args.input.texts()?)?;
    emit(&match resolve_format(args.format) {
        Format::Json => pretty(&doc)?,
        _ => lmcompare_report::render_tokenize_table(&doc),
    })
}

#[derive(Args)]
pub struct ProfileArgs {
    #[arg(long)]
    model: String,
    #[arg(long, value_parser = crate::numbers::positive, default_value_t = 32)]
    batch_size: usize,
    /// Tokens per synthetic input (special tokens included), when no --input is given.
    #[arg(long, value_parser = crate::numbers::max_length, default_value_t = 128)]
    seq_len: usize,
    /// Profile on real texts instead (JSONL/CSV/TSV/plain text); FLOPs use their token counts.
    #[arg(long)]
    input: Option<PathBuf>,
    #[arg(long, default_value = "text")]
    text_col: String,
    /// Timed batches (after warm-up); with --input, one pass over the file.
    #[arg(long, value_parser = crate::numbers::positive, default_value_t = 10)]
    runs: usize,
    /// Untimed warm-up batches.
    #[arg(long, value_parser = crate::numbers::count, default_value_t = 2)]
    warmup: usize,
    #[arg(long)]
    format: Option<Format>,
}

pub fn profile(args: ProfileArgs) -> Result<()> {
    refuse_html(args.format, "profile")?;
    let doc = inspect::profile(&ProfileConfig {
        model: args.model,
        batch_size: args.batch_size,
        seq_len: args.seq_len,
        input: args.input,
        text_col: args.text_col,
        runs: args.runs,
        warmup: args.warmup,
    })?;
    emit(&match resolve_format(args.format) {
        Format::Json => pretty(&doc)?,
        _ => lmcompare_report::render_profile_table(&doc),
    })
}
