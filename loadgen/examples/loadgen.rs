//! Standalone front end for `switchyard loadgen` / `switchyard plan`, with
//! the same flags, for use before (or without) the main binary:
//! `cargo run --release -p switchyard-loadgen --example loadgen -- loadgen --target sim:... --out DIR`.

use clap::{Parser, Subcommand};
use switchyard_loadgen::cli::{run_loadgen, run_plan, LoadgenArgs, PlanArgs};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workload against a live server or a simulated fleet.
    Loadgen(LoadgenArgs),
    /// Find the cheapest fleet meeting SLOs at a rate.
    Plan(PlanArgs),
}

fn main() {
    let result = match Cli::parse().command {
        Command::Loadgen(a) => run_loadgen(a),
        Command::Plan(a) => run_plan(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
