//! Optimisers, schedules and the head's training loop against PyTorch: the fixtures come
//! from `scripts/gen_tune_fixtures.py` (torch, float32, CPU) and are committed, so these
//! tests need no Python.

use lmcompare_tune::{
    ClassWeight, HeadActivation, HeadShape, HeadTrainer, HeadWeights, LrScheduler, Optimizer,
    OptimizerKind, PlateauOptions, Schedule, TrainConfig,
};
use serde_json::Value;

fn fixtures() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/torch_optim.json"
    ))
    .expect("committed fixture");
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn flat(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().flat_map(floats).collect()
}

fn optimizer_kind(name: &str, o: &Value) -> OptimizerKind {
    let f = |k: &str, d: f64| o[k].as_f64().unwrap_or(d);
    match name {
        "sgd" => OptimizerKind::Sgd {
            momentum: f("momentum", 0.0),
            dampening: f("dampening", 0.0),
            nesterov: o["nesterov"].as_bool().unwrap_or(false),
        },
        "adam" | "adamw" => {
            let betas = o["betas"].as_array().unwrap();
            let (beta1, beta2) = (betas[0].as_f64().unwrap(), betas[1].as_f64().unwrap());
            let (eps, amsgrad) = (f("eps", 1e-8), o["amsgrad"].as_bool().unwrap_or(false));
            if name == "adam" {
                OptimizerKind::Adam {
                    beta1,
                    beta2,
                    eps,
                    amsgrad,
                }
            } else {
                OptimizerKind::AdamW {
                    beta1,
                    beta2,
                    eps,
                    amsgrad,
                }
            }
        }
        other => panic!("unknown optimizer {other}"),
    }
}

#[test]
fn optimizer_trajectories_match_torch_to_1e6() {
    let fx = fixtures();
    let cases = fx["optimizers"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let o = &case["options"];
        let kind = optimizer_kind(case["optimizer"].as_str().unwrap(), o);
        let lr = o["lr"].as_f64().unwrap();
        let wd = o["weight_decay"].as_f64().unwrap_or(0.0);
        let mut opt = Optimizer::new(kind, wd, vec![true]);
        let mut params = vec![floats(&case["initial"])];
        let grads = case["grads"].as_array().unwrap();
        let expected = case["params"].as_array().unwrap();
        assert_eq!(grads.len(), expected.len());
        for (step, (g, want)) in grads.iter().zip(expected).enumerate() {
            opt.step(&mut params, &[floats(g)], lr);
            for (i, (got, want)) in params[0].iter().zip(floats(want)).enumerate() {
                assert!(
                    (got - want).abs() <= 1e-6,
                    "{name}: step {step} param {i}: {got} vs torch {want}"
                );
            }
        }
    }
}

fn schedule_of(kind: &str, o: &Value) -> (Schedule, Option<usize>) {
    let f = |k: &str| o[k].as_f64().unwrap();
    let u = |k: &str| o[k].as_u64().unwrap() as usize;
    match kind {
        "step" => (
            Schedule::Step {
                step_size: u("step_size"),
                gamma: f("gamma"),
            },
            None,
        ),
        "multistep" => (
            Schedule::MultiStep {
                milestones: o["milestones"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m.as_u64().unwrap() as usize)
                    .collect(),
                gamma: f("gamma"),
            },
            None,
        ),
        "exponential" => (Schedule::Exponential { gamma: f("gamma") }, None),
        "cosine" => (
            Schedule::Cosine {
                t_max: Some(u("T_max")),
                eta_min: f("eta_min"),
            },
            None,
        ),
        "warmup_linear" | "warmup_cosine" => {
            let (w, total) = (u("num_warmup_steps"), u("num_training_steps"));
            let warmup = w as f64 / total as f64;
            let s = if kind == "warmup_linear" {
                Schedule::WarmupLinear { warmup }
            } else {
                assert_eq!(o["num_cycles"].as_f64().unwrap_or(0.5), 0.5);
                Schedule::WarmupCosine { warmup }
            };
            (s, Some(total))
        }
        "plateau" => (
            Schedule::Plateau(PlateauOptions {
                maximize: o["mode"] == "max",
                factor: f("factor"),
                patience: u("patience"),
                threshold: f("threshold"),
                relative: o["threshold_mode"] == "rel",
                cooldown: u("cooldown"),
                min_lr: f("min_lr"),
                eps: f("eps"),
            }),
            None,
        ),
        other => panic!("unknown schedule {other}"),
    }
}

#[test]
fn learning_rate_schedules_match_torch_to_1e6() {
    let fx = fixtures();
    let cases = fx["schedules"].as_array().unwrap();
    assert!(cases.len() >= 9);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let (schedule, total) = schedule_of(case["scheduler"].as_str().unwrap(), &case["options"]);
        let steps = case["steps"].as_u64().unwrap() as usize;
        let base = case["base_lr"].as_f64().unwrap();
        let mut s = LrScheduler::with_total(schedule, base, total.unwrap_or(steps));
        let metrics: Vec<f64> = case["metrics"]
            .as_array()
            .map(|m| m.iter().map(|x| x.as_f64().unwrap()).collect())
            .unwrap_or_default();
        for (i, want) in case["lrs"].as_array().unwrap().iter().enumerate() {
            let want = want.as_f64().unwrap();
            assert!(
                (s.lr() - want).abs() <= 1e-6 * want.abs().max(1e-2),
                "{name}: step {i}: {} vs torch {want}",
                s.lr()
            );
            s.step(metrics.get(i).copied());
        }
    }
}

#[test]
fn head_training_loop_matches_torch() {
    let fx = fixtures();
    for case in fx["training"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let x = flat(&case["x"]);
        let y: Vec<u32> = case["y"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let n = y.len();
        let d = x.len() / n;
        let init = &case["initial"];
        let classes = init["out_bias"].as_array().unwrap().len();
        let shape = HeadShape {
            input: d,
            hidden: d,
            classes,
            activation: HeadActivation::Tanh,
            input_dropout: false,
        };
        let weights = HeadWeights {
            dense_w: flat(&init["dense_weight"]),
            dense_b: floats(&init["dense_bias"]),
            out_w: flat(&init["out_weight"]),
            out_b: floats(&init["out_bias"]),
        };
        let o = &case["optimizer"];
        let kind = optimizer_kind(o["name"].as_str().unwrap(), o);
        let sched = &case["scheduler"];
        let (schedule, _) = schedule_of(sched["name"].as_str().unwrap(), sched);
        let epochs = case["epochs"].as_u64().unwrap() as usize;
        let cfg = TrainConfig {
            lr: o["lr"].as_f64().unwrap(),
            batch_size: case["batch_size"].as_u64().unwrap() as usize,
            epochs,
            optimizer: kind,
            weight_decay: o["weight_decay"].as_f64().unwrap_or(0.0),
            schedule,
            dropout: 0.0,
            grad_clip: case["max_grad_norm"].as_f64(),
            class_weight: ClassWeight::None,
            decay_biases: true,
        };
        let per_step = case["scheduler_unit"] == "step";
        let mut t =
            HeadTrainer::new(&x, &y, (0..n).collect(), shape, weights, cfg.clone(), 0).unwrap();
        if let Some(cw) = case["class_weights"].as_array() {
            t.set_class_weights(Some(
                cw.iter().map(|v| v.as_f64().unwrap() as f32).collect(),
            ));
        }
        // The fixture's warm-up is given in steps over its own total.
        if per_step {
            let total = sched["num_training_steps"].as_u64().unwrap() as usize;
            let steps_per_epoch = n.div_ceil(cfg.batch_size);
            assert_eq!(
                total,
                steps_per_epoch * epochs,
                "{name}: fixture schedule spans the run"
            );
        }
        t.steps = Some(Vec::new());
        for order in case["orders"].as_array().unwrap() {
            let order: Vec<usize> = order
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            t.train_epoch_in_order(&order);
            t.end_epoch(None);
        }
        let steps = t.steps.clone().unwrap();
        let losses = case["losses"].as_array().unwrap();
        assert_eq!(steps.len(), losses.len(), "{name}");
        for (i, (s, want)) in steps.iter().zip(losses).enumerate() {
            let want = want.as_f64().unwrap();
            assert!(
                (s.loss - want).abs() < 1e-5,
                "{name}: step {i} loss {} vs torch {want}",
                s.loss
            );
            let lr = case["lrs"][i].as_f64().unwrap();
            assert!(
                (s.lr - lr).abs() < 1e-9,
                "{name}: step {i} lr {} vs torch {lr}",
                s.lr
            );
            if let Some(norm) = case["grad_norms"][i].as_f64() {
                let got = s.grad_norm.unwrap();
                assert!(
                    (got - norm).abs() < 1e-5 * (1.0 + norm),
                    "{name}: step {i} grad norm {got} vs {norm}"
                );
            }
        }
        let w = t.weights();
        let fin = &case["final"];
        for (label, got, want) in [
            ("dense_weight", &w.dense_w, flat(&fin["dense_weight"])),
            ("dense_bias", &w.dense_b, floats(&fin["dense_bias"])),
            ("out_weight", &w.out_w, flat(&fin["out_weight"])),
            ("out_bias", &w.out_b, floats(&fin["out_bias"])),
        ] {
            for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - e).abs() < 1e-5,
                    "{name}: {label}[{i}] {g} vs torch {e}"
                );
            }
        }
    }
}
