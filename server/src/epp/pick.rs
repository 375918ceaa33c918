//! The endpoint picker's decision, apart from the ext_proc wire format:
//! an OpenAI request body in, an ordered list of `ip:port` destinations (or
//! a refusal) out, plus the accounting that follows the request until its
//! response ends.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use serde_json::Value;
use switchyard_scheduler::router::{DeviceId, DeviceScore, RouteError};

use crate::api::{parse_json_body, ApiError, ChatRequest, CompletionRequest};
use crate::fleet::{AdmissionPermit, LiveFleet, Target};
use crate::http::{chat_prompt, completion_prompt};
use crate::tier::{InflightGuard, RemoteTarget};

/// The request kinds the picker parses; anything else is routed by load alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `POST /v1/completions`.
    Completion,
    /// `POST /v1/chat/completions`.
    Chat,
    /// Any other path (models, tokenize, ...): no body to price.
    Other,
}

impl RequestKind {
    /// The kind of a request `path` (query string ignored).
    pub fn of_path(path: &str) -> Self {
        let path = path.split('?').next().unwrap_or(path).trim_end_matches('/');
        if path.ends_with("/v1/chat/completions") {
            RequestKind::Chat
        } else if path.ends_with("/v1/completions") {
            RequestKind::Completion
        } else {
            RequestKind::Other
        }
    }
}

/// Why no destination was picked; each maps to an HTTP answer the gateway gives.
#[derive(Debug)]
pub enum Refusal {
    /// The body is not a valid request (an OpenAI 4xx).
    Invalid(ApiError),
    /// No endpoint may take it (503).
    NoEndpoint(String),
    /// Too many requests in flight (429).
    Shed,
}

impl Refusal {
    /// The HTTP status the gateway answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Invalid(e) => e.status,
            Refusal::NoEndpoint(_) => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Shed => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The OpenAI-shaped error body.
    pub fn body(&self) -> Value {
        match self {
            Refusal::Invalid(e) => e.body(),
            Refusal::NoEndpoint(m) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                m.clone(),
            )
            .body(),
            Refusal::Shed => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "too many requests in flight; retry later",
            )
            .body(),
        }
    }
}

/// A picked request: where it goes, and its share of the endpoint's load
/// until the response ends (dropping it ends the accounting).
pub struct Pick {
    /// `ip:port` of the chosen endpoint first, then fallbacks in the router's order.
    pub destinations: Vec<String>,
    /// For a Switchyard node, the device the router chose on it (sent as `x-switchyard-device`).
    pub node_device: Option<String>,
    /// Tokens the request may generate (for the output-length estimate).
    pub max_tokens: u32,
    prompt_tokens: u32,
    inflight: Option<(Arc<RemoteTarget>, InflightGuard)>,
    _permit: AdmissionPermit,
}

impl Pick {
    /// The gateway reported the endpoint that actually served (a fallback,
    /// after a failure): its accounting moves there.
    pub fn served_by(&mut self, fleet: &LiveFleet, address: &str) {
        let moved = match &self.inflight {
            Some((t, _)) => address_of(t) != address,
            None => true,
        };
        if !moved {
            return;
        }
        let target = fleet
            .remote_targets()
            .into_iter()
            .filter(|t| address_of(t) == address)
            .min_by_key(|t| t.inflight().seqs);
        self.inflight = target.map(|t| {
            let guard = t.begin(self.prompt_tokens, self.max_tokens);
            (t, guard)
        });
    }

    /// The response reported `completion_tokens`: the estimate learns the real output length.
    pub fn finished(&mut self, fleet: &LiveFleet, completion_tokens: u32) {
        if let Some((_, guard)) = &mut self.inflight {
            guard.tokens(completion_tokens.max(1));
        }
        fleet.observe_output(self.max_tokens, completion_tokens);
        self.inflight = None;
    }

    /// The router id of the target now holding the request's accounting.
    pub fn target(&self) -> Option<DeviceId> {
        self.inflight.as_ref().map(|(t, _)| t.index)
    }
}

/// `ip:port` of a remote target's server.
pub fn address_of(t: &RemoteTarget) -> &str {
    t.server
        .base
        .strip_prefix("http://")
        .or_else(|| t.server.base.strip_prefix("https://"))
        .unwrap_or(&t.server.base)
}

/// Picks the destinations for one request: `body` is its JSON (empty for
/// bodiless requests), `subset` the gateway's hint of eligible `ip:port`s.
pub fn pick(
    fleet: &Arc<LiveFleet>,
    kind: RequestKind,
    body: &[u8],
    subset: Option<&[String]>,
) -> Result<Pick, Refusal> {
    let (prompt, max_tokens) = match kind {
        RequestKind::Other => (Vec::new(), 1),
        RequestKind::Completion | RequestKind::Chat => parse(fleet, kind, body)?,
    };
    let targets = fleet.remote_targets();
    let excluded: Vec<DeviceId> = match subset {
        Some(allowed) => {
            if allowed.is_empty() {
                return Err(Refusal::NoEndpoint(
                    "the destination subset hint is empty".into(),
                ));
            }
            targets
                .iter()
                .filter(|t| !allowed.iter().any(|a| a == address_of(t)))
                .map(|t| t.index)
                .collect()
        }
        None => Vec::new(),
    };
    if !excluded.is_empty() && excluded.len() == targets.len() {
        return Err(Refusal::NoEndpoint(
            "no endpoint of the pool is in the destination subset".into(),
        ));
    }
    let permit = fleet.admit().ok_or(Refusal::Shed)?;
    // A bodiless request still needs a prompt to price: one token.
    let priced = if prompt.is_empty() { vec![0] } else { prompt };
    let routed = fleet
        .route(&priced, max_tokens, &excluded)
        .map_err(|e| match e {
            RouteError::NoHealthyDevice => {
                Refusal::NoEndpoint("no endpoint of the pool is healthy".into())
            }
            other => Refusal::Invalid(crate::api::route_error(other)),
        })?;
    let Target::Remote(chosen) = routed.target else {
        return Err(Refusal::NoEndpoint(
            "the endpoint picker routes only to [[endpoints]]".into(),
        ));
    };
    let destinations = order_destinations(&chosen, &routed.decision.scores, &targets, &excluded);
    // The device pin goes only where every destination has that device:
    // a fallback node would refuse a device it does not have.
    let node_device = chosen.node_device.clone().filter(|d| {
        let with_device: HashSet<&str> = targets
            .iter()
            .filter(|t| t.node_device.as_ref() == Some(d))
            .map(|t| address_of(t))
            .collect();
        destinations
            .iter()
            .all(|a| with_device.contains(a.as_str()))
    });
    let prompt_tokens = priced.len().min(u32::MAX as usize) as u32;
    let guard = chosen.begin(prompt_tokens, max_tokens);
    Ok(Pick {
        destinations,
        node_device,
        max_tokens,
        prompt_tokens,
        inflight: Some((chosen, guard)),
        _permit: permit,
    })
}

fn parse(fleet: &LiveFleet, kind: RequestKind, body: &[u8]) -> Result<(Vec<u32>, u32), Refusal> {
    let (prompt, settings) = match kind {
        RequestKind::Chat => {
            let req: ChatRequest = parse_json_body(body).map_err(Refusal::Invalid)?;
            chat_prompt(fleet, req).map_err(Refusal::Invalid)?
        }
        _ => {
            let req: CompletionRequest = parse_json_body(body).map_err(Refusal::Invalid)?;
            completion_prompt(fleet, req).map_err(Refusal::Invalid)?
        }
    };
    // No max_tokens: the context's rest, as the engines clamp it.
    let room = fleet
        .longest_sequence()
        .saturating_sub(prompt.len().min(u32::MAX as usize) as u32)
        .max(1);
    Ok((prompt, settings.max_tokens.unwrap_or(room).min(room)))
}

/// The chosen endpoint's address, then every other eligible one: those
/// scored and predicted to meet the SLO first, each group by predicted
/// end-to-end latency, then the healthy ones the router skipped (their
/// e2e floor ruled them out of its choice, so they are slower than its
/// fastest band), in fleet order. Devices of one node share an address,
/// listed once.
fn order_destinations(
    chosen: &RemoteTarget,
    scores: &[DeviceScore],
    targets: &[Arc<RemoteTarget>],
    excluded: &[DeviceId],
) -> Vec<String> {
    let by_id: HashMap<DeviceId, &RemoteTarget> =
        targets.iter().map(|t| (t.index, t.as_ref())).collect();
    let mut rest: Vec<&DeviceScore> = scores
        .iter()
        .filter(|s| s.eligible && s.device != chosen.index && !excluded.contains(&s.device))
        .collect();
    rest.sort_by(|a, b| b.meets_slo.cmp(&a.meets_slo).then(a.e2e.cmp(&b.e2e)));
    let scored: HashSet<DeviceId> = scores.iter().map(|s| s.device).collect();
    let now = Instant::now();
    let skipped = targets
        .iter()
        .map(AsRef::as_ref)
        .filter(|t| !scored.contains(&t.index) && !excluded.contains(&t.index) && t.accepts(now));
    let ordered = std::iter::once(chosen)
        .chain(rest.iter().filter_map(|s| by_id.get(&s.device).copied()))
        .chain(skipped);
    let mut seen: HashSet<&str> = HashSet::with_capacity(targets.len());
    ordered
        .map(address_of)
        .filter(|a| seen.insert(a))
        .map(str::to_string)
        .collect()
}

/// `completion_tokens` of an OpenAI response body or SSE stream tail
/// (the last usage object wins).
pub fn completion_tokens(body: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(body).ok()?;
    let mut found = None;
    for line in text.lines() {
        let json = line.strip_prefix("data: ").unwrap_or(line).trim();
        if !json.starts_with('{') {
            continue;
        }
        if let Ok(v) = serde_json::from_str::<Value>(json) {
            if let Some(n) = v
                .pointer("/usage/completion_tokens")
                .and_then(Value::as_u64)
            {
                found = Some(n.min(u64::from(u32::MAX)) as u32);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_kind() {
        assert_eq!(
            RequestKind::of_path("/v1/completions"),
            RequestKind::Completion
        );
        assert_eq!(
            RequestKind::of_path("/v1/chat/completions?x=1"),
            RequestKind::Chat
        );
        assert_eq!(RequestKind::of_path("/v1/models"), RequestKind::Other);
    }

    #[test]
    fn usage_is_read_from_json_and_sse() {
        let json = br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":7,"total_tokens":10}}"#;
        assert_eq!(completion_tokens(json), Some(7));
        let sse = b"data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: {\"choices\":[],\"usage\":{\"completion_tokens\":12}}\n\ndata: [DONE]\n\n";
        assert_eq!(completion_tokens(sse), Some(12));
        assert_eq!(completion_tokens(b"data: [DONE]\n\n"), None);
    }
}
