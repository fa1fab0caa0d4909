//! Every WGSL kernel against the CPU oracle on fresh random inputs, on whatever adapter
//! this machine has (Mesa's lavapipe in CI), with each lane-group reduction the adapter
//! allows (whole lowered steps are tested in `engine/tests.rs`).
//! Without an adapter they skip with the reason printed (and fail under FDPP_REQUIRE_GPU=1).

use super::kernels::{Binds, Dispatch, Kernels, NodeUniform, Shared, StepUniform, flat_gemm_kernel, grid};
use super::shaders::{QUANTIZED, Storage};
use super::*;
use crate::backend::cpu::kernels as cpu;
use crate::backend::{KvPrecision, WeightPrecision};
use crate::compare::rel_error;
use crate::lower::kernel::UnifiedMax;
use crate::model::ModelConfig;
use crate::sampling::Rng;
use crate::tensor::{FileType, HostTensor};

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
        rope_scaling: Default::default(),
        biases: Default::default(),
        notes: vec![],
    }
}

/// Rows of step data the rig holds.
const CAP: usize = 256;
/// The attention flags of the rig start here.
const FLAGS: usize = 1;
/// Attention rows and heads the rig's partials and flags hold.
const ATTN_ROWS: usize = 4;
const ATTN_HEADS: usize = 16;

/// The kernels and shared buffers, without a model.
struct Rig {
    kernels: Kernels,
    shared: Shared,
}

impl Rig {
    /// On this machine's adapter; `reduction` replaces the adapter's own lane-group
    /// reduction (`Some(None)`: the workgroup one).
    fn new(precision: WeightPrecision, kv: KvPrecision, reduction: Option<Option<u32>>) -> Option<Rig> {
        Rig::build(precision, kv, reduction, &[])
    }

    /// As `new`, with the kernels that read weights also compiled for each of `quantized`.
    fn build(precision: WeightPrecision, kv: KvPrecision, reduction: Option<Option<u32>>, quantized: &[FileType]) -> Option<Rig> {
        let mut ctx = GpuContext::new(None, precision, kv).map_err(crate::testing::skip_unavailable).ok()?;
        if let Some(r) = reduction {
            ctx.subgroup_size = r;
        }
        let scratch = (ATTN_ROWS * ATTN_HEADS * wgsl::MAX_ATTN_CHUNKS * (wgsl::MAX_HEAD_DIM + 1) * 4) as u64;
        let shared = Shared::new(&ctx, CAP, scratch, FLAGS + ATTN_ROWS * ATTN_HEADS);
        Some(Rig { kernels: Kernels::new(ctx, quantized).unwrap(), shared })
    }

    /// f32 weights and an f16 KV cache; `None` (skipped with the reason) where the adapter
    /// has no SHADER_F16.
    fn f16_kv() -> Option<Rig> {
        let rig = Rig::new(WeightPrecision::F32, KvPrecision::Auto, None)?;
        if !rig.ctx().f16_kv {
            crate::testing::skip(crate::testing::Requirement::Gpu, &format!("{} has no SHADER_F16", rig.ctx().info.name));
            return None;
        }
        Some(rig)
    }

    fn ctx(&self) -> &GpuContext {
        &self.kernels.ctx
    }

    /// Whether a test cannot run `what` on cooperative matrices here: the device has none
    /// (`device::matrix_units` says why) or lacks `unmet`, the test's own further
    /// requirement. Then the test is skipped with the reason (a failure under
    /// FDPP_REQUIRE_COOPERATIVE_MATRIX).
    fn lacks_matrix_units(&self, what: &str, unmet: Option<&str>) -> bool {
        let ctx = self.ctx();
        let why = match (ctx.cooperative_matrix, unmet) {
            (true, None) => return false,
            (true, Some(unmet)) => unmet.to_string(),
            (false, _) => {
                let adapter = device::adapters().into_iter().find(|a| a.get_info() == ctx.info);
                adapter.map_or(Ok(()), |a| device::matrix_units(&a, ctx.f16_weights)).err().unwrap_or_default()
            }
        };
        let why = format!("{} runs no {what} on cooperative matrices: {why}", ctx.info.name);
        crate::testing::skip(crate::testing::Requirement::CooperativeMatrix, &why);
        true
    }

    fn upload(&self, data: &[f32]) -> wgpu::Buffer {
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        // Whole vec4s, as the kernels read activations.
        let mut padded = data.to_vec();
        padded.resize(data.len().next_multiple_of(4).max(4), 0.0);
        self.ctx().device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(&padded),
            usage,
        })
    }

    fn dispatch(&self, kernel: &'static str, binds: Binds, node: NodeUniform, step: StepUniform, data: &[u32], g: [u32; 3]) {
        self.dispatch_on(kernel, Storage::Float, binds, node, step, data, g)
    }

    /// As `dispatch`, with the weights stored as `storage`.
    #[allow(clippy::too_many_arguments)]
    fn dispatch_on(
        &self,
        kernel: &'static str,
        storage: Storage,
        binds: Binds,
        node: NodeUniform,
        step: StepUniform,
        data: &[u32],
        g: [u32; 3],
    ) {
        let (ubuf, _) = self.kernels.node_uniforms(&[node]);
        self.ctx().queue.write_buffer(&self.shared.step_uniform, 0, bytemuck::bytes_of(&step));
        let mut sd = vec![0u32; 4 * CAP];
        sd[..data.len()].copy_from_slice(data);
        self.ctx().queue.write_buffer(&self.shared.step_data, 0, bytemuck::cast_slice(&sd));
        let group = self.kernels.bind_group(&self.shared, &ubuf, 0, binds);
        let mut enc = self.ctx().device.create_command_encoder(&Default::default());
        self.kernels.encode(&mut enc.begin_compute_pass(&Default::default()), &[Dispatch { kernel, storage, group: &group, grid: g }]);
        self.ctx().queue.submit([enc.finish()]);
    }

    /// A K or V cache holding `data` as the device stores it: in whole 16-byte words (8
    /// values), as the decode attention reads them.
    fn upload_kv(&self, data: &[f32]) -> wgpu::Buffer {
        let mut padded = data.to_vec();
        padded.resize(data.len().next_multiple_of(8).max(8), 0.0);
        let t = HostTensor::f32(vec![padded.len()], padded).convert(self.ctx().kv_dtype());
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
        self.ctx().device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: None, contents: t.as_le_bytes(), usage })
    }

    /// `values` rounded to the KV cache's type, as the kernels read them back.
    fn stored(&self, values: &[f32]) -> Vec<f32> {
        HostTensor::f32(vec![values.len()], values.to_vec()).convert(self.ctx().kv_dtype()).into_f32()
    }

    /// The first `bytes` of `buf` (rounded up to whole words, which `buf` must hold).
    fn download_bytes(&self, buf: &wgpu::Buffer, bytes: usize) -> Vec<u8> {
        let size = bytes.next_multiple_of(4) as u64;
        let staging = self.ctx().device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.ctx().device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buf, 0, &staging, 0, size);
        self.ctx().queue.submit([enc.finish()]);
        let mut out = read_buffer(self.ctx(), &staging, size as usize, None).unwrap();
        out.truncate(bytes);
        out
    }

    fn download(&self, buf: &wgpu::Buffer, len: usize) -> Vec<f32> {
        bytemuck::pod_collect_to_vec(&self.download_bytes(buf, len * 4))
    }

    /// `len` values of a K or V cache, in f32.
    fn download_kv(&self, buf: &wgpu::Buffer, len: usize) -> Vec<f32> {
        let bytes = self.download_bytes(buf, len * self.ctx().kv_dtype().size());
        match self.ctx().kv_dtype() {
            DType::F16 => bytemuck::pod_collect_to_vec::<u8, half::f16>(&bytes).iter().map(|h| h.to_f32()).collect(),
            _ => bytemuck::pod_collect_to_vec(&bytes),
        }
    }

    fn clear_flags(&self) {
        let mut enc = self.ctx().device.create_command_encoder(&Default::default());
        enc.clear_buffer(&self.shared.flags, 0, None);
        self.ctx().queue.submit([enc.finish()]);
    }

    fn tolerance(&self) -> f64 {
        if self.ctx().f16_weights { 2e-2 } else { 1e-5 }
    }
}

fn random(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| (rng.next_f32() * 2.0 - 1.0) * scale).collect()
}

const M_GRID: [usize; 11] = [1, 2, 3, 7, 8, 9, 16, 33, 64, 65, 200];

fn check_linear(rig: &Rig) {
    let mut rng = Rng::new(1);
    // K = 1100 is long enough for the eight-step GEMV walk.
    for &(n, k) in &[(37usize, 19usize), (70, 33), (129, 100), (21, 1100)] {
        let w = random(&mut rng, n * k, 1.0);
        let wbuf = rig.ctx().upload_f32_weights("w", &w);
        for &m in &M_GRID {
            let x = random(&mut rng, m * k, 1.0);
            // Against the unrounded weights: f16 storage is inside the tolerance.
            let want: Vec<f64> = (0..m * n).map(|o| (0..k).map(|p| x[(o / n) * k + p] as f64 * w[(o % n) * k + p] as f64).sum()).collect();
            let xbuf = rig.upload(&x);
            // Every flat GEMM tiling.
            let mut run: Vec<(&str, [u32; 3])> = wgsl::flat_tilings()
                .into_iter()
                .map(|t| (flat_gemm_kernel(t, false).unwrap(), grid(n.div_ceil(t.tile.n), m.div_ceil(t.tile.m), 1)))
                .collect();
            run.push(("gemm", grid(n.div_ceil(wgsl::GM), m.div_ceil(wgsl::GM), 1)));
            if m <= wgsl::GEMV_MAX_M {
                run.push(("gemv", grid(n.div_ceil(2 * wgsl::GV_GROUPS), 1, 1)));
                run.push(("gemv_split_k", grid(n.div_ceil(2 * wgsl::GV_GROUPS), 1, 1)));
            }
            for (kernel, g) in run {
                let ybuf = rig.upload(&vec![f32::NAN; m * n]);
                let node = NodeUniform { n: n as u32, k: k as u32, ldy: n as u32, ..Default::default() };
                let binds = Binds { x: Some(&xbuf), w: Some(&wbuf), y: Some(&ybuf), ..Default::default() };
                rig.dispatch(kernel, binds, node, StepUniform::new(m, 0, CAP, None), &[], g);
                let what = format!("{kernel} m={m} n={n} k={k} f16={} reduction={:?}", rig.ctx().f16_weights, rig.ctx().subgroup_size);
                let err = rel_error(&rig.download(&ybuf, m * n), &want, &what);
                assert!(err <= rig.tolerance(), "{what}: relative error {err:e}");
            }
        }
    }
}

#[test]
fn linear_kernels_match_the_oracle_f32() {
    if let Some(rig) = Rig::new(WeightPrecision::F32, KvPrecision::F32, None) {
        check_linear(&rig);
    }
}

#[test]
fn linear_kernels_match_the_oracle_f16() {
    let Some(rig) = Rig::new(WeightPrecision::Auto, KvPrecision::F32, None) else { return };
    if !rig.ctx().f16_weights {
        crate::testing::skip(crate::testing::Requirement::Gpu, &format!("{} has no SHADER_F16", rig.ctx().info.name));
        return;
    }
    check_linear(&rig);
}

/// `rows` rows of `cols` random values as `ty` stores them (ggml's blocks): random value
/// bits, scales of either sign, Q4_1's mins too.
fn random_blocks(rng: &mut Rng, ty: FileType, rows: usize, cols: usize) -> Vec<u8> {
    let (per_block, block_bytes) = ty.block();
    let mut out = Vec::with_capacity(ty.bytes(rows * cols));
    for _ in 0..rows * cols / per_block {
        let start = out.len();
        out.extend(half::f16::from_f32((rng.next_f32() * 2.0 - 1.0) * 0.1).to_le_bytes());
        if ty == FileType::Q4_1 {
            out.extend(half::f16::from_f32(rng.next_f32() - 0.5).to_le_bytes());
        }
        while out.len() < start + block_bytes {
            out.push(rng.next_u64() as u8);
        }
    }
    out
}

/// `random_blocks` of `ty` uploaded as the kernels read them, and the values the CPU
/// dequantizes from them.
fn random_quantized(ctx: &GpuContext, rng: &mut Rng, ty: FileType, rows: usize, cols: usize) -> (Vec<f32>, wgpu::Buffer) {
    let file = random_blocks(rng, ty, rows, cols);
    let crate::tensor::TensorData::F32(w) = crate::model::dequant::decode(ty, &file, DType::F32) else { unreachable!("asked for f32") };
    (w, ctx.upload_weights("w", &super::weights::repack(ty, &file, rows, cols), 4))
}

/// Every linear kernel and the embedding gather on weights kept in each block-quantized
/// type, against the f64 product with the CPU's dequantized values (which the kernels must
/// reproduce exactly: only the order of the sums differs). The GEMV also with its RMSNorm
/// prologue.
#[test]
fn quantized_weights_match_the_oracle() {
    let Some(rig) = Rig::build(WeightPrecision::F32, KvPrecision::F32, None, &QUANTIZED) else { return };
    let mut rng = Rng::new(11);
    for ty in QUANTIZED {
        let storage = Storage::Quantized(ty);
        // A lane's rounds of four words end masked after one to three (K = 320 and 576,
        // SmolLM2's, with 4-bit blocks: two and three); K = 1120 is 35 blocks, odd for the
        // split halves.
        for &(n, k) in &[(37usize, 32usize), (70, 96), (33, 320), (9, 576), (21, 1120)] {
            let (w, wbuf) = random_quantized(rig.ctx(), &mut rng, ty, n, k);
            let gain = random(&mut rng, k, 1.0);
            let gain_buf = rig.upload(&gain);
            for &m in &[1usize, 2, 3, 5, 8, 9, 33, 70] {
                let x = random(&mut rng, m * k, 1.0);
                let dot = |row: &[f32], o: usize| -> f64 { (0..k).map(|p| row[p] as f64 * w[o * k + p] as f64).sum() };
                let want: Vec<f64> = (0..m * n).map(|o| dot(&x[(o / n) * k..(o / n + 1) * k], o % n)).collect();
                let normed: Vec<f32> = x
                    .chunks_exact(k)
                    .flat_map(|r| {
                        let inv = 1.0 / ((r.iter().map(|v| (v * v) as f64).sum::<f64>() / k as f64 + 1e-5).sqrt() as f32);
                        r.iter().zip(&gain).map(move |(v, g)| v * inv * g)
                    })
                    .collect();
                let want_norm: Vec<f64> = (0..m * n).map(|o| dot(&normed[(o / n) * k..(o / n + 1) * k], o % n)).collect();
                let xbuf = rig.upload(&x);
                let mut run: Vec<(&str, [u32; 3], bool)> = wgsl::flat_tilings()
                    .into_iter()
                    .map(|t| (flat_gemm_kernel(t, false).unwrap(), grid(n.div_ceil(t.tile.n), m.div_ceil(t.tile.m), 1), false))
                    .collect();
                run.push(("gemm", grid(n.div_ceil(wgsl::GM), m.div_ceil(wgsl::GM), 1), false));
                if m <= wgsl::GEMV_MAX_M {
                    for kernel in ["gemv", "gemv_split_k"] {
                        for norm in [false, true] {
                            run.push((kernel, grid(n.div_ceil(2 * wgsl::GV_GROUPS), 1, 1), norm));
                        }
                    }
                }
                for (kernel, g, norm) in run {
                    let ybuf = rig.upload(&vec![f32::NAN; m * n]);
                    let mode = if norm { wgsl::MODE_NORM } else { 0 };
                    let node = NodeUniform { n: n as u32, k: k as u32, ldy: n as u32, mode, eps: 1e-5, ..Default::default() };
                    let x2 = norm.then_some(&gain_buf);
                    let binds = Binds { x: Some(&xbuf), x2, w: Some(&wbuf), y: Some(&ybuf), ..Default::default() };
                    rig.dispatch_on(kernel, storage, binds, node, StepUniform::new(m, 0, CAP, None), &[], g);
                    let what = format!("{kernel} {ty} m={m} n={n} k={k} norm={norm}");
                    let err = rel_error(&rig.download(&ybuf, m * n), if norm { &want_norm } else { &want }, &what);
                    assert!(err <= 1e-5, "{what}: relative error {err:e}");
                }
            }
            // The embedding gather: rows of the table picked by token id, exactly the CPU's values.
            let tokens: Vec<u32> = (0..9u32).map(|i| (i * 7 + 3) % n as u32).collect();
            let ybuf = rig.upload(&vec![f32::NAN; tokens.len() * k]);
            let node = NodeUniform { n: n as u32, k: k as u32, ..Default::default() };
            let binds = Binds { w: Some(&wbuf), y: Some(&ybuf), ..Default::default() };
            let step = StepUniform::new(tokens.len(), 0, CAP, None);
            rig.dispatch_on("embedding", storage, binds, node, step, &tokens, grid(k.div_ceil(64), tokens.len(), 1));
            let want: Vec<f32> = tokens.iter().flat_map(|&t| w[t as usize * k..(t as usize + 1) * k].to_vec()).collect();
            assert_eq!(rel_error(&rig.download(&ybuf, tokens.len() * k), &want, "embedding"), 0.0, "embedding {ty} n={n} k={k}");
        }
    }
}

/// C on cooperative matrices (gemm_matrix.wgsl, gemm_matrix_direct.wgsl) and B on them
/// (flat_matrix.wgsl, f16 weights only), where the adapter has them: f16 and every
/// block-quantized storage, K past, below and between their steps (and not a multiple of
/// 4), M and N across tile edges, the bias and residual epilogue into a wider output.
#[test]
fn matrix_gemm_matches_the_oracle() {
    let Some(rig) = Rig::build(WeightPrecision::Auto, KvPrecision::F32, None, &QUANTIZED) else { return };
    if rig.lacks_matrix_units("GEMM", None) {
        return;
    }
    let ctx = rig.ctx();
    let mut rng = Rng::new(12);
    // K = 48: the direct kernel's last step holds one 16-deep operand of the two.
    let shapes = [(37usize, 19usize), (70, 33), (129, 100), (70, 48), (300, 576), (21, 1120), (256, 4096)];
    for (n, k) in shapes {
        // Float weights, and each quantized type where K is whole blocks.
        let mut storages = vec![(Storage::Float, None)];
        if k % 32 == 0 {
            storages.extend(QUANTIZED.iter().map(|&t| (Storage::Quantized(t), Some(t))));
        }
        for (storage, ty) in storages {
            let (w, wbuf) = match ty {
                None => {
                    let w = random(&mut rng, n * k, 1.0);
                    let buf = ctx.upload_f32_weights("w", &w);
                    (w, buf)
                }
                Some(ty) => random_quantized(ctx, &mut rng, ty, n, k),
            };
            for m in [1usize, 2, 15, 16, 17, 63, 64, 65, 200] {
                let x = random(&mut rng, m * k, 1.0);
                let xbuf = rig.upload(&x);
                let dot = |o: usize| -> f64 { (0..k).map(|p| x[(o / n) * k + p] as f64 * w[(o % n) * k + p] as f64).sum() };
                // Plain; then with the bias and the residual, into columns 3 .. 3 + n of rows n + 5 wide.
                for epilogue in [false, true] {
                    let (ldy, offset) = if epilogue { (n + 5, 3) } else { (n, 0) };
                    let bias = random(&mut rng, ldy, 1.0);
                    let residual = random(&mut rng, m * ldy, 1.0);
                    let (bias_buf, res_buf) = (rig.upload(&bias), rig.upload(&residual));
                    let want: Vec<f64> = (0..m * n)
                        .map(|o| {
                            let (r, c) = (o / n, offset + o % n);
                            dot(o) + if epilogue { (bias[c] + residual[r * ldy + c]) as f64 } else { 0.0 }
                        })
                        .collect();
                    let mode = if epilogue { wgsl::MODE_RESIDUAL } else { 0 };
                    let node =
                        NodeUniform { n: n as u32, k: k as u32, ldy: ldy as u32, n_offset: offset as u32, mode, ..Default::default() };
                    let binds = if epilogue {
                        Binds { x: Some(&xbuf), x2: Some(&res_buf), w: Some(&wbuf), bias: Some(&bias_buf), ..Default::default() }
                    } else {
                        Binds { x: Some(&xbuf), w: Some(&wbuf), ..Default::default() }
                    };
                    // The staged kernel for every storage; f16 weights in whole 16-deep operands also read as they lie.
                    // B on matrices (flat_matrix) too, with its own grid.
                    let gemm = grid(n.div_ceil(wgsl::MATRIX_TILE_N), m.div_ceil(wgsl::MATRIX_TILE_M), 1);
                    let mut kernels = vec![(if epilogue { "gemm_matrix_bias" } else { "gemm_matrix" }, gemm)];
                    if storage == Storage::Float && k % 16 == 0 {
                        kernels.push((if epilogue { "gemm_matrix_direct_bias" } else { "gemm_matrix_direct" }, gemm));
                        let flat = grid(n.div_ceil(wgsl::FLAT_MATRIX_N), m.div_ceil(wgsl::FLAT_MATRIX_ROWS), 1);
                        kernels.push((if epilogue { "flat_matrix_bias" } else { "flat_matrix" }, flat));
                    }
                    for (kernel, g) in kernels {
                        let ybuf = rig.upload(&vec![f32::NAN; m * ldy]);
                        let binds = Binds { y: Some(&ybuf), ..binds };
                        rig.dispatch_on(kernel, storage, binds, node, StepUniform::new(m, 0, CAP, None), &[], g);
                        let y = rig.download(&ybuf, m * ldy);
                        let got: Vec<f32> = (0..m * n).map(|o| y[(o / n) * ldy + offset + o % n]).collect();
                        let what = format!("{kernel} {storage:?} m={m} n={n} k={k}");
                        let err = rel_error(&got, &want, &what);
                        // x is rounded to f16 once; the sums stay f32.
                        assert!(err <= 5e-3, "{what}: relative error {err:e}");
                        if epilogue {
                            // Columns outside the chunk are left as they were.
                            let untouched = y.chunks(ldy).all(|row| row[..offset].iter().chain(&row[offset + n..]).all(|v| v.is_nan()));
                            assert!(untouched, "{what}: wrote outside its columns");
                        }
                    }
                }
            }
        }
    }
}

/// The lane-group sums the GEMV and flat GEMM end with, on every reduction this adapter
/// can run: its own (subgroup shuffles where it has subgroups; lavapipe's are 8 lanes
/// wide, so shuffles then workgroup memory) and the workgroup-only one.
#[test]
fn every_reduction_the_adapter_offers_gives_the_same_products() {
    let Some(own) = Rig::new(WeightPrecision::F32, KvPrecision::F32, None) else { return };
    let ctx = own.ctx();
    eprintln!(
        "{}: subgroups of {}..={} lanes, reduction {:?}",
        ctx.info.name, ctx.info.subgroup_min_size, ctx.info.subgroup_max_size, ctx.subgroup_size
    );
    // Where the adapter has SUBGROUP with one fixed size (lavapipe: 8), that path runs.
    if ctx.adapter_features.contains(wgpu::Features::SUBGROUP) && ctx.info.subgroup_min_size == ctx.info.subgroup_max_size {
        assert_eq!(ctx.subgroup_size, Some(ctx.info.subgroup_min_size), "the subgroup reduction was not chosen");
    }
    check_linear(&own);
    drop(own);
    if let Some(workgroup) = Rig::new(WeightPrecision::F32, KvPrecision::F32, Some(None)) {
        check_linear(&workgroup);
    }
}

#[test]
fn row_kernels_match_the_oracle() {
    let Some(rig) = Rig::new(WeightPrecision::F32, KvPrecision::F32, None) else { return };
    let mut rng = Rng::new(2);
    let c = config();
    let (h, m) = (c.hidden_size, 9usize);
    let x = random(&mut rng, m * h, 2.0);
    let x2 = random(&mut rng, m * h, 2.0);
    let (xb, x2b) = (rig.upload(&x), rig.upload(&x2));
    let g = grid(h.div_ceil(64), m, 1);
    let step = StepUniform::new(m, 0, CAP, None);

    // rms_norm: the model's width, one of several vec4s per invocation, one not of whole vec4s.
    for h in [h, 4100, 75] {
        let x = random(&mut rng, m * h, 2.0);
        let xb = rig.upload(&x);
        let gw = random(&mut rng, h, 1.0);
        let gb = rig.ctx().upload_f32_weights("norm", &gw);
        let yb = rig.upload(&vec![f32::NAN; m * h]);
        let node = NodeUniform { k: h as u32, eps: 1e-5, ..Default::default() };
        rig.dispatch(
            "rms_norm",
            Binds { x: Some(&xb), w: Some(&gb), y: Some(&yb), ..Default::default() },
            node,
            step,
            &[],
            [1, m as u32, 1],
        );
        let mut want = vec![0.0; m * h];
        cpu::rms_norm(&x, &gw, 1e-5, &mut want);
        assert!(rel_error(&rig.download(&yb, m * h), &want, "rms_norm") < 1e-5, "rms_norm, width {h}");
    }
    let yb = rig.upload(&vec![f32::NAN; m * h]);

    // add
    let node = NodeUniform { n: h as u32, ..Default::default() };
    rig.dispatch("add", Binds { x: Some(&xb), x2: Some(&x2b), y: Some(&yb), ..Default::default() }, node, step, &[], g);
    let want: Vec<f32> = x.iter().zip(&x2).map(|(a, b)| a + b).collect();
    assert!(rel_error(&rig.download(&yb, m * h), &want, "add") < 1e-6, "add");

    // swiglu over rows of [gate | up] (F = h / 2)
    let f = h / 2;
    let node = NodeUniform { n: f as u32, ..Default::default() };
    let ys = rig.upload(&vec![f32::NAN; m * f]);
    rig.dispatch("swiglu", Binds { x: Some(&xb), y: Some(&ys), ..Default::default() }, node, step, &[], grid(f.div_ceil(64), m, 1));
    let mut want = vec![0.0; m * f];
    cpu::silu_mul(&x, f, &mut want);
    assert!(rel_error(&rig.download(&ys, m * f), &want, "swiglu") < 1e-5, "swiglu");

    // rope over fused qkv rows at assorted positions, with the lowering's angle table
    let (heads, kvh, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
    let width = (heads + 2 * kvh) * hd;
    let qkv = random(&mut rng, m * width, 1.0);
    let positions: Vec<u32> = (0..m as u32).map(|i| i * 37 % 500).collect();
    let mut data = vec![0u32; CAP * 2];
    data[CAP..CAP + m].copy_from_slice(&positions);
    let table = crate::lower::rope::table(&c, c.max_context);
    let (qb, tb) = (rig.upload(&qkv), rig.upload(&table));
    let yr = rig.upload(&vec![f32::NAN; m * width]);
    let node = NodeUniform { n: width as u32, heads: heads as u32, kv_heads: kvh as u32, head_dim: hd as u32, ..Default::default() };
    rig.dispatch(
        "rope",
        Binds { x: Some(&qb), x2: Some(&tb), y: Some(&yr), ..Default::default() },
        node,
        step,
        &data,
        grid(width.div_ceil(64), m, 1),
    );
    let mut want = qkv.clone();
    for (i, row) in want.chunks_exact_mut(width).enumerate() {
        let p = positions[i] as usize;
        let angles = &table[p * hd..(p + 1) * hd];
        cpu::rope_row(row, heads, hd, angles);
        cpu::rope_row(&mut row[heads * hd..], kvh, hd, angles);
    }
    assert!(rel_error(&rig.download(&yr, m * width), &want, "rope") < 1e-6, "rope");

    // embedding gather and select_rows
    let vocab = 300;
    let table = random(&mut rng, vocab * h, 1.0);
    let tb = rig.ctx().upload_f32_weights("table", &table);
    let tokens: Vec<u32> = (0..m as u32).map(|i| (i * 97 + 5) % vocab as u32).collect();
    let node = NodeUniform { n: vocab as u32, k: h as u32, ..Default::default() };
    rig.dispatch("embedding", Binds { w: Some(&tb), y: Some(&yb), ..Default::default() }, node, step, &tokens, g);
    let want: Vec<f32> = tokens.iter().flat_map(|&t| table[t as usize * h..(t as usize + 1) * h].to_vec()).collect();
    assert_eq!(rel_error(&rig.download(&yb, m * h), &want, "embedding"), 0.0);
    let rows = [4u32, 0, 8];
    let mut data = vec![0u32; CAP * 4];
    data[3 * CAP..3 * CAP + 3].copy_from_slice(&rows);
    let node = NodeUniform { n: h as u32, rows: 1, ..Default::default() };
    rig.dispatch(
        "select_rows",
        Binds { x: Some(&xb), y: Some(&yb), ..Default::default() },
        node,
        StepUniform::new(m, 3, CAP, None),
        &data,
        grid(h.div_ceil(64), 3, 1),
    );
    let want: Vec<f32> = rows.iter().flat_map(|&r| x[r as usize * h..(r as usize + 1) * h].to_vec()).collect();
    assert_eq!(rel_error(&rig.download(&yb, 3 * h), &want, "select_rows"), 0.0);

    // argmax, with a tie resolved to the lower index
    let mut logits = random(&mut rng, 2 * 1000, 5.0);
    logits[1000 + 17] = 9.0;
    logits[1000 + 900] = 9.0;
    let lb = rig.upload(&logits);
    let node = NodeUniform { n: 1000, rows: 1, ..Default::default() };
    rig.dispatch("argmax", Binds { x: Some(&lb), ..Default::default() }, node, StepUniform::new(1, 2, CAP, None), &[], [1, 2, 1]);
    let flags: Vec<u32> = bytemuck::cast_slice(&rig.download(&rig.shared.flags, 3)).to_vec();
    assert_eq!(flags[1], crate::sampling::argmax(&logits[..1000]));
    assert_eq!(flags[2], 17);
}

/// (heads, KV heads, head dim) of an attention or KV-write case.
type Heads = (usize, usize, usize);

fn below(rng: &mut Rng, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

/// The heads the attention and KV-write kernels are tested on: the config's (grouped), plain
/// heads, head sizes off the kernels' four-dim steps, up to MAX_HEAD_DIM; then `random`
/// more (even head sizes, as RoPE needs).
fn head_grid(rng: &mut Rng, random: usize) -> Vec<Heads> {
    let mut grid = vec![(4, 2, 16), (2, 2, 64), (3, 3, 10), (6, 2, 36), (4, 1, 128), (1, 1, wgsl::MAX_HEAD_DIM)];
    for _ in 0..random {
        let kv_heads = 1 + below(rng, 4);
        grid.push((kv_heads * (1 + below(rng, 3)), kv_heads, 2 + 2 * below(rng, wgsl::MAX_HEAD_DIM / 2)));
    }
    grid
}

/// Decode attention: unified-max split-KV (with its fallback) and the online kernel, both
/// against the CPU's two-pass softmax over the values the KV cache holds (rounded to f16
/// where it is f16), on the head grid. `unified` sets phi and the safe range.
fn check_attention(rig: &Rig, unified: UnifiedMax, expect_fallback: bool) {
    let mut rng = Rng::new(3);
    let limits = BackendCaps::wgpu_builtin().attention.split_kv.unwrap();
    for (case, (heads, kvh, hd)) in head_grid(&mut rng, 3).into_iter().enumerate() {
        let (kv_dim, width) = (kvh * hd, (heads + 2 * kvh) * hd);
        // Four sequences (one token each, as in a batched decode step): first at positions
        // that need one to all of the chunks of 512 keys, then at random ones.
        let positions: Vec<usize> = if case == 0 {
            vec![0, 255, 300, 511]
        } else {
            let keys = 1 + below(&mut rng, 512);
            (0..ATTN_ROWS).map(|i| if i == 0 { keys - 1 } else { below(&mut rng, keys) }).collect()
        };
        let (m, max_ctx) = (positions.len(), positions.iter().max().unwrap() + 1);
        let kc = random(&mut rng, m * max_ctx * kv_dim, 1.0);
        let vc = random(&mut rng, m * max_ctx * kv_dim, 1.0);
        let qkv = random(&mut rng, m * width, 1.0);
        let (kb, vb, qb) = (rig.upload_kv(&kc), rig.upload_kv(&vc), rig.upload(&qkv));
        let (kc, vc) = (rig.stored(&kc), rig.stored(&vc));
        let mut data = vec![0u32; 4 * CAP];
        for i in 0..m {
            data[CAP + i] = positions[i] as u32;
            data[2 * CAP + i] = i as u32;
        }
        let scale = 1.0 / (hd as f32).sqrt();
        let mut want = vec![0.0f32; m * heads * hd];
        for i in 0..m {
            for h in 0..heads {
                let base = i * max_ctx * kv_dim;
                let q = &qkv[i * width + h * hd..i * width + (h + 1) * hd];
                let out = &mut want[(i * heads + h) * hd..(i * heads + h + 1) * hd];
                let head = cpu::KvHead { keys: &kc[base..], values: &vc[base..], kv_dim, offset: (h / (heads / kvh)) * hd };
                cpu::attend(q, head, positions[i] + 1, scale, out, &mut vec![]);
            }
        }
        let node = NodeUniform {
            heads: heads as u32,
            kv_heads: kvh as u32,
            head_dim: hd as u32,
            max_ctx: max_ctx as u32,
            flag_offset: FLAGS as u32,
            scale,
            phi: unified.phi,
            lo: unified.lo,
            hi: unified.hi,
            ..Default::default()
        };
        let binds = |y| Binds { x: Some(&qb), y: Some(y), kc: Some(&kb), vc: Some(&vb), ..Default::default() };
        // Chunks of one tile (16 keys; for 512 keys, 32 chunks) and of four (64 keys).
        let what = format!("{} KV, {heads} heads / {kvh} KV heads of {hd}, positions {positions:?}", rig.ctx().kv_dtype());
        let outputs: Vec<wgpu::Buffer> = (0..3).map(|_| rig.upload(&vec![f32::NAN; m * heads * hd])).collect();
        for (keys, y) in [wgsl::SPLIT_TILE, 64].into_iter().zip(&outputs) {
            let split = (max_ctx.div_ceil(keys), keys);
            assert!(split.0 <= limits.max_chunks);
            rig.clear_flags();
            let step = StepUniform::new(m, 0, CAP, Some(split));
            rig.dispatch("attn_split", binds(y), node, step, &data, grid(split.0, heads, m));
            rig.dispatch("attn_combine", binds(y), node, step, &data, grid(heads, m, 1));
            let what = format!("split-KV unified max, {} keys per chunk, {what}", split.1);
            let err = rel_error(&rig.download(y, m * heads * hd), &want, &what);
            assert!(err < 1e-5, "{what}: relative error {err:e}");
            let recomputed = bytemuck::cast_slice::<f32, u32>(&rig.download(&rig.shared.flags, 1))[0];
            if expect_fallback {
                assert_eq!(recomputed as usize, m * heads, "{what}: every row should have left the safe range");
            } else {
                assert_eq!(recomputed, 0, "{what}: no row should need the fallback");
            }
        }
        let y = &outputs[2];
        rig.dispatch("attn_online", binds(y), node, StepUniform::new(m, 0, CAP, None), &data, grid(heads, m, 1));
        let what = format!("online softmax, {what}");
        let err = rel_error(&rig.download(y, m * heads * hd), &want, &what);
        assert!(err < 1e-5, "{what}: relative error {err:e}");
    }
}

/// The prefill attention on cooperative matrices (attention_matrix.wgsl), where the adapter
/// has them and the cache is f16: head sizes from 16 to 128, grouped heads, prompts of 1 to
/// 40 tokens (partial row tiles) from position 0 and after a cached prefix, in the second
/// sequence of the cache, against the CPU's softmax over the values the cache holds.
#[test]
fn matrix_attention_matches_the_oracle() {
    let Some(rig) = Rig::new(WeightPrecision::Auto, KvPrecision::Auto, None) else { return };
    if rig.lacks_matrix_units("attention", (!rig.ctx().f16_kv).then_some("the KV cache is f32")) {
        return;
    }
    let mut rng = Rng::new(13);
    for (heads, kvh, hd) in [(4usize, 2usize, 64usize), (2, 2, 128), (3, 1, 16), (2, 1, 48)] {
        for (m, first) in [(1usize, 0usize), (5, 7), (16, 0), (17, 3), (40, 0), (40, 9)] {
            let (kv_dim, width, seq) = (kvh * hd, (heads + 2 * kvh) * hd, 1);
            // Two sequences' caches and the tile of rows the backend allocates past them.
            let max_ctx = first + m + 3;
            let rows = 2 * max_ctx + wgsl::MATRIX_ATTN_KEYS;
            let kc = random(&mut rng, rows * kv_dim, 1.0);
            let vc = random(&mut rng, rows * kv_dim, 1.0);
            let qkv = random(&mut rng, m * width, 2.0);
            let (kb, vb, qb) = (rig.upload_kv(&kc), rig.upload_kv(&vc), rig.upload(&qkv));
            let (kc, vc) = (rig.stored(&kc), rig.stored(&vc));
            let mut data = vec![0u32; 4 * CAP];
            for i in 0..m {
                data[CAP + i] = (first + i) as u32;
                data[2 * CAP + i] = seq as u32;
            }
            let scale = 1.0 / (hd as f32).sqrt();
            let mut want = vec![0.0f32; m * heads * hd];
            let base = seq * max_ctx * kv_dim;
            for i in 0..m {
                for h in 0..heads {
                    let q = &qkv[i * width + h * hd..i * width + (h + 1) * hd];
                    let out = &mut want[(i * heads + h) * hd..(i * heads + h + 1) * hd];
                    let head = cpu::KvHead { keys: &kc[base..], values: &vc[base..], kv_dim, offset: (h / (heads / kvh)) * hd };
                    cpu::attend(q, head, first + i + 1, scale, out, &mut vec![]);
                }
            }
            let node = NodeUniform {
                heads: heads as u32,
                kv_heads: kvh as u32,
                head_dim: hd as u32,
                max_ctx: max_ctx as u32,
                scale,
                ..Default::default()
            };
            let y = rig.upload(&vec![f32::NAN; m * heads * hd]);
            let binds = Binds { x: Some(&qb), y: Some(&y), kc: Some(&kb), vc: Some(&vb), ..Default::default() };
            let g = grid(m.div_ceil(wgsl::MATRIX_ATTN_ROWS), heads, 1);
            rig.dispatch("attn_matrix", binds, node, StepUniform::new(m, 0, CAP, None), &data, g);
            let what = format!("attn_matrix, {heads} heads / {kvh} KV heads of {hd}, {m} rows from position {first}");
            let err = rel_error(&rig.download(&y, m * heads * hd), &want, &what);
            // Q and P are rounded to f16 once; scores and sums stay f32.
            assert!(err < 5e-3, "{what}: relative error {err:e}");
        }
    }
}

/// Each way the matrix kernels load and store cooperative matrices (shaders/matrix_probe.wgsl:
/// B row-major and column-major from storage, read-only and read-write, C from workgroup
/// memory, A from storage), read back exactly through products with the identity, where the
/// adapter has them: a failure names the layout the driver gets wrong.
#[test]
fn cooperative_matrix_layouts_read_back() {
    use wgpu::util::DeviceExt;
    let Some(rig) = Rig::new(WeightPrecision::Auto, KvPrecision::Auto, None) else { return };
    if rig.lacks_matrix_units("kernel", None) {
        return;
    }
    let ctx = rig.ctx();
    let device = &ctx.device;
    // Small integers: every product with the identity and every sum is exact.
    let src: Vec<half::f16> = (0..512).map(|e| half::f16::from_f32((e % 97) as f32 - 40.0)).collect();
    let input = |label| {
        let usage = wgpu::BufferUsages::STORAGE;
        device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some(label), contents: bytemuck::cast_slice(&src), usage })
    };
    let (read_only, read_write) = (input("src"), input("src_rw"));
    let dst = rig.upload(&vec![f32::NAN; 1024]);
    let compiling = super::kernels::matrix_compile_lock();
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("matrix_probe"),
        source: wgpu::ShaderSource::Wgsl(include_str!("../../../shaders/matrix_probe.wgsl").into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("matrix_probe"),
        layout: None,
        module: &module,
        entry_point: Some("matrix_probe"),
        compilation_options: Default::default(),
        cache: None,
    });
    drop(compiling);
    let entries: Vec<wgpu::BindGroupEntry> = [&read_only, &read_write, &dst]
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() })
        .collect();
    let group =
        device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &pipeline.get_bind_group_layout(0), entries: &entries });
    let mut enc = device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(1, 1, 1);
    }
    ctx.queue.submit([enc.finish()]);
    let got = rig.download(&dst, 1024);
    let at = |r: usize, c: usize| src[r * 32 + c].to_f32();
    let probes = [
        "B row-major from read-only storage",
        "B column-major from read-only storage",
        "B row-major from read-write storage",
        "C row-major from workgroup memory, plus A row-major from storage",
    ];
    for (p, what) in probes.iter().enumerate() {
        for e in 0..256 {
            let (r, c) = (e / 16, e % 16);
            let want = match p {
                1 => at(c, r),
                3 => (r * 100 + c) as f32 + at(r, c),
                _ => at(r, c),
            };
            assert_eq!(got[p * 256 + e], want, "{what}: element ({r}, {c})");
        }
    }
}

/// With the adapter's own lane-group sums (attn_split's score over a key's lanes), and with
/// the workgroup-memory ones that devices without subgroups use.
#[test]
fn unified_max_attention_matches_online_and_oracle() {
    for reduction in [None, Some(None)] {
        if let Some(rig) = Rig::new(WeightPrecision::F32, KvPrecision::F32, reduction) {
            check_attention(&rig, UnifiedMax::default(), false);
        }
    }
}

#[test]
fn scores_outside_the_safe_range_fall_back_and_stay_right() {
    // phi far above every score: each e^(s - phi) would underflow to 0, so every row is
    // flagged and recomputed by the synchronised kernel.
    if let Some(rig) = Rig::new(WeightPrecision::F32, KvPrecision::F32, None) {
        check_attention(&rig, UnifiedMax { phi: 1000.0, lo: -60.0, hi: 60.0 }, true);
    }
}

#[test]
fn attention_over_an_f16_kv_cache_matches_the_oracle() {
    if let Some(rig) = Rig::f16_kv() {
        check_attention(&rig, UnifiedMax::default(), false);
        check_attention(&rig, UnifiedMax { phi: 1000.0, lo: -60.0, hi: 60.0 }, true);
    }
}

/// The three kernels that write the KV cache: `rope` with the write fused (mode 1),
/// `kv_write`, and the QKV GEMV's RoPE epilogue, on the head grid with 1 to GEMV_MAX_M
/// tokens of several sequences. Each kernel's rows and both whole caches (slots it must not
/// touch stay zero) against the CPU's, rounded to the cache's type. Where that is f16, a
/// value the two sides compute a hair apart may round to neighbouring halves: one f16 step
/// of the largest value is allowed.
fn check_kv_writes(rig: &Rig) {
    let mut rng = Rng::new(4);
    let (max_ctx, seqs, hidden) = (64usize, 3usize, 48usize);
    let kv_tol = |f32_tol: f64| if rig.ctx().f16_kv { 2f64.powi(-10) } else { f32_tol };
    for (heads, kvh, hd) in head_grid(&mut rng, 3) {
        let c = ModelConfig { num_heads: heads, num_kv_heads: kvh, head_dim: hd, ..config() };
        let (q_dim, kv_dim) = (heads * hd, kvh * hd);
        let width = q_dim + 2 * kv_dim;
        let table = crate::lower::rope::table(&c, max_ctx);
        let tb = rig.upload(&table);
        let w = random(&mut rng, width * hidden, 1.0);
        let wb = rig.ctx().upload_f32_weights("qkv", &w);
        for m in [1usize, 3, wgsl::GEMV_MAX_M] {
            // Distinct positions (23 is prime to max_ctx), so no two tokens share a slot.
            let offset = below(&mut rng, max_ctx);
            let positions: Vec<usize> = (0..m).map(|i| (i * 23 + offset) % max_ctx).collect();
            let seq: Vec<usize> = (0..m).map(|_| below(&mut rng, seqs)).collect();
            let mut data = vec![0u32; 4 * CAP];
            for i in 0..m {
                data[CAP + i] = positions[i] as u32;
                data[2 * CAP + i] = seq[i] as u32;
            }
            let rotated = |rows: &[f32]| {
                let mut out = rows.to_vec();
                for (i, row) in out.chunks_exact_mut(width).enumerate() {
                    let angles = &table[positions[i] * hd..(positions[i] + 1) * hd];
                    cpu::rope_row(row, heads, hd, angles);
                    cpu::rope_row(&mut row[q_dim..], kvh, hd, angles);
                }
                out
            };
            let caches = |rows: &[f32]| {
                let (mut k, mut v) = (vec![0.0; seqs * max_ctx * kv_dim], vec![0.0; seqs * max_ctx * kv_dim]);
                for (i, row) in rows.chunks_exact(width).enumerate() {
                    let slot = (seq[i] * max_ctx + positions[i]) * kv_dim;
                    k[slot..slot + kv_dim].copy_from_slice(&row[q_dim..q_dim + kv_dim]);
                    v[slot..slot + kv_dim].copy_from_slice(&row[q_dim + kv_dim..]);
                }
                (rig.stored(&k), rig.stored(&v))
            };
            let qkv = random(&mut rng, m * width, 1.0);
            let x = random(&mut rng, m * hidden, 1.0);
            let product: Vec<f32> = (0..m * width)
                .map(|o| (0..hidden).map(|p| x[(o / width) * hidden + p] as f64 * w[(o % width) * hidden + p] as f64).sum::<f64>() as f32)
                .collect();
            let (qb, xb) = (rig.upload(&qkv), rig.upload(&x));
            let heads_node = NodeUniform {
                n: width as u32,
                heads: heads as u32,
                kv_heads: kvh as u32,
                head_dim: hd as u32,
                max_ctx: max_ctx as u32,
                ..Default::default()
            };
            let gemv_node = NodeUniform { k: hidden as u32, ldy: width as u32, mode: wgsl::MODE_ROPE, ..heads_node };
            // Kernel, node, inputs, grid, the rows it writes (`None`: only the caches), tolerance.
            let runs = [
                (
                    "rope",
                    NodeUniform { mode: 1, ..heads_node },
                    Binds { x: Some(&qb), x2: Some(&tb), ..Default::default() },
                    grid(width.div_ceil(64), m, 1),
                    Some(rotated(&qkv)),
                    1e-6,
                ),
                ("kv_write", heads_node, Binds { x: Some(&qb), ..Default::default() }, grid(kv_dim.div_ceil(64), m, 1), None, 0.0),
                (
                    "gemv",
                    gemv_node,
                    Binds { x: Some(&xb), w: Some(&wb), scratch: Some(&tb), ..Default::default() },
                    grid((width / 2).div_ceil(wgsl::GV_GROUPS), 1, 1),
                    Some(rotated(&product)),
                    1e-5,
                ),
            ];
            for (kernel, node, binds, g, rows, tol) in runs {
                let what = format!("{kernel}, {} KV, {heads} heads / {kvh} KV heads of {hd}, m={m}", rig.ctx().kv_dtype());
                let zeros = vec![0.0; seqs * max_ctx * kv_dim];
                let (kb, vb, yb) = (rig.upload_kv(&zeros), rig.upload_kv(&zeros), rig.upload(&vec![f32::NAN; m * width]));
                rig.dispatch(
                    kernel,
                    Binds { y: Some(&yb), kc: Some(&kb), vc: Some(&vb), ..binds },
                    node,
                    StepUniform::new(m, 0, CAP, None),
                    &data,
                    g,
                );
                if let Some(rows) = &rows {
                    let err = rel_error(&rig.download(&yb, m * width), rows, &what);
                    assert!(err <= tol, "{what}: rows: relative error {err:e}");
                }
                let (want_k, want_v) = caches(rows.as_deref().unwrap_or(&qkv));
                for (name, buf, want) in [("K", &kb, &want_k), ("V", &vb, &want_v)] {
                    let err = rel_error(&rig.download_kv(buf, want.len()), want, &format!("{what}: {name} cache"));
                    assert!(err <= kv_tol(tol), "{what}: {name} cache: relative error {err:e}");
                }
            }
        }
    }
}

#[test]
fn kv_writes_match_the_oracle_f32() {
    if let Some(rig) = Rig::new(WeightPrecision::F32, KvPrecision::F32, None) {
        check_kv_writes(&rig);
    }
}

#[test]
fn kv_writes_match_the_oracle_f16() {
    if let Some(rig) = Rig::f16_kv() {
        check_kv_writes(&rig);
    }
}

/// A lost device (here destroyed, as a driver reset or an unplugged GPU leaves it) makes
/// reading back a step an error, not a panic or a hang.
#[test]
fn a_lost_device_gives_an_error_when_a_step_is_read_back() {
    let Some(rig) = Rig::new(WeightPrecision::F32, KvPrecision::F32, None) else { return };
    let data = rig.upload(&[1.0, 2.0, 3.0, 4.0]);
    assert_eq!(rig.download(&data, 4), vec![1.0, 2.0, 3.0, 4.0]);
    rig.ctx().device.destroy();
    let staging = rig.ctx().device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 16,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = rig.ctx().device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(&data, 0, &staging, 0, 16);
    rig.ctx().queue.submit([enc.finish()]);
    let e = read_buffer(rig.ctx(), &staging, 16, None).expect_err("a lost device cannot be read back").to_string();
    assert!(e.contains("the device was lost"), "{e}");
    // Every later read says the same.
    assert_eq!(read_buffer(rig.ctx(), &staging, 16, None).unwrap_err().to_string(), e);
}
