//! `profile`: what a model costs — parameters and bytes by component, FLOPs per example,
//! latency percentiles, throughput and peak memory, measured after warm-up.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use lmcompare_engine::encoder_model::weights_file;
use lmcompare_engine::profile::{
    count_from_config, count_safetensors, encoder_flops, peak_rss_bytes, percentile,
};
use lmcompare_engine::spec::resolve;
use lmcompare_engine::tokenize::Encoded;
use lmcompare_engine::weights::WeightFile;
use lmcompare_engine::{LoadOptions, TextEncoder};
use lmcompare_report::Format;
use serde_json::{json, Map, Value};

use crate::encoder_cmds::engine;
use crate::texts::load_texts;
use crate::{emit, resolve_format, BadInput};

#[derive(Args)]
pub struct ProfileArgs {
    #[arg(long)]
    model: String,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Tokens per synthetic input (special tokens included), when no --input is given.
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    /// Profile on real texts instead (JSONL/CSV/TSV/plain text); FLOPs use their token counts.
    #[arg(long)]
    input: Option<PathBuf>,
    #[arg(long, default_value = "text")]
    text_col: String,
    /// Timed batches (after warm-up); with --input, one pass over the file.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Untimed warm-up batches.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    #[arg(long)]
    format: Option<Format>,
}

pub fn run(args: ProfileArgs) -> Result<()> {
    if args.batch_size == 0 || args.runs == 0 {
        return Err(BadInput("--batch-size and --runs must be at least 1".into()).into());
    }
    let resolved = resolve(&args.model).map_err(engine)?;
    let model = TextEncoder::load(resolved.clone(), &LoadOptions::default()).map_err(engine)?;
    let params = match &resolved.onnx {
        None => count_safetensors(
            &WeightFile::open(
                &weights_file(&resolved.dir)
                    .unwrap_or_else(|| resolved.dir.join("model.safetensors")),
            )
            .map_err(engine)?,
        ),
        Some(path) => {
            let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            match &model.config {
                Some(cfg) => count_from_config(cfg, bytes),
                None => Default::default(),
            }
        }
    };
    let encoded: Vec<Encoded> = match &args.input {
        Some(path) => {
            let texts = load_texts(&[], Some(path), &args.text_col)?;
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            model.tokenizer.encode_batch(&refs).map_err(engine)?
        }
        None => {
            if args.seq_len < 2 || args.seq_len > model.tokenizer.max_length() {
                return Err(BadInput(format!(
                    "--seq-len must be between 2 and the model's maximum of {}",
                    model.tokenizer.max_length()
                ))
                .into());
            }
            // A long filler text cut at exactly seq_len tokens.
            let filler = "the quick brown fox jumps over the lazy dog ".repeat(args.seq_len);
            let one = model
                .tokenizer
                .encode_batch(&[filler.as_str()])
                .map_err(engine)?;
            let mut e = one[0].clone();
            e.ids.truncate(args.seq_len);
            vec![e; args.batch_size * args.runs]
        }
    };
    let warm: Vec<Encoded> = encoded
        .iter()
        .take(args.batch_size * args.warmup)
        .cloned()
        .collect();
    if !warm.is_empty() {
        model
            .run_batches(&warm, args.batch_size, |_, _, _| Ok(()))
            .map_err(engine)?;
    }
    let mut batch_ms = Vec::new();
    let mut example_ms = Vec::new();
    let (mut examples, mut tokens, mut seconds) = (0usize, 0usize, 0.0f64);
    model
        .run_batches(&encoded, args.batch_size, |_, _, t| {
            batch_ms.push(t.seconds * 1e3);
            example_ms.push(t.seconds * 1e3 / t.examples as f64);
            examples += t.examples;
            tokens += t.tokens;
            seconds += t.seconds;
            Ok(())
        })
        .map_err(engine)?;
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
        "model": args.model,
        "backend": model.backend(),
        "threads": threads,
        "parameters": params.parameters,
        "size_bytes": params.bytes,
        "dtypes": params.dtypes,
        "parameter_source": params.source,
        "components": comps,
        "flops_per_example": flops,
        "tokens_per_example": tokens as f64 / examples.max(1) as f64,
        "workload": match &args.input { Some(p) => json!({"input": p, "examples": examples}), None => json!({"batch_size": args.batch_size, "seq_len": args.seq_len}) },
        "warmup_batches": args.warmup,
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
    match resolve_format(args.format) {
        Format::Json => emit(&(serde_json::to_string_pretty(&doc)? + "\n")),
        _ => emit(&profile_table(&doc)),
    }
}

fn profile_table(d: &Value) -> String {
    let f = |k: &str| d[k].as_f64().unwrap_or(f64::NAN);
    let mut s = format!(
        "{} ({}, {} threads)\n",
        d["model"].as_str().unwrap_or(""),
        d["backend"].as_str().unwrap_or(""),
        d["threads"]
    );
    s.push_str(&format!(
        "parameters          {:>14}  ({})\n",
        d["parameters"],
        d["parameter_source"].as_str().unwrap_or("")
    ));
    if let Some(c) = d["components"].as_object() {
        for (name, v) in c {
            s.push_str(&format!("  {name:<18}{:>14}\n", v["parameters"]));
        }
    }
    s.push_str(&format!(
        "size                {:>14} bytes\n",
        d["size_bytes"]
    ));
    s.push_str(&format!(
        "FLOPs / example     {:>14.3e}\n",
        f("flops_per_example")
    ));
    s.push_str(&format!(
        "tokens / example    {:>14.1}\n",
        f("tokens_per_example")
    ));
    s.push_str(&format!(
        "latency p50/p95/p99 {:>8.2} / {:.2} / {:.2} ms per batch ({} timed, {} warm-up)\n",
        f("latency_ms_p50"),
        f("latency_ms_p95"),
        f("latency_ms_p99"),
        d["timed_batches"],
        d["warmup_batches"]
    ));
    s.push_str(&format!(
        "throughput          {:>14.1} examples/s, {:.0} tokens/s\n",
        f("throughput_per_s"),
        f("tokens_per_s")
    ));
    s.push_str(&format!(
        "peak RSS            {:>14.1} MiB\n",
        f("peak_rss_bytes") / 1048576.0
    ));
    s
}
