//! Encoders without a classification head, explained through the head `compare` puts on
//! their pooled embeddings: a linear probe fitted on the data's train split (`--task
//! probe`) or zero-shot similarity to label descriptions (`--task zero-shot`). Native
//! encoders get gradients through the head; ONNX graphs, which have no gradient path here,
//! are explained on texts (occlusion, Shapley) through the same embeddings and head.

use std::collections::HashMap;
use std::path::Path;

use lmcompare_engine::attribution::GradEncoder;
use lmcompare_engine::encoder_model::{LoadOptions, TextEncoder};
use lmcompare_engine::probe::{Probe, ProbeOptions};
use lmcompare_engine::spec::ResolvedModel;
use lmcompare_engine::tokenize::TextTokenizer;

use crate::tasks::encoder::{label_embeddings, zero_shot_probabilities};
use crate::{bad, Result};

/// Which head explains an encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum HeadChoice {
    /// The checkpoint's classification head; a probe for encoders without one.
    #[default]
    Auto,
    /// A linear probe fitted on the train split of --data (as compare --task probe).
    Probe,
    /// Cosine similarity to each label's description (as compare --task zero-shot).
    ZeroShot,
}

/// A head fitted on an encoder's pooled embeddings.
pub enum PooledFit {
    Probe(Probe),
    /// The label descriptions' embeddings.
    ZeroShot(Vec<Vec<f32>>),
}

impl PooledFit {
    pub fn probabilities(&self, v: &[f32]) -> Vec<f64> {
        match self {
            PooledFit::Probe(p) => p.predict_proba(v),
            PooledFit::ZeroShot(l) => zero_shot_probabilities(v, l),
        }
    }
}

/// What a pooled head is fitted from: the train split's (text, label) pairs, the labels and
/// their descriptions.
pub struct HeadData<'a> {
    pub train: &'a [(String, String)],
    pub labels: &'a [String],
    pub descriptions: &'a HashMap<String, String>,
}

/// Fits `head` (probe or zero-shot) on `enc`'s embeddings exactly as `compare` does.
pub fn fit(enc: &TextEncoder, head: HeadChoice, data: &HeadData<'_>) -> Result<PooledFit> {
    if head == HeadChoice::ZeroShot {
        return Ok(PooledFit::ZeroShot(label_embeddings(
            enc,
            data.labels,
            data.descriptions,
            32,
        )?));
    }
    let texts: Vec<&str> = data.train.iter().map(|(t, _)| t.as_str()).collect();
    let y: Vec<usize> = data
        .train
        .iter()
        .map(|(_, l)| {
            data.labels
                .iter()
                .position(|x| x == l)
                .ok_or_else(|| bad!("train label {l:?} is not a dataset label"))
        })
        .collect::<Result<_>>()?;
    let mut present = y.clone();
    present.sort_unstable();
    present.dedup();
    if present.len() < 2 {
        return Err(bad!(
            "the train split has fewer than two labels: a probe needs at least two"
        ));
    }
    let encoded = enc.tokenizer.encode_batch(&texts)?;
    let x = enc.embed(&encoded, 32)?;
    Ok(PooledFit::Probe(Probe::fit(
        &x,
        &y,
        data.labels.len(),
        &ProbeOptions::default(),
    )))
}

pub fn load_encoder(resolved: ResolvedModel, max_length: Option<usize>) -> Result<TextEncoder> {
    Ok(TextEncoder::load(
        resolved,
        &LoadOptions {
            max_length,
            ..Default::default()
        },
    )?)
}

/// A native encoder with a pooled head, differentiable through it.
pub fn load_pooled(
    dir: &Path,
    max_length: Option<usize>,
    head: HeadChoice,
    data: &HeadData<'_>,
) -> Result<(GradEncoder, TextTokenizer, Vec<String>)> {
    let resolved = lmcompare_engine::spec::resolve(&dir.display().to_string())?;
    let enc = load_encoder(resolved, max_length)?;
    let model = match fit(&enc, head, data)? {
        PooledFit::Probe(p) => GradEncoder::with_probe(dir, enc.pooling, p)?,
        PooledFit::ZeroShot(l) => GradEncoder::with_zero_shot(dir, enc.pooling, l)?,
    };
    Ok((model, enc.tokenizer, data.labels.to_vec()))
}

/// An encoder run on token ids (an ONNX graph) under a pooled head, explained by word
/// ablation on its ids (`explain::attribute_by_ids`).
pub struct IdAblation {
    enc: TextEncoder,
    fit: PooledFit,
    pad: u32,
}

impl IdAblation {
    pub fn load(
        resolved: ResolvedModel,
        max_length: Option<usize>,
        head: HeadChoice,
        data: &HeadData<'_>,
    ) -> Result<IdAblation> {
        let enc = load_encoder(resolved, max_length)?;
        let fit = fit(&enc, head, data)?;
        let pad = enc.config.as_ref().map_or(0, |c| c.pad_token_id);
        Ok(IdAblation { enc, fit, pad })
    }

    pub fn attribute(
        &self,
        labels: &[String],
        text: &str,
        target: Option<usize>,
        s: &super::ExplainSettings,
    ) -> Result<super::Attribution> {
        let mut score = |encoded: &[lmcompare_engine::tokenize::Encoded]| {
            let v = self.enc.embed(encoded, 32)?;
            Ok(v.iter().map(|x| self.fit.probabilities(x)).collect())
        };
        super::attribute_by_ids(
            &self.enc.tokenizer,
            self.pad,
            labels,
            text,
            target,
            s,
            &mut score,
        )
    }
}

/// The note the report carries for a pooled head.
pub fn note(head: HeadChoice, train: usize) -> String {
    match head {
        HeadChoice::ZeroShot => "encoders explained with --head zero-shot score each label as compare --task zero-shot does: 20 x the cosine similarity of the text's pooled embedding to the label description's, softmaxed".to_owned(),
        _ => format!(
            "models without a classification head are explained through a linear probe fitted on their pooled embeddings of the {train} train examples (as compare --task probe)"
        ),
    }
}
