//! `compare --task classify` for a generative model behind an OpenAI-compatible server:
//! each label's verbaliser is scored by its log-likelihood after the prompt; the softmax over
//! labels gives the probabilities, so calibration metrics apply. Answers are cached in the
//! store by request hash; finished examples are stored as predictions, so reruns and resumed
//! runs send nothing twice; an example whose requests fail past their retries is reported
//! and retried on the next run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Result;
use lmcompare_engine::data::{load_multiple_choice, Dataset, Example, Split};
use lmcompare_engine::decoder::{Decoder, ScoreRequest};
use lmcompare_engine::encoder_model::softmax64;
use lmcompare_engine::profile::{peak_rss_bytes, percentile};
use lmcompare_engine::remote::{ClientOptions, RemoteClient, RemoteSpec, RequestFailure};
use lmcompare_engine::store::{Store, StoredPrediction};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde_json::{json, Value};

use crate::compare_cmd::{argmax, bar, sha, CompareArgs, ModelRun, INVALID};
use crate::encoder_cmds::engine;
use crate::generate_task::{generate_locally, generate_remotely, normalize, Prompt};
use crate::BadInput;

/// The prompt for `text`, after `shots` solved examples.
fn prompt(template: &str, shots: &[(String, String)], text: &str) -> String {
    let mut p = String::new();
    for (t, verbalized) in shots {
        p.push_str(&template.replace("{text}", t));
        p.push_str(verbalized);
        p.push_str("\n\n");
    }
    p.push_str(&template.replace("{text}", text));
    p
}

pub(crate) struct DecoderSettings {
    pub template: String,
    pub verbalizers: Vec<String>,
    pub shots: Vec<(String, String)>,
    /// Multiple choice: each question's choices by example id.
    pub choices: Option<HashMap<String, Vec<String>>>,
    pub circular: bool,
}

fn letter(i: usize) -> String {
    char::from(b'A' + (i % 26) as u8).to_string()
}

/// A multiple-choice file as a dataset whose labels are the choice letters (all test).
pub(crate) fn choice_dataset(
    path: &std::path::Path,
) -> Result<(Dataset, HashMap<String, Vec<String>>)> {
    let (questions, sha256) = load_multiple_choice(path).map_err(engine)?;
    let k = questions.iter().map(|q| q.choices.len()).max().unwrap_or(2);
    if k > 26 {
        return Err(BadInput(format!(
            "{}: at most 26 choices per question",
            path.display()
        ))
        .into());
    }
    let examples = questions
        .iter()
        .map(|q| Example {
            id: q.id.clone(),
            text: q.question.clone(),
            label: letter(q.answer),
            split: Split::Test,
        })
        .collect();
    let choices = questions.into_iter().map(|q| (q.id, q.choices)).collect();
    Ok((
        Dataset {
            path: path.to_owned(),
            sha256,
            examples,
            labels: (0..k).map(letter).collect(),
            split_source: "all questions are test".into(),
        },
        choices,
    ))
}

/// A multiple-choice prompt: the question, and the choices listed as `A. ...` where the
/// template says `{choices}`.
fn choice_prompt(template: &str, question: &str, listed: &[&String]) -> String {
    let listing: Vec<String> = listed
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{}. {c}", letter(i)))
        .collect();
    template
        .replace("{question}", question)
        .replace("{text}", question)
        .replace("{choices}", &listing.join("\n"))
}

/// Checks the template and verbalisers and draws the few-shot examples (seeded, from train).
pub(crate) fn decoder_settings(
    args: &CompareArgs,
    labels: &[String],
    train: &[&Example],
    choices: Option<HashMap<String, Vec<String>>>,
) -> Result<DecoderSettings> {
    if choices.is_some() {
        let template = if args.template == "{text}\nAnswer:" {
            "Question: {question}\nAnswer:".to_owned()
        } else {
            args.template.clone()
        };
        if !template.contains("{question}") && !template.contains("{text}") {
            return Err(BadInput(format!(
                "--template {template:?} has no {{question}}: it must say where the question goes"
            ))
            .into());
        }
        if args.circular && !template.contains("{choices}") {
            return Err(BadInput(
                "--circular rotates the choices listed in the prompt: the template needs {choices}"
                    .into(),
            )
            .into());
        }
        if args.shots > 0 {
            return Err(BadInput(
                "--shots: multiple-choice files have no train split to draw from".into(),
            )
            .into());
        }
        return Ok(DecoderSettings {
            template,
            verbalizers: Vec::new(),
            shots: Vec::new(),
            choices,
            circular: args.circular,
        });
    }
    if !args.template.contains("{text}") {
        return Err(BadInput(format!(
            "--template {:?} has no {{text}}: it must say where the example goes",
            args.template
        ))
        .into());
    }
    let mut given: HashMap<String, String> = HashMap::new();
    for v in &args.verbalizers {
        let (l, t) = v
            .split_once('=')
            .ok_or_else(|| BadInput(format!("--verbalizer {v:?}: expected LABEL=TEXT")))?;
        if !labels.iter().any(|x| x == l) {
            return Err(BadInput(format!(
                "--verbalizer: {l:?} is not a dataset label ({})",
                labels.join(", ")
            ))
            .into());
        }
        given.insert(l.to_owned(), t.to_owned());
    }
    let verbalizers: Vec<String> = if given.is_empty() {
        labels.iter().map(|l| format!(" {l}")).collect()
    } else {
        let missing: Vec<&str> = labels
            .iter()
            .filter(|l| !given.contains_key(*l))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(BadInput(format!(
                "--verbalizer is missing for dataset label(s) {}: give one per label",
                missing.join(", ")
            ))
            .into());
        }
        labels.iter().map(|l| given[l].clone()).collect()
    };
    let mut pool: Vec<&Example> = train.to_vec();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(args.seed ^ 0x73686f74);
    pool.shuffle(&mut rng);
    if args.shots > pool.len() {
        return Err(BadInput(format!(
            "--shots {}: the train split has {} examples",
            args.shots,
            pool.len()
        ))
        .into());
    }
    let shots = pool[..args.shots]
        .iter()
        .map(|e| {
            let i = labels.iter().position(|l| *l == e.label).unwrap_or(0);
            (e.text.clone(), verbalizers[i].clone())
        })
        .collect();
    Ok(DecoderSettings {
        template: args.template.clone(),
        verbalizers,
        shots,
        choices: None,
        circular: false,
    })
}

/// One (prompt, continuation) an example needs scored.
struct Job {
    example: usize,
    /// The label (choice) this continuation stands for, in the original order.
    label: usize,
    /// Which rotation of the choices (0 unless circular).
    rotation: usize,
    prompt: String,
    continuation: String,
}

impl Job {
    /// The continuation's length in characters and UTF-8 bytes (acc_norm, acc_bytes).
    fn chars_bytes(&self) -> (usize, usize) {
        let t = self.continuation.trim_start();
        (t.chars().count(), t.len())
    }
}

/// A continuation's log-likelihood: (sum, its tokens, tokens of prompt + continuation).
type Scored = (f64, usize, usize);

/// A job's score, or why it has none.
type JobResult = std::result::Result<Scored, String>;

/// Where requests go: the API path, and whether prompt log-probabilities must be checked
/// first (log-likelihood tasks) or not (generation).
#[derive(Clone, Copy)]
pub(crate) struct Endpoint<'a> {
    pub path: &'a str,
    pub needs_prompt_logprobs: bool,
}

/// Completions with echo + logprobs, for every log-likelihood task.
pub(crate) const ECHO: Endpoint<'static> = Endpoint {
    path: "completions",
    needs_prompt_logprobs: true,
};

/// Every (prompt, continuation) an example needs: one per label, or per choice and rotation.
fn example_jobs(settings: &DecoderSettings, ei: usize, e: &Example) -> Vec<Job> {
    let job = |label, rotation, prompt: &String, continuation| Job {
        example: ei,
        label,
        rotation,
        prompt: prompt.clone(),
        continuation,
    };
    let Some(choices) = settings.choices.as_ref().and_then(|c| c.get(&e.id)) else {
        let p = prompt(&settings.template, &settings.shots, &e.text);
        return settings
            .verbalizers
            .iter()
            .enumerate()
            .map(|(l, v)| job(l, 0, &p, v.clone()))
            .collect();
    };
    let k = choices.len();
    let lists = settings.template.contains("{choices}");
    let rotations = if settings.circular { k } else { 1 };
    let mut out = Vec::new();
    for r in 0..rotations {
        let rotated: Vec<&String> = (0..k).map(|j| &choices[(j + r) % k]).collect();
        let p = choice_prompt(&settings.template, &e.text, &rotated);
        for (j, c) in rotated.iter().enumerate() {
            // Listed choices are answered by letter; otherwise the choice text is scored.
            let cont = if lists {
                format!(" {}", letter(j))
            } else {
                format!(" {c}")
            };
            out.push(job((j + r) % k, r, &p, cont));
        }
    }
    out
}

/// A generative model in a comparison: behind an OpenAI-compatible server, or local.
pub(crate) enum DecoderModel {
    Remote(RemoteSpec),
    Local(Box<Decoder>),
}

/// Per-task tallies over the examples scored in this call: acc, acc_norm, acc_bytes,
/// circular, as (right, scored).
type Tallies = [(usize, usize); 4];

/// Predictions from scored jobs. `results[j]` is job j's score or why it has none;
/// `latency[i]` and `batch` describe example i's timing.
#[allow(clippy::too_many_arguments)]
fn predictions_from(
    args: &CompareArgs,
    settings: &DecoderSettings,
    labels: &[String],
    examples: &[&Example],
    jobs: &[Job],
    results: &[JobResult],
    latency: &[f64],
    batch: usize,
    tallies: &mut Tallies,
    failed: &mut Vec<(String, String)>,
) -> Vec<StoredPrediction> {
    type Score = (f64, usize, usize, usize, usize); // sum, tokens, total tokens, chars, bytes
    let k = labels.len();
    let rotations = jobs.iter().map(|j| j.rotation + 1).max().unwrap_or(1);
    let mut ll: Vec<Vec<Vec<Option<Score>>>> = vec![vec![vec![None; k]; rotations]; examples.len()];
    let mut bad: HashMap<usize, String> = HashMap::new();
    for (job, r) in jobs.iter().zip(results) {
        match r {
            Ok((sum, n, total)) => {
                let (chars, bytes) = job.chars_bytes();
                ll[job.example][job.rotation][job.label] = Some((*sum, *n, *total, chars, bytes));
            }
            Err(why) => {
                bad.insert(job.example, why.clone());
            }
        }
    }
    let pick = |scores: &[Score], norm: LengthNorm| -> Vec<f32> {
        scores
            .iter()
            .map(|&(sum, n, _, chars, bytes)| match norm {
                LengthNorm::None => sum as f32,
                LengthNorm::Tokens => (sum / n as f64) as f32,
                LengthNorm::Chars => (sum / chars.max(1) as f64) as f32,
                LengthNorm::Bytes => (sum / bytes.max(1) as f64) as f32,
            })
            .collect()
    };
    let mut rows = Vec::new();
    for (ei, e) in examples.iter().enumerate() {
        if let Some(reason) = bad.get(&ei) {
            failed.push((e.id.clone(), reason.clone()));
            continue;
        }
        let n_choices = settings
            .choices
            .as_ref()
            .and_then(|c| c.get(&e.id))
            .map_or(k, Vec::len);
        let Some(per_rotation) = ll[ei]
            .iter()
            .map(|r| {
                r[..n_choices]
                    .iter()
                    .copied()
                    .collect::<Option<Vec<Score>>>()
            })
            .collect::<Option<Vec<_>>>()
        else {
            failed.push((e.id.clone(), "missing answers".into()));
            continue;
        };
        let scores = &per_rotation[0];
        let mut logits = pick(scores, args.length_norm);
        logits.resize(k, f32::NEG_INFINITY);
        let p = softmax64(&logits);
        let gold = labels.iter().position(|l| *l == e.label).unwrap_or(0);
        let best = |v: Vec<f32>| argmax(&v.iter().map(|&x| x as f64).collect::<Vec<_>>());
        for (t, norm) in [LengthNorm::None, LengthNorm::Chars, LengthNorm::Bytes]
            .into_iter()
            .enumerate()
        {
            tallies[t].0 += usize::from(best(pick(scores, norm)) == gold);
            tallies[t].1 += 1;
        }
        tallies[3].0 += usize::from(
            per_rotation
                .iter()
                .all(|r| best(pick(r, LengthNorm::None)) == gold),
        );
        tallies[3].1 += 1;
        rows.push(StoredPrediction {
            example_id: e.id.clone(),
            label: labels[argmax(&p)].clone(),
            probabilities: p,
            tokens: scores.iter().map(|s| s.2).max().unwrap_or(0),
            batch_latency_ms: latency[ei],
            batch_size: batch,
        });
    }
    rows
}

/// Remote scoring: one echo request per job, answered from the store's cache where possible.
fn score_remote(
    args: &CompareArgs,
    store: &mut Store,
    name: &str,
    spec: &RemoteSpec,
    examples: usize,
    jobs: &[Job],
) -> Result<(Vec<JobResult>, Vec<f64>, usize)> {
    let client = client_for(args, spec)?;
    let bodies: Vec<Value> = jobs
        .iter()
        .map(|j| client.echo_request(&format!("{}{}", j.prompt, j.continuation)))
        .collect();
    let Fetched {
        answers,
        failures,
        sent,
    } = fetch_all(&client, store, &bodies, args, name, ECHO)?;
    let mut latency = vec![0.0; examples];
    let results = jobs
        .iter()
        .enumerate()
        .map(|(j, job)| {
            if let Some((v, ms)) = answers.get(&j) {
                latency[job.example] += ms;
                let start = job.prompt.chars().count();
                let end = start + job.continuation.chars().count();
                RemoteClient::parse_echo(v)
                    .ok()
                    .and_then(|e| {
                        e.continuation(start, end)
                            .map(|c| (c.0, c.1, e.tokens.len()))
                    })
                    .ok_or_else(|| {
                        "the answer has no log-probabilities for the continuation".to_owned()
                    })
            } else if let Some(f) = failures.get(&j) {
                Err(f.to_string())
            } else {
                Err("missing answer".to_owned())
            }
        })
        .collect();
    Ok((results, latency, sent))
}

/// Local scoring of one batch of examples: each distinct prompt is one tree-masked pass that
/// scores all its continuations.
fn score_local(decoder: &Decoder, jobs: &[Job]) -> Result<Vec<JobResult>> {
    let (requests, place) = local_requests(decoder, jobs)?;
    let (scores, _) = decoder.score(&requests).map_err(engine)?;
    Ok(place
        .iter()
        .map(|&(r, c)| {
            let sc = &scores[r][c];
            Ok((
                sc.sum(),
                sc.logprobs.len(),
                requests[r].context.len() + sc.logprobs.len(),
            ))
        })
        .collect())
}

/// The jobs as tokenized score requests (one per distinct prompt), and where each job's
/// continuation sits: (request, continuation).
#[allow(clippy::type_complexity)]
fn local_requests(
    decoder: &Decoder,
    jobs: &[Job],
) -> Result<(Vec<ScoreRequest>, Vec<(usize, usize)>)> {
    let mut requests: Vec<ScoreRequest> = Vec::new();
    let mut index: HashMap<(usize, usize), usize> = HashMap::new();
    let mut place: Vec<(usize, usize)> = Vec::new();
    for j in jobs {
        let (ctx, cont) = decoder
            .encode_pair(&j.prompt, &j.continuation)
            .map_err(engine)?;
        let r = *index.entry((j.example, j.rotation)).or_insert_with(|| {
            requests.push(ScoreRequest {
                context: ctx,
                continuations: Vec::new(),
            });
            requests.len() - 1
        });
        place.push((r, requests[r].continuations.len()));
        requests[r].continuations.push(cont);
    }
    Ok((requests, place))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DecoderScoring {
    /// The label whose verbaliser is most likely after the prompt (probabilities included).
    Loglik,
    /// A greedy answer that must name a label (or its verbaliser); no probabilities.
    Generate,
}

/// The label a generated answer names: its normalised text equals, or starts with as a whole
/// word, exactly one label's verbaliser or name.
pub(crate) fn label_of_answer(
    answer: &str,
    labels: &[String],
    verbalizers: &[String],
) -> Option<usize> {
    let a = normalize(answer);
    let hits: Vec<usize> = labels
        .iter()
        .zip(verbalizers)
        .enumerate()
        .filter(|(_, (l, v))| {
            [normalize(v), normalize(l)]
                .iter()
                .any(|c| !c.is_empty() && (a == *c || a.starts_with(&format!("{c} "))))
        })
        .map(|(i, _)| i)
        .collect();
    (hits.len() == 1).then(|| hits[0])
}

/// Classification by generation: each example's greedy answer is mapped to the label it
/// names, or to `invalid`, which is counted and listed, never dropped or guessed.
#[allow(clippy::too_many_arguments)]
fn classify_by_generation(
    args: &CompareArgs,
    store: &mut Store,
    run_id: i64,
    name: &str,
    model: &DecoderModel,
    labels: &[String],
    test: &[&Example],
    settings: &DecoderSettings,
) -> Result<ModelRun> {
    let prompts: Vec<Prompt> = test
        .iter()
        .map(|e| Prompt {
            id: e.id.clone(),
            prompt: prompt(&settings.template, &settings.shots, &e.text),
            answers: Vec::new(),
        })
        .collect();
    let (answers, sent, latency, spec, backend) = match model {
        DecoderModel::Local(d) => {
            let (a, n, l) = generate_locally(args, store, name, &d.source, &prompts, Some(d))?;
            (
                a.into_iter().map(Ok).collect::<Vec<_>>(),
                n,
                l,
                d.source.display().to_string(),
                format!(
                    "lmcompare decoder kernels ({} {}, greedy generation)",
                    d.config.family.key(),
                    d.format
                ),
            )
        }
        DecoderModel::Remote(spec) => {
            let (a, n, l) = generate_remotely(args, store, name, spec, &prompts)?;
            (
                a,
                n,
                l,
                format!("openai:{}#{}", spec.base_url, spec.model),
                format!(
                    "openai-compatible HTTP ({:?} generation)",
                    args.generate_api
                )
                .to_lowercase(),
            )
        }
    };
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    let mut invalid = Vec::new();
    for ((e, a), ms) in test.iter().zip(&answers).zip(&latency) {
        match a {
            Ok(text) => {
                let label = match label_of_answer(text, labels, &settings.verbalizers) {
                    Some(i) => labels[i].clone(),
                    None => {
                        invalid.push(json!({"id": e.id, "answer": text}));
                        INVALID.to_owned()
                    }
                };
                rows.push(StoredPrediction {
                    example_id: e.id.clone(),
                    label,
                    probabilities: Vec::new(),
                    tokens: 0,
                    batch_latency_ms: *ms,
                    batch_size: 1,
                });
            }
            Err(why) => failed.push((e.id.clone(), why.clone())),
        }
    }
    store
        .save_predictions(run_id, name, &rows)
        .map_err(engine)?;
    let seconds: f64 = latency.iter().sum::<f64>() / 1e3;
    let throughput = if seconds > 0.0 {
        json!(test.len() as f64 / seconds)
    } else {
        Value::Null
    };
    Ok(ModelRun {
        name: name.to_owned(),
        spec,
        efficiency: json!({
            "parameters": match model { DecoderModel::Local(d) => json!(d.size.parameters), _ => Value::Null },
            "size_bytes": match model { DecoderModel::Local(d) => json!(d.size.file_bytes), _ => Value::Null },
            "flops_per_example": Value::Null,
            "latency_ms_p50": percentile(&latency, 0.5), "latency_ms_p95": percentile(&latency, 0.95),
            "latency_unit": "per example (one greedy answer)", "generated_now": sent,
            "tokens_per_example": Value::Null,
            "throughput_per_s": throughput,
            "peak_rss_bytes": peak_rss_bytes(),
        }),
        predictions: rows,
        computed: sent,
        reused: test.len() - sent.min(test.len()),
        backend,
        invariance: None,
        failed,
        extra: json!({"generation": {
            "invalid_answers": invalid.len(),
            "rule": "an answer names a label when, normalised, it equals or starts with exactly one label's verbaliser or name; otherwise it is counted in the `invalid` column",
            "invalid_examples": invalid.iter().take(20).collect::<Vec<_>>(),
        }}),
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn run_decoder_model(
    args: &CompareArgs,
    store: &mut Store,
    run_id: i64,
    name: &str,
    model: &DecoderModel,
    labels: &[String],
    test: &[&Example],
    settings: &DecoderSettings,
) -> Result<ModelRun> {
    if args.decoder_scoring == DecoderScoring::Generate && settings.choices.is_none() {
        return classify_by_generation(args, store, run_id, name, model, labels, test, settings);
    }
    let existing = store.predictions(run_id, name).map_err(engine)?;
    let todo: Vec<&Example> = test
        .iter()
        .copied()
        .filter(|e| !existing.contains_key(&e.id))
        .collect();
    let mut tallies: Tallies = [(0, 0); 4];
    let mut failed: Vec<(String, String)> = Vec::new();
    let mut total_jobs = 0;
    let mut sent = 0;
    match model {
        DecoderModel::Remote(spec) => {
            // Every example's requests, so the task's tallies cover all of them; those of
            // examples already predicted are answered from the store's cache.
            let jobs: Vec<Job> = test
                .iter()
                .enumerate()
                .flat_map(|(i, e)| example_jobs(settings, i, e))
                .collect();
            total_jobs = jobs.len();
            let (results, latency, n) = score_remote(args, store, name, spec, test.len(), &jobs)?;
            sent = n;
            let rows = predictions_from(
                args,
                settings,
                labels,
                test,
                &jobs,
                &results,
                &latency,
                1,
                &mut tallies,
                &mut failed,
            );
            let new: Vec<StoredPrediction> = rows
                .into_iter()
                .filter(|r| !existing.contains_key(&r.example_id))
                .collect();
            store.save_predictions(run_id, name, &new).map_err(engine)?;
        }
        DecoderModel::Local(decoder) => {
            // Batches of examples, each committed to the store when done (predictions, and
            // every continuation's score in the answer cache), so an interrupted run resumes
            // after the last finished batch and still reports the task's tallies over all.
            let identity = decoder_identity(store, &decoder.source)?;
            let pb = bar(args.quiet, test.len(), name);
            pb.set_position(existing.len() as u64);
            for chunk in test.chunks(args.batch_size) {
                let jobs: Vec<Job> = chunk
                    .iter()
                    .enumerate()
                    .flat_map(|(i, e)| example_jobs(settings, i, e))
                    .collect();
                let keys: Vec<String> = jobs
                    .iter()
                    .map(|j| {
                        sha(&format!(
                            "local-score\n{identity}\n{}\n{}",
                            j.prompt, j.continuation
                        ))
                    })
                    .collect();
                let cached: Option<Vec<JobResult>> =
                    if chunk.iter().all(|e| existing.contains_key(&e.id)) {
                        keys.iter()
                            .map(|k| {
                                store
                                    .cached_response(k)
                                    .ok()
                                    .flatten()
                                    .and_then(|(text, _)| {
                                        serde_json::from_str::<(f64, usize, usize)>(&text)
                                            .ok()
                                            .map(Ok)
                                    })
                            })
                            .collect()
                    } else {
                        None
                    };
                let (results, ms) = match cached {
                    Some(r) => (r, 0.0),
                    None => {
                        total_jobs += jobs.len();
                        let t0 = Instant::now();
                        let r = score_local(decoder, &jobs)?;
                        let ms = t0.elapsed().as_secs_f64() * 1e3;
                        let rows: Vec<(String, String, f64)> = keys
                            .iter()
                            .zip(&r)
                            .filter_map(|(k, r)| {
                                r.as_ref()
                                    .ok()
                                    .map(|v| (k.clone(), json!(v).to_string(), 0.0))
                            })
                            .collect();
                        store.save_responses(&rows).map_err(engine)?;
                        (r, ms)
                    }
                };
                let rows = predictions_from(
                    args,
                    settings,
                    labels,
                    chunk,
                    &jobs,
                    &results,
                    &vec![ms; chunk.len()],
                    chunk.len(),
                    &mut tallies,
                    &mut failed,
                );
                let new: Vec<StoredPrediction> = rows
                    .into_iter()
                    .filter(|r| !existing.contains_key(&r.example_id))
                    .collect();
                store.save_predictions(run_id, name, &new).map_err(engine)?;
                pb.inc(new.len() as u64);
            }
            pb.finish_and_clear();
        }
    }
    let predictions: Vec<StoredPrediction> = store
        .predictions(run_id, name)
        .map_err(engine)?
        .into_values()
        .collect();
    let n = predictions.len().max(1) as f64;
    let tokens: f64 = predictions.iter().map(|p| p.tokens as f64).sum::<f64>();
    let (efficiency, spec_text, backend) = match model {
        DecoderModel::Remote(spec) => {
            let lat: Vec<f64> = predictions.iter().map(|p| p.batch_latency_ms).collect();
            let seconds: f64 = lat.iter().sum::<f64>() / 1e3;
            let (params, bytes) = client_for(args, spec)?.model_size();
            (
                json!({
                    "parameters": params, "size_bytes": bytes,
                    "parameter_source": if params.is_some() { "reported by the server (GET /models)" } else { "not reported by the server" },
                    "flops_per_example": Value::Null, "tokens_per_example": tokens / n,
                    "latency_ms_p50": percentile(&lat, 0.5), "latency_ms_p95": percentile(&lat, 0.95),
                    "latency_unit": "per example (all label requests, sequential sum)",
                    "throughput_per_s": if seconds > 0.0 { n / seconds } else { f64::NAN },
                    "tokens_per_s": if seconds > 0.0 { tokens * labels.len() as f64 / seconds } else { f64::NAN },
                    "peak_rss_bytes": peak_rss_bytes(), "requests": total_jobs, "requests_sent": sent,
                }),
                format!("openai:{}#{}", spec.base_url, spec.model),
                "openai-compatible HTTP (completions, echo + logprobs)".to_owned(),
            )
        }
        DecoderModel::Local(d) => {
            // The cost of every scored example, from its real token counts (the same on a
            // resumed run, which computes none of them now).
            let done: std::collections::HashSet<&str> =
                predictions.iter().map(|p| p.example_id.as_str()).collect();
            let jobs: Vec<Job> = test
                .iter()
                .copied()
                .filter(|e| done.contains(e.id.as_str()))
                .enumerate()
                .flat_map(|(i, e)| example_jobs(settings, i, e))
                .collect();
            let stats = d.cost(&local_requests(d, &jobs)?.0).map_err(engine)?;
            // Distinct batches: the examples of one batch share its latency.
            let mut batches: Vec<(u64, usize)> = predictions
                .iter()
                .map(|p| (p.batch_latency_ms.to_bits(), p.batch_size))
                .collect();
            batches.sort_unstable();
            batches.dedup();
            let per_example: Vec<f64> = batches
                .iter()
                .map(|b| f64::from_bits(b.0) / b.1.max(1) as f64)
                .collect();
            let seconds: f64 = batches.iter().map(|b| f64::from_bits(b.0)).sum::<f64>() / 1e3;
            (
                json!({
                    "parameters": d.size.parameters, "size_bytes": d.size.file_bytes,
                    "parameter_source": format!("{} header ({})", d.format, d.size.storage),
                    "embedding_parameters": d.size.embedding_parameters,
                    "flops_per_example": stats.flops / n,
                    "tokens_per_example": tokens / n,
                    "latency_ms_p50": percentile(&per_example, 0.5), "latency_ms_p95": percentile(&per_example, 0.95),
                    "latency_unit": "per example (batch time / batch size)",
                    "throughput_per_s": if seconds > 0.0 { n / seconds } else { f64::NAN },
                    "tokens_per_s": if seconds > 0.0 { tokens / seconds } else { f64::NAN },
                    "peak_rss_bytes": peak_rss_bytes(),
                    "truncated_contexts": stats.truncated,
                }),
                d.source.display().to_string(),
                format!(
                    "lmcompare decoder kernels ({} {}, f32; tokenizer {})",
                    d.config.family.key(),
                    d.format,
                    d.tokenizer_source
                ),
            )
        }
    };
    failed.sort();
    Ok(ModelRun {
        name: name.to_owned(),
        spec: spec_text,
        predictions,
        // Remote: requests sent vs answered from the cache; local: examples scored now vs
        // found in the store.
        computed: match model {
            DecoderModel::Remote(_) => sent,
            DecoderModel::Local(_) => todo.len(),
        },
        reused: match model {
            DecoderModel::Remote(_) => total_jobs - sent.min(total_jobs),
            DecoderModel::Local(_) => existing.len(),
        },
        efficiency,
        backend,
        invariance: None,
        failed,
        extra: if settings.choices.is_some() {
            // lm-evaluation-harness's definitions, over every answered question (a resumed
            // run takes the earlier ones' scores from the store).
            let rate = |t: (usize, usize)| {
                if t.1 == 0 {
                    Value::Null
                } else {
                    json!(t.0 as f64 / t.1 as f64)
                }
            };
            json!({"multiple_choice": {
                "questions": tallies[0].1, "acc": rate(tallies[0]), "acc_norm": rate(tallies[1]),
                "acc_bytes": rate(tallies[2]),
                "acc_circular": if settings.circular { rate(tallies[3]) } else { Value::Null },
            }})
        } else {
            Value::Null
        },
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LengthNorm {
    /// Sum of the continuation's token log-probabilities.
    None,
    /// Divided by its token count.
    Tokens,
    /// Divided by its length in characters (lm-evaluation-harness's acc_norm).
    Chars,
    /// Divided by its length in UTF-8 bytes (acc_bytes).
    Bytes,
}

/// Server answers to a list of (cache key, request body), in request order.
pub(crate) struct Fetched {
    pub answers: HashMap<usize, (Value, f64)>,
    pub failures: HashMap<usize, RequestFailure>,
    /// How many went to the server (the rest came from the store).
    pub sent: usize,
}

/// Answers to `bodies` posted to `endpoint`: from the store where cached (keyed by a hash
/// of URL and body); the rest sent `--concurrency` at a time (after a capability probe
/// where the endpoint needs one), cached as they come back. An unreachable server stops
/// everything with an error naming it; other failures are returned per request.
pub(crate) fn fetch_all(
    client: &RemoteClient,
    store: &mut Store,
    bodies: &[Value],
    args: &CompareArgs,
    name: &str,
    endpoint: Endpoint<'_>,
) -> Result<Fetched> {
    let url = format!("{}/{}", client.spec.base_url, endpoint.path);
    let keys: Vec<String> = bodies.iter().map(|b| sha(&format!("{url}\n{b}"))).collect();
    let requests: Vec<(&str, &Value)> = keys.iter().map(String::as_str).zip(bodies).collect();
    let requests = &requests[..];
    let (concurrency, quiet) = (args.concurrency, args.quiet);
    let mut answers: HashMap<usize, (Value, f64)> = HashMap::new();
    let mut pending = Vec::new();
    for (j, (key, _)) in requests.iter().enumerate() {
        match store.cached_response(key).map_err(engine)? {
            Some((text, ms)) => {
                answers.insert(j, (serde_json::from_str(&text)?, ms));
            }
            None => pending.push(j),
        }
    }
    if !pending.is_empty() && endpoint.needs_prompt_logprobs {
        client.probe_loglikelihood().map_err(engine)?;
    }
    let pb = bar(quiet, requests.len(), name);
    pb.set_position((requests.len() - pending.len()) as u64);
    let mut failures: HashMap<usize, RequestFailure> = HashMap::new();
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<(usize, std::result::Result<Value, RequestFailure>, f64)>();
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..concurrency.max(1).min(pending.len().max(1)) {
            let tx = tx.clone();
            let (next, pending) = (&next, &pending);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&j) = pending.get(i) else { break };
                let t0 = Instant::now();
                let r = client.post(endpoint.path, requests[j].1);
                if tx.send((j, r, t0.elapsed().as_secs_f64() * 1e3)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut batch = Vec::new();
        for (j, r, ms) in rx {
            match r {
                Ok(v) => {
                    batch.push((requests[j].0.to_owned(), v.to_string(), ms));
                    answers.insert(j, (v, ms));
                }
                Err(f) if f.unreachable => {
                    // Nothing more will get through; stop the workers and say where.
                    next.store(usize::MAX / 2, Ordering::Relaxed);
                    store.save_responses(&batch).map_err(engine)?;
                    return Err(anyhow::anyhow!(
                        "model {name}: the server at {} is unreachable ({}); the answers received so far are kept in the store",
                        client.spec.base_url,
                        f.last_error
                    ));
                }
                Err(f) => {
                    failures.insert(j, f);
                }
            }
            pb.inc(1);
            if batch.len() >= 64 {
                store.save_responses(&batch).map_err(engine)?;
                batch.clear();
            }
        }
        store.save_responses(&batch).map_err(engine)?;
        Ok(())
    })?;
    pb.finish_and_clear();
    Ok(Fetched {
        answers,
        failures,
        sent: pending.len(),
    })
}

/// A client with the command line's timeout, retries, rate cap and API key.
pub(crate) fn client_for(args: &CompareArgs, spec: &RemoteSpec) -> Result<RemoteClient> {
    let api_key = match &args.api_key_env {
        Some(var) => Some(std::env::var(var).map_err(|_| {
            BadInput(format!(
                "--api-key-env {var}: that environment variable is not set"
            ))
        })?),
        None => None,
    };
    Ok(RemoteClient::new(
        spec.clone(),
        ClientOptions {
            timeout: Duration::from_secs_f64(args.timeout),
            retries: args.retries,
            max_rps: args.max_rps,
            api_key,
            seed: args.seed,
            backoff: Duration::from_millis(args.backoff_ms),
        },
    ))
}

/// The file or folder of a local generative model named by `spec` (a `.gguf` file, or a
/// folder / `hf:` snapshot whose config.json names a decoder family), if it is one.
pub(crate) fn local_decoder_path(spec: &str) -> Option<std::path::PathBuf> {
    let path = std::path::Path::new(spec);
    if path.is_file() && Decoder::is_decoder(path) {
        return Some(path.to_owned());
    }
    let resolved = lmcompare_engine::spec::resolve(spec).ok()?;
    Decoder::is_decoder(&resolved.dir).then_some(resolved.dir)
}

/// What identifies a local decoder's content: the sha256 of its files (config, weights,
/// tokenizer, or the GGUF file), concatenated; cached scores and run keys are keyed by it.
pub(crate) fn decoder_identity(store: &Store, path: &std::path::Path) -> Result<String> {
    let mut identity = String::new();
    for f in decoder_identity_files(path) {
        identity.push_str(&store.file_sha256(&f).map_err(engine)?);
    }
    Ok(identity)
}

/// The files whose content identifies a local decoder.
fn decoder_identity_files(path: &std::path::Path) -> Vec<std::path::PathBuf> {
    if path.is_file() {
        return vec![path.to_owned()];
    }
    let mut v = vec![path.join("config.json")];
    if let Some(w) = lmcompare_engine::encoder_model::weights_file(path) {
        v.push(w);
    }
    let tok = path.join("tokenizer.json");
    if tok.exists() {
        v.push(tok);
    }
    v
}

/// A generative model as a task that only takes those (perplexity, generate) names it.
pub(crate) enum GenerativeSpec {
    Remote(RemoteSpec),
    Local(std::path::PathBuf),
}

impl GenerativeSpec {
    /// How the report names it.
    pub fn describe(&self) -> String {
        match self {
            GenerativeSpec::Remote(s) => format!("openai:{}#{}", s.base_url, s.model),
            GenerativeSpec::Local(p) => p.display().to_string(),
        }
    }
}

/// Every `--model` as a generative model, or a usage error naming the one that is not.
pub(crate) fn generative_models(
    models: &[(String, String)],
    task: &str,
) -> Result<Vec<(String, GenerativeSpec)>> {
    models
        .iter()
        .map(|(name, spec)| {
            let m = match (RemoteSpec::parse(spec), local_decoder_path(spec)) {
                (Some(r), _) => GenerativeSpec::Remote(r.map_err(|e| BadInput(format!("model {name}: {e}")))?),
                (None, Some(p)) => GenerativeSpec::Local(p),
                (None, None) => {
                    return Err(BadInput(format!(
                        "model {name}: {task} scores generative models (a .gguf file, a causal-LM folder or openai:URL#MODEL); {spec} is not one"
                    ))
                    .into())
                }
            };
            Ok((name.clone(), m))
        })
        .collect()
}

/// Starts (or resumes) the stored run of a task scored over units (perplexity, generate):
/// its key is the hash of `settings`. Returns the run id, whether it resumed, and the key.
pub(crate) fn begin_task_run(
    store: &mut Store,
    args: &CompareArgs,
    task: &str,
    settings: &Value,
    digest: &str,
    rows: usize,
    models: &[(String, String)],
) -> Result<(i64, bool, String)> {
    let key = sha(&settings.to_string());
    let names: Vec<&str> = models.iter().map(|m| m.0.as_str()).collect();
    let (run_id, resumed) = store
        .begin_run(&lmcompare_engine::store::NewRun {
            key: &key,
            task,
            dataset_sha: digest,
            dataset_path: &args.data.display().to_string(),
            rows,
            models: &names.join(","),
            settings: &settings.to_string(),
        })
        .map_err(engine)?;
    Ok((run_id, resumed, key))
}
