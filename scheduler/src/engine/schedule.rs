//! Planning a step: running sequences first, then FCFS admission, with
//! preemption by recompute when the pool runs out (see the module doc's
//! policy).

use std::time::Duration;

use switchyard_backends::{ScheduledSeq, SeqWork, StepPlan, StepShape};

use super::budget::{mixed_step_limit, next_credit};
use super::{budgeted_chunk, Engine, Event, PlannedSlot, StepTimer};

impl<T: StepTimer> Engine<T> {
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
        // Seats promised to the forks of running parallel-sampling prompts.
        let mut promised = self.promised_seats();
        while !preempted
            && budget > 0
            && prefill_budget > 0
            && (self.running.len() + promised) < self.config.max_num_seqs as usize
        {
            let Some(&slot) = self.waiting.front() else {
                break;
            };
            // A prompt sampled `n` times is admitted with seats for all.
            let forks = self.seq(slot).forks.len();
            if self.running.len() + promised + 1 + forks > self.config.max_num_seqs as usize {
                break;
            }
            let Some(n) = self.admit(slot, budget.min(prefill_budget), decodes) else {
                break;
            };
            self.waiting.pop_front();
            promised += forks;
            self.insert_running(slot);
            self.push_plan(slot, n, now);
            budget -= n;
            prefill_budget = prefill_budget.saturating_sub(n);
        }
        if self.scheduled.is_empty() {
            return None;
        }
        if let Some(limit) = self.config.step_time_budget {
            let mut shape = StepShape::default();
            for p in &self.scheduled {
                if let Some(seq) = self.slots[p.slot].as_ref() {
                    shape.push(SeqWork {
                        new_tokens: p.tokens,
                        context: seq.computed,
                    });
                }
            }
            self.step_credit_s =
                next_credit(self.step_credit_s, limit, self.timer.step_seconds(&shape));
        }
        self.in_flight = true;
        Some(self.build_plan())
    }

    /// Prefill tokens the next step may carry: the whole token budget, or
    /// with a step-time budget the [`budgeted_chunk`] over the running
    /// decodes (priced at the first running prefill's context); and those
    /// decodes, for pricing an admission once its cached prefix is known.
    fn prefill_budget(&self) -> (u32, StepShape) {
        let Some(budget) = self.config.step_time_budget else {
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
        // This step may spend what earlier steps under the budget banked.
        let limit = mixed_step_limit(&self.timer, shape, budget, self.step_credit_s);
        let chunk = budgeted_chunk(&self.timer, shape, first_prefill.unwrap_or(0), max, limit);
        (chunk, shape)
    }

    /// The plan of the step just scheduled, borrowing tokens and tables.
    fn build_plan(&self) -> StepPlan<'_> {
        let seqs = self
            .scheduled
            .iter()
            .filter_map(|p| {
                let seq = self.slots[p.slot].as_ref()?;
                let start = seq.computed;
                Some(ScheduledSeq {
                    seq: seq.id,
                    start_pos: start,
                    tokens: &seq.tokens[start as usize..(start + p.tokens) as usize],
                    block_table: seq.table.blocks(),
                    sample: p.sample,
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
        if let Some(budget) = self.config.step_time_budget {
            // Priced again now that the cached prefix (its context) is known.
            let limit = mixed_step_limit(&self.timer, decodes, budget, self.step_credit_s);
            n = budgeted_chunk(&self.timer, decodes, seq.computed, n, limit).max(1);
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

    /// Adds `n` tokens of `slot` to the step being planned.
    fn push_plan(&mut self, slot: usize, n: u32, now: Duration) {
        let Some(seq) = self.slots[slot].as_mut() else {
            return;
        };
        seq.stats.first_scheduled.get_or_insert(now);
        let sample = (seq.computed + n) as usize == seq.tokens.len();
        self.scheduled.push(PlannedSlot {
            slot,
            tokens: n,
            sample,
        });
    }
}
