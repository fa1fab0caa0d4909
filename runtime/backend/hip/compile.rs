//! Kernel sources to loaded modules on AMD GPUs: each family (`native::sources`) is
//! compiled by hiprtc to a code object for the device's own target (e.g.
//! `gfx90a:sramecc+:xnack-`), cached on disk (`sources::cached_compile`, keyed by source,
//! target, HIP version and fdpp version) and loaded; `Kernels` holds every exported function
//! by name. The tensor-core kernels are left out (`FDPP_TENSOR_CORES` 0 under hiprtc).

use std::collections::HashMap;
use std::ffi::{CString, c_char};
use std::path::{Path, PathBuf};

use super::sys;
use crate::backend::native::kernels::exports;
use crate::backend::native::sources::{FAMILIES, cached_compile, source};
use crate::error::{Error, Result};

fn compile_error(family: &str, reason: String) -> Error {
    Error::Backend { backend: "hip".into(), op: format!("compiling the {family} kernels"), reason }
}

/// A hiprtc program, destroyed when dropped.
struct Program<'a> {
    rtc: &'a sys::Rtc,
    raw: sys::Program,
}

impl Drop for Program<'_> {
    fn drop(&mut self) {
        // SAFETY: created by hiprtcCreateProgram and destroyed once.
        unsafe { (self.rtc.hiprtcDestroyProgram)(&mut self.raw) };
    }
}

impl Program<'_> {
    /// The compiler's log (warnings, or why it failed).
    fn log(&self) -> String {
        let mut len = 0usize;
        // SAFETY: a live program; writes one size.
        if unsafe { (self.rtc.hiprtcGetProgramLogSize)(self.raw, &mut len) } != 0 || len == 0 {
            return String::new();
        }
        let mut log = vec![0u8; len];
        // SAFETY: `log` holds the `len` bytes the program said its log takes.
        unsafe { (self.rtc.hiprtcGetProgramLog)(self.raw, log.as_mut_ptr().cast::<c_char>()) };
        String::from_utf8_lossy(log.split(|&b| b == 0).next().unwrap_or_default()).into_owned()
    }
}

/// A code object of `src` for `arch` (a target ID such as `gfx90a` or `gfx90a:xnack-`),
/// compiled by hiprtc. No GPU is needed.
pub fn code_object(rtc: &sys::Rtc, family: &str, src: &str, arch: &str) -> Result<Vec<u8>> {
    let c = |s: &str| CString::new(s).map_err(|_| compile_error(family, format!("a NUL byte in {s:?}")));
    let (text, name) = (c(src)?, c(&format!("{family}.cu"))?);
    let mut raw = std::ptr::null_mut();
    // SAFETY: NUL-terminated source and name, no headers.
    let e = unsafe { (rtc.hiprtcCreateProgram)(&mut raw, text.as_ptr(), name.as_ptr(), 0, std::ptr::null(), std::ptr::null()) };
    if e != 0 {
        return Err(compile_error(family, sys::rtc_error_string(rtc, e)));
    }
    let program = Program { rtc, raw };
    let options = [c(&format!("--offload-arch={arch}"))?, c("-O3")?, c("-std=c++17")?];
    let pointers: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();
    // SAFETY: a live program and `pointers.len()` NUL-terminated options.
    let e = unsafe { (rtc.hiprtcCompileProgram)(program.raw, pointers.len() as i32, pointers.as_ptr()) };
    if e != 0 {
        return Err(compile_error(family, format!("{}: {}", sys::rtc_error_string(rtc, e), program.log())));
    }
    let mut len = 0usize;
    // SAFETY: a compiled program; writes one size.
    let e = unsafe { (rtc.hiprtcGetCodeSize)(program.raw, &mut len) };
    if e != 0 || len == 0 {
        return Err(compile_error(family, format!("no code object ({})", sys::rtc_error_string(rtc, e))));
    }
    let mut code = vec![0u8; len];
    // SAFETY: `code` holds the `len` bytes the program said its code takes.
    let e = unsafe { (rtc.hiprtcGetCode)(program.raw, code.as_mut_ptr().cast::<c_char>()) };
    if e != 0 {
        return Err(compile_error(family, sys::rtc_error_string(rtc, e)));
    }
    Ok(code)
}

/// The code object of one family for `arch`, from the cache in `dir` when it holds a valid
/// entry, else compiled (and stored there when `dir` is given).
pub fn cached_code_object(
    rtc: &sys::Rtc,
    family: &str,
    src: &str,
    arch: &str,
    runtime_version: i32,
    dir: Option<&Path>,
) -> Result<Vec<u8>> {
    cached_compile(family, src, &format!("{arch}|hip {runtime_version}"), "hsaco", dir, || code_object(rtc, family, src, arch))
}

/// The folder of cached code objects (`<fdpp cache>/hip`), if the cache folder is known.
pub fn cache_dir() -> Option<PathBuf> {
    crate::model::hub::cache_dir().ok().map(|d| d.join("hip"))
}

/// Every kernel of the loaded modules, by name.
pub struct Kernels {
    rt: &'static sys::Runtime,
    modules: Vec<sys::Module>,
    functions: HashMap<String, sys::Function>,
}

impl Drop for Kernels {
    fn drop(&mut self) {
        for &m in &self.modules {
            // SAFETY: loaded by hipModuleLoadData and unloaded once, after the stream's work.
            unsafe { (self.rt.hipModuleUnload)(m) };
        }
    }
}

impl Kernels {
    /// Every family compiled for `arch` (or taken from the cache) and loaded on the current
    /// device.
    pub fn load(rt: &'static sys::Runtime, f16: bool, arch: &str, runtime_version: i32) -> Result<Kernels> {
        let rtc = sys::rtc().map_err(|why| Error::BackendUnavailable { backend: "hip".into(), reason: why })?;
        let dir = cache_dir();
        let mut kernels = Kernels { rt, modules: vec![], functions: HashMap::new() };
        for family in FAMILIES {
            let code = cached_code_object(rtc, family.name, &source(family, f16, f16, false), arch, runtime_version, dir.as_deref())?;
            let mut module = std::ptr::null_mut();
            // SAFETY: a code object hiprtc produced for this device's target; the runtime
            // copies it while loading.
            let e = unsafe { (rt.hipModuleLoadData)(&mut module, code.as_ptr().cast()) };
            super::check(rt, &format!("loading the {} kernels", family.name), e)?;
            kernels.modules.push(module);
            for name in exports(family.name, false) {
                let c = CString::new(name.as_str()).expect("kernel names have no NUL");
                let mut f = std::ptr::null_mut();
                // SAFETY: a loaded module; writes one function handle.
                let e = unsafe { (rt.hipModuleGetFunction)(&mut f, module, c.as_ptr()) };
                super::check(rt, &format!("loading kernel {name} of the {} kernels", family.name), e)?;
                kernels.functions.insert(name, f);
            }
        }
        Ok(kernels)
    }

    pub fn function(&self, name: &str) -> Result<sys::Function> {
        self.functions.get(name).copied().ok_or_else(|| Error::Backend {
            backend: "hip".into(),
            op: "launching".into(),
            reason: format!("no kernel {name} on AMD GPUs (the tensor-core kernels are CUDA's only)"),
        })
    }
}
