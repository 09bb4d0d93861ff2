//! End-to-end tests of `tune`: the JSON contract, saved models that `compare` loads, resumed
//! and extended searches, k-fold selection, pruning, diverging trials and bad input.

use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;
use common::{bad, lmcompare, tiny};

/// Reviews with train / validation / test splits (validation optional).
fn dataset(dir: &Path, n: usize, with_validation: bool) -> PathBuf {
    let words = [
        "gripping", "dull", "funny", "lifeless", "superb", "overlong", "charming", "tedious",
    ];
    let mut s = String::new();
    for i in 0..n {
        let label = ["fresh", "rotten", "mixed"][i % 3];
        let w = words[(i * 5 + i % 3) % words.len()];
        let split = match i % 5 {
            0 => "test",
            1 if with_validation => "validation",
            _ => "train",
        };
        let text = format!("review {i}: a {w} film, {label} overall");
        s.push_str(
            &serde_json::json!({"id": format!("r{i}"), "text": text, "label": label, "split": split})
                .to_string(),
        );
        s.push('\n');
    }
    let p = dir.join(if with_validation {
        "reviews.jsonl"
    } else {
        "reviews_noval.jsonl"
    });
    std::fs::write(&p, s).unwrap();
    p
}

/// `compare --task classify` on the saved bert/roberta/distil folders gives the tuned
/// models' test accuracy exactly and their log-loss within `tol`: the saved folders are the
/// models the search scored.
fn saved_models_reproduce(cmp: &Value, save: &Path, data: &Path, db: &Path, tol: f64) {
    let names = ["bert", "roberta", "distil"];
    let mut cmd = lmcompare();
    cmd.args([
        "compare", "--task", "classify", "--format", "json", "--quiet",
    ])
    .args(["--bootstrap", "0", "--permutations", "0"])
    .args([
        "--data",
        data.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
    ]);
    for name in names {
        cmd.args(["--model", &format!("{name}={}", save.join(name).display())]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    for (i, name) in names.iter().enumerate() {
        let tuned = &cmp["models"][2 * i + 1]["metrics"];
        let loaded = &again["models"][i]["metrics"];
        assert_eq!(again["models"][i]["name"], *name);
        assert_eq!(tuned["accuracy"], loaded["accuracy"], "{name}");
        let (a, b) = (
            tuned["log_loss"].as_f64().unwrap(),
            loaded["log_loss"].as_f64().unwrap(),
        );
        assert!((a - b).abs() < tol, "{name}: log-loss {a} vs {b}");
    }
}

fn tune_json(args: &[&str]) -> Value {
    let out = lmcompare()
        .arg("tune")
        .args(args)
        .args([
            "--format",
            "json",
            "--quiet",
            "--bootstrap",
            "100",
            "--permutations",
            "100",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn grid_search_reports_trials_best_and_comparison_and_saves_models_compare_can_load() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 90, true);
    let db = dir.path().join("t.db");
    let save = dir.path().join("tuned");
    let (bert, roberta, distil) = (
        format!("bert={}", tiny("tiny-bert-cls")),
        format!("roberta={}", tiny("tiny-roberta-cls")),
        format!("distil={}", tiny("tiny-distilbert-cls")),
    );
    let doc = tune_json(&[
        "--model",
        &bert,
        "--model",
        &roberta,
        "--model",
        &distil,
        "--data",
        data.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--save",
        save.to_str().unwrap(),
        "--search",
        "grid",
        "--space",
        "lr=[0.01,0.1];optimizer=[adam,sgd];epochs=4;batch_size=8",
        "--metric",
        "accuracy",
    ]);
    let trials = doc["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 12, "4 grid points × 3 models");
    let mut ids: Vec<u64> = trials.iter().map(|t| t["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..12).collect::<Vec<u64>>());
    for t in trials {
        assert!(t["config"]["lr"].is_number() && t["config"]["optimizer"].is_string());
        assert_eq!(t["status"], "done");
        let epochs = t["epochs"].as_array().unwrap();
        assert!(!epochs.is_empty() && epochs.len() <= 4);
        for (i, e) in epochs.iter().enumerate() {
            assert_eq!(e["epoch"].as_u64().unwrap() as usize, i + 1);
            assert!(e["train_loss"].as_f64().unwrap() > 0.0);
            let v = e["val_metric"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v));
            assert!(e["lr"].as_f64().unwrap() > 0.0);
        }
        let best_val = epochs
            .iter()
            .map(|e| e["val_metric"].as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        assert_eq!(
            t["metric"].as_f64().unwrap(),
            best_val,
            "metric is the best epoch's"
        );
    }
    // Sorted by the metric, best first.
    let metrics: Vec<f64> = trials
        .iter()
        .map(|t| t["metric"].as_f64().unwrap())
        .collect();
    assert!(metrics.windows(2).all(|w| w[0] >= w[1]));
    assert_eq!(doc["best"]["metric"].as_f64().unwrap(), metrics[0]);
    assert!(doc["best"]["config"].is_object() && doc["best"]["trial"].is_u64());
    assert_eq!(doc["search"]["selection"], "the validation split");

    let cmp = &doc["comparison"];
    let names: Vec<&str> = cmp["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "bert-untuned",
            "bert-tuned",
            "roberta-untuned",
            "roberta-tuned",
            "distil-untuned",
            "distil-tuned"
        ]
    );
    assert_eq!(cmp["pairwise"].as_array().unwrap().len(), 15);
    assert!(cmp["pairwise"][0]["p_holm"].is_number());
    assert_eq!(cmp["dataset"]["evaluated_test_examples"], 18);

    // The saved folders are HF classifiers: `compare --task classify` reproduces the tuned
    // models' test scores.
    for name in ["bert", "roberta", "distil"] {
        let cfg: Value = serde_json::from_str(
            &std::fs::read_to_string(save.join(name).join("config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(cfg["id2label"]["0"], "fresh");
        assert_eq!(cfg["label2id"]["rotten"], 2);
        assert!(cfg["architectures"][0]
            .as_str()
            .unwrap()
            .ends_with("ForSequenceClassification"));
        assert!(save.join(name).join("model.safetensors").exists());
    }
    saved_models_reproduce(cmp, &save, &data, &dir.path().join("c.db"), 1e-5);

    // The run is in the store and re-renders.
    let runs = lmcompare()
        .args(["runs", "--db", db.to_str().unwrap(), "--format", "json"])
        .output()
        .unwrap();
    let runs: Value = serde_json::from_slice(&runs.stdout).unwrap();
    let run = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["task"] == "tune")
        .unwrap();
    let md = lmcompare()
        .args([
            "report",
            "--db",
            db.to_str().unwrap(),
            "--run",
            &run["id"].to_string(),
            "--format",
            "markdown",
        ])
        .output()
        .unwrap();
    let md = String::from_utf8_lossy(&md.stdout);
    assert!(
        md.contains("## Trials") && md.contains("bert-tuned"),
        "{md}"
    );
}

#[test]
fn unfrozen_layers_train_and_save_models_the_native_runtime_reproduces() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 60, true);
    let save = dir.path().join("tuned");
    let models = [
        format!("bert={}", tiny("tiny-bert-cls")),
        format!("roberta={}", tiny("tiny-roberta-cls")),
        format!("distil={}", tiny("tiny-distilbert-cls")),
    ];
    for unfreeze in ["1", "all"] {
        let doc = tune_json(&[
            "--model",
            &models[0],
            "--model",
            &models[1],
            "--model",
            &models[2],
            "--data",
            data.to_str().unwrap(),
            "--db",
            dir.path().join("t.db").to_str().unwrap(),
            "--save",
            save.to_str().unwrap(),
            "--unfreeze",
            unfreeze,
            "--search",
            "grid",
            "--space",
            "lr=[0.003];optimizer=adamw;epochs=3;batch_size=8;dropout=0.1",
        ]);
        assert!(
            doc["search"]["trained"]
                .as_str()
                .unwrap()
                .contains("encoder layer"),
            "{}",
            doc["search"]["trained"]
        );
        let cmp = &doc["comparison"];
        // The tuned layers are saved: the native runtime (not candle) scores the saved
        // folders exactly as the trainer did.
        saved_models_reproduce(
            cmp,
            &save,
            &data,
            &dir.path().join(format!("c{unfreeze}.db")),
            1e-4,
        );
        // The encoder changed: the saved layer differs from the checkpoint's.
        let cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(save.join("bert/config.json")).unwrap())
                .unwrap();
        assert!(cfg["lmcompare"]["unfrozen_layers"].as_u64().unwrap() >= 1);
    }
}

#[test]
fn an_extended_search_reuses_finished_trials_and_chooses_the_same_configs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 60, true);
    let db = dir.path().join("t.db");
    let model = format!("m={}", tiny("tiny-bert-cls"));
    let args = |n: &'static str| -> Vec<String> {
        [
            "--model", &model, "--data", data.to_str().unwrap(), "--db", db.to_str().unwrap(),
            "--save", dir.path().join("tuned").to_str().unwrap(), "--search", "tpe", "--trials", n,
            "--space", "lr=log(1e-3,0.3);batch_size=[4,8];epochs=int(2,4);optimizer=[adam,adamw,sgd];scheduler=[constant,cosine,warmup_linear(0.2),plateau(0.5,1)]",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let by_trial = |doc: &Value| -> Vec<Value> {
        let mut t = doc["trials"].as_array().unwrap().clone();
        t.sort_by_key(|x| x["trial"].as_u64().unwrap());
        t
    };
    let a = args("12");
    let first = tune_json(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let b = args("14");
    let second = tune_json(&b.iter().map(String::as_str).collect::<Vec<_>>());
    let (t1, t2) = (by_trial(&first), by_trial(&second));
    assert_eq!(t1.len(), 12);
    assert_eq!(t2.len(), 14);
    // Stored trials come back as they were (wall time included: not rerun).
    assert_eq!(t1[..], t2[..12]);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM tune_trials", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 14);
    // A fresh store running 14 trials at once makes the same choices.
    let fresh = dir.path().join("fresh.db");
    let mut c = args("14");
    let i = c.iter().position(|s| s == "--db").unwrap();
    c[i + 1] = fresh.display().to_string();
    let third = tune_json(&c.iter().map(String::as_str).collect::<Vec<_>>());
    let t3 = by_trial(&third);
    for (x, y) in t2.iter().zip(&t3) {
        assert_eq!(x["config"], y["config"]);
        assert_eq!(x["metric"], y["metric"]);
        assert_eq!(x["epochs"], y["epochs"]);
    }
}

#[test]
fn without_a_validation_split_selection_is_k_fold_and_pruning_stops_trials() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 80, false);
    let doc = tune_json(&[
        "--model",
        &tiny("tiny-bert-cls"),
        "--data",
        data.to_str().unwrap(),
        "--db",
        dir.path().join("t.db").to_str().unwrap(),
        "--save",
        dir.path().join("s").to_str().unwrap(),
        "--folds",
        "3",
        "--search",
        "halving",
        "--trials",
        "10",
        "--patience",
        "0",
        "--space",
        "lr=log(1e-4,0.5);batch_size=[4,8];epochs=9;optimizer=[adam,sgd]",
    ]);
    assert!(doc["search"]["selection"]
        .as_str()
        .unwrap()
        .starts_with("3-fold"));
    assert!(doc["search"]["pruner"]
        .as_str()
        .unwrap()
        .starts_with("successive_halving"));
    let trials = doc["trials"].as_array().unwrap();
    let pruned: Vec<&Value> = trials.iter().filter(|t| t["status"] == "pruned").collect();
    assert!(!pruned.is_empty(), "halving prunes some of 10 trials");
    for t in &pruned {
        // Pruned only at a rung (1 or 3 epochs), never after the last epoch.
        let n = t["epochs"].as_array().unwrap().len();
        assert!(n == 1 || n == 3, "{t}");
    }
    assert!(trials
        .iter()
        .any(|t| t["status"] == "done" && t["epochs"].as_array().unwrap().len() == 9));
    assert_eq!(doc["best"]["model"], "tiny-bert-cls");
}

#[test]
fn a_diverging_trial_is_recorded_and_the_search_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 60, true);
    let doc = tune_json(&[
        "--model",
        &tiny("tiny-bert-cls"),
        "--data",
        data.to_str().unwrap(),
        "--db",
        dir.path().join("t.db").to_str().unwrap(),
        "--save",
        dir.path().join("s").to_str().unwrap(),
        "--search",
        "grid",
        "--space",
        "lr=[1e300,0.05];optimizer=sgd;epochs=3;batch_size=8",
    ]);
    let trials = doc["trials"].as_array().unwrap();
    let diverged = trials
        .iter()
        .find(|t| t["status"] == "diverged")
        .expect("lr=1e300 diverges");
    assert!(diverged["metric"].is_null());
    assert_eq!(diverged["config"]["lr"].as_f64().unwrap(), 1e300);
    assert!(diverged["epochs"][0]["train_loss"].is_null());
    assert_eq!(doc["best"]["config"]["lr"].as_f64().unwrap(), 0.05);
}

#[test]
fn bad_tune_inputs_give_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 40, true);
    let d = data.to_str().unwrap();
    let db = dir.path().join("t.db");
    let db = db.to_str().unwrap();
    let m = tiny("tiny-bert-cls");
    let run = |space: &str, needle: &str| {
        bad(
            &[
                "tune", "--model", &m, "--data", d, "--db", db, "--space", space, "--quiet",
            ],
            needle,
        )
    };
    run("lr=log(1e-5,1e-2;epochs=3", "unbalanced");
    run(
        "lr=[0.1,0];epochs=3",
        "in `lr=[0.1,0]`: lr = 0: a learning rate must be > 0",
    );
    run("lr=0.1;optimizer=[adam,lion]", "unknown optimizer `lion`");
    run(
        "lr=0.1;learning_rate=3",
        "unknown hyperparameter `learning_rate`",
    );
    run("lr=0.1;scheduler=step(x,0.1)", "in `scheduler=step(x,0.1)`");
    run(
        "lr=0.1;batch_size=[8,512]",
        "batch_size 512 is larger than the train split",
    );
    bad(
        &[
            "tune",
            "--model",
            &m,
            "--data",
            d,
            "--db",
            db,
            "--search",
            "grid",
            "--space",
            "lr=log(1e-4,1e-2)",
        ],
        "grid search needs a list of values",
    );
    let with_space = |extra: &[&str], needle: &str| {
        let mut a = vec!["tune", "--model", &m, "--data", d, "--db", db];
        a.extend_from_slice(&["--space", "lr=0.1;batch_size=8;epochs=1"]);
        a.extend_from_slice(extra);
        bad(&a, needle)
    };
    with_space(
        &["--unfreeze", "9"],
        "--unfreeze 9, but the model has 2 layers",
    );
    with_space(
        &["--unfreeze", "top"],
        "give 0 (head only), a number of top layers, or all",
    );
    bad(
        &[
            "tune",
            "--model",
            &m,
            "--data",
            d,
            "--db",
            db,
            "--baseline",
            "lr=[1e-3,1e-4]",
        ],
        "--baseline: `lr=[0.001,0.0001]` must be a single value",
    );
    // No test split to compare on.
    let only_train = dir.path().join("train.jsonl");
    std::fs::write(
        &only_train,
        "{\"id\":\"a\",\"text\":\"x\",\"label\":\"p\",\"split\":\"train\"}\n{\"id\":\"b\",\"text\":\"y\",\"label\":\"n\",\"split\":\"train\"}\n",
    )
    .unwrap();
    bad(
        &[
            "tune",
            "--model",
            &m,
            "--data",
            only_train.to_str().unwrap(),
            "--db",
            db,
        ],
        "the test split is empty",
    );
}

#[test]
fn a_killed_search_resumes_without_rerunning_finished_trials() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 90, true);
    let model = format!("m={}", tiny("tiny-bert-cls"));
    let args = |db: &Path| -> Vec<String> {
        [
            "tune",
            "--model",
            &model,
            "--data",
            data.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--save",
            dir.path().join("tuned").to_str().unwrap(),
            "--search",
            "random",
            "--trials",
            "40",
            "--patience",
            "0",
            "--format",
            "json",
            "--quiet",
            "--bootstrap",
            "50",
            "--permutations",
            "50",
            "--space",
            "lr=log(1e-3,0.1);batch_size=[2,4];epochs=int(80,120);optimizer=[adam,sgd]",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let db = dir.path().join("killed.db");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("lmcompare"))
        .args(args(&db))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let count = |db: &Path| -> i64 {
        rusqlite::Connection::open(db)
            .and_then(|c| c.query_row("SELECT COUNT(*) FROM tune_trials", [], |r| r.get(0)))
            .unwrap_or(0)
    };
    let start = Instant::now();
    while count(&db) < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no trials stored"
        );
        if child.try_wait().unwrap().is_some() {
            panic!("the search finished before it could be interrupted; make it longer");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before: Vec<(i64, String, f64)> = {
        let c = rusqlite::Connection::open(&db).unwrap();
        let mut s = c
            .prepare("SELECT trial, finished, wall_seconds FROM tune_trials ORDER BY trial")
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(|x| x.unwrap())
            .collect()
    };
    assert!(
        before.len() >= 3 && before.len() < 40,
        "{} trials before the kill",
        before.len()
    );
    let resumed = lmcompare().args(args(&db)).output().unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let resumed: Value = serde_json::from_slice(&resumed.stdout).unwrap();
    // The trials finished before the kill were not rerun: same rows, same timestamps.
    let c = rusqlite::Connection::open(&db).unwrap();
    for (trial, finished, wall) in &before {
        let (f, w): (String, f64) = c
            .query_row(
                "SELECT finished, wall_seconds FROM tune_trials WHERE trial=?1",
                [trial],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((&f, w), (finished, *wall), "trial {trial} was rerun");
    }
    assert_eq!(count(&db), 40);
    // And the result is the uninterrupted search's.
    let fresh = lmcompare()
        .args(args(&dir.path().join("fresh.db")))
        .output()
        .unwrap();
    let fresh: Value = serde_json::from_slice(&fresh.stdout).unwrap();
    let strip = |doc: &Value| -> Vec<(Value, Value, Value)> {
        let mut v: Vec<(Value, Value, Value)> = doc["trials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["trial"].clone(), t["config"].clone(), t["epochs"].clone()))
            .collect();
        v.sort_by_key(|t| t.0.as_u64());
        v
    };
    assert_eq!(strip(&resumed), strip(&fresh));
    assert_eq!(resumed["best"]["config"], fresh["best"]["config"]);
    assert_eq!(
        resumed["comparison"]["models"][1]["metrics"]["accuracy"],
        fresh["comparison"]["models"][1]["metrics"]["accuracy"]
    );
}
