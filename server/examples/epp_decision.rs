//! Endpoint-picker decision latency: what the ext_proc handler does per
//! request (parse the OpenAI body, tokenize, price every endpoint, order
//! the fallbacks, take the in-flight accounting), over 16 and 128 vLLM-like
//! endpoints of mixed profiles answering `/health` and `/metrics` in-process.
//!
//! `cargo run --release -p switchyard-server --example epp_decision [-- REQUESTS]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_server::epp::pick::{pick, RequestKind};
use switchyard_server::{Config, LiveFleet};

const PROFILES: [&str; 6] = ["h100-sxm", "h200", "mi300x", "a100-80g", "l40s", "l4"];

fn main() {
    let requests: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for endpoints in [16usize, 128] {
        runtime.block_on(bench(endpoints, requests));
    }
}

async fn bench(endpoints: usize, requests: usize) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut config = format!(
        "profiles_dir = {:?}\n[model]\nspec = \"llama-3.1-8b\"\n[server]\nmax_pending_requests = 1000000\n[tier]\nscrape_interval_ms = 200\n",
        root.join("profiles").display().to_string()
    );
    let mut listeners = Vec::new();
    for i in 0..endpoints {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        config.push_str(&format!(
            "[[endpoints]]\nid = \"e{i}\"\nurl = \"http://127.0.0.1:{port}\"\nengine = \"vllm\"\nprofile = \"{}\"\n",
            PROFILES[i % PROFILES.len()]
        ));
        listeners.push(l);
    }
    let mut servers = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let running = i % 7;
        let app = axum::Router::new()
            .route("/health", axum::routing::get(|| async { "" }))
            .route(
                "/metrics",
                axum::routing::get(move || async move {
                    format!(
                        "vllm:num_requests_running{{model_name=\"m\"}} {running}\nvllm:num_requests_waiting{{model_name=\"m\"}} 0\nvllm:kv_cache_usage_perc{{model_name=\"m\"}} 0.3\n"
                    )
                }),
            );
        servers.push(tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        }));
    }
    let config = Config::from_toml(&root.join("bench.toml"), &config).expect("config");
    let fleet: Arc<LiveFleet> = LiveFleet::start(&config).expect("fleet");
    let deadline = Instant::now() + Duration::from_secs(30);
    while fleet
        .remote_targets()
        .iter()
        .filter(|t| t.accepts(Instant::now()))
        .count()
        < endpoints
    {
        assert!(Instant::now() < deadline, "endpoints never became healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Chat bodies of a few shapes, a realistic mix of prompt lengths.
    let bodies: Vec<Vec<u8>> = [40usize, 400, 2000]
        .iter()
        .map(|words| {
            let text = "the quick brown fox jumps over the lazy dog ".repeat(words / 9 + 1);
            serde_json::to_vec(&serde_json::json!({
                "model": "llama-3.1-8b",
                "messages": [{"role": "user", "content": text}],
                "max_tokens": 128,
            }))
            .expect("body")
        })
        .collect();
    let mut times = Vec::with_capacity(requests);
    for i in 0..requests {
        let body = &bodies[i % bodies.len()];
        let t0 = Instant::now();
        let p = pick(&fleet, RequestKind::Chat, body, None).unwrap_or_else(|_| panic!("pick"));
        times.push(t0.elapsed());
        std::hint::black_box(&p.destinations);
        // The response ends at once: the accounting is released, as a short request's would be.
        drop(p);
    }
    times.sort_unstable();
    let q = |f: f64| times[((times.len() - 1) as f64 * f) as usize].as_secs_f64() * 1e6;
    println!(
        "{endpoints} endpoints: decision p50 {:.1} us, p99 {:.1} us ({requests} requests)",
        q(0.5),
        q(0.99)
    );
    fleet.shutdown();
    for s in servers {
        s.abort();
    }
}
