// Top-k / top-p sampling, one workgroup per row, matching `Sampler::sample` in
// runtime/sampling.rs. Self-contained: it has its own bindings, not common.wgsl's.
//
// Dispatch: (rows, 1, 1) workgroups of 256 threads.

struct Params {
    vocab: u32,
    rows: u32,
    // 1..=256; larger values are the host's job (see GpuSampler::supports).
    top_k: u32,
    temperature: f32,
    top_p: f32,
    // Word of `out` that receives row 0's id.
    out_offset: u32,
    // Elements between the starts of consecutive rows of `logits`.
    logits_row_stride: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
// One draw in [0, 1) per row, from the host's seeded generator, so a run repeats exactly.
@group(0) @binding(2) var<storage, read> uniforms: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

const WG: u32 = 256u;
// MAX_K, the largest top-k, comes from the header.
const SIGN: u32 = 0x80000000u;
// Ids take part in the selection as 24-bit digits (vocabularies up to 2^24).
const ID_MAX: u32 = 0xffffffu;

var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> suffix: array<u32, 256>;
// Result of one radix pass: the digit holding the element sought, how many elements are
// still needed from inside that digit, and how many elements fall in it.
var<workgroup> sel_digit: u32;
var<workgroup> sel_need: u32;
var<workgroup> sel_equal: u32;
var<workgroup> n_cand: atomic<u32>;
var<workgroup> cand_key: array<u32, MAX_K>;
var<workgroup> cand_id: array<u32, MAX_K>;
var<workgroup> prob: array<f32, MAX_K>;

// Unsigned order of the keys is f32::total_cmp's order (the CPU `top_k` sorts with it):
// negatives flipped entirely, non-negatives above them.
fn key_of(v: f32) -> u32 {
    let b = bitcast<u32>(v);
    return select(b | SIGN, ~b, (b & SIGN) != 0u);
}

// Larger reversed id = smaller id, so "largest first" also takes the smallest ids of a tie.
fn rid_of(j: u32) -> u32 {
    return ID_MAX - j;
}

// Whether (ka, ia) is sampled before (kb, ib): logit descending, then id ascending.
fn before(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
    return ka > kb || (ka == kb && ia < ib);
}

// After the histogram of the current digit is complete: picks the digit holding the
// `need`-th largest element. The suffix sums make exactly one thread's test true, so no
// thread has to walk the 256 bins alone.
fn choose_digit(t: u32, need: u32) {
    suffix[t] = atomicLoad(&hist[t]);
    workgroupBarrier();
    for (var off = 1u; off < WG; off <<= 1u) {
        var v = 0u;
        if (t + off < WG) { v = suffix[t + off]; }
        workgroupBarrier();
        suffix[t] += v;
        workgroupBarrier();
    }
    var above = 0u;
    if (t + 1u < WG) { above = suffix[t + 1u]; }
    if (suffix[t] >= need && above < need) {
        sel_digit = t;
        sel_need = need - above;
        sel_equal = suffix[t] - above;
    }
    workgroupBarrier();
}

@compute @workgroup_size(256)
fn sample(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let row = wg.x;
    if (row >= params.rows) { return; }
    let V = params.vocab;
    let base = row * params.logits_row_stride;
    let k = min(min(params.top_k, V), MAX_K);

    // Exact k-th largest key, one byte at a time from the top: each pass counts only the
    // elements that agree with the bytes chosen so far.
    var prefix = 0u;
    var mask = 0u;
    var need = k;
    var equal = 0u;
    for (var digit = 0u; digit < 4u; digit++) {
        let shift = 24u - 8u * digit;
        atomicStore(&hist[t], 0u);
        workgroupBarrier();
        for (var j = t; j < V; j += WG) {
            let key = key_of(logits[base + j]);
            if ((key & mask) == prefix) {
                atomicAdd(&hist[(key >> shift) & 0xffu], 1u);
            }
        }
        workgroupBarrier();
        choose_digit(t, need);
        prefix |= workgroupUniformLoad(&sel_digit) << shift;
        mask |= 0xffu << shift;
        need = workgroupUniformLoad(&sel_need);
        equal = workgroupUniformLoad(&sel_equal);
    }
    let threshold = prefix;

    // More ties at the threshold than places left: the same selection over reversed ids
    // keeps the smallest ids, so the result never depends on thread timing.
    var rid_threshold = 0u;
    if (equal > need) {
        var rprefix = 0u;
        var rmask = 0u;
        for (var digit = 0u; digit < 3u; digit++) {
            let shift = 16u - 8u * digit;
            atomicStore(&hist[t], 0u);
            workgroupBarrier();
            for (var j = t; j < V; j += WG) {
                let rid = rid_of(j);
                if (key_of(logits[base + j]) == threshold && (rid & rmask) == rprefix) {
                    atomicAdd(&hist[(rid >> shift) & 0xffu], 1u);
                }
            }
            workgroupBarrier();
            choose_digit(t, need);
            rprefix |= workgroupUniformLoad(&sel_digit) << shift;
            rmask |= 0xffu << shift;
            need = workgroupUniformLoad(&sel_need);
        }
        rid_threshold = rprefix;
    }

    // Exactly k elements pass this test; their order in the array does not matter yet.
    if (t == 0u) { atomicStore(&n_cand, 0u); }
    workgroupBarrier();
    for (var j = t; j < V; j += WG) {
        let key = key_of(logits[base + j]);
        if (key > threshold || (key == threshold && rid_of(j) >= rid_threshold)) {
            let s = atomicAdd(&n_cand, 1u);
            if (s < MAX_K) {
                cand_key[s] = key;
                cand_id[s] = j;
            }
        }
    }
    workgroupBarrier();

    // Bitonic sort over the next power of two; the padding sorts last (largest id).
    var n = 1u;
    while (n < k) { n <<= 1u; }
    if (t >= k && t < n) {
        cand_key[t] = 0u;
        cand_id[t] = 0xffffffffu;
    }
    workgroupBarrier();
    for (var size = 2u; size <= n; size <<= 1u) {
        for (var stride = size >> 1u; stride > 0u; stride >>= 1u) {
            let p = t ^ stride;
            if (t < n && p > t) {
                let ka = cand_key[t];
                let ia = cand_id[t];
                let kb = cand_key[p];
                let ib = cand_id[p];
                let first = (t & size) == 0u;
                if (select(before(ka, ia, kb, ib), before(kb, ib, ka, ia), first)) {
                    cand_key[t] = kb;
                    cand_id[t] = ib;
                    cand_key[p] = ka;
                    cand_id[p] = ia;
                }
            }
            workgroupBarrier();
        }
    }

    // The exps are independent, so they run in parallel; each is the CPU's
    // ((l - max) / t).exp() with the same operations in the same order.
    if (t < k) {
        let m = logits[base + cand_id[0]];
        prob[t] = exp((logits[base + cand_id[t]] - m) / params.temperature);
    }
    workgroupBarrier();

    // The sums stay on one thread, left to right like the CPU loops: a tree sum would round
    // differently and move the nucleus and draw boundaries.
    if (t == 0u) {
        var sum = 0.0;
        for (var i = 0u; i < k; i++) { sum += prob[i]; }
        for (var i = 0u; i < k; i++) { prob[i] = prob[i] / sum; }
        var keep = k;
        var acc = 0.0;
        for (var i = 0u; i < k; i++) {
            acc += prob[i];
            if (acc >= params.top_p) {
                keep = i + 1u;
                break;
            }
        }
        var total = 0.0;
        for (var i = 0u; i < keep; i++) { total += prob[i]; }
        var r = uniforms[row] * total;
        var chosen = cand_id[keep - 1u];
        for (var i = 0u; i < keep; i++) {
            r -= prob[i];
            if (r < 0.0) {
                chosen = cand_id[i];
                break;
            }
        }
        out[params.out_offset + row] = chosen;
    }
}
