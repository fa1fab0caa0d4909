//! Every WGSL kernel against the CPU oracle on fresh random inputs, on whatever adapter
//! this machine has (Mesa's lavapipe in CI). Skipped, with the reason printed, without one.

use super::*;
use crate::backend::Executor;
use crate::backend::cpu::kernels;
use crate::engine::sampler::Rng;
use crate::graph::llama;
use crate::model::ModelConfig;

fn config() -> ModelConfig {
    ModelConfig {
        architecture: "llama".into(),
        vocab_size: 300,
        hidden_size: 64,
        intermediate_size: 96,
        num_layers: 1,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 16,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-5,
        max_context: 512,
        tie_word_embeddings: true,
    }
}

/// An executor on a 1-layer graph, used for its device, pipelines and bind groups.
fn executor(precision: WeightPrecision, max_seqs: usize) -> Option<WgpuExecutor> {
    let c = config();
    let g = llama::build(&c);
    let plan = Plan::new(&g).unwrap();
    let params = g.params.iter().map(|p| HostTensor::f32(p.shape.clone(), vec![0.0; p.numel()])).collect();
    match WgpuExecutor::new(&g, &plan, params, ExecutorOptions::new(max_seqs, c.max_context), None, precision) {
        Ok(mut ex) => {
            ex.ensure_capacity(256).unwrap();
            Some(ex)
        }
        Err(e @ Error::BackendUnavailable { .. }) => {
            eprintln!("skipped: no wgpu adapter on this machine ({e})");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn random(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| (rng.next_f32() * 2.0 - 1.0) * scale).collect()
}

impl WgpuExecutor {
    fn upload(&self, data: &[f32]) -> wgpu::Buffer {
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        // Whole vec4s, as the kernels read activations.
        let mut padded = data.to_vec();
        padded.resize(data.len().next_multiple_of(4).max(4), 0.0);
        self.ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(&padded),
            usage,
        })
    }

    fn dispatch_one(&self, kernel: &str, binds: Binds, node: NodeUniform, step: StepUniform, data: &[u32], grid: (usize, usize, usize)) {
        let ubuf = self.ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::bytes_of(&node),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        self.ctx.queue.write_buffer(&self.step_uniform, 0, bytemuck::bytes_of(&step));
        let mut sd = vec![0u32; 4 * self.cap_m];
        sd[..data.len()].copy_from_slice(data);
        self.ctx.queue.write_buffer(&self.step_data, 0, bytemuck::cast_slice(&sd));
        let group = self.bind_group(&ubuf, 0, binds);
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&self.pipelines[kernel]);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(grid.0 as u32, grid.1 as u32, grid.2 as u32);
        }
        self.ctx.queue.submit([enc.finish()]);
    }

    fn download(&self, buf: &wgpu::Buffer, len: usize) -> Vec<f32> {
        let staging = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: (len * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buf, 0, &staging, 0, (len * 4) as u64);
        self.ctx.queue.submit([enc.finish()]);
        bytemuck::cast_slice(&self.read(&staging, len * 4).unwrap()).to_vec()
    }

    /// A step of `m` tokens whose longest row attends to `keys` keys.
    fn step_uniform(&self, m: usize, n_out: usize, keys: usize) -> StepUniform {
        StepUniform::new(m, n_out, self.cap_m, keys)
    }
}

/// max |got - want| / max |want|
fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
    got.iter().zip(want).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max) / scale
}

fn tolerance(ex: &WgpuExecutor) -> f64 {
    if ex.ctx.f16_weights { 2e-2 } else { 1e-5 }
}

const M_GRID: [usize; 11] = [1, 2, 3, 7, 8, 9, 16, 33, 64, 65, 200];

fn check_linear(precision: WeightPrecision) {
    let Some(ex) = executor(precision, 1) else { return };
    let mut rng = Rng::new(1);
    // K = 1100 is long enough for the eight-step GEMV walk.
    for &(n, k) in &[(37usize, 19usize), (70, 33), (129, 100), (21, 1100)] {
        let w = random(&mut rng, n * k, 1.0);
        let wbuf = ex.ctx.upload_weights("w", &w);
        for &m in &M_GRID {
            let x = random(&mut rng, m * k, 1.0);
            // Against the unrounded weights: f16 storage is inside the tolerance.
            let want: Vec<f64> = (0..m * n).map(|o| (0..k).map(|p| x[(o / n) * k + p] as f64 * w[(o % n) * k + p] as f64).sum()).collect();
            let xbuf = ex.upload(&x);
            let mut kernels_run =
                vec![("flat_gemm", (n.div_ceil(FB_COLS), m.div_ceil(FB_M), 1)), ("gemm", (n.div_ceil(64), m.div_ceil(64), 1))];
            if m <= GEMV_MAX_M {
                kernels_run.push(("gemv", (n.div_ceil(GV_COLS), 1, 1)));
                kernels_run.push(("gemv_split_k", (n.div_ceil(GV_COLS), 1, 1)));
            }
            for (kernel, grid) in kernels_run {
                let ybuf = ex.upload(&vec![f32::NAN; m * n]);
                let node = NodeUniform { n: n as u32, k: k as u32, ldy: n as u32, ..Default::default() };
                ex.dispatch_one(
                    kernel,
                    Binds { x: Some(&xbuf), w: Some(&wbuf), y: Some(&ybuf), ..Default::default() },
                    node,
                    ex.step_uniform(m, 0, 0),
                    &[],
                    grid,
                );
                let got = ex.download(&ybuf, m * n);
                let err = rel_err(&got, &want);
                assert!(err <= tolerance(&ex), "{kernel} m={m} n={n} k={k} f16={}: relative error {err:e}", ex.ctx.f16_weights);
            }
        }
    }
}

#[test]
fn linear_kernels_match_the_oracle_f32() {
    check_linear(WeightPrecision::F32);
}

#[test]
fn linear_kernels_match_the_oracle_f16() {
    let Some(ex) = executor(WeightPrecision::Auto, 1) else { return };
    if !ex.ctx.f16_weights {
        eprintln!("skipped: {} has no SHADER_F16", ex.ctx.info.name);
        return;
    }
    drop(ex);
    check_linear(WeightPrecision::F16);
}

#[test]
fn row_kernels_match_the_oracle() {
    let Some(ex) = executor(WeightPrecision::F32, 1) else { return };
    let mut rng = Rng::new(2);
    let c = config();
    let (h, m) = (c.hidden_size, 9usize);
    let x = random(&mut rng, m * h, 2.0);
    let x2 = random(&mut rng, m * h, 2.0);
    let (xb, x2b) = (ex.upload(&x), ex.upload(&x2));
    let grid = (h.div_ceil(64), m, 1);

    // rms_norm
    let g = random(&mut rng, h, 1.0);
    let gb = ex.ctx.upload_weights("norm", &g);
    let yb = ex.upload(&vec![0.0; m * h]);
    let node = NodeUniform { k: h as u32, eps: 1e-5, ..Default::default() };
    ex.dispatch_one(
        "rms_norm",
        Binds { x: Some(&xb), w: Some(&gb), y: Some(&yb), ..Default::default() },
        node,
        ex.step_uniform(m, 0, 0),
        &[],
        (1, m, 1),
    );
    let mut want = vec![0.0; m * h];
    kernels::rms_norm(&x, &g, 1e-5, &mut want);
    let want64: Vec<f64> = want.iter().map(|&v| v as f64).collect();
    assert!(rel_err(&ex.download(&yb, m * h), &want64) < 1e-5, "rms_norm");

    // add
    let node = NodeUniform { n: h as u32, ..Default::default() };
    ex.dispatch_one(
        "add",
        Binds { x: Some(&xb), x2: Some(&x2b), y: Some(&yb), ..Default::default() },
        node,
        ex.step_uniform(m, 0, 0),
        &[],
        grid,
    );
    let want: Vec<f64> = x.iter().zip(&x2).map(|(a, b)| (a + b) as f64).collect();
    assert!(rel_err(&ex.download(&yb, m * h), &want) < 1e-6, "add");

    // swiglu over rows of [gate | up] (F = h / 2)
    let f = h / 2;
    let node = NodeUniform { n: f as u32, ..Default::default() };
    let ys = ex.upload(&vec![0.0; m * f]);
    ex.dispatch_one(
        "swiglu",
        Binds { x: Some(&xb), y: Some(&ys), ..Default::default() },
        node,
        ex.step_uniform(m, 0, 0),
        &[],
        (f.div_ceil(64), m, 1),
    );
    let mut want = vec![0.0; m * f];
    kernels::silu_mul(&x, f, &mut want);
    let want64: Vec<f64> = want.iter().map(|&v| v as f64).collect();
    assert!(rel_err(&ex.download(&ys, m * f), &want64) < 1e-5, "swiglu");

    // rope over fused qkv rows at assorted positions, with the executor's own angle table
    let (heads, kvh, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
    let width = (heads + 2 * kvh) * hd;
    let qkv = random(&mut rng, m * width, 1.0);
    let positions: Vec<u32> = (0..m as u32).map(|i| i * 37 % 500).collect();
    let mut data = vec![0u32; ex.cap_m * 2];
    data[ex.cap_m..ex.cap_m + m].copy_from_slice(&positions);
    let qb = ex.upload(&qkv);
    let yr = ex.upload(&vec![0.0; m * width]);
    let node = NodeUniform { n: width as u32, heads: heads as u32, kv_heads: kvh as u32, head_dim: hd as u32, ..Default::default() };
    ex.dispatch_one(
        "rope",
        Binds { x: Some(&qb), x2: Some(&ex.rope_table), y: Some(&yr), ..Default::default() },
        node,
        ex.step_uniform(m, 0, 0),
        &data,
        (width.div_ceil(64), m, 1),
    );
    let inv = kernels::rope_inv_freq(c.rope_theta, hd);
    let mut want = qkv.clone();
    for (i, row) in want.chunks_exact_mut(width).enumerate() {
        kernels::rope_row(row, heads, hd, &inv, positions[i] as usize);
        kernels::rope_row(&mut row[heads * hd..], kvh, hd, &inv, positions[i] as usize);
    }
    let want64: Vec<f64> = want.iter().map(|&v| v as f64).collect();
    assert!(rel_err(&ex.download(&yr, m * width), &want64) < 1e-6, "rope");

    // embedding gather and select_rows
    let vocab = 300;
    let table = random(&mut rng, vocab * h, 1.0);
    let tb = ex.ctx.upload_weights("table", &table);
    let tokens: Vec<u32> = (0..m as u32).map(|i| (i * 97 + 5) % vocab as u32).collect();
    let node = NodeUniform { n: vocab as u32, k: h as u32, ..Default::default() };
    ex.dispatch_one("embedding", Binds { w: Some(&tb), y: Some(&yb), ..Default::default() }, node, ex.step_uniform(m, 0, 0), &tokens, grid);
    let want: Vec<f64> = tokens.iter().flat_map(|&t| table[t as usize * h..(t as usize + 1) * h].iter().map(|&v| v as f64)).collect();
    assert!(rel_err(&ex.download(&yb, m * h), &want) == 0.0, "embedding");
    let rows = [4u32, 0, 8];
    let mut data = vec![0u32; ex.cap_m * 4];
    data[3 * ex.cap_m..3 * ex.cap_m + 3].copy_from_slice(&rows);
    let node = NodeUniform { n: h as u32, rows: 1, ..Default::default() };
    ex.dispatch_one(
        "select_rows",
        Binds { x: Some(&xb), y: Some(&yb), ..Default::default() },
        node,
        ex.step_uniform(m, 3, 0),
        &data,
        (h.div_ceil(64), 3, 1),
    );
    let want: Vec<f64> = rows.iter().flat_map(|&r| x[r as usize * h..(r as usize + 1) * h].iter().map(|&v| v as f64)).collect();
    assert!(rel_err(&ex.download(&yb, 3 * h), &want) == 0.0, "select_rows");

    // argmax, with a tie resolved to the lower index
    let mut logits = random(&mut rng, 2 * 1000, 5.0);
    logits[1000 + 17] = 9.0;
    logits[1000 + 900] = 9.0;
    let lb = ex.upload(&logits);
    let node = NodeUniform { n: 1000, rows: 1, ..Default::default() };
    ex.dispatch_one("argmax", Binds { x: Some(&lb), ..Default::default() }, node, ex.step_uniform(1, 2, 0), &[], (1, 2, 1));
    let flags: Vec<u32> = bytemuck::cast_slice(&ex.download(&ex.flags, 3)).to_vec();
    assert_eq!(flags[1], crate::engine::sampler::argmax(&logits[..1000]));
    assert_eq!(flags[2], 17);
}

/// Decode attention: unified-max split-KV (with its fallback) and the online kernel, both
/// against the CPU's two-pass softmax. `unified` sets phi and the safe range.
fn check_attention(unified: UnifiedMax, q_scale: f32, expect_fallback: bool) {
    let Some(mut ex) = executor(WeightPrecision::F32, 4) else { return };
    ex.unified_max = unified;
    let c = config();
    let (heads, kvh, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
    let (kv_dim, width, max_ctx) = (kvh * hd, (heads + 2 * kvh) * hd, c.max_context);
    let mut rng = Rng::new(3);
    // Four sequences (one token each, as in a batched decode step) at positions that need
    // one to all of the chunks of keys.
    let positions = [0usize, 255, 300, 511];
    let m = positions.len();
    let kc = random(&mut rng, m * max_ctx * kv_dim, 1.0);
    let vc = random(&mut rng, m * max_ctx * kv_dim, 1.0);
    let qkv = random(&mut rng, m * width, q_scale);
    let (kb, vb, qb) = (ex.upload(&kc), ex.upload(&vc), ex.upload(&qkv));
    let mut data = vec![0u32; 4 * ex.cap_m];
    for i in 0..m {
        data[ex.cap_m + i] = positions[i] as u32;
        data[2 * ex.cap_m + i] = i as u32;
    }
    let scale = 1.0 / (hd as f32).sqrt();
    let mut want = vec![0.0f32; m * heads * hd];
    for i in 0..m {
        for h in 0..heads {
            let base = i * max_ctx * kv_dim;
            let q = &qkv[i * width + h * hd..i * width + (h + 1) * hd];
            let out = &mut want[(i * heads + h) * hd..(i * heads + h + 1) * hd];
            kernels::attend(q, &kc[base..], &vc[base..], kv_dim, (h / (heads / kvh)) * hd, positions[i] + 1, scale, out, &mut vec![]);
        }
    }
    let want64: Vec<f64> = want.iter().map(|&v| v as f64).collect();
    let node = NodeUniform {
        heads: heads as u32,
        kv_heads: kvh as u32,
        head_dim: hd as u32,
        max_ctx: max_ctx as u32,
        flag_offset: ex.flag_offset(0),
        scale,
        phi: unified.phi,
        lo: unified.lo,
        hi: unified.hi,
        ..Default::default()
    };
    let binds = |y| Binds { x: Some(&qb), y: Some(y), kc: Some(&kb), vc: Some(&vb), ..Default::default() };
    let step = ex.step_uniform(m, 0, 512);
    // The chunking split_kv picks for 512 keys (32 chunks of 16, one tile each), and longer
    // chunks of 64 keys (four tiles each), as it picks past 1024 keys.
    let long_chunks = StepUniform { attn_chunks: 8, attn_chunk_keys: 64, ..step };
    let outputs: Vec<wgpu::Buffer> = (0..3).map(|_| ex.upload(&vec![f32::NAN; m * heads * hd])).collect();
    for (split, y_split) in [step, long_chunks].into_iter().zip(&outputs) {
        let mut enc = ex.ctx.device.create_command_encoder(&Default::default());
        enc.clear_buffer(&ex.flags, 0, None);
        ex.ctx.queue.submit([enc.finish()]);
        ex.dispatch_one("attn_split", binds(y_split), node, split, &data, (split.attn_chunks as usize, heads, m));
        ex.dispatch_one("attn_combine", binds(y_split), node, split, &data, (heads, m, 1));
        let err = rel_err(&ex.download(y_split, m * heads * hd), &want64);
        assert!(err < 1e-5, "split-KV unified max, {} keys per chunk: relative error {err:e}", split.attn_chunk_keys);
        let recomputed = bytemuck::cast_slice::<f32, u32>(&ex.download(&ex.flags, 1))[0];
        if expect_fallback {
            assert_eq!(recomputed as usize, m * heads, "every row should have left the safe range");
        } else {
            assert_eq!(recomputed, 0, "no row should need the fallback");
        }
    }

    let y_online = &outputs[2];
    ex.dispatch_one("attn_online", binds(y_online), node, step, &data, (heads, m, 1));
    let err = rel_err(&ex.download(y_online, m * heads * hd), &want64);
    assert!(err < 1e-5, "online softmax: relative error {err:e}");
}

#[test]
fn split_kv_chunks_cover_the_keys_in_at_most_64_chunks() {
    for keys in [1, 15, 16, 17, 512, 1024, 1025, 4096, 8192, 8193, 100_000] {
        let (chunks, per_chunk) = split_kv(keys);
        assert!(chunks <= MAX_ATTN_CHUNKS && per_chunk >= 16 && per_chunk.is_power_of_two(), "{keys}: {chunks} x {per_chunk}");
        assert!(chunks * per_chunk >= keys && (chunks - 1) * per_chunk < keys, "{keys}: {chunks} x {per_chunk}");
    }
}

#[test]
fn unified_max_attention_matches_online_and_oracle() {
    check_attention(UnifiedMax::default(), 1.0, false);
}

#[test]
fn scores_outside_the_safe_range_fall_back_and_stay_right() {
    // phi far above every score: each e^(s - phi) would underflow to 0, so every row is
    // flagged and recomputed by the synchronised kernel.
    check_attention(UnifiedMax { phi: 1000.0, lo: -60.0, hi: 60.0 }, 1.0, true);
}

#[test]
fn fused_and_chunked_lowering_matches_the_plain_one() {
    let c = ModelConfig { num_layers: 2, ..config() };
    let g = llama::build(&c);
    let plan = Plan::new(&g).unwrap();
    let mut rng = Rng::new(9);
    let params: Vec<HostTensor> = g.params.iter().map(|p| HostTensor::f32(p.shape.clone(), random(&mut rng, p.numel(), 0.3))).collect();
    let make = |fuse: bool, binding_limit: Option<u64>| -> Option<WgpuExecutor> {
        let opts = ExecutorOptions { binding_limit, ..ExecutorOptions::new(1, c.max_context) };
        match WgpuExecutor::new(&g, &plan, params.clone(), opts, None, WeightPrecision::F32) {
            Ok(mut ex) => {
                ex.set_fusion(fuse);
                Some(ex)
            }
            Err(e @ Error::BackendUnavailable { .. }) => {
                eprintln!("skipped: no wgpu adapter on this machine ({e})");
                None
            }
            Err(e) => panic!("{e}"),
        }
    };
    // The reference runs unfused, with every weight in one binding. One fused executor has
    // every weight in one binding too (all fusions apply); the other has weights split into
    // 4 KiB chunks (as lavapipe's 128 MiB binding limit splits large ones), where the GEMV
    // norm and SwiGLU fusions give way for the chunked weights.
    let (Some(mut fused), Some(mut chunked), Some(mut plain)) = (make(true, None), make(true, Some(4096)), make(false, None)) else {
        return;
    };
    assert!(chunked.params.iter().any(|p| p.chunks.len() > 1) && plain.params.iter().all(|p| p.chunks.len() == 1));
    let prompt: Vec<u32> = (0..10).map(|i| i * 29 % 300).collect();
    let positions: Vec<usize> = (0..10).collect();
    let seqs = vec![0; 10];
    let mut steps = vec![(prompt.clone(), positions.clone(), seqs.clone(), vec![9usize])];
    for p in 10..13 {
        steps.push((vec![p as u32], vec![p], vec![0], vec![0]));
    }
    for (tokens, positions, seqs, out_rows) in &steps {
        let input = StepInput { tokens, positions, seqs, out_rows };
        let want: Vec<f64> = plain.step(&input).unwrap().iter().map(|&v| v as f64).collect();
        for (what, ex) in [("fused", &mut fused), ("fused + chunked", &mut chunked)] {
            let err = rel_err(&ex.step(&input).unwrap(), &want);
            assert!(err <= 1e-5, "{what} vs plain at m={}: relative error {err:e}", tokens.len());
        }
    }
    // The fusions took effect on the last (decode, GEMV) step: residual adds, KV writes,
    // every RMSNorm, SwiGLU and RoPE ran inside other nodes; with chunked weights norms still ran.
    let folded = |ex: &WgpuExecutor, op: &str| ex.last_step_records().iter().filter(|r| r.op == op).all(|r| r.implementation == "fused");
    for op in ["add", "rms_norm", "swiglu", "rope"] {
        assert!(folded(&fused, op), "{op} not fused: {:?}", fused.last_step_records());
    }
    assert!(folded(&chunked, "add") && !folded(&chunked, "rms_norm"));
    assert!(plain.last_step_records().iter().all(|r| r.implementation != "fused"));
}
