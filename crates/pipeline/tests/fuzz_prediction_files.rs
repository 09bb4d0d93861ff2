//! `metrics`' reader and scorer against seeded mutations of prediction files (JSONL, CSV,
//! TSV, gzip): each mutant, scored beside the unmutated file, must give a scorecard or an
//! error, never a panic or an abort. The mutator and the allocation limit are the engine's
//! fuzz harness (`crates/engine/tests/common/fuzz.rs`).

#[path = "../../engine/tests/common/fuzz.rs"]
mod fuzz;

use std::path::{Path, PathBuf};

use fuzz::LimitedAlloc;
use lmcompare_metrics::{Correction, EceStrategy, Metric, ZeroDivision};
use lmcompare_pipeline::score_files::{score_files, MetricsConfig};

#[global_allocator]
static ALLOC: LimitedAlloc = LimitedAlloc;

fn example() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sentiment-small.jsonl");
    std::fs::read_to_string(path)
        .expect("examples/sentiment-small.jsonl")
        .lines()
        .take(30)
        .map(str::to_owned)
        .collect()
}

fn as_delimited(lines: &[String], sep: char) -> String {
    let mut out =
        format!("id{sep}label{sep}prediction{sep}p:negative{sep}p:neutral{sep}p:positive\n");
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).expect("example line");
        let p = &v["probabilities"];
        out += &format!(
            "{}{sep}{}{sep}{}{sep}{}{sep}{}{sep}{}\n",
            v["id"].as_str().unwrap_or_default(),
            v["label"].as_str().unwrap_or_default(),
            v["prediction"].as_str().unwrap_or_default(),
            p["negative"],
            p["neutral"],
            p["positive"]
        );
    }
    out
}

/// Scores the mutant beside the original, as `metrics a b` would.
fn score(mutant: &Path, original: &Path) -> Result<(), String> {
    score_files(&MetricsConfig {
        pred: vec![original.to_owned(), mutant.to_owned()],
        name: vec![],
        labels: None,
        pos_label: None,
        zero_division: ZeroDivision::default(),
        bootstrap: 20,
        permutations: 20,
        seed: 0,
        confidence: 0.95,
        metric: Metric::Accuracy,
        correction: Correction::default(),
        ece_bins: 10,
        ece_strategy: EceStrategy::default(),
        html_examples: 10,
    })
    .map(|s| {
        let _ = s.document(true);
    })
    .map_err(|e| e.to_string())
}

fn fuzz_format(target: &str, seed: &[u8], name: &str, iters: usize) {
    let original = |d: &Path| -> PathBuf { d.join(format!("original-{name}")) };
    fuzz::run(
        target,
        seed,
        name,
        iters,
        |d| std::fs::write(original(d), seed).expect("write original"),
        |p| score(p, &original(p.parent().expect("folder"))),
    );
}

#[test]
fn prediction_jsonl() {
    let seed = example().join("\n") + "\n";
    fuzz_format("predictions-jsonl", seed.as_bytes(), "pred.jsonl", 3000);
}

#[test]
fn prediction_csv_and_tsv() {
    let lines = example();
    fuzz_format(
        "predictions-csv",
        as_delimited(&lines, ',').as_bytes(),
        "pred.csv",
        2500,
    );
    fuzz_format(
        "predictions-tsv",
        as_delimited(&lines, '\t').as_bytes(),
        "pred.tsv",
        1500,
    );
}

#[test]
fn prediction_jsonl_gz() {
    use std::io::Write;
    let seed = example().join("\n") + "\n";
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(seed.as_bytes()).expect("gzip");
    let gz = enc.finish().expect("gzip");
    fuzz_format("predictions-gz", &gz, "pred.jsonl.gz", 1500);
}
