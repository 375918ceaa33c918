//! The CPU reference of every kernel in `backends/kernels/llama.cu`, and
//! [`HostOps`], a [`GpuOps`] that runs the decoder with it.
//!
//! The reference is the specification the GPU kernels are checked against
//! (`switchyard gpu-check`): same layouts, same rounding points (values are
//! rounded to the store type exactly where a kernel stores them), f32
//! arithmetic. Summation order differs, so GPU results agree to rounding,
//! not bit for bit. `HostOps` lets CI run the whole GPU forward pass — block
//! tables, slots, chunked prefill, batching — against ONNX Runtime on the CPU.

use super::ops::{AttnShape, BufKind, GpuOps, StepMeta, StoreType};
use crate::error::BackendError;

/// An element of a store-typed buffer.
pub trait Elem: Copy + Default + Send + Sync + 'static {
    /// Widens to f32.
    fn load(self) -> f32;
    /// Rounds an f32 to this type.
    fn store(f: f32) -> Self;
}

impl Elem for f32 {
    fn load(self) -> f32 {
        self
    }
    fn store(f: f32) -> Self {
        f
    }
}

/// bfloat16 as raw bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bf16(pub u16);

impl Elem for Bf16 {
    fn load(self) -> f32 {
        f32::from_bits(u32::from(self.0) << 16)
    }
    fn store(f: f32) -> Self {
        Bf16(f32_to_bf16(f))
    }
}

/// Round-to-nearest-even f32 → bf16 bits, as `sy_f32_to_bf16` does.
pub fn f32_to_bf16(f: f32) -> u16 {
    let u = f.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return 0x7fc0;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// `sy_embed`.
pub fn embed<S: Elem>(out: &mut [f32], table: &[S], ids: &[i32], hidden: usize) {
    for (t, &id) in ids.iter().enumerate() {
        let src = &table[id as usize * hidden..][..hidden];
        for (o, s) in out[t * hidden..][..hidden].iter_mut().zip(src) {
            *o = s.load();
        }
    }
}

/// `sy_rms_norm` over `rows` rows.
pub fn rms_norm<S: Elem>(out: &mut [S], x: &[f32], w: &[S], rows: usize, dim: usize, eps: f32) {
    for r in 0..rows {
        let xr = &x[r * dim..][..dim];
        let ss: f32 = xr.iter().map(|v| v * v).sum();
        let inv = 1.0 / (ss / dim as f32 + eps).sqrt();
        for ((o, &v), wv) in out[r * dim..][..dim].iter_mut().zip(xr).zip(w) {
            *o = S::store(v * inv * wv.load());
        }
    }
}

/// `sy_gemm`: `y[m, n] (+)= x[m, k] · w[n, k]ᵀ`. Large products split the
/// output columns over the host's cores (each thread owns a column range).
#[allow(clippy::too_many_arguments)]
pub fn gemm<S: Elem + Sync>(
    y: &mut [f32],
    x: &[S],
    w: &[S],
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) {
    let xf: Vec<f32> = x[..m * k].iter().map(|v| v.load()).collect();
    let threads = if m * n * k < 1 << 22 {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, |t| t.get())
            .min(n)
    };
    let cols = n.div_ceil(threads.max(1));
    // Column block [j0, j1) of the product, row-major [m, j1 - j0].
    let block = |j0: usize, j1: usize| -> Vec<f32> {
        let mut out = vec![0f32; m * (j1 - j0)];
        for j in j0..j1 {
            let wr: Vec<f32> = w[j * k..][..k].iter().map(|v| v.load()).collect();
            for i in 0..m {
                out[i * (j1 - j0) + j - j0] =
                    xf[i * k..][..k].iter().zip(&wr).map(|(a, b)| a * b).sum();
            }
        }
        out
    };
    let ranges: Vec<(usize, usize)> = (0..n)
        .step_by(cols.max(1))
        .map(|j0| (j0, (j0 + cols).min(n)))
        .collect();
    let blocks: Vec<Vec<f32>> = if ranges.len() <= 1 {
        ranges.iter().map(|&(a, b)| block(a, b)).collect()
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = ranges
                .iter()
                .map(|&(a, b)| scope.spawn(move || block(a, b)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        })
    };
    for (&(j0, j1), b) in ranges.iter().zip(&blocks) {
        for i in 0..m {
            for j in j0..j1 {
                let acc = b.get(i * (j1 - j0) + j - j0).copied().unwrap_or(f32::NAN);
                let dst = &mut y[i * n + j];
                *dst = if accumulate { *dst + acc } else { acc };
            }
        }
    }
}

/// `sy_rope`: rotate_half rotary embedding of the q and k heads, in place.
pub fn rope(qkv: &mut [f32], pos: &[i32], inv_freq: &[f32], shape: &AttnShape) {
    let (hd, half) = (shape.head_dim, shape.head_dim / 2);
    let width = shape.qkv_width();
    for (t, &p) in pos.iter().enumerate() {
        let row = &mut qkv[t * width..][..width];
        for head in 0..shape.num_heads + shape.num_kv_heads {
            let x = &mut row[head * hd..][..hd];
            for (i, f) in inv_freq.iter().enumerate().take(half) {
                let ang = p as f32 * f;
                let (s, c) = ang.sin_cos();
                let (x1, x2) = (x[i], x[i + half]);
                x[i] = x1 * c - x2 * s;
                x[i + half] = x2 * c + x1 * s;
            }
        }
    }
}

/// Offset of (block, kv head, offset in block) in a layer's K or V cache.
fn cache_offset(shape: &AttnShape, block: usize, kv_head: usize, off: usize) -> usize {
    ((block * shape.num_kv_heads + kv_head) * shape.block_size + off) * shape.head_dim
}

/// `sy_kv_write`.
pub fn kv_write<S: Elem>(
    k_cache: &mut [S],
    v_cache: &mut [S],
    qkv: &[f32],
    slots: &[i32],
    shape: &AttnShape,
) {
    let (hd, width) = (shape.head_dim, shape.qkv_width());
    for (t, &slot) in slots.iter().enumerate() {
        if slot < 0 {
            continue;
        }
        let slot = slot as usize;
        let (blk, off) = (slot / shape.block_size, slot % shape.block_size);
        let k = &qkv[t * width + shape.q_width()..];
        let v = &k[shape.num_kv_heads * hd..];
        for h in 0..shape.num_kv_heads {
            let dst = cache_offset(shape, blk, h, off);
            for d in 0..hd {
                k_cache[dst + d] = S::store(k[h * hd + d]);
                v_cache[dst + d] = S::store(v[h * hd + d]);
            }
        }
    }
}

/// Where one token row's attention reads: its sequence's block table and position.
pub struct AttnRow<'a> {
    /// Token row in qkv / out.
    pub row: usize,
    /// The sequence's block table.
    pub table: &'a [i32],
    /// The token's position (it sees keys 0..=pos).
    pub pos: usize,
}

/// `sy_paged_attention` and `sy_prefill_attention`: causal softmax attention
/// of each row over its cached keys, written to `out` in the store type.
pub fn attention<'a, S: Elem>(
    out: &mut [S],
    qkv: &[f32],
    k_cache: &[S],
    v_cache: &[S],
    rows: impl IntoIterator<Item = AttnRow<'a>>,
    shape: &AttnShape,
) {
    let (hd, width, group) = (
        shape.head_dim,
        shape.qkv_width(),
        shape.num_heads / shape.num_kv_heads,
    );
    let scale = shape.scale();
    let mut scores = Vec::new();
    let mut acc = vec![0f32; hd];
    for r in rows {
        for h in 0..shape.num_heads {
            let q: Vec<f32> = qkv[r.row * width + h * hd..][..hd]
                .iter()
                .map(|v| v * scale)
                .collect();
            let kvh = h / group;
            scores.clear();
            for j in 0..=r.pos {
                let base = cache_offset(
                    shape,
                    r.table[j / shape.block_size] as usize,
                    kvh,
                    j % shape.block_size,
                );
                let kr = &k_cache[base..][..hd];
                scores.push(q.iter().zip(kr).map(|(a, b)| a * b.load()).sum::<f32>());
            }
            let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            acc.iter_mut().for_each(|a| *a = 0.0);
            let mut l = 0f32;
            for (j, s) in scores.iter().enumerate() {
                let p = (s - m).exp();
                l += p;
                let base = cache_offset(
                    shape,
                    r.table[j / shape.block_size] as usize,
                    kvh,
                    j % shape.block_size,
                );
                for (a, v) in acc.iter_mut().zip(&v_cache[base..][..hd]) {
                    *a += p * v.load();
                }
            }
            let o = &mut out[r.row * shape.q_width() + h * hd..][..hd];
            for (o, a) in o.iter_mut().zip(&acc) {
                *o = S::store(a / l);
            }
        }
    }
}

/// `sy_silu_mul`.
pub fn silu_mul<S: Elem>(out: &mut [S], gate_up: &[f32], tokens: usize, inter: usize) {
    for t in 0..tokens {
        let g = &gate_up[t * 2 * inter..][..2 * inter];
        for i in 0..inter {
            let a = g[i];
            out[t * inter + i] = S::store(a / (1.0 + (-a).exp()) * g[inter + i]);
        }
    }
}

/// `sy_gather_rows`.
pub fn gather_rows(out: &mut [f32], x: &[f32], rows: &[i32], dim: usize) {
    for (r, &src) in rows.iter().enumerate() {
        out[r * dim..][..dim].copy_from_slice(&x[src as usize * dim..][..dim]);
    }
}

/// `sy_argmax`: first index of each row's maximum (NaN never wins; -1 if none).
pub fn argmax(out: &mut [i32], logits: &[f32], vocab: usize) {
    for (o, row) in out.iter_mut().zip(logits.chunks(vocab)) {
        *o = crate::sampling::argmax(row).map_or(-1, |i| i as i32);
    }
}

/// `sy_copy_blocks`.
pub fn copy_blocks<S: Elem>(k: &mut [S], v: &mut [S], pairs: &[i32], block_elems: usize) {
    for p in pairs.chunks_exact(2) {
        let (src, dst) = (p[0] as usize * block_elems, p[1] as usize * block_elems);
        k.copy_within(src..src + block_elems, dst);
        v.copy_within(src..src + block_elems, dst);
    }
}

/// A host buffer of [`HostOps`].
#[derive(Debug, Clone)]
pub enum HostBuf {
    /// f32 values (also the store buffers of an f32 device).
    F32(Vec<f32>),
    /// i32 indices.
    I32(Vec<i32>),
    /// bf16 store values.
    Bf16(Vec<Bf16>),
}

/// The CPU reference as a device: buffers are vectors, kernels are the functions above.
#[derive(Debug, Clone)]
pub struct HostOps {
    store: StoreType,
    memory_bytes: u64,
}

impl HostOps {
    /// A reference device with the given store type, reporting `memory_bytes` of memory.
    pub fn new(store: StoreType, memory_bytes: u64) -> Self {
        Self {
            store,
            memory_bytes,
        }
    }
}

fn kind_err(what: &str) -> BackendError {
    BackendError::StepFailed(format!("host reference: {what} has the wrong buffer kind"))
}

fn f32s<'a>(b: &'a HostBuf, what: &str) -> Result<&'a [f32], BackendError> {
    match b {
        HostBuf::F32(v) => Ok(v),
        _ => Err(kind_err(what)),
    }
}

fn f32s_mut<'a>(b: &'a mut HostBuf, what: &str) -> Result<&'a mut [f32], BackendError> {
    match b {
        HostBuf::F32(v) => Ok(v),
        _ => Err(kind_err(what)),
    }
}

fn i32s<'a>(b: &'a HostBuf, what: &str) -> Result<&'a [i32], BackendError> {
    match b {
        HostBuf::I32(v) => Ok(v),
        _ => Err(kind_err(what)),
    }
}

/// Runs `$body` with `$o` (mut) and `$i...` bound to the same store element type.
macro_rules! with_store {
    ($what:expr, $o:ident = $ob:expr; $($i:ident = $ib:expr),* => $body:expr) => {
        match ($ob, $($ib),*) {
            (HostBuf::F32($o), $(HostBuf::F32($i)),*) => { $body; Ok(()) }
            (HostBuf::Bf16($o), $(HostBuf::Bf16($i)),*) => { $body; Ok(()) }
            _ => Err(kind_err($what)),
        }
    };
}

impl GpuOps for HostOps {
    type Buf = HostBuf;

    fn store_type(&self) -> StoreType {
        self.store
    }

    fn alloc(&mut self, kind: BufKind, len: usize) -> Result<HostBuf, BackendError> {
        Ok(match (kind, self.store) {
            (BufKind::F32, _) | (BufKind::Store, StoreType::F32) => HostBuf::F32(vec![0.0; len]),
            (BufKind::I32, _) => HostBuf::I32(vec![0; len]),
            (BufKind::Store, StoreType::Bf16) => HostBuf::Bf16(vec![Bf16(0); len]),
        })
    }

    fn upload_f32(&mut self, dst: &mut HostBuf, src: &[f32]) -> Result<(), BackendError> {
        match dst {
            HostBuf::F32(v) if v.len() >= src.len() => v[..src.len()].copy_from_slice(src),
            HostBuf::Bf16(v) if v.len() >= src.len() => {
                for (d, s) in v.iter_mut().zip(src) {
                    *d = Bf16::store(*s);
                }
            }
            _ => return Err(kind_err("upload_f32 destination")),
        }
        Ok(())
    }

    fn upload_i32(&mut self, dst: &mut HostBuf, src: &[i32]) -> Result<(), BackendError> {
        match dst {
            HostBuf::I32(v) if v.len() >= src.len() => {
                v[..src.len()].copy_from_slice(src);
                Ok(())
            }
            _ => Err(kind_err("upload_i32 destination")),
        }
    }

    fn download_f32(&mut self, src: &HostBuf, out: &mut [f32]) -> Result<(), BackendError> {
        let s = f32s(src, "download_f32 source")?;
        out.copy_from_slice(&s[..out.len()]);
        Ok(())
    }

    fn download_store(&mut self, src: &HostBuf, out: &mut [f32]) -> Result<(), BackendError> {
        match src {
            HostBuf::F32(v) => out.copy_from_slice(&v[..out.len()]),
            HostBuf::Bf16(v) => {
                for (o, b) in out.iter_mut().zip(v) {
                    *o = b.load();
                }
            }
            HostBuf::I32(_) => return Err(kind_err("download_store source")),
        }
        Ok(())
    }

    fn download_i32(&mut self, src: &HostBuf, out: &mut [i32]) -> Result<(), BackendError> {
        let s = i32s(src, "download_i32 source")?;
        out.copy_from_slice(&s[..out.len()]);
        Ok(())
    }

    fn embed(
        &mut self,
        out: &mut HostBuf,
        table: &HostBuf,
        ids: &HostBuf,
        tokens: usize,
        hidden: usize,
    ) -> Result<(), BackendError> {
        let ids = &i32s(ids, "embed ids")?[..tokens];
        let out = f32s_mut(out, "embed out")?;
        match table {
            HostBuf::F32(t) => embed(out, t, ids, hidden),
            HostBuf::Bf16(t) => embed(out, t, ids, hidden),
            HostBuf::I32(_) => return Err(kind_err("embed table")),
        }
        Ok(())
    }

    fn rms_norm(
        &mut self,
        out: &mut HostBuf,
        x: &HostBuf,
        w: &HostBuf,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<(), BackendError> {
        let x = f32s(x, "rms_norm x")?;
        with_store!("rms_norm", o = out; w = w => rms_norm(o, x, w, rows, dim, eps))
    }

    fn gemm(
        &mut self,
        y: &mut HostBuf,
        x: &HostBuf,
        w: &HostBuf,
        m: usize,
        n: usize,
        k: usize,
        accumulate: bool,
    ) -> Result<(), BackendError> {
        let y = f32s_mut(y, "gemm y")?;
        match (x, w) {
            (HostBuf::F32(x), HostBuf::F32(w)) => gemm(y, x, w, m, n, k, accumulate),
            (HostBuf::Bf16(x), HostBuf::Bf16(w)) => gemm(y, x, w, m, n, k, accumulate),
            _ => return Err(kind_err("gemm operands")),
        }
        Ok(())
    }

    fn rope(
        &mut self,
        qkv: &mut HostBuf,
        pos: &HostBuf,
        inv_freq: &HostBuf,
        tokens: usize,
        shape: &AttnShape,
    ) -> Result<(), BackendError> {
        let pos = &i32s(pos, "rope positions")?[..tokens];
        let inv = f32s(inv_freq, "rope frequencies")?;
        rope(f32s_mut(qkv, "rope qkv")?, pos, inv, shape);
        Ok(())
    }

    fn kv_write(
        &mut self,
        k_cache: &mut HostBuf,
        v_cache: &mut HostBuf,
        qkv: &HostBuf,
        slots: &HostBuf,
        tokens: usize,
        shape: &AttnShape,
    ) -> Result<(), BackendError> {
        let qkv = f32s(qkv, "kv_write qkv")?;
        let slots = &i32s(slots, "kv_write slots")?[..tokens];
        match (k_cache, v_cache) {
            (HostBuf::F32(k), HostBuf::F32(v)) => kv_write(k, v, qkv, slots, shape),
            (HostBuf::Bf16(k), HostBuf::Bf16(v)) => kv_write(k, v, qkv, slots, shape),
            _ => return Err(kind_err("kv caches")),
        }
        Ok(())
    }

    fn attention(
        &mut self,
        out: &mut HostBuf,
        qkv: &HostBuf,
        k_cache: &HostBuf,
        v_cache: &HostBuf,
        meta: &StepMeta<'_, HostBuf>,
        shape: &AttnShape,
    ) -> Result<(), BackendError> {
        let qkv = f32s(qkv, "attention qkv")?;
        let tok_seq = i32s(meta.tok_seq, "tok_seq")?;
        let tok_pos = i32s(meta.tok_pos, "tok_pos")?;
        let tables = i32s(meta.block_tables, "block_tables")?;
        let decode = &i32s(meta.decode_rows, "decode_rows")?[..meta.num_decode];
        let prefill = &i32s(meta.prefill_seqs, "prefill_seqs")?[..meta.num_prefill];
        let first = i32s(meta.seq_first_row, "seq_first_row")?;
        let num_new = i32s(meta.seq_num_new, "seq_num_new")?;
        let row_of = |row: usize| {
            let seq = tok_seq[row] as usize;
            AttnRow {
                row,
                table: &tables[seq * meta.max_blocks..][..meta.max_blocks],
                pos: tok_pos[row] as usize,
            }
        };
        let rows: Vec<AttnRow<'_>> = decode
            .iter()
            .map(|&r| r as usize)
            .chain(prefill.iter().flat_map(|&s| {
                let s = s as usize;
                let f = first[s] as usize;
                f..f + num_new[s] as usize
            }))
            .map(row_of)
            .collect();
        with_store!("attention", o = out; k = k_cache, v = v_cache
            => attention(o, qkv, k, v, rows, shape))
    }

    fn silu_mul(
        &mut self,
        out: &mut HostBuf,
        gate_up: &HostBuf,
        tokens: usize,
        inter: usize,
    ) -> Result<(), BackendError> {
        let g = f32s(gate_up, "silu_mul gate_up")?;
        with_store!("silu_mul", o = out; => silu_mul(o, g, tokens, inter))
    }

    fn gather_rows(
        &mut self,
        out: &mut HostBuf,
        x: &HostBuf,
        rows: &HostBuf,
        n: usize,
        dim: usize,
    ) -> Result<(), BackendError> {
        let rows = &i32s(rows, "gather rows")?[..n];
        let x = f32s(x, "gather x")?;
        gather_rows(f32s_mut(out, "gather out")?, x, rows, dim);
        Ok(())
    }

    fn argmax(
        &mut self,
        out: &mut HostBuf,
        logits: &HostBuf,
        rows: usize,
        vocab: usize,
    ) -> Result<(), BackendError> {
        let logits = &f32s(logits, "argmax logits")?[..rows * vocab];
        match out {
            HostBuf::I32(o) => argmax(&mut o[..rows], logits, vocab),
            _ => return Err(kind_err("argmax out")),
        }
        Ok(())
    }

    fn copy_blocks(
        &mut self,
        k_cache: &mut HostBuf,
        v_cache: &mut HostBuf,
        pairs: &HostBuf,
        num_pairs: usize,
        block_elems: usize,
    ) -> Result<(), BackendError> {
        let pairs = &i32s(pairs, "copy pairs")?[..2 * num_pairs];
        match (k_cache, v_cache) {
            (HostBuf::F32(k), HostBuf::F32(v)) => copy_blocks(k, v, pairs, block_elems),
            (HostBuf::Bf16(k), HostBuf::Bf16(v)) => copy_blocks(k, v, pairs, block_elems),
            _ => return Err(kind_err("kv caches")),
        }
        Ok(())
    }

    fn synchronize(&mut self) -> Result<(), BackendError> {
        Ok(())
    }

    fn memory(&self) -> Result<(u64, u64), BackendError> {
        Ok((self.memory_bytes, self.memory_bytes))
    }
}
