//! A training configuration: a sampled [`Config`] over defaults.

use serde::Serialize;

use crate::optim::OptimizerKind;
use crate::schedule::Schedule;
use crate::space::parse_schedule;
use crate::space::{Config, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassWeight {
    None,
    /// scikit-learn's `class_weight="balanced"`: n / (classes · count).
    Balanced,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainConfig {
    pub lr: f64,
    pub batch_size: usize,
    pub epochs: usize,
    pub optimizer: OptimizerKind,
    pub weight_decay: f64,
    pub schedule: Schedule,
    pub dropout: f64,
    /// Maximum joint gradient norm; `None`: no clipping.
    pub grad_clip: Option<f64>,
    pub class_weight: ClassWeight,
    /// Whether weight decay applies to biases too (torch's default); Hugging Face's Trainer
    /// exempts them, and so does lmcompare unless told otherwise.
    pub decay_biases: bool,
}

impl Default for TrainConfig {
    /// The defaults of a Hugging Face `Trainer` (AdamW, lr 5e-5, batch 8, 3 epochs, linear
    /// decay without warm-up, no weight decay): what a model gets when nobody tunes it.
    fn default() -> Self {
        TrainConfig {
            lr: 5e-5,
            batch_size: 8,
            epochs: 3,
            optimizer: OptimizerKind::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                amsgrad: false,
            },
            weight_decay: 0.0,
            schedule: Schedule::WarmupLinear { warmup: 0.0 },
            dropout: 0.1,
            grad_clip: Some(1.0),
            class_weight: ClassWeight::None,
            decay_biases: false,
        }
    }
}

impl TrainConfig {
    /// `config` over `base`. Values were validated when the space was parsed; anything
    /// else here is a bug in the caller, reported as a message.
    pub fn from_config(config: &Config, base: &TrainConfig) -> Result<TrainConfig, String> {
        let mut c = base.clone();
        let f = |k: &str| config.get(k).and_then(Value::as_f64);
        let text = |k: &str| match config.get(k) {
            Some(Value::Text(s)) => Some(s.as_str()),
            _ => None,
        };
        if let Some(x) = f("lr") {
            c.lr = x;
        }
        if let Some(x) = f("batch_size") {
            c.batch_size = x as usize;
        }
        if let Some(x) = f("epochs") {
            c.epochs = x as usize;
        }
        if let Some(x) = f("weight_decay") {
            c.weight_decay = x;
        }
        if let Some(x) = f("dropout") {
            c.dropout = x;
        }
        if let Some(x) = f("grad_clip") {
            c.grad_clip = (x > 0.0).then_some(x);
        }
        if let Some(s) = text("scheduler") {
            c.schedule = parse_schedule(s)?;
        }
        if let Some(s) = text("class_weight") {
            c.class_weight = if s == "balanced" {
                ClassWeight::Balanced
            } else {
                ClassWeight::None
            };
        }
        let (mut b1, mut b2, mut eps, mut ams) = match c.optimizer {
            OptimizerKind::Adam {
                beta1,
                beta2,
                eps,
                amsgrad,
            }
            | OptimizerKind::AdamW {
                beta1,
                beta2,
                eps,
                amsgrad,
            } => (beta1, beta2, eps, amsgrad),
            OptimizerKind::Sgd { .. } => (0.9, 0.999, 1e-8, false),
        };
        let (mut mom, mut damp, mut nest) = match c.optimizer {
            OptimizerKind::Sgd {
                momentum,
                dampening,
                nesterov,
            } => (momentum, dampening, nesterov),
            _ => (0.9, 0.0, false),
        };
        b1 = f("beta1").unwrap_or(b1);
        b2 = f("beta2").unwrap_or(b2);
        eps = f("eps").unwrap_or(eps);
        if let Some(s) = text("amsgrad") {
            ams = s == "true";
        }
        mom = f("momentum").unwrap_or(mom);
        damp = f("dampening").unwrap_or(damp);
        if let Some(s) = text("nesterov") {
            nest = s == "true";
        }
        let name = text("optimizer").unwrap_or(c.optimizer.name());
        c.optimizer = match name {
            "sgd" => OptimizerKind::Sgd {
                momentum: mom,
                dampening: damp,
                nesterov: nest,
            },
            "adam" => OptimizerKind::Adam {
                beta1: b1,
                beta2: b2,
                eps,
                amsgrad: ams,
            },
            "adamw" => OptimizerKind::AdamW {
                beta1: b1,
                beta2: b2,
                eps,
                amsgrad: ams,
            },
            other => return Err(format!("unknown optimizer {other}")),
        };
        if let OptimizerKind::Sgd {
            momentum,
            dampening,
            nesterov: true,
        } = c.optimizer
        {
            if momentum <= 0.0 || dampening != 0.0 {
                return Err("Nesterov momentum needs momentum > 0 and zero dampening".into());
            }
        }
        Ok(c)
    }

    /// The configuration as flat JSON-friendly pairs, for reports.
    pub fn summary(&self) -> Config {
        let mut m = Config::new();
        m.insert("lr".into(), Value::Float(self.lr));
        m.insert("batch_size".into(), Value::Int(self.batch_size as i64));
        m.insert("epochs".into(), Value::Int(self.epochs as i64));
        m.insert(
            "optimizer".into(),
            Value::Text(self.optimizer.name().into()),
        );
        m.insert("scheduler".into(), Value::Text(self.schedule.describe()));
        m.insert("weight_decay".into(), Value::Float(self.weight_decay));
        m.insert("dropout".into(), Value::Float(self.dropout));
        m.insert(
            "grad_clip".into(),
            Value::Float(self.grad_clip.unwrap_or(0.0)),
        );
        m.insert(
            "class_weight".into(),
            Value::Text(match self.class_weight {
                ClassWeight::None => "none".into(),
                ClassWeight::Balanced => "balanced".into(),
            }),
        );
        match self.optimizer {
            OptimizerKind::Sgd {
                momentum,
                dampening,
                nesterov,
            } => {
                m.insert("momentum".into(), Value::Float(momentum));
                m.insert("dampening".into(), Value::Float(dampening));
                m.insert("nesterov".into(), Value::Text(nesterov.to_string()));
            }
            OptimizerKind::Adam {
                beta1,
                beta2,
                eps,
                amsgrad,
            }
            | OptimizerKind::AdamW {
                beta1,
                beta2,
                eps,
                amsgrad,
            } => {
                m.insert("beta1".into(), Value::Float(beta1));
                m.insert("beta2".into(), Value::Float(beta2));
                m.insert("eps".into(), Value::Float(eps));
                m.insert("amsgrad".into(), Value::Text(amsgrad.to_string()));
            }
        }
        m
    }
}
