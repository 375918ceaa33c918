//! Reports: `results.json`, `requests.csv` and a self-contained
//! `report.html`, identical in form for live and simulated runs.
//!
//! `results.json` is `{"runs": [RunSummary...], "workload": [...], "generated_by": ...}`;
//! each run has `label`, `policy`, `rate`, `requests`, `completed`, `failed`,
//! `duration_s`, `throughput.{requests_per_s,output_tokens_per_s}`,
//! `ttft_s`/`tpot_s`/`itl_s`/`e2e_s` (each `mean,p50,p90,p95,p99`), `slo`
//! (`ttft_ms`, `tpot_ms`, `percentile` as a fraction, as in `switchyard.toml`),
//! `goodput.requests_per_s`, `slo_attainment`, and for sim targets
//! `cost.{usd_per_hour,usd_per_million_output_tokens}` and `devices[].utilization`.
//! With a sweep, `slo_capacity` lists per policy the highest rate that met
//! the SLO and its goodput per dollar (capacity at the SLO).
//! `requests.csv` has one row per request per run (with the largest ITL;
//! every ITL in whole microseconds, `;`-separated, in column `itl_us` when
//! asked for: an hour of traffic has millions); a field holding a comma, a
//! quote or a line break is quoted as CSV.

pub mod html;
pub mod summary;
pub mod svg;

use std::fmt::{self, Write as _};
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
        slo: crate::slo::SloSection,
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

/// Columns of `requests.csv`, in order.
const CSV_HEADER: [&str; 18] = [
    "run",
    "id",
    "source",
    "scheduled_s",
    "sent_s",
    "dispatch_delay_s",
    "device",
    "prompt_tokens",
    "max_tokens",
    "output_tokens",
    "ttft_s",
    "tpot_s",
    "e2e_s",
    "outcome",
    "status",
    "preemptions",
    "itl_max_s",
    "itl_us",
];

/// Writes `requests.csv`; the `itl_us` column is filled only with `itls`.
pub fn write_csv(path: &Path, runs: &[Run], itls: bool) -> Result<(), LoadgenError> {
    let f = std::fs::File::create(path).map_err(|e| LoadgenError::io(path, e))?;
    let mut w = csv::Writer::from_writer(f);
    let csv_err = |e: csv::Error| LoadgenError::io(path, e.into());
    w.write_record(CSV_HEADER).map_err(csv_err)?;
    let mut row = CsvRow::default();
    for run in runs {
        for r in &run.records {
            row.fill(&run.summary.label, r, itls);
            w.write_byte_record(&row.record).map_err(csv_err)?;
        }
    }
    w.flush().map_err(|e| LoadgenError::io(path, e))
}

/// A `requests.csv` row, reused from one request to the next so that a
/// long run's millions of rows allocate nothing.
#[derive(Default)]
struct CsvRow {
    record: csv::ByteRecord,
    /// Scratch space a field is formatted into.
    buf: String,
}

impl CsvRow {
    /// The row of `r` in the run labelled `label`.
    fn fill(&mut self, label: &str, r: &RequestRecord, itls: bool) {
        self.record.clear();
        self.push(label);
        self.push(r.id);
        self.push(r.source);
        self.push(format_args!("{:.6}", r.scheduled_s));
        self.push(format_args!("{:.6}", r.sent_s));
        self.push(format_args!("{:.6}", r.dispatch_delay_s()));
        self.push_opt(r.device);
        self.push(r.prompt_tokens);
        self.push(r.max_tokens);
        self.push(r.output_tokens);
        for v in [r.ttft_s, r.tpot_s(), r.e2e_s] {
            match v {
                Some(x) => self.push(format_args!("{x:.6}")),
                None => self.record.push_field(b""),
            }
        }
        self.push(r.outcome.as_str());
        self.push_opt(r.status);
        self.push(r.preemptions);
        self.push(format_args!(
            "{:.6}",
            r.itl_s.iter().fold(0.0f32, |a, &b| a.max(b))
        ));
        self.buf.clear();
        for (i, x) in r.itl_s.iter().enumerate().filter(|_| itls) {
            if i > 0 {
                self.buf.push(';');
            }
            // Writing into a String cannot fail.
            let _ = write!(self.buf, "{}", (f64::from(*x) * 1e6).round() as u64);
        }
        self.record.push_field(self.buf.as_bytes());
    }

    fn push(&mut self, value: impl fmt::Display) {
        self.buf.clear();
        // Writing into a String cannot fail.
        let _ = write!(self.buf, "{value}");
        self.record.push_field(self.buf.as_bytes());
    }

    /// `value`, or an empty field.
    fn push_opt(&mut self, value: Option<impl fmt::Display>) {
        match value {
            Some(v) => self.push(v),
            None => self.record.push_field(b""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Outcome;
    use crate::slo::SloSection;

    #[test]
    fn csv_quotes_fields_but_keeps_the_itl_list() {
        let mut r = RequestRecord::pending(7, 1, 0.5, 100, 3);
        r.device = Some(2);
        r.output_tokens = 3;
        r.ttft_s = Some(0.25);
        r.e2e_s = Some(0.5);
        r.itl_s = vec![0.125, 0.125];
        r.outcome = Outcome::Ok;
        let run = Run::new(
            "cost, fast".into(),
            "sim".into(),
            vec![r],
            SloSection::default(),
        );
        let dir = std::env::temp_dir().join(format!("switchyard-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("requests.csv");
        write_csv(&path, &[run], true).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(CSV_HEADER.join(",").as_str()));
        assert_eq!(
            lines.next(),
            Some("\"cost, fast\",7,1,0.500000,0.500000,0.000000,2,100,3,3,0.250000,0.125000,0.500000,ok,,0,0.125000,125000;125000")
        );
        let mut reader = csv::Reader::from_path(&path).unwrap();
        let row = reader.records().next().unwrap().unwrap();
        assert_eq!(row.len(), CSV_HEADER.len());
        assert_eq!((&row[0], &row[17]), ("cost, fast", "125000;125000"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
