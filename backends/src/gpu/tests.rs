//! CPU-side tests of the GPU stack: the reference kernels against plain
//! formulas, the forward pass on [`HostOps`] against ONNX Runtime, batching
//! and chunking invariance, memory planning, and (feature `cuda`) the NVRTC
//! compile of every kernel and the no-driver path.

use std::path::{Path, PathBuf};

use super::ops::{AttnShape, BufKind, GpuOps, StoreType};
use super::reference::{self, f32_to_bf16, AttnRow, Bf16, Elem, HostOps};
use super::*;
use crate::contract::{BlockCopy, BlockId, SamplingParams, ScheduledSeq, SeqId};
use crate::sampling::SplitMix64;

fn tiny_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny")
}

fn randn(rng: &mut SplitMix64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.next_f64() * 2.0 - 1.0) as f32)
        .collect()
}

#[test]
fn bf16_rounds_to_nearest_even() {
    assert_eq!(f32_to_bf16(1.0), 0x3f80);
    assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80); // tie, even stays
    assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82); // tie, odd rounds up
    assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
    assert_eq!(f32_to_bf16(f32::NAN), 0x7fc0);
    assert_eq!(Bf16(0xc040).load(), -3.0);
}

#[test]
fn gemm_matches_f64_product() {
    let mut rng = SplitMix64::new(1);
    let (m, n, k) = (5, 7, 33);
    let x = randn(&mut rng, m * k);
    let w = randn(&mut rng, n * k);
    let mut y = vec![1.0f32; m * n];
    reference::gemm(&mut y, &x, &w, m, n, k, true);
    for i in 0..m {
        for j in 0..n {
            let want: f64 = 1.0
                + (0..k)
                    .map(|t| f64::from(x[i * k + t]) * f64::from(w[j * k + t]))
                    .sum::<f64>();
            assert!((f64::from(y[i * n + j]) - want).abs() < 1e-5);
        }
    }
}

#[test]
fn rope_is_a_rotation() {
    let shape = AttnShape {
        num_heads: 2,
        num_kv_heads: 1,
        head_dim: 8,
        block_size: 4,
    };
    let mut rng = SplitMix64::new(2);
    let orig = randn(&mut rng, 2 * shape.qkv_width());
    let mut qkv = orig.clone();
    let inv: Vec<f32> = (0..4)
        .map(|i| 1.0 / 10_000f32.powf(i as f32 / 4.0))
        .collect();
    reference::rope(&mut qkv, &[0, 7], &inv, &shape);
    let w = shape.qkv_width();
    assert_eq!(&qkv[..w], &orig[..w], "position 0 is the identity");
    for head in 0..3 {
        let a: f32 = orig[w + head * 8..][..8].iter().map(|v| v * v).sum();
        let b: f32 = qkv[w + head * 8..][..8].iter().map(|v| v * v).sum();
        assert!((a - b).abs() < 1e-5, "norm kept");
    }
    assert_eq!(
        &qkv[w + 24..2 * w],
        &orig[w + 24..2 * w],
        "v heads untouched"
    );
}

/// Paged attention over scattered blocks equals dense softmax attention.
#[test]
fn paged_attention_matches_dense_softmax() {
    let shape = AttnShape {
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 8,
        block_size: 4,
    };
    let ctx = 11;
    let mut rng = SplitMix64::new(3);
    let qkv = randn(&mut rng, ctx * shape.qkv_width());
    let table: Vec<i32> = vec![5, 0, 3];
    let slots: Vec<i32> = (0..ctx)
        .map(|p| table[p / 4] * 4 + (p % 4) as i32)
        .collect();
    let cache_len = 6 * shape.block_elems();
    let (mut k, mut v) = (vec![0f32; cache_len], vec![0f32; cache_len]);
    reference::kv_write(&mut k, &mut v, &qkv, &slots, &shape);
    let mut out = vec![0f32; ctx * shape.q_width()];
    let rows = (0..ctx).map(|p| AttnRow {
        row: p,
        table: &table,
        pos: p,
    });
    reference::attention(&mut out, &qkv, &k, &v, rows, &shape);
    let w = shape.qkv_width();
    for t in 0..ctx {
        for h in 0..4 {
            let kvh = h / 2;
            let q = &qkv[t * w + h * 8..][..8];
            let scores: Vec<f64> = (0..=t)
                .map(|j| {
                    let kr = &qkv[j * w + 32 + kvh * 8..][..8];
                    q.iter().zip(kr).map(|(a, b)| f64::from(a * b)).sum::<f64>() / 8f64.sqrt()
                })
                .collect();
            let m = scores.iter().copied().fold(f64::MIN, f64::max);
            let z: f64 = scores.iter().map(|s| (s - m).exp()).sum();
            for d in 0..8 {
                let want: f64 = (0..=t)
                    .map(|j| (scores[j] - m).exp() / z * f64::from(qkv[j * w + 48 + kvh * 8 + d]))
                    .sum();
                let got = f64::from(out[t * 32 + h * 8 + d]);
                assert!(
                    (got - want).abs() < 1e-5,
                    "t {t} h {h} d {d}: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn copy_blocks_and_argmax() {
    let mut k: Vec<f32> = (0..12).map(|v| v as f32).collect();
    let mut v = k.clone();
    reference::copy_blocks(&mut k, &mut v, &[2, 0], 4);
    assert_eq!(&k[..4], &[8.0, 9.0, 10.0, 11.0]);
    assert_eq!(&v[..4], &[8.0, 9.0, 10.0, 11.0]);
    let mut out = [0i32; 2];
    reference::argmax(&mut out, &[1.0, 3.0, 3.0, f32::NAN, 0.5, -1.0], 3);
    assert_eq!(out, [1, 1], "first maximum wins, NaN never does");
}

/// Plans for one sequence at a time, or several per step, over a block table.
struct Seq {
    id: SeqId,
    tokens: Vec<u32>,
    table: Vec<BlockId>,
    computed: usize,
    generated: Vec<u32>,
}

impl Seq {
    fn new(id: u64, prompt: &[u32], blocks: Vec<BlockId>) -> Self {
        Self {
            id: SeqId(id),
            tokens: prompt.to_vec(),
            table: blocks,
            computed: 0,
            generated: Vec::new(),
        }
    }
}

/// Runs `seqs` to `max_new` tokens each, all of them in every step, with
/// prefill chunks of at most `chunk` tokens.
fn generate(backend: &mut dyn Backend, seqs: &mut [Seq], max_new: usize, chunk: usize) {
    loop {
        let live: Vec<usize> = (0..seqs.len())
            .filter(|&i| seqs[i].generated.len() < max_new)
            .collect();
        if live.is_empty() {
            return;
        }
        let plan = StepPlan {
            seqs: live
                .iter()
                .map(|&i| {
                    let s = &seqs[i];
                    let end = (s.computed + chunk).min(s.tokens.len());
                    ScheduledSeq {
                        seq: s.id,
                        start_pos: s.computed as u32,
                        tokens: &s.tokens[s.computed..end],
                        block_table: &s.table,
                        sample: end == s.tokens.len(),
                        sampling: SamplingParams::default(),
                    }
                })
                .collect(),
            copies: vec![],
        };
        let ends: Vec<usize> = plan.seqs.iter().map(|p| p.end_pos() as usize).collect();
        let out = backend.execute(&plan).expect("step runs");
        for ((&i, tok), end) in live.iter().zip(out.tokens).zip(ends) {
            let s = &mut seqs[i];
            s.computed = end;
            if let Some(t) = tok {
                s.tokens.push(t);
                s.generated.push(t);
            }
        }
    }
}

const PROMPTS: [&[u32]; 4] = [
    &[1, 72, 101, 108, 108, 111],
    &[
        1, 84, 104, 101, 32, 113, 117, 105, 99, 107, 32, 98, 114, 111, 119, 110, 32, 102, 111, 120,
    ],
    &[1, 50],
    &[
        1, 200, 17, 88, 3, 140, 141, 142, 9, 9, 9, 77, 31, 254, 12, 5, 6, 7, 8, 100, 101, 102, 33,
    ],
];

fn host_backend(store: StoreType, blocks: u32) -> GpuBackend<HostOps> {
    GpuBackend::host_reference(&tiny_dir(), store, 4, blocks)
        .expect("tiny model loads on the host reference")
}

/// Each prompt alone, on consecutive blocks from `first_block`.
fn alone(backend: &mut dyn Backend, max_new: usize, chunk: usize) -> Vec<Vec<u32>> {
    PROMPTS
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let blocks = (0..16).map(|b| BlockId(b + 3)).collect();
            let mut s = [Seq::new(i as u64, p, blocks)];
            generate(backend, &mut s, max_new, chunk);
            s[0].generated.clone()
        })
        .collect()
}

#[test]
fn batched_chunked_and_scattered_equal_alone() {
    let mut b = host_backend(StoreType::F32, 64);
    let want = alone(&mut b, 20, 1024);
    // All prompts in the same steps, prefill chunks of 5 (mixed with
    // other sequences' decodes), interleaved scattered block tables.
    let mut seqs: Vec<Seq> = PROMPTS
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let blocks = (0..12).map(|b| BlockId(63 - (b * 4 + i as u32))).collect();
            Seq::new(10 + i as u64, p, blocks)
        })
        .collect();
    generate(&mut b, &mut seqs, 20, 5);
    let got: Vec<Vec<u32>> = seqs.iter().map(|s| s.generated.clone()).collect();
    assert_eq!(got, want);
    assert!(want.iter().all(|t| t.len() == 20));
}

#[cfg(feature = "onnx")]
#[test]
fn host_decoder_equals_onnx_runtime() {
    let mut onnx = crate::onnx::OnnxBackend::new(crate::onnx::OnnxConfig {
        block_size: 4,
        kv_blocks: Some(64),
        ..crate::onnx::OnnxConfig::new(tiny_dir())
    })
    .expect("ONNX Runtime available (scripts/setup.sh exports ORT_DYLIB_PATH)");
    let want = alone(&mut onnx, 24, 1024);
    let mut host = host_backend(StoreType::F32, 64);
    assert_eq!(alone(&mut host, 24, 1024), want);
    // bf16 weights and cache: rounding may change late tokens, the first ones hold.
    let mut bf16 = host_backend(StoreType::Bf16, 64);
    let got = alone(&mut bf16, 4, 1024);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g[..], w[..4]);
    }
}

/// SmolLM2's `model.safetensors` (q/k rows restored to Hugging Face's order by
/// `scripts/convert_smollm2.py`) decodes on the host reference what its ONNX
/// graph decodes. Skips only while setup has not run (it converts the model).
#[cfg(feature = "onnx")]
#[test]
fn host_decoder_on_smollm2_equals_onnx_runtime() {
    let Some(dir) = crate::fixtures::smollm2_dir("model.safetensors") else {
        return;
    };
    // "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    let prompt = [
        1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198, 1, 520, 9531, 198,
    ];
    let run = |b: &mut dyn Backend| {
        let mut s = [Seq::new(0, &prompt, (0..4).map(BlockId).collect())];
        // A few tokens: the unoptimised host reference takes seconds per token.
        generate(b, &mut s, 4, 1024);
        s[0].generated.clone()
    };
    let mut onnx = crate::onnx::OnnxBackend::new(crate::onnx::OnnxConfig {
        block_size: 16,
        kv_blocks: Some(4),
        ..crate::onnx::OnnxConfig::new(dir.clone())
    })
    .expect("ONNX Runtime available (scripts/setup.sh exports ORT_DYLIB_PATH)");
    let want = run(&mut onnx);
    let mut host = GpuBackend::host_reference(&dir, StoreType::F32, 16, 4)
        .expect("SmolLM2 loads on the host reference");
    assert_eq!(run(&mut host), want);
}

/// One decode step of sequence 1 at position 5.
fn decode_plan<'a>(tok: &'a [u32], table: &'a [BlockId]) -> StepPlan<'a> {
    StepPlan {
        seqs: vec![ScheduledSeq {
            seq: SeqId(1),
            start_pos: 5,
            tokens: tok,
            block_table: table,
            sample: true,
            sampling: SamplingParams::default(),
        }],
        copies: vec![],
    }
}

#[test]
fn copy_on_write_and_bad_plans() {
    let mut b = host_backend(StoreType::F32, 8);
    let blocks = [BlockId(0), BlockId(1)];
    let plan = StepPlan {
        seqs: vec![ScheduledSeq {
            seq: SeqId(1),
            start_pos: 0,
            tokens: &[1, 2, 3, 4, 5],
            block_table: &blocks,
            sample: true,
            sampling: SamplingParams::default(),
        }],
        copies: vec![],
    };
    let first = b.execute(&plan).unwrap().tokens[0];
    // Copy both blocks elsewhere and decode from the copy: same next token
    // as decoding from the originals.
    let tok = [first.unwrap()];
    let copied = [BlockId(5), BlockId(6)];
    let mut with_copies = decode_plan(&tok, &copied);
    with_copies.copies = vec![
        BlockCopy {
            src: BlockId(0),
            dst: BlockId(5),
        },
        BlockCopy {
            src: BlockId(1),
            dst: BlockId(6),
        },
    ];
    let a = b.execute(&with_copies).unwrap().tokens[0];
    let c = b.execute(&decode_plan(&tok, &blocks)).unwrap().tokens[0];
    assert!(a.is_some());
    assert_eq!(a, c);
    let far = [BlockId(99)];
    let bad = StepPlan {
        seqs: vec![ScheduledSeq {
            seq: SeqId(2),
            start_pos: 0,
            tokens: &[1],
            block_table: &far,
            sample: true,
            sampling: SamplingParams::default(),
        }],
        copies: vec![],
    };
    assert!(matches!(b.execute(&bad), Err(BackendError::InvalidPlan(_))));
}

#[test]
fn memory_plan_fills_budget_and_refuses_what_does_not_fit() {
    let model = ModelConfig::load(&tiny_dir()).unwrap();
    let cfg = GpuConfig::new(tiny_dir());
    let gib = 1u64 << 30;
    let blocks = plan_kv_blocks(&cfg, &model, StoreType::Bf16, 8 * gib, 8 * gib).unwrap();
    let per = block_bytes(&model, 16, StoreType::Bf16);
    assert!(u64::from(blocks) * per <= (8 * gib) * 9 / 10);
    assert!(u64::from(blocks) * per > (8 * gib) * 8 / 10);
    let err = plan_kv_blocks(&cfg, &model, StoreType::Bf16, 1 << 20, 1 << 20).unwrap_err();
    assert!(matches!(err, BackendError::DoesNotFit(_)), "{err}");
    let fixed = GpuConfig {
        kv_blocks: Some(1 << 30),
        ..cfg
    };
    assert!(plan_kv_blocks(&fixed, &model, StoreType::F32, 8 * gib, 8 * gib).is_err());
}

/// The kernel comparison harness finds no difference between two
/// reference devices and a real one when inputs differ.
#[test]
fn kernel_comparison_harness() {
    for store in [StoreType::F32, StoreType::Bf16] {
        let mut a = HostOps::new(store, 1 << 30);
        let mut b = HostOps::new(store, 1 << 30);
        let same = super::check::compare_kernels(&mut a, &mut b, 7).unwrap();
        assert_eq!(same.len(), 11);
        assert!(
            same.iter().all(|e| e.max_abs == 0.0 && e.elements > 0),
            "{same:?}"
        );
        let x = super::check::kernel_outputs(&mut a, 7).unwrap();
        let y = super::check::kernel_outputs(&mut b, 8).unwrap();
        assert!(x.iter().zip(&y).any(|(p, q)| p.1 != q.1));
    }
}

#[test]
fn host_ops_check_buffer_kinds() {
    let mut ops = HostOps::new(StoreType::Bf16, 1 << 20);
    let mut ids = ops.alloc(BufKind::I32, 4).unwrap();
    assert!(ops.upload_f32(&mut ids, &[1.0]).is_err());
    let mut s = ops.alloc(BufKind::Store, 2).unwrap();
    ops.upload_f32(&mut s, &[1.0, 2.5]).unwrap();
    let mut out = [0f32; 1];
    assert!(
        ops.download_f32(&s, &mut out).is_err(),
        "store buffers are not f32 here"
    );
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::*;

    /// Every kernel compiles with NVRTC 13.0 for sm_80 and sm_90, f32 and bf16.
    #[test]
    fn kernels_compile_to_ptx_with_nvrtc() {
        for cap in [(8, 0), (9, 0)] {
            for store in [StoreType::F32, StoreType::Bf16] {
                let ptx = super::super::cuda::compile_ptx(cap, store)
                    .unwrap_or_else(|e| panic!("sm_{}{} {store}: {e}", cap.0, cap.1));
                assert!(ptx.contains(&format!(".target sm_{}{}", cap.0, cap.1)));
                for k in super::super::kernels::KERNELS {
                    assert!(
                        ptx.contains(&format!(".entry {k}(")),
                        "{k} missing from PTX"
                    );
                }
            }
        }
    }

    /// Without a driver the backend is unavailable, not a panic.
    #[test]
    fn no_driver_is_unavailable() {
        // SAFETY: only probes whether libcuda can be opened.
        if unsafe { cudarc::driver::sys::is_culib_present() } {
            return; // a host with a driver: covered by scripts/gpu-check.sh
        }
        let err = super::super::cuda::open(&GpuConfig::new(tiny_dir())).err();
        assert!(
            matches!(&err, Some(BackendError::Unavailable(m)) if m.contains("libcuda")),
            "{err:?}"
        );
    }
}

#[cfg(feature = "rocm")]
mod rocm {
    use super::super::rocm;
    use super::*;

    /// Every kernel compiles with hiprtc for gfx90a (MI250X), f32 and bf16.
    #[test]
    fn kernels_compile_for_gfx90a_with_hiprtc() {
        for store in [StoreType::F32, StoreType::Bf16] {
            let code = rocm::compile_code_object("gfx90a", store)
                .unwrap_or_else(|e| panic!("gfx90a {store}: {e}"));
            assert!(code.len() > 1024, "code object of {} bytes", code.len());
            assert_eq!(&code[..4], b"\x7fELF", "an ELF code object");
        }
    }

    /// MI300 targets on a pre-5.7 hiprtc are refused, not a process abort.
    #[test]
    fn mi300_on_old_hiprtc_is_an_error() {
        let v = rocm::runtime_version().expect("HIP runtime answers");
        let r = rocm::compile_code_object("gfx942", StoreType::Bf16);
        if v < 50_700_000 {
            assert!(matches!(r, Err(BackendError::Unavailable(m)) if m.contains("5.7")));
        }
        assert!(rocm::check_target("gfx942", 60_000_000).is_ok());
        assert!(rocm::check_target("sm_90", 60_000_000).is_err());
    }

    /// No AMD GPU here: unavailable, and the server can carry on.
    #[test]
    fn no_device_is_unavailable() {
        let err = rocm::open(&GpuConfig::new(tiny_dir())).err();
        assert!(
            matches!(&err, Some(BackendError::Unavailable(m)) if m.contains("no AMD GPU")),
            "{err:?}"
        );
    }
}
