// Row-wise and elementwise stages of the transformer. Grids: x over columns (ELEM_BLOCK per
// block), y over rows, unless noted.

// Rows of the embedding table picked by token id. A table split into chunks is gathered by
// one launch per chunk; each handles the tokens whose id falls in its rows.
KERNEL void embedding(Args a) {
    pdl_begin();
    u32 i = blockIdx.y, j = blockIdx.x * ELEM_BLOCK + threadIdx.x, H = a.k;
    if (i >= step_of(a).m || j >= H) return;
    u32 tok = token_at(a, i);
    if (tok < a.n_offset || tok >= a.n_offset + a.n) return;
    a.y[(size_t)i * H + j] = wf(a.w[(size_t)(tok - a.n_offset) * H + j]);
}

// One block of 256 per row: x / sqrt(mean(x^2) + eps) * weight.
KERNEL void rms_norm(Args a) {
    pdl_begin();
    __shared__ float part[8];
    u32 i = blockIdx.y, H = a.k, t = threadIdx.x;
    if (i >= row_count(a)) return;
    const float* x = a.x + (size_t)i * H;
    float s = 0.0f;
    for (u32 j = t; j < H; j += 256) s += x[j] * x[j];
    s = warp_sum(s);
    if ((t & 31) == 0) part[t >> 5] = s;
    __syncthreads();
    float total = 0.0f;
#pragma unroll
    for (int w = 0; w < 8; w++) total += part[w];
    float inv = 1.0f / sqrtf(total / (float)H + a.eps);
    for (u32 j = t; j < H; j += 256) a.y[(size_t)i * H + j] = x[j] * inv * wf(a.w[j]);
}

// Rotary embedding of the Q and K heads of a fused QKV row (split-halves layout); V is
// copied. mode 1 also appends the rotated K and the V to the sequence's cache.
KERNEL void rope(Args a) {
    pdl_begin();
    u32 i = blockIdx.y, j = blockIdx.x * ELEM_BLOCK + threadIdx.x, width = a.n;
    if (i >= step_of(a).m || j >= width) return;
    u32 d = a.head_dim, half = d / 2, q_dim = a.heads * d, rotated = q_dim + a.kv_heads * d;
    const float* x = a.x + (size_t)i * width;
    float v = x[j];
    if (j < rotated) {
        u32 base = (j / d) * d, within = j % d, p = within % half, pos = position_at(a, i);
        float c = a.rope[((size_t)pos * half + p) * 2], s = a.rope[((size_t)pos * half + p) * 2 + 1];
        float x0 = x[base + p], x1 = x[base + p + half];
        v = within < half ? x0 * c - x1 * s : x1 * c + x0 * s;
    }
    a.y[(size_t)i * width + j] = v;
    if (a.mode == 1 && j >= q_dim) {
        size_t slot = kv_slot(a, i, position_at(a, i));
        if (j < rotated) a.kc[slot + j - q_dim] = to_kv(v);
        else a.vc[slot + j - rotated] = to_kv(v);
    }
}

// Appends K and V of each token (from the rotated QKV row) to its sequence's cache.
KERNEL void kv_write(Args a) {
    pdl_begin();
    u32 i = blockIdx.y, j = blockIdx.x * ELEM_BLOCK + threadIdx.x;
    u32 kv_dim = a.kv_heads * a.head_dim;
    if (i >= step_of(a).m || j >= kv_dim) return;
    u32 q_dim = a.heads * a.head_dim, width = q_dim + 2 * kv_dim;
    size_t slot = kv_slot(a, i, position_at(a, i)) + j;
    a.kc[slot] = to_kv(a.x[(size_t)i * width + q_dim + j]);
    a.vc[slot] = to_kv(a.x[(size_t)i * width + q_dim + kv_dim + j]);
}

// silu(gate) * up, with gate and up side by side in each input row.
KERNEL void swiglu(Args a) {
    pdl_begin();
    u32 i = blockIdx.y, j = blockIdx.x * ELEM_BLOCK + threadIdx.x, F = a.n;
    if (i >= row_count(a) || j >= F) return;
    a.y[(size_t)i * F + j] = silu_mul(a.x[(size_t)i * 2 * F + j], a.x[(size_t)i * 2 * F + F + j]);
}

KERNEL void add(Args a) {
    pdl_begin();
    u32 i = blockIdx.y, j = blockIdx.x * ELEM_BLOCK + threadIdx.x, H = a.n;
    if (i >= row_count(a) || j >= H) return;
    size_t o = (size_t)i * H + j;
    a.y[o] = a.x[o] + a.x2[o];
}

KERNEL void select_rows(Args a) {
    pdl_begin();
    u32 r = blockIdx.y, j = blockIdx.x * ELEM_BLOCK + threadIdx.x, H = a.n;
    if (r >= step_of(a).n_out || j >= H) return;
    a.y[(size_t)r * H + j] = a.x[(size_t)out_row_at(a, r) * H + j];
}

// The first launch of every step: copies the step's words from host memory the device
// reads directly (a.x, written by the host before the launch) into the step buffer (a.step,
// a.k words), the picked ids of the last step (flags[1..=m]) in place of the tokens where
// the words say so, then zeroes the a.n flag words. Doing this in a kernel keeps a step one
// graph launch, with no copies queued around it. It never triggers its dependents early
// (no pdl_trigger): every later launch may read the step buffer before its pdl_wait.
// One block.
KERNEL void step_begin(Args a) {
    pdl_wait();
    const u32* words = (const u32*)a.x;
    const Step& header = *(const Step*)words;
    const u32 m = header.m, picked = header.picked;
    u32* step = (u32*)a.step;
    for (u32 i = threadIdx.x; i < a.k; i += blockDim.x) {
        const u32 t = i - STEP_WORDS;
        step[i] = (picked && i >= STEP_WORDS && t < m) ? a.flags[1 + t] : words[i];
    }
    __syncthreads();
    for (u32 i = threadIdx.x; i < a.n; i += blockDim.x) a.flags[i] = 0;
}

// Greedy sampling on the device: the index of the largest logit of each output row (the
// lowest index among equals; none if no logit is above -3.4e38), written to flags[1 + row].
// grid (blocks per row, rows), 256 threads. Each block finds the best of its slice of the row
// and folds it into the row's 64-bit slot at flags[flag_offset + 4 * row] with one atomicMax:
// the value's bits made order-preserving above, the complemented index below, so a larger
// value wins and equal values keep the lower index. The row's last block to finish (counted
// in the next word) writes the index. The flags are zeroed before every step. (One block per
// row took 41 us for a 49152-entry row on an H200.) The same block copies the ids, and the
// count of recomputed rows (flags[0]), into a.y: host memory the device writes directly,
// which the host reads once the step's event has passed.
DEV unsigned long long argmax_key(float v, u32 i) {
    u32 b = __float_as_uint(v);
    b = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
    return ((unsigned long long)b << 32) | (unsigned long long)(~i);
}

KERNEL void argmax(Args a) {
    pdl_begin();
    __shared__ float bv[8];
    __shared__ u32 bi[8];
    u32 r = blockIdx.y, V = a.n, t = threadIdx.x;
    if (r >= step_of(a).n_out) return;
    const u32 per = (V + gridDim.x - 1) / gridDim.x, lo = min(blockIdx.x * per, V), hi = min(lo + per, V);
    float best = -3.4e38f;
    u32 idx = 0xffffffffu;
    for (u32 j = lo + t; j < hi; j += 256) {
        float v = a.x[(size_t)r * V + j];
        if (v > best) { best = v; idx = j; }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = shfl_xor(best, o);
        u32 oi = shfl_xor(idx, o);
        if (ov > best || (ov == best && oi < idx)) { best = ov; idx = oi; }
    }
    if ((t & 31) == 0) { bv[t >> 5] = best; bi[t >> 5] = idx; }
    __syncthreads();
    if (t == 0) {
        for (int w = 1; w < 8; w++) {
            if (bv[w] > best || (bv[w] == best && bi[w] < idx)) { best = bv[w]; idx = bi[w]; }
        }
        unsigned long long* slot = (unsigned long long*)(a.flags + a.flag_offset + 4 * r);
        u32* done = a.flags + a.flag_offset + 4 * r + 2;
        if (idx != 0xffffffffu) atomicMax(slot, argmax_key(best, idx));
        __threadfence();
        if (atomicAdd(done, 1u) == gridDim.x - 1) {
            __threadfence();
            const unsigned long long key = atomicAdd(slot, 0ull);
            const u32 id = key == 0 ? 0xffffffffu : ~(u32)key;
            u32* out = (u32*)a.y;
            a.flags[1 + r] = id;
            out[1 + r] = id;
            if (r == 0) out[0] = a.flags[0];
            __threadfence_system();
        }
    }
}

// Bandwidth probes of `bench kernels`: a.n 16-byte words read (summed into one word per
// thread that no input makes non-zero, so the loads cannot be dropped), or copied x -> y.
KERNEL void stream_read(Args a) {
    pdl_begin();
    const uint4* p = (const uint4*)a.x;
    u32 acc = 0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < a.n; i += (size_t)gridDim.x * blockDim.x) {
        uint4 v = p[i];
        acc |= (v.x & v.y & v.z & v.w) == 0xdeadbeefu;
    }
    if (acc) a.y[0] = 1.0f;
}

KERNEL void stream_copy(Args a) {
    pdl_begin();
    const uint4* p = (const uint4*)a.x;
    uint4* q = (uint4*)a.y;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < a.n; i += (size_t)gridDim.x * blockDim.x) q[i] = p[i];
}
