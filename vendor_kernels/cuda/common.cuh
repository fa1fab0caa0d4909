// Shared by every CUDA kernel family. The loader (runtime/backend/cuda/compile.rs) puts
// before it the constants shared with Rust (`caps::cuda`, as #defines) and the storage
// types: FDPP_W_F16 (weights in f16, else f32) and FDPP_KV_F16 (KV cache in f16, else f32).
//
// Portability: everything vendor-specific sits in this file (half conversions, the
// tensor-core product, warp shuffles and votes, programmatic dependent launch), so ROCm's
// hipcc compiles the same kernel files (FDPP_HIP, with hip_runtime.h included first)
// against its own version of these few functions. There the tensor-core kernels are left
// out (FDPP_TENSOR_CORES 0): their SIMT forms serve. A warp is 32 lanes everywhere: on a
// 64-lane wavefront each half is a warp, and every shuffle here stays inside 32 lanes.
// NVRTC compiles it without any CUDA header: the types below are all the kernels use.

#if defined(__HIP__)
#define FDPP_HIP 1
#else
#define FDPP_HIP 0
#endif
// The loader may leave the tensor-core kernels out on CUDA too (runtime/backend/native/
// sources.rs), which runs on an NVIDIA GPU exactly the kernels HIP builds.
#ifndef FDPP_TENSOR_CORES
#define FDPP_TENSOR_CORES (!FDPP_HIP)
#endif

typedef unsigned int u32;
typedef unsigned short f16; // raw IEEE half bits

#define KERNEL extern "C" __global__
#define DEV __device__ __forceinline__

#if FDPP_HIP
DEV float h2f(f16 h) { return (float)__builtin_bit_cast(_Float16, h); }
DEV f16 f2h(float f) { return __builtin_bit_cast(f16, (_Float16)f); }
DEV u32 pack_h2(float lo, float hi) { return (u32)f2h(lo) | (u32)f2h(hi) << 16; }
#else
DEV float h2f(f16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
DEV f16 f2h(float f) {
    f16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
// Two floats as a half2 register: `lo` in bits 0-15.
DEV u32 pack_h2(float lo, float hi) {
    u32 r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
#endif
DEV float2 unpack_h2(u32 v) {
    return make_float2(h2f((f16)(v & 0xffffu)), h2f((f16)(v >> 16)));
}

#if FDPP_TENSOR_CORES
// D (16 x 8, f32) += A (16 x 16, f16, row-major fragments) * B (16 x 8, f16, column-major).
DEV void mma_16x8x16(float c[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Shared-memory staging for the tensor-core kernels (sm_80 on): 16-byte asynchronous
// copies (zero-filled where `valid` is false, so rows past the data never reach the
// products as NaN), and ldmatrix, which hands each lane its fragment of four 8 x 8 f16
// matrices whose rows the lanes address (lanes 8j..8j+7: the rows of matrix j).
DEV u32 smem_u32(const void* p) { return (u32)__cvta_generic_to_shared(p); }
DEV void cp_async16(void* dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_u32(dst)), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
DEV void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
DEV void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;" ::: "memory"); }
DEV void ldmatrix_x4(u32 r[4], const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(row)));
}
// The same with each matrix transposed: lane l gets rows 2(l%4), 2(l%4)+1 of column l/4.
DEV void ldmatrix_x4_trans(u32 r[4], const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(row)));
}
#endif

// Programmatic dependent launch (sm_90 on): the executor launches every kernel so that it
// may start while the kernel before it is still finishing. Each kernel therefore lets the
// next one start early (pdl_trigger) and waits for the one before it to complete and flush
// (pdl_wait) before it touches any memory that kernel reads or writes. Work that needs no
// such memory (prefetching weights into L2) goes before the wait: that is the overlap.
#if __CUDA_ARCH__ >= 900
DEV void pdl_trigger() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }
DEV void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
#else
DEV void pdl_trigger() {}
DEV void pdl_wait() {}
#endif
// The start of every kernel whose reads all depend on the kernel before it.
DEV void pdl_begin() {
    pdl_trigger();
    pdl_wait();
}
#if FDPP_HIP
DEV void prefetch_l2(const void*) {}
// Lane ^ o (o < 32) of this lane's 32-lane half of the wavefront; whether any lane of the
// wavefront (both warps on a 64-lane one) holds p.
template <typename T> DEV T shfl_xor(T v, int o) { return __shfl_xor(v, o); }
DEV bool warp_any(bool p) { return __any(p); }
#else
DEV void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }
template <typename T> DEV T shfl_xor(T v, int o) { return __shfl_xor_sync(0xffffffffu, v, o); }
DEV bool warp_any(bool p) { return __any_sync(0xffffffffu, p); }
#endif

DEV float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += shfl_xor(v, o);
    return v;
}
DEV float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, shfl_xor(v, o));
    return v;
}
// Sum over the `lanes` (a power of two) lanes of an aligned group.
DEV float group_sum(float v, int lanes) {
    for (int o = lanes / 2; o > 0; o >>= 1) v += shfl_xor(v, o);
    return v;
}
DEV float xor_sum(float v, int from, int to) {
    for (int o = from; o < to; o <<= 1) v += shfl_xor(v, o);
    return v;
}

#if FDPP_W_F16
typedef f16 W;
DEV float wf(W v) { return h2f(v); }
#else
typedef float W;
DEV float wf(W v) { return v; }
#endif

#if FDPP_KV_F16
typedef f16 KV;
DEV float kvf(KV v) { return h2f(v); }
DEV KV to_kv(float v) { return f2h(v); }
#else
typedef float KV;
DEV float kvf(KV v) { return v; }
DEV KV to_kv(float v) { return v; }
#endif

// The eight halves of a 16-byte register quad as floats.
DEV void halves8(uint4 v, float out[8]) {
    float2 a = unpack_h2(v.x), b = unpack_h2(v.y), c = unpack_h2(v.z), d = unpack_h2(v.w);
    out[0] = a.x; out[1] = a.y; out[2] = b.x; out[3] = b.y;
    out[4] = c.x; out[5] = c.y; out[6] = d.x; out[7] = d.y;
}
// Eight consecutive elements from a 16-byte aligned address (f16) or two 16-byte loads (f32).
DEV void load8_f16(const f16* p, float out[8]) { halves8(*(const uint4*)p, out); }
DEV void load8_f32(const float* p, float out[8]) {
    float4 a = *(const float4*)p, b = *(const float4*)(p + 4);
    out[0] = a.x; out[1] = a.y; out[2] = a.z; out[3] = a.w;
    out[4] = b.x; out[5] = b.y; out[6] = b.z; out[7] = b.w;
}
DEV void load8(const f16* p, float out[8]) { load8_f16(p, out); }
DEV void load8(const float* p, float out[8]) { load8_f32(p, out); }
// The same eight kept as loaded (f16: one 16-byte register quad), converted when used: a
// thread keeps several in flight in few registers.
template <typename T> struct Raw8;
template <> struct Raw8<f16> { uint4 v; };
template <> struct Raw8<float> { float f[8]; };
DEV Raw8<f16> load_raw8(const f16* p) { return {*(const uint4*)p}; }
DEV Raw8<float> load_raw8(const float* p) {
    Raw8<float> r;
    load8_f32(p, r.f);
    return r;
}
DEV void raw8_floats(Raw8<f16> r, float out[8]) { halves8(r.v, out); }
DEV void raw8_floats(Raw8<float> r, float out[8]) {
    for (int e = 0; e < 8; e++) out[e] = r.f[e];
}
// The same, element by element, for rows that are not 16-byte aligned; past `n`: zero.
template <typename T> DEV void load8_tail(const T* p, int n, float out[8]) {
#pragma unroll
    for (int e = 0; e < 8; e++) out[e] = 0.0f;
    for (int e = 0; e < 8 && e < n; e++) {
        if constexpr (sizeof(T) == 2) out[e] = h2f(p[e]); else out[e] = (float)p[e];
    }
}

// The step's scalars, at the start of the step buffer; then tokens, positions, sequences
// and output rows, each `max_m` long. Kernels read them from device memory, so a captured
// CUDA graph replays unchanged when only they change. `picked`: the tokens are the ids the
// last step picked (step_begin copies them in).
struct Step {
    u32 m, n_out, max_m, attn_chunks, attn_chunk_keys, picked, pad0, pad1;
};
static_assert(sizeof(Step) == 4 * STEP_WORDS, "struct Step differs from kernels::STEP_WORDS");

// Everything a launch binds: one struct by value, `Args` (pointers, then `LaunchScalars`)
// in kernels.rs, field for field; the static_assert below checks its size against Rust's.
struct Args {
    const u32* step;
    const float* x;
    const float* x2;
    const W* w;
    float* y;
    KV* kc;
    KV* vc;
    float* scratch;   // split-KV partial sums
    u32* flags;       // [0]: rows recomputed, [1..1+max_out]: picked ids, then attention flags
    const float* bias;
    const float* rope; // [position][pair] of (cos, sin)
    const float* norm; // the RMSNorm weight of a norm prologue
    u32 rows_out, n, k, n_offset, ldy, heads, kv_heads, head_dim, flag_offset, mode, max_ctx;
    float eps, scale, phi, lo, hi;
};
static_assert(sizeof(Args) == ARGS_BYTES, "struct Args differs in size from kernels::Args");

DEV const Step& step_of(const Args& a) { return *(const Step*)a.step; }
DEV u32 row_count(const Args& a) { return a.rows_out ? step_of(a).n_out : step_of(a).m; }
DEV u32 token_at(const Args& a, u32 i) { return a.step[STEP_WORDS + i]; }
DEV u32 position_at(const Args& a, u32 i) { return a.step[STEP_WORDS + step_of(a).max_m + i]; }
DEV u32 seq_at(const Args& a, u32 i) { return a.step[STEP_WORDS + 2 * step_of(a).max_m + i]; }
DEV u32 out_row_at(const Args& a, u32 r) { return a.step[STEP_WORDS + 3 * step_of(a).max_m + r]; }
// First element of (sequence, position)'s row in a layer's KV cache.
DEV size_t kv_slot(const Args& a, u32 i, u32 pos) {
    return ((size_t)seq_at(a, i) * a.max_ctx + pos) * (size_t)(a.kv_heads * a.head_dim);
}
DEV float silu_mul(float g, float u) { return g / (1.0f + expf(-g)) * u; }
