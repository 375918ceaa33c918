//! Command-line front ends: [`LoadgenArgs`] + [`run_loadgen`] and
//! [`PlanArgs`] + [`run_plan`]. The binary flattens these into its
//! `loadgen` and `plan` subcommands and adds nothing else.
//!
//! A target is `sim:FLEET` (a fleet TOML path or `PROFILE=COUNT,...`) or an
//! `http(s)://` URL of an OpenAI-compatible server. On a sim target every
//! (policy, rate) pair is one run on the identical workload; on a live
//! target every rate is one run.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use clap::Args;
use switchyard_backends::Catalog;
use switchyard_scheduler::config::DEFAULT_MODEL_SPEC;
use switchyard_scheduler::router::{Objective, PolicyKind, RouterConfig};

use crate::error::LoadgenError;
use crate::fleet::{Fleet, FleetSpec};
use crate::http::{run_http, HttpOptions};
use crate::plan::{brute_force_min_count, plan, BruteForce, PlanOptions, PlanResult};
use crate::report::{self, Run};
use crate::sim::{simulate, SimOptions};
use crate::slo::SloSection;
use crate::workload::{Arrival, Workload, WorkloadOptions, WorkloadSource};

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
    pub arrival: Arrival,
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
    #[arg(long, value_delimiter = ',', value_name = "POLICY[:OBJECTIVE]")]
    pub policy: Vec<PolicyChoice>,
    /// Objective of the cost policy, `fixed` or `elastic` (default: the fleet's, else `fixed`).
    #[arg(long, value_parser = parse_objective)]
    pub objective: Option<Objective>,
    /// SLO-budgeted engine steps on sim targets, `on` or `off` (default: the fleet's, else `on`).
    #[arg(long, value_name = "on|off", value_parser = parse_switch)]
    pub step_budget: Option<bool>,
    /// SLO targets, `ttft_ms=T,tpot_ms=P[,percentile=95]` (default: the fleet's, else 2000/100).
    #[arg(long)]
    pub slo: Option<SloSection>,
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
    pub slo: SloSection,
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
    #[arg(long, default_value = DEFAULT_MODEL_SPEC)]
    pub model: String,
    /// Routing policy of the planned fleet (`cost:elastic` sets the cost policy's objective).
    #[arg(long, default_value = "cost", value_name = "POLICY[:OBJECTIVE]")]
    pub policy: PolicyChoice,
    /// Requests simulated per candidate fleet. Short runs let a fleet at
    /// the edge of its capacity pass by luck (at 32 req/s, 2,000 requests
    /// chose a fleet that missed the SLO on 3 of 9 other seeds; 6,000 chose
    /// one that met it on all of them).
    #[arg(long, default_value_t = 6000)]
    pub requests: u64,
    /// Arrival process, as for `loadgen`.
    #[arg(long, default_value = "poisson")]
    pub arrival: Arrival,
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
    /// Also find each type's fewest devices by simulating n = 1, 2, … under
    /// cost, least-loaded and latency, and report it beside the planner's answer.
    #[arg(long)]
    pub brute_force: bool,
}

/// A routing policy and, optionally, the cost objective it runs under:
/// `POLICY[:OBJECTIVE]`, e.g. `cost:elastic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyChoice {
    /// The policy.
    pub policy: PolicyKind,
    /// The objective, when the choice names one (else the run's default applies).
    pub objective: Option<Objective>,
}

impl FromStr for PolicyChoice {
    type Err = LoadgenError;

    fn from_str(s: &str) -> Result<Self, LoadgenError> {
        let (policy, objective) = s.split_once(':').map_or((s, None), |(p, o)| (p, Some(o)));
        Ok(Self {
            policy: parse_policy(policy)?,
            objective: objective.map(parse_objective).transpose()?,
        })
    }
}

impl fmt::Display for PolicyChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.policy.as_str())?;
        match self.objective {
            Some(o) => write!(f, ":{o}"),
            None => Ok(()),
        }
    }
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

/// Parses an objective name.
pub fn parse_objective(s: &str) -> Result<Objective, LoadgenError> {
    s.parse::<Objective>()
        .map_err(|_| LoadgenError::spec("objective", s, "expected fixed or elastic"))
}

/// Parses `on` / `off` (also `true`/`false`, `yes`/`no`).
fn parse_switch(s: &str) -> Result<bool, LoadgenError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(LoadgenError::spec("switch", s, "expected on or off")),
    }
}

/// Runs `switchyard loadgen`.
pub fn run_loadgen(args: LoadgenArgs) -> Result<(), LoadgenError> {
    let source = WorkloadSource::new(&args.workload)?;
    let (runs, title) = match args.target.strip_prefix("sim:") {
        Some(fleet) => run_sim_target(&args, &source, fleet)?,
        None => run_live_target(&args, &source)?,
    };
    report::write_all(&args.out, &runs, &source.labels(), &title, args.csv_itls)?;
    eprintln!(
        "wrote {}/results.json, requests.csv, report.html",
        args.out.display()
    );
    Ok(())
}

impl LoadgenArgs {
    /// One run per swept rate, else one at `--rate` (none: closed loop, or a trace's own rate).
    fn rates(&self) -> Vec<Option<f64>> {
        if self.sweep.is_empty() {
            vec![self.rate]
        } else {
            self.sweep.iter().map(|r| Some(*r)).collect()
        }
    }

    /// The workload flags, at `rate`.
    fn workload_options(&self, rate: Option<f64>) -> WorkloadOptions {
        WorkloadOptions {
            rate,
            arrival: self.arrival,
            concurrency: self.concurrency,
            duration: self.duration,
            requests: self.requests,
            seed: self.seed,
            speedup: self.speedup,
            start: self.start,
        }
    }

    /// `--timeout` as a duration.
    fn timeout(&self) -> Result<Duration, LoadgenError> {
        Duration::try_from_secs_f64(self.timeout).map_err(|_| {
            LoadgenError::spec(
                "timeout",
                &self.timeout.to_string(),
                "expected a number of seconds, at least 0",
            )
        })
    }
}

/// The rate a run reports: the one asked for, else the workload's own; none if zero.
fn reported_rate(rate: Option<f64>, workload: &Workload) -> Option<f64> {
    rate.or(Some(workload.offered_rate())).filter(|r| *r > 0.0)
}

/// A sim target with its settings resolved: flags first, then the fleet
/// file's, then the defaults.
struct SimTarget {
    fleet: Fleet,
    model_name: String,
    slo: SloSection,
    policies: Vec<PolicyChoice>,
    /// Objective of runs whose policy choice names none.
    objective: Objective,
    /// Router settings every run shares; each run sets its policy and objective.
    router: RouterConfig,
    budgeted_steps: bool,
    timeout: Duration,
}

impl SimTarget {
    /// Builds the fleet of `fleet_text` (a fleet file or `PROFILE=COUNT,...`).
    fn resolve(args: &LoadgenArgs, fleet_text: &str) -> Result<Self, LoadgenError> {
        let spec = FleetSpec::parse_target(fleet_text)?;
        let catalog = Catalog::new(
            spec.profiles_dir
                .clone()
                .unwrap_or_else(|| args.profiles.clone()),
        );
        let model_name = args
            .model
            .clone()
            .or_else(|| spec.model.clone())
            .unwrap_or_else(|| DEFAULT_MODEL_SPEC.into());
        let model = catalog.model(&model_name)?;
        let fleet = Fleet::build(&catalog, &spec, &model)?;
        // Flags, then the fleet file, then the defaults (the sections' own).
        let slo = args.slo.unwrap_or(spec.router.slo);
        let policies = if args.policy.is_empty() {
            vec![PolicyChoice {
                policy: spec.router.policy,
                objective: None,
            }]
        } else {
            args.policy.clone()
        };
        let objective = args.objective.unwrap_or(spec.router.objective);
        let router = RouterConfig {
            slo: slo.router_slo(),
            ..spec.router.router_config()
        };
        Ok(Self {
            fleet,
            model_name,
            slo,
            policies,
            objective,
            router,
            budgeted_steps: args.step_budget.unwrap_or(spec.engine.slo_budgeted_steps),
            timeout: args.timeout()?,
        })
    }

    /// Simulates `workload` (offered at `rate`) under `policy` as the run `label`.
    fn run(
        &self,
        args: &LoadgenArgs,
        workload: &Workload,
        rate: Option<f64>,
        policy: PolicyChoice,
        label: String,
    ) -> Run {
        let opts = SimOptions {
            router: RouterConfig {
                policy: policy.policy,
                objective: policy.objective.unwrap_or(self.objective),
                ..self.router.clone()
            },
            timeout: self.timeout,
            progress: !args.quiet,
            multi_step: true,
            budgeted_steps: self.budgeted_steps,
        };
        let started = Instant::now();
        let mut result = simulate(&self.fleet, workload, &opts);
        let wall = started.elapsed().as_secs_f64();
        let records = std::mem::take(&mut result.records);
        let mut run = Run::new(label, args.target.clone(), records, self.slo);
        run.summary = run.summary.with_sim(&self.fleet, &result, wall);
        run.summary.policy = Some(policy.to_string());
        run.summary.rate = reported_rate(rate, workload);
        run
    }
}

/// Runs every (rate, policy) pair on a sim target; returns the runs and the report's title.
fn run_sim_target(
    args: &LoadgenArgs,
    source: &WorkloadSource,
    fleet_text: &str,
) -> Result<(Vec<Run>, String), LoadgenError> {
    let target = SimTarget::resolve(args, fleet_text)?;
    let rates = args.rates();
    let many_policies = target.policies.len() > 1;
    let mut runs = Vec::new();
    for &rate in &rates {
        let workload = source.build(&args.workload_options(rate))?;
        for &policy in &target.policies {
            let label = run_label(Some(policy), rate, rates.len() > 1, many_policies);
            let run = target.run(args, &workload, rate, policy, label);
            eprintln!("{}", one_line(&run));
            runs.push(run);
        }
    }
    let title = format!(
        "Switchyard loadgen — sim {} ({})",
        target.fleet.spec.label(),
        target.model_name
    );
    Ok((runs, title))
}

/// Runs every rate against a live server; returns the runs and the report's title.
fn run_live_target(
    args: &LoadgenArgs,
    source: &WorkloadSource,
) -> Result<(Vec<Run>, String), LoadgenError> {
    let slo = args.slo.unwrap_or_default();
    let opts = HttpOptions {
        url: args.target.clone(),
        token_ids: args.token_ids,
        model: args.api_model.clone(),
        max_inflight: args.max_inflight,
        timeout: args.timeout()?,
        progress: !args.quiet,
        seed: args.seed,
    };
    let rates = args.rates();
    let mut runs = Vec::new();
    for &rate in &rates {
        let workload = source.build(&args.workload_options(rate))?;
        let records = run_http(&workload, &opts)?;
        let label = run_label(None, rate, rates.len() > 1, false);
        let mut run = Run::new(label, args.target.clone(), records, slo);
        run.summary.rate = reported_rate(rate, &workload);
        eprintln!("{}", one_line(&run));
        runs.push(run);
    }
    Ok((runs, format!("Switchyard loadgen — {}", args.target)))
}

/// A run's name in the reports: the policy, with the rate when several are swept.
fn run_label(
    policy: Option<PolicyChoice>,
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
    // `--catalog` names profiles/devices; the catalog's root is its parent, which also holds models/.
    let root = args
        .catalog
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let catalog = Catalog::new(root);
    let model = catalog.model(&args.model)?;
    let opts = args.plan_options(&catalog)?;
    let workload = source.build(&args.workload_options(args.seed))?;
    // The same spec drawn with other seeds, to confirm the answer: a fleet
    // at the edge of its capacity can meet the SLO on one draw by luck.
    let confirm = (1..=CONFIRMATION_SEEDS)
        .map(|k| source.build(&args.workload_options(args.seed.wrapping_add(k))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut result = plan(&catalog, &model, &workload, &confirm, &opts)?;
    if args.brute_force {
        check_against_brute_force(&mut result, &catalog, &model, &workload, &opts)?;
    }
    result.write(&args.out, &opts)?;
    eprintln!("{}", result.headline());
    eprintln!("wrote {}/plan.json and switchyard.toml", args.out.display());
    Ok(())
}

/// Workloads (other seeds) a plan's answer must also meet the SLO on.
pub const CONFIRMATION_SEEDS: u64 = 3;

/// Fills each homogeneous entry's `brute_force` with the fewest devices
/// any of cost, least-loaded and latency needs (the planner's reference).
fn check_against_brute_force(
    result: &mut PlanResult,
    catalog: &Catalog,
    model: &switchyard_backends::ModelSpec,
    workload: &Workload,
    opts: &PlanOptions,
) -> Result<(), LoadgenError> {
    let policies = [
        PolicyKind::Cost,
        PolicyKind::LeastLoaded,
        PolicyKind::Latency,
    ];
    for h in &mut result.homogeneous {
        match brute_force_min_count(catalog, model, workload, opts, &h.profile, &policies) {
            Ok(found) => {
                h.brute_force = found.map(|(devices, policy)| BruteForce { devices, policy });
            }
            // The model does not fit this device: nothing to compare.
            Err(LoadgenError::Device { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl PlanArgs {
    /// The search's settings; without `--devices`, every profile in `catalog`.
    fn plan_options(&self, catalog: &Catalog) -> Result<PlanOptions, LoadgenError> {
        let devices = if self.devices.is_empty() {
            catalog.device_names()?
        } else {
            self.devices.clone()
        };
        Ok(PlanOptions {
            devices,
            max_devices: self.max_devices,
            slo: self.slo,
            policy: self.policy.policy,
            objective: self.policy.objective.unwrap_or_default(),
            rate: self.rate,
            progress: !self.quiet,
            profiles_dir: catalog.root().to_path_buf(),
        })
    }

    /// The workload flags, drawn with `seed`.
    fn workload_options(&self, seed: u64) -> WorkloadOptions {
        WorkloadOptions {
            rate: Some(self.rate),
            arrival: self.arrival,
            requests: Some(self.requests),
            seed,
            speedup: self.speedup,
            start: self.start,
            ..WorkloadOptions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Loadgen {
        #[command(flatten)]
        args: LoadgenArgs,
    }

    fn parse(extra: &[&str]) -> Result<LoadgenArgs, clap::Error> {
        let base = [
            "loadgen",
            "--target",
            "sim:l4=1",
            "--workload",
            "fixed:prompt=8,output=8",
        ];
        let argv = base.iter().chain(extra).chain(&["--out", "/tmp/o"]);
        Loadgen::try_parse_from(argv).map(|l| l.args)
    }

    #[test]
    fn policy_choices_print_as_written() {
        for s in ["cost", "cost:elastic", "least-loaded", "cost:fixed"] {
            assert_eq!(s.parse::<PolicyChoice>().unwrap().to_string(), s);
        }
        let c: PolicyChoice = "Least_Loaded".parse().unwrap();
        assert_eq!(c.policy, PolicyKind::LeastLoaded);
        assert_eq!(c.objective, None);
    }

    #[test]
    fn flags_parse_into_their_types() {
        let a = parse(&[
            "--policy",
            "cost,cost:elastic",
            "--objective",
            "elastic",
            "--step-budget",
            "off",
            "--slo",
            "ttft_ms=500,tpot_ms=50",
            "--arrival",
            "gamma:cv=2",
        ])
        .unwrap();
        let labels: Vec<String> = a.policy.iter().map(ToString::to_string).collect();
        assert_eq!(labels, ["cost", "cost:elastic"]);
        assert_eq!(a.objective, Some(Objective::Elastic));
        assert_eq!(a.step_budget, Some(false));
        assert_eq!(a.slo.map(|s| s.ttft_ms), Some(500.0));
        assert_eq!(a.arrival, Arrival::Gamma { cv: 2.0 });
        let d = parse(&[]).unwrap();
        assert_eq!(
            (d.arrival, d.step_budget, d.slo),
            (Arrival::Poisson, None, None)
        );
    }

    #[test]
    fn bad_flags_name_the_flag_and_the_fix() {
        for (flag, value, hint) in [
            ("--policy", "cost:cheap", "expected fixed or elastic"),
            ("--policy", "fastest", "expected cost, latency"),
            ("--objective", "cheap", "expected fixed or elastic"),
            ("--step-budget", "maybe", "expected on or off"),
            ("--slo", "ttft_ms=fast,tpot_ms=10", "ttft_ms"),
            ("--arrival", "bursty", "gamma:cv=X"),
        ] {
            let e = parse(&[flag, value]).unwrap_err().to_string();
            assert!(e.contains(flag) && e.contains(hint), "{flag} {value}: {e}");
        }
    }

    #[test]
    fn negative_timeouts_are_an_error() {
        let mut a = parse(&[]).unwrap();
        a.timeout = -1.0;
        assert!(a.timeout().unwrap_err().to_string().contains("timeout"));
    }
}
