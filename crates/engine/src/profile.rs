//! Cost of a model: parameters and bytes by component (from the weight file's header, no
//! weights loaded), analytic FLOPs, and the process's peak memory.

use crate::config::{Architecture, EncoderConfig};
use crate::weights::WeightFile;

#[derive(Debug, Clone, Default)]
pub struct Component {
    pub name: String,
    pub parameters: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default)]
pub struct ParameterCount {
    pub components: Vec<Component>,
    pub parameters: u64,
    pub bytes: u64,
    pub dtypes: Vec<String>,
    /// Where the numbers come from ("safetensors header", "config (analytic)").
    pub source: String,
}

fn component_of(name: &str) -> &'static str {
    if name.contains("embeddings.") {
        "embeddings"
    } else if name.contains("encoder.layer.") || name.contains("transformer.layer.") {
        "encoder_layers"
    } else if name.contains("pooler.") {
        "pooler"
    } else if name.starts_with("classifier") || name.starts_with("pre_classifier") {
        "classification_head"
    } else {
        "other"
    }
}

pub fn count_safetensors(w: &WeightFile) -> ParameterCount {
    let order = [
        "embeddings",
        "encoder_layers",
        "pooler",
        "classification_head",
        "other",
    ];
    let mut comps: Vec<Component> = order
        .iter()
        .map(|n| Component {
            name: (*n).to_owned(),
            ..Default::default()
        })
        .collect();
    let mut dtypes = Vec::new();
    for t in w.tensors() {
        // Integer buffers (e.g. BERT's `position_ids`) are stored, not learned.
        if !matches!(t.dtype.as_str(), "F32" | "F16" | "BF16" | "F64") {
            continue;
        }
        let c = component_of(&t.name);
        let slot = comps
            .iter_mut()
            .find(|x| x.name == c)
            .unwrap_or_else(|| unreachable!());
        slot.parameters += t.shape.iter().product::<usize>() as u64;
        slot.bytes += t.bytes as u64;
        if !dtypes.contains(&t.dtype) {
            dtypes.push(t.dtype);
        }
    }
    comps.retain(|c| c.parameters > 0);
    ParameterCount {
        parameters: comps.iter().map(|c| c.parameters).sum(),
        bytes: comps.iter().map(|c| c.bytes).sum(),
        components: comps,
        dtypes,
        source: "safetensors header".into(),
    }
}

/// Parameters implied by the config (for graphs whose weights are not in safetensors).
pub fn count_from_config(cfg: &EncoderConfig, file_bytes: u64) -> ParameterCount {
    let d = cfg.hidden as u64;
    let ff = cfg.intermediate as u64;
    let ln = 2 * d;
    let mut emb = (cfg.vocab_size as u64 + cfg.max_positions as u64) * d + ln;
    if cfg.architecture != Architecture::DistilBert {
        emb += cfg.type_vocab_size as u64 * d;
    }
    let layer = 4 * (d * d + d) + ln + (d * ff + ff) + (ff * d + d) + ln;
    let comps = vec![
        Component {
            name: "embeddings".into(),
            parameters: emb,
            bytes: 0,
        },
        Component {
            name: "encoder_layers".into(),
            parameters: layer * cfg.layers as u64,
            bytes: 0,
        },
    ];
    ParameterCount {
        parameters: comps.iter().map(|c| c.parameters).sum(),
        bytes: file_bytes,
        components: comps,
        dtypes: Vec::new(),
        source: "config.json (analytic; bytes = graph file size)".into(),
    }
}

/// FLOPs of one sequence of `tokens` tokens through the encoder (a multiply-add = 2).
///
/// Per token and layer: Q, K, V and output projections 8·d², attention scores and
/// weighted values 4·d·L (QKᵀ and AV, which profilers such as thop and calflops miss), the
/// MLP 4·d·d_ff. A classification head adds 2·d² + 2·d·labels per sequence.
pub fn encoder_flops(cfg: &EncoderConfig, tokens: usize, labels: Option<usize>) -> f64 {
    let d = cfg.hidden as f64;
    let l = tokens as f64;
    let per_token_layer = 8.0 * d * d + 4.0 * d * l + 4.0 * d * cfg.intermediate as f64;
    let mut f = per_token_layer * l * cfg.layers as f64;
    if let Some(n) = labels {
        f += 2.0 * d * d + 2.0 * d * n as f64;
    }
    f
}

/// Resets the peak-RSS high-water mark to the current RSS (Linux: writing 5 to
/// `/proc/self/clear_refs`), so the next [`peak_rss_bytes`] covers only what ran since.
/// Returns whether it could.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// What [`peak_rss_bytes`] measures after [`reset_peak_rss`]: said in every report.
pub fn peak_rss_scope() -> &'static str {
    if std::path::Path::new("/proc/self/clear_refs").exists() {
        "peak RSS while this model ran (high-water mark reset before it; memory still held from earlier models counts)"
    } else {
        "peak RSS of the process so far (this system cannot reset the high-water mark)"
    }
}

/// Peak resident set size of this process (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Percentile by linear interpolation (NumPy's default) of unsorted values.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    lmcompare_metrics::stats::quantile_sorted(&v, q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_after_a_reset_excludes_memory_freed_before_it() {
        // 256 MiB touched and freed (large allocations go back to the system), then a
        // reset: the next model's peak must not include them.
        if !reset_peak_rss() {
            return; // not Linux: the scope line says the peak is the process's
        }
        let big: Vec<u8> = vec![1u8; 256 << 20];
        assert!(big.iter().step_by(4096).all(|&b| b == 1));
        let with_big = peak_rss_bytes().unwrap();
        drop(big);
        assert!(reset_peak_rss());
        let after = peak_rss_bytes().unwrap();
        assert!(
            after + (200 << 20) < with_big,
            "peak {after} after the reset, {with_big} before it"
        );
        assert!(peak_rss_scope().contains("reset before it"));
    }

    #[test]
    fn bert_base_flops_match_the_design_check() {
        let v = serde_json::json!({
            "model_type": "bert", "vocab_size": 30522, "hidden_size": 768,
            "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
            "max_position_embeddings": 512, "type_vocab_size": 2
        });
        let cfg = EncoderConfig::from_value(&v).unwrap();
        let f = encoder_flops(&cfg, 128, None);
        assert!((f / 1e9 - 22.347).abs() < 0.01, "{f}");
        // BertModel with pooler: 109,482,240 parameters.
        let count = count_from_config(&cfg, 0);
        assert_eq!(count.parameters + 768 * 768 + 768, 109_482_240);
    }
}
