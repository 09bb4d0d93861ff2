//! The typed report documents: what the pipeline produces and every exporter reads. Field
//! names are the JSON contract (snake_case, scikit-learn's metric names); optional blocks
//! that a backend cannot fill are left out rather than guessed.

use serde::{Deserialize, Serialize};

/// What running a model cost, measured on the run itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Efficiency {
    pub parameters: Option<u64>,
    pub size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_parameters: Option<u64>,
    pub flops_per_example: Option<f64>,
    pub tokens_per_example: Option<f64>,
    #[serde(default, with = "nan_as_null")]
    pub latency_ms_p50: f64,
    #[serde(default, with = "nan_as_null")]
    pub latency_ms_p95: f64,
    pub latency_unit: String,
    pub throughput_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_s: Option<f64>,
    /// This model's own peak resident memory (see `peak_rss_scope`).
    pub peak_rss_bytes: Option<u64>,
    /// What `peak_rss_bytes` covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_scope: Option<String>,
    /// Remote models: requests of the run, and how many were sent now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_sent: Option<usize>,
    /// Local decoders: contexts cut from the left to fit the positions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated_contexts: Option<usize>,
    /// Classification by generation: answers generated now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_now: Option<usize>,
}

/// Non-finite floats as JSON null (and null back as NaN).
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}
