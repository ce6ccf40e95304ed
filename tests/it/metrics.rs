//! Prometheus metrics at `GET /metrics` on the admin listener: a known request mix moves the
//! counters by exactly that much, histograms are well formed, server up/down follows health
//! checks, builds and provider sync errors are counted, and the text parses as exposition 0.0.4.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::*;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed scrape.
struct Scrape(Vec<Sample>);

impl Scrape {
    /// The value of the series with exactly these labels.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let found: Vec<&Sample> = self
            .0
            .iter()
            .filter(|s| s.name == name && s.labels == want)
            .collect();
        assert!(found.len() <= 1, "duplicate series {name} {want:?}");
        found.first().map(|s| s.value)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no series {name} {labels:?}"))
    }

    /// Sum of every series of `name` whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }
}

/// Parses the text format strictly: `# HELP`/`# TYPE` comments, then `name{k="v",...} value`.
fn parse(text: &str) -> Scrape {
    let mut samples = Vec::new();
    let mut typed = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name, what) = (parts.next(), parts.next(), parts.next());
            match (kw, name, what) {
                (Some("HELP"), Some(name), Some(_)) => {
                    assert!(valid_name(name), "line {n}: {line}")
                }
                (Some("TYPE"), Some(name), Some(kind)) => {
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "line {n}: bad type: {line}"
                    );
                    assert!(
                        typed.insert(name.to_string(), kind.to_string()).is_none(),
                        "line {n}: second TYPE for {name}"
                    );
                }
                _ => panic!("line {n}: malformed comment: {line}"),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("line {n}: no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("line {n}: bad value: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("line {n}: unclosed labels: {line}"));
                (name, parse_labels(body, n, line))
            }
        };
        assert!(valid_name(name), "line {n}: bad metric name: {line}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| typed.get(*f).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        assert!(
            typed.contains_key(family),
            "line {n}: sample before its # TYPE: {line}"
        );
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Scrape(samples)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_labels(body: &str, n: usize, line: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = body.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert!(valid_name(&key), "line {n}: bad label name {key:?}: {line}");
        assert_eq!(chars.next(), Some('"'), "line {n}: unquoted label: {line}");
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c @ ('\\' | '"')) => value.push(c),
                    _ => panic!("line {n}: bad escape: {line}"),
                },
                Some(c) => value.push(c),
                None => panic!("line {n}: unterminated label value: {line}"),
            }
        }
        assert!(
            out.insert(key, value).is_none(),
            "line {n}: repeated label: {line}"
        );
        match chars.next() {
            None => break,
            Some(',') => {}
            Some(c) => panic!("line {n}: unexpected {c:?} after a label: {line}"),
        }
    }
    out
}

async fn scrape(admin: SocketAddr) -> Scrape {
    let reply = get(admin, "localhost", "/metrics").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    parse(&reply.body)
}

/// Scrapes until `ok` holds (at most 10 s); returns that scrape.
async fn scrape_until(admin: SocketAddr, what: &str, ok: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = scrape(admin).await;
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "metrics never showed {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A histogram series: its family name and labels other than `le`.
type SeriesId = (String, Vec<(String, String)>);

/// Every histogram: buckets monotone in `le`, `+Inf` equal to `_count`.
fn check_histograms(s: &Scrape) {
    let mut groups: BTreeMap<SeriesId, Vec<(f64, f64)>> = BTreeMap::new();
    for sample in s.0.iter().filter(|x| x.name.ends_with("_bucket")) {
        let mut labels = sample.labels.clone();
        let le = labels.remove("le").expect("bucket without le");
        let le: f64 = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().expect("bad le")
        };
        let family = sample.name.trim_end_matches("_bucket").to_string();
        groups
            .entry((family, labels.into_iter().collect()))
            .or_default()
            .push((le, sample.value));
    }
    assert!(!groups.is_empty());
    for ((family, labels), buckets) in groups {
        let les: Vec<f64> = buckets.iter().map(|b| b.0).collect();
        assert!(
            les.windows(2).all(|w| w[0] < w[1]),
            "{family} {labels:?}: le order"
        );
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "{family} {labels:?}: buckets not monotone: {buckets:?}"
        );
        let last = buckets.last().unwrap();
        assert_eq!(last.0, f64::INFINITY, "{family} {labels:?}: no +Inf");
        let l: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            last.1,
            s.value(&format!("{family}_count"), &l),
            "{family} {labels:?}"
        );
        assert!(s.get(&format!("{family}_sum"), &l).is_some());
    }
}

const HEALTH_FAST: &str = r#"#{ path: "/health", interval: "100ms", timeout: "200ms" }"#;

fn script(live: SocketAddr, dead: SocketAddr, hook_ok: bool) -> String {
    let tag = if hook_ok {
        r#"req.set_header("X-Tag", "1");"#
    } else {
        "throw \"boom\";"
    };
    format!(
        r#"
        let a = service("a").servers(["{live}"]);
        fn tag(req) {{ {tag} }}
        route("a").rule(host("a.test")).to(a);
        route("gone").rule(host("gone.test")).to(respond(503, "down\n"));
        route("flaky").rule(host("flaky.test")).middlewares([retry(2, "10ms")])
            .to(service("flaky").servers(["{dead}"]));
        route("hooked").rule(host("hook.test")).middlewares([on_request(Fn("tag"))]).to(a);
        route("checked").rule(host("checked.test"))
            .to(service("checked").servers(["{live}", "{dead}"]).health_check({HEALTH_FAST}));
        "#
    )
}

#[tokio::test]
async fn a_known_request_mix_moves_the_metrics_by_exactly_that_much() {
    let live = Backend::start("live").await;
    let dead = dead_addr().await;
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog.json");
    std::fs::write(&catalog, "[]").unwrap();
    let r = TestRouter::start_with(&[("10-test.rhai", &script(live.addr, dead, true))], |cfg| {
        cfg.workers = 2;
        cfg.catalog = Some(catalog.clone());
    })
    .await;
    assert!(r.status().ok, "{:?}", r.status());

    let before = scrape(r.admin).await;
    assert_eq!(
        before.value("switchyard_script_builds_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        before.value("switchyard_script_builds_total", &[("result", "error")]),
        0.0
    );
    assert_eq!(before.value("switchyard_last_build_success", &[]), 1.0);
    assert_eq!(before.sum("switchyard_requests_total", &[]), 0.0);

    for _ in 0..5 {
        assert_eq!(get(r.web, "a.test", "/").await.status, 200);
    }
    for _ in 0..3 {
        assert_eq!(get(r.web, "gone.test", "/").await.status, 503);
    }
    assert_eq!(
        send(r.web, "POST", "a.test", "/", &[], "x").await.status,
        200
    );
    assert_eq!(get(r.web, "nowhere.test", "/").await.status, 404);
    assert_eq!(get(r.web, "flaky.test", "/").await.status, 502);
    for _ in 0..2 {
        assert_eq!(get(r.web, "hook.test", "/").await.status, 200);
    }

    // Requests are counted when answered; connections close on their own time.
    let s = scrape_until(r.admin, "all connections closed", |s| {
        s.get("switchyard_open_connections", &[("entrypoint", "web")]) == Some(0.0)
    })
    .await;
    let req = |route: &str, service: &str, code: &str, method: &str| {
        s.value(
            "switchyard_requests_total",
            &[
                ("entrypoint", "web"),
                ("route", route),
                ("service", service),
                ("code", code),
                ("method", method),
                ("protocol", "http"),
                ("version", "1.1"),
            ],
        )
    };
    assert_eq!(req("a", "a", "200", "GET"), 5.0);
    assert_eq!(req("a", "a", "200", "POST"), 1.0);
    assert_eq!(req("gone", "", "503", "GET"), 3.0);
    assert_eq!(req("", "", "404", "GET"), 1.0);
    assert_eq!(req("flaky", "flaky", "502", "GET"), 1.0);
    assert_eq!(req("hooked", "a", "200", "GET"), 2.0);
    assert_eq!(s.sum("switchyard_requests_total", &[]), 13.0);

    let dur = |route: &str, service: &str| {
        s.value(
            "switchyard_request_duration_seconds_count",
            &[
                ("entrypoint", "web"),
                ("route", route),
                ("service", service),
            ],
        )
    };
    assert_eq!(dur("a", "a"), 6.0);
    assert_eq!(dur("gone", ""), 3.0);
    assert_eq!(dur("", ""), 1.0);
    assert_eq!(dur("flaky", "flaky"), 1.0);
    check_histograms(&s);

    // The dead server was tried twice (first attempt and one retry), both refused.
    assert_eq!(
        s.value(
            "switchyard_upstream_errors_total",
            &[("service", "flaky"), ("kind", "connect")]
        ),
        1.0 * 2.0
    );
    assert_eq!(
        s.value("switchyard_retries_total", &[("service", "flaky")]),
        1.0
    );
    assert_eq!(
        s.get(
            "switchyard_upstream_errors_total",
            &[("service", "a"), ("kind", "connect")]
        ),
        None
    );

    let hook = [("route", "hooked"), ("hook", "on_request(tag)")];
    assert_eq!(
        s.value("switchyard_hook_duration_seconds_count", &hook),
        2.0
    );
    assert_eq!(s.value("switchyard_hook_failures_total", &hook), 0.0);

    // A held-open connection is counted while it lasts.
    let held = tokio::net::TcpStream::connect(r.web).await.unwrap();
    scrape_until(r.admin, "one open connection", |s| {
        s.get("switchyard_open_connections", &[("entrypoint", "web")]) == Some(1.0)
    })
    .await;
    drop(held);

    // Health checks take the dead server down; the live one stays up; unchecked ones are up.
    let s = scrape_until(r.admin, "the dead checked server down", |s| {
        s.get(
            "switchyard_server_up",
            &[("service", "checked"), ("server", &dead.to_string())],
        ) == Some(0.0)
    })
    .await;
    let up = |svc: &str, server: SocketAddr| {
        s.value(
            "switchyard_server_up",
            &[("service", svc), ("server", &server.to_string())],
        )
    };
    assert_eq!(up("checked", live.addr), 1.0);
    assert_eq!(up("a", live.addr), 1.0);

    // A broken save counts a failed build; the fix counts a good one; counters survive both.
    let status = r
        .write_script("10-test.rhai", "route(\"x\").rule(host(\"x\")).to(")
        .await;
    assert!(!status.ok);
    let s = scrape(r.admin).await;
    assert_eq!(
        s.value("switchyard_script_builds_total", &[("result", "error")]),
        1.0
    );
    assert_eq!(
        s.value("switchyard_script_builds_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(s.value("switchyard_last_build_success", &[]), 0.0);
    let failed_at = s.value("switchyard_last_build_timestamp_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - failed_at).abs() < 60.0, "{failed_at} vs {now}");

    // The fixed script's hook now fails: the request gets a 500 and the failure is counted.
    let status = r
        .write_script("10-test.rhai", &script(live.addr, dead, false))
        .await;
    assert!(status.ok, "{status:?}");
    assert_eq!(get(r.web, "hook.test", "/").await.status, 500);
    assert_eq!(get(r.web, "a.test", "/").await.status, 200);
    let s = scrape(r.admin).await;
    assert_eq!(
        s.value("switchyard_script_builds_total", &[("result", "ok")]),
        2.0
    );
    assert_eq!(s.value("switchyard_last_build_success", &[]), 1.0);
    assert!(s.value("switchyard_last_build_timestamp_seconds", &[]) >= failed_at);
    assert_eq!(
        s.value(
            "switchyard_requests_total",
            &[
                ("entrypoint", "web"),
                ("route", "a"),
                ("service", "a"),
                ("code", "200"),
                ("method", "GET"),
                ("protocol", "http"),
                ("version", "1.1"),
            ]
        ),
        6.0,
        "a rebuild must not reset a route's counters"
    );
    assert_eq!(s.value("switchyard_hook_failures_total", &hook), 1.0);
    assert_eq!(
        s.value("switchyard_hook_duration_seconds_count", &hook),
        3.0
    );
    check_histograms(&s);

    // An unreadable catalog file is a failed sync of the file provider.
    assert_eq!(
        s.get(
            "switchyard_provider_sync_errors_total",
            &[("provider", "file")]
        ),
        None
    );
    std::fs::write(&catalog, "[{\"name\": \"broken\"").unwrap();
    scrape_until(r.admin, "a file provider sync error", |s| {
        s.get(
            "switchyard_provider_sync_errors_total",
            &[("provider", "file")],
        )
        .is_some_and(|n| n >= 1.0)
    })
    .await;

    // Routes and services a build removes take their series with them; the rest carry on.
    let only_a = format!(
        r#"route("a").rule(host("a.test")).to(service("a").servers(["{}"]));"#,
        live.addr
    );
    assert!(r.write_script("10-test.rhai", &only_a).await.ok);
    let s = scrape(r.admin).await;
    assert_eq!(
        s.sum("switchyard_requests_total", &[("route", "gone")]),
        0.0
    );
    assert_eq!(s.sum("switchyard_hook_failures_total", &[]), 0.0);
    assert_eq!(
        s.sum("switchyard_server_up", &[("service", "checked")]),
        0.0
    );
    assert_eq!(
        s.get("switchyard_retries_total", &[("service", "flaky")]),
        None
    );
    assert_eq!(s.sum("switchyard_requests_total", &[("route", "a")]), 7.0);
    assert_eq!(
        s.value(
            "switchyard_server_up",
            &[("service", "a"), ("server", &live.addr.to_string())]
        ),
        1.0
    );
    // The same numbers, summed per route, for the JSON API.
    let counts = r.router().control().metrics().route_counts();
    assert_eq!(counts["a"].requests, 7);
    assert_eq!(counts[""].client_errors, 1);
    r.shutdown().await;
}

#[test]
fn the_parser_rejects_malformed_lines() {
    for bad in [
        "# TYPE x counter\nx{a=\"1\"}",
        "# TYPE x counter\nx{a=1} 2",
        "# TYPE x counter\nx{a=\"1\" 2",
        "x 1",
        "# TYPE x counter\nx 1 2 3",
        "# TYPE x counter\nx{a=\"\\q\"} 1",
        "# TYPE x counter\n# TYPE x gauge\nx 1",
    ] {
        let text = bad.to_string();
        assert!(
            std::panic::catch_unwind(move || parse(&text)).is_err(),
            "accepted {bad:?}"
        );
    }
    let ok = parse("# HELP x a\n# TYPE x counter\nx{a=\"q\\\"\\n\",b=\"\"} 3\n");
    assert_eq!(ok.value("x", &[("a", "q\"\n"), ("b", "")]), 3.0);
}
