// C on the device's matrix units: cooperative matrices (NVIDIA tensor cores, AMD WMMA, ...;
// `enable wgpu_cooperative_matrix;` is prepended by shaders.rs). Compiled only where the
// adapter offers 16 x 16 x 16 products of f16 into f32 sums on subgroups of 32 lanes and the
// weights are f16 or block-quantized (f32 weights keep f32 products in linear.wgsl's gemm).
//
// A workgroup (8 subgroups) owns MX_M tokens x MX_N columns (constants from the header);
// subgroup s owns the 32 x 32 block at tokens 32 (s / 4), columns 32 (s % 4), as 2 x 2
// accumulators. Each step of MX_K along K stages the tokens' x (rounded to f16 once, as the
// CUDA tensor-core kernels do) and the columns' weights (through `w4`, so quantized blocks
// are dequantized here) in workgroup memory; each subgroup then takes MX_K / 16 products per
// accumulator. Rows past M, columns past N and K past its end are staged as zeros.
//
// y = x w^T: the A operand is x's [token][k] tile (row-major), the B operand w^T, whose
// column n is weight row n, so w's [column][k] tile is B in column-major order.

const MX_LD: u32 = MX_K + 8u; // staged row stride in halves: 16 bytes of padding between rows
const_assert MX_M == 64u && MX_N == 128u && MX_K % 16u == 0u;
var<workgroup> mx: array<f16, MX_M * MX_LD>;  // [token][k]
var<workgroup> mw: array<f16, MX_N * MX_LD>;  // [column][k]
var<workgroup> mc: array<f32, 8u * 256u>;     // per subgroup, a 16 x 16 tile of sums on its way out

alias Acc = coop_mat16x16<f32, C>;

// One accumulator to y: rows row0 .., columns col0 .. of the output, through the epilogue.
fn matrix_out(c: Acc, sg: u32, lane: u32, row0: u32, col0: u32, M: u32) {
    coopStoreT(c, &mc[sg * 256u], 16u);
    workgroupBarrier();
    for (var e = lane; e < 256u; e += 32u) {
        let r = row0 + e / 16u;
        let col = col0 + e % 16u;
        if (r < M && col < node.n) {
            let c = node.n_offset + col;
            y[r * node.ldy + c] = epilogue(r, c, mc[sg * 256u + e]);
        }
    }
    workgroupBarrier();
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
    var c00 = Acc();
    var c01 = Acc();
    var c10 = Acc();
    var c11 = Acc();
    for (var k0 = 0u; k0 < K; k0 += MX_K) {
        // x: MX_M x MX_K values, four per invocation and round.
        for (var e = t; e < MX_M * MX_K / 4u; e += 256u) {
            let r = e / (MX_K / 4u);
            let c = (e % (MX_K / 4u)) * 4u;
            var v = vec4<f32>(0.0);
            if (m0 + r < M) {
                let i = (m0 + r) * K + k0 + c;
                if (aligned && k0 + c < K) {
                    v = x[i >> 2u];
                } else {
                    for (var j = 0u; j < 4u; j++) {
                        if (k0 + c + j < K) { v[j] = xs(i + j); }
                    }
                }
            }
            let at = r * MX_LD + c;
            mx[at] = f16(v.x);
            mx[at + 1u] = f16(v.y);
            mx[at + 2u] = f16(v.z);
            mx[at + 3u] = f16(v.w);
        }
        // w: MX_N x MX_K values, four consecutive k of one row per invocation and round.
        for (var e = t; e < MX_N * MX_K / 4u; e += 256u) {
            let r = e / (MX_K / 4u);
            let c = (e % (MX_K / 4u)) * 4u;
            var v = vec4<f32>(0.0);
            if (n0 + r < node.n) {
                if (aligned && k0 + c < K) {
                    v = w4(n0 + r, k0 + c);
                } else {
                    for (var j = 0u; j < 4u; j++) {
                        if (k0 + c + j < K) { v[j] = ws((n0 + r) * K + k0 + c + j); }
                    }
                }
            }
            let at = r * MX_LD + c;
            mw[at] = f16(v.x);
            mw[at + 1u] = f16(v.y);
            mw[at + 2u] = f16(v.z);
            mw[at + 3u] = f16(v.w);
        }
        workgroupBarrier();
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
