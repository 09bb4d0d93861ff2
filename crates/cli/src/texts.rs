//! Texts to run a model on: `--text` values, or an input file (JSONL with a text field,
//! CSV/TSV with a text column, or plain text one per line).

use std::path::Path;

use crate::BadInput;

pub fn load_texts(
    texts: &[String],
    input: Option<&Path>,
    text_col: &str,
) -> anyhow::Result<Vec<String>> {
    match (texts.is_empty(), input) {
        (false, Some(_)) => Err(BadInput("give --text or --input, not both".into()).into()),
        (true, None) => Err(BadInput(
            "nothing to run on: give --text (repeatable) or --input FILE".into(),
        )
        .into()),
        (false, None) => Ok(texts.to_vec()),
        (true, Some(path)) => read_input(path, text_col),
    }
}

fn read_input(path: &Path, text_col: &str) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BadInput(format!("{}: cannot read: {e}", path.display())))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let out: Vec<String> = match ext.as_str() {
        "jsonl" | "json" | "ndjson" => {
            let mut v = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let obj: serde_json::Value = serde_json::from_str(line).map_err(|e| {
                    BadInput(format!(
                        "{}:{}: not a valid JSON object: {e}",
                        path.display(),
                        i + 1
                    ))
                })?;
                let t = obj[text_col].as_str().ok_or_else(|| {
                    BadInput(format!(
                        "{}:{}: missing string field `{text_col}`",
                        path.display(),
                        i + 1
                    ))
                })?;
                v.push(t.to_owned());
            }
            v
        }
        "csv" | "tsv" => {
            let mut r = csv::ReaderBuilder::new()
                .delimiter(if ext == "tsv" { b'\t' } else { b',' })
                .from_reader(text.as_bytes());
            let headers = r
                .headers()
                .map_err(|e| BadInput(format!("{}: cannot read the header: {e}", path.display())))?
                .clone();
            let col = headers.iter().position(|h| h == text_col).ok_or_else(|| {
                BadInput(format!(
                    "{}: missing column `{text_col}` (columns: {})",
                    path.display(),
                    headers.iter().collect::<Vec<_>>().join(", ")
                ))
            })?;
            let mut v = Vec::new();
            for (i, rec) in r.records().enumerate() {
                let rec =
                    rec.map_err(|e| BadInput(format!("{}:{}: {e}", path.display(), i + 2)))?;
                v.push(rec.get(col).unwrap_or("").to_owned());
            }
            v
        }
        _ => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect(),
    };
    if out.is_empty() {
        return Err(BadInput(format!("{}: the file is empty (no texts)", path.display())).into());
    }
    Ok(out)
}
