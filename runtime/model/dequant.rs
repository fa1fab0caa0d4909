//! Decoding of the file types of GGUF and safetensors into the float type a backend asks
//! for, one tensor at a time, block by block (no widened copy of the tensor is made when
//! the target is f16 or bf16).
//!
//! Block layouts follow ggml: a block covers 32 consecutive values of a row.
//! Q8_0: f16 scale d, 32 x i8          -> x = d * q
//! Q4_0: f16 scale d, 16 bytes nibbles -> x = d * (q - 8)
//! Q4_1: f16 scale d, f16 min m, 16 bytes nibbles -> x = d * q + m
//! In the 4-bit formats byte j holds value j in its low nibble and value j + 16 in its high nibble.

use half::{bf16, f16};

use crate::tensor::{DType, FileType, TensorData};

pub const QK: usize = 32;

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn q8_0(block: &[u8], dst: &mut [f32]) {
    let d = f16_at(block, 0);
    for (o, &q) in dst.iter_mut().zip(&block[2..]) {
        *o = d * (q as i8) as f32;
    }
}

fn q4_0(block: &[u8], dst: &mut [f32]) {
    let d = f16_at(block, 0);
    for (j, &q) in block[2..].iter().enumerate() {
        dst[j] = d * ((q & 0x0f) as i32 - 8) as f32;
        dst[j + QK / 2] = d * ((q >> 4) as i32 - 8) as f32;
    }
}

fn q4_1(block: &[u8], dst: &mut [f32]) {
    let d = f16_at(block, 0);
    let m = f16_at(block, 2);
    for (j, &q) in block[4..].iter().enumerate() {
        dst[j] = d * (q & 0x0f) as f32 + m;
        dst[j + QK / 2] = d * (q >> 4) as f32 + m;
    }
}

fn floats<T: Copy, const N: usize>(bytes: &[u8], from: impl Fn([u8; N]) -> T) -> Vec<T> {
    bytes.chunks_exact(N).map(|b| from(b.try_into().expect("chunks of N bytes"))).collect()
}

/// The values of `bytes` (stored as `ty`, whole blocks) in `dtype`. A float stored as the
/// type asked for is copied as is; anything else is decoded through f32 in batches.
pub fn decode(ty: FileType, bytes: &[u8], dtype: DType) -> TensorData {
    match (ty, dtype) {
        (FileType::F32, DType::F32) => return TensorData::F32(floats(bytes, f32::from_le_bytes)),
        (FileType::F16, DType::F16) => return TensorData::F16(floats(bytes, f16::from_le_bytes)),
        (FileType::BF16, DType::BF16) => return TensorData::BF16(floats(bytes, bf16::from_le_bytes)),
        _ => {}
    }
    let (per_block, block_bytes) = ty.block();
    let blocks = bytes.len() / block_bytes;
    let mut out = TensorData::with_capacity(dtype, blocks * per_block);
    // 8192 values per batch: small enough to stay in cache, large enough to amortise.
    let batch_blocks = (8192 / per_block).max(1);
    let mut tmp = vec![0.0f32; batch_blocks * per_block];
    for batch in bytes[..blocks * block_bytes].chunks(batch_blocks * block_bytes) {
        let n = batch.len() / block_bytes * per_block;
        let dst = &mut tmp[..n];
        match ty {
            FileType::F32 => dst.iter_mut().zip(batch.chunks_exact(4)).for_each(|(o, b)| *o = f32::from_le_bytes(b.try_into().expect("4"))),
            FileType::F16 => dst.iter_mut().zip(batch.chunks_exact(2)).for_each(|(o, b)| *o = f16::from_le_bytes([b[0], b[1]]).to_f32()),
            FileType::BF16 => dst.iter_mut().zip(batch.chunks_exact(2)).for_each(|(o, b)| *o = bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            FileType::Q8_0 => batch.chunks_exact(block_bytes).zip(dst.chunks_exact_mut(QK)).for_each(|(b, d)| q8_0(b, d)),
            FileType::Q4_0 => batch.chunks_exact(block_bytes).zip(dst.chunks_exact_mut(QK)).for_each(|(b, d)| q4_0(b, d)),
            FileType::Q4_1 => batch.chunks_exact(block_bytes).zip(dst.chunks_exact_mut(QK)).for_each(|(b, d)| q4_1(b, d)),
        }
        out.extend_f32(dst);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_f32(ty: FileType, bytes: &[u8]) -> Vec<f32> {
        match decode(ty, bytes, DType::F32) {
            TensorData::F32(v) => v,
            _ => unreachable!(),
        }
    }

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q8_0_block_by_hand() {
        // d = 0.5, q = -16..16 -> x = -8.0, -7.5, ..., 7.5
        let mut b = h(0.5).to_vec();
        b.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let x = to_f32(FileType::Q8_0, &b);
        assert_eq!(x[0], -8.0);
        assert_eq!(x[16], 0.0);
        assert_eq!(x[31], 7.5);
    }

    #[test]
    fn q4_0_block_by_hand() {
        // d = 2, byte j = (hi=15, lo=j): low nibbles give values 0..15, high nibble 15.
        let mut b = h(2.0).to_vec();
        b.extend((0..16u8).map(|j| 0xf0 | j));
        let x = to_f32(FileType::Q4_0, &b);
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
        let x = to_f32(FileType::Q4_1, &b);
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
        let x = to_f32(FileType::Q8_0, &b);
        assert_eq!(x.len(), 64);
        assert_eq!((x[31], x[32]), (1.0, 3.0));
    }

    #[test]
    fn decoding_to_f16_equals_decoding_to_f32_then_rounding() {
        // More blocks than one batch, so the batch boundary is crossed.
        let mut b = Vec::new();
        for i in 0..600u32 {
            b.extend(h(0.01 * (i % 7) as f32 + 0.001));
            b.extend(h(-0.5));
            b.extend((0..16u32).map(|j| ((i * 31 + j * 7) % 256) as u8));
        }
        let wide = to_f32(FileType::Q4_1, &b);
        assert_eq!(wide.len(), 600 * 32);
        let TensorData::F16(narrow) = decode(FileType::Q4_1, &b, DType::F16) else { panic!("f16 asked for") };
        assert!(narrow.iter().zip(&wide).all(|(n, w)| *n == f16::from_f32(*w)));
        assert_eq!(narrow.len(), wide.len());
    }
}
