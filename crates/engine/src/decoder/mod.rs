//! Generative decoders (Llama, Qwen 2/3, Gemma 1/2/3, GPT-2) on our own kernels, from
//! safetensors folders or GGUF files, built for scoring rather than chat.
//!
//! Scoring a prompt's continuations is one forward pass per prompt with a tree mask: the
//! prompt's tokens come first, then every continuation's tokens, each continuation seeing the
//! prompt and its own earlier tokens (positions restart after the prompt for each). So the
//! prompt is computed once for all its choices, no KV cache is copied, and nothing is padded:
//! several prompts are packed into one matrix for the dense layers, and attention runs per
//! prompt. Logits are computed only at the positions whose next token is scored; with a
//! 262k-token vocabulary that projection costs more than the whole body.
//!
//! Generation (greedy) keeps a KV cache per sequence and feeds one token per step.

mod backward;
pub mod config;
mod gguf;
mod gguf_check;
mod load;

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use tokenizers::Tokenizer;

use crate::error::{EngineError, Result};
use crate::kernels::{exp_f32, layer_norm, matmul, matmul_transposed_b, View};
pub use backward::{LoglikTape, Scored, TreeLayout};
pub use config::{DecoderConfig, DecoderFamily, FfnActivation, RopeLayout};
pub use gguf::{
    dequantize_all as dequantize_gguf, dequantize_all_blocks as dequantize_gguf_blocks,
};
pub use lmcompare_kernels::quant::QuantKernel;
use lmcompare_kernels::quant::{
    dequantize_row, quant_matmul_quantized, BlockType, QuantMatrix, QuantizedRows,
};
use lmcompare_kernels::{fast_tanh, multiversion};

/// Block-quantised weights inside the mapped GGUF file: a matrix of `rows` outputs × `cols`
/// inputs, placed at output column `col` of the layer it belongs to.
#[derive(Clone)]
pub(crate) struct QuantPart {
    pub file: std::sync::Arc<memmap2::Mmap>,
    pub ty: BlockType,
    pub start: usize,
    pub rows: usize,
    pub cols: usize,
    pub col: usize,
}

impl QuantPart {
    fn matrix(&self) -> QuantMatrix<'_> {
        let len = self.rows * self.ty.row_bytes(self.cols);
        QuantMatrix {
            ty: self.ty,
            data: &self.file[self.start..self.start + len],
            rows: self.rows,
            cols: self.cols,
            per_row: false,
        }
    }
}

/// A linear layer's weights: f32 stored transposed (`in × out`) for `x · W`, or quantised
/// blocks side by side in the output (Q, K and V fused as three parts).
pub(crate) enum Weight {
    F32(Vec<f32>),
    Quant(Vec<QuantPart>),
    /// A bf16 (or f16) checkpoint's values as stored, `in × out`: 2 bytes per weight,
    /// widened to f32 a block of output columns at a time inside the product.
    Half {
        bits: Vec<u16>,
        bf16: bool,
    },
}

/// Output columns widened from 16 bits per step of a [`Weight::Half`] product.
const HALF_COLUMNS: usize = 256;

fn widen(bits: u16, bf16: bool) -> f32 {
    if bf16 {
        f32::from_bits((bits as u32) << 16)
    } else {
        half::f16::from_bits(bits).to_f32()
    }
}

pub(crate) struct Linear {
    w: Weight,
    bias: Option<Vec<f32>>,
    input: usize,
    output: usize,
}

impl Linear {
    fn forward(&self, x: &[f32], rows: usize, out: &mut Vec<f32>) {
        // Quantised parts write every output column: no need to clear what they overwrite.
        if !matches!(self.w, Weight::Quant(_)) {
            out.clear();
        }
        out.resize(rows * self.output, 0.0);
        let input = View {
            data: x,
            rows,
            cols: self.input,
            row_stride: self.input,
        };
        match &self.w {
            Weight::F32(w) => matmul(
                out,
                self.output,
                input,
                View {
                    data: w,
                    rows: self.input,
                    cols: self.output,
                    row_stride: self.output,
                },
                false,
                true,
            ),
            Weight::Half { bits, bf16 } => {
                let mut block = Vec::new();
                for c0 in (0..self.output).step_by(HALF_COLUMNS) {
                    let cols = HALF_COLUMNS.min(self.output - c0);
                    block.clear();
                    for i in 0..self.input {
                        let row = &bits[i * self.output + c0..i * self.output + c0 + cols];
                        block.extend(row.iter().map(|&b| widen(b, *bf16)));
                    }
                    matmul(
                        &mut out[c0..],
                        self.output,
                        input,
                        View {
                            data: &block,
                            rows: self.input,
                            cols,
                            row_stride: cols,
                        },
                        false,
                        true,
                    );
                }
            }
            Weight::Quant(parts) => {
                // Parts of one type (Q and K, gate and up) share the quantised activations.
                let mut acts: Option<(BlockType, QuantizedRows)> = None;
                for p in parts {
                    if acts.as_ref().is_none_or(|(ty, _)| *ty != p.ty) {
                        acts = Some((p.ty, QuantizedRows::quantize(x, rows, self.input, p.ty)));
                    }
                    if let Some((_, a)) = &acts {
                        let kernel = QuantKernel::current();
                        quant_matmul_quantized(kernel, a, &p.matrix(), out, self.output, p.col);
                    }
                }
            }
        }
        if let Some(b) = &self.bias {
            crate::kernels::add_bias(out, b);
        }
    }

    /// The f32 weights (`in × out`), which the backward pass needs.
    fn f32_weights(&self) -> Result<&[f32]> {
        match &self.w {
            Weight::F32(w) => Ok(w),
            Weight::Quant(_) | Weight::Half { .. } => Err(needs_f32()),
        }
    }
}

fn needs_f32() -> EngineError {
    EngineError::BadInput(
        "gradients need the decoder's weights in f32: load it with --dequantize".into(),
    )
}

/// A `vocab × hidden` table (embeddings, LM head): f32, or quantised rows in the file.
pub(crate) enum Table {
    F32(Vec<f32>),
    Quant(QuantPart),
    /// A bf16/f16 checkpoint's rows as stored.
    Half {
        bits: Vec<u16>,
        bf16: bool,
    },
}

impl Table {
    /// Row `t` into `out` (`hidden` values).
    fn row_into(&self, t: usize, out: &mut [f32]) {
        let d = out.len();
        match self {
            Table::F32(w) => out.copy_from_slice(&w[t * d..(t + 1) * d]),
            Table::Quant(p) => dequantize_row(p.ty, p.matrix().row(t), out),
            Table::Half { bits, bf16 } => {
                for (o, &b) in out.iter_mut().zip(&bits[t * d..(t + 1) * d]) {
                    *o = widen(b, *bf16);
                }
            }
        }
    }

    fn f32_rows(&self) -> Result<&[f32]> {
        match self {
            Table::F32(w) => Ok(w),
            Table::Quant(_) | Table::Half { .. } => Err(needs_f32()),
        }
    }
}

pub(crate) enum Norm {
    /// RMSNorm with the effective per-channel scale (Gemma's `1 + w` already folded in).
    Rms(Vec<f32>),
    Layer(Vec<f32>, Vec<f32>),
}

impl Norm {
    fn apply(&self, x: &mut [f32], eps: f32) {
        match self {
            Norm::Rms(w) => rms_norm(x, w, eps),
            Norm::Layer(g, b) => layer_norm(x, g, b, eps),
        }
    }
}

pub(crate) struct Layer {
    attn_norm: Norm,
    /// Q, K and V side by side (one product instead of three).
    qkv: Linear,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    o: Linear,
    post_attn_norm: Option<Norm>,
    ffn_norm: Norm,
    /// Gate and up side by side for gated MLPs; the single up projection for GPT-2.
    up: Linear,
    gated: bool,
    down: Linear,
    post_ffn_norm: Option<Norm>,
}

impl Weights {
    fn has_half(&self) -> bool {
        self.layers.iter().any(|l| {
            [&l.qkv, &l.o, &l.up, &l.down]
                .iter()
                .any(|lin| matches!(lin.w, Weight::Half { .. }))
        })
    }

    /// Bytes the weights occupy, and how many of them are quantised blocks.
    fn bytes(&self) -> (u64, u64) {
        let mut total = 0u64;
        let mut quant = 0u64;
        let mut part = |p: &QuantPart| {
            let b = (p.rows * p.ty.row_bytes(p.cols)) as u64;
            total += b;
            quant += b;
        };
        let mut f32s = 0usize;
        let mut halves = 0usize;
        let norm = |n: &Norm| match n {
            Norm::Rms(w) => w.len(),
            Norm::Layer(g, b) => g.len() + b.len(),
        };
        for l in &self.layers {
            for lin in [&l.qkv, &l.o, &l.up, &l.down] {
                match &lin.w {
                    Weight::F32(w) => f32s += w.len(),
                    Weight::Quant(parts) => parts.iter().for_each(&mut part),
                    Weight::Half { bits, .. } => halves += bits.len(),
                }
                f32s += lin.bias.as_ref().map_or(0, Vec::len);
            }
            f32s += norm(&l.attn_norm) + norm(&l.ffn_norm);
            f32s += [&l.post_attn_norm, &l.post_ffn_norm]
                .iter()
                .map(|n| n.as_ref().map_or(0, norm))
                .sum::<usize>();
            f32s += l.q_norm.as_ref().map_or(0, Vec::len) + l.k_norm.as_ref().map_or(0, Vec::len);
        }
        for t in std::iter::once(&self.embed).chain(self.lm_head.as_ref()) {
            match t {
                Table::F32(w) => f32s += w.len(),
                Table::Quant(p) => part(p),
                Table::Half { bits, .. } => halves += bits.len(),
            }
        }
        f32s += self.positions.as_ref().map_or(0, Vec::len) + norm(&self.final_norm);
        (total + 4 * f32s as u64 + 2 * halves as u64, quant)
    }
}

pub(crate) struct Weights {
    /// `vocab × hidden`.
    embed: Table,
    positions: Option<Vec<f32>>,
    layers: Vec<Layer>,
    final_norm: Norm,
    /// `vocab × hidden` when not tied to the embeddings.
    lm_head: Option<Table>,
}

/// Parameters and bytes on disk, by component (read while loading).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DecoderSize {
    pub parameters: u64,
    pub embedding_parameters: u64,
    pub file_bytes: u64,
    /// Storage types of the weights as found (e.g. "Q4_K: 108, F32: 199" or "F32").
    pub storage: String,
    /// How the weights are held and multiplied (quantised blocks with int8 kernels, or f32).
    pub compute: String,
    /// Bytes the weights occupy in memory (mapped file pages included), and per parameter.
    pub weight_bytes: u64,
    pub bits_per_weight: f64,
}

/// How to load a decoder.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Dequantise GGUF weights to f32 at load (the weights' exact values, 4 bytes each)
    /// instead of keeping the blocks and multiplying with int8 activations.
    pub dequantize: bool,
}

pub struct Decoder {
    pub config: DecoderConfig,
    weights: Weights,
    tokenizer: Tokenizer,
    /// Tokens every sequence starts with (BOS where the model uses one).
    prefix: Vec<u32>,
    pub size: DecoderSize,
    pub source: PathBuf,
    /// "safetensors" or "gguf".
    pub format: &'static str,
    pub tokenizer_source: String,
    /// GEGLU as llama.cpp's CPU backend computes it (`GGML_GELU_FP16`): the gate rounded to
    /// f16 and looked up in an f16 table. On quantised weights that rounding decides which way
    /// many activations round to 8 bits, so the quantised path follows it to give llama.cpp's
    /// numbers; the f32 path keeps the exact GELU.
    llama_cpp_gelu: bool,
}

/// What a scoring call did, for the efficiency report.
#[derive(Debug, Clone, Default)]
pub struct ScoreStats {
    /// Requests whose context lost tokens from the left to fit the model.
    pub truncated: usize,
    /// Tokens run through the body, and rows projected onto the vocabulary.
    pub fed_tokens: usize,
    pub lm_rows: usize,
    pub flops: f64,
}

/// One prompt and the continuations whose log-likelihoods are wanted.
#[derive(Debug, Clone)]
pub struct ScoreRequest {
    pub context: Vec<u32>,
    pub continuations: Vec<Vec<u32>>,
}

/// The log-probability of each continuation token, and whether each was the greedy choice.
#[derive(Debug, Clone, PartialEq)]
pub struct ContinuationScore {
    pub logprobs: Vec<f64>,
    pub greedy: bool,
}

impl ContinuationScore {
    pub fn sum(&self) -> f64 {
        self.logprobs.iter().sum()
    }
}

/// A sequence in a packed forward pass: its new tokens with their positions and tree
/// segments (0 = shared prefix, k = the k-th branch), and optionally the cache it extends.
struct Packed<'a> {
    tokens: &'a [u32],
    positions: Vec<usize>,
    segments: Vec<u32>,
    cache: Option<&'a mut KvCache>,
}

/// Keys and values of every layer, for generation.
#[derive(Default, Clone)]
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
}

impl Decoder {
    /// Loads a `.gguf` file or an HF folder with `config.json`, a tokenizer and safetensors.
    pub fn load(path: &Path) -> Result<Decoder> {
        Decoder::load_with(path, LoadOptions::default())
    }

    pub fn load_with(path: &Path, options: LoadOptions) -> Result<Decoder> {
        let mut d = if path.is_file() {
            gguf::load_gguf(path, options.dequantize)?
        } else {
            load::load_folder(path, options.dequantize)?
        };
        let (bytes, quantised) = d.weights.bytes();
        d.size.weight_bytes = bytes;
        d.size.bits_per_weight = bytes as f64 * 8.0 / d.size.parameters.max(1) as f64;
        d.size.compute = if quantised > 0 {
            format!(
                "quantised blocks mapped from the file, int8 activations ({} kernel)",
                QuantKernel::current().name()
            )
        } else if d.format == "gguf" {
            "f32, dequantised at load".into()
        } else if d.weights.has_half() {
            "16-bit as stored (bf16/f16 matrices, widened to f32 per block inside the products)"
                .into()
        } else {
            "f32".into()
        };
        Ok(d)
    }

    /// Whether `path` holds a decoder lmcompare can run (a `.gguf` file, or a folder whose
    /// `config.json` names a decoder family).
    pub fn is_decoder(path: &Path) -> bool {
        if path.is_file() {
            return path.extension().and_then(|e| e.to_str()) == Some("gguf");
        }
        std::fs::read_to_string(path.join("config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|v| DecoderConfig::family_of(&v).is_some())
    }

    /// Bounds every context (scoring and generation) to `n` positions, below the model's
    /// own limit: `--max-length` for decoders. Longer inputs lose tokens from the left and
    /// are counted as truncated.
    pub fn limit_positions(&mut self, n: usize) -> Result<()> {
        if n < 2 {
            return Err(EngineError::BadInput(
                "--max-length must be at least 2".into(),
            ));
        }
        self.config.max_positions = self.config.max_positions.min(n);
        Ok(())
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The tokens of `text` (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| EngineError::Runtime(format!("tokenizer: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| EngineError::Runtime(format!("tokenizer: {e}")))
    }

    /// The tokens a sequence starts with: BOS, or for models without one (GPT-2) the
    /// end-of-text token, as lm-evaluation-harness does, so the first real token is scored.
    pub fn prefix(&self) -> &[u32] {
        &self.prefix
    }

    /// What an empty context becomes: the prefix, or for models without one the
    /// end-of-text token (lm-evaluation-harness's choice for GPT-2), so the first real token
    /// has something to be predicted from.
    pub fn start_tokens(&self) -> Vec<u32> {
        if !self.prefix.is_empty() {
            return self.prefix.clone();
        }
        self.config
            .bos_token_id
            .or(self.config.eos_token_id)
            .into_iter()
            .collect()
    }

    /// `context` and `continuation` as token ids, split the way lm-evaluation-harness does:
    /// trailing spaces of the context move to the continuation, the pair is encoded whole,
    /// and the continuation is what follows the context's own encoding.
    pub fn encode_pair(&self, context: &str, continuation: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        let trimmed = context.trim_end_matches(' ');
        let moved = &context[trimmed.len()..];
        let cont_text = format!("{moved}{continuation}");
        let mut ctx = self.prefix.clone();
        ctx.extend(self.encode(trimmed)?);
        let mut whole = self.prefix.clone();
        whole.extend(self.encode(&format!("{trimmed}{cont_text}"))?);
        let cont = if whole.starts_with(&ctx) && whole.len() > ctx.len() {
            whole[ctx.len()..].to_vec()
        } else {
            self.encode(&cont_text)?
        };
        Ok((ctx, cont))
    }

    /// Each request as one tree-masked sequence (its context once, then every continuation
    /// but its last token), and how many requests had contexts cut to fit. A continuation's
    /// last token is never fed, so a context fits when `context + continuation - 1` tokens
    /// fit the positions. A request that does not fit is split as lm-evaluation-harness
    /// scores it: each continuation after the last `positions + 1 - continuation` tokens of
    /// the context, so a short choice keeps context a long one had to give up.
    fn plan(&self, requests: &[ScoreRequest]) -> Result<(Vec<Tree>, usize)> {
        let max = self.config.max_positions;
        let mut truncated = 0;
        let mut trees: Vec<Tree> = Vec::new();
        for (ri, r) in requests.iter().enumerate() {
            if r.continuations.iter().any(Vec::is_empty) {
                return Err(EngineError::BadInput(
                    "a continuation has no tokens; nothing to score".into(),
                ));
            }
            let mut ctx = r.context.clone();
            if ctx.is_empty() {
                ctx = self.start_tokens();
            }
            if ctx.is_empty() {
                return Err(EngineError::BadInput(
                    "empty context, and the model has no BOS or end-of-text token to start from"
                        .into(),
                ));
            }
            self.check_ids(&ctx)?;
            for c in &r.continuations {
                self.check_ids(c)?;
                if c.len() > max {
                    return Err(EngineError::BadInput(format!(
                        "a continuation of {} tokens does not fit the model's {max} positions",
                        c.len()
                    )));
                }
            }
            let longest = r.continuations.iter().map(Vec::len).max().unwrap_or(1);
            if ctx.len() + longest - 1 <= max {
                trees.push(Tree::new(ri, ctx, r, (0..r.continuations.len()).collect()));
                continue;
            }
            truncated += 1;
            // Continuations that keep the same context share a tree.
            let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
            for (k, c) in r.continuations.iter().enumerate() {
                let keep = (max + 1 - c.len()).min(ctx.len());
                match groups.iter_mut().find(|g| g.0 == keep) {
                    Some(g) => g.1.push(k),
                    None => groups.push((keep, vec![k])),
                }
            }
            for (keep, members) in groups {
                // keep ≥ 1: continuations are at most `max` tokens.
                trees.push(Tree::new(ri, ctx[ctx.len() - keep..].to_vec(), r, members));
            }
        }
        Ok((trees, truncated))
    }

    /// What scoring `requests` costs (tokens fed, LM-head rows, FLOPs) without running it.
    pub fn cost(&self, requests: &[ScoreRequest]) -> Result<ScoreStats> {
        let (trees, truncated) = self.plan(requests)?;
        Ok(self.cost_of(&trees, truncated, requests))
    }

    /// The cost of planned trees (see [`Decoder::cost`]).
    fn cost_of(&self, trees: &[Tree], truncated: usize, requests: &[ScoreRequest]) -> ScoreStats {
        let mut stats = ScoreStats {
            truncated,
            ..ScoreStats::default()
        };
        for t in trees {
            let r = &requests[t.request];
            stats.fed_tokens += t.tokens.len();
            stats.flops += t
                .positions
                .iter()
                .map(|&p| self.token_flops(p + 1))
                .sum::<f64>();
            stats.lm_rows += 1 + t
                .continuations
                .iter()
                .map(|&k| r.continuations[k].len() - 1)
                .sum::<usize>();
        }
        stats.flops +=
            stats.lm_rows as f64 * 2.0 * (self.config.hidden * self.config.vocab_size) as f64;
        stats
    }

    /// Log-likelihoods of every request's continuations. Contexts too long for the model
    /// lose tokens from the left (after the prefix); the count of such requests is returned.
    pub fn score(
        &self,
        requests: &[ScoreRequest],
    ) -> Result<(Vec<Vec<ContinuationScore>>, ScoreStats)> {
        let (trees, truncated) = self.plan(requests)?;
        let stats = self.cost_of(&trees, truncated, requests);
        let mut packed: Vec<Packed<'_>> = trees
            .iter()
            .map(|t| Packed {
                tokens: &t.tokens,
                positions: t.positions.clone(),
                segments: t.segments.clone(),
                cache: None,
            })
            .collect();
        let hidden = self
            .forward(&mut packed)
            .map_err(|e| e.remap_input(|i| trees.get(i).map_or(i, |t| t.request)))?;
        drop(packed);
        // The rows whose next-token distribution is needed, and what each one scores: the
        // prompt's last row gives every continuation's first token; a continuation's own
        // rows give its later tokens.
        let d = self.config.hidden;
        let mut rows: Vec<usize> = Vec::new();
        let mut owners: Vec<(usize, Vec<Target>)> = Vec::new();
        let mut base = 0;
        for tree in &trees {
            let (i, r) = (tree.request, &requests[tree.request]);
            rows.push(base + tree.context_len - 1);
            owners.push((
                i,
                tree.continuations
                    .iter()
                    .map(|&k| (k, 0, r.continuations[k][0]))
                    .collect(),
            ));
            let mut offset = base + tree.context_len;
            for &k in &tree.continuations {
                let c = &r.continuations[k];
                for (t, &tok) in c.iter().enumerate().skip(1) {
                    rows.push(offset + t - 1);
                    owners.push((i, vec![(k, t, tok)]));
                }
                offset += c.len() - 1;
            }
            base += tree.tokens.len();
        }
        let mut out: Vec<Vec<ContinuationScore>> = requests
            .iter()
            .map(|r| {
                r.continuations
                    .iter()
                    .map(|c| ContinuationScore {
                        logprobs: vec![0.0; c.len()],
                        greedy: true,
                    })
                    .collect()
            })
            .collect();
        for (chunk_rows, chunk_owners) in rows.chunks(LM_HEAD_ROWS).zip(owners.chunks(LM_HEAD_ROWS))
        {
            let mut x: Vec<f32> = Vec::with_capacity(chunk_rows.len() * d);
            for &r in chunk_rows {
                x.extend_from_slice(&hidden[r * d..(r + 1) * d]);
            }
            let wanted: Vec<Vec<u32>> = chunk_owners
                .iter()
                .map(|(_, targets)| targets.iter().map(|t| t.2).collect())
                .collect();
            let heads = self.lm_head_rows(&x, chunk_rows.len(), &wanted);
            for (head, owner) in heads.iter().zip(chunk_owners) {
                let (req, targets) = owner;
                head.check(*req)?;
                let log_z = head.sum.ln();
                for (&(k, t, token), &logit) in targets.iter().zip(&head.picked) {
                    let lp = (logit - head.max) as f64 - log_z;
                    let s = &mut out[*req][k];
                    s.logprobs[t] = lp;
                    s.greedy &= token == head.arg;
                }
            }
        }
        Ok((out, stats))
    }

    /// FLOPs (a multiply-add = 2) of one token through the body that attends `keys` keys
    /// (fewer in sliding-window layers), as the design's cost model counts them.
    pub fn token_flops(&self, keys: usize) -> f64 {
        let c = &self.config;
        let (d, qd, kvd) = (
            c.hidden as f64,
            (c.heads * c.head_dim) as f64,
            (c.kv_heads * c.head_dim) as f64,
        );
        let mlp = if c.family == DecoderFamily::Gpt2 {
            4.0
        } else {
            6.0
        } * d
            * c.ffn as f64;
        let dense = 2.0 * d * qd + 4.0 * d * kvd + 2.0 * qd * d + mlp;
        (0..c.layers)
            .map(|l| {
                let k = match c.sliding_window {
                    Some(w) if c.sliding_layers[l] => keys.min(w),
                    _ => keys,
                };
                dense + 4.0 * (c.heads * c.head_dim) as f64 * k as f64
            })
            .sum()
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&t| t as usize >= self.config.vocab_size) {
            Some(t) => Err(EngineError::BadInput(format!(
                "token id {t} is outside the model's vocabulary of {} (a tokenizer that does not fit the model?)",
                self.config.vocab_size
            ))),
            None => Ok(()),
        }
    }

    /// Greedy continuations of each prompt: at most `max_new` tokens, ending early at the
    /// end-of-sequence token or when `stop` says the text so far is finished. Also returns
    /// how many prompts lost tokens from the left to leave room for the new ones.
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        max_new: usize,
        stop: &(dyn Fn(usize, &[u32]) -> bool + Sync),
    ) -> Result<(Vec<Vec<u32>>, usize)> {
        let mut truncated = 0;
        let mut caches: Vec<KvCache> = vec![KvCache::default(); prompts.len()];
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
        let mut active: Vec<usize> = Vec::new();
        let mut next: Vec<Vec<u32>> = Vec::new();
        for (i, p) in prompts.iter().enumerate() {
            if p.is_empty() {
                return Err(EngineError::BadInput("an empty prompt".into()));
            }
            self.check_ids(p)?;
            let keep = self.config.max_positions.saturating_sub(max_new);
            if keep == 0 {
                return Err(EngineError::BadInput(format!(
                    "{max_new} new tokens do not fit the model's {} positions",
                    self.config.max_positions
                )));
            }
            // Too long a prompt loses tokens from the left, as in scoring.
            let mut p = p.clone();
            if p.len() > keep {
                p.drain(..p.len() - keep);
                truncated += 1;
            }
            active.push(i);
            next.push(p);
        }
        for _ in 0..max_new {
            if active.is_empty() {
                break;
            }
            let mut cache_refs: Vec<Option<&mut KvCache>> = caches.iter_mut().map(Some).collect();
            let mut packed: Vec<Packed<'_>> = Vec::new();
            for (&i, toks) in active.iter().zip(&next) {
                let cache = cache_refs[i]
                    .take()
                    .ok_or_else(|| EngineError::Runtime("a sequence is packed twice".into()))?;
                let start = cache.len;
                packed.push(Packed {
                    tokens: toks,
                    positions: (start..start + toks.len()).collect(),
                    segments: vec![0; toks.len()],
                    cache: Some(cache),
                });
            }
            let hidden = self
                .forward(&mut packed)
                .map_err(|e| e.remap_input(|i| active.get(i).copied().unwrap_or(i)))?;
            drop(packed);
            let d = self.config.hidden;
            let mut x = Vec::with_capacity(active.len() * d);
            let mut row = 0;
            for toks in &next {
                row += toks.len();
                x.extend_from_slice(&hidden[(row - 1) * d..row * d]);
            }
            let heads = self.lm_head_rows(&x, active.len(), &vec![Vec::new(); active.len()]);
            for (head, &i) in heads.iter().zip(&active) {
                head.check(i)?;
            }
            let picks: Vec<u32> = heads.iter().map(|h| h.arg).collect();
            let mut still = Vec::new();
            let mut feed = Vec::new();
            for (&i, t) in active.iter().zip(picks) {
                out[i].push(t);
                if Some(t) == self.config.eos_token_id || stop(i, &out[i]) {
                    continue;
                }
                still.push(i);
                feed.push(vec![t]);
            }
            active = still;
            next = feed;
        }
        Ok((out, truncated))
    }

    /// Log-probabilities over the vocabulary at every position of `ids` (for tests and
    /// per-token inspection).
    pub fn log_softmax_all(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        self.check_ids(ids)?;
        let mut packed = vec![Packed {
            tokens: ids,
            positions: (0..ids.len()).collect(),
            segments: vec![0; ids.len()],
            cache: None,
        }];
        let hidden = self.forward(&mut packed)?;
        let logits = self.lm_head(&hidden, ids.len());
        Ok(logits
            .chunks_exact(self.config.vocab_size)
            .map(|row| {
                let (max, _) = row_argmax(row);
                let log_z = sum_exp(row, max).ln() as f32;
                row.iter().map(|&x| x - max - log_z).collect()
            })
            .collect())
    }

    /// Final-normed hidden rows → logits (`rows × vocab`), soft-capped where the model says.
    fn lm_head(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let v = self.config.vocab_size;
        let mut logits = vec![0.0f32; rows * v];
        let head = HeadInput::new(self, x, rows);
        self.lm_head_slice(&head, 0..v, &mut logits, v);
        logits
    }

    /// What scoring and greedy decoding need of each row's next-token distribution: its
    /// largest logit and where, log Σ exp, and the logits of the `wanted` tokens. Computed a
    /// slice of the vocabulary at a time, so no `rows × vocab` logits are ever held (for
    /// Gemma's 262,144 tokens that was 1 MB per row, more than the activations).
    fn lm_head_rows(&self, x: &[f32], rows: usize, wanted: &[Vec<u32>]) -> Vec<HeadRow> {
        let v = self.config.vocab_size;
        let head = HeadInput::new(self, x, rows);
        let mut out: Vec<HeadRow> = wanted
            .iter()
            .map(|w| HeadRow {
                max: f32::NEG_INFINITY,
                arg: 0,
                sum: 0.0,
                picked: vec![0.0; w.len()],
                bad: None,
            })
            .collect();
        let mut logits = vec![0.0f32; rows * VOCAB_SLICE.min(v)];
        for v0 in (0..v).step_by(VOCAB_SLICE) {
            let n = VOCAB_SLICE.min(v - v0);
            let slice = &mut logits[..rows * n];
            self.lm_head_slice(&head, v0..v0 + n, slice, n);
            slice
                .par_chunks_exact(n)
                .zip(out.par_iter_mut())
                .zip(wanted.par_iter())
                .for_each(|((row, acc), wanted)| acc.add_slice(row, v0, wanted));
        }
        out
    }

    /// Logits of vocabulary rows `vocab` for every row of `head`, into `out` (`rows ×
    /// stride`, the slice's first token at column 0), soft-capped where the model says.
    fn lm_head_slice(
        &self,
        head: &HeadInput<'_>,
        vocab: std::ops::Range<usize>,
        out: &mut [f32],
        stride: usize,
    ) {
        let cfg = &self.config;
        let d = cfg.hidden;
        let (rows, n) = (head.rows, vocab.len());
        let x = View {
            data: head.x,
            rows,
            cols: d,
            row_stride: d,
        };
        match &head.table {
            HeadTable::F32(table) => crate::kernels::matmul_transposed_b_parallel(
                out,
                stride,
                x,
                View {
                    data: &table[vocab.start * d..vocab.end * d],
                    rows: n,
                    cols: d,
                    row_stride: d,
                },
            ),
            HeadTable::Quant(all, acts) => {
                let rb = all.ty.row_bytes(d);
                let part = QuantMatrix {
                    data: &all.data[vocab.start * rb..vocab.end * rb],
                    rows: n,
                    ..*all
                };
                quant_matmul_quantized(QuantKernel::current(), acts, &part, out, stride, 0);
            }
            HeadTable::Half { bits, bf16 } => {
                // Vocabulary rows widened a block at a time.
                const BLOCK: usize = 4096;
                let mut block = Vec::with_capacity(BLOCK.min(n) * d);
                for b0 in (0..n).step_by(BLOCK) {
                    let m = BLOCK.min(n - b0);
                    let first = vocab.start + b0;
                    block.clear();
                    block.extend(
                        bits[first * d..(first + m) * d]
                            .iter()
                            .map(|&b| widen(b, *bf16)),
                    );
                    crate::kernels::matmul_transposed_b_parallel(
                        &mut out[b0..],
                        stride,
                        x,
                        View {
                            data: &block,
                            rows: m,
                            cols: d,
                            row_stride: d,
                        },
                    );
                }
            }
        }
        if let Some(cap) = cfg.final_softcap {
            for row in out.chunks_mut(stride).take(rows) {
                softcap(&mut row[..n], cap);
            }
        }
    }

    /// The packed forward pass; returns the final-normed hidden state of every new token.
    fn forward(&self, seqs: &mut [Packed<'_>]) -> Result<Vec<f32>> {
        let cfg = &self.config;
        let d = cfg.hidden;
        let rows: usize = seqs.iter().map(|s| s.tokens.len()).sum();
        let mut x = vec![0.0f32; rows * d];
        let scale = if cfg.scale_embeddings {
            // Gemma multiplies by √hidden rounded to the activation dtype (f32 here).
            (d as f32).sqrt()
        } else {
            1.0
        };
        let mut r = 0;
        for s in seqs.iter() {
            for (&t, &p) in s.tokens.iter().zip(&s.positions) {
                let dst = &mut x[r * d..(r + 1) * d];
                self.weights.embed.row_into(t as usize, dst);
                for o in dst.iter_mut() {
                    *o *= scale;
                }
                if let Some(pos) = &self.weights.positions {
                    if p >= cfg.max_positions {
                        return Err(EngineError::BadInput(format!(
                            "position {p} is past the model's {} learned positions",
                            cfg.max_positions
                        )));
                    }
                    for (o, e) in dst.iter_mut().zip(&pos[p * d..(p + 1) * d]) {
                        *o += e;
                    }
                }
                r += 1;
            }
        }
        let mut offsets = vec![0usize];
        for s in seqs.iter() {
            offsets.push(offsets[offsets.len() - 1] + s.tokens.len());
        }
        let check = |x: &[f32], stage: &dyn Fn() -> String| {
            crate::finite::check_rows(x, d, stage, |row| {
                crate::finite::sequence_of_row(&offsets, row)
            })
        };
        check(&x, &|| "the token embeddings".into())?;
        let max_pos = seqs
            .iter()
            .flat_map(|s| s.positions.iter().copied())
            .max()
            .unwrap_or(0);
        let tables: Vec<Option<RopeTable>> = [cfg.rope_global.as_ref(), cfg.rope_local.as_ref()]
            .iter()
            .map(|r| r.map(|r| RopeTable::new(r, max_pos + 1)))
            .collect();
        let (qd, kvd) = (cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim);
        let mut h = vec![0.0f32; rows * d];
        let mut qkv = Vec::new();
        let mut proj = Vec::new();
        let mut ff = Vec::new();
        let mut act = Vec::new();
        for (li, layer) in self.weights.layers.iter().enumerate() {
            h.copy_from_slice(&x);
            layer.attn_norm.apply(&mut h, cfg.norm_eps);
            layer.qkv.forward(&h, rows, &mut qkv);
            let width = qd + 2 * kvd;
            if let Some(w) = &layer.q_norm {
                for row in qkv.chunks_exact_mut(width) {
                    rms_norm(&mut row[..qd], w, cfg.norm_eps);
                }
            }
            if let Some(w) = &layer.k_norm {
                for row in qkv.chunks_exact_mut(width) {
                    rms_norm(&mut row[qd..qd + kvd], w, cfg.norm_eps);
                }
            }
            let table = if cfg.sliding_layers[li] && tables[1].is_some() {
                tables[1].as_ref()
            } else {
                tables[0].as_ref()
            };
            if let Some(table) = table {
                let mut r = 0;
                for s in seqs.iter() {
                    for &p in &s.positions {
                        let row = &mut qkv[r * width..r * width + qd + kvd];
                        table.rotate(row, p, cfg.head_dim, cfg.rope_layout);
                        r += 1;
                    }
                }
            }
            let window = cfg.sliding_window.filter(|_| cfg.sliding_layers[li]);
            let attn = self.attention(seqs, &qkv, li, window);
            layer.o.forward(&attn, rows, &mut proj);
            if let Some(n) = &layer.post_attn_norm {
                n.apply(&mut proj, cfg.norm_eps);
            }
            add_into(&mut x, &proj);
            check(&x, &|| format!("layer {li} attention block"))?;
            h.copy_from_slice(&x);
            layer.ffn_norm.apply(&mut h, cfg.norm_eps);
            // The feed-forward block is row by row: run it in slices of rows, so its widest
            // buffers (gate and up, `2 × ffn` per row) stay bounded for long packed batches.
            proj.clear();
            proj.resize(rows * d, 0.0);
            let mut part = Vec::new();
            for start in (0..rows).step_by(FFN_ROWS) {
                let n = FFN_ROWS.min(rows - start);
                let hs = &h[start * d..(start + n) * d];
                layer.up.forward(hs, n, &mut ff);
                if layer.gated {
                    act.clear();
                    act.resize(n * cfg.ffn, 0.0);
                    if self.llama_cpp_gelu && cfg.activation != FfnActivation::Silu {
                        geglu_f16_table(&ff, &mut act, cfg.ffn);
                    } else {
                        gated_activation(
                            &ff,
                            &mut act,
                            cfg.ffn,
                            cfg.activation == FfnActivation::Silu,
                        );
                    }
                    layer.down.forward(&act, n, &mut part);
                } else {
                    gelu_tanh_inplace(&mut ff);
                    layer.down.forward(&ff, n, &mut part);
                }
                proj[start * d..(start + n) * d].copy_from_slice(&part);
            }
            if let Some(n) = &layer.post_ffn_norm {
                n.apply(&mut proj, cfg.norm_eps);
            }
            add_into(&mut x, &proj);
            check(&x, &|| format!("layer {li} feed-forward block"))?;
        }
        self.weights.final_norm.apply(&mut x, cfg.norm_eps);
        check(&x, &|| "the final norm".into())?;
        Ok(x)
    }

    /// Attention of every sequence at its own length (tree mask, sliding window, GQA), with
    /// cached keys first for sequences that extend a cache; returns `rows × heads·head_dim`.
    fn attention(
        &self,
        seqs: &mut [Packed<'_>],
        qkv: &[f32],
        layer: usize,
        window: Option<usize>,
    ) -> Vec<f32> {
        let cfg = &self.config;
        let hd = cfg.head_dim;
        let (qd, kvd) = (cfg.heads * hd, cfg.kv_heads * hd);
        let width = qd + 2 * kvd;
        // Append new keys/values to caches first, so attention reads them in one place.
        let mut starts = Vec::with_capacity(seqs.len());
        let mut r = 0;
        for s in seqs.iter_mut() {
            starts.push(r);
            let n = s.tokens.len();
            if let Some(cache) = s.cache.as_deref_mut() {
                if cache.k.len() <= layer {
                    cache.k.resize(cfg.layers, Vec::new());
                    cache.v.resize(cfg.layers, Vec::new());
                }
                for i in r..r + n {
                    let row = &qkv[i * width..(i + 1) * width];
                    cache.k[layer].extend_from_slice(&row[qd..qd + kvd]);
                    cache.v[layer].extend_from_slice(&row[qd + kvd..]);
                }
                if layer + 1 == cfg.layers {
                    cache.len += n;
                }
            }
            r += n;
        }
        let group = cfg.heads / cfg.kv_heads;
        let parts: Vec<Vec<f32>> = seqs
            .par_iter()
            .zip(&starts)
            .map(|(s, &start)| {
                let n = s.tokens.len();
                let q_rows = &qkv[start * width..(start + n) * width];
                // Keys: the cache (which now ends with this call's tokens) or the new rows.
                let (k_data, v_data, k_stride, past) = match s.cache.as_deref() {
                    Some(c) => (
                        &c.k[layer][..],
                        &c.v[layer][..],
                        kvd,
                        c.k[layer].len() / kvd - n,
                    ),
                    None => (&q_rows[qd..], &q_rows[qd + kvd..], width, 0),
                };
                let nk = past + n;
                let mut out = vec![0.0f32; n * qd];
                let mut scores = vec![0.0f32; n * nk];
                for head in 0..cfg.heads {
                    let g = head / group;
                    matmul_transposed_b(
                        &mut scores,
                        nk,
                        View {
                            data: &q_rows[head * hd..],
                            rows: n,
                            cols: hd,
                            row_stride: width,
                        },
                        View {
                            data: &k_data[g * hd..],
                            rows: nk,
                            cols: hd,
                            row_stride: k_stride,
                        },
                    );
                    for i in 0..n {
                        let row = &mut scores[i * nk..(i + 1) * nk];
                        let (pi, si) = (s.positions[i], s.segments[i]);
                        for (j, v) in row.iter_mut().enumerate() {
                            let (pj, ok) = if j < past {
                                (j, true)
                            } else {
                                let jj = j - past;
                                let sj = s.segments[jj];
                                (s.positions[jj], jj <= i && (sj == 0 || sj == si))
                            };
                            let visible = ok && pj <= pi && window.is_none_or(|w| pi - pj < w);
                            *v = if visible {
                                let x = *v * cfg.attn_scale;
                                match cfg.attn_softcap {
                                    Some(c) => fast_tanh(x / c) * c,
                                    None => x,
                                }
                            } else {
                                f32::NEG_INFINITY
                            };
                        }
                    }
                    softmax_rows(&mut scores, nk);
                    matmul(
                        &mut out[head * hd..],
                        qd,
                        View {
                            data: &scores,
                            rows: n,
                            cols: nk,
                            row_stride: nk,
                        },
                        View {
                            data: &v_data[g * hd..],
                            rows: nk,
                            cols: hd,
                            row_stride: k_stride,
                        },
                        false,
                        false,
                    );
                }
                out
            })
            .collect();
        parts.concat()
    }
}

/// One request as a tree-masked sequence: tokens fed, their positions, their segments
/// (0 = the prompt, k = the k-th continuation), and the prompt's length.
/// One packed sequence of a scoring call: a context and the continuations of request
/// `request` it serves (by index), with every fed token's position and tree segment
/// (0 = the context, k = the k-th branch).
struct Tree {
    request: usize,
    continuations: Vec<usize>,
    tokens: Vec<u32>,
    positions: Vec<usize>,
    segments: Vec<u32>,
    context_len: usize,
}

impl Tree {
    /// A continuation's last token is never an input: its probability comes from the row
    /// before it.
    fn new(request: usize, ctx: Vec<u32>, r: &ScoreRequest, continuations: Vec<usize>) -> Tree {
        let context_len = ctx.len();
        let mut tokens = ctx;
        let mut positions: Vec<usize> = (0..context_len).collect();
        let mut segments = vec![0u32; context_len];
        for (branch, &k) in continuations.iter().enumerate() {
            let fed = &r.continuations[k][..r.continuations[k].len() - 1];
            tokens.extend_from_slice(fed);
            positions.extend(context_len..context_len + fed.len());
            segments.extend(std::iter::repeat_n(branch as u32 + 1, fed.len()));
        }
        Tree {
            request,
            continuations,
            tokens,
            positions,
            segments,
            context_len,
        }
    }
}

/// A token a row's distribution scores: (continuation, index in it, token id).
type Target = (usize, usize, u32);

/// Rows per LM-head product: enough to amortise reading (and, quantised, decoding) the
/// vocabulary matrix; the logits are only ever held a slice of the vocabulary at a time.
const LM_HEAD_ROWS: usize = 64;

/// Vocabulary rows per slice of the LM head: 64 rows' logits are 16 MB at most. (16k-row
/// slices made the quantised scoring 5% slower; `sum_exp` flushes its f32 lanes every 4096
/// values, so slices on those boundaries sum as a whole row does.)
const VOCAB_SLICE: usize = 65_536;

/// The LM head's input: the final-normed rows and the table they meet.
struct HeadInput<'a> {
    x: &'a [f32],
    rows: usize,
    table: HeadTable<'a>,
}

enum HeadTable<'a> {
    F32(&'a [f32]),
    /// The blocks, and the rows quantised for them once for every slice.
    Quant(QuantMatrix<'a>, Box<QuantizedRows>),
    Half {
        bits: &'a [u16],
        bf16: bool,
    },
}

impl<'a> HeadInput<'a> {
    fn new(decoder: &'a Decoder, x: &'a [f32], rows: usize) -> HeadInput<'a> {
        let w = &decoder.weights;
        let table = match w.lm_head.as_ref().unwrap_or(&w.embed) {
            Table::F32(t) => HeadTable::F32(t),
            Table::Quant(p) => HeadTable::Quant(
                p.matrix(),
                Box::new(QuantizedRows::quantize(
                    x,
                    rows,
                    decoder.config.hidden,
                    p.ty,
                )),
            ),
            Table::Half { bits, bf16 } => HeadTable::Half { bits, bf16: *bf16 },
        };
        HeadInput { x, rows, table }
    }
}

/// One row's next-token distribution, summarised slice by slice ([`Decoder::lm_head_rows`]).
struct HeadRow {
    max: f32,
    /// The first token with the largest logit.
    arg: u32,
    /// Σ exp(logit − max).
    sum: f64,
    /// The wanted tokens' logits.
    picked: Vec<f32>,
    /// The first NaN or +inf logit.
    bad: Option<f32>,
}

impl HeadRow {
    fn add_slice(&mut self, row: &[f32], v0: usize, wanted: &[u32]) {
        if self.bad.is_none() {
            self.bad = row
                .iter()
                .copied()
                .find(|v| v.is_nan() || *v == f32::INFINITY);
        }
        for (p, &t) in self.picked.iter_mut().zip(wanted) {
            if let Some(&l) = (t as usize).checked_sub(v0).and_then(|i| row.get(i)) {
                *p = l;
            }
        }
        let (max, arg) = row_argmax(row);
        if max == f32::NEG_INFINITY {
            return;
        }
        let sum = sum_exp(row, max);
        if max > self.max {
            self.sum = self.sum * ((self.max - max) as f64).exp() + sum;
            self.max = max;
            self.arg = (v0 + arg as usize) as u32;
        } else {
            self.sum += sum * ((max - self.max) as f64).exp();
        }
    }

    /// A distribution that cannot be normalised is an error naming the input.
    fn check(&self, input: usize) -> Result<()> {
        match self.bad.or((!self.max.is_finite()).then_some(self.max)) {
            Some(v) => Err(EngineError::NonFinite {
                input,
                stage: "the LM head's logits".into(),
                value: crate::finite::describe(v),
            }),
            None => Ok(()),
        }
    }
}

/// Rows of a packed batch per slice of the feed-forward block.
const FFN_ROWS: usize = 1024;

struct RopeTable {
    /// Per position: cos then sin of each frequency.
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
}

impl RopeTable {
    fn new(rope: &config::Rope, positions: usize) -> Self {
        let half = rope.inv_freq.len();
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for p in 0..positions {
            for &f in &rope.inv_freq {
                // f32 product, as transformers computes it.
                let a = p as f32 * f;
                cos.push(a.cos() * rope.attention_factor);
                sin.push(a.sin() * rope.attention_factor);
            }
        }
        RopeTable { cos, sin, half }
    }

    /// Rotates every head vector in `row` (queries then keys, all `head_dim` wide).
    fn rotate(&self, row: &mut [f32], pos: usize, head_dim: usize, layout: RopeLayout) {
        self.rotate_by(row, pos, head_dim, layout, 1.0);
    }

    /// The rotation by `sign` × each angle: -1 is the inverse (the transpose), which
    /// carries gradients back through [`RopeTable::rotate`].
    #[inline(always)]
    fn rotate_by(
        &self,
        row: &mut [f32],
        pos: usize,
        head_dim: usize,
        layout: RopeLayout,
        sign: f32,
    ) {
        let half = self.half;
        let (c, s) = (
            &self.cos[pos * half..(pos + 1) * half],
            &self.sin[pos * half..(pos + 1) * half],
        );
        for v in row.chunks_exact_mut(head_dim) {
            match layout {
                RopeLayout::Halves => {
                    let (a, b) = v.split_at_mut(half);
                    for i in 0..half {
                        let (x, y, sn) = (a[i], b[i], sign * s[i]);
                        a[i] = x * c[i] - y * sn;
                        b[i] = y * c[i] + x * sn;
                    }
                }
                RopeLayout::Pairs => {
                    for i in 0..half {
                        let (x, y, sn) = (v[2 * i], v[2 * i + 1], sign * s[i]);
                        v[2 * i] = x * c[i] - y * sn;
                        v[2 * i + 1] = y * c[i] + x * sn;
                    }
                }
            }
        }
    }
}

/// ggml's `ggml_table_gelu_f16`: GELU (tanh form) of every f16, rounded to f16.
fn gelu_f16_table() -> &'static [f32] {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| {
                let x = half::f16::from_bits(bits).to_f32();
                const SQRT_2_OVER_PI: f32 = 0.797_884_6;
                const GELU_COEF_A: f32 = 0.044_715;
                let g = 0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh());
                half::f16::from_f32(g).to_f32()
            })
            .collect()
    })
}

/// `ggml_vec_geglu_f32` with `GGML_GELU_FP16`: GELU(gate) from the f16 table, times up.
fn geglu_f16_table(gate_up: &[f32], out: &mut [f32], ffn: usize) {
    let table = gelu_f16_table();
    for (gu, o) in gate_up.chunks_exact(2 * ffn).zip(out.chunks_exact_mut(ffn)) {
        let (g, u) = gu.split_at(ffn);
        for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
            *o = if g <= -10.0 {
                0.0
            } else if g >= 10.0 {
                g * u
            } else {
                table[half::f16::from_f32(g).to_bits() as usize] * u
            };
        }
    }
}

fn row_argmax(row: &[f32]) -> (f32, u32) {
    let mut best = (f32::NEG_INFINITY, 0u32);
    for (i, &v) in row.iter().enumerate() {
        if v > best.0 {
            best = (v, i as u32);
        }
    }
    best
}

multiversion! {
    /// Per row of width `w.len()`: x ← x / rms(x) · w.
    fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
        let n = w.len();
        for row in x.chunks_exact_mut(n) {
            let mut acc = [0.0f32; 16];
            let chunks = row.chunks_exact(16);
            let rest: f32 = chunks.remainder().iter().map(|v| v * v).sum();
            for c in chunks {
                for j in 0..16 {
                    acc[j] += c[j] * c[j];
                }
            }
            let ms = (acc.iter().sum::<f32>() + rest) / n as f32;
            let inv = 1.0 / (ms + eps).sqrt();
            for (v, g) in row.iter_mut().zip(w) {
                *v = *v * inv * g;
            }
        }
    }
}

multiversion! {
    /// Gated MLP activation: rows of `gate_up` hold gate then up (`ffn` each).
    fn gated_activation(gate_up: &[f32], out: &mut [f32], ffn: usize, silu: bool) {
        for (gu, o) in gate_up.chunks_exact(2 * ffn).zip(out.chunks_exact_mut(ffn)) {
            let (g, u) = gu.split_at(ffn);
            for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                let a = if silu {
                    g / (1.0 + exp_f32(-g))
                } else {
                    gelu_tanh(g)
                };
                *o = a * u;
            }
        }
    }
}

#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // √(2/π)
    0.5 * x * (1.0 + fast_tanh(C * (x + 0.044_715 * x * x * x)))
}

multiversion! {
    fn gelu_tanh_inplace(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = gelu_tanh(*v);
        }
    }
}

multiversion! {
    fn add_into(x: &mut [f32], y: &[f32]) {
        for (a, b) in x.iter_mut().zip(y) {
            *a += b;
        }
    }
}

multiversion! {
    fn softcap(x: &mut [f32], cap: f32) {
        for v in x.iter_mut() {
            *v = fast_tanh(*v / cap) * cap;
        }
    }
}

multiversion! {
    /// Row-wise softmax; masked entries are -inf (each row has at least one finite entry).
    fn softmax_rows(x: &mut [f32], width: usize) {
        for row in x.chunks_exact_mut(width) {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let mut sum = 0.0f32;
            for v in row.iter_mut() {
                *v = if *v == f32::NEG_INFINITY { 0.0 } else { exp_f32(*v - max) };
                sum += *v;
            }
            let inv = 1.0 / sum;
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

/// Σ exp(x − max) in f64 over 16 f32 lanes (the normaliser of a log-softmax).
fn sum_exp(row: &[f32], max: f32) -> f64 {
    sum_exp_lanes(row, max)
}

#[inline(always)]
fn sum_exp_inner(row: &[f32], max: f32) -> f64 {
    let mut acc = [0.0f32; 16];
    let chunks = row.chunks_exact(16);
    let rest: f64 = chunks
        .remainder()
        .iter()
        .map(|&v| exp_f32(v - max) as f64)
        .sum();
    let mut total = 0.0f64;
    // Flush the f32 lanes every 4096 values, so the f32 partial sums stay exact enough.
    for block in row[..row.len() / 16 * 16].chunks(4096) {
        for c in block.chunks_exact(16) {
            for j in 0..16 {
                acc[j] += exp_f32(c[j] - max);
            }
        }
        total += acc.iter().map(|&a| a as f64).sum::<f64>();
        acc = [0.0; 16];
    }
    total + rest
}

fn sum_exp_lanes(row: &[f32], max: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn v4(row: &[f32], max: f32) -> f64 {
            sum_exp_inner(row, max)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the features v4 was compiled for.
            return unsafe { v4(row, max) };
        }
    }
    sum_exp_inner(row, max)
}
