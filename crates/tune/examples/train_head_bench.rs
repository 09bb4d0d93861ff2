//! The head-training loop of `bench/train_vs_pytorch.sh`: a BERT-shaped classification head
//! (dense + tanh + dropout 0.1 + linear) trained with AdamW (lr 1e-3, weight decay 0.01 on
//! every tensor, as torch's default param group), batch 32, reshuffled every epoch — the
//! same loop `bench/train_head_pytorch.py` runs in PyTorch. Prints one JSON line.
//!
//! `cargo run --release -p lmcompare-tune --example train_head_bench -- EMB LABELS DIM CLASSES EPOCHS BATCH REPEATS`

use std::time::Instant;

use lmcompare_tune::{
    ClassWeight, HeadActivation, HeadShape, HeadTrainer, HeadWeights, OptimizerKind, Schedule,
    TrainConfig,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 8 {
        return Err("usage: train_head_bench EMB LABELS DIM CLASSES EPOCHS BATCH REPEATS".into());
    }
    let emb = std::fs::read(&a[1])?;
    let lab = std::fs::read(&a[2])?;
    let dim: usize = a[3].parse()?;
    let classes: usize = a[4].parse()?;
    let epochs: usize = a[5].parse()?;
    let batch: usize = a[6].parse()?;
    let repeats: usize = a[7].parse()?;
    let x: Vec<f32> = emb
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let y: Vec<u32> = lab
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let n = y.len();
    let shape = HeadShape {
        input: dim,
        hidden: dim,
        classes,
        activation: HeadActivation::Tanh,
        input_dropout: false,
    };
    let cfg = TrainConfig {
        lr: 1e-3,
        batch_size: batch,
        epochs,
        optimizer: OptimizerKind::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            amsgrad: false,
        },
        weight_decay: 0.01,
        schedule: Schedule::Constant,
        dropout: 0.1,
        grad_clip: None,
        class_weight: ClassWeight::None,
        decay_biases: true,
    };
    let mut seconds = Vec::new();
    let mut final_loss = f64::NAN;
    for r in 0..repeats {
        let init = HeadWeights::init(&shape, None, 0.02, r as u64);
        let start = Instant::now();
        let mut t = HeadTrainer::new(&x, &y, (0..n).collect(), shape, init, cfg.clone(), r as u64)?;
        for _ in 0..epochs {
            final_loss = t.train_epoch().train_loss;
            t.end_epoch(None);
        }
        seconds.push(start.elapsed().as_secs_f64());
    }
    let mut sorted = seconds.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "peer": "lmcompare", "threads": 1, "seconds": seconds,
            "median_seconds": sorted[sorted.len() / 2], "final_loss": final_loss,
        })
    );
    Ok(())
}
