//! Request shapes: length distributions and the named shape mixes.
//!
//! A length is `N` (fixed), `uniform:A:B` (inclusive) or
//! `lognormal:MEDIAN:SIGMA` (clamped to [1, 10·MEDIAN·e^σ] so one draw cannot
//! dominate a run). Named mixes are fixed, documented pairs of prompt and
//! output distributions; `mix:` combines them with weights.

use crate::error::LoadgenError;
use crate::rng::Rng;

/// A distribution of token counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Length {
    /// Always this many tokens.
    Fixed(u32),
    /// Uniform over `[lo, hi]`.
    Uniform(u32, u32),
    /// Lognormal with this median and log-space sigma, clamped to `[lo, hi]`.
    LogNormal {
        /// Median tokens.
        median: f64,
        /// Log-space standard deviation.
        sigma: f64,
        /// Smallest value.
        lo: u32,
        /// Largest value.
        hi: u32,
    },
}

impl Length {
    /// Parses `N`, `uniform:A:B` or `lognormal:MEDIAN:SIGMA`; `field` names it in errors.
    pub fn parse(text: &str, field: &str) -> Result<Self, LoadgenError> {
        let err = |reason: String| LoadgenError::spec("length", text, format!("{field}: {reason}"));
        let parts: Vec<&str> = text.split(':').collect();
        let num = |s: &str| -> Result<f64, LoadgenError> {
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| err(format!("`{s}` is not a positive number")))
        };
        match parts.as_slice() {
            [n] => Ok(Length::Fixed(num(n)?.round().max(1.0) as u32)),
            ["uniform", a, b] => {
                let (a, b) = (num(a)? as u32, num(b)? as u32);
                if a > b {
                    return Err(err(format!("uniform bounds {a} > {b}")));
                }
                Ok(Length::Uniform(a.max(1), b.max(1)))
            }
            ["lognormal", m, s] => {
                let (median, sigma) = (num(m)?, num(s)?);
                Ok(Length::lognormal(median, sigma))
            }
            _ => Err(err(
                "expected N, uniform:A:B or lognormal:MEDIAN:SIGMA".into()
            )),
        }
    }

    /// A lognormal clamped to `[1, 10·median·e^σ]`.
    pub fn lognormal(median: f64, sigma: f64) -> Self {
        let hi = (10.0 * median * sigma.exp()).min(1e7) as u32;
        Length::LogNormal {
            median,
            sigma,
            lo: 1,
            hi: hi.max(1),
        }
    }

    /// A lognormal clamped to `[lo, hi]`.
    pub fn lognormal_in(median: f64, sigma: f64, lo: u32, hi: u32) -> Self {
        Length::LogNormal {
            median,
            sigma,
            lo,
            hi,
        }
    }

    /// Draws one value.
    pub fn sample(&self, rng: &mut Rng) -> u32 {
        match *self {
            Length::Fixed(n) => n,
            Length::Uniform(a, b) => rng.range(u64::from(a), u64::from(b)) as u32,
            Length::LogNormal {
                median,
                sigma,
                lo,
                hi,
            } => (rng.lognormal(median, sigma).round() as u32).clamp(lo, hi),
        }
    }
}

/// A prompt and output length distribution pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShapeDist {
    /// Prompt tokens.
    pub prompt: Length,
    /// Output tokens (forced with `max_tokens` + `ignore_eos`).
    pub output: Length,
}

/// The named shape mixes `mix:` understands.
pub const NAMED_MIXES: [&str; 4] = ["prefill-heavy", "decode-heavy", "long-context", "balanced"];

/// The distribution of a named mix, or `None` for an unknown name.
///
/// - `prefill-heavy`: prompts ~2k (lognormal σ 0.6, 64–8k), outputs ~32 (1–256): code completion, RAG.
/// - `decode-heavy`: prompts ~256 (16–2k), outputs ~512 (32–2k): chat, generation.
/// - `long-context`: prompts uniform 8k–28k, outputs ~128 (1–1k): document QA.
/// - `balanced`: prompts ~1k (32–8k), outputs ~256 (8–2k).
pub fn named_mix(name: &str) -> Option<ShapeDist> {
    let ln = Length::lognormal_in;
    Some(match name {
        "prefill-heavy" => ShapeDist {
            prompt: ln(2048.0, 0.6, 64, 8192),
            output: ln(32.0, 0.7, 1, 256),
        },
        "decode-heavy" => ShapeDist {
            prompt: ln(256.0, 0.7, 16, 2048),
            output: ln(512.0, 0.5, 32, 2048),
        },
        "long-context" => ShapeDist {
            prompt: Length::Uniform(8192, 28_672),
            output: ln(128.0, 0.6, 1, 1024),
        },
        "balanced" => ShapeDist {
            prompt: ln(1024.0, 0.5, 32, 8192),
            output: ln(256.0, 0.5, 8, 2048),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lengths() {
        assert_eq!(Length::parse("128", "prompt").unwrap(), Length::Fixed(128));
        assert_eq!(
            Length::parse("uniform:10:20", "prompt").unwrap(),
            Length::Uniform(10, 20)
        );
        assert!(matches!(
            Length::parse("lognormal:100:0.5", "output").unwrap(),
            Length::LogNormal { .. }
        ));
        let err = Length::parse("uniform:20:10", "prompt")
            .unwrap_err()
            .to_string();
        assert!(err.contains("prompt"), "{err}");
        assert!(Length::parse("-3", "output").is_err());
        assert!(Length::parse("gauss:1:2", "output").is_err());
    }

    #[test]
    fn named_mixes_sample_in_bounds() {
        let mut rng = Rng::new(5);
        for name in NAMED_MIXES {
            let d = named_mix(name).unwrap();
            for _ in 0..1000 {
                let p = d.prompt.sample(&mut rng);
                let o = d.output.sample(&mut rng);
                assert!(
                    (1..=28_672).contains(&p) && (1..=2048).contains(&o),
                    "{name} {p} {o}"
                );
            }
        }
        assert!(named_mix("nope").is_none());
    }
}
