//! The tier's cross-machine prefix index: which endpoint holds which KV
//! blocks, in the tier's own chained block hashes.
//!
//! # Hashes
//! A request is matched by [`prefix_hashes`](switchyard_scheduler::kv::prefix_hashes)
//! of its prompt: block `k`'s hash chains every token of blocks `0..=k`
//! from [`ROOT_HASH`]. Foreign engines hash blocks their own way (vLLM:
//! `hash(parent, tokens, extras)` with a per-process seed), so the index
//! keeps, per endpoint, a map from the engine's hash to the tier hash it
//! computes from the stored block's tokens and its parent's tier hash. A
//! block whose parent the index does not know (stored before the
//! subscription began, or already removed) cannot be placed in a chain and
//! is skipped: matching a prefix needs every block before it anyway.
//! Switchyard nodes publish tier hashes directly and skip the mapping.
//!
//! # Exact and approximate entries
//! An endpoint that publishes events is *event-fed* from its first event on;
//! its cache is what the events say. An endpoint without events gets an
//! approximate index from the tier's routing history ([`KvIndex::record_routed`]):
//! the prefix hashes of the requests routed there, bounded by a capacity in
//! blocks with LRU eviction and a time to live, as SGLang's and
//! vllm-router's `cache_aware` policies do. Time is an argument, never read
//! from a clock.
//!
//! # Invariants (property-tested)
//! After any sequence of stored, removed and cleared events, a tier hash is
//! present for an endpoint iff some engine hash currently stored there maps
//! to it or it was stored directly as a tier hash and not removed since.
//! Duplicate deliveries are idempotent (vLLM's publisher is at-least-once).

use std::collections::{BTreeMap, HashMap, HashSet};

/// Maps keyed by block hashes: every stored or evicted block of every
/// endpoint is one or two operations on them, tens of thousands a second
/// under load. foldhash is seeded per process, so prompts chosen to collide
/// in a bucket cannot be computed offline, as they could for a fixed mixer.
type BlockMap<V> = HashMap<u64, V, foldhash::fast::RandomState>;
type BlockSet = HashSet<u64, foldhash::fast::RandomState>;
use std::time::Duration;

use switchyard_scheduler::kv::{block_hash, ROOT_HASH};

/// A small key for one endpoint (the tier assigns them; no strings on the hot path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointKey(pub u32);

/// One full block an engine reports as cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlock {
    /// The engine's own hash of the block.
    pub hash: u64,
    /// The engine's hash of the block before it; `None` for a prompt's first block.
    pub parent: Option<u64>,
    /// The block's token ids.
    pub tokens: Vec<u32>,
}

/// A change to one endpoint's cached blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvEvent {
    /// Full blocks became reusable, in engine hashes (parents before children).
    Stored {
        /// The blocks, in chain order.
        blocks: Vec<StoredBlock>,
    },
    /// Blocks were evicted, in engine hashes.
    Removed {
        /// Engine hashes of the evicted blocks.
        engine_hashes: Vec<u64>,
    },
    /// The endpoint dropped its whole prefix cache.
    AllCleared,
    /// Blocks became reusable, already in tier hashes (Switchyard nodes).
    StoredTierHashes(Vec<u64>),
    /// Blocks were evicted, in tier hashes (Switchyard nodes).
    RemovedTierHashes(Vec<u64>),
}

/// Bounds of the approximate (routing-history) entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApproxConfig {
    /// Blocks remembered per endpoint unless [`KvIndex::set_approx_capacity`] says otherwise.
    pub capacity_blocks: u32,
    /// How long a routed prefix is assumed to stay cached.
    pub ttl: Duration,
}

impl Default for ApproxConfig {
    fn default() -> Self {
        // Roughly one 80 GB GPU's KV pool for an 8B model at 16-token
        // blocks, and the idle time after which engines under load have
        // usually evicted a prefix.
        Self {
            capacity_blocks: 32_768,
            ttl: Duration::from_secs(120),
        }
    }
}

/// Prefix caches of every endpoint, in tier hashes.
#[derive(Debug, Clone, Default)]
pub struct KvIndex {
    approx: ApproxConfig,
    endpoints: HashMap<EndpointKey, EndpointCache>,
    /// Latest time seen by `record_routed` / `expire`: queries treat
    /// approximate entries older than `now - ttl` as gone without a clock.
    now: Duration,
}

#[derive(Debug, Clone, Default)]
struct EndpointCache {
    /// Set once the endpoint has published an event: from then on only
    /// events describe its cache.
    event_fed: bool,
    /// Engine hash → tier hash of each stored block.
    engine: BlockMap<u64>,
    /// Tier hashes stored directly.
    direct: BlockSet,
    /// Tier hash → number of sources holding it (mapped engine hashes + direct).
    present: BlockMap<u32>,
    approx: Lru,
    /// Overrides the index-wide approximate capacity.
    capacity: Option<u32>,
}

/// Tier hashes with last-use times, evicted least recently used first.
#[derive(Debug, Clone, Default)]
struct Lru {
    /// Tier hash → (use tick, last use time).
    entries: BlockMap<(u64, Duration)>,
    /// Use tick → tier hash, oldest first.
    order: BTreeMap<u64, u64>,
    tick: u64,
}

impl Lru {
    fn touch(&mut self, hash: u64, now: Duration) {
        self.tick += 1;
        if let Some((old, _)) = self.entries.insert(hash, (self.tick, now)) {
            self.order.remove(&old);
        }
        self.order.insert(self.tick, hash);
    }

    fn prune(&mut self, capacity: u32, cutoff: Option<Duration>) {
        while let Some((&tick, &hash)) = self.order.first_key_value() {
            let stale = match (cutoff, self.entries.get(&hash)) {
                (Some(c), Some(&(_, t))) => t < c,
                _ => false,
            };
            if self.order.len() <= capacity as usize && !stale {
                break;
            }
            self.order.remove(&tick);
            self.entries.remove(&hash);
        }
    }

    fn contains(&self, hash: u64, cutoff: Option<Duration>) -> bool {
        self.entries
            .get(&hash)
            .is_some_and(|&(_, t)| cutoff.is_none_or(|c| t >= c))
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }
}

impl EndpointCache {
    fn add(&mut self, tier: u64) {
        *self.present.entry(tier).or_insert(0) += 1;
    }

    fn release(&mut self, tier: u64) {
        if let Some(n) = self.present.get_mut(&tier) {
            *n -= 1;
            if *n == 0 {
                self.present.remove(&tier);
            }
        }
    }

    fn store_block(&mut self, block: &StoredBlock) {
        if self.engine.contains_key(&block.hash) {
            return; // a duplicate delivery
        }
        let parent = match block.parent {
            None => ROOT_HASH,
            Some(p) => match self.engine.get(&p) {
                Some(&t) => t,
                None => return, // cannot be placed in a chain
            },
        };
        let tier = block_hash(parent, &block.tokens);
        self.engine.insert(block.hash, tier);
        self.add(tier);
    }

    fn clear_exact(&mut self) {
        self.engine.clear();
        self.direct.clear();
        self.present.clear();
    }
}

impl KvIndex {
    /// An empty index with these approximate-entry bounds.
    pub fn new(approx: ApproxConfig) -> Self {
        Self {
            approx,
            ..Self::default()
        }
    }

    /// Applies one event published by `endpoint` (which becomes event-fed).
    pub fn apply(&mut self, endpoint: EndpointKey, event: KvEvent) {
        let cache = self.endpoints.entry(endpoint).or_default();
        if !cache.event_fed {
            cache.event_fed = true;
            // Guesses from routing history would now contradict the events.
            cache.approx.clear();
        }
        match event {
            KvEvent::Stored { blocks } => {
                for block in &blocks {
                    cache.store_block(block);
                }
            }
            KvEvent::Removed { engine_hashes } => {
                for h in engine_hashes {
                    if let Some(tier) = cache.engine.remove(&h) {
                        cache.release(tier);
                    }
                }
            }
            KvEvent::AllCleared => cache.clear_exact(),
            KvEvent::StoredTierHashes(hashes) => {
                for h in hashes {
                    if cache.direct.insert(h) {
                        cache.add(h);
                    }
                }
            }
            KvEvent::RemovedTierHashes(hashes) => {
                for h in hashes {
                    if cache.direct.remove(&h) {
                        cache.release(h);
                    }
                }
            }
        }
    }

    /// Number of leading `hashes` (a prompt's prefix hashes) cached on `endpoint`.
    pub fn cached_prefix_blocks(&self, endpoint: EndpointKey, hashes: &[u64]) -> u32 {
        let Some(cache) = self.endpoints.get(&endpoint) else {
            return 0;
        };
        let cutoff = self.now.checked_sub(self.approx.ttl);
        let hit = |h: &u64| {
            cache.present.contains_key(h) || (!cache.event_fed && cache.approx.contains(*h, cutoff))
        };
        hashes.iter().take_while(|h| hit(h)).count() as u32
    }

    /// Whether `endpoint` holds `tier_hash` (exactly or approximately).
    pub fn contains(&self, endpoint: EndpointKey, tier_hash: u64) -> bool {
        self.cached_prefix_blocks(endpoint, &[tier_hash]) == 1
    }

    /// Records that a request with these prefix hashes was routed to
    /// `endpoint` at `now` (ignored for event-fed endpoints).
    pub fn record_routed(&mut self, endpoint: EndpointKey, hashes: &[u64], now: Duration) {
        self.now = self.now.max(now);
        let cutoff = self.now.checked_sub(self.approx.ttl);
        let default_capacity = self.approx.capacity_blocks;
        let cache = self.endpoints.entry(endpoint).or_default();
        if cache.event_fed {
            return;
        }
        // Last block first, so the head of the prefix is the most recently
        // used and is evicted last (a tail without its head matches nothing).
        for &h in hashes.iter().rev() {
            cache.approx.touch(h, now);
        }
        cache
            .approx
            .prune(cache.capacity.unwrap_or(default_capacity), cutoff);
    }

    /// Drops approximate entries older than `now - ttl` on every endpoint.
    pub fn expire(&mut self, now: Duration) {
        self.now = self.now.max(now);
        let cutoff = self.now.checked_sub(self.approx.ttl);
        let default_capacity = self.approx.capacity_blocks;
        for cache in self.endpoints.values_mut() {
            cache
                .approx
                .prune(cache.capacity.unwrap_or(default_capacity), cutoff);
        }
    }

    /// Sets how many approximate blocks `endpoint` keeps (its KV pool size, when known).
    pub fn set_approx_capacity(&mut self, endpoint: EndpointKey, blocks: u32) {
        let cache = self.endpoints.entry(endpoint).or_default();
        cache.capacity = Some(blocks);
        cache.approx.prune(blocks, None);
    }

    /// Forgets everything `endpoint` holds (it restarted or lost its cache);
    /// it stays event-fed if it was.
    pub fn clear(&mut self, endpoint: EndpointKey) {
        if let Some(cache) = self.endpoints.get_mut(&endpoint) {
            cache.clear_exact();
            cache.approx.clear();
        }
    }

    /// Drops `endpoint` entirely (it left the fleet).
    pub fn remove_endpoint(&mut self, endpoint: EndpointKey) {
        self.endpoints.remove(&endpoint);
    }

    /// Whether `endpoint` has published events (and so is indexed exactly).
    pub fn is_event_fed(&self, endpoint: EndpointKey) -> bool {
        self.endpoints.get(&endpoint).is_some_and(|c| c.event_fed)
    }

    /// Distinct tier hashes indexed for `endpoint` (exact plus live approximate ones).
    pub fn len(&self, endpoint: EndpointKey) -> usize {
        self.endpoints.get(&endpoint).map_or(0, |c| {
            let cutoff = self.now.checked_sub(self.approx.ttl);
            let approx = if c.event_fed {
                0
            } else {
                c.approx
                    .entries
                    .keys()
                    .filter(|h| !c.present.contains_key(h) && c.approx.contains(**h, cutoff))
                    .count()
            };
            c.present.len() + approx
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use switchyard_scheduler::kv::prefix_hashes;

    const E: EndpointKey = EndpointKey(0);

    /// A foreign engine's block hash: a different chain from the tier's,
    /// as vLLM's `hash((parent, tokens, extras))` is.
    fn engine_hash(parent: Option<u64>, tokens: &[u32]) -> u64 {
        let seed = parent.unwrap_or(0xDEAD_BEEF);
        block_hash(seed.rotate_left(17) ^ 0xA5A5, tokens) ^ 0x1234_5678
    }

    /// The Stored event an engine publishes for blocks `from..to` of `prompt`.
    fn stored(prompt: &[u32], bs: usize, from: usize, to: usize) -> KvEvent {
        let hashes = engine_hashes(prompt, bs);
        let blocks = (from..to)
            .map(|k| StoredBlock {
                hash: hashes[k],
                parent: k.checked_sub(1).map(|p| hashes[p]),
                tokens: prompt[k * bs..(k + 1) * bs].to_vec(),
            })
            .collect();
        KvEvent::Stored { blocks }
    }

    fn engine_hashes(prompt: &[u32], bs: usize) -> Vec<u64> {
        let mut parent = None;
        prompt
            .chunks_exact(bs)
            .map(|c| {
                let h = engine_hash(parent, c);
                parent = Some(h);
                h
            })
            .collect()
    }

    #[test]
    fn foreign_chain_maps_to_prefix_hashes() {
        let prompt: Vec<u32> = (0..50).collect();
        let mut idx = KvIndex::default();
        // Stored in two events, as an engine caches a prompt chunk by chunk.
        idx.apply(E, stored(&prompt, 16, 0, 1));
        idx.apply(E, stored(&prompt, 16, 1, 3));
        let tier = prefix_hashes(&prompt, 16);
        assert_eq!(tier.len(), 3);
        assert_eq!(idx.cached_prefix_blocks(E, &tier), 3);
        assert_eq!(idx.cached_prefix_blocks(EndpointKey(1), &tier), 0);
        // A longer prompt sharing the first two blocks.
        let mut other = prompt[..32].to_vec();
        other.extend(100..140);
        assert_eq!(idx.cached_prefix_blocks(E, &prefix_hashes(&other, 16)), 2);
    }

    #[test]
    fn orphan_blocks_are_skipped_and_removal_breaks_the_run() {
        let prompt: Vec<u32> = (0..64).collect();
        let tier = prefix_hashes(&prompt, 16);
        let eh = engine_hashes(&prompt, 16);
        let mut idx = KvIndex::default();
        // Parent unknown: nothing can be chained.
        idx.apply(E, stored(&prompt, 16, 1, 4));
        assert_eq!(idx.cached_prefix_blocks(E, &tier), 0);
        assert_eq!(idx.len(E), 0);
        idx.apply(E, stored(&prompt, 16, 0, 4));
        assert_eq!(idx.cached_prefix_blocks(E, &tier), 4);
        idx.apply(
            E,
            KvEvent::Removed {
                engine_hashes: vec![eh[1]],
            },
        );
        assert_eq!(idx.cached_prefix_blocks(E, &tier), 1);
        assert_eq!(idx.len(E), 3);
        idx.apply(E, KvEvent::AllCleared);
        assert_eq!(idx.cached_prefix_blocks(E, &tier), 0);
        assert!(idx.is_event_fed(E));
    }

    #[test]
    fn tier_hash_events_and_duplicates() {
        let tier = prefix_hashes(&(0..48).collect::<Vec<_>>(), 16);
        let mut idx = KvIndex::default();
        idx.apply(E, KvEvent::StoredTierHashes(tier.clone()));
        idx.apply(E, KvEvent::StoredTierHashes(tier.clone()));
        assert_eq!(idx.cached_prefix_blocks(E, &tier), 3);
        idx.apply(E, KvEvent::RemovedTierHashes(vec![tier[2]]));
        assert_eq!(idx.cached_prefix_blocks(E, &tier), 2);
        idx.clear(E);
        assert_eq!(idx.cached_prefix_blocks(E, &tier), 0);
        idx.remove_endpoint(E);
        assert!(!idx.is_event_fed(E));
    }

    #[test]
    fn approximate_entries_have_lru_capacity_and_ttl() {
        let cfg = ApproxConfig {
            capacity_blocks: 4,
            ttl: Duration::from_secs(10),
        };
        let mut idx = KvIndex::new(cfg);
        let a = prefix_hashes(&(0..48).collect::<Vec<_>>(), 16);
        let b = prefix_hashes(&(100..148).collect::<Vec<_>>(), 16);
        idx.record_routed(E, &a, Duration::from_secs(1));
        assert_eq!(idx.cached_prefix_blocks(E, &a), 3);
        // Capacity 4: b's three blocks evict a's tail first, keeping a's head.
        idx.record_routed(E, &b, Duration::from_secs(2));
        assert_eq!(idx.cached_prefix_blocks(E, &b), 3);
        assert_eq!(idx.cached_prefix_blocks(E, &a), 1);
        // Past the TTL of a (but not b), a is gone even before pruning.
        idx.record_routed(EndpointKey(9), &[], Duration::from_secs(11_500) / 1000);
        assert_eq!(idx.cached_prefix_blocks(E, &a), 0);
        assert_eq!(idx.cached_prefix_blocks(E, &b), 3);
        idx.expire(Duration::from_secs(13));
        assert_eq!(idx.len(E), 0);
        // Events make the endpoint exact: routing history is ignored.
        idx.record_routed(E, &a, Duration::from_secs(14));
        idx.apply(E, KvEvent::AllCleared);
        idx.record_routed(E, &a, Duration::from_secs(15));
        assert_eq!(idx.cached_prefix_blocks(E, &a), 0);
        // A smaller per-endpoint capacity prunes at once.
        let f = EndpointKey(2);
        idx.record_routed(f, &b, Duration::from_secs(15));
        idx.set_approx_capacity(f, 1);
        assert_eq!(idx.cached_prefix_blocks(f, &b), 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Store {
            prompt: usize,
            from: usize,
            to: usize,
        },
        Remove {
            prompt: usize,
            blocks: Vec<usize>,
        },
        StoreTier {
            prompt: usize,
            upto: usize,
        },
        RemoveTier {
            prompt: usize,
            block: usize,
        },
        Clear,
    }

    const BS: usize = 2;

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..6usize, 0..4usize, 0..5usize).prop_map(|(prompt, a, b)| Op::Store {
                prompt,
                from: a.min(b),
                to: a.max(b),
            }),
            2 => (0..6usize, prop::collection::vec(0..4usize, 0..3))
                .prop_map(|(prompt, blocks)| Op::Remove { prompt, blocks }),
            1 => (0..6usize, 0..5usize).prop_map(|(prompt, upto)| Op::StoreTier { prompt, upto }),
            1 => (0..6usize, 0..4usize).prop_map(|(prompt, block)| Op::RemoveTier { prompt, block }),
            1 => Just(Op::Clear),
        ]
    }

    proptest! {
        /// The index equals a set model: engine hash → tier hash of the
        /// blocks stored (with a known parent) and not removed, plus the
        /// tier hashes stored directly.
        #[test]
        fn index_matches_set_model(
            // Four-block prompts over a two-token alphabet share many prefixes.
            prompts in prop::collection::vec(prop::collection::vec(0u32..2, 4 * BS), 6),
            ops in prop::collection::vec(op(), 0..40),
        ) {
            let mut idx = KvIndex::default();
            let mut engine: HashMap<u64, u64> = HashMap::new();
            let mut direct: HashSet<u64> = HashSet::new();
            for op in &ops {
                match op {
                    Op::Store { prompt, from, to } => {
                        let p = &prompts[*prompt];
                        let eh = engine_hashes(p, BS);
                        let th = prefix_hashes(p, BS as u32);
                        for k in *from..*to {
                            let known = k == 0 || engine.contains_key(&eh[k - 1]);
                            if known {
                                engine.entry(eh[k]).or_insert(th[k]);
                            }
                        }
                        idx.apply(E, stored(p, BS, *from, *to));
                    }
                    Op::Remove { prompt, blocks } => {
                        let eh = engine_hashes(&prompts[*prompt], BS);
                        let hs: Vec<u64> = blocks.iter().map(|&b| eh[b]).collect();
                        for h in &hs {
                            engine.remove(h);
                        }
                        idx.apply(E, KvEvent::Removed { engine_hashes: hs });
                    }
                    Op::StoreTier { prompt, upto } => {
                        let th = prefix_hashes(&prompts[*prompt], BS as u32)[..*upto].to_vec();
                        direct.extend(th.iter().copied());
                        idx.apply(E, KvEvent::StoredTierHashes(th));
                    }
                    Op::RemoveTier { prompt, block } => {
                        let h = prefix_hashes(&prompts[*prompt], BS as u32)[*block];
                        direct.remove(&h);
                        idx.apply(E, KvEvent::RemovedTierHashes(vec![h]));
                    }
                    Op::Clear => {
                        engine.clear();
                        direct.clear();
                        idx.apply(E, KvEvent::AllCleared);
                    }
                }
                let model: HashSet<u64> = engine.values().copied().chain(direct.iter().copied()).collect();
                prop_assert_eq!(idx.len(E), model.len());
                for p in &prompts {
                    let th = prefix_hashes(p, BS as u32);
                    let want = th.iter().take_while(|h| model.contains(h)).count() as u32;
                    prop_assert_eq!(idx.cached_prefix_blocks(E, &th), want);
                }
            }
        }
    }
}
