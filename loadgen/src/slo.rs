//! Latency objectives: `--slo ttft_ms=T,tpot_ms=P[,percentile=95]`, also
//! accepting the planner's `ttft_p95_ms=T,tpot_p95_ms=P` spelling (the
//! percentile is then read from the key). A request *meets* the SLO when its
//! own TTFT ≤ T and TPOT ≤ P (single-token outputs have no TPOT and pass it);
//! a run *meets* it when the chosen percentile of each is within target.

use serde::Serialize;
use switchyard_scheduler::router::Slo;

use crate::error::LoadgenError;

/// TTFT/TPOT targets and the percentile they apply to.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SloSpec {
    /// Time-to-first-token target, milliseconds.
    pub ttft_ms: f64,
    /// Time-per-output-token target, milliseconds.
    pub tpot_ms: f64,
    /// Percentile (0–100) a run's latencies are judged at.
    pub percentile: f64,
}

impl Default for SloSpec {
    fn default() -> Self {
        Self {
            ttft_ms: 2000.0,
            tpot_ms: 100.0,
            percentile: 95.0,
        }
    }
}

impl std::str::FromStr for SloSpec {
    type Err = LoadgenError;

    fn from_str(s: &str) -> Result<Self, LoadgenError> {
        let err = |r: String| LoadgenError::spec("SLO", s, r);
        let mut slo = SloSpec::default();
        let (mut ttft, mut tpot) = (false, false);
        for kv in s.split(',').filter(|x| !x.trim().is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| err(format!("`{kv}` is not KEY=VALUE")))?;
            let k = k.trim();
            let v: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v > 0.0)
                .ok_or_else(|| err(format!("field `{k}`: `{v}` is not a positive number")))?;
            let pct_of = |key: &str, metric: &str| -> Option<f64> {
                key.strip_prefix(metric)?
                    .strip_suffix("_ms")?
                    .strip_prefix("_p")?
                    .parse()
                    .ok()
            };
            match k {
                "ttft_ms" => (slo.ttft_ms, ttft) = (v, true),
                "tpot_ms" => (slo.tpot_ms, tpot) = (v, true),
                "percentile" | "p" => slo.percentile = v,
                _ => {
                    if let Some(p) = pct_of(k, "ttft") {
                        (slo.ttft_ms, ttft, slo.percentile) = (v, true, p);
                    } else if let Some(p) = pct_of(k, "tpot") {
                        (slo.tpot_ms, tpot, slo.percentile) = (v, true, p);
                    } else {
                        return Err(err(format!(
                            "unknown field `{k}` (expected ttft_ms, tpot_ms, percentile, ttft_pNN_ms, tpot_pNN_ms)"
                        )));
                    }
                }
            }
        }
        if !(ttft && tpot) {
            return Err(err("both a TTFT and a TPOT target are required".into()));
        }
        if !(slo.percentile > 0.0 && slo.percentile <= 100.0) {
            return Err(err(format!(
                "field `percentile`: {} is not in (0, 100]",
                slo.percentile
            )));
        }
        Ok(slo)
    }
}

impl SloSpec {
    /// Whether one request's latencies meet the targets.
    pub fn met_by(&self, ttft_s: f64, tpot_s: Option<f64>) -> bool {
        ttft_s * 1e3 <= self.ttft_ms && tpot_s.is_none_or(|t| t * 1e3 <= self.tpot_ms)
    }

    /// From fleet-file targets; a percentile below 1 is a fraction.
    pub fn from_table(ttft_ms: f64, tpot_ms: f64, percentile: Option<f64>) -> Self {
        let p = percentile.unwrap_or(95.0);
        Self {
            ttft_ms,
            tpot_ms,
            percentile: if p < 1.0 { p * 100.0 } else { p },
        }
    }

    /// The router's SLO for these targets (the router takes the percentile as a fraction).
    pub fn router_slo(&self) -> Slo {
        Slo::from_ms(self.ttft_ms, self.tpot_ms, self.percentile / 100.0)
    }

    /// Compact text form, `ttft_ms=..,tpot_ms=..,percentile=..`.
    pub fn to_spec_string(&self) -> String {
        format!(
            "ttft_ms={},tpot_ms={},percentile={}",
            self.ttft_ms, self.tpot_ms, self.percentile
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_spellings() {
        let a: SloSpec = "ttft_ms=500,tpot_ms=50".parse().unwrap();
        assert_eq!((a.ttft_ms, a.tpot_ms, a.percentile), (500.0, 50.0, 95.0));
        let b: SloSpec = "ttft_p99_ms=800,tpot_p99_ms=40".parse().unwrap();
        assert_eq!((b.ttft_ms, b.tpot_ms, b.percentile), (800.0, 40.0, 99.0));
    }

    #[test]
    fn impossible_slos_name_the_field() {
        for (s, field) in [
            ("ttft_ms=-5,tpot_ms=50", "ttft_ms"),
            ("ttft_ms=500,tpot_ms=zero", "tpot_ms"),
            ("ttft_ms=500,tpot_ms=50,percentile=150", "percentile"),
            ("ttft_ms=500,latency=3", "latency"),
            ("ttft_ms=500", "TPOT"),
        ] {
            let e = s.parse::<SloSpec>().unwrap_err().to_string();
            assert!(e.contains(field), "{s}: {e}");
        }
    }

    #[test]
    fn met_by_checks_both() {
        let s: SloSpec = "ttft_ms=100,tpot_ms=10".parse().unwrap();
        assert!(s.met_by(0.1, Some(0.01)));
        assert!(s.met_by(0.05, None));
        assert!(!s.met_by(0.2, Some(0.001)));
        assert!(!s.met_by(0.01, Some(0.02)));
    }
}
