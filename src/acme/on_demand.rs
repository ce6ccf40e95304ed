//! On-demand certificates: a handshake for a name no certificate lists makes a resolver with
//! `on-demand=true` order one, when a script's `on_demand(...)` predicate allows the name, and
//! waits for it (at most `WAIT`), so the first client already gets a valid certificate.
//!
//! Owns `OnDemandIssuer` (the `tls::OnDemand` the listener calls before a handshake chooses),
//! the rules of the live build (`OnDemandRule`, swapped with each good build) and the per-resolver
//! order rate limit. Invariants: no rule allowing a name means no order (a resolver with
//! `on-demand=true` and no predicate orders nothing); a failing predicate refuses; a name is
//! ordered once however many handshakes wait for it, and only distinct new names count against
//! `on-demand-limit`; a handshake never waits longer than `WAIT`; names that are not plain DNS
//! names (IP addresses, one label, wildcards, bad characters) are never ordered.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tracing::{debug, info, warn};

use super::Resolver;
use crate::tls::Certificates;

/// The longest a handshake waits for its on-demand certificate.
pub const WAIT: Duration = Duration::from_secs(30);

/// A predicate over a handshake's name.
pub type NamePolicy = Arc<dyn Fn(&str) -> Result<bool, String> + Send + Sync>;

/// One `on_demand([resolver,] predicate)` of the live build.
#[derive(Clone)]
pub struct OnDemandRule {
    /// The resolver it names, else the first resolver with `on-demand=true`.
    pub resolver: Option<String>,
    pub allow: NamePolicy,
    /// Where the script declared it (`file:line:col`), for the log.
    pub at: String,
}

/// Orders certificates at the handshake through the resolvers that allow it.
pub struct OnDemandIssuer {
    resolvers: Vec<Arc<Resolver>>,
    certs: Arc<Certificates>,
    rules: ArcSwap<Vec<OnDemandRule>>,
    /// Per resolver: when its recent on-demand orders started.
    recent: Mutex<BTreeMap<String, VecDeque<Instant>>>,
}

impl std::fmt::Debug for OnDemandIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnDemandIssuer")
            .field("rules", &self.rules.load().len())
            .finish_non_exhaustive()
    }
}

impl OnDemandIssuer {
    /// An issuer for the resolvers among `all` that have `on-demand=true` (`None`: none has).
    pub fn new(all: &[Arc<Resolver>], certs: Arc<Certificates>) -> Option<OnDemandIssuer> {
        let resolvers: Vec<Arc<Resolver>> =
            all.iter().filter(|r| r.cfg.on_demand).cloned().collect();
        if resolvers.is_empty() {
            return None;
        }
        Some(OnDemandIssuer {
            resolvers,
            certs,
            rules: ArcSwap::from_pointee(Vec::new()),
            recent: Mutex::new(BTreeMap::new()),
        })
    }

    /// The rules of a new live build; a rule naming a resolver that does not order on demand is
    /// reported (and never used).
    pub fn set_rules(&self, rules: Vec<OnDemandRule>) {
        for r in &rules {
            if let Some(name) = &r.resolver {
                if !self.resolvers.iter().any(|x| &x.cfg.name == name) {
                    warn!(at = %r.at, resolver = %name, "on_demand names a resolver without on-demand=true: it orders nothing on demand");
                }
            }
        }
        if rules.is_empty() {
            info!("on-demand certificates are on, but no script declares on_demand(...): no name is ordered at a handshake");
        }
        self.rules.store(Arc::new(rules));
    }

    /// The resolver that may order `name`, if a rule allows it.
    fn allowed(&self, name: &str) -> Option<Arc<Resolver>> {
        let rules = self.rules.load();
        for rule in rules.iter() {
            let resolver = match &rule.resolver {
                Some(n) => self.resolvers.iter().find(|r| &r.cfg.name == n),
                None => self.resolvers.first(),
            };
            let Some(resolver) = resolver else { continue };
            match (rule.allow)(name) {
                Ok(true) => return Some(resolver.clone()),
                Ok(false) => {}
                Err(e) => {
                    warn!(at = %rule.at, name, error = %e, "on-demand predicate failed: refused")
                }
            }
        }
        None
    }

    /// Counts a new order against the resolver's limit; false when the limit is reached.
    fn admit(&self, resolver: &Resolver, name: &str) -> bool {
        let (max, per) = resolver.cfg.on_demand_limit;
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let times = recent.entry(resolver.cfg.name.clone()).or_default();
        let now = Instant::now();
        while times.front().is_some_and(|t| now.duration_since(*t) >= per) {
            times.pop_front();
        }
        if times.len() >= max as usize {
            warn!(resolver = %resolver.cfg.name, name, limit = max, per = ?per, "on-demand order refused: the resolver's on-demand-limit is reached");
            return false;
        }
        times.push_back(now);
        true
    }

    async fn obtain_now(&self, name: &str) {
        if !orderable(name) {
            debug!(name, "on-demand: not a DNS name that can be ordered");
            return;
        }
        let Some(resolver) = self.allowed(name) else {
            debug!(name, "on-demand: no on_demand predicate allows this name");
            return;
        };
        let started = Instant::now();
        if !resolver.is_demanded(name) {
            if !self.admit(&resolver, name) {
                return;
            }
            info!(resolver = %resolver.cfg.name, name, "ordering a certificate on demand");
            resolver.demand(name);
        }
        // The resolver's task orders it; the served store has it once the control loop has
        // taken the new certificate in.
        while started.elapsed() < WAIT {
            if self.certs.load().find(name).is_some() || resolver.failed(name) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        warn!(resolver = %resolver.cfg.name, name, "on-demand certificate not ready within 30 s: this handshake gets the default certificate");
    }
}

impl crate::tls::store::OnDemand for OnDemandIssuer {
    fn obtain<'a>(
        &'a self,
        name: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(self.obtain_now(name))
    }
}

/// A name a CA can issue for by HTTP-01 or TLS-ALPN-01: two labels or more of letters, digits
/// and inner hyphens, not an IP address, at most 253 bytes.
pub fn orderable(name: &str) -> bool {
    if name.len() > 253 || name.parse::<std::net::IpAddr>().is_ok() {
        return false;
    }
    let labels: Vec<&str> = name.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
        && !labels
            .last()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn orderable_names() {
        for (name, ok) in [
            ("a.example.com", true),
            ("xn--bcher-kva.example", true),
            ("a-b.c", true),
            ("localhost", false),
            ("127.0.0.1", false),
            ("::1", false),
            ("*.example.com", false),
            ("a..b", false),
            ("-a.b", false),
            ("a_b.c", false),
            ("A.com", false),
            ("1.2.3.999", false),
        ] {
            assert_eq!(super::orderable(name), ok, "{name}");
        }
        assert!(!super::orderable(&format!("{}.com", "a".repeat(64))));
    }
}
