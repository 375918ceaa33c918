//! End-to-end checks of the `switchyard` binary's offline commands.

use std::process::Command;

fn switchyard() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

#[test]
fn committed_profiles_validate() {
    let out = switchyard().arg("check-profiles").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every committed file is checked, none skipped.
    let count = |dir: &str| {
        std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "toml")
            })
            .count()
    };
    let (devices, models) = (count("profiles/devices"), count("profiles/models"));
    assert!(devices >= 8 && models >= 8);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let want = format!("{devices} device profiles and {models} model specs are valid");
    assert!(stdout.contains(&want), "{stdout}");
}

#[test]
fn cost_table_orders_devices_by_bandwidth() {
    let out = switchyard()
        .args(["cost", "--devices", "h100-sxm,l4"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let decode_ms = |device: &str| -> f64 {
        let line = stdout.lines().find(|l| l.starts_with(device)).unwrap();
        line.split_whitespace().nth(3).unwrap().parse().unwrap()
    };
    assert!(decode_ms("h100-sxm") < decode_ms("l4"), "{stdout}");
}

#[test]
fn malformed_profile_names_file_and_field() {
    let dir = std::env::temp_dir().join(format!("switchyard-bad-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("devices")).unwrap();
    std::fs::create_dir_all(dir.join("models")).unwrap();
    let good = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/devices/l4.toml"),
    )
    .unwrap();
    std::fs::write(
        dir.join("devices/l4.toml"),
        good.replace(
            "memory_bandwidth_gbps = 300.0",
            "memory_bandwidth_gbps = -1.0",
        ),
    )
    .unwrap();
    let out = switchyard()
        .args(["check-profiles", "--profiles"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("l4.toml"), "{stderr}");
    assert!(stderr.contains("memory_bandwidth_gbps"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `gpu-check` on the host reference runs every check and writes one JSON
/// file; on a host without a GPU the CUDA check fails with a clear error.
#[test]
fn gpu_check_dry_run_and_no_gpu() {
    let out = std::env::temp_dir().join(format!("sy-gpu-check-{}.json", std::process::id()));
    let run = switchyard()
        .args([
            "gpu-check",
            "--backend",
            "host",
            "--models",
            "models/tiny",
            "--tokens",
            "6",
        ])
        .args([
            "--timing-model",
            "models/tiny",
            "--batches",
            "2",
            "--contexts",
            "32",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(report["kernels"].as_array().unwrap().len(), 2);
    assert_eq!(report["generation"][0]["identical"], true);
    assert!(report["decode"][0]["timing"]["step_s"].as_f64().unwrap() > 0.0);
    std::fs::remove_file(&out).ok();
    let cuda = switchyard()
        .args(["gpu-check", "--backend", "cuda", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    if !std::path::Path::new("/dev/nvidia0").exists() {
        assert!(!cuda.status.success());
        let err = String::from_utf8_lossy(&cuda.stderr);
        assert!(err.contains("cuda:"), "{err}");
    }
}
