//! Multi-step decode: [`Engine::run_decode_steps`] runs a stretch of
//! decode-only steps in one call (see the module doc).

use std::time::Duration;

use switchyard_backends::StepShape;

use super::budget::next_credit;
use super::{Engine, Event, StepTimer};

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

impl<T: StepTimer> Engine<T> {
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
    /// not have (`schedule` would preempt) or copy a shared block. Runs
    /// nothing while a running sequence asks for log-probabilities.
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
        // Steps before some sequence finishes on length: found up front, so
        // the stretch never prices or samples a step it cannot run.
        let mut safe = u32::MAX;
        let mut context = 0u64;
        for &slot in &self.running {
            let s = self.seq(slot);
            // Log-probabilities come only from a backend's step output.
            if s.tokens.len() as u32 != s.computed + 1
                || s.aborted
                || s.finished.is_some()
                || s.sampling.logprobs.is_some()
            {
                return run;
            }
            safe = safe.min(s.length_room(limit).saturating_sub(1));
            context += u64::from(s.computed);
        }
        let Self {
            running,
            slots,
            blocks,
            eos,
            decode_tokens,
            config,
            timer,
            step_credit_s,
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
                if s.finish_reason(token, eos, limit).is_some() {
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
                if let Some(event) = s.apply_token(blocks, prefix, 1, Some(token), None, end) {
                    on_token(end, event);
                }
            }
            if let Some(budget) = config.step_time_budget {
                // As `schedule` banks it for the same step.
                *step_credit_s = next_credit(*step_credit_s, budget, timer.step_seconds(&shape));
            }
            context += u64::from(batch);
            run.steps += 1;
            run.busy += elapsed;
            run.end = end;
        }
        run
    }
}
