//! `config.json` of an HF-layout encoder folder.

use std::path::Path;

use serde_json::Value;

use crate::error::{EngineError, Result};

/// No real model has a dimension, vocabulary or context this large; a config that claims
/// one is corrupt, and trusting it would size allocations from a typo.
pub const MAX_CONFIG_SIZE: u64 = 1 << 26;

/// A JSON value as a message quotes it: short, with its JSON type.
fn shown(x: &Value) -> String {
    let kind = match x {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    let mut text = x.to_string();
    if text.chars().count() > 40 {
        text = text.chars().take(40).collect::<String>() + "…";
    }
    format!("{text} ({kind})")
}

/// A size in a config (`hidden_size`, `num_attention_heads`, …): absent or null is `None`;
/// anything but an integer from 1 to [`MAX_CONFIG_SIZE`] is an error naming the key and
/// the value.
pub fn size_field(v: &Value, key: &str) -> std::result::Result<Option<usize>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => match x.as_u64() {
            Some(n) if (1..=MAX_CONFIG_SIZE).contains(&n) => Ok(Some(n as usize)),
            Some(0) => Err(format!("`{key}` is 0; it must be a positive integer")),
            Some(n) => Err(format!(
                "`{key}` is {n}, beyond any real model (at most {MAX_CONFIG_SIZE}): the config is corrupt"
            )),
            None => Err(format!(
                "`{key}` is {}; it must be a positive integer",
                shown(x)
            )),
        },
    }
}

/// A real number in a config (`layer_norm_eps`, `rope_theta`, …): absent or null is
/// `None`; a string, a boolean or a container is an error naming the key.
pub fn number_field(v: &Value, key: &str) -> std::result::Result<Option<f64>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("`{key}` is {}; it must be a number", shown(x))),
    }
}

/// A normalisation epsilon: positive and finite, or every output is NaN.
pub fn check_epsilon(key: &str, eps: f64) -> std::result::Result<f64, String> {
    if eps.is_finite() && eps > 0.0 && eps < 1.0 {
        Ok(eps)
    } else {
        Err(format!(
            "`{key}` is {eps}; a normalisation epsilon must be a small positive number (e.g. 1e-12)"
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Bert,
    Roberta,
    DistilBert,
}

impl Architecture {
    pub fn key(self) -> &'static str {
        match self {
            Architecture::Bert => "bert",
            Architecture::Roberta => "roberta",
            Architecture::DistilBert => "distilbert",
        }
    }
}

pub const SUPPORTED_MODEL_TYPES: &[&str] =
    &["bert", "roberta", "xlm-roberta", "camembert", "distilbert"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Gelu,
    Relu,
}

#[derive(Debug, Clone)]
pub struct EncoderConfig {
    pub architecture: Architecture,
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub max_positions: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
    pub pad_token_id: u32,
    pub activation: Activation,
    /// Class names by index when the folder declares them (`id2label`).
    pub id2label: Option<Vec<String>>,
    pub architectures: Vec<String>,
}

impl EncoderConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = crate::data::read_text_file(path)?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| EngineError::file(path, format!("not valid JSON: {e}")))?;
        Self::from_value(&v).map_err(|m| EngineError::file(path, m))
    }

    pub fn from_value(v: &Value) -> std::result::Result<Self, String> {
        let model_type = v["model_type"]
            .as_str()
            .ok_or("missing `model_type`")?
            .to_owned();
        let architecture = match model_type.as_str() {
            "bert" => Architecture::Bert,
            "roberta" | "xlm-roberta" | "camembert" => Architecture::Roberta,
            "distilbert" => Architecture::DistilBert,
            other => {
                return Err(format!(
                    "unsupported model_type {other:?}; supported encoder types: {}",
                    SUPPORTED_MODEL_TYPES.join(", ")
                ))
            }
        };
        let int = |keys: &[&str]| -> std::result::Result<usize, String> {
            for k in keys {
                if let Some(n) = size_field(v, k)? {
                    return Ok(n);
                }
            }
            Err(format!("missing `{}`", keys[0]))
        };
        let distil = architecture == Architecture::DistilBert;
        let hidden = int(if distil { &["dim"] } else { &["hidden_size"] })?;
        let heads = int(if distil {
            &["n_heads"]
        } else {
            &["num_attention_heads"]
        })?;
        if hidden % heads != 0 {
            return Err(format!(
                "hidden size {hidden} is not divisible by {heads} attention heads"
            ));
        }
        let act = if distil {
            &v["activation"]
        } else {
            &v["hidden_act"]
        };
        let activation = match act.as_str().unwrap_or("gelu") {
            "gelu" => Activation::Gelu,
            "relu" => Activation::Relu,
            other => {
                return Err(format!(
                    "unsupported activation {other:?} (supported: gelu, relu)"
                ))
            }
        };
        let id2label = match v["id2label"].as_object() {
            Some(map) if !map.is_empty() => {
                let mut pairs: Vec<(usize, String)> = map
                    .iter()
                    .map(|(k, name)| {
                        let i = k
                            .parse::<usize>()
                            .map_err(|_| format!("id2label key {k:?} is not an integer"))?;
                        Ok((i, name.as_str().unwrap_or_default().to_owned()))
                    })
                    .collect::<std::result::Result<_, String>>()?;
                pairs.sort();
                if pairs.iter().enumerate().any(|(i, (k, _))| i != *k) {
                    return Err("id2label keys must be 0..n-1".into());
                }
                Some(pairs.into_iter().map(|(_, n)| n).collect())
            }
            _ => None,
        };
        Ok(EncoderConfig {
            architecture,
            model_type,
            vocab_size: int(&["vocab_size"])?,
            hidden,
            layers: int(if distil {
                &["n_layers"]
            } else {
                &["num_hidden_layers"]
            })?,
            heads,
            intermediate: int(if distil {
                &["hidden_dim"]
            } else {
                &["intermediate_size"]
            })?,
            max_positions: int(&["max_position_embeddings"])?,
            type_vocab_size: if distil {
                0
            } else {
                size_field(v, "type_vocab_size")?.unwrap_or(2)
            },
            layer_norm_eps: check_epsilon(
                "layer_norm_eps",
                number_field(v, "layer_norm_eps")?.unwrap_or(1e-12),
            )? as f32,
            pad_token_id: v["pad_token_id"].as_u64().unwrap_or(
                if architecture == Architecture::Roberta {
                    1
                } else {
                    0
                },
            ) as u32,
            activation,
            id2label,
            architectures: v["architectures"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// Longest input the position embeddings allow. RoBERTa's positions start after the
    /// padding index (`pad_token_id + 1`), so it loses those slots.
    pub fn max_tokens(&self) -> usize {
        match self.architecture {
            Architecture::Roberta => self
                .max_positions
                .saturating_sub(self.pad_token_id as usize + 1),
            _ => self.max_positions,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }
}
