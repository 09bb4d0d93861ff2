//! Training and hyperparameter search for lmcompare.
//!
//! Optimisers and learning-rate schedules follow `torch.optim` exactly (committed PyTorch
//! trajectories check them to 1e-6); a classification head of the Hugging Face shape is
//! trained on frozen features; configurations come from grid, random or TPE sampling over
//! a small search-space language, with median or successive-halving pruning.

pub mod config;
pub mod head;
pub mod optim;
pub mod schedule;
pub mod search;
pub mod simd;
pub mod space;

pub use config::{ClassWeight, TrainConfig};
pub use head::{
    class_weights, predict_proba, EpochStats, EpochTrainer, HeadActivation, HeadShape, HeadTrainer,
    HeadWeights, TrainError,
};
pub use optim::{clip_grad_norm, Optimizer, OptimizerKind};
pub use schedule::{LrScheduler, PlateauOptions, Schedule};
pub use search::{EarlyStopping, Pruner, Sampler, SamplerKind, TrialRecord, TrialStatus};
pub use space::{parse_schedule, Config, Domain, Param, Space, SpaceError, Value};
