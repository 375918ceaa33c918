//! Reports: `results.json`, `requests.csv` and a self-contained
//! `report.html`, identical in form for live and simulated runs.
//!
//! `results.json` is `{"runs": [RunSummary...], "workload": [...], "generated_by": ...}`;
//! each run has `label`, `policy`, `rate`, `requests`, `completed`, `failed`,
//! `duration_s`, `throughput.{requests_per_s,output_tokens_per_s}`,
//! `ttft_s`/`tpot_s`/`itl_s`/`e2e_s` (each `mean,p50,p90,p95,p99`), `slo`,
//! `goodput.requests_per_s`, `slo_attainment`, and for sim targets
//! `cost.{usd_per_hour,usd_per_million_output_tokens}` and `devices[].utilization`.
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

/// Writes `results.json`.
pub fn write_json(path: &Path, runs: &[Run], workload: &[String]) -> Result<(), LoadgenError> {
    let doc = serde_json::json!({
        "generated_by": concat!("switchyard-loadgen ", env!("CARGO_PKG_VERSION")),
        "workload": workload,
        "runs": runs.iter().map(|r| &r.summary).collect::<Vec<_>>(),
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
