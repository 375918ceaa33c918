//! The live driver: replays a workload against any OpenAI-compatible server
//! with streaming `/v1/completions` requests.
//!
//! Each request asks for exactly the workload's output length
//! (`max_tokens` + `ignore_eos`, greedy) and streams it back; every
//! server-sent event carrying text is a token arrival (when the final chunk
//! reports `usage.completion_tokens`, that count is used instead of the
//! chunk count). Prompts are token-id arrays (`--token-ids`, exact length,
//! sharing exactly what the workload shares: trace block hashes and
//! `prefix=`, see [`prompt_token_ids`]) or text of common one-token English
//! words (approximate length), prefixed with the request id so prompts
//! never share a cached prefix by accident.
//!
//! # Invariants and tunables
//! - in flight ≤ `max_inflight` (a semaphore; the connection pool keeps at
//!   most that many idle keep-alive connections);
//! - `sent_s` is taken after a permit is acquired, so a saturated generator
//!   shows up as dispatch delay, not as server latency;
//! - the dispatcher sleeps to 1.5 ms before each send time, then yields
//!   until it (tokio's 1 ms timer alone adds ~1 ms of lateness);
//! - an unreachable target fails before any request (TCP connect, 3 s);
//!   HTTP errors and timeouts are outcomes, never fatal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use switchyard_backends::hash::mix64;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::error::LoadgenError;
use crate::metrics::{Outcome, RequestRecord};
use crate::progress::Progress;
use crate::workload::{prompt_token_ids, ReqSpec, Workload};

/// Live-driver settings.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Base URL (`http://host:port`, optionally with a path prefix).
    pub url: String,
    /// Send prompts as token ids.
    pub token_ids: bool,
    /// `model` field; discovered from `/v1/models` when absent.
    pub model: Option<String>,
    /// Most requests in flight.
    pub max_inflight: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Draw a progress bar.
    pub progress: bool,
    /// Seed for prompt contents.
    pub seed: u64,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Host (IPv6 literals keep their brackets, so `host:port` stays a socket
/// address), port and path prefix of an `http://` URL.
fn split_url(url: &str) -> Result<(String, u16, String), LoadgenError> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| LoadgenError::spec("target", url, format!("not a URL: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(LoadgenError::spec(
            "target",
            url,
            "expected sim:FLEET or an http:// URL (TLS is not supported; use a local proxy)",
        ));
    }
    let host = uri.host().unwrap_or_default();
    if host.is_empty() {
        return Err(LoadgenError::spec("target", url, "missing host"));
    }
    // `Uri` keeps an unparsable port in the authority rather than refusing it.
    let authority = uri.authority().map_or("", |a| a.as_str());
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let port = match authority
        .strip_prefix(host)
        .and_then(|r| r.strip_prefix(':'))
    {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| LoadgenError::spec("target", url, format!("bad port `{p}`")))?,
        None => 80,
    };
    let path = uri.path().trim_matches('/');
    Ok((host.to_string(), port, path.to_string()))
}

/// Common English words that most BPE tokenizers encode as one token each (with the leading space).
const WORDS: [&str; 32] = [
    " the", " of", " and", " to", " in", " is", " that", " for", " it", " as", " was", " with",
    " be", " by", " on", " not", " he", " this", " are", " or", " his", " from", " at", " which",
    " but", " have", " an", " had", " they", " you", " were", " their",
];

/// The prompt JSON value for a request.
pub fn prompt_value(r: &ReqSpec, token_ids: bool, seed: u64) -> serde_json::Value {
    if token_ids {
        // Ids 16..256 exist in every vocabulary from byte-level (259) up:
        // byte tokens or byte-fallback tokens in real tokenizers.
        let mut ids = Vec::new();
        prompt_token_ids(r, 16..256, seed, &mut ids);
        return serde_json::json!(ids);
    }
    let key = mix64(seed ^ r.id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut s = r.id.to_string();
    for i in 1..r.prompt_tokens {
        s.push_str(WORDS[(mix64(key ^ u64::from(i)) % WORDS.len() as u64) as usize]);
    }
    serde_json::Value::String(s)
}

/// Runs the workload against the target; one record per request sent.
pub fn run_http(
    workload: &Workload,
    opts: &HttpOptions,
) -> Result<Vec<RequestRecord>, LoadgenError> {
    let (host, port, prefix) = split_url(&opts.url)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| LoadgenError::io("tokio runtime", e))?;
    rt.block_on(async move {
        let addr = format!("{host}:{port}");
        match tokio::time::timeout(
            Duration::from_secs(3),
            tokio::net::TcpStream::connect(&addr),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(LoadgenError::Unreachable {
                    url: opts.url.clone(),
                    reason: e.to_string(),
                })
            }
            Err(_) => {
                return Err(LoadgenError::Unreachable {
                    url: opts.url.clone(),
                    reason: "connect timed out after 3 s".into(),
                })
            }
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: HttpClient = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(opts.max_inflight)
            .build(connector);
        let base = format!(
            "http://{addr}{}",
            if prefix.is_empty() {
                String::new()
            } else {
                format!("/{prefix}")
            }
        );
        let model = match &opts.model {
            Some(m) => m.clone(),
            None => discover_model(&client, &base)
                .await
                .unwrap_or_else(|| "default".into()),
        };
        drive(
            workload,
            opts,
            Arc::new(Shared {
                client,
                url: format!("{base}/v1/completions"),
                model,
            }),
        )
        .await
    })
}

struct Shared {
    client: HttpClient,
    url: String,
    model: String,
}

async fn discover_model(client: &HttpClient, base: &str) -> Option<String> {
    let req = Request::get(format!("{base}/v1/models"))
        .body(Full::new(Bytes::new()))
        .ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .ok()?
        .ok()?;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    v["data"][0]["id"].as_str().map(String::from)
}

async fn drive(
    workload: &Workload,
    opts: &HttpOptions,
    shared: Arc<Shared>,
) -> Result<Vec<RequestRecord>, LoadgenError> {
    let sem = Arc::new(Semaphore::new(opts.max_inflight.max(1)));
    let start = Instant::now() + Duration::from_millis(20);
    let mut set = JoinSet::new();
    let mut progress = Progress::new("requests", workload.requests.len() as u64, opts.progress);
    let mut records = Vec::with_capacity(workload.requests.len());
    let spawn = |set: &mut JoinSet<RequestRecord>, r: ReqSpec, scheduled: f64, permit| {
        let shared = shared.clone();
        let body = serde_json::json!({
            "model": shared.model,
            "prompt": prompt_value(&r, opts.token_ids, opts.seed),
            "max_tokens": r.output_tokens,
            "min_tokens": r.output_tokens,
            "ignore_eos": true,
            "temperature": 0.0,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        let timeout = opts.timeout;
        set.spawn(async move {
            let _permit: tokio::sync::OwnedSemaphorePermit = permit;
            one_request(&shared, r, body, start, scheduled, timeout).await
        });
    };
    if let Some(c) = workload.concurrency {
        // Closed loop: keep `c` in flight; send the next when one finishes.
        let end = workload
            .duration
            .map(|d| start + Duration::from_secs_f64(d));
        let mut next = 0;
        loop {
            while set.len() < c as usize
                && next < workload.requests.len()
                && end.is_none_or(|e| Instant::now() < e)
            {
                let permit = sem
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("semaphore never closes");
                let now = start.elapsed().as_secs_f64();
                spawn(&mut set, workload.requests[next].clone(), now, permit);
                next += 1;
            }
            match set.join_next().await {
                Some(res) => {
                    records.push(
                        res.map_err(|e| {
                            LoadgenError::io("request task", std::io::Error::other(e))
                        })?,
                    );
                    progress.set(records.len() as u64);
                }
                None => break,
            }
        }
    } else {
        for r in &workload.requests {
            wait_until(start + r.arrival).await;
            let permit = sem
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore never closes");
            spawn(&mut set, r.clone(), r.arrival.as_secs_f64(), permit);
            while let Some(res) = set.try_join_next() {
                records.push(
                    res.map_err(|e| LoadgenError::io("request task", std::io::Error::other(e)))?,
                );
                progress.set(records.len() as u64);
            }
        }
        while let Some(res) = set.join_next().await {
            records
                .push(res.map_err(|e| LoadgenError::io("request task", std::io::Error::other(e)))?);
            progress.set(records.len() as u64);
        }
    }
    progress.finish(records.len() as u64);
    records.sort_by_key(|r| r.id);
    Ok(records)
}

/// Sleeps until shortly before `at`, then yields until `at`: tokio's timer
/// has 1 ms granularity and rounds up, which alone would put a ~1 ms floor
/// under the dispatch delay.
async fn wait_until(at: Instant) {
    const SPIN: Duration = Duration::from_micros(1500);
    if let Some(early) = at.checked_sub(SPIN) {
        if early > Instant::now() {
            tokio::time::sleep_until(early.into()).await;
        }
    }
    while Instant::now() < at {
        tokio::task::yield_now().await;
    }
}

/// Sends one streaming request and times every token.
async fn one_request(
    shared: &Shared,
    r: ReqSpec,
    body: serde_json::Value,
    start: Instant,
    scheduled: f64,
    timeout: Duration,
) -> RequestRecord {
    let mut rec =
        RequestRecord::pending(r.id, r.source, scheduled, r.prompt_tokens, r.output_tokens);
    let sent = Instant::now();
    rec.sent_s = (sent - start).as_secs_f64().max(0.0);
    let fut = stream(shared, body, sent, &mut rec);
    match tokio::time::timeout(timeout, fut).await {
        Ok(outcome) => rec.outcome = outcome,
        Err(_) => rec.outcome = Outcome::Timeout,
    }
    rec
}

async fn stream(
    shared: &Shared,
    body: serde_json::Value,
    sent: Instant,
    rec: &mut RequestRecord,
) -> Outcome {
    let req = match Request::post(&shared.url)
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .body(Full::new(Bytes::from(body.to_string())))
    {
        Ok(r) => r,
        Err(_) => return Outcome::Error,
    };
    let resp = match shared.client.request(req).await {
        Ok(r) => r,
        Err(_) => return Outcome::Error,
    };
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        rec.status = Some(status.as_u16());
        while let Some(Ok(_)) = body.frame().await {}
        return Outcome::HttpError;
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut chunks = 0u32;
    let mut usage: Option<u32> = None;
    let mut last = sent;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Outcome::Error;
        };
        let Some(data) = frame.data_ref() else {
            continue;
        };
        let now = Instant::now();
        buf.extend_from_slice(data);
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let Some(payload) = line.strip_prefix(b"data:") else {
                continue;
            };
            let payload = payload.trim_ascii();
            if payload == b"[DONE]" || payload.is_empty() {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
                continue;
            };
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                usage = Some(n as u32);
            }
            let has_text = v["choices"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["text"].as_str().is_some_and(|t| !t.is_empty()) || c["token_ids"].is_array()
                })
            });
            if !has_text {
                continue;
            }
            if chunks == 0 {
                rec.ttft_s = Some((now - sent).as_secs_f64());
            } else {
                rec.itl_s.push((now - last).as_secs_f32());
            }
            last = now;
            chunks += 1;
        }
    }
    if chunks > 0 {
        rec.e2e_s = Some((last - sent).as_secs_f64());
    }
    rec.output_tokens = usage.unwrap_or(chunks);
    if rec.output_tokens >= rec.max_tokens {
        Outcome::Ok
    } else {
        Outcome::Truncated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        assert_eq!(
            split_url("http://127.0.0.1:8000").unwrap(),
            ("127.0.0.1".into(), 8000, String::new())
        );
        assert_eq!(
            split_url("http://h/api/").unwrap(),
            ("h".into(), 80, "api".into())
        );
        assert_eq!(
            split_url("http://[::1]:9000/v/").unwrap(),
            ("[::1]".into(), 9000, "v".into())
        );
        assert!(split_url("https://h").is_err());
        assert!(split_url("http://h:x").is_err());
        assert!(split_url("http://:80").is_err());
    }

    #[test]
    fn prompts_have_requested_length() {
        let r = ReqSpec {
            id: 7,
            arrival: Duration::ZERO,
            prompt_tokens: 50,
            output_tokens: 1,
            shared_prefix: 0,
            source: 0,
            hash_ids: None,
        };
        assert_eq!(prompt_value(&r, true, 0).as_array().unwrap().len(), 50);
        let text = prompt_value(&r, false, 0);
        assert_eq!(text.as_str().unwrap().split(' ').count(), 50);
    }
}
