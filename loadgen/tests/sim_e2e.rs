//! End to end on the simulator: workloads in, report files out.

mod common;

use clap::Parser;
use common::{args, fixture, root, tmpdir};
use switchyard_loadgen::cli::{run_loadgen, run_plan, LoadgenArgs, PlanArgs};
use switchyard_loadgen::workload::Arrival;

/// `switchyard loadgen`'s flags, as the binary parses them.
#[derive(Debug, Parser)]
struct LoadgenCommand {
    #[command(flatten)]
    _args: LoadgenArgs,
}

fn read_json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn policy_comparison_on_merged_traces_writes_every_report() {
    let out = tmpdir("policies");
    let mut a = args(
        "sim:h100-sxm=1,mi300x=1,l4=2",
        &[
            &format!("trace:{}", fixture("code-window.csv")),
            &format!("trace:{}", fixture("conv-window.csv")),
        ],
        out.clone(),
    );
    a.policy = vec![
        "cost".parse().unwrap(),
        "round-robin".parse().unwrap(),
        "least-loaded".parse().unwrap(),
    ];
    a.slo = Some("ttft_ms=2000,tpot_ms=100".parse().unwrap());
    a.speedup = 4.0;
    run_loadgen(a).unwrap();
    let doc = read_json(&out.join("results.json"));
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    let n_requests = 300 + 200;
    for (run, policy) in runs.iter().zip(["cost", "round-robin", "least-loaded"]) {
        assert_eq!(run["policy"], policy);
        assert_eq!(run["requests"], n_requests);
        for key in [
            "label",
            "rate",
            "completed",
            "failed",
            "duration_s",
            "slo_attainment",
        ] {
            assert!(!run[key].is_null(), "{key} missing");
        }
        for key in ["requests_per_s", "output_tokens_per_s"] {
            assert!(run["throughput"][key].is_number(), "throughput.{key}");
        }
        for metric in ["ttft_s", "tpot_s", "itl_s", "e2e_s"] {
            for p in ["mean", "p50", "p90", "p95", "p99"] {
                assert!(run[metric][p].is_number(), "{metric}.{p}");
            }
        }
        assert_eq!(run["slo"]["ttft_ms"], 2000.0);
        assert!(run["goodput"]["requests_per_s"].is_number());
        assert!(run["cost"]["usd_per_hour"].as_f64().unwrap() > 0.0);
        assert!(run["cost"]["usd_per_million_output_tokens"].is_number());
        let devices = run["devices"].as_array().unwrap();
        assert_eq!(devices.len(), 4);
        assert!(devices.iter().all(|d| d["utilization"].is_number()));
    }
    let csv = std::fs::read_to_string(out.join("requests.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 3 * n_requests);
    assert!(csv.starts_with("run,id,source,scheduled_s"));
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("<svg") && html.contains("TTFT CDF") && html.contains("Goodput per dollar")
    );
    assert!(
        !html.contains("<script"),
        "report must be self-contained and static"
    );
}

#[test]
fn sweep_and_closed_loop_runs() {
    let out = tmpdir("sweep");
    let mut a = args(
        "sim:l4=2",
        &["mix:decode-heavy=1,prefill-heavy=1"],
        out.clone(),
    );
    a.sweep = vec![1.0, 4.0];
    a.requests = Some(60);
    a.policy = vec!["least-loaded".parse().unwrap()];
    run_loadgen(a).unwrap();
    let doc = read_json(&out.join("results.json"));
    let rates: Vec<f64> = doc["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rate"].as_f64().unwrap())
        .collect();
    assert_eq!(rates, vec![1.0, 4.0]);
    let cap = doc["slo_capacity"].as_array().unwrap();
    assert_eq!(cap.len(), 1);
    assert_eq!(cap[0]["policy"], "least-loaded");
    assert!(std::fs::read_to_string(out.join("report.html"))
        .unwrap()
        .contains("TTFT vs rate"));

    let out = tmpdir("closed");
    let mut a = args(
        "sim:h100-sxm=1",
        &["fixed:prompt=256,output=32"],
        out.clone(),
    );
    a.concurrency = Some(4);
    a.requests = Some(40);
    run_loadgen(a).unwrap();
    let doc = read_json(&out.join("results.json"));
    assert_eq!(doc["runs"][0]["completed"], 40);
}

#[test]
fn fleet_files_load_including_the_server_config() {
    for fleet in ["examples/fleets/mixed.toml", "switchyard.toml"] {
        let out = tmpdir(&fleet.replace('/', "-"));
        let mut a = args(
            &format!("sim:{}", root().join(fleet).display()),
            &["fixed:prompt=128,output=16"],
            out.clone(),
        );
        a.rate = Some(5.0);
        a.requests = Some(30);
        run_loadgen(a).unwrap();
        assert_eq!(
            read_json(&out.join("results.json"))["runs"][0]["completed"],
            30
        );
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tmpdir("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("bad.csv");
    std::fs::write(&trace, "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374,44\n2023-11-16 18:15:47.00,12,x\n").unwrap();
    let e = run_loadgen(args(
        "sim:l4=1",
        &[&format!("trace:{}", trace.display())],
        dir.join("o"),
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("bad.csv:3") && e.contains("GeneratedTokens"),
        "{e}"
    );
    let e = run_loadgen(args(
        "sim:b200=1",
        &[&format!("trace:{}", fixture("conv-window.csv"))],
        dir.join("o"),
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("b200"), "{e}");
    let e = run_loadgen(args(
        "sim:/nonexistent/fleet.toml",
        &["fixed:prompt=1,output=1"],
        dir.join("o"),
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("/nonexistent/fleet.toml"), "{e}");
    // A bad SLO is refused where the command line is parsed.
    let e = LoadgenCommand::try_parse_from([
        "loadgen",
        "--target",
        "sim:l4=1",
        "--workload",
        &format!("trace:{}", fixture("conv-window.csv")),
        "--out",
        &dir.join("o").display().to_string(),
        "--slo",
        "ttft_ms=fast,tpot_ms=10",
    ])
    .unwrap_err()
    .to_string();
    assert!(e.contains("ttft_ms"), "{e}");
}

#[test]
fn plan_finds_a_fleet_and_writes_a_server_config() {
    let out = tmpdir("plan");
    run_plan(PlanArgs {
        workload: vec!["fixed:prompt=512,output=64".into()],
        rate: 4.0,
        slo: "ttft_p95_ms=1500,tpot_p95_ms=80".parse().unwrap(),
        catalog: root().join("profiles/devices"),
        devices: vec!["h100-sxm".into(), "l4".into()],
        max_devices: 8,
        model: "llama-3.1-8b".into(),
        policy: "cost".parse().unwrap(),
        requests: 150,
        arrival: Arrival::Poisson,
        speedup: 1.0,
        start: 0.0,
        seed: 1,
        out: out.clone(),
        quiet: true,
        brute_force: false,
    })
    .unwrap();
    let plan = read_json(&out.join("plan.json"));
    let chosen = &plan["plan"]["chosen"];
    assert_eq!(chosen["meets_slo"], true);
    assert!(chosen["usd_per_hour"].as_f64().unwrap() > 0.0);
    let homogeneous = plan["plan"]["homogeneous"].as_array().unwrap();
    assert_eq!(homogeneous.len(), 2);
    let cheapest_homogeneous = homogeneous
        .iter()
        .filter_map(|h| h["best"]["usd_per_hour"].as_f64())
        .fold(f64::INFINITY, f64::min);
    assert!(chosen["usd_per_hour"].as_f64().unwrap() <= cheapest_homogeneous + 1e-9);
    let toml_path = out.join("switchyard.toml");
    switchyard_scheduler::config::Config::load(&toml_path).unwrap();
    let mut a = args(
        &format!("sim:{}", toml_path.display()),
        &["fixed:prompt=512,output=64"],
        tmpdir("plan-check"),
    );
    a.rate = Some(4.0);
    a.requests = Some(50);
    run_loadgen(a).unwrap();
}
