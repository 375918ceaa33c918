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
//!   `step_overhead_us` and `per_sequence_overhead_us` of a
//!   [`DeviceProfile`] for a [`ModelSpec`] so that
//!   `CostModel::step_cost(shape).seconds()` matches the samples, and fills
//!   `fit_median_rel_error` / `fit_max_rel_error`.
//! - [`profile`]: both, for `switchyard profile`.
//!
//! # Fit
//! Minimises Σ ((predicted − measured) / measured)², i.e. relative error.
//! With the efficiencies fixed, a prediction is linear in the two overheads,
//! so they are solved exactly (non-negative least squares on two unknowns);
//! the efficiencies, kept in [`MIN_EFFICIENCY`, 1], are searched in log
//! space: a coarse grid, grids zooming in on the best point, then
//! Nelder–Mead to polish.
//!
//! # Limits (measured on the ONNX backend)
//! The roofline charges cached KV bytes at the same efficiency as weight
//! bytes. On the ONNX backend a cached KV byte is moved about six times per
//! step (gathered from the pool, copied past → present by the graph's
//! `Concat`, read by QKᵀ and by PV), so a fit over short and long contexts
//! over-predicts short-context decode and under-predicts long-context
//! decode (−30…−50 % for 16–32 sequences at 384 tokens of context with the
//! ~100 M `bench` model). A separate KV bandwidth efficiency would remove
//! most of that (4–6 % median in offline fits of the same samples) but
//! changes the step-time formula that `scheduler/src/router/score.rs` sums
//! in closed form, so it is left to a coordinated change.
//!
//! # Invariants
//! Synthetic plans use token ids below [`SweepConfig::token_limit`] and
//! distinct blocks of the pool; a shape that does not fit the pool or
//! `max_context` is skipped, never truncated. Contents of the KV cache are
//! whatever the pool holds: timing does not depend on them.

use crate::contract::{Backend, BlockId, SamplingParams, ScheduledSeq, SeqId, StepPlan};
use crate::cost::{CostModel, SeqWork, StepShape};
use crate::error::BackendError;
use crate::profile::{Calibration, DeviceProfile, ModelSpec};
use crate::sampling::SplitMix64;

/// Smallest efficiency the fit will report.
pub const MIN_EFFICIENCY: f64 = 1e-6;

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

/// Per-sample terms at unit efficiency and zero overhead.
struct Terms {
    compute: Vec<f64>,
    memory: Vec<f64>,
    seqs: Vec<f64>,
    measured: Vec<f64>,
}

impl Terms {
    fn new(device: &DeviceProfile, model: &ModelSpec, samples: &[Sample]) -> Self {
        let mut unit = device.clone();
        unit.calibration = Calibration {
            compute_efficiency: 1.0,
            bandwidth_efficiency: 1.0,
            step_overhead_us: 0.0,
            per_sequence_overhead_us: 0.0,
            ..device.calibration.clone()
        };
        let cm = CostModel::new(unit, model.clone());
        let costs: Vec<_> = samples.iter().map(|s| cm.step_cost(&s.shape)).collect();
        Self {
            compute: costs.iter().map(|c| c.compute_s).collect(),
            memory: costs.iter().map(|c| c.memory_s).collect(),
            seqs: samples.iter().map(|s| f64::from(s.shape.seqs)).collect(),
            measured: samples.iter().map(|s| s.seconds).collect(),
        }
    }

    /// Roofline seconds of sample `i` at efficiencies `(ce, be)`.
    fn roofline(&self, i: usize, ce: f64, be: f64) -> f64 {
        (self.compute[i] / ce).max(self.memory[i] / be)
    }

    /// Best non-negative (step, per-seq) overheads in seconds at `(ce, be)`, and the objective.
    fn overheads(&self, ce: f64, be: f64) -> ((f64, f64), f64) {
        // Minimise Σ w (st + ps·S − r)², w = 1/m², r = m − roofline.
        let (mut sw, mut sws, mut swss, mut swr, mut swsr) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for i in 0..self.measured.len() {
            let m = self.measured[i];
            let (w, s, r) = (1.0 / (m * m), self.seqs[i], m - self.roofline(i, ce, be));
            sw += w;
            sws += w * s;
            swss += w * s * s;
            swr += w * r;
            swsr += w * s * r;
        }
        let det = sw * swss - sws * sws;
        let mut cands = vec![(0.0, 0.0)];
        if sw > 0.0 {
            cands.push(((swr / sw).max(0.0), 0.0));
        }
        if swss > 0.0 {
            cands.push((0.0, (swsr / swss).max(0.0)));
        }
        if det.abs() > 1e-12 * sw * swss {
            let st = (swr * swss - swsr * sws) / det;
            let ps = (swsr * sw - swr * sws) / det;
            if st >= 0.0 && ps >= 0.0 {
                cands.push((st, ps));
            }
        }
        cands
            .into_iter()
            .map(|c| (c, self.objective(ce, be, c)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or(((0.0, 0.0), f64::INFINITY))
    }

    fn objective(&self, ce: f64, be: f64, (st, ps): (f64, f64)) -> f64 {
        (0..self.measured.len())
            .map(|i| {
                let pred = self.roofline(i, ce, be) + st + ps * self.seqs[i];
                let e = pred / self.measured[i] - 1.0;
                e * e
            })
            .sum()
    }
}

/// Efficiencies from log-space coordinates, clamped to [MIN_EFFICIENCY, 1].
fn effs(x: [f64; 2]) -> (f64, f64) {
    let lo = MIN_EFFICIENCY.ln();
    (x[0].clamp(lo, 0.0).exp(), x[1].clamp(lo, 0.0).exp())
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
    let terms = Terms::new(device, model, samples);
    let mut evaluations = 0u32;
    let mut f = |x: [f64; 2]| {
        evaluations += 1;
        let (ce, be) = effs(x);
        terms.overheads(ce, be).1
    };
    let best = search(&mut f);
    let (ce, be) = effs(best);
    let ((st, ps), _) = terms.overheads(ce, be);
    let mut fitted = device.clone();
    let cal = &mut fitted.calibration;
    cal.compute_efficiency = ce;
    cal.bandwidth_efficiency = be;
    cal.step_overhead_us = st * 1e6;
    cal.per_sequence_overhead_us = ps * 1e6;
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

/// Coarse grid over log-efficiencies, then zooming grids around the best
/// point (robust to the roofline's kinks), then Nelder–Mead to polish.
fn search(f: &mut impl FnMut([f64; 2]) -> f64) -> [f64; 2] {
    let lo = MIN_EFFICIENCY.ln();
    let n = 24;
    let (mut center, mut half) = ([lo / 2.0, lo / 2.0], -lo / 2.0);
    let mut best = (center, f(center));
    for _ in 0..14 {
        for i in 0..=n {
            for j in 0..=n {
                let t = |k: usize| -1.0 + 2.0 * k as f64 / n as f64;
                let x = [
                    (center[0] + half * t(i)).clamp(lo, 0.0),
                    (center[1] + half * t(j)).clamp(lo, 0.0),
                ];
                let v = f(x);
                if v < best.1 {
                    best = (x, v);
                }
            }
        }
        center = best.0;
        half *= 0.3;
    }
    let polished = nelder_mead(f, best.0, half, 200);
    let clamp = |x: [f64; 2]| [x[0].clamp(lo, 0.0), x[1].clamp(lo, 0.0)];
    if f(clamp(polished)) < best.1 {
        clamp(polished)
    } else {
        best.0
    }
}

/// Minimises `f` over two variables from `start` with an initial simplex of side `step`.
fn nelder_mead(
    f: &mut impl FnMut([f64; 2]) -> f64,
    start: [f64; 2],
    step: f64,
    iters: u32,
) -> [f64; 2] {
    let mut s: Vec<([f64; 2], f64)> = [
        start,
        [start[0] + step, start[1]],
        [start[0], start[1] + step],
    ]
    .into_iter()
    .map(|x| (x, f(x)))
    .collect();
    let lerp =
        |a: [f64; 2], b: [f64; 2], t: f64| [a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])];
    for _ in 0..iters {
        s.sort_by(|a, b| a.1.total_cmp(&b.1));
        if (s[2].1 - s[0].1).abs() <= 1e-15 * s[0].1.abs().max(1e-300) {
            break;
        }
        let c = lerp(s[0].0, s[1].0, 0.5);
        let r = lerp(c, s[2].0, -1.0);
        let fr = f(r);
        if fr < s[0].1 {
            let e = lerp(c, s[2].0, -2.0);
            let fe = f(e);
            s[2] = if fe < fr { (e, fe) } else { (r, fr) };
        } else if fr < s[1].1 {
            s[2] = (r, fr);
        } else {
            let k = lerp(c, s[2].0, 0.5);
            let fk = f(k);
            if fk < s[2].1 {
                s[2] = (k, fk);
            } else {
                for i in 1..3 {
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
