//! GGUF v2/v3: header, metadata of every type, tensor infos, alignment, and a writer.
//!
//! The reader maps the file and checks every length against the bytes that are really
//! there before it allocates or slices, so a truncated or corrupt file gives an error that
//! names what was being read, never a panic or a huge allocation. Metadata arrays stay in
//! the mapped file until a loader reads them (a vocabulary is the only array fdpp needs),
//! so an array costs no memory for what it merely claims or holds.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::dequant;
use crate::error::{Error, Result};
use crate::tensor::{DType, FileType, HostTensor, TensorData};

pub const MAGIC: &[u8; 4] = b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
const MAX_DIMS: u32 = 4;

/// ggml tensor types. Sizes of every known type are listed so that the data of a file can be
/// bounds-checked even where fdpp cannot dequantize it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    I8,
    I16,
    I32,
    I64,
    F64,
    BF16,
    /// A type id this reader does not know (newer ggml types, or garbage).
    Other(u32),
}

impl GgmlType {
    pub fn from_id(id: u32) -> Self {
        use GgmlType::*;
        match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2K,
            11 => Q3K,
            12 => Q4K,
            13 => Q5K,
            14 => Q6K,
            15 => Q8K,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            30 => BF16,
            other => Other(other),
        }
    }

    pub fn id(self) -> u32 {
        use GgmlType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q8_1 => 9,
            Q2K => 10,
            Q3K => 11,
            Q4K => 12,
            Q5K => 13,
            Q6K => 14,
            Q8K => 15,
            I8 => 24,
            I16 => 25,
            I32 => 26,
            I64 => 27,
            F64 => 28,
            BF16 => 30,
            Other(id) => id,
        }
    }

    /// (elements per block, bytes per block), or None for an unknown type.
    pub fn block_layout(self) -> Option<(u64, u64)> {
        use GgmlType::*;
        Some(match self {
            F32 | I32 => (1, 4),
            F16 | BF16 | I16 => (1, 2),
            I8 => (1, 1),
            I64 | F64 => (1, 8),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 36),
            Q2K => (256, 84),
            Q3K => (256, 110),
            Q4K => (256, 144),
            Q5K => (256, 176),
            Q6K => (256, 210),
            Q8K => (256, 292),
            Other(_) => return None,
        })
    }

    /// The file type fdpp reads this as, if it can.
    pub fn file_type(self) -> Option<FileType> {
        Some(match self {
            GgmlType::F32 => FileType::F32,
            GgmlType::F16 => FileType::F16,
            GgmlType::BF16 => FileType::BF16,
            GgmlType::Q8_0 => FileType::Q8_0,
            GgmlType::Q4_0 => FileType::Q4_0,
            GgmlType::Q4_1 => FileType::Q4_1,
            _ => return None,
        })
    }

    pub const SUPPORTED: &'static str = "F32, F16, BF16, Q8_0, Q4_0, Q4_1";
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GgmlType::Other(id) => write!(f, "unknown ggml type id {id}"),
            GgmlType::Q2K => f.write_str("Q2_K"),
            GgmlType::Q3K => f.write_str("Q3_K"),
            GgmlType::Q4K => f.write_str("Q4_K"),
            GgmlType::Q5K => f.write_str("Q5_K"),
            GgmlType::Q6K => f.write_str("Q6_K"),
            GgmlType::Q8K => f.write_str("Q8_K"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// A metadata value. Arrays hold values of one type.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    fn type_id(&self) -> u32 {
        use GgufValue::*;
        match self {
            U8(_) => 0,
            I8(_) => 1,
            U16(_) => 2,
            I16(_) => 3,
            U32(_) => 4,
            I32(_) => 5,
            F32(_) => 6,
            Bool(_) => 7,
            String(_) => 8,
            Array(_) => 9,
            U64(_) => 10,
            I64(_) => 11,
            F64(_) => 12,
        }
    }

    /// Any non-negative integer, whatever width the writer chose.
    pub fn as_u64(&self) -> Option<u64> {
        use GgufValue::*;
        match *self {
            U8(v) => Some(v as u64),
            U16(v) => Some(v as u64),
            U32(v) => Some(v as u64),
            U64(v) => Some(v),
            I8(v) if v >= 0 => Some(v as u64),
            I16(v) if v >= 0 => Some(v as u64),
            I32(v) if v >= 0 => Some(v as u64),
            I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v as f64),
            GgufValue::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(v) => Some(v),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct GgufTensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the innermost (contiguous) dimension.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
}

impl GgufTensorInfo {
    pub fn numel(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Row-major shape, outermost first (the reverse of `dims`).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// The size of the tensor's data; `None` for a type without a known layout or a size
    /// beyond 64 bits.
    pub fn byte_size(&self) -> Option<u64> {
        let (block, bytes) = self.ggml_type.block_layout()?;
        (self.numel() / block).checked_mul(bytes)
    }
}

/// An opened GGUF file: metadata and tensor infos parsed, tensor data mapped, not read.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    /// Scalar metadata; arrays are in `arrays`, read through [`GgufFile::get_array`].
    pub metadata: BTreeMap<String, GgufValue>,
    arrays: BTreeMap<String, ArrayInfo>,
    pub tensors: Vec<GgufTensorInfo>,
    pub alignment: u64,
    /// Absolute file offset of the data section.
    pub data_offset: u64,
    map: Mmap,
}

/// Empty files cannot be mapped; keep one representation for both (and for bytes that are
/// already in memory).
enum Mmap {
    Mapped(memmap2::Mmap),
    Empty,
    Owned(Vec<u8>),
}

impl std::ops::Deref for Mmap {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Mmap::Mapped(m) => m,
            Mmap::Empty => &[],
            Mmap::Owned(v) => v,
        }
    }
}

/// Where an array's elements lie in the file (checked at open).
struct ArrayInfo {
    elem_type: u32,
    len: u64,
    start: usize,
    end: usize,
}

/// A metadata array, decoded element by element as it is read.
pub struct GgufArray<'a> {
    path: &'a Path,
    key: &'a str,
    elem_type: u32,
    len: u64,
    bytes: &'a [u8],
}

impl<'a> GgufArray<'a> {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The elements in order. They were all checked at open, so errors only report a
    /// file changed since.
    pub fn iter(&self) -> impl Iterator<Item = Result<GgufValue>> + 'a {
        let mut c = Cursor { path: self.path, bytes: self.bytes, pos: 0 };
        let (key, elem_type) = (self.key, self.elem_type);
        (0..self.len).map(move |i| c.value(elem_type, &|| format!("metadata `{key}` element {i}"), 1))
    }
}

struct Cursor<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let end = (self.pos as u64).checked_add(n).filter(|&e| e <= self.bytes.len() as u64);
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end as usize];
                self.pos = end as usize;
                Ok(s)
            }
            None => Err(Error::Truncated {
                path: self.path.to_path_buf(),
                what: what(),
                start: self.pos as u64,
                end: (self.pos as u64).saturating_add(n),
                len: self.bytes.len() as u64,
            }),
        }
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        Ok(self.take(N as u64, what)?.try_into().expect("take returned N bytes"))
    }
    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.u64(&|| format!("length of {}", what()))?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| Error::InvalidUtf8 { path: self.path.to_path_buf(), what: what() })
    }
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn value(&mut self, ty: u32, what: &dyn Fn() -> String, depth: u32) -> Result<GgufValue> {
        use GgufValue as V;
        Ok(match ty {
            0 => V::U8(self.array::<1>(what)?[0]),
            1 => V::I8(self.array::<1>(what)?[0] as i8),
            2 => V::U16(u16::from_le_bytes(self.array(what)?)),
            3 => V::I16(i16::from_le_bytes(self.array(what)?)),
            4 => V::U32(self.u32(what)?),
            5 => V::I32(i32::from_le_bytes(self.array(what)?)),
            6 => V::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => V::Bool(false),
                1 => V::Bool(true),
                b => return Err(self.malformed(what(), format!("boolean byte is {b}, not 0 or 1"))),
            },
            8 => V::String(self.string(what)?),
            9 => {
                return Err(
                    self.malformed(what(), if depth > 0 { "nested arrays are not supported" } else { "array in scalar position" }.into())
                );
            }
            10 => V::U64(self.u64(what)?),
            11 => V::I64(i64::from_le_bytes(self.array(what)?)),
            12 => V::F64(f64::from_le_bytes(self.array(what)?)),
            other => return Err(self.malformed(what(), format!("unknown value type {other}"))),
        })
    }

    /// Checks an array's elements without keeping them, and says where they lie.
    fn array_info(&mut self, what: &dyn Fn() -> String) -> Result<ArrayInfo> {
        let elem_type = self.u32(what)?;
        let len = self.u64(what)?;
        if elem_type == 9 {
            return Err(self.malformed(what(), "nested arrays are not supported".into()));
        }
        if elem_type > 12 {
            return Err(self.malformed(what(), format!("unknown array element type {elem_type}")));
        }
        // The smallest encoding of one element (a string is at least its length): a count
        // the remaining bytes cannot hold is refused before walking it.
        let min_size: u64 = match elem_type {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            _ => 8,
        };
        let start = self.pos;
        let fixed = len.checked_mul(min_size).filter(|&n| n <= self.remaining());
        let Some(fixed) = fixed else {
            return Err(Error::Truncated {
                path: self.path.to_path_buf(),
                what: format!("{} ({len} elements)", what()),
                start: start as u64,
                end: (start as u64).saturating_add(len.saturating_mul(min_size)),
                len: self.bytes.len() as u64,
            });
        };
        if elem_type == 8 {
            // Strings are walked for their lengths and checked as UTF-8, none kept.
            for i in 0..len {
                let what = || format!("{} element {i}", what());
                let n = self.u64(&what)?;
                let bytes = self.take(n, &what)?;
                if std::str::from_utf8(bytes).is_err() {
                    return Err(Error::InvalidUtf8 { path: self.path.to_path_buf(), what: what() });
                }
            }
        } else {
            // Fixed-size elements are skipped unread: a huge array costs neither memory nor
            // reads of its pages (a bad boolean is reported when the array is read).
            self.take(fixed, what)?;
        }
        Ok(ArrayInfo { elem_type, len, start, end: self.pos })
    }

    fn malformed(&self, what: String, reason: String) -> Error {
        Error::Malformed { path: self.path.to_path_buf(), what, reason }
    }
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        super::regular_file(path)?;
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let map = if len == 0 {
            Mmap::Empty
        } else {
            // SAFETY: the map is read-only; fdpp does not modify model files while they are
            // open, and a concurrent truncation by another process is outside what we defend.
            Mmap::Mapped(unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?)
        };
        Self::parse(path, map)
    }

    /// A GGUF file already in memory (the fuzz targets parse each input this way, without
    /// a file system); `path` only names it in errors.
    pub fn from_bytes(path: impl AsRef<Path>, bytes: Vec<u8>) -> Result<Self> {
        Self::parse(path.as_ref(), Mmap::Owned(bytes))
    }

    fn parse(path: &Path, map: Mmap) -> Result<Self> {
        let mut c = Cursor { path, bytes: &map, pos: 0 };
        if c.bytes.len() < 4 {
            return Err(Error::WrongFormat {
                path: path.to_path_buf(),
                format: "GGUF",
                reason: format!("the file is only {} bytes long", c.bytes.len()),
            });
        }
        let magic: [u8; 4] = c.array(&|| "magic".into())?;
        if &magic != MAGIC {
            return Err(Error::WrongFormat {
                path: path.to_path_buf(),
                format: "GGUF",
                reason: format!("it starts with {:?}, not \"GGUF\"", String::from_utf8_lossy(&magic)),
            });
        }
        let version = c.u32(&|| "version".into())?;
        if version != 2 && version != 3 {
            return Err(Error::Malformed {
                path: path.to_path_buf(),
                what: "header".into(),
                reason: format!("GGUF version {version}; fdpp reads versions 2 and 3"),
            });
        }
        let n_tensors = c.u64(&|| "tensor count".into())?;
        let n_kv = c.u64(&|| "metadata count".into())?;
        // Each entry needs at least 8 bytes (a length): bound the counts by the file size.
        if n_kv > c.remaining() / 8 || n_tensors > c.remaining() / 8 {
            return Err(Error::Malformed {
                path: path.to_path_buf(),
                what: "header".into(),
                reason: format!("{n_kv} metadata entries and {n_tensors} tensors cannot fit in {} bytes", c.bytes.len()),
            });
        }

        let mut metadata = BTreeMap::new();
        let mut arrays = BTreeMap::new();
        for i in 0..n_kv {
            let key = c.string(&|| format!("metadata key #{i}"))?;
            let ty = c.u32(&|| format!("type of metadata `{key}`"))?;
            let what = || format!("metadata `{key}`");
            // Which of two values counts is a guess either way: refuse the file instead.
            if metadata.contains_key(&key) || arrays.contains_key(&key) {
                return Err(c.malformed(what(), "the key appears twice".into()));
            }
            if ty == 9 {
                let info = c.array_info(&what)?;
                arrays.insert(key, info);
            } else {
                let value = c.value(ty, &what, 0)?;
                metadata.insert(key, value);
            }
        }

        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut names = std::collections::HashSet::new();
        for i in 0..n_tensors {
            let name = c.string(&|| format!("name of tensor #{i}"))?;
            if !names.insert(name.clone()) {
                return Err(c.malformed(format!("tensor `{name}`"), "the name appears twice".into()));
            }
            let n_dims = c.u32(&|| format!("tensor `{name}` rank"))?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(c.malformed(format!("tensor `{name}`"), format!("rank {n_dims} (1..={MAX_DIMS} allowed)")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64(&|| format!("tensor `{name}` dims"))?);
            }
            let ggml_type = GgmlType::from_id(c.u32(&|| format!("tensor `{name}` type"))?);
            let offset = c.u64(&|| format!("tensor `{name}` offset"))?;
            let numel = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            if numel.is_none() {
                return Err(c.malformed(format!("tensor `{name}`"), format!("dims {dims:?} overflow")));
            }
            tensors.push(GgufTensorInfo { name, dims, ggml_type, offset });
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => return Err(c.malformed("metadata `general.alignment`".into(), format!("{v:?} is not a power of two"))),
            },
        };
        let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
        let file_len = map.len() as u64;

        // Bounds of every tensor's data, checked once here so reads need not.
        let mut extents = Vec::with_capacity(tensors.len());
        for t in &tensors {
            if let Some((block, _)) = t.ggml_type.block_layout()
                && t.dims[0] % block != 0
            {
                return Err(Error::Malformed {
                    path: path.to_path_buf(),
                    what: format!("tensor `{}`", t.name),
                    reason: format!("row length {} is not a multiple of the {} block size {block}", t.dims[0], t.ggml_type),
                });
            }
            if t.offset % alignment != 0 {
                return Err(Error::Malformed {
                    path: path.to_path_buf(),
                    what: format!("tensor `{}`", t.name),
                    reason: format!("data offset {} is not aligned to {alignment}", t.offset),
                });
            }
            if t.ggml_type.block_layout().is_some() {
                let size = t.byte_size().ok_or_else(|| {
                    c.malformed(format!("tensor `{}`", t.name), format!("dims {:?} of {} take more than 2^64 bytes", t.dims, t.ggml_type))
                })?;
                // Checked: an offset near 2^64 must not wrap around to the file's start.
                let start = data_offset.checked_add(t.offset);
                let end = start.and_then(|s| s.checked_add(size));
                match (start, end) {
                    (Some(start), Some(end)) if end <= file_len => extents.push((start, end, &t.name)),
                    _ => {
                        return Err(Error::Truncated {
                            path: path.to_path_buf(),
                            what: format!("data of tensor `{}`", t.name),
                            start: start.unwrap_or(u64::MAX),
                            end: end.unwrap_or(u64::MAX),
                            len: file_len,
                        });
                    }
                }
            }
        }
        // Two tensors sharing bytes is no model a writer makes; one of them would be read
        // as the other's data.
        extents.retain(|&(start, end, _)| end > start);
        extents.sort_unstable();
        let mut furthest: Option<(u64, &String)> = None;
        for &(start, end, name) in &extents {
            if let Some((end_a, a)) = furthest.filter(|&(end_a, _)| start < end_a) {
                return Err(c.malformed(
                    format!("tensor `{name}`"),
                    format!("its data (bytes {start}..{end}) overlaps that of tensor `{a}` (ending at byte {end_a})"),
                ));
            }
            furthest = Some((end, name));
        }

        Ok(GgufFile { path: path.to_path_buf(), version, metadata, arrays, tensors, alignment, data_offset, map })
    }

    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor (bounds were checked at open).
    pub fn tensor_bytes(&self, info: &GgufTensorInfo) -> Result<&[u8]> {
        let size = info.byte_size().ok_or_else(|| self.unsupported(info))?;
        let start = (self.data_offset + info.offset) as usize;
        Ok(&self.map[start..start + size as usize])
    }

    /// Reads one tensor, decoded into `dtype` (quantized types are dequantized).
    pub fn read_tensor(&self, name: &str, dtype: DType) -> Result<HostTensor> {
        let info = self.tensor_info(name).ok_or_else(|| Error::MissingTensor { path: self.path.clone(), tensor: name.to_string() })?;
        let ty = info.ggml_type.file_type().ok_or_else(|| self.unsupported(info))?;
        let bytes = self.tensor_bytes(info)?;
        Ok(HostTensor { shape: info.shape(), data: dequant::decode(ty, bytes, dtype) })
    }

    fn unsupported(&self, info: &GgufTensorInfo) -> Error {
        Error::UnsupportedTensorType {
            path: self.path.clone(),
            tensor: info.name.clone(),
            dtype: info.ggml_type.to_string(),
            supported: GgmlType::SUPPORTED,
        }
    }

    // ---- metadata accessors: absent -> None, present with the wrong type -> error ----

    /// A scalar value (`None` for an absent key or an array).
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    fn wrong_type(&self, key: &str, want: &str) -> Error {
        let found = match (self.metadata.get(key), self.arrays.get(key)) {
            (Some(v), _) => super::escape(&format!("{v:?}"), 200),
            (None, Some(a)) => format!("an array of {} elements", a.len),
            (None, None) => "nothing".into(),
        };
        Error::Malformed { path: self.path.clone(), what: format!("metadata `{key}`"), reason: format!("expected {want}, found {found}") }
    }

    fn scalar<'s, T>(&'s self, key: &str, want: &str, read: impl Fn(&'s GgufValue) -> Option<T>) -> Result<Option<T>> {
        match self.metadata.get(key) {
            Some(v) => read(v).map(Some).ok_or_else(|| self.wrong_type(key, want)),
            None if self.arrays.contains_key(key) => Err(self.wrong_type(key, want)),
            None => Ok(None),
        }
    }

    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        self.scalar(key, "an integer", GgufValue::as_u64)
    }
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>> {
        self.scalar(key, "a number", GgufValue::as_f64)
    }
    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        self.scalar(key, "a string", GgufValue::as_str)
    }
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        self.scalar(key, "a boolean", GgufValue::as_bool)
    }

    /// An array of at most `limit` elements; a longer one is refused before any element
    /// is decoded.
    pub fn get_array(&self, key: &str, limit: u64) -> Result<Option<GgufArray<'_>>> {
        let Some((key, a)) = self.arrays.get_key_value(key) else {
            return if self.metadata.contains_key(key) { Err(self.wrong_type(key, "an array")) } else { Ok(None) };
        };
        if a.len > limit {
            return Err(Error::FileLimit { path: self.path.clone(), what: format!("the length of metadata `{key}`"), value: a.len, limit });
        }
        Ok(Some(GgufArray { path: &self.path, key, elem_type: a.elem_type, len: a.len, bytes: &self.map[a.start..a.end] }))
    }

    /// A key that must be present.
    pub fn require<T>(&self, key: &str, got: Result<Option<T>>) -> Result<T> {
        got?.ok_or_else(|| Error::Malformed {
            path: self.path.clone(),
            what: "metadata".into(),
            reason: format!("required key `{key}` is missing"),
        })
    }
}

/// Writes GGUF v3 files: used by tests to make model files of their own, and by tools.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<WrittenTensor>,
}

struct WrittenTensor {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    bytes: Vec<u8>,
    /// An offset to write instead of where the bytes go (for tests of broken files).
    claimed_offset: Option<u64>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` (again: the new value replaces the old).
    pub fn meta(&mut self, key: &str, value: GgufValue) -> &mut Self {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
        self
    }

    /// Writes `key` a second time, as a broken or hostile file may.
    pub fn meta_duplicate(&mut self, key: &str, value: GgufValue) -> &mut Self {
        self.metadata.push((key.to_string(), value));
        self
    }

    /// A tensor from raw bytes; `shape` is row-major, outermost first.
    pub fn tensor_raw(&mut self, name: &str, shape: &[usize], ty: GgmlType, bytes: Vec<u8>) -> &mut Self {
        let dims = shape.iter().rev().map(|&d| d as u64).collect();
        self.tensors.push(WrittenTensor { name: name.to_string(), dims, ty, bytes, claimed_offset: None });
        self
    }

    /// A tensor info with any dims (ggml order, innermost first) and data offset, and no
    /// data: what a broken or hostile file may claim.
    pub fn tensor_claim(&mut self, name: &str, dims: &[u64], ty: GgmlType, offset: u64) -> &mut Self {
        self.tensors.push(WrittenTensor { name: name.to_string(), dims: dims.to_vec(), ty, bytes: vec![], claimed_offset: Some(offset) });
        self
    }

    pub fn tensor(&mut self, name: &str, t: &HostTensor) -> &mut Self {
        let ty = match t.data {
            TensorData::F32(_) => GgmlType::F32,
            TensorData::F16(_) => GgmlType::F16,
            TensorData::BF16(_) => GgmlType::BF16,
        };
        self.tensor_raw(name, &t.shape, ty, t.as_le_bytes().to_vec())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            write_str(&mut out, k);
            out.extend_from_slice(&v.type_id().to_le_bytes());
            write_value(&mut out, v);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for t in &self.tensors {
            write_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            out.extend_from_slice(&t.claimed_offset.unwrap_or(offset).to_le_bytes());
            offsets.push(offset);
            offset = (offset + t.bytes.len() as u64).div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
        }
        let data_start = (out.len() as u64).div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
        out.resize(data_start as usize, 0);
        for (t, off) in self.tensors.iter().zip(offsets) {
            out.resize((data_start + off) as usize, 0);
            out.extend_from_slice(&t.bytes);
        }
        out
    }

    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut f = File::create(path).map_err(|e| Error::io(path, e))?;
        f.write_all(&self.to_bytes()).map_err(|e| Error::io(path, e))
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_value(out: &mut Vec<u8>, v: &GgufValue) {
    use GgufValue as V;
    match v {
        V::U8(x) => out.push(*x),
        V::I8(x) => out.push(*x as u8),
        V::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::Bool(x) => out.push(*x as u8),
        V::String(s) => write_str(out, s),
        V::Array(items) => {
            let elem_ty = items.first().map_or(8, |i| i.type_id());
            out.extend_from_slice(&elem_ty.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for i in items {
                write_value(out, i);
            }
        }
        V::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fdpp-gguf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn round_trip_every_metadata_type_and_tensor() {
        let mut w = GgufWriter::new();
        w.meta("u8", GgufValue::U8(7))
            .meta("i8", GgufValue::I8(-7))
            .meta("u16", GgufValue::U16(700))
            .meta("i16", GgufValue::I16(-700))
            .meta("u32", GgufValue::U32(70000))
            .meta("i32", GgufValue::I32(-70000))
            .meta("f32", GgufValue::F32(1.5))
            .meta("bool", GgufValue::Bool(true))
            .meta("str", GgufValue::String("héllo".into()))
            .meta("arr", GgufValue::Array(vec![GgufValue::String("a".into()), GgufValue::String("bc".into())]))
            .meta("u64", GgufValue::U64(1 << 40))
            .meta("i64", GgufValue::I64(-(1 << 40)))
            .meta("f64", GgufValue::F64(-2.25));
        let a = HostTensor::f32(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]);
        let b = HostTensor { shape: vec![3], data: TensorData::F16(vec![f16::from_f32(0.5); 3]) };
        w.tensor("a", &a).tensor("b", &b);
        let p = tmp("rt.gguf");
        w.write(&p).unwrap();
        let f = GgufFile::open(&p).unwrap();
        assert_eq!(f.version, 3);
        for (k, v) in &w.metadata {
            let got = match v {
                GgufValue::Array(_) => GgufValue::Array(f.get_array(k, 2).unwrap().unwrap().iter().collect::<Result<_>>().unwrap()),
                _ => f.metadata[k].clone(),
            };
            assert_eq!(&got, v, "{k}");
        }
        // Arrays are not scalars, and their length limit is checked before decoding.
        assert!(f.get_str("arr").unwrap_err().to_string().contains("an array of 2 elements"));
        assert!(f.get_array("u16", 9).is_err());
        let e = f.get_array("arr", 1).err().unwrap().to_string();
        assert!(e.contains("`arr`") && e.contains("is 2, beyond fdpp's limit of 1"), "{e}");
        assert_eq!(f.tensor_info("a").unwrap().dims, vec![3, 2]);
        assert_eq!(f.read_tensor("a", DType::F32).unwrap(), a);
        assert_eq!(f.read_tensor("b", DType::F16).unwrap(), b);
        assert_eq!(f.read_tensor("b", DType::F32).unwrap().into_f32(), vec![0.5; 3]);
        assert_eq!(f.data_offset % DEFAULT_ALIGNMENT, 0);
        assert_eq!(f.get_u64("u16").unwrap(), Some(700));
        assert!(f.get_str("u16").is_err());
        assert!(f.get_u64("absent").unwrap().is_none());
    }

    #[test]
    fn every_prefix_of_a_file_is_an_error_not_a_panic() {
        let mut w = GgufWriter::new();
        w.meta("k", GgufValue::Array(vec![GgufValue::U32(1), GgufValue::U32(2)]));
        w.tensor("t", &HostTensor::f32(vec![4], vec![1., 2., 3., 4.]));
        let bytes = w.to_bytes();
        let p = tmp("prefix.gguf");
        for cut in 0..bytes.len() {
            std::fs::write(&p, &bytes[..cut]).unwrap();
            let r = GgufFile::open(&p);
            assert!(r.is_err(), "prefix of {cut} bytes parsed");
        }
    }

    fn open_err(w: &GgufWriter, name: &str) -> String {
        let p = tmp(name);
        w.write(&p).unwrap();
        GgufFile::open(&p).err().expect("the file must be refused").to_string()
    }

    #[test]
    fn duplicates_and_overlaps_are_refused_by_name() {
        let t = HostTensor::f32(vec![8], vec![1.0; 8]);
        let mut w = GgufWriter::new();
        w.meta("a.key", GgufValue::U32(1)).meta_duplicate("a.key", GgufValue::U32(2));
        let e = open_err(&w, "dupkey.gguf");
        assert!(e.contains("metadata `a.key`") && e.contains("appears twice"), "{e}");
        // An array and a scalar under one key too.
        let mut w = GgufWriter::new();
        w.meta("k", GgufValue::Array(vec![GgufValue::U8(1)])).meta_duplicate("k", GgufValue::U8(2));
        assert!(open_err(&w, "dupkey2.gguf").contains("appears twice"));
        let mut w = GgufWriter::new();
        w.tensor("t", &t).tensor("t", &t);
        let e = open_err(&w, "dupname.gguf");
        assert!(e.contains("tensor `t`") && e.contains("appears twice"), "{e}");
        // `b` claims bytes 0..32, the data of `a`.
        let mut w = GgufWriter::new();
        w.tensor("a", &t).tensor_claim("b", &[8], GgmlType::F32, 0);
        let e = open_err(&w, "overlap.gguf");
        assert!(e.contains("tensor `b`") && e.contains("overlaps that of tensor `a`"), "{e}");
        // `c` lies inside `a` without touching `b` next to it: found all the same.
        let mut w = GgufWriter::new();
        w.tensor_raw("a", &[64], GgmlType::F32, vec![0; 256]).tensor_claim("b", &[0], GgmlType::F32, 32).tensor_claim(
            "c",
            &[8],
            GgmlType::F32,
            64,
        );
        assert!(open_err(&w, "overlap2.gguf").contains("tensor `c`"));
    }

    #[test]
    fn offsets_and_sizes_that_overflow_are_errors_not_wraps() {
        let mut w = GgufWriter::new();
        // Same header size as the hostile file below.
        w.tensor("evil", &HostTensor::f32(vec![8], vec![1.0; 8]));
        let data_offset = GgufFile::open({
            let p = tmp("ok.gguf");
            w.write(&p).unwrap();
            p
        })
        .unwrap()
        .data_offset;
        // data_offset + offset wraps to 0, the file's start, if added unchecked.
        let wrap = 0u64.wrapping_sub(data_offset);
        let mut w = GgufWriter::new();
        w.tensor_claim("evil", &[8], GgmlType::F32, wrap);
        let e = open_err(&w, "wrap.gguf");
        assert!(e.contains("tensor `evil`") && e.contains("truncated"), "{e}");
        // The element count fits in 64 bits, the byte size does not.
        let mut w = GgufWriter::new();
        w.tensor_claim("huge", &[1 << 32, 1 << 31], GgmlType::F32, 0);
        let e = open_err(&w, "bytes.gguf");
        assert!(e.contains("tensor `huge`") && e.contains("2^64 bytes"), "{e}");
        let mut w = GgufWriter::new();
        w.tensor_claim("dims", &[1 << 40, 1 << 40], GgmlType::F32, 0);
        assert!(open_err(&w, "dims.gguf").contains("overflow"));
    }

    #[test]
    fn array_counts_beyond_the_file_are_refused_before_allocating() {
        // A u32 array claiming 2^40 elements in a file of a few dozen bytes.
        let mut bytes = GgufWriter::new().meta("arr", GgufValue::Array(vec![GgufValue::U32(1)])).to_bytes();
        let count_at = bytes.windows(3).position(|w| w == b"arr").unwrap() + 3 + 4 + 4;
        bytes[count_at..count_at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let p = tmp("arrcount.gguf");
        std::fs::write(&p, &bytes).unwrap();
        let e = GgufFile::open(&p).err().unwrap().to_string();
        assert!(e.contains("metadata `arr`") && e.contains("1099511627776 elements"), "{e}");
    }

    #[test]
    fn wrong_magic_names_what_was_found() {
        let p = tmp("magic.gguf");
        std::fs::write(&p, b"PK\x03\x04rest of a zip").unwrap();
        let e = GgufFile::open(&p).err().unwrap().to_string();
        assert!(e.contains("not a GGUF file") && e.contains("PK"), "{e}");
    }
}
