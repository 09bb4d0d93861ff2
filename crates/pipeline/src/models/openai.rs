//! A generative model behind an OpenAI-compatible server (vLLM, TGI, llama.cpp server,
//! Ollama): completions with `echo` + `logprobs` for the log-likelihood requests, chat (or
//! plain) completions for generation. Requests go out `concurrency` at a time with the
//! client's retries, backoff and rate cap; a prompt-log-probability probe runs before the
//! first log-likelihood request, so a server that cannot score prompts is refused by name.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lmcompare_engine::remote::{ClientOptions, RemoteClient, RemoteSpec, RequestFailure};
use serde_json::{json, Value};

use super::{
    Answer, Done, GenerateOptions, GenerativeModel, LoglikRequest, LoglikScore, ModelSize,
    RequestKind, ResolveOptions, RollingRequest, RollingScore, ScoringCost,
};
use crate::config::GenerateApi;
use crate::{bad, fail, Error, Result};

pub struct OpenAiModel {
    name: String,
    client: RemoteClient,
    identity: String,
    concurrency: usize,
    api: GenerateApi,
}

impl OpenAiModel {
    pub fn new(name: &str, spec: RemoteSpec, opts: &ResolveOptions<'_>) -> Result<OpenAiModel> {
        let r = opts.remote;
        let api_key =
            match &r.api_key_env {
                Some(var) => Some(std::env::var(var).map_err(|_| {
                    bad!("--api-key-env {var}: that environment variable is not set")
                })?),
                None => None,
            };
        let identity = format!("openai:{}#{}", spec.base_url, spec.model);
        let client = RemoteClient::new(
            spec,
            ClientOptions {
                timeout: Duration::from_secs_f64(r.timeout),
                retries: r.retries,
                max_rps: r.max_rps,
                api_key,
                seed: opts.seed,
                backoff: Duration::from_millis(r.backoff_ms),
            },
        );
        Ok(OpenAiModel {
            name: name.to_owned(),
            client,
            identity,
            concurrency: r.concurrency,
            api: opts.generate_api,
        })
    }

    /// Posts `bodies` to `path`, `concurrency` at a time, calling `each` on the calling
    /// thread as answers come back. An unreachable server stops everything with an error
    /// naming it (what `each` was given is kept); other failures are per request.
    fn post_all(
        &self,
        path: &str,
        bodies: &[Value],
        each: &mut dyn FnMut(usize, std::result::Result<Value, RequestFailure>, f64) -> Result<()>,
    ) -> Result<()> {
        let next = AtomicUsize::new(0);
        let (tx, rx) = mpsc::channel::<(usize, std::result::Result<Value, RequestFailure>, f64)>();
        std::thread::scope(|scope| -> Result<()> {
            for _ in 0..self.concurrency.max(1).min(bodies.len().max(1)) {
                let tx = tx.clone();
                let next = &next;
                scope.spawn(move || loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { break };
                    let t0 = Instant::now();
                    let r = self.client.post(path, body);
                    if tx.send((i, r, t0.elapsed().as_secs_f64() * 1e3)).is_err() {
                        break;
                    }
                });
            }
            drop(tx);
            for (i, r, ms) in rx {
                if let Err(f) = &r {
                    if f.unreachable {
                        // Nothing more will get through; stop the workers and say where.
                        next.store(usize::MAX / 2, Ordering::Relaxed);
                        return Err(fail!(
                            "model {}: the server at {} is unreachable ({}); the answers received so far are kept in the store",
                            self.name,
                            self.client.spec.base_url,
                            f.last_error
                        ));
                    }
                }
                each(i, r, ms)?;
            }
            Ok(())
        })
    }

    fn echo_all<T>(
        &self,
        texts: &[String],
        parse: impl Fn(usize, &Value) -> Option<T>,
        missing: &str,
        done: &mut Done<'_, T>,
    ) -> Result<()> {
        if texts.is_empty() {
            return Ok(());
        }
        self.client
            .probe_loglikelihood()
            .map_err(|e| Error::from(e).context(format!("model {}", self.name)))?;
        let bodies: Vec<Value> = texts.iter().map(|t| self.client.echo_request(t)).collect();
        self.post_all("completions", &bodies, &mut |i, r, ms| {
            let answer: Answer<T> = match r {
                Ok(v) => parse(i, &v).ok_or_else(|| missing.to_owned()),
                Err(f) => Err(f.to_string()),
            };
            done(i, answer, ms)
        })
    }
}

/// Σ −log p, scored tokens and UTF-8 bytes of one echoed window, from character `start`
/// (the first token of a text has no log-probability and is not scored).
fn window_score(v: &Value, start: usize, full: &str) -> Option<RollingScore> {
    let e = RemoteClient::parse_echo(v).ok()?;
    let mut nll = 0.0;
    let mut n = 0;
    let mut first: Option<usize> = None;
    let end = full.chars().count();
    for (lp, &off) in e.logprobs.iter().zip(&e.offsets) {
        if off < start || off >= end {
            continue;
        }
        match lp {
            Some(x) => {
                nll -= x;
                n += 1;
                first.get_or_insert(off);
            }
            None if off == 0 => {}
            None => return None,
        }
    }
    let from = first?;
    let bytes = full.chars().skip(from).collect::<String>().len();
    Some(RollingScore {
        nll,
        tokens: n,
        bytes,
    })
}

impl GenerativeModel for OpenAiModel {
    fn identity(&self) -> &str {
        &self.identity
    }

    fn describe(&self) -> String {
        self.identity.clone()
    }

    fn backend(&self, kind: RequestKind) -> String {
        match kind {
            RequestKind::Generate => {
                format!("openai-compatible HTTP ({:?} generation)", self.api).to_lowercase()
            }
            _ => "openai-compatible HTTP (completions, echo + logprobs)".to_owned(),
        }
    }

    fn size(&self) -> Result<ModelSize> {
        let (parameters, bytes) = self.client.model_size();
        Ok(ModelSize {
            parameters,
            bytes,
            embedding_parameters: None,
            source: if parameters.is_some() {
                "reported by the server (GET /models)"
            } else {
                "not reported by the server"
            }
            .to_owned(),
        })
    }

    fn examples_per_call(&self, _batch_size: usize) -> usize {
        usize::MAX
    }

    fn cost(&self, _requests: &[LoglikRequest]) -> Result<Option<ScoringCost>> {
        Ok(None)
    }

    fn loglikelihood(
        &self,
        requests: &[LoglikRequest],
        done: &mut Done<'_, LoglikScore>,
    ) -> Result<()> {
        let texts: Vec<String> = requests
            .iter()
            .map(|r| format!("{}{}", r.context, r.continuation))
            .collect();
        self.echo_all(
            &texts,
            |i, v| {
                let start = requests[i].context.chars().count();
                let end = start + requests[i].continuation.chars().count();
                let e = RemoteClient::parse_echo(v).ok()?;
                let (sum, tokens) = e.continuation(start, end)?;
                Some(LoglikScore {
                    sum,
                    tokens,
                    total_tokens: e.tokens.len(),
                })
            },
            "the answer has no log-probabilities for the continuation",
            done,
        )
    }

    fn loglikelihood_rolling(
        &self,
        requests: &[RollingRequest],
        done: &mut Done<'_, RollingScore>,
    ) -> Result<()> {
        let texts: Vec<String> = requests
            .iter()
            .map(|r| format!("{}{}", r.context, r.text))
            .collect();
        let starts: Vec<usize> = requests.iter().map(|r| r.context.chars().count()).collect();
        self.echo_all(
            &texts,
            |i, v| window_score(v, starts[i], &texts[i]),
            "no log-probabilities in the answer",
            done,
        )
    }

    fn generate_until(
        &self,
        prompts: &[String],
        options: &GenerateOptions,
        done: &mut Done<'_, String>,
    ) -> Result<()> {
        let chat = self.api == GenerateApi::Chat;
        let path = if chat {
            "chat/completions"
        } else {
            "completions"
        };
        let bodies: Vec<Value> = prompts
            .iter()
            .map(|p| {
                let mut b = json!({"model": self.client.spec.model, "max_tokens": options.max_tokens, "temperature": 0.0});
                if chat {
                    b["messages"] = json!([{"role": "user", "content": p}]);
                } else {
                    b["prompt"] = json!(p);
                }
                if !options.stop.is_empty() {
                    b["stop"] = json!(options.stop);
                }
                b
            })
            .collect();
        self.post_all(path, &bodies, &mut |i, r, ms| {
            let answer = match r {
                Ok(v) => {
                    let c = &v["choices"][0];
                    let text = if chat {
                        c["message"]["content"].as_str()
                    } else {
                        c["text"].as_str()
                    };
                    text.map(|t| crate::tasks::generation::cut_at_stop(t, &options.stop))
                        .ok_or_else(|| "the answer has no text".to_owned())
                }
                Err(f) => Err(f.to_string()),
            };
            done(i, answer, ms)
        })
    }
}
