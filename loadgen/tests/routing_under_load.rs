//! The router and the planner under load, on the simulator: the default
//! policy keeps up with least-loaded on a homogeneous fleet, and `plan`'s
//! answers agree with a brute-force search and hold on another seed.

mod common;

use common::{args, root, tmpdir};
use switchyard_backends::Catalog;
use switchyard_loadgen::cli::{run_loadgen, run_plan, PlanArgs};
use switchyard_loadgen::plan::{brute_force_min_count, plan, PlanOptions};
use switchyard_loadgen::workload::{Arrival, WorkloadOptions, WorkloadSource};
use switchyard_scheduler::router::{Objective, PolicyKind};

fn read_json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn capacity(doc: &serde_json::Value, policy: &str) -> f64 {
    doc["slo_capacity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["policy"] == policy)
        .and_then(|c| c["max_rate_meeting_slo"].as_f64())
        .unwrap_or(0.0)
}

/// The A100 ×8 balanced case that once put 2,682 of 3,000 requests on one
/// device: the default policy's SLO capacity is at least 0.95 × least-loaded's.
#[test]
fn a100x8_cost_capacity_keeps_up_with_least_loaded() {
    let out = tmpdir("a100x8");
    let mut a = args("sim:a100-80g=8", &["mix:balanced=1"], out.clone());
    a.sweep = vec![8.0, 32.0, 48.0, 56.0, 64.0, 72.0];
    a.requests = Some(1500);
    a.seed = 3;
    a.policy = vec!["cost".parse().unwrap(), "least-loaded".parse().unwrap()];
    a.slo = Some("ttft_ms=2000,tpot_ms=100".parse().unwrap());
    run_loadgen(a).unwrap();
    let doc = read_json(&out.join("results.json"));
    let (cost, ll) = (capacity(&doc, "cost"), capacity(&doc, "least-loaded"));
    assert!(ll >= 32.0, "least-loaded capacity {ll}");
    assert!(cost >= 0.95 * ll, "cost {cost} vs least-loaded {ll}");
    // Low load: every request within the SLO, none piled on one device.
    let run = &doc["runs"][0];
    assert_eq!(run["policy"], "cost");
    assert_eq!(run["slo_attainment"], 1.0, "{run}");
    let routed: Vec<f64> = run["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["utilization"].as_f64().unwrap())
        .collect();
    let max = routed.iter().cloned().fold(0.0, f64::max);
    let min = routed.iter().cloned().fold(1.0, f64::min);
    assert!(max < 3.0 * min.max(0.01), "utilisation spread {routed:?}");
}

fn plan_options(devices: &[&str], rate: f64) -> PlanOptions {
    PlanOptions {
        devices: devices.iter().map(|d| d.to_string()).collect(),
        max_devices: 16,
        slo: "ttft_p95_ms=2000,tpot_p95_ms=100".parse().unwrap(),
        policy: PolicyKind::Cost,
        objective: Objective::Fixed,
        rate,
        progress: false,
        profiles_dir: root().join("profiles"),
    }
}

fn workload(rate: f64, seed: u64) -> switchyard_loadgen::workload::Workload {
    WorkloadSource::new(&["mix:balanced=1".to_string()])
        .unwrap()
        .build(&WorkloadOptions {
            rate: Some(rate),
            requests: Some(800),
            seed,
            ..WorkloadOptions::default()
        })
        .unwrap()
}

/// For two device types, the planner's cheapest homogeneous fleet is within
/// one device of simulating n = 1, 2, … under each policy.
#[test]
fn plan_matches_brute_force_for_two_device_types() {
    let catalog = Catalog::new(root().join("profiles"));
    let model = catalog.model("llama-3.1-8b").unwrap();
    let rate = 16.0;
    let (w, confirm) = (workload(rate, 0), [workload(rate, 1)]);
    let opts = plan_options(&["a100-80g", "mi250x"], rate);
    let result = plan(&catalog, &model, &w, &confirm, &opts).unwrap();
    let policies = [
        PolicyKind::Cost,
        PolicyKind::LeastLoaded,
        PolicyKind::Latency,
    ];
    for h in &result.homogeneous {
        let brute = brute_force_min_count(&catalog, &model, &w, &opts, &h.profile, &policies)
            .unwrap()
            .map(|(n, _)| n);
        let planned = h.best.as_ref().map(|c| c.fleet[0].1);
        match (planned, brute) {
            (Some(p), Some(b)) => assert!(p <= b + 1, "{}: plan {p} vs brute force {b}", h.profile),
            (p, b) => assert_eq!(p.is_some(), b.is_some(), "{}: {p:?} vs {b:?}", h.profile),
        }
        assert!(planned.is_some(), "{} infeasible", h.profile);
    }
}

/// The mixed fleet `plan` writes meets the SLO when its own `switchyard.toml`
/// is simulated with another seed.
#[test]
fn planned_config_meets_the_slo_on_another_seed() {
    let out = tmpdir("plan-reseed");
    run_plan(PlanArgs {
        workload: vec!["mix:balanced=1".into()],
        rate: 12.0,
        slo: "ttft_p95_ms=2000,tpot_p95_ms=100".parse().unwrap(),
        catalog: root().join("profiles/devices"),
        devices: vec!["h100-sxm".into(), "l4".into(), "mi250x".into()],
        max_devices: 16,
        model: "llama-3.1-8b".into(),
        policy: "cost".parse().unwrap(),
        requests: 800,
        arrival: Arrival::Poisson,
        speedup: 1.0,
        start: 0.0,
        seed: 5,
        out: out.clone(),
        quiet: true,
        brute_force: false,
    })
    .unwrap();
    let plan_doc = read_json(&out.join("plan.json"));
    assert_eq!(plan_doc["plan"]["confirmed"], true, "{plan_doc}");
    let toml = out.join("switchyard.toml");
    assert!(std::fs::read_to_string(&toml)
        .unwrap()
        .contains("objective = \"fixed\""));
    let sim_out = tmpdir("plan-reseed-sim");
    let mut a = args(
        &format!("sim:{}", toml.display()),
        &["mix:balanced=1"],
        sim_out.clone(),
    );
    a.rate = Some(12.0);
    a.requests = Some(800);
    a.seed = 11;
    a.slo = Some("ttft_ms=2000,tpot_ms=100,percentile=95".parse().unwrap());
    run_loadgen(a).unwrap();
    let run = &read_json(&sim_out.join("results.json"))["runs"][0];
    assert_eq!(run["policy"], "cost");
    assert_eq!(run["slo_met"], true, "{run}");
}
