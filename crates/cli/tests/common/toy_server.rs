//! A real HTTP server on 127.0.0.1 speaking the OpenAI completions and chat API: a small
//! deterministic causal "language model" (log-probabilities that depend only on the prefix)
//! which can inject faults — 429 with Retry-After, 500, answers slower than the timeout,
//! malformed JSON, dropped connections — on a seeded share of requests. Shared by the
//! remote-model tests and by `examples/toy_openai_server.rs` (which `scripts/report-diff.sh`
//! runs), so both see the same server.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

#[derive(Default)]
pub struct Behaviour {
    /// Share of requests that get a fault.
    pub fault_rate: f64,
    /// Requests whose prompt contains POISON always fail with 500.
    pub poison: AtomicBool,
    /// Answer with log-probabilities for generated tokens only (as llama.cpp's server does).
    pub no_prompt_logprobs: bool,
    pub requests: AtomicUsize,
    pub faults: AtomicUsize,
}

pub struct Server {
    pub url: String,
    pub state: Arc<Behaviour>,
}

pub fn tokens(text: &str) -> Vec<(String, usize)> {
    // Words with their leading space, newlines on their own; offsets in characters.
    let mut out: Vec<(String, usize)> = Vec::new();
    for (i, c) in text.chars().enumerate() {
        let start_new =
            out.is_empty() || c == ' ' || c == '\n' || out.last().is_some_and(|t| t.0 == "\n");
        if start_new {
            out.push((c.to_string(), i));
        } else if let Some(t) = out.last_mut() {
            t.0.push(c);
        }
    }
    out
}

/// The toy model: a token's log-probability depends on the token and its prefix only.
/// `toy-good` reads the cues (sentiment words; the bracketed word of a question),
/// `toy-weak` mostly guesses, `toy-biased` answers letter questions with A.
pub fn logprob(model: &str, prefix: &str, token: &str) -> f64 {
    let h = token
        .bytes()
        .fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
    let base = -1.0 - (h % 100) as f64 / 50.0;
    let cue = |w: &str| prefix.to_lowercase().contains(w);
    let sharp = if model == "toy-good" { 3.0 } else { 0.3 };
    let letter =
        token.len() == 2 && token.starts_with(' ') && token.as_bytes()[1].is_ascii_uppercase();
    if letter {
        let l = &token[1..];
        let right = match model {
            "toy-biased" => l == "A",
            _ => prefix.lines().any(|line| {
                line.strip_prefix(&format!("{l}. "))
                    .is_some_and(|w| prefix.contains(&format!("[{w}]")))
            }),
        };
        return if right { -0.1 } else { -3.0 };
    }
    match token {
        " positive" => {
            if cue("great") {
                -0.2
            } else {
                -0.2 - sharp
            }
        }
        " negative" => {
            if cue("bad") {
                -0.25
            } else {
                -0.25 - sharp
            }
        }
        t if model == "toy-good" && prefix.contains(&format!("[{}]", t.trim())) => -0.1,
        _ if model == "toy-weak" => base - 0.5,
        _ => base,
    }
}

/// Chat answers: toy-good names the bracketed word (then rambles on after a newline, which
/// the stop sequence must cut); toy-weak guesses.
fn chat_answer(body: &Value) -> Value {
    let model = body["model"].as_str().unwrap_or("");
    let prompt = body["messages"][0]["content"].as_str().unwrap_or("");
    let word = prompt
        .split_once('[')
        .and_then(|(_, r)| r.split_once(']'))
        .map_or("", |(w, _)| w);
    let content = if model == "toy-good" {
        format!("The {word}.\nAnd more text")
    } else {
        format!("a {} guess", word.len())
    };
    json!({"id": "chat-test", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}]})
}

fn answer(state: &Behaviour, body: &Value) -> Value {
    if body.get("messages").is_some() {
        return chat_answer(body);
    }
    let model = body["model"].as_str().unwrap_or("");
    let prompt = body["prompt"].as_str().unwrap_or("");
    let toks = tokens(prompt);
    let mut lps = Vec::new();
    for (i, (t, off)) in toks.iter().enumerate() {
        let prefix: String = prompt.chars().take(*off).collect();
        lps.push(if i == 0 || state.no_prompt_logprobs {
            Value::Null
        } else {
            json!(logprob(model, &prefix, t))
        });
    }
    json!({"id": "cmpl-test", "object": "text_completion", "model": model, "choices": [{
        "index": 0, "text": prompt, "finish_reason": "length",
        "logprobs": {"tokens": toks.iter().map(|t| &t.0).collect::<Vec<_>>(), "token_logprobs": lps,
                     "text_offset": toks.iter().map(|t| t.1).collect::<Vec<_>>()}}]})
}

fn handle(mut stream: TcpStream, state: &Behaviour, rng: &Mutex<rand_xoshiro::Xoshiro256PlusPlus>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut length = 0;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    if line.starts_with("GET ") && line.contains("/models") {
        // llama.cpp's server reports the parameter count of each model it serves.
        let text = json!({"object": "list", "data": [
            {"id": "toy-good", "object": "model", "meta": {"n_params": 1234567, "size": 2469134}},
            {"id": "toy-weak", "object": "model"}]})
        .to_string();
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            text.len()
        );
        return;
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    state.requests.fetch_add(1, Ordering::SeqCst);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let reply = |stream: &mut TcpStream, status: &str, extra: &str, text: &str| {
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{text}",
            text.len()
        );
    };
    if state.poison.load(Ordering::SeqCst)
        && body["prompt"].as_str().unwrap_or("").contains("POISON")
    {
        state.faults.fetch_add(1, Ordering::SeqCst);
        return reply(
            &mut stream,
            "500 Internal Server Error",
            "",
            "{\"error\": \"poisoned\"}",
        );
    }
    let fault = {
        let mut r = rng.lock().unwrap();
        (r.gen::<f64>() < state.fault_rate).then(|| r.gen_range(0..5))
    };
    if fault.is_some() {
        state.faults.fetch_add(1, Ordering::SeqCst);
    }
    match fault {
        Some(0) => reply(
            &mut stream,
            "429 Too Many Requests",
            "Retry-After: 1\r\n",
            "{\"error\": \"slow down\"}",
        ),
        Some(1) => reply(
            &mut stream,
            "500 Internal Server Error",
            "",
            "{\"error\": \"boom\"}",
        ),
        Some(2) => {
            std::thread::sleep(Duration::from_millis(1500));
            reply(&mut stream, "200 OK", "", &answer(state, &body).to_string())
        }
        Some(3) => reply(&mut stream, "200 OK", "", "{\"choices\": [{\"text\": "),
        Some(_) => drop(stream), // connection dropped without an answer
        None => reply(&mut stream, "200 OK", "", &answer(state, &body).to_string()),
    }
}

pub fn serve(state: Behaviour, seed: u64) -> Server {
    serve_on(0, state, seed)
}

/// As [`serve`], on a given port of 127.0.0.1 (0: any free one).
pub fn serve_on(port: u16, state: Behaviour, seed: u64) -> Server {
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let state = Arc::new(state);
    let shared = state.clone();
    let rng = Arc::new(Mutex::new(rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(
        seed,
    )));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (s, r) = (shared.clone(), rng.clone());
            std::thread::spawn(move || handle(stream, &s, &r));
        }
    });
    Server { url, state }
}
