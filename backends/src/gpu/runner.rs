//! The Llama forward pass over a paged KV cache, written once against
//! [`GpuOps`]: weights and KV pool on the device, per-step index arrays,
//! the kernel sequence of a step, and sampling.

use super::ops::{AttnShape, BufKind, GpuOps, StepMeta};
use super::weights::ModelWeights;
use crate::contract::{BlockCopy, ScheduledSeq, StepOutput, StepPlan};
use crate::error::BackendError;
use crate::model_config::ModelConfig;
use crate::sampling;

/// One layer's device weights.
struct Layer<B> {
    input_norm: B,
    qkv: B,
    o: B,
    post_norm: B,
    gate_up: B,
    down: B,
    k_cache: B,
    v_cache: B,
}

/// Model dimensions the forward pass uses.
#[derive(Debug, Clone, Copy)]
struct Dims {
    hidden: usize,
    inter: usize,
    vocab: usize,
    eps: f32,
    attn: AttnShape,
}

/// Per-step device buffers, grown (to powers of two) when a step needs more.
struct Scratch<B> {
    tokens: usize,
    seqs: usize,
    table_len: usize,
    rows: usize,
    x: B,
    normed: B,
    qkv: B,
    attn: B,
    gate_up: B,
    act: B,
    ids: B,
    pos: B,
    tok_seq: B,
    slots: B,
    decode_rows: B,
    prefill_seqs: B,
    seq_first_row: B,
    seq_num_new: B,
    seq_start_pos: B,
    block_tables: B,
    sample_rows: B,
    rows_x: B,
    rows_normed: B,
    logits: B,
    argmax: B,
}

/// Host-side index arrays of one step, reused across steps.
#[derive(Default)]
struct HostMeta {
    ids: Vec<i32>,
    pos: Vec<i32>,
    tok_seq: Vec<i32>,
    slots: Vec<i32>,
    decode_rows: Vec<i32>,
    prefill_seqs: Vec<i32>,
    seq_first_row: Vec<i32>,
    seq_num_new: Vec<i32>,
    seq_start_pos: Vec<i32>,
    block_tables: Vec<i32>,
    max_blocks: usize,
    max_prefill_new: usize,
    /// Copy-on-write (src, dst) block pairs, flattened.
    pairs: Vec<i32>,
    /// Plan index of each sampling sequence.
    sample_seqs: Vec<usize>,
    /// Token row whose logits each sampling sequence samples from.
    sample_rows: Vec<i32>,
}

/// A Llama decoder resident on a device, with its KV pool.
pub struct Decoder<O: GpuOps> {
    ops: O,
    dims: Dims,
    num_blocks: usize,
    embed: O::Buf,
    lm_head: Option<O::Buf>,
    norm: O::Buf,
    inv_freq: O::Buf,
    layers: Vec<Layer<O::Buf>>,
    scratch: Option<Scratch<O::Buf>>,
    /// Device copy of `meta.pairs` and its capacity.
    pairs: Option<(usize, O::Buf)>,
    meta: HostMeta,
    logits_host: Vec<f32>,
    argmax_host: Vec<i32>,
}

fn upload<O: GpuOps>(ops: &mut O, kind: BufKind, data: &[f32]) -> Result<O::Buf, BackendError> {
    let mut b = ops.alloc(kind, data.len())?;
    ops.upload_f32(&mut b, data)?;
    Ok(b)
}

impl<O: GpuOps> Decoder<O> {
    /// Uploads `weights` and allocates a pool of `num_blocks` KV blocks of `block_size` tokens.
    pub fn new(
        mut ops: O,
        cfg: &ModelConfig,
        weights: &ModelWeights,
        block_size: u32,
        num_blocks: u32,
    ) -> Result<Self, BackendError> {
        let attn = AttnShape {
            num_heads: cfg.num_attention_heads as usize,
            num_kv_heads: cfg.kv_heads() as usize,
            head_dim: cfg.head_dim() as usize,
            block_size: block_size as usize,
        };
        if attn.head_dim > 256 || !attn.head_dim.is_multiple_of(2) {
            return Err(BackendError::InvalidModel(format!(
                "head_dim {} unsupported (even, at most 256)",
                attn.head_dim
            )));
        }
        let dims = Dims {
            hidden: cfg.hidden_size as usize,
            inter: cfg.intermediate_size as usize,
            vocab: cfg.vocab_size as usize,
            eps: cfg.norm_eps(),
            attn,
        };
        let store = BufKind::Store;
        let embed = upload(&mut ops, store, &weights.embed)?;
        let lm_head = match &weights.lm_head {
            Some(w) => Some(upload(&mut ops, store, w)?),
            None => None,
        };
        let norm = upload(&mut ops, store, &weights.norm)?;
        let inv_freq = upload(&mut ops, BufKind::F32, &cfg.rope_inv_freq())?;
        let cache_len = num_blocks as usize * attn.block_elems();
        let mut layers = Vec::with_capacity(weights.layers.len());
        for l in &weights.layers {
            layers.push(Layer {
                input_norm: upload(&mut ops, store, &l.input_norm)?,
                qkv: upload(&mut ops, store, &l.qkv)?,
                o: upload(&mut ops, store, &l.o)?,
                post_norm: upload(&mut ops, store, &l.post_norm)?,
                gate_up: upload(&mut ops, store, &l.gate_up)?,
                down: upload(&mut ops, store, &l.down)?,
                k_cache: ops.alloc(store, cache_len)?,
                v_cache: ops.alloc(store, cache_len)?,
            });
        }
        Ok(Self {
            ops,
            dims,
            num_blocks: num_blocks as usize,
            embed,
            lm_head,
            norm,
            inv_freq,
            layers,
            scratch: None,
            pairs: None,
            meta: HostMeta::default(),
            logits_host: Vec::new(),
            argmax_host: Vec::new(),
        })
    }

    /// KV blocks in the pool.
    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    /// Performs copy-on-write block copies (checked by the caller).
    pub fn copy(&mut self, copies: &[BlockCopy]) -> Result<(), BackendError> {
        if copies.is_empty() {
            return Ok(());
        }
        let pairs = &mut self.meta.pairs;
        pairs.clear();
        pairs.extend(copies.iter().flat_map(|c| [c.src.0 as i32, c.dst.0 as i32]));
        // The device buffer grows to the largest copy list seen, then is reused.
        let buf = match self.pairs.take() {
            Some((cap, buf)) if cap >= pairs.len() => (cap, buf),
            _ => (pairs.len(), self.ops.alloc(BufKind::I32, pairs.len())?),
        };
        let (_, dev) = self.pairs.insert(buf);
        self.ops.upload_i32(dev, pairs)?;
        let be = self.dims.attn.block_elems();
        for l in &mut self.layers {
            self.ops
                .copy_blocks(&mut l.k_cache, &mut l.v_cache, dev, copies.len(), be)?;
        }
        Ok(())
    }

    /// Runs every scheduled token through the model (plan checked by the
    /// caller) and returns the sampled token of each sampling sequence (and
    /// its log-probabilities, where asked), in plan order. Returns when the
    /// device has finished.
    pub fn run(&mut self, plan: &StepPlan<'_>) -> Result<StepOutput, BackendError> {
        let mut out = StepOutput::for_plan(plan);
        if plan.seqs.is_empty() {
            return Ok(out);
        }
        self.build_meta(plan);
        self.ensure_scratch()?;
        self.upload_meta()?;
        self.forward()?;
        if self.meta.sample_seqs.is_empty() {
            self.ops.synchronize()?;
        } else {
            self.sample(plan, &mut out)?;
        }
        Ok(out)
    }

    fn build_meta(&mut self, plan: &StepPlan<'_>) {
        let bs = self.dims.attn.block_size;
        let m = &mut self.meta;
        for v in [
            &mut m.ids,
            &mut m.pos,
            &mut m.tok_seq,
            &mut m.slots,
            &mut m.decode_rows,
            &mut m.prefill_seqs,
            &mut m.seq_first_row,
            &mut m.seq_num_new,
            &mut m.seq_start_pos,
            &mut m.block_tables,
            &mut m.sample_rows,
        ] {
            v.clear();
        }
        m.sample_seqs.clear();
        m.max_prefill_new = 0;
        m.max_blocks = plan
            .seqs
            .iter()
            .map(|s| (s.end_pos() as usize).div_ceil(bs))
            .max()
            .unwrap_or(1)
            .max(1);
        for (i, s) in plan.seqs.iter().enumerate() {
            let first = m.ids.len() as i32;
            push_tokens(m, i, s, bs);
            let n = s.tokens.len();
            if n == 1 {
                m.decode_rows.push(first);
            } else {
                m.prefill_seqs.push(i as i32);
                m.max_prefill_new = m.max_prefill_new.max(n);
            }
            m.seq_first_row.push(first);
            m.seq_num_new.push(n as i32);
            m.seq_start_pos.push(s.start_pos as i32);
            let need = (s.end_pos() as usize).div_ceil(bs);
            m.block_tables
                .extend(s.block_table[..need].iter().map(|b| b.0 as i32));
            m.block_tables
                .extend(std::iter::repeat_n(0, m.max_blocks - need));
            if s.sample {
                m.sample_seqs.push(i);
                m.sample_rows.push(first + n as i32 - 1);
            }
        }
    }

    fn ensure_scratch(&mut self) -> Result<(), BackendError> {
        let m = &self.meta;
        let need = (
            m.ids.len(),
            m.seq_num_new.len(),
            m.block_tables.len(),
            m.sample_seqs.len().max(1),
        );
        if let Some(s) = &self.scratch {
            if s.tokens >= need.0 && s.seqs >= need.1 && s.table_len >= need.2 && s.rows >= need.3 {
                return Ok(());
            }
        }
        let old = self.scratch.take();
        let grow = |need: usize, had: Option<usize>| need.next_power_of_two().max(had.unwrap_or(0));
        let t = grow(need.0, old.as_ref().map(|s| s.tokens));
        let s = grow(need.1, old.as_ref().map(|s| s.seqs));
        let tl = grow(need.2, old.as_ref().map(|s| s.table_len));
        let r = grow(need.3, old.as_ref().map(|s| s.rows));
        drop(old);
        let d = self.dims;
        let ops = &mut self.ops;
        let (f, i, st) = (BufKind::F32, BufKind::I32, BufKind::Store);
        self.scratch = Some(Scratch {
            tokens: t,
            seqs: s,
            table_len: tl,
            rows: r,
            x: ops.alloc(f, t * d.hidden)?,
            normed: ops.alloc(st, t * d.hidden)?,
            qkv: ops.alloc(f, t * d.attn.qkv_width())?,
            attn: ops.alloc(st, t * d.attn.q_width())?,
            gate_up: ops.alloc(f, t * 2 * d.inter)?,
            act: ops.alloc(st, t * d.inter)?,
            ids: ops.alloc(i, t)?,
            pos: ops.alloc(i, t)?,
            tok_seq: ops.alloc(i, t)?,
            slots: ops.alloc(i, t)?,
            decode_rows: ops.alloc(i, t)?,
            prefill_seqs: ops.alloc(i, s)?,
            seq_first_row: ops.alloc(i, s)?,
            seq_num_new: ops.alloc(i, s)?,
            seq_start_pos: ops.alloc(i, s)?,
            block_tables: ops.alloc(i, tl)?,
            sample_rows: ops.alloc(i, r)?,
            rows_x: ops.alloc(f, r * d.hidden)?,
            rows_normed: ops.alloc(st, r * d.hidden)?,
            logits: ops.alloc(f, r * d.vocab)?,
            argmax: ops.alloc(i, r)?,
        });
        Ok(())
    }

    fn upload_meta(&mut self) -> Result<(), BackendError> {
        let (Some(s), m, ops) = (self.scratch.as_mut(), &self.meta, &mut self.ops) else {
            return Err(BackendError::StepFailed("scratch buffers missing".into()));
        };
        for (dst, src) in [
            (&mut s.ids, &m.ids),
            (&mut s.pos, &m.pos),
            (&mut s.tok_seq, &m.tok_seq),
            (&mut s.slots, &m.slots),
            (&mut s.decode_rows, &m.decode_rows),
            (&mut s.prefill_seqs, &m.prefill_seqs),
            (&mut s.seq_first_row, &m.seq_first_row),
            (&mut s.seq_num_new, &m.seq_num_new),
            (&mut s.seq_start_pos, &m.seq_start_pos),
            (&mut s.block_tables, &m.block_tables),
            (&mut s.sample_rows, &m.sample_rows),
        ] {
            if !src.is_empty() {
                ops.upload_i32(dst, src)?;
            }
        }
        Ok(())
    }

    fn forward(&mut self) -> Result<(), BackendError> {
        let Self {
            ops,
            dims: d,
            embed,
            lm_head,
            norm,
            inv_freq,
            layers,
            scratch,
            meta: m,
            ..
        } = self;
        let s = scratch
            .as_mut()
            .ok_or_else(|| BackendError::StepFailed("scratch buffers missing".into()))?;
        let t = m.ids.len();
        let a = &d.attn;
        ops.embed(&mut s.x, embed, &s.ids, t, d.hidden)?;
        for l in layers.iter_mut() {
            ops.rms_norm(&mut s.normed, &s.x, &l.input_norm, t, d.hidden, d.eps)?;
            ops.gemm(
                &mut s.qkv,
                &s.normed,
                &l.qkv,
                t,
                a.qkv_width(),
                d.hidden,
                false,
            )?;
            ops.rope(&mut s.qkv, &s.pos, inv_freq, t, a)?;
            ops.kv_write(&mut l.k_cache, &mut l.v_cache, &s.qkv, &s.slots, t, a)?;
            let meta = StepMeta {
                tok_seq: &s.tok_seq,
                tok_pos: &s.pos,
                block_tables: &s.block_tables,
                max_blocks: m.max_blocks,
                decode_rows: &s.decode_rows,
                num_decode: m.decode_rows.len(),
                prefill_seqs: &s.prefill_seqs,
                num_prefill: m.prefill_seqs.len(),
                max_prefill_new: m.max_prefill_new,
                seq_first_row: &s.seq_first_row,
                seq_num_new: &s.seq_num_new,
                seq_start_pos: &s.seq_start_pos,
            };
            ops.attention(&mut s.attn, &s.qkv, &l.k_cache, &l.v_cache, &meta, a)?;
            ops.gemm(&mut s.x, &s.attn, &l.o, t, d.hidden, a.q_width(), true)?;
            ops.rms_norm(&mut s.normed, &s.x, &l.post_norm, t, d.hidden, d.eps)?;
            ops.gemm(
                &mut s.gate_up,
                &s.normed,
                &l.gate_up,
                t,
                2 * d.inter,
                d.hidden,
                false,
            )?;
            ops.silu_mul(&mut s.act, &s.gate_up, t, d.inter)?;
            ops.gemm(&mut s.x, &s.act, &l.down, t, d.hidden, d.inter, true)?;
        }
        let r = m.sample_seqs.len();
        if r == 0 {
            return Ok(());
        }
        ops.gather_rows(&mut s.rows_x, &s.x, &s.sample_rows, r, d.hidden)?;
        ops.rms_norm(&mut s.rows_normed, &s.rows_x, norm, r, d.hidden, d.eps)?;
        let head = lm_head.as_ref().unwrap_or(embed);
        ops.gemm(
            &mut s.logits,
            &s.rows_normed,
            head,
            r,
            d.vocab,
            d.hidden,
            false,
        )
    }

    fn sample(&mut self, plan: &StepPlan<'_>, out: &mut StepOutput) -> Result<(), BackendError> {
        let r = self.meta.sample_seqs.len();
        if r == 0 {
            return Ok(());
        }
        let s = self
            .scratch
            .as_mut()
            .ok_or_else(|| BackendError::StepFailed("scratch buffers missing".into()))?;
        let vocab = self.dims.vocab;
        // Log-probabilities need the whole rows on the host.
        let greedy = self
            .meta
            .sample_seqs
            .iter()
            .all(|&i| sampling::is_greedy(&plan.seqs[i].sampling) && !out.wants_logprobs(i));
        if greedy {
            // Only the token ids cross the bus.
            self.ops.argmax(&mut s.argmax, &s.logits, r, vocab)?;
            self.argmax_host.resize(r, 0);
            self.ops.download_i32(&s.argmax, &mut self.argmax_host)?;
            for (&i, &tok) in self.meta.sample_seqs.iter().zip(&self.argmax_host) {
                out.tokens[i] = u32::try_from(tok).ok().filter(|&t| (t as usize) < vocab);
            }
            return Ok(());
        }
        self.logits_host.resize(r * vocab, 0.0);
        self.ops.download_f32(&s.logits, &mut self.logits_host)?;
        for (&i, row) in self
            .meta
            .sample_seqs
            .iter()
            .zip(self.logits_host.chunks(vocab))
        {
            let seq = &plan.seqs[i];
            let token = sampling::sample(row, &seq.sampling, seq.seq, seq.end_pos());
            out.tokens[i] = token;
            if let Some(t) = token {
                out.set_logprobs(i, sampling::logprobs_for(row, &seq.sampling, t));
            }
        }
        Ok(())
    }
}

/// Appends one sequence's token rows (ids, positions, owning sequence, cache slots).
fn push_tokens(m: &mut HostMeta, seq_index: usize, s: &ScheduledSeq<'_>, bs: usize) {
    for (k, &tok) in s.tokens.iter().enumerate() {
        let p = s.start_pos as usize + k;
        m.ids.push(tok as i32);
        m.pos.push(p as i32);
        m.tok_seq.push(seq_index as i32);
        m.slots
            .push((s.block_table[p / bs].0 as usize * bs + p % bs) as i32);
    }
}
