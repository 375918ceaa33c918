//! The official `openai` Python client against a live server (installed by
//! `scripts/setup.sh`; the test fails if it is missing).

mod common;

use std::process::Command;

use common::{root, sim_config, Server};

#[test]
fn official_openai_python_client_works_unmodified() {
    let s = Server::start(&sim_config(
        &[("h100-0", "h100-sxm")],
        "time_scale = 0.0",
        "",
    ));
    let out = Command::new("python3")
        .arg(root().join("tests/python/openai_client.py"))
        .args([&s.base, "llama-3.1-8b"])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("OK"), "{stdout}");
}
