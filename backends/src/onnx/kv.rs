//! The physical KV pool of the ONNX backend, in host memory.
//!
//! # Layout
//! Per layer, one K and one V buffer of `[num_blocks, kv_heads, block_size,
//! head_dim]` f32, so one head's slice of one block is `block_size ×
//! head_dim` contiguous floats. Block `b` of the engine's block tables is
//! block `b` here: the engine owns the logical allocation (`BlockManager`),
//! this pool only stores data.
//!
//! # Operations
//! - [`KvPool::copy_block`]: copy-on-write of one block in every layer.
//! - [`KvPool::gather`]: one sequence's first `len` cached tokens into a
//!   dense `[kv_heads, past, head_dim]` slice of a `past_key_values` batch
//!   (the rest of its `past` rows are left as they are: masked padding).
//! - [`KvPool::scatter`]: a run of new tokens' K/V from a `present` output
//!   `[kv_heads, total, head_dim]` into the blocks their positions map to.
//!
//! Callers validate block ids against [`KvPool::num_blocks`] first; the
//! methods index and would panic on an out-of-range block.

use crate::contract::BlockId;

/// K or V.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kv {
    /// Keys.
    Key = 0,
    /// Values.
    Value = 1,
}

/// Dimensions of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvShape {
    /// Layers.
    pub layers: usize,
    /// KV heads per layer.
    pub kv_heads: usize,
    /// Head width.
    pub head_dim: usize,
    /// Tokens per block.
    pub block_size: usize,
    /// Blocks in the pool.
    pub num_blocks: usize,
}

impl KvShape {
    /// Floats of one block of one layer's K (or V).
    pub fn block_floats(&self) -> usize {
        self.kv_heads * self.block_size * self.head_dim
    }

    /// Bytes of one block across all layers, K and V.
    pub fn block_bytes(&self) -> u64 {
        (2 * self.layers * self.block_floats() * std::mem::size_of::<f32>()) as u64
    }
}

/// Paged K/V storage for every layer.
#[derive(Debug)]
pub struct KvPool {
    shape: KvShape,
    /// `data[layer][Kv]`: `[num_blocks, kv_heads, block_size, head_dim]`.
    data: Vec<[Vec<f32>; 2]>,
}

impl KvPool {
    /// A zeroed pool of `shape`.
    pub fn new(shape: KvShape) -> Self {
        let n = shape.num_blocks * shape.block_floats();
        let data = (0..shape.layers)
            .map(|_| [vec![0.0; n], vec![0.0; n]])
            .collect();
        Self { shape, data }
    }

    /// Dimensions of the pool.
    pub fn shape(&self) -> &KvShape {
        &self.shape
    }

    /// Blocks in the pool.
    pub fn num_blocks(&self) -> usize {
        self.shape.num_blocks
    }

    /// Copies block `src` over block `dst` in every layer, K and V.
    pub fn copy_block(&mut self, src: BlockId, dst: BlockId) {
        let bf = self.shape.block_floats();
        let (s, d) = (src.0 as usize * bf, dst.0 as usize * bf);
        if s == d {
            return;
        }
        for layer in &mut self.data {
            for buf in layer.iter_mut() {
                buf.copy_within(s..s + bf, d);
            }
        }
    }

    /// Writes tokens `0..len` of a sequence into `dst`, a `[kv_heads, past, head_dim]` slice.
    pub fn gather(
        &self,
        layer: usize,
        kv: Kv,
        table: &[BlockId],
        len: usize,
        past: usize,
        dst: &mut [f32],
    ) {
        let KvShape {
            kv_heads,
            head_dim,
            block_size,
            ..
        } = self.shape;
        let src = &self.data[layer][kv as usize];
        let bf = self.shape.block_floats();
        for (k, block) in table.iter().enumerate() {
            let first = k * block_size;
            if first >= len {
                break;
            }
            let n = (len - first).min(block_size) * head_dim;
            let base = block.0 as usize * bf;
            for h in 0..kv_heads {
                let from = base + h * block_size * head_dim;
                let to = (h * past + first) * head_dim;
                dst[to..to + n].copy_from_slice(&src[from..from + n]);
            }
        }
    }

    /// Stores `count` new tokens at positions `start..start + count`, read from
    /// `present` (`[kv_heads, total, head_dim]`) rows `row..row + count`.
    #[allow(clippy::too_many_arguments)]
    pub fn scatter(
        &mut self,
        layer: usize,
        kv: Kv,
        table: &[BlockId],
        start: usize,
        count: usize,
        present: &[f32],
        total: usize,
        row: usize,
    ) {
        let KvShape {
            kv_heads,
            head_dim,
            block_size,
            ..
        } = self.shape;
        let bf = self.shape.block_floats();
        let dst = &mut self.data[layer][kv as usize];
        let mut done = 0;
        while done < count {
            let pos = start + done;
            let (k, off) = (pos / block_size, pos % block_size);
            let n = (block_size - off).min(count - done);
            let base = table[k].0 as usize * bf;
            for h in 0..kv_heads {
                let to = base + (h * block_size + off) * head_dim;
                let from = (h * total + row + done) * head_dim;
                dst[to..to + n * head_dim].copy_from_slice(&present[from..from + n * head_dim]);
            }
            done += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> KvShape {
        KvShape {
            layers: 2,
            kv_heads: 2,
            head_dim: 3,
            block_size: 4,
            num_blocks: 8,
        }
    }

    /// A fake `present` [kv_heads, total, head_dim] whose value encodes (head, row, dim).
    fn present(total: usize) -> Vec<f32> {
        let s = shape();
        let mut v = vec![0.0; s.kv_heads * total * s.head_dim];
        for h in 0..s.kv_heads {
            for r in 0..total {
                for d in 0..s.head_dim {
                    v[(h * total + r) * s.head_dim + d] = (h * 1000 + r * 10 + d) as f32;
                }
            }
        }
        v
    }

    #[test]
    fn scatter_then_gather_round_trips_across_blocks() {
        let mut pool = KvPool::new(shape());
        let table = [BlockId(5), BlockId(2), BlockId(7)];
        let total = 12;
        let p = present(total);
        // Tokens 0..3 from rows 0..3, then 3..10 from rows 3..10 (crosses blocks).
        pool.scatter(1, Kv::Value, &table, 0, 3, &p, total, 0);
        pool.scatter(1, Kv::Value, &table, 3, 7, &p, total, 3);
        let past = 11;
        let mut out = vec![-1.0; 2 * past * 3];
        pool.gather(1, Kv::Value, &table, 10, past, &mut out);
        for h in 0..2 {
            for r in 0..past {
                for d in 0..3 {
                    let got = out[(h * past + r) * 3 + d];
                    let want = if r < 10 {
                        (h * 1000 + r * 10 + d) as f32
                    } else {
                        -1.0
                    };
                    assert_eq!(got, want, "head {h} row {r} dim {d}");
                }
            }
        }
        // Other layers and K are untouched.
        let mut k = vec![-1.0; 2 * past * 3];
        pool.gather(1, Kv::Key, &table, 10, past, &mut k);
        assert!(k.iter().take(30).all(|&x| x == 0.0));
    }

    #[test]
    fn copy_block_copies_every_layer() {
        let mut pool = KvPool::new(shape());
        let p = present(4);
        for layer in 0..2 {
            pool.scatter(layer, Kv::Key, &[BlockId(1)], 0, 4, &p, 4, 0);
        }
        pool.copy_block(BlockId(1), BlockId(6));
        for layer in 0..2 {
            let (mut a, mut b) = (vec![0.0; 24], vec![0.0; 24]);
            pool.gather(layer, Kv::Key, &[BlockId(1)], 4, 4, &mut a);
            pool.gather(layer, Kv::Key, &[BlockId(6)], 4, 4, &mut b);
            assert_eq!(a, b);
            assert_eq!(a, p);
        }
    }
}
