//! One error type for the pipeline: what the user can fix (bad usage or input: exit 2) apart
//! from runtime failures (exit 1). Every message names the file, line, field or model.

use lmcompare_engine::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad usage or bad input: the user can fix it.
    #[error("{0}")]
    BadInput(String),
    /// Anything else: a failed computation, an unreachable server, a broken store.
    #[error("{0}")]
    Failed(String),
    /// A model output that is not finite, at the `input`-th input of a call; the layer that
    /// knows what the inputs are names it ([`Error::name_input`]) on the way up.
    #[error("model {model} produced {value} in {stage} on input {input}; {BROKEN}")]
    NonFinite {
        model: String,
        input: usize,
        stage: String,
        value: String,
    },
}

const BROKEN: &str = "the model's weights or config are broken (a NaN or infinite weight, a non-positive norm epsilon), so its outputs cannot be scored";

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Error::BadInput(_) | Error::NonFinite { .. })
    }

    /// A non-finite output's input index mapped through `f` (a sub-call's index to the
    /// caller's); other errors unchanged.
    pub fn remap_input(self, f: impl Fn(usize) -> usize) -> Error {
        match self {
            Error::NonFinite {
                model,
                input,
                stage,
                value,
            } => Error::NonFinite {
                model,
                input: f(input),
                stage,
                value,
            },
            other => other,
        }
    }

    /// A non-finite output's input named by `f` (an example id); other errors unchanged.
    pub fn name_input(self, f: impl Fn(usize) -> String) -> Error {
        match self {
            Error::NonFinite {
                model,
                input,
                stage,
                value,
            } => Error::BadInput(format!(
                "model {model} produced {value} in {stage} on {}; {BROKEN}",
                f(input)
            )),
            other => other,
        }
    }

    /// The engine's error, a non-finite output kept as one to be named on the way up.
    pub fn from_model(e: EngineError, model: &str) -> Error {
        match e {
            EngineError::NonFinite {
                input,
                stage,
                value,
            } => Error::NonFinite {
                model: model.to_owned(),
                input,
                stage,
                value,
            },
            other => other.into(),
        }
    }

    /// The same kind of error, its message prefixed (e.g. with the model it concerns).
    pub fn context(self, prefix: impl std::fmt::Display) -> Error {
        match self {
            Error::BadInput(m) => Error::BadInput(format!("{prefix}: {m}")),
            Error::Failed(m) => Error::Failed(format!("{prefix}: {m}")),
            e @ Error::NonFinite { .. } => e,
        }
    }
}

/// An engine error for the user, with a non-finite model output named by model, input
/// (`input` names the call's i-th input: an example id, a text) and stage.
pub fn at_input(e: EngineError, model: &str, input: impl Fn(usize) -> String) -> Error {
    Error::from_model(e, model).name_input(input)
}

impl From<EngineError> for Error {
    fn from(e: EngineError) -> Self {
        if e.is_bad_input() {
            Error::BadInput(e.to_string())
        } else {
            Error::Failed(e.to_string())
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Failed(e.to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Failed(e.to_string())
    }
}

/// `Error::BadInput(format!(...))`.
#[macro_export]
macro_rules! bad {
    ($($t:tt)*) => { $crate::Error::BadInput(format!($($t)*)) };
}

/// `Error::Failed(format!(...))`.
#[macro_export]
macro_rules! fail {
    ($($t:tt)*) => { $crate::Error::Failed(format!($($t)*)) };
}
