//! Criterion benches of `Router::route` over a 16-device fleet of mixed
//! profiles (llama-3.1-8b on H100, H200, MI300X, MI250X, A100, L40S, L4)
//! with seeded, non-trivial loads and cached prefixes, for every policy and
//! for a prefill-heavy and a decode-heavy request; and the cost policy over
//! 64 and 256 devices, the size of a fleet tier fronting many endpoints:
//! the same mix (half of them budgeting steps, as Switchyard nodes may) and
//! endpoints of other engines, which do not; each in a steady state (the
//! router's clock advancing with the arrivals; the mixed fleet also with
//! the elastic objective), saturated (no device meets the SLO, most not by
//! much, so each device's miss is proved from its decode side before the
//! fallback's band is searched; with the clock standing still, and
//! advancing at eight times the steady rate) and overloaded (every queue
//! 3 s deep, past the TTFT budget: no device meets the SLO, provably from
//! its floors, so only the fallback's band is searched).

use std::path::Path;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use switchyard_backends::hash::SplitMix64;
use switchyard_backends::{Catalog, CostModel};
use switchyard_scheduler::router::{
    DeviceId, DeviceView, Objective, PolicyKind, RouteRequest, Router, RouterConfig,
};
use switchyard_scheduler::Load;

const PROFILES: [&str; 7] = [
    "h100-sxm", "h200", "mi300x", "mi250x", "a100-80g", "l40s", "l4",
];

fn costs() -> Vec<CostModel> {
    let catalog = Catalog::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles"));
    let model = catalog.model("llama-3.1-8b").expect("model spec");
    PROFILES
        .iter()
        .map(|d| CostModel::new(catalog.device(d).expect("device profile"), model.clone()))
        .collect()
}

fn fleet(costs: &[CostModel], devices: u32) -> Vec<DeviceView<'_>> {
    let mut rng = SplitMix64::new(0x5EED);
    (0..devices)
        .map(|i| {
            let running = rng.below(200) as u32;
            let waiting = rng.below(20) as u32;
            DeviceView {
                id: DeviceId(i),
                cost: &costs[i as usize % costs.len()],
                load: Load {
                    waiting,
                    running,
                    queued_prefill_tokens: u64::from(waiting) * rng.below(4000),
                    outstanding_decode_tokens: u64::from(running + waiting) * rng.below(800),
                    running_context_tokens: u64::from(running) * rng.below(3000),
                    free_blocks: 1000,
                    total_blocks: 20_000,
                    predicted_queue_delay: Duration::from_micros(rng.below(200_000)),
                },
                healthy: i != 5,
                max_seq_tokens: 32_768,
                max_num_seqs: 256,
                max_batched_tokens: 2048,
                cached_prefix_tokens: (rng.below(4) * 2048) as u32,
                step_time_budget: (i % 2 == 0).then(|| Duration::from_millis(80)),
            }
        })
        .collect()
}

fn route(c: &mut Criterion) {
    let costs = costs();
    let fleet = fleet(&costs, 16);
    let requests = [
        (
            "prefill_heavy",
            RouteRequest {
                prompt_tokens: 8000,
                max_tokens: 50,
            },
        ),
        (
            "decode_heavy",
            RouteRequest {
                prompt_tokens: 100,
                max_tokens: 1000,
            },
        ),
    ];
    for policy in PolicyKind::ALL {
        let mut router = Router::new(RouterConfig {
            policy,
            ..RouterConfig::default()
        });
        for (name, req) in &requests {
            c.bench_function(&format!("route_16_devices/{policy}/{name}"), |b| {
                b.iter(|| {
                    router
                        .route(black_box(req), black_box(&fleet), Duration::ZERO)
                        .expect("route")
                })
            });
        }
    }
    for devices in [64, 256] {
        let big = self::fleet(&costs, devices);
        // A tier over other engines (vLLM, SGLang, TGI, llama.cpp): none budgets its steps.
        let mut endpoints = big.clone();
        for d in &mut endpoints {
            d.step_time_budget = None;
        }
        // Steady: a long-lived router whose clock advances one arrival
        // interval per decision (1.56 requests/s per device), so its
        // dispatch history settles where the fleet sustains the load.
        // Saturated: the clock stands still, the history never decays, and
        // soon no device meets the SLO: every decision proves each device's
        // miss, then searches the fallback's band.
        let interval = Duration::from_micros(640_000 / u64::from(devices));
        for (fleet_name, fleet) in [("devices", &big), ("engine_endpoints", &endpoints)] {
            for (name, req) in &requests {
                // The elastic objective's bound is the cheapest device meeting the SLO.
                let objectives: &[(&str, Objective)] = if fleet_name == "devices" {
                    &[
                        ("steady", Objective::Fixed),
                        ("steady_elastic", Objective::Elastic),
                    ]
                } else {
                    &[("steady", Objective::Fixed)]
                };
                for &(case, objective) in objectives {
                    let router = Router::new(RouterConfig {
                        objective,
                        ..RouterConfig::default()
                    });
                    let id = format!("route_{devices}_{fleet_name}/{case}/{name}");
                    bench_advancing(c, &id, router, req, fleet, interval);
                }
                let mut router = Router::default();
                c.bench_function(
                    &format!("route_{devices}_{fleet_name}/saturated/{name}"),
                    |b| {
                        b.iter(|| {
                            router
                                .route(black_box(req), black_box(fleet), Duration::ZERO)
                                .expect("route")
                        })
                    },
                );
                // Past capacity with the clock advancing: eight times the
                // steady arrival rate keeps the fleet past its SLO while
                // the dispatch history decays between decisions, as it
                // does live (the miss certificates must hold up to it).
                let id = format!("route_{devices}_{fleet_name}/saturated_advancing/{name}");
                bench_advancing(c, &id, Router::default(), req, fleet, interval / 8);
                let mut overloaded = fleet.clone();
                for d in &mut overloaded {
                    d.load.predicted_queue_delay += Duration::from_secs(3);
                }
                let id = format!("route_{devices}_{fleet_name}/overloaded/{name}");
                bench_advancing(c, &id, Router::default(), req, &overloaded, interval);
            }
        }
    }
    let router = Router::default();
    let shape = router.shape(&requests[0].1);
    c.bench_function("score_one_device/prefill_heavy", |b| {
        b.iter(|| router.score(black_box(&shape), black_box(&fleet[2]), Duration::ZERO))
    });
}

/// Benches `router` routing `req` over `fleet` as its clock advances by
/// `interval` per decision, then prints the mean devices scored per
/// decision and the share of decisions whose device is predicted to meet
/// the SLO, over 10,000 more decisions.
fn bench_advancing(
    c: &mut Criterion,
    id: &str,
    mut router: Router,
    req: &RouteRequest,
    fleet: &[DeviceView<'_>],
    interval: Duration,
) {
    let mut now = Duration::ZERO;
    c.bench_function(id, |b| {
        b.iter(|| {
            now += interval;
            router
                .route(black_box(req), black_box(fleet), now)
                .expect("route")
        })
    });
    let (scored, meeting) = scored_in_steady_state(&mut router, req, fleet, now, interval);
    println!(
        "{id}: {scored:.1} of {} devices scored per decision, \
         {meeting:.0} % of decisions meet the SLO",
        fleet.len()
    );
}

/// Mean devices scored per decision, and the share of decisions whose
/// device is predicted to meet the SLO, over 10,000 more steady decisions.
fn scored_in_steady_state(
    router: &mut Router,
    req: &RouteRequest,
    fleet: &[DeviceView<'_>],
    mut now: Duration,
    interval: Duration,
) -> (f64, f64) {
    const DECISIONS: u32 = 10_000;
    let (mut scored, mut meeting) = (0usize, 0u32);
    for _ in 0..DECISIONS {
        now += interval;
        let d = router.route(req, fleet, now).expect("route");
        scored += d.scores.len();
        meeting += u32::from(d.chosen().meets_slo);
    }
    (
        scored as f64 / f64::from(DECISIONS),
        100.0 * f64::from(meeting) / f64::from(DECISIONS),
    )
}

criterion_group!(benches, route);
criterion_main!(benches);
