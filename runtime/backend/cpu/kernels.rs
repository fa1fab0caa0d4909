//! f32 kernels of the CPU backend. Dot products use AVX2+FMA when the CPU has them
//! (checked at run time, so one binary runs everywhere) and a portable loop otherwise.

use rayon::prelude::*;

use crate::lower::caps::Tile;

/// Number of token rows one weight row is multiplied with while it sits in registers/L1.
const TOKEN_TILE: usize = 4;

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

pub fn simd_name() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        return "avx2+fma";
    }
    "portable"
}

/// `w . x[t]` for the first `count` token rows at once.
///
/// # Panics
/// If `count > TOKEN_TILE` or a used row's length differs from `w`'s: the SIMD loop reads
/// `w.len()` elements of every row it uses.
#[inline]
fn dot_tile(w: &[f32], xs: &[&[f32]; TOKEN_TILE], count: usize) -> [f32; TOKEN_TILE] {
    assert!(count <= TOKEN_TILE && xs[..count].iter().all(|x| x.len() == w.len()), "dot products need rows of equal length");
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2 and FMA were just detected, and the assert above gives every row
        // `avx2::dot_tile` reads (the first `count`) exactly `w.len()` elements.
        return unsafe { avx2::dot_tile(w, xs, count) };
    }
    let mut out = [0.0; TOKEN_TILE];
    for t in 0..count {
        out[t] = dot_portable(w, xs[t]);
    }
    out
}

/// The dot product of two slices of equal length.
///
/// # Panics
/// If the lengths differ.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_tile(a, &[b, &[], &[], &[]], 1)[0]
}

fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + ra.iter().zip(rb).map(|(x, y)| x * y).sum::<f32>()
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::TOKEN_TILE;
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Each weight vector load feeds `count` FMAs, so a tile of tokens costs one pass over `w`.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA, `count <= TOKEN_TILE`, and `xs[t].len() == w.len()`
    /// for every `t < count` (every element of `w` and of those rows is read).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_tile(w: &[f32], xs: &[&[f32]; TOKEN_TILE], count: usize) -> [f32; TOKEN_TILE] {
        let k = w.len();
        let body = k - k % 16;
        let mut acc = [[_mm256_setzero_ps(); 2]; TOKEN_TILE];
        let mut i = 0;
        // SAFETY: i + 15 < body <= k = w.len() = xs[t].len() for every t < count (the
        // caller's contract), so every load is inside its slice.
        unsafe {
            while i < body {
                let w0 = _mm256_loadu_ps(w.as_ptr().add(i));
                let w1 = _mm256_loadu_ps(w.as_ptr().add(i + 8));
                for t in 0..count {
                    let x = xs[t].as_ptr().add(i);
                    acc[t][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x), acc[t][0]);
                    acc[t][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x.add(8)), acc[t][1]);
                }
                i += 16;
            }
            let mut out = [0.0; TOKEN_TILE];
            for t in 0..count {
                let mut s = hsum(_mm256_add_ps(acc[t][0], acc[t][1]));
                for j in body..k {
                    s += w[j] * xs[t][j];
                }
                out[t] = s;
            }
            out
        }
    }
}

/// Shared pointer to an output whose disjoint parts are written by different workers.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: `Out` is only made in `flat_gemm` and `gemm` from a `&mut [f32]` that outlives the
// parallel loop using it, and each task writes a block of it no other task writes.
unsafe impl Send for Out {}
// SAFETY: as for Send: tasks share the pointer but never an element.
unsafe impl Sync for Out {}

/// A (GEMV): y[n] = W[n, :] . x for one token row (`k = x.len()`, `n = y.len()`).
///
/// # Panics
/// If `w` holds fewer than `n * k` values.
pub fn gemv(x: &[f32], w: &[f32], y: &mut [f32]) {
    let k = x.len();
    let w = &w[..y.len() * k];
    let chunk = (16384 / k.max(1)).max(1);
    y.par_chunks_mut(chunk).zip(w.par_chunks(chunk * k.max(1))).for_each(|(ys, ws)| {
        for (out, row) in ys.iter_mut().zip(ws.chunks_exact(k.max(1))) {
            *out = dot(row, x);
        }
    });
}

/// Multiplies weight rows `rows` with token rows `tokens`; y is `[m, n]` row-major with
/// `m * n <= y.len()` (checked by the callers), x is `[m, k]`, w is `[n, k]`.
fn tile(x: &[f32], w: &[f32], y: Out, k: usize, n: usize, rows: std::ops::Range<usize>, tokens: std::ops::Range<usize>) {
    let mut t0 = tokens.start;
    while t0 < tokens.end {
        let count = TOKEN_TILE.min(tokens.end - t0);
        let mut xs: [&[f32]; TOKEN_TILE] = [&[]; TOKEN_TILE];
        for t in 0..count {
            xs[t] = &x[(t0 + t) * k..(t0 + t + 1) * k];
        }
        for r in rows.clone() {
            let d = dot_tile(&w[r * k..(r + 1) * k], &xs, count);
            for (t, v) in d.iter().enumerate().take(count) {
                // SAFETY: (t0 + t, r) lies in this task's rows x tokens block, which no
                // other task writes; t0 + t < m and r < n, and the callers checked that y
                // holds m * n elements.
                unsafe { *y.0.add((t0 + t) * n + r) = *v };
            }
        }
        t0 += count;
    }
}

/// `(m, n, k)` of y = x W^T, checked against the slices so the tiles stay inside them.
fn dims(x: &[f32], m: usize, w: &[f32], y: &[f32]) -> (usize, usize) {
    assert!(m > 0 && y.len().is_multiple_of(m) && x.len().is_multiple_of(m), "x and y must hold whole rows of m = {m} tokens");
    let (n, k) = (y.len() / m, x.len() / m);
    assert!(w.len() >= n * k, "w holds {} values, the product needs {n} x {k}", w.len());
    (n, k)
}

/// B (flat GEMM): N split across workers in tiles of `tile.n` weight rows, every worker
/// takes all M tokens against its rows (`TOKEN_TILE` at a time), so the weights stream from
/// memory once per step whatever M is. x is `[m, k]`, y `[m, n]`, w at least `[n, k]`.
pub fn flat_gemm(x: &[f32], m: usize, w: &[f32], y: &mut [f32], tile_size: Tile) {
    let (n, k) = dims(x, m, w, y);
    let chunk = tile_size.n.max(1);
    let out = Out(y.as_mut_ptr());
    (0..n.div_ceil(chunk)).into_par_iter().for_each(|c| {
        let rows = c * chunk..((c + 1) * chunk).min(n);
        tile(x, w, out, k, n, rows, 0..m);
    });
}

/// C (tiled GEMM): blocks of `tile.m` tokens x `tile.n` weight rows, parallel over both.
pub fn gemm(x: &[f32], m: usize, w: &[f32], y: &mut [f32], tile_size: Tile) {
    let (n, k) = dims(x, m, w, y);
    let (rows_per, toks_per) = (tile_size.n.max(1), tile_size.m.max(1));
    let (nb, mb) = (n.div_ceil(rows_per), m.div_ceil(toks_per));
    let out = Out(y.as_mut_ptr());
    (0..nb * mb).into_par_iter().for_each(|b| {
        let (rb, tb) = (b % nb, b / nb);
        let rows = rb * rows_per..((rb + 1) * rows_per).min(n);
        let tokens = tb * toks_per..((tb + 1) * toks_per).min(m);
        tile(x, w, out, k, n, rows, tokens);
    });
}

pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, y: &mut [f32]) {
    let h = weight.len();
    for (xr, yr) in x.chunks_exact(h).zip(y.chunks_exact_mut(h)) {
        let ms = xr.iter().map(|v| v * v).sum::<f32>() / h as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((o, v), g) in yr.iter_mut().zip(xr).zip(weight) {
            *o = v * inv * g;
        }
    }
}

/// Rotates the first `heads` head vectors of `row` (split-halves layout) by `angles`:
/// (cos, sin) per rotary pair of this position (`crate::lower::rope::table`).
pub fn rope_row(row: &mut [f32], heads: usize, head_dim: usize, angles: &[f32]) {
    let half = head_dim / 2;
    for h in 0..heads {
        let v = &mut row[h * head_dim..(h + 1) * head_dim];
        for i in 0..half {
            let (cos, sin) = (angles[2 * i], angles[2 * i + 1]);
            let (a, b) = (v[i], v[i + half]);
            v[i] = a * cos - b * sin;
            v[i + half] = b * cos + a * sin;
        }
    }
}

pub fn silu_mul(gate_up: &[f32], ffn: usize, y: &mut [f32]) {
    for (gu, out) in gate_up.chunks_exact(2 * ffn).zip(y.chunks_exact_mut(ffn)) {
        let (g, u) = gu.split_at(ffn);
        for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
            *o = g / (1.0 + (-g).exp()) * u;
        }
    }
}

/// One KV head of a cache: `keys` and `values` are `[positions, kv_dim]`, the head's slice
/// of each row starting at `offset`.
#[derive(Clone, Copy)]
pub struct KvHead<'a> {
    pub keys: &'a [f32],
    pub values: &'a [f32],
    pub kv_dim: usize,
    pub offset: usize,
}

/// Causal attention of one query head over `len` cached positions: softmax(q.K^T * scale) V.
pub fn attend(q: &[f32], kv: KvHead, len: usize, scale: f32, out: &mut [f32], scores: &mut Vec<f32>) {
    let d = q.len();
    let row = |j: usize| j * kv.kv_dim + kv.offset..j * kv.kv_dim + kv.offset + d;
    scores.clear();
    let mut max = f32::NEG_INFINITY;
    for j in 0..len {
        let s = dot(q, &kv.keys[row(j)]) * scale;
        max = max.max(s);
        scores.push(s);
    }
    let mut sum = 0.0;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    out.fill(0.0);
    for (j, &p) in scores.iter().enumerate() {
        for (o, &vv) in out.iter_mut().zip(&kv.values[row(j)]) {
            *o += p * vv;
        }
    }
    let inv = 1.0 / sum;
    out.iter_mut().for_each(|o| *o *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], m: usize, w: &[f32], n: usize, k: usize) -> Vec<f64> {
        let mut y = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                y[i * n + j] = (0..k).map(|p| x[i * k + p] as f64 * w[j * k + p] as f64).sum();
            }
        }
        y
    }

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0).collect()
    }

    #[test]
    fn all_three_linear_kernels_agree_with_a_naive_product() {
        // Odd sizes exercise tails of the SIMD loop, the token tile and the row chunks.
        for &(m, n, k) in &[(1, 37, 19), (3, 70, 33), (5, 129, 64), (67, 45, 130)] {
            let (x, w) = (data(m * k, 1), data(n * k, 7));
            let want = naive(&x, m, &w, n, k);
            let mut outs = vec![];
            let mut y = vec![f32::NAN; m * n];
            x.chunks_exact(k).zip(y.chunks_exact_mut(n)).for_each(|(x, y)| gemv(x, &w, y));
            outs.push(("gemv", y));
            for tile in [Tile { m: 4, n: 64 }, Tile { m: 2, n: 7 }] {
                let mut y = vec![f32::NAN; m * n];
                flat_gemm(&x, m, &w, &mut y, tile);
                outs.push(("flat", y));
                let mut y = vec![f32::NAN; m * n];
                gemm(&x, m, &w, &mut y, tile);
                outs.push(("gemm", y));
            }
            for (name, y) in outs {
                let err = crate::compare::max_error(&y, &want).unwrap_or_else(|e| panic!("{name} m={m} n={n} k={k}: {e}"));
                assert!(err.abs <= 1e-4 * (1.0 + err.scale), "{name} m={m} n={n} k={k}: {err:?}");
            }
        }
    }

    #[test]
    fn attention_weights_sum_to_one() {
        // With all values equal to 1, the output is 1 whatever the scores are.
        let (d, len) = (8, 5);
        let q = data(d, 3);
        let keys = data(len * d, 4);
        let values = vec![1.0; len * d];
        let mut out = vec![0.0; d];
        attend(&q, KvHead { keys: &keys, values: &values, kv_dim: d, offset: 0 }, len, 0.3, &mut out, &mut vec![]);
        assert!(out.iter().all(|v| (v - 1.0).abs() < 1e-6), "{out:?}");
    }

    #[test]
    #[should_panic(expected = "equal length")]
    fn dot_of_unequal_lengths_panics_instead_of_reading_past_the_shorter() {
        let a = vec![1.0f32; 64];
        let b = vec![1.0f32; 3];
        dot(&a, &b);
    }

    #[test]
    fn dot_of_equal_lengths_matches_a_plain_sum() {
        for len in [0usize, 1, 15, 16, 17, 100] {
            let a = data(len, 1);
            let b = data(len, 2);
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot(&a, &b) as f64 - want).abs() < 1e-4, "len {len}");
        }
    }

    #[test]
    #[should_panic(expected = "the product needs")]
    fn a_short_weight_is_refused() {
        let mut y = vec![0.0; 8];
        flat_gemm(&[1.0; 8], 2, &[1.0; 10], &mut y, Tile { m: 4, n: 4 });
    }
}
