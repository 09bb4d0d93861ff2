//! Learning-rate schedules with the semantics of `torch.optim.lr_scheduler` and of
//! Hugging Face's warm-up schedules. Epoch-based schedules (StepLR, MultiStepLR,
//! ExponentialLR, CosineAnnealingLR, ReduceLROnPlateau) advance once per epoch, the warm-up
//! schedules once per optimiser step, as each is used in practice.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    Constant,
    /// `StepLR(step_size, gamma)`.
    Step {
        step_size: usize,
        gamma: f64,
    },
    /// `MultiStepLR(milestones, gamma)`.
    MultiStep {
        milestones: Vec<usize>,
        gamma: f64,
    },
    /// `ExponentialLR(gamma)`.
    Exponential {
        gamma: f64,
    },
    /// `CosineAnnealingLR(T_max, eta_min)`; `t_max: None` means the run's epoch count.
    Cosine {
        t_max: Option<usize>,
        eta_min: f64,
    },
    /// `get_linear_schedule_with_warmup`: warm-up over a fraction of all steps, then linear
    /// decay to 0.
    WarmupLinear {
        warmup: f64,
    },
    /// `get_cosine_schedule_with_warmup` with half a cosine cycle.
    WarmupCosine {
        warmup: f64,
    },
    /// `ReduceLROnPlateau` on the validation metric.
    Plateau(PlateauOptions),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlateauOptions {
    /// Whether a higher metric is better (`mode="max"`).
    pub maximize: bool,
    pub factor: f64,
    pub patience: usize,
    pub threshold: f64,
    /// `threshold_mode="rel"` (else `"abs"`).
    pub relative: bool,
    pub cooldown: usize,
    pub min_lr: f64,
    pub eps: f64,
}

impl Default for PlateauOptions {
    fn default() -> Self {
        PlateauOptions {
            maximize: true,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            relative: true,
            cooldown: 0,
            min_lr: 0.0,
            eps: 1e-8,
        }
    }
}

impl Schedule {
    /// Whether the schedule advances per optimiser step (else per epoch).
    pub fn per_step(&self) -> bool {
        matches!(
            self,
            Schedule::WarmupLinear { .. } | Schedule::WarmupCosine { .. }
        )
    }

    pub fn describe(&self) -> String {
        match self {
            Schedule::Constant => "constant".into(),
            Schedule::Step { step_size, gamma } => format!("step({step_size},{gamma})"),
            Schedule::MultiStep { milestones, gamma } => format!(
                "multistep({},{gamma})",
                milestones
                    .iter()
                    .map(|m| m.to_string())
                    .collect::<Vec<_>>()
                    .join("|")
            ),
            Schedule::Exponential { gamma } => format!("exponential({gamma})"),
            Schedule::Cosine { t_max, eta_min } => match t_max {
                None if *eta_min == 0.0 => "cosine".into(),
                None => format!("cosine({eta_min})"),
                Some(t) => format!("cosine({eta_min},{t})"),
            },
            Schedule::WarmupLinear { warmup } => format!("warmup_linear({warmup})"),
            Schedule::WarmupCosine { warmup } => format!("warmup_cosine({warmup})"),
            Schedule::Plateau(p) => format!("plateau({},{})", p.factor, p.patience),
        }
    }
}

/// A schedule bound to a base learning rate and a run length, stepped like torch's.
#[derive(Debug, Clone)]
pub struct LrScheduler {
    schedule: Schedule,
    base_lr: f64,
    /// Units (epochs or steps) the run lasts, for cosine's default period and warm-ups.
    total: usize,
    /// How many times `step` has been called.
    count: usize,
    lr: f64,
    plateau: PlateauState,
}

#[derive(Debug, Clone, Default)]
struct PlateauState {
    best: Option<f64>,
    bad: usize,
    cooldown: usize,
}

impl LrScheduler {
    /// `total_epochs` and `steps_per_epoch` size the schedule to the run.
    pub fn new(
        schedule: Schedule,
        base_lr: f64,
        total_epochs: usize,
        steps_per_epoch: usize,
    ) -> Self {
        let total = if schedule.per_step() {
            total_epochs * steps_per_epoch
        } else {
            total_epochs
        };
        let mut s = LrScheduler {
            schedule,
            base_lr,
            total,
            count: 0,
            lr: base_lr,
            plateau: PlateauState::default(),
        };
        s.lr = s.closed_form(0).unwrap_or(base_lr);
        s
    }

    /// A scheduler with an explicit length in its own units (steps for warm-ups, epochs
    /// otherwise).
    pub fn with_total(schedule: Schedule, base_lr: f64, total: usize) -> Self {
        let mut s = LrScheduler {
            schedule,
            base_lr,
            total,
            count: 0,
            lr: base_lr,
            plateau: PlateauState::default(),
        };
        s.lr = s.closed_form(0).unwrap_or(base_lr);
        s
    }

    pub fn per_step(&self) -> bool {
        self.schedule.per_step()
    }

    /// Sets ReduceLROnPlateau's direction (`mode="max"` when true) to the monitored metric's;
    /// other schedules are unaffected.
    pub fn plateau_maximize(&mut self, maximize: bool) {
        if let Schedule::Plateau(o) = &mut self.schedule {
            o.maximize = maximize;
        }
    }

    /// The learning rate for the current step/epoch.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    fn warmup_steps(&self, fraction: f64) -> usize {
        // HF Trainer: ceil(total · ratio); the epsilon keeps 0.2 · 20 at 4, not 5.
        (fraction * self.total as f64 - 1e-9).ceil().max(0.0) as usize
    }

    fn closed_form(&self, t: usize) -> Option<f64> {
        let base = self.base_lr;
        Some(match &self.schedule {
            Schedule::Constant => base,
            Schedule::Step { step_size, gamma } => {
                base * gamma.powi((t / step_size.max(&1)) as i32)
            }
            Schedule::MultiStep { milestones, gamma } => {
                base * gamma.powi(milestones.iter().filter(|&&m| m <= t).count() as i32)
            }
            Schedule::Exponential { gamma } => base * gamma.powi(t as i32),
            Schedule::Cosine { t_max, eta_min } => {
                let period = t_max.unwrap_or(self.total).max(1) as f64;
                eta_min
                    + (base - eta_min) * (1.0 + (std::f64::consts::PI * t as f64 / period).cos())
                        / 2.0
            }
            Schedule::WarmupLinear { warmup } => {
                let w = self.warmup_steps(*warmup);
                base * warmup_linear(t, w, self.total)
            }
            Schedule::WarmupCosine { warmup } => {
                let w = self.warmup_steps(*warmup);
                base * warmup_cosine(t, w, self.total, 0.5)
            }
            Schedule::Plateau(_) => return None,
        })
    }

    /// Advances one unit. `metric` is the validation value, used by ReduceLROnPlateau only.
    pub fn step(&mut self, metric: Option<f64>) {
        self.count += 1;
        if let Schedule::Plateau(o) = self.schedule {
            if let Some(current) = metric {
                self.plateau_step(&o, current);
            }
            return;
        }
        if let Some(lr) = self.closed_form(self.count) {
            self.lr = lr;
        }
    }

    fn plateau_step(&mut self, o: &PlateauOptions, current: f64) {
        let st = &mut self.plateau;
        let better = match st.best {
            None => !current.is_nan(),
            Some(best) => match (o.maximize, o.relative) {
                (true, true) => current > best * (1.0 + o.threshold),
                (true, false) => current > best + o.threshold,
                (false, true) => current < best * (1.0 - o.threshold),
                (false, false) => current < best - o.threshold,
            },
        };
        if better {
            st.best = Some(current);
            st.bad = 0;
        } else {
            st.bad += 1;
        }
        if st.cooldown > 0 {
            st.cooldown -= 1;
            st.bad = 0;
        }
        if st.bad > o.patience {
            let new_lr = (self.lr * o.factor).max(o.min_lr);
            if self.lr - new_lr > o.eps {
                self.lr = new_lr;
            }
            st.cooldown = o.cooldown;
            st.bad = 0;
        }
    }
}

/// Hugging Face `get_linear_schedule_with_warmup`'s multiplier at step `t`.
pub fn warmup_linear(t: usize, warmup: usize, total: usize) -> f64 {
    if t < warmup {
        return t as f64 / warmup.max(1) as f64;
    }
    (total.saturating_sub(t) as f64 / total.saturating_sub(warmup).max(1) as f64).max(0.0)
}

/// Hugging Face `get_cosine_schedule_with_warmup`'s multiplier at step `t`.
pub fn warmup_cosine(t: usize, warmup: usize, total: usize, cycles: f64) -> f64 {
    if t < warmup {
        return t as f64 / warmup.max(1) as f64;
    }
    let progress = (t - warmup) as f64 / total.saturating_sub(warmup).max(1) as f64;
    (0.5 * (1.0 + (std::f64::consts::PI * cycles * 2.0 * progress).cos())).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plateau_follows_the_direction_it_is_given() {
        let plateau = Schedule::Plateau(PlateauOptions {
            patience: 0,
            factor: 0.5,
            ..PlateauOptions::default()
        });
        // A falling metric is an improvement when minimising, a plateau when maximising.
        for (maximize, want) in [(true, 0.025), (false, 0.1)] {
            let mut s = LrScheduler::with_total(plateau.clone(), 0.1, 10);
            s.plateau_maximize(maximize);
            for m in [3.0, 2.0, 1.0] {
                s.step(Some(m));
            }
            assert!(
                (s.lr() - want).abs() < 1e-12,
                "maximize={maximize}: {}",
                s.lr()
            );
        }
    }
}
