//! `compare` against a generative model behind an OpenAI-compatible server. The server is
//! a real HTTP server on 127.0.0.1 started by the test: a small deterministic causal
//! "language model" (log-probabilities that depend only on the prefix) behind the
//! completions endpoint, which can inject faults — 429 with Retry-After, 500, answers slower
//! than the timeout, malformed JSON, dropped connections — on a seeded share of requests.

use std::net::TcpListener;
use std::sync::atomic::Ordering;

use serde_json::{json, Value};

mod common;
use common::toy_server::{logprob, serve, tokens, Behaviour};
use common::{bad, lmcompare};

fn dataset(dir: &std::path::Path, poison: bool) -> std::path::PathBuf {
    let mut s = String::new();
    for i in 0..30 {
        let good = i % 2 == 0;
        let mut text = format!("Review {i}: a {} film.", if good { "great" } else { "bad" });
        if i % 7 == 3 {
            text = format!("Review {i}: neither here nor there.");
        }
        if poison && i == 5 {
            text.push_str(" POISON");
        }
        let split = if i % 3 == 0 { "train" } else { "test" };
        s.push_str(&json!({"id": format!("r{i}"), "text": text, "label": if good {"fresh"} else {"rotten"}, "split": split}).to_string());
        s.push('\n');
    }
    let p = dir.join("reviews.jsonl");
    std::fs::write(&p, s).unwrap();
    p
}

fn compare(
    server: &str,
    data: &std::path::Path,
    db: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    lmcompare()
        .args([
            "compare",
            "--task",
            "classify",
            "--format",
            "json",
            "--quiet",
            "--bootstrap",
            "200",
            "--permutations",
            "200",
        ])
        .args([
            "--model",
            &format!("good=openai:{server}#toy-good"),
            "--model",
            &format!("weak=openai:{server}#toy-weak"),
        ])
        .args([
            "--data",
            data.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
        ])
        .args([
            "--template",
            "{text}\nSentiment:",
            "--verbalizer",
            "fresh= positive",
            "--verbalizer",
            "rotten= negative",
        ])
        .args([
            "--timeout",
            "0.5",
            "--backoff-ms",
            "10",
            "--concurrency",
            "4",
        ])
        .args(if extra.contains(&"--retries") {
            &[][..]
        } else {
            &["--retries", "8"][..]
        })
        .args(extra)
        .output()
        .unwrap()
}

fn json_of(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn faults_on_a_fifth_of_requests_change_nothing_and_reruns_send_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), false);
    let clean = serve(Behaviour::default(), 1);
    let faulty = serve(
        Behaviour {
            fault_rate: 0.2,
            ..Default::default()
        },
        7,
    );
    let a = json_of(&compare(&clean.url, &data, &dir.path().join("a.db"), &[]));
    let b = json_of(&compare(&faulty.url, &data, &dir.path().join("b.db"), &[]));
    assert!(
        faulty.state.faults.load(Ordering::SeqCst) >= 5,
        "faults were injected"
    );
    for doc in [&a, &b] {
        assert_eq!(doc["excluded_examples"]["count"], 0);
        assert_eq!(doc["dataset"]["evaluated_test_examples"], 20);
    }
    for i in 0..2 {
        assert_eq!(
            a["models"][i]["metrics"], b["models"][i]["metrics"],
            "model {i}"
        );
        assert_eq!(a["models"][i]["ci"], b["models"][i]["ci"]);
    }
    // The toy model that reads the cues is perfect on the cued reviews and the comparison
    // says it beats the guesser; probabilities are a softmax over label log-likelihoods.
    assert!(a["models"][0]["metrics"]["accuracy"].as_f64().unwrap() > 0.8);
    // Parameters come from the server's GET /models where it reports them.
    assert_eq!(a["models"][0]["efficiency"]["parameters"], 1234567);
    assert_eq!(a["models"][0]["efficiency"]["size_bytes"], 2469134);
    assert!(a["models"][1]["efficiency"]["parameters"].is_null());
    assert!(a["models"][0]["metrics"]["log_loss"].is_number());
    assert!(a["models"][0]["efficiency"]["latency_ms_p50"].is_number());
    // A rerun answers from the store: no request reaches the server.
    let before = clean.state.requests.load(Ordering::SeqCst);
    let again = json_of(&compare(&clean.url, &data, &dir.path().join("a.db"), &[]));
    assert_eq!(clean.state.requests.load(Ordering::SeqCst), before);
    assert_eq!(again["models"][0]["metrics"], a["models"][0]["metrics"]);
    assert_eq!(again["models"][0]["computed_examples"], 0);
}

#[test]
fn a_request_failing_past_its_retries_is_listed_excluded_and_retried_next_time() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), true);
    let server = serve(Behaviour::default(), 3);
    server.state.poison.store(true, Ordering::SeqCst);
    let db = dir.path().join("p.db");
    let first = json_of(&compare(&server.url, &data, &db, &["--retries", "2"]));
    assert_eq!(first["excluded_examples"]["count"], 1);
    assert_eq!(first["excluded_examples"]["examples"][0]["id"], "r5");
    assert!(first["excluded_examples"]["examples"][0]["errors"][0]
        .as_str()
        .unwrap()
        .contains("HTTP 500"));
    assert_eq!(first["dataset"]["evaluated_test_examples"], 19);
    assert_eq!(first["models"][0]["failed_examples"], 1);
    // The server recovers: the rerun sends only the failed example's requests (and the
    // capability probes), and scores all 20.
    server.state.poison.store(false, Ordering::SeqCst);
    let before = server.state.requests.load(Ordering::SeqCst);
    let second = json_of(&compare(&server.url, &data, &db, &[]));
    let sent = server.state.requests.load(Ordering::SeqCst) - before;
    assert_eq!(
        sent,
        2 * (2 + 2),
        "2 models × (2 labels + 2 probe requests)"
    );
    assert_eq!(second["excluded_examples"]["count"], 0);
    assert_eq!(second["dataset"]["evaluated_test_examples"], 20);
}

#[test]
fn servers_without_prompt_logprobs_and_bad_decoder_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), false);
    let d = data.to_str().unwrap().to_owned();
    let db = dir.path().join("x.db");
    let dbs = db.to_str().unwrap().to_owned();
    let mute = serve(
        Behaviour {
            no_prompt_logprobs: true,
            ..Default::default()
        },
        0,
    );
    let out = compare(&mute.url, &data, &db, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not return prompt log-probabilities"),
        "{err}"
    );
    let m = format!("a=openai:{}#toy-good", mute.url);
    let m2 = format!("b=openai:{}#toy-weak", mute.url);
    let base = [
        "compare", "--model", &m, "--model", &m2, "--data", &d, "--db", &dbs, "--quiet",
    ];
    bad(
        &[&base[..], &["--template", "Review:"]].concat(),
        "has no {text}",
    );
    bad(
        &[&base[..], &["--verbalizer", "fresh= good"]].concat(),
        "--verbalizer is missing for dataset label(s) rotten",
    );
    bad(
        &[
            "compare",
            "--model",
            "a=openai:localhost#x",
            "--model",
            &m2,
            "--data",
            &d,
            "--db",
            &dbs,
        ],
        "openai:http://HOST:PORT/v1#MODEL-ID",
    );
    // Nothing listens on this port: the message names the URL, exit 1 (not a usage error).
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let out = compare(&url, &data, &db, &["--retries", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&url), "{err}");
    assert!(!err.contains("panicked"));
}

fn questions(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let qs = [
        (
            "Which is a fruit? [apple]",
            vec!["car", "apple", "stone"],
            1,
        ),
        ("Which one swims? [fish]", vec!["fish", "brick", "lamp"], 0),
        (
            "Which is a colour? [green]",
            vec!["table", "cloud", "green"],
            2,
        ),
        ("Which is a metal? [iron]", vec!["bread", "iron", "wool"], 1),
        ("Which can fly? [eagle]", vec!["eagle", "whale", "rock"], 0),
        (
            "Which is a planet? [mars]",
            vec!["spoon", "river", "mars"],
            2,
        ),
    ];
    let mut s = String::new();
    for (i, (q, c, a)) in qs.iter().enumerate() {
        s.push_str(
            &json!({"id": format!("q{i}"), "question": q, "choices": c, "answer": a}).to_string(),
        );
        s.push('\n');
    }
    s.push_str(extra);
    let p = dir.join(format!("mc{}.jsonl", extra.len()));
    std::fs::write(&p, s).unwrap();
    p
}

fn multiple_choice(
    server: &str,
    models: [&str; 2],
    data: &std::path::Path,
    db: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    lmcompare()
        .args([
            "compare",
            "--task",
            "multiple-choice",
            "--format",
            "json",
            "--quiet",
            "--bootstrap",
            "100",
            "--permutations",
            "100",
        ])
        .args([
            "--model",
            &format!("a=openai:{server}#{}", models[0]),
            "--model",
            &format!("b=openai:{server}#{}", models[1]),
        ])
        .args([
            "--data",
            data.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--backoff-ms",
            "10",
        ])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn multiple_choice_reports_acc_acc_norm_acc_bytes_and_circular_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(Behaviour::default(), 5);
    let data = questions(dir.path(), "");
    let doc = json_of(&multiple_choice(
        &server.url,
        ["toy-good", "toy-weak"],
        &data,
        &dir.path().join("m.db"),
        &[],
    ));
    assert_eq!(doc["task"], "multiple-choice");
    assert_eq!(doc["dataset"]["labels"], json!(["A", "B", "C"]));
    assert_eq!(doc["models"][0]["metrics"]["accuracy"], 1.0);
    let mc = &doc["models"][0]["multiple_choice"];
    assert_eq!(mc["questions"], 6);
    assert_eq!(mc["acc"], 1.0);
    assert_eq!(mc["acc_norm"], 1.0);
    assert_eq!(mc["acc_bytes"], 1.0);
    assert!(mc["acc_circular"].is_null());
    assert!(doc["models"][1]["multiple_choice"]["acc"].as_f64().unwrap() < 1.0);
    // Choices listed in the prompt and answered by letter: a model that always says A is
    // right where the answer happens to be A, and never under every rotation.
    let listed = [
        "--template",
        "Question: {question}\n{choices}\nAnswer:",
        "--circular",
    ];
    let doc = json_of(&multiple_choice(
        &server.url,
        ["toy-good", "toy-biased"],
        &data,
        &dir.path().join("c.db"),
        &listed,
    ));
    assert_eq!(doc["models"][0]["multiple_choice"]["acc_circular"], 1.0);
    let biased = &doc["models"][1]["multiple_choice"];
    assert!(
        (biased["acc"].as_f64().unwrap() - 2.0 / 6.0).abs() < 1e-12,
        "{biased}"
    );
    assert_eq!(biased["acc_circular"], 0.0);
    // Bad input.
    let wrong = questions(
        dir.path(),
        "{\"id\": \"q9\", \"question\": \"x\", \"choices\": [\"a\", \"b\"], \"answer\": 2}\n",
    );
    let out = multiple_choice(
        &server.url,
        ["toy-good", "toy-weak"],
        &wrong,
        &dir.path().join("w.db"),
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("line 7: `answer` 2 is out of range for 2 choices"));
    let out = multiple_choice(
        &server.url,
        ["toy-good", "toy-weak"],
        &data,
        &dir.path().join("w.db"),
        &["--circular"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the template needs {choices}"));
}

#[test]
fn perplexity_scores_every_token_once_through_sliding_windows() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(
        Behaviour {
            fault_rate: 0.1,
            ..Default::default()
        },
        11,
    );
    let words = [
        "the", "film", "was", "long", "and", "quiet", "but", "never", "dull", "today",
    ];
    let long: Vec<&str> = (0..600)
        .map(|i| words[(i * 7 + i / 3) % words.len()])
        .collect();
    let docs = vec![
        "A short first paragraph about films.".to_owned(),
        long.join(" "),
        "Another paragraph, with commas; and émigré accents.".to_owned(),
        "The last one.".to_owned(),
    ];
    let path = dir.path().join("corpus.txt");
    std::fs::write(&path, docs.join("\n\n") + "\n").unwrap();
    let out = lmcompare()
        .args([
            "compare",
            "--task",
            "perplexity",
            "--format",
            "json",
            "--quiet",
            "--bootstrap",
            "200",
        ])
        .args([
            "--model",
            &format!("good=openai:{}#toy-good", server.url),
            "--model",
            &format!("weak=openai:{}#toy-weak", server.url),
        ])
        .args([
            "--data",
            path.to_str().unwrap(),
            "--db",
            dir.path().join("p.db").to_str().unwrap(),
        ])
        .args([
            "--window-chars",
            "800",
            "--context-chars",
            "200",
            "--timeout",
            "0.5",
            "--backoff-ms",
            "10",
            "--retries",
            "8",
        ])
        .output()
        .unwrap();
    let doc = json_of(&out);
    assert!(
        doc["dataset"]["windows"].as_u64().unwrap() >= 7,
        "the long paragraph is split"
    );
    // Independently: every token of every document but its first, scored once.
    for (m, model) in ["toy-good", "toy-weak"].iter().enumerate() {
        let (mut nll, mut scored, mut bytes) = (0.0, 0u64, 0u64);
        for d in &docs {
            for (t, off) in tokens(d).into_iter().skip(1) {
                let prefix: String = d.chars().take(off).collect();
                nll -= logprob(model, &prefix, &t);
                scored += 1;
                bytes += t.len() as u64;
            }
        }
        let p = &doc["models"][m]["perplexity"];
        assert_eq!(p["tokens"].as_u64().unwrap(), scored, "{model}");
        assert_eq!(p["bytes"].as_u64().unwrap(), bytes, "{model}");
        let bpb = nll / (std::f64::consts::LN_2 * bytes as f64);
        assert!(
            (p["bits_per_byte"].as_f64().unwrap() - bpb).abs() < 1e-9,
            "{model}"
        );
        assert!(
            ((p["token_perplexity"].as_f64().unwrap()) - (nll / scored as f64).exp()).abs() < 1e-9
        );
    }
    let pair = &doc["pairwise"][0];
    assert!(pair["delta_bits_per_byte"].as_f64().unwrap() < 0.0);
    assert!(pair["verdict"]
        .as_str()
        .unwrap()
        .starts_with("good models the text better than weak"));
}

#[test]
fn generation_through_chat_completions_survives_faults_and_is_cached() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(
        Behaviour {
            fault_rate: 0.2,
            ..Default::default()
        },
        11,
    );
    let data = dir.path().join("qa.jsonl");
    let words = [
        "apple", "river", "candle", "orbit", "meadow", "copper", "lantern", "harbor",
    ];
    std::fs::write(
        &data,
        words
            .iter()
            .enumerate()
            .map(|(i, w)| json!({"id": format!("q{i}"), "prompt": format!("Which word is in brackets: [{w}]?"), "answer": format!("the {w}")}).to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let db = dir.path().join("runs.db");
    let run = || {
        let out = lmcompare()
            .args([
                "compare",
                "--task",
                "generate",
                "--format",
                "json",
                "--quiet",
                "--backoff-ms",
                "20",
            ])
            .args(["--model", &format!("good=openai:{}#toy-good", server.url)])
            .args(["--model", &format!("weak=openai:{}#toy-weak", server.url)])
            .args([
                "--data",
                data.to_str().unwrap(),
                "--db",
                db.to_str().unwrap(),
            ])
            .args(["--timeout", "1"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let doc = run();
    let good = &doc["models"][0];
    assert_eq!(good["generate"]["exact_match"], 1.0, "{doc}");
    assert_eq!(good["answers"][0]["answer"], "The apple.");
    assert_eq!(doc["models"][1]["generate"]["exact_match"], 0.0);
    assert_eq!(doc["excluded_examples"]["count"], 0);
    assert!(doc["pairwise"][0]["verdict"]
        .as_str()
        .unwrap()
        .starts_with("good answers better"));
    let sent = server.state.requests.load(Ordering::SeqCst);
    let again = run();
    assert_eq!(
        server.state.requests.load(Ordering::SeqCst),
        sent,
        "a rerun sends nothing"
    );
    assert_eq!(again["models"][0]["generate"], good["generate"]);
}
