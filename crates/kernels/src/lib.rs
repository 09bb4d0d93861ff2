//! The numeric kernels inference and training share, with no model or training code:
//! run-time dispatch of plain loops to AVX-512 / AVX2+FMA / scalar builds, the dense
//! matrix kernels (on gemm), and fast activations.
//!
//! `LMCOMPARE_SIMD=scalar|avx2|avx512` caps the dispatch (read once per process), so tests
//! and benchmarks can force each path on any machine; without it the best the CPU
//! supports runs.

pub mod dense;
pub mod quant;

use std::sync::OnceLock;

/// The widest instruction set the dispatch may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    Scalar,
    Avx2,
    Avx512,
}

/// The cap set by `LMCOMPARE_SIMD` (unset or unknown: no cap).
pub fn simd_level() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| match std::env::var("LMCOMPARE_SIMD").as_deref() {
        Ok("scalar") => SimdLevel::Scalar,
        Ok("avx2") => SimdLevel::Avx2,
        _ => SimdLevel::Avx512,
    })
}

/// The path the dispatch takes on this machine under the cap, for reports and tests.
pub fn simd_path() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        let level = simd_level();
        if level >= SimdLevel::Avx512 && std::arch::is_x86_feature_detected!("avx512f") {
            return "avx512";
        }
        if level >= SimdLevel::Avx2
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            return "avx2";
        }
    }
    "scalar"
}

/// Compiles a function's body three times (baseline, AVX2+FMA, AVX-512) and picks the best
/// the CPU supports at run time, so plain loops vectorise without `-C target-cpu`.
#[macro_export]
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        $crate::multiversion! {
            $(#[$meta])* $vis fn $name($($arg: $ty),*) -> () $body
        }
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn inner($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) -> $ret { inner($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) -> $ret { inner($($arg),*) }
                let level = $crate::simd_level();
                if level >= $crate::SimdLevel::Avx512 && std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports the features v4 was compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if level >= $crate::SimdLevel::Avx2
                    && std::arch::is_x86_feature_detected!("avx2")
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

    #[test]
    fn the_path_names_what_the_cap_allows() {
        let path = super::simd_path();
        match std::env::var("LMCOMPARE_SIMD").as_deref() {
            Ok("scalar") => assert_eq!(path, "scalar"),
            Ok("avx2") => assert!(path == "avx2" || path == "scalar"),
            _ => assert!(["avx512", "avx2", "scalar"].contains(&path)),
        }
    }
}
