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

    /// A guess at the largest prefill chunk at `context` that keeps a step
    /// of `base` plus the chunk within `budget_s` seconds, for
    /// [`budgeted_chunk`] to confirm; `None` when the timer has no closed form.
    fn chunk_guess(&self, _base: &StepShape, _context: u32, _budget_s: f64) -> Option<f64> {
        None
    }
}

impl StepTimer for CostModel {
    fn step_seconds(&self, shape: &StepShape) -> f64 {
        CostModel::step_seconds(self, shape)
    }

    fn chunk_guess(&self, base: &StepShape, context: u32, budget_s: f64) -> Option<f64> {
        self.largest_chunk_within(base, context, budget_s)
    }
}

impl<F: Fn(&StepShape) -> f64> StepTimer for F {
    fn step_seconds(&self, shape: &StepShape) -> f64 {
        self(shape)
    }
}

/// Most step-time credit an engine banks, in step budgets.
pub const MAX_STEP_CREDIT: f64 = 4.0;

/// The credit after a step predicted to take `step_s` seconds: steps under
/// the budget bank the difference (up to [`MAX_STEP_CREDIT`] budgets), a
/// step over it spends from the bank. The budget bounds the *mean* step
/// time, which is what TPOT measures, so a prefill may take one long step
/// after several short decode-only ones instead of crawling in chunks that
/// each fit a single step; without the bank a slow device whose decodes
/// nearly fill the budget prefills a few tokens a step.
pub(crate) fn next_credit(credit_s: f64, budget: Duration, step_s: f64) -> f64 {
    let b = budget.as_secs_f64();
    let next = credit_s + b - step_s;
    if next.is_finite() {
        next.clamp(0.0, MAX_STEP_CREDIT * b)
    } else {
        0.0
    }
}

/// A mixed step may always take this much longer than the decodes alone.
pub const MIXED_STEP_SLACK: f64 = 0.5;

/// The time a step with `decodes` may take: the budget plus banked credit;
/// or, once the decodes alone reach the budget, [`MIXED_STEP_SLACK`] over
/// them. Then capping the prefill cannot save their TPOT, only starve the
/// queue (measured on L4 ×4, decode-heavy mix: TTFT p95 5× longer for the
/// same TPOT), so prefills keep a share of the step in proportion to it.
/// Below the budget the slack does not apply: a device whose prefills
/// never stop (prefill-heavy mixes) would run every step at it.
pub fn mixed_step_limit(
    timer: &(impl StepTimer + ?Sized),
    decodes: StepShape,
    budget: Duration,
    credit_s: f64,
) -> Duration {
    let decode_s = if decodes.seqs() == 0 {
        0.0
    } else {
        timer.step_seconds(&decodes)
    };
    let b = budget.as_secs_f64();
    let limit = if decode_s >= b {
        decode_s * (1.0 + MIXED_STEP_SLACK)
    } else {
        b + credit_s
    };
    Duration::try_from_secs_f64(limit).unwrap_or(budget)
}

/// Fewest prefill tokens a step-time budget leaves a step, so prefills
/// always progress even when the decodes alone exceed the budget.
pub const MIN_BUDGETED_CHUNK: u32 = 32;

/// The largest prefill chunk of at most `max` tokens after `context` cached
/// ones that keeps a step of `base` plus the chunk within `budget` by
/// `timer` (Sarathi-Serve's stall-free batching); at least
/// [`MIN_BUDGETED_CHUNK`] (or `max`, if smaller).
///
/// Step time is monotone in the chunk, so the answer is the one boundary
/// `time(q) ≤ budget < time(q + 1)`. The search keeps that bracket and
/// guesses inside it by linear interpolation of the two bracketing times
/// (a step's time is affine in the chunk apart from the small quadratic
/// attention term and the roofline's kink, so a guess usually lands on the
/// boundary and the next one confirms it: 3 to 5 prices where bisection
/// takes 13). A guess that shrinks the bracket by less than half is
/// followed by a bisection step, so it never takes more than twice
/// bisection's prices; the result is the same as bisection's. A timer with
/// a closed form ([`StepTimer::chunk_guess`], the cost model) usually
/// answers in two prices: its guess and the token after it.
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
    if max == 0 {
        return max;
    }
    // A closed-form guess `g`, confirmed by pricing `g` and `g + 1`: with
    // time monotone, `time(g) ≤ budget < time(g + 1)` is bisection's answer.
    if let Some(guess) = timer.chunk_guess(&base, context, budget_s) {
        let g = (guess.max(0.0).min(f64::from(max)) as u32).clamp(floor, max);
        let t_g = time(g);
        if t_g <= budget_s {
            if g == max {
                return max;
            }
            if time(g + 1) > budget_s {
                return g;
            }
        } else if g == floor {
            return floor;
        }
    }
    let t_max = time(max);
    if t_max <= budget_s {
        return max;
    }
    let t_floor = time(floor);
    if t_floor > budget_s {
        return floor;
    }
    // time(lo) = t_lo ≤ budget < time(hi) = t_hi.
    let (mut lo, mut hi) = (floor, max);
    let (mut t_lo, mut t_hi) = (t_floor, t_max);
    let mut bisect = false;
    while hi - lo > 1 {
        let width = hi - lo;
        let mid = if bisect {
            lo + width / 2
        } else {
            // NaN or infinite times give a NaN or 0 fraction: `as` maps
            // NaN to 0 and the clamp keeps the guess inside the bracket.
            let f = (budget_s - t_lo) / (t_hi - t_lo);
            let guess = f64::from(lo) + f * f64::from(width);
            (guess as u32).clamp(lo + 1, hi - 1)
        };
        let t = time(mid);
        if t <= budget_s {
            lo = mid;
            t_lo = t;
        } else {
            hi = mid;
            t_hi = t;
        }
        bisect = !bisect && (hi - lo) * 2 > width;
    }
    lo
}
