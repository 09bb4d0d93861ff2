//! Model specs as users write them: a local folder in HF layout, an `.onnx` file (its folder
//! holds the tokenizer), or `hf:org/name[@revision]` resolved in the standard Hugging Face
//! cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`) without any
//! network access.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

use crate::error::{EngineError, Result};

#[derive(Debug, Clone)]
pub struct ResolvedModel {
    /// What the user wrote.
    pub spec: String,
    /// The folder with config.json, tokenizer files and weights.
    pub dir: PathBuf,
    /// The ONNX graph, when the model is one.
    pub onnx: Option<PathBuf>,
    /// `int8:` before the spec: the native encoder's linear layers dynamically quantised to
    /// int8 (Q8_0 weights, activations quantised per row at run time).
    pub int8: bool,
}

/// The spec prefix for dynamic int8 quantisation of a native encoder.
pub const INT8_PREFIX: &str = "int8:";

pub fn hub_cache() -> Cache {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(p) => Cache::new(PathBuf::from(p)),
        None => Cache::from_env(),
    }
}

pub fn resolve(spec: &str) -> Result<ResolvedModel> {
    if let Some(rest) = spec.strip_prefix(INT8_PREFIX) {
        let mut r = resolve(rest)?;
        if r.onnx.is_some() {
            return Err(EngineError::BadInput(format!(
                "model {spec:?}: int8: quantises a native encoder's linear layers (safetensors weights); this is an ONNX graph (use an int8 ONNX export instead)"
            )));
        }
        r.spec = spec.to_owned();
        r.int8 = true;
        return Ok(r);
    }
    if let Some(rest) = spec.strip_prefix("hf:") {
        return resolve_hub(spec, rest);
    }
    let path = Path::new(spec);
    if !path.exists() {
        return Err(EngineError::BadInput(format!(
            "model {spec:?}: no such file or folder (a model is a folder in Hugging Face layout, an .onnx file, or hf:org/name[@revision])"
        )));
    }
    if path.is_file() {
        if path.extension().and_then(|e| e.to_str()) == Some("onnx") {
            let dir = path
                .parent()
                .map(Path::to_owned)
                .unwrap_or_else(|| PathBuf::from("."));
            return Ok(ResolvedModel {
                spec: spec.to_owned(),
                dir,
                onnx: Some(path.to_owned()),
                int8: false,
            });
        }
        return Err(EngineError::file(
            path,
            "not a model: expected a folder with config.json, or an .onnx file",
        ));
    }
    let onnx = path.join("model.onnx");
    Ok(ResolvedModel {
        spec: spec.to_owned(),
        dir: path.to_owned(),
        onnx: (onnx.exists() && crate::encoder_model::weights_file(path).is_none()).then_some(onnx),
        int8: false,
    })
}

fn resolve_hub(spec: &str, rest: &str) -> Result<ResolvedModel> {
    let (repo_id, revision) = match rest.split_once('@') {
        Some((r, rev)) => (r, rev),
        None => (rest, "main"),
    };
    if repo_id.split('/').count() != 2 || repo_id.starts_with('/') || repo_id.ends_with('/') {
        return Err(EngineError::BadInput(format!(
            "model {spec:?}: expected hf:org/name[@revision]"
        )));
    }
    let cache = hub_cache();
    let repo = Repo::with_revision(repo_id.to_owned(), RepoType::Model, revision.to_owned());
    let folder = cache.path().join(repo.folder_name());
    // A commit hash names its snapshot directly; a branch or tag goes through refs/.
    let snapshot = if revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit()) {
        let dir = folder.join("snapshots").join(revision);
        dir.join("config.json").exists().then_some(dir)
    } else {
        cache
            .repo(repo)
            .get("config.json")
            .and_then(|p| p.parent().map(Path::to_owned))
    };
    match snapshot {
        Some(dir) => {
            let onnx = dir.join("model.onnx");
            Ok(ResolvedModel {
                spec: spec.to_owned(),
                onnx: (onnx.exists() && crate::encoder_model::weights_file(&dir).is_none()).then_some(onnx),
                dir,
                int8: false,
            })
        }
        None => Err(EngineError::BadInput(format!(
            "model {spec:?} is not in the Hugging Face cache at {} (revision {revision}); download it there first (e.g. `huggingface-cli download {repo_id}`) or give a local folder",
            cache.path().display()
        ))),
    }
}
