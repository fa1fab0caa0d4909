//! The rotary angles every backend uses, computed once on the host in f32 the way Hugging
//! Face computes them (including its long-context scalings), so all backends rotate by the
//! same numbers.

use crate::model::ModelConfig;
use crate::model::config::RopeScaling;

/// The inverse frequencies of each rotary pair and the factor cos and sin are scaled by.
pub fn frequencies(c: &ModelConfig) -> (Vec<f32>, f32) {
    let dim = c.head_dim;
    let base: Vec<f32> = (0..dim / 2).map(|i| 1.0 / c.rope_theta.powf((2 * i) as f32 / dim as f32)).collect();
    match &c.rope_scaling {
        RopeScaling::None => (base, 1.0),
        RopeScaling::Linear { factor } => (base.iter().map(|f| f / factor).collect(), 1.0),
        RopeScaling::FreqFactors { factors } => (base.iter().zip(factors).map(|(f, d)| f / d).collect(), 1.0),
        &RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
            let old = original_max_position_embeddings as f32;
            let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
            let scaled = base
                .iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    if wavelen > low_wavelen {
                        f / factor
                    } else if wavelen < high_wavelen {
                        f
                    } else {
                        let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect();
            (scaled, 1.0)
        }
        &RopeScaling::Yarn { factor, original_max_position_embeddings, beta_fast, beta_slow, truncate, attention_factor } => {
            // The dimensions whose wavelengths make between beta_fast and beta_slow turns
            // over the original context are blended; below them extrapolated, above interpolated.
            let correction = |rotations: f32| {
                let (d, b, m) = (dim as f64, c.rope_theta as f64, original_max_position_embeddings as f64);
                d * (m / (rotations as f64 * 2.0 * std::f64::consts::PI)).ln() / (2.0 * b.ln())
            };
            let (mut low, mut high) = (correction(beta_fast), correction(beta_slow));
            if truncate {
                (low, high) = (low.floor(), high.ceil());
            }
            let (low, mut high) = (low.max(0.0) as f32, high.min(dim as f64 - 1.0) as f32);
            if low == high {
                high += 0.001;
            }
            let scaled = (0..dim / 2)
                .map(|i| {
                    let pos_freq = c.rope_theta.powf((2 * i) as f32 / dim as f32);
                    let (extrapolated, interpolated) = (1.0 / pos_freq, 1.0 / (factor * pos_freq));
                    let keep = 1.0 - ((i as f32 - low) / (high - low)).clamp(0.0, 1.0);
                    interpolated * (1.0 - keep) + extrapolated * keep
                })
                .collect();
            (scaled, attention_factor)
        }
    }
}

/// (cos, sin) of position x inverse frequency, times the scaling's attention factor,
/// `[positions][head_dim / 2][2]`.
pub fn table(c: &ModelConfig, positions: usize) -> Vec<f32> {
    let (inv, scale) = frequencies(c);
    let mut out = Vec::with_capacity(positions * inv.len() * 2);
    for pos in 0..positions {
        for f in &inv {
            let (s, co) = (pos as f32 * f).sin_cos();
            out.extend([co * scale, s * scale]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(head_dim: usize, scaling: RopeScaling) -> ModelConfig {
        ModelConfig { head_dim, rope_theta: 10000.0, rope_scaling: scaling, ..crate::graph::tests::config() }
    }

    #[test]
    fn angles_are_position_times_frequency() {
        let t = table(&config(4, RopeScaling::None), 3);
        assert_eq!(t.len(), 3 * 2 * 2);
        // Position 0: cos 1, sin 0 everywhere; position 2, pair 0: angle 2.
        assert_eq!(&t[..4], &[1.0, 0.0, 1.0, 0.0]);
        assert_eq!((t[8], t[9]), (2.0f32.cos(), 2.0f32.sin()));
        // Pair 1 of head_dim 4: frequency 1 / 10000^(1/2) = 0.01.
        assert!((t[11] - (2.0f32 * 0.01).sin()).abs() < 1e-7);
    }

    /// Against values computed in f64 from the formulas of transformers'
    /// `modeling_rope_utils` (`_compute_*_parameters`), written out independently here.
    #[test]
    fn scalings_follow_the_hugging_face_formulas() {
        let (d, theta) = (128usize, 10000.0f64);
        let plain: Vec<f64> = (0..d / 2).map(|i| 1.0 / theta.powf(2.0 * i as f64 / d as f64)).collect();
        let close = |got: &[f32], want: &[f64], what: &str| {
            let err = crate::compare::rel_error(got, want, what);
            assert!(err < 1e-5, "{what}: {err:e}");
        };
        close(
            &frequencies(&config(d, RopeScaling::Linear { factor: 4.0 })).0,
            &plain.iter().map(|f| f / 4.0).collect::<Vec<_>>(),
            "linear",
        );

        // Llama 3.1: factor 8, low 1, high 4, original 8192.
        let llama3 =
            RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 };
        let want: Vec<f64> = plain
            .iter()
            .map(|&f| {
                let wl = 2.0 * std::f64::consts::PI / f;
                if wl > 8192.0 {
                    f / 8.0
                } else if wl < 2048.0 {
                    f
                } else {
                    let s = (8192.0 / wl - 1.0) / 3.0;
                    (1.0 - s) * f / 8.0 + s * f
                }
            })
            .collect();
        let (got, scale) = frequencies(&config(d, llama3));
        close(&got, &want, "llama3");
        assert_eq!(scale, 1.0);
        // Both ends are as the rule says: the fastest pair kept, the slowest divided.
        assert_eq!(got[0], frequencies(&config(d, RopeScaling::None)).0[0]);
        assert!((got[d / 2 - 1] as f64 - plain[d / 2 - 1] / 8.0).abs() < 1e-12);

        // YaRN: factor 4, original 4096, betas 32 / 1, truncated.
        let yarn = RopeScaling::Yarn {
            factor: 4.0,
            original_max_position_embeddings: 4096,
            beta_fast: 32.0,
            beta_slow: 1.0,
            truncate: true,
            attention_factor: 1.1386,
        };
        let corr = |r: f64| d as f64 * (4096.0 / (r * 2.0 * std::f64::consts::PI)).ln() / (2.0 * theta.ln());
        let (low, high) = (corr(32.0).floor().max(0.0), corr(1.0).ceil().min(d as f64 - 1.0));
        let want: Vec<f64> = plain
            .iter()
            .enumerate()
            .map(|(i, &f)| {
                let keep = 1.0 - ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                f / 4.0 * (1.0 - keep) + f * keep
            })
            .collect();
        let (got, scale) = frequencies(&config(d, yarn));
        close(&got, &want, "yarn");
        assert_eq!(scale, 1.1386);
        let t = table(
            &config(
                d,
                RopeScaling::Yarn {
                    factor: 4.0,
                    original_max_position_embeddings: 4096,
                    beta_fast: 32.0,
                    beta_slow: 1.0,
                    truncate: true,
                    attention_factor: 2.0,
                },
            ),
            1,
        );
        assert_eq!((t[0], t[1]), (2.0, 0.0), "cos and sin carry the attention factor");

        let factors: Vec<f32> = (0..d / 2).map(|i| 1.0 + i as f32).collect();
        let want: Vec<f64> = plain.iter().zip(&factors).map(|(f, k)| f / *k as f64).collect();
        close(&frequencies(&config(d, RopeScaling::FreqFactors { factors })).0, &want, "freq factors");
    }
}
