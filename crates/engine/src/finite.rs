//! The finite-value check between stages of a forward pass. A NaN or infinity in weights or
//! a broken config (a negative `layer_norm_eps`) otherwise flows silently into
//! probabilities that print as `null` and a label picked from garbage. Scanning a stage's
//! output is one pass over `rows × hidden` values, against the `rows × hidden²` of the
//! stage itself, so it is always on.

use crate::EngineError;

/// The first value that is not finite, as (index, value).
pub fn first_non_finite(values: &[f32]) -> Option<(usize, f32)> {
    // Summing is vectorised and a NaN or ±inf anywhere makes the sum non-finite; only a
    // failing slice pays for the search.
    let sum: f32 = values.iter().map(|v| v * 0.0).sum();
    if sum == 0.0 {
        return None;
    }
    values
        .iter()
        .position(|v| !v.is_finite())
        .map(|i| (i, values[i]))
}

/// `Err(NonFinite)` naming `stage` and the input whose row holds the first bad value.
/// `row_of_input` maps a row of `values` (each `width` wide) to the input it belongs to.
pub fn check_rows(
    values: &[f32],
    width: usize,
    stage: impl FnOnce() -> String,
    row_of_input: impl FnOnce(usize) -> usize,
) -> crate::Result<()> {
    match first_non_finite(values) {
        None => Ok(()),
        Some((i, value)) => Err(EngineError::NonFinite {
            input: row_of_input(i / width.max(1)),
            stage: stage(),
            value: describe(value),
        }),
    }
}

/// The sequence that row `row` of a packed batch with `offsets` belongs to.
pub fn sequence_of_row(offsets: &[usize], row: usize) -> usize {
    offsets.partition_point(|&o| o <= row).saturating_sub(1)
}

pub fn describe(v: f32) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v > 0.0 {
        "+inf".into()
    } else {
        "-inf".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_bad_value_and_its_sequence() {
        assert_eq!(first_non_finite(&[1.0, 2.0, -3.0]), None);
        let v = [0.0, 1.0, f32::INFINITY, f32::NAN];
        assert_eq!(first_non_finite(&v).map(|x| x.0), Some(2));
        // Two sequences of 2 and 3 rows: row 3 is the second sequence's.
        assert_eq!(sequence_of_row(&[0, 2, 5], 3), 1);
        assert_eq!(sequence_of_row(&[0, 2, 5], 1), 0);
        let err = check_rows(&v, 2, || "layer 0".into(), |r| r).unwrap_err();
        match err {
            EngineError::NonFinite {
                input,
                stage,
                value,
            } => {
                assert_eq!(
                    (input, stage.as_str(), value.as_str()),
                    (1, "layer 0", "+inf")
                );
            }
            other => panic!("{other}"),
        }
        // Huge finite values do not overflow the check.
        assert_eq!(first_non_finite(&[f32::MAX, f32::MAX]), None);
    }
}
