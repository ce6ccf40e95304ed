//! The certificates being served and the choice among them by SNI.
//!
//! Owns `CertStore` (an immutable index: exact names, one-label wildcards, the default
//! certificate), `Certificates` (the live store behind an `ArcSwap`, swapped whole on reload)
//! and `SniResolver` (rustls' per-handshake choice). Invariants: a handshake reads one store
//! snapshot, so a swap never fails or mixes a handshake in progress; exact names win over
//! wildcards, and among certificates for the same name the one valid longest wins; a wildcard
//! covers exactly one label (`*.a.com` serves `x.a.com`, not `a.com` nor `y.x.a.com`); with
//! strict SNI a name no certificate lists (or no name) fails the handshake; a handshake offering
//! `acme-tls/1` gets only a TLS-ALPN-01 challenge certificate, never a served one.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certs::Cert;

/// An index of certificates by the names they serve.
#[derive(Debug)]
pub struct CertStore {
    exact: HashMap<String, usize>,
    /// `a.com` for a certificate naming `*.a.com`.
    wildcard: HashMap<String, usize>,
    certs: Vec<Cert>,
    default: Cert,
}

impl CertStore {
    /// Indexes `certs`; `default` serves handshakes no certificate names.
    pub fn new(certs: Vec<Cert>, default: Cert) -> CertStore {
        let mut exact: HashMap<String, usize> = HashMap::new();
        let mut wildcard: HashMap<String, usize> = HashMap::new();
        for (i, c) in certs.iter().enumerate() {
            for name in &c.names {
                let (map, key) = match name.strip_prefix("*.") {
                    Some(parent) => (&mut wildcard, parent.to_string()),
                    None => (&mut exact, name.clone()),
                };
                let slot = map.entry(key).or_insert(i);
                if certs
                    .get(*slot)
                    .is_some_and(|held| held.not_after < c.not_after)
                {
                    *slot = i;
                }
            }
        }
        CertStore {
            exact,
            wildcard,
            certs,
            default,
        }
    }

    /// The certificate for `name` (lowercase, no trailing dot), if one lists it.
    pub fn find(&self, name: &str) -> Option<&Cert> {
        if let Some(&i) = self.exact.get(name) {
            return self.certs.get(i);
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).and_then(|&i| self.certs.get(i))
    }

    /// Every certificate indexed, in the order given.
    pub fn certs(&self) -> &[Cert] {
        &self.certs
    }

    /// The certificate served when none names the handshake's SNI.
    pub fn default_cert(&self) -> &Cert {
        &self.default
    }
}

/// Named TLS options a handshake is set up with, chosen by its SNI name.
#[derive(Clone)]
pub struct ChosenOptions {
    pub name: Arc<str>,
    pub config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for ChosenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChosenOptions({})", self.name)
    }
}

/// Which named TLS options serve which names (Traefik's router `tls.options`): the exact and
/// one-label wildcard hosts of the routes that name options, else the `default` options when
/// declared, else (nothing found) the entrypoint's own options.
#[derive(Debug, Default)]
pub struct OptionsIndex {
    exact: HashMap<String, ChosenOptions>,
    /// `a.com` for routes on `*.a.com`.
    wildcard: HashMap<String, ChosenOptions>,
    default: Option<ChosenOptions>,
}

impl OptionsIndex {
    pub fn new(default: Option<ChosenOptions>) -> OptionsIndex {
        OptionsIndex {
            default,
            ..OptionsIndex::default()
        }
    }

    /// Serves `host` (lowercase; `*.a.com` for a one-label wildcard) with `options`.
    pub fn insert(&mut self, host: &str, options: ChosenOptions) {
        match host.strip_prefix("*.") {
            Some(parent) => self.wildcard.insert(parent.to_string(), options),
            None => self.exact.insert(host.to_string(), options),
        };
    }

    /// Whether nothing is named (every handshake takes its entrypoint's options).
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.default.is_none()
    }

    /// The options for `name` (lowercase, no trailing dot; `None`: no SNI).
    pub fn find(&self, name: Option<&str>) -> Option<&ChosenOptions> {
        let found = name.and_then(|n| {
            self.exact.get(n).or_else(|| {
                n.split_once('.')
                    .and_then(|(_, parent)| self.wildcard.get(parent))
            })
        });
        found.or(self.default.as_ref())
    }
}

/// The live certificates, shared by every TLS entrypoint and swapped whole, and the ACME
/// challenge answers being served.
#[derive(Debug)]
pub struct Certificates {
    store: ArcSwap<CertStore>,
    pub challenges: Challenges,
    /// Where HTTP-01 answers other replicas published are found (the shared store).
    remote: std::sync::OnceLock<Arc<dyn RemoteChallenges>>,
    /// Who orders certificates at the handshake for names no certificate lists (ACME on-demand).
    on_demand: std::sync::OnceLock<Arc<dyn OnDemand>>,
    /// The named TLS options of the live build, by name served.
    options: ArcSwap<OptionsIndex>,
}

/// Certificates obtained at the first handshake for a name (ACME on-demand).
pub trait OnDemand: Send + Sync + std::fmt::Debug {
    /// Gets a certificate for `name` (lowercase, no trailing dot) if the policy allows one now;
    /// returns when it serves or cannot be had (refused, rate-limited, failed, too slow).
    fn obtain<'a>(
        &'a self,
        name: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;
}

/// HTTP-01 answers published by other router replicas.
pub trait RemoteChallenges: Send + Sync + std::fmt::Debug {
    /// The key authorization for `token`, if a replica published one.
    fn http<'a>(
        &'a self,
        token: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send + 'a>>;
}

/// ACME challenge answers: HTTP-01 key authorizations by token (served at
/// `/.well-known/acme-challenge/TOKEN` before any route) and TLS-ALPN-01 certificates by name
/// (served to handshakes offering only `acme-tls/1`).
#[derive(Debug, Default)]
pub struct Challenges {
    pub http: dashmap::DashMap<String, String>,
    pub alpn: dashmap::DashMap<String, Arc<CertifiedKey>>,
    /// TLS-ALPN-01 certificates made from answers other replicas published in the shared
    /// store (refreshed by `acme::run_alpn_sharing`), with the digest each was made from.
    pub alpn_remote: dashmap::DashMap<String, (Vec<u8>, Arc<CertifiedKey>)>,
}

/// The ALPN protocol of TLS-ALPN-01 validation handshakes (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

impl Certificates {
    pub fn new(store: CertStore) -> Arc<Certificates> {
        Arc::new(Certificates {
            store: ArcSwap::from_pointee(store),
            challenges: Challenges::default(),
            remote: std::sync::OnceLock::new(),
            on_demand: std::sync::OnceLock::new(),
            options: ArcSwap::from_pointee(OptionsIndex::default()),
        })
    }

    /// Replaces the store; handshakes that already chose keep their choice.
    pub fn swap(&self, store: CertStore) {
        self.store.store(Arc::new(store));
    }

    /// The store now.
    pub fn load(&self) -> Arc<CertStore> {
        self.store.load_full()
    }

    /// Looks up HTTP-01 answers other replicas published, from now on.
    pub fn set_remote(&self, remote: Arc<dyn RemoteChallenges>) {
        let _ = self.remote.set(remote);
    }

    /// Replaces the named TLS options (with each good build).
    pub fn set_options(&self, index: OptionsIndex) {
        self.options.store(Arc::new(index));
    }

    /// The named options index now.
    pub fn options(&self) -> Arc<OptionsIndex> {
        self.options.load_full()
    }

    /// The named options a handshake for `sni` is set up with (`None`: its entrypoint's).
    pub fn options_for(&self, sni: Option<&str>) -> Option<ChosenOptions> {
        let index = self.options.load();
        if index.is_empty() {
            return None;
        }
        let name = sni.map(|n| n.trim_end_matches('.').to_ascii_lowercase());
        index.find(name.as_deref()).cloned()
    }

    /// Orders certificates at the handshake from now on.
    pub fn set_on_demand(&self, on_demand: Arc<dyn OnDemand>) {
        let _ = self.on_demand.set(on_demand);
    }

    /// Before a handshake for `sni` chooses: when no certificate lists the name and on-demand
    /// ordering is on, waits for the order (bounded by the orderer).
    pub async fn on_demand(&self, sni: &str) {
        let Some(od) = self.on_demand.get() else {
            return;
        };
        let name = sni.trim_end_matches('.').to_ascii_lowercase();
        if self.store.load().find(&name).is_none() {
            od.obtain(&name).await;
        }
    }

    /// The key authorization of an HTTP-01 challenge being answered, by token: this
    /// replica's, else one another replica published.
    pub async fn http_challenge(&self, token: &str) -> Option<String> {
        if let Some(v) = self.challenges.http.get(token) {
            return Some(v.value().clone());
        }
        match self.remote.get() {
            Some(r) => r.http(token).await,
            None => None,
        }
    }
}

/// Chooses a certificate by SNI for one entrypoint.
#[derive(Debug)]
pub struct SniResolver {
    pub certs: Arc<Certificates>,
    /// Refuse handshakes whose name no certificate lists (Traefik's `sniStrict`).
    pub strict: bool,
    /// The entrypoint's own default certificate (`tls.default-certificate`), else the store's.
    pub default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    /// The certificate for an SNI name (`None`: no name sent).
    pub fn choose(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let store = self.certs.store.load();
        let found = sni.and_then(|n| {
            let n = n.trim_end_matches('.');
            if n.bytes().any(|b| b.is_ascii_uppercase()) {
                store.find(&n.to_ascii_lowercase()).map(|c| c.key.clone())
            } else {
                store.find(n).map(|c| c.key.clone())
            }
        });
        match found {
            Some(k) => Some(k),
            None if self.strict => None,
            None => Some(
                self.default
                    .clone()
                    .unwrap_or_else(|| store.default.key.clone()),
            ),
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A TLS-ALPN-01 validation offers only `acme-tls/1` and gets the challenge certificate.
        let acme = hello
            .alpn()
            .is_some_and(|mut p| p.any(|p| p == ACME_TLS_ALPN));
        if acme {
            let name = hello.server_name()?.to_ascii_lowercase();
            let challenges = &self.certs.challenges;
            return challenges
                .alpn
                .get(&name)
                .map(|c| c.value().clone())
                .or_else(|| {
                    challenges
                        .alpn_remote
                        .get(&name)
                        .map(|c| c.value().1.clone())
                });
        }
        let chosen = self.choose(hello.server_name());
        if chosen.is_none() {
            tracing::debug!(sni = ?hello.server_name(), "TLS handshake refused: strict SNI and no certificate for the name");
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::certs::{from_der, now};
    use rustls_pki_types::PrivateKeyDer;

    fn cert(names: &[&str], source: &str) -> Cert {
        let ck = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
        from_der(vec![ck.cert.der().clone()], key, source, now()).unwrap()
    }

    #[test]
    fn sni_selection() {
        let certs = Certificates::new(CertStore::new(
            vec![
                cert(&["a.com", "www.a.com"], "a"),
                cert(&["*.a.com"], "wild"),
                cert(&["b.com"], "b"),
            ],
            cert(&["default.invalid"], "default"),
        ));
        let lax = SniResolver {
            certs: certs.clone(),
            strict: false,
            default: None,
        };
        let strict = SniResolver {
            certs: certs.clone(),
            strict: true,
            default: None,
        };
        let own = cert(&["web.invalid"], "entrypoint default");
        let with_own = SniResolver {
            certs: certs.clone(),
            strict: false,
            default: Some(own.key.clone()),
        };
        let store = certs.load();
        let source_of = |k: Option<Arc<CertifiedKey>>| -> String {
            let Some(k) = k else { return "refused".into() };
            let all = store.certs().iter().chain([store.default_cert(), &own]);
            all.into_iter()
                .find(|c| Arc::ptr_eq(&c.key, &k))
                .map(|c| c.source.clone())
                .unwrap_or_default()
        };
        let cases = [
            ("exact", Some("a.com"), "a", "a"),
            ("exact beats wildcard", Some("www.a.com"), "a", "a"),
            ("wildcard, one label", Some("x.a.com"), "wild", "wild"),
            (
                "wildcard, two labels",
                Some("y.x.a.com"),
                "default",
                "refused",
            ),
            ("upper case", Some("B.COM"), "b", "b"),
            ("trailing dot", Some("b.com."), "b", "b"),
            ("unknown", Some("c.com"), "default", "refused"),
            ("no SNI", None, "default", "refused"),
        ];
        for (case, sni, want_lax, want_strict) in cases {
            assert_eq!(source_of(lax.choose(sni)), want_lax, "{case}, lax");
            assert_eq!(source_of(strict.choose(sni)), want_strict, "{case}, strict");
            // An entrypoint's own default replaces the router's, and only it.
            let want_own = if want_lax == "default" {
                "entrypoint default"
            } else {
                want_lax
            };
            assert_eq!(source_of(with_own.choose(sni)), want_own, "{case}, own");
        }
    }

    #[test]
    fn the_longest_valid_certificate_wins_a_name_and_swaps_are_whole() {
        let older = cert(&["a.com"], "first");
        let mut newer = cert(&["a.com"], "second");
        newer.not_after = older.not_after + 10;
        let certs = Certificates::new(CertStore::new(
            vec![older, newer],
            cert(&["d.invalid"], "default"),
        ));
        assert_eq!(certs.load().find("a.com").unwrap().source, "second");
        let before = certs.load();
        certs.swap(CertStore::new(
            vec![cert(&["z.com"], "z")],
            cert(&["d"], "d2"),
        ));
        assert!(
            before.find("a.com").is_some(),
            "a snapshot taken keeps its certificates"
        );
        assert!(certs.load().find("a.com").is_none());
        assert_eq!(certs.load().find("z.com").unwrap().source, "z");
    }
}
