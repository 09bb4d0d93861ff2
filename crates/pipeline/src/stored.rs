//! Reading finished work back from the store: the list of runs (filtered by data or model),
//! a run's report, deleting a run, and exporting a run's predictions and sample logs.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use lmcompare_engine::store::{DeletedRun, RunRecord, Store};
use serde_json::{json, Value};

use crate::leaderboard::run_models;
use crate::{bad, fail, Result};

fn open_existing(db: &Path) -> Result<Store> {
    if !db.exists() {
        return Err(bad!("{}: no such store", db.display()));
    }
    Ok(Store::open(db)?)
}

/// Which runs `runs` lists.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Runs on this data file (by content hash).
    pub data: Option<PathBuf>,
    /// Runs with this model: its name in the run, the spec it was given as (a path is
    /// compared as a path), or a prefix of its content hash.
    pub model: Option<String>,
}

/// A run as `runs` lists it.
#[derive(Debug, Clone)]
pub struct ListedRun {
    pub record: RunRecord,
    /// (name, content hash) of each model, when the run is a per-model comparison.
    pub models: Vec<(String, String)>,
    pub predictions: usize,
}

fn same_path(a: &str, b: &str) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

pub fn runs(db: &Path, filter: &RunFilter) -> Result<Vec<ListedRun>> {
    let store = open_existing(db)?;
    let data_sha = match &filter.data {
        Some(p) if !p.exists() => return Err(bad!("--data {}: no such file", p.display())),
        Some(p) => Some(store.file_sha256(p)?),
        None => None,
    };
    let specs: HashMap<String, String> = store
        .model_specs()?
        .into_iter()
        .map(|(h, s, _)| (h, s))
        .collect();
    let mut out = Vec::new();
    for record in store.run_records()? {
        if data_sha
            .as_ref()
            .is_some_and(|s| *s != record.dataset_sha256)
        {
            continue;
        }
        let settings: Value = serde_json::from_str(&record.settings).unwrap_or(Value::Null);
        let models = run_models(&settings).unwrap_or_else(|| {
            record
                .models
                .split(',')
                .filter(|n| !n.is_empty())
                .map(|n| (n.to_owned(), String::new()))
                .collect()
        });
        if let Some(m) = &filter.model {
            let hit = models.iter().any(|(name, hash)| {
                name == m
                    || (m.len() >= 6 && !hash.is_empty() && hash.starts_with(m.as_str()))
                    || specs.get(hash).is_some_and(|s| s == m || same_path(s, m))
            });
            if !hit {
                continue;
            }
        }
        let predictions = models
            .iter()
            .map(|(name, _)| store.predictions(record.id, name).map(|p| p.len()))
            .sum::<std::result::Result<usize, _>>()?;
        out.push(ListedRun {
            record,
            models,
            predictions,
        });
    }
    Ok(out)
}

/// Removes run `run` (its predictions and sample logs); caches shared by runs stay.
pub fn delete_run(db: &Path, run: i64) -> Result<DeletedRun> {
    let mut store = open_existing(db)?;
    Ok(store.delete_run(run)?)
}

/// The report a finished run stored, as it was written.
pub fn run_report(db: &Path, run: i64) -> Result<Value> {
    let store = open_existing(db)?;
    stored_report(&store, db, run)
}

fn stored_report(store: &Store, db: &Path, run: i64) -> Result<Value> {
    let text = store.run_result(run)?.ok_or_else(|| {
        bad!("run {run} did not finish; rerun the same compare command to resume it")
    })?;
    serde_json::from_str(&text).map_err(|e| {
        crate::fail!(
            "{}: the stored report of run {run} is not valid JSON ({e}); rerun the command that made it",
            db.display()
        )
    })
}

/// What `export` wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub dir: PathBuf,
    /// (model, predictions written, sample logs written).
    pub models: Vec<(String, usize, usize)>,
    pub files: Vec<PathBuf>,
}

/// A model name as a file name: letters, digits, `-`, `_` and `.` kept, the rest `_`.
fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes run `run`'s per-example predictions (`predictions-<model>.jsonl`, the input
/// format of `lmcompare metrics`), its per-sample logs (`samples-<model>.jsonl`) and its
/// provenance (`run.json`) into `out`. Examples the run excluded for every model are left
/// out, so the files rescore to the run's own numbers.
/// `data`: the dataset, for a run from before sample logs were kept whose file has moved
/// (checked against the run's content hash).
pub fn export(
    db: &Path,
    run: i64,
    model: Option<&str>,
    data: Option<&Path>,
    out: &Path,
) -> Result<Exported> {
    let store = open_existing(db)?;
    let record = store
        .run_records()?
        .into_iter()
        .find(|r| r.id == run)
        .ok_or_else(|| {
            let ids: Vec<String> = store
                .run_records()
                .map(|r| r.iter().map(|r| r.id.to_string()).collect())
                .unwrap_or_default();
            bad!(
                "no run {run} in {} (its runs: {})",
                db.display(),
                if ids.is_empty() {
                    "none".to_owned()
                } else {
                    ids.join(", ")
                }
            )
        })?;
    let settings: Value = serde_json::from_str(&record.settings).unwrap_or(Value::Null);
    let models = run_models(&settings).ok_or_else(|| {
        bad!(
            "run {run} is a {} run; export writes the per-example predictions of compare runs (classify, probe, zero-shot, multiple-choice)",
            record.task
        )
    })?;
    let report = store
        .run_result(run)?
        .and_then(|t| serde_json::from_str::<Value>(&t).ok());
    let chosen: Vec<&(String, String)> = match model {
        Some(m) => {
            let found: Vec<&(String, String)> = models.iter().filter(|(n, _)| n == m).collect();
            if found.is_empty() {
                let names: Vec<&str> = models.iter().map(|(n, _)| n.as_str()).collect();
                return Err(bad!(
                    "--model {m}: run {run} has no model of that name (it has {})",
                    names.join(", ")
                ));
            }
            found
        }
        None => models.iter().collect(),
    };
    let excluded: HashSet<String> = report
        .as_ref()
        .and_then(|r| r["excluded_examples"]["examples"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect();
    let labels: Vec<String> = report
        .as_ref()
        .and_then(|r| serde_json::from_value(r["dataset"]["labels"].clone()).ok())
        .unwrap_or_default();
    // Gold labels of runs from before sample logs were kept: from the dataset, when it is
    // still where the run read it, unchanged.
    type Known = (HashMap<String, String>, HashMap<String, usize>);
    let mut gold_of: Option<Known> = None;
    // (gold label, test position) by example id.
    let mut dataset_gold = || -> Result<Known> {
        if let Some(g) = &gold_of {
            return Ok(g.clone());
        }
        let path = data.unwrap_or(Path::new(&record.dataset_path));
        let unchanged = path.exists() && store.file_sha256(path)? == record.dataset_sha256;
        if !unchanged {
            return Err(bad!(
                "run {run} is from before sample logs were kept and its gold labels are in its dataset, but {} is {} (the run's has sha256 {}…): give the run's data file with --data FILE",
                path.display(),
                if path.exists() { "another file" } else { "not there" },
                &record.dataset_sha256[..record.dataset_sha256.len().min(12)]
            ));
        }
        let (_, test) = crate::leaderboard::run_dataset(path, &record.task, &settings)?;
        let order = test
            .iter()
            .enumerate()
            .map(|(i, e)| (e.id.clone(), i))
            .collect();
        let g: HashMap<String, String> = test.into_iter().map(|e| (e.id, e.label)).collect();
        let known = (g, order);
        gold_of = Some(known.clone());
        Ok(known)
    };
    std::fs::create_dir_all(out).map_err(|e| bad!("{}: cannot create: {e}", out.display()))?;
    let mut written = Vec::new();
    let mut files = Vec::new();
    let mut rescore = vec!["lmcompare".to_owned(), "metrics".to_owned()];
    for (name, hash) in chosen {
        let preds = store.predictions(run, name)?;
        let logs = store.samples(run, name)?;
        let parsed: HashMap<&str, Value> = logs
            .iter()
            .filter_map(|(id, l)| serde_json::from_str(l).ok().map(|v| (id.as_str(), v)))
            .collect();
        // The order the run scored in: its test order, from the logs (or, for a run from
        // before them, from the dataset).
        let mut ids: Vec<&str> = preds
            .keys()
            .map(String::as_str)
            .filter(|id| !excluded.contains(*id))
            .collect();
        let logged = ids
            .iter()
            .all(|id| parsed.get(id).is_some_and(|v| v["index"].is_u64()));
        let position: HashMap<String, usize> = if logged {
            ids.iter()
                .map(|id| {
                    (
                        id.to_string(),
                        parsed[id]["index"].as_u64().unwrap_or(0) as usize,
                    )
                })
                .collect()
        } else {
            dataset_gold()?.1
        };
        ids.sort_by(|a, b| position.get(*a).cmp(&position.get(*b)).then(a.cmp(b)));
        let mut p_lines = String::new();
        let mut s_lines = String::new();
        let mut n_logs = 0;
        for id in &ids {
            let p = &preds[*id];
            let log = parsed.get(id);
            let gold = match log.and_then(|l| l["gold"].as_str()) {
                Some(g) => g.to_owned(),
                None => dataset_gold()?.0.get(*id).cloned().ok_or_else(|| {
                    fail!(
                        "run {run}, model {name}: example {id:?} is not a test example of {}",
                        record.dataset_path
                    )
                })?,
            };
            let mut line = json!({"id": id, "label": gold, "prediction": p.label});
            if !p.probabilities.is_empty() && p.probabilities.len() == labels.len() {
                let probs: serde_json::Map<String, Value> = labels
                    .iter()
                    .zip(&p.probabilities)
                    .map(|(l, v)| (l.clone(), json!(v)))
                    .collect();
                line["probabilities"] = Value::Object(probs);
            }
            p_lines.push_str(&line.to_string());
            p_lines.push('\n');
            let mut sample = json!({
                "id": id, "model": name, "gold": gold, "prediction": p.label,
                "correct": gold == p.label,
            });
            if let Some(Value::Object(o)) = log {
                for (k, v) in o {
                    if k != "gold" {
                        sample[k] = v.clone();
                    }
                }
                n_logs += 1;
            }
            if !p.probabilities.is_empty() {
                sample["probabilities"] = json!(p.probabilities);
            }
            if sample.get("tokens").is_none() {
                sample["tokens"] = json!(p.tokens);
            }
            s_lines.push_str(&sample.to_string());
            s_lines.push('\n');
        }
        let stem = file_stem(name);
        let pred_path = out.join(format!("predictions-{stem}.jsonl"));
        let sample_path = out.join(format!("samples-{stem}.jsonl"));
        std::fs::write(&pred_path, p_lines)
            .map_err(|e| fail!("{}: cannot write: {e}", pred_path.display()))?;
        std::fs::write(&sample_path, s_lines)
            .map_err(|e| fail!("{}: cannot write: {e}", sample_path.display()))?;
        rescore.extend([
            "--pred".to_owned(),
            pred_path.display().to_string(),
            "--name".to_owned(),
            name.clone(),
        ]);
        files.extend([pred_path, sample_path]);
        written.push((name.clone(), ids.len(), n_logs));
        let _ = hash;
    }
    let run_block = report.as_ref().map_or(Value::Null, |r| r["run"].clone());
    let seed = settings["seed"].as_u64().unwrap_or(0);
    let method = report.as_ref().map_or(Value::Null, |r| r["method"].clone());
    rescore.extend(["--labels".to_owned(), labels.join(",")]);
    rescore.extend(["--seed".to_owned(), seed.to_string()]);
    for (flag, key) in [
        ("--bootstrap", "bootstrap_resamples"),
        ("--permutations", "permutations"),
    ] {
        if let Some(v) = method[key].as_u64() {
            rescore.extend([flag.to_owned(), v.to_string()]);
        }
    }
    if let Some(m) = method["main_metric"].as_str() {
        rescore.extend(["--metric".to_owned(), m.to_owned()]);
    }
    if let Some(c) = method["correction_method"].as_str() {
        rescore.extend(["--correction".to_owned(), c.to_owned()]);
    }
    let header = json!({
        "lmcompare_version": env!("CARGO_PKG_VERSION"),
        "run": {"id": record.id, "started": record.started, "finished": record.finished, "task": record.task},
        "dataset": {"path": record.dataset_path, "sha256": record.dataset_sha256, "labels": labels},
        "models": models.iter().map(|(n, h)| json!({"name": n, "content_hash": h})).collect::<Vec<_>>(),
        "settings": settings,
        "provenance": run_block,
        "protocol": report.as_ref().map_or(Value::Null, |r| r["run"]["protocol"].clone()),
        "excluded_examples": excluded.iter().collect::<Vec<_>>(),
        "files": {"predictions": "predictions-<model>.jsonl: the input of `lmcompare metrics`", "samples": "samples-<model>.jsonl: each example as the model saw it (input, prompts, continuations' log-likelihoods and token counts, generated text, truncation), its prediction and gold"},
        "rescore": rescore,
    });
    let run_path = out.join("run.json");
    std::fs::write(&run_path, serde_json::to_string_pretty(&header)? + "\n")
        .map_err(|e| fail!("{}: cannot write: {e}", run_path.display()))?;
    files.push(run_path);
    Ok(Exported {
        dir: out.to_owned(),
        models: written,
        files,
    })
}
