//! Trace readers: Azure LLM inference CSV and Mooncake (FAST'25) JSON lines.
//!
//! The format follows the file extension: `.jsonl` is Mooncake, anything
//! else is CSV. Both yield [`TraceRow`]s sorted by time (stable, so equal
//! timestamps keep file order, which keeps multi-turn conversations in
//! order), relative to the first row. Token counts of 0 are raised to 1 (an
//! engine refuses an empty prompt). Every malformed row is an error naming
//! the file, the 1-based line and the field.
//!
//! # Azure CSV (`TIMESTAMP,ContextTokens,GeneratedTokens`)
//! Columns are found by header name (any order, case-insensitive); without a
//! header the order above is assumed. `TIMESTAMP` is `YYYY-MM-DD
//! HH:MM:SS[.fffffff]` or plain seconds.
//!
//! # Mooncake JSON lines
//! One object per line (blank lines are skipped, unknown keys ignored):
//! `timestamp` (milliseconds from the trace start, a non-negative number),
//! `input_length` and `output_length` (token counts), `hash_ids` (integers,
//! one per [`HASH_BLOCK_TOKENS`]-token block of the prompt, the last block
//! possibly partial). Requests with equal leading ids share those blocks'
//! tokens, which is how a replay exposes the trace's prefix reuse. Ids only
//! need to be equal or different, so negative ids are kept by their bits.
//!
//! The id list is matched to the prompt rather than rejected, because a
//! length mismatch does not make the rest of the row unusable: ids past
//! `ceil(input_length / 512)` describe tokens the prompt does not have and
//! are dropped; with fewer ids the tokens past the last listed block are
//! unique to the request. An empty list means nothing is shared.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::LoadgenError;

/// Prompt tokens covered by one Mooncake `hash_ids` entry.
pub const HASH_BLOCK_TOKENS: u32 = 512;

/// One trace row: seconds since the trace's first row, prompt and output tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRow {
    /// Seconds since the first row.
    pub t: f64,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Output tokens.
    pub output_tokens: u32,
    /// Hashes of the prompt's [`HASH_BLOCK_TOKENS`]-token blocks (Mooncake traces only).
    pub hash_ids: Option<Arc<[u64]>>,
}

/// Reads and parses a trace file, choosing the format by its extension.
pub fn read_trace(path: &Path) -> Result<Vec<TraceRow>, LoadgenError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadgenError::io(path, e))?;
    if is_jsonl(path) {
        parse_jsonl_trace(path, &text)
    } else {
        parse_trace(path, &text)
    }
}

/// Whether `path` names a JSON-lines (Mooncake) trace.
pub fn is_jsonl(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"))
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Largest magnitude of a plain-seconds timestamp (about 300,000 years).
pub const MAX_PLAIN_SECONDS: f64 = 1e13;

/// Parses `YYYY-MM-DD HH:MM:SS[.f]` (or `T` separator) or plain seconds
/// (below [`MAX_PLAIN_SECONDS`] in magnitude).
pub fn parse_timestamp(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Ok(v) = s.parse::<f64>() {
        // Bounded like a four-digit year, so differences between rows stay finite.
        return (v.abs() < MAX_PLAIN_SECONDS).then_some(v);
    }
    let (date, time) = s.split_once([' ', 'T'])?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, mo, day) = (d.next()??, d.next()??, d.next()??);
    // Four-digit years keep the day arithmetic far from overflow.
    if !(0..=9999).contains(&y) || !(1..=12).contains(&mo) || !(1..=31).contains(&day) {
        return None;
    }
    let mut t = time.trim_end_matches('Z').split(':');
    let (h, mi) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    let sec = t.next()?.parse::<f64>().ok()?;
    // Range checks written as `contains` also refuse NaN and negatives.
    if !(0.0..24.0).contains(&h) || !(0.0..60.0).contains(&mi) || !(0.0..61.0).contains(&sec) {
        return None;
    }
    Some(days_from_civil(y, mo, day) as f64 * 86_400.0 + h * 3600.0 + mi * 60.0 + sec)
}

/// Parses trace text; `path` names the source in errors.
pub fn parse_trace(path: &Path, text: &str) -> Result<Vec<TraceRow>, LoadgenError> {
    let row_err = |line: usize, field: &'static str, reason: String| LoadgenError::TraceRow {
        path: PathBuf::from(path),
        line,
        field,
        reason,
    };
    const FIELDS: [&str; 3] = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"];
    let mut cols = [0usize, 1, 2];
    let mut rows = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if rows.is_empty() && i == 0 && cells.iter().any(|c| c.eq_ignore_ascii_case("TIMESTAMP")) {
            for (k, name) in FIELDS.iter().enumerate() {
                cols[k] = cells
                    .iter()
                    .position(|c| c.eq_ignore_ascii_case(name))
                    .ok_or_else(|| row_err(1, FIELDS[k], "header has no such column".into()))?;
            }
            continue;
        }
        let cell = |k: usize| -> Result<&str, LoadgenError> {
            cells
                .get(cols[k])
                .copied()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| row_err(i + 1, FIELDS[k], "missing".into()))
        };
        let t = parse_timestamp(cell(0)?).ok_or_else(|| {
            row_err(
                i + 1,
                FIELDS[0],
                format!("`{}` is not a timestamp", cells[cols[0]]),
            )
        })?;
        let tokens = |k: usize| -> Result<u32, LoadgenError> {
            let c = cell(k)?;
            c.parse::<u32>()
                .map(|v| v.max(1))
                .map_err(|_| row_err(i + 1, FIELDS[k], format!("`{c}` is not a token count")))
        };
        rows.push(TraceRow {
            t,
            prompt_tokens: tokens(1)?,
            output_tokens: tokens(2)?,
            hash_ids: None,
        });
    }
    Ok(relative_to_first(rows))
}

/// Sorts rows by time (stably) and makes times relative to the first row.
fn relative_to_first(mut rows: Vec<TraceRow>) -> Vec<TraceRow> {
    rows.sort_by(|a, b| a.t.total_cmp(&b.t));
    if let Some(t0) = rows.first().map(|r| r.t) {
        for r in &mut rows {
            r.t -= t0;
        }
    }
    rows
}

/// Parses Mooncake JSON-lines trace text; `path` names the source in errors.
pub fn parse_jsonl_trace(path: &Path, text: &str) -> Result<Vec<TraceRow>, LoadgenError> {
    let mut rows = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let row_err = |field: &'static str, reason: String| LoadgenError::TraceRow {
            path: PathBuf::from(path),
            line: i + 1,
            field,
            reason,
        };
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| row_err("json", format!("not valid JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| row_err("json", "not a JSON object".into()))?;
        let field = |name: &'static str| {
            obj.get(name)
                .filter(|v| !v.is_null())
                .ok_or_else(|| row_err(name, "missing".into()))
        };
        let ts = field("timestamp")?;
        let ms = ts
            .as_f64()
            .filter(|ms| ms.is_finite() && *ms >= 0.0)
            .ok_or_else(|| {
                row_err(
                    "timestamp",
                    format!("`{ts}` is not a non-negative number of milliseconds"),
                )
            })?;
        let tokens = |name: &'static str| -> Result<u32, LoadgenError> {
            let v = field(name)?;
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(|n| n.max(1))
                .ok_or_else(|| row_err(name, format!("`{v}` is not a token count")))
        };
        let prompt_tokens = tokens("input_length")?;
        let output_tokens = tokens("output_length")?;
        let ids = field("hash_ids")?
            .as_array()
            .ok_or_else(|| row_err("hash_ids", "not an array of integers".into()))?;
        let needed = prompt_tokens.div_ceil(HASH_BLOCK_TOKENS) as usize;
        let hash_ids = ids
            .iter()
            .take(needed)
            .enumerate()
            .map(|(k, v)| {
                v.as_u64()
                    // Ids are only compared, so a negative one keeps its bits.
                    .or_else(|| v.as_i64().map(|x| x as u64))
                    .ok_or_else(|| {
                        row_err("hash_ids", format!("entry {k}: `{v}` is not an integer"))
                    })
            })
            .collect::<Result<Vec<u64>, _>>()?;
        rows.push(TraceRow {
            t: ms / 1000.0,
            prompt_tokens,
            output_tokens,
            hash_ids: (!hash_ids.is_empty()).then(|| Arc::from(hash_ids)),
        });
    }
    Ok(relative_to_first(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_azure_rows_relative_to_first() {
        let text = "TIMESTAMP,ContextTokens,GeneratedTokens\n\
            2023-11-16 18:15:46.6805900,374,44\n\
            2023-11-16 18:15:50.9951690,396,0\n";
        let rows = parse_trace(Path::new("t.csv"), text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].t, 0.0);
        assert!((rows[1].t - 4.314579).abs() < 1e-6, "{}", rows[1].t);
        assert_eq!(rows[1].output_tokens, 1);
    }

    #[test]
    fn timestamps_cross_midnight() {
        let a = parse_timestamp("2023-12-31 23:59:59.5").unwrap();
        let b = parse_timestamp("2024-01-01 00:00:00.5").unwrap();
        assert!((b - a - 1.0).abs() < 1e-9);
        assert!(parse_timestamp("2023-13-01 00:00:00").is_none());
    }

    #[test]
    fn hostile_timestamps_are_refused_not_panicking() {
        for s in [
            "9223372036854775807-01-01 00:00:00",
            "-9223372036854775808-01-01 00:00:00",
            "10000-01-01 00:00:00",
            "2023-01-01 NaN:00:00",
            "2023-01-01 00:NaN:00",
            "2023-01-01 -1:00:00",
            "2023-01-01 00:-5:00",
            "NaN",
            "inf",
            "1e308",
            "-1e308",
        ] {
            assert_eq!(parse_timestamp(s), None, "{s}");
        }
    }

    #[test]
    fn malformed_row_names_file_line_and_field() {
        let text = "TIMESTAMP,ContextTokens,GeneratedTokens\n\
            2023-11-16 18:15:46.68,374,44\n\
            2023-11-16 18:15:47.68,abc,44\n";
        let err = parse_trace(Path::new("x.csv"), text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x.csv:3") && err.contains("ContextTokens"),
            "{err}"
        );
        let err = parse_trace(
            Path::new("x.csv"),
            "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,2\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("x.csv:2") && err.contains("TIMESTAMP"),
            "{err}"
        );
        let err = parse_trace(Path::new("x.csv"), "1.0,5\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("GeneratedTokens") && err.contains("missing"),
            "{err}"
        );
    }
}
