//! The vectorisable element-wise kernels of head training, dispatched at run time by
//! `lmcompare-kernels` (which inference shares).

pub use lmcompare_kernels::fast_tanh;
use lmcompare_kernels::multiversion;

multiversion! {
    /// Per row: z ← z + bias; a ← tanh(z) (or max(0, z) when `relu`).
    pub fn bias_activation(z: &mut [f32], a: &mut [f32], bias: &[f32], relu: bool) {
        let h = bias.len();
        for (zr, ar) in z.chunks_exact_mut(h).zip(a.chunks_exact_mut(h)) {
            for ((z, a), b) in zr.iter_mut().zip(ar.iter_mut()).zip(bias) {
                *z += b;
                *a = if relu { z.max(0.0) } else { fast_tanh(*z) };
            }
        }
    }
}

/// Scalars of one Adam step, computed in f64 and rounded as torch does.
#[derive(Clone, Copy)]
pub struct AdamStep {
    /// Parameter shrink of AdamW's decoupled decay (1 otherwise).
    pub decay: f32,
    /// Adam's L2 coefficient added to the gradient (0 for AdamW).
    pub l2: f32,
    pub one_minus_b1: f32,
    pub b2: f32,
    pub one_minus_b2: f32,
    pub step_size: f32,
    pub bias2_sqrt: f32,
    pub eps: f32,
}

multiversion! {
    /// One Adam/AdamW update without AMSGrad, branch-free so it vectorises.
    pub fn adam_update(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: AdamStep) {
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            *p *= k.decay;
            let grad = g + k.l2 * *p;
            *m += k.one_minus_b1 * (grad - *m);
            *v = *v * k.b2 + k.one_minus_b2 * grad * grad;
            *p -= k.step_size * (*m / (v.sqrt() / k.bias2_sqrt + k.eps));
        }
    }
}
