//! The device side of Switchyard: the backend contract, device profiles and
//! model specs, the cost model, and the backends that execute step plans.
//!
//! This crate knows nothing about requests, queues or HTTP; the scheduler
//! crate builds on it.

#![warn(missing_docs)]

pub mod calibrate;
pub mod contract;
pub mod cost;
pub mod error;
pub mod fault;
#[cfg(any(test, feature = "test-fixtures"))]
pub mod fixtures;
pub mod gpu;
pub mod hash;
pub mod model_config;
#[cfg(feature = "onnx")]
pub mod onnx;
pub mod open;
pub mod profile;
pub mod sampling;
pub mod sim;

pub use contract::{
    Backend, BackendKind, BlockCopy, BlockId, DeviceInfo, SamplingParams, ScheduledSeq, SeqId,
    StepOutput, StepPlan, TokenLogprobs, MAX_LOGPROBS,
};
pub use cost::{CapacityError, CostModel, PassCost, PassShape, SeqWork, StepCost, StepShape};
pub use error::{BackendError, ProfileError};
pub use profile::{AttentionSpec, Calibration, Catalog, DeviceProfile, ModelSpec, MoeSpec, Vendor};
pub use sim::{SimBackend, SimConfig};

#[cfg(feature = "onnx")]
pub use onnx::{OnnxBackend, OnnxConfig, Tokenizer};
