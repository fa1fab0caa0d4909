//! The static compute graph of a transformer: built once per model, shapes symbolic in
//! `m` / `ctx` / `out`, planned once (topological order, buffers reused by liveness).

pub mod ir;
pub mod llama;
pub mod plan;

pub use ir::*;
pub use plan::{MemoryPlan, Plan};

use crate::error::{Error, Result};
use crate::model::{ModelConfig, WeightSource};
use crate::tensor::HostTensor;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Graph {
    pub config: ModelConfig,
    pub tensors: Vec<TensorDesc>,
    pub params: Vec<ParamDesc>,
    pub nodes: Vec<Node>,
    pub tokens: TensorId,
    pub logits: TensorId,
}

impl Graph {
    /// Reads every parameter from `weights`, checking each part's shape against the config
    /// and stacking fused parts. `progress(done, total)` is called after each parameter.
    pub fn load_params(&self, weights: &dyn WeightSource, progress: &mut dyn FnMut(usize, usize)) -> Result<Vec<HostTensor>> {
        let mut out = Vec::with_capacity(self.params.len());
        for (i, p) in self.params.iter().enumerate() {
            out.push(load_param(p, weights)?);
            progress(i + 1, self.params.len());
        }
        Ok(out)
    }

    pub fn param_bytes_f32(&self, node: &Node) -> usize {
        node.op.param().map_or(0, |p| self.params[p].numel() * 4)
    }
}

fn load_param(p: &ParamDesc, weights: &dyn WeightSource) -> Result<HostTensor> {
    let mut data = Vec::with_capacity(p.numel());
    for part in &p.parts {
        let name = &part.tensor;
        let mut expected = p.shape.clone();
        expected[0] = part.rows;
        let found = weights
            .shape(name)
            .ok_or_else(|| Error::MissingTensor { path: weights.path().to_path_buf(), tensor: weights.display_name(name) })?;
        if found != expected {
            let tensor = weights.display_name(name);
            return Err(Error::ShapeMismatch { path: weights.path().to_path_buf(), tensor, found, expected });
        }
        data.extend(weights.load(name)?.into_f32());
    }
    Ok(HostTensor::f32(p.shape.clone(), data))
}
