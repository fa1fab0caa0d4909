//! WGSL sources from `shaders/`, specialised per device: the weight and KV cache types, the lane-group
//! reduction its subgroups allow, and the constants the Rust side shares with the kernels
//! (`crate::lower::caps::wgsl`, written only there).

use crate::lower::caps::wgsl;

pub const COMMON: &str = include_str!("../../../shaders/common.wgsl");

/// One compilation of a kernel source: `specialisation` is WGSL prepended to it, and its
/// pipelines are keyed `entry` + `suffix` (the biased linear kernels are `gemv_bias`, ...).
pub struct Family {
    pub name: &'static str,
    pub source: &'static str,
    pub specialisation: &'static str,
    pub suffix: &'static str,
    pub entries: &'static [&'static str],
}

impl Family {
    /// A source compiled once, its pipelines named by their entry points.
    const fn plain(name: &'static str, source: &'static str, entries: &'static [&'static str]) -> Family {
        Family { name, source, specialisation: "", suffix: "", entries }
    }
}

const LINEAR: &str = include_str!("../../../shaders/linear.wgsl");
const LINEAR_ENTRIES: &[&str] = &["gemv", "gemv_split_k", "flat_gemm", "gemm"];

pub const FAMILIES: &[Family] = &[
    Family { name: "linear", source: LINEAR, specialisation: "const BIASED: bool = false;\n", suffix: "", entries: LINEAR_ENTRIES },
    Family {
        name: "linear_bias",
        source: LINEAR,
        specialisation: "const BIASED: bool = true;\n",
        suffix: "_bias",
        entries: LINEAR_ENTRIES,
    },
    Family::plain(
        "elementwise",
        include_str!("../../../shaders/elementwise.wgsl"),
        &["embedding", "rms_norm", "rope", "swiglu", "add", "select_rows", "kv_write", "argmax"],
    ),
    Family::plain("attention", include_str!("../../../shaders/attention.wgsl"), &["attn_split", "attn_combine", "attn_online"]),
    Family::plain("bandwidth", include_str!("../../../shaders/bandwidth.wgsl"), &["stream_read", "stream_copy"]),
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
    format!("{enable}alias W = {};\nalias KV = {};\n{}", ty(f16_weights), ty(f16_kv), wgsl::header())
}

/// The full source of one family: header, reductions, the shared bindings, the kernels.
pub fn source(family: &Family, f16_weights: bool, f16_kv: bool, subgroup_size: Option<u32>) -> String {
    let reduce = match subgroup_size {
        Some(s) if s >= 32 => REDUCE_SUBGROUP.to_string(),
        Some(s) => format!("const SUBGROUP: u32 = {s}u;\n{REDUCE_SUBGROUP_NARROW}"),
        None => REDUCE_WORKGROUP.to_string(),
    };
    format!("{}{}{reduce}\n{COMMON}\n{}", header(f16_weights, f16_kv), family.specialisation, family.source)
}

/// SHA-256 of every kernel source as this device compiles it (sampling included).
pub fn sources_hash(f16_weights: bool, f16_kv: bool, subgroup_size: Option<u32>) -> String {
    let mut all: String = FAMILIES.iter().map(|f| source(f, f16_weights, f16_kv, subgroup_size)).collect();
    all.push_str(super::sampling::SOURCE);
    crate::cache::sha256_hex(&all)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every family parses and validates for every weight and KV type and every reduction,
    /// with no GPU.
    #[test]
    fn every_shader_validates_with_naga() {
        for family in FAMILIES {
            let (name, entries) = (family.name, family.entries);
            for (f16, f16_kv) in [(false, false), (true, false), (false, true), (true, true)] {
                for subgroup in [None, Some(32), Some(64), Some(8), Some(16)] {
                    let code = source(family, f16, f16_kv, subgroup);
                    let what = format!("{name} (f16={f16}, f16_kv={f16_kv}, subgroup={subgroup:?})");
                    let module = naga::front::wgsl::parse_str(&code).unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&code)));
                    let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
                    v.validate(&module).unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&code)));
                    for e in entries.iter() {
                        assert!(module.entry_points.iter().any(|p| p.name == *e), "{name}: entry point {e} missing");
                    }
                }
            }
        }
    }
}
