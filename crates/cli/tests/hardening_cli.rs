//! End-to-end tests of the bad-input classes of the hardening issue: broken models that give
//! non-finite outputs, label maps that do not fit the head, single-label data, truncation
//! counts, and messages that name what and where. Each runs the real binary on the committed
//! tiny checkpoints.

use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;
use common::{bad, copy_dir, json_of, lmcompare, root, tiny};

/// A copy of the tiny model `name` under `dir` with `value` written over the first element
/// of the F32 tensor `tensor` in its safetensors file.
fn poisoned(dir: &Path, name: &str, tensor: &str, value: f32) -> PathBuf {
    let out = dir.join(format!("{name}-poisoned"));
    copy_dir(Path::new(&tiny(name)), &out);
    let path = out.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let t = &header[tensor];
    assert_eq!(t["dtype"], "F32", "{tensor}");
    let start = 8 + n + t["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[start..start + 4].copy_from_slice(&value.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    out
}

fn reviews() -> String {
    root()
        .join("tests/fixtures/data/reviews.jsonl")
        .display()
        .to_string()
}

#[test]
fn non_finite_encoder_outputs_stop_the_run_naming_model_example_and_stage() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db").display().to_string();
    let nan = poisoned(
        dir.path(),
        "tiny-distilbert-cls",
        "distilbert.transformer.layer.1.attention.out_lin.bias",
        f32::NAN,
    );
    let good = format!("good={}", tiny("tiny-roberta-cls"));
    let broken = format!("broken={}", nan.display());
    for task in ["classify", "probe", "zero-shot"] {
        bad(
            &[
                "compare",
                "--model",
                &good,
                "--model",
                &broken,
                "--data",
                &reviews(),
                "--task",
                task,
                "--db",
                &db,
                "--quiet",
            ],
            "model broken produced NaN in layer 1 attention block on example `",
        );
    }
    bad(
        &[
            "predict",
            "--model",
            &nan.display().to_string(),
            "--text",
            "fine",
            "--text",
            "dull",
        ],
        "produced NaN in layer 1 attention block on text ",
    );
    bad(
        &[
            "embed",
            "--model",
            &nan.display().to_string(),
            "--text",
            "fine",
        ],
        "produced NaN in layer 1 attention block on text 1",
    );
    // An infinity in the classifier's weights: the body is fine, the head is not.
    let inf = poisoned(
        dir.path(),
        "tiny-bert-cls",
        "classifier.weight",
        f32::INFINITY,
    );
    bad(
        &[
            "predict",
            "--model",
            &inf.display().to_string(),
            "--text",
            "fine",
        ],
        "in the classification head on text 1",
    );
}

#[test]
fn non_finite_decoder_outputs_stop_the_run_naming_model_example_and_stage() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db").display().to_string();
    let nan = poisoned(
        dir.path(),
        "tiny-llama",
        "model.layers.1.mlp.down_proj.weight",
        f32::NAN,
    );
    let broken = format!("broken={}", nan.display());
    let good = format!("good={}", tiny("tiny-gpt2"));
    bad(
        &[
            "compare",
            "--model",
            &good,
            "--model",
            &broken,
            "--data",
            &reviews(),
            "--db",
            &db,
            "--quiet",
        ],
        "model broken produced NaN in layer 1 feed-forward block on example `",
    );
    bad(
        &[
            "compare",
            "--model",
            &good,
            "--model",
            &broken,
            "--data",
            &reviews(),
            "--db",
            &db,
            "--quiet",
            "--decoder-scoring",
            "generate",
            "--max-tokens",
            "3",
        ],
        "model broken produced NaN in layer 1 feed-forward block on example `",
    );
}

#[test]
fn an_id2label_that_does_not_fit_the_head_is_refused_with_both_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("three-names");
    copy_dir(Path::new(&tiny("tiny-distilbert-cls")), &m);
    let cfg = std::fs::read_to_string(m.join("config.json"))
        .unwrap()
        .replace(
            "\"1\": \"fresh\"",
            "\"1\": \"fresh\",\n    \"2\": \"mixed\"",
        );
    std::fs::write(m.join("config.json"), cfg).unwrap();
    bad(
        &[
            "predict",
            "--model",
            &m.display().to_string(),
            "--text",
            "fine",
        ],
        "id2label names 3 label(s) but the classification head in",
    );
}

#[test]
fn single_label_data_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("one.jsonl");
    std::fs::write(
        &data,
        (0..6)
            .map(|i| {
                format!("{{\"id\": \"r{i}\", \"text\": \"review {i}\", \"label\": \"fresh\"}}\n")
            })
            .collect::<String>(),
    )
    .unwrap();
    let db = dir.path().join("s.db").display().to_string();
    for model in [tiny("tiny-llama"), tiny("tiny-distilbert-cls")] {
        bad(
            &[
                "compare", "--model", &format!("m={model}"), "--data", data.to_str().unwrap(),
                "--db", &db, "--quiet",
            ],
            "every example has the label \"fresh\" (column `label`): a classification comparison needs at least two labels",
        );
    }
}

#[test]
fn circular_multiple_choice_does_not_depend_on_the_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let mc = dir.path().join("mc.jsonl");
    std::fs::write(
        &mc,
        [
            r#"{"id": "q1", "question": "Sky colour?", "choices": ["blue", "green"], "answer": 0}"#,
            r#"{"id": "q2", "question": "Two plus two?", "choices": ["three", "four", "five", "six"], "answer": 1}"#,
            r#"{"id": "q3", "question": "Fire is?", "choices": ["cold", "hot"], "answer": 1}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let runs: Vec<Value> = ["1", "2", "3"]
        .iter()
        .map(|b| {
            let db = dir.path().join(format!("s{b}.db")).display().to_string();
            json_of(&[
                "compare",
                "--model",
                &format!("l={}", tiny("tiny-llama")),
                "--data",
                mc.to_str().unwrap(),
                "--task",
                "multiple-choice",
                "--circular",
                "--template",
                "Question: {text}\n{choices}\nAnswer:",
                "--batch-size",
                b,
                "--db",
                &db,
                "--format",
                "json",
                "--quiet",
            ])
        })
        .collect();
    for r in &runs {
        let m = &r["models"][0];
        assert_eq!(m["multiple_choice"]["questions"], 3, "{m}");
        assert_eq!(
            m["multiple_choice"],
            runs[0]["models"][0]["multiple_choice"]
        );
        assert_eq!(r["excluded_examples"], runs[0]["excluded_examples"]);
    }
}

#[test]
fn kappa_keeps_its_reason_under_zero_division_nan() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.jsonl");
    std::fs::write(
        &p,
        "{\"id\": 1, \"label\": \"a\", \"prediction\": \"a\"}\n{\"id\": 2, \"label\": \"a\", \"prediction\": \"a\"}\n",
    )
    .unwrap();
    let v = json_of(&[
        "metrics",
        "--pred",
        p.to_str().unwrap(),
        "--bootstrap",
        "0",
        "--zero-division",
        "nan",
        "--format",
        "json",
    ]);
    let warnings = v["models"][0]["warnings"].to_string();
    assert!(
        warnings.contains("cohen_kappa: undefined: expected disagreement is 0"),
        "{warnings}"
    );
}

#[test]
fn long_inputs_are_bounded_by_max_length_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("long.jsonl");
    let long = "a gripping, overlong and tedious film ".repeat(40);
    std::fs::write(
        &data,
        (0..10)
            .map(|i| {
                let label = if i % 2 == 0 { "fresh" } else { "rotten" };
                let split = if i < 4 { "test" } else { "train" };
                let text = if i == 0 { long.as_str() } else { "short review" };
                serde_json::json!({"id": format!("r{i}"), "text": text, "label": label, "split": split})
                    .to_string()
                    + "\n"
            })
            .collect::<String>(),
    )
    .unwrap();
    let db = dir.path().join("s.db").display().to_string();
    let v = json_of(&[
        "compare",
        "--model",
        &format!("d={}", tiny("tiny-distilbert-cls")),
        "--model",
        &format!("l={}", tiny("tiny-llama")),
        "--data",
        data.to_str().unwrap(),
        "--max-length",
        "48",
        "--db",
        &db,
        "--format",
        "json",
        "--quiet",
    ]);
    for m in v["models"].as_array().unwrap() {
        assert_eq!(m["efficiency"]["truncated_contexts"], 1, "{}", m["name"]);
        let w = m["warnings"].to_string();
        assert!(
            w.contains("1 of 4 test texts") || w.contains("1 prompt context"),
            "{w}"
        );
        // The decoder never sees more than 48 positions: its longest request is bounded.
        assert!(m["efficiency"]["tokens_per_example"].as_f64().unwrap() <= 48.0 * 2.0);
    }
    let out = lmcompare()
        .args([
            "compare",
            "--model",
            &format!("d={}", tiny("tiny-distilbert-cls")),
            "--data",
            data.to_str().unwrap(),
            "--max-length",
            "48",
            "--db",
            &db,
            "--quiet",
            "--format",
            "table",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("warning (d): 1 of 4 test texts were longer than 48 tokens"),
        "{text}"
    );
}

#[test]
fn ids_of_the_wrong_type_are_named() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (id, needle)) in [
        (
            "1.5",
            "invalid type: floating point `1.5`, expected a string, an integer or a boolean",
        ),
        (
            "{}",
            "invalid type: map, expected a string, an integer or a boolean",
        ),
        ("null", "field `id` is missing or null"),
    ]
    .into_iter()
    .enumerate()
    {
        let p = dir.path().join(format!("p{i}.jsonl"));
        std::fs::write(
            &p,
            format!(
                "{{\"id\": \"a\", \"label\": \"x\", \"prediction\": \"x\"}}\n{{\"id\": {id}, \"label\": \"y\", \"prediction\": \"x\"}}\n"
            ),
        )
        .unwrap();
        bad(
            &["metrics", "--pred", p.to_str().unwrap()],
            &format!("p{i}.jsonl:2: "),
        );
        bad(&["metrics", "--pred", p.to_str().unwrap()], needle);
    }
}

#[test]
fn an_unreachable_server_is_named_by_the_name_the_user_gave() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = lmcompare()
        .args([
            "compare",
            "--model",
            &format!("srv=openai:http://127.0.0.1:{port}/v1#served-model"),
            "--data",
            &reviews(),
            "--db",
            &dir.path().join("s.db").display().to_string(),
            "--quiet",
            "--retries",
            "0",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.starts_with("error: model srv: "), "{err}");
    assert!(!err.contains("model served-model"), "{err}");
    assert!(err.contains("cannot connect"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn a_damaged_store_is_an_error_naming_what_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db").display().to_string();
    let args = [
        "compare",
        "--model",
        &format!("d={}", tiny("tiny-distilbert-cls")),
        "--data",
        &reviews(),
        "--db",
        &db,
        "--quiet",
        "--format",
        "json",
    ];
    json_of(&args);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("UPDATE runs SET result = '{\"models\": [' ", [])
        .unwrap();
    let out = lmcompare()
        .args(["report", "--run", "1", "--db", &db])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("the stored report of run 1 is not valid JSON"),
        "{err}"
    );
    conn.execute(
        "UPDATE predictions SET probabilities = 'not json' WHERE rowid = (SELECT min(rowid) FROM predictions)",
        [],
    )
    .unwrap();
    drop(conn);
    bad(&args, "are not a JSON list of numbers");
}

/// scikit-learn's `labels=` smaller than the labels present averages over the subset; the
/// committed scikit-learn fixture of that case is matched through the CLI.
#[test]
fn metrics_labels_subset_matches_scikit_learn() {
    let fixtures: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("crates/metrics/tests/fixtures/sklearn_cases.json"))
            .unwrap(),
    )
    .unwrap();
    let case = fixtures["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "explicit_labels_subset")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.jsonl");
    let rows: String = case["y_true"]
        .as_array()
        .unwrap()
        .iter()
        .zip(case["y_pred"].as_array().unwrap())
        .enumerate()
        .map(|(i, (g, y))| format!("{{\"id\": {i}, \"label\": {g}, \"prediction\": {y}}}\n"))
        .collect();
    std::fs::write(&p, rows).unwrap();
    let v = json_of(&[
        "metrics",
        "--pred",
        p.to_str().unwrap(),
        "--labels",
        "a,b",
        "--bootstrap",
        "0",
        "--format",
        "json",
    ]);
    let m = &v["models"][0];
    let mut checked = 0;
    for (key, want) in case["expected"].as_object().unwrap() {
        let Some(want) = want.as_f64() else { continue };
        let got = m["metrics"][key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing: {m}"));
        assert!(
            (got - want).abs() < 1e-9,
            "{key}: {got} vs scikit-learn {want}"
        );
        checked += 1;
    }
    assert!(checked >= 10, "{checked}");
    let warnings = m["warnings"].to_string();
    assert!(
        warnings.contains("3 example(s) have a gold label or prediction outside it (ids 1, 2, 5)"),
        "{warnings}"
    );
}

/// A second identical `compare` on a store whose run another live process holds waits for
/// it, says so, then reuses its stored work; a claim left by a dead process is taken over.
#[test]
fn a_run_claimed_by_another_process_is_waited_for_then_reused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db").display().to_string();
    let args = [
        "compare",
        "--model",
        &format!("d={}", tiny("tiny-distilbert-cls")),
        "--data",
        &reviews(),
        "--db",
        &db,
        "--quiet",
        "--format",
        "json",
    ];
    let first = json_of(&args);
    // Another process holds run 1: a child that lives for a second.
    let mut holder = std::process::Command::new("sleep")
        .arg("1")
        .spawn()
        .unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "INSERT INTO run_claims(run_id, pid, host, claimed) VALUES(1, ?1, ?2, 'now')",
        rusqlite::params![holder.id() as i64, host],
    )
    .unwrap();
    let reap = std::thread::spawn(move || holder.wait());
    let out = lmcompare().args(args).output().unwrap();
    reap.join().unwrap().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("note: run 1 is being computed by another lmcompare"),
        "{err}"
    );
    let second: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(second["models"][0]["computed_examples"], 0, "{second}");
    assert_eq!(
        second["models"][0]["metrics"],
        first["models"][0]["metrics"]
    );
    // A claim by a process that is gone is taken over without waiting.
    conn.execute(
        "INSERT OR REPLACE INTO run_claims(run_id, pid, host, claimed) VALUES(1, 999999999, ?1, 'then')",
        rusqlite::params![host],
    )
    .unwrap();
    let out = lmcompare().args(args).output().unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("being computed"));
    let claims: i64 = conn
        .query_row("SELECT count(*) FROM run_claims", [], |r| r.get(0))
        .unwrap();
    assert_eq!(claims, 0, "a finished run releases its claim");
}

/// Two cases from scikit-learn's own test suite (`test_classification.py`): recall over
/// `labels=[1, 3]` and Cohen's kappa ignoring a spurious label with `labels=[0, 1]`.
#[test]
fn metrics_labels_subset_matches_scikit_learns_own_tests() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, gold: &[u32], pred: &[u32]| {
        let p = dir.path().join(name);
        let rows: String = gold
            .iter()
            .zip(pred)
            .enumerate()
            .map(|(i, (g, y))| format!("{{\"id\": {i}, \"label\": {g}, \"prediction\": {y}}}\n"))
            .collect();
        std::fs::write(&p, rows).unwrap();
        p.display().to_string()
    };
    let metrics = |p: &str, labels: &str| {
        json_of(&[
            "metrics",
            "--pred",
            p,
            "--labels",
            labels,
            "--bootstrap",
            "0",
            "--format",
            "json",
        ])["models"][0]
            .clone()
    };
    // test_confusion_matrix_multiclass_subset_labels: recall_13.
    let m = metrics(&write("r.jsonl", &[1, 1, 2, 3], &[1, 3, 3, 3]), "1,3");
    let close = |key: &str, want: f64| {
        let got = m["metrics"][key].as_f64().unwrap();
        assert!((got - want).abs() < 1e-9, "{key}: {got} vs {want}");
    };
    close("recall_macro", (0.5 + 1.0) / 2.0);
    close("recall_weighted", (0.5 * 2.0 + 1.0) / 3.0);
    close("recall_micro", 2.0 / 3.0);
    // test_cohen_kappa: spurious label 2 ignored.
    let mut y1: Vec<u32> = [vec![0; 40], vec![1; 60]].concat();
    let mut y2: Vec<u32> = [vec![0; 20], vec![1; 20], vec![0; 10], vec![1; 50]].concat();
    y1.extend([2; 4]);
    y2.extend([2; 4]);
    let m = metrics(&write("k.jsonl", &y1, &y2), "0,1");
    let kappa = m["metrics"]["cohen_kappa"].as_f64().unwrap();
    assert!((kappa - 8.0 / 23.0).abs() < 1e-12, "{kappa}");
}

/// Exit 2, the option and the reason in the first line (clap adds a `--help` hint).
fn bad_option(args: &[&str], needle: &str) {
    let out = lmcompare().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    let first = err.lines().next().unwrap_or_default();
    assert!(first.contains(needle), "expected {needle:?} in {first:?}");
}

#[test]
fn numeric_options_are_checked_by_name() {
    let p = reviews();
    let m = format!("m={}", tiny("tiny-distilbert-cls"));
    bad_option(
        &["metrics", "--pred", &p, "--bootstrap", "-1"],
        "invalid value '-1' for '--bootstrap <BOOTSTRAP>': -1 is negative",
    );
    bad_option(
        &["compare", "--model", &m, "--data", &p, "--limit", "-3"],
        "'--limit <LIMIT>': -3 is negative",
    );
    bad_option(
        &["compare", "--model", &m, "--data", &p, "--limit", "0"],
        "'--limit <LIMIT>': 0 would do nothing",
    );
    bad_option(
        &[
            "predict",
            "--model",
            &tiny("tiny-distilbert-cls"),
            "--text",
            "x",
            "--batch-size",
            "0",
        ],
        "'--batch-size <BATCH_SIZE>': 0 would do nothing",
    );
    bad_option(
        &[
            "tokenize",
            "--model",
            &tiny("tiny-distilbert-cls"),
            "--text",
            "x",
            "--max-length",
            "1",
        ],
        "--max-length",
    );
    bad_option(
        &["metrics", "--pred", &p, "--bootstrap", "100000000"],
        "is more than 100000",
    );
}

#[test]
fn data_never_reaches_the_terminal_raw_and_every_reader_takes_bom_and_gzip() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    // JSON strings carry the escape sequences as \u001b (raw ones are not valid JSON).
    let rows = concat!(
        r#"{"id": "a\u001b[2J", "label": "x\u001b]0;pwn\u0007", "prediction": "x\u001b]0;pwn\u0007"}"#,
        "\n",
        r#"{"id": "b", "label": "<script>y", "prediction": "x\u001b]0;pwn\u0007"}"#,
        "\n"
    );
    let plain = dir.path().join("p.jsonl");
    std::fs::write(&plain, format!("\u{feff}{rows}")).unwrap();
    let gz = dir.path().join("p.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    enc.write_all(rows.as_bytes()).unwrap();
    enc.finish().unwrap();
    let mut outputs = Vec::new();
    for f in [&plain, &gz] {
        for format in ["table", "markdown", "json"] {
            let out = lmcompare()
                .args(["metrics", "--pred", f.to_str().unwrap(), "--bootstrap", "0"])
                .args(["--format", format])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            assert!(
                !text.chars().any(|c| c == '\u{1b}' || c == '\u{7}'),
                "{format}: a raw control character: {text:?}"
            );
            if format == "markdown" {
                assert!(!text.contains("<script>"), "{text}");
            }
            outputs.push((format, text));
        }
    }
    // The BOM file and the gzip file give the same report.
    let report = |i: usize| -> Value {
        let mut v: Value = serde_json::from_str(&outputs[i].1).unwrap();
        v["models"][0]["name"] = Value::Null;
        v
    };
    assert_eq!(report(2), report(5));
    assert!(outputs[0].1.contains("\\u001b"), "{}", outputs[0].1);
    // An error that quotes data escapes it too.
    let broken = dir.path().join("broken\u{1b}[31m.jsonl");
    std::fs::write(&broken, "{\"id\": 1}\n").unwrap();
    let out = lmcompare()
        .args(["metrics", "--pred", broken.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        !err.contains('\u{1b}') && err.contains("broken\\u001b[31m.jsonl"),
        "{err:?}"
    );
}
