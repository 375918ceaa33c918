//! The autoscaling signal end to end: a tier over a sim-device node plans
//! the pool's desired replicas from the arrivals it routes; a step in the
//! live arrival rate moves them to what offline `switchyard plan` says for
//! the new rate (± one replica).

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    check_dashboard_metrics, metric_value, root, sim_config, Server, AUTOSCALE_METRIC_PREFIX,
};
use serde_json::{json, Value};

const PROMPT: usize = 1024;
const OUTPUT: u32 = 128;
const SLO: &str = "ttft_ms=2000,tpot_ms=100,percentile=95";

/// Sends `rate` requests per second for `secs` seconds, each on its own thread.
fn offer(tier: &Arc<Server>, rate: f64, secs: f64, salt: u32) -> Vec<std::thread::JoinHandle<()>> {
    let start = Instant::now();
    let n = (rate * secs) as u32;
    (0..n)
        .map(|i| {
            let at = start + Duration::from_secs_f64(f64::from(i) / rate);
            let tier = tier.clone();
            std::thread::spawn(move || {
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
                let prompt: Vec<u32> = (0..PROMPT as u32)
                    .map(|k| 1000 + (k * 7919 + (salt + i) * 104_729) % 30_000)
                    .collect();
                let (code, body) = tier.post(
                    "/v1/completions",
                    &json!({"model": "llama-3.1-8b", "prompt": prompt, "max_tokens": OUTPUT, "ignore_eos": true}),
                );
                assert_eq!(code, 200, "{body}");
            })
        })
        .collect()
}

/// The plan once it reflects a rate within 15 % of `rate`.
fn plan_at(tier: &Server, rate: f64, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = ureq::get(&tier.url("/admin/plan")).call() {
            let v: Value = r.into_json().expect("plan JSON");
            if let Some(r) = v["rate"].as_f64() {
                if (r - rate).abs() <= 0.15 * rate && v["error"].is_null() {
                    return v;
                }
            }
        }
        assert!(Instant::now() < deadline, "no plan at {rate} req/s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `switchyard plan`'s L4 count for the same shape at `rate`.
fn offline_plan(rate: f64, out: &std::path::Path) -> u32 {
    let status = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["plan", "--workload"])
        .arg(format!("fixed:prompt={PROMPT},output={OUTPUT}"))
        .args(["--rate", &rate.to_string(), "--slo", SLO, "--devices", "l4"])
        .args([
            "--model",
            "llama-3.1-8b",
            "--requests",
            "1500",
            "--quiet",
            "--catalog",
        ])
        .arg(root().join("profiles/devices"))
        .arg("--out")
        .arg(out)
        .status()
        .expect("switchyard plan");
    assert!(status.success());
    let plan: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("plan.json")).expect("plan.json"))
            .expect("plan JSON");
    plan["plan"]["chosen"]["fleet"][0][1]
        .as_u64()
        .expect("an L4 count") as u32
}

#[test]
fn a_step_in_arrival_rate_moves_the_desired_replicas_to_the_offline_plan() {
    let node = Server::start(&sim_config(&[("gpu", "l4")], "time_scale = 0.0", ""));
    let config = format!(
        "profiles_dir = {:?}\n[model]\nspec = \"llama-3.1-8b\"\n[router.slo]\nttft_ms = 2000\ntpot_ms = 100\npercentile = 95\n\
         [tier]\nscrape_interval_ms = 100\n[autoscale]\nenabled = true\nwindow_s = 4\ninterval_s = 1\nsimulated_requests = 600\n\
         [[endpoints]]\nid = \"l4-pool\"\nurl = \"{}\"\nengine = \"switchyard\"\n",
        root().join("profiles").display().to_string(),
        node.base
    );
    let tier = Arc::new(Server::start(&config));
    tier.wait_devices(Duration::from_secs(20), |v| {
        v["endpoints"][0]["healthy"] == true
    });
    let low_rate = 2.0;
    let high_rate = 12.0;
    let low = offer(&tier, low_rate, 9.0, 0);
    std::thread::sleep(Duration::from_secs(5));
    let p_low = plan_at(&tier, low_rate, Duration::from_secs(15));
    for t in low {
        t.join().expect("sender");
    }
    let high = offer(&tier, high_rate, 9.0, 1_000);
    std::thread::sleep(Duration::from_secs(5));
    let p_high = plan_at(&tier, high_rate, Duration::from_secs(15));
    // Read while the high rate still runs (the plan follows the window down afterwards).
    let gauge = metric_value(
        &tier,
        "switchyard_pool_desired_replicas",
        "pool=\"l4-pool\"",
    ) as u32;
    let exposition = ureq::get(&tier.url("/metrics"))
        .call()
        .expect("GET /metrics")
        .into_string()
        .expect("metrics text");
    assert!(
        check_dashboard_metrics(AUTOSCALE_METRIC_PREFIX, &exposition) >= 1,
        "the dashboard has an autoscaling panel"
    );
    for t in high {
        t.join().expect("sender");
    }
    let desired = |p: &Value| p["pools"][0]["desired_replicas"].as_u64().expect("desired") as u32;
    let (d_low, d_high) = (desired(&p_low), desired(&p_high));
    assert_eq!(p_high["pools"][0]["pool"], "l4-pool");
    assert_eq!(
        p_high["pools"][0]["profile"], "l4",
        "the node's profile prices the pool"
    );
    let scratch = tier.dir.join("offline");
    let offline_low = offline_plan(low_rate, &scratch.join("low"));
    let offline_high = offline_plan(high_rate, &scratch.join("high"));
    eprintln!(
        "desired replicas: {low_rate} req/s live {d_low} offline {offline_low}; {high_rate} req/s live {d_high} offline {offline_high}"
    );
    assert!(
        d_low.abs_diff(offline_low) <= 1,
        "at {low_rate} req/s: live {d_low}, offline {offline_low}: {p_low}"
    );
    assert!(
        d_high.abs_diff(offline_high) <= 1,
        "at {high_rate} req/s: live {d_high}, offline {offline_high}: {p_high}"
    );
    assert!(
        d_high > d_low + 1,
        "the step moved the signal: {d_low} -> {d_high}"
    );
    assert!(
        gauge.abs_diff(d_high) <= 1,
        "the gauge shows the plan: {gauge} vs {d_high}"
    );
}
