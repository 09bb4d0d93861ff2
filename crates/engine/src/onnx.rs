//! ONNX encoder graphs through ONNX Runtime (`ort`, loading `libonnxruntime.so` at run time).
//!
//! Why `ort` and not `candle-onnx`: the shipped MiniLM graphs use LayerNormalization,
//! GatherND, IsNaN and Max, which candle-onnx 0.11 does not implement, and its build needs
//! `protoc`; ONNX Runtime runs both graphs as exported, builds offline in seconds, and is the
//! reference implementation of the format.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::session::Session;
use ort::value::{Tensor, ValueType};

use crate::error::{EngineError, Result};
use crate::model::Hidden;

pub struct OnnxEncoder {
    path: PathBuf,
    session: Mutex<Session>,
    inputs: Vec<String>,
    output: String,
}

/// Where `libonnxruntime.so` is looked for: `ORT_DYLIB_PATH`, then an `onnxruntime` folder
/// beside any folder above the model (the asset layout `scripts/fetch-assets.sh` makes),
/// then the asset cache.
pub fn runtime_library(model: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return Some(PathBuf::from(p));
    }
    let mut roots: Vec<PathBuf> = std::fs::canonicalize(model)
        .ok()
        .map(|m| m.ancestors().skip(1).map(Path::to_owned).collect())
        .unwrap_or_default();
    if let Some(c) = std::env::var_os("LMCOMPARE_CACHE") {
        roots.push(PathBuf::from(c).join("assets"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        roots.push(PathBuf::from(h).join(".cache/lmcompare/assets"));
    }
    roots.push(PathBuf::from("assets"));
    for root in roots {
        let dir = root.join("onnxruntime");
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut libs: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("libonnxruntime.so"))
                })
                .collect();
            libs.sort();
            if let Some(l) = libs.into_iter().next() {
                return Some(l);
            }
        }
    }
    None
}

fn init_runtime(model: &Path) -> Result<()> {
    static INIT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        let lib = runtime_library(model).ok_or_else(|| {
            "ONNX Runtime library not found: run scripts/fetch-assets.sh (it installs libonnxruntime.so into the asset cache) or set ORT_DYLIB_PATH".to_owned()
        })?;
        ort::init_from(lib.display().to_string())
            .commit()
            .map(|_| ())
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", lib.display()))
    })
    .clone()
    .map_err(EngineError::Runtime)
}

impl OnnxEncoder {
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::metadata(path)
            .map_err(|e| EngineError::file(path, format!("cannot read: {e}")))?;
        if bytes.len() < 16 {
            return Err(EngineError::file(path, "truncated ONNX file"));
        }
        init_runtime(path)?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let session = Session::builder()
            .and_then(|b| b.with_intra_threads(threads))
            .and_then(|b| b.commit_from_file(path))
            .map_err(|e| EngineError::file(path, format!("not a loadable ONNX model: {e}")))?;
        let inputs: Vec<String> = session.inputs.iter().map(|i| i.name.clone()).collect();
        if !inputs.iter().any(|n| n == "input_ids") {
            return Err(EngineError::file(
                path,
                format!(
                    "the graph has no `input_ids` input (inputs: {})",
                    inputs.join(", ")
                ),
            ));
        }
        // The token-level output: rank 3, preferring the conventional names.
        let rank3: Vec<&str> = session
            .outputs
            .iter()
            .filter(
                |o| matches!(&o.output_type, ValueType::Tensor { shape, .. } if shape.len() == 3),
            )
            .map(|o| o.name.as_str())
            .collect();
        let output = rank3
            .iter()
            .find(|n| n.contains("last_hidden_state") || n.contains("token_embeddings"))
            .or(rank3.first())
            .map(|s| s.to_string())
            .ok_or_else(|| {
                EngineError::file(path, "the graph has no token-level (rank 3) output")
            })?;
        Ok(OnnxEncoder {
            path: path.to_owned(),
            session: Mutex::new(session),
            inputs,
            output,
        })
    }

    /// Token states for a batch (padded for the graph, unpadded in the result).
    pub fn forward(&self, seqs: &[&[u32]]) -> Result<Hidden> {
        let b = seqs.len();
        let l = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut ids = vec![0i64; b * l];
        let mut mask = vec![0i64; b * l];
        for (i, s) in seqs.iter().enumerate() {
            for (j, &t) in s.iter().enumerate() {
                ids[i * l + j] = t as i64;
                mask[i * l + j] = 1;
            }
        }
        let err = |e: ort::Error| {
            EngineError::Runtime(format!("{}: inference failed: {e}", self.path.display()))
        };
        let shape = [b as i64, l as i64];
        let mut feeds = Vec::new();
        for name in &self.inputs {
            let data = match name.as_str() {
                "input_ids" => ids.clone(),
                "attention_mask" => mask.clone(),
                "token_type_ids" => vec![0i64; b * l],
                other => {
                    return Err(EngineError::file(
                        &self.path,
                        format!("unsupported graph input `{other}` (known: input_ids, attention_mask, token_type_ids)"),
                    ))
                }
            };
            let t = Tensor::from_array((shape, data)).map_err(err)?;
            feeds.push((
                std::borrow::Cow::from(name.as_str()),
                ort::session::SessionInputValue::from(t),
            ));
        }
        let mut session = self.session.lock().map_err(|_| {
            EngineError::Runtime("ONNX session poisoned by an earlier panic".into())
        })?;
        let outputs = session.run(feeds).map_err(err)?;
        let (out_shape, data) = outputs[self.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(err)?;
        let dims: Vec<i64> = out_shape.iter().copied().collect();
        if dims.len() != 3 || dims[0] as usize != b || dims[1] as usize != l {
            return Err(EngineError::Runtime(format!(
                "{}: output `{}` has shape {dims:?}, expected [{b}, {l}, hidden]",
                self.path.display(),
                self.output
            )));
        }
        let d = dims[2] as usize;
        let mut packed = Vec::with_capacity(seqs.iter().map(|s| s.len()).sum::<usize>() * d);
        let mut offsets = vec![0usize];
        for (i, s) in seqs.iter().enumerate() {
            packed.extend_from_slice(&data[i * l * d..(i * l + s.len()) * d]);
            offsets.push(offsets.last().copied().unwrap_or(0) + s.len());
        }
        Ok(Hidden {
            data: packed,
            offsets,
            dim: d,
        })
    }
}
