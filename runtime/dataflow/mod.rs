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

/// One of B's tilings on one shape after its first: it runs from `from_m` rows on (until the
/// next one's `from_m`), where another tiling than the first wins at larger M.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TilingFrom {
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
    /// B's tilings after `flat`, each from its M on, ascending. Profiles written when a shape
    /// had at most one more (`flat_second`) read as that one; older ones as none.
    #[serde(default, alias = "flat_second", deserialize_with = "one_or_many")]
    pub flat_later: Vec<TilingFrom>,
    /// From this many rows on the GEMV splits K (past its rows: never).
    #[serde(default)]
    pub gemv_split_k_from: Option<usize>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<TilingFrom>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(TilingFrom),
        Many(Vec<TilingFrom>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => vec![],
        Some(OneOrMany::One(t)) => vec![t],
        Some(OneOrMany::Many(v)) => v,
    })
}

/// The M range one of B's tilings covers on a shape: `from_m..until_m` (no end: every M
/// above), and how many tilings the shape has over M. Reasons record it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TilingRange {
    pub from_m: usize,
    pub until_m: Option<usize>,
    pub tilings: usize,
}

impl ShapeTuning {
    pub fn new(n: usize, k: usize, inflections: Inflections) -> Self {
        ShapeTuning { n, k, inflections, flat: None, flat_later: vec![], gemv_split_k_from: None }
    }

    /// B's tiling for `m` rows of this shape, of those `usable` accepts (a later tiling the
    /// backend lacks leaves its range to the one before), and the range it covers; None
    /// where the entry names no usable first tiling.
    pub fn flat_at(&self, m: usize, usable: impl Fn(FlatTiling) -> bool) -> Option<(FlatTiling, TilingRange)> {
        let first = self.flat.filter(|&t| usable(t))?;
        let later: Vec<TilingFrom> = self.flat_later.iter().copied().filter(|s| usable(s.tiling)).collect();
        let at = later.iter().rposition(|s| s.from_m <= m);
        let tiling = at.map_or(first, |i| later[i].tiling);
        let from_m = at.map_or(1, |i| later[i].from_m);
        let until_m = later.get(at.map_or(0, |i| i + 1)).map(|s| s.from_m);
        Some((tiling, TilingRange { from_m, until_m, tilings: 1 + later.len() }))
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

    /// The native kernels without their tensor-core forms (HIP; CUDA with f32 weights or
    /// FDPP_CUDA_TENSOR_CORES=0): B and C are the same tiled GEMM, which on an H200 ran a
    /// SmolLM2 batch-8 step in 9.6 ms against the tensor-core backend's 0.76 ms, so the GEMV
    /// takes every M it holds (8) and the tiled GEMM the rest.
    pub fn simt_default(backend: &str) -> Self {
        let m = crate::lower::caps::cuda::GEMV_MAX_M + 1;
        DataflowTable { source: TableSource::Default { backend: backend.into() }, fallback: Inflections { m1: m, m2: m }, shapes: vec![] }
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
        // An entry written before B had a second tiling reads as having none; one written
        // when it had at most one more (`flat_second`) as that one.
        let old = r#"{"n": 960, "k": 576, "inflections": {"m1": 4, "m2": 16}, "flat": {"tile": {"m": 8, "n": 16}, "k_groups": 1}}"#;
        let old: ShapeTuning = serde_json::from_str(old).unwrap();
        assert_eq!((old.flat.map(|f| f.tile.n), old.flat_later), (Some(16), vec![]));
        let second = r#"{"n": 960, "k": 576, "inflections": {"m1": 4, "m2": 16}, "flat": {"tile": {"m": 8, "n": 16}, "k_groups": 1},
            "flat_second": {"from_m": 9, "tiling": {"tile": {"m": 8, "n": 32}, "k_groups": 2}}}"#;
        let second: ShapeTuning = serde_json::from_str(second).unwrap();
        let wide = FlatTiling { tile: Tile { m: 8, n: 32 }, k_groups: 2 };
        assert_eq!(second.flat_later, vec![TilingFrom { from_m: 9, tiling: wide }]);
        let none = r#"{"n": 1, "k": 1, "inflections": {"m1": 1, "m2": 1}, "flat_second": null}"#;
        assert_eq!(serde_json::from_str::<ShapeTuning>(none).unwrap().flat_later, vec![]);
    }

    #[test]
    fn b_takes_each_tiling_over_its_range_of_m() {
        let t = |n| FlatTiling { tile: Tile { m: 8, n }, k_groups: 1 };
        let s = ShapeTuning {
            flat: Some(t(8)),
            flat_later: vec![TilingFrom { from_m: 9, tiling: t(16) }, TilingFrom { from_m: 33, tiling: t(32) }],
            ..ShapeTuning::new(576, 576, Inflections { m1: 2, m2: 64 })
        };
        let all = |_| true;
        assert_eq!(s.flat_at(8, all), Some((t(8), TilingRange { from_m: 1, until_m: Some(9), tilings: 3 })));
        assert_eq!(s.flat_at(9, all), Some((t(16), TilingRange { from_m: 9, until_m: Some(33), tilings: 3 })));
        assert_eq!(s.flat_at(500, all), Some((t(32), TilingRange { from_m: 33, until_m: None, tilings: 3 })));
        // A tiling the backend lacks gives its range to the one before.
        let no_16 = |x: FlatTiling| x != t(16);
        assert_eq!(s.flat_at(20, no_16), Some((t(8), TilingRange { from_m: 1, until_m: Some(33), tilings: 2 })));
        // No usable first tiling: the backend's default applies.
        assert_eq!(s.flat_at(20, |x| x != t(8)), None);
        // The list survives JSON.
        let back: ShapeTuning = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
