//! A thin wrapper over the Hugging Face `tokenizers` crate: loads a model
//! directory's `tokenizer.json` (+ `tokenizer_config.json` for the chat
//! template and special tokens, + `config.json` for EOS ids) and exposes
//! encode/decode, the end-of-sequence ids and the chat template string.
//!
//! Chat templates are Jinja; rendering them is the server's job. Templates
//! in the Hugging Face convention start with `{{ bos_token }}`, so encode a
//! rendered chat with `add_special_tokens = false`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model_config::ModelConfig;

/// Why a tokenizer could not be loaded or could not encode/decode.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A tokenizer file is missing or malformed.
    #[error("{}: {message}", path.display())]
    Load {
        /// File that failed.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Text could not be encoded.
    #[error("cannot encode text: {0}")]
    Encode(String),
    /// Token ids could not be decoded.
    #[error("cannot decode tokens: {0}")]
    Decode(String),
}

/// The fields of `tokenizer_config.json` this wrapper reads.
#[derive(Debug, Default, Deserialize)]
struct TokenizerConfig {
    #[serde(default)]
    chat_template: Option<ChatTemplate>,
    #[serde(default)]
    eos_token: Option<SpecialToken>,
    #[serde(default)]
    bos_token: Option<SpecialToken>,
}

/// A chat template: one string, or named variants (the `default` one is used).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ChatTemplate {
    One(String),
    Named(Vec<NamedTemplate>),
}

#[derive(Debug, Deserialize)]
struct NamedTemplate {
    name: String,
    template: String,
}

/// A special token, as a string or as an `AddedToken` object.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SpecialToken {
    Text(String),
    Object { content: String },
}

impl SpecialToken {
    fn content(&self) -> &str {
        match self {
            SpecialToken::Text(s) => s,
            SpecialToken::Object { content } => content,
        }
    }
}

/// A loaded tokenizer with its special tokens and chat template.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    eos: Vec<u32>,
    bos: Option<u32>,
    bos_text: Option<String>,
    eos_text: Option<String>,
    chat_template: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("eos", &self.eos)
            .field("bos", &self.bos)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Loads `dir/tokenizer.json`, and `tokenizer_config.json` / `config.json` when present.
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let path = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| TokenizerError::Load {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: TokenizerConfig = match std::fs::read_to_string(&cfg_path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| TokenizerError::Load {
                path: cfg_path.clone(),
                message: e.to_string(),
            })?,
            Err(_) => TokenizerConfig::default(),
        };
        let model = ModelConfig::load(dir).ok();
        let mut eos = model.as_ref().map(ModelConfig::eos_ids).unwrap_or_default();
        let by_name =
            |t: &Option<SpecialToken>| t.as_ref().and_then(|t| inner.token_to_id(t.content()));
        if let Some(id) = by_name(&cfg.eos_token) {
            if !eos.contains(&id) {
                eos.push(id);
            }
        }
        let bos = by_name(&cfg.bos_token).or_else(|| {
            model
                .as_ref()
                .and_then(|m| m.bos_token_id.as_ref())
                .and_then(|ids| ids.to_vec().first().copied())
        });
        let text = |t: &Option<SpecialToken>| t.as_ref().map(|t| t.content().to_string());
        let (bos_text, eos_text) = (text(&cfg.bos_token), text(&cfg.eos_token));
        let chat_template = cfg.chat_template.and_then(|t| match t {
            ChatTemplate::One(s) => Some(s),
            ChatTemplate::Named(v) => v
                .into_iter()
                .find(|t| t.name == "default")
                .map(|t| t.template),
        });
        Ok(Self {
            inner,
            eos,
            bos,
            bos_text,
            eos_text,
            chat_template,
        })
    }

    /// Token ids of `text`; `add_special_tokens` applies the post-processor (e.g. a leading BOS).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        self.inner
            .encode(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// Text of `ids`; `skip_special_tokens` drops BOS/EOS/padding.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    /// End-of-sequence ids (from `config.json` and `tokenizer_config.json`).
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos
    }

    /// Beginning-of-sequence id, if the model has one.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos
    }

    /// Text of the BOS token (`bos_token` in `tokenizer_config.json`), for chat templates.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos_text.as_deref()
    }

    /// Text of the EOS token (`eos_token` in `tokenizer_config.json`), for chat templates.
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_text.as_deref()
    }

    /// The Jinja chat template from `tokenizer_config.json`, if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Vocabulary size including added (special) tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Id of a token string (special tokens included).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}
