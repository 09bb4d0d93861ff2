//! The gradient of continuation log-likelihoods with respect to a decoder's input word
//! embeddings, for integrated gradients on generative classifiers: a forward pass over
//! sequences of equal length (the interpolation steps of one prompt) that keeps what the
//! backward pass needs, then a hand-written backward pass that forms input gradients only,
//! never a weight gradient. It runs on the same kernels, weights and numerics as scoring
//! (`Decoder::score`), so F(x) here is the log-likelihood `compare` reports.
//!
//! A sequence is laid out as scoring lays a request out: the context once, then each
//! continuation's fed tokens as a branch that sees the context and its own earlier tokens
//! (tree mask, positions restarting after the context), so the context's rows, the bulk
//! of the work, are computed once for all the labels.

use rayon::prelude::*;

use super::{
    add_into, gated_activation, gelu_tanh_inplace, rms_norm, softmax_rows, sum_exp, Decoder,
    FfnActivation, Linear, Norm, RopeTable,
};
use crate::error::{EngineError, Result};
use crate::kernels::{matmul, matmul_transposed_b, matmul_transposed_b_parallel};
use crate::model::backward::{transpose_square, view};
use lmcompare_kernels::fast_tanh;

/// What one layer's forward pass keeps for its backward pass (`rows = batch · n`).
struct LayerTape {
    /// The residual stream entering the layer (the attention norm's input).
    x_in: Vec<f32>,
    /// Q/K/V as projected, before the per-head norms (kept only when the model has them).
    qkv_projected: Option<Vec<f32>>,
    /// Q/K/V after the per-head norms and the rotary embedding.
    qkv: Vec<f32>,
    /// Attention probabilities: per sequence, per head, `n × n`.
    probs: Vec<f32>,
    /// The output projection before the post-attention norm (when there is one).
    o_out: Option<Vec<f32>>,
    /// The residual stream after attention (the feed-forward norm's input).
    x_mid: Vec<f32>,
    /// The up (gate and up) projection before the activation.
    ff: Vec<f32>,
    /// The down projection before the post-feed-forward norm (when there is one).
    down_out: Option<Vec<f32>>,
}

/// A forward pass kept for [`Decoder::loglik_backward`].
pub struct LoglikTape {
    batch: usize,
    n: usize,
    layout: TreeLayout,
    layers: Vec<LayerTape>,
    /// The residual stream before the final norm.
    x_final: Vec<f32>,
    /// Every scored token, the same in each sequence.
    scored: Vec<Scored>,
    /// Softmax over the vocabulary at each scored row (`batch · scored × vocab`).
    probs: Vec<f32>,
    /// tanh of the soft-capped logits (their value / cap), for models with a final cap.
    capped: Option<Vec<f32>>,
}

/// Where each row of a packed sequence sits: its position and its tree segment (0 = the
/// context, k = the k-th branch).
#[derive(Debug, Clone)]
pub struct TreeLayout {
    pub positions: Vec<usize>,
    pub segments: Vec<u32>,
}

impl TreeLayout {
    /// A plain causal sequence of `n` tokens.
    pub fn causal(n: usize) -> TreeLayout {
        TreeLayout {
            positions: (0..n).collect(),
            segments: vec![0; n],
        }
    }

    /// A context of `context` tokens, then branches of the given lengths.
    pub fn tree(context: usize, branches: &[usize]) -> TreeLayout {
        let mut t = TreeLayout::causal(context);
        for (k, &len) in branches.iter().enumerate() {
            t.positions.extend(context..context + len);
            t.segments.extend(std::iter::repeat_n(k as u32 + 1, len));
        }
        t
    }

    fn visible(&self, i: usize, j: usize, window: Option<usize>) -> bool {
        let (pi, pj) = (self.positions[i], self.positions[j]);
        let (si, sj) = (self.segments[i], self.segments[j]);
        j <= i && (sj == 0 || sj == si) && pj <= pi && window.is_none_or(|w| pi - pj < w)
    }
}

/// A token whose log-probability is summed: predicted from row `row`, into group `group`
/// (a label's continuation).
#[derive(Debug, Clone, Copy)]
pub struct Scored {
    pub row: usize,
    pub token: u32,
    pub group: usize,
}

impl Decoder {
    /// The word-embedding rows of `ids` (`len × hidden`, before Gemma's √hidden scale).
    pub fn word_embeddings(&self, ids: &[u32]) -> Result<Vec<f32>> {
        self.check_ids(ids)?;
        let d = self.config.hidden;
        let mut out = vec![0.0f32; ids.len() * d];
        for (&t, row) in ids.iter().zip(out.chunks_exact_mut(d)) {
            self.weights.embed.row_into(t as usize, row);
        }
        Ok(out)
    }

    /// Runs `batch` sequences laid out as `layout` (`n` rows each), given by their word
    /// embeddings (`inputs`: `batch × n × hidden`, as [`Decoder::word_embeddings`] gives
    /// them), and returns each sequence's summed log-probability of the `scored` tokens per
    /// group (`batch × groups`), with what the backward pass needs.
    pub fn loglik_forward(
        &self,
        inputs: &[f32],
        batch: usize,
        layout: &TreeLayout,
        scored: &[Scored],
    ) -> Result<(Vec<Vec<f64>>, LoglikTape)> {
        let cfg = &self.config;
        let d = cfg.hidden;
        let n = layout.positions.len();
        let rows = batch * n;
        if inputs.len() != rows * d || n == 0 {
            return Err(EngineError::Runtime(format!(
                "{} input values for {batch} sequences of {n} tokens of width {d}",
                inputs.len()
            )));
        }
        let max_pos = layout.positions.iter().copied().max().unwrap_or(0);
        if max_pos >= cfg.max_positions || layout.segments.len() != n {
            return Err(EngineError::BadInput(format!(
                "a sequence reaching position {max_pos} does not fit the model's {} positions",
                cfg.max_positions
            )));
        }
        if let Some(s) = scored
            .iter()
            .find(|s| s.row >= n || s.token as usize >= cfg.vocab_size)
        {
            return Err(EngineError::Runtime(format!(
                "scored token {} at row {} of a {n}-token sequence",
                s.token, s.row
            )));
        }
        let groups = scored.iter().map(|s| s.group + 1).max().unwrap_or(0);
        let scale = if cfg.scale_embeddings {
            (d as f32).sqrt()
        } else {
            1.0
        };
        let mut x: Vec<f32> = inputs.iter().map(|v| v * scale).collect();
        if let Some(pos) = &self.weights.positions {
            for (r, row) in x.chunks_exact_mut(d).enumerate() {
                let p = layout.positions[r % n];
                add_into(row, &pos[p * d..(p + 1) * d]);
            }
        }
        let tables = self.rope_tables(max_pos + 1);
        let (qd, kvd) = (cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim);
        let width = qd + 2 * kvd;
        let mut layers = Vec::with_capacity(cfg.layers);
        for (li, layer) in self.weights.layers.iter().enumerate() {
            let x_in = x.clone();
            let mut h = x.clone();
            layer.attn_norm.apply(&mut h, cfg.norm_eps);
            let mut qkv = Vec::new();
            layer.qkv.forward(&h, rows, &mut qkv);
            let qkv_projected =
                (layer.q_norm.is_some() || layer.k_norm.is_some()).then(|| qkv.clone());
            for row in qkv.chunks_exact_mut(width) {
                if let Some(w) = &layer.q_norm {
                    rms_norm(&mut row[..qd], w, cfg.norm_eps);
                }
                if let Some(w) = &layer.k_norm {
                    rms_norm(&mut row[qd..qd + kvd], w, cfg.norm_eps);
                }
            }
            if let Some(table) = self.layer_table(&tables, li) {
                for (r, row) in qkv.chunks_exact_mut(width).enumerate() {
                    let p = layout.positions[r % n];
                    table.rotate(&mut row[..qd + kvd], p, cfg.head_dim, cfg.rope_layout);
                }
            }
            let window = cfg.sliding_window.filter(|_| cfg.sliding_layers[li]);
            let (attn, probs) = self.tree_attention(&qkv, batch, layout, window);
            let mut proj = Vec::new();
            layer.o.forward(&attn, rows, &mut proj);
            let o_out = layer.post_attn_norm.as_ref().map(|_| proj.clone());
            if let Some(nm) = &layer.post_attn_norm {
                nm.apply(&mut proj, cfg.norm_eps);
            }
            add_into(&mut x, &proj);
            let x_mid = x.clone();
            h.copy_from_slice(&x);
            layer.ffn_norm.apply(&mut h, cfg.norm_eps);
            let mut ff = Vec::new();
            layer.up.forward(&h, rows, &mut ff);
            let act = activation(layer.gated, &ff, rows, cfg.ffn, cfg.activation);
            layer.down.forward(&act, rows, &mut proj);
            let down_out = layer.post_ffn_norm.as_ref().map(|_| proj.clone());
            if let Some(nm) = &layer.post_ffn_norm {
                nm.apply(&mut proj, cfg.norm_eps);
            }
            add_into(&mut x, &proj);
            layers.push(LayerTape {
                x_in,
                qkv_projected,
                qkv,
                probs,
                o_out,
                x_mid,
                ff,
                down_out,
            });
        }
        let x_final = x.clone();
        self.weights.final_norm.apply(&mut x, cfg.norm_eps);
        let ns = scored.len();
        let mut gathered = Vec::with_capacity(batch * ns * d);
        for b in 0..batch {
            for sc in scored {
                let at = (b * n + sc.row) * d;
                gathered.extend_from_slice(&x[at..at + d]);
            }
        }
        let v = cfg.vocab_size;
        let mut logits = self.lm_head(&gathered, batch * ns);
        let capped = cfg
            .final_softcap
            .map(|c| logits.iter().map(|l| l / c).collect::<Vec<f32>>());
        let mut sums = vec![vec![0.0f64; groups]; batch];
        for (i, row) in logits.chunks_exact_mut(v).enumerate() {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            let log_z = sum_exp(row, max).ln();
            let sc = scored[i % ns];
            let token = sc.token as usize;
            let lp = (row[token] - max) as f64 - log_z;
            if !lp.is_finite() {
                return Err(EngineError::NonFinite {
                    input: i / ns,
                    stage: "the LM head's logits".into(),
                    value: crate::finite::describe(row[token]),
                });
            }
            sums[i / ns][sc.group] += lp;
            for l in row.iter_mut() {
                *l = ((f64::from(*l - max) - log_z).exp()) as f32;
            }
        }
        Ok((
            sums,
            LoglikTape {
                batch,
                n,
                layout: layout.clone(),
                layers,
                x_final,
                scored: scored.to_vec(),
                probs: logits,
                capped,
            },
        ))
    }

    /// The gradient of Σ_b Σ_g `upstream[b][g]` · LL_bg with respect to the inputs of
    /// [`Decoder::loglik_forward`] (`batch × n × hidden`).
    pub fn loglik_backward(&self, tape: &LoglikTape, upstream: &[Vec<f32>]) -> Result<Vec<f32>> {
        let cfg = &self.config;
        let (d, v, n, batch) = (cfg.hidden, cfg.vocab_size, tape.n, tape.batch);
        let rows = batch * n;
        let ns = tape.scored.len();
        // d log p(token) / d logits = onehot − softmax, through the final cap.
        let mut dlogits = vec![0.0f32; batch * ns * v];
        dlogits
            .par_chunks_exact_mut(v)
            .enumerate()
            .for_each(|(i, row)| {
                let sc = tape.scored[i % ns];
                let w = upstream[i / ns][sc.group];
                let p = &tape.probs[i * v..(i + 1) * v];
                for (o, &pv) in row.iter_mut().zip(p) {
                    *o = -w * pv;
                }
                row[sc.token as usize] += w;
                if let Some(th) = &tape.capped {
                    for (o, &t) in row.iter_mut().zip(&th[i * v..(i + 1) * v]) {
                        *o *= 1.0 - t * t;
                    }
                }
            });
        let table = self
            .weights
            .lm_head
            .as_ref()
            .unwrap_or(&self.weights.embed)
            .f32_rows()?;
        let mut dh = vec![0.0f32; batch * ns * d];
        matmul(
            &mut dh,
            d,
            view(&dlogits, batch * ns, v, v),
            view(table, v, d, d),
            false,
            true,
        );
        drop(dlogits);
        let mut dx = vec![0.0f32; rows * d];
        for b in 0..batch {
            for (si, sc) in tape.scored.iter().enumerate() {
                let r = sc.row;
                let src = &dh[(b * ns + si) * d..(b * ns + si + 1) * d];
                add_into(&mut dx[(b * n + r) * d..(b * n + r + 1) * d], src);
            }
        }
        let mut dx = norm_backward(&self.weights.final_norm, &tape.x_final, &dx, cfg.norm_eps);
        let layout = &tape.layout;
        let tables = self.rope_tables(layout.positions.iter().copied().max().unwrap_or(0) + 1);
        let (qd, kvd) = (cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim);
        let width = qd + 2 * kvd;
        for (li, (layer, lt)) in self
            .weights
            .layers
            .iter()
            .zip(&tape.layers)
            .enumerate()
            .rev()
        {
            // Feed-forward block.
            let dp = match (&layer.post_ffn_norm, &lt.down_out) {
                (Some(nm), Some(pre)) => norm_backward(nm, pre, &dx, cfg.norm_eps),
                _ => dx.clone(),
            };
            let d_act = linear_backward(&layer.down, &dp, rows)?;
            let d_ff = activation_backward(layer.gated, &lt.ff, &d_act, cfg.ffn, cfg.activation);
            let d_h = linear_backward(&layer.up, &d_ff, rows)?;
            add_into(
                &mut dx,
                &norm_backward(&layer.ffn_norm, &lt.x_mid, &d_h, cfg.norm_eps),
            );
            // Attention block.
            let dp = match (&layer.post_attn_norm, &lt.o_out) {
                (Some(nm), Some(pre)) => norm_backward(nm, pre, &dx, cfg.norm_eps),
                _ => dx.clone(),
            };
            let d_attn = linear_backward(&layer.o, &dp, rows)?;
            let window = cfg.sliding_window.filter(|_| cfg.sliding_layers[li]);
            let mut d_qkv = self.attention_backward(lt, &d_attn, batch, layout, window);
            if let Some(table) = self.layer_table(&tables, li) {
                for (r, row) in d_qkv.chunks_exact_mut(width).enumerate() {
                    let p = layout.positions[r % n];
                    table.rotate_by(&mut row[..qd + kvd], p, cfg.head_dim, cfg.rope_layout, -1.0);
                }
            }
            if let Some(pre) = &lt.qkv_projected {
                for (drow, xrow) in d_qkv.chunks_exact_mut(width).zip(pre.chunks_exact(width)) {
                    if let Some(w) = &layer.q_norm {
                        let g = rms_backward(&xrow[..qd], &drow[..qd], w, cfg.norm_eps);
                        drow[..qd].copy_from_slice(&g);
                    }
                    if let Some(w) = &layer.k_norm {
                        let (x, dy) = (&xrow[qd..qd + kvd], &drow[qd..qd + kvd]);
                        let g = rms_backward(x, dy, w, cfg.norm_eps);
                        drow[qd..qd + kvd].copy_from_slice(&g);
                    }
                }
            }
            let d_h = linear_backward(&layer.qkv, &d_qkv, rows)?;
            add_into(
                &mut dx,
                &norm_backward(&layer.attn_norm, &lt.x_in, &d_h, cfg.norm_eps),
            );
        }
        if cfg.scale_embeddings {
            let scale = (d as f32).sqrt();
            for g in &mut dx {
                *g *= scale;
            }
        }
        Ok(dx)
    }

    fn rope_tables(&self, positions: usize) -> Vec<Option<RopeTable>> {
        let cfg = &self.config;
        [cfg.rope_global.as_ref(), cfg.rope_local.as_ref()]
            .iter()
            .map(|r| r.map(|r| RopeTable::new(r, positions)))
            .collect()
    }

    fn layer_table<'t>(&self, tables: &'t [Option<RopeTable>], li: usize) -> Option<&'t RopeTable> {
        if self.config.sliding_layers[li] && tables[1].is_some() {
            tables[1].as_ref()
        } else {
            tables[0].as_ref()
        }
    }

    /// Attention of `batch` sequences laid out as `layout` (tree mask, GQA, sliding window,
    /// soft cap), as `Decoder::attention` computes it; also returns the probabilities.
    fn tree_attention(
        &self,
        qkv: &[f32],
        batch: usize,
        layout: &TreeLayout,
        window: Option<usize>,
    ) -> (Vec<f32>, Vec<f32>) {
        let cfg = &self.config;
        let n = layout.positions.len();
        let hd = cfg.head_dim;
        let (qd, kvd) = (cfg.heads * hd, cfg.kv_heads * hd);
        let width = qd + 2 * kvd;
        let group = cfg.heads / cfg.kv_heads;
        let mut out = vec![0.0f32; batch * n * qd];
        let mut probs = vec![0.0f32; batch * cfg.heads * n * n];
        out.par_chunks_exact_mut(n * qd)
            .zip(probs.par_chunks_exact_mut(cfg.heads * n * n))
            .enumerate()
            .for_each(|(b, (out, probs))| {
                let rows = &qkv[b * n * width..(b + 1) * n * width];
                for head in 0..cfg.heads {
                    let g = head / group;
                    let scores = &mut probs[head * n * n..(head + 1) * n * n];
                    matmul_transposed_b(
                        scores,
                        n,
                        view(&rows[head * hd..], n, hd, width),
                        view(&rows[qd + g * hd..], n, hd, width),
                    );
                    for i in 0..n {
                        for (j, s) in scores[i * n..(i + 1) * n].iter_mut().enumerate() {
                            *s = if layout.visible(i, j, window) {
                                let x = *s * cfg.attn_scale;
                                match cfg.attn_softcap {
                                    Some(c) => fast_tanh(x / c) * c,
                                    None => x,
                                }
                            } else {
                                f32::NEG_INFINITY
                            };
                        }
                    }
                    softmax_rows(scores, n);
                    matmul(
                        &mut out[head * hd..],
                        qd,
                        view(scores, n, n, n),
                        view(&rows[qd + kvd + g * hd..], n, hd, width),
                        false,
                        false,
                    );
                }
            });
        (out, probs)
    }

    /// d Q/K/V (before the rotary embedding is undone) from d attention output.
    fn attention_backward(
        &self,
        lt: &LayerTape,
        d_attn: &[f32],
        batch: usize,
        layout: &TreeLayout,
        window: Option<usize>,
    ) -> Vec<f32> {
        let cfg = &self.config;
        let n = layout.positions.len();
        let hd = cfg.head_dim;
        let (qd, kvd) = (cfg.heads * hd, cfg.kv_heads * hd);
        let width = qd + 2 * kvd;
        let group = cfg.heads / cfg.kv_heads;
        let mut d_qkv = vec![0.0f32; batch * n * width];
        d_qkv
            .par_chunks_exact_mut(n * width)
            .enumerate()
            .for_each(|(b, dq)| {
                let rows = &lt.qkv[b * n * width..(b + 1) * n * width];
                let d_out = &d_attn[b * n * qd..(b + 1) * n * qd];
                let mut dp = vec![0.0f32; n * n];
                let mut t = vec![0.0f32; n * n];
                for head in 0..cfg.heads {
                    let g = head / group;
                    let p = &lt.probs[(b * cfg.heads + head) * n * n..][..n * n];
                    let (q_at, k_at, v_at) = (head * hd, qd + g * hd, qd + kvd + g * hd);
                    // dP = dO · Vᵀ; dV += Pᵀ · dO.
                    matmul_transposed_b(
                        &mut dp,
                        n,
                        view(&d_out[head * hd..], n, hd, qd),
                        view(&rows[v_at..], n, hd, width),
                    );
                    transpose_square(p, n, &mut t);
                    matmul(
                        &mut dq[v_at..],
                        width,
                        view(&t, n, n, n),
                        view(&d_out[head * hd..], n, hd, qd),
                        true,
                        false,
                    );
                    // dS = P ⊙ (dP − Σ P dP), through the cap and the scale.
                    let raw = cfg.attn_softcap.map(|_| {
                        let mut s = vec![0.0f32; n * n];
                        matmul_transposed_b(
                            &mut s,
                            n,
                            view(&rows[q_at..], n, hd, width),
                            view(&rows[k_at..], n, hd, width),
                        );
                        s
                    });
                    for i in 0..n {
                        let (pr, dr) = (&p[i * n..(i + 1) * n], &mut dp[i * n..(i + 1) * n]);
                        let dot: f32 = pr.iter().zip(dr.iter()).map(|(a, b)| a * b).sum();
                        for (j, (dv, &pv)) in dr.iter_mut().zip(pr).enumerate() {
                            let mut ds = if layout.visible(i, j, window) {
                                pv * (*dv - dot)
                            } else {
                                0.0
                            };
                            if let (Some(c), Some(raw)) = (cfg.attn_softcap, &raw) {
                                let th = fast_tanh(raw[i * n + j] * cfg.attn_scale / c);
                                ds *= 1.0 - th * th;
                            }
                            *dv = ds * cfg.attn_scale;
                        }
                    }
                    // dQ = dS · K; dK += dSᵀ · Q.
                    matmul(
                        &mut dq[q_at..],
                        width,
                        view(&dp, n, n, n),
                        view(&rows[k_at..], n, hd, width),
                        false,
                        false,
                    );
                    transpose_square(&dp, n, &mut t);
                    matmul(
                        &mut dq[k_at..],
                        width,
                        view(&t, n, n, n),
                        view(&rows[q_at..], n, hd, width),
                        true,
                        false,
                    );
                }
            });
        d_qkv
    }
}

/// `dy · Wᵀ` for a layer stored `in × out`: the gradient of its input.
fn linear_backward(l: &Linear, dy: &[f32], rows: usize) -> Result<Vec<f32>> {
    let mut dx = vec![0.0f32; rows * l.input];
    matmul_transposed_b_parallel(
        &mut dx,
        l.input,
        view(dy, rows, l.output, l.output),
        view(l.f32_weights()?, l.input, l.output, l.output),
    );
    Ok(dx)
}

/// The feed-forward activation as the forward pass applies it (gated: act(gate) · up).
fn activation(gated: bool, ff: &[f32], rows: usize, ffn: usize, a: FfnActivation) -> Vec<f32> {
    if gated {
        let mut act = vec![0.0f32; rows * ffn];
        gated_activation(ff, &mut act, ffn, a == FfnActivation::Silu);
        act
    } else {
        let mut act = ff.to_vec();
        gelu_tanh_inplace(&mut act);
        act
    }
}

/// (activation, its derivative) at `g`.
fn act_and_grad(g: f32, a: FfnActivation) -> (f32, f32) {
    if a == FfnActivation::Silu {
        let s = 1.0 / (1.0 + (-g).exp());
        (g * s, s * (1.0 + g * (1.0 - s)))
    } else {
        const C: f32 = 0.797_884_6;
        let u = C * (g + 0.044_715 * g * g * g);
        let t = u.tanh();
        (
            0.5 * g * (1.0 + t),
            0.5 * (1.0 + t) + 0.5 * g * (1.0 - t * t) * C * (1.0 + 3.0 * 0.044_715 * g * g),
        )
    }
}

fn activation_backward(
    gated: bool,
    ff: &[f32],
    d_act: &[f32],
    ffn: usize,
    a: FfnActivation,
) -> Vec<f32> {
    let mut d_ff = vec![0.0f32; ff.len()];
    if gated {
        for ((gu, dgu), da) in ff
            .chunks_exact(2 * ffn)
            .zip(d_ff.chunks_exact_mut(2 * ffn))
            .zip(d_act.chunks_exact(ffn))
        {
            let (g, u) = gu.split_at(ffn);
            let (dg, du) = dgu.split_at_mut(ffn);
            for j in 0..ffn {
                let (av, ag) = act_and_grad(g[j], a);
                dg[j] = da[j] * u[j] * ag;
                du[j] = da[j] * av;
            }
        }
    } else {
        for ((o, &x), &da) in d_ff.iter_mut().zip(ff).zip(d_act) {
            *o = da * act_and_grad(x, FfnActivation::GeluTanh).1;
        }
    }
    d_ff
}

/// The gradient of a norm's input `x` (rows of the norm's width) from its output's `dy`.
fn norm_backward(norm: &Norm, x: &[f32], dy: &[f32], eps: f32) -> Vec<f32> {
    match norm {
        Norm::Rms(w) => rms_backward(x, dy, w, eps),
        Norm::Layer(g, _) => {
            let n = g.len();
            let mut out = vec![0.0f32; x.len()];
            for ((xr, dr), o) in x
                .chunks_exact(n)
                .zip(dy.chunks_exact(n))
                .zip(out.chunks_exact_mut(n))
            {
                let mean = xr.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
                let var = xr
                    .iter()
                    .map(|&v| (f64::from(v) - mean).powi(2))
                    .sum::<f64>()
                    / n as f64;
                let inv = 1.0 / (var + f64::from(eps)).sqrt();
                let gg: Vec<f64> = dr.iter().zip(g).map(|(a, b)| f64::from(a * b)).collect();
                let xhat: Vec<f64> = xr.iter().map(|&v| (f64::from(v) - mean) * inv).collect();
                let mg = gg.iter().sum::<f64>() / n as f64;
                let mgx = gg.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / n as f64;
                for ((o, &gv), &xh) in o.iter_mut().zip(&gg).zip(&xhat) {
                    *o = (inv * (gv - mg - xh * mgx)) as f32;
                }
            }
            out
        }
    }
}

/// RMSNorm's input gradient, per row of `w.len()`.
fn rms_backward(x: &[f32], dy: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let n = w.len();
    let mut out = vec![0.0f32; x.len()];
    for ((xr, dr), o) in x
        .chunks_exact(n)
        .zip(dy.chunks_exact(n))
        .zip(out.chunks_exact_mut(n))
    {
        let ms = xr.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / n as f64;
        let inv = 1.0 / (ms + f64::from(eps)).sqrt();
        let gx: f64 = dr
            .iter()
            .zip(w)
            .zip(xr)
            .map(|((d, wv), xv)| f64::from(d * wv) * f64::from(*xv))
            .sum::<f64>()
            / n as f64;
        for (((o, &d), &wv), &xv) in o.iter_mut().zip(dr).zip(w).zip(xr) {
            let g = f64::from(d * wv);
            *o = (inv * (g - f64::from(xv) * inv * inv * gx)) as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::ScoreRequest;
    use std::path::PathBuf;

    fn tiny(name: &str) -> Decoder {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/models")
            .join(name);
        Decoder::load(&dir).expect("tiny decoder")
    }

    /// Summed log-likelihoods of two continuations sharing a context (one tree) and their
    /// gradient against central differences along a direction, and the log-likelihoods
    /// against the scoring pass `compare` uses.
    #[test]
    fn gradients_equal_finite_differences_on_every_family() {
        for name in [
            "tiny-llama",
            "tiny-qwen2",
            "tiny-qwen3",
            "tiny-gemma",
            "tiny-gemma2",
            "tiny-gemma3",
            "tiny-gpt2",
        ] {
            let m = tiny(name);
            let d = m.config.hidden;
            let v = m.config.vocab_size as u32;
            let ids: Vec<u32> = (0..9u32).map(|i| (i * 37 + 5) % v).collect();
            let conts = [vec![(11u32 * 3) % v, 17 % v, 29 % v], vec![41 % v]];
            let nc = ids.len();
            let mut seq = ids.clone();
            seq.extend_from_slice(&conts[0][..2]);
            let layout = TreeLayout::tree(nc, &[2, 0]);
            let n = seq.len();
            let mut scored = vec![Scored {
                row: nc - 1,
                token: conts[0][0],
                group: 0,
            }];
            scored.push(Scored {
                row: nc,
                token: conts[0][1],
                group: 0,
            });
            scored.push(Scored {
                row: nc + 1,
                token: conts[0][2],
                group: 0,
            });
            scored.push(Scored {
                row: nc - 1,
                token: conts[1][0],
                group: 1,
            });
            let x = m.word_embeddings(&seq).unwrap();
            // Two sequences: the input and a perturbed copy, weighted differently.
            let mut inputs = x.clone();
            inputs.extend(
                x.iter()
                    .enumerate()
                    .map(|(i, v)| v + 0.01 * ((i % 7) as f32 - 3.0)),
            );
            let (ll, tape) = m.loglik_forward(&inputs, 2, &layout, &scored).unwrap();
            let (scores, _) = m
                .score(&[ScoreRequest {
                    context: ids.clone(),
                    continuations: conts.to_vec(),
                }])
                .unwrap();
            for k in 0..2 {
                assert!(
                    (ll[0][k] - scores[0][k].sum()).abs() < 1e-4,
                    "{name}: {} vs scoring's {}",
                    ll[0][k],
                    scores[0][k].sum()
                );
            }
            let upstream = [vec![1.0f32, 0.3], vec![-0.5, 0.8]];
            let grad = m.loglik_backward(&tape, &upstream).unwrap();
            let dir: Vec<f32> = (0..inputs.len())
                .map(|i| (((i * 7919) % 13) as f32 - 6.0) / 6.0)
                .collect();
            let analytic: f64 = grad
                .iter()
                .zip(&dir)
                .map(|(g, r)| f64::from(*g) * f64::from(*r))
                .sum();
            let f = |eps: f32| -> f64 {
                let moved: Vec<f32> = inputs.iter().zip(&dir).map(|(a, r)| a + eps * r).collect();
                let (ll, _) = m.loglik_forward(&moved, 2, &layout, &scored).unwrap();
                let mut total = 0.0;
                for (b, up) in upstream.iter().enumerate() {
                    for (g, w) in up.iter().enumerate() {
                        total += f64::from(*w) * ll[b][g];
                    }
                }
                total
            };
            // Central differences at h and h/2, Richardson-extrapolated: the tiny random
            // models curve enough for a plain difference's h² error to show.
            let central = |h: f32| (f(h) - f(-h)) / (2.0 * f64::from(h));
            let numeric = (4.0 * central(1e-3) - central(2e-3)) / 3.0;
            let tol = 2e-3 * analytic.abs().max(0.5);
            assert!(
                (analytic - numeric).abs() < tol,
                "{name}: analytic {analytic} vs numeric {numeric}"
            );
            assert_eq!(grad.len(), 2 * n * d);
        }
    }
}

#[cfg(test)]
mod real_model {
    use super::*;
    use std::path::PathBuf;

    /// The shipped Gemma 3 270M (scripts/fetch-assets.sh): the gradient along a direction
    /// against central differences, on a real review's prompt.
    #[test]
    fn the_quantised_path_refuses_gradients_and_names_the_way_out() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../assets/models/gemma-3-270m-q4_k_m.gguf");
        let m = Decoder::load(&path).expect("bash scripts/fetch-assets.sh fetches the Gemma GGUF");
        let ids = m.encode("A delight.").unwrap();
        let n = ids.len();
        let inputs = m.word_embeddings(&ids).unwrap();
        let scored = [Scored {
            row: n - 2,
            token: ids[n - 1],
            group: 0,
        }];
        let (_, tape) = m
            .loglik_forward(&inputs, 1, &TreeLayout::causal(n), &scored)
            .unwrap();
        let e = m
            .loglik_backward(&tape, &[vec![1.0]])
            .unwrap_err()
            .to_string();
        assert!(e.contains("load it with --dequantize"), "{e}");
    }

    #[test]
    fn gemma_gradient_equals_finite_differences() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../assets/models/gemma-3-270m-q4_k_m.gguf");
        // Gradients need the f32 weights (the quantised path refuses, as tested below).
        let m = Decoder::load_with(&path, super::super::LoadOptions { dequantize: true })
            .expect("bash scripts/fetch-assets.sh fetches the Gemma GGUF");
        let (ctx, cont) = m
            .encode_pair("Funny, warm and unmissable, a delight.\nAnswer:", " fresh")
            .unwrap();
        let nc = ctx.len();
        let mut seq = ctx.clone();
        seq.extend_from_slice(&cont[..cont.len() - 1]);
        let layout = TreeLayout::tree(nc, &[cont.len() - 1]);
        let scored: Vec<Scored> = cont
            .iter()
            .enumerate()
            .map(|(t, &token)| Scored {
                row: if t == 0 { nc - 1 } else { nc + t - 1 },
                token,
                group: 0,
            })
            .collect();
        let x = m.word_embeddings(&seq).unwrap();
        let (_, tape) = m.loglik_forward(&x, 1, &layout, &scored).unwrap();
        let grad = m.loglik_backward(&tape, &[vec![1.0]]).unwrap();
        let dir: Vec<f32> = (0..x.len())
            .map(|i| (((i * 7919) % 13) as f32 - 6.0) / 600.0)
            .collect();
        let analytic: f64 = grad.iter().zip(&dir).map(|(g, r)| f64::from(g * r)).sum();
        let f = |h: f32| -> f64 {
            let moved: Vec<f32> = x.iter().zip(&dir).map(|(a, r)| a + h * r).collect();
            m.loglik_forward(&moved, 1, &layout, &scored).unwrap().0[0][0]
        };
        // The model curves sharply along the direction (a plain difference at h = 0.5 is
        // 18% off); Richardson at h = 0.05 is within 2e-5 of the gradient when it is right.
        let central = |h: f32| (f(h) - f(-h)) / (2.0 * f64::from(h));
        let numeric = (4.0 * central(0.025) - central(0.05)) / 3.0;
        assert!(
            (analytic - numeric).abs() < 1e-3 * analytic.abs(),
            "analytic {analytic} vs numeric {numeric}"
        );
    }
}
