//! The read-only JSON views of the admin API: overview, routes, services, middlewares,
//! entrypoints, scripts and catalog, with search and paging on the lists.
//!
//! Invariants: every view reads snapshots (the live table, the build status, the providers'
//! catalogs) and changes nothing; list views share one query grammar (`search`, `page`,
//! `per_page`) and one envelope (`total`, `page`, `per_page` beside the items); a bad query is a
//! 400 with a message naming the parameter.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use super::AdminState;
use crate::metrics::{RequestStats, RouteCounts};
use crate::routing::TableInfo;

/// How often route counters are sampled for `requests_per_second`.
pub const RATE_EVERY: Duration = Duration::from_secs(2);

/// Requests and 5xx per second per route over the last sampling interval.
#[derive(Debug, Default)]
pub struct Rates {
    inner: Mutex<RatesInner>,
}

#[derive(Debug, Default)]
struct RatesInner {
    prev: Option<(Instant, BTreeMap<String, RouteCounts>)>,
    /// route → (requests/s, 5xx/s)
    now: BTreeMap<String, (f64, f64)>,
}

impl Rates {
    /// Takes a new sample of the counters; rates are the change since the previous one.
    pub fn sample(&self, counts: BTreeMap<String, RouteCounts>) {
        let at = Instant::now();
        let mut r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((then, prev)) = &r.prev {
            let dt = at.duration_since(*then).as_secs_f64().max(1e-3);
            let per_s = |now: u64, before: u64| now.saturating_sub(before) as f64 / dt;
            r.now = counts
                .iter()
                .map(|(route, c)| {
                    let p = prev.get(route).copied().unwrap_or_default();
                    let rates = (
                        per_s(c.requests, p.requests),
                        per_s(c.server_errors, p.server_errors),
                    );
                    (route.clone(), rates)
                })
                .collect();
        }
        r.prev = Some((at, counts));
    }

    /// (requests/s, 5xx/s) of `route`; 0 before two samples.
    pub fn of(&self, route: &str) -> (f64, f64) {
        let r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        r.now.get(route).copied().unwrap_or_default()
    }
}

/// Largest `per_page`.
pub const MAX_PER_PAGE: usize = 1000;
const DEFAULT_PER_PAGE: usize = 100;
/// The fields `search` looks in (case-insensitive substring), where an item has them.
const SEARCHED: &[&str] = &["name", "rule", "service", "type", "provider", "address"];

/// `?search=…&page=N&per_page=N` of a list endpoint: `search` matches name, rule, service,
/// type, provider or address.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub search: Option<String>,
    pub page: Option<usize>,
    pub per_page: Option<usize>,
}

impl ListQuery {
    pub fn parse(query: Option<&str>) -> Result<ListQuery, String> {
        let q: ListQuery = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|e| format!("bad query: {e} (expected search, page, per_page)"))?;
        if q.page == Some(0) {
            return Err("bad query: page starts at 1".to_string());
        }
        if q.per_page.is_some_and(|n| n == 0 || n > MAX_PER_PAGE) {
            return Err(format!("bad query: per_page is 1 to {MAX_PER_PAGE}"));
        }
        Ok(q)
    }

    fn matches(&self, item: &Value) -> bool {
        let Some(s) = self.search.as_deref().filter(|s| !s.is_empty()) else {
            return true;
        };
        let needle = s.to_lowercase();
        SEARCHED.iter().any(|k| {
            item.get(k)
                .and_then(Value::as_str)
                .is_some_and(|v| v.to_lowercase().contains(&needle))
        })
    }

    /// Filters and pages `items` into `{key: [...], total, page, per_page}`; `total` counts
    /// the matches before paging.
    pub fn page(&self, key: &str, items: Vec<Value>) -> Value {
        let matching: Vec<Value> = items.into_iter().filter(|i| self.matches(i)).collect();
        let per_page = self.per_page.unwrap_or(DEFAULT_PER_PAGE);
        let page = self.page.unwrap_or(1);
        let total = matching.len();
        let shown: Vec<Value> = matching
            .into_iter()
            .skip((page - 1).saturating_mul(per_page))
            .take(per_page)
            .collect();
        json!({ key: shown, "total": total, "page": page, "per_page": per_page })
    }
}

/// Adds `key` to an object (a no-op on anything else).
fn set(v: &mut Value, key: &str, value: Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert(key.to_string(), value);
    }
}

fn to_values<T: serde::Serialize>(items: &[T]) -> Vec<Value> {
    items
        .iter()
        .filter_map(|i| serde_json::to_value(i).ok())
        .collect()
}

/// Routes as `/api/routes` lists them: the stable `check --format json` shape plus `status`
/// (`enabled`, or `warning` when its service has no server balancers may pick), `service`, and
/// the counters since the route appeared: `requests`, `client_errors` (4xx), `errors` (5xx),
/// with `requests_per_second` and `errors_per_second` over the last sampling interval, and
/// `p50_ms`/`p99_ms`: request durations estimated from the duration histograms (`null` before
/// the first request).
fn routes(info: &TableInfo, state: &AdminState) -> Vec<Value> {
    let stats = state.control.metrics().route_stats();
    let healthy: BTreeMap<&str, (usize, usize)> = info
        .services
        .iter()
        .map(|s| {
            let up = s.servers.iter().filter(|v| v.healthy).count();
            (s.name.as_str(), (up, s.servers.len()))
        })
        .collect();
    info.routes
        .iter()
        .filter_map(|r| {
            let mut v = serde_json::to_value(r).ok()?;
            let service = v
                .pointer("/target/service")
                .and_then(Value::as_str)
                .map(str::to_string);
            let (status, warning) = match service.as_deref().and_then(|s| healthy.get(s)) {
                Some((0, n)) if *n > 0 => ("warning", Some(format!("no server is up ({n} down)"))),
                _ => ("enabled", None),
            };
            if let Some(o) = v.as_object_mut() {
                o.insert("status".into(), json!(status));
                if let Some(w) = warning {
                    o.insert("warning".into(), json!(w));
                }
                o.insert("service".into(), json!(service));
                let st = stats.get(&r.name).cloned().unwrap_or_default();
                insert_stats(o, &st);
                let (rps, eps) = state.rates.of(&r.name);
                o.insert(
                    "requests_per_second".into(),
                    json!((rps * 10.0).round() / 10.0),
                );
                o.insert(
                    "errors_per_second".into(),
                    json!((eps * 10.0).round() / 10.0),
                );
            }
            Some(v)
        })
        .collect()
}

/// A duration in milliseconds as the JSON API shows it: to 0.01 ms, `null` for none.
fn ms(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |v| json!((v * 100.0).round() / 100.0))
}

/// The totals and latency of a route or service: `requests`, `client_errors` (4xx), `errors`
/// (5xx), `p50_ms`, `p99_ms`.
fn insert_stats(o: &mut serde_json::Map<String, Value>, st: &RequestStats) {
    o.insert("requests".into(), json!(st.counts.requests));
    o.insert("client_errors".into(), json!(st.counts.client_errors));
    o.insert("errors".into(), json!(st.counts.server_errors));
    o.insert("p50_ms".into(), ms(st.p50_ms()));
    o.insert("p99_ms".into(), ms(st.p99_ms()));
}

/// `GET /api/routes`: routes (filtered, paged) and every service, as `check --format json`.
pub fn route_list(state: &AdminState, q: &ListQuery) -> Value {
    let info = TableInfo::of(&state.table.load());
    let mut out = q.page("routes", routes(&info, state));
    set(
        &mut out,
        "services",
        Value::Array(to_values(&info.services)),
    );
    out
}

/// `GET /api/routes/NAME`: the route and the service it sends to.
pub fn route_detail(state: &AdminState, name: &str) -> Option<Value> {
    let info = TableInfo::of(&state.table.load());
    let route = routes(&info, state)
        .into_iter()
        .find(|r| r["name"] == name)?;
    let service = route
        .get("service")
        .and_then(Value::as_str)
        .and_then(|s| info.services.iter().find(|x| x.name == s))
        .and_then(|s| serde_json::to_value(s).ok());
    Some(json!({ "route": route, "service": service }))
}

/// Services as `/api/services` lists them: the `check --format json` shape plus `used_by`,
/// `servers_up`, `in_flight`, and the totals and latency of the requests routes sent to it
/// (`requests`, `client_errors`, `errors`, `p50_ms`, `p99_ms`, as for routes).
fn services(info: &TableInfo, state: &AdminState) -> Vec<Value> {
    let stats = state.control.metrics().service_stats();
    info.services
        .iter()
        .filter_map(|s| {
            let mut v = serde_json::to_value(s).ok()?;
            let used_by: Vec<&str> = info
                .routes
                .iter()
                .filter(|r| {
                    matches!(&r.target, crate::routing::describe::TargetInfo::Service { service, .. } if *service == s.name)
                })
                .map(|r| r.name.as_str())
                .collect();
            let up = s.servers.iter().filter(|x| x.healthy).count();
            if let Some(o) = v.as_object_mut() {
                o.insert("used_by".into(), json!(used_by));
                o.insert("servers_up".into(), json!(up));
                o.insert(
                    "in_flight".into(),
                    json!(s.servers.iter().map(|x| u64::from(x.in_flight)).sum::<u64>()),
                );
                let st = stats.get(&s.name).cloned().unwrap_or_default();
                insert_stats(o, &st);
            }
            Some(v)
        })
        .collect()
}

/// `GET /api/services`.
pub fn service_list(state: &AdminState, q: &ListQuery) -> Value {
    q.page(
        "services",
        services(&TableInfo::of(&state.table.load()), state),
    )
}

/// `GET /api/services/NAME`.
pub fn service_detail(state: &AdminState, name: &str) -> Option<Value> {
    services(&TableInfo::of(&state.table.load()), state)
        .into_iter()
        .find(|s| s["name"] == name)
}

/// `GET /api/middlewares`: each distinct middleware (as the table describes it) with its kind
/// and the routes that apply it, in first-use order.
pub fn middleware_list(state: &AdminState, q: &ListQuery) -> Value {
    let info = TableInfo::of(&state.table.load());
    let mut seen: Vec<(String, Vec<String>)> = Vec::new();
    for r in &info.routes {
        for m in &r.middlewares {
            match seen.iter_mut().find(|(d, _)| d == m) {
                Some((_, routes)) => routes.push(r.name.clone()),
                None => seen.push((m.clone(), vec![r.name.clone()])),
            }
        }
    }
    let items = seen
        .into_iter()
        .map(|(describe, routes)| {
            let kind = describe.split('(').next().unwrap_or_default().to_string();
            json!({ "name": describe, "type": kind, "routes": routes })
        })
        .collect();
    q.page("middlewares", items)
}

/// `GET /api/entrypoints`: name, address and how many routes serve on it.
pub fn entrypoint_list(state: &AdminState, q: &ListQuery) -> Value {
    let table = state.table.load();
    let items = state
        .entrypoints
        .iter()
        .map(|(name, addr)| {
            let routes = table
                .routes()
                .iter()
                .filter(|r| r.entrypoints.is_empty() || r.entrypoints.contains(name))
                .count();
            json!({ "name": name, "address": addr.to_string(), "routes": routes })
        })
        .collect();
    q.page("entrypoints", items)
}

/// `GET /api/scripts`: the latest build (as before) plus `scripts[]`: each file with its
/// errors and warnings.
/// Certificates and ACME orders for `/metrics`.
pub fn tls_view(state: &AdminState) -> crate::metrics::TlsView {
    let mut v = crate::metrics::TlsView::default();
    if let Some(m) = state.control.certificates() {
        let store = m.certificates().load();
        v.certificates = store
            .certs()
            .iter()
            .map(|c| {
                let name = c.names.first().cloned().unwrap_or_default();
                (name, c.source.clone(), c.not_after)
            })
            .collect();
    }
    for (resolver, names) in state.control.resolver_status() {
        for n in names {
            v.orders
                .push((resolver.clone(), n.name, n.orders, n.failures));
        }
    }
    v
}

/// The certificates TLS entrypoints serve: names, subject and issuer, validity, where each
/// came from; the default one last. Empty when no entrypoint terminates TLS.
pub fn certificates(state: &AdminState) -> Value {
    let Some(m) = state.control.certificates() else {
        return json!({ "certificates": [] });
    };
    let store = m.certificates().load();
    let time = |secs: i64| {
        u64::try_from(secs)
            .ok()
            .map(|s| {
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(s),
                )
                .to_string()
            })
            .unwrap_or_default()
    };
    let one = |c: &crate::tls::Cert, default: bool| {
        json!({
            "names": c.names,
            "subject": c.subject,
            "issuer": c.issuer,
            "not_before": time(c.not_before),
            "not_after": time(c.not_after),
            "source": c.source,
            "default": default,
        })
    };
    let mut list: Vec<Value> = store.certs().iter().map(|c| one(c, false)).collect();
    list.push(one(store.default_cert(), true));
    let resolvers: Vec<Value> = state
        .control
        .resolver_status()
        .into_iter()
        .map(|(name, names)| json!({ "name": name, "names": names }))
        .collect();
    json!({ "certificates": list, "resolvers": resolvers })
}

pub fn scripts(state: &AdminState) -> Value {
    let status = state.status.borrow().clone();
    let mut v = serde_json::to_value(&status).unwrap_or(Value::Null);
    let files: Vec<Value> = status
        .files
        .iter()
        .map(|f| {
            let errors: Vec<&crate::script::ScriptError> =
                status.errors.iter().filter(|e| &e.file == f).collect();
            let warnings: Vec<&crate::script::ScriptError> =
                status.warnings.iter().filter(|e| &e.file == f).collect();
            json!({
                "file": f,
                "ok": errors.is_empty(),
                "errors": errors,
                "warnings": warnings,
            })
        })
        .collect();
    if let Some(o) = v.as_object_mut() {
        o.insert("scripts".into(), Value::Array(files));
    }
    v
}

/// `GET /api/scripts/source?file=NAME`: the file's text now, with the build's errors in it.
pub fn script_source(state: &AdminState, query: Option<&str>) -> Result<Option<Value>, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Q {
        file: String,
    }
    let q: Q = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| format!("bad query: {e} (expected file=NAME from /api/scripts)"))?;
    let status = state.status.borrow().clone();
    // Only files the build read: the name is not a path to open.
    if !status.files.contains(&q.file) {
        return Ok(None);
    }
    let Some(text) = state.control.script_source(&q.file) else {
        return Ok(None);
    };
    let errors: Vec<&crate::script::ScriptError> =
        status.errors.iter().filter(|e| e.file == q.file).collect();
    Ok(Some(
        json!({ "file": q.file, "text": text, "errors": errors }),
    ))
}

/// `GET /api/catalog`: per provider, when its latest snapshot came, its entries, what it
/// skipped (e.g. a container with a malformed label) and its latest failed sync since.
pub fn catalog(state: &AdminState, q: &ListQuery) -> Value {
    let providers: Vec<Value> = state
        .control
        .catalogs()
        .into_iter()
        .map(|p| {
            json!({
                "provider": p.provider,
                "last_sync": p.last_sync,
                "entries": p.catalog.entries.len(),
                "problems": p.catalog.problems,
                "error": p.error.as_ref().map(|(_, e)| e),
                "error_at": p.error.as_ref().map(|(t, _)| t),
            })
        })
        .collect();
    let entries = to_values(&state.control.catalog().entries);
    let mut out = q.page("entries", entries);
    set(&mut out, "providers", Value::Array(providers));
    out
}

/// `GET /api/overview`: version, uptime, the latest build and counts.
pub fn overview(state: &AdminState) -> Value {
    let status = state.status.borrow().clone();
    let info = TableInfo::of(&state.table.load());
    let servers: usize = info.services.iter().map(|s| s.servers.len()).sum();
    let servers_up: usize = info
        .services
        .iter()
        .map(|s| s.servers.iter().filter(|x| x.healthy).count())
        .sum();
    let middlewares: std::collections::BTreeSet<&String> =
        info.routes.iter().flat_map(|r| &r.middlewares).collect();
    let providers = state.control.catalogs();
    let problems: usize = providers.iter().map(|p| p.catalog.problems.len()).sum();
    let provider_errors: Vec<Value> = providers
        .iter()
        .filter_map(|p| {
            p.error
                .as_ref()
                .map(|(at, e)| json!({ "provider": p.provider, "error": e, "at": at }))
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "commit": env!("SWITCHYARD_GIT_COMMIT"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "last_build": {
            "attempt": status.attempt,
            "live_attempt": status.live_attempt,
            "at": status.at,
            "ok": status.ok,
            "duration_ms": status.duration_ms,
            "errors": status.errors.len(),
            "warnings": status.warnings.len(),
        },
        "counts": {
            "routes": info.routes.len(),
            "tcp_routes": info.tcp_routes.len(),
            "udp_routes": info.udp_routes.len(),
            "services": info.services.len(),
            "servers": servers,
            "servers_up": servers_up,
            "middlewares": middlewares.len(),
            "entrypoints": state.entrypoints.len(),
            "scripts": status.files.len(),
            "catalog_entries": state.control.catalog().entries.len(),
            "catalog_problems": problems,
            "provider_errors": provider_errors.len(),
            // Requests no route took (404, bad Host) since start.
            "unmatched_requests": state
                .control
                .metrics()
                .route_counts()
                .get("")
                .map_or(0, |c| c.requests),
        },
        "provider_errors": provider_errors,
        // The shared store (`--store`): reachable, or the error its outage began with.
        "store": state.control.shared_store_state().map(|(url, outage)| json!({
            "url": url,
            "reachable": outage.is_none(),
            "error": outage,
        })),
        "entrypoints": state.entrypoints.iter().map(|(n, a)| json!({"name": n, "address": a.to_string()})).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize) -> Vec<Value> {
        (1..=n)
            .map(|i| json!({ "name": format!("r{i}") }))
            .collect()
    }

    #[test]
    fn queries_parse_or_name_what_is_wrong() {
        let q = ListQuery::parse(Some("search=api&page=2&per_page=5")).unwrap();
        assert_eq!(
            (q.search.as_deref(), q.page, q.per_page),
            (Some("api"), Some(2), Some(5))
        );
        assert!(ListQuery::parse(None).is_ok());
        for (bad, says) in [
            ("page=0", "page starts at 1"),
            ("per_page=100000", "per_page is 1 to"),
            ("page=x", "bad query"),
            ("sort=name", "unknown field"),
        ] {
            let e = ListQuery::parse(Some(bad)).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn rates_are_the_change_between_samples() {
        let rates = Rates::default();
        let counts = |n: u64, e: u64| {
            BTreeMap::from([(
                "api".to_string(),
                RouteCounts {
                    requests: n,
                    client_errors: 0,
                    server_errors: e,
                },
            )])
        };
        rates.sample(counts(100, 1));
        assert_eq!(rates.of("api"), (0.0, 0.0), "one sample is no rate");
        std::thread::sleep(Duration::from_millis(100));
        rates.sample(counts(150, 6));
        let (rps, eps) = rates.of("api");
        // 50 requests and 5 errors in a bit over 0.1 s.
        assert!((250.0..=500.0).contains(&rps), "{rps}");
        assert!((25.0..=50.0).contains(&eps), "{eps}");
        assert_eq!(rates.of("other"), (0.0, 0.0));
    }

    #[test]
    fn search_then_page() {
        let q = ListQuery::parse(Some("search=R1&per_page=2&page=2")).unwrap();
        // r1, r10, r11, r12 match; page 2 of 2 per page is r11, r12.
        let v = q.page("routes", items(12));
        assert_eq!(v["total"], 4);
        assert_eq!(v["routes"], json!([{ "name": "r11" }, { "name": "r12" }]));
        let past = ListQuery::parse(Some("page=9"))
            .unwrap()
            .page("routes", items(3));
        assert_eq!(past["routes"], json!([]));
        assert_eq!(past["total"], 3);
    }
}
