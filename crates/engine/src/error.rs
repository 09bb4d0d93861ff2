use std::path::PathBuf;

use thiserror::Error;

/// Engine failures. `is_bad_input` separates what the user can fix (a wrong path, a broken
/// file, an unsupported model: exit 2) from runtime failures (exit 1).
#[derive(Debug, Error)]
pub enum EngineError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    Runtime(String),
    /// A stage of a forward pass produced NaN or an infinity; `input` is the index of the
    /// input (in the call's order) where it first appeared. The weights or the config are
    /// broken, so it counts as bad input.
    #[error("{value} in {stage} (input {input})")]
    NonFinite {
        input: usize,
        stage: String,
        value: String,
    },
}

impl EngineError {
    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        EngineError::File {
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn is_bad_input(&self) -> bool {
        !matches!(self, EngineError::Runtime(_))
    }

    /// A non-finite output's input index mapped through `f` (a batch's index to the
    /// caller's); other errors unchanged.
    pub fn remap_input(self, f: impl FnOnce(usize) -> usize) -> Self {
        match self {
            EngineError::NonFinite {
                input,
                stage,
                value,
            } => EngineError::NonFinite {
                input: f(input),
                stage,
                value,
            },
            other => other,
        }
    }
}

pub type Result<T> = std::result::Result<T, EngineError>;
