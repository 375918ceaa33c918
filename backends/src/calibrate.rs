//! Calibration: measure a backend's step times over a sweep of shapes and
//! fit the cost model's [`Calibration`] coefficients to them.
//!
//! # Entry points
//! - [`sweep`]: drives any `&mut dyn Backend` with synthetic step plans —
//!   single prefill chunks (size × context), decode batches (batch ×
//!   context) and mixed steps (a decode batch plus one chunk) — sized to the
//!   backend's KV pool, and returns one [`Sample`] per shape: its
//!   [`StepShape`] and the median measured seconds over the repetitions.
//! - [`fit`]: fits `compute_efficiency`, `bandwidth_efficiency`,
//!   `kv_bandwidth_efficiency`, `step_overhead_us`,
//!   `per_sequence_overhead_us`, `kv_overhead_us_per_mb` and
//!   `split_mixed_steps` of a [`DeviceProfile`] for a [`ModelSpec`] so that
//!   `CostModel::step_cost(shape).seconds()` matches the samples, and fills
//!   `fit_median_rel_error` / `fit_max_rel_error`.
//! - [`profile`]: both, for `switchyard profile`.
//!
//! # Fit
//! Minimises Σ ((predicted − measured) / measured)², i.e. relative error.
//! With the efficiencies fixed, a prediction is linear in the three
//! overheads (per pass, per sequence, per KV MB), so they are solved
//! exactly (non-negative least squares: every subset of the three by its
//! normal equations, the best non-negative one kept). The efficiencies,
//! kept in [`MIN_EFFICIENCY`, 1], are searched in log space as
//! `(ln compute, ln bandwidth, ln(kv / bandwidth))`: a coarse grid, grids
//! zooming in on the best point, then Nelder–Mead to polish. A vanishing
//! penalty on `ln(kv / bandwidth)` settles the KV efficiency at the
//! bandwidth efficiency (and leaves it out of the profile) when no sample
//! tells them apart. If the sweep has mixed steps, the whole search runs
//! twice, with mixed steps as one pass and as two, and the better fit sets
//! `split_mixed_steps` (a tie keeps one pass).
//!
//! # Limits (measured on the ONNX backend)
//! On the ONNX backend a cached KV byte is moved several times per step:
//! gathered from the pool into the graph's inputs on the host (before the
//! graph runs, so it overlaps with nothing: `kv_overhead_us_per_mb`, fitted
//! at 250–300 µs/MB, about 3.5 GB/s, for both generated models), then
//! copied past → present by the graph's `Concat` and read by QKᵀ and PV
//! (`kv_bandwidth_efficiency`, fitted 4–18× below `bandwidth_efficiency`).
//! A mixed step runs as two graph runs (the batch is padded to its longest
//! sequence, so decodes and a chunk are grouped apart), each with its own
//! weight stream and ~20 ms fixed cost on the ~100 M `bench` model:
//! `split_mixed_steps` is fitted true. With one shared efficiency, one pass
//! and no KV overhead, the same sweeps fitted at 9.6–10.6 % median and
//! 55 % max (long-context decode under-predicted by half, mixed steps by a
//! third); with this model, 1.9–4.4 % median and 6–14 % max over three
//! runs (default sweep, nine repetitions, minimum, on a shared two-core
//! host), 2.9 % median with 25 repetitions. The 2-layer `tiny` model, whose
//! steps take 0.2–3 ms, fits at 4.6–6.7 % median with nine repetitions and
//! 1.7–3.4 % with 25. The same shape measured in two runs differs by 3.4 %
//! (median) and up to 13 % on that host, so most of what remains is timing
//! noise. What structure remains: prefill over a long context grows
//! faster than its attention FLOPs at `compute_efficiency` (the graph
//! materialises the attention scores); a separate attention efficiency
//! gained at most half a point in offline fits, so it is not modelled.
//!
//! # Invariants
//! Synthetic plans use token ids below [`SweepConfig::token_limit`] and
//! distinct blocks of the pool; a shape that does not fit the pool or
//! `max_context` is skipped, never truncated. Contents of the KV cache are
//! whatever the pool holds: timing does not depend on them.

use crate::contract::{Backend, BlockId, SamplingParams, ScheduledSeq, SeqId, StepPlan};
use crate::cost::{CostModel, PassCost, SeqWork, StepShape};
use crate::error::BackendError;
use crate::profile::{Calibration, DeviceProfile, ModelSpec};
use crate::sampling::SplitMix64;

/// Smallest efficiency the fit will report.
pub const MIN_EFFICIENCY: f64 = 1e-6;

/// Weight of the tie-breaking penalty `ln(kv_eff / bandwidth_eff)²` added to
/// the sum of squared relative errors: far below any measurement's error.
const KV_RATIO_PENALTY: f64 = 1e-12;

/// Why calibration failed.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    /// A step of the sweep failed on the backend.
    #[error("sweep step ({point}) failed: {source}")]
    Step {
        /// The shape being measured.
        point: SweepPoint,
        /// What the backend said.
        source: BackendError,
    },
    /// No shape of the sweep fits the backend's KV pool and context limit.
    #[error("no sweep shape fits {blocks} KV blocks of {block_size} tokens within {max_context} tokens of context")]
    NothingFits {
        /// Blocks in the pool.
        blocks: u32,
        /// Tokens per block.
        block_size: u32,
        /// Context limit.
        max_context: u32,
    },
    /// Too few samples, or samples with non-positive times.
    #[error("cannot fit: {0}")]
    BadSamples(String),
}

/// What a sweep measures.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepConfig {
    /// Prefill chunk sizes, tokens.
    pub prefill_chunks: Vec<u32>,
    /// Decode batch sizes, sequences.
    pub decode_batches: Vec<u32>,
    /// Cached context per sequence before the step, tokens.
    pub contexts: Vec<u32>,
    /// Timed repetitions per shape, taken round-robin over the shapes (the median is kept).
    pub repetitions: u32,
    /// Untimed runs before the first shape (caches, allocator, thread pool).
    pub warmup: u32,
    /// Longest sequence (context + new tokens) a shape may use.
    pub max_context: u32,
    /// Synthetic token ids are drawn from `3..token_limit`.
    pub token_limit: u32,
    /// How a shape's repetitions become one time.
    pub statistic: Statistic,
}

/// How repeated timings of one shape are summarised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Statistic {
    /// The median: robust to rare outliers both ways.
    #[default]
    Median,
    /// The minimum: the time without outside interference, for shared or busy hosts.
    Min,
}

impl std::str::FromStr for Statistic {
    type Err = String;

    /// `median` or `min`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "median" => Ok(Self::Median),
            "min" => Ok(Self::Min),
            other => Err(format!("expected `median` or `min`, not `{other}`")),
        }
    }
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            prefill_chunks: vec![16, 64, 256],
            decode_batches: vec![1, 4, 16, 32],
            contexts: vec![0, 128, 384],
            repetitions: 5,
            warmup: 3,
            max_context: 512,
            token_limit: 259,
            statistic: Statistic::Median,
        }
    }
}

impl SweepConfig {
    /// The default sweep, limited to `model`'s context and vocabulary.
    pub fn for_model(model: &ModelSpec) -> Self {
        Self {
            max_context: model.max_context,
            token_limit: model.vocab_size,
            ..Self::default()
        }
    }
}

/// One measured shape: `batch` decodes plus, when `chunk > 0`, one prefill chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepPoint {
    /// Decoding sequences (one new token each).
    pub batch: u32,
    /// Tokens of the prefill chunk (0: none).
    pub chunk: u32,
    /// Cached tokens of every sequence before the step.
    pub context: u32,
}

impl std::fmt::Display for SweepPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} decodes + chunk {} at context {}",
            self.batch, self.chunk, self.context
        )
    }
}

/// A measured step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// What ran.
    pub point: SweepPoint,
    /// Its shape as the cost model sees it.
    pub shape: StepShape,
    /// Median measured step time, seconds.
    pub seconds: f64,
}

/// The shapes of a sweep, before pool limits.
pub fn sweep_points(config: &SweepConfig) -> Vec<SweepPoint> {
    let mut points = Vec::new();
    for &context in &config.contexts {
        for &chunk in &config.prefill_chunks {
            points.push(SweepPoint {
                batch: 0,
                chunk,
                context,
            });
        }
        for &batch in &config.decode_batches {
            points.push(SweepPoint {
                batch,
                chunk: 0,
                context,
            });
        }
        // Mixed steps: the middle decode batch with the middle chunk.
        let mid = |v: &[u32]| v.get(v.len() / 2).copied();
        if let (Some(batch), Some(chunk)) =
            (mid(&config.decode_batches), mid(&config.prefill_chunks))
        {
            points.push(SweepPoint {
                batch,
                chunk,
                context,
            });
        }
    }
    points
}

/// Token ids and block tables of one synthetic step, owned so a plan can borrow them.
struct SyntheticStep {
    seqs: Vec<(u32, Vec<u32>, Vec<BlockId>)>,
}

impl SyntheticStep {
    /// Builds the step for `p`, or `None` if it needs more blocks or context than allowed.
    fn new(p: SweepPoint, blocks: u32, block_size: u32, config: &SweepConfig) -> Option<Self> {
        let mut lens: Vec<u32> = vec![1; p.batch as usize];
        if p.chunk > 0 {
            lens.push(p.chunk);
        }
        let span = config.token_limit.saturating_sub(3).max(1);
        let mut next_block = 0u32;
        let mut seqs = Vec::with_capacity(lens.len());
        for (i, &n) in lens.iter().enumerate() {
            let end = p.context + n;
            if end > config.max_context {
                return None;
            }
            let need = end.div_ceil(block_size);
            if next_block + need > blocks {
                return None;
            }
            let table = (next_block..next_block + need).map(BlockId).collect();
            next_block += need;
            let tokens = (0..n).map(|k| 3 + (k * 31 + i as u32 * 7) % span).collect();
            seqs.push((p.context, tokens, table));
        }
        Some(Self { seqs })
    }

    fn plan(&self) -> StepPlan<'_> {
        let seqs = self
            .seqs
            .iter()
            .enumerate()
            .map(|(i, (start, tokens, table))| ScheduledSeq {
                seq: SeqId(i as u64),
                start_pos: *start,
                tokens,
                block_table: table,
                sample: true,
                sampling: SamplingParams::default(),
            })
            .collect();
        StepPlan {
            seqs,
            copies: Vec::new(),
        }
    }

    fn shape(&self) -> StepShape {
        StepShape::of(self.seqs.iter().map(|(start, tokens, _)| SeqWork {
            new_tokens: tokens.len() as u32,
            context: *start,
        }))
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Measures every sweep shape that fits `backend`'s pool; median of `repetitions` runs each.
pub fn sweep(
    backend: &mut dyn Backend,
    config: &SweepConfig,
) -> Result<Vec<Sample>, CalibrationError> {
    let (blocks, block_size) = (backend.info().kv_blocks, backend.info().block_size);
    let steps: Vec<(SweepPoint, SyntheticStep)> = sweep_points(config)
        .into_iter()
        .filter_map(|p| SyntheticStep::new(p, blocks, block_size, config).map(|s| (p, s)))
        .collect();
    let Some((first_point, first)) = steps.first() else {
        return Err(CalibrationError::NothingFits {
            blocks,
            block_size,
            max_context: config.max_context,
        });
    };
    let run = |b: &mut dyn Backend, p: SweepPoint, s: &SyntheticStep| {
        b.execute(&s.plan())
            .map(|o| o.elapsed)
            .map_err(|source| CalibrationError::Step { point: p, source })
    };
    for _ in 0..config.warmup {
        run(backend, *first_point, first)?;
    }
    // Rounds over all shapes, each in a fresh seeded order: a burst of
    // outside load spreads over every shape, and no shape always follows the
    // same predecessor (whose cache footprint it would inherit).
    let mut times = vec![Vec::with_capacity(config.repetitions as usize); steps.len()];
    let mut order: Vec<usize> = (0..steps.len()).collect();
    let mut rng = SplitMix64::new(0x5EED);
    for _ in 0..config.repetitions.max(1) {
        for i in (1..order.len()).rev() {
            order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        for &k in &order {
            let (point, step) = &steps[k];
            times[k].push(run(backend, *point, step)?.as_secs_f64());
        }
    }
    let samples = steps
        .iter()
        .zip(&mut times)
        .map(|((point, step), t)| Sample {
            point: *point,
            shape: step.shape(),
            seconds: match config.statistic {
                Statistic::Median => median(t),
                Statistic::Min => t.iter().copied().fold(f64::INFINITY, f64::min),
            },
        })
        .collect();
    Ok(samples)
}

/// How well a fitted profile predicts the samples.
#[derive(Debug, Clone, PartialEq)]
pub struct FitReport {
    /// Median of |predicted / measured − 1|.
    pub median_rel_error: f64,
    /// Largest |predicted / measured − 1|.
    pub max_rel_error: f64,
    /// Signed relative error of each sample, in sample order.
    pub rel_errors: Vec<f64>,
    /// Objective evaluations the search used.
    pub evaluations: u32,
}

/// One pass's roofline seconds at unit efficiencies: compute, weight and
/// state traffic, KV-cache traffic.
#[derive(Debug, Clone, Copy)]
struct UnitPass {
    compute: f64,
    memory: f64,
    kv: f64,
}

impl UnitPass {
    fn of(c: &PassCost, bytes_per_s: f64) -> Self {
        Self {
            compute: c.compute_s,
            memory: (c.bytes - c.kv_bytes) / bytes_per_s,
            kv: c.kv_bytes / bytes_per_s,
        }
    }

    /// Roofline seconds at efficiencies `e`.
    fn seconds(&self, e: Effs) -> f64 {
        (self.compute / e.compute).max(self.memory / e.bandwidth + self.kv / e.kv)
    }
}

/// Per-sample terms at unit efficiency and zero overhead.
struct Terms {
    main: Vec<UnitPass>,
    decode_pass: Vec<Option<UnitPass>>,
    /// Regressors of the overheads: passes, sequences, KV MB.
    regressors: Vec<[f64; OVERHEADS]>,
    measured: Vec<f64>,
}

/// Overhead coefficients solved exactly: step (per pass), per sequence, per KV MB.
const OVERHEADS: usize = 3;

/// Efficiencies of one candidate: compute, bandwidth, KV bandwidth.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Effs {
    compute: f64,
    bandwidth: f64,
    kv: f64,
}

impl Terms {
    /// Terms of `samples` with mixed steps run as one pass or, if `split`, two.
    fn new(device: &DeviceProfile, model: &ModelSpec, samples: &[Sample], split: bool) -> Self {
        let mut unit = device.clone();
        unit.calibration = Calibration {
            compute_efficiency: 1.0,
            bandwidth_efficiency: 1.0,
            kv_bandwidth_efficiency: None,
            step_overhead_us: 0.0,
            per_sequence_overhead_us: 0.0,
            kv_overhead_us_per_mb: 0.0,
            split_mixed_steps: split,
            ..device.calibration.clone()
        };
        let bw = unit.bandwidth_bytes_per_s();
        let cm = CostModel::new(unit, model.clone());
        let costs: Vec<_> = samples.iter().map(|s| cm.step_cost(&s.shape)).collect();
        Self {
            main: costs.iter().map(|c| UnitPass::of(&c.main, bw)).collect(),
            decode_pass: costs
                .iter()
                .map(|c| c.decode_pass.map(|p| UnitPass::of(&p, bw)))
                .collect(),
            regressors: costs
                .iter()
                .zip(samples)
                .map(|(c, s)| {
                    [
                        f64::from(c.passes),
                        f64::from(s.shape.seqs()),
                        c.kv_bytes() / 1e6,
                    ]
                })
                .collect(),
            measured: samples.iter().map(|s| s.seconds).collect(),
        }
    }

    /// Roofline seconds of sample `i` at efficiencies `e`.
    fn roofline(&self, i: usize, e: Effs) -> f64 {
        self.main[i].seconds(e) + self.decode_pass[i].map_or(0.0, |p| p.seconds(e))
    }

    /// Best non-negative overheads in seconds (per pass, per sequence, per
    /// KV MB) at `e`, and the objective.
    ///
    /// Minimises Σ w (x·aᵢ − rᵢ)², w = 1/m², r = m − roofline: every subset
    /// of the three overheads is solved by its normal equations, and the
    /// best candidate with no negative coefficient wins.
    fn overheads(&self, e: Effs) -> ([f64; OVERHEADS], f64) {
        let mut g = [[0.0; OVERHEADS]; OVERHEADS];
        let mut b = [0.0; OVERHEADS];
        let mut c = 0.0;
        for (i, (a, &m)) in self.regressors.iter().zip(&self.measured).enumerate() {
            let (w, r) = (1.0 / (m * m), m - self.roofline(i, e));
            c += w * r * r;
            for j in 0..OVERHEADS {
                b[j] += w * a[j] * r;
                for k in 0..OVERHEADS {
                    g[j][k] += w * a[j] * a[k];
                }
            }
        }
        // The objective of x from the sums: c − 2 x·b + xᵀ G x.
        let quadratic = |x: &[f64; OVERHEADS]| {
            let mut v = c;
            for j in 0..OVERHEADS {
                v -= 2.0 * x[j] * b[j];
                for k in 0..OVERHEADS {
                    v += x[j] * g[j][k] * x[k];
                }
            }
            v
        };
        let mut best = ([0.0; OVERHEADS], c);
        for mask in 1..(1u32 << OVERHEADS) {
            if let Some(x) = solve_subset(&g, &b, mask) {
                let v = quadratic(&x);
                if v < best.1 {
                    best = (x, v);
                }
            }
        }
        let x = best.0;
        (x, self.objective(e, &x))
    }

    fn objective(&self, e: Effs, x: &[f64; OVERHEADS]) -> f64 {
        (0..self.measured.len())
            .map(|i| {
                let a = &self.regressors[i];
                let over: f64 = (0..OVERHEADS).map(|j| x[j] * a[j]).sum();
                let err = (self.roofline(i, e) + over) / self.measured[i] - 1.0;
                err * err
            })
            .sum()
    }
}

/// Solves `G x = b` restricted to the unknowns in `mask` (the others 0) by
/// Gaussian elimination; `None` if that system is singular or a
/// coefficient comes out negative.
fn solve_subset(
    g: &[[f64; OVERHEADS]; OVERHEADS],
    b: &[f64; OVERHEADS],
    mask: u32,
) -> Option<[f64; OVERHEADS]> {
    let mut idx = [0usize; OVERHEADS];
    let mut n = 0;
    for j in (0..OVERHEADS).filter(|&j| mask & (1 << j) != 0) {
        idx[n] = j;
        n += 1;
    }
    // Augmented matrix [G_sub | b_sub].
    let mut a = [[0.0; OVERHEADS + 1]; OVERHEADS];
    for r in 0..n {
        for c in 0..n {
            a[r][c] = g[idx[r]][idx[c]];
        }
        a[r][n] = b[idx[r]];
    }
    for col in 0..n {
        let pivot = (col..n).max_by(|&p, &q| a[p][col].abs().total_cmp(&a[q][col].abs()))?;
        // Relative to the unknown's own scale: collinear regressors are singular.
        let size = a[pivot][col].abs();
        if size.is_nan() || size <= 1e-12 * g[idx[col]][idx[col]].abs() {
            return None;
        }
        a.swap(col, pivot);
        let lead = a[col];
        for (row, r) in a.iter_mut().enumerate().take(n) {
            if row != col {
                let f = r[col] / lead[col];
                for (v, l) in r[col..=n].iter_mut().zip(&lead[col..=n]) {
                    *v -= f * l;
                }
            }
        }
    }
    let mut x = [0.0; OVERHEADS];
    for r in 0..n {
        let v = a[r][n] / a[r][r];
        if !(v >= 0.0 && v.is_finite()) {
            return None;
        }
        x[idx[r]] = v;
    }
    Some(x)
}

/// Efficiencies from search coordinates `[ln ce, ln be, ln(ke / be)]`,
/// each efficiency clamped to [MIN_EFFICIENCY, 1]. The KV coordinate is
/// relative so that its neutral value, 0, means "as bandwidth_efficiency".
fn effs(x: [f64; 3]) -> Effs {
    let lo = MIN_EFFICIENCY.ln();
    let be = x[1].clamp(lo, 0.0);
    Effs {
        compute: x[0].clamp(lo, 0.0).exp(),
        bandwidth: be.exp(),
        kv: (be + x[2]).clamp(lo, 0.0).exp(),
    }
}

/// Fits `device`'s calibration for `model` to `samples`; returns the fitted profile and its report.
pub fn fit(
    device: &DeviceProfile,
    model: &ModelSpec,
    samples: &[Sample],
) -> Result<(DeviceProfile, FitReport), CalibrationError> {
    if samples.len() < 4 {
        return Err(CalibrationError::BadSamples(format!(
            "{} samples; need at least 4",
            samples.len()
        )));
    }
    if let Some(s) = samples
        .iter()
        .find(|s| !(s.seconds > 0.0 && s.seconds.is_finite()))
    {
        return Err(CalibrationError::BadSamples(format!(
            "{}: measured {} s",
            s.point, s.seconds
        )));
    }
    // Mixed steps as one pass, and (if the sweep has any) as two: the
    // better fit decides `split_mixed_steps`; a tie keeps one pass.
    let mut splits = vec![false];
    if samples.iter().any(|s| s.shape.is_mixed()) {
        splits.push(true);
    }
    let mut evaluations = 0u32;
    let mut chosen: Option<(bool, Effs, [f64; OVERHEADS], f64)> = None;
    for split in splits {
        let terms = Terms::new(device, model, samples, split);
        // A vanishing penalty on ln(ke / be) decides only between fits the
        // samples cannot tell apart (no step where KV traffic sets the
        // time): then KV bytes stream as weight bytes do.
        let mut f = |x: [f64; 3]| {
            evaluations += 1;
            terms.overheads(effs(x)).1 + KV_RATIO_PENALTY * x[2] * x[2]
        };
        let mut best = search(&mut f);
        let neutral = [best[0], best[1], 0.0];
        if best[2] != 0.0 && f(neutral) <= f(best) {
            best = neutral;
        }
        let value = f(best);
        let e = effs(best);
        let (overheads, _) = terms.overheads(e);
        if chosen.is_none_or(|c| value < c.3) {
            chosen = Some((split, e, overheads, value));
        }
    }
    let Some((split, e, [st, ps, pk], _)) = chosen else {
        unreachable!("at least one candidate is fitted");
    };
    let mut fitted = device.clone();
    let cal = &mut fitted.calibration;
    cal.compute_efficiency = e.compute;
    cal.bandwidth_efficiency = e.bandwidth;
    // Left out when it equals the bandwidth efficiency.
    cal.kv_bandwidth_efficiency = (e.kv != e.bandwidth).then_some(e.kv);
    cal.step_overhead_us = st * 1e6;
    cal.per_sequence_overhead_us = ps * 1e6;
    cal.kv_overhead_us_per_mb = pk * 1e6;
    if samples.iter().any(|s| s.shape.is_mixed()) {
        cal.split_mixed_steps = split;
    }
    let cm = CostModel::new(fitted.clone(), model.clone());
    let rel_errors: Vec<f64> = samples
        .iter()
        .map(|s| cm.step_cost(&s.shape).seconds() / s.seconds - 1.0)
        .collect();
    let mut abs: Vec<f64> = rel_errors.iter().map(|e| e.abs()).collect();
    let report = FitReport {
        median_rel_error: median(&mut abs),
        max_rel_error: abs.iter().copied().fold(0.0, f64::max),
        rel_errors,
        evaluations,
    };
    fitted.calibration.fit_median_rel_error = Some(report.median_rel_error);
    fitted.calibration.fit_max_rel_error = Some(report.max_rel_error);
    Ok((fitted, report))
}

/// Coarse grid over the search coordinates, then zooming grids around the
/// best point (robust to the roofline's kinks), then Nelder–Mead to polish.
/// Only strict improvements move the best point, so a coordinate the
/// objective does not depend on keeps its starting value.
fn search(f: &mut impl FnMut([f64; 3]) -> f64) -> [f64; 3] {
    let lo = MIN_EFFICIENCY.ln();
    // The absolute log-efficiencies span [lo, 0]; the KV ratio starts at 1
    // and may reach either end of the range from any bandwidth efficiency.
    let clamp = |x: [f64; 3]| {
        [
            x[0].clamp(lo, 0.0),
            x[1].clamp(lo, 0.0),
            x[2].clamp(lo, -lo),
        ]
    };
    let n = 14;
    let mut center = [lo / 2.0, lo / 2.0, 0.0];
    let mut half = [-lo / 2.0, -lo / 2.0, -lo];
    let mut best = (center, f(center));
    let t = |k: usize| -1.0 + 2.0 * k as f64 / n as f64;
    for _ in 0..10 {
        for i in 0..=n {
            for j in 0..=n {
                for k in 0..=n {
                    let x = clamp([
                        center[0] + half[0] * t(i),
                        center[1] + half[1] * t(j),
                        center[2] + half[2] * t(k),
                    ]);
                    let v = f(x);
                    if v < best.1 {
                        best = (x, v);
                    }
                }
            }
        }
        center = best.0;
        half = half.map(|h| h * 0.3);
    }
    let polished = clamp(nelder_mead(f, best.0, half[0], 300));
    if f(polished) < best.1 {
        polished
    } else {
        best.0
    }
}

/// Minimises `f` over `D` variables from `start` with an initial simplex of side `step`.
fn nelder_mead<const D: usize>(
    f: &mut impl FnMut([f64; D]) -> f64,
    start: [f64; D],
    step: f64,
    iters: u32,
) -> [f64; D] {
    let mut s: Vec<([f64; D], f64)> = (0..=D)
        .map(|v| {
            let mut x = start;
            if v > 0 {
                x[v - 1] += step;
            }
            (x, f(x))
        })
        .collect();
    let lerp = |a: [f64; D], b: [f64; D], t: f64| -> [f64; D] {
        std::array::from_fn(|d| a[d] + t * (b[d] - a[d]))
    };
    for _ in 0..iters {
        s.sort_by(|a, b| a.1.total_cmp(&b.1));
        if (s[D].1 - s[0].1).abs() <= 1e-15 * s[0].1.abs().max(1e-300) {
            break;
        }
        // Centroid of all but the worst vertex.
        let c: [f64; D] =
            std::array::from_fn(|d| s[..D].iter().map(|v| v.0[d]).sum::<f64>() / D as f64);
        let r = lerp(c, s[D].0, -1.0);
        let fr = f(r);
        if fr < s[0].1 {
            let e = lerp(c, s[D].0, -2.0);
            let fe = f(e);
            s[D] = if fe < fr { (e, fe) } else { (r, fr) };
        } else if fr < s[D - 1].1 {
            s[D] = (r, fr);
        } else {
            let k = lerp(c, s[D].0, 0.5);
            let fk = f(k);
            if fk < s[D].1 {
                s[D] = (k, fk);
            } else {
                for i in 1..=D {
                    let x = lerp(s[0].0, s[i].0, 0.5);
                    s[i] = (x, f(x));
                }
            }
        }
    }
    s.sort_by(|a, b| a.1.total_cmp(&b.1));
    s[0].0
}

/// Sweeps `backend` and fits `device`'s calibration for `model`: the `switchyard profile` entry point.
pub fn profile(
    backend: &mut dyn Backend,
    device: &DeviceProfile,
    model: &ModelSpec,
    config: &SweepConfig,
) -> Result<(DeviceProfile, FitReport, Vec<Sample>), CalibrationError> {
    let samples = sweep(backend, config)?;
    let (fitted, report) = fit(device, model, &samples)?;
    Ok((fitted, report, samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sim::{SimBackend, SimConfig};

    fn device(cal: (f64, f64, f64, f64)) -> DeviceProfile {
        crate::fixtures::device(400.0, 2000.0, [cal.0, cal.1, cal.2, cal.3])
    }

    fn model() -> ModelSpec {
        crate::fixtures::dense_8b(8192)
    }

    fn sweep_config() -> SweepConfig {
        SweepConfig {
            prefill_chunks: vec![64, 512, 2048],
            decode_batches: vec![1, 8, 64, 256],
            contexts: vec![0, 1024, 4096],
            repetitions: 1,
            warmup: 0,
            max_context: 8192,
            token_limit: 1000,
            statistic: Statistic::Median,
        }
    }

    /// Samples a simulated device of known calibration produces.
    fn simulated(truth: &DeviceProfile) -> Vec<Sample> {
        let cm = CostModel::new(truth.clone(), model());
        let cfg = SimConfig {
            kv_blocks: Some(20_000),
            ..SimConfig::default()
        };
        let mut sim = SimBackend::new(cm, cfg).unwrap();
        sweep(&mut sim, &sweep_config()).unwrap()
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs()
    }

    #[test]
    fn fit_recovers_known_coefficients() {
        for truth in [
            (0.55, 0.8, 120.0, 8.0),
            (0.2, 0.35, 2000.0, 0.0),
            (0.9, 0.6, 0.0, 30.0),
        ] {
            let truth_dev = device(truth);
            let samples = simulated(&truth_dev);
            assert!(samples.len() > 20);
            // Start from a deliberately wrong profile.
            let start = device((0.1, 0.1, 1.0, 1.0));
            let (fitted, report) = fit(&start, &model(), &samples).unwrap();
            let c = &fitted.calibration;
            assert!(report.median_rel_error < 1e-6, "{truth:?}: {report:?}");
            assert!(report.max_rel_error < 1e-5, "{truth:?}: {report:?}");
            assert!(
                close(c.compute_efficiency, truth.0, 1e-4),
                "{truth:?}: {c:?}"
            );
            assert!(
                close(c.bandwidth_efficiency, truth.1, 1e-4),
                "{truth:?}: {c:?}"
            );
            assert!(close(c.kv_efficiency(), truth.1, 1e-4), "{truth:?}: {c:?}");
            assert!(!c.split_mixed_steps, "{truth:?}: {c:?}");
            assert!(c.kv_overhead_us_per_mb.abs() < 1e-3, "{truth:?}: {c:?}");
            assert!(
                (c.step_overhead_us - truth.2).abs() < 0.05,
                "{truth:?}: {c:?}"
            );
            assert!(
                (c.per_sequence_overhead_us - truth.3).abs() < 0.01,
                "{truth:?}: {c:?}"
            );
            assert_eq!(c.fit_median_rel_error, Some(report.median_rel_error));
            assert_eq!(c.fit_max_rel_error, Some(report.max_rel_error));
            assert_eq!(c.memory_utilization, 0.9);
        }
    }

    #[test]
    fn fit_recovers_a_separate_kv_efficiency() {
        for (truth, kv) in [
            ((0.5, 0.8, 200.0, 5.0), 0.12),
            ((0.3, 0.4, 50.0, 20.0), 0.9),
        ] {
            let mut truth_dev = device(truth);
            truth_dev.calibration.kv_bandwidth_efficiency = Some(kv);
            let samples = simulated(&truth_dev);
            let (fitted, report) = fit(&device((0.1, 0.1, 1.0, 1.0)), &model(), &samples).unwrap();
            let c = &fitted.calibration;
            assert!(report.median_rel_error < 1e-6, "{kv}: {report:?}");
            assert!(report.max_rel_error < 1e-5, "{kv}: {report:?}");
            assert!(close(c.compute_efficiency, truth.0, 1e-4), "{kv}: {c:?}");
            assert!(close(c.bandwidth_efficiency, truth.1, 1e-4), "{kv}: {c:?}");
            let got = c.kv_bandwidth_efficiency.expect("a distinct KV efficiency");
            assert!(close(got, kv, 1e-4), "{kv}: {c:?}");
            assert!((c.step_overhead_us - truth.2).abs() < 0.05, "{kv}: {c:?}");
            assert!(
                (c.per_sequence_overhead_us - truth.3).abs() < 0.01,
                "{kv}: {c:?}"
            );
        }
    }

    #[test]
    fn fit_finds_two_pass_mixed_steps_and_kv_overhead() {
        let truth = (0.4, 0.6, 500.0, 3.0);
        let mut truth_dev = device(truth);
        truth_dev.calibration.split_mixed_steps = true;
        truth_dev.calibration.kv_bandwidth_efficiency = Some(0.1);
        truth_dev.calibration.kv_overhead_us_per_mb = 40.0;
        let samples = simulated(&truth_dev);
        assert!(samples.iter().any(|s| s.shape.is_mixed()));
        let (fitted, report) = fit(&device((0.1, 0.1, 1.0, 1.0)), &model(), &samples).unwrap();
        let c = &fitted.calibration;
        assert!(c.split_mixed_steps, "{c:?}");
        assert!(report.median_rel_error < 1e-6, "{report:?}");
        assert!(report.max_rel_error < 1e-5, "{report:?}");
        assert!(close(c.compute_efficiency, truth.0, 1e-4), "{c:?}");
        assert!(close(c.bandwidth_efficiency, truth.1, 1e-4), "{c:?}");
        assert!(close(c.kv_efficiency(), 0.1, 1e-4), "{c:?}");
        assert!((c.step_overhead_us - truth.2).abs() < 0.05, "{c:?}");
        assert!((c.per_sequence_overhead_us - truth.3).abs() < 0.01, "{c:?}");
        assert!((c.kv_overhead_us_per_mb - 40.0).abs() < 1e-3, "{c:?}");
        // The flag round-trips through TOML.
        let text = fitted.to_toml().unwrap();
        assert!(text.contains("split_mixed_steps = true"), "{text}");
    }

    #[test]
    fn fit_reports_error_of_noisy_samples() {
        let truth = device((0.5, 0.7, 300.0, 10.0));
        let mut samples = simulated(&truth);
        for (i, s) in samples.iter_mut().enumerate() {
            s.seconds *= if i % 2 == 0 { 1.03 } else { 0.97 };
        }
        let (_, report) = fit(&device((0.3, 0.3, 0.0, 0.0)), &model(), &samples).unwrap();
        assert!(report.median_rel_error <= 0.035, "{report:?}");
        assert!(report.max_rel_error < 0.1, "{report:?}");
        assert_eq!(report.rel_errors.len(), samples.len());
    }

    #[test]
    fn sweep_skips_shapes_that_do_not_fit_and_rejects_bad_input() {
        let cm = CostModel::new(device((0.5, 0.5, 100.0, 1.0)), model());
        let cfg = SimConfig {
            kv_blocks: Some(40),
            ..SimConfig::default()
        };
        let mut sim = SimBackend::new(cm, cfg).unwrap();
        let samples = sweep(&mut sim, &sweep_config()).unwrap();
        // 40 blocks of 16 = 640 tokens: only small shapes at context 0.
        assert!(!samples.is_empty());
        assert!(samples.iter().all(|s| s.point.context == 0));
        let mut none = sweep_config();
        none.max_context = 10;
        none.prefill_chunks = vec![64];
        none.contexts = vec![100];
        assert!(matches!(
            sweep(&mut sim, &none),
            Err(CalibrationError::NothingFits { .. })
        ));
        assert!(fit(&device((0.5, 0.5, 0.0, 0.0)), &model(), &samples[..2]).is_err());
    }
}
