//! The classification head of a transformer classifier, trained on frozen features:
//! `[dropout] → dense (d→d) → tanh|relu → dropout → linear (d→classes)` — Hugging Face's
//! BERT pooler + classifier, RoBERTa's classification head and DistilBERT's
//! pre_classifier + classifier are all this shape, so a trained head drops into an HF
//! checkpoint unchanged. Forward and backward are written out over `gemm`: a head step is a
//! handful of small matrix products, where framework dispatch would cost more than the
//! arithmetic.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;

use crate::config::{ClassWeight, TrainConfig};
use crate::optim::{clip_grad_norm, Optimizer};
use crate::schedule::LrScheduler;
use crate::simd::bias_activation;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadActivation {
    Tanh,
    Relu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadShape {
    pub input: usize,
    pub hidden: usize,
    pub classes: usize,
    pub activation: HeadActivation,
    /// RoBERTa applies dropout to the features before the dense layer too.
    pub input_dropout: bool,
}

/// Head weights in PyTorch's layout (`out × in`, row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct HeadWeights {
    pub dense_w: Vec<f32>,
    pub dense_b: Vec<f32>,
    pub out_w: Vec<f32>,
    pub out_b: Vec<f32>,
}

impl HeadWeights {
    /// Hugging Face's initialisation (normal(0, `init_std`) weights, zero biases), keeping a
    /// pretrained dense layer when the checkpoint has one.
    pub fn init(
        shape: &HeadShape,
        pretrained_dense: Option<(Vec<f32>, Vec<f32>)>,
        init_std: f64,
        seed: u64,
    ) -> HeadWeights {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x6865_6164);
        let normal =
            Normal::new(0.0, init_std).unwrap_or_else(|_| Normal::new(0.0, 0.02).expect("valid"));
        let mut draw =
            |n: usize| -> Vec<f32> { (0..n).map(|_| normal.sample(&mut rng) as f32).collect() };
        let (dense_w, dense_b) = match pretrained_dense {
            Some(d) => d,
            None => (draw(shape.hidden * shape.input), vec![0.0; shape.hidden]),
        };
        let out_w = draw(shape.classes * shape.hidden);
        HeadWeights {
            dense_w,
            dense_b,
            out_w,
            out_b: vec![0.0; shape.classes],
        }
    }

    fn into_tensors(self) -> Vec<Vec<f32>> {
        vec![self.dense_w, self.dense_b, self.out_w, self.out_b]
    }

    fn from_tensors(t: &[Vec<f32>]) -> HeadWeights {
        HeadWeights {
            dense_w: t[0].clone(),
            dense_b: t[1].clone(),
            out_w: t[2].clone(),
            out_b: t[3].clone(),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum TrainError {
    #[error("batch_size {batch} is larger than the train split ({train} examples)")]
    BatchTooLarge { batch: usize, train: usize },
    #[error("the train split is empty")]
    EmptyTrain,
    #[error("learning rate {0} must be > 0")]
    BadLearningRate(f64),
    #[error("features have {got} values per example, the head expects {expected}")]
    Shape { got: usize, expected: usize },
    #[error("label {label} is out of range for {classes} classes")]
    Label { label: u32, classes: usize },
}

/// One optimiser step, recorded when a trainer is asked to (for the PyTorch replay tests).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepRecord {
    pub loss: f64,
    pub grad_norm: Option<f64>,
    pub lr: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EpochStats {
    /// Mean training loss over the epoch's examples (NaN or infinite if it diverged).
    pub train_loss: f64,
    /// Learning rate at the epoch's first step.
    pub lr: f64,
    pub diverged: bool,
}

/// `dst[m×n] (+)= A · B`, where A(i,l) = a[i·a_rs + l·a_cs] and B(l,j) = b[l·b_rs + j·b_cs].
#[allow(clippy::too_many_arguments)]
fn mm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
    accumulate: bool,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    assert!(dst.len() >= m * n);
    assert!(a.len() > (m - 1) * a_rs + (k - 1) * a_cs);
    assert!(b.len() > (k - 1) * b_rs + (n - 1) * b_cs);
    // SAFETY: the asserts bound every index gemm reads or writes (dst is m×n row-major).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            // Head matrices are small: splitting them across threads costs more than it saves
            // (measured: 1.7× slower on 2 cores for 32×384×384).
            gemm::Parallelism::None,
        );
    }
}

#[derive(Default)]
struct Buffers {
    x: Vec<f32>,
    z: Vec<f32>,
    a: Vec<f32>,
    logits: Vec<f32>,
    d_logits: Vec<f32>,
    d_a: Vec<f32>,
    mask_in: Vec<f32>,
    mask_hidden: Vec<f32>,
}

/// Per-class loss weights: none, or scikit-learn's `balanced` (n / (classes · count)) over
/// the examples `train`.
pub fn class_weights(
    kind: ClassWeight,
    labels: &[u32],
    train: &[usize],
    classes: usize,
) -> Option<Vec<f32>> {
    if kind == ClassWeight::None {
        return None;
    }
    let mut counts = vec![0usize; classes];
    for &i in train {
        counts[labels[i] as usize] += 1;
    }
    let n = train.len() as f64;
    Some(
        counts
            .iter()
            .map(|&c| {
                if c == 0 {
                    0.0
                } else {
                    (n / (classes as f64 * c as f64)) as f32
                }
            })
            .collect(),
    )
}

/// Trains a head on `features` (`n × input`, row-major) for the examples in `train`.
pub struct HeadTrainer<'a> {
    features: &'a [f32],
    labels: &'a [u32],
    train: Vec<usize>,
    shape: HeadShape,
    config: TrainConfig,
    params: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
    optimizer: Optimizer,
    scheduler: LrScheduler,
    class_weights: Option<Vec<f32>>,
    rng: Xoshiro256PlusPlus,
    buf: Buffers,
    epoch: usize,
    /// Per-step records, kept only when asked for.
    pub steps: Option<Vec<StepRecord>>,
}

impl<'a> HeadTrainer<'a> {
    pub fn new(
        features: &'a [f32],
        labels: &'a [u32],
        train: Vec<usize>,
        shape: HeadShape,
        init: HeadWeights,
        config: TrainConfig,
        seed: u64,
    ) -> Result<Self, TrainError> {
        if train.is_empty() {
            return Err(TrainError::EmptyTrain);
        }
        if config.batch_size > train.len() {
            return Err(TrainError::BatchTooLarge {
                batch: config.batch_size,
                train: train.len(),
            });
        }
        if config.lr.is_nan() || config.lr <= 0.0 {
            return Err(TrainError::BadLearningRate(config.lr));
        }
        if features.len() != labels.len() * shape.input {
            return Err(TrainError::Shape {
                got: features.len() / labels.len().max(1),
                expected: shape.input,
            });
        }
        if let Some(&label) = labels.iter().find(|&&l| l as usize >= shape.classes) {
            return Err(TrainError::Label {
                label,
                classes: shape.classes,
            });
        }
        let class_weights = class_weights(config.class_weight, labels, &train, shape.classes);
        let params = init.into_tensors();
        let grads = params.iter().map(|p| vec![0.0; p.len()]).collect();
        let decay = vec![true, config.decay_biases, true, config.decay_biases];
        let steps_per_epoch = train.len().div_ceil(config.batch_size);
        let scheduler = LrScheduler::new(
            config.schedule.clone(),
            config.lr,
            config.epochs,
            steps_per_epoch,
        );
        Ok(HeadTrainer {
            features,
            labels,
            train,
            shape,
            optimizer: Optimizer::new(config.optimizer, config.weight_decay, decay),
            scheduler,
            config,
            params,
            grads,
            class_weights,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            buf: Buffers::default(),
            epoch: 0,
            steps: None,
        })
    }

    /// Explicit class weights (for replaying a PyTorch run with `CrossEntropyLoss(weight=)`).
    pub fn set_class_weights(&mut self, w: Option<Vec<f32>>) {
        self.class_weights = w;
    }

    pub fn epochs_done(&self) -> usize {
        self.epoch
    }

    pub fn weights(&self) -> HeadWeights {
        HeadWeights::from_tensors(&self.params)
    }

    /// One epoch in a fresh seeded shuffle of the train split.
    pub fn train_epoch(&mut self) -> EpochStats {
        let mut order = self.train.clone();
        order.shuffle(&mut self.rng);
        self.train_epoch_in_order(&order)
    }

    /// One epoch visiting examples in `order` (indices into the features).
    pub fn train_epoch_in_order(&mut self, order: &[usize]) -> EpochStats {
        let lr_first = self.scheduler.lr();
        let mut total = 0.0f64;
        let mut seen = 0usize;
        let mut diverged = false;
        for batch in order.chunks(self.config.batch_size) {
            let lr = self.scheduler.lr();
            let loss = self.step(batch, lr);
            // A non-finite update shows in the next loss; the weights are checked once per epoch.
            if !loss.is_finite() {
                diverged = true;
                total = f64::NAN;
                break;
            }
            total += loss * batch.len() as f64;
            seen += batch.len();
            if self.scheduler.per_step() {
                self.scheduler.step(None);
            }
        }
        self.epoch += 1;
        diverged |= self.params.iter().any(|p| p.iter().any(|v| !v.is_finite()));
        EpochStats {
            train_loss: if diverged {
                f64::NAN
            } else {
                total / seen.max(1) as f64
            },
            lr: lr_first,
            diverged,
        }
    }

    /// Ends an epoch: epoch-based schedules advance (ReduceLROnPlateau on `metric`).
    pub fn end_epoch(&mut self, metric: Option<f64>) {
        if !self.scheduler.per_step() {
            self.scheduler.step(metric);
        }
    }

    /// Sets ReduceLROnPlateau's direction to the selection metric's.
    pub fn plateau_maximize(&mut self, maximize: bool) {
        self.scheduler.plateau_maximize(maximize);
    }

    fn step(&mut self, batch: &[usize], lr: f64) -> f64 {
        let (d, h, c) = (self.shape.input, self.shape.hidden, self.shape.classes);
        let b = batch.len();
        let p = self.config.dropout as f32;
        let keep_scale = if p > 0.0 { 1.0 / (1.0 - p) } else { 1.0 };
        let buf = &mut self.buf;
        buf.x.clear();
        for &i in batch {
            buf.x.extend_from_slice(&self.features[i * d..(i + 1) * d]);
        }
        let train_dropout = p > 0.0;
        if train_dropout && self.shape.input_dropout {
            buf.mask_in.clear();
            for _ in 0..b * d {
                buf.mask_in.push(if self.rng.gen::<f32>() < p {
                    0.0
                } else {
                    keep_scale
                });
            }
            for (x, m) in buf.x.iter_mut().zip(&buf.mask_in) {
                *x *= m;
            }
        }
        let (dw, db, ow, ob) = (
            &self.params[0],
            &self.params[1],
            &self.params[2],
            &self.params[3],
        );
        buf.z.resize(b * h, 0.0);
        mm(b, h, d, &mut buf.z, &buf.x, (d, 1), dw, (1, d), false);
        buf.a.resize(b * h, 0.0);
        bias_activation(
            &mut buf.z,
            &mut buf.a,
            db,
            self.shape.activation == HeadActivation::Relu,
        );
        if train_dropout {
            buf.mask_hidden.clear();
            for _ in 0..b * h {
                buf.mask_hidden.push(if self.rng.gen::<f32>() < p {
                    0.0
                } else {
                    keep_scale
                });
            }
        }
        // The dropped-out activations feed the output layer; `a` keeps the undropped ones
        // for the activation's derivative.
        let mut a_drop = std::mem::take(&mut buf.d_a);
        a_drop.clear();
        a_drop.extend_from_slice(&buf.a);
        if train_dropout {
            for (v, m) in a_drop.iter_mut().zip(&buf.mask_hidden) {
                *v *= m;
            }
        }
        buf.logits.resize(b * c, 0.0);
        mm(b, c, h, &mut buf.logits, &a_drop, (h, 1), ow, (1, h), false);
        // Weighted cross-entropy (mean over the batch's weights, as torch) and its gradient.
        buf.d_logits.resize(b * c, 0.0);
        let mut loss = 0.0f64;
        let mut wsum = 0.0f64;
        for (r, &i) in batch.iter().enumerate() {
            let y = self.labels[i] as usize;
            let w = self.class_weights.as_ref().map_or(1.0, |cw| cw[y]) as f64;
            let row = &mut buf.logits[r * c..(r + 1) * c];
            for (v, bias) in row.iter_mut().zip(ob) {
                *v += bias;
            }
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
            let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
            let log_z = max + sum.ln();
            loss += w * (log_z - row[y] as f64);
            wsum += w;
            for (j, &v) in row.iter().enumerate() {
                let prob = (v as f64 - log_z).exp();
                buf.d_logits[r * c + j] = (w * (prob - if j == y { 1.0 } else { 0.0 })) as f32;
            }
        }
        if wsum <= 0.0 {
            buf.d_a = a_drop;
            return 0.0;
        }
        let inv = (1.0 / wsum) as f32;
        for g in buf.d_logits.iter_mut() {
            *g *= inv;
        }
        loss /= wsum;
        let [g_dw, g_db, g_ow, g_ob] = &mut self.grads[..] else {
            unreachable!("a head has four tensors")
        };
        // d out_w = d_logitsᵀ · a_drop ; d out_b = column sums of d_logits.
        mm(c, h, b, g_ow, &buf.d_logits, (1, c), &a_drop, (h, 1), false);
        g_ob.iter_mut().for_each(|g| *g = 0.0);
        for row in buf.d_logits.chunks_exact(c) {
            for (g, v) in g_ob.iter_mut().zip(row) {
                *g += v;
            }
        }
        // d a = d_logits · out_w, then through dropout and the activation.
        let d_a = &mut a_drop;
        mm(b, h, c, d_a, &buf.d_logits, (c, 1), ow, (h, 1), false);
        for (k, g) in d_a.iter_mut().enumerate() {
            if train_dropout {
                *g *= buf.mask_hidden[k];
            }
            *g *= match self.shape.activation {
                HeadActivation::Tanh => 1.0 - buf.a[k] * buf.a[k],
                HeadActivation::Relu => {
                    if buf.z[k] > 0.0 {
                        1.0
                    } else {
                        0.0
                    }
                }
            };
        }
        mm(h, d, b, g_dw, d_a, (1, h), &buf.x, (d, 1), false);
        g_db.iter_mut().for_each(|g| *g = 0.0);
        for row in d_a.chunks_exact(h) {
            for (g, v) in g_db.iter_mut().zip(row) {
                *g += v;
            }
        }
        buf.d_a = a_drop;
        let grad_norm = self
            .config
            .grad_clip
            .map(|m| clip_grad_norm(&mut self.grads, m));
        if let Some(steps) = &mut self.steps {
            steps.push(StepRecord {
                loss,
                grad_norm,
                lr,
            });
        }
        self.optimizer.step(&mut self.params, &self.grads, lr);
        loss
    }

    /// Class probabilities (softmax in f64) for examples `idx`, dropout off.
    pub fn predict_proba(&self, idx: &[usize]) -> Vec<Vec<f64>> {
        predict_proba(&self.weights(), &self.shape, self.features, idx)
    }
}

/// Class probabilities of a head for examples `idx` of `features`, dropout off.
pub fn predict_proba(
    w: &HeadWeights,
    shape: &HeadShape,
    features: &[f32],
    idx: &[usize],
) -> Vec<Vec<f64>> {
    let (d, h, c) = (shape.input, shape.hidden, shape.classes);
    let mut out = Vec::with_capacity(idx.len());
    let mut x = Vec::new();
    let mut z = Vec::new();
    let mut a = Vec::new();
    let mut logits = Vec::new();
    for chunk in idx.chunks(256) {
        let b = chunk.len();
        x.clear();
        for &i in chunk {
            x.extend_from_slice(&features[i * d..(i + 1) * d]);
        }
        z.resize(b * h, 0.0);
        mm(b, h, d, &mut z, &x, (d, 1), &w.dense_w, (1, d), false);
        a.resize(b * h, 0.0);
        bias_activation(
            &mut z,
            &mut a,
            &w.dense_b,
            shape.activation == HeadActivation::Relu,
        );
        logits.resize(b * c, 0.0);
        mm(b, c, h, &mut logits, &a, (h, 1), &w.out_w, (1, h), false);
        for r in 0..b {
            let row: Vec<f64> = (0..c)
                .map(|j| (logits[r * c + j] + w.out_b[j]) as f64)
                .collect();
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
            let e: Vec<f64> = row.iter().map(|v| (v - max).exp()).collect();
            let s: f64 = e.iter().sum();
            out.push(e.into_iter().map(|v| v / s).collect());
        }
    }
    out
}

/// What a trial's loop needs from a trainer, whatever it trains.
pub trait EpochTrainer {
    /// One epoch in a fresh seeded shuffle of the train split.
    fn train_epoch(&mut self) -> EpochStats;
    /// Ends an epoch (epoch-based schedules advance; plateau schedules read `metric`).
    fn end_epoch(&mut self, metric: Option<f64>);
    /// Class probabilities for examples `idx`, dropout off.
    fn predict_proba(&self, idx: &[usize]) -> Vec<Vec<f64>>;
    /// The head's current weights.
    fn head_weights(&self) -> HeadWeights;
    /// Trained encoder tensors under their checkpoint names (none when only the head trains).
    fn encoder_tensors(&self) -> Vec<(String, Vec<f32>)> {
        Vec::new()
    }
}

impl EpochTrainer for HeadTrainer<'_> {
    fn train_epoch(&mut self) -> EpochStats {
        HeadTrainer::train_epoch(self)
    }
    fn end_epoch(&mut self, metric: Option<f64>) {
        HeadTrainer::end_epoch(self, metric)
    }
    fn predict_proba(&self, idx: &[usize]) -> Vec<Vec<f64>> {
        HeadTrainer::predict_proba(self, idx)
    }
    fn head_weights(&self) -> HeadWeights {
        self.weights()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::OptimizerKind;
    use crate::schedule::Schedule;

    fn data(n: usize, d: usize, classes: usize) -> (Vec<f32>, Vec<u32>) {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let y: Vec<u32> = (0..n).map(|i| (i % classes) as u32).collect();
        let x = (0..n * d)
            .map(|k| {
                rng.gen_range(-1.0f32..1.0) + if k % d == y[k / d] as usize { 2.0 } else { 0.0 }
            })
            .collect();
        (x, y)
    }

    fn sgd_config(lr: f64) -> TrainConfig {
        TrainConfig {
            lr,
            batch_size: 5,
            epochs: 1,
            optimizer: OptimizerKind::Sgd {
                momentum: 0.0,
                dampening: 0.0,
                nesterov: false,
            },
            weight_decay: 0.0,
            schedule: Schedule::Constant,
            dropout: 0.0,
            grad_clip: None,
            class_weight: ClassWeight::None,
            decay_biases: true,
        }
    }

    /// Loss of the whole batch under given weights, in f64 (no dropout).
    fn loss(w: &HeadWeights, shape: &HeadShape, x: &[f32], y: &[u32], cw: Option<&[f32]>) -> f64 {
        let idx: Vec<usize> = (0..y.len()).collect();
        let p = predict_proba(w, shape, x, &idx);
        let (mut l, mut ws) = (0.0, 0.0);
        for (r, &t) in y.iter().enumerate() {
            let wt = cw.map_or(1.0, |c| c[t as usize] as f64);
            l -= wt * p[r][t as usize].ln();
            ws += wt;
        }
        l / ws
    }

    #[test]
    fn gradients_match_finite_differences() {
        for activation in [HeadActivation::Tanh, HeadActivation::Relu] {
            let (d, c) = (6, 3);
            let (x, y) = data(5, d, c);
            let shape = HeadShape {
                input: d,
                hidden: d,
                classes: c,
                activation,
                input_dropout: false,
            };
            let mut init = HeadWeights::init(&shape, None, 0.5, 3);
            init.dense_b = (0..d).map(|i| 0.1 * i as f32 - 0.2).collect();
            let cw = [1.0f32, 2.0, 0.5];
            // One SGD step with lr = 1 moves every weight by minus its gradient.
            let mut t = HeadTrainer::new(
                &x,
                &y,
                (0..5).collect(),
                shape,
                init.clone(),
                sgd_config(1.0),
                0,
            )
            .unwrap();
            t.set_class_weights(Some(cw.to_vec()));
            t.train_epoch_in_order(&[0, 1, 2, 3, 4]);
            let after = t.weights();
            let eps = 1e-3f32;
            let tensors = |w: &HeadWeights| {
                vec![
                    w.dense_w.clone(),
                    w.dense_b.clone(),
                    w.out_w.clone(),
                    w.out_b.clone(),
                ]
            };
            let (before_t, after_t) = (tensors(&init), tensors(&after));
            for ti in 0..4 {
                for k in (0..before_t[ti].len()).step_by(5) {
                    let mut plus = before_t.clone();
                    plus[ti][k] += eps;
                    let mut minus = before_t.clone();
                    minus[ti][k] -= eps;
                    let from = |t: &Vec<Vec<f32>>| HeadWeights::from_tensors(t);
                    let numeric = (loss(&from(&plus), &shape, &x, &y, Some(&cw))
                        - loss(&from(&minus), &shape, &x, &y, Some(&cw)))
                        / (2.0 * eps as f64);
                    let analytic = (before_t[ti][k] - after_t[ti][k]) as f64;
                    assert!(
                        (numeric - analytic).abs() < 2e-3 * (1.0 + numeric.abs()),
                        "{activation:?} tensor {ti}[{k}]: numeric {numeric} analytic {analytic}"
                    );
                }
            }
        }
    }

    #[test]
    fn training_learns_a_separable_problem_and_is_deterministic() {
        let (d, c) = (8, 4);
        let (x, y) = data(200, d, c);
        let shape = HeadShape {
            input: d,
            hidden: d,
            classes: c,
            activation: HeadActivation::Tanh,
            input_dropout: true,
        };
        let cfg = TrainConfig {
            lr: 0.01,
            batch_size: 16,
            epochs: 10,
            dropout: 0.1,
            ..TrainConfig::default()
        };
        let run = || {
            let init = HeadWeights::init(&shape, None, 0.02, 5);
            let mut t =
                HeadTrainer::new(&x, &y, (0..200).collect(), shape, init, cfg.clone(), 5).unwrap();
            let mut losses = Vec::new();
            for _ in 0..cfg.epochs {
                losses.push(t.train_epoch().train_loss);
                t.end_epoch(None);
            }
            (losses, t.weights())
        };
        let (losses, w) = run();
        assert!(losses[9] < 0.5 * losses[0], "{losses:?}");
        let p = predict_proba(&w, &shape, &x, &(0..200).collect::<Vec<_>>());
        let acc = p
            .iter()
            .zip(&y)
            .filter(|(row, &t)| {
                row.iter()
                    .enumerate()
                    .fold(0, |b, (i, v)| if *v > row[b] { i } else { b })
                    == t as usize
            })
            .count();
        assert!(acc > 180, "accuracy {acc}/200");
        assert_eq!(run(), (losses, w), "same seed, same run");
    }

    #[test]
    fn bad_settings_are_refused_and_divergence_is_reported() {
        let (x, y) = data(10, 4, 2);
        let shape = HeadShape {
            input: 4,
            hidden: 4,
            classes: 2,
            activation: HeadActivation::Tanh,
            input_dropout: false,
        };
        let init = HeadWeights::init(&shape, None, 0.02, 0);
        let mut big = sgd_config(0.1);
        big.batch_size = 11;
        assert_eq!(
            HeadTrainer::new(&x, &y, (0..10).collect(), shape, init.clone(), big, 0).err(),
            Some(TrainError::BatchTooLarge {
                batch: 11,
                train: 10
            })
        );
        assert!(matches!(
            HeadTrainer::new(
                &x,
                &y,
                (0..10).collect(),
                shape,
                init.clone(),
                sgd_config(0.0),
                0
            ),
            Err(TrainError::BadLearningRate(_))
        ));
        let mut t =
            HeadTrainer::new(&x, &y, (0..10).collect(), shape, init, sgd_config(1e300), 0).unwrap();
        let mut diverged = false;
        for _ in 0..5 {
            diverged |= t.train_epoch().diverged;
        }
        assert!(diverged);
    }
}
