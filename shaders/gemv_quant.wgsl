// A (gemv) on block-quantized weights (weights_quant.wgsl); compiled after linear.wgsl, whose
// helpers (gemv_store, the RoPE epilogue, gv_upper) it shares with gemv.wgsl.
// A lane takes whole blocks: one 16-byte load of values (two for 8 bits), the block's scale,
// and the 32 x values it multiplies, so a short row (SmolLM2's K = 576: 18 blocks) is one
// round of loads. x's sum over the block is shared by both columns (the min / offset term).

// Row r of x against block b of the weight rows whose blocks start at `qa` and `qb`:
// (dot with a, dot with b, sum of x^2 when `norm`).
fn gq_dot(norm: bool, r: u32, b: u32, qa: u32, qb: u32) -> vec3<f32> {
    let xb = r * (node.k / 4u) + 8u * b;
    var v0 = x[xb];
    var v1 = x[xb + 1u];
    var v2 = x[xb + 2u];
    var v3 = x[xb + 3u];
    var v4 = x[xb + 4u];
    var v5 = x[xb + 5u];
    var v6 = x[xb + 6u];
    var v7 = x[xb + 7u];
    var sq = 0.0;
    if (norm) {
        sq = dot(v0, v0) + dot(v1, v1) + dot(v2, v2) + dot(v3, v3) + dot(v4, v4) + dot(v5, v5) + dot(v6, v6) + dot(v7, v7);
        let nb = 8u * b;
        v0 *= x2[nb];
        v1 *= x2[nb + 1u];
        v2 *= x2[nb + 2u];
        v3 *= x2[nb + 3u];
        v4 *= x2[nb + 4u];
        v5 *= x2[nb + 5u];
        v6 *= x2[nb + 6u];
        v7 *= x2[nb + 7u];
    }
    let xsum = dot(((v0 + v1) + (v2 + v3)) + ((v4 + v5) + (v6 + v7)), vec4<f32>(1.0));
    let da = q_block_dot(qa + b, v0, v1, v2, v3, v4, v5, v6, v7, xsum);
    let db = q_block_dot(qb + b, v0, v1, v2, v3, v4, v5, v6, v7, xsum);
    return vec3<f32>(da, db, sq);
}

@compute @workgroup_size(128)
fn gemv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
    gemv_quant_body(flat_id(wg, nwg), t, false);
}

@compute @workgroup_size(256)
fn gemv_split_k(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
    gemv_quant_body(flat_id(wg, nwg), t, true);
}

// As gemv_body (gemv.wgsl): the same columns per lane group and the same epilogues.
fn gemv_quant_body(wgi: u32, t: u32, split: bool) {
    let g = (t / GV_LANES) % GV_GROUPS;
    let upper = t >= GV_GROUPS * GV_LANES;
    let lane = t % GV_LANES;
    let norm = (node.mode & MODE_NORM) != 0u;
    var ca = wgi * GV_COLS + g;
    var cb = ca + GV_GROUPS;
    var va = ca < node.n;
    var vb = cb < node.n;
    if ((node.mode & MODE_SWIGLU) != 0u) {
        ca = wgi * GV_GROUPS + g;
        cb = ca + node.ldy;
        va = ca < node.ldy;
        vb = va;
    }
    if ((node.mode & MODE_ROPE) != 0u) {
        let p = wgi * GV_GROUPS + g;
        let pair = rope_pair(p);
        ca = pair.x;
        cb = pair.y;
        va = p < node.n / 2u;
        vb = va;
    }
    let m = min(row_count(), GEMV_MAX_M);
    let blocks = node.k / QK;
    let half = select(blocks, (blocks + 1u) / 2u, split);
    let b_begin = select(0u, half, upper) + lane;
    let b_end = select(half, blocks, upper);
    // Columns past N read a valid row (their sums are never stored).
    let qa = min(ca, node.n - 1u) * blocks;
    let qb = min(cb, node.n - 1u) * blocks;
    for (var r0 = 0u; r0 < m; r0 += 4u) {
        // Rows past m are not read: their sums stay 0 and are never stored.
        var da = vec4<f32>(0.0);
        var db = vec4<f32>(0.0);
        var sq = vec4<f32>(0.0);
        for (var b = b_begin; b < b_end; b += GV_LANES) {
            let s0 = gq_dot(norm, r0, b, qa, qb);
            da.x += s0.x;
            db.x += s0.y;
            sq.x += s0.z;
            if (r0 + 1u < m) {
                let s1 = gq_dot(norm, r0 + 1u, b, qa, qb);
                let s2 = gq_dot(norm, min(r0 + 2u, m - 1u), b, qa, qb);
                let s3 = gq_dot(norm, min(r0 + 3u, m - 1u), b, qa, qb);
                da += vec4<f32>(0.0, s1.x, s2.x, s3.x);
                db += vec4<f32>(0.0, s1.y, s2.y, s3.y);
                sq += vec4<f32>(0.0, s1.z, s2.z, s3.z);
            }
        }
        var sa = lanes_sum4(da, t);
        var sb = lanes_sum4(db, t);
        var ss = lanes_sum4(sq, t);
        if (upper && lane == 0u) {
            gv_upper[3u * g] = sa;
            gv_upper[3u * g + 1u] = sb;
            gv_upper[3u * g + 2u] = ss;
        }
        workgroupBarrier();
        if (!upper && lane == 0u) {
            sa += gv_upper[3u * g];
            sb += gv_upper[3u * g + 1u];
            ss += gv_upper[3u * g + 2u];
            for (var i = 0u; i < 4u; i++) {
                if (r0 + i < m) { gemv_store(r0 + i, ca, cb, va, vb, sa[i], sb[i], ss[i]); }
            }
        }
        workgroupBarrier(); // gv_upper is refilled by the next rows
    }
}
