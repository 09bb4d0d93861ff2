//! The Hugging Face sequence-classification head of each encoder family, and writing a
//! model with a newly trained head as an HF-style folder that `predict`, `compare` and
//! `transformers` load like any fine-tuned checkpoint.

use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Value};

use crate::config::{Architecture, EncoderConfig};
use crate::encoder_model::weights_file;
use crate::error::{EngineError, Result};
use crate::model::weight_prefix;
use crate::weights::WeightFile;

/// Where a family keeps its classification head and how it computes it.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadLayout {
    pub architecture: Architecture,
    /// Name (without `.weight`/`.bias`) of the hidden dense layer.
    pub dense: String,
    /// Name of the projection to the labels.
    pub out: String,
    /// `tanh` (BERT pooler, RoBERTa) or `relu` (DistilBERT).
    pub activation: &'static str,
    /// RoBERTa's head drops out the features before its dense layer too.
    pub input_dropout: bool,
    /// The checkpoint's own classifier dropout (`classifier_dropout`, else the hidden or
    /// `seq_classif_dropout` value).
    pub dropout: f64,
    /// `initializer_range` for fresh layers.
    pub init_std: f64,
    /// Prefix of the encoder's weights in the checkpoint (`bert.` or none, ...).
    pub prefix: String,
    pub hidden: usize,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = crate::data::read_text_file(path)?;
    serde_json::from_str(&text).map_err(|e| EngineError::file(path, format!("not valid JSON: {e}")))
}

fn model_class(arch: Architecture) -> (&'static str, &'static str) {
    match arch {
        Architecture::Bert => ("BertForSequenceClassification", "bert."),
        Architecture::Roberta => ("RobertaForSequenceClassification", "roberta."),
        Architecture::DistilBert => ("DistilBertForSequenceClassification", "distilbert."),
    }
}

impl HeadLayout {
    pub fn of_folder(dir: &Path) -> Result<HeadLayout> {
        let raw = read_json(&dir.join("config.json"))?;
        let cfg = EncoderConfig::from_value(&raw)
            .map_err(|m| EngineError::file(dir.join("config.json"), m))?;
        let wpath = weights_file(dir).ok_or_else(|| {
            EngineError::file(
                dir.join("model.safetensors"),
                "missing: training a head needs the model's weights",
            )
        })?;
        let weights = WeightFile::open(&wpath)?;
        let prefix = weight_prefix(&weights)?;
        let f = |k: &str| raw[k].as_f64();
        let (dense, out, activation, input_dropout, dropout) = match cfg.architecture {
            Architecture::Bert => (
                format!("{prefix}pooler.dense"),
                "classifier".to_owned(),
                "tanh",
                false,
                f("classifier_dropout")
                    .or(f("hidden_dropout_prob"))
                    .unwrap_or(0.1),
            ),
            Architecture::Roberta => (
                "classifier.dense".to_owned(),
                "classifier.out_proj".to_owned(),
                "tanh",
                true,
                f("classifier_dropout")
                    .or(f("hidden_dropout_prob"))
                    .unwrap_or(0.1),
            ),
            Architecture::DistilBert => (
                "pre_classifier".to_owned(),
                "classifier".to_owned(),
                "relu",
                false,
                f("seq_classif_dropout").unwrap_or(0.2),
            ),
        };
        Ok(HeadLayout {
            architecture: cfg.architecture,
            dense,
            out,
            activation,
            input_dropout,
            dropout,
            init_std: f("initializer_range").unwrap_or(0.02),
            prefix,
            hidden: cfg.hidden,
        })
    }

    /// The checkpoint's dense layer (`out × in` weight, bias), when it has one: fine-tuning
    /// starts from it, as `from_pretrained` would.
    pub fn pretrained_dense(&self, dir: &Path) -> Result<Option<(Vec<f32>, Vec<f32>)>> {
        let wpath = weights_file(dir).ok_or_else(|| EngineError::file(dir, "no weights"))?;
        let w = WeightFile::open(&wpath)?;
        let name = format!("{}.weight", self.dense);
        if !w.contains(&name) {
            return Ok(None);
        }
        let d = self.hidden;
        Ok(Some((
            w.get(&name, &[d, d])?,
            w.get(&format!("{}.bias", self.dense), &[d])?,
        )))
    }
}

/// A trained head in PyTorch layout, and any fine-tuned encoder tensors by checkpoint name.
pub struct TrainedHead<'a> {
    pub dense_w: &'a [f32],
    pub dense_b: &'a [f32],
    pub out_w: &'a [f32],
    pub out_b: &'a [f32],
    pub encoder: &'a [(String, Vec<f32>)],
}

const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentence_bert_config.json",
];

/// Writes `src`'s encoder with `head` as an HF `*ForSequenceClassification` folder at `dst`:
/// config.json with `id2label`/`label2id`, model.safetensors under HF weight names, and the
/// tokenizer files. The head's `encoder` tensors replace the checkpoint's by name;
/// `provenance` goes into the config under `lmcompare`.
pub fn save_classifier(
    src: &Path,
    dst: &Path,
    layout: &HeadLayout,
    head: &TrainedHead<'_>,
    labels: &[String],
    max_length: Option<usize>,
    provenance: Value,
) -> Result<()> {
    let d = layout.hidden;
    let k = labels.len();
    if head.dense_w.len() != d * d
        || head.out_w.len() != k * d
        || head.out_b.len() != k
        || head.dense_b.len() != d
    {
        return Err(EngineError::BadInput(
            "head tensors do not match the model and label count".into(),
        ));
    }
    std::fs::create_dir_all(dst)
        .map_err(|e| EngineError::file(dst, format!("cannot create: {e}")))?;
    let (class, family_prefix) = model_class(layout.architecture);
    let mut config = read_json(&src.join("config.json"))?;
    let obj = config
        .as_object_mut()
        .ok_or_else(|| EngineError::file(src.join("config.json"), "not a JSON object"))?;
    obj.insert("architectures".into(), json!([class]));
    obj.insert(
        "id2label".into(),
        Value::Object(
            labels
                .iter()
                .enumerate()
                .map(|(i, l)| (i.to_string(), json!(l)))
                .collect(),
        ),
    );
    obj.insert(
        "label2id".into(),
        Value::Object(
            labels
                .iter()
                .enumerate()
                .map(|(i, l)| (l.clone(), json!(i)))
                .collect(),
        ),
    );
    obj.insert("problem_type".into(), json!("single_label_classification"));
    obj.insert("lmcompare".into(), provenance);
    std::fs::write(
        dst.join("config.json"),
        serde_json::to_string_pretty(&config).map_err(|e| EngineError::Runtime(e.to_string()))?
            + "\n",
    )
    .map_err(|e| EngineError::file(dst.join("config.json"), format!("cannot write: {e}")))?;

    let wpath = weights_file(src).ok_or_else(|| EngineError::file(src, "no weights"))?;
    let w = WeightFile::open(&wpath)?;
    // HF heads by family; any head the source had is replaced.
    let head_names = [
        format!("{}.weight", layout.dense),
        format!("{}.bias", layout.dense),
        format!("{}.weight", layout.out),
        format!("{}.bias", layout.out),
    ];
    let rename = |name: &str| -> String {
        if layout.prefix.is_empty() {
            format!("{family_prefix}{name}")
        } else {
            name.to_owned()
        }
    };
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for info in w.tensors() {
        if head_names.contains(&info.name) || !matches!(info.dtype.as_str(), "F32" | "F16" | "BF16")
        {
            // Integer buffers (position_ids) are rebuilt by transformers; heads are replaced.
            continue;
        }
        let values = match head.encoder.iter().find(|(n, _)| *n == info.name) {
            // Fine-tuned encoder layers replace the checkpoint's.
            Some((_, v)) if v.len() == info.shape.iter().product::<usize>() => v.clone(),
            Some((n, _)) => {
                return Err(EngineError::BadInput(format!(
                    "trained tensor {n} does not match the checkpoint's shape"
                )))
            }
            None => w.get(&info.name, &info.shape)?,
        };
        tensors.push((rename(&info.name), info.shape.clone(), f32_bytes(&values)));
    }
    let dense_name = if layout.architecture == Architecture::Bert {
        rename(&layout.dense)
    } else {
        layout.dense.clone()
    };
    tensors.push((
        format!("{dense_name}.weight"),
        vec![d, d],
        f32_bytes(head.dense_w),
    ));
    tensors.push((
        format!("{dense_name}.bias"),
        vec![d],
        f32_bytes(head.dense_b),
    ));
    tensors.push((
        format!("{}.weight", layout.out),
        vec![k, d],
        f32_bytes(head.out_w),
    ));
    tensors.push((
        format!("{}.bias", layout.out),
        vec![k],
        f32_bytes(head.out_b),
    ));
    let views = tensors
        .iter()
        .map(|(n, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (n.clone(), v))
                .map_err(|e| EngineError::Runtime(format!("tensor {n}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_owned(), "pt".to_owned());
    let out = dst.join("model.safetensors");
    safetensors::serialize_to_file(views, Some(meta), &out)
        .map_err(|e| EngineError::file(&out, format!("cannot write: {e}")))?;
    for f in TOKENIZER_FILES {
        let from = src.join(f);
        if from.exists() {
            std::fs::copy(&from, dst.join(f))
                .map_err(|e| EngineError::file(&from, format!("cannot copy: {e}")))?;
        }
    }
    if let Some(m) = max_length {
        // The head was trained on inputs cut at this length; the folder keeps the limit.
        std::fs::write(
            dst.join("sentence_bert_config.json"),
            json!({"max_seq_length": m}).to_string(),
        )
        .map_err(|e| EngineError::file(dst, format!("cannot write: {e}")))?;
    }
    Ok(())
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
