//! Shared helpers for the loadgen integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use switchyard_loadgen::cli::LoadgenArgs;
use switchyard_loadgen::workload::Arrival;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("switchyard-loadgen-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

pub fn args(target: &str, workloads: &[&str], out: PathBuf) -> LoadgenArgs {
    LoadgenArgs {
        target: target.to_string(),
        workload: workloads.iter().map(|s| s.to_string()).collect(),
        rate: None,
        concurrency: None,
        sweep: vec![],
        arrival: Arrival::Poisson,
        duration: None,
        requests: None,
        seed: 0,
        speedup: 1.0,
        start: 0.0,
        policy: vec![],
        objective: None,
        step_budget: None,
        slo: None,
        model: None,
        profiles: root().join("profiles"),
        timeout: 600.0,
        token_ids: false,
        api_model: None,
        max_inflight: 64,
        out,
        csv_itls: true,
        quiet: true,
    }
}
