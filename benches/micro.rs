//! Micro-benchmarks of the per-request hot paths and of rule parsing.
//!
//! Run with `cargo bench --bench micro` (about 1–2 minutes); filter with e.g.
//! `cargo bench --bench micro -- lookup/`. Tables are built with `script::build` from generated
//! script text, so what is measured is exactly what production builds.
//!
//! Groups:
//! - `lookup/{10,1000,10000}`: `RouteTable::lookup` for the same three request kinds at each size
//!   (`exact_hit`, `wildcard_hit`, `miss`). Target: 10 000 routes within 2× of 10 routes.
//! - `rule_parse`: Traefik rule parsing. Target: well under 10 µs for a typical rule.
//! - `hook/on_request`: one script `on_request` hook call. Target: under 2 µs.
//! - `hook/predicate`: a lookup whose winning candidate has a script `predicate`.
//! - `hook/pick`: `Service::pick` of a service balanced by a script `pick` that reads a header.
//! - `balance/pick`: round robin and smooth weighted round robin (one lock-free implementation,
//!   also behind `weighted_composite_9_1`: `Service::pick` of a weighted composite service).
//! - `middleware/circuit_breaker`: one `allow` plus one `record` of a closed breaker (no lock).
//! - `middleware/rate_limit`: `RateLimiter::check` for a known key and for a new key each time
//!   (amortised housekeeping, no whole-map count).
//! - `metrics/request`: counting one finished request of a live route (`Metrics::request`:
//!   requests_total and the duration histogram). Target: well under 100 ns.
//! - `auth/cached_refused`: `BasicAuth::check_cached` for a bcrypt user's wrong password already
//!   in the failure cache (a SHA-256 of the header and a map lookup instead of a bcrypt check).
//!   Target: well under 1 µs (about 0.2 µs here).

use std::fmt::Write as _;
use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method};

use switchyard::balance::{Algorithm, Balancer, HashKey, ServerState};
use switchyard::catalog::Catalog;
use switchyard::middleware::{HookCtx, HookOutcome, HookRequest, Middleware, RequestHook, Store};
use switchyard::routing::{parse_rule, RequestView, RuleSyntax};
use switchyard::script::{self, Built, Limits, ScriptSource};
use switchyard::table::RouteTable;

const ENTRYPOINT: &str = "web";

/// Builds a table from one script exactly as `switchyard run` / `check` would.
fn build(name: &str, text: String) -> Built {
    let sources = [ScriptSource {
        name: format!("bench/{name}.rhai"),
        text,
    }];
    script::build(
        &sources,
        &Catalog::default(),
        &[ENTRYPOINT.to_string()],
        &Limits::default(),
    )
    .unwrap_or_else(|errors| panic!("bench script {name} does not build: {errors:#?}"))
}

/// Eight headers a browser-ish client typically sends (plus `x-beta`, read by the predicate).
fn realistic_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in [
        ("host", "app.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("accept-language", "en-US,en;q=0.5"),
        (
            "cookie",
            "session=3f2a9c1e8b7d4f60a1b2c3d4e5f60718; theme=dark; beta=yes",
        ),
        ("x-request-id", "7b1e4c2a-9f3d-4e8b-a6c5-0d2f1e3b4a59"),
        ("x-beta", "1"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    h
}

fn client_ip() -> IpAddr {
    IpAddr::from([203, 0, 113, 7])
}

// ---------------------------------------------------------------------------------------------
// lookup
// ---------------------------------------------------------------------------------------------

/// Host-less routes (`path_regex`) in every table, whatever its size. They are candidates for
/// every request on the entrypoint, so their count — not the table size — sets the cost of a
/// miss; a fixed handful (3) keeps the sizes comparable. (5% of 10 000 would be 500 regexes per
/// miss: a configuration problem, not something the host index can help with.)
const HOSTLESS: usize = 3;

/// A generated route table and the requests to measure on it.
struct LookupCase {
    built: Built,
    /// (host, path, expected route name) for an exact-host route in the middle of the table.
    exact: (String, String, String),
    /// The same for a wildcard-host route in the middle of the table.
    wildcard: (String, String, String),
}

/// Generates `n` routes: `HOSTLESS` host-less regex routes, and of the rest, in a repeating
/// cycle of 20: 15 exact hosts with a path prefix (75%), 3 wildcard hosts (15%) and 2 Traefik
/// rule strings (10%). All route to one two-server service.
fn lookup_case(n: usize) -> LookupCase {
    assert!(n > HOSTLESS + 3, "table too small for the mix");
    let mut text = String::with_capacity(n * 100);
    text.push_str(r#"let svc = service("backend").servers(["127.0.0.1:9001", "127.0.0.1:9002"]);"#);
    text.push('\n');
    let mut exact = Vec::new();
    let mut wildcard = Vec::new();
    for j in 0..n - HOSTLESS {
        match j % 20 {
            1 | 7 | 13 => {
                writeln!(
                    text,
                    r#"route("w{j}").rule(host("*.w{j}.example.com")).to(svc);"#
                )
                .unwrap();
                wildcard.push(j);
            }
            4 | 16 => {
                writeln!(
                    text,
                    r#"route("t{j}").rule("Host(`r{j}.example.com`) && PathPrefix(`/x`)").to(svc);"#
                )
                .unwrap();
            }
            _ => {
                let k = j % 4 + 1;
                writeln!(
                    text,
                    r#"route("e{j}").rule(host("h{j}.example.com") & path_prefix("/api/v{k}")).to(svc);"#
                )
                .unwrap();
                exact.push(j);
            }
        }
    }
    for i in 0..HOSTLESS {
        writeln!(
            text,
            r#"route("re{i}").rule(path_regex("^/re{i}/[0-9]+$")).to(svc);"#
        )
        .unwrap();
    }
    let built = build(&format!("lookup-{n}"), text);
    assert_eq!(built.table.routes().len(), n);

    let e = exact[exact.len() / 2];
    let w = wildcard[wildcard.len() / 2];
    LookupCase {
        built,
        exact: (
            format!("h{e}.example.com"),
            format!("/api/v{}/users/42", e % 4 + 1),
            format!("e{e}"),
        ),
        wildcard: (
            format!("app.w{w}.example.com"),
            "/api/v1/users/42".to_string(),
            format!("w{w}"),
        ),
    }
}

fn view<'a>(host: &'a str, path: &'a str, headers: &'a HeaderMap) -> RequestView<'a> {
    RequestView {
        method: &Method::GET,
        host,
        path,
        query: Some("page=2&sort=desc"),
        headers,
        client_ip: client_ip(),
    }
}

/// Looks a request up once, outside the measurement, and checks it finds `want`.
fn expect_route(table: &RouteTable, req: &RequestView<'_>, want: Option<&str>) {
    let got = table
        .lookup(ENTRYPOINT, req)
        .unwrap_or_else(|e| panic!("lookup failed: {e:?}"))
        .map(|r| r.name.as_str());
    assert_eq!(got, want, "{} {}", req.host, req.path);
}

fn lookup(c: &mut Criterion) {
    let headers = realistic_headers();
    for n in [10, 1000, 10_000] {
        let case = lookup_case(n);
        let table = &case.built.table;
        let (eh, ep, en) = &case.exact;
        let (wh, wp, wn) = &case.wildcard;
        let requests = [
            ("exact_hit", view(eh, ep, &headers), Some(en.as_str())),
            ("wildcard_hit", view(wh, wp, &headers), Some(wn.as_str())),
            // Unknown host: only the host-less regex routes are candidates, and none matches.
            (
                "miss",
                view("unknown.example.org", "/api/v1/users/42", &headers),
                None,
            ),
        ];
        let mut group = c.benchmark_group(format!("lookup/{n}"));
        for (kind, req, want) in &requests {
            expect_route(table, req, *want);
            group.bench_function(*kind, |b| {
                b.iter(|| table.lookup(black_box(ENTRYPOINT), black_box(req)))
            });
        }
        group.finish();
    }
}

// ---------------------------------------------------------------------------------------------
// rule_parse
// ---------------------------------------------------------------------------------------------

fn rule_parse(c: &mut Criterion) {
    let rules = [
        (
            "v3_host_path_prefix",
            "Host(`api.example.com`) && PathPrefix(`/v1`)",
            RuleSyntax::V3,
        ),
        // Multi-value v2 matchers without templates: no regex is compiled.
        (
            "v2_multi_value",
            "Host(`example.com`, `www.example.com`) && PathPrefix(`/api`, `/v1`) \
             && Method(`GET`, `POST`) && Headers(`X-Tenant`, `acme`)",
            RuleSyntax::V2,
        ),
        // The same shape with two gorilla/mux templates, each compiled into a regex.
        (
            "v2_templates",
            "(Host(`example.com`, `www.example.com`) \
             || HostRegexp(`{tenant:[a-z0-9-]+}.apps.example.com`)) \
             && PathPrefix(`/api/{version:v[0-9]+}/`) \
             && Method(`GET`, `POST`) && Headers(`X-Tenant`, `acme`)",
            RuleSyntax::V2,
        ),
    ];
    let mut group = c.benchmark_group("rule_parse");
    for (name, rule, syntax) in rules {
        if let Err(e) = parse_rule(rule, syntax) {
            panic!("{name}: {e}");
        }
        group.bench_function(name, |b| {
            b.iter(|| parse_rule(black_box(rule), black_box(syntax)))
        });
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// hook
// ---------------------------------------------------------------------------------------------

const HOOK_SCRIPT: &str = r#"
fn tag_client(req) {
    let ua = req.header("User-Agent");
    if ua == "" {
        return respond(400, "user agent required\n");
    }
    req.set_header("X-Client", ua);
}

route("closure")
    .rule(host("closure.example.com"))
    .middlewares([on_request(|req| req.set_header("X-Host", req.host))])
    .to(respond(200, "ok\n"));

route("named_fn")
    .rule(host("named.example.com"))
    .middlewares([on_request(Fn("tag_client"))])
    .to(respond(200, "ok\n"));

route("beta")
    .rule(host("app.example.com") & predicate(|req| req.header("x-beta") == "1"))
    .to(respond(200, "beta\n"));

route("stable")
    .rule(host("app.example.com"))
    .to(respond(200, "stable\n"));

route("picked")
    .rule(host("pick.example.com"))
    .to(service("picked")
        .servers(["127.0.0.1:9001", "127.0.0.1:9002"])
        .balance(pick(|servers, req| if req.header("x-beta") == "1" { servers[1] } else { servers[0] })));
"#;

/// The first middleware of a route, as the proxy would run it.
fn first_hook(built: &Built, route: &str) -> std::sync::Arc<dyn RequestHook> {
    let route = built
        .table
        .routes()
        .iter()
        .find(|r| r.name == route)
        .unwrap_or_else(|| panic!("no route {route:?}"));
    let mw = route.middlewares.first().expect("route has no middleware");
    #[allow(irrefutable_let_patterns)]
    let Middleware::OnRequest(h) = mw
    else {
        panic!("route {:?}: first middleware is not on_request", route.name);
    };
    h.clone()
}

fn hook_request(host: &str) -> HookRequest {
    HookRequest {
        method: Method::GET,
        host: host.to_string(),
        path: "/api/v1/users/42".to_string(),
        query: "page=2&sort=desc".to_string(),
        headers: realistic_headers(),
        client_ip: client_ip(),
    }
}

fn hook(c: &mut Criterion) {
    let built = build("hooks", HOOK_SCRIPT.to_string());

    // One HookRequest per benchmark, reused: the hook moves it in and out, and its header edit
    // (`set_header`) replaces the same header every time, so the request does not grow.
    let mut group = c.benchmark_group("hook/on_request");
    for (route, host, header, want) in [
        (
            "closure",
            "closure.example.com",
            "x-host",
            "closure.example.com",
        ),
        (
            "named_fn",
            "named.example.com",
            "x-client",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
    ] {
        let h = first_hook(&built, route);
        let mut req = hook_request(host);
        let ctx = HookCtx {
            route: built
                .table
                .routes()
                .iter()
                .find(|r| r.name == route)
                .expect("bench route")
                .clone(),
            server: None,
            client_ip: client_ip(),
            request_seq: 1,
            store: std::sync::Arc::new(Store::new()),
        };
        let outcome = h.on_request(&mut req, &ctx);
        assert_eq!(outcome, Ok(HookOutcome::Continue), "{route}");
        assert_eq!(
            req.headers.get(header).and_then(|v| v.to_str().ok()),
            Some(want),
            "{route}"
        );
        assert_eq!(req.headers.len(), 9, "{route}: 8 headers + the one set");
        group.bench_function(route, |b| {
            b.iter(|| h.on_request(black_box(&mut req), &ctx))
        });
    }
    group.finish();

    // `beta` (predicate) outranks `stable` (same host, shorter rule): `true` runs the predicate
    // and returns `beta`; `false` runs it, rejects, and falls through to `stable`.
    let table = &built.table;
    let with_beta = realistic_headers();
    let mut without_beta = realistic_headers();
    without_beta.insert("x-beta", HeaderValue::from_static("0"));
    let mut group = c.benchmark_group("hook/predicate");
    for (name, headers, want) in [
        ("true", &with_beta, "beta"),
        ("false", &without_beta, "stable"),
    ] {
        let req = view("app.example.com", "/api/v1/users/42", headers);
        expect_route(table, &req, Some(want));
        group.bench_function(name, |b| {
            b.iter(|| table.lookup(black_box(ENTRYPOINT), black_box(&req)))
        });
    }
    group.finish();

    // A script `pick` reading a header: the request is lent to the call, never copied.
    let picked = service_of(table, "picked");
    let req = view("pick.example.com", "/api/v1/users/42", &with_beta);
    let now = std::time::Instant::now();
    let server = |p: Result<Option<switchyard::routing::Pick<'_>>, String>| {
        p.unwrap()
            .and_then(|p| p.at.server().map(|s| s.authority.to_string()))
    };
    assert_eq!(
        server(picked.pick(&req, now)).as_deref(),
        Some("127.0.0.1:9002")
    );
    c.bench_function("hook/pick", |b| {
        b.iter(|| black_box(&picked).pick(black_box(&req), now))
    });
}

/// The service a route of `table` sends to.
fn service_of(table: &RouteTable, route: &str) -> std::sync::Arc<switchyard::routing::Service> {
    let route = table
        .routes()
        .iter()
        .find(|r| r.name == route)
        .unwrap_or_else(|| panic!("no route {route:?}"));
    match &route.target {
        switchyard::routing::Target::Service(s) => s.clone(),
        switchyard::routing::Target::Handler(_) => panic!("route {:?} has no service", route.name),
    }
}

// ---------------------------------------------------------------------------------------------
// balance
// ---------------------------------------------------------------------------------------------

fn balance(c: &mut Criterion) {
    let mut group = c.benchmark_group("balance/pick");
    let ids = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"];
    let states: Vec<_> = ids.iter().map(|_| ServerState::new()).collect();
    let now = std::time::Instant::now();
    for (name, algorithm, weights) in [
        ("round_robin_1x4", Algorithm::RoundRobin, [1u32; 4]),
        ("weighted_5_1_1_3", Algorithm::RoundRobin, [5, 1, 1, 3]),
        ("least_conn_1x4", Algorithm::LeastConn, [1; 4]),
        ("p2c_1x4", Algorithm::P2c, [1; 4]),
        (
            "consistent_hash_1x4",
            Algorithm::ConsistentHash(HashKey::ClientIp),
            [1; 4],
        ),
    ] {
        let servers: Vec<(&str, u32)> = ids.iter().copied().zip(weights).collect();
        let b = Balancer::new(algorithm, &servers);
        assert!(b.pick(&states, Some(b"10.0.0.1"), now).is_some());
        group.bench_function(name, |bench| {
            bench.iter(|| black_box(&b).pick(&states, Some(b"10.0.0.1"), now))
        });
    }

    // A weighted composite: the same smooth weighted round robin, state per worker thread.
    let built = build(
        "weighted",
        r#"
        let v1 = service("v1").servers(["127.0.0.1:9001"]);
        let v2 = service("v2").servers(["127.0.0.1:9002"]);
        route("canary").rule(host("canary.test")).to(weighted("canary", [[v1, 9], [v2, 1]]));
        "#
        .into(),
    );
    let canary = service_of(&built.table, "canary");
    let headers = realistic_headers();
    let req = view("canary.test", "/", &headers);
    let names: Vec<String> = (0..10)
        .filter_map(|_| canary.pick(&req, now).unwrap())
        .map(|p| p.at.service.name.clone())
        .collect();
    assert_eq!(names.iter().filter(|n| *n == "v2").count(), 1, "{names:?}");
    group.bench_function("weighted_composite_9_1", |bench| {
        bench.iter(|| black_box(&canary).pick(black_box(&req), now))
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// middleware state
// ---------------------------------------------------------------------------------------------

fn middleware_state(c: &mut Criterion) {
    use switchyard::middleware::circuit::CircuitBreaker;
    use switchyard::middleware::limit::RateLimiter;

    let breaker = CircuitBreaker::new(
        "NetworkErrorRatio() > 0.5 || ResponseCodeRatio(500, 600, 0, 600) > 0.5",
        Duration::from_secs(10),
        Duration::from_secs(10),
        Duration::from_secs(10),
    )
    .unwrap();
    let start = std::time::Instant::now();
    let mut tick = 0u64;
    c.bench_function("middleware/circuit_breaker", |bench| {
        bench.iter(|| {
            // Time moves 1 µs per request, so the window rotates as it would under load.
            tick += 1;
            let now = start + Duration::from_micros(tick);
            let allowed = black_box(&breaker).allow(now);
            breaker.record(Some(200), Duration::from_millis(3), now);
            allowed
        })
    });
    assert_eq!(breaker.state(start + Duration::from_micros(tick)), "closed");

    let limiter = RateLimiter::new(1_000_000_000, Duration::from_secs(1), 1_000_000).unwrap();
    let now = std::time::Instant::now();
    assert!(limiter.check("203.0.113.7", now).is_ok());
    let mut group = c.benchmark_group("middleware/rate_limit");
    group.bench_function("known_key", |bench| {
        bench.iter(|| black_box(&limiter).check(black_box("203.0.113.7"), now))
    });
    // A new key every call (written into one reused buffer): every call inserts, and the shards
    // sweep refilled buckets (amortised) as they fill; the clock moves 1 µs per call.
    let mut key = String::new();
    let mut n = 0u64;
    group.bench_function("new_key", |bench| {
        bench.iter(|| {
            n += 1;
            key.clear();
            let _ = write!(key, "k{n}");
            black_box(&limiter).check(&key, now + Duration::from_micros(n))
        })
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------

fn metrics(c: &mut Criterion) {
    let built = build(
        "metrics",
        r#"route("a").rule(host("a.test")).to(service("a").servers(["127.0.0.1:1"]));"#.into(),
    );
    let m = switchyard::metrics::Metrics::new(&[ENTRYPOINT.to_string()]);
    m.attach(&built.table);
    let route = built.table.routes()[0].clone();
    let took = Duration::from_micros(300);
    c.bench_function("metrics/request", |bench| {
        bench.iter(|| {
            m.request(
                0,
                Some(black_box(&route)),
                &switchyard::metrics::RequestKind {
                    method: &Method::GET,
                    protocol: switchyard::metrics::Protocol::Http,
                    version: http::Version::HTTP_11,
                },
                http::StatusCode::OK,
                took,
            )
        })
    });
}

// ---------------------------------------------------------------------------------------------

fn auth(c: &mut Criterion) {
    use base64::Engine as _;
    use switchyard::middleware::auth::{BasicAuth, Cached};

    let hash = bcrypt::hash("right", 10).unwrap();
    let auth = BasicAuth::new(&[format!("u:{hash}")], "bench").unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode("u:wrong");
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Basic {b64}")).unwrap(),
    );
    // One real (slow) check puts the wrong password into the failure cache.
    assert_eq!(auth.authenticate(&headers), None);
    assert!(matches!(auth.check_cached(&headers), Cached::Refused));
    c.bench_function("auth/cached_refused", |bench| {
        bench.iter(|| black_box(&auth).check_cached(black_box(&headers)))
    });
}

// ---------------------------------------------------------------------------------------------

/// Short runs so the whole file takes about 1.5 minutes (19 benchmarks × ~3.5 s, plus building
/// the tables and the analysis); plenty for ns–µs timings. On a shared machine compare medians
/// of several runs, or raise the time: `cargo bench --bench micro -- --measurement-time 10`.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_millis(2500))
        .sample_size(50)
        .nresamples(20_000)
        .without_plots()
}

criterion_group! {
    name = micro;
    config = config();
    targets = lookup, rule_parse, hook, balance, metrics, auth, middleware_state
}
criterion_main!(micro);
