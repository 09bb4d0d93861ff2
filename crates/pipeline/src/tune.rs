//! `tune`: hyperparameter search for fine-tuning the classification head of one or more
//! encoders on frozen features, with pruning and early stopping, every trial in the store,
//! and the test-split comparison of the tuned models against their untuned baselines.
//!
//! Selection never sees the test split: trials are scored on the validation split, or by
//! k-fold cross-validation on the train split when the data has none. Only the final
//! comparison touches the test split.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use lmcompare_engine::classifier::{save_classifier, HeadLayout, TrainedHead};
use lmcompare_engine::data::{load_dataset, Dataset, Example, Split};
use lmcompare_engine::finetune::{layer_count, UnfrozenTrainer};
use lmcompare_engine::spec::resolve;
use lmcompare_engine::store::{timestamp, NewRun, Store, StoredPrediction, StoredTrial};
use lmcompare_engine::{LoadOptions, TextEncoder};
use lmcompare_metrics::{Evaluator, LabelSet, Metric, MetricOptions, Predictions};
use lmcompare_tune::{
    Config, Domain, EarlyStopping, EpochTrainer, HeadActivation, HeadShape, HeadTrainer,
    HeadWeights, Pruner, Sampler, SamplerKind, Space, TrainConfig, TrialRecord, TrialStatus, Value,
};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde_json::{json, Value as Json};

use crate::cache::{cached_vectors, encoder_hash, sha, EmbeddingRequest};
use crate::config::{PrunerKind, SearchKind, TuneConfig};
use crate::report::{comparison_doc, dataset_info, ReportContext, Scoring};
use crate::runner::{argmax, bar, label_index, limited, ModelRun, PeakMemory};
use crate::tasks::encoder::encoder_efficiency;
use crate::{bad, fail, Error, Result};

/// Everything a model's search needs, in one place.
struct Prepared {
    name: String,
    spec: String,
    dir: PathBuf,
    hash: String,
    layout: HeadLayout,
    shape: HeadShape,
    pretrained: Option<(Vec<f32>, Vec<f32>)>,
    /// Features of the train, validation and test examples, in that order (`n × d`).
    features: Vec<f32>,
    labels: Vec<u32>,
    /// Per example: (tokens, batch latency ms, batch size) from the forward pass.
    cost: Vec<(usize, f64, usize)>,
    model: TextEncoder,
    is_onnx: bool,
    /// Top layers trained with the head (0: head only).
    unfrozen: usize,
    /// With unfrozen layers: each example's token states after the frozen layers.
    states: Vec<Vec<f32>>,
}

/// (train rows, validation rows) of each fold.
type Folds = Vec<(Vec<usize>, Vec<usize>)>;

fn parse_named(specs: &[String]) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for s in specs {
        let (name, spec) = match s.split_once('=') {
            Some((n, sp)) if !n.is_empty() && !sp.is_empty() && !n.contains('/') => {
                (n.to_owned(), sp.to_owned())
            }
            _ => {
                let name = s
                    .trim_end_matches('/')
                    .rsplit(['/', ':'])
                    .next()
                    .unwrap_or(s)
                    .to_owned();
                (name, s.clone())
            }
        };
        if out.iter().any(|(n, _)| *n == name) {
            return Err(bad!(
                "two models are named {name:?}; give each --model a distinct NAME=SPEC"
            ));
        }
        out.push((name, spec));
    }
    Ok(out)
}

fn stratified_folds(labels: &[u32], rows: &[usize], k: usize, seed: u64) -> Folds {
    let mut by_class: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for &r in rows {
        by_class.entry(labels[r]).or_default().push(r);
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x666f_6c64);
    let mut assignment: Vec<Vec<usize>> = vec![Vec::new(); k];
    let mut next = 0usize;
    for members in by_class.values_mut() {
        members.shuffle(&mut rng);
        for &r in members.iter() {
            assignment[next % k].push(r);
            next += 1;
        }
    }
    (0..k)
        .map(|f| {
            let mut val = assignment[f].clone();
            val.sort_unstable();
            let mut train: Vec<usize> = rows.iter().copied().filter(|r| !val.contains(r)).collect();
            train.sort_unstable();
            (train, val)
        })
        .collect()
}

fn metric_value(metric: Metric, labels: &LabelSet, gold: &[u32], proba: &[Vec<f64>]) -> f64 {
    let k = labels.len();
    let pred: Vec<u32> = proba.iter().map(|p| argmax(p) as u32).collect();
    let flat: Vec<f64> = proba.iter().flatten().copied().collect();
    let Ok(p) = Predictions::from_indices(labels.clone(), k, gold.to_vec(), pred, Some(flat))
    else {
        return f64::NAN;
    };
    Evaluator::new(&p, &MetricOptions::default())
        .ok()
        .and_then(|e| e.evaluate().get(metric))
        .unwrap_or(f64::NAN)
}

/// `--unfreeze`: 0, a layer count, or `all`.
fn parse_unfreeze(text: &str) -> Result<Option<usize>> {
    match text.trim() {
        "all" => Ok(None),
        t => t.parse::<usize>().map(Some).map_err(|_| {
            bad!("--unfreeze {t:?}: give 0 (head only), a number of top layers, or all")
        }),
    }
}

/// A trainer for one fold: the head alone, or the head with the top layers.
fn make_trainer<'p>(
    p: &'p Prepared,
    train: &[usize],
    cfg: &TrainConfig,
    seed: u64,
    maximize: bool,
) -> Result<Box<dyn EpochTrainer + 'p>> {
    let init = HeadWeights::init(&p.shape, p.pretrained.clone(), p.layout.init_std, seed);
    if p.unfrozen == 0 {
        let mut t = HeadTrainer::new(
            &p.features,
            &p.labels,
            train.to_vec(),
            p.shape,
            init,
            cfg.clone(),
            seed,
        )
        .map_err(|e| bad!("model {}: {e}", p.name))?;
        t.plateau_maximize(maximize);
        Ok(Box::new(t))
    } else {
        let mut t = UnfrozenTrainer::new(
            &p.dir,
            p.unfrozen,
            &p.states,
            &p.labels,
            train.to_vec(),
            p.shape,
            init,
            cfg.clone(),
            seed,
        )
        .map_err(|e| match e.is_bad_input() {
            true => Error::BadInput(format!("model {}: {e}", p.name)),
            false => fail!("model {}: {e}", p.name),
        })?;
        t.plateau_maximize(maximize);
        Ok(Box::new(t))
    }
}

/// One epoch's record of a trial.
#[derive(Clone)]
struct EpochRow {
    epoch: usize,
    train_loss: f64,
    val_metric: f64,
    lr: f64,
}

struct TrialOutcome {
    status: TrialStatus,
    metric: Option<f64>,
    best_epoch: usize,
    epochs: Vec<EpochRow>,
}

struct SearchSettings<'a> {
    metric: Metric,
    patience: Option<usize>,
    min_delta: f64,
    pruner: Pruner,
    seed: u64,
    labels: &'a LabelSet,
}

/// Trains `config` on every fold in lockstep; the curve is the folds' mean validation value.
fn run_trial(
    p: &Prepared,
    folds: &Folds,
    cfg: &TrainConfig,
    s: &SearchSettings<'_>,
    history: &[TrialRecord],
) -> Result<TrialOutcome> {
    let maximize = s.metric.higher_is_better();
    let mut trainers = Vec::with_capacity(folds.len());
    for (train, _) in folds {
        trainers.push(make_trainer(p, train, cfg, s.seed, maximize)?);
    }
    let mut stop = EarlyStopping::new(s.patience, s.min_delta, maximize);
    let mut epochs = Vec::new();
    let mut curve = Vec::new();
    for epoch in 1..=cfg.epochs {
        let mut loss = 0.0;
        let mut value = 0.0;
        let mut lr = 0.0;
        for (f, (t, (_, val))) in trainers.iter_mut().zip(folds).enumerate() {
            let stats = t.train_epoch();
            if stats.diverged {
                epochs.push(EpochRow {
                    epoch,
                    train_loss: f64::NAN,
                    val_metric: f64::NAN,
                    lr: stats.lr,
                });
                return Ok(TrialOutcome {
                    status: TrialStatus::Diverged,
                    metric: None,
                    best_epoch: stop.best_epoch(),
                    epochs,
                });
            }
            let proba = t.predict_proba(val);
            let gold: Vec<u32> = val.iter().map(|&i| p.labels[i]).collect();
            let v = metric_value(s.metric, s.labels, &gold, &proba);
            t.end_epoch(Some(v));
            loss += stats.train_loss;
            value += v;
            if f == 0 {
                lr = stats.lr;
            }
        }
        let n = folds.len() as f64;
        let value = value / n;
        epochs.push(EpochRow {
            epoch,
            train_loss: loss / n,
            val_metric: value,
            lr,
        });
        curve.push(value);
        let should_stop = stop.update(epoch, value);
        if epoch < cfg.epochs && s.pruner.should_prune(history, &curve, maximize) {
            return Ok(TrialOutcome {
                status: TrialStatus::Pruned,
                metric: stop.best(),
                best_epoch: stop.best_epoch(),
                epochs,
            });
        }
        if should_stop {
            break;
        }
    }
    Ok(TrialOutcome {
        status: TrialStatus::Done,
        metric: stop.best(),
        best_epoch: stop.best_epoch(),
        epochs,
    })
}

fn epochs_json(rows: &[EpochRow]) -> Json {
    let f = |x: f64| if x.is_finite() { json!(x) } else { Json::Null };
    json!(rows
        .iter()
        .map(|r| json!({"epoch": r.epoch, "train_loss": f(r.train_loss), "val_metric": f(r.val_metric), "lr": r.lr}))
        .collect::<Vec<_>>())
}

fn config_json(c: &Config) -> Json {
    serde_json::to_value(c).unwrap_or(Json::Null)
}

fn curve_of(epochs: &Json) -> Vec<f64> {
    epochs
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["val_metric"].as_f64().unwrap_or(f64::NAN))
        .collect()
}

/// The single values of a baseline description, over the defaults.
fn baseline_config(text: &str, base: &TrainConfig) -> Result<TrainConfig> {
    let space = Space::parse(text).map_err(|e| bad!("--baseline: {e}"))?;
    let mut c = Config::new();
    for p in &space.params {
        match &p.domain {
            Domain::Choice(v) if v.len() == 1 => {
                c.insert(p.name.clone(), v[0].clone());
            }
            d => {
                return Err(bad!(
                    "--baseline: `{}={}` must be a single value",
                    p.name,
                    d.describe()
                ))
            }
        }
    }
    TrainConfig::from_config(&c, base).map_err(|m| bad!("--baseline: {m}"))
}

/// Largest batch size the space can draw.
fn max_batch(space: &Space) -> Option<i64> {
    space
        .params
        .iter()
        .find(|p| p.name == "batch_size")
        .map(|p| match &p.domain {
            Domain::Choice(v) => v.iter().filter_map(Value::as_f64).fold(0.0, f64::max) as i64,
            Domain::IntRange(_, hi) => *hi,
            _ => 0,
        })
}

#[allow(clippy::too_many_arguments)]
fn prepare(
    cfg: &TuneConfig,
    store: &mut Store,
    name: &str,
    spec: &str,
    rows: &[&Example],
    ds: &Dataset,
    unfreeze: Option<usize>,
    test_start: usize,
) -> Result<Prepared> {
    let resolved = resolve(spec).map_err(|e| bad!("model {name}: {e}"))?;
    let is_onnx = resolved.onnx.is_some();
    if is_onnx {
        return Err(bad!(
            "model {name}: tune trains a head that is saved into the model's weights; give a model folder with model.safetensors or pytorch_model.bin, not an ONNX graph"
        ));
    }
    let dir = resolved.dir.clone();
    let hash = encoder_hash(store, &resolved)?;
    let layout = HeadLayout::of_folder(&dir)?;
    let pretrained = layout.pretrained_dense(&dir)?;
    let model = TextEncoder::load(
        resolved,
        &LoadOptions {
            max_length: cfg.max_length,
            ..Default::default()
        },
    )?;
    store.register_model(&hash, spec, model.backend())?;
    let d = layout.hidden;
    let total_layers = layer_count(&dir)?;
    let unfrozen = unfreeze.unwrap_or(total_layers);
    if unfrozen > total_layers {
        return Err(bad!(
            "model {name}: --unfreeze {unfrozen}, but the model has {total_layers} layers"
        ));
    }
    // The head reads the first token's final state, as every HF *ForSequenceClassification;
    // with unfrozen layers, each example's token states after the frozen ones are kept.
    let frozen = total_layers - unfrozen;
    let settings = if unfrozen == 0 {
        format!(
            "max_length={};features=first_token",
            model.tokenizer.max_length()
        )
    } else {
        format!(
            "max_length={};features=states_after_layer_{frozen}",
            model.tokenizer.max_length()
        )
    };
    let texts: Vec<&str> = rows.iter().map(|e| e.text.as_str()).collect();
    let pb = bar(cfg.quiet, texts.len(), name);
    let (cache, _) = cached_vectors(
        store,
        &model,
        &EmbeddingRequest {
            model_hash: &hash,
            settings: &settings,
            batch_size: cfg.infer_batch_size,
            layers: (unfrozen > 0).then_some(frozen),
            model_name: name,
        },
        &texts,
        &pb,
        &|states: &[f32], dim: usize| {
            if unfrozen == 0 {
                states[..dim].to_vec()
            } else {
                states.to_vec()
            }
        },
        &|i| format!("example `{}`", rows[i].id),
    )?;
    pb.finish_and_clear();
    let mut features = Vec::with_capacity(if unfrozen == 0 { rows.len() * d } else { 0 });
    let mut states = Vec::new();
    let mut cost = Vec::with_capacity(rows.len());
    for e in rows {
        let c = cache
            .get(&sha(&e.text))
            .ok_or_else(|| fail!("missing features for {}", e.id))?;
        if unfrozen == 0 {
            features.extend_from_slice(&c.vector);
        } else {
            states.push(c.vector.clone());
        }
        cost.push((c.tokens, c.batch_latency_ms, c.batch_size));
    }
    if unfrozen > 0 {
        // Partial forward passes say nothing about the model's latency: time full passes
        // over the test split for the efficiency block.
        let texts: Vec<&str> = rows[test_start..].iter().map(|e| e.text.as_str()).collect();
        let encoded = model.tokenizer.encode_batch(&texts)?;
        model.run_batches(&encoded, cfg.infer_batch_size, |idx, _, timing| {
            for &i in idx {
                cost[test_start + i] = (encoded[i].ids.len(), timing.seconds * 1e3, idx.len());
            }
            Ok(())
        })?;
    }
    let labels = rows
        .iter()
        .map(|e| Ok(label_index(&ds.labels, &e.label, &format!("example {}", e.id))? as u32))
        .collect::<Result<_>>()?;
    let shape = HeadShape {
        input: d,
        hidden: d,
        classes: ds.labels.len(),
        activation: if layout.activation == "relu" {
            HeadActivation::Relu
        } else {
            HeadActivation::Tanh
        },
        input_dropout: layout.input_dropout,
    };
    Ok(Prepared {
        name: name.to_owned(),
        spec: spec.to_owned(),
        dir,
        hash,
        layout,
        shape,
        pretrained,
        features,
        labels,
        cost,
        model,
        is_onnx,
        unfrozen,
        states,
    })
}

/// Trains `cfg` on `train` for `epochs` epochs (feeding `val`'s metric to plateau schedules
/// when there is one); the same seed as the trials, so the winner is reproduced exactly.
/// A final model: head, trained encoder tensors, and test-split probabilities.
struct FinalModel {
    head: HeadWeights,
    encoder: Vec<(String, Vec<f32>)>,
    test_proba: Vec<Vec<f64>>,
}

fn train_final(
    p: &Prepared,
    train: &[usize],
    val: &[usize],
    test: &[usize],
    cfg: &TrainConfig,
    epochs: usize,
    s: &SearchSettings<'_>,
) -> Result<FinalModel> {
    let mut t = make_trainer(p, train, cfg, s.seed, s.metric.higher_is_better())?;
    for _ in 0..epochs {
        let stats = t.train_epoch();
        if stats.diverged {
            return Err(fail!("model {}: training diverged (NaN loss)", p.name));
        }
        let v = if val.is_empty() {
            None
        } else {
            let proba = t.predict_proba(val);
            let gold: Vec<u32> = val.iter().map(|&i| p.labels[i]).collect();
            Some(metric_value(s.metric, s.labels, &gold, &proba))
        };
        t.end_epoch(v);
    }
    Ok(FinalModel {
        head: t.head_weights(),
        encoder: t.encoder_tensors(),
        test_proba: t.predict_proba(test),
    })
}

fn predictions(
    p: &Prepared,
    proba: &[Vec<f64>],
    test_rows: &[usize],
    test: &[&Example],
    labels: &[String],
) -> Vec<StoredPrediction> {
    test.iter()
        .zip(test_rows)
        .zip(proba)
        .map(|((e, &r), pr)| StoredPrediction {
            example_id: e.id.clone(),
            label: labels[argmax(pr)].clone(),
            probabilities: pr.clone(),
            tokens: p.cost[r].0,
            batch_latency_ms: p.cost[r].1,
            batch_size: p.cost[r].2,
        })
        .collect()
}

pub fn tune(cfg: &TuneConfig) -> Result<Json> {
    let started = Instant::now();
    let unfreeze = parse_unfreeze(&cfg.unfreeze)?;
    let models = parse_named(&cfg.models)?;
    let base = TrainConfig::default();
    let baseline = baseline_config(&cfg.baseline, &base)?;
    let space = Space::parse(&cfg.space).map_err(|e| bad!("--space: {e}"))?;
    let sampler_kind = match cfg.search {
        SearchKind::Grid => SamplerKind::Grid,
        SearchKind::Random | SearchKind::Halving => SamplerKind::Random,
        SearchKind::Tpe => SamplerKind::Tpe,
    };
    let sampler =
        Sampler::new(sampler_kind, space.clone(), cfg.seed).map_err(|e| bad!("--space: {e}"))?;
    let pruner = match (cfg.pruner, cfg.search) {
        (PrunerKind::Auto, SearchKind::Halving) | (PrunerKind::Halving, _) => Pruner::Halving {
            min_resource: 1,
            reduction_factor: 3,
        },
        (PrunerKind::Median, _) => Pruner::Median {
            startup_trials: 5,
            warmup_epochs: 1,
        },
        _ => Pruner::None,
    };
    let n_trials = cfg.trials.or(sampler.grid_size()).unwrap_or(20);
    if n_trials == 0 {
        return Err(bad!("--trials must be at least 1"));
    }
    if cfg.folds < 2 {
        return Err(bad!("--folds must be at least 2"));
    }
    if cfg.infer_batch_size == 0 {
        return Err(bad!("--infer-batch-size must be at least 1"));
    }
    let cols = cfg.cols.columns();
    let ds = load_dataset(&cfg.data, &cols, cfg.test_size, cfg.seed)?;
    let train = limited(&ds, Split::Train, cfg.limit);
    let validation = limited(&ds, Split::Validation, cfg.limit);
    let test = limited(&ds, Split::Test, cfg.limit);
    for (split, rows) in [("train", &train), ("test", &test)] {
        if rows.is_empty() {
            return Err(bad!(
                "{}: the {split} split is empty; tune trains on train, selects on validation (or k-fold on train) and compares on test",
                cfg.data.display()
            ));
        }
    }
    let label_set = LabelSet::new(ds.labels.clone()).map_err(|e| Error::BadInput(e.to_string()))?;
    if ds.labels.len() < 2 {
        return Err(bad!(
            "{}: one label only ({}); classification needs at least two",
            cfg.data.display(),
            ds.labels.join(", ")
        ));
    }
    // Rows: train, then validation, then test.
    let rows: Vec<&Example> = train
        .iter()
        .chain(validation.iter())
        .chain(test.iter())
        .copied()
        .collect();
    let train_rows: Vec<usize> = (0..train.len()).collect();
    let val_rows: Vec<usize> = (train.len()..train.len() + validation.len()).collect();
    let test_rows: Vec<usize> = (train.len() + validation.len()..rows.len()).collect();
    let gold_labels: Vec<u32> = rows
        .iter()
        .map(|e| Ok(label_index(&ds.labels, &e.label, &format!("example {}", e.id))? as u32))
        .collect::<Result<_>>()?;
    let (folds, selection) = if validation.is_empty() {
        if train.len() < cfg.folds * 2 {
            return Err(bad!(
                "{}: {} train examples are too few for {}-fold cross-validation (no validation split given)",
                cfg.data.display(),
                train.len(),
                cfg.folds
            ));
        }
        (
            stratified_folds(&gold_labels, &train_rows, cfg.folds, cfg.seed),
            format!(
                "{}-fold stratified cross-validation on the train split",
                cfg.folds
            ),
        )
    } else {
        (
            vec![(train_rows.clone(), val_rows.clone())],
            "the validation split".to_owned(),
        )
    };
    let smallest_fold = folds.iter().map(|f| f.0.len()).min().unwrap_or(0);
    if let Some(b) = max_batch(&space).filter(|&b| b as usize > smallest_fold) {
        return Err(bad!(
            "--space: batch_size {b} is larger than the train split used for training ({smallest_fold} examples{})",
            if validation.is_empty() { " per fold" } else { "" }
        ));
    }
    if baseline.batch_size > train.len() {
        return Err(bad!(
            "--baseline: batch_size {} is larger than the train split ({} examples)",
            baseline.batch_size,
            train.len()
        ));
    }
    let settings = SearchSettings {
        metric: cfg.metric,
        patience: (cfg.patience > 0).then_some(cfg.patience),
        min_delta: cfg.min_delta,
        pruner,
        seed: cfg.seed,
        labels: &label_set,
    };
    let maximize = cfg.metric.higher_is_better();

    let mut store = Store::open(&cfg.db)?;
    let mut all_trials: Vec<Json> = Vec::new();
    let mut best_per_model: serde_json::Map<String, Json> = Default::default();
    let mut runs: Vec<ModelRun> = Vec::new();
    let mut saved: serde_json::Map<String, Json> = Default::default();
    let mut search_keys = Vec::new();
    let mut overall_best: Option<(f64, Json)> = None;
    let mut trial_counter = 0usize;
    for (name, spec) in &models {
        let peak = PeakMemory::start();
        let p = prepare(
            cfg,
            &mut store,
            name,
            spec,
            &rows,
            &ds,
            unfreeze,
            test_rows[0],
        )?;
        // The key covers everything that changes a trial's result, not the trial count,
        // so a larger --trials extends a finished search.
        let key_doc = json!({
            "model": p.hash, "dataset": ds.sha256, "columns": cfg.cols.names(),
            "limit": cfg.limit, "max_length": cfg.max_length, "seed": cfg.seed, "test_size": cfg.test_size,
            "space": space.describe(), "search": format!("{:?}", cfg.search), "pruner": pruner.describe(),
            "metric": cfg.metric.key(), "patience": cfg.patience, "min_delta": cfg.min_delta,
            "folds": if validation.is_empty() { cfg.folds } else { 0 }, "unfreeze": p.unfrozen,
        });
        let search_key = sha(&key_doc.to_string());
        search_keys.push(search_key.clone());
        let stored: HashMap<usize, StoredTrial> = store
            .trials(&search_key)?
            .into_iter()
            .map(|t| (t.trial, t))
            .collect();
        let mut history: Vec<TrialRecord> = Vec::new();
        let mut model_trials: Vec<(usize, Config, TrialStatus, Option<f64>, usize, Json)> =
            Vec::new();
        let pb = bar(cfg.quiet, n_trials, &format!("{name} trials"));
        for t in 0..n_trials {
            let (config, status, metric, best_epoch, epochs) = if let Some(st) = stored.get(&t) {
                let config: Config = serde_json::from_str(&st.config)?;
                let epochs: Json = serde_json::from_str(&st.epochs)?;
                let status = TrialStatus::parse(&st.status)
                    .ok_or_else(|| fail!("store: unknown trial status {}", st.status))?;
                (config, status, st.metric, st.best_epoch, epochs)
            } else {
                let Some(config) = sampler.suggest(t, &history, maximize) else {
                    break;
                };
                let cfg = TrainConfig::from_config(&config, &base).map_err(Error::BadInput)?;
                let t0 = Instant::now();
                let out = run_trial(&p, &folds, &cfg, &settings, &history)?;
                let epochs = epochs_json(&out.epochs);
                store.save_trial(
                    &search_key,
                    &StoredTrial {
                        trial: t,
                        model: name.clone(),
                        config: serde_json::to_string(&config)?,
                        status: out.status.key().to_owned(),
                        metric: out.metric,
                        best_epoch: out.best_epoch,
                        epochs: epochs.to_string(),
                        wall_seconds: t0.elapsed().as_secs_f64(),
                    },
                )?;
                (config, out.status, out.metric, out.best_epoch, epochs)
            };
            history.push(TrialRecord {
                config: config.clone(),
                status,
                metric,
                curve: curve_of(&epochs),
            });
            model_trials.push((t, config, status, metric, best_epoch, epochs));
            pb.inc(1);
        }
        pb.finish_and_clear();
        let wall: HashMap<usize, f64> = store
            .trials(&search_key)?
            .into_iter()
            .map(|t| (t.trial, t.wall_seconds))
            .collect();
        let better = |a: f64, b: f64| if maximize { a > b } else { a < b };
        let best = model_trials
            .iter()
            .filter(|t| t.2 == TrialStatus::Done && t.3.is_some_and(|m| !m.is_nan()))
            .fold(None::<&(usize, Config, TrialStatus, Option<f64>, usize, Json)>, |b, t| match b {
                Some(b) if !better(t.3.unwrap_or(f64::NAN), b.3.unwrap_or(f64::NAN)) => Some(b),
                _ => Some(t),
            })
            .ok_or_else(|| {
                fail!(
                    "model {name}: no trial finished (all {} were pruned or diverged); widen --space or lower the learning rates",
                    model_trials.len()
                )
            })?;
        let best_cfg = TrainConfig::from_config(&best.1, &base).map_err(Error::BadInput)?;
        let best_epoch = best.4.max(1);
        for t in &model_trials {
            all_trials.push(json!({
                "id": trial_counter + t.0, "model": name, "trial": t.0, "config": config_json(&t.1),
                "status": t.2.key(), "metric": t.3.filter(|m| m.is_finite()), "best_epoch": t.4,
                "wall_seconds": wall.get(&t.0), "epochs": t.5,
            }));
        }
        let best_json = json!({
            "trial": trial_counter + best.0, "model": name, "config": config_json(&best.1),
            "full_config": serde_json::to_value(best_cfg.summary())?, "metric": best.3, "best_epoch": best_epoch,
        });
        if overall_best
            .as_ref()
            .is_none_or(|(m, _)| better(best.3.unwrap_or(f64::NAN), *m))
        {
            overall_best = Some((best.3.unwrap_or(f64::NAN), best_json.clone()));
        }
        best_per_model.insert(name.clone(), best_json);
        trial_counter += model_trials.len();

        // Final models: the winner retrained with the trial's seed on the train split
        // (reproducing the checkpoint at its best epoch), and the untuned baseline.
        let tuned = train_final(
            &p,
            &train_rows,
            &val_rows,
            &test_rows,
            &best_cfg,
            best_epoch,
            &settings,
        )?;
        let untuned = train_final(
            &p,
            &train_rows,
            &val_rows,
            &test_rows,
            &baseline,
            baseline.epochs,
            &settings,
        )?;
        let dst = cfg.save.join(name);
        save_classifier(
            &p.dir,
            &dst,
            &p.layout,
            &TrainedHead {
                dense_w: &tuned.head.dense_w,
                dense_b: &tuned.head.dense_b,
                out_w: &tuned.head.out_w,
                out_b: &tuned.head.out_b,
                encoder: &tuned.encoder,
            },
            &ds.labels,
            cfg.max_length,
            json!({
                "tuned_from": p.spec, "search_key": search_key, "trial": best.0, "config": config_json(&best.1),
                "validation_metric": {cfg.metric.key(): best.3}, "epochs_trained": best_epoch,
                "selection": selection, "unfrozen_layers": p.unfrozen, "lmcompare_version": env!("CARGO_PKG_VERSION"),
            }),
        )?;
        saved.insert(name.clone(), json!(dst));
        let eff_rows: Vec<(usize, f64, usize)> = test_rows.iter().map(|&r| p.cost[r]).collect();
        let eff = encoder_efficiency(
            &p.model,
            p.is_onnx,
            &p.dir,
            &eff_rows,
            Some(ds.labels.len()),
            &peak,
        )?;
        for (suffix, w) in [("untuned", &untuned), ("tuned", &tuned)] {
            runs.push(ModelRun {
                name: format!("{name}-{suffix}"),
                spec: if suffix == "tuned" {
                    dst.display().to_string()
                } else {
                    format!("{} + head ({})", p.spec, cfg.baseline)
                },
                predictions: predictions(&p, &w.test_proba, &test_rows, &test, &ds.labels),
                computed: 0,
                reused: test.len(),
                efficiency: eff.clone(),
                backend: p.model.backend().to_owned(),
                invariance: None,
                failed: Vec::new(),
                warnings: Vec::new(),
                extra: Json::Null,
            });
        }
    }

    let mut sorted = all_trials.clone();
    sorted.sort_by(|a, b| {
        let (x, y) = (a["metric"].as_f64(), b["metric"].as_f64());
        match (x, y) {
            (Some(x), Some(y)) => {
                if maximize {
                    y.total_cmp(&x)
                } else {
                    x.total_cmp(&y)
                }
            }
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
    });
    let run_key = sha(
        &json!({"tune": search_keys, "baseline": cfg.baseline, "trials": n_trials}).to_string(),
    );
    let model_names: Vec<&str> = models.iter().map(|m| m.0.as_str()).collect();
    let dataset_path = cfg.data.display().to_string();
    let (run_id, _) = store.begin_run(&NewRun {
        key: &run_key,
        task: "tune",
        dataset_sha: &ds.sha256,
        dataset_path: &dataset_path,
        rows: ds.examples.len(),
        models: &model_names.join(","),
        settings: &json!({"space": space.describe(), "search": format!("{:?}", cfg.search)})
            .to_string(),
    })?;
    let comparison = comparison_doc(
        &runs,
        &test,
        &ds.labels,
        &Scoring {
            bootstrap: cfg.stats.bootstrap,
            permutations: cfg.stats.permutations,
            seed: cfg.seed,
            metric: cfg.metric,
            correction: cfg.stats.correction,
        },
        ReportContext {
            task: "tune".into(),
            dataset: dataset_info(&ds, &cfg.data, test.len(), train.len()),
            run: json!({
                "id": run_id, "key": run_key, "lmcompare_version": env!("CARGO_PKG_VERSION"), "seed": cfg.seed,
                "threads": rayon::current_num_threads(), "db": cfg.db,
            }),
            excluded: None,
            hashes: Vec::new(),
            examples_cap: cfg.html_examples,
            tokenizers: Vec::new(),
        },
    )?;
    let doc = json!({
        "trials": sorted,
        "best": overall_best.map(|b| b.1),
        "best_per_model": best_per_model,
        "search": {
            "sampler": format!("{:?}", cfg.search).to_lowercase(), "pruner": pruner.describe(),
            "space": space.describe(), "trials_per_model": n_trials, "metric": cfg.metric.key(),
            "maximize": maximize, "selection": selection, "early_stopping": {"patience": cfg.patience, "min_delta": cfg.min_delta},
            "trained": match unfreeze {
                Some(0) => "the classification head (HF *ForSequenceClassification shape) on frozen first-token features".to_owned(),
                Some(k) => format!("the top {k} encoder layers and the classification head (embeddings and lower layers frozen)"),
                None => "every encoder layer and the classification head (embeddings frozen)".to_owned(),
            },
            "baseline": serde_json::to_value(baseline.summary())?, "seed": cfg.seed,
            "search_keys": search_keys,
        },
        "saved_models": saved,
        "comparison": comparison,
        "run": {
            "id": run_id, "lmcompare_version": env!("CARGO_PKG_VERSION"), "finished": timestamp(),
            "wall_seconds": started.elapsed().as_secs_f64(), "db": cfg.db,
        },
    });
    store.finish_run(run_id, &doc.to_string())?;
    Ok(doc)
}
