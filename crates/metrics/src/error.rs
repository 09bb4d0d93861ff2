use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum MetricsError {
    #[error("no examples to score")]
    Empty,
    #[error("label {0:?} is listed twice in the label set")]
    DuplicateLabel(String),
    #[error("pos_label={label:?} is not a valid label; it should be one of {valid:?}")]
    InvalidPosLabel { label: String, valid: Vec<String> },
    #[error("the target is multi-class ({0} labels present) but average='binary' was asked for (a positive label was given); drop --pos-label or use micro/macro/weighted")]
    BinaryOnMulticlass(usize),
    #[error("{what} has {got} entries, expected {expected}")]
    Shape {
        what: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("probability for example {example}, label {label:?} is {value}: probabilities must be finite and in [0, 1]")]
    BadProbability {
        example: usize,
        label: String,
        value: f64,
    },
    #[error("metric {0} needs probabilities, and these predictions have none")]
    NeedsProbabilities(&'static str),
    #[error("metric {0} is not defined for this label set")]
    NotApplicable(&'static str),
    #[error("models disagree on the gold label of example {0}")]
    GoldMismatch(usize),
    #[error("paired comparison needs both models scored over the same label set")]
    LabelSetMismatch,
}
