//! The `invalid` column: a model that classifies by generating text may answer something
//! that names no label. Such answers are predictions of their own (never gold), counted in
//! a last confusion-matrix column instead of being dropped or guessed.

/// `matrix` (gold rows × predicted columns, the first `selected` columns being the
/// dataset's labels) with the predicted-only columns replaced by one column holding
/// `invalid_by_gold[g]`, the answers naming no label for gold label g.
pub fn with_invalid_column(
    matrix: &[Vec<u64>],
    selected: usize,
    invalid_by_gold: &[u64],
) -> Vec<Vec<u64>> {
    matrix
        .iter()
        .enumerate()
        .map(|(g, row)| match invalid_by_gold.get(g) {
            Some(&c) => {
                let mut r: Vec<u64> = row.iter().take(selected).copied().collect();
                r.push(c);
                r
            }
            None => row.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_invalid_column_replaces_predicted_only_columns() {
        let m = vec![vec![3, 1, 9], vec![0, 2, 9], vec![0, 0, 0]];
        assert_eq!(
            with_invalid_column(&m, 2, &[1, 4]),
            vec![vec![3, 1, 1], vec![0, 2, 4], vec![0, 0, 0]]
        );
    }
}
