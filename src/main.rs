//! The `switchyard` command line: a thin edge over the library crates.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use switchyard_backends::{Catalog, CostModel};

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
    /// Print cost-model predictions for a model on one or more device profiles.
    Cost {
        /// Model spec name (profiles/models/NAME.toml).
        #[arg(long, default_value = "llama-3.1-8b")]
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
        Command::Cost {
            model,
            devices,
            prefill,
            context,
            profiles,
        } => cost_table(&Catalog::new(profiles), &model, devices, prefill, context),
        Command::CheckProfiles { profiles } => check_profiles(&Catalog::new(profiles)),
    }
}

fn serve(config: PathBuf, addr: Option<std::net::SocketAddr>) -> Result<()> {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime
        .block_on(switchyard_scheduler::server::serve(
            switchyard_scheduler::server::ServeOptions {
                config_path: config,
                addr,
            },
        ))
        .context("server")?;
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
