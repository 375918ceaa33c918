//! The fleet tier end to end: real `switchyard` nodes (sim devices) and a
//! mock vLLM server behind a `switchyard serve` whose config lists them as
//! `[[endpoints]]`, all on 127.0.0.1 ports.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    check_dashboard_metrics, metric_value, root, sim_config, sse_data, Server, TIER_METRIC_PREFIX,
};
use serde_json::{json, Value};

/// One node serving one sim device of `profile`, named `device`.
fn node(device: &str, profile: &str, device_extra: &str) -> Server {
    Server::start(&sim_config(&[(device, profile)], device_extra, ""))
}

/// A `[[endpoints]]` entry.
fn endpoint(id: &str, url: &str, engine: &str, extra: &str) -> String {
    format!("[[endpoints]]\nid = \"{id}\"\nurl = \"{url}\"\nengine = \"{engine}\"\n{extra}\n")
}

/// A pure tier (no local devices) over `endpoints`, with fast health checks.
fn tier_config(endpoints: &[String], tier_extra: &str) -> String {
    format!(
        "profiles_dir = {:?}\n[model]\nspec = \"llama-3.1-8b\"\n[tier]\nscrape_interval_ms = 100\n{tier_extra}\n{}",
        root().join("profiles").display().to_string(),
        endpoints.concat()
    )
}

/// The tier's `/admin/devices` entry for remote target `id`.
fn target<'a>(devices: &'a Value, id: &str) -> Option<&'a Value> {
    devices["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["id"] == id)
}

/// Waits until the tier sees nothing queued, running or in flight on any
/// target in `ids`: a node's load snapshot can still show a request that
/// has finished, and a routing assertion must not depend on when it catches up.
fn wait_idle(tier: &Server, ids: &[&str]) {
    tier.wait_devices(Duration::from_secs(20), |v| {
        ids.iter().all(|id| {
            target(v, id).is_some_and(|t| {
                let load = &t["load"];
                load["waiting"] == 0
                    && load["running"] == 0
                    && load["queued_prefill_tokens"] == 0
                    && t["inflight"]["seqs"] == 0
            })
        })
    });
}

/// Waits until the tier sees every target in `ids` healthy.
fn wait_healthy(tier: &Server, ids: &[&str]) {
    tier.wait_devices(Duration::from_secs(20), |v| {
        ids.iter()
            .all(|id| target(v, id).is_some_and(|t| t["healthy"] == true))
    });
}

/// Requests the tier has sent to target `id` that ended `outcome`.
fn sent(tier: &Server, id: &str, outcome: &str) -> f64 {
    metric_value(
        tier,
        "switchyard_endpoint_requests_total",
        &format!("endpoint=\"{id}\",outcome=\"{outcome}\""),
    )
}

/// A prompt of `n` token ids that no other test prompt shares a block with.
fn prompt(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| 1000 + (i.wrapping_mul(7919) ^ salt.wrapping_mul(104_729)) % 30_000)
        .collect()
}

/// Reads one SSE completion stream to its end; returns its text, the
/// finish reason of its last choice, completion tokens from usage, and
/// whether it ended with `[DONE]` and whether it carried an error event.
struct StreamEnd {
    finish: Option<String>,
    completion_tokens: Option<u64>,
    done: bool,
    error: Option<String>,
}

fn read_stream(body: &str) -> StreamEnd {
    let mut end = StreamEnd {
        finish: None,
        completion_tokens: None,
        done: false,
        error: None,
    };
    for data in sse_data(body) {
        if data == "[DONE]" {
            end.done = true;
            continue;
        }
        let v: Value = serde_json::from_str(&data).expect("SSE JSON");
        if let Some(e) = v.get("error") {
            end.error = Some(e.to_string());
        }
        if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
            end.finish = Some(f.to_string());
        }
        if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
            end.completion_tokens = Some(n);
        }
    }
    end
}

fn stream_completion(tier: &Server, prompt: &[u32], max_tokens: u32) -> Result<String, String> {
    let body = json!({
        "model": "llama-3.1-8b", "prompt": prompt, "max_tokens": max_tokens,
        "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true},
    });
    match ureq::post(&tier.url("/v1/completions"))
        .timeout(Duration::from_secs(120))
        .send_json(body)
    {
        Ok(r) => r.into_string().map_err(|e| format!("body: {e}")),
        Err(ureq::Error::Status(code, r)) => {
            Err(format!("{code}: {}", r.into_string().unwrap_or_default()))
        }
        Err(e) => Err(format!("transport: {e}")),
    }
}

#[test]
fn three_nodes_behind_a_tier_serve_each_shape_where_admin_route_says() {
    let nodes = [
        node("h100", "h100-sxm", ""),
        node("a100", "a100-80g", ""),
        node("l4", "l4", ""),
    ];
    let eps: Vec<String> = ["n1", "n2", "n3"]
        .iter()
        .zip(&nodes)
        .map(|(id, n)| endpoint(id, &n.base, "switchyard", ""))
        .collect();
    let tier = Server::start(&tier_config(&eps, ""));
    wait_healthy(&tier, &["n1/h100", "n2/a100", "n3/l4"]);

    // The tier serves the model the nodes serve.
    let models = tier.get_json("/v1/models");
    assert_eq!(models["data"][0]["id"], "llama-3.1-8b", "{models}");

    // Devices come from the nodes, with their own profiles.
    let devices = tier.get_json("/admin/devices");
    assert_eq!(
        target(&devices, "n3/l4").expect("l4")["profile"],
        "l4",
        "{devices}"
    );

    let shapes = [(32usize, 8u32), (2000, 16), (64, 200), (6000, 4)];
    for (k, &(prompt_tokens, max_tokens)) in shapes.iter().enumerate() {
        let route = tier.get_json(&format!(
            "/admin/route?prompt_tokens={prompt_tokens}&max_tokens={max_tokens}"
        ));
        let chosen = route["device"].as_str().expect("route device").to_string();
        for stream in [false, true] {
            let before = sent(&tier, &chosen, "ok");
            let p = prompt(prompt_tokens, (k * 2 + stream as usize) as u32);
            if stream {
                let body = stream_completion(&tier, &p, max_tokens).expect("stream");
                let end = read_stream(&body);
                assert!(end.done && end.error.is_none(), "{body}");
                assert_eq!(end.finish.as_deref(), Some("length"));
                assert_eq!(end.completion_tokens, Some(u64::from(max_tokens)));
            } else {
                let (code, body) = tier.post(
                    "/v1/completions",
                    &json!({"model": "llama-3.1-8b", "prompt": p, "max_tokens": max_tokens, "ignore_eos": true}),
                );
                assert_eq!(code, 200, "{body}");
                let v: Value = serde_json::from_str(&body).expect("JSON");
                assert_eq!(v["usage"]["prompt_tokens"], prompt_tokens as u64, "{v}");
                assert_eq!(
                    v["usage"]["completion_tokens"],
                    u64::from(max_tokens),
                    "{v}"
                );
                assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
            }
            assert_eq!(
                sent(&tier, &chosen, "ok"),
                before + 1.0,
                "shape {prompt_tokens}/{max_tokens} (stream {stream}) did not land on {chosen}: {route}"
            );
        }
    }

    // Chat completions pass through too, with the OpenAI shape.
    let (code, body) = tier.post(
        "/v1/chat/completions",
        &json!({"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5}),
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");

    // The dashboard's tier panels query metrics the tier exports.
    let exposition = ureq::get(&tier.url("/metrics"))
        .call()
        .expect("GET /metrics")
        .into_string()
        .expect("metrics text");
    let checked = check_dashboard_metrics(TIER_METRIC_PREFIX, &exposition);
    assert!(checked >= 3, "the dashboard has tier panels");
}

#[test]
fn a_node_killed_under_load_loses_no_stream() {
    // Sim devices stretched to real time x4 so the streams are mid-flight at the kill.
    let mut nodes = vec![
        node("gpu", "h100-sxm", "time_scale = 4.0"),
        node("gpu", "h100-sxm", "time_scale = 4.0"),
        node("gpu", "h100-sxm", "time_scale = 4.0"),
    ];
    let eps: Vec<String> = ["n1", "n2", "n3"]
        .iter()
        .zip(&nodes)
        .map(|(id, n)| endpoint(id, &n.base, "switchyard", ""))
        .collect();
    let tier = Arc::new(Server::start(&tier_config(&eps, "")));
    wait_healthy(&tier, &["n1/gpu", "n2/gpu", "n3/gpu"]);

    const STREAMS: usize = 200;
    const MAX_TOKENS: u32 = 48;
    let results = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..STREAMS)
        .map(|i| {
            let tier = tier.clone();
            let results = results.clone();
            std::thread::spawn(move || {
                let r = stream_completion(&tier, &prompt(24, 10_000 + i as u32), MAX_TOKENS);
                results.lock().expect("results").push(r);
            })
        })
        .collect();
    // Kill the node that holds the most streams once they are all running.
    let deadline = Instant::now() + Duration::from_secs(30);
    let victim = loop {
        let v = tier.get_json("/admin/devices");
        let inflight: Vec<u64> = ["n1/gpu", "n2/gpu", "n3/gpu"]
            .iter()
            .map(|id| target(&v, id).map_or(0, |t| t["inflight"]["seqs"].as_u64().unwrap_or(0)))
            .collect();
        let total: u64 = inflight.iter().sum();
        if total >= STREAMS as u64 * 3 / 4 || Instant::now() > deadline {
            let (i, _) = inflight
                .iter()
                .enumerate()
                .max_by_key(|(_, n)| **n)
                .expect("three nodes");
            break i;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    nodes[victim].kill();
    for t in threads {
        t.join().expect("client thread");
    }
    let results = results.lock().expect("results");
    assert_eq!(results.len(), STREAMS);
    let mut completed = 0;
    for r in results.iter() {
        let body = r.as_ref().expect("every request is answered");
        let end = read_stream(body);
        assert!(end.done, "stream ended without [DONE]: {body}");
        match end.error {
            // A clean error event is allowed; a stream that just stops is not.
            Some(_) => {}
            None => {
                assert_eq!(end.finish.as_deref(), Some("length"), "{body}");
                assert_eq!(end.completion_tokens, Some(u64::from(MAX_TOKENS)), "{body}");
                completed += 1;
            }
        }
    }
    // Continuation on the surviving nodes finishes every stream.
    assert_eq!(completed, STREAMS, "streams completed after the kill");
    let victim_id = ["n1/gpu", "n2/gpu", "n3/gpu"][victim];
    assert!(
        sent(&tier, victim_id, "error") + sent(&tier, victim_id, "timeout") > 0.0,
        "the killed node's streams were counted as failed there"
    );
    // The dead node is out of rotation.
    tier.wait_devices(Duration::from_secs(10), |v| {
        target(v, victim_id).is_some_and(|t| t["healthy"] == false)
    });
}

/// A mock vLLM server (tests/python/mock_vllm.py).
struct MockVllm {
    child: Child,
    base: String,
    kv_events_port: Option<u16>,
}

impl MockVllm {
    fn start(args: &[&str]) -> MockVllm {
        let mut child = Command::new("python3")
            .arg(root().join("tests/python/mock_vllm.py"))
            .args([
                "--port",
                "0",
                "--model",
                "llama-3.1-8b",
                "--block-size",
                "16",
            ])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 tests/python/mock_vllm.py");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("mock's first line");
        let v: Value = serde_json::from_str(&line).expect("mock prints its ports");
        MockVllm {
            base: format!("http://127.0.0.1:{}", v["port"]),
            kv_events_port: v["kv_events_port"].as_u64().map(|p| p as u16),
            child,
        }
    }

    fn fail_mode(&self, mode: &str) {
        ureq::post(&format!("{}/mock/fail_mode", self.base))
            .send_json(json!({ "mode": mode }))
            .expect("set fail mode");
    }
}

impl Drop for MockVllm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn complete(tier: &Server, p: &[u32], max_tokens: u32) -> Value {
    let (code, body) = tier.post(
        "/v1/completions",
        &json!({"model": "llama-3.1-8b", "prompt": p, "max_tokens": max_tokens, "ignore_eos": true}),
    );
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

#[test]
fn a_failing_overloaded_or_hung_endpoint_is_routed_around() {
    // The mock vLLM is priced as an H100 and the node as an L4, so the
    // router prefers the mock while it is healthy.
    let backup = node("l4", "l4", "time_scale = 0.0");
    let vllm = MockVllm::start(&["--token-delay-ms", "1"]);
    let eps = [
        endpoint("vllm", &vllm.base, "vllm", "profile = \"h100-sxm\""),
        endpoint("backup", &backup.base, "switchyard", ""),
    ];
    let tier = Server::start(&tier_config(
        &eps,
        "breaker_failures = 2\nbreaker_open_ms = 500\nfirst_token_timeout_s = 1\noverload_backoff_ms = 500",
    ));
    wait_healthy(&tier, &["vllm", "backup/l4"]);
    let v = complete(&tier, &prompt(20, 1), 4);
    assert_eq!(v["usage"]["completion_tokens"], 4, "{v}");
    assert_eq!(
        sent(&tier, "vllm", "ok"),
        1.0,
        "the healthy mock is preferred"
    );

    for (k, mode) in ["500", "429", "hang"].into_iter().enumerate() {
        vllm.fail_mode(mode);
        let backup_before = sent(&tier, "backup/l4", "ok");
        for i in 0..4 {
            let v = complete(&tier, &prompt(20, 100 * (k as u32 + 1) + i), 4);
            assert_eq!(v["usage"]["completion_tokens"], 4, "mode {mode}: {v}");
        }
        assert_eq!(
            sent(&tier, "backup/l4", "ok"),
            backup_before + 4.0,
            "mode {mode}: every request was served by the backup"
        );
        let devices = tier.get_json("/admin/devices");
        let t = target(&devices, "vllm").expect("vllm target");
        match mode {
            "500" => assert_eq!(t["breaker"], "open", "{t}"),
            "429" => assert_eq!(t["backing_off"], true, "{t}"),
            _ => assert!(sent(&tier, "vllm", "timeout") >= 1.0, "{t}"),
        }
        // Recovery: after the breaker's open time and a passing probe, the mock is used again.
        vllm.fail_mode("none");
        let deadline = Instant::now() + Duration::from_secs(15);
        let ok_before = sent(&tier, "vllm", "ok");
        let mut salt = 0;
        while sent(&tier, "vllm", "ok") == ok_before {
            assert!(
                Instant::now() < deadline,
                "mode {mode}: the mock never came back"
            );
            std::thread::sleep(Duration::from_millis(200));
            salt += 1;
            complete(&tier, &prompt(20, 5000 + 100 * k as u32 + salt), 2);
        }
    }
    // 429s were retried elsewhere, never hammered: few attempts reached the mock.
    assert!(
        sent(&tier, "vllm", "overloaded") <= 3.0,
        "{}",
        sent(&tier, "vllm", "overloaded")
    );
}

#[test]
fn a_proxied_stream_keeps_its_upstream_chunking() {
    // Chunks of three tokens, a stream's chunks written in one go: the tier
    // reads several at once, and still sends one delta per upstream chunk
    // (merging them would make its chunk gaps incomparable with a byte relay's).
    let vllm = MockVllm::start(&["--tokens-per-chunk", "3", "--one-write"]);
    let eps = [endpoint(
        "vllm",
        &vllm.base,
        "vllm",
        "profile = \"h100-sxm\"",
    )];
    let tier = Server::start(&tier_config(&eps, ""));
    wait_healthy(&tier, &["vllm"]);
    for salt in 0..5 {
        let body = json!({
            "model": "llama-3.1-8b", "prompt": prompt(20, 900 + salt), "max_tokens": 10,
            "ignore_eos": true, "stream": true, "return_token_ids": true,
        });
        let text = ureq::post(&tier.url("/v1/completions"))
            .timeout(Duration::from_secs(30))
            .send_json(body)
            .expect("stream through the tier")
            .into_string()
            .expect("stream body");
        let chunks: Vec<usize> = sse_data(&text)
            .iter()
            .filter(|d| *d != "[DONE]")
            .filter_map(|d| {
                let v: Value = serde_json::from_str(d).expect("SSE JSON");
                v["choices"][0]["token_ids"].as_array().map(Vec::len)
            })
            .filter(|&n| n > 0)
            .collect();
        assert_eq!(chunks, [3, 3, 3, 1], "{text}");
    }
}

#[test]
fn a_node_whose_inventory_never_arrives_is_listed_with_its_error() {
    // A listener that never accepts: the tier's inventory request connects
    // and then times out, so the node never gets a device to route to.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_url = format!("http://{}", silent.local_addr().expect("addr"));
    let live = node("gpu", "l4", "time_scale = 0.0");
    let eps = [
        endpoint("live", &live.base, "switchyard", ""),
        endpoint("silent", &silent_url, "switchyard", ""),
    ];
    let tier = Server::start(&tier_config(&eps, "connect_timeout_ms = 200"));
    wait_healthy(&tier, &["live/gpu"]);
    tier.wait_devices(Duration::from_secs(20), |v| {
        target(v, "silent").is_some_and(|t| t["last_error"].is_string())
    });
    let devices = tier.get_json("/admin/devices");
    let t = target(&devices, "silent").expect("silent node listed");
    assert_eq!(t["awaiting_inventory"], true, "{t}");
    assert_eq!(t["healthy"], false, "{t}");
    assert_eq!(t["url"], silent_url.as_str(), "{t}");
    // Requests go to the node that answered.
    let v = complete(&tier, &prompt(20, 9), 3);
    assert_eq!(v["usage"]["completion_tokens"], 3, "{v}");
    assert_eq!(sent(&tier, "live/gpu", "ok"), 1.0);
}

#[test]
fn reload_adds_and_removes_endpoints_without_dropping_streams() {
    let a = node("gpu", "h100-sxm", "time_scale = 4.0");
    let b = node("gpu", "a100-80g", "time_scale = 0.0");
    let tier = Arc::new(Server::start(&tier_config(
        &[endpoint("a", &a.base, "switchyard", "")],
        "",
    )));
    wait_healthy(&tier, &["a/gpu"]);
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let tier = tier.clone();
            std::thread::spawn(move || stream_completion(&tier, &prompt(24, 20_000 + i), 64))
        })
        .collect();
    tier.wait_devices(Duration::from_secs(20), |v| {
        target(v, "a/gpu").is_some_and(|t| t["inflight"]["seqs"].as_u64() >= Some(8))
    });
    std::fs::write(
        tier.config_path(),
        tier_config(&[endpoint("b", &b.base, "switchyard", "")], ""),
    )
    .expect("rewrite config");
    let (code, body) = tier.post("/admin/reload", &json!({}));
    assert_eq!(code, 200, "{body}");
    wait_healthy(&tier, &["b/gpu"]);
    let devices = tier.get_json("/admin/devices");
    assert!(
        target(&devices, "a/gpu").is_none(),
        "a was removed: {devices}"
    );
    // New work goes to b while a's streams finish there.
    let v = complete(&tier, &prompt(16, 20_999), 4);
    assert_eq!(v["usage"]["completion_tokens"], 4);
    assert_eq!(sent(&tier, "b/gpu", "ok"), 1.0);
    for t in threads {
        let body = t.join().expect("client").expect("answered");
        let end = read_stream(&body);
        assert!(end.done && end.error.is_none(), "{body}");
        assert_eq!(end.completion_tokens, Some(64), "{body}");
    }
    assert_eq!(
        sent(&tier, "a/gpu", "ok"),
        16.0,
        "in-flight streams finished on a"
    );
}

#[test]
fn a_prefix_cached_on_one_node_draws_its_requests_there() {
    let n1 = node("gpu", "h100-sxm", "time_scale = 0.0");
    let n2 = node("gpu", "h100-sxm", "time_scale = 0.0");
    let tier = Server::start(&tier_config(
        &[
            endpoint("n1", &n1.base, "switchyard", ""),
            endpoint("n2", &n2.base, "switchyard", ""),
        ],
        "",
    ));
    wait_healthy(&tier, &["n1/gpu", "n2/gpu"]);
    // A long shared prefix lands on n2 directly, outside the tier: only
    // n2's KV events can tell the tier about it.
    let shared = prompt(4096, 77);
    let (code, body) = n2.post(
        "/v1/completions",
        &json!({"model": "llama-3.1-8b", "prompt": shared, "max_tokens": 1}),
    );
    assert_eq!(code, 200, "{body}");
    tier.wait_devices(Duration::from_secs(10), |v| {
        target(v, "n2/gpu").is_some_and(|t| t["cached_prefix_blocks"].as_u64() >= Some(255))
    });
    for i in 0..6u32 {
        wait_idle(&tier, &["n1/gpu", "n2/gpu"]);
        let mut p = shared.clone();
        p.extend(prompt(32, 900 + i));
        complete(&tier, &p, 2);
    }
    assert_eq!(
        sent(&tier, "n2/gpu", "ok"),
        6.0,
        "the cached prefix drew the requests: {}",
        tier.get_json("/admin/devices")
    );
    assert_eq!(
        metric_value(
            &n2,
            "switchyard_prefix_cache_hits_tokens_total",
            "device=\"gpu\""
        ) as u64,
        6 * 4096,
        "and n2 reused its cache for each"
    );
    // A prompt sharing nothing is routed on load and price alone.
    let route = tier.get_json("/admin/route?prompt_tokens=4096&max_tokens=2");
    assert_eq!(route["scores"][0]["cached_prefix_tokens"], 0, "{route}");
}

#[test]
fn vllm_kv_events_feed_the_tier_prefix_index() {
    for layout in ["map", "array"] {
        let vllm = MockVllm::start(&["--kv-events-port", "0", "--kv-layout", layout]);
        let events = format!(
            "tcp://127.0.0.1:{}",
            vllm.kv_events_port.expect("events port")
        );
        let other = MockVllm::start(&[]);
        let eps = [
            endpoint("plain", &other.base, "vllm", "profile = \"h100-sxm\""),
            endpoint(
                "evented",
                &vllm.base,
                "vllm",
                &format!("profile = \"h100-sxm\"\nkv_events = \"{events}\""),
            ),
        ];
        let tier = Server::start(&tier_config(&eps, ""));
        wait_healthy(&tier, &["plain", "evented"]);
        let devices = tier.get_json("/admin/devices");
        assert_eq!(
            target(&devices, "evented").expect("evented")["prefix_source"],
            "events"
        );
        assert_eq!(
            target(&devices, "plain").expect("plain")["prefix_source"],
            "routing_history"
        );
        // The subscriber connects in the background and PUB/SUB drops what
        // was published before: a fresh prefix each time until one is indexed
        // (a block whose parent the index never saw cannot be placed).
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut salt = 0;
        let shared = loop {
            let shared = prompt(1024, 31 + salt);
            salt += 1;
            let (code, body) = ureq::post(&format!("{}/v1/completions", vllm.base))
                .send_json(json!({"model": "llama-3.1-8b", "prompt": shared, "max_tokens": 1}))
                .map(|r| (r.status(), r.into_string().unwrap_or_default()))
                .expect("direct request");
            assert_eq!(code, 200, "{body}");
            std::thread::sleep(Duration::from_millis(100));
            let v = tier.get_json("/admin/devices");
            if target(&v, "evented").is_some_and(|t| t["cached_prefix_blocks"].as_u64() >= Some(64))
            {
                break shared;
            }
            assert!(
                Instant::now() < deadline,
                "layout {layout}: no KV events indexed: {v}"
            );
        };
        let mut p = shared.clone();
        p.extend(prompt(40, 7777));
        complete(&tier, &p, 2);
        assert_eq!(
            sent(&tier, "evented", "ok"),
            1.0,
            "layout {layout}: the cached prefix drew the request"
        );
        // AllBlocksCleared empties the index.
        ureq::post(&format!("{}/reset_prefix_cache", vllm.base))
            .send_json(json!({}))
            .expect("reset");
        tier.wait_devices(Duration::from_secs(10), |v| {
            target(v, "evented").is_some_and(|t| t["cached_prefix_blocks"] == 0)
        });
    }
}

#[test]
fn a_dns_endpoint_serves_from_the_addresses_its_name_resolves_to() {
    let n = node("gpu", "h100-sxm", "time_scale = 0.0");
    let port = n.addr().rsplit(':').next().expect("port").to_string();
    let tier = Server::start(&tier_config(
        &[endpoint(
            "pool",
            &format!("http://localhost:{port}"),
            "switchyard",
            "discovery = \"dns\"",
        )],
        "dns_refresh_s = 1",
    ));
    // `localhost` may also resolve to ::1, where nothing listens: that server stays unhealthy.
    let id = format!("pool/127.0.0.1:{port}/gpu");
    wait_healthy(&tier, &[id.as_str()]);
    let v = complete(&tier, &prompt(16, 4242), 3);
    assert_eq!(v["usage"]["completion_tokens"], 3, "{v}");
    assert_eq!(sent(&tier, &id, "ok"), 1.0);
}
