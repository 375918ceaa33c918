//! TEMPORARY stand-in for `switchyard_scheduler::router`, mirroring its API
//! exactly so the simulator compiles before the real router merges.
//! Delete this file and switch `crate::router` to the real module on merge.

#![allow(dead_code)]

use std::time::Duration;

use switchyard_backends::CostModel;
use switchyard_scheduler::Load;

/// Device index in a fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceId(pub u32);

/// Request shape class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShapeClass {
    /// Long prompt, short output.
    PrefillHeavy,
    /// Short prompt, long output.
    DecodeHeavy,
    /// Neither.
    Balanced,
}

/// Context bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextBucket(pub u32);

/// Request shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Output cap.
    pub max_tokens: u32,
    /// Expected output.
    pub expected_output_tokens: u32,
    /// Class.
    pub class: ShapeClass,
    /// Context bucket.
    pub context_bucket: ContextBucket,
}

/// Routing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// Cheapest device meeting the SLO.
    Cost,
    /// Lowest predicted latency.
    Latency,
    /// Rotate.
    RoundRobin,
    /// Fewest queued tokens.
    LeastLoaded,
    /// Longest cached prefix.
    Prefix,
}

impl PolicyKind {
    /// Every policy.
    pub const ALL: [PolicyKind; 5] = [
        PolicyKind::Cost,
        PolicyKind::Latency,
        PolicyKind::RoundRobin,
        PolicyKind::LeastLoaded,
        PolicyKind::Prefix,
    ];
}

impl std::str::FromStr for PolicyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "cost" => PolicyKind::Cost,
            "latency" => PolicyKind::Latency,
            "round-robin" => PolicyKind::RoundRobin,
            "least-loaded" => PolicyKind::LeastLoaded,
            "prefix" => PolicyKind::Prefix,
            _ => return Err(format!("unknown policy `{s}`")),
        })
    }
}

/// Latency objective.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slo {
    /// TTFT target.
    pub ttft: Duration,
    /// TPOT target.
    pub tpot: Duration,
    /// Percentile.
    pub percentile: f64,
}

impl Slo {
    /// From milliseconds.
    pub fn from_ms(ttft_ms: f64, tpot_ms: f64, percentile: f64) -> Self {
        Self {
            ttft: Duration::from_secs_f64(ttft_ms / 1e3),
            tpot: Duration::from_secs_f64(tpot_ms / 1e3),
            percentile,
        }
    }
}

/// Router settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterConfig {
    /// Policy.
    pub policy: PolicyKind,
    /// SLO.
    pub slo: Slo,
    /// Prefix match threshold.
    pub prefix_min_match: f64,
    /// Prefix balance slack.
    pub prefix_balance_tokens: u64,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            policy: PolicyKind::Cost,
            slo: Slo::from_ms(2000.0, 100.0, 0.95),
            prefix_min_match: 0.5,
            prefix_balance_tokens: 16_384,
        }
    }
}

/// What the router sees of a device.
#[derive(Debug, Clone)]
pub struct DeviceView<'a> {
    /// Id.
    pub id: DeviceId,
    /// Cost model.
    pub cost: &'a CostModel,
    /// Load.
    pub load: Load,
    /// Healthy.
    pub healthy: bool,
    /// Longest sequence.
    pub max_seq_tokens: u32,
    /// Batch seqs.
    pub max_num_seqs: u32,
    /// Batch tokens.
    pub max_batched_tokens: u32,
    /// Cached prefix tokens for this request.
    pub cached_prefix_tokens: u32,
}

/// A routing request.
#[derive(Debug, Clone, Copy)]
pub struct RouteRequest {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Output cap.
    pub max_tokens: u32,
}

/// Why.
#[derive(Debug, Clone, PartialEq)]
pub enum DecisionReason {
    /// Picked by policy.
    Policy,
}

/// Per-device score.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceScore {
    /// Device.
    pub device: DeviceId,
    /// Score.
    pub score: f64,
}

/// A routing decision.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Chosen device.
    pub device: DeviceId,
    /// Policy used.
    pub policy: PolicyKind,
    /// Shape.
    pub shape: Shape,
    /// Why.
    pub reason: DecisionReason,
    /// Scores.
    pub scores: Vec<DeviceScore>,
}

/// Routing failure.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RouteError {
    /// No device.
    #[error("no healthy device")]
    NoHealthyDevice,
    /// Too long.
    #[error("prompt of {prompt_tokens} tokens exceeds {max_supported}")]
    PromptTooLong {
        /// Prompt.
        prompt_tokens: u32,
        /// Limit.
        max_supported: u32,
    },
}

/// The router.
#[derive(Debug, Clone)]
pub struct Router {
    config: RouterConfig,
    next: u32,
}

impl Router {
    /// New.
    pub fn new(config: RouterConfig) -> Self {
        Self { config, next: 0 }
    }

    /// Routes one request.
    pub fn route(
        &mut self,
        req: &RouteRequest,
        fleet: &[DeviceView<'_>],
    ) -> Result<Decision, RouteError> {
        let ok: Vec<&DeviceView> = fleet
            .iter()
            .filter(|d| d.healthy && req.prompt_tokens < d.max_seq_tokens)
            .collect();
        if ok.is_empty() {
            let max = fleet.iter().map(|d| d.max_seq_tokens).max().unwrap_or(0);
            return Err(if fleet.iter().any(|d| d.healthy) {
                RouteError::PromptTooLong {
                    prompt_tokens: req.prompt_tokens,
                    max_supported: max,
                }
            } else {
                RouteError::NoHealthyDevice
            });
        }
        let ttft = |d: &DeviceView| {
            d.load.predicted_queue_delay.as_secs_f64()
                + d.cost.prefill_time(req.prompt_tokens, 0).as_secs_f64()
        };
        let tpot = |d: &DeviceView| {
            let b = d.load.running + 1;
            d.cost
                .decode_step_time(
                    b,
                    d.load.running_context_tokens + u64::from(req.prompt_tokens),
                )
                .as_secs_f64()
        };
        let queued =
            |d: &DeviceView| d.load.queued_prefill_tokens + d.load.outstanding_decode_tokens;
        let pick = match self.config.policy {
            PolicyKind::RoundRobin => {
                self.next = self.next.wrapping_add(1);
                ok[(self.next as usize) % ok.len()]
            }
            PolicyKind::LeastLoaded | PolicyKind::Prefix => {
                *ok.iter().min_by_key(|d| queued(d)).unwrap()
            }
            PolicyKind::Latency => *ok
                .iter()
                .min_by(|a, b| ttft(a).total_cmp(&ttft(b)))
                .unwrap(),
            PolicyKind::Cost => {
                let slo = self.config.slo;
                let meets = |d: &&&DeviceView| {
                    ttft(d) <= slo.ttft.as_secs_f64() * 0.5
                        && tpot(d) <= slo.tpot.as_secs_f64() * 0.8
                };
                let price = |d: &DeviceView| {
                    d.cost.usd_per_second()
                        * (d.cost.prefill_time(req.prompt_tokens, 0).as_secs_f64()
                            + tpot(d) * f64::from(req.max_tokens) / f64::from(d.load.running + 1))
                };
                ok.iter()
                    .filter(meets)
                    .min_by(|a, b| price(a).total_cmp(&price(b)))
                    .copied()
                    .unwrap_or_else(|| {
                        *ok.iter()
                            .min_by(|a, b| ttft(a).total_cmp(&ttft(b)))
                            .unwrap()
                    })
            }
        };
        Ok(Decision {
            device: pick.id,
            policy: self.config.policy,
            shape: Shape {
                prompt_tokens: req.prompt_tokens,
                max_tokens: req.max_tokens,
                expected_output_tokens: req.max_tokens,
                class: ShapeClass::Balanced,
                context_bucket: ContextBucket(0),
            },
            reason: DecisionReason::Policy,
            scores: Vec::new(),
        })
    }

    /// Learns output lengths.
    pub fn observe_output(&mut self, _max_tokens: u32, _output_tokens: u32) {}
}
