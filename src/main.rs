//! The `switchyard` command line: a thin edge over the library crates.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use switchyard_backends::{Catalog, CostModel};

mod gpu_check;

/// Hardware-aware LLM serving scheduler for mixed NVIDIA, AMD and CPU fleets.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the OpenAI-compatible API over the configured fleet.
    Serve {
        /// Configuration file.
        #[arg(long, default_value = "switchyard.toml")]
        config: PathBuf,
        /// Listen address (overrides `server.addr`; port 0 picks a free port).
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
    },
    /// Run the Gateway API Inference Extension endpoint picker (Envoy
    /// ext_proc) over the config's `[[endpoints]]`.
    Epp {
        /// Configuration file (the fleet tier's schema).
        #[arg(long, default_value = "switchyard.toml")]
        config: PathBuf,
        /// ext_proc gRPC address.
        #[arg(long, default_value = "0.0.0.0:9002")]
        grpc_addr: std::net::SocketAddr,
        /// gRPC health address (services `liveness`, `readiness`, the ext_proc service).
        #[arg(long, default_value = "0.0.0.0:9003")]
        health_addr: std::net::SocketAddr,
        /// Prometheus `/metrics` address.
        #[arg(long, default_value = "0.0.0.0:9090")]
        metrics_addr: std::net::SocketAddr,
    },
    /// Replay a workload against a live server or a simulated fleet and report.
    Loadgen(switchyard_loadgen::cli::LoadgenArgs),
    /// Search fleet compositions for the cheapest fleet that meets the SLOs.
    Plan(switchyard_loadgen::cli::PlanArgs),
    /// Calibrate a device: sweep step shapes on its real backend, fit the
    /// cost model's coefficients, and write the calibrated profile.
    Profile {
        /// Device id from the config.
        #[arg(long)]
        device: String,
        /// Configuration file.
        #[arg(long, default_value = "switchyard.toml")]
        config: PathBuf,
        /// Where to write the calibrated profile.
        #[arg(long)]
        out: PathBuf,
        /// Measurements per shape.
        #[arg(long, default_value_t = 9)]
        repetitions: u32,
        /// Statistic over repetitions: `median`, or `min` on a shared, busy host.
        #[arg(long, default_value = "median")]
        statistic: switchyard_backends::calibrate::Statistic,
    },
    /// Print cost-model predictions for a model on one or more device profiles.
    Cost {
        /// Model spec name (profiles/models/NAME.toml).
        #[arg(long, default_value = switchyard_scheduler::config::DEFAULT_MODEL_SPEC)]
        model: String,
        /// Device profile names, comma-separated (default: every profile).
        #[arg(long, value_delimiter = ',')]
        devices: Vec<String>,
        /// Prompt tokens for the prefill prediction.
        #[arg(long, default_value_t = 2048)]
        prefill: u32,
        /// Context per sequence for the decode predictions.
        #[arg(long, default_value_t = 2048)]
        context: u32,
        /// Profiles directory.
        #[arg(long, default_value = "profiles")]
        profiles: PathBuf,
    },
    /// Check a GPU against the CPU reference: kernels, generation, decode timing.
    GpuCheck(gpu_check::GpuCheckArgs),
    /// Parse and validate every device profile and model spec.
    CheckProfiles {
        /// Profiles directory.
        #[arg(long, default_value = "profiles")]
        profiles: PathBuf,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, addr } => serve(config, addr),
        Command::Epp {
            config,
            grpc_addr,
            health_addr,
            metrics_addr,
        } => epp(
            config,
            switchyard_server::epp::EppAddrs {
                grpc: grpc_addr,
                health: health_addr,
                metrics: metrics_addr,
            },
        ),
        Command::Loadgen(args) => Ok(switchyard_loadgen::cli::run_loadgen(args)?),
        Command::Plan(args) => Ok(switchyard_loadgen::cli::run_plan(args)?),
        Command::Profile {
            device,
            config,
            out,
            repetitions,
            statistic,
        } => profile(&device, &config, &out, repetitions, statistic),
        Command::Cost {
            model,
            devices,
            prefill,
            context,
            profiles,
        } => cost_table(&Catalog::new(profiles), &model, devices, prefill, context),
        Command::GpuCheck(args) => gpu_check::run(args),
        Command::CheckProfiles { profiles } => check_profiles(&Catalog::new(profiles)),
    }
}

fn serve(config_path: PathBuf, addr: Option<std::net::SocketAddr>) -> Result<()> {
    run_configured(config_path, "server", |config, config_path| {
        switchyard_server::serve(switchyard_server::ServeOptions {
            config,
            config_path,
            addr,
            planner: Some(Arc::new(SimReplicaPlanner)),
        })
    })
}

fn epp(config_path: PathBuf, addrs: switchyard_server::epp::EppAddrs) -> Result<()> {
    run_configured(config_path, "endpoint picker", |config, config_path| {
        switchyard_server::serve_epp(
            config,
            config_path,
            addrs,
            Some(Arc::new(SimReplicaPlanner)),
        )
    })
}

/// Logs to stderr, loads the config at `config_path`, and runs `task` on
/// it to completion on a multi-threaded runtime of `server.worker_threads`
/// threads (unset: tokio's default, `TOKIO_WORKER_THREADS` or one per core).
fn run_configured<F>(
    config_path: PathBuf,
    what: &'static str,
    task: impl FnOnce(switchyard_server::Config, PathBuf) -> F,
) -> Result<()>
where
    F: std::future::Future<Output = std::result::Result<(), switchyard_server::ServerError>>,
{
    init_logging();
    let config = switchyard_server::Config::load(&config_path)?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = config.server.worker_threads {
        builder.worker_threads(n);
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(task(config, config_path)).context(what)?;
    Ok(())
}

/// Plans replicas per pool with the fleet simulator (`switchyard plan`'s
/// search), restricted to the pools' device types.
#[derive(Debug)]
struct SimReplicaPlanner;

impl switchyard_server::autoscale::ReplicaPlanner for SimReplicaPlanner {
    fn plan(
        &self,
        config: &switchyard_scheduler::config::Config,
        observation: &switchyard_server::autoscale::Observation,
        pools: &[switchyard_server::autoscale::Pool],
    ) -> std::result::Result<switchyard_server::autoscale::PlannedReplicas, String> {
        use switchyard_loadgen::autoscale::{
            desired_replicas, ObservedShape, PoolSpec, ReplicaPlanOptions,
        };
        let catalog = Catalog::new(&config.profiles_dir);
        let model = catalog
            .model(&config.model.spec)
            .map_err(|e| e.to_string())?;
        let shapes: Vec<ObservedShape> = observation
            .shapes
            .iter()
            .map(|&(prompt_tokens, output_tokens)| ObservedShape {
                prompt_tokens,
                output_tokens,
            })
            .collect();
        let specs: Vec<PoolSpec> = pools
            .iter()
            .map(|p| PoolSpec {
                pool: p.name.clone(),
                profile: p.profile.clone(),
            })
            .collect();
        let a = &config.autoscale;
        let opts = ReplicaPlanOptions {
            slo: config.router.slo,
            policy: config.router.policy,
            objective: config.router.objective,
            max_replicas: a.max_replicas,
            min_replicas: a.min_replicas,
            simulated_requests: a.simulated_requests,
            profiles_dir: config.profiles_dir.clone(),
        };
        let plan = desired_replicas(&catalog, &model, &shapes, observation.rate, &specs, &opts)
            .map_err(|e| e.to_string())?;
        Ok(switchyard_server::autoscale::PlannedReplicas {
            pools: plan.pools,
            usd_per_hour: plan.usd_per_hour,
            meets_slo: plan.meets_slo,
        })
    }
}

fn init_logging() {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

fn profile(
    device: &str,
    config: &std::path::Path,
    out: &std::path::Path,
    repetitions: u32,
    statistic: switchyard_backends::calibrate::Statistic,
) -> Result<()> {
    use switchyard_backends::calibrate::{self, SweepConfig};
    use switchyard_scheduler::config::Config;
    let cfg = Config::load(config)?;
    let dc = cfg
        .devices
        .iter()
        .find(|d| d.id == device)
        .with_context(|| format!("no device `{device}` in {}", config.display()))?;
    let catalog = Catalog::new(&cfg.profiles_dir);
    // The spec the server prices this device's model with, so the fitted
    // coefficients are the ones its cost model will use.
    let model = catalog.model(&cfg.model.spec)?;
    let base = catalog.device(&dc.profile)?;
    let cost = CostModel::new(base.clone(), model.clone());
    let mut backend = dc
        .spec(&cfg)
        .and_then(|spec| switchyard_backends::open::open(&spec, &cost))
        .with_context(|| format!("starting device `{device}`"))?;
    let sweep = SweepConfig {
        repetitions,
        statistic,
        max_context: model.max_context.min(4096),
        ..SweepConfig::for_model(&model)
    };
    eprintln!(
        "calibrating {device} ({}) for {} ...",
        backend.info().name,
        model.name
    );
    let (fitted, report, samples) = calibrate::profile(backend.as_mut(), &base, &model, &sweep)?;
    let predicted = CostModel::new(fitted.clone(), model.clone());
    println!(
        "{:<44} {:>11} {:>11} {:>8}",
        "shape", "measured", "predicted", "error"
    );
    for s in &samples {
        let p = predicted.step_cost(&s.shape).seconds();
        println!(
            "{:<44} {:>9.3}ms {:>9.3}ms {:>+7.1}%",
            s.point.to_string(),
            s.seconds * 1e3,
            p * 1e3,
            (p / s.seconds - 1.0) * 100.0
        );
    }
    println!(
        "fit over {} shapes: median relative error {:.1}%, max {:.1}%",
        samples.len(),
        report.median_rel_error * 100.0,
        report.max_rel_error * 100.0
    );
    let header = format!(
        "# Calibrated by `switchyard profile --device {device}` on \"{}\" for model {}.\n\
         # Fit: median relative error {:.1}%, max {:.1}% over {} shapes.\n\
         # Hardware figures and price are copied from profiles/devices/{}.toml; see its sources.\n",
        backend.info().name,
        model.name,
        report.median_rel_error * 100.0,
        report.max_rel_error * 100.0,
        samples.len(),
        base.name
    );
    let mut fitted = fitted;
    if let Some(stem) = out.file_stem().and_then(|s| s.to_str()) {
        fitted.name = stem.to_string();
    }
    std::fs::write(out, header + &fitted.to_toml()?)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

fn cost_table(
    catalog: &Catalog,
    model: &str,
    devices: Vec<String>,
    prefill: u32,
    context: u32,
) -> Result<()> {
    let spec = catalog.model(model)?;
    let devices = if devices.is_empty() {
        catalog.device_names()?
    } else {
        devices
    };
    println!(
        "model {model}: {} KV bytes/token, {} state bytes/sequence",
        spec.kv_bytes_per_token(),
        spec.state_bytes_per_sequence()
    );
    println!(
        "{:<10} {:>14} {:>14} {:>15} {:>12} {:>10}",
        "device",
        format!("prefill {prefill}"),
        "decode b=1",
        "decode b=64",
        "KV blocks",
        "USD/h"
    );
    for name in devices {
        let cm = CostModel::new(catalog.device(&name)?, spec.clone());
        let ms = |d: std::time::Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
        let blocks = cm
            .kv_blocks(16, 256, 8192)
            .map(|b| b.to_string())
            .unwrap_or_else(|_| "does not fit".into());
        println!(
            "{:<10} {:>14} {:>14} {:>15} {:>12} {:>10.2}",
            name,
            ms(cm.prefill_time(prefill, 0)),
            ms(cm.decode_step_time(1, u64::from(context))),
            ms(cm.decode_step_time(64, 64 * u64::from(context))),
            blocks,
            cm.device().price_usd_per_hour
        );
    }
    Ok(())
}

fn check_profiles(catalog: &Catalog) -> Result<()> {
    let devices = catalog.device_names()?;
    for name in &devices {
        catalog
            .device(name)
            .with_context(|| format!("device profile {name}"))?;
    }
    let models = catalog.model_names()?;
    for name in &models {
        catalog
            .model(name)
            .with_context(|| format!("model spec {name}"))?;
    }
    println!(
        "{} device profiles and {} model specs are valid",
        devices.len(),
        models.len()
    );
    Ok(())
}
