//! lmcompare's side of `bench/llm_vs_llamacpp.sh`: zero-shot classification of the Rotten
//! Tomatoes test split with a local decoder, exactly the peer's work (BOS + "Review: {text}\n
//! Sentiment:", continuations " positive" / " negative", higher summed log-probability wins),
//! timed in-process from tokenization to predictions, model load excluded.
//!
//!   llm_score_bench MODEL DATA [LIMIT] [BATCH] [--dequantize]   → one JSON line on stdout
//!
//! `--dequantize` runs the f32 path (weights dequantised at load) instead of the quantised
//! blocks with int8 kernels. The line also reports the process's peak RSS.

use std::time::Instant;

use lmcompare_engine::decoder::{Decoder, LoadOptions, ScoreRequest};
use serde_json::Value;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().collect();
    let dequantize = args.iter().any(|a| a == "--dequantize");
    args.retain(|a| a != "--dequantize");
    if args.len() < 3 {
        return Err("usage: llm_score_bench MODEL DATA [LIMIT] [BATCH]".into());
    }
    let limit: usize = args.get(3).map_or(Ok(usize::MAX), |s| s.parse())?;
    let batch: usize = args.get(4).map_or(Ok(32), |s| s.parse())?;
    let rows: Vec<Value> = std::fs::read_to_string(&args[2])?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let test: Vec<&Value> = rows
        .iter()
        .filter(|r| r["split"] == "test")
        .take(limit)
        .collect();
    let t_load = Instant::now();
    let dec = Decoder::load_with(std::path::Path::new(&args[1]), LoadOptions { dequantize })?;
    let load_s = t_load.elapsed().as_secs_f64();
    let (load_rss, load_peak) = (rss("VmRSS:"), rss("VmHWM:"));
    // One warm-up call, as the peer does one warm-up decode.
    let warm = dec.encode_pair("Review: fine\nSentiment:", " positive")?;
    dec.score(&[ScoreRequest {
        context: warm.0,
        continuations: vec![warm.1],
    }])?;
    let t0 = Instant::now();
    let mut right = 0usize;
    let mut fed = 0usize;
    for chunk in test.chunks(batch) {
        let mut requests = Vec::with_capacity(chunk.len());
        for r in chunk {
            let prompt = format!("Review: {}\nSentiment:", r["text"].as_str().unwrap_or(""));
            let (ctx, pos) = dec.encode_pair(&prompt, " positive")?;
            let (_, neg) = dec.encode_pair(&prompt, " negative")?;
            requests.push(ScoreRequest {
                context: ctx,
                continuations: vec![pos, neg],
            });
        }
        let (scores, stats) = dec.score(&requests)?;
        fed += stats.fed_tokens;
        for (s, r) in scores.iter().zip(chunk) {
            let pred = if s[0].sum() >= s[1].sum() {
                "fresh"
            } else {
                "rotten"
            };
            right += usize::from(r["label"] == pred);
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "examples": test.len(), "seconds": seconds, "examples_per_s": test.len() as f64 / seconds,
            "accuracy": right as f64 / test.len().max(1) as f64, "tokens_fed": fed,
            "load_seconds": load_s, "batch": batch, "threads": rayon::current_num_threads(),
            "weights": dec.size.compute, "weight_bytes": dec.size.weight_bytes,
            "file_bytes": dec.size.file_bytes, "peak_rss_bytes": rss("VmHWM:"),
            "rss_after_load_bytes": load_rss, "peak_rss_during_load_bytes": load_peak,
        })
    );
    Ok(())
}

/// A memory figure from /proc/self/status (Linux; VmHWM is the peak RSS), in bytes.
fn rss(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
