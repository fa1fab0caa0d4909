//! Taps: reading back what single launches of a step wrote, right after they run, and
//! (a testing hook) perturbing it before later launches read it. `fdpp check` taps the
//! launch that completes each node on every backend and compares the values node by node;
//! the perturbation lets anyone see the check find a node that was made to disagree.
//! Backends only execute taps; which launches to tap is the check's business.

use crate::error::{Error, Result};
use crate::lower::LoweredStep;

/// One launch to read back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tap {
    /// Index into `LoweredStep::launches`.
    pub launch: usize,
    /// Values to read from the start of the buffer the launch writes (`Template::io.y`).
    pub elements: usize,
    /// Perturb those values with [`perturb`] at this scale before any later launch runs.
    pub perturb: Option<f32>,
}

/// The values of each tap of a step, in the order of the taps.
pub type Tapped = Vec<Vec<f32>>;

/// The perturbation of the testing hook: `scale * max |y|`, with alternating sign, added
/// to every value. The values then differ from the unperturbed ones by exactly `scale`
/// relative to their largest magnitude, and point in another direction (a pure rescale
/// would leave the cosine similarity at 1). Non-finite values are left alone.
pub fn perturb(values: &mut [f32], scale: f32) {
    let max = values.iter().filter(|v| v.is_finite()).fold(0.0f32, |m, v| m.max(v.abs()));
    // An all-zero output still moves.
    let step = scale * if max > 0.0 { max } else { 1.0 };
    for (i, v) in values.iter_mut().enumerate() {
        *v += if i % 2 == 0 { step } else { -step };
    }
}

/// Checks `taps` against `step`: launches in range and in increasing order, one tap each.
pub fn validate(step: &LoweredStep, taps: &[Tap]) -> Result<()> {
    let n = step.launches.len();
    if let Some(t) = taps.iter().find(|t| t.launch >= n) {
        return Err(Error::InvalidArgument(format!("tap of launch {} but the step has {n} launches", t.launch)));
    }
    if taps.windows(2).any(|w| w[0].launch >= w[1].launch) {
        return Err(Error::InvalidArgument("taps must name launches in increasing order, each once".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_perturbation_moves_values_by_the_scale_relative_to_their_largest() {
        let want = [1.0f32, -4.0, 2.0, 0.5];
        let mut got = want;
        perturb(&mut got, 0.25);
        assert_eq!(got, [2.0, -5.0, 3.0, -0.5]);
        let e = crate::compare::max_error(&got, &want).unwrap();
        assert_eq!(e.rel, 0.25);
        let mut zeros = [0.0f32; 3];
        perturb(&mut zeros, 0.5);
        assert_eq!(zeros, [0.5, -0.5, 0.5]);
    }
}
