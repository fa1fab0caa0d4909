// Causal attention over the KV cache (f16 or f32 cache, f32 scores and sums), three ways.
//
// Decode, split-KV with a unified max (FlashDecoding++ technique 1): a block takes one chunk
// of keys of one (token, head) and accumulates sum e^(s - phi) v and sum e^(s - phi) with the
// same fixed phi for every chunk, so the partials simply add up: no rescaling, no
// synchronisation between chunks, one division, done by the row's last chunk block to
// finish. If any s - phi leaves (lo, hi) the row is flagged, and that block recomputes
// exactly that row with the online softmax.
//
// Prefill: `attn_flash_<head dim>` on tensor cores where the KV cache is f16 (FlashAttention-2's
// loop, below), else `attn_online`, one block per (token, head) with the synchronised online
// softmax (also the fallback of flagged rows and of flash tiles that span two sequences).
//
// Lanes of a warp are cut into groups of L = lanes_per_key(head_dim) lanes, one key per
// group; a lane holds 8 dims of q, k and v, so each K or V row is read with 16-byte loads
// (f16) by adjacent lanes. ATT_WARPS warps per block.

#define NEG_INF (-3.0e38f)
// Keys per lane group in one batch of the split-KV loop (two batches are kept in registers).
#define SPLIT_BATCH 2

DEV u32 lanes_per_key(u32 hd) {
    u32 need = (hd + 7) / 8, l = 1;
    while (l < need) l <<= 1;
    return min(l, 32u);
}

// 8 dims of a K or V row from dim d0 (zero past hd).
DEV void load_kv8(const KV* row, u32 d0, u32 hd, bool vec, float out[8]) {
    if (vec && d0 + 8 <= hd) load8(row + d0, out);
    else load8_tail(row + d0, d0 < hd ? (int)(hd - d0) : 0, out);
}

// The same 8 dims kept as loaded (`Raw8`, 4 registers for f16), converted when used: a
// lane keeps several rows in flight without spilling.
#if FDPP_KV_F16
DEV Raw8<KV> load_kv_raw8(const KV* row, u32 d0, u32 hd, bool vec) {
    Raw8<KV> r;
    if (vec && d0 + 8 <= hd) {
        r = load_raw8(row + d0);
    } else {
        u32 h[8];
        for (int e = 0; e < 8; e++) h[e] = d0 + e < hd ? row[d0 + e] : 0;
        r.v = make_uint4(h[0] | h[1] << 16, h[2] | h[3] << 16, h[4] | h[5] << 16, h[6] | h[7] << 16);
    }
    return r;
}
#else
DEV Raw8<KV> load_kv_raw8(const KV* row, u32 d0, u32 hd, bool vec) {
    Raw8<KV> r;
    load_kv8(row, d0, hd, vec, r.f);
    return r;
}
#endif

// This lane's 8 dims of the query of (token i, head h).
DEV void load_q8(const Args& a, u32 i, u32 h, u32 d0, float q[8]) {
    u32 hd = a.head_dim, width = (a.heads + 2 * a.kv_heads) * hd;
    const float* row = a.x + (size_t)i * width + h * hd;
#pragma unroll
    for (int e = 0; e < 8; e++) q[e] = d0 + e < hd ? row[d0 + e] : 0.0f;
}

DEV float dot8(const float a[8], const float b[8]) {
    float s = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; e++) s += a[e] * b[e];
    return s;
}

// What a block's WARPS warps sum over a range of keys with the unified max: per warp,
// sum e^(s - phi) v (dims 0..hd-1) and sum e^(s - phi) (at hd), added up by the caller; and
// whether any score left (lo, hi).
template <int WARPS> struct UnifiedSums {
    float red[WARPS][MAX_HEAD_DIM + 1];
    u32 any_out;
};

// The first cache element of (token i, head h)'s KV head: from the step buffer, so a kernel
// reads it before it waits for the kernel before it (one dependent load less after).
DEV size_t kv_head_base(const Args& a, u32 i, u32 h) {
    return kv_slot(a, i, 0) + (h / (a.heads / a.kv_heads)) * a.head_dim;
}

// Which key and dims this thread reads: L lanes per key, kps keys per warp, its lane group
// and first dim. Kernels work it out before they wait for the kernel before them: its loop
// and divisions took ~0.6 us per layer of a decode step on an H200 when done after.
struct KeyLanes {
    u32 L, kps, warp, lane, grp, d0;
};
DEV KeyLanes key_lanes(u32 hd) {
    KeyLanes k;
    k.L = lanes_per_key(hd);
    k.kps = 32 / k.L;
    k.warp = threadIdx.x >> 5;
    k.lane = threadIdx.x & 31;
    k.grp = k.lane / k.L;
    k.d0 = (k.lane % k.L) * 8;
    return k;
}

// SPLIT_BATCH keys of each lane group, as loaded: keys jb + u * step_keys + grp.
struct KeyBatch {
    Raw8<KV> k[SPLIT_BATCH], v[SPLIT_BATCH];
};

// The K and V rows of a batch's keys; a key past `end` reads row `start` (its weight is 0).
DEV void load_batch(const Args& a, const KeyLanes& kl, size_t base, u32 jb, u32 step_keys, u32 start, u32 end, KeyBatch& b) {
    const u32 hd = a.head_dim;
    const bool vec = hd % 8 == 0;
    const size_t kv_dim = a.kv_heads * hd;
#pragma unroll
    for (int u = 0; u < SPLIT_BATCH; u++) {
        const u32 j = jb + u * step_keys + kl.grp;
        const size_t row = base + (size_t)(j < end ? j : start) * kv_dim;
        b.k[u] = load_kv_raw8(a.kc + row, kl.d0, hd, vec);
        b.v[u] = load_kv_raw8(a.vc + row, kl.d0, hd, vec);
    }
}

// The batch's keys into this lane's sums: sum e^(s - phi) v (o) and sum e^(s - phi) (l).
DEV void add_batch(const Args& a, const KeyLanes& kl, const float (&q)[8], const KeyBatch& b, u32 jb, u32 step_keys, u32 end, float (&o)[8],
                   float& l, bool& out_of_range) {
#pragma unroll
    for (int u = 0; u < SPLIT_BATCH; u++) {
        const bool ok = jb + u * step_keys + kl.grp < end;
        float k8[8], v8[8];
        raw8_floats(b.k[u], k8);
        raw8_floats(b.v[u], v8);
        float d = group_sum(dot8(q, k8), kl.L) * a.scale - a.phi;
        if (ok && (d < a.lo || d > a.hi)) out_of_range = true;
        float p = ok ? expf(d) : 0.0f;
        l += p;
#pragma unroll
        for (int e = 0; e < 8; e++) o[e] += p * v8[e];
    }
}

// Keys [start, end) of (token i, head h), whose KV head starts at `base`, into `s`; the
// whole block calls it, and `s` is complete when it returns.
template <int WARPS>
DEV void unified_sums(const Args& a, const KeyLanes& kl, u32 i, u32 h, size_t base, u32 start, u32 end, UnifiedSums<WARPS>& s) {
    const u32 hd = a.head_dim;
    const u32 L = kl.L, warp = kl.warp, lane = kl.lane, d0 = kl.d0;
    if (threadIdx.x == 0) s.any_out = 0;
    float q[8], o[8] = {0, 0, 0, 0, 0, 0, 0, 0}, l = 0.0f;
    load_q8(a, i, h, d0, q);
    bool out_of_range = false;
    // Batches of SPLIT_BATCH keys per lane group, two in registers: while one is summed,
    // the next one's K and V loads are in flight, so a lane has 2 x SPLIT_BATCH 16-byte
    // loads outstanding while it computes, not only between batches. (On an H200 this form
    // with batches of 2 beat one batch of 4 at a time: SmolLM2 batch 1 533.1 -> 510.4 us
    // per step, Llama-2-7B at 4096 keys 4695.0 -> 4677.4; batches of 4 in this form took
    // 137 registers and lost: bench/results/h200.md, session 17, call 1.)
    const u32 step_keys = WARPS * kl.kps, stride = SPLIT_BATCH * step_keys;
    u32 jb = start + warp * kl.kps;
    KeyBatch x, y;
    if (jb < end) load_batch(a, kl, base, jb, step_keys, start, end, x);
    while (jb < end) {
        if (jb + stride < end) load_batch(a, kl, base, jb + stride, step_keys, start, end, y);
        add_batch(a, kl, q, x, jb, step_keys, end, o, l, out_of_range);
        jb += stride;
        if (jb >= end) break;
        if (jb + stride < end) load_batch(a, kl, base, jb + stride, step_keys, start, end, x);
        add_batch(a, kl, q, y, jb, step_keys, end, o, l, out_of_range);
        jb += stride;
    }
#pragma unroll
    for (int e = 0; e < 8; e++) o[e] = xor_sum(o[e], L, 32);
    l = xor_sum(l, L, 32);
    __syncthreads(); // any_out is initialised
    if (warp_any(out_of_range) && lane == 0) s.any_out = 1;
    if (lane < L) {
#pragma unroll
        for (int e = 0; e < 8; e++) if (d0 + e < hd) s.red[warp][d0 + e] = o[e];
    }
    if (lane == 0) s.red[warp][hd] = l;
    __syncthreads();
}

// Entry d of the warps' sums, added up.
template <int WARPS> DEV float warps_sum(const UnifiedSums<WARPS>& s, u32 d) {
    float v = 0.0f;
#pragma unroll
    for (int w = 0; w < WARPS; w++) v += s.red[w][d];
    return v;
}

// Below: the fallback of a flagged row.
template <int WARPS> DEV void online_row(const Args& a, u32 i, u32 h);

// grid: (>= chunks, heads, m); partials in scratch[((i * heads + h) * chunks + c) * (hd + 1)].
KERNEL void attn_split(Args a) {
    __shared__ UnifiedSums<ATT_WARPS> s;
    // The step buffer is written by step_begin, which lets no kernel launch before it ends:
    // readable before the wait.
    pdl_trigger();
    const Step& st = step_of(a);
    const u32 c = blockIdx.x, h = blockIdx.y, i = blockIdx.z;
    // A graph captured for a larger chunk count launches blocks past this step's chunks.
    if (i >= st.m || c >= st.attn_chunks) return;
    const u32 hd = a.head_dim, pos = position_at(a, i);
    const u32 start = c * st.attn_chunk_keys;
    const u32 end = max(min(start + st.attn_chunk_keys, pos + 1), start);
    const size_t base = kv_head_base(a, i, h);
    const KeyLanes kl = key_lanes(hd);
    pdl_wait();
    unified_sums<ATT_WARPS>(a, kl, i, h, base, start, end, s);
    const size_t out = ((size_t)(i * a.heads + h) * st.attn_chunks + c) * (hd + 1);
    for (u32 d = threadIdx.x; d <= hd; d += blockDim.x) a.scratch[out + d] = warps_sum(s, d);
    // The last of (i, h)'s chunks to finish adds the partials up, so a layer's attention is
    // one launch (a separate combine kernel cost SmolLM2's batch-1 step 6 us on an H200,
    // session 18, call 3). The pair's flag word counts finished chunks in its low 16 bits
    // and chunks with a score out of range above; the last chunk sets it back to 0.
    __shared__ u32 last_seen;
    u32* count = &a.flags[a.flag_offset + i * a.heads + h];
    const u32 add = s.any_out ? 0x10001u : 1u;
    __threadfence(); // this block's partials before its count
    __syncthreads();
    if (threadIdx.x == 0) last_seen = atomicAdd(count, add) + add;
    __syncthreads();
    const u32 seen = last_seen;
    if ((seen & 0xffffu) != st.attn_chunks) return;
    __threadfence(); // the count before the others' partials
    if (threadIdx.x == 0) *count = 0;
    if (seen >> 16) {
        if (threadIdx.x == 0) atomicAdd(&a.flags[0], 1u);
        online_row<ATT_WARPS>(a, i, h);
        return;
    }
    const u32 chunks = pos / st.attn_chunk_keys + 1, stride = hd + 1;
    // Written by other blocks during this kernel: volatile, so read past this SM's L1.
    const volatile float* p = a.scratch + (size_t)(i * a.heads + h) * st.attn_chunks * stride;
    float l = 0.0f;
    for (u32 k = 0; k < chunks; k++) l += p[(size_t)k * stride + hd];
    for (u32 d = threadIdx.x; d < hd; d += blockDim.x) {
        float v = 0.0f;
        for (u32 k = 0; k < chunks; k++) v += p[(size_t)k * stride + d];
        a.y[(size_t)i * a.heads * hd + h * hd + d] = v / l;
    }
}

// The synchronised online softmax for one (token, head); the whole block (WARPS warps)
// calls it. Per tile of WARPS x 32 keys (one per thread): scores by lane groups into shared
// memory, the tile's max and sum by warp reductions, then each lane group accumulates p * v
// over its keys of the tile in the same 8-dims-per-lane layout; one reduction at the end.
template <int WARPS> DEV void online_row(const Args& a, u32 i, u32 h) {
    constexpr u32 ONLINE_TILE = WARPS * 32;
    __shared__ float ps[ONLINE_TILE];
    __shared__ float part[WARPS];
    __shared__ float red[WARPS][MAX_HEAD_DIM];
    const u32 hd = a.head_dim, kvh = h / (a.heads / a.kv_heads), pos = position_at(a, i);
    const u32 L = lanes_per_key(hd), kps = 32 / L;
    const u32 warp = threadIdx.x >> 5, lane = threadIdx.x & 31, grp = lane / L, d0 = (lane % L) * 8, t = threadIdx.x;
    const bool vec = hd % 8 == 0;
    const size_t base = kv_slot(a, i, 0) + kvh * hd;
    const size_t kv_dim = a.kv_heads * hd;
    float q[8], o[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    load_q8(a, i, h, d0, q);
    float m_run = NEG_INF, l = 0.0f;
    for (u32 j0 = 0; j0 <= pos; j0 += ONLINE_TILE) {
        for (u32 kk = warp * kps; kk < ONLINE_TILE; kk += WARPS * kps) {
            const u32 j = j0 + kk + grp;
            const bool ok = j <= pos;
            float k8[8];
            load_kv8(a.kc + base + (size_t)(ok ? j : 0) * kv_dim, d0, hd, vec, k8);
            float s = group_sum(dot8(q, k8), L) * a.scale;
            if (lane % L == 0) ps[kk + grp] = ok ? s : NEG_INF;
        }
        __syncthreads();
        // One key per thread.
        float mx = warp_max(ps[t]);
        if (lane == 0) part[warp] = mx;
        __syncthreads();
        mx = part[0];
#pragma unroll
        for (int w = 1; w < WARPS; w++) mx = fmaxf(mx, part[w]);
        const float m_new = fmaxf(m_run, mx), corr = expf(m_run - m_new);
        const float p = j0 + t <= pos ? expf(ps[t] - m_new) : 0.0f;
        __syncthreads(); // every thread has read part[] and ps[t]
        ps[t] = p;
        const float tile_sum = warp_sum(p);
        if (lane == 0) part[warp] = tile_sum;
        __syncthreads();
        float sum = 0.0f;
#pragma unroll
        for (int w = 0; w < WARPS; w++) sum += part[w];
        l = l * corr + sum;
#pragma unroll
        for (int e = 0; e < 8; e++) o[e] *= corr;
        const u32 n = min((u32)ONLINE_TILE, pos + 1 - j0);
        for (u32 kk = warp * kps + grp; kk < n; kk += WARPS * kps) {
            float v8[8];
            load_kv8(a.vc + base + (size_t)(j0 + kk) * kv_dim, d0, hd, vec, v8);
            const float pk = ps[kk];
#pragma unroll
            for (int e = 0; e < 8; e++) o[e] += pk * v8[e];
        }
        m_run = m_new;
        __syncthreads(); // ps and part are refilled by the next tile
    }
#pragma unroll
    for (int e = 0; e < 8; e++) o[e] = xor_sum(o[e], L, 32);
    if (lane < L) {
#pragma unroll
        for (int e = 0; e < 8; e++) if (d0 + e < hd) red[warp][d0 + e] = o[e];
    }
    __syncthreads();
    float* y = a.y + (size_t)i * a.heads * hd + h * hd;
    for (u32 d = t; d < hd; d += WARPS * 32) {
        float s = 0.0f;
#pragma unroll
        for (int w = 0; w < WARPS; w++) s += red[w][d];
        y[d] = s / l;
    }
}

// grid: (1, heads, m), WARPS warps: a decode step with one chunk per (token, head) (the
// lowering's choice where one block reads the keys fast enough): the unified-max sums of
// all keys, added up and divided in the block; no partials, no atomics. A
// flagged row is recomputed here with the online softmax (counted in flags[0]). (Each
// kernel is bounded to its block size: the compiler keeps to the registers it may hold.)
template <int WARPS> DEV void attn_single_body(const Args& a) {
    __shared__ UnifiedSums<WARPS> s;
    pdl_trigger();
    const u32 h = blockIdx.y, i = blockIdx.z, hd = a.head_dim;
    if (i >= step_of(a).m) return;
    const u32 keys = position_at(a, i) + 1;
    const size_t base = kv_head_base(a, i, h);
    const KeyLanes kl = key_lanes(hd);
    pdl_wait();
    unified_sums<WARPS>(a, kl, i, h, base, 0, keys, s);
    if (s.any_out) {
        if (threadIdx.x == 0) atomicAdd(&a.flags[0], 1u);
        online_row<WARPS>(a, i, h);
        return;
    }
    const float l = warps_sum(s, hd);
    for (u32 d = threadIdx.x; d < hd; d += blockDim.x) a.y[(size_t)i * a.heads * hd + h * hd + d] = warps_sum(s, d) / l;
}
KERNEL void __launch_bounds__(SINGLE_WARPS * 32) attn_single(Args a) { attn_single_body<SINGLE_WARPS>(a); }
// The same with SINGLE_NARROW_WARPS warps, for steps of more (token, head) pairs than the
// device has SMs: two blocks fit on an SM, so every pair runs in one wave.
KERNEL void __launch_bounds__(SINGLE_NARROW_WARPS * 32) attn_single_narrow(Args a) { attn_single_body<SINGLE_NARROW_WARPS>(a); }

// grid: (heads, m): prefill, every row with the online softmax. (Four rows per block
// sharing their K and V loads measured 10% slower on an H200 at a 512-token prefill: the
// per-row shuffles, not the loads, bound this kernel.)
KERNEL void attn_online(Args a) {
    pdl_begin();
    if (blockIdx.y >= step_of(a).m) return;
    online_row<ATT_WARPS>(a, blockIdx.y, blockIdx.x);
}

#if FDPP_KV_F16 && FDPP_TENSOR_CORES
// Prefill on tensor cores: FLASH_ROWS query rows of one head per block, 16 per warp; the
// keys are walked in tiles of FLASH_KEYS with the online softmax (FlashAttention-2): S = Q K^T
// and O += P V by mma m16n8k16 (f16 operands, f32 accumulators), P kept in registers as the
// A operand of the second product. K and V tiles are staged in shared memory by cp.async:
// the V tile loads while S is computed, the next K tile while P V is. Scores are kept in
// base 2 (q is scaled by scale * log2 e), so the softmax's exponentials are exp2.
//
// A block's rows must share one sequence (its keys are that sequence's); a tile that spans
// two sequences (a step that prefills several) is done row by row with the online softmax.
#define LOG2E 1.4426950408889634f

template <int D> DEV void flash_tile(const Args& a, u32 row0, u32 h) {
    constexpr int QK_STEPS = D / 16, O_TILES = D / 8, S_TILES = FLASH_KEYS / 8;
    constexpr int LD = D + 8; // shared row stride in halves: rows stay 16-byte aligned and ldmatrix conflict-free
    __shared__ __align__(16) f16 ks[FLASH_KEYS * LD];
    __shared__ __align__(16) f16 vs[FLASH_KEYS * LD];
    __shared__ int block_keys, mixed;
    const u32 m = step_of(a).m;
    const u32 warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    if (threadIdx.x == 0) {
        block_keys = 0;
        mixed = 0;
    }
    __syncthreads();
    // The block's keys: 0 ..= its rows' last position; this warp's rows need keys up to its own.
    const u32 seq0 = seq_at(a, row0);
    int warp_last = -1;
    if (lane < 16) {
        const u32 i = row0 + warp * 16 + lane;
        if (i < m) {
            warp_last = max(warp_last, (int)position_at(a, i));
            if (seq_at(a, i) != seq0) mixed = 1;
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) warp_last = max(warp_last, shfl_xor(warp_last, o));
    if (lane == 0) atomicMax(&block_keys, warp_last + 1);
    __syncthreads();
    if (mixed) {
        for (u32 i = row0; i < min(row0 + FLASH_ROWS, m); i++) online_row<ATT_WARPS>(a, i, h);
        return;
    }
    const u32 keys = (u32)block_keys, kvh = h / (a.heads / a.kv_heads);
    const u32 width = (a.heads + 2 * a.kv_heads) * D;
    const size_t kv_dim = (size_t)a.kv_heads * D, base = kv_slot(a, row0, 0) + kvh * D;

    // This lane's rows g and g + 8 of the warp's 16: positions (-1: past the step's rows,
    // every key masked) and the A fragments of q, scaled and rounded to f16.
    int pos[2];
    u32 qa[QK_STEPS][4];
    const float qs = a.scale * LOG2E;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const u32 i = row0 + warp * 16 + g + 8 * r;
        pos[r] = i < m ? (int)position_at(a, i) : -1;
        const float* q = a.x + (size_t)min(i, m - 1) * width + h * D;
#pragma unroll
        for (int kk = 0; kk < QK_STEPS; kk++) {
            const float2 lo = *(const float2*)(q + kk * 16 + 2 * t), hi = *(const float2*)(q + kk * 16 + 2 * t + 8);
            qa[kk][r] = pack_h2(lo.x * qs, lo.y * qs);
            qa[kk][2 + r] = pack_h2(hi.x * qs, hi.y * qs);
        }
    }

    // One tile of K or V rows j0 .. j0 + FLASH_KEYS into shared memory (rows past `keys`: zeros).
    auto stage = [&](f16* dst, const KV* cache, u32 j0) {
        constexpr int PARTS = D / 8; // 16-byte parts per row
        for (u32 c = threadIdx.x; c < FLASH_KEYS * PARTS; c += ATT_WARPS * 32) {
            const u32 r = c / PARTS, col = (c % PARTS) * 8, j = j0 + r;
            cp_async16(dst + r * LD + col, cache + base + (size_t)(j < keys ? j : 0) * kv_dim + col, j < keys);
        }
        cp_async_commit();
    };

    float o[O_TILES][4];
#pragma unroll
    for (int n = 0; n < O_TILES; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float row_max[2] = {NEG_INF, NEG_INF}, row_sum[2] = {0.0f, 0.0f};
    stage(ks, a.kc, 0);
    for (u32 j0 = 0; j0 < keys; j0 += FLASH_KEYS) {
        cp_async_wait_all();
        __syncthreads(); // this K tile is in; every warp is done with the last V tile
        stage(vs, a.vc, j0);
        // Warps whose rows all end before this tile skip its products (the causal diagonal).
        const bool active = (int)j0 <= warp_last;
        float s[S_TILES][4];
        if (active) {
#pragma unroll
            for (int n = 0; n < S_TILES; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < QK_STEPS; kk++) {
#pragma unroll
                for (int np = 0; np < S_TILES / 2; np++) {
                    u32 b[4]; // keys np*16 + (0..8 | 8..16), dims kk*16 + (0..8 | 8..16)
                    ldmatrix_x4(b, ks + (np * 16 + (lane & 7) + ((lane >> 4) & 1) * 8) * LD + kk * 16 + ((lane >> 3) & 1) * 8);
                    mma_16x8x16(s[2 * np], qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3], b[0], b[1]);
                    mma_16x8x16(s[2 * np + 1], qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3], b[2], b[3]);
                }
            }
            // Causal mask, then the online softmax of rows g and g + 8 (a row's values sit
            // in the four lanes of a quad).
            float mx[2] = {row_max[0], row_max[1]};
#pragma unroll
            for (int n = 0; n < S_TILES; n++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int j = (int)j0 + n * 8 + 2 * t + (e & 1);
                    if (j > pos[e >> 1]) s[n][e] = NEG_INF;
                    mx[e >> 1] = fmaxf(mx[e >> 1], s[n][e]);
                }
            }
            float corr[2];
#pragma unroll
            for (int r = 0; r < 2; r++) {
                mx[r] = fmaxf(mx[r], shfl_xor(mx[r], 1));
                mx[r] = fmaxf(mx[r], shfl_xor(mx[r], 2));
                corr[r] = exp2f(row_max[r] - mx[r]);
                row_max[r] = mx[r];
                row_sum[r] *= corr[r];
            }
#pragma unroll
            for (int n = 0; n < S_TILES; n++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    s[n][e] = exp2f(s[n][e] - mx[e >> 1]);
                    row_sum[e >> 1] += s[n][e];
                }
            }
#pragma unroll
            for (int n = 0; n < O_TILES; n++) {
                o[n][0] *= corr[0];
                o[n][1] *= corr[0];
                o[n][2] *= corr[1];
                o[n][3] *= corr[1];
            }
        }
        cp_async_wait_all();
        __syncthreads(); // this V tile is in; every warp is done with this K tile
        if (j0 + FLASH_KEYS < keys) stage(ks, a.kc, j0 + FLASH_KEYS);
        if (active) {
#pragma unroll
            for (int kk = 0; kk < FLASH_KEYS / 16; kk++) {
                // P's S tiles 2kk and 2kk + 1 are the A fragment of keys kk*16 .. kk*16 + 16.
                const u32 p0 = pack_h2(s[2 * kk][0], s[2 * kk][1]), p1 = pack_h2(s[2 * kk][2], s[2 * kk][3]);
                const u32 p2 = pack_h2(s[2 * kk + 1][0], s[2 * kk + 1][1]), p3 = pack_h2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
                for (int np = 0; np < O_TILES / 2; np++) {
                    u32 b[4]; // keys kk*16 + (0..8 | 8..16), dims np*16 + (0..8 | 8..16)
                    ldmatrix_x4_trans(b, vs + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + np * 16 + ((lane >> 4) & 1) * 8);
                    mma_16x8x16(o[2 * np], p0, p1, p2, p3, b[0], b[1]);
                    mma_16x8x16(o[2 * np + 1], p0, p1, p2, p3, b[2], b[3]);
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        row_sum[r] += shfl_xor(row_sum[r], 1);
        row_sum[r] += shfl_xor(row_sum[r], 2);
        const u32 i = row0 + warp * 16 + g + 8 * r;
        if (i >= m) continue;
        float* y = a.y + (size_t)i * a.heads * D + h * D;
#pragma unroll
        for (int n = 0; n < O_TILES; n++) *(float2*)(y + n * 8 + 2 * t) = make_float2(o[n][2 * r] / row_sum[r], o[n][2 * r + 1] / row_sum[r]);
    }
}

// grid: (m / FLASH_ROWS rounded up, heads).
KERNEL void attn_flash_64(Args a) {
    pdl_begin();
    if (blockIdx.x * FLASH_ROWS < step_of(a).m) flash_tile<64>(a, blockIdx.x * FLASH_ROWS, blockIdx.y);
}
KERNEL void attn_flash_128(Args a) {
    pdl_begin();
    if (blockIdx.x * FLASH_ROWS < step_of(a).m) flash_tile<128>(a, blockIdx.x * FLASH_ROWS, blockIdx.y);
}
#endif
