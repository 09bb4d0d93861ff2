//! Reads prediction files (JSONL, CSV, TSV) from any model and aligns them by example id.

use rustc_hash::{FxHashMap, FxHashSet};
use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

use lmcompare_metrics::{LabelSet, Predictions};
use rayon::prelude::*;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum InputError {
    #[error("{0}")]
    Read(String),
    #[error("{path}: the file is empty (no predictions)")]
    Empty { path: PathBuf },
    #[error("{path}:{line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Mismatch(String),
}

/// One example's output as written in a prediction file; strings borrow from the file's
/// text where no unescaping was needed.
#[derive(Debug, Clone)]
pub struct Row<'a> {
    pub id: Cow<'a, str>,
    pub line: usize,
    pub label: Cow<'a, str>,
    pub prediction: Cow<'a, str>,
    pub probabilities: Option<Vec<(Cow<'a, str>, f64)>>,
}

#[derive(Debug)]
pub struct PredictionFile<'a> {
    pub path: PathBuf,
    pub rows: Vec<Row<'a>>,
}

pub fn read_text(path: &Path) -> Result<String, InputError> {
    lmcompare_engine::data::read_text_file(path).map_err(|e| InputError::Read(e.to_string()))
}

pub fn parse_prediction_file<'a>(
    path: &Path,
    text: &'a str,
) -> Result<PredictionFile<'a>, InputError> {
    if text.trim().is_empty() {
        return Err(InputError::Empty {
            path: path.to_owned(),
        });
    }
    let ext = lmcompare_engine::data::format_extension(path);
    let rows = match ext.as_str() {
        "csv" => read_delimited(path, text, b',')?,
        "tsv" | "tab" => read_delimited(path, text, b'\t')?,
        _ => read_jsonl(path, text)?,
    };
    if rows.is_empty() {
        return Err(InputError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(PredictionFile {
        path: path.to_owned(),
        rows,
    })
}

/// An id, label or prediction: a string, an integer or a boolean. Written by hand rather
/// than as an untagged enum so that `1.5`, `{}` or `[]` get serde's "invalid type:
/// floating point `1.5`, expected …" instead of "did not match any variant".
enum Scalar<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    UInt(u64),
    Bool(bool),
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Scalar<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string, an integer or a boolean")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar::UInt(v))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Bool(v))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<'a> Scalar<'a> {
    fn into_cow(self) -> Cow<'a, str> {
        match self {
            Scalar::Str(s) => s,
            Scalar::Int(i) => Cow::Owned(i.to_string()),
            Scalar::UInt(u) => Cow::Owned(u.to_string()),
            Scalar::Bool(b) => Cow::Owned(b.to_string()),
        }
    }
}

/// A JSON object of label → probability, kept in file order without a hash map per row.
struct ProbMap<'a>(Vec<(Cow<'a, str>, f64)>);

impl<'de: 'a, 'a> Deserialize<'de> for ProbMap<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = ProbMap<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of label -> probability")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ProbMap<'a>, A::Error> {
                let mut v = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(k) = map.next_key::<Borrowed<'de>>()? {
                    let k = k.0;
                    let p: Option<f64> = map.next_value()?;
                    let p = p.ok_or_else(|| {
                        de::Error::custom(format!("probability of {k:?} is null"))
                    })?;
                    v.push((k, p));
                }
                Ok(ProbMap(v))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A string that borrows from the input unless it had escapes (plain `Cow` always copies).
struct Borrowed<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Borrowed<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Borrowed<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Borrowed<'a>, E> {
                Ok(Borrowed(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Borrowed<'a>, E> {
                Ok(Borrowed(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct JsonRow<'a> {
    #[serde(borrow)]
    id: Option<Scalar<'a>>,
    #[serde(borrow)]
    label: Option<Scalar<'a>>,
    #[serde(borrow)]
    prediction: Option<Scalar<'a>>,
    #[serde(borrow)]
    probabilities: Option<ProbMap<'a>>,
}

fn read_jsonl<'a>(path: &Path, text: &'a str) -> Result<Vec<Row<'a>>, InputError> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    lines
        .par_iter()
        .map(|&(line, l)| {
            let err = |message: String| InputError::Line {
                path: path.to_owned(),
                line,
                message,
            };
            let row: JsonRow = serde_json::from_str(l).map_err(|e| {
                let why = if e.is_data() {
                    "a field has the wrong type (id, label and prediction are strings, integers or booleans; probabilities an object of numbers)"
                } else {
                    "not a valid JSON object"
                };
                err(format!("{why}: {e}"))
            })?;
            let field = |v: Option<Scalar<'a>>, name: &str| {
                v.map(Scalar::into_cow)
                    .ok_or_else(|| err(format!("field `{name}` is missing or null")))
            };
            Ok(Row {
                id: field(row.id, "id")?,
                line,
                label: field(row.label, "label")?,
                prediction: field(row.prediction, "prediction")?,
                probabilities: row.probabilities.map(|p| p.0),
            })
        })
        .collect()
}

fn read_delimited<'a>(
    path: &Path,
    text: &'a str,
    delimiter: u8,
) -> Result<Vec<Row<'a>>, InputError> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| InputError::File {
            path: path.to_owned(),
            message: format!("cannot read the header row: {e}"),
        })?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let missing = |name: &str| InputError::File {
        path: path.to_owned(),
        message: format!(
            "missing column `{name}` (columns: {})",
            headers.iter().collect::<Vec<_>>().join(", ")
        ),
    };
    let id = col("id").ok_or_else(|| missing("id"))?;
    let label = col("label").ok_or_else(|| missing("label"))?;
    let prediction = col("prediction").ok_or_else(|| missing("prediction"))?;
    let prob_cols: Vec<(usize, String)> = headers
        .iter()
        .enumerate()
        .filter_map(|(i, h)| h.trim().strip_prefix("p:").map(|l| (i, l.to_owned())))
        .collect();
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let err = |message: String| InputError::Line {
            path: path.to_owned(),
            line,
            message,
        };
        let record = record.map_err(|e| err(e.to_string()))?;
        let get = |c: usize| Cow::Owned(record.get(c).unwrap_or("").to_owned());
        let probabilities = if prob_cols.is_empty() {
            None
        } else {
            let mut v = Vec::with_capacity(prob_cols.len());
            for (c, l) in &prob_cols {
                let cell = record.get(*c).unwrap_or("").trim();
                if cell.is_empty() {
                    continue;
                }
                let p: f64 = cell
                    .parse()
                    .map_err(|_| err(format!("column `p:{l}`: {cell:?} is not a number")))?;
                v.push((Cow::Owned(l.clone()), p));
            }
            Some(v)
        };
        rows.push(Row {
            id: get(id),
            line,
            label: get(label),
            prediction: get(prediction),
            probabilities,
        });
    }
    Ok(rows)
}

fn first_few(items: &[&str]) -> String {
    let shown: Vec<&str> = items.iter().take(5).copied().collect();
    let more = items.len().saturating_sub(5);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// Aligns every file to the first file's example order and encodes all of them over one
/// label set: `explicit` if given, else the sorted union of gold and predicted labels over
/// all files (so every model is scored on the same labels).
pub fn align(
    files: &[PredictionFile<'_>],
    explicit: Option<&[String]>,
) -> Result<Vec<Predictions>, InputError> {
    for f in files {
        let mut seen = FxHashSet::with_capacity_and_hasher(f.rows.len(), Default::default());
        let mut dups = Vec::new();
        for r in &f.rows {
            if !seen.insert(&*r.id) {
                dups.push(&*r.id);
            }
        }
        if !dups.is_empty() {
            return Err(InputError::File {
                path: f.path.clone(),
                message: format!("duplicate id(s): {}", first_few(&dups)),
            });
        }
    }
    let base = &files[0];
    let order: FxHashMap<&str, usize> = base
        .rows
        .iter()
        .enumerate()
        .map(|(i, r)| (&*r.id, i))
        .collect();
    for f in &files[1..] {
        let extra: Vec<&str> = f
            .rows
            .iter()
            .filter(|r| !order.contains_key(&*r.id))
            .map(|r| &*r.id)
            .collect();
        let ids: FxHashSet<&str> = f.rows.iter().map(|r| &*r.id).collect();
        let missing: Vec<&str> = base
            .rows
            .iter()
            .filter(|r| !ids.contains(&*r.id))
            .map(|r| &*r.id)
            .collect();
        if !missing.is_empty() || !extra.is_empty() {
            let mut parts = Vec::new();
            if !missing.is_empty() {
                parts.push(format!(
                    "{} id(s) of {} are missing: {}",
                    missing.len(),
                    base.path.display(),
                    first_few(&missing)
                ));
            }
            if !extra.is_empty() {
                parts.push(format!(
                    "{} id(s) are not in {}: {}",
                    extra.len(),
                    base.path.display(),
                    first_few(&extra)
                ));
            }
            return Err(InputError::Mismatch(format!(
                "{}: ids do not match the first file: {}",
                f.path.display(),
                parts.join("; ")
            )));
        }
    }

    // `--labels` is scikit-learn's `labels=`: the labels averaged over and reported, in
    // that order. Labels outside it still count (a gold `neutral` predicted `positive` is a
    // false positive of `positive`); they follow the listed ones in the universe.
    let (labels, selected) = match explicit {
        Some(list) => {
            let listed = LabelSet::new(list.to_vec())
                .map_err(|e| InputError::Mismatch(format!("--labels: {e}")))?;
            let mut rest: Vec<&str> = files
                .iter()
                .flat_map(|f| f.rows.iter().flat_map(|r| [&*r.label, &*r.prediction]))
                .filter(|l| listed.index_of(l).is_none())
                .collect();
            rest.sort_unstable();
            rest.dedup();
            let mut names = list.to_vec();
            names.extend(rest.iter().map(|l| (*l).to_owned()));
            let set =
                LabelSet::new(names).map_err(|e| InputError::Mismatch(format!("--labels: {e}")))?;
            (set, list.len())
        }
        None => {
            let set = LabelSet::sorted_union(
                files
                    .iter()
                    .flat_map(|f| f.rows.iter().flat_map(|r| [&*r.label, &*r.prediction])),
            );
            let k = set.len();
            (set, k)
        }
    };
    let k = labels.len();
    let n = base.rows.len();
    let mut out = Vec::with_capacity(files.len());
    let base_gold: Vec<u32> = base
        .rows
        .iter()
        .map(|r| labels.index_of(&r.label).unwrap_or_else(|| unreachable!()))
        .collect();
    for f in files {
        let mut pred = vec![0u32; n];
        let with_probs = f.rows.iter().filter(|r| r.probabilities.is_some()).count();
        if with_probs != 0 && with_probs != f.rows.len() {
            let r = f
                .rows
                .iter()
                .find(|r| r.probabilities.is_none())
                .unwrap_or(&f.rows[0]);
            return Err(InputError::Line {
                path: f.path.clone(),
                line: r.line,
                message: "no `probabilities`, but other lines have them: give them for every example or for none".into(),
            });
        }
        let mut proba = if with_probs > 0 {
            Some(vec![0.0f64; n * k])
        } else {
            None
        };
        for r in &f.rows {
            let i = order[&*r.id];
            let line_err = |message: String| InputError::Line {
                path: f.path.clone(),
                line: r.line,
                message,
            };
            let g = labels.index_of(&r.label).unwrap_or_else(|| unreachable!());
            if g != base_gold[i] {
                return Err(line_err(format!(
                    "id {:?} has gold label {:?} here but {:?} in {}",
                    r.id,
                    r.label,
                    labels.name(base_gold[i]),
                    base.path.display()
                )));
            }
            let p = labels
                .index_of(&r.prediction)
                .unwrap_or_else(|| unreachable!());
            pred[i] = p;
            if let (Some(proba), Some(probs)) = (proba.as_mut(), &r.probabilities) {
                let row = &mut proba[i * k..(i + 1) * k];
                let mut has_pred = false;
                for (l, v) in probs {
                    let c = labels.index_of(l).ok_or_else(|| {
                        line_err(format!(
                            "probability label {l:?} is not in the label set ({}); list every label with --labels",
                            labels.names().join(", ")
                        ))
                    })?;
                    if !v.is_finite() || *v < 0.0 || *v > 1.0 {
                        return Err(line_err(format!(
                            "probability of {l:?} is {v}: probabilities must be in [0, 1]"
                        )));
                    }
                    has_pred |= c == p;
                    row[c as usize] = *v;
                }
                if !has_pred {
                    return Err(line_err(format!(
                        "no probability for the predicted label {:?}",
                        r.prediction
                    )));
                }
            }
        }
        let preds =
            Predictions::from_indices(labels.clone(), selected, base_gold.clone(), pred, proba)
                .map_err(|e| InputError::File {
                    path: f.path.clone(),
                    message: e.to_string(),
                })?;
        out.push(preds);
    }
    Ok(out)
}
