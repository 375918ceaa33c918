//! A missing or wrong ONNX Runtime library is `BackendError::Unavailable`,
//! never a panic. Its own test binary (process): `ort` keeps the first
//! library it loads for the life of the process, so these checks must run
//! before anything loads the real one.

use std::path::{Path, PathBuf};

use switchyard_backends::{BackendError, OnnxBackend, OnnxConfig};

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny")
}

fn start(library: &Path) -> Result<OnnxBackend, BackendError> {
    let mut config = OnnxConfig::new(tiny());
    config.library = Some(library.to_path_buf());
    config.kv_blocks = Some(64);
    config.intra_threads = 1;
    OnnxBackend::new(config)
}

fn expect_unavailable(result: Result<OnnxBackend, BackendError>, what: &str) -> String {
    match result {
        Err(BackendError::Unavailable(msg)) => {
            assert!(
                msg.contains("pip install"),
                "{what}: no install hint in {msg}"
            );
            assert!(msg.contains("ORT_DYLIB_PATH"), "{what}: {msg}");
            msg
        }
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
}

#[test]
fn missing_or_wrong_library_is_unavailable_then_the_real_one_loads() {
    let missing = expect_unavailable(
        start(Path::new("/nonexistent/libonnxruntime.so.1.31.0")),
        "missing file",
    );
    assert!(missing.contains("/nonexistent"), "{missing}");
    // A file that is not a shared library fails in dlopen, also without a panic.
    expect_unavailable(start(&tiny().join("config.json")), "not a library");
    // Nothing was poisoned: the real library (CI sets ORT_DYLIB_PATH) still loads.
    let real = std::env::var("ORT_DYLIB_PATH")
        .expect("ORT_DYLIB_PATH must be set: run `source scripts/setup.sh` first");
    let backend = start(Path::new(&real)).expect("the real ONNX Runtime library loads");
    drop(backend);
    // One process holds one library: a different file is refused, not loaded.
    let err = start(&tiny().join("model.onnx")).unwrap_err();
    assert!(
        matches!(&err, BackendError::Unavailable(m) if m.contains("already loaded")),
        "{err}"
    );
}
