//! End-to-end tests of `compare`, `runs`, `report` and `demo`, including an interrupted run
//! (a real child process killed with SIGKILL) that resumes from the store.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{bad, lmcompare, root, tiny};

/// A small review dataset; `split` column optional.
fn dataset(dir: &Path, n: usize, with_split: bool) -> PathBuf {
    let words = [
        "gripping", "dull", "funny", "lifeless", "superb", "overlong", "charming", "tedious",
    ];
    let mut s = String::new();
    for i in 0..n {
        let good = i % 2 == 0;
        let w = words[(i * 3 + usize::from(good)) % words.len()];
        let label = if good { "fresh" } else { "rotten" };
        let split = if i % 5 == 0 { "test" } else { "train" };
        let text = format!(
            "review {i}: a {w} film, {} overall",
            if good { "great" } else { "bad" }
        );
        if with_split {
            s.push_str(&serde_json::json!({"id": format!("r{i}"), "text": text, "label": label, "split": split}).to_string());
        } else {
            s.push_str(
                &serde_json::json!({"id": format!("r{i}"), "review": text, "sentiment": label})
                    .to_string(),
            );
        }
        s.push('\n');
    }
    let p = dir.join(if with_split {
        "reviews.jsonl"
    } else {
        "reviews_nosplit.jsonl"
    });
    std::fs::write(&p, s).unwrap();
    p
}

fn run_json(args: &[&str]) -> Value {
    let mut cmd = lmcompare();
    cmd.args(args).args(["--format", "json"]);
    if args[0] == "compare" {
        cmd.arg("--quiet");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn classify_compares_two_classifiers_with_every_block() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 100, true);
    let db = dir.path().join("s.db");
    let roberta = format!("roberta={}", tiny("tiny-roberta-cls"));
    let distil = format!("distil={}", tiny("tiny-distilbert-cls"));
    let v = run_json(&[
        "compare",
        "--model",
        &roberta,
        "--model",
        &distil,
        "--data",
        data.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--bootstrap",
        "200",
        "--permutations",
        "200",
        "--check-invariance",
    ]);
    assert_eq!(v["task"], "classify");
    assert_eq!(
        v["dataset"]["labels"],
        serde_json::json!(["fresh", "rotten"])
    );
    assert_eq!(v["dataset"]["rows_per_split"]["test"], 20);
    assert_eq!(v["dataset"]["sha256"].as_str().unwrap().len(), 64);
    for key in ["id", "lmcompare_version", "seed", "started", "finished"] {
        assert!(!v["run"][key].is_null(), "run.{key}");
    }
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    for m in models {
        for k in [
            "accuracy",
            "precision_macro",
            "recall_macro",
            "f1_macro",
            "log_loss",
            "brier",
            "ece",
            "roc_auc",
        ] {
            assert!(m["metrics"][k].is_number(), "{k}");
            assert!(m["ci"][k]["low"].is_number(), "ci {k}");
        }
        let e = &m["efficiency"];
        for k in [
            "parameters",
            "size_bytes",
            "flops_per_example",
            "tokens_per_example",
            "latency_ms_p50",
            "latency_ms_p95",
            "throughput_per_s",
            "peak_rss_bytes",
        ] {
            assert!(e[k].as_f64().unwrap() > 0.0, "efficiency.{k}");
        }
        assert_eq!(m["computed_examples"], 20);
        // Inference is per sequence: batch size cannot change a probability.
        assert!(m["batch_invariance_max_abs_change"].as_f64().unwrap() < 1e-5);
    }
    let p = &v["pairwise"][0];
    for k in [
        "delta",
        "ci_low",
        "ci_high",
        "mcnemar_p",
        "bootstrap_p",
        "permutation_p",
        "p_holm",
    ] {
        assert!(p[k].is_number(), "pairwise.{k}");
    }
    assert_eq!(v["verdicts"].as_array().unwrap().len(), 1);
    assert!(!v["pareto"]["models"].as_array().unwrap().is_empty());

    // The same command again: resumed, nothing computed, identical numbers.
    let again = run_json(&[
        "compare",
        "--model",
        &roberta,
        "--model",
        &distil,
        "--data",
        data.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--bootstrap",
        "200",
        "--permutations",
        "200",
        "--batch-size",
        "7",
    ]);
    assert_eq!(again["run"]["resumed"], true);
    for (a, b) in models.iter().zip(again["models"].as_array().unwrap()) {
        assert_eq!(b["computed_examples"], 0);
        assert_eq!(a["metrics"], b["metrics"]);
    }

    // runs lists it; report re-renders it from the store alone.
    let runs = run_json(&["runs", "--db", db.to_str().unwrap()]);
    assert_eq!(runs.as_array().unwrap().len(), 1);
    let id = runs[0]["id"].to_string();
    let rep = run_json(&["report", "--run", &id, "--db", db.to_str().unwrap()]);
    assert_eq!(rep["models"][0]["metrics"], again["models"][0]["metrics"]);
    let table = lmcompare()
        .args([
            "report",
            "--run",
            &id,
            "--db",
            db.to_str().unwrap(),
            "--format",
            "table",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("Pareto set") && text.contains("paired tests"),
        "{text}"
    );
}

#[test]
fn probe_and_zero_shot_work_on_any_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 120, false);
    let db = dir.path().join("s.db");
    let a = format!("base={}", tiny("tiny-bert-base"));
    let b = format!("cls={}", tiny("tiny-bert-cls"));
    let v = run_json(&[
        "compare",
        "--model",
        &a,
        "--model",
        &b,
        "--data",
        data.to_str().unwrap(),
        "--text-col",
        "review",
        "--label-col",
        "sentiment",
        "--task",
        "probe",
        "--db",
        db.to_str().unwrap(),
        "--bootstrap",
        "100",
        "--permutations",
        "100",
    ]);
    assert_eq!(v["task"], "probe");
    // No split column: stratified 80/20 by a seeded hash, 12 of each label in test.
    assert_eq!(v["dataset"]["rows_per_split"]["test"], 24);
    assert!(v["dataset"]["split"]
        .as_str()
        .unwrap()
        .starts_with("stratified"));
    // The reviews say "great"/"bad": a probe on any encoder learns that.
    assert!(v["models"][0]["metrics"]["accuracy"].as_f64().unwrap() > 0.8);
    let z = run_json(&[
        "compare",
        "--model",
        &a,
        "--model",
        &b,
        "--data",
        data.to_str().unwrap(),
        "--text-col",
        "review",
        "--label-col",
        "sentiment",
        "--task",
        "zero-shot",
        "--label-desc",
        "fresh=a great film",
        "--label-desc",
        "rotten=a bad film",
        "--db",
        db.to_str().unwrap(),
        "--bootstrap",
        "50",
        "--permutations",
        "50",
    ]);
    assert_eq!(z["task"], "zero-shot");
    let p = &z["models"][0];
    assert!(p["metrics"]["log_loss"].is_number());
}

#[test]
fn bad_compare_inputs_give_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = dataset(d, 40, true);
    let ds = data.to_str().unwrap();
    let db = d.join("s.db");
    let dbs = db.to_str().unwrap();
    let a = format!("a={}", tiny("tiny-roberta-cls"));
    let b = format!("b={}", tiny("tiny-distilbert-cls"));
    bad(
        &[
            "compare", "--model", &a, "--model", &a, "--data", ds, "--db", dbs,
        ],
        "two models are named \"a\"",
    );
    bad(
        &[
            "compare",
            "--model",
            &a,
            "--model",
            &b,
            "--data",
            ds,
            "--text-col",
            "body",
            "--db",
            dbs,
        ],
        "no column `body` (--text-col); the columns are: id, text, label, split",
    );
    let cls = format!("c={}", tiny("tiny-bert-cls"));
    bad(&["compare", "--model", &a, "--model", &cls, "--data", ds, "--db", dbs], "model c: cannot map the model's labels [negative, neutral, positive] to the dataset's [fresh, rotten]");
    let single = d.join("single.jsonl");
    std::fs::write(&single, "{\"text\": \"one\", \"label\": \"x\"}\n{\"text\": \"two\", \"label\": \"y\"}\n{\"text\": \"three\", \"label\": \"y\"}\n").unwrap();
    bad(
        &[
            "compare",
            "--model",
            &a,
            "--model",
            &b,
            "--data",
            single.to_str().unwrap(),
            "--db",
            dbs,
        ],
        "label \"x\" has a single example",
    );
    let notest = d.join("notest.jsonl");
    std::fs::write(
        &notest,
        "{\"text\": \"one\", \"label\": \"x\", \"split\": \"train\"}\n{\"text\": \"two\", \"label\": \"y\", \"split\": \"train\"}\n",
    )
    .unwrap();
    bad(
        &[
            "compare",
            "--model",
            &a,
            "--model",
            &b,
            "--data",
            notest.to_str().unwrap(),
            "--db",
            dbs,
        ],
        "the test split is empty",
    );
    let empty = d.join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    bad(
        &[
            "compare",
            "--model",
            &a,
            "--model",
            &b,
            "--data",
            empty.to_str().unwrap(),
            "--db",
            dbs,
        ],
        "the file is empty",
    );
    bad(
        &[
            "compare",
            "--model",
            &a,
            "--model",
            "b=/nonexistent/model",
            "--data",
            ds,
            "--db",
            dbs,
        ],
        "model b: model \"/nonexistent/model\": no such file or folder",
    );
    bad(
        &[
            "compare",
            "--model",
            &a,
            "--model",
            &b,
            "--data",
            ds,
            "--db",
            "/nonexistent-dir/s.db",
        ],
        "cannot use the store",
    );
    // A store written by a newer schema is refused, not silently reinterpreted.
    let newer = d.join("newer.db");
    {
        let c = rusqlite::Connection::open(&newer).unwrap();
        c.execute_batch("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL); INSERT INTO meta VALUES('schema_version', '99');").unwrap();
    }
    bad(
        &[
            "compare",
            "--model",
            &a,
            "--model",
            &b,
            "--data",
            ds,
            "--db",
            newer.to_str().unwrap(),
        ],
        "written by a newer lmcompare (schema 99",
    );
}

#[test]
fn a_model_that_fails_keeps_the_others_finished_work() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 60, true);
    let db = dir.path().join("s.db");
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(
            Path::new(&tiny("tiny-distilbert-cls")).join(f),
            broken.join(f),
        )
        .unwrap();
    }
    std::fs::write(broken.join("model.safetensors"), b"garbage").unwrap();
    let a = format!("good={}", tiny("tiny-roberta-cls"));
    let b = format!("broken={}", broken.display());
    let out = lmcompare()
        .args([
            "compare",
            "--model",
            &a,
            "--model",
            &b,
            "--data",
            data.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--quiet",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("model broken:"));
    let c = rusqlite::Connection::open(&db).unwrap();
    let n: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM predictions WHERE model='good'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 12, "the finished model's predictions stay in the store");
}

#[test]
fn a_killed_run_resumes_without_recomputing_or_duplicating() {
    let minilm = root().join("assets/models/all-MiniLM-L6-v2");
    assert!(minilm.exists(), "run scripts/fetch-assets.sh");
    let dir = tempfile::tempdir().unwrap();
    // 600 reviews from the real corpus: enough batches to interrupt half-way.
    let corpus =
        std::fs::read_to_string(root().join("assets/data/rotten_tomatoes_binary.jsonl")).unwrap();
    let data = dir.path().join("rt.jsonl");
    std::fs::write(
        &data,
        corpus.lines().take(600).collect::<Vec<_>>().join("\n") + "\n",
    )
    .unwrap();
    let args = |db: &Path| -> Vec<String> {
        vec![
            "compare".into(),
            "--model".into(),
            format!("l6={}", minilm.display()),
            "--model".into(),
            format!("cls={}", tiny("tiny-bert-cls")),
            "--data".into(),
            data.display().to_string(),
            "--task".into(),
            "probe".into(),
            "--batch-size".into(),
            "4".into(),
            "--db".into(),
            db.display().to_string(),
            "--bootstrap".into(),
            "100".into(),
            "--permutations".into(),
            "100".into(),
            "--format".into(),
            "json".into(),
            "--quiet".into(),
        ]
    };
    let bin = assert_cmd::cargo::cargo_bin("lmcompare");
    let db = dir.path().join("interrupted.db");
    let mut child = std::process::Command::new(&bin)
        .args(args(&db))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until some batches are committed, then SIGKILL (no chance to clean up).
    let deadline = Instant::now() + Duration::from_secs(120);
    let count = |db: &Path| -> i64 {
        rusqlite::Connection::open(db)
            .and_then(|c| c.query_row("SELECT COUNT(*) FROM embeddings", [], |r| r.get(0)))
            .unwrap_or(0)
    };
    while count(&db) < 100 {
        assert!(Instant::now() < deadline, "no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be interrupted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let cached = count(&db);
    assert!((100..600).contains(&cached), "{cached}");

    let out = std::process::Command::new(&bin)
        .args(args(&db))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resumed: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Only the missing embeddings were computed (texts are unique in this corpus).
    let l6 = &resumed["models"][0];
    assert_eq!(l6["computed_examples"].as_i64().unwrap(), 600 - cached);
    assert_eq!(l6["reused_examples"].as_i64().unwrap(), cached);
    let c = rusqlite::Connection::open(&db).unwrap();
    let rows: i64 = c
        .query_row("SELECT COUNT(*) FROM embeddings", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1200, "600 texts × 2 models, no duplicates");
    let preds: i64 = c
        .query_row("SELECT COUNT(*) FROM predictions", [], |r| r.get(0))
        .unwrap();
    let test_n = resumed["dataset"]["evaluated_test_examples"]
        .as_i64()
        .unwrap();
    assert_eq!(preds, 2 * test_n);

    // Identical to an uninterrupted run.
    let fresh_db = dir.path().join("fresh.db");
    let out = std::process::Command::new(&bin)
        .args(args(&fresh_db))
        .output()
        .unwrap();
    let fresh: Value = serde_json::from_slice(&out.stdout).unwrap();
    for (a, b) in resumed["models"]
        .as_array()
        .unwrap()
        .iter()
        .zip(fresh["models"].as_array().unwrap())
    {
        assert_eq!(a["metrics"], b["metrics"]);
        assert_eq!(a["ci"], b["ci"]);
    }
}

#[test]
fn demo_runs_on_the_shipped_assets() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    let out = lmcompare()
        .current_dir(root())
        .args([
            "demo",
            "--db",
            db.to_str().unwrap(),
            "--limit",
            "80",
            "--format",
            "table",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["minilm-l6", "minilm-l6-int8", "minilm-l3", "gemma-270m"] {
        assert!(text.contains(name), "{text}");
    }
    assert!(text.contains("on f1_macro"), "{text}");
    // The picture beside the store: the comparison of all four, with its data embedded.
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    for name in ["minilm-l6-int8", "gemma-270m"] {
        assert!(html.contains(&format!("<td>{name}</td>")), "{name}");
    }
    assert!(html.contains("<section id=\"cost\">") && html.contains("id=\"lmcompare-report\""));
}

#[test]
fn one_model_is_evaluated_with_every_metric_and_no_pairwise_block() {
    // Evaluating one model is the most common job: compare takes a single --model.
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 60, true);
    let db = dir.path().join("one.db");
    let model = format!("roberta={}", tiny("tiny-roberta-cls"));
    let v = run_json(&[
        "compare",
        "--model",
        &model,
        "--data",
        data.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--bootstrap",
        "100",
    ]);
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 1);
    let m = &models[0];
    for key in ["accuracy", "f1_macro", "log_loss", "brier", "ece", "mcc"] {
        assert!(m["metrics"].get(key).is_some(), "{key}");
        assert!(m["ci"].get(key).is_some(), "{key} interval");
    }
    assert!(m["efficiency"]["flops_per_example"].as_f64().unwrap() > 0.0);
    assert_eq!(v["pairwise"].as_array().unwrap().len(), 0);
    assert_eq!(v["verdicts"].as_array().unwrap().len(), 0);
    assert_eq!(v["pareto"]["models"][0], "roberta");
    // The table and Markdown views render one model too.
    for format in ["table", "markdown"] {
        let out = lmcompare()
            .args([
                "report",
                "--db",
                db.to_str().unwrap(),
                "--run",
                "1",
                "--format",
                format,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("roberta"));
    }
}
