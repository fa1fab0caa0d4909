//! Adapter and device: chosen once, features checked once, limits taken from the adapter.

use crate::error::{Error, Result};

pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// Weights stored as f16 (SHADER_F16), else f32.
    pub f16_weights: bool,
    pub timestamps: bool,
    /// Lane-group sums by subgroup shuffles: SUBGROUP with every subgroup >= 32 lanes.
    pub subgroups: bool,
    pub limits: wgpu::Limits,
}

fn backend_err(op: &str, reason: impl std::fmt::Display) -> Error {
    Error::Backend { backend: "wgpu".into(), op: op.into(), reason: reason.to_string() }
}

fn instance() -> wgpu::Instance {
    // WGPU_BACKEND (vulkan, metal, dx12) narrows the search, as in every wgpu program.
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.flags = wgpu::InstanceFlags::empty().with_env();
    wgpu::Instance::new(desc)
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
    let mut list = pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()));
    list.sort_by_key(|a| rank(a.get_info().device_type));
    list
}

/// Whether a hardware GPU adapter exists (what `--backend auto` asks).
pub fn has_hardware_adapter() -> bool {
    adapters().iter().any(|a| a.get_info().device_type != wgpu::DeviceType::Cpu)
}

/// How adapters are described to users choosing one with `--adapter`.
pub fn describe(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?}, driver {} {})", info.name, info.backend, info.device_type, info.driver, info.driver_info)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum WeightPrecision {
    /// f16 when the device supports it, else f32.
    #[default]
    Auto,
    F32,
    F16,
}

impl GpuContext {
    /// Opens the preferred adapter, or the first whose name contains `name` (case-insensitive).
    pub fn new(name: Option<&str>, precision: WeightPrecision) -> Result<Self> {
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
        let f16_weights = match precision {
            WeightPrecision::F32 => false,
            WeightPrecision::Auto => available.contains(wgpu::Features::SHADER_F16),
            WeightPrecision::F16 => {
                if !available.contains(wgpu::Features::SHADER_F16) {
                    return Err(Error::BackendUnavailable {
                        backend: "wgpu".into(),
                        reason: format!("{} has no SHADER_F16; use f32 weights", info.name),
                    });
                }
                true
            }
        };
        let timestamps = available.contains(wgpu::Features::TIMESTAMP_QUERY);
        // A lane group is 32 threads; narrower subgroups (lavapipe: 8) would need a second
        // level through workgroup memory anyway, so they take the workgroup reduction.
        let subgroups = available.contains(wgpu::Features::SUBGROUP) && info.subgroup_min_size >= 32;
        let mut features = wgpu::Features::empty();
        if subgroups {
            features |= wgpu::Features::SUBGROUP;
        }
        if f16_weights {
            features |= wgpu::Features::SHADER_F16;
        }
        if timestamps {
            features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        // Everything the adapter offers: large bindings, more storage buffers per stage.
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("fdpp"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| backend_err("request_device", e))?;
        Ok(GpuContext { device, queue, info, f16_weights, timestamps, subgroups, limits })
    }

    pub fn describe(&self) -> String {
        let reduce =
            if self.subgroups { format!("subgroup ({}) reductions", self.info.subgroup_min_size) } else { "workgroup reductions".into() };
        format!("wgpu {} weights {}, {reduce}", describe(&self.info), if self.f16_weights { "f16" } else { "f32" })
    }

    /// A storage buffer of weights as the kernels read them (`vec4<W>` in the shaders): f16
    /// where the device has SHADER_F16, else f32; zero-padded to whole vec4s.
    pub fn upload_weights(&self, label: &str, values: &[f32]) -> wgpu::Buffer {
        use rayon::prelude::*;
        use wgpu::util::DeviceExt;
        let padded = values.len().next_multiple_of(4).max(4);
        let halves: Vec<half::f16>;
        let singles: Vec<f32>;
        let contents: &[u8] = if self.f16_weights {
            halves = values
                .par_iter()
                .map(|v| half::f16::from_f32(*v))
                .chain(rayon::iter::repeat_n(half::f16::ZERO, padded - values.len()))
                .collect();
            bytemuck::cast_slice(&halves)
        } else if padded != values.len() {
            singles = values.iter().copied().chain(std::iter::repeat_n(0.0, padded - values.len())).collect();
            bytemuck::cast_slice(&singles)
        } else {
            bytemuck::cast_slice(values)
        };
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: wgpu::BufferUsages::STORAGE,
        })
    }

    /// Largest buffer one binding may cover.
    pub fn max_binding(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size)
    }
}
