//! Writes GGUF files from the tiny transformers checkpoints the way llama.cpp's
//! `convert_hf_to_gguf.py` does, for the GGUF parity tests and the GGUF fuzz target.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value as G};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use lmcompare_engine::weights::WeightFile;
use serde_json::Value;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// llama.cpp's `LlamaModel.permute`: within each head, rows (j·hd/2 + i) move to (2i + j).
fn permute(w: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    let rows = w.len() / cols;
    let hd = rows / heads;
    let mut out = vec![0.0; w.len()];
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..hd / 2 {
                let src = h * hd + j * (hd / 2) + i;
                let dst = h * hd + 2 * i + j;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

fn gguf_name(hf: &str) -> Option<String> {
    let hf = hf.strip_prefix("model.").unwrap_or(hf);
    let fixed = match hf {
        "embed_tokens.weight" => Some("token_embd.weight"),
        "norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_owned());
    }
    let rest = hf.strip_prefix("layers.")?;
    let (i, part) = rest.split_once('.')?;
    let g = match part {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        _ => return None,
    };
    Some(format!("blk.{i}.{g}"))
}

/// The tokenizer of a tiny checkpoint as llama.cpp's converter embeds a byte-level BPE one:
/// tokens by id, "a b" merges, token types (3 = control), and the pre-tokenizer name.
fn tokenizer_metadata(src: &Path, pre: &str) -> Vec<(String, G)> {
    let t: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("tokenizer.json")).unwrap())
            .unwrap();
    let vocab = t["model"]["vocab"].as_object().unwrap();
    let mut tokens = vec![String::new(); vocab.len()];
    for (piece, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = piece.clone();
    }
    let special: Vec<u64> = t["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_u64().unwrap())
        .collect();
    let merges = t["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            G::String(format!(
                "{} {}",
                m[0].as_str().unwrap(),
                m[1].as_str().unwrap()
            ))
        })
        .collect();
    vec![
        ("tokenizer.ggml.model".into(), G::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), G::String(pre.into())),
        (
            "tokenizer.ggml.tokens".into(),
            G::Array(tokens.into_iter().map(G::String).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            G::Array(
                (0..vocab.len() as u64)
                    .map(|i| G::I32(if special.contains(&i) { 3 } else { 1 }))
                    .collect(),
            ),
        ),
        ("tokenizer.ggml.merges".into(), G::Array(merges)),
        ("tokenizer.ggml.add_bos_token".into(), G::Bool(true)),
    ]
}

/// Writes `dir/model.gguf` (F32 tensors, the tokenizer embedded with pre-tokenizer `pre`)
/// and copies the tokenizer.json beside it.
pub fn convert(model: &str, dir: &Path, pre: &str) -> PathBuf {
    convert_as(model, dir, pre, GgmlDType::F32)
}

/// [`convert`] with every matrix quantised to `matrices` by candle's quantisers (llama.cpp's
/// reference ones, ported); vectors (norms) stay F32.
#[allow(dead_code)]
pub fn convert_as(model: &str, dir: &Path, pre: &str, matrices: GgmlDType) -> PathBuf {
    let src = root().join("tests/fixtures/models").join(model);
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let arch = cfg["model_type"].as_str().unwrap().to_owned();
    let heads = cfg["num_attention_heads"].as_u64().unwrap() as usize;
    let kv = cfg["num_key_value_heads"].as_u64().unwrap() as usize;
    let w = WeightFile::open(&src.join("model.safetensors")).unwrap();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for (name, shape) in w.names() {
        let Some(g) = gguf_name(&name) else {
            panic!("{model}: no GGUF name for {name}")
        };
        let mut data = w.get(&name, &shape).unwrap();
        if arch == "llama" && (g.ends_with("attn_q.weight") || g.ends_with("attn_k.weight")) {
            let n = if g.ends_with("attn_q.weight") {
                heads
            } else {
                kv
            };
            data = permute(&data, n, shape[1]);
        }
        let t = Tensor::from_vec(data, shape.as_slice(), &Device::Cpu).unwrap();
        let ty = if shape.len() == 2 {
            matrices
        } else {
            GgmlDType::F32
        };
        tensors.push((g, QTensor::quantize(&t, ty).unwrap()));
    }
    let num = |k: &str| G::U32(cfg[k].as_u64().unwrap() as u32);
    let theta = cfg["rope_parameters"]["rope_theta"].as_f64().unwrap() as f32;
    let mut meta: Vec<(String, G)> = vec![
        ("general.architecture".into(), G::String(arch.clone())),
        (format!("{arch}.embedding_length"), num("hidden_size")),
        (format!("{arch}.block_count"), num("num_hidden_layers")),
        (
            format!("{arch}.feed_forward_length"),
            num("intermediate_size"),
        ),
        (
            format!("{arch}.attention.head_count"),
            num("num_attention_heads"),
        ),
        (
            format!("{arch}.attention.head_count_kv"),
            num("num_key_value_heads"),
        ),
        (
            format!("{arch}.context_length"),
            num("max_position_embeddings"),
        ),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            G::F32(cfg["rms_norm_eps"].as_f64().unwrap() as f32),
        ),
        (format!("{arch}.rope.freq_base"), G::F32(theta)),
        ("tokenizer.ggml.bos_token_id".into(), G::U32(0)),
        ("tokenizer.ggml.eos_token_id".into(), G::U32(1)),
    ];
    meta.extend(tokenizer_metadata(&src, pre));
    let path = dir.join("model.gguf");
    let mut f = std::fs::File::create(&path).unwrap();
    let meta_refs: Vec<(&str, &G)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut f, &meta_refs, &tensor_refs).unwrap();
    std::fs::copy(src.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    path
}
