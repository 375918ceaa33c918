//! A remote server and its routable units. The load the router sees for a
//! unit is the tier's own accounting of what it has in flight there, plus
//! what the server's metrics report beyond that (other clients' requests);
//! for a Switchyard node device, the node's own load snapshot moved by how
//! the tier's own requests there changed since it was taken (sent, started,
//! ended), so completions count before the next snapshot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use switchyard_backends::CostModel;
use switchyard_scheduler::config::EngineKind;
use switchyard_scheduler::engine::{estimate_queue_delay, Load};
use switchyard_scheduler::router::DeviceId;

use super::breaker::{Breaker, BreakerState};
use super::scrape::ScrapedLoad;
use crate::worker::{lock, Limits};

/// One remote server (one address of an endpoint).
#[derive(Debug)]
pub struct RemoteServer {
    /// The `[[endpoints]]` id it came from.
    pub endpoint: String,
    /// Its name in metrics and `/admin/devices`: the endpoint id, or `id/address` when discovered.
    pub name: String,
    /// What serves it.
    pub engine: EngineKind,
    /// Base URL, `http://host:port`.
    pub base: String,
    /// Bearer key.
    pub api_key: Option<String>,
    /// The model name it expects in requests.
    pub model: String,
    /// vLLM KV-event publisher address, when it has one.
    pub kv_events: Option<String>,
    breaker: Mutex<Breaker>,
    last_error: Mutex<Option<String>>,
    scraped: Mutex<Option<(ScrapedLoad, u32)>>,
    reachable: AtomicBool,
    removed: AtomicBool,
}

impl RemoteServer {
    /// A server not yet checked (reachable until a check says otherwise).
    pub fn new(
        endpoint: &str,
        name: String,
        engine: EngineKind,
        base: String,
        api_key: Option<String>,
        model: String,
        breaker: Breaker,
    ) -> Self {
        Self {
            endpoint: endpoint.to_string(),
            name,
            engine,
            base,
            api_key,
            model,
            kv_events: None,
            breaker: Mutex::new(breaker),
            last_error: Mutex::new(None),
            scraped: Mutex::new(None),
            reachable: AtomicBool::new(false),
            removed: AtomicBool::new(false),
        }
    }

    /// Whether new requests may go to it now.
    pub fn accepts(&self, now: Instant) -> bool {
        !self.removed() && self.reachable.load(Ordering::Acquire) && lock(&self.breaker).allows(now)
    }

    /// Breaker state at `now`.
    pub fn breaker_state(&self, now: Instant) -> BreakerState {
        lock(&self.breaker).state(now)
    }

    /// Whether it is backing off a 429/503.
    pub fn backing_off(&self, now: Instant) -> bool {
        lock(&self.breaker).backing_off(now)
    }

    /// A request goes out now.
    pub fn on_send(&self, now: Instant) {
        lock(&self.breaker).on_send(now);
    }

    /// A request was dropped before it settled (its client left).
    pub fn on_abandon(&self) {
        lock(&self.breaker).on_abandon();
    }

    /// A request or check succeeded.
    pub fn on_success(&self) {
        self.reachable.store(true, Ordering::Release);
        lock(&self.breaker).on_success();
    }

    /// A request or check failed.
    pub fn on_failure(&self, now: Instant, error: String) {
        lock(&self.breaker).on_failure(now);
        *lock(&self.last_error) = Some(error);
    }

    /// It answered 429/503.
    pub fn on_overload(&self, now: Instant, wait: Duration, error: String) {
        lock(&self.breaker).on_overload(now, wait);
        *lock(&self.last_error) = Some(error);
    }

    /// A health check reached it.
    pub fn set_reachable(&self) {
        self.reachable.store(true, Ordering::Release);
    }

    /// Whether the last health check reached it.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Acquire)
    }

    /// A health check could not reach it: no new work until one does.
    pub fn set_unreachable(&self, now: Instant, error: String) {
        self.reachable.store(false, Ordering::Release);
        self.on_failure(now, error);
    }

    /// The last error seen.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    /// Records a metrics scrape and how many tier requests were in flight when it was taken.
    pub fn set_scraped(&self, load: ScrapedLoad, tier_inflight: u32) {
        *lock(&self.scraped) = Some((load, tier_inflight));
    }

    /// The last scrape.
    pub fn scraped(&self) -> Option<ScrapedLoad> {
        lock(&self.scraped).map(|(l, _)| l)
    }

    fn scraped_with_inflight(&self) -> Option<(ScrapedLoad, u32)> {
        *lock(&self.scraped)
    }

    /// Marks it gone from the config: no new work; in-flight requests finish.
    pub fn remove(&self) {
        self.removed.store(true, Ordering::Release);
    }

    /// Whether it was removed.
    pub fn removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }
}

/// What the tier has in flight on one target, counted exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Inflight {
    /// Requests sent and not finished.
    pub seqs: u32,
    /// Of those, requests with no token back yet.
    pub prefilling: u32,
    /// Prompt tokens of requests with no token back yet.
    pub prefill_tokens: u64,
    /// Tokens still to generate, upper bound from `max_tokens`.
    pub decode_tokens: u64,
    /// Context held by requests past their first token.
    pub context_tokens: u64,
}

/// One routable unit: a whole server, or one device of a Switchyard node.
#[derive(Debug)]
pub struct RemoteTarget {
    /// Router id (never reused).
    pub index: DeviceId,
    /// Name in metrics and admin views.
    pub id: String,
    /// The server it lives on.
    pub server: Arc<RemoteServer>,
    /// The node's device id, for Switchyard nodes.
    pub node_device: Option<String>,
    /// Profile name.
    pub profile: RwLock<String>,
    cost: RwLock<Arc<CostModel>>,
    limits: RwLock<Limits>,
    inflight: Mutex<Inflight>,
    node: Mutex<NodeLoad>,
    node_healthy: AtomicBool,
}

/// A node device's published load, and the tier's own accounting when it
/// arrived: what the tier has sent or seen finish since moves the snapshot
/// by the difference, so a node whose requests ended since its last
/// snapshot is not priced as still holding them (and a node whose snapshot
/// is fresher than the others' is not the only one that looks light).
#[derive(Debug, Clone, Copy, Default)]
struct NodeLoad {
    snapshot: Load,
    ours_then: Inflight,
}

impl NodeLoad {
    /// The snapshot moved by the change in the tier's own requests since:
    /// those still waiting for a first token count as waiting, the rest as
    /// running. `None` when nothing changed (the snapshot stands as is).
    fn moved(&self, ours_now: Inflight) -> Option<Load> {
        let then = self.ours_then;
        if ours_now == then {
            return None;
        }
        let add32 = |v: u32, now: u32, then: u32| {
            (i64::from(v) + i64::from(now) - i64::from(then)).clamp(0, i64::from(u32::MAX)) as u32
        };
        let add64 = |v: u64, now: u64, then: u64| {
            let v = i128::from(v) + i128::from(now) - i128::from(then);
            v.clamp(0, i128::from(u64::MAX)) as u64
        };
        let s = self.snapshot;
        let started_now = ours_now.seqs.saturating_sub(ours_now.prefilling);
        let started_then = then.seqs.saturating_sub(then.prefilling);
        let mut l = Load {
            waiting: add32(s.waiting, ours_now.prefilling, then.prefilling),
            running: add32(s.running, started_now, started_then),
            queued_prefill_tokens: add64(
                s.queued_prefill_tokens,
                ours_now.prefill_tokens,
                then.prefill_tokens,
            ),
            outstanding_decode_tokens: add64(
                s.outstanding_decode_tokens,
                ours_now.decode_tokens,
                then.decode_tokens,
            ),
            running_context_tokens: add64(
                s.running_context_tokens,
                ours_now.context_tokens,
                then.context_tokens,
            ),
            ..s
        };
        // The node's own queue prediction still bounds the delay while
        // none of ours has left its queue; once one has, it is stale.
        if ours_now.prefilling < then.prefilling || ours_now.seqs < then.seqs {
            l.predicted_queue_delay = Duration::ZERO;
        }
        Some(l)
    }
}

impl RemoteTarget {
    /// A target priced by `cost` with `limits`.
    pub fn new(
        index: DeviceId,
        id: String,
        server: Arc<RemoteServer>,
        node_device: Option<String>,
        profile: String,
        cost: CostModel,
        limits: Limits,
    ) -> Self {
        Self {
            index,
            id,
            server,
            node_device,
            profile: RwLock::new(profile),
            cost: RwLock::new(Arc::new(cost)),
            limits: RwLock::new(limits),
            inflight: Mutex::new(Inflight::default()),
            node: Mutex::new(NodeLoad::default()),
            node_healthy: AtomicBool::new(true),
        }
    }

    /// Its cost model.
    pub fn cost(&self) -> Arc<CostModel> {
        self.cost.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the cost model (profile reload, or a node's new profile).
    pub fn set_cost(&self, profile: String, cost: CostModel) {
        *self.cost.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(cost);
        *self.profile.write().unwrap_or_else(|p| p.into_inner()) = profile;
    }

    /// Its profile name.
    pub fn profile_name(&self) -> String {
        self.profile
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Its limits.
    pub fn limits(&self) -> Limits {
        *self.limits.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the limits (a node reported new ones).
    pub fn set_limits(&self, limits: Limits) {
        *self.limits.write().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    /// Whether new requests may go to it now.
    pub fn accepts(&self, now: Instant) -> bool {
        self.node_healthy.load(Ordering::Acquire) && self.server.accepts(now)
    }

    /// What the tier has in flight here.
    pub fn inflight(&self) -> Inflight {
        *lock(&self.inflight)
    }

    /// A node's published load for this device.
    pub fn set_node_load(&self, load: Load, healthy: bool) {
        self.node_healthy.store(healthy, Ordering::Release);
        let ours_then = self.inflight();
        *lock(&self.node) = NodeLoad {
            snapshot: load,
            ours_then,
        };
    }

    /// The load the router sees.
    pub fn load(&self) -> Load {
        let limits = self.limits();
        let cost = self.cost();
        let mut load = if self.node_device.is_some() {
            let n = *lock(&self.node);
            match n.moved(self.inflight()) {
                Some(l) => l,
                None => return n.snapshot,
            }
        } else {
            self.counted_load(limits.max_num_seqs)
        };
        load.predicted_queue_delay = estimate_queue_delay(
            &load,
            limits.max_num_seqs,
            limits.max_batched_tokens,
            cost.as_ref(),
        )
        .max(load.predicted_queue_delay);
        load
    }

    /// Tier accounting plus other clients' requests the metrics show.
    fn counted_load(&self, max_num_seqs: u32) -> Load {
        let f = self.inflight();
        let mut seqs = f.seqs;
        let mut decode = f.decode_tokens;
        let mut context = f.context_tokens;
        let mut kv = None;
        if let Some((scraped, ours_then)) = self.server.scraped_with_inflight() {
            let theirs = (scraped.running + scraped.waiting).saturating_sub(ours_then);
            if theirs > 0 {
                // Requests we do not see inside are priced like ours on average.
                let per_seq_decode = if f.seqs > 0 {
                    f.decode_tokens / u64::from(f.seqs)
                } else {
                    256
                };
                let per_seq_context = if f.seqs > f.prefilling {
                    f.context_tokens / u64::from(f.seqs - f.prefilling)
                } else {
                    1024
                };
                seqs = seqs.saturating_add(theirs);
                decode += per_seq_decode * u64::from(theirs);
                context += per_seq_context * u64::from(theirs);
            }
            kv = scraped.kv_usage;
        }
        let running = seqs.min(max_num_seqs);
        let (total_blocks, free_blocks) = match kv {
            Some(u) => (10_000, (10_000.0 * (1.0 - u)) as u32),
            None => (0, 0),
        };
        Load {
            waiting: seqs - running,
            running,
            queued_prefill_tokens: f.prefill_tokens,
            outstanding_decode_tokens: decode,
            running_context_tokens: context,
            free_blocks,
            total_blocks,
            predicted_queue_delay: Duration::ZERO,
        }
    }

    /// Whether its prefix index follows the server's own cache events (a
    /// Switchyard node, or vLLM with a KV-event publisher) rather than the
    /// tier's routing history.
    pub fn follows_cache_events(&self) -> bool {
        self.node_device.is_some() || self.server.kv_events.is_some()
    }

    /// Counts a request sent here; the guard uncounts it as tokens come back and when it ends.
    pub fn begin(self: &Arc<Self>, prompt_tokens: u32, max_tokens: u32) -> InflightGuard {
        {
            let mut f = lock(&self.inflight);
            f.seqs += 1;
            f.prefilling += 1;
            f.prefill_tokens += u64::from(prompt_tokens);
            f.decode_tokens += u64::from(max_tokens);
        }
        InflightGuard {
            target: self.clone(),
            prompt: prompt_tokens,
            remaining: max_tokens,
            generated: 0,
            started: false,
        }
    }
}

/// One request's share of a target's in-flight count.
#[derive(Debug)]
pub struct InflightGuard {
    target: Arc<RemoteTarget>,
    prompt: u32,
    remaining: u32,
    generated: u32,
    started: bool,
}

impl InflightGuard {
    /// `n` tokens came back.
    pub fn tokens(&mut self, n: u32) {
        if n == 0 {
            return;
        }
        let used = n.min(self.remaining);
        let mut f = lock(&self.target.inflight);
        if !self.started {
            self.started = true;
            f.prefilling = f.prefilling.saturating_sub(1);
            f.prefill_tokens = f.prefill_tokens.saturating_sub(u64::from(self.prompt));
            f.context_tokens += u64::from(self.prompt);
        }
        f.decode_tokens = f.decode_tokens.saturating_sub(u64::from(used));
        f.context_tokens += u64::from(n);
        self.remaining -= used;
        self.generated = self.generated.saturating_add(n);
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let mut f = lock(&self.target.inflight);
        f.seqs = f.seqs.saturating_sub(1);
        f.decode_tokens = f.decode_tokens.saturating_sub(u64::from(self.remaining));
        if self.started {
            f.context_tokens = f
                .context_tokens
                .saturating_sub(u64::from(self.prompt) + u64::from(self.generated));
        } else {
            f.prefilling = f.prefilling.saturating_sub(1);
            f.prefill_tokens = f.prefill_tokens.saturating_sub(u64::from(self.prompt));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_backends::fixtures;

    fn target(engine: EngineKind) -> Arc<RemoteTarget> {
        target_on(engine, None)
    }

    fn target_on(engine: EngineKind, node_device: Option<&str>) -> Arc<RemoteTarget> {
        let server = Arc::new(RemoteServer::new(
            "e",
            "e".into(),
            engine,
            "http://127.0.0.1:1".into(),
            None,
            "m".into(),
            Breaker::new(3, Duration::from_secs(1)),
        ));
        let cost = CostModel::new(
            fixtures::device(990.0, 3350.0, [0.6, 0.8, 30.0, 2.0]),
            fixtures::dense_8b(8192),
        );
        let limits = Limits {
            max_seq_tokens: 8192,
            max_num_seqs: 4,
            max_batched_tokens: 2048,
            block_size: 16,
            step_time_budget: None,
        };
        Arc::new(RemoteTarget::new(
            DeviceId(7),
            "e".into(),
            server,
            node_device.map(str::to_string),
            "h100".into(),
            cost,
            limits,
        ))
    }

    #[test]
    fn a_node_snapshot_moves_with_the_tiers_own_requests() {
        let t = target_on(EngineKind::Switchyard, Some("gpu-0"));
        t.set_node_load(Load::default(), true);
        let g = t.begin(100, 10);
        assert_eq!(t.load().waiting, 1, "sent since the snapshot");
        drop(g);
        assert_eq!(t.load().waiting, 0, "ended before any snapshot saw it");

        // A snapshot showing ours running, and another client's request waiting.
        let mut g = t.begin(100, 10);
        g.tokens(1);
        let seen = Load {
            running: 1,
            waiting: 1,
            queued_prefill_tokens: 40,
            outstanding_decode_tokens: 9 + 50,
            running_context_tokens: 101,
            predicted_queue_delay: Duration::from_millis(3),
            ..Load::default()
        };
        t.set_node_load(seen, true);
        assert_eq!(t.load(), seen, "nothing moved since the snapshot");
        g.tokens(2);
        let l = t.load();
        assert_eq!(
            (
                l.running,
                l.outstanding_decode_tokens,
                l.running_context_tokens
            ),
            (1, 57, 103)
        );
        drop(g);
        // Ours ended: the node no longer holds it, before any new snapshot.
        // The other client's request still waits.
        let l = t.load();
        assert_eq!(
            (
                l.running,
                l.waiting,
                l.queued_prefill_tokens,
                l.outstanding_decode_tokens,
                l.running_context_tokens
            ),
            (0, 1, 40, 50, 0)
        );
    }

    #[test]
    fn accounting_follows_a_request_and_returns_to_zero() {
        let t = target(EngineKind::Vllm);
        let mut g = t.begin(100, 10);
        let l = t.load();
        assert_eq!(
            (
                l.running,
                l.queued_prefill_tokens,
                l.outstanding_decode_tokens
            ),
            (1, 100, 10)
        );
        assert!(
            l.predicted_queue_delay > Duration::ZERO,
            "a prefill backlog delays the next arrival"
        );
        g.tokens(1);
        let l = t.load();
        assert_eq!(
            (
                l.queued_prefill_tokens,
                l.outstanding_decode_tokens,
                l.running_context_tokens
            ),
            (0, 9, 101)
        );
        g.tokens(3);
        drop(g);
        assert_eq!(t.inflight(), Inflight::default());
    }

    #[test]
    fn a_burst_beyond_the_batch_waits() {
        let t = target(EngineKind::Vllm);
        let guards: Vec<_> = (0..6).map(|_| t.begin(10, 100)).collect();
        let l = t.load();
        assert_eq!((l.running, l.waiting), (4, 2));
        drop(guards);
        assert_eq!(t.load().running, 0);
    }

    #[test]
    fn other_clients_requests_count_from_the_scrape() {
        let t = target(EngineKind::Vllm);
        let _g = t.begin(10, 100);
        t.server.set_scraped(
            ScrapedLoad {
                running: 3,
                waiting: 0,
                kv_usage: Some(0.5),
            },
            1,
        );
        let l = t.load();
        assert_eq!(l.running, 3, "ours plus two others");
        assert_eq!(l.outstanding_decode_tokens, 300);
        assert_eq!(l.free_blocks * 2, l.total_blocks);
    }
}
