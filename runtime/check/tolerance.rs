//! How far two backends may disagree: per precision pair and per op of the compared tensor,
//! a relative error (max |a - b| / max |reference|) and a cosine distance (1 - cosine
//! similarity). The numbers come from measurement (`fdpp check` on the tiny random Llama and
//! SmolLM2-135M, CPU against wgpu on lavapipe; ARCHITECTURE.md lists the measured values and
//! the margins): `default` leaves room for other devices and drivers, `strict` little more
//! than the measured values.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lower::caps::BackendCaps;
use crate::tensor::DType;

/// Which set of tolerances a check uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToleranceProfile {
    /// The measured errors with a wide margin (other GPUs reduce in other orders).
    #[default]
    Default,
    /// The measured errors with a small margin: catches small regressions on the machine
    /// the numbers were measured on.
    Strict,
}

impl FromStr for ToleranceProfile {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "default" => Ok(ToleranceProfile::Default),
            "strict" => Ok(ToleranceProfile::Strict),
            other => Err(Error::InvalidArgument(format!("unknown tolerance profile `{other}` (known: default, strict)"))),
        }
    }
}

/// What is stored in lower precision on either side of a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precision {
    /// f32 weights and KV cache on both backends.
    F32,
    /// f16 weights on one of them (activations and KV cache in f32).
    F16Weights,
    /// f16 weights and an f16 KV cache on one of them (CUDA with f16 weights).
    F16Kv,
}

impl Precision {
    /// The lowest precision of either backend.
    pub fn of(a: &BackendCaps, b: &BackendCaps) -> Precision {
        let half = |d: DType| d != DType::F32;
        if half(a.kv_dtype) || half(b.kv_dtype) {
            Precision::F16Kv
        } else if half(a.weight_dtype) || half(b.weight_dtype) {
            Precision::F16Weights
        } else {
            Precision::F32
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32 vs f32",
            Precision::F16Weights => "f16 weights",
            Precision::F16Kv => "f16 weights and KV cache",
        }
    }
}

/// How far one compared tensor may be from the reference.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tolerance {
    /// Largest max |a - b| / max |reference|.
    pub rel: f64,
    /// Largest 1 - cosine similarity.
    pub cos_distance: f64,
}

/// The kinds of compared tensors with tolerances of their own: the ops' kind names, and
/// `logits` for the model's output.
pub const KINDS: [&str; 9] = ["embedding", "rms_norm", "linear", "rope", "attention", "swiglu", "add", "select_rows", "logits"];

/// (relative error, cosine distance) per kind in `KINDS` order, for `Default`; `Strict`
/// divides by `STRICT_DIVISOR`. See ARCHITECTURE.md, "fdpp check", for the measurements.
const F32: [(f64, f64); 9] =
    [(1e-6, 1e-9), (1e-4, 1e-7), (1e-4, 1e-7), (1e-4, 1e-7), (1e-4, 1e-7), (1e-4, 1e-7), (1e-4, 1e-7), (1e-4, 1e-7), (1e-4, 1e-7)];
const F16_WEIGHTS: [(f64, f64); 9] =
    [(1e-3, 1e-6), (5e-2, 1e-3), (5e-2, 1e-3), (5e-2, 1e-3), (5e-2, 1e-3), (5e-2, 1e-3), (5e-2, 1e-3), (5e-2, 1e-3), (5e-2, 1e-3)];
/// Not measured yet (no f16 KV cache on the CPU or wgpu): the f16-weights values until the
/// CUDA backend's check on the H200 measures them.
const F16_KV: [(f64, f64); 9] = F16_WEIGHTS;
const STRICT_DIVISOR: f64 = 5.0;

impl Tolerance {
    /// The tolerance of a compared tensor of `kind` (one of `KINDS`).
    pub fn of(profile: ToleranceProfile, precision: Precision, kind: &str) -> Tolerance {
        let table = match precision {
            Precision::F32 => &F32,
            Precision::F16Weights => &F16_WEIGHTS,
            Precision::F16Kv => &F16_KV,
        };
        let i = KINDS.iter().position(|k| *k == kind).expect("every compared tensor's kind is in KINDS");
        let (rel, cos_distance) = table[i];
        let d = if profile == ToleranceProfile::Strict { STRICT_DIVISOR } else { 1.0 };
        Tolerance { rel: rel / d, cos_distance: cos_distance / d }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_and_strict_is_tighter() {
        assert_eq!("strict".parse::<ToleranceProfile>().unwrap(), ToleranceProfile::Strict);
        let e = "loose".parse::<ToleranceProfile>().unwrap_err().to_string();
        assert!(e.contains("loose") && e.contains("default, strict"), "{e}");
        for p in [Precision::F32, Precision::F16Weights, Precision::F16Kv] {
            for kind in KINDS {
                let (d, s) = (Tolerance::of(ToleranceProfile::Default, p, kind), Tolerance::of(ToleranceProfile::Strict, p, kind));
                assert!(s.rel < d.rel && s.cos_distance < d.cos_distance, "{p:?} {kind}");
            }
        }
    }

    #[test]
    fn the_lowest_precision_of_either_side_decides() {
        let cpu = BackendCaps::cpu();
        assert_eq!(Precision::of(&cpu, &cpu), Precision::F32);
        assert_eq!(Precision::of(&cpu, &BackendCaps::wgpu_builtin()), Precision::F16Weights);
        assert_eq!(Precision::of(&BackendCaps::cuda_builtin(DType::F16), &cpu), Precision::F16Kv);
        assert_eq!(Precision::of(&cpu, &BackendCaps::cuda_builtin(DType::F32)), Precision::F32);
    }
}
