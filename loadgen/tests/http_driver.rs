//! The live driver against an in-process OpenAI-style streaming server on
//! port 0: token timing, HTTP errors counted (not fatal), unreachable
//! targets failing fast.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{args, tmpdir};
use switchyard_loadgen::cli::run_loadgen;
use switchyard_loadgen::http::{run_http, HttpOptions};
use switchyard_loadgen::metrics::Outcome;
use switchyard_loadgen::workload::{WorkloadOptions, WorkloadSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves keep-alive HTTP/1.1: `/v1/models`, and streaming `/v1/completions`
/// that emits `max_tokens` chunks 1 ms apart, except `max_tokens == 3`
/// (HTTP 500) and `max_tokens == 5` (stops after 2 tokens).
async fn serve(listener: tokio::net::TcpListener) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut buf = Vec::new();
            loop {
                let head_end = loop {
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                    let mut chunk = [0u8; 4096];
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    let mut chunk = [0u8; 4096];
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body: Vec<u8> = buf.drain(..head_end + len).skip(head_end).collect();
                if head.starts_with("GET /v1/models") {
                    let b = r#"{"object":"list","data":[{"id":"mock-model","object":"model"}]}"#;
                    let _ = sock.write_all(format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{b}", b.len()).as_bytes()).await;
                    continue;
                }
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                assert_eq!(v["model"], "mock-model");
                assert_eq!(v["stream"], true);
                let n = v["max_tokens"].as_u64().unwrap_or(1);
                if n == 3 {
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n",
                        )
                        .await;
                    continue;
                }
                let emit = if n == 5 { 2 } else { n };
                if sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n").await.is_err() {
                    return;
                }
                for i in 0..emit {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let ev =
                        format!("data: {{\"choices\":[{{\"index\":0,\"text\":\" t{i}\"}}]}}\n\n");
                    let _ = sock
                        .write_all(format!("{:x}\r\n{ev}\r\n", ev.len()).as_bytes())
                        .await;
                }
                let done = "data: [DONE]\n\n";
                let _ = sock
                    .write_all(format!("{:x}\r\n{done}\r\n0\r\n\r\n", done.len()).as_bytes())
                    .await;
            }
        });
    }
}

fn start_server() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            serve(listener).await;
        });
    });
    rx.recv().unwrap()
}

fn opts(addr: SocketAddr) -> HttpOptions {
    HttpOptions {
        url: format!("http://{addr}"),
        token_ids: true,
        model: None,
        max_inflight: 16,
        timeout: Duration::from_secs(10),
        progress: false,
        seed: 0,
    }
}

#[test]
fn streams_are_timed_and_errors_counted() {
    let addr = start_server();
    let specs: Vec<String> = [
        "fixed:prompt=20,output=8",
        "fixed:prompt=20,output=3",
        "fixed:prompt=20,output=5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let w = WorkloadSource::new(&specs)
        .unwrap()
        .build(&WorkloadOptions {
            rate: Some(200.0),
            requests: Some(30),
            seed: 3,
            ..WorkloadOptions::default()
        })
        .unwrap();
    let records = run_http(&w, &opts(addr)).unwrap();
    assert_eq!(records.len(), 30);
    for r in &records {
        match r.max_tokens {
            8 => {
                assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
                assert_eq!(r.output_tokens, 8);
                assert_eq!(r.itl_s.len(), 7);
                assert!(r.ttft_s.unwrap() > 0.0 && r.e2e_s.unwrap() >= r.ttft_s.unwrap());
                assert!(r.itl_s.iter().all(|&x| x > 0.0));
            }
            3 => {
                assert_eq!(r.outcome, Outcome::HttpError);
                assert_eq!(r.status, Some(500));
            }
            5 => {
                assert_eq!(r.outcome, Outcome::Truncated);
                assert_eq!(r.output_tokens, 2);
            }
            other => panic!("unexpected max_tokens {other}"),
        }
        assert!(r.sent_s >= r.scheduled_s - 1e-9);
    }
}

#[test]
fn closed_loop_and_report_against_live_target() {
    let addr = start_server();
    let out = tmpdir("live");
    let mut a = args(
        &format!("http://{addr}"),
        &["fixed:prompt=16,output=4"],
        out.clone(),
    );
    a.concurrency = Some(4);
    a.requests = Some(20);
    run_loadgen(a).unwrap();
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let run = &doc["runs"][0];
    assert_eq!(run["completed"], 20);
    assert!(run["ttft_s"]["p50"].as_f64().unwrap() > 0.0);
    assert!(run["dispatch_delay_s"]["p99"].is_number());
    assert!(run["cost"].is_null());
}

#[test]
fn unreachable_target_fails_fast() {
    // Bind then drop a listener so the port is (almost certainly) closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = tmpdir("unreachable");
    let mut a = args(
        &format!("http://127.0.0.1:{port}"),
        &["fixed:prompt=16,output=4"],
        out,
    );
    a.rate = Some(10.0);
    a.requests = Some(5);
    let e = run_loadgen(a).unwrap_err().to_string();
    assert!(
        e.contains("unreachable") && e.contains(&port.to_string()),
        "{e}"
    );
}
