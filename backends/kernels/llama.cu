// Llama-family decoder kernels over a paged KV cache, shared by the CUDA
// and ROCm backends (see common.h for the dialect). Each kernel's math is
// mirrored by a CPU reference in backends/src/gpu/reference.rs; the two
// must change together.
//
// Layouts (row-major, T = tokens in the step):
//   residual  float [T, hidden]
//   qkv       float [T, (H + 2*KVH) * D]   q heads, then k heads, then v heads
//   k/v cache store_t [blocks, KVH, block_size, D] per layer
//   block_tables int [seqs, max_blocks]; slot = block * block_size + offset
//   weights   store_t [out, in] (Hugging Face nn.Linear layout)

#define SY_ATTN_WARPS 4
#define SY_PREFILL_KEYS 16
#define SY_GEMM_TILE 16
#define SY_NEG_INF (-1e30f)

// out[t, :] = table[ids[t], :]
SY_KERNEL void sy_embed(float* out, const store_t* table, const int* ids, int hidden) {
    const int t = blockIdx.x;
    const long long src = (long long)ids[t] * hidden;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
        out[(long long)t * hidden + i] = sy_load(table[src + i]);
    }
}

// out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w
SY_KERNEL void sy_rms_norm(store_t* out, const float* x, const store_t* w, int dim, float eps) {
    __shared__ float scratch[32];
    const float* xr = x + (long long)blockIdx.x * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        ss += xr[i] * xr[i];
    }
    ss = sy_block_sum(ss, scratch);
    const float inv = 1.0f / sqrtf(ss / (float)dim + eps);
    store_t* o = out + (long long)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        o[i] = sy_store(xr[i] * inv * sy_load(w[i]));
    }
}

// Rotary embedding (Hugging Face rotate_half) of the q and k heads of each
// qkv row, in place; angle = position * inv_freq[i].
SY_KERNEL void sy_rope(float* qkv, const int* pos, const float* inv_freq, int num_heads,
                       int num_kv_heads, int head_dim) {
    const int t = blockIdx.x;
    const int half = head_dim / 2;
    const int width = (num_heads + 2 * num_kv_heads) * head_dim;
    const float p = (float)pos[t];
    float* row = qkv + (long long)t * width;
    for (int idx = threadIdx.x; idx < (num_heads + num_kv_heads) * half; idx += blockDim.x) {
        const int head = idx / half;
        const int i = idx % half;
        float* x = row + head * head_dim;
        const float ang = p * inv_freq[i];
        const float c = cosf(ang);
        const float s = sinf(ang);
        const float x1 = x[i];
        const float x2 = x[i + half];
        x[i] = x1 * c - x2 * s;
        x[i + half] = x2 * c + x1 * s;
    }
}

// Writes each token's k and v heads into its cache slot; slot < 0 skips.
SY_KERNEL void sy_kv_write(store_t* k_cache, store_t* v_cache, const float* qkv, const int* slots,
                           int num_heads, int num_kv_heads, int head_dim, int block_size) {
    const int t = blockIdx.x;
    const int slot = slots[t];
    if (slot < 0) {
        return;
    }
    const int width = (num_heads + 2 * num_kv_heads) * head_dim;
    const long long blk = slot / block_size;
    const int off = slot % block_size;
    const float* k = qkv + (long long)t * width + num_heads * head_dim;
    const float* v = k + num_kv_heads * head_dim;
    for (int idx = threadIdx.x; idx < num_kv_heads * head_dim; idx += blockDim.x) {
        const int h = idx / head_dim;
        const int d = idx % head_dim;
        const long long dst = ((blk * num_kv_heads + h) * block_size + off) * head_dim + d;
        k_cache[dst] = sy_store(k[idx]);
        v_cache[dst] = sy_store(v[idx]);
    }
}

// Running softmax state of one warp over the keys it has seen.
struct SyOnline {
    float m;
    float l;
    float acc[SY_LANE_ELEMS];
};

SY_DEVICE void sy_online_init(SyOnline& st) {
    st.m = SY_NEG_INF;
    st.l = 0.0f;
#pragma unroll
    for (int i = 0; i < SY_LANE_ELEMS; ++i) {
        st.acc[i] = 0.0f;
    }
}

// Adds one key (score s) and its value row, read through `load_v(d)`.
template <typename V>
SY_DEVICE void sy_online_push(SyOnline& st, float s, int lane, int head_dim, V load_v) {
    const float m_new = fmaxf(st.m, s);
    const float corr = __expf(st.m - m_new);
    const float p = __expf(s - m_new);
    st.l = st.l * corr + p;
#pragma unroll
    for (int i = 0; i < SY_LANE_ELEMS; ++i) {
        const int d = lane + i * SY_WARP_SIZE;
        const float v = d < head_dim ? load_v(d) : 0.0f;
        st.acc[i] = st.acc[i] * corr + p * v;
    }
    st.m = m_new;
}

// Merges the block's warps' states and writes the normalised head output.
SY_DEVICE void sy_online_finish(const SyOnline& st, int warp, int lane, int warps, int head_dim,
                                float* sm_m, float* sm_l, float* sm_acc, store_t* out) {
    if (lane == 0) {
        sm_m[warp] = st.m;
        sm_l[warp] = st.l;
    }
#pragma unroll
    for (int i = 0; i < SY_LANE_ELEMS; ++i) {
        const int d = lane + i * SY_WARP_SIZE;
        if (d < head_dim) {
            sm_acc[warp * SY_MAX_HEAD_DIM + d] = st.acc[i];
        }
    }
    __syncthreads();
    if (warp != 0) {
        return;
    }
    float m = SY_NEG_INF;
    for (int w = 0; w < warps; ++w) {
        m = fmaxf(m, sm_m[w]);
    }
    float l = 0.0f;
    for (int w = 0; w < warps; ++w) {
        l += sm_l[w] * __expf(sm_m[w] - m);
    }
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (int d = lane; d < head_dim; d += SY_WARP_SIZE) {
        float a = 0.0f;
        for (int w = 0; w < warps; ++w) {
            a += sm_acc[w * SY_MAX_HEAD_DIM + d] * __expf(sm_m[w] - m);
        }
        out[d] = sy_store(a * inv);
    }
}

// Decode attention: one block per (query head, token row in `rows`); the
// token attends to positions 0..=pos of its sequence, read through the
// block table. Warps split the keys; each lane holds SY_LANE_ELEMS of the head.
SY_KERNEL void sy_paged_attention(store_t* out, const float* qkv, const store_t* k_cache,
                                  const store_t* v_cache, const int* rows, const int* tok_seq,
                                  const int* tok_pos, const int* block_tables, int max_blocks,
                                  int num_heads, int num_kv_heads, int head_dim, int block_size,
                                  float scale) {
    __shared__ float sm_m[SY_ATTN_WARPS];
    __shared__ float sm_l[SY_ATTN_WARPS];
    __shared__ float sm_acc[SY_ATTN_WARPS * SY_MAX_HEAD_DIM];
    const int row = rows[blockIdx.y];
    const int h = blockIdx.x;
    const int kvh = h / (num_heads / num_kv_heads);
    const int lane = threadIdx.x % SY_WARP_SIZE;
    const int warp = threadIdx.x / SY_WARP_SIZE;
    const int width = (num_heads + 2 * num_kv_heads) * head_dim;
    const float* q = qkv + (long long)row * width + h * head_dim;
    const int* table = block_tables + (long long)tok_seq[row] * max_blocks;
    const int ctx = tok_pos[row] + 1;

    float qr[SY_LANE_ELEMS];
#pragma unroll
    for (int i = 0; i < SY_LANE_ELEMS; ++i) {
        const int d = lane + i * SY_WARP_SIZE;
        qr[i] = d < head_dim ? q[d] * scale : 0.0f;
    }
    SyOnline st;
    sy_online_init(st);
    for (int j = warp; j < ctx; j += SY_ATTN_WARPS) {
        const long long base =
            (((long long)table[j / block_size] * num_kv_heads + kvh) * block_size + j % block_size) *
            head_dim;
        const store_t* kr = k_cache + base;
        const store_t* vr = v_cache + base;
        float part = 0.0f;
#pragma unroll
        for (int i = 0; i < SY_LANE_ELEMS; ++i) {
            const int d = lane + i * SY_WARP_SIZE;
            if (d < head_dim) {
                part += qr[i] * sy_load(kr[d]);
            }
        }
        const float s = sy_warp_sum(part);
        sy_online_push(st, s, lane, head_dim, [&](int d) { return sy_load(vr[d]); });
    }
    sy_online_finish(st, warp, lane, SY_ATTN_WARPS, head_dim, sm_m, sm_l, sm_acc,
                     out + (long long)row * num_heads * head_dim + h * head_dim);
}

// Prefill attention: one block per (query head, tile of SY_ATTN_WARPS new
// tokens, prefilling sequence); each warp owns one query. The chunk's K/V
// are already in the cache, so cached context and chunk are read the same
// way: tiles of SY_PREFILL_KEYS keys are staged in shared memory once and
// reused by every query of the tile (causal: key j is seen by queries at
// positions >= j).
SY_KERNEL void sy_prefill_attention(store_t* out, const float* qkv, const store_t* k_cache,
                                    const store_t* v_cache, const int* prefill_seqs,
                                    const int* seq_first_row, const int* seq_num_new,
                                    const int* seq_start_pos, const int* block_tables,
                                    int max_blocks, int num_heads, int num_kv_heads, int head_dim,
                                    int block_size, float scale) {
    __shared__ float sk[SY_PREFILL_KEYS * SY_MAX_HEAD_DIM];
    __shared__ float sv[SY_PREFILL_KEYS * SY_MAX_HEAD_DIM];
    const int seq = prefill_seqs[blockIdx.z];
    const int n_new = seq_num_new[seq];
    const int tile0 = blockIdx.y * SY_ATTN_WARPS;
    if (tile0 >= n_new) {
        return;  // uniform across the block
    }
    const int h = blockIdx.x;
    const int kvh = h / (num_heads / num_kv_heads);
    const int lane = threadIdx.x % SY_WARP_SIZE;
    const int warp = threadIdx.x / SY_WARP_SIZE;
    const int width = (num_heads + 2 * num_kv_heads) * head_dim;
    const int pos0 = seq_start_pos[seq];
    const int qi = tile0 + warp;
    const bool valid = qi < n_new;
    const int row = seq_first_row[seq] + (valid ? qi : 0);
    const int qpos = pos0 + qi;
    const int last = n_new < tile0 + SY_ATTN_WARPS ? n_new : tile0 + SY_ATTN_WARPS;
    const int ctx = pos0 + last;  // keys 0..ctx-1 are needed by some query of the tile
    const int* table = block_tables + (long long)seq * max_blocks;
    const float* q = qkv + (long long)row * width + h * head_dim;

    float qr[SY_LANE_ELEMS];
#pragma unroll
    for (int i = 0; i < SY_LANE_ELEMS; ++i) {
        const int d = lane + i * SY_WARP_SIZE;
        qr[i] = (valid && d < head_dim) ? q[d] * scale : 0.0f;
    }
    SyOnline st;
    sy_online_init(st);
    for (int k0 = 0; k0 < ctx; k0 += SY_PREFILL_KEYS) {
        for (int idx = threadIdx.x; idx < SY_PREFILL_KEYS * head_dim; idx += blockDim.x) {
            const int jj = idx / head_dim;
            const int d = idx % head_dim;
            const int j = k0 + jj;
            if (j < ctx) {
                const long long base = (((long long)table[j / block_size] * num_kv_heads + kvh) *
                                            block_size +
                                        j % block_size) *
                                       head_dim;
                sk[jj * SY_MAX_HEAD_DIM + d] = sy_load(k_cache[base + d]);
                sv[jj * SY_MAX_HEAD_DIM + d] = sy_load(v_cache[base + d]);
            }
        }
        __syncthreads();
        if (valid) {
            for (int jj = 0; jj < SY_PREFILL_KEYS && k0 + jj <= qpos; ++jj) {
                const float* kr = sk + jj * SY_MAX_HEAD_DIM;
                const float* vr = sv + jj * SY_MAX_HEAD_DIM;
                float part = 0.0f;
#pragma unroll
                for (int i = 0; i < SY_LANE_ELEMS; ++i) {
                    const int d = lane + i * SY_WARP_SIZE;
                    if (d < head_dim) {
                        part += qr[i] * kr[d];
                    }
                }
                const float s = sy_warp_sum(part);
                sy_online_push(st, s, lane, head_dim, [&](int d) { return vr[d]; });
            }
        }
        __syncthreads();
    }
    // One query per warp: no cross-warp merge, each warp normalises its own state.
    store_t* o = out + (long long)row * num_heads * head_dim + h * head_dim;
    if (valid) {
        const float inv = st.l > 0.0f ? 1.0f / st.l : 0.0f;
#pragma unroll
        for (int i = 0; i < SY_LANE_ELEMS; ++i) {
            const int d = lane + i * SY_WARP_SIZE;
            if (d < head_dim) {
                o[d] = sy_store(st.acc[i] * inv);
            }
        }
    }
}

// out[t, i] = silu(gate_up[t, i]) * gate_up[t, inter + i]
SY_KERNEL void sy_silu_mul(store_t* out, const float* gate_up, int inter) {
    const int t = blockIdx.x;
    const float* g = gate_up + (long long)t * 2 * inter;
    for (int i = threadIdx.x; i < inter; i += blockDim.x) {
        const float a = g[i];
        out[(long long)t * inter + i] = sy_store(a / (1.0f + __expf(-a)) * g[inter + i]);
    }
}

// out[r, :] = x[rows[r], :]
SY_KERNEL void sy_gather_rows(float* out, const float* x, const int* rows, int dim) {
    const float* src = x + (long long)rows[blockIdx.x] * dim;
    float* dst = out + (long long)blockIdx.x * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        dst[i] = src[i];
    }
}

// y[m, n] = x[m, k] . w[n, k]^T (+ y when accumulate != 0). Shared-memory
// tiles; the fallback where no vendor BLAS library is present.
SY_KERNEL void sy_gemm(float* y, const store_t* x, const store_t* w, int m, int n, int k,
                       int accumulate) {
    __shared__ float xs[SY_GEMM_TILE][SY_GEMM_TILE + 1];
    __shared__ float ws[SY_GEMM_TILE][SY_GEMM_TILE + 1];
    const int tx = threadIdx.x;
    const int ty = threadIdx.y;
    const int row = blockIdx.y * SY_GEMM_TILE + ty;
    const int col = blockIdx.x * SY_GEMM_TILE + tx;
    const int wrow = blockIdx.x * SY_GEMM_TILE + ty;
    float acc = 0.0f;
    for (int k0 = 0; k0 < k; k0 += SY_GEMM_TILE) {
        const int kk = k0 + tx;
        xs[ty][tx] = (row < m && kk < k) ? sy_load(x[(long long)row * k + kk]) : 0.0f;
        ws[ty][tx] = (wrow < n && kk < k) ? sy_load(w[(long long)wrow * k + kk]) : 0.0f;
        __syncthreads();
#pragma unroll
        for (int i = 0; i < SY_GEMM_TILE; ++i) {
            acc += xs[ty][i] * ws[tx][i];
        }
        __syncthreads();
    }
    if (row < m && col < n) {
        float* dst = y + (long long)row * n + col;
        *dst = accumulate ? *dst + acc : acc;
    }
}

// out[r] = the first index of the largest logit of row r (greedy sampling).
SY_KERNEL void sy_argmax(int* out, const float* logits, int vocab) {
    __shared__ float best_v[1024];
    __shared__ int best_i[1024];
    const float* row = logits + (long long)blockIdx.x * vocab;
    float bv = SY_NEG_INF;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        const float v = row[i];
        if (v > bv) {  // strided ascending: the first maximum of this thread wins
            bv = v;
            bi = i;
        }
    }
    best_v[threadIdx.x] = bv;
    best_i[threadIdx.x] = bi;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            const float ov = best_v[threadIdx.x + s];
            const int oi = best_i[threadIdx.x + s];
            if (ov > best_v[threadIdx.x] || (ov == best_v[threadIdx.x] && oi < best_i[threadIdx.x])) {
                best_v[threadIdx.x] = ov;
                best_i[threadIdx.x] = oi;
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        out[blockIdx.x] = best_i[0];
    }
}

// Copy-on-write: block pairs[2p] -> pairs[2p + 1] in both caches of a layer.
SY_KERNEL void sy_copy_blocks(store_t* k_cache, store_t* v_cache, const int* pairs,
                              int block_elems) {
    const long long src = (long long)pairs[2 * blockIdx.x] * block_elems;
    const long long dst = (long long)pairs[2 * blockIdx.x + 1] * block_elems;
    for (int i = threadIdx.x; i < block_elems; i += blockDim.x) {
        k_cache[dst + i] = k_cache[src + i];
        v_cache[dst + i] = v_cache[src + i];
    }
}
