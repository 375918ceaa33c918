//! Discrete-event simulation of a fleet on a virtual clock.
//!
//! Each device is a real [`Engine`] over a [`SimBackend`]: when idle with
//! work it plans a step, the backend prices it with the cost model, and the
//! device is busy until `now + elapsed`, when the engine applies the output.
//! Arrivals go through the real router, which sees a [`DeviceView`] of each
//! engine's `load()`. Events are processed in time order; at equal times
//! step completions come before arrivals (freed capacity is visible to the
//! router), and completions break ties by device index, so a run is a pure
//! function of (fleet, workload, router config).
//!
//! # Invariants
//! - every workload request yields exactly one record;
//! - a request is `timeout` if it finished later than `timeout` after its
//!   arrival, or had not finished when the clock passed the last arrival +
//!   `timeout` (the simulation stops there);
//! - prompts are synthetic token ids: unique per request, except a source's
//!   `shared_prefix` leading tokens, which are identical across its requests.
//!
//! # Multi-step decode
//! Devices interact only through the router, at arrivals (views) and
//! finishes (the output-length estimate). So after a step completes, a
//! device whose batch is decoding only runs ahead with
//! [`Engine::run_decode_steps`], up to the next arrival (and the horizon),
//! stopping before any step that would finish, admit or preempt: those go
//! through the ordinary event order. Records, busy times, step counts and
//! the end time are identical to stepping one event at a time
//! (`SimOptions::multi_step = false`, kept for tests). Closed loops never
//! run ahead: any finish may bring the next arrival forward.
//!
//! # Prefix caching
//! Unless the fleet file sets `engine.enable_prefix_caching`, engines cache
//! prefixes only when some request shares a prefix (or the policy is
//! `prefix`): synthetic trace prompts are unique, so the cache could only
//! ever hit on a preempted sequence's own blocks, and its hash-map upkeep
//! is ~30% of simulation time.
//!
//! # Tunables ([`SimOptions`])
//! `router` (policy, SLO), `timeout`, `progress`, `multi_step`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use switchyard_backends::{Backend, SeqId, SimBackend, StepOutput};
use switchyard_scheduler::{Engine, Event, FinishReason, Request};

use crate::fleet::Fleet;
use crate::metrics::{Outcome, RequestRecord};
use crate::progress::Progress;
use crate::router::{DeviceId, DeviceView, PolicyKind, RouteRequest, Router, RouterConfig};
use crate::workload::{prompt_token_ids, ReqSpec, Workload};

/// Simulation settings.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Router configuration (policy, SLO).
    pub router: RouterConfig,
    /// Requests slower than this are timeouts.
    pub timeout: Duration,
    /// Draw a progress bar (when stderr is a terminal).
    pub progress: bool,
    /// Run stretches of decode-only steps in one engine call (open loop
    /// only); the records are identical either way.
    pub multi_step: bool,
    /// SLO-budgeted engine steps: each step's prefill is capped to keep it
    /// within the router SLO's step budget ([`Slo::step_budget`](crate::router::Slo::step_budget)).
    pub budgeted_steps: bool,
}

/// What a simulation produced.
#[derive(Debug, Clone)]
pub struct SimResult {
    /// One record per workload request, by id.
    pub records: Vec<RequestRecord>,
    /// Busy seconds per device.
    pub busy_s: Vec<f64>,
    /// Requests routed per device.
    pub routed: Vec<u64>,
    /// Virtual time at the last event, seconds.
    pub end_s: f64,
    /// Engine steps executed.
    pub steps: u64,
    /// Of `steps`, those run as multi-step decode stretches.
    pub multi_steps: u64,
    /// Preemptions across the fleet.
    pub preemptions: u64,
}

struct Device {
    engine: Engine,
    backend: SimBackend,
    out: StepOutput,
    busy: Duration,
    routed: u64,
    running_step: bool,
}

impl Device {
    /// Plans and prices the next step; returns its end time.
    fn start(&mut self, now: Duration) -> Option<Duration> {
        let plan = self.engine.schedule(now)?;
        // A sim backend only fails on an invalid plan, which the engine never builds.
        let out = self
            .backend
            .execute(&plan)
            .expect("sim backend executes engine plans");
        drop(plan);
        let end = now + out.elapsed;
        self.busy += out.elapsed;
        self.out = out;
        self.running_step = true;
        Some(end)
    }
}

/// Step completions, one slot per device (a device has at most one step in
/// flight). A linear scan over a fleet's few dozen devices beats a binary
/// heap here; ties go to the lowest device index.
struct StepQueue {
    ends: Vec<Duration>,
}

impl StepQueue {
    fn new(devices: usize) -> Self {
        Self {
            ends: vec![Duration::MAX; devices],
        }
    }

    fn push(&mut self, end: Duration, device: u32) {
        self.ends[device as usize] = end;
    }

    /// The earliest completion, if any device is busy.
    fn peek(&self) -> Option<(Duration, u32)> {
        let mut best = (Duration::MAX, 0u32);
        for (i, &t) in self.ends.iter().enumerate() {
            if t < best.0 {
                best = (t, i as u32);
            }
        }
        (best.0 != Duration::MAX).then_some(best)
    }

    fn clear(&mut self, device: u32) {
        self.ends[device as usize] = Duration::MAX;
    }
}

/// Per-request bookkeeping during the run.
#[derive(Clone, Copy, Default)]
struct Live {
    arrival: Duration,
    last: Duration,
}

/// Records a generated token at time `t`.
#[inline]
fn on_token(records: &mut [RequestRecord], live: &mut [Live], t: Duration, seq: SeqId, index: u32) {
    let k = seq.0 as usize;
    let (rec, l) = (&mut records[k], &mut live[k]);
    if index == 0 {
        rec.ttft_s = Some((t - l.arrival).as_secs_f64());
    } else {
        rec.itl_s.push((t - l.last).as_secs_f32());
    }
    l.last = t;
    rec.output_tokens = index + 1;
}

/// Prompt ids from [`prompt_token_ids`] (trace block hashes, else a shared
/// prefix per source, then unique per request), in `1..vocab - 1`.
/// With `hashed` false (no engine caches prefixes) contents cannot matter,
/// so the prompt is one repeated id, written at memset speed. Capacity
/// covers the output too, so generation never reallocates.
fn prompt_ids(r: &ReqSpec, vocab: u32, hashed: bool) -> Vec<u32> {
    let range = u64::from(vocab.max(3) - 2);
    let mut v = Vec::with_capacity(r.prompt_tokens as usize + r.output_tokens as usize);
    if !hashed {
        v.resize(r.prompt_tokens as usize, (r.id % range) as u32 + 1);
        return v;
    }
    prompt_token_ids(r, 1..vocab.max(3) - 1, 0, &mut v);
    v
}

/// Runs `workload` on `fleet` and returns one record per request.
pub fn simulate(fleet: &Fleet, workload: &Workload, opts: &SimOptions) -> SimResult {
    let prefix = opts.router.policy == PolicyKind::Prefix;
    let shared = prefix
        || workload
            .requests
            .iter()
            .any(|r| r.shared_prefix > 0 || r.hash_ids.is_some());
    let hashed = shared || fleet.types.iter().any(|t| t.prefix_caching == Some(true));
    let mut devices: Vec<Device> = fleet
        .devices
        .iter()
        .map(|&t| {
            let ty = &fleet.types[t];
            let mut config = ty.engine;
            config.enable_prefix_caching = ty.prefix_caching.unwrap_or(shared);
            config.step_time_budget = opts.budgeted_steps.then(|| opts.router.slo.step_budget());
            Device {
                engine: Engine::new(config, ty.cost.clone(), ty.kv_blocks, ty.sim.block_size),
                backend: SimBackend::new(ty.cost.clone(), ty.sim)
                    .expect("sized when the fleet was built"),
                out: StepOutput::default(),
                busy: Duration::ZERO,
                routed: 0,
                running_step: false,
            }
        })
        .collect();
    let reqs = &workload.requests;
    let mut records: Vec<RequestRecord> = reqs
        .iter()
        .map(|r| {
            let s = r.arrival.as_secs_f64();
            RequestRecord::pending(r.id, r.source, s, r.prompt_tokens, r.output_tokens)
        })
        .collect();
    let mut live = vec![Live::default(); reqs.len()];
    let mut router = Router::new(opts.router.clone());
    let vocab = fleet
        .types
        .first()
        .map_or(32_000, |t| t.cost.model().vocab_size);
    let mut steps = StepQueue::new(devices.len());
    // Closed loop: times at which a client slot frees up.
    let mut slots: BinaryHeap<Reverse<Duration>> = BinaryHeap::new();
    if let Some(c) = workload.concurrency {
        slots.extend((0..c.max(1)).map(|_| Reverse(Duration::ZERO)));
    }
    let closed_end = workload.duration.map(Duration::from_secs_f64);
    let mut next = 0usize;
    let mut horizon = reqs.last().map_or(Duration::ZERO, |r| r.arrival) + opts.timeout;
    let mut progress = Progress::new("simulating", reqs.len() as u64, opts.progress);
    let (mut finished, mut nsteps, mut last) = (0u64, 0u64, Duration::ZERO);
    let mut multi_steps = 0u64;
    // Closed loop: a finish anywhere can bring the next arrival forward,
    // so no device may run ahead of the others.
    let multi_step = opts.multi_step && workload.concurrency.is_none();
    loop {
        let t_arr = if next >= reqs.len() {
            None
        } else if workload.concurrency.is_some() {
            slots
                .peek()
                .map(|s| s.0)
                .filter(|t| closed_end.is_none_or(|e| *t < e))
        } else {
            Some(reqs[next].arrival)
        };
        let next_step = steps.peek();
        let t_step = next_step.map(|s| s.0);
        let step_first = match (t_step, t_arr) {
            (Some(s), Some(a)) => s <= a,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if step_first {
            let (t, d) = next_step.expect("peeked");
            steps.clear(d);
            if t > horizon {
                break;
            }
            last = last.max(t);
            nsteps += 1;
            let dev = &mut devices[d as usize];
            dev.running_step = false;
            let events = dev
                .engine
                .complete(&dev.out, t)
                .expect("one step in flight");
            for ev in events {
                match ev {
                    Event::Token { seq, index, .. } => {
                        on_token(&mut records, &mut live, t, seq, index);
                    }
                    Event::Finished { seq, reason, stats } => {
                        let k = seq.0 as usize;
                        let (rec, l) = (&mut records[k], &live[k]);
                        rec.e2e_s = Some((t - l.arrival).as_secs_f64());
                        rec.preemptions = stats.preemptions;
                        rec.outcome = if t - l.arrival > opts.timeout {
                            Outcome::Timeout
                        } else if reason == FinishReason::Abort {
                            Outcome::Error
                        } else if rec.output_tokens < rec.max_tokens {
                            Outcome::Truncated
                        } else {
                            Outcome::Ok
                        };
                        router.observe_output(rec.max_tokens, rec.output_tokens);
                        finished += 1;
                        if workload.concurrency.is_some() {
                            slots.push(Reverse(t));
                        }
                    }
                    Event::Preempted { .. } => {}
                }
            }
            let mut resume = t;
            if multi_step {
                // Devices interact only through the router, at arrivals
                // and finishes: a stretch of this device's decode steps
                // that ends by the next arrival and finishes nothing can
                // run ahead of other devices' events.
                let until = reqs.get(next).map_or(horizon, |r| r.arrival.min(horizon));
                let Device {
                    engine, backend, ..
                } = dev;
                let run = engine.run_decode_steps(
                    t,
                    until,
                    |shape| backend.cost_model().step_time(shape),
                    |prev, pos| backend.next_token(prev, pos),
                    |end, ev| {
                        if let Event::Token { seq, index, .. } = ev {
                            on_token(&mut records, &mut live, end, seq, index);
                        }
                    },
                );
                dev.busy += run.busy;
                nsteps += u64::from(run.steps);
                multi_steps += u64::from(run.steps);
                resume = run.end;
                last = last.max(resume);
            }
            if let Some(end) = dev.start(resume) {
                steps.push(end, d);
            }
            if finished & 1023 == 0 {
                progress.set(finished);
            }
            continue;
        }
        // Arrival.
        let t = t_arr.expect("arrival");
        if workload.concurrency.is_some() {
            slots.pop();
            horizon = horizon.max(t + opts.timeout);
        }
        last = last.max(t);
        let r = &reqs[next];
        next += 1;
        let k = r.id as usize;
        records[k].scheduled_s = t.as_secs_f64();
        records[k].sent_s = t.as_secs_f64();
        live[k].arrival = t;
        let prompt = prompt_ids(r, vocab, hashed);
        let views: Vec<DeviceView<'_>> = devices
            .iter()
            .enumerate()
            .map(|(i, dv)| {
                let mut view = DeviceView::from_engine(DeviceId(i as u32), &dv.engine);
                // Every policy prices cached tokens (cost and latency in
                // their prefill predictions), so look them up wherever
                // prompts can share blocks.
                if shared && dv.engine.config().enable_prefix_caching {
                    view.cached_prefix_tokens = dv.engine.blocks().cached_prefix_len(&prompt);
                }
                view
            })
            .collect();
        let decision = router.route(
            &RouteRequest {
                prompt_tokens: r.prompt_tokens,
                max_tokens: r.output_tokens,
            },
            &views,
            t,
        );
        drop(views);
        let d = match decision {
            Ok(dec) => dec.device.0,
            Err(_) => {
                records[k].outcome = Outcome::Rejected;
                finished += 1;
                if workload.concurrency.is_some() {
                    slots.push(Reverse(t));
                }
                continue;
            }
        };
        records[k].device = Some(d);
        records[k]
            .itl_s
            .reserve_exact(r.output_tokens.saturating_sub(1) as usize);
        let dev = &mut devices[d as usize];
        dev.routed += 1;
        let mut req = Request::new(SeqId(r.id), prompt, r.output_tokens);
        req.ignore_eos = true;
        if dev.engine.add(req, t).is_err() {
            // Never on the device: not a timeout when the run ends.
            records[k].device = None;
            records[k].outcome = Outcome::Rejected;
            finished += 1;
            // The client's slot comes back, as after a router rejection.
            if workload.concurrency.is_some() {
                slots.push(Reverse(t));
            }
            continue;
        }
        if !dev.running_step {
            if let Some(end) = dev.start(t) {
                steps.push(end, d);
            }
        }
    }
    progress.finish(finished);
    if workload.concurrency.is_some() {
        // Closed loop: requests never sent before the duration bound are not part of the run.
        records.truncate(next);
    }
    for rec in &mut records {
        if rec.e2e_s.is_none() && rec.device.is_some() {
            rec.outcome = Outcome::Timeout;
        }
    }
    SimResult {
        busy_s: devices.iter().map(|d| d.busy.as_secs_f64()).collect(),
        routed: devices.iter().map(|d| d.routed).collect(),
        preemptions: devices.iter().map(|d| d.engine.preemptions()).sum(),
        records,
        end_s: last.as_secs_f64(),
        steps: nsteps,
        multi_steps,
    }
}

#[cfg(test)]
mod tests;
