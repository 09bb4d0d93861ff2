//! `compare --task generate`: generative models answer the prompts of a JSONL file
//! (`{"id", "prompt", "answer"}`, the answer a string or a list of acceptable strings),
//! greedily, up to `--max-tokens`, cut at the first `--stop` sequence; answers are scored by
//! exact match and token-level F1 after SQuAD's normalisation (lower case, no punctuation,
//! no articles, single spaces), the best over acceptable answers. Means get bootstrap
//! intervals over prompts; model pairs get paired bootstrap tests with Holm's correction.
//! Every answer is kept in the store, so a rerun or a resumed run generates nothing twice.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use lmcompare_engine::decoder::Decoder;
use lmcompare_engine::remote::{RemoteClient, RemoteSpec};
use lmcompare_engine::store::{timestamp, Store};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde_json::{json, Value};

use crate::compare_cmd::{bar, parse_models, sha, CompareArgs};
use crate::decoder_task::{
    begin_task_run, client_for, decoder_identity, fetch_all, generative_models, Fetched,
    GenerativeSpec,
};
use crate::encoder_cmds::engine;
use crate::paired_means::{bootstrap_pairs, percentile_ci, Resampled, Wording};
use crate::BadInput;

pub(crate) struct Prompt {
    pub id: String,
    pub prompt: String,
    pub answers: Vec<String>,
}

/// The prompts of a JSONL file, each line checked (file and line in every message).
pub(crate) fn load_prompts(path: &Path) -> Result<(Vec<Prompt>, String)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BadInput(format!("{}: cannot read: {e}", path.display())))?;
    let mut out: Vec<Prompt> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let v: Value = serde_json::from_str(line)
            .map_err(|e| BadInput(format!("{at}: not a JSON object: {e}")))?;
        let field = |k: &str| -> Result<String> {
            match &v[k] {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) if k == "id" => Ok(n.to_string()),
                Value::Null => Err(BadInput(format!("{at}: missing field {k:?}")).into()),
                _ => Err(BadInput(format!("{at}: field {k:?} must be a string")).into()),
            }
        };
        let answers = match &v["answer"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_string) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
            Value::Null => return Err(BadInput(format!("{at}: missing field \"answer\"")).into()),
            _ => {
                return Err(BadInput(format!(
                    "{at}: \"answer\" must be a string or a non-empty list of strings"
                ))
                .into())
            }
        };
        let id = field("id")?;
        if out.iter().any(|p| p.id == id) {
            return Err(BadInput(format!("{at}: duplicate id {id:?}")).into());
        }
        out.push(Prompt {
            id,
            prompt: field("prompt")?,
            answers,
        });
    }
    if out.is_empty() {
        return Err(BadInput(format!("{}: no prompts", path.display())).into());
    }
    Ok((out, sha(&text)))
}

/// SQuAD's answer normalisation.
pub(crate) fn normalize(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punct: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    no_punct
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// SQuAD's token F1 between a prediction and one reference.
pub(crate) fn token_f1(pred: &str, gold: &str) -> f64 {
    let p: Vec<String> = normalize(pred)
        .split(' ')
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect();
    let g: Vec<String> = normalize(gold)
        .split(' ')
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect();
    if p.is_empty() || g.is_empty() {
        return f64::from(u8::from(p == g));
    }
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for w in &g {
        *counts.entry(w).or_default() += 1;
    }
    let mut common = 0i64;
    for w in &p {
        if let Some(c) = counts.get_mut(w.as_str()) {
            if *c > 0 {
                *c -= 1;
                common += 1;
            }
        }
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / p.len() as f64;
    let recall = common as f64 / g.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// `text` cut before the first stop sequence.
pub(crate) fn cut_at_stop(text: &str, stops: &[String]) -> String {
    let end = stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
        .unwrap_or(text.len());
    text[..end].to_owned()
}

/// Greedy answers of a local decoder, cached in the store by model content, settings and
/// prompt. Returns the answers and how many were generated now.
pub(crate) fn generate_locally(
    args: &CompareArgs,
    store: &mut Store,
    name: &str,
    path: &Path,
    prompts: &[Prompt],
    loaded: Option<&Decoder>,
) -> Result<(Vec<String>, usize, Vec<f64>)> {
    let identity = decoder_identity(store, path)?;
    let settings = json!({"max_tokens": args.max_tokens, "stop": &args.stop}).to_string();
    let keys: Vec<String> = prompts
        .iter()
        .map(|p| {
            sha(&format!(
                "local-generate\n{identity}\n{settings}\n{}",
                p.prompt
            ))
        })
        .collect();
    let mut answers: Vec<Option<String>> = vec![None; prompts.len()];
    let mut latency = vec![0.0; prompts.len()];
    let mut todo = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        match store.cached_response(k).map_err(engine)? {
            Some((text, ms)) => {
                answers[i] = Some(text);
                latency[i] = ms;
            }
            None => todo.push(i),
        }
    }
    let mut truncated = 0;
    if !todo.is_empty() {
        let owned;
        let dec = match loaded {
            Some(d) => d,
            None => {
                owned = Decoder::load(path).map_err(|e| BadInput(format!("model {name}: {e}")))?;
                &owned
            }
        };
        let pb = bar(args.quiet, prompts.len(), name);
        pb.set_position((prompts.len() - todo.len()) as u64);
        for chunk in todo.chunks(args.batch_size) {
            let mut inputs = Vec::new();
            for &i in chunk {
                let mut ids = dec.start_tokens();
                ids.extend(dec.encode(&prompts[i].prompt).map_err(engine)?);
                inputs.push(ids);
            }
            let stops = &args.stop;
            // Stop a sequence as soon as its decoded text holds a stop sequence.
            let stop = |_: usize, ids: &[u32]| -> bool {
                dec.decode(ids)
                    .map(|t| {
                        stops
                            .iter()
                            .any(|s| !s.is_empty() && t.contains(s.as_str()))
                    })
                    .unwrap_or(false)
            };
            let t0 = std::time::Instant::now();
            let (out, cut) = dec
                .generate(&inputs, args.max_tokens, &stop)
                .map_err(|e| BadInput(format!("model {name}: {e}")))?;
            truncated += cut;
            let ms = t0.elapsed().as_secs_f64() * 1e3 / chunk.len() as f64;
            let mut rows = Vec::new();
            for (&i, ids) in chunk.iter().zip(out) {
                let text = cut_at_stop(&dec.decode(&ids).map_err(engine)?, stops);
                rows.push((keys[i].clone(), text.clone(), ms));
                answers[i] = Some(text);
                latency[i] = ms;
            }
            store.save_responses(&rows).map_err(engine)?;
            pb.inc(chunk.len() as u64);
        }
        pb.finish_and_clear();
    }
    if truncated > 0 && !args.quiet {
        eprintln!(
            "note: model {name}: {truncated} prompt(s) were longer than the model's context allows with --max-tokens {} and lost tokens from the left",
            args.max_tokens
        );
    }
    Ok((
        answers.into_iter().map(Option::unwrap_or_default).collect(),
        todo.len(),
        latency,
    ))
}

/// Greedy answers from a server: chat completions (or plain completions with
/// `--generate-api completions`), temperature 0, cached by request.
#[allow(clippy::type_complexity)]
pub(crate) fn generate_remotely(
    args: &CompareArgs,
    store: &mut Store,
    name: &str,
    spec: &RemoteSpec,
    prompts: &[Prompt],
) -> Result<(Vec<std::result::Result<String, String>>, usize, Vec<f64>)> {
    let client: RemoteClient = client_for(args, spec)?;
    let chat = args.generate_api == GenerateApi::Chat;
    let path = if chat {
        "chat/completions"
    } else {
        "completions"
    };
    let bodies: Vec<Value> = prompts
        .iter()
        .map(|p| {
            let mut b =
                json!({"model": spec.model, "max_tokens": args.max_tokens, "temperature": 0.0});
            if chat {
                b["messages"] = json!([{"role": "user", "content": p.prompt}]);
            } else {
                b["prompt"] = json!(p.prompt);
            }
            if !args.stop.is_empty() {
                b["stop"] = json!(args.stop);
            }
            b
        })
        .collect();
    let Fetched {
        answers,
        failures,
        sent,
    } = fetch_all(
        &client,
        store,
        &bodies,
        args,
        name,
        crate::decoder_task::Endpoint {
            path,
            needs_prompt_logprobs: false,
        },
    )?;
    let mut latency = vec![0.0; prompts.len()];
    let out = (0..prompts.len())
        .map(|i| match answers.get(&i) {
            Some((v, ms)) => {
                latency[i] = *ms;
                let c = &v["choices"][0];
                let text = if chat {
                    c["message"]["content"].as_str()
                } else {
                    c["text"].as_str()
                };
                text.map(|t| cut_at_stop(t, &args.stop))
                    .ok_or_else(|| "the answer has no text".to_owned())
            }
            None => Err(failures
                .get(&i)
                .map_or("no answer".to_owned(), |f| f.to_string())),
        })
        .collect();
    Ok((out, sent, latency))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GenerateApi {
    /// POST {base}/chat/completions with the prompt as one user message.
    Chat,
    /// POST {base}/completions with the prompt as is.
    Completions,
}

pub(crate) fn generate(args: &CompareArgs) -> Result<Value> {
    let started = std::time::Instant::now();
    let models = parse_models(&args.models)?;
    let gen_models = generative_models(&models, "generate")?;
    if args.max_tokens == 0 {
        return Err(BadInput("--max-tokens must be at least 1".into()).into());
    }
    let (mut prompts, digest) = load_prompts(&args.data)?;
    if let Some(n) = args.limit {
        prompts.truncate(n);
    }
    let mut store = Store::open(&args.db).map_err(engine)?;
    let settings = json!({"task": "generate", "models": &args.models, "data": digest, "limit": args.limit,
        "max_tokens": args.max_tokens, "stop": &args.stop, "api": format!("{:?}", args.generate_api)});
    let (run_id, resumed, key) = begin_task_run(
        &mut store,
        args,
        "generate",
        &settings,
        &digest,
        prompts.len(),
        &models,
    )?;
    let mut answers: Vec<Vec<std::result::Result<String, String>>> = Vec::new();
    let mut effs = Vec::new();
    for (name, m) in &gen_models {
        let (a, sent, latency) = match m {
            GenerativeSpec::Local(p) => {
                let (a, n, l) = generate_locally(args, &mut store, name, p, &prompts, None)?;
                (a.into_iter().map(Ok).collect(), n, l)
            }
            GenerativeSpec::Remote(spec) => {
                generate_remotely(args, &mut store, name, spec, &prompts)?
            }
        };
        answers.push(a);
        effs.push(json!({"generated_now": sent, "prompts": prompts.len(),
            "latency_ms_p50": lmcompare_engine::profile::percentile(&latency, 0.5),
            "latency_ms_p95": lmcompare_engine::profile::percentile(&latency, 0.95),
            "latency_unit": "per prompt"}));
    }
    // A prompt some model has no answer for is left out for all, listed, retried on rerun.
    let failed: Vec<(String, Vec<String>)> = prompts
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let why: Vec<String> = gen_models
                .iter()
                .zip(&answers)
                .filter_map(|((n, _), a)| a[i].as_ref().err().map(|e| format!("{n}: {e}")))
                .collect();
            (!why.is_empty()).then(|| (p.id.clone(), why))
        })
        .collect();
    let kept: Vec<usize> = (0..prompts.len())
        .filter(|&i| answers.iter().all(|a| a[i].is_ok()))
        .collect();
    if kept.is_empty() {
        return Err(anyhow::anyhow!(
            "every prompt failed for some model; nothing to score (rerun to retry)"
        ));
    }
    // Per model, per kept prompt: (exact match, F1), best over acceptable answers.
    let scores: Vec<Vec<(f64, f64)>> = answers
        .iter()
        .map(|a| {
            kept.iter()
                .map(|&i| {
                    let pred = a[i].as_deref().unwrap_or("");
                    prompts[i].answers.iter().fold((0.0f64, 0.0f64), |acc, g| {
                        let em = f64::from(u8::from(normalize(pred) == normalize(g)));
                        (acc.0.max(em), acc.1.max(token_f1(pred, g)))
                    })
                })
                .collect()
        })
        .collect();
    let n = kept.len();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(args.seed);
    let resamples: Vec<Vec<usize>> = (0..args.stats.bootstrap)
        .map(|_| (0..n).map(|_| rng.gen_range(0..n)).collect())
        .collect();
    let mean = |m: usize, idx: &mut dyn Iterator<Item = usize>| -> (f64, f64) {
        let (mut em, mut f1, mut k) = (0.0, 0.0, 0.0);
        for j in idx {
            em += scores[m][j].0;
            f1 += scores[m][j].1;
            k += 1.0;
        }
        (em / k, f1 / k)
    };
    let boot: Vec<Vec<(f64, f64)>> = (0..gen_models.len())
        .map(|m| {
            resamples
                .iter()
                .map(|r| mean(m, &mut r.iter().copied()))
                .collect()
        })
        .collect();
    let mut out_models = Vec::new();
    for (m, (name, model)) in gen_models.iter().enumerate() {
        let (em, f1) = mean(m, &mut (0..n));
        let mut em_s: Vec<f64> = boot[m].iter().map(|x| x.0).collect();
        let mut f1_s: Vec<f64> = boot[m].iter().map(|x| x.1).collect();
        out_models.push(json!({
            "name": name,
            "spec": model.describe(),
            "generate": {"exact_match": em, "f1": f1,
                "ci": {"exact_match": percentile_ci(&mut em_s), "f1": percentile_ci(&mut f1_s)}},
            "answers": kept.iter().take(20).map(|&i| json!({"id": prompts[i].id,
                "answer": answers[m][i].as_deref().unwrap_or(""), "reference": prompts[i].answers})).collect::<Vec<_>>(),
            "efficiency": effs[m],
        }));
    }
    let resampled: Vec<Resampled<'_>> = gen_models
        .iter()
        .enumerate()
        .map(|(m, (name, _))| Resampled {
            name,
            point: mean(m, &mut (0..n)).1,
            boot: boot[m].iter().map(|x| x.1).collect(),
        })
        .collect();
    let pairs = bootstrap_pairs(
        &resampled,
        "delta_f1",
        args.stats.correction,
        &Wording {
            better: "answers better than",
            score: "token F1",
            lower_is_better: false,
        },
    );
    let doc = json!({
        "task": "generate", "models": out_models, "pairwise": pairs,
        "method": {"decoding": "greedy", "max_tokens": args.max_tokens, "stop": &args.stop,
            "normalisation": "SQuAD: lower case, punctuation and articles removed, whitespace collapsed",
            "exact_match": "normalised answer equals a normalised reference (best over references)",
            "f1": "token-level F1 against the best reference", "unit": "prompt",
            "bootstrap": args.stats.bootstrap, "seed": args.seed, "p_value": "two-sided paired bootstrap over prompts, Holm-corrected"},
        "excluded_examples": {"count": failed.len(), "examples": failed.iter().map(|(id, w)| json!({"id": id, "errors": w})).collect::<Vec<_>>()},
        "dataset": {"path": args.data, "sha256": digest, "prompts": prompts.len(), "scored_prompts": n},
        "run": {"id": run_id, "key": key, "resumed": resumed, "lmcompare_version": env!("CARGO_PKG_VERSION"),
            "finished": timestamp(), "wall_seconds": started.elapsed().as_secs_f64(), "db": args.db},
    });
    store.finish_run(run_id, &doc.to_string()).map_err(engine)?;
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squad_normalisation_and_f1() {
        assert_eq!(normalize("The  Eiffel Tower!"), "eiffel tower");
        assert_eq!(token_f1("the Eiffel Tower", "Eiffel tower"), 1.0);
        // 2 common of 3 predicted and 2 gold: P = 2/3, R = 1, F1 = 0.8.
        assert!((token_f1("Paris France Europe", "paris, france") - 0.8).abs() < 1e-12);
        assert_eq!(token_f1("London", "Paris"), 0.0);
        assert_eq!(token_f1("", "the"), 1.0);
        assert_eq!(cut_at_stop(" Paris\nQ: next", &["\n".into()]), " Paris");
        assert_eq!(cut_at_stop("abc", &[]), "abc");
    }
}
