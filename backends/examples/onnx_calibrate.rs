//! Sweeps the ONNX backend on a model directory, fits the `cpu` device
//! profile's calibration and prints every sample with its prediction.
//!
//! ```text
//! source scripts/setup.sh
//! cargo run --release -p switchyard-backends --example onnx_calibrate -- [MODEL_DIR] [THREADS] [REPETITIONS] [median|min]
//! ```
//! MODEL_DIR defaults to `models/tiny`; THREADS (ONNX Runtime intra-op
//! threads) to 0, ONNX Runtime's choice; REPETITIONS per shape to 21; the
//! statistic to the median (`min` suits a shared, busy host).
//! Prints the fitted profile as TOML.

use std::path::PathBuf;

use switchyard_backends::calibrate::{self, Statistic, SweepConfig};
use switchyard_backends::{Backend, Catalog, CostModel, OnnxBackend, OnnxConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut args = std::env::args().skip(1);
    let dir = args.next().map_or(root.join("models/tiny"), PathBuf::from);
    let threads = args.next().map_or(Ok(0), |t| t.parse())?;
    let repetitions = args.next().map_or(Ok(21), |t| t.parse())?;
    let statistic = match args.next().as_deref() {
        Some("min") => Statistic::Min,
        _ => Statistic::Median,
    };
    let mut config = OnnxConfig::new(&dir);
    config.intra_threads = threads;
    config.kv_cache_bytes = 1 << 30;
    let mut backend = OnnxBackend::new(config)?;
    let model = backend.model_spec();
    let device = Catalog::new(root.join("profiles")).device("cpu")?;
    let sweep = SweepConfig {
        max_context: model.max_context.min(1024),
        repetitions,
        statistic,
        ..SweepConfig::for_model(&model)
    };
    println!(
        "{} on {} ({} KV blocks)",
        model.name,
        backend.info().name,
        backend.info().kv_blocks
    );
    let (fitted, report, samples) = calibrate::profile(&mut backend, &device, &model, &sweep)?;
    let cm = CostModel::new(fitted.clone(), model);
    println!(
        "{:<44} {:>10} {:>10} {:>7}",
        "shape", "measured", "predicted", "error"
    );
    for s in &samples {
        let pred = cm.step_cost(&s.shape).seconds();
        println!(
            "{:<44} {:>8.3}ms {:>8.3}ms {:>+6.1}%",
            s.point.to_string(),
            s.seconds * 1e3,
            pred * 1e3,
            (pred / s.seconds - 1.0) * 100.0
        );
    }
    println!(
        "median relative error {:.1}%, max {:.1}% over {} samples",
        report.median_rel_error * 100.0,
        report.max_rel_error * 100.0,
        samples.len()
    );
    println!("{}", fitted.to_toml()?);
    Ok(())
}
