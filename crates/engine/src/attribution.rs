//! A differentiable copy of a native encoder with its classification head, on candle's
//! autograd, for attributions: the word embeddings of a sequence go in (so they can be
//! interpolated towards a baseline, as Captum's `LayerIntegratedGradients` on
//! `embeddings.word_embeddings` does), position and token-type embeddings are added as
//! for the real input, and the gradient of a class's probability (or log-probability)
//! with respect to those word embeddings comes out.
//!
//! The forward pass is the same arithmetic as `model::Encoder` (checked against it and
//! against Hugging Face transformers in the tests); it exists apart from the fast kernels
//! because those keep no activations for a backward pass.

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};

use crate::config::{Activation, Architecture, EncoderConfig};
use crate::encoder_model::weights_file;
use crate::error::{EngineError, Result};
use crate::model::{layer_names, weight_prefix};
use crate::weights::WeightFile;

fn ce(e: candle_core::Error) -> EngineError {
    EngineError::Runtime(format!("candle: {e}"))
}

/// A linear layer with its weight stored transposed (`in × out`, contiguous), so the
/// product is one gemm call without a copy of the weight per call.
struct Lin {
    wt: Tensor,
    b: Tensor,
}

struct Norm {
    g: Tensor,
    b: Tensor,
}

struct LayerWeights {
    q: Lin,
    k: Lin,
    v: Lin,
    o: Lin,
    ln1: Norm,
    ff1: Lin,
    ff2: Lin,
    ln2: Norm,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Act {
    None,
    Tanh,
    Relu,
}

/// What is differentiated: a class's probability, or its log-probability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetScale {
    Probability,
    LogProbability,
}

/// An encoder classifier whose forward pass candle can differentiate: the reference the
/// hand-written backward pass of [`GradEncoder`] is tested against (and the slower of the
/// two: `bench/explain_vs_captum.sh` measured 2.5 s per review against 0.x s).
pub struct AutogradEncoder {
    pub config: EncoderConfig,
    word: Vec<f32>,
    position: Tensor,
    token_type0: Option<Tensor>,
    emb_norm: Norm,
    layers: Vec<LayerWeights>,
    head: Vec<(Lin, Act)>,
    position_offset: usize,
    pub num_labels: usize,
    device: Device,
}

/// The target's value and its gradient for each row of a batch.
pub struct Gradients {
    /// F(x) per sequence.
    pub values: Vec<f32>,
    /// dF/dx per sequence, `tokens × hidden`, row-major.
    pub grads: Vec<Vec<f32>>,
}

impl AutogradEncoder {
    /// Loads a classifier checkpoint (a folder with config.json and weights). Models without
    /// a classification head are refused: their outputs are embeddings, not classes.
    pub fn load(dir: &Path) -> Result<Self> {
        let config = EncoderConfig::from_file(&dir.join("config.json"))?;
        let wpath = weights_file(dir).ok_or_else(|| {
            EngineError::file(dir, "no weights (model.safetensors or pytorch_model.bin)")
        })?;
        let w = WeightFile::open(&wpath)?;
        let p = weight_prefix(&w)?;
        let d = config.hidden;
        let device = Device::Cpu;
        let t = |v: Vec<f32>, shape: &[usize]| Tensor::from_vec(v, shape, &device).map_err(ce);
        let lin = |name: &str, out: usize, input: usize| -> Result<Lin> {
            let weight = t(
                w.get(&format!("{name}.weight"), &[out, input])?,
                &[out, input],
            )?;
            Ok(Lin {
                wt: weight.t().and_then(|x| x.contiguous()).map_err(ce)?,
                b: t(w.get(&format!("{name}.bias"), &[out])?, &[out])?,
            })
        };
        let norm = |name: &str| -> Result<Norm> {
            let (g, b) = if w.contains(&format!("{name}.gamma")) {
                ("gamma", "beta")
            } else {
                ("weight", "bias")
            };
            Ok(Norm {
                g: t(w.get(&format!("{name}.{g}"), &[d])?, &[d])?,
                b: t(w.get(&format!("{name}.{b}"), &[d])?, &[d])?,
            })
        };
        let word = w.get(
            &format!("{p}embeddings.word_embeddings.weight"),
            &[config.vocab_size, d],
        )?;
        let position = t(
            w.get(
                &format!("{p}embeddings.position_embeddings.weight"),
                &[config.max_positions, d],
            )?,
            &[config.max_positions, d],
        )?;
        let token_type0 =
            if config.architecture != Architecture::DistilBert && config.type_vocab_size > 0 {
                let tt = w.get(
                    &format!("{p}embeddings.token_type_embeddings.weight"),
                    &[config.type_vocab_size, d],
                )?;
                Some(t(tt[..d].to_vec(), &[d])?)
            } else {
                None
            };
        let emb_norm = norm(&format!("{p}embeddings.LayerNorm"))?;
        let mut layers = Vec::new();
        for i in 0..config.layers {
            let n = layer_names(config.architecture, &p, i);
            layers.push(LayerWeights {
                q: lin(&n.q, d, d)?,
                k: lin(&n.k, d, d)?,
                v: lin(&n.v, d, d)?,
                o: lin(&n.o, d, d)?,
                ln1: norm(&n.ln1)?,
                ff1: lin(&n.ff1, config.intermediate, d)?,
                ff2: lin(&n.ff2, d, config.intermediate)?,
                ln2: norm(&n.ln2)?,
            });
        }
        let (head_names, position_offset) = match config.architecture {
            Architecture::Bert => (
                [
                    (format!("{p}pooler.dense"), Act::Tanh),
                    ("classifier".to_owned(), Act::None),
                ],
                0,
            ),
            Architecture::Roberta => (
                [
                    ("classifier.dense".to_owned(), Act::Tanh),
                    ("classifier.out_proj".to_owned(), Act::None),
                ],
                config.pad_token_id as usize + 1,
            ),
            Architecture::DistilBert => (
                [
                    ("pre_classifier".to_owned(), Act::Relu),
                    ("classifier".to_owned(), Act::None),
                ],
                0,
            ),
        };
        let last = &head_names[1].0;
        let num_labels = w
            .names()
            .get(&format!("{last}.weight"))
            .and_then(|s| s.first().copied())
            .ok_or_else(|| {
                EngineError::BadInput(format!(
                    "{}: no classification head (`{last}.weight`): gradient attributions explain a classifier's classes",
                    dir.display()
                ))
            })?;
        let head = vec![
            (lin(&head_names[0].0, d, d)?, head_names[0].1),
            (lin(last, num_labels, d)?, Act::None),
        ];
        Ok(AutogradEncoder {
            config,
            word,
            position,
            token_type0,
            emb_norm,
            layers,
            head,
            position_offset,
            num_labels,
            device,
        })
    }

    /// The word-embedding rows of `ids` (`len × hidden`).
    pub fn word_embeddings(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let d = self.config.hidden;
        let mut out = Vec::with_capacity(ids.len() * d);
        for &id in ids {
            let i = id as usize;
            let row = self.word.get(i * d..(i + 1) * d).ok_or_else(|| {
                EngineError::BadInput(format!(
                    "token id {id} is outside the model's vocabulary ({} tokens): the tokenizer does not fit the model",
                    self.config.vocab_size
                ))
            })?;
            out.extend_from_slice(row);
        }
        Ok(out)
    }

    pub fn hidden(&self) -> usize {
        self.config.hidden
    }

    /// Logits of a batch of `b` sequences of `t` tokens given their word embeddings.
    fn logits(&self, words: &Tensor, b: usize, t: usize) -> candle_core::Result<Tensor> {
        let d = self.config.hidden;
        let cfg = &self.config;
        let pos = self.position.narrow(0, self.position_offset, t)?;
        let mut x = words.broadcast_add(&pos)?;
        if let Some(tt) = &self.token_type0 {
            x = x.broadcast_add(tt)?;
        }
        let eps = cfg.layer_norm_eps as f64;
        let ln = |x: &Tensor, n: &Norm| -> candle_core::Result<Tensor> {
            let mean = x.mean_keepdim(D::Minus1)?;
            let xc = x.broadcast_sub(&mean)?;
            let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
            xc.broadcast_div(&(var + eps)?.sqrt()?)?
                .broadcast_mul(&n.g)?
                .broadcast_add(&n.b)
        };
        let lin = |x: &Tensor, l: &Lin| -> candle_core::Result<Tensor> {
            let dims = x.dims().to_vec();
            let rows: usize = dims[..dims.len() - 1].iter().product();
            let out = l.wt.dim(1)?;
            let y = x
                .reshape((rows, dims[dims.len() - 1]))?
                .matmul(&l.wt)?
                .broadcast_add(&l.b)?;
            let mut shape = dims;
            let last = shape.len() - 1;
            shape[last] = out;
            y.reshape(shape)
        };
        x = ln(&x, &self.emb_norm)?;
        let (h, hd) = (cfg.heads, d / cfg.heads);
        let scale = 1.0 / (hd as f64).sqrt();
        let heads_of = |y: Tensor| -> candle_core::Result<Tensor> {
            y.reshape((b, t, h, hd))?.transpose(1, 2)?.contiguous()
        };
        for l in &self.layers {
            let q = heads_of(lin(&x, &l.q)?)?;
            let k = heads_of(lin(&x, &l.k)?)?;
            let v = heads_of(lin(&x, &l.v)?)?;
            let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
            let max = scores.max_keepdim(D::Minus1)?.detach();
            let e = scores.broadcast_sub(&max)?.exp()?;
            let probs = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
            let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
            x = ln(&(x + lin(&ctx, &l.o)?)?, &l.ln1)?;
            let inter = lin(&x, &l.ff1)?;
            let inter = match cfg.activation {
                Activation::Gelu => inter.gelu_erf()?,
                Activation::Relu => inter.relu()?,
            };
            x = ln(&(x.clone() + lin(&inter, &l.ff2)?)?, &l.ln2)?;
        }
        let mut z = x.narrow(1, 0, 1)?.squeeze(1)?;
        for (l, act) in &self.head {
            z = lin(&z, l)?;
            z = match act {
                Act::None => z,
                Act::Tanh => z.tanh()?,
                Act::Relu => z.relu()?,
            };
        }
        Ok(z)
    }

    /// Class probabilities of each sequence of word embeddings (`inputs[i]`: `t × hidden`,
    /// all of the same length `t`).
    pub fn probabilities(&self, inputs: &[Vec<f32>], t: usize) -> Result<Vec<Vec<f32>>> {
        let b = inputs.len();
        let d = self.config.hidden;
        let flat: Vec<f32> = inputs.concat();
        let x = Tensor::from_vec(flat, (b, t, d), &self.device).map_err(ce)?;
        let p = candle_nn_softmax(&self.logits(&x, b, t).map_err(ce)?).map_err(ce)?;
        p.to_vec2::<f32>().map_err(ce)
    }

    /// F = the `target` class's probability (or log-probability) and dF/d(word
    /// embeddings) for each input (`inputs[i]`: `t × hidden`, all of length `t`).
    pub fn gradients(
        &self,
        inputs: &[Vec<f32>],
        t: usize,
        target: usize,
        scale: TargetScale,
    ) -> Result<Gradients> {
        let b = inputs.len();
        let d = self.config.hidden;
        if target >= self.num_labels {
            return Err(EngineError::BadInput(format!(
                "target class {target}: the model has {} classes",
                self.num_labels
            )));
        }
        let flat: Vec<f32> = inputs.concat();
        let var = Var::from_tensor(&Tensor::from_vec(flat, (b, t, d), &self.device).map_err(ce)?)
            .map_err(ce)?;
        let run = || -> candle_core::Result<(Tensor, Tensor)> {
            let logits = self.logits(var.as_tensor(), b, t)?;
            let out = match scale {
                TargetScale::Probability => candle_nn_softmax(&logits)?,
                TargetScale::LogProbability => log_softmax(&logits)?,
            };
            let f = out.narrow(1, target, 1)?.squeeze(1)?;
            // Rows are independent: the gradient of the sum is each row's own gradient.
            let grads = f.sum_all()?.backward()?;
            let g = grads
                .get(var.as_tensor())
                .cloned()
                .unwrap_or(var.as_tensor().zeros_like()?);
            Ok((f, g))
        };
        let (f, g) = run().map_err(ce)?;
        let values = f
            .to_dtype(DType::F32)
            .and_then(|f| f.to_vec1::<f32>())
            .map_err(ce)?;
        let g = g
            .reshape((b, t * d))
            .and_then(|g| g.to_vec2::<f32>())
            .map_err(ce)?;
        Ok(Gradients { values, grads: g })
    }
}

/// An encoder classifier on the native kernels with a hand-written backward pass for input
/// gradients (`model::backward`): what `explain` runs.
/// The head on pooled embeddings a [`GradEncoder`] owns.
enum Pooled {
    Probe(crate::probe::Probe),
    ZeroShot(Vec<Vec<f32>>),
}

pub struct GradEncoder {
    encoder: crate::model::Encoder,
    pub config: EncoderConfig,
    pub num_labels: usize,
    /// A head on pooled embeddings instead of the checkpoint's.
    probe: Option<(crate::pooling::Pooling, Pooled)>,
}

impl GradEncoder {
    /// The native encoder of a checkpoint folder and its config.
    fn native(dir: &Path) -> Result<(crate::model::Encoder, EncoderConfig)> {
        let config = EncoderConfig::from_file(&dir.join("config.json"))?;
        let wpath = weights_file(dir).ok_or_else(|| {
            EngineError::file(dir, "no weights (model.safetensors or pytorch_model.bin)")
        })?;
        let w = WeightFile::open(&wpath)?;
        Ok((crate::model::Encoder::load(config.clone(), &w)?, config))
    }

    pub fn load(dir: &Path) -> Result<Self> {
        let (encoder, config) = Self::native(dir)?;
        let num_labels = encoder.num_labels.ok_or_else(|| {
            EngineError::BadInput(format!(
                "{}: no classification head: gradient attributions explain a classifier's classes",
                dir.display()
            ))
        })?;
        Ok(GradEncoder {
            encoder,
            config,
            num_labels,
            probe: None,
        })
    }

    /// An encoder (any, with or without a head) explained through a linear probe fitted on
    /// its pooled embeddings, as `compare --task probe` scores it.
    pub fn with_probe(
        dir: &Path,
        pooling: crate::pooling::Pooling,
        probe: crate::probe::Probe,
    ) -> Result<Self> {
        let (encoder, config) = Self::native(dir)?;
        Ok(GradEncoder {
            encoder,
            config,
            num_labels: probe.parameters().0,
            probe: Some((pooling, Pooled::Probe(probe))),
        })
    }

    /// An encoder explained as `compare --task zero-shot` scores it: 20 × the cosine
    /// similarity of its pooled embedding to each label description's, softmaxed.
    pub fn with_zero_shot(
        dir: &Path,
        pooling: crate::pooling::Pooling,
        label_embeddings: Vec<Vec<f32>>,
    ) -> Result<Self> {
        let (encoder, config) = Self::native(dir)?;
        Ok(GradEncoder {
            encoder,
            config,
            num_labels: label_embeddings.len(),
            probe: Some((pooling, Pooled::ZeroShot(label_embeddings))),
        })
    }

    fn probe(&self) -> Option<crate::model::ProbeHead<'_>> {
        self.probe
            .as_ref()
            .map(|(pooling, head)| crate::model::ProbeHead {
                pooling: *pooling,
                head: match head {
                    Pooled::Probe(p) => crate::model::PooledHead::Probe(p),
                    Pooled::ZeroShot(l) => crate::model::PooledHead::ZeroShot(l),
                },
            })
    }

    pub fn word_embeddings(&self, ids: &[u32]) -> Result<Vec<f32>> {
        self.encoder.word_embeddings(ids)
    }

    pub fn hidden(&self) -> usize {
        self.config.hidden
    }

    /// Class probabilities of each sequence of word embeddings (all of length `t`).
    pub fn probabilities(&self, inputs: &[Vec<f32>], t: usize) -> Result<Vec<Vec<f32>>> {
        let flat = inputs.concat();
        Ok(self
            .encoder
            .word_embedding_gradients(&flat, inputs.len(), t, None, false, self.probe().as_ref())?
            .probabilities)
    }

    /// F = the `target` class's probability (or log-probability) and dF/d(word
    /// embeddings) for each input (all of length `t`).
    pub fn gradients(
        &self,
        inputs: &[Vec<f32>],
        t: usize,
        target: usize,
        scale: TargetScale,
    ) -> Result<Gradients> {
        let flat = inputs.concat();
        let g = self.encoder.word_embedding_gradients(
            &flat,
            inputs.len(),
            t,
            Some(target),
            scale == TargetScale::LogProbability,
            self.probe().as_ref(),
        )?;
        Ok(Gradients {
            values: g.values,
            grads: g.grads,
        })
    }
}

fn candle_nn_softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

fn log_softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written backward pass equals candle's autograd on every family, for both
    /// targets, on random word embeddings of several sequences.
    #[test]
    fn hand_written_gradients_equal_autograd() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models");
        for name in ["tiny-bert-cls", "tiny-roberta-cls", "tiny-distilbert-cls"] {
            let dir = root.join(name);
            let native = GradEncoder::load(&dir).unwrap();
            let autograd = AutogradEncoder::load(&dir).unwrap();
            let d = native.hidden();
            let t = 9;
            let mut state = 7u64;
            let inputs: Vec<Vec<f32>> = (0..3)
                .map(|_| {
                    (0..t * d)
                        .map(|_| {
                            state = state
                                .wrapping_mul(6364136223846793005)
                                .wrapping_add(1442695040888963407);
                            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
                        })
                        .collect()
                })
                .collect();
            let pa = native.probabilities(&inputs, t).unwrap();
            let pb = autograd.probabilities(&inputs, t).unwrap();
            for (a, b) in pa.iter().flatten().zip(pb.iter().flatten()) {
                assert!((a - b).abs() < 1e-5, "{name}: probability {a} vs {b}");
            }
            for scale in [TargetScale::Probability, TargetScale::LogProbability] {
                for target in 0..native.num_labels {
                    let a = native.gradients(&inputs, t, target, scale).unwrap();
                    let b = autograd.gradients(&inputs, t, target, scale).unwrap();
                    for (x, y) in a.values.iter().zip(&b.values) {
                        assert!((x - y).abs() < 1e-5, "{name}: F {x} vs {y}");
                    }
                    let top = b.grads.iter().flatten().fold(0.0f32, |m, v| m.max(v.abs()));
                    for (x, y) in a.grads.iter().flatten().zip(b.grads.iter().flatten()) {
                        assert!(
                            (x - y).abs() <= 1e-4 * top.max(1e-3),
                            "{name} {scale:?} class {target}: gradient {x} vs autograd {y} (max {top})"
                        );
                    }
                }
            }
        }
    }

    /// The zero-shot head's gradient (cosine similarity to label embeddings, through mean
    /// pooling and L2 normalisation) against Richardson-extrapolated central differences.
    #[test]
    fn zero_shot_gradients_equal_finite_differences() {
        use crate::pooling::{Pooling, PoolingMode};
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/models/tiny-bert-base");
        for normalize in [true, false] {
            let d = EncoderConfig::from_file(&dir.join("config.json"))
                .unwrap()
                .hidden;
            let labels: Vec<Vec<f32>> = (0..3)
                .map(|k| {
                    (0..d)
                        .map(|j| (((j * 31 + k * 17) % 11) as f32 - 5.0) / 5.0)
                        .collect()
                })
                .collect();
            let m = GradEncoder::with_zero_shot(
                &dir,
                Pooling {
                    mode: PoolingMode::Mean,
                    normalize,
                },
                labels,
            )
            .unwrap();
            let t = 6;
            let x: Vec<f32> = (0..t * d)
                .map(|i| (((i * 7919) % 23) as f32 - 11.0) / 40.0)
                .collect();
            let dir_v: Vec<f32> = (0..t * d)
                .map(|i| (((i * 104729) % 13) as f32 - 6.0) / 6.0)
                .collect();
            for target in 0..3 {
                let g = m
                    .gradients(
                        std::slice::from_ref(&x),
                        t,
                        target,
                        TargetScale::LogProbability,
                    )
                    .unwrap();
                let analytic: f64 = g.grads[0]
                    .iter()
                    .zip(&dir_v)
                    .map(|(a, b)| f64::from(a * b))
                    .sum();
                let f = |h: f32| -> f64 {
                    let moved: Vec<f32> = x.iter().zip(&dir_v).map(|(a, r)| a + h * r).collect();
                    f64::from(m.probabilities(&[moved], t).unwrap()[0][target]).ln()
                };
                let central = |h: f32| (f(h) - f(-h)) / (2.0 * f64::from(h));
                let numeric = (4.0 * central(1e-3) - central(2e-3)) / 3.0;
                assert!(
                    (analytic - numeric).abs() < 2e-3 * analytic.abs().max(0.5),
                    "normalize {normalize}, class {target}: {analytic} vs {numeric}"
                );
            }
        }
    }
}
