//! Every loader of the engine against seeded mutations of the shipped fixtures: datasets
//! (JSONL, CSV, TSV, Parquet, gzip), multiple-choice JSONL, config.json, tokenizer.json,
//! safetensors, GGUF and pytorch_model.bin (the zip and the pickle inside it). Each mutant
//! must load or give an error; none may panic or abort. Loaded models also run one input, so
//! a mutant that loads but breaks the forward pass counts. See `common/fuzz.rs`.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::fuzz::{self, copy_folder, LimitedAlloc};
use lmcompare_engine::data::{load_dataset, load_multiple_choice, Columns};
use lmcompare_engine::decoder::{Decoder, ScoreRequest};
use lmcompare_engine::spec::ResolvedModel;
use lmcompare_engine::{LoadOptions, TextEncoder};

#[global_allocator]
static ALLOC: LimitedAlloc = LimitedAlloc;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn model(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn dataset(path: &Path) -> Result<(), String> {
    load_dataset(path, &Columns::default(), 0.25, 7)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Loads the encoder folder and classifies two texts, one long enough to be truncated.
fn encoder(dir: &Path) -> Result<(), String> {
    let resolved = ResolvedModel {
        spec: dir.display().to_string(),
        dir: dir.to_owned(),
        onnx: None,
        int8: false,
    };
    let opts = LoadOptions {
        max_length: Some(16),
        ..LoadOptions::default()
    };
    let m = TextEncoder::load(resolved, &opts).map_err(|e| e.to_string())?;
    let long = "a remarkably long and winding review ".repeat(8);
    let enc = m
        .tokenizer
        .encode_batch(&["A gripping thriller.", &long])
        .map_err(|e| e.to_string())?;
    if m.labels().is_some() {
        m.classify(&enc, 2).map_err(|e| e.to_string())?;
    } else {
        m.embed(&enc, 2).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Loads a decoder (folder or .gguf) and scores two continuations of one context.
fn decoder(path: &Path) -> Result<(), String> {
    let d = Decoder::load(path).map_err(|e| e.to_string())?;
    let (context, yes) = d
        .encode_pair("The film was", " good")
        .map_err(|e| e.to_string())?;
    let (_, no) = d
        .encode_pair("The film was", " bad")
        .map_err(|e| e.to_string())?;
    d.score(&[ScoreRequest {
        context,
        continuations: vec![yes, no],
    }])
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// Mutates `file` of the fixture model `name` inside a copy of its folder; `load` gets the
/// folder.
fn fuzz_model_file(
    target: &str,
    name: &str,
    file: &str,
    iters: usize,
    load: impl Fn(&Path) -> Result<(), String>,
) {
    let src = model(name);
    let seed = read(&src.join(file));
    fuzz::run(
        target,
        &seed,
        file,
        iters,
        |d| copy_folder(&src, d),
        |p| load(p.parent().expect("folder")),
    );
}

#[test]
fn dataset_jsonl() {
    let seed = read(&fixtures().join("data/reviews.jsonl"));
    fuzz::run("dataset-jsonl", &seed, "data.jsonl", 4000, |_| {}, dataset);
}

#[test]
fn dataset_csv_and_tsv() {
    let seed = read(&fixtures().join("data/reviews.csv"));
    fuzz::run("dataset-csv", &seed, "data.csv", 3000, |_| {}, dataset);
    let seed = read(&fixtures().join("data/reviews.tsv"));
    fuzz::run("dataset-tsv", &seed, "data.tsv", 2000, |_| {}, dataset);
}

#[test]
fn dataset_parquet() {
    let seed = read(&fixtures().join("data/reviews.parquet"));
    fuzz::run(
        "dataset-parquet",
        &seed,
        "data.parquet",
        3000,
        |_| {},
        dataset,
    );
}

#[test]
fn dataset_gzip_stream_and_content() {
    let seed = read(&fixtures().join("data/reviews.jsonl.gz"));
    fuzz::run(
        "dataset-gz-stream",
        &seed,
        "data.jsonl.gz",
        2000,
        |_| {},
        dataset,
    );
    // Mutated content behind a valid gzip stream.
    let seed = read(&fixtures().join("data/reviews.jsonl"));
    fuzz::run(
        "dataset-gz-content",
        &seed,
        "plain",
        1500,
        |_| {},
        |p| {
            let gz = p.with_file_name("data.jsonl.gz");
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&read(p)).map_err(|e| e.to_string())?;
            std::fs::write(&gz, enc.finish().map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            dataset(&gz)
        },
    );
}

#[test]
fn multiple_choice_jsonl() {
    let seed = br#"{"id": "q1", "question": "2 + 2 =", "choices": ["3", "4", "5"], "answer": 1}
{"id": 2, "question": "The sky is", "choices": ["blue", "green"], "answer": 0}
{"question": "Water boils at", "choices": ["100 C", "50 C", "0 C", "10 C"], "answer": 0}
"#;
    fuzz::run(
        "multiple-choice",
        seed,
        "mc.jsonl",
        3000,
        |_| {},
        |p| {
            load_multiple_choice(p)
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    );
}

#[test]
fn encoder_config_json() {
    fuzz_model_file(
        "encoder-config",
        "tiny-bert-cls",
        "config.json",
        1500,
        encoder,
    );
}

#[test]
fn encoder_safetensors() {
    fuzz_model_file(
        "encoder-safetensors",
        "tiny-bert-cls",
        "model.safetensors",
        1500,
        encoder,
    );
}

#[test]
fn tokenizer_json_wordpiece_and_bpe() {
    for name in ["tiny-bert-cls", "tiny-roberta-cls"] {
        let target = format!("tokenizer-{name}");
        fuzz_model_file(&target, name, "tokenizer.json", 1000, encoder);
    }
}

#[test]
fn pytorch_bin_zip() {
    fuzz_model_file(
        "pytorch-bin-zip",
        "tiny-bert-cls-bin",
        "pytorch_model.bin",
        1500,
        encoder,
    );
}

/// The pickle inside the checkpoint, mutated and zipped back with the original storages, so
/// the mutants reach the pickle reader rather than stopping at the zip's checksums.
#[test]
fn pytorch_bin_pickle() {
    let src = model("tiny-bert-cls-bin");
    let original = read(&src.join("pytorch_model.bin"));
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(original.clone())).expect("zip");
    let pkl_name = (0..zip.len())
        .filter_map(|i| zip.name_for_index(i).map(str::to_owned))
        .find(|n| n.ends_with("data.pkl"))
        .expect("data.pkl");
    let mut pkl = Vec::new();
    zip.by_name(&pkl_name)
        .expect("data.pkl")
        .read_to_end(&mut pkl)
        .expect("read pickle");
    fuzz::run(
        "pytorch-pickle",
        &pkl,
        "data.pkl",
        3000,
        |d| copy_folder(&src, d),
        |p| {
            let mutant = read(p);
            let mut from = zip::ZipArchive::new(std::io::Cursor::new(original.clone()))
                .map_err(|e| e.to_string())?;
            let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored);
            for i in 0..from.len() {
                let mut f = from.by_index(i).map_err(|e| e.to_string())?;
                let name = f.name().to_owned();
                let mut body = Vec::new();
                f.read_to_end(&mut body).map_err(|e| e.to_string())?;
                out.start_file(name.as_str(), opts)
                    .map_err(|e| e.to_string())?;
                out.write_all(if name == pkl_name { &mutant } else { &body })
                    .map_err(|e| e.to_string())?;
            }
            let bytes = out.finish().map_err(|e| e.to_string())?.into_inner();
            std::fs::write(p.with_file_name("pytorch_model.bin"), bytes)
                .map_err(|e| e.to_string())?;
            encoder(p.parent().expect("folder"))
        },
    );
}

#[test]
fn decoder_config_json() {
    fuzz_model_file("decoder-config", "tiny-llama", "config.json", 1000, decoder);
}

#[test]
fn decoder_safetensors_and_tokenizer() {
    let (name, iters) = ("tiny-qwen2", 1000);
    fuzz_model_file(
        "decoder-safetensors",
        name,
        "model.safetensors",
        iters,
        decoder,
    );
    fuzz_model_file("decoder-tokenizer", name, "tokenizer.json", iters, decoder);
}

fn tiny_gguf() -> &'static [u8] {
    static GGUF: OnceLock<Vec<u8>> = OnceLock::new();
    GGUF.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = common::gguf_writer::convert("tiny-llama", dir.path(), "gpt2");
        read(&path)
    })
}

#[test]
fn gguf() {
    let seed = tiny_gguf();
    let tokenizer = model("tiny-llama").join("tokenizer.json");
    fuzz::run(
        "gguf",
        seed,
        "model.gguf",
        3000,
        |d| {
            std::fs::copy(&tokenizer, d.join("tokenizer.json")).expect("copy tokenizer");
        },
        decoder,
    );
}
