//! The ONNX Runtime backend: serves a real decoder on the CPU with
//! continuous batching over the engine's paged KV cache.
//!
//! # Model directory
//! `model.onnx` (Hugging Face / Optimum "decoder with past": `input_ids`,
//! `attention_mask`, optional `position_ids`, `past_key_values.N.key|value`
//! in; `logits`, `present.N.key|value` out), `config.json` (Llama config) and
//! `tokenizer.json` (+ `tokenizer_config.json`). `scripts/make_test_model.py`
//! writes such a directory.
//!
//! # A step
//! 1. the plan's block copies (copy-on-write), before anything can fail;
//! 2. checks: block tables cover every position and stay inside the pool,
//!    token ids are inside the vocabulary;
//! 3. the sequences are split into runs of similar new-token counts
//!    ([`batch`]); for each run: gather every sequence's cached K/V from its
//!    blocks into a padded `past_key_values` batch, run the graph, scatter
//!    the new K/V back into the sequences' blocks, and sample each sampling
//!    sequence's token from the logits of its last new token
//!    ([`crate::sampling`]). Where `present` holds the new rows depends on
//!    the graph's [`runtime::KvLayout`]: after the padded past, or, in the
//!    packed layout of `GroupQueryAttention` graphs, after each sequence's
//!    own past. A decode run that continues the previous one takes that
//!    run's `present` outputs as its past instead of gathering ([`batch`],
//!    "Resident decode batch"); a packed graph's decode runs go further and
//!    update one past/present buffer in place ([`shared`]).
//!
//! `elapsed` is the step's measured wall time.
//!
//! # Invariants
//! - The pool has exactly the engine's blocks and block size; block `b` of a
//!   table is block `b` of the pool ([`kv`]).
//! - A sequence's tokens depend only on its own tokens and positions: padding
//!   is masked and sampling is seeded per (sequence, position), so batching,
//!   chunking and preemption never change what it generates.
//!
//! # Tunables ([`OnnxConfig`])
//! `library`, `block_size`, `kv_blocks` / `kv_cache_bytes`, `intra_threads`,
//! `intra_spinning`, `max_padding_ratio`.

pub mod batch;
pub mod kv;
pub mod runtime;
pub mod shared;
pub mod tokenizer;

use std::borrow::Cow;
use std::path::Path;
use std::time::Instant;

use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;

use crate::contract::{self, Backend, BackendKind, DeviceInfo, ScheduledSeq, StepOutput, StepPlan};
use crate::error::BackendError;
use crate::profile::{ModelSpec, Vendor};
use crate::sampling;

pub use crate::model_config::ModelConfig;
use batch::{Inputs, KeptMembers, Resident, RunShape};
use kv::{Kv, KvPool, KvShape};
pub use runtime::{GraphIo, KvLayout, INSTALL_HINT};
use shared::SharedDecode;
pub use tokenizer::{Tokenizer, TokenizerError};

pub use crate::open::OnnxConfig;

/// A decoder served by ONNX Runtime on the CPU.
pub struct OnnxBackend {
    session: Session,
    io: GraphIo,
    model: ModelConfig,
    name: String,
    tokenizer: Tokenizer,
    pool: KvPool,
    inputs: Inputs,
    /// The last decode run's outputs, reused as the next one's past ([`batch`]).
    resident: Option<Resident>,
    /// The last decode run's in-place K/V buffers (packed layout, [`shared`]).
    shared: Option<SharedDecode>,
    /// Decode runs that continued the resident one (no gather).
    resident_runs: u64,
    info: DeviceInfo,
    max_padding_ratio: f64,
}

impl std::fmt::Debug for OnnxBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxBackend")
            .field("model", &self.name)
            .field("io", &self.io)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl OnnxBackend {
    /// Loads the library, the model and the tokenizer, and allocates the KV pool.
    pub fn new(config: OnnxConfig) -> Result<Self, BackendError> {
        let library = runtime::library_path(config.library.as_deref())?;
        let env = runtime::environment(&library)?;
        let dir = &config.model_dir;
        let model = ModelConfig::load(dir)?;
        let tokenizer =
            Tokenizer::from_dir(dir).map_err(|e| BackendError::InvalidModel(e.to_string()))?;
        let session = runtime::open_session(
            &env,
            &dir.join("model.onnx"),
            config.intra_threads,
            config.intra_spinning,
        )?;
        let io = GraphIo::discover(&session)?;
        check_against_config(&io, &model)?;
        let shape = pool_shape(&config, &model)?;
        let name = model_name(dir);
        let info = DeviceInfo {
            kind: BackendKind::Onnx,
            vendor: Vendor::Cpu,
            name: format!("ONNX Runtime CPU: {}", host::cpu_name()),
            memory_bytes: host::memory_bytes(),
            kv_blocks: shape.num_blocks as u32,
            block_size: config.block_size,
        };
        Ok(Self {
            session,
            io,
            model,
            name,
            tokenizer,
            pool: KvPool::new(shape),
            inputs: Inputs::default(),
            resident: None,
            shared: None,
            resident_runs: 0,
            info,
            max_padding_ratio: config.max_padding_ratio,
        })
    }

    /// The model's `config.json`.
    pub fn model_config(&self) -> &ModelConfig {
        &self.model
    }

    /// The spec the cost model prices this model with (FP32 weights and KV).
    pub fn model_spec(&self) -> ModelSpec {
        self.model.to_model_spec(&self.name, 4)
    }

    /// Decode runs so far that continued the previous one's K/V (its outputs,
    /// or its in-place buffers) instead of gathering.
    pub fn resident_runs(&self) -> u64 {
        self.resident_runs
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The graph layout found in the session's metadata.
    pub fn graph_io(&self) -> &GraphIo {
        &self.io
    }

    /// Runs the graph for the sequences `members` and records their sampled
    /// tokens (and log-probabilities, where asked) in `out`.
    fn run_group(
        &mut self,
        seqs: &[ScheduledSeq<'_>],
        members: &[usize],
        out: &mut StepOutput,
    ) -> Result<(), BackendError> {
        let Self {
            session,
            io,
            pool,
            inputs,
            model,
            resident,
            shared,
            resident_runs,
            ..
        } = self;
        let decode = members.iter().all(|&i| seqs[i].tokens.len() == 1);
        if io.kv_layout == KvLayout::Packed {
            let previous =
                batch::take_continued(shared, decode, seqs, members, SharedDecode::members, |b| {
                    b.continues(seqs, members)
                });
            if decode {
                let mut batch = match previous {
                    Some(b) => {
                        *resident_runs += 1;
                        b
                    }
                    None => SharedDecode::build(session, io, pool, seqs, members)?,
                };
                batch.run(session, seqs, members, pool, model.vocab_size as usize, out)?;
                *shared = Some(batch);
                return Ok(());
            }
        }
        let previous = batch::take_continued(
            resident,
            decode,
            seqs,
            members,
            |r| &r.members,
            |r| r.members.continued_by(seqs, members),
        );
        let shape = match &previous {
            Some(r) => {
                *resident_runs += 1;
                inputs.fill_continuing(seqs, members, r)
            }
            None => inputs.fill(seqs, members, pool),
        };
        let past = match &previous {
            Some(r) => Past::Resident(&r.present),
            None => Past::Gathered(&inputs.past),
        };
        let feed = feed(io, inputs, past, pool.shape(), shape).map_err(step_failed)?;
        let mut outputs = session.run(feed).map_err(step_failed)?;
        drop(previous);
        for (layer, names) in io.present_names.iter().enumerate() {
            for (which, name) in [Kv::Key, Kv::Value].into_iter().zip(names) {
                let value = outputs
                    .get(name)
                    .ok_or_else(|| BackendError::StepFailed(format!("no `{name}` output")))?;
                let (dims, data) = value.try_extract_tensor::<f32>().map_err(step_failed)?;
                let kv = pool.shape();
                expect_dims(
                    name,
                    dims,
                    &[shape.batch, kv.kv_heads, shape.total(), kv.head_dim],
                )?;
                let per_seq = kv.kv_heads * shape.total() * kv.head_dim;
                for (row, &i) in members.iter().enumerate() {
                    let s = &seqs[i];
                    let present = &data[row * per_seq..(row + 1) * per_seq];
                    let (start, n) = (s.start_pos as usize, s.tokens.len());
                    pool.scatter(
                        layer,
                        which,
                        s.block_table,
                        start,
                        n,
                        present,
                        shape.total(),
                        io.kv_layout.first_new_row(start, shape.past),
                    );
                }
            }
        }
        let logits = outputs
            .get(runtime::LOGITS)
            .ok_or_else(|| BackendError::StepFailed("no `logits` output".into()))?;
        let (dims, data) = logits.try_extract_tensor::<f32>().map_err(step_failed)?;
        let vocab = model.vocab_size as usize;
        expect_dims(runtime::LOGITS, dims, &[shape.batch, shape.new, vocab])?;
        sample_rows(seqs, members, data, shape.new, vocab, out)?;
        if decode {
            let mut present = Vec::with_capacity(io.present_names.len());
            for names in &io.present_names {
                let mut take = |name: &String| {
                    outputs
                        .remove(name)
                        .ok_or_else(|| BackendError::StepFailed(format!("no `{name}` output")))
                };
                present.push([take(&names[0])?, take(&names[1])?]);
            }
            *resident = Some(Resident {
                members: KeptMembers::of(seqs, members, |s| s.end_pos()),
                present,
                mask: inputs.attention_mask.clone(),
                total: shape.total(),
            });
        }
        Ok(())
    }
}

impl Backend for OnnxBackend {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn execute(&mut self, plan: &StepPlan<'_>) -> Result<StepOutput, BackendError> {
        let started = Instant::now();
        // Copies first: a retried step is planned without them.
        contract::check_copies(&plan.copies, self.pool.num_blocks())?;
        for c in &plan.copies {
            self.pool.copy_block(c.src, c.dst);
        }
        contract::check_seqs(
            &plan.seqs,
            self.info.block_size,
            self.pool.num_blocks(),
            self.model.vocab_size,
        )?;
        let mut out = StepOutput::for_plan(plan);
        let mut runs = batch::group_by_length(&plan.seqs, self.max_padding_ratio);
        if self.io.kv_layout.multi_token_past_runs_alone() {
            runs = batch::multi_token_past_runs_alone(runs, &plan.seqs);
        }
        for members in runs {
            self.run_group(&plan.seqs, &members, &mut out)?;
        }
        out.elapsed = started.elapsed();
        Ok(out)
    }
}

/// Where a run's `past_key_values` come from.
enum Past<'a> {
    /// Gathered from the pool into the input buffers.
    Gathered(&'a [[Vec<f32>; 2]]),
    /// The previous decode run's `present` outputs.
    Resident(&'a [[ort::value::DynValue; 2]]),
}

/// The named input tensors of one run, borrowing the filled buffers.
fn feed<'a>(
    io: &'a GraphIo,
    inputs: &'a Inputs,
    past: Past<'a>,
    kv: &KvShape,
    shape: RunShape,
) -> ort::Result<Vec<(Cow<'a, str>, SessionInputValue<'a>)>> {
    let (b, s, t) = (shape.batch, shape.new, shape.total());
    let mut feed: Vec<(Cow<'a, str>, SessionInputValue<'a>)> = vec![
        (
            runtime::INPUT_IDS.into(),
            TensorRef::from_array_view(([b, s], &inputs.input_ids[..]))?.into(),
        ),
        (
            runtime::ATTENTION_MASK.into(),
            TensorRef::from_array_view(([b, t], &inputs.attention_mask[..]))?.into(),
        ),
    ];
    if io.has_position_ids {
        feed.push((
            runtime::POSITION_IDS.into(),
            TensorRef::from_array_view(([b, s], &inputs.position_ids[..]))?.into(),
        ));
    }
    let dims = [b, kv.kv_heads, shape.past, kv.head_dim];
    for (layer, names) in io.past_names.iter().enumerate() {
        for (k, name) in names.iter().enumerate() {
            let value: SessionInputValue<'a> = match past {
                Past::Gathered(bufs) => {
                    TensorRef::from_array_view((dims, &bufs[layer][k][..]))?.into()
                }
                Past::Resident(values) => (&values[layer][k]).into(),
            };
            feed.push((name.as_str().into(), value));
        }
    }
    Ok(feed)
}

/// Samples each sampling member's token from the logits of its last new
/// token (`logits [members, new, vocab]`) into `out`.
fn sample_rows(
    seqs: &[ScheduledSeq<'_>],
    members: &[usize],
    logits: &[f32],
    new: usize,
    vocab: usize,
    out: &mut StepOutput,
) -> Result<(), BackendError> {
    for (row, &i) in members.iter().enumerate() {
        let s = &seqs[i];
        if !s.sample {
            continue;
        }
        let at = (row * new + s.tokens.len() - 1) * vocab;
        let row = &logits[at..at + vocab];
        let token = sampling::sample(row, &s.sampling, s.seq, s.end_pos())
            .ok_or_else(|| BackendError::StepFailed(format!("{}: logits are all NaN", s.seq)))?;
        out.tokens[i] = Some(token);
        out.set_logprobs(i, sampling::logprobs_for(row, &s.sampling, token));
    }
    Ok(())
}

fn step_failed(e: impl std::fmt::Display) -> BackendError {
    BackendError::StepFailed(format!("onnxruntime: {e}"))
}

fn expect_dims(name: &str, got: &[i64], want: &[usize]) -> Result<(), BackendError> {
    let same = got.len() == want.len() && got.iter().zip(want).all(|(&g, &w)| g == w as i64);
    if same {
        Ok(())
    } else {
        Err(BackendError::StepFailed(format!(
            "output `{name}` has shape {got:?}, expected {want:?}"
        )))
    }
}

/// Rejects a graph whose layer count or KV dims disagree with `config.json`.
fn check_against_config(io: &GraphIo, model: &ModelConfig) -> Result<(), BackendError> {
    let mismatch = |what: &str, graph: usize, cfg: u32| {
        BackendError::InvalidModel(format!(
            "the graph has {graph} {what} but config.json says {cfg}"
        ))
    };
    if io.layers != model.num_hidden_layers as usize {
        return Err(mismatch("layers", io.layers, model.num_hidden_layers));
    }
    if let Some(h) = io.kv_heads.filter(|&h| h != model.kv_heads() as usize) {
        return Err(mismatch("KV heads", h, model.kv_heads()));
    }
    if let Some(d) = io.head_dim.filter(|&d| d != model.head_dim() as usize) {
        return Err(mismatch("head dims", d, model.head_dim()));
    }
    Ok(())
}

/// The pool's dimensions: the model's KV shape, sized by blocks or bytes.
fn pool_shape(config: &OnnxConfig, model: &ModelConfig) -> Result<KvShape, BackendError> {
    if config.block_size == 0 {
        return Err(BackendError::DoesNotFit(
            "block_size must be positive".into(),
        ));
    }
    let mut shape = KvShape {
        layers: model.num_hidden_layers as usize,
        kv_heads: model.kv_heads() as usize,
        head_dim: model.head_dim() as usize,
        block_size: config.block_size as usize,
        num_blocks: 0,
    };
    let blocks = match config.kv_blocks {
        Some(n) => u64::from(n),
        None => config.kv_cache_bytes / shape.block_bytes().max(1),
    };
    if blocks == 0 {
        return Err(BackendError::DoesNotFit(format!(
            "{} bytes of KV cache hold no block of {} bytes",
            config.kv_cache_bytes,
            shape.block_bytes()
        )));
    }
    shape.num_blocks = blocks.min(u64::from(u32::MAX)) as usize;
    Ok(shape)
}

fn model_name(dir: &Path) -> String {
    dir.file_name()
        .and_then(|n| n.to_str())
        .map(|n| format!("onnx-{n}"))
        .unwrap_or_else(|| "onnx-model".into())
}

/// What the host reports about itself (Linux `/proc`; blanks elsewhere).
mod host {
    /// The CPU's model name.
    pub fn cpu_name() -> String {
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|n| n.trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string())
    }

    /// Installed memory, bytes (0 when unknown).
    pub fn memory_bytes() -> u64 {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map_or(0, |kb| kb * 1024)
    }
}
