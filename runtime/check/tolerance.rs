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
    /// An f16 KV cache on one of them (wgpu with SHADER_F16 by default, CUDA with f16
    /// weights), with weights of either type.
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
            Precision::F16Kv => "f16 KV cache",
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

/// The `Default` tolerances per kind (`KINDS` order): (relative error, cosine distance) with
/// f32 on both sides, and with f16 weights on one. Each is ten times the largest error
/// measured for its kind (CPU against wgpu on lavapipe, the tiny random Llama and
/// SmolLM2-135M, short and long prompts, fused and unfused; ARCHITECTURE.md has the
/// numbers and commands), rounded up to 1, 2 or 5 times a power of ten; `Strict` divides
/// by `STRICT_DIVISOR`, which leaves twice the measured error or more.
const DEFAULT: [(&str, Tolerance, Tolerance); 9] = [
    // An f32 gather is a copy (measured: exact); f16 weights round the table.
    ("embedding", tol(1e-6, 1e-12), tol(5e-3, 5e-7)),
    ("rms_norm", tol(5e-5, 2e-11), tol(5e-2, 2e-5)),
    ("linear", tol(1e-4, 1e-10), tol(1e-1, 5e-5)),
    ("rope", tol(2e-5, 2e-11), tol(5e-2, 5e-5)),
    ("attention", tol(1e-4, 1e-10), tol(5e-2, 5e-5)),
    ("swiglu", tol(1e-4, 5e-11), tol(5e-2, 1e-4)),
    ("add", tol(5e-5, 5e-11), tol(5e-2, 2e-5)),
    ("select_rows", tol(5e-5, 5e-11), tol(5e-2, 2e-5)),
    ("logits", tol(5e-5, 1e-10), tol(2e-2, 2e-5)),
];
const STRICT_DIVISOR: f64 = 5.0;

const fn tol(rel: f64, cos_distance: f64) -> Tolerance {
    Tolerance { rel, cos_distance }
}

impl Tolerance {
    /// The tolerance of a compared tensor of `kind` (one of `KINDS`). An f16 KV cache
    /// takes the f16-weights values: one H200 run (CUDA) measured it 13x or more inside
    /// them, one lavapipe run (wgpu, f32 weights) 26x (ARCHITECTURE.md), too few runs for a
    /// column of its own.
    pub fn of(profile: ToleranceProfile, precision: Precision, kind: &str) -> Tolerance {
        let (_, f32, f16) = DEFAULT.iter().find(|(k, ..)| *k == kind).expect("every compared tensor's kind is in KINDS");
        let t = if precision == Precision::F32 { f32 } else { f16 };
        let d = if profile == ToleranceProfile::Strict { STRICT_DIVISOR } else { 1.0 };
        Tolerance { rel: t.rel / d, cos_distance: t.cos_distance / d }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_tolerance_in_order() {
        assert_eq!(DEFAULT.map(|(k, ..)| k), KINDS);
    }

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
        assert_eq!(Precision::of(&cpu, &BackendCaps::wgpu_builtin()), Precision::F16Kv);
        let f32_kv = BackendCaps { kv_dtype: DType::F32, ..BackendCaps::wgpu_builtin() };
        assert_eq!(Precision::of(&cpu, &f32_kv), Precision::F16Weights);
        assert_eq!(Precision::of(&BackendCaps::cuda_builtin(DType::F16), &cpu), Precision::F16Kv);
        assert_eq!(Precision::of(&cpu, &BackendCaps::cuda_builtin(DType::F32)), Precision::F32);
    }
}
