//! Fleets: the clusters of one topology kept between runs (`meshconf run --reuse`). A fleet is keyed by a hash of
//! everything that shapes its clusters (provider, cluster names and networks, kind config contents, subnets, node
//! image, images), lives in `<cache>/fleets/<key>/` (its kubeconfigs and the provider's state file), and records
//! when it was made, how often it was used and whether a run left it dirty (then the next run recreates it).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::scenario::Scenario;

/// A fleet's key: 16 hex digits of the hash of its inputs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FleetKey(pub String);

impl std::fmt::Display for FleetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a fleet records about itself (`fleet.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetRecord {
    /// Key.
    pub key: FleetKey,
    /// Provider name (`kind`, `kwok`).
    pub provider: String,
    /// The scenario whose topology made it.
    pub topology_of: String,
    /// The provider's cluster names.
    pub clusters: Vec<String>,
    /// The inputs the key hashes, one `name=value` each (shown by `meshconf fleet list`).
    pub inputs: Vec<String>,
    /// Creation time, Unix seconds.
    pub created: u64,
    /// Runs that used it.
    pub runs: u64,
    /// Why it must not be reused, when a run left it so.
    pub dirty: Option<String>,
}

/// Where fleets live: `$MESHCONF_FLEETS_DIR`, else `<cache>/fleets` (the kind suites keep theirs apart, so
/// `make test` removes only its own).
pub fn fleets_dir() -> PathBuf {
    match std::env::var_os("MESHCONF_FLEETS_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => crate::tools::cache_dir().join("fleets"),
    }
}

/// The directory of fleet `key`.
pub fn fleet_dir(key: &FleetKey) -> PathBuf {
    fleets_dir().join(&key.0)
}

/// The inputs that shape a scenario's clusters on a provider, as `name=value` lines (on kind the kind config
/// contents by their hash), in a stable order; `extra` adds the provider's own (node image, images, subnet).
pub fn inputs(provider: &str, scenario: &Scenario, extra: &[(&str, String)]) -> Result<Vec<String>, String> {
    let mut v = vec![format!("provider={provider}")];
    for c in &scenario.clusters {
        let mut line = format!(
            "cluster={} network={} pods={} services={}",
            c.name, c.network, c.subnets.pods, c.subnets.services
        );
        // Only kind reads the kind config.
        if provider == "kind" {
            let config = std::fs::read(&c.kind_config)
                .map_err(|e| format!("kind config {}: {e}", c.kind_config.display()))?;
            line.push_str(&format!(" kind-config-sha256={}", hex(&Sha256::digest(&config))));
        }
        v.push(line);
    }
    v.extend(extra.iter().map(|(k, val)| format!("{k}={val}")));
    Ok(v)
}

/// The key of a fleet made from `inputs`.
pub fn key_of(inputs: &[String]) -> FleetKey {
    let mut h = Sha256::new();
    for i in inputs {
        h.update(i.as_bytes());
        h.update(b"\n");
    }
    FleetKey(hex(&h.finalize())[..16].to_string())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const RECORD: &str = "fleet.json";

/// The record in `dir`, if one is there and readable.
pub fn read(dir: &Path) -> Result<Option<FleetRecord>, String> {
    let path = dir.join(RECORD);
    match std::fs::read_to_string(&path) {
        Ok(t) => serde_json::from_str(&t).map(Some).map_err(|e| {
            format!(
                "{}: {e} (remove the fleet with `meshconf fleet down`)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes `record` into `dir`.
pub fn write(dir: &Path, record: &FleetRecord) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let text = serde_json::to_string_pretty(record).map_err(|e| e.to_string())?;
    std::fs::write(dir.join(RECORD), text).map_err(|e| format!("{}: {e}", dir.display()))
}

/// Every fleet under `root`, by key.
pub fn list(root: &Path) -> Vec<(PathBuf, Result<FleetRecord, String>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return out;
    };
    for e in entries.flatten() {
        let dir = e.path();
        if !dir.is_dir() {
            continue;
        }
        match read(&dir) {
            Ok(Some(r)) => out.push((dir, Ok(r))),
            Ok(None) => out.push((dir, Err("no fleet.json (a creation that never finished)".into()))),
            Err(e) => out.push((dir, Err(e))),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Now, Unix seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `3h12m`, `45s`: an age for `fleet list`.
pub fn age(since: u64, now: u64) -> String {
    let s = now.saturating_sub(since);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_follows_every_input_and_nothing_else() {
        let a = vec![
            "provider=kind".to_string(),
            "cluster=cluster1 network=network1".into(),
        ];
        let mut b = a.clone();
        assert_eq!(key_of(&a), key_of(&b));
        assert_eq!(key_of(&a).0.len(), 16);
        b.push("node-image=meshconf.local/kind-node:v1.35.4-x".into());
        assert_ne!(key_of(&a), key_of(&b), "a new node image is a new fleet");
        let c = vec![
            "provider=kind".to_string(),
            "cluster=cluster1 network=network2".into(),
        ];
        assert_ne!(key_of(&a), key_of(&c), "another network is another topology");
    }

    #[test]
    fn records_round_trip_and_a_broken_one_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = FleetRecord {
            key: FleetKey("0123456789abcdef".into()),
            provider: "kind".into(),
            topology_of: "multi-primary".into(),
            clusters: vec!["mcf-012345-cluster1".into()],
            inputs: vec!["provider=kind".into()],
            created: 100,
            runs: 2,
            dirty: None,
        };
        let d = dir.path().join("0123456789abcdef");
        write(&d, &r).expect("write");
        assert_eq!(read(&d).expect("read"), Some(r));
        assert_eq!(read(&dir.path().join("none")).expect("absent"), None);
        std::fs::write(d.join(RECORD), "{").expect("garble");
        assert!(read(&d).is_err_and(|e| e.contains("fleet.json")));
        assert_eq!(list(dir.path()).len(), 1);
    }

    #[test]
    fn ages_read_as_people_write_them() {
        assert_eq!(age(0, 45), "45s");
        assert_eq!(age(0, 125), "2m05s");
        assert_eq!(age(0, 3 * 3600 + 12 * 60), "3h12m");
    }
}
