//! The crate's one error type. Every variant names what the user must fix:
//! the file and line of a bad trace row, the field of a bad spec, the URL of
//! an unreachable target.

use std::path::PathBuf;

/// Everything that can stop a load-generation or planning run.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// A workload, SLO, fleet or flag string does not parse.
    #[error("invalid {what} `{input}`: {reason}")]
    Spec {
        /// Which kind of string (workload spec, SLO, fleet, ...).
        what: &'static str,
        /// The offending text.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A trace row is malformed.
    #[error("{}:{line}: field `{field}`: {reason}", path.display())]
    TraceRow {
        /// Trace file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Column name.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A fleet file is unreadable or invalid.
    #[error("fleet {}{}: {reason}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Fleet {
        /// Fleet file (or the inline spec).
        path: PathBuf,
        /// 1-based line, when known.
        line: Option<usize>,
        /// What is wrong.
        reason: String,
    },
    /// A device profile or model spec could not be loaded.
    #[error(transparent)]
    Profile(#[from] switchyard_backends::ProfileError),
    /// A simulated device could not be built (the model does not fit, ...).
    #[error("device {device}: {reason}")]
    Device {
        /// Profile name.
        device: String,
        /// Why.
        reason: String,
    },
    /// The live target cannot be reached.
    #[error("target {url} is unreachable: {reason}")]
    Unreachable {
        /// Target URL.
        url: String,
        /// Connection error.
        reason: String,
    },
    /// File I/O failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// No candidate fleet met the SLOs within the search bounds.
    #[error("no fleet of at most {max_devices} devices meets the SLOs at {rate} req/s")]
    Infeasible {
        /// Device bound.
        max_devices: u32,
        /// Request rate.
        rate: f64,
    },
}

impl LoadgenError {
    /// A spec-parsing error.
    pub fn spec(what: &'static str, input: &str, reason: impl Into<String>) -> Self {
        Self::Spec {
            what,
            input: input.to_string(),
            reason: reason.into(),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
