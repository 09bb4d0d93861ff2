//! End-to-end tests of `lmcompare metrics` on the shipped examples and on bad input.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn lmcompare() -> Command {
    Command::cargo_bin("lmcompare").unwrap()
}

fn run_json(args: &[&str]) -> Value {
    let out = lmcompare()
        .args(args)
        .arg("--format")
        .arg("json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn compares_the_shipped_examples() {
    let a = examples().join("sentiment-large.jsonl");
    let b = examples().join("sentiment-small.jsonl");
    let v = run_json(&[
        "metrics",
        "--pred",
        a.to_str().unwrap(),
        "--pred",
        b.to_str().unwrap(),
        "--bootstrap",
        "200",
        "--permutations",
        "200",
    ]);
    let models = v["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[0]["name"], "sentiment-large");
    assert_eq!(models[0]["n"], 600);
    for key in [
        "accuracy",
        "balanced_accuracy",
        "precision_micro",
        "recall_micro",
        "f1_micro",
        "precision_macro",
        "recall_macro",
        "f1_macro",
        "precision_weighted",
        "recall_weighted",
        "f1_weighted",
        "mcc",
        "cohen_kappa",
        "log_loss",
        "brier",
        "ece",
        "roc_auc_ovr_macro",
        "roc_auc_ovr_weighted",
        "average_precision_macro",
    ] {
        let x = models[0]["metrics"][key].as_f64();
        assert!(x.is_some(), "missing metric {key}");
        let ci = &models[0]["ci"][key];
        let (lo, hi) = (ci["low"].as_f64().unwrap(), ci["high"].as_f64().unwrap());
        assert!(lo <= hi, "{key}");
    }
    let per_class = models[0]["per_class"].as_object().unwrap();
    assert_eq!(
        per_class.keys().collect::<Vec<_>>(),
        ["negative", "neutral", "positive"]
    );
    let support: u64 = per_class
        .values()
        .map(|c| c["support"].as_u64().unwrap())
        .sum();
    assert_eq!(support, 600);
    let cm = &models[0]["confusion_matrix"];
    assert_eq!(cm["labels"].as_array().unwrap().len(), 3);
    let total: u64 = cm["matrix"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|x| x.as_u64().unwrap())
        .sum();
    assert_eq!(total, 600);

    let pair = &v["pairwise"][0];
    assert_eq!(pair["a"], "sentiment-large");
    assert_eq!(pair["b"], "sentiment-small");
    assert_eq!(pair["metric"], "f1_macro");
    let delta = pair["delta"].as_f64().unwrap();
    let f1a = models[0]["metrics"]["f1_macro"].as_f64().unwrap();
    let f1b = models[1]["metrics"]["f1_macro"].as_f64().unwrap();
    assert!((delta - (f1a - f1b)).abs() < 1e-12);
    assert!(
        pair["ci_low"].as_f64().unwrap() > 0.0,
        "large is clearly better"
    );
    for key in ["mcnemar_p", "bootstrap_p", "permutation_p", "p_holm"] {
        let p = pair[key].as_f64().unwrap();
        assert!(p > 0.0 && p < 0.01, "{key} = {p}");
    }
    assert!(pair["verdict"]
        .as_str()
        .unwrap()
        .starts_with("sentiment-large beats sentiment-small on f1_macro by"));
    assert!(v["method"]["mcnemar"].as_str().unwrap().contains("exact"));
}

#[test]
fn csv_and_jsonl_give_the_same_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = write(
        dir.path(),
        "m.jsonl",
        concat!(
            r#"{"id": 1, "label": "a", "prediction": "a", "probabilities": {"a": 0.7, "b": 0.3}}"#,
            "\n",
            r#"{"id": 2, "label": "b", "prediction": "a", "probabilities": {"a": 0.6, "b": 0.4}}"#,
            "\n",
            r#"{"id": 3, "label": "b", "prediction": "b", "probabilities": {"a": 0.2, "b": 0.8}}"#,
            "\n",
            r#"{"id": 4, "label": "a", "prediction": "b", "probabilities": {"a": 0.45, "b": 0.55}}"#,
            "\n",
        ),
    );
    let csv = write(
        dir.path(),
        "m.csv",
        "id,label,prediction,p:a,p:b\n1,a,a,0.7,0.3\n2,b,a,0.6,0.4\n3,b,b,0.2,0.8\n4,a,b,0.45,0.55\n",
    );
    let tsv = write(
        dir.path(),
        "m.tsv",
        "id\tlabel\tprediction\tp:a\tp:b\n1\ta\ta\t0.7\t0.3\n2\tb\ta\t0.6\t0.4\n3\tb\tb\t0.2\t0.8\n4\ta\tb\t0.45\t0.55\n",
    );
    let get = |p: &Path| {
        run_json(&["metrics", "--pred", p.to_str().unwrap(), "--bootstrap", "0"])["models"][0]
            ["metrics"]
            .clone()
    };
    let a = get(&jsonl);
    assert_eq!(a, get(&csv));
    assert_eq!(a, get(&tsv));
    assert_eq!(a["accuracy"].as_f64().unwrap(), 0.5);
    // Binary: roc_auc of the greater label "b": positives (0.4, 0.8) vs negatives (0.3, 0.55).
    assert_eq!(a["roc_auc"].as_f64().unwrap(), 0.75);
}

#[test]
fn probability_metrics_are_absent_without_probabilities() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "p.jsonl",
        "{\"id\": \"x\", \"label\": \"né\", \"prediction\": \"né\"}\n{\"id\": \"y\", \"label\": \"😀\", \"prediction\": \"né\"}\n",
    );
    let v = run_json(&[
        "metrics",
        "--pred",
        f.to_str().unwrap(),
        "--bootstrap",
        "50",
    ]);
    let m = v["models"][0]["metrics"].as_object().unwrap();
    for key in ["log_loss", "brier", "ece", "roc_auc", "average_precision"] {
        assert!(!m.contains_key(key), "{key} must be absent, not null");
    }
    assert_eq!(v["models"][0]["labels"], serde_json::json!(["né", "😀"]));
    assert!(v["models"][0]["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().starts_with("precision_macro")));
}

#[test]
fn binary_metrics_need_a_valid_pos_label() {
    let a = examples().join("sentiment-large.jsonl");
    lmcompare()
        .args([
            "metrics",
            "--pred",
            a.to_str().unwrap(),
            "--pos-label",
            "positive",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("multi-class"));
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "b.jsonl",
        "{\"id\": 1, \"label\": \"yes\", \"prediction\": \"no\"}\n{\"id\": 2, \"label\": \"yes\", \"prediction\": \"yes\"}\n",
    );
    lmcompare()
        .args([
            "metrics",
            "--pred",
            f.to_str().unwrap(),
            "--pos-label",
            "maybe",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "pos_label=\"maybe\" is not a valid label",
        ));
    let v = run_json(&[
        "metrics",
        "--pred",
        f.to_str().unwrap(),
        "--pos-label",
        "yes",
        "--bootstrap",
        "0",
    ]);
    let m = &v["models"][0]["metrics"];
    assert_eq!(m["precision"].as_f64().unwrap(), 1.0);
    assert_eq!(m["recall"].as_f64().unwrap(), 0.5);
}

#[test]
fn table_and_markdown_render() {
    let a = examples().join("sentiment-large.jsonl");
    let b = examples().join("sentiment-small.jsonl");
    let args = [
        "metrics",
        "--pred",
        a.to_str().unwrap(),
        "--pred",
        b.to_str().unwrap(),
        "--name",
        "large",
        "--name",
        "small",
        "--bootstrap",
        "100",
        "--permutations",
        "100",
    ];
    lmcompare()
        .args(args)
        .args(["--format", "table"])
        .assert()
        .success()
        .stdout(predicate::str::contains("macro avg"))
        .stdout(predicate::str::contains("weighted avg"))
        .stdout(predicate::str::contains("large beats small on f1_macro"));
    lmcompare()
        .args(args)
        .args(["--format", "markdown"])
        .assert()
        .success()
        .stdout(predicate::str::contains("| `f1_macro` |"))
        .stdout(predicate::str::contains("## Paired comparison"));
}

/// Each bad input: exit 2 and one line naming the file (and line) at fault.
#[test]
fn bad_input_gives_one_clear_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = write(d, "good.jsonl", "{\"id\": 1, \"label\": \"a\", \"prediction\": \"a\"}\n{\"id\": 2, \"label\": \"b\", \"prediction\": \"a\"}\n");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![d.join("missing.jsonl").display().to_string()], "missing.jsonl: cannot read"),
        (vec![write(d, "empty.jsonl", "\n\n").display().to_string()], "empty.jsonl: the file is empty"),
        (
            vec![write(d, "malformed.jsonl", "{\"id\": 1, \"label\": \"a\", \"prediction\": \"a\"}\n{\"id\": 2, \"label\": \n").display().to_string()],
            "malformed.jsonl:2: not a valid JSON object",
        ),
        (
            vec![write(d, "nofield.jsonl", "{\"id\": 1, \"label\": \"a\"}\n").display().to_string()],
            "nofield.jsonl:1: field `prediction` is missing or null",
        ),
        (
            vec![write(d, "neg.jsonl", "{\"id\": 1, \"label\": \"a\", \"prediction\": \"a\", \"probabilities\": {\"a\": -0.1}}\n").display().to_string()],
            "neg.jsonl:1: probability of \"a\" is -0.1",
        ),
        (
            vec![write(d, "nan.jsonl", "{\"id\": 1, \"label\": \"a\", \"prediction\": \"a\", \"probabilities\": {\"a\": NaN}}\n").display().to_string()],
            "nan.jsonl:1: not a valid JSON object",
        ),
        (
            vec![write(d, "absent.jsonl", "{\"id\": 1, \"label\": \"a\", \"prediction\": \"b\", \"probabilities\": {\"a\": 0.9}}\n").display().to_string()],
            "absent.jsonl:1: no probability for the predicted label \"b\"",
        ),
        (
            vec![write(d, "unknown.jsonl", "{\"id\": 1, \"label\": \"a\", \"prediction\": \"a\", \"probabilities\": {\"a\": 0.9, \"z\": 0.1}}\n").display().to_string()],
            "unknown.jsonl:1: probability label \"z\" is not in the label set",
        ),
        (
            vec![write(d, "dup.jsonl", "{\"id\": 7, \"label\": \"a\", \"prediction\": \"a\"}\n{\"id\": 7, \"label\": \"a\", \"prediction\": \"a\"}\n").display().to_string()],
            "dup.jsonl: duplicate id(s): 7",
        ),
        (
            vec![good.display().to_string(), write(d, "other.jsonl", "{\"id\": 1, \"label\": \"a\", \"prediction\": \"a\"}\n{\"id\": 3, \"label\": \"b\", \"prediction\": \"a\"}\n").display().to_string()],
            "ids do not match the first file: 1 id(s) of",
        ),
        (
            vec![write(d, "nocol.csv", "id,gold,prediction\n1,a,a\n").display().to_string()],
            "nocol.csv: missing column `label` (columns: id, gold, prediction)",
        ),
    ];
    for (files, expected) in cases {
        let mut cmd = lmcompare();
        cmd.arg("metrics");
        for f in &files {
            cmd.args(["--pred", f]);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{expected}: {stderr}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr:?}"
        );
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(!stderr.contains("panicked"));
    }
}

#[test]
fn unknown_option_values_are_usage_errors() {
    let a = examples().join("sentiment-large.jsonl");
    for (flag, value) in [
        ("--metric", "f2"),
        ("--zero-division", "2"),
        ("--format", "pdf"),
        ("--correction", "bonferroni"),
    ] {
        lmcompare()
            .args(["metrics", "--pred", a.to_str().unwrap(), flag, value])
            .assert()
            .code(2);
    }
}
