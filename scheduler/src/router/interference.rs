//! Prefill interference: how much of a device's step time the prefills that
//! share its steps will take while a request decodes, from the prefill tokens
//! the router itself dispatched there (formulas in the [module doc](super)).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use super::score::MissCert;
use super::DeviceId;

/// An exponentially weighted rate of the uncached prefill tokens dispatched
/// to one device, and the mean size of one dispatch.
///
/// `r(t) = r(t₀)·e^{−(t−t₀)/τ} + P/τ` at each dispatch of `P` tokens: for
/// dispatches at a steady rate `λ` this averages `λ·P`, and a burst decays
/// over `τ`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PrefillRate {
    tokens_per_s: f64,
    mean_tokens: f64,
    at: Duration,
    dispatches: u64,
}

/// EWMA weight of one dispatch in [`PrefillRate::mean_tokens`].
const MEAN_ALPHA: f64 = 0.1;

impl PrefillRate {
    /// No dispatches yet.
    pub const ZERO: Self = Self {
        tokens_per_s: 0.0,
        mean_tokens: 0.0,
        at: Duration::ZERO,
        dispatches: 0,
    };

    /// The rate at `now`, tokens per second (decayed since the last dispatch).
    pub fn tokens_per_s(&self, now: Duration, window: Duration) -> f64 {
        let tau = window.as_secs_f64();
        if tau <= 0.0 || self.tokens_per_s == 0.0 {
            return 0.0;
        }
        let dt = now.saturating_sub(self.at).as_secs_f64();
        self.tokens_per_s * (-dt / tau).exp()
    }

    /// When the last dispatch was recorded.
    pub fn at(&self) -> Duration {
        self.at
    }

    /// Mean uncached tokens per dispatch (0 before the first).
    pub fn mean_tokens(&self) -> f64 {
        self.mean_tokens
    }

    /// The rate at `now` with one more dispatch of `tokens` at `now`.
    pub fn with_dispatch(&self, tokens: u32, now: Duration, window: Duration) -> f64 {
        let tau = window.as_secs_f64();
        if tau <= 0.0 {
            return 0.0;
        }
        self.tokens_per_s(now, window) + f64::from(tokens) / tau
    }

    /// Records a dispatch of `tokens` uncached prefill tokens at `now`.
    pub fn record(&mut self, tokens: u32, now: Duration, window: Duration) {
        // A clock that steps back (a driver restart) never revives old load.
        let now = now.max(self.at);
        self.tokens_per_s = self.with_dispatch(tokens, now, window);
        self.at = now;
        self.mean_tokens = if self.dispatches == 0 {
            f64::from(tokens)
        } else {
            self.mean_tokens + MEAN_ALPHA * (f64::from(tokens) - self.mean_tokens)
        };
        self.dispatches += 1;
    }
}

/// The router's per-device dispatch history.
#[derive(Debug, Clone, Default)]
pub struct DispatchHistory {
    devices: HashMap<DeviceId, Tracked, BuildHasherDefault<IdHasher>>,
    /// Standing proofs of a miss per slot of the device ids' hash: a
    /// screen looks a device up only where its slot holds one, so a fleet
    /// within its SLO, with few proofs, pays a multiply a device, not a lookup.
    proofs: [u32; PROOF_SLOTS],
}

/// Slots of [`DispatchHistory`]'s count of standing proofs.
const PROOF_SLOTS: usize = 32;

/// The slot of `id` among [`PROOF_SLOTS`]: the top bits of its [`IdHasher`] hash.
fn proof_slot(id: DeviceId) -> usize {
    let mut h = IdHasher::default();
    h.write_u32(id.0);
    (h.finish() >> (64 - PROOF_SLOTS.trailing_zeros())) as usize
}

/// One device's history, and the proof of its miss that holds until its next dispatch.
#[derive(Debug, Clone, Copy, Default)]
struct Tracked {
    rate: PrefillRate,
    miss: Option<MissCert>,
}

/// Hashes a [`DeviceId`] with one multiply (Fibonacci hashing): a lookup
/// per device per decision is on the routing path, where SipHash's
/// DoS resistance buys nothing (ids are the server's own, not a client's).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl DispatchHistory {
    /// The device's rate (zero for a device never dispatched to).
    pub fn get(&self, id: DeviceId) -> PrefillRate {
        self.devices.get(&id).map(|t| t.rate).unwrap_or_default()
    }

    /// The device's rate and its standing proof of a miss, in one lookup.
    pub(crate) fn with_miss(&self, id: DeviceId) -> (PrefillRate, Option<MissCert>) {
        self.devices
            .get(&id)
            .map_or((PrefillRate::ZERO, None), |t| (t.rate, t.miss))
    }

    /// The device's standing proof of a miss, if any: a failed one is
    /// not returned, and where no device of its slot has one, nothing is
    /// looked up.
    pub(crate) fn standing_miss(&self, id: DeviceId) -> Option<&MissCert> {
        if self.proofs[proof_slot(id)] == 0 {
            return None;
        }
        self.devices
            .get(&id)
            .and_then(|t| t.miss.as_ref())
            .filter(|m| m.stands())
    }

    /// Keeps a proof of the device's miss (or of a failed one) until its next dispatch.
    pub(crate) fn keep_miss(&mut self, id: DeviceId, miss: MissCert) {
        // A device never dispatched to gets an entry: a zero rate is no history.
        let t = self.devices.entry(id).or_default();
        let slot = &mut self.proofs[proof_slot(id)];
        if t.miss.is_some_and(|m| m.stands()) {
            *slot -= 1;
        }
        if miss.stands() {
            *slot += 1;
        }
        t.miss = Some(miss);
    }

    /// Drops every proof of a miss (the SLO or the window changed).
    pub(crate) fn forget_misses(&mut self) {
        for t in self.devices.values_mut() {
            t.miss = None;
        }
        self.proofs = [0; PROOF_SLOTS];
    }

    /// Records a dispatch to `id`, which drops its proof of a miss.
    pub fn record(&mut self, id: DeviceId, tokens: u32, now: Duration, window: Duration) {
        let t = self.devices.entry(id).or_default();
        t.rate.record(tokens, now, window);
        if t.miss.take().is_some_and(|m| m.stands()) {
            self.proofs[proof_slot(id)] -= 1;
        }
    }
}

/// What one device's steps look like over a request's decode, in the
/// time-share model of the module doc.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepMix {
    /// Seconds of a decode-only step of the batch.
    pub decode_s: f64,
    /// Seconds of a step of the batch with one prefill chunk.
    pub mixed_s: f64,
    /// Tokens of that chunk.
    pub chunk_tokens: u32,
    /// A step of the batch packed with as many of those prefills as it
    /// takes, where prefills arrive faster than one a step (priced only then).
    pub packed: Option<PackedStep>,
}

/// A step of the batch carrying several whole prefills at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PackedStep {
    /// Prefill tokens it carries.
    pub tokens: u32,
    /// Its seconds.
    pub seconds: f64,
}

impl StepMix {
    /// Fraction of time in mixed steps at `rate` prefill tokens/s with one
    /// chunk a step: `rate/chunk · mixed_s`.
    fn share_one_per_step(&self, rate: f64) -> f64 {
        if rate <= 0.0 {
            return 0.0;
        }
        rate / f64::from(self.chunk_tokens.max(1)) * self.mixed_s
    }

    /// The device's prefill load at `rate` prefill tokens/s: the fraction
    /// of time in mixed steps of one chunk each (`u = rate/chunk · mixed_s`)
    /// while that is below 1; past it, where small prefills come faster
    /// than one a step and the engine packs them, the same fraction for
    /// packed steps. At least 1 when prefills arrive faster than the
    /// device can take them.
    pub fn prefill_share(&self, rate: f64) -> f64 {
        let u = self.share_one_per_step(rate);
        match self.packed {
            Some(p) if u >= 1.0 => rate / f64::from(p.tokens.max(1)) * p.seconds,
            _ => u,
        }
    }

    /// Whether prefills at `rate` come faster than one a step, so a
    /// [`PackedStep`] would change the prediction.
    pub fn needs_packing(&self, rate: f64) -> bool {
        self.share_one_per_step(rate) >= 1.0
    }

    /// Mean seconds per step (one token per running sequence) at `rate`
    /// prefill tokens/s: `1 / (rate/chunk + (1 − u)/decode_s)` while one
    /// chunk a step keeps up (`u < 1`). Past that every step is mixed: with
    /// a packed step, each carries the `x` prefill tokens that arrive during
    /// it, `x = rate · T(x)`, `T` linear between the one-chunk and the packed
    /// step, so `T(x)` (continuous at `u = 1`); the packed step once `x`
    /// exceeds what it takes, or `mixed_s` without one.
    pub fn time_per_token(&self, rate: f64) -> f64 {
        let u = self.share_one_per_step(rate);
        if u <= 0.0 {
            return self.decode_s;
        }
        if self.decode_s <= 0.0 {
            return self.mixed_s.max(self.decode_s);
        }
        if u < 1.0 {
            let mixed_steps = rate / f64::from(self.chunk_tokens.max(1));
            let decode_steps = (1.0 - u) / self.decode_s;
            return 1.0 / (mixed_steps + decode_steps);
        }
        match self.packed {
            Some(p) if p.tokens > self.chunk_tokens => {
                let (c, t) = (f64::from(self.chunk_tokens), self.mixed_s);
                let (cp, tp) = (f64::from(p.tokens), p.seconds);
                let slope = ((tp - t) / (cp - c)).max(0.0);
                let room = 1.0 - rate * slope;
                if room > 0.0 {
                    let x = rate * (t - slope * c) / room;
                    if x <= cp {
                        return (t + slope * (x - c)).max(self.decode_s);
                    }
                }
                tp.max(t).max(self.decode_s)
            }
            _ => self.mixed_s.max(self.decode_s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAU: Duration = Duration::from_secs(10);

    proptest::proptest! {
        /// The per-slot counts of standing proofs match the proofs kept,
        /// whatever the order of proofs, failed proofs, dispatches and
        /// forgetting: a device with a standing proof is always looked up.
        #[test]
        fn proof_slots_count_the_standing_proofs(
            ops in proptest::collection::vec((0u8..4, 0u32..40), 0..200),
        ) {
            let mut h = DispatchHistory::default();
            for (op, id) in ops {
                let id = DeviceId(id);
                match op {
                    0 => h.keep_miss(id, MissCert::for_test(Some(Duration::from_secs(1)))),
                    1 => h.keep_miss(id, MissCert::for_test(None)),
                    2 => h.record(id, 100, Duration::from_secs(1), TAU),
                    _ => h.forget_misses(),
                }
                let standing = h.devices.values().filter(|t| t.miss.is_some_and(|m| m.stands()));
                proptest::prop_assert_eq!(standing.count() as u32, h.proofs.iter().sum::<u32>());
                for (&id, t) in &h.devices {
                    let stands = t.miss.is_some_and(|m| m.stands());
                    proptest::prop_assert_eq!(h.standing_miss(id).is_some(), stands);
                }
            }
        }
    }

    #[test]
    fn steady_dispatches_average_rate_times_size() {
        let mut r = PrefillRate::default();
        // 4 dispatches/s of 500 tokens for a minute: 2000 tokens/s.
        for i in 0..240u64 {
            r.record(500, Duration::from_millis(250 * i), TAU);
        }
        let now = Duration::from_millis(250 * 239);
        let rate = r.tokens_per_s(now, TAU);
        assert!((rate - 2000.0).abs() < 0.1 * 2000.0, "{rate}");
        assert_eq!(r.mean_tokens(), 500.0);
        // It decays with time constant τ.
        let later = r.tokens_per_s(now + TAU, TAU);
        assert!((later / rate - (-1.0f64).exp()).abs() < 1e-9);
        assert!(r.with_dispatch(1000, now, TAU) > rate);
    }

    #[test]
    fn clock_steps_back_do_not_panic_or_grow() {
        let mut r = PrefillRate::default();
        r.record(100, Duration::from_secs(50), TAU);
        r.record(100, Duration::from_secs(10), TAU);
        assert!(r.tokens_per_s(Duration::ZERO, TAU) <= 20.0 + 1e-9);
        assert_eq!(r.tokens_per_s(Duration::ZERO, Duration::ZERO), 0.0);
    }

    #[test]
    fn time_share_interpolates_decode_and_mixed_steps() {
        let m = StepMix {
            decode_s: 0.010,
            mixed_s: 0.050,
            chunk_tokens: 1000,
            packed: None,
        };
        assert_eq!(m.time_per_token(0.0), 0.010);
        // 10 chunks/s: half the time in 50 ms mixed steps (10 of them), the
        // other half in 50 decode steps: 60 steps/s.
        let t = m.time_per_token(10_000.0);
        assert!((t - 1.0 / 60.0).abs() < 1e-12, "{t}");
        assert!((m.prefill_share(10_000.0) - 0.5).abs() < 1e-12);
        // Saturated: every step carries a chunk.
        assert_eq!(m.time_per_token(1e9), 0.050);
    }

    #[test]
    fn small_prefills_faster_than_one_a_step_are_packed() {
        // 16-token prefills (cached prompts) beside 10 ms decode steps: one
        // a step takes 11 ms, 128 of them packed into one step 30 ms.
        let one = StepMix {
            decode_s: 0.010,
            mixed_s: 0.011,
            chunk_tokens: 16,
            packed: None,
        };
        let packed = StepMix {
            packed: Some(PackedStep {
                tokens: 2048,
                seconds: 0.030,
            }),
            ..one
        };
        // 200 prefills/s: more than one a step. Alone, that is past saturation.
        let rate = 200.0 * 16.0;
        assert!(one.needs_packing(rate));
        assert!(one.prefill_share(rate) >= 1.0);
        // Packed, the device keeps up: every step carries x = rate · T(x).
        let share = packed.prefill_share(rate);
        assert!(share < 1.0, "{share}");
        let t = packed.time_per_token(rate);
        assert!(t > 0.011 && t < 0.030, "{t}");
        let slope = (0.030 - 0.011) / (2048.0 - 16.0);
        let x = rate * t;
        assert!((t - (0.011 + slope * (x - 16.0))).abs() < 1e-12, "{t} {x}");
        // Continuous where one a step stops keeping up, and rising with the rate.
        let edge = 16.0 / 0.011;
        assert!((packed.time_per_token(edge) - 0.011).abs() < 1e-9);
        assert!((one.time_per_token(edge * 0.999_999) - 0.011).abs() < 1e-6);
        assert!(packed.time_per_token(rate * 2.0) > t);
        // Past what even packed steps take: saturated.
        let flood = 2048.0 / 0.030 * 1.01;
        assert!(packed.prefill_share(flood) >= 1.0);
        assert_eq!(packed.time_per_token(flood), 0.030);
    }
}
