use std::collections::HashMap;

use switchyard_backends::fixtures::{device, tiny};
use switchyard_backends::{
    Backend, CostModel, SeqId, SeqWork, SimBackend, SimConfig, StepOutput, StepShape,
};

use super::*;

/// A small device running a tiny model: steps cost about their overheads.
fn cost() -> CostModel {
    CostModel::new(device(100.0, 1000.0, [0.5, 0.8, 100.0, 1.0]), tiny(4096))
}

/// Limits of the test engines: 64 sequences, a token budget of `budget`.
fn config(budget: u32) -> EngineConfig {
    EngineConfig {
        max_num_seqs: 64,
        max_batched_tokens: budget,
        max_model_len: 4096,
        enable_prefix_caching: true,
        step_time_budget: None,
    }
}

/// An engine whose every step takes 1 ms, stopping on id 0, for tests
/// that script the backend's output instead of running one.
fn scripted(blocks: u32, budget: u32) -> Engine<impl StepTimer> {
    Engine::with_timer(config(budget), |_: &StepShape| 1e-3, vec![0], blocks, 16)
}

/// An engine pricing steps with [`cost`] and the simulator it runs on, over
/// `blocks` KV blocks of 16 tokens.
fn setup(blocks: u32, budget: u32) -> (Engine, SimBackend) {
    let sim = SimBackend::new(
        cost(),
        SimConfig {
            block_size: 16,
            kv_blocks: Some(blocks),
            ..SimConfig::default()
        },
    )
    .unwrap();
    (Engine::new(config(budget), cost(), blocks, 16), sim)
}

fn prompt(n: u32, salt: u32) -> Vec<u32> {
    (0..n).map(|i| (i * 31 + salt) % 997 + 1).collect()
}

/// Runs until idle; returns all events and the number of steps.
fn run(e: &mut Engine, b: &mut SimBackend) -> (Vec<Event>, u32) {
    let mut now = Duration::ZERO;
    let mut events = Vec::new();
    let mut steps = 0;
    while let Some(plan) = e.schedule(now) {
        let out = b.execute(&plan).unwrap();
        now += out.elapsed;
        events.extend(e.complete(&out, now).unwrap());
        steps += 1;
        assert!(steps < 100_000, "engine does not terminate");
    }
    (events, steps)
}

/// Runs the next step at `*now` on the simulator and moves `*now` to its
/// end; returns its events.
fn step(e: &mut Engine, b: &mut SimBackend, now: &mut Duration) -> Vec<Event> {
    let plan = e.schedule(*now).expect("a step to run");
    let out = b.execute(&plan).unwrap();
    *now += out.elapsed;
    e.complete(&out, *now).unwrap()
}

/// Sequences that finished on length.
fn finished_by_length(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|ev| {
            matches!(
                ev,
                Event::Finished {
                    reason: FinishReason::Length,
                    ..
                }
            )
        })
        .count()
}

fn outputs(events: &[Event]) -> HashMap<SeqId, Vec<u32>> {
    let mut m: HashMap<SeqId, Vec<u32>> = HashMap::new();
    for ev in events {
        if let Event::Token {
            seq, token, index, ..
        } = ev
        {
            let v = m.entry(*seq).or_default();
            assert_eq!(v.len() as u32, *index);
            v.push(*token);
        }
    }
    m
}

/// Runs `e` with eight decoding sequences, then a 3,000-token prompt;
/// returns the longest step after the prompt arrived and the steps to
/// its first token.
/// (longest step after the prompt arrived, steps to its first token, mean
/// step time over the whole run).
fn long_prompt_among_decodes(e: &mut Engine, b: &mut SimBackend) -> (Duration, u32, Duration) {
    for i in 0..8 {
        e.add(
            Request::new(SeqId(i), prompt(16, i as u32), 400),
            Duration::ZERO,
        )
        .unwrap();
    }
    let mut now = Duration::ZERO;
    for _ in 0..3 {
        step(e, b, &mut now);
    }
    e.add(Request::new(SeqId(99), prompt(3000, 7), 4), now)
        .unwrap();
    let (mut longest, mut steps) = (Duration::ZERO, 0);
    loop {
        let start = now;
        let events = step(e, b, &mut now);
        longest = longest.max(now - start);
        steps += 1;
        if events
            .iter()
            .any(|ev| matches!(ev, Event::Token { seq: SeqId(99), .. }))
        {
            return (longest, steps, now / (steps + 3));
        }
    }
}

#[test]
fn slo_budgeted_steps_keep_mixed_steps_within_the_budget() {
    let c = cost();
    let decodes = StepShape::decodes(9, 9 * 40);
    let mut with_chunk = decodes;
    with_chunk.push(SeqWork {
        new_tokens: 256,
        context: 0,
    });
    let budget = c.step_time(&with_chunk);
    assert!(c.step_time(&decodes) < budget);
    let (mut plain, mut b) = setup(4096, 2048);
    let (unbudgeted_longest, unbudgeted_steps, unbudgeted_mean) =
        long_prompt_among_decodes(&mut plain, &mut b);
    assert!(
        unbudgeted_longest > budget && unbudgeted_mean > budget,
        "{unbudgeted_longest:?} {unbudgeted_mean:?} ≤ {budget:?}"
    );
    let (mut e, mut b) = setup(4096, 2048);
    e.config.step_time_budget = Some(budget);
    let (longest, steps, mean) = long_prompt_among_decodes(&mut e, &mut b);
    // The budget bounds the mean step (TPOT); one step spends at most the bank.
    assert!(mean <= budget, "{mean:?} > {budget:?}");
    assert!(
        longest <= budget.mul_f64(1.0 + MAX_STEP_CREDIT),
        "{longest:?} > {budget:?}"
    );
    // The prompt pays instead: more, smaller chunks.
    assert!(steps > unbudgeted_steps, "{steps} vs {unbudgeted_steps}");
    let chunk = budgeted_chunk(&c, decodes, 0, 2048 - 9, budget);
    assert!((200..=256).contains(&chunk), "{chunk}");
    // Decodes alone over the budget: prefills still get the floor.
    assert_eq!(
        budgeted_chunk(&c, decodes, 0, 2048, Duration::ZERO),
        MIN_BUDGETED_CHUNK
    );
    assert_eq!(budgeted_chunk(&c, decodes, 0, 10, Duration::ZERO), 10);
}

#[test]
fn mixed_steps_get_slack_only_once_decodes_fill_the_budget() {
    let c = cost();
    let decodes = StepShape::decodes(9, 9 * 40);
    let decode = Duration::from_secs_f64(c.step_cost(&decodes).seconds());
    // Under the budget: the budget plus what was banked.
    let budget = decode * 2;
    let limit = mixed_step_limit(&c, decodes, budget, 0.001);
    let want = budget + Duration::from_millis(1);
    assert!(limit.abs_diff(want) < Duration::from_nanos(10), "{limit:?}");
    // Decodes alone over it: a share of the step for prefills.
    let limit = mixed_step_limit(&c, decodes, decode / 2, 0.0);
    let want = decode.mul_f64(1.0 + MIXED_STEP_SLACK);
    assert!(limit.abs_diff(want) < Duration::from_nanos(10), "{limit:?}");
    assert!(budgeted_chunk(&c, decodes, 0, 2048, limit) > MIN_BUDGETED_CHUNK);
}

#[test]
fn chunked_prefill_takes_ceil_n_over_b_steps() {
    let (mut e, mut b) = setup(1024, 64);
    e.add(Request::new(SeqId(1), prompt(1000, 0), 1), Duration::ZERO)
        .unwrap();
    let mut prefill_steps = 0;
    let mut now = Duration::ZERO;
    while let Some(plan) = e.schedule(now) {
        assert!(plan.num_tokens() <= 64);
        prefill_steps += 1;
        let out = b.execute(&plan).unwrap();
        now += out.elapsed;
        e.complete(&out, now).unwrap();
    }
    // 1000 tokens at 64 per step: ceil(1000/64) = 16 steps; the token sampled
    // after the last chunk is the single output, so no decode step follows.
    assert_eq!(prefill_steps, 16);
}

#[test]
fn decodes_go_first_and_share_steps_with_prefill() {
    let (mut e, mut b) = setup(1024, 32);
    e.add(Request::new(SeqId(1), prompt(8, 0), 50), Duration::ZERO)
        .unwrap();
    let mut now = Duration::ZERO;
    step(&mut e, &mut b, &mut now);
    e.add(Request::new(SeqId(2), prompt(100, 1), 5), Duration::ZERO)
        .unwrap();
    let plan = e.schedule(Duration::ZERO).unwrap();
    let seqs = &plan.seqs;
    assert_eq!(seqs[0].seq, SeqId(1));
    assert_eq!(seqs[0].num_new_tokens(), 1);
    assert_eq!(seqs[1].seq, SeqId(2));
    assert_eq!(seqs[1].num_new_tokens(), 31);
}

#[test]
fn kv_pressure_preempts_and_everything_finishes() {
    // 40 blocks of 16 = 640 tokens for 8 sequences wanting 8 * (64 + 100) = 1312.
    let (mut e, mut b) = setup(40, 256);
    for i in 0..8 {
        e.add(
            Request::new(SeqId(i), prompt(64, i as u32 * 7), 100),
            Duration::ZERO,
        )
        .unwrap();
    }
    let (events, _) = run(&mut e, &mut b);
    let preempted = events
        .iter()
        .filter(|ev| matches!(ev, Event::Preempted { .. }))
        .count();
    assert!(preempted > 0, "pool is too small not to preempt");
    let outs = outputs(&events);
    for i in 0..8 {
        assert_eq!(outs[&SeqId(i)].len(), 100, "seq {i}");
    }
    assert_eq!(finished_by_length(&events), 8);
    assert_eq!(e.blocks().num_free_blocks(), 40);
    assert_eq!(e.num_seqs(), 0);
    e.blocks().check_invariants().unwrap();
}

#[test]
fn preemption_does_not_change_generated_tokens() {
    let reqs: Vec<Request> = (0..6)
        .map(|i| Request::new(SeqId(i), prompt(50 + i as u32 * 10, i as u32), 60))
        .collect();
    let alone: HashMap<SeqId, Vec<u32>> = reqs
        .iter()
        .map(|r| {
            let (mut e, mut b) = setup(1024, 512);
            e.add(r.clone(), Duration::ZERO).unwrap();
            let (ev, _) = run(&mut e, &mut b);
            (r.id, outputs(&ev).remove(&r.id).unwrap())
        })
        .collect();
    let (mut e, mut b) = setup(24, 64);
    for r in &reqs {
        e.add(r.clone(), Duration::ZERO).unwrap();
    }
    let (ev, _) = run(&mut e, &mut b);
    assert!(e.preemptions() > 0);
    assert_eq!(outputs(&ev), alone);
}

#[test]
fn prefix_cache_skips_cached_blocks_on_repeat() {
    let (mut e, mut b) = setup(256, 4096);
    let p = prompt(100, 3);
    e.add(Request::new(SeqId(1), p.clone(), 1), Duration::ZERO)
        .unwrap();
    run(&mut e, &mut b);
    e.add(Request::new(SeqId(2), p, 1), Duration::ZERO).unwrap();
    let plan = e.schedule(Duration::ZERO).unwrap();
    let s = &plan.seqs[0];
    // 6 full blocks of 16 = 96 tokens cached; only the last 4 are computed.
    assert_eq!(s.start_pos, 96);
    assert_eq!(s.num_new_tokens(), 4);
    let out = b.execute(&plan).unwrap();
    let ev = e.complete(&out, Duration::ZERO).unwrap();
    match ev.last() {
        Some(Event::Finished { stats, .. }) => assert_eq!(stats.cached_tokens, 96),
        other => panic!("{other:?}"),
    }
}

#[test]
fn prompt_too_long_is_a_typed_error() {
    let mut e = scripted(4, 64);
    let err = e
        .add(Request::new(SeqId(1), prompt(64, 0), 1), Duration::ZERO)
        .unwrap_err();
    assert_eq!(
        err,
        EngineError::PromptTooLong {
            prompt: 64,
            limit: 64
        }
    );
    assert_eq!(
        e.add(Request::new(SeqId(2), vec![], 1), Duration::ZERO),
        Err(EngineError::EmptyPrompt)
    );
}

#[test]
fn max_tokens_clamped_to_fit_alone() {
    let (mut e, mut b) = setup(4, 64);
    e.add(Request::new(SeqId(1), prompt(60, 0), 1000), Duration::ZERO)
        .unwrap();
    let (ev, _) = run(&mut e, &mut b);
    assert_eq!(outputs(&ev)[&SeqId(1)].len(), 4);
}

#[test]
fn stop_conditions() {
    let mut e = scripted(64, 64);
    let mut r = Request::new(SeqId(1), prompt(4, 0), 10);
    r.stop_token_ids = vec![77];
    e.add(r, Duration::ZERO).unwrap();
    e.add(Request::new(SeqId(2), prompt(4, 1), 10), Duration::ZERO)
        .unwrap();
    let mut r = Request::new(SeqId(3), prompt(4, 2), 10);
    r.ignore_eos = true;
    e.add(r, Duration::ZERO).unwrap();
    e.schedule(Duration::ZERO).unwrap();
    // Scripted output: a stop token, EOS (id 0), and EOS that is ignored.
    let out = StepOutput {
        tokens: vec![Some(77), Some(0), Some(0)],
        ..StepOutput::default()
    };
    let ev = e.complete(&out, Duration::ZERO).unwrap();
    let reasons: Vec<_> = ev
        .iter()
        .filter_map(|x| match x {
            Event::Finished { seq, reason, .. } => Some((*seq, *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            (SeqId(1), FinishReason::Stop),
            (SeqId(2), FinishReason::Stop)
        ]
    );
    assert_eq!(e.num_seqs(), 1);
}

#[test]
fn abort_frees_blocks_even_in_flight() {
    let (mut e, mut b) = setup(64, 64);
    e.add(Request::new(SeqId(1), prompt(40, 0), 10), Duration::ZERO)
        .unwrap();
    e.add(Request::new(SeqId(2), prompt(40, 1), 10), Duration::ZERO)
        .unwrap();
    let plan = e.schedule(Duration::ZERO).unwrap();
    let out = b.execute(&plan).unwrap();
    assert_eq!(e.abort(SeqId(1), Duration::ZERO), AbortOutcome::Pending);
    let ev = e.complete(&out, Duration::ZERO).unwrap();
    assert!(ev.iter().any(|x| matches!(
        x,
        Event::Finished {
            seq: SeqId(1),
            reason: FinishReason::Abort,
            ..
        }
    )));
    assert!(matches!(
        e.abort(SeqId(2), Duration::ZERO),
        AbortOutcome::Finished(_)
    ));
    assert_eq!(e.abort(SeqId(3), Duration::ZERO), AbortOutcome::NotFound);
    assert_eq!(e.blocks().num_free_blocks(), 64);
    assert!(!e.has_work());
}

#[test]
fn output_mismatch_is_an_error_and_step_is_retried() {
    let (mut e, mut b) = setup(64, 64);
    e.add(Request::new(SeqId(1), prompt(10, 0), 3), Duration::ZERO)
        .unwrap();
    e.schedule(Duration::ZERO).unwrap();
    let bad = StepOutput::default();
    assert!(matches!(
        e.complete(&bad, Duration::ZERO),
        Err(EngineError::OutputMismatch { .. })
    ));
    let (ev, _) = run(&mut e, &mut b);
    assert_eq!(outputs(&ev)[&SeqId(1)].len(), 3);
}

#[test]
fn drain_returns_continuations() {
    let (mut e, mut b) = setup(64, 64);
    e.add(Request::new(SeqId(1), prompt(10, 0), 5), Duration::ZERO)
        .unwrap();
    let mut now = Duration::ZERO;
    step(&mut e, &mut b, &mut now);
    let drained = e.drain();
    assert_eq!(drained.len(), 1);
    let (req, generated) = &drained[0];
    assert_eq!(*generated, 1);
    assert_eq!(req.prompt.len(), 11);
    assert_eq!(req.max_tokens, 4);
    assert_eq!(e.blocks().num_free_blocks(), 64);
}

#[test]
fn full_batch_delay_waits_for_one_finish_per_sequence_ahead() {
    let cfg = EngineConfig {
        max_num_seqs: 2,
        max_batched_tokens: 256,
        max_model_len: 4096,
        enable_prefix_caching: false,
        step_time_budget: None,
    };
    let (_, mut b) = setup(1024, 256);
    let mut e = Engine::new(cfg, cost(), 1024, 16);
    e.add(Request::new(SeqId(0), prompt(20, 0), 10), Duration::ZERO)
        .unwrap();
    e.add(Request::new(SeqId(1), prompt(20, 1), 30), Duration::ZERO)
        .unwrap();
    let mut now = Duration::ZERO;
    for _ in 0..3 {
        step(&mut e, &mut b, &mut now);
    }
    // Both decoding, 3 tokens out: 7 and 27 left; the batch is full.
    let l = e.load();
    assert_eq!((l.running, l.waiting, l.queued_prefill_tokens), (2, 0, 0));
    let step = cost().decode_step_time(2, l.running_context_tokens);
    assert_eq!(l.predicted_queue_delay, step * 7);
    // One waiting ahead: a newcomer needs both slots to free up.
    e.add(Request::new(SeqId(2), prompt(20, 2), 5), now)
        .unwrap();
    let l = e.load();
    assert!(l.predicted_queue_delay >= step * 27, "{l:?}");
    // As many waiting as slots: a whole round (the longest remaining)
    // before the shortest remaining frees the third slot.
    e.add(Request::new(SeqId(3), prompt(20, 3), 5), now)
        .unwrap();
    assert!(e.load().predicted_queue_delay >= step * (27 + 7));
}

#[test]
fn load_reports_queue_and_predicts_delay() {
    let (mut e, _) = setup(1024, 256);
    assert_eq!(e.load().predicted_queue_delay, Duration::ZERO);
    for i in 0..4 {
        e.add(
            Request::new(SeqId(i), prompt(500, i as u32), 20),
            Duration::ZERO,
        )
        .unwrap();
    }
    let l = e.load();
    assert_eq!(l.waiting, 4);
    assert_eq!(l.queued_prefill_tokens, 2000);
    assert_eq!(l.outstanding_decode_tokens, 80);
    assert!(l.predicted_queue_delay > Duration::ZERO);
}

/// Plain bisection: the reference [`budgeted_chunk`]'s interpolation search must agree with.
fn bisected_chunk(time: impl Fn(u32) -> f64, max: u32, budget: Duration) -> u32 {
    let b = budget.as_secs_f64();
    let floor = MIN_BUDGETED_CHUNK.min(max);
    if max == 0 || time(max) <= b {
        return max;
    }
    if time(floor) > b {
        return floor;
    }
    let (mut lo, mut hi) = (floor, max);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if time(mid) <= b {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// A cost model that counts the steps it prices.
struct Counted<'a> {
    cost: &'a CostModel,
    prices: std::cell::Cell<u32>,
}

impl StepTimer for Counted<'_> {
    fn step_seconds(&self, shape: &StepShape) -> f64 {
        self.prices.set(self.prices.get() + 1);
        self.cost.step_seconds(shape)
    }

    fn chunk_guess(&self, base: &StepShape, context: u32, budget_s: f64) -> Option<f64> {
        self.cost.chunk_guess(base, context, budget_s)
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// The interpolation search finds bisection's boundary for the catalog
    /// cost models (roofline kinks, quadratic attention, split passes) and
    /// for staircase timers on which interpolation guesses badly, in at
    /// most twice bisection's prices.
    #[test]
    fn budgeted_chunk_equals_bisection(
        running in 0u32..256,
        ctx_per_seq in 0u64..20_000,
        context in 0u32..100_000,
        max in 0u32..16_384,
        budget_us in 0u64..400_000,
        device in 0usize..5,
        step in 1u32..700,
        moe in proptest::bool::ANY,
    ) {
        use crate::router::tests::catalog_cost;
        let devices = ["h100-sxm", "l4", "mi300x", "cpu", "a100-80g"];
        let model = if moe { "mixtral-8x7b" } else { "llama-3.1-8b" };
        let cost = catalog_cost(devices[device], model);
        let decodes = StepShape::decodes(running, u64::from(running) * ctx_per_seq);
        let budget = Duration::from_micros(budget_us);
        let with_chunk = |q: u32| {
            let mut s = decodes;
            s.push(SeqWork { new_tokens: q, context });
            s
        };
        let counted = Counted {
            cost: &cost,
            prices: std::cell::Cell::new(0),
        };
        let prices = &counted.prices;
        let got = budgeted_chunk(&counted, decodes, context, max, budget);
        let want = bisected_chunk(|q| cost.step_cost(&with_chunk(q)).seconds(), max, budget);
        proptest::prop_assert_eq!(got, want);
        proptest::prop_assert!(prices.get() <= 2 * 16 + 2, "{} prices", prices.get());
        // The cost model's closed form lands within a token of the answer
        // (so two prices confirm it) for dense models.
        let floor = MIN_BUDGETED_CHUNK.min(max);
        if let Some(g) = cost.largest_chunk_within(&decodes, context, budget.as_secs_f64()) {
            if want > floor && want < max {
                proptest::prop_assert!((g - f64::from(want)).abs() < 1.5, "guess {g}, answer {want}");
                proptest::prop_assert!(prices.get() <= 2, "{} prices", prices.get());
            }
        } else {
            proptest::prop_assert!(moe);
        }

        // A staircase: time jumps every `step` tokens.
        let stairs = |s: &StepShape| {
            let q = s.prefill.tokens.max(s.decode.tokens) as u32;
            f64::from(q / step) * 1e-3
        };
        let staircase = |q: u32| f64::from(q / step) * 1e-3;
        proptest::prop_assert_eq!(
            budgeted_chunk(&stairs, StepShape::default(), 0, max, budget),
            bisected_chunk(staircase, max, budget)
        );
    }
}

#[test]
fn budgeted_chunk_bisects_to_the_largest_chunk_within_budget() {
    // One millisecond per token of the step: a step of 4 decodes and a
    // chunk of q takes (4 + q) ms.
    let per_token = |s: &StepShape| s.total().tokens as f64 / 1000.0;
    let decodes = StepShape::decodes(4, 400);
    let ms = Duration::from_millis;
    assert_eq!(budgeted_chunk(&per_token, decodes, 0, 500, ms(104)), 100);
    assert_eq!(
        budgeted_chunk(&per_token, decodes, 0, 500, ms(105) - ms(1) / 2),
        100
    );
    // Everything fits: the whole `max`.
    assert_eq!(budgeted_chunk(&per_token, decodes, 0, 50, ms(104)), 50);
    // Not even the floor fits: the floor, or `max` when smaller.
    assert_eq!(
        budgeted_chunk(&per_token, decodes, 0, 500, ms(10)),
        MIN_BUDGETED_CHUNK
    );
    assert_eq!(
        budgeted_chunk(&per_token, decodes, 0, 10, Duration::ZERO),
        10
    );
}

#[test]
fn queue_delay_is_priced_by_the_engine_timer() {
    let mut e = scripted(64, 64);
    e.config.max_num_seqs = 2;
    e.add(Request::new(SeqId(1), prompt(4, 0), 10), Duration::ZERO)
        .unwrap();
    e.add(Request::new(SeqId(2), prompt(4, 1), 30), Duration::ZERO)
        .unwrap();
    e.schedule(Duration::ZERO).unwrap();
    let out = StepOutput {
        tokens: vec![Some(5), Some(5)],
        ..StepOutput::default()
    };
    e.complete(&out, Duration::ZERO).unwrap();
    // A full batch with 9 and 29 tokens left: a newcomer waits for the
    // first finish, 9 decode steps of the timer's 1 ms.
    let l = e.load();
    assert_eq!((l.running, l.queued_prefill_tokens), (2, 0));
    assert_eq!(l.predicted_queue_delay, Duration::from_secs_f64(1e-3) * 9);
}

/// Prefill tokens each step planned, by sequence.
fn planned_tokens(e: &mut Engine, b: &mut SimBackend) -> (Vec<Event>, HashMap<SeqId, u32>, u32) {
    let mut now = Duration::ZERO;
    let (mut events, mut computed, mut copies) = (Vec::new(), HashMap::new(), 0);
    while let Some(plan) = e.schedule(now) {
        for s in &plan.seqs {
            *computed.entry(s.seq).or_insert(0) += s.tokens.len() as u32;
        }
        copies += plan.copies.len() as u32;
        let out = b.execute(&plan).unwrap();
        now += out.elapsed;
        events.extend(e.complete(&out, now).unwrap());
        assert!(events.len() < 100_000, "engine does not terminate");
    }
    (events, computed, copies)
}

#[test]
fn parallel_samples_prefill_once_and_share_blocks_by_copy_on_write() {
    for prompt_len in [40u32, 48] {
        let (mut e, mut b) = setup(64, 512);
        let forks = [SeqId(11), SeqId(12), SeqId(13)];
        e.add_parallel(
            Request::new(SeqId(10), prompt(prompt_len, 3), 20),
            &forks,
            Duration::ZERO,
        )
        .unwrap();
        let (events, computed, copies) = planned_tokens(&mut e, &mut b);
        // The prompt is computed once; each fork computes its last token again.
        assert_eq!(computed[&SeqId(10)], prompt_len + 19);
        for f in forks {
            assert_eq!(computed[&f], 1 + 19, "fork {f}");
        }
        // The block holding the last prompt token is written by all four
        // (the forks recompute that token; the parent, when the block is
        // partial, writes its first output there): all but the last writer
        // move to a copy.
        assert_eq!(copies, 3, "prompt {prompt_len}");
        // The sim's tokens depend on the previous token and position only,
        // so every sample repeats the parent's.
        let out = outputs(&events);
        assert_eq!(out.len(), 4);
        for f in forks {
            assert_eq!(out[&f], out[&SeqId(10)]);
        }
        assert_eq!(finished_by_length(&events), 4);
        assert_eq!(e.blocks().num_free_blocks(), 64);
        e.blocks().check_invariants().unwrap();
    }
}

#[test]
fn parallel_samples_survive_preemption_and_aborts() {
    // A pool too small for every sample at once: forks are preempted and
    // recomputed, and still produce every token.
    let (mut e, mut b) = setup(12, 512);
    e.add_parallel(
        Request::new(SeqId(1), prompt(60, 5), 40),
        &[SeqId(2), SeqId(3)],
        Duration::ZERO,
    )
    .unwrap();
    e.add(Request::new(SeqId(4), prompt(30, 9), 30), Duration::ZERO)
        .unwrap();
    let (events, _) = run(&mut e, &mut b);
    let out = outputs(&events);
    for id in [1, 2, 3] {
        assert_eq!(out[&SeqId(id)].len(), 40, "seq {id}");
    }
    assert_eq!(out[&SeqId(4)].len(), 30);
    assert!(e.preemptions() > 0, "the pool should force preemption");
    assert_eq!(e.blocks().num_free_blocks(), 12);
    e.blocks().check_invariants().unwrap();

    // A fork aborted before it starts ends at once and never starts.
    let (mut e, mut b) = setup(64, 512);
    e.add_parallel(
        Request::new(SeqId(1), prompt(100, 5), 4),
        &[SeqId(2), SeqId(3)],
        Duration::ZERO,
    )
    .unwrap();
    assert!(matches!(
        e.abort(SeqId(3), Duration::ZERO),
        AbortOutcome::Finished(Event::Finished {
            reason: FinishReason::Abort,
            ..
        })
    ));
    assert_eq!(e.abort(SeqId(3), Duration::ZERO), AbortOutcome::NotFound);
    let (events, _) = run(&mut e, &mut b);
    let out = outputs(&events);
    assert_eq!(out.len(), 2);
    assert_eq!(out[&SeqId(2)].len(), 4);
    assert_eq!(e.blocks().num_free_blocks(), 64);
}

#[test]
fn parallel_samples_are_checked_and_admitted_with_seats_for_all() {
    let (mut e, mut b) = setup(256, 512);
    let many: Vec<SeqId> = (100..164).map(SeqId).collect();
    assert!(matches!(
        e.add_parallel(
            Request::new(SeqId(1), prompt(8, 1), 4),
            &many,
            Duration::ZERO
        ),
        Err(EngineError::TooManySamples {
            n: 65,
            max_num_seqs: 64
        })
    ));
    assert!(matches!(
        e.add_parallel(
            Request::new(SeqId(1), prompt(8, 1), 4),
            &[SeqId(2), SeqId(2)],
            Duration::ZERO
        ),
        Err(EngineError::DuplicateId(SeqId(2)))
    ));
    // 62 running sequences leave 2 seats: a prompt sampled 3 times waits.
    for i in 0..62 {
        e.add(
            Request::new(SeqId(1000 + i), prompt(4, i as u32), 50),
            Duration::ZERO,
        )
        .unwrap();
    }
    let mut now = Duration::ZERO;
    let mut events = step(&mut e, &mut b, &mut now);
    e.add_parallel(
        Request::new(SeqId(1), prompt(8, 1), 4),
        &[SeqId(2), SeqId(3)],
        now,
    )
    .unwrap();
    events.extend(step(&mut e, &mut b, &mut now));
    assert_eq!(e.load().waiting, 1);
    events.extend(run(&mut e, &mut b).0);
    let out = outputs(&events);
    for id in 1..=3 {
        assert_eq!(out[&SeqId(id)].len(), 4);
    }
}
