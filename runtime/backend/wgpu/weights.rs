//! Block-quantized weights as the WGSL kernels read them (shaders/weights_quant.wgsl): each
//! chunk's blocks with their scales moved apart, so a block's values lie in aligned 32-bit
//! words (a Q4_0 or Q8_0 block is 18 or 34 bytes in the file). The bits are the file's;
//! only where they lie changes.

use crate::tensor::FileType;

/// The chunk `bytes` (`rows` rows of `cols` values of the quantized type `ty`, ggml's block
/// layout) as weights_quant.wgsl reads it: every block's values, then every block's scale
/// (Q4_1: d and m, 4 bytes; Q8_0 and Q4_0: d, 2 bytes), zero-padded to whole 16 bytes.
pub fn repack(ty: FileType, bytes: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    let (per_block, block_bytes) = ty.block();
    let scale_bytes = if ty == FileType::Q4_1 { 4 } else { 2 };
    let blocks = rows * cols / per_block;
    debug_assert_eq!(bytes.len(), blocks * block_bytes);
    let value_bytes = block_bytes - scale_bytes;
    let mut out = vec![0u8; (blocks * block_bytes).next_multiple_of(16)];
    let (values, scales) = out.split_at_mut(blocks * value_bytes);
    for ((block, v), s) in bytes.chunks_exact(block_bytes).zip(values.chunks_exact_mut(value_bytes)).zip(scales.chunks_mut(scale_bytes)) {
        s.copy_from_slice(&block[..scale_bytes]);
        v.copy_from_slice(&block[scale_bytes..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_first_then_scales_in_block_order() {
        // Two Q4_1 blocks: scales (d, m) 0x0100 / 0x0302 and 0x1110 / 0x1312, values 0xa0.. / 0xb0..
        let mut file = vec![0x00, 0x01, 0x02, 0x03];
        file.extend(0xa0..0xb0u8);
        file.extend([0x10, 0x11, 0x12, 0x13]);
        file.extend(0xb0..0xc0u8);
        let out = repack(FileType::Q4_1, &file, 1, 64);
        assert_eq!(out.len(), 48);
        assert_eq!(&out[..16], &(0xa0..0xb0u8).collect::<Vec<_>>()[..]);
        assert_eq!(&out[16..32], &(0xb0..0xc0u8).collect::<Vec<_>>()[..]);
        assert_eq!(&out[32..40], &[0x00, 0x01, 0x02, 0x03, 0x10, 0x11, 0x12, 0x13]);
        assert!(out[40..].iter().all(|&b| b == 0));
        // Q8_0: 2-byte scales, 32 value bytes.
        let mut q8 = vec![0x34, 0x12];
        q8.extend(0..32u8);
        let out = repack(FileType::Q8_0, &q8, 1, 32);
        assert_eq!((out.len(), &out[..32], &out[32..34]), (48, &(0..32u8).collect::<Vec<_>>()[..], &[0x34u8, 0x12][..]));
    }
}
