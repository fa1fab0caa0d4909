// What both GEMMs on cooperative matrices share (gemm_matrix.wgsl, gemm_matrix_direct.wgsl):
// the tile (constants from the header), the staged x tile, the way out through the
// epilogue. A workgroup (8 subgroups) owns MX_M tokens x MX_N columns; subgroup s owns the
// 32 x 32 block at tokens 32 (s / 4), columns 32 (s % 4), as 2 x 2 accumulators of 16 x 16
// f32 sums. x is staged in steps of MX_K, rounded to f16 once (as the CUDA tensor-core
// kernels do); rows past M and K past its end are staged as zeros.
//
// y = x w^T: the A operand is x's [token][k] tile (row-major), the B operand w^T, whose
// column n is weight row n, so a [column][k] tile of w is B in column-major order.

const MX_LD: u32 = MX_K + 8u; // staged row stride in halves: 16 bytes of padding between rows
const_assert MX_M == 64u && MX_N == 128u && MX_K == 32u;
var<workgroup> mx: array<f16, MX_M * MX_LD>;  // [token][k]
var<workgroup> mc: array<f32, 8u * 256u>;     // per subgroup, a 16 x 16 tile of sums on its way out
alias Acc = coop_mat16x16<f32, C>;

// One accumulator to y: rows row0 .., columns col0 .. of the output, through the epilogue.
fn matrix_out(c: Acc, sg: u32, lane: u32, row0: u32, col0: u32, M: u32) {
    coopStoreT(c, &mc[sg * 256u], 16u);
    workgroupBarrier();
    for (var e = lane; e < 256u; e += 32u) {
        store_y(row0 + e / 16u, col0 + e % 16u, M, mc[sg * 256u + e]);
    }
    workgroupBarrier();
}

// Token row r's x at k .. k + 3 (zeros past M and K).
fn matrix_x(r: u32, k: u32, M: u32, K: u32, aligned: bool) -> vec4<f32> {
    let ok = r < M && k < K;
    if (aligned) {
        return select(vec4<f32>(0.0), x[select(0u, (r * K + k) >> 2u, ok)], ok);
    }
    var v = vec4<f32>(0.0);
    for (var j = 0u; j < 4u; j++) {
        if (r < M && k + j < K) { v[j] = xs(r * K + k + j); }
    }
    return v;
}

// Four values of x into the staged tile at `at`, rounded to f16.
fn stage_x(at: u32, v: vec4<f32>) {
    mx[at] = f16(v.x);
    mx[at + 1u] = f16(v.y);
    mx[at + 2u] = f16(v.z);
    mx[at + 3u] = f16(v.w);
}
