//! The model directory's `config.json` (Hugging Face `LlamaConfig` fields)
//! and the [`ModelSpec`] the cost model prices it with.

use std::path::Path;

use serde::Deserialize;

use crate::error::BackendError;
use crate::profile::{AttentionSpec, ModelSpec};

/// One token id or several, as Hugging Face writes `eos_token_id`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// A single id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

impl TokenIds {
    /// The ids as a list.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// The architecture fields of a Llama-style `config.json` that serving needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelConfig {
    /// Residual stream width.
    pub hidden_size: u32,
    /// MLP inner width.
    pub intermediate_size: u32,
    /// Query heads.
    pub num_attention_heads: u32,
    /// KV heads (defaults to the query heads: plain multi-head attention).
    #[serde(default)]
    pub num_key_value_heads: Option<u32>,
    /// Head width (defaults to `hidden_size / num_attention_heads`).
    #[serde(default)]
    pub head_dim: Option<u32>,
    /// Transformer blocks.
    pub num_hidden_layers: u32,
    /// Vocabulary size.
    pub vocab_size: u32,
    /// Longest context the model was built for.
    pub max_position_embeddings: u32,
    /// RMSNorm epsilon.
    #[serde(default)]
    pub rms_norm_eps: Option<f64>,
    /// RoPE base.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// Whether the LM head shares the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence token.
    #[serde(default)]
    pub bos_token_id: Option<TokenIds>,
    /// End-of-sequence token(s).
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    /// RoPE frequency scaling (Llama 3.x long-context checkpoints).
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
}

/// The `rope_scaling` block of a Hugging Face config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RopeScaling {
    /// `llama3` is applied; `default` (or absent) means none; others are refused.
    #[serde(alias = "type")]
    pub rope_type: String,
    /// How much longer the context became.
    #[serde(default = "one")]
    pub factor: f64,
    /// Wavelengths above `original / low_freq_factor` are divided by `factor`.
    #[serde(default = "one")]
    pub low_freq_factor: f64,
    /// Wavelengths below `original / high_freq_factor` are kept.
    #[serde(default = "four")]
    pub high_freq_factor: f64,
    /// Context the frequencies were trained for.
    #[serde(default = "default_original_context")]
    pub original_max_position_embeddings: f64,
}

fn one() -> f64 {
    1.0
}

fn four() -> f64 {
    4.0
}

fn default_original_context() -> f64 {
    8192.0
}

impl ModelConfig {
    /// Reads and checks `dir/config.json`.
    pub fn load(dir: &Path) -> Result<Self, BackendError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            BackendError::InvalidModel(format!("cannot read {}: {e}", path.display()))
        })?;
        let cfg: ModelConfig = serde_json::from_str(&text)
            .map_err(|e| BackendError::InvalidModel(format!("{}: {e}", path.display())))?;
        cfg.validate()
            .map_err(|m| BackendError::InvalidModel(format!("{}: {m}", path.display())))?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        let nonzero = [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
            ("head_dim", self.head_dim()),
            ("num_hidden_layers", self.num_hidden_layers),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let Some((name, _)) = nonzero.iter().find(|(_, v)| *v == 0) {
            return Err(format!("field `{name}` must be positive"));
        }
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return Err("field `num_key_value_heads` must divide num_attention_heads".into());
        }
        if let Some(r) = &self.rope_scaling {
            if !matches!(r.rope_type.as_str(), "default" | "llama3") {
                return Err(format!(
                    "field `rope_scaling.rope_type` = {:?} is not supported (default, llama3)",
                    r.rope_type
                ));
            }
            if r.factor <= 0.0
                || r.low_freq_factor <= 0.0
                || r.high_freq_factor <= r.low_freq_factor
            {
                return Err("field `rope_scaling` needs factor > 0 and high_freq_factor > low_freq_factor > 0".into());
            }
        }
        Ok(())
    }

    /// RMSNorm epsilon (Llama default 1e-5 when absent).
    pub fn norm_eps(&self) -> f32 {
        self.rms_norm_eps.unwrap_or(1e-5) as f32
    }

    /// Rotary inverse frequencies, one per pair of head dimensions: computed
    /// in f64 and rounded once, as the ONNX export and PyTorch do, with
    /// Llama 3 frequency scaling applied when the config asks for it.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let hd = f64::from(self.head_dim());
        let theta = self.rope_theta.unwrap_or(10_000.0);
        (0..self.head_dim() / 2)
            .map(|i| {
                let f = 1.0 / theta.powf(f64::from(2 * i) / hd);
                match &self.rope_scaling {
                    Some(r) if r.rope_type == "llama3" => llama3_scale(f, r),
                    _ => f,
                }
            })
            .map(|f| f as f32)
            .collect()
    }

    /// KV heads per layer.
    pub fn kv_heads(&self) -> u32 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> u32 {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// End-of-sequence ids (empty when the config names none).
    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(TokenIds::to_vec)
            .unwrap_or_default()
    }

    /// Parameters of a Llama-style decoder of this shape (bias-free, SwiGLU).
    pub fn num_params(&self) -> u64 {
        let h = u64::from(self.hidden_size);
        let q = u64::from(self.num_attention_heads) * u64::from(self.head_dim());
        let kv = u64::from(self.kv_heads()) * u64::from(self.head_dim());
        let attention = h * q + 2 * h * kv + q * h;
        let mlp = 3 * h * u64::from(self.intermediate_size);
        let layer = attention + mlp + 2 * h;
        let embed = u64::from(self.vocab_size) * h;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + u64::from(self.num_hidden_layers) * layer + h + head
    }

    /// The spec the cost model prices this model with; `dtype_bytes` is 4 for FP32 weights and KV.
    pub fn to_model_spec(&self, name: &str, dtype_bytes: u32) -> ModelSpec {
        let params_b = self.num_params() as f64 / 1e9;
        ModelSpec {
            name: name.to_string(),
            description: format!("{name} (from config.json)"),
            num_layers: self.num_hidden_layers,
            hidden_size: self.hidden_size,
            num_attention_heads: self.num_attention_heads,
            num_kv_heads: self.kv_heads(),
            head_dim: self.head_dim(),
            vocab_size: self.vocab_size,
            max_context: self.max_position_embeddings,
            total_params_b: params_b,
            active_params_b: params_b,
            weight_bytes: f64::from(dtype_bytes),
            kv_bytes: dtype_bytes,
            eos_token_ids: self.eos_ids(),
            attention: AttentionSpec::Gqa,
            moe: None,
        }
    }
}

/// Llama 3 frequency scaling: long wavelengths slowed by `factor`, short ones
/// kept, a smooth blend between.
fn llama3_scale(freq: f64, r: &RopeScaling) -> f64 {
    let wavelen = 2.0 * std::f64::consts::PI / freq;
    let low_wavelen = r.original_max_position_embeddings / r.low_freq_factor;
    let high_wavelen = r.original_max_position_embeddings / r.high_freq_factor;
    if wavelen < high_wavelen {
        freq
    } else if wavelen > low_wavelen {
        freq / r.factor
    } else {
        let smooth = (r.original_max_position_embeddings / wavelen - r.low_freq_factor)
            / (r.high_freq_factor - r.low_freq_factor);
        (1.0 - smooth) * freq / r.factor + smooth * freq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &str = r#"{"hidden_size": 64, "intermediate_size": 172, "num_attention_heads": 4,
        "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 259,
        "max_position_embeddings": 512, "tie_word_embeddings": true, "eos_token_id": 2,
        "model_type": "llama"}"#;

    #[test]
    fn tiny_config_matches_profile_parameter_count() {
        let c: ModelConfig = serde_json::from_str(TINY).unwrap();
        assert_eq!(c.head_dim(), 16);
        assert_eq!(c.num_params(), 107_520);
        assert_eq!(c.eos_ids(), vec![2]);
        let spec = c.to_model_spec("tiny", 4);
        assert_eq!(spec.kv_bytes_per_token(), 2 * 2 * 16 * 4 * 2);
    }

    /// `scripts/make_test_model.py --size bench` writes this config; the
    /// committed spec `bench-llama` must price the same model.
    #[test]
    fn bench_config_matches_its_profile() {
        let bench = r#"{"hidden_size": 768, "intermediate_size": 2048, "num_attention_heads": 12,
            "num_key_value_heads": 4, "num_hidden_layers": 16, "head_dim": 64, "vocab_size": 259,
            "max_position_embeddings": 2048, "tie_word_embeddings": true, "eos_token_id": 2,
            "model_type": "llama"}"#;
        let c: ModelConfig = serde_json::from_str(bench).unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
        let profile = crate::profile::Catalog::new(root)
            .model("bench-llama")
            .unwrap();
        let derived = c.to_model_spec("bench-llama", 4);
        assert_eq!(c.num_params(), 100_887_552);
        assert_eq!(
            ModelSpec {
                description: profile.description.clone(),
                ..derived
            },
            profile
        );
    }

    #[test]
    fn eos_list_and_bad_heads() {
        let c: ModelConfig =
            serde_json::from_str(&TINY.replace("\"eos_token_id\": 2", "\"eos_token_id\": [2, 7]"))
                .unwrap();
        assert_eq!(c.eos_ids(), vec![2, 7]);
        let c: ModelConfig = serde_json::from_str(
            &TINY.replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3"),
        )
        .unwrap();
        assert!(c.validate().unwrap_err().contains("num_key_value_heads"));
    }

    #[test]
    fn rope_frequencies_plain_and_llama3() {
        let c: ModelConfig = serde_json::from_str(TINY).unwrap();
        let f = c.rope_inv_freq();
        assert_eq!(f.len(), 8);
        assert_eq!(f[0], 1.0);
        assert!((f[1] - (1.0 / 10_000f64.powf(2.0 / 16.0)) as f32).abs() < 1e-9);
        let scaled = TINY.replace(
            "\"model_type\"",
            r#""rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
               "rope_theta": 500000.0, "model_type""#,
        );
        let c: ModelConfig = serde_json::from_str(&scaled).unwrap();
        c.validate().unwrap();
        let f = c.rope_inv_freq();
        // Highest frequency (short wavelength) untouched, lowest slowed 8x.
        assert_eq!(f[0], 1.0);
        let plain = 1.0 / 500_000f64.powf(14.0 / 16.0);
        assert!((f64::from(f[7]) - plain / 8.0).abs() < 1e-12);
        let bad = scaled.replace("llama3", "yarn");
        let c: ModelConfig = serde_json::from_str(&bad).unwrap();
        assert!(c.validate().unwrap_err().contains("rope_type"));
    }
}
