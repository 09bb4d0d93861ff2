//! Linear probe: multinomial logistic regression with L2 on frozen embeddings, fitted by
//! L-BFGS. Deterministic (no random initialisation), so a seed is not even needed.
//!
//! Objective, as scikit-learn's `LogisticRegression(C)`: ½‖W‖² + C · Σᵢ CE(xᵢ, yᵢ) over
//! standardised features; the intercept is not penalised.

pub struct Probe {
    k: usize,
    d: usize,
    mean: Vec<f64>,
    scale: Vec<f64>,
    /// k × (d + 1), intercept last.
    w: Vec<f64>,
    pub iterations: usize,
    pub converged: bool,
}

pub struct ProbeOptions {
    pub c: f64,
    pub max_iter: usize,
    pub tolerance: f64,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            c: 1.0,
            max_iter: 500,
            tolerance: 1e-6,
        }
    }
}

/// Dot product with 8 independent accumulators: an ordered float sum cannot be vectorised,
/// and this is the probe's whole cost.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f64>() + tail
}

impl Probe {
    pub fn fit(x: &[Vec<f32>], y: &[usize], k: usize, opts: &ProbeOptions) -> Probe {
        let n = x.len();
        let d = x.first().map_or(0, Vec::len);
        let mut mean = vec![0.0; d];
        for row in x {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += *v as f64 / n as f64;
            }
        }
        let mut scale = vec![0.0; d];
        for row in x {
            for ((s, v), m) in scale.iter_mut().zip(row).zip(&mean) {
                *s += (*v as f64 - m).powi(2) / n as f64;
            }
        }
        for s in &mut scale {
            *s = if *s > 0.0 { s.sqrt() } else { 1.0 };
        }
        let z: Vec<Vec<f64>> = x
            .iter()
            .map(|row| {
                let mut r: Vec<f64> = row
                    .iter()
                    .zip(&mean)
                    .zip(&scale)
                    .map(|((v, m), s)| (*v as f64 - m) / s)
                    .collect();
                r.push(1.0);
                r
            })
            .collect();
        let dim = k * (d + 1);
        let objective = |w: &[f64], grad: &mut [f64]| -> f64 {
            grad.fill(0.0);
            let mut loss = 0.0;
            let mut logits = vec![0.0; k];
            for (row, &yi) in z.iter().zip(y) {
                for c in 0..k {
                    logits[c] = dot(&w[c * (d + 1)..(c + 1) * (d + 1)], row);
                }
                let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = logits.iter().map(|l| (l - max).exp()).sum();
                let lse = max + sum.ln();
                loss += opts.c * (lse - logits[yi]);
                for c in 0..k {
                    let p = (logits[c] - lse).exp() - if c == yi { 1.0 } else { 0.0 };
                    let g = &mut grad[c * (d + 1)..(c + 1) * (d + 1)];
                    for (gj, xj) in g.iter_mut().zip(row) {
                        *gj += opts.c * p * xj;
                    }
                }
            }
            for c in 0..k {
                for j in 0..d {
                    let i = c * (d + 1) + j;
                    loss += 0.5 * w[i] * w[i];
                    grad[i] += w[i];
                }
            }
            loss
        };
        let (w, iterations, converged) = lbfgs(dim, objective, opts.max_iter, opts.tolerance);
        Probe {
            k,
            d,
            mean,
            scale,
            w,
            iterations,
            converged,
        }
    }

    /// (classes, features, feature means, feature scales, weights `k × (d + 1)` with the
    /// intercept last): what a differentiable copy of the probe needs.
    pub fn parameters(&self) -> (usize, usize, &[f64], &[f64], &[f64]) {
        (self.k, self.d, &self.mean, &self.scale, &self.w)
    }

    pub fn predict_proba(&self, x: &[f32]) -> Vec<f64> {
        let mut row: Vec<f64> = x
            .iter()
            .zip(&self.mean)
            .zip(&self.scale)
            .map(|((v, m), s)| (*v as f64 - m) / s)
            .collect();
        row.push(1.0);
        let logits: Vec<f64> = (0..self.k)
            .map(|c| dot(&self.w[c * (self.d + 1)..(c + 1) * (self.d + 1)], &row))
            .collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }
}

/// Limited-memory BFGS (m = 10) with a backtracking Armijo line search, from w = 0.
fn lbfgs(
    dim: usize,
    f: impl Fn(&[f64], &mut [f64]) -> f64,
    max_iter: usize,
    tol: f64,
) -> (Vec<f64>, usize, bool) {
    const M: usize = 10;
    let mut w = vec![0.0; dim];
    let mut g = vec![0.0; dim];
    let mut fx = f(&w, &mut g);
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    let mut g_new = vec![0.0; dim];
    for it in 0..max_iter {
        let gnorm = dot(&g, &g).sqrt();
        if gnorm <= tol * (1.0 + fx.abs()) {
            return (w, it, true);
        }
        // Two-loop recursion for the direction −H·g.
        let mut q = g.clone();
        let mut alpha = vec![0.0; s_hist.len()];
        for i in (0..s_hist.len()).rev() {
            let rho = 1.0 / dot(&y_hist[i], &s_hist[i]);
            alpha[i] = rho * dot(&s_hist[i], &q);
            for (qj, yj) in q.iter_mut().zip(&y_hist[i]) {
                *qj -= alpha[i] * yj;
            }
        }
        if let (Some(s), Some(y)) = (s_hist.last(), y_hist.last()) {
            let gamma = dot(s, y) / dot(y, y);
            for qj in q.iter_mut() {
                *qj *= gamma;
            }
        }
        for i in 0..s_hist.len() {
            let rho = 1.0 / dot(&y_hist[i], &s_hist[i]);
            let beta = rho * dot(&y_hist[i], &q);
            for (qj, sj) in q.iter_mut().zip(&s_hist[i]) {
                *qj += (alpha[i] - beta) * sj;
            }
        }
        let mut dir: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&dir, &g);
        if slope >= 0.0 {
            // Not a descent direction: restart from steepest descent.
            dir = g.iter().map(|v| -v).collect();
            slope = -dot(&g, &g);
            s_hist.clear();
            y_hist.clear();
        }
        let mut step = if s_hist.is_empty() {
            1.0 / gnorm.max(1.0)
        } else {
            1.0
        };
        let mut w_new;
        let mut f_new;
        loop {
            w_new = w
                .iter()
                .zip(&dir)
                .map(|(a, b)| a + step * b)
                .collect::<Vec<_>>();
            f_new = f(&w_new, &mut g_new);
            if f_new <= fx + 1e-4 * step * slope || step < 1e-12 {
                break;
            }
            step *= 0.5;
        }
        let s: Vec<f64> = w_new.iter().zip(&w).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
        let improvement = fx - f_new;
        w = w_new;
        fx = f_new;
        std::mem::swap(&mut g, &mut g_new);
        if dot(&s, &y) > 1e-12 {
            s_hist.push(s);
            y_hist.push(y);
            if s_hist.len() > M {
                s_hist.remove(0);
                y_hist.remove(0);
            }
        }
        if improvement.abs() <= tol * tol * (1.0 + fx.abs()) && step < 1e-10 {
            return (w, it + 1, false);
        }
    }
    (w, max_iter, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_separable_classes_and_probabilities_sum_to_one() {
        let x: Vec<Vec<f32>> = (0..60)
            .map(|i| {
                let c = (i % 3) as f32;
                vec![
                    c + 0.1 * ((i * 7 % 5) as f32),
                    -c + 0.05 * ((i * 3 % 4) as f32),
                ]
            })
            .collect();
        let y: Vec<usize> = (0..60).map(|i| i % 3).collect();
        let p = Probe::fit(&x, &y, 3, &ProbeOptions::default());
        assert!(p.converged, "{} iterations", p.iterations);
        for (row, &yi) in x.iter().zip(&y) {
            let pr = p.predict_proba(row);
            assert!((pr.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            let best = (0..3).max_by(|&a, &b| pr[a].total_cmp(&pr[b])).unwrap();
            assert_eq!(best, yi);
        }
    }
}
