//! Device profiles and model specs, parsed from `profiles/devices/*.toml` and
//! `profiles/models/*.toml`.
//!
//! Both are typed data validated once at load (`deny_unknown_fields`, range
//! checks), so the cost model never parses strings on a hot path. Every
//! error names the file and the field, because the people who edit these files
//! are ops engineers tuning a fleet, not the authors of this code.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::ProfileError;

/// Hardware vendor of a device, used for reporting and backend selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Vendor {
    /// NVIDIA GPUs (CUDA backend).
    Nvidia,
    /// AMD Instinct GPUs (ROCm backend).
    Amd,
    /// General-purpose CPUs (ONNX Runtime backend).
    Cpu,
}

impl fmt::Display for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Vendor::Nvidia => "nvidia",
            Vendor::Amd => "amd",
            Vendor::Cpu => "cpu",
        })
    }
}

/// Per-device calibration coefficients of the cost model, fitted by `switchyard profile`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Fraction of peak FLOP/s reached by prefill matmuls (model FLOPs utilisation), in (0, 1].
    pub compute_efficiency: f64,
    /// Fraction of peak memory bandwidth reached streaming weights (and
    /// linear-attention state) in decode, in (0, 1].
    pub bandwidth_efficiency: f64,
    /// Fraction of peak memory bandwidth reached reading and writing the KV
    /// cache, in (0, 1]; absent means `bandwidth_efficiency`. Below it when
    /// the backend moves a cached byte more than once per step (gathers,
    /// concatenations, separate QKᵀ and PV passes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_bandwidth_efficiency: Option<f64>,
    /// Fixed cost of one forward pass (launches, host scheduling,
    /// sampling), microseconds; a step is one pass, or two when
    /// `split_mixed_steps` applies.
    pub step_overhead_us: f64,
    /// Extra cost per sequence in a step (metadata, per-sequence kernels), microseconds.
    pub per_sequence_overhead_us: f64,
    /// Time per MB (10^6 bytes) of KV cache a step reads or writes outside
    /// its forward passes (a host-side gather of cached KV into the pass's
    /// inputs, new KV copied back), microseconds; it does not overlap with
    /// the passes. Absent: 0 (the engine's kernels read the cache in place).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub kv_overhead_us_per_mb: f64,
    /// Whether the device runs a step's decodes and its prefill chunks as
    /// separate forward passes, each streaming the weights and paying the
    /// step overhead (the ONNX backend's padded batches do; fused engines
    /// run one pass). Absent: false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub split_mixed_steps: bool,
    /// Fraction of device memory the engine may use for weights + KV cache, in (0, 1].
    pub memory_utilization: f64,
    /// Median relative error of the last fit, if this profile was calibrated on hardware.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit_median_rel_error: Option<f64>,
    /// Maximum relative error of the last fit, if this profile was calibrated on hardware.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit_max_rel_error: Option<f64>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// A device type's published hardware figures, price and calibration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceProfile {
    /// Profile name; equals the file stem (`h100-sxm`).
    pub name: String,
    /// Hardware vendor.
    pub vendor: Vendor,
    /// Human-readable description of the exact SKU.
    pub description: String,
    /// Peak dense BF16/FP16 tensor throughput (no sparsity), TFLOP/s.
    pub peak_tflops: f64,
    /// Device memory capacity, GB (10^9 bytes), as the vendor publishes it.
    pub memory_gb: f64,
    /// Peak memory bandwidth, GB/s (10^9 bytes per second).
    pub memory_bandwidth_gbps: f64,
    /// Hourly price in USD of one device, on-demand reference; ops override it.
    pub price_usd_per_hour: f64,
    /// Cost-model coefficients.
    pub calibration: Calibration,
}

/// How a model's attention layers store context, which decides KV bytes per token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AttentionSpec {
    /// Grouped-query (or multi-head) attention: K and V of `num_kv_heads × head_dim` per layer.
    Gqa,
    /// Multi-head latent attention: a compressed latent plus a decoupled RoPE key per layer.
    Mla {
        /// Width of the compressed KV latent.
        kv_lora_rank: u32,
        /// Width of the decoupled rotary key.
        rope_head_dim: u32,
    },
    /// Hybrid stack: `linear_per_softmax` linear-attention layers for every softmax (GQA) layer.
    HybridLinear {
        /// Linear-attention layers per softmax-attention layer (7 for MiniMax-Text-01).
        linear_per_softmax: u32,
        /// Bytes of recurrent state one linear-attention layer keeps per sequence.
        linear_state_bytes_per_layer: u64,
    },
}

/// Mixture-of-experts routing of a model's MLP layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoeSpec {
    /// Routed experts per MoE layer.
    pub num_experts: u32,
    /// Routed experts each token activates.
    pub experts_per_token: u32,
}

/// A model architecture, with what the cost model needs to price it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Model name; equals the file stem (`llama-3.1-8b`).
    pub name: String,
    /// Human-readable description and provenance.
    pub description: String,
    /// Transformer blocks.
    pub num_layers: u32,
    /// Residual stream width.
    pub hidden_size: u32,
    /// Query heads.
    pub num_attention_heads: u32,
    /// Key/value heads (GQA groups) of the softmax-attention layers.
    pub num_kv_heads: u32,
    /// Width of one attention head.
    pub head_dim: u32,
    /// Vocabulary size (LM head width).
    pub vocab_size: u32,
    /// Longest context the model supports, tokens.
    pub max_context: u32,
    /// Total parameters, billions (all experts).
    pub total_params_b: f64,
    /// Parameters touched per token, billions (equals total for dense models).
    pub active_params_b: f64,
    /// Bytes per weight element (2 for BF16/FP16, 0.5 for 4-bit weights).
    pub weight_bytes: f64,
    /// Bytes per KV-cache element (2 for BF16/FP16, 1 for FP8).
    pub kv_bytes: u32,
    /// End-of-sequence token ids.
    pub eos_token_ids: Vec<u32>,
    /// Attention layout.
    pub attention: AttentionSpec,
    /// Mixture-of-experts layout, absent for dense models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moe: Option<MoeSpec>,
}

fn field_err(path: &Path, field: &str, reason: impl Into<String>) -> ProfileError {
    ProfileError::Invalid {
        path: path.to_path_buf(),
        field: field.to_string(),
        reason: reason.into(),
    }
}

fn positive(path: &Path, field: &str, v: f64) -> Result<(), ProfileError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(field_err(
            path,
            field,
            format!("must be a positive number, got {v}"),
        ))
    }
}

fn non_negative(path: &Path, field: &str, v: f64) -> Result<(), ProfileError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(field_err(
            path,
            field,
            format!("must be zero or positive, got {v}"),
        ))
    }
}

fn fraction(path: &Path, field: &str, v: f64) -> Result<(), ProfileError> {
    if v.is_finite() && v > 0.0 && v <= 1.0 {
        Ok(())
    } else {
        Err(field_err(
            path,
            field,
            format!("must be in (0, 1], got {v}"),
        ))
    }
}

fn nonzero(path: &Path, field: &str, v: u64) -> Result<(), ProfileError> {
    if v > 0 {
        Ok(())
    } else {
        Err(field_err(path, field, "must be at least 1"))
    }
}

fn check_name(path: &Path, name: &str) -> Result<(), ProfileError> {
    let stem = path.file_stem().and_then(|s| s.to_str());
    match stem {
        Some(stem) if stem != name => Err(field_err(
            path,
            "name",
            format!("`{name}` does not match the file name `{stem}`"),
        )),
        _ if name.is_empty() => Err(field_err(path, "name", "must not be empty")),
        _ => Ok(()),
    }
}

/// Where a TOML parse error points: its 1-based line, and serde's message
/// prefixed with that line's text, which names the key (the message alone
/// only says what type was expected). One implementation for every TOML
/// file Switchyard reads: profiles, `switchyard.toml` and fleet files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TomlErrorAt {
    /// 1-based line of the error, when serde gives a span.
    pub line: Option<usize>,
    /// The message, prefixed with the line's text (at most 120 characters) when known.
    pub message: String,
}

impl TomlErrorAt {
    /// Locates `e`, an error parsing `text`.
    pub fn new(text: &str, e: &toml::de::Error) -> Self {
        let line = e.span().map(|span| {
            let start = span.start.min(text.len());
            text.as_bytes()[..start]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1
        });
        let source = line
            .and_then(|l| text.lines().nth(l - 1))
            .map(|s| s.trim().chars().take(120).collect::<String>())
            .filter(|s| !s.is_empty());
        Self {
            line,
            message: match source {
                Some(source) => format!("`{source}`: {}", e.message()),
                None => e.message().to_string(),
            },
        }
    }
}

/// Parses TOML text, turning serde's message into one that names file and field.
fn parse_toml<T: for<'de> Deserialize<'de>>(path: &Path, text: &str) -> Result<T, ProfileError> {
    toml::from_str(text).map_err(|e| {
        let at = TomlErrorAt::new(text, &e);
        ProfileError::Parse {
            path: path.to_path_buf(),
            message: at.message,
            line: at.line,
        }
    })
}

fn read(path: &Path) -> Result<String, ProfileError> {
    std::fs::read_to_string(path).map_err(|source| ProfileError::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl Calibration {
    /// The KV-cache bandwidth efficiency in effect: `kv_bandwidth_efficiency`,
    /// else `bandwidth_efficiency`.
    pub fn kv_efficiency(&self) -> f64 {
        self.kv_bandwidth_efficiency
            .unwrap_or(self.bandwidth_efficiency)
    }

    fn validate(&self, path: &Path) -> Result<(), ProfileError> {
        fraction(
            path,
            "calibration.compute_efficiency",
            self.compute_efficiency,
        )?;
        fraction(
            path,
            "calibration.bandwidth_efficiency",
            self.bandwidth_efficiency,
        )?;
        if let Some(kv) = self.kv_bandwidth_efficiency {
            fraction(path, "calibration.kv_bandwidth_efficiency", kv)?;
        }
        non_negative(path, "calibration.step_overhead_us", self.step_overhead_us)?;
        non_negative(
            path,
            "calibration.per_sequence_overhead_us",
            self.per_sequence_overhead_us,
        )?;
        non_negative(
            path,
            "calibration.kv_overhead_us_per_mb",
            self.kv_overhead_us_per_mb,
        )?;
        fraction(
            path,
            "calibration.memory_utilization",
            self.memory_utilization,
        )
    }
}

impl DeviceProfile {
    /// Parses and validates a device profile; `path` names the source in errors.
    pub fn from_toml(path: &Path, text: &str) -> Result<Self, ProfileError> {
        let profile: DeviceProfile = parse_toml(path, text)?;
        profile.validate(path)?;
        Ok(profile)
    }

    /// Reads, parses and validates a device profile file.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        Self::from_toml(path, &read(path)?)
    }

    /// Checks every field's range; `path` names the source in errors.
    pub fn validate(&self, path: &Path) -> Result<(), ProfileError> {
        check_name(path, &self.name)?;
        positive(path, "peak_tflops", self.peak_tflops)?;
        positive(path, "memory_gb", self.memory_gb)?;
        positive(path, "memory_bandwidth_gbps", self.memory_bandwidth_gbps)?;
        non_negative(path, "price_usd_per_hour", self.price_usd_per_hour)?;
        self.calibration.validate(path)
    }

    /// Serialises the profile back to TOML (used by calibration to write fitted coefficients).
    pub fn to_toml(&self) -> Result<String, ProfileError> {
        toml::to_string_pretty(self).map_err(|e| ProfileError::Serialize(e.to_string()))
    }

    /// Peak FLOP/s.
    pub fn peak_flops(&self) -> f64 {
        self.peak_tflops * 1e12
    }

    /// Memory capacity in bytes.
    pub fn memory_bytes(&self) -> f64 {
        self.memory_gb * 1e9
    }

    /// Memory bandwidth in bytes per second.
    pub fn bandwidth_bytes_per_s(&self) -> f64 {
        self.memory_bandwidth_gbps * 1e9
    }
}

impl ModelSpec {
    /// Parses and validates a model spec; `path` names the source in errors.
    pub fn from_toml(path: &Path, text: &str) -> Result<Self, ProfileError> {
        let spec: ModelSpec = parse_toml(path, text)?;
        spec.validate(path)?;
        Ok(spec)
    }

    /// Reads, parses and validates a model spec file.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        Self::from_toml(path, &read(path)?)
    }

    /// Checks every field's range and cross-field consistency.
    pub fn validate(&self, path: &Path) -> Result<(), ProfileError> {
        check_name(path, &self.name)?;
        nonzero(path, "num_layers", self.num_layers.into())?;
        nonzero(path, "hidden_size", self.hidden_size.into())?;
        nonzero(path, "num_attention_heads", self.num_attention_heads.into())?;
        nonzero(path, "num_kv_heads", self.num_kv_heads.into())?;
        nonzero(path, "head_dim", self.head_dim.into())?;
        nonzero(path, "vocab_size", self.vocab_size.into())?;
        nonzero(path, "max_context", self.max_context.into())?;
        positive(path, "weight_bytes", self.weight_bytes)?;
        nonzero(path, "kv_bytes", self.kv_bytes.into())?;
        positive(path, "total_params_b", self.total_params_b)?;
        positive(path, "active_params_b", self.active_params_b)?;
        if self.active_params_b > self.total_params_b {
            return Err(field_err(
                path,
                "active_params_b",
                "must not exceed total_params_b",
            ));
        }
        if !self.num_attention_heads.is_multiple_of(self.num_kv_heads) {
            return Err(field_err(
                path,
                "num_kv_heads",
                "must divide num_attention_heads",
            ));
        }
        match &self.attention {
            AttentionSpec::Gqa => {}
            AttentionSpec::Mla {
                kv_lora_rank,
                rope_head_dim,
            } => {
                nonzero(path, "attention.kv_lora_rank", (*kv_lora_rank).into())?;
                nonzero(path, "attention.rope_head_dim", (*rope_head_dim).into())?;
            }
            AttentionSpec::HybridLinear {
                linear_per_softmax,
                linear_state_bytes_per_layer,
            } => {
                nonzero(
                    path,
                    "attention.linear_per_softmax",
                    (*linear_per_softmax).into(),
                )?;
                nonzero(
                    path,
                    "attention.linear_state_bytes_per_layer",
                    *linear_state_bytes_per_layer,
                )?;
                let group = linear_per_softmax.checked_add(1).ok_or_else(|| {
                    field_err(path, "attention.linear_per_softmax", "is too large")
                })?;
                if !self.num_layers.is_multiple_of(group) {
                    return Err(field_err(
                        path,
                        "attention.linear_per_softmax",
                        "linear_per_softmax + 1 must divide num_layers",
                    ));
                }
            }
        }
        if let Some(moe) = &self.moe {
            nonzero(path, "moe.num_experts", moe.num_experts.into())?;
            nonzero(path, "moe.experts_per_token", moe.experts_per_token.into())?;
            if moe.experts_per_token > moe.num_experts {
                return Err(field_err(
                    path,
                    "moe.experts_per_token",
                    "must not exceed moe.num_experts",
                ));
            }
        } else if self.active_params_b != self.total_params_b {
            return Err(field_err(
                path,
                "active_params_b",
                "a dense model (no [moe] table) must have active_params_b == total_params_b",
            ));
        }
        // The cost model multiplies these sizes; they must fit their type.
        if self.checked_kv_bytes_per_token().is_none() {
            return Err(field_err(
                path,
                "kv_bytes",
                "KV bytes per token (heads x head_dim x kv_bytes x layers) overflow 64 bits",
            ));
        }
        if self.checked_state_bytes_per_sequence().is_none() {
            return Err(field_err(
                path,
                "attention.linear_state_bytes_per_layer",
                "recurrent state bytes per sequence overflow 64 bits",
            ));
        }
        Ok(())
    }

    /// Layers that keep a per-token KV cache (softmax or MLA attention).
    pub fn kv_layers(&self) -> u32 {
        match &self.attention {
            AttentionSpec::HybridLinear {
                linear_per_softmax, ..
            } => self.num_layers / linear_per_softmax.saturating_add(1),
            _ => self.num_layers,
        }
    }

    /// Layers that keep constant-size recurrent state instead of a KV cache.
    pub fn linear_layers(&self) -> u32 {
        self.num_layers - self.kv_layers()
    }

    /// KV-cache bytes one token occupies across all layers (saturating; a
    /// validated spec never saturates).
    pub fn kv_bytes_per_token(&self) -> u64 {
        self.checked_kv_bytes_per_token().unwrap_or(u64::MAX)
    }

    fn checked_kv_bytes_per_token(&self) -> Option<u64> {
        let per_layer_elems: u64 = match &self.attention {
            AttentionSpec::Mla {
                kv_lora_rank,
                rope_head_dim,
            } => u64::from(*kv_lora_rank) + u64::from(*rope_head_dim),
            _ => (2 * u64::from(self.num_kv_heads)).checked_mul(u64::from(self.head_dim))?,
        };
        per_layer_elems
            .checked_mul(u64::from(self.kv_bytes))?
            .checked_mul(u64::from(self.kv_layers()))
    }

    /// Constant bytes of recurrent state one sequence holds (linear-attention
    /// layers; saturating, a validated spec never saturates).
    pub fn state_bytes_per_sequence(&self) -> u64 {
        self.checked_state_bytes_per_sequence().unwrap_or(u64::MAX)
    }

    fn checked_state_bytes_per_sequence(&self) -> Option<u64> {
        match &self.attention {
            AttentionSpec::HybridLinear {
                linear_state_bytes_per_layer,
                ..
            } => linear_state_bytes_per_layer.checked_mul(u64::from(self.linear_layers())),
            _ => Some(0),
        }
    }

    /// Bytes of all weights resident in device memory.
    pub fn weight_bytes_total(&self) -> f64 {
        self.total_params_b * 1e9 * self.weight_bytes
    }
}

/// A directory of device profiles and model specs (`profiles/`).
#[derive(Debug, Clone)]
pub struct Catalog {
    root: PathBuf,
}

impl Catalog {
    /// A catalog rooted at `root`, holding `devices/` and `models/`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory this catalog reads.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Loads the device profile called `name`.
    pub fn device(&self, name: &str) -> Result<DeviceProfile, ProfileError> {
        let path = self.root.join("devices").join(format!("{name}.toml"));
        if !path.exists() {
            return Err(ProfileError::UnknownDevice {
                name: name.to_string(),
                dir: self.root.join("devices"),
            });
        }
        DeviceProfile::load(&path)
    }

    /// Loads the model spec called `name`.
    pub fn model(&self, name: &str) -> Result<ModelSpec, ProfileError> {
        let path = self.root.join("models").join(format!("{name}.toml"));
        if !path.exists() {
            return Err(ProfileError::UnknownModel {
                name: name.to_string(),
                dir: self.root.join("models"),
            });
        }
        ModelSpec::load(&path)
    }

    /// Names of every profile in `devices/` (sorted).
    pub fn device_names(&self) -> Result<Vec<String>, ProfileError> {
        self.names("devices")
    }

    /// Names of every spec in `models/` (sorted).
    pub fn model_names(&self) -> Result<Vec<String>, ProfileError> {
        self.names("models")
    }

    fn names(&self, sub: &str) -> Result<Vec<String>, ProfileError> {
        let dir = self.root.join(sub);
        let entries = std::fs::read_dir(&dir).map_err(|source| ProfileError::Io {
            path: dir.clone(),
            source,
        })?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(String::from))
            .collect();
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEVICE: &str = r#"
name = "x"
vendor = "nvidia"
description = "test"
peak_tflops = 100.0
memory_gb = 80.0
memory_bandwidth_gbps = 2000.0
price_usd_per_hour = 2.0
[calibration]
compute_efficiency = 0.5
bandwidth_efficiency = 0.8
step_overhead_us = 100.0
per_sequence_overhead_us = 1.0
memory_utilization = 0.9
"#;

    fn p() -> &'static Path {
        Path::new("profiles/devices/x.toml")
    }

    #[test]
    fn parses_valid_device() {
        let d = DeviceProfile::from_toml(p(), DEVICE).unwrap();
        assert_eq!(d.vendor, Vendor::Nvidia);
        assert_eq!(d.peak_flops(), 100e12);
    }

    #[test]
    fn rejects_negative_bandwidth_naming_field() {
        let text = DEVICE.replace("2000.0", "-5.0");
        let err = DeviceProfile::from_toml(p(), &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("memory_bandwidth_gbps"), "{err}");
        assert!(err.contains("x.toml"), "{err}");
    }

    #[test]
    fn rejects_unknown_field() {
        let text = DEVICE.replace("price_usd_per_hour", "colour = 1\nprice_usd_per_hour");
        let err = DeviceProfile::from_toml(p(), &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour"), "{err}");
        assert!(err.contains("x.toml"), "{err}");
    }

    #[test]
    fn rejects_missing_field() {
        let text = DEVICE.replace("memory_gb = 80.0\n", "");
        let err = DeviceProfile::from_toml(p(), &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("memory_gb"), "{err}");
    }

    #[test]
    fn rejects_efficiency_above_one() {
        let text = DEVICE.replace("compute_efficiency = 0.5", "compute_efficiency = 1.5");
        let err = DeviceProfile::from_toml(p(), &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("calibration.compute_efficiency"), "{err}");
    }

    #[test]
    fn kv_bandwidth_efficiency_is_optional_and_checked() {
        let d = DeviceProfile::from_toml(p(), DEVICE).unwrap();
        assert_eq!(d.calibration.kv_bandwidth_efficiency, None);
        assert_eq!(d.calibration.kv_efficiency(), 0.8);
        let text = DEVICE.replace(
            "bandwidth_efficiency = 0.8",
            "bandwidth_efficiency = 0.8\nkv_bandwidth_efficiency = 0.2",
        );
        let d = DeviceProfile::from_toml(p(), &text).unwrap();
        assert_eq!(d.calibration.kv_bandwidth_efficiency, Some(0.2));
        assert_eq!(d.calibration.kv_efficiency(), 0.2);
        // Round-trips through TOML; absent stays absent.
        let back = DeviceProfile::from_toml(p(), &d.to_toml().unwrap()).unwrap();
        assert_eq!(back, d);
        let plain = DeviceProfile::from_toml(p(), DEVICE).unwrap();
        let text = plain.to_toml().unwrap();
        assert!(!text.contains("kv_bandwidth_efficiency"), "{text}");
        for bad in ["0.0", "1.5", "-0.1", "nan"] {
            let text = DEVICE.replace(
                "bandwidth_efficiency = 0.8",
                &format!("bandwidth_efficiency = 0.8\nkv_bandwidth_efficiency = {bad}"),
            );
            let err = DeviceProfile::from_toml(p(), &text)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("calibration.kv_bandwidth_efficiency"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn kv_overhead_and_split_are_optional_and_checked() {
        let d = DeviceProfile::from_toml(p(), DEVICE).unwrap();
        assert_eq!(d.calibration.kv_overhead_us_per_mb, 0.0);
        assert!(!d.calibration.split_mixed_steps);
        let text = d.to_toml().unwrap();
        assert!(!text.contains("kv_overhead_us_per_mb"), "{text}");
        assert!(!text.contains("split_mixed_steps"), "{text}");
        let set = DEVICE.replace(
            "memory_utilization = 0.9",
            "memory_utilization = 0.9\nkv_overhead_us_per_mb = 250.0\nsplit_mixed_steps = true",
        );
        let d = DeviceProfile::from_toml(p(), &set).unwrap();
        assert_eq!(d.calibration.kv_overhead_us_per_mb, 250.0);
        assert!(d.calibration.split_mixed_steps);
        assert_eq!(
            DeviceProfile::from_toml(p(), &d.to_toml().unwrap()).unwrap(),
            d
        );
        let bad = DEVICE.replace(
            "memory_utilization = 0.9",
            "memory_utilization = 0.9\nkv_overhead_us_per_mb = -1.0",
        );
        let err = DeviceProfile::from_toml(p(), &bad).unwrap_err().to_string();
        assert!(err.contains("calibration.kv_overhead_us_per_mb"), "{err}");
    }

    #[test]
    fn rejects_name_mismatch() {
        let err = DeviceProfile::from_toml(Path::new("devices/y.toml"), DEVICE)
            .unwrap_err()
            .to_string();
        assert!(err.contains("name"), "{err}");
    }

    const MODEL: &str = r#"
name = "m"
description = "test"
num_layers = 32
hidden_size = 4096
num_attention_heads = 32
num_kv_heads = 8
head_dim = 128
vocab_size = 128256
max_context = 8192
total_params_b = 8.0
active_params_b = 8.0
weight_bytes = 2
kv_bytes = 2
eos_token_ids = [2]
[attention]
kind = "gqa"
"#;

    fn mp() -> &'static Path {
        Path::new("profiles/models/m.toml")
    }

    #[test]
    fn gqa_kv_bytes_per_token() {
        let m = ModelSpec::from_toml(mp(), MODEL).unwrap();
        // 2 (K,V) * 8 heads * 128 dim * 2 bytes * 32 layers
        assert_eq!(m.kv_bytes_per_token(), 131_072);
        assert_eq!(m.state_bytes_per_sequence(), 0);
    }

    #[test]
    fn mla_kv_bytes_per_token() {
        let text = MODEL.replace(
            "kind = \"gqa\"",
            "kind = \"mla\"\nkv_lora_rank = 512\nrope_head_dim = 64",
        );
        let m = ModelSpec::from_toml(mp(), &text).unwrap();
        assert_eq!(m.kv_bytes_per_token(), (512 + 64) * 2 * 32);
    }

    #[test]
    fn hybrid_linear_counts_only_softmax_layers() {
        let text = MODEL.replace(
            "kind = \"gqa\"",
            "kind = \"hybrid-linear\"\nlinear_per_softmax = 7\nlinear_state_bytes_per_layer = 1000",
        );
        let m = ModelSpec::from_toml(mp(), &text).unwrap();
        assert_eq!(m.kv_layers(), 4);
        assert_eq!(m.kv_bytes_per_token(), 2 * 8 * 128 * 2 * 4);
        assert_eq!(m.state_bytes_per_sequence(), 28 * 1000);
    }

    #[test]
    fn rejects_zero_layers_naming_field() {
        let text = MODEL.replace("num_layers = 32", "num_layers = 0");
        let err = ModelSpec::from_toml(mp(), &text).unwrap_err().to_string();
        assert!(err.contains("num_layers"), "{err}");
        assert!(err.contains("m.toml"), "{err}");
    }

    #[test]
    fn rejects_unknown_attention_kind() {
        let text = MODEL.replace("kind = \"gqa\"", "kind = \"sliding\"");
        let err = ModelSpec::from_toml(mp(), &text).unwrap_err().to_string();
        assert!(err.contains("sliding"), "{err}");
    }

    #[test]
    fn rejects_sizes_that_overflow_instead_of_panicking() {
        for (from, to, field) in [
            ("kind = \"gqa\"", "kind = \"hybrid-linear\"\nlinear_per_softmax = 4294967295\nlinear_state_bytes_per_layer = 1", "attention.linear_per_softmax"),
            ("kind = \"gqa\"", "kind = \"hybrid-linear\"\nlinear_per_softmax = 1\nlinear_state_bytes_per_layer = 9223372036854775807", "attention.linear_state_bytes_per_layer"),
            (
                "num_attention_heads = 32\nnum_kv_heads = 8\nhead_dim = 128",
                "num_attention_heads = 4294967295\nnum_kv_heads = 4294967295\nhead_dim = 4294967295",
                "kv_bytes",
            ),
        ] {
            let text = MODEL.replace(from, to);
            let err = ModelSpec::from_toml(mp(), &text).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
    }

    #[test]
    fn rejects_dense_with_fewer_active_params() {
        let text = MODEL.replace("active_params_b = 8.0", "active_params_b = 4.0");
        let err = ModelSpec::from_toml(mp(), &text).unwrap_err().to_string();
        assert!(err.contains("active_params_b"), "{err}");
    }

    #[test]
    fn committed_profiles_all_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
        let catalog = Catalog::new(root);
        let devices = catalog.device_names().unwrap();
        for name in [
            "h100-sxm", "h200", "a100-80g", "l40s", "l4", "mi300x", "mi250x", "cpu",
        ] {
            assert!(devices.iter().any(|d| d == name), "missing device {name}");
        }
        for name in &devices {
            catalog.device(name).unwrap();
        }
        let models = catalog.model_names().unwrap();
        for name in [
            "llama-3.1-8b",
            "llama-3.1-70b",
            "mixtral-8x7b",
            "deepseek-v2-lite",
            "minimax-text-01",
            "tiny-llama",
        ] {
            assert!(models.iter().any(|m| m == name), "missing model {name}");
        }
        for name in &models {
            catalog.model(name).unwrap();
        }
    }
}
