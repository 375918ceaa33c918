//! Admin endpoints: device inventory, routing explanations and hot reload.
//! They require the admin key when one is configured.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use switchyard_backends::BackendKind;

use crate::api::route_error;
use crate::api::ApiError;
use crate::fleet::Target;
use crate::state::{authorize, SharedState};
use crate::tier::RemoteServer;
use crate::ServerError;
use switchyard_scheduler::config::Config;

/// The admin routes.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/admin/devices", get(devices))
        .route("/admin/route", get(explain))
        .route("/admin/plan", get(plan))
        .route("/admin/reload", post(reload))
}

fn check_admin(state: &SharedState, headers: &HeaderMap) -> Result<(), ApiError> {
    match &state.admin_key {
        Some(key) => authorize(std::slice::from_ref(key), headers),
        None => Ok(()),
    }
}

/// How far each backend kind has been validated, stated plainly for operators.
fn validation(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Sim => "simulated: step times predicted by the cost model",
        BackendKind::Onnx => "runs on this host's CPU through ONNX Runtime",
        BackendKind::Cuda => "kernels compile-tested with NVRTC; not yet run on a GPU in CI",
        BackendKind::Rocm => "kernels compile-tested with hiprtc; never run on AMD hardware",
    }
}

async fn devices(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    if let Err(e) = check_admin(&state, &headers) {
        return e.into_response();
    }
    let list: Vec<Value> = state
        .fleet
        .devices()
        .iter()
        .map(|d| {
            let load = d.load();
            let kv_usage = if load.total_blocks == 0 {
                0.0
            } else {
                1.0 - f64::from(load.free_blocks) / f64::from(load.total_blocks)
            };
            let cost = d.cost();
            json!({
                "id": d.id,
                "index": d.index.0,
                "backend": d.backend,
                "profile": d.profile,
                "state": d.state(),
                "healthy": d.state() == crate::worker::DeviceState::Ready,
                "last_error": d.last_error(),
                "info": d.info,
                "limits": d.limits,
                "load": load,
                "kv_usage": kv_usage,
                "cached_prefix_blocks": d.cached.len(),
                "price_usd_per_hour": cost.device().price_usd_per_hour,
                "validation": validation(d.backend),
            })
        })
        .collect();
    let now = std::time::Instant::now();
    let endpoints: Vec<Value> = state
        .fleet
        .remote_targets()
        .iter()
        .map(|t| {
            let mut entry = server_fields(&t.server, now);
            entry.extend(object(json!({
                "id": t.id,
                "index": t.index.0,
                "node_device": t.node_device,
                "profile": t.profile_name(),
                "healthy": t.accepts(now),
                "limits": t.limits(),
                "inflight": t.inflight(),
                "load": t.load(),
                "cached_prefix_blocks": state.fleet.tier().map_or(0, |tier| tier.indexed_blocks(t)),
                "prefix_source": if t.follows_cache_events() { "events" } else { "routing_history" },
                "price_usd_per_hour": t.cost().device().price_usd_per_hour,
            })));
            Value::Object(entry)
        })
        .collect();
    // Nodes whose inventory has not arrived have no device to list yet;
    // each still shows, unhealthy, with the error that keeps it out.
    let pending: Vec<Value> = state
        .fleet
        .tier()
        .map(|tier| tier.servers_without_targets())
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let mut entry = server_fields(s, now);
            entry.extend(object(json!({
                "id": s.name,
                "node_device": null,
                "healthy": false,
                // Nothing can be in flight where nothing is routed.
                "inflight": crate::tier::target::Inflight::default(),
                "awaiting_inventory": true,
            })));
            Value::Object(entry)
        })
        .collect();
    Json(json!({
        "model": state.fleet.served_name(),
        "devices": list,
        "endpoints": endpoints.into_iter().chain(pending).collect::<Vec<_>>(),
    }))
    .into_response()
}

/// What `/admin/devices` shows of a remote server, for each of its targets
/// and for a node with none yet.
fn server_fields(s: &RemoteServer, now: std::time::Instant) -> serde_json::Map<String, Value> {
    object(json!({
        "endpoint": s.endpoint,
        "engine": s.engine,
        "url": s.base,
        "reachable": s.reachable(),
        "breaker": s.breaker_state(now),
        "backing_off": s.backing_off(now),
        "last_error": s.last_error(),
        "scraped": s.scraped(),
    }))
}

/// The fields of a `json!({...})` object literal.
fn object(v: Value) -> serde_json::Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// The request shape `/admin/route` explains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteQuery {
    /// Prompt length in tokens.
    pub prompt_tokens: u32,
    /// Output length in tokens.
    pub max_tokens: u32,
}

/// Parses `/admin/route`'s query string; a rejection names the field at fault.
///
/// Unknown keys are ignored; each of the two fields must appear once, as a
/// non-negative integer that fits 32 bits.
pub fn parse_route_query(query: Option<&str>) -> Result<RouteQuery, ApiError> {
    let mut prompt_tokens = None;
    let mut max_tokens = None;
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let (name, slot) = match key.as_ref() {
            "prompt_tokens" => ("prompt_tokens", &mut prompt_tokens),
            "max_tokens" => ("max_tokens", &mut max_tokens),
            _ => continue,
        };
        if slot.is_some() {
            return Err(ApiError::invalid(name, format!("{name} is given twice")));
        }
        let n = value.parse::<u32>().map_err(|_| {
            ApiError::invalid(
                name,
                format!("{name} must be a non-negative integer below 2^32, not `{value}`"),
            )
        })?;
        *slot = Some(n);
    }
    let need = |v: Option<u32>, name: &'static str| {
        v.ok_or_else(|| ApiError::invalid(name, format!("the query needs {name}")))
    };
    Ok(RouteQuery {
        prompt_tokens: need(prompt_tokens, "prompt_tokens")?,
        max_tokens: need(max_tokens, "max_tokens")?,
    })
}

async fn explain(
    State(state): State<SharedState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(e) = check_admin(&state, &headers) {
        return e.into_response();
    }
    let q = match parse_route_query(query.as_deref()) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let decision = match state.fleet.explain(q.prompt_tokens, q.max_tokens) {
        Ok(d) => d,
        Err(e) => return route_error(e).into_response(),
    };
    let fleet = &state.fleet;
    let mut value = serde_json::to_value(&decision).unwrap_or(Value::Null);
    if let Some(scores) = value.get_mut("scores").and_then(Value::as_array_mut) {
        for (s, score) in scores.iter_mut().zip(&decision.scores) {
            let target = fleet.target(score.device);
            s["device"] = json!(target.as_ref().map(|t| t.name().to_string()));
            s["profile"] = json!(target.map(|t| match t {
                Target::Local(d) => d.profile.clone(),
                Target::Remote(r) => r.profile_name(),
            }));
        }
    }
    value["device"] = json!(fleet.name_of(decision.device));
    Json(value).into_response()
}

async fn reload(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    if let Err(e) = check_admin(&state, &headers) {
        return e.into_response();
    }
    let Some(path) = &state.config_path else {
        return ApiError::invalid_request(
            StatusCode::CONFLICT,
            "server was started without a config file",
        )
        .into_response();
    };
    let applied = Config::load(path)
        .map_err(ServerError::from)
        .and_then(|c| state.fleet.reload(&c));
    match applied {
        Ok(()) => Json(json!({ "reloaded": path })).into_response(),
        Err(e) => ApiError::invalid_request(
            StatusCode::BAD_REQUEST,
            format!("reload rejected, previous configuration kept: {e}"),
        )
        .into_response(),
    }
}

/// The autoscaling planner's latest answer (404 until it has one).
async fn plan(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    if let Err(e) = check_admin(&state, &headers) {
        return e.into_response();
    }
    match state.fleet.autoscaler().latest() {
        Some(p) => Json(p).into_response(),
        None => ApiError::invalid_request(
            StatusCode::NOT_FOUND,
            "no replica plan yet: [autoscale] is disabled or has not run",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_query_names_the_bad_field() {
        let q = parse_route_query(Some("max_tokens=5&x=y&prompt_tokens=%31%32")).unwrap();
        assert_eq!(
            q,
            RouteQuery {
                prompt_tokens: 12,
                max_tokens: 5
            }
        );
        for (query, param) in [
            (None, "prompt_tokens"),
            (Some("prompt_tokens=1"), "max_tokens"),
            (Some("prompt_tokens=1&max_tokens=-1"), "max_tokens"),
            (
                Some("prompt_tokens=4294967296&max_tokens=1"),
                "prompt_tokens",
            ),
            (
                Some("prompt_tokens=1&prompt_tokens=2&max_tokens=1"),
                "prompt_tokens",
            ),
            (Some("prompt_tokens=%FF&max_tokens=1"), "prompt_tokens"),
        ] {
            let err = parse_route_query(query).unwrap_err();
            assert_eq!(err.param, Some(param), "{query:?}");
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
        }
    }
}
