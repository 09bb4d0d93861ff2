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
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Error::BadInput(_))
    }

    /// The same kind of error, its message prefixed (e.g. with the model it concerns).
    pub fn context(self, prefix: impl std::fmt::Display) -> Error {
        match self {
            Error::BadInput(m) => Error::BadInput(format!("{prefix}: {m}")),
            Error::Failed(m) => Error::Failed(format!("{prefix}: {m}")),
        }
    }
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
