//! Property test: whatever the arrivals, pool size, budget and aborts, every
//! request finishes exactly once with the tokens it asked for (or is aborted),
//! the engine never stalls with work left, and every KV block comes back.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use switchyard_backends::{Backend, Catalog, CostModel, SeqId, SimBackend, SimConfig};
use switchyard_scheduler::{AbortOutcome, Engine, EngineConfig, Event, FinishReason, Request};

fn cost() -> CostModel {
    let catalog = Catalog::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles"));
    CostModel::new(
        catalog.device("l4").unwrap(),
        catalog.model("llama-3.1-8b").unwrap(),
    )
}

#[derive(Debug, Clone)]
struct Arrival {
    step: u8,
    prompt: u16,
    max_tokens: u16,
    shared_prefix: bool,
    abort_after: Option<u8>,
    /// More samples of the prompt (`Engine::add_parallel`).
    forks: u8,
}

/// The id of arrival `i`'s `k`-th fork (k ≥ 1).
fn fork_id(i: usize, k: u8) -> SeqId {
    SeqId(1_000_000 + 10 * i as u64 + u64::from(k))
}

fn arrival() -> impl Strategy<Value = Arrival> {
    (
        0u8..30,
        1u16..200,
        1u16..60,
        any::<bool>(),
        prop::option::weighted(0.2, 0u8..20),
        prop_oneof![3 => Just(0u8), 1 => 1u8..4],
    )
        .prop_map(
            |(step, prompt, max_tokens, shared_prefix, abort_after, forks)| Arrival {
                step,
                prompt,
                max_tokens,
                shared_prefix,
                abort_after,
                forks,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn every_request_finishes_once(
        arrivals in prop::collection::vec(arrival(), 1..40),
        blocks in 14u32..80,
        budget in 1u32..300,
        max_num_seqs in 1u32..16,
        step_budget_us in prop::option::of(0u64..2000),
    ) {
        // SLO-budgeted steps, down to budgets no step meets, must not stall anything.
        let step_time_budget = step_budget_us.map(Duration::from_micros);
        let config = EngineConfig { max_num_seqs, max_batched_tokens: budget, max_model_len: 4096, enable_prefix_caching: true, step_time_budget };
        let mut engine = Engine::new(config, cost(), blocks, 16);
        let mut sim = SimBackend::new(cost(), SimConfig { kv_blocks: Some(blocks), ..SimConfig::default() }).unwrap();
        let mut wanted: HashMap<SeqId, u32> = HashMap::new();
        let mut got: HashMap<SeqId, u32> = HashMap::new();
        let mut finished: HashMap<SeqId, FinishReason> = HashMap::new();
        let mut now = Duration::ZERO;
        let mut step = 0u32;
        loop {
            for (i, a) in arrivals.iter().enumerate() {
                if u32::from(a.step) == step {
                    let prompt: Vec<u32> = (0..u32::from(a.prompt))
                        .map(|k| if a.shared_prefix { k + 1 } else { (i as u32 + 1) * 10_000 + k })
                        .collect();
                    let mut req = Request::new(SeqId(i as u64), prompt, u32::from(a.max_tokens));
                    req.ignore_eos = true;
                    let forks: Vec<SeqId> = (1..=a.forks).map(|k| fork_id(i, k)).collect();
                    if engine.add_parallel(req, &forks, now).is_ok() {
                        for id in std::iter::once(SeqId(i as u64)).chain(forks) {
                            wanted.insert(id, u32::from(a.max_tokens));
                        }
                    }
                }
                if a.abort_after.is_some_and(|k| u32::from(a.step) + u32::from(k) == step) {
                    // A client that leaves aborts every sample of its request.
                    for id in std::iter::once(SeqId(i as u64)).chain((1..=a.forks).map(|k| fork_id(i, k))) {
                        if let AbortOutcome::Finished(Event::Finished { seq, reason, .. }) = engine.abort(id, now) {
                            prop_assert!(finished.insert(seq, reason).is_none(), "{seq} finished twice");
                        }
                    }
                }
            }
            match engine.schedule(now) {
                Some(plan) => {
                    let out = sim.execute(&plan).unwrap();
                    now += out.elapsed;
                    for ev in engine.complete(&out, now).unwrap() {
                        match ev {
                            Event::Token { seq, .. } => *got.entry(seq).or_default() += 1,
                            Event::Finished { seq, reason, stats } => {
                                prop_assert!(finished.insert(seq, reason).is_none(), "{seq} finished twice");
                                if reason != FinishReason::Abort {
                                    prop_assert_eq!(stats.output_tokens, got.get(&seq).copied().unwrap_or(0));
                                }
                            }
                            Event::Preempted { .. } => {}
                        }
                    }
                }
                None => {
                    prop_assert!(!engine.has_work(), "stalled with work left at step {step}");
                    if step > 30 { break; }
                }
            }
            step += 1;
            prop_assert!(step < 50_000, "no progress");
            engine.blocks().check_invariants().map_err(TestCaseError::fail)?;
        }
        // Aborts of already-finished or never-added requests are no-ops; everything else finished.
        for (seq, max) in &wanted {
            match finished.get(seq) {
                Some(FinishReason::Length) => {
                    let limit = engine.max_seq_tokens();
                    let i = if seq.0 >= 1_000_000 { (seq.0 - 1_000_000) / 10 } else { seq.0 };
                    let prompt = u32::from(arrivals[i as usize].prompt);
                    prop_assert_eq!(got.get(seq).copied().unwrap_or(0), (*max).min(limit - prompt));
                }
                Some(FinishReason::Abort) => {}
                other => prop_assert!(false, "{seq} ended with {other:?}"),
            }
        }
        prop_assert_eq!(engine.blocks().num_free_blocks(), blocks);
    }
}

/// Drives one engine over `arrivals` (arrival `i` at `step · 40 ms`) and logs
/// every event with its time; with `multi`, decode-only stretches run
/// through `run_decode_steps`, bounded by the next arrival.
fn drive(
    arrivals: &[Arrival],
    config: EngineConfig,
    blocks: u32,
    stop_token: Option<u32>,
    multi: bool,
) -> (Vec<(Duration, Event)>, u64, u32) {
    let mut engine = Engine::new(config, cost(), blocks, 16);
    let mut sim = SimBackend::new(
        cost(),
        SimConfig {
            kv_blocks: Some(blocks),
            ..SimConfig::default()
        },
    )
    .unwrap();
    let mut order: Vec<usize> = (0..arrivals.len()).collect();
    order.sort_by_key(|&i| arrivals[i].step);
    let at = |i: usize| Duration::from_millis(40 * u64::from(arrivals[i].step));
    let mut log = Vec::new();
    let (mut now, mut next, mut multi_steps) = (Duration::ZERO, 0usize, 0u64);
    loop {
        while next < order.len() && at(order[next]) <= now {
            let i = order[next];
            let a = &arrivals[i];
            let prompt: Vec<u32> = (0..u32::from(a.prompt))
                .map(|k| {
                    if a.shared_prefix {
                        k + 1
                    } else {
                        (i as u32 + 1) * 10_000 + k
                    }
                })
                .collect();
            let mut req = Request::new(SeqId(i as u64), prompt, u32::from(a.max_tokens));
            req.ignore_eos = a.abort_after.is_none();
            req.stop_token_ids.extend(stop_token);
            let _ = engine.add(req, now);
            next += 1;
        }
        if multi {
            let until = order.get(next).map_or(Duration::MAX, |&i| at(i));
            let run = engine.run_decode_steps(
                now,
                until,
                |shape| sim.cost_model().step_time(shape),
                |prev, pos| sim.next_token(prev, pos),
                |t, ev| log.push((t, ev)),
            );
            now = run.end;
            multi_steps += u64::from(run.steps);
            if run.steps > 0 {
                continue;
            }
        }
        match engine.schedule(now) {
            Some(plan) => {
                let out = sim.execute(&plan).unwrap();
                now += out.elapsed;
                for ev in engine.complete(&out, now).unwrap() {
                    log.push((now, ev));
                }
            }
            None if next < order.len() => now = now.max(at(order[next])),
            None => break,
        }
        assert!(log.len() < 1_000_000, "no progress");
    }
    engine.blocks().check_invariants().unwrap();
    (log, multi_steps, engine.blocks().num_free_blocks())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// Multi-step decode leaves exactly the events (tokens, times,
    /// preemptions, finishes with their stats) of stepping one at a time.
    #[test]
    fn multi_step_decode_matches_step_by_step(
        arrivals in prop::collection::vec(arrival(), 1..30),
        blocks in 14u32..80,
        budget in 1u32..300,
        max_num_seqs in 1u32..16,
        step_budget_us in prop::option::of(0u64..2000),
        prefix in any::<bool>(),
        stop_at in prop::option::of(0u32..40),
    ) {
        // A stop token that the first request really generates, at output index `stop_at`.
        let stop_token = stop_at.map(|k| {
            let sim = SimBackend::new(cost(), SimConfig::default()).unwrap();
            let a = &arrivals[0];
            let mut prev = if a.shared_prefix { u32::from(a.prompt) } else { 10_000 + u32::from(a.prompt) - 1 };
            for pos in u32::from(a.prompt)..=u32::from(a.prompt) + k {
                prev = sim.next_token(prev, pos);
            }
            prev
        });
        let step_time_budget = step_budget_us.map(Duration::from_micros);
        let config = EngineConfig { max_num_seqs, max_batched_tokens: budget, max_model_len: 4096, enable_prefix_caching: prefix, step_time_budget };
        let (slow, none, free_slow) = drive(&arrivals, config, blocks, stop_token, false);
        let (fast, _, free_fast) = drive(&arrivals, config, blocks, stop_token, true);
        prop_assert_eq!(none, 0);
        prop_assert_eq!(free_slow, free_fast);
        prop_assert_eq!(slow, fast);
    }
}

#[test]
fn multi_step_decode_runs_and_stops_at_its_bound() {
    let config = EngineConfig::default();
    let arrivals = vec![
        Arrival {
            step: 0,
            prompt: 100,
            max_tokens: 50,
            shared_prefix: false,
            abort_after: None,
            forks: 0,
        },
        Arrival {
            step: 0,
            prompt: 30,
            max_tokens: 80,
            shared_prefix: false,
            abort_after: None,
            forks: 0,
        },
        Arrival {
            step: 10,
            prompt: 60,
            max_tokens: 20,
            shared_prefix: false,
            abort_after: None,
            forks: 0,
        },
    ];
    let (slow, _, _) = drive(&arrivals, config, 200, None, false);
    let (fast, multi_steps, _) = drive(&arrivals, config, 200, None, true);
    assert_eq!(slow, fast);
    assert!(multi_steps > 50, "{multi_steps}");
    // The 20th token of the second request stops it, in both paths alike.
    let stop = slow
        .iter()
        .find_map(|(_, ev)| match ev {
            Event::Token {
                seq: SeqId(1),
                token,
                index: 19,
                ..
            } => Some(*token),
            _ => None,
        })
        .unwrap();
    let (slow, _, _) = drive(&arrivals, config, 200, Some(stop), false);
    let (fast, _, _) = drive(&arrivals, config, 200, Some(stop), true);
    assert_eq!(slow, fast);
    assert!(fast.iter().any(|(_, ev)| matches!(
        ev,
        Event::Finished {
            seq: SeqId(1),
            reason: FinishReason::Stop,
            ..
        }
    )));
}
