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
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("8 device profiles"), "{stdout}");
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
