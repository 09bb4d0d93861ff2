//! Multiple-choice accuracies as lm-evaluation-harness defines them: `acc` (the choice with
//! the highest summed log-likelihood), `acc_norm` (per character), `acc_bytes` (per UTF-8
//! byte), and circular accuracy (right under every rotation of the listed choices, which
//! exposes position bias).

/// One choice's log-likelihood and the lengths it can be normalised by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChoiceScore {
    pub loglik: f64,
    pub tokens: usize,
    pub chars: usize,
    pub bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalization {
    None,
    Tokens,
    Chars,
    Bytes,
}

/// The scores compared between choices, under `norm`. They are compared in f32, as the
/// softmax over labels is computed from them.
pub fn normalized(scores: &[ChoiceScore], norm: Normalization) -> Vec<f32> {
    scores
        .iter()
        .map(|s| match norm {
            Normalization::None => s.loglik as f32,
            Normalization::Tokens => (s.loglik / s.tokens as f64) as f32,
            Normalization::Chars => (s.loglik / s.chars.max(1) as f64) as f32,
            Normalization::Bytes => (s.loglik / s.bytes.max(1) as f64) as f32,
        })
        .collect()
}

/// The first index of the largest value.
pub fn first_argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |b, (i, x)| {
        if f64::from(*x) > f64::from(v[b]) {
            i
        } else {
            b
        }
    })
}

/// (right, scored) for each accuracy, and where the picks were listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChoiceTallies {
    pub acc: (usize, usize),
    pub acc_norm: (usize, usize),
    pub acc_bytes: (usize, usize),
    pub circular: (usize, usize),
    /// How often the highest-scored choice (unnormalised) was listed at each position, over
    /// every rotation: the position bias of circular runs, where each answer is equally
    /// often at each position.
    pub picked_position: Vec<usize>,
}

impl ChoiceTallies {
    /// Adds one question. `rotations[r][c]` is choice c's score (c in the original order)
    /// when the listing is rotated by r; rotation 0 is the listing as given.
    pub fn add(&mut self, rotations: &[Vec<ChoiceScore>], gold: usize) {
        let Some(scores) = rotations.first() else {
            return;
        };
        for (t, norm) in [
            (&mut self.acc, Normalization::None),
            (&mut self.acc_norm, Normalization::Chars),
            (&mut self.acc_bytes, Normalization::Bytes),
        ] {
            t.0 += usize::from(first_argmax(&normalized(scores, norm)) == gold);
            t.1 += 1;
        }
        self.circular.0 += usize::from(
            rotations
                .iter()
                .all(|r| first_argmax(&normalized(r, Normalization::None)) == gold),
        );
        self.circular.1 += 1;
        // Rotation r lists choice (j + r) mod k at position j.
        let k = scores.len();
        if self.picked_position.len() < k {
            self.picked_position.resize(k, 0);
        }
        for (r, s) in rotations.iter().enumerate() {
            let c = first_argmax(&normalized(s, Normalization::None));
            self.picked_position[(c + k - r % k) % k] += 1;
        }
    }

    /// right / scored, None when nothing was scored.
    pub fn rate(t: (usize, usize)) -> Option<f64> {
        (t.1 > 0).then(|| t.0 as f64 / t.1 as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(loglik: f64, chars: usize) -> ChoiceScore {
        ChoiceScore {
            loglik,
            tokens: 1,
            chars,
            bytes: chars,
        }
    }

    #[test]
    fn acc_and_acc_norm_can_disagree_and_circular_needs_every_rotation() {
        let mut t = ChoiceTallies::default();
        // Summed, the short choice wins; per character, the long one.
        t.add(&[vec![s(-2.0, 2), s(-3.0, 10)]], 1);
        assert_eq!(t.acc, (0, 1));
        assert_eq!(t.acc_norm, (1, 1));
        // Right as listed, wrong after rotation: not circular-correct.
        t.add(
            &[vec![s(-1.0, 1), s(-2.0, 1)], vec![s(-3.0, 1), s(-2.0, 1)]],
            0,
        );
        assert_eq!(t.acc, (1, 2));
        assert_eq!(t.circular, (0, 2));
        assert_eq!(ChoiceTallies::rate(t.acc), Some(0.5));
        assert_eq!(ChoiceTallies::rate((0, 0)), None);
    }

    #[test]
    fn a_model_that_always_picks_the_first_listed_choice_shows_in_picked_position() {
        let mut t = ChoiceTallies::default();
        // Rotation r lists choice r first; this model scores whatever is listed first best.
        let k = 3;
        let rotations: Vec<Vec<ChoiceScore>> = (0..k)
            .map(|r| {
                (0..k)
                    .map(|c| s(if c == r { -1.0 } else { -5.0 }, 3))
                    .collect()
            })
            .collect();
        t.add(&rotations, 1);
        t.add(&rotations, 2);
        assert_eq!(t.picked_position, vec![6, 0, 0]);
        assert_eq!(t.circular, (0, 2));
        // An unbiased model that always knows the answer picks each position once per question.
        let mut u = ChoiceTallies::default();
        let right: Vec<Vec<ChoiceScore>> = (0..k)
            .map(|_| {
                (0..k)
                    .map(|c| s(if c == 2 { -1.0 } else { -5.0 }, 3))
                    .collect()
            })
            .collect();
        u.add(&right, 2);
        assert_eq!(u.picked_position, vec![1, 1, 1]);
        assert_eq!(u.circular, (1, 1));
    }
}
