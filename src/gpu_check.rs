//! `switchyard gpu-check`: a GPU (or the host reference) against the CPU
//! reference — every kernel on random inputs, greedy generation end to end,
//! decode step times with achieved memory bandwidth — written as one JSON file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use switchyard_backends::gpu::check::{compare_kernels, greedy_alone, time_decode};
use switchyard_backends::gpu::ops::{GpuOps, StoreType};
use switchyard_backends::gpu::reference::HostOps;
use switchyard_backends::gpu::{GpuBackend, GpuConfig};
use switchyard_backends::model_config::ModelConfig;
use switchyard_backends::Backend;

/// What to check.
#[derive(Debug, clap::Args)]
pub struct GpuCheckArgs {
    /// `cuda`, `rocm`, or `host` (the reference against itself: a dry run).
    #[arg(long)]
    backend: String,
    /// Model directories for the generation check (config.json + model.safetensors).
    #[arg(long, value_delimiter = ',', default_value = "models/tiny")]
    models: Vec<PathBuf>,
    /// Models for the decode timings (the `bench` and `gpu1b` models on a GPU).
    #[arg(long, value_delimiter = ',')]
    timing_model: Vec<PathBuf>,
    /// Decode batch sizes to time.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    batches: Vec<usize>,
    /// Decode contexts to time.
    #[arg(long, value_delimiter = ',', default_value = "512,4096")]
    contexts: Vec<usize>,
    /// The card's peak memory bandwidth, GB/s (for the achieved fraction).
    #[arg(long)]
    peak_gbps: Option<f64>,
    /// Tokens generated per prompt.
    #[arg(long, default_value_t = 32)]
    tokens: usize,
    /// Device ordinal.
    #[arg(long, default_value_t = 0)]
    ordinal: u32,
    /// Where to write the JSON results.
    #[arg(long)]
    out: PathBuf,
}

/// Prompts as token ids (inside every test model's byte-level vocabulary).
fn prompts() -> Vec<Vec<u32>> {
    let text = [
        "The quick brown fox jumps over the lazy dog.",
        "Paged attention reads keys and values through a block table",
        "1 2 3 4 5 6 7 8 9 10 11 12",
        "a",
    ];
    text.iter()
        .map(|t| {
            std::iter::once(1)
                .chain(t.bytes().map(|b| u32::from(b) + 3))
                .collect()
        })
        .collect()
}

fn host_backend(dir: &Path, store: StoreType, blocks: u32) -> Result<GpuBackend<HostOps>> {
    Ok(GpuBackend::host_reference(dir, store, 16, blocks)?)
}

/// Opens the checked device's runtime and its backends.
trait Device {
    type Ops: GpuOps;
    fn ops(&self, store: StoreType) -> Result<Self::Ops>;
    fn backend(&self, cfg: &GpuConfig) -> Result<Box<dyn Backend>>;
}

struct Host;

impl Device for Host {
    type Ops = HostOps;
    fn ops(&self, store: StoreType) -> Result<HostOps> {
        Ok(HostOps::new(store, u64::MAX / 4))
    }
    fn backend(&self, cfg: &GpuConfig) -> Result<Box<dyn Backend>> {
        let c = GpuConfig {
            kv_blocks: Some(cfg.kv_blocks.unwrap_or(4096)),
            ..cfg.clone()
        };
        Ok(Box::new(host_backend(
            &c.model_dir,
            c.store,
            c.kv_blocks.unwrap_or(4096),
        )?))
    }
}

#[cfg(feature = "cuda")]
struct Cuda(u32);

#[cfg(feature = "cuda")]
impl Device for Cuda {
    type Ops = switchyard_backends::gpu::cuda::CudaOps;
    fn ops(&self, store: StoreType) -> Result<Self::Ops> {
        use switchyard_backends::gpu::{cuda::CudaRuntime, launch::KernelOps};
        Ok(KernelOps(CudaRuntime::new(self.0, store)?))
    }
    fn backend(&self, cfg: &GpuConfig) -> Result<Box<dyn Backend>> {
        Ok(Box::new(switchyard_backends::gpu::cuda::open(cfg)?))
    }
}

#[cfg(feature = "rocm")]
struct Rocm(u32);

#[cfg(feature = "rocm")]
impl Device for Rocm {
    type Ops = switchyard_backends::gpu::rocm::HipOps;
    fn ops(&self, store: StoreType) -> Result<Self::Ops> {
        use switchyard_backends::gpu::{launch::KernelOps, rocm::HipRuntime};
        Ok(KernelOps(HipRuntime::new(self.0, store)?))
    }
    fn backend(&self, cfg: &GpuConfig) -> Result<Box<dyn Backend>> {
        Ok(Box::new(switchyard_backends::gpu::rocm::open(cfg)?))
    }
}

/// Runs the checks named by `args` and writes their results.
pub fn run(args: GpuCheckArgs) -> Result<()> {
    let report = match args.backend.as_str() {
        "host" => check(&Host, &args)?,
        #[cfg(feature = "cuda")]
        "cuda" => check(&Cuda(args.ordinal), &args)?,
        #[cfg(feature = "rocm")]
        "rocm" => check(&Rocm(args.ordinal), &args)?,
        other => bail!(
            "backend `{other}` is not part of this build (host, cuda, rocm with --features rocm)"
        ),
    };
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(&args.out, text + "\n")
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("gpu-check: wrote {}", args.out.display());
    Ok(())
}

fn check<D: Device>(dev: &D, args: &GpuCheckArgs) -> Result<Value> {
    let mut kernels = Vec::new();
    for store in [StoreType::F32, StoreType::Bf16] {
        let mut ops = dev.ops(store).context("opening the device")?;
        let mut reference = HostOps::new(store, u64::MAX / 4);
        let errs = compare_kernels(&mut ops, &mut reference, 20_241_126)?;
        eprintln!("kernels ({store}):");
        for e in &errs {
            eprintln!(
                "  {:<45} max_abs {:.3e}  max_rel {:.3e}",
                e.kernel, e.max_abs, e.max_rel
            );
        }
        kernels.push(json!({"store": store.to_string(), "kernels": errs}));
    }
    let mut generation = Vec::new();
    for dir in &args.models {
        let prompts = prompts();
        let mut reference = host_backend(dir, StoreType::F32, 512)?;
        let want = greedy_alone(&mut reference, &prompts, args.tokens)?;
        for store in [StoreType::F32, StoreType::Bf16] {
            let cfg = GpuConfig {
                ordinal: args.ordinal,
                store,
                kv_blocks: Some(512),
                ..GpuConfig::new(dir)
            };
            let mut b = dev.backend(&cfg)?;
            let got = greedy_alone(b.as_mut(), &prompts, args.tokens)?;
            let agree: Vec<usize> = got
                .iter()
                .zip(&want)
                .map(|(g, w)| g.iter().zip(w).take_while(|(a, b)| a == b).count())
                .collect();
            eprintln!(
                "generation {} ({store}): identical prefix per prompt {agree:?} of {}",
                dir.display(),
                args.tokens
            );
            generation.push(json!({
                "model": dir.display().to_string(), "store": store.to_string(),
                "device": b.info().name, "identical": got == want,
                "identical_prefix": agree, "tokens": got, "reference": want,
            }));
        }
    }
    let mut decode = Vec::new();
    for dir in &args.timing_model {
        let model = ModelConfig::load(dir)?;
        let cfg = GpuConfig {
            ordinal: args.ordinal,
            store: StoreType::Bf16,
            ..GpuConfig::new(dir)
        };
        let mut b = dev.backend(&cfg)?;
        let weights = model.num_params() as f64 * 2.0;
        let kv_per_token = 2.0
            * f64::from(model.num_hidden_layers)
            * f64::from(model.kv_heads())
            * f64::from(model.head_dim())
            * 2.0;
        for &ctx in &args.contexts {
            for &batch in &args.batches {
                let bytes = |bt: usize, c: usize| weights + (bt * (c + 1)) as f64 * kv_per_token;
                match time_decode(b.as_mut(), batch, ctx, 20, bytes) {
                    Ok(t) => {
                        let frac = args.peak_gbps.map(|p| t.achieved_bytes_per_s / (p * 1e9));
                        eprintln!(
                            "decode {} batch {batch:>3} context {ctx:>5}: {:.3} ms, {:.0} GB/s{}",
                            dir.display(),
                            t.step_s * 1e3,
                            t.achieved_bytes_per_s / 1e9,
                            frac.map(|f| format!(" ({:.0}% of peak)", f * 100.0))
                                .unwrap_or_default()
                        );
                        decode.push(json!({"timing": t, "fraction_of_peak": frac}));
                    }
                    Err(e) => {
                        decode.push(json!({"batch": batch, "context": ctx, "error": e.to_string()}))
                    }
                }
            }
        }
    }
    Ok(json!({
        "backend": args.backend,
        "kernels": kernels,
        "generation": generation,
        "decode": decode,
    }))
}
