//! Labelled datasets: JSONL, CSV or TSV (optionally .gz / .bz2 compressed) or Parquet, any
//! column names, with a split column or a seeded stratified train/test split.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{EngineError, Result};

#[derive(Debug, Clone)]
pub struct Columns {
    pub text: String,
    pub label: String,
    pub split: String,
    pub id: String,
}

impl Default for Columns {
    fn default() -> Self {
        Columns {
            text: "text".into(),
            label: "label".into(),
            split: "split".into(),
            id: "id".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Split {
    Train,
    Validation,
    Test,
}

impl Split {
    pub fn key(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Example {
    pub id: String,
    pub text: String,
    pub label: String,
    pub split: Split,
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub path: PathBuf,
    /// sha256 of the file as stored (compressed bytes if compressed).
    pub sha256: String,
    pub examples: Vec<Example>,
    /// Sorted label set.
    pub labels: Vec<String>,
    /// "column" when the file had a split column, else how the split was made.
    pub split_source: String,
}

impl Dataset {
    pub fn split(&self, s: Split) -> Vec<&Example> {
        self.examples.iter().filter(|e| e.split == s).collect()
    }

    pub fn rows_per_split(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for e in &self.examples {
            *m.entry(e.split.key()).or_insert(0) += 1;
        }
        m
    }
}

fn read_maybe_compressed(path: &Path) -> Result<(Vec<u8>, String)> {
    let raw =
        std::fs::read(path).map_err(|e| EngineError::file(path, format!("cannot read: {e}")))?;
    let sha = format!("{:x}", Sha256::digest(&raw));
    Ok((decompress(path, raw)?, sha))
}

/// `raw` decompressed when the name ends in `.gz` or `.bz2`, else as it is.
fn decompress(path: &Path, raw: Vec<u8>) -> Result<Vec<u8>> {
    let name = path.to_string_lossy().to_ascii_lowercase();
    let mut out = Vec::new();
    if name.ends_with(".gz") {
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| EngineError::file(path, format!("not valid gzip: {e}")))?;
    } else if name.ends_with(".bz2") {
        bzip2::read::BzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| EngineError::file(path, format!("not valid bzip2: {e}")))?;
    } else {
        return Ok(raw);
    }
    Ok(out)
}

/// The text of an input file, whatever reads it: `.gz`/`.bz2` decompressed, a leading UTF-8
/// byte-order mark dropped (spreadsheet exports write one), invalid UTF-8 named by line.
pub fn read_text_file(path: &Path) -> Result<String> {
    // No hash here: prediction files on `metrics`' hot path and configs do not need one.
    let raw =
        std::fs::read(path).map_err(|e| EngineError::file(path, format!("cannot read: {e}")))?;
    decode_utf8(path, decompress(path, raw)?)
}

/// [`read_text_file`] and the sha256 of the file's bytes as stored.
pub fn read_text_and_sha(path: &Path) -> Result<(String, String)> {
    let (bytes, sha) = read_maybe_compressed(path)?;
    Ok((decode_utf8(path, bytes)?, sha))
}

fn decode_utf8(path: &Path, mut bytes: Vec<u8>) -> Result<String> {
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        bytes.drain(..3);
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        EngineError::file(
            path,
            format!("line {line}: not UTF-8 text (invalid byte at offset {at})"),
        )
    })
}

/// The extension that says the format, under any compression suffix (`a.jsonl.gz` → `jsonl`).
pub fn format_extension(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let stem = name
        .strip_suffix(".gz")
        .or_else(|| name.strip_suffix(".bz2"))
        .unwrap_or(&name);
    Path::new(stem)
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Raw rows as (line number, column → value).
type Rows = Vec<(usize, HashMap<String, String>)>;

/// Parquet rows through the crate's record reader (no Arrow), every value as text.
fn parquet_rows(path: &Path) -> Result<(Rows, Vec<String>)> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let file = std::fs::File::open(path)
        .map_err(|e| EngineError::file(path, format!("cannot read: {e}")))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| EngineError::file(path, format!("not a readable Parquet file: {e}")))?;
    let columns: Vec<String> = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    let mut rows = Vec::new();
    for (i, row) in reader.into_iter().enumerate() {
        let row = row.map_err(|e| EngineError::file(path, format!("row {}: {e}", i + 1)))?;
        let mut m = HashMap::new();
        for (name, field) in row.get_column_iter() {
            match field {
                Field::Null => {}
                Field::Str(s) => {
                    m.insert(name.clone(), s.clone());
                }
                other => {
                    m.insert(name.clone(), other.to_string());
                }
            }
        }
        rows.push((i + 1, m));
    }
    Ok((rows, columns))
}

fn parse_rows(path: &Path, text: &str) -> Result<(Rows, Vec<String>)> {
    let name = path.to_string_lossy().to_ascii_lowercase();
    let stem = name.trim_end_matches(".gz").trim_end_matches(".bz2");
    if stem.ends_with(".csv") || stem.ends_with(".tsv") {
        let mut r = csv::ReaderBuilder::new()
            .delimiter(if stem.ends_with(".tsv") { b'\t' } else { b',' })
            .from_reader(text.as_bytes());
        let headers: Vec<String> = r
            .headers()
            .map_err(|e| EngineError::file(path, format!("cannot read the header row: {e}")))?
            .iter()
            .map(str::to_owned)
            .collect();
        let mut rows = Vec::new();
        for (i, rec) in r.records().enumerate() {
            let rec = rec.map_err(|e| EngineError::file(path, format!("line {}: {e}", i + 2)))?;
            let m = headers
                .iter()
                .cloned()
                .zip(rec.iter().map(str::to_owned))
                .collect();
            rows.push((i + 2, m));
        }
        Ok((rows, headers))
    } else {
        let mut rows = Vec::new();
        let mut columns: Vec<String> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
                EngineError::file(
                    path,
                    format!("line {}: not a valid JSON object: {e}", i + 1),
                )
            })?;
            let obj = v.as_object().ok_or_else(|| {
                EngineError::file(path, format!("line {}: not a JSON object", i + 1))
            })?;
            let mut m = HashMap::with_capacity(obj.len());
            for (k, val) in obj {
                if !columns.contains(k) {
                    columns.push(k.clone());
                }
                let s = match val {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => continue,
                    other => other.to_string(),
                };
                m.insert(k.clone(), s);
            }
            rows.push((i + 1, m));
        }
        Ok((rows, columns))
    }
}

/// Deterministic position of an id in the seeded split order.
fn seeded_rank(seed: u64, id: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(id.as_bytes());
    h.finalize().into()
}

pub fn load_dataset(path: &Path, cols: &Columns, test_size: f64, seed: u64) -> Result<Dataset> {
    let (bytes, sha256) = read_maybe_compressed(path)?;
    let is_parquet = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    let (rows, columns) = if is_parquet {
        // The parquet reader indexes with values from the file and can panic on a corrupt
        // page (parquet 55 `rle.rs`, `bytes`): contained and reported as a corrupt file.
        crate::guard::no_panic(|| parquet_rows(path)).map_err(|why| {
            EngineError::file(
                path,
                format!("not a readable Parquet file (corrupt page: {why})"),
            )
        })??
    } else {
        let text = decode_utf8(path, bytes)?;
        parse_rows(path, &text)?
    };
    if rows.is_empty() {
        return Err(EngineError::file(path, "the file is empty (no examples)"));
    }
    for (what, col) in [("--text-col", &cols.text), ("--label-col", &cols.label)] {
        if !columns.contains(col) {
            return Err(EngineError::file(
                path,
                format!(
                    "no column `{col}` ({what}); the columns are: {}",
                    columns.join(", ")
                ),
            ));
        }
    }
    let has_split = columns.contains(&cols.split);
    let has_id = columns.contains(&cols.id);
    let mut examples = Vec::with_capacity(rows.len());
    let mut seen = HashMap::new();
    for (line, m) in &rows {
        let get = |c: &str| -> Result<String> {
            m.get(c)
                .cloned()
                .ok_or_else(|| EngineError::file(path, format!("line {line}: missing field `{c}`")))
        };
        let id = if has_id {
            get(&cols.id)?
        } else {
            format!("row-{line}")
        };
        if seen.insert(id.clone(), *line).is_some() {
            return Err(EngineError::file(
                path,
                format!("line {line}: duplicate id {id:?}"),
            ));
        }
        let text = get(&cols.text)?;
        if text.trim().is_empty() {
            return Err(EngineError::file(
                path,
                format!("line {line}: empty `{}`", cols.text),
            ));
        }
        let split = if has_split {
            match get(&cols.split)?.to_ascii_lowercase().as_str() {
                "train" => Split::Train,
                "test" => Split::Test,
                "validation" | "valid" | "dev" | "val" => Split::Validation,
                other => {
                    return Err(EngineError::file(
                        path,
                        format!("line {line}: split {other:?} is not train, validation or test"),
                    ))
                }
            }
        } else {
            Split::Train
        };
        examples.push(Example {
            id,
            text,
            label: get(&cols.label)?,
            split,
        });
    }
    let mut labels: Vec<String> = examples.iter().map(|e| e.label.clone()).collect();
    labels.sort();
    labels.dedup();
    if let [only] = labels.as_slice() {
        // With one label every model that answers it scores 1.0; say so instead.
        return Err(EngineError::file(
            path,
            format!(
                "every example has the label {only:?} (column `{}`): a classification comparison needs at least two labels",
                cols.label
            ),
        ));
    }
    let split_source = if has_split {
        format!("column `{}`", cols.split)
    } else {
        if !(0.0 < test_size && test_size < 1.0) {
            return Err(EngineError::BadInput(format!(
                "--test-size must be in (0, 1), not {test_size}"
            )));
        }
        // Stratified: within each label, examples ordered by a seeded hash of their id, the
        // first round(test_size · n) go to test.
        let mut by_label: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, e) in examples.iter().enumerate() {
            by_label.entry(e.label.as_str()).or_default().push(i);
        }
        let mut to_test = Vec::new();
        for (label, mut idx) in by_label {
            if idx.len() < 2 {
                return Err(EngineError::file(
                    path,
                    format!("label {label:?} has a single example; a stratified train/test split needs at least two per label (drop it or add a split column)"),
                ));
            }
            idx.sort_by_key(|&i| seeded_rank(seed, &examples[i].id));
            let k = ((idx.len() as f64 * test_size).round() as usize).clamp(1, idx.len() - 1);
            to_test.extend_from_slice(&idx[..k]);
        }
        for i in to_test {
            examples[i].split = Split::Test;
        }
        format!(
            "stratified {:.0}/{:.0} by seeded id hash (seed {seed})",
            (1.0 - test_size) * 100.0,
            test_size * 100.0
        )
    };
    let ds = Dataset {
        path: path.to_owned(),
        sha256,
        examples,
        labels,
        split_source,
    };
    if ds.split(Split::Test).is_empty() {
        return Err(EngineError::file(path, "the test split is empty"));
    }
    Ok(ds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/data")
            .join(name)
    }

    #[test]
    fn every_format_reads_the_same_examples() {
        let cols = Columns::default();
        let base = load_dataset(&fixture("reviews.jsonl"), &cols, 0.2, 0).unwrap();
        assert_eq!(base.examples.len(), 12);
        assert_eq!(base.labels, vec!["fresh", "rotten"]);
        for f in [
            "reviews.csv",
            "reviews.tsv",
            "reviews.jsonl.gz",
            "reviews.csv.bz2",
            "reviews.parquet",
        ] {
            let d = load_dataset(&fixture(f), &cols, 0.2, 0).unwrap_or_else(|e| panic!("{f}: {e}"));
            let a: Vec<(&str, &str, &str, Split)> = base
                .examples
                .iter()
                .map(|e| (e.id.as_str(), e.text.as_str(), e.label.as_str(), e.split))
                .collect();
            let b: Vec<(&str, &str, &str, Split)> = d
                .examples
                .iter()
                .map(|e| (e.id.as_str(), e.text.as_str(), e.label.as_str(), e.split))
                .collect();
            assert_eq!(a, b, "{f}");
        }
    }

    #[test]
    fn stratified_split_is_seeded_and_keeps_label_proportions() {
        let cols = Columns {
            split: "no-such-column".into(),
            ..Columns::default()
        };
        let a = load_dataset(&fixture("reviews.jsonl"), &cols, 0.5, 1).unwrap();
        let b = load_dataset(&fixture("reviews.jsonl"), &cols, 0.5, 1).unwrap();
        let c = load_dataset(&fixture("reviews.jsonl"), &cols, 0.5, 2).unwrap();
        let test = |d: &Dataset| {
            d.split(Split::Test)
                .iter()
                .map(|e| e.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(test(&a), test(&b));
        assert_ne!(test(&a), test(&c));
        for l in ["fresh", "rotten"] {
            assert_eq!(
                a.split(Split::Test).iter().filter(|e| e.label == l).count(),
                3
            );
        }
    }
}

/// A multiple-choice question: `{"id", "question", "choices": [...], "answer": index}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceQuestion {
    pub id: String,
    pub question: String,
    pub choices: Vec<String>,
    pub answer: usize,
}

/// Reads multiple-choice questions from JSONL (optionally .gz/.bz2); returns them and the
/// file's sha256. Errors name the line and the field.
pub fn load_multiple_choice(path: &Path) -> Result<(Vec<ChoiceQuestion>, String)> {
    let (bytes, sha256) = read_maybe_compressed(path)?;
    let text = decode_utf8(path, bytes)?;
    let mut out = Vec::new();
    let mut seen = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |m: String| EngineError::file(path, format!("line {}: {m}", i + 1));
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| at(format!("not valid JSON: {e}")))?;
        let id = match &v["id"] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => format!("q{}", out.len()),
        };
        let question = v["question"]
            .as_str()
            .ok_or_else(|| at("missing string field `question`".into()))?
            .to_owned();
        let choices: Vec<String> = v["choices"]
            .as_array()
            .ok_or_else(|| at("missing array field `choices`".into()))?
            .iter()
            .map(|c| c.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| at("`choices` must be strings".into()))?;
        if choices.len() < 2 {
            return Err(at(format!(
                "{} choice(s); a question needs at least two",
                choices.len()
            )));
        }
        let answer = v["answer"].as_u64().ok_or_else(|| {
            at("missing integer field `answer` (the index of the right choice)".into())
        })? as usize;
        if answer >= choices.len() {
            return Err(at(format!(
                "`answer` {answer} is out of range for {} choices (indices start at 0)",
                choices.len()
            )));
        }
        if let Some(prev) = seen.insert(id.clone(), i + 1) {
            return Err(at(format!("id {id:?} repeats line {prev}")));
        }
        out.push(ChoiceQuestion {
            id,
            question,
            choices,
            answer,
        });
    }
    if out.is_empty() {
        return Err(EngineError::file(path, "the file is empty (no questions)"));
    }
    Ok((out, sha256))
}
