//! A ready-to-run text encoder: tokenizer + network (native or ONNX) + pooling + labels.

use std::path::Path;
use std::time::Instant;

use crate::config::EncoderConfig;
use crate::error::{EngineError, Result};
use crate::model::{Encoder, Hidden};
use crate::onnx::OnnxEncoder;
use crate::pooling::{Pooling, PoolingMode};
use crate::spec::ResolvedModel;
use crate::tokenize::{Encoded, TextTokenizer};
use crate::weights::WeightFile;

#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Cap on tokens per input (special tokens included); the model's own limit otherwise.
    pub max_length: Option<usize>,
    pub pooling: Option<PoolingMode>,
    pub normalize: Option<bool>,
}

/// What runs an encoder's network: lmcompare's native kernels ([`Encoder`]) or an ONNX
/// Runtime graph ([`OnnxEncoder`]). [`TextEncoder`] adds the tokenizer, pooling and labels.
pub trait EncoderNetwork {
    /// The software that runs it, for reports.
    fn backend(&self) -> &'static str;
    /// Token states of a batch: after the last layer, or after the first `layers`.
    fn forward(&self, seqs: &[&[u32]], layers: Option<usize>) -> Result<Hidden>;
    /// The classification head's logits of a batch's states, where there is a head.
    fn head_logits(&self, hidden: &Hidden) -> Option<Vec<Vec<f32>>>;
    /// Why `classify` cannot run on this network, when it cannot.
    fn missing_head(&self, spec: &str) -> Option<String>;
}

impl EncoderNetwork for Encoder {
    fn backend(&self) -> &'static str {
        if self.int8 {
            "lmcompare-native, int8 linear layers (Q8_0 weights, activations quantised at run time)"
        } else {
            "lmcompare-native"
        }
    }

    fn forward(&self, seqs: &[&[u32]], layers: Option<usize>) -> Result<Hidden> {
        match layers {
            None => Encoder::forward(self, seqs),
            Some(n) => self.forward_layers(seqs, n),
        }
    }

    fn head_logits(&self, hidden: &Hidden) -> Option<Vec<Vec<f32>>> {
        self.logits(hidden)
    }

    fn missing_head(&self, spec: &str) -> Option<String> {
        self.num_labels.is_none().then(|| format!(
            "model {spec} has no classification head (no classifier weights in model.safetensors); use `embed`, or `compare --task probe` to train one"
        ))
    }
}

impl EncoderNetwork for OnnxEncoder {
    fn backend(&self) -> &'static str {
        "onnxruntime"
    }

    fn forward(&self, seqs: &[&[u32]], layers: Option<usize>) -> Result<Hidden> {
        match layers {
            None => OnnxEncoder::forward(self, seqs),
            Some(_) => Err(EngineError::BadInput(
                "an ONNX graph gives final states only; intermediate layers need the safetensors weights".into(),
            )),
        }
    }

    fn head_logits(&self, _hidden: &Hidden) -> Option<Vec<Vec<f32>>> {
        None
    }

    fn missing_head(&self, spec: &str) -> Option<String> {
        Some(format!(
            "model {spec}: an ONNX encoder graph has no classification head; use `embed`, or `compare --task probe`"
        ))
    }
}

pub struct TextEncoder {
    pub resolved: ResolvedModel,
    pub config: Option<EncoderConfig>,
    pub tokenizer: TextTokenizer,
    pub pooling: Pooling,
    network: Box<dyn EncoderNetwork>,
    labels: Option<Vec<String>>,
}

/// Time spent in one batch, for latency statistics.
#[derive(Debug, Clone, Copy)]
pub struct BatchTiming {
    pub examples: usize,
    pub tokens: usize,
    pub seconds: f64,
}

fn sentence_max_length(dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join("sentence_bert_config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["max_seq_length"].as_u64().map(|x| x as usize)
}

impl TextEncoder {
    pub fn load(resolved: ResolvedModel, opts: &LoadOptions) -> Result<Self> {
        let dir = resolved.dir.clone();
        let config_path = dir.join("config.json");
        let config = if config_path.exists() {
            Some(EncoderConfig::from_file(&config_path)?)
        } else if resolved.onnx.is_none() {
            return Err(EngineError::file(
                &config_path,
                "missing: a model folder needs config.json",
            ));
        } else {
            None
        };
        let model_limit = config.as_ref().map(|c| c.max_tokens()).unwrap_or(512);
        let mut max_length = model_limit;
        if let Some(m) = sentence_max_length(&dir) {
            max_length = max_length.min(m);
        }
        if let Some(m) = opts.max_length {
            if m < 2 {
                return Err(EngineError::BadInput(
                    "--max-length must be at least 2".into(),
                ));
            }
            max_length = m.min(model_limit);
        }
        let tokenizer = TextTokenizer::load(&dir, max_length)?;
        let mut pooling = Pooling::from_folder(&dir);
        if let Some(mode) = opts.pooling {
            pooling.mode = mode;
        }
        if let Some(n) = opts.normalize {
            pooling.normalize = n;
        }
        let (network, labels): (Box<dyn EncoderNetwork>, _) = match &resolved.onnx {
            Some(path) => (Box::new(OnnxEncoder::load(path)?), None),
            None => {
                let cfg = config
                    .clone()
                    .ok_or_else(|| EngineError::file(&config_path, "missing"))?;
                let weights_path = weights_file(&dir).ok_or_else(|| {
                    EngineError::file(
                        dir.join("model.safetensors"),
                        "missing: the model's weights are expected in model.safetensors or pytorch_model.bin",
                    )
                })?;
                let weights = WeightFile::open(&weights_path)?;
                let mut enc = Encoder::load(cfg, &weights)?;
                if resolved.int8 {
                    enc.quantize_int8()?;
                }
                let labels = match (enc.num_labels, &enc.config.id2label) {
                    (Some(n), Some(names)) if names.len() != n => {
                        return Err(EngineError::file(
                            &config_path,
                            format!(
                                "id2label names {} label(s) but the classification head in {} has {n} outputs; the config does not belong to these weights",
                                names.len(),
                                weights_path.display()
                            ),
                        ))
                    }
                    (Some(_), Some(names)) => Some(names.clone()),
                    (Some(n), None) => Some((0..n).map(|i| format!("LABEL_{i}")).collect()),
                    (None, _) => None,
                };
                (Box::new(enc), labels)
            }
        };
        if let Some(cfg) = &config {
            if tokenizer.max_id() as usize >= cfg.vocab_size {
                return Err(EngineError::BadInput(format!(
                    "{}: the tokenizer ({}, ids up to {}) does not fit the model's embedding matrix of {} tokens",
                    dir.display(),
                    tokenizer.source(),
                    tokenizer.max_id(),
                    cfg.vocab_size
                )));
            }
        }
        Ok(TextEncoder {
            resolved,
            config,
            tokenizer,
            pooling,
            network,
            labels,
        })
    }

    pub fn backend(&self) -> &'static str {
        self.network.backend()
    }

    /// Class names of the classification head, if the model has one.
    pub fn labels(&self) -> Option<&[String]> {
        self.labels.as_deref()
    }

    pub fn hidden_size(&self) -> Option<usize> {
        self.config.as_ref().map(|c| c.hidden)
    }

    fn forward(&self, batch: &[&Encoded], layers: Option<usize>) -> Result<Hidden> {
        let seqs: Vec<&[u32]> = batch.iter().map(|e| e.ids.as_slice()).collect();
        self.network.forward(&seqs, layers).map_err(|e| match e {
            EngineError::BadInput(m) => {
                EngineError::BadInput(format!("model {}: {m}", self.resolved.spec))
            }
            other => other,
        })
    }

    /// Runs `encoded` in batches of `batch_size`, shortest inputs together so batches waste
    /// nothing on padding, calling `each` with every batch's indices and states.
    pub fn run_batches(
        &self,
        encoded: &[Encoded],
        batch_size: usize,
        each: impl FnMut(&[usize], &Hidden, BatchTiming) -> Result<()>,
    ) -> Result<()> {
        self.run_batches_to(encoded, batch_size, None, each)
    }

    /// As [`run_batches`](Self::run_batches), with the states after the first `layers`
    /// layers (all when `None`).
    pub fn run_batches_to(
        &self,
        encoded: &[Encoded],
        batch_size: usize,
        layers: Option<usize>,
        mut each: impl FnMut(&[usize], &Hidden, BatchTiming) -> Result<()>,
    ) -> Result<()> {
        let mut order: Vec<usize> = (0..encoded.len()).collect();
        order.sort_by_key(|&i| encoded[i].ids.len());
        for chunk in order.chunks(batch_size.max(1)) {
            let batch: Vec<&Encoded> = chunk.iter().map(|&i| &encoded[i]).collect();
            let start = Instant::now();
            let in_input_order =
                |e: EngineError| e.remap_input(|i| chunk.get(i).copied().unwrap_or(i));
            let hidden = self.forward(&batch, layers).map_err(in_input_order)?;
            crate::finite::check_rows(
                &hidden.data,
                hidden.dim,
                || "the model's output states".into(),
                |row| crate::finite::sequence_of_row(&hidden.offsets, row),
            )
            .map_err(in_input_order)?;
            let timing = BatchTiming {
                examples: chunk.len(),
                tokens: batch.iter().map(|e| e.ids.len()).sum(),
                seconds: start.elapsed().as_secs_f64(),
            };
            each(chunk, &hidden, timing)?;
        }
        Ok(())
    }

    /// Classification-head logits of a batch's states (native models with a head);
    /// `inputs` are the batch's input indices, named when a logit is not finite.
    pub fn head_logits(&self, hidden: &Hidden, inputs: &[usize]) -> Result<Option<Vec<Vec<f32>>>> {
        let Some(logits) = self.network.head_logits(hidden) else {
            return Ok(None);
        };
        for (j, row) in logits.iter().enumerate() {
            crate::finite::check_rows(
                row,
                row.len(),
                || "the classification head".into(),
                |_| inputs.get(j).copied().unwrap_or(j),
            )?;
        }
        Ok(Some(logits))
    }

    /// Pooled sentence embeddings in input order.
    pub fn embed(&self, encoded: &[Encoded], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        let mut out = vec![Vec::new(); encoded.len()];
        self.run_batches(encoded, batch_size, |idx, hidden, _| {
            for (j, &i) in idx.iter().enumerate() {
                out[i] = self.pooling.pool(hidden.sequence(j), hidden.dim);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Class probabilities (softmax of the head's logits) in input order.
    pub fn classify(&self, encoded: &[Encoded], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        if let Some(why) = self.network.missing_head(&self.resolved.spec) {
            return Err(EngineError::BadInput(why));
        }
        let mut out = vec![Vec::new(); encoded.len()];
        self.run_batches(encoded, batch_size, |idx, hidden, _| {
            let logits = self.head_logits(hidden, idx)?.unwrap_or_default();
            for (j, &i) in idx.iter().enumerate() {
                out[i] = softmax(&logits[j]);
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// The weights of a model folder: `model.safetensors`, else `pytorch_model.bin`.
pub fn weights_file(dir: &Path) -> Option<std::path::PathBuf> {
    ["model.safetensors", "pytorch_model.bin"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists())
}

/// The files whose content identifies a model: its config and its weights (or ONNX graph).
pub fn identity_files(resolved: &ResolvedModel) -> Vec<std::path::PathBuf> {
    let mut files = vec![resolved.dir.join("config.json")];
    if let Some(w) = resolved
        .onnx
        .clone()
        .or_else(|| weights_file(&resolved.dir))
    {
        files.push(w);
    }
    files.retain(|f| f.exists());
    files
}

/// Softmax computed in f64, so probability rows sum to 1 to double precision.
pub fn softmax64(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let exp: Vec<f64> = logits.iter().map(|&v| (v as f64 - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

pub fn softmax(logits: &[f32]) -> Vec<f32> {
    softmax64(logits).into_iter().map(|p| p as f32).collect()
}
