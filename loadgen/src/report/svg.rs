//! Hand-written inline SVG charts: line charts (linear or log x) and bar
//! charts, with axes, ticks and a legend. No scripts, no external assets.

use std::fmt::Write;

const W: f64 = 640.0;
const H: f64 = 320.0;
const L: f64 = 64.0;
const R: f64 = 150.0;
const T: f64 = 30.0;
const B: f64 = 44.0;
const COLORS: [&str; 12] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#7f7f7f", "#bcbd22", "#393b79", "#ad494a",
];

/// Which axes are logarithmic (non-positive values are dropped on a log axis).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scale {
    /// log10 x axis.
    pub log_x: bool,
    /// log10 y axis.
    pub log_y: bool,
}

impl Scale {
    /// Linear both ways.
    pub const LINEAR: Scale = Scale {
        log_x: false,
        log_y: false,
    };
    /// Log x, linear y (CDFs of latencies).
    pub const LOG_X: Scale = Scale {
        log_x: true,
        log_y: false,
    };
    /// Linear x, log y (latency vs rate).
    pub const LOG_Y: Scale = Scale {
        log_x: false,
        log_y: true,
    };
}

/// A named series of (x, y) points.
pub type Series = (String, Vec<(f64, f64)>);

/// Escapes text for XML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Formats a tick value compactly.
fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e4).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        format!("{v:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

/// "Nice" ticks covering [lo, hi].
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(t);
        t += step;
    }
    out
}

/// A line chart on the given axis scales.
pub fn line_chart(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[Series],
    scale: Scale,
) -> String {
    let Scale { log_x, log_y } = scale;
    let fx = |x: f64| if log_x { x.log10() } else { x };
    let fy = |y: f64| if log_y { y.log10() } else { y };
    let keep = |&(x, y): &(f64, f64)| {
        x.is_finite() && y.is_finite() && (!log_x || x > 0.0) && (!log_y || y > 0.0)
    };
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .filter(keep)
        .map(|(x, y)| (fx(x), fy(y)))
        .collect();
    let mut s = header(title);
    if pts.is_empty() {
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">no data</text></svg>"#,
            W / 2.0,
            H / 2.0
        );
        return s;
    }
    let (mut x0, mut x1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
    let y1 = pts.iter().fold(f64::MIN, |a, p| a.max(p.1));
    let y0 = pts.iter().fold(f64::MAX, |a, p| a.min(p.1));
    let (y0, y1) = if log_y {
        (
            y0.floor(),
            if y1.ceil() <= y0.floor() {
                y0.floor() + 1.0
            } else {
                y1.ceil()
            },
        )
    } else {
        let y0 = y0.min(0.0);
        (y0, if y1 <= y0 { y0 + 1.0 } else { y1 * 1.05 })
    };
    if x1 <= x0 {
        x0 -= 0.5;
        x1 += 0.5;
    }
    let px = |x: f64| L + (x - x0) / (x1 - x0) * (W - L - R);
    let py = |y: f64| H - B - (y - y0) / (y1 - y0) * (H - T - B);
    axes(&mut s, xlabel, ylabel);
    let xt: Vec<f64> = if log_x {
        (x0.floor() as i32..=x1.ceil() as i32)
            .map(f64::from)
            .filter(|t| *t >= x0 && *t <= x1)
            .collect()
    } else {
        ticks(x0, x1)
    };
    for t in xt {
        let label = if log_x {
            fmt_num(10f64.powf(t))
        } else {
            fmt_num(t)
        };
        let _ = write!(
            s,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{1}" y2="{2}" stroke="#ddd"/><text x="{0:.1}" y="{3}" text-anchor="middle">{4}</text>"##,
            px(t),
            T,
            H - B,
            H - B + 14.0,
            label
        );
    }
    let yt: Vec<f64> = if log_y {
        (y0 as i32..=y1 as i32).map(f64::from).collect()
    } else {
        ticks(y0, y1)
    };
    for t in yt {
        let label = if log_y {
            fmt_num(10f64.powf(t))
        } else {
            fmt_num(t)
        };
        let _ = write!(
            s,
            r##"<line x1="{1}" x2="{2}" y1="{0:.1}" y2="{0:.1}" stroke="#ddd"/><text x="{3}" y="{0:.1}" text-anchor="end" dy="4">{4}</text>"##,
            py(t),
            L,
            W - R,
            L - 4.0,
            label
        );
    }
    for (i, (name, points)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let dash = if i >= COLORS.len() {
            r#" stroke-dasharray="5,3""#
        } else {
            ""
        };
        let path: Vec<String> = points
            .iter()
            .filter(|p| keep(p))
            .map(|&(x, y)| format!("{:.1},{:.1}", px(fx(x)), py(fy(y))))
            .collect();
        if path.len() == 1 {
            let _ = write!(
                s,
                r#"<circle cx="{}" r="3" fill="{c}" cy="{}"/>"#,
                path[0].split(',').next().unwrap_or("0"),
                path[0].split(',').nth(1).unwrap_or("0")
            );
        }
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="1.8"{dash} points="{}"/>"#,
            path.join(" ")
        );
        if points.len() <= 12 {
            for p in &path {
                let (cx, cy) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = write!(s, r#"<circle cx="{cx}" cy="{cy}" r="2.5" fill="{c}"/>"#);
            }
        }
        legend(&mut s, i, name, c);
    }
    s.push_str("</svg>");
    s
}

/// A vertical bar chart.
pub fn bar_chart(title: &str, ylabel: &str, bars: &[(String, f64)]) -> String {
    let mut s = header(title);
    let y1 = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1e-12) * 1.1;
    let py = |y: f64| H - B - y / y1 * (H - T - B);
    axes(&mut s, "", ylabel);
    for t in ticks(0.0, y1) {
        let _ = write!(
            s,
            r##"<line x1="{1}" x2="{2}" y1="{0:.1}" y2="{0:.1}" stroke="#ddd"/><text x="{3}" y="{0:.1}" text-anchor="end" dy="4">{4}</text>"##,
            py(t),
            L,
            W - R,
            L - 4.0,
            fmt_num(t)
        );
    }
    let n = bars.len().max(1) as f64;
    let slot = (W - L - R) / n;
    for (i, (name, v)) in bars.iter().enumerate() {
        let x = L + slot * i as f64 + slot * 0.15;
        let c = COLORS[i % COLORS.len()];
        let _ = write!(
            s,
            r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{c}"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            py(*v),
            slot * 0.7,
            (H - B - py(*v)).max(0.0),
            x + slot * 0.35,
            py(*v) - 4.0,
            fmt_num(*v)
        );
        legend(&mut s, i, name, c);
    }
    s.push_str("</svg>");
    s
}

fn header(title: &str) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" font-family="sans-serif" font-size="11"><text x="{}" y="18" text-anchor="middle" font-size="13" font-weight="bold">{}</text>"#,
        (W - R + L) / 2.0,
        esc(title)
    )
}

fn axes(s: &mut String, xlabel: &str, ylabel: &str) {
    let _ = write!(
        s,
        r##"<line x1="{L}" x2="{0}" y1="{1}" y2="{1}" stroke="#333"/><line x1="{L}" x2="{L}" y1="{T}" y2="{1}" stroke="#333"/><text x="{2}" y="{3}" text-anchor="middle">{4}</text><text transform="translate(14,{5}) rotate(-90)" text-anchor="middle">{6}</text>"##,
        W - R,
        H - B,
        (W - R + L) / 2.0,
        H - 8.0,
        esc(xlabel),
        (H - B + T) / 2.0,
        esc(ylabel)
    );
}

fn legend(s: &mut String, i: usize, name: &str, color: &str) {
    let y = T + 14.0 * i as f64;
    let _ = write!(
        s,
        r#"<rect x="{}" y="{}" width="10" height="10" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
        W - R + 10.0,
        y,
        W - R + 24.0,
        y + 9.0,
        esc(name)
    );
}

/// Downsamples sorted values to at most `n + 1` CDF points.
pub fn cdf_points(sorted: &[f64], n: usize) -> Vec<(f64, f64)> {
    if sorted.is_empty() {
        return Vec::new();
    }
    (0..=n)
        .map(|q| {
            let i = q * (sorted.len() - 1) / n;
            (sorted[i], (i + 1) as f64 / sorted.len() as f64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_well_formed_svg() {
        let s = line_chart(
            "t<1>",
            "x",
            "y",
            &[("a".into(), vec![(1.0, 2.0), (10.0, 3.0)])],
            Scale::LOG_X,
        );
        assert!(s.starts_with("<svg") && s.ends_with("</svg>") && s.contains("t&lt;1&gt;"));
        let b = bar_chart("b", "y", &[("p".into(), 3.0), ("q".into(), 1.0)]);
        assert_eq!(b.matches("<rect").count(), 4);
        assert!(line_chart("e", "x", "y", &[], Scale::LINEAR).contains("no data"));
        let log = line_chart(
            "l",
            "x",
            "y",
            &[("a".into(), vec![(1.0, 0.5), (2.0, 5000.0)])],
            Scale::LOG_Y,
        );
        assert!(log.contains(">1000<") && log.contains(">0.1<"), "{log}");
        assert_eq!(cdf_points(&[1.0, 2.0, 3.0], 2).last(), Some(&(3.0, 1.0)));
    }
}
