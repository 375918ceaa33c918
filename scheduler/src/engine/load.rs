//! What the router sees of an engine: the [`Load`] snapshot and its
//! queue-delay prediction.

use std::time::Duration;

use switchyard_backends::{SeqWork, StepShape};

use super::{budgeted_chunk, mixed_step_limit, Engine, StepTimer};

/// What the router sees of an engine.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
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

impl<T: StepTimer> Engine<T> {
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
            // Forks not started will each generate up to `max_tokens`.
            l.outstanding_decode_tokens += seq.forks.len() as u64 * u64::from(seq.max_tokens);
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
        if let Some(budget) = self.config.step_time_budget {
            let limit = mixed_step_limit(&self.timer, shape, budget, self.step_credit_s);
            chunk = budgeted_chunk(&self.timer, shape, 0, chunk, limit).max(1);
        }
        let mut delay = Duration::ZERO;
        if l.queued_prefill_tokens > 0 {
            let steps = l.queued_prefill_tokens.div_ceil(u64::from(chunk));
            let step_chunk = l.queued_prefill_tokens.min(u64::from(chunk)) as u32;
            shape.push(SeqWork {
                new_tokens: step_chunk,
                context: 0,
            });
            delay += self.timer.step_duration(&shape) * steps.min(u64::from(u32::MAX)) as u32;
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
            // A full batch is never empty, so this is a real decode step.
            let step = self
                .timer
                .step_duration(&StepShape::decodes(l.running, l.running_context_tokens));
            delay += step.saturating_mul(steps);
        }
        delay
    }
}

/// Queue delay of an engine seen only from outside (a remote server whose
/// load is counted, not inspected): the prefill backlog drains at the
/// step's token budget left after decodes, and a full batch frees a slot
/// for the `w`-th waiting sequence after about `2·R·(w+1)/(running+1)`
/// decode steps, `R` the mean remaining output (remaining outputs spread
/// evenly over `[0, 2R]`). The same shape as [`Engine::load`]'s prediction,
/// without the per-sequence view it has.
pub fn estimate_queue_delay(
    load: &Load,
    max_num_seqs: u32,
    max_batched_tokens: u32,
    timer: &(impl StepTimer + ?Sized),
) -> Duration {
    let decodes = StepShape::decodes(load.running, load.running_context_tokens);
    let mut delay = Duration::ZERO;
    if load.queued_prefill_tokens > 0 {
        let chunk = max_batched_tokens.saturating_sub(load.running).max(1);
        let steps = load.queued_prefill_tokens.div_ceil(u64::from(chunk));
        let mut shape = decodes;
        shape.push(SeqWork {
            new_tokens: load.queued_prefill_tokens.min(u64::from(chunk)) as u32,
            context: 0,
        });
        delay += timer.step_duration(&shape) * steps.min(u64::from(u32::MAX)) as u32;
    }
    if load.running > 0 && load.running >= max_num_seqs {
        let mean_remaining = load.outstanding_decode_tokens as f64 / f64::from(load.running);
        let ahead = f64::from(load.waiting) + 1.0;
        let steps = (2.0 * mean_remaining * ahead / (f64::from(load.running) + 1.0)).ceil();
        delay += timer
            .step_duration(&decodes)
            .mul_f64(steps.clamp(0.0, f64::from(u32::MAX)));
    }
    delay
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timer(shape: &StepShape) -> f64 {
        // 10 ms a step plus 0.1 ms a new token.
        0.010 + 0.0001 * shape.total().tokens as f64
    }

    #[test]
    fn an_idle_engine_has_no_queue_delay() {
        assert_eq!(
            estimate_queue_delay(&Load::default(), 8, 512, &timer),
            Duration::ZERO
        );
    }

    #[test]
    fn backlog_and_a_full_batch_both_add_delay() {
        let backlog = Load {
            queued_prefill_tokens: 1024,
            ..Load::default()
        };
        // Two steps of 512 tokens: 2 × (10 + 51.2) ms.
        let d = estimate_queue_delay(&backlog, 8, 512, &timer);
        assert!((d.as_secs_f64() - 0.1224).abs() < 1e-6, "{d:?}");
        let full = Load {
            running: 8,
            waiting: 3,
            outstanding_decode_tokens: 8 * 100,
            running_context_tokens: 8 * 100,
            ..Load::default()
        };
        let d_full = estimate_queue_delay(&full, 8, 512, &timer);
        let fewer = Load { waiting: 0, ..full };
        assert!(d_full > estimate_queue_delay(&fewer, 8, 512, &timer));
        assert!(d_full > Duration::ZERO);
    }
}
