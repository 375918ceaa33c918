//! Reading an engine's load from its Prometheus `/metrics`: the gauges each
//! engine documents for running and waiting requests and KV-cache usage.

use switchyard_scheduler::config::EngineKind;

/// Gauge names an engine exports for its load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GaugeNames {
    /// Requests being decoded or prefilled.
    pub running: &'static str,
    /// Requests queued for admission.
    pub waiting: &'static str,
    /// KV-cache usage, as a fraction of 1 (several names across versions).
    pub kv_usage: &'static [&'static str],
}

impl GaugeNames {
    /// The documented names for `engine`; `None` for engines with no load metrics.
    pub fn of(engine: EngineKind) -> Option<GaugeNames> {
        match engine {
            // vLLM ≥ 0.9 (V1) renamed the KV gauge; older releases use the GPU name.
            EngineKind::Vllm => Some(GaugeNames {
                running: "vllm:num_requests_running",
                waiting: "vllm:num_requests_waiting",
                kv_usage: &["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
            }),
            EngineKind::Sglang => Some(GaugeNames {
                running: "sglang:num_running_reqs",
                waiting: "sglang:num_queue_reqs",
                kv_usage: &["sglang:token_usage"],
            }),
            EngineKind::Tgi => Some(GaugeNames {
                running: "tgi_batch_current_size",
                waiting: "tgi_queue_size",
                kv_usage: &[],
            }),
            // llama-server started with `--metrics`.
            EngineKind::Llamacpp => Some(GaugeNames {
                running: "llamacpp:requests_processing",
                waiting: "llamacpp:requests_deferred",
                kv_usage: &["llamacpp:kv_cache_usage_ratio"],
            }),
            EngineKind::Switchyard | EngineKind::Openai => None,
        }
    }
}

/// An engine's load as its metrics last reported it.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct ScrapedLoad {
    /// Requests running.
    pub running: u32,
    /// Requests waiting.
    pub waiting: u32,
    /// KV-cache usage in `[0, 1]`, when exported.
    pub kv_usage: Option<f64>,
}

/// Sums every sample of `name` (all label sets) in a text exposition.
pub fn gauge_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim_start();
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // The name must end here: `foo` must not match `foo_total`.
        let rest = match rest.as_bytes().first() {
            Some(b'{') => match rest.find('}') {
                Some(end) => &rest[end + 1..],
                None => continue,
            },
            Some(b' ') | Some(b'\t') => rest,
            _ => continue,
        };
        let Some(value) = rest.split_whitespace().next() else {
            continue;
        };
        if let Ok(v) = value.parse::<f64>() {
            if v.is_finite() {
                *found.get_or_insert(0.0) += v;
            }
        }
    }
    found
}

/// The load in `text` by `names`; `None` when the running gauge is absent
/// (the endpoint is not the engine it was declared as, or metrics are off).
pub fn parse_load(text: &str, names: &GaugeNames) -> Option<ScrapedLoad> {
    let running = gauge_sum(text, names.running)?;
    let waiting = gauge_sum(text, names.waiting).unwrap_or(0.0);
    let kv_usage = names
        .kv_usage
        .iter()
        .find_map(|n| gauge_sum(text, n))
        .map(|u| u.clamp(0.0, 1.0));
    let count = |v: f64| v.max(0.0).round().min(f64::from(u32::MAX)) as u32;
    Some(ScrapedLoad {
        running: count(running),
        waiting: count(waiting),
        kv_usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VLLM: &str = r#"# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
vllm:num_requests_waiting{engine="0",model_name="m"} 7.0
vllm:num_requests_waiting_total 99
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
"#;

    #[test]
    fn vllm_gauges_sum_over_label_sets() {
        let names = GaugeNames::of(EngineKind::Vllm).unwrap();
        let load = parse_load(VLLM, &names).unwrap();
        assert_eq!(
            load,
            ScrapedLoad {
                running: 5,
                waiting: 7,
                kv_usage: Some(0.25)
            }
        );
    }

    #[test]
    fn older_names_and_unlabelled_samples_are_read() {
        let text = "vllm:num_requests_running 1\nvllm:gpu_cache_usage_perc 0.5\n";
        let load = parse_load(text, &GaugeNames::of(EngineKind::Vllm).unwrap()).unwrap();
        assert_eq!(load.running, 1);
        assert_eq!(load.waiting, 0);
        assert_eq!(load.kv_usage, Some(0.5));
    }

    #[test]
    fn a_missing_running_gauge_is_no_load() {
        let names = GaugeNames::of(EngineKind::Sglang).unwrap();
        assert_eq!(parse_load(VLLM, &names), None);
        assert_eq!(gauge_sum("x NaN\n", "x"), None);
    }
}
