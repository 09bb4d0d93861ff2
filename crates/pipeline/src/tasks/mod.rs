//! The tasks: each builds requests from examples and scores the answers.
//!
//! | task | models | module |
//! |---|---|---|
//! | classify, probe, zero-shot | encoders | [`encoder`] |
//! | classify, probe, zero-shot by label log-likelihood; multiple choice | generative | [`loglik`] |
//! | classify by generation; generate | generative | [`generation`] |
//! | perplexity | generative | [`perplexity`] |

pub mod encoder;
pub mod generation;
pub mod loglik;
pub mod perplexity;
pub mod prompts;

use lmcompare_engine::store::{NewRun, Store};
use lmcompare_metrics::unit_bootstrap::UnitPair;
use lmcompare_metrics::Correction;
use serde_json::{json, Value};

use crate::cache::sha;
use crate::config::CompareConfig;
use crate::models::{parse_named_specs, resolve, GenerativeModel, ResolveOptions, Resolved};
use crate::{bad, Result};

/// A task scored over units (documents, prompts) that only generative models answer: the
/// store and the resolved models.
pub(crate) struct UnitTask {
    pub store: Store,
    pub models: Vec<(String, Box<dyn GenerativeModel>)>,
    task: &'static str,
}

impl UnitTask {
    pub fn open(cfg: &CompareConfig, task: &'static str) -> Result<UnitTask> {
        let specs = parse_named_specs(&cfg.models)?;
        let store = Store::open(&cfg.db)?;
        let opts = ResolveOptions {
            remote: &cfg.remote,
            seed: cfg.seed,
            quiet: cfg.quiet,
            generate_api: cfg.prompt.generate_api,
            max_length: cfg.max_length,
        };
        let mut models = Vec::new();
        for m in &specs {
            match resolve(m, &store, &opts)? {
                Resolved::Generative(g) => models.push((m.name.clone(), g)),
                Resolved::Encoder(_) => {
                    return Err(bad!(
                        "model {}: {task} scores generative models (a .gguf file, a causal-LM folder or openai:URL#MODEL); {} is not one",
                        m.name,
                        m.spec
                    ))
                }
            }
        }
        Ok(UnitTask {
            store,
            models,
            task,
        })
    }

    /// Starts (or resumes) the stored run whose key is the hash of `settings`: its id,
    /// whether it resumed, and the key.
    pub fn begin(
        &mut self,
        cfg: &CompareConfig,
        settings: &Value,
        digest: &str,
        rows: usize,
    ) -> Result<(i64, bool, String)> {
        let key = sha(&settings.to_string());
        let names: Vec<&str> = self.models.iter().map(|m| m.0.as_str()).collect();
        let (run_id, resumed) = self.store.begin_run(&NewRun {
            key: &key,
            task: self.task,
            dataset_sha: digest,
            dataset_path: &cfg.data.display().to_string(),
            rows,
            models: &names.join(","),
            settings: &settings.to_string(),
        })?;
        crate::runner::claim_or_wait(&self.store, run_id)?;
        Ok((run_id, resumed, key))
    }
}

/// Paired unit-bootstrap results as report JSON, the difference under `delta_key`.
pub(crate) fn pairs_json(pairs: &[UnitPair], delta_key: &str) -> Vec<Value> {
    pairs
        .iter()
        .map(|p| {
            let mut v = json!({"a": p.a, "b": p.b, "ci": p.ci, "p_bootstrap": p.p_bootstrap});
            v[delta_key] = json!(p.delta);
            v["p_adjusted"] = json!(p.p_adjusted);
            v["p_holm"] = json!(p.p_holm);
            v["verdict"] = json!(p.verdict);
            v
        })
        .collect()
}

/// How the method block says which correction decided.
pub(crate) fn corrected(c: Correction) -> &'static str {
    match c {
        Correction::Holm => "Holm-corrected",
        Correction::BenjaminiHochberg => "Benjamini-Hochberg-corrected",
        Correction::None => "uncorrected",
    }
}
