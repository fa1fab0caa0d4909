//! Dequantization of GGUF block formats to f32 (done once, at load).
//!
//! Block layouts follow ggml: a block covers 32 consecutive values of a row.
//! Q8_0: f16 scale d, 32 x i8          -> x = d * q
//! Q4_0: f16 scale d, 16 bytes nibbles -> x = d * (q - 8)
//! Q4_1: f16 scale d, f16 min m, 16 bytes nibbles -> x = d * q + m
//! In the 4-bit formats byte j holds value j in its low nibble and value j + 16 in its high nibble.

use half::f16;

pub const QK: usize = 32;

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

pub fn f32_from_le(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// `n` values from Q8_0 blocks (34 bytes each).
pub fn q8_0(bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n);
    for block in bytes.chunks_exact(2 + QK).take(n / QK) {
        let d = f16_at(block, 0);
        out.extend(block[2..].iter().map(|&q| d * (q as i8) as f32));
    }
    out
}

/// `n` values from Q4_0 blocks (18 bytes each).
pub fn q4_0(bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0.0; n];
    for (block, dst) in bytes.chunks_exact(2 + QK / 2).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(block, 0);
        for (j, &q) in block[2..].iter().enumerate() {
            dst[j] = d * ((q & 0x0f) as i32 - 8) as f32;
            dst[j + QK / 2] = d * ((q >> 4) as i32 - 8) as f32;
        }
    }
    out
}

/// `n` values from Q4_1 blocks (20 bytes each).
pub fn q4_1(bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0.0; n];
    for (block, dst) in bytes.chunks_exact(4 + QK / 2).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(block, 0);
        let m = f16_at(block, 2);
        for (j, &q) in block[4..].iter().enumerate() {
            dst[j] = d * (q & 0x0f) as f32 + m;
            dst[j + QK / 2] = d * (q >> 4) as f32 + m;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q8_0_block_by_hand() {
        // d = 0.5, q = -16..16 -> x = -8.0, -7.5, ..., 7.5
        let mut b = h(0.5).to_vec();
        b.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let x = q8_0(&b, 32);
        assert_eq!(x[0], -8.0);
        assert_eq!(x[16], 0.0);
        assert_eq!(x[31], 7.5);
    }

    #[test]
    fn q4_0_block_by_hand() {
        // d = 2, byte j = (hi=15, lo=j): low nibbles give values 0..15, high nibble 15.
        let mut b = h(2.0).to_vec();
        b.extend((0..16u8).map(|j| 0xf0 | j));
        let x = q4_0(&b, 32);
        assert_eq!(x[0], 2.0 * (0.0 - 8.0)); // -16
        assert_eq!(x[9], 2.0 * (9.0 - 8.0)); // 2
        assert_eq!(x[15], 14.0);
        assert!(x[16..].iter().all(|&v| v == 14.0)); // 2 * (15 - 8)
    }

    #[test]
    fn q4_1_block_by_hand() {
        // d = 0.25, m = -1: byte j = (hi = 3, lo = j).
        let mut b = h(0.25).to_vec();
        b.extend(h(-1.0));
        b.extend((0..16u8).map(|j| 0x30 | j));
        let x = q4_1(&b, 32);
        assert_eq!(x[0], -1.0);
        assert_eq!(x[4], 0.0);
        assert_eq!(x[15], 2.75);
        assert!(x[16..].iter().all(|&v| v == -0.25));
    }

    #[test]
    fn several_blocks_stay_in_order() {
        let mut b = Vec::new();
        for d in [1.0f32, 3.0] {
            b.extend(h(d));
            b.extend([1u8; 32]);
        }
        let x = q8_0(&b, 64);
        assert_eq!(x.len(), 64);
        assert_eq!((x[31], x[32]), (1.0, 3.0));
    }
}
