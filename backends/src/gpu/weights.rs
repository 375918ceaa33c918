//! Hugging Face Llama weights from `model.safetensors` (or shards listed in
//! `model.safetensors.index.json`), as host f32 tensors ready to upload.
//!
//! The decoder fuses q/k/v into one `[q + 2·kv, hidden]` matrix and
//! gate/up into one `[2·inter, hidden]` matrix, so a layer runs three GEMMs
//! fewer; [`LayerWeights`] holds them fused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::BackendError;
use crate::model_config::ModelConfig;

/// One tensor of a safetensors file, widened to f32.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

fn invalid(path: &Path, msg: impl std::fmt::Display) -> BackendError {
    BackendError::InvalidModel(format!("{}: {msg}", path.display()))
}

/// Reads every tensor of one safetensors file (F32, BF16 or F16).
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, HostTensor>, BackendError> {
    let bytes = std::fs::read(path).map_err(|e| invalid(path, e))?;
    let header_len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize)
        .ok_or_else(|| invalid(path, "shorter than its 8-byte header length"))?;
    let header = bytes
        .get(8..8 + header_len)
        .ok_or_else(|| invalid(path, "header runs past the end of the file"))?;
    let entries: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| invalid(path, format!("header: {e}")))?;
    let data = &bytes[8 + header_len..];
    let mut out = BTreeMap::new();
    for (name, value) in entries {
        if name == "__metadata__" {
            continue;
        }
        let e: Entry = serde_json::from_value(value)
            .map_err(|err| invalid(path, format!("tensor `{name}`: {err}")))?;
        let [start, end] = e.data_offsets;
        let raw = data
            .get(start..end)
            .filter(|_| start <= end)
            .ok_or_else(|| invalid(path, format!("tensor `{name}`: data outside the file")))?;
        let numel: usize = e.shape.iter().product();
        let (width, widen): (usize, fn(&[u8]) -> f32) = match e.dtype.as_str() {
            "F32" => (4, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            "BF16" => (2, |b| {
                f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)
            }),
            "F16" => (2, |b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))),
            other => {
                return Err(invalid(
                    path,
                    format!("tensor `{name}`: dtype {other} (need F32, BF16 or F16)"),
                ))
            }
        };
        if raw.len() != numel * width {
            return Err(invalid(
                path,
                format!(
                    "tensor `{name}`: {} bytes for shape {:?}",
                    raw.len(),
                    e.shape
                ),
            ));
        }
        let data = raw.chunks_exact(width).map(widen).collect();
        out.insert(
            name,
            HostTensor {
                shape: e.shape,
                data,
            },
        );
    }
    Ok(out)
}

/// IEEE half → f32.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let frac = u32::from(h & 0x3ff);
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: renormalise.
            let shift = f.leading_zeros() - 21;
            sign | ((113 - shift) << 23) | (((f << shift) & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 112) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// Files holding the model's tensors: the shards of the index, or `model.safetensors`.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, BackendError> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        #[derive(Deserialize)]
        struct Index {
            weight_map: BTreeMap<String, String>,
        }
        let text = std::fs::read_to_string(&index).map_err(|e| invalid(&index, e))?;
        let idx: Index = serde_json::from_str(&text).map_err(|e| invalid(&index, e))?;
        let mut files: Vec<PathBuf> = idx.weight_map.values().map(|f| dir.join(f)).collect();
        files.sort();
        files.dedup();
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        Ok(vec![single])
    } else {
        Err(BackendError::InvalidModel(format!(
            "{}: no model.safetensors or model.safetensors.index.json",
            dir.display()
        )))
    }
}

/// One decoder layer's weights, fused for the GEMMs.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    /// `input_layernorm` [hidden].
    pub input_norm: Vec<f32>,
    /// q, k, v projections stacked: [(H + 2·KVH)·D, hidden].
    pub qkv: Vec<f32>,
    /// `o_proj` [hidden, H·D].
    pub o: Vec<f32>,
    /// `post_attention_layernorm` [hidden].
    pub post_norm: Vec<f32>,
    /// gate and up projections stacked: [2·inter, hidden].
    pub gate_up: Vec<f32>,
    /// `down_proj` [hidden, inter].
    pub down: Vec<f32>,
}

/// The whole model's weights on the host.
#[derive(Debug, Clone)]
pub struct ModelWeights {
    /// `embed_tokens` [vocab, hidden].
    pub embed: Vec<f32>,
    /// `lm_head` [vocab, hidden]; `None` when tied to `embed`.
    pub lm_head: Option<Vec<f32>>,
    /// Final `norm` [hidden].
    pub norm: Vec<f32>,
    /// Decoder layers.
    pub layers: Vec<LayerWeights>,
}

impl ModelWeights {
    /// Loads and checks every tensor the config implies, from `dir`.
    pub fn load(dir: &Path, cfg: &ModelConfig) -> Result<Self, BackendError> {
        let mut tensors = BTreeMap::new();
        for file in weight_files(dir)? {
            tensors.append(&mut read_safetensors(&file)?);
        }
        Self::from_tensors(tensors, cfg)
            .map_err(|m| BackendError::InvalidModel(format!("{}: {m}", dir.display())))
    }

    /// Picks, checks and fuses the Llama tensors of `cfg` out of `tensors`.
    pub fn from_tensors(
        mut tensors: BTreeMap<String, HostTensor>,
        cfg: &ModelConfig,
    ) -> Result<Self, String> {
        let h = cfg.hidden_size as usize;
        let inter = cfg.intermediate_size as usize;
        let (nh, kvh, hd) = (
            cfg.num_attention_heads as usize,
            cfg.kv_heads() as usize,
            cfg.head_dim() as usize,
        );
        let vocab = cfg.vocab_size as usize;
        let has_head = tensors.contains_key("lm_head.weight");
        let mut take = |name: &str, shape: &[usize]| -> Result<Vec<f32>, String> {
            let t = tensors
                .remove(name)
                .ok_or_else(|| format!("missing tensor `{name}`"))?;
            if t.shape != shape {
                return Err(format!(
                    "tensor `{name}` has shape {:?}, config.json implies {shape:?}",
                    t.shape
                ));
            }
            Ok(t.data)
        };
        let embed = take("model.embed_tokens.weight", &[vocab, h])?;
        let norm = take("model.norm.weight", &[h])?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers as usize);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}.");
            let mut qkv = take(&format!("{p}self_attn.q_proj.weight"), &[nh * hd, h])?;
            qkv.extend(take(
                &format!("{p}self_attn.k_proj.weight"),
                &[kvh * hd, h],
            )?);
            qkv.extend(take(
                &format!("{p}self_attn.v_proj.weight"),
                &[kvh * hd, h],
            )?);
            let mut gate_up = take(&format!("{p}mlp.gate_proj.weight"), &[inter, h])?;
            gate_up.extend(take(&format!("{p}mlp.up_proj.weight"), &[inter, h])?);
            layers.push(LayerWeights {
                input_norm: take(&format!("{p}input_layernorm.weight"), &[h])?,
                qkv,
                o: take(&format!("{p}self_attn.o_proj.weight"), &[h, nh * hd])?,
                post_norm: take(&format!("{p}post_attention_layernorm.weight"), &[h])?,
                gate_up,
                down: take(&format!("{p}mlp.down_proj.weight"), &[h, inter])?,
            });
        }
        let lm_head = if has_head {
            Some(take("lm_head.weight", &[vocab, h])?)
        } else if cfg.tie_word_embeddings {
            None
        } else {
            return Err("missing tensor `lm_head.weight` (tie_word_embeddings is false)".into());
        };
        if let Some(extra) = tensors.keys().find(|k| k.contains("bias")) {
            return Err(format!(
                "tensor `{extra}`: biased projections are not supported (Llama layout is bias-free)"
            ));
        }
        Ok(Self {
            embed,
            lm_head,
            norm,
            layers,
        })
    }
}

/// Bytes the weights of `cfg` take on a device storing `elem_bytes` per value.
pub fn weight_bytes(cfg: &ModelConfig, elem_bytes: usize) -> u64 {
    cfg.num_params() * elem_bytes as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_widening() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
    }

    #[test]
    fn tiny_model_loads_and_fuses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny");
        let cfg = ModelConfig::load(&dir).unwrap();
        let w = ModelWeights::load(&dir, &cfg).unwrap();
        assert_eq!(w.layers.len(), 2);
        assert_eq!(w.layers[0].qkv.len(), (4 + 2 * 2) * 16 * 64);
        assert_eq!(w.layers[0].gate_up.len(), 2 * 172 * 64);
        assert!(w.lm_head.is_none());
        let total = w.embed.len()
            + w.norm.len()
            + w.layers
                .iter()
                .map(|l| {
                    l.input_norm.len()
                        + l.qkv.len()
                        + l.o.len()
                        + l.post_norm.len()
                        + l.gate_up.len()
                        + l.down.len()
                })
                .sum::<usize>();
        assert_eq!(total as u64, cfg.num_params());
    }

    #[test]
    fn missing_or_misshapen_tensors_are_named() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny");
        let cfg = ModelConfig::load(&dir).unwrap();
        let mut t = read_safetensors(&dir.join("model.safetensors")).unwrap();
        t.remove("model.layers.1.mlp.up_proj.weight");
        let err = ModelWeights::from_tensors(t.clone(), &cfg).unwrap_err();
        assert!(err.contains("model.layers.1.mlp.up_proj.weight"), "{err}");
        let mut t = read_safetensors(&dir.join("model.safetensors")).unwrap();
        t.get_mut("model.norm.weight").unwrap().shape = vec![65];
        let err = ModelWeights::from_tensors(t, &cfg).unwrap_err();
        assert!(
            err.contains("model.norm.weight") && err.contains("[65]"),
            "{err}"
        );
    }

    #[test]
    fn corrupt_files_are_errors() {
        let dir = std::env::temp_dir().join(format!("sy-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.safetensors");
        std::fs::write(&p, [1u8, 2, 3]).unwrap();
        assert!(read_safetensors(&p).is_err());
        let mut b = 1000u64.to_le_bytes().to_vec();
        b.extend_from_slice(b"{}");
        std::fs::write(&p, &b).unwrap();
        assert!(read_safetensors(&p).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
