//! Applying a step's results: [`Engine::complete`], and the stop test and
//! token application it shares with [`Engine::run_decode_steps`], so the two
//! paths cannot drift apart.

use std::time::Duration;

use switchyard_backends::{StepOutput, TokenLogprobs};

use super::{Engine, EngineError, Event, FinishReason, Seq, StepTimer};
use crate::kv::BlockManager;

impl Seq {
    /// Tokens it may still append before it finishes on length: its
    /// `max_tokens`, or `limit` tokens in all (the engine's per-sequence cap).
    pub(super) fn length_room(&self, limit: u32) -> u32 {
        self.max_tokens
            .saturating_sub(self.output_len())
            .min(limit.saturating_sub(self.tokens.len() as u32))
    }

    /// Why appending `token` would finish it, if it would: an end-of-sequence
    /// id of `eos` it does not ignore or one of its stop ids, else its length.
    pub(super) fn finish_reason(
        &self,
        token: u32,
        eos: &[u32],
        limit: u32,
    ) -> Option<FinishReason> {
        if (!self.ignore_eos && eos.contains(&token)) || self.stop_token_ids.contains(&token) {
            Some(FinishReason::Stop)
        } else if self.length_room(limit) <= 1 {
            Some(FinishReason::Length)
        } else {
            None
        }
    }

    /// Lands one step's result: `n` more tokens computed (their full blocks
    /// committed to the prefix cache with `prefix`), then the sampled
    /// `token`, if any, appended at `now`; returns that token's event,
    /// carrying its `logprobs`.
    pub(super) fn apply_token(
        &mut self,
        blocks: &mut BlockManager,
        prefix: bool,
        n: u32,
        token: Option<u32>,
        logprobs: Option<Box<TokenLogprobs>>,
        now: Duration,
    ) -> Option<Event> {
        self.computed += n;
        if prefix {
            blocks.commit(&mut self.table, &self.tokens, self.computed);
        }
        let token = token?;
        self.tokens.push(token);
        self.stats.first_token.get_or_insert(now);
        Some(Event::Token {
            seq: self.id,
            token,
            index: self.output_len() - 1,
            logprobs,
        })
    }
}

impl<T: StepTimer> Engine<T> {
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
            .any(|(p, t)| p.sample != t.is_some());
        if out.tokens.len() != self.scheduled.len() || sample_mismatch {
            return Err(EngineError::OutputMismatch {
                expected: self.scheduled.len(),
                got: out.tokens.iter().filter(|t| t.is_some()).count(),
            });
        }
        let mut events = Vec::with_capacity(self.pending.len() + self.scheduled.len() * 2);
        events.append(&mut self.pending);
        let limit = self.max_seq_tokens();
        let prefix = self.config.enable_prefix_caching;
        let mut any_finished = false;
        for (k, (planned, &token)) in self.scheduled.iter().zip(&out.tokens).enumerate() {
            let Some(seq) = self.slots[planned.slot].as_mut() else {
                continue;
            };
            if seq.aborted {
                seq.finished = Some(FinishReason::Abort);
                any_finished = true;
                continue;
            }
            let reason = token.and_then(|t| seq.finish_reason(t, &self.eos, limit));
            let logprobs = out.logprobs.get(k).cloned().flatten();
            events.extend(seq.apply_token(
                &mut self.blocks,
                prefix,
                planned.tokens,
                token,
                logprobs,
                now,
            ));
            if reason.is_some() {
                seq.finished = reason;
                any_finished = true;
            }
        }
        // Parallel samples start once their parent's prompt is computed,
        // before the parent may finish (and free the blocks they share).
        for k in 0..self.scheduled.len() {
            let slot = self.scheduled[k].slot;
            let ready = self.slots[slot]
                .as_ref()
                .is_some_and(|q| !q.forks.is_empty() && !q.aborted && q.computed >= q.prompt_len);
            if ready {
                self.spawn_forks(slot, now);
            }
        }
        if any_finished {
            let slots = &self.slots;
            self.running
                .retain(|&s| slots[s].as_ref().is_some_and(|q| q.finished.is_none()));
            for k in 0..self.scheduled.len() {
                let slot = self.scheduled[k].slot;
                let reason = self.slots[slot].as_ref().and_then(|q| q.finished);
                if let Some(reason) = reason {
                    events.push(self.finish(slot, reason, now));
                }
            }
        }
        Ok(events)
    }
}
