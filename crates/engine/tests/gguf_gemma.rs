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

use lmcompare_engine::decoder::{Decoder, LoadOptions, ScoreRequest};
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

fn gemma_path() -> PathBuf {
    let p = root().join("assets/models/gemma-3-270m-q4_k_m.gguf");
    assert!(
        p.exists(),
        "{} is missing: run `bash scripts/fetch-assets.sh` (it assembles the Gemma GGUF)",
        p.display()
    );
    p
}

/// The f32 path (`--dequantize`): the weights' exact values, compared with llama.cpp run on
/// the same dequantised weights in f32.
fn gemma() -> &'static Decoder {
    static MODEL: OnceLock<Decoder> = OnceLock::new();
    MODEL.get_or_init(|| {
        Decoder::load_with(&gemma_path(), LoadOptions { dequantize: true }).unwrap()
    })
}

/// The default path: Q4_K_M blocks with int8 activations, compared with llama.cpp on the
/// same file.
fn gemma_quantised() -> &'static Decoder {
    static MODEL: OnceLock<Decoder> = OnceLock::new();
    MODEL.get_or_init(|| Decoder::load(&gemma_path()).unwrap())
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Each case's prompt with its two label continuations, as one score request.
fn label_requests(cases: &[Value]) -> Vec<ScoreRequest> {
    cases
        .iter()
        .map(|c| ScoreRequest {
            context: ids(&c["prompt_ids"]),
            continuations: vec![
                ids(&c["continuations"][" positive"]["ids"]),
                ids(&c["continuations"][" negative"]["ids"]),
            ],
        })
        .collect()
}

/// A reference case's label log-likelihoods, positive then negative.
fn label_logprobs(c: &Value) -> [f64; 2] {
    [" positive", " negative"].map(|k| c["continuations"][k]["logprob"].as_f64().unwrap())
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
    let requests = label_requests(cases);
    let (scores, _) = dec.score(&requests).unwrap();
    let mut worst = 0.0f64;
    let mut total = 0.0;
    for (c, s) in cases.iter().zip(&scores) {
        let want = label_logprobs(c);
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

fn f32_kv_reference() -> Value {
    let p = root().join("tests/fixtures/models/gemma3_llamacpp_q4km_f32kv_reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// llama.cpp's label log-likelihoods on the Q4_K_M file (with an f32 KV cache, as ours),
/// against ours on the same blocks with activations quantised as llama.cpp quantises them
/// (Q8_0 / Q8_K).
#[test]
fn quantised_label_log_likelihoods_agree_with_llama_cpp_on_the_same_blocks() {
    let refs = f32_kv_reference();
    let dec = gemma_quantised();
    assert!(
        dec.size.compute.starts_with("quantised blocks"),
        "{}",
        dec.size.compute
    );
    let cases = refs["loglik"]["cases"].as_array().unwrap();
    let requests = label_requests(cases);
    let (scores, _) = dec.score(&requests).unwrap();
    let (mut worst, mut total, mut margin_worst) = (0.0f64, 0.0, 0.0f64);
    let mut disagree = Vec::new();
    for (c, s) in cases.iter().zip(&scores) {
        let want = label_logprobs(c);
        for (g, w) in s.iter().zip(want) {
            let d = (g.sum() - w).abs();
            worst = worst.max(d);
            total += d;
        }
        let margin = (s[0].sum() - s[1].sum()) - (want[0] - want[1]);
        margin_worst = margin_worst.max(margin.abs());
        if (s[0].sum() > s[1].sum()) != (want[0] > want[1]) {
            disagree.push(c["id"].to_string());
        }
    }
    // Against llama.cpp in F32, for scale: how far the quantisation itself moves the numbers.
    let f32_refs = f32_reference();
    let mut to_f32 = 0.0f64;
    for (c, s) in f32_refs["loglik"]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&scores)
    {
        for (g, k) in s.iter().zip([" positive", " negative"]) {
            let w = c["continuations"][k]["logprob"].as_f64().unwrap();
            to_f32 = to_f32.max((g.sum() - w).abs());
        }
    }
    eprintln!("quantised vs llama.cpp F32: max |Δ| {to_f32:.4}");
    let mean = total / (2 * cases.len()) as f64;
    eprintln!(
        "quantised label log-likelihoods vs llama.cpp (Q4_K_M): max |Δ| {worst:.4}, mean {mean:.4}, \
         max |Δ margin| {margin_worst:.4}"
    );
    // Not the 0.05 nats one might hope for: with 8-bit activations the output is not a
    // continuous function of the arithmetic (see the test below: one ulp moves it as much),
    // so two implementations of the same quantisation agree only to that spread.
    assert!(disagree.is_empty(), "the winner differs on {disagree:?}");
    assert!(worst < 1.0, "max |Δ| = {worst}");
    assert!(mean < 0.25, "mean |Δ| = {mean}");
}

/// Why the quantised path cannot match llama.cpp to a few hundredths of a nat: rounding
/// activations to 8 bits makes the scores a discontinuous function of the arithmetic. Scaling
/// a seventh of the input embeddings by 1 + 2⁻²³ (one ulp) moves the label log-likelihoods by
/// tenths of a nat on the quantised path, and by nothing measurable on the f32 path.
#[test]
fn one_ulp_of_input_moves_quantised_scores_by_tenths_of_a_nat() {
    use lmcompare_engine::decoder::{Scored, TreeLayout};
    let refs = f32_kv_reference();
    let spread = |dec: &Decoder| -> (f64, f64) {
        let mut diffs = Vec::new();
        for c in refs["loglik"]["cases"].as_array().unwrap().iter().take(12) {
            let mut tokens = ids(&c["prompt_ids"]);
            let cont = ids(&c["continuations"][" positive"]["ids"]);
            let context = tokens.len();
            tokens.extend(&cont[..cont.len() - 1]);
            let n = tokens.len();
            let scored: Vec<Scored> = cont
                .iter()
                .enumerate()
                .map(|(i, &t)| Scored {
                    row: context - 1 + i,
                    token: t,
                    group: 0,
                })
                .collect();
            let x = dec.word_embeddings(&tokens).unwrap();
            let nudged: Vec<f32> = x
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    if i % 7 == 0 {
                        v * (1.0 + f32::EPSILON)
                    } else {
                        v
                    }
                })
                .collect();
            let layout = TreeLayout::causal(n);
            let a = dec.loglik_forward(&x, 1, &layout, &scored).unwrap().0[0][0];
            let b = dec.loglik_forward(&nudged, 1, &layout, &scored).unwrap().0[0][0];
            diffs.push((a - b).abs());
        }
        let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
        (mean, diffs.iter().cloned().fold(0.0, f64::max))
    };
    let (q_mean, q_max) = spread(gemma_quantised());
    let (f_mean, f_max) = spread(gemma());
    eprintln!(
        "one ulp of input moves label log-likelihoods: quantised mean {q_mean:.4} max {q_max:.4}, \
         f32 mean {f_mean:.2e} max {f_max:.2e}"
    );
    assert!(q_mean > 0.01, "{q_mean}");
    assert!(f_max < 1e-3, "{f_max}");
}

/// llama.cpp's greedy generations on the Q4_K_M file, teacher-forced through ours: at every
/// step llama.cpp's token is our choice or a near-tie for it (the two quantised runs differ
/// by the spread shown above, so exact equality of every token would be luck).
#[test]
fn quantised_greedy_generation_follows_llama_cpp_up_to_near_ties() {
    let refs = reference();
    let dec = gemma_quantised();
    let mut worst = 0.0f32;
    let mut same = 0;
    let mut steps = 0;
    for g in refs["greedy"].as_array().unwrap() {
        let prompt = ids(&g["prompt_ids"]);
        let generated = ids(&g["generated_ids"]);
        let mut all = prompt.clone();
        all.extend(&generated);
        let rows = dec.log_softmax_all(&all[..all.len() - 1]).unwrap();
        for (i, &t) in generated.iter().enumerate() {
            let row = &rows[prompt.len() - 1 + i];
            let best = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            worst = worst.max(best - row[t as usize]);
            same += usize::from(row[t as usize] == best);
            steps += 1;
        }
    }
    eprintln!("llama.cpp's greedy tokens: our argmax at {same} of {steps} steps, worst gap {worst:.3} nats");
    assert!(
        worst < 0.25,
        "llama.cpp's token is {worst} nats below our choice"
    );
    assert!(same * 10 >= steps * 8, "{same} of {steps}");
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
