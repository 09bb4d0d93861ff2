//! The AVX2 and AVX-512 VNNI kernels: per chunk of 16 groups, integer sums per 32-bit lane
//! (one lane per group), then the same float steps as the scalar kernel, lane by lane.

// The register arrays are indexed by row and register number on purpose: the loops are all
// of constant length and unroll into straight-line code, which iterator chains obscure.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::{DecodedTile, QuantizedRows, GROUP, LANES, TILE};

/// 64-byte registers per full chunk (16 groups of 16 values); a half chunk has 2.
const REGS: usize = 4;
const CHUNK: usize = LANES * GROUP;

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

#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn fold16(v: __m512) -> f32 {
    let lo = _mm512_castps512_ps256(v);
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    fold8(lo, hi)
}

/// One chunk for `MB` activation rows and `NB` weight rows: `R` registers per row (4 for a
/// full chunk, 2 for a half chunk, whose upper lanes are added onto the lower ones).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn vnni_chunk<const MB: usize, const NB: usize, const R: usize>(
    acts: &QuantizedRows,
    m: usize,
    tile: &DecodedTile,
    n0: usize,
    c: usize,
    has_min: bool,
    acc: &mut [[__m512; NB]; MB],
) {
    let layout = &acts.layout;
    let (pg, rb) = (layout.padded_groups, layout.row_bytes);
    let base = c * CHUNK;
    let g0 = c * LANES;
    let mut a = [[_mm512_setzero_si512(); R]; MB];
    for i in 0..MB {
        let q = acts.q.as_ptr().add((m + i) * rb + base);
        for r in 0..R {
            a[i][r] = _mm512_loadu_si512(q.add(r * 64) as *const __m512i);
        }
    }
    // The sums start at −z·Σq (what the zero point adds), saving a subtraction per pair.
    let mut start = [_mm512_setzero_si512(); MB];
    for i in 0..MB {
        let za = acts.zero_sum.as_ptr().add((m + i) * pg + g0);
        start[i] = _mm512_sub_epi32(start[i], _mm512_loadu_si512(za as *const __m512i));
    }
    for j in 0..NB {
        let n = n0 + j;
        let u = tile.u.as_ptr().add(n * rb + base);
        let mut isum = start;
        for r in 0..R {
            let w = _mm512_loadu_si512(u.add(r * 64) as *const __m512i);
            for i in 0..MB {
                isum[i] = _mm512_dpbusd_epi32(isum[i], w, a[i][r]);
            }
        }
        let ws = _mm512_loadu_ps(tile.scale.as_ptr().add(n * pg + g0));
        for i in 0..MB {
            let mut sum = isum[i];
            if R < REGS {
                // Upper lanes onto lower: each group's two halves (the upper lanes keep a copy,
                // which meets zero scales; their −z·Σq is zero, the groups being padding).
                sum = _mm512_add_epi32(sum, _mm512_shuffle_i64x2(sum, sum, 0x4E));
            }
            let k = (m + i) * pg + g0;
            let s = _mm512_mul_ps(ws, _mm512_loadu_ps(acts.scale.as_ptr().add(k)));
            acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), s, acc[i][j]);
            if has_min {
                let off = _mm512_loadu_ps(tile.offset.as_ptr().add(n * pg + g0));
                let ma = _mm512_loadu_ps(acts.scaled_sum.as_ptr().add(k));
                acc[i][j] = _mm512_fmadd_ps(off, ma, acc[i][j]);
            }
        }
    }
}

/// `MB` activation rows from `m` against the tile, its rows `NB` at a time: each weight
/// register is loaded once for all `MB` rows, and the `MB × NB` accumulators, the rows'
/// activations and one weight row fit the 32 registers. Per row the operations, and so the
/// results, are the scalar kernel's.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VNNI and FMA; rows `m..m + MB` must exist in `acts`, and
/// `results` must hold at least `MB` rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
pub(super) unsafe fn vnni_dot_rows<const MB: usize, const NB: usize>(
    acts: &QuantizedRows,
    m: usize,
    tile: &DecodedTile,
    has_min: bool,
    results: &mut [[f32; TILE]],
) {
    let layout = &acts.layout;
    for nb in 0..TILE / NB {
        let mut acc = [[_mm512_setzero_ps(); NB]; MB];
        for c in 0..layout.full_chunks {
            vnni_chunk::<MB, NB, REGS>(acts, m, tile, nb * NB, c, has_min, &mut acc);
        }
        if layout.half {
            let c = layout.full_chunks;
            vnni_chunk::<MB, NB, 2>(acts, m, tile, nb * NB, c, has_min, &mut acc);
        }
        for i in 0..MB {
            for j in 0..NB {
                results[i][nb * NB + j] = fold16(acc[i][j]);
            }
        }
    }
}

/// One chunk of one activation row against the tile on AVX2: each 64-byte register is two
/// 32-byte halves, lanes 0–7 (groups 0–7) and 8–15. In a half chunk both halves belong to
/// groups 0–7, so all of it goes to the low accumulator.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_chunk<const R: usize>(
    acts: &QuantizedRows,
    m: usize,
    tile: &DecodedTile,
    c: usize,
    has_min: bool,
    wide: bool,
    acc: &mut [[__m256; 2]; TILE],
) {
    let layout = &acts.layout;
    let (pg, rb) = (layout.padded_groups, layout.row_bytes);
    let base = c * CHUNK;
    let g0 = c * LANES;
    let ones = _mm256_set1_epi16(1);
    let flip = _mm256_set1_epi8(-128);
    let q = acts.q.as_ptr().add(m * rb + base);
    let mut a = [[_mm256_setzero_si256(); 2]; R];
    for r in 0..R {
        for h in 0..2 {
            a[r][h] = _mm256_loadu_si256(q.add(r * 64 + h * 32) as *const __m256i);
        }
    }
    let k = m * pg + g0;
    for n in 0..TILE {
        let u = tile.u.as_ptr().add(n * rb + base);
        let mut isum = [_mm256_setzero_si256(); 2];
        for r in 0..R {
            for h in 0..2 {
                let w = _mm256_loadu_si256(u.add(r * 64 + h * 32) as *const __m256i);
                // maddubs saturates past 32767: values up to 128 are safe against
                // |q| ≤ 127; Q8_0's (up to 255) go through the sign trick on u − 128.
                let pairs = if wide {
                    let s = _mm256_xor_si256(w, flip);
                    _mm256_maddubs_epi16(_mm256_sign_epi8(s, s), _mm256_sign_epi8(a[r][h], s))
                } else {
                    _mm256_maddubs_epi16(w, a[r][h])
                };
                let to = if R < REGS { 0 } else { h };
                isum[to] = _mm256_add_epi32(isum[to], _mm256_madd_epi16(pairs, ones));
            }
        }
        for h in 0..if R < REGS { 1 } else { 2 } {
            let kh = k + 8 * h;
            let mut sum = isum[h];
            // Wide types already summed (u − 128)·q, which is what subtracting z·Σq does.
            if !wide {
                let za = _mm256_loadu_si256(acts.zero_sum.as_ptr().add(kh) as *const __m256i);
                sum = _mm256_sub_epi32(sum, za);
            }
            let ws = _mm256_loadu_ps(tile.scale.as_ptr().add(n * pg + g0 + 8 * h));
            let s = _mm256_mul_ps(ws, _mm256_loadu_ps(acts.scale.as_ptr().add(kh)));
            acc[n][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), s, acc[n][h]);
            if has_min {
                let off = _mm256_loadu_ps(tile.offset.as_ptr().add(n * pg + g0 + 8 * h));
                let ma = _mm256_loadu_ps(acts.scaled_sum.as_ptr().add(kh));
                acc[n][h] = _mm256_fmadd_ps(off, ma, acc[n][h]);
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
    let layout = &acts.layout;
    let mut acc = [[_mm256_setzero_ps(); 2]; TILE];
    for c in 0..layout.full_chunks {
        avx2_chunk::<REGS>(acts, m, tile, c, has_min, wide, &mut acc);
    }
    if layout.half {
        avx2_chunk::<2>(acts, m, tile, layout.full_chunks, has_min, wide, &mut acc);
    }
    for (n, acc) in acc.iter().enumerate() {
        results[n] = fold8(acc[0], acc[1]);
    }
}

/// Per-row products for `MB` activation rows from `m` and the tile's 8 weight rows: integer
/// sums `Σ u·q` over whole rows (a half chunk's lanes add in as they are, since every lane is
/// summed at the end), then `(Σ − z·Σq) · (weight scale · activation scale)` in registers,
/// the operations of the scalar kernel.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VNNI; rows `m..m + MB` must exist in `acts`, which has
/// per-row scales.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
pub(super) unsafe fn vnni_row_products<const MB: usize>(
    acts: &QuantizedRows,
    m: usize,
    tile: &DecodedTile,
    w_scale: &[f32; TILE],
    results: &mut [[f32; TILE]],
) {
    let rb = acts.layout.row_bytes;
    let regs = rb / 64;
    let mut acc = [[_mm512_setzero_si512(); TILE]; MB];
    for r in 0..regs {
        let mut a = [_mm512_setzero_si512(); MB];
        for i in 0..MB {
            a[i] = _mm512_loadu_si512(acts.q.as_ptr().add((m + i) * rb + r * 64) as *const __m512i);
        }
        for n in 0..TILE {
            let w = _mm512_loadu_si512(tile.u.as_ptr().add(n * rb + r * 64) as *const __m512i);
            for i in 0..MB {
                acc[i][n] = _mm512_dpbusd_epi32(acc[i][n], w, a[i]);
            }
        }
    }
    let ws = _mm256_loadu_ps(w_scale.as_ptr());
    let row_scale = acts.row_scale.as_deref().unwrap_or(&[]);
    for i in 0..MB {
        let mut y = [_mm256_setzero_si256(); TILE];
        for n in 0..TILE {
            y[n] = _mm256_add_epi32(
                _mm512_castsi512_si256(acc[i][n]),
                _mm512_extracti64x4_epi64(acc[i][n], 1),
            );
        }
        let sums = _mm256_sub_epi32(hsum8(&y), _mm256_set1_epi32(acts.row_zero[m + i]));
        let s = _mm256_mul_ps(ws, _mm256_set1_ps(row_scale[m + i]));
        let v = _mm256_mul_ps(_mm256_cvtepi32_ps(sums), s);
        _mm256_storeu_ps(results[i].as_mut_ptr(), v);
    }
}

/// The lane sums of 8 accumulators as one vector (integers: any order gives the same sums).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn hsum8(y: &[__m256i; TILE]) -> __m256i {
    // hadd pairs within each 128-bit half, then the halves onto each other.
    let a = _mm256_hadd_epi32(y[0], y[1]);
    let b = _mm256_hadd_epi32(y[2], y[3]);
    let c = _mm256_hadd_epi32(y[4], y[5]);
    let d = _mm256_hadd_epi32(y[6], y[7]);
    let ab = _mm256_hadd_epi32(a, b); // per half: s0 s1 s2 s3
    let cd = _mm256_hadd_epi32(c, d); // per half: s4 s5 s6 s7
    let lo = _mm256_permute2x128_si256(ab, cd, 0x20);
    let hi = _mm256_permute2x128_si256(ab, cd, 0x31);
    _mm256_add_epi32(lo, hi)
}

/// [`vnni_row_products`] for one row on AVX2, with Q8_0's sign trick: the sums are
/// `Σ (u − 128)·q`, the zero point already taken off.
///
/// # Safety
/// The CPU must have AVX2; as [`vnni_row_products`] otherwise.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn avx2_row_products(
    acts: &QuantizedRows,
    m: usize,
    tile: &DecodedTile,
    w_scale: &[f32; TILE],
    results: &mut [f32; TILE],
) {
    let rb = acts.layout.row_bytes;
    let ones = _mm256_set1_epi16(1);
    let flip = _mm256_set1_epi8(-128);
    let mut acc = [_mm256_setzero_si256(); TILE];
    for r in 0..rb / 32 {
        let a = _mm256_loadu_si256(acts.q.as_ptr().add(m * rb + r * 32) as *const __m256i);
        for n in 0..TILE {
            let w = _mm256_loadu_si256(tile.u.as_ptr().add(n * rb + r * 32) as *const __m256i);
            let s = _mm256_xor_si256(w, flip);
            let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(s, s), _mm256_sign_epi8(a, s));
            acc[n] = _mm256_add_epi32(acc[n], _mm256_madd_epi16(pairs, ones));
        }
    }
    let row_scale = acts.row_scale.as_deref().unwrap_or(&[]);
    let s = _mm256_mul_ps(
        _mm256_loadu_ps(w_scale.as_ptr()),
        _mm256_set1_ps(row_scale[m]),
    );
    let v = _mm256_mul_ps(_mm256_cvtepi32_ps(hsum8(&acc)), s);
    _mm256_storeu_ps(results.as_mut_ptr(), v);
}

/// Where chunk `c` of a natural row is read from, and whether it is the half chunk: the row
/// itself, or for a last chunk short of its 8 or 16 groups, `padded` (the row's tail, then
/// zeros).
#[inline(always)]
fn chunk_source<T: Copy>(
    src: &[T],
    layout: &super::Layout,
    c: usize,
    padded: &mut [T; CHUNK],
) -> (*const u8, bool) {
    let (at, values) = (c * CHUNK, layout.groups * GROUP);
    let half = layout.half && c == layout.full_chunks;
    if at + if half { CHUNK / 2 } else { CHUNK } <= values {
        (src[at..].as_ptr() as *const u8, half)
    } else {
        padded[..values - at].copy_from_slice(&src[at..values]);
        (padded.as_ptr() as *const u8, half)
    }
}

/// [`super::interleave_row`] for bytes on AVX-512 F: a full chunk is a 16 × 4 matrix of
/// 4-byte words (group × word) transposed to 4 × 16 with four two-source permutes and four
/// 128-bit shuffles; a half chunk takes two permutes.
///
/// # Safety
/// The CPU must have AVX-512 F; `src` holds the row's `layout.groups × 16` values and `dst`
/// its `layout.row_bytes` (zero past the real values, as the caller keeps it). `T` is a byte
/// type (u8 weights, i8 activations: the moves do not look at the values).
#[target_feature(enable = "avx512f,avx2")]
pub(super) unsafe fn interleave_row_avx512<T: Copy + Default>(
    src: &[T],
    dst: &mut [T],
    layout: &super::Layout,
) {
    assert_eq!(std::mem::size_of::<T>(), 1, "bytes only");
    // Words 4g + r of groups g = 0..8 in two registers: r = 0 then 1, and r = 2 then 3 (the
    // half chunk's order: r then r + 2, for r = 0 and 1).
    let pick = |r0: i32, r1: i32| {
        let mut idx = [0i32; 16];
        for g in 0..8 {
            idx[g] = 4 * g as i32 + r0;
            idx[8 + g] = 4 * g as i32 + r1;
        }
        _mm512_loadu_si512(idx.as_ptr() as *const __m512i)
    };
    let (w01, w23, w02, w13) = (pick(0, 1), pick(2, 3), pick(0, 2), pick(1, 3));
    let mut padded = [T::default(); CHUNK];
    for c in 0..layout.full_chunks + layout.half as usize {
        let (s, half) = chunk_source(src, layout, c, &mut padded);
        let d = (dst.as_mut_ptr() as *mut u8).add(c * CHUNK);
        let z0 = _mm512_loadu_si512(s as *const __m512i);
        let z1 = _mm512_loadu_si512(s.add(64) as *const __m512i);
        if half {
            _mm512_storeu_si512(d as *mut __m512i, _mm512_permutex2var_epi32(z0, w02, z1));
            _mm512_storeu_si512(
                d.add(64) as *mut __m512i,
                _mm512_permutex2var_epi32(z0, w13, z1),
            );
            continue;
        }
        let z2 = _mm512_loadu_si512(s.add(128) as *const __m512i);
        let z3 = _mm512_loadu_si512(s.add(192) as *const __m512i);
        let t0 = _mm512_permutex2var_epi32(z0, w01, z1);
        let t1 = _mm512_permutex2var_epi32(z0, w23, z1);
        let t2 = _mm512_permutex2var_epi32(z2, w01, z3);
        let t3 = _mm512_permutex2var_epi32(z2, w23, z3);
        _mm512_storeu_si512(d as *mut __m512i, _mm512_shuffle_i64x2(t0, t2, 0x44));
        _mm512_storeu_si512(
            d.add(64) as *mut __m512i,
            _mm512_shuffle_i64x2(t0, t2, 0xEE),
        );
        _mm512_storeu_si512(
            d.add(128) as *mut __m512i,
            _mm512_shuffle_i64x2(t1, t3, 0x44),
        );
        _mm512_storeu_si512(
            d.add(192) as *mut __m512i,
            _mm512_shuffle_i64x2(t1, t3, 0xEE),
        );
    }
}

/// [`interleave_row_avx512`] on AVX2: per 8 groups, an in-lane 4 × 4 word transpose of four
/// registers, then one permute puts the groups (even ones in the low lane, odd in the high)
/// in order.
///
/// # Safety
/// The CPU must have AVX2; as [`interleave_row_avx512`] otherwise.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn interleave_row_avx2<T: Copy + Default>(
    src: &[T],
    dst: &mut [T],
    layout: &super::Layout,
) {
    assert_eq!(std::mem::size_of::<T>(), 1, "bytes only");
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let mut padded = [T::default(); CHUNK];
    for c in 0..layout.full_chunks + layout.half as usize {
        let (s, half) = chunk_source(src, layout, c, &mut padded);
        let d = (dst.as_mut_ptr() as *mut u8).add(c * CHUNK);
        for h in 0..if half { 1 } else { 2 } {
            let s = s.add(128 * h);
            let y: [__m256i; 4] =
                std::array::from_fn(|k| _mm256_loadu_si256(s.add(32 * k) as *const __m256i));
            let t0 = _mm256_unpacklo_epi32(y[0], y[1]);
            let t1 = _mm256_unpackhi_epi32(y[0], y[1]);
            let t2 = _mm256_unpacklo_epi32(y[2], y[3]);
            let t3 = _mm256_unpackhi_epi32(y[2], y[3]);
            let words = [
                _mm256_unpacklo_epi64(t0, t2),
                _mm256_unpackhi_epi64(t0, t2),
                _mm256_unpacklo_epi64(t1, t3),
                _mm256_unpackhi_epi64(t1, t3),
            ];
            for (r, w) in words.into_iter().enumerate() {
                // A full chunk: word r of groups 8h.. at register r's half h. A half chunk:
                // words 0 and 1 in registers 0 and 1's low halves, 2 and 3 in their high ones.
                let to = if half {
                    64 * (r % 2) + 32 * (r / 2)
                } else {
                    64 * r + 32 * h
                };
                _mm256_storeu_si256(
                    d.add(to) as *mut __m256i,
                    _mm256_permutevar8x32_epi32(w, order),
                );
            }
        }
    }
}
