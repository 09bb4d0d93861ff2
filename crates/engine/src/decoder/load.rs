//! Decoder weights from an HF folder (safetensors or PyTorch pickle) and the shared builder
//! that turns named tensors into the runtime's fused, transposed layout.

use std::path::Path;

use serde_json::Value;
use tokenizers::Tokenizer;

use super::config::{DecoderConfig, DecoderFamily};
use super::{Decoder, DecoderSize, Layer, Linear, Norm, Table, Weight, Weights};
use crate::error::{EngineError, Result};
use crate::weights::WeightFile;

/// Where each tensor of the model lives in a checkpoint.
pub(crate) trait TensorSource {
    fn has(&self, name: &str) -> bool;
    /// The tensor as f32 `rows × cols` (HF's `[out, in]` for linear weights).
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>>;

    /// A linear layer from `[out, in]` weights (named, with their `out`), side by side in the
    /// output; by default dequantised and fused into one f32 matrix.
    fn linear(
        &self,
        parts: &[(String, usize)],
        input: usize,
        bias: Option<Vec<f32>>,
    ) -> Result<Linear> {
        f32_linear(self, parts, input, bias)
    }

    /// A `rows × cols` table (embeddings, LM head); by default in f32.
    fn table(&self, name: &str, rows: usize, cols: usize) -> Result<Table> {
        Ok(Table::F32(self.get(name, &[rows, cols])?))
    }
}

/// [`TensorSource::linear`]'s f32 form: the parts dequantised and fused.
pub(crate) fn f32_linear(
    src: &(impl TensorSource + ?Sized),
    parts: &[(String, usize)],
    input: usize,
    bias: Option<Vec<f32>>,
) -> Result<Linear> {
    let mut got = Vec::with_capacity(parts.len());
    for (name, out) in parts {
        got.push((src.get(name, &[*out, input])?, *out));
    }
    Ok(fused(got, input, bias))
}

impl TensorSource for WeightFile {
    fn has(&self, name: &str) -> bool {
        self.contains(name)
    }
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        WeightFile::get(self, name, shape)
    }
}

/// A safetensors checkpoint whose bf16/f16 matrices stay in 16 bits (`Weight::Half`).
struct SixteenBit<'a>(&'a WeightFile);

impl TensorSource for SixteenBit<'_> {
    fn has(&self, name: &str) -> bool {
        self.0.contains(name)
    }
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.0.get(name, shape)
    }
    fn linear(
        &self,
        parts: &[(String, usize)],
        input: usize,
        bias: Option<Vec<f32>>,
    ) -> Result<Linear> {
        let mut got = Vec::with_capacity(parts.len());
        let mut kind = None;
        for (name, out) in parts {
            match self.0.get_16bit(name, &[*out, input])? {
                Some((bf16, v)) if kind.is_none_or(|k| k == bf16) => {
                    kind = Some(bf16);
                    got.push((v, *out));
                }
                // An f32 part, or mixed kinds: the whole layer in f32.
                _ => return f32_linear(self, parts, input, bias),
            }
        }
        let (bits, output) = transposed_side_by_side(&got, input);
        Ok(Linear {
            w: Weight::Half {
                bits,
                bf16: kind.unwrap_or(true),
            },
            bias,
            input,
            output,
        })
    }
    fn table(&self, name: &str, rows: usize, cols: usize) -> Result<Table> {
        Ok(match self.0.get_16bit(name, &[rows, cols])? {
            Some((bf16, bits)) => Table::Half { bits, bf16 },
            None => Table::F32(self.0.get(name, &[rows, cols])?),
        })
    }
}

/// The names of one checkpoint format.
pub(crate) struct Naming {
    pub embed: String,
    pub final_norm: String,
    pub lm_head: String,
    pub layer: Box<dyn Fn(usize, Part) -> String>,
    /// Added to RMSNorm weights: HF stores Gemma's `w` of `x·(1+w)`; llama.cpp's converter
    /// stores `1+w` already.
    pub norm_offset: f32,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Part {
    AttnNorm,
    Q,
    K,
    V,
    O,
    QNorm,
    KNorm,
    PostAttnNorm,
    FfnNorm,
    Gate,
    Up,
    Down,
    PostFfnNorm,
}

/// Linear layers given as `[out, in]` weights, side by side in one `in × Σout` matrix.
fn fused(parts: Vec<(Vec<f32>, usize)>, input: usize, bias: Option<Vec<f32>>) -> Linear {
    let (w, output) = transposed_side_by_side(&parts, input);
    Linear {
        w: Weight::F32(w),
        bias,
        input,
        output,
    }
}

/// `[out, in]` matrices (with their `out`) transposed into one `in × Σout` matrix.
fn transposed_side_by_side<T: Copy + Default>(
    parts: &[(Vec<T>, usize)],
    input: usize,
) -> (Vec<T>, usize) {
    let output: usize = parts.iter().map(|p| p.1).sum();
    let mut w = vec![T::default(); input * output];
    let mut col = 0;
    for (m, out) in parts {
        for o in 0..*out {
            for i in 0..input {
                w[i * output + col + o] = m[o * input + i];
            }
        }
        col += out;
    }
    (w, output)
}

/// The runtime's weights from a checkpoint of a Llama/Qwen/Gemma-style model.
pub(crate) fn build_weights(
    cfg: &DecoderConfig,
    src: &dyn TensorSource,
    names: &Naming,
) -> Result<Weights> {
    let (d, hd) = (cfg.hidden, cfg.head_dim);
    let (qd, kvd) = (cfg.heads * hd, cfg.kv_heads * hd);
    let rms = |name: &str, n: usize| -> Result<Norm> {
        let mut w = src.get(name, &[n])?;
        for v in &mut w {
            *v += names.norm_offset;
        }
        Ok(Norm::Rms(w))
    };
    let opt_bias = |name: String, n: usize| -> Result<Option<Vec<f32>>> {
        let b = name.replace(".weight", ".bias");
        if src.has(&b) {
            Ok(Some(src.get(&b, &[n])?))
        } else {
            Ok(None)
        }
    };
    let sandwich = matches!(cfg.family, DecoderFamily::Gemma2 | DecoderFamily::Gemma3);
    let qk_norm = matches!(cfg.family, DecoderFamily::Qwen3 | DecoderFamily::Gemma3);
    // Grown as the file supplies layers: the count comes from a config that may be corrupt.
    let mut layers = Vec::new();
    for i in 0..cfg.layers {
        let n = |p: Part| (names.layer)(i, p);
        let bias = match (
            opt_bias(n(Part::Q), qd)?,
            opt_bias(n(Part::K), kvd)?,
            opt_bias(n(Part::V), kvd)?,
        ) {
            (Some(mut bq), Some(bk), Some(bv)) => {
                bq.extend(bk);
                bq.extend(bv);
                Some(bq)
            }
            _ => None,
        };
        let qkv = src.linear(
            &[(n(Part::Q), qd), (n(Part::K), kvd), (n(Part::V), kvd)],
            d,
            bias,
        )?;
        let o = src.linear(&[(n(Part::O), d)], qd, opt_bias(n(Part::O), d)?)?;
        let up = src.linear(&[(n(Part::Gate), cfg.ffn), (n(Part::Up), cfg.ffn)], d, None)?;
        let down = src.linear(&[(n(Part::Down), d)], cfg.ffn, None)?;
        let head_norm = |p: Part| -> Result<Option<Vec<f32>>> {
            if !qk_norm {
                return Ok(None);
            }
            match rms(&n(p), hd)? {
                Norm::Rms(w) => Ok(Some(w)),
                Norm::Layer(..) => Ok(None),
            }
        };
        layers.push(Layer {
            attn_norm: rms(&n(Part::AttnNorm), d)?,
            qkv,
            q_norm: head_norm(Part::QNorm)?,
            k_norm: head_norm(Part::KNorm)?,
            o,
            post_attn_norm: if sandwich {
                Some(rms(&n(Part::PostAttnNorm), d)?)
            } else {
                None
            },
            ffn_norm: rms(&n(Part::FfnNorm), d)?,
            up,
            gated: true,
            down,
            post_ffn_norm: if sandwich {
                Some(rms(&n(Part::PostFfnNorm), d)?)
            } else {
                None
            },
        });
    }
    let embed = src.table(&names.embed, cfg.vocab_size, d)?;
    let lm_head = if cfg.tied_embeddings {
        None
    } else if src.has(&names.lm_head) {
        Some(src.table(&names.lm_head, cfg.vocab_size, d)?)
    } else {
        return Err(EngineError::BadInput(format!(
            "the model does not tie its output to the embeddings, and `{}` is missing",
            names.lm_head
        )));
    };
    Ok(Weights {
        embed,
        positions: None,
        layers,
        final_norm: rms(&names.final_norm, d)?,
        lm_head,
    })
}

fn hf_naming(family: DecoderFamily, prefix: String) -> Naming {
    let sandwich = matches!(family, DecoderFamily::Gemma2 | DecoderFamily::Gemma3);
    let p = prefix.clone();
    Naming {
        embed: format!("{prefix}embed_tokens.weight"),
        final_norm: format!("{prefix}norm.weight"),
        lm_head: "lm_head.weight".into(),
        layer: Box::new(move |i, part| {
            let l = format!("{p}layers.{i}.");
            let s = match part {
                Part::AttnNorm => "input_layernorm",
                Part::Q => "self_attn.q_proj",
                Part::K => "self_attn.k_proj",
                Part::V => "self_attn.v_proj",
                Part::O => "self_attn.o_proj",
                Part::QNorm => "self_attn.q_norm",
                Part::KNorm => "self_attn.k_norm",
                // In Gemma 2/3 `post_attention_layernorm` normalises the attention output;
                // in Llama it is the MLP's input norm.
                Part::PostAttnNorm => "post_attention_layernorm",
                Part::FfnNorm if sandwich => "pre_feedforward_layernorm",
                Part::FfnNorm => "post_attention_layernorm",
                Part::Gate => "mlp.gate_proj",
                Part::Up => "mlp.up_proj",
                Part::Down => "mlp.down_proj",
                Part::PostFfnNorm => "post_feedforward_layernorm",
            };
            format!("{l}{s}.weight")
        }),
        norm_offset: if family.is_gemma() { 1.0 } else { 0.0 },
    }
}

/// GPT-2: fused Conv1D attention, learned positions, LayerNorms with biases. Conv1D stores
/// weights `[in, out]` already, which is the runtime's layout.
fn build_gpt2(cfg: &DecoderConfig, src: &dyn TensorSource, prefix: &str) -> Result<Weights> {
    let d = cfg.hidden;
    let ln = |name: &str| -> Result<Norm> {
        Ok(Norm::Layer(
            src.get(&format!("{prefix}{name}.weight"), &[d])?,
            src.get(&format!("{prefix}{name}.bias"), &[d])?,
        ))
    };
    let conv = |name: &str, input: usize, output: usize| -> Result<Linear> {
        Ok(Linear {
            w: Weight::F32(src.get(&format!("{prefix}{name}.weight"), &[input, output])?),
            bias: Some(src.get(&format!("{prefix}{name}.bias"), &[output])?),
            input,
            output,
        })
    };
    let mut layers = Vec::new();
    for i in 0..cfg.layers {
        let h = format!("h.{i}.");
        layers.push(Layer {
            attn_norm: ln(&format!("{h}ln_1"))?,
            qkv: conv(&format!("{h}attn.c_attn"), d, 3 * d)?,
            q_norm: None,
            k_norm: None,
            o: conv(&format!("{h}attn.c_proj"), d, d)?,
            post_attn_norm: None,
            ffn_norm: ln(&format!("{h}ln_2"))?,
            up: conv(&format!("{h}mlp.c_fc"), d, cfg.ffn)?,
            gated: false,
            down: conv(&format!("{h}mlp.c_proj"), cfg.ffn, d)?,
            post_ffn_norm: None,
        });
    }
    Ok(Weights {
        embed: Table::F32(src.get(&format!("{prefix}wte.weight"), &[cfg.vocab_size, d])?),
        positions: Some(src.get(&format!("{prefix}wpe.weight"), &[cfg.max_positions, d])?),
        layers,
        final_norm: ln("ln_f")?,
        lm_head: None,
    })
}

/// The tokens the tokenizer itself puts before a text (BOS for Llama/Gemma, none for
/// GPT-2/Qwen).
pub(crate) fn leading_specials(tok: &Tokenizer) -> Vec<u32> {
    tok.encode("", true)
        .map(|e| e.get_ids().to_vec())
        .unwrap_or_default()
}

/// `dequantize`: bf16/f16 matrices widened to f32 at load (4 bytes per weight) instead of
/// kept in 16 bits.
pub(crate) fn load_folder(dir: &Path, dequantize: bool) -> Result<Decoder> {
    let config_path = dir.join("config.json");
    let text = crate::data::read_text_file(&config_path)?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| EngineError::file(&config_path, format!("not valid JSON: {e}")))?;
    let cfg = DecoderConfig::from_hf(&v).map_err(|m| EngineError::file(&config_path, m))?;
    let weights_path = crate::encoder_model::weights_file(dir).ok_or_else(|| {
        EngineError::file(
            dir,
            "no model.safetensors or pytorch_model.bin in the folder",
        )
    })?;
    let file = WeightFile::open(&weights_path)?;
    let tok_path = dir.join("tokenizer.json");
    let tokenizer = crate::guard::load_tokenizer_json(&tok_path)?;
    if tokenizer.get_vocab_size(true) > cfg.vocab_size {
        return Err(EngineError::file(
            &tok_path,
            format!(
                "the tokenizer has {} tokens but the model's vocabulary is {}: they do not belong together",
                tokenizer.get_vocab_size(true),
                cfg.vocab_size
            ),
        ));
    }
    let mut cfg = cfg;
    if cfg.family != DecoderFamily::Gpt2 && !file.contains("lm_head.weight") {
        cfg.tied_embeddings = true;
    }
    let built = if cfg.family == DecoderFamily::Gpt2 {
        let prefix = if file.contains("transformer.wte.weight") {
            "transformer."
        } else {
            ""
        };
        build_gpt2(&cfg, &file, prefix)
    } else {
        let prefix = [
            "model.",
            "model.language_model.",
            "language_model.model.",
            "",
        ]
        .into_iter()
        .find(|p| file.contains(&format!("{p}embed_tokens.weight")))
        .ok_or_else(|| {
            EngineError::file(
                &weights_path,
                "no embed_tokens.weight under any known prefix",
            )
        })?;
        let naming = hf_naming(cfg.family, prefix.to_owned());
        if dequantize {
            build_weights(&cfg, &file, &naming)
        } else {
            build_weights(&cfg, &SixteenBit(&file), &naming)
        }
    };
    let weights = built.map_err(|e| match e {
        EngineError::BadInput(m) => EngineError::file(&weights_path, m),
        other => other,
    })?;
    let tensors = file.tensors();
    let parameters: u64 = tensors
        .iter()
        .map(|t| t.shape.iter().product::<usize>() as u64)
        .sum();
    let embedding_parameters: u64 = tensors
        .iter()
        .filter(|t| {
            t.name.contains("embed_tokens")
                || t.name.ends_with("wte.weight")
                || t.name.ends_with("wpe.weight")
        })
        .map(|t| t.shape.iter().product::<usize>() as u64)
        .sum();
    let mut dtypes: Vec<String> = tensors.iter().map(|t| t.dtype.clone()).collect();
    dtypes.sort();
    dtypes.dedup();
    let prefix = leading_specials(&tokenizer);
    Ok(Decoder {
        size: DecoderSize {
            parameters,
            embedding_parameters,
            file_bytes: std::fs::metadata(&weights_path)
                .map(|m| m.len())
                .unwrap_or(0),
            storage: dtypes.join(", "),
            compute: String::new(),
            weight_bytes: 0,
            bits_per_weight: 0.0,
        },
        config: cfg,
        weights,
        tokenizer,
        prefix,
        source: dir.to_owned(),
        format: "safetensors",
        tokenizer_source: "tokenizer.json".into(),
        llama_cpp_gelu: false,
    })
}
