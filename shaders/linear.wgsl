// y[m, n_offset + j] = sum_k x[m, k] * w[j, k]: the three dataflows of a linear layer.
// A (gemv): M < M1. 32 threads per output column, 8 columns per workgroup.
// B (flat_gemm): M padded to 8, N tiled across workgroups (8 columns each), K walked inside
//   the workgroup; each weight load feeds 8 rows.
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
    // Decode's common case, one row: a scalar accumulator, nothing else read.
    if (m == 1u) {
        var acc = 0.0;
        if (col < node.n) {
            for (var k = lane * 4u; k < k4; k += GV_LANES * 4u) {
                let wv = vec4<f32>(f32(w[wrow + k]), f32(w[wrow + k + 1u]), f32(w[wrow + k + 2u]), f32(w[wrow + k + 3u]));
                acc += dot(wv, vec4<f32>(x[k], x[k + 1u], x[k + 2u], x[k + 3u]));
            }
            for (var k = k4 + lane; k < K; k += GV_LANES) {
                acc += f32(w[wrow + k]) * x[k];
            }
        }
        gpart[t] = acc;
    }
    // More rows are taken four at a time in one vec4 accumulator (a dynamically indexed
    // array would live in local memory on some GPUs): M <= 4 reads the weights once.
    for (var r0 = 0u; r0 < select(m, 0u, m == 1u); r0 += 4u) {
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

// B: M padded to 8 per workgroup row tile, N tiled across workgroups (8 columns each), K
// walked inside the workgroup by 32 lanes per column in coalesced runs of 4. Every weight
// read feeds 8 rows (two vec4 accumulators), so the weights stream once per 8 rows.
const FB_M: u32 = 8u;
var<workgroup> fpart: array<vec4<f32>, 512>; // 256 threads x (rows 0-3, rows 4-7)

fn flat_x(row: u32, k: u32, M: u32) -> vec4<f32> {
    if (row >= M) { return vec4<f32>(0.0); }
    let b = row * node.k + k;
    return vec4<f32>(x[b], x[b + 1u], x[b + 2u], x[b + 3u]);
}

fn flat_x1(row: u32, k: u32, M: u32) -> f32 {
    if (row >= M) { return 0.0; }
    return x[row * node.k + k];
}

fn flat_store(row: u32, col: u32, M: u32, v: f32) {
    let c = node.n_offset + col;
    if (row < M) { y[row * node.ldy + c] = epilogue(row, c, v); }
}

@compute @workgroup_size(256)
fn flat_gemm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let M = row_count();
    let K = node.k;
    let first = wg.x * GV_ROWS;
    let col = first + t / GV_LANES;
    let lane = t % GV_LANES;
    let m0 = wg.y * FB_M;
    let k4 = K / 4u * 4u;
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    if (col < node.n) {
        let wrow = col * K;
        for (var k = lane * 4u; k < k4; k += GV_LANES * 4u) {
            let wv = vec4<f32>(f32(w[wrow + k]), f32(w[wrow + k + 1u]), f32(w[wrow + k + 2u]), f32(w[wrow + k + 3u]));
            lo += vec4<f32>(dot(wv, flat_x(m0, k, M)), dot(wv, flat_x(m0 + 1u, k, M)), dot(wv, flat_x(m0 + 2u, k, M)), dot(wv, flat_x(m0 + 3u, k, M)));
            hi += vec4<f32>(dot(wv, flat_x(m0 + 4u, k, M)), dot(wv, flat_x(m0 + 5u, k, M)), dot(wv, flat_x(m0 + 6u, k, M)), dot(wv, flat_x(m0 + 7u, k, M)));
        }
        for (var k = k4 + lane; k < K; k += GV_LANES) {
            let wv = f32(w[wrow + k]);
            lo += wv * vec4<f32>(flat_x1(m0, k, M), flat_x1(m0 + 1u, k, M), flat_x1(m0 + 2u, k, M), flat_x1(m0 + 3u, k, M));
            hi += wv * vec4<f32>(flat_x1(m0 + 4u, k, M), flat_x1(m0 + 5u, k, M), flat_x1(m0 + 6u, k, M), flat_x1(m0 + 7u, k, M));
        }
    }
    fpart[2u * t] = lo;
    fpart[2u * t + 1u] = hi;
    workgroupBarrier();
    // Thread (c, r) for 8 columns x 8 rows adds the 32 lanes' partial sums.
    if (t < GV_ROWS * FB_M) {
        let c = t / FB_M;
        let r = t % FB_M;
        var s = 0.0;
        for (var l = 0u; l < GV_LANES; l++) {
            s += fpart[2u * (c * GV_LANES + l) + r / 4u][r % 4u];
        }
        if (first + c < node.n) { flat_store(m0 + r, first + c, M, s); }
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
