//! The Kubernetes manifests in `deploy/kubernetes` hang together
//! (`scripts/check_manifests.py`: kustomization, InferencePool selector,
//! configs parsed against the config schema, mounts, probes) and call the
//! binary with flags it has.

mod common;

use std::process::Command;

use common::root;

#[test]
fn kubernetes_manifests_are_consistent() {
    let out = Command::new("python3")
        .arg(root().join("scripts/check_manifests.py"))
        .current_dir(root())
        .output()
        .expect("python3 scripts/check_manifests.py");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_picker_deployment_uses_flags_the_binary_has() {
    let manifest = std::fs::read_to_string(root().join("deploy/kubernetes/epp/deployment.yaml"))
        .expect("epp deployment");
    let help = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["epp", "--help"])
        .output()
        .expect("switchyard epp --help");
    let help = String::from_utf8_lossy(&help.stdout);
    let flags: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .filter(|w| w.starts_with("--"))
        .collect();
    assert!(flags.len() >= 4, "{flags:?}");
    for f in flags {
        assert!(
            help.contains(f),
            "{f} is not a flag of `switchyard epp`:\n{help}"
        );
    }
}
