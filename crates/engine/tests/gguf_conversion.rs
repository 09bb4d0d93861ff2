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

#[test]
fn llama_and_qwen2_ggufs_match_their_safetensors() {
    let refs: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/models/decoder_reference.json"))
            .unwrap(),
    )
    .unwrap();
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
            let ids: Vec<u32> = case["input_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
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
