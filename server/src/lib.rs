//! The live server: configuration, device workers, the OpenAI-compatible
//! HTTP API, admin endpoints and Prometheus metrics.
//!
//! Threads: one OS thread per device runs its engine (`worker`), a watchdog
//! thread detects hung steps, and a tokio runtime serves HTTP. Each request
//! is a tokio task (`generate`) that routes, relays tokens and re-routes on
//! device failure.

#![warn(missing_docs)]

pub mod admin;
pub mod api;
pub mod autoscale;
pub mod epp;
pub mod fleet;
pub mod generate;
pub mod http;
pub mod logprobs;
pub mod metrics;
pub mod state;
pub mod tier;
pub mod tokenizer;
pub mod worker;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::serve::ListenerExt;
use switchyard_backends::ProfileError;

pub use fleet::LiveFleet;
pub use switchyard_scheduler::config::{self, Config};

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The config file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] switchyard_scheduler::config::ConfigError),
    /// A profile or model spec is invalid.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// No configured device could start.
    #[error("no usable device: {0}")]
    NoUsableDevice(String),
    /// A reload was refused.
    #[error("{0}")]
    Reload(String),
    /// Socket or thread trouble.
    #[error("I/O: {0}")]
    Io(String),
    /// The metrics recorder could not be installed.
    #[error("metrics: {0}")]
    Metrics(String),
}

/// Where the server reads its config and listens.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The config, as loaded from `config_path` (the caller sizes the
    /// runtime from it before the server starts).
    pub config: Config,
    /// Config file (also re-read by `/admin/reload`).
    pub config_path: PathBuf,
    /// Overrides `server.addr`.
    pub addr: Option<SocketAddr>,
    /// Plans replicas per pool when `[autoscale]` is enabled.
    pub planner: Option<Arc<dyn autoscale::ReplicaPlanner>>,
}

/// Starts the replica planner if the config enables it.
fn start_autoscaler(
    fleet: &Arc<LiveFleet>,
    config: &Config,
    planner: Option<Arc<dyn autoscale::ReplicaPlanner>>,
) -> Result<(), ServerError> {
    if !config.autoscale.enabled {
        return Ok(());
    }
    let planner = planner.ok_or_else(|| {
        ServerError::Io("[autoscale] is enabled but no replica planner was provided".into())
    })?;
    tokio::spawn(autoscale::run(fleet.clone(), config.clone(), planner));
    Ok(())
}

/// Runs the server until SIGTERM or Ctrl-C, then drains in-flight requests
/// (bounded by `server.drain_timeout_s`) and stops the devices.
pub async fn serve(opts: ServeOptions) -> Result<(), ServerError> {
    let config = opts.config;
    let prometheus = metrics::install().map_err(ServerError::Metrics)?;
    let fleet = LiveFleet::start(&config)?;
    start_autoscaler(&fleet, &config, opts.planner.clone())?;
    let addr = opts.addr.unwrap_or(config.server.addr);
    let state = Arc::new(state::AppState {
        fleet: fleet.clone(),
        prometheus,
        api_keys: config.server.api_keys.clone(),
        admin_key: config.server.admin_key.clone(),
        config_path: Some(opts.config_path.clone()),
    });
    let app = http::app(state, config.server.max_body_bytes);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ServerError::Io(format!("bind {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| ServerError::Io(e.to_string()))?;
    // Nagle + delayed ACK would add ~40 ms to every streamed token.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    println!("switchyard listening on http://{local}");
    tracing::info!(%local, model = fleet.served_name(), "listening");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut stop_wait = stop_rx.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop_wait.wait_for(|s| *s).await;
    });
    let drain = config.server.drain_timeout;
    let mut server = Box::pin(server.into_future());
    tokio::select! {
        res = &mut server => res.map_err(|e| ServerError::Io(e.to_string()))?,
        () = shutdown_signal() => {
            tracing::info!(pending = fleet.pending(), "shutting down: draining in-flight requests");
            let _ = stop_tx.send(true);
            if tokio::time::timeout(drain, &mut server).await.is_err() {
                tracing::warn!(pending = fleet.pending(), "drain timeout; closing remaining requests");
            }
        }
    }
    drop(stop_rx);
    let f = fleet.clone();
    let _ = tokio::task::spawn_blocking(move || f.shutdown()).await;
    Ok(())
}

/// Runs `switchyard epp`: the endpoint picker over the config's `[[endpoints]]`.
/// `config` is `config_path`'s, as loaded by the caller.
pub async fn serve_epp(
    config: Config,
    config_path: PathBuf,
    addrs: epp::EppAddrs,
    planner: Option<Arc<dyn autoscale::ReplicaPlanner>>,
) -> Result<(), ServerError> {
    if !config.devices.is_empty() {
        return Err(ServerError::NoUsableDevice(format!(
            "{}: the endpoint picker routes to [[endpoints]] only; it has {} [[devices]]",
            config_path.display(),
            config.devices.len()
        )));
    }
    if config.endpoints.is_empty() {
        return Err(ServerError::NoUsableDevice(format!(
            "{}: the endpoint picker needs at least one [[endpoints]] entry",
            config_path.display()
        )));
    }
    let prometheus = metrics::install().map_err(ServerError::Metrics)?;
    let fleet = LiveFleet::start(&config)?;
    start_autoscaler(&fleet, &config, planner)?;
    tracing::info!(
        model = fleet.served_name(),
        endpoints = config.endpoints.len(),
        "endpoint picker starting"
    );
    let monitoring = Arc::new(state::AppState {
        fleet: fleet.clone(),
        prometheus,
        api_keys: config.server.api_keys.clone(),
        admin_key: config.server.admin_key.clone(),
        config_path: Some(config_path.clone()),
    });
    epp::run(fleet.clone(), addrs, monitoring, shutdown_signal()).await?;
    let _ = tokio::task::spawn_blocking(move || fleet.shutdown()).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
