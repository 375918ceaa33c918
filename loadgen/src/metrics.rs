//! Per-request records and run summaries, identical for live and simulated
//! targets so their reports compare line by line.
//!
//! Definitions: TTFT = first token − actual send; ITL = gap between
//! consecutive tokens; TPOT = (E2E − TTFT) / (output − 1), absent for one
//! token; E2E = last token − send. `dispatch_delay` = actual − scheduled
//! send time (the generator's own lag). Percentiles are nearest-rank.
//! `completed` counts `ok` outcomes; goodput counts requests that completed
//! *and* met every SLO, per second of run duration (first arrival to last
//! finish).

use serde::Serialize;

use crate::slo::SloSection;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every requested token arrived.
    Ok,
    /// Fewer tokens than `max_tokens` arrived.
    Truncated,
    /// The target answered with an HTTP error status.
    HttpError,
    /// No answer within the timeout.
    Timeout,
    /// The router or server refused it (prompt too long, no device).
    Rejected,
    /// Connection or protocol failure.
    Error,
}

impl Outcome {
    /// Lower-case name used in CSV and JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Truncated => "truncated",
            Outcome::HttpError => "http_error",
            Outcome::Timeout => "timeout",
            Outcome::Rejected => "rejected",
            Outcome::Error => "error",
        }
    }
}

/// What happened to one request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestRecord {
    /// Workload index.
    pub id: u64,
    /// Workload source index.
    pub source: u16,
    /// Scheduled send time, seconds from run start.
    pub scheduled_s: f64,
    /// Actual send time, seconds from run start.
    pub sent_s: f64,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Output tokens requested.
    pub max_tokens: u32,
    /// Output tokens received.
    pub output_tokens: u32,
    /// Time to first token, seconds.
    pub ttft_s: Option<f64>,
    /// End-to-end latency, seconds.
    pub e2e_s: Option<f64>,
    /// Every inter-token latency, seconds.
    pub itl_s: Vec<f32>,
    /// Device index (sim) or none (live).
    pub device: Option<u32>,
    /// How it ended.
    pub outcome: Outcome,
    /// HTTP status for `http_error`.
    pub status: Option<u16>,
    /// Times the engine preempted it (sim).
    pub preemptions: u32,
}

impl RequestRecord {
    /// A record for a request not yet sent.
    pub fn pending(
        id: u64,
        source: u16,
        scheduled_s: f64,
        prompt_tokens: u32,
        max_tokens: u32,
    ) -> Self {
        Self {
            id,
            source,
            scheduled_s,
            sent_s: scheduled_s,
            prompt_tokens,
            max_tokens,
            output_tokens: 0,
            ttft_s: None,
            e2e_s: None,
            itl_s: Vec::new(),
            device: None,
            outcome: Outcome::Error,
            status: None,
            preemptions: 0,
        }
    }

    /// Time per output token after the first, seconds.
    pub fn tpot_s(&self) -> Option<f64> {
        match (self.ttft_s, self.e2e_s) {
            (Some(f), Some(e)) if self.output_tokens > 1 => {
                Some((e - f) / f64::from(self.output_tokens - 1))
            }
            _ => None,
        }
    }

    /// The generator's own lag sending this request, seconds.
    pub fn dispatch_delay_s(&self) -> f64 {
        (self.sent_s - self.scheduled_s).max(0.0)
    }

    /// Whether it completed and met the SLO.
    pub fn good(&self, slo: &SloSection) -> bool {
        self.outcome == Outcome::Ok && self.ttft_s.is_some_and(|t| slo.met_by(t, self.tpot_s()))
    }

    /// Finish time, seconds from run start.
    pub fn finish_s(&self) -> Option<f64> {
        self.e2e_s.map(|e| self.sent_s + e)
    }
}

/// Mean and percentiles of a latency, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Dist {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// Nearest-rank percentile `p` (0–100) of sorted `xs` (0 when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Dist {
    /// Summarises samples (sorts them in place).
    pub fn of(xs: &mut [f64]) -> Self {
        if xs.is_empty() {
            return Self::default();
        }
        xs.sort_unstable_by(f64::total_cmp);
        Self {
            count: xs.len() as u64,
            mean: xs.iter().sum::<f64>() / xs.len() as f64,
            p50: percentile(xs, 50.0),
            p90: percentile(xs, 90.0),
            p95: percentile(xs, 95.0),
            p99: percentile(xs, 99.0),
        }
    }

    /// The value at percentile `p` among the four recorded (nearest not above).
    pub fn at(&self, p: f64) -> f64 {
        match p {
            p if p <= 50.0 => self.p50,
            p if p <= 90.0 => self.p90,
            p if p <= 95.0 => self.p95,
            _ => self.p99,
        }
    }
}

/// Sorted samples of one run's latencies (kept for CDF plots).
#[derive(Debug, Clone, Default)]
pub struct Samples {
    /// TTFT, sorted, seconds.
    pub ttft: Vec<f64>,
    /// TPOT, sorted.
    pub tpot: Vec<f64>,
    /// ITL, sorted.
    pub itl: Vec<f64>,
    /// E2E, sorted.
    pub e2e: Vec<f64>,
    /// Dispatch delay, sorted.
    pub dispatch: Vec<f64>,
}

impl Samples {
    /// Collects latencies of `ok` and `truncated` requests, sorted.
    pub fn collect(records: &[RequestRecord]) -> Self {
        let mut s = Samples::default();
        for r in records {
            s.dispatch.push(r.dispatch_delay_s());
            if !matches!(r.outcome, Outcome::Ok | Outcome::Truncated) {
                continue;
            }
            s.ttft.extend(r.ttft_s);
            s.tpot.extend(r.tpot_s());
            s.e2e.extend(r.e2e_s);
            s.itl.extend(r.itl_s.iter().map(|&x| f64::from(x)));
        }
        for v in [
            &mut s.ttft,
            &mut s.tpot,
            &mut s.itl,
            &mut s.e2e,
            &mut s.dispatch,
        ] {
            v.sort_unstable_by(f64::total_cmp);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut xs: Vec<f64> = (1..=100).map(f64::from).collect();
        xs.reverse();
        let d = Dist::of(&mut xs);
        assert_eq!((d.p50, d.p90, d.p95, d.p99), (50.0, 90.0, 95.0, 99.0));
        assert_eq!(d.mean, 50.5);
        assert_eq!(Dist::of(&mut []), Dist::default());
    }

    #[test]
    fn tpot_and_goodness() {
        let mut r = RequestRecord::pending(0, 0, 1.0, 10, 5);
        r.sent_s = 1.5;
        r.output_tokens = 5;
        r.ttft_s = Some(0.1);
        r.e2e_s = Some(0.5);
        r.outcome = Outcome::Ok;
        assert!((r.tpot_s().unwrap() - 0.1).abs() < 1e-12);
        assert_eq!(r.dispatch_delay_s(), 0.5);
        assert!(r.good(&"ttft_ms=100,tpot_ms=100".parse().unwrap()));
        assert!(!r.good(&"ttft_ms=100,tpot_ms=50".parse().unwrap()));
    }
}
