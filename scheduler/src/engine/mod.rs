//! The per-device engine: iteration-level continuous batching with chunked
//! prefill over a paged KV cache.
//!
//! # Contract
//! A driver alternates [`Engine::schedule`] (plan the next step) and
//! [`Engine::complete`] (apply what the backend returned). Time comes in as
//! an argument; the engine never sleeps, spawns or reads a clock, so the live
//! server and the simulator drive identical code. The engine prices steps
//! only through a [`StepTimer`] (the device's [`CostModel`] in the server and
//! the simulator; anything from a closure to a constant in tests), for
//! SLO-budgeted steps and [`Load::predicted_queue_delay`]; the end-of-sequence
//! ids it stops on are given at construction ([`Engine::with_timer`]).
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
//! # Parallel sampling
//! [`Engine::add_parallel`] takes a request with `n − 1` more sequence
//! ids (OpenAI `n`). The prompt is admitted once, with seats reserved for
//! all `n` (admission waits until `n` fit under `max_num_seqs`), and
//! prefilled once. In the step that computes its last prompt token, each
//! fork starts as a running sequence whose block table shares the
//! parent's blocks (reference counts, no copy) and whose last prompt token
//! is computed again, so it samples its own first token; the first write
//! into a shared block moves the writer to a private copy
//! (`BlockManager::ensure_slots` returns the copy for the backend). From
//! then on forks are ordinary sequences: preempted, recomputed (with the
//! prompt's full blocks from the prefix cache) and finished on their own.
//! A fork aborted before it starts ends at once; `drain` returns unstarted
//! forks as requests of their own. Forks count no prompt tokens in their
//! stats: the prompt is computed once.
//!
//! # Multi-step decode
//! [`Engine::run_decode_steps`] runs a stretch of decode-only steps in one
//! call for drivers whose backend is a pure function of the plan (the
//! simulator): step times and tokens come from the caller's closures, and
//! the stretch ends before any step that would admit, preempt, copy a block
//! or finish a sequence, so those always go through `schedule`/`complete`.
//! Both paths land tokens and test stop conditions through the same code,
//! so the result (sequence state, KV blocks, tokens and their times) is
//! exactly what the same steps run one at a time would leave.
//!
//! # SLO-budgeted steps
//! With [`EngineConfig::step_time_budget`] set (the drivers set it to the
//! TPOT target scaled by its percentile headroom when an SLO is
//! configured), a step's prefill tokens are capped by [`budgeted_chunk`]:
//! the largest chunk that keeps the step's predicted time (the engine's
//! [`StepTimer`], over the step's decodes) within the budget, so running
//! sequences never stall behind a long prefill; prefills pay instead, in
//! more, smaller chunks. The cap is shared by every prefill of the step and
//! never falls below [`MIN_BUDGETED_CHUNK`], so waiting prompts progress.
//! Two refinements, because TPOT is a mean over a request's steps, not a
//! bound on each: steps predicted under the budget bank the difference (up
//! to [`MAX_STEP_CREDIT`] budgets) for a later mixed step to spend, and once
//! the decodes alone reach the budget a mixed step may take
//! [`MIXED_STEP_SLACK`] more than they do ([`mixed_step_limit`]): capping
//! the prefill could not save their TPOT then, only starve the queue. The
//! router prices chunks with nothing banked, a lower bound on what the
//! engine takes. Measured on the validation grid (`scripts/grid.py`) with
//! and without budgeted steps.
//!
//! # Tunables ([`EngineConfig`])
//! `max_num_seqs`, `max_batched_tokens`, `max_model_len`, `enable_prefix_caching`,
//! `step_time_budget`.

mod budget;
mod complete;
mod decode;
mod load;
mod schedule;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use switchyard_backends::hash::mix64;
use switchyard_backends::{BlockCopy, CostModel, SamplingParams, SeqId, TokenLogprobs};

use crate::kv::{BlockManager, BlockTable, PrefixStats};

pub use budget::{
    budgeted_chunk, mixed_step_limit, StepTimer, MAX_STEP_CREDIT, MIN_BUDGETED_CHUNK,
    MIXED_STEP_SLACK,
};
pub use decode::DecodeRun;
pub use load::{estimate_queue_delay, Load};

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
        /// Its log-probabilities, when the request asked for them (boxed:
        /// most requests do not, and token events stay small).
        logprobs: Option<Box<TokenLogprobs>>,
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
    /// More parallel samples than the engine runs sequences at once.
    #[error("{n} parallel samples of one prompt exceed the {max_num_seqs} sequences this device runs at once")]
    TooManySamples {
        /// Samples asked for.
        n: u32,
        /// The engine's `max_num_seqs`.
        max_num_seqs: u32,
    },
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

/// A live sequence: its tokens, progress, KV blocks and stop rules.
#[derive(Debug, Clone)]
struct Seq {
    /// Caller's id.
    id: SeqId,
    /// Prompt, then the tokens generated so far.
    tokens: Vec<u32>,
    /// Prompt tokens at the front of `tokens`.
    prompt_len: u32,
    /// Most tokens to generate, already clamped to fit the pool alone.
    max_tokens: u32,
    /// Leading `tokens` whose KV is in `table`.
    computed: u32,
    /// Its KV blocks.
    table: BlockTable,
    /// Sampling parameters handed to the backend.
    sampling: SamplingParams,
    /// Keep generating past end-of-sequence tokens.
    ignore_eos: bool,
    /// Extra token ids that stop it.
    stop_token_ids: Vec<u32>,
    /// Arrival rank: orders `running` and picks preemption victims.
    order: u64,
    /// Aborted while in the step in flight; finished by `complete`.
    aborted: bool,
    /// Set by `complete` for the sequences it finishes at the end of the step.
    finished: Option<FinishReason>,
    /// Timings and counts for its `Finished` event.
    stats: SeqStats,
    /// Parallel samples of its prompt still to start (see [`Engine::add_parallel`]).
    forks: Vec<SeqId>,
}

impl Seq {
    /// Tokens generated so far.
    fn output_len(&self) -> u32 {
        self.tokens.len() as u32 - self.prompt_len
    }
}

/// One sequence's share of the step in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PlannedSlot {
    /// Where the sequence lives in [`Engine::slots`].
    slot: usize,
    /// Tokens the step computes for it, from its `computed` position on.
    tokens: u32,
    /// Whether the step samples a token for it: its chunk reaches the last
    /// known token, so the backend must return exactly one token for it.
    sample: bool,
}

/// One device's continuous-batching scheduler, pricing steps with `T`.
#[derive(Debug, Clone)]
pub struct Engine<T = CostModel> {
    config: EngineConfig,
    timer: T,
    eos: Vec<u32>,
    blocks: BlockManager,
    /// Sequences by slot; a `None` slot is listed in `free_slots` for reuse.
    slots: Vec<Option<Seq>>,
    free_slots: Vec<usize>,
    index: HashMap<SeqId, usize>,
    waiting: VecDeque<usize>,
    /// Admitted slots in arrival order, so the newest (the preemption victim) is last.
    running: Vec<usize>,
    next_order: u64,
    copies: Vec<BlockCopy>,
    /// The step in flight, in plan order.
    scheduled: Vec<PlannedSlot>,
    in_flight: bool,
    /// Preemption events of the step in flight, reported by `complete`.
    pending: Vec<Event>,
    preemptions: u64,
    /// Tokens of the next multi-step decode step, before they are applied.
    decode_tokens: Vec<u32>,
    /// Step time banked under the step budget, seconds (see `budget::next_credit`).
    step_credit_s: f64,
    /// Forks not started yet, by id: their parent's id.
    unspawned: HashMap<SeqId, SeqId>,
}

impl Engine {
    /// An engine over a KV pool of `kv_blocks` blocks of `block_size` tokens,
    /// pricing steps with `cost` and stopping on its model's end-of-sequence ids.
    pub fn new(config: EngineConfig, cost: CostModel, kv_blocks: u32, block_size: u32) -> Self {
        let eos = cost.model().eos_token_ids.clone();
        Self::with_timer(config, cost, eos, kv_blocks, block_size)
    }

    /// The cost model of this engine's device.
    pub fn cost_model(&self) -> &CostModel {
        &self.timer
    }

    /// Replaces the cost model (after a profile reload); the end-of-sequence ids stay.
    pub fn set_cost_model(&mut self, cost: CostModel) {
        self.timer = cost;
    }
}

impl<T: StepTimer> Engine<T> {
    /// An engine over a KV pool of `kv_blocks` blocks of `block_size` tokens,
    /// pricing steps with `timer` and stopping on `eos_token_ids`.
    pub fn with_timer(
        config: EngineConfig,
        timer: T,
        eos_token_ids: Vec<u32>,
        kv_blocks: u32,
        block_size: u32,
    ) -> Self {
        Self {
            config,
            timer,
            eos: eos_token_ids,
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
            step_credit_s: 0.0,
            unspawned: HashMap::new(),
        }
    }

    /// The engine's limits.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// What prices this engine's steps.
    pub fn timer(&self) -> &T {
        &self.timer
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
            forks: Vec::new(),
        };
        self.next_order += 1;
        let slot = self.place(seq);
        self.waiting.push_back(slot);
        Ok(())
    }

    /// Aborts a sequence. One in the step in flight finishes when that step
    /// completes (its `Finished` event comes from `complete`); any other
    /// finishes now and its event is returned here.
    pub fn abort(&mut self, id: SeqId, now: Duration) -> AbortOutcome {
        let Some(&slot) = self.index.get(&id) else {
            // A fork not started yet: it ends here, and its parent will not start it.
            let Some(parent) = self.unspawned.remove(&id) else {
                return AbortOutcome::NotFound;
            };
            if let Some(seq) = self
                .index
                .get(&parent)
                .and_then(|&s| self.slots[s].as_mut())
            {
                seq.forks.retain(|&f| f != id);
            }
            return AbortOutcome::Finished(Event::Finished {
                seq: id,
                reason: FinishReason::Abort,
                stats: Box::new(SeqStats {
                    arrival: now,
                    finished: now,
                    ..SeqStats::default()
                }),
            });
        };
        if self.in_flight && self.scheduled.iter().any(|p| p.slot == slot) {
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

    /// The sequence in a slot taken from `waiting`, `running` or `scheduled`.
    fn seq(&self, slot: usize) -> &Seq {
        // Slots in queues always hold a sequence; see `finish`.
        self.slots[slot]
            .as_ref()
            .expect("queued slot holds a sequence")
    }

    /// Abandons the step in flight (the backend failed it): nothing advances,
    /// and the same work is planned again by the next `schedule`.
    pub fn fail_step(&mut self) {
        self.in_flight = false;
    }

    /// Removes a sequence, releasing its blocks.
    fn finish(&mut self, slot: usize, reason: FinishReason, now: Duration) -> Event {
        let mut seq = self.slots[slot].take().expect("finishing a live slot");
        // Forks never started stay known until aborted themselves (the
        // caller aborts each sample of a request it gives up on).
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

    /// Queues `req` to be sampled `1 + forks.len()` times (OpenAI `n`):
    /// its prompt is prefilled once, as `req.id`; when that prefill is
    /// done, each id of `forks` starts as a sequence of its own that shares
    /// the prompt's KV blocks (reference-counted, copied on write) and
    /// computes only the last prompt token again, to sample its own first
    /// token. Each fork samples on its own: a seeded request's forks get
    /// seeds derived from the seed and their position. The request is
    /// admitted only when all its samples can run at once.
    pub fn add_parallel(
        &mut self,
        req: Request,
        forks: &[SeqId],
        now: Duration,
    ) -> Result<(), EngineError> {
        let n = forks.len().saturating_add(1);
        if n > self.config.max_num_seqs as usize {
            return Err(EngineError::TooManySamples {
                n: n.min(u32::MAX as usize) as u32,
                max_num_seqs: self.config.max_num_seqs,
            });
        }
        for (i, &f) in forks.iter().enumerate() {
            if f == req.id
                || self.index.contains_key(&f)
                || self.unspawned.contains_key(&f)
                || forks[..i].contains(&f)
            {
                return Err(EngineError::DuplicateId(f));
            }
        }
        if self.unspawned.contains_key(&req.id) {
            return Err(EngineError::DuplicateId(req.id));
        }
        let parent = req.id;
        self.add(req, now)?;
        if let Some(seq) = self
            .index
            .get(&parent)
            .and_then(|&s| self.slots[s].as_mut())
        {
            seq.forks = forks.to_vec();
        }
        for &f in forks {
            self.unspawned.insert(f, parent);
        }
        Ok(())
    }

    /// Starts the forks of the sequence at `slot`, whose prompt is now
    /// computed: each shares its blocks and recomputes the last prompt token.
    fn spawn_forks(&mut self, slot: usize, now: Duration) {
        let Some(parent) = self.slots[slot].as_mut() else {
            return;
        };
        let forks = std::mem::take(&mut parent.forks);
        let parent = self.slots[slot].as_ref().expect("parent is live");
        let template = Seq {
            id: parent.id,
            tokens: parent.tokens[..parent.prompt_len as usize].to_vec(),
            prompt_len: parent.prompt_len,
            max_tokens: parent.max_tokens,
            computed: parent.prompt_len - 1,
            table: BlockTable::default(),
            sampling: parent.sampling,
            ignore_eos: parent.ignore_eos,
            stop_token_ids: parent.stop_token_ids.clone(),
            order: 0,
            aborted: false,
            finished: None,
            // The prompt is the parent's: computed and counted once.
            stats: SeqStats {
                prompt_tokens: 0,
                arrival: parent.stats.arrival,
                first_scheduled: Some(now),
                ..SeqStats::default()
            },
            forks: Vec::new(),
        };
        let parent_table = parent.table.clone();
        for (i, id) in forks.into_iter().enumerate() {
            self.unspawned.remove(&id);
            let mut seq = template.clone();
            seq.id = id;
            seq.order = self.next_order;
            self.next_order += 1;
            seq.table = self.blocks.fork(&parent_table);
            if let Some(seed) = seq.sampling.seed {
                seq.sampling.seed = Some(mix64(seed ^ (i as u64 + 1)));
            }
            let fork_slot = self.place(seq);
            self.running.push(fork_slot);
        }
    }

    /// Puts a new sequence in a free slot (or a new one) and indexes it by id.
    fn place(&mut self, seq: Seq) -> usize {
        let id = seq.id;
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
        self.index.insert(id, slot);
        slot
    }

    /// Seats in `running` promised to forks not yet started.
    fn promised_seats(&self) -> usize {
        self.running.iter().map(|&s| self.seq(s).forks.len()).sum()
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
            // Forks not started go on as requests of their own.
            for id in std::mem::take(&mut seq.forks) {
                self.unspawned.remove(&id);
                out.push((
                    Request {
                        id,
                        prompt: seq.tokens[..seq.prompt_len as usize].to_vec(),
                        max_tokens: seq.max_tokens,
                        sampling: seq.sampling,
                        ignore_eos: seq.ignore_eos,
                        stop_token_ids: seq.stop_token_ids.clone(),
                    },
                    0,
                ));
            }
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
}
