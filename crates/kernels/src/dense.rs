//! Numeric kernels of the encoder: matrix products on `gemm`, and fused element-wise passes
//! (bias + GELU, residual + layer norm, scaled softmax) written as plain loops that LLVM
//! vectorises; on AVX2/AVX-512 machines the same loops are compiled again for those
//! instruction sets and picked at run time.

use gemm::Parallelism;

/// A row-major matrix view: `rows × cols`, consecutive rows `row_stride` apart.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
}

/// `dst[m×n] (+)= a[m×k] · b[k×n]`, all row-major with the given row strides.
pub fn matmul(
    dst: &mut [f32],
    dst_stride: usize,
    a: View<'_>,
    b: View<'_>,
    accumulate: bool,
    parallel: bool,
) {
    assert_eq!(b.rows, a.cols, "inner dimensions differ");
    let b_strides = (b.row_stride, 1);
    gemm_checked(
        dst, dst_stride, a, b.data, b.cols, b_strides, accumulate, parallel,
    );
}

/// `dst[m×n] = a[m×k] · bᵀ` where `b` is `n×k` row-major (so `bᵀ` is read with swapped
/// strides, as attention's `Q·Kᵀ` needs).
pub fn matmul_transposed_b(dst: &mut [f32], dst_stride: usize, a: View<'_>, b: View<'_>) {
    assert_eq!(b.cols, a.cols, "inner dimensions differ");
    let b_strides = (1, b.row_stride);
    gemm_checked(dst, dst_stride, a, b.data, b.rows, b_strides, false, false);
}

/// [`matmul_transposed_b`] split across threads (for one large product, such as an LM head
/// over the vocabulary).
pub fn matmul_transposed_b_parallel(dst: &mut [f32], dst_stride: usize, a: View<'_>, b: View<'_>) {
    assert_eq!(b.cols, a.cols, "inner dimensions differ");
    let b_strides = (1, b.row_stride);
    gemm_checked(dst, dst_stride, a, b.data, b.rows, b_strides, false, true);
}

/// The one call into `gemm`: `dst[m×n] (+)= a[m×k] · B` where B(l, j) is
/// `b[l * b_strides.0 + j * b_strides.1]`, bounds checked before the unsafe call.
#[allow(clippy::too_many_arguments)]
fn gemm_checked(
    dst: &mut [f32],
    dst_stride: usize,
    a: View<'_>,
    b: &[f32],
    n: usize,
    b_strides: (usize, usize),
    accumulate: bool,
    parallel: bool,
) {
    let (m, k) = (a.rows, a.cols);
    if m == 0 || n == 0 {
        return;
    }
    assert!(k > 0, "empty inner dimension");
    assert!(a.data.len() > (m - 1) * a.row_stride + (k - 1));
    assert!(b.len() > (k - 1) * b_strides.0 + (n - 1) * b_strides.1);
    assert!(dst.len() > (m - 1) * dst_stride + (n - 1));
    let par = if parallel {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    };
    // SAFETY: the asserts above bound every index gemm touches: row i < m, column j < n of
    // dst; row i < m, column l < k of a; B(l, j) for l < k, j < n.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_stride as isize,
            accumulate,
            a.data.as_ptr(),
            1,
            a.row_stride as isize,
            b.as_ptr(),
            b_strides.1 as isize,
            b_strides.0 as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

// Run-time dispatch to AVX-512/AVX2 builds of plain loops (shared with head training).
use crate::multiversion;

/// e^x for f32 in straight-line arithmetic (so loops over it vectorise): range reduction to
/// x = n·ln2 + r, a degree-6 polynomial for e^r, and 2^n by exponent bits. Relative error
/// below 2e-7 on [-87, 88].
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest by adding and removing 1.5·2^23: `f32::round` lowers to a libm call
    // that keeps the loop scalar; this stays in vector registers.
    const SHIFT: f32 = 12_582_912.0;
    let n = (x * std::f32::consts::LOG2_E + SHIFT) - SHIFT;
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_668 + r * (0.008_333_34 + r * 0.001_388_89)))));
    // 2^n from the bits of n + 127 + 2^23 (an exact integer in the mantissa), shifted into
    // the exponent: no float-to-int conversion, which would keep the loop scalar.
    let bits = (n + 8_388_735.0).to_bits() << 23;
    p * f32::from_bits(bits)
}

const LANES: usize = 16;

/// Sum with 16 independent accumulators: a float reduction LLVM may vectorise, since the
/// order of additions is spelled out.
#[inline(always)]
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            acc[j] += f(c[j]);
        }
    }
    acc.iter().sum::<f32>() + rest.iter().map(|&v| f(v)).sum::<f32>()
}

#[inline(always)]
fn lane_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            acc[j] = acc[j].max(c[j]);
        }
    }
    acc.iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// erf(x) by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).
#[inline(always)]
fn erf_f32(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp_f32(-a * a);
    y.copysign(x)
}

multiversion! {
    /// x ← GELU(x + bias) per row, exact (erf) GELU as BERT uses.
    pub fn bias_gelu(x: &mut [f32], bias: &[f32]) {
        let n = bias.len();
        for row in x.chunks_exact_mut(n) {
            for (v, b) in row.iter_mut().zip(bias) {
                let z = *v + b;
                *v = 0.5 * z * (1.0 + erf_f32(z * std::f32::consts::FRAC_1_SQRT_2));
            }
        }
    }
}

multiversion! {
    /// x ← x + bias per row.
    pub fn add_bias(x: &mut [f32], bias: &[f32]) {
        let n = bias.len();
        for row in x.chunks_exact_mut(n) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
    }
}

multiversion! {
    /// x ← max(0, x + bias) per row.
    pub fn bias_relu(x: &mut [f32], bias: &[f32]) {
        let n = bias.len();
        for row in x.chunks_exact_mut(n) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v = (*v + b).max(0.0);
            }
        }
    }
}

multiversion! {
    /// x ← LayerNorm(x + y + bias) per row of width `gamma.len()` (y is the sublayer's
    /// output before its bias, so bias add, residual and normalisation are one pass).
    pub fn residual_layer_norm(x: &mut [f32], y: &[f32], bias: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let n = gamma.len();
        for (row, yrow) in x.chunks_exact_mut(n).zip(y.chunks_exact(n)) {
            for ((v, a), b) in row.iter_mut().zip(yrow).zip(bias) {
                *v += a + b;
            }
            let mean = lane_sum(row, |v| v) / n as f32;
            let var = lane_sum(row, |v| (v - mean) * (v - mean));
            let inv = 1.0 / (var / n as f32 + eps).sqrt();
            for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
                *v = (*v - mean) * inv * g + b;
            }
        }
    }
}

multiversion! {
    /// In-place LayerNorm per row.
    pub fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let n = gamma.len();
        for row in x.chunks_exact_mut(n) {
            let mean = lane_sum(row, |v| v) / n as f32;
            let var = lane_sum(row, |v| (v - mean) * (v - mean)) / n as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
                *v = (*v - mean) * inv * g + b;
            }
        }
    }
}

multiversion! {
    /// Row-wise softmax of `scale · x` over rows of width `width`.
    pub fn scaled_softmax(x: &mut [f32], width: usize, scale: f32) {
        for row in x.chunks_exact_mut(width) {
            let max = lane_max(row);
            for v in row.iter_mut() {
                *v = exp_f32((*v - max) * scale);
            }
            let inv = 1.0 / lane_sum(row, |v| v);
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate() {
        for i in -8000..8000 {
            let x = i as f32 / 100.0;
            let (a, b) = (exp_f32(x), x.exp());
            assert!(((a - b) / b).abs() < 3e-7, "{x}: {a} vs {b}");
        }
    }

    #[test]
    fn gelu_matches_erf_definition() {
        let xs: Vec<f32> = (-600..600).map(|i| i as f32 / 100.0).collect();
        let mut y = xs.clone();
        bias_gelu(&mut y, &vec![0.0; xs.len()]);
        for (x, g) in xs.iter().zip(&y) {
            let exact = 0.5 * (*x as f64) * (1.0 + erf64(*x as f64 / 2f64.sqrt()));
            assert!((*g as f64 - exact).abs() < 1e-6, "{x}: {g} vs {exact}");
        }
    }

    /// erf by its series / continued fraction, double precision, for the test only.
    fn erf64(x: f64) -> f64 {
        let mut sum = 0.0;
        let mut term = x;
        let mut k = 0.0;
        while term.abs() > 1e-17 && k < 200.0 {
            sum += term / (2.0 * k + 1.0);
            k += 1.0;
            term *= -x * x / k;
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    }

    #[test]
    fn matmul_matches_naive() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut c = vec![0.0; m * n];
        matmul(
            &mut c,
            n,
            View {
                data: &a,
                rows: m,
                cols: k,
                row_stride: k,
            },
            View {
                data: &b,
                rows: k,
                cols: n,
                row_stride: n,
            },
            false,
            false,
        );
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum();
                assert!((c[i * n + j] - want).abs() < 1e-5);
            }
        }
        // bᵀ path: treat b (k×n) as the n×k... use a as both: a·aᵀ
        let mut d = vec![0.0; m * m];
        matmul_transposed_b(
            &mut d,
            m,
            View {
                data: &a,
                rows: m,
                cols: k,
                row_stride: k,
            },
            View {
                data: &a,
                rows: m,
                cols: k,
                row_stride: k,
            },
        );
        for i in 0..m {
            for j in 0..m {
                let want: f32 = (0..k).map(|l| a[i * k + l] * a[j * k + l]).sum();
                assert!((d[i * m + j] - want).abs() < 1e-5);
            }
        }
    }

    /// The element-wise kernels on fixed inputs, as bits: what every SIMD path must agree on.
    fn kernel_fingerprint() -> Vec<u32> {
        let n = 1031; // not a multiple of any vector width: the tails run too
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 13.0)
            .collect();
        let bias: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
        let gamma: Vec<f32> = (0..n).map(|i| 1.0 + (i % 5) as f32 * 0.01).collect();
        let mut out = Vec::new();
        let mut a = x.clone();
        bias_gelu(&mut a, &bias);
        out.extend(a.iter().map(|v| v.to_bits()));
        let mut b = x.clone();
        bias_relu(&mut b, &bias);
        out.extend(b.iter().map(|v| v.to_bits()));
        let mut c = x.clone();
        layer_norm(&mut c, &gamma, &bias, 1e-5);
        out.extend(c.iter().map(|v| v.to_bits()));
        let mut d = x.clone();
        scaled_softmax(&mut d, n, 0.125);
        out.extend(d.iter().map(|v| v.to_bits()));
        out.extend(x.iter().map(|&v| exp_f32(v).to_bits()));
        out
    }

    #[test]
    fn print_kernel_fingerprint() {
        // Run by the test below in child processes, one per forced SIMD path.
        if std::env::var_os("LMCOMPARE_FINGERPRINT").is_some() {
            let f = kernel_fingerprint();
            let sum = f.iter().fold(0u64, |h, &v| {
                h.wrapping_mul(1_000_003).wrapping_add(v as u64)
            });
            // After libtest's "test ... " prefix, on a line of its own.
            println!("\nfingerprint {} {sum:016x}", crate::simd_path());
        }
    }

    /// Every SIMD path (forced with LMCOMPARE_SIMD in a child process) gives results within
    /// a few ulp of the scalar path; each path this machine has is run.
    #[test]
    fn every_simd_path_agrees_with_the_scalar_path() {
        let exe = std::env::current_exe().unwrap();
        let mut seen = Vec::new();
        for level in ["scalar", "avx2", "avx512"] {
            let out = std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "dense::tests::print_kernel_fingerprint",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env("LMCOMPARE_SIMD", level)
                .env("LMCOMPARE_FINGERPRINT", "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text
                .lines()
                .find(|l| l.starts_with("fingerprint "))
                .unwrap_or_else(|| panic!("no fingerprint under {level}: {text}"));
            let path = line.split(' ').nth(1).unwrap().to_owned();
            // The path taken is at most the one forced.
            assert!(level != "scalar" || path == "scalar", "{line}");
            assert!(level != "avx2" || path != "avx512", "{line}");
            seen.push(path);
        }
        assert_eq!(seen[0], "scalar");
        // Same process, no cap: the values themselves, compared with a scalar child's
        // within a few ulp (vector and scalar code may round sums differently).
        let here = kernel_fingerprint();
        assert_eq!(here.len(), 5 * 1031);
        let scalar_values = {
            let out = std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "dense::tests::dump_kernel_values",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env("LMCOMPARE_SIMD", "scalar")
                .env("LMCOMPARE_FINGERPRINT", "1")
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.strip_prefix("v "))
                .map(|v| v.parse::<u32>().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(scalar_values.len(), here.len());
        for (i, (a, b)) in here.iter().zip(&scalar_values).enumerate() {
            let (x, y) = (f32::from_bits(*a), f32::from_bits(*b));
            let tol = 8.0 * f32::EPSILON * x.abs().max(y.abs()).max(1e-6);
            assert!(
                (x - y).abs() <= tol,
                "value {i}: {x} ({}) vs scalar {y}",
                crate::simd_path()
            );
        }
    }

    #[test]
    fn dump_kernel_values() {
        if std::env::var_os("LMCOMPARE_FINGERPRINT").is_some() {
            println!();
            for v in kernel_fingerprint() {
                println!("v {v}");
            }
        }
    }
}
