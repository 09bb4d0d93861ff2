//! Fine-tuning the top `k` transformer layers together with the classification head, on
//! candle's autograd. The frozen lower layers run once on our own kernels and their output
//! states are cached; each step pads a batch of those states, runs the unfrozen layers and
//! the head in candle, back-propagates, and applies the torch-equivalent optimiser of
//! `lmcompare-tune` to the flat parameters.

use std::path::Path;

use candle_core::{Device, Tensor, Var, D};
use lmcompare_tune::{
    class_weights, clip_grad_norm, EpochStats, EpochTrainer, HeadActivation, HeadShape,
    HeadWeights, LrScheduler, Optimizer, TrainConfig,
};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde_json::Value;

use crate::config::{Activation, Architecture, EncoderConfig};
use crate::encoder_model::weights_file;
use crate::error::{EngineError, Result};
use crate::model::{layer_names, weight_prefix};
use crate::weights::WeightFile;

fn ce(e: candle_core::Error) -> EngineError {
    EngineError::Runtime(format!("candle: {e}"))
}

/// One optimiser step's record (for the PyTorch replay tests).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnfrozenStep {
    pub loss: f64,
    pub lr: f64,
}

/// Trains the top `k` layers of an encoder and its classification head.
pub struct UnfrozenTrainer<'a> {
    states: &'a [Vec<f32>],
    labels: &'a [u32],
    train: Vec<usize>,
    d: usize,
    heads: usize,
    eps: f64,
    gelu: bool,
    shape: HeadShape,
    hidden_dropout: f32,
    attention_dropout: f32,
    config: TrainConfig,
    /// Checkpoint names of the unfrozen layers' tensors, then the head's four.
    pub names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    params: Vec<Vec<f32>>,
    vars: Vec<Var>,
    optimizer: Optimizer,
    scheduler: LrScheduler,
    class_weights: Option<Vec<f32>>,
    rng: Xoshiro256PlusPlus,
    device: Device,
    layers: usize,
    epochs_done: usize,
    pub steps: Option<Vec<UnfrozenStep>>,
}

/// The layers a model has, from its folder.
pub fn layer_count(dir: &Path) -> Result<usize> {
    Ok(EncoderConfig::from_file(&dir.join("config.json"))?.layers)
}

impl<'a> UnfrozenTrainer<'a> {
    /// `states[i]`: example i's token states (`tokens × d`) after the frozen layers.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dir: &Path,
        unfrozen: usize,
        states: &'a [Vec<f32>],
        labels: &'a [u32],
        train: Vec<usize>,
        shape: HeadShape,
        head: HeadWeights,
        config: TrainConfig,
        seed: u64,
    ) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let raw: Value = serde_json::from_str(
            &std::fs::read_to_string(&cfg_path)
                .map_err(|e| EngineError::file(&cfg_path, format!("cannot read: {e}")))?,
        )
        .map_err(|e| EngineError::file(&cfg_path, format!("not valid JSON: {e}")))?;
        let cfg = EncoderConfig::from_value(&raw).map_err(|m| EngineError::file(&cfg_path, m))?;
        if unfrozen == 0 || unfrozen > cfg.layers {
            return Err(EngineError::BadInput(format!(
                "--unfreeze {unfrozen}: the model has {} layers",
                cfg.layers
            )));
        }
        if train.is_empty() {
            return Err(EngineError::BadInput("the train split is empty".into()));
        }
        if config.batch_size > train.len() {
            return Err(EngineError::BadInput(format!(
                "batch_size {} is larger than the train split ({} examples)",
                config.batch_size,
                train.len()
            )));
        }
        let wpath = weights_file(dir).ok_or_else(|| EngineError::file(dir, "no weights"))?;
        let w = WeightFile::open(&wpath)?;
        let prefix = weight_prefix(&w)?;
        let d = cfg.hidden;
        let mut names = Vec::new();
        let mut shapes = Vec::new();
        let mut params = Vec::new();
        for layer in cfg.layers - unfrozen..cfg.layers {
            let n = layer_names(cfg.architecture, &prefix, layer);
            let inter = cfg.intermediate;
            let linears = [
                (&n.q, d, d),
                (&n.k, d, d),
                (&n.v, d, d),
                (&n.o, d, d),
                (&n.ln1, 0, d),
                (&n.ff1, inter, d),
                (&n.ff2, d, inter),
                (&n.ln2, 0, d),
            ];
            for (name, out, input) in linears {
                let (wn, bn, wshape, bshape) = if out == 0 {
                    // Layer norms; old TensorFlow conversions call them gamma/beta.
                    let (g, b) = if w.contains(&format!("{name}.gamma")) {
                        ("gamma", "beta")
                    } else {
                        ("weight", "bias")
                    };
                    (
                        format!("{name}.{g}"),
                        format!("{name}.{b}"),
                        vec![input],
                        vec![input],
                    )
                } else {
                    (
                        format!("{name}.weight"),
                        format!("{name}.bias"),
                        vec![out, input],
                        vec![out],
                    )
                };
                params.push(w.get(&wn, &wshape)?);
                names.push(wn);
                shapes.push(wshape);
                params.push(w.get(&bn, &bshape)?);
                names.push(bn);
                shapes.push(bshape);
            }
        }
        let (hd, hc) = (shape.hidden, shape.classes);
        for (n, s, v) in [
            ("head.dense.weight", vec![hd, shape.input], head.dense_w),
            ("head.dense.bias", vec![hd], head.dense_b),
            ("head.out.weight", vec![hc, hd], head.out_w),
            ("head.out.bias", vec![hc], head.out_b),
        ] {
            names.push(n.to_owned());
            shapes.push(s);
            params.push(v);
        }
        let device = Device::Cpu;
        let vars = params
            .iter()
            .zip(&shapes)
            .map(|(p, s)| Var::from_slice(p, s.as_slice(), &device).map_err(ce))
            .collect::<Result<Vec<_>>>()?;
        // Hugging Face's Trainer exempts biases and LayerNorm weights from weight decay.
        let decay = shapes
            .iter()
            .map(|s| s.len() > 1 || config.decay_biases)
            .collect();
        let f = |k: &str| raw[k].as_f64();
        let (hidden_dropout, attention_dropout) = if cfg.architecture == Architecture::DistilBert {
            (
                f("dropout").unwrap_or(0.1),
                f("attention_dropout").unwrap_or(0.1),
            )
        } else {
            (
                f("hidden_dropout_prob").unwrap_or(0.1),
                f("attention_probs_dropout_prob").unwrap_or(0.1),
            )
        };
        let class_weights = class_weights(config.class_weight, labels, &train, shape.classes);
        let steps_per_epoch = train.len().div_ceil(config.batch_size);
        Ok(UnfrozenTrainer {
            states,
            labels,
            d,
            heads: cfg.heads,
            eps: cfg.layer_norm_eps as f64,
            gelu: cfg.activation == Activation::Gelu,
            shape,
            hidden_dropout: hidden_dropout as f32,
            attention_dropout: attention_dropout as f32,
            optimizer: Optimizer::new(config.optimizer, config.weight_decay, decay),
            scheduler: LrScheduler::new(
                config.schedule.clone(),
                config.lr,
                config.epochs,
                steps_per_epoch,
            ),
            config,
            names,
            shapes,
            params,
            vars,
            class_weights,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            device,
            layers: unfrozen,
            train,
            epochs_done: 0,
            steps: None,
        })
    }

    /// Overrides the dropout of the unfrozen layers (the PyTorch replay runs without).
    pub fn set_layer_dropout(&mut self, hidden: f32, attention: f32) {
        self.hidden_dropout = hidden;
        self.attention_dropout = attention;
    }

    pub fn plateau_maximize(&mut self, maximize: bool) {
        self.scheduler.plateau_maximize(maximize);
    }

    /// The trained head.
    pub fn head(&self) -> HeadWeights {
        let n = self.params.len();
        HeadWeights {
            dense_w: self.params[n - 4].clone(),
            dense_b: self.params[n - 3].clone(),
            out_w: self.params[n - 2].clone(),
            out_b: self.params[n - 1].clone(),
        }
    }

    /// The trained encoder tensors under their checkpoint names.
    pub fn encoder_tensors_named(&self) -> Vec<(String, Vec<f32>)> {
        let n = self.params.len() - 4;
        self.names[..n]
            .iter()
            .cloned()
            .zip(self.params[..n].iter().cloned())
            .collect()
    }

    fn dropout_mask(
        rng: &mut Option<&mut Xoshiro256PlusPlus>,
        p: f32,
        dims: &[usize],
        device: &Device,
    ) -> Result<Option<Tensor>> {
        let Some(rng) = rng.as_mut() else {
            return Ok(None);
        };
        if p <= 0.0 {
            return Ok(None);
        }
        let n: usize = dims.iter().product();
        let keep = 1.0 / (1.0 - p);
        let v: Vec<f32> = (0..n)
            .map(|_| if rng.gen::<f32>() < p { 0.0 } else { keep })
            .collect();
        Ok(Some(Tensor::from_vec(v, dims, device).map_err(ce)?))
    }

    /// Logits of a batch; `rng` given means training mode (dropout on).
    fn forward(&self, batch: &[usize], mut rng: Option<&mut Xoshiro256PlusPlus>) -> Result<Tensor> {
        let d = self.d;
        let b = batch.len();
        let t = batch
            .iter()
            .map(|&i| self.states[i].len() / d)
            .max()
            .unwrap_or(1);
        let mut x = vec![0.0f32; b * t * d];
        let mut mask = vec![-1e9f32; b * t];
        for (r, &i) in batch.iter().enumerate() {
            let s = &self.states[i];
            x[r * t * d..r * t * d + s.len()].copy_from_slice(s);
            for m in &mut mask[r * t..r * t + s.len() / d] {
                *m = 0.0;
            }
        }
        let dev = &self.device;
        let mut x = Tensor::from_vec(x, (b, t, d), dev).map_err(ce)?;
        let mask = Tensor::from_vec(mask, (b, 1, 1, t), dev).map_err(ce)?;
        let (h, hd) = (self.heads, d / self.heads);
        let scale = 1.0 / (hd as f64).sqrt();
        let v = |i: usize| self.vars[i].as_tensor();
        // As 2-D products against the transposed weight view (no copies, one gemm call).
        let lin = |x: &Tensor, wi: usize| -> candle_core::Result<Tensor> {
            let w = v(wi);
            let out = w.dim(0)?;
            let dims = x.dims().to_vec();
            let rows: usize = dims[..dims.len() - 1].iter().product();
            let y = x
                .reshape((rows, dims[dims.len() - 1]))?
                .matmul(&w.t()?)?
                .broadcast_add(v(wi + 1))?;
            let mut shape = dims;
            let last = shape.len() - 1;
            shape[last] = out;
            y.reshape(shape)
        };
        let ln = |x: &Tensor, gi: usize| -> candle_core::Result<Tensor> {
            let mean = x.mean_keepdim(D::Minus1)?;
            let xc = x.broadcast_sub(&mean)?;
            let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
            xc.broadcast_div(&(var + self.eps)?.sqrt()?)?
                .broadcast_mul(v(gi))?
                .broadcast_add(v(gi + 1))
        };
        let heads_of = |y: Tensor| -> candle_core::Result<Tensor> {
            y.reshape((b, t, h, hd))?.transpose(1, 2)?.contiguous()
        };
        for l in 0..self.layers {
            let base = l * 16;
            let run = || -> candle_core::Result<(Tensor, Tensor)> {
                let q = heads_of(lin(&x, base)?)?;
                let k = heads_of(lin(&x, base + 2)?)?;
                let vv = heads_of(lin(&x, base + 4)?)?;
                let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&mask)?;
                let max = scores.max_keepdim(D::Minus1)?.detach();
                let e = scores.broadcast_sub(&max)?.exp()?;
                let probs = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
                Ok((probs, vv))
            };
            let (mut probs, vv) = run().map_err(ce)?;
            if let Some(m) =
                Self::dropout_mask(&mut rng, self.attention_dropout, &[b, h, t, t], dev)?
            {
                probs = (probs * m).map_err(ce)?;
            }
            let ctx = probs
                .matmul(&vv)
                .and_then(|c| c.transpose(1, 2)?.reshape((b, t, d)))
                .map_err(ce)?;
            let mut o = lin(&ctx, base + 6).map_err(ce)?;
            if let Some(m) = Self::dropout_mask(&mut rng, self.hidden_dropout, &[b, t, d], dev)? {
                o = (o * m).map_err(ce)?;
            }
            x = ln(&(x + o).map_err(ce)?, base + 8).map_err(ce)?;
            let inter = lin(&x, base + 10)
                .and_then(|y| if self.gelu { y.gelu_erf() } else { y.relu() })
                .map_err(ce)?;
            let mut out = lin(&inter, base + 12).map_err(ce)?;
            if let Some(m) = Self::dropout_mask(&mut rng, self.hidden_dropout, &[b, t, d], dev)? {
                out = (out * m).map_err(ce)?;
            }
            x = ln(&(x + out).map_err(ce)?, base + 14).map_err(ce)?;
        }
        let hb = self.layers * 16;
        let p = self.config.dropout as f32;
        let mut cls = x.narrow(1, 0, 1).and_then(|c| c.squeeze(1)).map_err(ce)?;
        if self.shape.input_dropout {
            if let Some(m) = Self::dropout_mask(&mut rng, p, &[b, d], dev)? {
                cls = (cls * m).map_err(ce)?;
            }
        }
        let mut z = lin(&cls, hb)
            .and_then(|z| match self.shape.activation {
                HeadActivation::Tanh => z.tanh(),
                HeadActivation::Relu => z.relu(),
            })
            .map_err(ce)?;
        if let Some(m) = Self::dropout_mask(&mut rng, p, &[b, self.shape.hidden], dev)? {
            z = (z * m).map_err(ce)?;
        }
        lin(&z, hb + 2).map_err(ce)
    }

    fn step(&mut self, batch: &[usize], lr: f64) -> Result<f64> {
        let mut rng = self.rng.clone();
        let logits = self.forward(batch, Some(&mut rng))?;
        self.rng = rng;
        let c = self.shape.classes;
        let mut w = vec![0.0f32; batch.len() * c];
        let mut wsum = 0.0f64;
        for (r, &i) in batch.iter().enumerate() {
            let y = self.labels[i] as usize;
            let wy = self.class_weights.as_ref().map_or(1.0, |cw| cw[y]);
            w[r * c + y] = wy;
            wsum += wy as f64;
        }
        if wsum <= 0.0 {
            return Ok(0.0);
        }
        let dev = &self.device;
        let loss = (|| -> candle_core::Result<Tensor> {
            let wt = (Tensor::from_vec(w, (batch.len(), c), dev)? / wsum)?;
            let max = logits.max_keepdim(1)?.detach();
            let shifted = logits.broadcast_sub(&max)?;
            let lse = shifted.exp()?.sum_keepdim(1)?.log()?;
            let logp = shifted.broadcast_sub(&lse)?;
            (logp * wt)?.sum_all()?.neg()
        })()
        .map_err(ce)?;
        let value = loss.to_scalar::<f32>().map_err(ce)? as f64;
        if !value.is_finite() {
            return Ok(value);
        }
        let grads = loss.backward().map_err(ce)?;
        let mut g: Vec<Vec<f32>> = self
            .vars
            .iter()
            .zip(&self.params)
            .map(|(var, p)| match grads.get(var.as_tensor()) {
                Some(t) => t.flatten_all()?.to_vec1::<f32>(),
                None => Ok(vec![0.0; p.len()]),
            })
            .collect::<candle_core::Result<_>>()
            .map_err(ce)?;
        if let Some(m) = self.config.grad_clip {
            clip_grad_norm(&mut g, m);
        }
        self.optimizer.step(&mut self.params, &g, lr);
        for ((var, p), s) in self.vars.iter().zip(&self.params).zip(&self.shapes) {
            var.set(&Tensor::from_slice(p, s.as_slice(), dev).map_err(ce)?)
                .map_err(ce)?;
        }
        if let Some(steps) = &mut self.steps {
            steps.push(UnfrozenStep { loss: value, lr });
        }
        Ok(value)
    }

    /// One epoch visiting the train examples in `order`.
    pub fn train_epoch_in_order(&mut self, order: &[usize]) -> Result<EpochStats> {
        let lr_first = self.scheduler.lr();
        let (mut total, mut seen) = (0.0, 0usize);
        for batch in order.chunks(self.config.batch_size) {
            let lr = self.scheduler.lr();
            let loss = self.step(batch, lr)?;
            // A non-finite update shows in the next loss; the weights are checked once per epoch.
            if !loss.is_finite() {
                self.epochs_done += 1;
                return Ok(EpochStats {
                    train_loss: f64::NAN,
                    lr: lr_first,
                    diverged: true,
                });
            }
            total += loss * batch.len() as f64;
            seen += batch.len();
            if self.scheduler.per_step() {
                self.scheduler.step(None);
            }
        }
        self.epochs_done += 1;
        let diverged = self.params.iter().any(|p| p.iter().any(|v| !v.is_finite()));
        Ok(EpochStats {
            train_loss: if diverged {
                f64::NAN
            } else {
                total / seen.max(1) as f64
            },
            lr: lr_first,
            diverged,
        })
    }

    fn try_predict(&self, idx: &[usize]) -> Result<Vec<Vec<f64>>> {
        let mut out = Vec::with_capacity(idx.len());
        for chunk in idx.chunks(32) {
            let logits = self.forward(chunk, None)?;
            let rows: Vec<Vec<f32>> = logits.to_vec2().map_err(ce)?;
            for r in rows {
                let m = r.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
                let e: Vec<f64> = r.iter().map(|&v| (v as f64 - m).exp()).collect();
                let s: f64 = e.iter().sum();
                out.push(e.into_iter().map(|v| v / s).collect());
            }
        }
        Ok(out)
    }
}

impl EpochTrainer for UnfrozenTrainer<'_> {
    fn train_epoch(&mut self) -> EpochStats {
        let mut order = self.train.clone();
        order.shuffle(&mut self.rng);
        self.train_epoch_in_order(&order).unwrap_or(EpochStats {
            train_loss: f64::NAN,
            lr: self.scheduler.lr(),
            diverged: true,
        })
    }

    fn end_epoch(&mut self, metric: Option<f64>) {
        if !self.scheduler.per_step() {
            self.scheduler.step(metric);
        }
    }

    fn head_weights(&self) -> HeadWeights {
        self.head()
    }

    fn encoder_tensors(&self) -> Vec<(String, Vec<f32>)> {
        self.encoder_tensors_named()
    }

    fn predict_proba(&self, idx: &[usize]) -> Vec<Vec<f64>> {
        let c = self.shape.classes;
        self.try_predict(idx)
            .unwrap_or_else(|_| vec![vec![f64::NAN; c]; idx.len()])
    }
}
