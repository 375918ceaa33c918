//! The fleet tier: remote OpenAI-compatible servers (Switchyard nodes,
//! vLLM, SGLang, TGI, llama.cpp) routed to with the same router and cost
//! models as local devices. Each remote server is watched (health, load
//! metrics, KV-cache events) and guarded by a circuit breaker; each of its
//! routable units (the server, or each device of a Switchyard node) is a
//! [`RemoteTarget`] the router sees as one more `DeviceView`.
//!
//! Tasks: one poller per server (health + load every
//! `tier.scrape_interval_ms`), one KV-event follower per Switchyard node,
//! one resolver per `discovery = "dns"` endpoint. They hold the tier
//! weakly and stop when their server is removed.

pub mod breaker;
pub mod client;
pub mod kv_index;
pub mod node;
pub mod proxy;
pub mod scrape;
pub mod target;
pub mod vllm_events;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use switchyard_backends::{Catalog, CostModel, ModelSpec};
use switchyard_scheduler::config::{Config, Discovery, EndpointConfig, EngineKind, TierSection};
use switchyard_scheduler::router::DeviceId;
use tokio::task::AbortHandle;

pub use target::{InflightGuard, RemoteServer, RemoteTarget};

use breaker::Breaker;
use client::{HttpClient, SseDecoder};
use kv_index::{ApproxConfig, EndpointKey, KvEvent, KvIndex};
use node::{KvDiff, NodeInventory};
use scrape::{parse_load, GaugeNames};
use vllm_events::{Continuity, SubscriberConfig, VllmBatch};

use crate::metrics as m;
use crate::worker::{lock, Limits};
use crate::ServerError;

/// Router ids of remote targets start here, clear of local device indices.
const FIRST_REMOTE_INDEX: u32 = 1 << 16;

/// Every remote server and target, and the tasks that watch them.
pub struct Tier {
    model: ModelSpec,
    block_size: u32,
    settings: RwLock<TierSection>,
    client: HttpClient,
    endpoints: Mutex<Vec<EndpointEntry>>,
    targets: RwLock<Arc<Vec<Arc<RemoteTarget>>>>,
    next_index: AtomicU32,
    runtime: tokio::runtime::Handle,
    /// Which target caches which prefix blocks, from events or routing history.
    kv: Mutex<KvIndex>,
    /// Zero of the KV index's clock (the index itself never reads one).
    epoch: Instant,
}

struct EndpointEntry {
    config: EndpointConfig,
    servers: Vec<ServerEntry>,
    resolver: Option<AbortHandle>,
}

struct ServerEntry {
    address: String,
    server: Arc<RemoteServer>,
    targets: Vec<Arc<RemoteTarget>>,
    tasks: Vec<AbortHandle>,
}

impl Drop for ServerEntry {
    fn drop(&mut self) {
        self.server.remove();
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for EndpointEntry {
    fn drop(&mut self) {
        if let Some(r) = &self.resolver {
            r.abort();
        }
    }
}

impl Tier {
    /// Starts watching every `[[endpoints]]` entry of `config` (needs a tokio runtime).
    pub fn start(config: &Config, model: &ModelSpec) -> Result<Arc<Tier>, ServerError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ServerError::Io("remote endpoints need the server's async runtime".into())
        })?;
        let tier = Arc::new(Tier {
            model: model.clone(),
            block_size: config.engine.block_size,
            settings: RwLock::new(config.tier.clone()),
            client: HttpClient::new(config.tier.connect_timeout),
            endpoints: Mutex::new(Vec::new()),
            targets: RwLock::new(Arc::new(Vec::new())),
            next_index: AtomicU32::new(FIRST_REMOTE_INDEX),
            runtime,
            kv: Mutex::new(KvIndex::new(ApproxConfig {
                capacity_blocks: config.tier.approx_prefix_blocks,
                ttl: config.tier.approx_prefix_ttl,
            })),
            epoch: Instant::now(),
        });
        let catalog = Catalog::new(&config.profiles_dir);
        for e in &config.endpoints {
            tier.add_endpoint(e, &catalog)?;
        }
        Ok(tier)
    }

    /// Whether `id` is a remote target's router id.
    pub fn is_remote(id: DeviceId) -> bool {
        id.0 >= FIRST_REMOTE_INDEX
    }

    /// Every live target (removed ones excluded), in config order.
    pub fn targets(&self) -> Arc<Vec<Arc<RemoteTarget>>> {
        self.targets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Servers with no routable target yet: Switchyard nodes whose device
    /// inventory has not arrived (unreachable, or serving another model), so
    /// `/admin/devices` can say why an endpoint is missing from the fleet.
    pub fn servers_without_targets(&self) -> Vec<Arc<RemoteServer>> {
        lock(&self.endpoints)
            .iter()
            .flat_map(|e| e.servers.iter())
            .filter(|s| s.targets.is_empty())
            .map(|s| s.server.clone())
            .collect()
    }

    /// The target with router id `id`, if it is still configured.
    pub fn target(&self, id: DeviceId) -> Option<Arc<RemoteTarget>> {
        self.targets().iter().find(|t| t.index == id).cloned()
    }

    /// The current `[tier]` settings.
    pub fn settings(&self) -> TierSection {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The HTTP client shared by every remote call.
    pub fn client(&self) -> &HttpClient {
        &self.client
    }

    /// Tokens per KV block of the tier's prefix hashes.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Leading blocks of `hashes` each target is believed to cache, in `targets` order.
    pub fn cached_prefix_blocks(&self, targets: &[Arc<RemoteTarget>], hashes: &[u64]) -> Vec<u32> {
        if hashes.is_empty() {
            return vec![0; targets.len()];
        }
        let kv = lock(&self.kv);
        targets
            .iter()
            .map(|t| kv.cached_prefix_blocks(key(t), hashes))
            .collect()
    }

    /// Records a prompt's prefix routed to `target`; only targets without
    /// cache events learn from this, as cache-aware routers do.
    pub fn note_routed(&self, target: &RemoteTarget, hashes: &[u64]) {
        if target.follows_cache_events() || hashes.is_empty() {
            return;
        }
        lock(&self.kv).record_routed(key(target), hashes, self.epoch.elapsed());
    }

    /// Prefix blocks indexed for `target` (for admin views).
    pub fn indexed_blocks(&self, target: &RemoteTarget) -> usize {
        let mut kv = lock(&self.kv);
        kv.expire(self.epoch.elapsed());
        kv.len(key(target))
    }

    /// Whether any remote target takes work now.
    pub fn ready(&self) -> bool {
        let now = Instant::now();
        self.targets().iter().any(|t| t.accepts(now))
    }

    /// Applies a reloaded config: endpoints added, removed or changed;
    /// requests in flight on removed ones finish there.
    pub fn reload(self: &Arc<Self>, config: &Config) -> Result<(), ServerError> {
        let catalog = Catalog::new(&config.profiles_dir);
        // Check every profile before changing anything, so a bad reload changes nothing.
        for e in &config.endpoints {
            if let Some(p) = &e.profile {
                catalog.device(p)?;
            }
        }
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = config.tier.clone();
        let wanted: Vec<&EndpointConfig> = config.endpoints.iter().collect();
        let mut removed = Vec::new();
        {
            let mut eps = lock(&self.endpoints);
            let mut i = 0;
            while i < eps.len() {
                let keep = wanted.iter().any(|w| {
                    let same = **w == eps[i].config;
                    let reprice = w.id == eps[i].config.id && same_server(w, &eps[i].config);
                    same || reprice
                });
                if keep {
                    i += 1;
                } else {
                    removed.push(eps.remove(i));
                }
            }
            // Profile changes re-price targets in place.
            for e in eps.iter_mut() {
                if let Some(w) = wanted.iter().find(|w| w.id == e.config.id) {
                    if w.profile != e.config.profile {
                        if let Some(p) = &w.profile {
                            let cost = CostModel::new(catalog.device(p)?, self.model.clone());
                            for s in &e.servers {
                                for t in &s.targets {
                                    t.set_cost(p.clone(), cost.clone());
                                }
                            }
                        }
                    }
                    e.config = (*w).clone();
                }
            }
        }
        for e in &removed {
            tracing::info!(endpoint = %e.config.id, "endpoint removed");
        }
        drop(removed);
        let known: BTreeSet<String> = lock(&self.endpoints)
            .iter()
            .map(|e| e.config.id.clone())
            .collect();
        for w in wanted {
            if !known.contains(&w.id) {
                self.add_endpoint(w, &catalog)?;
            }
        }
        self.rebuild_targets();
        Ok(())
    }

    fn add_endpoint(
        self: &Arc<Self>,
        e: &EndpointConfig,
        catalog: &Catalog,
    ) -> Result<(), ServerError> {
        if let Some(p) = &e.profile {
            // Refuse an unknown profile at startup rather than at first request.
            catalog.device(p)?;
        }
        let mut entry = EndpointEntry {
            config: e.clone(),
            servers: Vec::new(),
            resolver: None,
        };
        match e.discovery {
            Discovery::Static => {
                let (host, port) = e
                    .authority()
                    .map_err(|m| ServerError::Reload(format!("endpoints.{}: {m}", e.id)))?;
                let address = format_host_port(&host, port);
                entry
                    .servers
                    .push(self.new_server(e, e.id.clone(), address, catalog)?);
            }
            // Servers come from the resolver, started below.
            Discovery::Dns => {}
        }
        tracing::info!(endpoint = %e.id, url = %e.url, engine = %e.engine, "endpoint added");
        let mut endpoints = lock(&self.endpoints);
        if e.discovery == Discovery::Dns {
            // Spawned under the lock, so its first look-up finds the entry.
            let resolver = self.runtime.spawn(resolve_loop(
                Arc::downgrade(self),
                e.id.clone(),
                catalog.clone(),
            ));
            entry.resolver = Some(resolver.abort_handle());
        }
        endpoints.push(entry);
        drop(endpoints);
        self.rebuild_targets();
        Ok(())
    }

    fn new_server(
        self: &Arc<Self>,
        e: &EndpointConfig,
        name: String,
        address: String,
        catalog: &Catalog,
    ) -> Result<ServerEntry, ServerError> {
        let settings = self.settings();
        let mut server = RemoteServer::new(
            &e.id,
            name.clone(),
            e.engine,
            format!("http://{address}"),
            e.api_key.clone(),
            e.model.clone().unwrap_or_default(),
            Breaker::new(settings.breaker_failures, settings.breaker_open),
        );
        server.kv_events = e.kv_events.clone();
        let server = Arc::new(server);
        let mut targets = Vec::new();
        if e.engine != EngineKind::Switchyard {
            let profile = e.profile.clone().unwrap_or_default();
            let cost = CostModel::new(catalog.device(&profile)?, self.model.clone());
            let limits = Limits {
                max_seq_tokens: self.model.max_context,
                max_num_seqs: e.max_num_seqs.unwrap_or(settings.max_num_seqs),
                max_batched_tokens: e.max_batched_tokens.unwrap_or(settings.max_batched_tokens),
                block_size: self.block_size,
                step_time_budget: None,
            };
            targets.push(Arc::new(RemoteTarget::new(
                self.fresh_index(),
                name,
                server.clone(),
                None,
                profile,
                cost,
                limits,
            )));
        }
        let weak = Arc::downgrade(self);
        let mut tasks = vec![self
            .runtime
            .spawn(poll_loop(weak.clone(), server.clone()))
            .abort_handle()];
        if e.engine == EngineKind::Switchyard {
            tasks.push(
                self.runtime
                    .spawn(follow_node_kv(weak, server.clone()))
                    .abort_handle(),
            );
        } else if let (Some(events), Some(target)) = (&e.kv_events, targets.first()) {
            let host = e.authority().map(|(h, _)| h).unwrap_or_default();
            let address = kv_events_address(events, &host, &address);
            tasks.push(
                self.runtime
                    .spawn(follow_vllm_kv(weak, target.clone(), address))
                    .abort_handle(),
            );
        }
        Ok(ServerEntry {
            address,
            server,
            targets,
            tasks,
        })
    }

    fn fresh_index(&self) -> DeviceId {
        DeviceId(self.next_index.fetch_add(1, Ordering::Relaxed))
    }

    fn rebuild_targets(&self) {
        let all: Vec<Arc<RemoteTarget>> = lock(&self.endpoints)
            .iter()
            .flat_map(|e| e.servers.iter())
            .flat_map(|s| s.targets.iter().cloned())
            .collect();
        for t in &all {
            metrics::gauge!(m::TIER_BREAKER_STATE, "endpoint" => t.server.name.clone())
                .set(t.server.breaker_state(Instant::now()).gauge());
        }
        let mut current = self.targets.write().unwrap_or_else(|p| p.into_inner());
        let mut kv = lock(&self.kv);
        for gone in current
            .iter()
            .filter(|t| !all.iter().any(|a| a.index == t.index))
        {
            kv.remove_endpoint(key(gone));
        }
        *current = Arc::new(all);
    }

    /// Applies a node's inventory to its targets (adding devices it gained).
    fn apply_inventory(&self, server: &Arc<RemoteServer>, inv: NodeInventory) {
        if inv.model_spec != self.model.name {
            server.set_unreachable(
                Instant::now(),
                format!(
                    "node serves model `{}`, the tier `{}`",
                    inv.model_spec, self.model.name
                ),
            );
            return;
        }
        let mut changed = false;
        {
            let mut eps = lock(&self.endpoints);
            let Some(entry) = eps
                .iter_mut()
                .flat_map(|e| e.servers.iter_mut())
                .find(|s| Arc::ptr_eq(&s.server, server))
            else {
                return;
            };
            for t in &entry.targets {
                if !inv
                    .devices
                    .iter()
                    .any(|d| Some(&d.id) == t.node_device.as_ref())
                {
                    t.set_node_load(Default::default(), false);
                }
            }
            for d in inv.devices {
                let cost = CostModel::new(d.profile.clone(), self.model.clone());
                let target = match entry
                    .targets
                    .iter()
                    .find(|t| t.node_device.as_deref() == Some(d.id.as_str()))
                {
                    Some(t) => {
                        if *t.cost().device() != d.profile {
                            t.set_cost(d.profile_name.clone(), cost);
                        }
                        t.clone()
                    }
                    None => {
                        let t = Arc::new(RemoteTarget::new(
                            self.fresh_index(),
                            format!("{}/{}", server.name, d.id),
                            server.clone(),
                            Some(d.id.clone()),
                            d.profile_name.clone(),
                            cost,
                            d.limits,
                        ));
                        entry.targets.push(t.clone());
                        changed = true;
                        t
                    }
                };
                let mut limits = d.limits;
                if inv.block_size != self.block_size {
                    // Prefix hashes are per block: a different block size shares none.
                    limits.block_size = self.block_size;
                }
                target.set_limits(limits);
                target.set_node_load(d.load, d.healthy);
            }
        }
        if changed {
            self.rebuild_targets();
        }
    }

    /// Replaces the servers of a DNS endpoint with `addrs`.
    fn apply_resolution(self: &Arc<Self>, id: &str, addrs: &[SocketAddr], catalog: &Catalog) {
        let mut changed = false;
        {
            let mut eps = lock(&self.endpoints);
            let Some(entry) = eps.iter_mut().find(|e| e.config.id == id) else {
                return;
            };
            let wanted: BTreeSet<String> = addrs.iter().map(|a| a.to_string()).collect();
            let before = entry.servers.len();
            entry.servers.retain(|s| wanted.contains(&s.address));
            changed |= entry.servers.len() != before;
            let config = entry.config.clone();
            for a in wanted {
                if entry.servers.iter().any(|s| s.address == a) {
                    continue;
                }
                match self.new_server(&config, format!("{id}/{a}"), a.clone(), catalog) {
                    Ok(s) => {
                        tracing::info!(endpoint = %id, address = %a, "server discovered");
                        entry.servers.push(s);
                        changed = true;
                    }
                    Err(e) => tracing::warn!(endpoint = %id, error = %e, "server not added"),
                }
            }
        }
        if changed {
            self.rebuild_targets();
        }
    }

    /// Stops every watcher.
    pub fn shutdown(&self) {
        lock(&self.endpoints).clear();
        self.rebuild_targets();
    }
}

fn same_server(a: &EndpointConfig, b: &EndpointConfig) -> bool {
    a.url == b.url
        && a.engine == b.engine
        && a.discovery == b.discovery
        && a.api_key == b.api_key
        && a.model == b.model
        && a.kv_events == b.kv_events
        && a.max_num_seqs == b.max_num_seqs
        && a.max_batched_tokens == b.max_batched_tokens
}

fn format_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Health and load of one server, every scrape interval, until it is removed.
async fn poll_loop(tier: Weak<Tier>, server: Arc<RemoteServer>) {
    loop {
        let Some(t) = tier.upgrade() else { return };
        if server.removed() {
            return;
        }
        let settings = t.settings();
        check_server(&t, &server, &settings).await;
        let breaker = server.breaker_state(Instant::now()).gauge();
        metrics::gauge!(m::TIER_BREAKER_STATE, "endpoint" => server.name.clone()).set(breaker);
        drop(t);
        tokio::time::sleep(settings.scrape_interval).await;
    }
}

async fn check_server(tier: &Arc<Tier>, server: &Arc<RemoteServer>, s: &TierSection) {
    let key = server.api_key.as_deref();
    let timeout = s.connect_timeout;
    let now = Instant::now();
    if server.engine == EngineKind::Switchyard {
        let url = format!("{}/switchyard/v1/devices", server.base);
        match tier.client.get(&url, key, timeout).await {
            Ok(body) => match serde_json::from_slice::<NodeInventory>(&body) {
                Ok(inv) => {
                    server.set_reachable();
                    tier.apply_inventory(server, inv);
                }
                Err(e) => server.set_unreachable(now, format!("node inventory: {e}")),
            },
            Err(e) => server.set_unreachable(now, e.to_string()),
        }
        return;
    }
    let health = format!("{}/health", server.base);
    if let Err(e) = tier.client.get(&health, key, timeout).await {
        server.set_unreachable(now, e.to_string());
        return;
    }
    server.set_reachable();
    let Some(names) = GaugeNames::of(server.engine) else {
        return;
    };
    let ours: u32 = tier
        .targets()
        .iter()
        .filter(|t| Arc::ptr_eq(&t.server, server))
        .map(|t| t.inflight().seqs)
        .sum();
    let url = format!("{}/metrics", server.base);
    if let Ok(body) = tier.client.get(&url, key, timeout).await {
        let text = String::from_utf8_lossy(&body);
        if let Some(load) = parse_load(&text, &names) {
            server.set_scraped(load, ours);
        }
    }
}

/// Follows a node's KV-cache events into its targets' prefix sets,
/// reconnecting (from a fresh snapshot) whenever the stream ends.
async fn follow_node_kv(tier: Weak<Tier>, server: Arc<RemoteServer>) {
    use http_body_util::BodyExt;
    loop {
        if server.removed() {
            return;
        }
        let Some(t) = tier.upgrade() else { return };
        let settings = t.settings();
        let url = format!("{}/switchyard/v1/kv_events", server.base);
        let req = client::request(
            "GET",
            &url,
            server.api_key.as_deref(),
            &[],
            Default::default(),
        );
        let resp = match req {
            Ok(req) => t.client.send(req, settings.connect_timeout).await,
            Err(e) => Err(e),
        };
        drop(t);
        if let Ok(resp) = resp {
            let mut body = resp.into_body();
            let mut sse = SseDecoder::default();
            while let Some(Ok(frame)) = body.frame().await {
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                let Some(t) = tier.upgrade() else { return };
                for event in sse.push(data) {
                    if let Ok(diff) = serde_json::from_str::<KvDiff>(&event) {
                        apply_kv_diff(&t, &server, diff);
                    }
                }
            }
        }
        tokio::time::sleep(settings.scrape_interval).await;
    }
}

fn apply_kv_diff(tier: &Tier, server: &Arc<RemoteServer>, diff: KvDiff) {
    let targets = tier.targets();
    let Some(target) = targets
        .iter()
        .find(|t| Arc::ptr_eq(&t.server, server) && t.node_device.as_deref() == Some(&diff.device))
    else {
        return;
    };
    let k = key(target);
    let mut kv = lock(&tier.kv);
    if diff.snapshot {
        kv.clear(k);
    }
    kv.apply(k, KvEvent::RemovedTierHashes(diff.removed));
    kv.apply(k, KvEvent::StoredTierHashes(diff.stored));
}

/// Feeds a vLLM server's KV-event publisher into the index until the
/// target is removed (aborting this drops the receiver, which stops the subscriber).
async fn follow_vllm_kv(tier: Weak<Tier>, target: Arc<RemoteTarget>, address: String) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<VllmBatch>(256);
    let subscriber =
        vllm_events::spawn_subscriber(SubscriberConfig::new(key(&target), address), tx);
    while let Some(batch) = rx.recv().await {
        let Some(t) = tier.upgrade() else { break };
        let mut kv = lock(&t.kv);
        match batch.continuity {
            // Lost batches or a restarted engine: what the index holds may be
            // wrong, and an empty cache is the safe assumption.
            Continuity::Gap { missed } => {
                tracing::warn!(endpoint = %target.id, missed, "KV events lost; prefix index cleared");
                kv.clear(batch.endpoint);
            }
            Continuity::Restarted => kv.clear(batch.endpoint),
            Continuity::First | Continuity::Next => {}
        }
        for event in batch.payload.events {
            kv.apply(batch.endpoint, event);
        }
    }
    subscriber.abort();
}

/// The KV index's key of a target (its router id, never reused).
fn key(target: &RemoteTarget) -> EndpointKey {
    EndpointKey(target.index.0)
}

/// The KV-event address for one discovered server: the configured host is
/// replaced by the server's own address when it names the endpoint's host.
fn kv_events_address(configured: &str, endpoint_host: &str, server_address: &str) -> String {
    let Some((scheme, rest)) = configured.split_once("://") else {
        return configured.to_string();
    };
    let Some((host, port)) = rest.rsplit_once(':') else {
        return configured.to_string();
    };
    let server_host = server_address
        .rsplit_once(':')
        .map_or(server_address, |(h, _)| h);
    if host == endpoint_host && server_host != endpoint_host {
        format!("{scheme}://{server_host}:{port}")
    } else {
        configured.to_string()
    }
}

/// Re-resolves a DNS endpoint's host every `tier.dns_refresh_s`.
async fn resolve_loop(tier: Weak<Tier>, id: String, catalog: Catalog) {
    loop {
        let Some(t) = tier.upgrade() else { return };
        let Some(config) = lock(&t.endpoints)
            .iter()
            .find(|e| e.config.id == id)
            .map(|e| e.config.clone())
        else {
            return;
        };
        let refresh = t.settings().dns_refresh;
        if let Ok((host, port)) = config.authority() {
            match tokio::net::lookup_host((host.as_str(), port)).await {
                Ok(addrs) => {
                    let addrs: Vec<SocketAddr> = addrs.collect();
                    t.apply_resolution(&id, &addrs, &catalog);
                }
                // A failed lookup keeps the servers known so far.
                Err(e) => tracing::warn!(endpoint = %id, error = %e, "DNS lookup failed"),
            }
        }
        drop(t);
        tokio::time::sleep(refresh.max(Duration::from_millis(100))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::kv_events_address;

    #[test]
    fn a_discovered_server_subscribes_to_its_own_publisher() {
        assert_eq!(
            kv_events_address("tcp://vllm.pool:5557", "vllm.pool", "10.1.2.3:8000"),
            "tcp://10.1.2.3:5557"
        );
        // An address naming another host is used as configured.
        assert_eq!(
            kv_events_address("tcp://events.local:5557", "vllm.pool", "10.1.2.3:8000"),
            "tcp://events.local:5557"
        );
        // A static endpoint's address is its own host.
        assert_eq!(
            kv_events_address("tcp://127.0.0.1:5557", "127.0.0.1", "127.0.0.1:8000"),
            "tcp://127.0.0.1:5557"
        );
    }
}
