//! GGUF files of the Llama and Qwen2 families, written here from the tiny transformers
//! checkpoints the way llama.cpp's `convert_hf_to_gguf.py` writes them (GGUF tensor names,
//! Llama's Q/K rows permuted for llama.cpp's adjacent-pair rotary layout, an untied
//! `output.weight` only when the model has one), must give the same log-probabilities as the
//! safetensors folders they came from. This pins the GGUF names, the metadata keys and the
//! rotary layout of the families whose GGUFs lmcompare has no llama.cpp reference for, and
//! the byte-level BPE tokenizer rebuilt from the GGUF's tokens and merges.

mod common;

use common::gguf_writer::{convert, root};
use lmcompare_engine::decoder::Decoder;
use serde_json::Value;

fn decoder_reference() -> Value {
    let path = root().join("tests/fixtures/models/decoder_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn input_ids(case: &Value) -> Vec<u32> {
    case["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn llama_and_qwen2_ggufs_match_their_safetensors() {
    let refs = decoder_reference();
    for model in ["tiny-llama", "tiny-qwen2"] {
        let dir = tempfile::tempdir().unwrap();
        let gguf = convert(model, dir.path(), "gpt2");
        let from_gguf = Decoder::load(&gguf).unwrap_or_else(|e| panic!("{model}: {e}"));
        assert_eq!(from_gguf.format, "gguf");
        assert!(from_gguf.tokenizer_source.contains("beside"));
        // Without the tokenizer.json, the embedded byte-level vocabulary gives the same ids.
        std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
        let embedded = Decoder::load(&gguf).unwrap();
        assert!(embedded.tokenizer_source.contains("byte-level BPE"));
        assert_eq!(embedded.prefix(), &[0]);
        let from_st = Decoder::load(&root().join("tests/fixtures/models").join(model)).unwrap();
        for case in refs["models"][model]["cases"].as_array().unwrap() {
            let ids = input_ids(case);
            assert_eq!(
                from_gguf.encode(case["text"].as_str().unwrap()).unwrap(),
                ids[1..]
            );
            let a = from_gguf.log_softmax_all(&ids).unwrap();
            let b = from_st.log_softmax_all(&ids).unwrap();
            let worst = a
                .iter()
                .flatten()
                .zip(b.iter().flatten())
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst < 1e-5,
                "{model}: GGUF vs safetensors differ by {worst}"
            );
        }
    }
}

#[test]
fn a_gguf_whose_tokenizer_cannot_be_rebuilt_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = convert("tiny-qwen2", dir.path(), "falcon");
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let err = Decoder::load(&gguf).err().expect("refused").to_string();
    assert!(
        err.contains("pre-tokenizer \"falcon\" is not supported")
            && err.contains("tokenizer.json next to"),
        "{err}"
    );
}

/// The quantised path against the f32 path on the same file: tiny Llama and Qwen2 GGUFs with
/// every matrix in Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 (their rows are 32 and 64 wide, too narrow
/// for the K-quants, as llama.cpp's quantiser would also find). Both paths read the same
/// dequantised weights, so what differs is only the activations' 8-bit rounding: each
/// activation is off by at most half a step of its block (amax/254, ~0.4% of the block's
/// largest value; that per-product bound is tested in the kernels' own tests). Through these
/// random 2-layer models, whose 32-wide rows are one block each, it moved per-token
/// log-probabilities by 0.046–0.078 nats (2026-12-04); the bound here is 0.15, twice that,
/// as a guard against a kernel that quantises wrongly (a wrong scale or zero point moves
/// them by whole nats), and the difference must not be zero (the activations really are
/// quantised).
#[test]
fn quantised_path_stays_within_activation_rounding_of_the_f32_path() {
    use candle_core::quantized::GgmlDType;
    use lmcompare_engine::decoder::{LoadOptions, ScoreRequest};
    let refs = decoder_reference();
    let mut report = Vec::new();
    for model in ["tiny-llama", "tiny-qwen2"] {
        for ty in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
            GgmlDType::Q8_0,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let gguf = common::gguf_writer::convert_as(model, dir.path(), "gpt2", ty);
            let quant = Decoder::load(&gguf).unwrap();
            assert!(
                quant.size.compute.starts_with("quantised blocks"),
                "{}",
                quant.size.compute
            );
            let exact = Decoder::load_with(&gguf, LoadOptions { dequantize: true }).unwrap();
            let mut worst = 0.0f64;
            for case in refs["models"][model]["cases"].as_array().unwrap() {
                let ids = input_ids(case);
                let request = [ScoreRequest {
                    context: ids[..1].to_vec(),
                    continuations: vec![ids[1..].to_vec()],
                }];
                let (a, _) = quant.score(&request).unwrap();
                let (b, _) = exact.score(&request).unwrap();
                for (x, y) in a[0][0].logprobs.iter().zip(&b[0][0].logprobs) {
                    worst = worst.max((x - y).abs());
                }
            }
            report.push(format!("{model} {ty:?}: {worst:.4}"));
            assert!(worst < 0.15, "{model} {ty:?}: per-token |Δ| {worst}");
            assert!(
                worst > 0.0,
                "{model} {ty:?}: the activations were not quantised"
            );
        }
    }
    eprintln!(
        "quantised vs f32 path, max per-token |Δ log p|: {}",
        report.join(", ")
    );
}
