//! NVIDIA devices through `cudarc` (driver API, NVRTC, cuBLAS), all opened
//! at run time: the build needs no CUDA toolkit, and a host without a
//! driver or device gets a typed `Unavailable` error.
//!
//! The kernels of `backends/kernels/` are compiled by NVRTC for the
//! device's compute capability when the backend starts. GEMMs run on
//! cuBLAS (`cublasGemmEx`, f32 accumulation) when `libcublas` loads, else
//! on the shared tiled kernel.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::cublas::{sys as blas_sys, CudaBlas};
use cudarc::driver::{
    sys as drv_sys, CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig,
    PushKernelArg,
};
use cudarc::nvrtc::{self, CompileOptions};

use super::kernels::{self, Target};
use super::launch::{Gemm, Geometry, KArg, KernelOps, KernelRuntime};
use super::ops::StoreType;
use super::{GpuBackend, GpuConfig};
use crate::contract::BackendKind;
use crate::error::BackendError;
use crate::profile::Vendor;

/// Compiles the shared kernels to PTX with NVRTC (no driver or device
/// needed); returns the PTX text.
pub fn compile_ptx(capability: (u32, u32), store: StoreType) -> Result<String, BackendError> {
    // SAFETY: only probes whether the library can be opened.
    if !unsafe { nvrtc::sys::is_culib_present() } {
        return Err(BackendError::Unavailable(
            "NVRTC (libnvrtc.so.13) not found: pip install \"nvidia-cuda-nvrtc==13.0.*\" \
             and put its nvidia/cu13/lib on LD_LIBRARY_PATH"
                .into(),
        ));
    }
    let opts = CompileOptions {
        options: Target::Cuda { capability }.options(store),
        name: Some("llama.cu".into()),
        ..Default::default()
    };
    let ptx = nvrtc::compile_ptx_with_opts(kernels::SOURCE, opts).map_err(|e| match e {
        nvrtc::CompileError::CompileError { log, .. } => BackendError::InvalidModel(format!(
            "NVRTC failed for sm_{}{}: {}",
            capability.0,
            capability.1,
            log.to_string_lossy()
        )),
        other => BackendError::Unavailable(format!("NVRTC: {other}")),
    })?;
    Ok(ptx.to_src())
}

/// What `cuda_device` found.
#[derive(Debug, Clone, PartialEq)]
pub struct CudaDeviceInfo {
    /// Name the driver reports.
    pub name: String,
    /// Compute capability.
    pub capability: (u32, u32),
    /// Total memory, bytes.
    pub memory_bytes: u64,
}

fn unavailable(what: impl std::fmt::Display) -> BackendError {
    BackendError::Unavailable(format!("cuda: {what}"))
}

fn step_err(what: impl std::fmt::Display) -> BackendError {
    BackendError::StepFailed(format!("cuda: {what}"))
}

/// Opens device `ordinal`, or says why it cannot.
fn open_context(ordinal: u32) -> Result<Arc<CudaContext>, BackendError> {
    // SAFETY: only probes whether the library can be opened; without it
    // `CudaContext::new` would panic.
    if !unsafe { drv_sys::is_culib_present() } {
        return Err(unavailable(
            "libcuda not found (no NVIDIA driver on this host)",
        ));
    }
    let count = CudaContext::device_count().map_err(|e| unavailable(format!("no device: {e}")))?;
    if ordinal as i32 >= count {
        return Err(unavailable(format!(
            "device {ordinal} requested, {count} present"
        )));
    }
    CudaContext::new(ordinal as usize).map_err(unavailable)
}

/// Describes device `ordinal` without loading anything onto it.
pub fn cuda_device(ordinal: u32) -> Result<CudaDeviceInfo, BackendError> {
    let ctx = open_context(ordinal)?;
    describe(&ctx)
}

fn describe(ctx: &Arc<CudaContext>) -> Result<CudaDeviceInfo, BackendError> {
    let (ma, mi) = ctx.compute_capability().map_err(unavailable)?;
    Ok(CudaDeviceInfo {
        name: ctx.name().map_err(unavailable)?,
        capability: (ma as u32, mi as u32),
        memory_bytes: ctx.total_mem().map_err(unavailable)? as u64,
    })
}

/// Starts a CUDA backend for `cfg` on device `cfg.ordinal`.
pub fn open(cfg: &GpuConfig) -> Result<GpuBackend<CudaOps>, BackendError> {
    let rt = CudaRuntime::new(cfg.ordinal, cfg.store)?;
    let d = rt.device.clone();
    let gemm = if rt.blas.is_some() {
        "cuBLAS"
    } else {
        "tiled kernel"
    };
    let name = format!(
        "{} (sm_{}{}, {}, GEMM: {gemm})",
        d.name, d.capability.0, d.capability.1, cfg.store
    );
    GpuBackend::new(KernelOps(rt), cfg, BackendKind::Cuda, Vendor::Nvidia, name)
}

/// The decoder's operations on a CUDA device.
pub type CudaOps = KernelOps<CudaRuntime>;

/// One CUDA device: context, stream, compiled kernels and cuBLAS.
pub struct CudaRuntime {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: Option<CudaBlas>,
    store: StoreType,
    functions: HashMap<&'static str, CudaFunction>,
    device: CudaDeviceInfo,
}

// SAFETY: the context, stream, module functions and cuBLAS handle are used
// by one thread at a time (the device's worker owns the backend), and the
// context is bound to the calling thread before every allocation and copy.
unsafe impl Send for CudaRuntime {}

impl CudaRuntime {
    /// Opens device `ordinal` and compiles the kernels for it.
    pub fn new(ordinal: u32, store: StoreType) -> Result<Self, BackendError> {
        let ctx = open_context(ordinal)?;
        let device = describe(&ctx)?;
        // One stream per device: cudarc's cross-stream event tracking is not needed.
        // SAFETY: no other stream of this context is used.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let ptx = compile_ptx(device.capability, store)?;
        let module = ctx
            .load_module(nvrtc::Ptx::from_src(ptx))
            .map_err(|e| unavailable(format!("loading kernels: {e}")))?;
        let mut functions = HashMap::new();
        for name in kernels::KERNELS {
            let f = module
                .load_function(name)
                .map_err(|e| unavailable(format!("kernel {name}: {e}")))?;
            functions.insert(name, f);
        }
        // SAFETY: only probes whether the library can be opened.
        let blas = if unsafe { blas_sys::is_culib_present() } {
            Some(CudaBlas::new(stream.clone()).map_err(|e| unavailable(format!("cuBLAS: {e}")))?)
        } else {
            None
        };
        Ok(Self {
            ctx,
            stream,
            blas,
            store,
            functions,
            device,
        })
    }

    /// What the device is.
    pub fn device(&self) -> &CudaDeviceInfo {
        &self.device
    }

    fn bind(&self) -> Result<(), BackendError> {
        self.ctx.bind_to_thread().map_err(step_err)
    }
}

impl KernelRuntime for CudaRuntime {
    type Mem = CudaSlice<u8>;

    fn store_type(&self) -> StoreType {
        self.store
    }

    fn warp_size(&self) -> u32 {
        Target::Cuda {
            capability: self.device.capability,
        }
        .warp_size()
    }

    fn alloc_bytes(&mut self, bytes: usize) -> Result<CudaSlice<u8>, BackendError> {
        self.bind()?;
        self.stream
            .alloc_zeros::<u8>(bytes)
            .map_err(|e| BackendError::DoesNotFit(format!("cuda: allocating {bytes} bytes: {e}")))
    }

    fn address(&self, mem: &CudaSlice<u8>) -> u64 {
        mem.device_ptr(&self.stream).0
    }

    fn write(&mut self, mem: &mut CudaSlice<u8>, bytes: &[u8]) -> Result<(), BackendError> {
        self.bind()?;
        if bytes.len() > mem.len() {
            return Err(step_err("upload larger than its buffer"));
        }
        self.stream
            .memcpy_htod(bytes, &mut mem.slice_mut(..bytes.len()))
            .map_err(step_err)
    }

    fn read(&mut self, mem: &CudaSlice<u8>, out: &mut [u8]) -> Result<(), BackendError> {
        self.bind()?;
        if out.len() > mem.len() {
            return Err(step_err("download larger than its buffer"));
        }
        self.stream
            .memcpy_dtoh(&mem.slice(..out.len()), out)
            .map_err(step_err)?;
        self.stream.synchronize().map_err(step_err)
    }

    fn launch(&self, name: &str, g: Geometry, args: &[KArg]) -> Result<(), BackendError> {
        let f = self
            .functions
            .get(name)
            .ok_or_else(|| step_err(format!("kernel {name} not loaded")))?;
        let mut b = self.stream.launch_builder(f);
        for a in args {
            match a {
                KArg::Ptr(p) => b.arg(p),
                KArg::I32(v) => b.arg(v),
                KArg::F32(v) => b.arg(v),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: g.grid,
            block_dim: (g.block.0, g.block.1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: argument lists mirror the kernel signatures in llama.cu
        // (see launch.rs), and every buffer was sized by the decoder.
        unsafe { b.launch(cfg) }
            .map(|_| ())
            .map_err(|e| step_err(format!("{name}: {e}")))
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
        let blas = self.blas.as_ref()?;
        let dt = match self.store {
            StoreType::Bf16 => blas_sys::cudaDataType::CUDA_R_16BF,
            StoreType::F32 => blas_sys::cudaDataType::CUDA_R_32F,
        };
        let alpha = 1.0f32;
        let beta = if accumulate { 1.0f32 } else { 0.0 };
        // SAFETY: addresses of live device buffers of the sizes the decoder
        // allocated for these dimensions; the handle is bound to this stream.
        let r = unsafe {
            cudarc::cublas::result::gemm_ex(
                *blas.handle(),
                blas_sys::cublasOperation_t::CUBLAS_OP_T,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                n as i32,
                m as i32,
                k as i32,
                (&alpha as *const f32).cast(),
                w as *const std::ffi::c_void,
                dt,
                k as i32,
                x as *const std::ffi::c_void,
                dt,
                k as i32,
                (&beta as *const f32).cast(),
                y as *mut std::ffi::c_void,
                blas_sys::cudaDataType::CUDA_R_32F,
                n as i32,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        };
        Some(r.map_err(|e| step_err(format!("cublasGemmEx: {e:?}"))))
    }

    fn synchronize(&mut self) -> Result<(), BackendError> {
        self.stream.synchronize().map_err(step_err)
    }

    fn memory(&self) -> Result<(u64, u64), BackendError> {
        self.bind()?;
        let (free, total) = self.ctx.mem_get_info().map_err(unavailable)?;
        Ok((free as u64, total as u64))
    }
}
