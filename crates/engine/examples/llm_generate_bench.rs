//! lmcompare's side of `bench/llm_generate_vs_llamacpp.sh`: greedy decoding of `NEW` tokens
//! for the first `PROMPTS` test reviews ("Review: {text}\nSummary:"), all prompts decoded
//! together (one packed step per token, a KV cache per sequence), timed in-process from
//! tokenization to the last token, model load excluded.
//!
//!   llm_generate_bench MODEL DATA [PROMPTS] [NEW] [--dequantize] [--one-at-a-time]
//!
//! `--one-at-a-time` decodes the prompts one after another, as llama-cpp-python's API does.

use std::time::Instant;

use lmcompare_engine::decoder::{Decoder, LoadOptions};
use serde_json::Value;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().collect();
    let dequantize = args.iter().any(|a| a == "--dequantize");
    let sequential = args.iter().any(|a| a == "--one-at-a-time");
    args.retain(|a| a != "--dequantize" && a != "--one-at-a-time");
    if args.len() < 3 {
        return Err("usage: llm_generate_bench MODEL DATA [PROMPTS] [NEW] [--dequantize]".into());
    }
    let prompts: usize = args.get(3).map_or(Ok(50), |s| s.parse())?;
    let new: usize = args.get(4).map_or(Ok(64), |s| s.parse())?;
    let rows: Vec<Value> = std::fs::read_to_string(&args[2])?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let texts: Vec<String> = rows
        .iter()
        .filter(|r| r["split"] == "test")
        .take(prompts)
        .map(|r| format!("Review: {}\nSummary:", r["text"].as_str().unwrap_or("")))
        .collect();
    let dec = Decoder::load_with(std::path::Path::new(&args[1]), LoadOptions { dequantize })?;
    let never = |_: usize, _: &[u32]| false;
    // Warm-up, as the peer does.
    dec.generate(&[dec.start_tokens()], 2, &never)?;
    let t0 = Instant::now();
    let mut ids = Vec::with_capacity(texts.len());
    for t in &texts {
        let mut p = dec.start_tokens();
        p.extend(dec.encode(t)?);
        ids.push(p);
    }
    let out = if sequential {
        let mut out = Vec::new();
        for p in ids {
            out.extend(dec.generate(&[p], new, &never)?.0);
        }
        out
    } else {
        dec.generate(&ids, new, &never)?.0
    };
    let seconds = t0.elapsed().as_secs_f64();
    let tokens: usize = out.iter().map(Vec::len).sum();
    println!(
        "{}",
        serde_json::json!({
            "prompts": texts.len(), "new_tokens": tokens, "seconds": seconds,
            "tokens_per_s": tokens as f64 / seconds, "threads": rayon::current_num_threads(),
            "weights": dec.size.compute, "one_at_a_time": sequential,
            "first": dec.decode(&out[0])?,
        })
    );
    Ok(())
}
