//! Observability end to end: every Grafana panel queries metrics the server
//! really exports, and a real Prometheus server scrapes it and answers a
//! PromQL TTFT quantile (Debian's `prometheus`, installed by scripts/setup.sh).

mod common;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    metric_names, root, sim_config, Server, AUTOSCALE_METRIC_PREFIX, PICKER_METRIC_PREFIX,
    TIER_METRIC_PREFIX,
};
use serde_json::{json, Value};

fn server_with_traffic() -> Server {
    let s = Server::start(&sim_config(
        &[("h100-0", "h100-sxm"), ("l4-0", "l4")],
        "time_scale = 0.0",
        "",
    ));
    for i in 0..20 {
        let (code, body) = s.post(
            "/v1/completions",
            &json!({"prompt": format!("warm up request {i}"), "max_tokens": 5, "stream": i % 2 == 0}),
        );
        assert_eq!(code, 200, "{body}");
    }
    s
}

/// Metric names a PromQL expression reads.
#[test]
fn every_grafana_panel_queries_exported_metrics() {
    let s = server_with_traffic();
    let exposition = ureq::get(&s.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let exported: BTreeSet<&str> = exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let text = std::fs::read_to_string(root().join("deploy/grafana/switchyard.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).unwrap();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    for panel in panels {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(!names.is_empty(), "no metric in {expr}");
            // The tier's, the picker's and the autoscaler's metrics exist only
            // there: tests/fleet_tier.rs, tests/epp_envoy.rs and tests/autoscale.rs check them.
            let elsewhere = [
                TIER_METRIC_PREFIX,
                PICKER_METRIC_PREFIX,
                AUTOSCALE_METRIC_PREFIX,
            ];
            for n in names
                .into_iter()
                .filter(|n| !elsewhere.iter().any(|p| n.starts_with(p)))
            {
                assert!(
                    exported.contains(n.as_str()),
                    "panel {} queries {n}, not exported:\n{exposition}",
                    panel["title"]
                );
            }
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn prometheus_scrapes_and_answers_ttft_quantile() {
    let s = server_with_traffic();
    let dir = s.dir.join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: switchyard\n    static_configs:\n      - targets: ['{}']\n",
        s.addr()
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let prom = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus must be installed (scripts/setup.sh installs it)");
    let _prom = KillOnDrop(prom);
    let query =
        "histogram_quantile(0.9, sum by (le) (switchyard_time_to_first_token_seconds_bucket))";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let resp = ureq::get(&format!("http://127.0.0.1:{port}/api/v1/query"))
            .query("query", query)
            .call()
            .ok()
            .and_then(|r| r.into_json::<Value>().ok());
        if let Some(v) = resp {
            if let Some(sample) = v["data"]["result"].get(0) {
                let value: f64 = sample["value"][1].as_str().unwrap().parse().unwrap();
                assert!(value > 0.0 && value.is_finite(), "{v}");
                eprintln!("Prometheus: {query} = {value}");
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never answered {query}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
