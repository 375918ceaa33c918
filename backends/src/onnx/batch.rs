//! Turning a step plan into padded graph inputs.
//!
//! # Grouping
//! A decoder-with-past graph takes rectangular inputs: `B` sequences of `S`
//! new tokens on top of `P` cached ones. One prefill chunk of 512 tokens in
//! a batch of 31 decodes would pad every decode to 512 tokens, so a step's
//! sequences are split into runs of similar new-token counts
//! ([`group_by_length`]): sorted by count, a run grows while its padded
//! token count `B·S` stays within `max_padding_ratio` × its real tokens.
//! All decodes of a step always share one run. Sequences never interact, so
//! the grouping changes timing, never results.
//!
//! # Padding (one run)
//! - `input_ids [B, S]`: each sequence's new tokens, right-padded with 0.
//! - `position_ids [B, S]`: `start_pos + i`; padding repeats the last position.
//! - `past_key_values.* [B, kv_heads, P, head_dim]`, `P` = the longest cached
//!   prefix: each sequence's cache gathered from its blocks into rows
//!   `0..start_pos`; rows past it are stale padding.
//! - `attention_mask [B, P + S]`: 1 on rows `0..start_pos` and `P..P + n`, 0 on
//!   padding, so the graph's index-based causal mask plus this mask hide every
//!   padded key from every real query.
//!
//! Gathering the past is a copy of every cached token of every sequence, so
//! above [`PARALLEL_GATHER_BYTES`] it is split by layer over the host's cores
//! (ONNX Runtime is idle meanwhile).
//!
//! # Resident decode batch
//! When a step's decode run has exactly the members of the previous step's
//! decode run, in the same order, each one token further, the previous run's
//! `present` outputs are fed back as this run's `past` ([`Resident`]) instead
//! of gathering every cached token again: the rows and their mask carry over
//! unchanged (stale padding rows stay masked) and one column is appended.
//! The pool is still written every step, so any other step shape simply
//! gathers from it.

use crate::contract::ScheduledSeq;

use super::kv::{Kv, KvPool};

/// Splits sequence indices into runs that keep padding within `max_padding_ratio`.
pub fn group_by_length(seqs: &[ScheduledSeq<'_>], max_padding_ratio: f64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(seqs[i].tokens.len()));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut real = 0usize;
    for i in order {
        let n = seqs[i].tokens.len();
        if let Some(g) = groups.last_mut() {
            let width = seqs[g[0]].tokens.len();
            let padded = (g.len() + 1) * width;
            let all_decodes = width == 1;
            if all_decodes || padded as f64 <= max_padding_ratio * (real + n) as f64 {
                g.push(i);
                real += n;
                continue;
            }
        }
        groups.push(vec![i]);
        real = n;
    }
    groups
}

/// Splits every run of several new tokens per sequence in which some
/// sequence has a past into runs of one sequence each (what a packed-layout
/// graph's attention kernel accepts); other runs stay as they are.
pub fn multi_token_past_runs_alone(
    runs: Vec<Vec<usize>>,
    seqs: &[ScheduledSeq<'_>],
) -> Vec<Vec<usize>> {
    let mut out = Vec::with_capacity(runs.len());
    for run in runs {
        let multi_token = run.iter().any(|&i| seqs[i].tokens.len() > 1);
        let has_past = run.iter().any(|&i| seqs[i].start_pos > 0);
        if run.len() > 1 && multi_token && has_past {
            out.extend(run.into_iter().map(|i| vec![i]));
        } else {
            out.push(run);
        }
    }
    out
}

/// The rectangle one graph run computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunShape {
    /// Sequences.
    pub batch: usize,
    /// New tokens per sequence (padded).
    pub new: usize,
    /// Cached tokens per sequence (padded).
    pub past: usize,
}

impl RunShape {
    /// Keys per sequence: past + new.
    pub fn total(&self) -> usize {
        self.past + self.new
    }
}

/// Input buffers of one run, reused across steps so a step allocates little.
#[derive(Debug, Default)]
pub struct Inputs {
    /// `input_ids [B, S]`.
    pub input_ids: Vec<i64>,
    /// `position_ids [B, S]`.
    pub position_ids: Vec<i64>,
    /// `attention_mask [B, P + S]`.
    pub attention_mask: Vec<i64>,
    /// `past_key_values.{layer}.{key,value} [B, kv_heads, P, head_dim]`.
    pub past: Vec<[Vec<f32>; 2]>,
}

impl Inputs {
    /// Fills the buffers for the sequences `members` of `seqs`; returns the run's shape.
    pub fn fill(
        &mut self,
        seqs: &[ScheduledSeq<'_>],
        members: &[usize],
        pool: &KvPool,
    ) -> RunShape {
        let shape = RunShape {
            batch: members.len(),
            new: members
                .iter()
                .map(|&i| seqs[i].tokens.len())
                .max()
                .unwrap_or(0),
            past: members
                .iter()
                .map(|&i| seqs[i].start_pos as usize)
                .max()
                .unwrap_or(0),
        };
        self.fill_tokens(seqs, members, shape);
        self.fill_past(seqs, members, shape, pool);
        shape
    }

    /// Fills the tokens of a run that continues `resident` (its past is the
    /// resident `present`); returns the run's shape.
    pub fn fill_continuing(
        &mut self,
        seqs: &[ScheduledSeq<'_>],
        members: &[usize],
        resident: &Resident,
    ) -> RunShape {
        let shape = RunShape {
            batch: members.len(),
            new: 1,
            past: resident.total,
        };
        self.fill_tokens(seqs, members, shape);
        // Rows keep their mask (real keys and masked padding alike); fill_tokens
        // marked the new column.
        let (t, p) = (shape.total(), shape.past);
        for row in 0..shape.batch {
            self.attention_mask[row * t..row * t + p]
                .copy_from_slice(&resident.mask[row * p..(row + 1) * p]);
        }
        shape
    }

    fn fill_tokens(&mut self, seqs: &[ScheduledSeq<'_>], members: &[usize], shape: RunShape) {
        let (s, t) = (shape.new, shape.total());
        self.input_ids.clear();
        self.input_ids.resize(shape.batch * s, 0);
        self.position_ids.clear();
        self.position_ids.resize(shape.batch * s, 0);
        self.attention_mask.clear();
        self.attention_mask.resize(shape.batch * t, 0);
        for (row, &i) in members.iter().enumerate() {
            let seq = &seqs[i];
            let start = seq.start_pos as usize;
            let n = seq.tokens.len();
            let ids = &mut self.input_ids[row * s..(row + 1) * s];
            let pos = &mut self.position_ids[row * s..(row + 1) * s];
            for (k, &tok) in seq.tokens.iter().enumerate() {
                ids[k] = i64::from(tok);
                pos[k] = (start + k) as i64;
            }
            let last = (start + n).saturating_sub(1) as i64;
            pos[n..].fill(last);
            let mask = &mut self.attention_mask[row * t..(row + 1) * t];
            mask[..start].fill(1);
            mask[shape.past..shape.past + n].fill(1);
        }
    }

    /// Gathers every layer's past K/V; large batches split the layers over threads.
    fn fill_past(
        &mut self,
        seqs: &[ScheduledSeq<'_>],
        members: &[usize],
        shape: RunShape,
        pool: &KvPool,
    ) {
        let kv = pool.shape();
        self.past.resize_with(kv.layers, Default::default);
        let bytes = 2 * kv.layers * shape.batch * kv.kv_heads * shape.past * kv.head_dim * 4;
        for_layer_chunks(&mut self.past, bytes, |first, chunk| {
            gather_layers(chunk, first, seqs, members, shape, pool)
        });
    }
}

/// Runs `fill(first, chunk)` over `layers` in consecutive chunks (`first`
/// is the chunk's first layer): on one thread below
/// [`PARALLEL_GATHER_BYTES`], else split over the host's cores (ONNX
/// Runtime is idle meanwhile).
pub fn for_layer_chunks<T: Send>(
    layers: &mut [T],
    bytes: usize,
    fill: impl Fn(usize, &mut [T]) + Sync,
) {
    let threads = if bytes < PARALLEL_GATHER_BYTES {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    let per_thread = layers.len().div_ceil(threads.clamp(1, layers.len().max(1)));
    if per_thread >= layers.len() {
        fill(0, layers);
        return;
    }
    std::thread::scope(|scope| {
        for (k, chunk) in layers.chunks_mut(per_thread).enumerate() {
            let fill = &fill;
            scope.spawn(move || fill(k * per_thread, chunk));
        }
    });
}

/// The sequences of a decode run kept for the next step, each with its
/// cache length after the run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeptMembers(Vec<(crate::contract::SeqId, u32)>);

impl KeptMembers {
    /// The members of a run, `cached(seq)` tokens each: `start_pos`
    /// before it has run, `end_pos` after.
    pub fn of(
        seqs: &[ScheduledSeq<'_>],
        members: &[usize],
        cached: impl Fn(&ScheduledSeq<'_>) -> u32,
    ) -> Self {
        Self(
            members
                .iter()
                .map(|&i| (seqs[i].seq, cached(&seqs[i])))
                .collect(),
        )
    }

    /// Whether the run of `members` continues the kept one: same
    /// sequences, same order, one new token each, right after the cached ones.
    pub fn continued_by(&self, seqs: &[ScheduledSeq<'_>], members: &[usize]) -> bool {
        self.0.len() == members.len()
            && members.iter().zip(&self.0).all(|(&i, &(id, end))| {
                let s = &seqs[i];
                s.seq == id && s.tokens.len() == 1 && s.start_pos == end
            })
    }

    /// Whether `seq` is one of the rows.
    pub fn holds(&self, seq: crate::contract::SeqId) -> bool {
        self.0.iter().any(|&(id, _)| id == seq)
    }
}

/// Takes the kept run out of `slot` when the run of `members` (a decode run
/// if `decode`) continues it per `continues`; leaves it when the run touches
/// none of its sequences; drops it otherwise, as it is no longer the latest
/// state of their caches.
pub fn take_continued<T>(
    slot: &mut Option<T>,
    decode: bool,
    seqs: &[ScheduledSeq<'_>],
    members: &[usize],
    kept: impl Fn(&T) -> &KeptMembers,
    continues: impl Fn(&T) -> bool,
) -> Option<T> {
    match slot.take() {
        Some(run) if decode && continues(&run) => Some(run),
        Some(run) if members.iter().all(|&i| !kept(&run).holds(seqs[i].seq)) => {
            *slot = Some(run);
            None
        }
        _ => None,
    }
}

/// The previous decode run's outputs, kept to be the next run's past.
pub struct Resident {
    /// The run's sequences and their cache lengths after it.
    pub members: KeptMembers,
    /// `present.{layer}.{key,value}` of the run, `[B, kv_heads, total, head_dim]`.
    pub present: Vec<[ort::value::DynValue; 2]>,
    /// The run's `attention_mask`, `[B, total]`.
    pub mask: Vec<i64>,
    /// Keys per row (`past + new` of the run).
    pub total: usize,
}

/// Past K/V bytes from which a run's gather is split over threads.
pub const PARALLEL_GATHER_BYTES: usize = 8 << 20;

/// Fills `past[..]`, the buffers of layers `first..`, from the pool.
fn gather_layers(
    past: &mut [[Vec<f32>; 2]],
    first: usize,
    seqs: &[ScheduledSeq<'_>],
    members: &[usize],
    shape: RunShape,
    pool: &KvPool,
) {
    let kv = pool.shape();
    let per_seq = kv.kv_heads * shape.past * kv.head_dim;
    for (k, bufs) in past.iter_mut().enumerate() {
        for (which, buf) in [Kv::Key, Kv::Value].into_iter().zip(bufs.iter_mut()) {
            // Stale rows stay finite (zeros or old K/V), which masking needs.
            buf.resize(shape.batch * per_seq, 0.0);
            for (row, &i) in members.iter().enumerate() {
                let seq = &seqs[i];
                let dst = &mut buf[row * per_seq..(row + 1) * per_seq];
                let len = seq.start_pos as usize;
                pool.gather(first + k, which, seq.block_table, len, shape.past, dst);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{BlockId, SamplingParams, SeqId};
    use crate::onnx::kv::KvShape;

    fn seq<'a>(id: u64, start: u32, tokens: &'a [u32], table: &'a [BlockId]) -> ScheduledSeq<'a> {
        ScheduledSeq {
            seq: SeqId(id),
            start_pos: start,
            tokens,
            block_table: table,
            sample: true,
            sampling: SamplingParams::default(),
        }
    }

    #[test]
    fn decodes_share_a_run_and_long_prefills_run_apart() {
        let t1 = [1u32];
        let long = [1u32; 200];
        let mid = [1u32; 150];
        let table = [BlockId(0)];
        let seqs = vec![
            seq(0, 5, &t1, &table),
            seq(1, 0, &long, &table),
            seq(2, 9, &t1, &table),
            seq(3, 0, &mid, &table),
        ];
        let g = group_by_length(&seqs, 1.5);
        assert_eq!(g, vec![vec![1, 3], vec![0, 2]]);
        // No limit: one run for everything.
        assert_eq!(group_by_length(&seqs, f64::INFINITY).len(), 1);
    }

    #[test]
    fn multi_token_runs_over_a_past_split_into_single_sequences() {
        let (one, three) = ([1u32], [1u32, 2, 3]);
        let table = [BlockId(0)];
        let seqs = vec![
            seq(0, 4, &one, &table),
            seq(1, 0, &three, &table),
            seq(2, 8, &three, &table),
            seq(3, 0, &three, &table),
            seq(4, 9, &one, &table),
        ];
        let runs = vec![vec![1, 3], vec![2, 0], vec![0, 4], vec![2]];
        assert_eq!(
            multi_token_past_runs_alone(runs, &seqs),
            // First chunks (no past) and decodes keep their runs.
            vec![vec![1, 3], vec![2], vec![0], vec![0, 4], vec![2]]
        );
    }

    #[test]
    fn fill_pads_and_masks() {
        let pool = KvPool::new(KvShape {
            layers: 1,
            kv_heads: 1,
            head_dim: 2,
            block_size: 4,
            num_blocks: 4,
        });
        let (a, b) = ([7u32, 8, 9], [5u32]);
        let table = [BlockId(0), BlockId(1)];
        let seqs = vec![seq(0, 0, &a, &table), seq(1, 6, &b, &table)];
        let mut inputs = Inputs::default();
        let shape = inputs.fill(&seqs, &[0, 1], &pool);
        assert_eq!(
            shape,
            RunShape {
                batch: 2,
                new: 3,
                past: 6
            }
        );
        assert_eq!(inputs.input_ids, vec![7, 8, 9, 5, 0, 0]);
        assert_eq!(inputs.position_ids, vec![0, 1, 2, 6, 6, 6]);
        assert_eq!(
            inputs.attention_mask,
            vec![0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]
        );
        assert_eq!(inputs.past[0][0].len(), 2 * 6 * 2);
    }
}
