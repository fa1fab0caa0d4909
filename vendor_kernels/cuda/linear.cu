// y[m, n_offset + j] = sum_k x[m, k] * w[j, k]: the three dataflows of a linear layer.
// A (gemv_*): M <= GEMV_MAX_M; a block per four output columns, its warps splitting K,
//   walks the weights once with 16-byte loads, every row's sums in registers, so the
//   weights stream once for all rows; the RMSNorm prologue and the SwiGLU / RoPE+KV-write
//   epilogues run inside it.
// B (flat_gemm_*): the paper's flat GEMM on tensor cores. The weight matrix is mma's
//   16-row operand, so the tokens pad only to 8; a block owns a tile of 8-32 tokens x 16-32
//   columns and its warps split K, so even N = 4096 puts thousands of warps in flight; it
//   has the GEMV's prologue and epilogues.
// C (gemm_mma): 128 columns x 64 tokens per block, the tokens' K-slab staged once in shared
//   memory for the eight warps (f16 builds). f32-weight builds run gemm_tiled (CUDA cores)
//   for B and C alike.
//
// mma fragments: lane (g = lane / 4, t = lane % 4) loads elements 8t .. 8t + 7 of a 32-wide
// slab of K with one 16-byte load and feeds them to two m16n8k16 products. That permutes K
// inside the slab the same way for both operands, so every product pairs the same k.

#define MODE_RESIDUAL 1u
#define GV_PREFETCH_BLOCKS 512
#define MODE_NORM 2u
#define MODE_SWIGLU 4u
#define MODE_ROPE 8u

template <bool BIAS> DEV float bias_of(const Args& a, u32 col) {
    if constexpr (BIAS) return a.bias[col]; else return 0.0f;
}

// The residual epilogue of plain columns (output column c, already offset).
template <u32 MODE, bool BIAS> DEV float epilogue(const Args& a, u32 row, u32 c, float v) {
    float b = v + bias_of<BIAS>(a, c);
    if constexpr ((MODE & MODE_RESIDUAL) != 0) b += a.x2[(size_t)row * a.ldy + c];
    return b;
}

// The two columns of rotary pair p: (i, i + half) of a Q or K head, then V's columns two by two.
DEV void rope_pair(const Args& a, u32 p, u32& ca, u32& cb) {
    u32 hd = a.head_dim, half = hd / 2, rotary_pairs = (a.heads + a.kv_heads) * half;
    if (p < rotary_pairs) {
        ca = (p / half) * hd + p % half;
        cb = ca + half;
    } else {
        ca = (a.heads + a.kv_heads) * hd + 2 * (p - rotary_pairs);
        cb = ca + 1;
    }
}

// As the rope kernel with its KV write, for one pair of row r.
DEV void rope_store(const Args& a, u32 r, u32 ca, u32 cb, float va, float vb) {
    u32 hd = a.head_dim, half = hd / 2, q_dim = a.heads * hd, kv_dim = a.kv_heads * hd, rotated = q_dim + kv_dim;
    float ra = va, rb = vb;
    if (ca < rotated) {
        size_t at = ((size_t)position_at(a, r) * half + ca % hd) * 2;
        float c = a.rope[at], s = a.rope[at + 1];
        ra = va * c - vb * s;
        rb = vb * c + va * s;
    }
    a.y[(size_t)r * a.ldy + ca] = ra;
    a.y[(size_t)r * a.ldy + cb] = rb;
    if (ca >= q_dim) {
        size_t slot = kv_slot(a, r, position_at(a, r));
        if (ca < rotated) {
            a.kc[slot + ca - q_dim] = to_kv(ra);
            a.kc[slot + cb - q_dim] = to_kv(rb);
        } else {
            a.vc[slot + ca - rotated] = to_kv(ra);
            a.vc[slot + cb - rotated] = to_kv(rb);
        }
    }
}

// Row r's outputs of columns a and b from their dot products and the row's sum of squares.
template <u32 MODE, bool BIAS>
DEV void gemv_store(const Args& a, u32 r, u32 ca, u32 cb, bool va, bool vb, float da, float db, float sumsq) {
    if constexpr ((MODE & MODE_NORM) != 0) {
        float inv = 1.0f / sqrtf(sumsq / (float)a.k + a.eps);
        da *= inv;
        db *= inv;
    }
    if constexpr ((MODE & (MODE_SWIGLU | MODE_ROPE)) != 0) {
        // The fused epilogues see the biased product.
        da += bias_of<BIAS>(a, ca);
        db += bias_of<BIAS>(a, cb);
    }
    if constexpr ((MODE & MODE_SWIGLU) != 0) {
        if (va) a.y[(size_t)r * a.ldy + ca] = silu_mul(da, db);
    } else if constexpr ((MODE & MODE_ROPE) != 0) {
        if (va) rope_store(a, r, ca, cb, da, db);
    } else {
        if (va) { u32 c = a.n_offset + ca; a.y[(size_t)r * a.ldy + c] = epilogue<MODE, BIAS>(a, r, c, da); }
        if (vb) { u32 c = a.n_offset + cb; a.y[(size_t)r * a.ldy + c] = epilogue<MODE, BIAS>(a, r, c, db); }
    }
}

// The COLS output columns of GEMV unit `unit` (a block, or a warp of the per-warp form):
// COLS / 2 SwiGLU pairs (gate j, up j; ldy = F), RoPE pairs (the two halves of a rotary
// pair), or plain columns; whether each exists, and its weight row (a column past N reads a
// valid row; its sums are never stored).
template <u32 MODE, int COLS> DEV void gemv_columns(const Args& a, u32 unit, u32 (&col)[COLS], bool (&valid)[COLS], const W* (&wr)[COLS]) {
    const u32 N = a.n;
#pragma unroll
    for (int q = 0; q < COLS / 2; q++) {
        const u32 p = unit * (COLS / 2) + q;
        if constexpr ((MODE & MODE_SWIGLU) != 0) {
            col[2 * q] = p;
            col[2 * q + 1] = p + a.ldy;
            valid[2 * q] = valid[2 * q + 1] = p < a.ldy;
        } else if constexpr ((MODE & MODE_ROPE) != 0) {
            rope_pair(a, p, col[2 * q], col[2 * q + 1]);
            valid[2 * q] = valid[2 * q + 1] = p < N / 2;
        } else {
            col[2 * q] = unit * COLS + 2 * q;
            col[2 * q + 1] = col[2 * q] + 1;
            valid[2 * q] = col[2 * q] < N;
            valid[2 * q + 1] = col[2 * q + 1] < N;
        }
    }
#pragma unroll
    for (int c = 0; c < COLS; c++) wr[c] = a.w + (size_t)min(col[c], N - 1) * a.k;
}

// Eight elements of K from k0 (a multiple of 8): each of the m rows' activations (normalised
// here when NORM, their squares summed) times the weights `w` of the COLS columns.
template <u32 MODE, int COLS, int ROWS>
DEV void gemv_piece(const Args& a, u32 k0, u32 m, const float (&w)[COLS][8], float (&acc)[COLS][ROWS], float (&sq)[ROWS]) {
    float g[8];
    if constexpr ((MODE & MODE_NORM) != 0) load8_f32(a.norm + k0, g);
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
        if (r < m) {
            float xv[8];
            load8_f32(a.x + (size_t)r * a.k + k0, xv);
#pragma unroll
            for (int e = 0; e < 8; e++) {
                if constexpr ((MODE & MODE_NORM) != 0) {
                    sq[r] += xv[e] * xv[e];
                    xv[e] *= g[e];
                }
#pragma unroll
                for (int c = 0; c < COLS; c++) acc[c][r] += w[c][e] * xv[e];
            }
        }
    }
}

// A: a block owns GV_COLS columns (GV_COLS / 2 pairs) and its GV_WARPS warps split K, so
// every lane keeps GV_COLS 16-byte weight loads in flight and N = 4096 already fills the GPU
// with warps. SwiGLU pairs gate j with up j (ldy = F); RoPE pairs the two halves of a
// rotary pair. ROWS: the rows the accumulators hold (1, the decode case, or GEMV_MAX_M).
// Written out, not through gemv_columns / gemv_piece as the per-warp form is: sharing them
// cost Llama-2-7B's decode step 0.8% on an H200 (4135 -> 4171 us, three rounds in one call).
template <u32 MODE, bool BIAS, int ROWS> DEV void gemv_body(const Args& a) {
    __shared__ float red[GV_WARPS][(GV_COLS + 1) * ROWS]; // the columns' sums, then the sum of squares, per row
    const u32 warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const u32 N = a.n, K = a.k;
    u32 col[GV_COLS];
    bool valid[GV_COLS];
#pragma unroll
    for (int q = 0; q < GV_COLS / 2; q++) {
        if constexpr ((MODE & MODE_SWIGLU) != 0) {
            u32 p = blockIdx.x * (GV_COLS / 2) + q;
            col[2 * q] = p;
            col[2 * q + 1] = p + a.ldy;
            valid[2 * q] = valid[2 * q + 1] = p < a.ldy;
        } else if constexpr ((MODE & MODE_ROPE) != 0) {
            u32 p = blockIdx.x * (GV_COLS / 2) + q;
            rope_pair(a, p, col[2 * q], col[2 * q + 1]);
            valid[2 * q] = valid[2 * q + 1] = p < N / 2;
        } else {
            col[2 * q] = blockIdx.x * GV_COLS + 2 * q;
            col[2 * q + 1] = col[2 * q] + 1;
            valid[2 * q] = col[2 * q] < N;
            valid[2 * q + 1] = col[2 * q + 1] < N;
        }
    }
    // Columns past N read a valid row; their sums are never stored.
    const W* wr[GV_COLS];
#pragma unroll
    for (int c = 0; c < GV_COLS; c++) wr[c] = a.w + (size_t)min(col[c], N - 1) * K;
    // Weights are never written: every block loads its first piece of each column into
    // registers before it waits for the kernel before, so the blocks that start early read
    // while that kernel finishes, where the first GV_PREFETCH_BLOCKS blocks only prefetched
    // it into L2. On an H200 (bench/results/h200.md, session 17, call 2, with the flat GEMM
    // doing the same) Llama-2-7B batch 1 went 4118 -> 4056 us per step and at 4096 keys
    // 4651 -> 4549; the flat GEMM doing it lost 10% at batch 8, so it does not. (Prefetching
    // whole rows into L2, or in every block, cost the large products 10-25%.)
    pdl_trigger();
    const u32 k_first = (warp * 32 + lane) * 8;
    Raw8<W> w_first[GV_COLS];
    if (K % 8 == 0 && k_first < K) {
#pragma unroll
        for (int c = 0; c < GV_COLS; c++) w_first[c] = load_raw8(wr[c] + k_first);
    }
    pdl_wait();
    const u32 m = ROWS == 1 ? 1u : min(row_count(a), (u32)ROWS);
    float acc[GV_COLS][ROWS], sq[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
        sq[r] = 0.0f;
#pragma unroll
        for (int c = 0; c < GV_COLS; c++) acc[c][r] = 0.0f;
    }
    if (K % 8 == 0) {
        // One piece of K: the m rows' activations times the columns' weights w.
        auto piece = [&](u32 k0, const float (&w)[GV_COLS][8]) {
            float g[8];
            if constexpr ((MODE & MODE_NORM) != 0) load8_f32(a.norm + k0, g);
#pragma unroll
            for (int r = 0; r < ROWS; r++) {
                if (r < m) {
                    float xv[8];
                    load8_f32(a.x + (size_t)r * K + k0, xv);
#pragma unroll
                    for (int e = 0; e < 8; e++) {
                        if constexpr ((MODE & MODE_NORM) != 0) {
                            sq[r] += xv[e] * xv[e];
                            xv[e] *= g[e];
                        }
#pragma unroll
                        for (int c = 0; c < GV_COLS; c++) acc[c][r] += w[c][e] * xv[e];
                    }
                }
            }
        };
        u32 k0 = k_first;
        if (k0 < K) {
            float w[GV_COLS][8];
#pragma unroll
            for (int c = 0; c < GV_COLS; c++) raw8_floats(w_first[c], w[c]);
            piece(k0, w);
            k0 += GV_WARPS * 256;
        }
#pragma unroll 2
        for (; k0 < K; k0 += GV_WARPS * 256) {
            float w[GV_COLS][8];
#pragma unroll
            for (int c = 0; c < GV_COLS; c++) load8(wr[c] + k0, w[c]);
            piece(k0, w);
        }
    } else {
        for (u32 k = warp * 32 + lane; k < K; k += GV_WARPS * 32) {
            float g = 1.0f;
            if constexpr ((MODE & MODE_NORM) != 0) g = a.norm[k];
#pragma unroll
            for (int r = 0; r < ROWS; r++) {
                if (r < m) {
                    float xv = a.x[(size_t)r * K + k];
                    sq[r] += xv * xv;
#pragma unroll
                    for (int c = 0; c < GV_COLS; c++) acc[c][r] += wf(wr[c][k]) * xv * g;
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
        if (r < m) {
#pragma unroll
            for (int c = 0; c < GV_COLS; c++) {
                float v = warp_sum(acc[c][r]);
                if (lane == 0) red[warp][c * ROWS + r] = v;
            }
            float v = warp_sum(sq[r]);
            if (lane == 0) red[warp][GV_COLS * ROWS + r] = v;
        }
    }
    __syncthreads();
    // Thread (pair q, row r) finishes its pair.
    const u32 q = threadIdx.x / ROWS, r = threadIdx.x % ROWS;
    if (q < GV_COLS / 2 && r < m) {
        float da = 0.0f, db = 0.0f, ss = 0.0f;
#pragma unroll
        for (int w = 0; w < GV_WARPS; w++) {
            da += red[w][(2 * q) * ROWS + r];
            db += red[w][(2 * q + 1) * ROWS + r];
            ss += red[w][GV_COLS * ROWS + r];
        }
        gemv_store<MODE, BIAS>(a, r, col[2 * q], col[2 * q + 1], valid[2 * q], valid[2 * q + 1], da, db, ss);
    }
}

// A for short K (K % 8 == 0): each warp owns GV_COLS columns and walks all of K itself, so
// no block-wide reduction (shared memory, __syncthreads) stands between the loads and the
// stores, and the first GW_PRELOAD 16-byte pieces per lane and column (all of K up to
// 32 x 8 x GW_PRELOAD) are loaded into registers before the wait for the kernel before: at
// SmolLM2's K = 576 a GEMV then runs as one round of loads started while the previous
// kernel finishes. Blocks of any number of warps (blockDim.x / 32).
template <u32 MODE, bool BIAS, int ROWS> DEV void gemv_warp_body(const Args& a) {
    const u32 warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const u32 unit = blockIdx.x * (blockDim.x >> 5) + warp;
    const u32 K = a.k;
    u32 col[GV_COLS];
    bool valid[GV_COLS];
    const W* wr[GV_COLS];
    gemv_columns<MODE, GV_COLS>(a, unit, col, valid, wr);
    pdl_trigger();
    // Weights are never written: loaded before the wait. (Kept as loaded, in half the
    // registers, they measured slower on an H200: 556 against 528 us per SmolLM2 step.)
    float w0[GW_PRELOAD][GV_COLS][8];
#pragma unroll
    for (int p = 0; p < GW_PRELOAD; p++) {
        const u32 k0 = (p * 32 + lane) * 8;
#pragma unroll
        for (int c = 0; c < GV_COLS; c++) {
            if (k0 < K) load8(wr[c] + k0, w0[p][c]);
            else for (int e = 0; e < 8; e++) w0[p][c][e] = 0.0f;
        }
    }
    pdl_wait();
    const u32 m = ROWS == 1 ? 1u : min(row_count(a), (u32)ROWS);
    float acc[GV_COLS][ROWS] = {}, sq[ROWS] = {};
#pragma unroll
    for (int p = 0; p < GW_PRELOAD; p++) {
        const u32 k0 = (p * 32 + lane) * 8;
        if (k0 < K) gemv_piece<MODE, GV_COLS, ROWS>(a, k0, m, w0[p], acc, sq);
    }
#pragma unroll 2
    for (u32 k0 = (GW_PRELOAD * 32 + lane) * 8; k0 < K; k0 += 256) {
        float w[GV_COLS][8];
#pragma unroll
        for (int c = 0; c < GV_COLS; c++) load8(wr[c] + k0, w[c]);
        gemv_piece<MODE, GV_COLS, ROWS>(a, k0, m, w, acc, sq);
    }
    // Every lane gets every sum; lane (pair q, row r) finishes its pair.
    const u32 q = lane / ROWS, r = lane % ROWS;
    float da = 0.0f, db = 0.0f, ss = 0.0f;
#pragma unroll
    for (int rr = 0; rr < ROWS; rr++) {
        const float s = warp_sum(sq[rr]);
        if (rr == (int)r) ss = s;
#pragma unroll
        for (int qq = 0; qq < GV_COLS / 2; qq++) {
            const float va = warp_sum(acc[2 * qq][rr]), vb = warp_sum(acc[2 * qq + 1][rr]);
            if (rr == (int)r && qq == (int)q) {
                da = va;
                db = vb;
            }
        }
    }
    if (q < GV_COLS / 2 && r < m) gemv_store<MODE, BIAS>(a, r, col[2 * q], col[2 * q + 1], valid[2 * q], valid[2 * q + 1], da, db, ss);
}

// Names: gemv[_norm][_res|_swiglu|_rope][_bias][_r1][_w] (_r1: one row; _w: a warp per GV_COLS columns).
#define GEMV(name, mode)                                                        \
    KERNEL void name(Args a) { gemv_body<mode, false, GEMV_MAX_M>(a); }         \
    KERNEL void name##_bias(Args a) { gemv_body<mode, true, GEMV_MAX_M>(a); }   \
    KERNEL void name##_r1(Args a) { gemv_body<mode, false, 1>(a); }             \
    KERNEL void name##_bias_r1(Args a) { gemv_body<mode, true, 1>(a); }        \
    KERNEL void name##_w(Args a) { gemv_warp_body<mode, false, GEMV_MAX_M>(a); } \
    KERNEL void name##_bias_w(Args a) { gemv_warp_body<mode, true, GEMV_MAX_M>(a); } \
    KERNEL void name##_r1_w(Args a) { gemv_warp_body<mode, false, 1>(a); }     \
    KERNEL void name##_bias_r1_w(Args a) { gemv_warp_body<mode, true, 1>(a); }
GEMV(gemv, 0u)
GEMV(gemv_res, MODE_RESIDUAL)
GEMV(gemv_swiglu, MODE_SWIGLU)
GEMV(gemv_rope, MODE_ROPE)
GEMV(gemv_norm, MODE_NORM)
GEMV(gemv_norm_res, MODE_NORM | MODE_RESIDUAL)
GEMV(gemv_norm_swiglu, MODE_NORM | MODE_SWIGLU)
GEMV(gemv_norm_rope, MODE_NORM | MODE_ROPE)

#if FDPP_W_F16 && FDPP_TENSOR_CORES

// 8 halves of row p from element k (zero past K); `vec`: 16-byte aligned rows.
DEV uint4 load_w8(const f16* p, u32 k, u32 K, bool vec) {
    if (vec && k + 8 <= K) return *(const uint4*)(p + k);
    u32 h[8];
#pragma unroll
    for (int e = 0; e < 8; e++) h[e] = k + e < K ? p[k + e] : 0;
    return make_uint4(h[0] | h[1] << 16, h[2] | h[3] << 16, h[4] | h[5] << 16, h[6] | h[7] << 16);
}

// 8 floats of an activation row from element k (zero past K or for a padding row).
DEV void load_x8f(const float* p, u32 k, u32 K, bool vec, bool valid, float v[8]) {
    if (!valid) {
#pragma unroll
        for (int e = 0; e < 8; e++) v[e] = 0.0f;
    } else if (vec && k + 8 <= K) {
        load8_f32(p + k, v);
    } else {
        load8_tail(p + k, k < K ? (int)(K - k) : 0, v);
    }
}
DEV uint4 pack8(const float v[8]) {
    return make_uint4(pack_h2(v[0], v[1]), pack_h2(v[2], v[3]), pack_h2(v[4], v[5]), pack_h2(v[6], v[7]));
}
// The same as halves.
DEV uint4 load_x8(const float* p, u32 k, u32 K, bool vec, bool valid) {
    float v[8];
    load_x8f(p, k, K, vec, valid, v);
    return pack8(v);
}

// The two output columns of pair p of a SwiGLU (gate p, up p) or RoPE (a rotary pair, then
// V's columns two by two) epilogue, and whether the pair exists.
template <u32 MODE> DEV bool pair_columns(const Args& a, u32 p, u32& ca, u32& cb) {
    if constexpr ((MODE & MODE_SWIGLU) != 0) {
        ca = p;
        cb = p + a.ldy;
        return p < a.ldy;
    } else {
        rope_pair(a, p, ca, cb);
        return p < a.n / 2;
    }
}

// One 32-wide slab of K for every token tile: v[i] are this lane's 8 elements of token
// 8i + g (normalised here when NORM: squares summed into four partials, so the chain of
// dependent adds stays short, then scaled by the norm weight).
template <bool NORM, int MT, int NT>
DEV void flat_slab(float (&c)[NT][MT][4], float (&sq)[MT][4], const uint4 (&A0)[NT], const uint4 (&A1)[NT], float (&v)[MT][8],
                   const float (&gamma)[8]) {
#pragma unroll
    for (int i = 0; i < MT; i++) {
        if constexpr (NORM) {
#pragma unroll
            for (int e = 0; e < 8; e++) {
                sq[i][e & 3] += v[i][e] * v[i][e];
                v[i][e] *= gamma[e];
            }
        }
        const uint4 X = pack8(v[i]);
#pragma unroll
        for (int j = 0; j < NT; j++) {
            mma_16x8x16(c[j][i], A0[j].x, A1[j].x, A0[j].y, A1[j].y, X.x, X.y);
            mma_16x8x16(c[j][i], A0[j].z, A1[j].z, A0[j].w, A1[j].w, X.z, X.w);
        }
    }
}

// B: the flat GEMM on tensor cores, tile (8 MT tokens) x (16 NT columns), WARPS warps
// splitting K into 32-wide slabs. Each m16n8k16 product takes 16 weight rows as its A
// operand: rows g and g + 8 of a 16-column group are a pair (plain columns c and c + 8, a
// SwiGLU gate/up pair, or a RoPE pair), so every epilogue of the GEMV has its two inputs in
// one thread after the reduction. A weight fragment, once loaded, serves all MT token
// tiles. Grid: (token tiles, column groups), token tiles fastest, so blocks that read the
// same weights run side by side and all but the first find them in L2.
template <u32 MODE, bool BIAS, int MT, int NT, int WARPS> DEV void flat_gemm_body(const Args& a) {
    constexpr bool NORM = (MODE & MODE_NORM) != 0, PAIRS = (MODE & (MODE_SWIGLU | MODE_ROPE)) != 0;
    // Slabs whose loads are all issued before the first product needs one (registers: 8
    // per column tile and 8 per token tile each).
    constexpr int BATCH = 64 / (8 * MT + 8 * NT) > 0 ? 64 / (8 * MT + 8 * NT) : 1;
    __shared__ float red[WARPS][NT * 16][MT * 8];
    __shared__ float red_sq[NORM ? WARPS : 1][MT * 8];
    const u32 warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const u32 N = a.n, K = a.k;
    const u32 m0 = blockIdx.x * MT * 8;
    // Pair j of this block: weight rows wa[j], wb[j] (clamped: a row past N is read, never stored).
    const W* wa[NT];
    const W* wb[NT];
#pragma unroll
    for (int j = 0; j < NT; j++) {
        const u32 p = (blockIdx.y * NT + j) * 8 + g;
        u32 ca, cb;
        if constexpr (PAIRS) {
            pair_columns<MODE>(a, p, ca, cb);
        } else {
            ca = (blockIdx.y * NT + j) * 16 + g;
            cb = ca + 8;
        }
        wa[j] = a.w + (size_t)min(ca, N - 1) * K;
        wb[j] = a.w + (size_t)min(cb, N - 1) * K;
    }
    // At one row on the long-K tiling (O and down of a one-sequence decode step), each
    // block's first batch of weights into registers before the wait, as the GEMV does; else
    // the first blocks pull their first weights into L2. On an H200 (session 18) this took
    // 7B's batch-1 step from 4107.9 to 4071.2 us and SmolLM2's from 502.9 to 498.3. With
    // every tiling and every M it lost 10% at batch 8 (session 17): the t8x16x8 kernels
    // went from 72 to 84 registers, three blocks per SM to two.
    constexpr bool PRELOAD = WARPS == 16;
    pdl_trigger();
    const u32 M = row_count(a);
    const u32 k_first = warp * 32 + 8 * t;
    uint4 P0[PRELOAD ? BATCH : 1][NT], P1[PRELOAD ? BATCH : 1][NT];
    const bool pre = PRELOAD && M == 1 && K % 8 == 0 && warp * 32 + (BATCH - 1) * WARPS * 32 + 32 <= K;
    if (pre) {
#pragma unroll
        for (int u = 0; u < (PRELOAD ? BATCH : 1); u++) {
#pragma unroll
            for (int j = 0; j < NT; j++) {
                P0[u][j] = *(const uint4*)(wa[j] + k_first + u * WARPS * 32);
                P1[u][j] = *(const uint4*)(wb[j] + k_first + u * WARPS * 32);
            }
        }
    } else if (blockIdx.y * gridDim.x + blockIdx.x < GV_PREFETCH_BLOCKS && k_first < K) {
#pragma unroll
        for (int j = 0; j < NT; j++) {
            prefetch_l2(wa[j] + k_first);
            prefetch_l2(wb[j] + k_first);
        }
    }
    pdl_wait();
    const bool vec = K % 8 == 0;
    // Token tile i's row for this lane; a padding token reads row 0 (its sums are never
    // stored, and no other token's sums depend on it).
    const float* xr[MT];
    bool tok_ok[MT];
#pragma unroll
    for (int i = 0; i < MT; i++) {
        tok_ok[i] = m0 + i * 8 + g < M;
        xr[i] = a.x + (size_t)(tok_ok[i] ? m0 + i * 8 + g : 0) * K;
    }
    float c[NT][MT][4], sq[MT][4];
#pragma unroll
    for (int i = 0; i < MT; i++) {
        sq[i][0] = sq[i][1] = sq[i][2] = sq[i][3] = 0.0f;
#pragma unroll
        for (int j = 0; j < NT; j++) c[j][i][0] = c[j][i][1] = c[j][i][2] = c[j][i][3] = 0.0f;
    }
    // Whole batches of full slabs of 16-byte aligned rows: no bounds check and no branch
    // between the loads, so a batch's loads are all in flight before the first is used.
    // (With a check per load, every x slab was waited for before the next weights were
    // even requested.)
    u32 s0 = warp * 32;
    if (vec) {
        // One batch from slab s0, its weights A0, A1 already requested.
        auto batch = [&](u32 s0, const uint4 (&A0)[BATCH][NT], const uint4 (&A1)[BATCH][NT]) {
            float X[BATCH][MT][8], gamma[BATCH][8];
#pragma unroll
            for (int u = 0; u < BATCH; u++) {
                const u32 k = s0 + u * WARPS * 32 + 8 * t;
                if constexpr (NORM) load8_f32(a.norm + k, gamma[u]);
#pragma unroll
                for (int i = 0; i < MT; i++) load8_f32(xr[i] + k, X[u][i]);
            }
#pragma unroll
            for (int u = 0; u < BATCH; u++) flat_slab<NORM, MT, NT>(c, sq, A0[u], A1[u], X[u], gamma[u]);
        };
        if constexpr (PRELOAD) {
            if (pre) {
                batch(s0, P0, P1);
                s0 += WARPS * 32 * BATCH;
            }
        }
        for (; s0 + (BATCH - 1) * WARPS * 32 + 32 <= K; s0 += WARPS * 32 * BATCH) {
            uint4 A0[BATCH][NT], A1[BATCH][NT];
#pragma unroll
            for (int u = 0; u < BATCH; u++) {
                const u32 k = s0 + u * WARPS * 32 + 8 * t;
#pragma unroll
                for (int j = 0; j < NT; j++) {
                    A0[u][j] = *(const uint4*)(wa[j] + k);
                    A1[u][j] = *(const uint4*)(wb[j] + k);
                }
            }
            batch(s0, A0, A1);
        }
    }
    // The rest, one slab at a time, bounds-checked.
    for (; s0 < K; s0 += WARPS * 32) {
        const u32 k = s0 + 8 * t;
        uint4 A0[NT], A1[NT];
#pragma unroll
        for (int j = 0; j < NT; j++) {
            A0[j] = load_w8(wa[j], k, K, vec);
            A1[j] = load_w8(wb[j], k, K, vec);
        }
        float X[MT][8], gamma[8];
        if constexpr (NORM) load_x8f(a.norm, k, K, vec, true, gamma);
#pragma unroll
        for (int i = 0; i < MT; i++) load_x8f(xr[i], k, K, vec, tok_ok[i], X[i]);
        flat_slab<NORM, MT, NT>(c, sq, A0, A1, X, gamma);
    }
    // c[j][i]: (row g of column tile j, tokens 8i + 2t, + 1), then row g + 8 for the same tokens.
#pragma unroll
    for (int j = 0; j < NT; j++) {
#pragma unroll
        for (int i = 0; i < MT; i++) {
            red[warp][j * 16 + g][i * 8 + 2 * t] = c[j][i][0];
            red[warp][j * 16 + g][i * 8 + 2 * t + 1] = c[j][i][1];
            red[warp][j * 16 + g + 8][i * 8 + 2 * t] = c[j][i][2];
            red[warp][j * 16 + g + 8][i * 8 + 2 * t + 1] = c[j][i][3];
        }
    }
    if constexpr (NORM) {
        // Token 8i + g's sum of squares: its four lanes, then (below) the warps.
#pragma unroll
        for (int i = 0; i < MT; i++) {
            float v = xor_sum((sq[i][0] + sq[i][1]) + (sq[i][2] + sq[i][3]), 1, 4);
            if (t == 0) red_sq[warp][i * 8 + g] = v;
        }
    }
    __syncthreads();
    // Thread (pair q, token r) finishes its pair.
    for (u32 e = threadIdx.x; e < NT * 8 * MT * 8; e += WARPS * 32) {
        const u32 q = e / (MT * 8), r = e % (MT * 8), j = q / 8, gq = q % 8;
        if (m0 + r >= M) continue;
        float da = 0.0f, db = 0.0f, ss = 0.0f;
#pragma unroll
        for (int w = 0; w < WARPS; w++) {
            da += red[w][j * 16 + gq][r];
            db += red[w][j * 16 + gq + 8][r];
            if constexpr (NORM) ss += red_sq[w][r];
        }
        const u32 p = (blockIdx.y * NT + j) * 8 + gq;
        u32 ca, cb;
        bool va, vb;
        if constexpr (PAIRS) {
            va = vb = pair_columns<MODE>(a, p, ca, cb);
        } else {
            ca = (blockIdx.y * NT + j) * 16 + gq;
            cb = ca + 8;
            va = ca < N;
            vb = cb < N;
        }
        gemv_store<MODE, BIAS>(a, m0 + r, ca, cb, va, vb, da, db, ss);
    }
}

// Names: flat_gemm[_norm][_res|_swiglu|_rope][_bias]_t<tokens>x<columns>x<warps>, for each
// tiling of FLAT_TILINGS (written by the loader from `caps::cuda::FLAT_TILINGS`).
#define FLAT_GEMM(name, mode, M, N, W)                                                                      \
    KERNEL void name##_t##M##x##N##x##W(Args a) { flat_gemm_body<mode, false, M / 8, N / 16, W>(a); }      \
    KERNEL void name##_bias_t##M##x##N##x##W(Args a) { flat_gemm_body<mode, true, M / 8, N / 16, W>(a); }
#define FLAT_GEMM_TILING(M, N, W)                                         \
    FLAT_GEMM(flat_gemm, 0u, M, N, W)                                     \
    FLAT_GEMM(flat_gemm_res, MODE_RESIDUAL, M, N, W)                      \
    FLAT_GEMM(flat_gemm_swiglu, MODE_SWIGLU, M, N, W)                     \
    FLAT_GEMM(flat_gemm_rope, MODE_ROPE, M, N, W)                         \
    FLAT_GEMM(flat_gemm_norm, MODE_NORM, M, N, W)                         \
    FLAT_GEMM(flat_gemm_norm_res, MODE_NORM | MODE_RESIDUAL, M, N, W)     \
    FLAT_GEMM(flat_gemm_norm_swiglu, MODE_NORM | MODE_SWIGLU, M, N, W)    \
    FLAT_GEMM(flat_gemm_norm_rope, MODE_NORM | MODE_ROPE, M, N, W)
FLAT_TILINGS(FLAT_GEMM_TILING)

// C: grid (N / 128, M / 64); warp w owns columns n0 + 16w .. + 15 for all 64 tokens.
template <bool RES, bool BIAS> DEV void gemm_mma_body(const Args& a) {
    __shared__ uint4 xs[64][4]; // 64 tokens x 32 halves of the current K-slab
    pdl_begin();
    const u32 warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const u32 N = a.n, K = a.k, M = row_count(a);
    const u32 n0 = blockIdx.x * 128 + warp * 16, m0 = blockIdx.y * 64;
    const f16* w0 = a.w + (size_t)min(n0 + g, N - 1) * K;
    const f16* w1 = a.w + (size_t)min(n0 + g + 8, N - 1) * K;
    const bool vec = K % 8 == 0;
    // The slab part this thread stages: token threadIdx / 4, elements 8 * (threadIdx % 4) ..
    const u32 st = threadIdx.x >> 2, sp = threadIdx.x & 3;
    const bool st_ok = m0 + st < M;
    const float* xr = a.x + (size_t)(st_ok ? m0 + st : 0) * K;
    float c[8][4];
#pragma unroll
    for (int j = 0; j < 8; j++) c[j][0] = c[j][1] = c[j][2] = c[j][3] = 0.0f;
    for (u32 s = 0; s < K; s += 32) {
        xs[st][sp] = load_x8(xr, s + 8 * sp, K, vec, st_ok);
        uint4 A0 = load_w8(w0, s + 8 * t, K, vec), A1 = load_w8(w1, s + 8 * t, K, vec);
        __syncthreads();
#pragma unroll
        for (int j = 0; j < 8; j++) {
            uint4 B = xs[j * 8 + g][t];
            mma_16x8x16(c[j], A0.x, A1.x, A0.y, A1.y, B.x, B.y);
            mma_16x8x16(c[j], A0.z, A1.z, A0.w, A1.w, B.z, B.w);
        }
        __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < 8; j++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            u32 col = n0 + g + (e >= 2 ? 8 : 0), tok = m0 + j * 8 + 2 * t + (e & 1);
            if (col < N && tok < M) {
                u32 cc = a.n_offset + col;
                a.y[(size_t)tok * a.ldy + cc] = epilogue<RES ? MODE_RESIDUAL : 0u, BIAS>(a, tok, cc, c[j][e]);
            }
        }
    }
}

#define TENSOR_CORE_KERNELS(name, body)                                      \
    KERNEL void name(Args a) { body<false, false>(a); }                      \
    KERNEL void name##_res(Args a) { body<true, false>(a); }                 \
    KERNEL void name##_bias(Args a) { body<false, true>(a); }                \
    KERNEL void name##_res_bias(Args a) { body<true, true>(a); }
TENSOR_CORE_KERNELS(gemm_mma, gemm_mma_body)

#else

// B and C of f32 weights, or of any weights where the tensor-core kernels are left out
// (HIP), on CUDA cores: 64 x 64 output tiles, 4 x 4 per thread, K in steps of 16 through
// shared memory.
template <bool RES, bool BIAS> DEV void gemm_tiled_body(const Args& a) {
    __shared__ float sa[16][64 + 4];
    __shared__ float sb[16][64 + 4];
    pdl_begin();
    const u32 N = a.n, K = a.k, M = row_count(a), t = threadIdx.x;
    const u32 n0 = blockIdx.x * 64, m0 = blockIdx.y * 64, tx = t % 16, ty = t / 16;
    float c[4][4] = {};
    for (u32 k0 = 0; k0 < K; k0 += 16) {
        for (u32 e = t; e < 64 * 16; e += 256) {
            u32 r = e / 16, kk = e % 16;
            sa[kk][r] = (m0 + r < M && k0 + kk < K) ? a.x[(size_t)(m0 + r) * K + k0 + kk] : 0.0f;
            sb[kk][r] = (n0 + r < N && k0 + kk < K) ? wf(a.w[(size_t)(n0 + r) * K + k0 + kk]) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < 16; kk++) {
            float xa[4], wb[4];
#pragma unroll
            for (int i = 0; i < 4; i++) { xa[i] = sa[kk][ty * 4 + i]; wb[i] = sb[kk][tx * 4 + i]; }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) c[i][j] += xa[i] * wb[j];
        }
        __syncthreads();
    }
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 4; j++) {
            u32 row = m0 + ty * 4 + i, col = n0 + tx * 4 + j;
            if (row < M && col < N) {
                u32 cc = a.n_offset + col;
                a.y[(size_t)row * a.ldy + cc] = epilogue<RES ? MODE_RESIDUAL : 0u, BIAS>(a, row, cc, c[i][j]);
            }
        }
    }
}

KERNEL void gemm_tiled(Args a) { gemm_tiled_body<false, false>(a); }
KERNEL void gemm_tiled_res(Args a) { gemm_tiled_body<true, false>(a); }
KERNEL void gemm_tiled_bias(Args a) { gemm_tiled_body<false, true>(a); }
KERNEL void gemm_tiled_res_bias(Args a) { gemm_tiled_body<true, true>(a); }

#endif

// C through cuBLAS (f16 builds): the activations as f16 for cublasGemmEx, and the bias and
// residual epilogue after it. x: a.n elements -> y (as f16).
KERNEL void to_f16(Args a) {
    pdl_begin();
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < a.n) ((f16*)a.y)[i] = f2h(a.x[i]);
}

// y[r, n_offset + j] += bias[n_offset + j] (a.mode & 2) + x2[r, n_offset + j] (a.mode & 1).
KERNEL void linear_epilogue(Args a) {
    pdl_begin();
    u32 r = blockIdx.y, j = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= row_count(a) || j >= a.n) return;
    size_t o = (size_t)r * a.ldy + a.n_offset + j;
    float v = a.y[o];
    if (a.mode & 2u) v += a.bias[a.n_offset + j];
    if (a.mode & 1u) v += a.x2[o];
    a.y[o] = v;
}
