//! Capacity planning: the cheapest fleet composition (how many devices of
//! each type) that meets the SLO percentiles at a request rate, found by
//! simulation.
//!
//! # Search
//! 1. **Per-type bounds.** For each device type, exponential then binary
//!    search on the count of a homogeneous fleet gives `nₜ`, the fewest
//!    devices of that type that meet the SLO (or none within
//!    `max_devices`). That is the cheapest homogeneous fleet per type, and
//!    `cₜ = rate / nₜ` estimates one device's capacity (a type that never
//!    meets the SLO alone is credited with the best goodput per device its
//!    fleets reached, so it can still join a mix).
//! 2. **Local search** from the cheapest homogeneous fleet: neighbours drop
//!    a device, swap one type for another, or trade two devices for one (and
//!    back); only neighbours cheaper than the incumbent whose estimated
//!    capacity `Σ nₜ·cₜ` is at least [`CAPACITY_SLACK`]·rate are simulated,
//!    cheapest first; the first that meets the SLO becomes the incumbent.
//!    Stops when no neighbour improves or after [`MAX_EVALUATIONS`].
//!
//! 3. **Confirmation.** The cheapest feasible fleets are simulated again on
//!    workloads of the same spec drawn with other seeds (`plan` uses three);
//!    the cheapest candidate that meets the SLO on all of them is chosen, so
//!    the answer is not an artefact of one draw.
//!
//! A fleet *meets* the SLO when the SLO percentile of TTFT and of TPOT is
//! within target and at most [`MAX_FAILED_FRACTION`] of requests fail.
//! Every candidate runs the identical workload; results are cached by
//! composition. The bisection of step 1 assumes feasibility is monotone in
//! the device count, which holds when the router keeps every device within
//! the SLO it predicts; [`brute_force_min_count`] (simulate n = 1, 2, … under
//! each policy) is the reference it is tested against.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use switchyard_backends::{Catalog, ModelSpec};
use switchyard_scheduler::router::{Objective, PolicyKind, RouterConfig};

use crate::error::LoadgenError;
use crate::fleet::{DeviceType, Fleet, FleetSpec};
use crate::progress::Progress;
use crate::report::Run;
use crate::sim::{simulate, SimOptions};
use crate::slo::SloSection;
use crate::workload::Workload;
use switchyard_scheduler::config::EngineSection;

/// Neighbours whose estimated capacity is below this fraction of the rate are not simulated.
pub const CAPACITY_SLACK: f64 = 0.7;
/// Simulations the local search may run.
pub const MAX_EVALUATIONS: usize = 80;
/// Cheapest feasible candidates tried on the confirmation workloads.
pub const MAX_CONFIRMATIONS: usize = 8;
/// Largest fraction of failed requests a feasible fleet may have.
pub const MAX_FAILED_FRACTION: f64 = 0.01;

/// What to plan for.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// Device types considered.
    pub devices: Vec<String>,
    /// Largest fleet.
    pub max_devices: u32,
    /// Targets.
    pub slo: SloSection,
    /// Routing policy.
    pub policy: PolicyKind,
    /// Objective of the cost policy.
    pub objective: Objective,
    /// Request rate, req/s.
    pub rate: f64,
    /// Draw a progress bar.
    pub progress: bool,
    /// Profiles directory (written into the generated config).
    pub profiles_dir: std::path::PathBuf,
}

/// Predicted behaviour of one fleet.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    /// Profile → count (types with count 0 omitted).
    pub fleet: Vec<(String, u32)>,
    /// Fleet price, USD/h.
    pub usd_per_hour: f64,
    /// Whether it meets the SLO.
    pub meets_slo: bool,
    /// TTFT at p50 and at the SLO percentile, ms.
    pub ttft_ms: [f64; 2],
    /// TPOT at p50 and at the SLO percentile, ms.
    pub tpot_ms: [f64; 2],
    /// Fraction of requests that completed within the SLO.
    pub slo_attainment: f64,
    /// Good requests per second.
    pub goodput_requests_per_s: f64,
    /// Fraction of requests that failed.
    pub failed_fraction: f64,
    /// Mean device utilisation.
    pub mean_utilization: f64,
}

/// The cheapest homogeneous fleet of one type.
#[derive(Debug, Clone, Serialize)]
pub struct Homogeneous {
    /// Profile.
    pub profile: String,
    /// The fleet, or none if no count up to `max_devices` meets the SLO.
    pub best: Option<Candidate>,
    /// Why the type was skipped, if it was.
    pub note: Option<String>,
    /// The brute-force reference, when asked for (`plan --brute-force`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brute_force: Option<BruteForce>,
}

/// The fewest devices of one type that meet the SLO by simulating every count.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BruteForce {
    /// Devices.
    pub devices: u32,
    /// The policy that needed that few.
    pub policy: PolicyKind,
}

/// What the search found.
#[derive(Debug, Clone, Serialize)]
pub struct PlanResult {
    /// Whether the chosen fleet also met the SLO on every confirmation workload.
    pub confirmed: bool,
    /// The cheapest fleet meeting the SLO.
    pub chosen: Candidate,
    /// Next-cheapest feasible fleets considered.
    pub runner_ups: Vec<Candidate>,
    /// Cheapest homogeneous fleet per type.
    pub homogeneous: Vec<Homogeneous>,
    /// Saving of the chosen fleet over the cheapest homogeneous one, USD/h.
    pub saving_vs_best_homogeneous_usd_per_hour: f64,
    /// Fleets simulated.
    pub evaluated: usize,
    /// Model name.
    pub model: String,
    /// Requests per candidate simulation.
    pub requests_per_candidate: usize,
}

struct Search<'a> {
    types: Vec<Option<DeviceType>>,
    names: Vec<String>,
    workload: &'a Workload,
    opts: &'a PlanOptions,
    cache: HashMap<Vec<u32>, Candidate>,
    progress: Progress,
}

/// Simulates composition `x` of `types` on `workload` under `opts`' policy and SLO.
fn simulate_candidate(
    types: &[Option<DeviceType>],
    x: &[u32],
    workload: &Workload,
    opts: &PlanOptions,
    policy: PolicyKind,
) -> Candidate {
    let mut fleet_types = Vec::new();
    let mut devices = Vec::new();
    let mut spec = FleetSpec::default();
    for (i, n) in x.iter().enumerate() {
        if *n == 0 {
            continue;
        }
        let t = types[i].clone().expect("only fitting types get counts");
        devices.extend(std::iter::repeat_n(fleet_types.len(), *n as usize));
        spec.devices.push((t.profile.clone(), *n));
        fleet_types.push(t);
    }
    let fleet = Fleet {
        types: fleet_types,
        devices,
        spec,
    };
    let router = RouterConfig {
        policy,
        objective: opts.objective,
        slo: opts.slo.router_slo(),
        ..RouterConfig::default()
    };
    let mut sim = simulate(
        &fleet,
        workload,
        &SimOptions {
            router,
            timeout: Duration::from_secs(600),
            progress: false,
            multi_step: true,
            budgeted_steps: true,
        },
    );
    let records = std::mem::take(&mut sim.records);
    let mut run = Run::new(String::new(), String::new(), records, opts.slo);
    run.summary = run.summary.with_sim(&fleet, &sim, 0.0);
    let s = &run.summary;
    let p = opts.slo.percent();
    let failed = s.failed as f64 / s.requests.max(1) as f64;
    let (ttft, tpot) = (s.ttft_s.at(p) * 1e3, s.tpot_s.at(p) * 1e3);
    Candidate {
        fleet: fleet.spec.devices.clone(),
        usd_per_hour: fleet.usd_per_hour(),
        meets_slo: failed <= MAX_FAILED_FRACTION
            && ttft <= opts.slo.ttft_ms
            && tpot <= opts.slo.tpot_ms,
        ttft_ms: [s.ttft_s.p50 * 1e3, ttft],
        tpot_ms: [s.tpot_s.p50 * 1e3, tpot],
        slo_attainment: s.slo_attainment,
        goodput_requests_per_s: s.goodput.requests_per_s,
        failed_fraction: failed,
        mean_utilization: s.devices.iter().map(|d| d.utilization).sum::<f64>()
            / s.devices.len().max(1) as f64,
    }
}

/// Per device type: the type, or `None` where the model does not fit, and why not.
type TypesAndNotes = (Vec<Option<DeviceType>>, Vec<Option<String>>);

/// Device types for `opts.devices` (`None` where the model does not fit) and why not.
fn device_types(
    catalog: &Catalog,
    model: &ModelSpec,
    opts: &PlanOptions,
) -> Result<TypesAndNotes, LoadgenError> {
    let mut types = Vec::new();
    let mut notes = Vec::new();
    for name in &opts.devices {
        match DeviceType::new(catalog, name, model, &EngineSection::default()) {
            Ok(t) => {
                types.push(Some(t));
                notes.push(None);
            }
            Err(LoadgenError::Device { reason, .. }) => {
                types.push(None);
                notes.push(Some(reason));
            }
            Err(e) => return Err(e),
        }
    }
    Ok((types, notes))
}

/// The reference for the planner's bisection: for `profile` alone,
/// simulates n = 1, 2, … `opts.max_devices` devices under each of
/// `policies` and returns the fewest that meet the SLO under any of them,
/// with that policy.
pub fn brute_force_min_count(
    catalog: &Catalog,
    model: &ModelSpec,
    workload: &Workload,
    opts: &PlanOptions,
    profile: &str,
    policies: &[PolicyKind],
) -> Result<Option<(u32, PolicyKind)>, LoadgenError> {
    let t = DeviceType::new(catalog, profile, model, &EngineSection::default())?;
    let types = [Some(t)];
    for n in 1..=opts.max_devices {
        for &policy in policies {
            if simulate_candidate(&types, &[n], workload, opts, policy).meets_slo {
                return Ok(Some((n, policy)));
            }
        }
    }
    Ok(None)
}

/// Step 1's outcome: per-type bounds and the cheapest homogeneous fleet.
struct Bounds {
    /// Per type, its cheapest homogeneous fleet (or why there is none).
    homogeneous: Vec<Homogeneous>,
    /// Per type, the estimated requests per second one device sustains.
    capacity: Vec<f64>,
    /// The cheapest homogeneous fleet that meets the SLO, with its price.
    best: Option<(Vec<u32>, f64)>,
}

impl<'a> Search<'a> {
    fn new(types: Vec<Option<DeviceType>>, workload: &'a Workload, opts: &'a PlanOptions) -> Self {
        Self {
            types,
            names: opts.devices.clone(),
            workload,
            opts,
            cache: HashMap::new(),
            progress: Progress::new("planning", MAX_EVALUATIONS as u64, opts.progress),
        }
    }

    fn price(&self, x: &[u32]) -> f64 {
        x.iter()
            .zip(&self.types)
            .map(|(n, t)| t.as_ref().map_or(0.0, |t| f64::from(*n) * t.usd_per_hour()))
            .sum()
    }

    fn eval(&mut self, x: &[u32]) -> Candidate {
        if let Some(c) = self.cache.get(x) {
            return c.clone();
        }
        let c = simulate_candidate(&self.types, x, self.workload, self.opts, self.opts.policy);
        self.cache.insert(x.to_vec(), c.clone());
        self.progress.set(self.cache.len() as u64);
        c
    }

    /// Composition of a simulated candidate.
    fn composition(&self, c: &Candidate) -> Vec<u32> {
        self.names
            .iter()
            .map(|n| c.fleet.iter().find(|(p, _)| p == n).map_or(0, |(_, k)| *k))
            .collect()
    }

    /// Fewest devices of type `t` alone that meet the SLO.
    fn min_count(&mut self, t: usize) -> Option<(u32, Candidate)> {
        let k = self.types.len();
        let unit = |n: u32| {
            let mut x = vec![0; k];
            x[t] = n;
            x
        };
        let (mut lo, mut hi) = (0u32, 1u32);
        loop {
            let c = self.eval(&unit(hi));
            if c.meets_slo {
                break;
            }
            if hi >= self.opts.max_devices {
                return None;
            }
            lo = hi;
            hi = (hi * 2).min(self.opts.max_devices);
        }
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if self.eval(&unit(mid)).meets_slo {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Some((hi, self.eval(&unit(hi))))
    }

    /// Best goodput per device that any simulated fleet of type `t` alone reached.
    fn best_goodput_per_device(&self, t: usize) -> f64 {
        self.cache
            .iter()
            .filter(|(x, _)| x.iter().enumerate().all(|(i, n)| (i == t) == (*n > 0)))
            .map(|(x, c)| c.goodput_requests_per_s / f64::from(x[t]))
            .fold(0.0, f64::max)
    }

    /// Step 1: the cheapest homogeneous fleet of every type that fits
    /// (`notes` says why the others do not) and each type's capacity.
    fn bounds(&mut self, notes: &[Option<String>]) -> Bounds {
        let k = self.types.len();
        let mut b = Bounds {
            homogeneous: Vec::with_capacity(k),
            capacity: vec![0.0; k],
            best: None,
        };
        for t in 0..k {
            if self.types[t].is_none() {
                b.homogeneous.push(Homogeneous {
                    profile: self.names[t].clone(),
                    best: None,
                    note: notes[t].clone(),
                    brute_force: None,
                });
                continue;
            }
            let found = self.min_count(t);
            // An infeasible type may still help in a mix: credit it with the
            // best goodput per device any of its homogeneous fleets reached.
            b.capacity[t] = self.best_goodput_per_device(t);
            if let Some((n, c)) = &found {
                b.capacity[t] = b.capacity[t].max(self.opts.rate / f64::from(*n));
                let mut x = vec![0; k];
                x[t] = *n;
                if b.best.as_ref().is_none_or(|best| c.usd_per_hour < best.1) {
                    b.best = Some((x, c.usd_per_hour));
                }
            }
            b.homogeneous.push(Homogeneous {
                profile: self.names[t].clone(),
                note: found.is_none().then(|| {
                    format!(
                        "no fleet of up to {} devices meets the SLO",
                        self.opts.max_devices
                    )
                }),
                best: found.map(|f| f.1),
                brute_force: None,
            });
        }
        b
    }

    /// Neighbours of `x` worth simulating: cheaper than `cost`, within the
    /// device bound, estimated to carry the rate, not simulated yet; cheapest first.
    fn promising_neighbours(&self, x: &[u32], cost: f64, capacity: &[f64]) -> Vec<Vec<u32>> {
        let mut out = neighbours(x, self.types.len());
        out.retain(|y| {
            let est: f64 = y.iter().zip(capacity).map(|(n, c)| f64::from(*n) * c).sum();
            y.iter().sum::<u32>() <= self.opts.max_devices
                && y.iter().sum::<u32>() > 0
                && y.iter()
                    .zip(&self.types)
                    .all(|(n, t)| *n == 0 || t.is_some())
                && self.price(y) < cost - 1e-9
                && est >= CAPACITY_SLACK * self.opts.rate
                && !self.cache.contains_key(y)
        });
        out.sort_by(|a, b| self.price(a).total_cmp(&self.price(b)));
        out
    }

    /// Step 2: from `x` at price `cost`, moves to the cheapest promising
    /// neighbour that meets the SLO until none does or the budget is spent.
    fn local_search(&mut self, mut x: Vec<u32>, mut cost: f64, capacity: &[f64]) -> Vec<u32> {
        'search: while self.cache.len() < MAX_EVALUATIONS {
            for y in self.promising_neighbours(&x, cost, capacity) {
                if self.cache.len() >= MAX_EVALUATIONS {
                    break 'search;
                }
                if self.eval(&y).meets_slo {
                    cost = self.price(&y);
                    x = y;
                    continue 'search;
                }
            }
            break;
        }
        x
    }

    /// Every simulated candidate that meets the SLO, cheapest first.
    fn feasible(&self) -> Vec<Candidate> {
        let mut feasible: Vec<Candidate> = self
            .cache
            .values()
            .filter(|c| c.meets_slo)
            .cloned()
            .collect();
        feasible.sort_by(|a, b| a.usd_per_hour.total_cmp(&b.usd_per_hour));
        feasible
    }

    /// Step 3: the composition of the cheapest of `feasible` that also
    /// meets the SLO on `confirm`, if one of the first few does.
    fn confirmed(&self, feasible: &[Candidate], confirm: &[Workload]) -> Option<Vec<u32>> {
        feasible.iter().take(MAX_CONFIRMATIONS).find_map(|c| {
            let y = self.composition(c);
            confirm
                .iter()
                .all(|w| {
                    simulate_candidate(&self.types, &y, w, self.opts, self.opts.policy).meets_slo
                })
                .then_some(y)
        })
    }
}

/// Searches for the cheapest fleet meeting `opts.slo` at `opts.rate` on
/// `workload`, confirmed on every workload of `confirm` (the same spec,
/// other seeds).
pub fn plan(
    catalog: &Catalog,
    model: &ModelSpec,
    workload: &Workload,
    confirm: &[Workload],
    opts: &PlanOptions,
) -> Result<PlanResult, LoadgenError> {
    let (types, notes) = device_types(catalog, model, opts)?;
    let mut s = Search::new(types, workload, opts);
    let bounds = s.bounds(&notes);
    let Some((x, best_homogeneous)) = bounds.best else {
        return Err(LoadgenError::Infeasible {
            max_devices: opts.max_devices,
            rate: opts.rate,
        });
    };
    let x = s.local_search(x, best_homogeneous, &bounds.capacity);
    s.progress.finish(s.cache.len() as u64);
    // If no candidate holds on the second workload, the search's answer stands.
    let mut feasible = s.feasible();
    let confirmed = s.confirmed(&feasible, confirm);
    let chosen = s.eval(confirmed.as_deref().unwrap_or(&x));
    feasible.retain(|c| c.fleet != chosen.fleet);
    feasible.truncate(5);
    Ok(PlanResult {
        confirmed: confirmed.is_some(),
        saving_vs_best_homogeneous_usd_per_hour: best_homogeneous - chosen.usd_per_hour,
        chosen,
        runner_ups: feasible,
        homogeneous: bounds.homogeneous,
        evaluated: s.cache.len(),
        model: model.name.clone(),
        requests_per_candidate: workload.requests.len(),
    })
}

/// Compositions one move away from `x`: drop one, swap one, two-for-one, one-for-two.
fn neighbours(x: &[u32], k: usize) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    for a in 0..k {
        if x[a] == 0 {
            continue;
        }
        let mut y = x.to_vec();
        y[a] -= 1;
        out.push(y.clone());
        for b in (0..k).filter(|&b| b != a) {
            let mut z = y.clone();
            z[b] += 1;
            out.push(z.clone());
            z[b] += 1;
            out.push(z);
            if x[a] >= 2 {
                let mut w = y.clone();
                w[a] -= 1;
                w[b] += 1;
                out.push(w);
            }
        }
    }
    out
}

/// Everything the generated `switchyard.toml` needs besides the fleet.
#[derive(Debug, Clone)]
pub struct ConfigContext<'a> {
    /// Routing policy.
    pub policy: PolicyKind,
    /// Objective of the cost policy.
    pub objective: Objective,
    /// SLO targets.
    pub slo: &'a SloSection,
    /// Model spec name.
    pub model: &'a str,
    /// Profiles directory (written as given; make it absolute to run the config from anywhere).
    pub profiles_dir: &'a Path,
    /// Planned request rate (a comment).
    pub rate: f64,
}

/// The server configuration (`switchyard.toml`) for a fleet, in the live
/// server's schema; the one place that schema is written. Engine sizing is
/// what the planner simulated (the server's defaults).
pub fn server_config_toml(fleet: &[(String, u32)], cx: &ConfigContext<'_>) -> String {
    let mut s = format!(
        "# Generated by `switchyard plan` for {} at {} req/s.\n\
         # Serve it with `switchyard serve --config switchyard.toml`, or simulate it with\n\
         # `switchyard loadgen --target sim:switchyard.toml ...`.\n\
         profiles_dir = {:?}\n\n[model]\nspec = {:?}\n\n\
         [engine]\nblock_size = 16\nmax_num_seqs = 256\nmax_batched_tokens = 2048\nenable_prefix_caching = true\n\n\
         [router]\npolicy = {:?}\nobjective = {:?}\n\n[router.slo]\nttft_ms = {}\ntpot_ms = {}\npercentile = {}\n",
        cx.model,
        cx.rate,
        cx.profiles_dir.display().to_string(),
        cx.model,
        cx.policy.as_str(),
        cx.objective.as_str(),
        cx.slo.ttft_ms,
        cx.slo.tpot_ms,
        cx.slo.percentile.min(0.999),
    );
    for (profile, n) in fleet {
        for i in 0..*n {
            s += &format!("\n[[devices]]\nid = \"{profile}-{i}\"\nbackend = \"sim\"\nprofile = \"{profile}\"\n");
        }
    }
    s
}

impl PlanResult {
    /// Writes `plan.json` and `switchyard.toml` into `dir`.
    pub fn write(&self, dir: &Path, opts: &PlanOptions) -> Result<(), LoadgenError> {
        std::fs::create_dir_all(dir).map_err(|e| LoadgenError::io(dir, e))?;
        let doc = serde_json::json!({
            "rate": opts.rate,
            "slo": opts.slo,
            "policy": opts.policy,
            "objective": opts.objective,
            "plan": self,
        });
        let p = dir.join("plan.json");
        std::fs::write(
            &p,
            serde_json::to_string_pretty(&doc).expect("plan serialises"),
        )
        .map_err(|e| LoadgenError::io(&p, e))?;
        let p = dir.join("switchyard.toml");
        let profiles_dir =
            std::fs::canonicalize(&opts.profiles_dir).unwrap_or_else(|_| opts.profiles_dir.clone());
        let cx = ConfigContext {
            policy: opts.policy,
            objective: opts.objective,
            slo: &opts.slo,
            model: &self.model,
            profiles_dir: &profiles_dir,
            rate: opts.rate,
        };
        let toml = server_config_toml(&self.chosen.fleet, &cx);
        std::fs::write(&p, toml).map_err(|e| LoadgenError::io(&p, e))
    }

    /// One-paragraph summary for the terminal.
    pub fn headline(&self) -> String {
        let fleet = |c: &Candidate| {
            c.fleet
                .iter()
                .map(|(p, n)| format!("{p}={n}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut s = format!(
            "cheapest fleet: {} at {:.2} USD/h (TTFT p50/pSLO {:.0}/{:.0} ms, TPOT {:.1}/{:.1} ms); {} fleets simulated",
            fleet(&self.chosen), self.chosen.usd_per_hour, self.chosen.ttft_ms[0], self.chosen.ttft_ms[1],
            self.chosen.tpot_ms[0], self.chosen.tpot_ms[1], self.evaluated
        );
        for h in &self.homogeneous {
            match &h.best {
                Some(c) => {
                    s += &format!(
                        "\n  homogeneous {}: {} at {:.2} USD/h",
                        h.profile,
                        fleet(c),
                        c.usd_per_hour
                    )
                }
                None => {
                    s += &format!(
                        "\n  homogeneous {}: {}",
                        h.profile,
                        h.note.as_deref().unwrap_or("infeasible")
                    )
                }
            }
            if let Some(b) = h.brute_force {
                s += &format!(" (brute force: {} under {})", b.devices, b.policy);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_cover_moves() {
        let n = neighbours(&[2, 0], 2);
        assert!(n.contains(&vec![1, 0]));
        assert!(n.contains(&vec![1, 1]));
        assert!(n.contains(&vec![1, 2]));
        assert!(n.contains(&vec![0, 1]));
    }

    #[test]
    fn server_config_is_a_valid_fleet() {
        let slo: SloSection = "ttft_ms=500,tpot_ms=50".parse().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
        let cx = ConfigContext {
            policy: PolicyKind::Cost,
            objective: Objective::Elastic,
            slo: &slo,
            model: "llama-3.1-8b",
            profiles_dir: &root,
            rate: 3.0,
        };
        let t = server_config_toml(&[("l4".into(), 2), ("h100-sxm".into(), 1)], &cx);
        switchyard_scheduler::config::Config::from_toml(Path::new("/tmp/switchyard.toml"), &t)
            .unwrap();
        let f = FleetSpec::from_toml(Path::new("switchyard.toml"), &t).unwrap();
        assert_eq!(f.devices, vec![("l4".into(), 2), ("h100-sxm".into(), 1)]);
        assert_eq!(f.router.slo.ttft_ms, 500.0);
        assert_eq!(f.router.objective, Objective::Elastic);
    }
}
