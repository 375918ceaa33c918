//! Picking: choosing one device from already computed [`DeviceScore`]s.
//! Every policy considers eligible devices only and breaks exact ties by the
//! lowest [`DeviceId`], so a decision is a pure function of its inputs (and,
//! for round-robin, of the previous pick).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::score::DeviceScore;
use super::{DecisionReason, DeviceId};

/// How the router picks among eligible devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    /// Cheapest device meeting the SLO; lowest end-to-end latency if none does.
    #[default]
    Cost,
    /// Lowest predicted end-to-end latency.
    Latency,
    /// Eligible devices in turn, by ascending id.
    RoundRobin,
    /// Fewest outstanding tokens.
    LeastLoaded,
    /// Longest cached prefix unless that device is too busy, else least loaded.
    Prefix,
}

impl PolicyKind {
    /// Every policy, in declaration order.
    pub const ALL: [PolicyKind; 5] = [
        Self::Cost,
        Self::Latency,
        Self::RoundRobin,
        Self::LeastLoaded,
        Self::Prefix,
    ];

    /// Kebab-case name, as accepted by `FromStr` and serde.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cost => "cost",
            Self::Latency => "latency",
            Self::RoundRobin => "round-robin",
            Self::LeastLoaded => "least-loaded",
            Self::Prefix => "prefix",
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the `cost` policy optimises among the devices predicted to meet the SLO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// A fixed fleet, paid busy or idle: an idle device costs nothing more,
    /// so serve each request fastest (lowest predicted e2e; tie: cheaper).
    #[default]
    Fixed,
    /// An elastic fleet, paid for busy time: pack requests onto the
    /// cheapest device meeting the SLO so idle devices can be scaled down.
    Elastic,
}

impl Objective {
    /// Kebab-case name, as accepted by `FromStr` and serde.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fixed => "fixed",
            Self::Elastic => "elastic",
        }
    }
}

impl fmt::Display for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An objective name other than `fixed` or `elastic`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown objective `{0}`; valid objectives: fixed, elastic")]
pub struct UnknownObjective(pub String);

impl FromStr for Objective {
    type Err = UnknownObjective;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fixed" => Ok(Self::Fixed),
            "elastic" => Ok(Self::Elastic),
            _ => Err(UnknownObjective(s.to_string())),
        }
    }
}

/// A policy name that is not one of [`PolicyKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown routing policy `{0}`; valid policies: cost, latency, round-robin, least-loaded, prefix")]
pub struct UnknownPolicy(pub String);

impl FromStr for PolicyKind {
    type Err = UnknownPolicy;

    /// Parses a kebab-case name; case and `_` for `-` are tolerated.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Self::ALL
            .into_iter()
            .find(|p| {
                let name = p.as_str();
                name.len() == wanted.len()
                    && name
                        .bytes()
                        .zip(wanted.bytes())
                        .all(|(a, b)| a == b.to_ascii_lowercase() || (a == b'-' && b == b'_'))
            })
            .ok_or_else(|| UnknownPolicy(s.to_string()))
    }
}

/// Tunables of the prefix policy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PrefixParams {
    pub prompt_tokens: u32,
    pub min_match: f64,
    pub balance_tokens: u64,
}

/// Index of the eligible score minimising `cmp`, exact ties to the lowest id.
fn best(
    scores: &[DeviceScore],
    keep: impl Fn(&DeviceScore) -> bool,
    cmp: impl Fn(&DeviceScore, &DeviceScore) -> Ordering,
) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, s) in scores.iter().enumerate() {
        if !s.eligible || !keep(s) {
            continue;
        }
        best = match best {
            Some(b)
                if cmp(s, &scores[b])
                    .then(s.device.cmp(&scores[b].device))
                    .is_ge() =>
            {
                Some(b)
            }
            _ => Some(i),
        };
    }
    best
}

fn by_e2e(a: &DeviceScore, b: &DeviceScore) -> Ordering {
    a.e2e.cmp(&b.e2e)
}

fn by_outstanding(a: &DeviceScore, b: &DeviceScore) -> Ordering {
    a.outstanding_tokens.cmp(&b.outstanding_tokens)
}

/// Among devices meeting the SLO: the fastest band (`Fixed`) or the
/// cheapest (`Elastic`; tie: lower e2e); if none meets it, the fastest band of all.
pub(crate) fn cost(
    scores: &[DeviceScore],
    objective: Objective,
) -> Option<(usize, DecisionReason)> {
    let by_cost = |a: &DeviceScore, b: &DeviceScore| a.cost_usd.total_cmp(&b.cost_usd);
    match objective {
        Objective::Fixed => {
            fastest_band(scores, |s| s.meets_slo).map(|i| (i, DecisionReason::FastestMeetingSlo))
        }
        Objective::Elastic => best(
            scores,
            |s| s.meets_slo,
            |a, b| by_cost(a, b).then_with(|| by_e2e(a, b)),
        )
        .map(|i| (i, DecisionReason::CheapestMeetingSlo)),
    }
    .or_else(|| {
        fastest_band(scores, |_| true).map(|i| (i, DecisionReason::NoDeviceMeetsSloLowestLatency))
    })
}

/// Devices whose predicted e2e is within this factor of the fastest count as equally fast.
pub const FASTEST_BAND: f64 = 1.1;

/// Among the eligible scores that `keep`, those within [`FASTEST_BAND`] of
/// the lowest e2e, the one with the fewest outstanding tokens (tie: lower
/// e2e). Predictions of near-equal devices differ by less than their
/// error, and picking the strict minimum herds arrivals onto whichever
/// device the last snapshot flatters; balancing queues among them is what
/// keeps TTFT tails short (join-the-shortest-queue), while a clearly slower
/// device is still only used when the fast ones are loaded.
fn fastest_band(scores: &[DeviceScore], keep: impl Fn(&DeviceScore) -> bool) -> Option<usize> {
    let fastest = best(scores, &keep, by_e2e)?;
    let limit = band_limit(scores[fastest].e2e);
    best(
        scores,
        |s| keep(s) && s.e2e <= limit,
        |a, b| by_outstanding(a, b).then_with(|| by_e2e(a, b)),
    )
}

/// The slowest e2e within [`FASTEST_BAND`] of a fastest `e2e`.
pub(crate) fn band_limit(fastest: Duration) -> Duration {
    // Saturated predictions (`Duration::MAX`) must not overflow the product.
    Duration::try_from_secs_f64(fastest.as_secs_f64() * FASTEST_BAND).unwrap_or(Duration::MAX)
}

/// Lowest predicted end-to-end latency.
pub(crate) fn latency(scores: &[DeviceScore]) -> Option<(usize, DecisionReason)> {
    best(scores, |_| true, by_e2e).map(|i| (i, DecisionReason::LowestLatency))
}

/// The eligible device with the smallest id above `last`, wrapping to the smallest.
pub(crate) fn round_robin(
    scores: &[DeviceScore],
    last: Option<DeviceId>,
) -> Option<(usize, DecisionReason)> {
    let after = |s: &DeviceScore| !matches!(last, Some(l) if s.device <= l);
    best(scores, after, |_, _| Ordering::Equal)
        .or_else(|| best(scores, |_| true, |_, _| Ordering::Equal))
        .map(|i| (i, DecisionReason::RoundRobin))
}

/// Fewest outstanding tokens.
pub(crate) fn least_loaded(scores: &[DeviceScore]) -> Option<(usize, DecisionReason)> {
    best(scores, |_| true, by_outstanding).map(|i| (i, DecisionReason::LeastLoaded))
}

/// Longest cached prefix if long enough and not too busy, else least loaded.
pub(crate) fn prefix(scores: &[DeviceScore], p: PrefixParams) -> Option<(usize, DecisionReason)> {
    let (least, _) = least_loaded(scores)?;
    let longest = best(
        scores,
        |s| s.cached_prefix_tokens > 0,
        |a, b| {
            b.cached_prefix_tokens
                .cmp(&a.cached_prefix_tokens)
                .then_with(|| by_outstanding(a, b))
        },
    );
    let Some(hit) = longest else {
        return Some((least, DecisionReason::LeastLoaded));
    };
    let matched = f64::from(scores[hit].cached_prefix_tokens);
    if matched < p.min_match * f64::from(p.prompt_tokens) {
        return Some((least, DecisionReason::LeastLoaded));
    }
    let excess = scores[hit]
        .outstanding_tokens
        .saturating_sub(scores[least].outstanding_tokens);
    if excess <= p.balance_tokens {
        Some((hit, DecisionReason::LongestPrefix))
    } else {
        Some((least, DecisionReason::PrefixImbalancedLeastLoaded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        for p in PolicyKind::ALL {
            assert_eq!(p.to_string().parse::<PolicyKind>(), Ok(p));
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
            let back: PolicyKind = serde_json::from_str(&format!("\"{p}\"")).unwrap();
            assert_eq!(back, p);
        }
        assert_eq!(" Least_Loaded ".parse(), Ok(PolicyKind::LeastLoaded));
        assert_eq!(PolicyKind::default(), PolicyKind::Cost);
    }

    #[test]
    fn unknown_policy_lists_valid_names() {
        let err = "cheapest".parse::<PolicyKind>().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`cheapest`"), "{msg}");
        for p in PolicyKind::ALL {
            assert!(msg.contains(p.as_str()), "{msg}");
        }
        assert!("".parse::<PolicyKind>().is_err());
        assert!("round-robin-x".parse::<PolicyKind>().is_err());
    }

    fn score(device: u32, e2e: Duration, outstanding: u64) -> DeviceScore {
        DeviceScore {
            device: DeviceId(device),
            eligible: true,
            queue_delay: Duration::ZERO,
            ttft: Duration::ZERO,
            tpot: Duration::ZERO,
            running_tpot: Duration::ZERO,
            prefill_share: 0.0,
            e2e,
            device_seconds: 0.0,
            cost_usd: 0.0,
            meets_slo: false,
            cached_prefix_tokens: 0,
            outstanding_tokens: outstanding,
        }
    }

    #[test]
    fn fastest_band_balances_near_equal_devices_and_survives_saturation() {
        let ms = Duration::from_millis;
        // Within 10 % of the fastest: fewest outstanding tokens wins.
        let s = [
            score(0, ms(100), 900),
            score(1, ms(105), 10),
            score(2, ms(200), 0),
        ];
        assert_eq!(fastest_band(&s, |_| true), Some(1));
        // Saturated predictions do not overflow.
        let s = [score(0, Duration::MAX, 5), score(1, Duration::MAX, 1)];
        assert_eq!(fastest_band(&s, |_| true), Some(1));
    }
}
