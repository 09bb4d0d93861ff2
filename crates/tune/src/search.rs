//! Choosing configurations (grid, random, TPE) and stopping bad ones early (median pruner,
//! successive halving), with Optuna's semantics where Optuna defines them. Every choice is
//! a pure function of the seed, the trial number and the finished trials before it, so an
//! interrupted search that resumes from its stored trials makes the same choices.

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use crate::space::{Config, Domain, Space, SpaceError, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialStatus {
    Done,
    Pruned,
    Diverged,
}

impl TrialStatus {
    pub fn key(self) -> &'static str {
        match self {
            TrialStatus::Done => "done",
            TrialStatus::Pruned => "pruned",
            TrialStatus::Diverged => "diverged",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "done" => TrialStatus::Done,
            "pruned" => TrialStatus::Pruned,
            "diverged" => TrialStatus::Diverged,
            _ => return None,
        })
    }
}

/// A finished trial as the samplers and pruners see it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialRecord {
    pub config: Config,
    pub status: TrialStatus,
    /// The selection value (best validation value over epochs); `None` if diverged.
    pub metric: Option<f64>,
    /// Validation value after each epoch.
    pub curve: Vec<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerKind {
    Grid,
    Random,
    /// Tree-structured Parzen estimator (Optuna's default sampler, univariate).
    Tpe,
}

pub struct Sampler {
    kind: SamplerKind,
    space: Space,
    seed: u64,
    grid: Vec<Config>,
    /// Random trials before TPE starts modelling (Optuna: 10).
    pub startup_trials: usize,
    /// Candidates drawn from the good-trials density per suggestion (Optuna: 24).
    pub candidates: usize,
}

fn trial_rng(seed: u64, trial: usize) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(seed ^ (trial as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

impl Sampler {
    pub fn new(kind: SamplerKind, space: Space, seed: u64) -> Result<Sampler, SpaceError> {
        let grid = if kind == SamplerKind::Grid {
            space.grid()?
        } else {
            Vec::new()
        };
        Ok(Sampler {
            kind,
            space,
            seed,
            grid,
            startup_trials: 10,
            candidates: 24,
        })
    }

    /// Trials a full grid has (None for the other samplers).
    pub fn grid_size(&self) -> Option<usize> {
        (self.kind == SamplerKind::Grid).then_some(self.grid.len())
    }

    /// The configuration of trial `trial`, given the trials before it; `None` once a grid
    /// is exhausted.
    pub fn suggest(&self, trial: usize, history: &[TrialRecord], maximize: bool) -> Option<Config> {
        let mut rng = trial_rng(self.seed, trial);
        match self.kind {
            SamplerKind::Grid => self.grid.get(trial).cloned(),
            SamplerKind::Random => Some(self.space.sample(&mut rng)),
            SamplerKind::Tpe => {
                let scored: Vec<(&TrialRecord, f64)> = history
                    .iter()
                    .map(|t| {
                        let v = match (t.status, t.metric) {
                            (TrialStatus::Diverged, _) | (_, None) => f64::NEG_INFINITY,
                            (_, Some(m)) if m.is_nan() => f64::NEG_INFINITY,
                            (_, Some(m)) => {
                                if maximize {
                                    m
                                } else {
                                    -m
                                }
                            }
                        };
                        (t, v)
                    })
                    .collect();
                if scored.len() < self.startup_trials {
                    return Some(self.space.sample(&mut rng));
                }
                Some(self.tpe(&scored, &mut rng))
            }
        }
    }

    fn tpe(&self, scored: &[(&TrialRecord, f64)], rng: &mut Xoshiro256PlusPlus) -> Config {
        let mut order: Vec<usize> = (0..scored.len()).collect();
        // Best first; ties keep trial order so results do not depend on sort stability.
        order.sort_by(|&a, &b| scored[b].1.total_cmp(&scored[a].1).then(a.cmp(&b)));
        // Optuna's default gamma: the best 10%, at most 25.
        let n_good = ((0.1 * scored.len() as f64).ceil() as usize).clamp(1, 25);
        let (good, bad) = order.split_at(n_good);
        let mut config = Config::new();
        for p in &self.space.params {
            let values = |set: &[usize]| -> Vec<&Value> {
                set.iter()
                    .filter_map(|&i| scored[i].0.config.get(&p.name))
                    .collect()
            };
            let (g, b) = (values(good), values(bad));
            let v = match &p.domain {
                Domain::Choice(choices) => {
                    let k = choices.len() as f64;
                    let density = |obs: &[&Value]| -> Vec<f64> {
                        let n = obs.len() as f64;
                        choices
                            .iter()
                            .map(|c| {
                                (1.0 / k + obs.iter().filter(|o| **o == c).count() as f64)
                                    / (1.0 + n)
                            })
                            .collect()
                    };
                    let (pg, pb) = (density(&g), density(&b));
                    let mut best: Option<(f64, usize)> = None;
                    for _ in 0..self.candidates {
                        // A draw from the good density, scored by l(x)/g(x).
                        let mut u = rng.gen::<f64>();
                        let mut pick = choices.len() - 1;
                        for (i, q) in pg.iter().enumerate() {
                            if u < *q {
                                pick = i;
                                break;
                            }
                            u -= q;
                        }
                        let score = pg[pick].ln() - pb[pick].ln();
                        if best.is_none_or(|(s, _)| score > s) {
                            best = Some((score, pick));
                        }
                    }
                    choices[best.map_or(0, |b| b.1)].clone()
                }
                numeric => {
                    let (lo, hi, log, int) = match numeric {
                        Domain::LogUniform(a, b) => (a.ln(), b.ln(), true, false),
                        Domain::Uniform(a, b) => (*a, *b, false, false),
                        Domain::IntRange(a, b) => (*a as f64 - 0.5, *b as f64 + 0.5, false, true),
                        Domain::Choice(_) => unreachable!("handled above"),
                    };
                    let tr = |v: &&Value| -> Option<f64> {
                        let x = v.as_f64()?;
                        Some(if log { x.ln() } else { x })
                    };
                    let gx: Vec<f64> = g.iter().filter_map(tr).collect();
                    let bx: Vec<f64> = b.iter().filter_map(tr).collect();
                    let pg = Parzen::new(&gx, lo, hi);
                    let pb = Parzen::new(&bx, lo, hi);
                    let mut best: Option<(f64, f64)> = None;
                    for _ in 0..self.candidates {
                        let x = pg.sample(rng);
                        let score = pg.log_pdf(x) - pb.log_pdf(x);
                        if best.is_none_or(|(s, _)| score > s) {
                            best = Some((score, x));
                        }
                    }
                    let x = best.map_or((lo + hi) / 2.0, |b| b.1);
                    if int {
                        let (a, b) = match numeric {
                            Domain::IntRange(a, b) => (*a, *b),
                            _ => unreachable!("int ranges only"),
                        };
                        Value::Int((x.round() as i64).clamp(a, b))
                    } else if log {
                        Value::Float(x.exp())
                    } else {
                        Value::Float(x)
                    }
                }
            };
            config.insert(p.name.clone(), v);
        }
        config
    }
}

/// A mixture of normals truncated to [lo, hi]: one per observation plus a wide prior, with
/// bandwidths from the distances to neighbouring observations (Optuna's heuristic), clipped
/// below at (hi − lo) / min(100, n + 1).
struct Parzen {
    mus: Vec<f64>,
    sigmas: Vec<f64>,
    lo: f64,
    hi: f64,
}

impl Parzen {
    fn new(obs: &[f64], lo: f64, hi: f64) -> Parzen {
        let range = hi - lo;
        let mut mus: Vec<f64> = obs.iter().map(|x| x.clamp(lo, hi)).collect();
        mus.push((lo + hi) / 2.0);
        let n = mus.len();
        let mut idx: Vec<usize> = (0..n).collect();
        idx.sort_by(|&a, &b| mus[a].total_cmp(&mus[b]));
        let mut sigmas = vec![range; n];
        let min_sigma = range / (100.0f64).min(n as f64 + 1.0);
        for (rank, &i) in idx.iter().enumerate() {
            if i == n - 1 {
                continue; // the prior keeps the full range
            }
            let left = if rank > 0 {
                mus[i] - mus[idx[rank - 1]]
            } else {
                mus[i] - lo
            };
            let right = if rank + 1 < n {
                mus[idx[rank + 1]] - mus[i]
            } else {
                hi - mus[i]
            };
            sigmas[i] = left.max(right).clamp(min_sigma, range);
        }
        Parzen {
            mus,
            sigmas,
            lo,
            hi,
        }
    }

    fn sample<R: Rng>(&self, rng: &mut R) -> f64 {
        let k = rng.gen_range(0..self.mus.len());
        let (mu, sigma) = (self.mus[k], self.sigmas[k]);
        for _ in 0..100 {
            // Box-Muller; rejection keeps the draw inside the bounds.
            let u1: f64 = rng.gen::<f64>().max(1e-300);
            let u2: f64 = rng.gen();
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            let x = mu + sigma * z;
            if x >= self.lo && x <= self.hi {
                return x;
            }
        }
        mu.clamp(self.lo, self.hi)
    }

    fn log_pdf(&self, x: f64) -> f64 {
        let n = self.mus.len() as f64;
        let mut p = 0.0;
        for (&mu, &s) in self.mus.iter().zip(&self.sigmas) {
            let mass = normal_cdf((self.hi - mu) / s) - normal_cdf((self.lo - mu) / s);
            let z = (x - mu) / s;
            p +=
                (-0.5 * z * z).exp() / (s * (2.0 * std::f64::consts::PI).sqrt() * mass.max(1e-300));
        }
        (p / n).max(1e-300).ln()
    }
}

fn normal_cdf(z: f64) -> f64 {
    0.5 * (1.0 + erf(z / std::f64::consts::SQRT_2))
}

/// erf to 1.2e-7 (Numerical Recipes' erfc Chebyshev fit), enough for density ratios.
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let y = t
        * (-x * x - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        1.0 - y
    } else {
        y - 1.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pruner {
    None,
    /// Optuna's MedianPruner: after `warmup_epochs`, stop a trial whose best value so far
    /// is worse than the median of finished trials' values at the same epoch, once
    /// `startup_trials` trials have finished.
    Median {
        startup_trials: usize,
        warmup_epochs: usize,
    },
    /// Successive halving as Optuna's SuccessiveHalvingPruner (ASHA run sequentially):
    /// rungs at min_resource · ηᵏ epochs; at a rung a trial continues only if its value is
    /// in the top 1/η of every trial that reached the rung (the best so far while fewer
    /// than η have).
    Halving {
        min_resource: usize,
        reduction_factor: usize,
    },
}

impl Pruner {
    pub fn describe(&self) -> String {
        match self {
            Pruner::None => "none".into(),
            Pruner::Median {
                startup_trials,
                warmup_epochs,
            } => format!("median(startup_trials={startup_trials},warmup_epochs={warmup_epochs})"),
            Pruner::Halving {
                min_resource,
                reduction_factor,
            } => format!("successive_halving(min_resource={min_resource},reduction_factor={reduction_factor})"),
        }
    }

    /// Whether the trial whose validation values so far are `curve` should stop now.
    pub fn should_prune(&self, history: &[TrialRecord], curve: &[f64], maximize: bool) -> bool {
        let epoch = curve.len();
        if epoch == 0 {
            return false;
        }
        let better = |a: f64, b: f64| if maximize { a > b } else { a < b };
        match *self {
            Pruner::None => false,
            Pruner::Median {
                startup_trials,
                warmup_epochs,
            } => {
                if epoch <= warmup_epochs {
                    return false;
                }
                let finished: Vec<f64> = history
                    .iter()
                    .filter(|t| t.status == TrialStatus::Done && t.curve.len() >= epoch)
                    .map(|t| t.curve[epoch - 1])
                    .filter(|v| !v.is_nan())
                    .collect();
                if finished.len() < startup_trials.max(1) {
                    return false;
                }
                let best = curve
                    .iter()
                    .copied()
                    .filter(|v| !v.is_nan())
                    .reduce(|a, b| if better(b, a) { b } else { a });
                let Some(best) = best else { return true };
                let mut sorted = finished;
                sorted.sort_by(f64::total_cmp);
                let m = sorted.len();
                let median = if m % 2 == 1 {
                    sorted[m / 2]
                } else {
                    (sorted[m / 2 - 1] + sorted[m / 2]) / 2.0
                };
                better(median, best)
            }
            Pruner::Halving {
                min_resource,
                reduction_factor,
            } => {
                let eta = reduction_factor.max(2);
                let mut rung = min_resource.max(1);
                while rung < epoch {
                    rung *= eta;
                }
                if rung != epoch {
                    return false;
                }
                let value = curve[epoch - 1];
                if value.is_nan() {
                    return true;
                }
                let mut competing: Vec<f64> = history
                    .iter()
                    .filter(|t| t.curve.len() >= epoch)
                    .map(|t| t.curve[epoch - 1])
                    .filter(|v| !v.is_nan())
                    .collect();
                competing.push(value);
                // Best first.
                competing.sort_by(|a, b| {
                    if maximize {
                        b.total_cmp(a)
                    } else {
                        a.total_cmp(b)
                    }
                });
                let promotable = (competing.len() / eta).max(1) - 1;
                better(competing[promotable], value)
            }
        }
    }
}

/// Early stopping on the validation value: stop after `patience` epochs without an
/// improvement larger than `min_delta`, remembering the best epoch.
#[derive(Debug, Clone)]
pub struct EarlyStopping {
    pub patience: Option<usize>,
    pub min_delta: f64,
    pub maximize: bool,
    best: Option<f64>,
    best_epoch: usize,
    waited: usize,
}

impl EarlyStopping {
    pub fn new(patience: Option<usize>, min_delta: f64, maximize: bool) -> Self {
        EarlyStopping {
            patience,
            min_delta,
            maximize,
            best: None,
            best_epoch: 0,
            waited: 0,
        }
    }

    /// Records the value after `epoch` (1-based); returns true when training should stop.
    pub fn update(&mut self, epoch: usize, value: f64) -> bool {
        let improved = match self.best {
            None => !value.is_nan(),
            Some(b) => {
                if self.maximize {
                    value > b + self.min_delta
                } else {
                    value < b - self.min_delta
                }
            }
        };
        if improved {
            self.best = Some(value);
            self.best_epoch = epoch;
            self.waited = 0;
        } else {
            self.waited += 1;
        }
        self.patience.is_some_and(|p| self.waited >= p)
    }

    pub fn best(&self) -> Option<f64> {
        self.best
    }

    /// The epoch (1-based) of the best value; 0 before any.
    pub fn best_epoch(&self) -> usize {
        self.best_epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(metric: f64, curve: Vec<f64>, status: TrialStatus) -> TrialRecord {
        TrialRecord {
            config: Config::new(),
            status,
            metric: Some(metric),
            curve,
        }
    }

    /// A smooth objective with its optimum at lr = 1e-3, dropout = 0.3.
    fn objective(c: &Config) -> f64 {
        let lr = c["lr"].as_f64().unwrap();
        let d = c["dropout"].as_f64().unwrap();
        -(lr.log10() + 3.0).powi(2) - 4.0 * (d - 0.3).powi(2)
    }

    fn search(kind: SamplerKind, seed: u64, n: usize) -> (Vec<TrialRecord>, f64) {
        let space = Space::parse("lr=log(1e-6,1e-0);dropout=uniform(0,0.9)").unwrap();
        let sampler = Sampler::new(kind, space, seed).unwrap();
        let mut history = Vec::new();
        for t in 0..n {
            let c = sampler.suggest(t, &history, true).unwrap();
            let v = objective(&c);
            history.push(TrialRecord {
                config: c,
                status: TrialStatus::Done,
                metric: Some(v),
                curve: vec![v],
            });
        }
        let best = history
            .iter()
            .map(|t| t.metric.unwrap())
            .fold(f64::MIN, f64::max);
        (history, best)
    }

    #[test]
    fn suggestions_are_a_function_of_seed_trial_and_history() {
        let (a, _) = search(SamplerKind::Tpe, 3, 25);
        let (b, _) = search(SamplerKind::Tpe, 3, 25);
        assert_eq!(a, b);
        // Resuming after 15 stored trials proposes what the uninterrupted search did.
        let space = Space::parse("lr=log(1e-6,1e-0);dropout=uniform(0,0.9)").unwrap();
        let s = Sampler::new(SamplerKind::Tpe, space, 3).unwrap();
        assert_eq!(s.suggest(15, &a[..15], true).unwrap(), a[15].config);
        let (c, _) = search(SamplerKind::Tpe, 4, 25);
        assert_ne!(a, c);
    }

    #[test]
    fn tpe_finds_better_configurations_than_random_search() {
        let mut tpe_wins = 0;
        let (mut tpe_total, mut random_total) = (0.0, 0.0);
        for seed in 0..10 {
            let (_, t) = search(SamplerKind::Tpe, seed, 40);
            let (_, r) = search(SamplerKind::Random, seed, 40);
            tpe_total += t;
            random_total += r;
            tpe_wins += usize::from(t >= r);
        }
        assert!(
            tpe_total > random_total,
            "TPE {tpe_total} vs random {random_total}"
        );
        assert!(tpe_wins >= 6, "TPE at least as good in {tpe_wins}/10 seeds");
    }

    #[test]
    fn median_pruner_follows_optuna() {
        let p = Pruner::Median {
            startup_trials: 2,
            warmup_epochs: 1,
        };
        let done = vec![
            record(0.8, vec![0.5, 0.7, 0.8], TrialStatus::Done),
            record(0.6, vec![0.3, 0.5, 0.6], TrialStatus::Done),
            record(0.1, vec![0.1, 0.1], TrialStatus::Pruned),
        ];
        // Median of finished trials at epoch 2 is (0.7 + 0.5) / 2 = 0.6; the pruned trial
        // does not count.
        assert!(p.should_prune(&done, &[0.2, 0.55], true));
        assert!(!p.should_prune(&done, &[0.2, 0.65], true));
        // Best so far, not the last value, is compared.
        assert!(!p.should_prune(&done, &[0.9, 0.1], true));
        // No pruning during warm-up or before enough trials have finished.
        assert!(!p.should_prune(&done, &[0.0], true));
        assert!(!p.should_prune(&done[..1], &[0.0, 0.0], true));
        // Minimising: lower is better.
        assert!(p.should_prune(&done, &[0.9, 0.65], false));
    }

    #[test]
    fn successive_halving_keeps_the_top_third_at_each_rung() {
        let p = Pruner::Halving {
            min_resource: 1,
            reduction_factor: 3,
        };
        // Rungs at epochs 1, 3, 9: nothing is decided at epoch 2.
        let h: Vec<TrialRecord> = [0.9, 0.8, 0.7, 0.6, 0.5]
            .iter()
            .map(|&v| record(v, vec![v, v, v], TrialStatus::Done))
            .collect();
        assert!(!p.should_prune(&h, &[0.1, 0.1], true));
        // 6 competitors at rung 1 (5 + this one): top 6 / 3 = 2 continue.
        assert!(p.should_prune(&h, &[0.75], true));
        assert!(!p.should_prune(&h, &[0.85], true));
        // Fewer than η competitors: only the best so far continues.
        assert!(p.should_prune(&h[..1], &[0.85], true));
        assert!(!p.should_prune(&h[..1], &[0.95], true));
        assert!(!p.should_prune(&[], &[0.0], true));
    }

    #[test]
    fn early_stopping_waits_patience_epochs_and_remembers_the_best() {
        let mut e = EarlyStopping::new(Some(2), 0.01, true);
        assert!(!e.update(1, 0.5));
        assert!(!e.update(2, 0.6));
        assert!(!e.update(3, 0.605)); // below min_delta: no improvement
        assert!(e.update(4, 0.59));
        assert_eq!(e.best_epoch(), 2);
        assert_eq!(e.best(), Some(0.6));
        let mut never = EarlyStopping::new(None, 0.0, false);
        for (i, v) in [3.0, 2.0, 2.5, 2.6, 2.7].iter().enumerate() {
            assert!(!never.update(i + 1, *v));
        }
        assert_eq!(never.best_epoch(), 2);
    }

    #[test]
    fn grid_sampler_stops_when_exhausted() {
        let s = Sampler::new(SamplerKind::Grid, Space::parse("lr=[0.1,0.2]").unwrap(), 0).unwrap();
        assert_eq!(s.grid_size(), Some(2));
        assert!(s.suggest(1, &[], true).is_some());
        assert!(s.suggest(2, &[], true).is_none());
    }
}
