//! The real Gemma 3 270M GGUF (Q4_K_M, fetched by `scripts/fetch-assets.sh`) against
//! llama.cpp on committed references (llama-cpp-python 0.3.36 in-process): the embedded
//! SentencePiece tokenizer rebuilt as a `tokenizers` BPE gives llama.cpp's ids on 380 texts;
//! greedy generations are identical; label and per-token log-likelihoods agree within 0.01
//! nats with llama.cpp running the same weights dequantised to F32 with an F32 KV cache
//! (`scripts/gen_gemma_f32_reference.py`), and give the same winner as llama.cpp on the
//! Q4_K_M file itself (`scripts/gen_gemma_reference.py`).
//!
//! Why two references: on quantised weights llama.cpp also quantises the activations to 8
//! bits for its dot products. That moves its log-probabilities by up to 0.79 nats (mean 0.19)
//! against its own F32 run, and by up to 0.23 with how a sequence is split into decode calls.
//! lmcompare dequantises the weights once and computes in f32, so the F32 run is the
//! reference for the numbers; the Q4 run checks that decisions agree.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use lmcompare_engine::decoder::{Decoder, ScoreRequest};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn reference() -> Value {
    let p = root().join("tests/fixtures/models/gemma3_llamacpp_reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn f32_reference() -> Value {
    let p = root().join("tests/fixtures/models/gemma3_llamacpp_f32_reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn gemma() -> &'static Decoder {
    static MODEL: OnceLock<Decoder> = OnceLock::new();
    MODEL.get_or_init(|| {
        let p = root().join("assets/models/gemma-3-270m-q4_k_m.gguf");
        assert!(
            p.exists(),
            "{} is missing: run `bash scripts/fetch-assets.sh` (it assembles the Gemma GGUF)",
            p.display()
        );
        Decoder::load(&p).unwrap()
    })
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn embedded_tokenizer_matches_llama_cpp() {
    let refs = reference();
    let dec = gemma();
    assert_eq!(dec.prefix(), &[2]);
    let mut wrong = Vec::new();
    let cases = refs["tokenize"].as_array().unwrap();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let mut got = dec.prefix().to_vec();
        got.extend(dec.encode(text).unwrap());
        if got != ids(&case["ids"]) {
            wrong.push(format!("{text:?}: {got:?} vs {}", case["ids"]));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} differ:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

#[test]
fn label_log_likelihoods_agree_with_llama_cpp() {
    let refs = f32_reference();
    let quantised = reference();
    let dec = gemma();
    let cases = refs["loglik"]["cases"].as_array().unwrap();
    let q_cases = quantised["loglik"]["cases"].as_array().unwrap();
    let requests: Vec<ScoreRequest> = cases
        .iter()
        .map(|c| ScoreRequest {
            context: ids(&c["prompt_ids"]),
            continuations: vec![
                ids(&c["continuations"][" positive"]["ids"]),
                ids(&c["continuations"][" negative"]["ids"]),
            ],
        })
        .collect();
    let (scores, _) = dec.score(&requests).unwrap();
    let mut worst = 0.0f64;
    let mut total = 0.0;
    for (c, s) in cases.iter().zip(&scores) {
        let want = [
            c["continuations"][" positive"]["logprob"].as_f64().unwrap(),
            c["continuations"][" negative"]["logprob"].as_f64().unwrap(),
        ];
        for (g, w) in s.iter().zip(want) {
            let d = (g.sum() - w).abs();
            worst = worst.max(d);
            total += d;
        }
        assert_eq!(
            s[0].sum() > s[1].sum(),
            want[0] > want[1],
            "{}: the predicted label differs from llama.cpp's",
            c["id"]
        );
        let q = q_cases.iter().find(|q| q["id"] == c["id"]).unwrap();
        let q_pos = q["continuations"][" positive"]["logprob"].as_f64().unwrap();
        let q_neg = q["continuations"][" negative"]["logprob"].as_f64().unwrap();
        assert_eq!(
            s[0].sum() > s[1].sum(),
            q_pos > q_neg,
            "{}: the predicted label differs from llama.cpp's on the Q4_K_M weights",
            c["id"]
        );
        // The prompt's encoding through the CLI's pair split gives the fixture's ids.
        let (ctx, cont) = dec
            .encode_pair(c["prompt"].as_str().unwrap(), " positive")
            .unwrap();
        assert_eq!(ctx, ids(&c["prompt_ids"]));
        assert_eq!(cont, vec![4414]);
    }
    let mean = total / (2 * cases.len()) as f64;
    eprintln!("label log-likelihoods vs llama.cpp: max |Δ| {worst:.4}, mean {mean:.4}");
    assert!(worst < 0.01, "max |Δ| = {worst}");
}

#[test]
fn greedy_generation_matches_llama_cpp() {
    let refs = reference();
    let dec = gemma();
    for g in refs["greedy"].as_array().unwrap() {
        let prompt = ids(&g["prompt_ids"]);
        let want = ids(&g["generated_ids"]);
        let got = dec
            .generate(&[prompt], want.len(), &|_, _| false)
            .unwrap()
            .0;
        assert_eq!(got[0], want, "{}", g["prompt"]);
        assert_eq!(
            dec.decode(&got[0]).unwrap(),
            g["generated_text"].as_str().unwrap()
        );
    }
}

#[test]
fn per_token_log_probabilities_agree_with_llama_cpp() {
    let refs = f32_reference();
    let dec = gemma();
    for case in refs["loglik"]["perplexity"].as_array().unwrap() {
        let all = ids(&case["ids"]);
        let want: Vec<f64> = case["token_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let (scores, _) = dec
            .score(&[ScoreRequest {
                context: all[..1].to_vec(),
                continuations: vec![all[1..].to_vec()],
            }])
            .unwrap();
        let got = &scores[0][0].logprobs;
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let sum_diff =
            (got.iter().sum::<f64>() - want.iter().sum::<f64>()).abs() / want.len() as f64;
        eprintln!(
            "{}: max per-token |Δ| {worst:.4}, mean-NLL |Δ| {sum_diff:.5}",
            case["name"]
        );
        assert!(
            sum_diff < 0.01,
            "{}: mean NLL differs by {sum_diff}",
            case["name"]
        );
    }
}
