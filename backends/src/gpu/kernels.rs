//! The shared kernel sources and how each compiler is asked to build them.

use super::ops::StoreType;

/// `backends/kernels/common.h` followed by `backends/kernels/llama.cu`:
/// runtime compilers get one translation unit with no includes.
pub const SOURCE: &str = concat!(
    include_str!("../../kernels/common.h"),
    "\n",
    include_str!("../../kernels/llama.cu")
);

/// Every kernel the decoder launches (all must compile for a device to start).
pub const KERNELS: [&str; 11] = [
    "sy_embed",
    "sy_rms_norm",
    "sy_rope",
    "sy_kv_write",
    "sy_paged_attention",
    "sy_prefill_attention",
    "sy_silu_mul",
    "sy_gather_rows",
    "sy_gemm",
    "sy_argmax",
    "sy_copy_blocks",
];

/// Warps per attention block (`SY_ATTN_WARPS`).
pub const ATTN_WARPS: u32 = 4;
/// Tile width of `sy_gemm` (`SY_GEMM_TILE`).
pub const GEMM_TILE: u32 = 16;
/// Threads of the row-wise kernels.
pub const ROW_THREADS: u32 = 256;
/// Threads of `sy_argmax` (its shared arrays hold 1024).
pub const ARGMAX_THREADS: u32 = 1024;

/// Which runtime compiler, and for what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// NVRTC for a compute capability, e.g. `(9, 0)`.
    Cuda {
        /// Major, minor.
        capability: (u32, u32),
    },
    /// hiprtc for an AMD architecture name, e.g. `gfx90a`.
    Hip {
        /// `gcnArchName` without feature suffixes.
        arch: String,
    },
}

impl Target {
    /// Threads per warp (wavefront) on this target.
    pub fn warp_size(&self) -> u32 {
        match self {
            Target::Cuda { .. } => 32,
            // CDNA (gfx9xx) runs 64-wide wavefronts; RDNA defaults to 32.
            Target::Hip { arch } if arch.starts_with("gfx9") => 64,
            Target::Hip { .. } => 32,
        }
    }

    /// Compiler options for this target and store type.
    pub fn options(&self, store: StoreType) -> Vec<String> {
        let mut o = match self {
            Target::Cuda {
                capability: (ma, mi),
            } => {
                vec![
                    format!("--gpu-architecture=compute_{ma}{mi}"),
                    "-std=c++17".into(),
                ]
            }
            Target::Hip { arch } => vec![
                format!("--gpu-architecture={arch}"),
                "-DSY_HIP".into(),
                "-O3".into(),
            ],
        };
        o.push(format!("-DSY_WARP_SIZE={}", self.warp_size()));
        if store == StoreType::Bf16 {
            o.push("-DSY_STORE_BF16".into());
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_kernel_is_defined_once() {
        for k in KERNELS {
            let def = format!("SY_KERNEL void {k}(");
            assert_eq!(SOURCE.matches(&def).count(), 1, "{k}");
        }
    }

    #[test]
    fn options_follow_target() {
        let cuda = Target::Cuda { capability: (9, 0) }.options(StoreType::Bf16);
        assert!(cuda.contains(&"--gpu-architecture=compute_90".to_string()));
        assert!(cuda.contains(&"-DSY_STORE_BF16".to_string()));
        let hip = Target::Hip {
            arch: "gfx90a".into(),
        };
        assert_eq!(hip.warp_size(), 64);
        assert!(hip
            .options(StoreType::F32)
            .contains(&"-DSY_WARP_SIZE=64".to_string()));
        assert_eq!(
            Target::Hip {
                arch: "gfx1030".into()
            }
            .warp_size(),
            32
        );
    }
}
