// A (gemv) on float weights (`w` as vec4<W>, weights_float.wgsl); compiled after linear.wgsl,
// whose helpers (gemv_store, the RoPE epilogue, gv_upper) it shares with gemv_quant.wgsl.

// Row r of x, elements 4k .. 4k + 3, times the norm weight in MODE_NORM.
fn gemv_x(r: u32, k: u32, K: u32) -> vec4<f32> {
    let v = x4(r * K + 4u * k);
    if ((node.mode & MODE_NORM) != 0u) {
        return v * x2[k];
    }
    return v;
}

fn gemv_x1(r: u32, k: u32, K: u32) -> f32 {
    let v = xs(r * K + k);
    if ((node.mode & MODE_NORM) != 0u) { return v * x2s(k); }
    return v;
}

// Four steps of a lane's walk from vec4 k: (column a, column b, sum of x^2 when `norm`).
// Their loads sit in one branch-free block, in flight together.
fn gemv_step4(norm: bool, wa: u32, wb: u32, k: u32) -> vec4<f32> {
    let k1 = k + GV_LANES;
    let k2 = k1 + GV_LANES;
    let k3 = k2 + GV_LANES;
    let a0 = vec4<f32>(w[wa + k]);
    let a1 = vec4<f32>(w[wa + k1]);
    let a2 = vec4<f32>(w[wa + k2]);
    let a3 = vec4<f32>(w[wa + k3]);
    let b0 = vec4<f32>(w[wb + k]);
    let b1 = vec4<f32>(w[wb + k1]);
    let b2 = vec4<f32>(w[wb + k2]);
    let b3 = vec4<f32>(w[wb + k3]);
    let r0 = x[k];
    let r1 = x[k1];
    let r2 = x[k2];
    let r3 = x[k3];
    var x0 = r0;
    var x1 = r1;
    var x2v = r2;
    var x3 = r3;
    var sq = 0.0;
    if (norm) {
        sq = dot(r0, r0) + dot(r1, r1) + dot(r2, r2) + dot(r3, r3);
        x0 *= x2[k];
        x1 *= x2[k1];
        x2v *= x2[k2];
        x3 *= x2[k3];
    }
    return vec4<f32>(dot(a0, x0) + dot(a1, x1) + dot(a2, x2v) + dot(a3, x3), dot(b0, x0) + dot(b1, x1) + dot(b2, x2v) + dot(b3, x3), sq, 0.0);
}

// One row's dot products with weight rows starting at vec4 `wa` and `wb` over vec4s
// k0, k0 + 32, ... < k_end (sum of x^2 in z when `norm`). Eight steps per iteration while
// they last: a lane walks K in few long steps, and latency, not bandwidth, is what a walk
// with few loads in flight pays.
fn gemv_walk(norm: bool, wa: u32, wb: u32, k0: u32, k_end: u32, K: u32) -> vec4<f32> {
    var acc = vec4<f32>(0.0);
    var k = k0;
    for (; k + 7u * GV_LANES < k_end; k += 8u * GV_LANES) {
        acc += gemv_step4(norm, wa, wb, k) + gemv_step4(norm, wa, wb, k + 4u * GV_LANES);
    }
    for (; k + 3u * GV_LANES < k_end; k += 4u * GV_LANES) {
        acc += gemv_step4(norm, wa, wb, k);
    }
    for (; k < k_end; k += GV_LANES) {
        let xr = x[k];
        var xv = xr;
        if (norm) {
            acc.z += dot(xr, xr);
            xv *= x2[k];
        }
        acc.x += dot(vec4<f32>(w[wa + k]), xv);
        acc.y += dot(vec4<f32>(w[wb + k]), xv);
    }
    return acc;
}

// A: each lane group walks K (or its half of K) once for two weight rows, so every x load
// feeds two columns; when K is a multiple of 4 every lane loads whole vec4s (8 or 16 bytes
// of weights). Rows are taken four at a time in vec4 accumulators (a dynamically indexed
// array would live in local memory on some GPUs): M <= 4 reads the weights once.
@compute @workgroup_size(128)
fn gemv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
    gemv_body(flat_id(wg, nwg), t, false);
}

@compute @workgroup_size(256)
fn gemv_split_k(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
    gemv_body(flat_id(wg, nwg), t, true);
}

// Workgroup `wgi` of either GEMV; every invocation calls it (it holds barriers).
fn gemv_body(wgi: u32, t: u32, split: bool) {
    let g = (t / GV_LANES) % GV_GROUPS;
    let upper = t >= GV_GROUPS * GV_LANES;
    let lane = t % GV_LANES;
    let swiglu = (node.mode & MODE_SWIGLU) != 0u;
    let norm = (node.mode & MODE_NORM) != 0u;
    var ca = wgi * GV_COLS + g;
    var cb = ca + GV_GROUPS;
    var va = ca < node.n;
    var vb = cb < node.n;
    if (swiglu) {
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
    let K = node.k;
    let K4 = K / 4u;
    let aligned = K % 4u == 0u;
    // This lane group's share of K, in vec4s when aligned, else in elements.
    let span = select(K, K4, aligned);
    let half = select(span, (span + 1u) / 2u, split);
    let k_begin = select(0u, half, upper);
    let k_end = select(half, span, upper);
    // Decode's common case, one row: scalar accumulators, x read once per two columns.
    if (m == 1u) {
        var acc = vec4<f32>(0.0); // (column a, column b, sum of x^2, -)
        if (aligned) {
            // Columns past N read a valid row (their sums are never stored).
            let wa = min(ca, node.n - 1u) * K4;
            let wb = min(cb, node.n - 1u) * K4;
            // A literal flag per call, so the compiler can build the loop without the norm.
            if (norm) {
                acc = gemv_walk(true, wa, wb, k_begin + lane, k_end, K);
            } else {
                acc = gemv_walk(false, wa, wb, k_begin + lane, k_end, K);
            }
        } else {
            for (var k = k_begin + lane; k < k_end; k += GV_LANES) {
                let xr = xs(k);
                let xv = gemv_x1(0u, k, K);
                acc.z += xr * xr;
                if (va) { acc.x += ws(ca * K + k) * xv; }
                if (vb) { acc.y += ws(cb * K + k) * xv; }
            }
        }
        let s = lanes_sum4(acc, t);
        if (upper && lane == 0u) { gv_upper[3u * g] = s; }
        workgroupBarrier();
        if (!upper && lane == 0u) {
            let total = s + gv_upper[3u * g];
            gemv_store(0u, ca, cb, va, vb, total.x, total.y, total.z);
        }
        return;
    }
    for (var r0 = 0u; r0 < m; r0 += 4u) {
        // Rows past m read whatever the buffer holds there; their sums are never stored.
        var da = vec4<f32>(0.0);
        var db = vec4<f32>(0.0);
        var sq = vec4<f32>(0.0);
        if (aligned) {
            for (var k = k_begin + lane; k < k_end; k += GV_LANES) {
                let x0 = gemv_x(r0, k, K);
                let x1 = gemv_x(r0 + 1u, k, K);
                let x2v = gemv_x(r0 + 2u, k, K);
                let x3 = gemv_x(r0 + 3u, k, K);
                if (norm) {
                    let r0v = x4(r0 * K + 4u * k);
                    let r1v = x4((r0 + 1u) * K + 4u * k);
                    let r2v = x4((r0 + 2u) * K + 4u * k);
                    let r3v = x4((r0 + 3u) * K + 4u * k);
                    sq += vec4<f32>(dot(r0v, r0v), dot(r1v, r1v), dot(r2v, r2v), dot(r3v, r3v));
                }
                if (va) {
                    let wa = vec4<f32>(w[ca * K4 + k]);
                    da += vec4<f32>(dot(wa, x0), dot(wa, x1), dot(wa, x2v), dot(wa, x3));
                }
                if (vb) {
                    let wb = vec4<f32>(w[cb * K4 + k]);
                    db += vec4<f32>(dot(wb, x0), dot(wb, x1), dot(wb, x2v), dot(wb, x3));
                }
            }
        } else {
            for (var k = k_begin + lane; k < k_end; k += GV_LANES) {
                let xv = vec4<f32>(gemv_x1(r0, k, K), gemv_x1(r0 + 1u, k, K), gemv_x1(r0 + 2u, k, K), gemv_x1(r0 + 3u, k, K));
                let xr = vec4<f32>(xs(r0 * K + k), xs((r0 + 1u) * K + k), xs((r0 + 2u) * K + k), xs((r0 + 3u) * K + k));
                sq += xr * xr;
                if (va) { da += ws(ca * K + k) * xv; }
                if (vb) { db += ws(cb * K + k) * xv; }
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

