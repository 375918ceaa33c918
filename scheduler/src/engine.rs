//! The per-device engine: iteration-level continuous batching with chunked
//! prefill over a paged KV cache.
//!
//! # Contract
//! A driver alternates [`Engine::schedule`] (plan the next step) and
//! [`Engine::complete`] (apply what the backend returned). Time comes in as
//! an argument; the engine never sleeps, spawns or reads a clock, so the live
//! server and the simulator drive identical code.
//!
//! # Policy
//! Each sequence has tokens computed vs tokens known (prompt + generated);
//! a step spends a token budget (`max_batched_tokens`) closing that gap:
//! 1. running sequences first, in arrival order: decodes take one token, an
//!    unfinished prefill takes the rest of its prompt or what the budget
//!    leaves (chunked prefill);
//! 2. then waiting sequences are admitted in FCFS order while the budget,
//!    `max_num_seqs` and free KV blocks allow, reusing cached prefix blocks.
//!
//! When a running sequence needs a block and none is free, the most recently
//! arrived running sequence is preempted by recompute: its blocks are freed
//! and it goes back to the front of the waiting queue with its generated
//! tokens, to be prefilled again later. No admission happens in a step that
//! preempted. `add` clamps `max_tokens` so a sequence alone always fits the
//! pool, so the oldest sequence can always make progress: no deadlock.
//!
//! # Multi-step decode
//! [`Engine::run_decode_steps`] runs a stretch of decode-only steps in one
//! call for drivers whose backend is a pure function of the plan (the
//! simulator): step times and tokens come from the caller's closures, and
//! the stretch ends before any step that would admit, preempt, copy a block
//! or finish a sequence, so those always go through `schedule`/`complete`.
//! The result (sequence state, KV blocks, tokens and their times) is exactly
//! what the same steps run one at a time would leave.
//!
//! # SLO-budgeted steps
//! With [`EngineConfig::step_time_budget`] set (the drivers set it to the
//! TPOT target scaled by its percentile headroom when an SLO is
//! configured), a step's prefill tokens are capped by [`budgeted_chunk`]:
//! the largest chunk that keeps the step's predicted time (this device's
//! cost model, over the step's decodes) within the budget, so running
//! sequences never stall behind a long prefill; prefills pay instead, in
//! more, smaller chunks. The cap is shared by every prefill of the step and
//! never falls below [`MIN_BUDGETED_CHUNK`], so waiting prompts progress.
//!
//! # Tunables ([`EngineConfig`])
//! `max_num_seqs`, `max_batched_tokens`, `max_model_len`, `enable_prefix_caching`,
//! `step_time_budget`.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use switchyard_backends::{
    BlockCopy, CostModel, SamplingParams, ScheduledSeq, SeqId, SeqWork, StepOutput, StepPlan,
    StepShape,
};

use crate::kv::{BlockManager, BlockTable, PrefixStats};

/// Engine limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Most sequences running at once.
    pub max_num_seqs: u32,
    /// Token budget of one step (decodes + prefill chunks).
    pub max_batched_tokens: u32,
    /// Longest sequence (prompt + output), tokens.
    pub max_model_len: u32,
    /// Reuse cached KV blocks of identical prompt prefixes.
    pub enable_prefix_caching: bool,
    /// SLO-budgeted steps: the prefill tokens of a step are capped so its
    /// predicted time stays within this budget (see [`budgeted_chunk`]).
    pub step_time_budget: Option<Duration>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_num_seqs: 256,
            max_batched_tokens: 2048,
            max_model_len: 32_768,
            enable_prefix_caching: true,
            step_time_budget: None,
        }
    }
}

/// Fewest prefill tokens a step-time budget leaves a step, so prefills
/// always progress even when the decodes alone exceed the budget.
pub const MIN_BUDGETED_CHUNK: u32 = 32;

/// The largest prefill chunk of at most `max` tokens after `context` cached
/// ones that keeps a step of `base` plus the chunk within `budget` by
/// `cost` (Sarathi-Serve's stall-free batching); at least
/// [`MIN_BUDGETED_CHUNK`] (or `max`, if smaller). Step time is monotone in
/// the chunk, so a bisection over ~12 prices finds it.
pub fn budgeted_chunk(
    cost: &CostModel,
    base: StepShape,
    context: u32,
    max: u32,
    budget: Duration,
) -> u32 {
    let budget_s = budget.as_secs_f64();
    let time = |q: u32| {
        let mut s = base;
        s.push(SeqWork {
            new_tokens: q,
            context,
        });
        cost.step_cost(&s).seconds()
    };
    let floor = MIN_BUDGETED_CHUNK.min(max);
    if max == 0 || time(max) <= budget_s {
        return max;
    }
    if time(floor) > budget_s {
        return floor;
    }
    // time(lo) ≤ budget < time(hi).
    let (mut lo, mut hi) = (floor, max);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if time(mid) <= budget_s {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// A request as the engine sees it: token ids and stop rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Caller-assigned id, unique among live sequences of this engine.
    pub id: SeqId,
    /// Prompt token ids (non-empty).
    pub prompt: Vec<u32>,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// Sampling parameters.
    pub sampling: SamplingParams,
    /// Keep generating past end-of-sequence tokens.
    pub ignore_eos: bool,
    /// Extra token ids that stop generation.
    pub stop_token_ids: Vec<u32>,
}

impl Request {
    /// A greedy request with no stop tokens.
    pub fn new(id: SeqId, prompt: Vec<u32>, max_tokens: u32) -> Self {
        Self {
            id,
            prompt,
            max_tokens,
            sampling: SamplingParams::default(),
            ignore_eos: false,
            stop_token_ids: Vec::new(),
        }
    }
}

/// Why a sequence finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// Reached `max_tokens` or the model length.
    Length,
    /// Generated an end-of-sequence or stop token.
    Stop,
    /// Aborted by the caller.
    Abort,
}

/// Timings and counts of a finished sequence.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SeqStats {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Generated tokens.
    pub output_tokens: u32,
    /// Prompt tokens served from the prefix cache at first admission.
    pub cached_tokens: u32,
    /// Times the sequence was preempted.
    pub preemptions: u32,
    /// When it was added.
    pub arrival: Duration,
    /// When it was first scheduled.
    pub first_scheduled: Option<Duration>,
    /// When its first token was produced.
    pub first_token: Option<Duration>,
    /// When it finished.
    pub finished: Duration,
}

/// What happened to sequences during a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A token was generated (`index` counts from 0 per sequence).
    Token {
        /// Sequence.
        seq: SeqId,
        /// Token id.
        token: u32,
        /// Position among the generated tokens.
        index: u32,
    },
    /// The sequence finished and released its blocks.
    Finished {
        /// Sequence.
        seq: SeqId,
        /// Why.
        reason: FinishReason,
        /// Timings and counts (boxed: token events are the common case and stay small).
        stats: Box<SeqStats>,
    },
    /// The sequence was preempted and will be recomputed.
    Preempted {
        /// Sequence.
        seq: SeqId,
    },
}

/// Why the engine refused a request or a step output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The prompt is empty.
    #[error("prompt is empty")]
    EmptyPrompt,
    /// The prompt cannot fit this device even alone.
    #[error("prompt of {prompt} tokens does not fit: the device holds at most {limit} tokens per sequence")]
    PromptTooLong {
        /// Prompt tokens.
        prompt: u32,
        /// Most tokens one sequence may hold here.
        limit: u32,
    },
    /// A live sequence already has this id.
    #[error("duplicate sequence id {0}")]
    DuplicateId(SeqId),
    /// `complete` was called without a step in flight.
    #[error("no step in flight")]
    NoStepInFlight,
    /// The backend returned a different number of outputs than sequences scheduled.
    #[error("step output has {got} entries for {expected} scheduled sequences")]
    OutputMismatch {
        /// Scheduled sequences.
        expected: usize,
        /// Outputs received.
        got: usize,
    },
}

/// What [`Engine::abort`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum AbortOutcome {
    /// The sequence finished now; here is its `Finished` event.
    Finished(Event),
    /// The sequence is in the step in flight; `complete` reports it.
    Pending,
    /// No live sequence has that id.
    NotFound,
}

/// What [`Engine::run_decode_steps`] ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecodeRun {
    /// Steps run.
    pub steps: u32,
    /// When the last step ended (the start time if none ran).
    pub end: Duration,
    /// Sum of the steps' times.
    pub busy: Duration,
}

/// What the router sees of an engine.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Load {
    /// Sequences waiting for admission.
    pub waiting: u32,
    /// Sequences admitted.
    pub running: u32,
    /// Prompt tokens not yet computed, waiting and running.
    pub queued_prefill_tokens: u64,
    /// Output tokens still to generate, upper bound from `max_tokens`.
    pub outstanding_decode_tokens: u64,
    /// Tokens held in the running sequences' caches.
    pub running_context_tokens: u64,
    /// Free KV blocks.
    pub free_blocks: u32,
    /// KV blocks in the pool.
    pub total_blocks: u32,
    /// Predicted wait before a new request's first prefill step.
    pub predicted_queue_delay: Duration,
}

#[derive(Debug, Clone)]
struct Seq {
    id: SeqId,
    tokens: Vec<u32>,
    prompt_len: u32,
    max_tokens: u32,
    computed: u32,
    table: BlockTable,
    sampling: SamplingParams,
    ignore_eos: bool,
    stop_token_ids: Vec<u32>,
    order: u64,
    aborted: bool,
    finished: Option<FinishReason>,
    stats: SeqStats,
}

impl Seq {
    fn output_len(&self) -> u32 {
        self.tokens.len() as u32 - self.prompt_len
    }
}

/// One device's continuous-batching scheduler.
#[derive(Debug, Clone)]
pub struct Engine {
    config: EngineConfig,
    cost: CostModel,
    eos: Vec<u32>,
    blocks: BlockManager,
    slots: Vec<Option<Seq>>,
    free_slots: Vec<usize>,
    index: HashMap<SeqId, usize>,
    waiting: VecDeque<usize>,
    running: Vec<usize>,
    next_order: u64,
    copies: Vec<BlockCopy>,
    /// The step in flight: (slot, new tokens, samples).
    scheduled: Vec<(usize, u32, bool)>,
    in_flight: bool,
    pending: Vec<Event>,
    preemptions: u64,
    /// Tokens of the next multi-step decode step, before they are applied.
    decode_tokens: Vec<u32>,
}

impl Engine {
    /// An engine over a KV pool of `kv_blocks` blocks of `block_size` tokens.
    pub fn new(config: EngineConfig, cost: CostModel, kv_blocks: u32, block_size: u32) -> Self {
        let eos = cost.model().eos_token_ids.clone();
        Self {
            config,
            cost,
            eos,
            blocks: BlockManager::new(kv_blocks, block_size),
            slots: Vec::new(),
            free_slots: Vec::new(),
            index: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            next_order: 0,
            copies: Vec::new(),
            scheduled: Vec::new(),
            in_flight: false,
            pending: Vec::new(),
            preemptions: 0,
            decode_tokens: Vec::new(),
        }
    }

    /// The engine's limits.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The cost model of this engine's device.
    pub fn cost_model(&self) -> &CostModel {
        &self.cost
    }

    /// Replaces the cost model (after a profile reload).
    pub fn set_cost_model(&mut self, cost: CostModel) {
        self.cost = cost;
    }

    /// The KV block manager (read-only: for metrics and prefix lookups).
    pub fn blocks(&self) -> &BlockManager {
        &self.blocks
    }

    /// The KV block manager, to turn on and drain prefix-cache events.
    pub fn blocks_mut(&mut self) -> &mut BlockManager {
        &mut self.blocks
    }

    /// Most tokens one sequence can hold on this engine.
    pub fn max_seq_tokens(&self) -> u32 {
        let pool = self
            .blocks
            .num_blocks()
            .saturating_mul(self.blocks.block_size());
        pool.min(self.config.max_model_len)
    }

    /// Queues a request. `max_tokens` is clamped so the sequence fits alone.
    pub fn add(&mut self, req: Request, now: Duration) -> Result<(), EngineError> {
        if req.prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        let limit = self.max_seq_tokens();
        let prompt = req.prompt.len().min(u32::MAX as usize) as u32;
        if prompt >= limit {
            return Err(EngineError::PromptTooLong { prompt, limit });
        }
        if self.index.contains_key(&req.id) {
            return Err(EngineError::DuplicateId(req.id));
        }
        let seq = Seq {
            id: req.id,
            prompt_len: prompt,
            max_tokens: req.max_tokens.min(limit - prompt),
            tokens: req.prompt,
            computed: 0,
            table: BlockTable::default(),
            sampling: req.sampling,
            ignore_eos: req.ignore_eos,
            stop_token_ids: req.stop_token_ids,
            order: self.next_order,
            aborted: false,
            finished: None,
            stats: SeqStats {
                prompt_tokens: prompt,
                arrival: now,
                ..SeqStats::default()
            },
        };
        self.next_order += 1;
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.slots[s] = Some(seq);
                s
            }
            None => {
                self.slots.push(Some(seq));
                self.slots.len() - 1
            }
        };
        self.index.insert(req.id, slot);
        self.waiting.push_back(slot);
        Ok(())
    }

    /// Aborts a sequence. One in the step in flight finishes when that step
    /// completes (its `Finished` event comes from `complete`); any other
    /// finishes now and its event is returned here.
    pub fn abort(&mut self, id: SeqId, now: Duration) -> AbortOutcome {
        let Some(&slot) = self.index.get(&id) else {
            return AbortOutcome::NotFound;
        };
        if self.in_flight && self.scheduled.iter().any(|&(s, _, _)| s == slot) {
            if let Some(seq) = self.slots[slot].as_mut() {
                seq.aborted = true;
            }
            return AbortOutcome::Pending;
        }
        self.waiting.retain(|&s| s != slot);
        self.running.retain(|&s| s != slot);
        AbortOutcome::Finished(self.finish(slot, FinishReason::Abort, now))
    }

    /// Whether any sequence is waiting or running.
    pub fn has_work(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }

    /// Live sequences (waiting + running).
    pub fn num_seqs(&self) -> usize {
        self.index.len()
    }

    /// Preemptions since creation.
    pub fn preemptions(&self) -> u64 {
        self.preemptions
    }

    /// Prefix-cache counters since creation.
    pub fn prefix_stats(&self) -> PrefixStats {
        self.blocks.prefix_stats()
    }

    fn seq(&self, slot: usize) -> &Seq {
        // Slots in queues always hold a sequence; see `finish`.
        self.slots[slot]
            .as_ref()
            .expect("queued slot holds a sequence")
    }

    /// Plans the next step, or `None` when there is nothing to run (or a step is in flight).
    pub fn schedule(&mut self, now: Duration) -> Option<StepPlan<'_>> {
        if self.in_flight {
            return None;
        }
        self.copies.clear();
        self.scheduled.clear();
        let mut budget = self.config.max_batched_tokens;
        let (mut prefill_budget, decodes) = self.prefill_budget();
        let mut preempted = false;
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let slot = self.running[i];
            let left = {
                let s = self.seq(slot);
                s.tokens.len() as u32 - s.computed
            };
            // A running prefill always gets a token, so it cannot stall.
            let n = if left > 1 {
                let n = left.min(budget).min(prefill_budget.max(1));
                prefill_budget = prefill_budget.saturating_sub(n);
                n
            } else {
                left.min(budget)
            };
            // Preempt the newest running sequences until this one fits. The
            // newest sits at the end of `running`, at or after `i`, so
            // nothing already in the plan is ever a victim.
            let fits = loop {
                if self.try_reserve(slot, n) {
                    break true;
                }
                let Some(&victim) = self.running.last() else {
                    break false;
                };
                self.preempt(victim);
                preempted = true;
                if victim == slot {
                    break false;
                }
            };
            if !fits {
                break;
            }
            self.push_plan(slot, n, now);
            budget -= n;
            i += 1;
        }
        while !preempted
            && budget > 0
            && prefill_budget > 0
            && (self.running.len() as u32) < self.config.max_num_seqs
        {
            let Some(&slot) = self.waiting.front() else {
                break;
            };
            let Some(n) = self.admit(slot, budget.min(prefill_budget), decodes) else {
                break;
            };
            self.waiting.pop_front();
            self.insert_running(slot);
            self.push_plan(slot, n, now);
            budget -= n;
            prefill_budget = prefill_budget.saturating_sub(n);
        }
        if self.scheduled.is_empty() {
            return None;
        }
        self.in_flight = true;
        Some(self.build_plan())
    }

    /// Prefill tokens the next step may carry: the whole token budget, or
    /// with a step-time budget the [`budgeted_chunk`] over the running
    /// decodes (priced at the first running prefill's context); and those
    /// decodes, for pricing an admission once its cached prefix is known.
    fn prefill_budget(&self) -> (u32, StepShape) {
        let Some(limit) = self.config.step_time_budget else {
            return (u32::MAX, StepShape::default());
        };
        let (mut decodes, mut context, mut first_prefill) = (0u32, 0u64, None);
        for &slot in &self.running {
            let s = self.seq(slot);
            if s.tokens.len() as u32 - s.computed > 1 {
                first_prefill.get_or_insert(s.computed);
            } else {
                decodes += 1;
                context += u64::from(s.computed);
            }
        }
        let max = self.config.max_batched_tokens.saturating_sub(decodes);
        let shape = StepShape::decodes(decodes, context);
        let chunk = budgeted_chunk(&self.cost, shape, first_prefill.unwrap_or(0), max, limit);
        (chunk, shape)
    }

    /// The plan of the step just scheduled, borrowing tokens and tables.
    fn build_plan(&self) -> StepPlan<'_> {
        let seqs = self
            .scheduled
            .iter()
            .filter_map(|&(slot, n, sample)| {
                let seq = self.slots[slot].as_ref()?;
                let start = seq.computed;
                Some(ScheduledSeq {
                    seq: seq.id,
                    start_pos: start,
                    tokens: &seq.tokens[start as usize..(start + n) as usize],
                    block_table: seq.table.blocks(),
                    sample,
                    sampling: seq.sampling,
                })
            })
            .collect();
        StepPlan {
            seqs,
            copies: self.copies.clone(),
        }
    }

    /// Grows `slot`'s table to cover `n` more tokens; records a copy-on-write if one is needed.
    fn try_reserve(&mut self, slot: usize, n: u32) -> bool {
        let Some(seq) = self.slots[slot].as_mut() else {
            return false;
        };
        match self
            .blocks
            .ensure_slots(&mut seq.table, seq.computed, seq.computed + n)
        {
            Ok(copy) => {
                self.copies.extend(copy);
                true
            }
            Err(_) => false,
        }
    }

    /// Frees a running sequence's blocks and puts it at the front of the queue.
    fn preempt(&mut self, slot: usize) {
        self.running.retain(|&s| s != slot);
        let Some(seq) = self.slots[slot].as_mut() else {
            return;
        };
        self.blocks.free(&mut seq.table);
        seq.computed = 0;
        seq.stats.preemptions += 1;
        self.preemptions += 1;
        self.pending.push(Event::Preempted { seq: seq.id });
        self.waiting.push_front(slot);
    }

    /// Tries to give the waiting sequence at `slot` its first chunk; returns the chunk size.
    fn admit(&mut self, slot: usize, budget: u32, decodes: StepShape) -> Option<u32> {
        let watermark = self.blocks.num_blocks() / 100;
        let prefix = self.config.enable_prefix_caching;
        let seq = self.slots[slot].as_mut()?;
        if prefix && seq.table.is_empty() {
            seq.computed = self.blocks.start(&mut seq.table, &seq.tokens);
            if seq.stats.first_scheduled.is_none() {
                seq.stats.cached_tokens = seq.computed;
            }
        }
        let mut n = (seq.tokens.len() as u32 - seq.computed).min(budget);
        if let Some(limit) = self.config.step_time_budget {
            // Priced again now that the cached prefix (its context) is known.
            n = budgeted_chunk(&self.cost, decodes, seq.computed, n, limit).max(1);
        }
        let need = self
            .blocks
            .blocks_needed(&seq.table, seq.computed, seq.computed + n);
        let fits = need + watermark <= self.blocks.num_free_blocks();
        if fits {
            // The table grows a block at a time up to the sequence's longest
            // length: one allocation instead of a doubling series.
            let longest = seq.prompt_len.saturating_add(seq.max_tokens);
            seq.table
                .reserve_total(self.blocks.blocks_for(longest) as usize);
        }
        let ok = fits
            && self
                .blocks
                .ensure_slots(&mut seq.table, seq.computed, seq.computed + n)
                .map(|copy| self.copies.extend(copy))
                .is_ok();
        if ok {
            Some(n)
        } else {
            self.blocks.free(&mut seq.table);
            seq.computed = 0;
            None
        }
    }

    /// Keeps `running` in arrival order, so the newest is always last.
    fn insert_running(&mut self, slot: usize) {
        let order = self.seq(slot).order;
        let at = self
            .running
            .partition_point(|&s| self.slots[s].as_ref().is_some_and(|q| q.order < order));
        self.running.insert(at, slot);
    }

    fn push_plan(&mut self, slot: usize, n: u32, now: Duration) {
        let Some(seq) = self.slots[slot].as_mut() else {
            return;
        };
        seq.stats.first_scheduled.get_or_insert(now);
        let sample = (seq.computed + n) as usize == seq.tokens.len();
        self.scheduled.push((slot, n, sample));
    }

    /// Applies a step's output: advances sequences, appends sampled tokens,
    /// finishes sequences that hit a stop condition.
    pub fn complete(&mut self, out: &StepOutput, now: Duration) -> Result<Vec<Event>, EngineError> {
        if !self.in_flight {
            return Err(EngineError::NoStepInFlight);
        }
        self.in_flight = false;
        let sample_mismatch = self
            .scheduled
            .iter()
            .zip(&out.tokens)
            .any(|(&(_, _, sample), t)| sample != t.is_some());
        if out.tokens.len() != self.scheduled.len() || sample_mismatch {
            return Err(EngineError::OutputMismatch {
                expected: self.scheduled.len(),
                got: out.tokens.iter().filter(|t| t.is_some()).count(),
            });
        }
        let mut events = Vec::with_capacity(self.pending.len() + self.scheduled.len() * 2);
        events.append(&mut self.pending);
        let limit = self.max_seq_tokens();
        let mut any_finished = false;
        for k in 0..self.scheduled.len() {
            let (slot, n, _) = self.scheduled[k];
            let Some(seq) = self.slots[slot].as_mut() else {
                continue;
            };
            if seq.aborted {
                seq.finished = Some(FinishReason::Abort);
                any_finished = true;
                continue;
            }
            seq.computed += n;
            if self.config.enable_prefix_caching {
                self.blocks
                    .commit(&mut seq.table, &seq.tokens, seq.computed);
            }
            let Some(token) = out.tokens[k] else {
                continue;
            };
            seq.tokens.push(token);
            let index = seq.output_len() - 1;
            seq.stats.first_token.get_or_insert(now);
            events.push(Event::Token {
                seq: seq.id,
                token,
                index,
            });
            let stop = (!seq.ignore_eos && self.eos.contains(&token))
                || seq.stop_token_ids.contains(&token);
            if stop {
                seq.finished = Some(FinishReason::Stop);
            } else if index + 1 >= seq.max_tokens || seq.tokens.len() as u32 >= limit {
                seq.finished = Some(FinishReason::Length);
            }
            any_finished |= seq.finished.is_some();
        }
        if any_finished {
            let slots = &self.slots;
            self.running
                .retain(|&s| slots[s].as_ref().is_some_and(|q| q.finished.is_none()));
            for k in 0..self.scheduled.len() {
                let slot = self.scheduled[k].0;
                let reason = self.slots[slot].as_ref().and_then(|q| q.finished);
                if let Some(reason) = reason {
                    events.push(self.finish(slot, reason, now));
                }
            }
        }
        Ok(events)
    }

    /// Runs consecutive decode-only steps starting at `now`, each exactly as
    /// `schedule` → execute → `complete` would, without building plans or
    /// events. `step_time` prices a step (the backend's time for a plan of
    /// that shape) and `next_token(prev, pos)` is the token the backend
    /// samples after `prev` at position `pos`: valid only for backends whose
    /// output is a pure function of the plan, such as `SimBackend`.
    ///
    /// Runs nothing unless no step is in flight, nothing waits, and every
    /// running sequence is decoding within the token budget. Stops before a
    /// step that would end after `until`, finish a sequence (length, model
    /// length, end-of-sequence or stop token), need a block the pool does
    /// not have (`schedule` would preempt) or copy a shared block.
    /// `on_token(end, event)` reports each generated token as the
    /// [`Event::Token`] `complete` would, in the same order.
    pub fn run_decode_steps(
        &mut self,
        now: Duration,
        until: Duration,
        mut step_time: impl FnMut(&StepShape) -> Duration,
        mut next_token: impl FnMut(u32, u32) -> u32,
        mut on_token: impl FnMut(Duration, Event),
    ) -> DecodeRun {
        let mut run = DecodeRun {
            steps: 0,
            end: now,
            busy: Duration::ZERO,
        };
        if self.in_flight
            || !self.waiting.is_empty()
            || !self.pending.is_empty()
            || self.running.is_empty()
            || self.running.len() as u64 > u64::from(self.config.max_batched_tokens)
        {
            return run;
        }
        let limit = self.max_seq_tokens();
        // Steps before some sequence reaches its length limit.
        let mut safe = u32::MAX;
        let mut context = 0u64;
        for &slot in &self.running {
            let s = self.seq(slot);
            let len = s.tokens.len() as u32;
            if len != s.computed + 1 || s.aborted || s.finished.is_some() {
                return run;
            }
            safe = safe
                .min(s.max_tokens.saturating_sub(s.output_len() + 1))
                .min(limit.saturating_sub(len + 1));
            context += u64::from(s.computed);
        }
        let Self {
            running,
            slots,
            blocks,
            eos,
            decode_tokens,
            config,
            ..
        } = self;
        let batch = running.len() as u32;
        let bs = blocks.block_size();
        let prefix = config.enable_prefix_caching;
        while run.steps < safe {
            // A decode of `batch` sequences: every term of the shape is an
            // integer sum, so this equals pushing each sequence's work.
            let shape = StepShape::decodes(batch, context);
            let elapsed = step_time(&shape);
            let end = run.end + elapsed;
            if end > until {
                return run;
            }
            let mut need = 0u32;
            decode_tokens.clear();
            for &slot in running.iter() {
                let Some(s) = slots[slot].as_ref() else {
                    return run;
                };
                let c = s.computed;
                // Only prefix caching shares blocks (the engine never forks).
                if prefix && blocks.needs_copy(&s.table, c, c + 1) {
                    return run;
                }
                need += u32::from(c + 1 > s.table.len() as u32 * bs);
                let token = next_token(s.tokens.last().copied().unwrap_or(0), c + 1);
                if (!s.ignore_eos && eos.contains(&token)) || s.stop_token_ids.contains(&token) {
                    return run;
                }
                decode_tokens.push(token);
            }
            if need > blocks.num_free_blocks() {
                return run;
            }
            // Reserve first, then apply, as `schedule` and `complete` do;
            // `ensure_slots` is a no-op for sequences with room left.
            if need > 0 {
                for &slot in running.iter() {
                    if let Some(s) = slots[slot].as_mut() {
                        let c = s.computed;
                        if c + 1 > s.table.len() as u32 * bs {
                            // Checked above: enough free blocks and no copy.
                            let _ = blocks.ensure_slots(&mut s.table, c, c + 1);
                        }
                    }
                }
            }
            for (&slot, &token) in running.iter().zip(decode_tokens.iter()) {
                let Some(s) = slots[slot].as_mut() else {
                    continue;
                };
                s.stats.first_scheduled.get_or_insert(run.end);
                s.computed += 1;
                if prefix {
                    blocks.commit(&mut s.table, &s.tokens, s.computed);
                }
                s.tokens.push(token);
                s.stats.first_token.get_or_insert(end);
                on_token(
                    end,
                    Event::Token {
                        seq: s.id,
                        token,
                        index: s.output_len() - 1,
                    },
                );
            }
            context += u64::from(batch);
            run.steps += 1;
            run.busy += elapsed;
            run.end = end;
        }
        run
    }

    /// Abandons the step in flight (the backend failed it): nothing advances,
    /// and the same work is planned again by the next `schedule`.
    pub fn fail_step(&mut self) {
        self.in_flight = false;
    }

    /// Removes a sequence, releasing its blocks.
    fn finish(&mut self, slot: usize, reason: FinishReason, now: Duration) -> Event {
        let mut seq = self.slots[slot].take().expect("finishing a live slot");
        self.blocks.free(&mut seq.table);
        self.index.remove(&seq.id);
        self.free_slots.push(slot);
        seq.stats.output_tokens = seq.output_len();
        seq.stats.finished = now;
        Event::Finished {
            seq: seq.id,
            reason,
            stats: Box::new(seq.stats),
        }
    }

    /// Removes every live sequence and returns each as a request that
    /// continues where it stopped (prompt + generated tokens so far, the
    /// remaining `max_tokens`), so a driver can re-route them elsewhere.
    pub fn drain(&mut self) -> Vec<(Request, u32)> {
        self.in_flight = false;
        self.waiting.clear();
        self.running.clear();
        self.scheduled.clear();
        self.pending.clear();
        self.index.clear();
        self.free_slots.clear();
        let mut out = Vec::new();
        let mut slots = std::mem::take(&mut self.slots);
        slots.sort_by_key(|s| s.as_ref().map(|q| q.order));
        for mut seq in slots.into_iter().flatten() {
            self.blocks.free(&mut seq.table);
            let generated = seq.output_len();
            out.push((
                Request {
                    id: seq.id,
                    max_tokens: seq.max_tokens - generated,
                    prompt: seq.tokens,
                    sampling: seq.sampling,
                    ignore_eos: seq.ignore_eos,
                    stop_token_ids: seq.stop_token_ids,
                },
                generated,
            ));
        }
        out
    }

    /// A snapshot for the router. O(live sequences).
    pub fn load(&self) -> Load {
        let mut l = Load {
            waiting: self.waiting.len() as u32,
            running: self.running.len() as u32,
            free_blocks: self.blocks.num_free_blocks(),
            total_blocks: self.blocks.num_blocks(),
            ..Load::default()
        };
        for seq in self.slots.iter().flatten() {
            let left = seq.tokens.len() as u32 - seq.computed;
            if left > 1 {
                l.queued_prefill_tokens += u64::from(left);
            }
            let remaining = seq.max_tokens.saturating_sub(seq.output_len());
            l.outstanding_decode_tokens += u64::from(remaining);
        }
        for &slot in &self.running {
            l.running_context_tokens += u64::from(self.seq(slot).computed);
        }
        l.predicted_queue_delay = self.predict_queue_delay(&l);
        l
    }

    /// Remaining output tokens of running sequence `slot`.
    fn remaining(&self, slot: usize) -> u32 {
        let s = self.seq(slot);
        s.max_tokens.saturating_sub(s.output_len())
    }

    /// The `k`-th smallest remaining output (1-based, `1 ≤ k ≤ running`),
    /// by bisection over values: O(running · log max), no allocation.
    fn kth_smallest_remaining(&self, k: usize) -> u32 {
        let (mut lo, mut hi) = (0u32, 0u32);
        for &slot in &self.running {
            hi = hi.max(self.remaining(slot));
        }
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let at_most = self
                .running
                .iter()
                .filter(|&&slot| self.remaining(slot) <= mid)
                .count();
            if at_most >= k {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }

    /// Time until a new arrival's first prefill chunk: the prefill backlog
    /// drains at the budget left after decodes, and when the batch is full
    /// the arrival needs a free slot after every waiting sequence ahead of
    /// it: `w + 1` finishes for `w` waiting, i.e. the `(w+1)`-th smallest
    /// remaining output (plus a whole batch's longest remaining output per
    /// full round of the batch beyond that).
    fn predict_queue_delay(&self, l: &Load) -> Duration {
        let decodes = l.running.min(self.config.max_batched_tokens);
        let mut chunk = (self.config.max_batched_tokens - decodes).max(1);
        let mut shape = StepShape::decodes(l.running, l.running_context_tokens);
        if let Some(limit) = self.config.step_time_budget {
            chunk = budgeted_chunk(&self.cost, shape, 0, chunk, limit).max(1);
        }
        let mut delay = Duration::ZERO;
        if l.queued_prefill_tokens > 0 {
            let steps = l.queued_prefill_tokens.div_ceil(u64::from(chunk));
            let step_chunk = l.queued_prefill_tokens.min(u64::from(chunk)) as u32;
            shape.push(SeqWork {
                new_tokens: step_chunk,
                context: 0,
            });
            delay += self.cost.step_time(&shape) * steps.min(u64::from(u32::MAX)) as u32;
        }
        if l.running >= self.config.max_num_seqs && !self.running.is_empty() {
            let running = self.running.len();
            let ahead = self.waiting.len();
            let rounds = (ahead / running) as u32;
            let mut steps = self.kth_smallest_remaining(ahead % running + 1);
            if rounds > 0 {
                let longest = self.kth_smallest_remaining(running);
                steps = steps.saturating_add(longest.saturating_mul(rounds));
            }
            let step = self
                .cost
                .decode_step_time(l.running, l.running_context_tokens);
            delay += step.saturating_mul(steps);
        }
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_backends::{
        Backend, Calibration, DeviceProfile, ModelSpec, SimBackend, SimConfig, Vendor,
    };

    fn cost() -> CostModel {
        let device = DeviceProfile {
            name: "d".into(),
            vendor: Vendor::Nvidia,
            description: "test".into(),
            peak_tflops: 100.0,
            memory_gb: 80.0,
            memory_bandwidth_gbps: 1000.0,
            price_usd_per_hour: 1.0,
            calibration: Calibration {
                compute_efficiency: 0.5,
                bandwidth_efficiency: 0.8,
                kv_bandwidth_efficiency: None,
                step_overhead_us: 100.0,
                per_sequence_overhead_us: 1.0,
                kv_overhead_us_per_mb: 0.0,
                split_mixed_steps: false,
                memory_utilization: 0.9,
                fit_median_rel_error: None,
                fit_max_rel_error: None,
            },
        };
        let model = ModelSpec {
            name: "m".into(),
            description: "test".into(),
            num_layers: 4,
            hidden_size: 256,
            num_attention_heads: 4,
            num_kv_heads: 2,
            head_dim: 64,
            vocab_size: 1000,
            max_context: 4096,
            total_params_b: 0.01,
            active_params_b: 0.01,
            weight_bytes: 2,
            kv_bytes: 2,
            eos_token_ids: vec![0],
            attention: switchyard_backends::AttentionSpec::Gqa,
            moe: None,
        };
        CostModel::new(device, model)
    }

    fn setup(blocks: u32, budget: u32) -> (Engine, SimBackend) {
        let cfg = EngineConfig {
            max_num_seqs: 64,
            max_batched_tokens: budget,
            max_model_len: 4096,
            enable_prefix_caching: true,
            step_time_budget: None,
        };
        let sim = SimBackend::new(
            cost(),
            SimConfig {
                block_size: 16,
                kv_blocks: Some(blocks),
                ..SimConfig::default()
            },
        )
        .unwrap();
        (Engine::new(cfg, cost(), blocks, 16), sim)
    }

    fn prompt(n: u32, salt: u32) -> Vec<u32> {
        (0..n).map(|i| (i * 31 + salt) % 997 + 1).collect()
    }

    /// Runs until idle; returns all events and the number of steps.
    fn run(e: &mut Engine, b: &mut SimBackend) -> (Vec<Event>, u32) {
        let mut now = Duration::ZERO;
        let mut events = Vec::new();
        let mut steps = 0;
        while let Some(plan) = e.schedule(now) {
            let out = b.execute(&plan).unwrap();
            now += out.elapsed;
            events.extend(e.complete(&out, now).unwrap());
            steps += 1;
            assert!(steps < 100_000, "engine does not terminate");
        }
        (events, steps)
    }

    fn outputs(events: &[Event]) -> HashMap<SeqId, Vec<u32>> {
        let mut m: HashMap<SeqId, Vec<u32>> = HashMap::new();
        for ev in events {
            if let Event::Token { seq, token, index } = ev {
                let v = m.entry(*seq).or_default();
                assert_eq!(v.len() as u32, *index);
                v.push(*token);
            }
        }
        m
    }

    /// Runs `e` with eight decoding sequences, then a 3,000-token prompt;
    /// returns the longest step after the prompt arrived and the steps to
    /// its first token.
    fn long_prompt_among_decodes(e: &mut Engine, b: &mut SimBackend) -> (Duration, u32) {
        for i in 0..8 {
            e.add(
                Request::new(SeqId(i), prompt(16, i as u32), 400),
                Duration::ZERO,
            )
            .unwrap();
        }
        let mut now = Duration::ZERO;
        for _ in 0..3 {
            let plan = e.schedule(now).unwrap();
            let out = b.execute(&plan).unwrap();
            now += out.elapsed;
            e.complete(&out, now).unwrap();
        }
        e.add(Request::new(SeqId(99), prompt(3000, 7), 4), now)
            .unwrap();
        let (mut longest, mut steps) = (Duration::ZERO, 0);
        loop {
            let plan = e.schedule(now).unwrap();
            let out = b.execute(&plan).unwrap();
            longest = longest.max(out.elapsed);
            now += out.elapsed;
            steps += 1;
            let events = e.complete(&out, now).unwrap();
            if events
                .iter()
                .any(|ev| matches!(ev, Event::Token { seq: SeqId(99), .. }))
            {
                return (longest, steps);
            }
        }
    }

    #[test]
    fn slo_budgeted_steps_keep_mixed_steps_within_the_budget() {
        let c = cost();
        let decodes = StepShape::decodes(9, 9 * 40);
        let mut with_chunk = decodes;
        with_chunk.push(SeqWork {
            new_tokens: 256,
            context: 0,
        });
        let budget = c.step_time(&with_chunk);
        assert!(c.step_time(&decodes) < budget);
        let (mut plain, mut b) = setup(4096, 2048);
        let (unbudgeted_longest, unbudgeted_steps) = long_prompt_among_decodes(&mut plain, &mut b);
        assert!(
            unbudgeted_longest > budget,
            "{unbudgeted_longest:?} ≤ {budget:?}"
        );
        let (mut e, mut b) = setup(4096, 2048);
        e.config.step_time_budget = Some(budget);
        let (longest, steps) = long_prompt_among_decodes(&mut e, &mut b);
        assert!(longest <= budget, "{longest:?} > {budget:?}");
        // The prompt pays instead: more, smaller chunks.
        assert!(steps > unbudgeted_steps, "{steps} vs {unbudgeted_steps}");
        let chunk = budgeted_chunk(&c, decodes, 0, 2048 - 9, budget);
        assert!((200..=256).contains(&chunk), "{chunk}");
        // Decodes alone over the budget: prefills still get the floor.
        assert_eq!(
            budgeted_chunk(&c, decodes, 0, 2048, Duration::ZERO),
            MIN_BUDGETED_CHUNK
        );
        assert_eq!(budgeted_chunk(&c, decodes, 0, 10, Duration::ZERO), 10);
    }

    #[test]
    fn chunked_prefill_takes_ceil_n_over_b_steps() {
        let (mut e, mut b) = setup(1024, 64);
        e.add(Request::new(SeqId(1), prompt(1000, 0), 1), Duration::ZERO)
            .unwrap();
        let mut prefill_steps = 0;
        let mut now = Duration::ZERO;
        while let Some(plan) = e.schedule(now) {
            assert!(plan.num_tokens() <= 64);
            prefill_steps += 1;
            let out = b.execute(&plan).unwrap();
            now += out.elapsed;
            e.complete(&out, now).unwrap();
        }
        // 1000 tokens at 64 per step: ceil(1000/64) = 16 steps; the token sampled
        // after the last chunk is the single output, so no decode step follows.
        assert_eq!(prefill_steps, 16);
    }

    #[test]
    fn decodes_go_first_and_share_steps_with_prefill() {
        let (mut e, mut b) = setup(1024, 32);
        e.add(Request::new(SeqId(1), prompt(8, 0), 50), Duration::ZERO)
            .unwrap();
        let plan = e.schedule(Duration::ZERO).unwrap();
        let out = b.execute(&plan).unwrap();
        e.complete(&out, Duration::ZERO).unwrap();
        e.add(Request::new(SeqId(2), prompt(100, 1), 5), Duration::ZERO)
            .unwrap();
        let plan = e.schedule(Duration::ZERO).unwrap();
        let seqs = &plan.seqs;
        assert_eq!(seqs[0].seq, SeqId(1));
        assert_eq!(seqs[0].num_new_tokens(), 1);
        assert_eq!(seqs[1].seq, SeqId(2));
        assert_eq!(seqs[1].num_new_tokens(), 31);
    }

    #[test]
    fn kv_pressure_preempts_and_everything_finishes() {
        // 40 blocks of 16 = 640 tokens for 8 sequences wanting 8 * (64 + 100) = 1312.
        let (mut e, mut b) = setup(40, 256);
        for i in 0..8 {
            e.add(
                Request::new(SeqId(i), prompt(64, i as u32 * 7), 100),
                Duration::ZERO,
            )
            .unwrap();
        }
        let (events, _) = run(&mut e, &mut b);
        let preempted = events
            .iter()
            .filter(|ev| matches!(ev, Event::Preempted { .. }))
            .count();
        assert!(preempted > 0, "pool is too small not to preempt");
        let outs = outputs(&events);
        for i in 0..8 {
            assert_eq!(outs[&SeqId(i)].len(), 100, "seq {i}");
        }
        let finished = events
            .iter()
            .filter(|ev| {
                matches!(
                    ev,
                    Event::Finished {
                        reason: FinishReason::Length,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(finished, 8);
        assert_eq!(e.blocks().num_free_blocks(), 40);
        assert_eq!(e.num_seqs(), 0);
        e.blocks().check_invariants().unwrap();
    }

    #[test]
    fn preemption_does_not_change_generated_tokens() {
        let reqs: Vec<Request> = (0..6)
            .map(|i| Request::new(SeqId(i), prompt(50 + i as u32 * 10, i as u32), 60))
            .collect();
        let alone: HashMap<SeqId, Vec<u32>> = reqs
            .iter()
            .map(|r| {
                let (mut e, mut b) = setup(1024, 512);
                e.add(r.clone(), Duration::ZERO).unwrap();
                let (ev, _) = run(&mut e, &mut b);
                (r.id, outputs(&ev).remove(&r.id).unwrap())
            })
            .collect();
        let (mut e, mut b) = setup(24, 64);
        for r in &reqs {
            e.add(r.clone(), Duration::ZERO).unwrap();
        }
        let (ev, _) = run(&mut e, &mut b);
        assert!(e.preemptions() > 0);
        assert_eq!(outputs(&ev), alone);
    }

    #[test]
    fn prefix_cache_skips_cached_blocks_on_repeat() {
        let (mut e, mut b) = setup(256, 4096);
        let p = prompt(100, 3);
        e.add(Request::new(SeqId(1), p.clone(), 1), Duration::ZERO)
            .unwrap();
        run(&mut e, &mut b);
        e.add(Request::new(SeqId(2), p, 1), Duration::ZERO).unwrap();
        let plan = e.schedule(Duration::ZERO).unwrap();
        let s = &plan.seqs[0];
        // 6 full blocks of 16 = 96 tokens cached; only the last 4 are computed.
        assert_eq!(s.start_pos, 96);
        assert_eq!(s.num_new_tokens(), 4);
        let out = b.execute(&plan).unwrap();
        let ev = e.complete(&out, Duration::ZERO).unwrap();
        match ev.last() {
            Some(Event::Finished { stats, .. }) => assert_eq!(stats.cached_tokens, 96),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn prompt_too_long_is_a_typed_error() {
        let (mut e, _) = setup(4, 64);
        let err = e
            .add(Request::new(SeqId(1), prompt(64, 0), 1), Duration::ZERO)
            .unwrap_err();
        assert_eq!(
            err,
            EngineError::PromptTooLong {
                prompt: 64,
                limit: 64
            }
        );
        assert_eq!(
            e.add(Request::new(SeqId(2), vec![], 1), Duration::ZERO),
            Err(EngineError::EmptyPrompt)
        );
    }

    #[test]
    fn max_tokens_clamped_to_fit_alone() {
        let (mut e, mut b) = setup(4, 64);
        e.add(Request::new(SeqId(1), prompt(60, 0), 1000), Duration::ZERO)
            .unwrap();
        let (ev, _) = run(&mut e, &mut b);
        assert_eq!(outputs(&ev)[&SeqId(1)].len(), 4);
    }

    #[test]
    fn stop_conditions() {
        let (mut e, _) = setup(64, 64);
        let mut r = Request::new(SeqId(1), prompt(4, 0), 10);
        r.stop_token_ids = vec![77];
        e.add(r, Duration::ZERO).unwrap();
        e.add(Request::new(SeqId(2), prompt(4, 1), 10), Duration::ZERO)
            .unwrap();
        let mut r = Request::new(SeqId(3), prompt(4, 2), 10);
        r.ignore_eos = true;
        e.add(r, Duration::ZERO).unwrap();
        e.schedule(Duration::ZERO).unwrap();
        // Scripted output: a stop token, EOS (id 0), and EOS that is ignored.
        let out = StepOutput {
            tokens: vec![Some(77), Some(0), Some(0)],
            elapsed: Duration::ZERO,
        };
        let ev = e.complete(&out, Duration::ZERO).unwrap();
        let reasons: Vec<_> = ev
            .iter()
            .filter_map(|x| match x {
                Event::Finished { seq, reason, .. } => Some((*seq, *reason)),
                _ => None,
            })
            .collect();
        assert_eq!(
            reasons,
            vec![
                (SeqId(1), FinishReason::Stop),
                (SeqId(2), FinishReason::Stop)
            ]
        );
        assert_eq!(e.num_seqs(), 1);
    }

    #[test]
    fn abort_frees_blocks_even_in_flight() {
        let (mut e, mut b) = setup(64, 64);
        e.add(Request::new(SeqId(1), prompt(40, 0), 10), Duration::ZERO)
            .unwrap();
        e.add(Request::new(SeqId(2), prompt(40, 1), 10), Duration::ZERO)
            .unwrap();
        let plan = e.schedule(Duration::ZERO).unwrap();
        let out = b.execute(&plan).unwrap();
        assert_eq!(e.abort(SeqId(1), Duration::ZERO), AbortOutcome::Pending);
        let ev = e.complete(&out, Duration::ZERO).unwrap();
        assert!(ev.iter().any(|x| matches!(
            x,
            Event::Finished {
                seq: SeqId(1),
                reason: FinishReason::Abort,
                ..
            }
        )));
        assert!(matches!(
            e.abort(SeqId(2), Duration::ZERO),
            AbortOutcome::Finished(_)
        ));
        assert_eq!(e.abort(SeqId(3), Duration::ZERO), AbortOutcome::NotFound);
        assert_eq!(e.blocks().num_free_blocks(), 64);
        assert!(!e.has_work());
    }

    #[test]
    fn output_mismatch_is_an_error_and_step_is_retried() {
        let (mut e, mut b) = setup(64, 64);
        e.add(Request::new(SeqId(1), prompt(10, 0), 3), Duration::ZERO)
            .unwrap();
        e.schedule(Duration::ZERO).unwrap();
        let bad = StepOutput::default();
        assert!(matches!(
            e.complete(&bad, Duration::ZERO),
            Err(EngineError::OutputMismatch { .. })
        ));
        let (ev, _) = run(&mut e, &mut b);
        assert_eq!(outputs(&ev)[&SeqId(1)].len(), 3);
    }

    #[test]
    fn drain_returns_continuations() {
        let (mut e, mut b) = setup(64, 64);
        e.add(Request::new(SeqId(1), prompt(10, 0), 5), Duration::ZERO)
            .unwrap();
        let plan = e.schedule(Duration::ZERO).unwrap();
        let out = b.execute(&plan).unwrap();
        e.complete(&out, Duration::ZERO).unwrap();
        let drained = e.drain();
        assert_eq!(drained.len(), 1);
        let (req, generated) = &drained[0];
        assert_eq!(*generated, 1);
        assert_eq!(req.prompt.len(), 11);
        assert_eq!(req.max_tokens, 4);
        assert_eq!(e.blocks().num_free_blocks(), 64);
    }

    #[test]
    fn full_batch_delay_waits_for_one_finish_per_sequence_ahead() {
        let cfg = EngineConfig {
            max_num_seqs: 2,
            max_batched_tokens: 256,
            max_model_len: 4096,
            enable_prefix_caching: false,
            step_time_budget: None,
        };
        let (_, mut b) = setup(1024, 256);
        let mut e = Engine::new(cfg, cost(), 1024, 16);
        e.add(Request::new(SeqId(0), prompt(20, 0), 10), Duration::ZERO)
            .unwrap();
        e.add(Request::new(SeqId(1), prompt(20, 1), 30), Duration::ZERO)
            .unwrap();
        let mut now = Duration::ZERO;
        for _ in 0..3 {
            let out = b.execute(&e.schedule(now).unwrap()).unwrap();
            now += out.elapsed;
            e.complete(&out, now).unwrap();
        }
        // Both decoding, 3 tokens out: 7 and 27 left; the batch is full.
        let l = e.load();
        assert_eq!((l.running, l.waiting, l.queued_prefill_tokens), (2, 0, 0));
        let step = cost().decode_step_time(2, l.running_context_tokens);
        assert_eq!(l.predicted_queue_delay, step * 7);
        // One waiting ahead: a newcomer needs both slots to free up.
        e.add(Request::new(SeqId(2), prompt(20, 2), 5), now)
            .unwrap();
        let l = e.load();
        assert!(l.predicted_queue_delay >= step * 27, "{l:?}");
        // As many waiting as slots: a whole round (the longest remaining)
        // before the shortest remaining frees the third slot.
        e.add(Request::new(SeqId(3), prompt(20, 3), 5), now)
            .unwrap();
        assert!(e.load().predicted_queue_delay >= step * (27 + 7));
    }

    #[test]
    fn load_reports_queue_and_predicts_delay() {
        let (mut e, _) = setup(1024, 256);
        assert_eq!(e.load().predicted_queue_delay, Duration::ZERO);
        for i in 0..4 {
            e.add(
                Request::new(SeqId(i), prompt(500, i as u32), 20),
                Duration::ZERO,
            )
            .unwrap();
        }
        let l = e.load();
        assert_eq!(l.waiting, 4);
        assert_eq!(l.queued_prefill_tokens, 2000);
        assert_eq!(l.outstanding_decode_tokens, 80);
        assert!(l.predicted_queue_delay > Duration::ZERO);
    }
}
