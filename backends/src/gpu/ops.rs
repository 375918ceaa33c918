//! The operations a GPU runtime provides to the decoder ([`super::runner`]):
//! buffers, copies and one method per kernel of `backends/kernels/llama.cu`.
//!
//! Implemented by the CPU reference ([`super::reference::HostOps`]), CUDA
//! ([`super::cuda`]) and ROCm ([`super::rocm`]), so one forward pass drives
//! all three and the CPU one is tested in CI. Buffers are typed by
//! [`BufKind`]; lengths are in elements. Methods enqueue work: results are
//! visible to `download_*`, which waits for the device.

use crate::error::BackendError;

/// Element type of weights, KV cache and GEMM inputs on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreType {
    /// 32-bit float: exact against the ONNX reference, twice the memory.
    F32,
    /// bfloat16 with f32 accumulation: the serving default on GPUs.
    Bf16,
}

impl StoreType {
    /// Bytes per element.
    pub fn bytes(self) -> usize {
        match self {
            StoreType::F32 => 4,
            StoreType::Bf16 => 2,
        }
    }
}

impl std::fmt::Display for StoreType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreType::F32 => "f32",
            StoreType::Bf16 => "bf16",
        })
    }
}

/// What a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufKind {
    /// f32 activations, logits, frequencies.
    F32,
    /// i32 indices (token ids, positions, slots, block tables).
    I32,
    /// The device's [`StoreType`]: weights, KV cache, GEMM inputs.
    Store,
}

/// Attention geometry of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnShape {
    /// Query heads.
    pub num_heads: usize,
    /// KV heads (divides `num_heads`).
    pub num_kv_heads: usize,
    /// Width of a head.
    pub head_dim: usize,
    /// Tokens per KV block.
    pub block_size: usize,
}

impl AttnShape {
    /// Width of a fused qkv row.
    pub fn qkv_width(&self) -> usize {
        (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
    }

    /// Width of the attention output row.
    pub fn q_width(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Elements of one KV block of one layer (K or V).
    pub fn block_elems(&self) -> usize {
        self.num_kv_heads * self.block_size * self.head_dim
    }

    /// Softmax scale 1/sqrt(head_dim).
    pub fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
}

/// A step's index arrays for the attention kernels, already on the device.
///
/// Token rows are the step's tokens in plan order; sequences are the plan's
/// sequences. Decode rows (sequences with one new token) go to the paged
/// decode kernel, the other sequences to the prefill kernel.
pub struct StepMeta<'a, B> {
    /// Sequence index of each token row.
    pub tok_seq: &'a B,
    /// Position of each token row.
    pub tok_pos: &'a B,
    /// Block tables, `max_blocks` per sequence, padded.
    pub block_tables: &'a B,
    /// Row stride of `block_tables`.
    pub max_blocks: usize,
    /// Token rows of decoding sequences.
    pub decode_rows: &'a B,
    /// Number of decode rows.
    pub num_decode: usize,
    /// Indices of sequences with more than one new token.
    pub prefill_seqs: &'a B,
    /// Number of prefilling sequences.
    pub num_prefill: usize,
    /// Largest new-token count among prefilling sequences.
    pub max_prefill_new: usize,
    /// First token row of each sequence.
    pub seq_first_row: &'a B,
    /// New tokens of each sequence.
    pub seq_num_new: &'a B,
    /// Position of each sequence's first new token.
    pub seq_start_pos: &'a B,
}

/// A device runtime: memory, copies and the decoder's kernels.
pub trait GpuOps: Send {
    /// A device buffer.
    type Buf: Send;

    /// Element type of `BufKind::Store` buffers.
    fn store_type(&self) -> StoreType;

    /// Allocates `len` zeroed elements.
    fn alloc(&mut self, kind: BufKind, len: usize) -> Result<Self::Buf, BackendError>;

    /// Copies f32 values into an `F32` or `Store` buffer (rounded to the store type).
    fn upload_f32(&mut self, dst: &mut Self::Buf, src: &[f32]) -> Result<(), BackendError>;

    /// Copies indices into an `I32` buffer.
    fn upload_i32(&mut self, dst: &mut Self::Buf, src: &[i32]) -> Result<(), BackendError>;

    /// Waits for the device and copies the first `out.len()` values of an `F32` buffer.
    fn download_f32(&mut self, src: &Self::Buf, out: &mut [f32]) -> Result<(), BackendError>;

    /// Waits for the device and copies the first `out.len()` values of a `Store` buffer, widened.
    fn download_store(&mut self, src: &Self::Buf, out: &mut [f32]) -> Result<(), BackendError>;

    /// Waits for the device and copies the first `out.len()` values of an `I32` buffer.
    fn download_i32(&mut self, src: &Self::Buf, out: &mut [i32]) -> Result<(), BackendError>;

    /// `out[t] = table[ids[t]]` for `tokens` rows of `hidden`.
    fn embed(
        &mut self,
        out: &mut Self::Buf,
        table: &Self::Buf,
        ids: &Self::Buf,
        tokens: usize,
        hidden: usize,
    ) -> Result<(), BackendError>;

    /// RMSNorm of `rows` rows of `x` (f32) into `out` (store), scaled by `w`.
    fn rms_norm(
        &mut self,
        out: &mut Self::Buf,
        x: &Self::Buf,
        w: &Self::Buf,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<(), BackendError>;

    /// `y[m, n] (+)= x[m, k] · w[n, k]ᵀ`; `x`, `w` store, `y` f32.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &mut self,
        y: &mut Self::Buf,
        x: &Self::Buf,
        w: &Self::Buf,
        m: usize,
        n: usize,
        k: usize,
        accumulate: bool,
    ) -> Result<(), BackendError>;

    /// Rotary embedding of the q and k heads of `tokens` qkv rows, in place.
    fn rope(
        &mut self,
        qkv: &mut Self::Buf,
        pos: &Self::Buf,
        inv_freq: &Self::Buf,
        tokens: usize,
        shape: &AttnShape,
    ) -> Result<(), BackendError>;

    /// Writes each row's k and v heads into cache slot `slots[t]` (skipped when negative).
    #[allow(clippy::too_many_arguments)]
    fn kv_write(
        &mut self,
        k_cache: &mut Self::Buf,
        v_cache: &mut Self::Buf,
        qkv: &Self::Buf,
        slots: &Self::Buf,
        tokens: usize,
        shape: &AttnShape,
    ) -> Result<(), BackendError>;

    /// Causal attention of every token row over its sequence's cached positions.
    fn attention(
        &mut self,
        out: &mut Self::Buf,
        qkv: &Self::Buf,
        k_cache: &Self::Buf,
        v_cache: &Self::Buf,
        meta: &StepMeta<'_, Self::Buf>,
        shape: &AttnShape,
    ) -> Result<(), BackendError>;

    /// `out[t, i] = silu(gate_up[t, i]) · gate_up[t, inter + i]` into store.
    fn silu_mul(
        &mut self,
        out: &mut Self::Buf,
        gate_up: &Self::Buf,
        tokens: usize,
        inter: usize,
    ) -> Result<(), BackendError>;

    /// `out[r] = x[rows[r]]` for `n` rows of `dim` f32.
    fn gather_rows(
        &mut self,
        out: &mut Self::Buf,
        x: &Self::Buf,
        rows: &Self::Buf,
        n: usize,
        dim: usize,
    ) -> Result<(), BackendError>;

    /// First index of the largest value of each of `rows` rows of `vocab` logits.
    fn argmax(
        &mut self,
        out: &mut Self::Buf,
        logits: &Self::Buf,
        rows: usize,
        vocab: usize,
    ) -> Result<(), BackendError>;

    /// Copies KV block `pairs[2p]` over `pairs[2p + 1]` in both caches.
    fn copy_blocks(
        &mut self,
        k_cache: &mut Self::Buf,
        v_cache: &mut Self::Buf,
        pairs: &Self::Buf,
        num_pairs: usize,
        block_elems: usize,
    ) -> Result<(), BackendError>;

    /// Waits until every enqueued operation has finished.
    fn synchronize(&mut self) -> Result<(), BackendError>;

    /// Device memory (free, total) in bytes, for sizing the KV pool.
    fn memory(&self) -> Result<(u64, u64), BackendError>;
}
