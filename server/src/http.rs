//! The HTTP API: OpenAI-compatible completions and chat completions
//! (streaming over SSE and not), models, health, readiness and metrics.
//! Admin endpoints live in `admin.rs`.

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::api::{
    parse_json_body, ApiError, ChatRequest, CommonParams, CompletionRequest, GenerationSettings,
    PromptInput, RequestBody, Usage,
};
use crate::fleet::LiveFleet;
use crate::generate::{self, ChoiceItem, Completion, Generation, StreamItem, TokenLogprob};
use crate::logprobs;
use crate::metrics as m;
use crate::state::{authorize, SharedState};
use crate::tier::node::DEVICE_HEADER;
use crate::tokenizer::{render_chat, SharedTokenizer};
use crate::worker::DeviceState;
use switchyard_scheduler::router::DeviceId;

/// Builds the router of every endpoint.
pub fn app(state: SharedState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(crate::admin::routes())
        .merge(crate::tier::node::routes())
        .fallback(|| async { ApiError::invalid_request(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// The endpoint picker's HTTP side: `/metrics`, `/health`, `/ready` and the admin routes.
pub fn monitoring_app(state: SharedState) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(crate::admin::routes())
        .fallback(|| async { ApiError::invalid_request(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(state)
}

/// Parses a JSON body, mapping size and syntax problems to API errors.
fn parse_body<T: RequestBody>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::invalid_request(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
        } else {
            ApiError::invalid_request(StatusCode::BAD_REQUEST, e.body_text())
        }
    })?;
    parse_json_body(&bytes)
}

fn check_model(fleet: &LiveFleet, params: &CommonParams) -> Result<(), ApiError> {
    match &params.model {
        Some(name) if name != fleet.served_name() => Err(ApiError::invalid_request(
            StatusCode::NOT_FOUND,
            format!(
                "model `{name}` does not exist; this server serves `{}`",
                fleet.served_name()
            ),
        )
        .with_param("model")
        .with_code("model_not_found")),
        _ => Ok(()),
    }
}

fn prompt_ids(fleet: &LiveFleet, prompt: PromptInput) -> Result<Vec<u32>, ApiError> {
    let vocab = fleet.model().vocab_size;
    let ids = match prompt {
        PromptInput::Text(t) => fleet.tokenizer().encode(&t),
        PromptInput::Tokens(ids) => ids,
        PromptInput::Texts(mut v) if v.len() == 1 => fleet.tokenizer().encode(&v.remove(0)),
        PromptInput::TokenBatch(mut v) if v.len() == 1 => v.remove(0),
        _ => {
            return Err(ApiError::invalid(
                "prompt",
                "batched prompts are not supported; send one prompt per request",
            ))
        }
    };
    if let Some(bad) = ids.iter().find(|&&t| t >= vocab) {
        return Err(ApiError::invalid(
            "prompt",
            format!("token id {bad} is outside the vocabulary ({vocab})"),
        ));
    }
    if ids.is_empty() {
        return Err(ApiError::invalid("prompt", "prompt must not be empty"));
    }
    Ok(ids)
}

/// The local device a tier asked for in [`DEVICE_HEADER`], if any.
/// A completion request's prompt ids and settings, checked against the served model.
pub fn completion_prompt(
    fleet: &LiveFleet,
    req: CompletionRequest,
) -> Result<(Vec<u32>, GenerationSettings), ApiError> {
    check_model(fleet, &req.params)?;
    if req.echo {
        return Err(ApiError::invalid("echo", "echo is not supported"));
    }
    let prompt = prompt_ids(fleet, req.prompt)?;
    Ok((prompt, req.params.validate()?))
}

/// A chat request's rendered prompt ids and settings, checked against the served model.
pub fn chat_prompt(
    fleet: &LiveFleet,
    req: ChatRequest,
) -> Result<(Vec<u32>, GenerationSettings), ApiError> {
    check_model(fleet, &req.params)?;
    let messages = req.text_messages()?;
    let tok = fleet.tokenizer();
    let text = render_chat(tok.as_ref(), &messages)
        .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
    Ok((tok.encode(&text), req.params.validate()?))
}

fn pinned_device(fleet: &LiveFleet, headers: &HeaderMap) -> Result<Option<DeviceId>, ApiError> {
    let Some(value) = headers.get(DEVICE_HEADER) else {
        return Ok(None);
    };
    let name = value.to_str().unwrap_or_default();
    fleet
        .devices()
        .iter()
        .find(|d| d.id == name)
        .map(|d| Some(d.index))
        .ok_or_else(|| {
            ApiError::invalid_request(
                StatusCode::NOT_FOUND,
                format!("{DEVICE_HEADER}: this node has no device `{name}`"),
            )
        })
}

#[derive(Clone, Copy, PartialEq)]
enum Flavor {
    Completion,
    Chat,
}

impl Flavor {
    /// Names the request's own field: a chat request has no `prompt`, its
    /// prompt is rendered from `messages`.
    fn name_field(self, e: ApiError) -> ApiError {
        match (self, e.param) {
            (Flavor::Chat, Some("prompt")) => e.with_param("messages"),
            _ => e,
        }
    }
}

async fn completions(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let gen = authorize(&state.api_keys, &headers)
        .and_then(|()| parse_body(body))
        .and_then(|req: CompletionRequest| {
            let (prompt, settings) = completion_prompt(&state.fleet, req)?;
            Ok(Generation {
                prompt,
                settings,
                pinned: pinned_device(&state.fleet, &headers)?,
            })
        });
    respond(&state, gen, Flavor::Completion).await
}

async fn chat_completions(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let gen = authorize(&state.api_keys, &headers)
        .and_then(|()| parse_body(body))
        .and_then(|req: ChatRequest| {
            let (prompt, settings) = chat_prompt(&state.fleet, req)?;
            Ok(Generation {
                prompt,
                settings,
                pinned: pinned_device(&state.fleet, &headers)?,
            })
        });
    respond(&state, gen, Flavor::Chat).await
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One streamed chunk of a completion or chat completion.
#[derive(Serialize)]
struct StreamChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [StreamChoice<'a>; 1],
}

/// The one choice of a streamed chunk: `text` (completions) or `delta` (chat).
#[derive(Serialize)]
struct StreamChoice<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<ChatDelta<'a>>,
    logprobs: Value,
    finish_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "<[u32]>::is_empty")]
    token_ids: &'a [u32],
}

/// A chat chunk's `delta`: the role on the first, then content.
#[derive(Serialize)]
struct ChatDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

/// Identity shared by every chunk of one response.
struct Envelope {
    id: String,
    created: u64,
    model: String,
    flavor: Flavor,
    /// Renders tokens for `logprobs`.
    tokenizer: SharedTokenizer,
}

impl Envelope {
    fn new(fleet: &LiveFleet, flavor: Flavor) -> Self {
        let prefix = if flavor == Flavor::Chat {
            "chatcmpl"
        } else {
            "cmpl"
        };
        Self {
            id: format!(
                "{prefix}-{:016x}",
                fleet.next_seq_id().0 ^ unix_now().rotate_left(32)
            ),
            created: unix_now(),
            model: fleet.served_name().to_string(),
            flavor,
            tokenizer: fleet.tokenizer().clone(),
        }
    }

    /// The `logprobs` of a choice holding `tokens` (`null` when there are
    /// none); `offset` is the completions text offset, carried across chunks.
    fn logprobs(&self, tokens: &[TokenLogprob], offset: &mut usize) -> Value {
        if tokens.is_empty() {
            return Value::Null;
        }
        match self.flavor {
            Flavor::Completion => logprobs::completion(self.tokenizer.as_ref(), tokens, offset),
            Flavor::Chat => logprobs::chat(self.tokenizer.as_ref(), tokens),
        }
    }

    /// One streamed chunk, serialised straight from borrowed fields: it is
    /// built once per token, where a `Value` tree costs a map and a string
    /// allocation per key.
    fn chunk<'a>(
        &'a self,
        index: u32,
        text: Option<&'a str>,
        finish: Option<&'static str>,
        first: bool,
        token_ids: &'a [u32],
        logprobs: Value,
    ) -> StreamChunk<'a> {
        let choice = match self.flavor {
            Flavor::Completion => StreamChoice {
                index,
                text: Some(text.unwrap_or("")),
                delta: None,
                logprobs,
                finish_reason: finish,
                token_ids,
            },
            Flavor::Chat => StreamChoice {
                index,
                text: None,
                delta: Some(ChatDelta {
                    role: first.then_some("assistant"),
                    content: text,
                }),
                logprobs,
                finish_reason: finish,
                token_ids,
            },
        };
        StreamChunk {
            id: &self.id,
            object: self.object(true),
            created: self.created,
            model: &self.model,
            choices: [choice],
        }
    }

    fn usage_chunk(&self, usage: Usage) -> Value {
        json!({
            "id": self.id, "object": self.object(true), "created": self.created,
            "model": self.model, "choices": [], "usage": usage,
        })
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.flavor, chunk) {
            (Flavor::Completion, _) => "text_completion",
            (Flavor::Chat, true) => "chat.completion.chunk",
            (Flavor::Chat, false) => "chat.completion",
        }
    }

    /// The whole response: every choice, in index order, and the usage
    /// (the prompt counted once, the completions of all choices).
    fn full(&self, choices: Vec<CollectedChoice>) -> Value {
        let prompt_tokens = choices.first().map_or(0, |c| c.done.prompt_tokens);
        let completion_tokens = choices.iter().map(|c| c.done.completion_tokens).sum();
        let choices: Vec<Value> = choices
            .into_iter()
            .enumerate()
            .map(|(index, c)| {
                let logprobs = self.logprobs(&c.logprobs, &mut 0);
                let reason = c.done.finish_reason;
                match self.flavor {
                    Flavor::Completion => json!({
                        "index": index, "text": c.text, "logprobs": logprobs, "finish_reason": reason,
                    }),
                    Flavor::Chat => json!({
                        "index": index, "message": {"role": "assistant", "content": c.text},
                        "logprobs": logprobs, "finish_reason": reason,
                    }),
                }
            })
            .collect();
        json!({
            "id": self.id, "object": self.object(false), "created": self.created,
            "model": self.model, "choices": choices,
            "usage": Usage::new(prompt_tokens, completion_tokens),
        })
    }
}

/// One choice of a whole (non-streamed) response, as it is collected.
#[derive(Default)]
struct CollectedChoice {
    text: String,
    logprobs: Vec<TokenLogprob>,
    done: Completion,
}

/// Starts a validated generation and answers with SSE or one JSON body.
async fn respond(
    state: &SharedState,
    gen: Result<Generation, ApiError>,
    flavor: Flavor,
) -> Response {
    let gen = match gen {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let stream = gen.settings.stream;
    let include_usage = gen.settings.include_usage;
    let n = gen.settings.n.max(1);
    let mut rx = match generate::start(&state.fleet, gen) {
        Ok(rx) => rx,
        Err(e) => return flavor.name_field(e).into_response(),
    };
    let env = Envelope::new(&state.fleet, flavor);
    if stream {
        // With SLO shedding a request may be withdrawn before its first
        // token (at most the TTFT target away): the head waits for the
        // first item, so that answer is a 429 with `Retry-After`, not a 200
        // carrying an error event.
        let head = if state.fleet.first_token_deadline().is_some() {
            match rx.recv().await {
                Some(ChoiceItem {
                    item: StreamItem::Error(e),
                    ..
                }) => return flavor.name_field(e).into_response(),
                first => Some(first),
            }
        } else {
            None
        };
        sse(env, rx, include_usage, n, head)
    } else {
        collect(env, rx, n).await
    }
}

async fn collect(env: Envelope, mut rx: mpsc::Receiver<ChoiceItem>, n: u32) -> Response {
    let mut choices: Vec<CollectedChoice> = (0..n).map(|_| CollectedChoice::default()).collect();
    let mut done = 0;
    while let Some(ChoiceItem { index, item }) = rx.recv().await {
        let Some(choice) = choices.get_mut(index as usize) else {
            continue;
        };
        match item {
            StreamItem::Text(t) => choice.text.push_str(&t),
            StreamItem::TokenIds(_) => {}
            StreamItem::Logprobs(l) => choice.logprobs.extend(l),
            StreamItem::Done(d) => {
                choice.done = d;
                done += 1;
                if done == n {
                    return Json(env.full(choices)).into_response();
                }
            }
            StreamItem::Error(e) => return env.flavor.name_field(e).into_response(),
        }
    }
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "generation ended without a result",
    )
    .into_response()
}

/// Appends one SSE event carrying `v` to `out`.
fn push_sse_event(out: &mut Vec<u8>, v: &impl Serialize) {
    out.extend_from_slice(b"data: ");
    // Writing a `Value` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
    out.extend_from_slice(b"\n\n");
}

/// Most bytes of queued events sent as one body chunk: a burst of tokens
/// (a fast device, or a remote stream read in one go) leaves in one write
/// instead of a syscall per token, and a slow one is not held back.
const SSE_COALESCE_BYTES: usize = 32 * 1024;

struct SseState {
    env: Envelope,
    rx: mpsc::Receiver<ChoiceItem>,
    include_usage: bool,
    done: bool,
    choices: Vec<SseChoice>,
    /// An item taken from `rx` before the response started, rendered first.
    head: Option<Option<ChoiceItem>>,
    /// Choices that have ended, and the usage they add up to.
    ended: u32,
    prompt_tokens: u32,
    completion_tokens: u32,
}

/// What one choice's next chunk carries.
#[derive(Default)]
struct SseChoice {
    /// No chunk of it sent yet (a chat choice's first says its role).
    unsent: bool,
    /// Token ids that go with its next text chunk.
    ids: Vec<u32>,
    /// Log-probabilities that go with its next text chunk.
    lps: Vec<TokenLogprob>,
    /// Characters of its text sent so far (the completions `text_offset`).
    offset: usize,
}

impl SseState {
    /// Renders one item (`None`: the generation task ended) onto `out`.
    fn render(&mut self, item: Option<ChoiceItem>, out: &mut Vec<u8>) {
        let Some(ChoiceItem { index, item }) = item else {
            self.done = true;
            out.extend_from_slice(b"data: [DONE]\n\n");
            return;
        };
        let Some(choice) = self.choices.get_mut(index as usize) else {
            return;
        };
        match item {
            StreamItem::TokenIds(ids) => choice.ids.extend(ids),
            StreamItem::Logprobs(l) => choice.lps.extend(l),
            StreamItem::Text(t)
                if t.is_empty()
                    && !choice.unsent
                    && choice.ids.is_empty()
                    && choice.lps.is_empty() => {}
            StreamItem::Text(t) => {
                let ids = std::mem::take(&mut choice.ids);
                let lps = std::mem::take(&mut choice.lps);
                let first = std::mem::take(&mut choice.unsent);
                let logprobs = self.env.logprobs(&lps, &mut choice.offset);
                push_sse_event(
                    out,
                    &self.env.chunk(index, Some(&t), None, first, &ids, logprobs),
                );
            }
            StreamItem::Done(done) => {
                if choice.unsent && self.env.flavor == Flavor::Chat {
                    push_sse_event(
                        out,
                        &self
                            .env
                            .chunk(index, Some(""), None, true, &[], Value::Null),
                    );
                }
                choice.unsent = false;
                let ids = std::mem::take(&mut choice.ids);
                let lps = std::mem::take(&mut choice.lps);
                let logprobs = self.env.logprobs(&lps, &mut choice.offset);
                push_sse_event(
                    out,
                    &self
                        .env
                        .chunk(index, None, Some(done.finish_reason), false, &ids, logprobs),
                );
                self.ended += 1;
                self.prompt_tokens = done.prompt_tokens;
                self.completion_tokens += done.completion_tokens;
                if self.ended as usize == self.choices.len() {
                    if self.include_usage {
                        let usage = Usage::new(self.prompt_tokens, self.completion_tokens);
                        push_sse_event(out, &self.env.usage_chunk(usage));
                    }
                    out.extend_from_slice(b"data: [DONE]\n\n");
                    self.done = true;
                }
            }
            StreamItem::Error(e) => {
                self.done = true;
                push_sse_event(out, &self.env.flavor.name_field(e).body());
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
        }
    }
}

/// The SSE response; `head` is an item (or the end, `Some(None)`) already taken from `rx`.
fn sse(
    env: Envelope,
    rx: mpsc::Receiver<ChoiceItem>,
    include_usage: bool,
    n: u32,
    head: Option<Option<ChoiceItem>>,
) -> Response {
    let init = SseState {
        env,
        rx,
        include_usage,
        done: false,
        choices: (0..n)
            .map(|_| SseChoice {
                unsent: true,
                ..SseChoice::default()
            })
            .collect(),
        ended: 0,
        prompt_tokens: 0,
        completion_tokens: 0,
        head,
    };
    let body = stream::unfold(init, |mut st| async move {
        let mut out = Vec::new();
        if let Some(head) = st.head.take() {
            st.render(head, &mut out);
        }
        // Items that render nothing (ids, log-probabilities) wait for the next.
        while out.is_empty() && !st.done {
            let item = st.rx.recv().await;
            st.render(item, &mut out);
            // Then whatever is already queued goes in the same chunk.
            while !st.done && out.len() < SSE_COALESCE_BYTES {
                match st.rx.try_recv() {
                    Ok(item) => st.render(Some(item), &mut out),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => st.render(None, &mut out),
                }
            }
        }
        if out.is_empty() {
            return None;
        }
        Some((Ok::<Bytes, Infallible>(Bytes::from(out)), st))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn models(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&state.api_keys, &headers) {
        return e.into_response();
    }
    let model = state.fleet.model();
    Json(json!({
        "object": "list",
        "data": [{
            "id": state.fleet.served_name(),
            "object": "model",
            "created": 0,
            "owned_by": "switchyard",
            "max_model_len": model.max_context,
        }],
    }))
    .into_response()
}

async fn ready(State(state): State<SharedState>) -> Response {
    if state.fleet.ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no device ready").into_response()
    }
}

async fn metrics(State(state): State<SharedState>) -> Response {
    let fleet = &state.fleet;
    let (mut waiting, mut running, mut used, mut total) = (0u64, 0u64, 0u64, 0u64);
    for d in fleet.devices() {
        if d.state() == DeviceState::Unavailable {
            continue;
        }
        let l = d.load();
        waiting += u64::from(l.waiting);
        running += u64::from(l.running);
        used += u64::from(l.total_blocks - l.free_blocks.min(l.total_blocks));
        total += u64::from(l.total_blocks);
    }
    let name = fleet.served_name().to_string();
    metrics::gauge!(m::GIE_WAITING, "model_name" => name.clone()).set(waiting as f64);
    metrics::gauge!(m::GIE_RUNNING, "model_name" => name.clone()).set(running as f64);
    let usage = if total == 0 {
        0.0
    } else {
        used as f64 / total as f64
    };
    metrics::gauge!(m::GIE_KV_USAGE, "model_name" => name).set(usage);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.prometheus.render(),
    )
        .into_response()
}
