//! `report.html`: one self-contained page (inline CSS and SVG, no scripts,
//! no network) with a summary table, latency CDFs, throughput and SLO
//! attainment over time, and — when runs differ by rate or policy —
//! latency-vs-rate and goodput-per-dollar charts.

use std::fmt::Write;

use super::svg::{bar_chart, cdf_points, esc, line_chart, Scale, Series};
use super::Run;

fn ms(s: f64) -> String {
    format!("{:.1}", s * 1e3)
}

/// Renders the report page.
pub fn render(runs: &[Run], workload: &[String], title: &str) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title><style>\
         body{{font-family:sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse;font-size:12px}}\
         td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}th{{background:#f3f3f3}}\
         td:first-child{{text-align:left}}.charts{{display:flex;flex-wrap:wrap;gap:12px}}\
         .ok{{color:#2a7}}.miss{{color:#c33}}</style></head><body><h1>{}</h1>",
        esc(title),
        esc(title)
    );
    let target = runs
        .first()
        .map(|r| r.summary.target.as_str())
        .unwrap_or("");
    let _ = write!(
        h,
        "<p><b>Target:</b> {}<br><b>Workload:</b> {}<br>",
        esc(target),
        esc(&workload.join(" + "))
    );
    if let Some(r) = runs.first() {
        let s = &r.summary.slo;
        let _ = write!(
            h,
            "<b>SLO:</b> TTFT ≤ {} ms, TPOT ≤ {} ms at p{}</p>",
            s.ttft_ms,
            s.tpot_ms,
            s.percent()
        );
    }
    summary_table(&mut h, runs);
    h.push_str("<h2>Latency distributions</h2><div class=\"charts\">");
    for (name, pick) in [("TTFT", 0), ("TPOT", 1), ("E2E", 2)] {
        let series: Vec<Series> = runs
            .iter()
            .map(|r| {
                let v = match pick {
                    0 => &r.samples.ttft,
                    1 => &r.samples.tpot,
                    _ => &r.samples.e2e,
                };
                (
                    r.summary.label.clone(),
                    cdf_points(v, 200)
                        .into_iter()
                        .map(|(x, y)| (x * 1e3, y))
                        .collect(),
                )
            })
            .collect();
        h.push_str(&line_chart(
            &format!("{name} CDF"),
            &format!("{name} (ms, log scale)"),
            "fraction of requests",
            &series,
            Scale::LOG_X,
        ));
    }
    h.push_str("</div><h2>Over time</h2><div class=\"charts\">");
    let over = |f: &dyn Fn(&super::summary::Bucket) -> f64| -> Vec<Series> {
        runs.iter()
            .map(|r| {
                (
                    r.summary.label.clone(),
                    r.summary.timeline.iter().map(|b| (b.t_s, f(b))).collect(),
                )
            })
            .collect()
    };
    h.push_str(&line_chart(
        "Throughput",
        "time (s)",
        "completed requests/s",
        &over(&|b| b.requests_per_s),
        Scale::LINEAR,
    ));
    h.push_str(&line_chart(
        "Output token throughput",
        "time (s)",
        "tokens/s",
        &over(&|b| b.output_tokens_per_s),
        Scale::LINEAR,
    ));
    h.push_str(&line_chart(
        "SLO attainment",
        "time (s)",
        "fraction meeting SLO",
        &over(&|b| b.slo_attainment),
        Scale::LINEAR,
    ));
    h.push_str("</div>");
    comparison(&mut h, runs);
    devices(&mut h, runs);
    h.push_str("<p style=\"font-size:11px;color:#777\">TTFT = first token − send; TPOT = (E2E − TTFT)/(output − 1); \
        goodput = completed requests meeting both targets per second; dispatch delay = actual − scheduled send time \
        (a large value means the generator, not the target, was saturated).</p></body></html>");
    h
}

fn summary_table(h: &mut String, runs: &[Run]) {
    h.push_str("<h2>Summary</h2><table><tr><th>run</th><th>requests</th><th>completed</th><th>failed</th><th>req/s</th><th>out tok/s</th>\
        <th>TTFT p50 ms</th><th>TTFT p95</th><th>TPOT p50 ms</th><th>TPOT p95</th><th>E2E p95 s</th><th>goodput req/s</th>\
        <th>SLO attain.</th><th>SLO met</th><th>dispatch p99 ms</th><th>USD/h</th><th>USD/M tok</th><th>good req/USD</th><th>good req/busy-USD</th></tr>");
    for r in runs {
        let s = &r.summary;
        let (usd_h, usd_m, gpd, gpb) = s.cost.map_or(Default::default(), |c| {
            (
                format!("{:.2}", c.usd_per_hour),
                format!("{:.3}", c.usd_per_million_output_tokens),
                format!("{:.1}", c.goodput_requests_per_usd),
                format!("{:.1}", c.goodput_requests_per_busy_usd),
            )
        });
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.1}%</td><td class=\"{}\">{}</td><td>{}</td><td>{usd_h}</td><td>{usd_m}</td><td>{gpd}</td><td>{gpb}</td></tr>",
            esc(&s.label), s.requests, s.completed, s.failed, s.throughput.requests_per_s, s.throughput.output_tokens_per_s,
            ms(s.ttft_s.p50), ms(s.ttft_s.p95), ms(s.tpot_s.p50), ms(s.tpot_s.p95), s.e2e_s.p95, s.goodput.requests_per_s,
            s.slo_attainment * 100.0, if s.slo_met { "ok" } else { "miss" }, if s.slo_met { "yes" } else { "no" }, ms(s.dispatch_delay_s.p99)
        );
    }
    h.push_str("</table>");
}

/// Latency-vs-rate and goodput-per-dollar, when runs vary by rate or policy.
fn comparison(h: &mut String, runs: &[Run]) {
    if runs.len() < 2 {
        return;
    }
    let mut groups: Vec<(String, Vec<&Run>)> = Vec::new();
    for r in runs {
        let key = r.summary.policy.clone().unwrap_or_else(|| "run".into());
        match groups.iter_mut().find(|g| g.0 == key) {
            Some(g) => g.1.push(r),
            None => groups.push((key, vec![r])),
        }
    }
    h.push_str("<h2>Comparison</h2>");
    let cap = super::slo_capacity(runs);
    if !cap.is_empty() {
        h.push_str("<table><tr><th>policy</th><th>highest rate meeting SLO</th><th>goodput req/s</th><th>good req/USD</th></tr>");
        for c in &cap {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td></tr>",
                esc(&c.policy),
                c.max_rate_meeting_slo
                    .map_or("none".into(), |r| format!("{r}")),
                c.goodput_requests_per_s,
                c.goodput_requests_per_usd
                    .map_or(String::new(), |g| format!("{g:.1}"))
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<div class=\"charts\">");
    let by_rate = groups.iter().any(|g| g.1.len() > 1);
    if by_rate {
        let rate = |r: &Run| {
            r.summary
                .rate
                .unwrap_or(r.summary.throughput.requests_per_s)
        };
        let mk = |f: &dyn Fn(&Run) -> f64, suffix: &str| -> Vec<Series> {
            groups
                .iter()
                .map(|(k, rs)| {
                    (
                        format!("{k} {suffix}"),
                        rs.iter().map(|r| (rate(r), f(r))).collect(),
                    )
                })
                .collect()
        };
        let mut ttft = mk(&|r| r.summary.ttft_s.p50 * 1e3, "p50");
        ttft.extend(mk(&|r| r.summary.ttft_s.p95 * 1e3, "p95"));
        h.push_str(&line_chart(
            "TTFT vs rate",
            "offered rate (req/s)",
            "TTFT (ms, log scale)",
            &ttft,
            Scale::LOG_Y,
        ));
        let mut tpot = mk(&|r| r.summary.tpot_s.p50 * 1e3, "p50");
        tpot.extend(mk(&|r| r.summary.tpot_s.p95 * 1e3, "p95"));
        h.push_str(&line_chart(
            "TPOT vs rate",
            "offered rate (req/s)",
            "TPOT (ms, log scale)",
            &tpot,
            Scale::LOG_Y,
        ));
        if runs.iter().all(|r| r.summary.cost.is_some()) {
            h.push_str(&line_chart(
                "Goodput per dollar vs rate",
                "offered rate (req/s)",
                "good requests per USD",
                &mk(
                    &|r| r.summary.cost.map_or(0.0, |c| c.goodput_requests_per_usd),
                    "",
                ),
                Scale::LINEAR,
            ));
        } else {
            h.push_str(&line_chart(
                "Goodput vs rate",
                "offered rate (req/s)",
                "good requests/s",
                &mk(&|r| r.summary.goodput.requests_per_s, ""),
                Scale::LINEAR,
            ));
        }
    }
    let bars: Vec<(String, f64)> = runs
        .iter()
        .map(|r| {
            (
                r.summary.label.clone(),
                r.summary
                    .cost
                    .map_or(r.summary.goodput.requests_per_s, |c| {
                        c.goodput_requests_per_usd
                    }),
            )
        })
        .collect();
    let costed = runs.iter().all(|r| r.summary.cost.is_some());
    h.push_str(&bar_chart(
        if costed {
            "Goodput per dollar"
        } else {
            "Goodput"
        },
        if costed {
            "good requests per USD"
        } else {
            "good requests/s"
        },
        &bars,
    ));
    if costed {
        let busy: Vec<(String, f64)> = runs
            .iter()
            .map(|r| {
                (
                    r.summary.label.clone(),
                    r.summary
                        .cost
                        .map_or(0.0, |c| c.goodput_requests_per_busy_usd),
                )
            })
            .collect();
        h.push_str(&bar_chart(
            "Goodput per dollar of busy device time",
            "good requests per busy USD",
            &busy,
        ));
    }
    h.push_str("</div>");
}

fn devices(h: &mut String, runs: &[Run]) {
    if runs.iter().all(|r| r.summary.devices.is_empty()) {
        return;
    }
    h.push_str("<h2>Devices</h2><table><tr><th>run</th><th>device</th><th>profile</th><th>requests</th><th>utilization</th></tr>");
    for r in runs {
        for d in &r.summary.devices {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}%</td></tr>",
                esc(&r.summary.label),
                d.id,
                esc(&d.profile),
                d.requests,
                d.utilization * 100.0
            );
        }
    }
    h.push_str("</table>");
}
