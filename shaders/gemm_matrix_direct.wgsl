// C on the device's matrix units with f16 weights read as they lie (K a multiple of 16):
// only x is staged (matrix_common.wgsl); each subgroup loads its B operands straight from
// the weight buffer, a 16 x 16 tile of w^T being 16 weight rows of 16 halves, column-major
// with the row length as stride. The next step's x and B operands are loaded before this
// step's products. The weights' binding is declared here, as f16 scalars (the matrix loads
// take a pointer to one element). Columns past N read whatever follows (robust buffer
// access keeps reads inside the binding); their sums are never stored.

@group(0) @binding(5) var<storage, read> wh: array<f16>;

alias OperandB = coop_mat16x16<f16, B>;

// The B operand of weight rows r .. r + 15 at k .. k + 15.
fn direct_b(r: u32, k: u32, K: u32) -> OperandB {
    return coopLoad<OperandB>(&wh[r * K + k], K);
}

@compute @workgroup_size(256)
fn gemm_matrix_direct(
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
    // Invocation t stages x of token rows t / 8 and t / 8 + 32, four k from 4 (t % 8).
    let xr = t / 8u;
    let xk = (t % 8u) * 4u;
    let at = xr * MX_LD + xk;
    var x0 = matrix_x(m0 + xr, xk, M, K, true);
    var x1 = matrix_x(m0 + xr + 32u, xk, M, K, true);
    // B operands of column tiles tn and tn + 16 (second digit), 16 deep at k0 and k0 + 16 (first).
    let r0 = n0 + tn;
    var b00 = direct_b(r0, 0u, K);
    var b01 = direct_b(r0 + 16u, 0u, K);
    var b10 = direct_b(r0, 16u, K);
    var b11 = direct_b(r0 + 16u, 16u, K);
    var c00 = Acc();
    var c01 = Acc();
    var c10 = Acc();
    var c11 = Acc();
    for (var k0 = 0u; k0 < K; k0 += MX_K) {
        stage_x(at, x0);
        stage_x(at + 32u * MX_LD, x1);
        workgroupBarrier();
        let n00 = b00;
        let n01 = b01;
        let n10 = b10;
        let n11 = b11;
        let k1 = k0 + MX_K;
        if (k1 < K) {
            x0 = matrix_x(m0 + xr, k1 + xk, M, K, true);
            x1 = matrix_x(m0 + xr + 32u, k1 + xk, M, K, true);
            b00 = direct_b(r0, k1, K);
            b01 = direct_b(r0 + 16u, k1, K);
            b10 = direct_b(r0, k1 + 16u, K);
            b11 = direct_b(r0 + 16u, k1 + 16u, K);
        }
        let a0 = coopLoadT<coop_mat16x16<f16, A>>(&mx[tm * MX_LD], MX_LD);
        let a1 = coopLoadT<coop_mat16x16<f16, A>>(&mx[(tm + 16u) * MX_LD], MX_LD);
        c00 = coopMultiplyAdd(a0, n00, c00);
        c01 = coopMultiplyAdd(a0, n01, c01);
        c10 = coopMultiplyAdd(a1, n00, c10);
        c11 = coopMultiplyAdd(a1, n01, c11);
        let a2 = coopLoadT<coop_mat16x16<f16, A>>(&mx[tm * MX_LD + 16u], MX_LD);
        let a3 = coopLoadT<coop_mat16x16<f16, A>>(&mx[(tm + 16u) * MX_LD + 16u], MX_LD);
        c00 = coopMultiplyAdd(a2, n10, c00);
        c01 = coopMultiplyAdd(a2, n11, c01);
        c10 = coopMultiplyAdd(a3, n10, c10);
        c11 = coopMultiplyAdd(a3, n11, c11);
        workgroupBarrier();
    }
    matrix_out(c00, sg, lane, m0 + tm, n0 + tn, M);
    matrix_out(c01, sg, lane, m0 + tm, n0 + tn + 16u, M);
    matrix_out(c10, sg, lane, m0 + tm + 16u, n0 + tn, M);
    matrix_out(c11, sg, lane, m0 + tm + 16u, n0 + tn + 16u, M);
}
