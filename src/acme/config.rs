//! A certificate resolver's settings (`--acme.NAME.KEY=VALUE`, `[acme.NAME]` in the TOML file),
//! checked key by key as they are set and as a whole against the entrypoints.

use std::path::PathBuf;
use std::time::Duration;

/// Let's Encrypt's production directory, the default CA.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The key type of ordered certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyType {
    #[default]
    EcdsaP256,
    EcdsaP384,
}

/// One certificate resolver.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolverConfig {
    pub name: String,
    pub email: Option<String>,
    /// The CA's ACME directory URL.
    pub ca_server: String,
    /// A PEM file of roots the CA's HTTPS certificate is checked against (a private CA, Pebble)
    /// instead of the system's.
    pub ca_certificate: Option<PathBuf>,
    /// Answer HTTP-01 on this (cleartext) entrypoint.
    pub http_challenge: Option<String>,
    /// Answer TLS-ALPN-01 on the TLS entrypoints.
    pub tls_challenge: bool,
    /// Where the account and certificates are kept (a JSON file, mode 0600).
    pub storage: PathBuf,
    pub key_type: KeyType,
    /// Renew when less than this share of the certificate's lifetime is left (0 < f < 1).
    pub renew_when_left: f64,
    /// The first wait after a failed order; doubled after each failure, up to an hour.
    pub retry_base: Duration,
    /// Order a certificate at the first handshake for a name no route lists, when the scripts'
    /// `on_demand(...)` predicate allows it.
    pub on_demand: bool,
    /// At most this many on-demand orders per window.
    pub on_demand_limit: (u32, Duration),
}

impl ResolverConfig {
    pub fn new(name: &str) -> ResolverConfig {
        ResolverConfig {
            name: name.to_string(),
            email: None,
            ca_server: LETS_ENCRYPT.to_string(),
            ca_certificate: None,
            http_challenge: None,
            tls_challenge: false,
            storage: PathBuf::from(format!("acme-{name}.json")),
            key_type: KeyType::EcdsaP256,
            renew_when_left: 1.0 / 3.0,
            retry_base: Duration::from_secs(60),
            on_demand: false,
            on_demand_limit: (10, Duration::from_secs(60)),
        }
    }

    /// Sets one option from its key and text.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let v = value.trim();
        match key {
            "email" => self.email = Some(v.to_string()).filter(|e| !e.is_empty()),
            "ca-server" | "caserver" => {
                if !v.starts_with("https://") && !v.starts_with("http://") {
                    return Err(format!(
                        "ca-server {v:?} is not a URL (https://…/directory)"
                    ));
                }
                self.ca_server = v.to_string();
            }
            "ca-certificate" => self.ca_certificate = Some(PathBuf::from(v)),
            "http-challenge" | "httpchallenge.entrypoint" => {
                self.http_challenge = Some(v.to_string())
            }
            "tls-challenge" | "tlschallenge" => self.tls_challenge = flag("tls-challenge", v)?,
            "on-demand" => self.on_demand = flag("on-demand", v)?,
            "on-demand-limit" => {
                let bad = || format!("on-demand-limit takes COUNT/DURATION, e.g. 10/1m, got {v:?}");
                let (n, per) = v.split_once('/').ok_or_else(bad)?;
                let n: u32 = n.trim().parse().map_err(|_| bad())?;
                let per = crate::duration::parse(per.trim(), crate::duration::Syntax::Standard)
                    .map_err(|e| format!("on-demand-limit: {e}"))?;
                if n == 0 || per.is_zero() {
                    return Err(bad());
                }
                self.on_demand_limit = (n, per);
            }
            "storage" => self.storage = PathBuf::from(v),
            "key-type" | "keytype" => {
                self.key_type = match v.to_ascii_uppercase().as_str() {
                    "EC256" | "P256" => KeyType::EcdsaP256,
                    "EC384" | "P384" => KeyType::EcdsaP384,
                    "RSA2048" | "RSA4096" | "RSA8192" => {
                        return Err(format!(
                            "key-type {v}: RSA keys are not generated here; use EC256 or EC384"
                        ))
                    }
                    _ => return Err(format!("unknown key-type {v:?} (EC256, EC384)")),
                }
            }
            "renew-when-left" => {
                let pct: f64 = v.trim_end_matches('%').parse().map_err(|_| {
                    format!("renew-when-left takes a percentage, e.g. 33%, got {v:?}")
                })?;
                if !(1.0..=90.0).contains(&pct) {
                    return Err(format!("renew-when-left must be 1% to 90%, got {v:?}"));
                }
                self.renew_when_left = pct / 100.0;
            }
            "retry-base" => {
                self.retry_base = crate::duration::parse(v, crate::duration::Syntax::Standard)
                    .map_err(|e| format!("retry-base: {e}"))?;
            }
            _ => {
                return Err(format!(
                    "unknown certificate resolver option {key:?} (known: email, ca-server, \
                     ca-certificate, http-challenge, tls-challenge, storage, key-type, \
                     renew-when-left, retry-base, on-demand, on-demand-limit)"
                ))
            }
        }
        Ok(())
    }

    /// Checks the resolver against the entrypoints: `(name, is TLS)`.
    pub fn check(&self, entrypoints: &[(String, bool)]) -> Result<(), String> {
        let modes: Vec<(String, bool, bool)> = entrypoints
            .iter()
            .map(|(n, tls)| (n.clone(), *tls, !*tls))
            .collect();
        self.check_modes(&modes)
    }

    /// Checks the resolver against the entrypoints: `(name, serves TLS, serves cleartext)`
    /// (both for `tls=auto`, as every entrypoint in Traefik mode).
    pub fn check_modes(&self, entrypoints: &[(String, bool, bool)]) -> Result<(), String> {
        let who = format!("certificate resolver {:?}", self.name);
        if self.http_challenge.is_none() && !self.tls_challenge {
            return Err(format!(
                "{who} has no challenge: set http-challenge=ENTRYPOINT or tls-challenge=true"
            ));
        }
        if let Some(ep) = &self.http_challenge {
            match entrypoints.iter().find(|(n, _, _)| n == ep) {
                None => return Err(format!("{who}: http-challenge names no entrypoint {ep:?}")),
                Some((_, _, false)) => {
                    return Err(format!(
                        "{who}: http-challenge entrypoint {ep:?} terminates TLS; HTTP-01 is answered on a cleartext one (port 80)"
                    ))
                }
                Some(_) => {}
            }
        }
        if self.tls_challenge && !entrypoints.iter().any(|(_, tls, _)| *tls) {
            return Err(format!(
                "{who}: tls-challenge needs a TLS entrypoint (port 443)"
            ));
        }
        if !entrypoints.iter().any(|(_, tls, _)| *tls) {
            return Err(format!(
                "{who}: no entrypoint terminates TLS, so its certificates would serve nothing"
            ));
        }
        Ok(())
    }
}

/// A true/false option.
fn flag(key: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Ok(true),
        "false" | "off" | "no" | "0" => Ok(false),
        _ => Err(format!("{key} takes true or false, got {v:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_checks() {
        let mut r = ResolverConfig::new("le");
        for (k, v) in [
            ("email", "ops@example.com"),
            ("ca-server", "https://127.0.0.1:14000/dir"),
            ("http-challenge", "web"),
            ("key-type", "EC384"),
            ("renew-when-left", "50%"),
            ("on-demand", "true"),
            ("on-demand-limit", "3/10m"),
        ] {
            r.set(k, v).unwrap();
        }
        assert_eq!(r.key_type, KeyType::EcdsaP384);
        assert!((r.renew_when_left - 0.5).abs() < 1e-9);
        assert_eq!(
            (r.on_demand, r.on_demand_limit),
            (true, (3, Duration::from_secs(600)))
        );
        let eps = vec![("web".to_string(), false), ("websecure".to_string(), true)];
        r.check(&eps).unwrap();
        let bad: &[(&str, &str, &str)] = &[
            ("key-type", "RSA2048", "RSA keys"),
            ("ca-server", "ftp://x", "not a URL"),
            ("renew-when-left", "95%", "1% to 90%"),
            ("on-demand", "maybe", "true or false"),
            ("on-demand-limit", "10", "COUNT/DURATION"),
            ("on-demand-limit", "0/1m", "COUNT/DURATION"),
            ("dnschallenge", "x", "unknown certificate resolver option"),
        ];
        for (k, v, want) in bad {
            let e = ResolverConfig::new("le").set(k, v).unwrap_err();
            assert!(e.contains(want), "{k}={v}: {e}");
        }
        let mut none = ResolverConfig::new("x");
        assert!(none.check(&eps).unwrap_err().contains("no challenge"));
        none.set("http-challenge", "websecure").unwrap();
        assert!(none.check(&eps).unwrap_err().contains("terminates TLS"));
        none.set("http-challenge", "nope").unwrap();
        assert!(none.check(&eps).unwrap_err().contains("no entrypoint"));
        let mut tls = ResolverConfig::new("t");
        tls.set("tls-challenge", "true").unwrap();
        assert!(tls
            .check(&[("web".to_string(), false)])
            .unwrap_err()
            .contains("needs a TLS entrypoint"));
    }
}
