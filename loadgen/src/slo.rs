//! Latency objectives: `--slo ttft_ms=T,tpot_ms=P[,percentile=95]`, also
//! accepting the planner's `ttft_p95_ms=T,tpot_p95_ms=P` spelling (the
//! percentile is then read from the key). A request *meets* the SLO when its
//! own TTFT ≤ T and TPOT ≤ P (single-token outputs have no TPOT and pass it);
//! a run *meets* it when the chosen percentile of each is within target.
//!
//! The type is the scheduler's [`SloSection`], the same one
//! `switchyard.toml` and fleet files use, so there is one SLO vocabulary
//! (percentile stored as a fraction; percentages accepted on input).

pub use switchyard_scheduler::config::{SloParseError, SloSection};

use crate::error::LoadgenError;

impl From<SloParseError> for LoadgenError {
    fn from(e: SloParseError) -> Self {
        LoadgenError::spec("SLO", &e.input, e.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_spellings() {
        let a: SloSection = "ttft_ms=500,tpot_ms=50".parse().unwrap();
        assert_eq!((a.ttft_ms, a.tpot_ms, a.percent()), (500.0, 50.0, 95.0));
        let b: SloSection = "ttft_p99_ms=800,tpot_p99_ms=40".parse().unwrap();
        assert_eq!((b.ttft_ms, b.tpot_ms, b.percent()), (800.0, 40.0, 99.0));
        let c: SloSection = "ttft_ms=1,tpot_ms=1,percentile=0.9".parse().unwrap();
        assert_eq!(c.percentile, 0.9);
        assert_eq!(c.to_spec_string().parse::<SloSection>().unwrap(), c);
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
            let e = LoadgenError::from(s.parse::<SloSection>().unwrap_err()).to_string();
            assert!(e.contains(field), "{s}: {e}");
        }
    }

    #[test]
    fn met_by_checks_both() {
        let s: SloSection = "ttft_ms=100,tpot_ms=10".parse().unwrap();
        assert!(s.met_by(0.1, Some(0.01)));
        assert!(s.met_by(0.05, None));
        assert!(!s.met_by(0.2, Some(0.001)));
        assert!(!s.met_by(0.01, Some(0.02)));
    }
}
