//! One run's summary: the `results.json` entry (schema in the module docs
//! of [`crate::report`]).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::fleet::Fleet;
use crate::metrics::{Dist, Outcome, RequestRecord, Samples};
use crate::sim::SimResult;
use crate::slo::SloSection;

/// Requests and tokens per second.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Throughput {
    /// Completed requests per second.
    pub requests_per_s: f64,
    /// Output tokens per second (all outcomes).
    pub output_tokens_per_s: f64,
}

/// Requests that met every SLO.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Goodput {
    /// Good requests per second.
    pub requests_per_s: f64,
}

/// Fleet cost of a simulated run.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct CostSummary {
    /// Fleet price, USD per hour.
    pub usd_per_hour: f64,
    /// USD per million output tokens at the run's throughput.
    pub usd_per_million_output_tokens: f64,
    /// Good requests per USD (goodput per dollar) of the whole fleet.
    pub goodput_requests_per_usd: f64,
    /// Σ utilisation × price: what the run costs if idle device time is not paid (autoscaling), USD/h.
    pub busy_usd_per_hour: f64,
    /// Good requests per USD of busy device time.
    pub goodput_requests_per_busy_usd: f64,
}

/// One device's share of a simulated run.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceSummary {
    /// Index in the fleet.
    pub id: u32,
    /// Profile name.
    pub profile: String,
    /// Busy fraction of the run.
    pub utilization: f64,
    /// Requests routed to it.
    pub requests: u64,
}

/// One time bucket of a run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Bucket {
    /// Bucket start, seconds.
    pub t_s: f64,
    /// Requests finished per second in the bucket.
    pub requests_per_s: f64,
    /// Output tokens per second of requests finished in the bucket.
    pub output_tokens_per_s: f64,
    /// Fraction of requests finished in the bucket that met the SLO.
    pub slo_attainment: f64,
}

/// Simulator statistics.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SimStats {
    /// Engine steps.
    pub steps: u64,
    /// Of `steps`, those run as multi-step decode stretches.
    pub multi_steps: u64,
    /// Preemptions.
    pub preemptions: u64,
    /// Wall-clock seconds the simulation took.
    pub wall_s: f64,
    /// Simulated requests per wall-clock second.
    pub requests_per_wall_s: f64,
}

/// A `results.json` run entry.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Display label (`cost@10`, ...).
    pub label: String,
    /// Routing policy (sim) or none.
    pub policy: Option<String>,
    /// Offered rate, requests per second (none for closed loop / native trace time).
    pub rate: Option<f64>,
    /// Target URL or `sim:FLEET`.
    pub target: String,
    /// Requests in the workload.
    pub requests: u64,
    /// Requests that completed with every token.
    pub completed: u64,
    /// Requests that did not.
    pub failed: u64,
    /// Count per outcome.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// First arrival to last finish, seconds.
    pub duration_s: f64,
    /// Throughput.
    pub throughput: Throughput,
    /// Time to first token, seconds.
    pub ttft_s: Dist,
    /// Time per output token, seconds.
    pub tpot_s: Dist,
    /// Inter-token latency, seconds.
    pub itl_s: Dist,
    /// End-to-end latency, seconds.
    pub e2e_s: Dist,
    /// The generator's own send lag, seconds.
    pub dispatch_delay_s: Dist,
    /// SLO targets used.
    pub slo: SloSection,
    /// Goodput.
    pub goodput: Goodput,
    /// Fraction of all requests that completed within the SLO.
    pub slo_attainment: f64,
    /// Whether the SLO percentile of TTFT and TPOT is within target and nothing failed.
    pub slo_met: bool,
    /// Fleet cost (sim).
    pub cost: Option<CostSummary>,
    /// Per-device utilisation (sim).
    pub devices: Vec<DeviceSummary>,
    /// Throughput and attainment over time.
    pub timeline: Vec<Bucket>,
    /// Simulator statistics (sim).
    pub sim: Option<SimStats>,
}

impl RunSummary {
    /// Summarises records; `samples` are the sorted latencies of the same records.
    pub fn new(
        label: String,
        target: String,
        records: &[RequestRecord],
        samples: &mut Samples,
        slo: SloSection,
    ) -> Self {
        let mut outcomes = BTreeMap::new();
        for r in records {
            *outcomes.entry(r.outcome.as_str()).or_insert(0u64) += 1;
        }
        let completed = outcomes.get("ok").copied().unwrap_or(0);
        let start = records
            .iter()
            .map(|r| r.scheduled_s)
            .fold(f64::INFINITY, f64::min);
        let end = records
            .iter()
            .filter_map(|r| r.finish_s().or(Some(r.sent_s)))
            .fold(0.0, f64::max);
        let duration_s = if start.is_finite() {
            (end - start).max(1e-9)
        } else {
            0.0
        };
        let good = records.iter().filter(|r| r.good(&slo)).count() as u64;
        let out_tokens: u64 = records.iter().map(|r| u64::from(r.output_tokens)).sum();
        let per_s = |x: f64| {
            if duration_s > 0.0 {
                x / duration_s
            } else {
                0.0
            }
        };
        let dist = |v: &mut Vec<f64>| Dist::of(v);
        let ttft_s = dist(&mut samples.ttft);
        let tpot_s = dist(&mut samples.tpot);
        let n = records.len() as u64;
        let slo_met = n > 0
            && completed == n
            && ttft_s.at(slo.percent()) * 1e3 <= slo.ttft_ms
            && tpot_s.at(slo.percent()) * 1e3 <= slo.tpot_ms;
        Self {
            label,
            policy: None,
            rate: None,
            target,
            requests: n,
            completed,
            failed: n - completed,
            outcomes,
            duration_s,
            throughput: Throughput {
                requests_per_s: per_s(completed as f64),
                output_tokens_per_s: per_s(out_tokens as f64),
            },
            ttft_s,
            tpot_s,
            itl_s: dist(&mut samples.itl),
            e2e_s: dist(&mut samples.e2e),
            dispatch_delay_s: dist(&mut samples.dispatch),
            slo,
            goodput: Goodput {
                requests_per_s: per_s(good as f64),
            },
            slo_attainment: if n == 0 { 0.0 } else { good as f64 / n as f64 },
            slo_met,
            cost: None,
            devices: Vec::new(),
            timeline: timeline(
                records,
                &slo,
                if start.is_finite() { start } else { 0.0 },
                duration_s,
            ),
            sim: None,
        }
    }

    /// Adds fleet cost, utilisation and simulator statistics.
    pub fn with_sim(mut self, fleet: &Fleet, sim: &SimResult, wall_s: f64) -> Self {
        let usd_per_hour = fleet.usd_per_hour();
        let hours = self.duration_s / 3600.0;
        let out_tokens = self.throughput.output_tokens_per_s * self.duration_s;
        let good = self.goodput.requests_per_s * self.duration_s;
        let span = sim.end_s.max(self.duration_s).max(1e-9);
        self.devices = (0..fleet.devices.len())
            .map(|i| DeviceSummary {
                id: i as u32,
                profile: fleet.profile(i).to_string(),
                utilization: (sim.busy_s[i] / span).min(1.0),
                requests: sim.routed[i],
            })
            .collect();
        let busy_usd_per_hour: f64 = self
            .devices
            .iter()
            .zip(&fleet.devices)
            .map(|(d, &t)| d.utilization * fleet.types[t].usd_per_hour())
            .sum();
        let per_usd = |usd_h: f64| {
            if hours > 0.0 && usd_h > 0.0 {
                good / (usd_h * hours)
            } else {
                0.0
            }
        };
        self.cost = Some(CostSummary {
            usd_per_hour,
            usd_per_million_output_tokens: if out_tokens > 0.0 {
                usd_per_hour * hours / out_tokens * 1e6
            } else {
                0.0
            },
            goodput_requests_per_usd: per_usd(usd_per_hour),
            busy_usd_per_hour,
            goodput_requests_per_busy_usd: per_usd(busy_usd_per_hour),
        });
        self.sim = Some(SimStats {
            steps: sim.steps,
            multi_steps: sim.multi_steps,
            preemptions: sim.preemptions,
            wall_s,
            requests_per_wall_s: if wall_s > 0.0 {
                self.requests as f64 / wall_s
            } else {
                0.0
            },
        });
        self
    }
}

/// Buckets finished requests by finish time (about 60 buckets, at least 1 s each).
fn timeline(records: &[RequestRecord], slo: &SloSection, start: f64, duration: f64) -> Vec<Bucket> {
    if duration <= 0.0 {
        return Vec::new();
    }
    let width = (duration / 60.0).max(1.0);
    let n = (duration / width).ceil() as usize + 1;
    let mut done = vec![0u64; n];
    let mut good = vec![0u64; n];
    let mut toks = vec![0u64; n];
    for r in records {
        let Some(f) = r.finish_s() else { continue };
        let b = (((f - start) / width).floor().max(0.0) as usize).min(n - 1);
        if r.outcome == Outcome::Ok {
            done[b] += 1;
        }
        good[b] += u64::from(r.good(slo));
        toks[b] += u64::from(r.output_tokens);
    }
    (0..n)
        .map(|b| Bucket {
            t_s: b as f64 * width,
            requests_per_s: done[b] as f64 / width,
            output_tokens_per_s: toks[b] as f64 / width,
            slo_attainment: if done[b] == 0 {
                0.0
            } else {
                good[b] as f64 / done[b] as f64
            },
        })
        .collect()
}
