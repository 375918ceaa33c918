//! Command-line front ends: [`LoadgenArgs`] + [`run_loadgen`] and
//! [`PlanArgs`] + [`run_plan`]. The binary flattens these into its
//! `loadgen` and `plan` subcommands and adds nothing else.
//!
//! A target is `sim:FLEET` (a fleet TOML path or `PROFILE=COUNT,...`) or an
//! `http(s)://` URL of an OpenAI-compatible server. On a sim target every
//! (policy, rate) pair is one run on the identical workload; on a live
//! target every rate is one run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use switchyard_backends::Catalog;

use crate::error::LoadgenError;
use crate::fleet::{Fleet, FleetSpec};
use crate::http::{run_http, HttpOptions};
use crate::plan::{plan, PlanOptions};
use crate::report::{self, Run};
use crate::router::{Objective, PolicyKind, RouterConfig, Slo};
use crate::sim::{simulate, SimOptions};
use crate::slo::SloSpec;
use crate::workload::{Arrival, WorkloadOptions, WorkloadSource};

/// Flags of `switchyard loadgen`.
#[derive(Debug, Clone, Args)]
pub struct LoadgenArgs {
    /// `sim:FLEET.toml`, `sim:PROFILE=COUNT,...`, or the base URL of an OpenAI-compatible server.
    #[arg(long)]
    pub target: String,
    /// Workload spec (repeatable): `fixed:prompt=N,output=M`, `mix:NAME=W,...`, `trace:PATH`.
    #[arg(long, required = true)]
    pub workload: Vec<String>,
    /// Open-loop request rate, req/s (for traces: rescales the merged trace to this mean rate).
    #[arg(long, conflicts_with_all = ["concurrency", "sweep"])]
    pub rate: Option<f64>,
    /// Closed loop: keep this many requests in flight.
    #[arg(long, conflicts_with = "sweep")]
    pub concurrency: Option<u32>,
    /// Run once per rate, req/s (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub sweep: Vec<f64>,
    /// Arrival process of synthetic workloads: `poisson`, `constant`, `gamma:cv=X`.
    #[arg(long, default_value = "poisson")]
    pub arrival: String,
    /// Length of the arrival window, seconds (for traces: of the replayed window after speedup).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Most requests.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Trace time compression (2 = twice as fast).
    #[arg(long, default_value_t = 1.0)]
    pub speedup: f64,
    /// Trace window start, seconds of trace time.
    #[arg(long, default_value_t = 0.0)]
    pub start: f64,
    /// Routing policies to compare on a sim target (comma-separated; default: the fleet's, else `cost`);
    /// `cost:elastic` / `cost:fixed` set the cost policy's objective for that run.
    #[arg(long, value_delimiter = ',')]
    pub policy: Vec<String>,
    /// Objective of the cost policy, `fixed` or `elastic` (default: the fleet's, else `fixed`).
    #[arg(long)]
    pub objective: Option<String>,
    /// SLO-budgeted engine steps on sim targets, `on` or `off` (default: the fleet's, else `on`).
    #[arg(long)]
    pub step_budget: Option<String>,
    /// SLO targets, `ttft_ms=T,tpot_ms=P[,percentile=95]` (default: the fleet's, else 2000/100).
    #[arg(long)]
    pub slo: Option<String>,
    /// Model spec name for sim targets (profiles/models/NAME.toml; default: the fleet's, else llama-3.1-8b).
    #[arg(long)]
    pub model: Option<String>,
    /// Profiles directory (devices/ and models/).
    #[arg(long, default_value = "profiles")]
    pub profiles: PathBuf,
    /// Per-request timeout, seconds.
    #[arg(long, default_value_t = 600.0)]
    pub timeout: f64,
    /// Live: send prompts as token-id arrays instead of text.
    #[arg(long)]
    pub token_ids: bool,
    /// Live: `model` field of each request (default: the server's first model, else `default`).
    #[arg(long)]
    pub api_model: Option<String>,
    /// Live: most requests in flight (bounded connection pool).
    #[arg(long, default_value_t = 512)]
    pub max_inflight: usize,
    /// Output directory for results.json, requests.csv and report.html.
    #[arg(long)]
    pub out: PathBuf,
    /// Write every inter-token latency into requests.csv (large for long runs).
    #[arg(long)]
    pub csv_itls: bool,
    /// Never draw a progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Flags of `switchyard plan`.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// Workload spec (repeatable), as for `loadgen`.
    #[arg(long, required = true)]
    pub workload: Vec<String>,
    /// Request rate the fleet must sustain, req/s.
    #[arg(long)]
    pub rate: f64,
    /// SLO, `ttft_p95_ms=T,tpot_p95_ms=P` (or `ttft_ms=..,tpot_ms=..,percentile=..`).
    #[arg(long)]
    pub slo: String,
    /// Device catalog directory (profiles/devices); its parent holds models/.
    #[arg(long, default_value = "profiles/devices")]
    pub catalog: PathBuf,
    /// Device types to consider (comma-separated; default: every profile in the catalog).
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<String>,
    /// Largest fleet considered.
    #[arg(long, default_value_t = 32)]
    pub max_devices: u32,
    /// Model spec name.
    #[arg(long, default_value = "llama-3.1-8b")]
    pub model: String,
    /// Routing policy of the planned fleet (`cost:elastic` sets the cost policy's objective).
    #[arg(long, default_value = "cost")]
    pub policy: String,
    /// Requests simulated per candidate fleet.
    #[arg(long, default_value_t = 2000)]
    pub requests: u64,
    /// Arrival process, as for `loadgen`.
    #[arg(long, default_value = "poisson")]
    pub arrival: String,
    /// Trace time compression.
    #[arg(long, default_value_t = 1.0)]
    pub speedup: f64,
    /// Trace window start, seconds.
    #[arg(long, default_value_t = 0.0)]
    pub start: f64,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory for plan.json and switchyard.toml.
    #[arg(long)]
    pub out: PathBuf,
    /// Never draw a progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Parses a policy name.
pub fn parse_policy(s: &str) -> Result<PolicyKind, LoadgenError> {
    s.trim().parse::<PolicyKind>().map_err(|_| {
        LoadgenError::spec(
            "policy",
            s,
            "expected cost, latency, round-robin, least-loaded or prefix",
        )
    })
}

/// Parses `POLICY[:OBJECTIVE]`, e.g. `cost:elastic`.
pub fn parse_policy_choice(s: &str) -> Result<(PolicyKind, Option<Objective>), LoadgenError> {
    match s.split_once(':') {
        None => Ok((parse_policy(s)?, None)),
        Some((p, o)) => Ok((parse_policy(p)?, Some(parse_objective(o)?))),
    }
}

/// Parses an objective name.
pub fn parse_objective(s: &str) -> Result<Objective, LoadgenError> {
    s.parse::<Objective>()
        .map_err(|_| LoadgenError::spec("objective", s, "expected fixed or elastic"))
}

/// Parses `on` / `off`.
fn parse_switch(what: &'static str, s: &str) -> Result<bool, LoadgenError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(LoadgenError::spec(what, s, "expected on or off")),
    }
}

/// The router's SLO for our spec.
pub fn router_slo(s: &SloSpec) -> Slo {
    Slo::from_ms(s.ttft_ms, s.tpot_ms, s.percentile / 100.0)
}

/// Builds a catalog and loads `name`'s model spec.
fn load_model(
    catalog: &Catalog,
    name: &str,
) -> Result<switchyard_backends::ModelSpec, LoadgenError> {
    Ok(catalog.model(name)?)
}

/// Runs `switchyard loadgen`.
pub fn run_loadgen(args: LoadgenArgs) -> Result<(), LoadgenError> {
    let source = WorkloadSource::new(&args.workload)?;
    let arrival: Arrival = args.arrival.parse()?;
    let base = WorkloadOptions {
        rate: args.rate,
        arrival,
        concurrency: args.concurrency,
        duration: args.duration,
        requests: args.requests,
        seed: args.seed,
        speedup: args.speedup,
        start: args.start,
    };
    let rates: Vec<Option<f64>> = if args.sweep.is_empty() {
        vec![args.rate]
    } else {
        args.sweep.iter().map(|r| Some(*r)).collect()
    };
    let mut runs = Vec::new();
    if let Some(fleet_text) = args.target.strip_prefix("sim:") {
        let spec = FleetSpec::parse_target(fleet_text)?;
        let catalog = Catalog::new(spec.profiles_dir.clone().unwrap_or(args.profiles.clone()));
        let model_name = args
            .model
            .clone()
            .or(spec.model.clone())
            .unwrap_or_else(|| "llama-3.1-8b".into());
        let model = load_model(&catalog, &model_name)?;
        let fleet = Fleet::build(&catalog, &spec, &model)?;
        let slo = match (&args.slo, spec.router.slo) {
            (Some(s), _) => s.parse()?,
            (None, Some(t)) => SloSpec::from_table(t.ttft_ms, t.tpot_ms, t.percentile),
            (None, None) => SloSpec::default(),
        };
        let policies: Vec<(PolicyKind, Option<Objective>)> = if args.policy.is_empty() {
            vec![parse_policy_choice(
                spec.router.policy.as_deref().unwrap_or("cost"),
            )?]
        } else {
            args.policy
                .iter()
                .map(|p| parse_policy_choice(p))
                .collect::<Result<_, _>>()?
        };
        let objective = match (&args.objective, &spec.router.objective) {
            (Some(o), _) => parse_objective(o)?,
            (None, Some(o)) => parse_objective(o)?,
            (None, None) => Objective::default(),
        };
        let budgeted_steps = match &args.step_budget {
            Some(s) => parse_switch("step-budget", s)?,
            None => spec.engine.slo_budgeted_steps.unwrap_or(true),
        };
        for rate in &rates {
            let workload = source.build(&WorkloadOptions {
                rate: *rate,
                ..base.clone()
            })?;
            for (pi, (policy, policy_objective)) in policies.iter().enumerate() {
                let mut router = RouterConfig {
                    policy: *policy,
                    objective: policy_objective.unwrap_or(objective),
                    slo: router_slo(&slo),
                    ..RouterConfig::default()
                };
                if let Some(m) = spec.router.prefix_min_match {
                    router.prefix_min_match = m;
                }
                if let Some(b) = spec.router.prefix_balance_tokens {
                    router.prefix_balance_tokens = b;
                }
                let opts = SimOptions {
                    router,
                    timeout: Duration::from_secs_f64(args.timeout),
                    progress: !args.quiet,
                    multi_step: true,
                    budgeted_steps,
                };
                let started = Instant::now();
                let mut result = simulate(&fleet, &workload, &opts);
                let wall = started.elapsed().as_secs_f64();
                let pname =
                    &args.policy.get(pi).cloned().unwrap_or_else(|| {
                        spec.router.policy.clone().unwrap_or_else(|| "cost".into())
                    });
                let label = run_label(Some(pname), *rate, rates.len() > 1, policies.len() > 1);
                let records = std::mem::take(&mut result.records);
                let mut run = Run::new(label, args.target.clone(), records, slo);
                run.summary = run.summary.with_sim(&fleet, &result, wall);
                run.summary.policy = Some(pname.trim().to_string());
                run.summary.rate = rate.or(Some(workload.offered_rate())).filter(|r| *r > 0.0);
                eprintln!("{}", one_line(&run));
                runs.push(run);
            }
        }
        let title = format!(
            "Switchyard loadgen — sim {} ({model_name})",
            fleet.spec.label()
        );
        report::write_all(&args.out, &runs, &source.labels(), &title, args.csv_itls)?;
    } else {
        let slo: SloSpec = args
            .slo
            .as_deref()
            .map(str::parse)
            .transpose()?
            .unwrap_or_default();
        for rate in &rates {
            let workload = source.build(&WorkloadOptions {
                rate: *rate,
                ..base.clone()
            })?;
            let opts = HttpOptions {
                url: args.target.clone(),
                token_ids: args.token_ids,
                model: args.api_model.clone(),
                max_inflight: args.max_inflight,
                timeout: Duration::from_secs_f64(args.timeout),
                progress: !args.quiet,
                seed: args.seed,
            };
            let records = run_http(&workload, &opts)?;
            let label = run_label(None, *rate, rates.len() > 1, false);
            let mut run = Run::new(label, args.target.clone(), records, slo);
            run.summary.rate = rate.or(Some(workload.offered_rate())).filter(|r| *r > 0.0);
            eprintln!("{}", one_line(&run));
            runs.push(run);
        }
        report::write_all(
            &args.out,
            &runs,
            &source.labels(),
            &format!("Switchyard loadgen — {}", args.target),
            args.csv_itls,
        )?;
    }
    eprintln!(
        "wrote {}/results.json, requests.csv, report.html",
        args.out.display()
    );
    Ok(())
}

fn run_label(
    policy: Option<&str>,
    rate: Option<f64>,
    many_rates: bool,
    many_policies: bool,
) -> String {
    match (policy, rate) {
        (Some(p), Some(r)) if many_rates => format!("{p}@{r}"),
        (Some(p), _) if many_policies || !many_rates => p.to_string(),
        (_, Some(r)) => format!("{r} req/s"),
        _ => "run".into(),
    }
}

/// A one-line summary for the terminal.
pub fn one_line(run: &Run) -> String {
    let s = &run.summary;
    let mut line = format!(
        "{:<16} {} req, {} ok, {:.2} req/s, TTFT p50/p95 {:.0}/{:.0} ms, TPOT p50/p95 {:.1}/{:.1} ms, goodput {:.2} req/s ({:.1}% in SLO)",
        s.label, s.requests, s.completed, s.throughput.requests_per_s, s.ttft_s.p50 * 1e3, s.ttft_s.p95 * 1e3,
        s.tpot_s.p50 * 1e3, s.tpot_s.p95 * 1e3, s.goodput.requests_per_s, s.slo_attainment * 100.0
    );
    if let Some(c) = s.cost {
        line += &format!(", {:.1} good req/USD", c.goodput_requests_per_usd);
    }
    if let Some(sim) = s.sim {
        line += &format!(
            " [sim {:.2}s wall, {:.0} req/s]",
            sim.wall_s, sim.requests_per_wall_s
        );
    }
    line
}

/// Runs `switchyard plan`.
pub fn run_plan(args: PlanArgs) -> Result<(), LoadgenError> {
    let source = WorkloadSource::new(&args.workload)?;
    let slo: SloSpec = args.slo.parse()?;
    let root = args
        .catalog
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let catalog = Catalog::new(root);
    let model = load_model(&catalog, &args.model)?;
    let devices = if args.devices.is_empty() {
        catalog.device_names()?
    } else {
        args.devices.clone()
    };
    let workload = source.build(&WorkloadOptions {
        rate: Some(args.rate),
        arrival: args.arrival.parse()?,
        requests: Some(args.requests),
        seed: args.seed,
        speedup: args.speedup,
        start: args.start,
        ..WorkloadOptions::default()
    })?;
    // The same spec drawn with another seed, to confirm the answer.
    let confirm = source.build(&WorkloadOptions {
        rate: Some(args.rate),
        arrival: args.arrival.parse()?,
        requests: Some(args.requests),
        seed: args.seed.wrapping_add(1),
        speedup: args.speedup,
        start: args.start,
        ..WorkloadOptions::default()
    })?;
    let (policy, objective) = parse_policy_choice(&args.policy)?;
    let opts = PlanOptions {
        devices,
        max_devices: args.max_devices,
        slo,
        policy,
        objective: objective.unwrap_or_default(),
        rate: args.rate,
        progress: !args.quiet,
        profiles_dir: catalog.root().to_path_buf(),
    };
    let result = plan(&catalog, &model, &workload, &confirm, &opts)?;
    result.write(&args.out, &opts)?;
    eprintln!("{}", result.headline());
    eprintln!("wrote {}/plan.json and switchyard.toml", args.out.display());
    Ok(())
}
