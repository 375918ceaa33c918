//! Criterion benches of the scheduler's hot paths, on seeded, fixed inputs:
//! one engine cycle at 256 running + 1,000 waiting sequences, block
//! allocation + free of a 2,048-token sequence, and cost-model predictions.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use switchyard_backends::{
    Backend, Catalog, CostModel, SeqId, SeqWork, SimBackend, SimConfig, StepShape,
};
use switchyard_scheduler::kv::{BlockManager, BlockTable};
use switchyard_scheduler::{Engine, EngineConfig, Request};

fn cost(device: &str) -> CostModel {
    let catalog = Catalog::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles"));
    CostModel::new(
        catalog.device(device).expect("device profile"),
        catalog.model("llama-3.1-8b").expect("model spec"),
    )
}

/// An engine in steady decode: 256 running sequences at ~1,000 tokens of
/// context and 1,000 more waiting for a free slot.
fn steady_engine() -> (Engine, SimBackend) {
    let blocks = 40_000;
    let config = EngineConfig {
        max_num_seqs: 256,
        max_batched_tokens: 8192,
        max_model_len: 32_768,
        enable_prefix_caching: true,
        step_time_budget: None,
    };
    let mut engine = Engine::new(config, cost("h100-sxm"), blocks, 16);
    let mut sim = SimBackend::new(
        cost("h100-sxm"),
        SimConfig {
            kv_blocks: Some(blocks),
            ..SimConfig::default()
        },
    )
    .expect("sim backend");
    for i in 0..1256u64 {
        let prompt = (0..1000u32)
            .map(|k| (k.wrapping_mul(2_654_435_761) ^ i as u32) % 100_000)
            .collect();
        let mut req = Request::new(SeqId(i), prompt, 1_000_000);
        req.ignore_eos = true;
        engine.add(req, Duration::ZERO).expect("add");
    }
    // Prefill everything that fits, until every step is pure decode.
    let mut now = Duration::ZERO;
    loop {
        let plan = engine.schedule(now).expect("work");
        let decode_only = plan.num_tokens() == plan.seqs.len();
        let out = sim.execute(&plan).expect("execute");
        now += out.elapsed;
        engine.complete(&out, now).expect("complete");
        if decode_only {
            break;
        }
    }
    let load = engine.load();
    assert_eq!((load.running, load.waiting), (256, 1000));
    (engine, sim)
}

/// Times `iters` cycles, restarting from the steady state every 256 cycles
/// so contexts stay between 1,000 and 1,256 tokens whatever the iteration
/// count (the untimed clone is rare enough not to leave caches cold).
fn cycles(base: &Engine, sim: &SimBackend, iters: u64, execute: bool) -> Duration {
    let mut sim = sim.clone();
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let mut e = base.clone();
        let n = (iters - done).min(256);
        let out = {
            let plan = e.schedule(Duration::ZERO).expect("plan");
            sim.execute(&plan).expect("execute")
        };
        e.fail_step();
        let start = Instant::now();
        for _ in 0..n {
            let plan = e.schedule(Duration::ZERO).expect("plan");
            let fresh = if execute {
                Some(sim.execute(&plan).expect("execute"))
            } else {
                black_box(plan);
                None
            };
            black_box(
                e.complete(fresh.as_ref().unwrap_or(&out), Duration::ZERO)
                    .expect("complete"),
            );
        }
        total += start.elapsed();
        done += n;
    }
    total
}

fn engine_cycle(c: &mut Criterion) {
    let (base, sim) = steady_engine();
    c.bench_function("engine_cycle_256_running_1000_waiting", |b| {
        b.iter_custom(|iters| cycles(&base, &sim, iters, false))
    });
    c.bench_function("engine_cycle_with_sim_execute", |b| {
        b.iter_custom(|iters| cycles(&base, &sim, iters, true))
    });
}

fn block_manager(c: &mut Criterion) {
    let mut m = BlockManager::new(16_384, 16);
    let mut table = BlockTable::default();
    c.bench_function("block_alloc_free_2048_tokens", |b| {
        b.iter(|| {
            m.ensure_slots(&mut table, 0, black_box(2048))
                .expect("blocks");
            m.free(&mut table);
        })
    });
    let tokens: Vec<u32> = (0..2048u32)
        .map(|k| k.wrapping_mul(40_503) % 128_000)
        .collect();
    c.bench_function("block_alloc_commit_free_2048_tokens_prefix_cached", |b| {
        b.iter(|| {
            let cached = m.start(&mut table, black_box(&tokens));
            m.ensure_slots(&mut table, cached, 2048).expect("blocks");
            m.commit(&mut table, &tokens, 2048);
            m.free(&mut table);
        })
    });
}

fn cost_model(c: &mut Criterion) {
    let cm = cost("h100-sxm");
    c.bench_function("cost_prefill_2048", |b| {
        b.iter(|| cm.prefill_time(black_box(2048), black_box(0)))
    });
    c.bench_function("cost_decode_batch64_ctx2048", |b| {
        b.iter(|| cm.decode_step_time(black_box(64), black_box(64 * 2048)))
    });
    let work: Vec<SeqWork> = (0..256u32)
        .map(|i| SeqWork {
            new_tokens: 1 + (i % 7) * (i % 3),
            context: 500 + i * 13,
        })
        .collect();
    c.bench_function("cost_step_256_seqs", |b| {
        b.iter(|| cm.step_time(&StepShape::of(black_box(&work).iter().copied())))
    });
}

criterion_group!(benches, engine_cycle, block_manager, cost_model);
criterion_main!(benches);
