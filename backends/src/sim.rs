//! The simulated device: executes step plans instantly and reports the step
//! time the cost model predicts for exactly that plan.
//!
//! Tokens are a deterministic function of (previous token, position), so a
//! sequence generates the same tokens whatever it is batched with, and never
//! an end-of-sequence token: a simulated sequence always runs to its
//! `max_tokens`, which is what load generators ask for with `ignore_eos`.

use crate::contract::{Backend, BackendKind, DeviceInfo, StepOutput, StepPlan};
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
}

impl Backend for SimBackend {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn execute(&mut self, plan: &StepPlan<'_>) -> Result<StepOutput, BackendError> {
        let mut shape = StepShape::default();
        let mut tokens = Vec::with_capacity(plan.seqs.len());
        let bs = self.info.block_size;
        for s in &plan.seqs {
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
            tokens.push(if s.sample {
                let last = s.tokens.last().copied().unwrap_or(0);
                Some(self.next_token(last, s.end_pos()))
            } else {
                None
            });
        }
        Ok(StepOutput {
            tokens,
            elapsed: self.cost.step_time(&shape),
        })
    }
}
