// B on the device's matrix units, f16 weights read as they lie (compiled with
// gemm_matrix_direct.wgsl, whose `direct_b` it uses; K a multiple of 16). A workgroup takes
// FM_ROWS = 16 token rows (M padded to them) and FM_N = 32 columns; its FM_SPLIT = 8
// subgroups split K, subgroup s taking steps s, s + 8, s + 16, ... of FM_K = 32 deep, so one
// round of the workgroup reads 256 contiguous k of each weight row and of each x row. A
// decode step's few tokens make the weights the whole cost: each subgroup keeps its next
// round's four B operands in flight while it multiplies this round's, and x, read once per
// 32 columns, is staged as f16 in the subgroup's own slice of workgroup memory. The eight
// partial sums meet in workgroup memory at the end, then go through the epilogue. Rounds past
// K stage zeros for x and read valid weights (the last 16 of the row), adding nothing.

// FM_ROWS, FM_N and FM_SPLIT come from the header; the indexing below assumes these values.
const_assert FM_ROWS == 16u && FM_N == 32u && FM_SPLIT == 8u;
const FM_K: u32 = 32u;
const FM_LD: u32 = FM_K + 8u; // staged row stride in halves: 16 bytes of padding between rows
var<workgroup> fm_x: array<f16, FM_SPLIT * FM_ROWS * FM_LD>; // per subgroup: [row][k]
var<workgroup> fm_sum: array<f32, FM_SPLIT * 512u>;         // per subgroup: two 16 x 16 sums

// Sixteen values of x into the staged tile at `at`, rounded to f16.
fn stage_x16(at: u32, x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>) {
    for (var j = 0u; j < 4u; j++) {
        fm_x[at + j] = f16(x0[j]);
        fm_x[at + 4u + j] = f16(x1[j]);
        fm_x[at + 8u + j] = f16(x2[j]);
        fm_x[at + 12u + j] = f16(x3[j]);
    }
}

@compute @workgroup_size(256)
fn flat_matrix(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
    @builtin(subgroup_id) sg: u32,
) {
    let M = row_count();
    let K = node.k;
    let n0 = wg.x * FM_N;
    let m0 = wg.y * FM_ROWS;
    // Invocation t stages 16 k of token row t / 16: k from 16 (t % 16) of the round's 256,
    // into the slice of the subgroup whose step they are.
    let xr = t / 16u;
    let xk = (t % 16u) * 16u;
    let at = (xk / FM_K) * FM_ROWS * FM_LD + xr * FM_LD + xk % FM_K;
    let round = FM_SPLIT * FM_K;
    let rounds = (K + round - 1u) / round;
    let last = K - 16u;
    var x0 = matrix_x(m0 + xr, xk, M, K, true);
    var x1 = matrix_x(m0 + xr, xk + 4u, M, K, true);
    var x2 = matrix_x(m0 + xr, xk + 8u, M, K, true);
    var x3 = matrix_x(m0 + xr, xk + 12u, M, K, true);
    // B operands of columns n0 and n0 + 16 (second digit), 16 deep at k and k + 16 (first).
    // (Two rounds of them in flight ran slower on an H200: 20.5 against 18.0 ms for a
    // Llama-2-7B batch-8 step's B.)
    var k = sg * FM_K;
    var b00 = direct_b(n0, min(k, last), K);
    var b01 = direct_b(n0 + 16u, min(k, last), K);
    var b10 = direct_b(n0, min(k + 16u, last), K);
    var b11 = direct_b(n0 + 16u, min(k + 16u, last), K);
    var s0 = Acc();
    var s1 = Acc();
    for (var i = 0u; i < rounds; i++) {
        stage_x16(at, x0, x1, x2, x3);
        workgroupBarrier();
        let n00 = b00;
        let n01 = b01;
        let n10 = b10;
        let n11 = b11;
        if (i + 1u < rounds) {
            let kx = (i + 1u) * round + xk;
            x0 = matrix_x(m0 + xr, kx, M, K, true);
            x1 = matrix_x(m0 + xr, kx + 4u, M, K, true);
            x2 = matrix_x(m0 + xr, kx + 8u, M, K, true);
            x3 = matrix_x(m0 + xr, kx + 12u, M, K, true);
            k += round;
            b00 = direct_b(n0, min(k, last), K);
            b01 = direct_b(n0 + 16u, min(k, last), K);
            b10 = direct_b(n0, min(k + 16u, last), K);
            b11 = direct_b(n0 + 16u, min(k + 16u, last), K);
        }
        let a0 = coopLoadT<coop_mat16x16<f16, A>>(&fm_x[sg * FM_ROWS * FM_LD], FM_LD);
        let a1 = coopLoadT<coop_mat16x16<f16, A>>(&fm_x[sg * FM_ROWS * FM_LD + 16u], FM_LD);
        s0 = coopMultiplyAdd(a0, n00, s0);
        s1 = coopMultiplyAdd(a0, n01, s1);
        s0 = coopMultiplyAdd(a1, n10, s0);
        s1 = coopMultiplyAdd(a1, n11, s1);
        workgroupBarrier();
    }
    coopStoreT(s0, &fm_sum[sg * 512u], 16u);
    coopStoreT(s1, &fm_sum[sg * 512u + 256u], 16u);
    workgroupBarrier();
    for (var e = t; e < 512u; e += 256u) {
        var s = 0.0;
        for (var p = 0u; p < FM_SPLIT; p++) {
            s += fm_sum[p * 512u + e];
        }
        store_y(m0 + (e % 256u) / 16u, n0 + (e / 256u) * 16u + e % 16u, M, s);
    }
}
