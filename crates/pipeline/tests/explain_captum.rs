//! `explain` against Captum 0.9 on the tiny BERT, RoBERTa and DistilBERT classifiers
//! (tests/fixtures/models/explain_reference.json, written by scripts/gen_explain_fixtures.py):
//! integrated gradients (Gauss-Legendre and Riemann trapezoid, probability and
//! log-probability targets) with their convergence deltas, saliency, input × gradient,
//! occlusion and Shapley value sampling with the same permutations; and the properties
//! every attribution method owes its users.

mod common;

use common::{numbers, root};

use lmcompare_engine::attribution::TargetScale;
use lmcompare_pipeline::explain::{
    attribute, integrated_gradients, load_classifier, ExplainSettings, IgRule, Method,
};
use serde_json::Value;

fn reference() -> Value {
    let text = std::fs::read_to_string(root().join("tests/fixtures/models/explain_reference.json"))
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Within 1e-4 absolute and 1e-3 of the largest magnitude (the scores are small).
fn assert_close(ours: &[f64], theirs: &[f64], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}");
    let scale = theirs.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let err = (a - b).abs();
        assert!(
            err <= 1e-4 && err <= 1e-3 * scale.max(1e-6),
            "{what} [{i}]: {a} vs Captum {b} (scale {scale})"
        );
    }
}

fn settings(method: Method) -> ExplainSettings {
    ExplainSettings {
        method,
        ..ExplainSettings::default()
    }
}

#[test]
fn every_method_equals_captum_on_three_encoder_families() {
    let r = reference();
    for (name, cases) in r["models"].as_object().unwrap() {
        let dir = root().join("tests/fixtures/models").join(name);
        let (model, tok, labels) = load_classifier(&dir, None).unwrap();
        for case in cases.as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let target = case["target"].as_u64().unwrap() as usize;
            let what = |m: &str| format!("{name} {text:?} {m}");
            let run = |s: &ExplainSettings, perms: Option<&[Vec<usize>]>| {
                attribute(&model, &tok, &labels, text, Some(target), s, perms).unwrap()
            };
            let ig = run(&settings(Method::IntegratedGradients), None);
            let ids: Vec<u64> = case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            assert_eq!(ig.tokens.len(), ids.len(), "{}", what("tokens"));
            assert_close(
                &ig.probabilities,
                &numbers(&case["probabilities"]),
                &what("probabilities"),
            );
            assert!((ig.f_baseline.unwrap() - case["f_baseline"].as_f64().unwrap()).abs() < 1e-6);
            for (key, rule, n, scale) in [
                (
                    "ig_gausslegendre_50",
                    IgRule::Gausslegendre,
                    50,
                    TargetScale::Probability,
                ),
                (
                    "ig_gausslegendre_50_log",
                    IgRule::Gausslegendre,
                    50,
                    TargetScale::LogProbability,
                ),
                (
                    "ig_riemann_trapezoid_20",
                    IgRule::RiemannTrapezoid,
                    20,
                    TargetScale::Probability,
                ),
                (
                    "ig_gausslegendre_5",
                    IgRule::Gausslegendre,
                    5,
                    TargetScale::Probability,
                ),
            ] {
                let s = ExplainSettings {
                    rule,
                    n_steps: n,
                    scale,
                    // Not Captum's 16: the batching must not change a number.
                    internal_batch_size: 7,
                    ..settings(Method::IntegratedGradients)
                };
                let a = run(&s, None);
                let scores: Vec<f64> = a.tokens.iter().map(|t| t.score).collect();
                assert_close(&scores, &numbers(&case[key]["tokens"]), &what(key));
                // The gap of the path integrated equals Captum's on the same path; Captum's
                // own delta evaluates the baseline ids, which for RoBERTa number the pad
                // tokens' positions apart from the input's (a different baseline).
                let gap = a.completeness_gap.unwrap();
                let path_gap = case[key]["path_gap"].as_f64().unwrap().abs();
                assert!(
                    (gap - path_gap).abs() < 1e-4,
                    "{}: gap {gap} vs {path_gap}",
                    what(key)
                );
                let delta = case[key]["delta"].as_f64().unwrap().abs();
                if name != "tiny-roberta-cls" {
                    assert!(
                        (gap - delta).abs() < 1e-4,
                        "{}: gap {gap} vs Captum's delta {delta}",
                        what(key)
                    );
                }
            }
            for (key, m) in [
                ("saliency", Method::Saliency),
                ("input_x_gradient", Method::InputXGradient),
            ] {
                let a = run(&settings(m), None);
                let scores: Vec<f64> = a.tokens.iter().map(|t| t.score).collect();
                assert_close(&scores, &numbers(&case[key]), &what(key));
            }
            let occ = run(&settings(Method::Occlusion), None);
            let words: Vec<f64> = occ.words.iter().map(|w| w.score).collect();
            assert_close(
                &words,
                &numbers(&case["occlusion_words"]),
                &what("occlusion"),
            );
            let perms: Vec<Vec<usize>> = case["shapley"]["permutations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| numbers(p).iter().map(|&x| x as usize).collect())
                .collect();
            let sv = run(&settings(Method::Shapley), Some(&perms));
            let words: Vec<f64> = sv.words.iter().map(|w| w.score).collect();
            assert_close(
                &words,
                &numbers(&case["shapley"]["words"]),
                &what("shapley"),
            );
            // Tokens map to the words Captum's feature masks used.
            let tw: Vec<Option<u64>> = case["token_words"]
                .as_array()
                .unwrap()
                .iter()
                .map(Value::as_u64)
                .collect();
            let ours: Vec<Option<u64>> =
                ig.tokens.iter().map(|t| t.word.map(|w| w as u64)).collect();
            assert_eq!(ours, tw, "{}", what("token → word"));
        }
    }
}

#[test]
fn attributions_keep_their_promises() {
    let dir = root().join("tests/fixtures/models/tiny-roberta-cls");
    let (model, tok, labels) = load_classifier(&dir, None).unwrap();
    let text = "Dull and lifeless, the film drags on and on.";
    // The completeness gap shrinks as the steps grow.
    let gap = |n: usize| {
        let s = ExplainSettings {
            n_steps: n,
            rule: IgRule::RiemannTrapezoid,
            ..ExplainSettings::default()
        };
        attribute(&model, &tok, &labels, text, None, &s, None)
            .unwrap()
            .completeness_gap
            .unwrap()
    };
    let (g4, g32, g256) = (gap(4), gap(32), gap(256));
    assert!(g256 < g32 && g32 < g4, "{g4} {g32} {g256}");
    // Word scores are their tokens' sums; special tokens belong to no word.
    let a = attribute(
        &model,
        &tok,
        &labels,
        text,
        None,
        &ExplainSettings::default(),
        None,
    )
    .unwrap();
    for (w, word) in a.words.iter().enumerate() {
        let sum: f64 = a
            .tokens
            .iter()
            .filter(|t| t.word == Some(w))
            .map(|t| t.score)
            .sum();
        assert!((sum - word.score).abs() < 1e-12, "{}", word.word);
        assert_eq!(&text[word.start..word.end], word.word);
    }
    assert!(a
        .tokens
        .iter()
        .filter(|t| t.special)
        .all(|t| t.word.is_none()));
    assert_eq!(a.words.len(), text.split_whitespace().count());
    // An input equal to the baseline gets no attribution at all.
    let enc = tok.encode_batch(&[text]).unwrap().remove(0);
    let x = model.word_embeddings(&enc.ids).unwrap();
    let (scores, fx, fb) = integrated_gradients(
        &model,
        &x,
        &x,
        enc.ids.len(),
        0,
        &ExplainSettings::default(),
    )
    .unwrap();
    assert!(scores.iter().all(|s| *s == 0.0));
    assert_eq!(fx, fb);
    // A label outside the model's is refused.
    let err = attribute(
        &model,
        &tok,
        &labels,
        text,
        Some(7),
        &ExplainSettings::default(),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("target class 7"), "{err}");
    assert!(attribute(
        &model,
        &tok,
        &labels,
        "   ",
        None,
        &ExplainSettings::default(),
        None
    )
    .is_err());
}

/// Occlusion on token ids (the path ONNX graphs take) equals occlusion on word embeddings
/// (the native path) for the same encoder and probe: a removed word's tokens become the
/// pad token either way.
#[test]
fn occlusion_on_ids_equals_occlusion_on_embeddings() {
    use lmcompare_pipeline::explain::heads::{self, HeadChoice, HeadData};
    use lmcompare_pipeline::explain::{attribute_by_ids, Attribution};
    let dir = root().join("tests/fixtures/models/tiny-bert-base");
    let train: Vec<(String, String)> = [
        ("A gripping, beautifully shot thriller.", "fresh"),
        ("Dull and lifeless.", "rotten"),
        ("Funny, warm, unmissable.", "fresh"),
        ("A tedious mess.", "rotten"),
    ]
    .iter()
    .map(|(t, l)| (t.to_string(), l.to_string()))
    .collect();
    let labels = vec!["fresh".to_owned(), "rotten".to_owned()];
    let descriptions = std::collections::HashMap::new();
    let data = HeadData {
        train: &train,
        labels: &labels,
        descriptions: &descriptions,
    };
    let s = settings(Method::Occlusion);
    let text = "Warm and funny, though a little long.";
    for head in [HeadChoice::Probe, HeadChoice::ZeroShot] {
        let (model, tok, _) = heads::load_pooled(&dir, None, head, &data).unwrap();
        let native: Attribution = attribute(&model, &tok, &labels, text, None, &s, None).unwrap();
        let resolved = lmcompare_engine::spec::resolve(&dir.display().to_string()).unwrap();
        let enc = heads::load_encoder(resolved, None).unwrap();
        let fit = heads::fit(&enc, head, &data).unwrap();
        let pad = enc.config.as_ref().unwrap().pad_token_id;
        let by_ids = attribute_by_ids(&enc.tokenizer, pad, &labels, text, None, &s, &mut |e| {
            Ok(enc
                .embed(e, 8)?
                .iter()
                .map(|v| fit.probabilities(v))
                .collect())
        })
        .unwrap();
        assert_close(
            &by_ids.words.iter().map(|w| w.score).collect::<Vec<_>>(),
            &native.words.iter().map(|w| w.score).collect::<Vec<_>>(),
            &format!("{head:?} occlusion"),
        );
        assert!(native.words.iter().any(|w| w.score.abs() > 1e-6));
    }
}
