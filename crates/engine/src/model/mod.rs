//! Transformer encoders (BERT, RoBERTa, DistilBERT) on our own kernels.
//!
//! The three families share one forward pass; each family file only says how its weights are
//! named, where positions start and what its classification head looks like. The forward
//! pass packs the tokens of every sequence of a batch into one matrix, so the dense layers
//! never multiply padding, and runs attention per sequence at its true length.

pub(crate) mod backward;
mod bert;
mod distilbert;
mod roberta;

pub use backward::{InputGradients, PooledHead, ProbeHead, ZERO_SHOT_SCALE};
use rayon::prelude::*;

use crate::config::{Activation, Architecture, EncoderConfig};
use crate::error::{EngineError, Result};
use crate::kernels::{
    add_bias, bias_gelu, bias_relu, layer_norm, matmul, matmul_transposed_b, residual_layer_norm,
    scaled_softmax, View,
};
use crate::weights::WeightFile;

/// Checkpoint names (without `.weight`/`.bias`) of one transformer layer's tensors.
#[derive(Debug, Clone)]
pub struct LayerNames {
    pub q: String,
    pub k: String,
    pub v: String,
    pub o: String,
    pub ln1: String,
    pub ff1: String,
    pub ff2: String,
    pub ln2: String,
}

/// Names of layer `layer`'s tensors for a family, under the checkpoint's prefix.
pub fn layer_names(arch: Architecture, prefix: &str, layer: usize) -> LayerNames {
    (family(arch).layer)(prefix, layer)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeadActivation {
    None,
    Tanh,
    Relu,
}

pub(crate) struct HeadLayer {
    name: String,
    activation: HeadActivation,
    /// The final projection to the labels (its output size is the label count).
    to_labels: bool,
}

impl HeadLayer {
    fn new(name: String, activation: HeadActivation, to_labels: bool) -> Self {
        HeadLayer {
            name,
            activation,
            to_labels,
        }
    }
}

pub(crate) struct FamilySpec {
    layer: fn(&str, usize) -> LayerNames,
    has_token_types: bool,
    position_offset: fn(&EncoderConfig) -> usize,
    head: fn(&str) -> Vec<HeadLayer>,
}

fn family(arch: Architecture) -> FamilySpec {
    match arch {
        Architecture::Bert => bert::spec(),
        Architecture::Roberta => roberta::spec(),
        Architecture::DistilBert => distilbert::spec(),
    }
}

/// A linear layer stored transposed (`in × out`, row-major) for `x · W`; with dynamic int8
/// quantisation also as Q8_0 blocks (`[out, in]`), which the forward pass then multiplies
/// with int8-quantised activations. The f32 copy stays for the gradients of `explain`.
pub(crate) struct Linear {
    w: Vec<f32>,
    b: Vec<f32>,
    input: usize,
    output: usize,
    int8: Option<Vec<u8>>,
}

impl Linear {
    fn load(w: &WeightFile, name: &str, output: usize, input: usize) -> Result<Self> {
        let weight = w.get(&format!("{name}.weight"), &[output, input])?;
        let b = w.get(&format!("{name}.bias"), &[output])?;
        Ok(Linear {
            w: transpose(&weight, output, input),
            b,
            input,
            output,
            int8: None,
        })
    }

    /// Q, K and V as one `d × 3d` product: one pass over the activations instead of three.
    fn load_fused(w: &WeightFile, names: [&str; 3], d: usize) -> Result<Self> {
        let mut weight = Vec::with_capacity(3 * d * d);
        let mut b = Vec::with_capacity(3 * d);
        for n in names {
            weight.extend(w.get(&format!("{n}.weight"), &[d, d])?);
            b.extend(w.get(&format!("{n}.bias"), &[d])?);
        }
        Ok(Linear {
            w: transpose(&weight, 3 * d, d),
            b,
            input: d,
            output: 3 * d,
            int8: None,
        })
    }

    fn view(&self) -> View<'_> {
        View {
            data: &self.w,
            rows: self.input,
            cols: self.output,
            row_stride: self.output,
        }
    }

    /// Adds the Q8_0 copy of the weights (rows of `input` values, a multiple of 32).
    fn quantize_int8(&mut self) {
        let wt = transpose(&self.w, self.input, self.output);
        self.int8 = Some(lmcompare_kernels::quant::quantize_q8_0_weights_per_row(
            &wt, self.input,
        ));
    }

    /// `out[rows × output] = x · W` (bias not added).
    fn apply(&self, x: &[f32], rows: usize, out: &mut [f32], parallel: bool) {
        if let Some(q) = &self.int8 {
            use lmcompare_kernels::quant::{quant_matmul, BlockType, QuantKernel, QuantMatrix};
            let m = QuantMatrix {
                ty: BlockType::Q8_0,
                data: q,
                rows: self.output,
                cols: self.input,
                per_row: true,
            };
            quant_matmul(QuantKernel::current(), x, rows, &m, out, self.output, 0);
            return;
        }
        matmul(
            out,
            self.output,
            View {
                data: x,
                rows,
                cols: self.input,
                row_stride: self.input,
            },
            self.view(),
            false,
            parallel,
        );
    }
}

fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}

pub(crate) struct Norm {
    g: Vec<f32>,
    b: Vec<f32>,
}

impl Norm {
    fn load(w: &WeightFile, name: &str, d: usize) -> Result<Self> {
        // Old TensorFlow-converted checkpoints name these gamma/beta.
        let (gw, bw) = if w.contains(&format!("{name}.gamma")) {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        Ok(Norm {
            g: w.get(&format!("{name}.{gw}"), &[d])?,
            b: w.get(&format!("{name}.{bw}"), &[d])?,
        })
    }
}

struct Layer {
    qkv: Linear,
    out: Linear,
    ln1: Norm,
    ff1: Linear,
    ff2: Linear,
    ln2: Norm,
}

struct HeadStep {
    linear: Linear,
    activation: HeadActivation,
}

/// Token states of a batch: sequence `s` occupies rows `offsets[s]..offsets[s + 1]`.
pub struct Hidden {
    pub data: Vec<f32>,
    pub offsets: Vec<usize>,
    pub dim: usize,
}

impl Hidden {
    pub fn sequence(&self, s: usize) -> &[f32] {
        &self.data[self.offsets[s] * self.dim..self.offsets[s + 1] * self.dim]
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Activation buffers of one forward pass, kept between batches.
#[derive(Default)]
struct Workspace {
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    proj: Vec<f32>,
    inter: Vec<f32>,
}

/// Weights of an encoder, and the forward pass over them.
pub struct Encoder {
    /// Whether the layers' linear products run on int8 (see [`Encoder::quantize_int8`]).
    pub int8: bool,
    workspace: std::sync::Mutex<Workspace>,
    pub config: EncoderConfig,
    word: Vec<f32>,
    position: Vec<f32>,
    /// Token-type 0 embedding (single-segment inputs), folded into every token.
    token_type0: Option<Vec<f32>>,
    emb_norm: Norm,
    layers: Vec<Layer>,
    head: Vec<HeadStep>,
    position_offset: usize,
    /// Label count of the classification head, if the checkpoint has one.
    pub num_labels: Option<usize>,
}

/// Finds the prefix (`bert.`, `roberta.`, `distilbert.` or none) under which the encoder's
/// weights are stored.
pub(crate) fn weight_prefix(w: &WeightFile) -> Result<String> {
    let suffix = "embeddings.word_embeddings.weight";
    w.names()
        .keys()
        .filter_map(|n| n.strip_suffix(suffix).map(str::to_owned))
        .min_by_key(String::len)
        .ok_or_else(|| {
            EngineError::file(
                w.path(),
                format!(
                    "tensor `{suffix}` is missing (with any prefix): not an encoder checkpoint"
                ),
            )
        })
}

impl Encoder {
    pub fn load(config: EncoderConfig, w: &WeightFile) -> Result<Self> {
        let spec = family(config.architecture);
        let p = weight_prefix(w)?;
        let d = config.hidden;
        let word = w.get(
            &format!("{p}embeddings.word_embeddings.weight"),
            &[config.vocab_size, d],
        )?;
        let position = w.get(
            &format!("{p}embeddings.position_embeddings.weight"),
            &[config.max_positions, d],
        )?;
        let token_type0 = if spec.has_token_types && config.type_vocab_size > 0 {
            let t = w.get(
                &format!("{p}embeddings.token_type_embeddings.weight"),
                &[config.type_vocab_size, d],
            )?;
            Some(t[..d].to_vec())
        } else {
            None
        };
        let emb_norm = Norm::load(w, &format!("{p}embeddings.LayerNorm"), d)?;
        // Grown as the file supplies layers: the count comes from a config that may be corrupt.
        let mut layers = Vec::new();
        for i in 0..config.layers {
            let n = (spec.layer)(&p, i);
            layers.push(Layer {
                qkv: Linear::load_fused(w, [&n.q, &n.k, &n.v], d)?,
                out: Linear::load(w, &n.o, d, d)?,
                ln1: Norm::load(w, &n.ln1, d)?,
                ff1: Linear::load(w, &n.ff1, config.intermediate, d)?,
                ff2: Linear::load(w, &n.ff2, d, config.intermediate)?,
                ln2: Norm::load(w, &n.ln2, d)?,
            });
        }
        let head_spec = (spec.head)(&p);
        let mut head = Vec::new();
        let mut num_labels = None;
        // A head is present when its final projection is; then every step must load.
        if let Some(last) = head_spec.iter().find(|h| h.to_labels) {
            let names = w.names();
            if let Some(shape) = names.get(&format!("{}.weight", last.name)) {
                let labels = shape.first().copied().unwrap_or(0);
                for step in &head_spec {
                    let out = if step.to_labels { labels } else { d };
                    head.push(HeadStep {
                        linear: Linear::load(w, &step.name, out, d)?,
                        activation: step.activation,
                    });
                }
                num_labels = Some(labels);
            }
        }
        Ok(Encoder {
            int8: false,
            workspace: Default::default(),
            position_offset: (spec.position_offset)(&config),
            config,
            word,
            position,
            token_type0,
            emb_norm,
            layers,
            head,
            num_labels,
        })
    }

    /// Dynamic int8 quantisation, as PyTorch's `quantize_dynamic` applies it to a model's
    /// linear layers: every layer's Q/K/V, output and feed-forward weights also kept as Q8_0
    /// blocks (an fp16 scale per 32 weights: finer than PyTorch's one scale per tensor), and
    /// their products computed on int8 activations quantised per row and block at run time.
    /// The embeddings, norms, attention and the classification head stay f32.
    pub fn quantize_int8(&mut self) -> Result<()> {
        for l in &mut self.layers {
            for lin in [&mut l.qkv, &mut l.out, &mut l.ff1, &mut l.ff2] {
                if lin.input % 32 != 0 {
                    return Err(EngineError::BadInput(format!(
                        "int8: needs linear layers whose inputs are a multiple of 32 wide; this model has one of {}",
                        lin.input
                    )));
                }
                lin.quantize_int8();
            }
        }
        self.int8 = true;
        Ok(())
    }

    /// Last hidden states of a batch of token-id sequences (no padding anywhere).
    pub fn forward(&self, seqs: &[&[u32]]) -> Result<Hidden> {
        self.forward_layers(seqs, self.layers.len())
    }

    /// Hidden states after the embeddings and the first `n_layers` layers.
    pub fn forward_layers(&self, seqs: &[&[u32]], n_layers: usize) -> Result<Hidden> {
        let cfg = &self.config;
        let d = cfg.hidden;
        let mut offsets = Vec::with_capacity(seqs.len() + 1);
        offsets.push(0);
        for s in seqs {
            if s.is_empty() {
                return Err(EngineError::BadInput("empty token sequence".into()));
            }
            if s.len() + self.position_offset > cfg.max_positions {
                return Err(EngineError::BadInput(format!(
                    "a sequence of {} tokens exceeds the model's {} positions",
                    s.len(),
                    cfg.max_tokens()
                )));
            }
            if let Some(&bad) = s.iter().find(|&&id| id as usize >= cfg.vocab_size) {
                return Err(EngineError::BadInput(format!(
                    "token id {bad} is outside the model's vocabulary of {}: the tokenizer does not fit this model",
                    cfg.vocab_size
                )));
            }
            offsets.push(offsets.last().copied().unwrap_or(0) + s.len());
        }
        let total = offsets.last().copied().unwrap_or(0);
        // Activation buffers are reused across batches: fresh multi-megabyte buffers cost a
        // page fault per 4 KiB on every batch.
        let mut guard = self.workspace.lock().unwrap_or_else(|p| p.into_inner());
        let ws = &mut *guard;
        let mut x = vec![0.0f32; total * d];
        for (s, ids) in seqs.iter().enumerate() {
            for (p, &id) in ids.iter().enumerate() {
                let row = &mut x[(offsets[s] + p) * d..(offsets[s] + p + 1) * d];
                let we = &self.word[id as usize * d..(id as usize + 1) * d];
                let pos = p + self.position_offset;
                let pe = &self.position[pos * d..(pos + 1) * d];
                row.copy_from_slice(we);
                for (v, e) in row.iter_mut().zip(pe) {
                    *v += e;
                }
                if let Some(t) = &self.token_type0 {
                    for (v, e) in row.iter_mut().zip(t) {
                        *v += e;
                    }
                }
            }
        }
        layer_norm(
            &mut x,
            &self.emb_norm.g,
            &self.emb_norm.b,
            cfg.layer_norm_eps,
        );
        let check = |x: &[f32], stage: &dyn Fn() -> String| {
            crate::finite::check_rows(x, d, stage, |row| {
                crate::finite::sequence_of_row(&offsets, row)
            })
        };
        check(&x, &|| "the embeddings (after their layer norm)".into())?;

        let grow = |v: &mut Vec<f32>, n: usize| {
            v.clear();
            v.resize(n, 0.0);
        };
        grow(&mut ws.qkv, total * 3 * d);
        grow(&mut ws.ctx, total * d);
        grow(&mut ws.proj, total * d);
        grow(&mut ws.inter, total * cfg.intermediate);
        let Workspace {
            qkv,
            ctx,
            proj,
            inter,
        } = ws;
        let heads = cfg.heads;
        let hd = cfg.head_dim();
        let scale = 1.0 / (hd as f32).sqrt();
        for (li, layer) in self.layers.iter().take(n_layers).enumerate() {
            layer.qkv.apply(&x, total, qkv, true);
            add_bias(qkv, &layer.qkv.b);
            // Attention per sequence at its own length, sequences in parallel.
            let mut chunks: Vec<(usize, &mut [f32])> = Vec::with_capacity(seqs.len());
            let mut rest: &mut [f32] = ctx;
            for s in 0..seqs.len() {
                let len = offsets[s + 1] - offsets[s];
                let (head_part, tail) = rest.split_at_mut(len * d);
                chunks.push((s, head_part));
                rest = tail;
            }
            let qkv_ref = &*qkv;
            chunks
                .into_par_iter()
                .for_each_init(Vec::new, |scores, (s, out)| {
                    let len = offsets[s + 1] - offsets[s];
                    let rows = &qkv_ref[offsets[s] * 3 * d..offsets[s + 1] * 3 * d];
                    scores.clear();
                    scores.resize(len * len, 0.0);
                    for h in 0..heads {
                        let q = View {
                            data: &rows[h * hd..],
                            rows: len,
                            cols: hd,
                            row_stride: 3 * d,
                        };
                        let k = View {
                            data: &rows[d + h * hd..],
                            rows: len,
                            cols: hd,
                            row_stride: 3 * d,
                        };
                        let v = View {
                            data: &rows[2 * d + h * hd..],
                            rows: len,
                            cols: hd,
                            row_stride: 3 * d,
                        };
                        matmul_transposed_b(scores, len, q, k);
                        scaled_softmax(scores, len, scale);
                        matmul(
                            &mut out[h * hd..],
                            d,
                            View {
                                data: scores,
                                rows: len,
                                cols: len,
                                row_stride: len,
                            },
                            v,
                            false,
                            false,
                        );
                    }
                });
            layer.out.apply(ctx, total, proj, true);
            residual_layer_norm(
                &mut x,
                proj,
                &layer.out.b,
                &layer.ln1.g,
                &layer.ln1.b,
                cfg.layer_norm_eps,
            );
            check(&x, &|| format!("layer {li} attention block"))?;
            layer.ff1.apply(&x, total, inter, true);
            match cfg.activation {
                Activation::Gelu => bias_gelu(inter, &layer.ff1.b),
                Activation::Relu => bias_relu(inter, &layer.ff1.b),
            }
            layer.ff2.apply(inter, total, proj, true);
            residual_layer_norm(
                &mut x,
                proj,
                &layer.ff2.b,
                &layer.ln2.g,
                &layer.ln2.b,
                cfg.layer_norm_eps,
            );
            check(&x, &|| format!("layer {li} feed-forward block"))?;
        }
        Ok(Hidden {
            data: x,
            offsets,
            dim: d,
        })
    }

    /// Classification logits from the first token of each sequence.
    pub fn logits(&self, hidden: &Hidden) -> Option<Vec<Vec<f32>>> {
        if self.head.is_empty() {
            return None;
        }
        Some(
            (0..hidden.len())
                .map(|s| {
                    let mut v = hidden.sequence(s)[..hidden.dim].to_vec();
                    for step in &self.head {
                        let mut out = vec![0.0f32; step.linear.output];
                        step.linear.apply(&v, 1, &mut out, false);
                        for (o, b) in out.iter_mut().zip(&step.linear.b) {
                            *o += b;
                            *o = match step.activation {
                                HeadActivation::None => *o,
                                HeadActivation::Tanh => o.tanh(),
                                HeadActivation::Relu => o.max(0.0),
                            };
                        }
                        v = out;
                    }
                    v
                })
                .collect(),
        )
    }
}
