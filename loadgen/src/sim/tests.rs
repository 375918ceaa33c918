use std::path::Path;
use std::time::Duration;

use switchyard_backends::Catalog;

use switchyard_scheduler::router::{PolicyKind, RouterConfig};

use super::*;
use crate::fleet::{Fleet, FleetSpec};
use crate::metrics::Outcome;
use crate::workload::{WorkloadOptions, WorkloadSource};

fn catalog() -> Catalog {
    Catalog::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles"))
}

fn fleet(spec: &str) -> Fleet {
    let c = catalog();
    let model = c.model("llama-3.1-8b").unwrap();
    Fleet::build(&c, &FleetSpec::inline(spec).unwrap(), &model).unwrap()
}

fn workload(spec: &str, o: WorkloadOptions) -> Workload {
    WorkloadSource::new(&[spec.to_string()])
        .unwrap()
        .build(&o)
        .unwrap()
}

fn opts(policy: PolicyKind) -> SimOptions {
    SimOptions {
        router: RouterConfig {
            policy,
            ..RouterConfig::default()
        },
        timeout: Duration::from_secs(600),
        progress: false,
        multi_step: true,
        budgeted_steps: true,
    }
}

fn open(rate: f64, n: u64) -> WorkloadOptions {
    WorkloadOptions {
        rate: Some(rate),
        requests: Some(n),
        seed: 1,
        ..WorkloadOptions::default()
    }
}

#[test]
fn light_load_completes_every_request_exactly_once() {
    let f = fleet("h100-sxm=1,l4=2");
    let w = workload(
        "fixed:prompt=uniform:50:500,output=uniform:1:40",
        open(5.0, 200),
    );
    let r = simulate(&f, &w, &opts(PolicyKind::LeastLoaded));
    assert_eq!(r.records.len(), 200);
    for (i, rec) in r.records.iter().enumerate() {
        assert_eq!(rec.id, i as u64);
        assert_eq!(rec.outcome, Outcome::Ok, "{rec:?}");
        assert_eq!(rec.output_tokens, rec.max_tokens);
        assert_eq!(rec.itl_s.len() as u32, rec.output_tokens - 1);
        let (ttft, e2e) = (rec.ttft_s.unwrap(), rec.e2e_s.unwrap());
        assert!(ttft > 0.0 && e2e >= ttft);
        let itl_sum: f64 = rec.itl_s.iter().map(|&x| f64::from(x)).sum();
        assert!(
            (ttft + itl_sum - e2e).abs() < 1e-3,
            "{ttft} + {itl_sum} vs {e2e}"
        );
    }
    assert_eq!(r.routed.iter().sum::<u64>(), 200);
    assert!(r.busy_s.iter().all(|b| *b > 0.0));
}

#[test]
fn simulation_is_deterministic() {
    let f = fleet("h100-sxm=2");
    let w = workload("mix:balanced=1,prefill-heavy=1", open(20.0, 300));
    let a = simulate(&f, &w, &opts(PolicyKind::Cost));
    let b = simulate(&f, &w, &opts(PolicyKind::Cost));
    assert_eq!(a.records, b.records);
    assert_eq!(a.steps, b.steps);
}

#[test]
fn round_robin_spreads_evenly_over_identical_devices() {
    let f = fleet("l4=4");
    let w = workload("fixed:prompt=64,output=4", open(10.0, 400));
    let r = simulate(&f, &w, &opts(PolicyKind::RoundRobin));
    assert!(r.routed.iter().all(|&n| n == 100), "{:?}", r.routed);
}

#[test]
fn overload_times_out_but_terminates() {
    let f = fleet("l4=1");
    let w = workload("fixed:prompt=4000,output=200", open(50.0, 300));
    let mut o = opts(PolicyKind::LeastLoaded);
    o.timeout = Duration::from_secs(5);
    let r = simulate(&f, &w, &o);
    assert_eq!(r.records.len(), 300);
    let timeouts = r
        .records
        .iter()
        .filter(|x| x.outcome == Outcome::Timeout)
        .count();
    assert!(timeouts > 100, "{timeouts}");
    assert!(r.preemptions > 0 || timeouts > 0);
}

#[test]
fn closed_loop_keeps_concurrency_bounded() {
    let f = fleet("h100-sxm=1");
    let o = WorkloadOptions {
        concurrency: Some(3),
        requests: Some(60),
        ..WorkloadOptions::default()
    };
    let w = workload("fixed:prompt=128,output=16", o);
    let r = simulate(&f, &w, &opts(PolicyKind::LeastLoaded));
    assert_eq!(r.records.len(), 60);
    for rec in &r.records {
        let t = rec.sent_s;
        let inflight = r
            .records
            .iter()
            .filter(|x| x.sent_s <= t && x.finish_s().unwrap() > t + 1e-9)
            .count();
        assert!(inflight <= 3, "{inflight} in flight at {t}");
    }
}

#[test]
fn prompts_too_long_for_every_device_are_rejected() {
    let f = fleet("l4=1");
    let w = workload("fixed:prompt=100000,output=4", open(1.0, 3));
    let r = simulate(&f, &w, &opts(PolicyKind::Cost));
    assert!(r.records.iter().all(|x| x.outcome == Outcome::Rejected));
}

#[test]
fn shared_prefix_prompts_share_leading_ids() {
    let w = workload("fixed:prompt=100,output=1,prefix=64", open(1.0, 2));
    let a = prompt_ids(&w.requests[0], 1000, true);
    let b = prompt_ids(&w.requests[1], 1000, true);
    assert_eq!(prompt_ids(&w.requests[0], 1000, false).len(), 100);
    assert_eq!(a[..64], b[..64]);
    assert_ne!(a[64..], b[64..]);
    assert!(a.iter().all(|&t| (1..1000).contains(&t)));
}

/// Runs `w` with and without multi-step decode and checks every output agrees.
fn assert_multi_step_identical(f: &Fleet, w: &Workload, mut o: SimOptions) -> SimResult {
    o.multi_step = false;
    let slow = simulate(f, w, &o);
    o.multi_step = true;
    let fast = simulate(f, w, &o);
    assert_eq!(slow.records, fast.records);
    assert_eq!(slow.busy_s, fast.busy_s);
    assert_eq!(slow.routed, fast.routed);
    assert_eq!(slow.end_s, fast.end_s);
    assert_eq!(slow.steps, fast.steps);
    assert_eq!(slow.preemptions, fast.preemptions);
    assert_eq!(slow.multi_steps, 0);
    fast
}

#[test]
fn multi_step_decode_gives_identical_records() {
    let f = fleet("h100-sxm=2,mi300x=1,l4=3");
    let w = workload(
        "fixed:prompt=lognormal:1020:0.9,output=lognormal:129:0.9",
        open(6.0, 400),
    );
    for policy in [
        PolicyKind::Cost,
        PolicyKind::LeastLoaded,
        PolicyKind::RoundRobin,
        PolicyKind::Latency,
    ] {
        let r = assert_multi_step_identical(&f, &w, opts(policy));
        assert!(
            r.multi_steps > r.steps / 2,
            "{} of {}",
            r.multi_steps,
            r.steps
        );
        assert!(r.records.iter().all(|x| x.outcome == Outcome::Ok));
    }
}

#[test]
fn multi_step_decode_is_identical_under_preemption_timeouts_and_prefix_caching() {
    // Overload: KV pressure preempts, the horizon cuts the run short.
    let f = fleet("l4=2");
    let w = workload("fixed:prompt=3000,output=uniform:50:400", open(20.0, 200));
    let mut o = opts(PolicyKind::LeastLoaded);
    o.timeout = Duration::from_secs(20);
    // Full 2048-token prefill chunks fill the pool fastest: budgeted steps
    // admit more slowly and may never run out of blocks.
    o.budgeted_steps = false;
    let r = assert_multi_step_identical(&f, &w, o);
    assert!(r.preemptions > 0, "no preemption exercised");
    // Decode-only batches that outgrow the pool: stretches stop where a
    // step would need a block the pool does not have.
    let w = workload("fixed:prompt=9000,output=3000", open(0.5, 6));
    let r = assert_multi_step_identical(&fleet("l4=1"), &w, opts(PolicyKind::LeastLoaded));
    assert!(
        r.preemptions > 0 && r.multi_steps > 0,
        "{} {}",
        r.preemptions,
        r.multi_steps
    );
    assert!(r.records.iter().any(|x| x.outcome == Outcome::Timeout));
    // Shared prefixes: engines cache and commit blocks every step.
    let w = workload(
        "fixed:prompt=uniform:100:600,output=uniform:1:300,prefix=64",
        open(8.0, 300),
    );
    let r = assert_multi_step_identical(&fleet("h100-sxm=1,l4=2"), &w, opts(PolicyKind::Prefix));
    assert!(r.multi_steps > 0);
}

#[test]
fn multi_step_decode_is_unused_in_closed_loop() {
    let f = fleet("h100-sxm=1,l4=1");
    let o = WorkloadOptions {
        concurrency: Some(4),
        requests: Some(80),
        ..WorkloadOptions::default()
    };
    let w = workload("fixed:prompt=128,output=uniform:1:64", o);
    let r = assert_multi_step_identical(&f, &w, opts(PolicyKind::LeastLoaded));
    assert_eq!(r.multi_steps, 0);
}

#[test]
fn mooncake_shared_blocks_hit_the_prefix_cache() {
    // 30 requests of 8 blocks; the first 7 (a long shared context) are common.
    let text: Vec<String> = (0..30u64)
        .map(|i| {
            let mut ids: Vec<u64> = (0..7).collect();
            ids.push(1000 + i);
            serde_json::json!({
                "timestamp": i * 500,
                "input_length": 8 * 512,
                "output_length": 4,
                "hash_ids": ids,
            })
            .to_string()
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("switchyard-loadgen-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shared-blocks.jsonl");
    std::fs::write(&path, text.join("\n")).unwrap();
    let hashed = workload(
        &format!("trace:{}", path.display()),
        WorkloadOptions::default(),
    );
    std::fs::remove_file(&path).ok();
    let a = prompt_ids(&hashed.requests[0], 32_000, true);
    let b = prompt_ids(&hashed.requests[1], 32_000, true);
    assert_eq!(a[..7 * 512], b[..7 * 512]);
    assert_ne!(a[7 * 512..], b[7 * 512..]);
    let mut stripped = hashed.clone();
    for r in &mut stripped.requests {
        r.hash_ids = None;
    }
    let f = fleet("h100-sxm=1");
    let mean_ttft = |w: &Workload| {
        let r = simulate(&f, w, &opts(PolicyKind::LeastLoaded));
        assert!(r.records.iter().all(|x| x.outcome == Outcome::Ok));
        r.records.iter().map(|x| x.ttft_s.unwrap()).sum::<f64>() / r.records.len() as f64
    };
    let (cached, cold) = (mean_ttft(&hashed), mean_ttft(&stripped));
    // Only the first request prefills the shared 7/8; the rest prefill one block.
    assert!(cached < 0.5 * cold, "cached {cached} s vs cold {cold} s");
}

#[test]
fn closed_loop_engine_rejection_returns_the_client_slot() {
    // The router accepts an empty prompt (it fits anywhere); the engine
    // refuses it. Before the fix each refusal kept its client slot, so two
    // refusals ended a two-client run after two requests.
    let f = fleet("h100-sxm=1");
    let reqs: Vec<ReqSpec> = (0..10u64)
        .map(|id| ReqSpec {
            id,
            arrival: Duration::ZERO,
            prompt_tokens: if id % 3 == 0 { 0 } else { 64 },
            output_tokens: 8,
            shared_prefix: 0,
            source: 0,
            hash_ids: None,
        })
        .collect();
    let w = Workload {
        requests: reqs,
        concurrency: Some(2),
        duration: None,
        sources: vec!["test".into()],
    };
    let r = simulate(&f, &w, &opts(PolicyKind::Cost));
    assert_eq!(r.records.len(), 10, "every request was sent");
    for rec in &r.records {
        let want = if rec.id % 3 == 0 {
            Outcome::Rejected
        } else {
            Outcome::Ok
        };
        assert_eq!(rec.outcome, want, "request {}", rec.id);
    }
}
