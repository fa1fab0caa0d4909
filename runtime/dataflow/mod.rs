//! The FlashDecoding++ heuristic dataflow: for each linear layer shape [N, K] and each
//! device, two inflection points over M (tokens this step) pick the implementation:
//! A = GEMV if M < M1, B = flat GEMM if M1 <= M < M2, C = tiled GEMM otherwise.
//! The table holds the numbers; the lowering (`crate::lower`) applies them, once, for every
//! backend.

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

/// An output tile: `m` token rows by `n` output columns per workgroup (or CPU task).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tile {
    pub m: usize,
    pub n: usize,
}

impl std::fmt::Display for Tile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.m, self.n)
    }
}

/// How B covers its output: a tile per workgroup, and how many lane groups (warps) of the
/// workgroup split K between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlatTiling {
    pub tile: Tile,
    pub k_groups: usize,
}

impl std::fmt::Display for FlatTiling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.tile)?;
        if self.k_groups > 1 {
            write!(f, ", K over {}", self.k_groups)?;
        }
        Ok(())
    }
}

/// B's second tiling on one shape: from `from_m` rows on it runs in place of the entry's
/// first (`ShapeTuning::flat`), where another tiling wins at large M.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondTiling {
    pub from_m: usize,
    pub tiling: FlatTiling,
}

/// What the table says about one [N, K]: its inflection points, and the parameters of A and
/// B measured fastest for it (absent: the backend's defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShapeTuning {
    pub n: usize,
    pub k: usize,
    pub inflections: Inflections,
    #[serde(default)]
    pub flat: Option<FlatTiling>,
    /// B's tiling from some M on, where it differs from `flat` there (profiles written
    /// before there was one read as none).
    #[serde(default)]
    pub flat_second: Option<SecondTiling>,
    /// From this many rows on the GEMV splits K (past its rows: never).
    #[serde(default)]
    pub gemv_split_k_from: Option<usize>,
}

impl ShapeTuning {
    pub fn new(n: usize, k: usize, inflections: Inflections) -> Self {
        ShapeTuning { n, k, inflections, flat: None, flat_second: None, gemv_split_k_from: None }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataflowTable {
    pub source: TableSource,
    /// For shapes the table does not list.
    pub fallback: Inflections,
    /// Per [N, K] (a model has four or five shapes).
    pub shapes: Vec<ShapeTuning>,
}

impl DataflowTable {
    /// The CPU backend's built-in table: one token streams the weights (GEMV); a few tokens
    /// reuse each weight row from L1 (flat); many tokens tile both ways to stay in L2.
    pub fn cpu_default() -> Self {
        DataflowTable { source: TableSource::Default { backend: "cpu".into() }, fallback: Inflections { m1: 2, m2: 32 }, shapes: vec![] }
    }

    /// The wgpu backend's built-in table until the tuner measures one per device and shape.
    /// From `fdpp bench kernels` on an H200 (bench/results/h200.md, 2026-11-29, register-tiled
    /// flat GEMM): GEMV is best at M = 1, the flat GEMM from M = 2 to at least M = 64 on all
    /// four Llama-2-7B shapes, the tiled GEMM beyond (at M = 256 it wins on every shape).
    pub fn wgpu_default() -> Self {
        DataflowTable { source: TableSource::Default { backend: "wgpu".into() }, fallback: Inflections { m1: 2, m2: 65 }, shapes: vec![] }
    }

    /// The CUDA kernels, as `fdpp bench kernels --backend cuda` measured them on an H200
    /// (Llama-2-7B's four shapes, f16): the GEMV (with its fusions) for one row, the
    /// tensor-core flat GEMM from 2 rows (it was faster than the GEMV from M = 2 on three
    /// shapes, from M = 4 on the fourth), the GEMM from 64.
    pub fn cuda_default() -> Self {
        DataflowTable { source: TableSource::Default { backend: "cuda".into() }, fallback: Inflections { m1: 2, m2: 64 }, shapes: vec![] }
    }

    /// The inflection points of [N, K], and whether the table lists the shape (else they are
    /// the fallback).
    pub fn inflections(&self, n: usize, k: usize) -> (Inflections, bool) {
        match self.shape(n, k) {
            Some(s) => (s.inflections, true),
            None => (self.fallback, false),
        }
    }

    /// The table's entry for [N, K], if it lists the shape.
    pub fn shape(&self, n: usize, k: usize) -> Option<&ShapeTuning> {
        self.shapes.iter().find(|s| (s.n, s.k) == (n, k))
    }

    /// A if M < M1, B if M1 <= M < M2, else C.
    pub fn implementation(&self, n: usize, k: usize, m: usize) -> LinearImpl {
        let (inf, _) = self.inflections(n, k);
        if m < inf.m1 {
            LinearImpl::Gemv
        } else if m < inf.m2 {
            LinearImpl::FlatGemm
        } else {
            LinearImpl::Gemm
        }
    }
}

impl std::fmt::Display for TableSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TableSource::Default { backend } => write!(f, "{backend} defaults"),
            TableSource::Tuned { device } => write!(f, "tuned on {device}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflection_points_split_m_into_three_ranges() {
        let mut t = DataflowTable::cpu_default();
        t.shapes.push(ShapeTuning::new(960, 576, Inflections { m1: 4, m2: 16 }));
        let pick = |m| t.implementation(960, 576, m);
        assert_eq!(pick(3), LinearImpl::Gemv);
        assert_eq!(pick(4), LinearImpl::FlatGemm);
        assert_eq!(pick(15), LinearImpl::FlatGemm);
        assert_eq!(pick(16), LinearImpl::Gemm);
        // Unknown shapes use the fallback, and say so.
        assert_eq!(t.inflections(7, 7), (t.fallback, false));
        assert!(t.inflections(960, 576).1);
        assert_eq!(t.implementation(7, 7, 1), LinearImpl::Gemv);
        // The table survives JSON (the plan and the tuner's profile hold it).
        let back: DataflowTable = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
        // An entry written before B had a second tiling reads as having none.
        let old = r#"{"n": 960, "k": 576, "inflections": {"m1": 4, "m2": 16}, "flat": {"tile": {"m": 8, "n": 16}, "k_groups": 1}}"#;
        let old: ShapeTuning = serde_json::from_str(old).unwrap();
        assert_eq!((old.flat.map(|f| f.tile.n), old.flat_second), (Some(16), None));
    }
}
