//! Numeric comparison of a result with a reference, as every test and the cross-backend
//! check use it: a NaN or an infinity on either side, or a length mismatch, is an error,
//! never a small difference.

/// How far `got` is from `want`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MaxError {
    /// Largest |got - want|.
    pub abs: f64,
    /// Where it is.
    pub at: usize,
    /// Largest |want|.
    pub scale: f64,
    /// `abs / scale` (`abs` when the reference is all zeros).
    pub rel: f64,
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CompareError {
    #[error("lengths differ: {got} values against {want}")]
    Length { got: usize, want: usize },
    #[error("{side} value {index} is {value}")]
    NotFinite { side: &'static str, index: usize, value: f64 },
}

/// The largest difference between `got` and `want`.
pub fn max_error<W: Copy + Into<f64>>(got: &[f32], want: &[W]) -> Result<MaxError, CompareError> {
    if got.len() != want.len() {
        return Err(CompareError::Length { got: got.len(), want: want.len() });
    }
    let mut e = MaxError { abs: 0.0, at: 0, scale: 0.0, rel: 0.0 };
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w): (f64, f64) = (g.into(), w.into());
        if !g.is_finite() {
            return Err(CompareError::NotFinite { side: "got", index: i, value: g });
        }
        if !w.is_finite() {
            return Err(CompareError::NotFinite { side: "reference", index: i, value: w });
        }
        let d = (g - w).abs();
        if d > e.abs {
            e.abs = d;
            e.at = i;
        }
        e.scale = e.scale.max(w.abs());
    }
    e.rel = if e.scale > 0.0 { e.abs / e.scale } else { e.abs };
    Ok(e)
}

/// `max |got - want| / max |want|`, panicking with `what` on NaN, infinities or unequal
/// lengths (for tests).
pub fn rel_error<W: Copy + Into<f64>>(got: &[f32], want: &[W], what: &str) -> f64 {
    match max_error(got, want) {
        Ok(e) => e.rel,
        Err(e) => panic!("{what}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_infinity_and_length_mismatch_are_errors_not_small_differences() {
        let want = [1.0f64, 2.0, 3.0];
        assert!(matches!(max_error(&[1.0, f32::NAN, 3.0], &want), Err(CompareError::NotFinite { side: "got", index: 1, .. })));
        assert!(matches!(max_error(&[1.0, 2.0, f32::INFINITY], &want), Err(CompareError::NotFinite { index: 2, .. })));
        assert!(matches!(
            max_error(&[1.0, 2.0, 3.0], &[1.0, f64::NEG_INFINITY, 3.0]),
            Err(CompareError::NotFinite { side: "reference", .. })
        ));
        assert!(matches!(max_error(&[1.0, 2.0], &want), Err(CompareError::Length { got: 2, want: 3 })));
        assert!(matches!(max_error(&[], &want), Err(CompareError::Length { .. })));
        // The fold that used to be used here, `fold(0.0, f64::max)` over zipped values,
        // reports 0 for all three of these: NaN loses every max, zip stops at the shorter.
        let folded = [f64::NAN, 0.0].iter().fold(0.0, |a: f64, b| a.max(*b));
        assert_eq!(folded, 0.0);
    }

    #[test]
    fn errors_are_measured_against_the_largest_reference_value() {
        let e = max_error(&[1.0, 2.5, -4.0], &[1.0f32, 2.0, -4.0]).unwrap();
        assert_eq!((e.abs, e.at, e.scale, e.rel), (0.5, 1, 4.0, 0.125));
        assert_eq!(max_error(&[0.0], &[0.0f32]).unwrap().rel, 0.0);
        assert_eq!(rel_error(&[1.0, 2.0], &[1.0f64, 2.0], "same"), 0.0);
    }

    #[test]
    #[should_panic(expected = "lengths differ")]
    fn rel_error_panics_on_mismatch() {
        rel_error(&[1.0], &[1.0f64, 2.0], "short");
    }
}
