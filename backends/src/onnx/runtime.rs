//! Loading ONNX Runtime and opening a decoder graph.
//!
//! # Library
//! `ort` is built with `load-dynamic`: nothing is linked at build time and
//! the shared library is opened at run time from an explicit path or
//! `ORT_DYLIB_PATH`, with `ort::init_from`, whose errors are reported (a
//! missing file, a file that is not the library, a version below 1.31) as
//! [`BackendError::Unavailable`] with install instructions. `ort::init()`
//! is never used: it panics when the library is missing.
//!
//! One process holds at most one ONNX Runtime library and one environment
//! (an `ort` rule), so the first successful load is kept in a process-wide
//! slot and shared by every later backend asking for the same file; asking
//! for a different file afterwards is `Unavailable` too.
//!
//! # Graph
//! The session's metadata decides the layout ([`GraphIo`]): the layer count
//! is the number of `past_key_values.N.key` inputs, and every input and
//! output the backend feeds or reads must exist (a missing one is named).
//! The model's custom metadata property `switchyard.kv_layout` says where
//! the graph writes new K/V rows ([`KvLayout`]); absent means `padded`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{Outlet, TensorElementType};

use crate::error::BackendError;

/// How to get a working library, appended to every `Unavailable` message.
pub const INSTALL_HINT: &str =
    "install ONNX Runtime >= 1.31 with `pip install \"onnxruntime>=1.31,<2\"` \
     and set ORT_DYLIB_PATH to the wheel's onnxruntime/capi/libonnxruntime.so.* \
     (`source scripts/setup.sh` does both)";

/// The library loaded in this process and its environment.
struct Loaded {
    path: PathBuf,
    env: Environment,
}

static RUNTIME: Mutex<Option<Loaded>> = Mutex::new(None);

fn unavailable(what: String) -> BackendError {
    BackendError::Unavailable(format!("{what}; {INSTALL_HINT}"))
}

/// The library to load: `explicit`, else `ORT_DYLIB_PATH`.
pub fn library_path(explicit: Option<&Path>) -> Result<PathBuf, BackendError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => Err(unavailable(
            "no ONNX Runtime library given and ORT_DYLIB_PATH is not set".into(),
        )),
    }
}

/// The process's ONNX Runtime environment, loading the library at `path` on first use.
pub fn environment(path: &Path) -> Result<Environment, BackendError> {
    if !path.is_file() {
        return Err(unavailable(format!(
            "no ONNX Runtime library at {}",
            path.display()
        )));
    }
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(loaded) = slot.as_ref() {
        if loaded.path == canonical {
            return Ok(loaded.env.clone());
        }
        return Err(BackendError::Unavailable(format!(
            "ONNX Runtime is already loaded from {} in this process; cannot also load {}",
            loaded.path.display(),
            canonical.display()
        )));
    }
    let builder = ort::init_from(&canonical).map_err(|e| unavailable(e.to_string()))?;
    let env = builder
        .with_name("switchyard")
        .with_telemetry(false)
        .build()
        .map_err(|e| unavailable(format!("cannot create the ONNX Runtime environment: {e}")))?;
    *slot = Some(Loaded {
        path: canonical,
        env: env.clone(),
    });
    Ok(env)
}

/// Opens `model` in `env` with `threads` intra-op threads (0 = ONNX Runtime's
/// default) that spin between operators when `spinning`.
///
/// Memory patterns are off: input shapes change every step, so a pattern
/// cached per shape would rarely be reused.
pub fn open_session(
    env: &Environment,
    model: &Path,
    threads: usize,
    spinning: bool,
) -> Result<Session, BackendError> {
    let bad = |e: String| BackendError::InvalidModel(format!("{}: {e}", model.display()));
    if !model.is_file() {
        return Err(bad("no such file".into()));
    }
    Session::builder(env)
        .map_err(|e| bad(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| bad(e.to_string()))?
        .with_intra_threads(threads)
        .map_err(|e| bad(e.to_string()))?
        .with_memory_pattern(false)
        .map_err(|e| bad(e.to_string()))?
        .with_intra_op_spinning(spinning)
        .map_err(|e| bad(e.to_string()))?
        .commit_from_file(model)
        .map_err(|e| bad(e.to_string()))
}

/// The decoder graph's inputs and outputs, checked against what the backend feeds.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphIo {
    /// Transformer layers (pairs of `past_key_values.N.key|value`).
    pub layers: usize,
    /// KV heads, when the graph states it.
    pub kv_heads: Option<usize>,
    /// Head width, when the graph states it.
    pub head_dim: Option<usize>,
    /// Whether the graph takes `position_ids`.
    pub has_position_ids: bool,
    /// `past_key_values.N.key`, `past_key_values.N.value` for each layer, in order.
    pub past_names: Vec<[String; 2]>,
    /// `present.N.key`, `present.N.value` for each layer, in order.
    pub present_names: Vec<[String; 2]>,
    /// Where `present` holds each sequence's new rows.
    pub kv_layout: KvLayout,
}

/// Where a graph writes a sequence's new K/V rows in its `present` outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvLayout {
    /// After the batch's padded past: rows `past..past + new` of every
    /// sequence (`Concat(past, new)` with mask-based attention).
    #[default]
    Padded,
    /// Right after the sequence's own cached rows: `start..start + new`
    /// (ONNX Runtime's `GroupQueryAttention`, which reads each sequence's
    /// past length from `position_ids`). Its CPU kernel takes several new
    /// tokens on top of a past only at batch 1.
    Packed,
}

impl KvLayout {
    /// The model metadata key that names the layout.
    pub const METADATA_KEY: &'static str = "switchyard.kv_layout";

    /// The layout a metadata value names.
    pub fn parse(value: Option<&str>) -> Result<Self, BackendError> {
        match value {
            None | Some("padded") => Ok(Self::Padded),
            Some("packed") => Ok(Self::Packed),
            Some(other) => Err(BackendError::InvalidModel(format!(
                "metadata {} = {other:?}; expected \"padded\" or \"packed\"",
                Self::METADATA_KEY
            ))),
        }
    }

    /// The `present` row of a sequence's first new token: its `start`
    /// position, or the run's padded `past`.
    pub fn first_new_row(self, start: usize, past: usize) -> usize {
        match self {
            Self::Padded => past,
            Self::Packed => start,
        }
    }

    /// Whether a run of several new tokens per sequence over a past must
    /// hold one sequence.
    pub fn multi_token_past_runs_alone(self) -> bool {
        self == Self::Packed
    }
}

/// Input and output names of a decoder-with-past graph.
pub const INPUT_IDS: &str = "input_ids";
/// Attention mask input name.
pub const ATTENTION_MASK: &str = "attention_mask";
/// Position ids input name.
pub const POSITION_IDS: &str = "position_ids";
/// Logits output name.
pub const LOGITS: &str = "logits";

impl GraphIo {
    /// Discovers the layout from a session's metadata.
    pub fn discover(session: &Session) -> Result<Self, BackendError> {
        let mut io = Self::from_outlets(session.inputs(), session.outputs())?;
        let metadata = session
            .metadata()
            .map_err(|e| BackendError::InvalidModel(format!("model metadata: {e}")))?;
        io.kv_layout = KvLayout::parse(metadata.custom(KvLayout::METADATA_KEY).as_deref())?;
        Ok(io)
    }

    /// Discovers the layout from input and output descriptions.
    pub fn from_outlets(inputs: &[Outlet], outputs: &[Outlet]) -> Result<Self, BackendError> {
        fn find<'a>(
            list: &'a [Outlet],
            name: &str,
            kind: &str,
        ) -> Result<&'a Outlet, BackendError> {
            list.iter().find(|o| o.name() == name).ok_or_else(|| {
                BackendError::InvalidModel(format!("the graph has no `{name}` {kind}"))
            })
        }
        find(inputs, INPUT_IDS, "input")?;
        find(inputs, ATTENTION_MASK, "input")?;
        find(outputs, LOGITS, "output")?;
        let has_position_ids = inputs.iter().any(|o| o.name() == POSITION_IDS);
        let layers = inputs
            .iter()
            .filter(|o| {
                o.name()
                    .strip_prefix("past_key_values.")
                    .and_then(|r| r.strip_suffix(".key"))
                    .is_some_and(|n| n.parse::<usize>().is_ok())
            })
            .count();
        if layers == 0 {
            return Err(BackendError::InvalidModel(
                "the graph has no `past_key_values.0.key` input (not a decoder with past)".into(),
            ));
        }
        let mut io = GraphIo {
            layers,
            kv_heads: None,
            head_dim: None,
            has_position_ids,
            past_names: Vec::with_capacity(layers),
            present_names: Vec::with_capacity(layers),
            kv_layout: KvLayout::Padded,
        };
        for i in 0..layers {
            let past = [
                format!("past_key_values.{i}.key"),
                format!("past_key_values.{i}.value"),
            ];
            let present = [format!("present.{i}.key"), format!("present.{i}.value")];
            for name in &past {
                io.check_kv(find(inputs, name, "input")?)?;
            }
            for name in &present {
                find(outputs, name, "output")?;
            }
            io.past_names.push(past);
            io.present_names.push(present);
        }
        Ok(io)
    }

    /// Checks a past KV input is float32 of rank 4 and records its static dims.
    fn check_kv(&mut self, outlet: &Outlet) -> Result<(), BackendError> {
        let ty = outlet.dtype();
        if ty.tensor_type() != Some(TensorElementType::Float32) {
            return Err(BackendError::InvalidModel(format!(
                "input `{}` is {ty}; the onnx backend needs float32 KV",
                outlet.name()
            )));
        }
        let shape = ty.tensor_shape().map(|s| s.to_vec()).unwrap_or_default();
        if shape.len() != 4 {
            return Err(BackendError::InvalidModel(format!(
                "input `{}` has rank {}; expected [batch, kv_heads, past, head_dim]",
                outlet.name(),
                shape.len()
            )));
        }
        let known = |d: i64| usize::try_from(d).ok().filter(|&d| d > 0);
        self.kv_heads = self.kv_heads.or(known(shape[1]));
        self.head_dim = self.head_dim.or(known(shape[3]));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_layout_from_metadata() {
        assert_eq!(KvLayout::parse(None).unwrap(), KvLayout::Padded);
        assert_eq!(KvLayout::parse(Some("padded")).unwrap(), KvLayout::Padded);
        assert_eq!(KvLayout::parse(Some("packed")).unwrap(), KvLayout::Packed);
        let err = KvLayout::parse(Some("paged")).unwrap_err().to_string();
        assert!(err.contains("switchyard.kv_layout"), "{err}");
        assert_eq!(KvLayout::Padded.first_new_row(3, 9), 9);
        assert_eq!(KvLayout::Packed.first_new_row(3, 9), 3);
    }
}
