//! Fleets for the simulator: a TOML file or an inline `PROFILE=COUNT,...`.
//!
//! ```toml
//! model = "llama-3.1-8b"            # optional; --model overrides
//! [[devices]]
//! profile = "h100-sxm"
//! count = 2                         # default 1; `id`/`backend` are accepted
//! [router]                          # optional; flags override
//! policy = "cost"
//! [router.slo]
//! ttft_ms = 2000
//! tpot_ms = 100
//! [engine]                          # optional engine limits
//! max_num_seqs = 256
//! max_batched_tokens = 8192
//! ```
//! A server configuration (`switchyard.toml`, recognised by its `[model]`
//! table) is also a fleet file: its devices are simulated by profile
//! whatever their backend, with its model, engine sizing, router settings
//! and `profiles_dir` — so `plan`'s output and the live server's own config
//! can both be simulated. A fleet tier's `[[endpoints]]` count one device
//! each, priced by their `profile`. Unknown fields are rejected with the file and line.
//! Engine defaults match the server's (`block_size` 16, `max_num_seqs` 256,
//! `max_batched_tokens` 2048). An SLO `percentile` below 1 is a fraction
//! (0.95), otherwise a percentage (95).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use switchyard_backends::profile::TomlErrorAt;
use switchyard_backends::{Catalog, CostModel, ModelSpec, SimConfig};
use switchyard_scheduler::config::{EngineSection, RouterSection};
use switchyard_scheduler::EngineConfig;

use crate::error::LoadgenError;

/// `[[devices]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceEntry {
    profile: String,
    #[serde(default = "one")]
    count: u32,
    #[serde(default)]
    #[allow(dead_code)]
    id: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    backend: Option<String>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetFile {
    #[serde(default)]
    model: Option<String>,
    devices: Vec<DeviceEntry>,
    #[serde(default)]
    router: RouterSection,
    #[serde(default)]
    engine: EngineSection,
}

/// A fleet as written: device types with counts, plus settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FleetSpec {
    /// (profile, count) in file order; counts ≥ 1.
    pub devices: Vec<(String, u32)>,
    /// Model named by the file.
    pub model: Option<String>,
    /// Router settings (the server config's vocabulary).
    pub router: RouterSection,
    /// Engine limits (the server config's vocabulary).
    pub engine: EngineSection,
    /// Where it came from (file path or the inline text).
    pub source: String,
    /// Profiles directory named by a server config.
    pub profiles_dir: Option<PathBuf>,
}

/// Most devices a fleet may hold: each is simulated with its own engine.
pub const MAX_FLEET_DEVICES: u32 = 1 << 16;

/// Rejects fleets whose total count is past [`MAX_FLEET_DEVICES`] (counts
/// are summed, so a few huge ones would overflow).
fn check_total(path: &Path, devices: &[(String, u32)]) -> Result<(), LoadgenError> {
    let total = devices.iter().fold(0u64, |n, d| n + u64::from(d.1));
    if total > u64::from(MAX_FLEET_DEVICES) {
        return Err(LoadgenError::Fleet {
            path: path.to_path_buf(),
            line: None,
            reason: format!("devices.count: {total} devices in all, more than {MAX_FLEET_DEVICES}"),
        });
    }
    Ok(())
}

impl FleetSpec {
    /// Parses `sim:` target text: a TOML path, or `PROFILE=COUNT,...`.
    pub fn parse_target(text: &str) -> Result<Self, LoadgenError> {
        let path = Path::new(text);
        if text.ends_with(".toml") || path.exists() {
            return Self::load(path);
        }
        Self::inline(text)
    }

    /// Parses `PROFILE=COUNT,...` (a bare `PROFILE` counts 1).
    pub fn inline(text: &str) -> Result<Self, LoadgenError> {
        let err = |reason: String| LoadgenError::Fleet {
            path: PathBuf::from(text),
            line: None,
            reason,
        };
        let mut devices = Vec::new();
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            let (name, n) = part.split_once('=').unwrap_or((part, "1"));
            let n: u32 = n.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                err(format!(
                    "count of `{name}`: `{n}` is not a positive integer"
                ))
            })?;
            devices.push((name.trim().to_string(), n));
        }
        if devices.is_empty() {
            return Err(err("no devices".into()));
        }
        check_total(Path::new(text), &devices)?;
        Ok(Self {
            devices,
            source: text.to_string(),
            ..Self::default()
        })
    }

    /// Reads a fleet TOML file.
    pub fn load(path: &Path) -> Result<Self, LoadgenError> {
        let text = std::fs::read_to_string(path).map_err(|e| LoadgenError::Fleet {
            path: path.to_path_buf(),
            line: None,
            reason: format!("cannot read: {e}"),
        })?;
        Self::from_toml(path, &text)
    }

    /// Parses fleet TOML text; `path` names it in errors.
    pub fn from_toml(path: &Path, text: &str) -> Result<Self, LoadgenError> {
        if text.lines().any(|l| l.trim_start().starts_with("[model]")) {
            return Self::from_server_config(path, text);
        }
        let f: FleetFile = toml::from_str(text).map_err(|e| {
            let at = TomlErrorAt::new(text, &e);
            LoadgenError::Fleet {
                path: path.to_path_buf(),
                line: at.line,
                reason: at.message,
            }
        })?;
        if f.devices.is_empty() {
            return Err(LoadgenError::Fleet {
                path: path.to_path_buf(),
                line: None,
                reason: "`devices` is empty".into(),
            });
        }
        // Merge repeated profiles (a server config lists one entry per device).
        let mut devices: Vec<(String, u32)> = Vec::new();
        for d in f.devices {
            if d.count == 0 {
                return Err(LoadgenError::Fleet {
                    path: path.to_path_buf(),
                    line: None,
                    reason: format!("devices.count of `{}` must be at least 1", d.profile),
                });
            }
            match devices.iter_mut().find(|x| x.0 == d.profile) {
                Some(x) => x.1 = x.1.saturating_add(d.count),
                None => devices.push((d.profile, d.count)),
            }
        }
        check_total(path, &devices)?;
        Ok(Self {
            devices,
            model: f.model,
            router: f.router,
            engine: f.engine,
            source: path.display().to_string(),
            profiles_dir: None,
        })
    }

    /// Reads a server configuration as a fleet.
    fn from_server_config(path: &Path, text: &str) -> Result<Self, LoadgenError> {
        let c = switchyard_scheduler::config::Config::from_toml(path, text).map_err(|e| {
            LoadgenError::Fleet {
                path: path.to_path_buf(),
                line: None,
                reason: e.to_string(),
            }
        })?;
        let mut devices: Vec<(String, u32)> = Vec::new();
        let mut add = |profile: &str| match devices.iter_mut().find(|x| x.0 == profile) {
            Some(x) => x.1 += 1,
            None => devices.push((profile.to_string(), 1)),
        };
        for d in &c.devices {
            add(&d.profile);
        }
        // A tier's endpoints are simulated by their profiles too, one device
        // each: the simulator prices them exactly as the tier's router does.
        for e in &c.endpoints {
            let Some(profile) = &e.profile else {
                return Err(LoadgenError::Fleet {
                    path: path.to_path_buf(),
                    line: None,
                    reason: format!(
                        "endpoints.{}: a Switchyard node reports its devices only when running; \
                         give it `profile` to simulate it",
                        e.id
                    ),
                });
            };
            add(profile);
        }
        Ok(Self {
            devices,
            model: Some(c.model.spec.clone()),
            router: c.router.clone(),
            engine: c.engine,
            source: path.display().to_string(),
            profiles_dir: Some(c.profiles_dir.clone()),
        })
    }

    /// Total devices (saturating; a parsed fleet never saturates).
    pub fn num_devices(&self) -> u32 {
        self.devices.iter().fold(0u32, |n, d| n.saturating_add(d.1))
    }

    /// Compact label, `h100-sxm=2,l4=4`.
    pub fn label(&self) -> String {
        self.devices
            .iter()
            .map(|(p, n)| format!("{p}={n}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One device type, ready to instantiate engines and backends.
#[derive(Debug, Clone)]
pub struct DeviceType {
    /// Profile name.
    pub profile: String,
    /// Cost model for the fleet's model.
    pub cost: CostModel,
    /// KV blocks per device.
    pub kv_blocks: u32,
    /// Engine limits.
    pub engine: EngineConfig,
    /// Simulated backend sizing.
    pub sim: SimConfig,
    /// Prefix caching as the fleet file sets it; `None` lets the simulator decide.
    pub prefix_caching: Option<bool>,
}

impl DeviceType {
    /// Loads `profile` from the catalog and sizes it for `model`.
    pub fn new(
        catalog: &Catalog,
        profile: &str,
        model: &ModelSpec,
        engine: &EngineSection,
    ) -> Result<Self, LoadgenError> {
        let prefix_caching = engine.enable_prefix_caching;
        let device = catalog.device(profile)?;
        let cost = CostModel::new(device, model.clone());
        let sim = SimConfig {
            block_size: engine.block_size,
            max_num_seqs: engine.max_num_seqs,
            max_batched_tokens: engine.max_batched_tokens,
            kv_blocks: None,
        };
        let kv_blocks = cost
            .kv_blocks(sim.block_size, sim.max_num_seqs, sim.max_batched_tokens)
            .map_err(|e| LoadgenError::Device {
                device: profile.to_string(),
                reason: e.to_string(),
            })?;
        let engine = EngineConfig {
            max_num_seqs: sim.max_num_seqs,
            max_batched_tokens: sim.max_batched_tokens,
            max_model_len: model.max_context,
            enable_prefix_caching: engine.enable_prefix_caching.unwrap_or(true),
            step_time_budget: None,
        };
        Ok(Self {
            profile: profile.to_string(),
            cost,
            kv_blocks,
            engine,
            sim: SimConfig {
                kv_blocks: Some(kv_blocks),
                ..sim
            },
            prefix_caching,
        })
    }

    /// Hourly price of one device, USD.
    pub fn usd_per_hour(&self) -> f64 {
        self.cost.device().price_usd_per_hour
    }
}

/// A resolved fleet: one entry per device (types repeated by count).
#[derive(Debug, Clone)]
pub struct Fleet {
    /// Device types in spec order.
    pub types: Vec<DeviceType>,
    /// Per device: index into `types`.
    pub devices: Vec<usize>,
    /// The spec it was built from.
    pub spec: FleetSpec,
}

impl Fleet {
    /// Resolves every profile of `spec` for `model`.
    pub fn build(
        catalog: &Catalog,
        spec: &FleetSpec,
        model: &ModelSpec,
    ) -> Result<Self, LoadgenError> {
        let mut types = Vec::new();
        let mut devices = Vec::new();
        for (i, (profile, count)) in spec.devices.iter().enumerate() {
            types.push(DeviceType::new(catalog, profile, model, &spec.engine)?);
            devices.extend(std::iter::repeat_n(i, *count as usize));
        }
        Ok(Self {
            types,
            devices,
            spec: spec.clone(),
        })
    }

    /// Hourly price of the whole fleet, USD.
    pub fn usd_per_hour(&self) -> f64 {
        self.devices
            .iter()
            .map(|&t| self.types[t].usd_per_hour())
            .sum()
    }

    /// Profile name of device `i`.
    pub fn profile(&self, i: usize) -> &str {
        &self.types[self.devices[i]].profile
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_and_toml() {
        let f = FleetSpec::inline("h100-sxm=2,mi300x=1,l4").unwrap();
        assert_eq!(
            f.devices,
            vec![
                ("h100-sxm".into(), 2),
                ("mi300x".into(), 1),
                ("l4".into(), 1)
            ]
        );
        assert_eq!(f.num_devices(), 4);
        let text = "[[devices]]\nprofile = \"l4\"\ncount = 3\n[[devices]]\nid = \"d1\"\nbackend = \"sim\"\nprofile = \"l4\"\n[router]\npolicy = \"cost\"\n[router.slo]\nttft_ms = 100\ntpot_ms = 10\n";
        let f = FleetSpec::from_toml(Path::new("f.toml"), text).unwrap();
        assert_eq!(f.devices, vec![("l4".into(), 4)]);
        assert_eq!(
            f.router.policy,
            switchyard_scheduler::router::PolicyKind::Cost
        );
    }

    #[test]
    fn server_config_is_a_fleet() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../switchyard.toml");
        let f = FleetSpec::load(&path).unwrap();
        assert!(f.num_devices() >= 1, "{f:?}");
        assert_eq!(f.model.as_deref(), Some("smollm2-135m"));
        assert!(f.profiles_dir.is_some());
        assert_eq!(f.router.slo.percentile, 0.95);
    }

    #[test]
    fn a_tier_config_simulates_its_endpoints_by_profile() {
        let text = r#"
[model]
spec = "llama-3.1-8b"
[[devices]]
id = "local"
backend = "sim"
profile = "l4"
[[endpoints]]
id = "a"
url = "http://10.0.0.1:8000"
engine = "vllm"
profile = "h100-sxm"
[[endpoints]]
id = "b"
url = "http://10.0.0.2:8000"
engine = "sglang"
profile = "h100-sxm"
[[endpoints]]
id = "node"
url = "http://10.0.0.3:8000"
engine = "switchyard"
profile = "mi300x"
"#;
        let f = FleetSpec::from_toml(Path::new("tier.toml"), text).unwrap();
        assert_eq!(
            f.devices,
            vec![
                ("l4".to_string(), 1),
                ("h100-sxm".to_string(), 2),
                ("mi300x".to_string(), 1)
            ]
        );
        let unpriced = text.replace("profile = \"mi300x\"\n", "");
        let e = FleetSpec::from_toml(Path::new("tier.toml"), &unpriced).unwrap_err();
        assert!(e.to_string().contains("endpoints.node"), "{e}");
    }

    #[test]
    fn bad_fleets_name_file_and_line() {
        let e = FleetSpec::from_toml(
            Path::new("f.toml"),
            "[[devices]]\nprofile = \"l4\"\ncolour = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("f.toml:3") && e.contains("colour"), "{e}");
        let e = FleetSpec::inline("l4=x").unwrap_err().to_string();
        assert!(e.contains("l4"), "{e}");
        let e = FleetSpec::load(Path::new("/nonexistent/fleet.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/fleet.toml"), "{e}");
    }

    #[test]
    fn huge_counts_are_refused_not_overflowed() {
        let text = "[[devices]]\nprofile = \"l4\"\ncount = 4294967295\n\
                    [[devices]]\nprofile = \"l4\"\ncount = 2\n";
        let e = FleetSpec::from_toml(Path::new("f.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("devices.count"), "{e}");
        let e = FleetSpec::inline("l4=4294967295,h100-sxm=4294967295")
            .unwrap_err()
            .to_string();
        assert!(e.contains("devices.count"), "{e}");
        assert_eq!(
            FleetSpec::inline("l4=65536").unwrap().num_devices(),
            MAX_FLEET_DEVICES
        );
    }
}
