//! Balancers, sticky sessions and health checks against real whoami backends: how 1000 requests
//! spread (round robin, weights, random, least_conn, p2c, weighted services), consistent hashing
//! (stable keys, only a lost server's keys move), script `pick` hooks, sticky cookies (attributes,
//! opaque values, forged/stale values, agreement across routers), active health checks (out,
//! back, all down, state kept across a reload), passive ejection with its cooldown, and failover.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::support::*;

/// Polls `check` every 20 ms until it holds or `limit` passes; returns whether it held.
async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The backend that answered one request (`"-"` when no whoami answered), with its status.
async fn hit(addr: std::net::SocketAddr, host: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let reply = send(addr, "GET", host, "/", headers, "").await;
    (
        reply.status.as_u16(),
        reply.backend().unwrap_or("-").to_string(),
    )
}

/// `n` requests (20 at a time), counted by the backend that answered; every one must be 200.
async fn tally(addr: std::net::SocketAddr, host: &str, n: usize) -> HashMap<String, usize> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut left = n;
    while left > 0 {
        let batch = left.min(20);
        left -= batch;
        for (status, backend) in join_all((0..batch).map(|_| hit(addr, host, &[]))).await {
            assert_eq!(status, 200, "a request to {host} failed");
            *counts.entry(backend).or_default() += 1;
        }
    }
    counts
}

fn count(counts: &HashMap<String, usize>, name: &str) -> usize {
    counts.get(name).copied().unwrap_or(0)
}

/// Which backends answered `n` sequential requests, in order.
async fn sequence(addr: std::net::SocketAddr, host: &str, n: usize) -> Vec<String> {
    let mut seq = Vec::with_capacity(n);
    for _ in 0..n {
        let (status, backend) = hit(addr, host, &[]).await;
        assert_eq!(status, 200, "a request to {host} failed");
        seq.push(backend);
    }
    seq
}

/// A service as `GET /api/routes` lists it under "services".
async fn service_info(r: &TestRouter, name: &str) -> serde_json::Value {
    let all = get(r.admin, "localhost", "/api/routes").await.json();
    all["services"]
        .as_array()
        .and_then(|list| list.iter().find(|s| s["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no service {name:?} in /api/routes: {all}"))
}

/// One server's entry (`address`, `healthy`, `in_flight`, ...) of a listed service.
async fn server_info(r: &TestRouter, service: &str, b: &Backend) -> serde_json::Value {
    server_at(r, service, &b.addr.to_string()).await
}

/// The same, by address.
async fn server_at(r: &TestRouter, service: &str, addr: &str) -> serde_json::Value {
    let svc = service_info(r, service).await;
    svc["servers"]
        .as_array()
        .and_then(|list| list.iter().find(|s| s["address"] == addr).cloned())
        .unwrap_or_else(|| panic!("no server {addr} in service {service}: {svc}"))
}

async fn server_healthy_at(r: &TestRouter, service: &str, addr: &str) -> bool {
    server_at(r, service, addr).await["healthy"] == true
}

async fn is_healthy(r: &TestRouter, service: &str, b: &Backend) -> bool {
    server_info(r, service, b).await["healthy"] == true
}

/// Sets what `GET /health` answers on a backend itself (not through the router).
async fn set_health(b: &Backend, status: &str) {
    let reply = send(b.addr, "POST", "localhost", "/health", &[], status).await;
    assert_eq!(reply.status, 200, "POST /health {status}: {}", reply.body);
}

/// Whether `n` consecutive requests were all answered by `name`.
async fn all_from(addr: std::net::SocketAddr, host: &str, n: usize, name: &str) -> bool {
    for _ in 0..n {
        let (status, backend) = hit(addr, host, &[]).await;
        if status != 200 || backend != name {
            return false;
        }
    }
    true
}

/// The value of cookie `name` in a `Set-Cookie` header, if that header sets it.
fn cookie_value<'a>(set_cookie: &'a str, name: &str) -> Option<&'a str> {
    set_cookie
        .split(';')
        .next()
        .and_then(|pair| pair.trim().strip_prefix(name))
        .and_then(|rest| rest.strip_prefix('='))
}

const HEALTH_FAST: &str = r#"#{ path: "/health", interval: "100ms", timeout: "200ms" }"#;

#[tokio::test]
async fn round_robin_splits_evenly_and_by_weight() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let c = Backend::start("c").await;
    let script = format!(
        r#"
        route("rr").rule(host("rr.test")).to(service("rr").servers({all}).balance(round_robin()));
        route("w").rule(host("w.test")).to(service("w").servers([
            #{{ address: "{a}", weight: 3 }},
            #{{ address: "{b}", weight: 1 }},
        ]));
        "#,
        all = servers(&[&a, &b, &c]),
        a = a.addr,
        b = b.addr,
    );
    let r = TestRouter::start(&script).await;

    let rr = tally(r.web, "rr.test", 1000).await;
    for name in ["a", "b", "c"] {
        let n = count(&rr, name);
        assert!((331..=336).contains(&n), "round robin {name}: {rr:?}");
    }
    assert_eq!(rr.values().sum::<usize>(), 1000, "{rr:?}");

    let w = tally(r.web, "w.test", 1000).await;
    assert!((745..=755).contains(&count(&w, "a")), "weights 3:1: {w:?}");
    assert!((245..=255).contains(&count(&w, "b")), "weights 3:1: {w:?}");
    assert_eq!(
        service_info(&r, "w").await["balancer"],
        "weighted_round_robin"
    );
    r.shutdown().await;
}

#[tokio::test]
async fn random_follows_weights_loosely() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let script = format!(
        r#"
        route("even").rule(host("even.test")).to(service("even").servers({all}).balance(random()));
        route("w").rule(host("w.test")).to(service("w").servers([
            #{{ address: "{a}", weight: 3 }},
            #{{ address: "{b}", weight: 1 }},
        ]).balance(random()));
        "#,
        all = servers(&[&a, &b]),
        a = a.addr,
        b = b.addr,
    );
    let r = TestRouter::start(&script).await;

    let seq = sequence(r.web, "even.test", 1000).await;
    let a_count = seq.iter().filter(|s| *s == "a").count();
    assert!((400..=600).contains(&a_count), "a got {a_count} of 1000");
    // Random, not a disguised round robin: strict alternation over 1000 picks would be a
    // 2^-999 event.
    assert!(
        seq.windows(2).any(|w| w[0] == w[1]),
        "random() alternated strictly"
    );

    let w = tally(r.web, "w.test", 1000).await;
    assert!((650..=850).contains(&count(&w, "a")), "weights 3:1: {w:?}");
    assert_eq!(service_info(&r, "w").await["balancer"], "random");
    r.shutdown().await;
}

/// Starts a slow request (`?delay=2s`) and waits until the router shows it in flight; returns
/// the busy backend's name and the slow request's task.
async fn hold_one_busy(
    r: &TestRouter,
    host: &'static str,
    service: &str,
    backends: &[&Backend],
) -> (String, tokio::task::JoinHandle<Reply>) {
    let web = r.web;
    let slow = tokio::spawn(async move { get(web, host, "/?delay=2s").await });
    // Bounded poll (3 s) for the router to show the slow request in flight.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        for b in backends {
            if server_info(r, service, b).await["in_flight"] == 1 {
                return (b.name.clone(), slow);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the slow request never showed as in flight"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn least_conn_avoids_the_busy_backend() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let script = format!(
        r#"route("lc").rule(host("lc.test")).to(service("lc").servers({all}).balance(least_conn()));"#,
        all = servers(&[&a, &b]),
    );
    let r = TestRouter::start(&script).await;
    // Idle: equal servers still share the traffic.
    let idle = tally(r.web, "lc.test", 100).await;
    assert!(
        count(&idle, "a") >= 30 && count(&idle, "b") >= 30,
        "{idle:?}"
    );

    let (busy, slow) = hold_one_busy(&r, "lc.test", "lc", &[&a, &b]).await;
    let quick = sequence(r.web, "lc.test", 30).await;
    assert!(!slow.is_finished(), "the slow request ended too early");
    assert!(
        quick.iter().all(|s| *s != busy),
        "least_conn sent quick requests to the busy {busy}: {quick:?}"
    );
    let slow = slow.await.unwrap();
    assert_eq!(
        (slow.status.as_u16(), slow.backend()),
        (200, Some(busy.as_str()))
    );
    r.shutdown().await;
}

#[tokio::test]
async fn p2c_prefers_the_idle_backend() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let script = format!(
        r#"route("p").rule(host("p.test")).to(service("p").servers({all}).balance(p2c()));"#,
        all = servers(&[&a, &b]),
    );
    let r = TestRouter::start(&script).await;
    let (busy, slow) = hold_one_busy(&r, "p.test", "p", &[&a, &b]).await;
    let quick = sequence(r.web, "p.test", 30).await;
    assert!(!slow.is_finished(), "the slow request ended too early");
    let idle = quick.iter().filter(|s| **s != busy).count();
    assert!(
        idle >= 24,
        "p2c sent only {idle} of 30 to the idle server: {quick:?}"
    );
    assert_eq!(slow.await.unwrap().status, 200);
    assert_eq!(service_info(&r, "p").await["balancer"], "p2c");
    r.shutdown().await;
}

/// The backend each user lands on (`X-User: user-<i>`), 20 requests at a time.
async fn user_map(addr: std::net::SocketAddr, users: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(users);
    let names: Vec<String> = (0..users).map(|i| format!("user-{i}")).collect();
    for chunk in names.chunks(20) {
        let replies = join_all(
            chunk
                .iter()
                .map(|u| async move { hit(addr, "ch.test", &[("X-User", u.as_str())]).await }),
        )
        .await;
        for (status, backend) in replies {
            assert_eq!(status, 200);
            out.push(backend);
        }
    }
    out
}

#[tokio::test]
async fn consistent_hash_keeps_users_and_moves_only_a_lost_servers_users() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let mut c = Backend::start("c").await;
    let script = format!(
        r#"
        route("ch").rule(host("ch.test")).to(service("ch").servers({all})
            .balance(consistent_hash("header", "X-User"))
            .health_check({HEALTH_FAST}));
        "#,
        all = servers(&[&a, &b, &c]),
    );
    let r = TestRouter::start(&script).await;

    let first = user_map(r.web, 200).await;
    for name in ["a", "b", "c"] {
        let n = first.iter().filter(|s| *s == name).count();
        assert!(n >= 30, "{name} holds only {n} of 200 users");
    }
    for _ in 0..2 {
        assert_eq!(user_map(r.web, 200).await, first, "a user changed backend");
    }

    c.stop();
    let down = wait_until(Duration::from_secs(3), || async {
        !is_healthy(&r, "ch", &c).await
    })
    .await;
    assert!(down, "the stopped backend never showed as unhealthy");

    let after = user_map(r.web, 200).await;
    let mut moved_to: HashMap<&str, usize> = HashMap::new();
    for (i, (before, now)) in first.iter().zip(&after).enumerate() {
        if before == "c" {
            *moved_to.entry(now.as_str()).or_default() += 1;
        } else {
            assert_eq!(
                before, now,
                "user-{i} was not on the stopped server but moved"
            );
        }
    }
    assert_eq!(count_str(&moved_to, "c"), 0, "{moved_to:?}");
    assert!(
        count_str(&moved_to, "a") > 0 && count_str(&moved_to, "b") > 0,
        "the stopped server's users should spread over the others: {moved_to:?}"
    );
    r.shutdown().await;
}

fn count_str(counts: &HashMap<&str, usize>, name: &str) -> usize {
    counts.get(name).copied().unwrap_or(0)
}

#[tokio::test]
async fn consistent_hash_by_client_ip_pins_one_client() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let c = Backend::start("c").await;
    let script = format!(
        r#"
        route("ip").rule(host("ip.test")).to(service("ip").servers({all}).balance(consistent_hash("client_ip")));
        "#,
        all = servers(&[&a, &b, &c]),
    );
    let r = TestRouter::start(&script).await;
    let counts = tally(r.web, "ip.test", 60).await;
    assert_eq!(counts.len(), 1, "one client IP, one backend: {counts:?}");
    assert_eq!(service_info(&r, "ip").await["balancer"], "consistent_hash");
    r.shutdown().await;
}

#[tokio::test]
async fn pick_hook_chooses_by_address_or_index_and_bad_answers_are_500() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let c = Backend::start("c").await;
    let script = format!(
        r#"
        route("first").rule(host("first.test")).to(service("first").servers({all})
            .balance(pick(|servers, req| servers[0])));
        route("idx").rule(host("idx.test")).to(service("idx").servers({all})
            .balance(pick(|servers, req| parse_int(req.header("X-Idx")))));
        route("bad").rule(host("bad.test")).to(service("bad").servers({all})
            .balance(pick(|servers, req| "127.0.0.1:1")));
        "#,
        all = servers(&[&a, &b, &c]),
    );
    let r = TestRouter::start(&script).await;

    let first = tally(r.web, "first.test", 30).await;
    assert_eq!(count(&first, "a"), 30, "{first:?}");

    for (idx, name) in [("0", "a"), ("1", "b"), ("2", "c"), ("1", "b")] {
        let (status, backend) = hit(r.web, "idx.test", &[("X-Idx", idx)]).await;
        assert_eq!((status, backend.as_str()), (200, name), "X-Idx: {idx}");
    }
    // An index past the list is the hook's error: that request only.
    let (status, _) = hit(r.web, "idx.test", &[("X-Idx", "7")]).await;
    assert_eq!(status, 500);

    let bad = get(r.web, "bad.test", "/").await;
    assert_eq!(bad.status, 500);
    assert_eq!(bad.backend(), None, "no backend should have been asked");
    assert!(!bad.body.contains("127.0.0.1"), "{}", bad.body);

    // The failures stayed local.
    let (status, backend) = hit(r.web, "idx.test", &[("X-Idx", "2")]).await;
    assert_eq!((status, backend.as_str()), (200, "c"));
    r.shutdown().await;
}

fn sticky_script(backends: &[&Backend]) -> String {
    format!(
        r#"
        route("s").rule(host("s.test")).to(service("s").servers({all})
            .balance(sticky_cookie("srv", #{{ http_only: true, secure: true, same_site: "lax", max_age: 60 }})));
        "#,
        all = servers(backends),
    )
}

/// One request with an optional `srv` cookie: (backend, the `srv` value set, whole Set-Cookie).
async fn sticky_hit(
    addr: std::net::SocketAddr,
    cookie: Option<&str>,
) -> (String, Option<String>, Option<String>) {
    let header = cookie.map(|v| format!("srv={v}"));
    let headers: Vec<(&str, &str)> = header
        .as_deref()
        .map(|h| vec![("Cookie", h)])
        .unwrap_or_default();
    let reply = send(addr, "GET", "s.test", "/", &headers, "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let set = reply.header("set-cookie").map(str::to_string);
    let value = set
        .as_deref()
        .and_then(|s| cookie_value(s, "srv"))
        .map(str::to_string);
    (reply.backend().unwrap_or("-").to_string(), value, set)
}

/// backend name → the cookie value a router sets for it (requests without a cookie).
async fn cookies_by_backend(addr: std::net::SocketAddr) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for _ in 0..10 {
        let (backend, value, _) = sticky_hit(addr, None).await;
        out.insert(backend, value.expect("no srv cookie set"));
        if out.len() == 2 {
            break;
        }
    }
    out
}

#[tokio::test]
async fn sticky_cookie_pins_clients_with_an_opaque_cookie() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let script = sticky_script(&[&a, &b]);
    let r = TestRouter::start(&script).await;

    // A browser's first request: the cookie with every attribute, an opaque value.
    let (first, value, set) = sticky_hit(r.web, None).await;
    let set = set.expect("first request got no Set-Cookie");
    let value = value.unwrap_or_else(|| panic!("Set-Cookie is not srv: {set}"));
    assert_eq!(value.len(), 16, "{set}");
    assert!(value.chars().all(|c| c.is_ascii_hexdigit()), "{set}");
    for part in ["HttpOnly", "Secure", "SameSite=Lax", "Max-Age=60"] {
        assert!(
            set.split(';').any(|p| p.trim() == part),
            "{set} lacks {part}"
        );
    }
    for backend in [&a, &b] {
        assert!(!value.contains(&backend.addr.port().to_string()), "{set}");
        assert!(!set.contains(&backend.addr.to_string()), "{set}");
    }
    assert!(!set.contains("127.0.0.1"), "{set}");

    // The browser sends it back: same backend every time, no new cookie.
    for i in 0..20 {
        let (backend, _, again) = sticky_hit(r.web, Some(&value)).await;
        assert_eq!(backend, first, "request {i} with the cookie moved");
        assert_eq!(again, None, "request {i} with a valid cookie got a new one");
    }

    // curl without cookies: plain round robin, a fresh cookie each time.
    let mut seq = Vec::new();
    for _ in 0..8 {
        let (backend, v, _) = sticky_hit(r.web, None).await;
        assert!(v.is_some(), "a request without the cookie got none");
        seq.push(backend);
    }
    assert!(
        seq.windows(2).all(|w| w[0] != w[1]),
        "not alternating: {seq:?}"
    );

    // A forged value is not an error: a normal pick and a real cookie.
    let (backend, fresh, _) = sticky_hit(r.web, Some("deadbeefdeadbeef")).await;
    let fresh = fresh.expect("a forged cookie got no fresh Set-Cookie");
    assert_ne!(fresh, "deadbeefdeadbeef");

    // Another router with the same script agrees on every value.
    let ours = cookies_by_backend(r.web).await;
    assert_eq!(ours.len(), 2, "{ours:?}");
    assert_eq!(ours.get(&first), Some(&value));
    assert_eq!(ours.get(&backend), Some(&fresh));
    let r2 = TestRouter::start(&script).await;
    assert_eq!(cookies_by_backend(r2.web).await, ours);
    // And honours a cookie the first router set.
    let (on_r2, _, again) = sticky_hit(r2.web, Some(&value)).await;
    assert_eq!((on_r2, again), (first, None));
    assert_eq!(service_info(&r, "s").await["sticky_cookie"], "srv");
    r2.shutdown().await;
    r.shutdown().await;
}

#[tokio::test]
async fn sticky_cookie_moves_when_its_server_is_removed() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let r = TestRouter::start(&sticky_script(&[&a, &b])).await;
    let cookies = cookies_by_backend(r.web).await;
    let (on_b, on_a) = (cookies["b"].clone(), cookies["a"].clone());
    assert_eq!(sticky_hit(r.web, Some(&on_b)).await.0, "b");

    let status = r.write_script("10-test.rhai", &sticky_script(&[&a])).await;
    assert!(status.ok, "{status:?}");
    let (backend, fresh, _) = sticky_hit(r.web, Some(&on_b)).await;
    assert_eq!(backend, "a", "a cookie for a removed server must not fail");
    assert_eq!(fresh.as_deref(), Some(on_a.as_str()), "fresh cookie for a");
    // The new cookie sticks.
    let (backend, again, _) = sticky_hit(r.web, fresh.as_deref()).await;
    assert_eq!((backend.as_str(), again), ("a", None));
    r.shutdown().await;
}

#[tokio::test]
async fn sticky_cookie_moves_off_an_unhealthy_server() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let script = format!(
        r#"
        route("s").rule(host("s.test")).to(service("s").servers({all})
            .balance(sticky_cookie("srv"))
            .health_check({HEALTH_FAST}));
        "#,
        all = servers(&[&a, &b]),
    );
    let r = TestRouter::start(&script).await;
    let cookies = cookies_by_backend(r.web).await;
    let on_b = cookies["b"].clone();
    assert_eq!(
        sticky_hit(r.web, Some(&on_b)).await,
        ("b".into(), None, None)
    );

    set_health(&b, "503").await;
    // Bounded poll (3 s) until the sticky client is moved off b.
    let deadline = Instant::now() + Duration::from_secs(3);
    let moved = loop {
        let (backend, fresh, _) = sticky_hit(r.web, Some(&on_b)).await;
        if backend == "a" {
            break fresh;
        }
        assert!(
            Instant::now() < deadline,
            "the sticky client stayed on the unhealthy server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        moved,
        Some(cookies["a"].clone()),
        "moved without a fresh cookie"
    );

    // b is healthy again: the old cookie is valid again.
    set_health(&b, "200").await;
    let back = wait_until(Duration::from_secs(3), || async {
        sticky_hit(r.web, Some(&on_b)).await.0 == "b"
    })
    .await;
    assert!(back, "the cookie for b never worked again");
    r.shutdown().await;
}

#[tokio::test]
async fn active_health_checks_take_servers_out_and_back() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let script = format!(
        r#"
        route("hc").rule(host("hc.test")).to(service("hc").servers({all}).health_check({HEALTH_FAST}));
        "#,
        all = servers(&[&a, &b]),
    );
    let r = TestRouter::start(&script).await;
    let both = tally(r.web, "hc.test", 20).await;
    assert_eq!((count(&both, "a"), count(&both, "b")), (10, 10), "{both:?}");
    assert!(service_info(&r, "hc").await["health_check"].is_string());

    set_health(&b, "503").await;
    let only_a = wait_until(Duration::from_secs(3), || {
        all_from(r.web, "hc.test", 20, "a")
    })
    .await;
    assert!(only_a, "traffic still reached the unhealthy backend");
    let info = server_info(&r, "hc", &b).await;
    assert_eq!(info["healthy"], false, "{info}");
    assert_eq!(server_info(&r, "hc", &a).await["healthy"], true);

    set_health(&b, "200").await;
    let back = wait_until(Duration::from_secs(3), || async {
        count(&tally(r.web, "hc.test", 10).await, "b") > 0
    })
    .await;
    assert!(back, "traffic never returned to the recovered backend");
    let both = tally(r.web, "hc.test", 20).await;
    assert_eq!((count(&both, "a"), count(&both, "b")), (10, 10), "{both:?}");

    set_health(&a, "503").await;
    set_health(&b, "503").await;
    let none = wait_until(Duration::from_secs(3), || async {
        get(r.web, "hc.test", "/").await.status == 503
    })
    .await;
    assert!(none, "a service with every server down must answer 503");
    let reply = get(r.web, "hc.test", "/").await;
    assert_eq!((reply.status.as_u16(), reply.backend()), (503, None));
    r.shutdown().await;
}

#[tokio::test]
async fn health_state_survives_a_reload_with_the_same_servers() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    // Checks every 10 s: after the first check only the carried-over state keeps b out.
    let script = format!(
        r#"
        route("hc").rule(host("hc.test")).to(service("hc").servers({all})
            .health_check(#{{ path: "/health", interval: "10s", timeout: "500ms" }}));
        "#,
        all = servers(&[&a, &b]),
    );
    set_health(&b, "503").await;
    let r = TestRouter::start(&script).await;
    let down = wait_until(Duration::from_secs(3), || async {
        !is_healthy(&r, "hc", &b).await
    })
    .await;
    assert!(down, "the first check should find b unhealthy");
    // b is fine now, but no check will notice for ~10 s; a fresh state would start healthy.
    set_health(&b, "200").await;
    assert_eq!(get(b.addr, "localhost", "/health").await.status, 200);

    let status = r
        .write_script("10-test.rhai", &format!("// a comment\n{script}"))
        .await;
    assert!(status.ok, "{status:?}");
    assert_eq!(status.live_attempt, status.attempt);
    let seq = sequence(r.web, "hc.test", 20).await;
    assert!(
        seq.iter().all(|s| s == "a"),
        "a reload forgot b was down: {seq:?}"
    );
    assert_eq!(server_info(&r, "hc", &b).await["healthy"], false);
    r.shutdown().await;
}

#[tokio::test]
async fn passive_health_ejects_a_dead_server_for_the_cooldown() {
    let dead = dead_addr().await;
    let live = Backend::start("live").await;
    // The cooldown is 1 s so the "no 502 while ejected" burst cannot outlast it on a busy box.
    let script = format!(
        r#"
        let p = service("p").servers(["{dead}", "{live}"]).passive_health(#{{ failures: 2, cooldown: "1s" }});
        route("retry").rule(host("retry.test")).middlewares([retry(2, "10ms")]).to(p);
        route("plain").rule(host("plain.test")).to(p);
        "#,
        live = live.addr,
    );
    let r = TestRouter::start(&script).await;
    let dead_id = dead.to_string();
    assert!(server_healthy_at(&r, "p", &dead_id).await);

    // With retries every request succeeds while the dead server collects failures.
    let mut ejected = false;
    for _ in 0..10 {
        let (status, backend) = hit(r.web, "retry.test", &[]).await;
        assert_eq!((status, backend.as_str()), (200, "live"));
        if !server_healthy_at(&r, "p", &dead_id).await {
            ejected = true;
            break;
        }
    }
    assert!(
        ejected,
        "two connection failures should eject the dead server"
    );

    // Ejected: even the route without retries gets no 502.
    let started = Instant::now();
    for _ in 0..10 {
        let (status, backend) = hit(r.web, "plain.test", &[]).await;
        assert_eq!((status, backend.as_str()), (200, "live"));
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "burst outlasted the cooldown"
    );

    // After the cooldown the dead server is tried again (a plain request fails once more).
    let retried = wait_until(Duration::from_secs(3), || async {
        hit(r.web, "plain.test", &[]).await.0 == 502
    })
    .await;
    assert!(retried, "the ejected server was never tried again");
    r.shutdown().await;
}

#[tokio::test]
async fn failover_uses_the_fallback_while_the_primary_is_down() {
    let primary = Backend::start("primary").await;
    let fallback = Backend::start("fallback").await;
    let script = format!(
        r#"
        let main = service("main").servers(["{p}"]).health_check({HEALTH_FAST});
        let backup = service("backup").servers(["{f}"]);
        route("ha").rule(host("ha.test")).to(failover("ha", main, backup));
        "#,
        p = primary.addr,
        f = fallback.addr,
    );
    let r = TestRouter::start(&script).await;
    assert!(all_from(r.web, "ha.test", 10, "primary").await);
    let ha = service_info(&r, "ha").await;
    assert_eq!(ha["balancer"], "failover", "{ha}");

    set_health(&primary, "503").await;
    let failed_over = wait_until(Duration::from_secs(3), || {
        all_from(r.web, "ha.test", 10, "fallback")
    })
    .await;
    assert!(failed_over, "the fallback never took over");

    set_health(&primary, "200").await;
    let back = wait_until(Duration::from_secs(3), || {
        all_from(r.web, "ha.test", 10, "primary")
    })
    .await;
    assert!(back, "traffic never returned to the primary");
    r.shutdown().await;
}

/// A sticky failover: a client served by the fallback while the primary was down keeps the
/// fallback when the primary recovers (its session is not moved), while new clients go back to
/// the primary.
#[tokio::test]
async fn a_sticky_failover_keeps_fallback_sessions_after_the_primary_recovers() {
    let primary = Backend::start("primary").await;
    let fallback = Backend::start("fallback").await;
    let script = format!(
        r#"
        let main = service("main").servers(["{p}"]).health_check({HEALTH_FAST});
        let backup = service("backup").servers(["{f}"]);
        route("ha").rule(host("ha.test"))
            .to(failover("ha", main, backup).balance(sticky_cookie("side", #{{}})));
        "#,
        p = primary.addr,
        f = fallback.addr,
    );
    let r = TestRouter::start(&script).await;
    let first = get(r.web, "ha.test", "/").await;
    assert_eq!(first.backend(), Some("primary"));
    assert!(first
        .header("set-cookie")
        .is_some_and(|c| c.starts_with("side=")));
    assert_eq!(service_info(&r, "ha").await["sticky_cookie"], "side");

    set_health(&primary, "503").await;
    assert!(
        wait_until(Duration::from_secs(3), || all_from(
            r.web, "ha.test", 5, "fallback"
        ))
        .await,
        "the fallback never took over"
    );
    // A client arriving now gets the fallback and a cookie naming it.
    let moved = get(r.web, "ha.test", "/").await;
    assert_eq!(moved.backend(), Some("fallback"));
    let cookie = moved
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("a cookie naming the fallback")
        .to_string();

    set_health(&primary, "200").await;
    assert!(
        wait_until(Duration::from_secs(3), || all_from(
            r.web, "ha.test", 5, "primary"
        ))
        .await,
        "new clients never returned to the primary"
    );
    for _ in 0..10 {
        let reply = send(r.web, "GET", "ha.test", "/", &[("cookie", &cookie)], "").await;
        assert_eq!(reply.backend(), Some("fallback"), "cookie {cookie}");
        assert!(reply.header("set-cookie").is_none());
    }
    r.shutdown().await;
}

#[tokio::test]
async fn weighted_services_split_traffic_by_weight() {
    let v1 = Backend::start("v1").await;
    let v2 = Backend::start("v2").await;
    let script = format!(
        r#"
        let v1 = service("v1").servers(["{a}"]);
        let v2 = service("v2").servers(["{b}"]);
        route("canary").rule(host("canary.test")).to(weighted("canary", [[v1, 9], [v2, 1]]));
        "#,
        a = v1.addr,
        b = v2.addr,
    );
    let r = TestRouter::start(&script).await;
    let counts = tally(r.web, "canary.test", 1000).await;
    assert!((890..=910).contains(&count(&counts, "v1")), "{counts:?}");
    assert!((90..=110).contains(&count(&counts, "v2")), "{counts:?}");
    // Each member's servers are counted apart: the canary's answers can be compared.
    let metrics = get(r.admin, "localhost", "/metrics").await.body;
    for (svc, b) in [("v1", &v1), ("v2", &v2)] {
        let series = format!(
            "switchyard_server_responses_total{{service=\"{svc}\",server=\"{}\",code_class=\"2xx\"}} ",
            b.addr
        );
        let n: usize = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|n| n.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {series}in\n{metrics}")) as usize;
        assert_eq!(n, count(&counts, svc), "{svc}");
    }
    let canary = service_info(&r, "canary").await;
    assert_eq!(canary["balancer"], "weighted", "{canary}");
    assert_eq!(
        canary["children"],
        serde_json::json!([["v1", 9], ["v2", 1]])
    );
    r.shutdown().await;
}

/// A browser holding the cookie Traefik set (no secret) stays on the same server after the
/// move: Traefik 3's value (SHA-256 of the server URL), and the older raw-URL form.
#[tokio::test]
async fn cookies_set_by_traefik_keep_clients_on_their_server() {
    use sha2::Digest as _;
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let script = format!(
        "route(\"r\").rule(host(\"s.test\")).to(service(\"s\").servers([\"{}\", \"{}\", \"{}\"])\n\
         .balance(sticky_cookie(\"srv\")));\n",
        a.addr, b.addr, c.addr
    );
    let r = TestRouter::start(&script).await;
    for backend in [&a, &b, &c] {
        let url = format!("http://{}", backend.addr);
        let hex: String = sha2::Sha256::digest(url.as_bytes())
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect();
        for value in [hex[..16].to_string(), url.clone()] {
            for _ in 0..4 {
                let cookie = format!("srv={value}");
                let (status, name) = hit(r.web, "s.test", &[("cookie", &cookie)]).await;
                assert_eq!(status, 200);
                assert_eq!(name, backend.name, "cookie {value}");
            }
        }
    }
    r.shutdown().await;
}

/// A sticky canary (Traefik's `weighted.sticky`): a client given the canary keeps it for every
/// request, one given the stable version keeps that; new clients are still split by weight.
#[tokio::test]
async fn sticky_weighted_services_keep_each_client_on_its_member() {
    let v1 = Backend::start("v1").await;
    let v2a = Backend::start("v2a").await;
    let v2b = Backend::start("v2b").await;
    let script = format!(
        r#"
        let v1 = service("v1").servers(["{a}"]);
        let v2 = service("v2").servers(["{b}", "{c}"]).balance(sticky_cookie("srv"));
        route("canary").rule(host("canary.test"))
            .to(weighted("canary", [[v1, 3], [v2, 1]]).balance(sticky_cookie("member")));
        "#,
        a = v1.addr,
        b = v2a.addr,
        c = v2b.addr,
    );
    let r = TestRouter::start(&script).await;
    // New clients: by weight, each answer carrying the member cookie.
    let mut cookies: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for _ in 0..8 {
        let reply = get(r.web, "canary.test", "/").await;
        assert_eq!(reply.status, 200);
        let set: Vec<String> = reply
            .headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .map(String::from)
            .collect();
        assert!(set.iter().any(|c| c.starts_with("member=")), "{set:?}");
        cookies
            .entry(reply.backend().unwrap_or("-").to_string())
            .or_insert(set);
    }
    let info = service_info(&r, "canary").await;
    assert_eq!(info["sticky_cookie"], "member", "{info}");
    let members: Vec<&String> = cookies.keys().collect();
    assert!(
        cookies.contains_key("v1") && (cookies.contains_key("v2a") || cookies.contains_key("v2b")),
        "8 new clients at 3:1 reach both members: {members:?}"
    );
    // A client holding the canary's cookies stays on the canary and on its server there; one
    // holding the stable member's stays on stable.
    for (backend, set) in &cookies {
        let header = set.join("; ");
        for _ in 0..20 {
            let reply = send(r.web, "GET", "canary.test", "/", &[("cookie", &header)], "").await;
            assert_eq!(reply.backend(), Some(backend.as_str()), "cookie {header}");
            assert!(
                reply.headers.get("set-cookie").is_none(),
                "no new cookie for a client that keeps its member"
            );
        }
    }
    r.shutdown().await;
}
