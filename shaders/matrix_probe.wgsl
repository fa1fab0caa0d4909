// Test only (backend/wgpu/tests.rs, `cooperative_matrix_layouts_read_back`): each way the
// matrix kernels load and store cooperative matrices, read back through a product with the
// identity, so a test names the one a driver gets wrong. `src` holds a 16 x 32 f16 matrix
// (row-major, stride 32), `wf` a 16 x 24 f32 one; each probe writes a 16 x 16 f32 matrix,
// row-major, into its quarter of `dst`.
enable f16;
enable wgpu_cooperative_matrix;

@group(0) @binding(0) var<storage, read> src: array<f16>;
@group(0) @binding(1) var<storage, read_write> src_rw: array<f16>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

var<workgroup> ident: array<f16, 256>;
var<workgroup> wf: array<f32, 384>;

@compute @workgroup_size(32)
fn matrix_probe(@builtin(local_invocation_index) lane: u32) {
    for (var e = lane; e < 256u; e += 32u) {
        ident[e] = select(f16(0.0), f16(1.0), e / 16u == e % 16u);
    }
    for (var e = lane; e < 384u; e += 32u) {
        wf[e] = f32(e / 24u) * 100.0 + f32(e % 24u);
    }
    workgroupBarrier();
    let i_a = coopLoadT<coop_mat16x16<f16, A>>(&ident[0], 16u);
    let i_b = coopLoad<coop_mat16x16<f16, B>>(&ident[0], 16u);
    let zero = coop_mat16x16<f32, C>();
    // 0: B row-major from read-only storage (V in the attention): I B = src[0..16][0..16].
    coopStoreT(coopMultiplyAdd(i_a, coopLoadT<coop_mat16x16<f16, B>>(&src[0], 32u), zero), &dst[0], 16u);
    // 1: B column-major (K^T, the GEMM's weights): element (r, c) = src[c * 32 + r].
    coopStoreT(coopMultiplyAdd(i_a, coopLoad<coop_mat16x16<f16, B>>(&src[0], 32u), zero), &dst[256], 16u);
    // 2: B row-major from read-write storage (the KV cache's binding).
    coopStoreT(coopMultiplyAdd(i_a, coopLoadT<coop_mat16x16<f16, B>>(&src_rw[0], 32u), zero), &dst[512], 16u);
    // 3: C row-major from workgroup memory, stride 24, plus A (row-major, storage) times I.
    let c = coopLoadT<coop_mat16x16<f32, C>>(&wf[0], 24u);
    coopStoreT(coopMultiplyAdd(coopLoadT<coop_mat16x16<f16, A>>(&src[0], 32u), i_b, c), &dst[768], 16u);
}
