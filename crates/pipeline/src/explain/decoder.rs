//! Gradient attributions (integrated gradients, input × gradient, saliency) for local
//! decoders, on the target `compare` scores a generative classifier by: each label's
//! verbaliser log-likelihood after the prompt, softmaxed over the labels.
//!
//! The input is the prompt's word embeddings. The baseline keeps the tokenizer's leading
//! special tokens (BOS) and the template's own tokens and puts the pad token's embedding
//! (a zero vector for models without one) at every token of the text; the continuations are
//! not attributed (they are the same in input and baseline). Positions are the input's. A
//! context token belongs to the text when its first non-space character lies in it, so a
//! byte-level `Ġword` or SentencePiece `▁word` piece counts as the word; a piece with no
//! visible character (a lone space) belongs to no word and stays in the baseline, as the
//! template does.

use lmcompare_engine::attribution::TargetScale;
use lmcompare_engine::decoder::{Decoder, Scored, TreeLayout};

use super::{
    char_index, gradient_scores, ig_scores, steps_and_alphas, sum_by_word, word_list, word_spans,
    Attribution, ExplainSettings, IgRule, Method, TokenScore,
};
use crate::{bad, fail, Result};

/// How decoders' gradient attributions are set up, for the report's notes.
pub const BASELINE: &str = "local decoders are explained on compare's target: the prompt (the default template) with each label's verbaliser scored by log-likelihood and softmaxed over the labels; integrated gradients run over the prompt's word embeddings from a baseline that keeps BOS and the template's tokens and puts the pad token's embedding (zeros for a model without one) at the text's tokens; the continuations are not attributed";

/// A classification prompt as the decoder sees it.
#[derive(Debug, Clone)]
pub struct DecoderPrompt {
    /// The context's ids (leading special tokens included), cut from the left to fit.
    pub context: Vec<u32>,
    /// Each label's continuation ids.
    pub continuations: Vec<Vec<u32>>,
    /// Per context token: the word of the text it belongs to (None: kept in the baseline).
    pub token_words: Vec<Option<usize>>,
    /// Per context token: its piece and its character span in the text (empty outside it).
    pub tokens: Vec<(String, usize, usize)>,
    /// The text's words (byte spans).
    pub words: Vec<(usize, usize)>,
    /// Tokens the context lost from the left to fit the model's positions.
    pub cut: usize,
    /// What each label's log-likelihood is divided by before the softmax (compare's
    /// `--length-norm`; 1 without it).
    pub divisors: Vec<f64>,
}

/// Tokenizes `context` (which holds `text`) and each verbaliser the way `compare` does.
pub fn decoder_prompt(
    dec: &Decoder,
    context: &str,
    text: &str,
    verbalizers: &[String],
) -> Result<DecoderPrompt> {
    let mut pairs = Vec::with_capacity(verbalizers.len());
    for v in verbalizers {
        pairs.push(dec.encode_pair(context, v)?);
    }
    let ctx = pairs
        .first()
        .map(|p| p.0.clone())
        .ok_or_else(|| bad!("no labels to explain"))?;
    if pairs.iter().any(|p| p.0 != ctx) {
        return Err(fail!(
            "the labels' verbalisers split the prompt differently; the context is not shared"
        ));
    }
    let continuations: Vec<Vec<u32>> = pairs.into_iter().map(|p| p.1).collect();
    let trimmed = context.trim_end_matches(' ');
    let enc = dec
        .tokenizer()
        .encode(trimmed, false)
        .map_err(|e| fail!("tokenizer: {e}"))?;
    let lead = ctx.len().saturating_sub(enc.get_ids().len());
    if ctx[lead..] != *enc.get_ids() {
        return Err(fail!(
            "the tokenizer's offsets do not cover the prompt's tokens"
        ));
    }
    let start = context
        .rfind(text)
        .ok_or_else(|| fail!("the prompt does not contain the text"))?;
    let words = word_spans(text);
    let mut token_words = vec![None; lead];
    let mut tokens: Vec<(String, usize, usize)> = ctx[..lead]
        .iter()
        .map(|&id| {
            let piece = dec.tokenizer().id_to_token(id).unwrap_or_default();
            (piece, 0, 0)
        })
        .collect();
    for (piece, &(s, e)) in enc.get_tokens().iter().zip(enc.get_offsets()) {
        let first = trimmed
            .get(s..e)
            .and_then(|t| t.char_indices().find(|(_, c)| !c.is_whitespace()))
            .map(|(i, _)| s + i);
        let word = first
            .filter(|&f| f >= start && f < start + text.len())
            .and_then(|f| {
                words
                    .iter()
                    .position(|&(ws, we)| ws <= f - start && f - start < we)
            });
        token_words.push(word);
        let span = if word.is_some() {
            let (a, b) = (s.max(start) - start, e.min(start + text.len()) - start);
            (char_index(text, a), char_index(text, b))
        } else {
            (0, 0)
        };
        tokens.push((piece.clone(), span.0, span.1));
    }
    let longest = continuations.iter().map(Vec::len).max().unwrap_or(1);
    let max = dec.config.max_positions;
    let mut p = DecoderPrompt {
        divisors: vec![1.0; continuations.len()],
        context: ctx,
        continuations,
        token_words,
        tokens,
        words,
        cut: 0,
    };
    if p.context.len() + longest - 1 > max {
        let keep = (max + 1).saturating_sub(longest).max(1);
        let cut = p.context.len() - keep;
        p.context.drain(..cut);
        p.token_words.drain(..cut);
        p.tokens.drain(..cut);
        p.cut = cut;
    }
    Ok(p)
}

/// What compare's `--length-norm` divides each label's log-likelihood by.
pub fn length_divisors(
    norm: crate::config::LengthNorm,
    verbalizers: &[String],
    continuations: &[Vec<u32>],
) -> Vec<f64> {
    use crate::config::LengthNorm;
    verbalizers
        .iter()
        .zip(continuations)
        .map(|(v, c)| match norm {
            LengthNorm::None => 1.0,
            LengthNorm::Tokens => c.len() as f64,
            LengthNorm::Chars => v.chars().count().max(1) as f64,
            LengthNorm::Bytes => v.len().max(1) as f64,
        })
        .collect()
}

/// Bytes the forward pass keeps per row for the backward pass (a bound for the batch).
fn tape_bytes_per_row(dec: &Decoder, n: usize) -> usize {
    let c = &dec.config;
    let width = (c.heads + 2 * c.kv_heads) * c.head_dim;
    4 * c.layers * (5 * c.hidden + 2 * width + 2 * c.ffn + c.heads * n)
}

/// The interpolated inputs a gradient pass holds at once, for a memory budget of 1 GiB.
fn batch_bound(dec: &Decoder, p: &DecoderPrompt, wanted: usize) -> usize {
    let n = p.context.len() + p.continuations.iter().map(|c| c.len() - 1).sum::<usize>();
    let per_input = n * tape_bytes_per_row(dec, n);
    (1usize << 30)
        .checked_div(per_input)
        .unwrap_or(1)
        .clamp(1, wanted.max(1))
}

/// What [`decoder_target`] computes for a batch of inputs.
pub struct TargetPass {
    /// The label probabilities per input.
    pub probabilities: Vec<Vec<f64>>,
    /// dF/dinputs (`batch × context × hidden`), when asked.
    pub gradients: Option<Vec<f32>>,
}

/// Each of `batch` context inputs' (`batch × context × hidden`) label probabilities (the
/// softmax over the labels' log-likelihoods), and with `grad`, dF/dinputs where F is the
/// target label's probability or log-probability.
pub fn decoder_target(
    dec: &Decoder,
    p: &DecoderPrompt,
    inputs: &[f32],
    batch: usize,
    target: usize,
    scale: TargetScale,
    grad: bool,
) -> Result<TargetPass> {
    let d = dec.config.hidden;
    let nc = p.context.len();
    let k = p.continuations.len();
    // One tree: the context once, each label's fed tokens as its own branch.
    let branches: Vec<usize> = p.continuations.iter().map(|c| c.len() - 1).collect();
    let layout = TreeLayout::tree(nc, &branches);
    let n = layout.positions.len();
    let mut fed = Vec::with_capacity((n - nc) * d);
    let mut scored = Vec::new();
    let mut row = nc;
    for (g, c) in p.continuations.iter().enumerate() {
        fed.extend(dec.word_embeddings(&c[..c.len() - 1])?);
        for (t, &token) in c.iter().enumerate() {
            let from = if t == 0 { nc - 1 } else { row + t - 1 };
            scored.push(Scored {
                row: from,
                token,
                group: g,
            });
        }
        row += c.len() - 1;
    }
    let mut x = Vec::with_capacity(batch * n * d);
    for b in 0..batch {
        x.extend_from_slice(&inputs[b * nc * d..(b + 1) * nc * d]);
        x.extend_from_slice(&fed);
    }
    let (lls, tape) = dec.loglik_forward(&x, batch, &layout, &scored)?;
    let mut probs = Vec::with_capacity(batch);
    let mut upstream = vec![vec![0.0f32; k]; batch];
    for (b, ll) in lls.iter().enumerate() {
        let ll: Vec<f64> = ll.iter().zip(&p.divisors).map(|(v, d)| v / d).collect();
        let max = ll.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = ll.iter().map(|v| (v - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        let pr: Vec<f64> = e.iter().map(|v| v / sum).collect();
        let pt = pr[target];
        for (j, up) in upstream[b].iter_mut().enumerate() {
            let delta = f64::from(u8::from(j == target));
            *up = (match scale {
                TargetScale::Probability => pt * (delta - pr[j]),
                TargetScale::LogProbability => delta - pr[j],
            } / p.divisors[j]) as f32;
        }
        probs.push(pr);
    }
    if !grad {
        return Ok(TargetPass {
            probabilities: probs,
            gradients: None,
        });
    }
    let full = dec.loglik_backward(&tape, &upstream)?;
    let mut g = Vec::with_capacity(batch * nc * d);
    for b in 0..batch {
        g.extend_from_slice(&full[b * n * d..(b * n + nc) * d]);
    }
    Ok(TargetPass {
        probabilities: probs,
        gradients: Some(g),
    })
}

/// Explains `text` for a local decoder asked by `context` (the prompt holding the text).
pub fn attribute_decoder(
    dec: &Decoder,
    context: &str,
    text: &str,
    verbalizers: &[String],
    labels: &[String],
    target: Option<usize>,
    s: &ExplainSettings,
) -> Result<Attribution> {
    if text.trim().is_empty() {
        return Err(bad!("the text is empty: there is nothing to explain"));
    }
    let p = decoder_prompt(dec, context, text, verbalizers)?;
    attribute_prompt(dec, &p, text, labels, target, s)
}

/// [`attribute_decoder`] on a tokenized prompt.
pub fn attribute_prompt(
    dec: &Decoder,
    p: &DecoderPrompt,
    text: &str,
    labels: &[String],
    target: Option<usize>,
    s: &ExplainSettings,
) -> Result<Attribution> {
    let d = dec.config.hidden;
    let nc = p.context.len();
    let x = dec.word_embeddings(&p.context)?;
    let pad = match dec.config.pad_token_id {
        Some(id) if (id as usize) < dec.config.vocab_size => Some(dec.word_embeddings(&[id])?),
        _ => None,
    };
    let mut xb = x.clone();
    for (i, w) in p.token_words.iter().enumerate() {
        if w.is_some() {
            let row = &mut xb[i * d..(i + 1) * d];
            match &pad {
                Some(e) => row.copy_from_slice(e),
                None => row.fill(0.0),
            }
        }
    }
    let both: Vec<f32> = x.iter().chain(&xb).copied().collect();
    let probs = decoder_target(dec, p, &both, 2, 0, s.scale, false)?.probabilities;
    let probabilities = probs[0].clone();
    let predicted = crate::runner::argmax(&probabilities);
    let target = target.unwrap_or(predicted);
    if target >= labels.len() {
        return Err(bad!(
            "target class {target}: the model has {} labels",
            labels.len()
        ));
    }
    let f_of = |pr: &[f64]| match s.scale {
        TargetScale::Probability => pr[target],
        TargetScale::LogProbability => pr[target].ln(),
    };
    let (f_input, fb) = (f_of(&probs[0]), f_of(&probs[1]));
    let mut per_token = vec![0.0f64; nc];
    let (mut f_baseline, mut gap) = (None, None);
    match s.method {
        Method::IntegratedGradients => {
            if s.n_steps == 0 {
                return Err(bad!("--n-steps must be at least 1"));
            }
            if s.rule == IgRule::RiemannTrapezoid && s.n_steps < 2 {
                return Err(bad!(
                    "--ig-rule riemann-trapezoid needs --n-steps of at least 2"
                ));
            }
            let (steps, alphas) = steps_and_alphas(s.n_steps, s.rule);
            let diff: Vec<f32> = x.iter().zip(&xb).map(|(a, b)| a - b).collect();
            let mut total = vec![0.0f32; nc * d];
            let order: Vec<usize> = (0..alphas.len()).collect();
            for chunk in order.chunks(batch_bound(dec, p, s.internal_batch_size)) {
                let mut inputs = Vec::with_capacity(chunk.len() * nc * d);
                for &i in chunk {
                    let a = alphas[i] as f32;
                    inputs.extend(xb.iter().zip(&diff).map(|(b, df)| b + a * df));
                }
                let g = decoder_target(dec, p, &inputs, chunk.len(), target, s.scale, true)?
                    .gradients
                    .ok_or_else(|| fail!("no gradient"))?;
                for (j, &i) in chunk.iter().enumerate() {
                    let step = steps[i] as f32;
                    for (acc, gv) in total.iter_mut().zip(&g[j * nc * d..(j + 1) * nc * d]) {
                        *acc += gv * step;
                    }
                }
            }
            per_token = ig_scores(&total, &diff, d);
            f_baseline = Some(fb);
            gap = Some((per_token.iter().sum::<f64>() - (f_input - fb)).abs());
        }
        Method::Saliency | Method::InputXGradient => {
            let g = decoder_target(dec, p, &x, 1, target, s.scale, true)?
                .gradients
                .ok_or_else(|| fail!("no gradient"))?;
            per_token = gradient_scores(s.method, &g, &x, d);
        }
        Method::Occlusion | Method::Shapley => {
            return Err(fail!(
                "occlusion and shapley run on texts through the answer cache, not here"
            ))
        }
    }
    let word_scores = sum_by_word(p.words.len(), &p.token_words, &per_token);
    Ok(Attribution {
        target: labels[target].clone(),
        target_index: target,
        f_input,
        f_baseline,
        completeness_gap: gap,
        probabilities,
        predicted: labels[predicted].clone(),
        tokens: p
            .tokens
            .iter()
            .zip(&p.token_words)
            .zip(&per_token)
            .map(|(((piece, a, b), w), &score)| TokenScore {
                token: piece.clone(),
                start: *a,
                end: *b,
                special: w.is_none(),
                score,
                word: *w,
            })
            .collect(),
        words: word_list(text, &p.words, &word_scores),
        truncated: p.cut > 0,
        raw: per_token,
    })
}
