//! Generative models scored by log-likelihood: each dataset label's verbaliser after the
//! prompt (the softmax over labels gives the probabilities, so calibration metrics apply),
//! or each choice of a multiple-choice question (lm-evaluation-harness's acc, acc_norm,
//! acc_bytes, and circular accuracy over rotations of the listed choices).
//!
//! Examples go to the model in batches (local) or all at once (servers bound their own
//! concurrency); every batch's predictions are committed as it finishes and every answer is
//! cached, so an interrupted run resumes after the last finished batch and still reports
//! the tallies over every example. An example whose requests fail past their retries is
//! reported and retried on the next run.

use std::collections::HashMap;

use lmcompare_engine::data::Example;
use lmcompare_engine::encoder_model::softmax64;
use lmcompare_engine::store::StoredPrediction;
use lmcompare_metrics::choice::{normalized, ChoiceScore, ChoiceTallies, Normalization};
use serde_json::{json, Value};

use super::prompts::{choice_prompt, letter, prompt, PromptSettings};
use crate::cache::CachedModel;
use crate::config::LengthNorm;
use crate::models::{Answer, GenerativeModel, LoglikRequest, LoglikScore, RequestKind};
use crate::runner::{
    argmax, bar, label_index, loglik_efficiency, ModelRun, PeakMemory, RunContext,
};
use crate::Result;

/// One (prompt, continuation) an example needs scored.
#[derive(Debug, Clone)]
pub struct Job {
    pub example: usize,
    /// The label (choice) this continuation stands for, in the original order.
    pub label: usize,
    /// Which rotation of the choices (0 unless circular).
    pub rotation: usize,
    pub request: LoglikRequest,
}

impl Job {
    /// The continuation's length in characters and UTF-8 bytes (acc_norm, acc_bytes).
    fn chars_bytes(&self) -> (usize, usize) {
        let t = self.request.continuation.trim_start();
        (t.chars().count(), t.len())
    }
}

/// Every (prompt, continuation) an example needs: one per label, or per choice and rotation.
pub fn example_jobs(settings: &PromptSettings, ei: usize, e: &Example) -> Vec<Job> {
    let job = |label, rotation, prompt: &String, continuation| Job {
        example: ei,
        label,
        rotation,
        request: LoglikRequest {
            context: prompt.clone(),
            continuation,
        },
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

/// A choice's scores and the tokens of its whole request.
type Scored = (ChoiceScore, usize);

fn normalization(n: LengthNorm) -> Normalization {
    match n {
        LengthNorm::None => Normalization::None,
        LengthNorm::Tokens => Normalization::Tokens,
        LengthNorm::Chars => Normalization::Chars,
        LengthNorm::Bytes => Normalization::Bytes,
    }
}

/// Predictions of one batch of examples from their jobs' answers; `latency[i]` is example
/// i's time. Examples with a failed request are listed in `failed`, not predicted.
#[allow(clippy::too_many_arguments)]
fn predictions_from(
    norm: LengthNorm,
    settings: &PromptSettings,
    labels: &[String],
    examples: &[&Example],
    jobs: &[Job],
    answers: &[Answer<LoglikScore>],
    latency: &[f64],
    tallies: &mut ChoiceTallies,
    failed: &mut Vec<(String, String)>,
) -> Result<Vec<StoredPrediction>> {
    let k = labels.len();
    // Per example: its rotations' scores by original choice, and the tokens of its
    // longest request.
    let mut rotations: Vec<usize> = vec![1; examples.len()];
    for j in jobs {
        rotations[j.example] = rotations[j.example].max(j.rotation + 1);
    }
    let mut scored: Vec<Vec<Vec<Option<Scored>>>> =
        rotations.iter().map(|&r| vec![vec![None; k]; r]).collect();
    let mut bad: HashMap<usize, String> = HashMap::new();
    for (job, a) in jobs.iter().zip(answers) {
        match a {
            Ok(s) => {
                let (chars, bytes) = job.chars_bytes();
                let score = ChoiceScore {
                    loglik: s.sum,
                    tokens: s.tokens,
                    chars,
                    bytes,
                };
                scored[job.example][job.rotation][job.label] = Some((score, s.total_tokens));
            }
            Err(why) => {
                bad.insert(job.example, why.clone());
            }
        }
    }
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
        let Some(per_rotation) = scored[ei]
            .iter()
            .map(|r| r[..n_choices].iter().copied().collect::<Option<Vec<_>>>())
            .collect::<Option<Vec<_>>>()
        else {
            failed.push((e.id.clone(), "missing answers".into()));
            continue;
        };
        let choice_scores: Vec<Vec<ChoiceScore>> = per_rotation
            .iter()
            .map(|r| r.iter().map(|s| s.0).collect())
            .collect();
        let mut logits = normalized(&choice_scores[0], normalization(norm));
        logits.resize(k, f32::NEG_INFINITY);
        let p = softmax64(&logits);
        let gold = label_index(labels, &e.label, &format!("example {}", e.id))?;
        tallies.add(&choice_scores, gold);
        rows.push(StoredPrediction {
            example_id: e.id.clone(),
            label: labels[argmax(&p)].clone(),
            probabilities: p,
            tokens: per_rotation[0].iter().map(|s| s.1).max().unwrap_or(0),
            batch_latency_ms: latency[ei],
            batch_size: 1,
        });
    }
    Ok(rows)
}

/// Each newly predicted example's log, as lm-evaluation-harness's `--log_samples` keeps it:
/// the prompts as sent, every continuation's summed log-likelihood and token counts, and the
/// contexts cut to fit the model's positions.
fn sample_logs(
    model: &dyn GenerativeModel,
    labels: &[String],
    (offset, examples): (usize, &[&Example]),
    jobs: &[Job],
    answers: &[Answer<LoglikScore>],
    new: &[StoredPrediction],
) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (ei, e) in examples.iter().enumerate() {
        if !new.iter().any(|p| p.example_id == e.id) {
            continue;
        }
        let mine: Vec<(&Job, &LoglikScore)> = jobs
            .iter()
            .zip(answers)
            .filter(|(j, _)| j.example == ei)
            .filter_map(|(j, a)| a.as_ref().ok().map(|s| (j, s)))
            .collect();
        let mut prompts: Vec<&str> = Vec::new();
        let continuations: Vec<Value> = mine
            .iter()
            .map(|(j, s)| {
                let at = prompts
                    .iter()
                    .position(|p| *p == j.request.context)
                    .unwrap_or_else(|| {
                        prompts.push(&j.request.context);
                        prompts.len() - 1
                    });
                json!({
                    "label": labels.get(j.label), "rotation": j.rotation, "prompt": at,
                    "continuation": j.request.continuation, "loglik": s.sum,
                    "tokens": s.tokens, "total_tokens": s.total_tokens,
                })
            })
            .collect();
        let requests: Vec<LoglikRequest> = mine.iter().map(|(j, _)| j.request.clone()).collect();
        let truncated = model.cost(&requests)?.map(|c| c.truncated);
        out.push((
            e.id.clone(),
            json!({
                "index": offset + ei, "input": e.text, "gold": e.label, "prompts": prompts,
                "continuations": continuations, "truncated_contexts": truncated,
            })
            .to_string(),
        ));
    }
    Ok(out)
}

/// Scores `test` with `model` by log-likelihood and stores the predictions of the run.
pub fn run_loglik(
    run: &mut RunContext<'_>,
    name: &str,
    model: &dyn GenerativeModel,
    labels: &[String],
    test: &[&Example],
    settings: &PromptSettings,
    norm: LengthNorm,
) -> Result<ModelRun> {
    let peak = PeakMemory::start();
    let existing = run.store.predictions(run.run_id, name)?;
    let per_call = model.examples_per_call(run.batch_size);
    let cached = CachedModel::new(model);
    let total: usize = test
        .iter()
        .enumerate()
        .map(|(i, e)| example_jobs(settings, i, e).len())
        .sum();
    let pb = bar(run.quiet, total, name);
    let mut tallies = ChoiceTallies::default();
    let mut failed: Vec<(String, String)> = Vec::new();
    let mut sent = 0;
    for (ci, chunk) in test.chunks(per_call).enumerate() {
        let jobs: Vec<Job> = chunk
            .iter()
            .enumerate()
            .flat_map(|(i, e)| example_jobs(settings, i, e))
            .collect();
        let requests: Vec<LoglikRequest> = jobs.iter().map(|j| j.request.clone()).collect();
        let answers = cached
            .loglikelihood(run.store, &requests, &pb)
            .map_err(|e| {
                e.name_input(|i| {
                    let job = &jobs[i];
                    format!(
                        "example `{}` (continuation {:?})",
                        chunk[job.example].id, job.request.continuation
                    )
                })
            })?;
        sent += answers.computed;
        let mut latency = vec![0.0; chunk.len()];
        for (j, ms) in jobs.iter().zip(&answers.ms) {
            latency[j.example] += ms;
        }
        let rows = predictions_from(
            norm,
            settings,
            labels,
            chunk,
            &jobs,
            &answers.answers,
            &latency,
            &mut tallies,
            &mut failed,
        )?;
        let new: Vec<StoredPrediction> = rows
            .into_iter()
            .filter(|r| !existing.contains_key(&r.example_id))
            .collect();
        let logs = sample_logs(
            model,
            labels,
            (ci * per_call, chunk),
            &jobs,
            &answers.answers,
            &new,
        )?;
        run.store.save_samples(run.run_id, name, &logs)?;
        run.store.save_predictions(run.run_id, name, &new)?;
    }
    pb.finish_and_clear();
    let predictions: Vec<StoredPrediction> = run
        .store
        .predictions(run.run_id, name)?
        .into_values()
        .collect();
    // The cost of every scored example, from its real token counts (the same on a resumed
    // run, which computes none of them now).
    let done: std::collections::HashSet<&str> =
        predictions.iter().map(|p| p.example_id.as_str()).collect();
    let done_requests: Vec<LoglikRequest> = test
        .iter()
        .copied()
        .filter(|e| done.contains(e.id.as_str()))
        .enumerate()
        .flat_map(|(i, e)| example_jobs(settings, i, e))
        .map(|j| j.request)
        .collect();
    let cost = model.cost(&done_requests)?;
    let efficiency = loglik_efficiency(model, &predictions, cost, (total, sent), &peak)?;
    failed.sort();
    let computed = test
        .iter()
        .filter(|e| !existing.contains_key(&e.id) && done.contains(e.id.as_str()))
        .count();
    Ok(ModelRun {
        name: name.to_owned(),
        spec: model.describe(),
        predictions,
        computed,
        reused: existing.len(),
        efficiency,
        backend: model.backend(RequestKind::Loglikelihood),
        invariance: None,
        failed,
        warnings: cost
            .map(|c| c.truncated)
            .filter(|n| *n > 0)
            .map(|n| format!(
                "{n} prompt context(s) were longer than the model's positions (or --max-length) and lost tokens from the left, each continuation keeping as much context as fits, as lm-evaluation-harness does"
            ))
            .into_iter()
            .collect(),
        extra: if settings.choices.is_some() {
            // lm-evaluation-harness's definitions, over every answered question (a resumed
            // run takes the earlier ones' scores from the store).
            let rate = |t| ChoiceTallies::rate(t).map_or(Value::Null, |r| json!(r));
            json!({"multiple_choice": {
                "questions": tallies.acc.1, "acc": rate(tallies.acc), "acc_norm": rate(tallies.acc_norm),
                "acc_bytes": rate(tallies.acc_bytes),
                "acc_circular": if settings.circular { rate(tallies.circular) } else { Value::Null },
                "picked_position": if settings.circular { json!(tallies.picked_position) } else { Value::Null },
            }})
        } else {
            Value::Null
        },
    })
}

#[cfg(test)]
mod tests {
    //! The runner on an in-memory fake model: ordering, caching, resume after a crash,
    //! exclusion of failed examples and retry, and circular multiple choice.

    use std::collections::HashMap;

    use lmcompare_engine::data::{Example, Split};
    use lmcompare_engine::store::Store;

    use super::*;
    use crate::compare::scored_examples;
    use crate::models::fake::FakeModel;

    fn examples(n: usize) -> Vec<Example> {
        (0..n)
            .map(|i| {
                let label = if i % 3 == 0 { "bad" } else { "good" };
                Example {
                    id: format!("e{i}"),
                    text: format!("review {i} [{label}]"),
                    label: label.into(),
                    split: Split::Test,
                }
            })
            .collect()
    }

    fn settings() -> PromptSettings {
        PromptSettings {
            template: "{text}\nSentiment:".into(),
            verbalizers: vec![" bad".into(), " good".into()],
            shots: Vec::new(),
            choices: None,
            circular: false,
        }
    }

    fn labels() -> Vec<String> {
        vec!["bad".into(), "good".into()]
    }

    fn run(
        store: &mut Store,
        run_id: i64,
        model: &FakeModel,
        test: &[&Example],
    ) -> Result<ModelRun> {
        let mut ctx = RunContext {
            store,
            run_id,
            batch_size: 4,
            quiet: true,
        };
        run_loglik(
            &mut ctx,
            "fake",
            model,
            &labels(),
            test,
            &settings(),
            LengthNorm::None,
        )
    }

    fn new_run(store: &Store, key: &str) -> i64 {
        store
            .begin_run(&lmcompare_engine::store::NewRun {
                key,
                task: "classify",
                dataset_sha: "d",
                dataset_path: "d.jsonl",
                rows: 10,
                models: "fake",
                settings: "{}",
            })
            .unwrap()
            .0
    }

    #[test]
    fn predictions_follow_the_scores_in_any_batching_and_reruns_ask_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let ex = examples(10);
        let test: Vec<&Example> = ex.iter().collect();
        let run_id = new_run(&store, "k1");
        let model = FakeModel::new("m", 0);
        let r = run(&mut store, run_id, &model, &test).unwrap();
        // 10 examples × 2 labels, in batches of 4 examples: 3 calls, 20 requests, in order.
        assert_eq!((model.calls.get(), model.requests.get()), (3, 20));
        let seen = model.seen.borrow();
        assert!(seen[0].starts_with("review 0 ") && seen[19].starts_with("review 9 "));
        assert_eq!((r.computed, r.reused), (10, 0));
        let by_id: HashMap<&str, &str> = r
            .predictions
            .iter()
            .map(|p| (p.example_id.as_str(), p.label.as_str()))
            .collect();
        for e in &ex {
            assert_eq!(
                by_id[e.id.as_str()],
                e.label,
                "the fake model reads the cue"
            );
        }
        // All at once (a server's batching) gives the same predictions.
        let other = FakeModel::new("m2", usize::MAX);
        let run2 = new_run(&store, "k2");
        let r2 = run(&mut store, run2, &other, &test).unwrap();
        assert_eq!(other.calls.get(), 1);
        let mut a: Vec<_> = r
            .predictions
            .iter()
            .map(|p| (&p.example_id, &p.label, p.probabilities.clone()))
            .collect();
        let mut b: Vec<_> = r2
            .predictions
            .iter()
            .map(|p| (&p.example_id, &p.label, p.probabilities.clone()))
            .collect();
        a.sort_by(|x, y| x.0.cmp(y.0));
        b.sort_by(|x, y| x.0.cmp(y.0));
        assert_eq!(a, b);
        // The same run again: everything from the store, no request.
        let again = FakeModel::new("m", 0);
        let r3 = run(&mut store, run_id, &again, &test).unwrap();
        assert_eq!(again.requests.get(), 0);
        assert_eq!((r3.computed, r3.reused), (0, 10));
        assert_eq!(r3.predictions.len(), 10);
        // A new run of the same model on the same data reuses the answers too.
        let run4 = new_run(&store, "k4");
        let fresh = FakeModel::new("m", 0);
        let r4 = run(&mut store, run4, &fresh, &test).unwrap();
        assert_eq!(fresh.requests.get(), 0);
        assert_eq!(r4.predictions.len(), 10);
        assert_eq!(
            r4.efficiency.requests_sent, None,
            "local-style model: no request counts"
        );
    }

    #[test]
    fn a_crash_keeps_what_was_answered_and_the_resumed_run_computes_only_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let ex = examples(10);
        let test: Vec<&Example> = ex.iter().collect();
        let run_id = new_run(&store, "k");
        let model = FakeModel::new("m", 0);
        // Crash in the second batch, after 11 answers: batch one (8 requests) is
        // predicted, 3 answers of batch two are cached.
        model.crash_after.set(Some(11));
        assert!(run(&mut store, run_id, &model, &test).is_err());
        assert_eq!(store.predictions(run_id, "fake").unwrap().len(), 4);
        let resumed = FakeModel::new("m", 0);
        let r = run(&mut store, run_id, &resumed, &test).unwrap();
        assert_eq!(
            resumed.requests.get(),
            20 - 11,
            "only the unanswered requests"
        );
        assert_eq!((r.computed, r.reused), (6, 4));
        assert_eq!(r.predictions.len(), 10, "no duplicates");
    }

    #[test]
    fn a_failed_example_is_excluded_for_every_model_and_retried_next_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let ex = examples(6);
        let test: Vec<&Example> = ex.iter().collect();
        let run_id = new_run(&store, "k");
        let flaky = FakeModel::new("flaky", 0);
        *flaky.fail_context.borrow_mut() = Some("review 4 ".into());
        let a = run(&mut store, run_id, &flaky, &test).unwrap();
        assert_eq!(
            a.failed,
            vec![("e4".to_owned(), "HTTP 500 past 5 retries".to_owned())]
        );
        assert_eq!(a.predictions.len(), 5);
        let scored = scored_examples(&[a], &test).unwrap();
        assert_eq!(scored.examples.len(), 5);
        assert_eq!(scored.excluded["e4"], vec!["fake: HTTP 500 past 5 retries"]);
        // The failure was not cached: the rerun asks again for e4 only, and gets it.
        let healed = FakeModel::new("flaky", 0);
        let b = run(&mut store, run_id, &healed, &test).unwrap();
        assert_eq!(healed.requests.get(), 2);
        assert!(b.failed.is_empty());
        assert_eq!(b.predictions.len(), 6);
    }

    #[test]
    fn circular_multiple_choice_scores_every_question_whatever_its_neighbours_choices() {
        // Questions with 2, 4 and 2 choices in one batch: each is rotated by its own count.
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let specs = [
            ("q1", vec!["yes", "no"], 0),
            ("q2", vec!["red", "green", "blue", "pink"], 2),
            ("q3", vec!["up", "down"], 1),
        ];
        let mut choices = HashMap::new();
        let ex: Vec<Example> = specs
            .iter()
            .map(|(id, c, answer)| {
                choices.insert(
                    id.to_string(),
                    c.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                );
                Example {
                    id: id.to_string(),
                    text: format!("pick [{}]", c[*answer]),
                    label: letter(*answer),
                    split: Split::Test,
                }
            })
            .collect();
        let test: Vec<&Example> = ex.iter().collect();
        let letters: Vec<String> = (0..4).map(letter).collect();
        for batch_size in [1, 8] {
            let run_id = new_run(&store, &format!("mc{batch_size}"));
            let s = PromptSettings {
                template: "Question: {question}\nAnswer:".into(),
                verbalizers: Vec::new(),
                shots: Vec::new(),
                choices: Some(choices.clone()),
                circular: true,
            };
            let model = FakeModel::new(&format!("mc{batch_size}"), 0);
            let mut ctx = RunContext {
                store: &mut store,
                run_id,
                batch_size,
                quiet: true,
            };
            let r = run_loglik(
                &mut ctx,
                "fake",
                &model,
                &letters,
                &test,
                &s,
                LengthNorm::None,
            )
            .unwrap();
            assert!(r.failed.is_empty(), "batch {batch_size}: {:?}", r.failed);
            let mc = &r.extra["multiple_choice"];
            assert_eq!(mc["questions"], 3, "batch {batch_size}");
            // The fake model scores the bracketed choice highest in every rotation.
            assert_eq!(mc["acc"], 1.0);
            assert_eq!(mc["acc_circular"], 1.0);
            // 2 + 4 + 2 choices, each rotated by its own count: 4 + 16 + 4 requests.
            assert_eq!(model.requests.get(), 24);
        }
    }
}
