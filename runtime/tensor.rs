//! Host-side tensors: what model loaders produce, in the float type a backend asks for.
//!
//! Model files keep their own types ([`FileType`], block-quantized ones included) until a
//! backend asks for one tensor in the type it stores ([`DType`]); nothing holds a widened
//! copy of the whole model.

use half::{bf16, f16};
use serde::{Deserialize, Serialize};

/// Float types a host tensor (and a backend's weight storage) can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        })
    }
}

/// How a tensor is stored in a model file: a float type, or a ggml block-quantized type
/// (blocks of 32 values along a row).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
}

impl FileType {
    /// (values per block, bytes per block).
    pub fn block(self) -> (usize, usize) {
        match self {
            FileType::F32 => (1, 4),
            FileType::F16 | FileType::BF16 => (1, 2),
            FileType::Q8_0 => (32, 34),
            FileType::Q4_0 => (32, 18),
            FileType::Q4_1 => (32, 20),
        }
    }

    /// Bytes of `numel` values (a whole number of blocks).
    pub fn bytes(self, numel: usize) -> usize {
        let (values, bytes) = self.block();
        numel / values * bytes
    }

    /// A ggml block type (32 values a block).
    pub fn is_quantized(self) -> bool {
        matches!(self, FileType::Q8_0 | FileType::Q4_0 | FileType::Q4_1)
    }

    /// The float type that holds this type's values exactly (quantized values: f32).
    pub fn exact_dtype(self) -> DType {
        match self {
            FileType::F16 => DType::F16,
            FileType::BF16 => DType::BF16,
            _ => DType::F32,
        }
    }
}

impl From<DType> for FileType {
    fn from(d: DType) -> Self {
        match d {
            DType::F32 => FileType::F32,
            DType::F16 => FileType::F16,
            DType::BF16 => FileType::BF16,
        }
    }
}

impl std::fmt::Display for FileType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileType::F32 => "f32",
            FileType::F16 => "f16",
            FileType::BF16 => "bf16",
            FileType::Q8_0 => "q8_0",
            FileType::Q4_0 => "q4_0",
            FileType::Q4_1 => "q4_1",
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
}

impl TensorData {
    /// An empty vector of `dtype` with room for `n` values.
    pub fn with_capacity(dtype: DType, n: usize) -> Self {
        match dtype {
            DType::F32 => TensorData::F32(Vec::with_capacity(n)),
            DType::F16 => TensorData::F16(Vec::with_capacity(n)),
            DType::BF16 => TensorData::BF16(Vec::with_capacity(n)),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F16(v) => v.len(),
            TensorData::BF16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `values`, rounded to this vector's type.
    pub fn extend_f32(&mut self, values: &[f32]) {
        match self {
            TensorData::F32(v) => v.extend_from_slice(values),
            TensorData::F16(v) => v.extend(values.iter().map(|&x| f16::from_f32(x))),
            TensorData::BF16(v) => v.extend(values.iter().map(|&x| bf16::from_f32(x))),
        }
    }

    /// Appends `other`, converted to this vector's type (a plain copy when the types match).
    pub fn append(&mut self, other: TensorData) {
        match (self, other) {
            (TensorData::F32(a), TensorData::F32(b)) => a.extend(b),
            (TensorData::F16(a), TensorData::F16(b)) => a.extend(b),
            (TensorData::BF16(a), TensorData::BF16(b)) => a.extend(b),
            (a, b) => {
                // Through f32 in slices, so no widened copy of `b` exists at once.
                let mut tmp = Vec::with_capacity(4096);
                for start in (0..b.len()).step_by(4096) {
                    tmp.clear();
                    b.extend_range_f32(start..(start + 4096).min(b.len()), &mut tmp);
                    a.extend_f32(&tmp);
                }
            }
        }
    }

    fn extend_range_f32(&self, range: std::ops::Range<usize>, out: &mut Vec<f32>) {
        match self {
            TensorData::F32(v) => out.extend_from_slice(&v[range]),
            TensorData::F16(v) => out.extend(v[range].iter().map(|x| x.to_f32())),
            TensorData::BF16(v) => out.extend(v[range].iter().map(|x| x.to_f32())),
        }
    }

    /// Little-endian bytes of the stored values (the layout of GGUF and safetensors).
    pub fn as_le_bytes(&self) -> &[u8] {
        // Every supported host is little-endian (wgpu and the file formats assume it).
        match self {
            TensorData::F32(v) => bytemuck::cast_slice(v),
            TensorData::F16(v) => bytemuck::cast_slice(v),
            TensorData::BF16(v) => bytemuck::cast_slice(v),
        }
    }
}

/// A dense row-major tensor in host memory. `shape[0]` is the outermost dimension
/// (the PyTorch / safetensors convention; GGUF's `ne` order is reversed on import).
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl HostTensor {
    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        HostTensor { shape, data: TensorData::F32(data) }
    }

    pub fn dtype(&self) -> DType {
        match self.data {
            TensorData::F32(_) => DType::F32,
            TensorData::F16(_) => DType::F16,
            TensorData::BF16(_) => DType::BF16,
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn size_bytes(&self) -> usize {
        self.numel() * self.dtype().size()
    }

    /// The tensor in `dtype` (no copy when it already has that type).
    pub fn convert(self, dtype: DType) -> HostTensor {
        if self.dtype() == dtype {
            return self;
        }
        let mut data = TensorData::with_capacity(dtype, self.data.len());
        data.append(self.data);
        HostTensor { shape: self.shape, data }
    }

    /// The values as f32 (a copy unless already f32).
    pub fn into_f32(self) -> Vec<f32> {
        match self.convert(DType::F32).data {
            TensorData::F32(v) => v,
            _ => unreachable!("converted to f32"),
        }
    }

    /// Little-endian bytes of the stored values.
    pub fn as_le_bytes(&self) -> &[u8] {
        self.data.as_le_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_to_the_target_type() {
        let t = HostTensor::f32(vec![2, 3], vec![1.0, 0.1, -2.5, 65504.0, 1e-8, 3.0]);
        let h = t.clone().convert(DType::F16);
        assert_eq!(h.dtype(), DType::F16);
        let back = h.clone().into_f32();
        let want: Vec<f32> = [1.0f32, 0.1, -2.5, 65504.0, 1e-8, 3.0].iter().map(|&x| f16::from_f32(x).to_f32()).collect();
        assert_eq!(back, want);
        // f16 -> bf16 goes through f32, value by value.
        let b = h.convert(DType::BF16);
        let want: Vec<f32> = want.iter().map(|&x| bf16::from_f32(x).to_f32()).collect();
        assert_eq!(b.into_f32(), want);
        assert_eq!(t.as_le_bytes().len(), 24);
    }

    #[test]
    fn file_types_count_whole_blocks() {
        assert_eq!(FileType::Q4_1.bytes(64), 40);
        assert_eq!(FileType::Q8_0.bytes(32), 34);
        assert_eq!(FileType::F16.bytes(5), 10);
        assert_eq!(FileType::Q4_0.exact_dtype(), DType::F32);
    }
}
