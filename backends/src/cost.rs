//! The cost model: predicted step time, KV footprint and KV capacity of a
//! (device, model) pair.
//!
//! # Formulas
//! A step runs a set of sequences; sequence *i* computes `qᵢ` new tokens on
//! top of `cᵢ` tokens already in its cache (a decode is `qᵢ = 1`, a prefill
//! chunk is `qᵢ > 1`). A pass over a set of sequences, with `T = Σ qᵢ`, `S`
//! sequences, active parameters `Pₐ`, `Lₖᵥ` softmax/MLA layers with `H`
//! query heads of width `d` (for MLA, `d` is the absorbed latent width
//! `kv_lora_rank + rope_head_dim`), and `Lₗᵢₙ` linear-attention layers:
//!
//! ```text
//! FLOPs   = 2·Pₐ·T                                   dense matmuls ("2N" rule)
//!         + 4·H·d·Lₖᵥ · Σ (qᵢ·cᵢ + qᵢ(qᵢ+1)/2)        causal QKᵀ and PV over context
//!         + 4·H·d²·Lₗᵢₙ · T                            linear-attention state update + read
//! bytesₘ  = W(T) + 2·state·S                         weights streamed once per pass,
//!                                                    linear-attention state read + written
//! bytesₖᵥ = kv·Σ cᵢ + kv·T                           KV read for context, KV written for new tokens
//! W(T)    = P_shared + P_experts·(1 − (1 − k/E)^T)   MoE: expected fraction of experts touched
//!           (dense: W = P_total·bytes)
//! compute = FLOPs / (peak·compute_eff)
//! memory  = bytesₘ / (bw·bandwidth_eff) + bytesₖᵥ / (bw·kv_bandwidth_eff)
//! pass    = max(compute, memory)
//! ```
//! A step is one pass over all its sequences, or, when the device splits
//! mixed steps (`split_mixed_steps`) and the step has both decodes and
//! prefill chunks, one pass over its decodes plus one over its chunks:
//! ```text
//! time = Σ passes + n·step_overhead + S·per_sequence_overhead + bytesₖᵥ·kv_overhead
//! ```
//! with `n` the passes (1 or 2), and `S` and `bytesₖᵥ` over the whole step.
//! `kv` is [`ModelSpec::kv_bytes_per_token`], `state` is
//! [`ModelSpec::state_bytes_per_sequence`]; `kv_bandwidth_eff` defaults to
//! `bandwidth_eff` ([`Calibration::kv_efficiency`](crate::profile::Calibration::kv_efficiency)),
//! `kv_overhead` (`kv_overhead_us_per_mb`) and `split_mixed_steps` to 0 and
//! false.
//!
//! The max() is a roofline: prefill chunks are compute-bound, decode batches
//! are bandwidth-bound, and the context terms make both grow with context
//! length. KV bytes have their own efficiency because a backend may move a
//! cached byte several times per pass (the ONNX backend's graph
//! concatenates the past into its present state and reads it for QKᵀ and
//! PV), while weights stream once. `kv_overhead` is KV traffic that
//! overlaps with nothing (the ONNX backend gathers every cached token from
//! the pool into the graph's inputs on the host before the pass). A split
//! step pays the weights and the step overhead twice: the ONNX backend pads
//! a batch to its longest sequence, so it runs the decodes and a prefill
//! chunk as separate graph runs. Compute time, memory time and the
//! overheads are all affine in each sequence's context, which the router's
//! closed-form chunk sums rely on.
//!
//! KV capacity in blocks of `B` tokens:
//! ```text
//! blocks = ⌊(mem·memory_util − weights − max_seqs·state − activations) / (B·kv)⌋
//! activations = max_batched_tokens · (8·hidden + 4·vocab)   (fp32 hidden states and logits)
//! ```
//! Tunables live in [`Calibration`](crate::profile::Calibration), fitted per
//! device by `switchyard profile`.

use std::time::Duration;

use crate::hash::mix64;
use crate::profile::{AttentionSpec, DeviceProfile, ModelSpec};

/// The work one sequence contributes to a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqWork {
    /// Tokens computed this step (1 for a decode).
    pub new_tokens: u32,
    /// Tokens already in this sequence's cache before the step.
    pub context: u32,
}

/// Sufficient statistics of a set of sequences (one pass of a step).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PassShape {
    /// Sequences.
    pub seqs: u32,
    /// New tokens across all sequences (T).
    pub tokens: u64,
    /// Cached context tokens read across all sequences (Σ cᵢ).
    pub context_tokens: u64,
    /// Causal attention query-key pairs (Σ qᵢ·cᵢ + qᵢ(qᵢ+1)/2).
    pub attention_pairs: f64,
}

impl PassShape {
    /// `batch` decodes (one new token each) holding `total_context` cached tokens together.
    pub fn decodes(batch: u32, total_context: u64) -> Self {
        Self {
            seqs: batch,
            tokens: u64::from(batch),
            context_tokens: total_context,
            attention_pairs: total_context as f64 + f64::from(batch),
        }
    }

    /// Adds one sequence's work.
    #[inline]
    pub fn push(&mut self, w: SeqWork) {
        // `n = 1` multiplies by one: the same bits as adding it alone.
        self.push_n(w, 1);
    }

    /// Adds `n` sequences of the same work each.
    #[inline]
    pub fn push_n(&mut self, w: SeqWork, n: u32) {
        let (q, k) = (f64::from(w.new_tokens), f64::from(n));
        self.seqs += n;
        self.tokens += u64::from(w.new_tokens) * u64::from(n);
        self.context_tokens += u64::from(w.context) * u64::from(n);
        self.attention_pairs += k * (q * f64::from(w.context) + q * (q + 1.0) / 2.0);
    }

    /// Both sets of sequences together.
    pub fn merged(self, o: Self) -> Self {
        Self {
            seqs: self.seqs + o.seqs,
            tokens: self.tokens + o.tokens,
            context_tokens: self.context_tokens + o.context_tokens,
            attention_pairs: self.attention_pairs + o.attention_pairs,
        }
    }
}

/// Sufficient statistics of a step, accumulated one sequence at a time:
/// its decodes (one new token) and its prefill chunks (more than one) apart,
/// for backends that run them as separate passes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepShape {
    /// Sequences computing one token (decodes, and one-token prefill chunks).
    pub decode: PassShape,
    /// Sequences computing more than one token (prefill chunks).
    pub prefill: PassShape,
}

impl StepShape {
    /// A step of `batch` decodes holding `total_context` cached tokens together.
    pub fn decodes(batch: u32, total_context: u64) -> Self {
        Self {
            decode: PassShape::decodes(batch, total_context),
            prefill: PassShape::default(),
        }
    }

    /// Adds one sequence's work.
    #[inline]
    pub fn push(&mut self, w: SeqWork) {
        self.push_n(w, 1);
    }

    /// Adds `n` sequences of the same work each (`n` calls of [`Self::push`]).
    #[inline]
    pub fn push_n(&mut self, w: SeqWork, n: u32) {
        if w.new_tokens > 1 {
            self.prefill.push_n(w, n);
        } else {
            self.decode.push_n(w, n);
        }
    }

    /// Shape of a set of sequences.
    pub fn of(work: impl IntoIterator<Item = SeqWork>) -> Self {
        let mut s = Self::default();
        for w in work {
            s.push(w);
        }
        s
    }

    /// All sequences of the step as one set.
    pub fn total(&self) -> PassShape {
        self.decode.merged(self.prefill)
    }

    /// Sequences in the step.
    pub fn seqs(&self) -> u32 {
        self.decode.seqs + self.prefill.seqs
    }

    /// Whether the step has both decodes and prefill chunks.
    pub fn is_mixed(&self) -> bool {
        self.decode.seqs > 0 && self.prefill.seqs > 0
    }
}

/// Roofline terms of one forward pass.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PassCost {
    /// Floating-point operations.
    pub flops: f64,
    /// Bytes moved to or from device memory (weights, state and KV cache).
    pub bytes: f64,
    /// The KV-cache part of `bytes`, priced at the KV bandwidth efficiency.
    pub kv_bytes: f64,
    /// Seconds if compute-bound.
    pub compute_s: f64,
    /// Seconds if bandwidth-bound.
    pub memory_s: f64,
}

impl PassCost {
    /// Roofline seconds: `max(compute_s, memory_s)`.
    pub fn seconds(&self) -> f64 {
        self.compute_s.max(self.memory_s)
    }
}

/// A step's predicted cost broken into roofline terms, for explanations and fitting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepCost {
    /// The pass that runs the whole step, or only its prefill chunks when
    /// its decodes run apart (`decode_pass`).
    pub main: PassCost,
    /// The decodes' own pass, when the device runs a mixed step's decodes
    /// and prefill chunks as separate passes
    /// ([`split_mixed_steps`](crate::profile::Calibration::split_mixed_steps)).
    pub decode_pass: Option<PassCost>,
    /// Forward passes the step runs: 0 (empty step), 1, or 2 (split).
    pub passes: u32,
    /// Overhead seconds: fixed per pass, per sequence, and per KV byte
    /// copied outside the passes.
    pub overhead_s: f64,
}

impl StepCost {
    /// Predicted step time in seconds.
    #[inline]
    pub fn seconds(&self) -> f64 {
        self.main.seconds() + self.decode_pass.map_or(0.0, |p| p.seconds()) + self.overhead_s
    }

    /// Predicted step time (saturating: extreme but valid profile figures
    /// can price a step beyond what `Duration` holds).
    #[inline]
    pub fn duration(&self) -> Duration {
        Duration::try_from_secs_f64(self.seconds()).unwrap_or(Duration::MAX)
    }

    /// Floating-point operations of all passes.
    pub fn flops(&self) -> f64 {
        self.main.flops + self.decode_pass.map_or(0.0, |p| p.flops)
    }

    /// Bytes moved by all passes.
    pub fn bytes(&self) -> f64 {
        self.main.bytes + self.decode_pass.map_or(0.0, |p| p.bytes)
    }

    /// KV-cache bytes read or written by all passes.
    pub fn kv_bytes(&self) -> f64 {
        self.main.kv_bytes + self.decode_pass.map_or(0.0, |p| p.kv_bytes)
    }
}

/// Why a model cannot be served on a device.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CapacityError {
    /// Weights plus reserves exceed usable memory.
    #[error("{model} needs {need_gb:.1} GB for weights and reserves but {device} offers {have_gb:.1} GB usable")]
    DoesNotFit {
        /// Model name.
        model: String,
        /// Device profile name.
        device: String,
        /// Bytes needed, GB.
        need_gb: f64,
        /// Usable bytes, GB.
        have_gb: f64,
    },
}

/// Predicts step times and KV footprint for one (device, model) pair.
#[derive(Debug, Clone)]
pub struct CostModel {
    device: DeviceProfile,
    model: ModelSpec,
    // Derived once so predictions are a handful of multiply-adds.
    flops_per_token: f64,
    attn_flops_per_pair: f64,
    kv_bytes_per_token: f64,
    state_bytes: f64,
    shared_weight_bytes: f64,
    expert_weight_bytes: f64,
    expert_miss_prob: f64,
    flops_per_s: f64,
    bytes_per_s: f64,
    kv_bytes_per_s: f64,
    step_overhead_s: f64,
    per_seq_overhead_s: f64,
    split_mixed_steps: bool,
    kv_overhead_s_per_byte: f64,
    /// Hash of every term `step_cost` reads ([`Self::prices_like`]).
    pricing: u64,
}

impl CostModel {
    /// Builds the model for `device` running `model`.
    pub fn new(device: DeviceProfile, model: ModelSpec) -> Self {
        let m = &model;
        let heads = f64::from(m.num_attention_heads);
        let attn_dim = match &m.attention {
            AttentionSpec::Mla {
                kv_lora_rank,
                rope_head_dim,
            } => f64::from(kv_lora_rank + rope_head_dim),
            _ => f64::from(m.head_dim),
        };
        let d = f64::from(m.head_dim);
        let linear_flops = 4.0 * heads * d * d * f64::from(m.linear_layers());
        let flops_per_token = 2.0 * m.active_params_b * 1e9 + linear_flops;
        let attn_flops_per_pair = 4.0 * heads * attn_dim * f64::from(m.kv_layers());
        let wb = m.weight_bytes;
        let total = m.total_params_b * 1e9;
        let active = m.active_params_b * 1e9;
        let (shared_weight_bytes, expert_weight_bytes, expert_miss_prob) = match &m.moe {
            Some(moe) if moe.num_experts > moe.experts_per_token => {
                let e = f64::from(moe.num_experts);
                let k = f64::from(moe.experts_per_token);
                let per_expert = (total - active) / (e - k);
                let experts = per_expert * e;
                ((total - experts) * wb, experts * wb, 1.0 - k / e)
            }
            _ => (total * wb, 0.0, 0.0),
        };
        let cal = &device.calibration;
        let mut cost = Self {
            flops_per_token,
            attn_flops_per_pair,
            kv_bytes_per_token: m.kv_bytes_per_token() as f64,
            state_bytes: m.state_bytes_per_sequence() as f64,
            shared_weight_bytes,
            expert_weight_bytes,
            expert_miss_prob,
            flops_per_s: device.peak_flops() * cal.compute_efficiency,
            bytes_per_s: device.bandwidth_bytes_per_s() * cal.bandwidth_efficiency,
            kv_bytes_per_s: device.bandwidth_bytes_per_s() * cal.kv_efficiency(),
            step_overhead_s: cal.step_overhead_us * 1e-6,
            per_seq_overhead_s: cal.per_sequence_overhead_us * 1e-6,
            split_mixed_steps: cal.split_mixed_steps,
            kv_overhead_s_per_byte: cal.kv_overhead_us_per_mb * 1e-12,
            pricing: 0,
            device,
            model,
        };
        cost.pricing = cost.terms().iter().fold(0, |h, &t| mix64(h ^ t));
        cost
    }

    /// Every term a step's price is computed from, as bits.
    fn terms(&self) -> [u64; 14] {
        [
            self.flops_per_token.to_bits(),
            self.attn_flops_per_pair.to_bits(),
            self.kv_bytes_per_token.to_bits(),
            self.state_bytes.to_bits(),
            self.shared_weight_bytes.to_bits(),
            self.expert_weight_bytes.to_bits(),
            self.expert_miss_prob.to_bits(),
            self.flops_per_s.to_bits(),
            self.bytes_per_s.to_bits(),
            self.kv_bytes_per_s.to_bits(),
            self.step_overhead_s.to_bits(),
            self.per_seq_overhead_s.to_bits(),
            u64::from(self.split_mixed_steps),
            self.kv_overhead_s_per_byte.to_bits(),
        ]
    }

    /// Whether `other` prices every step exactly as this model does (the
    /// same terms, bit for bit), so a price computed with one holds for the
    /// other: a fleet's devices of one profile each own a model, and the
    /// router shares their request-only prices. A hash compare first, then
    /// the terms.
    #[inline]
    pub fn prices_like(&self, other: &CostModel) -> bool {
        std::ptr::eq(self, other)
            || (self.pricing == other.pricing && self.terms() == other.terms())
    }

    /// A hash of every pricing term: equal for models that
    /// [`Self::prices_like`] each other, so it can key a table of shared prices.
    #[inline]
    pub fn pricing_hash(&self) -> u64 {
        self.pricing
    }

    /// The device profile this model prices.
    pub fn device(&self) -> &DeviceProfile {
        &self.device
    }

    /// The model spec this model prices.
    pub fn model(&self) -> &ModelSpec {
        &self.model
    }

    /// Weight bytes streamed by a step that computes `tokens` tokens.
    #[inline]
    pub fn weight_bytes_read(&self, tokens: u64) -> f64 {
        if self.expert_weight_bytes == 0.0 || tokens == 0 {
            return self.shared_weight_bytes
                + if tokens == 0 {
                    0.0
                } else {
                    self.expert_weight_bytes
                };
        }
        let touched = 1.0 - self.expert_miss_prob.powf(tokens as f64);
        self.shared_weight_bytes + self.expert_weight_bytes * touched
    }

    /// Compute seconds per new token of the linear layers (attention
    /// excluded): no step computing `q` new tokens is faster than `q` times this.
    pub fn compute_seconds_per_token(&self) -> f64 {
        self.flops_per_token / self.flops_per_s
    }

    /// Roofline terms of one pass over the sequences of `s`.
    #[inline(always)]
    pub fn pass_cost(&self, s: &PassShape) -> PassCost {
        if s.seqs == 0 {
            return PassCost::default();
        }
        let t = s.tokens as f64;
        let flops = self.flops_per_token * t + self.attn_flops_per_pair * s.attention_pairs;
        let other_bytes =
            self.weight_bytes_read(s.tokens) + 2.0 * self.state_bytes * f64::from(s.seqs);
        let kv_bytes = self.kv_bytes_per_token * (s.context_tokens as f64 + t);
        let bytes = other_bytes + kv_bytes;
        // One division when both efficiencies agree: the same bits as a
        // single memory term.
        let memory_s = if self.kv_bytes_per_s == self.bytes_per_s {
            bytes / self.bytes_per_s
        } else {
            other_bytes / self.bytes_per_s + kv_bytes / self.kv_bytes_per_s
        };
        PassCost {
            flops,
            bytes,
            kv_bytes,
            compute_s: flops / self.flops_per_s,
            memory_s,
        }
    }

    /// Roofline terms of a step of the given shape.
    #[inline]
    pub fn step_cost(&self, s: &StepShape) -> StepCost {
        self.step_cost_inlined(s)
    }

    /// Predicted seconds of a step of the given shape:
    /// `step_cost(s).seconds()`, the same bits, with the terms it does not
    /// need left uncomputed (the hot path of routing and step budgets).
    #[inline]
    pub fn step_seconds(&self, s: &StepShape) -> f64 {
        self.step_cost_inlined(s).seconds()
    }

    /// [`Self::step_cost`]'s body, inlined into both callers so
    /// [`Self::step_seconds`] drops what it does not read.
    #[inline(always)]
    fn step_cost_inlined(&self, s: &StepShape) -> StepCost {
        let seqs = s.seqs();
        let (main, decode_pass) = if self.split_mixed_steps && s.is_mixed() {
            (self.pass_cost(&s.prefill), Some(self.pass_cost(&s.decode)))
        } else {
            (self.pass_cost(&s.total()), None)
        };
        let passes = match (seqs, decode_pass) {
            (0, _) => 0,
            (_, None) => 1,
            (_, Some(_)) => 2,
        };
        let kv_bytes = main.kv_bytes + decode_pass.map_or(0.0, |p| p.kv_bytes);
        StepCost {
            main,
            decode_pass,
            passes,
            overhead_s: self.step_overhead_s * f64::from(passes)
                + self.per_seq_overhead_s * f64::from(seqs)
                + self.kv_overhead_s_per_byte * kv_bytes,
        }
    }

    /// The real-valued largest chunk `q` of prefill tokens at `context`
    /// that keeps a step of `base` plus that chunk within `budget_s`
    /// seconds, solved in closed form: the step's compute time is
    /// quadratic in `q` (the causal attention pairs), its memory time and
    /// overheads affine, and the roofline's max is within the budget when
    /// both sides are, so `q` is the smaller of a quadratic's root and an
    /// affine bound. A guess for an exact integer search, not an answer:
    /// floating-point rounding can put it an ulp either side. `None` for
    /// mixture-of-experts models, whose weight bytes grow non-linearly with
    /// the tokens; negative when not even an empty chunk fits.
    pub fn largest_chunk_within(
        &self,
        base: &StepShape,
        context: u32,
        budget_s: f64,
    ) -> Option<f64> {
        if self.expert_weight_bytes != 0.0 || !budget_s.is_finite() {
            return None;
        }
        // A chunk of more than one token joins the prefill pass; the step is
        // split when the device splits mixed steps and `base` has decodes.
        let split = self.split_mixed_steps && base.decode.seqs > 0;
        let (pass, fixed_s, fixed_kv_bytes, passes) = if split {
            let d = self.pass_cost(&base.decode);
            (base.prefill, d.seconds(), d.kv_bytes, 2.0)
        } else {
            (base.total(), 0.0, 0.0, 1.0)
        };
        let c = f64::from(context);
        let t0 = pass.tokens as f64;
        // Context read and tokens written before the chunk's own tokens.
        let kv_tokens0 = pass.context_tokens as f64 + c + t0;
        let seqs = f64::from(base.seqs()) + 1.0;
        let pass_seqs = f64::from(pass.seqs) + 1.0;
        let other_bytes = self.shared_weight_bytes + 2.0 * self.state_bytes * pass_seqs;
        // Affine in q: overheads and the constant decode pass.
        let oh1 = self.kv_overhead_s_per_byte * self.kv_bytes_per_token;
        let oh0 = fixed_s
            + self.step_overhead_s * passes
            + self.per_seq_overhead_s * seqs
            + self.kv_overhead_s_per_byte * (self.kv_bytes_per_token * kv_tokens0 + fixed_kv_bytes);
        // Compute side: a2·q² + a1·q + a0 (pairs grow by q·c + q(q+1)/2).
        let a2 = self.attn_flops_per_pair / 2.0 / self.flops_per_s;
        let a1 =
            (self.flops_per_token + self.attn_flops_per_pair * (c + 0.5)) / self.flops_per_s + oh1;
        let a0 = (self.flops_per_token * t0 + self.attn_flops_per_pair * pass.attention_pairs)
            / self.flops_per_s
            + oh0;
        // Memory side: b1·q + b0.
        let b1 = self.kv_bytes_per_token / self.kv_bytes_per_s + oh1;
        let b0 = other_bytes / self.bytes_per_s
            + self.kv_bytes_per_token * kv_tokens0 / self.kv_bytes_per_s
            + oh0;
        let room_c = budget_s - a0;
        let q_c = if room_c < 0.0 {
            room_c
        } else if a2 > 0.0 {
            // The positive root, in the form that keeps precision when a2 is tiny.
            2.0 * room_c / (a1 + (a1 * a1 + 4.0 * a2 * room_c).sqrt())
        } else if a1 > 0.0 {
            room_c / a1
        } else {
            f64::INFINITY
        };
        let room_m = budget_s - b0;
        let q_m = if b1 > 0.0 {
            room_m / b1
        } else if room_m >= 0.0 {
            f64::INFINITY
        } else {
            room_m
        };
        let q = q_c.min(q_m);
        (!q.is_nan()).then_some(q)
    }

    /// Predicted time of a step of the given shape.
    #[inline]
    pub fn step_time(&self, s: &StepShape) -> Duration {
        self.step_cost(s).duration()
    }

    /// Predicted time of one prefill chunk of `tokens` tokens after `context` cached tokens.
    pub fn prefill_time(&self, tokens: u32, context: u32) -> Duration {
        self.step_time(&StepShape::of([SeqWork {
            new_tokens: tokens,
            context,
        }]))
    }

    /// Predicted time of one decode step for `batch` sequences holding `total_context` tokens together.
    pub fn decode_step_time(&self, batch: u32, total_context: u64) -> Duration {
        if batch == 0 {
            return Duration::ZERO;
        }
        self.step_time(&StepShape::decodes(batch, total_context))
    }

    /// KV-cache bytes per token.
    pub fn kv_bytes_per_token(&self) -> u64 {
        self.model.kv_bytes_per_token()
    }

    /// Constant per-sequence state bytes (linear attention).
    pub fn state_bytes_per_sequence(&self) -> u64 {
        self.model.state_bytes_per_sequence()
    }

    /// Bytes of one KV block of `block_size` tokens.
    pub fn block_bytes(&self, block_size: u32) -> u64 {
        self.kv_bytes_per_token()
            .saturating_mul(u64::from(block_size))
    }

    /// How many KV blocks of `block_size` tokens fit after weights, state and activations.
    pub fn kv_blocks(
        &self,
        block_size: u32,
        max_num_seqs: u32,
        max_batched_tokens: u32,
    ) -> Result<u32, CapacityError> {
        let usable = self.device.memory_bytes() * self.device.calibration.memory_utilization;
        let m = &self.model;
        let activations = f64::from(max_batched_tokens)
            * (8.0 * f64::from(m.hidden_size) + 4.0 * f64::from(m.vocab_size));
        let reserved =
            m.weight_bytes_total() + f64::from(max_num_seqs) * self.state_bytes + activations;
        let block = self.block_bytes(block_size) as f64;
        let free = usable - reserved;
        if free < block {
            return Err(CapacityError::DoesNotFit {
                model: m.name.clone(),
                device: self.device.name.clone(),
                need_gb: (reserved + block) / 1e9,
                have_gb: usable / 1e9,
            });
        }
        Ok((free / block).floor().min(f64::from(u32::MAX)) as u32)
    }

    /// Price of one second of this device, USD.
    pub fn usd_per_second(&self) -> f64 {
        self.device.price_usd_per_hour / 3600.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::MoeSpec;

    fn device(bw_gbps: f64) -> DeviceProfile {
        crate::fixtures::device(1000.0, bw_gbps, [0.5, 0.5, 100.0, 10.0])
    }

    fn model() -> ModelSpec {
        crate::fixtures::dense_8b(131_072)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1e-12)
    }

    #[test]
    fn prefill_hand_computed() {
        let cm = CostModel::new(device(2000.0), model());
        // 1000 tokens, no context.
        let c = cm.step_cost(&StepShape::of([SeqWork {
            new_tokens: 1000,
            context: 0,
        }]));
        let pairs = 1000.0 * 1001.0 / 2.0;
        let flops = 2.0 * 8e9 * 1000.0 + 4.0 * 32.0 * 128.0 * 32.0 * pairs;
        assert!(close(c.main.flops, flops), "{} vs {flops}", c.main.flops);
        assert!(close(c.main.compute_s, flops / 500e12));
        let bytes = 16e9 + 131_072.0 * 1000.0;
        assert!(close(c.main.bytes, bytes));
        assert!(close(c.main.kv_bytes, 131_072.0 * 1000.0));
        assert!(close(c.main.memory_s, bytes / 1000e9));
        assert!(close(c.overhead_s, 110e-6));
        // 16.7e12 FLOPs / 500e12 = 33.4 ms compute vs 16.1 ms memory: compute-bound.
        assert!(c.main.compute_s > c.main.memory_s);
        assert!(close(c.seconds(), c.main.compute_s + 110e-6));
    }

    #[test]
    fn models_price_alike_exactly_when_their_terms_agree() {
        let a = CostModel::new(device(2000.0), model());
        let b = CostModel::new(device(2000.0), model());
        assert!(a.prices_like(&b) && b.prices_like(&a) && a.prices_like(&a));
        // Another bandwidth, another calibration, another model: not alike.
        assert!(!a.prices_like(&CostModel::new(device(2001.0), model())));
        let mut recal = device(2000.0);
        recal.calibration.step_overhead_us += 1.0;
        assert!(!a.prices_like(&CostModel::new(recal, model())));
        let mut mha = model();
        mha.num_kv_heads = 32;
        assert!(!a.prices_like(&CostModel::new(device(2000.0), mha)));
        // A longer context limit does not change a step's price.
        assert!(a.prices_like(&CostModel::new(
            device(2000.0),
            crate::fixtures::dense_8b(262_144)
        )));
        // The price is not part of the terms: a repriced device prices steps alike.
        let mut repriced = device(2000.0);
        repriced.price_usd_per_hour *= 2.0;
        assert!(a.prices_like(&CostModel::new(repriced, model())));
    }

    #[test]
    fn step_seconds_are_the_step_costs_seconds_to_the_bit() {
        let mut moe = model();
        moe.moe = Some(MoeSpec {
            num_experts: 8,
            experts_per_token: 2,
        });
        let mut split = device(2000.0);
        split.calibration.split_mixed_steps = true;
        split.calibration.kv_overhead_us_per_mb = 250.0;
        let models = [
            CostModel::new(device(2000.0), model()),
            CostModel::new(device(300.0), moe),
            CostModel::new(split, model()),
        ];
        for cm in &models {
            for (decodes, ctx) in [(0u32, 0u64), (1, 100), (64, 64 * 3000)] {
                for (tokens, context) in [(0u32, 0u32), (1, 50), (2, 0), (2048, 6000)] {
                    let mut s = StepShape::decodes(decodes, ctx);
                    if tokens > 0 {
                        s.push(SeqWork {
                            new_tokens: tokens,
                            context,
                        });
                    }
                    let want = cm.step_cost(&s).seconds();
                    assert_eq!(cm.step_seconds(&s).to_bits(), want.to_bits(), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn decode_hand_computed() {
        let cm = CostModel::new(device(2000.0), model());
        let t = cm.decode_step_time(1, 1000).as_secs_f64();
        // bytes = 16e9 weights + 131072 * (1000 ctx + 1 new) ; bandwidth 1e12 B/s effective
        let bytes = 16e9 + 131_072.0 * 1001.0;
        let expect = bytes / 1e12 + 110e-6;
        assert!((t - expect).abs() < 1e-9, "{t} vs {expect}");
    }

    #[test]
    fn decode_grows_with_context_and_batch() {
        let cm = CostModel::new(device(2000.0), model());
        let mut last = Duration::ZERO;
        for ctx in [0u64, 1024, 8192, 65_536] {
            let t = cm.decode_step_time(8, ctx * 8);
            assert!(t > last, "context {ctx}");
            last = t;
        }
        let mut last = Duration::ZERO;
        for batch in [1u32, 2, 8, 64, 256] {
            let t = cm.decode_step_time(batch, u64::from(batch) * 2048);
            assert!(t > last, "batch {batch}");
            last = t;
        }
    }

    #[test]
    fn kv_efficiency_prices_only_kv_bytes() {
        let mut dev = device(2000.0);
        dev.calibration.kv_bandwidth_efficiency = Some(0.125);
        let cm = CostModel::new(dev, model());
        // Decode: weights at 0.5 · 2 TB/s, KV at 0.125 · 2 TB/s.
        let t = cm.decode_step_time(1, 1000).as_secs_f64();
        let expect = 16e9 / 1e12 + 131_072.0 * 1001.0 / 250e9 + 110e-6;
        assert!((t - expect).abs() < 1e-9, "{t} vs {expect}");
        let c = cm.step_cost(&StepShape::of([SeqWork {
            new_tokens: 1,
            context: 1000,
        }]));
        assert!(close(c.main.bytes, 16e9 + 131_072.0 * 1001.0));
        assert!(close(c.main.kv_bytes, 131_072.0 * 1001.0));
    }

    #[test]
    fn lower_kv_efficiency_slows_long_decode_not_short_prefill() {
        let same = CostModel::new(device(2000.0), model());
        let mut dev = device(2000.0);
        dev.calibration.kv_bandwidth_efficiency = Some(0.05);
        let slow_kv = CostModel::new(dev, model());
        // Long-context decode is bandwidth-bound and dominated by KV reads.
        let (a, b) = (
            same.decode_step_time(64, 64 * 32_768),
            slow_kv.decode_step_time(64, 64 * 32_768),
        );
        assert!(b.as_secs_f64() > 2.0 * a.as_secs_f64(), "{a:?} vs {b:?}");
        // A prefill without context is compute-bound either way: its KV
        // writes do not lift memory time above compute time.
        assert_eq!(same.prefill_time(2048, 0), slow_kv.prefill_time(2048, 0));
        // Without KV bytes the efficiency changes nothing; absent equals bandwidth_efficiency.
        let mut dev = device(2000.0);
        dev.calibration.kv_bandwidth_efficiency = Some(0.5);
        let explicit = CostModel::new(dev, model());
        assert_eq!(
            explicit.decode_step_time(8, 8 * 4096),
            same.decode_step_time(8, 8 * 4096)
        );
    }

    #[test]
    fn split_mixed_step_costs_its_two_passes() {
        let mut dev = device(2000.0);
        dev.calibration.split_mixed_steps = true;
        let split = CostModel::new(dev, model());
        let fused = CostModel::new(device(2000.0), model());
        let decodes = (0..16).map(|_| SeqWork {
            new_tokens: 1,
            context: 3000,
        });
        let chunk = SeqWork {
            new_tokens: 512,
            context: 1000,
        };
        let mixed = StepShape::of(decodes.clone().chain([chunk]));
        assert!(mixed.is_mixed());
        assert_eq!(mixed.seqs(), 17);
        let c = split.step_cost(&mixed);
        let d = split.step_cost(&StepShape::of(decodes));
        let p = split.step_cost(&StepShape::of([chunk]));
        // Two passes, each with its weights and its step overhead.
        assert_eq!(c.decode_pass, Some(d.main));
        assert_eq!(c.main, p.main);
        assert_eq!((c.passes, d.passes, p.passes), (2, 1, 1));
        assert!(close(c.seconds(), d.seconds() + p.seconds()));
        assert!(close(c.flops(), d.main.flops + p.main.flops));
        assert!(close(c.bytes(), d.main.bytes + p.main.bytes));
        // Fused, the same step streams the weights once.
        let f = fused.step_cost(&mixed);
        assert_eq!(f.decode_pass, None);
        assert!(close(f.bytes(), c.bytes() - 16e9));
        assert!(f.seconds() < c.seconds());
        // Steps of one kind are priced alike either way.
        for shape in [StepShape::decodes(16, 48_000), StepShape::of([chunk])] {
            assert_eq!(split.step_cost(&shape), fused.step_cost(&shape));
        }
    }

    #[test]
    fn kv_overhead_adds_per_kv_byte_outside_the_roofline() {
        let mut dev = device(2000.0);
        dev.calibration.kv_overhead_us_per_mb = 250.0;
        let cm = CostModel::new(dev, model());
        let plain = CostModel::new(device(2000.0), model());
        let shape = StepShape::decodes(8, 8 * 4096);
        let (c, p) = (cm.step_cost(&shape), plain.step_cost(&shape));
        assert_eq!(c.main, p.main);
        let kv_mb = 131_072.0 * (8.0 * 4096.0 + 8.0) / 1e6;
        assert!(close(c.kv_bytes(), kv_mb * 1e6));
        assert!(close(c.overhead_s - p.overhead_s, kv_mb * 250e-6));
        assert_eq!(c.passes, 1);
        assert_eq!(cm.step_cost(&StepShape::default()).seconds(), 0.0);
    }

    #[test]
    fn more_bandwidth_decodes_faster() {
        let slow = CostModel::new(device(1000.0), model());
        let fast = CostModel::new(device(4000.0), model());
        assert!(fast.decode_step_time(16, 16 * 2048) < slow.decode_step_time(16, 16 * 2048));
    }

    #[test]
    fn prefill_grows_with_context() {
        let cm = CostModel::new(device(2000.0), model());
        assert!(cm.prefill_time(512, 8192) > cm.prefill_time(512, 0));
    }

    #[test]
    fn moe_reads_fewer_weights_at_small_batch() {
        let mut m = model();
        m.total_params_b = 46.7;
        m.active_params_b = 12.9;
        m.moe = Some(MoeSpec {
            num_experts: 8,
            experts_per_token: 2,
        });
        let cm = CostModel::new(device(2000.0), m);
        let one = cm.weight_bytes_read(1);
        let many = cm.weight_bytes_read(1024);
        // One token touches exactly the active parameters.
        assert!((one - 12.9e9 * 2.0).abs() / one < 1e-9, "{one}");
        // A large batch touches (nearly) every expert.
        assert!((many - 46.7e9 * 2.0).abs() / many < 1e-6, "{many}");
    }

    #[test]
    fn kv_blocks_hand_computed() {
        let cm = CostModel::new(device(2000.0), model());
        let blocks = cm.kv_blocks(16, 256, 8192).unwrap();
        let usable: f64 = 80e9 * 0.9;
        let act = 8192.0 * (8.0 * 4096.0 + 4.0 * 128_000.0);
        let expect = ((usable - 16e9 - act) / (16.0 * 131_072.0)).floor() as u32;
        assert_eq!(blocks, expect);
    }

    #[test]
    fn model_too_big_does_not_fit() {
        let mut m = model();
        m.total_params_b = 70.0;
        m.active_params_b = 70.0;
        let err = CostModel::new(device(2000.0), m).kv_blocks(16, 256, 8192);
        assert!(matches!(err, Err(CapacityError::DoesNotFit { .. })));
    }

    #[test]
    fn push_n_is_n_pushes() {
        let cost = CostModel::new(device(3350.0), model());
        for w in [
            SeqWork {
                new_tokens: 16,
                context: 40,
            },
            SeqWork {
                new_tokens: 1,
                context: 300,
            },
        ] {
            let mut one_by_one = StepShape::decodes(8, 4000);
            let mut at_once = one_by_one;
            for _ in 0..5 {
                one_by_one.push(w);
            }
            at_once.push_n(w, 5);
            assert_eq!(one_by_one.seqs(), at_once.seqs());
            assert_eq!(one_by_one.total().tokens, at_once.total().tokens);
            let (a, b) = (cost.step_seconds(&one_by_one), cost.step_seconds(&at_once));
            assert!(close(a, b), "{a} vs {b}");
        }
    }

    #[test]
    fn empty_step_costs_nothing() {
        let cm = CostModel::new(device(2000.0), model());
        assert_eq!(cm.step_time(&StepShape::default()), Duration::ZERO);
    }

    #[test]
    fn extreme_valid_figures_saturate_instead_of_panicking() {
        // 1e-300 TFLOP/s passes validation (positive, finite); a step then
        // takes longer than any Duration.
        let mut d = device(2000.0);
        d.peak_tflops = 1e-300;
        d.memory_bandwidth_gbps = 1e-300;
        let cm = CostModel::new(d, model());
        assert_eq!(cm.prefill_time(1000, 0), Duration::MAX);
        assert_eq!(cm.decode_step_time(8, 8000), Duration::MAX);
    }
}
