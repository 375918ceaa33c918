//! Load generation and capacity planning for Switchyard: workloads (shape
//! mixes, production traces), arrival processes, drivers for a live
//! OpenAI-compatible server or an in-process simulated fleet, and reports.
//!
//! Depends on the scheduler and backends crates; nothing depends on it but
//! the `switchyard` binary, which only adds the `loadgen` and `plan`
//! subcommands around [`cli::run_loadgen`] and [`cli::run_plan`].
//!
//! Invariant: the simulator drives the real router and engines (see
//! [`sim`]); the live driver and the simulator produce the same
//! [`metrics::RequestRecord`]s, so one report format serves both.

#![warn(missing_docs)]

pub mod autoscale;
pub mod cli;
pub mod error;
pub mod fleet;
pub mod http;
pub mod metrics;
pub mod plan;
pub mod progress;
pub mod report;
pub mod rng;
pub mod sim;
pub mod slo;
pub mod workload;

pub use error::LoadgenError;
