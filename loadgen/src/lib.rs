//! Load generation and capacity planning for Switchyard: workloads (shape
//! mixes, production traces), arrival processes, drivers for a live
//! OpenAI-compatible server or an in-process simulated fleet, and reports.
//!
//! Depends on the scheduler and backends crates; nothing depends on it but
//! the `switchyard` binary.
