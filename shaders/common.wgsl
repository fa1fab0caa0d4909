// Shared by every kernel family. The loader prepends the storage types first:
//   `alias W = f16;` (float weights) and `alias KV = f16;` (the K and V caches), each f32
//   unless the device has SHADER_F16 and the user did not ask for f32 (`enable f16;` with
//   either; `KV_F16` says which the cache is), then one of the reduce_*.wgsl snippets (see
//   there), and after this file the weights' binding and accessors (weights_float.wgsl, or a
//   block-quantized type's constants and weights_quant.wgsl).
// The caches are only storage: every read converts to f32 (`f32(kc[i])`), every write
// rounds once (`KV(v)`); scores, softmax and sums stay f32.
// Every family sees the same bindings, so one bind group layout serves all pipelines;
// a node binds small placeholder buffers where it has nothing to bind.

struct Step {
    m: u32,          // tokens this step
    n_out: u32,      // rows whose logits are wanted
    max_m: u32,      // stride of the arrays in `step_data`
    attn_chunks: u32,    // KV chunks of the split-KV attention this step
    attn_chunk_keys: u32, // keys per chunk
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// Static per-node parameters; each family reads the fields it needs.
struct Node {
    rows: u32,       // 0: the node has `m` rows, 1: `n_out` rows
    n: u32,
    k: u32,
    n_offset: u32,   // first output column (or table row) of this weight chunk
    ldy: u32,        // row stride of the output
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    flag_offset: u32,
    mode: u32,
    max_ctx: u32,
    eps: f32,
    scale: f32,
    phi: f32,
    lo: f32,
    hi: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    _pad3: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
// [tokens | positions | seqs | out_rows], each `max_m` long
@group(0) @binding(1) var<storage, read> step_data: array<u32>;
@group(0) @binding(2) var<uniform> node: Node;
// x and x2 are declared as vec4 so the linear kernels load 16 bytes at a time; buffers are
// padded to whole vec4s. Other kernels read single elements through xs. The weights `w`
// (binding 5) and their accessors ws / w4 come from weights_float.wgsl or
// weights_quant.wgsl, whichever the family is compiled with.
@group(0) @binding(3) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> x2: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;
@group(0) @binding(7) var<storage, read_write> kc: array<KV>;
@group(0) @binding(8) var<storage, read_write> vc: array<KV>;
// The split-KV attention's partial sums; the RoPE angle table for the QKV GEMV that does
// the rotation in its epilogue.
@group(0) @binding(9) var<storage, read_write> scratch: array<f32>;
// [0]: rows recomputed by the attention fallback, [1..1+max_m]: sampled ids, then flags
@group(0) @binding(10) var<storage, read_write> flags: array<atomic<u32>>;
// A linear layer's bias (f32, the whole vector; indexed by output column).
@group(0) @binding(11) var<storage, read> bias: array<f32>;

fn xs(i: u32) -> f32 { return x[i >> 2u][i & 3u]; }
fn x2s(i: u32) -> f32 { return x2[i >> 2u][i & 3u]; }
// Four consecutive elements from any offset: one vector load when it is aligned.
fn x4(i: u32) -> vec4<f32> {
    if ((i & 3u) == 0u) { return x[i >> 2u]; }
    return vec4<f32>(xs(i), xs(i + 1u), xs(i + 2u), xs(i + 3u));
}

fn row_count() -> u32 {
    return select(step.m, step.n_out, node.rows == 1u);
}
fn token_at(i: u32) -> u32 { return step_data[i]; }
fn position_at(i: u32) -> u32 { return step_data[step.max_m + i]; }
fn seq_at(i: u32) -> u32 { return step_data[2u * step.max_m + i]; }
fn out_row_at(r: u32) -> u32 { return step_data[3u * step.max_m + r]; }

// Large grids fold into two dimensions (at most 65535 workgroups per dimension).
fn flat_id(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + wg.y * nwg.x;
}
