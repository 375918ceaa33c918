//! The Switchyard node API a tier reads: the node's devices one by one
//! (profile, limits, live load) and a stream of their KV-cache changes.
//! The wire types live here once, for the node that writes them and the
//! tier that reads them.
//!
//! - `GET /switchyard/v1/devices` → [`NodeInventory`].
//! - `GET /switchyard/v1/kv_events` → SSE: one [`KvDiff`] per device with
//!   everything it caches (`snapshot: true`), then every change.
//! - A completion with header [`DEVICE_HEADER`] runs on that device first.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::stream;
use serde::{Deserialize, Serialize};
use switchyard_backends::DeviceProfile;
use switchyard_scheduler::engine::Load;
use tokio::sync::broadcast;

use crate::state::{authorize, SharedState};
use crate::worker::{DeviceShared, DeviceState, Limits};

/// Request header naming the node device a tier chose.
pub const DEVICE_HEADER: &str = "x-switchyard-device";

/// One local device as a node publishes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeDevice {
    /// The node's device id.
    pub id: String,
    /// Its profile, so the tier prices it without a copy of the node's files.
    pub profile: DeviceProfile,
    /// Profile name.
    pub profile_name: String,
    /// Takes work now.
    pub healthy: bool,
    /// Engine limits.
    pub limits: Limits,
    /// Load, with what was sent since the last step.
    pub load: Load,
}

/// Everything a node serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInventory {
    /// Served model name.
    pub model: String,
    /// Model spec name (a tier serves one model).
    pub model_spec: String,
    /// Tokens per KV block (prefix hashes are per block).
    pub block_size: u32,
    /// Local devices.
    pub devices: Vec<NodeDevice>,
}

/// A change to one device's prefix cache, in the tier's block hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvDiff {
    /// The node's device id.
    pub device: String,
    /// Whether this lists the whole cache (the tier replaces its copy).
    #[serde(default)]
    pub snapshot: bool,
    /// Blocks now cached.
    #[serde(default)]
    pub stored: Vec<u64>,
    /// Blocks evicted.
    #[serde(default)]
    pub removed: Vec<u64>,
}

/// The node routes.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/switchyard/v1/devices", get(devices))
        .route("/switchyard/v1/kv_events", get(kv_events))
}

/// The inventory of `state`'s local devices.
pub fn inventory(state: &SharedState) -> NodeInventory {
    let fleet = &state.fleet;
    NodeInventory {
        model: fleet.served_name().to_string(),
        model_spec: fleet.model().name.clone(),
        block_size: fleet.block_size(),
        devices: fleet
            .devices()
            .iter()
            .filter(|d| d.state() != DeviceState::Unavailable)
            .map(|d| NodeDevice {
                id: d.id.clone(),
                profile: d.cost().device().clone(),
                profile_name: d.profile.clone(),
                healthy: d.state() == DeviceState::Ready,
                limits: d.limits,
                load: d.load(),
            })
            .collect(),
    }
}

async fn devices(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&state.api_keys, &headers) {
        return e.into_response();
    }
    Json(inventory(&state)).into_response()
}

async fn kv_events(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&state.api_keys, &headers) {
        return e.into_response();
    }
    // Subscribe before the snapshot: a change in between arrives twice,
    // which sets absorb, instead of not at all.
    let subs: Vec<(Arc<DeviceShared>, broadcast::Receiver<KvDiff>)> = state
        .fleet
        .devices()
        .iter()
        .map(|d| (d.clone(), d.kv_events.subscribe()))
        .collect();
    let snapshots: Vec<KvDiff> = state.fleet.devices().iter().map(|d| snapshot(d)).collect();
    let (tx, rx) = tokio::sync::mpsc::channel::<KvDiff>(1024);
    for (device, mut sub) in subs {
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                let diff = match sub.recv().await {
                    Ok(diff) => diff,
                    // A reader that fell behind lost changes: a fresh
                    // snapshot replaces the tier's copy.
                    Err(broadcast::error::RecvError::Lagged(_)) => snapshot(&device),
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(diff).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let first = stream::iter(snapshots.into_iter().map(sse_bytes));
    let rest = stream::unfold(rx, |mut rx| async move {
        let diff = rx.recv().await?;
        Some((sse_bytes(diff), rx))
    });
    let body = futures_util::StreamExt::chain(first, rest);
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn snapshot(d: &DeviceShared) -> KvDiff {
    KvDiff {
        device: d.id.clone(),
        snapshot: true,
        stored: d.cached.iter().map(|h| *h).collect(),
        removed: Vec::new(),
    }
}

fn sse_bytes(diff: KvDiff) -> Result<Bytes, Infallible> {
    let json = serde_json::to_string(&diff).unwrap_or_default();
    Ok(Bytes::from(format!("data: {json}\n\n")))
}
