//! Training the top layer of a BERT classifier with its head on candle, against PyTorch:
//! `scripts/gen_unfreeze_fixture.py` (transformers 5.24, torch 2.15) trains the last layer,
//! the pooler and a fresh classifier of the tiny BERT fixture with AdamW for 6 steps and
//! records the losses, the final weights and logits.

use std::path::PathBuf;

use lmcompare_engine::finetune::UnfrozenTrainer;
use lmcompare_engine::spec::resolve;
use lmcompare_engine::{LoadOptions, TextEncoder};
use lmcompare_tune::{
    ClassWeight, EpochTrainer, HeadActivation, HeadShape, HeadWeights, OptimizerKind, Schedule,
    TrainConfig,
};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn flat(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        x => vec![x.as_f64().unwrap() as f32],
    }
}

#[test]
fn top_layer_fine_tuning_matches_transformers() {
    let fx: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/models/unfreeze_reference.json"))
            .unwrap(),
    )
    .unwrap();
    let dir = root().join("tests/fixtures/models/tiny-bert-cls");
    let model = TextEncoder::load(
        resolve(dir.to_str().unwrap()).unwrap(),
        &LoadOptions {
            max_length: Some(32),
            ..Default::default()
        },
    )
    .unwrap();
    let texts: Vec<&str> = fx["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let encoded = model.tokenizer.encode_batch(&texts).unwrap();
    for (e, want) in encoded.iter().zip(fx["input_ids"].as_array().unwrap()) {
        let want: Vec<u32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(e.ids, want);
    }
    let total = fx["layers_total"].as_u64().unwrap() as usize;
    let unfrozen = fx["unfrozen"].as_u64().unwrap() as usize;
    let mut states = vec![Vec::new(); texts.len()];
    model
        .run_batches_to(&encoded, 4, Some(total - unfrozen), |idx, hidden, _| {
            for (j, &i) in idx.iter().enumerate() {
                states[i] = hidden.sequence(j).to_vec();
            }
            Ok(())
        })
        .unwrap();
    let labels: Vec<u32> = fx["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let d = states[0].len() / encoded[0].ids.len();
    let shape = HeadShape {
        input: d,
        hidden: d,
        classes: 3,
        activation: HeadActivation::Tanh,
        input_dropout: false,
    };
    let head = HeadWeights {
        dense_w: flat(&fx["initial_pooler"]["weight"]),
        dense_b: flat(&fx["initial_pooler"]["bias"]),
        out_w: flat(&fx["initial_classifier"]["weight"]),
        out_b: flat(&fx["initial_classifier"]["bias"]),
    };
    let cfg = TrainConfig {
        lr: 0.01,
        batch_size: 4,
        epochs: 2,
        optimizer: OptimizerKind::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            amsgrad: false,
        },
        weight_decay: 0.0,
        schedule: Schedule::Constant,
        dropout: 0.0,
        grad_clip: None,
        class_weight: ClassWeight::None,
        decay_biases: true,
    };
    let n = texts.len();
    let mut t = UnfrozenTrainer::new(
        &dir,
        unfrozen,
        &states,
        &labels,
        (0..n).collect(),
        shape,
        head,
        cfg,
        0,
    )
    .unwrap();
    t.set_layer_dropout(0.0, 0.0);
    t.steps = Some(Vec::new());
    let order: Vec<usize> = (0..n).collect();
    for _ in 0..2 {
        assert!(!t.train_epoch_in_order(&order).unwrap().diverged);
    }
    let steps = t.steps.clone().unwrap();
    let losses = fx["losses"].as_array().unwrap();
    assert_eq!(steps.len(), losses.len());
    for (i, (s, want)) in steps.iter().zip(losses).enumerate() {
        let want = want.as_f64().unwrap();
        assert!(
            (s.loss - want).abs() < 1e-4,
            "step {i}: loss {} vs transformers {want}",
            s.loss
        );
    }
    let mut checked = 0;
    for (name, got) in t.encoder_tensors_named() {
        let want = flat(&fx["final"][&name]);
        assert_eq!(got.len(), want.len(), "{name}");
        // The key bias has no true gradient (softmax ignores a shift shared by all keys):
        // both sides update it from rounding noise, so it is compared loosely.
        let tol = if name.ends_with("attention.self.key.bias") {
            1e-3
        } else {
            1e-4
        };
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() < tol, "{name}[{k}]: {g} vs {w}");
        }
        checked += 1;
    }
    assert_eq!(checked, 16, "the last layer's 16 tensors");
    let h = t.head();
    for (label, got, key) in [
        ("pooler weight", &h.dense_w, "bert.pooler.dense.weight"),
        ("pooler bias", &h.dense_b, "bert.pooler.dense.bias"),
        ("classifier weight", &h.out_w, "classifier.weight"),
        ("classifier bias", &h.out_b, "classifier.bias"),
    ] {
        for (k, (g, w)) in got.iter().zip(flat(&fx["final"][key])).enumerate() {
            assert!((g - w).abs() < 1e-4, "{label}[{k}]: {g} vs {w}");
        }
    }
    let proba = t.predict_proba(&order);
    for (i, (p, logits)) in proba
        .iter()
        .zip(fx["final_logits"].as_array().unwrap())
        .enumerate()
    {
        let l: Vec<f64> = flat(logits).iter().map(|&x| x as f64).collect();
        let m = l.iter().cloned().fold(f64::MIN, f64::max);
        let s: f64 = l.iter().map(|x| (x - m).exp()).sum();
        for (j, x) in l.iter().enumerate() {
            let want = (x - m).exp() / s;
            assert!(
                (p[j] - want).abs() < 1e-4,
                "text {i} class {j}: {} vs {want}",
                p[j]
            );
        }
    }
}
