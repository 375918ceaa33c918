//! Desired replicas per pool from what a live router observed: the shapes
//! and rate of a sliding window of arrivals, replayed through the same
//! planner as `switchyard plan`, restricted to the pools' device types.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use switchyard_backends::{Catalog, ModelSpec};
use switchyard_scheduler::config::SloSection;
use switchyard_scheduler::router::{Objective, PolicyKind};

use crate::cli::CONFIRMATION_SEEDS;
use crate::error::LoadgenError;
use crate::plan::{plan, PlanOptions};
use crate::rng::Rng;
use crate::workload::{ReqSpec, Workload};

/// One observed request shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObservedShape {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Output tokens (observed, or the router's estimate).
    pub output_tokens: u32,
}

/// A pool: an endpoint whose replicas are one device type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// Its name (the endpoint id).
    pub pool: String,
    /// Device profile of each replica.
    pub profile: String,
}

/// What to plan for, besides the observation.
#[derive(Debug, Clone)]
pub struct ReplicaPlanOptions {
    /// Targets.
    pub slo: SloSection,
    /// Routing policy of the pools' router.
    pub policy: PolicyKind,
    /// Objective of the cost policy.
    pub objective: Objective,
    /// Most replicas of one pool.
    pub max_replicas: u32,
    /// Fewest replicas of a pool.
    pub min_replicas: u32,
    /// Requests simulated per candidate fleet.
    pub simulated_requests: u32,
    /// Profiles directory.
    pub profiles_dir: PathBuf,
}

/// Desired replicas per pool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicaPlan {
    /// (pool, desired replicas), in pool order.
    pub pools: Vec<(String, u32)>,
    /// Price of that fleet, USD/h.
    pub usd_per_hour: f64,
    /// Whether the planner found a fleet meeting the SLO (else the largest allowed).
    pub meets_slo: bool,
    /// The rate planned for, req/s.
    pub rate: f64,
}

/// Poisson arrivals at `rate` whose shapes cycle through `shapes` in a seeded random order.
pub fn observed_workload(
    shapes: &[ObservedShape],
    rate: f64,
    requests: usize,
    seed: u64,
) -> Workload {
    let mut rng = Rng::new(seed);
    let mut t = 0.0;
    let requests = (0..requests)
        .map(|i| {
            t += rng.exponential(rate);
            let s = shapes[(rng.next_u64() % shapes.len() as u64) as usize];
            ReqSpec {
                id: i as u64,
                arrival: Duration::from_secs_f64(t),
                prompt_tokens: s.prompt_tokens.max(1),
                output_tokens: s.output_tokens.max(1),
                shared_prefix: 0,
                source: 0,
                hash_ids: None,
            }
        })
        .collect();
    Workload {
        requests,
        concurrency: None,
        duration: None,
        sources: vec!["observed".into()],
    }
}

/// The cheapest replica counts of `pools` that meet the SLO for `shapes` arriving at `rate`.
pub fn desired_replicas(
    catalog: &Catalog,
    model: &ModelSpec,
    shapes: &[ObservedShape],
    rate: f64,
    pools: &[PoolSpec],
    opts: &ReplicaPlanOptions,
) -> Result<ReplicaPlan, LoadgenError> {
    let at_least = |n: u32| n.clamp(opts.min_replicas, opts.max_replicas);
    if shapes.is_empty() || rate <= 0.0 || pools.is_empty() {
        return Ok(ReplicaPlan {
            pools: pools
                .iter()
                .map(|p| (p.pool.clone(), at_least(0)))
                .collect(),
            usd_per_hour: 0.0,
            meets_slo: true,
            rate,
        });
    }
    let mut profiles: Vec<String> = Vec::new();
    for p in pools {
        if !profiles.contains(&p.profile) {
            profiles.push(p.profile.clone());
        }
    }
    let plan_opts = PlanOptions {
        devices: profiles.clone(),
        max_devices: opts.max_replicas.saturating_mul(profiles.len() as u32),
        slo: opts.slo,
        policy: opts.policy,
        objective: opts.objective,
        rate,
        progress: false,
        profiles_dir: opts.profiles_dir.clone(),
    };
    let n = opts.simulated_requests as usize;
    let workload = observed_workload(shapes, rate, n, 0);
    let confirm: Vec<Workload> = (1..=CONFIRMATION_SEEDS)
        .map(|k| observed_workload(shapes, rate, n, k))
        .collect();
    let (fleet, usd_per_hour, meets_slo) =
        match plan(catalog, model, &workload, &confirm, &plan_opts) {
            Ok(r) => (r.chosen.fleet, r.chosen.usd_per_hour, true),
            // Beyond what the pools may grow to: ask for all of it.
            Err(LoadgenError::Infeasible { .. }) => (
                profiles
                    .iter()
                    .map(|p| (p.clone(), opts.max_replicas))
                    .collect(),
                0.0,
                false,
            ),
            Err(e) => return Err(e),
        };
    // Pools sharing a profile split its count, the first ones rounding up.
    let mut out = Vec::new();
    for p in pools {
        let total = fleet
            .iter()
            .find(|(profile, _)| *profile == p.profile)
            .map_or(0, |(_, n)| *n);
        let same: Vec<&PoolSpec> = pools.iter().filter(|q| q.profile == p.profile).collect();
        let k = same.len() as u32;
        let rank = same.iter().position(|q| q.pool == p.pool).unwrap_or(0) as u32;
        let share = total / k + u32::from(rank < total % k);
        out.push((p.pool.clone(), at_least(share)));
    }
    Ok(ReplicaPlan {
        pools: out,
        usd_per_hour,
        meets_slo,
        rate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observed_workload_has_the_rate_and_the_shapes() {
        let shapes = [
            ObservedShape {
                prompt_tokens: 100,
                output_tokens: 10,
            },
            ObservedShape {
                prompt_tokens: 2000,
                output_tokens: 50,
            },
        ];
        let w = observed_workload(&shapes, 4.0, 4000, 7);
        let rate = w.offered_rate();
        assert!((rate - 4.0).abs() < 0.3, "{rate}");
        assert!(w.requests.iter().all(|r| shapes
            .iter()
            .any(|s| s.prompt_tokens == r.prompt_tokens && s.output_tokens == r.output_tokens)));
        let long = w
            .requests
            .iter()
            .filter(|r| r.prompt_tokens == 2000)
            .count();
        assert!((1700..2300).contains(&long), "{long}");
    }

    #[test]
    fn more_traffic_wants_more_replicas() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../profiles");
        let catalog = Catalog::new(&root);
        let model = catalog.model("llama-3.1-8b").unwrap();
        let shapes = [ObservedShape {
            prompt_tokens: 512,
            output_tokens: 64,
        }];
        let pools = [PoolSpec {
            pool: "l4".into(),
            profile: "l4".into(),
        }];
        let opts = ReplicaPlanOptions {
            slo: SloSection::default(),
            policy: PolicyKind::Cost,
            objective: Objective::default(),
            max_replicas: 16,
            min_replicas: 1,
            simulated_requests: 400,
            profiles_dir: root.clone(),
        };
        let low = desired_replicas(&catalog, &model, &shapes, 0.5, &pools, &opts).unwrap();
        let high = desired_replicas(&catalog, &model, &shapes, 8.0, &pools, &opts).unwrap();
        assert!(high.pools[0].1 > low.pools[0].1, "{low:?} {high:?}");
        let idle = desired_replicas(&catalog, &model, &[], 0.0, &pools, &opts).unwrap();
        assert_eq!(idle.pools[0].1, 1, "min_replicas without traffic");
    }
}
