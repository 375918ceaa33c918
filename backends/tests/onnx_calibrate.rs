//! A real calibration sweep of the ONNX backend on the tiny model: every
//! shape that fits is measured and the fit yields a valid profile. Timing
//! on a shared CI host is noisy, so the fit error is printed, not asserted
//! (`switchyard profile` reports it properly).

use std::path::Path;

use switchyard_backends::calibrate::{self, Statistic, SweepConfig};
use switchyard_backends::{Catalog, DeviceProfile, OnnxBackend, OnnxConfig};

#[test]
fn sweep_and_fit_the_tiny_model() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut config = OnnxConfig::new(root.join("models/tiny"));
    config.kv_blocks = Some(128);
    config.intra_threads = 1;
    let mut backend =
        OnnxBackend::new(config).expect("ONNX backend starts (source scripts/setup.sh)");
    let model = backend.model_spec();
    let device = Catalog::new(root.join("profiles")).device("cpu").unwrap();
    let sweep = SweepConfig {
        prefill_chunks: vec![8, 32, 128],
        decode_batches: vec![1, 4, 16],
        contexts: vec![0, 64, 256],
        repetitions: 3,
        warmup: 2,
        statistic: Statistic::Min,
        ..SweepConfig::for_model(&model)
    };
    let (fitted, report, samples) =
        calibrate::profile(&mut backend, &device, &model, &sweep).unwrap();
    // 128 blocks of 16 = 2048 tokens: everything fits but 16 decodes at 256 (16 * 17 blocks).
    assert_eq!(samples.len(), 20, "{samples:?}");
    assert!(samples.iter().all(|s| s.seconds > 0.0));
    let c = &fitted.calibration;
    for e in [
        c.compute_efficiency,
        c.bandwidth_efficiency,
        c.kv_efficiency(),
    ] {
        assert!(e > 0.0 && e <= 1.0, "{c:?}");
    }
    assert!(c.step_overhead_us >= 0.0 && c.per_sequence_overhead_us >= 0.0);
    assert!(c.kv_overhead_us_per_mb >= 0.0, "{c:?}");
    assert!(report.median_rel_error.is_finite());
    assert_eq!(c.fit_median_rel_error, Some(report.median_rel_error));
    // The fitted profile is valid and round-trips through TOML.
    let text = fitted.to_toml().unwrap();
    DeviceProfile::from_toml(Path::new("profiles/devices/cpu.toml"), &text).unwrap();
    eprintln!(
        "tiny model fit: median {:.1}%, max {:.1}% over {} samples",
        report.median_rel_error * 100.0,
        report.max_rel_error * 100.0,
        samples.len()
    );
}
