//! The ONNX backend on the committed tiny model (`models/tiny`): loading,
//! graph checks, the tokenizer, and a hand-built mixed step.
//!
//! Needs the ONNX Runtime library through `ORT_DYLIB_PATH` (`source
//! scripts/setup.sh`); without it these tests fail, they do not skip.

use std::path::{Path, PathBuf};

use switchyard_backends::{
    Backend, BackendError, BackendKind, BlockCopy, BlockId, OnnxBackend, OnnxConfig,
    SamplingParams, ScheduledSeq, SeqId, StepPlan, Vendor,
};

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny")
}

fn config(dir: PathBuf) -> OnnxConfig {
    let mut c = OnnxConfig::new(dir);
    c.kv_blocks = Some(64);
    c.intra_threads = 1;
    c
}

fn start(dir: PathBuf) -> Result<OnnxBackend, BackendError> {
    OnnxBackend::new(config(dir))
}

/// A scratch copy of the tiny model directory whose `model.onnx` went through `edit`.
fn edited_copy(name: &str, edit: impl Fn(Vec<u8>) -> Vec<u8>) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(tiny().join(f), dir.join(f)).unwrap();
    }
    let graph = std::fs::read(tiny().join("model.onnx")).unwrap();
    std::fs::write(dir.join("model.onnx"), edit(graph)).unwrap();
    dir
}

/// Renames every occurrence of `from` (same length keeps the protobuf valid).
fn rename(bytes: Vec<u8>, from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let (f, t) = (from.as_bytes(), to.as_bytes());
    let mut out = bytes;
    let mut i = 0;
    let mut hits = 0;
    while i + f.len() <= out.len() {
        if &out[i..i + f.len()] == f {
            out[i..i + f.len()].copy_from_slice(t);
            hits += 1;
            i += f.len();
        } else {
            i += 1;
        }
    }
    assert!(hits > 0, "{from} not found in the graph");
    out
}

#[test]
fn loads_and_reports_a_cpu_onnx_device() {
    let b = start(tiny()).expect("tiny model loads (is ORT_DYLIB_PATH set?)");
    let info = b.info();
    assert_eq!(info.kind, BackendKind::Onnx);
    assert_eq!(info.vendor, Vendor::Cpu);
    assert_eq!(info.kv_blocks, 64);
    assert_eq!(info.block_size, 16);
    let io = b.graph_io();
    assert_eq!(io.layers, 2);
    assert_eq!(io.kv_heads, Some(2));
    assert_eq!(io.head_dim, Some(16));
    assert!(io.has_position_ids);
    let spec = b.model_spec();
    assert_eq!(spec.num_layers, 2);
    assert!((spec.total_params_b - 0.00010752).abs() < 1e-12);
}

#[test]
fn a_graph_missing_an_input_is_rejected_naming_it() {
    let dir = edited_copy("no-mask", |g| rename(g, "attention_mask", "attention_masq"));
    let err = start(dir.clone()).unwrap_err();
    std::fs::remove_dir_all(dir).ok();
    match err {
        BackendError::InvalidModel(msg) => assert!(msg.contains("`attention_mask`"), "{msg}"),
        other => panic!("expected InvalidModel, got {other:?}"),
    }
    let dir = edited_copy("no-past", |g| {
        rename(g, "past_key_values.1.value", "past_key_values.1.vblue")
    });
    let err = start(dir.clone()).unwrap_err().to_string();
    std::fs::remove_dir_all(dir).ok();
    assert!(err.contains("past_key_values.1.value"), "{err}");
}

#[test]
fn tokenizer_round_trips_bytes_and_knows_specials() {
    let b = start(tiny()).unwrap();
    let t = b.tokenizer();
    let text = "Hello, wörld!\n";
    let ids = t.encode(text, true).unwrap();
    let mut want = vec![1u32];
    want.extend(text.bytes().map(|b| 3 + u32::from(b)));
    assert_eq!(ids, want);
    assert_eq!(t.encode(text, false).unwrap(), want[1..]);
    assert_eq!(t.decode(&ids, true).unwrap(), text);
    assert_eq!(t.eos_token_ids(), &[2]);
    assert_eq!(t.bos_token_id(), Some(1));
    assert_eq!(t.vocab_size(), 259);
    assert_eq!((t.bos_token(), t.eos_token()), (Some("<s>"), Some("</s>")));
    assert!(t
        .chat_template()
        .is_some_and(|c| c.contains("add_generation_prompt")));
}

fn seq<'a>(
    id: u64,
    start: u32,
    tokens: &'a [u32],
    table: &'a [BlockId],
    sample: bool,
) -> ScheduledSeq<'a> {
    ScheduledSeq {
        seq: SeqId(id),
        start_pos: start,
        tokens,
        block_table: table,
        sample,
        sampling: SamplingParams::default(),
    }
}

#[test]
fn mixed_step_with_copy_on_write_matches_separate_steps() {
    let prompt: Vec<u32> = b"The quick brown fox jumps"
        .iter()
        .map(|&b| 3 + u32::from(b))
        .collect();
    let (head, tail) = prompt.split_at(20);
    let t_a = [BlockId(0), BlockId(1)];
    let t_b = [BlockId(0), BlockId(5)];
    // Reference: one sequence, prefill all at once.
    let mut solo = start(tiny()).unwrap();
    let one = solo
        .execute(&StepPlan {
            seqs: vec![seq(1, 0, &prompt, &t_a, true)],
            copies: vec![],
        })
        .unwrap();
    // Two steps: a 20-token prefill of block 0..1, then (after copying block 1
    // to 5, as copy-on-write of a shared partial block would) a decode-like
    // continuation of the copy together with a fresh prefill in one step.
    let mut b = start(tiny()).unwrap();
    b.execute(&StepPlan {
        seqs: vec![seq(1, 0, head, &t_a, false)],
        copies: vec![],
    })
    .unwrap();
    let other: Vec<u32> = b"hi".iter().map(|&b| 3 + u32::from(b)).collect();
    let t_c = [BlockId(9)];
    let out = b
        .execute(&StepPlan {
            seqs: vec![seq(2, 20, tail, &t_b, true), seq(3, 0, &other, &t_c, true)],
            copies: vec![BlockCopy {
                src: BlockId(1),
                dst: BlockId(5),
            }],
        })
        .unwrap();
    assert_eq!(out.tokens[0], one.tokens[0]);
    assert!(out.tokens[1].is_some());
    assert!(out.elapsed > std::time::Duration::ZERO);
}

#[test]
fn bad_plans_are_invalid_not_panics() {
    let mut b = start(tiny()).unwrap();
    let toks = [5u32, 6];
    let outside = [BlockId(64)];
    let err = b
        .execute(&StepPlan {
            seqs: vec![seq(1, 0, &toks, &outside, true)],
            copies: vec![],
        })
        .unwrap_err();
    assert!(matches!(err, BackendError::InvalidPlan(_)), "{err}");
    let short: [BlockId; 0] = [];
    let err = b
        .execute(&StepPlan {
            seqs: vec![seq(1, 0, &toks, &short, true)],
            copies: vec![],
        })
        .unwrap_err();
    assert!(matches!(err, BackendError::InvalidPlan(_)), "{err}");
    let big = [400u32];
    let ok = [BlockId(0)];
    let err = b
        .execute(&StepPlan {
            seqs: vec![seq(1, 0, &big, &ok, true)],
            copies: vec![],
        })
        .unwrap_err();
    assert!(err.to_string().contains("vocabulary"), "{err}");
}
