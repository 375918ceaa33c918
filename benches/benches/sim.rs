//! Simulation speed: simulated requests per wall-clock second.
//!
//! - `sim/conv_trace_16dev_{cost,least-loaded}`: the first 10 minutes of the
//!   Azure conversation trace (read from `SWITCHYARD_TRACE_DIR`, default
//!   `../shared/traces`; a seeded synthetic stand-in of the same shape when
//!   absent) on the 16-device `examples/fleets/mixed.toml`. Cost routing
//!   packs work onto few devices (fewer, larger steps); least-loaded spreads
//!   it (one step per device per token: the slow case).
//! - `sim/synthetic_16dev`: 2,000 seeded `mix:balanced` requests at 20 req/s
//!   on the same fleet.
//!
//! Criterion reports time per simulation; throughput is set in elements, so
//! the report reads directly as simulated requests per second.

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchyard_backends::Catalog;
use switchyard_loadgen::fleet::{Fleet, FleetSpec};
use switchyard_loadgen::sim::{simulate, SimOptions};
use switchyard_loadgen::workload::{Workload, WorkloadOptions, WorkloadSource};
use switchyard_scheduler::router::{PolicyKind, RouterConfig};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fleet() -> Fleet {
    let catalog = Catalog::new(root().join("profiles"));
    let spec = FleetSpec::load(&root().join("examples/fleets/mixed.toml")).expect("fleet");
    let model = catalog.model("llama-3.1-8b").expect("model");
    Fleet::build(&catalog, &spec, &model).expect("fleet builds")
}

fn workload(spec: &str, o: WorkloadOptions) -> Workload {
    WorkloadSource::new(&[spec.to_string()])
        .expect("spec")
        .build(&o)
        .expect("workload")
}

fn conv_trace() -> Workload {
    let dir = std::env::var("SWITCHYARD_TRACE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("../shared/traces"));
    let path = dir.join("azure-llm-2023-conv.csv");
    if path.exists() {
        workload(
            &format!("trace:{}", path.display()),
            WorkloadOptions {
                duration: Some(600.0),
                ..WorkloadOptions::default()
            },
        )
    } else {
        workload(
            "fixed:prompt=lognormal:1020:0.9,output=lognormal:129:0.9",
            WorkloadOptions {
                rate: Some(5.4),
                duration: Some(600.0),
                seed: 1,
                ..WorkloadOptions::default()
            },
        )
    }
}

fn bench(c: &mut Criterion) {
    let fleet = fleet();
    let opts = |policy| SimOptions {
        router: RouterConfig {
            policy,
            ..RouterConfig::default()
        },
        timeout: Duration::from_secs(600),
        progress: false,
        multi_step: true,
        budgeted_steps: true,
    };
    let conv = conv_trace();
    let synthetic = workload(
        "mix:balanced",
        WorkloadOptions {
            rate: Some(20.0),
            requests: Some(2000),
            seed: 1,
            ..WorkloadOptions::default()
        },
    );
    let mut g = c.benchmark_group("sim");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    for (name, w, policy) in [
        ("conv_trace_16dev_cost", &conv, PolicyKind::Cost),
        (
            "conv_trace_16dev_least-loaded",
            &conv,
            PolicyKind::LeastLoaded,
        ),
        (
            "synthetic_16dev_least-loaded",
            &synthetic,
            PolicyKind::LeastLoaded,
        ),
    ] {
        let o = opts(policy);
        g.throughput(Throughput::Elements(w.requests.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), w, |b, w| {
            b.iter(|| simulate(&fleet, w, &o))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
