//! Decoders against HF transformers on the committed tiny random-weight checkpoints
//! (`scripts/gen_decoder_fixtures.py`): Llama (GQA, untied head), Qwen2 (q/k/v bias), Qwen3
//! (q/k norms, head_dim ≠ hidden/heads), Gemma (GeGLU, 1+w norms), Gemma 2 (soft-capping,
//! alternating sliding windows narrower than the text), Gemma 3 (local/global rotary bases,
//! q/k norms) and GPT-2 (Conv1D, learned positions). Every log-probability at every position
//! within 1e-4, tokenization identical, greedy generation identical, and continuation scores
//! from the tree-masked pass equal to the one-pass reference.

use std::path::{Path, PathBuf};

use lmcompare_engine::decoder::{Decoder, ScoreRequest};
use serde_json::Value;

const TOL: f64 = 1e-4;
const MODELS: [&str; 7] = [
    "tiny-llama",
    "tiny-qwen2",
    "tiny-qwen3",
    "tiny-gemma",
    "tiny-gemma2",
    "tiny-gemma3",
    "tiny-gpt2",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn references() -> Value {
    let p = root().join("tests/fixtures/models/decoder_reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn load(name: &str) -> Decoder {
    Decoder::load(&root().join("tests/fixtures/models").join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_position_matches_transformers() {
    let refs = references();
    for name in MODELS {
        let model = &refs["models"][name];
        let dec = load(name);
        for case in model["cases"].as_array().unwrap() {
            let input = ids(&case["input_ids"]);
            // The tokenizer reproduces the reference ids (its own BOS where it adds one).
            let mut encoded = dec.prefix().to_vec();
            encoded.extend(dec.encode(case["text"].as_str().unwrap()).unwrap());
            assert_eq!(encoded, input, "{name}: token ids of {:?}", case["text"]);
            let got = dec.log_softmax_all(&input).unwrap();
            let want = case["log_softmax"].as_array().unwrap();
            assert_eq!(got.len(), want.len(), "{name}: positions");
            let mut worst = 0.0f64;
            for (g, w) in got.iter().zip(want) {
                for (a, b) in g.iter().zip(w.as_array().unwrap()) {
                    worst = worst.max((*a as f64 - b.as_f64().unwrap()).abs());
                }
            }
            assert!(
                worst < TOL,
                "{name}: max |Δ log p| = {worst:e} on {:?}",
                case["text"]
            );
        }
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    let refs = references();
    for name in MODELS {
        let g = &refs["models"][name]["greedy"];
        let dec = load(name);
        let prompt = ids(&g["prompt_ids"]);
        let want = ids(&g["generated_ids"]);
        let got = dec
            .generate(std::slice::from_ref(&prompt), want.len(), &|_, _| false)
            .unwrap()
            .0;
        assert_eq!(got[0], want, "{name}: greedy tokens");
        // Two prompts generated together (packed, each with its own cache) give the same.
        let short = prompt[..prompt.len() - 2].to_vec();
        let alone = dec
            .generate(std::slice::from_ref(&short), 4, &|_, _| false)
            .unwrap()
            .0;
        let both = dec
            .generate(&[short.clone(), prompt.clone()], want.len(), &|i, t| {
                i == 0 && t.len() == 4
            })
            .unwrap()
            .0;
        assert_eq!(both[0], alone[0], "{name}: batched generation");
        assert_eq!(both[1], want, "{name}: batched generation");
    }
}

#[test]
fn tree_masked_continuations_match_one_pass_scores() {
    let refs = references();
    for name in MODELS {
        let c = &refs["models"][name]["continuations"];
        let dec = load(name);
        let conts: Vec<Vec<u32>> = c["continuations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| ids(&x["ids"]))
            .collect();
        let request = ScoreRequest {
            context: ids(&c["prompt_ids"]),
            continuations: conts.clone(),
        };
        // Pack the request beside a second, shorter one: packing must not leak across.
        let other = ScoreRequest {
            context: ids(&c["prompt_ids"])[..5].to_vec(),
            continuations: vec![conts[2].clone()],
        };
        let (scores, stats) = dec.score(&[other, request]).unwrap();
        // Rows projected: each prompt's last row, plus every continuation token after the first.
        assert!(stats.flops > 0.0 && stats.lm_rows == (1 + 3) + (1 + 1 + 3));
        for (got, want) in scores[1].iter().zip(c["continuations"].as_array().unwrap()) {
            let lp: Vec<f64> = want["token_logprobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            assert_eq!(got.logprobs.len(), lp.len(), "{name}");
            for (a, b) in got.logprobs.iter().zip(&lp) {
                assert!((a - b).abs() < TOL, "{name}: {a} vs {b}");
            }
        }
        // The short request alone scores what it scored packed.
        let alone = dec
            .score(&[ScoreRequest {
                context: ids(&c["prompt_ids"])[..5].to_vec(),
                continuations: vec![conts[2].clone()],
            }])
            .unwrap()
            .0;
        for (a, b) in alone[0][0].logprobs.iter().zip(&scores[0][0].logprobs) {
            assert!((a - b).abs() < 1e-5, "{name}: packing changed a score");
        }
    }
}

#[test]
fn out_of_vocabulary_ids_and_oversized_requests_are_refused() {
    let dec = load("tiny-gpt2");
    let err = dec.log_softmax_all(&[1, 2, 5000]).unwrap_err().to_string();
    assert!(
        err.contains("token id 5000") && err.contains("vocabulary of 320"),
        "{err}"
    );
    // GPT-2 has 64 learned positions: a longer context is cut from the left and counted.
    let (_, stats) = dec
        .score(&[ScoreRequest {
            context: vec![5; 100],
            continuations: vec![vec![7, 8]],
        }])
        .unwrap();
    assert_eq!(stats.truncated, 1);
    let err = dec
        .score(&[ScoreRequest {
            context: vec![5],
            continuations: vec![vec![7; 70]],
        }])
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not fit"), "{err}");
}

/// lm-evaluation-harness feeds `(context + continuation)[-(max_length + 1):][:-1]`: the last
/// continuation token is never an input, so `context + continuation - 1` tokens must fit,
/// and a request beyond the limit is cut per continuation.
#[test]
fn truncation_is_per_continuation_as_lm_evaluation_harness_does_it() {
    let dec = load("tiny-gpt2");
    let max = dec.config.max_positions;
    assert_eq!(max, 64);
    let ctx: Vec<u32> = (0..100).map(|i| 5 + (i * 7) % 200).collect();
    let exact = ScoreRequest {
        context: ctx[..max - 1].to_vec(),
        continuations: vec![vec![7, 8]],
    };
    let (_, stats) = dec.score(&[exact]).unwrap();
    assert_eq!(
        stats.truncated, 0,
        "context + continuation - 1 = positions fits"
    );
    let (short, long) = (vec![7u32, 8], vec![9u32; 10]);
    let (scores, stats) = dec
        .score(&[ScoreRequest {
            context: ctx.clone(),
            continuations: vec![short.clone(), long.clone()],
        }])
        .unwrap();
    assert_eq!(stats.truncated, 1);
    for (k, c) in [short, long].into_iter().enumerate() {
        let keep = max + 1 - c.len();
        let (alone, st) = dec
            .score(&[ScoreRequest {
                context: ctx[ctx.len() - keep..].to_vec(),
                continuations: vec![c],
            }])
            .unwrap();
        assert_eq!(st.truncated, 0);
        for (a, b) in scores[0][k].logprobs.iter().zip(&alone[0][0].logprobs) {
            assert!((a - b).abs() < 1e-5, "continuation {k}: {a} vs {b}");
        }
    }
}

/// A bf16 (and an f16) copy of the tiny Llama: its matrices stay in 16 bits in memory (half
/// the bytes), widened block by block inside the products, and score exactly what the same
/// values widened to f32 at load (`dequantize`) score.
#[test]
fn sixteen_bit_checkpoints_stay_16_bit_and_score_as_their_f32_widening() {
    use lmcompare_engine::decoder::{LoadOptions, ScoreRequest};
    use safetensors::tensor::{Dtype, TensorView};
    let src = root().join("tests/fixtures/models/tiny-llama");
    let weights =
        lmcompare_engine::weights::WeightFile::open(&src.join("model.safetensors")).unwrap();
    for (dtype, name) in [(Dtype::BF16, "bf16"), (Dtype::F16, "f16")] {
        let dir = tempfile::tempdir().unwrap();
        for f in ["config.json", "tokenizer.json"] {
            std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
        }
        let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (n, shape) in weights.names() {
            let v = weights.get(&n, &shape).unwrap();
            let bytes: Vec<u8> = v
                .iter()
                .flat_map(|&x| match dtype {
                    Dtype::BF16 => half::bf16::from_f32(x).to_le_bytes(),
                    _ => half::f16::from_f32(x).to_le_bytes(),
                })
                .collect();
            data.push((n, shape, bytes));
        }
        let views: Vec<(String, TensorView<'_>)> = data
            .iter()
            .map(|(n, s, b)| (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).unwrap();
        let kept = Decoder::load(dir.path()).unwrap();
        let wide = Decoder::load_with(dir.path(), LoadOptions { dequantize: true }).unwrap();
        assert!(
            kept.size.compute.starts_with("16-bit as stored"),
            "{name}: {}",
            kept.size.compute
        );
        assert_eq!(wide.size.compute, "f32");
        // The matrices are most of the weights: about half the bytes.
        let ratio = kept.size.weight_bytes as f64 / wide.size.weight_bytes as f64;
        assert!(ratio > 0.5 && ratio < 0.6, "{name}: {ratio}");
        let request = [ScoreRequest {
            context: vec![1, 5, 9, 13],
            continuations: vec![vec![20, 30, 40], vec![7]],
        }];
        let (a, _) = kept.score(&request).unwrap();
        let (b, _) = wide.score(&request).unwrap();
        for (x, y) in a[0].iter().zip(&b[0]) {
            for (p, q) in x.logprobs.iter().zip(&y.logprobs) {
                assert!((p - q).abs() < 1e-5, "{name}: {p} vs {q}");
            }
        }
    }
}
