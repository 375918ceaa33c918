//! The fleet tier's part of `switchyard.toml`: remote `[[endpoints]]`
//! (OpenAI-compatible servers the router prices like local devices) and
//! the `[tier]` table (scraping, timeouts, circuit breaker, discovery).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{serde_ms, serde_secs};

/// What serves an endpoint: decides its metric names, load source and
/// whether it returns token ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// A Switchyard node: its devices are routed to individually.
    Switchyard,
    /// vLLM's OpenAI server.
    Vllm,
    /// SGLang's OpenAI server.
    Sglang,
    /// Hugging Face text-generation-inference (Messages API).
    Tgi,
    /// llama.cpp's `llama-server`.
    Llamacpp,
    /// Any other OpenAI-compatible server (no load metrics).
    Openai,
}

impl EngineKind {
    /// The name used in configs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Switchyard => "switchyard",
            EngineKind::Vllm => "vllm",
            EngineKind::Sglang => "sglang",
            EngineKind::Tgi => "tgi",
            EngineKind::Llamacpp => "llamacpp",
            EngineKind::Openai => "openai",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an endpoint's URL becomes servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Discovery {
    /// The URL is one server.
    #[default]
    Static,
    /// The URL's host name is re-resolved every `tier.dns_refresh_s`; each
    /// address is a server (a Kubernetes headless Service's pods).
    Dns,
}

/// One remote OpenAI-compatible server (or a DNS name of several).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Unique among devices and endpoints.
    pub id: String,
    /// Base URL (`http://host:port`), without `/v1`.
    pub url: String,
    /// What serves it.
    pub engine: EngineKind,
    /// Device profile that prices it; a Switchyard node reports its own per device.
    #[serde(default)]
    pub profile: Option<String>,
    /// The endpoint's own model name, when it differs from the served name.
    #[serde(default)]
    pub model: Option<String>,
    /// Sent as `Authorization: Bearer`.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Static URL or DNS name re-resolved.
    #[serde(default)]
    pub discovery: Discovery,
    /// vLLM's KV-event publisher (`tcp://host:port`), for prefix-aware routing.
    #[serde(default)]
    pub kv_events: Option<String>,
    /// Most sequences it runs at once (vLLM's `max_num_seqs`); default `tier.max_num_seqs`.
    #[serde(default)]
    pub max_num_seqs: Option<u32>,
    /// Token budget of one of its steps (vLLM's `max_num_batched_tokens`); default `tier.max_batched_tokens`.
    #[serde(default)]
    pub max_batched_tokens: Option<u32>,
}

impl EndpointConfig {
    /// `host:port` of the URL (port 80 when absent), or why the URL is refused.
    pub fn authority(&self) -> Result<(String, u16), String> {
        parse_http_url(&self.url)
    }
}

/// Splits `http://host[:port][/]` into host and port.
pub fn parse_http_url(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("url `{url}` must start with http://"))?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(format!(
            "url `{url}` must be a base URL (scheme, host, optional port), without a path"
        ));
    }
    // IPv6 literals come bracketed: `[::1]:8000`.
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("url `{url}`: unclosed `[`"))?;
        (host.to_string(), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("url `{url}`: port `{p}` is not a number in 0..=65535"))?,
        None => 80,
    };
    if host.is_empty() {
        return Err(format!("url `{url}` has no host"));
    }
    Ok((host, port))
}

/// The `[tier]` table: how remote endpoints are watched and failed over.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TierSection {
    /// Metrics scrape and health-check period (`scrape_interval_ms`).
    #[serde(rename = "scrape_interval_ms", with = "serde_ms")]
    pub scrape_interval: Duration,
    /// TCP connect plus response-header timeout (`connect_timeout_ms`).
    #[serde(rename = "connect_timeout_ms", with = "serde_ms")]
    pub connect_timeout: Duration,
    /// Longest wait for a request's first token (`first_token_timeout_s`).
    #[serde(rename = "first_token_timeout_s", with = "serde_secs")]
    pub first_token_timeout: Duration,
    /// Longest wait between two tokens (`inter_token_timeout_s`).
    #[serde(rename = "inter_token_timeout_s", with = "serde_secs")]
    pub inter_token_timeout: Duration,
    /// Consecutive failures that open an endpoint's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses work before a half-open probe (`breaker_open_ms`).
    #[serde(rename = "breaker_open_ms", with = "serde_ms")]
    pub breaker_open: Duration,
    /// Back-off after a 429/503 without `Retry-After` (`overload_backoff_ms`).
    #[serde(rename = "overload_backoff_ms", with = "serde_ms")]
    pub overload_backoff: Duration,
    /// DNS re-resolution period for `discovery = "dns"` (`dns_refresh_s`).
    #[serde(rename = "dns_refresh_s", with = "serde_secs")]
    pub dns_refresh: Duration,
    /// Default `max_num_seqs` of foreign engines.
    pub max_num_seqs: u32,
    /// Default `max_batched_tokens` of foreign engines.
    pub max_batched_tokens: u32,
    /// Blocks the approximate prefix index keeps per endpoint without KV events.
    pub approx_prefix_blocks: u32,
    /// How long the approximate index trusts a routed prefix (`approx_prefix_ttl_s`).
    #[serde(rename = "approx_prefix_ttl_s", with = "serde_secs")]
    pub approx_prefix_ttl: Duration,
}

impl Default for TierSection {
    fn default() -> Self {
        Self {
            scrape_interval: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(1000),
            first_token_timeout: Duration::from_secs(60),
            inter_token_timeout: Duration::from_secs(15),
            breaker_failures: 3,
            breaker_open: Duration::from_millis(2000),
            overload_backoff: Duration::from_millis(1000),
            dns_refresh: Duration::from_secs(5),
            max_num_seqs: 256,
            max_batched_tokens: 8192,
            approx_prefix_blocks: 65536,
            approx_prefix_ttl: Duration::from_secs(120),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_and_port() {
        assert_eq!(
            parse_http_url("http://10.0.0.5:8000"),
            Ok(("10.0.0.5".into(), 8000))
        );
        assert_eq!(
            parse_http_url("http://vllm.pool.svc/"),
            Ok(("vllm.pool.svc".into(), 80))
        );
        assert_eq!(parse_http_url("http://[::1]:9"), Ok(("::1".into(), 9)));
        assert!(parse_http_url("https://x").is_err());
        assert!(parse_http_url("http://x:99999").is_err());
        assert!(parse_http_url("http://x/v1").is_err());
        assert!(parse_http_url("http://:80").is_err());
    }
}

/// The `[autoscale]` table: desired replicas per pool (endpoint), planned
/// from a sliding window of observed arrivals and shapes.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoscaleSection {
    /// Whether the planner runs (it needs `[[endpoints]]`).
    pub enabled: bool,
    /// Arrivals considered (`window_s`).
    #[serde(rename = "window_s", with = "serde_secs")]
    pub window: Duration,
    /// How often the plan is recomputed (`interval_s`).
    #[serde(rename = "interval_s", with = "serde_secs")]
    pub interval: Duration,
    /// Most replicas of one pool.
    pub max_replicas: u32,
    /// Fewest replicas of a pool that has seen traffic.
    pub min_replicas: u32,
    /// Requests simulated per candidate fleet.
    pub simulated_requests: u32,
}

impl Default for AutoscaleSection {
    fn default() -> Self {
        Self {
            enabled: false,
            window: Duration::from_secs(120),
            interval: Duration::from_secs(15),
            max_replicas: 32,
            min_replicas: 1,
            simulated_requests: 1500,
        }
    }
}
