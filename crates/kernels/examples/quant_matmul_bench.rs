//! The integer kernels against the f32 GEMM on one layer's shapes (Gemma 3 270M's, a
//! packed batch of 870 rows; with 8 rows or fewer, the LM head too), each kernel this CPU has:
//!   cargo run --release -p lmcompare-kernels --example quant_matmul_bench [ROWS] [KERNEL]
//! Prints GMAC/s per product; RAYON_NUM_THREADS sets the threads.

use std::time::Instant;

use lmcompare_kernels::dense::{matmul, View};
use lmcompare_kernels::quant::{quant_matmul, BlockType, QuantKernel, QuantMatrix};

fn main() {
    let rows: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(870);
    // A kernel's name ("avx512-vnni", "avx2", "scalar") runs that one only (for profiling).
    let only = std::env::args().nth(2);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut shapes = vec![
        (BlockType::Q5_0, 2048, 640),
        (BlockType::Q8_0, 256, 640),
        (BlockType::Q4_K, 640, 2048),
        (BlockType::Q6_K, 640, 2048),
    ];
    // Generation steps (a few rows): the LM head over the 262,144-token vocabulary too.
    if rows <= 8 {
        shapes.push((BlockType::Q8_0, 262_144, 640));
    }
    for (ty, n, k) in shapes {
        let mut data: Vec<u8> = (0..n * ty.row_bytes(k)).map(|_| next() as u8).collect();
        // Finite fp16 scales: the first two bytes of every block (and Q6_K's last two).
        for b in data.chunks_exact_mut(ty.block_bytes()) {
            let at = if ty == BlockType::Q6_K { 208 } else { 0 };
            b[at..at + 2].copy_from_slice(&half_bits(0.01));
            if matches!(ty, BlockType::Q4_K) {
                b[2..4].copy_from_slice(&half_bits(0.01));
            }
        }
        let w = QuantMatrix::new(ty, &data, n, k).unwrap();
        let x: Vec<f32> = (0..rows * k)
            .map(|_| (next() % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let mut out = vec![0.0f32; rows * n];
        let macs = (rows * n * k) as f64;
        let mut line = format!("{}  {rows}×{k} · {k}×{n}:", ty.name());
        for kernel in [
            QuantKernel::Scalar,
            QuantKernel::Avx2,
            QuantKernel::Avx512Vnni,
        ] {
            let chosen = only.as_deref().is_none_or(|name| name == kernel.name());
            if !chosen || !kernel.available() || (kernel == QuantKernel::Scalar && rows > 64) {
                continue;
            }
            // Enough repetitions for a quarter of a second (a one-row product takes
            // microseconds), after one to warm the caches and the worker threads.
            quant_matmul(kernel, &x, rows, &w, &mut out, n, 0);
            let (t, mut reps) = (Instant::now(), 0);
            while reps < 5 || t.elapsed().as_secs_f64() < 0.25 {
                quant_matmul(kernel, &x, rows, &w, &mut out, n, 0);
                reps += 1;
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            line += &format!("  {} {:.1} GMAC/s", kernel.name(), macs / s / 1e9);
        }
        if n > 100_000 {
            println!("{line}");
            continue;
        }
        let wf: Vec<f32> = (0..k * n)
            .map(|_| (next() % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let t = Instant::now();
        for _ in 0..5 {
            matmul(
                &mut out,
                n,
                View {
                    data: &x,
                    rows,
                    cols: k,
                    row_stride: k,
                },
                View {
                    data: &wf,
                    rows: k,
                    cols: n,
                    row_stride: n,
                },
                false,
                true,
            );
        }
        let s = t.elapsed().as_secs_f64() / 5.0;
        line += &format!("  f32-gemm {:.1} GMAC/s", macs / s / 1e9);
        println!("{line}");
    }
}

fn half_bits(v: f32) -> [u8; 2] {
    // f32 → f16 for normal values in range (enough for a benchmark's scales).
    let b = v.to_bits();
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    let mant = (b >> 13) & 0x3ff;
    (((exp as u32) << 10 | mant) as u16).to_le_bytes()
}
