//! The catalog: services discovered by providers (or loaded from a JSON file), as scripts see them.
//!
//! Owns the `CatalogEntry` shape and loading a catalog file. A catalog is a full snapshot: it is
//! replaced whole, never patched. Also owns what providers send (`ProviderReport` on a
//! `ProviderSender`), so providers need not know the control loop that reads it.
//! Must never: hold routing state or reach into the route table.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// What a provider reports. The control loop is the only reader: it keeps each provider's
/// latest snapshot, merges them and rebuilds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderReport {
    /// A new full snapshot of what `provider` (`file`, `docker`, `swarm`) discovered; it
    /// replaces that provider's previous snapshot only.
    Snapshot {
        provider: &'static str,
        catalog: Arc<Catalog>,
    },
    /// `provider` could not produce a snapshot (counted in metrics, shown in `/api/catalog`
    /// until its next snapshot; rebuilds nothing).
    SyncFailed {
        provider: &'static str,
        error: String,
    },
}

/// Where providers send their reports.
pub type ProviderSender = tokio::sync::mpsc::Sender<ProviderReport>;

/// One discovered service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    pub name: String,
    /// Which provider found it (`file`, `docker`, `swarm`).
    #[serde(default = "default_provider")]
    pub provider: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Upstream addresses, `host:port` or `http://host:port`.
    #[serde(default)]
    pub servers: Vec<String>,
    /// What the Docker provider knows of the container behind this entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerDetail>,
}

/// Provider detail of a container-backed entry (Docker; Swarm tasks add to it).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerDetail {
    pub id: String,
    /// The container name without Docker's leading `/`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose_project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose_service: Option<String>,
    /// `running`, `exited`, `paused`, ...
    #[serde(default)]
    pub state: String,
    /// `healthy`, `unhealthy` or `starting` when the image has a health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// `bridge`, `host`, `none`, `container:<id>` or a network name.
    #[serde(default)]
    pub network_mode: String,
    /// Network name → the container's IPv4 address on it.
    #[serde(default)]
    pub networks: BTreeMap<String, String>,
    /// Exposed TCP ports, ascending.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Container port → published host addresses (`ip:port`).
    #[serde(default)]
    pub host_ports: BTreeMap<u16, Vec<String>>,
    /// The address servers of this container use (the chosen network's, or the host address
    /// for host networking); `None` when there is none (no network, not running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Swarm: the service id (entries of one service share it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
    /// Swarm: the task's slot (replicated services; none for global ones or the service VIP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_slot: Option<u64>,
    /// Swarm: the id of the node the task runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

fn default_provider() -> String {
    "file".to_string()
}

/// A full snapshot of discovered services.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Catalog {
    pub entries: Vec<CatalogEntry>,
    /// What the provider skipped and why (a container with a malformed label, ...): shown in
    /// `/api/scripts` beside the build's own warnings.
    #[serde(skip)]
    pub problems: Vec<String>,
}

/// Why a catalog file could not be loaded. The cause is part of the message (and not also an
/// error source, so a `{:#}` chain does not print it twice).
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read catalog {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("invalid catalog {path}: {cause}")]
    Parse {
        path: String,
        cause: serde_json::Error,
    },
}

impl Catalog {
    /// The JSON Schema of a catalog file (an array of entries), for editors and checks.
    pub fn json_schema() -> serde_json::Value {
        let mut schema = schemars::schema_for!(Vec<CatalogEntry>);
        schema.insert("title".into(), "switchyard catalog file".into());
        schema.to_value()
    }

    /// Loads a JSON file holding an array of entries.
    pub fn load(path: &Path) -> Result<Catalog, CatalogError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|cause| CatalogError::Read {
            path: shown.clone(),
            cause,
        })?;
        let entries = serde_json::from_str(&text)
            .map_err(|cause| CatalogError::Parse { path: shown, cause })?;
        Ok(Catalog {
            entries,
            problems: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_rejected_with_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(&path, r#"[{"name":"a","labls":{}}]"#).unwrap();
        let err = Catalog::load(&path).unwrap_err().to_string();
        assert!(err.contains("unknown field `labls`"), "{err}");
        assert!(err.contains("line 1"), "{err}");
    }
}
