//! Subscriber for vLLM's KV-event publisher (`--kv-events-config
//! '{"enable_kv_cache_events": true, "publisher": "zmq", ...}'`).
//!
//! # Wire format (`vllm/distributed/kv_events.py`)
//! A ZMQ PUB socket sends multipart messages `[topic, seq, payload]`: `seq`
//! is the batch number as an 8-byte big-endian integer, `payload` a
//! msgspec-msgpack `KVEventBatch { ts: float, events: [...],
//! data_parallel_rank: int | None }`. Events are a tagged union of
//! `BlockStored { block_hashes, parent_block_hash, token_ids, block_size,
//! lora_id, medium, lora_name, extra_keys?, group_idx?, ... }`,
//! `BlockRemoved { block_hashes, medium, group_idx? }` and
//! `AllBlocksCleared`. `token_ids` holds the tokens of every block of the
//! event, `block_size` each, and `parent_block_hash` is the parent of the
//! first one.
//!
//! The encoding moved between releases, so every form is accepted:
//! - early releases (and SGLang) encode batch and events `array_like`:
//!   `[ts, events, dp_rank?]`, events `["BlockStored", field, ...]` in field
//!   order, trailing default fields omitted;
//! - later releases keep the batch an array but encode events as maps
//!   tagged `{"type": "BlockStored", ...}`; the newest encode the batch as a
//!   map too;
//! - block hashes are ints (possibly negative: Python's `hash`) or bytes
//!   (sha256). Bytes become their last 8 bytes, big-endian: the integer
//!   vLLM itself publishes with `VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES`, so a
//!   block keeps one key whichever form arrives.
//!
//! # What is indexed
//! Only blocks whose KV equals that of their plain token prefix on the GPU
//! can serve a request the tier hashes from tokens alone: blocks with a
//! LoRA, extra hash keys (multimodal inputs, cache salts), a medium other
//! than the GPU, or a KV cache group other than the first are skipped
//! (counted in [`DecodedPayload::ignored`]). An unknown event tag is skipped the
//! same way, so a newer publisher does not stop the feed.
//!
//! # Delivery
//! PUB/SUB drops messages under back-pressure and while (re)connecting, so
//! each batch says whether sequence numbers were skipped or restarted
//! ([`Continuity`]); a consumer clears the endpoint's index on a gap or a
//! restart rather than keep blocks whose removal it may have missed.

use std::time::Duration;

use rmpv::Value;
use tokio::sync::mpsc;
use zeromq::{Socket, SocketRecv};

use super::kv_index::{EndpointKey, KvEvent, StoredBlock};

/// Why a message from the publisher could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The message does not have the three frames `[topic, seq, payload]`.
    #[error("expected 3 frames (topic, seq, payload), got {0}")]
    Frames(usize),
    /// The sequence frame is not an 8-byte integer.
    #[error("sequence frame has {0} bytes, expected 8")]
    SeqFrame(usize),
    /// The payload is not valid msgpack.
    #[error("invalid msgpack: {0}")]
    Msgpack(String),
    /// The payload is msgpack but not shaped like the schema.
    #[error("{field}: expected {expected}")]
    Shape {
        /// Which field (or object) was malformed.
        field: &'static str,
        /// What the schema wants there.
        expected: &'static str,
    },
    /// A `BlockStored` event's token count does not fill its blocks.
    #[error("BlockStored has {tokens} token ids for {blocks} blocks of {block_size}")]
    TokenCount {
        /// Token ids in the event.
        tokens: usize,
        /// Block hashes in the event.
        blocks: usize,
        /// The event's block size.
        block_size: u64,
    },
}

/// How a batch's sequence number follows the previous one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuity {
    /// The first batch seen since the subscriber started.
    First,
    /// Exactly the next batch.
    Next,
    /// Batches were lost (dropped by PUB/SUB or undecodable) before this one.
    Gap {
        /// How many sequence numbers were skipped.
        missed: u64,
    },
    /// The sequence went backwards: the publisher (engine) restarted.
    Restarted,
}

/// One received batch, ready for [`KvIndex::apply`](super::kv_index::KvIndex::apply).
#[derive(Debug, Clone, PartialEq)]
pub struct VllmBatch {
    /// The endpoint the subscriber was started for.
    pub endpoint: EndpointKey,
    /// The publisher's batch sequence number.
    pub seq: u64,
    /// How `seq` follows the previous batch's.
    pub continuity: Continuity,
    /// What the batch says.
    pub payload: DecodedPayload,
}

/// The decoded `KVEventBatch` of one message.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedPayload {
    /// The engine's timestamp (seconds since the Unix epoch).
    pub ts: f64,
    /// The data-parallel rank that published it, if given.
    pub data_parallel_rank: Option<i64>,
    /// The events that can be indexed, in publishing order.
    pub events: Vec<KvEvent>,
    /// Events or blocks skipped as not matchable by token prefix (see the module doc).
    pub ignored: u32,
}

/// Splits a multipart message into its sequence number and payload.
pub fn split_frames<'a>(frames: &[&'a [u8]]) -> Result<(u64, &'a [u8]), DecodeError> {
    let [_topic, seq, payload] = frames else {
        return Err(DecodeError::Frames(frames.len()));
    };
    let seq: [u8; 8] = (*seq)
        .try_into()
        .map_err(|_| DecodeError::SeqFrame(seq.len()))?;
    Ok((u64::from_be_bytes(seq), payload))
}

/// Decodes a msgpack `KVEventBatch` payload in any of its encodings.
pub fn decode_payload(payload: &[u8]) -> Result<DecodedPayload, DecodeError> {
    let mut rd = payload;
    let value =
        rmpv::decode::read_value(&mut rd).map_err(|e| DecodeError::Msgpack(e.to_string()))?;
    let batch = Fields::of(&value, "KVEventBatch")?;
    let ts = batch
        .get("ts", 0)
        .and_then(Value::as_f64)
        .ok_or(shape("ts", "a number"))?;
    let events = batch
        .get("events", 1)
        .and_then(Value::as_array)
        .ok_or(shape("events", "an array"))?;
    let data_parallel_rank = batch.get("data_parallel_rank", 2).and_then(Value::as_i64);
    let mut out = DecodedPayload {
        ts,
        data_parallel_rank,
        events: Vec::with_capacity(events.len()),
        ignored: 0,
    };
    for event in events {
        decode_event(event, &mut out)?;
    }
    Ok(out)
}

/// A struct encoded either as a tagged array or as a map.
enum Fields<'a> {
    /// Positional fields (the tag, if any, already stripped).
    Array(&'a [Value]),
    /// Named fields.
    Map(&'a [(Value, Value)]),
}

impl<'a> Fields<'a> {
    fn of(value: &'a Value, what: &'static str) -> Result<Self, DecodeError> {
        match value {
            Value::Array(a) => Ok(Self::Array(a)),
            Value::Map(m) => Ok(Self::Map(m)),
            _ => Err(shape(what, "an array or a map")),
        }
    }

    /// The field called `name`, or at position `pos`; `None` when absent or nil
    /// (msgspec omits fields equal to their default).
    fn get(&self, name: &str, pos: usize) -> Option<&'a Value> {
        let v = match self {
            Self::Array(a) => a.get(pos),
            Self::Map(m) => m
                .iter()
                .find(|(k, _)| k.as_str() == Some(name))
                .map(|(_, v)| v),
        };
        v.filter(|v| !v.is_nil())
    }
}

fn decode_event(event: &Value, out: &mut DecodedPayload) -> Result<(), DecodeError> {
    let (tag, fields) = match event {
        Value::Array(a) => match a.split_first() {
            Some((tag, rest)) => (tag.as_str(), Fields::Array(rest)),
            None => (None, Fields::Array(&[])),
        },
        Value::Map(m) => {
            let f = Fields::Map(m);
            (f.get("type", 0).and_then(Value::as_str), f)
        }
        _ => return Err(shape("event", "an array or a map")),
    };
    match tag {
        Some("BlockStored") => decode_stored(&fields, out),
        Some("BlockRemoved") => {
            let hashes = hash_list(fields.get("block_hashes", 0), "BlockRemoved.block_hashes")?;
            let medium = fields.get("medium", 1).and_then(Value::as_str);
            if !on_gpu(medium) || !first_group(fields.get("group_idx", 2)) {
                out.ignored += 1;
                return Ok(());
            }
            out.events.push(KvEvent::Removed {
                engine_hashes: hashes,
            });
            Ok(())
        }
        Some("AllBlocksCleared") => {
            out.events.push(KvEvent::AllCleared);
            Ok(())
        }
        _ => {
            out.ignored += 1;
            Ok(())
        }
    }
}

// BlockStored field positions in the array form (after the tag).
const STORED_FIELDS: [&str; 9] = [
    "block_hashes",
    "parent_block_hash",
    "token_ids",
    "block_size",
    "lora_id",
    "medium",
    "lora_name",
    "extra_keys",
    "group_idx",
];

fn decode_stored(f: &Fields<'_>, out: &mut DecodedPayload) -> Result<(), DecodeError> {
    let get = |i: usize| f.get(STORED_FIELDS[i], i);
    let hashes = hash_list(get(0), "BlockStored.block_hashes")?;
    let parent = get(1)
        .map(|v| hash(v, "BlockStored.parent_block_hash"))
        .transpose()?;
    let tokens = get(2)
        .and_then(Value::as_array)
        .ok_or(shape("BlockStored.token_ids", "an array"))?
        .iter()
        .map(|t| {
            t.as_u64()
                .and_then(|t| u32::try_from(t).ok())
                .ok_or(shape("BlockStored.token_ids", "token ids below 2^32"))
        })
        .collect::<Result<Vec<u32>, _>>()?;
    let block_size = get(3)
        .and_then(Value::as_u64)
        .filter(|&b| b > 0)
        .ok_or(shape("BlockStored.block_size", "a positive integer"))?;
    if (tokens.len() as u64) != block_size.saturating_mul(hashes.len() as u64) {
        return Err(DecodeError::TokenCount {
            tokens: tokens.len(),
            blocks: hashes.len(),
            block_size,
        });
    }
    let lora = get(4).is_some() || get(6).is_some();
    let medium = get(5).and_then(Value::as_str);
    if lora || !on_gpu(medium) || !first_group(get(8)) {
        out.ignored += 1;
        return Ok(());
    }
    // One entry per block; a block with extra keys (and every block after
    // it, whose hash chains through it) differs from its plain token prefix.
    let extra = get(7).and_then(Value::as_array);
    let plain = (0..hashes.len())
        .take_while(|&k| extra.and_then(|e| e.get(k)).is_none_or(Value::is_nil))
        .count();
    out.ignored += (hashes.len() - plain) as u32;
    let bs = block_size as usize;
    let blocks = (0..plain)
        .map(|k| StoredBlock {
            hash: hashes[k],
            parent: if k == 0 { parent } else { Some(hashes[k - 1]) },
            tokens: tokens[k * bs..(k + 1) * bs].to_vec(),
        })
        .collect::<Vec<_>>();
    if !blocks.is_empty() {
        out.events.push(KvEvent::Stored { blocks });
    }
    Ok(())
}

fn on_gpu(medium: Option<&str>) -> bool {
    medium.is_none_or(|m| m.eq_ignore_ascii_case("GPU"))
}

fn first_group(group: Option<&Value>) -> bool {
    group.and_then(Value::as_i64).is_none_or(|g| g == 0)
}

fn hash_list(v: Option<&Value>, field: &'static str) -> Result<Vec<u64>, DecodeError> {
    v.and_then(Value::as_array)
        .ok_or(shape(field, "an array of block hashes"))?
        .iter()
        .map(|h| hash(h, field))
        .collect()
}

/// An engine block hash as a u64: ints as their 64-bit pattern, bytes as
/// their last 8 bytes big-endian (vLLM's own int conversion).
fn hash(v: &Value, field: &'static str) -> Result<u64, DecodeError> {
    match v {
        Value::Integer(i) => i
            .as_u64()
            .or_else(|| i.as_i64().map(|i| i as u64))
            .ok_or(shape(field, "a 64-bit hash")),
        Value::Binary(b) => {
            let tail = &b[b.len().saturating_sub(8)..];
            Ok(tail.iter().fold(0u64, |h, &x| (h << 8) | u64::from(x)))
        }
        _ => Err(shape(field, "an int or bytes hash")),
    }
}

fn shape(field: &'static str, expected: &'static str) -> DecodeError {
    DecodeError::Shape { field, expected }
}

/// Tracks sequence numbers to classify each batch's [`Continuity`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqTracker {
    last: Option<u64>,
}

impl SeqTracker {
    /// Classifies `seq` and remembers it.
    pub fn observe(&mut self, seq: u64) -> Continuity {
        let c = match self.last {
            None => Continuity::First,
            Some(l) if seq == l.wrapping_add(1) => Continuity::Next,
            Some(l) if seq > l => Continuity::Gap {
                missed: seq - l - 1,
            },
            Some(_) => Continuity::Restarted,
        };
        self.last = Some(seq);
        c
    }
}

/// Where and how to subscribe.
#[derive(Debug, Clone)]
pub struct SubscriberConfig {
    /// The endpoint the events describe (copied into every batch).
    pub endpoint: EndpointKey,
    /// The publisher's address, e.g. `tcp://10.0.0.5:5557`.
    pub address: String,
    /// Topic prefix to subscribe to (vLLM publishes on `""` unless configured).
    pub topic: String,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// Longest wait between failed connection attempts.
    pub max_backoff: Duration,
}

impl SubscriberConfig {
    /// All topics of the publisher at `address`, with default timeouts.
    pub fn new(endpoint: EndpointKey, address: impl Into<String>) -> Self {
        Self {
            endpoint,
            address: address.into(),
            topic: String::new(),
            connect_timeout: Duration::from_secs(2),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Starts [`run_subscriber`] on the current tokio runtime.
pub fn spawn_subscriber(
    config: SubscriberConfig,
    tx: mpsc::Sender<VllmBatch>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run_subscriber(config, tx))
}

/// Receives batches from the publisher and forwards them until `tx`'s
/// receiver is dropped; connection failures are retried with back-off and
/// undecodable messages are logged and skipped.
pub async fn run_subscriber(config: SubscriberConfig, tx: mpsc::Sender<VllmBatch>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut options = zeromq::SocketOptions::default();
        options.connect_timeout(config.connect_timeout);
        let mut socket = zeromq::SubSocket::with_options(options);
        let connected = tokio::select! {
            _ = tx.closed() => return,
            r = socket.connect(&config.address) => r,
        };
        let subscribed = match connected {
            Ok(()) => socket.subscribe(&config.topic).await,
            Err(e) => Err(e),
        };
        if let Err(e) = subscribed {
            tracing::warn!(address = %config.address, error = %e, "KV-event subscriber: cannot connect; retrying");
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(config.max_backoff);
            continue;
        }
        tracing::info!(address = %config.address, "KV-event subscriber connected");
        // The socket reconnects by itself after a drop; this loop only ends
        // when nobody listens any more.
        receive(&config, &mut socket, &tx).await;
        return;
    }
}

async fn receive(
    config: &SubscriberConfig,
    socket: &mut zeromq::SubSocket,
    tx: &mpsc::Sender<VllmBatch>,
) {
    let mut seqs = SeqTracker::default();
    loop {
        let msg = tokio::select! {
            _ = tx.closed() => return,
            m = socket.recv() => m,
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                // No peer right now (the publisher went away); the socket's
                // reconnect task brings it back. Pause so this is no busy loop.
                tracing::debug!(address = %config.address, error = %e, "KV-event subscriber: receive failed");
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                continue;
            }
        };
        let frames: Vec<&[u8]> = msg.iter().map(|b| b.as_ref()).collect();
        let decoded =
            split_frames(&frames).and_then(|(seq, payload)| Ok((seq, decode_payload(payload)?)));
        let (seq, payload) = match decoded {
            Ok(d) => d,
            Err(e) => {
                // Not recorded in `seqs`: the next good batch reports the gap.
                tracing::warn!(address = %config.address, error = %e, "KV-event subscriber: undecodable message skipped");
                continue;
            }
        };
        let batch = VllmBatch {
            endpoint: config.endpoint,
            seq,
            continuity: seqs.observe(seq),
            payload,
        };
        if tx.send(batch).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
