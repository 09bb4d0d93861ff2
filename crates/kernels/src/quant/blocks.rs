//! GGML's block layouts (`ggml-common.h`) decoded into unsigned values with a scale and an
//! offset per group, such that the weight is `scale·(u − z) + offset` evaluated as
//! `dequantize_row_*` evaluates it: the same float operations in the same order, so
//! [`dequantize_row`] equals the reference bit for bit.

use super::ActivationBlocks;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum BlockType {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
}

/// An fp16 field as f32, exactly (`to_f32` would be a call per block, for run-time F16C
/// detection; `to_f32_const` branches on the exponent). Without branches: the magnitude's
/// bits shifted into an f32 and scaled by 2¹¹² are exact for normal and subnormal values
/// alike; infinities and NaNs get the top exponent.
#[inline(always)]
pub(crate) fn half_at(b: &[u8], at: usize) -> f32 {
    let h = u16::from_le_bytes([b[at], b[at + 1]]) as u32;
    let magnitude = f32::from_bits((h & 0x7fff) << 13) * f32::from_bits(0x7780_0000);
    let special = if h & 0x7c00 == 0x7c00 { 0x7f80_0000 } else { 0 };
    f32::from_bits(magnitude.to_bits() | special | (h & 0x8000) << 16)
}

/// Byte `i` of entry `b` is 16 if bit `i` of `b` is set, else 0.
const FIFTH_BITS: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let mut i = 0;
        while i < 8 {
            if b >> i & 1 == 1 {
                t[b] |= 16 << (8 * i);
            }
            i += 1;
        }
        b += 1;
    }
    t
};

/// Q4_K/Q5_K's 6-bit scale and min `j` of 8 (`get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

impl BlockType {
    pub const ALL: [BlockType; 10] = [
        BlockType::Q4_0,
        BlockType::Q4_1,
        BlockType::Q5_0,
        BlockType::Q5_1,
        BlockType::Q8_0,
        BlockType::Q2_K,
        BlockType::Q3_K,
        BlockType::Q4_K,
        BlockType::Q5_K,
        BlockType::Q6_K,
    ];

    /// The type by its ggml name ("Q4_K", "Q8_0", …).
    pub fn from_name(name: &str) -> Option<BlockType> {
        BlockType::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            BlockType::Q4_0 => "Q4_0",
            BlockType::Q4_1 => "Q4_1",
            BlockType::Q5_0 => "Q5_0",
            BlockType::Q5_1 => "Q5_1",
            BlockType::Q8_0 => "Q8_0",
            BlockType::Q2_K => "Q2_K",
            BlockType::Q3_K => "Q3_K",
            BlockType::Q4_K => "Q4_K",
            BlockType::Q5_K => "Q5_K",
            BlockType::Q6_K => "Q6_K",
        }
    }

    fn is_k(self) -> bool {
        matches!(
            self,
            BlockType::Q2_K | BlockType::Q3_K | BlockType::Q4_K | BlockType::Q5_K | BlockType::Q6_K
        )
    }

    /// Values per block.
    pub fn block_values(self) -> usize {
        if self.is_k() {
            256
        } else {
            32
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            BlockType::Q4_0 => 18,
            BlockType::Q4_1 => 20,
            BlockType::Q5_0 => 22,
            BlockType::Q5_1 => 24,
            BlockType::Q8_0 => 34,
            BlockType::Q2_K => 84,
            BlockType::Q3_K => 110,
            BlockType::Q4_K => 144,
            BlockType::Q5_K => 176,
            BlockType::Q6_K => 210,
        }
    }

    pub fn bits_per_weight(self) -> f64 {
        self.block_bytes() as f64 * 8.0 / self.block_values() as f64
    }

    /// Bytes of a row of `cols` values (a multiple of the block size).
    pub fn row_bytes(self, cols: usize) -> usize {
        cols / self.block_values() * self.block_bytes()
    }

    /// Values sharing one scale in the decoded form: the K-quants' 16-value sub-blocks (Q4_K
    /// and Q5_K's 32-value ones as two), a quarter block for the others.
    pub(crate) fn group(self) -> usize {
        super::GROUP
    }

    /// `z` in `scale·(u − z) + offset`: what makes a signed type's values unsigned.
    pub(crate) fn zero_point(self) -> i32 {
        match self {
            BlockType::Q4_0 => 8,
            BlockType::Q5_0 => 16,
            BlockType::Q8_0 => 128,
            BlockType::Q3_K => 4,
            BlockType::Q6_K => 32,
            _ => 0,
        }
    }

    /// Whether the type has a per-block offset (a "min").
    pub(crate) fn has_min(self) -> bool {
        matches!(
            self,
            BlockType::Q4_1 | BlockType::Q5_1 | BlockType::Q2_K | BlockType::Q4_K | BlockType::Q5_K
        )
    }

    pub(super) fn activation_blocks(self) -> ActivationBlocks {
        if self.is_k() {
            ActivationBlocks::Q8K
        } else {
            ActivationBlocks::Q80
        }
    }

    /// One row into natural-order unsigned values and per-group scales and offsets (types
    /// without a min leave `off` as it is: nothing reads it for them).
    #[inline(always)]
    pub(crate) fn decode_row(self, row: &[u8], u: &mut [u8], scale: &mut [f32], off: &mut [f32]) {
        // One loop per type, each with a constant type: the per-block `match` folds away and
        // the loop body is that type's straight-line code.
        macro_rules! blocks_of {
            ($ty:expr) => {{
                let ty = $ty;
                let (bv, bb) = (ty.block_values(), ty.block_bytes());
                let gpb = bv / ty.group();
                for (i, b) in row.chunks_exact(bb).enumerate() {
                    ty.decode_block(
                        b,
                        &mut u[i * bv..(i + 1) * bv],
                        &mut scale[i * gpb..(i + 1) * gpb],
                        &mut off[i * gpb..(i + 1) * gpb],
                    );
                }
            }};
        }
        match self {
            BlockType::Q4_0 => blocks_of!(BlockType::Q4_0),
            BlockType::Q4_1 => blocks_of!(BlockType::Q4_1),
            BlockType::Q5_0 => blocks_of!(BlockType::Q5_0),
            BlockType::Q5_1 => blocks_of!(BlockType::Q5_1),
            BlockType::Q8_0 => blocks_of!(BlockType::Q8_0),
            BlockType::Q2_K => blocks_of!(BlockType::Q2_K),
            BlockType::Q3_K => blocks_of!(BlockType::Q3_K),
            BlockType::Q4_K => blocks_of!(BlockType::Q4_K),
            BlockType::Q5_K => blocks_of!(BlockType::Q5_K),
            BlockType::Q6_K => blocks_of!(BlockType::Q6_K),
        }
    }

    #[inline(always)]
    fn decode_block(self, b: &[u8], u: &mut [u8], sc: &mut [f32], off: &mut [f32]) {
        match self {
            BlockType::Q4_0 | BlockType::Q4_1 => {
                let d = half_at(b, 0);
                let (m, qs) = if self == BlockType::Q4_1 {
                    (half_at(b, 2), &b[4..20])
                } else {
                    (0.0, &b[2..18])
                };
                for j in 0..16 {
                    u[j] = qs[j] & 0xF;
                    u[j + 16] = qs[j] >> 4;
                }
                sc.fill(d);
                if self.has_min() {
                    off.fill(m);
                }
            }
            BlockType::Q5_0 | BlockType::Q5_1 => {
                let d = half_at(b, 0);
                let (m, at) = if self == BlockType::Q5_1 {
                    (half_at(b, 2), 4)
                } else {
                    (0.0, 2)
                };
                // Bit j of qh is value j's fifth bit: each of its bytes spread to 8 bytes of
                // 0 or 16 by table, then OR-ed in by a loop that vectorises.
                let mut high = [0u8; 32];
                for k in 0..4 {
                    high[8 * k..8 * k + 8]
                        .copy_from_slice(&FIFTH_BITS[b[at + k] as usize].to_le_bytes());
                }
                let qs = &b[at + 4..at + 20];
                for j in 0..16 {
                    u[j] = (qs[j] & 0xF) | high[j];
                    u[j + 16] = (qs[j] >> 4) | high[j + 16];
                }
                sc.fill(d);
                if self.has_min() {
                    off.fill(m);
                }
            }
            BlockType::Q8_0 => {
                let d = half_at(b, 0);
                for (o, &q) in u.iter_mut().zip(&b[2..34]) {
                    *o = (q as i8 as i32 + 128) as u8;
                }
                sc.fill(d);
            }
            BlockType::Q2_K => {
                // scales[16], qs[64], d, dmin
                let (scales, qs) = (&b[0..16], &b[16..80]);
                let (d, dmin) = (half_at(b, 80), half_at(b, 82));
                let mut is = 0;
                let mut y = 0;
                for n in 0..2 {
                    let q = &qs[n * 32..n * 32 + 32];
                    for j in 0..4 {
                        let shift = 2 * j;
                        for half in 0..2 {
                            let s = scales[is];
                            sc[is] = d * (s & 0xF) as f32;
                            off[is] = -(dmin * (s >> 4) as f32);
                            for l in 0..16 {
                                u[y] = (q[l + 16 * half] >> shift) & 3;
                                y += 1;
                            }
                            is += 1;
                        }
                    }
                }
            }
            BlockType::Q3_K => {
                // hmask[32], qs[64], scales[12], d
                let (hm, qs) = (&b[0..32], &b[32..96]);
                let d_all = half_at(b, 108);
                let mut aux = [0u32; 4];
                for (k, a) in aux.iter_mut().take(3).enumerate() {
                    *a = u32::from_le_bytes([
                        b[96 + 4 * k],
                        b[97 + 4 * k],
                        b[98 + 4 * k],
                        b[99 + 4 * k],
                    ]);
                }
                const KMASK1: u32 = 0x0303_0303;
                const KMASK2: u32 = 0x0f0f_0f0f;
                let tmp = aux[2];
                aux[2] = ((aux[0] >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4);
                aux[3] = ((aux[1] >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4);
                aux[0] = (aux[0] & KMASK2) | ((tmp & KMASK1) << 4);
                aux[1] = (aux[1] & KMASK2) | (((tmp >> 2) & KMASK1) << 4);
                let mut scales = [0i8; 16];
                for (k, a) in aux.iter().enumerate() {
                    for (i, byte) in a.to_le_bytes().iter().enumerate() {
                        scales[4 * k + i] = *byte as i8;
                    }
                }
                let mut is = 0;
                let mut y = 0;
                let mut mask = 1u8;
                for n in 0..2 {
                    let q = &qs[n * 32..n * 32 + 32];
                    for j in 0..4 {
                        let shift = 2 * j;
                        for half in 0..2 {
                            sc[is] = d_all * (scales[is] as i32 - 32) as f32;
                            for l in 0..16 {
                                let lo = (q[l + 16 * half] >> shift) & 3;
                                let high = if hm[l + 16 * half] & mask != 0 { 4 } else { 0 };
                                u[y] = lo + high;
                                y += 1;
                            }
                            is += 1;
                        }
                        mask <<= 1;
                    }
                }
            }
            BlockType::Q4_K | BlockType::Q5_K => {
                // d, dmin, scales[12], (qh[32] for Q5_K), qs[128]
                let (d, dmin) = (half_at(b, 0), half_at(b, 2));
                let scales = &b[4..16];
                for k in 0..8 {
                    let (s, m) = scale_min_k4(k, scales);
                    let (d1, m1) = (d * s as f32, dmin * m as f32);
                    sc[2 * k..2 * k + 2].fill(d1);
                    off[2 * k..2 * k + 2].fill(-m1);
                }
                // Fixed-length loops without branches, so that they vectorise: per 32 bytes
                // of nibbles, 32 low values then 32 high ones.
                let ql = if self == BlockType::Q5_K {
                    &b[48..176]
                } else {
                    &b[16..144]
                };
                for (q, u) in ql.chunks_exact(32).zip(u.chunks_exact_mut(64)) {
                    let (lo, hi) = u.split_at_mut(32);
                    for l in 0..32 {
                        lo[l] = q[l] & 0xF;
                        hi[l] = q[l] >> 4;
                    }
                }
                if self == BlockType::Q5_K {
                    let qh = &b[16..48];
                    for (j, u) in u.chunks_exact_mut(32).enumerate() {
                        for l in 0..32 {
                            u[l] |= ((qh[l] >> j) & 1) << 4;
                        }
                    }
                }
            }
            BlockType::Q6_K => {
                // ql[128], qh[64], scales[16] (i8), d
                let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
                let d = half_at(b, 208);
                for n in 0..2 {
                    let (ql, qh) = (&ql[n * 64..n * 64 + 64], &qh[n * 32..n * 32 + 32]);
                    let y = &mut u[n * 128..n * 128 + 128];
                    for l in 0..32 {
                        y[l] = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
                        y[l + 32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
                        y[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                        y[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
                    }
                    for k in 0..8 {
                        sc[n * 8 + k] = d * scales[n * 8 + k] as i8 as f32;
                    }
                }
            }
        }
    }
}

/// One row of `ty` blocks as f32, equal to ggml's `dequantize_row_*`.
pub fn dequantize_row(ty: BlockType, row: &[u8], out: &mut [f32]) {
    let cols = out.len();
    assert_eq!(row.len(), ty.row_bytes(cols), "row bytes");
    let group = ty.group();
    let mut u = vec![0u8; cols];
    let mut sc = vec![0.0f32; cols / group];
    let mut off = vec![0.0f32; cols / group];
    ty.decode_row(row, &mut u, &mut sc, &mut off);
    let z = ty.zero_point();
    let has_min = ty.has_min();
    for (i, (o, &v)) in out.iter_mut().zip(&u).enumerate() {
        let g = i / group;
        let q = (v as i32 - z) as f32;
        // `d·q − m` as the reference writes it: a separate multiply and add, not fused.
        *o = if has_min {
            sc[g] * q + off[g]
        } else {
            sc[g] * q
        };
    }
}
