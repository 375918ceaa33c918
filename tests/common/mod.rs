//! Test harness: starts the real `switchyard` binary on port 0 with a
//! generated config and waits until it reports its address.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A config for a sim fleet of `(id, profile)` devices plus extra TOML.
pub fn sim_config(devices: &[(&str, &str)], device_extra: &str, extra: &str) -> String {
    let mut s = format!(
        "profiles_dir = {:?}\n{extra}\n",
        root().join("profiles").display().to_string()
    );
    if !extra.contains("[model]") {
        s.push_str("[model]\nspec = \"llama-3.1-8b\"\n");
    }
    for (id, profile) in devices {
        s.push_str(&format!(
            "[[devices]]\nid = \"{id}\"\nbackend = \"sim\"\nprofile = \"{profile}\"\n{device_extra}\n"
        ));
    }
    s
}

/// A running server process.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Directory holding the config.
    pub dir: PathBuf,
}

fn scratch_dir() -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("switchyard-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

impl Server {
    /// Writes `config` and starts `switchyard serve` on a free port.
    pub fn start(config: &str) -> Server {
        let dir = scratch_dir();
        let path = dir.join("switchyard.toml");
        std::fs::write(&path, config).expect("write config");
        Self::start_at(&path, dir)
    }

    /// Writes `config` and starts `switchyard serve` on `addr`.
    pub fn start_on(config: &str, addr: &str) -> Server {
        let dir = scratch_dir();
        let path = dir.join("switchyard.toml");
        std::fs::write(&path, config).expect("write config");
        Self::spawn(&path, dir, addr)
    }

    fn start_at(path: &Path, dir: PathBuf) -> Server {
        Self::spawn(path, dir, "127.0.0.1:0")
    }

    fn spawn(path: &Path, dir: PathBuf, addr: &str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["serve", "--addr", addr, "--config"])
            .arg(path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn switchyard");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("switchyard listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(b) => b,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not report its address");
            }
        };
        Server { child, base, dir }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Host:port.
    pub fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }

    /// Path of the config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("switchyard.toml")
    }

    /// Kills the process at once (SIGKILL), as a crashed machine would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// GETs JSON from `path`.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        ureq::get(&self.url(path))
            .call()
            .expect("GET")
            .into_json()
            .expect("JSON")
    }

    /// POSTs JSON, returning status and body (errors included).
    pub fn post(&self, path: &str, body: &serde_json::Value) -> (u16, String) {
        match ureq::post(&self.url(path)).send_json(body.clone()) {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(e) => panic!("transport error: {e}"),
        }
    }

    /// Waits until `pred` holds for `/admin/devices`, or panics after `timeout`.
    pub fn wait_devices(&self, timeout: Duration, pred: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.get_json("/admin/devices");
            if pred(&v) {
                return;
            }
            assert!(Instant::now() < deadline, "condition not reached: {v}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Data lines of an SSE body, without the `data: ` prefix.
pub fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

/// The value of Prometheus sample `name{labels}` (`name` alone for empty `labels`) in `/metrics` (0 when absent).
pub fn metric_value(s: &Server, name: &str, labels: &str) -> f64 {
    let text = ureq::get(&s.url("/metrics"))
        .call()
        .expect("GET /metrics")
        .into_string()
        .expect("metrics text");
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum()
}

/// Prefix of the metrics only a fleet tier exports.
pub const TIER_METRIC_PREFIX: &str = "switchyard_endpoint_";
/// Prefix of the metrics only the endpoint picker exports.
pub const PICKER_METRIC_PREFIX: &str = "switchyard_epp_";
/// Prefix of the metrics only an enabled autoscaler exports.
pub const AUTOSCALE_METRIC_PREFIX: &str = "switchyard_pool_";

/// Asserts that every dashboard query over metrics named `prefix…` reads
/// metrics `exposition` has samples of; returns how many were checked.
pub fn check_dashboard_metrics(prefix: &str, exposition: &str) -> usize {
    let mut checked = 0;
    for (title, expr) in dashboard_queries() {
        for name in metric_names(&expr) {
            if name.starts_with(prefix) {
                let sample = format!("\n{name}{{");
                assert!(
                    exposition.contains(&sample),
                    "panel {title} queries {name}, not exported:\n{exposition}"
                );
                checked += 1;
            }
        }
    }
    checked
}

/// The metric names a PromQL expression reads.
pub fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut cur = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            cur.push(c);
        } else {
            if cur.starts_with("switchyard_") || cur.starts_with("vllm:") {
                names.push(std::mem::take(&mut cur));
            }
            cur.clear();
        }
    }
    names
}

/// Every query of the committed Grafana dashboard, with its panel's title.
pub fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("deploy/grafana/switchyard.json"))
        .expect("deploy/grafana/switchyard.json");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = t["expr"].as_str() {
                out.push((panel["title"].to_string(), expr.to_string()));
            }
        }
    }
    out
}
