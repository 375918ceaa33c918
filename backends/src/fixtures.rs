//! Shared test fixtures: a device profile, a dense 8B-class model spec and
//! a tiny model spec with every field spelled out, so tests read as hand
//! computations. Other crates' tests reach them through the `test-fixtures`
//! feature (from `[dev-dependencies]`), so no crate hand-builds its own.

use crate::profile::{AttentionSpec, Calibration, DeviceProfile, ModelSpec, Vendor};

/// A device of `peak_tflops` and `bandwidth_gbps` with calibration
/// `[compute_eff, bandwidth_eff, step_overhead_us, per_sequence_overhead_us]`.
pub fn device(peak_tflops: f64, bandwidth_gbps: f64, cal: [f64; 4]) -> DeviceProfile {
    DeviceProfile {
        name: "d".into(),
        vendor: Vendor::Nvidia,
        description: "test".into(),
        peak_tflops,
        memory_gb: 80.0,
        memory_bandwidth_gbps: bandwidth_gbps,
        price_usd_per_hour: 3.6,
        calibration: Calibration {
            compute_efficiency: cal[0],
            bandwidth_efficiency: cal[1],
            kv_bandwidth_efficiency: None,
            step_overhead_us: cal[2],
            per_sequence_overhead_us: cal[3],
            kv_overhead_us_per_mb: 0.0,
            split_mixed_steps: false,
            memory_utilization: 0.9,
            fit_median_rel_error: None,
            fit_max_rel_error: None,
        },
    }
}

/// A dense GQA model of 8 B parameters (Llama-3-8B-like), BF16.
pub fn dense_8b(max_context: u32) -> ModelSpec {
    ModelSpec {
        name: "m".into(),
        description: "test".into(),
        num_layers: 32,
        hidden_size: 4096,
        num_attention_heads: 32,
        num_kv_heads: 8,
        head_dim: 128,
        vocab_size: 128_000,
        max_context,
        total_params_b: 8.0,
        active_params_b: 8.0,
        weight_bytes: 2.0,
        kv_bytes: 2,
        eos_token_ids: vec![1],
        attention: AttentionSpec::Gqa,
        moe: None,
    }
}

/// A tiny dense GQA model (4 layers, hidden size 256, 10 M parameters) whose
/// steps cost little more than the device's overheads; end-of-sequence id 0.
pub fn tiny(max_context: u32) -> ModelSpec {
    ModelSpec {
        name: "m".into(),
        description: "test".into(),
        num_layers: 4,
        hidden_size: 256,
        num_attention_heads: 4,
        num_kv_heads: 2,
        head_dim: 64,
        vocab_size: 1000,
        max_context,
        total_params_b: 0.01,
        active_params_b: 0.01,
        weight_bytes: 2.0,
        kv_bytes: 2,
        eos_token_ids: vec![0],
        attention: AttentionSpec::Gqa,
        moe: None,
    }
}

/// The SmolLM2 directory `scripts/setup.sh` converts, relative to the repository root.
pub const SMOLLM2_DIR: &str = "models/smollm2-135m-instruct";

/// The converted SmolLM2 directory when it holds `file`, or `None` (the
/// caller skips) while setup has not run. Setup always converts it, so once
/// setup ran (it exports `ORT_DYLIB_PATH`) a missing file fails the test
/// instead of skipping it.
pub fn smollm2_dir(file: &str) -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(SMOLLM2_DIR);
    if dir.join(file).is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("ORT_DYLIB_PATH").is_none(),
        "{}/{file} is missing although setup ran: run scripts/convert_smollm2.py",
        dir.display()
    );
    eprintln!(
        "skipping: {} is absent (run `source scripts/setup.sh`)",
        dir.display()
    );
    None
}
