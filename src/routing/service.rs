//! Services as compiled into a route table: a pool of servers behind a balancer, or a composite
//! (failover between two services, weighted split over several, mirroring: a main service plus
//! copies for mirrors, chosen by Traefik's counting rule), and how one request picks its
//! server — sticky cookie first, then the balancer (or a script `pick` hook), skipping servers
//! that are unhealthy or ejected. Also how the router speaks to a server: its `Scheme` (`http`,
//! `https`, `h2c`, from the server URL) and, for `https://` servers, the pool's `Transport` (the
//! rustls client settings made at build time: roots or no verification, the name verified,
//! a client certificate).
//!
//! Invariants: a pick only ever returns a server that is available at that instant and has a
//! weight above 0; a sticky cookie value is derived from the server address alone (plus an
//! optional secret), so it never shows the address and is the same on every router instance;
//! an unknown, forged or stale cookie value is ignored (normal pick, fresh cookie), never an
//! error. Server state (`ServerState`) is shared with the health checker and survives a reload
//! when the service keeps the same server set. A pool with `https://` servers always has a
//! `Transport`; its `id` changes whenever its settings or the files it was made from change.
//! Must never: touch sockets, read files or import `rhai`.
//!
//! No lock per pick: pools pick with their lock-free `Balancer`; a weighted composite splits
//! traffic with the same smooth weighted round robin (`balance::algo::SmoothWrr`, the one
//! implementation: an atomic counter over a precomputed cycle, shared by the workers).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::Authority;
use http::{HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

use super::matcher::RequestView;
use super::table::Location;
use crate::balance::algo::{Algorithm, Balancer, HashKey, SmoothWrr};
use crate::balance::state::{PassivePolicy, ServerState};

/// One upstream server of a service.
#[derive(Debug, Clone)]
pub struct Server {
    /// `host:port` the upstream client connects to.
    pub authority: Authority,
    pub weight: u32,
    /// The value a sticky cookie holds for this server.
    pub sticky_id: String,
    /// How the router speaks to it (the scheme of its URL).
    pub scheme: Scheme,
}

impl Server {
    /// `host:port` for a cleartext HTTP/1.1 server, else `https://host:port` or
    /// `h2c://host:port` (as scripts write them).
    pub fn url(&self) -> String {
        match self.scheme {
            Scheme::Http => self.authority.to_string(),
            other => format!("{}://{}", other.as_str(), self.authority),
        }
    }
}

/// How the router speaks to a server, from the scheme of its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scheme {
    /// `host:port` or `http://host:port`: HTTP/1.1 in cleartext.
    #[default]
    Http,
    /// `https://host:port`: HTTP/1.1 over TLS (ALPN `http/1.1`), checked as the service's
    /// `Transport` says.
    Https,
    /// `h2c://host:port`: HTTP/2 with prior knowledge (gRPC servers), one multiplexed connection.
    H2c,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::H2c => "h2c",
        }
    }
}

/// How a server's certificate is checked.
#[derive(Debug, Clone)]
pub enum Verify {
    /// Against these roots (the system's, or the service's CA file), for the name verified.
    Roots(Arc<rustls::RootCertStore>),
    /// Not at all (`insecure_skip_verify`): any certificate is accepted; the handshake's
    /// signatures are still checked.
    Skip,
}

/// How the router speaks TLS to a pool's `https://` servers, made at build time from the
/// service's `.transport(...)` (or the defaults: system roots, each server's host as the name).
#[derive(Debug)]
pub struct Transport {
    /// The rustls client settings: the verifier, the client certificate, ALPN `http/1.1`.
    pub tls: Arc<rustls::ClientConfig>,
    /// The name sent as SNI and verified (`server_name`); `None`: each server's host.
    pub server_name: Option<rustls::pki_types::ServerName<'static>>,
    pub insecure_skip_verify: bool,
    /// Identifies the settings and the contents of the files they were made from: pooled
    /// connections and health checks are keyed by it, so a changed CA or certificate never
    /// reuses a connection made with the old one.
    pub id: Arc<str>,
}

impl Transport {
    /// Client settings that check servers with `verify` and present `client` (mTLS) when
    /// given. `id` must identify every input (see `Transport::id`).
    pub fn new(
        verify: Verify,
        client: Option<Arc<rustls::sign::CertifiedKey>>,
        server_name: Option<rustls::pki_types::ServerName<'static>>,
        id: String,
    ) -> Result<Transport, String> {
        let provider = crate::tls::provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS client settings: {e}"))?;
        let insecure_skip_verify = matches!(verify, Verify::Skip);
        let builder = match verify {
            Verify::Roots(roots) => builder.with_root_certificates(roots),
            Verify::Skip => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider))),
        };
        let mut config = match client {
            Some(key) => builder.with_client_cert_resolver(Arc::new(ClientCert(key))),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Transport {
            tls: Arc::new(config),
            server_name,
            insecure_skip_verify,
            id: id.into(),
        })
    }
}

/// `insecure_skip_verify`: accepts any certificate for any name (the handshake's signatures
/// are still verified, so the peer holds the key of the certificate it sent).
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The client certificate a transport presents to every server that asks.
#[derive(Debug)]
struct ClientCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The opaque sticky-cookie value for a server. Without a secret it is Traefik's: the first 16
/// hex digits of SHA-256 over the server's URL (`http://10.0.0.2:80`), so a browser holding a
/// Traefik cookie stays on its server after the move and a mixed fleet agrees. With a secret,
/// 16 hex digits of SHA-256 over the secret and the address (the value cannot be computed from
/// the address alone). Deterministic, so every router instance agrees.
pub fn sticky_id(secret: &str, scheme: Scheme, authority: &str) -> String {
    sticky_hash(
        b"switchyard-sticky",
        secret,
        &format!("{}://{authority}", scheme.as_str()),
        authority,
    )
}

/// 16 hex digits of SHA-256: over `plain` without a secret (Traefik's value), else over `tag`,
/// the secret and `salted`.
fn sticky_hash(tag: &[u8], secret: &str, plain: &str, salted: &str) -> String {
    let digest = if secret.is_empty() {
        Sha256::digest(plain.as_bytes())
    } else {
        let mut h = Sha256::new();
        h.update(tag);
        h.update(b"\0");
        h.update(secret.as_bytes());
        h.update(b"\0");
        h.update(salted.as_bytes());
        h.finalize()
    };
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// FNV-1 (64-bit) of `input` in hex, as Traefik wrote older sticky cookie values.
fn fnv64_hex(input: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in input.bytes() {
        h = h.wrapping_mul(0x0100_0000_01b3);
        h ^= u64::from(b);
    }
    format!("{h:x}")
}

/// Whether `value` is a cookie value older Traefik versions gave `server`: its raw URL, the
/// FNV-64 hash of it, or that hash hashed again (what Traefik still honours).
fn legacy_traefik_value(server: &Server, value: &str) -> bool {
    let url = format!("{}://{}", server.scheme.as_str(), server.authority);
    if value == url {
        return true;
    }
    let once = fnv64_hex(&url);
    value == once || value == fnv64_hex(&once)
}

/// The sticky cookie name Traefik gives a service: `name` with every character not allowed in
/// a cookie name (RFC 2616 token) replaced by `_`, or, when `name` is empty, `_` and the first
/// five hex digits of SHA-1 over `_TRAEFIK_BACKEND_<service>` — so a browser holding a Traefik
/// cookie keeps its name across the move.
pub fn traefik_cookie_name(name: &str, service: &str) -> String {
    if name.is_empty() {
        let digest = sha1::Sha1::digest(format!("_TRAEFIK_BACKEND_{service}").as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        return format!("_{}", hex.get(..5).unwrap_or(&hex));
    }
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "!#$%&'*+-.^`|~".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

/// `sticky_cookie(name, #{...})`: keeps a client on the server it first got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickyCookie {
    pub name: String,
    pub secure: bool,
    pub http_only: bool,
    pub same_site: Option<SameSite>,
    /// Seconds; `None` makes a session cookie.
    pub max_age: Option<i64>,
    pub path: String,
    pub domain: Option<String>,
    /// Mixed into the cookie value; the same on every router instance that must agree.
    pub secret: String,
}

impl StickyCookie {
    /// The `Set-Cookie` value pinning a client to the server with `id`.
    pub fn set_cookie(&self, id: &str) -> Option<HeaderValue> {
        let mut b = cookie::Cookie::build((self.name.clone(), id.to_string()))
            .path(self.path.clone())
            .secure(self.secure)
            .http_only(self.http_only);
        if let Some(s) = self.same_site {
            b = b.same_site(match s {
                SameSite::Strict => cookie::SameSite::Strict,
                SameSite::Lax => cookie::SameSite::Lax,
                SameSite::None => cookie::SameSite::None,
            });
        }
        if let Some(age) = self.max_age {
            b = b.max_age(cookie::time::Duration::seconds(age));
        }
        if let Some(d) = &self.domain {
            b = b.domain(d.clone());
        }
        HeaderValue::from_str(&b.build().to_string()).ok()
    }
}

/// Active health check settings of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Inclusive range of statuses that count as healthy.
    pub status: (u16, u16),
    /// `Host` header sent with checks (default: the server address).
    pub host: Option<String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// A script function choosing the server: `pick(fn)`. Gets the addresses of the available
/// servers and the request; returns an index into that list.
pub trait ServerPicker: Send + Sync + fmt::Debug {
    fn pick(&self, servers: &[&str], req: &RequestView<'_>) -> Result<Option<usize>, String>;
    fn describe(&self) -> String;
}

/// A service's own servers and how it picks among them.
#[derive(Debug)]
pub struct Pool {
    pub servers: Vec<Server>,
    /// `states[i]` is the live state of `servers[i]`.
    pub states: Vec<Arc<ServerState>>,
    pub balancer: Balancer,
    pub picker: Option<Arc<dyn ServerPicker>>,
    pub sticky: Option<StickyCookie>,
    pub health: Option<HealthCheck>,
    pub passive: Option<PassivePolicy>,
    /// TLS to the `https://` servers (set whenever the pool has one).
    pub transport: Option<Arc<Transport>>,
}

#[derive(Debug)]
pub enum ServiceKind {
    Servers(Box<Pool>),
    /// `primary` while it has an available server, else `fallback`.
    Failover {
        primary: Arc<Service>,
        fallback: Arc<Service>,
        /// A client holding the cookie stays on the member that served it while that member
        /// can serve: sessions opened on the fallback are not moved back when the primary
        /// recovers. Made by `ServiceKind::failover`.
        sticky: Option<WeightedSticky>,
    },
    /// Traffic split over services by weight (smooth weighted round robin over the ones that
    /// have an available server). Made by `ServiceKind::weighted`.
    Weighted {
        children: Vec<(Arc<Service>, u32)>,
        wrr: SmoothWrr,
        /// Traefik's `weighted.sticky`: a client holding the cookie stays on its member
        /// service (a canary stays a canary for that client).
        sticky: Option<WeightedSticky>,
    },
    /// Traefik's `mirroring`: every request goes to `main`; a share of them is also copied to
    /// each mirror, whose answers are thrown away.
    Mirror(Box<Mirroring>),
}

/// Requests bigger than this are not copied to mirrors unless a mirroring service sets its own
/// `max_body_size` (Traefik's default is unlimited; here a copy is held in memory per mirror).
pub const MIRROR_BODY_LIMIT: u64 = 16 << 20;

/// A mirroring service: its main service, its mirrors and how much of each request is copied.
#[derive(Debug)]
pub struct Mirroring {
    pub main: Arc<Service>,
    /// Each mirror and the percentage (0..=100) of requests it receives.
    pub mirrors: Vec<(Arc<Service>, u32)>,
    /// Copy the request body (Traefik's `mirrorBody`, default true); false sends copies without
    /// one.
    pub body: bool,
    /// Requests with a larger body go to `main` only.
    pub max_body: u64,
    /// Requests seen, then copies sent per mirror: Traefik's rule, a mirror gets a copy while
    /// `sent * 100 < seen * percent`, so 10% is exactly every tenth request.
    counts: std::sync::Mutex<(u64, Vec<u64>)>,
}

impl Mirroring {
    pub fn new(
        main: Arc<Service>,
        mirrors: Vec<(Arc<Service>, u32)>,
        body: bool,
        max_body: u64,
    ) -> Self {
        let counts = std::sync::Mutex::new((0, vec![0; mirrors.len()]));
        Mirroring {
            main,
            mirrors,
            body,
            max_body,
            counts,
        }
    }

    /// The mirrors that get a copy of this request (counting it).
    fn active(&self) -> Vec<Arc<Service>> {
        let Ok(mut counts) = self.counts.lock() else {
            return Vec::new();
        };
        let (seen, sent) = &mut *counts;
        *seen += 1;
        let mut out = Vec::new();
        for ((svc, percent), n) in self.mirrors.iter().zip(sent.iter_mut()) {
            if *n * 100 < *seen * u64::from(*percent) {
                *n += 1;
                out.push(svc.clone());
            }
        }
        out
    }
}

/// One copy of a request that a mirroring service asked for.
#[derive(Debug, Clone)]
pub struct MirrorCopy {
    pub service: Arc<Service>,
    /// Whether the copy carries the body.
    pub body: bool,
    /// A body bigger than this sends no copy.
    pub max_body: u64,
}

/// A weighted service's sticky cookie, with each member's cookie value.
#[derive(Debug)]
pub struct WeightedSticky {
    pub cookie: StickyCookie,
    /// `member_sticky_id` of each child, in `children` order.
    pub ids: Vec<String>,
}

fn max_some(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The cookie value naming a member service of a weighted one: Traefik's without a secret
/// (the first 16 hex digits of SHA-256 over the service name), salted with one.
pub fn member_sticky_id(secret: &str, service: &str) -> String {
    sticky_hash(b"switchyard-sticky-member", secret, service, service)
}

impl ServiceKind {
    /// A failover composite, sticky by `cookie` if given (the cookie names the member).
    pub fn failover(
        primary: Arc<Service>,
        fallback: Arc<Service>,
        cookie: Option<StickyCookie>,
    ) -> ServiceKind {
        let sticky = cookie.map(|cookie| WeightedSticky {
            ids: [&primary, &fallback]
                .iter()
                .map(|c| member_sticky_id(&cookie.secret, &c.name))
                .collect(),
            cookie,
        });
        ServiceKind::Failover {
            primary,
            fallback,
            sticky,
        }
    }

    /// A weighted composite over `children` (service, weight), sticky by `cookie` if given.
    pub fn weighted(
        children: Vec<(Arc<Service>, u32)>,
        cookie: Option<StickyCookie>,
    ) -> ServiceKind {
        let weights: Vec<u32> = children.iter().map(|(_, w)| *w).collect();
        let sticky = cookie.map(|cookie| WeightedSticky {
            ids: children
                .iter()
                .map(|(c, _)| member_sticky_id(&cookie.secret, &c.name))
                .collect(),
            cookie,
        });
        ServiceKind::Weighted {
            wrr: SmoothWrr::new(&weights),
            children,
            sticky,
        }
    }
}

/// A named group of servers behind one balancer, or a composite of services.
#[derive(Debug)]
pub struct Service {
    pub name: String,
    pub kind: ServiceKind,
    /// Forward the client's Host header (default) or let the upstream client use the server's.
    pub pass_host_header: bool,
    pub declared_at: Location,
}

/// The outcome of a pick: the leaf service and server, and a cookie to set when stickiness
/// (re)assigned the client.
#[derive(Debug, Clone, Copy)]
pub struct Picked<'a> {
    pub service: &'a Service,
    pub pool: &'a Pool,
    pub index: usize,
}

impl<'a> Picked<'a> {
    pub fn server(&self) -> Option<&'a Server> {
        self.pool.servers.get(self.index)
    }
    pub fn state(&self) -> Option<&'a Arc<ServerState>> {
        self.pool.states.get(self.index)
    }
}

/// A pick plus what the response must carry.
#[derive(Debug, Clone)]
pub struct Pick<'a> {
    pub at: Picked<'a>,
    /// Sticky cookies to set: the pool's, and a weighted service's for its member.
    pub set_cookies: Vec<HeaderValue>,
    /// Copies of the request for mirrors, when mirroring services were on the way.
    pub mirrors: Vec<MirrorCopy>,
}

impl Service {
    /// A plain service over `servers` (states all fresh, round robin).
    pub fn with_servers(name: &str, servers: Vec<Server>) -> Service {
        let ids: Vec<(&str, u32)> = servers
            .iter()
            .map(|s| (s.authority.as_str(), s.weight))
            .collect();
        let balancer = Balancer::new(Algorithm::RoundRobin, &ids);
        Service {
            name: name.to_string(),
            kind: ServiceKind::Servers(Box::new(Pool {
                states: servers.iter().map(|_| ServerState::new()).collect(),
                servers,
                balancer,
                picker: None,
                sticky: None,
                health: None,
                passive: None,
                transport: None,
            })),
            pass_host_header: true,
            declared_at: Location::default(),
        }
    }

    pub fn pool(&self) -> Option<&Pool> {
        match &self.kind {
            ServiceKind::Servers(p) => Some(p),
            _ => None,
        }
    }

    /// Whether some server of this service can take a request now.
    pub fn available(&self, now: Instant) -> bool {
        match &self.kind {
            ServiceKind::Servers(p) => p
                .servers
                .iter()
                .zip(&p.states)
                .any(|(s, st)| s.weight > 0 && st.available(now)),
            ServiceKind::Failover {
                primary, fallback, ..
            } => primary.available(now) || fallback.available(now),
            ServiceKind::Weighted { children, .. } => {
                children.iter().any(|(c, w)| *w > 0 && c.available(now))
            }
            ServiceKind::Mirror(m) => m.main.available(now),
        }
    }

    /// The body size the mirroring services under this one may copy (the largest of theirs
    /// that copy bodies), or `None` when none does: what a request's body is read up to before
    /// it is sent.
    pub fn mirror_body_limit(&self) -> Option<u64> {
        match &self.kind {
            ServiceKind::Servers(_) => None,
            ServiceKind::Failover {
                primary, fallback, ..
            } => max_some(primary.mirror_body_limit(), fallback.mirror_body_limit()),
            ServiceKind::Weighted { children, .. } => children
                .iter()
                .map(|(c, _)| c.mirror_body_limit())
                .fold(None, max_some),
            ServiceKind::Mirror(m) => {
                max_some(m.body.then_some(m.max_body), m.main.mirror_body_limit())
            }
        }
    }

    /// Whether a mirroring service is somewhere under this one.
    pub fn mirrors_any(&self) -> bool {
        match &self.kind {
            ServiceKind::Servers(_) => false,
            ServiceKind::Failover {
                primary, fallback, ..
            } => primary.mirrors_any() || fallback.mirrors_any(),
            ServiceKind::Weighted { children, .. } => children.iter().any(|(c, _)| c.mirrors_any()),
            ServiceKind::Mirror(_) => true,
        }
    }

    /// Every server address reachable through this service (composites: their children's).
    pub fn server_addresses(&self) -> Vec<String> {
        match &self.kind {
            ServiceKind::Servers(p) => p.servers.iter().map(Server::url).collect(),
            ServiceKind::Failover {
                primary, fallback, ..
            } => {
                let mut v = primary.server_addresses();
                v.extend(fallback.server_addresses());
                v
            }
            ServiceKind::Weighted { children, .. } => children
                .iter()
                .flat_map(|(c, _)| c.server_addresses())
                .collect(),
            ServiceKind::Mirror(m) => m.main.server_addresses(),
        }
    }

    /// A short description of how this service picks (`round_robin`, `failover`, ...).
    pub fn balancer_kind(&self) -> String {
        match &self.kind {
            ServiceKind::Servers(p) => match &p.picker {
                Some(picker) => format!("pick({})", picker.describe()),
                None => p.balancer.kind().to_string(),
            },
            ServiceKind::Failover { .. } => "failover".to_string(),
            ServiceKind::Weighted { .. } => "weighted".to_string(),
            ServiceKind::Mirror(_) => "mirroring".to_string(),
        }
    }

    /// Picks a server for one request. `Ok(None)` when no server is available; `Err` when a
    /// script `pick` hook failed (message for the log).
    pub fn pick<'a>(
        &'a self,
        req: &RequestView<'_>,
        now: Instant,
    ) -> Result<Option<Pick<'a>>, String> {
        match &self.kind {
            ServiceKind::Servers(pool) => self.pick_in_pool(pool, req, now),
            ServiceKind::Failover {
                primary,
                fallback,
                sticky,
            } => {
                let members = [primary, fallback];
                // A client holding a member's cookie stays there while it can serve.
                let held = sticky.as_ref().and_then(|st| {
                    let value = cookie_value(req, &st.cookie.name)?;
                    st.ids.iter().position(|id| *id == value)
                });
                let order: [usize; 2] = match held {
                    Some(1) => [1, 0],
                    _ => [0, 1],
                };
                for i in order {
                    let Some(member) = members.get(i) else {
                        continue;
                    };
                    if !member.available(now) {
                        continue;
                    }
                    let Some(mut p) = member.pick(req, now)? else {
                        continue;
                    };
                    if let Some(st) = sticky {
                        if held != Some(i) {
                            if let Some(c) = st.ids.get(i).and_then(|id| st.cookie.set_cookie(id)) {
                                p.set_cookies.push(c);
                            }
                        }
                    }
                    return Ok(Some(p));
                }
                Ok(None)
            }
            ServiceKind::Weighted {
                children,
                wrr,
                sticky,
            } => {
                let usable = |i: usize| {
                    children
                        .get(i)
                        .is_some_and(|(c, w)| *w > 0 && c.available(now))
                };
                // A client holding a member's cookie stays on that member while it can serve.
                let held = sticky.as_ref().and_then(|st| {
                    let value = cookie_value(req, &st.cookie.name)?;
                    st.ids.iter().position(|id| *id == value)
                });
                let (i, fresh) = match held.filter(|&i| usable(i)) {
                    Some(i) => (i, false),
                    None => match wrr.pick(&usable) {
                        Some(i) => (i, true),
                        None => return Ok(None),
                    },
                };
                let Some((child, _)) = children.get(i) else {
                    return Ok(None);
                };
                let mut pick = child.pick(req, now)?;
                if let (Some(p), Some(st), true) = (pick.as_mut(), sticky, fresh) {
                    if let Some(c) = st.ids.get(i).and_then(|id| st.cookie.set_cookie(id)) {
                        p.set_cookies.push(c);
                    }
                }
                Ok(pick)
            }
            ServiceKind::Mirror(m) => {
                let mut pick = m.main.pick(req, now)?;
                if let Some(p) = pick.as_mut() {
                    p.mirrors
                        .extend(m.active().into_iter().map(|service| MirrorCopy {
                            service,
                            body: m.body,
                            max_body: m.max_body,
                        }));
                }
                Ok(pick)
            }
        }
    }

    fn pick_in_pool<'a>(
        &'a self,
        pool: &'a Pool,
        req: &RequestView<'_>,
        now: Instant,
    ) -> Result<Option<Pick<'a>>, String> {
        let usable = |i: usize| {
            pool.servers.get(i).is_some_and(|s| s.weight > 0)
                && pool.states.get(i).is_some_and(|st| st.available(now))
        };
        if let Some(sticky) = &pool.sticky {
            if let Some(value) = cookie_value(req, &sticky.name) {
                let found = pool
                    .servers
                    .iter()
                    .position(|s| s.sticky_id == value)
                    .or_else(|| {
                        // A cookie a Traefik instance set (no secret: the values are Traefik's).
                        sticky
                            .secret
                            .is_empty()
                            .then(|| {
                                pool.servers
                                    .iter()
                                    .position(|s| legacy_traefik_value(s, &value))
                            })
                            .flatten()
                    });
                if let Some(i) = found {
                    if usable(i) {
                        return Ok(Some(Pick {
                            at: Picked {
                                service: self,
                                pool,
                                index: i,
                            },
                            set_cookies: Vec::new(),
                            mirrors: Vec::new(),
                        }));
                    }
                }
            }
        }
        let index = match &pool.picker {
            Some(picker) => {
                let avail: Vec<usize> = (0..pool.servers.len()).filter(|i| usable(*i)).collect();
                let names: Vec<&str> = avail
                    .iter()
                    .filter_map(|i| pool.servers.get(*i).map(|s| s.authority.as_str()))
                    .collect();
                if names.is_empty() {
                    None
                } else {
                    picker
                        .pick(&names, req)?
                        .and_then(|k| avail.get(k).copied())
                }
            }
            None => {
                let key = hash_key(pool.balancer.algorithm(), req);
                pool.balancer.pick(&pool.states, key.as_deref(), now)
            }
        };
        let Some(index) = index.filter(|i| usable(*i)) else {
            return Ok(None);
        };
        let set_cookie = pool.sticky.as_ref().and_then(|s| {
            pool.servers
                .get(index)
                .and_then(|srv| s.set_cookie(&srv.sticky_id))
        });
        Ok(Some(Pick {
            at: Picked {
                service: self,
                pool,
                index,
            },
            set_cookies: set_cookie.into_iter().collect(),
            mirrors: Vec::new(),
        }))
    }
}

/// The value of cookie `name` in the request's Cookie headers.
pub fn cookie_value(req: &RequestView<'_>, name: &str) -> Option<String> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_string())
}

fn hash_key(algorithm: &Algorithm, req: &RequestView<'_>) -> Option<Vec<u8>> {
    let Algorithm::ConsistentHash(key) = algorithm else {
        return None;
    };
    match key {
        HashKey::Header(h) => req.headers.get(h).map(|v| v.as_bytes().to_vec()),
        HashKey::Cookie(name) => cookie_value(req, name).map(String::into_bytes),
        HashKey::ClientIp => Some(
            super::matcher::canonical_ip(req.client_ip)
                .to_string()
                .into_bytes(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(name: &str, port: u16) -> Arc<Service> {
        Arc::new(Service::with_servers(
            name,
            vec![Server {
                authority: format!("127.0.0.1:{port}").parse().unwrap(),
                weight: 1,
                sticky_id: String::new(),
                scheme: Scheme::Http,
            }],
        ))
    }

    fn weighted(children: Vec<(Arc<Service>, u32)>) -> Service {
        Service {
            name: "split".into(),
            kind: ServiceKind::weighted(children, None),
            pass_host_header: true,
            declared_at: Location::default(),
        }
    }

    fn picks(svc: &Service, n: usize) -> Vec<String> {
        let headers = http::HeaderMap::new();
        let req = RequestView {
            method: &http::Method::GET,
            host: "x.test",
            path: "/",
            query: None,
            headers: &headers,
            client_ip: "10.0.0.1".parse().unwrap(),
        };
        (0..n)
            .filter_map(|_| svc.pick(&req, Instant::now()).unwrap())
            .map(|p| p.at.service.name.clone())
            .collect()
    }

    #[test]
    fn cookie_names_as_traefik_makes_them() {
        assert_eq!(traefik_cookie_name("my cookie;x", "s"), "my_cookie_x");
        assert_eq!(traefik_cookie_name("Ok-Name.1~", "s"), "Ok-Name.1~");
        assert_eq!(traefik_cookie_name("é", "s"), "_");
        // Traefik's generated name: "_" + hex(sha1("_TRAEFIK_BACKEND_" + service))[..5].
        // (Python: "_" + hashlib.sha1(b"_TRAEFIK_BACKEND_whoami@docker").hexdigest()[:5])
        assert_eq!(traefik_cookie_name("", "whoami@docker"), "_633ff");
        assert_ne!(traefik_cookie_name("", "other@docker"), "_633ff");
    }

    #[test]
    fn weighted_composite_is_smooth_and_skips_unavailable_children() {
        let (a, b, c) = (leaf("a", 1), leaf("b", 2), leaf("c", 3));
        let svc = weighted(vec![(a.clone(), 5), (b.clone(), 1), (c, 1)]);
        assert_eq!(picks(&svc, 7), ["a", "a", "b", "a", "c", "a", "a"]);
        assert_eq!(picks(&svc, 7), ["a", "a", "b", "a", "c", "a", "a"]);
        a.pool().unwrap().states[0].set_active_healthy(false);
        assert_eq!(picks(&svc, 4), ["b", "c", "b", "c"]);
        a.pool().unwrap().states[0].set_active_healthy(true);
        b.pool().unwrap().states[0].set_active_healthy(false);
        let p = picks(&svc, 60);
        assert_eq!(p.iter().filter(|n| *n == "b").count(), 0);
        assert_eq!(p.iter().filter(|n| *n == "a").count(), 50, "{p:?}");
        for s in [&a, &b] {
            s.pool().unwrap().states[0].set_active_healthy(false);
        }
        let zero = weighted(vec![(a, 1), (b, 1), (leaf("z", 4), 0)]);
        assert!(picks(&zero, 3).is_empty());
    }

    #[test]
    fn weighted_composites_keep_separate_state() {
        let one = weighted(vec![(leaf("a", 1), 1), (leaf("b", 2), 1)]);
        let two = weighted(vec![(leaf("c", 3), 1), (leaf("d", 4), 1)]);
        assert_eq!(picks(&one, 1), ["a"]);
        assert_eq!(picks(&two, 1), ["c"]);
        assert_eq!(picks(&one, 1), ["b"]);
        assert_eq!(picks(&two, 1), ["d"]);
        // A composite made at a dropped one's address starts its own sequence.
        for i in 0..50u16 {
            let svc = weighted(vec![(leaf("x", i), 1), (leaf("y", i), 1)]);
            assert_eq!(picks(&svc, 3), ["x", "y", "x"]);
        }
    }

    #[test]
    fn sticky_ids_are_opaque_stable_and_traefiks_without_a_secret() {
        let id = |secret: &str, a: &str| sticky_id(secret, Scheme::Http, a);
        let a = id("", "127.0.0.1:9001");
        assert_eq!(a, id("", "127.0.0.1:9001"));
        assert_eq!(a.len(), 16);
        assert!(!a.contains("127"));
        assert_ne!(a, id("", "127.0.0.1:9002"));
        assert_ne!(a, id("s3cret", "127.0.0.1:9001"));
        // Traefik 3's value: sha256("http://10.0.0.2:80") in hex, first 16 digits
        // (Python: hashlib.sha256(b"http://10.0.0.2:80").hexdigest()[:16]).
        assert_eq!(id("", "10.0.0.2:80"), TRAEFIK_VALUE);
    }

    /// `hashlib.sha256(b"http://10.0.0.2:80").hexdigest()[:16]`.
    const TRAEFIK_VALUE: &str = "e0c6f0ca44f87f06";

    #[test]
    fn cookies_older_traefik_versions_set_are_honoured() {
        let server = Server {
            authority: "10.0.0.2:80".parse().unwrap(),
            weight: 1,
            sticky_id: String::new(),
            scheme: Scheme::Http,
        };
        // Go: fnv.New64() over "http://10.0.0.2:80", strconv.FormatUint(sum, 16); and again
        // (computed independently with a Python FNV-1 implementation).
        assert!(legacy_traefik_value(&server, "http://10.0.0.2:80"));
        assert!(legacy_traefik_value(&server, FNV_ONCE));
        assert!(legacy_traefik_value(&server, FNV_TWICE));
        assert!(!legacy_traefik_value(&server, "http://10.0.0.3:80"));
        assert!(!legacy_traefik_value(&server, "0123456789abcdef"));
    }

    const FNV_ONCE: &str = "4c6738eb2f66e70e";
    const FNV_TWICE: &str = "e12bce2575fc1822";

    #[test]
    fn set_cookie_carries_the_options() {
        let c = StickyCookie {
            name: "srv".into(),
            secure: true,
            http_only: true,
            same_site: Some(SameSite::Lax),
            max_age: Some(60),
            path: "/".into(),
            domain: None,
            secret: String::new(),
        };
        let v = c.set_cookie("abc").unwrap();
        let v = v.to_str().unwrap();
        assert!(v.starts_with("srv=abc"), "{v}");
        for part in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age=60"] {
            assert!(v.contains(part), "{v} lacks {part}");
        }
    }
}
