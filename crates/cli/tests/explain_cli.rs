//! End-to-end tests of `explain` on the committed tiny classifiers: the JSON document,
//! the terminal and Markdown views, and one clear line for each kind of bad input.

use serde_json::Value;

mod common;
use common::{bad, json_of, lmcompare, root, tiny};

#[test]
fn explain_puts_two_models_side_by_side_with_words_summing_their_tokens() {
    let rob = format!("rob={}", tiny("tiny-roberta-cls"));
    let bert = format!("distil={}", tiny("tiny-distilbert-cls"));
    let text = "A gripping, beautifully shot thriller.";
    let doc = json_of(&[
        "explain", "--model", &rob, "--model", &bert, "--text", text, "--format", "json",
    ]);
    assert_eq!(doc["method"], "integrated_gradients");
    assert_eq!(doc["settings"]["n_steps"], 50);
    assert_eq!(doc["settings"]["rule"], "gausslegendre");
    let ex = &doc["examples"][0];
    assert_eq!(ex["text"], text);
    let models = ex["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    for m in models {
        let words = m["words"].as_array().unwrap();
        assert_eq!(words.len(), 5);
        assert_eq!(words[1]["word"], "gripping,");
        let tokens = m["tokens"].as_array().unwrap();
        assert!(tokens[0]["special"].as_bool().unwrap());
        let total: f64 = tokens.iter().map(|t| t["score"].as_f64().unwrap()).sum();
        let words_total: f64 = words.iter().map(|w| w["score"].as_f64().unwrap()).sum();
        assert!(
            (total - words_total).abs() < 1e-9,
            "special tokens' scores are 0 for IG here"
        );
        let fx = m["f_input"].as_f64().unwrap();
        let fb = m["f_baseline"].as_f64().unwrap();
        assert!((total - (fx - fb)).abs() <= m["completeness_gap"].as_f64().unwrap() + 1e-12);
        assert!(m["probabilities"].as_array().unwrap().len() == 2);
    }
    // Data with gold targets, by id, Shapley; then the plain table and Markdown.
    let data = root().join("tests/fixtures/data/reviews.jsonl");
    let d = data.to_str().unwrap();
    let doc = json_of(&[
        "explain",
        "--model",
        &rob,
        "--data",
        d,
        "--ids",
        "r00,r01",
        "--method",
        "shapley",
        "--samples",
        "5",
        "--target",
        "gold",
        "--format",
        "json",
    ]);
    let ex = doc["examples"].as_array().unwrap();
    assert_eq!(
        (ex[0]["id"].as_str(), ex[1]["id"].as_str()),
        (Some("r00"), Some("r01"))
    );
    assert_eq!(ex[0]["models"][0]["target"], ex[0]["gold"]);
    let out = lmcompare()
        .args([
            "explain", "--model", &rob, "--text", text, "--format", "table",
        ])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("beautifully[+") && !table.contains('\u{1b}'),
        "{table}"
    );
    let md = lmcompare()
        .args([
            "explain", "--model", &rob, "--text", text, "--format", "markdown",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&md.stdout).contains("| word | score |"));
    let dir = tempfile::tempdir().unwrap();
    let o = lmcompare()
        .args([
            "explain",
            "--model",
            &rob,
            "--text",
            text,
            "--out",
            dir.path().to_str().unwrap(),
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    let html = std::fs::read_to_string(dir.path().join("explain.html")).unwrap();
    assert!(html.contains("class=\"attr\"") && html.contains("beautifully"));
}

#[test]
fn a_text_longer_than_the_positions_is_truncated_and_said() {
    let rob = format!("rob={}", tiny("tiny-roberta-cls"));
    let long = "good ".repeat(200);
    let out = lmcompare()
        .args([
            "explain",
            "--model",
            &rob,
            "--text",
            &long,
            "--format",
            "json",
            "--n-steps",
            "4",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("were cut at the end"), "{err}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["examples"][0]["models"][0]["truncated"], true);
}

#[test]
fn bad_explain_inputs_give_one_clear_line() {
    let rob = format!("rob={}", tiny("tiny-roberta-cls"));
    let t = ["--text", "a fine film"];
    bad(
        &["explain", "--model", &rob, "--text", "  "],
        "--text 1: the text is empty",
    );
    bad(
        &["explain", "--model", &rob, t[0], t[1], "--target", "meh"],
        "the --target \"meh\" is not one of the model's labels [rotten, fresh]",
    );
    bad(
        &["explain", "--model", &rob, t[0], t[1], "--target", "gold"],
        "--target gold needs --data",
    );
    bad(&["explain", "--model", &rob], "nothing to explain");
    let base = format!("base={}", tiny("tiny-bert-base"));
    bad(
        &["explain", "--model", &base, t[0], t[1]],
        "no classification head",
    );
    let gguf = format!(
        "g={}",
        root()
            .join("tests/fixtures/models/tiny-gemma/model.gguf")
            .display()
    );
    bad(
        &["explain", "--model", &gguf, t[0], t[1]],
        "is a GGUF decoder; explain computes attributions",
    );
    bad(
        &[
            "explain",
            "--model",
            "r=openai:http://127.0.0.1:9/v1#m",
            t[0],
            t[1],
        ],
        "a remote model behind an OpenAI-compatible server",
    );
    let llama = format!("l={}", tiny("tiny-llama"));
    bad(
        &["explain", "--model", &llama, t[0], t[1]],
        "is a causal language model",
    );
    // An unknown method is clap's: exit 2 naming the possible values.
    let out = lmcompare()
        .args(["explain", "--model", &rob, t[0], t[1], "--method", "lime"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("integrated-gradients"));
}
