//! A small in-memory generative model for the runner's tests: deterministic scores that
//! depend only on the text, call and request counters, and injectable failures.

use std::cell::{Cell, RefCell};

use super::{
    Done, GenerateOptions, GenerativeModel, LoglikRequest, LoglikScore, ModelSize, RequestKind,
    RollingRequest, RollingScore, ScoringCost,
};
use crate::{fail, Result};

#[derive(Default)]
pub struct FakeModel {
    pub identity: String,
    /// Calls of each request kind and requests answered.
    pub calls: Cell<usize>,
    pub requests: Cell<usize>,
    /// Requests whose context contains this text fail (past their retries).
    pub fail_context: RefCell<Option<String>>,
    /// After this many answered requests, the next call stops with an error (a crash).
    pub crash_after: Cell<Option<usize>>,
    pub per_call: usize,
    /// Contexts seen, in order.
    pub seen: RefCell<Vec<String>>,
}

impl FakeModel {
    pub fn new(identity: &str, per_call: usize) -> FakeModel {
        FakeModel {
            identity: identity.into(),
            per_call,
            ..FakeModel::default()
        }
    }

    /// The score of a continuation: higher when the context "says" the continuation's word.
    pub fn score(context: &str, continuation: &str) -> f64 {
        let word = continuation.trim();
        let hash = continuation
            .bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
        let base = -1.0 - (hash % 7) as f64 / 10.0;
        if context.contains(&format!("[{word}]")) {
            base + 2.0
        } else {
            base
        }
    }

    fn answered(&self) -> Result<()> {
        let n = self.requests.get();
        if self.crash_after.get().is_some_and(|k| n >= k) {
            return Err(fail!("fake model: crashed after {n} requests"));
        }
        self.requests.set(n + 1);
        Ok(())
    }
}

impl GenerativeModel for FakeModel {
    fn identity(&self) -> &str {
        &self.identity
    }

    fn describe(&self) -> String {
        format!("fake:{}", self.identity)
    }

    fn backend(&self, _kind: RequestKind) -> String {
        "in-memory fake".into()
    }

    fn size(&self) -> Result<ModelSize> {
        Ok(ModelSize {
            parameters: Some(42),
            bytes: Some(168),
            embedding_parameters: None,
            source: "fake".into(),
        })
    }

    fn examples_per_call(&self, batch_size: usize) -> usize {
        if self.per_call == 0 {
            batch_size
        } else {
            self.per_call
        }
    }

    fn cost(&self, requests: &[LoglikRequest]) -> Result<Option<ScoringCost>> {
        Ok(Some(ScoringCost {
            flops: 100.0 * requests.len() as f64,
            fed_tokens: requests.len(),
            truncated: 0,
        }))
    }

    fn loglikelihood(
        &self,
        requests: &[LoglikRequest],
        done: &mut Done<'_, LoglikScore>,
    ) -> Result<()> {
        self.calls.set(self.calls.get() + 1);
        for (i, r) in requests.iter().enumerate() {
            self.answered()?;
            self.seen.borrow_mut().push(r.context.clone());
            let failing = self
                .fail_context
                .borrow()
                .as_ref()
                .is_some_and(|f| r.context.contains(f.as_str()));
            let answer = if failing {
                Err("HTTP 500 past 5 retries".to_owned())
            } else {
                Ok(LoglikScore {
                    sum: Self::score(&r.context, &r.continuation),
                    tokens: 1,
                    total_tokens: r.context.split_whitespace().count() + 1,
                })
            };
            done(i, answer, 1.0)?;
        }
        Ok(())
    }

    fn loglikelihood_rolling(
        &self,
        requests: &[RollingRequest],
        done: &mut Done<'_, RollingScore>,
    ) -> Result<()> {
        self.calls.set(self.calls.get() + 1);
        for (i, r) in requests.iter().enumerate() {
            self.answered()?;
            let score = RollingScore {
                nll: r.text.len() as f64 * 0.5,
                tokens: r.text.split_whitespace().count(),
                bytes: r.text.len(),
            };
            done(i, Ok(score), 1.0)?;
        }
        Ok(())
    }

    fn generate_until(
        &self,
        prompts: &[String],
        _options: &GenerateOptions,
        done: &mut Done<'_, String>,
    ) -> Result<()> {
        self.calls.set(self.calls.get() + 1);
        for (i, p) in prompts.iter().enumerate() {
            self.answered()?;
            let word = p
                .split_once('[')
                .and_then(|(_, r)| r.split_once(']'))
                .map_or("", |(w, _)| w);
            done(i, Ok(format!(" {word}")), 1.0)?;
        }
        Ok(())
    }
}
