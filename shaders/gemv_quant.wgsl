// A (gemv) on block-quantized weights (weights_quant.wgsl); compiled after linear.wgsl, whose
// helpers (gemv_store, the RoPE epilogue, gv_upper) it shares with gemv.wgsl.
// A lane takes one word of a block's values at a time (4 bits: 8 values, 4 bytes; 8 bits: 4),
// so the 32 lanes of a lane group read 128 contiguous bytes a step, and walks K four words per
// iteration with their loads in flight together, as the float GEMV walks vec4s. Each word's
// x values are shared by both columns (and their sum, for the min / offset term).

// Unit u for columns a and b (first blocks `ba`, `bb`) and row r of x: (a, b, sum of x^2
// when `norm`).
fn gq_unit(norm: bool, r: u32, u: u32, ba: u32, bb: u32) -> vec3<f32> {
    let at = q_unit_x(u);
    let row = r * (node.k / 4u);
    var lo = x[row + at.x];
    var hi = select(x[row + at.y], vec4<f32>(0.0), Q_BITS == 8u);
    var sq = 0.0;
    if (norm) {
        sq = dot(lo, lo) + dot(hi, hi);
        lo *= x2[at.x];
        hi *= x2[at.y];
    }
    let xsum = dot(lo + hi, vec4<f32>(1.0));
    return vec3<f32>(q_unit_dot(ba, u, lo, hi, xsum), q_unit_dot(bb, u, lo, hi, xsum), sq);
}

// Row r's sums over units u0, u0 + 32, ... < u_end, four a round with their loads in flight
// together; a lane's last round masks the units past the end (they read the last unit
// again, from cache). So a short row (SmolLM2's K = 576: 72 units, two or three a lane) is
// one round of loads, not one per unit.
fn gq_walk(norm: bool, r: u32, u0: u32, u_end: u32, ba: u32, bb: u32) -> vec3<f32> {
    var acc = vec3<f32>(0.0);
    for (var u = u0; u < u_end; u += 4u * GV_LANES) {
        let u1 = u + GV_LANES;
        let u2 = u1 + GV_LANES;
        let u3 = u2 + GV_LANES;
        let last = u_end - 1u;
        let s0 = gq_unit(norm, r, u, ba, bb);
        let s1 = gq_unit(norm, r, min(u1, last), ba, bb);
        let s2 = gq_unit(norm, r, min(u2, last), ba, bb);
        let s3 = gq_unit(norm, r, min(u3, last), ba, bb);
        let zero = vec3<f32>(0.0);
        acc += (s0 + select(zero, s1, u1 < u_end)) + (select(zero, s2, u2 < u_end) + select(zero, s3, u3 < u_end));
    }
    return acc;
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
    let c = gemv_columns(wgi, g);
    let m = min(row_count(), GEMV_MAX_M);
    let blocks = node.k / QK;
    let units = blocks * Q_WORDS;
    let half = select(units, (units + 1u) / 2u, split);
    let u_begin = select(0u, half, upper) + lane;
    let u_end = select(half, units, upper);
    // Columns past N read a valid row (their sums are never stored).
    let ba = min(c.a, node.n - 1u) * blocks;
    let bb = min(c.b, node.n - 1u) * blocks;
    for (var r0 = 0u; r0 < m; r0 += 4u) {
        // Rows past m repeat the last row; their sums are never stored.
        var da = vec4<f32>(0.0);
        var db = vec4<f32>(0.0);
        var sq = vec4<f32>(0.0);
        // A literal flag per call, so the compiler can build the walk without the norm.
        var s0: vec3<f32>;
        if (norm) { s0 = gq_walk(true, r0, u_begin, u_end, ba, bb); } else { s0 = gq_walk(false, r0, u_begin, u_end, ba, bb); }
        da.x = s0.x;
        db.x = s0.y;
        sq.x = s0.z;
        if (r0 + 1u < m) {
            for (var u = u_begin; u < u_end; u += GV_LANES) {
                let s1 = gq_unit(norm, r0 + 1u, u, ba, bb);
                let s2 = gq_unit(norm, min(r0 + 2u, m - 1u), u, ba, bb);
                let s3 = gq_unit(norm, min(r0 + 3u, m - 1u), u, ba, bb);
                da += vec4<f32>(0.0, s1.x, s2.x, s3.x);
                db += vec4<f32>(0.0, s1.y, s2.y, s3.y);
                sq += vec4<f32>(0.0, s1.z, s2.z, s3.z);
            }
        }
        gemv_finish4(t, g, upper, r0, m, c, da, db, sq);
    }
}
