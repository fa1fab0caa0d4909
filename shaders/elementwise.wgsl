// Row-wise and elementwise stages of the transformer. Grids: x over columns (64 per
// workgroup), y over rows, unless noted.

const RN_T: u32 = 256u;
var<workgroup> sq: array<f32, RN_T>;

// One workgroup per row: x / sqrt(mean(x^2) + eps) * weight. Rows of whole vec4s (every
// model's hidden size) are read 16 bytes a load: a decode step's few rows are few
// workgroups, whose time is the chain of loads each invocation waits for (on an H200, a
// 4096-wide row took 26 us read a float at a time by 128 invocations).
@compute @workgroup_size(256)
fn rms_norm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let i = wg.y;
    if (i >= row_count()) { return; }
    let H = node.k;
    let row = i * H;
    let whole = H % 4u == 0u;
    var s = 0.0;
    if (whole) {
        for (var j = t * 4u; j < H; j += 4u * RN_T) {
            let v = x[(row + j) >> 2u];
            s += dot(v, v);
        }
    } else {
        for (var j = t; j < H; j += RN_T) {
            let v = xs(row + j);
            s += v * v;
        }
    }
    sq[t] = s;
    workgroupBarrier();
    for (var k = RN_T / 2u; k > 0u; k >>= 1u) {
        if (t < k) { sq[t] += sq[t + k]; }
        workgroupBarrier();
    }
    let inv = 1.0 / sqrt(sq[0] / f32(H) + node.eps);
    if (whole) {
        for (var j = t * 4u; j < H; j += 4u * RN_T) {
            let v = x[(row + j) >> 2u] * inv * w4(0u, j);
            for (var e = 0u; e < 4u; e++) { y[row + j + e] = v[e]; }
        }
    } else {
        for (var j = t; j < H; j += RN_T) {
            y[row + j] = xs(row + j) * inv * ws(j);
        }
    }
}

// Rotary embedding of the Q and K heads of a fused QKV row (split-halves layout); V is
// copied. `x2` holds the host-computed table [position][pair] of (cos, sin), so every
// backend rotates by exactly the same angles. mode 1 also appends the rotated K and the V
// of the token to its sequence's cache (the KV write fused in).
@compute @workgroup_size(64)
fn rope(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y;
    let j = gid.x;
    let width = node.n;
    if (i >= step.m || j >= width) { return; }
    let d = node.head_dim;
    let half = d / 2u;
    let q_dim = node.heads * d;
    let rotated = q_dim + node.kv_heads * d;
    let src = i * width;
    var v = xs(src + j);
    if (j < rotated) {
        let base = (j / d) * d;
        let within = j % d;
        let p = within % half;
        let pos = position_at(i);
        let c = x2s((pos * half + p) * 2u);
        let s = x2s((pos * half + p) * 2u + 1u);
        let a = xs(src + base + p);
        let b = xs(src + base + p + half);
        v = select(b * c + a * s, a * c - b * s, within < half);
    }
    y[src + j] = v;
    if (node.mode == 1u && j >= q_dim) {
        let kv_dim = node.kv_heads * d;
        let slot = (seq_at(i) * node.max_ctx + position_at(i)) * kv_dim;
        if (j < rotated) {
            kc[slot + j - q_dim] = KV(v);
        } else {
            vc[slot + j - rotated] = KV(v);
        }
    }
}

// silu(gate) * up, with gate and up side by side in each input row.
@compute @workgroup_size(64)
fn swiglu(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y;
    let j = gid.x;
    let F = node.n;
    if (i >= step.m || j >= F) { return; }
    let g = xs(i * 2u * F + j);
    let u = xs(i * 2u * F + F + j);
    y[i * F + j] = g / (1.0 + exp(-g)) * u;
}

@compute @workgroup_size(64)
fn add(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y;
    let j = gid.x;
    let H = node.n;
    if (i >= step.m || j >= H) { return; }
    y[i * H + j] = xs(i * H + j) + x2s(i * H + j);
}

@compute @workgroup_size(64)
fn select_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.y;
    let j = gid.x;
    let H = node.n;
    if (r >= step.n_out || j >= H) { return; }
    y[r * H + j] = xs(out_row_at(r) * H + j);
}

// Appends K and V of each token (from the rotated QKV row) to its sequence's cache.
@compute @workgroup_size(64)
fn kv_write(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y;
    let j = gid.x;
    let kv_dim = node.kv_heads * node.head_dim;
    if (i >= step.m || j >= kv_dim) { return; }
    let q_dim = node.heads * node.head_dim;
    let width = q_dim + 2u * kv_dim;
    let slot = (seq_at(i) * node.max_ctx + position_at(i)) * kv_dim + j;
    kc[slot] = KV(xs(i * width + q_dim + j));
    vc[slot] = KV(xs(i * width + q_dim + kv_dim + j));
}

var<workgroup> best_v: array<f32, 256>;
var<workgroup> best_i: array<u32, 256>;

// Greedy sampling on the device: the index of the largest logit of each output row
// (the lowest index among equals), written to flags[1 + row].
@compute @workgroup_size(256)
fn argmax(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let r = wg.y;
    let V = node.n;
    var bv = -3.4e38;
    var bi = 0xffffffffu;
    for (var j = t; j < V; j += 256u) {
        let v = xs(r * V + j);
        if (v > bv) { bv = v; bi = j; }
    }
    best_v[t] = bv;
    best_i[t] = bi;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (t < s) {
            let ov = best_v[t + s];
            let oi = best_i[t + s];
            if (ov > best_v[t] || (ov == best_v[t] && oi < best_i[t])) {
                best_v[t] = ov;
                best_i[t] = oi;
            }
        }
        workgroupBarrier();
    }
    if (t == 0u) { atomicStore(&flags[1u + r], best_i[0]); }
}
