// y[m, n_offset + j] = sum_k x[m, k] * w[j, k]: the three dataflows of a linear layer.
// A (gemv): M < M1. 32 threads per output column, 8 columns per workgroup.
// B (flat_gemm): M padded to 8, N tiled across workgroups (BN = 64), K walked inside the
//   workgroup in tiles of BK = 16 that are double-buffered in workgroup memory.
// C (gemm): 64 x 64 output tiles, 4 x 4 per thread, for large M (prefill).

const GEMV_MAX_M: u32 = 8u;
const GV_ROWS: u32 = 8u;   // output columns per workgroup
const GV_LANES: u32 = 32u; // threads per output column
var<workgroup> gpart: array<f32, 2048>; // GEMV_MAX_M x 256 partial sums

// A: 32 threads per output column walk K in coalesced runs of 4; one barrier, then one
// thread per (row, column) adds the 32 partial sums.
@compute @workgroup_size(256)
fn gemv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
    let first = flat_id(wg, nwg) * GV_ROWS;
    let col = first + t / GV_LANES;
    let lane = t % GV_LANES;
    let m = min(row_count(), GEMV_MAX_M);
    let K = node.k;
    var acc: array<f32, 8>;
    if (col < node.n) {
        let wrow = col * K;
        let k4 = K / 4u * 4u;
        for (var k = lane * 4u; k < k4; k += GV_LANES * 4u) {
            let w0 = f32(w[wrow + k]);
            let w1 = f32(w[wrow + k + 1u]);
            let w2 = f32(w[wrow + k + 2u]);
            let w3 = f32(w[wrow + k + 3u]);
            for (var r = 0u; r < m; r++) {
                let xb = r * K + k;
                acc[r] += w0 * x[xb] + w1 * x[xb + 1u] + w2 * x[xb + 2u] + w3 * x[xb + 3u];
            }
        }
        for (var k = k4 + lane; k < K; k += GV_LANES) {
            let wv = f32(w[wrow + k]);
            for (var r = 0u; r < m; r++) {
                acc[r] += wv * x[r * K + k];
            }
        }
    }
    for (var r = 0u; r < m; r++) {
        gpart[r * 256u + t] = acc[r];
    }
    workgroupBarrier();
    if (t < m * GV_ROWS) {
        let r = t / GV_ROWS;
        let c = t % GV_ROWS;
        if (first + c < node.n) {
            var s = 0.0;
            for (var l = 0u; l < GV_LANES; l++) {
                s += gpart[r * 256u + c * GV_LANES + l];
            }
            y[r * node.ldy + node.n_offset + first + c] = s;
        }
    }
}

const FB_M: u32 = 8u;
const FB_N: u32 = 64u;
const FB_K: u32 = 16u;
const FB_WPAD: u32 = 17u; // row stride of the weight tile (padding against bank conflicts)
var<workgroup> fx: array<f32, 256>;   // 2 buffers x 8 x 16
var<workgroup> fw: array<f32, 2176>;  // 2 buffers x 64 x 17

fn flat_load(tile: u32, buf: u32, t: u32, m0: u32, n0: u32, M: u32) {
    let K = node.k;
    let k0 = tile * FB_K;
    for (var e = t; e < FB_M * FB_K; e += FB_N) {
        let r = e / FB_K;
        let c = e % FB_K;
        var v = 0.0;
        if (m0 + r < M && k0 + c < K) { v = x[(m0 + r) * K + k0 + c]; }
        fx[buf * FB_M * FB_K + e] = v;
    }
    for (var j = 0u; j < FB_K; j++) {
        let e = t + FB_N * j;
        let r = e / FB_K;
        let c = e % FB_K;
        var v = 0.0;
        if (n0 + r < node.n && k0 + c < K) { v = f32(w[(n0 + r) * K + k0 + c]); }
        fw[buf * FB_N * FB_WPAD + r * FB_WPAD + c] = v;
    }
}

@compute @workgroup_size(64)
fn flat_gemm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let M = row_count();
    let n0 = wg.x * FB_N;
    let m0 = wg.y * FB_M;
    let tiles = (node.k + FB_K - 1u) / FB_K;
    var acc: array<f32, 8>;
    flat_load(0u, 0u, t, m0, n0, M);
    workgroupBarrier();
    for (var i = 0u; i < tiles; i++) {
        let cur = i % 2u;
        // Fill the other buffer with the next tile while this one is consumed; the
        // barrier at the end of the previous iteration made that buffer free.
        if (i + 1u < tiles) { flat_load(i + 1u, 1u - cur, t, m0, n0, M); }
        for (var kk = 0u; kk < FB_K; kk++) {
            let wv = fw[cur * FB_N * FB_WPAD + t * FB_WPAD + kk];
            for (var r = 0u; r < FB_M; r++) {
                acc[r] += fx[cur * FB_M * FB_K + r * FB_K + kk] * wv;
            }
        }
        workgroupBarrier();
    }
    let col = n0 + t;
    if (col < node.n) {
        for (var r = 0u; r < FB_M; r++) {
            if (m0 + r < M) { y[(m0 + r) * node.ldy + node.n_offset + col] = acc[r]; }
        }
    }
}

const GM: u32 = 64u;
const GK: u32 = 16u;
var<workgroup> ga: array<f32, 1024>; // 64 rows of x x 16
var<workgroup> gb: array<f32, 1024>; // 64 rows of w x 16

@compute @workgroup_size(256)
fn gemm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let M = row_count();
    let K = node.k;
    let n0 = wg.x * GM;
    let m0 = wg.y * GM;
    let tx = t % 16u;
    let ty = t / 16u;
    var acc: array<f32, 16>;
    for (var k0 = 0u; k0 < K; k0 += GK) {
        for (var j = 0u; j < 4u; j++) {
            let e = t + 256u * j;
            let r = e / GK;
            let c = e % GK;
            var a = 0.0;
            if (m0 + r < M && k0 + c < K) { a = x[(m0 + r) * K + k0 + c]; }
            ga[e] = a;
            var b = 0.0;
            if (n0 + r < node.n && k0 + c < K) { b = f32(w[(n0 + r) * K + k0 + c]); }
            gb[e] = b;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < GK; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = ga[(ty * 4u + i) * GK + kk];
                b[i] = gb[(tx * 4u + i) * GK + kk];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] += a[i] * b[j];
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let r = m0 + ty * 4u + i;
        for (var j = 0u; j < 4u; j++) {
            let col = n0 + tx * 4u + j;
            if (r < M && col < node.n) { y[r * node.ldy + node.n_offset + col] = acc[i * 4u + j]; }
        }
    }
}
