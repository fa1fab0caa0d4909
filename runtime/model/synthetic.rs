//! Random weights of a model's exact shapes, made one tensor at a time in the type asked
//! for: performance work on a model's shapes needs neither its file nor host memory for
//! more than the tensor being uploaded.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{ModelConfig, WeightSource, names};
use crate::error::{Error, Result};
use crate::sampling::Rng;
use crate::tensor::{DType, FileType, HostTensor, TensorData};

/// Values per independently seeded block (so a tensor is filled in parallel, the same way
/// whatever the thread count).
const BLOCK: usize = 1 << 16;

pub struct SyntheticWeights {
    path: PathBuf,
    /// (Hugging Face name, shape), sorted by name.
    tensors: Vec<(String, Vec<usize>)>,
    /// How the matrices are "stored" (vectors are f32).
    matrices: FileType,
}

impl SyntheticWeights {
    /// Every tensor a Llama-family model of `config` has, in f32.
    pub fn new(config: &ModelConfig) -> Self {
        Self::with_matrices(config, FileType::F32)
    }

    /// As `new`, with the matrices stored as `matrices` (a block-quantized type: random
    /// blocks, as a quantized file holds them, so backends that read blocks can be timed).
    pub fn with_matrices(config: &ModelConfig, matrices: FileType) -> Self {
        let c = config;
        let h = c.hidden_size;
        let mut tensors = vec![(names::EMBED.to_string(), vec![c.vocab_size, h]), (names::FINAL_NORM.to_string(), vec![h])];
        if !c.tie_word_embeddings {
            tensors.push((names::LM_HEAD.to_string(), vec![c.vocab_size, h]));
        }
        for l in 0..c.num_layers {
            let f = c.intermediate_size;
            for (leaf, shape) in [
                (names::ATTN_NORM, vec![h]),
                (names::Q, vec![c.q_dim(), h]),
                (names::K, vec![c.kv_dim(), h]),
                (names::V, vec![c.kv_dim(), h]),
                (names::O, vec![h, c.q_dim()]),
                (names::FFN_NORM, vec![h]),
                (names::GATE, vec![f, h]),
                (names::UP, vec![f, h]),
                (names::DOWN, vec![h, f]),
            ] {
                tensors.push((names::layer(l, leaf), shape));
            }
        }
        tensors.sort();
        SyntheticWeights { path: PathBuf::from("(synthetic weights)"), tensors, matrices }
    }

    fn find(&self, name: &str) -> Result<&(String, Vec<usize>)> {
        self.tensors
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .map(|i| &self.tensors[i])
            .map_err(|_| Error::MissingTensor { path: self.path.clone(), tensor: name.to_string() })
    }
}

/// A stable seed per tensor name (FNV-1a).
fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

impl WeightSource for SyntheticWeights {
    fn path(&self) -> &Path {
        &self.path
    }
    fn names(&self) -> Vec<String> {
        self.tensors.iter().map(|(n, _)| n.clone()).collect()
    }
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.find(name).ok().map(|(_, s)| s.clone())
    }
    fn file_type(&self, name: &str) -> Result<FileType> {
        self.find(name).map(|(_, shape)| if shape.len() == 1 { FileType::F32 } else { self.matrices })
    }
    /// Matrices uniform in +-0.05 (activations stay O(1) through many layers), norm weights 1.
    fn load(&self, name: &str, dtype: DType) -> Result<HostTensor> {
        let (_, shape) = self.find(name)?;
        let n: usize = shape.iter().product();
        if shape.len() == 1 {
            let mut data = TensorData::with_capacity(dtype, n);
            data.extend_f32(&vec![1.0; n]);
            return Ok(HostTensor { shape: shape.clone(), data });
        }
        if self.matrices.is_quantized() {
            return Ok(HostTensor { shape: shape.clone(), data: super::dequant::decode(self.matrices, &self.load_raw(name)?, dtype) });
        }
        let seed = seed_of(name);
        let blocks: Vec<TensorData> = (0..n.div_ceil(BLOCK))
            .into_par_iter()
            .map(|b| {
                let mut rng = Rng::new(seed ^ (b as u64).wrapping_mul(0x9e3779b97f4a7c15));
                let values: Vec<f32> = (0..BLOCK.min(n - b * BLOCK)).map(|_| (rng.next_f32() - 0.5) * 0.1).collect();
                let mut block = TensorData::with_capacity(dtype, values.len());
                block.extend_f32(&values);
                block
            })
            .collect();
        let mut data = TensorData::with_capacity(dtype, n);
        for block in blocks {
            data.append(block);
        }
        Ok(HostTensor { shape: shape.clone(), data })
    }
    /// Quantized matrices: blocks of random values whose scales span about +-0.05, as `load`'s floats.
    fn load_raw(&self, name: &str) -> Result<Vec<u8>> {
        let (_, shape) = self.find(name)?;
        let ty = self.matrices;
        if shape.len() == 1 || !ty.is_quantized() {
            return Err(Error::NotSupported { backend: "synthetic weights".into(), what: format!("`{name}` as stored: it is f32") });
        }
        let (per_block, block_bytes) = ty.block();
        let h = |x: f32| half::f16::from_f32(x).to_le_bytes();
        let scales: Vec<u8> = match ty {
            FileType::Q8_0 => h(0.05 / 127.0).to_vec(),
            FileType::Q4_0 => h(0.05 / 8.0).to_vec(),
            _ => [h(0.1 / 15.0), h(-0.05)].concat(),
        };
        let seed = seed_of(name);
        let blocks = shape.iter().product::<usize>() / per_block;
        let per_batch = BLOCK / per_block;
        let batches: Vec<Vec<u8>> = (0..blocks.div_ceil(per_batch))
            .into_par_iter()
            .map(|b| {
                let mut rng = Rng::new(seed ^ (b as u64).wrapping_mul(0x9e3779b97f4a7c15));
                let count = per_batch.min(blocks - b * per_batch);
                let mut out = Vec::with_capacity(count * block_bytes);
                for _ in 0..count {
                    out.extend_from_slice(&scales);
                    out.extend((scales.len()..block_bytes).map(|_| rng.next_u64() as u8));
                }
                out
            })
            .collect();
        Ok(batches.concat())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ModelConfig {
        ModelConfig {
            architecture: "llama".into(),
            vocab_size: 100,
            hidden_size: 64,
            intermediate_size: 96,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 16,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-5,
            max_context: 64,
            tie_word_embeddings: false,
            rope_scaling: Default::default(),
            biases: Default::default(),
            notes: vec![],
        }
    }

    #[test]
    fn every_tensor_of_the_graph_is_there_with_its_shape_and_the_same_values_in_any_type() {
        let c = config();
        let w = SyntheticWeights::new(&c);
        let g = crate::graph::llama::build(&c);
        for p in &g.params {
            for part in &p.parts {
                assert!(w.shape(&part.tensor).is_some(), "{}", part.tensor);
            }
        }
        assert_eq!(w.names().len(), 3 + 9 * c.num_layers);
        let a = w.load(names::layer(1, names::GATE).as_str(), DType::F32).unwrap().into_f32();
        let b = w.load(names::layer(1, names::GATE).as_str(), DType::F16).unwrap().into_f32();
        assert_eq!(a.len(), 96 * 64);
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-4 && x.abs() <= 0.05));
        // Different tensors differ; the same tensor is the same every time.
        let up = w.load(names::layer(1, names::UP).as_str(), DType::F32).unwrap().into_f32();
        assert_ne!(a, up);
        assert_eq!(a, w.load(names::layer(1, names::GATE).as_str(), DType::F32).unwrap().into_f32());
        assert!(w.load("nope", DType::F32).is_err());
    }
}
