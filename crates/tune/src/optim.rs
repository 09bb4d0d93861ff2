//! SGD, Adam and AdamW with the semantics of `torch.optim` (the single-tensor path):
//! the same update order, the same scalar arithmetic done in f64 and applied in f32, so
//! trajectories match PyTorch's to rounding (the committed fixtures check 1e-6).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerKind {
    Sgd {
        momentum: f64,
        dampening: f64,
        nesterov: bool,
    },
    /// `torch.optim.Adam`: weight decay is an L2 term added to the gradient.
    Adam {
        beta1: f64,
        beta2: f64,
        eps: f64,
        amsgrad: bool,
    },
    /// `torch.optim.AdamW`: weight decay shrinks the parameters directly (decoupled).
    AdamW {
        beta1: f64,
        beta2: f64,
        eps: f64,
        amsgrad: bool,
    },
}

impl OptimizerKind {
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerKind::Sgd { .. } => "sgd",
            OptimizerKind::Adam { .. } => "adam",
            OptimizerKind::AdamW { .. } => "adamw",
        }
    }
}

#[derive(Debug, Clone, Default)]
struct TensorState {
    /// SGD momentum buffer, or Adam's first moment.
    m: Vec<f32>,
    /// Adam's second moment.
    v: Vec<f32>,
    /// AMSGrad's running maximum of the second moment.
    v_max: Vec<f32>,
    steps: u64,
}

/// An optimiser over a list of tensors (each a flat `Vec<f32>`), with per-tensor weight
/// decay switches (so biases and norms can be excluded, as Hugging Face's Trainer does).
#[derive(Debug, Clone)]
pub struct Optimizer {
    pub kind: OptimizerKind,
    pub weight_decay: f64,
    decay: Vec<bool>,
    state: Vec<TensorState>,
}

impl Optimizer {
    /// `decay[i]`: whether weight decay applies to tensor `i`.
    pub fn new(kind: OptimizerKind, weight_decay: f64, decay: Vec<bool>) -> Self {
        let state = vec![TensorState::default(); decay.len()];
        Optimizer {
            kind,
            weight_decay,
            decay,
            state,
        }
    }

    /// One update of every tensor with its gradient at learning rate `lr`.
    pub fn step(&mut self, params: &mut [Vec<f32>], grads: &[Vec<f32>], lr: f64) {
        assert_eq!(params.len(), self.state.len());
        assert_eq!(grads.len(), self.state.len());
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            let wd = if self.decay[i] {
                self.weight_decay
            } else {
                0.0
            };
            let st = &mut self.state[i];
            st.steps += 1;
            match self.kind {
                OptimizerKind::Sgd {
                    momentum,
                    dampening,
                    nesterov,
                } => sgd(p, g, st, lr, wd, momentum, dampening, nesterov),
                OptimizerKind::Adam {
                    beta1,
                    beta2,
                    eps,
                    amsgrad,
                } => adam(p, g, st, lr, wd, beta1, beta2, eps, amsgrad, false),
                OptimizerKind::AdamW {
                    beta1,
                    beta2,
                    eps,
                    amsgrad,
                } => adam(p, g, st, lr, wd, beta1, beta2, eps, amsgrad, true),
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn sgd(
    p: &mut [f32],
    g: &[f32],
    st: &mut TensorState,
    lr: f64,
    wd: f64,
    momentum: f64,
    dampening: f64,
    nesterov: bool,
) {
    let wd = wd as f32;
    let lr = lr as f32;
    let mom = momentum as f32;
    let damp = 1.0 - dampening as f32;
    if momentum == 0.0 {
        for (p, &g) in p.iter_mut().zip(g) {
            let d = if wd != 0.0 { g + wd * *p } else { g };
            *p -= lr * d;
        }
        return;
    }
    let first = st.m.is_empty();
    if first {
        st.m = vec![0.0; p.len()];
    }
    for ((p, &g), buf) in p.iter_mut().zip(g).zip(st.m.iter_mut()) {
        let d = if wd != 0.0 { g + wd * *p } else { g };
        // torch: the first step's buffer is the gradient itself (no dampening).
        *buf = if first { d } else { *buf * mom + damp * d };
        let step = if nesterov { d + mom * *buf } else { *buf };
        *p -= lr * step;
    }
}

#[allow(clippy::too_many_arguments)]
fn adam(
    p: &mut [f32],
    g: &[f32],
    st: &mut TensorState,
    lr: f64,
    wd: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    amsgrad: bool,
    decoupled: bool,
) {
    if st.m.is_empty() {
        st.m = vec![0.0; p.len()];
        st.v = vec![0.0; p.len()];
        if amsgrad {
            st.v_max = vec![0.0; p.len()];
        }
    }
    let t = st.steps as i32;
    let bias1 = 1.0 - beta1.powi(t);
    let bias2 = 1.0 - beta2.powi(t);
    // Scalars are computed in f64 as Python floats and applied to f32 tensors, as torch does.
    let step_size = (lr / bias1) as f32;
    let bias2_sqrt = bias2.sqrt() as f32;
    let k = crate::simd::AdamStep {
        decay: if decoupled {
            (1.0 - lr * wd) as f32
        } else {
            1.0
        },
        l2: if decoupled { 0.0 } else { wd as f32 },
        one_minus_b1: (1.0 - beta1) as f32,
        b2: beta2 as f32,
        one_minus_b2: (1.0 - beta2) as f32,
        step_size,
        bias2_sqrt,
        eps: eps as f32,
    };
    if !amsgrad {
        crate::simd::adam_update(p, g, &mut st.m, &mut st.v, k);
        return;
    }
    for i in 0..p.len() {
        p[i] *= k.decay;
        let grad = g[i] + k.l2 * p[i];
        // torch: exp_avg.lerp_(grad, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
        st.m[i] += k.one_minus_b1 * (grad - st.m[i]);
        st.v[i] = st.v[i] * k.b2 + k.one_minus_b2 * grad * grad;
        // AMSGrad keeps the running maximum of the raw (uncorrected) second moment.
        st.v_max[i] = st.v_max[i].max(st.v[i]);
        let denom = st.v_max[i].sqrt() / bias2_sqrt + k.eps;
        p[i] -= step_size * (st.m[i] / denom);
    }
}

/// Rescales all gradients so their joint L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_`; returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Vec<f32>], max_norm: f64) -> f64 {
    let norm = grads
        .iter()
        .flat_map(|g| g.iter())
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt();
    let coef = (max_norm / (norm + 1e-6)).min(1.0) as f32;
    if coef < 1.0 {
        for g in grads.iter_mut() {
            for x in g.iter_mut() {
                *x *= coef;
            }
        }
    }
    norm
}
