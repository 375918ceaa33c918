//! Token sampling shared by every real backend, so a request generates the
//! same tokens whichever device serves it.
//!
//! # Rules
//! - `temperature == 0` (or below [`GREEDY_TEMPERATURE`]): greedy, the
//!   argmax of the logits; ties go to the lowest token id (like NumPy's
//!   `argmax`). NaN logits are never chosen.
//! - otherwise: keep the `top_k` most likely tokens (0 = all), divide by the
//!   temperature, softmax, keep the smallest most-likely prefix whose mass
//!   reaches `top_p` (1 = all), and draw from what is left.
//!
//! # Determinism
//! The draw comes from a SplitMix64 stream seeded by
//! `mix(seed, position)`, where `seed` is `SamplingParams::seed` or, when
//! absent, the sequence id, and `position` is the index the sampled token
//! will occupy in its sequence. The result therefore depends only on the
//! logits, the parameters, the sequence and the position: not on batching,
//! step boundaries or preemption.

use std::cmp::Ordering;

use crate::contract::{SamplingParams, SeqId, TokenLogprobs, MAX_LOGPROBS};
use crate::hash::mix64;
pub use crate::hash::SplitMix64;

/// Temperatures at or below this are treated as greedy.
pub const GREEDY_TEMPERATURE: f32 = 1e-5;

/// The seed of the draw for `seq`'s token at `position`.
pub fn seed_for(params: &SamplingParams, seq: SeqId, position: u32) -> u64 {
    let base = params.seed.unwrap_or(seq.0);
    mix64(mix64(base) ^ u64::from(position).wrapping_mul(0xD6E8_FEB8_6659_FD93))
}

/// Index of the largest logit (lowest index on ties, NaN never wins); `None` if there is none.
pub fn argmax(logits: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &x) in logits.iter().enumerate() {
        if x.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| x > b) {
            best = Some((i, x));
        }
    }
    best.map(|(i, _)| i as u32)
}

/// Whether `params` pick the most likely token (so a device may take the argmax itself).
pub fn is_greedy(params: &SamplingParams) -> bool {
    params.temperature <= GREEDY_TEMPERATURE || params.top_k == 1
}

/// Picks the next token of `seq` at `position` from `logits`; `None` if every logit is NaN or there are none.
pub fn sample(logits: &[f32], params: &SamplingParams, seq: SeqId, position: u32) -> Option<u32> {
    if is_greedy(params) {
        return argmax(logits);
    }
    let mut cand: Vec<(f32, u32)> = logits
        .iter()
        .enumerate()
        .filter(|(_, x)| !x.is_nan())
        .map(|(i, &x)| (x, i as u32))
        .collect();
    if cand.is_empty() {
        return None;
    }
    let k = params.top_k as usize;
    if k > 0 && k < cand.len() {
        cand.select_nth_unstable_by(k - 1, by_logit_desc);
        cand.truncate(k);
    }
    let top_p = f64::from(params.top_p);
    if top_p < 1.0 {
        cand.sort_unstable_by(by_logit_desc);
    }
    let weights = softmax_weights(&cand, params.temperature);
    let total: f64 = weights.iter().sum();
    let keep = if top_p < 1.0 {
        nucleus_len(&weights, total * top_p.max(0.0))
    } else {
        weights.len()
    };
    let mass: f64 = weights[..keep].iter().sum();
    let mut rng = SplitMix64::new(seed_for(params, seq, position));
    let mut u = rng.next_f64() * mass;
    for (w, &(_, id)) in weights[..keep].iter().zip(&cand) {
        if u < *w {
            return Some(id);
        }
        u -= w;
    }
    cand[..keep].last().map(|&(_, id)| id)
}

/// Log-probabilities of `token` and of the `top` most likely tokens under
/// the softmax of the raw `logits` (NaN counts as impossible). Computed in
/// f64 with the log-sum-exp shift, so large logits neither overflow nor lose
/// the small differences between the top tokens.
pub fn logprobs(logits: &[f32], token: u32, top: u8) -> TokenLogprobs {
    let max = logits
        .iter()
        .filter(|x| !x.is_nan())
        .map(|&x| f64::from(x))
        .fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logits
        .iter()
        .filter(|x| !x.is_nan())
        .map(|&x| (f64::from(x) - max).exp())
        .sum();
    let log_z = max + sum.ln();
    let lp = |x: f32| -> f32 {
        if x.is_nan() || !log_z.is_finite() {
            f32::NEG_INFINITY
        } else {
            (f64::from(x) - log_z) as f32
        }
    };
    let logprob = logits
        .get(token as usize)
        .map_or(f32::NEG_INFINITY, |&x| lp(x));
    let k = usize::from(top.min(MAX_LOGPROBS));
    let mut cand: Vec<(f32, u32)> = logits
        .iter()
        .enumerate()
        .filter(|(_, x)| !x.is_nan())
        .map(|(i, &x)| (x, i as u32))
        .collect();
    if k > 0 && k < cand.len() {
        cand.select_nth_unstable_by(k - 1, by_logit_desc);
    }
    cand.truncate(k);
    cand.sort_unstable_by(by_logit_desc);
    TokenLogprobs {
        logprob,
        top: cand.into_iter().map(|(x, id)| (id, lp(x))).collect(),
    }
}

/// The log-probabilities of `token` sampled from `logits`, boxed as a step
/// output holds them, when `params` asked for them.
pub fn logprobs_for(
    logits: &[f32],
    params: &SamplingParams,
    token: u32,
) -> Option<Box<TokenLogprobs>> {
    params
        .logprobs
        .map(|top| Box::new(logprobs(logits, token, top)))
}

/// Descending by logit, ascending by token id among equals: a total, deterministic order.
fn by_logit_desc(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
    b.0.partial_cmp(&a.0)
        .unwrap_or(Ordering::Equal)
        .then(a.1.cmp(&b.1))
}

/// Unnormalised softmax weights `exp((x - max) / T)`; the largest is 1.
fn softmax_weights(cand: &[(f32, u32)], temperature: f32) -> Vec<f64> {
    let max = cand
        .iter()
        .map(|c| f64::from(c.0))
        .fold(f64::NEG_INFINITY, f64::max);
    let t = f64::from(temperature);
    cand.iter()
        .map(|c| {
            let w = ((f64::from(c.0) - max) / t).exp();
            if w.is_nan() {
                0.0
            } else {
                w
            }
        })
        .collect()
}

/// Length of the shortest prefix of `weights` (sorted descending) whose sum reaches `target`; at least 1.
fn nucleus_len(weights: &[f64], target: f64) -> usize {
    let mut cum = 0.0;
    for (i, w) in weights.iter().enumerate() {
        cum += w;
        if cum >= target {
            return i + 1;
        }
    }
    weights.len().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits(seed: u64, n: usize) -> Vec<f32> {
        let mut r = SplitMix64::new(seed);
        (0..n).map(|_| (r.next_f64() * 8.0 - 4.0) as f32).collect()
    }

    fn params(temperature: f32, top_k: u32, top_p: f32, seed: Option<u64>) -> SamplingParams {
        SamplingParams {
            temperature,
            top_p,
            top_k,
            seed,
            logprobs: None,
        }
    }

    #[test]
    fn logprobs_are_a_log_softmax_with_sorted_alternatives() {
        let l = [1.0f32, 3.0, f32::NAN, 2.0, 3.0];
        let got = logprobs(&l, 3, 3);
        let z: f64 = [1.0f64, 3.0, 2.0, 3.0].iter().map(|x| x.exp()).sum();
        let want = |x: f64| (x - z.ln()) as f32;
        assert!((got.logprob - want(2.0)).abs() < 1e-6);
        // Ties go to the lowest id; NaN is never listed.
        let ids: Vec<u32> = got.top.iter().map(|t| t.0).collect();
        assert_eq!(ids, vec![1, 4, 3]);
        assert!((got.top[0].1 - want(3.0)).abs() < 1e-6);
        let mass: f32 = [0usize, 1, 3, 4]
            .iter()
            .map(|&i| logprobs(&l, i as u32, 0).logprob.exp())
            .sum();
        assert!((mass - 1.0).abs() < 1e-5);
        assert!(logprobs(&l, 2, 0).logprob.is_infinite());
        assert_eq!(logprobs(&l, 99, 50).top.len(), 4);
    }

    #[test]
    fn logprobs_survive_huge_logits() {
        let l = [1e30f32, 1e30 - 1e24, -1e30];
        let got = logprobs(&l, 0, 2);
        assert!(got.logprob.is_finite() && got.logprob <= 0.0);
        assert!(got.top.iter().all(|t| t.1.is_finite() || t.0 == 2));
    }

    #[test]
    fn greedy_is_argmax_lowest_on_ties() {
        let l = [0.5, 3.0, -1.0, 3.0, f32::NAN];
        assert_eq!(argmax(&l), Some(1));
        let p = SamplingParams::default();
        assert_eq!(sample(&l, &p, SeqId(7), 3), Some(1));
        for s in 0..50 {
            let l = logits(s, 300);
            let best = (0..l.len())
                .max_by(|&a, &b| l[a].total_cmp(&l[b]).then(b.cmp(&a)))
                .unwrap() as u32;
            assert_eq!(sample(&l, &p, SeqId(s), 0), Some(best));
        }
    }

    #[test]
    fn no_logits_or_all_nan_gives_none() {
        let p = params(1.0, 0, 1.0, None);
        assert_eq!(sample(&[], &p, SeqId(1), 0), None);
        assert_eq!(sample(&[f32::NAN; 4], &p, SeqId(1), 0), None);
        assert_eq!(argmax(&[]), None);
    }

    #[test]
    fn top_k_one_is_greedy() {
        for s in 0..50 {
            let l = logits(s, 259);
            let p = params(1.3, 1, 0.9, Some(s));
            assert_eq!(sample(&l, &p, SeqId(s), s as u32), argmax(&l));
        }
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_varies_with_seed_and_position() {
        let l = logits(11, 259);
        let p = params(1.0, 50, 0.95, Some(42));
        let draw = |p: &SamplingParams, seq: u64, pos: u32| sample(&l, p, SeqId(seq), pos);
        let a: Vec<_> = (0..64).map(|pos| draw(&p, 1, pos)).collect();
        let b: Vec<_> = (0..64).map(|pos| draw(&p, 1, pos)).collect();
        assert_eq!(a, b);
        // An explicit seed overrides the sequence id.
        let c: Vec<_> = (0..64).map(|pos| draw(&p, 999, pos)).collect();
        assert_eq!(a, c);
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert!(distinct.len() > 5, "positions draw different tokens: {a:?}");
        let q = params(1.0, 50, 0.95, Some(43));
        let d: Vec<_> = (0..64).map(|pos| draw(&q, 1, pos)).collect();
        assert_ne!(a, d);
        // Without a seed, the sequence id seeds the draw.
        let r = params(1.0, 50, 0.95, None);
        let e: Vec<_> = (0..64).map(|pos| draw(&r, 5, pos)).collect();
        let f: Vec<_> = (0..64).map(|pos| draw(&r, 6, pos)).collect();
        assert_ne!(e, f);
    }

    #[test]
    fn top_k_and_top_p_restrict_the_candidates() {
        let l = logits(5, 259);
        let mut order: Vec<u32> = (0..259).collect();
        order.sort_by(|&a, &b| l[b as usize].total_cmp(&l[a as usize]));
        let p = params(5.0, 3, 1.0, Some(1));
        for pos in 0..200 {
            let t = sample(&l, &p, SeqId(0), pos).unwrap();
            assert!(order[..3].contains(&t), "{t} outside top 3");
        }
        // A tiny nucleus keeps only the most likely token.
        let p = params(1.0, 0, 1e-6, Some(1));
        for pos in 0..50 {
            assert_eq!(sample(&l, &p, SeqId(0), pos), Some(order[0]));
        }
    }

    #[test]
    fn frequencies_follow_the_softmax() {
        let l = [0.0f32, (3.0f32).ln()];
        let p = params(1.0, 0, 1.0, Some(9));
        let ones = (0..4000)
            .filter(|&pos| sample(&l, &p, SeqId(0), pos) == Some(1))
            .count();
        // P(1) = 3/4.
        assert!((2850..3150).contains(&ones), "{ones}");
    }
}
