//! Integrated gradients for local decoders against Captum 0.9 on the tiny Llama, Qwen2 and
//! Gemma 3 (tests/fixtures/models/explain_decoder_reference.json, written by
//! scripts/gen_explain_decoder_fixtures.py): the prompt `compare` sends a generative
//! classifier, the labels' log-likelihoods softmaxed, Gauss-Legendre and Riemann rules,
//! probability and log-probability targets, convergence deltas.

mod common;

use common::{numbers, root};

use lmcompare_engine::attribution::TargetScale;
use lmcompare_engine::decoder::Decoder;
use lmcompare_pipeline::explain::decoder::{attribute_prompt, decoder_prompt};
use lmcompare_pipeline::explain::{ExplainSettings, IgRule, Method};
use serde_json::Value;

fn ids(v: &Value) -> Vec<u32> {
    numbers(v).into_iter().map(|x| x as u32).collect()
}

#[test]
fn integrated_gradients_equal_captum_on_three_decoder_families() {
    let text = std::fs::read_to_string(
        root().join("tests/fixtures/models/explain_decoder_reference.json"),
    )
    .unwrap();
    let r: Value = serde_json::from_str(&text).unwrap();
    let template = r["template"].as_str().unwrap();
    let labels: Vec<String> = r["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let verbalizers: Vec<String> = r["verbalizers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    for (name, cases) in r["models"].as_object().unwrap() {
        let dec = Decoder::load(&root().join("tests/fixtures/models").join(name)).unwrap();
        for case in cases.as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let context = template.replace("{text}", text);
            let p = decoder_prompt(&dec, &context, text, &verbalizers).unwrap();
            assert_eq!(p.context, ids(&case["context_ids"]), "{name}: context ids");
            let conts: Vec<Vec<u32>> = case["continuations"]
                .as_array()
                .unwrap()
                .iter()
                .map(ids)
                .collect();
            assert_eq!(p.continuations, conts, "{name}: continuations");
            let is_text: Vec<bool> = case["text_tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_bool().unwrap())
                .collect();
            let ours: Vec<bool> = p.token_words.iter().map(Option::is_some).collect();
            assert_eq!(ours, is_text, "{name}: which tokens are the text's");
            let target = case["target"].as_u64().unwrap() as usize;
            for (key, n, rule, scale) in [
                (
                    "ig_gausslegendre_50",
                    50,
                    IgRule::Gausslegendre,
                    TargetScale::Probability,
                ),
                (
                    "ig_gausslegendre_50_log",
                    50,
                    IgRule::Gausslegendre,
                    TargetScale::LogProbability,
                ),
                (
                    "ig_gausslegendre_50_log_other",
                    50,
                    IgRule::Gausslegendre,
                    TargetScale::LogProbability,
                ),
                (
                    "ig_riemann_trapezoid_20",
                    20,
                    IgRule::RiemannTrapezoid,
                    TargetScale::Probability,
                ),
                (
                    "ig_gausslegendre_5",
                    5,
                    IgRule::Gausslegendre,
                    TargetScale::Probability,
                ),
            ] {
                let s = ExplainSettings {
                    method: Method::IntegratedGradients,
                    n_steps: n,
                    rule,
                    scale,
                    internal_batch_size: 7,
                    ..ExplainSettings::default()
                };
                let t = case[key]["target"].as_u64().unwrap() as usize;
                let a = attribute_prompt(&dec, &p, text, &labels, Some(t), &s).unwrap();
                assert_eq!(a.predicted, labels[target], "{name} {key}: predicted label");
                let probs = numbers(&case["probabilities"]);
                for (x, y) in a.probabilities.iter().zip(&probs) {
                    assert!((x - y).abs() < 1e-5, "{name}: probabilities {x} vs {y}");
                }
                let theirs = numbers(&case[key]["tokens"]);
                let scale_of = theirs.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                for (i, (x, y)) in a.raw.iter().zip(&theirs).enumerate() {
                    let err = (x - y).abs();
                    assert!(
                        err <= 1e-4 && err <= 1e-2 * scale_of.max(1e-6),
                        "{name} {key} token {i}: {x} vs Captum {y} (largest {scale_of})"
                    );
                }
                let fb = case[key]["f_baseline"].as_f64().unwrap();
                assert!(
                    (a.f_baseline.unwrap() - fb).abs() < 1e-5,
                    "{name} {key}: F(x')"
                );
                let delta = case[key]["delta"].as_f64().unwrap().abs();
                let gap = a.completeness_gap.unwrap();
                assert!(
                    (gap - delta).abs() < 1e-4,
                    "{name} {key}: gap {gap} vs Captum's delta {delta}"
                );
                // Word scores are the sums of their tokens'.
                let mut sums = vec![0.0; a.words.len()];
                for t in &a.tokens {
                    if let Some(w) = t.word {
                        sums[w] += t.score;
                    }
                }
                for (w, s) in a.words.iter().zip(&sums) {
                    assert!((w.score - s).abs() < 1e-12);
                }
            }
        }
    }
}
