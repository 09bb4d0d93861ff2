//! Scores of generated answers against references, as SQuAD defines them (and
//! lm-evaluation-harness reuses): normalisation, exact match, token-level F1.

use std::collections::HashMap;

/// SQuAD's answer normalisation: lower case, ASCII punctuation and the articles a/an/the
/// removed, whitespace collapsed.
pub fn normalize_answer(s: &str) -> String {
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

/// 1 when the normalised answers are equal, else 0.
pub fn exact_match(pred: &str, gold: &str) -> f64 {
    f64::from(u8::from(normalize_answer(pred) == normalize_answer(gold)))
}

/// SQuAD's token F1 between a prediction and one reference (1 when both normalise to
/// nothing, 0 when only one does).
pub fn token_f1(pred: &str, gold: &str) -> f64 {
    let p = normalize_answer(pred);
    let g = normalize_answer(gold);
    let p: Vec<&str> = p.split(' ').filter(|w| !w.is_empty()).collect();
    let g: Vec<&str> = g.split(' ').filter(|w| !w.is_empty()).collect();
    if p.is_empty() || g.is_empty() {
        return f64::from(u8::from(p == g));
    }
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for w in &g {
        *counts.entry(w).or_default() += 1;
    }
    let mut common = 0i64;
    for w in &p {
        if let Some(c) = counts.get_mut(w) {
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

/// (exact match, F1) of `pred`, each the best over the acceptable `references`.
pub fn best_over_references(pred: &str, references: &[String]) -> (f64, f64) {
    references.iter().fold((0.0f64, 0.0f64), |acc, g| {
        (
            acc.0.max(exact_match(pred, g)),
            acc.1.max(token_f1(pred, g)),
        )
    })
}

/// Bits per UTF-8 byte from a total negative log-likelihood in nats: comparable across
/// tokenizers, unlike per-token perplexity.
pub fn bits_per_byte(nll_nats: f64, bytes: usize) -> f64 {
    nll_nats / (std::f64::consts::LN_2 * bytes.max(1) as f64)
}

/// Per-token perplexity, exp(total NLL / tokens).
pub fn token_perplexity(nll_nats: f64, tokens: usize) -> f64 {
    (nll_nats / tokens.max(1) as f64).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squad_normalisation_and_f1() {
        assert_eq!(normalize_answer("The  Eiffel Tower!"), "eiffel tower");
        assert_eq!(token_f1("the Eiffel Tower", "Eiffel tower"), 1.0);
        // 2 common of 3 predicted and 2 gold: P = 2/3, R = 1, F1 = 0.8.
        assert!((token_f1("Paris France Europe", "paris, france") - 0.8).abs() < 1e-12);
        assert_eq!(token_f1("London", "Paris"), 0.0);
        assert_eq!(token_f1("", "the"), 1.0);
        assert_eq!(
            best_over_references(" Blue", &["red".into(), "blue".into()]),
            (1.0, 1.0)
        );
    }

    #[test]
    fn bits_per_byte_is_nats_over_ln2_bytes() {
        assert!((bits_per_byte(std::f64::consts::LN_2 * 8.0, 4) - 2.0).abs() < 1e-12);
        assert!((token_perplexity(2.0f64.ln() * 3.0, 3) - 2.0).abs() < 1e-12);
    }
}
