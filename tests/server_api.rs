//! End-to-end tests of the HTTP API: the real binary on port 0, real HTTP.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{sim_config, sse_data, Server};
use serde_json::{json, Value};

fn fast_fleet() -> Server {
    Server::start(&sim_config(
        &[("h100-0", "h100-sxm"), ("l4-0", "l4")],
        "time_scale = 0.0",
        "",
    ))
}

#[test]
fn completions_chat_and_streaming_follow_openai_schema() {
    let s = fast_fleet();
    let (code, body) = s.post(
        "/v1/completions",
        &json!({"model": "llama-3.1-8b", "prompt": "Say hello to the world", "max_tokens": 7, "ignore_eos": true}),
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 7);
    assert_eq!(v["usage"]["prompt_tokens"], 5);
    assert_eq!(v["usage"]["total_tokens"], 12);

    // Token-id prompts are taken as they are.
    let (code, body) = s.post(
        "/v1/completions",
        &json!({"prompt": [5, 6, 7, 8], "max_tokens": 2}),
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], 4);

    let (code, body) = s.post(
        "/v1/chat/completions",
        &json!({"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "hi"}],
                "max_completion_tokens": 4, "stream": true, "stream_options": {"include_usage": true}}),
    );
    assert_eq!(code, 200);
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let finish = chunks
        .iter()
        .find(|c| c["choices"][0]["finish_reason"].is_string())
        .unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    assert_eq!(usage["usage"]["completion_tokens"], 4);

    let (code, body) = s.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}], "max_tokens": 3}),
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert!(!v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .is_empty());
}

/// The simulated device's documented log-probabilities: the sampled token
/// has ln ½, its `k`-th alternative −(k+1)·ln 2.
#[test]
fn logprobs_follow_openai_shapes_streaming_and_not() {
    let s = fast_fleet();
    let ln2 = std::f64::consts::LN_2;
    let close = |v: &Value, want: f64| (v.as_f64().unwrap() - want).abs() < 1e-6;
    let (code, body) = s.post(
        "/v1/completions",
        &json!({"prompt": "Say hello", "max_tokens": 6, "ignore_eos": true, "logprobs": 3}),
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let lp = &v["choices"][0]["logprobs"];
    let tokens = lp["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 6, "{lp}");
    assert!(lp["token_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| close(x, -ln2)));
    // Offsets index the choice's text, token by token.
    let text = v["choices"][0]["text"].as_str().unwrap();
    let joined: String = tokens.iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(joined, text);
    let offsets: Vec<u64> = lp["text_offset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_u64().unwrap())
        .collect();
    assert_eq!(offsets[0], 0);
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]));
    assert!(lp["top_logprobs"][0].as_object().unwrap().len() >= 2);

    // Chat, streamed: every token's entry arrives once, with exactly top_logprobs alternatives.
    let (code, body) = s.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
                "ignore_eos": true, "stream": true, "logprobs": true, "top_logprobs": 2}),
    );
    assert_eq!(code, 200, "{body}");
    let data = sse_data(&body);
    let mut entries = Vec::new();
    let mut content = String::new();
    for d in &data[..data.len() - 1] {
        let c: Value = serde_json::from_str(d).unwrap();
        if let Some(t) = c["choices"][0]["delta"]["content"].as_str() {
            content.push_str(t);
        }
        if let Some(e) = c["choices"][0]["logprobs"]["content"].as_array() {
            entries.extend(e.iter().cloned());
        }
    }
    assert_eq!(entries.len(), 5, "{body}");
    let joined: String = entries
        .iter()
        .map(|e| e["token"].as_str().unwrap())
        .collect();
    assert_eq!(joined, content);
    for e in &entries {
        assert!(close(&e["logprob"], -ln2));
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        assert_eq!(top[0]["token"], e["token"]);
        assert!(close(&top[1]["logprob"], -2.0 * ln2));
        assert_eq!(
            e["bytes"].as_array().unwrap().len(),
            e["token"].as_str().unwrap().len()
        );
    }
    // Without the option, logprobs stay null.
    let (_, body) = s.post("/v1/completions", &json!({"prompt": "x", "max_tokens": 2}));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["choices"][0]["logprobs"].is_null());
}

#[test]
fn stop_strings_truncate_output() {
    let s = fast_fleet();
    let (_, body) = s.post(
        "/v1/completions",
        &json!({"prompt": "abc", "max_tokens": 6, "temperature": 0}),
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    let text = v["choices"][0]["text"].as_str().unwrap().to_string();
    // Stop at the third generated word: same prompt, same (deterministic) tokens.
    let words: Vec<&str> = text.split_whitespace().collect();
    let stop = format!(" {}", words[2]);
    let (_, body) = s.post(
        "/v1/completions",
        &json!({"prompt": "abc", "max_tokens": 6, "stop": stop}),
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let cut = v["choices"][0]["text"].as_str().unwrap();
    assert_eq!(cut, format!(" {} {}", words[0], words[1]));
}

#[test]
fn bad_input_gets_openai_errors() {
    let cfg = sim_config(
        &[("l4-0", "l4")],
        "time_scale = 0.0\nkv_blocks = 64",
        "[server]\nmax_body_bytes = 20000\n",
    );
    let s = Server::start(&cfg);
    let raw = |body: &str| match ureq::post(&s.url("/v1/completions"))
        .set("content-type", "application/json")
        .send_string(body)
    {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    };
    let check = |(code, body): (u16, String), want: u16, param: Option<&str>| {
        assert_eq!(code, want, "{body}");
        let v: Value = serde_json::from_str(&body).expect("JSON error body");
        assert!(v["error"]["message"].is_string(), "{body}");
        assert!(v["error"]["type"].is_string(), "{body}");
        if let Some(p) = param {
            assert_eq!(v["error"]["param"], p, "{body}");
        }
        v
    };
    check(raw("{not json"), 400, None);
    check(raw(r#"{"prompt": "x", "n": 0}"#), 400, Some("n"));
    check(raw(r#"{"prompt": "x", "n": 17}"#), 400, Some("n"));
    check(
        raw(r#"{"prompt": "x", "n": 2, "best_of": 3}"#),
        400,
        Some("best_of"),
    );
    check(
        raw(r#"{"prompt": "x", "logprobs": 21}"#),
        400,
        Some("logprobs"),
    );
    check(
        raw(r#"{"prompt": "x", "top_logprobs": 2}"#),
        400,
        Some("top_logprobs"),
    );
    check(
        raw(r#"{"prompt": "x", "temperature": -1}"#),
        400,
        Some("temperature"),
    );
    check(raw(r#"{"prompt": ""}"#), 400, Some("prompt"));
    check(raw(r#"{"prompt": [999999999]}"#), 400, Some("prompt"));
    let v = check(raw(r#"{"model": "gpt-4", "prompt": "x"}"#), 404, None);
    assert_eq!(v["error"]["code"], "model_not_found");
    let long: Vec<u32> = (0..2000).map(|i| 10 + i % 1000).collect();
    let v = check(
        raw(&json!({"prompt": long}).to_string()),
        400,
        Some("prompt"),
    );
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    // Over the limit: 413 with an OpenAI error body (the body may be cut short).
    let mut tcp = TcpStream::connect(s.addr()).unwrap();
    let huge = json!({"prompt": "word ".repeat(10_000)}).to_string();
    let _ = write!(
        tcp,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{huge}",
        huge.len()
    );
    let mut resp = String::new();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = tcp.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(body.contains("\"error\""), "{resp}");
    let (code, _) = match ureq::get(&s.url("/v2/nothing")).call() {
        Ok(r) => (r.status(), ()),
        Err(ureq::Error::Status(c, _)) => (c, ()),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(code, 404);
}

#[test]
fn health_ready_models_and_metrics() {
    let s = fast_fleet();
    assert_eq!(ureq::get(&s.url("/health")).call().unwrap().status(), 200);
    assert_eq!(ureq::get(&s.url("/ready")).call().unwrap().status(), 200);
    let models = s.get_json("/v1/models");
    assert_eq!(models["data"][0]["id"], "llama-3.1-8b");
    s.post(
        "/v1/completions",
        &json!({"prompt": "hello", "max_tokens": 3}),
    );
    let text = ureq::get(&s.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    for name in [
        "switchyard_requests_total",
        "switchyard_time_to_first_token_seconds_bucket",
        "switchyard_step_duration_seconds_bucket",
        "switchyard_routing_decisions_total",
        "switchyard_kv_cache_usage_ratio",
        "vllm:num_requests_waiting",
        "vllm:num_requests_running",
        "vllm:kv_cache_usage_perc",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
}

#[test]
fn api_and_admin_keys_are_enforced() {
    let cfg = sim_config(
        &[("l4-0", "l4")],
        "time_scale = 0.0",
        "[server]\napi_keys = [\"sk-test\"]\nadmin_key = \"adm\"\n",
    );
    let s = Server::start(&cfg);
    let status = |r: Result<ureq::Response, ureq::Error>| match r {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(c, _)) => c,
        Err(e) => panic!("{e}"),
    };
    let body = json!({"prompt": "hi", "max_tokens": 1});
    assert_eq!(
        status(ureq::post(&s.url("/v1/completions")).send_json(body.clone())),
        401
    );
    assert_eq!(
        status(
            ureq::post(&s.url("/v1/completions"))
                .set("Authorization", "Bearer sk-wrong")
                .send_json(body.clone())
        ),
        401
    );
    assert_eq!(
        status(
            ureq::post(&s.url("/v1/completions"))
                .set("Authorization", "Bearer sk-test")
                .send_json(body)
        ),
        200
    );
    assert_eq!(status(ureq::get(&s.url("/admin/devices")).call()), 401);
    assert_eq!(
        status(
            ureq::get(&s.url("/admin/devices"))
                .set("Authorization", "Bearer adm")
                .call()
        ),
        200
    );
}

#[test]
fn unavailable_backend_is_reported_and_server_still_serves() {
    let mut cfg = sim_config(&[("l4-0", "l4")], "time_scale = 0.0", "");
    cfg.push_str("[[devices]]\nid = \"gpu-0\"\nbackend = \"rocm\"\nprofile = \"mi300x\"\n");
    let s = Server::start(&cfg);
    let devices = s.get_json("/admin/devices");
    let gpu = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "gpu-0")
        .unwrap();
    assert_eq!(gpu["state"], "unavailable");
    assert!(!gpu["last_error"].as_str().unwrap().is_empty());
    let (code, _) = s.post("/v1/completions", &json!({"prompt": "hi", "max_tokens": 2}));
    assert_eq!(code, 200);
}

#[test]
fn admin_route_sends_shapes_to_different_device_types() {
    let s = Server::start(&sim_config(
        &[
            ("h100-0", "h100-sxm"),
            ("mi250x-0", "mi250x"),
            ("l4-0", "l4"),
        ],
        "time_scale = 0.0",
        // Packing by price splits shapes by device strength; a fixed fleet
        // would send both to the fastest device.
        "[router]\nobjective = \"elastic\"\n",
    ));
    let prefill = s.get_json("/admin/route?prompt_tokens=8000&max_tokens=50");
    let decode = s.get_json("/admin/route?prompt_tokens=100&max_tokens=1000");
    assert_eq!(prefill["shape"]["class"], "prefill-heavy", "{prefill}");
    assert_eq!(decode["shape"]["class"], "decode-heavy", "{decode}");
    let profile = |v: &Value| -> String {
        let dev = v["device"].as_str().unwrap();
        v["scores"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["device"] == dev)
            .unwrap()["profile"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_ne!(profile(&prefill), profile(&decode), "{prefill}\n{decode}");
    for v in [&prefill, &decode] {
        assert_eq!(v["scores"].as_array().unwrap().len(), 3);
        for key in ["ttft_ms", "tpot_ms", "cost_usd"] {
            assert!(v["scores"][0][key].is_number(), "{key} in {v}");
        }
    }
}

#[test]
fn reload_applies_good_config_and_keeps_old_on_bad() {
    let cfg = sim_config(
        &[("l4-0", "l4")],
        "time_scale = 0.0",
        "[router]\npolicy = \"cost\"\n",
    );
    let s = Server::start(&cfg);
    assert_eq!(
        s.get_json("/admin/route?prompt_tokens=10&max_tokens=10")["policy"],
        "cost"
    );
    std::fs::write(s.config_path(), cfg.replace("\"cost\"", "\"latency\"")).unwrap();
    let (code, body) = s.post("/admin/reload", &json!({}));
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        s.get_json("/admin/route?prompt_tokens=10&max_tokens=10")["policy"],
        "latency"
    );
    std::fs::write(s.config_path(), cfg.replace("\"cost\"", "\"fastest\"")).unwrap();
    let (code, body) = s.post("/admin/reload", &json!({}));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("previous configuration kept"), "{body}");
    assert_eq!(
        s.get_json("/admin/route?prompt_tokens=10&max_tokens=10")["policy"],
        "latency"
    );
}

/// A single L4 that takes real (predicted) time per step, with a small pool.
fn slow_device(extra: &str) -> Server {
    Server::start(&sim_config(
        &[("l4-0", "l4")],
        "time_scale = 1.0\nkv_blocks = 256",
        extra,
    ))
}

fn open_stream(s: &Server, max_tokens: u32) -> TcpStream {
    open_stream_n(s, max_tokens, 1)
}

/// A streamed completion of `n` choices, read until its first chunk.
fn open_stream_n(s: &Server, max_tokens: u32, n: u32) -> TcpStream {
    let body = json!({"prompt": "tell me a long story", "max_tokens": max_tokens, "stream": true, "ignore_eos": true, "n": n}).to_string();
    let mut tcp = TcpStream::connect(s.addr()).unwrap();
    write!(
        tcp,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = [0u8; 4096];
    let mut seen = String::new();
    while !seen.contains("data: ") {
        let n = tcp.read(&mut buf).unwrap();
        assert!(n > 0, "stream closed early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    tcp
}

fn running(v: &Value) -> u64 {
    v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["load"]["running"].as_u64().unwrap())
        .sum()
}

#[test]
fn client_disconnect_aborts_and_frees_kv_blocks() {
    let s = slow_device("");
    let tcp = open_stream(&s, 2000);
    s.wait_devices(Duration::from_secs(5), |v| running(v) == 1);
    drop(tcp);
    s.wait_devices(Duration::from_secs(10), |v| {
        let d = &v["devices"][0];
        running(v) == 0 && d["load"]["free_blocks"] == d["load"]["total_blocks"]
    });
}

#[test]
fn client_disconnect_aborts_every_choice_of_a_parallel_request() {
    let s = slow_device("");
    let tcp = open_stream_n(&s, 2000, 3);
    s.wait_devices(Duration::from_secs(5), |v| running(v) == 3);
    drop(tcp);
    s.wait_devices(Duration::from_secs(10), |v| {
        let d = &v["devices"][0];
        running(v) == 0 && d["load"]["free_blocks"] == d["load"]["total_blocks"]
    });
}

#[test]
fn full_admission_queue_answers_429_with_retry_after() {
    let s = slow_device("[server]\nmax_pending_requests = 2\n");
    let _a = open_stream(&s, 2000);
    let _b = open_stream(&s, 2000);
    match ureq::post(&s.url("/v1/completions")).send_json(json!({"prompt": "x", "max_tokens": 1})) {
        Err(ureq::Error::Status(429, r)) => {
            assert!(r.header("retry-after").is_some());
            let v: Value = r.into_json().unwrap();
            assert_eq!(v["error"]["type"], "rate_limit_error");
        }
        other => panic!("expected 429, got {other:?}"),
    }
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let mut s = slow_device("");
    let base = s.url("/v1/completions");
    let client = std::thread::spawn(move || {
        ureq::post(&base)
            .send_json(json!({"prompt": "x", "max_tokens": 20, "stream": true, "ignore_eos": true}))
            .map(|r| r.into_string().unwrap())
            .map_err(|e| e.to_string())
    });
    s.wait_devices(Duration::from_secs(5), |v| running(v) == 1);
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
    let body = client.join().unwrap().expect("in-flight request completed");
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let tokens = data
        .iter()
        .filter(|d| d.contains("\"text\"") && !d.contains("finish_reason\":\""))
        .count();
    assert!(tokens >= 19, "{body}");
}

#[test]
fn parallel_sampling_returns_n_choices_with_the_prompt_counted_once() {
    let s = fast_fleet();
    let prompt: Vec<u32> = (10..60).collect();
    let prompt_before =
        common::metric_value(&s, "switchyard_prompt_tokens_total", "device=\"h100-0\"")
            + common::metric_value(&s, "switchyard_prompt_tokens_total", "device=\"l4-0\"");
    let (code, body) = s.post(
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 5, "n": 3, "ignore_eos": true}),
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["finish_reason"], "length");
        assert!(!c["text"].as_str().unwrap().is_empty());
    }
    assert_eq!(v["usage"]["prompt_tokens"], 50);
    assert_eq!(v["usage"]["completion_tokens"], 15);
    assert_eq!(v["usage"]["total_tokens"], 65);
    // The device computed the prompt once for the three choices.
    let prompt_after =
        common::metric_value(&s, "switchyard_prompt_tokens_total", "device=\"h100-0\"")
            + common::metric_value(&s, "switchyard_prompt_tokens_total", "device=\"l4-0\"");
    assert_eq!(prompt_after - prompt_before, 50.0);

    // Streaming chat: every chunk names its choice; each choice opens with
    // its role and ends with its own finish; one usage, one [DONE].
    let (code, body) = s.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "n": 2,
                "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true},
                "return_token_ids": true}),
    );
    assert_eq!(code, 200, "{body}");
    let data = sse_data(&body);
    assert_eq!(data.iter().filter(|d| *d == "[DONE]").count(), 1);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let mut ids = [Vec::new(), Vec::new()];
    let mut finishes = [0, 0];
    for (k, i) in [0usize, 1].iter().enumerate() {
        let mine: Vec<&Value> = chunks
            .iter()
            .filter(|c| c["choices"].as_array().is_some_and(|a| !a.is_empty()))
            .filter(|c| c["choices"][0]["index"] == *i)
            .collect();
        assert!(!mine.is_empty(), "no chunk for choice {i}");
        assert_eq!(mine[0]["choices"][0]["delta"]["role"], "assistant");
        for c in &mine {
            if let Some(t) = c["choices"][0]["token_ids"].as_array() {
                ids[k].extend(t.iter().map(|t| t.as_u64().unwrap()));
            }
            if c["choices"][0]["finish_reason"].is_string() {
                finishes[k] += 1;
            }
        }
    }
    assert_eq!(finishes, [1, 1]);
    assert_eq!(ids[0].len(), 4);
    assert_eq!(ids[1].len(), 4);
    let usage = chunks
        .iter()
        .filter(|c| c["usage"].is_object())
        .collect::<Vec<_>>();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0]["usage"]["completion_tokens"], 8);

    // Nothing is left on the devices.
    s.wait_devices(Duration::from_secs(5), |v| {
        v["devices"]
            .as_array()
            .is_some_and(|d| d.iter().all(|d| d["load"]["running"] == 0))
    });
}

#[test]
fn worker_threads_size_the_runtime() {
    let s = Server::start(&sim_config(
        &[("l4-0", "l4")],
        "time_scale = 0.0",
        "[server]\nworker_threads = 3\n",
    ));
    assert_eq!(
        common::metric_value(&s, "switchyard_runtime_worker_threads", ""),
        3.0
    );
    let (status, body) = s.post("/v1/completions", &json!({"prompt": "hi", "max_tokens": 2}));
    assert_eq!(status, 200, "{body}");
}
