//! Run-time dispatch of plain loops to AVX-512 / AVX2 builds, and the vectorisable
//! element-wise kernels of head training.

/// Compiles a function's body three times (baseline, AVX2+FMA, AVX-512) and picks the best
/// the CPU supports at run time, so plain loops vectorise without `-C target-cpu`.
#[macro_export]
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn inner($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) { inner($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) { inner($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports the features v4 was compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above, for v3.
                    return unsafe { v3($($arg),*) };
                }
            }
            inner($($arg),*)
        }
    };
}

/// tanh as a [13/6] rational function on [-7.9, 7.9] (Eigen's `ptanh_float`), straight-line
/// arithmetic so loops over it vectorise; within a few ulp of `f32::tanh`.
#[inline(always)]
#[allow(clippy::excessive_precision)] // Eigen's coefficients, as published
pub fn fast_tanh(x: f32) -> f32 {
    let x = x.clamp(-7.905_311, 7.905_311);
    let x2 = x * x;
    let mut p = x2 * -2.760_768_5e-16 + 2.000_188e-13;
    p = x2 * p + -8.604_672e-11;
    p = x2 * p + 5.122_297e-8;
    p = x2 * p + 1.485_722_4e-5;
    p = x2 * p + 6.372_619_3e-4;
    p = x2 * p + 4.893_524_6e-3;
    p *= x;
    let mut q = x2 * 1.198_258_4e-6 + 1.185_347_1e-4;
    q = x2 * q + 2.268_434_6e-3;
    q = x2 * q + 4.893_525_2e-3;
    p / q
}

crate::multiversion! {
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

crate::multiversion! {
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

#[cfg(test)]
mod tests {
    #[test]
    fn fast_tanh_is_within_a_few_ulp_of_tanh() {
        let mut worst = 0.0f32;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4;
            let (a, b) = (super::fast_tanh(x), x.tanh());
            worst = worst.max((a - b).abs());
        }
        assert!(worst < 1e-6, "{worst}");
        assert_eq!(super::fast_tanh(100.0), super::fast_tanh(7.905_311));
        assert!((super::fast_tanh(100.0) - 1.0).abs() < 1e-6);
    }
}
