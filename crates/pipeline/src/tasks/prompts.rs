//! Prompts for generative models: templates, verbalisers, seeded few-shot examples, and
//! multiple-choice files as datasets whose labels are the choice letters.

use std::collections::HashMap;
use std::path::Path;

use lmcompare_engine::data::{load_multiple_choice, Dataset, Example, Split};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::config::{PromptConfig, DEFAULT_TEMPLATE};
use crate::runner::label_index;
use crate::{bad, Result};

/// The prompt for `text`, after `shots` solved examples.
pub fn prompt(template: &str, shots: &[(String, String)], text: &str) -> String {
    let mut p = String::new();
    for (t, verbalized) in shots {
        p.push_str(&template.replace("{text}", t));
        p.push_str(verbalized);
        p.push_str("\n\n");
    }
    p.push_str(&template.replace("{text}", text));
    p
}

/// How a generative model is asked about each example.
pub struct PromptSettings {
    pub template: String,
    /// The continuation scored for each dataset label, in label order.
    pub verbalizers: Vec<String>,
    /// (text, verbalised gold label) of the few-shot examples.
    pub shots: Vec<(String, String)>,
    /// Multiple choice: each question's choices by example id.
    pub choices: Option<HashMap<String, Vec<String>>>,
    pub circular: bool,
}

pub fn letter(i: usize) -> String {
    char::from(b'A' + (i % 26) as u8).to_string()
}

/// A multiple-choice file as a dataset whose labels are the choice letters (all test).
pub fn choice_dataset(path: &Path) -> Result<(Dataset, HashMap<String, Vec<String>>)> {
    let (questions, sha256) = load_multiple_choice(path)?;
    let k = questions.iter().map(|q| q.choices.len()).max().unwrap_or(2);
    if k > 26 {
        return Err(bad!("{}: at most 26 choices per question", path.display()));
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
pub fn choice_prompt(template: &str, question: &str, listed: &[&String]) -> String {
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
pub fn prompt_settings(
    cfg: &PromptConfig,
    seed: u64,
    labels: &[String],
    train: &[&Example],
    choices: Option<HashMap<String, Vec<String>>>,
) -> Result<PromptSettings> {
    if choices.is_some() {
        let template = if cfg.template == DEFAULT_TEMPLATE {
            "Question: {question}\nAnswer:".to_owned()
        } else {
            cfg.template.clone()
        };
        if !template.contains("{question}") && !template.contains("{text}") {
            return Err(bad!(
                "--template {template:?} has no {{question}}: it must say where the question goes"
            ));
        }
        if cfg.circular && !template.contains("{choices}") {
            return Err(bad!(
                "--circular rotates the choices listed in the prompt: the template needs {{choices}}"
            ));
        }
        if cfg.shots > 0 {
            return Err(bad!(
                "--shots: multiple-choice files have no train split to draw from"
            ));
        }
        return Ok(PromptSettings {
            template,
            verbalizers: Vec::new(),
            shots: Vec::new(),
            choices,
            circular: cfg.circular,
        });
    }
    if !cfg.template.contains("{text}") {
        return Err(bad!(
            "--template {:?} has no {{text}}: it must say where the example goes",
            cfg.template
        ));
    }
    let mut given: HashMap<String, String> = HashMap::new();
    for v in &cfg.verbalizers {
        let (l, t) = v
            .split_once('=')
            .ok_or_else(|| bad!("--verbalizer {v:?}: expected LABEL=TEXT"))?;
        if !labels.iter().any(|x| x == l) {
            return Err(bad!(
                "--verbalizer: {l:?} is not a dataset label ({})",
                labels.join(", ")
            ));
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
            return Err(bad!(
                "--verbalizer is missing for dataset label(s) {}: give one per label",
                missing.join(", ")
            ));
        }
        labels.iter().map(|l| given[l].clone()).collect()
    };
    let mut pool: Vec<&Example> = train.to_vec();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x73686f74);
    pool.shuffle(&mut rng);
    if cfg.shots > pool.len() {
        return Err(bad!(
            "--shots {}: the train split has {} examples",
            cfg.shots,
            pool.len()
        ));
    }
    let shots = pool[..cfg.shots]
        .iter()
        .map(|e| {
            let i = label_index(labels, &e.label, "few-shot example")?;
            Ok((e.text.clone(), verbalizers[i].clone()))
        })
        .collect::<Result<_>>()?;
    Ok(PromptSettings {
        template: cfg.template.clone(),
        verbalizers,
        shots,
        choices: None,
        circular: false,
    })
}
