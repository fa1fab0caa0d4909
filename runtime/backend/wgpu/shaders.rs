//! WGSL sources from `shaders/`, specialised per device: the weight and KV cache types, the lane-group
//! reduction its subgroups allow, and the constants the Rust side shares with the kernels
//! (`crate::lower::caps::wgsl`, written only there). The families that read weights are
//! compiled once per weight storage: float, and each block-quantized type a model keeps.

use crate::lower::caps::wgsl;
use crate::tensor::FileType;

pub const COMMON: &str = include_str!("../../../shaders/common.wgsl");
const WEIGHTS_FLOAT: &str = include_str!("../../../shaders/weights_float.wgsl");
const WEIGHTS_QUANT: &str = include_str!("../../../shaders/weights_quant.wgsl");

/// One compilation of kernel sources: `specialisation` is WGSL prepended to them, and its
/// pipelines are keyed `entry` + `suffix` (the biased linear kernels are `gemv_bias`, ...),
/// then the weight storage's suffix (`Storage::suffix`).
pub struct Family {
    pub name: &'static str,
    pub sources: &'static [&'static str],
    pub specialisation: &'static str,
    pub suffix: &'static str,
    pub entries: &'static [&'static str],
    /// Its kernels read weights: compiled once per weight storage.
    pub reads_weights: bool,
    /// The GEMV of the weights' storage (gemv.wgsl or gemv_quant.wgsl) follows `sources`.
    pub gemv: bool,
    /// Its kernels use cooperative matrices: compiled only on devices that have them, its
    /// source opened by their `enable` directive.
    pub matrix: bool,
    /// It declares the weights' binding itself (as f16 scalars): compiled for float weights
    /// only, without a storage's accessors.
    pub own_weights: bool,
    /// Its kernels read the KV cache as f16: compiled only where the cache is f16.
    pub f16_kv: bool,
}

impl Family {
    /// A source compiled once, its pipelines named by their entry points.
    const fn plain(name: &'static str, sources: &'static [&'static str], entries: &'static [&'static str]) -> Family {
        Family {
            name,
            sources,
            specialisation: "",
            suffix: "",
            entries,
            reads_weights: false,
            gemv: false,
            matrix: false,
            own_weights: false,
            f16_kv: false,
        }
    }
}

const LINEAR_EPILOGUE: &str = include_str!("../../../shaders/linear_epilogue.wgsl");
const LINEAR: &str = include_str!("../../../shaders/linear.wgsl");
const MATRIX_COMMON: &str = include_str!("../../../shaders/matrix_common.wgsl");
const GEMM_MATRIX: &str = include_str!("../../../shaders/gemm_matrix.wgsl");
const GEMM_MATRIX_DIRECT: &str = include_str!("../../../shaders/gemm_matrix_direct.wgsl");
const FLAT_MATRIX: &str = include_str!("../../../shaders/flat_matrix.wgsl");
const GEMV: &str = include_str!("../../../shaders/gemv.wgsl");
const GEMV_QUANT: &str = include_str!("../../../shaders/gemv_quant.wgsl");
const LINEAR_ENTRIES: &[&str] = &["gemv", "gemv_split_k", "flat_gemm", "gemm"];

/// How a family's weights are stored: the device's float type, or a block-quantized type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Storage {
    Float,
    Quantized(FileType),
}

/// The block-quantized types the kernels read as stored (`--weights native`).
pub const QUANTIZED: [FileType; 3] = [FileType::Q8_0, FileType::Q4_0, FileType::Q4_1];

impl Storage {
    /// Appended to the pipeline keys of families that read weights.
    pub fn suffix(self) -> String {
        match self {
            Storage::Float => String::new(),
            Storage::Quantized(t) => format!("_{t}"),
        }
    }

    /// The weights' binding and accessors (and a quantized type's constants).
    fn source(self) -> String {
        let Storage::Quantized(t) = self else { return WEIGHTS_FLOAT.to_string() };
        let (bits, min, offset) = match t {
            FileType::Q8_0 => (8, false, 0.0),
            FileType::Q4_0 => (4, false, -8.0),
            FileType::Q4_1 => (4, true, 0.0),
            other => unreachable!("{other} is not a block-quantized type the kernels read"),
        };
        format!(
            "const Q_BITS: u32 = {bits}u;\nconst Q_WORDS: u32 = {bits}u;\nconst Q_MIN: bool = {min};\nconst Q_OFFSET: f32 = {offset:.1};\n{WEIGHTS_QUANT}"
        )
    }

    /// The GEMV kernels for this storage.
    fn gemv(self) -> &'static str {
        if self == Storage::Float { GEMV } else { GEMV_QUANT }
    }
}

/// The linear kernels (A, B and the CUDA-core C), with the GEMV of each weight storage.
const LINEAR_FAMILY: Family = Family {
    name: "linear",
    sources: &[LINEAR_EPILOGUE, LINEAR],
    specialisation: UNBIASED,
    suffix: "",
    entries: LINEAR_ENTRIES,
    reads_weights: true,
    gemv: true,
    matrix: false,
    own_weights: false,
    f16_kv: false,
};

/// C on cooperative matrices, staged (any weight storage).
const MATRIX_FAMILY: Family = Family {
    name: "matrix",
    sources: &[LINEAR_EPILOGUE, MATRIX_COMMON, GEMM_MATRIX],
    specialisation: UNBIASED,
    suffix: "",
    entries: &["gemm_matrix"],
    reads_weights: true,
    gemv: false,
    matrix: true,
    own_weights: false,
    f16_kv: false,
};

/// C and B on cooperative matrices reading f16 weights as they lie.
const MATRIX_DIRECT_FAMILY: Family = Family {
    name: "matrix_direct",
    sources: &[LINEAR_EPILOGUE, MATRIX_COMMON, GEMM_MATRIX_DIRECT, FLAT_MATRIX],
    specialisation: UNBIASED,
    suffix: "",
    entries: &["gemm_matrix_direct", "flat_matrix"],
    reads_weights: false,
    gemv: false,
    matrix: true,
    own_weights: true,
    f16_kv: false,
};

const UNBIASED: &str = "const BIASED: bool = false;\n";

impl Family {
    /// The same kernels with the bias epilogue compiled in, their pipelines suffixed `_bias`
    /// (see linear_epilogue.wgsl for why not a runtime flag).
    const fn with_bias(self, name: &'static str) -> Family {
        Family { name, specialisation: "const BIASED: bool = true;\n", suffix: "_bias", ..self }
    }
}

pub const FAMILIES: &[Family] = &[
    LINEAR_FAMILY,
    LINEAR_FAMILY.with_bias("linear_bias"),
    MATRIX_FAMILY,
    MATRIX_FAMILY.with_bias("matrix_bias"),
    MATRIX_DIRECT_FAMILY,
    MATRIX_DIRECT_FAMILY.with_bias("matrix_direct_bias"),
    Family {
        matrix: true,
        f16_kv: true,
        ..Family::plain("attention_matrix", &[include_str!("../../../shaders/attention_matrix.wgsl")], &["attn_matrix"])
    },
    Family { reads_weights: true, ..Family::plain("embedding", &[include_str!("../../../shaders/embedding.wgsl")], &["embedding"]) },
    Family::plain(
        "elementwise",
        &[include_str!("../../../shaders/elementwise.wgsl")],
        &["rms_norm", "rope", "swiglu", "add", "select_rows", "kv_write", "argmax"],
    ),
    Family::plain("attention", &[include_str!("../../../shaders/attention.wgsl")], &["attn_split", "attn_combine", "attn_online"]),
    Family::plain("bandwidth", &[include_str!("../../../shaders/bandwidth.wgsl")], &["stream_read", "stream_copy"]),
];

/// Lane-group reductions: subgroup shuffles (subgroups of at least 32 lanes), shuffles then
/// workgroup memory (a fixed narrower subgroup), or workgroup memory alone.
pub const REDUCE_SUBGROUP: &str = include_str!("../../../shaders/reduce_subgroup.wgsl");
pub const REDUCE_SUBGROUP_NARROW: &str = include_str!("../../../shaders/reduce_subgroup_narrow.wgsl");
pub const REDUCE_WORKGROUP: &str = include_str!("../../../shaders/reduce_workgroup.wgsl");

/// The storage types and the shared constants, the header of every kernel source.
pub fn header(f16_weights: bool, f16_kv: bool) -> String {
    let ty = |f16: bool| if f16 { "f16" } else { "f32" };
    let enable = if f16_weights || f16_kv { "enable f16;\n" } else { "" };
    format!("{enable}alias W = {};\nalias KV = {};\nconst KV_F16: bool = {f16_kv};\n{}", ty(f16_weights), ty(f16_kv), wgsl::header())
}

/// The full source of one family with weights stored as `storage`: header, reductions, the
/// shared bindings, the weights' accessors, the kernels.
pub fn source(family: &Family, storage: Storage, f16_weights: bool, f16_kv: bool, subgroup_size: Option<u32>) -> String {
    let reduce = match subgroup_size {
        Some(s) if s >= 32 => REDUCE_SUBGROUP.to_string(),
        Some(s) => format!("const SUBGROUP: u32 = {s}u;\n{REDUCE_SUBGROUP_NARROW}"),
        None => REDUCE_WORKGROUP.to_string(),
    };
    let gemv = family.gemv.then(|| storage.gemv());
    let kernels = family.sources.iter().copied().chain(gemv).collect::<Vec<_>>().join("\n");
    // Enable directives come before every declaration.
    let enable = if family.matrix { "enable wgpu_cooperative_matrix;\n" } else { "" };
    let weights = if family.own_weights { String::new() } else { storage.source() };
    format!("{enable}{}{}{reduce}\n{COMMON}\n{weights}\n{kernels}", header(f16_weights, f16_kv), family.specialisation)
}

/// Every (family, storage) a device compiles: each family with float weights, and the
/// families that read weights once per type of `quantized`; the cooperative-matrix families
/// only where `matrix` (the device has them), those reading an f16 cache only where `f16_kv`.
pub fn compilations(quantized: &[FileType], matrix: bool, f16_kv: bool) -> impl Iterator<Item = (&'static Family, Storage)> + '_ {
    let families = move || FAMILIES.iter().filter(move |f| (matrix || !f.matrix) && (f16_kv || !f.f16_kv));
    let float = families().map(|f| (f, Storage::Float));
    let quant = quantized.iter().flat_map(move |&t| families().filter(|f| f.reads_weights).map(move |f| (f, Storage::Quantized(t))));
    float.chain(quant)
}

/// SHA-256 of every kernel source as this device compiles it (sampling and every quantized
/// form included).
pub fn sources_hash(f16_weights: bool, f16_kv: bool, subgroup_size: Option<u32>, matrix: bool) -> String {
    let mut all: String = compilations(&QUANTIZED, matrix, f16_kv).map(|(f, s)| source(f, s, f16_weights, f16_kv, subgroup_size)).collect();
    all.push_str(super::sampling::SOURCE);
    crate::cache::sha256_hex(&all)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cooperative-matrix probe only a test compiles (on adapters that have them) parses,
    /// validates and is written as SPIR-V here.
    #[test]
    fn the_matrix_probe_validates_with_naga() {
        let code = include_str!("../../../shaders/matrix_probe.wgsl");
        let module = naga::front::wgsl::parse_str(code).unwrap_or_else(|e| panic!("{}", e.emit_to_string(code)));
        let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
        let info = v.validate(&module).unwrap_or_else(|e| panic!("{}", e.emit_to_string(code)));
        naga::back::spv::write_vec(&module, &info, &naga::back::spv::Options::default(), None).expect("SPIR-V");
    }

    /// Every family parses and validates for every weight storage, KV type and reduction,
    /// with no GPU.
    #[test]
    fn every_shader_validates_with_naga() {
        for (family, storage) in compilations(&QUANTIZED, true, true) {
            let (name, entries) = (family.name, family.entries);
            for (f16, f16_kv) in [(false, false), (true, false), (false, true), (true, true)] {
                // The cooperative-matrix kernels are compiled only with f16 weights, the
                // matrix attention only with an f16 cache.
                if family.matrix && !f16 || family.f16_kv && !f16_kv {
                    continue;
                }
                for subgroup in [None, Some(32), Some(64), Some(8), Some(16)] {
                    let code = source(family, storage, f16, f16_kv, subgroup);
                    let what = format!("{name} ({storage:?}, f16={f16}, f16_kv={f16_kv}, subgroup={subgroup:?})");
                    let module = naga::front::wgsl::parse_str(&code).unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&code)));
                    let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
                    v.validate(&module).unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&code)));
                    for e in entries.iter() {
                        assert!(module.entry_points.iter().any(|p| p.name == *e), "{name}: entry point {e} missing");
                    }
                    if family.matrix {
                        // The cooperative-matrix kernels run on no CI adapter: at least their
                        // SPIR-V (what wgpu hands a Vulkan driver) is written here.
                        let info = v.validate(&module).expect("validated above");
                        let spv = naga::back::spv::write_vec(&module, &info, &naga::back::spv::Options::default(), None);
                        spv.unwrap_or_else(|e| panic!("{what}: SPIR-V: {e}"));
                    }
                }
            }
        }
    }
}
