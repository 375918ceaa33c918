//! Every metric the server exports, in one place.
//!
//! Naming rules (Prometheus conventions): `switchyard_` prefix, snake_case,
//! base units in the name (`_seconds`, `_tokens`), counters end in `_total`.
//! Labels: `device` (config id), `backend` (sim/onnx/cuda/rocm), `model`
//! (served name), `shape` (prefill-heavy/decode-heavy/balanced), `policy`,
//! `outcome`. The `vllm:` gauges reproduce the model-server protocol of the
//! Kubernetes Gateway API Inference Extension, so its endpoint pickers can
//! route to Switchyard unchanged.
//!
//! | Switchyard | nearest vLLM metric |
//! |---|---|
//! | `switchyard_requests_total` | `vllm:request_success_total` |
//! | `switchyard_time_to_first_token_seconds` | `vllm:time_to_first_token_seconds` |
//! | `switchyard_inter_token_latency_seconds` | `vllm:inter_token_latency_seconds` (`time_per_output_token`) |
//! | `switchyard_e2e_request_latency_seconds` | `vllm:e2e_request_latency_seconds` |
//! | `switchyard_request_queue_time_seconds` | `vllm:request_queue_time_seconds` |
//! | `switchyard_step_duration_seconds` | `vllm:iteration_tokens_total` (closest; vLLM has no step timer) |
//! | `switchyard_step_batch_size` | `vllm:iteration_tokens_total` |
//! | `switchyard_request_prompt_tokens` | `vllm:request_prompt_tokens` |
//! | `switchyard_request_generation_tokens` | `vllm:request_generation_tokens` |
//! | `switchyard_num_requests_running` | `vllm:num_requests_running` |
//! | `switchyard_num_requests_waiting` | `vllm:num_requests_waiting` |
//! | `switchyard_kv_cache_usage_ratio` | `vllm:kv_cache_usage_perc` |
//! | `switchyard_preemptions_total` | `vllm:num_preemptions_total` |
//! | `switchyard_prefix_cache_queries_tokens_total` | `vllm:prefix_cache_queries_total` |
//! | `switchyard_prefix_cache_hits_tokens_total` | `vllm:prefix_cache_hits_total` |
//! | `switchyard_prompt_tokens_total` | `vllm:prompt_tokens_total` |
//! | `switchyard_generation_tokens_total` | `vllm:generation_tokens_total` |
//! | `switchyard_routing_decisions_total` | — |
//! | `switchyard_ttft_prediction_error_ratio` | — |
//! | `switchyard_device_healthy` | — |
//! | `switchyard_step_failures_total` | — |
//! | `switchyard_reroutes_total` | — |
//! | `switchyard_endpoint_requests_total` | — (tier: remote endpoints) |
//! | `switchyard_endpoint_breaker_state` | — |
//! | `switchyard_endpoint_inflight_requests` | — |

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Finished requests, by `device`, `shape`, `outcome` (ok/length/stop/abort/error).
pub const REQUESTS: &str = "switchyard_requests_total";
/// Time to first token, seconds, by `device`, `shape`.
pub const TTFT: &str = "switchyard_time_to_first_token_seconds";
/// Gap between consecutive streamed tokens, seconds, by `device`.
pub const ITL: &str = "switchyard_inter_token_latency_seconds";
/// Request latency from arrival to last token, seconds, by `device`, `shape`.
pub const E2E: &str = "switchyard_e2e_request_latency_seconds";
/// Time from arrival to first scheduling on a device, seconds, by `device`.
pub const QUEUE_TIME: &str = "switchyard_request_queue_time_seconds";
/// Engine step wall time, seconds, by `device`, `backend`.
pub const STEP_TIME: &str = "switchyard_step_duration_seconds";
/// Sequences per engine step, by `device`.
pub const BATCH_SIZE: &str = "switchyard_step_batch_size";
/// Prompt length per request, tokens, by `device`.
pub const PROMPT_LEN: &str = "switchyard_request_prompt_tokens";
/// Output length per request, tokens, by `device`.
pub const OUTPUT_LEN: &str = "switchyard_request_generation_tokens";
/// Sequences running on a device.
pub const RUNNING: &str = "switchyard_num_requests_running";
/// Sequences waiting on a device.
pub const WAITING: &str = "switchyard_num_requests_waiting";
/// Fraction of a device's KV blocks in use, 0–1.
pub const KV_USAGE: &str = "switchyard_kv_cache_usage_ratio";
/// Preemptions, by `device`.
pub const PREEMPTIONS: &str = "switchyard_preemptions_total";
/// Prompt tokens looked up in the prefix cache, by `device`.
pub const PREFIX_QUERIES: &str = "switchyard_prefix_cache_queries_tokens_total";
/// Prompt tokens served from the prefix cache, by `device`.
pub const PREFIX_HITS: &str = "switchyard_prefix_cache_hits_tokens_total";
/// Prompt tokens processed, by `device`.
pub const PROMPT_TOKENS: &str = "switchyard_prompt_tokens_total";
/// Tokens generated, by `device`.
pub const GENERATION_TOKENS: &str = "switchyard_generation_tokens_total";
/// Routing decisions, by `policy`, `device`, `shape`, `reason`.
pub const ROUTING_DECISIONS: &str = "switchyard_routing_decisions_total";
/// (actual − predicted) / predicted TTFT, by `device`.
pub const TTFT_PREDICTION_ERROR: &str = "switchyard_ttft_prediction_error_ratio";
/// 1 when a device is healthy, else 0, by `device`, `backend`.
pub const DEVICE_HEALTHY: &str = "switchyard_device_healthy";
/// Failed or hung steps, by `device`, `kind` (error/hang).
pub const STEP_FAILURES: &str = "switchyard_step_failures_total";
/// Requests moved to another device after a failure, by `from`.
pub const REROUTES: &str = "switchyard_reroutes_total";
/// Requests refused with 429 because the admission queue was full.
pub const REJECTED: &str = "switchyard_rejected_requests_total";
/// Streams aborted because the client stopped reading (its buffer stayed
/// full past `server.client_stall_timeout_s`), by device.
pub const SLOW_CLIENT_ABORTS: &str = "switchyard_slow_client_aborts_total";
/// Tier: requests sent to a remote endpoint, by `endpoint`, `outcome` (ok/error/overloaded/refused/timeout).
pub const TIER_REQUESTS: &str = "switchyard_endpoint_requests_total";
/// Tier: circuit-breaker state per remote endpoint (0 closed, 1 half-open, 2 open), by `endpoint`.
pub const TIER_BREAKER_STATE: &str = "switchyard_endpoint_breaker_state";
/// Tier: requests the tier has in flight on a remote endpoint, by `endpoint`.
pub const TIER_INFLIGHT: &str = "switchyard_endpoint_inflight_requests";
/// Desired replicas per pool from the autoscaling planner.
pub const POOL_DESIRED_REPLICAS: &str = "switchyard_pool_desired_replicas";
/// Endpoint-picker decisions by outcome (`picked`, `invalid`, `no_endpoint`, `shed`).
pub const EPP_DECISIONS: &str = "switchyard_epp_decisions_total";
/// Gateway API Inference Extension: waiting requests, by `model_name`.
pub const GIE_WAITING: &str = "vllm:num_requests_waiting";
/// Gateway API Inference Extension: running requests, by `model_name`.
pub const GIE_RUNNING: &str = "vllm:num_requests_running";
/// Gateway API Inference Extension: KV-cache usage 0–1, by `model_name`.
pub const GIE_KV_USAGE: &str = "vllm:kv_cache_usage_perc";
/// Worker threads of the async runtime serving HTTP, proxying and the fleet
/// (`server.worker_threads`).
pub const RUNTIME_WORKERS: &str = "switchyard_runtime_worker_threads";

/// Every metric name, for documentation checks.
pub const ALL: &[&str] = &[
    REQUESTS,
    TTFT,
    ITL,
    E2E,
    QUEUE_TIME,
    STEP_TIME,
    BATCH_SIZE,
    PROMPT_LEN,
    OUTPUT_LEN,
    RUNNING,
    WAITING,
    KV_USAGE,
    PREEMPTIONS,
    PREFIX_QUERIES,
    PREFIX_HITS,
    PROMPT_TOKENS,
    GENERATION_TOKENS,
    ROUTING_DECISIONS,
    TTFT_PREDICTION_ERROR,
    DEVICE_HEALTHY,
    STEP_FAILURES,
    REROUTES,
    REJECTED,
    SLOW_CLIENT_ABORTS,
    TIER_REQUESTS,
    TIER_BREAKER_STATE,
    TIER_INFLIGHT,
    EPP_DECISIONS,
    POOL_DESIRED_REPLICAS,
    GIE_WAITING,
    GIE_RUNNING,
    GIE_KV_USAGE,
    RUNTIME_WORKERS,
];

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0,
];
const TOKEN_BUCKETS: &[f64] = &[
    1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
    32768.0,
];
const RATIO_BUCKETS: &[f64] = &[-0.9, -0.5, -0.25, -0.1, 0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0];

/// Installs the global Prometheus recorder (histograms as buckets) and
/// describes every metric. Call once per process.
pub fn install() -> Result<PrometheusHandle, String> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_tokens".into()), TOKEN_BUCKETS))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), TOKEN_BUCKETS))
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(TTFT_PREDICTION_ERROR.into()), RATIO_BUCKETS)
        })
        .map_err(|e| e.to_string())?;
    let handle = builder.install_recorder().map_err(|e| e.to_string())?;
    // Histogram samples wait in the recorder until a scrape renders them;
    // a server nobody scrapes would keep every one (about 0.5 MiB a
    // minute under load in the soak). Upkeep folds them into the buckets.
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            upkeep.run_upkeep();
        })
        .map_err(|e| e.to_string())?;
    describe();
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        metrics::gauge!(RUNTIME_WORKERS).set(runtime.metrics().num_workers() as f64);
    }
    Ok(handle)
}

/// How often histogram samples are folded into their buckets between scrapes.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

fn describe() {
    describe_counter!(
        REQUESTS,
        "Finished requests by device, shape class and outcome"
    );
    describe_histogram!(TTFT, Unit::Seconds, "Time to first token");
    describe_histogram!(ITL, Unit::Seconds, "Inter-token latency");
    describe_histogram!(E2E, Unit::Seconds, "End-to-end request latency");
    describe_histogram!(
        QUEUE_TIME,
        Unit::Seconds,
        "Time from arrival to first scheduling"
    );
    describe_histogram!(STEP_TIME, Unit::Seconds, "Engine step duration");
    describe_histogram!(BATCH_SIZE, Unit::Count, "Sequences per engine step");
    describe_histogram!(PROMPT_LEN, Unit::Count, "Prompt tokens per request");
    describe_histogram!(OUTPUT_LEN, Unit::Count, "Generated tokens per request");
    describe_gauge!(RUNNING, "Sequences running on the device");
    describe_gauge!(WAITING, "Sequences waiting on the device");
    describe_gauge!(KV_USAGE, "Fraction of KV blocks in use");
    describe_counter!(PREEMPTIONS, "Sequences preempted for KV space");
    describe_counter!(
        PREFIX_QUERIES,
        "Prompt tokens looked up in the prefix cache"
    );
    describe_counter!(PREFIX_HITS, "Prompt tokens served from the prefix cache");
    describe_counter!(PROMPT_TOKENS, "Prompt tokens processed");
    describe_counter!(GENERATION_TOKENS, "Tokens generated");
    describe_counter!(
        ROUTING_DECISIONS,
        "Routing decisions by policy, device, shape and reason"
    );
    describe_histogram!(
        TTFT_PREDICTION_ERROR,
        "Relative error of the router's TTFT prediction"
    );
    describe_gauge!(DEVICE_HEALTHY, "1 when the device is healthy");
    describe_counter!(STEP_FAILURES, "Failed or hung engine steps");
    describe_counter!(REROUTES, "Requests re-routed after a device failure");
    describe_counter!(
        REJECTED,
        "Requests refused because the admission queue was full"
    );
    describe_counter!(
        SLOW_CLIENT_ABORTS,
        "Streams aborted because the client stopped reading"
    );
    describe_counter!(
        TIER_REQUESTS,
        "Requests sent to a remote endpoint, by outcome"
    );
    describe_gauge!(
        TIER_BREAKER_STATE,
        "Circuit breaker of a remote endpoint: 0 closed, 1 half-open, 2 open"
    );
    describe_gauge!(
        TIER_INFLIGHT,
        "Requests the tier has in flight on a remote endpoint"
    );
    describe_counter!(EPP_DECISIONS, "Endpoint-picker decisions by outcome");
    describe_gauge!(
        GIE_WAITING,
        "Waiting requests (Gateway API Inference Extension)"
    );
    describe_gauge!(
        GIE_RUNNING,
        "Running requests (Gateway API Inference Extension)"
    );
    describe_gauge!(
        GIE_KV_USAGE,
        "KV-cache usage 0-1 (Gateway API Inference Extension)"
    );
    describe_gauge!(
        RUNTIME_WORKERS,
        "Worker threads of the async runtime (server.worker_threads)"
    );
}
