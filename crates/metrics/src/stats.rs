//! Small statistical building blocks: quantiles, exact binomial and chi-square tails,
//! multiple-comparison corrections and multinomial resampling.

use rand::Rng;
use rand_distr::{Binomial, Distribution};
use rand_xoshiro::rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

/// NumPy's default (`method="linear"`) quantile of an ascending-sorted slice.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let h = (n - 1) as f64 * q;
            let lo = h.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            let frac = h - lo as f64;
            // NumPy's _lerp, including its symmetric form for frac ≥ 0.5.
            let (a, b) = (sorted[lo], sorted[hi]);
            let diff = b - a;
            if frac >= 0.5 {
                b - diff * (1.0 - frac)
            } else {
                a + diff * frac
            }
        }
    }
}

fn ln_choose(n: u64, k: u64) -> f64 {
    libm::lgamma(n as f64 + 1.0) - libm::lgamma(k as f64 + 1.0) - libm::lgamma((n - k) as f64 + 1.0)
}

/// P(X ≤ k) for X ~ Binomial(n, 1/2), summed exactly in log space.
pub fn binomial_half_cdf(k: u64, n: u64) -> f64 {
    if k >= n {
        return 1.0;
    }
    let ln_half_n = n as f64 * std::f64::consts::LN_2;
    let mut total = 0.0;
    for i in 0..=k {
        total += (ln_choose(n, i) - ln_half_n).exp();
    }
    total.min(1.0)
}

/// Upper tail of the chi-square distribution with one degree of freedom.
pub fn chi2_sf_1(x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    libm::erfc((x / 2.0).sqrt())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Correction {
    /// Holm–Bonferroni step-down (controls the family-wise error rate).
    #[default]
    Holm,
    /// Benjamini–Hochberg (controls the false discovery rate).
    BenjaminiHochberg,
    None,
}

impl std::str::FromStr for Correction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "holm" => Ok(Correction::Holm),
            "bh" | "fdr_bh" => Ok(Correction::BenjaminiHochberg),
            "none" => Ok(Correction::None),
            _ => Err(format!("--correction must be holm, bh or none, not {s:?}")),
        }
    }
}

impl Correction {
    pub fn key(self) -> &'static str {
        match self {
            Correction::Holm => "holm",
            Correction::BenjaminiHochberg => "bh",
            Correction::None => "none",
        }
    }
}

/// Adjusted p-values in input order, as statsmodels' `multipletests`.
pub fn adjust_p_values(p: &[f64], correction: Correction) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut adjusted = vec![0.0; m];
    match correction {
        Correction::None => return p.to_vec(),
        Correction::Holm => {
            let mut running = 0.0f64;
            for (rank, &i) in order.iter().enumerate() {
                running = running.max(p[i] * (m - rank) as f64);
                adjusted[i] = running.min(1.0);
            }
        }
        Correction::BenjaminiHochberg => {
            let mut running = f64::INFINITY;
            for (rank, &i) in order.iter().enumerate().rev() {
                running = running.min(p[i] * m as f64 / (rank + 1) as f64);
                adjusted[i] = running.min(1.0);
            }
        }
    }
    adjusted
}

/// The random stream of resample `index` under `seed`: independent of thread scheduling,
/// so results are identical whatever the thread count.
pub(crate) fn stream(seed: u64, index: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Draws `Multinomial(total, counts / total)` into `out` by conditional binomials: a
/// bootstrap resample of examples, seen only through which cell each one falls in.
pub(crate) fn multinomial<R: Rng>(rng: &mut R, counts: &[u64], out: &mut [u64]) {
    let mut left_n: u64 = counts.iter().sum();
    let mut left_mass = left_n;
    for (c, o) in counts.iter().zip(out.iter_mut()) {
        if left_n == 0 || left_mass == 0 {
            *o = 0;
            continue;
        }
        let x = if *c >= left_mass {
            left_n
        } else {
            let p = *c as f64 / left_mass as f64;
            match Binomial::new(left_n, p) {
                Ok(b) => b.sample(rng),
                Err(_) => 0,
            }
        };
        *o = x;
        left_n -= x;
        left_mass -= c;
    }
}

/// Multiplicities of a bootstrap resample of `n` examples (drawn with replacement).
pub(crate) fn resample_counts<R: Rng>(rng: &mut R, w: &mut [u32]) {
    let n = w.len();
    w.fill(0);
    let n32 = u32::try_from(n).unwrap_or(u32::MAX);
    for _ in 0..n {
        w[rng.gen_range(0..n32) as usize] += 1;
    }
}

/// The same draw into one byte per example, which keeps the multiplicities of a few hundred
/// thousand examples in L2 cache for the random-access passes. Returns false if some
/// example was drawn more than 255 times (then redo the same stream with `resample_counts`).
pub(crate) fn resample_counts_u8<R: Rng>(rng: &mut R, w: &mut [u8]) -> bool {
    let n = w.len();
    w.fill(0);
    let mut fits = true;
    // 32-bit draws (exact, by rejection) are cheaper than 64-bit ones.
    let n32 = u32::try_from(n).unwrap_or(u32::MAX);
    for _ in 0..n {
        let slot = &mut w[rng.gen_range(0..n32) as usize];
        let (v, overflow) = slot.overflowing_add(1);
        *slot = v;
        fits &= !overflow;
    }
    fits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_tail_matches_closed_form() {
        // P(X ≤ 1), n = 5: (1 + 5) / 32
        assert!((binomial_half_cdf(1, 5) - 6.0 / 32.0).abs() < 1e-15);
        assert_eq!(binomial_half_cdf(5, 5), 1.0);
    }

    #[test]
    fn chi2_tail_at_known_points() {
        // chi2(1) critical value at 0.05 is 3.841458820694124
        assert!((chi2_sf_1(3.841458820694124) - 0.05).abs() < 1e-12);
    }

    #[test]
    fn multinomial_preserves_total() {
        let mut rng = stream(7, 1);
        let counts = [5u64, 0, 10, 85];
        let mut out = [0u64; 4];
        for _ in 0..100 {
            multinomial(&mut rng, &counts, &mut out);
            assert_eq!(out.iter().sum::<u64>(), 100);
            assert_eq!(out[1], 0);
        }
    }
}
