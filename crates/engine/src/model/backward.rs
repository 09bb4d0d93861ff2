//! The gradient of a classifier's class probability with respect to its input word
//! embeddings, by a hand-written backward pass over the native kernels: the forward pass
//! keeps what the backward pass needs (each layer's Q/K/V, attention probabilities, the
//! feed-forward pre-activations and the layer norms' normalised inputs), and the backward
//! pass computes input gradients only — no weight gradient is ever formed, which is a third
//! of the work autograd frameworks do when the weights require gradients (as in Captum on a
//! Hugging Face model). Checked against candle's autograd (`attribution::GradEncoder`),
//! itself checked against Captum.

use rayon::prelude::*;

use super::{Encoder, HeadActivation};
use crate::config::Activation;
use crate::error::{EngineError, Result};
use crate::kernels::{add_bias, matmul, matmul_transposed_b, scaled_softmax, View};

/// A head on pooled sentence embeddings: pooling (and L2 normalisation) of the final token
/// states, then either a linear probe as `compare --task probe` fits it (standardisation,
/// multinomial logistic regression) or zero-shot as `compare --task zero-shot` scores it
/// (20 × the cosine similarity to each label description's embedding, softmaxed).
pub struct ProbeHead<'a> {
    pub pooling: crate::pooling::Pooling,
    pub head: PooledHead<'a>,
}

#[derive(Clone, Copy)]
pub enum PooledHead<'a> {
    Probe(&'a crate::probe::Probe),
    /// The label descriptions' embeddings, in label order.
    ZeroShot(&'a [Vec<f32>]),
}

/// sentence-transformers' contrastive scale, as `compare --task zero-shot` uses it.
pub const ZERO_SHOT_SCALE: f64 = 20.0;

impl ProbeHead<'_> {
    /// Class probabilities of one sequence's final states (`t × d`), and with `target`
    /// (class, log), F and dF/dstates.
    fn run(&self, states: &[f32], d: usize, target: Option<(usize, bool)>) -> ProbeRun {
        use crate::pooling::PoolingMode;
        let t = states.len() / d;
        let k = match self.head {
            PooledHead::Probe(p) => p.parameters().0,
            PooledHead::ZeroShot(l) => l.len(),
        };
        // Pooling, in f64 as the probe's features are computed.
        let mut argmax = vec![0usize; d];
        let u: Vec<f64> = match self.pooling.mode {
            PoolingMode::Cls => states[..d].iter().map(|&x| f64::from(x)).collect(),
            PoolingMode::Mean => {
                let mut acc = vec![0.0f64; d];
                for row in states.chunks_exact(d) {
                    for (a, x) in acc.iter_mut().zip(row) {
                        *a += f64::from(*x);
                    }
                }
                // As `Pooling::pool`: the mean is rounded to f32.
                acc.iter()
                    .map(|a| f64::from((a / t as f64) as f32))
                    .collect()
            }
            PoolingMode::Max => (0..d)
                .map(|j| {
                    let (r, v) = (0..t).map(|r| (r, states[r * d + j])).fold(
                        (0, f32::NEG_INFINITY),
                        |best, c| if c.1 > best.1 { c } else { best },
                    );
                    argmax[j] = r;
                    f64::from(v)
                })
                .collect(),
        };
        let norm = if self.pooling.normalize {
            u.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12)
        } else {
            1.0
        };
        let v: Vec<f64> = u.iter().map(|x| f64::from((x / norm) as f32)).collect();
        // Per class: its logit and d logit / dv.
        let (logits, dlogit_dv): (Vec<f64>, Vec<Vec<f64>>) = match self.head {
            PooledHead::Probe(probe) => {
                let (_, _, mean, scale, w) = probe.parameters();
                let z: Vec<f64> = v
                    .iter()
                    .zip(mean)
                    .zip(scale)
                    .map(|((x, m), s)| (x - m) / s)
                    .collect();
                (0..k)
                    .map(|c| {
                        let row = &w[c * (d + 1)..(c + 1) * (d + 1)];
                        let logit =
                            row[..d].iter().zip(&z).map(|(a, b)| a * b).sum::<f64>() + row[d];
                        (
                            logit,
                            row[..d].iter().zip(scale).map(|(a, s)| a / s).collect(),
                        )
                    })
                    .unzip()
            }
            PooledHead::ZeroShot(labels) => {
                let nv = v.iter().map(|x| x * x).sum::<f64>().sqrt();
                labels
                    .iter()
                    .map(|l| {
                        let nl = l
                            .iter()
                            .map(|&x| f64::from(x) * f64::from(x))
                            .sum::<f64>()
                            .sqrt();
                        let den = (nv * nl).max(1e-12);
                        let dot: f64 = v.iter().zip(l).map(|(a, &b)| a * f64::from(b)).sum();
                        let cos = dot / den;
                        // As compare computes it: the scaled similarity in f32.
                        let logit = f64::from((ZERO_SHOT_SCALE * cos) as f32);
                        let grad = v
                            .iter()
                            .zip(l)
                            .map(|(x, &b)| {
                                ZERO_SHOT_SCALE
                                    * (f64::from(b) / den - cos * x / (nv * nv).max(1e-24))
                            })
                            .collect();
                        (logit, grad)
                    })
                    .unzip()
            }
        };
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        let p: Vec<f64> = e.iter().map(|x| x / sum).collect();
        let probs: Vec<f32> = p.iter().map(|&x| x as f32).collect();
        let Some((target, log)) = target else {
            return (probs, None);
        };
        let f = if log { p[target].ln() } else { p[target] };
        let dlogits: Vec<f64> = (0..k)
            .map(|j| {
                let delta = f64::from(u8::from(j == target));
                if log {
                    delta - p[j]
                } else {
                    p[target] * (delta - p[j])
                }
            })
            .collect();
        let dv: Vec<f64> = (0..d)
            .map(|j| (0..k).map(|c| dlogits[c] * dlogit_dv[c][j]).sum::<f64>())
            .collect();
        let du: Vec<f64> = if self.pooling.normalize {
            let dot: f64 = v.iter().zip(&dv).map(|(a, b)| a * b).sum();
            dv.iter()
                .zip(&v)
                .map(|(g, x)| (g - x * dot) / norm)
                .collect()
        } else {
            dv
        };
        let mut ds = vec![0.0f32; t * d];
        match self.pooling.mode {
            PoolingMode::Cls => {
                for j in 0..d {
                    ds[j] = du[j] as f32;
                }
            }
            PoolingMode::Mean => {
                for r in 0..t {
                    for j in 0..d {
                        ds[r * d + j] = (du[j] / t as f64) as f32;
                    }
                }
            }
            PoolingMode::Max => {
                for j in 0..d {
                    ds[argmax[j] * d + j] = du[j] as f32;
                }
            }
        }
        (probs, Some((f as f32, ds)))
    }
}

/// One sequence through the probe: its probabilities, and F with dF/dstates when asked.
type ProbeRun = (Vec<f32>, Option<(f32, Vec<f32>)>);

/// F and dF/d(word embeddings) for a batch of equal-length sequences.
pub struct InputGradients {
    /// F per sequence.
    pub values: Vec<f32>,
    /// Class probabilities per sequence.
    pub probabilities: Vec<Vec<f32>>,
    /// dF/dx per sequence, `tokens × hidden` row-major (empty when not asked).
    pub grads: Vec<Vec<f32>>,
}

/// Normalised inputs and reciprocal deviations of one layer norm over `rows`.
struct NormCache {
    xhat: Vec<f32>,
    rstd: Vec<f32>,
}

fn norm_forward(x: &mut [f32], g: &[f32], b: &[f32], eps: f32, keep: bool) -> Option<NormCache> {
    let d = g.len();
    let rows = x.len() / d;
    let mut cache = keep.then(|| NormCache {
        xhat: vec![0.0; x.len()],
        rstd: vec![0.0; rows],
    });
    for (r, row) in x.chunks_exact_mut(d).enumerate() {
        let mean = row.iter().sum::<f32>() / d as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let inv = 1.0 / (var + eps).sqrt();
        if let Some(c) = cache.as_mut() {
            c.rstd[r] = inv;
        }
        for (j, v) in row.iter_mut().enumerate() {
            let xh = (*v - mean) * inv;
            if let Some(c) = cache.as_mut() {
                c.xhat[r * d + j] = xh;
            }
            *v = xh * g[j] + b[j];
        }
    }
    cache
}

/// dy (dL/d output) ← dL/d input of the layer norm.
fn norm_backward(dy: &mut [f32], c: &NormCache, g: &[f32]) {
    let d = g.len();
    for (r, row) in dy.chunks_exact_mut(d).enumerate() {
        let xh = &c.xhat[r * d..(r + 1) * d];
        let (mut m1, mut m2) = (0.0f32, 0.0f32);
        for j in 0..d {
            let dxh = row[j] * g[j];
            m1 += dxh;
            m2 += dxh * xh[j];
        }
        m1 /= d as f32;
        m2 /= d as f32;
        let inv = c.rstd[r];
        for j in 0..d {
            row[j] = inv * (row[j] * g[j] - m1 - xh[j] * m2);
        }
    }
}

/// erf by Abramowitz & Stegun 7.1.26 in f64 (absolute error below 1.5e-7), as the forward
/// kernels' GELU.
fn erf(x: f64) -> f64 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    (1.0 - poly * (-a * a).exp()).copysign(x)
}

fn gelu(z: f32) -> f32 {
    let z = f64::from(z);
    (0.5 * z * (1.0 + erf(z * std::f64::consts::FRAC_1_SQRT_2))) as f32
}

fn gelu_grad(z: f32) -> f32 {
    let z = f64::from(z);
    let cdf = 0.5 * (1.0 + erf(z * std::f64::consts::FRAC_1_SQRT_2));
    let pdf = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
    (cdf + z * pdf) as f32
}

struct LayerCache {
    qkv: Vec<f32>,
    probs: Vec<f32>,
    ln1: NormCache,
    pre: Vec<f32>,
    ln2: NormCache,
}

pub(crate) fn transpose_square(m: &[f32], n: usize, out: &mut [f32]) {
    for i in 0..n {
        for j in 0..n {
            out[j * n + i] = m[i * n + j];
        }
    }
}

pub(crate) fn view(data: &[f32], rows: usize, cols: usize, row_stride: usize) -> View<'_> {
    View {
        data,
        rows,
        cols,
        row_stride,
    }
}

impl Encoder {
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

    /// Class probabilities of `b` sequences of `t` tokens given as word-embedding rows
    /// (`words`: `b × t × hidden`), and with `target`, F (the class's probability, or its
    /// log-probability with `log`) and its gradient with respect to those rows.
    pub fn word_embedding_gradients(
        &self,
        words: &[f32],
        b: usize,
        t: usize,
        target: Option<usize>,
        log: bool,
        probe: Option<&ProbeHead<'_>>,
    ) -> Result<InputGradients> {
        let cfg = &self.config;
        let d = cfg.hidden;
        let rows = b * t;
        if self.head.is_empty() && probe.is_none() {
            return Err(EngineError::BadInput(
                "the model has no classification head: gradient attributions explain a classifier's classes".into(),
            ));
        }
        if words.len() != rows * d || t == 0 {
            return Err(EngineError::Runtime(format!(
                "word embeddings of {} values for {b} sequences of {t} tokens of width {d}",
                words.len()
            )));
        }
        if t + self.position_offset > cfg.max_positions {
            return Err(EngineError::BadInput(format!(
                "a sequence of {t} tokens exceeds the model's {} positions",
                cfg.max_tokens()
            )));
        }
        let keep = target.is_some();
        let eps = cfg.layer_norm_eps;
        let mut x = words.to_vec();
        for (r, row) in x.chunks_exact_mut(d).enumerate() {
            let pos = r % t + self.position_offset;
            for (v, e) in row.iter_mut().zip(&self.position[pos * d..(pos + 1) * d]) {
                *v += e;
            }
            if let Some(tt) = &self.token_type0 {
                for (v, e) in row.iter_mut().zip(tt) {
                    *v += e;
                }
            }
        }
        let emb = norm_forward(&mut x, &self.emb_norm.g, &self.emb_norm.b, eps, keep);
        let heads = cfg.heads;
        let hd = cfg.head_dim();
        let scale = 1.0 / (hd as f32).sqrt();
        let inter_n = cfg.intermediate;
        let mut caches = Vec::with_capacity(self.layers.len());
        let mut ctx = vec![0.0f32; rows * d];
        let mut proj = vec![0.0f32; rows * d];
        for layer in &self.layers {
            let mut qkv = vec![0.0f32; rows * 3 * d];
            layer.qkv.apply(&x, rows, &mut qkv, true);
            add_bias(&mut qkv, &layer.qkv.b);
            let mut probs = vec![0.0f32; b * heads * t * t];
            probs
                .par_chunks_mut(heads * t * t)
                .zip(ctx.par_chunks_mut(t * d))
                .enumerate()
                .for_each(|(s, (p, out))| {
                    let rows_s = &qkv[s * t * 3 * d..(s + 1) * t * 3 * d];
                    for h in 0..heads {
                        let scores = &mut p[h * t * t..(h + 1) * t * t];
                        let q = view(&rows_s[h * hd..], t, hd, 3 * d);
                        let k = view(&rows_s[d + h * hd..], t, hd, 3 * d);
                        let v = view(&rows_s[2 * d + h * hd..], t, hd, 3 * d);
                        matmul_transposed_b(scores, t, q, k);
                        scaled_softmax(scores, t, scale);
                        matmul(
                            &mut out[h * hd..],
                            d,
                            view(scores, t, t, t),
                            v,
                            false,
                            false,
                        );
                    }
                });
            layer.out.apply(&ctx, rows, &mut proj, true);
            for ((v, p), bias) in x.iter_mut().zip(&proj).zip(layer.out.b.iter().cycle()) {
                *v += p + bias;
            }
            let ln1 = norm_forward(&mut x, &layer.ln1.g, &layer.ln1.b, eps, keep);
            let mut pre = vec![0.0f32; rows * inter_n];
            layer.ff1.apply(&x, rows, &mut pre, true);
            add_bias(&mut pre, &layer.ff1.b);
            let act: Vec<f32> = match cfg.activation {
                Activation::Gelu => pre.par_iter().map(|&z| gelu(z)).collect(),
                Activation::Relu => pre.iter().map(|&z| z.max(0.0)).collect(),
            };
            layer.ff2.apply(&act, rows, &mut proj, true);
            for ((v, p), bias) in x.iter_mut().zip(&proj).zip(layer.ff2.b.iter().cycle()) {
                *v += p + bias;
            }
            let ln2 = norm_forward(&mut x, &layer.ln2.g, &layer.ln2.b, eps, keep);
            if let (Some(ln1), Some(ln2)) = (ln1, ln2) {
                caches.push(LayerCache {
                    qkv,
                    probs,
                    ln1,
                    pre,
                    ln2,
                });
            }
        }
        if let Some(ph) = probe {
            return self.probe_backward(ph, x, caches, emb, b, t, target, log);
        }
        // The head on each sequence's first token, keeping each step's output.
        let mut z: Vec<Vec<f32>> = vec![(0..b)
            .flat_map(|s| x[s * t * d..s * t * d + d].to_vec())
            .collect()];
        for step in &self.head {
            let input = z.last().map(Vec::as_slice).unwrap_or_default();
            let mut out = vec![0.0f32; b * step.linear.output];
            step.linear.apply(input, b, &mut out, false);
            for row in out.chunks_exact_mut(step.linear.output) {
                for (o, bias) in row.iter_mut().zip(&step.linear.b) {
                    *o += bias;
                    *o = match step.activation {
                        HeadActivation::None => *o,
                        HeadActivation::Tanh => o.tanh(),
                        HeadActivation::Relu => o.max(0.0),
                    };
                }
            }
            z.push(out);
        }
        let logits = z.last().cloned().unwrap_or_default();
        let k = logits.len() / b;
        let probabilities: Vec<Vec<f32>> = logits
            .chunks_exact(k)
            .map(crate::encoder_model::softmax)
            .collect();
        let Some(target) = target else {
            return Ok(InputGradients {
                values: Vec::new(),
                probabilities,
                grads: Vec::new(),
            });
        };
        if target >= k {
            return Err(EngineError::BadInput(format!(
                "target class {target}: the model has {k} classes"
            )));
        }
        let values: Vec<f32> = probabilities
            .iter()
            .map(|p| if log { p[target].ln() } else { p[target] })
            .collect();
        // dF/dlogits, then back through the head.
        let mut grad: Vec<f32> = probabilities
            .iter()
            .flat_map(|p| {
                (0..k).map(move |j| {
                    let delta = if j == target { 1.0 } else { 0.0 };
                    if log {
                        delta - p[j]
                    } else {
                        p[target] * (delta - p[j])
                    }
                })
            })
            .collect();
        for (si, step) in self.head.iter().enumerate().rev() {
            let out = &z[si + 1];
            for (g, &o) in grad.iter_mut().zip(out) {
                *g *= match step.activation {
                    HeadActivation::None => 1.0,
                    HeadActivation::Tanh => 1.0 - o * o,
                    HeadActivation::Relu => f32::from(u8::from(o > 0.0)),
                };
            }
            let (input, output) = (step.linear.input, step.linear.output);
            let mut back = vec![0.0f32; b * input];
            matmul_transposed_b(
                &mut back,
                input,
                view(&grad, b, output, output),
                view(&step.linear.w, input, output, output),
            );
            grad = back;
        }
        let mut dx = vec![0.0f32; rows * d];
        for s in 0..b {
            dx[s * t * d..s * t * d + d].copy_from_slice(&grad[s * d..(s + 1) * d]);
        }
        self.backward_layers(&mut dx, &caches, emb.as_ref(), b, t);
        Ok(InputGradients {
            values,
            probabilities,
            grads: dx.chunks_exact(t * d).map(<[f32]>::to_vec).collect(),
        })
    }
}

impl Encoder {
    /// dx (dF/d final states) ← dF/d word embeddings, through every layer and the
    /// embeddings' layer norm.
    fn backward_layers(
        &self,
        dx: &mut [f32],
        caches: &[LayerCache],
        emb: Option<&NormCache>,
        b: usize,
        t: usize,
    ) {
        let cfg = &self.config;
        let d = cfg.hidden;
        let rows = b * t;
        let heads = cfg.heads;
        let hd = cfg.head_dim();
        let scale = 1.0 / (hd as f32).sqrt();
        let inter_n = cfg.intermediate;
        let mut tmp = vec![0.0f32; rows * d];
        for (layer, c) in self.layers.iter().zip(caches).rev() {
            norm_backward(dx, &c.ln2, &layer.ln2.g);
            // Feed-forward: dx (residual) + W1ᵀ(GELU'(pre) ⊙ W2ᵀ dx).
            let mut dpre = vec![0.0f32; rows * inter_n];
            matmul_transposed_b_par(
                &mut dpre,
                inter_n,
                view(dx, rows, d, d),
                view(&layer.ff2.w, inter_n, d, d),
            );
            match cfg.activation {
                Activation::Gelu => dpre
                    .par_iter_mut()
                    .zip(c.pre.par_iter())
                    .for_each(|(g, &z)| *g *= gelu_grad(z)),
                Activation::Relu => {
                    for (g, &z) in dpre.iter_mut().zip(&c.pre) {
                        if z <= 0.0 {
                            *g = 0.0;
                        }
                    }
                }
            }
            matmul_transposed_b_par(
                &mut tmp,
                d,
                view(&dpre, rows, inter_n, inter_n),
                view(&layer.ff1.w, d, inter_n, inter_n),
            );
            for (a, b) in dx.iter_mut().zip(&tmp) {
                *a += b;
            }
            norm_backward(dx, &c.ln1, &layer.ln1.g);
            // Attention: dx (residual) + Wqkvᵀ dqkv.
            let mut dctx = vec![0.0f32; rows * d];
            matmul_transposed_b_par(
                &mut dctx,
                d,
                view(dx, rows, d, d),
                view(&layer.out.w, d, d, d),
            );
            let mut dqkv = vec![0.0f32; rows * 3 * d];
            dqkv.par_chunks_mut(t * 3 * d).enumerate().for_each_init(
                || (vec![0.0f32; t * t], vec![0.0f32; t * t]),
                |(dp, tr), (s, out)| {
                    let rows_s = &c.qkv[s * t * 3 * d..(s + 1) * t * 3 * d];
                    let dctx_s = &dctx[s * t * d..(s + 1) * t * d];
                    for h in 0..heads {
                        let p = &c.probs[(s * heads + h) * t * t..(s * heads + h + 1) * t * t];
                        let q = view(&rows_s[h * hd..], t, hd, 3 * d);
                        let kk = view(&rows_s[d + h * hd..], t, hd, 3 * d);
                        let v = view(&rows_s[2 * d + h * hd..], t, hd, 3 * d);
                        let dc = view(&dctx_s[h * hd..], t, hd, d);
                        // dV = Pᵀ dC
                        transpose_square(p, t, tr);
                        matmul(
                            &mut out[2 * d + h * hd..],
                            3 * d,
                            view(tr, t, t, t),
                            dc,
                            false,
                            false,
                        );
                        // dP = dC Vᵀ; dS = P ⊙ (dP − rowsum(dP ⊙ P)) · scale
                        matmul_transposed_b(dp, t, dc, v);
                        for i in 0..t {
                            let pr = &p[i * t..(i + 1) * t];
                            let dr = &mut dp[i * t..(i + 1) * t];
                            let dot: f32 = pr.iter().zip(dr.iter()).map(|(a, b)| a * b).sum();
                            for (dv, &pv) in dr.iter_mut().zip(pr) {
                                *dv = pv * (*dv - dot) * scale;
                            }
                        }
                        // dQ = dS K; dK = dSᵀ Q
                        matmul(
                            &mut out[h * hd..],
                            3 * d,
                            view(dp, t, t, t),
                            kk,
                            false,
                            false,
                        );
                        transpose_square(dp, t, tr);
                        matmul(
                            &mut out[d + h * hd..],
                            3 * d,
                            view(tr, t, t, t),
                            q,
                            false,
                            false,
                        );
                    }
                },
            );
            matmul_transposed_b_par(
                &mut tmp,
                d,
                view(&dqkv, rows, 3 * d, 3 * d),
                view(&layer.qkv.w, d, 3 * d, 3 * d),
            );
            for (a, b) in dx.iter_mut().zip(&tmp) {
                *a += b;
            }
        }
        if let Some(e) = &emb {
            norm_backward(dx, e, &self.emb_norm.g);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn probe_backward(
        &self,
        ph: &ProbeHead<'_>,
        x: Vec<f32>,
        caches: Vec<LayerCache>,
        emb: Option<NormCache>,
        b: usize,
        t: usize,
        target: Option<usize>,
        log: bool,
    ) -> Result<InputGradients> {
        let d = self.config.hidden;
        let k = match ph.head {
            PooledHead::Probe(p) => p.parameters().0,
            PooledHead::ZeroShot(l) => l.len(),
        };
        if let Some(c) = target.filter(|&c| c >= k) {
            return Err(EngineError::BadInput(format!(
                "target class {c}: the probe has {k} classes"
            )));
        }
        let runs: Vec<ProbeRun> = x
            .chunks_exact(t * d)
            .map(|s| ph.run(s, d, target.map(|c| (c, log))))
            .collect();
        let probabilities = runs.iter().map(|r| r.0.clone()).collect();
        if target.is_none() {
            return Ok(InputGradients {
                values: Vec::new(),
                probabilities,
                grads: Vec::new(),
            });
        }
        let values = runs
            .iter()
            .filter_map(|r| r.1.as_ref().map(|g| g.0))
            .collect();
        let mut dx: Vec<f32> = runs
            .into_iter()
            .flat_map(|r| r.1.map(|g| g.1).unwrap_or_default())
            .collect();
        self.backward_layers(&mut dx, &caches, emb.as_ref(), b, t);
        Ok(InputGradients {
            values,
            probabilities,
            grads: dx.chunks_exact(t * d).map(<[f32]>::to_vec).collect(),
        })
    }
}

fn matmul_transposed_b_par(dst: &mut [f32], dst_stride: usize, a: View<'_>, b: View<'_>) {
    crate::kernels::matmul_transposed_b_parallel(dst, dst_stride, a, b);
}
