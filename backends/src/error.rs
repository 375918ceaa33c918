//! The crate's error types: one for profile loading, one for step execution.

use std::path::PathBuf;

/// Why a device profile or model spec could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// File that failed.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed, a field is missing or unknown, or has the wrong type.
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Parse {
        /// File that failed.
        path: PathBuf,
        /// 1-based line of the offending item, when known.
        line: Option<usize>,
        /// What the parser said (names the field).
        message: String,
    },
    /// A field parsed but holds a nonsense value.
    #[error("{}: field `{field}` {reason}", path.display())]
    Invalid {
        /// File that failed.
        path: PathBuf,
        /// Dotted field name.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No profile of that name exists in the catalog.
    #[error("unknown device profile `{name}` (no {name}.toml in {})", dir.display())]
    UnknownDevice {
        /// Requested name.
        name: String,
        /// Directory searched.
        dir: PathBuf,
    },
    /// No model spec of that name exists in the catalog.
    #[error("unknown model `{name}` (no {name}.toml in {})", dir.display())]
    UnknownModel {
        /// Requested name.
        name: String,
        /// Directory searched.
        dir: PathBuf,
    },
    /// A profile could not be written back as TOML.
    #[error("cannot serialise profile: {0}")]
    Serialize(String),
}

/// Why a backend could not start or could not execute a step.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend cannot run on this host (no driver, no device, missing library).
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The model files are malformed or lack something the backend needs (names it).
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// The model does not fit on the device.
    #[error("model does not fit: {0}")]
    DoesNotFit(String),
    /// The plan refers to something the backend does not hold (bad block id, unknown sequence).
    #[error("invalid step plan: {0}")]
    InvalidPlan(String),
    /// The device failed while executing a step.
    #[error("step failed: {0}")]
    StepFailed(String),
}
