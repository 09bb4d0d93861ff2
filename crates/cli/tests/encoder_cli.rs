//! End-to-end tests of `embed`, `predict`, `tokenize` and `profile` on the shipped tiny
//! checkpoints and the fetched MiniLM assets, including the hub cache path and bad input.

use std::path::Path;

use serde_json::Value;

mod common;
use common::{bad, copy_dir, json_of, lmcompare, root, tiny};

fn asset(name: &str) -> String {
    let p = root().join("assets/models").join(name);
    assert!(
        p.exists(),
        "{} missing: run scripts/fetch-assets.sh",
        p.display()
    );
    p.display().to_string()
}

#[test]
fn embed_minilm_gives_the_sentence_transformers_embedding() {
    let v = json_of(&[
        "embed",
        "--model",
        &asset("all-MiniLM-L6-v2"),
        "--text",
        "A man is eating food.",
        "--text",
        "Hello",
    ]);
    assert_eq!(v["pooling"], "mean");
    assert_eq!(v["normalized"], true);
    let e = v["embeddings"][0].as_array().unwrap();
    assert_eq!(e.len(), 384);
    for (got, want) in e.iter().zip([0.03324, 0.00441, -0.00628, 0.04838]) {
        assert!((got.as_f64().unwrap() - want).abs() < 1e-4);
    }
    assert_eq!(v["embeddings"].as_array().unwrap().len(), 2);
}

#[test]
fn onnx_models_embed_close_to_the_f32_model() {
    let text = "The film is a triumph of style over substance.";
    let f32m = json_of(&[
        "embed",
        "--model",
        &asset("all-MiniLM-L6-v2"),
        "--text",
        text,
    ]);
    let int8 = json_of(&[
        "embed",
        "--model",
        &asset("all-MiniLM-L6-v2-int8-onnx"),
        "--text",
        text,
    ]);
    assert_eq!(int8["backend"], "onnxruntime");
    let (a, b) = (&f32m["embeddings"][0], &int8["embeddings"][0]);
    let dot: f64 = (0..384)
        .map(|i| a[i].as_f64().unwrap() * b[i].as_f64().unwrap())
        .sum();
    assert!(dot > 0.999, "cosine {dot}");
    let l3 = json_of(&[
        "embed",
        "--model",
        &asset("paraphrase-MiniLM-L3-v2-onnx"),
        "--text",
        text,
    ]);
    assert_eq!(l3["dim"], 384);
    assert_eq!(l3["normalized"], false);
}

#[test]
fn predict_uses_id2label_and_gives_distributions() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"text\": \"a gripping thriller\"}\n{\"text\": \"dull and lifeless\"}\n",
    )
    .unwrap();
    let v = json_of(&[
        "predict",
        "--model",
        &tiny("tiny-bert-cls"),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert_eq!(
        v["labels"],
        serde_json::json!(["negative", "neutral", "positive"])
    );
    let preds = v["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 2);
    for p in preds {
        let probs = p["probabilities"].as_object().unwrap();
        let sum: f64 = probs.values().map(|x| x.as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-5);
        let label = p["label"].as_str().unwrap();
        let best = probs
            .iter()
            .max_by(|a, b| a.1.as_f64().partial_cmp(&b.1.as_f64()).unwrap())
            .unwrap()
            .0;
        assert_eq!(label, best);
    }
}

#[test]
fn tokenize_compares_wordpiece_and_bpe_side_by_side() {
    let v = json_of(&[
        "tokenize",
        "--model",
        &tiny("tiny-bert-cls"),
        "--model",
        &tiny("tiny-roberta-cls"),
        "--text",
        "Café crème brûlée 😍",
        "--text",
        &"word ".repeat(100),
        "--format",
        "json",
    ]);
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    for m in models {
        let s = &m["stats"];
        assert!(s["tokens_per_word"].as_f64().unwrap() > 0.0);
        // The 100-word text exceeds the 64-token limit in both: half the inputs truncated.
        assert_eq!(s["truncated_fraction"].as_f64().unwrap(), 0.5);
        assert_eq!(m["ids"][1].as_array().unwrap().len(), 64);
    }
    assert_eq!(models[0]["tokens"][0][0], "[CLS]");
    assert_eq!(models[1]["tokens"][0][0], "<s>");
    // Byte-level BPE never needs an unknown token; WordPiece may.
    assert_eq!(models[1]["stats"]["unk_rate"].as_f64().unwrap(), 0.0);
    let out = lmcompare()
        .args([
            "tokenize",
            "--model",
            &tiny("tiny-bert-cls"),
            "--model",
            &tiny("tiny-roberta-cls"),
            "--text",
            "hello",
            "--format",
            "table",
        ])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("tokens/word") && table.contains("unk rate"),
        "{table}"
    );
}

#[test]
fn profile_reports_parameters_flops_and_latency() {
    let v = json_of(&[
        "profile",
        "--model",
        &asset("all-MiniLM-L6-v2"),
        "--batch-size",
        "4",
        "--seq-len",
        "32",
        "--runs",
        "3",
        "--warmup",
        "1",
        "--format",
        "json",
    ]);
    assert_eq!(v["parameters"], 22_713_216);
    let flops = v["flops_per_example"].as_f64().unwrap();
    // 6 layers × 32 tokens × (8d² + 4dL + 4d·d_ff), d = 384, d_ff = 1536.
    let d = 384.0;
    let want = 6.0 * 32.0 * (8.0 * d * d + 4.0 * d * 32.0 + 4.0 * d * 1536.0);
    assert!((flops - want).abs() < 1.0, "{flops} vs {want}");
    assert_eq!(v["timed_batches"], 3);
    for k in [
        "latency_ms_p50",
        "latency_ms_p95",
        "latency_ms_p99",
        "throughput_per_s",
        "tokens_per_s",
        "peak_rss_bytes",
    ] {
        assert!(v[k].as_f64().unwrap() > 0.0, "{k}");
    }
    let c = v["components"].as_object().unwrap();
    assert!(c.contains_key("embeddings") && c.contains_key("encoder_layers"));
}

#[test]
fn hf_specs_resolve_through_a_hub_cache() {
    let hub = tempfile::tempdir().unwrap();
    let repo = hub.path().join("models--acme--tiny-bert-cls");
    let hash = "0123456789abcdef0123456789abcdef01234567";
    copy_dir(
        Path::new(&tiny("tiny-bert-cls")),
        &repo.join("snapshots").join(hash),
    );
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), hash).unwrap();
    let direct = json_of(&[
        "predict",
        "--model",
        &tiny("tiny-bert-cls"),
        "--text",
        "hello",
    ]);
    for spec in [
        "hf:acme/tiny-bert-cls",
        &format!("hf:acme/tiny-bert-cls@{hash}"),
    ] {
        let out = lmcompare()
            .env("HF_HUB_CACHE", hub.path())
            .args(["predict", "--model", spec, "--text", "hello"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["predictions"], direct["predictions"]);
    }
    let out = lmcompare()
        .env("HF_HUB_CACHE", hub.path())
        .args(["predict", "--model", "hf:acme/missing", "--text", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not in the Hugging Face cache"));
}

#[test]
fn bad_models_and_inputs_give_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = Path::new(&tiny("tiny-bert-cls")).to_owned();
    let variant = |name: &str, edit: &dyn Fn(&Path)| -> String {
        let p = d.join(name);
        copy_dir(&src, &p);
        edit(&p);
        p.display().to_string()
    };
    let no_config = variant("no-config", &|p| {
        std::fs::remove_file(p.join("config.json")).unwrap()
    });
    bad(
        &["predict", "--model", &no_config, "--text", "x"],
        "config.json: missing",
    );
    let gpt = variant("gpt", &|p| {
        let c = std::fs::read_to_string(p.join("config.json"))
            .unwrap()
            .replace("\"bert\"", "\"gpt2\"");
        std::fs::write(p.join("config.json"), c).unwrap();
    });
    bad(
        &["predict", "--model", &gpt, "--text", "x"],
        "unsupported model_type \"gpt2\"; supported encoder types: bert, roberta",
    );
    let layers = variant("layers", &|p| {
        let c = std::fs::read_to_string(p.join("config.json"))
            .unwrap()
            .replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
        std::fs::write(p.join("config.json"), c).unwrap();
    });
    bad(
        &["predict", "--model", &layers, "--text", "x"],
        "tensor `bert.encoder.layer.2.attention.self.query.weight` is missing",
    );
    let shape = variant("shape", &|p| {
        let c = std::fs::read_to_string(p.join("config.json"))
            .unwrap()
            .replace("\"intermediate_size\": 37", "\"intermediate_size\": 38");
        std::fs::write(p.join("config.json"), c).unwrap();
    });
    bad(
        &["predict", "--model", &shape, "--text", "x"],
        "has shape [37, 32], expected [38, 32]",
    );
    let truncated = variant("truncated", &|p| {
        let bytes = std::fs::read(p.join("model.safetensors")).unwrap();
        std::fs::write(p.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    });
    bad(
        &["predict", "--model", &truncated, "--text", "x"],
        "corrupt or truncated safetensors file",
    );
    let header = variant("header", &|p| {
        std::fs::write(
            p.join("model.safetensors"),
            b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage",
        )
        .unwrap()
    });
    bad(
        &["predict", "--model", &header, "--text", "x"],
        "corrupt or truncated safetensors file",
    );
    let vocab = variant("vocab", &|p| {
        // The RoBERTa tokenizer's ids run past this BERT model's 448-row embedding matrix.
        for f in ["tokenizer.json", "tokenizer_config.json"] {
            std::fs::copy(Path::new(&tiny("tiny-roberta-cls")).join(f), p.join(f)).unwrap();
        }
    });
    bad(
        &["predict", "--model", &vocab, "--text", "x"],
        "does not fit the model's embedding matrix",
    );
    bad(
        &["predict", "--model", &tiny("tiny-bert-base"), "--text", "x"],
        "has no classification head",
    );
    bad(
        &["predict", "--model", &tiny("tiny-bert-cls"), "--text", "  "],
        "text 1 is empty",
    );
    bad(
        &[
            "embed",
            "--model",
            &d.join("nowhere").display().to_string(),
            "--text",
            "x",
        ],
        "no such file or folder",
    );
    let onnx = variant("onnx", &|p| {
        std::fs::remove_file(p.join("model.safetensors")).unwrap();
        std::fs::write(p.join("model.onnx"), b"this is not a protobuf graph at all").unwrap();
    });
    // Needs the runtime from the assets: point at it explicitly, since this folder is not
    // inside the asset tree.
    let lib = std::fs::read_dir(root().join("assets/onnxruntime"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let out = lmcompare()
        .env("ORT_DYLIB_PATH", lib)
        .args(["embed", "--model", &onnx, "--text", "x"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("model.onnx: not a loadable ONNX model"),
        "{err}"
    );
    let input = d.join("in.jsonl");
    std::fs::write(&input, "{\"text\": \"fine\"}\n{\"txt\": \"oops\"}\n").unwrap();
    bad(
        &[
            "embed",
            "--model",
            &tiny("tiny-bert-base"),
            "--input",
            input.to_str().unwrap(),
        ],
        "in.jsonl:2: missing string field `text`",
    );
}
