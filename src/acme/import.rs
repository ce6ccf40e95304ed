//! `switchyard certs import`: the certificates of a Traefik `acme.json` (its resolver's
//! `Certificates`: base64 PEM chain and key per domain) into a resolver's storage file, so a
//! migrating user keeps serving them and switchyard renews them when due.
//!
//! Traefik's account is not carried over (Traefik's default account keys are RSA; a new
//! account is registered at the first order), which the CA does not mind.

use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

use super::storage::{self, Issued};

#[derive(Deserialize)]
struct TraefikResolver {
    #[serde(rename = "Certificates", default)]
    certificates: Option<Vec<TraefikCert>>,
}

#[derive(Deserialize)]
struct TraefikCert {
    domain: TraefikDomain,
    certificate: String,
    key: String,
}

#[derive(Deserialize)]
struct TraefikDomain {
    main: String,
}

/// What an import did: the names imported, and the certificates skipped with why.
#[derive(Debug, Default)]
pub struct Imported {
    pub names: Vec<String>,
    pub skipped: Vec<(String, String)>,
    /// The resolvers the file holds (to say which one to pick).
    pub available: Vec<String>,
}

/// Imports resolver `from`'s certificates of the Traefik file `acme_json` into the storage
/// file `storage` (kept: its account and certificates for other names), as resolver `into`.
pub fn import(
    acme_json: &Path,
    from: &str,
    into: &str,
    storage_file: &Path,
) -> Result<Imported, String> {
    let text = std::fs::read_to_string(acme_json)
        .map_err(|e| format!("cannot read {}: {e}", acme_json.display()))?;
    let all: std::collections::BTreeMap<String, TraefikResolver> = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a Traefik acme.json: {e}", acme_json.display()))?;
    let mut out = Imported {
        available: all.keys().cloned().collect(),
        ..Default::default()
    };
    let Some(resolver) = all.get(from) else {
        return Err(format!(
            "{} has no resolver {from:?} (it has: {})",
            acme_json.display(),
            out.available.join(", ")
        ));
    };
    let b64 = |s: &str, what: &str| -> Result<String, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|e| format!("{what} is not base64: {e}"))?;
        String::from_utf8(bytes).map_err(|_| format!("{what} is not PEM text"))
    };
    let mut stored = storage::load(storage_file)?;
    for c in resolver.certificates.iter().flatten() {
        let name = c.domain.main.trim().to_ascii_lowercase();
        let issued = b64(&c.certificate, "certificate")
            .and_then(|chain| b64(&c.key, "key").map(|key| (chain, key)))
            .and_then(|(chain, key)| Issued::from_pem(&name, &chain, &key, into));
        match issued {
            Ok(i) => {
                stored.issued.retain(|old| old.name != name);
                stored.issued.push(i);
                out.names.push(name);
            }
            Err(e) => out.skipped.push((name, e)),
        }
    }
    storage::save(storage_file, &stored)?;
    Ok(out)
}
