//! A per-server circuit breaker and overload back-off. Pure: every call
//! takes `now`, so the state machine is tested without sleeping.
//!
//! Closed → (`failures` consecutive failures) → Open → (after `open_for`)
//! → HalfOpen: one probe at a time; its success closes the breaker, its
//! failure re-opens it for twice as long (capped at 16×). A 429/503 is not
//! a failure but a back-off: the server is healthy yet full, so it is
//! skipped until the `Retry-After` it asked for.

use std::time::{Duration, Instant};

use serde::Serialize;

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Taking work.
    Closed,
    /// Refusing work until its cool-down ends.
    Open,
    /// Letting one probe through.
    HalfOpen,
}

impl BreakerState {
    /// The gauge value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

/// One server's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    failures_to_open: u32,
    base_open: Duration,
    consecutive: u32,
    state: BreakerState,
    open_until: Option<Instant>,
    open_for: Duration,
    probe_in_flight: bool,
    backoff_until: Option<Instant>,
}

impl Breaker {
    /// A closed breaker that opens after `failures` consecutive failures for `open_for`.
    pub fn new(failures: u32, open_for: Duration) -> Self {
        Self {
            failures_to_open: failures.max(1),
            base_open: open_for,
            consecutive: 0,
            state: BreakerState::Closed,
            open_until: None,
            open_for,
            probe_in_flight: false,
            backoff_until: None,
        }
    }

    /// The state at `now` (an open breaker past its cool-down reads half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match (self.state, self.open_until) {
            (BreakerState::Open, Some(until)) if now >= until => BreakerState::HalfOpen,
            (s, _) => s,
        }
    }

    /// Whether a new request may be sent at `now` (routing eligibility).
    pub fn allows(&self, now: Instant) -> bool {
        if self.backoff_until.is_some_and(|t| now < t) {
            return false;
        }
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::HalfOpen => !self.probe_in_flight,
            BreakerState::Open => false,
        }
    }

    /// Records that a request was sent at `now`; in half-open it is the probe.
    pub fn on_send(&mut self, now: Instant) {
        if self.state(now) == BreakerState::HalfOpen {
            self.state = BreakerState::HalfOpen;
            self.probe_in_flight = true;
        }
    }

    /// A sent request was dropped unsettled: a probe slot it held is free again.
    pub fn on_abandon(&mut self) {
        self.probe_in_flight = false;
    }

    /// A request (or health check) succeeded.
    pub fn on_success(&mut self) {
        self.consecutive = 0;
        self.probe_in_flight = false;
        self.state = BreakerState::Closed;
        self.open_until = None;
        self.open_for = self.base_open;
    }

    /// A request or health check failed (error, 5xx other than 503, timeout).
    pub fn on_failure(&mut self, now: Instant) {
        self.consecutive = self.consecutive.saturating_add(1);
        let was_probe = self.state(now) == BreakerState::HalfOpen;
        if was_probe {
            self.open_for = (self.open_for * 2).min(self.base_open * 16);
        }
        if was_probe || self.consecutive >= self.failures_to_open {
            self.state = BreakerState::Open;
            self.open_until = Some(now + self.open_for);
            self.probe_in_flight = false;
        }
    }

    /// The server said it is overloaded (429/503): skip it until `now + wait`.
    pub fn on_overload(&mut self, now: Instant, wait: Duration) {
        self.probe_in_flight = false;
        let until = now + wait;
        self.backoff_until = Some(self.backoff_until.map_or(until, |t| t.max(until)));
    }

    /// Whether it is backing off an overload at `now`.
    pub fn backing_off(&self, now: Instant) -> bool {
        self.backoff_until.is_some_and(|t| now < t)
    }

    /// Consecutive failures so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: Duration = Duration::from_secs(2);

    #[test]
    fn opens_after_consecutive_failures_and_probes_after_cooldown() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, OPEN);
        b.on_failure(t0);
        b.on_failure(t0);
        assert!(b.allows(t0), "two failures keep it closed");
        b.on_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert!(!b.allows(t0 + Duration::from_secs(1)));
        let later = t0 + OPEN;
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert!(b.allows(later));
        b.on_send(later);
        assert!(!b.allows(later), "one probe at a time");
        b.on_success();
        assert_eq!(b.state(later), BreakerState::Closed);
        assert!(b.allows(later));
    }

    #[test]
    fn a_failed_probe_reopens_for_longer() {
        let t0 = Instant::now();
        let mut b = Breaker::new(1, OPEN);
        b.on_failure(t0);
        let probe = t0 + OPEN;
        b.on_send(probe);
        b.on_failure(probe);
        assert_eq!(b.state(probe + OPEN), BreakerState::Open);
        assert_eq!(b.state(probe + OPEN * 2), BreakerState::HalfOpen);
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(2, OPEN);
        b.on_failure(t0);
        b.on_success();
        b.on_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
    }

    #[test]
    fn overload_backs_off_without_opening() {
        let t0 = Instant::now();
        let mut b = Breaker::new(1, OPEN);
        b.on_overload(t0, Duration::from_millis(500));
        assert!(!b.allows(t0));
        assert_eq!(b.state(t0), BreakerState::Closed);
        assert!(b.allows(t0 + Duration::from_millis(500)));
    }
}
