//! Router tests over the shipped profiles (`profiles/`).

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use switchyard_backends::{Catalog, CostModel};

use super::*;
use crate::engine::Load;

/// The clock of tests that do not exercise the dispatch history.
const T0: Duration = Duration::ZERO;

pub(crate) fn catalog_cost(device: &str, model: &str) -> CostModel {
    let catalog = Catalog::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles"));
    CostModel::new(
        catalog.device(device).expect("device profile"),
        catalog.model(model).expect("model spec"),
    )
}

/// An idle, healthy device with vLLM-like limits.
pub(crate) fn view(id: u32, cost: &CostModel) -> DeviceView<'_> {
    DeviceView {
        id: DeviceId(id),
        cost,
        load: Load::default(),
        healthy: true,
        max_seq_tokens: 32_768,
        max_num_seqs: 256,
        max_batched_tokens: 2048,
        cached_prefix_tokens: 0,
        step_time_budget: None,
    }
}

fn llama(devices: &[&str]) -> Vec<CostModel> {
    devices
        .iter()
        .map(|d| catalog_cost(d, "llama-3.1-8b"))
        .collect()
}

fn idle_fleet(costs: &[CostModel]) -> Vec<DeviceView<'_>> {
    costs
        .iter()
        .enumerate()
        .map(|(i, c)| view(i as u32, c))
        .collect()
}

fn router(policy: PolicyKind) -> Router {
    Router::new(RouterConfig {
        policy,
        ..RouterConfig::default()
    })
}

/// A loose SLO: one minute to first token, one second per token, at the
/// median; the cost policy packs (objective `elastic`), so price decides.
fn loose() -> RouterConfig {
    RouterConfig {
        slo: Slo::from_ms(60_000, 1_000, 0.5),
        objective: Objective::Elastic,
        ..RouterConfig::default()
    }
}

const PREFILL_HEAVY: RouteRequest = RouteRequest {
    prompt_tokens: 8000,
    max_tokens: 50,
};
const DECODE_HEAVY: RouteRequest = RouteRequest {
    prompt_tokens: 100,
    max_tokens: 1000,
};

fn req(prompt_tokens: u32, max_tokens: u32) -> RouteRequest {
    RouteRequest {
        prompt_tokens,
        max_tokens,
    }
}

#[test]
fn shapes_of_the_reference_requests() {
    let r = Router::default();
    let p = r.shape(&PREFILL_HEAVY);
    assert_eq!(p.class, ShapeClass::PrefillHeavy);
    assert_eq!(p.context_bucket, ContextBucket::Medium);
    assert_eq!(p.expected_output_tokens, 50);
    let d = r.shape(&DECODE_HEAVY);
    assert_eq!(d.class, ShapeClass::DecodeHeavy);
    assert_eq!(d.context_bucket, ContextBucket::Short);
    assert_eq!(r.shape(&req(300, 200)).class, ShapeClass::Balanced);
    assert_eq!(
        r.shape(&req(30_000, 3000)).context_bucket,
        ContextBucket::XLong
    );
}

#[test]
fn observed_outputs_shrink_expected_output() {
    let mut r = Router::default();
    assert_eq!(r.shape(&req(100, 1000)).class, ShapeClass::DecodeHeavy);
    for _ in 0..10 {
        r.observe_output(1000, 20);
    }
    let s = r.shape(&req(100, 1000));
    assert_eq!(s.expected_output_tokens, 20);
    assert_eq!(s.class, ShapeClass::PrefillHeavy);
    assert_eq!(r.shape(&req(100, 5)).expected_output_tokens, 5);
    // A config change keeps what was learned.
    r.set_config(RouterConfig {
        policy: PolicyKind::Latency,
        output_ewma_alpha: 0.5,
        ..RouterConfig::default()
    });
    assert_eq!(r.config().policy, PolicyKind::Latency);
    assert_eq!(r.estimator().observations(), 10);
    assert_eq!(r.estimator().alpha(), 0.5);
    assert_eq!(r.shape(&req(100, 1000)).expected_output_tokens, 20);
}

/// The brief's fleet. With the shipped profiles the MI300X is the cheapest
/// per effective FLOP (2.50 $/h for 523 TFLOP/s vs 5.49 m$ and 13.3 m$ per
/// TFLOP/s·h for the H100 and L4) *and* per effective byte/s (0.67 vs 1.12
/// and 3.58 $/h per TB/s), so it is cheapest for both shapes: on this fleet
/// the cost policy does NOT split the two shapes across device types. See
/// `cost_policy_splits_shapes_when_the_cheapest_devices_differ` for a fleet
/// where it does.
#[test]
fn cost_policy_on_h100_mi300x_l4_picks_mi300x_for_both_shapes() {
    let names = ["h100-sxm", "mi300x", "l4"];
    let costs = llama(&names);
    let fleet = idle_fleet(&costs);
    let mut r = Router::new(loose());
    // Every device's cost, for the comparisons below.
    let p = r.route_scoring_all(&PREFILL_HEAVY, &fleet, T0).unwrap();
    let d = r.route_scoring_all(&DECODE_HEAVY, &fleet, T0).unwrap();
    assert_eq!(names[p.device.0 as usize], "mi300x");
    assert_eq!(names[d.device.0 as usize], "mi300x");
    assert_eq!(p.reason, DecisionReason::CheapestMeetingSlo);
    assert_eq!(d.reason, DecisionReason::CheapestMeetingSlo);
    for dec in [&p, &d] {
        let usd: Vec<f64> = dec.scores.iter().map(|s| s.cost_usd).collect();
        // Cheapest MI300X, then H100, then L4, for both shapes.
        assert!(usd[1] < usd[0] && usd[0] < usd[2], "{usd:?}");
    }
    // The L4 is slowest at everything, but a prefill-heavy request costs
    // relatively less there than a decode-heavy one (compute is its strength).
    let ratio = |dec: &Decision| dec.scores[2].cost_usd / dec.scores[1].cost_usd;
    assert!(ratio(&p) < ratio(&d), "{} vs {}", ratio(&p), ratio(&d));
}

/// The MI250X has the lowest price per byte/s (0.56 $/h per TB/s) but not
/// per FLOP/s, so decode-heavy work goes there and prefill-heavy to the MI300X.
#[test]
fn cost_policy_splits_shapes_when_the_cheapest_devices_differ() {
    let names = ["h100-sxm", "mi300x", "l4", "mi250x"];
    let costs = llama(&names);
    let mut fleet = idle_fleet(&costs);
    let mut r = Router::new(loose());
    for running in [0u32, 32] {
        for d in &mut fleet {
            d.load.running = running;
            d.load.running_context_tokens = u64::from(running) * 1000;
        }
        let p = r.route(&PREFILL_HEAVY, &fleet, T0).unwrap();
        let d = r.route(&DECODE_HEAVY, &fleet, T0).unwrap();
        assert_eq!(names[p.device.0 as usize], "mi300x", "running {running}");
        assert_eq!(names[d.device.0 as usize], "mi250x", "running {running}");
    }
}

#[test]
fn cost_policy_skips_cheap_devices_that_miss_the_slo() {
    let names = ["mi250x", "h200"];
    let costs = llama(&names);
    let fleet = idle_fleet(&costs);
    // Predicted TPOT: MI250X ≈ 7.8 ms, H200 ≈ 4.4 ms.
    let mut r = Router::new(RouterConfig {
        slo: Slo::from_ms(2000, 8, 0.5),
        objective: Objective::Elastic,
        ..RouterConfig::default()
    });
    let d = r.route(&DECODE_HEAVY, &fleet, T0).unwrap();
    assert_eq!(names[d.device.0 as usize], "mi250x");
    // At p95 the 8 ms target leaves 6.4 ms of median: the MI250X misses it.
    r.set_config(RouterConfig {
        slo: Slo::from_ms(2000, 8, 0.95),
        objective: Objective::Elastic,
        ..RouterConfig::default()
    });
    let d = r.route_scoring_all(&DECODE_HEAVY, &fleet, T0).unwrap();
    assert_eq!(names[d.device.0 as usize], "h200");
    assert_eq!(d.reason, DecisionReason::CheapestMeetingSlo);
    assert!(!d.scores[0].meets_slo && d.scores[1].meets_slo);
}

#[test]
fn cost_falls_back_to_lowest_latency_when_slo_is_impossible() {
    let names = ["h100-sxm", "mi300x", "l4", "h200"];
    let costs = llama(&names);
    let fleet = idle_fleet(&costs);
    let mut r = Router::new(RouterConfig {
        slo: Slo::from_ms(1, 1, 0.99),
        ..RouterConfig::default()
    });
    let mut latency = router(PolicyKind::Latency);
    for request in [PREFILL_HEAVY, DECODE_HEAVY] {
        let d = r.route(&request, &fleet, T0).unwrap();
        assert_eq!(d.reason, DecisionReason::NoDeviceMeetsSloLowestLatency);
        assert!(d.scores.iter().all(|s| !s.meets_slo));
        let fastest = d.scores.iter().min_by_key(|s| s.e2e).unwrap().device;
        assert_eq!(d.device, fastest);
        let l = latency.route(&request, &fleet, T0).unwrap();
        assert_eq!(l.device, fastest);
        assert_eq!(l.reason, DecisionReason::LowestLatency);
    }
}

/// A large loaded fleet of seven profiles, each device owning its model
/// (as the server's do): `route` skips most devices yet picks what
/// scoring all of them picks, decision after decision.
#[test]
fn route_skips_devices_that_cannot_be_chosen_and_picks_the_same() {
    let profiles = [
        "h100-sxm", "h200", "mi300x", "mi250x", "a100-80g", "l40s", "l4",
    ];
    let costs: Vec<CostModel> = (0..64)
        .map(|i| catalog_cost(profiles[i % profiles.len()], "llama-3.1-8b"))
        .collect();
    let mut rng = switchyard_backends::hash::SplitMix64::new(0x5EED);
    let fleet: Vec<DeviceView<'_>> = costs
        .iter()
        .enumerate()
        .map(|(i, cost)| {
            let mut d = view(i as u32, cost);
            d.load.running = rng.below(200) as u32;
            d.load.waiting = rng.below(20) as u32;
            d.load.queued_prefill_tokens = u64::from(d.load.waiting) * rng.below(4000);
            d.load.running_context_tokens = u64::from(d.load.running) * rng.below(3000);
            d.load.predicted_queue_delay = Duration::from_micros(rng.below(200_000));
            d.cached_prefix_tokens = (rng.below(4) * 2048) as u32;
            d.step_time_budget = (i % 2 == 0).then(|| Duration::from_millis(80));
            d
        })
        .collect();
    for (policy, objective) in [
        (PolicyKind::Cost, Objective::Fixed),
        (PolicyKind::Cost, Objective::Elastic),
        (PolicyKind::Latency, Objective::Fixed),
    ] {
        let mut r = Router::new(RouterConfig {
            policy,
            objective,
            ..RouterConfig::default()
        });
        let mut all = r.clone();
        for k in 0..24u64 {
            let request = [PREFILL_HEAVY, DECODE_HEAVY][k as usize % 2];
            let now = T0 + Duration::from_millis(50 * k);
            let a = all.route_scoring_all(&request, &fleet, now).unwrap();
            let d = r.route(&request, &fleet, now).unwrap();
            assert_eq!(
                (d.device, d.reason),
                (a.device, a.reason),
                "{policy} {objective} #{k}"
            );
            assert!(
                d.skipped >= 32,
                "{policy} {objective} #{k}: only {} of 64 skipped",
                d.skipped
            );
        }
    }
}

#[test]
fn latency_avoids_a_long_queue() {
    let costs = llama(&["h200", "h200"]);
    let mut fleet = idle_fleet(&costs);
    fleet[0].load.predicted_queue_delay = Duration::from_secs(5);
    let d = router(PolicyKind::Latency)
        .route_scoring_all(&DECODE_HEAVY, &fleet, T0)
        .unwrap();
    assert_eq!(d.device, DeviceId(1));
    assert!(d.scores[0].ttft > Duration::from_secs(5));
    // Its floor alone (the queue delay) rules device 0 out without scoring it.
    let d = router(PolicyKind::Latency)
        .route(&DECODE_HEAVY, &fleet, T0)
        .unwrap();
    assert_eq!(d.device, DeviceId(1));
    assert_eq!((d.scores.len(), d.skipped), (1, 1));
}

#[test]
fn round_robin_cycles_over_eligible_devices() {
    let costs = llama(&["l4", "h100-sxm", "mi300x", "l4"]);
    let mut fleet = idle_fleet(&costs);
    // Fleet order is not id order; the cycle follows ids.
    fleet[0].id = DeviceId(7);
    fleet[3].id = DeviceId(3);
    let mut r = router(PolicyKind::RoundRobin);
    let mut picks = Vec::new();
    for _ in 0..8 {
        let d = r.route(&DECODE_HEAVY, &fleet, T0).unwrap();
        assert_eq!(d.reason, DecisionReason::RoundRobin);
        picks.push(d.device.0);
    }
    assert_eq!(picks, [1, 2, 3, 7, 1, 2, 3, 7]);
    // Device 2 goes unhealthy, device 3 cannot hold the prompt: skipped.
    fleet[2].healthy = false;
    fleet[3].max_seq_tokens = 64;
    let picks: Vec<u32> = (0..4)
        .map(|_| r.route(&DECODE_HEAVY, &fleet, T0).unwrap().device.0)
        .collect();
    assert_eq!(picks, [1, 7, 1, 7]);
    // Other policies leave the cursor alone.
    r.set_config(RouterConfig::default());
    r.route(&DECODE_HEAVY, &fleet, T0).unwrap();
    r.set_config(RouterConfig {
        policy: PolicyKind::RoundRobin,
        ..RouterConfig::default()
    });
    assert_eq!(r.route(&DECODE_HEAVY, &fleet, T0).unwrap().device.0, 1);
}

#[test]
fn least_loaded_picks_fewest_outstanding_tokens() {
    let costs = llama(&["mi300x", "l4", "h100-sxm"]);
    let mut fleet = idle_fleet(&costs);
    fleet[0].load.queued_prefill_tokens = 5000;
    fleet[1].load.outstanding_decode_tokens = 3000;
    fleet[2].load.queued_prefill_tokens = 1000;
    fleet[2].load.outstanding_decode_tokens = 1500;
    let mut r = router(PolicyKind::LeastLoaded);
    let d = r.route(&PREFILL_HEAVY, &fleet, T0).unwrap();
    assert_eq!(
        (d.device, d.reason),
        (DeviceId(2), DecisionReason::LeastLoaded)
    );
    assert_eq!(d.scores[2].outstanding_tokens, 2500);
    fleet[1].load.outstanding_decode_tokens = 2500;
    // Tie on 2500: lowest id.
    assert_eq!(
        r.route(&PREFILL_HEAVY, &fleet, T0).unwrap().device,
        DeviceId(1)
    );
}

#[test]
fn prefix_prefers_the_cache_unless_imbalanced() {
    let costs = llama(&["h100-sxm", "h100-sxm", "h100-sxm"]);
    let mut fleet = idle_fleet(&costs);
    let request = req(5000, 100);
    fleet[1].cached_prefix_tokens = 4096;
    fleet[1].load.queued_prefill_tokens = 10_000;
    fleet[2].cached_prefix_tokens = 1024;
    fleet[2].load.outstanding_decode_tokens = 500;
    let mut r = router(PolicyKind::Prefix);
    let d = r.route(&request, &fleet, T0).unwrap();
    assert_eq!(
        (d.device, d.reason),
        (DeviceId(1), DecisionReason::LongestPrefix)
    );
    assert_eq!(d.scores[1].cached_prefix_tokens, 4096);
    // The cache holder is 20,000 tokens busier than device 0: over the 16,384 threshold.
    fleet[1].load.queued_prefill_tokens = 20_000;
    let d = r.route(&request, &fleet, T0).unwrap();
    assert_eq!(
        (d.device, d.reason),
        (DeviceId(0), DecisionReason::PrefixImbalancedLeastLoaded)
    );
    // A looser threshold keeps it on the cache.
    r.set_config(RouterConfig {
        policy: PolicyKind::Prefix,
        prefix_balance_tokens: 20_000,
        ..RouterConfig::default()
    });
    assert_eq!(r.route(&request, &fleet, T0).unwrap().device, DeviceId(1));
    // A match below half the prompt is not worth it.
    fleet[1].cached_prefix_tokens = 2048;
    let d = r.route(&request, &fleet, T0).unwrap();
    assert_eq!(
        (d.device, d.reason),
        (DeviceId(0), DecisionReason::LeastLoaded)
    );
    // No cache anywhere: least loaded.
    fleet[1].cached_prefix_tokens = 0;
    fleet[2].cached_prefix_tokens = 0;
    let d = r.route(&request, &fleet, T0).unwrap();
    assert_eq!(
        (d.device, d.reason),
        (DeviceId(0), DecisionReason::LeastLoaded)
    );
}

#[test]
fn cached_prefix_makes_the_cost_policy_prefer_the_cache() {
    let costs = llama(&["mi300x", "mi300x"]);
    let mut fleet = idle_fleet(&costs);
    fleet[1].cached_prefix_tokens = 7900;
    let d = Router::new(loose())
        .route_scoring_all(&PREFILL_HEAVY, &fleet, T0)
        .unwrap();
    assert_eq!(d.device, DeviceId(1));
    assert!(d.scores[1].ttft < d.scores[0].ttft);
}

#[test]
fn unhealthy_devices_are_never_chosen() {
    let names = ["h100-sxm", "mi300x", "l4", "mi250x"];
    let costs = llama(&names);
    for policy in PolicyKind::ALL {
        let mut fleet = idle_fleet(&costs);
        fleet[1].healthy = false;
        fleet[3].healthy = false;
        fleet[1].cached_prefix_tokens = 8000;
        fleet[2].load.outstanding_decode_tokens = 1_000_000;
        let mut r = router(policy);
        for request in [PREFILL_HEAVY, DECODE_HEAVY, PREFILL_HEAVY, DECODE_HEAVY] {
            let d = r.route(&request, &fleet, T0).unwrap();
            assert!(
                d.device == DeviceId(0) || d.device == DeviceId(2),
                "{policy} chose {}",
                d.device
            );
            assert!(d.chosen().eligible);
            // Scored (where every device is) as ineligible, or not scored at all.
            assert!(d
                .scores
                .iter()
                .filter(|s| s.device == DeviceId(1))
                .all(|s| !s.eligible && !s.meets_slo));
        }
    }
}

#[test]
fn ties_go_to_the_lowest_id() {
    let costs = llama(&["h100-sxm", "h100-sxm", "h100-sxm"]);
    let mut fleet = idle_fleet(&costs);
    fleet[0].id = DeviceId(9);
    fleet[1].id = DeviceId(4);
    fleet[2].id = DeviceId(6);
    for policy in PolicyKind::ALL {
        let d = router(policy).route(&DECODE_HEAVY, &fleet, T0).unwrap();
        assert_eq!(d.device, DeviceId(4), "{policy}");
    }
}

#[test]
fn errors_name_the_problem() {
    let costs = llama(&["h100-sxm", "l4"]);
    let mut r = Router::default();
    assert_eq!(
        r.route(&DECODE_HEAVY, &[], T0),
        Err(RouteError::NoHealthyDevice)
    );
    let mut fleet = idle_fleet(&costs);
    fleet[0].healthy = false;
    fleet[1].healthy = false;
    assert_eq!(
        r.route(&DECODE_HEAVY, &fleet, T0),
        Err(RouteError::NoHealthyDevice)
    );
    // Fits only the unhealthy device: too long for every healthy one.
    fleet[0].max_seq_tokens = 131_072;
    fleet[1].healthy = true;
    fleet[1].max_seq_tokens = 16_384;
    let err = r.route(&req(20_000, 10), &fleet, T0).unwrap_err();
    assert_eq!(
        err,
        RouteError::PromptTooLong {
            prompt_tokens: 20_000,
            max_supported: 16_383
        }
    );
    assert!(err.to_string().contains("16383"), "{err}");
    // The limit is exact: prompt + 1 ≤ max_seq_tokens.
    assert!(r.route(&req(16_383, 10), &fleet, T0).is_ok());
    assert!(r.route(&req(16_384, 10), &fleet, T0).is_err());
    for policy in PolicyKind::ALL {
        r.set_config(RouterConfig {
            policy,
            ..RouterConfig::default()
        });
        assert!(matches!(
            r.route(&req(16_384, 10), &fleet, T0),
            Err(RouteError::PromptTooLong { .. })
        ));
    }
}

#[test]
fn degenerate_requests_do_not_panic() {
    let costs = llama(&["h100-sxm", "mi300x"]);
    let mut fleet = idle_fleet(&costs);
    fleet[0].max_num_seqs = 0;
    fleet[0].max_batched_tokens = 0;
    fleet[1].load.running = 10;
    fleet[1].max_num_seqs = 4;
    fleet[1].load.running_context_tokens = u64::MAX;
    fleet[1].cached_prefix_tokens = u32::MAX;
    for policy in PolicyKind::ALL {
        let mut r = router(policy);
        for (p, m) in [(0, 0), (0, 1), (1, 0), (32_767, u32::MAX)] {
            let d = r.route(&req(p, m), &fleet, T0).unwrap();
            assert!(d.chosen().eligible);
            assert!(d.scores.iter().all(|s| s.cost_usd.is_finite()));
        }
    }
}

#[test]
fn headroom_interpolates_the_percentile() {
    let h = |p| Slo::from_ms(1, 1, p).headroom();
    assert_eq!(h(0.1), 1.0);
    assert_eq!(h(0.5), 1.0);
    assert!((h(0.9) - 0.85).abs() < 1e-12);
    assert!((h(0.95) - 0.8).abs() < 1e-12);
    assert!((h(0.925) - 0.825).abs() < 1e-12);
    assert!((h(0.99) - 0.65).abs() < 1e-12);
    assert_eq!(h(1.0), 0.5);
    assert_eq!(h(f64::NAN), 1.0);
    let mut last = 1.0;
    for i in 0..=1000 {
        let v = h(f64::from(i) / 1000.0);
        assert!(v <= last && v > 0.0);
        last = v;
    }
}

#[test]
fn slo_from_ms_takes_integers_and_floats() {
    let a = Slo::from_ms(2000, 100, 0.95);
    let b = Slo::from_ms(2000.0, 100.0, 0.95);
    let c = Slo::from_ms(2000u64, 100u32, 0.95);
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(a, Slo::default());
    assert_eq!(a.ttft, Duration::from_millis(2000));
    assert_eq!(Slo::from_ms(-5, f64::NAN, 0.5).ttft, Duration::ZERO);
    assert_eq!(Slo::from_ms(0.5, 1, 0.5).ttft, Duration::from_micros(500));
    assert_eq!(Slo::from_ms(f64::INFINITY, 1, 0.5).ttft, Duration::MAX);
}

#[test]
fn decision_serializes_for_explanations() {
    let costs = llama(&["h100-sxm", "mi300x"]);
    let fleet = idle_fleet(&costs);
    let d = Router::new(RouterConfig {
        objective: Objective::Elastic,
        ..RouterConfig::default()
    })
    .route_scoring_all(&PREFILL_HEAVY, &fleet, T0)
    .unwrap();
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v["device"], 1);
    assert_eq!(v["policy"], "cost");
    assert_eq!(v["reason"], "cheapest_meeting_slo");
    assert_eq!(v["shape"]["class"], "prefill-heavy");
    assert_eq!(v["shape"]["context_bucket"], "medium");
    assert_eq!(v["shape"]["expected_output_tokens"], 50);
    let s = &v["scores"][1];
    let ttft_ms = s["ttft_ms"].as_f64().unwrap();
    assert!((ttft_ms - d.scores[1].ttft.as_secs_f64() * 1e3).abs() < 1e-9);
    for key in [
        "device",
        "eligible",
        "queue_delay_ms",
        "ttft_ms",
        "tpot_ms",
        "e2e_ms",
        "device_seconds",
        "cost_usd",
        "meets_slo",
        "cached_prefix_tokens",
        "outstanding_tokens",
    ] {
        assert!(s.get(key).is_some(), "missing {key}: {s}");
    }
    assert_eq!(DeviceId(3).to_string(), "dev-3");
}

#[test]
fn config_round_trips_through_serde_with_defaults() {
    let c: RouterConfig = serde_json::from_str(
        r#"{"policy":"prefix","slo":{"ttft_ms":500,"tpot_ms":50.5,"percentile":0.99}}"#,
    )
    .unwrap();
    assert_eq!(c.policy, PolicyKind::Prefix);
    assert_eq!(c.slo.tpot, Duration::from_micros(50_500));
    assert_eq!(
        c.prefix_balance_tokens,
        RouterConfig::default().prefix_balance_tokens
    );
    let back: RouterConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
    assert!(serde_json::from_str::<RouterConfig>(r#"{"polcy":"cost"}"#).is_err());
    assert!(serde_json::from_str::<RouterConfig>(
        r#"{"slo":{"ttft_ms":-1,"tpot_ms":1,"percentile":0.5}}"#
    )
    .is_err());
}

#[test]
fn view_of_an_engine_carries_its_limits() {
    let cost = catalog_cost("h100-sxm", "llama-3.1-8b");
    let config = crate::engine::EngineConfig::default();
    let engine = crate::engine::Engine::new(config, cost, 4096, 16);
    let v = DeviceView::from_engine(DeviceId(2), &engine);
    assert_eq!(v.max_seq_tokens, engine.max_seq_tokens());
    assert_eq!(v.max_num_seqs, config.max_num_seqs);
    assert_eq!(v.max_batched_tokens, config.max_batched_tokens);
    assert!(v.healthy && v.eligible(100));
    let d = Router::default().route(&DECODE_HEAVY, &[v], T0).unwrap();
    assert_eq!(d.device, DeviceId(2));
}

fn costs_for_props() -> &'static [CostModel] {
    static COSTS: OnceLock<Vec<CostModel>> = OnceLock::new();
    COSTS.get_or_init(|| {
        let mut v = llama(&["h100-sxm", "mi300x", "l4", "mi250x", "cpu"]);
        v.push(catalog_cost("mi300x", "mixtral-8x7b"));
        v
    })
}

#[derive(Debug, Clone)]
struct DeviceSpec {
    profile: usize,
    healthy: bool,
    max_seq_tokens: u32,
    max_num_seqs: u32,
    max_batched_tokens: u32,
    cached: u32,
    running: u32,
    ctx_per_seq: u32,
    queued: u64,
    decode: u64,
    delay_ms: u64,
}

fn device_spec() -> impl Strategy<Value = DeviceSpec> {
    (
        (
            0..6usize,
            prop::bool::weighted(0.8),
            0u32..140_000,
            0u32..300,
        ),
        (0u32..20_000, 0u32..40_000, 0u32..400, 0u32..20_000),
        (
            0u64..500_000,
            0u64..500_000,
            prop_oneof![0u64..60_000, 500u64..2_000],
        ),
    )
        .prop_map(
            |(
                (profile, healthy, max_seq_tokens, max_num_seqs),
                (max_batched_tokens, cached, running, ctx_per_seq),
                (queued, decode, delay_ms),
            )| DeviceSpec {
                profile,
                healthy,
                max_seq_tokens,
                max_num_seqs,
                max_batched_tokens,
                cached,
                running,
                ctx_per_seq,
                queued,
                decode,
                delay_ms,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the fleet, request and policy, a chosen device is eligible,
    /// and an error means no device was; `route` (which may skip scoring
    /// devices that cannot be chosen) picks what `route_scoring_all` picks,
    /// with the same scores for the devices it scored, over a sequence of
    /// decisions (the dispatch history included).
    #[test]
    fn chosen_device_is_always_eligible(
        specs in prop::collection::vec(device_spec(), 0..10),
        prompt in prop_oneof![0u32..4, 0u32..150_000],
        max_tokens in 0u32..20_000,
        policy in prop::sample::select(PolicyKind::ALL.to_vec()),
        objective in prop::sample::select(vec![Objective::Fixed, Objective::Elastic]),
        observed in prop::option::of((1u32..20_000, 0u32..20_000)),
        percentile in 0.0f64..1.0,
        routes in 1usize..7,
    ) {
        let costs = costs_for_props();
        let fleet: Vec<DeviceView<'_>> = specs
            .iter()
            .enumerate()
            .map(|(i, s)| DeviceView {
                id: DeviceId((i as u32 * 7) % 11),
                cost: &costs[s.profile],
                load: Load {
                    running: s.running,
                    running_context_tokens: u64::from(s.running) * u64::from(s.ctx_per_seq),
                    queued_prefill_tokens: s.queued,
                    outstanding_decode_tokens: s.decode,
                    predicted_queue_delay: Duration::from_millis(s.delay_ms),
                    ..Load::default()
                },
                healthy: s.healthy,
                max_seq_tokens: s.max_seq_tokens,
                max_num_seqs: s.max_num_seqs,
                max_batched_tokens: s.max_batched_tokens,
                cached_prefix_tokens: s.cached,
                // Some devices budget their steps (a Switchyard engine's SLO budget).
                step_time_budget: (s.delay_ms % 3 == 0)
                    .then(|| Duration::from_millis(5 + s.delay_ms % 200)),
            })
            .collect();
        let mut r = Router::new(RouterConfig {
            policy,
            objective,
            slo: Slo::from_ms(2000, 50, percentile),
            ..RouterConfig::default()
        });
        if let Some((max, actual)) = observed {
            r.observe_output(max, actual);
        }
        let mut scoring_all = r.clone();
        for k in 0..routes {
            // Shapes alternate (the router's per-class hint of where the
            // bound was), and the clock moves by less than the dispatch
            // history's window.
            let (prompt, max_tokens) = if k % 3 == 2 {
                (max_tokens.min(150_000), prompt.min(20_000))
            } else {
                (prompt, max_tokens)
            };
            let request = req(prompt, max_tokens);
            let any_eligible = fleet.iter().any(|d| d.eligible(prompt));
            let now = T0 + Duration::from_millis(300 * k as u64);
            let all = scoring_all.route_scoring_all(&request, &fleet, now);
            let routed = r.route(&request, &fleet, now);
            match (&routed, &all) {
                (Ok(d), Ok(a)) => {
                    prop_assert_eq!((d.device, d.reason, d.shape), (a.device, a.reason, a.shape));
                    prop_assert_eq!(d.scores.len() + d.skipped as usize, fleet.len());
                    prop_assert_eq!(a.skipped, 0);
                    for s in &d.scores {
                        prop_assert!(a.scores.contains(s), "{:?} not in {:?}", s, a.scores);
                    }
                }
                (Err(e), Err(f)) => prop_assert_eq!(e, f),
                _ => prop_assert!(false, "route {:?} vs scoring all {:?}", routed, all),
            }
            match all {
                Ok(d) => {
                    prop_assert!(any_eligible);
                    prop_assert_eq!(d.scores.len(), fleet.len());
                    for (s, v) in d.scores.iter().zip(&fleet) {
                        prop_assert_eq!(s.device, v.id);
                        prop_assert_eq!(s.eligible, v.eligible(prompt));
                        prop_assert!(s.ttft >= s.queue_delay && s.e2e >= s.ttft);
                        prop_assert!(s.cost_usd.is_finite() && s.cost_usd >= 0.0);
                        prop_assert!(!s.meets_slo || s.eligible);
                    }
                    let chosen = fleet.iter().find(|v| v.id == d.device).unwrap();
                    prop_assert!(chosen.healthy && chosen.eligible(prompt));
                    prop_assert!(d.chosen().eligible);
                    prop_assert!(d.shape.expected_output_tokens <= max_tokens);
                }
                Err(RouteError::NoHealthyDevice) => {
                    prop_assert!(fleet.iter().all(|v| !v.healthy));
                }
                Err(RouteError::PromptTooLong { prompt_tokens, max_supported }) => {
                    prop_assert!(!any_eligible);
                    prop_assert_eq!(prompt_tokens, prompt);
                    prop_assert!(max_supported < prompt);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// On a fleet of identical devices, the cost policy never admits a
    /// request whose predicted TPOT, or that of the sequences already
    /// running where it lands (prefill interference included), exceeds the
    /// SLO budget, as long as some device can take it within the SLO.
    #[test]
    fn cost_policy_never_pushes_running_sequences_past_the_slo(
        profile in prop::sample::select(vec!["a100-80g", "h100-sxm", "l4", "mi300x"]),
        loads in prop::collection::vec((0u32..300, 100u32..6000, 0u32..20), 1..9),
        arrivals in prop::collection::vec((1u32..12_000, 1u32..1500, 0u64..400), 1..40),
        objective in prop::sample::select(vec![Objective::Fixed, Objective::Elastic]),
        budgeted in any::<bool>(),
        tpot_ms in 20u32..150,
    ) {
        let cost = catalog_cost(profile, "llama-3.1-8b");
        let slo = Slo::from_ms(2000, tpot_ms, 0.95);
        let budget = slo.tpot.mul_f64(slo.headroom());
        let fleet: Vec<DeviceView<'_>> = loads
            .iter()
            .enumerate()
            .map(|(i, &(running, ctx, waiting))| {
                let mut v = view(i as u32, &cost);
                v.load.running = running;
                v.load.waiting = waiting;
                v.load.running_context_tokens = u64::from(running) * u64::from(ctx);
                v.load.queued_prefill_tokens = u64::from(waiting) * 500;
                v.step_time_budget = budgeted.then_some(budget);
                v
            })
            .collect();
        let mut r = Router::new(RouterConfig {
            policy: PolicyKind::Cost,
            objective,
            slo,
            ..RouterConfig::default()
        });
        let mut now = Duration::ZERO;
        for (prompt, max_tokens, dt_ms) in arrivals {
            now += Duration::from_millis(dt_ms);
            let d = r.route(&req(prompt, max_tokens), &fleet, now).unwrap();
            let c = d.chosen();
            let any_meets = d.scores.iter().any(|s| s.meets_slo);
            match d.reason {
                DecisionReason::FastestMeetingSlo | DecisionReason::CheapestMeetingSlo => {
                    prop_assert!(c.meets_slo);
                    let load = fleet[c.device.0 as usize].load;
                    // With nothing running or queued there is no one to push.
                    prop_assert!(
                        load.running + load.waiting == 0 || c.running_tpot <= budget,
                        "{:?} > {budget:?}",
                        c.running_tpot
                    );
                    prop_assert!(d.shape.expected_output_tokens <= 1 || c.tpot <= budget);
                    prop_assert!(c.running_tpot >= c.tpot);
                    prop_assert!(c.prefill_share < 1.0);
                }
                DecisionReason::NoDeviceMeetsSloLowestLatency => prop_assert!(!any_meets),
                other => prop_assert!(false, "unexpected reason {other:?}"),
            }
        }
    }
}

#[test]
fn dispatches_raise_the_predicted_tpot_until_the_device_misses_the_slo() {
    // One A100 at a steady 30 req/s of 1,000-token prompts: the router's own
    // dispatch history alone (no change in the load snapshot) must lift
    // the TPOT prediction, and admission must stop before the SLO.
    let cost = catalog_cost("a100-80g", "llama-3.1-8b");
    let mut v = view(0, &cost);
    v.load.running = 40;
    v.load.running_context_tokens = 40 * 1200;
    let mut r = Router::new(RouterConfig {
        slo: Slo::from_ms(2000, 40, 0.5),
        ..RouterConfig::default()
    });
    let first = r.route(&req(1000, 200), &[v], T0).unwrap();
    let mut last = first.chosen().tpot;
    let mut missed = false;
    for i in 1..300u64 {
        let d = r
            .route(&req(1000, 200), &[v], Duration::from_millis(33 * i))
            .unwrap();
        let s = d.chosen();
        assert!(s.tpot >= last || s.tpot + Duration::from_micros(50) >= last);
        last = s.tpot;
        if !s.meets_slo {
            missed = true;
            assert_eq!(d.reason, DecisionReason::NoDeviceMeetsSloLowestLatency);
            break;
        }
    }
    assert!(
        last > first.chosen().tpot,
        "{last:?} vs {:?}",
        first.chosen().tpot
    );
    assert!(
        missed,
        "30 req/s of 1k-token prompts fit in 40 ms TPOT: {last:?}"
    );
}

#[test]
fn cached_prompts_faster_than_one_a_step_do_not_saturate_a_device() {
    // Two H100s. Device 0 has been sent 300 cached prompts a second for ten
    // seconds (16 uncached tokens each) and runs a small batch; device 1 is
    // busy. One such prefill a step, at 300 a second, would need more steps
    // than the device runs, which read as saturated and sent everything to
    // device 1; the engine packs them into its steps, so device 0 keeps up.
    let costs = llama(&["h100-sxm", "h100-sxm"]);
    let mut fleet = idle_fleet(&costs);
    fleet[0].load = Load {
        running: 30,
        running_context_tokens: 30 * 270,
        outstanding_decode_tokens: 30 * 16,
        ..Load::default()
    };
    fleet[0].cached_prefix_tokens = 240;
    fleet[1].load = Load {
        running: 120,
        waiting: 40,
        queued_prefill_tokens: 40 * 256,
        running_context_tokens: 120 * 270,
        outstanding_decode_tokens: 160 * 32,
        ..Load::default()
    };
    let mut r = router(PolicyKind::Cost);
    let window = r.config.interference_window;
    let gap = Duration::from_micros(3333);
    for i in 0..3000u32 {
        r.history.record(DeviceId(0), 16, gap * i, window);
    }
    let now = gap * 3000;
    let d = r.route(&req(256, 32), &fleet, now).expect("route");
    let s0 = d
        .scores
        .iter()
        .find(|s| s.device == DeviceId(0))
        .expect("device 0 scored");
    assert!(s0.meets_slo && s0.prefill_share < 1.0, "{s0:?}");
    assert_eq!(d.device, DeviceId(0), "{d:?}");
    // Past what even packed steps take, the device is saturated.
    for i in 0..3000u32 {
        r.history.record(DeviceId(0), 4000, now + gap * i, window);
    }
    let later = now + gap * 3000;
    let s = r.score(&r.shape(&req(256, 32)), &fleet[0], later);
    assert!(s.prefill_share >= 1.0 && !s.meets_slo, "{s:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Over a long run of decisions on a fleet pushed past its SLO, where
    /// between decisions the chosen device gains a sequence, running
    /// sequences' contexts grow, sequences leave, prompts vary and the
    /// clock moves or stands still, `route` (which keeps proofs of misses
    /// across decisions, and passes over the devices they prove miss while
    /// it searches for one meeting the SLO) picks what `route_scoring_all`
    /// picks, with the same scores, by either objective.
    #[test]
    fn standing_miss_proofs_never_change_a_pick(
        specs in prop::collection::vec((0..5usize, 0u32..250, 0u32..4_000, prop::bool::weighted(0.25)), 2..9),
        steps in prop::collection::vec(
            (0u32..12_000, 1u32..600, 0u64..120, 0usize..9, 0u64..30_000, prop::bool::weighted(0.1)),
            40..80,
        ),
        tpot_ms in 15u64..120,
        objective in prop::sample::select(vec![Objective::Fixed, Objective::Elastic]),
    ) {
        let costs = costs_for_props();
        let mut fleet: Vec<DeviceView<'_>> = specs
            .iter()
            .enumerate()
            .map(|(i, &(profile, running, ctx_per_seq, budgets))| DeviceView {
                load: Load {
                    running,
                    running_context_tokens: u64::from(running) * u64::from(ctx_per_seq),
                    outstanding_decode_tokens: u64::from(running) * 200,
                    ..Load::default()
                },
                max_num_seqs: 256,
                max_batched_tokens: 4096,
                step_time_budget: budgets.then(|| Duration::from_millis(60)),
                ..view(i as u32, &costs[profile])
            })
            .collect();
        let mut r = Router::new(RouterConfig {
            slo: Slo::from_ms(2000, tpot_ms, 0.9),
            objective,
            ..RouterConfig::default()
        });
        let mut scoring_all = r.clone();
        let mut now = T0;
        for (prompt, max_tokens, after_ms, grow, grown, leave) in steps {
            now += Duration::from_millis(after_ms);
            let request = req(prompt, max_tokens);
            let all = scoring_all.route_scoring_all(&request, &fleet, now).expect("route");
            let d = r.route(&request, &fleet, now).expect("route");
            prop_assert_eq!((d.device, d.reason), (all.device, all.reason));
            for s in &d.scores {
                prop_assert!(all.scores.contains(s), "{:?} not in {:?}", s, all.scores);
            }
            // The chosen device takes the request; contexts grow; one may finish.
            let chosen = fleet.iter_mut().find(|v| v.id == d.device).expect("chosen");
            chosen.load.running += 1;
            chosen.load.running_context_tokens += u64::from(prompt);
            let n = fleet.len();
            fleet[grow % n].load.running_context_tokens += grown;
            if leave {
                let l = &mut fleet[(grow + 1) % n].load;
                l.running = l.running.saturating_sub(1);
                l.running_context_tokens = l.running_context_tokens.saturating_sub(2_000);
            }
        }
        // `a_fleet_past_its_slo_keeps_proofs_of_its_misses` checks that
        // such a fleet keeps its proofs.
    }
}

/// `n` devices of `cost`, the `i`th decoding 100 + `i` sequences of 3,000 tokens each.
fn long_decode_batches(cost: &CostModel, n: u32) -> Vec<DeviceView<'_>> {
    (0..n)
        .map(|i| {
            let mut v = view(i, cost);
            v.load.running = 100 + i;
            v.load.running_context_tokens = u64::from(100 + i) * 3000;
            v
        })
        .collect()
}

#[test]
fn a_fleet_past_its_slo_keeps_proofs_of_its_misses() {
    // Sixteen H100s with long decode batches, and a TPOT budget their
    // decode-only steps meet but their steps with prefills do not: after
    // the first decisions, the devices are proved to miss by their
    // standing certificates (not by their floors alone, nor priced again),
    // and the picks agree with scoring every device.
    let costs = llama(&["h100-sxm"]);
    let mut fleet = long_decode_batches(&costs[0], 16);
    let mut r = Router::new(RouterConfig {
        slo: Slo::from_ms(2000, 20, 0.5),
        ..RouterConfig::default()
    });
    let mut scoring_all = r.clone();
    for i in 0..64u64 {
        let now = Duration::from_millis(5 * i);
        let request = req(4000, 64);
        let all = scoring_all
            .route_scoring_all(&request, &fleet, now)
            .expect("route");
        let d = r.route(&request, &fleet, now).expect("route");
        assert_eq!((d.device, d.reason), (all.device, all.reason));
        assert_eq!(d.reason, DecisionReason::NoDeviceMeetsSloLowestLatency);
        fleet[i as usize % 16].load.running_context_tokens += 64;
    }
    let proved = fleet
        .iter()
        .filter(|v| {
            r.history.with_miss(v.id).1.is_some_and(|m| {
                m.holds(
                    v,
                    &r.shape(&req(4000, 64)),
                    4000,
                    Duration::from_millis(315),
                )
            })
        })
        .count();
    // All but the last decision's pick.
    assert_eq!(
        proved, 15,
        "{proved} of 16 devices hold a proof of their miss"
    );
}

#[test]
fn a_search_keeps_proofs_of_the_misses_it_scored() {
    // Fifteen H100s past their TPOT budget once a prefill joins their long
    // decode batches, and an idle A100 last in the fleet that meets the
    // SLO: the first search scores every H100 before it finds the A100,
    // and keeps a proof of each one's miss; the next passes over them
    // with no step priced. The picks agree with scoring every device.
    let costs = llama(&["h100-sxm", "a100-80g"]);
    let mut fleet = long_decode_batches(&costs[0], 15);
    fleet.push(view(15, &costs[1]));
    let mut r = Router::new(RouterConfig {
        slo: Slo::from_ms(2000, 20, 0.5),
        ..RouterConfig::default()
    });
    let mut scoring_all = r.clone();
    let request = req(4000, 64);
    let shape = r.shape(&request);
    let now = T0;
    let all = scoring_all
        .route_scoring_all(&request, &fleet, now)
        .expect("route");
    let first = r.route(&request, &fleet, now).expect("route");
    assert_eq!((first.device, first.reason), (all.device, all.reason));
    assert_eq!(first.device, DeviceId(15));
    assert_eq!(first.scores.len(), 16, "every H100 scored before the A100");
    let proved = fleet[..15]
        .iter()
        .filter(|v| {
            r.history
                .with_miss(v.id)
                .1
                .is_some_and(|m| m.holds(v, &shape, 4000, now))
        })
        .count();
    assert_eq!(
        proved, 15,
        "{proved} of 15 H100s hold a proof of their miss"
    );
    let all = scoring_all
        .route_scoring_all(&request, &fleet, now)
        .expect("route");
    let next = r.route(&request, &fleet, now).expect("route");
    assert_eq!((next.device, next.reason), (all.device, all.reason));
    assert_eq!(
        next.scores.len(),
        1,
        "the H100s are passed over by their proofs: {:?}",
        next.scores.iter().map(|s| s.device).collect::<Vec<_>>()
    );
}
