//! Reports: `results.json`, `requests.csv` and a self-contained
//! `report.html`, identical in form for live and simulated runs.
//!
//! `results.json` is `{"runs": [RunSummary...], "workload": [...], "generated_by": ...}`;
//! each run has `label`, `policy`, `rate`, `requests`, `completed`, `failed`,
//! `duration_s`, `throughput.{requests_per_s,output_tokens_per_s}`,
//! `ttft_s`/`tpot_s`/`itl_s`/`e2e_s` (each `mean,p50,p90,p95,p99`), `slo`,
//! `goodput.requests_per_s`, `slo_attainment`, and for sim targets
//! `cost.{usd_per_hour,usd_per_million_output_tokens}` and `devices[].utilization`.
//! With a sweep, `slo_capacity` lists per policy the highest rate that met
//! the SLO and its goodput per dollar (capacity at the SLO).
//! `requests.csv` has one row per request per run (with the largest ITL;
//! every ITL in whole microseconds, `;`-separated, in column `itl_us` when
//! asked for: an hour of traffic has millions).

pub mod html;
pub mod summary;
pub mod svg;

use std::io::Write;
use std::path::Path;

use crate::error::LoadgenError;
use crate::metrics::{RequestRecord, Samples};
pub use summary::RunSummary;

/// A finished run: its summary, records and sorted latency samples.
#[derive(Debug, Clone)]
pub struct Run {
    /// `results.json` entry.
    pub summary: RunSummary,
    /// Per-request records.
    pub records: Vec<RequestRecord>,
    /// Sorted latencies (for CDFs).
    pub samples: Samples,
}

impl Run {
    /// Summarises `records` under `label`.
    pub fn new(
        label: String,
        target: String,
        records: Vec<RequestRecord>,
        slo: crate::slo::SloSpec,
    ) -> Self {
        let mut samples = Samples::collect(&records);
        let summary = RunSummary::new(label, target, &records, &mut samples, slo);
        Self {
            summary,
            records,
            samples,
        }
    }
}

/// Writes `results.json`, `requests.csv` and `report.html` into `dir`.
pub fn write_all(
    dir: &Path,
    runs: &[Run],
    workload: &[String],
    title: &str,
    csv_itls: bool,
) -> Result<(), LoadgenError> {
    std::fs::create_dir_all(dir).map_err(|e| LoadgenError::io(dir, e))?;
    write_json(&dir.join("results.json"), runs, workload)?;
    write_csv(&dir.join("requests.csv"), runs, csv_itls)?;
    let html = html::render(runs, workload, title);
    let p = dir.join("report.html");
    std::fs::write(&p, html).map_err(|e| LoadgenError::io(&p, e))
}

/// One policy's capacity at the SLO across a sweep.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SloCapacity {
    /// Policy (or `run` for live targets).
    pub policy: String,
    /// Highest swept rate whose run met the SLO (percentiles within target, nothing failed).
    pub max_rate_meeting_slo: Option<f64>,
    /// Goodput at that rate, requests per second.
    pub goodput_requests_per_s: f64,
    /// Good requests per fleet USD at that rate (sim).
    pub goodput_requests_per_usd: Option<f64>,
}

/// Per policy, the highest swept rate that met the SLO (empty unless some policy ran at several rates).
pub fn slo_capacity(runs: &[Run]) -> Vec<SloCapacity> {
    let mut policies: Vec<String> = Vec::new();
    for r in runs {
        let p = r.summary.policy.clone().unwrap_or_else(|| "run".into());
        if !policies.contains(&p) {
            policies.push(p);
        }
    }
    fn of<'a>(runs: &'a [Run], p: &'a str) -> impl Iterator<Item = &'a Run> {
        runs.iter()
            .filter(move |r| r.summary.policy.as_deref().unwrap_or("run") == p)
    }
    if policies.iter().all(|p| of(runs, p).count() < 2) {
        return Vec::new();
    }
    policies
        .iter()
        .map(|p| {
            let best = of(runs, p).filter(|r| r.summary.slo_met).max_by(|a, b| {
                a.summary
                    .rate
                    .unwrap_or(0.0)
                    .total_cmp(&b.summary.rate.unwrap_or(0.0))
            });
            SloCapacity {
                policy: p.clone(),
                max_rate_meeting_slo: best.and_then(|r| r.summary.rate),
                goodput_requests_per_s: best.map_or(0.0, |r| r.summary.goodput.requests_per_s),
                goodput_requests_per_usd: best
                    .and_then(|r| r.summary.cost.map(|c| c.goodput_requests_per_usd)),
            }
        })
        .collect()
}

/// Writes `results.json`.
pub fn write_json(path: &Path, runs: &[Run], workload: &[String]) -> Result<(), LoadgenError> {
    let doc = serde_json::json!({
        "generated_by": concat!("switchyard-loadgen ", env!("CARGO_PKG_VERSION")),
        "workload": workload,
        "runs": runs.iter().map(|r| &r.summary).collect::<Vec<_>>(),
        "slo_capacity": slo_capacity(runs),
    });
    let text = serde_json::to_string_pretty(&doc).expect("summaries serialise");
    std::fs::write(path, text).map_err(|e| LoadgenError::io(path, e))
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.6}")).unwrap_or_default()
}

/// Writes `requests.csv`; the `itl_us` column is filled only with `itls`.
pub fn write_csv(path: &Path, runs: &[Run], itls: bool) -> Result<(), LoadgenError> {
    let f = std::fs::File::create(path).map_err(|e| LoadgenError::io(path, e))?;
    let mut w = std::io::BufWriter::new(f);
    let io = |e| LoadgenError::io(path, e);
    writeln!(w, "run,id,source,scheduled_s,sent_s,dispatch_delay_s,device,prompt_tokens,max_tokens,output_tokens,ttft_s,tpot_s,e2e_s,outcome,status,preemptions,itl_max_s,itl_us").map_err(io)?;
    for run in runs {
        let label = run.summary.label.replace(',', ";");
        for r in &run.records {
            write!(
                w,
                "{label},{},{},{:.6},{:.6},{:.6},{},{},{},{},{},{},{},{},{},{},{:.6},",
                r.id,
                r.source,
                r.scheduled_s,
                r.sent_s,
                r.dispatch_delay_s(),
                r.device.map(|d| d.to_string()).unwrap_or_default(),
                r.prompt_tokens,
                r.max_tokens,
                r.output_tokens,
                opt(r.ttft_s),
                opt(r.tpot_s()),
                opt(r.e2e_s),
                r.outcome.as_str(),
                r.status.map(|s| s.to_string()).unwrap_or_default(),
                r.preemptions,
                r.itl_s.iter().fold(0.0f32, |a, &b| a.max(b))
            )
            .map_err(io)?;
            for (i, x) in r.itl_s.iter().enumerate().filter(|_| itls) {
                if i > 0 {
                    w.write_all(b";").map_err(io)?;
                }
                write!(w, "{}", (f64::from(*x) * 1e6).round() as u64).map_err(io)?;
            }
            w.write_all(b"\n").map_err(io)?;
        }
    }
    w.flush().map_err(io)
}
