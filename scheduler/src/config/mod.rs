//! `switchyard.toml`, the one configuration vocabulary: server limits,
//! model, engine sizing, router objective and the device list. Serde only
//! (no I/O beyond reading the file in [`Config::load`]): the live server,
//! the load generator and the CLI parse the same types. Parsed strictly
//! (`deny_unknown_fields`); CLI flags override the address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_backends::fault::FaultPlan;
use switchyard_backends::gpu::ops::StoreType;
use switchyard_backends::gpu::GpuConfig;
use switchyard_backends::open::{BackendSpec, DeviceSpec, OnnxConfig};
use switchyard_backends::profile::TomlErrorAt;
use switchyard_backends::{BackendError, BackendKind, SimConfig};

use crate::engine::EngineConfig;
use crate::router::{Objective, PolicyKind, RouterConfig, Slo};

mod tier;
pub use tier::{
    parse_http_url, AutoscaleSection, Discovery, EndpointConfig, EngineKind, TierSection,
};

/// Why a configuration file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct ConfigError {
    /// The config file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory holding `devices/` and `models/` profiles (relative to the config file).
    #[serde(default = "default_profiles")]
    pub profiles_dir: PathBuf,
    /// HTTP server settings.
    #[serde(default)]
    pub server: ServerSection,
    /// The model every device serves.
    pub model: ModelSection,
    /// Engine sizing, shared by every device.
    #[serde(default)]
    pub engine: EngineSection,
    /// Routing policy and objective.
    #[serde(default)]
    pub router: RouterSection,
    /// Local devices (none for a pure tier).
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// Remote OpenAI-compatible servers routed to like devices.
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
    /// How remote endpoints are watched and failed over.
    #[serde(default)]
    pub tier: TierSection,
    /// The replica planner over the endpoints (pools).
    #[serde(default)]
    pub autoscale: AutoscaleSection,
}

fn default_profiles() -> PathBuf {
    PathBuf::from("profiles")
}

/// HTTP server settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Listen address.
    pub addr: SocketAddr,
    /// Bearer keys accepted on the API; empty means no authentication.
    pub api_keys: Vec<String>,
    /// Key required on `/admin/*` when set.
    pub admin_key: Option<String>,
    /// Largest request body accepted, bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Requests admitted but not finished before new ones get 429.
    pub max_pending_requests: usize,
    /// How long SIGTERM waits for in-flight requests (`drain_timeout_s`).
    #[serde(rename = "drain_timeout_s", with = "serde_secs")]
    pub drain_timeout: Duration,
    /// A device step running longer than this is declared hung (`step_timeout_s`).
    #[serde(rename = "step_timeout_s", with = "serde_secs")]
    pub step_timeout: Duration,
    /// Times a request is re-routed after device failures before it fails.
    pub max_reroutes: u32,
    /// First back-off of a failed device before it is probed (`unhealthy_backoff_ms`).
    #[serde(rename = "unhealthy_backoff_ms", with = "serde_ms")]
    pub unhealthy_backoff: Duration,
    /// How long a request waits for some device to recover when none is healthy (`unavailable_wait_s`).
    #[serde(rename = "unavailable_wait_s", with = "serde_secs")]
    pub unavailable_wait: Duration,
    /// A stream whose client has not taken a chunk for this long, with its
    /// buffer full, is aborted and its device slot freed (`client_stall_timeout_s`).
    #[serde(rename = "client_stall_timeout_s", with = "serde_secs")]
    pub client_stall_timeout: Duration,
    /// SLO-aware load shedding: a request whose best device is predicted
    /// to miss the router SLO's TTFT target (scaled by its headroom) gets
    /// 429 with `Retry-After` on arrival, and one that has no first token
    /// by the TTFT target is withdrawn with 429, so the requests served
    /// keep the target when more arrive than the fleet can serve.
    pub shed_over_slo: bool,
    /// Runtime worker threads for HTTP, proxying and the fleet, read at
    /// start. Unset: `TOKIO_WORKER_THREADS` if set, else one per core. A
    /// tier whose host's cores are shared with other busy processes keeps
    /// its tail latency with more (docs/fleet-tier-bench.md).
    pub worker_threads: Option<usize>,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
            api_keys: Vec::new(),
            admin_key: None,
            max_body_bytes: 4 << 20,
            max_pending_requests: 4096,
            drain_timeout: Duration::from_secs(30),
            step_timeout: Duration::from_secs(60),
            max_reroutes: 3,
            unhealthy_backoff: Duration::from_millis(500),
            unavailable_wait: Duration::from_secs(10),
            client_stall_timeout: Duration::from_secs(30),
            shed_over_slo: false,
            worker_threads: None,
        }
    }
}

/// The served model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Model spec in `profiles/models/` (prices the cost model).
    pub spec: String,
    /// Name clients pass as `model` (defaults to `spec`).
    pub served_name: Option<String>,
    /// Model directory (weights, `tokenizer.json`, `tokenizer_config.json`) for real backends.
    pub path: Option<PathBuf>,
}

impl ModelSection {
    /// The name clients use.
    pub fn served_name(&self) -> &str {
        self.served_name.as_deref().unwrap_or(&self.spec)
    }
}

/// The model spec a fleet is priced with when nothing names one.
pub const DEFAULT_MODEL_SPEC: &str = "llama-3.1-8b";

/// Engine sizing (see [`EngineConfig`]); the `[engine]` table of
/// `switchyard.toml` and of loadgen fleet files.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    /// Tokens per KV block.
    pub block_size: u32,
    /// Most sequences running at once per device.
    pub max_num_seqs: u32,
    /// Token budget of one step.
    pub max_batched_tokens: u32,
    /// Reuse KV blocks of identical prompt prefixes; unset: on for the live
    /// server, and in the simulator only when some prompts share a prefix
    /// (elsewhere the cache could only ever hit a preempted sequence's own
    /// blocks, and its upkeep costs simulation time).
    pub enable_prefix_caching: Option<bool>,
    /// Cap each step's prefill tokens so its predicted time stays within
    /// the TPOT target (SLO-budgeted steps; see [`EngineConfig::step_time_budget`]).
    pub slo_budgeted_steps: bool,
}

impl Default for EngineSection {
    fn default() -> Self {
        let e = EngineConfig::default();
        Self {
            block_size: 16,
            max_num_seqs: e.max_num_seqs,
            max_batched_tokens: e.max_batched_tokens,
            enable_prefix_caching: None,
            slo_budgeted_steps: true,
        }
    }
}

impl EngineSection {
    /// Engine limits for a model with `max_context` tokens, as the live
    /// server runs them (prefix caching unless turned off; no step budget,
    /// which the driver sets from the SLO).
    pub fn engine_config(&self, max_context: u32) -> EngineConfig {
        EngineConfig {
            max_num_seqs: self.max_num_seqs,
            max_batched_tokens: self.max_batched_tokens,
            max_model_len: max_context,
            enable_prefix_caching: self.enable_prefix_caching.unwrap_or(true),
            step_time_budget: None,
        }
    }
}

/// Router policy, objective and SLO; the `[router]` table of
/// `switchyard.toml` and of loadgen fleet files (defaults: [`RouterConfig`]'s).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterSection {
    /// `cost`, `latency`, `round-robin`, `least-loaded` or `prefix`.
    pub policy: PolicyKind,
    /// What `cost` optimises among devices meeting the SLO: `fixed` or `elastic`.
    pub objective: Objective,
    /// Service-level objective.
    pub slo: SloSection,
    /// `prefix`: least fraction of the prompt the cached prefix must cover.
    pub prefix_min_match: f64,
    /// `prefix`: most outstanding tokens the cache holder may exceed the least-loaded device by.
    pub prefix_balance_tokens: u64,
}

impl Default for RouterSection {
    fn default() -> Self {
        let r = RouterConfig::default();
        Self {
            policy: r.policy,
            objective: r.objective,
            slo: SloSection::from(r.slo),
            prefix_min_match: r.prefix_min_match,
            prefix_balance_tokens: r.prefix_balance_tokens,
        }
    }
}

impl RouterSection {
    /// The router's configuration.
    pub fn router_config(&self) -> RouterConfig {
        RouterConfig {
            policy: self.policy,
            objective: self.objective,
            slo: self.slo.router_slo(),
            prefix_min_match: self.prefix_min_match,
            prefix_balance_tokens: self.prefix_balance_tokens,
            ..RouterConfig::default()
        }
    }
}

/// SLO targets: the `[router.slo]` table and the CLI's `--slo`.
///
/// The percentile is stored as a fraction in (0, 1]; on input a value of 1
/// or more is read as a percentage (`95` = `0.95`), so both spellings work.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SloSection {
    /// Time-to-first-token target, milliseconds.
    pub ttft_ms: f64,
    /// Time-per-output-token target, milliseconds.
    pub tpot_ms: f64,
    /// Percentile the targets apply to, as a fraction (0.95 = p95).
    #[serde(deserialize_with = "fraction_or_percent")]
    pub percentile: f64,
}

/// A percentile as a fraction, from a fraction or a percentage.
fn fraction_or_percent<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(as_fraction(f64::deserialize(d)?))
}

/// `p` as a fraction: values of 1 or more are percentages.
fn as_fraction(p: f64) -> f64 {
    if p >= 1.0 {
        p / 100.0
    } else {
        p
    }
}

impl Default for SloSection {
    fn default() -> Self {
        Self::from(Slo::default())
    }
}

impl From<Slo> for SloSection {
    fn from(slo: Slo) -> Self {
        Self {
            ttft_ms: slo.ttft.as_secs_f64() * 1e3,
            tpot_ms: slo.tpot.as_secs_f64() * 1e3,
            percentile: slo.percentile,
        }
    }
}

/// Why an `--slo` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SLO `{input}`: {reason}")]
pub struct SloParseError {
    /// The value given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl std::str::FromStr for SloSection {
    type Err = SloParseError;

    /// `ttft_ms=T,tpot_ms=P[,percentile=95]`, or the planner's
    /// `ttft_p95_ms=T,tpot_p95_ms=P` (the percentile read from the key).
    fn from_str(s: &str) -> Result<Self, SloParseError> {
        let err = |reason: String| SloParseError {
            input: s.to_string(),
            reason,
        };
        let mut slo = SloSection::default();
        let (mut ttft, mut tpot) = (false, false);
        for kv in s.split(',').filter(|x| !x.trim().is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| err(format!("`{kv}` is not KEY=VALUE")))?;
            let k = k.trim();
            let v: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v > 0.0)
                .ok_or_else(|| err(format!("field `{k}`: `{v}` is not a positive number")))?;
            let pct_of = |key: &str, metric: &str| -> Option<f64> {
                key.strip_prefix(metric)?
                    .strip_suffix("_ms")?
                    .strip_prefix("_p")?
                    .parse()
                    .ok()
            };
            match k {
                "ttft_ms" => (slo.ttft_ms, ttft) = (v, true),
                "tpot_ms" => (slo.tpot_ms, tpot) = (v, true),
                "percentile" | "p" => slo.percentile = as_fraction(v),
                _ => {
                    if let Some(p) = pct_of(k, "ttft") {
                        (slo.ttft_ms, ttft, slo.percentile) = (v, true, p / 100.0);
                    } else if let Some(p) = pct_of(k, "tpot") {
                        (slo.tpot_ms, tpot, slo.percentile) = (v, true, p / 100.0);
                    } else {
                        return Err(err(format!(
                            "unknown field `{k}` (expected ttft_ms, tpot_ms, percentile, ttft_pNN_ms, tpot_pNN_ms)"
                        )));
                    }
                }
            }
        }
        if !(ttft && tpot) {
            return Err(err("both a TTFT and a TPOT target are required".into()));
        }
        if !(slo.percentile > 0.0 && slo.percentile <= 1.0) {
            return Err(err(format!(
                "field `percentile`: {} is not in (0, 100]",
                slo.percentile * 100.0
            )));
        }
        Ok(slo)
    }
}

impl SloSection {
    /// Whether one request's latencies meet the targets (no TPOT: a single-token output passes it).
    pub fn met_by(&self, ttft_s: f64, tpot_s: Option<f64>) -> bool {
        ttft_s * 1e3 <= self.ttft_ms && tpot_s.is_none_or(|t| t * 1e3 <= self.tpot_ms)
    }

    /// The percentile in percent (95 for p95), as latency summaries index it.
    pub fn percent(&self) -> f64 {
        self.percentile * 100.0
    }

    /// The router's SLO for these targets.
    pub fn router_slo(&self) -> Slo {
        Slo::from_ms(self.ttft_ms, self.tpot_ms, self.percentile)
    }

    /// Compact text form, `ttft_ms=..,tpot_ms=..,percentile=..` (percent), as `FromStr` reads it.
    pub fn to_spec_string(&self) -> String {
        format!(
            "ttft_ms={},tpot_ms={},percentile={}",
            self.ttft_ms,
            self.tpot_ms,
            self.percent()
        )
    }
}

/// Injected faults for testing fault tolerance (never set in production).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// Probability that a step fails.
    #[serde(default)]
    pub fail_rate: f64,
    /// Probability that a step hangs for `hang_s` seconds.
    #[serde(default)]
    pub hang_rate: f64,
    /// How long a hung step blocks (`hang_s`).
    #[serde(rename = "hang_s", default = "default_hang", with = "serde_secs")]
    pub hang: Duration,
    /// Probability that a step panics.
    #[serde(default)]
    pub panic_rate: f64,
    /// Seed of the fault sequence.
    #[serde(default)]
    pub seed: u64,
}

fn default_hang() -> Duration {
    Duration::from_secs(5)
}

/// One device of the fleet.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Unique name (`h100-0`).
    pub id: String,
    /// Which backend executes steps.
    pub backend: BackendKind,
    /// Device profile in `profiles/devices/`.
    pub profile: String,
    /// Device ordinal for GPU backends.
    #[serde(default)]
    pub ordinal: u32,
    /// Sim only: how much of the predicted step time to wait out (1 = real time, 0 = instant).
    #[serde(default = "one")]
    pub time_scale: f64,
    /// Overrides the KV capacity (blocks) the cost model computes.
    pub kv_blocks: Option<u32>,
    /// ONNX only: host memory for the KV pool when `kv_blocks` is unset, MiB.
    #[serde(default = "default_kv_mib")]
    pub kv_cache_mib: u64,
    /// ONNX only: ONNX Runtime intra-op threads (0: one per physical core).
    #[serde(default)]
    pub threads: usize,
    /// ONNX only: let ONNX Runtime's idle intra-op threads spin between
    /// operators instead of sleeping ([`OnnxConfig::intra_spinning`]).
    #[serde(default = "spinning_default")]
    pub spinning: bool,
    /// ONNX only: the ONNX Runtime shared library (default: `ORT_DYLIB_PATH`).
    pub library: Option<PathBuf>,
    /// CUDA/ROCm only: element type of weights and KV cache (`bf16` or `f32`).
    #[serde(default = "default_dtype")]
    pub dtype: StoreType,
    /// CUDA/ROCm only: share of device memory for weights, KV cache and activations.
    #[serde(default = "default_memory_fraction")]
    pub memory_fraction: f64,
    /// Test-only fault injection.
    pub fault: Option<FaultConfig>,
}

impl DeviceConfig {
    /// This device's settings checked for its backend kind, with the
    /// engine sizing and model directory of `config`; a backend that needs a
    /// model directory and has none is unavailable.
    pub fn spec(&self, config: &Config) -> Result<DeviceSpec, BackendError> {
        let engine = &config.engine;
        let model_dir = |needs: &str| {
            config.model.path.clone().ok_or_else(|| {
                BackendError::Unavailable(format!(
                    "the {} backend needs [model] path = \"<model directory>\"{needs}",
                    self.backend
                ))
            })
        };
        let gpu = |dir: PathBuf| GpuConfig {
            ordinal: self.ordinal,
            store: self.dtype,
            block_size: engine.block_size,
            kv_blocks: self.kv_blocks,
            memory_fraction: self.memory_fraction,
            max_batched_tokens: engine.max_batched_tokens,
            max_num_seqs: engine.max_num_seqs,
            ..GpuConfig::new(dir)
        };
        const WEIGHTS: &str = " (config.json + model.safetensors)";
        let backend = match self.backend {
            BackendKind::Sim => BackendSpec::Sim(SimConfig {
                block_size: engine.block_size,
                max_num_seqs: engine.max_num_seqs,
                max_batched_tokens: engine.max_batched_tokens,
                kv_blocks: self.kv_blocks,
            }),
            BackendKind::Onnx => BackendSpec::Onnx(OnnxConfig {
                library: self.library.clone(),
                block_size: engine.block_size,
                kv_blocks: self.kv_blocks,
                kv_cache_bytes: self.kv_cache_mib << 20,
                intra_threads: self.threads,
                intra_spinning: self.spinning,
                ..OnnxConfig::new(model_dir("")?)
            }),
            BackendKind::Cuda => BackendSpec::Cuda(gpu(model_dir(WEIGHTS)?)),
            BackendKind::Rocm => BackendSpec::Rocm(gpu(model_dir(WEIGHTS)?)),
        };
        Ok(DeviceSpec {
            backend,
            fault: self.fault.map(|f| FaultPlan {
                fail_rate: f.fail_rate,
                hang_rate: f.hang_rate,
                hang: f.hang,
                panic_rate: f.panic_rate,
                seed: f.seed,
            }),
        })
    }
}

fn default_dtype() -> StoreType {
    StoreType::Bf16
}

fn default_memory_fraction() -> f64 {
    0.9
}

fn default_kv_mib() -> u64 {
    512
}

fn spinning_default() -> bool {
    OnnxConfig::DEFAULT_SPINNING
}

fn one() -> f64 {
    1.0
}

/// A TOML error's message prefixed with its line and that line's text, so
/// a wrong value is reported with the key it was given for.
fn located_message(text: &str, e: &toml::de::Error) -> String {
    let at = TomlErrorAt::new(text, e);
    match at.line {
        Some(line) => format!("line {line} {}", at.message),
        None => at.message,
    }
}

impl Config {
    /// Parses a config; `path` names the source in errors and anchors relative paths.
    pub fn from_toml(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            message: located_message(text, &e),
        })?;
        // Relative paths in the file are relative to the file, not the cwd.
        let base = path.parent().unwrap_or(Path::new("."));
        let anchor = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        anchor(&mut config.profiles_dir);
        config.model.path.iter_mut().for_each(anchor);
        for d in &mut config.devices {
            d.library.iter_mut().for_each(anchor);
        }
        config.validate(path)?;
        Ok(config)
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::from_toml(path, &text)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |message: String| ConfigError {
            path: path.to_path_buf(),
            message,
        };
        let a = &self.autoscale;
        if a.enabled {
            if self.endpoints.is_empty() {
                return Err(bad(
                    "autoscale plans [[endpoints]] pools; there are none".into()
                ));
            }
            if a.window.is_zero() || a.interval.is_zero() {
                return Err(bad(
                    "autoscale.window_s and autoscale.interval_s must be > 0".into(),
                ));
            }
            if a.max_replicas == 0 || a.min_replicas > a.max_replicas || a.simulated_requests < 50 {
                return Err(bad(
                    "autoscale: need 1 <= max_replicas, min_replicas <= max_replicas, simulated_requests >= 50"
                        .into(),
                ));
            }
        }
        if self.devices.is_empty() && self.endpoints.is_empty() {
            return Err(bad(
                "the config lists no [[devices]] and no [[endpoints]]".into()
            ));
        }
        let mut ids: Vec<&str> = self
            .devices
            .iter()
            .map(|d| d.id.as_str())
            .chain(self.endpoints.iter().map(|e| e.id.as_str()))
            .collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(bad(format!(
                "id `{}` appears twice among devices and endpoints",
                w[0]
            )));
        }
        for e in &self.endpoints {
            if e.id.is_empty() || e.id.contains('/') {
                return Err(bad(format!(
                    "endpoint id `{}` must be non-empty and contain no `/`",
                    e.id
                )));
            }
            e.authority()
                .map_err(|m| bad(format!("endpoints.{}: {m}", e.id)))?;
            if e.profile.is_none() && e.engine != EngineKind::Switchyard {
                return Err(bad(format!(
                    "endpoints.{}: a {} endpoint needs `profile` (the device profile that prices it)",
                    e.id, e.engine
                )));
            }
            if e.max_num_seqs == Some(0) || e.max_batched_tokens == Some(0) {
                return Err(bad(format!(
                    "endpoints.{}: max_num_seqs and max_batched_tokens must be at least 1",
                    e.id
                )));
            }
        }
        if self.server.worker_threads == Some(0) {
            return Err(bad("server.worker_threads must be at least 1".into()));
        }
        let t = &self.tier;
        if t.breaker_failures == 0 || t.scrape_interval.is_zero() {
            return Err(bad(
                "tier.breaker_failures and tier.scrape_interval_ms must be at least 1".into(),
            ));
        }
        let e = &self.engine;
        if e.block_size == 0 || e.max_num_seqs == 0 || e.max_batched_tokens == 0 {
            return Err(bad(
                "engine.block_size, max_num_seqs and max_batched_tokens must be at least 1".into(),
            ));
        }
        let slo = &self.router.slo;
        if !(slo.ttft_ms > 0.0 && slo.tpot_ms > 0.0 && slo.percentile > 0.0 && slo.percentile < 1.0)
        {
            return Err(bad(
                "router.slo needs ttft_ms > 0, tpot_ms > 0 and 0 < percentile < 1".into(),
            ));
        }
        for d in &self.devices {
            if !(d.time_scale >= 0.0 && d.time_scale.is_finite()) {
                return Err(bad(format!("devices.{}.time_scale must be >= 0", d.id)));
            }
            if !(d.memory_fraction > 0.0 && d.memory_fraction <= 1.0) {
                return Err(bad(format!(
                    "devices.{}.memory_fraction must be in (0, 1]",
                    d.id
                )));
            }
        }
        Ok(())
    }

    /// Step-hang timeout.
    pub fn step_timeout(&self) -> Duration {
        self.server.step_timeout.max(Duration::from_millis(1))
    }
}

/// `Duration` as (de)serialized milliseconds (`f64`).
pub mod serde_ms {
    use std::time::Duration;

    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    /// Serializes a duration as milliseconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1e3)
    }

    /// Deserializes non-negative finite milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        Duration::try_from_secs_f64(ms / 1e3)
            .map_err(|_| D::Error::custom(format!("expected milliseconds ≥ 0, got {ms}")))
    }
}

/// `Duration` as (de)serialized seconds (`f64`).
pub mod serde_secs {
    use std::time::Duration;

    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    /// Serializes a duration as seconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    /// Deserializes non-negative finite seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs)
            .map_err(|_| D::Error::custom(format!("expected seconds ≥ 0, got {secs}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_types_are_reported_with_their_key_and_line() {
        let text = "[model]\nspec = \"m\"\n[server]\nmax_body_bytes = \"big\"\n";
        let err = Config::from_toml(Path::new("c.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.toml"), "{err}");
        assert!(
            err.contains("line 4") && err.contains("max_body_bytes"),
            "{err}"
        );
    }

    #[test]
    fn worker_threads_is_optional_and_at_least_one() {
        let base = "[model]\nspec = \"m\"\n[[devices]]\nid = \"d\"\nbackend = \"sim\"\nprofile = \"h100-sxm\"\n";
        let parse =
            |server: &str| Config::from_toml(Path::new("c.toml"), &format!("{server}{base}"));
        assert_eq!(parse("").expect("no [server]").server.worker_threads, None);
        let four = parse("[server]\nworker_threads = 4\n").expect("4 workers");
        assert_eq!(four.server.worker_threads, Some(4));
        let err = parse("[server]\nworker_threads = 0\n")
            .expect_err("0 workers")
            .to_string();
        assert!(err.contains("server.worker_threads"), "{err}");
    }
}
