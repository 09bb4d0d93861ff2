//! Sentence embeddings from token states: mean / CLS / max pooling and L2 normalisation,
//! configured the way the folder's sentence-transformers modules say.

use std::path::Path;

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolingMode {
    Mean,
    Cls,
    Max,
}

impl PoolingMode {
    pub fn key(self) -> &'static str {
        match self {
            PoolingMode::Mean => "mean",
            PoolingMode::Cls => "cls",
            PoolingMode::Max => "max",
        }
    }
}

impl std::str::FromStr for PoolingMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mean" => Ok(PoolingMode::Mean),
            "cls" => Ok(PoolingMode::Cls),
            "max" => Ok(PoolingMode::Max),
            _ => Err(format!("--pooling must be mean, cls or max, not {s:?}")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pooling {
    pub mode: PoolingMode,
    pub normalize: bool,
}

impl Pooling {
    /// Reads `modules.json` and the Pooling module's config; without them, mean pooling and
    /// no normalisation (the sentence-transformers default for a bare encoder).
    pub fn from_folder(dir: &Path) -> Pooling {
        let read = |p: &Path| -> Option<Value> {
            serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
        };
        let mut pooling = Pooling {
            mode: PoolingMode::Mean,
            normalize: false,
        };
        let Some(modules) = read(&dir.join("modules.json")) else {
            return pooling;
        };
        for m in modules.as_array().into_iter().flatten() {
            let kind = m["type"].as_str().unwrap_or("");
            if kind.ends_with("Normalize") {
                pooling.normalize = true;
            }
            if kind.ends_with("Pooling") {
                let path = dir
                    .join(m["path"].as_str().unwrap_or(""))
                    .join("config.json");
                if let Some(c) = read(&path) {
                    if c["pooling_mode_cls_token"].as_bool() == Some(true) {
                        pooling.mode = PoolingMode::Cls;
                    } else if c["pooling_mode_max_tokens"].as_bool() == Some(true) {
                        pooling.mode = PoolingMode::Max;
                    }
                }
            }
        }
        pooling
    }

    /// Pools one sequence's token states (`tokens × dim`, no padding).
    pub fn pool(&self, states: &[f32], dim: usize) -> Vec<f32> {
        let n = states.len() / dim;
        let mut v = match self.mode {
            PoolingMode::Cls => states[..dim].to_vec(),
            PoolingMode::Mean => {
                let mut acc = vec![0.0f64; dim];
                for row in states.chunks_exact(dim) {
                    for (a, x) in acc.iter_mut().zip(row) {
                        *a += *x as f64;
                    }
                }
                acc.iter().map(|a| (a / n as f64) as f32).collect()
            }
            PoolingMode::Max => {
                let mut acc = vec![f32::NEG_INFINITY; dim];
                for row in states.chunks_exact(dim) {
                    for (a, x) in acc.iter_mut().zip(row) {
                        *a = a.max(*x);
                    }
                }
                acc
            }
        };
        if self.normalize {
            let norm = v
                .iter()
                .map(|x| (*x as f64) * (*x as f64))
                .sum::<f64>()
                .sqrt();
            // sentence-transformers divides by max(norm, 1e-12).
            let norm = norm.max(1e-12) as f32;
            for x in &mut v {
                *x /= norm;
            }
        }
        v
    }
}
