// Switchyard kernel prelude: the one place where CUDA and HIP differ.
//
// The kernel sources are written in the common subset of CUDA and HIP and
// compiled at load time by NVRTC (CUDA) or hiprtc (ROCm). The host prepends
// this header and defines:
//   SY_HIP          when compiling with hiprtc;
//   SY_WARP_SIZE    32 (NVIDIA, RDNA) or 64 (CDNA: MI250X, MI300X);
//   SY_STORE_BF16   when weights, KV cache and GEMM inputs are bfloat16
//                   (otherwise they are float32).
// No system headers: NVRTC ships none, and hiprtc 5.2 needs none for this.

#ifndef SY_WARP_SIZE
#define SY_WARP_SIZE 32
#endif

#ifdef SY_HIP
#define SY_SHFL_XOR(v, m) __shfl_xor((v), (m), SY_WARP_SIZE)
#else
#define SY_SHFL_XOR(v, m) __shfl_xor_sync(0xffffffffu, (v), (m), SY_WARP_SIZE)
#endif

#define SY_KERNEL extern "C" __global__
#define SY_DEVICE static __device__ __forceinline__

// Largest head width the attention kernels hold in registers.
#define SY_MAX_HEAD_DIM 256
// Head-dimension elements each lane of a warp holds.
#define SY_LANE_ELEMS (SY_MAX_HEAD_DIM / SY_WARP_SIZE)

#ifdef SY_STORE_BF16
// bfloat16 as raw bits: the top half of a float32, rounded to nearest even.
SY_DEVICE float sy_bf16_to_f32(unsigned short b) {
    return __uint_as_float(((unsigned int)b) << 16);
}

SY_DEVICE unsigned short sy_f32_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return (unsigned short)0x7fc0u;  // NaN stays NaN
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

typedef unsigned short store_t;
SY_DEVICE float sy_load(store_t v) { return sy_bf16_to_f32(v); }
SY_DEVICE store_t sy_store(float f) { return sy_f32_to_bf16(f); }
#else
typedef float store_t;
SY_DEVICE float sy_load(store_t v) { return v; }
SY_DEVICE store_t sy_store(float f) { return f; }
#endif

SY_DEVICE float sy_warp_sum(float v) {
#pragma unroll
    for (int m = SY_WARP_SIZE / 2; m > 0; m >>= 1) {
        v += SY_SHFL_XOR(v, m);
    }
    return v;
}

// Sum over the whole thread block; `scratch` holds one float per warp.
SY_DEVICE float sy_block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % SY_WARP_SIZE;
    const int warp = threadIdx.x / SY_WARP_SIZE;
    const int warps = (blockDim.x + SY_WARP_SIZE - 1) / SY_WARP_SIZE;
    v = sy_warp_sum(v);
    __syncthreads();
    if (lane == 0) {
        scratch[warp] = v;
    }
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < warps; ++w) {
        total += scratch[w];
    }
    return total;
}
