//! AMD devices through HIP (`hip-sys` links `libamdhip64`), running the
//! kernels of `backends/kernels/` compiled at load by hiprtc for the
//! architecture the device reports.
//!
//! # What has run where
//! Compile-tested only: hiprtc builds every kernel for `gfx90a` in CI
//! (Debian's HIP 5.2). No AMD GPU has executed this module yet;
//! `scripts/rocm-check.sh` holds the checks for a host that has one.
//!
//! # Safety notes
//! - hip-sys's `hipError_t` is a Rust enum generated from 5.4 headers; a
//!   runtime returning a code it does not list would be undefined
//!   behaviour, so the calls made here are declared with `i32` results.
//! - Debian's hiprtc (HIP 5.2) aborts the process when asked for
//!   gfx940/941/942; [`check_target`] refuses those before HIP 5.7.
//! - hiprtc (inside `libamdhip64` up to ROCm 5.x, `libhiprtc` from 6.0) and
//!   hipBLAS are opened with `libloading`; Debian packages neither hipBLAS
//!   nor rocBLAS, so without it GEMMs run on the shared tiled kernel.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::ptr;

use libloading::Library;

use super::kernels::{self, Target};
use super::launch::{Gemm, Geometry, KArg, KernelOps, KernelRuntime};
use super::ops::StoreType;
use super::{GpuBackend, GpuConfig};
use crate::contract::BackendKind;
use crate::error::BackendError;
use crate::profile::Vendor;

use hip_sys::hiprt::{hipDeviceProp_t, hipFunction_t, hipModule_t, hipStream_t};

// Declared here with plain i32 results (see the module doc); linked through hip-sys.
extern "C" {
    fn hipGetDeviceCount(count: *mut c_int) -> i32;
    fn hipSetDevice(id: c_int) -> i32;
    fn hipRuntimeGetVersion(v: *mut c_int) -> i32;
    fn hipDeviceGetName(name: *mut c_char, len: c_int, device: c_int) -> i32;
    fn hipGetDeviceProperties(prop: *mut hipDeviceProp_t, id: c_int) -> i32;
    fn hipMemGetInfo(free: *mut usize, total: *mut usize) -> i32;
    fn hipMalloc(p: *mut *mut c_void, size: usize) -> i32;
    fn hipFree(p: *mut c_void) -> i32;
    fn hipMemsetAsync(p: *mut c_void, value: c_int, size: usize, stream: hipStream_t) -> i32;
    fn hipMemcpyHtoDAsync(dst: *mut c_void, src: *mut c_void, size: usize, s: hipStream_t) -> i32;
    fn hipMemcpyDtoHAsync(dst: *mut c_void, src: *mut c_void, size: usize, s: hipStream_t) -> i32;
    fn hipStreamCreate(s: *mut hipStream_t) -> i32;
    fn hipStreamSynchronize(s: hipStream_t) -> i32;
    fn hipModuleLoadData(m: *mut hipModule_t, image: *const c_void) -> i32;
    fn hipModuleGetFunction(f: *mut hipFunction_t, m: hipModule_t, name: *const c_char) -> i32;
    #[allow(clippy::too_many_arguments)]
    fn hipModuleLaunchKernel(
        f: hipFunction_t,
        gx: c_uint,
        gy: c_uint,
        gz: c_uint,
        bx: c_uint,
        by: c_uint,
        bz: c_uint,
        shared: c_uint,
        stream: hipStream_t,
        params: *mut *mut c_void,
        extra: *mut *mut c_void,
    ) -> i32;
}

const HIP_SUCCESS: i32 = 0;
const HIP_ERROR_NO_DEVICE: i32 = 100;
/// First HIP runtime version whose hiprtc knows gfx940/941/942.
const HIP_MI300_MIN_VERSION: i32 = 50_700_000;

fn unavailable(what: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable(format!("rocm: {what}"))
}

fn check(code: i32, what: &str) -> Result<(), BackendError> {
    if code == HIP_SUCCESS {
        Ok(())
    } else {
        Err(BackendError::StepFailed(format!(
            "rocm: {what}: hipError {code}"
        )))
    }
}

/// HIP runtime version (e.g. 50221153 for 5.2), if the runtime answers.
pub fn runtime_version() -> Option<i32> {
    let mut v = 0;
    // SAFETY: writes one int.
    (unsafe { hipRuntimeGetVersion(&mut v) } == HIP_SUCCESS).then_some(v)
}

/// Refuses targets the installed hiprtc cannot compile without aborting.
pub fn check_target(arch: &str, version: i32) -> Result<(), BackendError> {
    if !arch.starts_with("gfx") || !arch[3..].chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(unavailable(format!(
            "`{arch}` is not an AMD GPU architecture"
        )));
    }
    if arch.starts_with("gfx94") && version < HIP_MI300_MIN_VERSION {
        return Err(unavailable(format!(
            "{arch} (MI300) needs HIP >= 5.7; this runtime is {}.{} — install a current ROCm",
            version / 10_000_000,
            version / 100_000 % 100
        )));
    }
    Ok(())
}

/// hiprtc's entry points.
struct Hiprtc {
    _lib: Library,
    create: unsafe extern "C" fn(
        *mut *mut c_void,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> i32,
    compile: unsafe extern "C" fn(*mut c_void, c_int, *const *const c_char) -> i32,
    log_size: unsafe extern "C" fn(*mut c_void, *mut usize) -> i32,
    log: unsafe extern "C" fn(*mut c_void, *mut c_char) -> i32,
    code_size: unsafe extern "C" fn(*mut c_void, *mut usize) -> i32,
    code: unsafe extern "C" fn(*mut c_void, *mut c_char) -> i32,
    destroy: unsafe extern "C" fn(*mut *mut c_void) -> i32,
}

impl Hiprtc {
    fn open() -> Result<Self, BackendError> {
        let mut last = String::new();
        for name in [
            "libhiprtc.so",
            "libhiprtc.so.6",
            "libamdhip64.so",
            "libamdhip64.so.5",
        ] {
            // SAFETY: loading the HIP runtime compiler; its initialisers are trusted.
            let lib = match unsafe { Library::new(name) } {
                Ok(l) => l,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            match Self::bind(lib) {
                Ok(h) => return Ok(h),
                Err(e) => last = e.to_string(),
            }
        }
        Err(unavailable(format!(
            "hiprtc not found (apt-get install libamdhip64-dev, or a ROCm install): {last}"
        )))
    }

    /// Takes the entry points out of `lib`, which the struct then keeps open.
    fn bind(lib: Library) -> Result<Self, libloading::Error> {
        // SAFETY: the symbols have these C signatures in every HIP release;
        // the function pointers stay valid while `_lib` keeps the library loaded.
        unsafe {
            Ok(Self {
                create: *lib.get(b"hiprtcCreateProgram\0")?,
                compile: *lib.get(b"hiprtcCompileProgram\0")?,
                log_size: *lib.get(b"hiprtcGetProgramLogSize\0")?,
                log: *lib.get(b"hiprtcGetProgramLog\0")?,
                code_size: *lib.get(b"hiprtcGetCodeSize\0")?,
                code: *lib.get(b"hiprtcGetCode\0")?,
                destroy: *lib.get(b"hiprtcDestroyProgram\0")?,
                _lib: lib,
            })
        }
    }
}

/// Compiles the shared kernels with hiprtc for `arch`; returns the code object.
pub fn compile_code_object(arch: &str, store: StoreType) -> Result<Vec<u8>, BackendError> {
    let version = runtime_version().ok_or_else(|| unavailable("HIP runtime does not answer"))?;
    check_target(arch, version)?;
    let rtc = Hiprtc::open()?;
    let src = CString::new(kernels::SOURCE).map_err(unavailable)?;
    let name = c"llama.cu";
    let opts: Vec<CString> = Target::Hip { arch: arch.into() }
        .options(store)
        .into_iter()
        .filter_map(|o| CString::new(o).ok())
        .collect();
    let opt_ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
    let mut prog: *mut c_void = ptr::null_mut();
    // SAFETY: hiprtc C API with valid NUL-terminated strings; the program is destroyed below.
    unsafe {
        let rc = (rtc.create)(
            &mut prog,
            src.as_ptr(),
            name.as_ptr(),
            0,
            ptr::null(),
            ptr::null(),
        );
        if rc != 0 {
            return Err(unavailable(format!("hiprtcCreateProgram: {rc}")));
        }
        let rc = (rtc.compile)(prog, opt_ptrs.len() as c_int, opt_ptrs.as_ptr());
        let result = if rc != 0 {
            let mut n = 0usize;
            (rtc.log_size)(prog, &mut n);
            let mut log = vec![0u8; n + 1];
            (rtc.log)(prog, log.as_mut_ptr().cast());
            let text = CStr::from_bytes_until_nul(&log)
                .map(|c| c.to_string_lossy().into_owned())
                .unwrap_or_default();
            Err(BackendError::InvalidModel(format!(
                "hiprtc failed for {arch}: {text}"
            )))
        } else {
            let mut n = 0usize;
            (rtc.code_size)(prog, &mut n);
            let mut code = vec![0u8; n];
            (rtc.code)(prog, code.as_mut_ptr().cast());
            Ok(code)
        };
        (rtc.destroy)(&mut prog);
        result
    }
}

/// hipBLAS, when the host has it (ROCm 5.x / 6.x `hipblasDatatype_t` ABI).
struct HipBlas {
    _lib: Library,
    handle: *mut c_void,
    gemm_ex: unsafe extern "C" fn(
        *mut c_void,
        c_int,
        c_int,
        c_int,
        c_int,
        c_int,
        *const c_void,
        *const c_void,
        c_int,
        c_int,
        *const c_void,
        c_int,
        c_int,
        *const c_void,
        *mut c_void,
        c_int,
        c_int,
        c_int,
        c_int,
    ) -> i32,
}

const HIPBLAS_OP_N: c_int = 111;
const HIPBLAS_OP_T: c_int = 112;
const HIPBLAS_R_32F: c_int = 151;
const HIPBLAS_R_16B: c_int = 168;
const HIPBLAS_GEMM_DEFAULT: c_int = 160;
/// ROCm 7 switched `hipblasGemmEx` to the v2 types; older ABIs only.
const HIP_BLAS_MAX_VERSION: i32 = 70_000_000;

impl HipBlas {
    fn open(stream: hipStream_t, version: i32) -> Option<Self> {
        if version >= HIP_BLAS_MAX_VERSION {
            return None;
        }
        for name in [
            "libhipblas.so",
            "libhipblas.so.2",
            "libhipblas.so.1",
            "libhipblas.so.0",
        ] {
            // SAFETY: loading hipBLAS; symbols have these C signatures in ROCm 5.x/6.x.
            unsafe {
                let Ok(lib) = Library::new(name) else {
                    continue;
                };
                let create: Result<
                    libloading::Symbol<unsafe extern "C" fn(*mut *mut c_void) -> i32>,
                    _,
                > = lib.get(b"hipblasCreate\0");
                let set_stream: Result<
                    libloading::Symbol<unsafe extern "C" fn(*mut c_void, hipStream_t) -> i32>,
                    _,
                > = lib.get(b"hipblasSetStream\0");
                let gemm = lib.get(b"hipblasGemmEx\0");
                let (Ok(create), Ok(set_stream), Ok(gemm)) = (create, set_stream, gemm) else {
                    continue;
                };
                let mut handle = ptr::null_mut();
                if create(&mut handle) != 0 || set_stream(handle, stream) != 0 {
                    continue;
                }
                let gemm_ex = *gemm;
                return Some(Self {
                    _lib: lib,
                    handle,
                    gemm_ex,
                });
            }
        }
        None
    }
}

/// Describes device `ordinal`: name, architecture, memory.
#[derive(Debug, Clone, PartialEq)]
pub struct HipDeviceInfo {
    /// Marketing name.
    pub name: String,
    /// `gcnArchName` up to the first `:` (feature flags dropped).
    pub arch: String,
    /// Total memory, bytes.
    pub memory_bytes: u64,
    /// HIP runtime version.
    pub runtime_version: i32,
}

/// Finds device `ordinal`, or says why it cannot.
pub fn hip_device(ordinal: u32) -> Result<HipDeviceInfo, BackendError> {
    let mut count = 0;
    // SAFETY: writes one int.
    let rc = unsafe { hipGetDeviceCount(&mut count) };
    if rc == HIP_ERROR_NO_DEVICE || (rc == HIP_SUCCESS && count == 0) {
        return Err(unavailable("no AMD GPU on this host (hipErrorNoDevice)"));
    }
    if rc != HIP_SUCCESS {
        return Err(unavailable(format!("hipGetDeviceCount: hipError {rc}")));
    }
    if ordinal as i32 >= count {
        return Err(unavailable(format!(
            "device {ordinal} requested, {count} present"
        )));
    }
    let version = runtime_version().unwrap_or(0);
    let mut name = [0 as c_char; 256];
    // SAFETY: the buffer holds 256 chars.
    check(
        unsafe { hipDeviceGetName(name.as_mut_ptr(), 256, ordinal as c_int) },
        "name",
    )?;
    // The runtime may be newer than the bindings' struct: give it room to spare.
    let mut props = vec![0u64; 8192 / 8];
    // SAFETY: the buffer is larger than any hipDeviceProp_t layout and 8-aligned.
    check(
        unsafe { hipGetDeviceProperties(props.as_mut_ptr().cast(), ordinal as c_int) },
        "properties",
    )?;
    // SAFETY: reading fields of the bindings' layout out of the filled buffer.
    let (arch_raw, memory) = unsafe {
        let p = &*(props.as_ptr().cast::<hipDeviceProp_t>());
        (p.gcnArchName, p.totalGlobalMem as u64)
    };
    let arch_bytes: Vec<u8> = arch_raw
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    let arch = String::from_utf8_lossy(&arch_bytes)
        .split(':')
        .next()
        .unwrap_or_default()
        .to_string();
    if !arch.starts_with("gfx") {
        return Err(unavailable(format!(
            "could not read the device architecture (got {arch:?}) from this HIP runtime"
        )));
    }
    // SAFETY: NUL-terminated by the runtime within 256 chars.
    let name = unsafe { CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    Ok(HipDeviceInfo {
        name,
        arch,
        memory_bytes: memory,
        runtime_version: version,
    })
}

/// Starts a ROCm backend for `cfg` on device `cfg.ordinal`.
pub fn open(cfg: &GpuConfig) -> Result<GpuBackend<HipOps>, BackendError> {
    let rt = HipRuntime::new(cfg.ordinal, cfg.store)?;
    let d = rt.device.clone();
    let gemm = if rt.blas.is_some() {
        "hipBLAS"
    } else {
        "tiled kernel"
    };
    let name = format!("{} ({}, {}, GEMM: {gemm})", d.name, d.arch, cfg.store);
    GpuBackend::new(KernelOps(rt), cfg, BackendKind::Rocm, Vendor::Amd, name)
}

/// The decoder's operations on an AMD device.
pub type HipOps = KernelOps<HipRuntime>;

/// A device allocation, freed on drop.
pub struct HipMem {
    bytes: usize,
    ptr: *mut c_void,
}

// SAFETY: device memory is only touched through the owning runtime.
unsafe impl Send for HipMem {}

impl Drop for HipMem {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: allocated by hipMalloc and freed once.
            unsafe { hipFree(self.ptr) };
        }
    }
}

/// One AMD device: stream, compiled kernels and hipBLAS.
pub struct HipRuntime {
    ordinal: c_int,
    stream: hipStream_t,
    store: StoreType,
    functions: Vec<(&'static str, hipFunction_t)>,
    blas: Option<HipBlas>,
    device: HipDeviceInfo,
    warp: u32,
}

// SAFETY: the stream, module functions and hipBLAS handle are used by one
// thread at a time (the device's worker owns the backend), and the device is
// selected on the calling thread before every allocation and copy.
unsafe impl Send for HipRuntime {}

impl HipRuntime {
    /// Opens device `ordinal` and compiles the kernels for its architecture.
    pub fn new(ordinal: u32, store: StoreType) -> Result<Self, BackendError> {
        let device = hip_device(ordinal)?;
        // SAFETY: selects an existing device for this thread.
        check(unsafe { hipSetDevice(ordinal as c_int) }, "hipSetDevice")?;
        let code = compile_code_object(&device.arch, store)?;
        let mut module: hipModule_t = ptr::null_mut();
        // SAFETY: `code` is a complete code object from hiprtc.
        check(
            unsafe { hipModuleLoadData(&mut module, code.as_ptr().cast()) },
            "loading kernels",
        )?;
        let mut functions = Vec::new();
        for name in kernels::KERNELS {
            let c = CString::new(name).map_err(unavailable)?;
            let mut f: hipFunction_t = ptr::null_mut();
            // SAFETY: module loaded above; name NUL-terminated.
            check(
                unsafe { hipModuleGetFunction(&mut f, module, c.as_ptr()) },
                name,
            )?;
            functions.push((name, f));
        }
        let mut stream: hipStream_t = ptr::null_mut();
        // SAFETY: creates a stream on the selected device.
        check(unsafe { hipStreamCreate(&mut stream) }, "hipStreamCreate")?;
        let blas = HipBlas::open(stream, device.runtime_version);
        let warp = Target::Hip {
            arch: device.arch.clone(),
        }
        .warp_size();
        Ok(Self {
            ordinal: ordinal as c_int,
            stream,
            store,
            functions,
            blas,
            device,
            warp,
        })
    }

    /// What the device is.
    pub fn device(&self) -> &HipDeviceInfo {
        &self.device
    }

    fn select(&self) -> Result<(), BackendError> {
        // SAFETY: selects this backend's device on the calling thread.
        check(unsafe { hipSetDevice(self.ordinal) }, "hipSetDevice")
    }

    fn sync(&self, what: &str) -> Result<(), BackendError> {
        // SAFETY: waits on this backend's stream.
        check(unsafe { hipStreamSynchronize(self.stream) }, what)
    }
}

impl KernelRuntime for HipRuntime {
    type Mem = HipMem;

    fn store_type(&self) -> StoreType {
        self.store
    }

    fn warp_size(&self) -> u32 {
        self.warp
    }

    fn alloc_bytes(&mut self, bytes: usize) -> Result<HipMem, BackendError> {
        self.select()?;
        let mut ptr = ptr::null_mut();
        // SAFETY: allocation of `bytes`; freed by HipMem::drop.
        if unsafe { hipMalloc(&mut ptr, bytes) } != HIP_SUCCESS {
            return Err(BackendError::DoesNotFit(format!(
                "rocm: allocating {bytes} bytes"
            )));
        }
        let mem = HipMem { bytes, ptr };
        // SAFETY: zeroes the fresh allocation on this backend's stream.
        check(
            unsafe { hipMemsetAsync(ptr, 0, bytes, self.stream) },
            "memset",
        )?;
        Ok(mem)
    }

    fn address(&self, mem: &HipMem) -> u64 {
        mem.ptr as u64
    }

    fn write(&mut self, mem: &mut HipMem, bytes: &[u8]) -> Result<(), BackendError> {
        if bytes.len() > mem.bytes {
            return Err(BackendError::StepFailed(
                "rocm: upload larger than its buffer".into(),
            ));
        }
        self.select()?;
        // SAFETY: sizes checked; synchronised before `bytes` can be dropped.
        check(
            unsafe {
                hipMemcpyHtoDAsync(
                    mem.ptr,
                    bytes.as_ptr().cast_mut().cast(),
                    bytes.len(),
                    self.stream,
                )
            },
            "upload",
        )?;
        self.sync("upload")
    }

    fn read(&mut self, mem: &HipMem, out: &mut [u8]) -> Result<(), BackendError> {
        if out.len() > mem.bytes {
            return Err(BackendError::StepFailed(
                "rocm: download larger than its buffer".into(),
            ));
        }
        self.select()?;
        // SAFETY: sizes checked; the copy completes before the synchronise returns.
        check(
            unsafe { hipMemcpyDtoHAsync(out.as_mut_ptr().cast(), mem.ptr, out.len(), self.stream) },
            "download",
        )?;
        self.sync("download")
    }

    fn launch(&self, name: &str, g: Geometry, args: &[KArg]) -> Result<(), BackendError> {
        let f = self
            .functions
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f)
            .ok_or_else(|| BackendError::StepFailed(format!("rocm: kernel {name} not loaded")))?;
        let mut params: Vec<*mut c_void> = args
            .iter()
            .map(|a| match a {
                KArg::Ptr(v) => (v as *const u64).cast_mut().cast(),
                KArg::I32(v) => (v as *const i32).cast_mut().cast(),
                KArg::F32(v) => (v as *const f32).cast_mut().cast(),
            })
            .collect();
        // SAFETY: `params` points at values alive for the call; argument lists
        // mirror the kernel signatures in llama.cu (see launch.rs).
        let rc = unsafe {
            hipModuleLaunchKernel(
                f,
                g.grid.0,
                g.grid.1,
                g.grid.2,
                g.block.0,
                g.block.1,
                1,
                0,
                self.stream,
                params.as_mut_ptr(),
                ptr::null_mut(),
            )
        };
        check(rc, name)
    }

    fn blas_gemm(&mut self, g: &Gemm) -> Option<Result<(), BackendError>> {
        let Gemm {
            y,
            x,
            w,
            m,
            n,
            k,
            accumulate,
        } = *g;
        let b = self.blas.as_ref()?;
        let dt = match self.store {
            StoreType::Bf16 => HIPBLAS_R_16B,
            StoreType::F32 => HIPBLAS_R_32F,
        };
        let alpha = 1.0f32;
        let beta = if accumulate { 1.0f32 } else { 0.0 };
        let (m, n, k) = (m as c_int, n as c_int, k as c_int);
        // SAFETY: addresses of live device buffers sized by the decoder.
        let rc = unsafe {
            (b.gemm_ex)(
                b.handle,
                HIPBLAS_OP_T,
                HIPBLAS_OP_N,
                n,
                m,
                k,
                (&alpha as *const f32).cast(),
                w as *const c_void,
                dt,
                k,
                x as *const c_void,
                dt,
                k,
                (&beta as *const f32).cast(),
                y as *mut c_void,
                HIPBLAS_R_32F,
                n,
                HIPBLAS_R_32F,
                HIPBLAS_GEMM_DEFAULT,
            )
        };
        Some(if rc == 0 {
            Ok(())
        } else {
            Err(BackendError::StepFailed(format!(
                "rocm: hipblasGemmEx status {rc}"
            )))
        })
    }

    fn synchronize(&mut self) -> Result<(), BackendError> {
        self.sync("synchronize")
    }

    fn memory(&self) -> Result<(u64, u64), BackendError> {
        self.select()?;
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: writes two sizes.
        check(
            unsafe { hipMemGetInfo(&mut free, &mut total) },
            "hipMemGetInfo",
        )?;
        Ok((free as u64, total as u64))
    }
}
