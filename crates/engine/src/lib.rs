//! The model side of lmcompare: model specs and folders, tokenizers, encoder inference on
//! hand-written kernels, ONNX models, pooling, and cost profiles.

pub mod attribution;
pub mod classifier;
pub mod config;
pub mod data;
pub mod decoder;
pub mod encoder_model;
pub mod error;
pub mod finetune;
pub mod finite;
pub mod guard;
pub mod model;
pub mod onnx;
pub mod pooling;
pub mod probe;
pub mod profile;
pub mod remote;
pub mod spec;
pub mod store;
pub mod tokenize;
mod torch_pickle;
pub mod weights;

pub use encoder_model::{LoadOptions, TextEncoder};
pub use error::{EngineError, Result};
/// The dense kernels, shared with training (`lmcompare-kernels`).
pub use lmcompare_kernels::dense as kernels;
