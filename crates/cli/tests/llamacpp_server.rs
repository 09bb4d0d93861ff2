//! Local and remote scoring of the same model agree: the shipped Gemma 3 270M GGUF scored by
//! lmcompare's local decoder, and the same weights served by llama.cpp's OpenAI-compatible
//! server (llama-cpp-python[server], started here on 127.0.0.1), give the same predicted
//! labels and log-likelihoods within 0.05 nats; `compare` with both models runs end to end.
//!
//! The server gets the weights dequantised to F32 with an F32 KV cache
//! (`scripts/gen_gemma_f32_reference.py` writes that file): on the Q4_K_M file llama.cpp
//! also quantises activations to 8 bits, which alone moves its log-likelihoods by up to 0.79
//! nats (see `crates/engine/tests/gguf_gemma.rs`), so no client could agree with it to 0.05.
//!
//! Not part of `cargo test`: building llama-cpp-python takes ~25 minutes on 2 cores and its
//! server spends ~10 s per echo request on a 262k vocabulary. Run it with
//! `bash scripts/check-llamacpp-server.sh`, which prepares both and runs this test.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{lmcompare, root};
use lmcompare_engine::decoder::{Decoder, ScoreRequest};
use lmcompare_engine::remote::{ClientOptions, RemoteClient, RemoteSpec};
use serde_json::Value;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cache() -> PathBuf {
    std::env::var_os("LMCOMPARE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/lmcompare"))
}

#[test]
#[ignore = "needs llama-cpp-python[server] and the F32 Gemma GGUF: bash scripts/check-llamacpp-server.sh"]
fn local_and_llama_cpp_server_scores_of_gemma_agree() {
    let python = std::env::var_os("LMCOMPARE_LLAMACPP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache().join("venv-llamacpp/bin/python"));
    let f32_gguf = cache().join("tmp/gemma-3-270m-f32.gguf");
    assert!(python.exists(), "{} is missing", python.display());
    assert!(f32_gguf.exists(), "{} is missing", f32_gguf.display());
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Server(
        Command::new(&python)
            .args(["-m", "llama_cpp.server", "--model"])
            .arg(&f32_gguf)
            .args([
                "--model_alias",
                "gemma",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .args([
                "--logits_all",
                "true",
                "--type_k",
                "0",
                "--type_v",
                "0",
                "--n_ctx",
                "512",
            ])
            .args(["--n_threads", "2", "--verbose", "false"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}/v1");
    let started = Instant::now();
    while ureq_get(&format!("{base}/models")).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the server did not start"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let reviews = [
        "A gorgeous, witty, seductive movie.",
        "Dull, lifeless and far too long.",
        "The best film of the year, with a cast at the top of its game.",
        "A waste of a talented cast; the plot never makes sense.",
    ];
    // The served copy is F32: compare it with the local f32 path.
    let local = Decoder::load_with(
        &root().join("assets/models/gemma-3-270m-q4_k_m.gguf"),
        lmcompare_engine::decoder::LoadOptions { dequantize: true },
    )
    .unwrap();
    let client = RemoteClient::new(
        RemoteSpec::parse(&format!("openai:{base}#gemma"))
            .unwrap()
            .unwrap(),
        ClientOptions {
            timeout: Duration::from_secs(120),
            ..ClientOptions::default()
        },
    );
    client.probe_loglikelihood().unwrap();
    let mut worst = 0.0f64;
    for r in reviews {
        let prompt = format!("Review: {r}\nSentiment:");
        let mut l = Vec::new();
        let mut g = Vec::new();
        for v in [" positive", " negative"] {
            let (ctx, cont) = local.encode_pair(&prompt, v).unwrap();
            let (s, _) = local
                .score(&[ScoreRequest {
                    context: ctx,
                    continuations: vec![cont],
                }])
                .unwrap();
            l.push(s[0][0].sum());
            let answer = client
                .post("completions", &client.echo_request(&format!("{prompt}{v}")))
                .unwrap();
            let echo = RemoteClient::parse_echo(&answer).unwrap();
            let start = prompt.chars().count();
            let (sum, _) = echo.continuation(start, start + v.chars().count()).unwrap();
            g.push(sum);
        }
        for (a, b) in l.iter().zip(&g) {
            worst = worst.max((a - b).abs());
        }
        assert_eq!(
            l[0] > l[1],
            g[0] > g[1],
            "{r}: local and server disagree on the label"
        );
    }
    eprintln!("local vs llama.cpp server: max |Δ log-likelihood| = {worst:.4}");
    assert!(worst < 0.05, "max |Δ| = {worst}");

    // The whole path: both in one comparison, so the same predictions give the same metrics.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("reviews.jsonl");
    let rows: Vec<String> = reviews
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"id": i, "text": t, "label": if i % 2 == 0 {"fresh"} else {"rotten"}, "split": "test"})
                .to_string()
        })
        .collect();
    std::fs::write(&data, rows.join("\n")).unwrap();
    let out = lmcompare()
        .args([
            "compare",
            "--task",
            "classify",
            "--format",
            "json",
            "--quiet",
            "--timeout",
            "120",
        ])
        .args([
            "--model",
            &format!(
                "local=dequantize:{}",
                root()
                    .join("assets/models/gemma-3-270m-q4_k_m.gguf")
                    .display()
            ),
        ])
        .args(["--model", &format!("server=openai:{base}#gemma")])
        .args(["--template", "Review: {text}\nSentiment:"])
        .args([
            "--verbalizer",
            "fresh= positive",
            "--verbalizer",
            "rotten= negative",
        ])
        .args([
            "--data",
            data.to_str().unwrap(),
            "--db",
            dir.path().join("r.db").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["models"][0]["confusion_matrix"],
        doc["models"][1]["confusion_matrix"]
    );
}

fn ureq_get(url: &str) -> Result<(), String> {
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or("")
        .to_owned();
    let mut s = std::net::TcpStream::connect(&addr).map_err(|e| e.to_string())?;
    use std::io::{Read, Write};
    let path = &url[url.find(&addr).unwrap_or(0) + addr.len()..];
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).map_err(|e| e.to_string())?;
    if buf.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(buf.lines().next().unwrap_or("").to_owned())
    }
}
