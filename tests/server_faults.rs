//! Fault tolerance end to end: 1,000 requests across a 3-device fleet whose
//! devices fail 5% of their steps (and occasionally hang). Every request is
//! accounted for: it completes with all its tokens (re-routed when its device
//! failed), or gets a clear OpenAI-style error. None is dropped or hangs.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{sim_config, Server};
use serde_json::{json, Value};

#[test]
fn thousand_requests_with_injected_failures_are_all_accounted_for() {
    let devices = [
        ("h100-0", "h100-sxm"),
        ("mi250x-0", "mi250x"),
        ("l4-0", "l4"),
    ];
    let mut cfg = String::new();
    for (i, (id, profile)) in devices.iter().enumerate() {
        cfg.push_str(&format!(
            "[[devices]]\nid = \"{id}\"\nbackend = \"sim\"\nprofile = \"{profile}\"\ntime_scale = 0.0\n\
             fault = {{ fail_rate = 0.05, hang_rate = 0.002, hang_s = 0.5, seed = {i} }}\n"
        ));
    }
    let base = sim_config(
        &[],
        "",
        "[server]\nstep_timeout_s = 0.2\nunhealthy_backoff_ms = 20\nmax_reroutes = 8\n",
    );
    let s = Server::start(&format!("{base}{cfg}"));
    let url = s.url("/v1/completions");
    let ok = Arc::new(AtomicUsize::new(0));
    let clean_errors = Arc::new(AtomicUsize::new(0));
    let total = 1000;
    let next = Arc::new(AtomicUsize::new(0));
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (url, ok, errs, next, agent) = (
                url.clone(),
                ok.clone(),
                clean_errors.clone(),
                next.clone(),
                agent.clone(),
            );
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                let max_tokens = 8 + (i % 24) as u64;
                let body = json!({"prompt": format!("request number {i}"), "max_tokens": max_tokens,
                                  "ignore_eos": true, "stream": i % 2 == 0});
                match agent.post(&url).send_json(body) {
                    Ok(r) => {
                        let text = r.into_string().expect("body");
                        if i % 2 == 0 {
                            let data = common::sse_data(&text);
                            assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
                            if text.contains("\"error\"") {
                                errs.fetch_add(1, Ordering::Relaxed);
                            } else {
                                let tokens = data
                                    .iter()
                                    .filter(|d| d.contains("\"finish_reason\":null"))
                                    .count();
                                assert!(tokens as u64 <= max_tokens, "{text}");
                                assert!(text.contains("\"finish_reason\":\"length\""), "{text}");
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                        } else {
                            let v: Value = serde_json::from_str(&text).expect("JSON");
                            assert_eq!(
                                v["usage"]["completion_tokens"].as_u64(),
                                Some(max_tokens),
                                "{v}"
                            );
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(ureq::Error::Status(code, r)) => {
                        assert_eq!(code, 503, "unexpected status");
                        let v: Value = r.into_json().expect("JSON error body");
                        assert!(v["error"]["message"].is_string());
                        errs.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("request {i} lost: {e}"),
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("client thread");
    }
    let (ok, errs) = (
        ok.load(Ordering::Relaxed),
        clean_errors.load(Ordering::Relaxed),
    );
    assert_eq!(ok + errs, total, "ok {ok} + errors {errs}");
    // Re-routing should save nearly everything; a clean error is allowed, a loss is not.
    assert!(ok >= total * 9 / 10, "only {ok} of {total} completed");
    let metrics = ureq::get(&s.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let reroutes: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("switchyard_reroutes_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        reroutes > 0.0,
        "failures were injected, so requests must have been re-routed"
    );
    eprintln!("completed {ok}, clean errors {errs}, re-routes {reroutes}");
    // Nothing is left running anywhere.
    s.wait_devices(Duration::from_secs(10), |v| {
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["load"]["running"] == 0 && d["load"]["waiting"] == 0)
    });
}

#[test]
fn a_panicking_backend_stops_its_device_and_requests_move_on() {
    let base = sim_config(&[("good-0", "h100-sxm")], "time_scale = 0.0", "");
    let bad =
        "[[devices]]\nid = \"bad-0\"\nbackend = \"sim\"\nprofile = \"mi300x\"\ntime_scale = 0.0\n\
               fault = { panic_rate = 1.0 }\n";
    let s = Server::start(&format!("{base}{bad}"));
    for i in 0..20 {
        let (code, body) = s.post(
            "/v1/completions",
            &json!({"prompt": format!("request {i}"), "max_tokens": 4, "ignore_eos": true}),
        );
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["usage"]["completion_tokens"], 4);
    }
    let devices = s.get_json("/admin/devices");
    let bad = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "bad-0")
        .unwrap();
    assert_eq!(bad["state"], "stopped", "{devices}");
    assert!(
        bad["last_error"].as_str().unwrap().contains("panicked"),
        "{devices}"
    );
    assert_eq!(ureq::get(&s.url("/ready")).call().unwrap().status(), 200);
}

#[test]
fn a_client_that_stops_reading_is_aborted_and_frees_its_device() {
    use std::io::{Read, Write};
    // Steps at 1 % of real time: ~70 µs a token, so the 100,000-token stream
    // outlasts the socket buffers and the stall timeout by seconds.
    let s = Server::start(&sim_config(
        &[("a100-0", "a100-80g")],
        "time_scale = 0.01",
        "[server]\nclient_stall_timeout_s = 1\n",
    ));
    // A stream far longer than the socket buffers, read no further than its headers.
    let body =
        r#"{"prompt": [1, 2, 3, 4], "max_tokens": 100000, "ignore_eos": true, "stream": true}"#;
    // A small, fixed receive buffer: the kernel would otherwise grow it (up to
    // `tcp_rmem`'s maximum, 32 MiB here) and absorb the whole stream, so
    // whether the stream stalls would depend on the host's settings.
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let addr: std::net::SocketAddr = s.addr().parse().expect("server address");
    socket.connect(&addr.into()).expect("connect");
    let mut conn: std::net::TcpStream = socket.into();
    write!(
        conn,
        "POST /v1/completions HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        s.addr(),
        body.len()
    )
    .expect("send request");
    let mut head = [0u8; 512];
    let n = conn.read(&mut head).expect("response head");
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));
    // The stalled stream is aborted: its slot and KV blocks come back
    // while the connection is still open, and the metric counts it.
    let started = Instant::now();
    // The stream has begun (a counter, so it cannot be missed between polls).
    while metric(&s, "switchyard_generation_tokens_total") == 0.0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no token generated"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    s.wait_devices(Duration::from_secs(30), |v| {
        let d = &v["devices"][0];
        d["load"]["running"] == 0 && d["kv_usage"] == 0.0
    });
    let generated = metric(&s, "switchyard_generation_tokens_total");
    assert!(
        generated < 100_000.0,
        "the stream ran to the end ({generated} tokens in {:?}): nothing was aborted",
        started.elapsed()
    );
    assert_eq!(metric(&s, "switchyard_slow_client_aborts_total"), 1.0);
    drop(conn);
}

/// The first sample of `name` in `/metrics` (0 when absent).
fn metric(s: &Server, name: &str) -> f64 {
    let text = ureq::get(&s.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
