use super::*;

/// A deterministic generator (xorshift), so the tests need no rand dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Where a type's fp16 scales sit in its block.
fn half_fields(ty: BlockType) -> &'static [usize] {
    match ty {
        BlockType::Q4_0 | BlockType::Q5_0 | BlockType::Q8_0 => &[0],
        BlockType::Q4_1 | BlockType::Q5_1 | BlockType::Q4_K | BlockType::Q5_K => &[0, 2],
        BlockType::Q2_K => &[80, 82],
        BlockType::Q3_K => &[108],
        BlockType::Q6_K => &[208],
    }
}

/// Random blocks: every bit pattern of the quantised values and sub-block scales, with
/// finite fp16 scales of a realistic size.
fn random_matrix(ty: BlockType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let mut data: Vec<u8> = (0..rows * ty.row_bytes(cols))
        .map(|_| rng.next() as u8)
        .collect();
    for block in data.chunks_exact_mut(ty.block_bytes()) {
        for &at in half_fields(ty) {
            let v = half::f16::from_f32(rng.uniform() * 0.02);
            block[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    data
}

fn kernels() -> Vec<QuantKernel> {
    let all = [
        QuantKernel::Scalar,
        QuantKernel::Avx2,
        QuantKernel::Avx512Vnni,
    ];
    let have: Vec<QuantKernel> = all.into_iter().filter(|k| k.available()).collect();
    for k in all {
        if !k.available() {
            eprintln!("{} is not available on this CPU: not run", k.name());
        }
    }
    have
}

/// Shapes that cover full chunks, a short last chunk (32-value types with `cols` not a
/// multiple of 128), a partial tile and a single row.
const SHAPES: [(usize, usize, usize); 5] = [
    (5, 19, 512),
    (1, 8, 256),
    (3, 9, 768),
    (2, 3, 1280),
    (4, 17, 640),
];

#[test]
fn the_three_kernels_agree_bit_for_bit_on_every_type() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for ty in BlockType::ALL {
        for &(m, n, k) in &SHAPES {
            // K-quant rows are whole 256-value blocks; the 32-value types also get rows
            // ending in a short, padded chunk and (640) in a half chunk.
            let k = match (ty.block_values(), k) {
                (256, k) => k / 256 * 256,
                (_, 640) => 640,
                (_, k) => k - 32 * (k / 256 % 3),
            };
            let w = random_matrix(ty, n, k, &mut rng);
            let w = QuantMatrix::new(ty, &w, n, k).unwrap();
            let x: Vec<f32> = (0..m * k).map(|_| rng.uniform() * 3.0).collect();
            let mut outs = Vec::new();
            for kernel in kernels() {
                let mut out = vec![f32::NAN; m * (n + 2)];
                quant_matmul(kernel, &x, m, &w, &mut out, n + 2, 1);
                outs.push((kernel, out));
            }
            let (k0, first) = &outs[0];
            for (kernel, out) in &outs[1..] {
                for i in 0..m {
                    for j in 1..n + 1 {
                        let (a, b) = (first[i * (n + 2) + j], out[i * (n + 2) + j]);
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "{} {m}×{n}×{k}: {} {a} vs {} {b} at [{i},{j}]",
                            ty.name(),
                            k0.name(),
                            kernel.name()
                        );
                    }
                }
            }
        }
    }
}

/// The integer product equals the float product of the dequantised weights and the
/// dequantised activations (the quantisation is the only approximation): the difference is
/// float rounding, a few ulp of the terms' magnitude.
#[test]
fn the_product_equals_dequantised_weights_times_dequantised_activations() {
    let mut rng = Rng(42);
    // Widths one after another on the same worker threads, which keep their decoded tiles
    // between products: 32 and 64 values (like 96 and 128) share a row size but not a width.
    let widths = [512, 32, 64, 96, 128, 256, 32, 512];
    for (ty, k, kernel) in BlockType::ALL.into_iter().flat_map(|ty| {
        widths
            .into_iter()
            .filter(move |k| k % ty.block_values() == 0)
            .flat_map(move |k| kernels().into_iter().map(move |kernel| (ty, k, kernel)))
    }) {
        let (m, n) = (3, 11);
        let bytes = random_matrix(ty, n, k, &mut rng);
        let w = QuantMatrix::new(ty, &bytes, n, k).unwrap();
        let x: Vec<f32> = (0..m * k).map(|_| rng.uniform()).collect();
        let acts = QuantizedRows::quantize(&x, m, k, ty);
        let mut out = vec![0.0f32; m * n];
        quant_matmul_quantized(kernel, &acts, &w, &mut out, n, 0);
        let layout = acts.layout;
        for i in 0..m {
            // The activations as the kernel sees them, back in natural order.
            let mut a = vec![0.0f64; k];
            let row = &acts.q[i * layout.row_bytes..(i + 1) * layout.row_bytes];
            for (e, a) in a.iter_mut().enumerate() {
                let g = e / GROUP;
                *a = row[layout.position(e)] as f64
                    * acts.scale[i * layout.padded_groups + g] as f64;
            }
            for j in 0..n {
                let mut wr = vec![0.0f32; k];
                dequantize_row(ty, w.row(j), &mut wr);
                let exact: f64 = wr.iter().zip(&a).map(|(&w, &a)| w as f64 * a).sum();
                let scale: f64 = wr.iter().zip(&a).map(|(&w, &a)| (w as f64 * a).abs()).sum();
                let got = out[i * n + j] as f64;
                assert!(
                    (got - exact).abs() <= 1e-5 * scale + 1e-30,
                    "{} {k} {} [{i},{j}]: {got} vs {exact} (scale {scale})",
                    ty.name(),
                    kernel.name()
                );
            }
        }
    }
}

/// Against the exact f32 product the error is the activations' quantisation: each value is
/// off by at most half a step (scale/2), so |error| ≤ Σ|w|·scale/2.
#[test]
fn the_error_against_the_f32_product_is_within_half_a_quantisation_step() {
    let mut rng = Rng(7);
    for ty in BlockType::ALL {
        let (m, n, k) = (4, 6, 256);
        let bytes = random_matrix(ty, n, k, &mut rng);
        let w = QuantMatrix::new(ty, &bytes, n, k).unwrap();
        let x: Vec<f32> = (0..m * k).map(|_| rng.uniform()).collect();
        let mut out = vec![0.0f32; m * n];
        quant_matmul(QuantKernel::detect(), &x, m, &w, &mut out, n, 0);
        for i in 0..m {
            let xr = &x[i * k..(i + 1) * k];
            for j in 0..n {
                let mut wr = vec![0.0f32; k];
                dequantize_row(ty, w.row(j), &mut wr);
                let exact: f64 = wr.iter().zip(xr).map(|(&w, &x)| w as f64 * x as f64).sum();
                let block = if ty.block_values() == 256 { 256 } else { 32 };
                let bound: f64 = wr
                    .chunks(block)
                    .zip(xr.chunks(block))
                    .map(|(wb, xb)| {
                        let amax = xb.iter().fold(0.0f32, |a, v| a.max(v.abs())) as f64;
                        // Half a step, plus Q8_0's fp16 scale: |q| ≤ 127 times its rounding
                        // (2⁻¹¹ relative).
                        let step = amax / 127.0;
                        wb.iter().map(|w| w.abs() as f64).sum::<f64>()
                            * step
                            * (0.5 + 127.0 / 2048.0)
                    })
                    .sum();
                let got = out[i * n + j] as f64;
                assert!(
                    (got - exact).abs() <= bound * 1.01 + 1e-6,
                    "{} [{i},{j}]: {got} vs {exact}, bound {bound}",
                    ty.name()
                );
            }
        }
    }
}

#[test]
fn rows_are_laid_out_in_full_and_half_chunks() {
    // 640 values: two full chunks and a half chunk, nothing padded.
    let l = Layout::of(640);
    assert_eq!(
        (l.groups, l.full_chunks, l.half, l.row_bytes),
        (40, 2, true, 640)
    );
    assert_eq!(l.padded_groups, 48);
    // 13 groups in the last chunk: padded to a full one.
    let l = Layout::of(29 * 16);
    assert_eq!((l.full_chunks, l.half, l.row_bytes), (2, false, 512));
    for cols in [32, 96, 128, 256, 384, 640, 29 * 16, 2048, 2080] {
        let l = Layout::of(cols);
        let mut seen = vec![false; l.row_bytes];
        for e in 0..cols {
            let p = l.position(e);
            assert!(!seen[p], "{cols}: byte {p} used twice");
            seen[p] = true;
        }
        // Every kernel's interleave puts every value where position says, and zeros (the
        // padding) everywhere else.
        let src: Vec<u8> = (0..cols).map(|e| (e * 7 % 251) as u8 + 1).collect();
        for kernel in kernels() {
            let mut dst = vec![0u8; l.row_bytes];
            interleave_bytes(kernel, &src, &mut dst, &l);
            for (e, &v) in src.iter().enumerate() {
                assert_eq!(dst[l.position(e)], v, "{cols} {}: value {e}", kernel.name());
            }
            let filled = dst.iter().filter(|&&v| v != 0).count();
            assert_eq!(filled, cols, "{cols} {}: stray bytes", kernel.name());
        }
    }
}

#[test]
fn q8_activations_quantise_as_llama_cpp() {
    // Q8_K: the largest-magnitude value maps to −127 and the scale is its negative inverse.
    let x: Vec<f32> = (0..256).map(|i| (i as f32 - 100.0) / 10.0).collect();
    let mut q = vec![0i8; 256];
    let d = quantize_q8k(&x, &mut q);
    assert_eq!(q[255], -127);
    assert_eq!(d, 1.0 / (-127.0 / 15.5));
    assert_eq!(q[100], 0);
    // Q8_0: the scale is fp16, the values rounded half to even.
    let x: Vec<f32> = (0..32).map(|i| i as f32 * 0.5 - 8.0).collect();
    let mut q = vec![0i8; 32];
    let d = quantize_q80(&x, &mut q);
    assert_eq!(d, half::f16::from_f32(8.0 / 127.0).to_f32());
    assert_eq!(q[0], -127);
    assert!(q.iter().all(|&v| v != i8::MIN));
    let mut z = vec![1i8; 32];
    assert_eq!(quantize_q80(&[0.0; 32], &mut z), 0.0);
    assert!(z.iter().all(|&v| v == 0));
}

#[test]
fn a_matrix_of_the_wrong_size_is_refused_with_the_numbers() {
    let e = QuantMatrix::new(BlockType::Q4_K, &[0u8; 100], 2, 256)
        .err()
        .unwrap();
    assert_eq!(e, "2×256 values of Q4_K take 288 bytes, found 100");
    let e = QuantMatrix::new(BlockType::Q4_K, &[], 1, 100)
        .err()
        .unwrap();
    assert!(e.contains("blocks of 256"), "{e}");
}

#[test]
fn f32_weights_quantise_to_q8_0_within_half_a_step() {
    let mut rng = Rng(99);
    let (rows, cols) = (3, 96);
    let w: Vec<f32> = (0..rows * cols).map(|_| rng.uniform() * 0.3).collect();
    let bytes = quantize_q8_0_weights(&w, cols);
    let m = QuantMatrix::new(BlockType::Q8_0, &bytes, rows, cols).unwrap();
    for r in 0..rows {
        let mut back = vec![0.0f32; cols];
        dequantize_row(BlockType::Q8_0, m.row(r), &mut back);
        for (b, (x, y)) in w[r * cols..(r + 1) * cols]
            .chunks(32)
            .zip(back.chunks(32))
            .enumerate()
        {
            let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let step = amax / 127.0;
            for (x, y) in x.iter().zip(y) {
                // Half a step, plus the fp16 scale's rounding times |q| ≤ 127.
                assert!(
                    (x - y).abs() <= step * (0.5 + 127.0 / 2048.0),
                    "row {r} block {b}: {x} vs {y}"
                );
            }
        }
    }
}

/// Per-row int8 (the encoders' dynamic quantisation): the three kernels agree bit for bit,
/// and the product is the dequantised weights times the per-row dequantised activations.
#[test]
fn per_row_products_agree_across_kernels_and_equal_the_dequantised_product() {
    let mut rng = Rng(2024);
    for &(m, n, k) in &[
        (5usize, 19usize, 384usize),
        (2, 8, 640),
        (3, 11, 1536),
        (1, 3, 96),
    ] {
        let w: Vec<f32> = (0..n * k).map(|_| rng.uniform() * 0.2).collect();
        let bytes = quantize_q8_0_weights_per_row(&w, k);
        let mut qm = QuantMatrix::new(BlockType::Q8_0, &bytes, n, k).unwrap();
        qm.per_row = true;
        let x: Vec<f32> = (0..m * k).map(|_| rng.uniform() * 2.0).collect();
        let mut outs = Vec::new();
        for kernel in kernels() {
            let mut out = vec![0.0f32; m * n];
            quant_matmul(kernel, &x, m, &qm, &mut out, n, 0);
            outs.push((kernel, out));
        }
        for (kernel, out) in &outs[1..] {
            let same = out
                .iter()
                .zip(&outs[0].1)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{m}×{n}×{k}: {} differs from {}",
                kernel.name(),
                outs[0].0.name()
            );
        }
        let acts = QuantizedRows::quantize_per_row(&x, m, k);
        let sa = acts.row_scale.as_ref().unwrap();
        for (i, &sa) in sa.iter().enumerate() {
            for j in 0..n {
                let mut wr = vec![0.0f32; k];
                dequantize_row(BlockType::Q8_0, qm.row(j), &mut wr);
                let (mut exact, mut size) = (0.0f64, 0.0f64);
                for (e, &w) in wr.iter().enumerate() {
                    let a = acts.q[i * acts.layout.row_bytes + acts.layout.position(e)] as f64
                        * sa as f64;
                    exact += w as f64 * a;
                    size += (w as f64 * a).abs();
                }
                let got = outs[0].1[i * n + j] as f64;
                assert!(
                    (got - exact).abs() <= 1e-5 * size,
                    "[{i},{j}] {got} vs {exact}"
                );
            }
        }
    }
}

#[test]
fn fp16_scales_convert_exactly() {
    for h in 0..=u16::MAX {
        let want = half::f16::from_bits(h).to_f32();
        let got = blocks::half_at(&h.to_le_bytes(), 0);
        if want.is_nan() {
            assert!(got.is_nan(), "{h:#06x}");
        } else {
            assert_eq!(got.to_bits(), want.to_bits(), "{h:#06x}");
        }
    }
}
