//! A resolver's storage file: its ACME account and the certificates it holds, as JSON, written
//! whole (a temporary file renamed over the old one) with mode 0600, since it holds private keys.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::tls::Cert;

/// The file's content.
#[derive(Default, Serialize)]
pub struct Stored {
    /// The account's credentials (its key included), for `ca_server`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<instant_acme::AccountCredentials>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_server: Option<String>,
    #[serde(rename = "certificates")]
    pub issued: Vec<Issued>,
}

/// A certificate a resolver obtained.
#[derive(Clone, Serialize)]
pub struct Issued {
    pub name: String,
    /// The chain, leaf first (PEM).
    pub certificate: String,
    /// Its private key (PEM).
    pub key: String,
    /// Ordered at a handshake (on-demand), not for a route: renewed while it is kept.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_demand: bool,
    #[serde(skip)]
    pub cert: Cert,
}

impl Issued {
    /// A checked certificate from PEM text; `resolver` names its source.
    pub fn from_pem(name: &str, chain: &str, key: &str, resolver: &str) -> Result<Issued, String> {
        let certs = CertificateDer::pem_slice_iter(chain.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("certificate for {name}: {e}"))?;
        let key_der = PrivateKeyDer::from_pem_slice(key.as_bytes())
            .map_err(|e| format!("key for {name}: {e}"))?;
        let cert = crate::tls::certs::from_der(
            certs,
            key_der,
            &format!("acme:{resolver}"),
            crate::tls::certs::now(),
        )
        .map_err(|e| format!("certificate for {name}: {e}"))?;
        Ok(Issued {
            name: name.to_string(),
            certificate: chain.to_string(),
            key: key.to_string(),
            on_demand: false,
            cert,
        })
    }
}

/// The stored state; an absent file is empty. Certificates that no longer serve (expired) are
/// dropped with a warning, so they get ordered again.
pub fn load(path: &Path) -> Result<Stored, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Stored::default()),
        Err(e) => return Err(format!("certificate storage {}: {e}", path.display())),
    };
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        account: Option<instant_acme::AccountCredentials>,
        #[serde(default)]
        ca_server: Option<String>,
        #[serde(default)]
        certificates: Vec<RawIssued>,
    }
    #[derive(Deserialize)]
    struct RawIssued {
        name: String,
        certificate: String,
        key: String,
        #[serde(default)]
        on_demand: bool,
    }
    let raw: Raw = serde_json::from_str(&text)
        .map_err(|e| format!("certificate storage {} is not valid: {e}", path.display()))?;
    let issued = raw
        .certificates
        .into_iter()
        .filter_map(|r| match Issued::from_pem(&r.name, &r.certificate, &r.key, "stored") {
            Ok(i) => Some(Issued {
                on_demand: r.on_demand,
                ..i
            }),
            Err(e) => {
                tracing::warn!(storage = %path.display(), error = %e, "stored certificate dropped");
                None
            }
        })
        .collect();
    Ok(Stored {
        account: raw.account,
        ca_server: raw.ca_server,
        issued,
    })
}

/// Writes the whole state (mode 0600).
pub fn save(path: &Path, stored: &Stored) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let text = serde_json::to_string_pretty(stored)
        .map_err(|e| format!("encoding the certificate storage: {e}"))?;
    let tmp = path.with_extension("tmp");
    let fail = |e: std::io::Error| format!("certificate storage {}: {e}", path.display());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    f.write_all(text.as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}
