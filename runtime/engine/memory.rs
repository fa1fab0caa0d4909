//! Host memory, estimated before a backend allocates it: a model or context that cannot
//! fit is refused with the numbers instead of growing until the system kills fdpp.

use crate::backend::{BackendKind, Capacity};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::lower::caps::BackendCaps;

/// Sequences decoded together at most: far beyond what any backend's kernels are tuned for,
/// and low enough that per-sequence sizes cannot overflow.
pub const MAX_SEQS: usize = 4096;

/// Memory the system can give without swapping: `FDPP_HOST_MEMORY_MIB` where set (to run
/// as if the machine had that much), else Linux's `MemAvailable`; `None` where neither is known.
pub fn available_bytes() -> Option<u64> {
    if let Some(mib) = std::env::var("FDPP_HOST_MEMORY_MIB").ok().and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some(mib.saturating_mul(1 << 20));
    }
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = info.lines().find_map(|l| l.strip_prefix("MemAvailable:")?.trim().strip_suffix("kB")?.trim().parse().ok())?;
    Some(kb.saturating_mul(1024))
}

/// What loading `graph` on `backend` allocates on the host up front: the RoPE table of the
/// whole context, and the f32 weights (the CPU backend keeps all of them; a GPU backend
/// stages one tensor at a time). The KV cache of the CPU backend grows with use and is
/// not counted.
pub fn load_bytes(graph: &Graph, backend: BackendKind, capacity: Capacity) -> u64 {
    let c = &graph.config;
    let rope = (capacity.max_context as u64).saturating_mul(c.head_dim as u64).saturating_mul(4);
    let params = graph.params.iter().map(|p| p.numel() as u64 * 4);
    let weights = match backend {
        BackendKind::Cpu => params.fold(0u64, u64::saturating_add),
        _ => params.max().unwrap_or(0),
    };
    rope.saturating_add(weights)
}

/// The weights a GPU backend keeps on its device: each in the device's type, vectors
/// (norm weights, biases) also as f32.
pub fn device_weight_bytes(graph: &Graph, caps: &BackendCaps) -> u64 {
    let bytes = |p: &crate::graph::ParamDesc| {
        let extra_f32 = if p.shape.len() == 1 { 4 } else { 0 };
        (p.numel() as u64).saturating_mul(caps.weight_dtype.size() as u64 + extra_f32)
    };
    graph.params.iter().map(bytes).fold(0, u64::saturating_add)
}

/// What a GPU backend allocates on its device up front: its weights and the K and V caches
/// of every layer for the whole capacity.
pub fn device_bytes(graph: &Graph, caps: &BackendCaps, capacity: Capacity) -> u64 {
    let c = &graph.config;
    let kv = [c.num_layers, 2, capacity.max_seqs, capacity.max_context, c.kv_dim(), caps.kv_dtype.size()]
        .iter()
        .fold(1u64, |a, &b| a.saturating_mul(b as u64));
    device_weight_bytes(graph, caps).saturating_add(kv)
}

/// Refuses a load whose up-front host memory exceeds what is available. On a device
/// emulated on the host (`caps.host_emulated`) that includes what the device allocates.
pub fn check_load(graph: &Graph, caps: &BackendCaps, capacity: Capacity) -> Result<()> {
    let Some(available) = available_bytes() else { return Ok(()) };
    let backend = caps.backend;
    let emulated = caps.host_emulated;
    let mut needed = load_bytes(graph, backend, capacity);
    if emulated {
        needed = needed.saturating_add(device_bytes(graph, caps, capacity));
    }
    if needed <= available {
        return Ok(());
    }
    let hint = if backend == BackendKind::Cpu {
        "; the CPU backend keeps every weight as f32: use a GPU backend, a smaller model or a shorter context"
    } else {
        "; use a shorter context (--ctx-size)"
    };
    let device = if emulated {
        format!(" ({}, emulated on the CPU: its weights and KV caches are host memory)", caps.device)
    } else {
        String::new()
    };
    Err(Error::HostMemory {
        what: format!(
            "loading {} parameters for the {} backend{device} with a context of {} positions for {} sequences",
            graph.params.iter().map(|p| p.numel() as u64).sum::<u64>(),
            backend.name(),
            capacity.max_context,
            capacity.max_seqs
        ),
        needed_mib: needed.div_ceil(1 << 20),
        available_mib: available >> 20,
        hint: hint.into(),
    })
}
