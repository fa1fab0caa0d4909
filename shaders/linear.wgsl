// y[m, n_offset + j] = sum_k x[m, k] * w[j, k]: the three dataflows of a linear layer.
// A (gemv): M < M1. 32 threads per output column, 8 columns per workgroup.
// B (flat_gemm): M padded to 8, N tiled across workgroups (BN = 64), K walked inside the
//   workgroup in tiles of BK = 16 that are double-buffered in workgroup memory.
// C (gemm): 64 x 64 output tiles, 4 x 4 per thread, for large M (prefill).

// Fused residual add (mode 1): the layer's output plus the residual stream in x2.
fn epilogue(row: u32, col: u32, v: f32) -> f32 {
    if (node.mode == 1u) { return v + x2[row * node.ldy + col]; }
    return v;
}

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
    let k4 = K / 4u * 4u;
    let wrow = col * K;
    // Rows are taken four at a time in one vec4 accumulator (a dynamically indexed array
    // would live in local memory on some GPUs): M <= 4 reads the weights once.
    for (var r0 = 0u; r0 < m; r0 += 4u) {
        var acc = vec4<f32>(0.0);
        if (col < node.n) {
            // Rows past m read whatever the buffer holds there; their sums are never stored.
            let x0 = r0 * K;
            for (var k = lane * 4u; k < k4; k += GV_LANES * 4u) {
                let wv = vec4<f32>(f32(w[wrow + k]), f32(w[wrow + k + 1u]), f32(w[wrow + k + 2u]), f32(w[wrow + k + 3u]));
                acc += vec4<f32>(
                    dot(wv, vec4<f32>(x[x0 + k], x[x0 + k + 1u], x[x0 + k + 2u], x[x0 + k + 3u])),
                    dot(wv, vec4<f32>(x[x0 + K + k], x[x0 + K + k + 1u], x[x0 + K + k + 2u], x[x0 + K + k + 3u])),
                    dot(wv, vec4<f32>(x[x0 + 2u * K + k], x[x0 + 2u * K + k + 1u], x[x0 + 2u * K + k + 2u], x[x0 + 2u * K + k + 3u])),
                    dot(wv, vec4<f32>(x[x0 + 3u * K + k], x[x0 + 3u * K + k + 1u], x[x0 + 3u * K + k + 2u], x[x0 + 3u * K + k + 3u])),
                );
            }
            for (var k = k4 + lane; k < K; k += GV_LANES) {
                let wv = f32(w[wrow + k]);
                acc += wv * vec4<f32>(x[x0 + k], x[x0 + K + k], x[x0 + 2u * K + k], x[x0 + 3u * K + k]);
            }
        }
        gpart[r0 * 256u + t] = acc.x;
        if (r0 + 1u < m) { gpart[(r0 + 1u) * 256u + t] = acc.y; }
        if (r0 + 2u < m) { gpart[(r0 + 2u) * 256u + t] = acc.z; }
        if (r0 + 3u < m) { gpart[(r0 + 3u) * 256u + t] = acc.w; }
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
            let col_out = node.n_offset + first + c;
            y[r * node.ldy + col_out] = epilogue(r, col_out, s);
        }
    }
}

const FB_M: u32 = 8u;
const FB_N: u32 = 64u;
const FB_K: u32 = 16u;
const FB_WPAD: u32 = 17u; // row stride of the weight tile (padding against bank conflicts)
var<workgroup> fx: array<f32, 256>;   // 2 buffers x 16 (k) x 8 (rows): k-major
var<workgroup> fw: array<f32, 2176>;  // 2 buffers x 64 (cols) x 17

fn flat_load(tile: u32, buf: u32, t: u32, m0: u32, n0: u32, M: u32) {
    let K = node.k;
    let k0 = tile * FB_K;
    for (var e = t; e < FB_M * FB_K; e += FB_N) {
        let r = e / FB_K;
        let c = e % FB_K;
        var v = 0.0;
        if (m0 + r < M && k0 + c < K) { v = x[(m0 + r) * K + k0 + c]; }
        fx[buf * FB_M * FB_K + c * FB_M + r] = v;
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

fn flat_store(row: u32, col: u32, M: u32, v: f32) {
    let c = node.n_offset + col;
    if (row < M) { y[row * node.ldy + c] = epilogue(row, c, v); }
}

@compute @workgroup_size(64)
fn flat_gemm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let M = row_count();
    let n0 = wg.x * FB_N;
    let m0 = wg.y * FB_M;
    let tiles = (node.k + FB_K - 1u) / FB_K;
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    flat_load(0u, 0u, t, m0, n0, M);
    workgroupBarrier();
    for (var i = 0u; i < tiles; i++) {
        let cur = i % 2u;
        // Fill the other buffer with the next tile while this one is consumed; the
        // barrier at the end of the previous iteration made that buffer free.
        if (i + 1u < tiles) { flat_load(i + 1u, 1u - cur, t, m0, n0, M); }
        let xb = cur * FB_M * FB_K;
        let wb = cur * FB_N * FB_WPAD + t * FB_WPAD;
        for (var kk = 0u; kk < FB_K; kk++) {
            let wv = fw[wb + kk];
            let o = xb + kk * FB_M;
            lo += wv * vec4<f32>(fx[o], fx[o + 1u], fx[o + 2u], fx[o + 3u]);
            hi += wv * vec4<f32>(fx[o + 4u], fx[o + 5u], fx[o + 6u], fx[o + 7u]);
        }
        workgroupBarrier();
    }
    let col = n0 + t;
    if (col < node.n) {
        flat_store(m0, col, M, lo.x);
        flat_store(m0 + 1u, col, M, lo.y);
        flat_store(m0 + 2u, col, M, lo.z);
        flat_store(m0 + 3u, col, M, lo.w);
        flat_store(m0 + 4u, col, M, hi.x);
        flat_store(m0 + 5u, col, M, hi.y);
        flat_store(m0 + 6u, col, M, hi.z);
        flat_store(m0 + 7u, col, M, hi.w);
    }
}

const GM: u32 = 64u;
const GK: u32 = 16u;
var<workgroup> ga: array<vec4<f32>, 256>; // [k][row / 4]: 16 x 16 vec4 = 64 rows of x
var<workgroup> gb: array<vec4<f32>, 256>; // [k][col / 4]: 64 rows of w

fn gemm_store(r: u32, col: u32, M: u32, v: vec4<f32>) {
    if (r >= M) { return; }
    let base = r * node.ldy + node.n_offset;
    let c = node.n_offset + col;
    if (col < node.n) { y[base + col] = epilogue(r, c, v.x); }
    if (col + 1u < node.n) { y[base + col + 1u] = epilogue(r, c + 1u, v.y); }
    if (col + 2u < node.n) { y[base + col + 2u] = epilogue(r, c + 2u, v.z); }
    if (col + 3u < node.n) { y[base + col + 3u] = epilogue(r, c + 3u, v.w); }
}

@compute @workgroup_size(256)
fn gemm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let M = row_count();
    let K = node.k;
    let n0 = wg.x * GM;
    let m0 = wg.y * GM;
    let tx = t % 16u;
    let ty = t / 16u;
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < K; k0 += GK) {
        for (var j = 0u; j < 4u; j++) {
            let e = t + 256u * j;
            let r = e / GK;
            let c = e % GK;
            var a = 0.0;
            if (m0 + r < M && k0 + c < K) { a = x[(m0 + r) * K + k0 + c]; }
            ga[c * 16u + r / 4u][r % 4u] = a;
            var b = 0.0;
            if (n0 + r < node.n && k0 + c < K) { b = f32(w[(n0 + r) * K + k0 + c]); }
            gb[c * 16u + r / 4u][r % 4u] = b;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < GK; kk++) {
            let a = ga[kk * 16u + ty];
            let b = gb[kk * 16u + tx];
            c0 += a.x * b;
            c1 += a.y * b;
            c2 += a.z * b;
            c3 += a.w * b;
        }
        workgroupBarrier();
    }
    let r = m0 + ty * 4u;
    let col = n0 + tx * 4u;
    gemm_store(r, col, M, c0);
    gemm_store(r + 1u, col, M, c1);
    gemm_store(r + 2u, col, M, c2);
    gemm_store(r + 3u, col, M, c3);
}
