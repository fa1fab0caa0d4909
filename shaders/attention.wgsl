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
// MAX_HD comes from the header.
const_assert MAX_HD == 4u * AT; // attn_online: four output dims per thread
const NEG: f32 = -3.0e38;
// attn_split: keys each lane group has in flight (their K and V loads issued together; the
// kernel's vec4s hold one value per key).
const SPLIT_BATCH: u32 = 4u;

var<workgroup> qs: array<f32, 256>;
var<workgroup> ps: array<f32, 64>;
var<workgroup> red: array<f32, 64>;
var<workgroup> wg_u32: u32;
var<workgroup> wg_pos: u32;
// attn_split: each lane's sums of its eight dims, then each lane group's sum of e^(s - phi).
var<workgroup> split_o: array<vec4<f32>, 128>;
var<workgroup> split_l: array<f32, 64>;

// The caches as 16-byte words (8 f16 or 4 f32 values), for attn_split's vector loads: the
// same bindings as kc and vc, which no entry point uses together with these.
@group(0) @binding(7) var<storage, read_write> kc_words: array<vec4<u32>>;
@group(0) @binding(8) var<storage, read_write> vc_words: array<vec4<u32>>;

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

// Eight values of a K or V row, as f32: dims d .. d + 7 of a lane.
struct Dims8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

fn dot8(a: Dims8, b: Dims8) -> f32 {
    return dot(a.lo, b.lo) + dot(a.hi, b.hi);
}

// Cache values per 16-byte word.
const KV_PER_WORD: u32 = select(4u, 8u, KV_F16);

// One word of an f16 cache as its eight values.
fn halves8(w: vec4<u32>) -> Dims8 {
    return Dims8(vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)), vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)));
}

// Element e of a cache, read through the word `w` that holds it.
fn word_value(w: vec4<u32>, e: u32) -> f32 {
    if (KV_F16) {
        return unpack2x16float(w[(e / 2u) % 4u])[e % 2u];
    }
    return bitcast<f32>(w[e % 4u]);
}

fn dims8(v: array<f32, 8>) -> Dims8 {
    return Dims8(vec4<f32>(v[0], v[1], v[2], v[3]), vec4<f32>(v[4], v[5], v[6], v[7]));
}

// Word w of the V cache (`values`) or of the K cache. Callers pass a literal, so the branch
// folds away (WGSL takes no pointer into a storage buffer as an argument).
fn cache_word(values: bool, w: u32) -> vec4<u32> {
    if (values) { return vc_words[w]; }
    return kc_words[w];
}

// Dims d .. d + 7 of the V (`values`) or K row whose dim 0 is element `row`, zero from dim
// hd on: one word (f16) or two (f32) when the row is in whole words (`vec`: hd a multiple
// of 8).
fn cache8(values: bool, row: u32, d: u32, hd: u32, vec: bool) -> Dims8 {
    let e = row + d;
    if (vec && d + 8u <= hd) {
        let w = e / KV_PER_WORD;
        if (KV_F16) { return halves8(cache_word(values, w)); }
        return Dims8(bitcast<vec4<f32>>(cache_word(values, w)), bitcast<vec4<f32>>(cache_word(values, w + 1u)));
    }
    var v = array<f32, 8>();
    for (var i = 0u; i < 8u; i++) {
        if (d + i < hd) { v[i] = word_value(cache_word(values, (e + i) / KV_PER_WORD), e + i); }
    }
    return dims8(v);
}

// Dims d .. d + 7 of the query of (token i, head h), zero from hd on.
fn query8(i: u32, h: u32, d: u32, hd: u32) -> Dims8 {
    let at = i * qkv_width() + h * hd + d;
    if (d + 8u <= hd) {
        return Dims8(x4(at), x4(at + 4u));
    }
    var v = array<f32, 8>();
    for (var e = 0u; e < 8u; e++) {
        if (d + e < hd) { v[e] = xs(at + e); }
    }
    return dims8(v);
}

// Lanes per key in attn_split: enough for eight dims each, a power of two up to 32.
fn lanes_per_key(hd: u32) -> u32 {
    var l = 1u;
    while (l * 8u < hd && l < 32u) {
        l *= 2u;
    }
    return l;
}

// grid: (chunks, heads, m), step.attn_chunk_keys keys per chunk; partials in
// scratch[((i * heads + h) * chunks + c) * (hd + 1)]. The workgroup's lanes are cut into
// groups of L = lanes_per_key(hd), one key per group at a time; a lane holds 8 dims of q,
// k and v, so a K or V row is read by adjacent lanes in 16-byte words (f16 cache), and each
// group issues the loads of SPLIT_BATCH keys before the first score needs one. The score's
// sum over the group's lanes is a shuffle butterfly where subgroups allow (group_sum4); no
// barrier between keys. At decode the KV bytes are few and far: the loads in flight are
// what costs.
@compute @workgroup_size(64)
fn attn_split(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let c = wg.x;
    let h = wg.y;
    let i = wg.z;
    let hd = node.head_dim;
    let kvh = h / (node.heads / node.kv_heads);
    if (t == 0u) { wg_pos = position_at(i); }
    let pos = workgroupUniformLoad(&wg_pos);
    let start = c * step.attn_chunk_keys;
    // Rows of a batch sit at different positions: a chunk past a row's end is empty.
    let end = max(min(start + step.attn_chunk_keys, pos + 1u), start);
    let L = lanes_per_key(hd);
    let groups = AT / L;
    let grp = t / L;
    let d = (t % L) * 8u;
    let vec = hd % 8u == 0u;
    let q = query8(i, h, d, hd);
    let kv_dim = node.kv_heads * hd;
    // Element of key 0's dim 0 in this (sequence, KV head).
    let base = seq_at(i) * node.max_ctx * kv_dim + kvh * hd;
    var o = Dims8(vec4<f32>(0.0), vec4<f32>(0.0));
    var l = 0.0;
    var out_of_range = false;
    // A uniform loop (group_sum4 may hold barriers); group g takes keys jb + g + n * groups.
    for (var jb = start; jb < end; jb += SPLIT_BATCH * groups) {
        // Keys past the chunk read its first key and weigh nothing.
        let j = vec4<u32>(0u, 1u, 2u, 3u) * groups + jb + grp;
        let ok = j < vec4<u32>(end);
        let r = (base + select(vec4<u32>(start), j, ok) * kv_dim);
        let k0 = cache8(false, r.x, d, hd, vec);
        let k1 = cache8(false, r.y, d, hd, vec);
        let k2 = cache8(false, r.z, d, hd, vec);
        let k3 = cache8(false, r.w, d, hd, vec);
        let v0 = cache8(true, r.x, d, hd, vec);
        let v1 = cache8(true, r.y, d, hd, vec);
        let v2 = cache8(true, r.z, d, hd, vec);
        let v3 = cache8(true, r.w, d, hd, vec);
        let s = group_sum4(vec4<f32>(dot8(q, k0), dot8(q, k1), dot8(q, k2), dot8(q, k3)), t, L) * node.scale - node.phi;
        if (any(ok & ((s < vec4<f32>(node.lo)) | (s > vec4<f32>(node.hi))))) { out_of_range = true; }
        let p = select(vec4<f32>(0.0), exp(s), ok);
        l += p.x + p.y + p.z + p.w;
        o.lo += p.x * v0.lo + p.y * v1.lo + p.z * v2.lo + p.w * v3.lo;
        o.hi += p.x * v0.hi + p.y * v1.hi + p.z * v2.hi + p.w * v3.hi;
    }
    if (out_of_range) {
        atomicStore(&flags[node.flag_offset + i * node.heads + h], 1u);
    }
    // The groups' sums meet in workgroup memory: dim e of the head is lane e / 8 of each group.
    split_o[2u * t] = o.lo;
    split_o[2u * t + 1u] = o.hi;
    if (t % L == 0u) { split_l[grp] = l; }
    workgroupBarrier();
    let out = ((i * node.heads + h) * step.attn_chunks + c) * (hd + 1u);
    for (var e = t; e <= hd; e += AT) {
        var sum = 0.0;
        for (var g = 0u; g < groups; g++) {
            if (e == hd) { sum += split_l[g]; } else { sum += split_o[2u * (g * L + e / 8u) + (e % 8u) / 4u][e % 4u]; }
        }
        scratch[out + e] = sum;
    }
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

// scratch[r + off] of the four chunks from the one at r (chunks `stride` apart).
fn chunks4(r: u32, stride: u32, off: u32) -> vec4<f32> {
    return vec4<f32>(scratch[r + off], scratch[r + stride + off], scratch[r + 2u * stride + off], scratch[r + 3u * stride + off]);
}

// grid: (heads, m). Adds the chunks' partial sums and divides once; a row that
// attn_split flagged is recomputed here with the online softmax (counted in flags[0]).
// A lane adds up the sum of weights and up to four dims (t + 64a) in one walk over the
// chunks, the loads of eight chunks written out in one block: all in flight together, so
// a lane waits on memory about chunks / 8 times, not once per four chunks of each sum in
// turn. (A loop over eight chunks that the compiler did not unroll was slower than the
// sums one by one: session 16, call 2.) Dims past the head read the weights' slot again
// and are not stored.
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
    let dims = min(vec4<u32>(t) + vec4<u32>(0u, 1u, 2u, 3u) * AT, vec4<u32>(hd));
    var l4 = vec4<f32>(0.0);
    var o0 = vec4<f32>(0.0);
    var o1 = vec4<f32>(0.0);
    var o2 = vec4<f32>(0.0);
    var o3 = vec4<f32>(0.0);
    var c = 0u;
    for (; c + 8u <= chunks; c += 8u) {
        let ra = (base + c) * stride;
        let rb = ra + 4u * stride;
        l4 += chunks4(ra, stride, hd) + chunks4(rb, stride, hd);
        o0 += chunks4(ra, stride, dims.x) + chunks4(rb, stride, dims.x);
        o1 += chunks4(ra, stride, dims.y) + chunks4(rb, stride, dims.y);
        o2 += chunks4(ra, stride, dims.z) + chunks4(rb, stride, dims.z);
        o3 += chunks4(ra, stride, dims.w) + chunks4(rb, stride, dims.w);
    }
    if (c + 4u <= chunks) {
        let r = (base + c) * stride;
        l4 += chunks4(r, stride, hd);
        o0 += chunks4(r, stride, dims.x);
        o1 += chunks4(r, stride, dims.y);
        o2 += chunks4(r, stride, dims.z);
        o3 += chunks4(r, stride, dims.w);
        c += 4u;
    }
    let one = vec4<f32>(1.0);
    var l = dot(l4, one);
    var o = vec4<f32>(dot(o0, one), dot(o1, one), dot(o2, one), dot(o3, one));
    for (; c < chunks; c++) {
        let r = (base + c) * stride;
        l += scratch[r + hd];
        o += vec4<f32>(scratch[r + dims.x], scratch[r + dims.y], scratch[r + dims.z], scratch[r + dims.w]);
    }
    for (var a = 0u; a < 4u; a++) {
        let d = t + a * AT;
        if (d < hd) { y[i * node.heads * hd + h * hd + d] = o[a] / l; }
    }
}

// grid: (heads, m): prefill, every row with the online softmax.
@compute @workgroup_size(64)
fn attn_online(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    online_row(wg.y, wg.x, t);
}
