//! The CUDA linear and attention kernels against f64 references on random inputs over grids
//! of shapes, with f32 and f16 weights (whole lowered steps, fused and unfused, are compared
//! with the CPU oracle in tests/cuda_model.rs). Without an NVIDIA driver they skip with the
//! reason printed (and fail under FDPP_REQUIRE_CUDA=1).

use half::f16;

use super::*;
use crate::backend::WeightPrecision;
use crate::backend::native::executor::{ARGMAX_BLOCKS, ARGMAX_WORDS, argmax_offset};
use crate::backend::native::kernels::{self, STEP_WORDS, step_words};
use crate::compare::rel_error;

use crate::lower::kernel::{Epilogue, HeadDims, Params, Prologue, UnifiedMax, Variant};
use crate::lower::memory::BufferId;
use crate::lower::{Io, Launch};
use crate::sampling::Rng;

struct Rig {
    stream: Arc<CudaStream>,
    kernels: Kernels,
    f16: bool,
    tensor_cores: bool,
    caps: BackendCaps,
}

impl Rig {
    fn new(precision: WeightPrecision) -> Option<Rig> {
        let dev = CudaDevice::open(&CudaOptions { ordinal: 0, precision, ..Default::default() })
            .map_err(crate::testing::skip_unavailable)
            .ok()?;
        let f16 = dev.caps.weight_dtype == DType::F16;
        let kernels = Kernels::load(&dev.ctx, f16, dev.caps.cooperative_matrix, dev.arch, dev.driver).unwrap();
        Some(Rig { stream: dev.stream, kernels, f16, tensor_cores: dev.caps.cooperative_matrix, caps: dev.caps })
    }

    fn f32s(&self, v: &[f32]) -> CudaSlice<f32> {
        self.stream.clone_htod(v).unwrap()
    }

    /// Values in the weight (or KV) storage type, and the values as stored.
    fn stored(&self, v: &[f32]) -> (CudaSlice<u8>, Vec<f32>) {
        if self.f16 {
            let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
            (self.stream.clone_htod(bytemuck::cast_slice::<f16, u8>(&h)).unwrap(), h.iter().map(|x| x.to_f32()).collect())
        } else {
            (self.stream.clone_htod(bytemuck::cast_slice::<f32, u8>(v)).unwrap(), v.to_vec())
        }
    }

    fn step(&self, m: usize, n_out: usize, split: Option<(usize, usize)>, positions: &[usize], seqs: &[usize]) -> CudaSlice<u32> {
        let max_m = m.max(1);
        let mut w = step_words(m, n_out, max_m, split);
        for i in 0..m {
            w[STEP_WORDS + max_m + i] = positions.get(i).copied().unwrap_or(0) as u32;
            w[STEP_WORDS + 2 * max_m + i] = seqs.get(i).copied().unwrap_or(0) as u32;
        }
        self.stream.clone_htod(&w).unwrap()
    }

    fn run(&self, grids: &[Grid], args: &Args) {
        for g in grids {
            // SAFETY: every pointer in `args` is a live allocation of this test, sized for
            // the launch's shape.
            unsafe { launch(&self.kernels, &self.stream, g, args) }.unwrap();
        }
        self.stream.synchronize().unwrap();
    }

    fn read<T: cudarc::driver::DeviceRepr + Default + Clone>(&self, s: &CudaSlice<T>) -> Vec<T> {
        self.stream.clone_dtoh(s).unwrap()
    }
}

fn random(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| (rng.next_f32() * 2.0 - 1.0) * scale).collect()
}

fn io() -> Io {
    let b: BufferId = 0;
    Io { x: Some(b), x2: None, weight: None, norm_weight: None, bias: None, y: b, kv: None }
}

const M_GRID: [usize; 11] = [1, 2, 3, 7, 8, 9, 16, 33, 64, 65, 200];

/// The GEMV in every form its kernels take at K: the block form, and the per-warp form where K allows.
fn gemv_forms(lin: &crate::lower::caps::LinearKernels, k: usize) -> Vec<Variant> {
    let mut out = vec![Variant::Gemv { split_k: false, per_warp: false }];
    if lin.gemv_per_warp(k) {
        out.push(Variant::Gemv { split_k: false, per_warp: true });
    }
    out
}

fn check_linear(precision: WeightPrecision) {
    let Some(rig) = Rig::new(precision) else { return };
    let s = &rig.stream;
    let lin = rig.caps.linear.clone();
    // f16: x is rounded to f16 for the tensor cores as well.
    let tol = if rig.f16 { 2e-2 } else { 1e-5 };
    let mut rng = Rng::new(1);
    // Unaligned K (19, 33, 100), long K, a chunk written at an offset into wider rows, and a
    // wide N that is not a multiple of any tile.
    for &(n, k, n_offset, ldy) in &[
        (37usize, 19usize, 0usize, 37usize),
        (70, 33, 0, 70),
        (129, 100, 0, 129),
        (21, 1100, 0, 21),
        (96, 256, 5, 110),
        (4100, 64, 0, 4100),
        (40, cuda::GW_WARP_MAX_K, 0, 40),
        (40, cuda::GW_WARP_MAX_K + 8, 0, 40),
    ] {
        let w = random(&mut rng, n * k, 1.0);
        let (wbuf, w_stored) = rig.stored(&w);
        let bias = random(&mut rng, n_offset + n, 1.0);
        let bias_buf = rig.f32s(&bias);
        for &m in &M_GRID {
            let x = random(&mut rng, m * k, 1.0);
            let res = random(&mut rng, m * ldy, 1.0);
            let (xbuf, rbuf) = (rig.f32s(&x), rig.f32s(&res));
            let step = rig.step(m, m, None, &[], &[]);
            let mut variants: Vec<Variant> = lin.flat_tilings.iter().map(|&tiling| Variant::FlatGemm { tiling }).collect();
            variants.push(Variant::Gemm { tile: lin.gemm_tile });
            if m <= lin.gemv_max_m {
                variants.extend(gemv_forms(&lin, k));
            }
            for variant in variants {
                for (with_bias, residual) in [(false, false), (true, true), (true, false)] {
                    let epilogue = if residual { Epilogue::Residual } else { Epilogue::None };
                    let params = Params::Linear { n, k, n_offset, ldy, bias: with_bias, prologue: None, epilogue };
                    let t = Template { node: 0, out_rows: false, params, io: io() };
                    let ybuf = rig.f32s(&vec![f32::NAN; m * ldy]);
                    let args = Args {
                        step: ptr(&step, s),
                        x: ptr(&xbuf, s),
                        x2: ptr(&rbuf, s),
                        w: ptr(&wbuf, s),
                        y: ptr(&ybuf, s),
                        bias: ptr(&bias_buf, s),
                        ..Args::of(&t, 0, |_| 0)
                    };
                    let launch = Launch { template: 0, variant, rows: m };
                    rig.run(&kernels::grids(&launch, &t, m, rig.tensor_cores, 0).unwrap(), &args);
                    let y = rig.read(&ybuf);
                    let (mut got, mut want) = (vec![], vec![]);
                    for r in 0..m {
                        for c in 0..ldy {
                            let v = y[r * ldy + c];
                            if c < n_offset || c >= n_offset + n {
                                assert!(v.is_nan(), "{variant} wrote column {c} outside its chunk");
                                continue;
                            }
                            let j = c - n_offset;
                            let mut d: f64 = (0..k).map(|p| x[r * k + p] as f64 * w_stored[j * k + p] as f64).sum();
                            if with_bias {
                                d += bias[c] as f64;
                            }
                            if residual {
                                d += res[r * ldy + c] as f64;
                            }
                            got.push(v);
                            want.push(d);
                        }
                    }
                    let err = rel_error(&got, &want, "linear");
                    assert!(err < tol, "{variant} n {n} k {k} m {m} bias {with_bias} residual {residual}: relative error {err}");
                }
            }
        }
    }
}

#[test]
fn linear_kernels_match_the_reference_f32() {
    check_linear(WeightPrecision::F32);
}

#[test]
fn linear_kernels_match_the_reference_f16() {
    check_linear(WeightPrecision::F16);
}

/// The fused linear kernels (RMSNorm prologue; SwiGLU, or RoPE with the KV-cache write, as
/// epilogue) of the GEMV and of every flat GEMM tiling that has them, against f64.
fn check_fused_linear(precision: WeightPrecision) {
    let Some(rig) = Rig::new(precision) else { return };
    let s = &rig.stream;
    let lin = rig.caps.linear.clone();
    let tol = if rig.f16 { 2e-2 } else { 1e-5 };
    let mut rng = Rng::new(3);
    let dims = HeadDims { heads: 4, kv_heads: 2, head_dim: 16 };
    let (q_dim, kv_dim, half) = (dims.q_dim(), dims.kv_dim(), dims.head_dim / 2);
    let (max_ctx, eps) = (64usize, 1e-5f32);
    // (cos, sin) per position and pair, as the executor's table; any values serve.
    let rope = random(&mut rng, max_ctx * half * 2, 1.0);
    let rope_buf = rig.f32s(&rope);
    for k in [72usize, 100] {
        let gamma = random(&mut rng, k, 1.0);
        let gamma_buf = rig.f32s(&gamma);
        for &m in &[1usize, 3, 8, 9, 20, 33] {
            let x = random(&mut rng, m * k, 3.0);
            let xbuf = rig.f32s(&x);
            let positions: Vec<usize> = (0..m).map(|i| (7 * i + 3) % max_ctx).collect();
            let seqs: Vec<usize> = (0..m).map(|i| i % 2).collect();
            let step = rig.step(m, m, None, &positions, &seqs);
            let mut variants = vec![];
            if m <= lin.gemv_max_m {
                variants.extend(gemv_forms(&lin, k));
            }
            if rig.caps.fusions.flat_gemm_fusions {
                variants.extend(lin.flat_tilings.iter().map(|&tiling| Variant::FlatGemm { tiling }));
            }
            for epilogue in [Epilogue::SwiGlu, Epilogue::Rope { dims }] {
                let n = if epilogue == Epilogue::SwiGlu { 2 * 40 } else { dims.qkv_width() };
                let ldy = if epilogue == Epilogue::SwiGlu { n / 2 } else { n };
                let w = random(&mut rng, n * k, 1.0);
                let (wbuf, w_stored) = rig.stored(&w);
                let bias = random(&mut rng, n, 1.0);
                let bias_buf = rig.f32s(&bias);
                for (norm, with_bias) in [(false, false), (true, false), (true, true)] {
                    // The reference: the products of the (normalised) rows, then the epilogue.
                    let mut d = vec![0f64; m * n];
                    for r in 0..m {
                        let row = &x[r * k..][..k];
                        let inv = 1.0 / (row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / k as f64 + eps as f64).sqrt();
                        for j in 0..n {
                            let dot: f64 = (0..k)
                                .map(|p| if norm { row[p] as f64 * gamma[p] as f64 * inv } else { row[p] as f64 } * w_stored[j * k + p] as f64)
                                .sum();
                            d[r * n + j] = dot + if with_bias { bias[j] as f64 } else { 0.0 };
                        }
                    }
                    let (mut want_y, mut want_k, mut want_v) = (vec![f64::NAN; m * ldy], vec![], vec![]);
                    for r in 0..m {
                        let d = &d[r * n..][..n];
                        if epilogue == Epilogue::SwiGlu {
                            for p in 0..ldy {
                                want_y[r * ldy + p] = d[p] / (1.0 + (-d[p]).exp()) * d[ldy + p];
                            }
                            continue;
                        }
                        let mut out = d.to_vec();
                        for h in 0..dims.heads + dims.kv_heads {
                            for i in 0..half {
                                let (a, b) = (h * dims.head_dim + i, h * dims.head_dim + i + half);
                                let at = (positions[r] * half + i) * 2;
                                let (c, sn) = (rope[at] as f64, rope[at + 1] as f64);
                                out[a] = d[a] * c - d[b] * sn;
                                out[b] = d[b] * c + d[a] * sn;
                            }
                        }
                        want_y[r * n..][..n].copy_from_slice(&out);
                        want_k.push(((seqs[r] * max_ctx + positions[r]) * kv_dim, out[q_dim..][..kv_dim].to_vec()));
                        want_v.push(((seqs[r] * max_ctx + positions[r]) * kv_dim, out[q_dim + kv_dim..][..kv_dim].to_vec()));
                    }
                    for &variant in &variants {
                        let prologue = norm.then_some(Prologue::RmsNorm { eps });
                        let params = Params::Linear { n, k, n_offset: 0, ldy, bias: with_bias, prologue, epilogue };
                        let t = Template { node: 0, out_rows: false, params, io: io() };
                        let ybuf = rig.f32s(&vec![f32::NAN; m * ldy]);
                        let cache = 2 * max_ctx * kv_dim;
                        let (kc, vc) = (rig.stored(&vec![0.0; cache]).0, rig.stored(&vec![0.0; cache]).0);
                        let args = Args {
                            step: ptr(&step, s),
                            x: ptr(&xbuf, s),
                            w: ptr(&wbuf, s),
                            y: ptr(&ybuf, s),
                            kc: ptr(&kc, s),
                            vc: ptr(&vc, s),
                            bias: ptr(&bias_buf, s),
                            rope: ptr(&rope_buf, s),
                            norm: ptr(&gamma_buf, s),
                            ..Args::of(&t, max_ctx, |_| 0)
                        };
                        let launch = Launch { template: 0, variant, rows: m };
                        rig.run(&kernels::grids(&launch, &t, m, rig.tensor_cores, 0).unwrap(), &args);
                        let what = format!("{variant} k {k} m {m} norm {norm} bias {with_bias} {epilogue:?}");
                        let err = rel_error(&rig.read(&ybuf), &want_y, &what);
                        assert!(err < tol, "{what}: relative error {err}");
                        let stored = |buf: &CudaSlice<u8>| -> Vec<f32> {
                            let b = rig.read(buf);
                            if rig.f16 {
                                b.chunks_exact(2).map(|h| f16::from_le_bytes([h[0], h[1]]).to_f32()).collect()
                            } else {
                                b.chunks_exact(4).map(|f| f32::from_le_bytes([f[0], f[1], f[2], f[3]])).collect()
                            }
                        };
                        for (buf, want, which) in [(&kc, &want_k, "K"), (&vc, &want_v, "V")] {
                            let cache = stored(buf);
                            let (mut got, mut flat) = (vec![], vec![]);
                            for (at, row) in want {
                                got.extend_from_slice(&cache[*at..][..row.len()]);
                                flat.extend_from_slice(row);
                            }
                            let err = rel_error(&got, &flat, &what);
                            assert!(err < tol, "{what}: {which} cache relative error {err}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn fused_linear_kernels_match_the_reference_f32() {
    check_fused_linear(WeightPrecision::F32);
}

#[test]
fn fused_linear_kernels_match_the_reference_f16() {
    check_fused_linear(WeightPrecision::F16);
}

/// Where one KV head sits in the cache rows: the row width, the head size, its offset.
#[derive(Clone, Copy)]
struct KvHead {
    kv_dim: usize,
    hd: usize,
    off: usize,
}

/// Softmax(q k^T * scale) v of one (row, head) in f64 over keys 0..=pos.
fn attend(q: &[f32], k: &[f32], v: &[f32], pos: usize, KvHead { kv_dim, hd, off }: KvHead, scale: f64) -> Vec<f64> {
    let s: Vec<f64> = (0..=pos).map(|j| (0..hd).map(|d| q[d] as f64 * k[j * kv_dim + off + d] as f64).sum::<f64>() * scale).collect();
    let mx = s.iter().cloned().fold(f64::MIN, f64::max);
    let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
    let l: f64 = e.iter().sum();
    (0..hd).map(|d| (0..=pos).map(|j| e[j] * v[j * kv_dim + off + d] as f64).sum::<f64>() / l).collect()
}

fn check_attention(precision: WeightPrecision) {
    let Some(rig) = Rig::new(precision) else { return };
    let s = &rig.stream;
    let limits = rig.caps.attention.split_kv.unwrap();
    let mut rng = Rng::new(2);
    let max_ctx = 1100;
    // Head sizes: powers of two, 80 (lanes left idle), 20 (not a multiple of 8: element loads).
    for hd in [16usize, 64, 128, 80, 20] {
        let dims = HeadDims { heads: 4, kv_heads: 2, head_dim: hd };
        let kv_dim = dims.kv_dim();
        let seqs = 3;
        let (kv_k, kv_v) = (random(&mut rng, seqs * max_ctx * kv_dim, 1.0), random(&mut rng, seqs * max_ctx * kv_dim, 1.0));
        let ((kc, k_stored), (vc, v_stored)) = (rig.stored(&kv_k), rig.stored(&kv_v));
        let scale = 1.0 / (hd as f32).sqrt();
        // One token per sequence (decode), and rows of one sequence (prefill).
        let prefill: Vec<usize> = (57..66).collect();
        for (positions, one_sequence) in [(vec![0usize], false), (vec![31, 32, 33], false), (vec![1000, 5, 64], false), (prefill, true)] {
            let m = positions.len();
            let row_seqs: Vec<usize> = (0..m).map(|i| if one_sequence { 0 } else { i }).collect();
            let x = random(&mut rng, m * dims.qkv_width(), 2.0);
            let xbuf = rig.f32s(&x);
            let keys = positions.iter().max().unwrap() + 1;
            // Chunks of one key tile (split, the last chunk adding up), and one chunk (attn_single).
            let split = (keys.div_ceil(limits.min_chunk_keys), limits.min_chunk_keys);
            let single = (1, keys.next_multiple_of(limits.min_chunk_keys));
            let mut want: Vec<f64> = vec![];
            for i in 0..m {
                let seq = row_seqs[i];
                let (k, v) = (&k_stored[seq * max_ctx * kv_dim..], &v_stored[seq * max_ctx * kv_dim..]);
                for h in 0..dims.heads {
                    let q = &x[i * dims.qkv_width() + h * hd..][..hd];
                    want.extend(attend(q, k, v, positions[i], KvHead { kv_dim, hd, off: (h / 2) * hd }, scale as f64));
                }
            }
            // Chunks as long as a larger step's (3 key tiles), not a power of two.
            let long = (keys.div_ceil(3 * limits.min_chunk_keys), 3 * limits.min_chunk_keys);
            let scratch = s.alloc_zeros::<f32>(m * dims.heads * limits.max_chunks * (hd + 1)).unwrap();
            // Split-KV, online, and split-KV whose every row leaves the unified-max range
            // (recomputed by the last chunk's or the single block's fallback).
            let everything_out = UnifiedMax { phi: 0.0, lo: -1e30, hi: -1e30 };
            for (name, unified, split) in [
                ("split", UnifiedMax::default(), split),
                ("split, long chunks", UnifiedMax::default(), long),
                ("single", UnifiedMax::default(), single),
                ("single, narrow", UnifiedMax::default(), single),
                ("online", UnifiedMax::default(), split),
                ("fallback", everything_out, split),
                ("fallback, single", everything_out, single),
                ("fallback, single, narrow", everything_out, single),
            ] {
                if one_sequence && name != "online" {
                    continue; // split-KV steps hold one token per sequence
                }
                let step = rig.step(m, m, Some(split), &positions, &row_seqs);
                let variant = match name {
                    "online" => Variant::OnlineAttention,
                    _ => Variant::SplitKvAttention { chunks: split.0, chunk_keys: split.1, unified, narrow: name.ends_with("narrow") },
                };
                let params = Params::Attention { dims, layer: 0, scale, kv_write: false, unified };
                let t = Template { node: 0, out_rows: false, params, io: io() };
                let ybuf = rig.f32s(&vec![f32::NAN; m * dims.q_dim()]);
                let flags = s.alloc_zeros::<u32>(1 + m * dims.heads).unwrap();
                let args = Args {
                    step: ptr(&step, s),
                    x: ptr(&xbuf, s),
                    y: ptr(&ybuf, s),
                    kc: ptr(&kc, s),
                    vc: ptr(&vc, s),
                    scratch: ptr(&scratch, s),
                    flags: ptr(&flags, s),
                    ..Args::of(&t, max_ctx, |_| 1)
                };
                // A grid of more chunk blocks than the step has, as a replayed graph launches.
                let launch = Launch { template: 0, variant, rows: m };
                rig.run(&kernels::grids(&launch, &t, m, rig.tensor_cores, split.0.next_power_of_two() * 2).unwrap(), &args);
                let err = rel_error(&rig.read(&ybuf), &want, "attention");
                assert!(err < 1e-4, "{name} hd {hd} positions {positions:?}: relative error {err}");
                let recomputed = rig.read(&flags)[0] as usize;
                assert_eq!(recomputed, if name.starts_with("fallback") { m * dims.heads } else { 0 }, "{name}: rows recomputed");
            }
        }
    }
}

#[test]
fn attention_kernels_match_the_reference_f32() {
    check_attention(WeightPrecision::F32);
}

#[test]
fn attention_kernels_match_the_reference_f16_cache() {
    check_attention(WeightPrecision::F16);
}

/// The tensor-core prefill attention (f16 KV cache) against the f64 reference: tiles with a
/// partial last block, a prompt that continues a cached context, a single row whose keys end
/// inside a tile, and a step of two sequences whose first tile spans both (done row by row).
#[test]
fn flash_attention_matches_the_reference() {
    let Some(rig) = Rig::new(WeightPrecision::F16) else { return };
    let s = &rig.stream;
    let Some(flash) = rig.caps.attention.flash.clone() else {
        assert!(!rig.tensor_cores, "f16 CUDA with tensor cores has the tensor-core attention");
        eprintln!("skipped: the tensor-core kernels are left out (FDPP_CUDA_TENSOR_CORES=0)");
        return;
    };
    let mut rng = Rng::new(3);
    let max_ctx = 600;
    for &hd in &flash.head_dims {
        for (heads, kv_heads) in [(4usize, 2usize), (3, 1)] {
            let dims = HeadDims { heads, kv_heads, head_dim: hd };
            let kv_dim = dims.kv_dim();
            let (kv_k, kv_v) = (random(&mut rng, 2 * max_ctx * kv_dim, 1.0), random(&mut rng, 2 * max_ctx * kv_dim, 1.0));
            let ((kc, k_stored), (vc, v_stored)) = (rig.stored(&kv_k), rig.stored(&kv_v));
            let scale = 1.0 / (hd as f32).sqrt();
            let rows = |seq: usize, p: std::ops::Range<usize>| p.map(move |pos| (seq, pos));
            for case in [
                rows(0, 0..150).collect::<Vec<_>>(),
                rows(1, 37..107).collect(),
                rows(0, 500..501).collect(),
                rows(0, 0..40).chain(rows(1, 0..90)).collect(),
            ] {
                let m = case.len();
                let (row_seqs, positions): (Vec<usize>, Vec<usize>) = case.iter().copied().unzip();
                let x = random(&mut rng, m * dims.qkv_width(), 2.0);
                let xbuf = rig.f32s(&x);
                let mut want: Vec<f64> = vec![];
                for (i, &(seq, pos)) in case.iter().enumerate() {
                    let (k, v) = (&k_stored[seq * max_ctx * kv_dim..], &v_stored[seq * max_ctx * kv_dim..]);
                    for h in 0..heads {
                        let q = &x[i * dims.qkv_width() + h * hd..][..hd];
                        want.extend(attend(q, k, v, pos, KvHead { kv_dim, hd, off: (h / (heads / kv_heads)) * hd }, scale as f64));
                    }
                }
                let step = rig.step(m, m, None, &positions, &row_seqs);
                let params = Params::Attention { dims, layer: 0, scale, kv_write: false, unified: UnifiedMax::default() };
                let t = Template { node: 0, out_rows: false, params, io: io() };
                let ybuf = rig.f32s(&vec![f32::NAN; m * dims.q_dim()]);
                let args = Args {
                    step: ptr(&step, s),
                    x: ptr(&xbuf, s),
                    y: ptr(&ybuf, s),
                    kc: ptr(&kc, s),
                    vc: ptr(&vc, s),
                    ..Args::of(&t, max_ctx, |_| 1)
                };
                let launch = Launch { template: 0, variant: Variant::FlashAttention { rows: flash.rows, keys: flash.keys }, rows: m };
                rig.run(&kernels::grids(&launch, &t, m, rig.tensor_cores, 0).unwrap(), &args);
                // q and the probabilities are rounded to f16 for the tensor cores.
                let err = rel_error(&rig.read(&ybuf), &want, "flash attention");
                assert!(err < 1e-2, "hd {hd} heads {heads}/{kv_heads}, {m} rows from {:?}: relative error {err}", case[0]);
            }
        }
    }
}

#[test]
fn the_cuda_profile_lowers_with_its_own_tiles() {
    let caps = BackendCaps::cuda_builtin(DType::F16);
    assert_eq!(caps.linear.flat_tilings, cuda::flat_tilings());
    // Every tiling's kernels exist, for every fusion the f16 profile offers B.
    assert!(caps.fusions.flat_gemm_fusions);
    let names = kernels::exports("linear", true);
    for t in cuda::flat_tilings() {
        for name in [
            format!("flat_gemm_t{}x{}x{}", t.tile.m, t.tile.n, t.k_groups),
            format!("flat_gemm_norm_rope_bias_t{}x{}x{}", t.tile.m, t.tile.n, t.k_groups),
        ] {
            assert!(names.contains(&name), "{name}");
        }
    }
    let f32_caps = BackendCaps::cuda_builtin(DType::F32);
    assert!(!f32_caps.cooperative_matrix);
}

/// The greedy pick of each row over many blocks, against the rule it keeps: the largest
/// logit above -3.4e38, the lowest index among equals, NaN never; none at all reads as
/// u32::MAX. Ties and the winner sit in different blocks' slices.
#[test]
fn argmax_picks_the_first_largest_logit_of_each_row_across_blocks() {
    let Some(rig) = Rig::new(WeightPrecision::F32) else { return };
    let s = &rig.stream;
    let vocab = 49152;
    let mut rng = Rng::new(9);
    let mut rows: Vec<Vec<f32>> = vec![];
    rows.push(random(&mut rng, vocab, 10.0));
    let mut tie = random(&mut rng, vocab, 1.0);
    (tie[40000], tie[700], tie[30000]) = (5.0, 5.0, 5.0);
    rows.push(tie);
    let mut nan = random(&mut rng, vocab, 1.0);
    (nan[3], nan[49151]) = (f32::NAN, 2.0);
    rows.push(nan);
    rows.push(vec![f32::NEG_INFINITY; vocab]);
    let mut negative = vec![-7.0f32; vocab];
    negative[vocab - 1] = -6.5;
    rows.push(negative);
    let want: Vec<u32> = rows
        .iter()
        .map(|r| {
            let (mut best, mut idx) = (-3.4e38f32, u32::MAX);
            for (j, &v) in r.iter().enumerate() {
                if v > best {
                    (best, idx) = (v, j as u32);
                }
            }
            idx
        })
        .collect();
    assert_eq!(want[1], 700);
    let n = rows.len();
    let x = rig.f32s(&rows.concat());
    let step = rig.step(n, n, None, &[], &[]);
    let offset = argmax_offset(n, 3, 1);
    let mut flag_words = vec![0u32; offset + ARGMAX_WORDS * n];
    flag_words[0] = 7;
    let flags = s.clone_htod(&flag_words).unwrap();
    let out = s.alloc_zeros::<u32>(1 + n).unwrap();
    let args = Args {
        step: ptr(&step, s),
        x: ptr(&x, s),
        y: ptr(&out, s),
        flags: ptr(&flags, s),
        s: crate::lower::kernel::LaunchScalars { flag_offset: offset as u32, ..Args::scalars(vocab, 0) },
        ..Default::default()
    };
    rig.run(&[Grid { kernel: "argmax".into(), blocks: [ARGMAX_BLOCKS, n as u32, 1], threads: 256 }], &args);
    assert_eq!(rig.read(&flags)[1..1 + n], want[..]);
    // The read-back copy: the count of recomputed rows, then the ids.
    assert_eq!(rig.read(&out), [&[7], &want[..]].concat());
}

/// `step_begin` copies the step's words, the last step's picks in place of the first m
/// tokens where the words say so, and then zeroes the flags (the picks included).
#[test]
fn step_begin_copies_the_words_and_the_picks_then_clears_the_flags() {
    let Some(rig) = Rig::new(WeightPrecision::F32) else { return };
    let s = &rig.stream;
    let (m, max_m) = (3, 5);
    let mut rng = Rng::new(4);
    let flag_words: Vec<u32> = (0..300).map(|_| 1 + (rng.next_f32() * 1e6) as u32).collect();
    for picked in [false, true] {
        let mut words = step_words(m, 2, max_m, Some((4, 32)));
        for (i, w) in words.iter_mut().enumerate().skip(STEP_WORDS) {
            *w = 1000 + i as u32;
        }
        words[kernels::STEP_PICKED] = picked as u32;
        let host_words = s.clone_htod(&words).unwrap();
        let step = s.alloc_zeros::<u32>(words.len()).unwrap();
        let flags = s.clone_htod(&flag_words).unwrap();
        let args = Args {
            step: ptr(&step, s),
            x: ptr(&host_words, s),
            flags: ptr(&flags, s),
            s: crate::lower::kernel::LaunchScalars { k: words.len() as u32, ..Args::scalars(flag_words.len(), 0) },
            ..Default::default()
        };
        rig.run(&[Grid { kernel: "step_begin".into(), blocks: [1, 1, 1], threads: 1024 }], &args);
        let mut want = words.clone();
        if picked {
            want[STEP_WORDS..STEP_WORDS + m].copy_from_slice(&flag_words[1..1 + m]);
        }
        assert_eq!(rig.read(&step), want, "picked {picked}");
        assert!(rig.read(&flags).iter().all(|&f| f == 0), "picked {picked}: flags left set");
    }
}
