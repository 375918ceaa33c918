//! The engine serving a real model: `Engine` + `OnnxBackend` on the
//! committed tiny model (`models/tiny`, plain ONNX attention), its
//! `GroupQueryAttention` twin (`models/tiny-gqa`, the packed KV layout)
//! and on SmolLM2-135M-Instruct
//! (`models/smollm2-135m-instruct`, converted by `scripts/setup.sh`) must
//! generate exactly what a plain Python onnxruntime greedy loop generates
//! (`scripts/onnx_reference.py`), whether each prompt runs alone,
//! concurrently under KV pressure (mixed prefill + decode steps,
//! preemption), or with chunked prefill.
//!
//! Needs `python3` with onnxruntime and `ORT_DYLIB_PATH` (`source
//! scripts/setup.sh`); without them these tests fail, they do not skip. The
//! SmolLM2 tests skip only when its directory is absent and setup has not
//! run (no `ORT_DYLIB_PATH`): setup always converts it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use switchyard_backends::fixtures;
use switchyard_backends::onnx::KvLayout;
use switchyard_backends::{
    Backend, Catalog, CostModel, OnnxBackend, OnnxConfig, SamplingParams, SeqId,
};
use switchyard_scheduler::{Engine, EngineConfig, Event, Request};

const MAX_TOKENS: u32 = 40;
const BLOCK: u32 = 16;

const TEXTS: [&str; 6] = [
    "Hello",
    "The quick brown fox jumps over the lazy dog",
    "a",
    "Once upon a time, in a land far away, there lived a",
    "1234567890",
    "Switchyard schedules LLM inference across devices.",
];

/// A model directory under test and how to price and squeeze it.
struct Fixture {
    /// Directory under the repository root.
    dir: &'static str,
    /// Model spec in `profiles/models`.
    spec: &'static str,
    /// KV blocks of the concurrent runs: too few for every sequence at once.
    pressure_blocks: u32,
}

const TINY: Fixture = Fixture {
    dir: "models/tiny",
    spec: "tiny-llama",
    // 14 blocks of 16 = 224 tokens for 6 sequences wanting ~6 * 75.
    pressure_blocks: 14,
};

/// The tiny model's weights with `GroupQueryAttention` (`make_test_model.py --attention gqa`).
const TINY_GQA: Fixture = Fixture {
    dir: "models/tiny-gqa",
    spec: "tiny-llama",
    pressure_blocks: 14,
};

const SMOLLM2: Fixture = Fixture {
    dir: fixtures::SMOLLM2_DIR,
    spec: "smollm2-135m",
    // 10 blocks of 16 = 160 tokens for 8 sequences wanting ~8 * 60.
    pressure_blocks: 10,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn backend(m: &Fixture, kv_blocks: u32, max_padding_ratio: f64) -> OnnxBackend {
    let mut c = OnnxConfig::new(root().join(m.dir));
    c.block_size = BLOCK;
    c.kv_blocks = Some(kv_blocks);
    c.intra_threads = 1;
    c.max_padding_ratio = max_padding_ratio;
    OnnxBackend::new(c).expect("ONNX backend starts (run `source scripts/setup.sh` first)")
}

fn engine(m: &Fixture, b: &OnnxBackend, max_batched_tokens: u32, max_num_seqs: u32) -> Engine {
    let catalog = Catalog::new(root().join("profiles"));
    let cost = CostModel::new(
        catalog.device("cpu").unwrap(),
        catalog.model(m.spec).unwrap(),
    );
    let cfg = EngineConfig {
        max_num_seqs,
        max_batched_tokens,
        max_model_len: 512,
        enable_prefix_caching: true,
        step_time_budget: None,
    };
    Engine::new(cfg, cost, b.info().kv_blocks, BLOCK)
}

fn prompts(b: &OnnxBackend) -> Vec<Vec<u32>> {
    TEXTS
        .iter()
        .map(|t| b.tokenizer().encode(t, true).unwrap())
        .collect()
}

/// SmolLM2's text prompts plus two chat prompts rendered by Jinja2 from the
/// GGUF's own template (`scripts/smollm2_reference.py`).
fn smollm2_prompts(b: &OnnxBackend) -> Vec<Vec<u32>> {
    let chats = serde_json::json!([
        [{"role": "user", "content": "What is 2+2?"}],
        [{"role": "system", "content": "You answer in one word."},
         {"role": "user", "content": "What colour is the sky?"}],
    ]);
    let out = python(&[
        "smollm2_reference.py".as_ref(),
        "chat".as_ref(),
        chats.to_string().as_ref(),
    ]);
    let rendered: Vec<String> = serde_json::from_value(out["prompts"].clone()).unwrap();
    let mut all = prompts(b);
    all.extend(
        rendered
            .iter()
            .map(|t| b.tokenizer().encode(t, true).unwrap()),
    );
    all
}

/// Runs `scripts/<args[0]> args[1..]` and parses its JSON output.
fn python(args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(root().join("scripts").join(args[0]))
        .args(&args[1..])
        .output()
        .expect("python3 runs (run `source scripts/setup.sh` first)");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        args[0],
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn request(i: usize, prompt: &[u32]) -> Request {
    let mut r = Request::new(SeqId(i as u64), prompt.to_vec(), MAX_TOKENS);
    r.ignore_eos = true;
    r
}

/// Counts of what the steps of a run contained.
#[derive(Debug, Default)]
struct RunStats {
    steps: u32,
    mixed_steps: u32,
    max_step_tokens: usize,
}

/// Drives the engine until idle; returns each sequence's tokens.
fn run(e: &mut Engine, b: &mut OnnxBackend) -> (HashMap<SeqId, Vec<u32>>, RunStats) {
    let mut now = Duration::ZERO;
    let mut out: HashMap<SeqId, Vec<u32>> = HashMap::new();
    let mut stats = RunStats::default();
    while let Some(plan) = e.schedule(now) {
        let decodes = plan
            .seqs
            .iter()
            .any(|s| s.tokens.len() == 1 && s.start_pos > 0);
        let prefills = plan.seqs.iter().any(|s| s.tokens.len() > 1);
        stats.mixed_steps += u32::from(decodes && prefills);
        stats.max_step_tokens = stats.max_step_tokens.max(plan.num_tokens());
        let result = b.execute(&plan).expect("step runs");
        now += result.elapsed;
        for ev in e.complete(&result, now).unwrap() {
            if let Event::Token {
                seq, token, index, ..
            } = ev
            {
                let v = out.entry(seq).or_default();
                assert_eq!(v.len() as u32, index);
                v.push(token);
            }
        }
        stats.steps += 1;
        assert!(stats.steps < 10_000, "engine does not terminate");
    }
    (out, stats)
}

/// Greedy tokens from `scripts/onnx_reference.py` (Python onnxruntime, batch 1, dense cache).
fn reference(m: &Fixture, prompts: &[Vec<u32>]) -> Vec<Vec<u32>> {
    let json = serde_json::to_string(prompts).unwrap();
    let dir = root().join(m.dir);
    let max = MAX_TOKENS.to_string();
    let v = python(&[
        "onnx_reference.py".as_ref(),
        "--model".as_ref(),
        dir.as_os_str(),
        "--max-tokens".as_ref(),
        max.as_ref(),
        "--prompts".as_ref(),
        json.as_ref(),
    ]);
    serde_json::from_value(v["outputs"].clone()).unwrap()
}

/// Each prompt alone through a fresh engine with a roomy pool.
fn alone(m: &Fixture, prompts: &[Vec<u32>]) -> HashMap<SeqId, Vec<u32>> {
    let mut b = backend(m, 256, 1.5);
    prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut e = engine(m, &b, 2048, 64);
            e.add(request(i, p), Duration::ZERO).unwrap();
            let (mut out, _) = run(&mut e, &mut b);
            (SeqId(i as u64), out.remove(&SeqId(i as u64)).unwrap())
        })
        .collect()
}

/// Each prompt alone equals the reference; returns the reference.
fn check_alone(m: &Fixture, prompts: &[Vec<u32>]) -> Vec<Vec<u32>> {
    let want = reference(m, prompts);
    let got = alone(m, prompts);
    for (i, w) in want.iter().enumerate() {
        assert_eq!(&got[&SeqId(i as u64)], w, "{}: prompt {i}", m.dir);
    }
    want
}

#[test]
fn alone_matches_the_python_reference() {
    let b = backend(&TINY, 16, 1.5);
    let want = check_alone(&TINY, &prompts(&b));
    // The fixture is not degenerate: outputs vary within and across prompts.
    assert!(want
        .iter()
        .all(|o| o.iter().collect::<std::collections::HashSet<_>>().len() > 10));
}

#[test]
fn smollm2_alone_matches_the_python_reference() {
    if fixtures::smollm2_dir("model.onnx").is_none() {
        return;
    }
    let b = backend(&SMOLLM2, 16, 1.5);
    let prompts = smollm2_prompts(&b);
    let want = check_alone(&SMOLLM2, &prompts);
    // A real model: "What is 2+2?" is answered, and the answer says 4.
    let answer = b.tokenizer().decode(&want[TEXTS.len()], true).unwrap();
    assert!(answer.contains('4'), "{answer:?}");
}

/// Everything at once on a pool too small for all of it, with a budget that
/// mixes prefill chunks into decode steps.
fn concurrent(
    m: &Fixture,
    prompts: &[Vec<u32>],
    max_padding_ratio: f64,
) -> (HashMap<SeqId, Vec<u32>>, RunStats, u64) {
    let mut b = backend(m, m.pressure_blocks, max_padding_ratio);
    let mut e = engine(m, &b, 48, 8);
    for (i, p) in prompts.iter().enumerate() {
        e.add(request(i, p), Duration::ZERO).unwrap();
    }
    let (out, stats) = run(&mut e, &mut b);
    assert!(
        b.resident_runs() > 0,
        "some decode runs continue the previous one without a gather"
    );
    (out, stats, e.preemptions())
}

/// Concurrent runs under preemption, with and without a padding limit, equal `solo`.
fn check_concurrent(m: &Fixture, prompts: &[Vec<u32>], solo: &HashMap<SeqId, Vec<u32>>) {
    for ratio in [1.5, f64::INFINITY] {
        let (got, stats, preemptions) = concurrent(m, prompts, ratio);
        assert!(preemptions > 0, "the small pool must force preemption");
        assert!(
            stats.mixed_steps > 0,
            "some steps mix prefill and decode: {stats:?}"
        );
        assert_eq!(&got, solo, "{}: padding ratio {ratio}", m.dir);
    }
}

/// Prefill chunked to 7 tokens a step equals `solo`.
fn check_chunked(m: &Fixture, prompts: &[Vec<u32>], solo: &HashMap<SeqId, Vec<u32>>) {
    let mut b = backend(m, 256, 1.5);
    let mut e = engine(m, &b, 7, 3);
    for (i, p) in prompts.iter().enumerate() {
        e.add(request(i, p), Duration::ZERO).unwrap();
    }
    let (got, stats) = run(&mut e, &mut b);
    assert!(stats.max_step_tokens <= 7);
    assert_eq!(&got, solo, "{}: chunked", m.dir);
}

#[test]
fn concurrent_batches_with_preemption_match_alone() {
    let b = backend(&TINY, 16, 1.5);
    let prompts = prompts(&b);
    check_concurrent(&TINY, &prompts, &alone(&TINY, &prompts));
}

#[test]
fn chunked_prefill_matches_unchunked() {
    let b = backend(&TINY, 16, 1.5);
    let prompts = prompts(&b);
    check_chunked(&TINY, &prompts, &alone(&TINY, &prompts));
}

#[test]
fn gqa_graph_alone_concurrent_and_chunked_match_the_python_reference() {
    let b = backend(&TINY_GQA, 16, 1.5);
    assert_eq!(b.graph_io().kv_layout, KvLayout::Packed);
    assert_eq!(
        backend(&TINY, 16, 1.5).graph_io().kv_layout,
        KvLayout::Padded
    );
    let prompts = prompts(&b);
    check_alone(&TINY_GQA, &prompts);
    let solo = alone(&TINY_GQA, &prompts);
    check_concurrent(&TINY_GQA, &prompts, &solo);
    check_chunked(&TINY_GQA, &prompts, &solo);
    // Same weights, another attention kernel: the same greedy text.
    assert_eq!(solo, alone(&TINY, &prompts));
}

#[test]
fn smollm2_concurrent_and_chunked_match_the_python_reference() {
    if fixtures::smollm2_dir("model.onnx").is_none() {
        return;
    }
    let b = backend(&SMOLLM2, 16, 1.5);
    let prompts = smollm2_prompts(&b);
    let want = reference(&SMOLLM2, &prompts);
    let solo: HashMap<SeqId, Vec<u32>> = want
        .into_iter()
        .enumerate()
        .map(|(i, w)| (SeqId(i as u64), w))
        .collect();
    check_concurrent(&SMOLLM2, &prompts, &solo);
    check_chunked(&SMOLLM2, &prompts, &solo);
}

/// Greedy log-probabilities under batching and preemption equal the Python
/// reference's log-softmax of the same graph's logits, and each sampled token
/// heads its own list of alternatives.
#[test]
fn logprobs_match_the_python_reference_under_preemption() {
    let m = &TINY;
    let b = backend(m, 16, 1.5);
    let prompts = prompts(&b);
    let json = serde_json::to_string(&prompts).unwrap();
    let dir = root().join(m.dir);
    let max = MAX_TOKENS.to_string();
    let v = python(&[
        "onnx_reference.py".as_ref(),
        "--model".as_ref(),
        dir.as_os_str(),
        "--max-tokens".as_ref(),
        max.as_ref(),
        "--prompts".as_ref(),
        json.as_ref(),
    ]);
    let want_tokens: Vec<Vec<u32>> = serde_json::from_value(v["outputs"].clone()).unwrap();
    let want_lps: Vec<Vec<f64>> = serde_json::from_value(v["logprobs"].clone()).unwrap();
    let mut b = backend(m, m.pressure_blocks, 1.5);
    let mut e = engine(m, &b, 48, 8);
    for (i, p) in prompts.iter().enumerate() {
        let mut r = request(i, p);
        r.sampling.logprobs = Some(3);
        e.add(r, Duration::ZERO).unwrap();
    }
    let mut got: HashMap<SeqId, Vec<(u32, f32)>> = HashMap::new();
    let mut now = Duration::ZERO;
    while let Some(plan) = e.schedule(now) {
        let result = b.execute(&plan).expect("step runs");
        now += result.elapsed;
        for ev in e.complete(&result, now).unwrap() {
            if let Event::Token {
                seq,
                token,
                logprobs,
                ..
            } = ev
            {
                let lp = logprobs.expect("asked for logprobs");
                assert_eq!(lp.top.len(), 3);
                assert_eq!(
                    lp.top[0],
                    (token, lp.logprob),
                    "greedy token is the most likely"
                );
                assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
                got.entry(seq).or_default().push((token, lp.logprob));
            }
        }
    }
    assert!(e.preemptions() > 0, "the pool is small enough to preempt");
    for (i, (tokens, lps)) in want_tokens.iter().zip(&want_lps).enumerate() {
        let run = &got[&SeqId(i as u64)];
        let ids: Vec<u32> = run.iter().map(|t| t.0).collect();
        assert_eq!(&ids, tokens, "prompt {i}");
        for (k, (&(_, lp), &want)) in run.iter().zip(lps).enumerate() {
            assert!(
                (f64::from(lp) - want).abs() < 1e-3,
                "prompt {i} token {k}: {lp} vs {want}"
            );
        }
    }
}

#[test]
fn seeded_sampling_does_not_depend_on_batching() {
    let b = backend(&TINY, 16, 1.5);
    let prompts = prompts(&b);
    let sampled = |i: usize, p: &[u32]| {
        let mut r = request(i, p);
        r.sampling = SamplingParams {
            temperature: 0.8,
            top_p: 0.9,
            top_k: 40,
            seed: if i.is_multiple_of(2) { Some(7) } else { None },
            logprobs: None,
        };
        r
    };
    let mut solo = HashMap::new();
    let mut b = backend(&TINY, 256, 1.5);
    for (i, p) in prompts.iter().enumerate() {
        let mut e = engine(&TINY, &b, 2048, 64);
        e.add(sampled(i, p), Duration::ZERO).unwrap();
        solo.extend(run(&mut e, &mut b).0);
    }
    let mut b = backend(&TINY, TINY.pressure_blocks, 1.5);
    let mut e = engine(&TINY, &b, 48, 8);
    for (i, p) in prompts.iter().enumerate() {
        e.add(sampled(i, p), Duration::ZERO).unwrap();
    }
    let (got, _) = run(&mut e, &mut b);
    assert!(e.preemptions() > 0);
    assert_eq!(got, solo);
}

#[test]
fn parallel_samples_share_the_prompt_and_match_alone() {
    let b = backend(&TINY, 16, 1.5);
    let prompts = prompts(&b);
    let solo = alone(&TINY, &prompts);
    // Three greedy samples of each prompt on a pool that forces
    // preemption: the forks share the prompt's blocks, copy the one they
    // write, and every sample equals the prompt alone.
    let mut b = backend(&TINY, TINY.pressure_blocks, 1.5);
    let mut e = engine(&TINY, &b, 48, 8);
    let fork = |i: usize, k: u64| SeqId(1000 + 10 * i as u64 + k);
    for (i, p) in prompts.iter().enumerate() {
        e.add_parallel(request(i, p), &[fork(i, 1), fork(i, 2)], Duration::ZERO)
            .unwrap();
    }
    let (got, _) = run(&mut e, &mut b);
    assert!(e.preemptions() > 0, "the small pool must force preemption");
    for i in 0..prompts.len() {
        let want = &solo[&SeqId(i as u64)];
        assert_eq!(&got[&SeqId(i as u64)], want, "prompt {i}");
        for k in [1, 2] {
            assert_eq!(&got[&fork(i, k)], want, "prompt {i} fork {k}");
        }
    }

    // Seeded sampling: each fork draws its own tokens, reproducibly.
    let sampled = || {
        let mut b = backend(&TINY, 256, 1.5);
        let mut e = engine(&TINY, &b, 2048, 64);
        let mut r = request(0, &prompts[0]);
        r.sampling = SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            seed: Some(7),
            logprobs: None,
        };
        e.add_parallel(r, &[SeqId(1), SeqId(2)], Duration::ZERO)
            .unwrap();
        run(&mut e, &mut b).0
    };
    let (first, again) = (sampled(), sampled());
    assert_eq!(first, again);
    assert_ne!(first[&SeqId(0)], first[&SeqId(1)]);
    assert_ne!(first[&SeqId(1)], first[&SeqId(2)]);
}
