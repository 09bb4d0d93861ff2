//! `explain`: token and word attributions of a classifier's prediction, with Captum's
//! conventions exactly.
//!
//! * Integrated gradients on the word embeddings (Captum's `LayerIntegratedGradients` on
//!   `embeddings.word_embeddings`): attribution = (x − x′) ⊙ Σᵢ stepᵢ · ∇F(x′ + αᵢ(x − x′)),
//!   Gauss-Legendre by default (αᵢ = (1 + xᵢ)/2, stepᵢ = wᵢ/2 from the Legendre nodes and
//!   weights), or a Riemann rule; the baseline keeps the special tokens ([CLS]/[SEP],
//!   <s>/</s>) and puts the pad token's embedding everywhere else; position and token-type
//!   embeddings are those of the input. A token's score is the sum over the hidden
//!   dimension; the completeness gap |Σ attributions − (F(x) − F(x′))| is Captum's
//!   convergence delta.
//! * Saliency (|∇F(x)|, Captum's default `abs=True`) and input × gradient (x ⊙ ∇F(x)).
//! * Occlusion: each word's tokens set to the baseline alone (Captum's `FeatureAblation`
//!   with one feature per word), score = F(x) − F(x without the word).
//! * Shapley value sampling (Captum's `ShapleyValueSampling`): per permutation of the
//!   words, from the all-baseline input, each word's marginal change of F as it is added;
//!   averaged over the permutations.
//!
//! F is the target class's probability (or log-probability). Word scores are the sums of
//! their tokens' scores (occlusion and Shapley score words directly, and each of a word's
//! tokens carries the word's score, as Captum's feature masks do).

pub mod decoder;
pub mod heads;

use std::path::Path;

use lmcompare_engine::attribution::{GradEncoder, TargetScale};
use lmcompare_engine::tokenize::{Encoded, TextTokenizer};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use crate::{bad, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Integrated gradients on the word embeddings.
    IntegratedGradients,
    /// The input times the gradient at the input.
    InputXGradient,
    /// The gradient's absolute value at the input.
    Saliency,
    /// Each word set to the baseline alone.
    Occlusion,
    /// Shapley value sampling over the words.
    Shapley,
}

impl Method {
    pub fn key(self) -> &'static str {
        match self {
            Method::IntegratedGradients => "integrated_gradients",
            Method::InputXGradient => "input_x_gradient",
            Method::Saliency => "saliency",
            Method::Occlusion => "occlusion",
            Method::Shapley => "shapley",
        }
    }
}

/// Captum's integration rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum IgRule {
    Gausslegendre,
    RiemannLeft,
    RiemannRight,
    RiemannMiddle,
    RiemannTrapezoid,
}

/// Nodes and weights of the n-point Gauss-Legendre rule on [-1, 1] (NumPy's `leggauss`),
/// by Newton's method on the Legendre polynomial from Chebyshev starting points.
/// How explain loads a local decoder: gradients need the weights' f32 values.
const F32_WEIGHTS: lmcompare_engine::decoder::LoadOptions =
    lmcompare_engine::decoder::LoadOptions { dequantize: true };

pub fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut nodes = vec![0.0; n];
    let mut weights = vec![0.0; n];
    for i in 0..n {
        let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut dp = 0.0;
        for _ in 0..100 {
            let (mut p0, mut p1) = (1.0, x);
            for k in 2..=n {
                let p2 = ((2 * k - 1) as f64 * x * p1 - (k - 1) as f64 * p0) / k as f64;
                p0 = p1;
                p1 = p2;
            }
            let pn = if n == 0 { 1.0 } else { p1 };
            let pn1 = if n <= 1 { 1.0 } else { p0 };
            dp = n as f64 * (x * pn - pn1) / (x * x - 1.0);
            let dx = pn / dp;
            x -= dx;
            if dx.abs() < 1e-16 {
                break;
            }
        }
        nodes[i] = x;
        weights[i] = 2.0 / ((1.0 - x * x) * dp * dp);
    }
    // Ascending, as NumPy gives them.
    nodes.reverse();
    weights.reverse();
    (nodes, weights)
}

/// Captum's `approximation_parameters`: (step sizes, alphas) of `n` steps.
pub fn steps_and_alphas(n: usize, rule: IgRule) -> (Vec<f64>, Vec<f64>) {
    let nf = n as f64;
    let linspace = |a: f64, b: f64| -> Vec<f64> {
        if n == 1 {
            return vec![a];
        }
        (0..n)
            .map(|i| a + (b - a) * i as f64 / (nf - 1.0))
            .collect()
    };
    match rule {
        IgRule::Gausslegendre => {
            let (x, w) = gauss_legendre(n);
            (
                w.iter().map(|w| 0.5 * w).collect(),
                x.iter().map(|x| 0.5 * (1.0 + x)).collect(),
            )
        }
        IgRule::RiemannLeft => (vec![1.0 / nf; n], linspace(0.0, 1.0 - 1.0 / nf)),
        IgRule::RiemannRight => (vec![1.0 / nf; n], linspace(1.0 / nf, 1.0)),
        IgRule::RiemannMiddle => (
            vec![1.0 / nf; n],
            linspace(1.0 / (2.0 * nf), 1.0 - 1.0 / (2.0 * nf)),
        ),
        IgRule::RiemannTrapezoid => {
            // Captum's step sizes: 1/n with the two ends halved (they sum to (n − 1)/n,
            // not 1, and Captum's attributions carry that factor; so do ours).
            let mut s = vec![1.0 / nf; n];
            s[0] /= 2.0;
            s[n - 1] /= 2.0;
            (s, linspace(0.0, 1.0))
        }
    }
}

/// How attributions are computed.
#[derive(Debug, Clone)]
pub struct ExplainSettings {
    pub method: Method,
    pub n_steps: usize,
    pub rule: IgRule,
    /// Interpolated inputs per forward/backward pass (memory stays bounded).
    pub internal_batch_size: usize,
    /// Shapley permutations.
    pub samples: usize,
    pub seed: u64,
    pub scale: TargetScale,
}

impl Default for ExplainSettings {
    fn default() -> Self {
        ExplainSettings {
            method: Method::IntegratedGradients,
            n_steps: 50,
            rule: IgRule::Gausslegendre,
            internal_batch_size: 16,
            samples: 25,
            seed: 0,
            scale: TargetScale::Probability,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenScore {
    pub token: String,
    /// Character span in the text (empty for added special tokens).
    pub start: usize,
    pub end: usize,
    pub special: bool,
    pub score: f64,
    /// The word this token belongs to (none for special tokens).
    pub word: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WordScore {
    pub word: String,
    pub start: usize,
    pub end: usize,
    pub score: f64,
}

/// One text's attributions by one model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Attribution {
    pub target: String,
    pub target_index: usize,
    /// F(x): the target's probability (or log-probability) for the text.
    pub f_input: f64,
    /// F(x′): for the baseline (IG) or the all-baseline input (Shapley).
    pub f_baseline: Option<f64>,
    /// |Σ attributions − (F(x) − F(x′))| (integrated gradients; for Shapley, the
    /// difference of the sum from F(x) − F(x′), which is exact only in expectation).
    pub completeness_gap: Option<f64>,
    pub probabilities: Vec<f64>,
    pub predicted: String,
    pub tokens: Vec<TokenScore>,
    pub words: Vec<WordScore>,
    /// The text was longer than the model's positions and was cut.
    pub truncated: bool,
    /// Per-token attributions summed over the hidden dimension, before word grouping
    /// (the raw per-element values are not kept).
    #[serde(skip)]
    pub raw: Vec<f64>,
}

/// Whitespace-separated words of `text`: (byte start, byte end).
fn word_spans(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, text.len()));
    }
    out
}

/// The word each token belongs to: the word holding the first non-space character of the
/// token's span (WordPiece `##`, byte-level BPE `Ġ` and SentencePiece `▁` pieces all map by
/// their offsets); special tokens and empty spans belong to none.
pub fn token_words(text: &str, enc: &Encoded) -> (Vec<(usize, usize)>, Vec<Option<usize>>) {
    let words = word_spans(text);
    let map = enc
        .offsets
        .iter()
        .zip(&enc.special)
        .map(|(&(s, e), &special)| {
            if special || e <= s {
                return None;
            }
            let first = text
                .get(s..e)?
                .char_indices()
                .find(|(_, c)| !c.is_whitespace())?
                .0
                + s;
            words.iter().position(|&(ws, we)| ws <= first && first < we)
        })
        .collect();
    (words, map)
}

/// Each token of `enc` with its character span in `text`, its word and `score(i)`.
fn token_scores(
    text: &str,
    enc: &Encoded,
    token_word: &[Option<usize>],
    score: impl Fn(usize) -> f64,
) -> Vec<TokenScore> {
    enc.tokens
        .iter()
        .enumerate()
        .map(|(i, tok)| {
            let (bs, be) = enc.offsets[i];
            TokenScore {
                token: tok.clone(),
                start: char_index(text, bs),
                end: char_index(text, be),
                special: enc.special[i],
                score: score(i),
                word: token_word[i],
            }
        })
        .collect()
}

/// Saliency (|∇F| summed over the hidden dimension) or input × gradient, per token.
pub(crate) fn gradient_scores(method: Method, grad: &[f32], x: &[f32], d: usize) -> Vec<f64> {
    grad.chunks_exact(d)
        .zip(x.chunks_exact(d))
        .map(|(g, xv)| {
            g.iter()
                .zip(xv)
                .map(|(&gv, &xe)| {
                    f64::from(if method == Method::Saliency {
                        gv.abs()
                    } else {
                        gv * xe
                    })
                })
                .sum()
        })
        .collect()
}

/// Integrated gradients per token: Σ over the hidden dimension of (x − x′) ⊙ the
/// accumulated gradient.
pub(crate) fn ig_scores(total: &[f32], diff: &[f32], d: usize) -> Vec<f64> {
    total
        .chunks_exact(d)
        .zip(diff.chunks_exact(d))
        .map(|(t, df)| t.iter().zip(df).map(|(a, b)| f64::from(a * b)).sum())
        .collect()
}

/// Each word's score: the sum of its tokens' (`token_word` maps tokens to words).
pub(crate) fn sum_by_word(
    words: usize,
    token_word: &[Option<usize>],
    per_token: &[f64],
) -> Vec<f64> {
    let mut v = vec![0.0; words];
    for (w, s) in token_word.iter().zip(per_token) {
        if let Some(w) = w {
            v[*w] += s;
        }
    }
    v
}

/// The words of `text` (byte spans) with their scores and character spans.
pub(crate) fn word_list(text: &str, spans: &[(usize, usize)], scores: &[f64]) -> Vec<WordScore> {
    spans
        .iter()
        .zip(scores)
        .map(|(&(a, b), &score)| WordScore {
            word: text[a..b].to_owned(),
            start: char_index(text, a),
            end: char_index(text, b),
            score,
        })
        .collect()
}

/// The one text an attribution explains, tokenized (an empty text is refused).
fn encode_text(tokenizer: &TextTokenizer, text: &str) -> Result<Encoded> {
    if text.trim().is_empty() {
        return Err(bad!("the text is empty: there is nothing to explain"));
    }
    tokenizer
        .encode_batch(&[text])?
        .pop()
        .ok_or_else(|| bad!("the tokenizer returned nothing"))
}

fn char_index(text: &str, byte: usize) -> usize {
    text.get(..byte).map_or(0, |t| t.chars().count())
}

/// Integrated gradients of class `target` from baseline `xb` to input `x` (word embeddings,
/// `t × hidden`): per-token scores (sums over the hidden dimension), F(x) and F(x′).
pub fn integrated_gradients(
    model: &GradEncoder,
    x: &[f32],
    xb: &[f32],
    t: usize,
    target: usize,
    s: &ExplainSettings,
) -> Result<(Vec<f64>, f64, f64)> {
    if s.n_steps == 0 {
        return Err(bad!("--n-steps must be at least 1"));
    }
    if s.rule == IgRule::RiemannTrapezoid && s.n_steps < 2 {
        return Err(bad!(
            "--ig-rule riemann-trapezoid needs --n-steps of at least 2"
        ));
    }
    let d = model.hidden();
    let (steps, alphas) = steps_and_alphas(s.n_steps, s.rule);
    let diff: Vec<f32> = x.iter().zip(xb).map(|(a, b)| a - b).collect();
    let mut total = vec![0.0f32; t * d];
    let order: Vec<usize> = (0..alphas.len()).collect();
    for chunk in order.chunks(s.internal_batch_size.max(1)) {
        let inputs: Vec<Vec<f32>> = chunk
            .iter()
            .map(|&i| {
                let a = alphas[i] as f32;
                xb.iter().zip(&diff).map(|(b, df)| b + a * df).collect()
            })
            .collect();
        let g = model.gradients(&inputs, t, target, s.scale)?;
        for (&i, grad) in chunk.iter().zip(&g.grads) {
            let step = steps[i] as f32;
            for (acc, gv) in total.iter_mut().zip(grad) {
                *acc += gv * step;
            }
        }
    }
    let scores = ig_scores(&total, &diff, d);
    let f = |v: &[f32]| -> Result<f64> {
        let p = model.probabilities(&[v.to_vec()], t)?.remove(0);
        Ok(match s.scale {
            TargetScale::Probability => f64::from(p[target]),
            TargetScale::LogProbability => f64::from(p[target]).ln(),
        })
    };
    Ok((scores, f(x)?, f(xb)?))
}

/// The word orders Shapley sampling walks: the given ones, else `s.samples` seeded draws.
fn shapley_permutations(
    nw: usize,
    s: &ExplainSettings,
    given: Option<&[Vec<usize>]>,
) -> Vec<Vec<usize>> {
    if let Some(p) = given {
        return p.to_vec();
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(s.seed);
    (0..s.samples.max(1))
        .map(|_| {
            let mut p: Vec<usize> = (0..nw).collect();
            p.shuffle(&mut rng);
            p
        })
        .collect()
}

/// Explains `text` for `model`'s class `target` (None: the predicted class).
pub fn attribute(
    model: &GradEncoder,
    tokenizer: &TextTokenizer,
    labels: &[String],
    text: &str,
    target: Option<usize>,
    s: &ExplainSettings,
    permutations: Option<&[Vec<usize>]>,
) -> Result<Attribution> {
    let enc = encode_text(tokenizer, text)?;
    let t = enc.ids.len();
    let d = model.hidden();
    let pad = model.config.pad_token_id;
    let x = model.word_embeddings(&enc.ids)?;
    let baseline_ids: Vec<u32> = enc
        .ids
        .iter()
        .zip(&enc.special)
        .map(|(&id, &sp)| if sp { id } else { pad })
        .collect();
    let xb = model.word_embeddings(&baseline_ids)?;
    let probs = model.probabilities(std::slice::from_ref(&x), t)?.remove(0);
    let probabilities: Vec<f64> = probs.iter().map(|&p| f64::from(p)).collect();
    let predicted = crate::runner::argmax(&probabilities);
    let target = target.unwrap_or(predicted);
    if target >= labels.len() {
        return Err(bad!(
            "target class {target}: the model has {} labels",
            labels.len()
        ));
    }
    let f_of = |p: &[f32]| -> f64 {
        match s.scale {
            TargetScale::Probability => f64::from(p[target]),
            TargetScale::LogProbability => f64::from(p[target]).ln(),
        }
    };
    let (words, token_word) = token_words(text, &enc);
    let f_input = f_of(&probs);
    let mut f_baseline = None;
    let mut gap = None;
    let mut per_token = vec![0.0f64; t];
    let mut per_word: Option<Vec<f64>> = None;
    let ib = s.internal_batch_size.max(1);
    match s.method {
        Method::IntegratedGradients => {
            let (scores, _, fb) = integrated_gradients(model, &x, &xb, t, target, s)?;
            per_token = scores;
            f_baseline = Some(fb);
            gap = Some((per_token.iter().sum::<f64>() - (f_input - fb)).abs());
        }
        Method::Saliency | Method::InputXGradient => {
            let g = model.gradients(std::slice::from_ref(&x), t, target, s.scale)?;
            per_token = gradient_scores(s.method, &g.grads[0], &x, d);
        }
        Method::Occlusion | Method::Shapley => {
            let with = |present: &dyn Fn(usize) -> bool| -> Vec<f32> {
                let mut v = x.clone();
                for (tok, w) in token_word.iter().enumerate() {
                    if let Some(w) = w {
                        if !present(*w) {
                            v[tok * d..(tok + 1) * d].copy_from_slice(&xb[tok * d..(tok + 1) * d]);
                        }
                    }
                }
                v
            };
            let nw = words.len();
            let eval = |inputs: Vec<Vec<f32>>| -> Result<Vec<f64>> {
                let mut out = Vec::with_capacity(inputs.len());
                for chunk in inputs.chunks(ib) {
                    for p in model.probabilities(chunk, t)? {
                        out.push(f_of(&p));
                    }
                }
                Ok(out)
            };
            let mut scores = vec![0.0f64; nw];
            if s.method == Method::Occlusion {
                let inputs = (0..nw).map(|w| with(&|o| o != w)).collect();
                for (w, f) in eval(inputs)?.into_iter().enumerate() {
                    scores[w] = f_input - f;
                }
            } else {
                let drawn = shapley_permutations(nw, s, permutations);
                let fb = eval(vec![with(&|_| false)])?[0];
                f_baseline = Some(fb);
                for perm in &drawn {
                    if perm.len() != nw {
                        return Err(bad!(
                            "a permutation of {} words for a text of {nw}",
                            perm.len()
                        ));
                    }
                    let inputs: Vec<Vec<f32>> = (1..=nw)
                        .map(|k| {
                            let on = &perm[..k];
                            with(&|w| on.contains(&w))
                        })
                        .collect();
                    let mut prev = fb;
                    for (k, f) in eval(inputs)?.into_iter().enumerate() {
                        scores[perm[k]] += f - prev;
                        prev = f;
                    }
                }
                for v in &mut scores {
                    *v /= drawn.len() as f64;
                }
                gap = Some((scores.iter().sum::<f64>() - (f_input - fb)).abs());
            }
            for (tok, w) in token_word.iter().enumerate() {
                if let Some(w) = w {
                    per_token[tok] = scores[*w];
                }
            }
            per_word = Some(scores);
        }
    }
    let word_scores: Vec<f64> =
        per_word.unwrap_or_else(|| sum_by_word(words.len(), &token_word, &per_token));
    let tokens = token_scores(text, &enc, &token_word, |i| per_token[i]);
    let words = word_list(text, &words, &word_scores);
    Ok(Attribution {
        target: labels[target].clone(),
        target_index: target,
        f_input,
        f_baseline,
        completeness_gap: gap,
        probabilities,
        predicted: labels[predicted].clone(),
        tokens,
        words,
        truncated: enc.truncated,
        raw: per_token,
    })
}

/// Loads a classifier for attributions: its differentiable copy and its tokenizer.
pub fn load_classifier(
    dir: &Path,
    max_length: Option<usize>,
) -> Result<(GradEncoder, TextTokenizer, Vec<String>)> {
    classifier_parts(GradEncoder::load(dir)?, dir, max_length)
}

/// A loaded classifier with its tokenizer (checked against it) and labels.
fn classifier_parts(
    model: GradEncoder,
    dir: &Path,
    max_length: Option<usize>,
) -> Result<(GradEncoder, TextTokenizer, Vec<String>)> {
    let limit = model.config.max_tokens();
    let tokenizer = TextTokenizer::load(dir, max_length.unwrap_or(limit).min(limit))?;
    if tokenizer.max_id() as usize >= model.config.vocab_size {
        return Err(bad!(
            "{}: the tokenizer's ids reach {} but the model has {} embeddings: the tokenizer does not fit the model",
            dir.display(),
            tokenizer.max_id(),
            model.config.vocab_size
        ));
    }
    let labels = model
        .config
        .id2label
        .clone()
        .filter(|l| l.len() == model.num_labels)
        .unwrap_or_else(|| {
            (0..model.num_labels)
                .map(|i| format!("LABEL_{i}"))
                .collect()
        });
    Ok((model, tokenizer, labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauss_legendre_matches_numpy_leggauss() {
        // numpy.polynomial.legendre.leggauss(5)
        let (x, w) = gauss_legendre(5);
        let ex = [
            -0.906_179_845_938_664,
            -0.538_469_310_105_683,
            0.0,
            0.538_469_310_105_683,
            0.906_179_845_938_664,
        ];
        let ew = [
            0.236_926_885_056_189_1,
            0.478_628_670_499_366_5,
            0.568_888_888_888_888_9,
            0.478_628_670_499_366_5,
            0.236_926_885_056_189_1,
        ];
        for i in 0..5 {
            assert!((x[i] - ex[i]).abs() < 1e-14, "{i}: {}", x[i]);
            assert!((w[i] - ew[i]).abs() < 1e-14, "{i}: {}", w[i]);
        }
        // Weights integrate constants exactly; 50 points integrate x^98 exactly.
        let (x, w) = gauss_legendre(50);
        assert!((w.iter().sum::<f64>() - 2.0).abs() < 1e-13);
        let moment: f64 = x.iter().zip(&w).map(|(x, w)| w * x.powi(98)).sum();
        assert!((moment - 2.0 / 99.0).abs() < 1e-13);
    }

    #[test]
    fn riemann_rules_are_captums() {
        let (s, a) = steps_and_alphas(4, IgRule::RiemannTrapezoid);
        assert_eq!(a, vec![0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]);
        assert_eq!(s, vec![0.125, 0.25, 0.25, 0.125]);
        let (_, a) = steps_and_alphas(4, IgRule::RiemannLeft);
        assert_eq!(a, vec![0.0, 0.25, 0.5, 0.75]);
        let (_, a) = steps_and_alphas(4, IgRule::RiemannMiddle);
        assert_eq!(a, vec![0.125, 0.375, 0.625, 0.875]);
        let (s, a) = steps_and_alphas(4, IgRule::RiemannRight);
        assert_eq!((s[0], a[3]), (0.25, 1.0));
    }

    #[test]
    fn words_are_whitespace_spans_and_tokens_map_by_their_first_character() {
        assert_eq!(word_spans("  a bb\tc "), vec![(2, 3), (4, 6), (7, 8)]);
        let enc = Encoded {
            ids: vec![0, 1, 2, 3, 4],
            tokens: vec![
                "<s>".into(),
                "Ġgood".into(),
                "Ġfil".into(),
                "m".into(),
                "</s>".into(),
            ],
            truncated: false,
            words: 2,
            content_tokens: 3,
            unknown_tokens: 0,
            // Byte-level BPE spans include the leading space.
            offsets: vec![(0, 0), (0, 4), (4, 8), (8, 9), (0, 0)],
            special: vec![true, false, false, false, true],
        };
        let (words, map) = token_words("good film", &enc);
        assert_eq!(words, vec![(0, 4), (5, 9)]);
        assert_eq!(map, vec![None, Some(0), Some(1), Some(1), None]);
    }
}

/// Occlusion or Shapley sampling over the words of `text` for a generative model, through
/// the same scoring calls as `compare` (the prompt template, each label's verbaliser scored
/// by log-likelihood, softmax over the labels) and the store's answer cache: a text already
/// scored costs no new request.
#[allow(clippy::too_many_arguments)]
pub fn attribute_generative(
    model: &dyn crate::models::GenerativeModel,
    store: &mut lmcompare_engine::store::Store,
    prompts: &crate::tasks::prompts::PromptSettings,
    labels: &[String],
    text: &str,
    target: Option<usize>,
    s: &ExplainSettings,
    permutations: Option<&[Vec<usize>]>,
) -> Result<Attribution> {
    if !matches!(s.method, Method::Occlusion | Method::Shapley) {
        return Err(bad!(
            "{} needs gradients, which lmcompare computes for native encoders and local decoders; --method occlusion or shapley work for {}",
            s.method.key(),
            model.describe()
        ));
    }
    let k = labels.len();
    let mut score = |texts: &[String]| -> Result<Vec<Vec<f64>>> {
        let requests: Vec<crate::models::LoglikRequest> = texts
            .iter()
            .flat_map(|t| {
                let context = crate::tasks::prompts::prompt(&prompts.template, &prompts.shots, t);
                prompts
                    .verbalizers
                    .iter()
                    .map(move |v| crate::models::LoglikRequest {
                        context: context.clone(),
                        continuation: v.clone(),
                    })
            })
            .collect();
        let pb = indicatif::ProgressBar::hidden();
        let answers = crate::cache::CachedModel::new(model).loglikelihood(store, &requests, &pb)?;
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut sums = Vec::with_capacity(k);
                for a in &answers.answers[i * k..(i + 1) * k] {
                    match a {
                        Ok(score) => sums.push(score.sum as f32),
                        Err(why) => return Err(crate::fail!("scoring {t:?}: {why}")),
                    }
                }
                Ok(lmcompare_engine::encoder_model::softmax64(&sums))
            })
            .collect()
    };
    attribute_by_texts(labels, text, target, s, permutations, &mut score)
}

/// Label probabilities of each input of a batch (texts, token ids, word masks).
pub type Scorer<'a, T> = dyn FnMut(&[T]) -> Result<Vec<Vec<f64>>> + 'a;

/// What word ablation (occlusion or Shapley sampling) found.
struct Ablation {
    probabilities: Vec<f64>,
    predicted: usize,
    target: usize,
    f_input: f64,
    f_baseline: Option<f64>,
    gap: Option<f64>,
    /// Per word.
    scores: Vec<f64>,
}

/// Occlusion or Shapley sampling over `nw` words. `eval` gives the label probabilities of
/// each presence mask (true: the word is kept), called once with every distinct mask.
fn ablate(
    nw: usize,
    labels: &[String],
    target: Option<usize>,
    s: &ExplainSettings,
    permutations: Option<&[Vec<usize>]>,
    eval: &mut Scorer<'_, Vec<bool>>,
) -> Result<Ablation> {
    use std::collections::HashMap;
    let drawn = if s.method == Method::Shapley {
        shapley_permutations(nw, s, permutations)
    } else {
        Vec::new()
    };
    let mut masks: Vec<Vec<bool>> = vec![vec![true; nw]];
    match s.method {
        Method::Occlusion => masks.extend((0..nw).map(|w| (0..nw).map(|o| o != w).collect())),
        Method::Shapley => {
            masks.push(vec![false; nw]);
            for perm in &drawn {
                if perm.len() != nw {
                    return Err(bad!(
                        "a permutation of {} words for a text of {nw}",
                        perm.len()
                    ));
                }
                let mut m = vec![false; nw];
                for &w in perm {
                    m[w] = true;
                    masks.push(m.clone());
                }
            }
        }
        _ => {
            return Err(bad!(
                "{} needs gradients; --method occlusion or shapley work without them",
                s.method.key()
            ))
        }
    }
    let mut distinct = masks.clone();
    distinct.sort();
    distinct.dedup();
    let scored = eval(&distinct)?;
    let probs_of: HashMap<&Vec<bool>, &Vec<f64>> = distinct.iter().zip(scored.iter()).collect();
    let probabilities = probs_of[&masks[0]].clone();
    let predicted = crate::runner::argmax(&probabilities);
    let target = target.unwrap_or(predicted);
    if target >= labels.len() {
        return Err(bad!(
            "target class {target}: the model has {} labels",
            labels.len()
        ));
    }
    let f = |m: &Vec<bool>| -> f64 {
        let p = probs_of[m][target];
        match s.scale {
            TargetScale::Probability => p,
            TargetScale::LogProbability => p.ln(),
        }
    };
    let f_input = f(&masks[0]);
    let mut scores = vec![0.0f64; nw];
    let (mut f_baseline, mut gap) = (None, None);
    if s.method == Method::Occlusion {
        for (w, score) in scores.iter_mut().enumerate() {
            *score = f_input - f(&masks[1 + w]);
        }
    } else {
        let fb = f(&masks[1]);
        f_baseline = Some(fb);
        let mut at = 2;
        for perm in &drawn {
            let mut prev = fb;
            for &w in perm {
                let cur = f(&masks[at]);
                scores[w] += cur - prev;
                prev = cur;
                at += 1;
            }
        }
        for v in &mut scores {
            *v /= drawn.len() as f64;
        }
        gap = Some((scores.iter().sum::<f64>() - (f_input - fb)).abs());
    }
    Ok(Ablation {
        probabilities,
        predicted,
        target,
        f_input,
        f_baseline,
        gap,
        scores,
    })
}

impl Ablation {
    fn attribution(
        self,
        labels: &[String],
        text: &str,
        words: &[(usize, usize)],
        tokens: Vec<TokenScore>,
        truncated: bool,
    ) -> Attribution {
        Attribution {
            target: labels[self.target].clone(),
            target_index: self.target,
            f_input: self.f_input,
            f_baseline: self.f_baseline,
            completeness_gap: self.gap,
            probabilities: self.probabilities,
            predicted: labels[self.predicted].clone(),
            raw: tokens.iter().map(|t| t.score).collect(),
            tokens,
            words: word_list(text, words, &self.scores),
            truncated,
        }
    }
}

/// Occlusion or Shapley sampling over the words of `text` for any model that maps texts to
/// label probabilities (`score`, called once with every distinct variant). A word is
/// removed from the text itself (the remaining words joined by single spaces); Shapley's
/// baseline is the empty text.
pub fn attribute_by_texts(
    labels: &[String],
    text: &str,
    target: Option<usize>,
    s: &ExplainSettings,
    permutations: Option<&[Vec<usize>]>,
    score: &mut Scorer<'_, String>,
) -> Result<Attribution> {
    if text.trim().is_empty() {
        return Err(bad!("the text is empty: there is nothing to explain"));
    }
    let words = word_spans(text);
    let mut eval = |masks: &[Vec<bool>]| -> Result<Vec<Vec<f64>>> {
        let texts: Vec<String> = masks
            .iter()
            .map(|m| {
                if m.iter().all(|&on| on) {
                    return text.to_owned();
                }
                words
                    .iter()
                    .zip(m)
                    .filter(|(_, &on)| on)
                    .map(|(&(a, b), _)| &text[a..b])
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        score(&texts)
    };
    let ab = ablate(words.len(), labels, target, s, permutations, &mut eval)?;
    Ok(ab.attribution(labels, text, &words, Vec::new(), false))
}

/// Occlusion or Shapley sampling over the words of `text` for an encoder that is run on
/// token ids (an ONNX graph): a removed word's tokens become the pad token, the special
/// tokens and the sequence length stay, as the embedding-level methods do it.
pub fn attribute_by_ids(
    tokenizer: &TextTokenizer,
    pad: u32,
    labels: &[String],
    text: &str,
    target: Option<usize>,
    s: &ExplainSettings,
    score: &mut Scorer<'_, Encoded>,
) -> Result<Attribution> {
    let enc = encode_text(tokenizer, text)?;
    let (words, token_word) = token_words(text, &enc);
    let mut eval = |masks: &[Vec<bool>]| -> Result<Vec<Vec<f64>>> {
        let variants: Vec<Encoded> = masks
            .iter()
            .map(|m| {
                let mut v = enc.clone();
                for (id, w) in v.ids.iter_mut().zip(&token_word) {
                    if w.is_some_and(|w| !m[w]) {
                        *id = pad;
                    }
                }
                v
            })
            .collect();
        score(&variants)
    };
    let ab = ablate(words.len(), labels, target, s, None, &mut eval)?;
    let tokens = token_scores(text, &enc, &token_word, |i| {
        token_word[i].map_or(0.0, |w| ab.scores[w])
    });
    Ok(ab.attribution(labels, text, &words, tokens, enc.truncated))
}

/// Which class is explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetChoice {
    /// The class the model predicts.
    Predicted,
    /// The example's gold label (needs --data).
    Gold,
    /// A label by name.
    Label(String),
}

impl std::str::FromStr for TargetChoice {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match s {
            "predicted" => TargetChoice::Predicted,
            "gold" => TargetChoice::Gold,
            other => TargetChoice::Label(other.to_owned()),
        })
    }
}

/// Everything `explain` needs.
#[derive(Debug, Clone)]
pub struct ExplainConfig {
    /// NAME=SPEC, one per model.
    pub models: Vec<String>,
    pub texts: Vec<String>,
    pub data: Option<std::path::PathBuf>,
    pub cols: crate::config::ColumnNames,
    /// Only these example ids (any split); else the test split.
    pub ids: Vec<String>,
    pub limit: Option<usize>,
    pub test_size: f64,
    pub target: TargetChoice,
    pub max_length: Option<usize>,
    pub settings: ExplainSettings,
    /// The store whose answer cache generative models' scoring calls go through.
    pub db: std::path::PathBuf,
    /// The head of encoders: their own, a probe, or zero-shot.
    pub head: heads::HeadChoice,
    /// LABEL=TEXT descriptions for zero-shot (the label itself otherwise).
    pub label_desc: Vec<String>,
}

/// The class index `choice` names for a model with `labels`.
fn resolve_target(
    choice: &TargetChoice,
    labels: &[String],
    gold: &Option<String>,
    model: &str,
) -> Result<Option<usize>> {
    let (l, what) = match choice {
        TargetChoice::Predicted => return Ok(None),
        TargetChoice::Gold => match gold {
            Some(g) => (g, "gold label"),
            None => return Ok(None),
        },
        TargetChoice::Label(l) => (l, "--target"),
    };
    labels.iter().position(|x| x == l).map(Some).ok_or_else(|| {
        bad!(
            "model {model}: the {what} {l:?} is not one of the model's labels [{}]",
            labels.join(", ")
        )
    })
}

/// One model's attributions for one example.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelAttribution {
    pub model: String,
    pub spec: String,
    #[serde(flatten)]
    pub attribution: Attribution,
}

impl ModelAttribution {
    fn of(m: &crate::models::NamedSpec, attribution: Attribution) -> ModelAttribution {
        ModelAttribution {
            model: m.name.clone(),
            spec: m.spec.clone(),
            attribution,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExplainedExample {
    pub id: String,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gold: Option<String>,
    pub models: Vec<ModelAttribution>,
}

/// The `explain` document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExplainReport {
    pub method: String,
    pub settings: serde_json::Value,
    pub examples: Vec<ExplainedExample>,
    pub warnings: Vec<String>,
    /// How models without a classification head were explained.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

fn settings_json(s: &ExplainSettings) -> serde_json::Value {
    let mut v = serde_json::json!({
        "method": s.method.key(),
        "target_function": match s.scale {
            TargetScale::Probability => "softmax probability of the target class",
            TargetScale::LogProbability => "log-softmax of the target class",
        },
        "baseline": "special tokens kept, every other token's word embedding replaced by the pad token's; position and token-type embeddings as in the input",
        "token_score": "sum over the hidden dimension",
    });
    match s.method {
        Method::IntegratedGradients => {
            v["n_steps"] = serde_json::json!(s.n_steps);
            v["rule"] = serde_json::json!(s.rule);
            v["internal_batch_size"] = serde_json::json!(s.internal_batch_size);
        }
        Method::Shapley => {
            v["samples"] = serde_json::json!(s.samples);
            v["seed"] = serde_json::json!(s.seed);
        }
        Method::Saliency => v["abs"] = serde_json::json!(true),
        _ => {}
    }
    v
}

/// The train split's (text, label) pairs and the dataset's labels, for probes.
type ProbeData = (Vec<(String, String)>, Vec<String>);

/// Attributions of every model for every text or example.
pub fn explain(cfg: &ExplainConfig) -> Result<ExplainReport> {
    let specs = crate::models::parse_named_specs(&cfg.models)?;
    let mut examples: Vec<(String, String, Option<String>)> = Vec::new();
    // The train split and labels, for probes on encoders without a head.
    let mut probe_data: Option<ProbeData> = None;
    let mut probe_note: Option<String> = None;
    let mut decoder_note: Option<String> = None;
    for (i, t) in cfg.texts.iter().enumerate() {
        if t.trim().is_empty() {
            return Err(bad!("--text {}: the text is empty", i + 1));
        }
        examples.push((format!("text {}", i + 1), t.clone(), None));
    }
    if let Some(data) = &cfg.data {
        let ds = lmcompare_engine::data::load_dataset(
            data,
            &cfg.cols.columns(),
            cfg.test_size,
            cfg.settings.seed,
        )?;
        probe_data = Some((
            ds.split(lmcompare_engine::data::Split::Train)
                .iter()
                .map(|e| (e.text.clone(), e.label.clone()))
                .collect(),
            ds.labels.clone(),
        ));
        if cfg.ids.is_empty() {
            let mut test = ds.split(lmcompare_engine::data::Split::Test);
            if let Some(n) = cfg.limit {
                test.truncate(n);
            }
            for e in test {
                examples.push((e.id.clone(), e.text.clone(), Some(e.label.clone())));
            }
        } else {
            for id in &cfg.ids {
                let e =
                    ds.examples.iter().find(|e| &e.id == id).ok_or_else(|| {
                        bad!("--ids: {}: no example with id {id:?}", data.display())
                    })?;
                examples.push((e.id.clone(), e.text.clone(), Some(e.label.clone())));
            }
        }
    }
    if examples.is_empty() {
        return Err(bad!("nothing to explain: give --text TEXT or --data FILE"));
    }
    if cfg.target == TargetChoice::Gold && cfg.data.is_none() {
        return Err(bad!(
            "--target gold needs --data FILE (texts given with --text have no gold label)"
        ));
    }
    let mut warnings = Vec::new();
    let mut out: Vec<ExplainedExample> = examples
        .iter()
        .map(|(id, text, gold)| ExplainedExample {
            id: id.clone(),
            text: text.clone(),
            gold: gold.clone(),
            models: Vec::new(),
        })
        .collect();
    let descriptions = match &probe_data {
        Some((_, labels)) => crate::compare::label_descriptions(&cfg.label_desc, labels)?,
        None if !cfg.label_desc.is_empty() => {
            return Err(bad!(
                "--label-desc describes the labels of --data FILE; give the data"
            ))
        }
        None => std::collections::HashMap::new(),
    };
    let mut store: Option<lmcompare_engine::store::Store> = None;
    for m in &specs {
        let local = crate::models::local_decoder_path(&m.spec);
        let generative = m.spec.starts_with("openai:")
            || local.is_some()
            || Path::new(&m.spec).extension().is_some_and(|e| e == "gguf");
        if generative {
            let Some((_, labels)) = &probe_data else {
                return Err(bad!(
                    "model {}: a generative model is explained on --data FILE (its labels are what the model is asked to choose between)",
                    m.name
                ));
            };
            let gradient = !matches!(cfg.settings.method, Method::Occlusion | Method::Shapley);
            if gradient && local.is_none() {
                return Err(bad!(
                    "model {}: {} needs gradients, which lmcompare computes for native encoders and local decoders (GGUF files, causal-LM folders); --method occlusion or shapley work for {}",
                    m.name,
                    cfg.settings.method.key(),
                    m.spec
                ));
            }
            let prompts = crate::tasks::prompts::prompt_settings(
                &crate::config::PromptConfig::default(),
                cfg.settings.seed,
                labels,
                &[],
                None,
            )?;
            let target_of =
                |gold: &Option<String>| resolve_target(&cfg.target, labels, gold, &m.name);
            if let (true, Some(path)) = (gradient, &local) {
                // Gradients need the weights' f32 values.
                let mut dec = lmcompare_engine::decoder::Decoder::load_with(path, F32_WEIGHTS)
                    .map_err(|e| crate::Error::from(e).context(format!("model {}", m.name)))?;
                if let Some(n) = cfg.max_length {
                    dec.limit_positions(n)?;
                }
                let mut truncated = 0;
                let pb = crate::runner::bar(false, out.len(), &m.name);
                for ex in out.iter_mut() {
                    pb.inc(1);
                    let context =
                        crate::tasks::prompts::prompt(&prompts.template, &prompts.shots, &ex.text);
                    let a = decoder::attribute_decoder(
                        &dec,
                        &context,
                        &ex.text,
                        &prompts.verbalizers,
                        labels,
                        target_of(&ex.gold)?,
                        &cfg.settings,
                    )
                    .map_err(|e| e.context(format!("model {}, {}", m.name, ex.id)))?;
                    truncated += usize::from(a.truncated);
                    ex.models.push(ModelAttribution::of(m, a));
                }
                pb.finish_and_clear();
                if truncated > 0 {
                    warnings.push(format!(
                        "model {}: {truncated} prompt(s) were longer than the model's {} positions and lost tokens from the left, as compare cuts them; those tokens are not explained",
                        m.name, dec.config.max_positions
                    ));
                }
                decoder_note.get_or_insert_with(|| decoder::BASELINE.to_owned());
                continue;
            }
            if store.is_none() {
                store = Some(lmcompare_engine::store::Store::open(&cfg.db)?);
            }
            let st = store.as_mut().ok_or_else(|| crate::fail!("no store"))?;
            let remote = crate::config::RemoteConfig::default();
            let opts = crate::models::ResolveOptions {
                remote: &remote,
                seed: cfg.settings.seed,
                quiet: true,
                generate_api: crate::config::GenerateApi::Chat,
                max_length: cfg.max_length,
            };
            let crate::models::Resolved::Generative(g) = crate::models::resolve(m, st, &opts)?
            else {
                return Err(bad!(
                    "model {}: {} is not a generative model",
                    m.name,
                    m.spec
                ));
            };
            for ex in out.iter_mut() {
                let target = target_of(&ex.gold)?;
                let a = attribute_generative(
                    g.as_ref(),
                    st,
                    &prompts,
                    labels,
                    &ex.text.clone(),
                    target,
                    &cfg.settings,
                    None,
                )
                .map_err(|e| e.context(format!("model {}, {}", m.name, ex.id)))?;
                ex.models.push(ModelAttribution::of(m, a));
            }
            continue;
        }
        let resolved = lmcompare_engine::spec::resolve(&m.spec)
            .map_err(|e| crate::Error::from(e).context(format!("model {}", m.name)))?;
        let pooled_head = if cfg.head == heads::HeadChoice::ZeroShot {
            heads::HeadChoice::ZeroShot
        } else {
            heads::HeadChoice::Probe
        };
        let head_data = |what: &str| -> Result<heads::HeadData<'_>> {
            let Some((train, labels)) = &probe_data else {
                return Err(bad!(
                    "model {}: {what}; give --data FILE to explain it through a probe fitted on the data's train split (as compare --task probe does) or, with --head zero-shot, through its similarity to the labels' descriptions",
                    m.name
                ));
            };
            Ok(heads::HeadData {
                train,
                labels,
                descriptions: &descriptions,
            })
        };
        if resolved.onnx.is_some() {
            if !matches!(cfg.settings.method, Method::Occlusion | Method::Shapley) {
                return Err(bad!(
                    "model {}: {} is an ONNX graph, which has no gradient path in lmcompare, so {} cannot run on it; --method occlusion or shapley explain it on texts",
                    m.name,
                    m.spec,
                    cfg.settings.method.key()
                ));
            }
            let data = head_data("an ONNX graph is explained through a head on its embeddings")?;
            let model = heads::IdAblation::load(resolved, cfg.max_length, pooled_head, &data)
                .map_err(|e| e.context(format!("model {}", m.name)))?;
            probe_note.get_or_insert_with(|| heads::note(pooled_head, data.train.len()));
            for (ex, (_, text, gold)) in out.iter_mut().zip(&examples) {
                let target = resolve_target(&cfg.target, data.labels, gold, &m.name)?;
                let a = model
                    .attribute(data.labels, text, target, &cfg.settings)
                    .map_err(|e| e.context(format!("model {}, {}", m.name, ex.id)))?;
                ex.models.push(ModelAttribution::of(m, a));
            }
            continue;
        }
        let own_head = match cfg.head {
            heads::HeadChoice::Auto => GradEncoder::load(&resolved.dir).ok(),
            _ => None,
        };
        let (model, tok, labels) = match own_head {
            Some(model) => classifier_parts(model, &resolved.dir, cfg.max_length),
            None => {
                let what = if cfg.head == heads::HeadChoice::Auto {
                    "no classification head"
                } else {
                    "a probe or zero-shot head is fitted on labelled data"
                };
                head_data(what).and_then(|data| {
                    probe_note.get_or_insert_with(|| heads::note(pooled_head, data.train.len()));
                    heads::load_pooled(&resolved.dir, cfg.max_length, pooled_head, &data)
                })
            }
        }
        .map_err(|e| e.context(format!("model {}", m.name)))?;
        let mut truncated = 0;
        let pb = crate::runner::bar(false, out.len(), &m.name);
        for (ex, (_, text, gold)) in out.iter_mut().zip(&examples) {
            pb.inc(1);
            let target = resolve_target(&cfg.target, &labels, gold, &m.name)?;
            let a = attribute(&model, &tok, &labels, text, target, &cfg.settings, None)
                .map_err(|e| e.context(format!("model {}, {}", m.name, ex.id)))?;
            truncated += usize::from(a.truncated);
            ex.models.push(ModelAttribution::of(m, a));
        }
        pb.finish_and_clear();
        if truncated > 0 {
            warnings.push(format!(
                "model {}: {truncated} text(s) were longer than {} tokens and were cut at the end; their tails are not explained",
                m.name,
                tok.max_length()
            ));
        }
    }
    Ok(ExplainReport {
        method: cfg.settings.method.key().to_owned(),
        settings: settings_json(&cfg.settings),
        examples: out,
        warnings,
        notes: probe_note.into_iter().chain(decoder_note).collect(),
    })
}

/// How a compared model can be explained.
#[derive(Debug, Clone)]
pub enum ExplainKind {
    /// A native encoder with its own classification head (task classify).
    Classifier(std::path::PathBuf),
    /// A native encoder under a probe or zero-shot head (tasks probe, zero-shot).
    Pooled(std::path::PathBuf),
    /// An ONNX encoder under a probe or zero-shot head.
    PooledOnnx,
    /// A local decoder scored by label log-likelihood.
    Decoder(std::path::PathBuf),
    /// Why not.
    Unsupported(String),
}

#[derive(Debug, Clone)]
pub struct ComparisonModel {
    pub name: String,
    pub spec: String,
    pub kind: ExplainKind,
}

/// What the comparison asked the models, so explanations explain the same target.
pub struct ComparisonInputs<'a> {
    pub task: crate::config::Task,
    pub labels: &'a [String],
    pub train: &'a [&'a lmcompare_engine::data::Example],
    pub descriptions: &'a std::collections::HashMap<String, String>,
    pub prompts: Option<&'a crate::tasks::prompts::PromptSettings>,
    pub length_norm: crate::config::LengthNorm,
    pub max_length: Option<usize>,
}

/// `compare --explain N`: the `n` scored examples where the models disagree most (the
/// largest total-variation distance between two models' probabilities; a different label
/// counts 1 where a model has none; one model alone: its least gold-sure examples),
/// explained by every model explain can run on as the comparison scored it: encoders with
/// their own head, probe or zero-shot head (ONNX graphs by occlusion), local decoders by
/// integrated gradients on the run's prompts.
pub fn for_comparison(
    runs: &[crate::runner::ModelRun],
    models: &[ComparisonModel],
    test: &[&lmcompare_engine::data::Example],
    inputs: &ComparisonInputs<'_>,
    n: usize,
) -> Result<serde_json::Value> {
    let labels = inputs.labels;
    use std::collections::HashMap;
    let by_model: Vec<HashMap<&str, &lmcompare_engine::store::StoredPrediction>> = runs
        .iter()
        .map(|r| {
            r.predictions
                .iter()
                .map(|p| (p.example_id.as_str(), p))
                .collect()
        })
        .collect();
    let disagreement = |e: &lmcompare_engine::data::Example| -> f64 {
        let preds: Vec<&lmcompare_engine::store::StoredPrediction> = by_model
            .iter()
            .filter_map(|m| m.get(e.id.as_str()).copied())
            .collect();
        if preds.len() == 1 {
            let gold = labels.iter().position(|l| *l == e.label);
            return match (gold, preds[0].probabilities.is_empty()) {
                (Some(g), false) => 1.0 - preds[0].probabilities.get(g).copied().unwrap_or(0.0),
                _ => f64::from(u8::from(preds[0].label != e.label)),
            };
        }
        let mut worst = 0.0f64;
        for (i, a) in preds.iter().enumerate() {
            for b in &preds[i + 1..] {
                let d = if a.probabilities.len() == b.probabilities.len()
                    && !a.probabilities.is_empty()
                {
                    0.5 * a
                        .probabilities
                        .iter()
                        .zip(&b.probabilities)
                        .map(|(x, y)| (x - y).abs())
                        .sum::<f64>()
                } else {
                    f64::from(u8::from(a.label != b.label))
                };
                worst = worst.max(d);
            }
        }
        worst
    };
    let mut order: Vec<(usize, f64)> = test
        .iter()
        .enumerate()
        .map(|(i, e)| (i, disagreement(e)))
        .collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let chosen: Vec<(usize, f64)> = order.into_iter().take(n).collect();
    let settings = ExplainSettings::default();
    let mut notes = Vec::new();
    let mut examples: Vec<serde_json::Value> = chosen
        .iter()
        .map(|&(i, d)| {
            serde_json::json!({"id": test[i].id, "text": test[i].text, "gold": test[i].label,
                "disagreement": d, "models": []})
        })
        .collect();
    let train: Vec<(String, String)> = inputs
        .train
        .iter()
        .map(|e| (e.text.clone(), e.label.clone()))
        .collect();
    let head = if inputs.task == crate::config::Task::ZeroShot {
        heads::HeadChoice::ZeroShot
    } else {
        heads::HeadChoice::Probe
    };
    let data = heads::HeadData {
        train: &train,
        labels,
        descriptions: inputs.descriptions,
    };
    for m in models {
        let name = &m.name;
        let mut attributions: Vec<Attribution> = Vec::with_capacity(chosen.len());
        let texts: Vec<&str> = chosen.iter().map(|&(i, _)| test[i].text.as_str()).collect();
        let outcome: Result<()> = (|| {
            match &m.kind {
                ExplainKind::Classifier(dir) | ExplainKind::Pooled(dir) => {
                    let (model, tok, model_labels) = match &m.kind {
                        ExplainKind::Classifier(_) => load_classifier(dir, inputs.max_length)?,
                        _ => heads::load_pooled(dir, inputs.max_length, head, &data)?,
                    };
                    for t in &texts {
                        attributions.push(attribute(
                            &model,
                            &tok,
                            &model_labels,
                            t,
                            None,
                            &settings,
                            None,
                        )?);
                    }
                }
                ExplainKind::PooledOnnx => {
                    let resolved = lmcompare_engine::spec::resolve(&m.spec)?;
                    let model = heads::IdAblation::load(resolved, inputs.max_length, head, &data)?;
                    let occlusion = ExplainSettings {
                        method: Method::Occlusion,
                        ..settings.clone()
                    };
                    for t in &texts {
                        attributions.push(model.attribute(labels, t, None, &occlusion)?);
                    }
                    notes.push(format!(
                        "{name}: an ONNX graph has no gradient path here; explained by occlusion (each word's tokens set to the pad token)"
                    ));
                }
                ExplainKind::Decoder(path) => {
                    let prompts = inputs
                        .prompts
                        .ok_or_else(|| crate::fail!("no prompt settings for a decoder"))?;
                    let mut dec = lmcompare_engine::decoder::Decoder::load_with(path, F32_WEIGHTS)?;
                    if let Some(n) = inputs.max_length {
                        dec.limit_positions(n)?;
                    }
                    for t in &texts {
                        let context =
                            crate::tasks::prompts::prompt(&prompts.template, &prompts.shots, t);
                        let mut p =
                            decoder::decoder_prompt(&dec, &context, t, &prompts.verbalizers)?;
                        p.divisors = decoder::length_divisors(
                            inputs.length_norm,
                            &prompts.verbalizers,
                            &p.continuations,
                        );
                        attributions.push(decoder::attribute_prompt(
                            &dec, &p, t, labels, None, &settings,
                        )?);
                    }
                }
                ExplainKind::Unsupported(why) => {
                    notes.push(format!("{name}: not explained ({why})"));
                }
            }
            Ok(())
        })();
        if let Err(e) = outcome {
            let at = chosen
                .get(attributions.len())
                .map_or(String::new(), |&(i, _)| format!(", example {}", test[i].id));
            return Err(e.context(format!("--explain: model {name}{at}")));
        }
        for (ex, a) in examples.iter_mut().zip(attributions) {
            if let Some(list) = ex["models"].as_array_mut() {
                list.push(serde_json::to_value(ModelAttribution {
                    model: name.clone(),
                    spec: m.spec.clone(),
                    attribution: a,
                })?);
            }
        }
    }
    Ok(serde_json::json!({
        "method": settings.method.key(),
        "settings": settings_json(&settings),
        "selection": "the test examples where the models' predicted probabilities differ most (total-variation distance, the largest over pairs of models; a different label counts 1 when a model has no probabilities); each model explains its own predicted class",
        "examples": examples,
        "warnings": notes,
    }))
}
