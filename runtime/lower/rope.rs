//! The rotary angles every backend uses, computed once on the host in f32 exactly as
//! Hugging Face computes them, so all backends rotate by the same numbers.

/// Inverse frequencies 1 / theta^(2i / d), in f32.
pub fn inv_freq(theta: f32, head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2).map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32)).collect()
}

/// (cos, sin) of position x inverse frequency, `[positions][head_dim / 2][2]`.
pub fn table(theta: f32, head_dim: usize, positions: usize) -> Vec<f32> {
    let inv = inv_freq(theta, head_dim);
    let mut out = Vec::with_capacity(positions * inv.len() * 2);
    for pos in 0..positions {
        for f in &inv {
            let (s, c) = (pos as f32 * f).sin_cos();
            out.extend([c, s]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn angles_are_position_times_frequency() {
        let t = super::table(10000.0, 4, 3);
        assert_eq!(t.len(), 3 * 2 * 2);
        // Position 0: cos 1, sin 0 everywhere; position 2, pair 0: angle 2.
        assert_eq!(&t[..4], &[1.0, 0.0, 1.0, 0.0]);
        assert_eq!((t[8], t[9]), (2.0f32.cos(), 2.0f32.sin()));
        // Pair 1 of head_dim 4: frequency 1 / 10000^(1/2) = 0.01.
        assert!((t[11] - (2.0f32 * 0.01).sin()).abs() < 1e-7);
    }
}
