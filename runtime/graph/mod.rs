//! The static compute graph of a transformer: built once per model, shapes symbolic in
//! `m` / `ctx` / `out`, nodes in a topological order. What runs where (fusion, buffers,
//! kernel variants) is the lowering's business (`crate::lower`).

pub mod ir;
pub mod llama;

pub use ir::*;

use crate::error::{Error, Result};
use crate::model::WeightSource;
use crate::tensor::{DType, FileType, HostTensor, TensorData};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Graph {
    pub config: crate::model::ModelConfig,
    pub tensors: Vec<TensorDesc>,
    pub params: Vec<ParamDesc>,
    pub nodes: Vec<Node>,
    pub tokens: TensorId,
    pub logits: TensorId,
}

impl Graph {
    /// Checks that every part of every parameter is in `weights` with the shape the config
    /// needs and a type fdpp reads, before anything is read or allocated. Returns each
    /// parameter's type in the file (its first part's).
    pub fn check_weights(&self, weights: &dyn WeightSource) -> Result<Vec<FileType>> {
        let mut types = Vec::with_capacity(self.params.len());
        for p in &self.params {
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
            }
            let parts: Vec<FileType> = p.parts.iter().map(|part| weights.file_type(&part.tensor)).collect::<Result<_>>()?;
            // Parts of different types are only ever read decoded: f32 holds each exactly.
            types.push(if parts.windows(2).all(|w| w[0] == w[1]) { parts[0] } else { FileType::F32 });
        }
        Ok(types)
    }

    /// Reads one parameter as the file stores it (`ty`, which `check_weights` gave for it),
    /// its parts' bytes stacked along rows.
    pub fn load_param_raw(&self, param: ParamId, weights: &dyn WeightSource, ty: FileType) -> Result<Vec<u8>> {
        let p = &self.params[param];
        let mut bytes = Vec::with_capacity(ty.bytes(p.numel()));
        for part in &p.parts {
            let b = weights.load_raw(&part.tensor)?;
            if b.len() != ty.bytes(part.rows * p.shape[1..].iter().product::<usize>()) {
                let (path, tensor) = (weights.path().to_path_buf(), weights.display_name(&part.tensor));
                return Err(Error::Malformed {
                    path,
                    what: format!("tensor `{tensor}`"),
                    reason: format!("{} bytes, not whole {ty} rows", b.len()),
                });
            }
            bytes.extend_from_slice(&b);
        }
        Ok(bytes)
    }

    /// Reads one parameter in `dtype`, its parts stacked along rows (call `check_weights`
    /// first: shapes are trusted here).
    pub fn load_param(&self, param: ParamId, weights: &dyn WeightSource, dtype: DType) -> Result<HostTensor> {
        let p = &self.params[param];
        let mut data = TensorData::with_capacity(dtype, p.numel());
        for part in &p.parts {
            let t = weights.load(&part.tensor, dtype)?;
            if t.numel() != part.rows * p.shape[1..].iter().product::<usize>() {
                let tensor = weights.display_name(&part.tensor);
                return Err(Error::ShapeMismatch { path: weights.path().to_path_buf(), tensor, found: t.shape, expected: p.shape.clone() });
            }
            data.append(t.data);
        }
        Ok(HostTensor { shape: p.shape.clone(), data })
    }

    /// The nodes in an order where every input is produced before it is read (the
    /// builder's order where that is one).
    pub fn topological_order(&self) -> Result<Vec<NodeId>> {
        let mut producer = vec![None; self.tensors.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            producer[n.output] = Some(i);
        }
        let mut indegree = vec![0usize; self.nodes.len()];
        let mut users: Vec<Vec<NodeId>> = vec![vec![]; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &t in &n.inputs {
                match producer[t] {
                    Some(p) => {
                        indegree[i] += 1;
                        users[p].push(i);
                    }
                    None if self.tensors[t].kind == TensorKind::TokenInput => {}
                    None => {
                        return Err(Error::InvalidArgument(format!(
                            "graph: node `{}` reads tensor `{}` that no node produces",
                            n.name, self.tensors[t].name
                        )));
                    }
                }
            }
        }
        // Kahn's algorithm, lowest index first so the builder's order is kept when valid.
        let mut ready: std::collections::BTreeSet<NodeId> = (0..self.nodes.len()).filter(|&i| indegree[i] == 0).collect();
        let mut order = Vec::with_capacity(self.nodes.len());
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for &u in &users[i] {
                indegree[u] -= 1;
                if indegree[u] == 0 {
                    ready.insert(u);
                }
            }
        }
        if order.len() != self.nodes.len() {
            return Err(Error::InvalidArgument("graph: the nodes form a cycle".into()));
        }
        Ok(order)
    }

    /// The nodes reading each tensor.
    pub fn consumers(&self) -> Vec<Vec<NodeId>> {
        let mut consumers = vec![vec![]; self.tensors.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &t in &n.inputs {
                consumers[t].push(i);
            }
        }
        consumers
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::ModelConfig;

    pub(crate) fn config() -> ModelConfig {
        ModelConfig {
            architecture: "llama".into(),
            vocab_size: 100,
            hidden_size: 64,
            intermediate_size: 96,
            num_layers: 3,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 16,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-5,
            max_context: 128,
            tie_word_embeddings: true,
            rope_scaling: Default::default(),
            biases: Default::default(),
            notes: vec![],
        }
    }

    #[test]
    fn order_respects_dependencies() {
        let g = llama::build(&config());
        let order = g.topological_order().unwrap();
        let mut done = vec![false; g.tensors.len()];
        done[g.tokens] = true;
        for &i in &order {
            assert!(g.nodes[i].inputs.iter().all(|&t| done[t]), "{}", g.nodes[i].name);
            done[g.nodes[i].output] = true;
        }
        assert_eq!(order.len(), g.nodes.len());
    }
}
