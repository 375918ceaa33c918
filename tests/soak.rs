//! Overload soak: ten times the fleet's SLO capacity offered to a server of
//! a sim L4 in real time (`time_scale = 1`) with SLO-aware shedding, then
//! a wave of clients that disconnect mid-stream.
//!
//! - The SLO capacity is the highest Poisson rate at which the simulator
//!   (the same engine and router) keeps p99 TTFT and p99 TPOT within the
//!   SLO, found by bisection with `switchyard loadgen --target sim:`.
//! - `switchyard loadgen` offers 10× that rate, open loop, for
//!   `SWITCHYARD_SOAK_SECS` (30 by default; the full run is 600). Every
//!   request ends served in full or refused with 429; none is lost, cut
//!   short or hung; the served keep p99 TTFT within the target; refusals
//!   carry `Retry-After`.
//! - The server's resident memory is sampled every second
//!   (`rss.csv` and `rss.svg` under `SWITCHYARD_SOAK_OUT`, default
//!   `target/soak`) and must stay bounded.
//! - Then `SWITCHYARD_SOAK_DISCONNECTS` clients (300 by default; the full
//!   run is 5,000) each open a stream, read its first chunk and hang up:
//!   KV usage returns to zero in `/admin/devices` and in `/metrics`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const SLO_TTFT_MS: f64 = 1000.0;
const SLO_TPOT_MS: f64 = 150.0;
const WORKLOAD: &str = "fixed:prompt=512,output=64";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config() -> String {
    let root = common::root();
    format!(
        "profiles_dir = {:?}\n[model]\nspec = \"llama-3.1-8b\"\n\
         [server]\nshed_over_slo = true\nmax_pending_requests = 100000\n\
         [router.slo]\nttft_ms = {SLO_TTFT_MS}\ntpot_ms = {SLO_TPOT_MS}\npercentile = 99\n\
         [[devices]]\nid = \"l4-0\"\nbackend = \"sim\"\nprofile = \"l4\"\ntime_scale = 1.0\n",
        root.join("profiles").display().to_string()
    )
}

/// Runs `switchyard loadgen` and returns its first run's summary.
fn loadgen(args: &[&str], out: &Path) -> Value {
    let status = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("loadgen")
        .args(args)
        .args(["--workload", WORKLOAD, "--quiet", "--out"])
        .arg(out)
        .status()
        .expect("switchyard loadgen runs");
    assert!(status.success(), "loadgen {args:?} failed");
    let results: Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).expect("results.json"))
            .expect("results JSON");
    results["runs"][0].clone()
}

fn p99_ms(run: &Value, dist: &str) -> f64 {
    run[dist]["p99"].as_f64().unwrap_or(f64::INFINITY) * 1e3
}

/// The highest rate whose simulated p99 TTFT and TPOT meet the SLO.
fn slo_capacity(config: &Path, out: &Path) -> f64 {
    let meets = |rate: f64| {
        let r = loadgen(
            &[
                "--target",
                &format!("sim:{}", config.display()),
                "--rate",
                &format!("{rate:.3}"),
                "--requests",
                "400",
            ],
            &out.join(format!("capacity-{rate:.3}")),
        );
        p99_ms(&r, "ttft_s") <= SLO_TTFT_MS && p99_ms(&r, "tpot_s") <= SLO_TPOT_MS
    };
    let (mut lo, mut hi) = (0.25, 64.0);
    assert!(meets(lo), "the fleet cannot meet the SLO at {lo} req/s");
    assert!(!meets(hi), "the fleet meets the SLO even at {hi} req/s");
    // Geometric bisection: the bracket's ratio ends within 9 %.
    for _ in 0..6 {
        let mid = (lo * hi).sqrt();
        if meets(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Resident set size of `pid`, KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Writes the RSS samples as CSV and as an SVG line plot.
fn write_rss(samples: &[(f64, u64)], out: &Path) {
    let mut csv = String::from("seconds,rss_kib\n");
    for (t, kib) in samples {
        csv.push_str(&format!("{t:.1},{kib}\n"));
    }
    std::fs::write(out.join("rss.csv"), csv).expect("rss.csv");
    let (w, h, pad) = (800.0, 300.0, 50.0);
    let t_max = samples.last().map_or(1.0, |s| s.0).max(1.0);
    let mib = |k: u64| k as f64 / 1024.0;
    let y_max = samples.iter().map(|s| mib(s.1)).fold(1.0, f64::max) * 1.1;
    let points: Vec<String> = samples
        .iter()
        .map(|(t, k)| {
            let x = pad + t / t_max * (w - 2.0 * pad);
            let y = h - pad - mib(*k) / y_max * (h - 2.0 * pad);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <line x1=\"{pad}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"black\"/>\n\
         <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{y0}\" stroke=\"black\"/>\n\
         <text x=\"{pad}\" y=\"20\">switchyard serve resident memory under 10x overload (MiB; max {y_max:.1})</text>\n\
         <text x=\"{x1}\" y=\"{yl}\" text-anchor=\"end\">{t_max:.0} s</text>\n\
         <text x=\"5\" y=\"{pad}\">{y_max:.0}</text>\n\
         <text x=\"5\" y=\"{y0}\">0</text>\n\
         <polyline fill=\"none\" stroke=\"steelblue\" stroke-width=\"1.5\" points=\"{}\"/>\n</svg>\n",
        points.join(" "),
        y0 = h - pad,
        x1 = w - pad,
        yl = h - pad + 20.0,
    );
    std::fs::write(out.join("rss.svg"), svg).expect("rss.svg");
}

/// Opens a stream of `max_tokens` and reads until its first chunk; `None`
/// when the server refuses it (429) instead.
fn open_stream(addr: &str) -> Option<TcpStream> {
    let body = json!({"prompt": "tell me a long story", "max_tokens": 2000, "stream": true, "ignore_eos": true})
        .to_string();
    let mut tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        tcp,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut buf = [0u8; 4096];
    let mut seen = String::new();
    while !seen.contains("data: ") {
        let n = tcp.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        if seen.starts_with("HTTP/1.1 429") {
            assert!(
                seen.to_ascii_lowercase().contains("retry-after:"),
                "429 without Retry-After: {seen}"
            );
            return None;
        }
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    Some(tcp)
}

#[test]
fn overload_is_shed_with_429_and_served_requests_keep_the_slo() {
    let secs = env_u64("SWITCHYARD_SOAK_SECS", 30);
    let disconnects = env_u64("SWITCHYARD_SOAK_DISCONNECTS", 300);
    let out = std::env::var("SWITCHYARD_SOAK_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| common::root().join("target/soak"));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).expect("soak output dir");
    let config_path = out.join("soak.toml");
    std::fs::write(&config_path, config()).expect("config");

    let capacity = slo_capacity(&config_path, &out);
    let rate = 10.0 * capacity;
    eprintln!("soak: SLO capacity {capacity:.2} req/s; offering {rate:.2} req/s for {secs} s");

    let server = common::Server::start(&config());
    let pid = server.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let (stop, samples) = (stop.clone(), samples.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    if let Ok(mut s) = samples.lock() {
                        s.push((start.elapsed().as_secs_f64(), kib));
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };

    // A prober beside the load: its refusals must carry Retry-After
    // (`open_stream` checks), and some of them must be refusals.
    let probes = {
        let (stop, addr) = (stop.clone(), server.addr());
        std::thread::spawn(move || {
            let (mut served, mut refused) = (0u32, 0u32);
            while !stop.load(Ordering::Relaxed) {
                match open_stream(&addr) {
                    Some(_) => served += 1,
                    None => refused += 1,
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            (served, refused)
        })
    };
    let requests = ((rate * secs as f64).ceil() as u64).max(1);
    let run = loadgen(
        &[
            "--target",
            &server.base,
            "--rate",
            &format!("{rate:.3}"),
            "--requests",
            &requests.to_string(),
            "--max-inflight",
            "4096",
            "--timeout",
            "120",
            "--token-ids",
        ],
        &out.join("overload"),
    );
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let (probes_served, probes_refused) = probes.join().unwrap_or((0, 0));
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    write_rss(&samples, &out);

    let outcomes = &run["outcomes"];
    let count = |k: &str| outcomes[k].as_u64().unwrap_or(0);
    let (ok, refused) = (count("ok"), count("http_error"));
    eprintln!(
        "soak: {requests} offered, {ok} served, {refused} refused, outcomes {outcomes}; served TTFT p50 {:.0} ms p99 {:.0} ms, TPOT p99 {:.1} ms; probes: {probes_served} served, {probes_refused} refused with Retry-After",
        run["ttft_s"]["p50"].as_f64().unwrap_or(0.0) * 1e3,
        p99_ms(&run, "ttft_s"),
        p99_ms(&run, "tpot_s"),
    );
    assert!(
        probes_refused > 0,
        "no probe was refused during the overload"
    );
    // Nothing lost, cut short or hung: each request served in full or refused.
    assert_eq!(ok + refused, requests, "outcomes {outcomes}");
    let csv = std::fs::read_to_string(out.join("overload/requests.csv")).expect("requests.csv");
    let header: Vec<&str> = csv.lines().next().unwrap_or_default().split(',').collect();
    let status_col = header
        .iter()
        .position(|h| *h == "status")
        .expect("status column");
    let non_429 = csv
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(status_col))
        .filter(|s| !s.is_empty() && *s != "429")
        .count();
    assert_eq!(non_429, 0, "every refusal is a 429");
    // The overload was real, and the served kept the TTFT target.
    assert!(
        refused > ok,
        "10x the capacity should mostly be refused: {outcomes}"
    );
    assert!(ok > 0, "some requests must be served: {outcomes}");
    assert!(
        p99_ms(&run, "ttft_s") <= SLO_TTFT_MS,
        "served p99 TTFT {} ms",
        p99_ms(&run, "ttft_s")
    );
    // Memory stays bounded: the last third of the run holds no more than
    // the first third's peak plus a margin.
    let third = samples.len() / 3;
    if third > 0 {
        let early = samples[..third].iter().map(|s| s.1).max().unwrap_or(0);
        let late = samples[2 * third..].iter().map(|s| s.1).max().unwrap_or(0);
        assert!(
            late <= early + early / 4 + 16 * 1024,
            "RSS grew from {early} KiB to {late} KiB"
        );
    }

    // Clients that hang up mid-stream free everything they held: 16 at a
    // time, each opening a stream, reading its first chunk and hanging up
    // (a refusal is retried), until `disconnects` have.
    let deadline = Instant::now() + Duration::from_secs(secs.max(60) * 2);
    let hung_up = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (hung_up, addr) = (hung_up.clone(), server.addr());
            std::thread::spawn(move || {
                while hung_up.load(Ordering::Relaxed) < disconnects && Instant::now() < deadline {
                    if let Some(stream) = open_stream(&addr) {
                        hung_up.fetch_add(1, Ordering::Relaxed);
                        drop(stream);
                    } else {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
        .collect();
    for c in clients {
        let _ = c.join();
    }
    let hung_up = hung_up.load(Ordering::Relaxed);
    assert!(hung_up >= disconnects, "only {hung_up} streams opened");
    server.wait_devices(Duration::from_secs(30), |v| {
        v["devices"].as_array().is_some_and(|d| {
            d.iter().all(|d| {
                d["load"]["running"] == 0
                    && d["load"]["waiting"] == 0
                    && d["load"]["free_blocks"] == d["load"]["total_blocks"]
            })
        })
    });
    let labels = "device=\"l4-0\"";
    assert_eq!(
        common::metric_value(&server, "switchyard_kv_cache_usage_ratio", labels),
        0.0
    );
    assert_eq!(
        common::metric_value(&server, "switchyard_num_requests_running", labels),
        0.0
    );
    eprintln!("soak: {hung_up} clients hung up mid-stream; KV usage back to 0");
}
