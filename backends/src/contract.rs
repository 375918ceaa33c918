//! The device contract: what an engine asks a backend to run, and what comes back.
//!
//! A [`StepPlan`] is one iteration of continuous batching: for each scheduled
//! sequence, the new tokens to compute, their start position, the sequence's
//! block table and whether to sample a token after them. Token ids and block
//! tables are stored in two flat buffers that the engine reuses across steps,
//! so building a plan of hundreds of sequences allocates nothing.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::error::BackendError;
use crate::profile::Vendor;

/// Identifies a sequence (one request) across the engine, router and backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct SeqId(pub u64);

impl fmt::Display for SeqId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seq-{}", self.0)
    }
}

/// Index of a physical KV block in a device's pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct BlockId(pub u32);

/// How to pick the next token from the logits; identical on every backend.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SamplingParams {
    /// Softmax temperature; 0 means greedy.
    pub temperature: f32,
    /// Nucleus sampling mass in (0, 1]; 1 disables it.
    pub top_p: f32,
    /// Keep only the k most likely tokens; 0 disables it.
    pub top_k: u32,
    /// Seed for reproducible sampling; derived from the sequence id when absent.
    pub seed: Option<u64>,
    /// Return the sampled token's log-probability and this many most likely
    /// alternatives (at most [`MAX_LOGPROBS`]); `None` returns none.
    pub logprobs: Option<u8>,
}

/// Most alternatives a request may ask log-probabilities for (vLLM's default cap).
pub const MAX_LOGPROBS: u8 = 20;

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: None,
            logprobs: None,
        }
    }
}

/// One sequence's share of a step. Borrows token ids and the block table
/// from the engine, so planning a step copies no per-sequence data.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledSeq<'a> {
    /// Which sequence.
    pub seq: SeqId,
    /// Position of the first new token (tokens before it are in the KV cache).
    pub start_pos: u32,
    /// Tokens computed this step.
    pub tokens: &'a [u32],
    /// Block table covering every position up to `end_pos`.
    pub block_table: &'a [BlockId],
    /// Whether the backend samples a token after the last new token.
    pub sample: bool,
    /// Sampling parameters, used when `sample` is set.
    pub sampling: SamplingParams,
}

impl ScheduledSeq<'_> {
    /// Number of tokens computed for this sequence this step.
    pub fn num_new_tokens(&self) -> u32 {
        self.tokens.len() as u32
    }

    /// Tokens in the sequence's cache after this step.
    pub fn end_pos(&self) -> u32 {
        self.start_pos + self.num_new_tokens()
    }
}

/// A KV block copy the backend must perform before the step (copy-on-write).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BlockCopy {
    /// Block to read.
    pub src: BlockId,
    /// Block to overwrite.
    pub dst: BlockId,
}

/// One engine step: which sequences run, with which tokens and block tables.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepPlan<'a> {
    /// Scheduled sequences, in the order outputs are reported.
    pub seqs: Vec<ScheduledSeq<'a>>,
    /// Block copies to perform before computing.
    pub copies: Vec<BlockCopy>,
}

impl StepPlan<'_> {
    /// Whether nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Total new tokens across sequences.
    pub fn num_tokens(&self) -> usize {
        self.seqs.iter().map(|s| s.tokens.len()).sum()
    }
}

/// Log-probabilities of one sampled token, from the model's raw logits
/// (before temperature, top-k and top-p), as vLLM reports them by default.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenLogprobs {
    /// The sampled token's log-probability.
    pub logprob: f32,
    /// The most likely tokens and their log-probabilities, most likely first
    /// (lowest id first among equals).
    pub top: Vec<(u32, f32)>,
}

/// What a backend returns for a step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepOutput {
    /// One entry per scheduled sequence, in plan order: the sampled token, if it sampled.
    pub tokens: Vec<Option<u32>>,
    /// Per scheduled sequence, in plan order: the sampled token's
    /// log-probabilities where its sampling asked for them. Empty when no
    /// sequence of the step asked, so the common step allocates nothing.
    pub logprobs: Vec<Option<Box<TokenLogprobs>>>,
    /// Time the step took: measured on real devices, predicted on simulated ones.
    pub elapsed: Duration,
}

impl StepOutput {
    /// An output for `plan` with nothing sampled yet: room for a log-probability
    /// entry per sequence only when some sequence of the plan asked for one.
    pub fn for_plan(plan: &StepPlan<'_>) -> Self {
        let n = plan.seqs.len();
        let asked = plan
            .seqs
            .iter()
            .any(|s| s.sample && s.sampling.logprobs.is_some());
        Self {
            tokens: vec![None; n],
            logprobs: if asked { vec![None; n] } else { Vec::new() },
            elapsed: Duration::ZERO,
        }
    }

    /// Whether the step's `i`-th sequence wants log-probabilities.
    pub fn wants_logprobs(&self, i: usize) -> bool {
        self.logprobs.len() > i
    }

    /// Records the `i`-th sequence's log-probabilities (ignored unless it asked).
    pub fn set_logprobs(&mut self, i: usize, logprobs: Option<Box<TokenLogprobs>>) {
        if let Some(slot) = self.logprobs.get_mut(i) {
            *slot = logprobs;
        }
    }
}

/// Which implementation executes steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Simulated device driven by the cost model.
    Sim,
    /// ONNX Runtime on the CPU.
    Onnx,
    /// NVIDIA CUDA.
    Cuda,
    /// AMD ROCm.
    Rocm,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Sim => "sim",
            BackendKind::Onnx => "onnx",
            BackendKind::Cuda => "cuda",
            BackendKind::Rocm => "rocm",
        })
    }
}

/// What a started backend reports about itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceInfo {
    /// Implementation.
    pub kind: BackendKind,
    /// Vendor of the hardware.
    pub vendor: Vendor,
    /// Device name as the driver reports it (or the profile's description).
    pub name: String,
    /// Device memory, bytes.
    pub memory_bytes: u64,
    /// Physical KV blocks the backend holds.
    pub kv_blocks: u32,
    /// Tokens per KV block.
    pub block_size: u32,
}

/// A device that executes step plans. Implementations own the physical KV pool.
pub trait Backend: Send {
    /// What this device is and how much KV it holds.
    fn info(&self) -> &DeviceInfo;

    /// Runs one step; a failure fails the step, not the device's other work.
    fn execute(&mut self, plan: &StepPlan<'_>) -> Result<StepOutput, BackendError>;

    /// Drops any per-sequence state the backend keeps outside KV blocks.
    fn release(&mut self, _seq: SeqId) {}
}

/// Checks that every copy stays inside a pool of `num_blocks` blocks.
pub fn check_copies(copies: &[BlockCopy], num_blocks: usize) -> Result<(), BackendError> {
    match copies
        .iter()
        .find(|c| c.src.0 as usize >= num_blocks || c.dst.0 as usize >= num_blocks)
    {
        Some(c) => Err(BackendError::InvalidPlan(format!(
            "copy {} -> {} outside pool of {num_blocks}",
            c.src.0, c.dst.0
        ))),
        None => Ok(()),
    }
}

/// Checks that every sequence has new tokens inside the vocabulary and a
/// block table covering its positions inside a pool of `num_blocks`.
pub fn check_seqs(
    seqs: &[ScheduledSeq<'_>],
    block_size: u32,
    num_blocks: usize,
    vocab: u32,
) -> Result<(), BackendError> {
    let bs = block_size as usize;
    for s in seqs {
        let need = (s.end_pos() as usize).div_ceil(bs);
        if s.tokens.is_empty() || s.block_table.len() < need {
            return Err(BackendError::InvalidPlan(format!(
                "{}: {} new tokens, {} blocks for {} positions",
                s.seq,
                s.tokens.len(),
                s.block_table.len(),
                s.end_pos()
            )));
        }
        if let Some(b) = s.block_table[..need]
            .iter()
            .find(|b| b.0 as usize >= num_blocks)
        {
            return Err(BackendError::InvalidPlan(format!(
                "{}: block {} outside pool of {num_blocks}",
                s.seq, b.0
            )));
        }
        if let Some(t) = s.tokens.iter().find(|&&t| t >= vocab) {
            return Err(BackendError::InvalidPlan(format!(
                "{}: token {t} outside vocabulary of {vocab}",
                s.seq
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_counts_tokens() {
        let blocks = [BlockId(0), BlockId(7)];
        let plan = StepPlan {
            seqs: vec![
                ScheduledSeq {
                    seq: SeqId(1),
                    start_pos: 0,
                    tokens: &[1, 2, 3],
                    block_table: &blocks[..1],
                    sample: false,
                    sampling: SamplingParams::default(),
                },
                ScheduledSeq {
                    seq: SeqId(2),
                    start_pos: 16,
                    tokens: &[9],
                    block_table: &blocks,
                    sample: true,
                    sampling: SamplingParams::default(),
                },
            ],
            copies: vec![],
        };
        assert_eq!(plan.num_tokens(), 4);
        assert_eq!(plan.seqs[1].end_pos(), 17);
        assert!(!plan.is_empty());
    }
}
