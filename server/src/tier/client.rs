//! HTTP/1.1 to remote servers (keep-alive pool, connect and header
//! timeouts) and the SSE framing of their streamed answers.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// Why a remote call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RemoteError {
    /// No connection or a broken one.
    #[error("connection to {url} failed: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// What the transport said.
        reason: String,
    },
    /// No answer in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// The limit.
        after: Duration,
    },
    /// A non-success status.
    #[error("HTTP {status}: {message}")]
    Status {
        /// The status code.
        status: u16,
        /// The error message from the body (OpenAI shape when it is one).
        message: String,
        /// What `Retry-After` asked for.
        retry_after: Option<Duration>,
    },
    /// The answer was not what the protocol says.
    #[error("bad answer from endpoint: {0}")]
    Protocol(String),
}

impl RemoteError {
    /// Whether the server is healthy but full (429 or 503): back off, don't trip the breaker.
    pub fn is_overload(&self) -> bool {
        matches!(
            self,
            RemoteError::Status {
                status: 429 | 503,
                ..
            }
        )
    }

    /// Whether the request itself was refused (4xx other than 408/429): no other server would take it.
    pub fn is_client_error(&self) -> bool {
        matches!(self, RemoteError::Status { status, .. }
            if (400..500).contains(status) && *status != 408 && *status != 429)
    }
}

/// A pooled HTTP client with a connect + response-header timeout.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    connect_timeout: Duration,
}

impl HttpClient {
    /// A client whose calls fail if no response head arrives within `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            inner,
            connect_timeout,
        }
    }

    /// Sends `req` and waits for its response head.
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
        head_timeout: Duration,
    ) -> Result<hyper::Response<Incoming>, RemoteError> {
        let url = req.uri().to_string();
        let resp = tokio::time::timeout(head_timeout, self.inner.request(req))
            .await
            .map_err(|_| RemoteError::Timeout {
                what: "response head",
                after: head_timeout,
            })?
            .map_err(|e| RemoteError::Connect {
                url,
                reason: error_chain(&e),
            })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(300.0)));
        let body = tokio::time::timeout(self.connect_timeout, resp.into_body().collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Err(RemoteError::Status {
            status,
            message: error_message(&body),
            retry_after,
        })
    }

    /// `GET url` and the whole body, within `timeout`.
    pub async fn get(
        &self,
        url: &str,
        api_key: Option<&str>,
        timeout: Duration,
    ) -> Result<Bytes, RemoteError> {
        let req = request("GET", url, api_key, &[], Bytes::new())?;
        let fut = async {
            let resp = self.send(req, timeout).await?;
            resp.into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| RemoteError::Protocol(e.to_string()))
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| RemoteError::Timeout {
                what: "GET",
                after: timeout,
            })?
    }
}

/// Builds a request with optional Bearer key and extra headers.
pub fn request(
    method: &str,
    url: &str,
    api_key: Option<&str>,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Request<Full<Bytes>>, RemoteError> {
    let mut b = Request::builder().method(method).uri(url);
    if !body.is_empty() {
        b = b.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    if let Some(key) = api_key {
        b = b.header(hyper::header::AUTHORIZATION, format!("Bearer {key}"));
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body))
        .map_err(|e| RemoteError::Protocol(format!("request to {url}: {e}")))
}

/// The message of an OpenAI-style error body, or the body's text.
pub fn error_message(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let from_json = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error").filter(|e| e.is_string()))
            .or_else(|| v.get("detail"))
            .and_then(|m| m.as_str().map(str::to_string))
    });
    from_json.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        text.chars().take(500).collect()
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Splits a byte stream into SSE `data:` payloads (comments and other
/// fields skipped, `\r\n` and `\n` both accepted, multi-line data joined).
#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: BytesMut,
    data: String,
}

impl SseDecoder {
    /// Feeds bytes; returns every event completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            let line = self.buf.split_to(end + 1);
            let mut line = &line[..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            if line.is_empty() {
                if !self.data.is_empty() {
                    out.push(std::mem::take(&mut self.data));
                }
                continue;
            }
            let text = String::from_utf8_lossy(line);
            if let Some(v) = text.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        // Bound what a peer that never ends a line can make us hold.
        if self.buf.len() > (8 << 20) {
            self.buf.advance(self.buf.len());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_chunks() {
        let mut d = SseDecoder::default();
        assert!(d.push(b"data: {\"a\"").is_empty());
        assert_eq!(
            d.push(b":1}\r\n\r\n: comment\n\ndata: [DONE]\n"),
            vec!["{\"a\":1}"]
        );
        assert_eq!(d.push(b"\n"), vec!["[DONE]"]);
        assert_eq!(d.push(b"data: x\ndata: y\n\n"), vec!["x\ny"]);
    }

    #[test]
    fn error_bodies_give_their_message() {
        assert_eq!(
            error_message(br#"{"error":{"message":"too long","type":"invalid_request_error"}}"#),
            "too long"
        );
        assert_eq!(error_message(br#"{"detail":"nope"}"#), "nope");
        assert_eq!(error_message(b"plain"), "plain");
    }

    #[test]
    fn overload_and_client_errors_are_told_apart() {
        let s = |status| RemoteError::Status {
            status,
            message: String::new(),
            retry_after: None,
        };
        assert!(s(429).is_overload() && s(503).is_overload());
        assert!(!s(500).is_overload());
        assert!(s(400).is_client_error() && !s(429).is_client_error());
    }
}
