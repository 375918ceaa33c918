//! Scheduling for Switchyard: the paged KV block manager, the per-device
//! continuous-batching engine and the shape-aware router.
//!
//! The engine, block manager and router are pure and clock-agnostic: time
//! is an argument, and nothing sleeps, spawns threads or does I/O. Drivers
//! (the live server in `switchyard-server`, the simulator in
//! `switchyard-loadgen`) own time. Cargo enforces it: this crate depends on
//! no async runtime, HTTP stack or device runtime. [`config`] is the typed
//! configuration vocabulary every driver shares (serde only).

#![warn(missing_docs)]

pub mod config;
pub mod engine;
pub mod kv;
pub mod router;

pub use engine::{
    budgeted_chunk, AbortOutcome, DecodeRun, Engine, EngineConfig, EngineError, Event,
    FinishReason, Load, Request, SeqStats, StepTimer,
};
pub use kv::{BlockManager, BlockTable, KvError};
