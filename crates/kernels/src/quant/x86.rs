//! The AVX2 and AVX-512 VNNI kernels: per chunk of 16 groups, integer sums per 32-bit lane
//! (one lane per group), then the same float steps as the scalar kernel, lane by lane.

// The register arrays are indexed by row and register number on purpose: the loops are all
// of constant length and unroll into straight-line code, which iterator chains obscure.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::{DecodedTile, QuantizedRows, LANES, TILE};

/// 64-byte registers per chunk (16 groups of 16 values).
const REGS: usize = 4;

/// Folds 16 lanes as [`super::fold_lanes`] does: lane i + lane i+8, then i + i+4, …
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn fold8(lo: __m256, hi: __m256) -> f32 {
    let s8 = _mm256_add_ps(lo, hi);
    let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    let s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
    _mm_cvtss_f32(s1)
}

/// # Safety
/// The CPU must have AVX-512 F/BW/VNNI and FMA.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
pub(super) unsafe fn vnni_dot_tile(
    acts: &QuantizedRows,
    m: usize,
    tile: &DecodedTile,
    has_min: bool,
    results: &mut [f32; TILE],
) {
    let (group, pg) = (acts.group, acts.padded_groups);
    let padded = pg * group;
    debug_assert_eq!(group, 4 * REGS);
    let q = acts.q.as_ptr().add(m * padded);
    let a_scale = acts.scale.as_ptr().add(m * pg);
    let a_sum = acts.scaled_sum.as_ptr().add(m * pg);
    let a_zero = acts.zero_sum.as_ptr().add(m * pg);
    let mut acc = [_mm512_setzero_ps(); TILE];
    for c in 0..pg / LANES {
        let base = c * LANES * group;
        let g0 = c * LANES;
        let mut a = [_mm512_setzero_si512(); REGS];
        for (r, a) in a.iter_mut().enumerate() {
            *a = _mm512_loadu_si512(q.add(base + r * 64) as *const __m512i);
        }
        let sa = _mm512_loadu_ps(a_scale.add(g0));
        let za = _mm512_loadu_si512(a_zero.add(g0) as *const __m512i);
        let ma = _mm512_loadu_ps(a_sum.add(g0));
        for (n, acc) in acc.iter_mut().enumerate() {
            let u = tile.u.as_ptr().add(n * padded + base);
            let mut isum = _mm512_setzero_si512();
            for (r, a) in a.iter().enumerate() {
                let w = _mm512_loadu_si512(u.add(r * 64) as *const __m512i);
                isum = _mm512_dpbusd_epi32(isum, w, *a);
            }
            isum = _mm512_sub_epi32(isum, za);
            let ws = _mm512_loadu_ps(tile.scale.as_ptr().add(n * pg + g0));
            let s = _mm512_mul_ps(ws, sa);
            *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), s, *acc);
            if has_min {
                let off = _mm512_loadu_ps(tile.offset.as_ptr().add(n * pg + g0));
                *acc = _mm512_fmadd_ps(off, ma, *acc);
            }
        }
    }
    for (n, acc) in acc.iter().enumerate() {
        let lo = _mm512_castps512_ps256(*acc);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(*acc), 1));
        results[n] = fold8(lo, hi);
    }
}

/// [`vnni_dot_tile`] for `MB` activation rows from `m` at once, the tile's rows `NB` at a
/// time: each weight register is loaded once for all `MB` rows, and the `MB × NB`
/// accumulators, the rows' activations and one weight row fit the 32 registers. Per row the
/// operations, and so the results, are the same as [`vnni_dot_tile`]'s.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VNNI and FMA; rows `m..m + MB` must exist in `acts`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
pub(super) unsafe fn vnni_dot_rows<const MB: usize, const NB: usize>(
    acts: &QuantizedRows,
    m: usize,
    tile: &DecodedTile,
    has_min: bool,
    results: &mut [[f32; TILE]; 4],
) {
    let pg = acts.padded_groups;
    let padded = pg * acts.group;
    debug_assert_eq!(acts.group, 4 * REGS);
    let mut q = [std::ptr::null::<i8>(); MB];
    let mut at = [0usize; MB];
    for i in 0..MB {
        q[i] = acts.q.as_ptr().add((m + i) * padded);
        at[i] = (m + i) * pg;
    }
    for nb in 0..TILE / NB {
        let mut acc = [[_mm512_setzero_ps(); NB]; MB];
        for c in 0..pg / LANES {
            let base = c * LANES * acts.group;
            let g0 = c * LANES;
            let mut a = [[_mm512_setzero_si512(); REGS]; MB];
            for i in 0..MB {
                for (r, a) in a[i].iter_mut().enumerate() {
                    *a = _mm512_loadu_si512(q[i].add(base + r * 64) as *const __m512i);
                }
            }
            for j in 0..NB {
                let n = nb * NB + j;
                let u = tile.u.as_ptr().add(n * padded + base);
                let mut isum = [_mm512_setzero_si512(); MB];
                for r in 0..REGS {
                    let w = _mm512_loadu_si512(u.add(r * 64) as *const __m512i);
                    for i in 0..MB {
                        isum[i] = _mm512_dpbusd_epi32(isum[i], w, a[i][r]);
                    }
                }
                let ws = _mm512_loadu_ps(tile.scale.as_ptr().add(n * pg + g0));
                for i in 0..MB {
                    let k = at[i] + g0;
                    let za = _mm512_loadu_si512(acts.zero_sum.as_ptr().add(k) as *const __m512i);
                    let isum = _mm512_sub_epi32(isum[i], za);
                    let s = _mm512_mul_ps(ws, _mm512_loadu_ps(acts.scale.as_ptr().add(k)));
                    acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), s, acc[i][j]);
                    if has_min {
                        let off = _mm512_loadu_ps(tile.offset.as_ptr().add(n * pg + g0));
                        let ma = _mm512_loadu_ps(acts.scaled_sum.as_ptr().add(k));
                        acc[i][j] = _mm512_fmadd_ps(off, ma, acc[i][j]);
                    }
                }
            }
        }
        for i in 0..MB {
            for j in 0..NB {
                let v = acc[i][j];
                let lo = _mm512_castps512_ps256(v);
                let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
                results[i][nb * NB + j] = fold8(lo, hi);
            }
        }
    }
}

/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn avx2_dot_tile(
    acts: &QuantizedRows,
    m: usize,
    tile: &DecodedTile,
    has_min: bool,
    wide: bool,
    results: &mut [f32; TILE],
) {
    let (group, pg) = (acts.group, acts.padded_groups);
    let padded = pg * group;
    debug_assert_eq!(group, 4 * REGS);
    let q = acts.q.as_ptr().add(m * padded);
    let a_scale = acts.scale.as_ptr().add(m * pg);
    let a_sum = acts.scaled_sum.as_ptr().add(m * pg);
    let a_zero = acts.zero_sum.as_ptr().add(m * pg);
    let ones = _mm256_set1_epi16(1);
    let flip = _mm256_set1_epi8(-128);
    let mut acc = [[_mm256_setzero_ps(); 2]; TILE];
    for c in 0..pg / LANES {
        let base = c * LANES * group;
        let g0 = c * LANES;
        // Register r's low half holds groups 0–7, its high half groups 8–15.
        let mut a = [[_mm256_setzero_si256(); 2]; REGS];
        for (r, a) in a.iter_mut().enumerate() {
            for (h, a) in a.iter_mut().enumerate() {
                *a = _mm256_loadu_si256(q.add(base + r * 64 + h * 32) as *const __m256i);
            }
        }
        let mut sa = [_mm256_setzero_ps(); 2];
        let mut za = [_mm256_setzero_si256(); 2];
        let mut ma = [_mm256_setzero_ps(); 2];
        for h in 0..2 {
            sa[h] = _mm256_loadu_ps(a_scale.add(g0 + 8 * h));
            za[h] = _mm256_loadu_si256(a_zero.add(g0 + 8 * h) as *const __m256i);
            ma[h] = _mm256_loadu_ps(a_sum.add(g0 + 8 * h));
        }
        for (n, acc) in acc.iter_mut().enumerate() {
            let u = tile.u.as_ptr().add(n * padded + base);
            for h in 0..2 {
                let mut isum = _mm256_setzero_si256();
                for (r, a) in a.iter().enumerate() {
                    let w = _mm256_loadu_si256(u.add(r * 64 + h * 32) as *const __m256i);
                    // maddubs saturates past 32767: values up to 128 are safe against
                    // |q| ≤ 127; Q8_0's (up to 255) go through the sign trick on u − 128.
                    let pairs = if wide {
                        let s = _mm256_xor_si256(w, flip);
                        _mm256_maddubs_epi16(_mm256_sign_epi8(s, s), _mm256_sign_epi8(a[h], s))
                    } else {
                        _mm256_maddubs_epi16(w, a[h])
                    };
                    isum = _mm256_add_epi32(isum, _mm256_madd_epi16(pairs, ones));
                }
                // Wide types already summed (u − 128)·q, which is what subtracting z·Σq does.
                if !wide {
                    isum = _mm256_sub_epi32(isum, za[h]);
                }
                let ws = _mm256_loadu_ps(tile.scale.as_ptr().add(n * pg + g0 + 8 * h));
                let s = _mm256_mul_ps(ws, sa[h]);
                acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), s, acc[h]);
                if has_min {
                    let off = _mm256_loadu_ps(tile.offset.as_ptr().add(n * pg + g0 + 8 * h));
                    acc[h] = _mm256_fmadd_ps(off, ma[h], acc[h]);
                }
            }
        }
    }
    for (n, acc) in acc.iter().enumerate() {
        results[n] = fold8(acc[0], acc[1]);
    }
}
