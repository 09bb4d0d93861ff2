//! Token ids, hidden states, logits and embeddings against HF transformers on the committed
//! fixtures (`scripts/gen_model_fixtures.py`): one padded batch of mixed-length texts with
//! Korean, accented and emoji text, every value within 1e-4.

use std::path::{Path, PathBuf};

use lmcompare_engine::model::Hidden;
use lmcompare_engine::spec::resolve;
use lmcompare_engine::{LoadOptions, TextEncoder};
use serde_json::Value;

const TOL: f64 = 1e-4;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn references() -> Value {
    let p = root().join("tests/fixtures/models/reference_outputs.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn texts(refs: &Value) -> Vec<String> {
    refs["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|x| match x {
            Value::Array(_) => floats(x),
            _ => vec![x.as_f64().unwrap()],
        })
        .collect()
}

fn assert_close(what: &str, ours: &[f32], want: &[f64]) {
    assert_eq!(ours.len(), want.len(), "{what}: length");
    let worst = ours
        .iter()
        .zip(want)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= TOL,
        "{what}: max abs difference {worst:e} > {TOL:e}"
    );
}

fn check_model(dir: &Path, key: &str, max_length: usize, normalized_embeddings: bool) {
    let refs = references();
    let r = &refs["models"][key];
    let model = TextEncoder::load(
        resolve(dir.to_str().unwrap()).unwrap(),
        &LoadOptions {
            max_length: Some(max_length),
            ..Default::default()
        },
    )
    .unwrap();
    let texts = texts(&refs);
    let refs_t: Vec<&str> = texts.iter().map(String::as_str).collect();
    let encoded = model.tokenizer.encode_batch(&refs_t).unwrap();
    for (i, e) in encoded.iter().enumerate() {
        let want: Vec<u32> = r["input_ids"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(e.ids, want, "{key}: token ids of text {i}");
    }
    // Hidden states of the whole batch at once (mixed lengths, as transformers ran it padded).
    let mut states: Vec<Vec<f32>> = vec![Vec::new(); encoded.len()];
    model
        .run_batches(&encoded, 64, |idx, h: &Hidden, _| {
            for (j, &i) in idx.iter().enumerate() {
                states[i] = h.sequence(j).to_vec();
            }
            Ok(())
        })
        .unwrap();
    for (i, want) in r["last_hidden_state"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        assert_close(
            &format!("{key}: last_hidden_state of text {i}"),
            &states[i],
            &floats(want),
        );
    }
    if normalized_embeddings {
        let emb = model.embed(&encoded, 3).unwrap();
        for (i, want) in r["mean_pooled_normalized"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            assert_close(
                &format!("{key}: embedding of text {i}"),
                &emb[i],
                &floats(want),
            );
        }
    }
    if let Some(logits) = r["logits"].as_array() {
        let probs = model.classify(&encoded, 5).unwrap();
        for (i, want) in logits.iter().enumerate() {
            let w = floats(want);
            let max = w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = w.iter().map(|x| (x - max).exp()).sum();
            let want_p: Vec<f64> = w.iter().map(|x| (x - max).exp() / sum).collect();
            assert_close(
                &format!("{key}: probabilities of text {i}"),
                &probs[i],
                &want_p,
            );
        }
    }
}

#[test]
fn tiny_bert_classifier_matches_transformers() {
    check_model(
        &root().join("tests/fixtures/models/tiny-bert-cls"),
        "tiny-bert-cls",
        64,
        false,
    );
}

#[test]
fn pytorch_bin_checkpoint_loads_without_executing_pickle_code() {
    // The same weights as tiny-bert-cls, stored by torch.save as pytorch_model.bin.
    check_model(
        &root().join("tests/fixtures/models/tiny-bert-cls-bin"),
        "tiny-bert-cls",
        64,
        false,
    );
    let bad = root().join("tests/fixtures/models/malicious-bin");
    let err = TextEncoder::load(
        resolve(bad.to_str().unwrap()).unwrap(),
        &LoadOptions::default(),
    )
    .err()
    .expect("a checkpoint that calls os.system must be refused")
    .to_string();
    assert!(
        err.contains("refusing to call `posix.system`")
            || err.contains("refusing to call `os.system`"),
        "{err}"
    );
    assert!(!Path::new("/tmp/lmcompare-pwned").exists());
}

#[test]
fn tiny_bert_base_matches_transformers() {
    check_model(
        &root().join("tests/fixtures/models/tiny-bert-base"),
        "tiny-bert-base",
        64,
        false,
    );
}

#[test]
fn tiny_roberta_classifier_matches_transformers() {
    check_model(
        &root().join("tests/fixtures/models/tiny-roberta-cls"),
        "tiny-roberta-cls",
        64,
        false,
    );
}

#[test]
fn tiny_distilbert_classifier_matches_transformers() {
    check_model(
        &root().join("tests/fixtures/models/tiny-distilbert-cls"),
        "tiny-distilbert-cls",
        64,
        false,
    );
}

#[test]
fn real_minilm_matches_sentence_transformers() {
    let dir = root().join("assets/models/all-MiniLM-L6-v2");
    assert!(
        dir.exists(),
        "{} missing: run scripts/fetch-assets.sh",
        dir.display()
    );
    check_model(&dir, "all-MiniLM-L6-v2", 128, true);
}
