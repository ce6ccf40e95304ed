//! ACME certificate resolvers: certificates ordered from a CA (Let's Encrypt, or any RFC 8555
//! server) for the names TLS routes ask a resolver for, answered by HTTP-01 or TLS-ALPN-01,
//! kept in a storage file and renewed before they expire.
//!
//! Owns `Resolver` (one per `--acme.NAME`: its account, issued certificates, per-name status and
//! back-off; a `tls::CertSource`, so the control loop's certificate store serves what it holds),
//! `wanted` (the names each resolver must hold, read from a route table: the exact hosts of a
//! `.tls(#{ resolver })` route's rule plus its `domains`), and the file storage (`storage.rs`).
//! The challenge answers live in `tls::Challenges`, read by the proxy (HTTP-01, before any
//! route) and the SNI resolver (TLS-ALPN-01).
//!
//! Invariants: a name is ordered by one task at a time; a failed order never removes a
//! certificate that still serves, and is retried with a doubling delay (at least an hour after a
//! rate-limit answer); challenge answers are removed when their order ends; a wildcard name is
//! reported as needing DNS-01 and never ordered; the storage file is written whole and mode 0600.

pub mod config;
pub mod import;
pub mod on_demand;
pub mod shared;
mod storage;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use tokio::sync::watch;
use tracing::{debug, info, warn};

pub use config::{KeyType, ResolverConfig};

use crate::routing::{HostPattern, RouteTable};
use crate::tls::{Cert, Certificates};

/// The names each resolver must hold: resolver name → DNS names.
pub type Wanted = BTreeMap<String, BTreeSet<String>>;

/// What the routes of `table` ask each resolver for.
pub fn wanted<M>(table: &RouteTable<M>) -> Wanted {
    let mut out = Wanted::new();
    for r in table.routes() {
        let Some(resolver) = r.tls.as_ref().and_then(|t| t.resolver.as_ref()) else {
            continue;
        };
        let names = out.entry(resolver.clone()).or_default();
        for h in r.rule.required_hosts().unwrap_or_default() {
            match h {
                HostPattern::Exact(h) => names.insert(h),
                HostPattern::Wildcard(suffix) => names.insert(format!("*{suffix}")),
            };
        }
        if let Some(t) = &r.tls {
            for d in &t.domains {
                names.extend(
                    std::iter::once(&d.main)
                        .chain(&d.sans)
                        .map(|n| n.trim().trim_end_matches('.').to_ascii_lowercase())
                        .filter(|n| !n.is_empty()),
                );
            }
        }
    }
    // TCP routes that terminate TLS with a resolver: their HostSNI names and domains.
    for r in table.l4().tcp_routes() {
        let Some(crate::routing::l4::TcpTls::Terminate {
            resolver: Some(resolver),
            domains,
            ..
        }) = &r.tls
        else {
            continue;
        };
        let names = out.entry(resolver.clone()).or_default();
        for h in r.rule.required_hosts().unwrap_or_default() {
            match h {
                HostPattern::Exact(h) => names.insert(h),
                HostPattern::Wildcard(suffix) => names.insert(format!("*{suffix}")),
            };
        }
        for d in domains {
            names.extend(
                std::iter::once(&d.main)
                    .chain(&d.sans)
                    .map(|n| n.trim().trim_end_matches('.').to_ascii_lowercase())
                    .filter(|n| !n.is_empty()),
            );
        }
    }
    out
}

/// How a name stands with its resolver.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NameStatus {
    pub name: String,
    /// RFC 3339, when a certificate is held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Seconds until the next order attempt, when one is waiting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_in_seconds: Option<u64>,
    pub orders: u64,
    pub failures: u64,
    /// Ordered at a handshake, not for a route.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub on_demand: bool,
}

/// The certificate held for `name`: stored under it, or listing it among its names.
fn held<'a>(
    issued: &'a BTreeMap<String, storage::Issued>,
    name: &str,
) -> Option<&'a storage::Issued> {
    issued.get(name).or_else(|| {
        issued
            .values()
            .find(|i| i.cert.names.iter().any(|n| n == name))
    })
}

#[derive(Default)]
struct State {
    issued: BTreeMap<String, storage::Issued>,
    /// Per name: consecutive failures, the last error, not before when to try again.
    backoff: BTreeMap<String, (u32, String, Instant)>,
    orders: BTreeMap<String, (u64, u64)>,
    /// Names ordered at a handshake (on-demand), kept and renewed like wanted ones.
    on_demand: BTreeSet<String>,
}

/// One certificate resolver.
pub struct Resolver {
    pub cfg: ResolverConfig,
    certs: Arc<Certificates>,
    state: Mutex<State>,
    account: tokio::sync::Mutex<Option<Account>>,
    /// The store shared with other replicas (`--store`), instead of the storage file.
    shared: Option<Arc<shared::SharedStore>>,
    /// Wakes the ordering task for a name demanded at a handshake.
    wake: tokio::sync::Notify,
    /// The CA no longer knows the stored account (it was reset or deactivated): register anew.
    account_gone: std::sync::atomic::AtomicBool,
}

/// How often a resolver on a shared store reads what other replicas obtained.
const SHARED_REFRESH: Duration = Duration::from_secs(2);

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("name", &self.cfg.name)
            .finish_non_exhaustive()
    }
}

impl crate::tls::CertSource for Resolver {
    fn certificates(&self) -> Vec<Cert> {
        self.lock()
            .issued
            .values()
            .map(|i| i.cert.clone())
            .collect()
    }
}

impl Resolver {
    /// A resolver serving what its storage file already holds (an unreadable file is an error:
    /// it would otherwise be overwritten).
    pub fn new(
        cfg: ResolverConfig,
        certs: Arc<Certificates>,
        shared: Option<Arc<shared::SharedStore>>,
    ) -> Result<Resolver, String> {
        let stored = match shared {
            Some(_) => storage::Stored::default(),
            None => storage::load(&cfg.storage)?,
        };
        let mut state = State::default();
        for i in stored.issued {
            if i.on_demand {
                state.on_demand.insert(i.name.clone());
            }
            state.issued.insert(i.name.clone(), i);
        }
        Ok(Resolver {
            cfg,
            certs,
            state: Mutex::new(state),
            account: tokio::sync::Mutex::new(None),
            shared,
            wake: tokio::sync::Notify::new(),
            account_gone: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Whether `name` was already demanded at a handshake.
    pub fn is_demanded(&self, name: &str) -> bool {
        self.lock().on_demand.contains(name)
    }

    /// Orders `name` (and keeps it renewed) although no route lists it.
    pub fn demand(&self, name: &str) {
        self.lock().on_demand.insert(name.to_string());
        self.wake.notify_one();
    }

    /// Whether `name`'s last order failed (and waits for its retry).
    pub fn failed(&self, name: &str) -> bool {
        self.lock().backoff.contains_key(name)
    }

    /// Reads what the shared store holds (other replicas' certificates); whether a certificate
    /// is new or newer here. Nothing held is dropped when the store cannot be read.
    async fn refresh(&self) -> bool {
        let Some(shared) = &self.shared else {
            return false;
        };
        let Ok(stored) = shared.load(&self.cfg.name).await else {
            return false;
        };
        let mut st = self.lock();
        let mut changed = false;
        for i in stored.issued {
            let newer = st
                .issued
                .get(&i.name)
                .is_none_or(|old| old.cert.not_after < i.cert.not_after);
            if newer {
                if i.on_demand {
                    st.on_demand.insert(i.name.clone());
                }
                st.backoff.remove(&i.name);
                st.issued.insert(i.name.clone(), i);
                changed = true;
            }
        }
        changed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Each wanted name's standing, for `/api/certificates`.
    pub fn status(&self, wanted: &BTreeSet<String>) -> Vec<NameStatus> {
        let st = self.lock();
        let now = Instant::now();
        let names: BTreeSet<&String> = wanted
            .iter()
            .chain(st.issued.keys())
            .chain(&st.on_demand)
            .collect();
        names
            .into_iter()
            .map(|n| {
                let (orders, failures) = st.orders.get(n).copied().unwrap_or_default();
                NameStatus {
                    name: n.clone(),
                    not_after: held(&st.issued, n).map(|i| rfc3339(i.cert.not_after)),
                    last_error: st.backoff.get(n).map(|(_, e, _)| e.clone()),
                    next_attempt_in_seconds: st
                        .backoff
                        .get(n)
                        .map(|(_, _, at)| at.saturating_duration_since(now).as_secs()),
                    orders,
                    failures,
                    on_demand: st.on_demand.contains(n) && !wanted.contains(n),
                }
            })
            .collect()
    }

    /// When `name` should be ordered: now (`Some(ZERO)`), later, or not (`None`: its
    /// certificate is fresh, or it cannot be ordered).
    fn due_in(&self, name: &str) -> Option<Duration> {
        if name.starts_with("*.") {
            return None;
        }
        let st = self.lock();
        let renew_at = held(&st.issued, name).map(|i| {
            let life = (i.cert.not_after - i.cert.not_before).max(1) as f64;
            let at = i.cert.not_after - (life * self.cfg.renew_when_left) as i64;
            Duration::from_secs(u64::try_from(at - crate::tls::certs::now()).unwrap_or(0))
        });
        let retry = st
            .backoff
            .get(name)
            .map(|(_, _, at)| at.saturating_duration_since(Instant::now()));
        match (renew_at, retry) {
            (None, None) => Some(Duration::ZERO),
            (None, Some(r)) => Some(r),
            (Some(renew), r) => Some(renew.max(r.unwrap_or_default())),
        }
    }

    /// Keeps the wanted names' certificates ordered and renewed until `shutdown`; `issued` is
    /// called after each new certificate (to rebuild the served store).
    pub async fn run(
        self: Arc<Self>,
        mut wanted: watch::Receiver<Wanted>,
        issued: impl Fn() + Send + 'static,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut warned: BTreeSet<String> = BTreeSet::new();
        loop {
            if self.refresh().await {
                issued();
            }
            let mut names = wanted
                .borrow_and_update()
                .get(&self.cfg.name)
                .cloned()
                .unwrap_or_default();
            names.extend(self.lock().on_demand.iter().cloned());
            let mut next = Duration::from_secs(3600);
            for name in &names {
                if name.starts_with("*.") {
                    if warned.insert(name.clone()) {
                        warn!(resolver = %self.cfg.name, name, "a wildcard certificate needs the DNS-01 challenge, which is not offered: not ordered");
                    }
                    continue;
                }
                match self.due_in(name) {
                    Some(d) if d.is_zero() => {
                        if self.order_and_record(name).await {
                            issued();
                        }
                        next = Duration::ZERO;
                    }
                    Some(d) => next = next.min(d),
                    None => {}
                }
            }
            if next.is_zero() {
                continue;
            }
            if self.shared.is_some() {
                next = next.min(SHARED_REFRESH);
            }
            tokio::select! {
                r = wanted.changed() => if r.is_err() { return },
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(next.max(Duration::from_millis(200))) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// Orders `name`, records the outcome (back-off on failure); whether a certificate came.
    async fn order_and_record(&self, name: &str) -> bool {
        let started = Instant::now();
        // On a shared store, one replica orders a name at a time; the others read the result.
        let lock = match &self.shared {
            None => None,
            Some(s) => match s.lock(&self.cfg.name, name).await {
                Ok(Some(token)) => Some((s.clone(), token)),
                Ok(None) => {
                    tracing::debug!(resolver = %self.cfg.name, name, "another replica is ordering this name");
                    self.wait_for_other(name);
                    return false;
                }
                Err(e) => {
                    self.lock()
                        .backoff
                        .insert(name.to_string(), (0, e, Instant::now() + SHARED_REFRESH));
                    return false;
                }
            },
        };
        let renewer = lock.clone().map(|(s, token)| {
            let (resolver, name) = (self.cfg.name.clone(), name.to_string());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(shared::LOCK_TTL / 3).await;
                    if !s.unlock(&resolver, &name, &token, true).await {
                        return;
                    }
                }
            })
        });
        info!(resolver = %self.cfg.name, name, "ordering a certificate");
        let on_demand = self.is_demanded(name);
        let result = self
            .order(name)
            .await
            .map(|i| storage::Issued { on_demand, ..i });
        if let Some(r) = renewer {
            r.abort();
        }
        if let (Some((s, token)), Ok(issued)) = (&lock, &result) {
            if let Err(e) = s.save_cert(&self.cfg.name, issued).await {
                warn!(resolver = %self.cfg.name, name, error = %e, "the new certificate is not in the shared store yet");
            }
            s.unlock(&self.cfg.name, name, token, false).await;
        } else if let Some((s, token)) = &lock {
            s.unlock(&self.cfg.name, name, token, false).await;
        }
        let mut st = self.lock();
        let counts = st.orders.entry(name.to_string()).or_default();
        counts.0 += 1;
        match result {
            Ok(issued) => {
                info!(resolver = %self.cfg.name, name, ms = started.elapsed().as_millis() as u64, not_after = %rfc3339(issued.cert.not_after), "certificate issued");
                st.backoff.remove(name);
                st.issued.insert(name.to_string(), issued);
                let all: Vec<storage::Issued> = st.issued.values().cloned().collect();
                drop(st);
                if let Err(e) = self.save(all) {
                    warn!(resolver = %self.cfg.name, error = %e, "cannot write the certificate storage");
                }
                true
            }
            Err(e) => {
                counts.1 += 1;
                let failures = st.backoff.get(name).map_or(0, |(n, _, _)| *n) + 1;
                let mut wait = self
                    .cfg
                    .retry_base
                    .saturating_mul(1 << (failures - 1).min(10))
                    .min(Duration::from_secs(3600));
                if e.contains("rateLimited") {
                    wait = wait.max(Duration::from_secs(3600));
                }
                warn!(resolver = %self.cfg.name, name, error = %e, retry_in = ?wait, "certificate order failed");
                st.backoff
                    .insert(name.to_string(), (failures, e, Instant::now() + wait));
                false
            }
        }
    }

    /// Another replica holds `name`'s order lock: look again after the next refresh.
    fn wait_for_other(&self, name: &str) {
        let mut st = self.lock();
        let failures = st.backoff.get(name).map_or(0, |(n, _, _)| *n);
        st.backoff.insert(
            name.to_string(),
            (
                failures,
                "another replica is ordering it".to_string(),
                Instant::now() + SHARED_REFRESH,
            ),
        );
    }

    fn save(&self, issued: Vec<storage::Issued>) -> Result<(), String> {
        if self.shared.is_some() {
            // The shared store got the certificate when it was issued.
            return Ok(());
        }
        let mut stored = storage::load(&self.cfg.storage)?;
        stored.issued = issued;
        storage::save(&self.cfg.storage, &stored)
    }

    /// The account: from the storage file, else registered and stored.
    async fn account(&self) -> Result<Account, String> {
        let mut held = self.account.lock().await;
        if let Some(a) = held.as_ref() {
            return Ok(a.clone());
        }
        let builder = || match &self.cfg.ca_certificate {
            Some(root) => Account::builder_with_root(root)
                .map_err(|e| format!("ca-certificate {}: {e}", root.display())),
            None => Account::builder().map_err(|e| e.to_string()),
        };
        let stored = match &self.shared {
            Some(s) => s.load(&self.cfg.name).await?,
            None => storage::load(&self.cfg.storage)?,
        };
        let gone = self
            .account_gone
            .swap(false, std::sync::atomic::Ordering::Relaxed);
        let account = match stored.account {
            Some(creds)
                if !gone && stored.ca_server.as_deref() == Some(self.cfg.ca_server.as_str()) =>
            {
                builder()?
                    .from_credentials(creds)
                    .await
                    .map_err(|e| format!("restoring the ACME account: {e}"))?
            }
            _ => {
                let contact = self.cfg.email.as_ref().map(|e| format!("mailto:{e}"));
                let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
                let (account, creds) = builder()?
                    .create(
                        &NewAccount {
                            contact: &contacts,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.cfg.ca_server.clone(),
                        None,
                    )
                    .await
                    .map_err(|e| {
                        format!("registering an ACME account at {}: {e}", self.cfg.ca_server)
                    })?;
                match &self.shared {
                    Some(s) => {
                        s.save_account(&self.cfg.name, &creds, &self.cfg.ca_server)
                            .await?
                    }
                    None => {
                        let mut stored = storage::load(&self.cfg.storage)?;
                        stored.account = Some(creds);
                        stored.ca_server = Some(self.cfg.ca_server.clone());
                        storage::save(&self.cfg.storage, &stored)?;
                    }
                }
                info!(resolver = %self.cfg.name, id = account.id(), "ACME account registered");
                account
            }
        };
        *held = Some(account.clone());
        Ok(account)
    }

    /// One order for `name`, its challenge answered while it runs.
    async fn order(&self, name: &str) -> Result<storage::Issued, String> {
        let account = self.account().await?;
        let ids = [Identifier::Dns(name.to_string())];
        let mut order = match account.new_order(&NewOrder::new(&ids)).await {
            Ok(o) => o,
            Err(e) => {
                let e = format!("new order: {e}");
                if e.contains("accountDoesNotExist") {
                    // The CA lost or closed the account: the next attempt registers a new one.
                    warn!(resolver = %self.cfg.name, "the CA does not know the stored ACME account: registering a new one");
                    *self.account.lock().await = None;
                    self.account_gone
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                return Err(e);
            }
        };
        let mut answered = Answered::new(&self.certs, self.shared.clone());
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| format!("authorization: {e}"))?;
            if authz.status == AuthorizationStatus::Valid {
                continue;
            }
            if authz.status != AuthorizationStatus::Pending {
                return Err(format!("authorization is {:?}", authz.status));
            }
            let tls = self.cfg.tls_challenge
                && authz
                    .challenges
                    .iter()
                    .any(|c| c.r#type == ChallengeType::TlsAlpn01);
            let kind = if tls {
                ChallengeType::TlsAlpn01
            } else if self.cfg.http_challenge.is_some() {
                ChallengeType::Http01
            } else {
                return Err("the CA offers no challenge this resolver answers".into());
            };
            let mut challenge = authz
                .challenge(kind.clone())
                .ok_or_else(|| format!("the CA offers no {kind:?} challenge"))?;
            let key_auth = challenge.key_authorization();
            match kind {
                ChallengeType::TlsAlpn01 => {
                    let digest = key_auth.digest();
                    answered.alpn(name, alpn_certificate(name, digest.as_ref())?);
                    if let Some(s) = &self.shared {
                        // Every replica answers: they read the store every `ALPN_POLL`, so
                        // the CA is told to validate only once they all had the time to.
                        s.put_alpn(name, digest.as_ref()).await?;
                        tokio::time::sleep(ALPN_POLL + ALPN_POLL / 2).await;
                    }
                }
                _ => {
                    answered.http(&challenge.token, key_auth.as_str());
                    if let Some(s) = &self.shared {
                        s.put_challenge(&challenge.token, key_auth.as_str()).await?;
                    }
                }
            }
            challenge
                .set_ready()
                .await
                .map_err(|e| format!("challenge: {e}"))?;
        }
        let retries = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .timeout(Duration::from_secs(90));
        let status = order
            .poll_ready(&retries)
            .await
            .map_err(|e| format!("waiting for validation: {e}"))?;
        if status != OrderStatus::Ready {
            let why = order
                .state()
                .error
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_else(|| format!("order is {status:?}"));
            return Err(format!("validation failed: {why}"));
        }
        let (key_pem, csr) = csr_for(name, self.cfg.key_type)?;
        order
            .finalize_csr(&csr)
            .await
            .map_err(|e| format!("finalize: {e}"))?;
        let chain_pem = order
            .poll_certificate(&retries)
            .await
            .map_err(|e| format!("certificate: {e}"))?;
        drop(answered);
        storage::Issued::from_pem(name, &chain_pem, &key_pem, &self.cfg.name)
    }
}

/// Challenge answers put up for one order, taken down when it ends (success or not).
struct Answered<'a> {
    certs: &'a Certificates,
    shared: Option<Arc<shared::SharedStore>>,
    tokens: Vec<String>,
    names: Vec<String>,
}

impl<'a> Answered<'a> {
    fn new(certs: &'a Certificates, shared: Option<Arc<shared::SharedStore>>) -> Self {
        Answered {
            certs,
            shared,
            tokens: Vec::new(),
            names: Vec::new(),
        }
    }

    fn http(&mut self, token: &str, key_auth: &str) {
        self.certs
            .challenges
            .http
            .insert(token.to_string(), key_auth.to_string());
        self.tokens.push(token.to_string());
    }

    fn alpn(&mut self, name: &str, key: Arc<rustls::sign::CertifiedKey>) {
        self.certs.challenges.alpn.insert(name.to_string(), key);
        self.names.push(name.to_string());
    }
}

impl Drop for Answered<'_> {
    fn drop(&mut self) {
        for t in &self.tokens {
            self.certs.challenges.http.remove(t);
        }
        if let Some(s) = self.shared.clone() {
            let tokens = std::mem::take(&mut self.tokens);
            tokio::spawn(async move {
                for t in tokens {
                    s.drop_challenge(&t).await;
                }
            });
        }
        for n in &self.names {
            self.certs.challenges.alpn.remove(n);
        }
        if let Some(s) = self.shared.clone() {
            let names = std::mem::take(&mut self.names);
            tokio::spawn(async move {
                for n in names {
                    s.drop_alpn(&n).await;
                }
            });
        }
    }
}

/// How often a replica with a shared store reads the TLS-ALPN-01 answers others published.
pub const ALPN_POLL: Duration = Duration::from_secs(1);

/// Keeps `certs`' remote TLS-ALPN-01 certificates equal to the answers in `shared`: one read of
/// the store every `ALPN_POLL` (a hash, empty but while an order runs somewhere), a
/// certificate made once per published answer.
pub async fn run_alpn_sharing(certs: Arc<Certificates>, shared: Arc<shared::SharedStore>) {
    let mut tick = tokio::time::interval(ALPN_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(answers) = shared.alpn_answers().await else {
            continue;
        };
        let remote = &certs.challenges.alpn_remote;
        remote.retain(|name, (digest, _)| answers.get(name) == Some(digest));
        for (name, digest) in answers {
            if remote.contains_key(&name) {
                continue;
            }
            match alpn_certificate(&name, &digest) {
                Ok(key) => {
                    debug!(%name, "TLS-ALPN-01 answer from the shared store");
                    remote.insert(name, (digest, key));
                }
                Err(e) => warn!(%name, error = %e, "a TLS-ALPN-01 answer in the store is unusable"),
            }
        }
    }
}

/// The TLS-ALPN-01 certificate for `name`: self-signed, with the key authorization's digest in
/// the critical acmeIdentifier extension (RFC 8737).
fn alpn_certificate(name: &str, digest: &[u8]) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    if digest.len() != 32 {
        return Err("the key authorization digest is not SHA-256".into());
    }
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])
        .map_err(|e| format!("challenge certificate: {e}"))?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let key = rcgen::KeyPair::generate().map_err(|e| format!("challenge key: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("challenge certificate: {e}"))?;
    let key_der = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| format!("challenge key: {e}"))?;
    let signer = crate::tls::provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("challenge key: {e}"))?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

/// A new private key (PEM) and a CSR (DER) for `name`.
fn csr_for(name: &str, key_type: KeyType) -> Result<(String, Vec<u8>), String> {
    let alg = match key_type {
        KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
    };
    let key = rcgen::KeyPair::generate_for(alg).map_err(|e| format!("certificate key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])
        .map_err(|e| format!("CSR for {name}: {e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| format!("CSR for {name}: {e}"))?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}

/// Seconds since the epoch as RFC 3339.
fn rfc3339(secs: i64) -> String {
    u64::try_from(secs)
        .map(|s| {
            humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(s))
                .to_string()
        })
        .unwrap_or_default()
}
