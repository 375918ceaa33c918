//! Scoring: what placing one request on one device would cost and how fast
//! it would be served, from the device's [`CostModel`] and [`Load`] snapshot.
//! The formulas are stated in the [module doc](super).

use std::time::Duration;

use serde::Serialize;
use switchyard_backends::{CostModel, SeqWork, StepCost, StepShape};

use super::interference::{PackedStep, PrefillRate, StepMix};
use super::shape::Shape;
use super::DeviceId;
use crate::config::serde_ms;
use crate::engine::{budgeted_chunk, mixed_step_limit, Engine, Load, MIN_BUDGETED_CHUNK};

/// What the router sees of one device for one routing decision.
#[derive(Debug, Clone, Copy)]
pub struct DeviceView<'a> {
    /// The device.
    pub id: DeviceId,
    /// Its cost model (device profile × model spec).
    pub cost: &'a CostModel,
    /// Its engine's load snapshot.
    pub load: Load,
    /// Whether it accepts work.
    pub healthy: bool,
    /// Longest sequence (prompt + output) it holds, tokens; a prompt fits if `prompt + 1 ≤` this.
    pub max_seq_tokens: u32,
    /// Most sequences it runs at once.
    pub max_num_seqs: u32,
    /// Token budget of one of its steps.
    pub max_batched_tokens: u32,
    /// Leading prompt tokens already in its prefix cache.
    pub cached_prefix_tokens: u32,
    /// Its engine's SLO step budget, if it budgets steps (prefill chunks shrink to fit it).
    pub step_time_budget: Option<Duration>,
}

impl<'a> DeviceView<'a> {
    /// A healthy view of `engine` with its current load and no cached prefix
    /// (set `cached_prefix_tokens` from `engine.blocks().cached_prefix_len(prompt)`).
    pub fn from_engine(id: DeviceId, engine: &'a Engine) -> Self {
        let config = engine.config();
        Self {
            id,
            cost: engine.cost_model(),
            load: engine.load(),
            healthy: true,
            max_seq_tokens: engine.max_seq_tokens(),
            max_num_seqs: config.max_num_seqs,
            max_batched_tokens: config.max_batched_tokens,
            cached_prefix_tokens: 0,
            step_time_budget: config.step_time_budget,
        }
    }

    /// The prefill chunk a step with `decodes` (over `context` tokens)
    /// leaves, for a prompt at `start`: the token budget's rest, or the
    /// engine's [`budgeted_chunk`] when it budgets steps.
    pub fn prefill_chunk(&self, decodes: StepShape, start: u32) -> u32 {
        self.prefill_chunk_priced(decodes, start, None)
    }

    /// [`Self::prefill_chunk`], given the decodes' own step time if already priced.
    fn prefill_chunk_priced(&self, decodes: StepShape, start: u32, decode_s: Option<f64>) -> u32 {
        match self.step_limit(decodes, decode_s) {
            Some(limit) => {
                budgeted_chunk(self.cost, decodes, start, self.chunk_room(decodes), limit).max(1)
            }
            None => self.chunk_room(decodes),
        }
    }

    /// Tokens a step of `decodes` leaves for a prefill chunk (at least 1).
    fn chunk_room(&self, decodes: StepShape) -> u32 {
        self.max_batched_tokens
            .saturating_sub(decodes.seqs())
            .max(1)
    }

    /// The engine's time limit on a step of `decodes` with nothing banked
    /// (a lower bound on its chunk), if it budgets steps.
    fn step_limit(&self, decodes: StepShape, decode_s: Option<f64>) -> Option<Duration> {
        let budget = self.step_time_budget?;
        Some(match decode_s {
            Some(s) => mixed_step_limit(&|_: &StepShape| s, decodes, budget, 0.0),
            None => mixed_step_limit(self.cost, decodes, budget, 0.0),
        })
    }

    /// How `tokens` prefill tokens after `start` run beside `decodes`: in
    /// one step when they fit its token room and its time limit, priced
    /// (the budgeted chunk, the largest within the limit and at least
    /// [`MIN_BUDGETED_CHUNK`], is then at least `tokens`, so its search is
    /// skipped: the same answer for one price); else in chunks of
    /// [`Self::prefill_chunk`].
    fn prefill_plan(
        &self,
        decodes: StepShape,
        start: u32,
        tokens: u32,
        decode_s: Option<f64>,
    ) -> PrefillPlan {
        let room = self.chunk_room(decodes);
        let Some(limit) = self.step_limit(decodes, decode_s) else {
            return PrefillPlan::Chunks(room);
        };
        if tokens <= room {
            let mut step = decodes;
            step.push(SeqWork {
                new_tokens: tokens,
                context: start,
            });
            let one = self.cost.step_seconds(&step);
            if tokens <= MIN_BUDGETED_CHUNK || one <= limit.as_secs_f64() {
                return PrefillPlan::OneStep(one);
            }
        }
        PrefillPlan::Chunks(budgeted_chunk(self.cost, decodes, start, room, limit).max(1))
    }

    /// The part of a prompt of `prompt_tokens` its prefill computes: the
    /// cached prefix (clamped to the prompt), then the uncached tokens (at
    /// least one: the last token is recomputed for its logits) and where
    /// they start.
    fn uncached_suffix(&self, prompt_tokens: u32) -> (u32, u32, u32) {
        let cached = self.cached_prefix_tokens.min(prompt_tokens);
        let uncached = (prompt_tokens - cached).max(1);
        (cached, uncached, prompt_tokens.saturating_sub(uncached))
    }

    /// Whether a prompt of `prompt_tokens` fits this device (`prompt + 1 ≤ max_seq_tokens`).
    pub fn fits(&self, prompt_tokens: u32) -> bool {
        u64::from(prompt_tokens) < u64::from(self.max_seq_tokens)
    }

    /// Whether this device may take a prompt of `prompt_tokens`: healthy and it fits.
    pub fn eligible(&self, prompt_tokens: u32) -> bool {
        self.healthy && self.fits(prompt_tokens)
    }

    /// Queued prefill tokens plus outstanding decode tokens.
    pub fn outstanding_tokens(&self) -> u64 {
        self.load
            .queued_prefill_tokens
            .saturating_add(self.load.outstanding_decode_tokens)
    }
}

/// How a prefill runs beside a set of decodes ([`DeviceView::prefill_plan`]).
#[derive(Debug, Clone, Copy)]
enum PrefillPlan {
    /// All of it in one step, which takes these seconds.
    OneStep(f64),
    /// In chunks of this many tokens.
    Chunks(u32),
}

/// One device's predicted service of one request.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DeviceScore {
    /// The device.
    pub device: DeviceId,
    /// Healthy and the prompt fits.
    pub eligible: bool,
    /// Predicted wait before the first prefill step.
    #[serde(rename = "queue_delay_ms", with = "serde_ms")]
    pub queue_delay: Duration,
    /// Predicted time to first token: queue delay + chunked prefill.
    #[serde(rename = "ttft_ms", with = "serde_ms")]
    pub ttft: Duration,
    /// Predicted time per output token after the first, prefill interference included.
    #[serde(rename = "tpot_ms", with = "serde_ms")]
    pub tpot: Duration,
    /// Predicted TPOT of the sequences already there once this request is admitted.
    #[serde(rename = "running_tpot_ms", with = "serde_ms")]
    pub running_tpot: Duration,
    /// Share of the device's time its prefills will take with this request
    /// dispatched (≥ 1: prefills arrive faster than it can take them).
    pub prefill_share: f64,
    /// Predicted end-to-end latency: `ttft + tpot·(expected_output − 1)`.
    #[serde(rename = "e2e_ms", with = "serde_ms")]
    pub e2e: Duration,
    /// The request's share of device time, seconds.
    pub device_seconds: f64,
    /// `device_seconds · usd_per_second`.
    pub cost_usd: f64,
    /// Eligible, and the predicted TTFT and TPOT are within the SLO scaled by its headroom.
    pub meets_slo: bool,
    /// Leading prompt tokens served from this device's prefix cache.
    pub cached_prefix_tokens: u32,
    /// Queued prefill tokens plus outstanding decode tokens before this request.
    pub outstanding_tokens: u64,
}

/// SLO budgets already scaled by the percentile headroom.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budgets {
    pub ttft: Duration,
    pub tpot: Duration,
}

/// The router's dispatch history of one device, for the interference terms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Interference {
    pub rate: PrefillRate,
    pub now: Duration,
    pub window: Duration,
}

impl Interference {
    /// The prefill rate at `now`, before and after a dispatch of `uncached`
    /// tokens, tokens/s (`PrefillRate::with_dispatch` without a second `exp`).
    fn rates(&self, uncached: u32) -> (f64, f64) {
        let before = self.rate.tokens_per_s(self.now, self.window);
        let tau = self.window.as_secs_f64();
        let after = if tau > 0.0 {
            before + f64::from(uncached) / tau
        } else {
            0.0
        };
        (before, after)
    }
}

/// Scores `shape` on `dev` (pure; see the module doc for every formula),
/// given its decode side if a floor already priced it ([`Floors::decoding`]:
/// the same function of the same inputs, so the same bits).
pub(crate) fn score(
    shape: &Shape,
    dev: &DeviceView<'_>,
    budgets: Budgets,
    interference: Interference,
    side: Option<DecodeSide>,
) -> DeviceScore {
    let cost = dev.cost;
    let load = &dev.load;
    let prompt = shape.prompt_tokens;
    let expected = shape.expected_output_tokens;
    let eligible = dev.eligible(prompt);

    // Prefill: the uncached suffix, in chunks of what the step budget leaves
    // after the running decodes, each chunk co-running those decodes.
    let (cached, uncached, start) = dev.uncached_suffix(prompt);
    // Sequences decoding beside this one once it is admitted (a full batch
    // first loses one; that wait is in the queue delay).
    let co_run = co_running(dev);
    let decodes = co_run.seqs();
    let (chunk, prefill_s) = match dev.prefill_plan(co_run, start, uncached, None) {
        PrefillPlan::OneStep(s) => (uncached, s),
        PrefillPlan::Chunks(chunk) => (
            chunk,
            chunked_prefill_seconds(cost, co_run, start, uncached, chunk),
        ),
    };
    let prefill_alone_s = if decodes == 0 {
        prefill_s
    } else {
        chunked_prefill_seconds(cost, StepShape::default(), start, uncached, chunk)
    };

    let side = side.unwrap_or_else(|| decode_side_of(shape, dev, interference, uncached));
    let DecodeSide {
        batch,
        tpot_s,
        running_tpot_s,
        prefill_share,
    } = side;

    let queue_delay = load.predicted_queue_delay;
    let decode_steps = f64::from(expected.saturating_sub(1));
    let ttft = queue_delay.saturating_add(secs(prefill_s));
    let tpot = secs(tpot_s);
    let running_tpot = secs(running_tpot_s);
    let e2e = ttft.saturating_add(secs(tpot_s * decode_steps));
    let device_seconds = prefill_alone_s + decode_steps * tpot_s / f64::from(batch);
    let cost_usd = device_seconds * cost.usd_per_second();
    let meets_slo = eligible && ttft <= budgets.ttft && side.meets(budgets, expected);

    DeviceScore {
        device: dev.id,
        eligible,
        queue_delay,
        ttft,
        tpot,
        running_tpot,
        prefill_share,
        e2e,
        device_seconds,
        cost_usd,
        meets_slo,
        cached_prefix_tokens: cached,
        outstanding_tokens: dev.outstanding_tokens(),
    }
}

/// The decode side of a score: the batch the request joins and its times per token.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DecodeSide {
    /// The decode batch once this request and the waiting ones have joined.
    batch: u32,
    /// This request's time per output token, seconds.
    tpot_s: f64,
    /// The running sequences' time per output token with this request dispatched, seconds.
    running_tpot_s: f64,
    /// The device's share of time in prefills with this request dispatched.
    prefill_share: f64,
}

impl DecodeSide {
    /// Whether the decode side is within the SLO for a request expecting
    /// `expected` output tokens: its TPOT, the running sequences' once it is
    /// admitted, and a prefill share below 1 (the TTFT is checked apart).
    fn meets(&self, budgets: Budgets, expected: u32) -> bool {
        (expected <= 1 || secs(self.tpot_s) <= budgets.tpot)
            && (self.batch <= 1 || secs(self.running_tpot_s) <= budgets.tpot)
            && self.prefill_share < 1.0
    }

    /// Whether it misses the SLO whatever the request's own TPOT, by a
    /// margin past floating-point rounding ([`floor_exceeds`]): the running
    /// sequences' time per token past the budget, or a prefill share of at
    /// least 1. What a [`MissCert`] proves.
    pub(crate) fn misses_by_margin(&self, budgets: Budgets) -> bool {
        self.prefill_share * (1.0 - 1e-9) >= 1.0
            || (self.batch > 1 && floor_exceeds(self.running_tpot_s, budgets.tpot.as_secs_f64()))
    }
}

/// [`score`]'s decode side on `dev` of a request joining `batch`, whose
/// prompt leaves `uncached` tokens to prefill. Inlined into each caller,
/// as is [`step_mix`]: once the miss proofs priced steps too, the compiler
/// stopped inlining them, and a steady decision took 8–12 % longer.
#[inline(always)]
fn decode_side(
    dev: &DeviceView<'_>,
    interference: Interference,
    uncached: u32,
    batch: DecodeBatch,
) -> DecodeSide {
    let mut mix = step_mix(dev, batch, interference.rate, uncached);
    let (rate_before, rate_after) = interference.rates(uncached);
    // The rate after is the higher: below it, one prefill a step keeps up
    // at both rates and the packed step is never read.
    if mix.needs_packing(rate_after) {
        mix.packed = packed_step(dev, batch, &mix);
    }
    DecodeSide {
        batch: batch.seqs,
        tpot_s: mix.time_per_token(rate_before),
        running_tpot_s: mix.time_per_token(rate_after),
        prefill_share: mix.prefill_share(rate_after),
    }
}

/// [`decode_side`] of `shape` on `dev`, its decode batch priced here.
#[inline(always)]
fn decode_side_of(
    shape: &Shape,
    dev: &DeviceView<'_>,
    interference: Interference,
    uncached: u32,
) -> DecodeSide {
    decode_side(dev, interference, uncached, DecodeBatch::of(shape, dev))
}

/// The decodes that co-run a prefill admitted on `dev` now: the running
/// ones, fewer when the batch is capped (a full batch first loses one; that
/// wait is in the queue delay), their context scaled to their number.
fn co_running(dev: &DeviceView<'_>) -> StepShape {
    let running = dev.load.running;
    let decodes = running
        .min(dev.max_num_seqs.saturating_sub(1))
        .min(dev.max_batched_tokens);
    StepShape::decodes(
        decodes,
        scale_context(dev.load.running_context_tokens, running, decodes),
    )
}

/// The decode batch a request joins on a device, and its decode-only
/// step, priced once for the floors and the score that share it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DecodeBatch {
    /// Sequences in the batch, this request's included.
    seqs: u32,
    /// The decode-only step of the batch.
    step: StepShape,
    /// That step's seconds.
    step_s: f64,
}

impl DecodeBatch {
    /// The batch `shape` joins on `dev`: the batch once this request and
    /// the waiting ones have joined, at half this request's expected
    /// output; the waiting prompts are in the context by then.
    fn of(shape: &Shape, dev: &DeviceView<'_>) -> Self {
        let (seqs, context) = batch_context(dev, own_decode_context(shape));
        Self::priced(dev, seqs, context)
    }

    /// The batch of `seqs` decodes over `context` tokens on `dev`, priced.
    fn priced(dev: &DeviceView<'_>, seqs: u32, context: u64) -> Self {
        let step = StepShape::decodes(seqs, context);
        Self {
            seqs,
            step,
            step_s: dev.cost.step_seconds(&step),
        }
    }
}

/// The size and total context of the decode batch a request whose own
/// decode context is `own` joins on `dev` ([`DecodeBatch::of`], unpriced).
fn batch_context(dev: &DeviceView<'_>, own: u64) -> (u32, u64) {
    let load = &dev.load;
    let queued = load.running.saturating_add(load.waiting);
    let seqs = queued.saturating_add(1).min(dev.max_num_seqs).max(1);
    let queued_ctx = load
        .running_context_tokens
        .saturating_add(load.queued_prefill_tokens);
    let others_ctx = scale_context(queued_ctx, queued, seqs - 1);
    (seqs, others_ctx.saturating_add(own))
}

/// A proof, kept across decisions, that a device's decode side misses the
/// SLO for every request that would join a decode batch of as many
/// sequences over at least as much context, with at least as many
/// uncached tokens, at any time up to `until`: the running sequences'
/// time per token past the budget, or a prefill share of at least 1.
///
/// A fleet past its SLO makes the router prove every device's miss before
/// it may search only the fallback's band, and that proof prices each
/// device's decode side. Between two decisions few devices change in what
/// the decode side reads (a dispatch, a sequence joining or leaving;
/// streamed tokens only grow the context), so a device proved to miss
/// stays proved by a handful of comparisons, until its prefill rate has
/// decayed to where the miss stops.
///
/// Why it holds: without a step time budget the decode side is a function
/// of the batch's size, its context, the device's dispatch history, the
/// prefill rate and the cost model's terms alone, and both criteria grow
/// with the context (each step price grows with it; the time per token
/// grows with both steps while one chunk a step keeps up, and with the
/// packed interpolation past that) and with the prefill rate. The rate
/// only decays between dispatches, so the proof holds until it has decayed
/// to the least rate at which the miss holds (found by bisection over the
/// steps, which do not depend on it); the criteria carry a margin far
/// above floating-point rounding. A device with no dispatch history has
/// no rate to decay, and its typical prefill is the request's own, which
/// grows the miss with the request's uncached tokens where no step could
/// pack several such prefills. A dispatch to the device drops it (its
/// history changes), as does a new config. Devices that budget steps get
/// none: their chunk shrinks as their decodes grow, so their miss need not
/// grow with the context. Property-tested against the score
/// (`a_miss_certificate_holds_only_where_the_device_misses`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct MissCert {
    /// The key it was proved under: the cost model's pricing and the limits.
    pricing: u64,
    max_num_seqs: u32,
    max_batched_tokens: u32,
    /// The decode batch's size (with the request).
    seqs: u32,
    /// The least batch context it holds for (the request's own included).
    context: u64,
    /// The fewest uncached prompt tokens it holds for.
    uncached: u32,
    /// The latest time it holds at; `None`: proving it failed under this
    /// key, not to be tried again until the key or the history changes.
    until: Option<Duration>,
    /// A floor on the score's own time per token while it holds, seconds:
    /// the time per token at the least prefill rate it holds for.
    per_token_s: f64,
}

/// Halvings of the prefill-rate interval in a [`MissCert`]'s search for
/// the least rate at which the miss holds: a threshold within 2⁻¹⁶ of the
/// interval above the true one only shortens the proof's life.
const MISS_RATE_HALVINGS: u32 = 16;

impl MissCert {
    /// Whether it proves that `dev` misses the SLO for a request of
    /// `shape` with `uncached` tokens to prefill, at `now`.
    #[inline]
    pub(crate) fn holds(
        &self,
        dev: &DeviceView<'_>,
        shape: &Shape,
        uncached: u32,
        now: Duration,
    ) -> bool {
        self.until.is_some_and(|until| now <= until)
            && uncached >= self.uncached
            && self.keyed_like(dev)
            && {
                let (seqs, context) = batch_context(dev, own_decode_context(shape));
                seqs == self.seqs && context >= self.context
            }
    }

    /// A proof standing until `until`, or a failed one (`None`), keyed to nothing real.
    #[cfg(test)]
    pub(crate) fn for_test(until: Option<Duration>) -> Self {
        Self {
            pricing: 0,
            max_num_seqs: 0,
            max_batched_tokens: 0,
            seqs: 0,
            context: 0,
            uncached: 0,
            until,
            per_token_s: 0.0,
        }
    }

    /// Whether a proof can exist for `dev` at all: not where it budgets steps.
    pub(crate) fn may_prove(dev: &DeviceView<'_>) -> bool {
        dev.step_time_budget.is_none()
    }

    /// Whether it is a proof (else a failed attempt, kept so it is not retried).
    pub(crate) fn stands(&self) -> bool {
        self.until.is_some()
    }

    /// A floor on the score's own time per token, seconds, while it holds.
    pub(crate) fn per_token_s(&self) -> f64 {
        self.per_token_s
    }

    /// Whether it was proved (or failed) under `dev`'s pricing and limits.
    fn keyed_like(&self, dev: &DeviceView<'_>) -> bool {
        Self::may_prove(dev)
            && dev.cost.pricing_hash() == self.pricing
            && dev.max_num_seqs == self.max_num_seqs
            && dev.max_batched_tokens == self.max_batched_tokens
    }

    /// Whether a proof for `dev` already failed under its current key and batch size.
    pub(crate) fn failed_for(&self, dev: &DeviceView<'_>) -> bool {
        self.until.is_none() && self.keyed_like(dev) && batch_context(dev, 0).0 == self.seqs
    }

    /// Tries to prove that `dev`, whose decode side misses the SLO for
    /// this request now, keeps missing it: first for any request (no
    /// context of its own, one uncached token), then for requests at least
    /// this one's size. `None` where the device budgets steps, or has no
    /// dispatch history and a step could pack several prefills of this
    /// request's size; a failed proof is returned as such, so it is not
    /// tried again.
    pub(crate) fn prove(
        dev: &DeviceView<'_>,
        shape: &Shape,
        uncached: u32,
        interference: Interference,
        budgets: Budgets,
    ) -> Option<Self> {
        if !Self::may_prove(dev) {
            return None;
        }
        let (seqs, context) = batch_context(dev, own_decode_context(shape));
        // With no dispatch history the typical prefill is the request's
        // own, so the miss grows with its uncached tokens only where no
        // step could pack several such prefills (whose count falls as they
        // grow).
        let no_history = interference.rate.mean_tokens() < 1.0;
        if no_history
            && uncached.saturating_mul(MIN_PACKED_PREFILLS)
                <= dev.chunk_room(StepShape::decodes(seqs, 0))
        {
            return None;
        }
        let failed = Self {
            pricing: dev.cost.pricing_hash(),
            max_num_seqs: dev.max_num_seqs,
            max_batched_tokens: dev.max_batched_tokens,
            seqs,
            context,
            uncached,
            until: None,
            per_token_s: 0.0,
        };
        let (_, any_context) = batch_context(dev, 0);
        let any_request = (!no_history).then_some((any_context, 1));
        Some(
            any_request
                .into_iter()
                .chain([(context, uncached)])
                .find_map(|(context, uncached)| {
                    let (until, per_token_s) =
                        miss_until(dev, seqs, context, uncached, interference, budgets)?;
                    Some(Self {
                        context,
                        uncached,
                        until: Some(until),
                        per_token_s,
                        ..failed
                    })
                })
                .unwrap_or(failed),
        )
    }
}

/// The latest time up to which the decode side of `seqs` decodes over
/// `context` tokens on `dev`, with `uncached` tokens dispatched at the
/// history's rate then, misses the SLO by a margin ([`DecodeSide::misses_by_margin`]),
/// and the time per token at the history's least rate up to then; `None`
/// if it does not miss at `interference.now`.
fn miss_until(
    dev: &DeviceView<'_>,
    seqs: u32,
    context: u64,
    uncached: u32,
    interference: Interference,
    budgets: Budgets,
) -> Option<(Duration, f64)> {
    let batch = DecodeBatch::priced(dev, seqs, context);
    let mut mix = step_mix(dev, batch, interference.rate, uncached);
    // Priced whatever the rate: it is read only where prefills need packing.
    mix.packed = packed_step(dev, batch, &mix);
    let misses = |after: f64| {
        DecodeSide {
            batch: seqs,
            tpot_s: 0.0,
            running_tpot_s: mix.time_per_token(after),
            prefill_share: mix.prefill_share(after),
        }
        .misses_by_margin(budgets)
    };
    let (now_before, now_after) = interference.rates(uncached);
    if !misses(now_after) {
        return None;
    }
    let own = now_after - now_before;
    if misses(own) {
        // It misses with no history at all: the rate cannot decay past it.
        return Some((Duration::MAX, mix.time_per_token(0.0)));
    }
    let (mut lo, mut hi) = (own, now_after);
    for _ in 0..MISS_RATE_HALVINGS {
        let mid = 0.5 * (lo + hi);
        if misses(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    // The history's own rate must stay at or above this (a hair more, for
    // the rounding of the decay's exponential).
    let least = (hi - own) * (1.0 + 1e-6);
    let rate = interference.rate;
    let (at, at_rate) = (rate.at(), rate.tokens_per_s(rate.at(), interference.window));
    if !(at_rate > least && least > 0.0) {
        return None;
    }
    let tau = interference.window.as_secs_f64();
    let life = tau * (at_rate / least).ln() * (1.0 - 1e-9) - 1e-6;
    let until = at.saturating_add(Duration::try_from_secs_f64(life).ok()?);
    Some((until, mix.time_per_token(least)))
}

/// The request's own context over its decode: its prompt and half its expected output.
fn own_decode_context(shape: &Shape) -> u64 {
    u64::from(shape.prompt_tokens) + u64::from(shape.expected_output_tokens / 2)
}

/// Lower bounds on devices' predicted e2e for one request, so the router
/// can skip scoring devices that cannot be chosen (see [`super::Router::route`]).
///
/// Every term of [`score`]'s e2e is at least its price with the request
/// alone on the device: the queue delay is the snapshot's own; the prefill,
/// chunked beside co-running decodes, at least the uncached prompt in one
/// step beside those decodes once (chunks split the same causal attention
/// pairs, read the weights and past again, and pay their overheads and the
/// decodes again), which in turn is at least that step alone; and the time
/// per output token at least the decode-only step of the batch it joins (a
/// mixed step is no faster), which in turn is at least that step with this
/// request alone. The prices of the request
/// alone depend only on the device's model and the cached prefix, so
/// devices whose models price alike ([`CostModel::prices_like`]: one per
/// profile in a typical fleet) share them.
pub(crate) struct Floors<'a> {
    shape: &'a Shape,
    decode_steps: f64,
    /// Prefill prices, per (model, cached prefix).
    /// Each entry also carries its model's decode price, so a device
    /// whose pair is known costs one probe.
    prefill: [Option<AlonePrice<'a, (f64, f64)>>; ALONE_SLOTS],
    /// Decode-step prices, per model (the cached prefix does not change them).
    decode: [Option<AlonePrice<'a, f64>>; DECODE_SLOTS],
}

/// One price of the request alone on one model (from one cached prefix, for a prefill).
struct AlonePrice<'a, V> {
    cost: &'a CostModel,
    start: u32,
    seconds: V,
}

impl<'a, V: Copy> AlonePrice<'a, V> {
    /// The price in `table` for (`cost`, `start`), computed by `price` when
    /// absent: open addressing over [`ALONE_PROBES`] slots from the key's
    /// own (a direct-mapped table thrashed: 28 keys of a 7-profile fleet
    /// priced 66 prefills per decision in 64 slots).
    fn get<const N: usize>(
        table: &mut [Option<Self>; N],
        cost: &'a CostModel,
        start: u32,
        price: impl FnOnce() -> V,
    ) -> V {
        let home = alone_slot(cost, start, N);
        let mut free = None;
        for k in 0..ALONE_PROBES.min(N) {
            let i = (home + k) % N;
            match &table[i] {
                Some(a) if a.start == start && a.cost.prices_like(cost) => return a.seconds,
                Some(_) => {}
                None => {
                    free = Some(i);
                    break;
                }
            }
        }
        // A full probe run replaces the key's own slot: prices stay exact, only recomputed.
        table[free.unwrap_or(home)]
            .insert(Self {
                cost,
                start,
                seconds: price(),
            })
            .seconds
    }
}

/// Slots an [`AlonePrice`] lookup probes before replacing one.
const ALONE_PROBES: usize = 4;

/// A device's e2e floor from the request's prices alone, and what its
/// tighter floor needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Floor {
    /// The e2e floor, seconds.
    seconds: f64,
    queue_s: f64,
    prefill_s: f64,
    per_token_s: f64,
    /// The prompt's uncached tokens, and where they start.
    uncached: u32,
    start: u32,
}

impl Floor {
    /// The e2e floor, seconds.
    pub(crate) fn seconds(&self) -> f64 {
        self.seconds
    }

    /// The prompt's uncached tokens on the device.
    pub(crate) fn uncached(&self) -> u32 {
        self.uncached
    }
}

/// Slots of [`Floors`]' table of prefill prices alone, one (model, cached prefix) pair each.
const ALONE_SLOTS: usize = 64;

/// Slots of [`Floors`]' table of decode prices alone, one model each.
const DECODE_SLOTS: usize = 16;

/// The slot of (`cost`'s pricing, `start`) in a table of `slots`: models that price alike share it.
fn alone_slot(cost: &CostModel, start: u32, slots: usize) -> usize {
    let h = switchyard_backends::hash::mix64(cost.pricing_hash() ^ u64::from(start));
    (h % slots as u64) as usize
}

impl<'a> Floors<'a> {
    /// Floors for `shape`.
    pub(crate) fn new(shape: &'a Shape) -> Self {
        Self {
            shape,
            decode_steps: f64::from(shape.expected_output_tokens.saturating_sub(1)),
            prefill: [const { None }; ALONE_SLOTS],
            decode: [const { None }; DECODE_SLOTS],
        }
    }

    /// `dev`'s floor from the request's prices alone (a table probe once
    /// a device of a model that prices alike has been seen).
    pub(crate) fn alone(&mut self, dev: &DeviceView<'a>) -> Floor {
        let (_, uncached, start) = dev.uncached_suffix(self.shape.prompt_tokens);
        let cost = dev.cost;
        let Self {
            shape,
            prefill,
            decode,
            ..
        } = self;
        let (prefill_s, decode_s) = AlonePrice::get(prefill, cost, start, || {
            let prefill = StepShape::of([SeqWork {
                new_tokens: uncached,
                context: start,
            }]);
            let own_ctx = own_decode_context(shape);
            let decode_s = AlonePrice::get(decode, cost, 0, || {
                cost.step_seconds(&StepShape::decodes(1, own_ctx))
            });
            (cost.step_seconds(&prefill), decode_s)
        });
        let queue_s = dev.load.predicted_queue_delay.as_secs_f64();
        Floor {
            seconds: queue_s + prefill_s + decode_s * self.decode_steps,
            queue_s,
            prefill_s,
            per_token_s: decode_s,
            uncached,
            start,
        }
    }

    /// The request's shape.
    pub(crate) fn shape(&self) -> &'a Shape {
        self.shape
    }

    /// The floor of the request's cost on `dev` (one step price): its
    /// device time is its prefill alone plus its share of each decode step,
    /// which is at least the batch's decode-only step over the batch.
    pub(crate) fn cost_usd(&self, dev: &DeviceView<'_>, floor: Floor) -> f64 {
        let batch = DecodeBatch::of(self.shape, dev);
        (floor.prefill_s + self.decode_steps * batch.step_s / f64::from(batch.seqs))
            * dev.cost.usd_per_second()
    }

    /// `floor` with a time per token of at least `per_token_s` (from a
    /// [`MissCert`]): no step priced.
    pub(crate) fn with_per_token(&self, floor: Floor, per_token_s: f64) -> f64 {
        floor.queue_s + floor.prefill_s + per_token_s.max(floor.per_token_s) * self.decode_steps
    }

    /// The tighter floor with `dev`'s load (two step prices): the prefill
    /// in one step beside the decodes it would co-run (every chunk carries
    /// them), and the decode-only step of the batch the request joins.
    pub(crate) fn batched(&self, dev: &DeviceView<'_>, floor: Floor) -> Batched {
        self.batched_after(batched_ttft_s(dev, floor), DecodeBatch::of(self.shape, dev))
    }

    /// [`Self::batched`] with the first token's floor still the request's
    /// prefill alone (one step price: the decode batch), for a proof whose
    /// decode side may settle it before the prefill beside the decodes is priced.
    pub(crate) fn batched_decode(&self, dev: &DeviceView<'_>, floor: Floor) -> Batched {
        self.batched_after(
            floor.queue_s + floor.prefill_s,
            DecodeBatch::of(self.shape, dev),
        )
    }

    /// [`Self::batched_decode`]'s floor made [`Self::batched`]'s.
    pub(crate) fn with_batched_ttft(
        &self,
        dev: &DeviceView<'_>,
        floor: Floor,
        batched: &mut Batched,
    ) {
        *batched = self.batched_after(batched_ttft_s(dev, floor), batched.decode);
    }

    /// The batched floor of `decode` after a first token at `ttft_s`.
    #[inline]
    fn batched_after(&self, ttft_s: f64, decode: DecodeBatch) -> Batched {
        Batched {
            seconds: ttft_s + decode.step_s * self.decode_steps,
            ttft_s,
            decode,
        }
    }

    /// The tightest floor (the price of [`score`]'s decode side): the
    /// batched floor's first token, then [`score`]'s own time per token,
    /// interference included. Only the prefill is still a floor, so where
    /// devices' predictions are close (a steady state the fastest band has
    /// equalised) this one rules out what the looser floors cannot.
    pub(crate) fn decoding(
        &self,
        dev: &DeviceView<'_>,
        floor: Floor,
        batched: &Batched,
        interference: Interference,
    ) -> Decoding {
        let side = decode_side(dev, interference, floor.uncached, batched.decode);
        self.decoding_after(batched, side)
    }

    /// [`score`]'s decode side on `dev` (two step prices or more).
    pub(crate) fn side(
        &self,
        dev: &DeviceView<'_>,
        floor: Floor,
        interference: Interference,
    ) -> DecodeSide {
        decode_side_of(self.shape, dev, interference, floor.uncached)
    }

    /// The decoding floor of `side` after the first token of `batched`.
    pub(crate) fn decoding_after(&self, batched: &Batched, side: DecodeSide) -> Decoding {
        Decoding {
            seconds: batched.ttft_s + side.tpot_s * self.decode_steps,
            side,
        }
    }

    /// Whether [`score`] says `dev` misses the SLO, proved from its floor
    /// alone (no step priced, no dispatch history read): its TTFT floor or
    /// its time per token floor past the budget. `false` proves nothing.
    #[inline]
    pub(crate) fn misses_slo_by_floor(&self, floor: Floor, budgets: Budgets) -> bool {
        floor_exceeds(floor.queue_s + floor.prefill_s, budgets.ttft.as_secs_f64())
            || (self.decode_steps > 0.0
                && floor_exceeds(floor.per_token_s, budgets.tpot.as_secs_f64()))
    }

    /// Whether [`score`] says `dev` misses the SLO, proved from its floor
    /// and dispatch history (no step priced): its prefill share with this
    /// request dispatched at least 1 (a mixed step of a `c`-token chunk
    /// computes at least `c` tokens, so the share is at least the rate
    /// times the compute seconds per token). `false` proves nothing.
    #[inline]
    pub(crate) fn misses_slo_by_rate(
        &self,
        dev: &DeviceView<'_>,
        floor: Floor,
        interference: Interference,
    ) -> bool {
        interference.rates(floor.uncached).1 * dev.cost.compute_seconds_per_token() * (1.0 - 1e-9)
            >= 1.0
    }

    /// Whether `batched`'s first-token floor is past the TTFT budget.
    pub(crate) fn misses_slo_ttft(&self, batched: &Batched, budgets: Budgets) -> bool {
        floor_exceeds(batched.ttft_s, budgets.ttft.as_secs_f64())
    }

    /// Whether `decoding`'s decode side (the score's own) is past the SLO.
    pub(crate) fn misses_slo_side(&self, decoding: &Decoding, budgets: Budgets) -> bool {
        !decoding
            .side
            .meets(budgets, self.shape.expected_output_tokens)
    }
}

/// The first token's floor on `dev` with its queue: the prefill in one
/// step beside the decodes it would co-run (every chunk carries them).
#[inline]
fn batched_ttft_s(dev: &DeviceView<'_>, floor: Floor) -> f64 {
    let mut prefill = co_running(dev);
    prefill.push(SeqWork {
        new_tokens: floor.uncached,
        context: floor.start,
    });
    floor.queue_s + dev.cost.step_seconds(&prefill)
}

/// A device's batched e2e floor ([`Floors::batched`]), its part up to
/// the first token, and the decode batch it priced.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batched {
    /// The e2e floor, seconds.
    pub seconds: f64,
    /// The floor of the time to first token, seconds.
    ttft_s: f64,
    /// The decode batch the request joins, priced.
    decode: DecodeBatch,
}

/// A device's decoding e2e floor ([`Floors::decoding`]), and the decode
/// side it priced, which its score reuses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decoding {
    /// The e2e floor, seconds.
    pub seconds: f64,
    /// [`score`]'s decode side on the device.
    pub side: DecodeSide,
}

/// Whether a device whose cost floor is `floor_usd` predicts a cost above
/// `limit_usd` whatever its score: the margin covers the floating-point
/// rounding of both computations (costs are not rounded further).
pub(crate) fn cost_floor_exceeds(floor_usd: f64, limit_usd: f64) -> bool {
    floor_usd * (1.0 - 1e-9) > limit_usd
}

/// Whether a device whose e2e floor is `floor_s` predicts an e2e above
/// `limit_s` whatever its score: the margin covers the floating-point
/// rounding of both computations and the score's rounding to nanoseconds.
pub(crate) fn floor_exceeds(floor_s: f64, limit_s: f64) -> bool {
    floor_s * (1.0 - 1e-9) - 2e-9 > limit_s
}

/// The decode-only and mixed steps of the batch `decodes`: the mixed one
/// carries a typical dispatched prefill (the history's mean, or this
/// request's `own` before any), cut to the chunk the device would take,
/// at the context of that prefill's middle chunk.
#[inline(always)]
fn step_mix(dev: &DeviceView<'_>, batch: DecodeBatch, rate: PrefillRate, own: u32) -> StepMix {
    let cost = dev.cost;
    let (decodes, decode_s) = (batch.step, batch.step_s);
    let typical = if rate.mean_tokens() >= 1.0 {
        rate.mean_tokens().round().min(f64::from(u32::MAX)) as u32
    } else {
        own
    };
    let (chunk, mixed_s) = match dev.prefill_plan(decodes, 0, typical, Some(decode_s)) {
        // The whole typical prefill in one step at context 0.
        PrefillPlan::OneStep(s) => (typical, s),
        PrefillPlan::Chunks(chunk) => {
            let chunk = chunk.min(typical).max(1);
            let context = typical.saturating_sub(chunk) / 2;
            let mut mixed = decodes;
            mixed.push(SeqWork {
                new_tokens: chunk,
                context,
            });
            (chunk, cost.step_seconds(&mixed))
        }
    };
    StepMix {
        decode_s,
        mixed_s,
        chunk_tokens: chunk,
        packed: None,
    }
}

/// Fewest of a typical prefill a step must take for the router to price
/// them packed: small prefills (cached prompts, a few uncached tokens) wait
/// at most a short step to share one, while a large one that waits for
/// another to fill a step would add a queue the TTFT does not price.
/// Measured on the simulator's grid: packing pairs of large prefills let
/// the elastic objective overfill its cheap devices (mixed16, azure-conv:
/// TTFT p95 2.14 s at 128 req/s against a 2 s SLO).
const MIN_PACKED_PREFILLS: u32 = 4;

/// The decode batch's step packed with as many of `mix`'s whole prefills
/// (its chunk, at context 0) as the device takes in one step: what its
/// engine runs when small prefills (cached prompts) come faster than one a
/// step. `None` where a step takes fewer than [`MIN_PACKED_PREFILLS`].
fn packed_step(dev: &DeviceView<'_>, batch: DecodeBatch, mix: &StepMix) -> Option<PackedStep> {
    let each = mix.chunk_tokens.max(1);
    // The step's token room bounds what it takes: past it, no pricing.
    if each.saturating_mul(MIN_PACKED_PREFILLS) > dev.chunk_room(batch.step) {
        return None;
    }
    let most = dev.prefill_chunk_priced(batch.step, 0, Some(batch.step_s));
    let count = most / each;
    if count < MIN_PACKED_PREFILLS {
        return None;
    }
    let mut step = batch.step;
    step.push_n(
        SeqWork {
            new_tokens: each,
            context: 0,
        },
        count,
    );
    Some(PackedStep {
        tokens: each * count,
        seconds: dev.cost.step_seconds(&step),
    })
}

/// Context tokens beyond any real load; larger snapshots are clamped so
/// the step arithmetic cannot overflow.
const MAX_CONTEXT_TOKENS: u64 = 1 << 48;

/// `total · part / whole` context tokens (`total` when `part ≥ whole`), at most [`MAX_CONTEXT_TOKENS`].
fn scale_context(total: u64, whole: u32, part: u32) -> u64 {
    let total = total.min(MAX_CONTEXT_TOKENS);
    if part >= whole {
        total
    } else {
        // part < whole, so the result is ≤ total; u128 cannot overflow.
        (u128::from(total) * u128::from(part) / u128::from(whole)) as u64
    }
}

/// Seconds to a duration rounded to the nanosecond, saturating at zero
/// (also for NaN) and `u64::MAX` ns (584 years); a dozen instructions where
/// `Duration::try_from_secs_f64` takes five times as many.
#[inline]
fn secs(s: f64) -> Duration {
    // `as` saturates and maps NaN to 0.
    Duration::from_nanos((s * 1e9 + 0.5) as u64)
}

/// Total time of prefilling `tokens` tokens after `start` cached ones, in
/// chunks of `chunk`, each chunk a step with `base` (the co-running decodes).
///
/// O(1) whatever the chunk count: a full chunk's compute and memory times
/// are affine in its index (its context grows by `chunk` per chunk; KV
/// bytes at their own efficiency only change the slope), so the sum of
/// their maximum (the roofline) is the sum of at most two arithmetic series
/// split at the crossover. The overheads are affine too (the KV overhead
/// grows with context), and a pass of the co-running decodes of their own
/// (`split_mixed_steps`) is the same every chunk: one more arithmetic
/// series. The last partial chunk is priced alone.
pub(crate) fn chunked_prefill_seconds(
    cost: &CostModel,
    base: StepShape,
    start: u32,
    tokens: u32,
    chunk: u32,
) -> f64 {
    let chunk = chunk.max(1);
    let full = tokens / chunk;
    let rest = tokens % chunk;
    let with_chunk = |new_tokens: u32, context: u64| {
        let mut s = base;
        // Contexts past u32::MAX cannot occur for real prompts; saturate.
        let context = u32::try_from(context).unwrap_or(u32::MAX);
        s.push(SeqWork {
            new_tokens,
            context,
        });
        cost.step_cost(&s)
    };
    let mut total = 0.0;
    if full > 0 {
        let n = u64::from(full);
        let first = with_chunk(chunk, u64::from(start));
        if n == 1 {
            total += first.seconds();
        } else {
            let last = with_chunk(chunk, u64::from(start) + (n - 1) * u64::from(chunk));
            // Outside the chunk's roofline: the overheads (affine: the KV
            // overhead grows with context) and the decodes' own pass, if any
            // (constant).
            let beside = |c: &StepCost| c.overhead_s + c.decode_pass.map_or(0.0, |p| p.seconds());
            total += sum_max_affine(
                n,
                (first.main.compute_s, last.main.compute_s),
                (first.main.memory_s, last.main.memory_s),
            ) + (beside(&first) + beside(&last)) * n as f64 / 2.0;
        }
    }
    if rest > 0 {
        let context = u64::from(start) + u64::from(full) * u64::from(chunk);
        total += with_chunk(rest, context).seconds();
    }
    total
}

/// `Σ_{i=0}^{n-1} max(a(i), m(i))` for affine `a`, `m` given by their values at `0` and `n − 1` (`n ≥ 2`).
fn sum_max_affine(n: u64, a: (f64, f64), m: (f64, f64)) -> f64 {
    let last = (n - 1) as f64;
    // Sum of an affine function over integers lo..=hi, from its endpoint values.
    let series = |(v0, v1): (f64, f64), lo: f64, hi: f64| {
        let at = |i: f64| v0 + (v1 - v0) * i / last;
        (hi - lo + 1.0) * (at(lo) + at(hi)) / 2.0
    };
    let d0 = a.0 - m.0;
    let d1 = a.1 - m.1;
    if d0 >= 0.0 && d1 >= 0.0 {
        return series(a, 0.0, last);
    }
    if d0 <= 0.0 && d1 <= 0.0 {
        return series(m, 0.0, last);
    }
    // One crossover at i* = d0 / (d0 − d1) · (n − 1), strictly inside (0, n − 1).
    let k = (d0 / (d0 - d1) * last).floor().clamp(0.0, last - 1.0);
    let (head, tail) = if d0 > 0.0 { (a, m) } else { (m, a) };
    series(head, 0.0, k) + series(tail, k + 1.0, last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::tests::{catalog_cost, view};

    /// No dispatch history: the interference terms are zero.
    const NO_HISTORY: Interference = Interference {
        rate: PrefillRate::ZERO,
        now: Duration::ZERO,
        window: Duration::from_secs(10),
    };

    fn brute_force(cost: &CostModel, base: StepShape, start: u32, tokens: u32, chunk: u32) -> f64 {
        let mut done = 0;
        let mut total = 0.0;
        while done < tokens {
            let q = chunk.min(tokens - done);
            let mut s = base;
            s.push(SeqWork {
                new_tokens: q,
                context: start + done,
            });
            total += cost.step_seconds(&s);
            done += q;
        }
        total
    }

    /// `CostModel::decode_step_time` in seconds, before rounding to a `Duration`.
    fn decode_seconds(cost: &CostModel, batch: u32, context: u64) -> f64 {
        cost.step_cost(&StepShape::decodes(batch, context))
            .seconds()
    }

    /// `catalog_cost` with a KV-cache bandwidth efficiency of `ratio` × the
    /// bandwidth efficiency, mixed steps split into two passes if `split`,
    /// and `kv_us_per_mb` of KV overhead.
    fn variant(device: &str, model: &str, ratio: f64, split: bool, kv_us_per_mb: f64) -> CostModel {
        let cost = catalog_cost(device, model);
        let mut profile = cost.device().clone();
        let cal = &mut profile.calibration;
        cal.kv_bandwidth_efficiency = Some(cal.bandwidth_efficiency * ratio);
        cal.split_mixed_steps = split;
        cal.kv_overhead_us_per_mb = kv_us_per_mb;
        CostModel::new(profile, cost.model().clone())
    }

    #[test]
    fn closed_form_prefill_matches_chunk_loop() {
        for device in ["h100-sxm", "l4", "mi300x", "cpu"] {
            for model in ["llama-3.1-8b", "mixtral-8x7b", "deepseek-v2-lite"] {
                // The catalog's calibration; KV bytes six or twenty times
                // dearer than weight bytes (memory time grows faster with
                // context, which moves the roofline crossover); the
                // co-running decodes as a pass of their own; a KV overhead.
                let costs = [
                    catalog_cost(device, model),
                    variant(device, model, 1.0 / 6.0, false, 0.0),
                    variant(device, model, 1.0 / 20.0, false, 0.0),
                    variant(device, model, 1.0, true, 0.0),
                    variant(device, model, 1.0, false, 250.0),
                    variant(device, model, 1.0 / 6.0, true, 250.0),
                ];
                for cost in &costs {
                    let cal = &cost.device().calibration;
                    let (kv, split, kv_us) = (
                        cal.kv_efficiency(),
                        cal.split_mixed_steps,
                        cal.kv_overhead_us_per_mb,
                    );
                    for (running, ctx) in [(0u32, 0u64), (8, 8 * 2000), (200, 200 * 30_000)] {
                        let base = StepShape::decodes(running, ctx);
                        for (start, tokens, chunk) in [
                            (0u32, 1u32, 2048u32),
                            (0, 2048, 2048),
                            (0, 8000, 2048),
                            (4096, 100_000, 1848),
                            (0, 60_000, 16),
                            (512, 30_001, 7),
                        ] {
                            let want = brute_force(cost, base, start, tokens, chunk);
                            let got = chunked_prefill_seconds(cost, base, start, tokens, chunk);
                            assert!(
                                (got - want).abs() <= 1e-9 * want,
                                "{device}/{model} kv eff {kv} split {split} kv µs/MB {kv_us} running {running} start {start} tokens {tokens} chunk {chunk}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The property tests' cost model: one of four devices and three
    /// models (dense, and two mixtures of experts), mixed steps split or not.
    fn prop_variant(device: usize, model: usize, split: bool) -> CostModel {
        variant(
            ["h100-sxm", "l4", "mi300x", "cpu"][device],
            ["llama-3.1-8b", "mixtral-8x7b", "deepseek-v2-lite"][model],
            1.0,
            split,
            0.0,
        )
    }

    /// An idle device of `cost` given `running` sequences of `ctx_per_seq`
    /// context each, `waiting` more and `queued` prompt tokens.
    fn loaded_view(
        cost: &CostModel,
        (running, waiting, ctx_per_seq, queued): (u32, u32, u64, u64),
    ) -> DeviceView<'_> {
        let mut dev = view(0, cost);
        dev.load.running = running;
        dev.load.waiting = waiting;
        dev.load.running_context_tokens = u64::from(running) * ctx_per_seq;
        dev.load.queued_prefill_tokens = queued;
        dev
    }

    /// A dispatch history of `(tokens, ms after the one before)`, and the
    /// time of the last dispatch.
    fn history_of(dispatches: &[(u32, u64)], window: Duration) -> (PrefillRate, Duration) {
        let mut rate = PrefillRate::ZERO;
        let mut now = Duration::ZERO;
        for &(tokens, after_ms) in dispatches {
            now += Duration::from_millis(after_ms);
            rate.record(tokens, now, window);
        }
        (rate, now)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// A device's floors are floors: the e2e one from the request's
        /// prices alone is at most the one with its load, which is at most
        /// the score's e2e (within [`floor_exceeds`]' margin), and the cost
        /// floor is at most the score's cost, whatever the
        /// profile, model (dense or mixture of experts), load, limits, step
        /// budget, cached prefix and dispatch history; and a device the
        /// floors prove to miss the SLO is scored as missing it.
        #[test]
        fn floors_are_below_the_scored_e2e(
            (device, model) in (0usize..4, 0usize..3),
            split in proptest::bool::ANY,
            // Idle devices too, whose floors are tight.
            (running, waiting, ctx_per_seq) in (
                proptest::prop_oneof![0u32..1, 0u32..400],
                proptest::prop_oneof![0u32..1, 0u32..50],
                0u64..40_000,
            ),
            (queued, delay_ms) in (0u64..200_000, 0u64..2_000),
            (prompt, max_tokens, cached) in (0u32..40_000, 0u32..4_000, 0u32..40_000),
            (max_num_seqs, max_batched) in (0u32..300, 0u32..8_192),
            budget_ms in proptest::option::of(1u64..400),
            dispatches in proptest::collection::vec((1u32..20_000, 0u64..5_000), 0..6),
            // The SLO's budgets, as factors on the predicted TTFT and
            // TPOT (so many cases fall near the line).
            (ttft_factor, tpot_factor) in (0.5f64..1.5, 0.5f64..1.5),
        ) {
            let cost = prop_variant(device, model, split);
            let mut dev = loaded_view(&cost, (running, waiting, ctx_per_seq, queued));
            dev.load.predicted_queue_delay = Duration::from_millis(delay_ms);
            dev.max_num_seqs = max_num_seqs;
            dev.max_batched_tokens = max_batched;
            dev.cached_prefix_tokens = cached;
            dev.step_time_budget = budget_ms.map(Duration::from_millis);
            let window = Duration::from_secs(10);
            let (rate, now) = history_of(&dispatches, window);
            let shape = crate::router::Router::default().shape(&crate::router::RouteRequest {
                prompt_tokens: prompt,
                max_tokens,
            });
            let interference = Interference { rate, now, window };
            let unbounded = Budgets { ttft: Duration::MAX, tpot: Duration::MAX };
            let predicted = score(&shape, &dev, unbounded, interference, None);
            let budgets = Budgets {
                ttft: predicted.ttft.mul_f64(ttft_factor),
                tpot: predicted.tpot.max(predicted.running_tpot).mul_f64(tpot_factor),
            };
            let scored = score(&shape, &dev, budgets, interference, None);
            let e2e = scored.e2e;
            let mut floors = Floors::new(&shape);
            let floor = floors.alone(&dev);
            let cost = floors.cost_usd(&dev, floor);
            proptest::prop_assert!(
                !cost_floor_exceeds(cost, scored.cost_usd),
                "cost floor {} > cost {}", cost, scored.cost_usd
            );
            let (alone, batched) = (floor.seconds(), floors.batched(&dev, floor));
            if floors.misses_slo_by_floor(floor, budgets)
                || floors.misses_slo_by_rate(&dev, floor, interference)
            {
                proptest::prop_assert!(!scored.meets_slo, "proved missing alone: {:?}", scored);
            }
            let decoding = floors.decoding(&dev, floor, &batched, interference);
            if floors.misses_slo_ttft(&batched, budgets) {
                proptest::prop_assert!(!scored.meets_slo, "proved missing by the batched TTFT floor: {:?}", scored);
            }
            if floors.misses_slo_side(&decoding, budgets) {
                proptest::prop_assert!(!scored.meets_slo, "proved missing by the decode side: {:?}", scored);
            }
            let with_side = score(&shape, &dev, budgets, interference, Some(decoding.side));
            proptest::prop_assert_eq!(with_side, scored);
            // The proof's order: the decode batch first, the prefill beside
            // the decodes priced after; the same floors to the bit.
            let mut loose = floors.batched_decode(&dev, floor);
            let loose_decoding = floors.decoding(&dev, floor, &loose, interference).seconds;
            proptest::prop_assert!(
                !floor_exceeds(loose_decoding, decoding.seconds),
                "decoding floor with the prefill alone {} > decoding floor {}", loose_decoding, decoding.seconds
            );
            floors.with_batched_ttft(&dev, floor, &mut loose);
            proptest::prop_assert_eq!(loose.seconds.to_bits(), batched.seconds.to_bits());
            let after = floors.decoding_after(&loose, decoding.side).seconds;
            proptest::prop_assert_eq!(after.to_bits(), decoding.seconds.to_bits());
            let decoding = decoding.seconds;
            let batched = batched.seconds;
            proptest::prop_assert!(!floor_exceeds(alone, batched), "alone {} > batched {}", alone, batched);
            proptest::prop_assert!(
                !floor_exceeds(batched, decoding),
                "batched floor {} > decoding floor {}", batched, decoding
            );
            proptest::prop_assert!(
                !floor_exceeds(decoding, e2e.as_secs_f64()),
                "decoding floor {} > e2e {:?}", decoding, e2e
            );
        }

        /// A miss certificate proves only misses: wherever it holds (the
        /// same key and batch size, at least its context and uncached
        /// tokens, up to its time), the device's score misses the SLO by
        /// its decode side, and its time per token is at least the
        /// certificate's floor; whatever the profile, model, limits, load,
        /// history, later request and later context. Devices that budget
        /// steps get none.
        #[test]
        fn a_miss_certificate_holds_only_where_the_device_misses(
            (device, model) in (0usize..4, 0usize..3),
            split in proptest::bool::ANY,
            (running, waiting, ctx_per_seq) in (0u32..400, 0u32..50, 0u64..40_000),
            queued in 0u64..200_000,
            (prompt, max_tokens, cached) in (0u32..40_000, 0u32..4_000, 0u32..40_000),
            (max_num_seqs, max_batched) in (0u32..300, 0u32..8_192),
            budgeted in proptest::bool::weighted(0.1),
            // No history too: the typical prefill is then the request's own.
            dispatches in proptest::collection::vec((1u32..20_000, 0u64..5_000), 0..6),
            tpot_factor in 0.3f64..1.2,
            // The later request, context growth and time (a share of the
            // certificate's life, or past it).
            (prompt2, max_tokens2, cached2) in (0u32..40_000, 0u32..4_000, 0u32..40_000),
            (grown, joined) in (0u64..200_000, proptest::bool::weighted(0.2)),
            later in proptest::prop_oneof![0.0f64..1.0, 1.0f64..1.5, proptest::strategy::Just(1.0)],
        ) {
            let cost = prop_variant(device, model, split);
            let mut dev = loaded_view(&cost, (running, waiting, ctx_per_seq, queued));
            dev.max_num_seqs = max_num_seqs;
            dev.max_batched_tokens = max_batched;
            dev.cached_prefix_tokens = cached;
            dev.step_time_budget = budgeted.then(|| Duration::from_millis(50));
            let window = Duration::from_secs(10);
            let (rate, now) = history_of(&dispatches, window);
            let router = crate::router::Router::default();
            let shape_of = |prompt_tokens, max_tokens| {
                router.shape(&crate::router::RouteRequest { prompt_tokens, max_tokens })
            };
            let shape = shape_of(prompt, max_tokens);
            let interference = Interference { rate, now, window };
            let unbounded = Budgets { ttft: Duration::MAX, tpot: Duration::MAX };
            let predicted = score(&shape, &dev, unbounded, interference, None);
            let budgets = Budgets {
                ttft: Duration::MAX,
                tpot: predicted.running_tpot.mul_f64(tpot_factor),
            };
            let (_, uncached, _) = dev.uncached_suffix(prompt);
            let Some(cert) = MissCert::prove(&dev, &shape, uncached, interference, budgets) else {
                proptest::prop_assert!(budgeted || rate.mean_tokens() < 1.0);
                return Ok(());
            };
            proptest::prop_assert!(!budgeted);
            let Some(until) = cert.until else {
                return Ok(());
            };
            proptest::prop_assert!(until >= now);
            // Later: the running sequences' context grown, maybe one more
            // sequence (another batch size: the certificate must not hold),
            // another request, a later time.
            let mut dev2 = dev;
            dev2.load.running_context_tokens += grown;
            dev2.load.running += u32::from(joined);
            dev2.cached_prefix_tokens = cached2;
            let shape2 = shape_of(prompt2, max_tokens2);
            let (_, uncached2, _) = dev2.uncached_suffix(prompt2);
            let life = until.min(now + Duration::from_secs(100)) - now;
            let at = now + life.mul_f64(later);
            for (dev2, shape2, uncached2) in [(&dev, &shape, uncached), (&dev2, &shape2, uncached2)] {
                if !cert.holds(dev2, shape2, uncached2, at) {
                    continue;
                }
                let interference = Interference { now: at, ..interference };
                let scored = score(shape2, dev2, budgets, interference, None);
                proptest::prop_assert!(!scored.meets_slo, "certified miss meets the SLO: {:?} {:?}", cert, scored);
                proptest::prop_assert!(
                    scored.prefill_share >= 1.0 || scored.running_tpot > budgets.tpot,
                    "certified miss not by its decode side: {:?} {:?}", cert, scored
                );
                proptest::prop_assert!(
                    !floor_exceeds(cert.per_token_s(), scored.tpot.as_secs_f64()),
                    "certified time per token {} > scored {:?}", cert.per_token_s(), scored.tpot
                );
            }
            // Proved from this request now, it holds for it now.
            if cert.uncached == uncached || cert.uncached == 1 {
                proptest::prop_assert!(cert.holds(&dev, &shape, uncached, now));
            }
        }

        /// The one-step shortcut answers exactly what the chunk search
        /// would: a one-step plan only where the budgeted chunk takes every
        /// token (so the chunk sum is that one step's price, to the bit),
        /// else the search's own chunk.
        #[test]
        fn one_step_plan_is_the_searched_chunk(
            device in 0usize..4,
            running in 0u32..300,
            ctx_per_seq in 0u64..40_000,
            start in 0u32..20_000,
            tokens in 1u32..6_000,
            budget_ms in proptest::option::of(1u64..400),
            max_batched in 1u32..4_096,
            decode_s in proptest::option::of(0.0f64..0.5),
        ) {
            let cost = catalog_cost(["h100-sxm", "l4", "mi300x", "cpu"][device], "llama-3.1-8b");
            let mut dev = view(0, &cost);
            dev.max_batched_tokens = max_batched;
            dev.step_time_budget = budget_ms.map(Duration::from_millis);
            let decodes = StepShape::decodes(running, u64::from(running) * ctx_per_seq);
            let chunk = dev.prefill_chunk_priced(decodes, start, decode_s);
            match dev.prefill_plan(decodes, start, tokens, decode_s) {
                PrefillPlan::OneStep(s) => {
                    proptest::prop_assert!(chunk >= tokens, "chunk {} < tokens {}", chunk, tokens);
                    let searched = chunked_prefill_seconds(&cost, decodes, start, tokens, chunk);
                    proptest::prop_assert_eq!(s.to_bits(), searched.to_bits());
                }
                PrefillPlan::Chunks(c) => proptest::prop_assert_eq!(c, chunk),
            }
        }
    }

    #[test]
    fn alone_prices_are_computed_once_per_model_and_prefix() {
        let costs: Vec<CostModel> = [
            "h100-sxm", "l4", "mi300x", "cpu", "a100-80g", "l40s", "h200",
        ]
        .iter()
        .map(|d| variant(d, "llama-3.1-8b", 1.0, false, 0.0))
        .collect();
        let mut table: [Option<AlonePrice<'_, f64>>; ALONE_SLOTS] = [const { None }; ALONE_SLOTS];
        let mut priced = 0;
        // A 256-device fleet cycling through 7 models and 4 cached prefixes.
        for i in 0..256u32 {
            let (cost, start) = (&costs[i as usize % 7], (i / 7 % 4) * 2048);
            let seconds = AlonePrice::get(&mut table, cost, start, || {
                priced += 1;
                f64::from(start)
            });
            assert_eq!(seconds, f64::from(start));
        }
        assert_eq!(priced, 28);
    }

    #[test]
    fn closed_form_crosses_over_with_a_separate_kv_efficiency() {
        // A prefill that starts compute-bound and turns memory-bound as its
        // context grows only because KV bytes are dear: the closed form must
        // split the series at the crossover.
        let cost = variant("h100-sxm", "llama-3.1-8b", 1.0 / 200.0, false, 0.0);
        let (start, tokens, chunk) = (0u32, 40_000u32, 2048u32);
        let step = |context: u32| {
            cost.step_cost(&StepShape::of([SeqWork {
                new_tokens: chunk,
                context,
            }]))
        };
        let full = tokens / chunk;
        let (first, last) = (step(start), step(start + (full - 1) * chunk));
        assert!(first.main.compute_s > first.main.memory_s, "{first:?}");
        assert!(last.main.compute_s < last.main.memory_s, "{last:?}");
        let same = catalog_cost("h100-sxm", "llama-3.1-8b");
        let want = brute_force(&cost, StepShape::default(), start, tokens, chunk);
        let got = chunked_prefill_seconds(&cost, StepShape::default(), start, tokens, chunk);
        assert!((got - want).abs() <= 1e-9 * want, "{got} vs {want}");
        assert!(got > chunked_prefill_seconds(&same, StepShape::default(), start, tokens, chunk));
    }

    #[test]
    fn ttft_grows_with_queued_load() {
        let cost = catalog_cost("h100-sxm", "llama-3.1-8b");
        let shape = crate::router::Router::default().shape(&crate::router::RouteRequest {
            prompt_tokens: 2000,
            max_tokens: 200,
        });
        let budgets = Budgets {
            ttft: Duration::MAX,
            tpot: Duration::MAX,
        };
        let mut last = Duration::ZERO;
        for (running, queued, delay_ms) in [
            (0u32, 0u64, 0u64),
            (16, 0, 0),
            (64, 4000, 30),
            (200, 50_000, 400),
        ] {
            let mut d = view(0, &cost);
            d.load.running = running;
            d.load.running_context_tokens = u64::from(running) * 1500;
            d.load.queued_prefill_tokens = queued;
            d.load.predicted_queue_delay = Duration::from_millis(delay_ms);
            let s = score(&shape, &d, budgets, NO_HISTORY, None);
            assert!(s.ttft > last, "running {running}: {:?} ≤ {last:?}", s.ttft);
            assert!(s.ttft >= s.queue_delay);
            last = s.ttft;
        }
    }

    #[test]
    fn cached_prefix_lowers_ttft_and_cost() {
        let cost = catalog_cost("h100-sxm", "llama-3.1-8b");
        let shape = crate::router::Router::default().shape(&crate::router::RouteRequest {
            prompt_tokens: 6000,
            max_tokens: 100,
        });
        let budgets = Budgets {
            ttft: Duration::MAX,
            tpot: Duration::MAX,
        };
        let cold = view(0, &cost);
        let mut warm = cold;
        warm.cached_prefix_tokens = 5000;
        let mut all = cold;
        all.cached_prefix_tokens = 9000; // more than the prompt: clamped, one token recomputed
        let (c, w, a) = (
            score(&shape, &cold, budgets, NO_HISTORY, None),
            score(&shape, &warm, budgets, NO_HISTORY, None),
            score(&shape, &all, budgets, NO_HISTORY, None),
        );
        assert!(w.ttft < c.ttft && w.cost_usd < c.cost_usd);
        assert!(a.ttft < w.ttft && a.ttft > Duration::ZERO);
        assert_eq!(a.cached_prefix_tokens, 6000);
        // Decode is unaffected by the cache.
        assert_eq!(w.tpot, c.tpot);
    }

    #[test]
    fn e2e_and_cost_follow_the_formulas() {
        let cost = catalog_cost("mi300x", "llama-3.1-8b");
        let shape = crate::router::Router::default().shape(&crate::router::RouteRequest {
            prompt_tokens: 100,
            max_tokens: 1000,
        });
        let budgets = Budgets {
            ttft: Duration::MAX,
            tpot: Duration::MAX,
        };
        let mut d = view(3, &cost);
        d.load.running = 9;
        d.load.running_context_tokens = 9 * 1000;
        let s = score(&shape, &d, budgets, NO_HISTORY, None);
        let tpot = cost.decode_step_time(10, 9000 + 100 + 500);
        assert!(s.tpot.max(tpot) - s.tpot.min(tpot) <= Duration::from_nanos(1));
        let tpot_s = decode_seconds(&cost, 10, 9000 + 100 + 500);
        let e2e = s.ttft.as_secs_f64() + 999.0 * tpot_s;
        assert!((s.e2e.as_secs_f64() - e2e).abs() < 2e-9);
        let alone = cost.prefill_time(100, 0).as_secs_f64();
        let share = alone + 999.0 * tpot_s / 10.0;
        assert!((s.device_seconds - share).abs() < 2e-9);
        assert!((s.cost_usd - share * cost.usd_per_second()).abs() < 1e-12);
        assert!(s.meets_slo);
    }

    #[test]
    fn full_batch_caps_decode_batch() {
        let cost = catalog_cost("h100-sxm", "llama-3.1-8b");
        let shape = crate::router::Router::default().shape(&crate::router::RouteRequest {
            prompt_tokens: 100,
            max_tokens: 100,
        });
        let budgets = Budgets {
            ttft: Duration::MAX,
            tpot: Duration::MAX,
        };
        let mut d = view(0, &cost);
        d.max_num_seqs = 4;
        d.load.running = 4;
        d.load.running_context_tokens = 4 * 1000;
        let s = score(&shape, &d, budgets, NO_HISTORY, None);
        // Batch of 4: three others (3/4 of the running context) plus this request.
        let tpot = cost.decode_step_time(4, 3000 + 100 + 50);
        assert!(s.tpot.max(tpot) - s.tpot.min(tpot) <= Duration::from_nanos(1));
    }
}
