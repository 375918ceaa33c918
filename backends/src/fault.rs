//! A backend wrapper that injects step failures and hangs, for testing how
//! the server survives devices that fail. Never configured in production.

use std::time::Duration;

use crate::contract::{Backend, DeviceInfo, SeqId, StepOutput, StepPlan};
use crate::error::BackendError;
use crate::hash::mix64;

/// Fault probabilities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultPlan {
    /// Probability that a step returns an error.
    pub fail_rate: f64,
    /// Probability that a step blocks for `hang` before running.
    pub hang_rate: f64,
    /// How long a hung step blocks.
    pub hang: Duration,
    /// Probability that a step panics (a backend bug or driver abort).
    pub panic_rate: f64,
    /// Seed of the fault sequence.
    pub seed: u64,
}

/// Wraps a backend and injects faults per [`FaultPlan`], reproducibly.
pub struct FaultyBackend {
    inner: Box<dyn Backend>,
    plan: FaultPlan,
    draws: u64,
}

impl FaultyBackend {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn Backend>, plan: FaultPlan) -> Self {
        Self {
            inner,
            plan,
            draws: 0,
        }
    }

    fn draw(&mut self) -> f64 {
        self.draws += 1;
        (mix64(self.plan.seed ^ self.draws.wrapping_mul(0x9E37_79B9)) >> 11) as f64
            / (1u64 << 53) as f64
    }
}

impl Backend for FaultyBackend {
    fn info(&self) -> &DeviceInfo {
        self.inner.info()
    }

    fn execute(&mut self, plan: &StepPlan<'_>) -> Result<StepOutput, BackendError> {
        let u = self.draw();
        if u < self.plan.fail_rate {
            return Err(BackendError::StepFailed("injected fault".into()));
        }
        if u < self.plan.fail_rate + self.plan.hang_rate {
            std::thread::sleep(self.plan.hang);
        } else if u < self.plan.fail_rate + self.plan.hang_rate + self.plan.panic_rate {
            panic!("injected backend panic");
        }
        self.inner.execute(plan)
    }

    fn release(&mut self, seq: SeqId) {
        self.inner.release(seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::BackendKind;
    use crate::profile::Vendor;

    struct Ok0(DeviceInfo);
    impl Backend for Ok0 {
        fn info(&self) -> &DeviceInfo {
            &self.0
        }
        fn execute(&mut self, _: &StepPlan<'_>) -> Result<StepOutput, BackendError> {
            Ok(StepOutput::default())
        }
    }

    #[test]
    fn failure_rate_is_roughly_honoured_and_reproducible() {
        let info = DeviceInfo {
            kind: BackendKind::Sim,
            vendor: Vendor::Cpu,
            name: "x".into(),
            memory_bytes: 0,
            kv_blocks: 0,
            block_size: 16,
        };
        let plan = FaultPlan {
            fail_rate: 0.1,
            hang_rate: 0.0,
            hang: Duration::ZERO,
            panic_rate: 0.0,
            seed: 7,
        };
        let run = || {
            let mut b = FaultyBackend::new(Box::new(Ok0(info.clone())), plan);
            (0..10_000)
                .map(|_| b.execute(&StepPlan::default()).is_err())
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let fails = a.iter().filter(|&&f| f).count();
        assert!((800..1200).contains(&fails), "{fails}");
    }
}
