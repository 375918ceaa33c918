//! Step pricing: the [`StepTimer`] the engine prices steps with, and the
//! SLO-budgeted prefill chunk ([`budgeted_chunk`]) built on it.

use std::time::Duration;

use switchyard_backends::{CostModel, SeqWork, StepShape};

/// Predicts how long a step of a given shape takes on the engine's device:
/// all the engine needs of a cost model, for SLO-budgeted steps and
/// queue-delay predictions. Implemented for [`CostModel`] and for closures
/// `Fn(&StepShape) -> f64`.
pub trait StepTimer {
    /// Predicted time of a step of `shape`, seconds.
    fn step_seconds(&self, shape: &StepShape) -> f64;

    /// Predicted time of a step of `shape`.
    fn step_duration(&self, shape: &StepShape) -> Duration {
        Duration::from_secs_f64(self.step_seconds(shape))
    }
}

impl StepTimer for CostModel {
    fn step_seconds(&self, shape: &StepShape) -> f64 {
        self.step_cost(shape).seconds()
    }
}

impl<F: Fn(&StepShape) -> f64> StepTimer for F {
    fn step_seconds(&self, shape: &StepShape) -> f64 {
        self(shape)
    }
}

/// Fewest prefill tokens a step-time budget leaves a step, so prefills
/// always progress even when the decodes alone exceed the budget.
pub const MIN_BUDGETED_CHUNK: u32 = 32;

/// The largest prefill chunk of at most `max` tokens after `context` cached
/// ones that keeps a step of `base` plus the chunk within `budget` by
/// `timer` (Sarathi-Serve's stall-free batching); at least
/// [`MIN_BUDGETED_CHUNK`] (or `max`, if smaller). Step time is monotone in
/// the chunk, so a bisection over ~12 prices finds it.
pub fn budgeted_chunk(
    timer: &(impl StepTimer + ?Sized),
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
        timer.step_seconds(&s)
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
