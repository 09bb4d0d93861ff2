//! What a decoder's forward pass needs to know, read from an HF `config.json` or from a GGUF
//! file's metadata. One struct covers every family: the families differ in a handful of
//! switches (norm placement, rotary layout, soft-capping, sliding windows), not in code paths.

use std::collections::HashMap;

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecoderFamily {
    Llama,
    Qwen2,
    Qwen3,
    Gemma,
    Gemma2,
    Gemma3,
    Gpt2,
}

impl DecoderFamily {
    pub fn key(self) -> &'static str {
        match self {
            DecoderFamily::Llama => "llama",
            DecoderFamily::Qwen2 => "qwen2",
            DecoderFamily::Qwen3 => "qwen3",
            DecoderFamily::Gemma => "gemma",
            DecoderFamily::Gemma2 => "gemma2",
            DecoderFamily::Gemma3 => "gemma3",
            DecoderFamily::Gpt2 => "gpt2",
        }
    }

    /// The family of an HF `model_type` or a GGUF `general.architecture`.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "llama" | "mistral" => DecoderFamily::Llama,
            "qwen2" => DecoderFamily::Qwen2,
            "qwen3" => DecoderFamily::Qwen3,
            "gemma" => DecoderFamily::Gemma,
            "gemma2" => DecoderFamily::Gemma2,
            "gemma3" | "gemma3_text" => DecoderFamily::Gemma3,
            "gpt2" => DecoderFamily::Gpt2,
            _ => return None,
        })
    }

    pub fn is_gemma(self) -> bool {
        matches!(
            self,
            DecoderFamily::Gemma | DecoderFamily::Gemma2 | DecoderFamily::Gemma3
        )
    }
}

pub const SUPPORTED_DECODERS: &str = "llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3, gpt2";

/// How a head vector's dimensions are paired for rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// Dimension i with i + d/2 (HF's `rotate_half`).
    Halves,
    /// Dimension 2i with 2i + 1 (llama.cpp's layout for GGUF Llama, whose Q/K rows the
    /// converter permuted to match).
    Pairs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FfnActivation {
    /// SwiGLU: silu(gate) · up.
    Silu,
    /// GeGLU with tanh-approximated GELU (Gemma), or GPT-2's plain tanh-GELU MLP.
    GeluTanh,
}

/// Rotary frequencies for one kind of layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    pub inv_freq: Vec<f32>,
    /// Multiplier on cos/sin (1 except for scalings that change attention temperature).
    pub attention_factor: f32,
}

#[derive(Debug, Clone)]
pub struct DecoderConfig {
    pub family: DecoderFamily,
    pub vocab_size: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub norm_eps: f32,
    /// Longest sequence the model was trained for (a hard limit for learned positions).
    pub max_positions: usize,
    pub rope_layout: RopeLayout,
    /// Frequencies of full-attention layers, and of sliding-window layers where they differ
    /// (Gemma 3's local base); `None` for learned positions (GPT-2).
    pub rope_global: Option<Rope>,
    pub rope_local: Option<Rope>,
    pub sliding_window: Option<usize>,
    /// Per layer: whether it attends through the sliding window.
    pub sliding_layers: Vec<bool>,
    pub attn_scale: f32,
    pub attn_softcap: Option<f32>,
    pub final_softcap: Option<f32>,
    pub activation: FfnActivation,
    /// Embeddings are multiplied by √hidden (Gemma).
    pub scale_embeddings: bool,
    pub tied_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// The padding token, where the model names one (explain's baseline token).
    pub pad_token_id: Option<u32>,
}

fn inv_freq(base: f64, dim: usize) -> Vec<f64> {
    (0..dim / 2)
        .map(|i| 1.0 / base.powf((2 * i) as f64 / dim as f64))
        .collect()
}

/// HF's rope scalings that a checkpoint may carry; others are refused by name.
fn scaled_rope(base: f64, dim: usize, scaling: Option<&Value>) -> Result<Rope, String> {
    let mut freqs = inv_freq(base, dim);
    let kind = scaling
        .and_then(|s| s.get("rope_type").or_else(|| s.get("type")))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |k: &str| scaling.and_then(|s| s.get(k)).and_then(Value::as_f64);
    match kind {
        "default" => {}
        "linear" => {
            let f = num("factor").ok_or("rope scaling `linear` without a factor")?;
            for x in &mut freqs {
                *x /= f;
            }
        }
        "llama3" => {
            // Llama 3.1's frequency-dependent stretch (transformers' _compute_llama3_parameters).
            let factor = num("factor").ok_or("llama3 rope scaling without factor")?;
            let low = num("low_freq_factor").unwrap_or(1.0);
            let high = num("high_freq_factor").unwrap_or(4.0);
            let old = num("original_max_position_embeddings").unwrap_or(8192.0);
            let (low_wl, high_wl) = (old / low, old / high);
            for x in &mut freqs {
                let wavelen = 2.0 * std::f64::consts::PI / *x;
                if wavelen > low_wl {
                    *x /= factor;
                } else if wavelen >= high_wl {
                    let smooth = (old / wavelen - low) / (high - low);
                    *x = (1.0 - smooth) * *x / factor + smooth * *x;
                }
            }
        }
        other => {
            return Err(format!(
                "rope scaling {other:?} is not supported (supported: default, linear, llama3)"
            ))
        }
    }
    Ok(Rope {
        inv_freq: freqs.into_iter().map(|x| x as f32).collect(),
        attention_factor: 1.0,
    })
}

fn id(v: &Value, key: &str) -> Option<u32> {
    match v.get(key) {
        Some(Value::Number(n)) => n.as_u64().map(|x| x as u32),
        // Some configs list several end tokens; the first is the one generation stops on.
        Some(Value::Array(a)) => a.first().and_then(Value::as_u64).map(|x| x as u32),
        _ => None,
    }
}

impl DecoderConfig {
    /// The family named by `config.json`, when it is a decoder lmcompare runs.
    pub fn family_of(v: &Value) -> Option<DecoderFamily> {
        let model_type = v.get("model_type").and_then(Value::as_str)?;
        DecoderFamily::from_name(model_type)
    }

    pub fn from_hf(v: &Value) -> Result<Self, String> {
        let model_type = v
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or("config.json has no model_type")?;
        let family = DecoderFamily::from_name(model_type).ok_or_else(|| {
            format!("model_type {model_type:?} is not a supported decoder ({SUPPORTED_DECODERS})")
        })?;
        let num = |k: &str| crate::config::size_field(v, k);
        let need = |k: &str| num(k)?.ok_or_else(|| format!("config.json has no {k}"));
        let float = |k: &str| crate::config::number_field(v, k);
        if family == DecoderFamily::Gpt2 {
            let hidden = need("n_embd")?;
            let heads = need("n_head")?;
            let activation = v
                .get("activation_function")
                .and_then(Value::as_str)
                .unwrap_or("gelu_new");
            if !matches!(activation, "gelu_new" | "gelu_pytorch_tanh") {
                return Err(format!(
                    "GPT-2 activation {activation:?} is not supported (gelu_new)"
                ));
            }
            let config = DecoderConfig {
                family,
                vocab_size: need("vocab_size")?,
                hidden,
                layers: need("n_layer")?,
                heads,
                kv_heads: heads,
                head_dim: hidden.checked_div(heads).unwrap_or(0),
                ffn: num("n_inner")?.unwrap_or(4 * hidden),
                norm_eps: float("layer_norm_epsilon")?.unwrap_or(1e-5) as f32,
                max_positions: need("n_positions")?,
                rope_layout: RopeLayout::Halves,
                rope_global: None,
                rope_local: None,
                sliding_window: None,
                sliding_layers: vec![false; need("n_layer")?],
                attn_scale: 1.0 / (hidden.checked_div(heads).unwrap_or(0) as f32).sqrt(),
                attn_softcap: None,
                final_softcap: None,
                activation: FfnActivation::GeluTanh,
                scale_embeddings: false,
                tied_embeddings: true,
                bos_token_id: id(v, "bos_token_id"),
                eos_token_id: id(v, "eos_token_id"),
                pad_token_id: id(v, "pad_token_id"),
            };
            config.validate()?;
            return Ok(config);
        }
        let hidden = need("hidden_size")?;
        let heads = need("num_attention_heads")?;
        let layers = need("num_hidden_layers")?;
        let head_dim = num("head_dim")?.unwrap_or(hidden / heads);
        let kv_heads = num("num_key_value_heads")?.unwrap_or(heads);
        if head_dim % 2 != 0 {
            return Err(format!(
                "head size {head_dim} is odd; rotary embeddings need an even head size"
            ));
        }
        if heads % kv_heads != 0 {
            return Err(format!(
                "{heads} attention heads do not split into {kv_heads} key/value groups"
            ));
        }
        // transformers 5 keeps rotary settings in `rope_parameters` (per layer type for
        // Gemma 3); older configs have rope_theta / rope_scaling / rope_local_base_freq.
        let rope_params = v.get("rope_parameters");
        let params_for = |kind: &str| -> Option<&Value> {
            rope_params.and_then(|p| p.get(kind)).or(rope_params)
        };
        let theta_of = |p: Option<&Value>, fallback: f64| -> f64 {
            p.and_then(|p| p.get("rope_theta"))
                .and_then(Value::as_f64)
                .unwrap_or(fallback)
        };
        let theta = float("rope_theta")?.unwrap_or(10_000.0);
        let global_p = params_for("full_attention");
        let global_scaling = global_p
            .filter(|p| p.get("rope_type").is_some())
            .or(v.get("rope_scaling").filter(|s| !s.is_null()));
        let rope_global = scaled_rope(theta_of(global_p, theta), head_dim, global_scaling)?;
        let sliding_window = num("sliding_window")?;
        let layer_types: Option<Vec<bool>> =
            v.get("layer_types").and_then(Value::as_array).map(|a| {
                a.iter()
                    .map(|t| t.as_str() == Some("sliding_attention"))
                    .collect()
            });
        let pattern = num("sliding_window_pattern")?.unwrap_or(6);
        let sliding_layers = match family {
            DecoderFamily::Gemma2 => layer_types.unwrap_or_else(|| {
                // Gemma 2 alternates: even layers slide.
                (0..layers).map(|i| i % 2 == 0).collect()
            }),
            DecoderFamily::Gemma3 => {
                layer_types.unwrap_or_else(|| (0..layers).map(|i| (i + 1) % pattern != 0).collect())
            }
            _ => {
                // Qwen2/3 and Mistral slide only when the config says so.
                let use_sw = v
                    .get("use_sliding_window")
                    .and_then(Value::as_bool)
                    .unwrap_or(family == DecoderFamily::Llama && sliding_window.is_some());
                match layer_types {
                    Some(t) => t,
                    None => vec![use_sw && sliding_window.is_some(); layers],
                }
            }
        };
        if sliding_layers.len() != layers {
            return Err(format!(
                "layer_types lists {} layers, num_hidden_layers is {layers}",
                sliding_layers.len()
            ));
        }
        let rope_local = if family == DecoderFamily::Gemma3 {
            let local_p = rope_params.and_then(|p| p.get("sliding_attention"));
            let base = local_p
                .and_then(|p| p.get("rope_theta"))
                .and_then(Value::as_f64)
                .or(float("rope_local_base_freq")?)
                .unwrap_or(10_000.0);
            let scaling = local_p.filter(|p| p.get("rope_type").is_some());
            Some(scaled_rope(base, head_dim, scaling)?)
        } else {
            None
        };
        let attn_scale = match float("query_pre_attn_scalar")? {
            Some(s) if family.is_gemma() && family != DecoderFamily::Gemma => 1.0 / s.sqrt(),
            _ => 1.0 / (head_dim as f64).sqrt(),
        } as f32;
        let act_name = v
            .get("hidden_activation")
            .or_else(|| v.get("hidden_act"))
            .and_then(Value::as_str)
            .unwrap_or("silu");
        let activation = match act_name {
            "silu" | "swish" => FfnActivation::Silu,
            "gelu_pytorch_tanh" | "gelu_new" | "gelu" if family.is_gemma() => {
                // Gemma's checkpoints were trained with the tanh approximation; transformers
                // forces it for `gelu` too.
                FfnActivation::GeluTanh
            }
            other => {
                return Err(format!(
                    "activation {other:?} is not supported (silu, gelu_pytorch_tanh)"
                ))
            }
        };
        let softcap = |k: &str| -> Result<Option<f32>, String> {
            Ok(float(k)?.filter(|c| *c > 0.0).map(|c| c as f32))
        };
        let config = DecoderConfig {
            family,
            vocab_size: need("vocab_size")?,
            hidden,
            layers,
            heads,
            kv_heads,
            head_dim,
            ffn: need("intermediate_size")?,
            norm_eps: float("rms_norm_eps")?.unwrap_or(1e-6) as f32,
            max_positions: num("max_position_embeddings")?.unwrap_or(4096),
            rope_layout: RopeLayout::Halves,
            rope_global: Some(rope_global),
            rope_local,
            sliding_window: sliding_window.filter(|_| sliding_layers.iter().any(|s| *s)),
            sliding_layers,
            attn_scale,
            attn_softcap: softcap("attn_logit_softcapping")?,
            final_softcap: softcap("final_logit_softcapping")?,
            activation,
            scale_embeddings: family.is_gemma(),
            tied_embeddings: v
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(family.is_gemma()),
            bos_token_id: id(v, "bos_token_id"),
            eos_token_id: id(v, "eos_token_id"),
            pad_token_id: id(v, "pad_token_id"),
        };
        config.validate()?;
        Ok(config)
    }

    /// Sizes and constants a forward pass divides by, indexes with or normalises by: a
    /// corrupt value is refused here, by name, before it becomes a crash or NaN outputs.
    pub fn validate(&self) -> Result<(), String> {
        let max = crate::config::MAX_CONFIG_SIZE as usize;
        for (what, n) in [
            ("vocabulary size", self.vocab_size),
            ("hidden size", self.hidden),
            ("layer count", self.layers),
            ("attention head count", self.heads),
            ("key/value head count", self.kv_heads),
            ("head size", self.head_dim),
            ("feed-forward size", self.ffn),
            ("context length", self.max_positions),
        ] {
            if n == 0 || n > max {
                return Err(format!(
                    "the model's {what} is {n}; it must be between 1 and {max}: the config is corrupt"
                ));
            }
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(format!(
                "{} attention heads do not split into {} key/value groups",
                self.heads, self.kv_heads
            ));
        }
        if self.heads.saturating_mul(self.head_dim) > max {
            return Err(format!(
                "{} heads of size {} are beyond any real model: the config is corrupt",
                self.heads, self.head_dim
            ));
        }
        crate::config::check_epsilon("the normalisation epsilon", f64::from(self.norm_eps))?;
        if !self.attn_scale.is_finite() || self.attn_scale <= 0.0 {
            return Err(format!(
                "the attention scale is {}; the config's query_pre_attn_scalar must be positive",
                self.attn_scale
            ));
        }
        for cap in [self.attn_softcap, self.final_softcap]
            .into_iter()
            .flatten()
        {
            if !cap.is_finite() {
                return Err(format!("a logit soft-cap of {cap} is not a finite number"));
            }
        }
        for rope in [&self.rope_global, &self.rope_local].into_iter().flatten() {
            if rope.inv_freq.iter().any(|f| !f.is_finite()) {
                return Err(
                    "the rotary frequencies are not finite: rope_theta or the rope scaling factor is corrupt"
                        .into(),
                );
            }
        }
        if self.sliding_window == Some(0) {
            return Err("sliding_window is 0; it must be positive".into());
        }
        Ok(())
    }

    /// The configuration in a GGUF file's metadata (`general.architecture` = `arch`, keys
    /// `arch.*`), with llama.cpp's conventions where the file is silent.
    pub fn from_gguf(
        meta: &HashMap<String, GgufScalar>,
        vocab_size: usize,
    ) -> Result<Self, String> {
        const MAX: u64 = crate::config::MAX_CONFIG_SIZE;
        let arch = meta
            .get("general.architecture")
            .and_then(GgufScalar::as_str)
            .ok_or("no general.architecture")?
            .to_owned();
        let family = match DecoderFamily::from_name(&arch) {
            Some(DecoderFamily::Gpt2) | None => {
                return Err(format!(
                    "GGUF architecture {arch:?} is not supported (supported: llama, qwen2, qwen3, gemma, gemma2, gemma3)"
                ))
            }
            Some(f) => f,
        };
        let key = |k: &str| format!("{arch}.{k}");
        let num = |k: &str| meta.get(&key(k)).and_then(GgufScalar::as_f64);
        let size = |k: &str| -> Result<Option<usize>, String> {
            match num(k) {
                None => Ok(None),
                Some(x) if x.fract() == 0.0 && (1.0..=MAX as f64).contains(&x) => {
                    Ok(Some(x as usize))
                }
                Some(x) => Err(format!(
                    "{arch}.{k} is {x}; it must be an integer from 1 to {MAX}: the file is corrupt"
                )),
            }
        };
        let need = |k: &str| size(k)?.ok_or_else(|| format!("no {arch}.{k} in the metadata"));
        let hidden = need("embedding_length")?;
        let heads = need("attention.head_count")?;
        let layers = need("block_count")?;
        let kv_heads = size("attention.head_count_kv")?.unwrap_or(heads);
        let head_dim = size("attention.key_length")?.unwrap_or(hidden / heads);
        let base = num("rope.freq_base").unwrap_or(10_000.0);
        let scaling = match meta
            .get(&key("rope.scaling.type"))
            .and_then(GgufScalar::as_str)
        {
            None | Some("none") => None,
            Some("linear") => Some(serde_json::json!({
                "rope_type": "linear",
                "factor": num("rope.scaling.factor").unwrap_or(1.0),
            })),
            Some(other) => return Err(format!("GGUF rope scaling {other:?} is not supported")),
        };
        let rope_global = scaled_rope(base, head_dim, scaling.as_ref())?;
        let sliding_window = size("attention.sliding_window")?;
        // llama.cpp's fixed patterns: Gemma 2 alternates; Gemma 3 has five sliding layers
        // per full one, with a local rotary base of 10 000.
        let sliding_layers: Vec<bool> = match family {
            DecoderFamily::Gemma2 => (0..layers).map(|i| i % 2 == 0).collect(),
            DecoderFamily::Gemma3 => (0..layers).map(|i| (i + 1) % 6 != 0).collect(),
            _ => vec![false; layers],
        };
        let rope_local = (family == DecoderFamily::Gemma3).then(|| Rope {
            inv_freq: inv_freq(10_000.0, head_dim)
                .into_iter()
                .map(|x| x as f32)
                .collect(),
            attention_factor: 1.0,
        });
        let token = |k: &str| {
            meta.get(&format!("tokenizer.ggml.{k}"))
                .and_then(GgufScalar::as_f64)
                .map(|x| x as u32)
        };
        let config = DecoderConfig {
            family,
            vocab_size,
            hidden,
            layers,
            heads,
            kv_heads,
            head_dim,
            ffn: need("feed_forward_length")?,
            norm_eps: num("attention.layer_norm_rms_epsilon").unwrap_or(1e-6) as f32,
            max_positions: need("context_length")?,
            rope_layout: if family == DecoderFamily::Llama {
                RopeLayout::Pairs
            } else {
                RopeLayout::Halves
            },
            rope_global: Some(rope_global),
            rope_local,
            sliding_window: sliding_window.filter(|_| sliding_layers.iter().any(|s| *s)),
            sliding_layers,
            // llama.cpp scales Gemma 2/3 27B queries by the width per head, all others by
            // the head size (what query_pre_attn_scalar says in their HF configs).
            attn_scale: if family.is_gemma()
                && matches!(
                    (family, layers),
                    (DecoderFamily::Gemma2, 46) | (DecoderFamily::Gemma3, 62)
                ) {
                1.0 / (hidden.checked_div(heads).unwrap_or(0) as f32).sqrt()
            } else {
                1.0 / (head_dim as f32).sqrt()
            },
            attn_softcap: num("attn_logit_softcapping")
                .filter(|c| *c > 0.0)
                .map(|c| c as f32),
            final_softcap: num("final_logit_softcapping")
                .filter(|c| *c > 0.0)
                .map(|c| c as f32),
            activation: if family.is_gemma() {
                FfnActivation::GeluTanh
            } else {
                FfnActivation::Silu
            },
            scale_embeddings: family.is_gemma(),
            tied_embeddings: true,
            bos_token_id: token("bos_token_id"),
            eos_token_id: token("eos_token_id"),
            pad_token_id: token("padding_token_id"),
        };
        config.validate()?;
        Ok(config)
    }

    /// Whether layer `i` attends through the sliding window, and its rotary frequencies.
    pub fn layer_rope(&self, i: usize) -> Option<&Rope> {
        if self.sliding_layers[i] {
            self.rope_local.as_ref().or(self.rope_global.as_ref())
        } else {
            self.rope_global.as_ref()
        }
    }
}

/// A GGUF metadata scalar, owned (the tokenizer arrays are read separately).
#[derive(Debug, Clone)]
pub enum GgufScalar {
    Num(f64),
    Str(String),
    Bool(bool),
}

impl GgufScalar {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            GgufScalar::Num(x) => Some(*x),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufScalar::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            GgufScalar::Bool(b) => Some(*b),
            _ => None,
        }
    }
}
