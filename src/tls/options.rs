//! A TLS entrypoint's options (`--entrypoint.NAME.tls.KEY=VALUE`) and the rustls server
//! configuration made from them.
//!
//! Invariants: options are checked when set (an unknown version, cipher suite or client-auth
//! mode is an error naming the accepted values), so building the server configuration can fail
//! only on an unreadable client CA file; TLS 1.0 and 1.1 are never offered.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::store::{Certificates, SniResolver};

/// Whether and how clients present certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No client certificate asked for.
    #[default]
    None,
    /// A certificate signed by the client CA is required (Traefik `RequireAndVerifyClientCert`).
    Require,
    /// A certificate is asked for and, when given, must be signed by the client CA (Traefik
    /// `VerifyClientCertIfGiven`).
    VerifyIfGiven,
}

/// The TLS options of one entrypoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// `12` or `13`.
    pub min_version: u8,
    pub max_version: u8,
    /// rustls suite names (`TLS13_AES_128_GCM_SHA256`, ...); empty: the provider's defaults.
    pub cipher_suites: Vec<String>,
    /// ALPN protocols offered, in preference order.
    pub alpn: Vec<String>,
    pub client_auth: ClientAuth,
    pub client_ca: Option<PathBuf>,
    /// Refuse handshakes for names no certificate lists.
    pub strict_sni: bool,
    /// This entrypoint's certificate for handshakes no certificate names, instead of the
    /// router's default (read when the entrypoint starts).
    pub default_certificate: Option<super::CertFiles>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            min_version: 12,
            max_version: 13,
            cipher_suites: Vec::new(),
            alpn: vec!["h2".into(), "http/1.1".into()],
            client_auth: ClientAuth::None,
            client_ca: None,
            strict_sni: false,
            default_certificate: None,
        }
    }
}

/// The keys `TlsOptions::set` knows, for messages.
pub const KEYS: &str = "tls.min-version, tls.max-version, tls.cipher-suites, tls.alpn, \
                        tls.client-auth, tls.client-ca, tls.strict-sni, tls.default-certificate";

fn version(v: &str) -> Result<u8, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1.2" | "tls1.2" | "tlsv1.2" | "versiontls12" => Ok(12),
        "1.3" | "tls1.3" | "tlsv1.3" | "versiontls13" => Ok(13),
        "1.0" | "1.1" | "versiontls10" | "versiontls11" => Err(format!(
            "TLS version {v:?} is not offered (too weak); use 1.2 or 1.3"
        )),
        _ => Err(format!("unknown TLS version {v:?}; use 1.2 or 1.3")),
    }
}

/// A suite's name as rustls spells it, and as Go (Traefik) does for TLS 1.3 suites.
fn suite_names(s: &SupportedCipherSuite) -> (String, String) {
    let name = format!("{:?}", s.suite());
    let go = name.replacen("TLS13_", "TLS_", 1);
    (name, go)
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Ok(true),
        "false" | "off" | "no" | "0" => Ok(false),
        _ => Err(format!("{key} takes true or false, got {v:?}")),
    }
}

impl TlsOptions {
    /// Sets one option from `KEY` (without the `tls.` prefix) and its text.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let list = || -> Vec<String> {
            value
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        match key {
            "min-version" => self.min_version = version(value)?,
            "max-version" => self.max_version = version(value)?,
            "cipher-suites" => {
                let known: Vec<(String, String)> = super::provider()
                    .cipher_suites
                    .iter()
                    .map(suite_names)
                    .collect();
                let mut out = Vec::new();
                for s in list() {
                    let Some((name, _)) = known.iter().find(|(n, g)| *n == s || *g == s) else {
                        let names: Vec<&str> = known.iter().map(|(n, _)| n.as_str()).collect();
                        return Err(format!(
                            "unknown cipher suite {s:?} (known: {})",
                            names.join(", ")
                        ));
                    };
                    out.push(name.clone());
                }
                self.cipher_suites = out;
            }
            "alpn" => {
                let protocols = list();
                if let Some(p) = protocols
                    .iter()
                    .find(|p| !["h2", "http/1.1"].contains(&p.as_str()))
                {
                    return Err(format!(
                        "ALPN protocol {p:?} is not served (use h2, http/1.1)"
                    ));
                }
                self.alpn = protocols;
            }
            "client-auth" => {
                self.client_auth = match value.trim().to_ascii_lowercase().as_str() {
                    "none" | "noclientcert" => ClientAuth::None,
                    "require" | "requireandverifyclientcert" => ClientAuth::Require,
                    "verify-if-given" | "verifyclientcertifgiven" => ClientAuth::VerifyIfGiven,
                    _ => {
                        return Err(format!(
                            "unknown client-auth {value:?} (use none, require or verify-if-given)"
                        ))
                    }
                }
            }
            "client-ca" => self.client_ca = Some(PathBuf::from(value.trim())),
            "strict-sni" => self.strict_sni = parse_bool("tls.strict-sni", value)?,
            "default-certificate" => {
                let (cert, key) = value
                    .trim()
                    .split_once(':')
                    .filter(|(c, k)| !c.trim().is_empty() && !k.trim().is_empty())
                    .ok_or_else(|| {
                        format!(
                            "tls.default-certificate {value:?}: write CERT_FILE:KEY_FILE, \
                             e.g. /certs/a.crt:/certs/a.key"
                        )
                    })?;
                self.default_certificate = Some(super::CertFiles {
                    cert: PathBuf::from(cert.trim()),
                    key: PathBuf::from(key.trim()),
                });
            }
            _ => return Err(format!("unknown TLS option tls.{key} (known: {KEYS})")),
        }
        Ok(())
    }

    /// Checks what single keys cannot: the version range and client auth's CA.
    pub fn check(&self) -> Result<(), String> {
        if self.min_version > self.max_version {
            return Err("tls.min-version is above tls.max-version".into());
        }
        if self.client_auth != ClientAuth::None && self.client_ca.is_none() {
            return Err("tls.client-auth needs tls.client-ca (the CA file clients' certificates are checked against)".into());
        }
        Ok(())
    }

    /// The rustls configuration of an entrypoint with these options, serving `certs`.
    pub fn server_config(&self, certs: Arc<Certificates>) -> Result<Arc<ServerConfig>, String> {
        self.check()?;
        let mut provider = (*super::provider()).clone();
        if !self.cipher_suites.is_empty() {
            provider
                .cipher_suites
                .retain(|s| self.cipher_suites.contains(&suite_names(s).0));
        }
        let versions: Vec<&'static rustls::SupportedProtocolVersion> =
            [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
                .into_iter()
                .filter(|(v, _)| (self.min_version..=self.max_version).contains(v))
                .map(|(_, p)| p)
                .collect();
        let provider = Arc::new(provider);
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| format!("TLS options: {e} (do the cipher suites fit the versions?)"))?;
        let builder = match (&self.client_ca, self.client_auth) {
            (_, ClientAuth::None) | (None, _) => builder.with_no_client_auth(),
            (Some(ca), mode) => {
                let mut roots = RootCertStore::empty();
                let pems = CertificateDer::pem_file_iter(ca)
                    .map_err(|e| format!("tls.client-ca {}: {e}", ca.display()))?;
                for c in pems {
                    let c = c.map_err(|e| format!("tls.client-ca {}: {e}", ca.display()))?;
                    roots
                        .add(c)
                        .map_err(|e| format!("tls.client-ca {}: {e}", ca.display()))?;
                }
                if roots.is_empty() {
                    return Err(format!(
                        "tls.client-ca {}: holds no certificate",
                        ca.display()
                    ));
                }
                let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let v = if mode == ClientAuth::VerifyIfGiven {
                    v.allow_unauthenticated()
                } else {
                    v
                };
                let v = v
                    .build()
                    .map_err(|e| format!("tls.client-ca {}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(v)
            }
        };
        let default = match &self.default_certificate {
            None => None,
            Some(files) => Some(
                super::certs::load(files)
                    .map_err(|e| format!("tls.default-certificate: {e}"))?
                    .key,
            ),
        };
        let mut config = builder.with_cert_resolver(Arc::new(SniResolver {
            certs,
            strict: self.strict_sni,
            default,
        }));
        config.alpn_protocols = self.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        // Chosen only when a client offers it: ACME's TLS-ALPN-01 validation (RFC 8737).
        config
            .alpn_protocols
            .push(super::store::ACME_TLS_ALPN.to_vec());
        // Stateless TLS 1.3 tickets and TLS 1.2 ticket resumption: no per-session memory.
        if let Ok(t) = rustls::crypto::ring::Ticketer::new() {
            config.ticketer = t;
        }
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_as_set() {
        let cases: &[(&str, &str, Result<(), &str>)] = &[
            ("min-version", "1.3", Ok(())),
            ("min-version", "VersionTLS12", Ok(())),
            ("min-version", "1.1", Err("too weak")),
            ("max-version", "2", Err("unknown TLS version")),
            ("cipher-suites", "TLS13_AES_128_GCM_SHA256", Ok(())),
            ("cipher-suites", "TLS_AES_256_GCM_SHA384", Ok(())),
            (
                "cipher-suites",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                Ok(()),
            ),
            (
                "cipher-suites",
                "TLS_RSA_WITH_RC4_128_SHA",
                Err("unknown cipher suite"),
            ),
            ("alpn", "http/1.1", Ok(())),
            ("alpn", "spdy/3", Err("not served")),
            ("client-auth", "RequireAndVerifyClientCert", Ok(())),
            ("client-auth", "maybe", Err("verify-if-given")),
            ("strict-sni", "yes", Ok(())),
            ("sni", "x", Err("unknown TLS option tls.sni")),
        ];
        for (key, value, want) in cases {
            let got = TlsOptions::default().set(key, value);
            match (want, &got) {
                (Ok(()), Ok(())) => {}
                (Err(w), Err(e)) => assert!(e.contains(w), "{key}={value}: {e}"),
                _ => panic!("{key}={value}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_configuration_follows_the_options() {
        let store = crate::tls::store::CertStore::new(
            Vec::new(),
            crate::tls::certs::self_signed().unwrap(),
        );
        let certs = Certificates::new(store);
        let mut o = TlsOptions::default();
        o.set("min-version", "1.3").unwrap();
        o.set("alpn", "http/1.1").unwrap();
        let c = o.server_config(certs.clone()).unwrap();
        assert_eq!(
            c.alpn_protocols,
            vec![b"http/1.1".to_vec(), b"acme-tls/1".to_vec()]
        );
        let mut o = TlsOptions::default();
        o.set("client-auth", "require").unwrap();
        assert!(o
            .server_config(certs.clone())
            .unwrap_err()
            .contains("tls.client-ca"));
        o.set("client-ca", "/nonexistent/ca.pem").unwrap();
        assert!(o
            .server_config(certs)
            .unwrap_err()
            .contains("/nonexistent/ca.pem"));
    }
}
