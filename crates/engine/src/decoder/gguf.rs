//! GGUF files: metadata and tensors through candle's reader, weights dequantised to f32 once
//! at load (a 270M model is 1.1 GB as f32; that buys f32 GEMMs, which on CPU beat
//! block-quantised dot products for the batched prompts scoring sends), and the embedded
//! tokenizer rebuilt as a `tokenizers` BPE model.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;

use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, TensorInfo, Value as GgufValue};
use candle_core::quantized::GgmlDType;
use candle_core::Device;
use lmcompare_kernels::quant::{BlockType, QuantMatrix};
use memmap2::Mmap;
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
use super::{Decoder, DecoderSize, Linear, QuantPart, Table, Weight};
use crate::error::{EngineError, Result};

struct GgufTensors<'a> {
    content: &'a Content,
    bytes: &'a [u8],
    path: &'a Path,
    /// Dequantised tensors, filled in parallel before the builder asks for them.
    cache: std::sync::Mutex<HashMap<String, Vec<f32>>>,
    /// The mapped file, when block-quantised weights stay in it (not dequantised).
    mapped: Option<Arc<Mmap>>,
}

/// The block type lmcompare's integer kernels read for a GGML storage type (None: the
/// tensor is used as f32).
fn block_type(t: GgmlDType) -> Option<BlockType> {
    Some(match t {
        GgmlDType::Q4_0 => BlockType::Q4_0,
        GgmlDType::Q4_1 => BlockType::Q4_1,
        GgmlDType::Q5_0 => BlockType::Q5_0,
        GgmlDType::Q5_1 => BlockType::Q5_1,
        GgmlDType::Q8_0 => BlockType::Q8_0,
        GgmlDType::Q2K => BlockType::Q2_K,
        GgmlDType::Q3K => BlockType::Q3_K,
        GgmlDType::Q4K => BlockType::Q4_K,
        GgmlDType::Q5K => BlockType::Q5_K,
        GgmlDType::Q6K => BlockType::Q6_K,
        _ => return None,
    })
}

/// The storage type as ggml spells it ("Q4_K", not candle's "Q4K").
fn ggml_name(t: GgmlDType) -> String {
    match block_type(t) {
        Some(b) => b.name().to_owned(),
        None => format!("{t:?}"),
    }
}

impl GgufTensors<'_> {
    /// `name` (`rows × cols`) as blocks in the mapped file, when it is stored in a block type
    /// and the quantised path is on.
    fn quant_part(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
        col: usize,
    ) -> Result<Option<QuantPart>> {
        let Some(file) = &self.mapped else {
            return Ok(None);
        };
        let info = self.info(name, &[rows, cols])?;
        let Some(ty) = block_type(info.ggml_dtype) else {
            return Ok(None);
        };
        let start = (self.content.tensor_data_offset + info.offset) as usize;
        let len = rows * ty.row_bytes(cols);
        let bytes = file.get(start..start + len).unwrap_or(&[]);
        QuantMatrix::new(ty, bytes, rows, cols)
            .map_err(|m| EngineError::file(self.path, format!("tensor `{name}`: {m}")))?;
        Ok(Some(QuantPart {
            file: file.clone(),
            ty,
            start,
            rows,
            cols,
            col,
        }))
    }

    fn info(&self, name: &str, shape: &[usize]) -> Result<&TensorInfo> {
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
        Ok(info)
    }
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
        self.info(name, shape)?;
        // Each tensor is asked for once: hand it over instead of copying 1 GB of f32.
        let cached = self.cache.lock().ok().and_then(|mut c| c.remove(name));
        match cached {
            Some(v) => Ok(v),
            None => self.dequantize(name),
        }
    }

    fn linear(
        &self,
        parts: &[(String, usize)],
        input: usize,
        bias: Option<Vec<f32>>,
    ) -> Result<Linear> {
        let mut quant = Vec::with_capacity(parts.len());
        let mut col = 0;
        for (name, out) in parts {
            match self.quant_part(name, *out, input, col)? {
                Some(p) => quant.push(p),
                // A part in f32/f16 (or the f32 path): the whole layer in f32.
                None => return super::load::f32_linear(self, parts, input, bias),
            }
            col += out;
        }
        Ok(Linear {
            w: Weight::Quant(quant),
            bias,
            input,
            output: col,
        })
    }

    fn table(&self, name: &str, rows: usize, cols: usize) -> Result<Table> {
        match self.quant_part(name, rows, cols, 0)? {
            Some(p) => Ok(Table::Quant(p)),
            None => Ok(Table::F32(self.get(name, &[rows, cols])?)),
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

/// Every tensor of a GGUF file dequantised to f32 (name, storage type, values), in file
/// order: what the f32 path loads, for checking it against the reference dequantisation.
pub fn dequantize_all(path: &Path) -> Result<Vec<(String, String, Vec<f32>)>> {
    let (bytes, content) = open_gguf(path)?;
    let tensors = GgufTensors {
        content: &content,
        bytes: &bytes,
        path,
        cache: std::sync::Mutex::new(HashMap::new()),
        mapped: None,
    };
    let mut names: Vec<(&String, u64)> = content
        .tensor_infos
        .iter()
        .map(|(n, i)| (n, i.offset))
        .collect();
    names.sort_by_key(|(_, off)| *off);
    names
        .into_iter()
        .map(|(n, _)| {
            let ty = format!("{:?}", content.tensor_infos[n].ggml_dtype);
            Ok((n.clone(), ty, tensors.dequantize(n)?))
        })
        .collect()
}

/// [`dequantize_all`] through lmcompare's own block decoder (what the quantised path reads:
/// embedding rows, and the weights its integer kernels see) for every block type.
pub fn dequantize_all_blocks(path: &Path) -> Result<Vec<(String, String, Vec<f32>)>> {
    let (bytes, content) = open_gguf(path)?;
    let mut names: Vec<(&String, &TensorInfo)> = content.tensor_infos.iter().collect();
    names.sort_by_key(|(_, i)| i.offset);
    let fallback = GgufTensors {
        content: &content,
        bytes: &bytes,
        path,
        cache: Default::default(),
        mapped: None,
    };
    names
        .into_iter()
        .map(|(n, info)| {
            let ty = format!("{:?}", info.ggml_dtype);
            let Some(bt) = block_type(info.ggml_dtype) else {
                return Ok((n.clone(), ty, fallback.dequantize(n)?));
            };
            let dims = info.shape.dims();
            let cols = *dims.last().unwrap_or(&0);
            let rows = info.shape.elem_count() / cols.max(1);
            let start = (content.tensor_data_offset + info.offset) as usize;
            let data = &bytes[start..start + rows * bt.row_bytes(cols)];
            let m = QuantMatrix::new(bt, data, rows, cols)
                .map_err(|e| EngineError::file(path, format!("tensor `{n}`: {e}")))?;
            let mut out = vec![0.0f32; rows * cols];
            for (r, o) in out.chunks_exact_mut(cols).enumerate() {
                lmcompare_kernels::quant::dequantize_row(bt, m.row(r), o);
            }
            Ok((n.clone(), ty, out))
        })
        .collect()
}

/// The file mapped, its structure checked against its bytes, and its header read.
fn open_gguf(path: &Path) -> Result<(memmap2::Mmap, Content)> {
    let file = std::fs::File::open(path)
        .map_err(|e| EngineError::file(path, format!("cannot open: {e}")))?;
    // SAFETY: the file is only read; a concurrent writer could change what we read, as with
    // any read of a file another process rewrites.
    let mmap = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| EngineError::file(path, format!("cannot map: {e}")))?;
    super::gguf_check::check_gguf(&mmap)
        .map_err(|m| EngineError::file(path, format!("not a readable GGUF file: {m}")))?;
    let content = Content::read(&mut Cursor::new(&mmap[..]))
        .map_err(|e| EngineError::file(path, format!("not a readable GGUF file: {e}")))?;
    Ok((mmap, content))
}

pub(crate) fn load_gguf(path: &Path, dequantize: bool) -> Result<Decoder> {
    let (mmap, content) = open_gguf(path)?;
    let parameters: u64 = content
        .tensor_infos
        .values()
        .map(|t| t.shape.elem_count() as u64)
        .sum();
    // Say what will not fit before allocating, not by being killed.
    if dequantize {
        crate::guard::check_memory(
            parameters * 4,
            &format!("dequantising its {parameters} weights to f32 (4 bytes each)"),
        )
    } else {
        let f32_values: u64 = content
            .tensor_infos
            .values()
            .filter(|t| block_type(t.ggml_dtype).is_none())
            .map(|t| t.shape.elem_count() as u64)
            .sum();
        crate::guard::check_memory(
            mmap.len() as u64 + f32_values * 4,
            &format!(
                "its {} bytes of weights (mapped from the file, kept quantised) and {f32_values} f32 values",
                mmap.len()
            ),
        )
    }
    .map_err(|m| EngineError::file(path, m))?;
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
        let t = crate::guard::load_tokenizer_json(&tokenizer_json)?;
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
        let types = numbers("tokenizer.ggml.token_type")
            .unwrap_or_else(|| vec![NORMAL as f64; tokens.len()]);
        let flag = |k: &str, default: bool| {
            meta.get(&format!("tokenizer.ggml.{k}"))
                .and_then(GgufScalar::as_bool)
                .unwrap_or(default)
        };
        let (t, kind) = match model {
            "llama" => {
                let scores = numbers("tokenizer.ggml.scores")
                    .ok_or_else(|| EngineError::file(path, "no tokenizer.ggml.scores"))?;
                let t = spm_tokenizer(&tokens, &scores, &types, flag("add_space_prefix", true))
                    .map_err(|m| EngineError::file(path, m))?;
                (t, "SentencePiece")
            }
            "gpt2" => {
                let merges = strings("tokenizer.ggml.merges")
                    .ok_or_else(|| EngineError::file(path, "no tokenizer.ggml.merges"))?;
                let pre = meta
                    .get("tokenizer.ggml.pre")
                    .and_then(GgufScalar::as_str)
                    .unwrap_or("default");
                let t = byte_level_tokenizer(&tokens, &merges, &types, pre)
                    .map_err(|m| EngineError::file(path, m))?;
                (t, "byte-level BPE")
            }
            other => {
                return Err(EngineError::file(
                    path,
                    format!(
                        "embedded tokenizer type {other:?} is not supported (SentencePiece \"llama\", byte-level BPE \"gpt2\"); put the model's tokenizer.json next to the .gguf file"
                    ),
                ))
            }
        };
        // SentencePiece models add BOS unless told not to; byte-level ones (Qwen) do not.
        let add_bos = flag("add_bos_token", model == "llama");
        (t, format!("embedded in the GGUF file ({kind})"), add_bos)
    };
    let mmap = Arc::new(mmap);
    let mut src = GgufTensors {
        content: &content,
        bytes: &mmap[..],
        path,
        cache: Default::default(),
        mapped: (!dequantize).then(|| mmap.clone()),
    };
    // The f32 path dequantises every tensor in parallel; the builder then only rearranges.
    if dequantize {
        let names: Vec<&String> = content.tensor_infos.keys().collect();
        let done: Vec<(String, Vec<f32>)> = names
            .par_iter()
            .map(|n| src.dequantize(n).map(|v| ((*n).clone(), v)))
            .collect::<Result<_>>()?;
        src.cache = std::sync::Mutex::new(done.into_iter().collect());
    }
    // llama.cpp's converter stores Gemma's norms as 1 + w already.
    let weights = build_weights(&cfg, &src, &gguf_naming(0.0))?;
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for info in content.tensor_infos.values() {
        *counts.entry(ggml_name(info.ggml_dtype)).or_default() += 1;
    }
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
            compute: String::new(),
            weight_bytes: 0,
            bits_per_weight: 0.0,
        },
        config: cfg,
        weights,
        tokenizer,
        prefix,
        source: path.to_owned(),
        format: "gguf",
        tokenizer_source,
        llama_cpp_gelu: !dequantize,
    })
}

/// llama.cpp's token types.
const NORMAL: u32 = 1;
const CONTROL: u32 = 3;
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

/// llama.cpp's pre-tokenizer patterns (`llama-vocab.cpp`) for the byte-level vocabularies
/// it names in `tokenizer.ggml.pre`.
fn pre_tokenizer_pattern(pre: &str) -> Option<&'static str> {
    Some(match pre {
        "default" | "gpt2" | "gpt-2" => {
            r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
        }
        "llama3" | "llama-bpe" | "llama-v3" => {
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
        }
        "qwen2" => {
            r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
        }
        _ => return None,
    })
}

/// A byte-level BPE vocabulary (GPT-2 style: tokens in byte-to-unicode form, merges as
/// "a b") as a `tokenizers` model, split first by the pattern llama.cpp uses for `pre`.
/// Control tokens are special (never read from text, skipped when decoding).
pub(crate) fn byte_level_tokenizer(
    tokens: &[String],
    merges: &[String],
    types: &[f64],
    pre: &str,
) -> std::result::Result<Tokenizer, String> {
    use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
    use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
    use tokenizers::pre_tokenizers::PreTokenizerWrapper;
    use tokenizers::SplitDelimiterBehavior;

    let pattern = pre_tokenizer_pattern(pre).ok_or_else(|| {
        format!(
            "byte-level pre-tokenizer {pre:?} is not supported (default/gpt2, llama3/llama-bpe, qwen2); put the model's tokenizer.json next to the .gguf file"
        )
    })?;
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let pairs: Vec<(String, String)> = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| format!("tokenizer merge {m:?} is not two pieces"))
        })
        .collect::<std::result::Result<_, _>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, pairs)
        .build()
        .map_err(|e| format!("tokenizer: {e}"))?;
    let mut tok = Tokenizer::new(bpe);
    let split = Split::new(
        SplitPattern::Regex(pattern.to_owned()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| format!("tokenizer: {e}"))?;
    tok.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(PreSequence::new(vec![
        PreTokenizerWrapper::Split(split),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false)),
    ]))));
    tok.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevelDecoder::default())));
    let special: Vec<AddedToken> = tokens
        .iter()
        .zip(types)
        .filter(|(_, t)| **t as u32 == CONTROL)
        .map(|(s, _)| AddedToken::from(s.clone(), true))
        .collect();
    tok.add_special_tokens(special)
        .map_err(|e| format!("tokenizer: {e}"))?;
    Ok(tok)
}
