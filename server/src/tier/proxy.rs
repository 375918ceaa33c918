//! One request on one remote target: an OpenAI `/v1/completions` stream
//! whose chunks become the same [`SeqEvent`]s a local device sends, so the
//! request task relays, stops and re-routes them the same way.
//!
//! The prompt goes as token ids and token ids come back
//! (`return_token_ids`, vLLM ≥ 0.10.2 and Switchyard), so a continuation
//! elsewhere resumes from exactly the tokens streamed so far. Servers that
//! take or give only text (TGI, generic OpenAI) get the decoded prompt and
//! their text is re-encoded with the tier's tokenizer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use metrics::counter;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_backends::SamplingParams;
use switchyard_scheduler::config::EngineKind;
use switchyard_scheduler::engine::FinishReason;

use super::client::{self, RemoteError, SseDecoder};
use super::node::DEVICE_HEADER;
use super::{RemoteTarget, Tier};
use crate::metrics as m;
use crate::tokenizer::SharedTokenizer;
use crate::worker::{SeqEvent, SeqSink};

/// What a remote target is asked to generate.
#[derive(Debug, Clone)]
pub struct RemoteRequest {
    /// Prompt (with any tokens already generated elsewhere).
    pub prompt: Vec<u32>,
    /// Tokens still to generate.
    pub max_tokens: u32,
    /// Sampling.
    pub sampling: SamplingParams,
    /// Generate past EOS.
    pub ignore_eos: bool,
    /// Extra stop token ids.
    pub stop_token_ids: Vec<u32>,
    /// The model name the tier serves (used when the endpoint names none).
    pub served_model: String,
}

/// Whether the engine takes token-id prompts and returns token ids.
fn speaks_tokens(engine: EngineKind) -> bool {
    matches!(
        engine,
        EngineKind::Switchyard | EngineKind::Vllm | EngineKind::Sglang | EngineKind::Llamacpp
    )
}

/// The `/v1/completions` request a remote target is sent, serialised
/// straight from the request (a prompt of thousands of ids is not copied
/// into a `Value` tree first).
#[derive(Debug, Serialize)]
pub struct RemoteBody<'a> {
    model: &'a str,
    prompt: RemotePrompt<'a>,
    max_tokens: u32,
    temperature: f32,
    top_p: f32,
    stream: bool,
    stream_options: StreamOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ignore_eos: Option<bool>,
    #[serde(skip_serializing_if = "<[u32]>::is_empty")]
    stop_token_ids: &'a [u32],
    #[serde(skip_serializing_if = "Option::is_none")]
    return_token_ids: Option<bool>,
    /// llama.cpp's name for `return_token_ids`.
    #[serde(skip_serializing_if = "Option::is_none")]
    return_tokens: Option<bool>,
}

/// A prompt as token ids, or as text for engines that take only text.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum RemotePrompt<'a> {
    Ids(&'a [u32]),
    Text(String),
}

/// `stream_options` of a [`RemoteBody`].
#[derive(Debug, Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// The request body for `target`'s engine.
pub fn body<'a>(
    target: &'a RemoteTarget,
    req: &'a RemoteRequest,
    tokenizer: &SharedTokenizer,
) -> RemoteBody<'a> {
    let engine = target.server.engine;
    let model = if target.server.model.is_empty() {
        &req.served_model
    } else {
        &target.server.model
    };
    let tokens = speaks_tokens(engine);
    let s = &req.sampling;
    RemoteBody {
        model,
        prompt: if tokens {
            RemotePrompt::Ids(&req.prompt)
        } else {
            RemotePrompt::Text(tokenizer.decode(&req.prompt))
        },
        max_tokens: req.max_tokens,
        temperature: s.temperature,
        top_p: s.top_p,
        stream: true,
        stream_options: StreamOptions {
            include_usage: true,
        },
        seed: s.seed,
        top_k: (tokens && s.top_k > 0).then_some(s.top_k),
        ignore_eos: tokens.then_some(req.ignore_eos),
        stop_token_ids: if tokens { &req.stop_token_ids } else { &[] },
        return_token_ids: tokens.then_some(true),
        return_tokens: tokens.then_some(true),
    }
}

/// Why a remote attempt ended without finishing.
#[derive(Debug)]
enum Ending {
    Finished(FinishReason),
    Failed(RemoteError),
    ClientGone,
}

/// Runs `req` on `target`, sending its tokens and ending to `sink`.
pub async fn run(
    tier: Arc<Tier>,
    target: Arc<RemoteTarget>,
    req: RemoteRequest,
    tokenizer: SharedTokenizer,
    sink: SeqSink,
) {
    let settings = tier.settings();
    let server = target.server.clone();
    let sent = Instant::now();
    server.on_send(sent);
    let mut probe = ProbeGuard {
        target: target.clone(),
        settled: false,
    };
    let mut inflight = target.begin(req.prompt.len() as u32, req.max_tokens);
    metrics::gauge!(m::TIER_INFLIGHT, "endpoint" => target.id.clone())
        .set(f64::from(target.inflight().seqs));
    let body = body(&target, &req, &tokenizer);
    let url = format!("{}/v1/completions", server.base);
    let device_header;
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(d) = &target.node_device {
        device_header = d.clone();
        headers.push((DEVICE_HEADER, device_header.as_str()));
    }
    let ending = async {
        let request = client::request(
            "POST",
            &url,
            server.api_key.as_deref(),
            &headers,
            Bytes::from(
                serde_json::to_vec(&body)
                    .map_err(|e| RemoteError::Protocol(format!("request body: {e}")))?,
            ),
        )?;
        // The response head comes when the server accepts the request, which
        // a queueing server may delay until admission: the first-token limit covers both.
        let resp = tier
            .client()
            .send(request, settings.first_token_timeout)
            .await?;
        let mut stream = resp.into_body();
        let mut sse = SseDecoder::default();
        let mut got_token = false;
        let mut finish: Option<FinishReason> = None;
        loop {
            let limit = if got_token {
                settings.inter_token_timeout
            } else {
                settings
                    .first_token_timeout
                    .saturating_sub(sent.elapsed())
                    .max(Duration::from_millis(1))
            };
            let frame = match tokio::time::timeout(limit, stream.frame()).await {
                Err(_) => {
                    return Err(RemoteError::Timeout {
                        what: if got_token {
                            "next token"
                        } else {
                            "first token"
                        },
                        after: limit,
                    })
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(RemoteError::Connect {
                        url: url.clone(),
                        reason: format!("stream broke: {e}"),
                    })
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let Some(data) = frame.data_ref() else {
                continue;
            };
            for event in sse.push(data) {
                if event.trim() == "[DONE]" {
                    return Ok(finish.map_or(
                        Ending::Failed(RemoteError::Protocol(
                            "stream ended with [DONE] but no finish_reason".into(),
                        )),
                        Ending::Finished,
                    ));
                }
                // The common chunk (token ids, no error) without building a `Value` tree.
                if let Ok(fast) = serde_json::from_str::<TokenChunk<'_>>(&event) {
                    if fast.error.is_none() {
                        let tokens = match fast.choices.first() {
                            Some(choice) => choice.token_ids.as_deref().or(fast.tokens.as_deref()),
                            None => continue, // the usage chunk
                        };
                        if let Some(tokens) = tokens {
                            let choice = &fast.choices[0];
                            if !tokens.is_empty() {
                                got_token = true;
                                inflight.tokens(tokens.len() as u32);
                            }
                            let tokens = tokens
                                .iter()
                                .map(|&t| t.min(u64::from(u32::MAX)) as u32)
                                .collect();
                            if !relay_chunk(&sink, tokens) {
                                return Ok(Ending::ClientGone);
                            }
                            if let Some(reason) = &choice.finish_reason {
                                finish = Some(match reason.as_ref() {
                                    "length" => FinishReason::Length,
                                    _ => FinishReason::Stop,
                                });
                            }
                            continue;
                        }
                    }
                }
                let chunk: Value = serde_json::from_str(&event)
                    .map_err(|e| RemoteError::Protocol(format!("chunk is not JSON: {e}")))?;
                if let Some(err) = chunk.get("error") {
                    let message = client::error_message(chunk.to_string().as_bytes());
                    let status = err.get("code").and_then(Value::as_u64).unwrap_or(500) as u16;
                    return Err(RemoteError::Status {
                        status: if (400..600).contains(&status) {
                            status
                        } else {
                            500
                        },
                        message,
                        retry_after: None,
                    });
                }
                let Some(choice) = chunk.pointer("/choices/0") else {
                    continue; // the usage chunk
                };
                let tokens = chunk_tokens(choice, &chunk, &tokenizer);
                if !tokens.is_empty() {
                    got_token = true;
                    inflight.tokens(tokens.len() as u32);
                }
                if !relay_chunk(&sink, tokens) {
                    return Ok(Ending::ClientGone);
                }
                if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                    finish = Some(match reason {
                        "length" => FinishReason::Length,
                        _ => FinishReason::Stop,
                    });
                }
            }
        }
        // Some servers close the stream without `[DONE]`.
        Ok(finish.map_or(
            Ending::Failed(RemoteError::Protocol(
                "stream ended before a finish_reason".into(),
            )),
            Ending::Finished,
        ))
    }
    .await
    .unwrap_or_else(Ending::Failed);
    probe.settled = true;
    let now = Instant::now();
    let (outcome, event) = match ending {
        Ending::Finished(reason) => {
            server.on_success();
            ("ok", Some(SeqEvent::Finished(reason, Box::default())))
        }
        Ending::ClientGone => {
            server.on_success();
            ("abort", None)
        }
        Ending::Failed(e) if e.is_overload() => {
            let wait = match &e {
                RemoteError::Status {
                    retry_after: Some(w),
                    ..
                } => *w,
                _ => settings.overload_backoff,
            };
            server.on_overload(now, wait, e.to_string());
            (
                "overloaded",
                Some(SeqEvent::Failed(format!("{}: {e}", target.id))),
            )
        }
        Ending::Failed(RemoteError::Status {
            status, message, ..
        }) if (400..500).contains(&status) && status != 408 => {
            // The request is at fault, not the server: no other server would take it either.
            server.on_success();
            ("refused", Some(SeqEvent::Refused { status, message }))
        }
        Ending::Failed(e) => {
            let outcome = if matches!(e, RemoteError::Timeout { .. }) {
                "timeout"
            } else {
                "error"
            };
            tracing::warn!(endpoint = %target.id, error = %e, "remote request failed");
            server.on_failure(now, e.to_string());
            (
                outcome,
                Some(SeqEvent::Failed(format!("{}: {e}", target.id))),
            )
        }
    };
    counter!(m::TIER_REQUESTS, "endpoint" => target.id.clone(), "outcome" => outcome).increment(1);
    drop(inflight);
    metrics::gauge!(m::TIER_INFLIGHT, "endpoint" => target.id.clone())
        .set(f64::from(target.inflight().seqs));
    if let Some(ev) = event {
        let _ = sink.send(ev);
    }
}

/// A streamed chunk as token-id engines send it (vLLM, Switchyard,
/// llama.cpp), read without a `Value` tree; anything else (text-only
/// engines, errors, odd ids) takes the general path.
#[derive(Deserialize)]
struct TokenChunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<TokenChoice<'a>>,
    /// llama.cpp's ids.
    #[serde(default)]
    tokens: Option<Vec<u64>>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

/// A choice of a [`TokenChunk`].
#[derive(Deserialize)]
struct TokenChoice<'a> {
    #[serde(default)]
    token_ids: Option<Vec<u64>>,
    #[serde(default, borrow)]
    finish_reason: Option<std::borrow::Cow<'a, str>>,
}

/// Hands one upstream chunk's tokens on as one delta (none: nothing to
/// send); `false` when the request task is gone.
fn relay_chunk(sink: &SeqSink, tokens: Vec<u32>) -> bool {
    tokens.is_empty() || sink.send(SeqEvent::Chunk(tokens)).is_ok()
}

/// The token ids of a streamed choice: `token_ids` (vLLM, Switchyard),
/// `tokens` (llama.cpp), or the text re-encoded.
fn chunk_tokens(choice: &Value, chunk: &Value, tokenizer: &SharedTokenizer) -> Vec<u32> {
    let ids = choice
        .get("token_ids")
        .or_else(|| chunk.get("tokens"))
        .and_then(Value::as_array);
    if let Some(ids) = ids {
        return ids
            .iter()
            .filter_map(Value::as_u64)
            .map(|t| t.min(u64::from(u32::MAX)) as u32)
            .collect();
    }
    match choice.get("text").and_then(Value::as_str) {
        Some(text) if !text.is_empty() => tokenizer.encode(text),
        _ => Vec::new(),
    }
}

/// Frees a half-open breaker's probe slot if the attempt is dropped (the
/// client left) before it settled, so the breaker can probe again.
struct ProbeGuard {
    target: Arc<RemoteTarget>,
    settled: bool,
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if !self.settled {
            self.target.server.on_abandon();
        }
    }
}
