//! WGSL sources from `shaders/`, specialised per device by the weight type header.

pub const COMMON: &str = include_str!("../../../shaders/common.wgsl");

/// Kernel families: (file stem, source, entry points).
pub const FAMILIES: &[(&str, &str, &[&str])] = &[
    ("linear", include_str!("../../../shaders/linear.wgsl"), &["gemv", "gemv_split_k", "flat_gemm", "gemm"]),
    (
        "elementwise",
        include_str!("../../../shaders/elementwise.wgsl"),
        &["embedding", "rms_norm", "rope", "swiglu", "add", "select_rows", "kv_write", "argmax"],
    ),
    ("attention", include_str!("../../../shaders/attention.wgsl"), &["attn_split", "attn_combine", "attn_online"]),
    ("bandwidth", include_str!("../../../shaders/bandwidth.wgsl"), &["stream_read", "stream_copy"]),
];

/// Lane-group reductions: subgroup shuffles, or workgroup memory where subgroups are
/// missing or narrower than a lane group.
pub const REDUCE_SUBGROUP: &str = include_str!("../../../shaders/reduce_subgroup.wgsl");
pub const REDUCE_WORKGROUP: &str = include_str!("../../../shaders/reduce_workgroup.wgsl");

/// The full source of one family: weight type, reductions, the shared bindings, the kernels.
pub fn source(family_source: &str, f16_weights: bool, subgroups: bool) -> String {
    let header = if f16_weights { "enable f16;\nalias W = f16;\n" } else { "alias W = f32;\n" };
    let reduce = if subgroups { REDUCE_SUBGROUP } else { REDUCE_WORKGROUP };
    format!("{header}{reduce}\n{COMMON}\n{family_source}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every family parses and validates for both weight types, with no GPU.
    #[test]
    fn every_shader_validates_with_naga() {
        for &(name, src, entries) in FAMILIES {
            for (f16, subgroups) in [(false, false), (true, false), (false, true), (true, true)] {
                let code = source(src, f16, subgroups);
                let module = naga::front::wgsl::parse_str(&code)
                    .unwrap_or_else(|e| panic!("{name} (f16={f16}, subgroups={subgroups}): {}", e.emit_to_string(&code)));
                let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
                v.validate(&module).unwrap_or_else(|e| panic!("{name} (f16={f16}, subgroups={subgroups}): {}", e.emit_to_string(&code)));
                for e in entries.iter() {
                    assert!(module.entry_points.iter().any(|p| p.name == *e), "{name}: entry point {e} missing");
                }
            }
        }
    }
}
