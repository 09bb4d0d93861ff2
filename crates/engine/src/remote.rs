//! Generative models behind an OpenAI-compatible HTTP server (vLLM, TGI, llama.cpp server,
//! Ollama): log-likelihood scoring with the completions endpoint (`echo` + `logprobs`), with
//! retries (jittered exponential backoff on 429, 5xx, timeouts and dropped connections,
//! honouring `Retry-After`), a per-request timeout, a request-rate cap and a capability
//! probe that refuses servers which do not return prompt log-probabilities.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde_json::{json, Value};

use crate::error::{EngineError, Result};

/// `openai:http://host:port/v1#model-id`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSpec {
    /// Base URL up to and including the API version (`.../v1`), without a trailing slash.
    pub base_url: String,
    pub model: String,
}

impl RemoteSpec {
    /// `None` when `spec` is not a remote spec; an error when it is one but malformed.
    pub fn parse(spec: &str) -> Option<Result<RemoteSpec>> {
        let rest = spec.strip_prefix("openai:")?;
        let parsed = match rest.split_once('#') {
            Some((url, model))
                if (url.starts_with("http://") || url.starts_with("https://"))
                    && !model.is_empty() =>
            {
                Ok(RemoteSpec {
                    base_url: url.trim_end_matches('/').to_owned(),
                    model: model.to_owned(),
                })
            }
            _ => Err(EngineError::BadInput(format!(
                "{spec:?}: a remote model is openai:http://HOST:PORT/v1#MODEL-ID"
            ))),
        };
        Some(parsed)
    }
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub timeout: Duration,
    /// Attempts after the first.
    pub retries: usize,
    /// Requests per second at most (all threads together).
    pub max_rps: Option<f64>,
    /// Sent as a bearer token; never logged or stored.
    pub api_key: Option<String>,
    /// Seeds the backoff jitter.
    pub seed: u64,
    /// Backoff before the first retry; doubled each time.
    pub backoff: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(60),
            retries: 5,
            max_rps: None,
            api_key: None,
            seed: 0,
            backoff: Duration::from_millis(200),
        }
    }
}

/// Why a request gave no usable answer, after its retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFailure {
    pub url: String,
    pub attempts: usize,
    pub last_error: String,
    /// The server could not be reached at all (refused / DNS), as opposed to a bad answer.
    pub unreachable: bool,
}

impl std::fmt::Display for RequestFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} after {} attempt(s)",
            self.url, self.last_error, self.attempts
        )
    }
}

pub struct RemoteClient {
    pub spec: RemoteSpec,
    opts: ClientOptions,
    agent: ureq::Agent,
    next_slot: Mutex<Instant>,
    jitter: Mutex<Xoshiro256PlusPlus>,
}

/// Log-probabilities of an echoed text, token by token.
#[derive(Debug, Clone, PartialEq)]
pub struct EchoLogprobs {
    pub tokens: Vec<String>,
    pub logprobs: Vec<Option<f64>>,
    /// Character offset of each token in the text.
    pub offsets: Vec<usize>,
}

impl EchoLogprobs {
    /// Sum of the log-probabilities of the tokens starting in characters `start..end` (the
    /// continuation; a token the server generated after the text is past `end`), and their
    /// count; `None` when one of them has no log-probability.
    pub fn continuation(&self, start: usize, end: usize) -> Option<(f64, usize)> {
        let mut sum = 0.0;
        let mut n = 0;
        for (lp, &off) in self.logprobs.iter().zip(&self.offsets) {
            if off >= start && off < end {
                sum += (*lp)?;
                n += 1;
            }
        }
        (n > 0).then_some((sum, n))
    }

    fn from_response(v: &Value) -> std::result::Result<Self, String> {
        let lp = &v["choices"][0]["logprobs"];
        let tokens: Vec<String> = lp["tokens"]
            .as_array()
            .ok_or("no choices[0].logprobs.tokens in the answer")?
            .iter()
            .map(|t| t.as_str().unwrap_or_default().to_owned())
            .collect();
        let logprobs: Vec<Option<f64>> = lp["token_logprobs"]
            .as_array()
            .ok_or("no choices[0].logprobs.token_logprobs in the answer")?
            .iter()
            .map(Value::as_f64)
            .collect();
        let offsets: Vec<usize> = match lp["text_offset"].as_array() {
            Some(o) => o.iter().map(|x| x.as_u64().unwrap_or(0) as usize).collect(),
            None => {
                let mut at = 0;
                tokens
                    .iter()
                    .map(|t| {
                        let here = at;
                        at += t.chars().count();
                        here
                    })
                    .collect()
            }
        };
        if logprobs.len() != tokens.len() || offsets.len() != tokens.len() {
            return Err("tokens, token_logprobs and text_offset differ in length".into());
        }
        Ok(EchoLogprobs {
            tokens,
            logprobs,
            offsets,
        })
    }
}

enum Attempt {
    Done(Value),
    Retry {
        error: String,
        wait: Option<Duration>,
    },
    Unreachable(String),
}

impl RemoteClient {
    pub fn new(spec: RemoteSpec, opts: ClientOptions) -> RemoteClient {
        let agent = ureq::AgentBuilder::new()
            .timeout(opts.timeout)
            .timeout_connect(opts.timeout.min(Duration::from_secs(10)))
            .build();
        let jitter = Xoshiro256PlusPlus::seed_from_u64(opts.seed ^ 0x6a69_7474);
        RemoteClient {
            spec,
            opts,
            agent,
            next_slot: Mutex::new(Instant::now()),
            jitter: Mutex::new(jitter),
        }
    }

    fn wait_for_slot(&self) {
        let Some(rps) = self.opts.max_rps.filter(|r| *r > 0.0) else {
            return;
        };
        let interval = Duration::from_secs_f64(1.0 / rps);
        let wait = {
            let mut next = self.next_slot.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + interval;
            slot - now
        };
        std::thread::sleep(wait);
    }

    fn attempt(&self, url: &str, body: &Value) -> Attempt {
        self.wait_for_slot();
        let mut req = self.agent.post(url).set("Content-Type", "application/json");
        if let Some(key) = &self.opts.api_key {
            req = req.set("Authorization", &format!("Bearer {key}"));
        }
        match req.send_string(&body.to_string()) {
            Ok(resp) => match resp.into_string() {
                Ok(text) => match serde_json::from_str::<Value>(&text) {
                    Ok(v) => Attempt::Done(v),
                    Err(e) => Attempt::Retry {
                        error: format!("malformed JSON in the answer ({e})"),
                        wait: None,
                    },
                },
                Err(e) => Attempt::Retry {
                    error: format!("the answer was cut off ({e})"),
                    wait: None,
                },
            },
            Err(ureq::Error::Status(code, resp)) => {
                let wait = resp
                    .header("Retry-After")
                    .and_then(|s| s.trim().parse::<f64>().ok())
                    .map(|s| Duration::from_secs_f64(s.clamp(0.0, 300.0)));
                let text = resp.into_string().unwrap_or_default();
                let short: String = text.chars().take(200).collect();
                if code == 429 || code >= 500 {
                    Attempt::Retry {
                        error: format!("HTTP {code}: {short}"),
                        wait,
                    }
                } else {
                    // 4xx other than 429: the request itself is wrong; retrying cannot help.
                    Attempt::Unreachable(format!("HTTP {code}: {short}"))
                }
            }
            Err(ureq::Error::Transport(t)) => {
                let msg = t.to_string();
                if matches!(
                    t.kind(),
                    ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns
                ) {
                    Attempt::Unreachable(format!("cannot connect ({msg})"))
                } else {
                    Attempt::Retry {
                        error: msg,
                        wait: None,
                    }
                }
            }
        }
    }

    /// POSTs `body` to `path` (relative to the base URL) with retries.
    pub fn post(&self, path: &str, body: &Value) -> std::result::Result<Value, RequestFailure> {
        let url = format!("{}/{}", self.spec.base_url, path.trim_start_matches('/'));
        let mut last = String::new();
        let mut refused = 0;
        for attempt in 0..=self.opts.retries {
            match self.attempt(&url, body) {
                Attempt::Done(v) => return Ok(v),
                Attempt::Unreachable(e) if !e.starts_with("cannot connect") => {
                    return Err(RequestFailure {
                        url,
                        attempts: attempt + 1,
                        last_error: e,
                        unreachable: false,
                    })
                }
                Attempt::Unreachable(e) => {
                    refused += 1;
                    last = e;
                    self.backoff(attempt, None);
                }
                Attempt::Retry { error, wait } => {
                    last = error;
                    if attempt < self.opts.retries {
                        self.backoff(attempt, wait);
                    }
                }
            }
        }
        Err(RequestFailure {
            url,
            attempts: self.opts.retries + 1,
            last_error: last,
            unreachable: refused == self.opts.retries + 1,
        })
    }

    fn backoff(&self, attempt: usize, retry_after: Option<Duration>) {
        let base = self.opts.backoff.as_secs_f64() * 2f64.powi(attempt.min(10) as i32);
        let jitter: f64 = self
            .jitter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .gen_range(0.5..1.5);
        let wait = Duration::from_secs_f64((base * jitter).min(30.0));
        std::thread::sleep(retry_after.map_or(wait, |r| r.max(wait.min(r))));
    }

    /// The request body that scores `text` by echoing it with log-probabilities. One token
    /// is generated (and ignored): some servers (llama-cpp-python) read `max_tokens: 0` as
    /// "no limit".
    /// What the server says about the model in `GET /models`, when it says anything: its
    /// parameter count and size in bytes (llama.cpp's server reports `meta.n_params` and
    /// `meta.size`; most servers report neither). One attempt, no retries: this is optional.
    pub fn model_size(&self) -> (Option<u64>, Option<u64>) {
        let url = format!("{}/models", self.spec.base_url);
        let mut req = self.agent.get(&url);
        if let Some(key) = &self.opts.api_key {
            req = req.set("Authorization", &format!("Bearer {key}"));
        }
        let Some(v) = req
            .call()
            .ok()
            .and_then(|r| r.into_string().ok())
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        else {
            return (None, None);
        };
        let entry = v["data"]
            .as_array()
            .and_then(|a| a.iter().find(|m| m["id"] == self.spec.model.as_str()));
        let meta = entry.map(|m| &m["meta"]);
        (
            meta.and_then(|m| m["n_params"].as_u64()),
            meta.and_then(|m| m["size"].as_u64()),
        )
    }

    pub fn echo_request(&self, text: &str) -> Value {
        json!({
            "model": self.spec.model, "prompt": text, "max_tokens": 1, "echo": true,
            "logprobs": 1, "temperature": 0.0,
        })
    }

    pub fn parse_echo(v: &Value) -> std::result::Result<EchoLogprobs, String> {
        EchoLogprobs::from_response(v)
    }

    /// Checks that the server returns log-probabilities for prompt tokens and that they are
    /// those of a causal model: a text's tokens score the same alone and with more text
    /// after them. Some servers accept `echo` yet score only generated tokens; scoring
    /// through them would give chance-level results without a word.
    pub fn probe_loglikelihood(&self) -> Result<()> {
        let a = "The capital of France is Paris, and the capital of Italy is Rome.";
        let b = format!("{a} Both cities are old.");
        let get = |t: &str| -> Result<EchoLogprobs> {
            let v = self
                .post("completions", &self.echo_request(t))
                .map_err(|f| {
                    EngineError::Runtime(format!(
                        "the capability probe of `{}` failed: {f}",
                        self.spec.model
                    ))
                })?;
            EchoLogprobs::from_response(&v).map_err(|m| self.no_logprobs(&m))
        };
        let (ea, eb) = (get(a)?, get(&b)?);
        let a_chars = a.chars().count();
        let prompt_tokens = ea.offsets.iter().filter(|&&o| o < a_chars).count();
        let scored = ea.logprobs[..prompt_tokens]
            .iter()
            .skip(1)
            .filter(|l| l.is_some())
            .count();
        if prompt_tokens < 3 || scored + 1 < prompt_tokens {
            return Err(self.no_logprobs(&format!(
                "{scored} of {prompt_tokens} prompt tokens came back with a log-probability"
            )));
        }
        let shared = prompt_tokens - 1; // the last token may merge with what follows
        for i in 1..shared {
            match (ea.logprobs[i], eb.logprobs.get(i).copied().flatten()) {
                (Some(x), Some(y)) if ea.tokens[i] == eb.tokens[i] && (x - y).abs() <= 1e-2 => {}
                _ => {
                    return Err(self.no_logprobs(&format!(
                        "prompt token {i} ({:?}) scored {:?} alone but {:?} with text after it: these are not prompt log-probabilities",
                        ea.tokens[i],
                        ea.logprobs[i],
                        eb.logprobs.get(i).copied().flatten()
                    )))
                }
            }
        }
        Ok(())
    }

    fn no_logprobs(&self, why: &str) -> EngineError {
        EngineError::BadInput(format!(
            "the server at {1} does not return prompt log-probabilities for `{0}` ({why}); log-likelihood tasks need them (completions with echo and logprobs) — use a server that supports them, or let the model answer instead (--task generate, or --decoder-scoring generate to classify)",
            self.spec.model, self.spec.base_url
        ))
    }
}
