//! Device checks against the CPU reference, for `switchyard gpu-check`:
//! every kernel on random inputs, greedy generation end to end, and decode
//! step timing with the memory bandwidth it achieves.

use std::time::Instant;

use serde::Serialize;

use super::ops::{AttnShape, BufKind, GpuOps, StepMeta};
use crate::contract::{Backend, BlockId, SamplingParams, ScheduledSeq, SeqId, StepPlan};
use crate::error::BackendError;
use crate::sampling::SplitMix64;

/// How far one kernel's device output is from the reference.
#[derive(Debug, Clone, Serialize)]
pub struct KernelError {
    /// Kernel (or kernel pair) checked.
    pub kernel: String,
    /// Elements compared.
    pub elements: usize,
    /// Largest absolute difference.
    pub max_abs: f64,
    /// Largest difference relative to |reference| + 1e-3.
    pub max_rel: f64,
}

fn randn(rng: &mut SplitMix64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.next_f64() * 2.0 - 1.0) as f32)
        .collect()
}

const SHAPE: AttnShape = AttnShape {
    num_heads: 8,
    num_kv_heads: 2,
    head_dim: 64,
    block_size: 16,
};

/// Runs every kernel once on inputs drawn from `seed` and returns each
/// output, downloaded as f32, in a fixed order.
pub fn kernel_outputs<O: GpuOps>(
    ops: &mut O,
    seed: u64,
) -> Result<Vec<(String, Vec<f32>)>, BackendError> {
    let mut rng = SplitMix64::new(seed);
    let (h, inter, vocab, t) = (256usize, 512usize, 1000usize, 40usize);
    let s = SHAPE;
    let mut out = Vec::new();
    let f32buf = |ops: &mut O, data: &[f32]| -> Result<O::Buf, BackendError> {
        let mut b = ops.alloc(BufKind::F32, data.len())?;
        ops.upload_f32(&mut b, data)?;
        Ok(b)
    };
    let store = |ops: &mut O, data: &[f32]| -> Result<O::Buf, BackendError> {
        let mut b = ops.alloc(BufKind::Store, data.len())?;
        ops.upload_f32(&mut b, data)?;
        Ok(b)
    };
    let ints = |ops: &mut O, data: &[i32]| -> Result<O::Buf, BackendError> {
        let mut b = ops.alloc(BufKind::I32, data.len().max(1))?;
        if !data.is_empty() {
            ops.upload_i32(&mut b, data)?;
        }
        Ok(b)
    };

    // Embedding, RMSNorm, GEMM (+ accumulate), SwiGLU, gather, argmax.
    let table = store(ops, &randn(&mut rng, vocab * h))?;
    let ids: Vec<i32> = (0..t)
        .map(|_| (rng.next_u64() % vocab as u64) as i32)
        .collect();
    let ids = ints(ops, &ids)?;
    let mut x = ops.alloc(BufKind::F32, t * h)?;
    ops.embed(&mut x, &table, &ids, t, h)?;
    let mut v = vec![0f32; t * h];
    ops.download_f32(&x, &mut v)?;
    out.push(("sy_embed".into(), v));

    let w = store(ops, &randn(&mut rng, h))?;
    let mut normed = ops.alloc(BufKind::Store, t * h)?;
    ops.rms_norm(&mut normed, &x, &w, t, h, 1e-5)?;
    let mut v = vec![0f32; t * h];
    ops.download_store(&normed, &mut v)?;
    out.push(("sy_rms_norm".into(), v));

    let wg = store(ops, &randn(&mut rng, 2 * inter * h))?;
    let mut gu = ops.alloc(BufKind::F32, t * 2 * inter)?;
    ops.gemm(&mut gu, &normed, &wg, t, 2 * inter, h, false)?;
    let mut v = vec![0f32; t * 2 * inter];
    ops.download_f32(&gu, &mut v)?;
    out.push(("gemm".into(), v));

    let mut act = ops.alloc(BufKind::Store, t * inter)?;
    ops.silu_mul(&mut act, &gu, t, inter)?;
    let mut v = vec![0f32; t * inter];
    ops.download_store(&act, &mut v)?;
    out.push(("sy_silu_mul".into(), v));

    let wd = store(ops, &randn(&mut rng, h * inter))?;
    ops.gemm(&mut x, &act, &wd, t, h, inter, true)?;
    let mut v = vec![0f32; t * h];
    ops.download_f32(&x, &mut v)?;
    out.push(("gemm (accumulate)".into(), v));

    let rows = ints(ops, &[3, 0, 39, 17])?;
    let mut gathered = ops.alloc(BufKind::F32, 4 * h)?;
    ops.gather_rows(&mut gathered, &x, &rows, 4, h)?;
    let mut v = vec![0f32; 4 * h];
    ops.download_f32(&gathered, &mut v)?;
    out.push(("sy_gather_rows".into(), v));

    let logits = f32buf(ops, &randn(&mut rng, 4 * vocab))?;
    let mut am = ops.alloc(BufKind::I32, 4)?;
    ops.argmax(&mut am, &logits, 4, vocab)?;
    let mut ai = vec![0i32; 4];
    ops.download_i32(&am, &mut ai)?;
    out.push(("sy_argmax".into(), ai.iter().map(|&i| i as f32).collect()));

    // Attention: one decode (position 37), one prefill chunk of 9 after 5
    // cached tokens, one fresh prefill of 26, on scattered blocks.
    let blocks = 24usize;
    let tables: Vec<i32> = vec![3, 17, 8, 0, 21, 5, 11, 2, 19, 14, 6, 23];
    let (max_blocks, seqs) = (4usize, [(37usize, 1usize), (5, 9), (0, 26)]);
    let mut tok_seq = Vec::new();
    let mut tok_pos = Vec::new();
    let mut slots = Vec::new();
    let (mut first, mut num_new, mut start) = (Vec::new(), Vec::new(), Vec::new());
    for (i, &(p0, n)) in seqs.iter().enumerate() {
        first.push(tok_seq.len() as i32);
        num_new.push(n as i32);
        start.push(p0 as i32);
        for p in p0..p0 + n {
            tok_seq.push(i as i32);
            tok_pos.push(p as i32);
            slots.push(tables[i * max_blocks + p / 16] * 16 + (p % 16) as i32);
        }
    }
    let tt = tok_seq.len();
    let cache_len = blocks * s.block_elems();
    let mut k_cache = store(ops, &randn(&mut rng, cache_len))?;
    let mut v_cache = store(ops, &randn(&mut rng, cache_len))?;
    let mut qkv = f32buf(ops, &randn(&mut rng, tt * s.qkv_width()))?;
    let pos = ints(ops, &tok_pos)?;
    let inv: Vec<f32> = (0..s.head_dim / 2)
        .map(|i| 1.0 / 10_000f32.powf(2.0 * i as f32 / s.head_dim as f32))
        .collect();
    let inv = f32buf(ops, &inv)?;
    ops.rope(&mut qkv, &pos, &inv, tt, &s)?;
    let mut v = vec![0f32; tt * s.qkv_width()];
    ops.download_f32(&qkv, &mut v)?;
    out.push(("sy_rope".into(), v));
    let slots = ints(ops, &slots)?;
    ops.kv_write(&mut k_cache, &mut v_cache, &qkv, &slots, tt, &s)?;
    let mut v = vec![0f32; cache_len];
    ops.download_store(&k_cache, &mut v)?;
    out.push(("sy_kv_write".into(), v));
    let bufs = [
        ints(ops, &tok_seq)?,
        ints(ops, &tables)?,
        ints(ops, &[0])?,
        ints(ops, &[1, 2])?,
        ints(ops, &first)?,
        ints(ops, &num_new)?,
        ints(ops, &start)?,
    ];
    let meta = StepMeta {
        tok_seq: &bufs[0],
        tok_pos: &pos,
        block_tables: &bufs[1],
        max_blocks,
        decode_rows: &bufs[2],
        num_decode: 1,
        prefill_seqs: &bufs[3],
        num_prefill: 2,
        max_prefill_new: 26,
        seq_first_row: &bufs[4],
        seq_num_new: &bufs[5],
        seq_start_pos: &bufs[6],
    };
    let mut attn = ops.alloc(BufKind::Store, tt * s.q_width())?;
    ops.attention(&mut attn, &qkv, &k_cache, &v_cache, &meta, &s)?;
    let mut v = vec![0f32; tt * s.q_width()];
    ops.download_store(&attn, &mut v)?;
    out.push(("sy_paged_attention + sy_prefill_attention".into(), v));

    let pairs = ints(ops, &[3, 1, 21, 22])?;
    ops.copy_blocks(&mut k_cache, &mut v_cache, &pairs, 2, s.block_elems())?;
    let mut v = vec![0f32; cache_len];
    ops.download_store(&v_cache, &mut v)?;
    out.push(("sy_copy_blocks".into(), v));
    Ok(out)
}

/// Compares every kernel of `device` against `reference` on the same inputs.
pub fn compare_kernels<A: GpuOps, B: GpuOps>(
    device: &mut A,
    reference: &mut B,
    seed: u64,
) -> Result<Vec<KernelError>, BackendError> {
    let got = kernel_outputs(device, seed)?;
    let want = kernel_outputs(reference, seed)?;
    Ok(got
        .into_iter()
        .zip(want)
        .map(|((kernel, g), (_, w))| {
            let (mut max_abs, mut max_rel) = (0f64, 0f64);
            for (a, b) in g.iter().zip(&w) {
                let d = f64::from((a - b).abs());
                max_abs = max_abs.max(d);
                max_rel = max_rel.max(d / (f64::from(b.abs()) + 1e-3));
            }
            KernelError {
                kernel,
                elements: w.len(),
                max_abs,
                max_rel,
            }
        })
        .collect())
}

/// Greedy tokens of each prompt run alone (dense block table from block 0).
pub fn greedy_alone(
    backend: &mut dyn Backend,
    prompts: &[Vec<u32>],
    max_new: usize,
) -> Result<Vec<Vec<u32>>, BackendError> {
    let bs = backend.info().block_size as usize;
    let mut all = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        let blocks: Vec<BlockId> = (0..(p.len() + max_new).div_ceil(bs) as u32)
            .map(BlockId)
            .collect();
        let mut tokens = p.clone();
        let mut computed = 0;
        let mut generated = Vec::new();
        while generated.len() < max_new {
            let plan = StepPlan {
                seqs: vec![ScheduledSeq {
                    seq: SeqId(i as u64),
                    start_pos: computed as u32,
                    tokens: &tokens[computed..],
                    block_table: &blocks,
                    sample: true,
                    sampling: SamplingParams::default(),
                }],
                copies: vec![],
            };
            let out = backend.execute(&plan)?;
            computed = tokens.len();
            match out.tokens.first().copied().flatten() {
                Some(t) => {
                    tokens.push(t);
                    generated.push(t);
                }
                None => break,
            }
        }
        all.push(generated);
    }
    Ok(all)
}

/// One decode-step timing.
#[derive(Debug, Clone, Serialize)]
pub struct DecodeTiming {
    /// Sequences in the step.
    pub batch: usize,
    /// Context of each sequence.
    pub context: usize,
    /// Median step time, seconds.
    pub step_s: f64,
    /// Weight + KV bytes the step must read, over its time, bytes/s.
    pub achieved_bytes_per_s: f64,
}

/// Times decode steps of `batch` sequences at `context` tokens (median of `reps`).
pub fn time_decode(
    backend: &mut dyn Backend,
    batch: usize,
    context: usize,
    reps: usize,
    bytes_per_step: impl Fn(usize, usize) -> f64,
) -> Result<DecodeTiming, BackendError> {
    let bs = backend.info().block_size as usize;
    let per_seq = (context + 1).div_ceil(bs);
    if batch * per_seq > backend.info().kv_blocks as usize {
        return Err(BackendError::DoesNotFit(format!(
            "{batch} x {context} tokens exceed the KV pool"
        )));
    }
    let tables: Vec<Vec<BlockId>> = (0..batch)
        .map(|b| {
            ((b * per_seq) as u32..((b + 1) * per_seq) as u32)
                .map(BlockId)
                .collect()
        })
        .collect();
    let token = [1u32];
    let plan = StepPlan {
        seqs: tables
            .iter()
            .enumerate()
            .map(|(i, t)| ScheduledSeq {
                seq: SeqId(i as u64),
                start_pos: context as u32,
                tokens: &token,
                block_table: t,
                sample: true,
                sampling: SamplingParams::default(),
            })
            .collect(),
        copies: vec![],
    };
    backend.execute(&plan)?; // warm-up
    let mut times: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t0 = Instant::now();
            backend.execute(&plan).map(|_| t0.elapsed().as_secs_f64())
        })
        .collect::<Result<_, _>>()?;
    times.sort_by(f64::total_cmp);
    let step_s = times[times.len() / 2];
    Ok(DecodeTiming {
        batch,
        context,
        step_s,
        achieved_bytes_per_s: bytes_per_step(batch, context) / step_s,
    })
}
