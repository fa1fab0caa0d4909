//! How far one backend's values are from the reference's: the largest absolute and relative
//! error (`compare::max_error`), the cosine similarity, and NaN / infinity counts on either
//! side (a non-finite value is never within tolerance); and, for logits, top-k overlap and
//! the margins that make a different pick excusable.

use serde::{Deserialize, Serialize};

use super::tolerance::Tolerance;
use crate::compare;
use crate::sampling::top_k;

/// NaNs and infinities of one side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NonFinite {
    pub nan: usize,
    pub inf: usize,
}

impl NonFinite {
    pub fn count(values: &[f32]) -> NonFinite {
        let nan = values.iter().filter(|v| v.is_nan()).count();
        NonFinite { nan, inf: values.iter().filter(|v| v.is_infinite()).count() }
    }

    pub fn any(&self) -> bool {
        self.nan + self.inf > 0
    }
}

/// Errors of finite values of equal length.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Errors {
    /// Largest |checked - reference|, and its index.
    pub max_abs: f64,
    pub at: usize,
    /// `max_abs / max |reference|`.
    pub rel: f64,
    /// 1 - cosine similarity (0 when both are all zeros).
    pub cos_distance: f64,
}

/// One compared tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub elements: usize,
    pub reference: NonFinite,
    pub checked: NonFinite,
    /// `None` when a side has non-finite values or the lengths differ (then never within).
    pub errors: Option<Errors>,
}

impl Metrics {
    pub fn of(checked: &[f32], reference: &[f32]) -> Metrics {
        let errors = compare::max_error(checked, reference).ok().map(|e| Errors {
            max_abs: e.abs,
            at: e.at,
            rel: e.rel,
            // Rounding can put the cosine of equal vectors a hair above 1.
            cos_distance: (1.0 - cosine(checked, reference)).max(0.0),
        });
        Metrics { elements: reference.len(), reference: NonFinite::count(reference), checked: NonFinite::count(checked), errors }
    }

    pub fn within(&self, tol: &Tolerance) -> bool {
        self.errors.is_some_and(|e| e.rel <= tol.rel && e.cos_distance <= tol.cos_distance)
    }
}

/// The cosine similarity in f64 (1 for two zero vectors, 0 for one).
fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    match (aa > 0.0, bb > 0.0) {
        (false, false) => 1.0,
        (true, true) => ab / (aa.sqrt() * bb.sqrt()),
        _ => 0.0,
    }
}

/// The top-k of one row of logits on both sides.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogitsComparison {
    /// The reference's and the checked backend's `k` best (id, logit), best first.
    pub reference_top: Vec<(u32, f32)>,
    pub checked_top: Vec<(u32, f32)>,
    /// Ids the two top-k share.
    pub overlap: usize,
    /// The reference's top-1 logit minus its top-2 logit.
    pub reference_margin: f32,
    /// How close (in reference logits) an id the checked backend ranks differently may lie
    /// to the one it replaces: the logits' relative tolerance times max |reference logit|.
    pub band: f32,
    /// Both pick the same id.
    pub argmax_agrees: bool,
    /// Every id the checked backend puts into its top-k (or picks) in place of one of the
    /// reference's lies within `band` of the one it replaces, in the reference's logits.
    pub within: bool,
}

impl LogitsComparison {
    /// Compares one row of logits (`checked` against `reference`, equal lengths) with
    /// `k` and the logits' tolerance.
    pub fn of(checked: &[f32], reference: &[f32], k: usize, tol: &Tolerance) -> LogitsComparison {
        let (reference_top, checked_top) = (top_k(reference, k + 1), top_k(checked, k));
        let reference_margin = match reference_top[..] {
            [(_, a), (_, b), ..] => a - b,
            _ => f32::INFINITY,
        };
        let reference_top = reference_top.into_iter().take(k).collect::<Vec<_>>();
        let scale = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let band = (tol.rel * scale as f64) as f32;
        let in_reference_top = |id: u32| reference_top.iter().any(|&(r, _)| r == id);
        let overlap = checked_top.iter().filter(|&&(id, _)| in_reference_top(id)).count();
        let kth = reference_top.last().map_or(f32::NEG_INFINITY, |&(_, v)| v);
        let argmax_agrees = reference_top.first().map(|t| t.0) == checked_top.first().map(|t| t.0);
        // An outsider must be a near-tie with the reference's k-th; a different top pick a
        // near-tie with the reference's top-1.
        let outsiders_close = checked_top.iter().all(|&(id, _)| in_reference_top(id) || reference[id as usize] >= kth - band);
        let pick_close = argmax_agrees || checked_top.first().is_some_and(|&(id, _)| reference[id as usize] >= reference_top[0].1 - band);
        let finite = checked.iter().chain(reference).all(|v| v.is_finite());
        LogitsComparison {
            reference_top,
            checked_top,
            overlap,
            reference_margin,
            band,
            argmax_agrees,
            within: finite && outsiders_close && pick_close,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_count_non_finite_values_and_never_pass_them() {
        let tol = Tolerance { rel: 1.0, cos_distance: 1.0 };
        let m = Metrics::of(&[1.0, f32::NAN, f32::INFINITY], &[1.0, 2.0, 3.0]);
        assert_eq!((m.checked, m.reference), (NonFinite { nan: 1, inf: 1 }, NonFinite::default()));
        assert!(m.errors.is_none() && !m.within(&tol));
        assert!(!Metrics::of(&[1.0], &[1.0, 2.0]).within(&tol), "unequal lengths");
        let m = Metrics::of(&[1.0, 2.2], &[1.0, 2.0]);
        let e = m.errors.unwrap();
        assert!((e.max_abs - 0.2).abs() < 1e-6 && e.at == 1 && (e.rel - 0.1).abs() < 1e-6);
        assert!(m.within(&Tolerance { rel: 0.11, cos_distance: 1e-2 }) && !m.within(&Tolerance { rel: 0.09, cos_distance: 1e-2 }));
        // A rescale keeps the direction: only the relative error sees it.
        let e = Metrics::of(&[2.0, 4.0], &[1.0, 2.0]).errors.unwrap();
        assert!(e.cos_distance < 1e-12 && e.rel == 1.0);
        assert_eq!(cosine(&[0.0, 0.0], &[0.0, 0.0]), 1.0);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 0.0]), 0.0);
    }

    #[test]
    fn logits_may_swap_only_near_ties() {
        let tol = Tolerance { rel: 0.01, cos_distance: 1.0 };
        let reference = [10.0f32, 9.95, 5.0, 1.0];
        // Top-1 swapped within the band (0.01 * 10 = 0.1): excused.
        let c = LogitsComparison::of(&[9.9, 9.96, 5.0, 1.0], &reference, 2, &tol);
        assert!(!c.argmax_agrees && c.within && c.overlap == 2);
        assert!((c.reference_margin - 0.05).abs() < 1e-6);
        // A far outsider in the top-2: not excused.
        let c = LogitsComparison::of(&[10.0, 1.0, 5.0, 9.0], &reference, 2, &tol);
        assert!(c.argmax_agrees && !c.within && c.overlap == 1);
        assert!(!LogitsComparison::of(&[f32::NAN, 9.95, 5.0, 1.0], &reference, 2, &tol).within);
    }
}
