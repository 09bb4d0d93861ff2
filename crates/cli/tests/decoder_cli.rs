//! Local generative models in `compare`: the real Gemma 3 270M GGUF beside an encoder probe
//! on the Rotten Tomatoes reviews, the tiny transformers checkpoints on multiple choice and
//! perplexity, resumption from the store, and the bad-input messages.

mod common;

use common::{bad, json_of, root, tiny};
use serde_json::Value;

fn model<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no model {name} in {doc}"))
}

#[test]
fn gemma_zero_shot_beside_an_encoder_probe_resumes_without_recomputing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db").display().to_string();
    let gguf = root().join("assets/models/gemma-3-270m-q4_k_m.gguf");
    assert!(gguf.exists(), "run `bash scripts/fetch-assets.sh` first");
    let minilm = format!(
        "minilm={}",
        root().join("assets/models/all-MiniLM-L6-v2").display()
    );
    let gemma = format!("gemma={}", gguf.display());
    let data = root()
        .join("assets/data/rotten_tomatoes_binary.jsonl")
        .display()
        .to_string();
    let args = [
        "compare",
        "--model",
        &minilm,
        "--model",
        &gemma,
        "--data",
        &data,
        "--task",
        "probe",
        "--template",
        "Review: {text}\nSentiment:",
        "--verbalizer",
        "fresh= positive",
        "--verbalizer",
        "rotten= negative",
        "--limit",
        "24",
        "--batch-size",
        "8",
        "--db",
        &db,
        "--format",
        "json",
        "--quiet",
    ];
    let first = json_of(&args);
    let g = model(&first, "gemma");
    assert!(
        g["backend"].as_str().unwrap().contains("gemma3 gguf"),
        "{}",
        g["backend"]
    );
    let eff = &g["efficiency"];
    assert_eq!(eff["parameters"], 268_098_176u64);
    assert_eq!(eff["size_bytes"], 253_113_024u64);
    // Body FLOPs of ~20-token prompts plus one 262k-vocabulary projection per example.
    let flops = eff["flops_per_example"].as_f64().unwrap();
    assert!(flops > 2.0 * 640.0 * 262_144.0 && flops < 2e10, "{flops}");
    assert_eq!(g["computed_examples"], 24);
    assert_eq!(first["pairwise"].as_array().unwrap().len(), 1);
    // Zero-shot Gemma is far from random on these reviews, with calibrated-looking output.
    let acc = g["metrics"]["accuracy"].as_f64().unwrap();
    assert!(acc > 0.5, "accuracy {acc}");

    let again = json_of(&args);
    assert_eq!(again["run"]["resumed"], true);
    let g2 = model(&again, "gemma");
    assert_eq!(g2["computed_examples"], 0);
    assert_eq!(g2["reused_examples"], 24);
    assert_eq!(g2["metrics"], g["metrics"]);
    assert_eq!(
        g2["efficiency"]["flops_per_example"],
        eff["flops_per_example"]
    );
}

#[test]
fn tiny_decoders_answer_multiple_choice_and_score_perplexity() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db").display().to_string();
    let mc = dir.path().join("mc.jsonl");
    std::fs::write(
        &mc,
        [
            r#"{"id": "q1", "question": "The film is", "choices": ["great", "bad", "long"], "answer": 0}"#,
            r#"{"id": "q2", "question": "The cast was", "choices": ["superb", "a waste"], "answer": 1}"#,
            r#"{"id": "q3", "question": "A gripping", "choices": ["thriller", "bore", "film", "plot"], "answer": 2}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let llama = format!("llama={}", tiny("tiny-llama"));
    let gpt2 = format!("gpt2={}", tiny("tiny-gpt2"));
    let mcs = mc.display().to_string();
    let mc_args = [
        "compare",
        "--model",
        &llama,
        "--model",
        &gpt2,
        "--data",
        &mcs,
        "--task",
        "multiple-choice",
        "--batch-size",
        "2",
        "--db",
        &db,
        "--format",
        "json",
        "--quiet",
    ];
    let doc = json_of(&mc_args);
    // A rerun computes nothing and reports the same lm-evaluation-harness numbers over all
    // questions (the earlier scores come from the store).
    let again = json_of(&mc_args);
    for name in ["llama", "gpt2"] {
        assert_eq!(model(&again, name)["computed_examples"], 0);
        assert_eq!(
            model(&again, name)["multiple_choice"],
            model(&doc, name)["multiple_choice"]
        );
    }
    for name in ["llama", "gpt2"] {
        let m = &model(&doc, name)["multiple_choice"];
        assert_eq!(m["questions"], 3);
        for k in ["acc", "acc_norm", "acc_bytes"] {
            let v = m[k].as_f64().unwrap();
            assert!(
                (0.0..=1.0).contains(&v) && (v * 3.0).fract().abs() < 1e-9,
                "{k} {v}"
            );
        }
    }

    // Perplexity: windows of 40 characters, so long documents take several; a rerun
    // computes nothing and reports the same numbers.
    let text = dir.path().join("text.txt");
    std::fs::write(
        &text,
        "A gorgeous, witty, seductive movie. The cast is superb and the plot never drags.\n\n\
         Dull, lifeless and far too long.\n\n\
         The film is great, and the cast shines in every scene of this gripping thriller.",
    )
    .unwrap();
    let texts = text.display().to_string();
    let qwen = format!("qwen={}", tiny("tiny-qwen2"));
    let gemma3 = format!("gemma3={}", tiny("tiny-gemma3"));
    let args = [
        "compare",
        "--model",
        &qwen,
        "--model",
        &gemma3,
        "--data",
        &texts,
        "--task",
        "perplexity",
        "--window-chars",
        "40",
        "--context-chars",
        "20",
        "--db",
        &db,
        "--format",
        "json",
        "--quiet",
    ];
    let first = json_of(&args);
    assert_eq!(first["dataset"]["documents"], 3);
    assert!(first["dataset"]["windows"].as_u64().unwrap() > 3);
    for m in first["models"].as_array().unwrap() {
        let p = &m["perplexity"];
        let bytes = p["bytes"].as_u64().unwrap();
        // Every character is scored once: the bytes are the documents' bytes minus the
        // blank lines between them.
        assert_eq!(bytes, 80 + 32 + 80, "{}", m["name"]);
        assert!(p["token_perplexity"].as_f64().unwrap() > 1.0);
        assert!(m["efficiency"]["requests_sent"].as_u64().unwrap() > 0);
    }
    let again = json_of(&args);
    for (a, b) in first["models"]
        .as_array()
        .unwrap()
        .iter()
        .zip(again["models"].as_array().unwrap())
    {
        assert_eq!(a["perplexity"], b["perplexity"]);
        assert_eq!(b["efficiency"]["requests_sent"], 0);
    }
}

/// A GGUF file with only a header and the given string metadata.
fn gguf_with(path: &std::path::Path, kv: &[(&str, &str)]) {
    let mut b = Vec::new();
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&(kv.len() as u64).to_le_bytes());
    for (k, v) in kv {
        b.extend_from_slice(&(k.len() as u64).to_le_bytes());
        b.extend_from_slice(k.as_bytes());
        b.extend_from_slice(&8u32.to_le_bytes()); // string
        b.extend_from_slice(&(v.len() as u64).to_le_bytes());
        b.extend_from_slice(v.as_bytes());
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn unsupported_or_broken_decoders_get_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db").display().to_string();
    let data = root()
        .join("assets/data/rotten_tomatoes_binary.jsonl")
        .display()
        .to_string();
    let llama = format!("llama={}", tiny("tiny-llama"));
    let run = |other: &str, needle: &str| {
        bad(
            &[
                "compare", "--model", &llama, "--model", other, "--data", &data, "--task",
                "classify", "--limit", "4", "--db", &db, "--quiet",
            ],
            needle,
        );
    };
    let falcon = dir.path().join("falcon.gguf");
    gguf_with(
        &falcon,
        &[
            ("general.architecture", "falcon"),
            ("tokenizer.ggml.model", "gpt2"),
        ],
    );
    run(
        &format!("f={}", falcon.display()),
        "GGUF architecture \"falcon\" is not supported",
    );
    let broken = dir.path().join("broken.gguf");
    std::fs::write(&broken, b"GGUF\x03\x00\x00\x00trunc").unwrap();
    run(
        &format!("b={}", broken.display()),
        "not a readable GGUF file",
    );
    // A tokenizer from another model (612 tokens) in a 320-token model's folder.
    let mixed = dir.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(
            root().join("tests/fixtures/models/tiny-llama").join(f),
            mixed.join(f),
        )
        .unwrap();
    }
    std::fs::copy(
        root().join("tests/fixtures/models/tiny-roberta-cls/tokenizer.json"),
        mixed.join("tokenizer.json"),
    )
    .unwrap();
    run(&format!("m={}", mixed.display()), "do not belong together");
    // Encoders cannot answer multiple choice.
    let mc = dir.path().join("mc.jsonl");
    std::fs::write(
        &mc,
        r#"{"id": "q1", "question": "Q", "choices": ["a", "b"], "answer": 0}"#,
    )
    .unwrap();
    bad(
        &[
            "compare",
            "--model",
            &llama,
            "--model",
            &format!("bert={}", tiny("tiny-bert-cls")),
            "--data",
            &mc.display().to_string(),
            "--task",
            "multiple-choice",
            "--db",
            &db,
            "--quiet",
        ],
        "is an encoder",
    );
}

#[test]
fn gemma_generates_answers_scored_by_exact_match_and_f1_and_reruns_generate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db").display().to_string();
    let qa = dir.path().join("qa.jsonl");
    std::fs::write(
        &qa,
        [
            r#"{"id": "1", "prompt": "Q: What is the capital of France?\nA:", "answer": "Paris"}"#,
            r#"{"id": "2", "prompt": "Q: What color is the sky on a clear day?\nA:", "answer": ["blue", "light blue"]}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let gemma = format!(
        "gemma={}",
        root()
            .join("assets/models/gemma-3-270m-q4_k_m.gguf")
            .display()
    );
    let gpt2 = format!("gpt2={}", tiny("tiny-gpt2"));
    let q = qa.display().to_string();
    let args = [
        "compare",
        "--task",
        "generate",
        "--model",
        &gemma,
        "--model",
        &gpt2,
        "--data",
        &q,
        "--max-tokens",
        "8",
        "--db",
        &db,
        "--format",
        "json",
        "--quiet",
    ];
    let doc = json_of(&args);
    let g = model(&doc, "gemma");
    // Greedy Gemma (llama.cpp's greedy tokens are checked in the engine tests) answers
    // " Blue" to the second prompt: a normalised exact match.
    assert_eq!(g["answers"][1]["answer"], " Blue");
    let em = g["generate"]["exact_match"].as_f64().unwrap();
    let f1 = g["generate"]["f1"].as_f64().unwrap();
    assert!(em >= 0.5 && f1 >= em, "{em} {f1}");
    assert_eq!(g["efficiency"]["generated_now"], 2);
    let again = json_of(&args);
    assert_eq!(model(&again, "gemma")["efficiency"]["generated_now"], 0);
    assert_eq!(model(&again, "gemma")["generate"], g["generate"]);
    // A prompt file with a line missing its answer is refused with file and line.
    std::fs::write(&qa, "{\"id\": \"1\", \"prompt\": \"Q\", \"answer\": \"a\"}\n{\"id\": \"2\", \"prompt\": \"Q\"}\n").unwrap();
    bad(
        &args[..args.len() - 3],
        "qa.jsonl:2: missing field \"answer\"",
    );
}

#[test]
fn classification_by_generation_counts_answers_naming_no_label_as_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db").display().to_string();
    let gemma = format!(
        "gemma={}",
        root()
            .join("assets/models/gemma-3-270m-q4_k_m.gguf")
            .display()
    );
    let llama = format!("llama={}", tiny("tiny-llama"));
    let data = root()
        .join("assets/data/rotten_tomatoes_binary.jsonl")
        .display()
        .to_string();
    let doc = json_of(&[
        "compare",
        "--model",
        &gemma,
        "--model",
        &llama,
        "--data",
        &data,
        "--task",
        "classify",
        "--template",
        "Review: {text}\nIs this review positive or negative? Answer:",
        "--verbalizer",
        "fresh= positive",
        "--verbalizer",
        "rotten= negative",
        "--decoder-scoring",
        "generate",
        "--max-tokens",
        "4",
        "--limit",
        "12",
        "--db",
        &db,
        "--format",
        "json",
        "--quiet",
    ]);
    for name in ["gemma", "llama"] {
        let m = model(&doc, name);
        let invalid = m["generation"]["invalid_answers"].as_u64().unwrap();
        let cm = &m["confusion_matrix"];
        let rows = cm["matrix"].as_array().unwrap();
        let total: u64 = rows
            .iter()
            .flat_map(|r| r.as_array().unwrap())
            .map(|c| c.as_u64().unwrap())
            .sum();
        assert_eq!(
            total, 12,
            "{name}: every example is in the matrix, none dropped"
        );
        if invalid > 0 {
            assert_eq!(cm["predicted_labels"][2], "invalid");
            let col: u64 = rows.iter().map(|r| r[2].as_u64().unwrap()).sum();
            assert_eq!(col, invalid, "{name}");
            assert!(m["warnings"].to_string().contains("named no label"));
        }
        // No probabilities from generated answers: no calibration metrics.
        assert!(m["metrics"]["log_loss"].is_null(), "{name}");
        let right: u64 = (0..2).map(|i| rows[i][i].as_u64().unwrap()).sum();
        assert!((m["metrics"]["accuracy"].as_f64().unwrap() - right as f64 / 12.0).abs() < 1e-12);
    }
    // The random tiny model answers gibberish: all invalid.
    assert_eq!(model(&doc, "llama")["generation"]["invalid_answers"], 12);
}

/// A GGUF whose f32 weights would not fit the memory left is refused before anything is
/// allocated, with the numbers (the memory limit forced as a container would set it).
#[test]
fn a_gguf_too_large_for_the_memory_left_is_refused_with_the_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = root().join("assets/models/gemma-3-270m-q4_k_m.gguf");
    let run = |available: &str, extra: &[&str]| {
        let out = common::lmcompare()
            .env("LMCOMPARE_MEMORY_AVAILABLE", available)
            .args([
                "compare",
                "--model",
                &format!("g={}", gguf.display()),
                "--data",
                root()
                    .join("tests/fixtures/data/reviews.jsonl")
                    .to_str()
                    .unwrap(),
                "--db",
                dir.path().join("s.db").to_str().unwrap(),
                "--quiet",
            ])
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        err
    };
    // The f32 path needs 4 bytes per weight.
    let err = run("500000000", &["--dequantize"]);
    assert!(
        err.contains("dequantising its 268098176 weights to f32 (4 bytes each) needs 1.07 GB but only 0.50 GB of memory is available"),
        "{err}"
    );
    // The quantised path needs the file's bytes (mapped) and its few f32 tensors.
    let err = run("200000000", &[]);
    assert!(
        err.contains("its 253113024 bytes of weights (mapped from the file, kept quantised) and 55936 f32 values needs 0.25 GB but only 0.20 GB of memory is available"),
        "{err}"
    );
}

/// The same GGUF twice: its quantised blocks with int8 kernels (the default) and, through the
/// `dequantize:` spec prefix, its weights in f32; the efficiency block says which path ran.
#[test]
fn a_gguf_runs_quantised_by_default_and_in_f32_on_request_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = root().join("assets/models/gemma-3-270m-q4_k_m.gguf");
    let data = root().join("assets/data/rotten_tomatoes_binary.jsonl");
    let doc = json_of(&[
        "compare",
        "--model",
        &format!("q4km={}", gguf.display()),
        "--model",
        &format!("f32=dequantize:{}", gguf.display()),
        "--data",
        data.to_str().unwrap(),
        "--template",
        "Review: {text}\nSentiment:",
        "--verbalizer",
        "fresh= positive",
        "--verbalizer",
        "rotten= negative",
        "--limit",
        "16",
        "--db",
        dir.path().join("s.db").to_str().unwrap(),
        "--format",
        "json",
        "--quiet",
    ]);
    let source = |name: &str| {
        model(&doc, name)["efficiency"]["parameter_source"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let q = source("q4km");
    assert!(
        q.contains("quantised blocks mapped from the file, int8 activations")
            && q.contains("Q4_K")
            && q.contains("bits per parameter"),
        "{q}"
    );
    assert!(
        source("f32").contains("f32, dequantised at load"),
        "{}",
        source("f32")
    );
    for name in ["q4km", "f32"] {
        assert_eq!(model(&doc, name)["computed_examples"], 16);
        let acc = model(&doc, name)["metrics"]["accuracy"].as_f64().unwrap();
        assert!(acc > 0.5, "{name}: accuracy {acc}");
    }
    assert_eq!(doc["pairwise"].as_array().unwrap().len(), 1);
}
