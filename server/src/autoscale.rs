//! The autoscaling signal: desired replicas per pool (each `[[endpoints]]`
//! entry), planned every `autoscale.interval_s` from the arrivals the router
//! saw in the last `autoscale.window_s`, published as
//! `switchyard_pool_desired_replicas{pool}` and on `/admin/plan`.
//!
//! The planning itself (simulating candidate fleets) lives outside this
//! crate; the binary hands a [`ReplicaPlanner`] in, so the server keeps to
//! its side of the dependency graph.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use switchyard_scheduler::config::Config;

use crate::fleet::LiveFleet;
use crate::metrics as m;
use crate::worker::lock;

/// Most arrivals remembered, whatever the window (bounds memory under overload).
const MAX_ARRIVALS: usize = 200_000;

/// What the router saw in the window.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Arrivals per second over the window.
    pub rate: f64,
    /// (prompt tokens, expected output tokens) of each arrival.
    pub shapes: Vec<(u32, u32)>,
}

/// A pool: an endpoint and the device profile of its replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pool {
    /// The endpoint id.
    pub name: String,
    /// Device profile of each replica.
    pub profile: String,
}

/// A planner's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedReplicas {
    /// (pool, desired replicas).
    pub pools: Vec<(String, u32)>,
    /// Price of that fleet, USD/h.
    pub usd_per_hour: f64,
    /// Whether a fleet within the limits meets the SLO.
    pub meets_slo: bool,
}

/// Turns an observation into desired replicas (the binary provides one built on the simulator).
pub trait ReplicaPlanner: Send + Sync + std::fmt::Debug + 'static {
    /// Plans `pools` for `observation` under `config`'s SLO, router and `[autoscale]` limits.
    fn plan(
        &self,
        config: &Config,
        observation: &Observation,
        pools: &[Pool],
    ) -> Result<PlannedReplicas, String>;
}

/// The latest plan, as `/admin/plan` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PlanSnapshot {
    /// Arrivals per second planned for.
    pub rate: f64,
    /// Arrivals in the window.
    pub arrivals: usize,
    /// Window length, seconds.
    pub window_s: f64,
    /// Pools and their desired replicas.
    pub pools: Vec<PoolPlan>,
    /// Price of the planned fleet, USD/h.
    pub usd_per_hour: f64,
    /// Whether the plan meets the SLO within `max_replicas`.
    pub meets_slo: bool,
    /// Seconds the planner took.
    pub planning_s: f64,
    /// Seconds since the process started, when it was computed.
    pub computed_at_s: f64,
    /// Why the last attempt failed, if it did (the pools keep the previous plan).
    pub error: Option<String>,
}

/// One pool's line of the plan.
#[derive(Debug, Clone, Serialize)]
pub struct PoolPlan {
    /// The endpoint id.
    pub pool: String,
    /// Its device profile.
    pub profile: String,
    /// Desired replicas.
    pub desired_replicas: u32,
    /// Replicas it has now (servers the tier knows).
    pub current_replicas: u32,
}

/// The arrival window and the latest plan.
#[derive(Debug, Default)]
pub struct Autoscaler {
    arrivals: Mutex<VecDeque<(Instant, u32, u32)>>,
    latest: Mutex<Option<PlanSnapshot>>,
}

impl Autoscaler {
    /// Records an arrival of `prompt` tokens expected to generate `output`.
    pub fn record(&self, now: Instant, prompt: u32, output: u32) {
        let mut a = lock(&self.arrivals);
        if a.len() >= MAX_ARRIVALS {
            a.pop_front();
        }
        a.push_back((now, prompt, output));
    }

    /// The arrivals of the last `window` before `now` (older ones are dropped);
    /// `since` is when recording began, so a young process is not under-counted.
    pub fn observe(&self, now: Instant, window: Duration, since: Instant) -> Observation {
        let mut a = lock(&self.arrivals);
        while a
            .front()
            .is_some_and(|(t, _, _)| now.duration_since(*t) > window)
        {
            a.pop_front();
        }
        let span = window
            .min(now.duration_since(since))
            .as_secs_f64()
            .max(1e-3);
        Observation {
            rate: a.len() as f64 / span,
            shapes: a.iter().map(|(_, p, o)| (*p, *o)).collect(),
        }
    }

    /// The latest plan.
    pub fn latest(&self) -> Option<PlanSnapshot> {
        lock(&self.latest).clone()
    }
}

/// The pools of `fleet`: every endpoint, with its profile (a node's from its devices).
fn pools(config: &Config, fleet: &LiveFleet) -> Vec<(Pool, u32)> {
    let targets = fleet.remote_targets();
    config
        .endpoints
        .iter()
        .filter_map(|e| {
            let mine: Vec<_> = targets
                .iter()
                .filter(|t| t.server.endpoint == e.id)
                .collect();
            let profile = e
                .profile
                .clone()
                .or_else(|| mine.first().map(|t| t.profile_name()))?;
            let mut servers: Vec<&str> = mine.iter().map(|t| t.server.base.as_str()).collect();
            servers.sort_unstable();
            servers.dedup();
            Some((
                Pool {
                    name: e.id.clone(),
                    profile,
                },
                servers.len() as u32,
            ))
        })
        .collect()
}

/// Replans every `autoscale.interval_s` until the fleet stops.
pub async fn run(fleet: Arc<LiveFleet>, config: Config, planner: Arc<dyn ReplicaPlanner>) {
    let settings = config.autoscale.clone();
    let started = Instant::now();
    let config = Arc::new(config);
    loop {
        tokio::time::sleep(settings.interval).await;
        if fleet.stopping() {
            return;
        }
        let now = Instant::now();
        let observation = fleet.autoscaler().observe(now, settings.window, started);
        let pools = pools(&config, &fleet);
        let plain: Vec<Pool> = pools.iter().map(|(p, _)| p.clone()).collect();
        let (cfg, obs, planner_ref) = (config.clone(), observation.clone(), planner.clone());
        let t0 = Instant::now();
        let result = tokio::task::spawn_blocking(move || planner_ref.plan(&cfg, &obs, &plain))
            .await
            .map_err(|e| format!("planner panicked: {e}"))
            .and_then(|r| r);
        let planning_s = t0.elapsed().as_secs_f64();
        let mut latest = lock(&fleet.autoscaler().latest);
        let previous = latest.take();
        let snapshot = match result {
            Ok(plan) => {
                let lines: Vec<PoolPlan> = pools
                    .iter()
                    .map(|(p, current)| PoolPlan {
                        pool: p.name.clone(),
                        profile: p.profile.clone(),
                        desired_replicas: plan
                            .pools
                            .iter()
                            .find(|(name, _)| *name == p.name)
                            .map_or(0, |(_, n)| *n),
                        current_replicas: *current,
                    })
                    .collect();
                for l in &lines {
                    metrics::gauge!(m::POOL_DESIRED_REPLICAS, "pool" => l.pool.clone())
                        .set(f64::from(l.desired_replicas));
                }
                PlanSnapshot {
                    rate: observation.rate,
                    arrivals: observation.shapes.len(),
                    window_s: settings.window.as_secs_f64(),
                    pools: lines,
                    usd_per_hour: plan.usd_per_hour,
                    meets_slo: plan.meets_slo,
                    planning_s,
                    computed_at_s: started.elapsed().as_secs_f64(),
                    error: None,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "replica planning failed; keeping the previous plan");
                let mut s = previous.unwrap_or(PlanSnapshot {
                    rate: observation.rate,
                    arrivals: observation.shapes.len(),
                    window_s: settings.window.as_secs_f64(),
                    pools: Vec::new(),
                    usd_per_hour: 0.0,
                    meets_slo: false,
                    planning_s,
                    computed_at_s: started.elapsed().as_secs_f64(),
                    error: None,
                });
                s.error = Some(e);
                s
            }
        };
        *latest = Some(snapshot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_counts_recent_arrivals_only() {
        let a = Autoscaler::default();
        let t0 = Instant::now();
        for i in 0..10 {
            a.record(t0 + Duration::from_secs(i), 100, 10);
        }
        // At t0+10 s with a 5 s window: arrivals at 5..=9 s remain.
        let o = a.observe(t0 + Duration::from_secs(10), Duration::from_secs(5), t0);
        assert_eq!(o.shapes.len(), 5);
        assert!((o.rate - 1.0).abs() < 1e-9, "{}", o.rate);
        // A process younger than the window divides by its age.
        let b = Autoscaler::default();
        b.record(t0, 1, 1);
        b.record(t0, 1, 1);
        let o = b.observe(t0 + Duration::from_secs(2), Duration::from_secs(60), t0);
        assert!((o.rate - 1.0).abs() < 1e-9, "{}", o.rate);
    }
}
