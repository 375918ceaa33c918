//! Opening a backend from a checked device specification: the one place
//! `serve`, `profile` and the load generator turn configuration into a
//! running backend. A backend whose runtime is not part of this build
//! (cargo features `onnx`, `cuda`, `rocm`) is reported unavailable, so a
//! fleet runs on the devices it can start.

use std::path::PathBuf;

use crate::fault::{FaultPlan, FaultyBackend};
use crate::gpu::GpuConfig;
use crate::{Backend, BackendError, CostModel, SimBackend, SimConfig};

/// What one device runs, checked per backend kind.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendSpec {
    /// Simulated steps priced by the cost model.
    Sim(SimConfig),
    /// ONNX Runtime on the CPU.
    Onnx(OnnxConfig),
    /// An NVIDIA GPU through CUDA.
    Cuda(GpuConfig),
    /// An AMD GPU through ROCm.
    Rocm(GpuConfig),
}

/// How to start an ONNX backend (defined whether or not the runtime is
/// built in, so configuration checks the same everywhere).
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxConfig {
    /// The model directory (`model.onnx`, `config.json`, `tokenizer.json`).
    pub model_dir: PathBuf,
    /// The ONNX Runtime shared library; `None` reads `ORT_DYLIB_PATH`.
    pub library: Option<PathBuf>,
    /// Tokens per KV block; must equal the engine's.
    pub block_size: u32,
    /// KV blocks in the pool; `None` sizes the pool by `kv_cache_bytes`.
    pub kv_blocks: Option<u32>,
    /// Host memory for the KV pool when `kv_blocks` is `None`, bytes.
    pub kv_cache_bytes: u64,
    /// ONNX Runtime intra-op threads; 0 lets it choose (one per physical core).
    pub intra_threads: usize,
    /// Let ONNX Runtime's idle threads spin between operators instead of
    /// sleeping on a futex (a wake-up per operator costs milliseconds a step
    /// over a 30-layer graph). Off in the library, for hosts shared with other
    /// busy work; the default `switchyard.toml` turns it on: on a 2-vCPU host,
    /// SmolLM2-135M's batch-1 step went from 25.8 to 18.5 ms and 8 and 32
    /// concurrent requests ran 1.1-1.25x faster. (Before decode batches kept
    /// their past in place, spinning lost at 8 concurrent: 15 against 22
    /// tokens/s, the spinning threads starving the gather between runs.)
    pub intra_spinning: bool,
    /// Largest padded/real token ratio of one graph run (see the `onnx` module's batching); infinity runs each step as one batch.
    pub max_padding_ratio: f64,
}

impl OnnxConfig {
    /// Default [`Self::intra_spinning`].
    pub const DEFAULT_SPINNING: bool = false;

    /// Defaults for the model in `model_dir`.
    pub fn new(model_dir: impl Into<PathBuf>) -> Self {
        Self {
            model_dir: model_dir.into(),
            library: None,
            block_size: 16,
            kv_blocks: None,
            kv_cache_bytes: 512 << 20,
            intra_threads: 0,
            intra_spinning: Self::DEFAULT_SPINNING,
            max_padding_ratio: 1.5,
        }
    }
}

/// A device to open: its backend and, in tests, injected faults.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSpec {
    /// The backend.
    pub backend: BackendSpec,
    /// Faults to inject (never set in production).
    pub fault: Option<FaultPlan>,
}

/// Opens the device `spec` describes, priced by `cost` where it simulates.
pub fn open(spec: &DeviceSpec, cost: &CostModel) -> Result<Box<dyn Backend>, BackendError> {
    let backend = open_backend(&spec.backend, cost)?;
    Ok(match spec.fault {
        Some(plan) => Box::new(FaultyBackend::new(backend, plan)),
        None => backend,
    })
}

fn open_backend(spec: &BackendSpec, cost: &CostModel) -> Result<Box<dyn Backend>, BackendError> {
    match spec {
        BackendSpec::Sim(c) => Ok(Box::new(SimBackend::new(cost.clone(), *c)?)),
        BackendSpec::Onnx(o) => open_onnx(o),
        BackendSpec::Cuda(g) => open_cuda(g),
        BackendSpec::Rocm(g) => open_rocm(g),
    }
}

/// Why a backend is missing from this build.
#[cfg(not(all(feature = "onnx", feature = "cuda", feature = "rocm")))]
fn not_built(kind: &str, feature: &str) -> BackendError {
    BackendError::Unavailable(format!(
        "the {kind} backend is not part of this build (build with `--features {feature}`)"
    ))
}

#[cfg(feature = "onnx")]
fn open_onnx(o: &OnnxConfig) -> Result<Box<dyn Backend>, BackendError> {
    Ok(Box::new(crate::onnx::OnnxBackend::new(o.clone())?))
}

#[cfg(not(feature = "onnx"))]
fn open_onnx(_: &OnnxConfig) -> Result<Box<dyn Backend>, BackendError> {
    Err(not_built("onnx", "onnx"))
}

#[cfg(feature = "cuda")]
fn open_cuda(g: &GpuConfig) -> Result<Box<dyn Backend>, BackendError> {
    Ok(Box::new(crate::gpu::cuda::open(g)?))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_: &GpuConfig) -> Result<Box<dyn Backend>, BackendError> {
    Err(not_built("cuda", "cuda"))
}

#[cfg(feature = "rocm")]
fn open_rocm(g: &GpuConfig) -> Result<Box<dyn Backend>, BackendError> {
    Ok(Box::new(crate::gpu::rocm::open(g)?))
}

#[cfg(not(feature = "rocm"))]
fn open_rocm(_: &GpuConfig) -> Result<Box<dyn Backend>, BackendError> {
    Err(not_built("rocm", "rocm"))
}
