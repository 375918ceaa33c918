//! Device workers: one OS thread per device owns its `Engine` and `Backend`
//! and loops `schedule → execute → complete`, taking new requests and aborts
//! from a channel and streaming events back to each request's task.
//!
//! The thread is a thin actor around pure state: all scheduling decisions
//! are the engine's. What the rest of the server may read (health, load,
//! cached prefixes, in-flight sinks) lives in [`DeviceShared`].
//!
//! # Failure handling
//! A step that errors marks the device unhealthy, returns every live
//! sequence to its request task (`SeqEvent::Failed`) for re-routing, and
//! backs off (doubling from `unhealthy_backoff`, up to 30 s) before probing
//! the backend with an empty step. A step that runs past the step timeout is
//! declared hung by the fleet's watchdog, which fails the device's sequences
//! from outside; when the step returns, the worker discards its results.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use dashmap::DashSet;
use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use switchyard_backends::{
    Backend, BackendKind, CostModel, DeviceInfo, SeqId, StepPlan, TokenLogprobs,
};
use tokio::sync::mpsc::UnboundedSender;

use crate::metrics as m;
use switchyard_scheduler::engine::{
    AbortOutcome, Engine, EngineError, Event, FinishReason, Load, Request, SeqStats,
};
use switchyard_scheduler::kv::CacheEvent;
use switchyard_scheduler::router::DeviceId;

/// What a request task hears from the device running it.
#[derive(Debug, Clone, PartialEq)]
pub enum SeqEvent {
    /// A generated token, with its log-probabilities when the request asked.
    Token(u32, Option<Box<TokenLogprobs>>),
    /// One chunk of a remote stream's tokens: they leave as one delta, so a
    /// proxied stream keeps its upstream's chunking rather than merging
    /// chunks that arrive together.
    Chunk(Vec<u32>),
    /// Generation ended on this device.
    Finished(FinishReason, Box<SeqStats>),
    /// The device failed; re-route what is left.
    Failed(String),
    /// The engine refused the request.
    Rejected(EngineError),
    /// A remote endpoint refused the request itself (a 4xx other than 408/429).
    Refused {
        /// The endpoint's status.
        status: u16,
        /// Its error message.
        message: String,
    },
}

/// Where a sequence's events go.
pub type SeqSink = UnboundedSender<SeqEvent>;

/// A request handed to a device.
#[derive(Debug)]
pub struct Submission {
    /// Tokens and stop rules.
    pub request: Request,
    /// Event sink of the request's task.
    pub sink: SeqSink,
    /// More samples of the same prompt (OpenAI `n` > 1), each with its own
    /// id and sink: the engine prefills the prompt once and forks it.
    pub forks: Vec<(SeqId, SeqSink)>,
}

/// Messages to a device worker.
#[derive(Debug)]
pub enum Command {
    /// Start a sequence.
    Add(Submission),
    /// Abort a sequence (client went away, or a stop string matched).
    Abort(SeqId),
    /// Use a reloaded cost model for load predictions.
    SetCost(Box<CostModel>),
    /// Finish the loop.
    Shutdown,
}

/// Health of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// Serving.
    Ready = 0,
    /// Failed recently; backing off before a probe.
    Unhealthy = 1,
    /// The backend could not start on this host.
    Unavailable = 2,
    /// Shut down.
    Stopped = 3,
}

impl DeviceState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Ready,
            1 => Self::Unhealthy,
            2 => Self::Unavailable,
            _ => Self::Stopped,
        }
    }
}

/// Engine limits a router needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Most tokens one sequence may hold.
    pub max_seq_tokens: u32,
    /// Most sequences running at once.
    pub max_num_seqs: u32,
    /// Token budget per step.
    pub max_batched_tokens: u32,
    /// Tokens per KV block.
    pub block_size: u32,
    /// SLO step-time budget of its engine, if it budgets steps.
    pub step_time_budget: Option<Duration>,
}

/// Who a device is: fleet index, config id, backend and profile.
#[derive(Debug, Clone)]
pub struct DeviceIdentity {
    /// Index in the fleet.
    pub index: DeviceId,
    /// Config id.
    pub id: String,
    /// Backend kind.
    pub backend: BackendKind,
    /// Profile name.
    pub profile: String,
}

/// The part of a device the rest of the server may read.
#[derive(Debug)]
pub struct DeviceShared {
    /// Index in the fleet.
    pub index: DeviceId,
    /// Config id.
    pub id: String,
    /// Backend kind.
    pub backend: BackendKind,
    /// Profile name.
    pub profile: String,
    cost: RwLock<Arc<CostModel>>,
    /// Engine limits (zero when unavailable).
    pub limits: Limits,
    /// What the backend reported at start, if it started.
    pub info: Option<DeviceInfo>,
    /// Hashes of the prefix blocks this device caches.
    pub cached: DashSet<u64>,
    /// Changes to `cached`, for tiers that follow this node's caches.
    pub kv_events: tokio::sync::broadcast::Sender<crate::tier::node::KvDiff>,
    state: AtomicU8,
    load: Mutex<LoadState>,
    inflight: Mutex<HashMap<SeqId, SeqSink>>,
    step_started_us: AtomicU64,
    generation: AtomicU64,
    last_error: Mutex<Option<String>>,
    commands: Mutex<Option<Sender<Command>>>,
}

/// Requests sent to a worker that its published load does not show yet.
///
/// A snapshot is published after each step, so without this a burst of
/// arrivals between two steps would all be routed by the same stale
/// snapshot, onto the same device; the simulator's router sees every add
/// at once, so this is also what keeps live routing equal to simulated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Unseen {
    seqs: u32,
    prompt_tokens: u64,
    decode_tokens: u64,
}

impl Unseen {
    fn add(&mut self, req: &switchyard_scheduler::Request) {
        self.seqs = self.seqs.saturating_add(1);
        self.prompt_tokens = self.prompt_tokens.saturating_add(req.prompt.len() as u64);
        self.decode_tokens = self.decode_tokens.saturating_add(u64::from(req.max_tokens));
    }

    fn remove(&mut self, seen: Unseen) {
        self.seqs = self.seqs.saturating_sub(seen.seqs);
        self.prompt_tokens = self.prompt_tokens.saturating_sub(seen.prompt_tokens);
        self.decode_tokens = self.decode_tokens.saturating_sub(seen.decode_tokens);
    }
}

/// The worker's last published load and what was sent since.
#[derive(Debug, Clone, Copy, Default)]
struct LoadState {
    snapshot: Load,
    unseen: Unseen,
}

/// Locks plain data, recovering from poisoning.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked mid-update of plain data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DeviceShared {
    /// Shared state of a device; `info` is `None` (and state unavailable) when the backend did not start.
    pub fn new(
        who: DeviceIdentity,
        cost: CostModel,
        limits: Limits,
        info: Option<DeviceInfo>,
        error: Option<String>,
    ) -> Self {
        let DeviceIdentity {
            index,
            id,
            backend,
            profile,
        } = who;
        let state = if info.is_some() {
            DeviceState::Ready
        } else {
            DeviceState::Unavailable
        };
        Self {
            index,
            id,
            backend,
            profile,
            cost: RwLock::new(Arc::new(cost)),
            limits,
            info,
            cached: DashSet::new(),
            kv_events: tokio::sync::broadcast::channel(1024).0,
            state: AtomicU8::new(state as u8),
            load: Mutex::new(LoadState::default()),
            inflight: Mutex::new(HashMap::new()),
            step_started_us: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            last_error: Mutex::new(error),
            commands: Mutex::new(None),
        }
    }

    /// Cost model of this device for the served model.
    pub fn cost(&self) -> Arc<CostModel> {
        self.cost.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the cost model (profile reload) here and in the engine.
    pub fn set_cost(&self, cost: CostModel) {
        *self.cost.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(cost.clone());
        self.send(Command::SetCost(Box::new(cost)));
    }

    /// Current health.
    pub fn state(&self) -> DeviceState {
        DeviceState::from_u8(self.state.load(Ordering::Acquire))
    }

    fn set_state(&self, s: DeviceState) {
        self.state.store(s as u8, Ordering::Release);
        gauge!(m::DEVICE_HEALTHY, "device" => self.id.clone(), "backend" => self.backend.to_string())
            .set(if s == DeviceState::Ready { 1.0 } else { 0.0 });
    }

    /// The latest load snapshot, plus the requests sent since it was taken
    /// (queued, with their prefill ahead of any new arrival).
    pub fn load(&self) -> Load {
        let LoadState {
            mut snapshot,
            unseen,
        } = *lock(&self.load);
        if unseen.seqs == 0 {
            return snapshot;
        }
        snapshot.waiting = snapshot.waiting.saturating_add(unseen.seqs);
        snapshot.queued_prefill_tokens = snapshot
            .queued_prefill_tokens
            .saturating_add(unseen.prompt_tokens);
        snapshot.outstanding_decode_tokens = snapshot
            .outstanding_decode_tokens
            .saturating_add(unseen.decode_tokens);
        // Their prefill, in full step-budget chunks, comes before a new arrival's.
        let chunk = self.limits.max_batched_tokens.max(1);
        let steps = unseen.prompt_tokens.div_ceil(u64::from(chunk));
        let chunk_time = self
            .cost()
            .prefill_time(chunk.min(unseen.prompt_tokens as u32), 0);
        snapshot.predicted_queue_delay = snapshot
            .predicted_queue_delay
            .saturating_add(chunk_time.saturating_mul(steps.min(u64::from(u32::MAX)) as u32));
        snapshot
    }

    /// The last failure message, if any.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    /// Sends a command to the worker; `false` when the worker is gone.
    pub fn send(&self, cmd: Command) -> bool {
        let mut added = Unseen::default();
        if let Command::Add(sub) = &cmd {
            added.add(&sub.request);
            lock(&self.load).unseen.add(&sub.request);
        }
        let sent = match lock(&self.commands).as_ref() {
            Some(tx) => tx.send(cmd).is_ok(),
            None => false,
        };
        if !sent {
            lock(&self.load).unseen.remove(added);
        }
        sent
    }

    /// Declares the running step hung if it started more than `timeout` ago
    /// (by `now_us` on the fleet clock): fails every sequence for re-routing.
    pub fn check_hang(&self, now_us: u64, timeout: Duration) -> bool {
        let started = self.step_started_us.load(Ordering::Acquire);
        if started == 0 || now_us.saturating_sub(started) < timeout.as_micros() as u64 {
            return false;
        }
        if self
            .step_started_us
            .compare_exchange(started, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        let reason = format!("device {} step hung for over {:?}", self.id, timeout);
        counter!(m::STEP_FAILURES, "device" => self.id.clone(), "kind" => "hang").increment(1);
        self.fail_all(&reason);
        true
    }

    /// Marks the device unhealthy and hands every in-flight sequence back for re-routing.
    fn fail_all(&self, reason: &str) {
        *lock(&self.last_error) = Some(reason.to_string());
        self.set_state(DeviceState::Unhealthy);
        let sinks: Vec<SeqSink> = lock(&self.inflight).drain().map(|(_, s)| s).collect();
        for sink in sinks {
            let _ = sink.send(SeqEvent::Failed(reason.to_string()));
        }
    }
}

/// Per-device worker settings.
#[derive(Debug, Clone, Copy)]
pub struct WorkerOptions {
    /// Sim only: fraction of the predicted step time to wait out.
    pub time_scale: f64,
    /// First back-off after a failure.
    pub unhealthy_backoff: Duration,
    /// The fleet clock's origin.
    pub epoch: Instant,
}

struct WorkerMetrics {
    step_time: Histogram,
    batch: Histogram,
    running: Gauge,
    waiting: Gauge,
    kv_usage: Gauge,
    preemptions: Counter,
    prefix_queries: Counter,
    prefix_hits: Counter,
    prompt_tokens: Counter,
    generation_tokens: Counter,
    queue_time: Histogram,
    failures: Counter,
}

impl WorkerMetrics {
    fn new(id: &str, backend: BackendKind) -> Self {
        let d = id.to_string();
        let b = backend.to_string();
        Self {
            step_time: histogram!(m::STEP_TIME, "device" => d.clone(), "backend" => b),
            batch: histogram!(m::BATCH_SIZE, "device" => d.clone()),
            running: gauge!(m::RUNNING, "device" => d.clone()),
            waiting: gauge!(m::WAITING, "device" => d.clone()),
            kv_usage: gauge!(m::KV_USAGE, "device" => d.clone()),
            preemptions: counter!(m::PREEMPTIONS, "device" => d.clone()),
            prefix_queries: counter!(m::PREFIX_QUERIES, "device" => d.clone()),
            prefix_hits: counter!(m::PREFIX_HITS, "device" => d.clone()),
            prompt_tokens: counter!(m::PROMPT_TOKENS, "device" => d.clone()),
            generation_tokens: counter!(m::GENERATION_TOKENS, "device" => d.clone()),
            queue_time: histogram!(m::QUEUE_TIME, "device" => d.clone()),
            failures: counter!(m::STEP_FAILURES, "device" => d, "kind" => "error"),
        }
    }
}

/// Starts the worker thread of a device whose backend is up.
pub fn spawn(
    shared: Arc<DeviceShared>,
    mut engine: Engine,
    backend: Box<dyn Backend>,
    opts: WorkerOptions,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let (tx, rx) = std::sync::mpsc::channel();
    *lock(&shared.commands) = Some(tx);
    engine.blocks_mut().record_cache_events();
    shared.set_state(DeviceState::Ready);
    let name = format!("device-{}", shared.id);
    std::thread::Builder::new().name(name).spawn(move || {
        let metrics = WorkerMetrics::new(&shared.id, shared.backend);
        let watch = shared.clone();
        let mut w = Worker {
            shared,
            seen: Unseen::default(),
            engine,
            backend,
            rx,
            opts,
            metrics,
            backoff: opts.unhealthy_backoff,
            cache_events: Vec::new(),
            prefix_seen: (0, 0),
            preempt_seen: 0,
        };
        // A backend that panics takes its device out of service, never the
        // server: its sequences go back to their tasks for re-routing.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.run()));
        if let Err(panic) = outcome {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            tracing::error!(device = %watch.id, %what, "device worker panicked; device stopped");
            lock(&watch.commands).take();
            watch.fail_all(&format!("device {} worker panicked: {what}", watch.id));
            watch.set_state(DeviceState::Stopped);
        }
    })
}

struct Worker {
    shared: Arc<DeviceShared>,
    /// Adds handled since the last published snapshot.
    seen: Unseen,
    engine: Engine,
    backend: Box<dyn Backend>,
    rx: Receiver<Command>,
    opts: WorkerOptions,
    metrics: WorkerMetrics,
    backoff: Duration,
    cache_events: Vec<CacheEvent>,
    prefix_seen: (u64, u64),
    preempt_seen: u64,
}

enum Flow {
    Continue,
    Stop,
}

impl Worker {
    fn now(&self) -> Duration {
        self.opts.epoch.elapsed()
    }

    fn run(&mut self) {
        loop {
            // Recover before waiting for commands: an idle unhealthy device
            // would otherwise never probe, and the router never picks it.
            if self.shared.state() == DeviceState::Unhealthy {
                if let Flow::Stop = self.recover() {
                    break;
                }
                continue;
            }
            if let Flow::Stop = self.drain_commands() {
                break;
            }
            self.step();
        }
        self.shared.set_state(DeviceState::Stopped);
        let reason = format!("device {} stopped", self.shared.id);
        self.engine.drain();
        self.shared.fail_all(&reason);
        self.shared.set_state(DeviceState::Stopped);
    }

    /// Handles queued commands; blocks for one when there is nothing to run.
    fn drain_commands(&mut self) -> Flow {
        if !self.engine.has_work() {
            // Idle: adds handled since the last snapshot (refused, or
            // aborted before a step) must not count as load while it waits.
            if self.seen != Unseen::default() {
                self.publish();
            }
            match self.rx.recv() {
                Ok(cmd) => {
                    if let Flow::Stop = self.handle(cmd) {
                        return Flow::Stop;
                    }
                }
                Err(_) => return Flow::Stop,
            }
        }
        loop {
            match self.rx.try_recv() {
                Ok(cmd) => {
                    if let Flow::Stop = self.handle(cmd) {
                        return Flow::Stop;
                    }
                }
                Err(TryRecvError::Empty) => return Flow::Continue,
                Err(TryRecvError::Disconnected) => return Flow::Stop,
            }
        }
    }

    fn handle(&mut self, cmd: Command) -> Flow {
        match cmd {
            Command::Add(sub) => {
                // Seen now, whatever becomes of it: the next snapshot shows it or never will.
                self.seen.add(&sub.request);
                let sinks = std::iter::once((sub.request.id, sub.sink)).chain(sub.forks);
                if self.shared.state() != DeviceState::Ready {
                    let reason = format!("device {} is {:?}", self.shared.id, self.shared.state());
                    for (_, sink) in sinks {
                        let _ = sink.send(SeqEvent::Failed(reason.clone()));
                    }
                    return Flow::Continue;
                }
                let sinks: Vec<(SeqId, SeqSink)> = sinks.collect();
                let now = self.now();
                let added = if sinks.len() == 1 {
                    self.engine.add(sub.request, now)
                } else {
                    let forks: Vec<SeqId> = sinks[1..].iter().map(|(id, _)| *id).collect();
                    self.engine.add_parallel(sub.request, &forks, now)
                };
                match added {
                    Ok(()) => lock(&self.shared.inflight).extend(sinks),
                    Err(e) => {
                        for (_, sink) in sinks {
                            let _ = sink.send(SeqEvent::Rejected(e.clone()));
                        }
                    }
                }
            }
            Command::Abort(id) => {
                let now = self.now();
                if let AbortOutcome::Finished(ev) = self.engine.abort(id, now) {
                    self.dispatch(vec![ev]);
                }
            }
            Command::SetCost(cost) => self.engine.set_cost_model(*cost),
            Command::Shutdown => return Flow::Stop,
        }
        Flow::Continue
    }

    fn step(&mut self) {
        let now = self.now();
        let generation = self.shared.generation.load(Ordering::Acquire);
        let wall = Instant::now();
        let result = {
            let Some(plan) = self.engine.schedule(now) else {
                // Nothing to run (say, every add was aborted or refused):
                // publish anyway, or those adds would count as load forever.
                if self.seen != Unseen::default() {
                    self.publish();
                }
                return;
            };
            self.metrics.batch.record(plan.seqs.len() as f64);
            self.shared
                .step_started_us
                .store(now.as_micros().max(1) as u64, Ordering::Release);
            self.backend.execute(&plan)
        };
        if let Ok(out) = &result {
            if self.shared.backend == BackendKind::Sim && self.opts.time_scale > 0.0 {
                let target = out.elapsed.mul_f64(self.opts.time_scale);
                let spent = wall.elapsed();
                if target > spent {
                    std::thread::sleep(target - spent);
                }
            }
        }
        let _ = self.shared.step_started_us.compare_exchange(
            now.as_micros().max(1) as u64,
            0,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if self.shared.generation.load(Ordering::Acquire) != generation {
            // The watchdog declared this step hung and re-routed its sequences.
            self.engine.drain();
            self.publish();
            return;
        }
        self.metrics.step_time.record(wall.elapsed().as_secs_f64());
        let outcome = result.map_err(|e| e.to_string()).and_then(|out| {
            self.engine
                .complete(&out, self.now())
                .map_err(|e| e.to_string())
        });
        match outcome {
            Ok(events) => {
                self.backoff = self.opts.unhealthy_backoff;
                self.dispatch(events);
            }
            Err(reason) => self.fail(&reason),
        }
        self.publish();
    }

    fn fail(&mut self, reason: &str) {
        self.metrics.failures.increment(1);
        self.engine.fail_step();
        self.engine.drain();
        let reason = format!("device {} step failed: {reason}", self.shared.id);
        self.shared.fail_all(&reason);
        self.publish();
    }

    /// Waits out the back-off (failing new work meanwhile), then probes.
    fn recover(&mut self) -> Flow {
        let deadline = Instant::now() + self.backoff;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.rx.recv_timeout(left) {
                Ok(cmd) => {
                    if let Flow::Stop = self.handle(cmd) {
                        return Flow::Stop;
                    }
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return Flow::Stop,
            }
        }
        match self.backend.execute(&StepPlan::default()) {
            Ok(_) => {
                self.shared.set_state(DeviceState::Ready);
            }
            Err(e) => {
                *lock(&self.shared.last_error) = Some(format!("probe failed: {e}"));
                self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
            }
        }
        Flow::Continue
    }

    fn dispatch(&mut self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let mut gone = Vec::new();
        {
            let mut inflight = lock(&self.shared.inflight);
            for ev in events {
                match ev {
                    Event::Token {
                        seq,
                        token,
                        logprobs,
                        ..
                    } => {
                        self.metrics.generation_tokens.increment(1);
                        if let Some(sink) = inflight.get(&seq) {
                            if sink.send(SeqEvent::Token(token, logprobs)).is_err() {
                                inflight.remove(&seq);
                                gone.push(seq);
                            }
                        }
                    }
                    Event::Finished { seq, reason, stats } => {
                        self.metrics
                            .prompt_tokens
                            .increment(u64::from(stats.prompt_tokens));
                        if let Some(first) = stats.first_scheduled {
                            self.metrics
                                .queue_time
                                .record(first.saturating_sub(stats.arrival).as_secs_f64());
                        }
                        if let Some(sink) = inflight.remove(&seq) {
                            let _ = sink.send(SeqEvent::Finished(reason, stats));
                        }
                        self.backend.release(seq);
                    }
                    Event::Preempted { .. } => {}
                }
            }
        }
        let now = self.now();
        for seq in gone {
            if let AbortOutcome::Finished(_) = self.engine.abort(seq, now) {
                self.backend.release(seq);
            }
        }
    }

    /// Publishes load, KV usage, prefix-cache contents and counters.
    fn publish(&mut self) {
        let load = self.engine.load();
        {
            let mut state = lock(&self.shared.load);
            state.snapshot = load;
            state.unseen.remove(std::mem::take(&mut self.seen));
        }
        self.metrics.running.set(f64::from(load.running));
        self.metrics.waiting.set(f64::from(load.waiting));
        self.metrics.kv_usage.set(self.engine.blocks().usage());
        self.engine
            .blocks_mut()
            .drain_cache_events(&mut self.cache_events);
        let follow = self.shared.kv_events.receiver_count() > 0 && !self.cache_events.is_empty();
        let mut diff = crate::tier::node::KvDiff {
            device: self.shared.id.clone(),
            snapshot: false,
            stored: Vec::new(),
            removed: Vec::new(),
        };
        for ev in self.cache_events.drain(..) {
            match ev {
                CacheEvent::Stored(h) => {
                    self.shared.cached.insert(h);
                    diff.stored.push(h);
                }
                CacheEvent::Evicted(h) => {
                    self.shared.cached.remove(&h);
                    diff.removed.push(h);
                }
            }
        }
        if follow {
            // No reader left is not an error: the diff is simply dropped.
            let _ = self.shared.kv_events.send(diff);
        }
        let stats = self.engine.prefix_stats();
        self.metrics
            .prefix_queries
            .increment(stats.queried_tokens - self.prefix_seen.0);
        self.metrics
            .prefix_hits
            .increment(stats.hit_tokens - self.prefix_seen.1);
        self.prefix_seen = (stats.queried_tokens, stats.hit_tokens);
        let p = self.engine.preemptions();
        self.metrics.preemptions.increment(p - self.preempt_seen);
        self.preempt_seen = p;
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use switchyard_backends::Catalog;

    use super::*;

    fn shared() -> DeviceShared {
        let catalog = Catalog::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles"));
        let cost = CostModel::new(
            catalog.device("a100-80g").expect("profile"),
            catalog.model("llama-3.1-8b").expect("model"),
        );
        let who = DeviceIdentity {
            index: DeviceId(0),
            id: "a100-0".into(),
            backend: BackendKind::Sim,
            profile: "a100-80g".into(),
        };
        let limits = Limits {
            max_seq_tokens: 32_768,
            max_num_seqs: 256,
            max_batched_tokens: 2048,
            block_size: 16,
            step_time_budget: None,
        };
        DeviceShared::new(who, cost, limits, None, None)
    }

    fn add(id: u64, prompt: usize) -> Command {
        let (sink, _) = tokio::sync::mpsc::unbounded_channel();
        Command::Add(Submission {
            request: Request::new(SeqId(id), vec![1; prompt], 50),
            sink,
            forks: Vec::new(),
        })
    }

    #[test]
    fn requests_sent_since_the_snapshot_count_in_the_load() {
        let d = shared();
        // No worker: nothing is sent, nothing is counted.
        assert!(!d.send(add(1, 1000)));
        assert_eq!(d.load(), Load::default());
        let (tx, rx) = std::sync::mpsc::channel();
        *lock(&d.commands) = Some(tx);
        assert!(d.send(add(2, 1000)));
        assert!(d.send(add(3, 3000)));
        let l = d.load();
        assert_eq!(l.waiting, 2);
        assert_eq!(l.queued_prefill_tokens, 4000);
        assert_eq!(l.outstanding_decode_tokens, 100);
        // Two full chunks of prefill ahead of the next arrival.
        assert!(l.predicted_queue_delay > Duration::ZERO);
        // The worker's next snapshot shows them; they stop counting twice.
        let mut seen = Unseen::default();
        for cmd in rx.try_iter() {
            if let Command::Add(sub) = cmd {
                seen.add(&sub.request);
            }
        }
        {
            let mut state = lock(&d.load);
            state.snapshot.waiting = 2;
            state.unseen.remove(seen);
        }
        assert_eq!(d.load().waiting, 2);
        assert_eq!(d.load().queued_prefill_tokens, 0);
    }
}
