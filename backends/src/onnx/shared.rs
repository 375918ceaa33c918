//! Decode runs of packed-layout graphs over K/V buffers the graph updates in place.
//!
//! When a `GroupQueryAttention` graph's `past_key_values.N.*` and
//! `present.N.*` are bound to the same tensor (`[B, kv_heads, capacity,
//! head_dim]`), ONNX Runtime shares past and present: each sequence's new
//! row is written at its position inside that tensor and nothing else is
//! copied. [`SharedDecode`] keeps such a batch between steps. While the next
//! decode run has the same sequences in the same order, each one token
//! further, and still fits the capacity, the run gathers nothing and copies
//! no past; only the new rows go back to the pool, which stays the one
//! source of truth. Any other run shape rebuilds the buffers from the pool.
//!
//! Capacity is the longest sequence plus [`HEADROOM`] tokens: a batch is
//! rebuilt (one gather) every `HEADROOM` steps at most, and the buffers hold
//! little more than the padded past the copying path would gather anyway.

use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session};
use ort::value::Tensor;

use crate::contract::{ScheduledSeq, StepOutput};
use crate::error::BackendError;

use super::batch::{for_layer_chunks, KeptMembers};
use super::kv::{Kv, KvPool};
use super::runtime::{self, GraphIo};
use super::{sample_rows, step_failed};

/// Tokens of room past the longest sequence when buffers are (re)built.
pub const HEADROOM: usize = 64;

/// A decode batch whose K/V live in tensors bound as both past and present.
pub struct SharedDecode {
    binding: IoBinding,
    /// `[key, value]` per layer, `[B, kv_heads, capacity, head_dim]`.
    kv: Vec<[Tensor<f32>; 2]>,
    /// The rows' sequences and their cache lengths after the last run.
    members: KeptMembers,
    capacity: usize,
}

impl std::fmt::Debug for SharedDecode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedDecode")
            .field("members", &self.members)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl SharedDecode {
    /// Buffers for the decode run of `members`, their pasts gathered from `pool`.
    pub fn build(
        session: &Session,
        io: &GraphIo,
        pool: &KvPool,
        seqs: &[ScheduledSeq<'_>],
        members: &[usize],
    ) -> Result<Self, BackendError> {
        let kv = pool.shape();
        let batch = members.len();
        let longest = members
            .iter()
            .map(|&i| seqs[i].start_pos as usize + 1)
            .max()
            .unwrap_or(1);
        let capacity = longest + HEADROOM;
        // The session's arena: a rebuild reuses the memory of the batch it
        // replaces instead of faulting in fresh pages.
        let arena = MemoryInfo::new(
            AllocationDevice::CPU,
            0,
            AllocatorType::Arena,
            MemoryType::Default,
        )
        .map_err(step_failed)?;
        let allocator = Allocator::new(session, arena).map_err(step_failed)?;
        let dims = [batch, kv.kv_heads, capacity, kv.head_dim];
        let mut tensors = Vec::with_capacity(io.past_names.len());
        for _ in &io.past_names {
            let key = Tensor::<f32>::new(&allocator, dims).map_err(step_failed)?;
            let value = Tensor::<f32>::new(&allocator, dims).map_err(step_failed)?;
            tensors.push([key, value]);
        }
        fill(&mut tensors, pool, seqs, members, capacity);
        let mut binding = session.create_binding().map_err(step_failed)?;
        for (pair, (past, present)) in tensors
            .iter_mut()
            .zip(io.past_names.iter().zip(&io.present_names))
        {
            for (k, t) in pair.iter_mut().enumerate() {
                binding
                    .bind_input(past[k].as_str(), &*t)
                    .map_err(step_failed)?;
                binding
                    .bind_output(present[k].as_str(), &mut *t)
                    .map_err(step_failed)?;
            }
        }
        let cpu = MemoryInfo::new(
            AllocationDevice::CPU,
            0,
            AllocatorType::Device,
            MemoryType::Default,
        )
        .map_err(step_failed)?;
        binding
            .bind_output_to_device(runtime::LOGITS, &cpu)
            .map_err(step_failed)?;
        Ok(Self {
            binding,
            kv: tensors,
            members: KeptMembers::of(seqs, members, |s| s.start_pos),
            capacity,
        })
    }

    /// Whether the decode run of `members` continues this batch (see
    /// [`KeptMembers::continued_by`]) within the capacity.
    pub fn continues(&self, seqs: &[ScheduledSeq<'_>], members: &[usize]) -> bool {
        self.members.continued_by(seqs, members)
            && members
                .iter()
                .all(|&i| (seqs[i].start_pos as usize) < self.capacity)
    }

    /// The rows' sequences and their cache lengths after the last run.
    pub fn members(&self) -> &KeptMembers {
        &self.members
    }

    /// Runs the decode step of `members` (which [`Self::continues`] this
    /// batch or was just built from), writes the new rows to `pool` and
    /// samples into `out`.
    pub fn run(
        &mut self,
        session: &mut Session,
        seqs: &[ScheduledSeq<'_>],
        members: &[usize],
        pool: &mut KvPool,
        vocab: usize,
        out: &mut StepOutput,
    ) -> Result<(), BackendError> {
        let batch = members.len();
        let ids: Vec<i64> = members
            .iter()
            .map(|&i| i64::from(seqs[i].tokens[0]))
            .collect();
        let positions: Vec<i64> = members
            .iter()
            .map(|&i| i64::from(seqs[i].start_pos))
            .collect();
        // The packed graph reads each sequence's length from its position;
        // the mask only gives the key count.
        let keys = members
            .iter()
            .map(|&i| seqs[i].start_pos as usize + 1)
            .max()
            .unwrap_or(1);
        let tensor = |dims: [usize; 2], data: Vec<i64>| {
            Tensor::from_array((dims, data)).map_err(step_failed)
        };
        self.binding
            .bind_input(runtime::INPUT_IDS, &tensor([batch, 1], ids)?)
            .map_err(step_failed)?;
        self.binding
            .bind_input(runtime::POSITION_IDS, &tensor([batch, 1], positions)?)
            .map_err(step_failed)?;
        self.binding
            .bind_input(
                runtime::ATTENTION_MASK,
                &tensor([batch, keys], vec![1; batch * keys])?,
            )
            .map_err(step_failed)?;
        let outputs = session.run_binding(&self.binding).map_err(step_failed)?;
        let logits = outputs
            .get(runtime::LOGITS)
            .ok_or_else(|| BackendError::StepFailed("no `logits` output".into()))?;
        let (dims, data) = logits.try_extract_tensor::<f32>().map_err(step_failed)?;
        super::expect_dims(runtime::LOGITS, dims, &[batch, 1, vocab])?;
        sample_rows(seqs, members, data, 1, vocab, out)?;
        let kv = pool.shape();
        let per_seq = kv.kv_heads * self.capacity * kv.head_dim;
        for (layer, pair) in self.kv.iter().enumerate() {
            for (which, t) in [Kv::Key, Kv::Value].into_iter().zip(pair) {
                let (_, present) = t.extract_tensor();
                for (row, &i) in members.iter().enumerate() {
                    let s = &seqs[i];
                    let start = s.start_pos as usize;
                    pool.scatter(
                        layer,
                        which,
                        s.block_table,
                        start,
                        1,
                        &present[row * per_seq..(row + 1) * per_seq],
                        self.capacity,
                        start,
                    );
                }
            }
        }
        self.members = KeptMembers::of(seqs, members, |s| s.end_pos());
        Ok(())
    }
}

/// Writes every sequence's cached K/V into rows `0..start` of its slice of
/// each tensor and zeros the rest (never read, but kept finite).
fn fill(
    tensors: &mut [[Tensor<f32>; 2]],
    pool: &KvPool,
    seqs: &[ScheduledSeq<'_>],
    members: &[usize],
    capacity: usize,
) {
    let kv = pool.shape();
    let head = capacity * kv.head_dim;
    let per_seq = kv.kv_heads * head;
    let bytes = 2 * tensors.len() * members.len() * per_seq * std::mem::size_of::<f32>();
    for_layer_chunks(tensors, bytes, |first, layers| {
        for (k, pair) in layers.iter_mut().enumerate() {
            for (which, t) in [Kv::Key, Kv::Value].into_iter().zip(pair.iter_mut()) {
                let (_, data) = t.extract_tensor_mut();
                for (row, &i) in members.iter().enumerate() {
                    let s = &seqs[i];
                    let len = s.start_pos as usize;
                    let dst = &mut data[row * per_seq..(row + 1) * per_seq];
                    pool.gather(first + k, which, s.block_table, len, capacity, dst);
                    for rows in dst.chunks_mut(head) {
                        rows[len * kv.head_dim..].fill(0.0);
                    }
                }
            }
        }
    });
}
