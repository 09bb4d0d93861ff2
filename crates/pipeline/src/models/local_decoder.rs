//! A decoder run by lmcompare's own kernels: a `.gguf` file or an HF causal-LM folder
//! (Llama, Qwen2/3, Gemma 1/2/3, GPT-2). Loaded on first use, so a rerun answered from the
//! store never reads the weights.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use lmcompare_engine::decoder::{Decoder, ScoreRequest};
use lmcompare_engine::store::Store;

use super::{
    Done, GenerateOptions, GenerativeModel, LoglikRequest, LoglikScore, ModelSize, RequestKind,
    RollingRequest, RollingScore, ScoringCost,
};
use crate::{Error, Result};

/// Where a request's continuation sits in a plan: (score request, continuation).
type Place = (usize, usize);

pub struct LocalDecoder {
    name: String,
    path: PathBuf,
    identity: String,
    decoder: OnceLock<Decoder>,
    /// Prompts that lost tokens from the left during generation, not yet said.
    truncated_prompts: Cell<usize>,
    max_tokens_said: Cell<usize>,
    max_length: Option<usize>,
    dequantize: bool,
}

impl LocalDecoder {
    /// `path` is identified by the sha256 of its files (cached in the store by size and
    /// modification time).
    /// `max_length` bounds its contexts (and so is part of its identity: a cut context is
    /// another request).
    pub fn new(
        name: &str,
        path: PathBuf,
        store: &Store,
        max_length: Option<usize>,
        dequantize: bool,
    ) -> Result<LocalDecoder> {
        let mut identity = String::new();
        for f in identity_files(&path) {
            identity.push_str(&store.file_sha256(&f)?);
        }
        // The two paths give different numbers (for GGUF; within 1e-5 for 16-bit folders):
        // each its own predictions in the store.
        if dequantize {
            identity.push_str("\nweights=f32");
        }
        if let Some(n) = max_length {
            if n < 2 {
                return Err(crate::bad!("--max-length must be at least 2"));
            }
            identity.push_str(&format!("\nmax_length={n}"));
        }
        Ok(LocalDecoder {
            name: name.to_owned(),
            path,
            identity,
            decoder: OnceLock::new(),
            truncated_prompts: Cell::new(0),
            max_tokens_said: Cell::new(0),
            max_length,
            dequantize,
        })
    }

    fn decoder(&self) -> Result<&Decoder> {
        if let Some(d) = self.decoder.get() {
            return Ok(d);
        }
        let options = lmcompare_engine::decoder::LoadOptions {
            dequantize: self.dequantize,
        };
        let mut d = Decoder::load_with(&self.path, options)
            .map_err(|e| Error::from(e).context(format!("model {}", self.name)))?;
        if let Some(n) = self.max_length {
            d.limit_positions(n)?;
        }
        Ok(self.decoder.get_or_init(|| d))
    }

    /// The requests as tokenized score requests, one per run of requests sharing a context,
    /// and where each request's continuation sits: (score request, continuation).
    fn plan(&self, requests: &[LoglikRequest]) -> Result<(Vec<ScoreRequest>, Vec<Place>)> {
        let d = self.decoder()?;
        let mut out: Vec<ScoreRequest> = Vec::new();
        let mut place = Vec::with_capacity(requests.len());
        let mut last_context: Option<&str> = None;
        for r in requests {
            let (ctx, cont) = d.encode_pair(&r.context, &r.continuation)?;
            if last_context != Some(r.context.as_str()) {
                out.push(ScoreRequest {
                    context: ctx,
                    continuations: Vec::new(),
                });
                last_context = Some(&r.context);
            }
            let k = out.len() - 1;
            place.push((k, out[k].continuations.len()));
            out[k].continuations.push(cont);
        }
        Ok((out, place))
    }
}

/// The files whose content identifies a local decoder.
fn identity_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_owned()];
    }
    let mut v = vec![path.join("config.json")];
    if let Some(w) = lmcompare_engine::encoder_model::weights_file(path) {
        v.push(w);
    }
    let tok = path.join("tokenizer.json");
    if tok.exists() {
        v.push(tok);
    }
    v
}

impl GenerativeModel for LocalDecoder {
    fn identity(&self) -> &str {
        &self.identity
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn backend(&self, kind: RequestKind) -> String {
        let Some(d) = self.decoder.get() else {
            return "lmcompare decoder kernels".into();
        };
        match kind {
            RequestKind::Generate => format!(
                "lmcompare decoder kernels ({} {}, greedy generation)",
                d.config.family.key(),
                d.format
            ),
            _ => format!(
                "lmcompare decoder kernels ({} {}, f32; tokenizer {})",
                d.config.family.key(),
                d.format,
                d.tokenizer_source
            ),
        }
    }

    fn size(&self) -> Result<ModelSize> {
        let d = self.decoder()?;
        Ok(ModelSize {
            parameters: Some(d.size.parameters),
            bytes: Some(d.size.file_bytes),
            embedding_parameters: Some(d.size.embedding_parameters),
            source: format!(
                "{} header ({}); weights: {}, {:.2} bits per parameter, {} bytes in memory",
                d.format,
                d.size.storage,
                d.size.compute,
                d.size.bits_per_weight,
                d.size.weight_bytes
            ),
        })
    }

    fn examples_per_call(&self, batch_size: usize) -> usize {
        batch_size.max(1)
    }

    fn cost(&self, requests: &[LoglikRequest]) -> Result<Option<ScoringCost>> {
        if requests.is_empty() {
            return Ok(Some(ScoringCost::default()));
        }
        let (plan, _) = self.plan(requests)?;
        let s = self.decoder()?.cost(&plan)?;
        Ok(Some(ScoringCost {
            flops: s.flops,
            fed_tokens: s.fed_tokens,
            truncated: s.truncated,
        }))
    }

    /// One tree-masked pass per shared context scores all its continuations; the call's
    /// time is shared out evenly over its requests.
    fn loglikelihood(
        &self,
        requests: &[LoglikRequest],
        done: &mut Done<'_, LoglikScore>,
    ) -> Result<()> {
        if requests.is_empty() {
            return Ok(());
        }
        let (plan, place) = self.plan(requests)?;
        let t0 = Instant::now();
        let (scores, _) = self.decoder()?.score(&plan).map_err(|e| {
            Error::from_model(e, &self.name)
                .remap_input(|r| place.iter().position(|p| p.0 == r).unwrap_or(0))
        })?;
        let ms = t0.elapsed().as_secs_f64() * 1e3 / requests.len() as f64;
        // The tokens the model saw: a context too long lost its left part.
        let window = self.decoder()?.config.max_positions + 1;
        for (i, &(r, c)) in place.iter().enumerate() {
            let sc = &scores[r][c];
            let score = LoglikScore {
                sum: sc.sum(),
                tokens: sc.logprobs.len(),
                total_tokens: (plan[r].context.len() + sc.logprobs.len()).min(window),
            };
            done(i, Ok(score), ms)?;
        }
        Ok(())
    }

    fn loglikelihood_rolling(
        &self,
        requests: &[RollingRequest],
        done: &mut Done<'_, RollingScore>,
    ) -> Result<()> {
        if requests.is_empty() {
            return Ok(());
        }
        let d = self.decoder()?;
        let mut plan = Vec::with_capacity(requests.len());
        for r in requests {
            let (ctx, cont) = d.encode_pair(&r.context, &r.text)?;
            plan.push(ScoreRequest {
                context: ctx,
                continuations: vec![cont],
            });
        }
        let t0 = Instant::now();
        let (scores, _) = d
            .score(&plan)
            .map_err(|e| Error::from_model(e, &self.name))?;
        let ms = t0.elapsed().as_secs_f64() * 1e3 / requests.len() as f64;
        for (i, (s, r)) in scores.iter().zip(requests).enumerate() {
            let score = RollingScore {
                nll: -s[0].sum(),
                tokens: s[0].logprobs.len(),
                bytes: r.text.len(),
            };
            done(i, Ok(score), ms)?;
        }
        Ok(())
    }

    fn generate_until(
        &self,
        prompts: &[String],
        options: &GenerateOptions,
        done: &mut Done<'_, String>,
    ) -> Result<()> {
        if prompts.is_empty() {
            return Ok(());
        }
        let dec = self.decoder()?;
        let mut inputs = Vec::with_capacity(prompts.len());
        for p in prompts {
            let mut ids = dec.start_tokens();
            ids.extend(dec.encode(p)?);
            inputs.push(ids);
        }
        let stops = &options.stop;
        // Stop a sequence as soon as its decoded text holds a stop sequence.
        let stop = |_: usize, ids: &[u32]| -> bool {
            dec.decode(ids)
                .map(|t| {
                    stops
                        .iter()
                        .any(|s| !s.is_empty() && t.contains(s.as_str()))
                })
                .unwrap_or(false)
        };
        let t0 = Instant::now();
        let (out, cut) = dec
            .generate(&inputs, options.max_tokens, &stop)
            .map_err(|e| match e {
                e @ lmcompare_engine::EngineError::NonFinite { .. } => {
                    Error::from_model(e, &self.name)
                }
                e => Error::BadInput(format!("model {}: {e}", self.name)),
            })?;
        self.truncated_prompts
            .set(self.truncated_prompts.get() + cut);
        self.max_tokens_said.set(options.max_tokens);
        let ms = t0.elapsed().as_secs_f64() * 1e3 / prompts.len() as f64;
        for (i, ids) in out.iter().enumerate() {
            let text = crate::tasks::generation::cut_at_stop(&dec.decode(ids)?, stops);
            done(i, Ok(text), ms)?;
        }
        Ok(())
    }

    fn notes(&self) -> Vec<String> {
        let n = self.truncated_prompts.replace(0);
        if n == 0 {
            return Vec::new();
        }
        vec![format!(
            "model {}: {n} prompt(s) were longer than the model's context allows with --max-tokens {} and lost tokens from the left",
            self.name,
            self.max_tokens_said.get()
        )]
    }
}
