//! The kernel sources of the native backends (CUDA and HIP compile the same files): each
//! family of vendor_kernels/cuda, prefixed with the constants Rust and the kernels share and
//! with the portability header common.cuh.

use super::kernels::{Args, STEP_WORDS};
use crate::lower::caps::cuda;

const COMMON: &str = include_str!("../../../vendor_kernels/cuda/common.cuh");

/// One kernel family: its file and the kernels it exports.
pub struct Family {
    pub name: &'static str,
    pub source: &'static str,
}

pub const FAMILIES: &[Family] = &[
    Family { name: "elementwise", source: include_str!("../../../vendor_kernels/cuda/elementwise.cu") },
    Family { name: "linear", source: include_str!("../../../vendor_kernels/cuda/linear.cu") },
    Family { name: "attention", source: include_str!("../../../vendor_kernels/cuda/attention.cu") },
];

/// The full source of one family: the shared constants, the size of the argument struct as
/// Rust lays it out and the step header's words (common.cuh checks its own against them),
/// common.cuh, the family. Without `tensor_cores` the tensor-core kernels are left out (HIP
/// always; CUDA on request), the SIMT ones serving (`kernels::exports`).
pub fn source(family: &Family, f16_weights: bool, f16_kv: bool, tensor_cores: bool) -> String {
    let abi = format!("#define ARGS_BYTES {}\n#define STEP_WORDS {STEP_WORDS}\n", std::mem::size_of::<Args>());
    let simt = if tensor_cores { "" } else { "#define FDPP_TENSOR_CORES 0\n" };
    format!("{}{abi}{simt}\n{COMMON}\n{}", cuda::header(f16_weights, f16_kv), family.source)
}

/// SHA-256 of every family's full source for this storage type (the KV cache follows the
/// weights) and kernel set.
pub fn sources_hash(f16: bool, tensor_cores: bool) -> String {
    crate::cache::sha256_hex(&FAMILIES.iter().map(|f| source(f, f16, f16, tensor_cores)).collect::<String>())
}

/// Compiled code of one family for one target, from the cache folder `dir` when it holds a
/// valid entry, else from `compile` (and stored there when `dir` is given). An entry is keyed
/// by the SHA-256 of the full source, `target` (the architecture and what else changes the
/// compiler's output: driver or runtime version) and fdpp's version, and holds the SHA-256 of
/// its own contents: an entry that does not match it (a torn write, a corrupt disk) is
/// compiled again and rewritten.
pub fn cached_compile(
    family: &str,
    src: &str,
    target: &str,
    ext: &str,
    dir: Option<&std::path::Path>,
    compile: impl FnOnce() -> crate::error::Result<Vec<u8>>,
) -> crate::error::Result<Vec<u8>> {
    use crate::cache::{Entry, read_checked_bytes, sha256_hex, write_checked_bytes};
    let key = sha256_hex(&format!("{src}|{target}|fdpp {}", env!("CARGO_PKG_VERSION")));
    let path = dir.map(|d| d.join(format!("{family}-{key}.{ext}")));
    if let Some(Entry::Valid(cached)) = path.as_deref().map(read_checked_bytes) {
        return Ok(cached);
    }
    let code = compile()?;
    if let Some(p) = &path {
        // The cache is an optimisation: a folder that cannot be written only costs the next
        // start its compilation.
        let _ = write_checked_bytes(p, &code);
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_gets_the_shared_constants() {
        for f in FAMILIES {
            let src = source(f, true, true, true);
            assert!(src.starts_with("#define FDPP_W_F16 1\n#define FDPP_KV_F16 1\n"), "{}", f.name);
            assert!(src.contains("struct Args"), "{}", f.name);
        }
    }
}
