//! `pass_tls_client_cert` (Traefik's `passTLSClientCert`): the client certificate a TLS
//! entrypoint checked, passed to the server in `X-Forwarded-Tls-Client-Cert` (the PEM chain)
//! and `X-Forwarded-Tls-Client-Cert-Info` (chosen fields), in Traefik's formats.
//!
//! Invariants: both headers are removed from every request the middleware sees before anything
//! is set (a client can never supply them); nothing is set when the connection presented no
//! certificate; values are URL-escaped as Traefik does, so they are always valid header values.

use base64::Engine as _;
use x509_parser::extensions::GeneralName;

pub const CERT_HEADER: &str = "x-forwarded-tls-client-cert";
pub const INFO_HEADER: &str = "x-forwarded-tls-client-cert-info";

/// The client's certificate chain (DER, leaf first), put in a request's extensions by the
/// proxy when the TLS handshake received one.
#[derive(Debug, Clone)]
pub struct ClientChain(pub std::sync::Arc<Vec<Vec<u8>>>);

/// Which parts of the certificates are passed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassTlsClientCert {
    /// The whole chain as PEM bodies (`X-Forwarded-Tls-Client-Cert`).
    pub pem: bool,
    pub subject: bool,
    pub issuer: bool,
    pub not_before: bool,
    pub not_after: bool,
    pub sans: bool,
    pub serial_number: bool,
}

impl PassTlsClientCert {
    /// Whether the info header is sent at all.
    fn any_info(&self) -> bool {
        self.subject
            || self.issuer
            || self.not_before
            || self.not_after
            || self.sans
            || self.serial_number
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.pem {
            parts.push("pem");
        }
        for (on, name) in [
            (self.subject, "subject"),
            (self.issuer, "issuer"),
            (self.not_before, "not_before"),
            (self.not_after, "not_after"),
            (self.sans, "sans"),
            (self.serial_number, "serial_number"),
        ] {
            if on {
                parts.push(name);
            }
        }
        format!("pass_tls_client_cert({})", parts.join(", "))
    }

    /// The two header values for `chain` (`None`: not sent).
    pub fn values(&self, chain: &[Vec<u8>]) -> (Option<String>, Option<String>) {
        if chain.is_empty() {
            return (None, None);
        }
        let pem = self.pem.then(|| {
            let bodies: Vec<String> = chain
                .iter()
                .map(|der| base64::engine::general_purpose::STANDARD.encode(der))
                .collect();
            query_escape(&bodies.join(","))
        });
        let info = self.any_info().then(|| {
            let certs: Vec<String> = chain.iter().filter_map(|der| self.info_of(der)).collect();
            query_escape(&certs.join(","))
        });
        (pem, info)
    }

    /// One certificate's fields: `Subject="...";Issuer="...";NB="...";NA="...";SAN="..."`.
    fn info_of(&self, der: &[u8]) -> Option<String> {
        let (_, x) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut fields = Vec::new();
        if self.subject {
            fields.push(format!("Subject=\"{}\"", dn(x.subject())));
        }
        if self.issuer {
            fields.push(format!("Issuer=\"{}\"", dn(x.issuer())));
        }
        if self.serial_number {
            fields.push(format!("SerialNumber=\"{}\"", x.raw_serial_as_string()));
        }
        if self.not_before {
            fields.push(format!("NB=\"{}\"", x.validity().not_before.timestamp()));
        }
        if self.not_after {
            fields.push(format!("NA=\"{}\"", x.validity().not_after.timestamp()));
        }
        if self.sans {
            let mut sans = Vec::new();
            if let Ok(Some(ext)) = x.subject_alternative_name() {
                for n in &ext.value.general_names {
                    match n {
                        GeneralName::DNSName(d) | GeneralName::RFC822Name(d) => {
                            sans.push(d.to_string())
                        }
                        GeneralName::IPAddress(b) => sans.push(ip_text(b)),
                        GeneralName::URI(u) => sans.push(u.to_string()),
                        _ => {}
                    }
                }
            }
            fields.push(format!("SAN=\"{}\"", sans.join(",")));
        }
        Some(fields.join(";"))
    }
}

/// A distinguished name in Traefik's order and spelling: `C=..,ST=..,L=..,O=..,OU=..,CN=..`.
fn dn(name: &x509_parser::x509::X509Name<'_>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let order: [(&str, &x509_parser::der_parser::oid::Oid<'static>); 6] = [
        ("C", &x509_parser::oid_registry::OID_X509_COUNTRY_NAME),
        (
            "ST",
            &x509_parser::oid_registry::OID_X509_STATE_OR_PROVINCE_NAME,
        ),
        ("L", &x509_parser::oid_registry::OID_X509_LOCALITY_NAME),
        ("O", &x509_parser::oid_registry::OID_X509_ORGANIZATION_NAME),
        (
            "OU",
            &x509_parser::oid_registry::OID_X509_ORGANIZATIONAL_UNIT,
        ),
        ("CN", &x509_parser::oid_registry::OID_X509_COMMON_NAME),
    ];
    for (key, oid) in order {
        for a in name.iter_by_oid(oid) {
            if let Ok(v) = a.as_str() {
                parts.push(format!("{key}={v}"));
            }
        }
    }
    parts.join(",")
}

fn ip_text(b: &[u8]) -> String {
    match b.len() {
        4 => <[u8; 4]>::try_from(b)
            .map_or_else(|_| String::new(), |a| std::net::IpAddr::from(a).to_string()),
        16 => <[u8; 16]>::try_from(b)
            .map_or_else(|_| String::new(), |a| std::net::IpAddr::from(a).to_string()),
        _ => String::new(),
    }
}

/// Go's `url.QueryEscape`: unreserved bytes kept, space as `+`, everything else `%XX`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 4);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> Vec<u8> {
        let mut p = rcgen::CertificateParams::new(vec!["client.test".to_string()]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme Co");
        p.distinguished_name.push(rcgen::DnType::CountryName, "FR");
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn traefik_formats() {
        let der = cert();
        let all = PassTlsClientCert {
            pem: true,
            subject: true,
            issuer: true,
            not_before: true,
            not_after: true,
            sans: true,
            serial_number: false,
        };
        let (pem, info) = all.values(std::slice::from_ref(&der));
        let pem = pem.unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        assert_eq!(pem, query_escape(&b64));
        assert!(
            !pem.contains('/') && !pem.contains('+') && !pem.contains('='),
            "{pem}"
        );
        let info = info.unwrap();
        assert!(
            info.starts_with("Subject%3D%22C%3DFR%2CO%3DAcme+Co%2CCN%3Dalice%22%3BIssuer%3D"),
            "{info}"
        );
        assert!(info.contains("SAN%3D%22client.test%22"), "{info}");
        assert_eq!(
            PassTlsClientCert::default().values(std::slice::from_ref(&der)),
            (None, None),
            "nothing asked, nothing sent"
        );
        assert_eq!(all.values(&[]), (None, None), "no certificate, no header");
    }
}
