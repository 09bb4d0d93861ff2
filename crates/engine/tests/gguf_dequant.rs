//! The f32 path's dequantisation of every GGUF tensor type against the gguf package's
//! reference (`gguf.quants.dequantize`, the llama.cpp project's Python implementation):
//! tests/fixtures/gguf/quant_types.{gguf,f32,json}, written by
//! scripts/gen_gguf_quant_fixtures.py. Bit for bit: a quantised weight has one right value.

use std::path::Path;

use lmcompare_engine::decoder::dequantize_gguf;

#[test]
fn every_tensor_type_dequantises_bit_for_bit_as_the_reference() {
    check_against_reference(dequantize_gguf);
}

/// The quantised path's own block decoder (embedding rows, the integer kernels' weights).
#[test]
fn the_block_decoder_dequantises_bit_for_bit_as_the_reference() {
    check_against_reference(lmcompare_engine::decoder::dequantize_gguf_blocks);
}

type Dequantised = lmcompare_engine::Result<Vec<(String, String, Vec<f32>)>>;

fn check_against_reference(dequantize: fn(&Path) -> Dequantised) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/gguf");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("quant_types.json")).unwrap())
            .unwrap();
    let raw = std::fs::read(dir.join("quant_types.f32")).unwrap();
    let reference: Vec<f32> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let ours = dequantize(&dir.join("quant_types.gguf")).unwrap();
    let listed = index["tensors"].as_array().unwrap();
    assert_eq!(ours.len(), listed.len());
    let mut at = 0;
    let mut failures = Vec::new();
    for ((name, ty, values), t) in ours.iter().zip(listed) {
        assert_eq!(name, t["name"].as_str().unwrap());
        let want = &reference[at..at + values.len()];
        at += values.len();
        let differ = values
            .iter()
            .zip(want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        let worst = values
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!(
            "{name} ({ty}): {differ} of {} differ, worst {worst:e}",
            values.len()
        );
        if differ > 0 {
            failures.push(format!("{ty}: {differ} values differ (worst {worst:e})"));
        }
    }
    assert_eq!(at, reference.len());
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn an_unsupported_type_is_refused_by_its_name_with_the_tensor_named() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/gguf/iq4_nl.gguf");
    let e = dequantize_gguf(&path).unwrap_err().to_string();
    assert!(
        e.contains(
            "tensor `blk.0.attn_q.weight` is stored as IQ4_NL, which lmcompare does not read"
        ),
        "{e}"
    );
    let e = lmcompare_engine::decoder::Decoder::load(&path)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("IQ4_NL"), "{e}");
}
