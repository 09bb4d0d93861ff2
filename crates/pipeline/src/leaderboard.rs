//! The store as a leaderboard: every model that has predictions for a dataset, gathered
//! across runs by content hash and grouped by the settings that change predictions, each
//! group scored as one `compare` of all its models (same metrics, intervals, paired tests
//! and correction) from the stored predictions alone; no model is loaded or called.
//!
//! The same grouping lets `compare` reuse what earlier runs computed: a model already scored
//! on the same data under the same settings is copied into the new run, not run again.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use lmcompare_engine::data::{load_dataset, Columns, Example, Split};
use lmcompare_engine::store::{RunRecord, Store, StoredPrediction};
use lmcompare_metrics::{rank_shares, BootstrapOptions, Metric, MetricOptions, Predictions};
use lmcompare_report::doc::{
    CompareReport, Efficiency, Leaderboard, LeaderboardDataset, LeaderboardGroup, ModelReport,
    RankedModel,
};
use serde_json::{json, Map, Value};

use crate::config::{StatsConfig, Task};
use crate::report::{comparison_doc, dataset_info, ReportContext, Scoring};
use crate::runner::ModelRun;
use crate::tasks::prompts::choice_dataset;
use crate::{bad, Result};

/// What `leaderboard` is asked.
#[derive(Debug, Clone)]
pub struct LeaderboardConfig {
    pub data: PathBuf,
    pub task: Option<Task>,
    pub metric: Metric,
    pub db: PathBuf,
    pub stats: StatsConfig,
    /// Only this group (1-based).
    pub group: Option<usize>,
    /// Refuse, naming the differing settings, when the models fall into several groups.
    pub one_group: bool,
    pub html_examples: usize,
}

/// The tasks whose runs store one prediction per example and model.
const RANKED_TASKS: [&str; 4] = ["classify", "probe", "zero-shot", "multiple-choice"];

/// The (name, content hash) of every model of a run, from its settings; None for runs that
/// are not per-model comparisons (tune, perplexity, generate).
pub fn run_models(settings: &Value) -> Option<Vec<(String, String)>> {
    settings
        .get("models")?
        .as_array()?
        .iter()
        .map(|m| {
            let pair = m.as_array().filter(|p| p.len() == 2)?;
            Some((pair[0].as_str()?.to_owned(), pair[1].as_str()?.to_owned()))
        })
        .collect()
}

/// The settings of a run that change a model's predictions: everything its key covers but
/// which models ran beside it. `--limit` only chooses which test examples are scored,
/// except where it also bounds the train split the predictions learn from (the probe's
/// head, few-shot examples); there it stays.
pub fn prediction_settings(settings: &Value) -> Option<Value> {
    let obj = settings.as_object()?;
    let task = obj.get("task")?.as_str()?;
    if !RANKED_TASKS.contains(&task) {
        return None;
    }
    run_models(settings)?;
    let mut o = obj.clone();
    o.remove("models");
    let shots = o.get("shots").and_then(Value::as_u64).unwrap_or(0);
    if task != "probe" && shots == 0 {
        o.remove("limit");
    }
    Some(canonical(&Value::Object(o)))
}

/// Keys sorted at every level, so equal settings are equal text whatever their order.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(o) => {
            let sorted: BTreeMap<&String, Value> =
                o.iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// Where a model's predictions are: a run and the name it had there.
#[derive(Debug, Clone)]
struct Entry {
    run: i64,
    name: String,
}

#[derive(Debug, Clone)]
struct GroupModel {
    hash: String,
    names: Vec<String>,
    /// Newest run first.
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Group {
    settings: Value,
    task: String,
    runs: Vec<i64>,
    models: Vec<GroupModel>,
}

/// The runs on `dataset_sha` grouped by prediction settings, in order of first run; models
/// in order of first appearance.
fn groups(records: &[RunRecord], dataset_sha: &str, task: Option<Task>) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for r in records.iter().filter(|r| r.dataset_sha256 == dataset_sha) {
        if task.is_some_and(|t| t.key() != r.task) {
            continue;
        }
        let Ok(settings) = serde_json::from_str::<Value>(&r.settings) else {
            continue;
        };
        let (Some(key), Some(models)) = (prediction_settings(&settings), run_models(&settings))
        else {
            continue;
        };
        let gi = match out.iter().position(|g| g.settings == key) {
            Some(i) => i,
            None => {
                out.push(Group {
                    settings: key,
                    task: r.task.clone(),
                    runs: Vec::new(),
                    models: Vec::new(),
                });
                out.len() - 1
            }
        };
        let g = &mut out[gi];
        g.runs.push(r.id);
        for (name, hash) in models {
            let entry = Entry {
                run: r.id,
                name: name.clone(),
            };
            match g.models.iter_mut().find(|m| m.hash == hash) {
                Some(m) => {
                    if !m.names.contains(&name) {
                        m.names.push(name);
                    }
                    m.entries.insert(0, entry);
                }
                None => g.models.push(GroupModel {
                    hash,
                    names: vec![name],
                    entries: vec![entry],
                }),
            }
        }
    }
    out
}

/// The efficiency block of a model whose predictions all came from earlier runs: the one
/// the run that computed them measured (this process ran no inference to measure).
pub(crate) fn measured_efficiency(store: &Store, entries: &[(i64, String)]) -> Option<Efficiency> {
    let mut reports = StoredReports {
        store,
        by_run: HashMap::new(),
    };
    reports
        .measured(entries.iter().map(|(r, n)| (*r, n.as_str())))
        .map(|r| r.efficiency)
}

/// The earlier runs whose predictions of model `hash` can stand in for this run's: the
/// same dataset and prediction settings, newest first, as (run, the model's name there).
pub fn earlier_predictions(
    store: &Store,
    this_run: i64,
    dataset_sha: &str,
    settings: &Value,
    hash: &str,
) -> Result<Vec<(i64, String)>> {
    let Some(key) = prediction_settings(settings) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for r in store.run_records()?.iter().rev() {
        if r.id == this_run || r.dataset_sha256 != dataset_sha {
            continue;
        }
        let Ok(s) = serde_json::from_str::<Value>(&r.settings) else {
            continue;
        };
        if prediction_settings(&s).as_ref() != Some(&key) {
            continue;
        }
        for (name, h) in run_models(&s).unwrap_or_default() {
            if h == hash {
                out.push((r.id, name));
            }
        }
    }
    Ok(out)
}

/// The settings that take another value in some other group.
fn differing(groups: &[Group], g: &Group) -> Map<String, Value> {
    let mut out = Map::new();
    let Some(mine) = g.settings.as_object() else {
        return out;
    };
    let mut keys: Vec<&String> = mine.keys().collect();
    for other in groups {
        if let Some(o) = other.settings.as_object() {
            keys.extend(o.keys());
        }
    }
    keys.sort();
    keys.dedup();
    for k in keys {
        let v = mine.get(k).cloned().unwrap_or(Value::Null);
        if groups
            .iter()
            .any(|o| o.settings.get(k).cloned().unwrap_or(Value::Null) != v)
        {
            out.insert(k.clone(), v);
        }
    }
    out
}

fn describe_settings(m: &Map<String, Value>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The dataset's test examples as a run with these settings split it.
pub(crate) fn run_dataset(
    data: &Path,
    task: &str,
    s: &Value,
) -> Result<(lmcompare_engine::data::Dataset, Vec<Example>)> {
    let ds = if task == "multiple-choice" {
        choice_dataset(data)?.0
    } else {
        let cols: Vec<String> = s["columns"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let columns = match cols.as_slice() {
            [text, label, split, id] => Columns {
                text: text.clone(),
                label: label.clone(),
                split: split.clone(),
                id: id.clone(),
            },
            _ => Columns::default(),
        };
        load_dataset(
            data,
            &columns,
            s["test_size"].as_f64().unwrap_or(0.2),
            s["seed"].as_u64().unwrap_or(0),
        )?
    };
    let mut test: Vec<Example> = ds.split(Split::Test).into_iter().cloned().collect();
    if let Some(n) = s["limit"].as_u64() {
        test.truncate(n as usize);
    }
    Ok((ds, test))
}

/// Stored model reports by run, read once.
pub(crate) struct StoredReports<'s> {
    store: &'s Store,
    by_run: HashMap<i64, Option<Vec<ModelReport>>>,
}

impl StoredReports<'_> {
    /// The model's report from the newest of `entries` that computed its predictions (its
    /// efficiency was measured there), else from the newest with a report.
    fn measured<'n>(
        &mut self,
        entries: impl Iterator<Item = (i64, &'n str)>,
    ) -> Option<ModelReport> {
        let found: Vec<ModelReport> = entries
            .filter_map(|(run, name)| self.model(run, name))
            .collect();
        found
            .iter()
            .find(|r| r.computed_examples > 0)
            .or(found.first())
            .cloned()
    }

    fn model(&mut self, run: i64, name: &str) -> Option<ModelReport> {
        let store = self.store;
        let models = self.by_run.entry(run).or_insert_with(|| {
            let text = store.run_result(run).ok().flatten()?;
            let doc: CompareReport = serde_json::from_str(&text).ok()?;
            Some(doc.models)
        });
        models.as_ref()?.iter().find(|m| m.name == name).cloned()
    }
}

/// The leaderboard of `cfg.data` from the store. Nothing is computed but the statistics.
pub fn leaderboard(cfg: &LeaderboardConfig) -> Result<Leaderboard> {
    if !cfg.db.exists() {
        return Err(bad!("{}: no such store", cfg.db.display()));
    }
    if !cfg.data.exists() {
        return Err(bad!("{}: no such file", cfg.data.display()));
    }
    let store = Store::open(&cfg.db)?;
    let sha = store.file_sha256(&cfg.data)?;
    let records = store.run_records()?;
    let all = groups(&records, &sha, cfg.task);
    if all.is_empty() {
        let scored: Vec<String> = store
            .datasets()?
            .iter()
            .map(|d| {
                format!(
                    "{} ({}…, {} rows)",
                    d.path,
                    &d.sha256[..d.sha256.len().min(12)],
                    d.rows
                )
            })
            .collect();
        let what = match cfg.task {
            Some(t) => format!("for task {}", t.key()),
            None => "by compare".to_owned(),
        };
        return Err(bad!(
            "{} (sha256 {}…) was never scored {what} in {}; the store has {}",
            cfg.data.display(),
            &sha[..12],
            cfg.db.display(),
            if scored.is_empty() {
                "no datasets".to_owned()
            } else {
                format!("runs on: {}", scored.join("; "))
            }
        ));
    }
    if cfg.one_group && all.len() > 1 && cfg.group.is_none() {
        let lines: Vec<String> = all
            .iter()
            .enumerate()
            .map(|(i, g)| {
                format!(
                    "group {} ({})",
                    i + 1,
                    describe_settings(&differing(&all, g))
                )
            })
            .collect();
        return Err(bad!(
            "{}: the models were scored under {} different settings, which are never pooled: {}; pick one with --group N",
            cfg.data.display(),
            all.len(),
            lines.join("; ")
        ));
    }
    let chosen: Vec<usize> = match cfg.group {
        Some(n) if n == 0 || n > all.len() => {
            return Err(bad!(
                "--group {n}: {} has {} group(s) of settings in {}",
                cfg.data.display(),
                all.len(),
                cfg.db.display()
            ))
        }
        Some(n) => vec![n - 1],
        None => (0..all.len()).collect(),
    };
    let mut reports = StoredReports {
        store: &store,
        by_run: HashMap::new(),
    };
    let mut out = Vec::new();
    for gi in chosen {
        out.push(group_report(cfg, &store, &mut reports, &all, gi)?);
    }
    Ok(Leaderboard {
        lmcompare_version: env!("CARGO_PKG_VERSION").to_owned(),
        dataset: LeaderboardDataset {
            path: cfg.data.clone(),
            sha256: sha,
        },
        metric: cfg.metric.key().to_owned(),
        groups: out,
    })
}

fn group_report(
    cfg: &LeaderboardConfig,
    store: &Store,
    reports: &mut StoredReports<'_>,
    all: &[Group],
    gi: usize,
) -> Result<LeaderboardGroup> {
    let g = &all[gi];
    let (ds, test) = run_dataset(&cfg.data, &g.task, &g.settings)?;
    // A display name per model: the first it was run under, made unique with its hash.
    let first: Vec<&str> = g.models.iter().map(|m| m.names[0].as_str()).collect();
    let mut runs = Vec::new();
    let mut stored = Vec::new();
    for (mi, m) in g.models.iter().enumerate() {
        let name = if first.iter().filter(|n| **n == first[mi]).count() > 1 {
            format!("{}@{}", first[mi], &m.hash[..m.hash.len().min(8)])
        } else {
            first[mi].to_owned()
        };
        // The newest run's prediction of an example wins (runs of the same settings agree).
        let mut by_id: HashMap<String, StoredPrediction> = HashMap::new();
        for e in &m.entries {
            for (id, p) in store.predictions(e.run, &e.name)? {
                by_id.entry(id).or_insert(p);
            }
        }
        let from = m.entries.iter().find_map(|e| reports.model(e.run, &e.name));
        stored.push(by_id.len());
        runs.push(ModelRun {
            name,
            spec: from.as_ref().map_or_else(String::new, |r| r.spec.clone()),
            predictions: by_id.into_values().collect(),
            computed: 0,
            reused: 0,
            efficiency: from.as_ref().map_or_else(
                || Efficiency {
                    latency_ms_p50: f64::NAN,
                    latency_ms_p95: f64::NAN,
                    ..Efficiency::default()
                },
                |r| r.efficiency.clone(),
            ),
            backend: from
                .as_ref()
                .map_or_else(String::new, |r| r.backend.clone()),
            invariance: None,
            failed: Vec::new(),
            extra: Value::Null,
            warnings: from.map(|r| r.warnings).unwrap_or_default(),
        });
    }
    // Every model on the examples all of them have, as one compare of them all.
    let mut notes = Vec::new();
    let test_ids: std::collections::HashSet<&str> = test.iter().map(|e| e.id.as_str()).collect();
    let sets: Vec<std::collections::HashSet<&str>> = runs
        .iter()
        .map(|r| {
            r.predictions
                .iter()
                .map(|p| p.example_id.as_str())
                .filter(|id| test_ids.contains(id))
                .collect()
        })
        .collect();
    let common: Vec<&Example> = test
        .iter()
        .filter(|e| sets.iter().all(|s| s.contains(e.id.as_str())))
        .collect();
    if common.is_empty() {
        let sizes: Vec<String> = runs
            .iter()
            .zip(&sets)
            .map(|(r, s)| format!("{} has {}", r.name, s.len()))
            .collect();
        return Err(bad!(
            "group {} ({}): the models have no test example in common ({}); score them on the same examples (same --limit, same split)",
            gi + 1,
            g.task,
            sizes.join(", ")
        ));
    }
    for (r, s) in runs.iter().zip(&sets) {
        if s.len() > common.len() {
            notes.push(format!(
                "{}: {} of its {} stored test predictions are left out, as other models lack them",
                r.name,
                s.len() - common.len(),
                s.len()
            ));
        }
    }
    for r in &mut runs {
        let keep: std::collections::HashSet<&str> = common.iter().map(|e| e.id.as_str()).collect();
        r.predictions
            .retain(|p| keep.contains(p.example_id.as_str()));
        r.reused = r.predictions.len();
        // The order compare scores in: the test examples' order.
        let order: HashMap<&str, usize> = common
            .iter()
            .enumerate()
            .map(|(i, e)| (e.id.as_str(), i))
            .collect();
        r.predictions
            .sort_by_key(|p| order.get(p.example_id.as_str()).copied());
    }
    let seed = g.settings["seed"].as_u64().unwrap_or(0);
    let scoring = Scoring {
        bootstrap: cfg.stats.bootstrap,
        permutations: cfg.stats.permutations,
        seed,
        metric: cfg.metric,
        correction: cfg.stats.correction,
    };
    let ctx = ReportContext {
        task: g.task.clone(),
        dataset: dataset_info(&ds, &cfg.data, common.len(), 0),
        run: json!({
            "leaderboard": true, "runs": g.runs, "db": cfg.db, "seed": seed,
            "lmcompare_version": env!("CARGO_PKG_VERSION"),
            "note": "gathered from the store; no model was run",
        }),
        excluded: None,
        hashes: g.models.iter().map(|m| m.hash.clone()).collect(),
        examples_cap: cfg.html_examples,
        tokenizers: Vec::new(),
    };
    let comparison = comparison_doc(&runs, &common, &ds.labels, &scoring, ctx)?;
    let shares = ranks(&runs, &common, &ds.labels, cfg.metric, &scoring)?;
    let higher = cfg.metric.higher_is_better();
    let finite = |v: f64| v.is_finite().then_some(v);
    let mut ranking: Vec<RankedModel> = comparison
        .models
        .iter()
        .zip(&g.models)
        .zip(&stored)
        .enumerate()
        .map(|(i, ((m, gm), &n))| {
            let (lo, hi) = m.interval(cfg.metric.key()).unwrap_or((f64::NAN, f64::NAN));
            let s = shares.as_ref().map(|s| &s[i]);
            RankedModel {
                rank: 0,
                model: m.name.clone(),
                content_hash: gm.hash.clone(),
                names: gm.names.clone(),
                runs: gm.entries.iter().map(|e| e.run).collect(),
                stored_examples: n,
                metric: finite(m.metric(cfg.metric.key())),
                ci_low: finite(lo),
                ci_high: finite(hi),
                p_best: s.and_then(|s| finite(s.best)),
                mean_rank: s.and_then(|s| finite(s.mean_rank)),
                rank_low: s.and_then(|s| finite(s.rank_low)),
                rank_high: s.and_then(|s| finite(s.rank_high)),
                pareto: comparison.pareto.models.contains(&m.name),
            }
        })
        .collect();
    let key = |r: &RankedModel| {
        let v = r
            .metric
            .unwrap_or(f64::NEG_INFINITY * if higher { 1.0 } else { -1.0 });
        if higher {
            -v
        } else {
            v
        }
    };
    ranking.sort_by(|a, b| {
        key(a)
            .total_cmp(&key(b))
            .then(b.p_best.unwrap_or(0.0).total_cmp(&a.p_best.unwrap_or(0.0)))
    });
    // Equal values share a rank (competition ranking: 1, 1, 3).
    for i in 0..ranking.len() {
        ranking[i].rank = if i > 0 && ranking[i].metric == ranking[i - 1].metric {
            ranking[i - 1].rank
        } else {
            i + 1
        };
    }
    Ok(LeaderboardGroup {
        group: gi + 1,
        task: g.task.clone(),
        settings: g.settings.clone(),
        differs: differing(all, g),
        runs: g.runs.clone(),
        ranking,
        notes,
        comparison,
    })
}

/// Each model's share of paired resamples in which it is best; None without resamples or
/// where the metric is undefined for some model.
fn ranks(
    runs: &[ModelRun],
    test: &[&Example],
    dataset_labels: &[String],
    metric: Metric,
    s: &Scoring,
) -> Result<Option<Vec<lmcompare_metrics::RankShare>>> {
    if s.bootstrap == 0 || runs.len() < 2 {
        return Ok(None);
    }
    let scored = crate::report::predictions(runs, test, dataset_labels)?;
    let refs: Vec<&Predictions> = scored.iter().map(|(_, p)| p).collect();
    let opts = BootstrapOptions {
        resamples: s.bootstrap,
        seed: s.seed,
        confidence: 0.95,
    };
    Ok(rank_shares(&refs, &MetricOptions::default(), metric, &opts).ok())
}
