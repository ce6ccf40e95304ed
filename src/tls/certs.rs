//! Certificates: PEM files read and checked into a `Cert` (the rustls key, the names it
//! serves, its validity and where it came from), and the self-signed default certificate.
//!
//! Invariants: a `Cert` always holds a chain whose first certificate matches its private key and
//! that is valid now (an expired, not-yet-valid, mismatched or unreadable pair is a `CertError`
//! naming the file and the reason, never a `Cert`); names are lowercase, wildcards kept as
//! `*.example.com`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;

/// A certificate and key pair to read: the cert file holds the chain, leaf first.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate ready to serve.
#[derive(Debug, Clone)]
pub struct Cert {
    pub key: Arc<CertifiedKey>,
    /// DNS names (and IP addresses as text) of the leaf: its SANs, else its CN.
    pub names: Vec<String>,
    /// Seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    pub subject: String,
    pub issuer: String,
    /// The cert file, or `self-signed` / the source that made it.
    pub source: String,
}

/// Why a certificate pair cannot serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("certificate {file}: {reason}")]
pub struct CertError {
    pub file: String,
    pub reason: String,
}

fn err(file: &Path, reason: impl Into<String>) -> CertError {
    CertError {
        file: file.display().to_string(),
        reason: reason.into(),
    }
}

/// Reads and checks a PEM certificate chain and its private key (PKCS#8, PKCS#1 RSA or SEC1
/// EC; RSA, ECDSA P-256/P-384 and Ed25519 keys).
pub fn load(files: &CertFiles) -> Result<Cert, CertError> {
    let cert_pem = std::fs::read(&files.cert).map_err(|e| err(&files.cert, e.to_string()))?;
    let key_pem = std::fs::read(&files.key).map_err(|e| err(&files.key, e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(&files.cert, format!("not a PEM certificate file: {e}")))?;
    if chain.is_empty() {
        return Err(err(&files.cert, "holds no PEM certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| err(&files.key, format!("no PEM private key found: {e}")))?;
    from_der(chain, key, &files.cert.display().to_string(), now())
        .map_err(|reason| err(&files.cert, reason))
}

/// Seconds since the Unix epoch, now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A checked `Cert` from DER parts; `source` says where it came from, `now` is the time its
/// validity is checked at. The error is the reason alone.
pub fn from_der(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    source: &str,
    now: i64,
) -> Result<Cert, String> {
    let leaf = chain.first().ok_or("holds no certificate")?.clone();
    let (_, x509) = x509_parser::parse_x509_certificate(&leaf)
        .map_err(|e| format!("the first certificate cannot be parsed: {e}"))?;
    let not_before = x509.validity().not_before.timestamp();
    let not_after = x509.validity().not_after.timestamp();
    if now > not_after {
        return Err(format!(
            "expired on {}",
            x509.validity().not_after.to_datetime()
        ));
    }
    if now < not_before {
        return Err(format!(
            "not valid before {}",
            x509.validity().not_before.to_datetime()
        ));
    }
    let names = names_of(&x509);
    let subject = x509.subject().to_string();
    let issuer = x509.issuer().to_string();
    let signer = super::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("unsupported private key: {e}"))?;
    let certified = CertifiedKey::new(chain, signer);
    certified
        .keys_match()
        .map_err(|_| "the private key does not belong to the certificate".to_string())?;
    Ok(Cert {
        key: Arc::new(certified),
        names,
        not_before,
        not_after,
        subject,
        issuer,
        source: source.to_string(),
    })
}

/// The leaf's DNS SANs (and IP SANs as text), else its common name; lowercase.
fn names_of(x509: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push(d.trim_end_matches('.').to_ascii_lowercase()),
                GeneralName::IPAddress(b) => {
                    let ip: Option<std::net::IpAddr> = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(Into::into),
                        16 => <[u8; 16]>::try_from(*b).ok().map(Into::into),
                        _ => None,
                    };
                    names.extend(ip.map(|i| i.to_string()));
                }
                _ => {}
            }
        }
    }
    if names.is_empty() {
        names.extend(
            x509.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(|cn| cn.to_ascii_lowercase()),
        );
    }
    names.sort();
    names.dedup();
    names
}

/// The common name of the certificate served when no other fits (as Traefik's
/// `TRAEFIK DEFAULT CERT`).
pub const DEFAULT_CERT_CN: &str = "SWITCHYARD DEFAULT CERT";

/// A self-signed ECDSA P-256 certificate, made at start when no default certificate is given.
pub fn self_signed() -> Result<Cert, String> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| format!("self-signed certificate: {e}"))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, DEFAULT_CERT_CN);
    let key = rcgen::KeyPair::generate().map_err(|e| format!("self-signed key: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("self-signed certificate: {e}"))?;
    let key_der = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| format!("self-signed key: {e}"))?;
    let mut c = from_der(vec![cert.der().clone()], key_der, "self-signed", now())?;
    // The default certificate is chosen by position, never by name.
    c.names.clear();
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate for `names` signed by its own key, as PEM files in `dir`.
    fn write_pair(dir: &Path, stem: &str, names: &[&str]) -> CertFiles {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let ck = rcgen::generate_simple_self_signed(names).unwrap();
        let files = CertFiles {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        };
        std::fs::write(&files.cert, ck.cert.pem()).unwrap();
        std::fs::write(&files.key, ck.signing_key.serialize_pem()).unwrap();
        files
    }

    #[test]
    fn a_good_pair_loads_with_its_names() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_pair(dir.path(), "a", &["A.example.com", "*.b.example.com"]);
        let c = load(&files).unwrap();
        assert_eq!(c.names, vec!["*.b.example.com", "a.example.com"]);
        assert!(c.not_after > now());
    }

    #[test]
    fn bad_pairs_name_the_file_and_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_pair(dir.path(), "a", &["a.example.com"]);
        let b = write_pair(dir.path(), "b", &["b.example.com"]);
        let cases = [
            (
                "mismatched key",
                CertFiles {
                    cert: a.cert.clone(),
                    key: b.key.clone(),
                },
                "does not belong",
            ),
            (
                "missing cert file",
                CertFiles {
                    cert: dir.path().join("nope.crt"),
                    key: a.key.clone(),
                },
                "nope.crt",
            ),
            (
                "key file given as cert",
                CertFiles {
                    cert: a.key.clone(),
                    key: a.key.clone(),
                },
                "no PEM certificate",
            ),
            (
                "cert file given as key",
                CertFiles {
                    cert: a.cert.clone(),
                    key: a.cert.clone(),
                },
                "no PEM private key",
            ),
        ];
        for (case, files, want) in cases {
            let e = load(&files).unwrap_err().to_string();
            assert!(e.contains(want), "{case}: {e}");
            assert!(e.starts_with("certificate /"), "{case}: {e}");
        }
    }

    #[test]
    fn an_expired_certificate_is_refused() {
        let ck = rcgen::generate_simple_self_signed(vec!["old.example.com".to_string()]).unwrap();
        let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
        let in_ten_thousand_years = now() + 10_000 * 365 * 86_400;
        let e = from_der(vec![ck.cert.der().clone()], key, "x", in_ten_thousand_years).unwrap_err();
        assert!(e.starts_with("expired on"), "{e}");
    }

    #[test]
    fn the_default_certificate_is_self_signed_and_nameless() {
        let c = self_signed().unwrap();
        assert!(c.names.is_empty());
        assert!(c.subject.contains(DEFAULT_CERT_CN), "{}", c.subject);
        assert_eq!(c.subject, c.issuer);
    }
}
