//! Adapter and device: chosen once, features checked once, limits taken from the adapter,
//! and turned into the capabilities the lowering plans with.

use crate::backend::{KvPrecision, WeightPrecision};
use crate::error::{Error, Result};
use crate::lower::caps::{BackendCaps, Tile, wgsl};
use crate::tensor::{DType, HostTensor};

pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// Weights stored as f16 (SHADER_F16), else f32.
    pub f16_weights: bool,
    /// Block-quantized matrices stay quantized (`--weights native`).
    pub native_weights: bool,
    /// The K and V caches stored as f16 (SHADER_F16), else f32.
    pub f16_kv: bool,
    pub timestamps: bool,
    /// Lanes per subgroup where the kernels reduce with subgroup shuffles: SUBGROUP, and
    /// either one fixed size (lavapipe: 8) or never fewer than a lane group's 32 lanes.
    pub subgroup_size: Option<u32>,
    /// C runs on the device's matrix units (`gemm_matrix.wgsl`): see `matrix_units`.
    pub cooperative_matrix: bool,
    pub limits: wgpu::Limits,
    /// Everything the adapter offers (a subset is requested).
    pub adapter_features: wgpu::Features,
    /// The first error no error scope caught, or why the device was lost: wgpu's default
    /// handler would panic on it; fdpp reports it as an error when a step is read back.
    pub fault: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

/// An error and its causes on one line.
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out += &format!(": {s}");
        source = s.source();
    }
    out
}

fn backend_err(op: &str, reason: impl std::fmt::Display) -> Error {
    Error::Backend { backend: "wgpu".into(), op: op.into(), reason: reason.to_string() }
}

/// One instance per process: every device is opened through it. (An instance per device
/// loads the Vulkan driver again each time; on NVIDIA's, dozens of them in one process
/// stopped finding the GPU.)
fn instance() -> &'static wgpu::Instance {
    static INSTANCE: std::sync::OnceLock<wgpu::Instance> = std::sync::OnceLock::new();
    INSTANCE.get_or_init(|| {
        // WGPU_BACKEND (vulkan, metal, dx12) narrows the search, as in every wgpu program.
        // Only the primary backends: wgpu's GL backend is compiled in wherever another crate
        // of the build enables it (the viewer's renderer does), and its contexts belong to
        // one thread, so GL adapters opened from several threads fail (EGL BadAccess).
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        desc.backends &= wgpu::Backends::PRIMARY;
        desc.flags = wgpu::InstanceFlags::empty().with_env();
        wgpu::Instance::new(desc)
    })
}

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// Adapters in order of preference: discrete GPU first, software (lavapipe) last.
pub fn adapters() -> Vec<wgpu::Adapter> {
    let mut list = pollster::block_on(instance().enumerate_adapters(wgpu::Backends::PRIMARY));
    list.sort_by_key(|a| rank(a.get_info().device_type));
    list
}

/// Whether a hardware GPU adapter exists (what `--backend auto` asks).
pub fn has_hardware_adapter() -> bool {
    adapters().iter().any(|a| a.get_info().device_type != wgpu::DeviceType::Cpu)
}

/// Set to 0, the wgpu backend leaves the adapter's cooperative matrices unused (the GEMM of
/// linear.wgsl runs instead): to compare the two, or to step around a driver's bug.
pub const COOPERATIVE_MATRIX_ENV: &str = "FDPP_WGPU_COOPERATIVE_MATRIX";

/// Set to a number of workgroups, decode attention's split-KV chunks aim at that many per
/// step (`SplitKvLimits::target_blocks`; 0: chunks as short as the limits allow): for
/// measuring the chunking rule on an adapter.
pub const ATTN_BLOCKS_ENV: &str = "FDPP_WGPU_ATTN_BLOCKS";

/// Whether the GEMM runs on cooperative matrices: the adapter multiplies 16 x 16 x 16 f16
/// matrices into f32 sums on subgroups of exactly 32 lanes (gemm_matrix.wgsl's workgroup is
/// eight of them), the weights are stored as f16 or block-quantized (f32 weights were asked
/// for f32 products), and `COOPERATIVE_MATRIX_ENV` is not 0. Else why not.
pub fn matrix_units(adapter: &wgpu::Adapter, f16_weights: bool) -> std::result::Result<(), String> {
    use wgpu::CooperativeScalarType as T;
    let info = adapter.get_info();
    let needed = [
        (wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX, "EXPERIMENTAL_COOPERATIVE_MATRIX"),
        (wgpu::Features::SUBGROUP, "SUBGROUP"),
        (wgpu::Features::SHADER_F16, "SHADER_F16"),
    ];
    let missing: Vec<&str> = needed.iter().filter(|(f, _)| !adapter.features().contains(*f)).map(|(_, name)| *name).collect();
    let configs = adapter.cooperative_matrix_properties();
    let config = |p: &wgpu::CooperativeMatrixProperties| (p.m_size, p.n_size, p.k_size, p.ab_type, p.cr_type);
    if std::env::var(COOPERATIVE_MATRIX_ENV).is_ok_and(|v| v == "0") {
        Err(format!("{COOPERATIVE_MATRIX_ENV}=0"))
    } else if !f16_weights {
        Err("the weights are f32".into())
    } else if !missing.is_empty() {
        Err(format!("the adapter lacks {}", missing.join(", ")))
    } else if (info.subgroup_min_size, info.subgroup_max_size) != (32, 32) {
        Err(format!("its subgroups are {}..{} lanes, not 32", info.subgroup_min_size, info.subgroup_max_size))
    } else if !configs.iter().any(|p| config(p) == (16, 16, 16, T::F16, T::F32)) {
        Err(format!("no 16x16x16 f16 -> f32 configuration among {:?}", configs.iter().map(config).collect::<Vec<_>>()))
    } else {
        Ok(())
    }
}

/// How adapters are described to users choosing one with `--adapter`.
pub fn describe(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?}, driver {} {})", info.name, info.backend, info.device_type, info.driver, info.driver_info)
}

impl GpuContext {
    /// Opens the preferred adapter, or the first whose name contains `name` (case-insensitive),
    /// with weights and KV caches stored as `precision` and `kv` ask.
    pub fn new(name: Option<&str>, precision: WeightPrecision, kv: KvPrecision) -> Result<Self> {
        let list = adapters();
        if list.is_empty() {
            return Err(Error::BackendUnavailable {
                backend: "wgpu".into(),
                reason: "no GPU adapter found (no Vulkan/Metal/DX12 driver; on Linux without a GPU install Mesa's lavapipe: mesa-vulkan-drivers)".into(),
            });
        }
        let adapter = match name {
            None => &list[0],
            Some(n) => {
                let needle = n.to_lowercase();
                list.iter().find(|a| a.get_info().name.to_lowercase().contains(&needle)).ok_or_else(|| {
                    let names: Vec<String> = list.iter().map(|a| describe(&a.get_info())).collect();
                    Error::BackendUnavailable {
                        backend: "wgpu".into(),
                        reason: format!("no adapter named like `{n}`; found: {}", names.join("; ")),
                    }
                })?
            }
        };
        let info = adapter.get_info();
        let available = adapter.features();
        let has_f16 = available.contains(wgpu::Features::SHADER_F16);
        if kv == WeightPrecision::Native {
            let reason = "the KV cache has no file type to keep: use --kv auto, f16 or f32".into();
            return Err(Error::InvalidArgument(reason));
        }
        let f16 = |p: WeightPrecision, what: &str| match p {
            WeightPrecision::F32 => Ok(false),
            WeightPrecision::Auto | WeightPrecision::Native => Ok(has_f16),
            WeightPrecision::F16 if has_f16 => Ok(true),
            WeightPrecision::F16 => Err(Error::BackendUnavailable {
                backend: "wgpu".into(),
                reason: format!("{} has no SHADER_F16, which f16 {what} need; use f32 {what}", info.name),
            }),
        };
        let f16_weights = f16(precision, "weights")?;
        let f16_kv = f16(kv, "KV caches")?;
        let timestamps = available.contains(wgpu::Features::TIMESTAMP_QUERY);
        // A lane group is 32 threads. Subgroups of at least 32 lanes reduce by shuffles alone;
        // a narrower size that never varies (lavapipe: 8) shuffles inside each subgroup and
        // meets in workgroup memory; a size that varies below 32 takes the workgroup path.
        let (lo, hi) = (info.subgroup_min_size, info.subgroup_max_size);
        let subgroup_size = (available.contains(wgpu::Features::SUBGROUP) && lo.is_power_of_two() && (lo >= 32 || lo == hi)).then_some(lo);
        let mut features = wgpu::Features::empty();
        if subgroup_size.is_some() {
            features |= wgpu::Features::SUBGROUP;
        }
        if f16_weights || f16_kv {
            features |= wgpu::Features::SHADER_F16;
        }
        if timestamps {
            features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        let cooperative_matrix = matrix_units(adapter, f16_weights).is_ok();
        if cooperative_matrix {
            features |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        }
        // Everything the adapter offers: large bindings, more storage buffers per stage.
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("fdpp"),
            required_features: features,
            required_limits: limits.clone(),
            // SAFETY: the token only states that wgpu's experimental features may still hold
            // bugs; it is needed for EXPERIMENTAL_COOPERATIVE_MATRIX, requested only where
            // `matrix_units` found the configuration the matrix kernels use. Their users
            // (gemm_matrix*, flat_matrix, attention_matrix) are checked against the CPU
            // oracle on such a device (`matrix_gemm_matches_the_oracle`,
            // `matrix_attention_matches_the_oracle`), their load and store layouts read back
            // (`cooperative_matrix_layouts_read_back`), and COOPERATIVE_MATRIX_ENV=0 leaves
            // the feature unrequested.
            experimental_features: if cooperative_matrix {
                unsafe { wgpu::ExperimentalFeatures::enabled() }
            } else {
                wgpu::ExperimentalFeatures::disabled()
            },
            ..Default::default()
        }))
        .map_err(|e| backend_err("request_device", e))?;
        // The loss is what the user needs to hear: it replaces an error it caused.
        let fault = std::sync::Arc::new(std::sync::Mutex::new(None));
        let record = |fault: &std::sync::Arc<std::sync::Mutex<Option<String>>>, replace: bool| {
            let fault = std::sync::Arc::clone(fault);
            move |what: String| {
                let mut f = fault.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if replace || f.is_none() {
                    *f = Some(what);
                }
            }
        };
        let on_error = record(&fault, false);
        device.on_uncaptured_error(std::sync::Arc::new(move |e: wgpu::Error| on_error(with_sources(&e))));
        let on_lost = record(&fault, true);
        device.set_device_lost_callback(move |reason, message| on_lost(format!("the device was lost ({reason:?}) {message}")));
        let native_weights = precision == WeightPrecision::Native;
        Ok(GpuContext {
            device,
            queue,
            info,
            f16_weights,
            native_weights,
            f16_kv,
            timestamps,
            subgroup_size,
            cooperative_matrix,
            limits,
            adapter_features: available,
            fault,
        })
    }

    /// An error if the device has been lost or an error escaped every error scope (`op`:
    /// what fdpp was doing when it noticed).
    pub fn check(&self, op: &str) -> Result<()> {
        match self.fault.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref() {
            Some(why) => Err(backend_err(op, why)),
            None => Ok(()),
        }
    }

    pub fn describe(&self) -> String {
        let reduce = match self.subgroup_size {
            Some(s) if s >= 32 => format!("subgroup ({s}) reductions"),
            Some(s) => format!("subgroup ({s}) + workgroup reductions"),
            None => "workgroup reductions".into(),
        };
        let native = if self.native_weights { " (quantized ones as stored)" } else { "" };
        let matrix = if self.cooperative_matrix {
            let b = if self.matrix_flat_gemm() { ", B" } else { "" };
            let attention = if self.matrix_attention() { ", prefill attention" } else { "" };
            format!(", on cooperative matrices: C{b}{attention}")
        } else {
            String::new()
        };
        format!("wgpu {} weights {}{native}, KV {}, {reduce}{matrix}", describe(&self.info), self.weight_dtype(), self.kv_dtype())
    }

    /// B runs on the matrix units: they read the weights as they lie, so only f16 ones (not
    /// those stored quantized).
    fn matrix_flat_gemm(&self) -> bool {
        self.cooperative_matrix && !self.native_weights
    }

    /// The prefill attention runs on the matrix units: it reads an f16 KV cache.
    fn matrix_attention(&self) -> bool {
        self.cooperative_matrix && self.f16_kv
    }

    /// What the lowering may plan with on this device; `binding_limit` caps the weight
    /// chunks below the device's own limit.
    pub fn caps(&self, binding_limit: Option<u64>) -> BackendCaps {
        let max_binding = self.max_binding();
        let mut caps = BackendCaps {
            device: self.describe(),
            driver: format!("{} {}", self.info.driver, self.info.driver_info).trim().to_string(),
            kernels: super::shaders::sources_hash(self.f16_weights, self.f16_kv, self.subgroup_size, self.cooperative_matrix),
            weight_dtype: self.weight_dtype(),
            native_weights: if self.native_weights { super::shaders::QUANTIZED.to_vec() } else { vec![] },
            kv_dtype: self.kv_dtype(),
            max_binding_bytes: binding_limit.map_or(max_binding, |l| l.min(max_binding)),
            host_emulated: self.info.device_type == wgpu::DeviceType::Cpu,
            subgroup_size: self.subgroup_size,
            ..BackendCaps::wgpu_builtin()
        };
        if let (Some(limits), Some(blocks)) =
            (caps.attention.split_kv.as_mut(), std::env::var(ATTN_BLOCKS_ENV).ok().and_then(|v| v.parse::<usize>().ok()))
        {
            limits.target_blocks = (blocks > 0).then_some(blocks);
        }
        if self.cooperative_matrix {
            caps.cooperative_matrix = true;
            caps.linear.gemm_tile = Tile { m: wgsl::MATRIX_TILE_M, n: wgsl::MATRIX_TILE_N };
            if self.matrix_attention() {
                caps.attention.flash = Some(wgsl::matrix_attention());
            }
            if self.matrix_flat_gemm() {
                caps.linear.flat_matrix = Some(wgsl::matrix_tiling());
                caps.linear.flat_tilings.push(wgsl::flat_matrix());
            }
        }
        caps
    }

    /// A storage buffer of weights as the kernels read them (`vec4<W>` in the shaders):
    /// `bytes` of values of `elem` bytes, already in the device's weight type, zero-padded
    /// to whole vec4s.
    pub fn upload_weights(&self, label: &str, bytes: &[u8], elem: usize) -> wgpu::Buffer {
        use wgpu::util::DeviceExt;
        let padded = (bytes.len() / elem).next_multiple_of(4).max(4) * elem;
        let mut tail;
        let contents = if padded == bytes.len() {
            bytes
        } else {
            tail = bytes.to_vec();
            tail.resize(padded, 0);
            &tail[..]
        };
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: wgpu::BufferUsages::STORAGE,
        })
    }

    /// Uploads f32 values as the device's weight type (for tests and microbenchmarks).
    pub fn upload_f32_weights(&self, label: &str, values: &[f32]) -> wgpu::Buffer {
        let t = HostTensor::f32(vec![values.len()], values.to_vec()).convert(self.weight_dtype());
        self.upload_weights(label, t.as_le_bytes(), t.dtype().size())
    }

    /// The weight type of this device.
    pub fn weight_dtype(&self) -> DType {
        if self.f16_weights { DType::F16 } else { DType::F32 }
    }

    /// The type of the K and V caches (`KV` in the shaders).
    pub fn kv_dtype(&self) -> DType {
        if self.f16_kv { DType::F16 } else { DType::F32 }
    }

    /// Largest buffer one binding may cover.
    pub fn max_binding(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size)
    }
}
