// C on the device's matrix units, the staged form (matrix_common.wgsl has the tile): each
// step of MX_K along K stages the tokens' x and the columns' weights (through `w4`, so
// block-quantized weights are dequantized here, rounded to f16) in workgroup memory; each
// subgroup then takes MX_K / 16 products per accumulator. The next step's values are
// fetched into registers before this step's products, so their loads are in flight while
// the matrix units work. Columns past N are staged as zeros. Every weight storage compiles
// it; f16 weights whose rows are whole steps of 16 run gemm_matrix_direct.wgsl instead.

var<workgroup> mw: array<f16, MX_N * MX_LD>;  // [column][k]

// What invocation t fetches for one step, four consecutive k from column c = 4 (t % 8) of
// the step: x of token rows r = t / 8 and r + 32, weights of rows r, r + 32, r + 64, r + 96.
// Named values, not an array, and every load unconditional (a clamped index, zeros chosen
// after): the six loads are issued back to back. (Fetched in loops with the bounds checks
// around each load, one step waited for each load in turn: 3.3 us per step on an H200.)
struct Fetch {
    x0: vec4<f32>,
    x1: vec4<f32>,
    w0: vec4<f32>,
    w1: vec4<f32>,
    w2: vec4<f32>,
    w3: vec4<f32>,
}

// Weight row n at k .. k + 3 (zeros past N and K).
fn matrix_w(n: u32, k: u32, K: u32, aligned: bool) -> vec4<f32> {
    let ok = n < node.n && k < K;
    if (aligned) {
        return select(vec4<f32>(0.0), w4(select(0u, n, ok), select(0u, k, ok)), ok);
    }
    var v = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        if (n < node.n && k + j < K) { v[j] = ws(n * K + k + j); }
    }
    return v;
}

fn fetch(t: u32, m0: u32, n0: u32, k0: u32, M: u32, K: u32, aligned: bool) -> Fetch {
    let r = t / 8u;
    let k = k0 + (t % 8u) * 4u;
    return Fetch(
        matrix_x(m0 + r, k, M, K, aligned),
        matrix_x(m0 + r + 32u, k, M, K, aligned),
        matrix_w(n0 + r, k, K, aligned),
        matrix_w(n0 + r + 32u, k, K, aligned),
        matrix_w(n0 + r + 64u, k, K, aligned),
        matrix_w(n0 + r + 96u, k, K, aligned),
    );
}

fn stage_w(at: u32, v: vec4<f32>) {
    mw[at] = f16(v.x);
    mw[at + 1u] = f16(v.y);
    mw[at + 2u] = f16(v.z);
    mw[at + 3u] = f16(v.w);
}

// One step's values into workgroup memory, rounded to f16.
fn stage(t: u32, f: Fetch) {
    let at = (t / 8u) * MX_LD + (t % 8u) * 4u;
    stage_x(at, f.x0);
    stage_x(at + 32u * MX_LD, f.x1);
    stage_w(at, f.w0);
    stage_w(at + 32u * MX_LD, f.w1);
    stage_w(at + 64u * MX_LD, f.w2);
    stage_w(at + 96u * MX_LD, f.w3);
}

@compute @workgroup_size(256)
fn gemm_matrix(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let M = row_count();
    let K = node.k;
    let n0 = wg.x * MX_N;
    let m0 = wg.y * MX_M;
    let tm = (sg / 4u) * 32u;
    let tn = (sg % 4u) * 32u;
    let aligned = K % 4u == 0u;
    var next = fetch(t, m0, n0, 0u, M, K, aligned);
    var c00 = Acc();
    var c01 = Acc();
    var c10 = Acc();
    var c11 = Acc();
    for (var k0 = 0u; k0 < K; k0 += MX_K) {
        stage(t, next);
        workgroupBarrier();
        // The next step's loads are in flight during this step's products.
        if (k0 + MX_K < K) {
            next = fetch(t, m0, n0, k0 + MX_K, M, K, aligned);
        }
        for (var kk = 0u; kk < MX_K; kk += 16u) {
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&mx[tm * MX_LD + kk], MX_LD);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&mx[(tm + 16u) * MX_LD + kk], MX_LD);
            let b0 = coopLoad<coop_mat16x16<f16, B>>(&mw[tn * MX_LD + kk], MX_LD);
            let b1 = coopLoad<coop_mat16x16<f16, B>>(&mw[(tn + 16u) * MX_LD + kk], MX_LD);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
        workgroupBarrier();
    }
    matrix_out(c00, sg, lane, m0 + tm, n0 + tn, M);
    matrix_out(c01, sg, lane, m0 + tm, n0 + tn + 16u, M);
    matrix_out(c10, sg, lane, m0 + tm + 16u, n0 + tn, M);
    matrix_out(c11, sg, lane, m0 + tm + 16u, n0 + tn + 16u, M);
}
