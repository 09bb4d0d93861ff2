//! End-to-end tests of the store as a leaderboard: `leaderboard` gathers runs without
//! running a model and equals one `compare` of all the models; `compare` reuses what earlier
//! runs scored; `export` (and `compare --log-samples`) files rescore to the run's numbers;
//! `runs` filters and deletes; a store written by an earlier lmcompare still reads.

use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;
use common::{bad, copy_dir, json_of, lmcompare, root, tiny};

/// Reviews whose words only partly give the label away, so tiny models differ.
fn reviews(dir: &Path) -> PathBuf {
    let words = [
        "gripping", "dull", "funny", "lifeless", "superb", "overlong", "charming", "tedious",
    ];
    let mut s = String::new();
    for i in 0..120 {
        let good = i % 2 == 0;
        // Every third review uses a word of the other side.
        let w = words[(i * 3 + usize::from(good ^ (i % 3 == 0))) % words.len()];
        let label = if good { "fresh" } else { "rotten" };
        let split = if i % 4 == 0 { "test" } else { "train" };
        let text = format!(
            "review {i}: a {w} film with {} scenes",
            ["long", "short", "odd"][i % 3]
        );
        s.push_str(&serde_json::json!({"id": format!("r{i:03}"), "text": text, "label": label, "split": split}).to_string());
        s.push('\n');
    }
    let p = dir.join("reviews.jsonl");
    std::fs::write(&p, s).unwrap();
    p
}

fn compare(db: &Path, data: &Path, models: &[String], extra: &[&str]) -> Value {
    let mut args: Vec<String> = vec!["compare".into(), "--task".into(), "probe".into()];
    for m in models {
        args.extend(["--model".into(), m.clone()]);
    }
    args.extend([
        "--data".into(),
        data.display().to_string(),
        "--db".into(),
        db.display().to_string(),
        "--quiet".into(),
        "--format".into(),
        "json".into(),
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    json_of(&refs)
}

fn refs(a: &[String]) -> Vec<&str> {
    a.iter().map(String::as_str).collect()
}

fn close(a: &Value, b: &Value, what: &str) {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => assert!((x - y).abs() <= 1e-12, "{what}: {x} vs {y}"),
        _ => assert_eq!(a, b, "{what}"),
    }
}

/// The paired tests and every metric of two comparison documents, to 1e-12.
fn same_numbers(a: &Value, b: &Value) {
    let (ma, mb) = (
        a["models"].as_array().unwrap(),
        b["models"].as_array().unwrap(),
    );
    assert_eq!(ma.len(), mb.len());
    for (x, y) in ma.iter().zip(mb) {
        assert_eq!(x["name"], y["name"]);
        for (k, v) in x["metrics"].as_object().unwrap() {
            close(v, &y["metrics"][k], &format!("{} {k}", x["name"]));
            close(
                &x["ci"][k]["low"],
                &y["ci"][k]["low"],
                &format!("{} ci {k}", x["name"]),
            );
            close(
                &x["ci"][k]["high"],
                &y["ci"][k]["high"],
                &format!("{} ci {k}", x["name"]),
            );
        }
    }
    let (pa, pb) = (
        a["pairwise"].as_array().unwrap(),
        b["pairwise"].as_array().unwrap(),
    );
    assert_eq!(pa.len(), pb.len());
    for (x, y) in pa.iter().zip(pb) {
        assert_eq!((&x["a"], &x["b"]), (&y["a"], &y["b"]));
        for k in [
            "delta",
            "ci_low",
            "ci_high",
            "mcnemar_p",
            "bootstrap_p",
            "permutation_p",
            "p_holm",
            "p_adjusted",
        ] {
            close(&x[k], &y[k], &format!("{} vs {} {k}", x["a"], x["b"]));
        }
        assert_eq!(x["verdict"], y["verdict"]);
    }
}

#[test]
fn the_leaderboard_of_three_runs_equals_one_compare_of_all_models_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = reviews(dir.path());
    let db = dir.path().join("s.db");
    // Copies of the models, removed before the leaderboard: it cannot load them.
    let mut specs = Vec::new();
    for (name, fixture) in [
        ("A", "tiny-bert-base"),
        ("B", "tiny-roberta-cls"),
        ("C", "tiny-distilbert-cls"),
    ] {
        let to = dir.path().join("models").join(fixture);
        copy_dir(&root().join("tests/fixtures/models").join(fixture), &to);
        specs.push(format!("{name}={}", to.display()));
    }
    let main = ["--max-length", "8"];
    compare(&db, &data, &specs[..2], &main);
    compare(&db, &data, &specs[2..], &main);
    compare(&db, &data, &specs[1..], &["--max-length", "6"]);
    std::fs::remove_dir_all(dir.path().join("models")).unwrap();

    let args = |extra: &[&str]| {
        let mut a = vec![
            "leaderboard".to_owned(),
            "--data".into(),
            data.display().to_string(),
            "--db".into(),
            db.display().to_string(),
            "--format".into(),
            "json".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let all = args(&[]);
    let lb = json_of(&refs(&all));
    let groups = lb["groups"].as_array().unwrap();
    assert_eq!(
        groups.len(),
        2,
        "the run under other settings is its own group"
    );
    let g1 = &groups[0];
    assert_eq!(g1["runs"], serde_json::json!([1, 2]));
    assert_eq!(g1["differs"]["max_length"], 8);
    assert_eq!(groups[1]["runs"], serde_json::json!([3]));
    assert_eq!(groups[1]["differs"]["max_length"], 6);
    let names: Vec<&str> = g1["comparison"]["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["A", "B", "C"]);
    let ranked = g1["ranking"].as_array().unwrap();
    assert_eq!(ranked.len(), 3);
    let shares: f64 = ranked.iter().map(|r| r["p_best"].as_f64().unwrap()).sum();
    assert!((shares - 1.0).abs() < 1e-9, "P(best) sums to one: {shares}");
    for w in ranked.windows(2) {
        assert!(
            w[0]["metric"].as_f64() >= w[1]["metric"].as_f64(),
            "ranked by the metric"
        );
    }
    for r in ranked {
        assert_eq!(r["stored_examples"], 30);
        assert!(r["mean_rank"].as_f64().unwrap() >= 1.0);
    }
    assert!(
        g1["comparison"]["models"][0]["efficiency"]["flops_per_example"]
            .as_f64()
            .is_some_and(|f| f > 0.0)
    );

    // One compare of all three, in a store of its own: the same numbers to 1e-12.
    let fixtures: Vec<String> = [
        ("A", "tiny-bert-base"),
        ("B", "tiny-roberta-cls"),
        ("C", "tiny-distilbert-cls"),
    ]
    .iter()
    .map(|(n, f)| format!("{n}={}", tiny(f)))
    .collect();
    let reference = compare(&dir.path().join("ref.db"), &data, &fixtures, &main);
    same_numbers(&g1["comparison"], &reference);

    // The same compare on the first store computes nothing: every prediction is reused.
    let again = compare(&db, &data, &fixtures, &main);
    for m in again["models"].as_array().unwrap() {
        assert_eq!(m["computed_examples"], 0, "{}", m["name"]);
        // (A probe counts the texts it embeds, train and test; none is embedded now.)
        assert!(
            m["reused_examples"].as_u64().unwrap() >= 30,
            "{}",
            m["name"]
        );
        assert!(!m["reused_from_runs"].as_array().unwrap().is_empty());
    }
    same_numbers(&again, &reference);
    // Its cost is the one the runs that computed the predictions measured, as the
    // leaderboard reports it (this compare ran no inference to measure).
    for (m, l) in again["models"]
        .as_array()
        .unwrap()
        .iter()
        .zip(g1["comparison"]["models"].as_array().unwrap())
    {
        assert_eq!(m["efficiency"], l["efficiency"], "{}", m["name"]);
    }

    // --group, --one-group, the table and the HTML.
    let second = json_of(&refs(&args(&["--group", "2"])));
    assert_eq!(second["groups"].as_array().unwrap().len(), 1);
    assert_eq!(second["groups"][0]["group"], 2);
    let mut one = args(&["--one-group"]);
    one.retain(|a| a != "json" && a != "--format");
    bad(&refs(&one), "different settings, which are never pooled");
    let table = lmcompare()
        .args(
            refs(&args(&[]))
                .iter()
                .map(|a| if *a == "json" { "table" } else { a }),
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("P(best)") && text.contains("group 2"),
        "{text}"
    );
    let html_dir = dir.path().join("html");
    let out = lmcompare()
        .args(refs(&args(&["--out", html_dir.to_str().unwrap()])))
        .output()
        .unwrap();
    assert!(out.status.success());
    let html = std::fs::read_to_string(html_dir.join("leaderboard.html")).unwrap();
    assert!(html.contains("Leaderboard") && html.contains("P(best)"));
}

#[test]
fn export_files_rescore_to_the_runs_numbers_and_log_every_sample() {
    let dir = tempfile::tempdir().unwrap();
    let data = reviews(dir.path());
    let db = dir.path().join("s.db");
    let logs = dir.path().join("logs");
    let models = [
        format!("A={}", tiny("tiny-bert-base")),
        format!("B={}", tiny("tiny-roberta-cls")),
        format!("llama={}", tiny("tiny-llama")),
    ];
    let run = compare(
        &db,
        &data,
        &models,
        &[
            "--max-length",
            "8",
            "--log-samples",
            logs.to_str().unwrap(),
            "--bootstrap",
            "300",
            "--permutations",
            "300",
        ],
    );
    let protocol = &run["run"]["protocol"];
    assert!(protocol["decoders"]["beginning_of_sequence"]
        .as_str()
        .unwrap()
        .contains("empty string"));
    assert_eq!(protocol["decoders"]["template"], "{text}\nAnswer:");
    assert!(protocol["seeds"]["split"].is_string());

    let out = dir.path().join("export");
    let st = lmcompare()
        .args([
            "export",
            "--run",
            "1",
            "--db",
            db.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    for name in ["A", "B", "llama"] {
        let a = std::fs::read_to_string(out.join(format!("predictions-{name}.jsonl"))).unwrap();
        let b = std::fs::read_to_string(logs.join(format!("predictions-{name}.jsonl"))).unwrap();
        assert_eq!(a, b, "--log-samples writes what export writes");
        assert_eq!(a.lines().count(), 30);
    }
    let header: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(
        header["dataset"]["labels"],
        serde_json::json!(["fresh", "rotten"])
    );
    assert!(header["protocol"]["decoders"].is_object());
    // The rescore command the header gives reproduces the run's metrics and tests.
    let mut rescore: Vec<String> = header["rescore"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(rescore[..2], ["lmcompare", "metrics"]);
    rescore.extend(["--format".into(), "json".into()]);
    let refs: Vec<&str> = rescore[1..].iter().map(String::as_str).collect();
    let rescored = json_of(&refs);
    same_numbers(&rescored, &run);

    // The decoder's samples: the prompt as sent, each label's log-likelihood and tokens.
    let samples = std::fs::read_to_string(out.join("samples-llama.jsonl")).unwrap();
    let first: Value = serde_json::from_str(samples.lines().next().unwrap()).unwrap();
    assert_eq!(first["id"], "r000");
    assert!(first["prompts"][0]
        .as_str()
        .unwrap()
        .ends_with("scenes\nAnswer:"));
    let conts = first["continuations"].as_array().unwrap();
    assert_eq!(conts.len(), 2);
    for c in conts {
        assert!(c["loglik"].as_f64().unwrap() < 0.0);
        assert!(c["tokens"].as_u64().unwrap() >= 1);
        assert!(c["continuation"].as_str().unwrap().starts_with(' '));
    }
    // --max-length 8 bounds the decoder too: the prompt lost tokens from the left.
    assert_eq!(first["truncated_contexts"], 1);
    // Context + continuation - 1 tokens fit the 8 positions (the last token is never fed).
    assert!(conts.iter().all(|c| c["total_tokens"].as_u64() == Some(9)));
    assert!(first["correct"].is_boolean() && first["gold"] == "fresh");
    // The encoders' samples: tokens seen and whether the text was cut.
    let enc: Value = serde_json::from_str(
        std::fs::read_to_string(out.join("samples-A.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (enc["tokens"].as_u64(), enc["truncated"].as_bool()),
        (Some(8), Some(true))
    );

    // Bad input: one clear line, exit 2.
    let dbs = db.to_str().unwrap();
    bad(&["export", "--run", "7", "--db", dbs], "no run 7");
    bad(
        &["export", "--run", "1", "--model", "zzz", "--db", dbs],
        "has no model of that name (it has A, B, llama)",
    );
}

#[test]
fn runs_filters_by_data_and_model_and_deletes_what_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let data = reviews(dir.path());
    let other = dir.path().join("other.jsonl");
    std::fs::copy(root().join("tests/fixtures/data/reviews.jsonl"), &other).unwrap();
    let db = dir.path().join("s.db");
    let roberta = tiny("tiny-roberta-cls");
    compare(&db, &data, &[format!("r={roberta}")], &[]);
    compare(&db, &other, &[format!("b={}", tiny("tiny-bert-base"))], &[]);
    let dbs = db.to_str().unwrap();
    let list = |extra: &[&str]| {
        let mut a = vec!["runs", "--db", dbs, "--format", "json"];
        a.extend(extra);
        json_of(&a)
    };
    assert_eq!(list(&[]).as_array().unwrap().len(), 2);
    let by_data = list(&["--data", data.to_str().unwrap()]);
    assert_eq!(by_data.as_array().unwrap().len(), 1);
    assert_eq!(by_data[0]["id"], 1);
    assert_eq!(by_data[0]["predictions"], 30);
    // By name, by spec (a path, compared as a path) and by hash prefix.
    assert_eq!(list(&["--model", "b"])[0]["id"], 2);
    let via_dots = format!("{}/../tiny-roberta-cls", roberta);
    assert_eq!(list(&["--model", &via_dots])[0]["id"], 1);
    let hash = by_data[0]["models"][0]["content_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(list(&["--model", &hash[..10]])[0]["id"], 1);
    assert!(list(&["--model", "nobody"]).as_array().unwrap().is_empty());

    let deleted = json_of(&["runs", "--delete", "1", "--db", dbs, "--format", "json"]);
    assert_eq!(deleted["predictions"], 30);
    assert_eq!(deleted["sample_logs"], 30);
    assert_eq!(list(&[]).as_array().unwrap().len(), 1);
    bad(&["runs", "--delete", "1", "--db", dbs], "no run 1");
    // The dataset of the deleted run is no longer ranked: the message lists what is.
    bad(
        &["leaderboard", "--data", data.to_str().unwrap(), "--db", dbs],
        "was never scored by compare",
    );
    bad(
        &["leaderboard", "--data", data.to_str().unwrap(), "--db", dbs],
        "other.jsonl",
    );
}

#[test]
fn a_store_written_before_the_leaderboard_is_upgraded_ranked_and_exported() {
    let dir = tempfile::tempdir().unwrap();
    // Written by lmcompare at commit b6b1986 (schema 2): see tests/fixtures/stores/README.md.
    let db = dir.path().join("old.db");
    std::fs::copy(root().join("tests/fixtures/stores/schema2.db"), &db).unwrap();
    let dbs = db.to_str().unwrap();
    let data = root().join("tests/fixtures/data/reviews.jsonl");
    let out = lmcompare()
        .args([
            "leaderboard",
            "--data",
            data.to_str().unwrap(),
            "--db",
            dbs,
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("upgraded to 3"), "{err}");
    let lb: Value = serde_json::from_slice(&out.stdout).unwrap();
    let g = &lb["groups"][0];
    assert_eq!(g["runs"], serde_json::json!([1, 2]));
    let mut names: Vec<&str> = g["ranking"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["model"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["distil", "roberta"]);
    // Its predictions export; the gold labels come from the data file (checked by hash),
    // given with --data as the store holds the path the run was started from.
    let x = dir.path().join("x");
    let e = lmcompare()
        .args([
            "export",
            "--run",
            "1",
            "--db",
            dbs,
            "--data",
            data.to_str().unwrap(),
            "--out",
            x.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let header: Value =
        serde_json::from_str(&std::fs::read_to_string(x.join("run.json")).unwrap()).unwrap();
    let mut rescore: Vec<String> = header["rescore"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    rescore.extend(["--format".into(), "json".into()]);
    let refs: Vec<&str> = rescore[1..].iter().map(String::as_str).collect();
    let stored = json_of(&["report", "--run", "1", "--db", dbs, "--format", "json"]);
    same_numbers(&json_of(&refs), &stored);
    // Another file is refused by hash.
    bad(
        &[
            "export",
            "--run",
            "1",
            "--db",
            dbs,
            "--data",
            root()
                .join("tests/fixtures/data/reviews.tsv")
                .to_str()
                .unwrap(),
            "--out",
            x.to_str().unwrap(),
        ],
        "give the run's data file with --data FILE",
    );
    // A store of a newer schema than this lmcompare reads is refused.
    let newer = dir.path().join("newer.db");
    std::fs::copy(root().join("tests/fixtures/stores/schema2.db"), &newer).unwrap();
    rusqlite::Connection::open(&newer)
        .unwrap()
        .execute_batch("UPDATE meta SET value='99' WHERE key='schema_version'")
        .unwrap();
    bad(
        &[
            "leaderboard",
            "--data",
            data.to_str().unwrap(),
            "--db",
            newer.to_str().unwrap(),
        ],
        "newer lmcompare",
    );
}

#[test]
fn models_with_no_common_examples_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = reviews(dir.path());
    let db = dir.path().join("s.db");
    compare(&db, &data, &[format!("A={}", tiny("tiny-bert-base"))], &[]);
    compare(
        &db,
        &data,
        &[format!("B={}", tiny("tiny-roberta-cls"))],
        &[],
    );
    // As if each run had been stopped after a different half of the test examples.
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "DELETE FROM predictions WHERE run_id = 1 AND example_id < 'r060';
         DELETE FROM predictions WHERE run_id = 2 AND example_id >= 'r060';",
    )
    .unwrap();
    drop(c);
    bad(
        &[
            "leaderboard",
            "--data",
            data.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
        ],
        "the models have no test example in common (A has 15, B has 15)",
    );
}
