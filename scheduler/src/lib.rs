//! Scheduling for Switchyard: the paged KV block manager, the per-device
//! continuous-batching engine and the shape-aware router.
//!
//! Everything here is pure and clock-agnostic: time is an argument, and
//! nothing sleeps, spawns threads or does I/O. Drivers (the live server, the
//! simulator) own time.

pub mod engine;
pub mod kv;
pub mod router;
#[cfg(feature = "server")]
pub mod server;

pub use engine::{
    budgeted_chunk, AbortOutcome, DecodeRun, Engine, EngineConfig, EngineError, Event,
    FinishReason, Load, Request, SeqStats, StepTimer,
};
pub use kv::{BlockManager, BlockTable, KvError};
