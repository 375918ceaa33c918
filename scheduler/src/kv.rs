//! The paged KV cache's logical side: which physical blocks each sequence
//! holds, with reference counts, automatic prefix caching and copy-on-write.
//!
//! # Design
//! - Blocks hold `block_size` tokens. A sequence owns a [`BlockTable`]; the
//!   manager owns reference counts and the free list. Tables are plain values
//!   owned by the engine, so no map lookup sits on the per-step path.
//! - **Prefix caching**: when a block becomes full, its identity is the hash
//!   of its tokens chained with its prefix's hash, so equal hashes mean equal
//!   whole prefixes. A new sequence reuses every leading full block whose
//!   hash is cached. Freed cached blocks stay in the free list, reusable
//!   until they are reallocated (evicted) in LRU order.
//! - **Free list**: an intrusive doubly-linked list over block indices, so
//!   allocating, freeing and reviving a cached block are all O(1). Blocks
//!   with no cached content go to the front (reused first), cached blocks to
//!   the back; a sequence's blocks are released tail first, so the shared
//!   head of a prefix is evicted last.
//! - **Copy-on-write**: appending into a partially filled block that another
//!   table also references first moves the writer to a fresh block and
//!   reports a [`BlockCopy`] for the backend to perform.
//!
//! # Invariants (checked by property tests)
//! - a block's reference count equals the number of tables that hold it;
//! - a block is in the free list iff its count is zero, and at most once;
//! - free + referenced blocks = capacity; freeing every table restores full capacity.
//!
//! Hashes are 64-bit and not cryptographic: a collision would alias two
//! prefixes. With 2⁶⁴ values and at most millions of cached blocks, the
//! chance is below 10⁻⁶ per day of traffic; deployments serving mutually
//! untrusting tenants should salt the root hash per tenant.

use std::collections::HashMap;

use switchyard_backends::hash::mix64;
use switchyard_backends::{BlockCopy, BlockId};

const NIL: u32 = u32::MAX;
/// Root of every hash chain (the parent of a prompt's first block).
pub const ROOT_HASH: u64 = 0x5157_1C4B_1D00_0001;

/// Why blocks could not be provided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// Not enough free blocks for the request.
    #[error("out of KV blocks: need {need}, {free} free")]
    OutOfBlocks {
        /// Blocks the operation needs.
        need: u32,
        /// Blocks free now.
        free: u32,
    },
}

/// The blocks one sequence holds, in position order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockTable {
    blocks: Vec<BlockId>,
    /// Leading blocks whose hashes are registered in the prefix cache.
    hashed: u32,
    /// Hash of the last registered block (the chain's tip).
    tip: u64,
}

impl Default for BlockTable {
    fn default() -> Self {
        Self {
            blocks: Vec::new(),
            hashed: 0,
            tip: ROOT_HASH,
        }
    }
}

impl BlockTable {
    /// Physical blocks, in position order.
    pub fn blocks(&self) -> &[BlockId] {
        &self.blocks
    }

    /// Number of blocks held.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether no blocks are held.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Makes room for `blocks` blocks in all without reallocating (capacity only).
    pub fn reserve_total(&mut self, blocks: usize) {
        self.blocks
            .reserve(blocks.saturating_sub(self.blocks.len()));
    }
}

/// A change to the set of cached block hashes, for routers that track which
/// device holds which prefix (published by the device's driver).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheEvent {
    /// A full block with this hash became reusable.
    Stored(u64),
    /// The block with this hash was evicted.
    Evicted(u64),
}

/// Prefix-cache counters, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixStats {
    /// Prompt tokens looked up in the cache.
    pub queried_tokens: u64,
    /// Prompt tokens served from the cache.
    pub hit_tokens: u64,
}

/// Allocates paged KV blocks with reference counts and a prefix cache.
#[derive(Debug, Clone)]
pub struct BlockManager {
    block_size: u32,
    refs: Vec<u32>,
    hashes: Vec<Option<u64>>,
    prev: Vec<u32>,
    next: Vec<u32>,
    head: u32,
    tail: u32,
    num_free: u32,
    cached: HashMap<u64, BlockId>,
    stats: PrefixStats,
    events: Option<Vec<CacheEvent>>,
}

/// Hash of a full block of tokens following a prefix whose hash is `parent`.
pub fn block_hash(parent: u64, tokens: &[u32]) -> u64 {
    let mut h = parent;
    for &t in tokens {
        h = (h ^ u64::from(t))
            .wrapping_mul(switchyard_backends::hash::GOLDEN_GAMMA)
            .rotate_left(29);
    }
    mix64(h ^ tokens.len() as u64)
}

/// Hash chain of every full block of `tokens` (what a router probes to find
/// which device caches the longest prefix).
pub fn prefix_hashes(tokens: &[u32], block_size: u32) -> Vec<u64> {
    let mut h = ROOT_HASH;
    tokens
        .chunks_exact(block_size.max(1) as usize)
        .map(|chunk| {
            h = block_hash(h, chunk);
            h
        })
        .collect()
}

impl BlockManager {
    /// A pool of `num_blocks` blocks of `block_size` tokens, all free.
    pub fn new(num_blocks: u32, block_size: u32) -> Self {
        let n = num_blocks as usize;
        let mut m = Self {
            block_size: block_size.max(1),
            refs: vec![0; n],
            hashes: vec![None; n],
            prev: vec![NIL; n],
            next: vec![NIL; n],
            head: NIL,
            tail: NIL,
            num_free: 0,
            cached: HashMap::new(),
            stats: PrefixStats::default(),
            events: None,
        };
        for b in 0..num_blocks {
            m.push_back(b);
        }
        m
    }

    /// Tokens per block.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Blocks in the pool.
    pub fn num_blocks(&self) -> u32 {
        self.refs.len() as u32
    }

    /// Blocks not referenced by any table (including evictable cached blocks).
    pub fn num_free_blocks(&self) -> u32 {
        self.num_free
    }

    /// Fraction of blocks referenced by some table, in [0, 1].
    pub fn usage(&self) -> f64 {
        if self.refs.is_empty() {
            return 0.0;
        }
        1.0 - f64::from(self.num_free) / self.refs.len() as f64
    }

    /// Blocks needed to hold `tokens` tokens.
    pub fn blocks_for(&self, tokens: u32) -> u32 {
        tokens.div_ceil(self.block_size)
    }

    /// Prefix-cache counters since creation.
    pub fn prefix_stats(&self) -> PrefixStats {
        self.stats
    }

    /// Starts recording [`CacheEvent`]s (off by default: the simulator has no use for them).
    pub fn record_cache_events(&mut self) {
        self.events.get_or_insert_with(Vec::new);
    }

    /// Moves recorded cache events into `out`, oldest first.
    pub fn drain_cache_events(&mut self, out: &mut Vec<CacheEvent>) {
        if let Some(ev) = self.events.as_mut() {
            out.append(ev);
        }
    }

    /// Reference count of a block (for tests and diagnostics).
    pub fn ref_count(&self, b: BlockId) -> u32 {
        self.refs.get(b.0 as usize).copied().unwrap_or(0)
    }

    fn unlink(&mut self, b: u32) {
        let (p, n) = (self.prev[b as usize], self.next[b as usize]);
        if p == NIL {
            self.head = n;
        } else {
            self.next[p as usize] = n;
        }
        if n == NIL {
            self.tail = p;
        } else {
            self.prev[n as usize] = p;
        }
        self.prev[b as usize] = NIL;
        self.next[b as usize] = NIL;
        self.num_free -= 1;
    }

    fn push_back(&mut self, b: u32) {
        self.prev[b as usize] = self.tail;
        self.next[b as usize] = NIL;
        if self.tail == NIL {
            self.head = b;
        } else {
            self.next[self.tail as usize] = b;
        }
        self.tail = b;
        self.num_free += 1;
    }

    fn push_front(&mut self, b: u32) {
        self.next[b as usize] = self.head;
        self.prev[b as usize] = NIL;
        if self.head == NIL {
            self.tail = b;
        } else {
            self.prev[self.head as usize] = b;
        }
        self.head = b;
        self.num_free += 1;
    }

    /// Takes the least recently freed block, evicting its cached content.
    fn pop_free(&mut self) -> Option<BlockId> {
        let b = self.head;
        if b == NIL {
            return None;
        }
        self.unlink(b);
        if let Some(h) = self.hashes[b as usize].take() {
            if self.cached.get(&h) == Some(&BlockId(b)) {
                self.cached.remove(&h);
                if let Some(ev) = self.events.as_mut() {
                    ev.push(CacheEvent::Evicted(h));
                }
            }
        }
        self.refs[b as usize] = 1;
        Some(BlockId(b))
    }

    fn acquire(&mut self, b: BlockId) {
        let i = b.0 as usize;
        if self.refs[i] == 0 {
            self.unlink(b.0);
        }
        self.refs[i] += 1;
    }

    fn release(&mut self, b: BlockId) {
        let i = b.0 as usize;
        debug_assert!(self.refs[i] > 0, "double free of block {}", b.0);
        if self.refs[i] == 0 {
            return;
        }
        self.refs[i] -= 1;
        if self.refs[i] == 0 {
            if self.hashes[i].is_some() {
                self.push_back(b.0);
            } else {
                self.push_front(b.0);
            }
        }
    }

    /// Tokens of `tokens` whose full blocks are cached, leaving at least one token to compute.
    pub fn cached_prefix_len(&self, tokens: &[u32]) -> u32 {
        let bs = self.block_size as usize;
        let max_blocks = tokens.len().saturating_sub(1) / bs;
        let mut h = ROOT_HASH;
        let mut n = 0;
        for chunk in tokens.chunks_exact(bs).take(max_blocks) {
            h = block_hash(h, chunk);
            if !self.cached.contains_key(&h) {
                break;
            }
            n += 1;
        }
        (n * bs) as u32
    }

    /// Starts an empty table for `tokens`, reusing cached leading blocks.
    /// Returns how many tokens are already computed (a multiple of the block
    /// size, always less than `tokens.len()`).
    pub fn start(&mut self, table: &mut BlockTable, tokens: &[u32]) -> u32 {
        debug_assert!(table.is_empty(), "start on a table that holds blocks");
        let bs = self.block_size as usize;
        let max_blocks = tokens.len().saturating_sub(1) / bs;
        let mut h = ROOT_HASH;
        for chunk in tokens.chunks_exact(bs).take(max_blocks) {
            let next = block_hash(h, chunk);
            let Some(&b) = self.cached.get(&next) else {
                break;
            };
            self.acquire(b);
            table.blocks.push(b);
            h = next;
        }
        table.hashed = table.blocks.len() as u32;
        table.tip = h;
        let hit = table.blocks.len() as u64 * bs as u64;
        self.stats.queried_tokens += tokens.len() as u64;
        self.stats.hit_tokens += hit;
        hit as u32
    }

    /// Blocks that [`ensure_slots`](Self::ensure_slots) would take from the free list.
    pub fn blocks_needed(&self, table: &BlockTable, computed: u32, total: u32) -> u32 {
        let grow = self
            .blocks_for(total)
            .saturating_sub(table.blocks.len() as u32);
        grow + u32::from(self.needs_cow(table, computed, total))
    }

    /// Whether [`ensure_slots`](Self::ensure_slots) would move `table` to a private copy of a shared block.
    #[inline]
    pub fn needs_copy(&self, table: &BlockTable, computed: u32, total: u32) -> bool {
        self.needs_cow(table, computed, total)
    }

    /// Whether the next write (at `computed`) lands in a block this table
    /// shares: a partial block after a fork, or, for a fork that computes
    /// its last prompt token again, a block it starts writing at offset 0
    /// (a block a plain sequence writes from offset 0 is always fresh).
    #[inline]
    fn needs_cow(&self, table: &BlockTable, computed: u32, total: u32) -> bool {
        total > computed
            && table
                .blocks
                .get((computed / self.block_size) as usize)
                .is_some_and(|b| self.refs[b.0 as usize] > 1)
    }

    /// Makes `table` cover `total` tokens, of which `computed` are already
    /// written. If the block to be written is shared, the table moves to a
    /// private copy and the copy the backend must make is returned. All or
    /// nothing: on error the table is unchanged.
    pub fn ensure_slots(
        &mut self,
        table: &mut BlockTable,
        computed: u32,
        total: u32,
    ) -> Result<Option<BlockCopy>, KvError> {
        let need = self.blocks_needed(table, computed, total);
        if need > self.num_free {
            return Err(KvError::OutOfBlocks {
                need,
                free: self.num_free,
            });
        }
        let mut copy = None;
        if self.needs_cow(table, computed, total) {
            let idx = (computed / self.block_size) as usize;
            let src = table.blocks[idx];
            // Checked above: `need` blocks are free.
            if let Some(dst) = self.pop_free() {
                self.release(src);
                table.blocks[idx] = dst;
                copy = Some(BlockCopy { src, dst });
            }
        }
        while (table.blocks.len() as u32) < self.blocks_for(total) {
            match self.pop_free() {
                Some(b) => table.blocks.push(b),
                None => break,
            }
        }
        Ok(copy)
    }

    /// Registers the full blocks among the first `computed` tokens in the prefix cache.
    pub fn commit(&mut self, table: &mut BlockTable, tokens: &[u32], computed: u32) {
        let bs = self.block_size as usize;
        let full = (computed as usize).min(tokens.len()) / bs;
        let full = full.min(table.blocks.len());
        for i in table.hashed as usize..full {
            let h = block_hash(table.tip, &tokens[i * bs..(i + 1) * bs]);
            let b = table.blocks[i];
            if self.hashes[b.0 as usize].is_none() {
                self.hashes[b.0 as usize] = Some(h);
                if let std::collections::hash_map::Entry::Vacant(slot) = self.cached.entry(h) {
                    slot.insert(b);
                    if let Some(ev) = self.events.as_mut() {
                        ev.push(CacheEvent::Stored(h));
                    }
                }
            }
            table.tip = h;
        }
        table.hashed = table.hashed.max(full as u32);
    }

    /// Shares every block of `parent` with a new table (a fork, e.g. for parallel sampling).
    pub fn fork(&mut self, parent: &BlockTable) -> BlockTable {
        for &b in &parent.blocks {
            self.acquire(b);
        }
        parent.clone()
    }

    /// Releases every block of `table`, leaving it empty.
    pub fn free(&mut self, table: &mut BlockTable) {
        for b in std::mem::take(&mut table.blocks).into_iter().rev() {
            self.release(b);
        }
        table.hashed = 0;
        table.tip = ROOT_HASH;
    }

    /// Verifies the free list against reference counts; `Err` names the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut seen = vec![false; self.refs.len()];
        let mut count = 0u32;
        let mut b = self.head;
        let mut prev = NIL;
        while b != NIL {
            let i = b as usize;
            if seen[i] {
                return Err(format!("block {b} twice in free list"));
            }
            seen[i] = true;
            if self.refs[i] != 0 {
                return Err(format!("block {b} free with ref {}", self.refs[i]));
            }
            if self.prev[i] != prev {
                return Err(format!("block {b} has broken back link"));
            }
            count += 1;
            prev = b;
            b = self.next[i];
        }
        if prev != self.tail {
            return Err("tail does not end the free list".into());
        }
        if count != self.num_free {
            return Err(format!("free count {} but {count} listed", self.num_free));
        }
        if let Some(i) = (0..self.refs.len()).find(|&i| self.refs[i] == 0 && !seen[i]) {
            return Err(format!("block {i} has ref 0 but is not free (leak)"));
        }
        for (h, b) in &self.cached {
            if self.hashes[b.0 as usize] != Some(*h) {
                return Err(format!("cache entry for block {} is stale", b.0));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(n: u32, salt: u32) -> Vec<u32> {
        (0..n).map(|i| i * 7 + salt).collect()
    }

    #[test]
    fn allocate_and_free_restores_capacity() {
        let mut m = BlockManager::new(10, 4);
        let mut t = BlockTable::default();
        assert_eq!(m.ensure_slots(&mut t, 0, 10).unwrap(), None);
        assert_eq!(t.len(), 3);
        assert_eq!(m.num_free_blocks(), 7);
        m.free(&mut t);
        assert_eq!(m.num_free_blocks(), 10);
        m.check_invariants().unwrap();
    }

    #[test]
    fn out_of_blocks_is_all_or_nothing() {
        let mut m = BlockManager::new(2, 4);
        let mut t = BlockTable::default();
        let err = m.ensure_slots(&mut t, 0, 12).unwrap_err();
        assert_eq!(err, KvError::OutOfBlocks { need: 3, free: 2 });
        assert!(t.is_empty());
        assert_eq!(m.num_free_blocks(), 2);
    }

    #[test]
    fn prefix_cache_reuses_full_blocks_and_survives_free() {
        let mut m = BlockManager::new(16, 4);
        let prompt = toks(10, 1);
        let mut a = BlockTable::default();
        assert_eq!(m.start(&mut a, &prompt), 0);
        m.ensure_slots(&mut a, 0, 10).unwrap();
        m.commit(&mut a, &prompt, 10);
        let first_two = a.blocks()[..2].to_vec();
        m.free(&mut a);
        // Freed but cached: a new sequence with the same prompt reuses both full blocks.
        let mut b = BlockTable::default();
        assert_eq!(m.start(&mut b, &prompt), 8);
        assert_eq!(b.blocks(), &first_two[..]);
        assert_eq!(m.cached_prefix_len(&prompt), 8);
        // A different prompt shares nothing.
        assert_eq!(m.cached_prefix_len(&toks(10, 2)), 0);
        m.check_invariants().unwrap();
    }

    #[test]
    fn fully_cached_prompt_still_computes_last_token() {
        let mut m = BlockManager::new(16, 4);
        let prompt = toks(8, 1);
        let mut a = BlockTable::default();
        m.start(&mut a, &prompt);
        m.ensure_slots(&mut a, 0, 8).unwrap();
        m.commit(&mut a, &prompt, 8);
        let mut b = BlockTable::default();
        assert_eq!(m.start(&mut b, &prompt), 4);
    }

    #[test]
    fn eviction_drops_cache_entry() {
        let mut m = BlockManager::new(2, 4);
        let prompt = toks(8, 1);
        let mut a = BlockTable::default();
        m.ensure_slots(&mut a, 0, 8).unwrap();
        m.commit(&mut a, &prompt, 8);
        m.free(&mut a);
        let mut b = BlockTable::default();
        m.ensure_slots(&mut b, 0, 8).unwrap();
        assert_eq!(m.cached_prefix_len(&prompt), 0);
        m.check_invariants().unwrap();
    }

    #[test]
    fn copy_on_write_for_shared_partial_block() {
        let mut m = BlockManager::new(8, 4);
        let mut a = BlockTable::default();
        m.ensure_slots(&mut a, 0, 6).unwrap();
        let mut b = m.fork(&a);
        assert_eq!(m.ref_count(a.blocks()[1]), 2);
        let copy = m.ensure_slots(&mut a, 6, 7).unwrap().expect("copy");
        assert_eq!(copy.src, b.blocks()[1]);
        assert_ne!(a.blocks()[1], b.blocks()[1]);
        assert_eq!(m.ref_count(b.blocks()[1]), 1);
        // The other writer now owns its block alone: no copy.
        assert_eq!(m.ensure_slots(&mut b, 6, 7).unwrap(), None);
        m.free(&mut a);
        m.free(&mut b);
        assert_eq!(m.num_free_blocks(), 8);
        m.check_invariants().unwrap();
    }

    #[test]
    fn cache_events_track_store_and_evict() {
        let mut m = BlockManager::new(2, 4);
        m.record_cache_events();
        let prompt = toks(8, 1);
        let mut a = BlockTable::default();
        m.ensure_slots(&mut a, 0, 8).unwrap();
        m.commit(&mut a, &prompt, 8);
        m.free(&mut a);
        m.ensure_slots(&mut a, 0, 4).unwrap();
        let mut ev = Vec::new();
        m.drain_cache_events(&mut ev);
        let h0 = block_hash(ROOT_HASH, &prompt[..4]);
        let h1 = block_hash(h0, &prompt[4..]);
        // Freed tail first, so the tail block is reused (evicted) first.
        assert_eq!(
            ev,
            vec![
                CacheEvent::Stored(h0),
                CacheEvent::Stored(h1),
                CacheEvent::Evicted(h1)
            ]
        );
    }

    /// The hash chain a router computes for a prompt, without a manager.
    #[test]
    fn prefix_hashes_match_committed_blocks() {
        let prompt = toks(9, 3);
        let hashes = prefix_hashes(&prompt, 4);
        assert_eq!(hashes.len(), 2);
        assert_eq!(hashes[0], block_hash(ROOT_HASH, &prompt[..4]));
        assert_eq!(hashes[1], block_hash(hashes[0], &prompt[4..8]));
    }

    #[test]
    fn hash_depends_on_prefix() {
        let x = block_hash(ROOT_HASH, &[1, 2, 3, 4]);
        let y = block_hash(block_hash(ROOT_HASH, &[9, 9, 9, 9]), &[1, 2, 3, 4]);
        assert_ne!(x, y);
        assert_ne!(
            block_hash(ROOT_HASH, &[1, 2]),
            block_hash(ROOT_HASH, &[2, 1])
        );
    }
}
