//! What every handler reaches: the shared server state and API-key checks.
//! Both the public routes (`http`) and the admin routes (`admin`) build on
//! this module, and neither on the other.

use std::sync::Arc;

use axum::http::{header, HeaderMap, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;
use subtle::ConstantTimeEq;

use crate::api::ApiError;
use crate::fleet::LiveFleet;

/// What every handler can reach.
pub struct AppState {
    /// The fleet.
    pub fleet: Arc<LiveFleet>,
    /// Renders `/metrics`.
    pub prometheus: PrometheusHandle,
    /// Accepted API keys (empty: open).
    pub api_keys: Vec<String>,
    /// Admin key (absent: admin open).
    pub admin_key: Option<String>,
    /// Config file, for `/admin/reload`.
    pub config_path: Option<std::path::PathBuf>,
}

/// Shared state handle.
pub type SharedState = Arc<AppState>;

/// True when `presented` equals one of `keys`, compared in constant time.
fn key_matches(keys: &[String], presented: &str) -> bool {
    keys.iter().fold(false, |ok, k| {
        ok | bool::from(k.as_bytes().ct_eq(presented.as_bytes()))
    })
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Checks `Authorization: Bearer` against `keys` (no keys: open).
pub fn authorize(keys: &[String], headers: &HeaderMap) -> Result<(), ApiError> {
    if keys.is_empty() {
        return Ok(());
    }
    match bearer(headers) {
        Some(k) if key_matches(keys, k) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "missing or invalid API key in the Authorization header (`Bearer KEY`)",
        )
        .with_code("invalid_api_key")),
    }
}
