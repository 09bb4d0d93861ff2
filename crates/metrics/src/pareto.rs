//! The Pareto set of models over quality and cost.

/// Indices of the points no other point dominates: at least as good on quality (higher
/// is better) and at most as costly, strictly better on one. NaN quality never dominates.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    (0..points.len())
        .filter(|&i| {
            let (q, c) = points[i];
            !points
                .iter()
                .enumerate()
                .any(|(j, &(q2, c2))| j != i && q2 >= q && c2 <= c && (q2 > q || c2 < c))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dominated_points_drop_out() {
        // b is better and cheaper than a; c is better than b but costs more.
        let pts = [(0.5, 10.0), (0.6, 5.0), (0.7, 20.0), (0.6, 5.0)];
        assert_eq!(pareto_front(&pts), vec![1, 2, 3]);
        assert_eq!(pareto_front(&[]), Vec::<usize>::new());
    }
}
