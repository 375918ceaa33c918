//! The kernels' launch geometry and argument lists, written once for every
//! runtime that loads `backends/kernels/` ([`KernelRuntime`]: CUDA, ROCm).
//! [`KernelOps`] turns such a runtime into the decoder's [`GpuOps`].

use super::kernels::{ARGMAX_THREADS, ATTN_WARPS, GEMM_TILE, ROW_THREADS};
use super::ops::{AttnShape, BufKind, GpuOps, StepMeta, StoreType};
use super::reference::f32_to_bf16;
use crate::error::BackendError;

/// One kernel argument, by value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KArg {
    /// A device address.
    Ptr(u64),
    /// A 32-bit int.
    I32(i32),
    /// A 32-bit float.
    F32(f32),
}

/// Grid (blocks per dimension) and block (threads x, y) of a launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Blocks in x, y, z (each at least 1).
    pub grid: (u32, u32, u32),
    /// Threads in x, y.
    pub block: (u32, u32),
}

impl Geometry {
    fn new(x: usize, y: usize, z: usize, block: (u32, u32)) -> Self {
        let d = |v: usize| v.max(1) as u32;
        Self {
            grid: (d(x), d(y), d(z)),
            block,
        }
    }

    fn rows(n: usize) -> Self {
        Self::new(n, 1, 1, (ROW_THREADS, 1))
    }
}

/// One GEMM, `y[m, n] (+)= x[m, k] · w[n, k]ᵀ`, by device address; `x` and
/// `w` hold the store type, `y` f32. In column-major BLAS terms it is
/// `yᵀ[n, m] = w · xᵀ`: A = w (k × n, transposed), B = x (k × m), ldc = n.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gemm {
    /// Output address.
    pub y: u64,
    /// Left operand address.
    pub x: u64,
    /// Weight address.
    pub w: u64,
    /// Rows of `x` and `y`.
    pub m: usize,
    /// Rows of `w`, columns of `y`.
    pub n: usize,
    /// Shared inner dimension.
    pub k: usize,
    /// Add to `y` instead of overwriting it.
    pub accumulate: bool,
}

/// A device runtime that can run the compiled shared kernels.
pub trait KernelRuntime: Send {
    /// A raw device allocation.
    type Mem: Send;

    /// Element type of store buffers.
    fn store_type(&self) -> StoreType;
    /// Threads per warp / wavefront.
    fn warp_size(&self) -> u32;
    /// Allocates `bytes` zeroed bytes.
    fn alloc_bytes(&mut self, bytes: usize) -> Result<Self::Mem, BackendError>;
    /// Device address of an allocation.
    fn address(&self, mem: &Self::Mem) -> u64;
    /// Copies host bytes to the start of `mem`.
    fn write(&mut self, mem: &mut Self::Mem, bytes: &[u8]) -> Result<(), BackendError>;
    /// Waits for queued work, then copies the start of `mem` to the host.
    fn read(&mut self, mem: &Self::Mem, out: &mut [u8]) -> Result<(), BackendError>;
    /// Queues kernel `name`.
    fn launch(&self, name: &str, geometry: Geometry, args: &[KArg]) -> Result<(), BackendError>;
    /// Runs `g` on the vendor BLAS; `None` when there is none.
    fn blas_gemm(&mut self, g: &Gemm) -> Option<Result<(), BackendError>>;
    /// Waits for queued work.
    fn synchronize(&mut self) -> Result<(), BackendError>;
    /// (free, total) device memory, bytes.
    fn memory(&self) -> Result<(u64, u64), BackendError>;
}

/// A typed device buffer of a [`KernelRuntime`].
pub struct DeviceBuf<M> {
    kind: BufKind,
    len: usize,
    mem: M,
}

/// The decoder's operations on a kernel runtime.
pub struct KernelOps<R>(pub R);

fn as_bytes<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: only called with f32, i32 and u16: no padding, every byte readable.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

fn misuse(what: &str) -> BackendError {
    BackendError::StepFailed(format!("device buffer misuse: {what}"))
}

impl<R: KernelRuntime> KernelOps<R> {
    fn p(&self, b: &DeviceBuf<R::Mem>) -> KArg {
        KArg::Ptr(self.0.address(&b.mem))
    }

    fn read_words(
        &mut self,
        src: &DeviceBuf<R::Mem>,
        n: usize,
        kind: BufKind,
    ) -> Result<Vec<[u8; 4]>, BackendError> {
        if n > src.len || src.kind != kind {
            return Err(misuse("download source too small or of another kind"));
        }
        let mut bytes = vec![0u8; n * 4];
        self.0.read(&src.mem, &mut bytes)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| [b[0], b[1], b[2], b[3]])
            .collect())
    }
}

fn i(v: usize) -> KArg {
    KArg::I32(v as i32)
}

impl<R: KernelRuntime> GpuOps for KernelOps<R> {
    type Buf = DeviceBuf<R::Mem>;

    fn store_type(&self) -> StoreType {
        self.0.store_type()
    }

    fn alloc(&mut self, kind: BufKind, len: usize) -> Result<Self::Buf, BackendError> {
        let elem = match kind {
            BufKind::F32 | BufKind::I32 => 4,
            BufKind::Store => self.0.store_type().bytes(),
        };
        let mem = self.0.alloc_bytes(len.max(1) * elem)?;
        Ok(DeviceBuf { kind, len, mem })
    }

    fn upload_f32(&mut self, dst: &mut Self::Buf, src: &[f32]) -> Result<(), BackendError> {
        if src.len() > dst.len || dst.kind == BufKind::I32 {
            return Err(misuse("upload_f32 destination too small or not float"));
        }
        if dst.kind == BufKind::Store && self.0.store_type() == StoreType::Bf16 {
            let bits: Vec<u16> = src.iter().map(|&f| f32_to_bf16(f)).collect();
            self.0.write(&mut dst.mem, as_bytes(&bits))
        } else {
            self.0.write(&mut dst.mem, as_bytes(src))
        }
    }

    fn upload_i32(&mut self, dst: &mut Self::Buf, src: &[i32]) -> Result<(), BackendError> {
        if src.len() > dst.len || dst.kind != BufKind::I32 {
            return Err(misuse("upload_i32 destination too small or not i32"));
        }
        self.0.write(&mut dst.mem, as_bytes(src))
    }

    fn download_f32(&mut self, src: &Self::Buf, out: &mut [f32]) -> Result<(), BackendError> {
        let words = self.read_words(src, out.len(), BufKind::F32)?;
        for (o, w) in out.iter_mut().zip(words) {
            *o = f32::from_le_bytes(w);
        }
        Ok(())
    }

    fn download_store(&mut self, src: &Self::Buf, out: &mut [f32]) -> Result<(), BackendError> {
        if src.kind != BufKind::Store || out.len() > src.len {
            return Err(misuse("download_store source too small or not store"));
        }
        let elem = self.0.store_type().bytes();
        let mut bytes = vec![0u8; out.len() * elem];
        self.0.read(&src.mem, &mut bytes)?;
        for (o, b) in out.iter_mut().zip(bytes.chunks_exact(elem)) {
            *o = match b {
                [lo, hi] => f32::from_bits(u32::from(u16::from_le_bytes([*lo, *hi])) << 16),
                [a, b, c, d] => f32::from_le_bytes([*a, *b, *c, *d]),
                _ => 0.0,
            };
        }
        Ok(())
    }

    fn download_i32(&mut self, src: &Self::Buf, out: &mut [i32]) -> Result<(), BackendError> {
        let words = self.read_words(src, out.len(), BufKind::I32)?;
        for (o, w) in out.iter_mut().zip(words) {
            *o = i32::from_le_bytes(w);
        }
        Ok(())
    }

    fn embed(
        &mut self,
        out: &mut Self::Buf,
        table: &Self::Buf,
        ids: &Self::Buf,
        tokens: usize,
        hidden: usize,
    ) -> Result<(), BackendError> {
        let args = [self.p(out), self.p(table), self.p(ids), i(hidden)];
        self.0.launch("sy_embed", Geometry::rows(tokens), &args)
    }

    fn rms_norm(
        &mut self,
        out: &mut Self::Buf,
        x: &Self::Buf,
        w: &Self::Buf,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<(), BackendError> {
        let args = [self.p(out), self.p(x), self.p(w), i(dim), KArg::F32(eps)];
        self.0.launch("sy_rms_norm", Geometry::rows(rows), &args)
    }

    fn gemm(
        &mut self,
        y: &mut Self::Buf,
        x: &Self::Buf,
        w: &Self::Buf,
        m: usize,
        n: usize,
        k: usize,
        accumulate: bool,
    ) -> Result<(), BackendError> {
        let (py, px, pw) = (
            self.0.address(&y.mem),
            self.0.address(&x.mem),
            self.0.address(&w.mem),
        );
        let call = Gemm {
            y: py,
            x: px,
            w: pw,
            m,
            n,
            k,
            accumulate,
        };
        if let Some(done) = self.0.blas_gemm(&call) {
            return done;
        }
        let t = GEMM_TILE as usize;
        let g = Geometry::new(n.div_ceil(t), m.div_ceil(t), 1, (GEMM_TILE, GEMM_TILE));
        let args = [
            KArg::Ptr(py),
            KArg::Ptr(px),
            KArg::Ptr(pw),
            i(m),
            i(n),
            i(k),
            KArg::I32(accumulate as i32),
        ];
        self.0.launch("sy_gemm", g, &args)
    }

    fn rope(
        &mut self,
        qkv: &mut Self::Buf,
        pos: &Self::Buf,
        inv_freq: &Self::Buf,
        tokens: usize,
        s: &AttnShape,
    ) -> Result<(), BackendError> {
        let args = [
            self.p(qkv),
            self.p(pos),
            self.p(inv_freq),
            i(s.num_heads),
            i(s.num_kv_heads),
            i(s.head_dim),
        ];
        self.0.launch("sy_rope", Geometry::rows(tokens), &args)
    }

    fn kv_write(
        &mut self,
        k_cache: &mut Self::Buf,
        v_cache: &mut Self::Buf,
        qkv: &Self::Buf,
        slots: &Self::Buf,
        tokens: usize,
        s: &AttnShape,
    ) -> Result<(), BackendError> {
        let args = [
            self.p(k_cache),
            self.p(v_cache),
            self.p(qkv),
            self.p(slots),
            i(s.num_heads),
            i(s.num_kv_heads),
            i(s.head_dim),
            i(s.block_size),
        ];
        self.0.launch("sy_kv_write", Geometry::rows(tokens), &args)
    }

    fn attention(
        &mut self,
        out: &mut Self::Buf,
        qkv: &Self::Buf,
        k_cache: &Self::Buf,
        v_cache: &Self::Buf,
        m: &StepMeta<'_, Self::Buf>,
        s: &AttnShape,
    ) -> Result<(), BackendError> {
        let threads = (ATTN_WARPS * self.0.warp_size(), 1);
        let head = [self.p(out), self.p(qkv), self.p(k_cache), self.p(v_cache)];
        let tail = [
            self.p(m.block_tables),
            i(m.max_blocks),
            i(s.num_heads),
            i(s.num_kv_heads),
            i(s.head_dim),
            i(s.block_size),
            KArg::F32(s.scale()),
        ];
        if m.num_decode > 0 {
            let rows = [self.p(m.decode_rows), self.p(m.tok_seq), self.p(m.tok_pos)];
            let args: Vec<KArg> = head.iter().chain(&rows).chain(&tail).copied().collect();
            let g = Geometry::new(s.num_heads, m.num_decode, 1, threads);
            self.0.launch("sy_paged_attention", g, &args)?;
        }
        if m.num_prefill > 0 {
            let seqs = [
                self.p(m.prefill_seqs),
                self.p(m.seq_first_row),
                self.p(m.seq_num_new),
                self.p(m.seq_start_pos),
            ];
            let args: Vec<KArg> = head.iter().chain(&seqs).chain(&tail).copied().collect();
            let tiles = m.max_prefill_new.div_ceil(ATTN_WARPS as usize);
            let g = Geometry::new(s.num_heads, tiles, m.num_prefill, threads);
            self.0.launch("sy_prefill_attention", g, &args)?;
        }
        Ok(())
    }

    fn silu_mul(
        &mut self,
        out: &mut Self::Buf,
        gate_up: &Self::Buf,
        tokens: usize,
        inter: usize,
    ) -> Result<(), BackendError> {
        let args = [self.p(out), self.p(gate_up), i(inter)];
        self.0.launch("sy_silu_mul", Geometry::rows(tokens), &args)
    }

    fn gather_rows(
        &mut self,
        out: &mut Self::Buf,
        x: &Self::Buf,
        rows: &Self::Buf,
        n: usize,
        dim: usize,
    ) -> Result<(), BackendError> {
        let args = [self.p(out), self.p(x), self.p(rows), i(dim)];
        self.0.launch("sy_gather_rows", Geometry::rows(n), &args)
    }

    fn argmax(
        &mut self,
        out: &mut Self::Buf,
        logits: &Self::Buf,
        rows: usize,
        vocab: usize,
    ) -> Result<(), BackendError> {
        let args = [self.p(out), self.p(logits), i(vocab)];
        let g = Geometry::new(rows, 1, 1, (ARGMAX_THREADS, 1));
        self.0.launch("sy_argmax", g, &args)
    }

    fn copy_blocks(
        &mut self,
        k_cache: &mut Self::Buf,
        v_cache: &mut Self::Buf,
        pairs: &Self::Buf,
        num_pairs: usize,
        block_elems: usize,
    ) -> Result<(), BackendError> {
        let args = [
            self.p(k_cache),
            self.p(v_cache),
            self.p(pairs),
            i(block_elems),
        ];
        self.0
            .launch("sy_copy_blocks", Geometry::rows(num_pairs), &args)
    }

    fn synchronize(&mut self) -> Result<(), BackendError> {
        self.0.synchronize()
    }

    fn memory(&self) -> Result<(u64, u64), BackendError> {
        self.0.memory()
    }
}
