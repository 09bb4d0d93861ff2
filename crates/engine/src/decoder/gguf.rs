//! GGUF files: metadata and tensors through candle's reader, weights dequantised to f32 once
//! at load (a 270M model is 1.1 GB as f32; that buys f32 GEMMs, which on CPU beat
//! block-quantised dot products for the batched prompts scoring sends), and the embedded
//! tokenizer rebuilt as a `tokenizers` BPE model.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value as GgufValue};
use candle_core::Device;
use rayon::prelude::*;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::replace::Replace;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::{AddedToken, Tokenizer};

use super::config::{DecoderConfig, GgufScalar};
use super::load::{build_weights, Naming, Part, TensorSource};
use super::{Decoder, DecoderSize};
use crate::error::{EngineError, Result};

struct GgufTensors<'a> {
    content: &'a Content,
    bytes: &'a [u8],
    path: &'a Path,
    /// Dequantised tensors, filled in parallel before the builder asks for them.
    cache: std::sync::Mutex<HashMap<String, Vec<f32>>>,
}

impl GgufTensors<'_> {
    fn dequantize(&self, name: &str) -> Result<Vec<f32>> {
        let mut reader = Cursor::new(self.bytes);
        let q = self
            .content
            .tensor(&mut reader, name, &Device::Cpu)
            .map_err(|e| EngineError::file(self.path, format!("tensor `{name}`: {e}")))?;
        q.dequantize(&Device::Cpu)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| EngineError::file(self.path, format!("tensor `{name}`: {e}")))
    }
}

impl TensorSource for GgufTensors<'_> {
    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let info =
            self.content.tensor_infos.get(name).ok_or_else(|| {
                EngineError::file(self.path, format!("tensor `{name}` is missing"))
            })?;
        if info.shape.dims() != shape {
            return Err(EngineError::file(
                self.path,
                format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    info.shape.dims()
                ),
            ));
        }
        // Each tensor is asked for once: hand it over instead of copying 1 GB of f32.
        let cached = self.cache.lock().ok().and_then(|mut c| c.remove(name));
        match cached {
            Some(v) => Ok(v),
            None => self.dequantize(name),
        }
    }
}

fn scalar(v: &GgufValue) -> Option<GgufScalar> {
    Some(match v {
        GgufValue::U8(x) => GgufScalar::Num(*x as f64),
        GgufValue::I8(x) => GgufScalar::Num(*x as f64),
        GgufValue::U16(x) => GgufScalar::Num(*x as f64),
        GgufValue::I16(x) => GgufScalar::Num(*x as f64),
        GgufValue::U32(x) => GgufScalar::Num(*x as f64),
        GgufValue::I32(x) => GgufScalar::Num(*x as f64),
        GgufValue::U64(x) => GgufScalar::Num(*x as f64),
        GgufValue::I64(x) => GgufScalar::Num(*x as f64),
        GgufValue::F32(x) => GgufScalar::Num(*x as f64),
        GgufValue::F64(x) => GgufScalar::Num(*x),
        GgufValue::Bool(b) => GgufScalar::Bool(*b),
        GgufValue::String(s) => GgufScalar::Str(s.clone()),
        GgufValue::Array(_) => return None,
    })
}

fn gguf_naming(norm_offset: f32) -> Naming {
    Naming {
        embed: "token_embd.weight".into(),
        final_norm: "output_norm.weight".into(),
        lm_head: "output.weight".into(),
        layer: Box::new(|i, part| {
            let s = match part {
                Part::AttnNorm => "attn_norm",
                Part::Q => "attn_q",
                Part::K => "attn_k",
                Part::V => "attn_v",
                Part::O => "attn_output",
                Part::QNorm => "attn_q_norm",
                Part::KNorm => "attn_k_norm",
                Part::PostAttnNorm => "post_attention_norm",
                Part::FfnNorm => "ffn_norm",
                Part::Gate => "ffn_gate",
                Part::Up => "ffn_up",
                Part::Down => "ffn_down",
                Part::PostFfnNorm => "post_ffw_norm",
            };
            format!("blk.{i}.{s}.weight")
        }),
        norm_offset,
    }
}

pub(crate) fn load_gguf(path: &Path) -> Result<Decoder> {
    let file = std::fs::File::open(path)
        .map_err(|e| EngineError::file(path, format!("cannot open: {e}")))?;
    // SAFETY: the file is only read; a concurrent writer could change what we read, as with
    // any read of a file another process rewrites.
    let mmap = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| EngineError::file(path, format!("cannot map: {e}")))?;
    let content = Content::read(&mut Cursor::new(&mmap[..]))
        .map_err(|e| EngineError::file(path, format!("not a readable GGUF file: {e}")))?;
    let meta: HashMap<String, GgufScalar> = content
        .metadata
        .iter()
        .filter_map(|(k, v)| scalar(v).map(|s| (k.clone(), s)))
        .collect();
    let strings = |key: &str| -> Option<Vec<String>> {
        match content.metadata.get(key) {
            Some(GgufValue::Array(a)) => a
                .iter()
                .map(|v| match v {
                    GgufValue::String(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    };
    let numbers = |key: &str| -> Option<Vec<f64>> {
        match content.metadata.get(key) {
            Some(GgufValue::Array(a)) => a.iter().map(|v| scalar(v)?.as_f64()).collect(),
            _ => None,
        }
    };
    // The architecture first: an unsupported one is the error worth reporting.
    let arch = meta
        .get("general.architecture")
        .and_then(GgufScalar::as_str)
        .unwrap_or("");
    if !matches!(
        super::config::DecoderFamily::from_name(arch),
        Some(f) if f != super::config::DecoderFamily::Gpt2
    ) {
        return Err(EngineError::file(
            path,
            format!(
                "GGUF architecture {arch:?} is not supported (supported: llama, qwen2, qwen3, gemma, gemma2, gemma3)"
            ),
        ));
    }
    let tokens = strings("tokenizer.ggml.tokens").ok_or_else(|| {
        EngineError::file(
            path,
            "no tokenizer.ggml.tokens: the file has no embedded tokenizer",
        )
    })?;
    let mut cfg =
        DecoderConfig::from_gguf(&meta, tokens.len()).map_err(|m| EngineError::file(path, m))?;
    let embd = content
        .tensor_infos
        .get("token_embd.weight")
        .ok_or_else(|| EngineError::file(path, "tensor `token_embd.weight` is missing"))?;
    if embd.shape.dims().first() != Some(&tokens.len()) {
        return Err(EngineError::file(
            path,
            format!(
                "the embedded tokenizer has {} tokens but token_embd.weight has shape {:?}: they do not belong together",
                tokens.len(),
                embd.shape.dims()
            ),
        ));
    }
    cfg.tied_embeddings = !content.tensor_infos.contains_key("output.weight");
    let tokenizer_json = path.with_file_name("tokenizer.json");
    let (tokenizer, tokenizer_source, add_bos) = if tokenizer_json.exists() {
        let t = Tokenizer::from_file(&tokenizer_json).map_err(|e| {
            EngineError::file(&tokenizer_json, format!("cannot load tokenizer: {e}"))
        })?;
        let specials = super::load::leading_specials(&t);
        (
            t,
            "tokenizer.json beside the GGUF file".to_owned(),
            !specials.is_empty(),
        )
    } else {
        let model = meta
            .get("tokenizer.ggml.model")
            .and_then(GgufScalar::as_str)
            .unwrap_or("");
        if model != "llama" {
            return Err(EngineError::file(
                path,
                format!(
                    "embedded tokenizer type {model:?} is not supported (only SentencePiece, \"llama\"); put the model's tokenizer.json next to the .gguf file"
                ),
            ));
        }
        let scores = numbers("tokenizer.ggml.scores")
            .ok_or_else(|| EngineError::file(path, "no tokenizer.ggml.scores"))?;
        let types = numbers("tokenizer.ggml.token_type")
            .ok_or_else(|| EngineError::file(path, "no tokenizer.ggml.token_type"))?;
        let add_space_prefix = meta
            .get("tokenizer.ggml.add_space_prefix")
            .and_then(GgufScalar::as_bool)
            .unwrap_or(true);
        let t = spm_tokenizer(&tokens, &scores, &types, add_space_prefix)
            .map_err(|m| EngineError::file(path, m))?;
        let add_bos = meta
            .get("tokenizer.ggml.add_bos_token")
            .and_then(GgufScalar::as_bool)
            .unwrap_or(true);
        (
            t,
            "embedded in the GGUF file (SentencePiece)".to_owned(),
            add_bos,
        )
    };
    // Dequantise every tensor in parallel; the builder then only rearranges.
    let names: Vec<&String> = content.tensor_infos.keys().collect();
    let mut src = GgufTensors {
        content: &content,
        bytes: &mmap[..],
        path,
        cache: Default::default(),
    };
    let done: Vec<(String, Vec<f32>)> = names
        .par_iter()
        .map(|n| src.dequantize(n).map(|v| ((*n).clone(), v)))
        .collect::<Result<_>>()?;
    src.cache = std::sync::Mutex::new(done.into_iter().collect());
    // llama.cpp's converter stores Gemma's norms as 1 + w already.
    let weights = build_weights(&cfg, &src, &gguf_naming(0.0))?;
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for info in content.tensor_infos.values() {
        *counts.entry(format!("{:?}", info.ggml_dtype)).or_default() += 1;
    }
    let parameters: u64 = content
        .tensor_infos
        .values()
        .map(|t| t.shape.elem_count() as u64)
        .sum();
    let prefix = if add_bos {
        cfg.bos_token_id.into_iter().collect()
    } else {
        Vec::new()
    };
    Ok(Decoder {
        size: DecoderSize {
            parameters,
            embedding_parameters: embd.shape.elem_count() as u64,
            file_bytes: mmap.len() as u64,
            storage: counts
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", "),
        },
        config: cfg,
        weights,
        tokenizer,
        prefix,
        source: path.to_owned(),
        format: "gguf",
        tokenizer_source,
    })
}

/// llama.cpp's token types.
const NORMAL: u32 = 1;
const UNKNOWN: u32 = 2;
const USER_DEFINED: u32 = 4;

/// A SentencePiece-BPE vocabulary (pieces with scores) as a `tokenizers` BPE model: merges
/// are every split of a piece into two pieces, ranked by the merged piece's score, which is
/// how transformers converts SentencePiece models and reproduces llama.cpp's highest-score-
/// first merging. Spaces become `▁`; characters outside the vocabulary fall back to bytes.
pub(crate) fn spm_tokenizer(
    tokens: &[String],
    scores: &[f64],
    types: &[f64],
    add_space_prefix: bool,
) -> std::result::Result<Tokenizer, String> {
    if scores.len() != tokens.len() || types.len() != tokens.len() {
        return Err(format!(
            "tokenizer arrays disagree: {} tokens, {} scores, {} types",
            tokens.len(),
            scores.len(),
            types.len()
        ));
    }
    let vocab: HashMap<String, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let mut merges: Vec<(f64, u32, u32, String, String)> = Vec::new();
    for (i, piece) in tokens.iter().enumerate() {
        if types[i] as u32 != NORMAL {
            continue;
        }
        let cuts: Vec<usize> = piece.char_indices().map(|(b, _)| b).skip(1).collect();
        for c in cuts {
            let (l, r) = piece.split_at(c);
            if let (Some(&a), Some(&b)) = (vocab.get(l), vocab.get(r)) {
                merges.push((scores[i], a, b, l.to_owned(), r.to_owned()));
            }
        }
    }
    merges.sort_by(|x, y| {
        y.0.partial_cmp(&x.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(x.1.cmp(&y.1))
            .then(x.2.cmp(&y.2))
    });
    let unk = tokens
        .iter()
        .zip(types)
        .find(|(_, t)| **t as u32 == UNKNOWN)
        .map(|(s, _)| s.clone());
    let mut builder = BPE::builder()
        .vocab_and_merges(
            vocab
                .into_iter()
                .collect::<tokenizers::models::bpe::Vocab>(),
            merges.into_iter().map(|m| (m.3, m.4)).collect::<Vec<_>>(),
        )
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(u) = unk {
        builder = builder.unk_token(u);
    }
    let bpe = builder.build().map_err(|e| format!("tokenizer: {e}"))?;
    let mut tok = Tokenizer::new(bpe);
    let mut normalizers = Vec::new();
    if add_space_prefix {
        normalizers.push(NormalizerWrapper::Prepend(
            tokenizers::normalizers::prepend::Prepend::new("▁".into()),
        ));
    }
    normalizers.push(NormalizerWrapper::Replace(
        Replace::new(" ", "▁").map_err(|e| format!("tokenizer: {e}"))?,
    ));
    tok.with_normalizer(Some(NormalizerWrapper::Sequence(
        tokenizers::normalizers::Sequence::new(normalizers),
    )))
    .map_err(|e| format!("tokenizer: {e}"))?;
    tok.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(vec![
        DecoderWrapper::Replace(Replace::new("▁", " ").map_err(|e| format!("tokenizer: {e}"))?),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ]))));
    // llama.cpp matches user-defined pieces whole, before BPE, even when special tokens are
    // not parsed; control tokens (BOS, turn markers) are never read from text.
    let user: Vec<AddedToken> = tokens
        .iter()
        .zip(types)
        .filter(|(_, t)| **t as u32 == USER_DEFINED)
        .map(|(s, _)| AddedToken::from(s.clone(), false).normalized(false))
        .collect();
    tok.add_tokens(user)
        .map_err(|e| format!("tokenizer: {e}"))?;
    Ok(tok)
}
