// y[m, n_offset + j] = sum_k x[m, k] * w[j, k]: the three dataflows of a linear layer.
// A (gemv): M <= GEMV_MAX_M. A lane group of 32 threads per pair of output columns
//   (gemv.wgsl for float weights, gemv_quant.wgsl for block-quantized ones).
// B (flat_gemm): M padded to FB_M, N tiled across workgroups (a tiling per shape), K walked
//   inside the workgroup; each weight load feeds FB_M rows.
// C (gemm): 64 x 64 output tiles, 4 x 4 per thread, for large M (prefill); on devices with
//   cooperative matrices gemm_matrix.wgsl's kernel takes its place.
// The bias and residual epilogue (bias_of, epilogue) come from linear_epilogue.wgsl.

// node.mode bits (MODE_*, in the generated header). The residual epilogue serves all
// three kernels; the norm prologue and the SwiGLU / RoPE epilogues only GEMV (the lowering
// runs the unfused nodes when B or C is chosen).
// MODE_RESIDUAL: + x2, the residual stream
// MODE_NORM:     x is an RMSNorm's input and x2 its weight: the norm's pass over memory
//                disappears (each lane group re-derives 1/rms)
// MODE_SWIGLU:   a lane group's two columns are gate j and up j (node.ldy = F):
//                y[j] = silu(gate) * up, the SwiGLU pass disappears
// MODE_ROPE:     QKV: a lane group's two columns are a rotary pair of a Q or K head (V: two
//                adjacent columns); the epilogue rotates them (angle table in `scratch`)
//                and appends K and V to the cache

// GEMV_MAX_M (rows) and GV_GROUPS (column pairs per workgroup) come from the header.
const GV_LANES: u32 = 32u;             // threads per lane group
const GV_COLS: u32 = 2u * GV_GROUPS;   // output columns per workgroup (SwiGLU, RoPE: 4 pairs)
const_assert GV_GROUPS * GV_LANES == 128u; // gemv's workgroup size
// gemv_split_k: two lane groups per pair, each walking half of K: twice the loads in
// flight, which a long K (Llama-2-7B's down projection, K = 11008) needs to cover the
// memory latency; shorter rows lose more to the extra barrier than they gain.
var<workgroup> gv_upper: array<vec4<f32>, 12>; // the upper half's sums: [pair][a, b, x^2]

// The two columns lane group g of GEMV workgroup `wgi` computes, and which of them exist:
// columns g and g + GV_GROUPS of the workgroup's, or with SwiGLU gate j and up j, or with
// RoPE a rotary pair. The quantized GEMV's; the float one (gemv_body) keeps its own copy of
// this and of gemv_finish4: calling them cost its steps 0.6% (SmolLM2) and 1.1% (Llama-2-7B)
// on an H200 (bench/results/h200.md, session 12, call H).
struct GemvColumns {
    a: u32,
    b: u32,
    va: bool,
    vb: bool,
}

fn gemv_columns(wgi: u32, g: u32) -> GemvColumns {
    if ((node.mode & MODE_SWIGLU) != 0u) {
        let a = wgi * GV_GROUPS + g;
        return GemvColumns(a, a + node.ldy, a < node.ldy, a < node.ldy);
    }
    if ((node.mode & MODE_ROPE) != 0u) {
        let p = wgi * GV_GROUPS + g;
        let pair = rope_pair(p);
        return GemvColumns(pair.x, pair.y, p < node.n / 2u, p < node.n / 2u);
    }
    let a = wgi * GV_COLS + g;
    return GemvColumns(a, a + GV_GROUPS, a < node.n, a + GV_GROUPS < node.n);
}

// Rows r0 .. r0 + 3 (those below m) of a GEMV: each lane's sums of columns a and b and of
// x^2 added over the lane group and, with a K split, the upper half's through gv_upper, then
// stored. Every invocation calls it (it holds barriers).
fn gemv_finish4(t: u32, g: u32, upper: bool, r0: u32, m: u32, c: GemvColumns, da: vec4<f32>, db: vec4<f32>, sq: vec4<f32>) {
    var sa = lanes_sum4(da, t);
    var sb = lanes_sum4(db, t);
    var ss = lanes_sum4(sq, t);
    let lane0 = t % GV_LANES == 0u;
    if (upper && lane0) {
        gv_upper[3u * g] = sa;
        gv_upper[3u * g + 1u] = sb;
        gv_upper[3u * g + 2u] = ss;
    }
    workgroupBarrier();
    if (!upper && lane0) {
        sa += gv_upper[3u * g];
        sb += gv_upper[3u * g + 1u];
        ss += gv_upper[3u * g + 2u];
        for (var i = 0u; i < 4u; i++) {
            if (r0 + i < m) { gemv_store(r0 + i, c.a, c.b, c.va, c.vb, sa[i], sb[i], ss[i]); }
        }
    }
    workgroupBarrier(); // gv_upper is refilled by the next rows
}

// Row r's outputs of columns a and b from their dot products and the row's sum of squares.
fn gemv_store(r: u32, ca: u32, cb: u32, va: bool, vb: bool, dot_a: f32, dot_b: f32, sumsq: f32) {
    var a = dot_a;
    var b = dot_b;
    if ((node.mode & MODE_NORM) != 0u) {
        let inv = 1.0 / sqrt(sumsq / f32(node.k) + node.eps);
        a *= inv;
        b *= inv;
    }
    if (BIASED && (node.mode & (MODE_SWIGLU | MODE_ROPE)) != 0u) {
        // The fused epilogues see the biased product (plain columns add it in `epilogue`).
        a += bias_of(ca);
        b += bias_of(cb);
    }
    if ((node.mode & MODE_SWIGLU) != 0u) {
        if (va) { y[r * node.ldy + ca] = a / (1.0 + exp(-a)) * b; }
        return;
    }
    if ((node.mode & MODE_ROPE) != 0u) {
        if (va) { rope_store(r, ca, cb, a, b); }
        return;
    }
    if (va) { let c = node.n_offset + ca; y[r * node.ldy + c] = epilogue(r, c, a); }
    if (vb) { let c = node.n_offset + cb; y[r * node.ldy + c] = epilogue(r, c, b); }
}

// The two columns of rotary pair `p`: (i, i + half) of a Q or K head, then V's columns two by two.
fn rope_pair(p: u32) -> vec2<u32> {
    let hd = node.head_dim;
    let half = hd / 2u;
    let rotary_pairs = (node.heads + node.kv_heads) * half;
    if (p < rotary_pairs) {
        let a = (p / half) * hd + p % half;
        return vec2<u32>(a, a + half);
    }
    let v = (node.heads + node.kv_heads) * hd + 2u * (p - rotary_pairs);
    return vec2<u32>(v, v + 1u);
}

// As the rope kernel with its KV write (elementwise.wgsl), for one pair of row r.
fn rope_store(r: u32, ca: u32, cb: u32, a: f32, b: f32) {
    let hd = node.head_dim;
    let half = hd / 2u;
    let q_dim = node.heads * hd;
    let kv_dim = node.kv_heads * hd;
    let rotated = q_dim + kv_dim;
    var ra = a;
    var rb = b;
    if (ca < rotated) {
        let pos = position_at(r);
        let at = (pos * half + ca % hd) * 2u;
        let c = scratch[at];
        let s = scratch[at + 1u];
        ra = a * c - b * s;
        rb = b * c + a * s;
    }
    y[r * node.ldy + ca] = ra;
    y[r * node.ldy + cb] = rb;
    if (ca >= q_dim) {
        let slot = (seq_at(r) * node.max_ctx + position_at(r)) * kv_dim;
        if (ca < rotated) {
            kc[slot + ca - q_dim] = KV(ra);
            kc[slot + cb - q_dim] = KV(rb);
        } else {
            vc[slot + ca - rotated] = KV(ra);
            vc[slot + cb - rotated] = KV(rb);
        }
    }
}

// B: M padded to 8 per workgroup, N tiled across workgroups, K walked inside the workgroup by
// 32 lanes per lane group. Each lane keeps an 8-row x 8-column tile of sums in registers: per
// step it loads 8 rows of x and 8 weight vec4s and does 64 dot products, so x comes from cache
// once per 8 columns and the weights stream once per 8 rows.
// The tiling is chosen per shape (the tuner measures which is fastest): FB_GROUPS lane groups
// side by side over columns (8 each), times FB_KGROUPS lane groups splitting K between them
// (their sums meet in workgroup memory). Small N gets more workgroups from fewer columns, and
// each workgroup more loads in flight from a K split. Both are pipeline constants, so the
// pipelines of every tiling come from one module (`caps::wgsl::FLAT_TILINGS`).
override FB_GROUPS: u32 = 4u;
override FB_KGROUPS: u32 = 1u;
const FB_CPL: u32 = 8u;                    // columns per lane group
const_assert FB_M == 8u;                   // the eight row registers of flat_gemm
// Partial sums of the K groups: [lane group][column][rows 0-3, rows 4-7].
var<workgroup> fb_part: array<vec4<f32>, FB_MAX_LANE_GROUPS * FB_CPL * 2u>;

// Elements e .. e + 3 of a row of x (K a multiple of 4), or element e alone.
fn flat_load_x(row: u32, e: u32, M: u32, aligned: bool) -> vec4<f32> {
    if (row >= M) { return vec4<f32>(0.0); }
    let i = row * node.k + e;
    if (aligned) { return x[i >> 2u]; }
    return vec4<f32>(xs(i), 0.0, 0.0, 0.0);
}

fn flat_load_w(col: u32, e: u32, aligned: bool) -> vec4<f32> {
    // Columns past N read a valid row; their sums are never stored.
    let row = min(col, node.n - 1u);
    if (aligned) { return w4(row, e); }
    return vec4<f32>(ws(row * node.k + e), 0.0, 0.0, 0.0);
}

// One column's weight vec4 against the 8 rows: rows 0-3 into lo, 4-7 into hi.
fn flat_col(lo: ptr<function, vec4<f32>>, hi: ptr<function, vec4<f32>>, wv: vec4<f32>,
            x0: vec4<f32>, x1: vec4<f32>, x2v: vec4<f32>, x3: vec4<f32>,
            x4v: vec4<f32>, x5: vec4<f32>, x6: vec4<f32>, x7: vec4<f32>) {
    *lo += vec4<f32>(dot(wv, x0), dot(wv, x1), dot(wv, x2v), dot(wv, x3));
    *hi += vec4<f32>(dot(wv, x4v), dot(wv, x5), dot(wv, x6), dot(wv, x7));
}

fn flat_store8(m0: u32, col: u32, M: u32, a: vec4<f32>, b: vec4<f32>) {
    for (var r = 0u; r < 4u; r++) {
        store_y(m0 + r, col, M, a[r]);
        store_y(m0 + 4u + r, col, M, b[r]);
    }
}

// Column j of the lane group's 8 (at `col`): its sums over the lane group, stored by lane 0,
// or with a K split handed to workgroup memory for `flat_gather`. Every lane calls it.
fn flat_finish(lo: vec4<f32>, hi: vec4<f32>, t: u32, m0: u32, col: u32, j: u32, M: u32) {
    let a = lanes_sum4(lo, t);
    let b = lanes_sum4(hi, t);
    if (t % GV_LANES != 0u) { return; }
    if (FB_KGROUPS == 1u) {
        flat_store8(m0, col, M, a, b);
    } else {
        let slot = ((t / GV_LANES) * FB_CPL + j) * 2u;
        fb_part[slot] = a;
        fb_part[slot + 1u] = b;
    }
}

// With a K split: lanes 0-7 of each column group of the first K group add the K groups' sums
// of one column each and store them (c0: the workgroup's first column).
fn flat_gather(t: u32, m0: u32, c0: u32, M: u32) {
    workgroupBarrier();
    let group = t / GV_LANES;
    let j = t % GV_LANES;
    if (group >= FB_GROUPS || j >= FB_CPL) { return; }
    var a = vec4<f32>(0.0);
    var b = vec4<f32>(0.0);
    for (var kg = 0u; kg < FB_KGROUPS; kg++) {
        let slot = ((kg * FB_GROUPS + group) * FB_CPL + j) * 2u;
        a += fb_part[slot];
        b += fb_part[slot + 1u];
    }
    flat_store8(m0, c0 + group * FB_CPL + j, M, a, b);
}

@compute @workgroup_size(GV_LANES * FB_GROUPS * FB_KGROUPS)
fn flat_gemm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let M = row_count();
    let K = node.k;
    let m0 = wg.y * FB_M;
    let lane = t % GV_LANES;
    let group = t / GV_LANES;
    let kg = group / FB_GROUPS;
    let c = wg.x * FB_GROUPS * FB_CPL + (group % FB_GROUPS) * FB_CPL;
    let aligned = K % 4u == 0u;
    let per_step = select(1u, 4u, aligned);
    var l0 = vec4<f32>(0.0); var h0 = vec4<f32>(0.0);
    var l1 = vec4<f32>(0.0); var h1 = vec4<f32>(0.0);
    var l2 = vec4<f32>(0.0); var h2 = vec4<f32>(0.0);
    var l3 = vec4<f32>(0.0); var h3 = vec4<f32>(0.0);
    var l4 = vec4<f32>(0.0); var h4 = vec4<f32>(0.0);
    var l5 = vec4<f32>(0.0); var h5 = vec4<f32>(0.0);
    var l6 = vec4<f32>(0.0); var h6 = vec4<f32>(0.0);
    var l7 = vec4<f32>(0.0); var h7 = vec4<f32>(0.0);
    // The K groups interleave: each step of the workgroup covers GV_LANES * FB_KGROUPS steps.
    for (var e = (kg * GV_LANES + lane) * per_step; e < K; e += GV_LANES * FB_KGROUPS * per_step) {
        let w0 = flat_load_w(c, e, aligned);
        let w1 = flat_load_w(c + 1u, e, aligned);
        let w2 = flat_load_w(c + 2u, e, aligned);
        let w3 = flat_load_w(c + 3u, e, aligned);
        let w4v = flat_load_w(c + 4u, e, aligned);
        let w5 = flat_load_w(c + 5u, e, aligned);
        let w6 = flat_load_w(c + 6u, e, aligned);
        let w7 = flat_load_w(c + 7u, e, aligned);
        let x0 = flat_load_x(m0, e, M, aligned);
        let x1 = flat_load_x(m0 + 1u, e, M, aligned);
        let x2v = flat_load_x(m0 + 2u, e, M, aligned);
        let x3 = flat_load_x(m0 + 3u, e, M, aligned);
        let x4v = flat_load_x(m0 + 4u, e, M, aligned);
        let x5 = flat_load_x(m0 + 5u, e, M, aligned);
        let x6 = flat_load_x(m0 + 6u, e, M, aligned);
        let x7 = flat_load_x(m0 + 7u, e, M, aligned);
        flat_col(&l0, &h0, w0, x0, x1, x2v, x3, x4v, x5, x6, x7);
        flat_col(&l1, &h1, w1, x0, x1, x2v, x3, x4v, x5, x6, x7);
        flat_col(&l2, &h2, w2, x0, x1, x2v, x3, x4v, x5, x6, x7);
        flat_col(&l3, &h3, w3, x0, x1, x2v, x3, x4v, x5, x6, x7);
        flat_col(&l4, &h4, w4v, x0, x1, x2v, x3, x4v, x5, x6, x7);
        flat_col(&l5, &h5, w5, x0, x1, x2v, x3, x4v, x5, x6, x7);
        flat_col(&l6, &h6, w6, x0, x1, x2v, x3, x4v, x5, x6, x7);
        flat_col(&l7, &h7, w7, x0, x1, x2v, x3, x4v, x5, x6, x7);
    }
    flat_finish(l0, h0, t, m0, c, 0u, M);
    flat_finish(l1, h1, t, m0, c + 1u, 1u, M);
    flat_finish(l2, h2, t, m0, c + 2u, 2u, M);
    flat_finish(l3, h3, t, m0, c + 3u, 3u, M);
    flat_finish(l4, h4, t, m0, c + 4u, 4u, M);
    flat_finish(l5, h5, t, m0, c + 5u, 5u, M);
    flat_finish(l6, h6, t, m0, c + 6u, 6u, M);
    flat_finish(l7, h7, t, m0, c + 7u, 7u, M);
    if (FB_KGROUPS > 1u) {
        flat_gather(t, m0, wg.x * FB_GROUPS * FB_CPL, M);
    }
}

// GM, the tile's side, comes from the header: 16 x 16 threads, 4 x 4 outputs each.
const_assert GM == 64u;
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
    let aligned = K % 4u == 0u;
    for (var k0 = 0u; k0 < K; k0 += GK) {
        for (var j = 0u; j < 4u; j++) {
            let e = t + 256u * j;
            let r = e / GK;
            let c = e % GK;
            var a = 0.0;
            if (m0 + r < M && k0 + c < K) { a = xs((m0 + r) * K + k0 + c); }
            ga[c * 16u + r / 4u][r % 4u] = a;
        }
        // The weight tile: four consecutive k of one row per thread (one vector load, or one
        // block word and its scale for quantized weights), element by element when K is not
        // a multiple of 4.
        if (aligned) {
            let r = t / 4u;
            let c = (t % 4u) * 4u;
            var b = vec4<f32>(0.0);
            if (n0 + r < node.n && k0 + c < K) { b = w4(n0 + r, k0 + c); }
            for (var i = 0u; i < 4u; i++) { gb[(c + i) * 16u + r / 4u][r % 4u] = b[i]; }
        } else {
            for (var j = 0u; j < 4u; j++) {
                let e = t + 256u * j;
                let r = e / GK;
                let c = e % GK;
                var b = 0.0;
                if (n0 + r < node.n && k0 + c < K) { b = ws((n0 + r) * K + k0 + c); }
                gb[c * 16u + r / 4u][r % 4u] = b;
            }
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
