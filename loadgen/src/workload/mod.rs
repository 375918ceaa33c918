//! Workloads: what requests arrive, when, and with which shapes.
//!
//! # Grammar (`--workload`, repeatable)
//! - `fixed:prompt=LEN,output=LEN[,prefix=N]` — one shape; `LEN` is `N`,
//!   `uniform:A:B` or `lognormal:MEDIAN:SIGMA` (see [`shapes`]).
//! - `mix:NAME=WEIGHT,...` — a weighted combination of named mixes
//!   ([`shapes::NAMED_MIXES`]).
//! - `trace:PATH` — trace replay ([`trace`]): Azure CSV, or Mooncake JSON
//!   lines when `PATH` ends in `.jsonl` (with per-block prompt hashes, so
//!   replays reproduce the trace's prefix reuse).
//!
//! # Arrivals
//! Synthetic workloads arrive by [`Arrival`] (Poisson, gamma with a CV,
//! constant) at `rate`; with several synthetic workloads each gets
//! `rate / k`. Traces keep their own timestamps, divided by `speedup`; when
//! every workload is a trace and `rate` is set, all traces are time-scaled
//! by one common factor so the merged stream has that mean rate (the mix
//! ratio is kept). A trace window is `[start, start + duration·speedup)` in
//! trace time. With `concurrency` (closed loop) arrival times are 0 and the
//! driver sends the next request when one finishes.
//!
//! # Bounds
//! Every workload is finite: `requests` caps the merged count, `duration`
//! caps arrival times; a synthetic workload with neither gets
//! [`DEFAULT_REQUESTS`]. Everything is seeded by `seed`.
//!
//! # Prompt contents
//! [`prompt_token_ids`] is the one definition of a request's prompt, used
//! by the simulator and the live driver alike, so both present the same
//! sharing to prefix caches and prefix-aware routing.

pub mod shapes;
pub mod trace;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::LoadgenError;
use crate::rng::Rng;
use shapes::{named_mix, Length, ShapeDist, NAMED_MIXES};
use switchyard_backends::hash::mix64;
use trace::{TraceRow, HASH_BLOCK_TOKENS};

/// Requests generated for a synthetic workload with no count or time bound.
pub const DEFAULT_REQUESTS: u64 = 1000;

/// One request to send: when, and its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ReqSpec {
    /// Index in the merged workload (0-based, in arrival order).
    pub id: u64,
    /// Scheduled send time from the start of the run.
    pub arrival: Duration,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Output tokens to force.
    pub output_tokens: u32,
    /// Leading prompt tokens shared by every request of the same source.
    pub shared_prefix: u32,
    /// Which `--workload` it came from (index).
    pub source: u16,
    /// Hashes of the prompt's 512-token blocks (Mooncake traces); shared, so cloning stays cheap.
    pub hash_ids: Option<Arc<[u64]>>,
}

/// Appends `r`'s prompt token ids, each in `ids`, to `out`.
///
/// Token `i` of a hashed request lies in block `b = i / 512`; while `b` is
/// covered by `hash_ids` the token is a pure function of `(hash_ids[b],
/// i % 512)` (and `seed`), so requests with equal leading ids have equal
/// leading tokens whatever their source or id. Other tokens follow the
/// synthetic scheme: the first `shared_prefix` are common to the source,
/// the rest unique to the request. Appending lets a caller reserve room for
/// the output too.
pub fn prompt_token_ids(r: &ReqSpec, ids: Range<u32>, seed: u64, out: &mut Vec<u32>) {
    let lo = ids.start;
    let span = u64::from(ids.end.saturating_sub(lo).max(1));
    let tok = move |key: u64, i: u32| (mix64(key ^ u64::from(i)) % span) as u32 + lo;
    // Seed 0 (the simulator's) adds no salt, so synthetic prompts keep their ids.
    let salt = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let n = r.prompt_tokens;
    out.reserve(n as usize);
    let mut covered = 0u32;
    for &h in r.hash_ids.as_deref().unwrap_or(&[]) {
        if covered >= n {
            break;
        }
        let len = (n - covered).min(HASH_BLOCK_TOKENS);
        let key = mix64(0xB10C_4A54 ^ mix64(h) ^ salt);
        out.extend((0..len).map(|j| tok(key, j)));
        covered += len;
    }
    let prefix_key = mix64(0xA11CE ^ u64::from(r.source) ^ salt);
    let own_key = mix64(0xB0B ^ r.id.wrapping_mul(0x9E37_79B9) ^ salt);
    out.extend((covered..n).map(|i| {
        let key = if i < r.shared_prefix {
            prefix_key
        } else {
            own_key
        };
        tok(key, i)
    }));
}

/// A parsed `--workload` value.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkloadSpec {
    /// One shape distribution, with an optional shared prefix length.
    Shape {
        /// Shape.
        dist: ShapeDist,
        /// Shared prompt prefix tokens.
        prefix: u32,
    },
    /// Weighted named mixes.
    Mix(Vec<(String, f64, ShapeDist)>),
    /// A trace file.
    Trace(PathBuf),
}

impl std::str::FromStr for WorkloadSpec {
    type Err = LoadgenError;

    fn from_str(s: &str) -> Result<Self, LoadgenError> {
        let err = |r: String| LoadgenError::spec("workload spec", s, r);
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| err("expected fixed:..., mix:... or trace:PATH".into()))?;
        match kind {
            "trace" if !rest.is_empty() => Ok(WorkloadSpec::Trace(PathBuf::from(rest))),
            "fixed" => {
                let (mut prompt, mut output, mut prefix) = (None, None, 0);
                for kv in rest.split(',') {
                    let (k, v) = kv
                        .split_once('=')
                        .ok_or_else(|| err(format!("`{kv}` is not KEY=VALUE")))?;
                    match k.trim() {
                        "prompt" => prompt = Some(Length::parse(v, "prompt")?),
                        "output" => output = Some(Length::parse(v, "output")?),
                        "prefix" => {
                            prefix = v
                                .trim()
                                .parse()
                                .map_err(|_| err(format!("prefix: `{v}` is not a token count")))?
                        }
                        other => return Err(err(format!("unknown field `{other}`"))),
                    }
                }
                Ok(WorkloadSpec::Shape {
                    dist: ShapeDist {
                        prompt: prompt.ok_or_else(|| err("missing field `prompt`".into()))?,
                        output: output.ok_or_else(|| err("missing field `output`".into()))?,
                    },
                    prefix,
                })
            }
            "mix" => {
                let mut parts = Vec::new();
                for kv in rest.split(',') {
                    let (name, w) = kv.split_once('=').unwrap_or((kv, "1"));
                    let name = name.trim();
                    let dist = named_mix(name).ok_or_else(|| {
                        err(format!(
                            "unknown mix `{name}` (known: {})",
                            NAMED_MIXES.join(", ")
                        ))
                    })?;
                    let w: f64 = w
                        .trim()
                        .parse()
                        .ok()
                        .filter(|w: &f64| w.is_finite() && *w > 0.0)
                        .ok_or_else(|| err(format!("weight of `{name}`: `{w}` is not positive")))?;
                    parts.push((name.to_string(), w, dist));
                }
                Ok(WorkloadSpec::Mix(parts))
            }
            _ => Err(err(format!(
                "unknown kind `{kind}` (expected fixed, mix or trace)"
            ))),
        }
    }
}

/// An open-loop arrival process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arrival {
    /// Exponential gaps.
    Poisson,
    /// Gamma gaps with this coefficient of variation (CV > 1 is bursty).
    Gamma {
        /// Coefficient of variation of the gaps.
        cv: f64,
    },
    /// Equal gaps.
    Constant,
}

impl std::str::FromStr for Arrival {
    type Err = LoadgenError;

    fn from_str(s: &str) -> Result<Self, LoadgenError> {
        let err = |r: &str| LoadgenError::spec("arrival process", s, r);
        match s {
            "poisson" => Ok(Arrival::Poisson),
            "constant" => Ok(Arrival::Constant),
            _ => {
                let cv = s
                    .strip_prefix("gamma:cv=")
                    .or_else(|| s.strip_prefix("gamma:"))
                    .ok_or_else(|| err("expected poisson, constant or gamma:cv=X"))?;
                let cv: f64 = cv
                    .parse()
                    .ok()
                    .filter(|c: &f64| c.is_finite() && *c > 0.0)
                    .ok_or_else(|| err("cv must be a positive number"))?;
                Ok(Arrival::Gamma { cv })
            }
        }
    }
}

impl Arrival {
    /// The next gap at `rate` requests per second.
    pub fn gap(&self, rate: f64, rng: &mut Rng) -> f64 {
        match *self {
            Arrival::Poisson => rng.exponential(rate),
            Arrival::Constant => 1.0 / rate,
            Arrival::Gamma { cv } => {
                let k = 1.0 / (cv * cv);
                rng.gamma(k, 1.0 / (rate * k))
            }
        }
    }
}

/// How to turn specs into a request list.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadOptions {
    /// Open-loop request rate, requests per second.
    pub rate: Option<f64>,
    /// Arrival process of synthetic workloads.
    pub arrival: Arrival,
    /// Closed loop: this many requests in flight.
    pub concurrency: Option<u32>,
    /// Latest arrival time, seconds.
    pub duration: Option<f64>,
    /// Most requests.
    pub requests: Option<u64>,
    /// Seed of every random draw.
    pub seed: u64,
    /// Trace time compression.
    pub speedup: f64,
    /// Trace window start, seconds of trace time.
    pub start: f64,
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        Self {
            rate: None,
            arrival: Arrival::Poisson,
            concurrency: None,
            duration: None,
            requests: None,
            seed: 0,
            speedup: 1.0,
            start: 0.0,
        }
    }
}

/// A finite, merged request list.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Workload {
    /// Requests in arrival order (ids are positions).
    pub requests: Vec<ReqSpec>,
    /// Closed-loop concurrency, when the driver should ignore arrival times.
    pub concurrency: Option<u32>,
    /// Closed-loop time bound, seconds.
    pub duration: Option<f64>,
    /// Source labels, indexed by `ReqSpec::source`.
    pub sources: Vec<String>,
}

impl Workload {
    /// Total output tokens requested.
    pub fn output_tokens(&self) -> u64 {
        self.requests
            .iter()
            .map(|r| u64::from(r.output_tokens))
            .sum()
    }

    /// Mean offered rate, requests per second (0 for closed loop or < 2 requests).
    pub fn offered_rate(&self) -> f64 {
        match (self.requests.first(), self.requests.last()) {
            (Some(a), Some(b)) if b.arrival > a.arrival && self.concurrency.is_none() => {
                (self.requests.len() - 1) as f64 / (b.arrival - a.arrival).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

/// Parses every spec and reads every trace once, so sweeps can rebuild cheaply.
#[derive(Debug, Clone)]
pub struct WorkloadSource {
    specs: Vec<(String, WorkloadSpec)>,
    traces: Vec<Option<Vec<TraceRow>>>,
}

impl WorkloadSource {
    /// Parses specs and loads traces.
    pub fn new(specs: &[String]) -> Result<Self, LoadgenError> {
        if specs.is_empty() {
            return Err(LoadgenError::spec(
                "workload spec",
                "",
                "at least one --workload is required",
            ));
        }
        let mut parsed = Vec::new();
        let mut traces = Vec::new();
        for s in specs {
            let spec: WorkloadSpec = s.parse()?;
            traces.push(match &spec {
                WorkloadSpec::Trace(p) => Some(trace::read_trace(p)?),
                _ => None,
            });
            parsed.push((s.clone(), spec));
        }
        Ok(Self {
            specs: parsed,
            traces,
        })
    }

    /// Builds the merged workload.
    pub fn build(&self, o: &WorkloadOptions) -> Result<Workload, LoadgenError> {
        if !(o.speedup.is_finite() && o.speedup > 0.0) {
            return Err(LoadgenError::spec(
                "speedup",
                &o.speedup.to_string(),
                "must be positive",
            ));
        }
        if let Some(r) = o.rate.filter(|r| !(r.is_finite() && *r > 0.0)) {
            return Err(LoadgenError::spec(
                "rate",
                &r.to_string(),
                "must be positive",
            ));
        }
        let closed = o.concurrency.is_some();
        let synthetic = self.traces.iter().filter(|t| t.is_none()).count();
        if synthetic > 0 && !closed && o.rate.is_none() {
            return Err(LoadgenError::spec(
                "workload spec",
                &self.specs[0].0,
                "synthetic workloads need --rate, --sweep or --concurrency",
            ));
        }
        let trace_scale = self.trace_scale(o);
        let mut all: Vec<ReqSpec> = Vec::new();
        let cap = o.requests.unwrap_or(if o.duration.is_none() {
            DEFAULT_REQUESTS
        } else {
            u64::MAX
        });
        for (i, ((_, spec), tr)) in self.specs.iter().zip(&self.traces).enumerate() {
            let mut rng = Rng::new(o.seed ^ switchyard_backends::hash::mix64(i as u64 + 1));
            let src = i as u16;
            match (spec, tr) {
                (_, Some(rows)) => {
                    let end = o.duration.map(|d| o.start + d * o.speedup);
                    for r in rows
                        .iter()
                        .filter(|r| r.t >= o.start && end.is_none_or(|e| r.t < e))
                    {
                        // Closed loop keeps trace time only as the merge order.
                        let t = if closed {
                            r.t - o.start
                        } else {
                            (r.t - o.start) / o.speedup * trace_scale
                        };
                        all.push(ReqSpec {
                            hash_ids: r.hash_ids.clone(),
                            ..req(t, r.prompt_tokens, r.output_tokens, 0, src)
                        });
                    }
                }
                (WorkloadSpec::Shape { dist, prefix }, None) => gen_synthetic(
                    &mut all,
                    o,
                    synthetic,
                    cap,
                    &mut rng,
                    |rng| (dist.prompt.sample(rng), dist.output.sample(rng), *prefix),
                    src,
                ),
                (WorkloadSpec::Mix(parts), None) => {
                    let total: f64 = parts.iter().map(|p| p.1).sum();
                    gen_synthetic(
                        &mut all,
                        o,
                        synthetic,
                        cap,
                        &mut rng,
                        |rng| {
                            let mut x = rng.f64() * total;
                            let mut pick = &parts[parts.len() - 1].2;
                            for (_, w, d) in parts {
                                if x < *w {
                                    pick = d;
                                    break;
                                }
                                x -= w;
                            }
                            (pick.prompt.sample(rng), pick.output.sample(rng), 0)
                        },
                        src,
                    )
                }
                (WorkloadSpec::Trace(_), None) => unreachable!("traces are loaded in new()"),
            }
        }
        all.sort_by(|a, b| a.arrival.cmp(&b.arrival).then(a.source.cmp(&b.source)));
        if let Some(n) = o.requests {
            all.truncate(n.min(usize::MAX as u64) as usize);
        }
        if closed {
            for r in &mut all {
                r.arrival = Duration::ZERO;
            }
        }
        for (k, r) in all.iter_mut().enumerate() {
            r.id = k as u64;
        }
        Ok(Workload {
            requests: all,
            concurrency: o.concurrency,
            duration: if closed { o.duration } else { None },
            sources: self.specs.iter().map(|s| s.0.clone()).collect(),
        })
    }

    /// Factor applied to trace times so an all-trace workload has mean rate `rate`.
    fn trace_scale(&self, o: &WorkloadOptions) -> f64 {
        let Some(rate) = o.rate else { return 1.0 };
        if self.traces.iter().any(|t| t.is_none()) {
            return 1.0;
        }
        let (mut n, mut span) = (0usize, 0.0f64);
        let end = o.duration.map(|d| o.start + d * o.speedup);
        for rows in self.traces.iter().flatten() {
            let w: Vec<f64> = rows
                .iter()
                .map(|r| r.t)
                .filter(|t| *t >= o.start && end.is_none_or(|e| *t < e))
                .collect();
            n += w.len();
            if let (Some(a), Some(b)) = (w.first(), w.last()) {
                span = span.max(b - a);
            }
        }
        if n < 2 || span <= 0.0 {
            return 1.0;
        }
        let natural = n as f64 / (span / o.speedup);
        natural / rate
    }

    /// Spec strings as given.
    pub fn labels(&self) -> Vec<String> {
        self.specs.iter().map(|s| s.0.clone()).collect()
    }

    /// Whether any spec is a trace.
    pub fn has_trace(&self) -> bool {
        self.traces.iter().any(|t| t.is_some())
    }
}

fn req(t: f64, prompt: u32, output: u32, prefix: u32, source: u16) -> ReqSpec {
    ReqSpec {
        id: 0,
        arrival: Duration::from_secs_f64(t.max(0.0)),
        prompt_tokens: prompt.max(1),
        output_tokens: output.max(1),
        shared_prefix: prefix.min(prompt.saturating_sub(1)),
        source,
        hash_ids: None,
    }
}

fn gen_synthetic(
    out: &mut Vec<ReqSpec>,
    o: &WorkloadOptions,
    k: usize,
    cap: u64,
    rng: &mut Rng,
    mut shape: impl FnMut(&mut Rng) -> (u32, u32, u32),
    src: u16,
) {
    let rate = o.rate.unwrap_or(1.0) / k as f64;
    let mut t = 0.0;
    let mut n = 0u64;
    // In closed loop the count bound is per workload; open loop truncates after merging.
    while n < cap {
        if o.concurrency.is_none() {
            t += o.arrival.gap(rate, rng);
            if o.duration.is_some_and(|d| t >= d) {
                break;
            }
        } else if o.requests.is_none() && n >= DEFAULT_REQUESTS * 100 {
            break;
        }
        let (p, q, prefix) = shape(rng);
        // Closed loop: the index is the merge key, so workloads interleave.
        let key = if o.concurrency.is_some() { n as f64 } else { t };
        out.push(req(key, p, q, prefix, src));
        n += 1;
    }
}

/// Reads a trace (re-exported for callers that only need rows).
pub fn load_trace(path: &Path) -> Result<Vec<TraceRow>, LoadgenError> {
    trace::read_trace(path)
}

#[cfg(test)]
mod tests;
