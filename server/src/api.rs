//! OpenAI-compatible request and response bodies, validation, and the one
//! mapping from errors to an HTTP status and an OpenAI error body.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::value::MapDeserializer;
use serde::de::{DeserializeOwned, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use switchyard_backends::{SamplingParams, MAX_LOGPROBS};

use switchyard_scheduler::router::RouteError;

use crate::tokenizer::ChatMessage;

/// An error as the API reports it: `{"error": {message, type, param, code}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message.
    pub message: String,
    /// OpenAI error type (`invalid_request_error`, ...).
    pub kind: &'static str,
    /// Offending parameter, if any.
    pub param: Option<&'static str>,
    /// Machine-readable code, if any.
    pub code: Option<&'static str>,
    /// Seconds for `Retry-After`, on 429/503.
    pub retry_after: Option<u32>,
}

/// OpenAI's error type for anything wrong with the request itself.
pub const INVALID_REQUEST: &str = "invalid_request_error";

impl ApiError {
    /// 400 for an invalid parameter.
    pub fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: INVALID_REQUEST,
            param: Some(param),
            code: None,
            retry_after: None,
        }
    }

    /// An `invalid_request_error` with no single offending parameter.
    pub fn invalid_request(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(status, INVALID_REQUEST, message)
    }

    /// An error of any status.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// Names the offending parameter.
    pub fn with_param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    /// Sets the machine-readable code.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// Sets `Retry-After`.
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from(secs));
        }
        resp
    }
}

/// Maps a routing failure to the API.
pub fn route_error(e: RouteError) -> ApiError {
    match e {
        RouteError::PromptTooLong {
            prompt_tokens,
            max_supported,
        } => ApiError::invalid(
            "prompt",
            format!(
                "prompt of {prompt_tokens} tokens exceeds the longest context any device supports ({max_supported})"
            ),
        )
        .with_code("context_length_exceeded"),
        RouteError::NoHealthyDevice => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "no healthy device can serve this request",
        )
        .retry_after(1),
    }
}

/// `prompt`: a string, one-element list of strings, token ids, or one-element list of token-id lists.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput {
    /// Text.
    Text(String),
    /// Token ids.
    Tokens(Vec<u32>),
    /// A batch of texts (only one supported).
    Texts(Vec<String>),
    /// A batch of token-id lists (only one supported).
    TokenBatch(Vec<Vec<u32>>),
}

/// Read by its JSON type, not as `#[serde(untagged)]`, which buffers the
/// whole value (every token id of a long prompt) before trying each form.
impl<'de> Deserialize<'de> for PromptInput {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Prompt;
        impl<'de> Visitor<'de> for Prompt {
            type Value = PromptInput;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, a list of token ids, or a one-element list of either")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PromptInput, E> {
                Ok(PromptInput::Text(v.to_owned()))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<PromptInput, E> {
                Ok(PromptInput::Text(v))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PromptInput, A::Error> {
                // The first element decides the form; the rest must match it.
                let Some(first) = seq.next_element::<PromptElement>()? else {
                    return Ok(PromptInput::Tokens(Vec::new()));
                };
                Ok(match first {
                    PromptElement::Id(id) => {
                        let mut ids = Vec::with_capacity(seq.size_hint().unwrap_or(0) + 1);
                        ids.push(id);
                        while let Some(id) = seq.next_element::<u32>()? {
                            ids.push(id);
                        }
                        PromptInput::Tokens(ids)
                    }
                    PromptElement::Text(text) => {
                        let mut texts = vec![text];
                        while let Some(text) = seq.next_element::<String>()? {
                            texts.push(text);
                        }
                        PromptInput::Texts(texts)
                    }
                    PromptElement::Ids(ids) => {
                        let mut batch = vec![ids];
                        while let Some(ids) = seq.next_element::<Vec<u32>>()? {
                            batch.push(ids);
                        }
                        PromptInput::TokenBatch(batch)
                    }
                })
            }
        }
        d.deserialize_any(Prompt)
    }
}

/// The first element of a list `prompt`.
enum PromptElement {
    Id(u32),
    Text(String),
    Ids(Vec<u32>),
}

impl<'de> Deserialize<'de> for PromptElement {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Element;
        impl<'de> Visitor<'de> for Element {
            type Value = PromptElement;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a token id, a string or a list of token ids")
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PromptElement, E> {
                u32::try_from(v).map(PromptElement::Id).map_err(|_| {
                    E::invalid_value(serde::de::Unexpected::Unsigned(v), &"a u32 token id")
                })
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PromptElement, E> {
                u32::try_from(v).map(PromptElement::Id).map_err(|_| {
                    E::invalid_value(serde::de::Unexpected::Signed(v), &"a u32 token id")
                })
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PromptElement, E> {
                Ok(PromptElement::Text(v.to_owned()))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<PromptElement, E> {
                Ok(PromptElement::Text(v))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PromptElement, A::Error> {
                let mut ids = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(id) = seq.next_element::<u32>()? {
                    ids.push(id);
                }
                Ok(PromptElement::Ids(ids))
            }
        }
        d.deserialize_any(Element)
    }
}

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum StopInput {
    /// One stop string.
    One(String),
    /// Several stop strings.
    Many(Vec<String>),
}

impl StopInput {
    fn into_vec(self) -> Vec<String> {
        match self {
            StopInput::One(s) => vec![s],
            StopInput::Many(v) => v,
        }
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq)]
pub struct StreamOptions {
    /// Send a final chunk with `usage`.
    #[serde(default)]
    pub include_usage: bool,
}

/// Parameters shared by completions and chat completions.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct CommonParams {
    /// Model name.
    pub model: Option<String>,
    /// Most tokens to generate.
    pub max_tokens: Option<u32>,
    /// Chat alias of `max_tokens`.
    pub max_completion_tokens: Option<u32>,
    /// Sampling temperature, 0–2.
    pub temperature: Option<f32>,
    /// Nucleus mass, (0, 1].
    pub top_p: Option<f32>,
    /// Top-k (0 or −1 disables).
    pub top_k: Option<i64>,
    /// Sampling seed.
    pub seed: Option<u64>,
    /// Stop strings.
    pub stop: Option<StopInput>,
    /// Extra stop token ids.
    #[serde(default)]
    pub stop_token_ids: Vec<u32>,
    /// Stream with SSE.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Generate past EOS.
    #[serde(default)]
    pub ignore_eos: bool,
    /// Choices per prompt (only 1 supported).
    pub n: Option<u32>,
    /// Log-probabilities: an integer count of alternatives (completions) or
    /// `true` (chat, with `top_logprobs`).
    pub logprobs: Option<Value>,
    /// Chat: alternatives per token to return log-probabilities for.
    pub top_logprobs: Option<u32>,
    /// Best-of sampling (not supported).
    pub best_of: Option<u32>,
    /// Return each chunk's token ids (vLLM's extension; what a tier reads).
    #[serde(default)]
    pub return_token_ids: bool,
}

/// `POST /v1/completions` body.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// The prompt.
    pub prompt: PromptInput,
    /// Echo the prompt (not supported when true).
    #[serde(default)]
    pub echo: bool,
    /// Everything else.
    #[serde(flatten)]
    pub params: CommonParams,
}

/// Chat message content: a string or a list of parts.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ChatContent {
    /// Plain text.
    Text(String),
    /// Content parts; only `text` parts are supported.
    Parts(Vec<ContentPart>),
}

/// One content part.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    /// Part type (`text`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Text, for `text` parts.
    pub text: Option<String>,
}

/// One incoming chat message.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessageIn {
    /// Role.
    pub role: String,
    /// Content (absent for tool-call-only assistant turns).
    pub content: Option<ChatContent>,
}

/// `POST /v1/chat/completions` body.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// Conversation so far.
    pub messages: Vec<ChatMessageIn>,
    /// Everything else.
    #[serde(flatten)]
    pub params: CommonParams,
}

/// Validated generation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationSettings {
    /// Most tokens to generate (`None`: fill the context).
    pub max_tokens: Option<u32>,
    /// Sampling.
    pub sampling: SamplingParams,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Extra stop token ids.
    pub stop_token_ids: Vec<u32>,
    /// Generate past EOS.
    pub ignore_eos: bool,
    /// Stream with SSE.
    pub stream: bool,
    /// Final usage chunk when streaming.
    pub include_usage: bool,
    /// Put the generated token ids in each choice (`token_ids`).
    pub return_token_ids: bool,
    /// Choices to sample from the one prompt (OpenAI `n`, 1 to [`MAX_CHOICES`]).
    pub n: u32,
}

/// Most choices one request may ask for (`n`).
pub const MAX_CHOICES: u32 = 16;

impl CommonParams {
    /// How many alternatives to return log-probabilities for, if any: the
    /// completions `logprobs` integer, or chat's `logprobs: true` with
    /// `top_logprobs` (each endpoint accepts either form, as vLLM does).
    fn logprobs_count(&self) -> Result<Option<u8>, ApiError> {
        let too_many = |param| {
            ApiError::invalid(
                param,
                format!("{param} must be between 0 and {MAX_LOGPROBS}"),
            )
        };
        let top = match self.top_logprobs {
            None => None,
            Some(k) => Some(
                u8::try_from(k)
                    .ok()
                    .filter(|&k| k <= MAX_LOGPROBS)
                    .ok_or_else(|| too_many("top_logprobs"))?,
            ),
        };
        match &self.logprobs {
            None | Some(Value::Null) | Some(Value::Bool(false)) => match top {
                Some(k) if k > 0 => Err(ApiError::invalid(
                    "top_logprobs",
                    "top_logprobs needs logprobs set to true",
                )),
                _ => Ok(None),
            },
            Some(Value::Bool(true)) => Ok(Some(top.unwrap_or(0))),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|k| u8::try_from(k).ok())
                .filter(|&k| k <= MAX_LOGPROBS)
                .map(Some)
                .ok_or_else(|| too_many("logprobs")),
            Some(_) => Err(ApiError::invalid(
                "logprobs",
                "logprobs must be an integer (completions) or a boolean (chat)",
            )),
        }
    }

    /// Checks ranges and unsupported options.
    pub fn validate(self) -> Result<GenerationSettings, ApiError> {
        let n = self.n.unwrap_or(1);
        if !(1..=MAX_CHOICES).contains(&n) {
            return Err(ApiError::invalid(
                "n",
                format!("n must be between 1 and {MAX_CHOICES}"),
            ));
        }
        if self.best_of.is_some_and(|n| n != 1) {
            return Err(ApiError::invalid(
                "best_of",
                "only best_of = 1 is supported",
            ));
        }
        let logprobs = self.logprobs_count()?;
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::invalid(
                "temperature",
                "temperature must be between 0 and 2",
            ));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::invalid("top_p", "top_p must be in (0, 1]"));
        }
        let top_k = match self.top_k {
            None | Some(-1) | Some(0) => 0,
            Some(k) if k > 0 => u32::try_from(k).unwrap_or(u32::MAX),
            Some(_) => {
                return Err(ApiError::invalid(
                    "top_k",
                    "top_k must be -1, 0 or positive",
                ))
            }
        };
        // The chat alias wins when both are given, so it is the one to name.
        let (max_tokens, max_tokens_param) = match self.max_completion_tokens {
            Some(n) => (Some(n), "max_completion_tokens"),
            None => (self.max_tokens, "max_tokens"),
        };
        if max_tokens == Some(0) {
            return Err(ApiError::invalid(
                max_tokens_param,
                format!("{max_tokens_param} must be at least 1"),
            ));
        }
        let stop = self.stop.map(StopInput::into_vec).unwrap_or_default();
        if stop.len() > 16 || stop.iter().any(String::is_empty) {
            return Err(ApiError::invalid("stop", "up to 16 non-empty stop strings"));
        }
        Ok(GenerationSettings {
            max_tokens,
            sampling: SamplingParams {
                temperature,
                top_p,
                top_k,
                seed: self.seed,
                logprobs,
            },
            stop,
            stop_token_ids: self.stop_token_ids,
            ignore_eos: self.ignore_eos,
            stream: self.stream,
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
            return_token_ids: self.return_token_ids,
            n,
        })
    }
}

impl ChatRequest {
    /// Messages as plain text, rejecting non-text parts.
    pub fn text_messages(&self) -> Result<Vec<ChatMessage>, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid("messages", "messages must not be empty"));
        }
        self.messages
            .iter()
            .map(|m| {
                let content = match &m.content {
                    None => String::new(),
                    Some(ChatContent::Text(t)) => t.clone(),
                    Some(ChatContent::Parts(parts)) => {
                        let mut text = String::new();
                        for p in parts {
                            match (p.kind.as_str(), &p.text) {
                                ("text", Some(t)) => text.push_str(t),
                                _ => {
                                    return Err(ApiError::invalid(
                                        "messages",
                                        format!("content part type `{}` is not supported", p.kind),
                                    ))
                                }
                            }
                        }
                        text
                    }
                };
                Ok(ChatMessage {
                    role: m.role.clone(),
                    content,
                })
            })
            .collect()
    }
}

/// A request body whose decoding failures name the offending field.
///
/// A derived `Deserialize` reports a wrong type inside a flattened struct or
/// an untagged enum without the field's name, so a failed decode is checked
/// again field by field to find it.
pub trait RequestBody: DeserializeOwned {
    /// The first field of `body` that does not decode, as a 400 naming it.
    fn field_error(body: &Map<String, Value>) -> Option<ApiError>;
}

/// Parses a JSON request body; every rejection of a JSON object names a field.
///
/// Bytes that are not a JSON value (syntax, numbers beyond `f64`, nesting
/// deeper than 128) and values other than an object name no field: there is
/// none to name; the message gives the position instead.
pub fn parse_json_body<T: RequestBody>(bytes: &[u8]) -> Result<T, ApiError> {
    // A well-formed object parses straight into `T`; only a body that
    // fails goes through a `Value` tree, which names the field at fault
    // (and accepts what a tree accepts, such as a repeated key).
    let object = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{');
    if object {
        if let Ok(body) = serde_json::from_slice::<T>(bytes) {
            return Ok(body);
        }
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::invalid_request(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}"))
    })?;
    let Value::Object(body) = &value else {
        return Err(ApiError::invalid_request(
            StatusCode::BAD_REQUEST,
            "the request body must be a JSON object",
        ));
    };
    T::deserialize(&value).map_err(|e| {
        T::field_error(body).unwrap_or_else(|| {
            ApiError::invalid_request(StatusCode::BAD_REQUEST, format!("invalid request: {e}"))
        })
    })
}

/// The (static) field names a derived `Deserialize` of a plain struct declares.
fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Error as _, Visitor};
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Self::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(Self::Error::custom("fields recorded"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// The first [`CommonParams`] field of `body` whose value has the wrong type.
fn common_field_error(body: &Map<String, Value>) -> Option<ApiError> {
    let fields = struct_fields::<CommonParams>();
    body.iter().find_map(|(key, value)| {
        let name = fields.iter().find(|f| **f == key.as_str())?;
        // One field alone: the others are optional and unknown keys ignored.
        let one =
            MapDeserializer::<_, serde_json::Error>::new(std::iter::once((key.as_str(), value)));
        CommonParams::deserialize(one)
            .err()
            .map(|e| ApiError::invalid(name, format!("{name}: {e}")))
    })
}

/// `body[name]` decoded as `T`, or a 400 naming `name` (`expected` says what fits).
fn own_field_error<T: DeserializeOwned>(
    body: &Map<String, Value>,
    name: &'static str,
    required: bool,
    expected: &str,
) -> Option<ApiError> {
    match body.get(name) {
        None if required => Some(ApiError::invalid(name, format!("missing field `{name}`"))),
        None => None,
        Some(v) => T::deserialize(v)
            .err()
            .map(|e| ApiError::invalid(name, format!("{name} must be {expected}: {e}"))),
    }
}

impl RequestBody for CompletionRequest {
    fn field_error(body: &Map<String, Value>) -> Option<ApiError> {
        own_field_error::<PromptInput>(
            body,
            "prompt",
            true,
            "a string, a list of token ids, or a one-element list of either",
        )
        .or_else(|| own_field_error::<bool>(body, "echo", false, "a boolean"))
        .or_else(|| common_field_error(body))
    }
}

impl RequestBody for ChatRequest {
    fn field_error(body: &Map<String, Value>) -> Option<ApiError> {
        let expected = "a list of {role, content} messages";
        if let Some(Value::Array(list)) = body.get("messages") {
            // Name the message, not just the list.
            let bad = list.iter().enumerate().find_map(|(i, m)| {
                ChatMessageIn::deserialize(m).err().map(|e| {
                    ApiError::invalid(
                        "messages",
                        format!("messages[{i}]: {e} (expected {expected})"),
                    )
                })
            });
            if bad.is_some() {
                return bad;
            }
        }
        own_field_error::<Vec<ChatMessageIn>>(body, "messages", true, expected)
            .or_else(|| common_field_error(body))
    }
}

/// Token usage of a request.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Generated tokens.
    pub completion_tokens: u32,
    /// Sum of both.
    pub total_tokens: u32,
}

impl Usage {
    /// Usage of `prompt` + `completion` tokens.
    pub fn new(prompt: u32, completion: u32) -> Self {
        Self {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(json: &str) -> CommonParams {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn accepts_defaults_and_aliases() {
        let s = params(r#"{"max_completion_tokens": 5, "temperature": 0}"#)
            .validate()
            .unwrap();
        assert_eq!(s.max_tokens, Some(5));
        assert_eq!(s.sampling.temperature, 0.0);
    }

    #[test]
    fn logprobs_in_both_forms() {
        let count = |json| params(json).validate().unwrap().sampling.logprobs;
        assert_eq!(count(r#"{"logprobs": 5}"#), Some(5));
        assert_eq!(count(r#"{"logprobs": 0}"#), Some(0));
        assert_eq!(count(r#"{"logprobs": true, "top_logprobs": 3}"#), Some(3));
        assert_eq!(count(r#"{"logprobs": true}"#), Some(0));
        assert_eq!(count(r#"{"logprobs": false, "top_logprobs": 0}"#), None);
        assert_eq!(count(r#"{}"#), None);
    }

    #[test]
    fn rejects_bad_parameters_naming_them() {
        for (json, param) in [
            (r#"{"n": 0}"#, "n"),
            (r#"{"n": 17}"#, "n"),
            (r#"{"logprobs": 21}"#, "logprobs"),
            (r#"{"logprobs": -1}"#, "logprobs"),
            (r#"{"logprobs": "yes"}"#, "logprobs"),
            (r#"{"top_logprobs": 2}"#, "top_logprobs"),
            (r#"{"logprobs": true, "top_logprobs": 300}"#, "top_logprobs"),
            (r#"{"temperature": 3.5}"#, "temperature"),
            (r#"{"top_p": 0}"#, "top_p"),
            (r#"{"top_k": -5}"#, "top_k"),
            (r#"{"max_tokens": 0}"#, "max_tokens"),
        ] {
            let err = params(json).validate().unwrap_err();
            assert_eq!(err.param, Some(param), "{json}");
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn prompt_forms_parse() {
        let r: CompletionRequest = serde_json::from_str(r#"{"prompt": [1, 2, 3]}"#).unwrap();
        assert_eq!(r.prompt, PromptInput::Tokens(vec![1, 2, 3]));
        let r: CompletionRequest = serde_json::from_str(r#"{"prompt": "hi"}"#).unwrap();
        assert_eq!(r.prompt, PromptInput::Text("hi".into()));
        let prompt = |json: &str| serde_json::from_str::<PromptInput>(json);
        assert_eq!(
            prompt(r#"["a", "b"]"#).unwrap(),
            PromptInput::Texts(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            prompt("[[1, 2], []]").unwrap(),
            PromptInput::TokenBatch(vec![vec![1, 2], vec![]])
        );
        assert_eq!(prompt("[]").unwrap(), PromptInput::Tokens(vec![]));
        assert_eq!(
            prompt("[4294967295]").unwrap(),
            PromptInput::Tokens(vec![u32::MAX])
        );
        // Ids beyond u32, negative or fractional ids, mixed forms, other types.
        for bad in [
            "[4294967296]",
            "[-1]",
            "[1.5]",
            r#"[1, "a"]"#,
            r#"["a", 1]"#,
            "[[1], 2]",
            "[[-1]]",
            "[null]",
            "7",
            "true",
            "{}",
            "null",
        ] {
            assert!(prompt(bad).is_err(), "{bad}");
            let body = format!(r#"{{"prompt": {bad}}}"#);
            let err = parse_json_body::<CompletionRequest>(body.as_bytes()).unwrap_err();
            assert_eq!(err.param, Some("prompt"), "{bad}: {err:?}");
        }
    }

    #[test]
    fn chat_parts_flatten_to_text() {
        let r: ChatRequest = serde_json::from_str(
            r#"{"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}"#,
        )
        .unwrap();
        assert_eq!(r.text_messages().unwrap()[0].content, "ab");
    }

    #[test]
    fn aliases_and_top_logprobs_are_named_as_sent() {
        for (json, param) in [
            (
                r#"{"max_completion_tokens": 0, "max_tokens": 5}"#,
                "max_completion_tokens",
            ),
            (r#"{"top_logprobs": 2}"#, "top_logprobs"),
        ] {
            assert_eq!(
                params(json).validate().unwrap_err().param,
                Some(param),
                "{json}"
            );
        }
    }

    #[test]
    fn wrong_types_name_the_field() {
        for (json, param) in [
            (r#"{"prompt": "x", "temperature": "hot"}"#, "temperature"),
            (r#"{"prompt": "x", "stop": [1]}"#, "stop"),
            (r#"{"prompt": "x", "max_tokens": -1}"#, "max_tokens"),
            (
                r#"{"prompt": "x", "stream_options": {"include_usage": 1}}"#,
                "stream_options",
            ),
            (r#"{"prompt": "x", "stream": null}"#, "stream"),
            (r#"{"prompt": [1, -2]}"#, "prompt"),
            (r#"{"prompt": null}"#, "prompt"),
            (r#"{"prompt": "x", "echo": "yes"}"#, "echo"),
            (r#"{"max_tokens": 3}"#, "prompt"),
        ] {
            let err = parse_json_body::<CompletionRequest>(json.as_bytes()).unwrap_err();
            assert_eq!(err.param, Some(param), "{json}: {err:?}");
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
            assert!(err.message.contains(param), "{json}: {err:?}");
        }
        for (json, param) in [
            (
                r#"{"messages": [{"role": "user"}, {"content": "x"}]}"#,
                "messages",
            ),
            (r#"{"messages": "hi"}"#, "messages"),
            (r#"{"messages": [], "top_p": [0.5]}"#, "top_p"),
            (r#"{}"#, "messages"),
        ] {
            let err = parse_json_body::<ChatRequest>(json.as_bytes()).unwrap_err();
            assert_eq!(err.param, Some(param), "{json}: {err:?}");
        }
        let err = parse_json_body::<ChatRequest>(
            br#"{"messages": [{"role": "user"}, {"content": "x"}]}"#,
        )
        .unwrap_err();
        assert!(err.message.starts_with("messages[1]:"), "{err:?}");
        // Not an object, or not JSON: no field to name, the message says why.
        for raw in [&b"[1]"[..], b"{\"prompt\": 1e400}", b"\xff"] {
            let err = parse_json_body::<CompletionRequest>(raw).unwrap_err();
            assert_eq!((err.status, err.param), (StatusCode::BAD_REQUEST, None));
        }
    }

    #[test]
    fn error_body_follows_openai_shape() {
        let body = ApiError::invalid("n", "x").body();
        assert_eq!(body["error"]["param"], "n");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(body["error"]["code"].is_null());
    }
}
