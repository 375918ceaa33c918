//! The shape-aware router: places each request on one device of a
//! heterogeneous fleet serving one model, from each device's cost model and
//! load snapshot.
//!
//! Pure and clock-agnostic: no I/O, threads, sleeping or wall clock. A
//! decision is [`Router::shape`] (classify the request), then
//! [`Router::score`] for every device (predict its service; pure), then a
//! policy picks from the scores ([`PolicyKind`]). Scoring and picking are
//! separate so every decision can be explained by its [`Decision::scores`].
//!
//! # Shape
//! With prompt tokens `P`, `max_tokens` `M` and expected output
//! `E = OutputEstimator::expected(M)` (`= M` before any observation, then
//! `min(M, ⌈EWMA of observed output lengths⌉)`, at least 1 when `M ≥ 1`):
//! ```text
//! class   = prefill-heavy  if P ≥ prefill_heavy_ratio · E      (default 4)
//!         = decode-heavy   else if E ≥ decode_heavy_ratio · P  (default 1)
//!         = balanced       otherwise
//! bucket  = short (P+E < 2k) | medium (< 8k) | long (< 32k) | xlong (≥ 32k)   (k = 1024)
//! ```
//!
//! # Score of one device (`DeviceView`: cost model, `Load`, limits; the router's dispatch history)
//! ```text
//! eligible     = healthy ∧ P + 1 ≤ max_seq_tokens
//! decodes      = min(running, max_num_seqs − 1, max_batched_tokens)   co-running the prefill
//! ctx(n)       = running_context_tokens · min(n, running) / running   context of n running seqs
//! uncached     = max(P − min(cached_prefix_tokens, P), 1)    starting at context P − uncached
//! chunk        = max(max_batched_tokens − decodes, 1), or with an engine step budget
//!                budgeted_chunk(decodes, P − uncached, that, step_time_budget)
//! prefill      = Σ over chunks of step_time(decodes over ctx(decodes) ⊕ chunk at its context)
//! prefill₀     = the same chunks without the decodes (the request's own device time)
//! queue_delay  = load.predicted_queue_delay
//! TTFT         = queue_delay + prefill
//!
//! batch        = clamp(running + waiting + 1, 1, max_num_seqs)      once the queue has joined
//! ctxᵦ         = (running_context + queued_prefill) scaled to batch − 1, + P + E/2
//! T_d          = step_time(batch decodes over ctxᵦ)                       decode-only step
//! c            = min(mean dispatched uncached prompt m (this one's before any), chunk of the batch)
//! T_m          = step_time(batch decodes ⊕ c prefill tokens at context (m − c)/2)   mixed step
//! r            = EWMA rate of uncached prefill tokens the router dispatched here (tokens/s)
//! r⁺           = r + uncached / τ                                    with this request dispatched
//! u(r)         = r / c · T_m                               share of time spent in mixed steps
//! tpot(r)      = 1 / (r / c + (1 − u) / T_d)  if u < 1,  else T_m     time-share of the steps
//!   packed, where u ≥ 1 and c is a whole prefill of which a step takes k = ⌊C / c⌋ ≥ 4
//!   (C: the chunk of the batch; small prefills, such as cached prompts, coming faster
//!   than one a step, which the engine batches together):
//! T_p          = step_time(batch decodes ⊕ k prefills of c tokens at context 0)
//! u(r)         = r / (k·c) · T_p
//! tpot(r)      = T(x) where x = r · T(x), T linear from (c, T_m) to (k·c, T_p), if x ≤ k·c,
//!                else T_p                         (equal to the above at u = 1: continuous)
//! TPOT         = tpot(r)                          this request's (its own prefill is over by then)
//! running_TPOT = tpot(r⁺)                      the running sequences', once this one is admitted
//! e2e          = TTFT + TPOT · (E − 1)
//! device_s     = prefill₀ + (E − 1) · TPOT / batch               share of a shared decode step
//! cost_usd     = device_s · usd_per_second
//! meets_slo    = eligible ∧ TTFT ≤ h·slo.ttft ∧ (E ≤ 1 ∨ TPOT ≤ h·slo.tpot)
//!                ∧ (batch = 1 ∨ running_TPOT ≤ h·slo.tpot) ∧ u(r⁺) < 1
//! outstanding  = queued_prefill_tokens + outstanding_decode_tokens
//! ```
//! The chunk sum is computed in O(1): a full chunk's compute and memory
//! times and its overheads are affine in its index (a pass of the decodes
//! of their own, when the device splits mixed steps, is constant), so the
//! roofline sum splits into two arithmetic series at their crossover plus
//! one for the rest. The first output token comes out
//! of the last prefill step, hence `E − 1` decode steps. Contexts are
//! clamped at 2⁴⁸ tokens and durations saturate, so no input panics.
//!
//! **Interference.** Prefills that share a device's steps while a request
//! decodes slow every token of it; and a larger batch makes each request's
//! share of a step cheaper, so a prediction from the batch at admission
//! alone keeps the cheapest device "within SLO" while its real TPOT is past
//! it. The time-share model above counts both: per second, `r / c` steps
//! carry a chunk of `c` prompt tokens and take `T_m` each; decode-only steps
//! of `T_d` fill the rest, and every step yields one token per sequence.
//! The rate is pure router state ([`PrefillRate`]: `r ← r·e^{−Δt/τ} + P/τ`
//! at each dispatch, time an argument, `τ` =
//! [`RouterConfig::interference_window`], 10 s), so the live server and the
//! simulator compute the same predictions, and it sees a burst before any
//! load snapshot does. Chunks of the size a device really takes (not the
//! rate spread evenly over steps) matter: small chunks ride free on a
//! memory-bound decode step, full chunks are compute-bound. Prefills that
//! come faster than one a step are packed, as the engine batches them: a
//! node receiving cached prompts (a few uncached tokens each) at 100/s
//! would otherwise count each as a step of its own, read as saturated,
//! and lose every request to its peer, whose queue then grew to a 1.3 s
//! TTFT p99 (`scripts/bench_tier.sh`'s first tier run, docs/fleet-tier-bench.md).
//!
//! Modelling limits: the running sequences' contexts are frozen at the
//! snapshot plus the queue's prompts (they grow as they decode); the batch
//! is the one the queue forms now, not the one later arrivals form (later
//! admissions are checked when they come, each against every running
//! sequence, which is what bounds the batch); prefills are priced at a
//! typical (EWMA) size and the middle of their context; `r` is what the
//! router dispatched, so requests that finish early or are re-routed
//! still count for `τ`; and `device_s` charges the request an equal share
//! of each shared decode step. Measured on the A100 ×8 balanced grid case,
//! the p95 TPOT the simulator observes with the `elastic` objective
//! (which packs devices up to the budget) is 79.4 ms against an 80 ms
//! budget (100 ms at p95 headroom 0.8).
//!
//! **Headroom `h`** ([`Slo::headroom`]): predictions are medians, so a tail
//! target needs margin. `h` interpolates linearly between (percentile, h)
//! points (0.50, 1.00), (0.90, 0.85), (0.95, 0.80), (0.99, 0.65),
//! (0.999, 0.50), clamped outside that range.
//!
//! # Policies (ties: lowest [`DeviceId`])
//! - `cost`: among devices meeting the SLO, by its [`Objective`]:
//!   - `fixed` (default): a fleet paid whether busy or not, where an idle
//!     device costs nothing more: the fastest devices (predicted e2e within
//!     [`FASTEST_BAND`] = 1.1 × the lowest), and among them the one
//!     with the fewest outstanding tokens, so users get the latency the
//!     fleet can give, near-equal devices share the queue (the strict
//!     minimum herded arrivals and lost ~8 % of SLO capacity to
//!     least-loaded on homogeneous fleets), and the SLO check keeps every
//!     device within its capacity;
//!   - `elastic`: a fleet paid for busy time (scaled to demand): the
//!     cheapest `cost_usd` (tie: lower e2e), which packs requests onto the
//!     cheapest devices up to the SLO so idle ones can be scaled down;
//!     reports show the saving as `busy_usd_per_hour`.
//!
//!   If no device meets the SLO, the same fastest-band rule over every
//!   eligible device.
//! - `latency`: lowest e2e.
//! - `round-robin`: the eligible device with the smallest id above the last
//!   round-robin pick, wrapping around (stable when devices join, leave or
//!   flap, unlike a modulo counter).
//! - `least-loaded`: fewest outstanding tokens.
//! - `prefix`: the device with the longest cached prefix (tie: fewer
//!   outstanding tokens) if `cached ≥ prefix_min_match · P` and its
//!   outstanding tokens exceed the least-loaded device's by at most
//!   `prefix_balance_tokens`; otherwise least-loaded (as SGLang's
//!   cache-aware router with its balance thresholds).
//!
//! # Invariants
//! - The chosen device is eligible (property-tested); unhealthy devices
//!   are never chosen.
//! - `Decision::scores` holds one score per fleet entry, in fleet order,
//!   except where `route` skipped devices that cannot be chosen: it then
//!   holds the scored devices in the order they were scored, and
//!   `Decision::skipped` counts the rest; `route_scoring_all` picks the
//!   same device (property-tested).
//! - `score` allocates nothing.
//! - A miss certificate kept across decisions holds only where the score
//!   misses the SLO by its decode side (property-tested against the score,
//!   and `route` against `route_scoring_all` over runs of decisions with
//!   changing loads, prompts and clock); it is dropped at the device's
//!   next dispatch and at a new config.
//! - With the `cost` policy, a request lands where its TPOT or the running
//!   sequences' would exceed the SLO only when no device meets it
//!   (property-tested on identical devices).
//! - With no eligible device: [`RouteError::NoHealthyDevice`] if no device
//!   is healthy, else [`RouteError::PromptTooLong`] with the longest prompt
//!   a healthy device supports.
//!
//! # Tunables ([`RouterConfig`])
//! `policy` (cost), `objective` (fixed), `slo` (TTFT 2000 ms, TPOT 100 ms, p95),
//! `interference_window` (10 s),
//! `prefix_min_match` (0.5), `prefix_balance_tokens` (16,384),
//! `prefill_heavy_ratio` (4.0), `decode_heavy_ratio` (1.0),
//! `output_ewma_alpha` (0.1).

#![warn(missing_docs)]

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod interference;
mod policy;
mod score;
mod shape;
#[cfg(test)]
pub(crate) mod tests;

pub use interference::{DispatchHistory, PackedStep, PrefillRate, StepMix};
pub use policy::{Objective, PolicyKind, UnknownObjective, UnknownPolicy, FASTEST_BAND};
pub use score::{DeviceScore, DeviceView};
pub use shape::{ContextBucket, OutputEstimator, Shape, ShapeClass, CONTEXT_BUCKET_BOUNDS};

use crate::config::serde_ms;
use policy::PrefixParams;
use score::Budgets;

/// A device of the fleet.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct DeviceId(pub u32);

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dev-{}", self.0)
    }
}

impl From<u32> for DeviceId {
    fn from(n: u32) -> Self {
        Self(n)
    }
}

/// A number of milliseconds, integer or float, for [`Slo::from_ms`].
pub trait Millis: Copy {
    /// The value in milliseconds.
    fn to_millis_f64(self) -> f64;
}

macro_rules! millis_as_f64 {
    ($($t:ty),*) => {$(
        impl Millis for $t {
            fn to_millis_f64(self) -> f64 {
                self as f64
            }
        }
    )*};
}
millis_as_f64!(u8, u16, u32, u64, usize, i32, i64, f32, f64);

/// A latency objective: time to first token and time per output token at a percentile.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// Time-to-first-token target.
    #[serde(rename = "ttft_ms", with = "serde_ms")]
    pub ttft: Duration,
    /// Time-per-output-token target.
    #[serde(rename = "tpot_ms", with = "serde_ms")]
    pub tpot: Duration,
    /// Percentile the targets apply to, in (0, 1) (0.95 = p95).
    pub percentile: f64,
}

impl Slo {
    /// Headroom curve: (percentile, factor on the targets), ascending.
    pub const HEADROOM_POINTS: [(f64, f64); 5] = [
        (0.50, 1.00),
        (0.90, 0.85),
        (0.95, 0.80),
        (0.99, 0.65),
        (0.999, 0.50),
    ];

    /// An SLO from millisecond targets (negative or NaN become 0, too large `Duration::MAX`).
    pub fn from_ms(ttft_ms: impl Millis, tpot_ms: impl Millis, percentile: f64) -> Self {
        let ms = |v: f64| {
            Duration::try_from_secs_f64(v / 1e3).unwrap_or(if v > 0.0 {
                Duration::MAX
            } else {
                Duration::ZERO
            })
        };
        Self {
            ttft: ms(ttft_ms.to_millis_f64()),
            tpot: ms(tpot_ms.to_millis_f64()),
            percentile,
        }
    }

    /// Factor in (0, 1] applied to both targets before comparing medians against them.
    pub fn headroom(&self) -> f64 {
        let pts = Self::HEADROOM_POINTS;
        let p = self.percentile;
        if p.is_nan() || p <= pts[0].0 {
            return pts[0].1;
        }
        for w in pts.windows(2) {
            let ((p0, h0), (p1, h1)) = (w[0], w[1]);
            if p <= p1 {
                return h0 + (h1 - h0) * (p - p0) / (p1 - p0);
            }
        }
        pts[pts.len() - 1].1
    }

    /// The TPOT target scaled by its headroom: the step-time budget of
    /// SLO-budgeted engine steps ([`crate::EngineConfig::step_time_budget`]).
    pub fn step_budget(&self) -> Duration {
        self.tpot.mul_f64(self.headroom())
    }

    /// The targets scaled by [`Slo::headroom`].
    fn budgets(&self) -> Budgets {
        let h = self.headroom();
        Budgets {
            ttft: self.ttft.mul_f64(h),
            tpot: self.tpot.mul_f64(h),
        }
    }
}

impl Default for Slo {
    fn default() -> Self {
        Self::from_ms(2000, 100, 0.95)
    }
}

/// Every tunable of the router (defaults in the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// How to pick among eligible devices.
    pub policy: PolicyKind,
    /// What the `cost` policy minimises among devices meeting the SLO.
    pub objective: Objective,
    /// Latency objective of the `cost` policy.
    pub slo: Slo,
    /// Time constant of the per-device prefill-rate EWMA (interference).
    #[serde(rename = "interference_window_ms", with = "serde_ms")]
    pub interference_window: Duration,
    /// `prefix`: least fraction of the prompt the cached prefix must cover.
    pub prefix_min_match: f64,
    /// `prefix`: most outstanding tokens the cache holder may exceed the least-loaded device by.
    pub prefix_balance_tokens: u64,
    /// Prefill-heavy when prompt ≥ this × expected output.
    pub prefill_heavy_ratio: f64,
    /// Decode-heavy when expected output ≥ this × prompt (and not prefill-heavy).
    pub decode_heavy_ratio: f64,
    /// EWMA weight of a new observation in the output-length estimator, in (0, 1].
    pub output_ewma_alpha: f64,
}

impl RouterConfig {
    /// Default [`RouterConfig::interference_window`]: about one request's decode life.
    pub const DEFAULT_INTERFERENCE_WINDOW: Duration = Duration::from_secs(10);
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            policy: PolicyKind::Cost,
            objective: Objective::Fixed,
            slo: Slo::default(),
            interference_window: Self::DEFAULT_INTERFERENCE_WINDOW,
            prefix_min_match: 0.5,
            prefix_balance_tokens: 16_384,
            prefill_heavy_ratio: 4.0,
            decode_heavy_ratio: 1.0,
            output_ewma_alpha: OutputEstimator::DEFAULT_ALPHA,
        }
    }
}

/// What the router needs to know of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteRequest {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Most tokens to generate.
    pub max_tokens: u32,
}

/// Why a device was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionReason {
    /// `cost` (objective `elastic`): the cheapest device predicted to meet the SLO.
    CheapestMeetingSlo,
    /// `cost` (objective `fixed`): the fastest device predicted to meet the SLO.
    FastestMeetingSlo,
    /// `cost`: no device is predicted to meet the SLO; the fastest one.
    NoDeviceMeetsSloLowestLatency,
    /// `latency`: the lowest predicted end-to-end latency.
    LowestLatency,
    /// `round-robin`: the next eligible device in turn.
    RoundRobin,
    /// `least-loaded` (or `prefix` with no usable cache hit): fewest outstanding tokens.
    LeastLoaded,
    /// `prefix`: the longest cached prefix, within the balance threshold.
    LongestPrefix,
    /// `prefix`: a long enough cached prefix, but its device is too busy; fewest outstanding tokens.
    PrefixImbalancedLeastLoaded,
}

/// A routing decision and its evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// The chosen device.
    pub device: DeviceId,
    /// The policy that chose it.
    pub policy: PolicyKind,
    /// The request's shape.
    pub shape: Shape,
    /// Why it was chosen.
    pub reason: DecisionReason,
    /// The scored devices' scores: every device in fleet order, or from
    /// [`Router::route`] with a policy that picks by e2e or cost, the
    /// devices its floors did not rule out, in the order it scored them.
    pub scores: Vec<DeviceScore>,
    /// Fleet entries not in `scores`: ineligible, or ruled out by their floors.
    pub skipped: u32,
}

/// A device the fixed objective's first pass left for its band pass, with
/// its tightest floor. Small, as a fleet past the SLO defers most of its
/// devices: the batched floor, which the band pass needs only where the
/// decoding floor was not priced, is priced again there for the few it reaches.
#[derive(Debug, Clone, Copy)]
struct Deferred {
    index: usize,
    floor: Tightest,
}

/// The tightest e2e floor priced for a deferred device.
#[derive(Debug, Clone, Copy)]
enum Tightest {
    /// A looser floor, seconds: the batched one, or the floor alone with a
    /// miss certificate's time per token (the decoding floor not priced).
    Loose(f64),
    /// The decoding floor, whose decode side the device's score reuses.
    Decoding(score::Decoding),
}

impl Tightest {
    /// The floor, seconds.
    fn seconds(&self) -> f64 {
        match self {
            Tightest::Loose(s) => *s,
            Tightest::Decoding(d) => d.seconds,
        }
    }
}

/// What a device's e2e floors say of it, against the limits of the choice so far.
enum Screened {
    /// Past the limit past which it can never be chosen.
    Drop,
    /// Past the current choice's e2e, within the band: for the band pass.
    Defer(Deferred),
    /// Could still be chosen or move the bound: score it with the decode
    /// side its decoding floor priced.
    Score(score::DecodeSide),
    /// Proved by its standing `MissCert` to miss the SLO the pick must meet.
    Missed,
}

/// The band the fixed objective's second pass (or the fallback's) picks from.
#[derive(Debug, Clone, Copy)]
struct Band {
    /// The fastest e2e (of the devices meeting the SLO, if `need_slo`).
    fastest: Duration,
    /// Whether the band holds only devices meeting the SLO.
    need_slo: bool,
}

/// What [`Router::score_bounded`] found.
struct Searched {
    /// The scored devices, in the order scored.
    scores: Vec<DeviceScore>,
    /// The device that bounded the choice, if any.
    bounded_by: Option<DeviceId>,
    /// Devices passed over as proved to miss the SLO (a search for one meeting it).
    passed_over: u32,
    /// Fleet entries scored in a search for a device meeting the SLO whose
    /// decode side missed it by a margin: candidates for a `MissCert`.
    missing: Vec<usize>,
}

/// What a policy's choice is bounded by, for skipping devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChoiceBound {
    /// `cost` (`fixed`): the fastest-band limit of the fastest device meeting the SLO.
    BandMeetingSlo,
    /// `cost` (`elastic`): the cost of the cheapest device meeting the SLO.
    CheapestMeetingSlo,
    /// `latency`: the fastest device.
    Fastest,
    /// `cost` where every device provably misses the SLO: the fastest-band
    /// limit of the fastest device (the fallback's pick).
    Band,
}

impl Decision {
    /// The chosen device's score.
    pub fn chosen(&self) -> &DeviceScore {
        self.scores
            .iter()
            .find(|s| s.device == self.device)
            .expect("the chosen device is scored")
    }
}

/// Every fleet entry's e2e floor from the request's prices alone, priced
/// once per decision for the proof that all miss the SLO and the bounded search.
struct AloneFloors<'a> {
    floors: score::Floors<'a>,
    /// Per fleet entry, in fleet order; `None` where the device is ineligible.
    floor: Vec<Option<score::Floor>>,
    /// Per fleet entry, what [`Router::all_miss_slo`] priced to prove its
    /// miss, or failing to (empty unless it ran), which the search then reuses.
    priced: Vec<Proved>,
    /// Per fleet entry, whether [`Router::all_miss_slo`] proved it misses
    /// the SLO (empty unless it ran): a search for a device meeting it
    /// passes over those.
    missed: Vec<bool>,
}

/// What the proof that a device misses the SLO priced of it.
#[derive(Debug, Clone, Copy)]
enum Proved {
    /// Nothing beyond its floor alone.
    Nothing,
    /// Its decoding floor, with the score's decode side.
    Decoding(score::Decoding),
    /// A floor on the score's time per token, seconds, from its standing
    /// [`score::MissCert`] (nothing priced).
    PerToken(f64),
}

impl<'a> AloneFloors<'a> {
    fn of(shape: &'a Shape, fleet: &[DeviceView<'a>]) -> Self {
        let mut floors = score::Floors::new(shape);
        let floor = fleet
            .iter()
            .map(|d| d.eligible(shape.prompt_tokens).then(|| floors.alone(d)))
            .collect();
        Self {
            floors,
            floor,
            priced: Vec::new(),
            missed: Vec::new(),
        }
    }

    /// Whether fleet entry `i` was proved to miss the SLO.
    fn missed(&self, i: usize) -> bool {
        self.missed.get(i).copied().unwrap_or(false)
    }

    /// What the proof priced for fleet entry `i`.
    fn priced(&self, i: usize) -> Proved {
        self.priced.get(i).copied().unwrap_or(Proved::Nothing)
    }
}

/// Why no device could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The fleet is empty or every device is unhealthy.
    #[error("no healthy device")]
    NoHealthyDevice,
    /// The prompt fits no healthy device.
    #[error("prompt of {prompt_tokens} tokens fits no healthy device: the longest supported prompt is {max_supported} tokens")]
    PromptTooLong {
        /// Prompt tokens.
        prompt_tokens: u32,
        /// Longest prompt any healthy device accepts.
        max_supported: u32,
    },
}

/// The router for one model's fleet: its config, output-length estimate and round-robin cursor.
#[derive(Debug, Clone)]
pub struct Router {
    config: RouterConfig,
    budgets: Budgets,
    estimator: OutputEstimator,
    last_round_robin: Option<DeviceId>,
    history: DispatchHistory,
    /// Whether the last `cost` decision found a device meeting the SLO:
    /// when none did (an overloaded fleet), the next one first checks that
    /// none can, then searches only the fallback's band, or else scores
    /// every device without pricing floors that could not rule any out.
    met_slo_last: bool,
    /// Per [`ShapeClass`], the device that bounded the last decision's
    /// choice (the fastest meeting the SLO, or the fastest): scored first
    /// next time, since it moves little between decisions, so the bound is
    /// tight from the first device on. Only the order of scoring depends on it.
    bound_hint: [Option<DeviceId>; 3],
}

impl Router {
    /// A router with no observations.
    pub fn new(config: RouterConfig) -> Self {
        Self {
            budgets: config.slo.budgets(),
            estimator: OutputEstimator::new(config.output_ewma_alpha),
            config,
            last_round_robin: None,
            history: DispatchHistory::default(),
            met_slo_last: true,
            bound_hint: [None; 3],
        }
    }

    /// The current config.
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// Replaces the config, keeping the output estimate and round-robin cursor.
    pub fn set_config(&mut self, config: RouterConfig) {
        self.budgets = config.slo.budgets();
        self.estimator.set_alpha(config.output_ewma_alpha);
        self.config = config;
        // Proved under the old budgets and window.
        self.history.forget_misses();
    }

    /// The output-length estimator.
    pub fn estimator(&self) -> &OutputEstimator {
        &self.estimator
    }

    /// The request's shape under the current estimate.
    pub fn shape(&self, req: &RouteRequest) -> Shape {
        let expected = self.estimator.expected(req.max_tokens);
        Shape {
            prompt_tokens: req.prompt_tokens,
            max_tokens: req.max_tokens,
            expected_output_tokens: expected,
            class: ShapeClass::classify(
                req.prompt_tokens,
                expected,
                self.config.prefill_heavy_ratio,
                self.config.decode_heavy_ratio,
            ),
            context_bucket: ContextBucket::of(u64::from(req.prompt_tokens) + u64::from(expected)),
        }
    }

    /// The per-device dispatch history behind the interference predictions.
    pub fn history(&self) -> &DispatchHistory {
        &self.history
    }

    /// Predicts serving `shape` on `device` at `now` (pure; formulas in the module doc).
    pub fn score(&self, shape: &Shape, device: &DeviceView<'_>, now: Duration) -> DeviceScore {
        self.score_with_side(shape, device, now, None)
    }

    /// [`Self::score`], given the decode side a floor already priced.
    fn score_with_side(
        &self,
        shape: &Shape,
        device: &DeviceView<'_>,
        now: Duration,
        side: Option<score::DecodeSide>,
    ) -> DeviceScore {
        score::score(
            shape,
            device,
            self.budgets,
            self.interference(device.id, now),
            side,
        )
    }

    /// `device`'s dispatch history at `now`, for the interference terms.
    fn interference(&self, device: DeviceId, now: Duration) -> score::Interference {
        score::Interference {
            rate: self.history.get(device),
            now,
            window: self.config.interference_window,
        }
    }

    /// Scores the devices at `now` (the driver's clock), picks one by the
    /// configured policy, records the dispatch and advances round-robin.
    ///
    /// Policies that pick by predicted e2e or cost (`cost`, `latency`)
    /// skip scoring a device whose floor (its queue delay plus the
    /// request's prices alone; then with the decode batch it would join;
    /// then with the score's own time per token) is past what the choice is
    /// bounded by so far: the e2e of the fastest device meeting the SLO,
    /// then its fastest-band limit and the outstanding tokens of the best
    /// device in the band (`fixed`), the cost of the cheapest one
    /// (`elastic`), the fastest device (`latency`). Such a device can
    /// neither be chosen nor move the bound, so the pick is the one
    /// [`Self::route_scoring_all`] makes (property-tested), at a fraction
    /// of the scoring on a large fleet. Its [`Decision::scores`]
    /// then leave those devices out; [`Decision::skipped`] counts them.
    /// After a `cost` decision where no device met the SLO, the next one
    /// checks each device for a proof that it misses the SLO (its TTFT or
    /// time per token floor past the budget, or prefills arriving faster
    /// than it computes them; failing those, its batched TTFT floor or the
    /// score's own decode side past the budget): if every device has one,
    /// the fallback's fastest band is searched as above; at the first
    /// device without one it scores every device, as an overloaded fleet
    /// at the SLO's edge leaves the floors nothing to rule out. A decode
    /// side that proves a miss is kept as a certificate
    /// (`MissCert`) that proves it again in a few comparisons
    /// while the device's batch size, context and history allow, and
    /// bounds its time per token for the band search; so is the decode side
    /// of a device the search scored that misses by a margin. Any search
    /// for a device meeting the SLO passes over a device whose certificate
    /// holds before it prices a step of it.
    pub fn route(
        &mut self,
        req: &RouteRequest,
        fleet: &[DeviceView<'_>],
        now: Duration,
    ) -> Result<Decision, RouteError> {
        let shape = self.shape(req);
        let scores = match self.choice_bound() {
            Some(bound) => {
                let mut alone = AloneFloors::of(&shape, fleet);
                let needs_slo = matches!(
                    bound,
                    ChoiceBound::BandMeetingSlo | ChoiceBound::CheapestMeetingSlo
                );
                // After a decision no device met, the proof that none can
                // (else the policy's own search, past the devices proved to miss).
                let bound =
                    if needs_slo && !self.met_slo_last && self.all_miss_slo(&mut alone, fleet, now)
                    {
                        ChoiceBound::Band
                    } else {
                        bound
                    };
                let mut searched = self.score_bounded(&alone, fleet, now, bound);
                self.keep_misses(&alone, fleet, now, &searched.missing);
                // No device scored meets the SLO, and those passed over miss
                // it: the fallback's pick is from every device's band.
                if searched.passed_over > 0 && !searched.scores.iter().any(|s| s.meets_slo) {
                    searched = self.score_bounded(&alone, fleet, now, ChoiceBound::Band);
                }
                self.bound_hint[shape.class as usize] = searched.bounded_by;
                searched.scores
            }
            None => self.score_all(&shape, fleet, now),
        };
        let decision = self.decide(req, fleet, now, shape, scores);
        if let Ok(d) = &decision {
            self.met_slo_last = d.reason != DecisionReason::NoDeviceMeetsSloLowestLatency;
        }
        decision
    }

    /// [`Self::route`] with every device scored (an explanation, or a
    /// fallback order over every device): the same pick.
    pub fn route_scoring_all(
        &mut self,
        req: &RouteRequest,
        fleet: &[DeviceView<'_>],
        now: Duration,
    ) -> Result<Decision, RouteError> {
        let shape = self.shape(req);
        let scores = self.score_all(&shape, fleet, now);
        self.decide(req, fleet, now, shape, scores)
    }

    /// Whether every eligible device provably misses the SLO: by its
    /// floors alone ([`score::Floors::misses_slo_by_floor`]), by its
    /// standing `MissCert`, by its floor and history
    /// ([`score::Floors::misses_slo_by_rate`]), else by
    /// [`Self::decoding_proof`], which prices the device's decode side and,
    /// only where that proves nothing, its batched TTFT floor (a fleet just
    /// past the SLO, where the proofs alone are too loose, still costs less
    /// than scoring it). A decode side that proves the miss is kept as a
    /// certificate where it will hold for later decisions too. It stops at
    /// the first device it cannot prove misses; the search for a device
    /// meeting the SLO then passes over those proved before it, with the
    /// decoding floors priced here.
    fn all_miss_slo(
        &mut self,
        alone: &mut AloneFloors<'_>,
        fleet: &[DeviceView<'_>],
        now: Duration,
    ) -> bool {
        let AloneFloors {
            floors,
            floor,
            priced,
            missed,
        } = alone;
        priced.clear();
        priced.reserve_exact(fleet.len());
        missed.clear();
        missed.reserve_exact(fleet.len());
        let window = self.config.interference_window;
        for (d, floor) in fleet.iter().zip(floor.iter()) {
            let Some(floor) = *floor else {
                priced.push(Proved::Nothing);
                missed.push(false);
                continue;
            };
            // The floors alone first: an overloaded fleet's queues prove
            // its misses without the history's lookup.
            if floors.misses_slo_by_floor(floor, self.budgets) {
                priced.push(Proved::Nothing);
                missed.push(true);
                continue;
            }
            let (rate, miss) = self.history.with_miss(d.id);
            if let Some(m) = miss.filter(|m| m.holds(d, floors.shape(), floor.uncached(), now)) {
                priced.push(Proved::PerToken(m.per_token_s()));
                missed.push(true);
                continue;
            }
            let interference = score::Interference { rate, now, window };
            if floors.misses_slo_by_rate(d, floor, interference) {
                priced.push(Proved::Nothing);
                missed.push(true);
                continue;
            }
            let (decoding, proved) = self.decoding_proof(floors, d, floor, interference);
            priced.push(Proved::Decoding(decoding));
            missed.push(proved);
            if !proved {
                // Some device may meet it: the search for it prices only
                // what it must (a fleet mostly within its SLO after a
                // passing miss would otherwise price every decode side).
                return false;
            }
            if decoding.side.misses_by_margin(self.budgets) {
                self.prove_miss(d, floors.shape(), floor.uncached(), interference, miss);
            }
        }
        true
    }

    /// Keeps `d`'s miss as a `MissCert` where it can be proved to hold for
    /// later decisions, unless `standing` (its proof kept so far) records
    /// that proving it already failed under its current key.
    fn prove_miss(
        &mut self,
        d: &DeviceView<'_>,
        shape: &Shape,
        uncached: u32,
        interference: score::Interference,
        standing: Option<score::MissCert>,
    ) {
        if standing.is_some_and(|m| m.failed_for(d)) {
            return;
        }
        if let Some(cert) = score::MissCert::prove(d, shape, uncached, interference, self.budgets) {
            self.history.keep_miss(d.id, cert);
        }
    }

    /// Keeps a `MissCert` for each of the fleet entries `missing` (scored
    /// in a search that must meet the SLO, their decode side past it by a
    /// margin) that has no standing one, so later decisions pass over them
    /// unpriced: a fleet at the SLO's edge, where decisions that find a
    /// device meeting it skip [`Self::all_miss_slo`], would otherwise
    /// score each device that misses again in every search.
    fn keep_misses(
        &mut self,
        alone: &AloneFloors<'_>,
        fleet: &[DeviceView<'_>],
        now: Duration,
        missing: &[usize],
    ) {
        let shape = alone.floors.shape();
        for &i in missing {
            let (Some(floor), d) = (alone.floor[i], &fleet[i]) else {
                continue;
            };
            let (rate, miss) = self.history.with_miss(d.id);
            let uncached = floor.uncached();
            if miss.is_some_and(|m| m.holds(d, shape, uncached, now)) {
                continue;
            }
            let interference = score::Interference {
                rate,
                now,
                window: self.config.interference_window,
            };
            self.prove_miss(d, shape, uncached, interference, miss);
        }
    }

    /// Whether `dev`'s standing `MissCert` proves it misses the SLO for `shape` at `now`.
    fn certified_miss(
        &self,
        shape: &Shape,
        dev: &DeviceView<'_>,
        floor: score::Floor,
        now: Duration,
    ) -> bool {
        self.history
            .standing_miss(dev.id)
            .is_some_and(|m| m.holds(dev, shape, floor.uncached(), now))
    }

    /// `dev`'s decoding floor, for the search that follows, and whether it
    /// proves, with the batched TTFT floor, that the device misses the SLO
    /// ([`score::Floors::misses_slo_side`], [`score::Floors::misses_slo_ttft`]).
    /// Apart from [`Self::all_miss_slo`]'s loop, which an overloaded fleet's
    /// proofs alone keep cheap.
    #[inline(never)]
    fn decoding_proof(
        &self,
        floors: &score::Floors<'_>,
        dev: &DeviceView<'_>,
        floor: score::Floor,
        interference: score::Interference,
    ) -> (score::Decoding, bool) {
        // The decode side first: in a fleet just past the SLO it is what
        // proves most misses, and then the prefill beside the decodes is
        // never priced (the floor makes do with the prefill alone).
        let mut batched = floors.batched_decode(dev, floor);
        let decoding = floors.decoding(dev, floor, &batched, interference);
        if floors.misses_slo_side(&decoding, self.budgets) {
            return (decoding, true);
        }
        floors.with_batched_ttft(dev, floor, &mut batched);
        (
            floors.decoding_after(&batched, decoding.side),
            floors.misses_slo_ttft(&batched, self.budgets),
        )
    }

    fn score_all(
        &self,
        shape: &Shape,
        fleet: &[DeviceView<'_>],
        now: Duration,
    ) -> Vec<DeviceScore> {
        let mut scores = Vec::with_capacity(fleet.len());
        scores.extend(fleet.iter().map(|d| self.score(shape, d, now)));
        scores
    }

    /// The bound of the configured policy's choice, if it picks by e2e or cost.
    fn choice_bound(&self) -> Option<ChoiceBound> {
        match (self.config.policy, self.config.objective) {
            (PolicyKind::Cost, Objective::Fixed) => Some(ChoiceBound::BandMeetingSlo),
            (PolicyKind::Cost, Objective::Elastic) => Some(ChoiceBound::CheapestMeetingSlo),
            (PolicyKind::Latency, _) => Some(ChoiceBound::Fastest),
            _ => None,
        }
    }

    /// Scores of the eligible devices whose floors do not rule them out
    /// under `bound` (see [`Self::route`]), and the device that bounded the
    /// choice. A search for a device meeting the SLO passes over the devices
    /// proved to miss it ([`Self::all_miss_slo`]'s, or a standing
    /// `MissCert`'s, checked before any step of the device is priced), and
    /// counts them: where none scored meets it, the fallback's band must be
    /// searched over them all. It returns the devices it scored that missed
    /// by a margin, for [`Self::keep_misses`]. The
    /// last decision's bounding device of the same shape class
    /// is scored first, then the device with the lowest e2e floor, so the
    /// bound is tight from the start.
    ///
    /// The fixed objective's band is found in two passes. The first finds
    /// the fastest device meeting the SLO, bounded by its e2e (10 % tighter
    /// than the band): a device whose floor is past it cannot be faster.
    /// The band's limit is then final, and the pick is the device in it
    /// with the fewest outstanding tokens, so the devices the first pass
    /// left are scored in ascending outstanding tokens, only while they
    /// could beat the best in-band device so far and their floor is within
    /// the band.
    fn score_bounded(
        &self,
        floors_alone: &AloneFloors<'_>,
        fleet: &[DeviceView<'_>],
        now: Duration,
        bound: ChoiceBound,
    ) -> Searched {
        let (floors, alone) = (&floors_alone.floors, &floors_alone.floor);
        let shape = floors.shape();
        let first = alone
            .iter()
            .enumerate()
            .filter_map(|(i, f)| f.map(|f| (i, f.seconds())))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i);
        let hint = self.bound_hint[shape.class as usize]
            .and_then(|id| fleet.iter().position(|d| d.id == id))
            .filter(|&i| alone[i].is_some() && Some(i) != first);
        let mut scores = Vec::new();
        // The e2e (seconds) or cost (USD) past which no device can be chosen.
        let mut limit: Option<f64> = None;
        let mut bounded_by = None;
        let mut fastest = Duration::MAX;
        // The fixed objective's devices left for the band pass, and the e2e
        // past which a device is dropped (seconds): the band's limit so far
        // (`fixed`), the fastest e2e (`latency`, which defers nothing).
        let mut deferred: Vec<Deferred> = Vec::new();
        let mut drop_s = f64::INFINITY;
        let order = hint
            .into_iter()
            .chain(first)
            .chain((0..fleet.len()).filter(|&i| Some(i) != first && Some(i) != hint));
        // Devices proved to miss the SLO are never a pick that must meet it.
        let skip_missed = matches!(
            bound,
            ChoiceBound::BandMeetingSlo | ChoiceBound::CheapestMeetingSlo
        );
        let mut passed_over = 0;
        let mut missing = Vec::new();
        for i in order {
            let (Some(floor), dev) = (alone[i], &fleet[i]) else {
                continue;
            };
            if skip_missed && floors_alone.missed(i) {
                passed_over += 1;
                continue;
            }
            let priced = floors_alone.priced(i);
            let mut side = match priced {
                Proved::Decoding(d) => Some(d.side),
                Proved::Nothing | Proved::PerToken(_) => None,
            };
            if let Some(limit) = limit {
                match bound {
                    ChoiceBound::CheapestMeetingSlo => {
                        if score::cost_floor_exceeds(floors.cost_usd(dev, floor), limit) {
                            continue;
                        }
                    }
                    ChoiceBound::BandMeetingSlo | ChoiceBound::Band | ChoiceBound::Fastest => {
                        let limits = (limit, drop_s);
                        match self.screen(floors, dev, (i, floor, priced), limits, skip_missed, now)
                        {
                            Screened::Drop => continue,
                            Screened::Missed => {
                                passed_over += 1;
                                continue;
                            }
                            Screened::Defer(d) => {
                                deferred.push(d);
                                continue;
                            }
                            Screened::Score(priced) => side = Some(priced),
                        }
                    }
                }
            }
            // A pick that must meet the SLO is never a device whose
            // standing certificate proves it misses: checked here before a
            // score while nothing bounds the search (a fleet at the SLO's
            // edge, with no device meeting it, would score every device),
            // and by the screen once something does.
            if side.is_none() && skip_missed && self.certified_miss(shape, dev, floor, now) {
                passed_over += 1;
                continue;
            }
            // Priced before the score (the same side it would price), so a
            // miss by a margin can be kept as a certificate (never for a
            // device that budgets steps).
            let certifiable = skip_missed && score::MissCert::may_prove(dev);
            if certifiable && side.is_none() {
                side = Some(floors.side(dev, floor, self.interference(dev.id, now)));
            }
            let s = self.score_with_side(shape, dev, now, side);
            if certifiable
                && !s.meets_slo
                && side.is_some_and(|side| side.misses_by_margin(self.budgets))
            {
                missing.push(i);
            }
            match bound {
                ChoiceBound::CheapestMeetingSlo => {
                    if s.meets_slo && limit.is_none_or(|l| s.cost_usd < l) {
                        limit = Some(s.cost_usd);
                        bounded_by = Some(s.device);
                    }
                }
                ChoiceBound::BandMeetingSlo | ChoiceBound::Band | ChoiceBound::Fastest => {
                    if s.e2e < fastest && (bound != ChoiceBound::BandMeetingSlo || s.meets_slo) {
                        fastest = s.e2e;
                        limit = Some(fastest.as_secs_f64());
                        bounded_by = Some(s.device);
                        drop_s = match bound {
                            ChoiceBound::Fastest => fastest.as_secs_f64(),
                            _ => policy::band_limit(fastest).as_secs_f64(),
                        };
                    }
                }
            }
            scores.push(s);
        }
        if matches!(bound, ChoiceBound::BandMeetingSlo | ChoiceBound::Band)
            && fastest < Duration::MAX
        {
            let need_slo = bound == ChoiceBound::BandMeetingSlo;
            let band = Band { fastest, need_slo };
            self.score_band(shape, fleet, now, floors_alone, deferred, band, &mut scores);
        }
        Searched {
            scores,
            bounded_by,
            passed_over,
            missing,
        }
    }

    /// Screens `dev` (fleet entry `index`) by its floors, cheapest first,
    /// against `limit_s` (the e2e of the choice so far) and `drop_s` (past
    /// which it can never be chosen; `limit_s` itself when nothing is
    /// deferred). Where the pick must meet the SLO (`need_slo`), a standing
    /// `MissCert` passes over it before any step is priced.
    fn screen(
        &self,
        floors: &score::Floors<'_>,
        dev: &DeviceView<'_>,
        (index, floor, priced): (usize, score::Floor, Proved),
        (limit_s, drop_s): (f64, f64),
        need_slo: bool,
        now: Duration,
    ) -> Screened {
        if score::floor_exceeds(floor.seconds(), drop_s) {
            return Screened::Drop;
        }
        if need_slo
            && matches!(priced, Proved::Nothing)
            && self.certified_miss(floors.shape(), dev, floor, now)
        {
            return Screened::Missed;
        }
        // A priced decoding floor is the tightest: the batched one is not
        // priced again (the time per token of a decode side is at least its
        // decode-only step's, so it rules out at least as much).
        let decoding = match priced {
            Proved::Decoding(decoding) => decoding,
            Proved::Nothing | Proved::PerToken(_) => {
                // A certificate's time per token rules out most of a fleet
                // past the SLO with no step priced.
                if let Proved::PerToken(per_token_s) = priced {
                    let loose = floors.with_per_token(floor, per_token_s);
                    if score::floor_exceeds(loose, drop_s) {
                        return Screened::Drop;
                    }
                    if score::floor_exceeds(loose, limit_s) {
                        return Screened::Defer(Deferred {
                            index,
                            floor: Tightest::Loose(loose),
                        });
                    }
                }
                let batched = floors.batched(dev, floor);
                if score::floor_exceeds(batched.seconds, drop_s) {
                    return Screened::Drop;
                }
                if score::floor_exceeds(batched.seconds, limit_s) {
                    return Screened::Defer(Deferred {
                        index,
                        floor: Tightest::Loose(batched.seconds),
                    });
                }
                self.decoding_floor(floors, dev, floor, &batched, now)
            }
        };
        if score::floor_exceeds(decoding.seconds, drop_s) {
            Screened::Drop
        } else if score::floor_exceeds(decoding.seconds, limit_s) {
            Screened::Defer(Deferred {
                index,
                floor: Tightest::Decoding(decoding),
            })
        } else {
            Screened::Score(decoding.side)
        }
    }

    /// `dev`'s decoding floor ([`score::Floors::decoding`]) at `now`.
    fn decoding_floor(
        &self,
        floors: &score::Floors<'_>,
        dev: &DeviceView<'_>,
        floor: score::Floor,
        batched: &score::Batched,
        now: Duration,
    ) -> score::Decoding {
        floors.decoding(dev, floor, batched, self.interference(dev.id, now))
    }

    /// The fixed objective's second pass, or the fallback's
    /// ([`Self::score_bounded`]): scores the `deferred` devices that could
    /// still be picked from `band`.
    #[allow(clippy::too_many_arguments)]
    fn score_band(
        &self,
        shape: &Shape,
        fleet: &[DeviceView<'_>],
        now: Duration,
        floors_alone: &AloneFloors<'_>,
        deferred: Vec<Deferred>,
        Band { fastest, need_slo }: Band,
        scores: &mut Vec<DeviceScore>,
    ) {
        let band = policy::band_limit(fastest);
        let band_s = band.as_secs_f64();
        // The band's pick so far, by `policy::cost`'s order: fewest
        // outstanding tokens, then lower e2e, then lower id.
        let rank = |s: &DeviceScore| (s.outstanding_tokens, s.e2e, s.device);
        let in_band = |s: &DeviceScore| s.eligible && (s.meets_slo || !need_slo) && s.e2e <= band;
        let Some(mut best) = scores.iter().filter(|s| in_band(s)).map(rank).min() else {
            return;
        };
        // Sorted by key alone: a `Deferred` carries its decoding floor.
        let mut order: Vec<(u64, DeviceId, usize)> = deferred
            .iter()
            .enumerate()
            .map(|(k, d)| (fleet[d.index].outstanding_tokens(), fleet[d.index].id, k))
            .filter(|&(outstanding, _, k)| {
                outstanding <= best.0 && !score::floor_exceeds(deferred[k].floor.seconds(), band_s)
            })
            .collect();
        order.sort_unstable();
        for (outstanding, _, k) in order {
            if outstanding > best.0 {
                break;
            }
            let d = &deferred[k];
            let dev = &fleet[d.index];
            let decoding = match (d.floor, floors_alone.floor[d.index]) {
                (Tightest::Decoding(decoding), _) => decoding,
                (Tightest::Loose(_), Some(floor)) => {
                    let floors = &floors_alone.floors;
                    self.decoding_floor(floors, dev, floor, &floors.batched(dev, floor), now)
                }
                // Only devices with a floor alone (eligible ones) are deferred.
                (Tightest::Loose(_), None) => continue,
            };
            if score::floor_exceeds(decoding.seconds, band_s) {
                continue;
            }
            let s = self.score_with_side(shape, dev, now, Some(decoding.side));
            if in_band(&s) && rank(&s) < best {
                best = rank(&s);
            }
            scores.push(s);
        }
    }

    /// Picks from `scores` by the configured policy and records the dispatch.
    fn decide(
        &mut self,
        req: &RouteRequest,
        fleet: &[DeviceView<'_>],
        now: Duration,
        shape: Shape,
        scores: Vec<DeviceScore>,
    ) -> Result<Decision, RouteError> {
        let skipped = fleet.len().saturating_sub(scores.len()) as u32;
        let policy = self.config.policy;
        let picked = match policy {
            PolicyKind::Cost => policy::cost(&scores, self.config.objective),
            PolicyKind::Latency => policy::latency(&scores),
            PolicyKind::RoundRobin => policy::round_robin(&scores, self.last_round_robin),
            PolicyKind::LeastLoaded => policy::least_loaded(&scores),
            PolicyKind::Prefix => policy::prefix(
                &scores,
                PrefixParams {
                    prompt_tokens: req.prompt_tokens,
                    min_match: self.config.prefix_min_match,
                    balance_tokens: self.config.prefix_balance_tokens,
                },
            ),
        };
        let Some((index, reason)) = picked else {
            return Err(no_eligible_device(req, fleet));
        };
        let device = scores[index].device;
        if policy == PolicyKind::RoundRobin {
            self.last_round_robin = Some(device);
        }
        let uncached = req
            .prompt_tokens
            .saturating_sub(scores[index].cached_prefix_tokens)
            .max(1);
        self.history
            .record(device, uncached, now, self.config.interference_window);
        Ok(Decision {
            device,
            policy,
            shape,
            reason,
            scores,
            skipped,
        })
    }

    /// Folds a finished request's output length into the estimate.
    pub fn observe_output(&mut self, max_tokens: u32, output_tokens: u32) {
        self.estimator.observe(max_tokens, output_tokens);
    }
}

impl Default for Router {
    fn default() -> Self {
        Self::new(RouterConfig::default())
    }
}

fn no_eligible_device(req: &RouteRequest, fleet: &[DeviceView<'_>]) -> RouteError {
    match fleet
        .iter()
        .filter(|d| d.healthy)
        .map(|d| d.max_seq_tokens.saturating_sub(1))
        .max()
    {
        None => RouteError::NoHealthyDevice,
        Some(max_supported) => RouteError::PromptTooLong {
            prompt_tokens: req.prompt_tokens,
            max_supported,
        },
    }
}
