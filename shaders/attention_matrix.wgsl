// Prefill attention on the device's matrix units (cooperative matrices; `enable
// wgpu_cooperative_matrix;` is prepended by shaders.rs). Compiled where the GEMM's are and
// the KV cache is f16. A workgroup is one 32-lane subgroup and takes MATRIX_ATTN_ROWS = 16
// query rows of one head, all of one sequence (the lowering runs it only on steps of one
// sequence), and walks their keys in tiles of 16 twice: first S = Q K^T for each row's
// largest score, then S again, P = e^(s - max) and O += P V. Two passes over K instead of
// the online softmax's rescaling, which an accumulator cannot take (no per-row scaling of a
// cooperative matrix); P <= 1 then fits f16 and the softmax is exact, with no fallback.
// Q is staged scaled, in f16; K^T and V are read from the cache as they lie: a 16 x 16
// tile of K^T is 16 cache rows of 16 dims, column-major with the KV row as stride, and one
// of V the same rows, row-major. O stays in eight 16-dim accumulators (head sizes up to 128).
// Keys past a row's position are masked; past the cache's written positions the tile reads
// finite values (wgpu zero-fills buffers, robust access keeps reads inside the binding).

const AM_QLD: u32 = MX_MAX_HD + 8u; // row stride of Q (halves)
const AM_PLD: u32 = 24u;            // row stride of P (halves)
const AM_NEG: f32 = -3.0e38;
// The scalar comes first: declared after the f16 arrays (in three orders of them tried),
// the H200's driver (NVIDIA 580.159.04) put the cooperative-matrix stores into `as_` 33
// floats before where its plain loads read them. matrix_attention_matches_the_oracle
// catches an order that breaks.
var<workgroup> am_last: u32;
var<workgroup> aq: array<f16, 16u * AM_QLD>;  // Q * scale, [row][dim]
var<workgroup> as_: array<f32, 256u>;          // S, [row][key]
var<workgroup> ap: array<f16, 16u * AM_PLD>;  // P, [row][key]

// S of key tile j0: the rows' staged Q against 16 cache rows from `kbase`.
fn matrix_scores(j0: u32, kbase: u32, kv_dim: u32, hd: u32) -> coop_mat16x16<f32, C> {
    var s = coop_mat16x16<f32, C>();
    for (var c = 0u; c < hd; c += 16u) {
        let a = coopLoadT<coop_mat16x16<f16, A>>(&aq[c], AM_QLD);
        let b = coopLoad<coop_mat16x16<f16, B>>(&kc[kbase + j0 * kv_dim + c], kv_dim);
        s = coopMultiplyAdd(a, b, s);
    }
    return s;
}

// The V tile of 16 cache rows from `vrow`, dims c .. c + 15 (row-major, the KV row as stride).
fn matrix_values(vrow: u32, c: u32, kv_dim: u32) -> coop_mat16x16<f16, B> {
    return coopLoadT<coop_mat16x16<f16, B>>(&vc[vrow + c], kv_dim);
}

// Dims c .. c + 15 of the rows' outputs, divided by their sums: through `as_`, this lane
// writing 8 dims (from kq) of its row r, whose output starts at `out`. The whole workgroup
// calls it (it holds barriers).
fn matrix_attn_out(o: coop_mat16x16<f32, C>, c: u32, row_ok: bool, out: u32, r: u32, kq: u32, l: f32) {
    coopStoreT(o, &as_[0], 16u);
    workgroupBarrier();
    if (row_ok) {
        for (var e = 0u; e < 8u; e++) {
            y[out + c + kq + e] = as_[r * 16u + kq + e] / l;
        }
    }
    workgroupBarrier();
}

// grid: (row tiles of 16, heads).
@compute @workgroup_size(32)
fn attn_matrix(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let i0 = wg.x * 16u;
    let h = wg.y;
    let hd = node.head_dim;
    let M = step.m;
    let kv_dim = node.kv_heads * hd;
    let width = (node.heads + 2u * node.kv_heads) * hd;
    for (var e = lane; e < 16u * hd; e += 32u) {
        let r = e / hd;
        var q = 0.0;
        if (i0 + r < M) { q = xs((i0 + r) * width + h * hd + e % hd) * node.scale; }
        aq[r * AM_QLD + e % hd] = f16(q);
    }
    // This lane's row r and its keys kq .. kq + 7 of each tile; the tile's last key is the
    // largest position among its rows.
    let r = lane / 2u;
    let kq = (lane % 2u) * 8u;
    let row_ok = i0 + r < M;
    var pos = 0u;
    if (row_ok) { pos = position_at(i0 + r); }
    let tile_last = subgroupMax(pos);
    if (lane == 0u) { am_last = tile_last; }
    let last = workgroupUniformLoad(&am_last);
    let kbase = seq_at(i0) * node.max_ctx * kv_dim + (h / (node.heads / node.kv_heads)) * hd;
    var mx = AM_NEG;
    for (var j0 = 0u; j0 <= last; j0 += 16u) {
        coopStoreT(matrix_scores(j0, kbase, kv_dim, hd), &as_[0], 16u);
        workgroupBarrier();
        for (var e = 0u; e < 8u; e++) {
            if (row_ok && j0 + kq + e <= pos) { mx = max(mx, as_[r * 16u + kq + e]); }
        }
        workgroupBarrier();
    }
    mx = max(mx, subgroupShuffleXor(mx, 1u));
    // O: eight 16-dim accumulators, those past the head unused (hd is uniform).
    var o0 = coop_mat16x16<f32, C>();
    var o1 = coop_mat16x16<f32, C>();
    var o2 = coop_mat16x16<f32, C>();
    var o3 = coop_mat16x16<f32, C>();
    var o4 = coop_mat16x16<f32, C>();
    var o5 = coop_mat16x16<f32, C>();
    var o6 = coop_mat16x16<f32, C>();
    var o7 = coop_mat16x16<f32, C>();
    var l = 0.0;
    for (var j0 = 0u; j0 <= last; j0 += 16u) {
        coopStoreT(matrix_scores(j0, kbase, kv_dim, hd), &as_[0], 16u);
        workgroupBarrier();
        for (var e = 0u; e < 8u; e++) {
            var p = 0.0;
            if (row_ok && j0 + kq + e <= pos) { p = exp(as_[r * 16u + kq + e] - mx); }
            l += p;
            ap[r * AM_PLD + kq + e] = f16(p);
        }
        workgroupBarrier();
        let pm = coopLoadT<coop_mat16x16<f16, A>>(&ap[0], AM_PLD);
        let vrow = kbase + j0 * kv_dim;
        o0 = coopMultiplyAdd(pm, matrix_values(vrow, 0u, kv_dim), o0);
        if (hd > 16u) { o1 = coopMultiplyAdd(pm, matrix_values(vrow, 16u, kv_dim), o1); }
        if (hd > 32u) { o2 = coopMultiplyAdd(pm, matrix_values(vrow, 32u, kv_dim), o2); }
        if (hd > 48u) { o3 = coopMultiplyAdd(pm, matrix_values(vrow, 48u, kv_dim), o3); }
        if (hd > 64u) { o4 = coopMultiplyAdd(pm, matrix_values(vrow, 64u, kv_dim), o4); }
        if (hd > 80u) { o5 = coopMultiplyAdd(pm, matrix_values(vrow, 80u, kv_dim), o5); }
        if (hd > 96u) { o6 = coopMultiplyAdd(pm, matrix_values(vrow, 96u, kv_dim), o6); }
        if (hd > 112u) { o7 = coopMultiplyAdd(pm, matrix_values(vrow, 112u, kv_dim), o7); }
        workgroupBarrier();
    }
    l += subgroupShuffleXor(l, 1u);
    let out = (i0 + r) * node.heads * hd + h * hd;
    matrix_attn_out(o0, 0u, row_ok, out, r, kq, l);
    if (hd > 16u) { matrix_attn_out(o1, 16u, row_ok, out, r, kq, l); }
    if (hd > 32u) { matrix_attn_out(o2, 32u, row_ok, out, r, kq, l); }
    if (hd > 48u) { matrix_attn_out(o3, 48u, row_ok, out, r, kq, l); }
    if (hd > 64u) { matrix_attn_out(o4, 64u, row_ok, out, r, kq, l); }
    if (hd > 80u) { matrix_attn_out(o5, 80u, row_ok, out, r, kq, l); }
    if (hd > 96u) { matrix_attn_out(o6, 96u, row_ok, out, r, kq, l); }
    if (hd > 112u) { matrix_attn_out(o7, 112u, row_ok, out, r, kq, l); }
}
