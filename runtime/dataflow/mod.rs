//! The FlashDecoding++ heuristic dataflow: for each linear layer shape [N, K] and each
//! device, two inflection points over M (tokens this step) pick the implementation:
//! A = GEMV if M < M1, B = flat GEMM if M1 <= M < M2, C = tiled GEMM otherwise.
//! This is the only place where that choice is made.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LinearImpl {
    /// A: one pass over the weights per token row, parallel over N.
    Gemv,
    /// B: M padded to a small tile, N tiled across workers, K walked inside one worker.
    FlatGemm,
    /// C: conventional 2-D tiled GEMM for large M (prefill).
    Gemm,
}

impl LinearImpl {
    pub fn label(self) -> &'static str {
        match self {
            LinearImpl::Gemv => "A:gemv",
            LinearImpl::FlatGemm => "B:flat_gemm",
            LinearImpl::Gemm => "C:gemm",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inflections {
    /// Smallest M where flat GEMM beats GEMV.
    pub m1: usize,
    /// Smallest M where tiled GEMM beats flat GEMM.
    pub m2: usize,
}

/// Where a table's numbers came from, shown in every reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TableSource {
    /// Built-in defaults for a backend (not measured on this device).
    Default { backend: String },
    /// Measured by the tuner on a device.
    Tuned { device: String },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DataflowTable {
    pub source: TableSource,
    pub fallback: Inflections,
    /// Per [N, K] inflection points.
    pub shapes: BTreeMap<(usize, usize), Inflections>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub implementation: LinearImpl,
    pub reason: String,
}

impl DataflowTable {
    /// The CPU backend's built-in table: one token streams the weights (GEMV); a few tokens
    /// reuse each weight row from L1 (flat); many tokens tile both ways to stay in L2.
    pub fn cpu_default() -> Self {
        DataflowTable {
            source: TableSource::Default { backend: "cpu".into() },
            fallback: Inflections { m1: 2, m2: 32 },
            shapes: BTreeMap::new(),
        }
    }

    /// The wgpu backend's built-in table until the tuner measures one per device and shape.
    /// From `fdpp bench kernels` on an H200 (bench/results/h200.md, 2026-11-29, register-tiled
    /// flat GEMM): GEMV is best at M = 1, the flat GEMM from M = 2 to at least M = 64 on all
    /// four Llama-2-7B shapes, the tiled GEMM beyond (at M = 256 it wins on every shape).
    pub fn wgpu_default() -> Self {
        DataflowTable {
            source: TableSource::Default { backend: "wgpu".into() },
            fallback: Inflections { m1: 2, m2: 65 },
            shapes: BTreeMap::new(),
        }
    }

    /// The implementation `choose` picks, without the reason (for per-step hot paths).
    pub fn implementation(&self, n: usize, k: usize, m: usize) -> LinearImpl {
        let inf = self.shapes.get(&(n, k)).copied().unwrap_or(self.fallback);
        if m < inf.m1 {
            LinearImpl::Gemv
        } else if m < inf.m2 {
            LinearImpl::FlatGemm
        } else {
            LinearImpl::Gemm
        }
    }

    pub fn choose(&self, n: usize, k: usize, m: usize) -> Choice {
        let (inf, which) = match self.shapes.get(&(n, k)) {
            Some(i) => (*i, format!("[N={n}, K={k}]")),
            None => (self.fallback, format!("fallback for [N={n}, K={k}]")),
        };
        let source = match &self.source {
            TableSource::Default { backend } => format!("{backend} defaults"),
            TableSource::Tuned { device } => format!("tuned on {device}"),
        };
        let implementation = self.implementation(n, k, m);
        let rule = match implementation {
            LinearImpl::Gemv => format!("M={m} < M1={}", inf.m1),
            LinearImpl::FlatGemm => format!("M1={} <= M={m} < M2={}", inf.m1, inf.m2),
            LinearImpl::Gemm => format!("M={m} >= M2={}", inf.m2),
        };
        Choice { implementation, reason: format!("{rule} ({which}, {source})") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflection_points_split_m_into_three_ranges() {
        let mut t = DataflowTable::cpu_default();
        t.shapes.insert((960, 576), Inflections { m1: 4, m2: 16 });
        let pick = |m| t.choose(960, 576, m).implementation;
        assert_eq!(pick(3), LinearImpl::Gemv);
        assert_eq!(pick(4), LinearImpl::FlatGemm);
        assert_eq!(pick(15), LinearImpl::FlatGemm);
        assert_eq!(pick(16), LinearImpl::Gemm);
        // Unknown shapes use the fallback, and the reason says so.
        let c = t.choose(7, 7, 1);
        assert_eq!(c.implementation, LinearImpl::Gemv);
        assert!(c.reason.contains("fallback"), "{}", c.reason);
    }
}
