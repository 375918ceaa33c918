//! One request's life: route it, hand it to a device, relay tokens as text
//! deltas, enforce stop strings, and when a device fails, re-route what is
//! left (prompt + tokens generated so far) to another device.
//!
//! The task ends when the client goes away (its receiver is dropped): the
//! [`AbortOnDrop`] guard then aborts the sequence so its KV blocks are freed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, histogram};
use switchyard_backends::{SeqId, TokenLogprobs};
use tokio::sync::mpsc;

use crate::api::{route_error, ApiError, GenerationSettings};
use crate::fleet::{AdmissionPermit, LiveFleet, Routed, Target};
use crate::metrics as m;
use crate::tier::proxy::{self, RemoteRequest};
use crate::tokenizer::IncrementalDecoder;
use crate::worker::{Command, DeviceShared, SeqEvent, SeqSink, Submission};
use axum::http::StatusCode;
use switchyard_scheduler::engine::{FinishReason, Request};
use switchyard_scheduler::router::{DeviceId, RouteError};

/// What the HTTP layer receives from a generation task.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// New text (may be empty when a token completes no character yet).
    Text(String),
    /// Token ids generated since the last item (only with `return_token_ids`).
    TokenIds(Vec<u32>),
    /// Log-probabilities of the tokens generated since the last item (only
    /// when the request asked); they go with the next text or the end.
    Logprobs(Vec<TokenLogprob>),
    /// Generation ended.
    Done(Completion),
    /// Generation failed.
    Error(ApiError),
}

/// One choice's [`StreamItem`]: what a generation task sends the HTTP layer.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceItem {
    /// The choice (0 ≤ index < `n`).
    pub index: u32,
    /// What happened to it.
    pub item: StreamItem,
}

/// How a generation ended.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Completion {
    /// `length` or `stop`.
    pub finish_reason: &'static str,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Generated tokens.
    pub completion_tokens: u32,
    /// Device that produced the last token.
    pub device: String,
}

/// One generated token and its log-probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token id.
    pub token: u32,
    /// Its log-probability and the most likely alternatives.
    pub logprobs: Box<TokenLogprobs>,
}

/// A validated request ready to run.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// Validated settings.
    pub settings: GenerationSettings,
    /// The local device a tier chose for it (tried first).
    pub pinned: Option<DeviceId>,
}

/// Admits and starts a generation; the receiver yields its items.
pub fn start(
    fleet: &Arc<LiveFleet>,
    gen: Generation,
) -> Result<mpsc::Receiver<ChoiceItem>, ApiError> {
    if gen.prompt.is_empty() {
        return Err(ApiError::invalid("prompt", "prompt must not be empty"));
    }
    if gen.settings.sampling.logprobs.is_some() && fleet.devices().is_empty() {
        // Remote endpoints relay tokens, not logits.
        return Err(ApiError::invalid(
            "logprobs",
            "logprobs are computed by this server's own devices, and it has none (only remote endpoints)",
        ));
    }
    let Some(permit) = fleet.admit() else {
        counter!(m::REJECTED, "reason" => "queue_full").increment(1);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "too many requests in flight; retry later",
        )
        .retry_after(1));
    };
    // Reject impossible prompts before streaming starts, so they get a 400.
    let longest = fleet.longest_sequence();
    if gen.prompt.len() as u64 >= u64::from(longest) {
        return Err(route_error(RouteError::PromptTooLong {
            prompt_tokens: gen.prompt.len().min(u32::MAX as usize) as u32,
            max_supported: longest.saturating_sub(1),
        }));
    }
    let max_tokens = gen.settings.max_tokens.unwrap_or(u32::MAX);
    if let Err(excess) = fleet.shed_check(&gen.prompt, max_tokens) {
        counter!(m::REJECTED, "reason" => "over_slo").increment(1);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!(
                "every device is predicted to start this request {} ms past the time-to-first-token objective; retry later",
                excess.as_millis()
            ),
        )
        .retry_after(u32::try_from(excess.as_secs()).unwrap_or(u32::MAX).max(1)));
    }
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(run(fleet.clone(), gen, tx, permit));
    Ok(rx)
}

/// Aborts a sequence on its device unless disarmed.
struct AbortOnDrop {
    device: Arc<DeviceShared>,
    seq: SeqId,
    armed: bool,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.device.send(Command::Abort(self.seq));
        }
    }
}

/// What cancels a request's work upstream when the request task lets go of it.
enum Upstream {
    /// A local device's sequence.
    Local(AbortOnDrop),
    /// A remote stream, polled by the request task itself (dropping it
    /// drops its connection, which cancels it there).
    Remote,
}

impl Upstream {
    /// The upstream ended on its own: nothing to cancel.
    fn disarm(&mut self) {
        if let Upstream::Local(g) = self {
            g.armed = false;
        }
    }
}

enum Attempt {
    Done,
    ClientGone,
    Failed(ApiError),
    /// Withdrawn under SLO shedding before its first token.
    Shed(ApiError),
    NoDevice(ApiError),
    Reroute {
        device: DeviceId,
        reason: String,
    },
}

enum TokenFlow {
    Continue,
    StopString,
}

struct Task {
    fleet: Arc<LiveFleet>,
    gen: Generation,
    /// This choice's index among the request's `n`.
    index: u32,
    out: mpsc::Sender<ChoiceItem>,
    generated: Vec<u32>,
    decoder: IncrementalDecoder,
    /// Text so far and how much of it was sent (only kept when stop strings are set).
    text: String,
    emitted: usize,
    arrival: Instant,
    last_token: Option<Instant>,
    shape: &'static str,
    /// Ids generated but not yet sent (with `return_token_ids`).
    unsent_ids: Vec<u32>,
    /// Log-probabilities generated but not yet sent.
    unsent_logprobs: Vec<TokenLogprob>,
    /// Text of the next delta, and whether there is one to send.
    pending_text: String,
    text_ready: bool,
    /// A local device to try first (a tier's choice); dropped after one attempt.
    pin: Option<DeviceId>,
}

/// An attempt routed and handed to its device, ready to relay.
struct Prepared {
    index: DeviceId,
    name: String,
    /// The router's predicted TTFT (first attempt only).
    predicted_ttft: Option<Duration>,
    rx: mpsc::UnboundedReceiver<SeqEvent>,
    guard: Upstream,
    /// A remote stream, polled beside the events it sends.
    remote_stream: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// Tokens this attempt may generate.
    remaining: u32,
}

async fn run(
    fleet: Arc<LiveFleet>,
    gen: Generation,
    out: mpsc::Sender<ChoiceItem>,
    _permit: AdmissionPermit,
) {
    let n = gen.settings.n.max(1);
    let arrival = Instant::now();
    let mut tasks: Vec<Task> = (0..n)
        .map(|index| Task {
            fleet: fleet.clone(),
            gen: gen.clone(),
            index,
            out: out.clone(),
            generated: Vec::new(),
            decoder: IncrementalDecoder::default(),
            text: String::new(),
            emitted: 0,
            arrival,
            last_token: None,
            shape: "unknown",
            unsent_ids: Vec::new(),
            unsent_logprobs: Vec::new(),
            pending_text: String::new(),
            text_ready: false,
            pin: gen.pinned,
        })
        .collect();
    drop(out);
    if n == 1 {
        if let Some(task) = tasks.pop() {
            drive(task, None).await;
        }
        return;
    }
    // Parallel sampling: one routing decision and, on a local device, one
    // sequence whose prompt is prefilled once and shared by every choice
    // (the engine forks it, copying blocks on write). After that each
    // choice lives on its own: a failed device re-routes each separately.
    let firsts = prepare_parallel(&mut tasks);
    let choices = tasks.into_iter().zip(firsts).map(|(t, f)| drive(t, f));
    futures_util::future::join_all(choices).await;
}

/// Routes the choices of a request with `n > 1` once. On a local device
/// every choice gets its share of one parallel-sampling sequence; on a
/// remote endpoint (a process of its own) the first choice takes the
/// decision and the others route themselves.
fn prepare_parallel(tasks: &mut [Task]) -> Vec<Option<Prepared>> {
    let mut firsts: Vec<Option<Prepared>> = tasks.iter().map(|_| None).collect();
    let Some((first, others)) = tasks.split_first_mut() else {
        return firsts;
    };
    let excluded = first.effective_exclusions(&[]);
    let max_tokens = first.gen.settings.max_tokens.unwrap_or(u32::MAX);
    let Ok(routed) = first.fleet.route(&first.gen.prompt, max_tokens, &excluded) else {
        // Each choice routes (and reports the failure) on its own.
        return firsts;
    };
    let local = matches!(routed.target, Target::Local(_));
    let mut forks = Vec::new();
    let mut receivers = Vec::new();
    if local {
        for other in others.iter() {
            let (tx, rx) = mpsc::unbounded_channel();
            forks.push((other.fleet.next_seq_id(), tx));
            receivers.push(rx);
        }
    }
    let fork_ids: Vec<SeqId> = forks.iter().map(|(id, _)| *id).collect();
    let prepared = match first.submit(routed, first.gen.prompt.clone(), max_tokens, forks) {
        Ok(p) => p,
        Err(_) => return firsts,
    };
    if let Upstream::Local(guard) = &prepared.guard {
        for ((other, rx), seq) in others.iter_mut().zip(receivers).zip(fork_ids) {
            other.shape = first.shape;
            other.pin = None;
            let i = other.index as usize;
            firsts[i] = Some(Prepared {
                index: prepared.index,
                name: prepared.name.clone(),
                predicted_ttft: prepared.predicted_ttft,
                rx,
                guard: Upstream::Local(AbortOnDrop {
                    device: guard.device.clone(),
                    seq,
                    armed: true,
                }),
                remote_stream: None,
                remaining: prepared.remaining,
            });
        }
    }
    firsts[0] = Some(prepared);
    firsts
}

/// Runs one choice to its end: attempts, re-routes and waits for devices.
async fn drive(mut task: Task, mut first: Option<Prepared>) {
    let max_reroutes = task.fleet.max_reroutes() as usize;
    // Devices that failed this request; cleared when no other device is left,
    // so a recovered device can take it again.
    let mut excluded: Vec<DeviceId> = Vec::new();
    let mut reroutes = 0usize;
    let wait_limit = task.fleet.unavailable_wait();
    let mut waited = Duration::ZERO;
    loop {
        match task.attempt(&excluded, first.take()).await {
            Attempt::Done | Attempt::ClientGone => return,
            Attempt::NoDevice(err) if waited < wait_limit => {
                // Every device is down or already failed this request: wait for
                // one to recover instead of failing at once.
                excluded.clear();
                let pause = Duration::from_millis(25);
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = task.out.closed() => return,
                }
                waited += pause;
                tracing::debug!(error = %err.message, "no device available; waiting");
            }
            Attempt::NoDevice(err) | Attempt::Failed(err) => {
                task.count_outcome("unknown", "error");
                let _ = task.send_item(StreamItem::Error(err)).await;
                return;
            }
            Attempt::Shed(err) => {
                task.count_outcome("unknown", "shed");
                let _ = task.send_item(StreamItem::Error(err)).await;
                return;
            }
            Attempt::Reroute { device, reason } => {
                let name = task
                    .fleet
                    .name_of(device)
                    .unwrap_or_else(|| device.to_string());
                tracing::debug!(device = %name, %reason, "re-routing request");
                counter!(m::REROUTES, "from" => name).increment(1);
                excluded.push(device);
                reroutes += 1;
                if reroutes > max_reroutes {
                    task.count_outcome("unknown", "error");
                    let err = ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "server_error",
                        format!("request failed {reroutes} times on devices; last error: {reason}"),
                    )
                    .retry_after(1);
                    let _ = task.send_item(StreamItem::Error(err)).await;
                    return;
                }
            }
        }
    }
}

impl Task {
    /// The devices this attempt may not use: those that failed it, all
    /// but a tier's pinned device (first attempt), and remote endpoints
    /// when the request wants log-probabilities (they relay tokens only).
    fn effective_exclusions(&mut self, excluded: &[DeviceId]) -> Vec<DeviceId> {
        let mut out: Vec<DeviceId> = match self.pin.take() {
            Some(pin) => self
                .fleet
                .devices()
                .iter()
                .map(|d| d.index)
                .filter(|&i| i != pin)
                .chain(self.fleet.remote_targets().iter().map(|t| t.index))
                .collect(),
            None => excluded.to_vec(),
        };
        if self.gen.settings.sampling.logprobs.is_some() {
            out.extend(self.fleet.remote_targets().iter().map(|t| t.index));
        }
        out
    }

    /// Routes what is left of this choice and hands it to a device.
    fn prepare(&mut self, excluded: &[DeviceId]) -> Result<Prepared, Attempt> {
        let max_tokens = self.gen.settings.max_tokens.unwrap_or(u32::MAX);
        let remaining = max_tokens.saturating_sub(self.generated.len() as u32);
        let mut prompt = self.gen.prompt.clone();
        prompt.extend_from_slice(&self.generated);
        let excluded = self.effective_exclusions(excluded);
        let routed = match self.fleet.route(&prompt, remaining, &excluded) {
            Ok(r) => r,
            Err(e @ RouteError::NoHealthyDevice) => return Err(Attempt::NoDevice(route_error(e))),
            Err(e) => return Err(Attempt::Failed(route_error(e))),
        };
        self.submit(routed, prompt, remaining, Vec::new())
    }

    /// Hands `prompt` to the routed device, with `forks` (parallel samples
    /// of the same prompt, each with its own id and sink) on a local one.
    fn submit(
        &mut self,
        routed: Routed,
        prompt: Vec<u32>,
        remaining: u32,
        forks: Vec<(SeqId, SeqSink)>,
    ) -> Result<Prepared, Attempt> {
        let target = routed.target;
        let decision = routed.decision;
        let (index, name) = (target.index(), target.name().to_string());
        self.shape = decision.shape.class.as_str();
        counter!(m::ROUTING_DECISIONS,
            "policy" => decision.policy.to_string(),
            "device" => name.clone(),
            "shape" => self.shape,
        )
        .increment(1);
        let predicted_ttft = decision
            .scores
            .iter()
            .find(|s| s.device == index)
            .map(|s| s.ttft)
            .filter(|_| self.generated.is_empty());
        let (tx, rx) = mpsc::unbounded_channel();
        let s = &self.gen.settings;
        let mut remote_stream: Option<Pin<Box<dyn Future<Output = ()> + Send>>> = None;
        let guard = match target {
            Target::Local(device) => {
                let seq = self.fleet.next_seq_id();
                let request = Request {
                    id: seq,
                    prompt,
                    max_tokens: remaining,
                    sampling: s.sampling,
                    ignore_eos: s.ignore_eos,
                    stop_token_ids: s.stop_token_ids.clone(),
                };
                let sub = Submission {
                    request,
                    sink: tx,
                    forks,
                };
                if !device.send(Command::Add(sub)) {
                    return Err(Attempt::Reroute {
                        device: index,
                        reason: "device worker stopped".into(),
                    });
                }
                Upstream::Local(AbortOnDrop {
                    device,
                    seq,
                    armed: true,
                })
            }
            Target::Remote(remote) => {
                let Some(tier) = self.fleet.tier().cloned() else {
                    return Err(Attempt::Reroute {
                        device: index,
                        reason: "remote endpoints were removed".into(),
                    });
                };
                let request = RemoteRequest {
                    prompt,
                    max_tokens: remaining,
                    sampling: s.sampling,
                    ignore_eos: s.ignore_eos,
                    stop_token_ids: s.stop_token_ids.clone(),
                    served_model: self.fleet.served_name().to_string(),
                };
                let tokenizer = self.fleet.tokenizer().clone();
                // Polled beside the events it sends: no task of its own, so
                // no scheduler hop between a remote token and its delta.
                remote_stream = Some(Box::pin(proxy::run(tier, remote, request, tokenizer, tx)));
                Upstream::Remote
            }
        };
        Ok(Prepared {
            index,
            name,
            predicted_ttft,
            rx,
            guard,
            remote_stream,
            remaining,
        })
    }

    async fn attempt(&mut self, excluded: &[DeviceId], first: Option<Prepared>) -> Attempt {
        let prepared = match first {
            Some(p) => p,
            None => match self.prepare(excluded) {
                Ok(p) => p,
                Err(a) => return a,
            },
        };
        self.relay(prepared).await
    }

    /// Relays one attempt's events to the client until it ends.
    async fn relay(&mut self, prepared: Prepared) -> Attempt {
        let Prepared {
            index,
            name,
            predicted_ttft,
            mut rx,
            mut guard,
            mut remote_stream,
            remaining,
        } = prepared;
        let max_tokens = self.gen.settings.max_tokens.unwrap_or(u32::MAX);
        // One handle for the attempt: a labelled lookup per token costs an
        // allocation and a registry hash.
        let itl = histogram!(m::ITL, "device" => name.clone());
        // An event taken from the channel behind a run of tokens.
        let mut queued: Option<SeqEvent> = None;
        // With SLO shedding, a choice with no token by the TTFT target is withdrawn.
        let deadline = self
            .fleet
            .first_token_deadline()
            .map(|d| tokio::time::Instant::from_std(self.arrival + d));
        loop {
            let waiting_first = self.last_token.is_none() && self.generated.is_empty();
            let ev = match queued.take() {
                Some(ev) => Some(ev),
                None => tokio::select! {
                    () = async {
                        if let Some(at) = deadline {
                            tokio::time::sleep_until(at).await;
                        }
                    }, if deadline.is_some() && waiting_first => {
                        counter!(m::REJECTED, "reason" => "ttft_deadline").increment(1);
                        return Attempt::Shed(
                            ApiError::new(
                                StatusCode::TOO_MANY_REQUESTS,
                                "rate_limit_error",
                                "no first token within the time-to-first-token objective; retry later",
                            )
                            .retry_after(1),
                        );
                    }
                    ev = rx.recv() => ev,
                    () = async {
                        if let Some(stream) = remote_stream.as_mut() {
                            stream.await;
                        }
                    }, if remote_stream.is_some() => {
                        // It sent its ending before it returned; read on.
                        remote_stream = None;
                        continue;
                    }
                    _ = self.out.closed() => return Attempt::ClientGone,
                },
            };
            match ev {
                Some(SeqEvent::Token(t, lp)) => {
                    let mut flow = self.on_token(t, lp, &name, &itl, predicted_ttft);
                    // Tokens already waiting (a multi-step decode) leave as
                    // one delta, as vLLM streams under load: one chunk to
                    // render and one write instead of one per token.
                    while let TokenFlow::Continue = flow {
                        match rx.try_recv() {
                            Ok(SeqEvent::Token(t, lp)) => {
                                flow = self.on_token(t, lp, &name, &itl, predicted_ttft)
                            }
                            Ok(other) => {
                                queued = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    if let Some(end) = self.send_delta(flow, &name).await {
                        return end;
                    }
                }
                Some(SeqEvent::Chunk(tokens)) => {
                    let mut flow = TokenFlow::Continue;
                    for t in tokens {
                        flow = self.on_token(t, None, &name, &itl, predicted_ttft);
                        if let TokenFlow::StopString = flow {
                            break;
                        }
                    }
                    if let Some(end) = self.send_delta(flow, &name).await {
                        return end;
                    }
                }
                Some(SeqEvent::Finished(reason, _stats)) => {
                    guard.disarm();
                    let reason = match reason {
                        FinishReason::Length => "length",
                        FinishReason::Stop => "stop",
                        FinishReason::Abort => {
                            return Attempt::Reroute {
                                device: index,
                                reason: "sequence aborted by the device".into(),
                            }
                        }
                    };
                    self.fleet
                        .observe_output(max_tokens.min(remaining), self.generated.len() as u32);
                    // Bytes held back for an incomplete character end the text as U+FFFD.
                    let tail = self.decoder.finish(self.fleet.tokenizer().as_ref());
                    let reason = if tail.is_empty() {
                        reason
                    } else {
                        match self.on_text(tail) {
                            TokenFlow::StopString => "stop",
                            TokenFlow::Continue => reason,
                        }
                    };
                    self.finish(reason, &name).await;
                    return Attempt::Done;
                }
                Some(SeqEvent::Failed(reason)) => {
                    guard.disarm();
                    return Attempt::Reroute {
                        device: index,
                        reason,
                    };
                }
                Some(SeqEvent::Rejected(e)) => {
                    guard.disarm();
                    return Attempt::Failed(ApiError::invalid("prompt", e.to_string()));
                }
                Some(SeqEvent::Refused { status, message }) => {
                    guard.disarm();
                    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
                    return Attempt::Failed(ApiError::invalid_request(status, message));
                }
                None => {
                    guard.disarm();
                    return Attempt::Reroute {
                        device: index,
                        reason: "device worker stopped".into(),
                    };
                }
            }
        }
    }

    /// Sends the delta [`Self::on_token`] queued; the attempt's end when
    /// the client is gone or a stop string ended the text.
    async fn send_delta(&mut self, flow: TokenFlow, device: &str) -> Option<Attempt> {
        if !self.flush_text().await {
            return Some(Attempt::ClientGone);
        }
        if let TokenFlow::StopString = flow {
            self.finish("stop", device).await;
            return Some(Attempt::Done);
        }
        None
    }

    fn on_token(
        &mut self,
        token: u32,
        logprobs: Option<Box<TokenLogprobs>>,
        device: &str,
        itl: &metrics::Histogram,
        predicted: Option<std::time::Duration>,
    ) -> TokenFlow {
        let now = Instant::now();
        match self.last_token {
            None => {
                let ttft = now - self.arrival;
                histogram!(m::TTFT, "device" => device.to_string(), "shape" => self.shape)
                    .record(ttft.as_secs_f64());
                if let Some(p) = predicted.filter(|p| !p.is_zero()) {
                    let err = (ttft.as_secs_f64() - p.as_secs_f64()) / p.as_secs_f64();
                    histogram!(m::TTFT_PREDICTION_ERROR, "device" => device.to_string())
                        .record(err);
                }
            }
            Some(prev) => itl.record((now - prev).as_secs_f64()),
        }
        self.last_token = Some(now);
        self.generated.push(token);
        if self.gen.settings.return_token_ids {
            self.unsent_ids.push(token);
        }
        if let Some(logprobs) = logprobs {
            self.unsent_logprobs.push(TokenLogprob { token, logprobs });
        }
        let delta = self.decoder.push(self.fleet.tokenizer().as_ref(), token);
        self.on_text(delta)
    }

    /// Sends new text, or holds back what could still grow into a stop string.
    /// Queues new text ([`Self::flush_text`] sends it), or holds back what
    /// could still grow into a stop string.
    fn on_text(&mut self, delta: String) -> TokenFlow {
        let stops = &self.gen.settings.stop;
        if stops.is_empty() {
            self.queue_text(&delta);
            return TokenFlow::Continue;
        }
        self.text.push_str(&delta);
        let window = self
            .emitted
            .saturating_sub(stops.iter().map(String::len).max().unwrap_or(0));
        let window = (0..=window)
            .rev()
            .find(|&i| self.text.is_char_boundary(i))
            .unwrap_or(0);
        if let Some(pos) = stops
            .iter()
            .filter_map(|s| self.text[window..].find(s.as_str()))
            .min()
        {
            let cut = window + pos;
            let piece = self
                .text
                .get(self.emitted..cut)
                .unwrap_or_default()
                .to_string();
            self.text.truncate(cut);
            self.emitted = cut;
            if !piece.is_empty() {
                self.queue_text(&piece);
            }
            return TokenFlow::StopString;
        }
        // Hold back a tail that could still grow into a stop string.
        let held = stops
            .iter()
            .flat_map(|s| {
                (1..s.len())
                    .filter(move |&k| s.is_char_boundary(k))
                    .map(move |k| &s[..k])
            })
            .filter(|prefix| self.text.ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0);
        let safe = self.text.len() - held;
        if safe > self.emitted {
            let piece = self.text[self.emitted..safe].to_string();
            self.emitted = safe;
            self.queue_text(&piece);
        }
        TokenFlow::Continue
    }

    /// Adds text to the next delta (empty text still makes one: it carries
    /// the token ids of a token that completed no character).
    fn queue_text(&mut self, text: &str) {
        self.pending_text.push_str(text);
        self.text_ready = true;
    }

    /// Sends text to the client. A client that stops reading fills the
    /// bounded stream buffer; past the stall timeout it counts as gone, so
    /// its sequence is aborted and frees its device slot and KV blocks.
    /// Sends the queued delta, with its token ids and log-probabilities;
    /// `false` when the client is gone.
    async fn flush_text(&mut self) -> bool {
        if !self.text_ready {
            return true;
        }
        self.text_ready = false;
        let text = std::mem::take(&mut self.pending_text);
        self.flush_ids().await && self.send_item(StreamItem::Text(text)).await
    }

    /// Sends the token ids and log-probabilities not yet sent; `false` when the client is gone.
    async fn flush_ids(&mut self) -> bool {
        if !self.unsent_logprobs.is_empty() {
            let lps = std::mem::take(&mut self.unsent_logprobs);
            if !self.send_item(StreamItem::Logprobs(lps)).await {
                return false;
            }
        }
        if self.unsent_ids.is_empty() {
            return true;
        }
        let ids = std::mem::take(&mut self.unsent_ids);
        self.send_item(StreamItem::TokenIds(ids)).await
    }

    /// Sends one item; `false` when the client is gone or stalled past the timeout.
    async fn send_item(&self, item: StreamItem) -> bool {
        let timeout = self.fleet.client_stall_timeout();
        let item = ChoiceItem {
            index: self.index,
            item,
        };
        match tokio::time::timeout(timeout, self.out.send(item)).await {
            Ok(sent) => sent.is_ok(),
            Err(_) => {
                counter!(m::SLOW_CLIENT_ABORTS).increment(1);
                false
            }
        }
    }

    async fn finish(&mut self, reason: &'static str, device: &str) {
        if self.emitted < self.text.len() {
            let rest = self.text[self.emitted..].to_string();
            self.emitted = self.text.len();
            self.queue_text(&rest);
        }
        let _ = self.flush_text().await;
        let _ = self.flush_ids().await;
        let e2e = self.arrival.elapsed().as_secs_f64();
        histogram!(m::E2E, "device" => device.to_string(), "shape" => self.shape).record(e2e);
        histogram!(m::PROMPT_LEN, "device" => device.to_string())
            .record(self.gen.prompt.len() as f64);
        histogram!(m::OUTPUT_LEN, "device" => device.to_string())
            .record(self.generated.len() as f64);
        self.count_outcome(device, reason);
        let done = Completion {
            finish_reason: reason,
            prompt_tokens: self.gen.prompt.len() as u32,
            completion_tokens: self.generated.len() as u32,
            device: device.to_string(),
        };
        let _ = self.send_item(StreamItem::Done(done)).await;
    }

    fn count_outcome(&self, device: &str, outcome: &'static str) {
        counter!(m::REQUESTS,
            "device" => device.to_string(),
            "shape" => self.shape,
            "outcome" => outcome,
        )
        .increment(1);
    }
}
