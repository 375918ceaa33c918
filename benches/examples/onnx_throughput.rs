//! Throughput of `Engine` + `OnnxBackend` on a generated model: output
//! tokens/s with 1, 8 and 32 concurrent requests (prompt 256, output 128
//! by default), the decode-only steps of each whole batch, and the batch-1
//! decode step time against weight bytes ÷ measured memcpy bandwidth.
//! Records figures; asserts nothing.
//!
//! ```text
//! source scripts/setup.sh
//! python3 scripts/make_test_model.py --size bench       # ~100 M parameters, models/bench
//! cargo run --release -p switchyard-benches --example onnx_throughput -- \
//!     [MODEL_DIR] [THREADS] [CONCURRENCY,...] [PROMPT] [OUTPUT] [SPEC]
//! ```
//! Defaults: `models/bench`, ONNX Runtime's thread count, `1,8,32`, 256, 128,
//! and FP32 weights priced from `config.json`; `SPEC` names a model spec in
//! `profiles/models` instead (e.g. `smollm2-135m`, whose weights are 4-bit).
//! ONNX Runtime's threads spin between operators, as in the default
//! `switchyard.toml`; `SPINNING=0` makes them sleep instead.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use switchyard_backends::{Backend, Catalog, CostModel, OnnxBackend, OnnxConfig, SeqId};
use switchyard_scheduler::{Engine, EngineConfig, Event, Request};

/// What one concurrency level measured.
struct Run {
    concurrency: usize,
    wall: Duration,
    output_tokens: u64,
    /// Step times of steps that were a single batch-1 decode.
    single_decodes: Vec<f64>,
    /// Step times of steps that decoded every request and prefilled nothing.
    full_decodes: Vec<f64>,
}

fn prompt(i: usize, len: usize) -> Vec<u32> {
    // Distinct printable bytes per request, so no prefix is shared.
    std::iter::once(1)
        .chain((0..len - 1).map(|k| 3 + 32 + ((k * 7 + i * 13) % 90) as u32))
        .collect()
}

fn run(b: &mut OnnxBackend, cost: &CostModel, n: usize, prompt_len: usize, output: u32) -> Run {
    let cfg = EngineConfig {
        max_num_seqs: n.max(1) as u32,
        max_batched_tokens: 512,
        max_model_len: 4096,
        enable_prefix_caching: false,
        step_time_budget: None,
    };
    let info = b.info().clone();
    let mut e = Engine::new(cfg, cost.clone(), info.kv_blocks, info.block_size);
    for i in 0..n {
        let mut r = Request::new(SeqId(i as u64), prompt(i, prompt_len), output);
        r.ignore_eos = true;
        e.add(r, Duration::ZERO).expect("request fits");
    }
    let started = Instant::now();
    let mut out = Run {
        concurrency: n,
        wall: Duration::ZERO,
        output_tokens: 0,
        single_decodes: Vec::new(),
        full_decodes: Vec::new(),
    };
    let mut now = Duration::ZERO;
    while let Some(plan) = e.schedule(now) {
        let decodes_only = plan.seqs.iter().all(|s| s.tokens.len() == 1);
        let single = decodes_only && plan.seqs.len() == 1;
        let full = decodes_only && plan.seqs.len() == n;
        let result = b.execute(&plan).expect("step runs");
        if single {
            out.single_decodes.push(result.elapsed.as_secs_f64());
        }
        if full {
            out.full_decodes.push(result.elapsed.as_secs_f64());
        }
        now += result.elapsed;
        let events = e.complete(&result, now).expect("output matches plan");
        let tokens = events.iter().filter(|ev| matches!(ev, Event::Token { .. }));
        out.output_tokens += tokens.count() as u64;
    }
    out.wall = started.elapsed();
    out
}

/// Best-of-5 memcpy bandwidth over a 256 MiB buffer, bytes copied per second.
fn memcpy_bandwidth() -> f64 {
    let n = 256 << 20;
    let src = vec![1u8; n];
    let mut dst = vec![0u8; n];
    (0..5)
        .map(|_| {
            let t = Instant::now();
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&dst);
            n as f64 / t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut args = std::env::args().skip(1);
    let dir = args.next().map_or(root.join("models/bench"), PathBuf::from);
    let threads: usize = args.next().map_or(Ok(0), |t| t.parse())?;
    let levels: Vec<usize> = match args.next() {
        Some(s) => s.split(',').map(str::parse).collect::<Result<_, _>>()?,
        None => vec![1, 8, 32],
    };
    let prompt_len: usize = args.next().map_or(Ok(256), |t| t.parse())?;
    let output: u32 = args.next().map_or(Ok(128), |t| t.parse())?;
    let spec_name = args.next();
    let mut config = OnnxConfig::new(&dir);
    config.intra_threads = threads;
    config.intra_spinning = std::env::var("SPINNING").map_or(true, |v| v != "0");
    config.kv_cache_bytes = 2 << 30;
    let mut b = OnnxBackend::new(config)?;
    let catalog = Catalog::new(root.join("profiles"));
    let spec = match &spec_name {
        Some(name) => catalog.model(name)?,
        None => b.model_spec(),
    };
    let device = catalog.device("cpu")?;
    let cost = CostModel::new(device, spec.clone());
    println!(
        "{}: {:.1} M parameters, {} KV blocks, on {}",
        spec.name,
        spec.total_params_b * 1e3,
        b.info().kv_blocks,
        b.info().name
    );
    // Warm-up: one short request.
    run(&mut b, &cost, 1, 16, 4);
    let mut runs = Vec::new();
    for &n in &levels {
        let r = run(&mut b, &cost, n, prompt_len, output);
        let tps = r.output_tokens as f64 / r.wall.as_secs_f64();
        println!(
            "concurrency {:>3}: {:>6} output tokens in {:>7.2} s = {:>7.1} tokens/s",
            r.concurrency,
            r.output_tokens,
            r.wall.as_secs_f64(),
            tps
        );
        runs.push((r, tps));
    }
    if let Some((base, base_tps)) = runs.iter().find(|(r, _)| r.concurrency == 1) {
        for (r, tps) in &runs {
            println!(
                "speed-up at {:>3} concurrent vs one at a time: {:.2}x",
                r.concurrency,
                tps / base_tps
            );
        }
        // The run's output rate also pays for every prompt: at concurrency
        // N the prefills are N·prompt of the N·(prompt + output) tokens
        // computed. Decode-only steps of the whole batch show the rate once
        // every prompt is in.
        let single_step = median(base.single_decodes.clone());
        for (r, _) in runs.iter().filter(|(r, _)| r.concurrency > 1) {
            let step = median(r.full_decodes.clone());
            println!(
                "decode-only steps of all {} requests: median {:.1} ms over {} steps = {:.1} tokens/s, {:.2}x the batch-1 decode step's rate; prompts are {:.0} % of the tokens computed",
                r.concurrency,
                step * 1e3,
                r.full_decodes.len(),
                r.concurrency as f64 / step,
                r.concurrency as f64 * single_step / step,
                100.0 * prompt_len as f64 / (prompt_len as f64 + f64::from(output))
            );
        }
        let bw = memcpy_bandwidth();
        let weights = spec.weight_bytes_total();
        println!(
            "batch-1 decode step: median {:.1} ms over {} steps; weights {:.0} MB / memcpy {:.1} GB/s = {:.1} ms (ratio {:.2})",
            single_step * 1e3,
            base.single_decodes.len(),
            weights / 1e6,
            bw / 1e9,
            weights / bw * 1e3,
            single_step / (weights / bw)
        );
    }
    Ok(())
}
