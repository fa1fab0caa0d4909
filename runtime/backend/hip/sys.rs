//! The few functions of AMD's HIP runtime (libamdhip64) and its run-time compiler (hiprtc)
//! the HIP backend calls, loaded when it is first opened: fdpp builds without ROCm, and a
//! machine without it gets an error naming the library. Signatures as in ROCm's
//! hip_runtime_api.h and hiprtc.h (stable from ROCm 5 to 6 for these functions).

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::sync::OnceLock;

use libloading::Library;

pub type HipError = c_int;
pub type Stream = *mut c_void;
pub type Event = *mut c_void;
pub type Module = *mut c_void;
pub type Function = *mut c_void;
pub type Graph = *mut c_void;
pub type GraphExec = *mut c_void;
pub type Program = *mut c_void;
pub type DevicePtr = *mut c_void;

pub const SUCCESS: HipError = 0;
pub const ERROR_OUT_OF_MEMORY: HipError = 2;
/// `hipStreamCaptureModeThreadLocal`.
pub const CAPTURE_THREAD_LOCAL: c_int = 1;
/// `hipStreamNonBlocking`.
pub const STREAM_NON_BLOCKING: c_uint = 1;
/// hipHostMallocMapped: host memory kernels reach at hipHostGetDevicePointer's address.
pub const HOST_MALLOC_MAPPED: c_uint = 2;

/// Offsets in `hipDeviceProp_t` as `hipGetDevicePropertiesR0000` (ROCm 6) or the unversioned
/// `hipGetDeviceProperties` (ROCm 5) fill it: ROCm 5's layout, `hipDeviceProp_tR0000` in ROCm 6.
pub mod props {
    pub const NAME: usize = 0;
    pub const WARP_SIZE: usize = 276;
    pub const MULTIPROCESSOR_COUNT: usize = 336;
    pub const GCN_ARCH_NAME: usize = 396;
    pub const NAME_LEN: usize = 256;
    /// Room for the whole struct (792 bytes in ROCm 5.2) with a margin.
    pub const BYTES: usize = 4096;
}

/// The first of `names` that `lib` exports, as a function of type `T`.
///
/// # Safety
/// Each of `names` must be a function of type `T` in `lib`.
unsafe fn first_symbol<T: Copy>(lib: &Library, names: &[&str], file: &str) -> Result<T, String> {
    for name in names {
        // SAFETY: the caller vouches for the type.
        if let Ok(f) = unsafe { lib.get::<T>(name.as_bytes()) } {
            return Ok(*f);
        }
    }
    Err(format!("{file} has no {} (ROCm 5.2 or newer is needed)", names.join(" or ")))
}

/// A table of functions, each loaded by its own name or (tried first) by the alternatives
/// written after it (`name | "alternative"`): newer ROCm versions rename a few.
macro_rules! api {
    ($table:ident { $($name:ident $(| $alt:literal)*: fn($($arg:ty),*) -> $ret:ty;)* }) => {
        #[allow(non_snake_case)]
        pub struct $table {
            _lib: Library,
            $(pub $name: unsafe extern "C" fn($($arg),*) -> $ret,)*
        }

        impl $table {
            /// # Safety
            /// `lib` must be the library these declarations describe.
            unsafe fn from(lib: Library, file: &str) -> Result<$table, String> {
                Ok($table {
                    // SAFETY: the caller vouches that each symbol has the declared signature.
                    $($name: unsafe { first_symbol::<unsafe extern "C" fn($($arg),*) -> $ret>(&lib, &[$($alt,)* stringify!($name)], file) }?,)*
                    _lib: lib,
                })
            }
        }
    };
}

api!(Runtime {
    hipInit: fn(c_uint) -> HipError;
    hipGetErrorString: fn(HipError) -> *const c_char;
    hipGetDeviceCount: fn(*mut c_int) -> HipError;
    hipSetDevice: fn(c_int) -> HipError;
    // ROCm 6 keeps ROCm 5's layout under this name (and under the unversioned one, which
    // ROCm 5 has alone); `props` reads that layout.
    hipGetDeviceProperties | "hipGetDevicePropertiesR0000": fn(*mut c_void, c_int) -> HipError;
    hipRuntimeGetVersion: fn(*mut c_int) -> HipError;
    hipMemGetInfo: fn(*mut usize, *mut usize) -> HipError;
    hipMalloc: fn(*mut DevicePtr, usize) -> HipError;
    hipFree: fn(DevicePtr) -> HipError;
    hipHostMalloc: fn(*mut *mut c_void, usize, c_uint) -> HipError;
    hipHostFree: fn(*mut c_void) -> HipError;
    hipHostGetDevicePointer: fn(*mut DevicePtr, *mut c_void, c_uint) -> HipError;
    hipMemcpyHtoDAsync: fn(DevicePtr, *const c_void, usize, Stream) -> HipError;
    hipMemcpyDtoHAsync: fn(*mut c_void, DevicePtr, usize, Stream) -> HipError;
    hipMemsetAsync: fn(DevicePtr, c_int, usize, Stream) -> HipError;
    hipStreamCreateWithFlags: fn(*mut Stream, c_uint) -> HipError;
    hipStreamSynchronize: fn(Stream) -> HipError;
    hipStreamDestroy: fn(Stream) -> HipError;
    hipEventCreate: fn(*mut Event) -> HipError;
    hipEventRecord: fn(Event, Stream) -> HipError;
    hipEventSynchronize: fn(Event) -> HipError;
    hipEventElapsedTime: fn(*mut f32, Event, Event) -> HipError;
    hipEventDestroy: fn(Event) -> HipError;
    hipModuleLoadData: fn(*mut Module, *const c_void) -> HipError;
    hipModuleGetFunction: fn(*mut Function, Module, *const c_char) -> HipError;
    hipModuleUnload: fn(Module) -> HipError;
    hipModuleLaunchKernel: fn(Function, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, Stream, *mut *mut c_void, *mut *mut c_void) -> HipError;
    hipStreamBeginCapture: fn(Stream, c_int) -> HipError;
    hipStreamEndCapture: fn(Stream, *mut Graph) -> HipError;
    hipGraphInstantiate: fn(*mut GraphExec, Graph, *mut c_void, *mut c_char, usize) -> HipError;
    hipGraphLaunch: fn(GraphExec, Stream) -> HipError;
    hipGraphExecDestroy: fn(GraphExec) -> HipError;
    hipGraphDestroy: fn(Graph) -> HipError;
});

api!(Rtc {
    hiprtcGetErrorString: fn(c_int) -> *const c_char;
    hiprtcCreateProgram: fn(*mut Program, *const c_char, *const c_char, c_int, *const *const c_char, *const *const c_char) -> c_int;
    hiprtcCompileProgram: fn(Program, c_int, *const *const c_char) -> c_int;
    hiprtcGetProgramLogSize: fn(Program, *mut usize) -> c_int;
    hiprtcGetProgramLog: fn(Program, *mut c_char) -> c_int;
    hiprtcGetCodeSize: fn(Program, *mut usize) -> c_int;
    hiprtcGetCode: fn(Program, *mut c_char) -> c_int;
    hiprtcDestroyProgram: fn(*mut Program) -> c_int;
});

/// Where the runtime is looked for (the unversioned name is a development symlink; ROCm 6
/// and 5 install the versioned ones).
pub const RUNTIME_FILES: &[&str] = &["libamdhip64.so", "libamdhip64.so.6", "libamdhip64.so.5"];
/// hiprtc has its own library from ROCm 5.3 on; before that libamdhip64 exports it.
pub const RTC_FILES: &[&str] =
    &["libhiprtc.so", "libhiprtc.so.6", "libhiprtc.so.5", "libamdhip64.so", "libamdhip64.so.6", "libamdhip64.so.5"];

/// Folders searched after the system's library path: ROCm installs into /opt/rocm, which
/// the loader is not always told of.
fn rocm_dirs() -> Vec<String> {
    let mut dirs: Vec<String> = std::env::var("ROCM_PATH").ok().filter(|p| !p.is_empty()).map(|p| format!("{p}/lib")).into_iter().collect();
    dirs.push("/opt/rocm/lib".into());
    dirs
}

/// The first of `files` (in the library path, then in `dirs`) that loads and has every
/// function of the table, or why none does.
fn open<T>(files: &[&str], dirs: &[String], what: &str, table: unsafe fn(Library, &str) -> Result<T, String>) -> Result<T, String> {
    let mut why = vec![];
    let candidates = files.iter().map(|f| f.to_string()).chain(dirs.iter().flat_map(|d| files.iter().map(move |f| format!("{d}/{f}"))));
    for file in candidates {
        // SAFETY: loading runs the library's initialisers; ROCm's are sound to run in any
        // process (they register the runtime, no device is touched until hipInit).
        let Ok(lib) = (unsafe { Library::new(&file) }) else { continue };
        // SAFETY: `files` are the libraries the table's declarations describe.
        match unsafe { table(lib, &file) } {
            Ok(t) => return Ok(t),
            Err(e) => why.push(e),
        }
    }
    if why.is_empty() {
        Err(format!(
            "{what} ({}) was not found in the library path or in {}: install ROCm's HIP runtime (e.g. the `rocm-hip-runtime` package) or set ROCM_PATH, or use --backend wgpu or cpu",
            files[0],
            dirs.join(", ")
        ))
    } else {
        Err(why.join("; "))
    }
}

/// The HIP runtime, loaded once per process.
pub fn runtime() -> Result<&'static Runtime, String> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME.get_or_init(|| open(RUNTIME_FILES, &rocm_dirs(), "AMD's HIP runtime", Runtime::from)).as_ref().map_err(Clone::clone)
}

/// hiprtc, loaded once per process.
pub fn rtc() -> Result<&'static Rtc, String> {
    static RTC: OnceLock<Result<Rtc, String>> = OnceLock::new();
    RTC.get_or_init(|| open(RTC_FILES, &rocm_dirs(), "HIP's run-time compiler hiprtc", Rtc::from)).as_ref().map_err(Clone::clone)
}

/// The text of a static C string a library returned, if it is not null.
///
/// # Safety
/// `s` must be null or a NUL-terminated string that outlives the call.
unsafe fn library_text(s: *const c_char) -> Option<String> {
    // SAFETY: as the caller vouches.
    (!s.is_null()).then(|| unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned())
}

/// A HIP error code as the runtime words it.
pub fn error_string(rt: &Runtime, e: HipError) -> String {
    // SAFETY: hipGetErrorString returns a static NUL-terminated string for any code (or null).
    match unsafe { library_text((rt.hipGetErrorString)(e)) } {
        Some(text) => format!("{text} ({e})"),
        None => format!("HIP error {e}"),
    }
}

/// A hiprtc result code as hiprtc words it.
pub fn rtc_error_string(rtc: &Rtc, code: c_int) -> String {
    // SAFETY: hiprtcGetErrorString returns a static NUL-terminated string for any code (or null).
    unsafe { library_text((rtc.hiprtcGetErrorString)(code)) }.unwrap_or_else(|| format!("hiprtc error {code}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A library that loads but lacks a function of the table is named with the function.
    #[test]
    fn a_library_without_the_functions_is_named() {
        let Err(why) = open(&["libc.so.6"], &[], "AMD's HIP runtime", Runtime::from) else { panic!("libc is not HIP") };
        assert!(why.contains("libc.so.6 has no hipInit"), "{why}");
    }

    #[test]
    fn a_missing_library_is_named() {
        let dirs = ["/nonexistent/rocm/lib".to_string()];
        let Err(why) = open(&["libfdpp-no-such-library.so"], &dirs, "AMD's HIP runtime", Runtime::from) else { panic!("loaded") };
        assert!(why.contains("(libfdpp-no-such-library.so) was not found"), "{why}");
        assert!(why.contains("/nonexistent/rocm/lib") && why.contains("--backend wgpu"), "{why}");
    }
}
