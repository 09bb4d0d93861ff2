//! GGML's block-quantised weights multiplied by int8-quantised activations, as llama.cpp
//! computes them: each activation row is quantised per block (Q8_K, one scale per 256 values,
//! for the K-quants; Q8_0, one fp16 scale per 32, for the others), the products are integer
//! dot products, and one float multiply per weight sub-block applies both scales.
//!
//! The weights stay in their blocks (the caller hands us bytes, usually memory-mapped from
//! the file). A product decodes a tile of weight rows once into a common form, unsigned
//! 8-bit values `u` with a float scale `s` and offset `m` per group of `G` values (the weight
//! is `s·(u − z) + m`, `z` a per-type zero point), then sweeps every activation row across
//! the tile. So prompt processing (many rows) pays the unpacking once per tile, like a GEMM.
//!
//! Inside a chunk of 16 groups the values are stored interleaved: the 4 bytes at lane `g` of
//! the `r`-th 64-byte register are values `4r..4r+4` of group `g`. One `vpdpbusd` per register
//! then leaves each 32-bit lane holding its own group's sum, with no horizontal shuffles.
//! The scalar, AVX2 and AVX-512 VNNI kernels compute the same integer sums and the same float
//! operations in the same order, so their results are bit for bit equal.

mod blocks;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use blocks::{dequantize_row, BlockType};

use rayon::prelude::*;

/// Groups per chunk: one 32-bit lane each in a 512-bit register.
const LANES: usize = 16;
/// Weight rows decoded together and swept by each activation row.
const TILE: usize = 8;

/// Which integer kernel runs the products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantKernel {
    Scalar,
    /// `vpmaddubsw` / `vpmaddwd` on 256-bit registers.
    Avx2,
    /// `vpdpbusd` on 512-bit registers.
    Avx512Vnni,
}

impl QuantKernel {
    /// The best kernel this CPU has, under the `LMCOMPARE_SIMD` cap (`avx512` allows VNNI).
    pub fn detect() -> QuantKernel {
        let level = crate::simd_level();
        if level >= crate::SimdLevel::Avx512 && QuantKernel::Avx512Vnni.available() {
            return QuantKernel::Avx512Vnni;
        }
        if level >= crate::SimdLevel::Avx2 && QuantKernel::Avx2.available() {
            return QuantKernel::Avx2;
        }
        QuantKernel::Scalar
    }

    /// [`QuantKernel::detect`] once per process (what the models use).
    pub fn current() -> QuantKernel {
        static KERNEL: std::sync::OnceLock<QuantKernel> = std::sync::OnceLock::new();
        *KERNEL.get_or_init(QuantKernel::detect)
    }

    /// Whether this CPU can run the kernel.
    pub fn available(self) -> bool {
        match self {
            QuantKernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            QuantKernel::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            QuantKernel::Avx512Vnni => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            QuantKernel::Scalar => "scalar",
            QuantKernel::Avx2 => "avx2",
            QuantKernel::Avx512Vnni => "avx512-vnni",
        }
    }
}

/// A matrix of `rows` weight rows (a linear layer's outputs) of `cols` values each, in
/// consecutive blocks of `ty`.
#[derive(Clone, Copy)]
pub struct QuantMatrix<'a> {
    pub ty: BlockType,
    pub data: &'a [u8],
    pub rows: usize,
    pub cols: usize,
    /// Q8_0 blocks that share one scale per row ([`quantize_q8_0_weights_per_row`]): the
    /// products then accumulate in integers over the whole row, with one float multiply at
    /// the end, against activations quantised per row too.
    pub per_row: bool,
}

impl<'a> QuantMatrix<'a> {
    /// Checks that `data` holds exactly `rows × cols` values of `ty`.
    pub fn new(
        ty: BlockType,
        data: &'a [u8],
        rows: usize,
        cols: usize,
    ) -> Result<QuantMatrix<'a>, String> {
        if !cols.is_multiple_of(ty.block_values()) {
            return Err(format!(
                "rows of {cols} values cannot be stored as {} (blocks of {})",
                ty.name(),
                ty.block_values()
            ));
        }
        let want = rows * ty.row_bytes(cols);
        if data.len() != want {
            return Err(format!(
                "{rows}×{cols} values of {} take {want} bytes, found {}",
                ty.name(),
                data.len()
            ));
        }
        Ok(QuantMatrix {
            ty,
            data,
            rows,
            cols,
            per_row: false,
        })
    }

    pub fn row(&self, r: usize) -> &'a [u8] {
        let n = self.ty.row_bytes(self.cols);
        &self.data[r * n..(r + 1) * n]
    }
}

/// Values per group: one scale per group, one 32-bit lane per group.
pub(crate) const GROUP: usize = 16;

/// How a row of `groups` groups lies in chunks of 16 groups (256 values, four 64-byte
/// registers). A last chunk of at most 8 groups is a half chunk of two registers: value
/// `4r + b` (r < 2) of group `g` at byte `64r + 4g + b`, value `8 + 4r + b` at byte
/// `64r + 4(8 + g) + b`; adding a register's upper 8 lanes to its lower 8 then gives each
/// group's sum, so 640-value rows (2.5 chunks) waste nothing. A last chunk of 9 to 15 groups
/// is padded to a full one with zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub groups: usize,
    /// Groups with a scale slot: 16 per chunk, the half chunk's included.
    pub padded_groups: usize,
    /// Full (possibly zero-padded) chunks, then maybe one half chunk.
    pub full_chunks: usize,
    pub half: bool,
    /// Bytes of one row's values.
    pub row_bytes: usize,
}

impl Layout {
    pub(crate) fn of(cols: usize) -> Layout {
        let groups = cols / GROUP;
        let rem = groups % LANES;
        let half = rem > 0 && rem <= LANES / 2;
        let full_chunks = if half {
            groups / LANES
        } else {
            groups.div_ceil(LANES)
        };
        Layout {
            groups,
            padded_groups: groups.div_ceil(LANES) * LANES,
            full_chunks,
            half,
            row_bytes: full_chunks * LANES * GROUP + if half { 2 * 64 } else { 0 },
        }
    }

    /// The byte of natural value `e` in a row.
    pub(crate) fn position(&self, e: usize) -> usize {
        let (g, i) = (e / GROUP, e % GROUP);
        let (c, lane) = (g / LANES, g % LANES);
        let base = c * LANES * GROUP;
        if self.half && c == self.full_chunks {
            let (lane, i) = if i < 8 { (lane, i) } else { (lane + 8, i - 8) };
            base + (i / 4) * 64 + lane * 4 + i % 4
        } else {
            base + (i / 4) * 64 + lane * 4 + i % 4
        }
    }
}

/// Activation rows quantised for products with one block type, in the interleaved layout
/// (the padding is zero and adds nothing).
pub struct QuantizedRows {
    rows: usize,
    layout: Layout,
    /// What they were quantised for: the weights' activation blocks and zero point.
    kind: ActivationBlocks,
    zero_point: i32,
    /// Per row, when quantised with one scale per row: the scale and z·Σq over the row.
    row_scale: Option<Vec<f32>>,
    row_zero: Vec<i32>,
    q: Vec<i8>,
    /// Per (padded) group: the activation scale, scale × Σq (for weight offsets), and z·Σq
    /// (the weights' zero point times the group's sum, subtracted from the integer sums).
    scale: Vec<f32>,
    scaled_sum: Vec<f32>,
    zero_sum: Vec<i32>,
}

/// How llama.cpp quantises activations for a weight type (`vec_dot_type`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ActivationBlocks {
    /// One f32 scale per 256 values, `q = min(127, round(−127·x/max))` (`quantize_row_q8_K`).
    Q8K,
    /// One fp16 scale per 32 values, `q = round(x·127/amax)` (`quantize_row_q8_0`).
    Q80,
}

impl QuantizedRows {
    /// `x` is `rows × cols` row-major; `cols` must be a multiple of the type's block size.
    pub fn quantize(x: &[f32], rows: usize, cols: usize, ty: BlockType) -> QuantizedRows {
        assert_eq!(x.len(), rows * cols, "activation shape");
        assert_eq!(cols % ty.block_values(), 0, "activation row length");
        let layout = Layout::of(cols);
        let (groups, pg) = (layout.groups, layout.padded_groups);
        let z = ty.zero_point();
        let mut q = vec![0i8; rows * layout.row_bytes];
        let mut scale = vec![0.0f32; rows * pg];
        let mut scaled_sum = vec![0.0f32; rows * pg];
        let mut zero_sum = vec![0i32; rows * pg];
        let kind = ty.activation_blocks();
        if rows > 0 && cols > 0 {
            q.par_chunks_mut(layout.row_bytes)
                .zip(scale.par_chunks_mut(pg))
                .zip(scaled_sum.par_chunks_mut(pg))
                .zip(zero_sum.par_chunks_mut(pg))
                .zip(x.par_chunks(cols))
                .for_each_init(
                    || (vec![0i8; cols], vec![0.0f32; cols / 32]),
                    |(natural, block_scale), ((((q, sc), ss), zs), x)| {
                        quantize_row(kind, x, natural, block_scale);
                        for g in 0..groups {
                            let vals = &natural[g * GROUP..(g + 1) * GROUP];
                            let s: i32 = vals.iter().map(|&v| v as i32).sum();
                            sc[g] = block_scale[g * GROUP / 32];
                            ss[g] = sc[g] * s as f32;
                            zs[g] = z * s;
                        }
                        interleave_bytes(QuantKernel::current(), natural, q, &layout);
                    },
                );
        }
        QuantizedRows {
            rows,
            layout,
            kind,
            zero_point: z,
            row_scale: None,
            row_zero: Vec::new(),
            q,
            scale,
            scaled_sum,
            zero_sum,
        }
    }
}

/// Round half to even, as `nearest_int` in ggml does it (exact for |x| < 2²²), without the
/// libm call `round_ties_even` becomes on a baseline x86-64 build.
#[inline(always)]
fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

impl QuantizedRows {
    /// Activation rows with one scale per row (`amax/127`, `q = round(x·127/amax)`), for
    /// [`QuantMatrix::per_row`] weights (dynamic per-token quantisation).
    pub fn quantize_per_row(x: &[f32], rows: usize, cols: usize) -> QuantizedRows {
        assert_eq!(x.len(), rows * cols, "activation shape");
        assert_eq!(cols % 32, 0, "activation row length");
        let layout = Layout::of(cols);
        let z = BlockType::Q8_0.zero_point();
        let mut q = vec![0i8; rows * layout.row_bytes];
        let mut scale = vec![0.0f32; rows];
        let mut row_zero = vec![0i32; rows];
        if rows > 0 && cols > 0 {
            q.par_chunks_mut(layout.row_bytes)
                .zip(scale.par_iter_mut())
                .zip(row_zero.par_iter_mut())
                .zip(x.par_chunks(cols))
                .for_each_init(
                    || vec![0i8; cols],
                    |natural, (((q, sc), zs), x)| {
                        let (scale, sum) = quantize_row_per_row(x, natural);
                        *sc = scale;
                        *zs = z * sum;
                        interleave_bytes(QuantKernel::current(), natural, q, &layout);
                    },
                );
        }
        QuantizedRows {
            rows,
            layout,
            kind: ActivationBlocks::Q80,
            zero_point: z,
            row_scale: Some(scale),
            row_zero,
            q,
            scale: Vec::new(),
            scaled_sum: Vec::new(),
            zero_sum: Vec::new(),
        }
    }
}

/// Q8_K: the value of largest magnitude maps to −127 (so the range is symmetric).
#[inline(always)]
fn quantize_q8k(x: &[f32], q: &mut [i8]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        q.fill(0);
        return 0.0;
    }
    let iscale = -127.0 / max;
    for (o, &v) in q.iter_mut().zip(x) {
        *o = nearest_int(iscale * v).min(127) as i8;
    }
    1.0 / iscale
}

/// Q8_0 as llama.cpp's AVX2 quantiser does it: `x · 127/amax` rounded half to even, the scale
/// `amax/127` stored (and used) as fp16.
#[inline(always)]
fn quantize_q80(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = half::f16::from_f32(amax / 127.0).to_f32();
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    for (o, &v) in q.iter_mut().zip(x) {
        *o = nearest_int(v * id) as i8;
    }
    d
}

/// f32 weights (`rows × cols`, `cols` a multiple of 32) as Q8_0 blocks, the way ggml's
/// `quantize_row_q8_0_ref` writes them: per 32 values `d = amax/127` (stored as fp16) and
/// `q = round(x/d)`. What dynamic int8 quantisation of an f32 model's linear layers uses.
pub fn quantize_q8_0_weights(w: &[f32], cols: usize) -> Vec<u8> {
    assert_eq!(cols % 32, 0, "Q8_0 rows are whole blocks of 32");
    let mut out = Vec::with_capacity(w.len() / 32 * 34);
    for block in w.chunks(32) {
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
        out.extend(block.iter().map(|&x| (x * id).round() as i8 as u8));
    }
    out
}

/// f32 weights (`rows × cols`) as Q8_0 blocks whose scales are one per row (`d = amax/127`
/// of the whole row, stored fp16 in every block; `q = round(x/d)`): per-output-channel int8,
/// for [`QuantMatrix::per_row`] products.
pub fn quantize_q8_0_weights_per_row(w: &[f32], cols: usize) -> Vec<u8> {
    assert_eq!(cols % 32, 0, "Q8_0 rows are whole blocks of 32");
    let mut out = Vec::with_capacity(w.len() / 32 * 34);
    for row in w.chunks(cols) {
        let amax = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = half::f16::from_f32(amax / 127.0);
        let id = if d.to_f32() != 0.0 {
            1.0 / d.to_f32()
        } else {
            0.0
        };
        for block in row.chunks(32) {
            out.extend_from_slice(&d.to_le_bytes());
            out.extend(
                block
                    .iter()
                    .map(|&x| (x * id).round().clamp(-127.0, 127.0) as i8 as u8),
            );
        }
    }
    out
}

/// A natural-order row into the interleaved layout ([`Layout`]): in a full chunk each
/// 4-byte word moves from `16 × 4` to `4 × 16` order. `dst` is the row's bytes, zero past the
/// real values.
#[inline(always)]
fn interleave_row<T: Copy>(src: &[T], dst: &mut [T], layout: &Layout) {
    let chunk = LANES * GROUP;
    for (c, src) in src.chunks(chunk).enumerate() {
        let base = c * chunk;
        let half = layout.half && c == layout.full_chunks;
        for (g, vals) in src.chunks_exact(GROUP).enumerate() {
            for r in 0..4 {
                let (reg, lane) = if half {
                    (r % 2, g + 8 * (r / 2))
                } else {
                    (r, g)
                };
                let at = base + reg * 64 + lane * 4;
                dst[at..at + 4].copy_from_slice(&vals[r * 4..r * 4 + 4]);
            }
        }
    }
}

crate::multiversion! {
    /// One weight row decoded in natural order (compiled per instruction set: the unpacking
    /// loops vectorise).
    fn decode_natural(
        ty: BlockType,
        row: &[u8],
        natural: &mut [u8],
        scale: &mut [f32],
        offset: &mut [f32]
    ) {
        ty.decode_row(row, natural, scale, offset);
    }
}

/// A row of bytes (decoded weights, quantised activations) interleaved with the kernel's
/// instruction set: the transposes are a handful of shuffles per chunk, where the scalar
/// loop moves one word at a time. All three place every byte alike.
fn interleave_bytes<T: Copy + Default>(
    kernel: QuantKernel,
    natural: &[T],
    u: &mut [T],
    layout: &Layout,
) {
    match kernel {
        // SAFETY: callers pass an available kernel (`quant_matmul_quantized` checks it;
        // `current` is one), so its instruction set is there; `u` is a whole row.
        #[cfg(target_arch = "x86_64")]
        QuantKernel::Avx512Vnni => unsafe { x86::interleave_row_avx512(natural, u, layout) },
        #[cfg(target_arch = "x86_64")]
        QuantKernel::Avx2 => unsafe { x86::interleave_row_avx2(natural, u, layout) },
        _ => interleave_row(natural, u, layout),
    }
}

crate::multiversion! {
    /// One activation row quantised with one scale, `amax/127` (returned with Σq); compiled
    /// per instruction set so the max, the rounding and the sum vectorise.
    fn quantize_row_per_row(x: &[f32], natural: &mut [i8]) -> (f32, i32) {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        for (o, &v) in natural.iter_mut().zip(x) {
            *o = nearest_int(v * id) as i8;
        }
        (amax / 127.0, natural.iter().map(|&v| v as i32).sum::<i32>())
    }
}

crate::multiversion! {
    /// One activation row quantised (compiled per instruction set).
    fn quantize_row(
        kind: ActivationBlocks,
        x: &[f32],
        natural: &mut [i8],
        block_scale: &mut [f32]
    ) {
        match kind {
            ActivationBlocks::Q8K => {
                for (b, (xb, qb)) in x.chunks(256).zip(natural.chunks_mut(256)).enumerate() {
                    let d = quantize_q8k(xb, qb);
                    block_scale[b * 8..b * 8 + 8].fill(d);
                }
            }
            ActivationBlocks::Q80 => {
                for (b, (xb, qb)) in x.chunks(32).zip(natural.chunks_mut(32)).enumerate() {
                    block_scale[b] = quantize_q80(xb, qb);
                }
            }
        }
    }
}

/// Weight rows decoded into the common form, for one tile, laid out like [`QuantizedRows`].
struct DecodedTile {
    /// Per row: the row's unsigned values, interleaved.
    u: Vec<u8>,
    /// Per row and (padded) group.
    scale: Vec<f32>,
    offset: Vec<f32>,
    rows: usize,
}

impl DecodedTile {
    fn new(layout: &Layout) -> DecodedTile {
        DecodedTile {
            u: vec![0; TILE * layout.row_bytes],
            scale: vec![0.0; TILE * layout.padded_groups],
            offset: vec![0.0; TILE * layout.padded_groups],
            rows: 0,
        }
    }

    fn fill(
        &mut self,
        kernel: QuantKernel,
        w: &QuantMatrix<'_>,
        first: usize,
        layout: &Layout,
        natural: &mut [u8],
        prefetch: bool,
    ) {
        let (groups, pg, rb) = (layout.groups, layout.padded_groups, layout.row_bytes);
        self.rows = TILE.min(w.rows - first);
        // A short last tile: the kernels always sweep TILE rows, so the rest must add nothing.
        if self.rows < TILE {
            self.u[self.rows * rb..].fill(0);
            self.scale[self.rows * pg..].fill(0.0);
            self.offset[self.rows * pg..].fill(0.0);
        }
        for t in 0..self.rows {
            if prefetch {
                prefetch_row(w, first + TILE + t);
            }
            decode_natural(
                w.ty,
                w.row(first + t),
                natural,
                &mut self.scale[t * pg..t * pg + groups],
                &mut self.offset[t * pg..t * pg + groups],
            );
            interleave_bytes(kernel, natural, &mut self.u[t * rb..(t + 1) * rb], layout);
        }
    }
}

/// Activation rows up to which products prefetch the weights.
const PREFETCH_ROWS: usize = 8;

/// Asks for weight row `r`'s bytes a tile ahead of its decoding: at a few activation rows the
/// products stream the matrix from memory, faster than the hardware prefetcher alone fetches
/// it across these odd-sized blocks.
#[inline(always)]
fn prefetch_row(w: &QuantMatrix<'_>, r: usize) {
    #[cfg(target_arch = "x86_64")]
    if r < w.rows {
        let row = w.row(r);
        for at in (0..row.len()).step_by(64) {
            // SAFETY: a prefetch of an address inside the row; it never faults.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    row.as_ptr().add(at) as *const i8,
                )
            };
        }
    }
}

/// `out[m, col + n] = Σ_k x[m, k] · w[n, k]` for every activation row `m` and weight row `n`,
/// `out` row-major with `out_stride` floats per row. The activations are quantised here.
pub fn quant_matmul(
    kernel: QuantKernel,
    x: &[f32],
    rows: usize,
    w: &QuantMatrix<'_>,
    out: &mut [f32],
    out_stride: usize,
    col: usize,
) {
    let acts = if w.per_row {
        QuantizedRows::quantize_per_row(x, rows, w.cols)
    } else {
        QuantizedRows::quantize(x, rows, w.cols, w.ty)
    };
    quant_matmul_quantized(kernel, &acts, w, out, out_stride, col);
}

/// [`quant_matmul`] with the activations already quantised for `w`'s type.
pub fn quant_matmul_quantized(
    kernel: QuantKernel,
    acts: &QuantizedRows,
    w: &QuantMatrix<'_>,
    out: &mut [f32],
    out_stride: usize,
    col: usize,
) {
    assert!(
        kernel.available(),
        "{} is not available on this CPU",
        kernel.name()
    );
    assert!(
        acts.kind == w.ty.activation_blocks()
            && acts.zero_point == w.ty.zero_point()
            && acts.row_scale.is_some() == w.per_row
            && (!w.per_row || w.ty == BlockType::Q8_0),
        "activations quantised for another type"
    );
    assert_eq!(
        acts.layout.groups * GROUP,
        w.cols,
        "inner dimensions differ"
    );
    assert!(col + w.rows <= out_stride, "output columns");
    if acts.rows == 0 || w.rows == 0 {
        return;
    }
    assert!(
        out.len() >= (acts.rows - 1) * out_stride + col + w.rows,
        "output rows"
    );
    let tiles = w.rows.div_ceil(TILE);
    // Enough tiles per task to amortise the task, few enough to balance across cores.
    let per_task = (tiles / (rayon::current_num_threads() * 8)).max(1);
    let out_ptr = SharedOut(out.as_mut_ptr());
    let has_min = w.ty.has_min();
    // At a few rows the product streams the weights and waits on memory; at many, the
    // prefetches only take issue slots from the sums (5% of a scoring run).
    let prefetch = acts.rows <= PREFETCH_ROWS;
    let wide = w.ty.zero_point() > 64;
    (0..tiles.div_ceil(per_task))
        .into_par_iter()
        .for_each(|task| {
            let out_ptr = &out_ptr;
            let mut results = [[0.0f32; TILE]; 4];
            let (first, last) = (task * per_task, ((task + 1) * per_task).min(tiles));
            let mut scratch = SCRATCH.with(|s| s.take());
            let (natural, block) = scratch.for_layout(&acts.layout);
            // A block of tiles decoded together, then every activation row swept across the
            // whole block: each output row's columns are written contiguously while its cache
            // lines are hot, and each activation row is read once per block.
            for start in (first..last).step_by(BLOCK_TILES) {
                let end = (start + BLOCK_TILES).min(last);
                let block = &mut block[..end - start];
                for (k, tile) in block.iter_mut().enumerate() {
                    tile.fill(
                        kernel,
                        w,
                        (start + k) * TILE,
                        &acts.layout,
                        natural,
                        prefetch,
                    );
                }
                let mut m = 0;
                while m < acts.rows {
                    let count = (acts.rows - m).min(4);
                    for (k, tile) in block.iter().enumerate() {
                        dot_tiles(kernel, acts, m, count, tile, has_min, wide, &mut results);
                        let at = col + (start + k) * TILE;
                        for (i, results) in results.iter().enumerate().take(count) {
                            // SAFETY: every task writes only the columns of its own tiles,
                            // and the row is inside `out` (checked above).
                            let dst = unsafe {
                                std::slice::from_raw_parts_mut(
                                    out_ptr.0.add((m + i) * out_stride + at),
                                    tile.rows,
                                )
                            };
                            // A whole tile as a fixed-size copy (a call to memmove per
                            // tile and row was a sixth of an encoder's time).
                            if tile.rows == TILE {
                                let dst: &mut [f32; TILE] = dst.try_into().expect("a tile");
                                *dst = *results;
                            } else {
                                dst.copy_from_slice(&results[..tile.rows]);
                            }
                        }
                    }
                    m += count;
                }
            }
            SCRATCH.with(|s| s.set(scratch));
        });
}

/// A worker's decoded tiles, kept between products: a generation step multiplies one row
/// by every matrix, where allocating and zeroing the tiles would cost more than the product.
/// (Tasks never wait inside a product, so one worker never holds two.)
#[derive(Default)]
struct Scratch {
    layout: Option<Layout>,
    natural: Vec<u8>,
    block: Vec<DecodedTile>,
}

thread_local! {
    static SCRATCH: std::cell::Cell<Scratch> = std::cell::Cell::new(Scratch::default());
}

impl Scratch {
    /// Remade for another layout: the tiles' padding must be zero and the sizes must fit.
    fn for_layout(&mut self, layout: &Layout) -> (&mut [u8], &mut [DecodedTile]) {
        if self.layout != Some(*layout) {
            self.block = (0..BLOCK_TILES).map(|_| DecodedTile::new(layout)).collect();
            self.natural = vec![0; layout.groups * GROUP];
            self.layout = Some(*layout);
        }
        (&mut self.natural, &mut self.block)
    }
}

/// Tiles decoded and swept together (8 weight rows each: about 10 KB decoded per tile for
/// 640-wide rows, so a block stays in L2).
const BLOCK_TILES: usize = 16;

struct SharedOut(*mut f32);
// SAFETY: tasks write disjoint elements (see the use).
unsafe impl Sync for SharedOut {}
unsafe impl Send for SharedOut {}

/// Rows `m..m + count` (`count ≤ 4`) against the tile.
#[allow(clippy::too_many_arguments)]
fn dot_tiles(
    kernel: QuantKernel,
    acts: &QuantizedRows,
    m: usize,
    count: usize,
    tile: &DecodedTile,
    has_min: bool,
    wide: bool,
    results: &mut [[f32; TILE]; 4],
) {
    if acts.row_scale.is_some() {
        return per_row_dot_tiles(kernel, acts, m, count, tile, results);
    }
    match kernel {
        #[cfg(target_arch = "x86_64")]
        QuantKernel::Avx512Vnni => {
            // Rows two at a time (each weight register loaded once for both), an odd one last.
            let mut i = 0;
            while i < count {
                // SAFETY: `quant_matmul_quantized` checked the CPU has the features; the
                // rows exist.
                unsafe {
                    if i + 2 <= count {
                        x86::vnni_dot_rows::<2, 4>(acts, m + i, tile, has_min, &mut results[i..]);
                        i += 2;
                    } else {
                        x86::vnni_dot_rows::<1, 8>(acts, m + i, tile, has_min, &mut results[i..]);
                        i += 1;
                    }
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        QuantKernel::Avx2 => {
            for (i, results) in results.iter_mut().enumerate().take(count) {
                // SAFETY: as above.
                unsafe { x86::avx2_dot_tile(acts, m + i, tile, has_min, wide, results) };
            }
        }
        _ => {
            let _ = wide;
            for (i, results) in results.iter_mut().enumerate().take(count) {
                scalar_dot_tile(acts, m + i, tile, has_min, results);
            }
        }
    }
}

/// Per-row products: integer sums over the whole row, minus z·Σq, times the two row scales.
fn per_row_dot_tiles(
    kernel: QuantKernel,
    acts: &QuantizedRows,
    m: usize,
    count: usize,
    tile: &DecodedTile,
    results: &mut [[f32; TILE]; 4],
) {
    let pg = acts.layout.padded_groups;
    let w_scale: [f32; TILE] = std::array::from_fn(|n| tile.scale[n * pg]);
    match kernel {
        #[cfg(target_arch = "x86_64")]
        QuantKernel::Avx512Vnni => {
            let mut i = 0;
            while i < count {
                // SAFETY: `quant_matmul_quantized` checked the CPU has the features and that
                // the activations have per-row scales.
                unsafe {
                    if i + 2 <= count {
                        x86::vnni_row_products::<2>(acts, m + i, tile, &w_scale, &mut results[i..]);
                        i += 2;
                    } else {
                        x86::vnni_row_products::<1>(acts, m + i, tile, &w_scale, &mut results[i..]);
                        i += 1;
                    }
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        QuantKernel::Avx2 => {
            for (i, results) in results.iter_mut().enumerate().take(count) {
                // SAFETY: as above.
                unsafe { x86::avx2_row_products(acts, m + i, tile, &w_scale, results) };
            }
        }
        _ => {
            let rb = acts.layout.row_bytes;
            let row_scale = acts.row_scale.as_deref().unwrap_or(&[]);
            for (i, results) in results.iter_mut().enumerate().take(count) {
                let q = &acts.q[(m + i) * rb..(m + i + 1) * rb];
                for (n, r) in results.iter_mut().enumerate() {
                    let u = &tile.u[n * rb..(n + 1) * rb];
                    let sum: i32 = u.iter().zip(q).map(|(&u, &q)| u as i32 * q as i32).sum();
                    *r = (sum - acts.row_zero[m + i]) as f32 * (w_scale[n] * row_scale[m + i]);
                }
            }
        }
    }
}

/// The lanes folded in the order the vector kernels fold them: halves, quarters, …
#[inline]
pub(crate) fn fold_lanes(mut acc: [f32; LANES]) -> f32 {
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            acc[i] += acc[i + width];
        }
        width /= 2;
    }
    acc[0]
}

fn scalar_dot_tile(
    acts: &QuantizedRows,
    m: usize,
    tile: &DecodedTile,
    has_min: bool,
    results: &mut [f32; TILE],
) {
    let layout = &acts.layout;
    let (pg, rb) = (layout.padded_groups, layout.row_bytes);
    let q = &acts.q[m * rb..(m + 1) * rb];
    let a_scale = &acts.scale[m * pg..(m + 1) * pg];
    let a_sum = &acts.scaled_sum[m * pg..(m + 1) * pg];
    let a_zero = &acts.zero_sum[m * pg..(m + 1) * pg];
    let chunks = layout.full_chunks + layout.half as usize;
    for (n, result) in results.iter_mut().enumerate().take(tile.rows) {
        let u = &tile.u[n * rb..(n + 1) * rb];
        let w_scale = &tile.scale[n * pg..(n + 1) * pg];
        let w_off = &tile.offset[n * pg..(n + 1) * pg];
        let mut acc = [0.0f32; LANES];
        for c in 0..chunks {
            // A half chunk's upper lanes hold its groups' second halves, not groups of their
            // own; their slots in the vector kernels add exactly zero.
            let lanes = if layout.half && c == layout.full_chunks {
                LANES / 2
            } else {
                LANES
            };
            for (lane, acc) in acc.iter_mut().enumerate().take(lanes) {
                let g = c * LANES + lane;
                let mut isum = 0i32;
                for i in 0..GROUP {
                    let p = layout.position(g * GROUP + i);
                    isum += u[p] as i32 * q[p] as i32;
                }
                isum -= a_zero[g];
                let s = w_scale[g] * a_scale[g];
                *acc = (isum as f32).mul_add(s, *acc);
                if has_min {
                    *acc = w_off[g].mul_add(a_sum[g], *acc);
                }
            }
        }
        *result = fold_lanes(acc);
    }
}

#[cfg(test)]
mod tests;
