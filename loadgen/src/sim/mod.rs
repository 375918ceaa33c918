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
//!   `shared_prefix` leading tokens, which are identical across its requests;
//! - closed loop: a client sends its next request once its last one has
//!   finished or been rejected (by the router or by the engine), so at most
//!   `concurrency` requests are ever in flight.
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
//! `router` (policy, SLO), `timeout`, `progress`, `multi_step`,
//! `budgeted_steps`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use switchyard_backends::{Backend, SeqId, SimBackend, StepOutput};
use switchyard_scheduler::router::{
    DeviceId, DeviceView, PolicyKind, RouteRequest, Router, RouterConfig,
};
use switchyard_scheduler::{Engine, Event, FinishReason, Request};

use crate::fleet::{DeviceType, Fleet};
use crate::metrics::{Outcome, RequestRecord};
use crate::progress::Progress;
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
    /// within the router SLO's step budget ([`Slo::step_budget`](switchyard_scheduler::router::Slo::step_budget)).
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
    /// A device of type `ty`, caching prefixes as the fleet file says, else when prompts are `shared`.
    fn new(ty: &DeviceType, opts: &SimOptions, shared: bool) -> Self {
        let mut config = ty.engine;
        config.enable_prefix_caching = ty.prefix_caching.unwrap_or(shared);
        config.step_time_budget = opts.budgeted_steps.then(|| opts.router.slo.step_budget());
        Self {
            engine: Engine::new(config, ty.cost.clone(), ty.kv_blocks, ty.sim.block_size),
            backend: SimBackend::new(ty.cost.clone(), ty.sim)
                .expect("sized when the fleet was built"),
            out: StepOutput::default(),
            busy: Duration::ZERO,
            routed: 0,
            running_step: false,
        }
    }

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
    Simulation::new(fleet, workload, opts).run()
}

/// Closed loop: the clients, each free to send its next request at some time.
struct ClientSlots {
    /// When each idle client's slot frees up; earliest first.
    free: BinaryHeap<Reverse<Duration>>,
    /// The workload's duration bound: no request is sent at or after it.
    end: Option<Duration>,
}

impl ClientSlots {
    fn new(clients: u32, end: Option<Duration>) -> Self {
        Self {
            free: (0..clients.max(1))
                .map(|_| Reverse(Duration::ZERO))
                .collect(),
            end,
        }
    }

    /// When the next request can be sent, if any client may still send.
    fn next_send(&self) -> Option<Duration> {
        self.free
            .peek()
            .map(|s| s.0)
            .filter(|t| self.end.is_none_or(|e| *t < e))
    }
}

/// The event that comes next.
enum Next {
    /// A device's step ends.
    StepEnd {
        /// When.
        at: Duration,
        /// Which device.
        device: u32,
    },
    /// The next request arrives at this time.
    Arrival(Duration),
}

/// One run in progress: the devices, the records being filled in, and the
/// sources of events (step completions, arrivals, closed-loop clients).
struct Simulation<'a> {
    reqs: &'a [ReqSpec],
    opts: &'a SimOptions,
    devices: Vec<Device>,
    records: Vec<RequestRecord>,
    live: Vec<Live>,
    router: Router,
    steps: StepQueue,
    /// Closed loop only.
    clients: Option<ClientSlots>,
    /// Some prompts share blocks, so routing looks cached prefixes up.
    shared: bool,
    /// Some engine caches prefixes, so prompt contents matter.
    hashed: bool,
    vocab: u32,
    /// Index of the next request to arrive.
    next: usize,
    /// The run stops once the clock passes this: the last arrival (so far,
    /// in a closed loop) plus the timeout.
    horizon: Duration,
    /// Whether decode-only stretches may run ahead (open loop only).
    multi_step: bool,
    progress: Progress,
    /// Requests that finished or were rejected.
    finished: u64,
    nsteps: u64,
    multi_steps: u64,
    /// Time of the latest event.
    last: Duration,
}

impl<'a> Simulation<'a> {
    fn new(fleet: &Fleet, workload: &'a Workload, opts: &'a SimOptions) -> Self {
        let reqs = &workload.requests;
        let shared = opts.router.policy == PolicyKind::Prefix
            || reqs
                .iter()
                .any(|r| r.shared_prefix > 0 || r.hash_ids.is_some());
        let hashed = shared || fleet.types.iter().any(|t| t.prefix_caching == Some(true));
        let devices: Vec<Device> = fleet
            .devices
            .iter()
            .map(|&t| Device::new(&fleet.types[t], opts, shared))
            .collect();
        let records = reqs
            .iter()
            .map(|r| {
                let s = r.arrival.as_secs_f64();
                RequestRecord::pending(r.id, r.source, s, r.prompt_tokens, r.output_tokens)
            })
            .collect();
        let clients = workload
            .concurrency
            .map(|c| ClientSlots::new(c, workload.duration.map(Duration::from_secs_f64)));
        Self {
            reqs,
            opts,
            steps: StepQueue::new(devices.len()),
            devices,
            records,
            live: vec![Live::default(); reqs.len()],
            router: Router::new(opts.router.clone()),
            // A finish anywhere can bring a closed loop's next arrival
            // forward, so no device may run ahead of the others.
            multi_step: opts.multi_step && clients.is_none(),
            clients,
            shared,
            hashed,
            vocab: fleet
                .types
                .first()
                .map_or(32_000, |t| t.cost.model().vocab_size),
            next: 0,
            horizon: reqs.last().map_or(Duration::ZERO, |r| r.arrival) + opts.timeout,
            progress: Progress::new("simulating", reqs.len() as u64, opts.progress),
            finished: 0,
            nsteps: 0,
            multi_steps: 0,
            last: Duration::ZERO,
        }
    }

    /// Processes events in order until none is left or the clock passes the horizon.
    fn run(mut self) -> SimResult {
        while let Some(next) = self.next_event() {
            match next {
                Next::StepEnd { at, .. } if at > self.horizon => break,
                Next::StepEnd { at, device } => self.on_step_end(at, device),
                Next::Arrival(t) => self.on_arrival(t),
            }
        }
        self.into_result()
    }

    /// The next event; a step ending at the same time as an arrival comes first.
    fn next_event(&self) -> Option<Next> {
        let arrival = if self.next >= self.reqs.len() {
            None
        } else if let Some(clients) = &self.clients {
            clients.next_send()
        } else {
            Some(self.reqs[self.next].arrival)
        };
        match (self.steps.peek(), arrival) {
            (Some((at, device)), a) if a.is_none_or(|a| at <= a) => {
                Some(Next::StepEnd { at, device })
            }
            (_, a) => a.map(Next::Arrival),
        }
    }

    /// Device `d`'s step ended at `t`: applies its output, runs decode-only
    /// steps ahead where allowed, and starts the next step.
    fn on_step_end(&mut self, t: Duration, d: u32) {
        self.steps.clear(d);
        self.last = self.last.max(t);
        self.nsteps += 1;
        let dev = &mut self.devices[d as usize];
        dev.running_step = false;
        let events = dev
            .engine
            .complete(&dev.out, t)
            .expect("one step in flight");
        for ev in events {
            match ev {
                Event::Token { seq, index, .. } => {
                    on_token(&mut self.records, &mut self.live, t, seq, index);
                }
                Event::Finished { seq, reason, stats } => {
                    self.on_finished(t, seq, reason, stats.preemptions);
                }
                Event::Preempted { .. } => {}
            }
        }
        let resume = if self.multi_step {
            self.run_ahead(t, d)
        } else {
            t
        };
        self.start_step(d, resume);
        if self.finished & 1023 == 0 {
            self.progress.set(self.finished);
        }
    }

    /// Completes the record of `seq`, which finished at `t`.
    fn on_finished(&mut self, t: Duration, seq: SeqId, reason: FinishReason, preemptions: u32) {
        let k = seq.0 as usize;
        let (rec, arrival) = (&mut self.records[k], self.live[k].arrival);
        rec.e2e_s = Some((t - arrival).as_secs_f64());
        rec.preemptions = preemptions;
        rec.outcome = if t - arrival > self.opts.timeout {
            Outcome::Timeout
        } else if reason == FinishReason::Abort {
            Outcome::Error
        } else if rec.output_tokens < rec.max_tokens {
            Outcome::Truncated
        } else {
            Outcome::Ok
        };
        self.router
            .observe_output(rec.max_tokens, rec.output_tokens);
        self.release(t);
    }

    /// Runs device `d`'s decode-only steps from `t` up to the next arrival;
    /// returns when the device is free again.
    fn run_ahead(&mut self, t: Duration, d: u32) -> Duration {
        // Devices interact only through the router, at arrivals and
        // finishes: a stretch of this device's decode steps that ends by
        // the next arrival and finishes nothing can run ahead of other
        // devices' events.
        let until = self
            .reqs
            .get(self.next)
            .map_or(self.horizon, |r| r.arrival.min(self.horizon));
        let Device {
            engine,
            backend,
            busy,
            ..
        } = &mut self.devices[d as usize];
        let (records, live) = (&mut self.records, &mut self.live);
        let run = engine.run_decode_steps(
            t,
            until,
            |shape| backend.cost_model().step_time(shape),
            |prev, pos| backend.next_token(prev, pos),
            |end, ev| {
                if let Event::Token { seq, index, .. } = ev {
                    on_token(records, live, end, seq, index);
                }
            },
        );
        *busy += run.busy;
        self.nsteps += u64::from(run.steps);
        self.multi_steps += u64::from(run.steps);
        self.last = self.last.max(run.end);
        run.end
    }

    /// Starts device `d`'s next step at `t`, if it has work.
    fn start_step(&mut self, d: u32, t: Duration) {
        if let Some(end) = self.devices[d as usize].start(t) {
            self.steps.push(end, d);
        }
    }

    /// The next request arrives at `t`: routes it and hands it to its device.
    fn on_arrival(&mut self, t: Duration) {
        if let Some(clients) = &mut self.clients {
            clients.free.pop();
            self.horizon = self.horizon.max(t + self.opts.timeout);
        }
        self.last = self.last.max(t);
        let reqs = self.reqs;
        let r = &reqs[self.next];
        self.next += 1;
        let k = r.id as usize;
        self.records[k].scheduled_s = t.as_secs_f64();
        self.records[k].sent_s = t.as_secs_f64();
        self.live[k].arrival = t;
        let prompt = prompt_ids(r, self.vocab, self.hashed);
        let Some(d) = self.route(r, &prompt, t) else {
            self.reject(k, t);
            return;
        };
        self.records[k].device = Some(d);
        self.records[k]
            .itl_s
            .reserve_exact(r.output_tokens.saturating_sub(1) as usize);
        let dev = &mut self.devices[d as usize];
        dev.routed += 1;
        let mut req = Request::new(SeqId(r.id), prompt, r.output_tokens);
        req.ignore_eos = true;
        if dev.engine.add(req, t).is_err() {
            self.reject(k, t);
            return;
        }
        if !self.devices[d as usize].running_step {
            self.start_step(d, t);
        }
    }

    /// The router's device for `r`, or `None` if it rejects the request.
    fn route(&mut self, r: &ReqSpec, prompt: &[u32], t: Duration) -> Option<u32> {
        let views: Vec<DeviceView<'_>> = self
            .devices
            .iter()
            .enumerate()
            .map(|(i, dv)| {
                let mut view = DeviceView::from_engine(DeviceId(i as u32), &dv.engine);
                // Every policy prices cached tokens (cost and latency in
                // their prefill predictions), so look them up wherever
                // prompts can share blocks.
                if self.shared && dv.engine.config().enable_prefix_caching {
                    view.cached_prefix_tokens = dv.engine.blocks().cached_prefix_len(prompt);
                }
                view
            })
            .collect();
        let request = RouteRequest {
            prompt_tokens: r.prompt_tokens,
            max_tokens: r.output_tokens,
        };
        let decision = self.router.route(&request, &views, t);
        decision.ok().map(|dec| dec.device.0)
    }

    /// Request `k` was rejected at `t`, by the router or by its device's
    /// engine: it never ran, so it is not a timeout when the run ends.
    fn reject(&mut self, k: usize, t: Duration) {
        self.records[k].device = None;
        self.records[k].outcome = Outcome::Rejected;
        self.release(t);
    }

    /// A request left the fleet at `t` (finished or rejected); in a closed
    /// loop its client may send the next one from then on.
    fn release(&mut self, t: Duration) {
        self.finished += 1;
        if let Some(clients) = &mut self.clients {
            clients.free.push(Reverse(t));
        }
    }

    /// Marks requests still on a device as timeouts and collects the result.
    fn into_result(mut self) -> SimResult {
        self.progress.finish(self.finished);
        if self.clients.is_some() {
            // Closed loop: requests never sent before the duration bound are not part of the run.
            self.records.truncate(self.next);
        }
        for rec in &mut self.records {
            if rec.e2e_s.is_none() && rec.device.is_some() {
                rec.outcome = Outcome::Timeout;
            }
        }
        let devices = &self.devices;
        SimResult {
            busy_s: devices.iter().map(|d| d.busy.as_secs_f64()).collect(),
            routed: devices.iter().map(|d| d.routed).collect(),
            preemptions: devices.iter().map(|d| d.engine.preemptions()).sum(),
            records: self.records,
            end_s: self.last.as_secs_f64(),
            steps: self.nsteps,
            multi_steps: self.multi_steps,
        }
    }
}

#[cfg(test)]
mod tests;
