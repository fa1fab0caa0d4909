//! The Hugging Face layout, fdpp's native format: `config.json`, `model.safetensors` (or
//! shards listed in `model.safetensors.index.json`), `tokenizer.json`, and optionally
//! `tokenizer_config.json` / `generation_config.json` / `chat_template.jinja`.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use super::{ChatTemplate, Model, ModelFormat, Tokenizer, WeightSource, dequant};
use crate::error::{Error, Result};
use crate::tensor::{DType, FileType, HostTensor};

pub fn load(dir: &Path) -> Result<Model> {
    let config = super::hf_config::read(&dir.join("config.json"))?;
    let weights = SafetensorsWeights::open(dir)?;
    super::check_claims(&config, &weights, &|field| super::hf_config::key(field).to_string())?;
    let tokenizer = Tokenizer::from_hf_dir(dir)?;
    let chat_template = ChatTemplate::from_hf_dir(dir, &tokenizer)?;
    let mut config = config;
    config.notes.extend(super::chat::broken_note(chat_template.as_ref()));
    Ok(Model { path: dir.to_path_buf(), format: ModelFormat::HuggingFace, config, weights: Box::new(weights), tokenizer, chat_template })
}

fn read_json(path: &Path) -> Result<Value> {
    let text = super::read_small(path)?;
    serde_json::from_slice(&text).map_err(|e| Error::Malformed { path: path.to_path_buf(), what: "JSON".into(), reason: e.to_string() })
}

/// A shard named by the index, resolved inside `dir`: a name that climbs out (`..`), an
/// absolute path, or a symlink leading outside the folder (other than into the hub
/// cache's `blobs`) is refused.
fn shard_path(dir: &Path, index: &Path, tensor: &str, name: &str) -> Result<PathBuf> {
    use std::path::Component;
    let refuse = |reason: String| Error::Malformed { path: index.to_path_buf(), what: format!("`weight_map` entry of `{tensor}`"), reason };
    let shown = super::escape(name, 200);
    if name.is_empty() || !Path::new(name).components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(refuse(format!("shard `{shown}` is not a file name inside the model folder")));
    }
    let path = dir.join(name);
    let real = |p: &Path| p.canonicalize().map_err(|e| Error::io(p, e));
    let (target, dir) = (real(&path)?, real(dir)?);
    // The Hugging Face hub's cache links `snapshots/REV/*` to `../../blobs/*`.
    let blobs = (dir.parent().and_then(Path::file_name) == Some("snapshots".as_ref()))
        .then(|| dir.parent().and_then(Path::parent).map(|p| p.join("blobs")))
        .flatten();
    if !target.starts_with(&dir) && !blobs.is_some_and(|b| target.starts_with(b)) {
        return Err(refuse(format!("shard `{shown}` leads outside the model folder (a symlink)")));
    }
    Ok(path)
}

struct Shard {
    path: PathBuf,
    map: memmap2::Mmap,
    /// Start of the data section (8-byte length + JSON header).
    data_start: usize,
}

struct Entry {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    range: (usize, usize),
}

pub struct SafetensorsWeights {
    dir: PathBuf,
    shards: Vec<Shard>,
    tensors: BTreeMap<String, Entry>,
}

impl SafetensorsWeights {
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else if index.exists() {
            let v = read_json(&index)?;
            let map = v["weight_map"].as_object().ok_or_else(|| Error::Malformed {
                path: index.clone(),
                what: "index".into(),
                reason: "`weight_map` is missing".into(),
            })?;
            let mut files: Vec<PathBuf> = map
                .iter()
                .map(|(tensor, f)| {
                    let f = f.as_str().ok_or_else(|| Error::Malformed {
                        path: index.clone(),
                        what: format!("`weight_map` entry of `{tensor}`"),
                        reason: format!("{f} is not a file name"),
                    })?;
                    shard_path(dir, &index, tensor, f)
                })
                .collect::<Result<_>>()?;
            files.sort();
            files.dedup();
            files
        } else {
            return Err(Error::io(
                &single,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no model.safetensors and no model.safetensors.index.json in this folder",
                ),
            ));
        };
        let mut shards = Vec::new();
        let mut tensors = BTreeMap::new();
        for path in files {
            super::regular_file(&path)?;
            let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
            // SAFETY: read-only mapping; fdpp never writes model files while they are loaded.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
            let (header_len, meta) = SafeTensors::read_metadata(&map).map_err(|e| Error::Malformed {
                path: path.clone(),
                what: "safetensors header".into(),
                reason: e.to_string(),
            })?;
            for (name, info) in meta.tensors() {
                let entry = Entry { shard: shards.len(), dtype: info.dtype, shape: info.shape.clone(), range: info.data_offsets };
                if let Some(first) = tensors.insert(name.clone(), entry) {
                    // Which copy is meant is a guess either way.
                    return Err(Error::Malformed {
                        path: path.clone(),
                        what: format!("tensor `{name}`"),
                        reason: format!("it is also in {}", shards.get(first.shard).map_or(&path, |s: &Shard| &s.path).display()),
                    });
                }
            }
            shards.push(Shard { path, map, data_start: 8 + header_len });
        }
        Ok(SafetensorsWeights { dir: dir.to_path_buf(), shards, tensors })
    }
}

impl WeightSource for SafetensorsWeights {
    fn path(&self) -> &Path {
        &self.dir
    }
    fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|e| e.shape.clone())
    }
    fn file_type(&self, name: &str) -> Result<FileType> {
        let e = self.entry(name)?;
        match e.dtype {
            Dtype::F32 => Ok(FileType::F32),
            Dtype::F16 => Ok(FileType::F16),
            Dtype::BF16 => Ok(FileType::BF16),
            other => Err(Error::UnsupportedTensorType {
                path: self.shards[e.shard].path.clone(),
                tensor: name.to_string(),
                dtype: format!("{other:?}"),
                supported: "F32, F16, BF16",
            }),
        }
    }
    fn load(&self, name: &str, dtype: DType) -> Result<HostTensor> {
        let ty = self.file_type(name)?;
        let e = self.entry(name)?;
        let shard = &self.shards[e.shard];
        let bytes = &shard.map[shard.data_start + e.range.0..shard.data_start + e.range.1];
        Ok(HostTensor { shape: e.shape.clone(), data: dequant::decode(ty, bytes, dtype) })
    }
}

impl SafetensorsWeights {
    fn entry(&self, name: &str) -> Result<&Entry> {
        self.tensors.get(name).ok_or_else(|| Error::MissingTensor { path: self.dir.clone(), tensor: name.to_string() })
    }
}

struct OwnedView {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl safetensors::View for &OwnedView {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Writes `model` to `dir` in the Hugging Face layout. Float tensors keep their type;
/// quantized GGUF tensors become f32, so the conversion is exact.
/// `progress(done, total)` is called once per tensor.
pub fn write(model: &Model, dir: &Path, progress: &mut dyn FnMut(usize, usize)) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let names = model.weights.names();
    let mut views = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        // Quantized tensors are written as f32, which holds their values exactly.
        let t = model.weights.load(name, model.weights.file_type(name)?.exact_dtype())?;
        let dtype = match t.dtype() {
            DType::F32 => Dtype::F32,
            DType::F16 => Dtype::F16,
            DType::BF16 => Dtype::BF16,
        };
        views.push((name.clone(), OwnedView { dtype, shape: t.shape.clone(), bytes: t.as_le_bytes().to_vec() }));
        progress(i + 1, names.len());
    }
    let out = dir.join("model.safetensors");
    let metadata = [("format".to_string(), "pt".to_string())].into_iter().collect();
    safetensors::serialize_to_file(views.iter().map(|(n, v)| (n.as_str(), v)), Some(metadata), &out)
        .map_err(|e| Error::Io { path: out.clone(), source: std::io::Error::other(e.to_string()) })?;
    let config = dir.join("config.json");
    let json = super::hf_config::to_json(&model.config).ok_or_else(|| Error::UnsupportedModel {
        path: model.path.clone(),
        reason: "its per-frequency RoPE factors (GGUF `rope_freqs.weight`) have no config.json form".into(),
    })?;
    let text = serde_json::to_string_pretty(&json).expect("JSON values serialise");
    std::fs::write(&config, text).map_err(|e| Error::io(&config, e))?;
    model.tokenizer.write_hf(dir, model.chat_template.as_ref())
}
