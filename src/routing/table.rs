//! The compiled route table: routes sorted by priority, a per-entrypoint host index, and the
//! services they forward to.
//!
//! Invariants: routes are sorted by (priority desc, name asc) and every index list holds route
//! positions in ascending order, so merging candidate lists yields routes in priority order; the
//! host index never hides a route that could match (see `Matcher::required_hosts`). A table is
//! immutable once built; a reload builds a new one and swaps it whole.
//!
//! Generic over `M`, the middleware a route runs: routing stores and orders it but never looks
//! inside (the router's table is `crate::table::RouteTable`, with `middleware::Middleware`).

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::Serialize;

use super::matcher::{HostPattern, Matcher, RequestView};

/// Where a script declared something: `scripts/api.rhai:12:5`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

pub use super::service::{Server, Service};

/// An answer that needs no backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler {
    Respond {
        status: u16,
        body: String,
        /// Extra response headers (name, value), validated when declared.
        headers: Vec<(String, String)>,
    },
    Redirect {
        location: String,
        permanent: bool,
    },
}

/// What a matched route does with the request.
#[derive(Debug, Clone)]
pub enum Target {
    Service(Arc<Service>),
    Handler(Handler),
}

/// A compiled route; `M` is the middleware type it runs.
#[derive(Debug)]
pub struct Route<M> {
    pub name: String,
    pub rule: Matcher,
    /// The rule in canonical Traefik v3 syntax.
    pub rule_text: String,
    pub priority: i64,
    /// Empty means every entrypoint.
    pub entrypoints: Vec<String>,
    /// As declared (chains kept), for listings.
    pub middlewares: Vec<M>,
    /// What runs: `middlewares` with chains expanded in place.
    pub steps: Vec<M>,
    pub target: Target,
    pub declared_at: Location,
    /// `.record(true|false)`: whether live recording takes this route's requests (`None`:
    /// the recorder's scope decides).
    pub record: Option<bool>,
    /// This route's metric series, resolved when the table goes live (`Metrics::attach`).
    pub metrics: MetricsSlot,
    /// `.tls(...)`: the route serves TLS requests, and only those (Traefik's router `tls`).
    pub tls: Option<RouteTls>,
    /// `.tls(false)`: the route serves cleartext requests only, even on entrypoints it names.
    pub cleartext: bool,
}

/// What a TLS route declares besides serving TLS: the TLS options and certificate resolver
/// it names and the domains a resolver should get certificates for.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RouteTls {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolver: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<TlsDomain>,
}

/// `tls.domains[n]`: a main name and its alternative names.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TlsDomain {
    pub main: String,
    pub sans: Vec<String>,
}

impl<M> Route<M> {
    /// Whether this route takes a request that came over TLS (`tls`) or not: a route with
    /// `.tls(...)` takes only TLS requests, one with `.tls(false)` only cleartext ones; one with
    /// neither takes cleartext requests, and TLS requests too when it names its entrypoints
    /// itself (declaring a TLS entrypoint is declaring TLS).
    pub fn serves(&self, tls: bool) -> bool {
        match (&self.tls, tls) {
            (Some(_), t) => t,
            (None, false) => true,
            (None, true) => !self.cleartext && !self.entrypoints.is_empty(),
        }
    }
}

/// What the metrics registry attaches to a route before its table goes live (dry-run tables
/// keep it empty). Opaque to routing: only the registry sets and reads it, with its own type.
#[derive(Default)]
pub struct MetricsSlot(OnceLock<Box<dyn Any + Send + Sync>>);

impl MetricsSlot {
    /// Fills the slot; a slot already filled keeps its value (a table is attached once).
    pub fn set<T: Any + Send + Sync>(&self, value: T) {
        let _ = self.0.set(Box::new(value));
    }

    /// The value, when one of type `T` was set.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.get().and_then(|b| b.downcast_ref::<T>())
    }
}

impl fmt::Debug for MetricsSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "MetricsSlot(attached)"
        } else {
            "MetricsSlot(empty)"
        })
    }
}

#[derive(Debug, Default)]
struct EntryIndex {
    exact: HashMap<String, Vec<u32>, ahash::RandomState>,
    /// Keyed by the wildcard's suffix including the leading dot (`.example.com`).
    wildcard: HashMap<String, Vec<u32>, ahash::RandomState>,
    /// Routes whose rule does not pin the host.
    any_host: Vec<u32>,
}

/// The routing state one request reads: immutable, swapped whole on reload.
#[derive(Debug)]
pub struct RouteTable<M> {
    routes: Vec<Arc<Route<M>>>,
    services: Vec<Arc<Service>>,
    /// One index per entrypoint; a handful at most, so a linear scan beats hashing.
    index: Vec<(String, EntryIndex)>,
    /// The TCP and UDP routes of the same build.
    l4: Arc<super::l4::L4Table>,
}

/// Why a lookup could not decide: a script predicate failed (message for the log only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupError {
    pub route: String,
    pub message: String,
}

impl<M> Default for RouteTable<M> {
    fn default() -> Self {
        RouteTable {
            routes: Vec::new(),
            services: Vec::new(),
            index: Vec::new(),
            l4: Arc::default(),
        }
    }
}

/// Where a route stands among others of the same priority: routes scripts name themselves
/// first, then Traefik's provider precedence for routes named `name@provider` (Swarm, then
/// Docker, then files), then by name.
fn provider_rank(name: &str) -> u8 {
    match name.rsplit_once('@').map(|(_, p)| p) {
        Some("swarm") => 1,
        Some("docker") => 2,
        Some("file") => 3,
        _ => 0,
    }
}

impl<M> RouteTable<M> {
    /// Builds a table for the given entrypoint names. Routes are sorted here; callers need not.
    pub fn new(
        mut routes: Vec<Route<M>>,
        services: Vec<Arc<Service>>,
        entrypoints: &[String],
    ) -> Self {
        routes.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then_with(|| provider_rank(&a.name).cmp(&provider_rank(&b.name)))
                .then_with(|| a.name.cmp(&b.name))
        });
        let routes: Vec<Arc<Route<M>>> = routes.into_iter().map(Arc::new).collect();
        let mut index: Vec<(String, EntryIndex)> = entrypoints
            .iter()
            .map(|e| (e.clone(), EntryIndex::default()))
            .collect();
        for (pos, route) in routes.iter().enumerate() {
            let pos = u32::try_from(pos).unwrap_or(u32::MAX);
            let hosts = route.rule.required_hosts();
            for (ep, idx) in index.iter_mut() {
                if !route.entrypoints.is_empty() && !route.entrypoints.iter().any(|e| e == ep) {
                    continue;
                }
                match &hosts {
                    None => idx.any_host.push(pos),
                    Some(patterns) => {
                        for p in patterns {
                            let list = match p {
                                HostPattern::Exact(h) => idx.exact.entry(h.clone()).or_default(),
                                HostPattern::Wildcard(s) => {
                                    idx.wildcard.entry(s.clone()).or_default()
                                }
                            };
                            if list.last() != Some(&pos) {
                                list.push(pos);
                            }
                        }
                    }
                }
            }
        }
        RouteTable {
            routes,
            services,
            index,
            l4: Arc::default(),
        }
    }

    /// The table with the TCP and UDP routes of the same build.
    pub fn with_l4(mut self, l4: super::l4::L4Table) -> Self {
        self.l4 = Arc::new(l4);
        self
    }

    /// The TCP and UDP routes (shared: a TCP connection keeps them while it lives).
    pub fn l4(&self) -> &Arc<super::l4::L4Table> {
        &self.l4
    }

    pub fn routes(&self) -> &[Arc<Route<M>>] {
        &self.routes
    }

    pub fn services(&self) -> &[Arc<Service>] {
        &self.services
    }

    pub fn has_entrypoint(&self, name: &str) -> bool {
        self.index.iter().any(|(n, _)| n == name)
    }

    /// Finds the highest-priority route on `entrypoint` that matches a cleartext request.
    pub fn lookup(
        &self,
        entrypoint: &str,
        req: &RequestView<'_>,
    ) -> Result<Option<&Arc<Route<M>>>, LookupError> {
        self.lookup_tls(entrypoint, false, req)
    }

    /// Finds the highest-priority route on `entrypoint` that matches the request and serves
    /// its transport (`tls`: it came over TLS; see `Route::serves`).
    pub fn lookup_tls(
        &self,
        entrypoint: &str,
        tls: bool,
        req: &RequestView<'_>,
    ) -> Result<Option<&Arc<Route<M>>>, LookupError> {
        let Some((_, idx)) = self.index.iter().find(|(n, _)| n == entrypoint) else {
            return Ok(None);
        };
        // Candidate lists: exact host, host-less routes, then one per matching wildcard suffix.
        let mut c = Candidates {
            lists: [&[]; 12],
            n: 0,
            overflow: Vec::new(),
        };
        if let Some(l) = idx.exact.get(req.host) {
            c.add(l);
        }
        c.add(&idx.any_host);
        if !idx.wildcard.is_empty() {
            let mut rest = req.host;
            while let Some(dot) = rest.find('.') {
                if let Some(l) = idx.wildcard.get(&rest[dot..]) {
                    c.add(l);
                }
                rest = &rest[dot + 1..];
            }
        }
        let Candidates {
            lists,
            n,
            mut overflow,
        } = c;
        if !overflow.is_empty() {
            overflow.sort_unstable();
            overflow.dedup();
        }
        let mut heads = [0usize; 12];
        let mut oh = 0usize;
        let mut last: Option<u32> = None;
        loop {
            // k-way merge: smallest position first = highest priority first.
            let mut best: Option<(u32, usize)> = None;
            for (i, list) in lists.iter().take(n).enumerate() {
                let head = heads.get(i).copied().unwrap_or(usize::MAX);
                if let Some(&pos) = list.get(head) {
                    if best.is_none_or(|(b, _)| pos < b) {
                        best = Some((pos, i));
                    }
                }
            }
            if let Some(&pos) = overflow.get(oh) {
                if best.is_none_or(|(b, _)| pos < b) {
                    best = Some((pos, usize::MAX));
                }
            }
            let Some((pos, from)) = best else {
                return Ok(None);
            };
            match heads.get_mut(from) {
                Some(h) => *h += 1,
                None => oh += 1,
            }
            if last == Some(pos) {
                continue;
            }
            last = Some(pos);
            let Some(route) = self.routes.get(pos as usize) else {
                continue;
            };
            if !route.serves(tls) {
                continue;
            }
            match route.rule.matches(req) {
                Ok(true) => return Ok(Some(route)),
                Ok(false) => {}
                Err(message) => {
                    return Err(LookupError {
                        route: route.name.clone(),
                        message,
                    });
                }
            }
        }
    }
}

/// Up to 12 candidate lists kept on the stack (allocation-free); more spill into `overflow`.
struct Candidates<'a> {
    lists: [&'a [u32]; 12],
    n: usize,
    overflow: Vec<u32>,
}

impl<'a> Candidates<'a> {
    fn add(&mut self, l: &'a [u32]) {
        if let Some(slot) = self.lists.get_mut(self.n) {
            *slot = l;
            self.n += 1;
        } else {
            self.overflow.extend_from_slice(l);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, Method};

    type Route = super::Route<()>;
    type RouteTable = super::RouteTable<()>;

    fn route(name: &str, rule: Matcher, priority: i64) -> Route {
        Route {
            name: name.into(),
            rule_text: rule.to_string(),
            rule,
            priority,
            entrypoints: vec![],
            middlewares: vec![],
            steps: vec![],
            target: Target::Handler(Handler::Respond {
                status: 200,
                body: name.into(),
                headers: vec![],
            }),
            declared_at: Location::default(),
            record: None,
            metrics: Default::default(),
            tls: None,
            cleartext: false,
        }
    }

    fn host(h: &str) -> Matcher {
        Matcher::Host(HostPattern::parse(h).unwrap())
    }

    fn find(table: &RouteTable, h: &str, path: &str) -> Option<String> {
        let headers = HeaderMap::new();
        let req = RequestView {
            method: &Method::GET,
            host: h,
            path,
            query: None,
            headers: &headers,
            client_ip: "127.0.0.1".parse().unwrap(),
        };
        table.lookup("web", &req).unwrap().map(|r| r.name.clone())
    }

    #[test]
    fn index_keeps_priority_order_across_lists() {
        let eps = vec!["web".to_string()];
        let table = RouteTable::new(
            vec![
                route("catch-all", Matcher::PathPrefix("/".into()), 1),
                route("exact", host("a.example.com"), 10),
                route("wild", host("*.example.com"), 20),
                route("api", Matcher::PathPrefix("/api".into()), 30),
            ],
            vec![],
            &eps,
        );
        assert_eq!(
            find(&table, "a.example.com", "/api/x").as_deref(),
            Some("api")
        );
        assert_eq!(find(&table, "a.example.com", "/").as_deref(), Some("wild"));
        assert_eq!(
            find(&table, "b.c.example.com", "/").as_deref(),
            Some("wild")
        );
        assert_eq!(find(&table, "other.org", "/").as_deref(), Some("catch-all"));
        assert_eq!(
            find(&table, "example.com", "/x").as_deref(),
            Some("catch-all")
        );
    }

    #[test]
    fn ties_break_by_name_and_unknown_entrypoint_finds_nothing() {
        let eps = vec!["web".to_string()];
        let table = RouteTable::new(
            vec![route("b", host("x.com"), 5), route("a", host("x.com"), 5)],
            vec![],
            &eps,
        );
        assert_eq!(find(&table, "x.com", "/").as_deref(), Some("a"));
        let headers = HeaderMap::new();
        let req = RequestView {
            method: &Method::GET,
            host: "x.com",
            path: "/",
            query: None,
            headers: &headers,
            client_ip: "127.0.0.1".parse().unwrap(),
        };
        assert!(table.lookup("other", &req).unwrap().is_none());
    }

    #[test]
    fn ties_follow_traefiks_provider_precedence() {
        let eps = vec!["web".to_string()];
        let at = |names: &[&str]| {
            let routes = names.iter().map(|n| route(n, host("x.com"), 5)).collect();
            let table = RouteTable::new(routes, vec![], &eps);
            find(&table, "x.com", "/")
        };
        // Swarm over Docker over files (Traefik's default precedence); scripts' own routes first.
        assert_eq!(at(&["a@file", "z@docker"]).as_deref(), Some("z@docker"));
        assert_eq!(at(&["a@docker", "z@swarm"]).as_deref(), Some("z@swarm"));
        assert_eq!(at(&["a@swarm", "z"]).as_deref(), Some("z"));
        assert_eq!(at(&["b@file", "a@file"]).as_deref(), Some("a@file"));
    }

    #[test]
    fn many_labels_still_find_wildcards() {
        let eps = vec!["web".to_string()];
        let mut routes = vec![];
        let labels: Vec<String> = (0..14).map(|i| format!("l{i}")).collect();
        for i in 0..labels.len() {
            let suffix = labels[i..].join(".");
            routes.push(route(
                &format!("w{i}"),
                host(&format!("*.{suffix}")),
                i as i64,
            ));
        }
        let table = RouteTable::new(routes, vec![], &eps);
        let h = format!("x.{}", labels.join("."));
        // w13 (`*.l13`) has the highest priority and must be found even past the fixed slots.
        assert_eq!(find(&table, &h, "/").as_deref(), Some("w13"));
    }
}
