//! The fleet: every configured device (started or unavailable), the router
//! over them, the tokenizer, admission control and the hang watchdog.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use switchyard_backends::{Catalog, CostModel, ModelSpec, SeqId};
use switchyard_scheduler::config::Config;
use switchyard_scheduler::engine::Engine;
use switchyard_scheduler::kv::prefix_hashes;
use switchyard_scheduler::router::{
    Decision, DeviceId, DeviceView, RouteError, RouteRequest, Router,
};

use crate::tier::{RemoteTarget, Tier};
use crate::tokenizer::{SharedTokenizer, SyntheticTokenizer};
use crate::worker::{
    self, lock, Command, DeviceIdentity, DeviceShared, DeviceState, Limits, WorkerOptions,
};
use crate::ServerError;

/// Every device, the router and the shared request state.
pub struct LiveFleet {
    devices: Vec<Arc<DeviceShared>>,
    tier: Option<Arc<Tier>>,
    router: Mutex<Router>,
    model: ModelSpec,
    served_name: String,
    tokenizer: SharedTokenizer,
    block_size: u32,
    pending: AtomicUsize,
    max_pending: usize,
    max_reroutes: u32,
    unavailable_wait: Duration,
    client_stall_timeout: Duration,
    shed_over_slo: bool,
    next_id: AtomicU64,
    epoch: Instant,
    stopping: AtomicBool,
    autoscaler: crate::autoscale::Autoscaler,
    /// Whether arrivals are recorded for the autoscaler (`[autoscale] enabled`).
    records_arrivals: bool,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Where a request runs: a local device or a remote target.
#[derive(Clone)]
pub enum Target {
    /// A device of this process.
    Local(Arc<DeviceShared>),
    /// A remote server, or one device of a Switchyard node.
    Remote(Arc<RemoteTarget>),
}

impl Target {
    /// Its name in metrics and admin views.
    pub fn name(&self) -> &str {
        match self {
            Target::Local(d) => &d.id,
            Target::Remote(t) => &t.id,
        }
    }

    /// Its router id.
    pub fn index(&self) -> DeviceId {
        match self {
            Target::Local(d) => d.index,
            Target::Remote(t) => t.index,
        }
    }
}

/// What `with_views` built besides the views, for `route`'s bookkeeping.
#[derive(Clone, Copy)]
struct RouteContext<'a> {
    hashes: &'a [u64],
    remotes: &'a [Arc<RemoteTarget>],
}

/// A device chosen for a request, with the router's reasoning.
pub struct Routed {
    /// Where it runs.
    pub target: Target,
    /// The decision (scores of every device).
    pub decision: Decision,
}

impl LiveFleet {
    /// Starts every device that can start; fails only if none can.
    pub fn start(config: &Config) -> Result<Arc<LiveFleet>, ServerError> {
        let catalog = Catalog::new(&config.profiles_dir);
        let model = catalog.model(&config.model.spec)?;
        let router_config = config.router.router_config();
        let mut engine_config = config.engine.engine_config(model.max_context);
        engine_config.step_time_budget = config
            .engine
            .slo_budgeted_steps
            .then(|| router_config.slo.step_budget());
        let epoch = Instant::now();
        let mut devices = Vec::new();
        let mut threads = Vec::new();
        for (i, dc) in config.devices.iter().enumerate() {
            let index = DeviceId(i as u32);
            let profile = catalog.device(&dc.profile)?;
            let cost = CostModel::new(profile, model.clone());
            let started = dc
                .spec(config)
                .and_then(|spec| switchyard_backends::open::open(&spec, &cost));
            let (backend, error) = match started {
                Ok(b) => (Some(b), None),
                Err(e) => {
                    tracing::warn!(device = %dc.id, error = %e, "device unavailable");
                    (None, Some(e.to_string()))
                }
            };
            let info = backend.as_ref().map(|b| b.info().clone());
            let (kv_blocks, block_size) = info
                .as_ref()
                .map(|i| (i.kv_blocks, i.block_size))
                .unwrap_or((0, config.engine.block_size));
            let engine = Engine::new(engine_config, cost.clone(), kv_blocks, block_size);
            let limits = Limits {
                max_seq_tokens: if info.is_some() {
                    engine.max_seq_tokens()
                } else {
                    0
                },
                max_num_seqs: engine_config.max_num_seqs,
                max_batched_tokens: engine_config.max_batched_tokens,
                block_size,
                step_time_budget: engine_config.step_time_budget,
            };
            let who = DeviceIdentity {
                index,
                id: dc.id.clone(),
                backend: dc.backend,
                profile: dc.profile.clone(),
            };
            let shared = Arc::new(DeviceShared::new(who, cost, limits, info, error));
            if let Some(backend) = backend {
                let opts = WorkerOptions {
                    time_scale: dc.time_scale,
                    unhealthy_backoff: config.server.unhealthy_backoff,
                    epoch,
                };
                let handle = worker::spawn(shared.clone(), engine, backend, opts)
                    .map_err(|e| ServerError::Io(e.to_string()))?;
                tracing::info!(device = %dc.id, backend = %dc.backend, profile = %dc.profile,
                    kv_blocks, "device ready");
                threads.push(handle);
            }
            devices.push(shared);
        }
        if config.endpoints.is_empty() && !devices.iter().any(|d| d.state() == DeviceState::Ready) {
            let reasons: Vec<String> = devices
                .iter()
                .map(|d| format!("{}: {}", d.id, d.last_error().unwrap_or_default()))
                .collect();
            return Err(ServerError::NoUsableDevice(reasons.join("; ")));
        }
        let tokenizer = load_tokenizer(config, &model)?;
        let tier = if config.endpoints.is_empty() {
            None
        } else {
            Some(Tier::start(config, &model)?)
        };
        let fleet = Arc::new(LiveFleet {
            devices,
            tier,
            router: Mutex::new(Router::new(router_config)),
            served_name: config.model.served_name().to_string(),
            model,
            tokenizer,
            block_size: config.engine.block_size,
            pending: AtomicUsize::new(0),
            max_pending: config.server.max_pending_requests,
            max_reroutes: config.server.max_reroutes,
            unavailable_wait: config.server.unavailable_wait,
            client_stall_timeout: config.server.client_stall_timeout,
            shed_over_slo: config.server.shed_over_slo,
            next_id: AtomicU64::new(1),
            epoch,
            stopping: AtomicBool::new(false),
            autoscaler: Default::default(),
            records_arrivals: config.autoscale.enabled,
            threads: Mutex::new(threads),
        });
        fleet.register_metrics();
        fleet.spawn_watchdog(config.step_timeout())?;
        Ok(fleet)
    }

    /// Registers counters that only move on rare events, so dashboards and
    /// alerts see them (at zero) from the first scrape.
    fn register_metrics(&self) {
        use crate::metrics as m;
        metrics::counter!(m::REJECTED).absolute(0);
        for d in &self.devices {
            metrics::counter!(m::REROUTES, "from" => d.id.clone()).absolute(0);
            metrics::counter!(m::STEP_FAILURES, "device" => d.id.clone(), "kind" => "hang")
                .absolute(0);
            metrics::gauge!(m::DEVICE_HEALTHY, "device" => d.id.clone(), "backend" => d.backend.to_string())
                .set(if d.state() == DeviceState::Ready { 1.0 } else { 0.0 });
        }
    }

    fn spawn_watchdog(self: &Arc<Self>, timeout: Duration) -> Result<(), ServerError> {
        let weak = Arc::downgrade(self);
        let handle = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(20));
                let Some(fleet) = weak.upgrade() else {
                    return;
                };
                if fleet.stopping.load(Ordering::Acquire) {
                    return;
                }
                let now_us = fleet.epoch.elapsed().as_micros() as u64;
                for d in &fleet.devices {
                    if d.check_hang(now_us, timeout) {
                        tracing::warn!(device = %d.id, "step hung; sequences re-routed");
                    }
                }
            })
            .map_err(|e| ServerError::Io(e.to_string()))?;
        lock(&self.threads).push(handle);
        Ok(())
    }

    /// Every device, in config order.
    pub fn devices(&self) -> &[Arc<DeviceShared>] {
        &self.devices
    }

    /// The remote endpoints, when the config lists any.
    pub fn tier(&self) -> Option<&Arc<Tier>> {
        self.tier.as_ref()
    }

    /// Every remote target now configured.
    pub fn remote_targets(&self) -> Vec<Arc<RemoteTarget>> {
        self.tier
            .as_ref()
            .map(|t| t.targets().as_ref().clone())
            .unwrap_or_default()
    }

    /// The local device or remote target with router id `id`.
    pub fn target(&self, id: DeviceId) -> Option<Target> {
        if Tier::is_remote(id) {
            self.tier.as_ref()?.target(id).map(Target::Remote)
        } else {
            self.devices.get(id.0 as usize).cloned().map(Target::Local)
        }
    }

    /// The name of router id `id` (`None` once a remote target is gone).
    pub fn name_of(&self, id: DeviceId) -> Option<String> {
        self.target(id).map(|t| t.name().to_string())
    }

    /// Longest sequence any local device or remote target holds.
    pub fn longest_sequence(&self) -> u32 {
        let local = self.devices.iter().map(|d| d.limits.max_seq_tokens);
        let remote = self
            .remote_targets()
            .into_iter()
            .map(|t| t.limits().max_seq_tokens);
        local.chain(remote).max().unwrap_or(0)
    }

    /// The served model's spec.
    pub fn model(&self) -> &ModelSpec {
        &self.model
    }

    /// The name clients use for the model.
    pub fn served_name(&self) -> &str {
        &self.served_name
    }

    /// Tokens per KV block (the unit of prefix hashes).
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &SharedTokenizer {
        &self.tokenizer
    }

    /// Whether any device or remote target can take work.
    pub fn ready(&self) -> bool {
        self.devices.iter().any(|d| d.state() == DeviceState::Ready)
            || self.tier.as_ref().is_some_and(|t| t.ready())
    }

    /// A fresh sequence id.
    pub fn next_seq_id(&self) -> SeqId {
        SeqId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Reserves an admission slot; `None` when the queue is full.
    pub fn admit(self: &Arc<Self>) -> Option<AdmissionPermit> {
        let prev = self.pending.fetch_add(1, Ordering::AcqRel);
        if prev >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(AdmissionPermit {
            fleet: self.clone(),
        })
    }

    /// Times a request may be re-routed after failures.
    pub fn max_reroutes(&self) -> u32 {
        self.max_reroutes
    }

    /// How long a request waits for a device to recover when none is healthy.
    pub fn unavailable_wait(&self) -> Duration {
        self.unavailable_wait
    }

    /// How long a stream may wait on a client that stopped reading.
    pub fn client_stall_timeout(&self) -> Duration {
        self.client_stall_timeout
    }

    /// With `server.shed_over_slo`: the SLO's TTFT target, by which a
    /// request's first token must come or the request is withdrawn.
    pub fn first_token_deadline(&self) -> Option<Duration> {
        self.shed_over_slo
            .then(|| lock(&self.router).config().slo.ttft)
    }

    /// With `server.shed_over_slo`: `Err(excess)` when even the best
    /// eligible device is predicted to start this request `excess` past the
    /// SLO's TTFT budget (the target scaled by its percentile headroom).
    /// Scores the fleet as `route` does, without dispatching.
    pub fn shed_check(&self, prompt: &[u32], max_tokens: u32) -> Result<(), Duration> {
        if !self.shed_over_slo {
            return Ok(());
        }
        self.with_views(prompt, max_tokens, &[], |req, views, _| {
            let now = self.epoch.elapsed();
            let router = lock(&self.router);
            let slo = router.config().slo;
            let budget = slo.ttft.mul_f64(slo.headroom());
            let shape = router.shape(req);
            let best = views
                .iter()
                .map(|v| router.score(&shape, v, now))
                .filter(|s| s.eligible)
                .map(|s| s.ttft)
                .min();
            match best {
                Some(ttft) if ttft > budget => Err(ttft - budget),
                _ => Ok(()),
            }
        })
    }

    /// Builds the router's view of every device and remote target for a
    /// prompt (its cached prefix on each), skipping `exclude`, and hands
    /// them to `f` with the request and the prompt's block hashes.
    fn with_views<R>(
        &self,
        prompt: &[u32],
        max_tokens: u32,
        exclude: &[DeviceId],
        f: impl FnOnce(&RouteRequest, &[DeviceView<'_>], RouteContext<'_>) -> R,
    ) -> R {
        let req = RouteRequest {
            prompt_tokens: prompt.len().min(u32::MAX as usize) as u32,
            max_tokens,
        };
        let hashes = prefix_hashes(prompt, self.block_size);
        let remotes = self.remote_targets();
        let costs = self.costs(&remotes);
        let views = self.views(&costs, &remotes, &hashes, exclude);
        f(
            &req,
            &views,
            RouteContext {
                hashes: &hashes,
                remotes: &remotes,
            },
        )
    }

    /// The arrival window and latest replica plan.
    pub fn autoscaler(&self) -> &crate::autoscale::Autoscaler {
        &self.autoscaler
    }

    /// Whether the fleet is shutting down.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Requests admitted and not yet finished.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Scores every device and remote target for a prompt and picks one, skipping `exclude`.
    pub fn route(
        &self,
        prompt: &[u32],
        max_tokens: u32,
        exclude: &[DeviceId],
    ) -> Result<Routed, RouteError> {
        self.with_views(prompt, max_tokens, exclude, |req, views, cx| {
            self.dispatch(req, views, cx, exclude)
        })
    }

    /// `route`'s decision over the views, and its bookkeeping.
    fn dispatch(
        &self,
        req: &RouteRequest,
        views: &[DeviceView<'_>],
        cx: RouteContext<'_>,
        exclude: &[DeviceId],
    ) -> Result<Routed, RouteError> {
        let RouteContext { hashes, remotes } = cx;
        let now = self.epoch.elapsed();
        let decision = lock(&self.router).route(req, views, now)?;
        if self.records_arrivals && exclude.is_empty() {
            // A first attempt is an arrival; re-routes are not.
            self.autoscaler.record(
                Instant::now(),
                req.prompt_tokens,
                decision.shape.expected_output_tokens,
            );
        }
        let target = match remotes.iter().find(|t| t.index == decision.device) {
            Some(t) => {
                if let Some(tier) = &self.tier {
                    tier.note_routed(t, hashes);
                }
                Target::Remote(t.clone())
            }
            None => Target::Local(self.devices[decision.device.0 as usize].clone()),
        };
        Ok(Routed { target, decision })
    }

    /// What the router would decide for a request of this size, without
    /// sending anything or advancing round-robin state.
    pub fn explain(&self, prompt_tokens: u32, max_tokens: u32) -> Result<Decision, RouteError> {
        let req = RouteRequest {
            prompt_tokens,
            max_tokens,
        };
        let remotes = self.remote_targets();
        let costs = self.costs(&remotes);
        let views = self.views(&costs, &remotes, &[], &[]);
        let mut router = lock(&self.router).clone();
        router.route_scoring_all(&req, &views, self.epoch.elapsed())
    }

    fn costs(&self, remotes: &[Arc<RemoteTarget>]) -> Vec<Arc<CostModel>> {
        self.devices
            .iter()
            .map(|d| d.cost())
            .chain(remotes.iter().map(|t| t.cost()))
            .collect()
    }

    fn views<'a>(
        &self,
        costs: &'a [Arc<CostModel>],
        remotes: &[Arc<RemoteTarget>],
        hashes: &[u64],
        exclude: &[DeviceId],
    ) -> Vec<DeviceView<'a>> {
        let now = Instant::now();
        let local = self.devices.iter().zip(costs).map(|(d, cost)| {
            let cached = hashes.iter().take_while(|h| d.cached.contains(*h)).count() as u32;
            DeviceView {
                id: d.index,
                cost,
                load: d.load(),
                healthy: d.state() == DeviceState::Ready && !exclude.contains(&d.index),
                max_seq_tokens: d.limits.max_seq_tokens,
                max_num_seqs: d.limits.max_num_seqs,
                max_batched_tokens: d.limits.max_batched_tokens,
                cached_prefix_tokens: cached * d.limits.block_size,
                step_time_budget: d.limits.step_time_budget,
            }
        });
        let cached_blocks = match &self.tier {
            Some(tier) => tier.cached_prefix_blocks(remotes, hashes),
            None => vec![0; remotes.len()],
        };
        let remote = remotes
            .iter()
            .zip(&costs[self.devices.len()..])
            .zip(cached_blocks)
            .map(|((t, cost), cached)| {
                let limits = t.limits();
                DeviceView {
                    id: t.index,
                    cost,
                    load: t.load(),
                    healthy: t.accepts(now) && !exclude.contains(&t.index),
                    max_seq_tokens: limits.max_seq_tokens,
                    max_num_seqs: limits.max_num_seqs,
                    max_batched_tokens: limits.max_batched_tokens,
                    cached_prefix_tokens: cached * self.block_size,
                    step_time_budget: limits.step_time_budget,
                }
            });
        local.chain(remote).collect()
    }

    /// Feeds an observed output length to the router's estimator.
    pub fn observe_output(&self, max_tokens: u32, output_tokens: u32) {
        lock(&self.router).observe_output(max_tokens, output_tokens);
    }

    /// Applies reloaded profiles and router settings.
    pub fn reload(&self, config: &Config) -> Result<(), ServerError> {
        let catalog = Catalog::new(&config.profiles_dir);
        let model = catalog.model(&config.model.spec)?;
        if model.name != self.model.name {
            return Err(ServerError::Reload(
                "changing the served model needs a restart".into(),
            ));
        }
        let mut costs = Vec::new();
        for d in &self.devices {
            let dc = config
                .devices
                .iter()
                .find(|c| c.id == d.id)
                .ok_or_else(|| {
                    ServerError::Reload(format!(
                        "device `{}` missing; devices change on restart",
                        d.id
                    ))
                })?;
            costs.push(CostModel::new(catalog.device(&dc.profile)?, model.clone()));
        }
        if let Some(tier) = &self.tier {
            tier.reload(config)?;
        } else if !config.endpoints.is_empty() {
            return Err(ServerError::Reload(
                "endpoints can be added by reload only to a server started with some".into(),
            ));
        }
        for (d, cost) in self.devices.iter().zip(costs) {
            d.set_cost(cost);
        }
        lock(&self.router).set_config(config.router.router_config());
        Ok(())
    }

    /// Stops every worker and the watchdog.
    pub fn shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        if let Some(tier) = &self.tier {
            tier.shutdown();
        }
        for d in &self.devices {
            d.send(Command::Shutdown);
        }
        for t in lock(&self.threads).drain(..) {
            let _ = t.join();
        }
    }
}

/// An admitted request; releases its slot when dropped.
pub struct AdmissionPermit {
    fleet: Arc<LiveFleet>,
}

impl Drop for AdmissionPermit {
    fn drop(&mut self) {
        self.fleet.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The model directory's Hugging Face tokenizer, or a synthetic one for
/// simulated models that have no directory.
fn load_tokenizer(config: &Config, model: &ModelSpec) -> Result<SharedTokenizer, ServerError> {
    match &config.model.path {
        Some(dir) => {
            let tok = switchyard_backends::Tokenizer::from_dir(dir).map_err(|e| {
                ServerError::Config(switchyard_scheduler::config::ConfigError {
                    path: dir.clone(),
                    message: format!("tokenizer: {e}"),
                })
            })?;
            Ok(Arc::new(tok))
        }
        None => Ok(Arc::new(SyntheticTokenizer::new(
            model.vocab_size,
            model
                .eos_token_ids
                .iter()
                .max()
                .map_or(0, |m| m + 1)
                .min(16),
        ))),
    }
}
