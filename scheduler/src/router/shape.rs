//! Request shapes: prefill- vs decode-heavy class, context bucket, and the
//! running estimate of how many tokens a request will actually generate.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Upper bounds (exclusive) of the `short`, `medium` and `long` context buckets, tokens.
pub const CONTEXT_BUCKET_BOUNDS: [u64; 3] = [2_048, 8_192, 32_768];

/// Whether a request's work is dominated by its prompt or by its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShapeClass {
    /// Prompt tokens at least `prefill_heavy_ratio` × expected output: compute-bound work.
    PrefillHeavy,
    /// Expected output at least `decode_heavy_ratio` × prompt tokens: bandwidth-bound work.
    DecodeHeavy,
    /// Neither.
    Balanced,
}

impl ShapeClass {
    /// Every class, in declaration order.
    pub const ALL: [ShapeClass; 3] = [Self::PrefillHeavy, Self::DecodeHeavy, Self::Balanced];

    /// Kebab-case name (`prefill-heavy`, `decode-heavy`, `balanced`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PrefillHeavy => "prefill-heavy",
            Self::DecodeHeavy => "decode-heavy",
            Self::Balanced => "balanced",
        }
    }

    /// Classifies `prompt` tokens against `expected_output` tokens (see the module doc).
    pub fn classify(
        prompt: u32,
        expected_output: u32,
        prefill_heavy_ratio: f64,
        decode_heavy_ratio: f64,
    ) -> Self {
        let (p, e) = (f64::from(prompt), f64::from(expected_output));
        if p >= prefill_heavy_ratio * e {
            Self::PrefillHeavy
        } else if e >= decode_heavy_ratio * p {
            Self::DecodeHeavy
        } else {
            Self::Balanced
        }
    }
}

impl fmt::Display for ShapeClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Total context of a request (prompt + expected output), bucketed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContextBucket {
    /// Under 2,048 tokens.
    Short,
    /// 2,048 to 8,191 tokens.
    Medium,
    /// 8,192 to 32,767 tokens.
    Long,
    /// 32,768 tokens or more.
    #[serde(rename = "xlong")]
    XLong,
}

impl ContextBucket {
    /// Every bucket, shortest first.
    pub const ALL: [ContextBucket; 4] = [Self::Short, Self::Medium, Self::Long, Self::XLong];

    /// The bucket of a request holding `tokens` tokens of prompt + expected output.
    pub fn of(tokens: u64) -> Self {
        let [short, medium, long] = CONTEXT_BUCKET_BOUNDS;
        if tokens < short {
            Self::Short
        } else if tokens < medium {
            Self::Medium
        } else if tokens < long {
            Self::Long
        } else {
            Self::XLong
        }
    }

    /// Lower-case name (`short`, `medium`, `long`, `xlong`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Short => "short",
            Self::Medium => "medium",
            Self::Long => "long",
            Self::XLong => "xlong",
        }
    }
}

impl fmt::Display for ContextBucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the router predicts about a request before placing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Shape {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Most tokens the request may generate.
    pub max_tokens: u32,
    /// Predicted generated tokens, `≤ max_tokens` (from the [`OutputEstimator`]).
    pub expected_output_tokens: u32,
    /// Prefill-heavy, decode-heavy or balanced.
    pub class: ShapeClass,
    /// Bucket of `prompt_tokens + expected_output_tokens`.
    pub context_bucket: ContextBucket,
}

/// Running estimate of generated lengths for one model: an exponentially
/// weighted moving average (EWMA) of observed output lengths.
///
/// * `expected(max) = max` until the first observation, then
///   `min(max, ⌈estimate⌉)`: `max_tokens` is a cap, and real outputs usually
///   stop well before it (end-of-sequence), independently of the cap.
/// * `observe(max, actual)`: the first observation sets the estimate; later
///   ones move it by `alpha · (actual − estimate)`. An output that hit its cap
///   (`actual ≥ max`) is censored (the natural length was at least `actual`),
///   so it only ever raises the estimate, never lowers it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputEstimator {
    alpha: f64,
    estimate: f64,
    observations: u64,
}

impl OutputEstimator {
    /// Default EWMA weight of a new observation.
    pub const DEFAULT_ALPHA: f64 = 0.1;

    /// An estimator with no observations; `alpha` is clamped into `(0, 1]`.
    pub fn new(alpha: f64) -> Self {
        Self {
            alpha: sanitize_alpha(alpha),
            estimate: 0.0,
            observations: 0,
        }
    }

    /// EWMA weight of a new observation.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Changes the EWMA weight, keeping the estimate.
    pub fn set_alpha(&mut self, alpha: f64) {
        self.alpha = sanitize_alpha(alpha);
    }

    /// Current estimate of an output length in tokens, `None` before any observation.
    pub fn estimate(&self) -> Option<f64> {
        (self.observations > 0).then_some(self.estimate)
    }

    /// Observations folded in so far.
    pub fn observations(&self) -> u64 {
        self.observations
    }

    /// Folds in a finished request that allowed `max_tokens` and generated `actual`.
    pub fn observe(&mut self, max_tokens: u32, actual: u32) {
        let x = f64::from(actual);
        let censored = actual >= max_tokens;
        if self.observations == 0 {
            self.estimate = x;
        } else if !censored || x > self.estimate {
            self.estimate += self.alpha * (x - self.estimate);
        }
        self.observations += 1;
    }

    /// Predicted output tokens of a request allowing `max_tokens`: in `[min(1, max_tokens), max_tokens]`.
    pub fn expected(&self, max_tokens: u32) -> u32 {
        if self.observations == 0 {
            return max_tokens;
        }
        // Saturating float→int cast; at least one token when any is allowed.
        let e = self.estimate.ceil() as u32;
        e.clamp(1.min(max_tokens), max_tokens)
    }
}

impl Default for OutputEstimator {
    fn default() -> Self {
        Self::new(Self::DEFAULT_ALPHA)
    }
}

fn sanitize_alpha(alpha: f64) -> f64 {
    if alpha.is_finite() && alpha > 0.0 {
        alpha.min(1.0)
    } else {
        OutputEstimator::DEFAULT_ALPHA
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_thresholds() {
        let c = |p, e| ShapeClass::classify(p, e, 4.0, 1.0);
        assert_eq!(c(8000, 50), ShapeClass::PrefillHeavy);
        assert_eq!(c(400, 100), ShapeClass::PrefillHeavy); // exactly 4×
        assert_eq!(c(399, 100), ShapeClass::Balanced);
        assert_eq!(c(100, 1000), ShapeClass::DecodeHeavy);
        assert_eq!(c(100, 100), ShapeClass::DecodeHeavy); // E ≥ P
        assert_eq!(c(101, 100), ShapeClass::Balanced);
        assert_eq!(c(0, 0), ShapeClass::PrefillHeavy);
        assert_eq!(c(0, 10), ShapeClass::DecodeHeavy);
        // Thresholds are tunable.
        assert_eq!(
            ShapeClass::classify(300, 100, 2.0, 1.0),
            ShapeClass::PrefillHeavy
        );
    }

    #[test]
    fn names() {
        assert_eq!(ShapeClass::PrefillHeavy.to_string(), "prefill-heavy");
        assert_eq!(ShapeClass::DecodeHeavy.as_str(), "decode-heavy");
        assert_eq!(ContextBucket::XLong.to_string(), "xlong");
        for c in ContextBucket::ALL {
            assert_eq!(
                serde_json::to_string(&c).unwrap(),
                format!("\"{}\"", c.as_str())
            );
        }
        for c in ShapeClass::ALL {
            assert_eq!(
                serde_json::to_string(&c).unwrap(),
                format!("\"{}\"", c.as_str())
            );
        }
    }

    #[test]
    fn buckets() {
        assert_eq!(ContextBucket::of(0), ContextBucket::Short);
        assert_eq!(ContextBucket::of(2047), ContextBucket::Short);
        assert_eq!(ContextBucket::of(2048), ContextBucket::Medium);
        assert_eq!(ContextBucket::of(8191), ContextBucket::Medium);
        assert_eq!(ContextBucket::of(8192), ContextBucket::Long);
        assert_eq!(ContextBucket::of(32_767), ContextBucket::Long);
        assert_eq!(ContextBucket::of(32_768), ContextBucket::XLong);
        assert_eq!(ContextBucket::of(u64::MAX), ContextBucket::XLong);
    }

    #[test]
    fn estimator_without_observations_is_max_tokens() {
        let e = OutputEstimator::default();
        assert_eq!(e.expected(0), 0);
        assert_eq!(e.expected(1), 1);
        assert_eq!(e.expected(4096), 4096);
        assert_eq!(e.estimate(), None);
    }

    #[test]
    fn estimator_is_bounded_by_max_tokens() {
        let mut e = OutputEstimator::new(0.5);
        e.observe(4096, 300);
        assert_eq!(e.expected(4096), 300);
        assert_eq!(e.expected(50), 50);
        assert_eq!(e.expected(1), 1);
        assert_eq!(e.expected(0), 0);
        e.observe(4096, 100);
        assert_eq!(e.expected(4096), 200);
        for _ in 0..100 {
            e.observe(4096, 0);
        }
        // Never predicts zero output for a request that may generate.
        assert_eq!(e.expected(4096), 1);
    }

    #[test]
    fn censored_observations_only_raise() {
        let mut e = OutputEstimator::new(0.5);
        e.observe(4096, 400);
        // Hit the cap of 50: says nothing about a longer natural length being shorter.
        e.observe(50, 50);
        assert_eq!(e.estimate(), Some(400.0));
        // Hit a cap above the estimate: raises it.
        e.observe(1000, 1000);
        assert_eq!(e.estimate(), Some(700.0));
        assert_eq!(e.observations(), 3);
    }

    #[test]
    fn alpha_is_sanitized() {
        assert_eq!(OutputEstimator::new(f64::NAN).alpha(), 0.1);
        assert_eq!(OutputEstimator::new(-1.0).alpha(), 0.1);
        assert_eq!(OutputEstimator::new(7.0).alpha(), 1.0);
    }
}
