//! The catalog: services discovered by providers (or loaded from a JSON file), as scripts see them.
//!
//! Owns the `CatalogEntry` shape and loading a catalog file. A catalog is a full snapshot: it is
//! replaced whole, never patched. Must never: hold routing state or reach into the route table.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One discovered service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

fn default_provider() -> String {
    "file".to_string()
}

/// A full snapshot of discovered services.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Catalog {
    pub entries: Vec<CatalogEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read catalog {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid catalog {path}: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
}

impl Catalog {
    /// Loads a JSON file holding an array of entries.
    pub fn load(path: &Path) -> Result<Catalog, CatalogError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
            path: shown.clone(),
            source,
        })?;
        let entries = serde_json::from_str(&text).map_err(|source| CatalogError::Parse {
            path: shown,
            source,
        })?;
        Ok(Catalog { entries })
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
