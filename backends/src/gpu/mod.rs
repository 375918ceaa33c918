//! GPU backends: a Llama decoder over a paged KV cache in device memory,
//! on NVIDIA (CUDA, feature `cuda`) and AMD (ROCm, feature `rocm`) devices.
//!
//! # Layers
//! - [`kernels`]: one kernel source tree (`backends/kernels/`) in the common
//!   subset of CUDA and HIP, compiled at load by NVRTC or hiprtc.
//! - [`ops::GpuOps`]: what a device runtime provides — buffers, copies, one
//!   method per kernel, GEMM (cuBLAS / hipBLAS, else the shared tiled kernel).
//! - [`reference`]: the CPU reference of every kernel and [`reference::HostOps`],
//!   a `GpuOps` on the host, so the forward pass is tested in CI without a GPU.
//! - [`runner::Decoder`]: the forward pass, written once against `GpuOps`.
//! - [`GpuBackend`]: the [`Backend`] contract over a `Decoder`.
//!
//! # Invariants
//! - Block `b` of a block table is block `b` of the device pool; the pool
//!   has the engine's block size.
//! - A sequence's tokens depend only on its own tokens and positions: every
//!   token row attends only to its own sequence's cached keys, and sampling
//!   is seeded per (sequence, position).
//! - No device, no driver, no library: a typed `Unavailable` error, never a panic.

pub mod check;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod kernels;
pub mod launch;
pub mod ops;
pub mod reference;
#[cfg(feature = "rocm")]
pub mod rocm;
pub mod runner;
pub mod weights;

use std::path::PathBuf;
use std::time::Instant;

use crate::contract::{self, Backend, BackendKind, DeviceInfo, StepOutput, StepPlan};
use crate::error::BackendError;
use crate::model_config::ModelConfig;
use crate::profile::Vendor;
use ops::{GpuOps, StoreType};
use runner::Decoder;
use weights::ModelWeights;

/// How to start a GPU backend.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuConfig {
    /// Model directory: `config.json` and `model.safetensors` (or an index of shards).
    pub model_dir: PathBuf,
    /// Device ordinal.
    pub ordinal: u32,
    /// Element type of weights and KV cache.
    pub store: StoreType,
    /// Tokens per KV block; must equal the engine's.
    pub block_size: u32,
    /// KV blocks in the pool; `None` fills `memory_fraction` of the device.
    pub kv_blocks: Option<u32>,
    /// Share of device memory this backend may use (weights + KV + activations).
    pub memory_fraction: f64,
    /// Most tokens one step computes (sizes the activation reserve).
    pub max_batched_tokens: u32,
    /// Most sequences one step runs (sizes the logits reserve).
    pub max_num_seqs: u32,
}

impl GpuConfig {
    /// Defaults for a model directory.
    pub fn new(model_dir: impl Into<PathBuf>) -> Self {
        Self {
            model_dir: model_dir.into(),
            ordinal: 0,
            store: StoreType::Bf16,
            block_size: 16,
            kv_blocks: None,
            memory_fraction: 0.9,
            max_batched_tokens: 2048,
            max_num_seqs: 256,
        }
    }
}

/// Device memory one step's activations and logits need at most, bytes.
fn activation_bytes(cfg: &GpuConfig, model: &ModelConfig, store: StoreType) -> u64 {
    let t = u64::from(cfg.max_batched_tokens);
    let h = u64::from(model.hidden_size);
    let q = u64::from(model.num_attention_heads) * u64::from(model.head_dim());
    let qkv = q + 2 * u64::from(model.kv_heads()) * u64::from(model.head_dim());
    let inter = u64::from(model.intermediate_size);
    let s = store.bytes() as u64;
    // Scratch grows to powers of two: reserve twice the f32 and store rows.
    let per_token = 4 * (h + qkv + 2 * inter) + s * (h + q + inter) + 4 * 8;
    let logits = u64::from(model.vocab_size) * 4 + h * (4 + s);
    2 * (t * per_token + u64::from(cfg.max_num_seqs) * logits)
}

/// Bytes of one KV block across all layers (K and V).
pub fn block_bytes(model: &ModelConfig, block_size: u32, store: StoreType) -> u64 {
    2 * u64::from(model.num_hidden_layers)
        * u64::from(model.kv_heads())
        * u64::from(model.head_dim())
        * u64::from(block_size)
        * store.bytes() as u64
}

/// Sizes the KV pool: what `memory_fraction` of the device leaves after
/// weights and activations. Refuses a model that cannot also hold one
/// sequence of its full context (up to 8,192 tokens).
pub fn plan_kv_blocks(
    cfg: &GpuConfig,
    model: &ModelConfig,
    store: StoreType,
    free: u64,
    total: u64,
) -> Result<u32, BackendError> {
    let weights = weights::weight_bytes(model, store.bytes());
    let acts = activation_bytes(cfg, model, store);
    let per_block = block_bytes(model, cfg.block_size, store);
    let min_blocks = model
        .max_position_embeddings
        .min(8192)
        .div_ceil(cfg.block_size);
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    if let Some(n) = cfg.kv_blocks {
        let need = weights + acts + u64::from(n) * per_block;
        if need > free {
            return Err(BackendError::DoesNotFit(format!(
                "weights {:.2} GiB + activations {:.2} GiB + {n} KV blocks {:.2} GiB > {:.2} GiB free",
                gib(weights),
                gib(acts),
                gib(u64::from(n) * per_block),
                gib(free)
            )));
        }
        return Ok(n);
    }
    let used_by_others = total.saturating_sub(free);
    let budget = ((total as f64 * cfg.memory_fraction) as u64).saturating_sub(used_by_others);
    let left = budget.saturating_sub(weights + acts);
    let blocks = (left / per_block.max(1)).min(u64::from(u32::MAX)) as u32;
    if blocks < min_blocks {
        return Err(BackendError::DoesNotFit(format!(
            "{} weights {:.2} GiB + activations {:.2} GiB leave {:.2} GiB of the {:.2} GiB budget \
             ({:.0}% of {:.2} GiB, {:.2} GiB used by others): room for {blocks} KV blocks, \
             one {}-token sequence needs {min_blocks}",
            store,
            gib(weights),
            gib(acts),
            gib(left),
            gib(budget),
            cfg.memory_fraction * 100.0,
            gib(total),
            gib(used_by_others),
            min_blocks * cfg.block_size
        )));
    }
    Ok(blocks)
}

/// A GPU (or the host reference) executing step plans with a resident decoder.
pub struct GpuBackend<O: GpuOps> {
    decoder: Decoder<O>,
    info: DeviceInfo,
    model: ModelConfig,
}

impl<O: GpuOps> GpuBackend<O> {
    /// Loads the model of `cfg` onto the device behind `ops` and sizes its KV pool.
    pub fn new(
        ops: O,
        cfg: &GpuConfig,
        kind: BackendKind,
        vendor: Vendor,
        name: String,
    ) -> Result<Self, BackendError> {
        let model = ModelConfig::load(&cfg.model_dir)?;
        let store = ops.store_type();
        let (free, total) = ops.memory()?;
        let blocks = plan_kv_blocks(cfg, &model, store, free, total)?;
        let weights = ModelWeights::load(&cfg.model_dir, &model)?;
        let decoder = Decoder::new(ops, &model, &weights, cfg.block_size, blocks)?;
        Ok(Self {
            decoder,
            info: DeviceInfo {
                kind,
                vendor,
                name,
                memory_bytes: total,
                kv_blocks: blocks,
                block_size: cfg.block_size,
            },
            model,
        })
    }
}

impl GpuBackend<reference::HostOps> {
    /// The decoder on the CPU reference with a fixed pool: the trusted side
    /// of device checks and of the tests.
    pub fn host_reference(
        dir: &std::path::Path,
        store: StoreType,
        block_size: u32,
        kv_blocks: u32,
    ) -> Result<Self, BackendError> {
        let cfg = GpuConfig {
            block_size,
            kv_blocks: Some(kv_blocks),
            ..GpuConfig::new(dir)
        };
        GpuBackend::new(
            reference::HostOps::new(store, u64::MAX / 4),
            &cfg,
            BackendKind::Cuda,
            Vendor::Nvidia,
            format!("CPU reference ({store})"),
        )
    }
}

impl<O: GpuOps> Backend for GpuBackend<O> {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn execute(&mut self, plan: &StepPlan<'_>) -> Result<StepOutput, BackendError> {
        let started = Instant::now();
        let blocks = self.decoder.num_blocks();
        // Copies first: a retried step is planned without them.
        contract::check_copies(&plan.copies, blocks)?;
        self.decoder.copy(&plan.copies)?;
        contract::check_seqs(
            &plan.seqs,
            self.info.block_size,
            blocks,
            self.model.vocab_size,
        )?;
        let mut out = self.decoder.run(plan)?;
        out.elapsed = started.elapsed();
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
