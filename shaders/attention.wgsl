// Causal attention over the KV cache, two ways.
//
// Decode, split-KV with a unified max (FlashDecoding++ technique 1): each workgroup takes
// one chunk of keys of one (token, head) and accumulates sum e^(s - phi) v and sum e^(s - phi)
// with the same fixed phi for every chunk, so the partial results are simply added by
// `attn_combine`: no rescaling, no synchronisation between chunks, one final division.
// If any s - phi leaves (lo, hi) the row is flagged and `attn_combine` recomputes exactly
// that row with the synchronised online softmax instead.
//
// Prefill: `attn_online`, one workgroup per (token, head) walking the keys in tiles of 64
// with the ordinary synchronised online softmax (also the fallback of flagged rows).

const AT: u32 = 64u;          // threads per workgroup = keys per tile of attn_online
const KEY_LANES: u32 = 4u;    // attn_split: threads per key, each a quarter of the dot product
// SPLIT_TILE (attn_split's keys per tile, the shortest chunk) and MAX_HD come from the header.
const_assert SPLIT_TILE == AT / KEY_LANES;
const_assert MAX_HD == 4u * AT; // four output dims per thread
const NEG: f32 = -3.0e38;

var<workgroup> qs: array<f32, 256>;
var<workgroup> ps: array<f32, 64>;
var<workgroup> red: array<f32, 64>;
var<workgroup> sp: array<f32, 64>; // attn_split: the KEY_LANES partial scores of each key
var<workgroup> wg_u32: u32;
var<workgroup> wg_pos: u32;

fn qkv_width() -> u32 {
    return (node.heads + 2u * node.kv_heads) * node.head_dim;
}

fn load_q(i: u32, h: u32, t: u32) {
    let hd = node.head_dim;
    for (var d = t; d < hd; d += AT) {
        qs[d] = xs(i * qkv_width() + h * hd + d);
    }
}

// Loads the query of (token i, head h) into `qs` and returns the token's position, uniform
// across the workgroup (every invocation must call it).
fn begin_row(i: u32, h: u32, t: u32) -> u32 {
    if (t == 0u) { wg_pos = position_at(i); }
    let pos = workgroupUniformLoad(&wg_pos);
    load_q(i, h, t);
    workgroupBarrier();
    return pos;
}

// The caches hold KV (f16 or f32); the arithmetic is f32.
fn key(i: u32) -> f32 { return f32(kc[i]); }
fn key4(i: u32) -> vec4<f32> { return vec4<f32>(key(i), key(i + 1u), key(i + 2u), key(i + 3u)); }
fn value(i: u32) -> f32 { return f32(vc[i]); }

fn score(i: u32, j: u32, kvh: u32) -> f32 {
    let hd = node.head_dim;
    let kv_dim = node.kv_heads * hd;
    let base = (seq_at(i) * node.max_ctx + j) * kv_dim + kvh * hd;
    // Four independent loads per step: the K row is read through L2, so the latency chain
    // is what costs, not the bytes.
    let h4 = hd / 4u * 4u;
    var s4 = vec4<f32>(0.0);
    for (var d = 0u; d < h4; d += 4u) {
        s4 += vec4<f32>(qs[d], qs[d + 1u], qs[d + 2u], qs[d + 3u]) * key4(base + d);
    }
    var s = s4.x + s4.y + s4.z + s4.w;
    for (var d = h4; d < hd; d++) {
        s += qs[d] * key(base + d);
    }
    return s * node.scale;
}

// The share of lane `part` of q . k_j (unscaled): every KEY_LANES-th group of four dims, so
// the lanes of one key read adjacent bytes and each walks a quarter of the row.
fn partial_score(i: u32, j: u32, kvh: u32, part: u32) -> f32 {
    let hd = node.head_dim;
    let kv_dim = node.kv_heads * hd;
    let base = (seq_at(i) * node.max_ctx + j) * kv_dim + kvh * hd;
    let h4 = hd / 4u * 4u;
    let step = 4u * KEY_LANES;
    var s4 = vec4<f32>(0.0);
    var d = 4u * part;
    // Two steps' loads per iteration, in flight together.
    for (; d + step < h4; d += 2u * step) {
        let e = d + step;
        let k0 = key4(base + d);
        let k1 = key4(base + e);
        s4 += vec4<f32>(qs[d], qs[d + 1u], qs[d + 2u], qs[d + 3u]) * k0 + vec4<f32>(qs[e], qs[e + 1u], qs[e + 2u], qs[e + 3u]) * k1;
    }
    for (; d < h4; d += step) {
        s4 += vec4<f32>(qs[d], qs[d + 1u], qs[d + 2u], qs[d + 3u]) * key4(base + d);
    }
    var s = s4.x + s4.y + s4.z + s4.w;
    if (part == 0u) {
        for (var d = h4; d < hd; d++) {
            s += qs[d] * key(base + d);
        }
    }
    return s;
}

// One dim of four consecutive keys' values.
fn value4(r: u32, kv_dim: u32) -> vec4<f32> {
    return vec4<f32>(value(r), value(r + kv_dim), value(r + 2u * kv_dim), value(r + 3u * kv_dim));
}

// sum over q < n of ps[q] * V[first + q][d], four keys per step.
fn weighted_values(i: u32, first: u32, n: u32, kvh: u32, d: u32) -> f32 {
    let kv_dim = node.kv_heads * node.head_dim;
    let vb = (seq_at(i) * node.max_ctx + first) * kv_dim + kvh * node.head_dim + d;
    var s = 0.0;
    var q = 0u;
    for (; q + 4u <= n; q += 4u) {
        let o = vb + q * kv_dim;
        s += ps[q] * value(o) + ps[q + 1u] * value(o + kv_dim) + ps[q + 2u] * value(o + 2u * kv_dim) + ps[q + 3u] * value(o + 3u * kv_dim);
    }
    for (; q < n; q++) {
        s += ps[q] * value(vb + q * kv_dim);
    }
    return s;
}

fn reduce_sum(t: u32, v: f32) -> f32 {
    red[t] = v;
    workgroupBarrier();
    for (var s = AT / 2u; s > 0u; s >>= 1u) {
        if (t < s) { red[t] += red[t + s]; }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_max(t: u32, v: f32) -> f32 {
    red[t] = v;
    workgroupBarrier();
    for (var s = AT / 2u; s > 0u; s >>= 1u) {
        if (t < s) { red[t] = max(red[t], red[t + s]); }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// grid: (chunks, heads, m), step.attn_chunk_keys keys per chunk; partials in
// scratch[((i * heads + h) * chunks + c) * (hd + 1)]. Tiles of SPLIT_TILE keys with
// KEY_LANES threads per key keep every thread's chain of dependent loads short: at decode
// the KV bytes are few, and latency is what costs.
@compute @workgroup_size(64)
fn attn_split(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let c = wg.x;
    let h = wg.y;
    let i = wg.z;
    let hd = node.head_dim;
    let kvh = h / (node.heads / node.kv_heads);
    let pos = begin_row(i, h, t);
    let start = c * step.attn_chunk_keys;
    // Rows of a batch sit at different positions: a chunk past a row's end is empty.
    let end = max(min(start + step.attn_chunk_keys, pos + 1u), start);
    var acc: array<f32, 4>;  // output dims t, t + 64, t + 128, t + 192
    var l = 0.0;
    var out_of_range = false;
    for (var j0 = start; j0 < end; j0 += SPLIT_TILE) {
        let j = j0 + t / KEY_LANES;
        var s = 0.0;
        if (j < end) { s = partial_score(i, j, kvh, t % KEY_LANES); }
        sp[t] = s;
        workgroupBarrier();
        if (t < SPLIT_TILE) {
            var e = 0.0;
            if (j0 + t < end) {
                let q = KEY_LANES * t;
                let d = (sp[q] + sp[q + 1u] + sp[q + 2u] + sp[q + 3u]) * node.scale - node.phi;
                if (d < node.lo || d > node.hi) { out_of_range = true; }
                e = exp(d);
            }
            ps[t] = e;
        }
        workgroupBarrier();
        let n = min(SPLIT_TILE, end - j0);
        for (var q = 0u; q < n; q++) {
            l += ps[q];
        }
        // Every dim of this thread in one walk over the keys: their loads overlap.
        let kv_dim = node.kv_heads * hd;
        let vb = (seq_at(i) * node.max_ctx + j0) * kv_dim + kvh * hd;
        let dims = min(4u, (hd + AT - 1u - t) / AT); // dims t, t + 64, ... below hd
        var o = vec4<f32>(0.0);
        var q = 0u;
        for (; q + 4u <= n; q += 4u) {
            let r = vb + q * kv_dim + t;
            let p = vec4<f32>(ps[q], ps[q + 1u], ps[q + 2u], ps[q + 3u]);
            o.x += dot(p, value4(r, kv_dim));
            if (dims > 1u) { o.y += dot(p, value4(r + AT, kv_dim)); }
            if (dims > 2u) { o.z += dot(p, value4(r + 2u * AT, kv_dim)); }
            if (dims > 3u) { o.w += dot(p, value4(r + 3u * AT, kv_dim)); }
        }
        for (; q < n; q++) {
            let r = vb + q * kv_dim + t;
            let p = ps[q];
            o.x += p * value(r);
            if (dims > 1u) { o.y += p * value(r + AT); }
            if (dims > 2u) { o.z += p * value(r + 2u * AT); }
            if (dims > 3u) { o.w += p * value(r + 3u * AT); }
        }
        acc[0] += o.x;
        acc[1] += o.y;
        acc[2] += o.z;
        acc[3] += o.w;
        workgroupBarrier();
    }
    if (out_of_range) {
        atomicStore(&flags[node.flag_offset + i * node.heads + h], 1u);
    }
    let base = ((i * node.heads + h) * step.attn_chunks + c) * (hd + 1u);
    for (var a = 0u; a < 4u; a++) {
        let d = t + a * AT;
        if (d < hd) { scratch[base + d] = acc[a]; }
    }
    if (t == 0u) { scratch[base + hd] = l; }
}

// The synchronised online softmax for one (token, head); the whole workgroup calls it.
fn online_row(i: u32, h: u32, t: u32) {
    let hd = node.head_dim;
    let kvh = h / (node.heads / node.kv_heads);
    let pos = begin_row(i, h, t);
    var acc: array<f32, 4>;
    var m_run = NEG;
    var l = 0.0;
    for (var j0 = 0u; j0 <= pos; j0 += AT) {
        let j = j0 + t;
        var s = NEG;
        if (j <= pos) { s = score(i, j, kvh); }
        let m_new = max(m_run, reduce_max(t, s));
        var p = 0.0;
        if (j <= pos) { p = exp(s - m_new); }
        ps[t] = p;
        let tile_sum = reduce_sum(t, p);
        let corr = exp(m_run - m_new);
        l = l * corr + tile_sum;
        let n = min(AT, pos + 1u - j0);
        for (var a = 0u; a < 4u; a++) {
            let d = t + a * AT;
            if (d < hd) { acc[a] = acc[a] * corr + weighted_values(i, j0, n, kvh, d); }
        }
        m_run = m_new;
        workgroupBarrier();
    }
    for (var a = 0u; a < 4u; a++) {
        let d = t + a * AT;
        if (d < hd) { y[i * node.heads * hd + h * hd + d] = acc[a] / l; }
    }
}

// sum over chunks c of scratch[(base + c) * stride + offset], four chunks per iteration:
// independent loads, a quarter of the dependent chain.
fn chunk_sum(base: u32, chunks: u32, stride: u32, offset: u32) -> f32 {
    let c4 = chunks / 4u * 4u;
    var s4 = vec4<f32>(0.0);
    for (var c = 0u; c < c4; c += 4u) {
        let r = (base + c) * stride + offset;
        s4 += vec4<f32>(scratch[r], scratch[r + stride], scratch[r + 2u * stride], scratch[r + 3u * stride]);
    }
    var s = s4.x + s4.y + s4.z + s4.w;
    for (var c = c4; c < chunks; c++) {
        s += scratch[(base + c) * stride + offset];
    }
    return s;
}

// grid: (heads, m). Adds the chunks' partial sums and divides once; a row that
// attn_split flagged is recomputed here with the online softmax (counted in flags[0]).
@compute @workgroup_size(64)
fn attn_combine(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let h = wg.x;
    let i = wg.y;
    let hd = node.head_dim;
    if (t == 0u) {
        let flagged = atomicLoad(&flags[node.flag_offset + i * node.heads + h]);
        if (flagged != 0u) { atomicAdd(&flags[0], 1u); }
        wg_u32 = flagged;
    }
    if (workgroupUniformLoad(&wg_u32) != 0u) {
        online_row(i, h, t);
        return;
    }
    let pos = position_at(i);
    let chunks = pos / step.attn_chunk_keys + 1u;
    let base = (i * node.heads + h) * step.attn_chunks;
    let stride = hd + 1u;
    let l = chunk_sum(base, chunks, stride, hd);
    for (var d = t; d < hd; d += AT) {
        let s = chunk_sum(base, chunks, stride, d);
        y[i * node.heads * hd + h * hd + d] = s / l;
    }
}

// grid: (heads, m): prefill, every row with the online softmax.
@compute @workgroup_size(64)
fn attn_online(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    online_row(wg.y, wg.x, t);
}
