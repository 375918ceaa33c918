//! The simulated device: executes step plans instantly and reports the step
//! time the cost model predicts for exactly that plan.
//!
//! Tokens are a deterministic function of (previous token, position), so a
//! sequence generates the same tokens whatever it is batched with, and never
//! an end-of-sequence token: a simulated sequence always runs to its
//! `max_tokens`, which is what load generators ask for with `ignore_eos`.
//!
//! Log-probabilities, where a request asks for them, follow a fixed
//! geometric distribution rather than a model: the sampled token `t` has
//! probability ½ and is the most likely, and the `k`-th alternative is
//! token `(t + k) mod vocab` with probability 2^-(k+1), so
//! `logprob = -(k+1)·ln 2`. Clients and tests see well-formed, repeatable
//! values without a model behind them.

use crate::contract::{Backend, BackendKind, DeviceInfo, StepOutput, StepPlan, TokenLogprobs};
use crate::cost::{CostModel, SeqWork, StepShape};
use crate::error::BackendError;
use crate::hash::mix64;

/// Sizing of a simulated device's KV pool and batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimConfig {
    /// Tokens per KV block.
    pub block_size: u32,
    /// Most sequences in one step.
    pub max_num_seqs: u32,
    /// Most tokens in one step.
    pub max_batched_tokens: u32,
    /// Overrides the KV capacity the cost model computes (tests use small pools).
    pub kv_blocks: Option<u32>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            block_size: 16,
            max_num_seqs: 256,
            max_batched_tokens: 8192,
            kv_blocks: None,
        }
    }
}

/// A device simulated by its cost model.
#[derive(Debug, Clone)]
pub struct SimBackend {
    cost: CostModel,
    info: DeviceInfo,
    eos: Vec<u32>,
    vocab: u32,
}

impl SimBackend {
    /// A simulated device of `cost`'s profile, with its KV pool sized by `config`.
    pub fn new(cost: CostModel, config: SimConfig) -> Result<Self, BackendError> {
        let kv_blocks = match config.kv_blocks {
            Some(n) => n,
            None => cost
                .kv_blocks(
                    config.block_size,
                    config.max_num_seqs,
                    config.max_batched_tokens,
                )
                .map_err(|e| BackendError::DoesNotFit(e.to_string()))?,
        };
        let device = cost.device();
        let info = DeviceInfo {
            kind: BackendKind::Sim,
            vendor: device.vendor,
            name: format!("simulated {}", device.description),
            memory_bytes: device.memory_bytes() as u64,
            kv_blocks,
            block_size: config.block_size,
        };
        let model = cost.model();
        Ok(Self {
            eos: model.eos_token_ids.clone(),
            vocab: model.vocab_size,
            info,
            cost,
        })
    }

    /// The cost model that times this device.
    pub fn cost_model(&self) -> &CostModel {
        &self.cost
    }

    /// The token this device generates after `prev` at position `pos`.
    #[inline]
    pub fn next_token(&self, prev: u32, pos: u32) -> u32 {
        let mut t =
            (mix64((u64::from(pos) << 32) | u64::from(prev)) % u64::from(self.vocab)) as u32;
        while self.eos.contains(&t) {
            t = (t + 1) % self.vocab;
        }
        t
    }

    /// The documented log-probabilities of `token` with `top` alternatives (see the module doc).
    pub fn logprobs(&self, token: u32, top: u8) -> TokenLogprobs {
        let ln2 = std::f32::consts::LN_2;
        let top = u32::from(top.min(crate::contract::MAX_LOGPROBS)).min(self.vocab);
        TokenLogprobs {
            logprob: -ln2,
            top: (0..top)
                .map(|k| ((token + k) % self.vocab, -((k + 1) as f32) * ln2))
                .collect(),
        }
    }
}

impl Backend for SimBackend {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn execute(&mut self, plan: &StepPlan<'_>) -> Result<StepOutput, BackendError> {
        let mut shape = StepShape::default();
        let mut out = StepOutput::for_plan(plan);
        let bs = self.info.block_size;
        for (i, s) in plan.seqs.iter().enumerate() {
            let table = s.block_table;
            if (table.len() as u64) * u64::from(bs) < u64::from(s.end_pos()) {
                return Err(BackendError::InvalidPlan(format!(
                    "{}: {} blocks cannot hold {} tokens",
                    s.seq,
                    table.len(),
                    s.end_pos()
                )));
            }
            // Only the blocks this step writes are checked: earlier ones were
            // checked by the step that wrote them.
            let first = (s.start_pos / bs) as usize;
            if let Some(b) = table[first.min(table.len())..]
                .iter()
                .find(|b| b.0 >= self.info.kv_blocks)
            {
                return Err(BackendError::InvalidPlan(format!(
                    "{}: block {} outside pool of {}",
                    s.seq, b.0, self.info.kv_blocks
                )));
            }
            shape.push(SeqWork {
                new_tokens: s.num_new_tokens(),
                context: s.start_pos,
            });
            if s.sample {
                let last = s.tokens.last().copied().unwrap_or(0);
                let token = self.next_token(last, s.end_pos());
                out.tokens[i] = Some(token);
                if let Some(top) = s.sampling.logprobs {
                    out.set_logprobs(i, Some(Box::new(self.logprobs(token, top))));
                }
            }
        }
        out.elapsed = self.cost.step_time(&shape);
        Ok(out)
    }
}
