//! The models a comparison runs, behind one interface per kind.
//!
//! A **generative model** answers lm-evaluation-harness's three requests — the
//! log-likelihood of a continuation after a context, the rolling log-likelihood of a text,
//! and generation until a stop sequence — and says who it is (a content identity that keys
//! every cache) and what it costs. The local decoder ([`LocalDecoder`]) and an
//! OpenAI-compatible server ([`OpenAiModel`]) implement it. An **encoder** embeds and
//! classifies; the engine's `TextEncoder` runs it on the native kernels or ONNX Runtime.
//!
//! A model spec is parsed and resolved once, by [`resolve`]. Adding a backend is one file
//! implementing [`GenerativeModel`] and one arm in [`resolve`].

#[cfg(test)]
pub(crate) mod fake;
mod local_decoder;
mod openai;

use std::path::PathBuf;

use lmcompare_engine::spec::ResolvedModel;
use lmcompare_engine::store::Store;
use serde::{Deserialize, Serialize};

pub use local_decoder::LocalDecoder;
pub use openai::OpenAiModel;

use crate::config::{GenerateApi, RemoteConfig};
use crate::{bad, Result};

/// One request's answer, or why it has none (a request failed past its retries).
pub type Answer<T> = std::result::Result<T, String>;

/// Called as each request is answered: (request index, answer, milliseconds it took).
pub type Done<'a, T> = dyn FnMut(usize, Answer<T>, f64) -> Result<()> + 'a;

/// Score `continuation` after `context` (lm-evaluation-harness's `loglikelihood`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoglikRequest {
    pub context: String,
    pub continuation: String,
}

/// Σ log p of a continuation's tokens, their count, and the tokens of context and
/// continuation together.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoglikScore {
    #[serde(with = "exact_f64")]
    pub sum: f64,
    pub tokens: usize,
    pub total_tokens: usize,
}

/// An f64 kept exactly in the store: written as its shortest round-trip decimal string and
/// read back with Rust's correctly rounded parser, so a cached answer equals the computed one
/// bit for bit (serde_json's default number parser may differ in the last place).
mod exact_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:?}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Score every token of `text` after `context` (one window of
/// lm-evaluation-harness's `loglikelihood_rolling`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollingRequest {
    pub context: String,
    pub text: String,
}

/// −Σ log p over the scored tokens of a window, their count, and the UTF-8 bytes they cover.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RollingScore {
    #[serde(with = "exact_f64")]
    pub nll: f64,
    pub tokens: usize,
    pub bytes: usize,
}

/// Greedy generation settings (lm-evaluation-harness's `generate_until`).
#[derive(Debug, Clone, Serialize)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub stop: Vec<String>,
    /// The server API a remote model answers through (local models ignore it).
    pub api: &'static str,
}

/// What a generative model costs to keep: parameters and bytes where known.
#[derive(Debug, Clone, Default)]
pub struct ModelSize {
    pub parameters: Option<u64>,
    pub bytes: Option<u64>,
    pub embedding_parameters: Option<u64>,
    /// Where the numbers come from, said in the report.
    pub source: String,
}

/// What scoring a set of requests costs in compute, where the model can say.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScoringCost {
    pub flops: f64,
    pub fed_tokens: usize,
    /// Contexts cut from the left to fit the model's positions.
    pub truncated: usize,
}

/// Which of the three requests a backend description is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Loglikelihood,
    Rolling,
    Generate,
}

/// A generative language model, local or remote.
pub trait GenerativeModel {
    /// What identifies the model's content (file hashes, or a server's URL and model id);
    /// every cache entry and run key of the model is keyed by it.
    fn identity(&self) -> &str;
    /// How the report names it (a path, or `openai:URL#model`).
    fn describe(&self) -> String;
    /// The software that answered requests of this kind, for the report.
    fn backend(&self, kind: RequestKind) -> String;
    /// Parameters and bytes (may load the model, or ask the server).
    fn size(&self) -> Result<ModelSize>;
    /// Examples worth sending in one call: local models batch, servers take everything and
    /// bound their own concurrency.
    fn examples_per_call(&self, batch_size: usize) -> usize;
    /// What scoring `requests` costs, without running it (None where unknown: servers).
    fn cost(&self, requests: &[LoglikRequest]) -> Result<Option<ScoringCost>>;
    fn loglikelihood(
        &self,
        requests: &[LoglikRequest],
        done: &mut Done<'_, LoglikScore>,
    ) -> Result<()>;
    fn loglikelihood_rolling(
        &self,
        requests: &[RollingRequest],
        done: &mut Done<'_, RollingScore>,
    ) -> Result<()>;
    fn generate_until(
        &self,
        prompts: &[String],
        options: &GenerateOptions,
        done: &mut Done<'_, String>,
    ) -> Result<()>;
    /// Something the user should know after a call (e.g. prompts truncated), said once.
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A `--model NAME=SPEC` as the user wrote it.
#[derive(Debug, Clone)]
pub struct NamedSpec {
    pub name: String,
    pub spec: String,
}

/// `NAME=SPEC` values, checked: each has both parts, names are distinct.
pub fn parse_named_specs(specs: &[String]) -> Result<Vec<NamedSpec>> {
    let mut out: Vec<NamedSpec> = Vec::new();
    for s in specs {
        let (name, spec) = s
            .split_once('=')
            .filter(|(n, sp)| !n.is_empty() && !sp.is_empty())
            .ok_or_else(|| {
                bad!(
                    "--model {s:?}: expected NAME=SPEC, e.g. minilm=assets/models/all-MiniLM-L6-v2"
                )
            })?;
        if out.iter().any(|m| m.name == name) {
            return Err(bad!(
                "two models are named {name:?}; give each --model a distinct NAME"
            ));
        }
        out.push(NamedSpec {
            name: name.to_owned(),
            spec: spec.to_owned(),
        });
    }
    if out.is_empty() {
        return Err(bad!("give at least one --model NAME=SPEC"));
    }
    Ok(out)
}

/// A model spec resolved into what runs it.
pub enum Resolved {
    /// An encoder folder, `.onnx` file or `hf:` snapshot (loaded by the encoder tasks).
    Encoder(ResolvedModel),
    Generative(Box<dyn GenerativeModel>),
}

/// What a remote or local generative model needs beyond its spec.
pub struct ResolveOptions<'a> {
    pub remote: &'a RemoteConfig,
    pub seed: u64,
    pub quiet: bool,
    pub generate_api: GenerateApi,
    /// `--max-length`: the longest context a local decoder is given.
    pub max_length: Option<usize>,
}

/// Resolves a spec once: `openai:URL#MODEL` is a server, a `.gguf` file or a folder whose
/// config.json names a decoder family is a local decoder, anything else an encoder.
/// The one place that knows every backend.
pub fn resolve(m: &NamedSpec, store: &Store, opts: &ResolveOptions<'_>) -> Result<Resolved> {
    if let Some(remote) = lmcompare_engine::remote::RemoteSpec::parse(&m.spec) {
        let spec = remote.map_err(|e| bad!("model {}: {e}", m.name))?;
        return Ok(Resolved::Generative(Box::new(OpenAiModel::new(
            &m.name, spec, opts,
        )?)));
    }
    if let Some(path) = local_decoder_path(&m.spec) {
        return Ok(Resolved::Generative(Box::new(LocalDecoder::new(
            &m.name,
            path,
            store,
            opts.max_length,
            wants_dequantize(&m.spec),
        )?)));
    }
    let resolved = lmcompare_engine::spec::resolve(&m.spec)
        .map_err(|e| crate::Error::from(e).context(format!("model {}", m.name)))?;
    Ok(Resolved::Encoder(resolved))
}

/// The spec prefix that loads a GGUF decoder's weights dequantised to f32 (their exact
/// values, 4 bytes each) instead of keeping the blocks and multiplying with int8 activations.
pub const DEQUANTIZE_PREFIX: &str = "dequantize:";

fn wants_dequantize(spec: &str) -> bool {
    spec.starts_with(DEQUANTIZE_PREFIX)
}

/// `NAME=SPEC` with SPEC given the `dequantize:` prefix when it is a local decoder (a GGUF
/// file, or a folder whose bf16/f16 weights are then widened at load): what `--dequantize`
/// does to every model; other specs unchanged.
pub fn dequantized_spec(named: &str) -> String {
    let (name, spec) = match named.split_once('=') {
        Some((n, s)) => (Some(n), s),
        None => (None, named),
    };
    if local_decoder_path(spec).is_none() || wants_dequantize(spec) {
        return named.to_owned();
    }
    match name {
        Some(n) => format!("{n}={DEQUANTIZE_PREFIX}{spec}"),
        None => format!("{DEQUANTIZE_PREFIX}{spec}"),
    }
}

/// The file or folder of a local generative model named by `spec` (a `.gguf` file, or a
/// folder / `hf:` snapshot whose config.json names a decoder family), if it is one.
pub(crate) fn local_decoder_path(spec: &str) -> Option<PathBuf> {
    use lmcompare_engine::decoder::Decoder;
    let spec = spec.strip_prefix(DEQUANTIZE_PREFIX).unwrap_or(spec);
    let path = std::path::Path::new(spec);
    if path.is_file() && Decoder::is_decoder(path) {
        return Some(path.to_owned());
    }
    let resolved = lmcompare_engine::spec::resolve(spec).ok()?;
    Decoder::is_decoder(&resolved.dir).then_some(resolved.dir)
}
