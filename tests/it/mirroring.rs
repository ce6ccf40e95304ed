//! Mirroring services (`mirror(...)`, Traefik's `mirroring`): every request reaches the main
//! service and the client gets its answer; a share of requests is copied to each mirror, body
//! included, checked on raw backends that log the bytes they receive. Copies never hurt the
//! client: a dead mirror, a body over the limit (sent whole to the main server, chunked or not)
//! and a mirror without body are each checked.

use std::time::{Duration, Instant};

use crate::attacks::backend::{RawBackend, Role, Seen};
use crate::support::*;

/// Waits until `backend` has logged `n` requests (copies arrive after the main answer).
async fn wait_seen(backend: &RawBackend, n: usize, what: &str) -> Vec<Seen> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = backend.since(0);
        if seen.len() >= n {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {} of {n} requests arrived: {:?}",
            seen.len(),
            seen.iter().map(Seen::summary).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn metric(admin: std::net::SocketAddr, line: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = get(admin, "localhost", "/metrics").await.body;
        if text.lines().any(|l| l.starts_with(line)) {
            return text;
        }
        assert!(Instant::now() < deadline, "no `{line}` in:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `app.test` → `main`, every other request copied to `shadow`: both raw backends and the router.
async fn half_mirrored() -> (RawBackend, RawBackend, TestRouter) {
    let main = RawBackend::start(Role::App).await;
    let shadow = RawBackend::start(Role::App).await;
    let script = format!(
        r#"
let main = service("main").servers(["{}"]);
let shadow = service("shadow").servers(["{}"]);
route("app").rule(host("app.test")).to(mirror("mirrored", main, [[shadow, 50]]));
"#,
        main.addr, shadow.addr
    );
    let r = TestRouter::start(&script).await;
    (main, shadow, r)
}

#[tokio::test]
async fn a_mirror_gets_its_share_of_requests_with_their_bodies() {
    let (main, shadow, r) = half_mirrored().await;
    for i in 0..10 {
        let body = format!("order-{i}");
        let reply = send(
            r.web,
            "POST",
            "app.test",
            &format!("/orders/{i}"),
            &[],
            &body,
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let on_main = wait_seen(&main, 10, "main").await;
    assert_eq!(on_main.len(), 10);
    // Traefik's rule: 50% is every other request, exactly.
    let copies = wait_seen(&shadow, 5, "shadow").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let copies_now = shadow.since(0);
    assert_eq!(copies_now.len(), 5, "{copies:?}");
    for c in &copies_now {
        assert!(c.clean(), "{}", c.dump());
        let i = c.target.trim_start_matches("/orders/");
        assert_eq!(c.method, "POST");
        assert_eq!(
            String::from_utf8_lossy(&c.body),
            format!("order-{i}"),
            "the copy carries its request's body: {}",
            c.dump()
        );
        assert_eq!(c.values("host"), ["app.test"], "{}", c.dump());
    }
    let text = metric(
        r.admin,
        "switchyard_mirror_requests_total{service=\"shadow\",outcome=\"sent\"} 5",
    )
    .await;
    assert!(text.contains("switchyard_server_responses_total{service=\"shadow\""));
    let services = get(r.admin, "localhost", "/api/services").await.json();
    let m = services["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "mirrored")
        .unwrap_or_else(|| panic!("{services:#}"))
        .clone();
    assert_eq!(m["balancer"], "mirroring");
    assert_eq!(m["mirrors"], serde_json::json!([["shadow", 50]]), "{m:#}");
    r.shutdown().await;
}

#[tokio::test]
async fn copies_never_hurt_the_client() {
    let main = RawBackend::start(Role::App).await;
    let shadow = RawBackend::start(Role::App).await;
    let bodiless = RawBackend::start(Role::App).await;
    let dead = dead_addr().await;
    let script = format!(
        r#"
let main = service("main").servers(["{}"]);
let shadow = service("shadow").servers(["{}"]);
let bodiless = service("bodiless").servers(["{}"]);
let dead = service("dead").servers(["{dead}"]);
route("small").rule(host("small.test")).to(mirror("small", main, [[shadow, 100]], #{{ max_body_size: 16 }}));
route("dead").rule(host("dead.test")).to(mirror("to-dead", main, [[dead, 100]]));
route("nobody").rule(host("nobody.test")).to(mirror("nobody", main, [[bodiless, 100]], #{{ mirror_body: false }}));
"#,
        main.addr, shadow.addr, bodiless.addr
    );
    let r = TestRouter::start(&script).await;

    // Over the limit, with a length and chunked: the main server gets the whole body, no copy.
    let big = "x".repeat(100);
    let reply = send(r.web, "POST", "small.test", "/big", &[], &big).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let chunked = format!(
        "POST /chunked HTTP/1.1\r\nHost: small.test\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{}\r\n10\r\n{}\r\n10\r\n{}\r\n0\r\n\r\n",
        "a".repeat(16),
        "b".repeat(16),
        "c".repeat(16)
    );
    let answer = raw(r.web, chunked.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Under it: copied.
    let reply = send(r.web, "POST", "small.test", "/small", &[], "tiny").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let on_main = wait_seen(&main, 3, "main").await;
    assert_eq!(on_main[0].body, big.as_bytes(), "{}", on_main[0].dump());
    assert_eq!(
        String::from_utf8_lossy(&on_main[1].body),
        format!("{}{}{}", "a".repeat(16), "b".repeat(16), "c".repeat(16)),
        "the bytes read ahead went to the main server in front of the rest: {}",
        on_main[1].dump()
    );
    let copies = wait_seen(&shadow, 1, "shadow").await;
    assert_eq!(copies[0].target, "/small");
    assert_eq!(copies[0].body, b"tiny");
    metric(
        r.admin,
        "switchyard_mirror_requests_total{service=\"shadow\",outcome=\"too_large\"} 2",
    )
    .await;
    assert_eq!(
        shadow.since(0).len(),
        1,
        "only the small request was copied"
    );

    // A dead mirror: every client still gets the main server's answer.
    for _ in 0..5 {
        let reply = send(r.web, "PUT", "dead.test", "/x", &[], "payload").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    metric(
        r.admin,
        "switchyard_mirror_requests_total{service=\"dead\",outcome=\"error\"} 5",
    )
    .await;

    // mirror_body: false sends the head only, without a length for a body it does not carry.
    let reply = send(r.web, "POST", "nobody.test", "/form", &[], "secret=1").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let copy = wait_seen(&bodiless, 1, "bodiless").await;
    assert!(copy[0].clean(), "{}", copy[0].dump());
    assert!(copy[0].body.is_empty(), "{}", copy[0].dump());
    assert!(
        copy[0].values("content-length").iter().all(|v| *v == "0"),
        "{}",
        copy[0].dump()
    );
    r.shutdown().await;
}

#[test]
fn mirror_declarations_are_checked() {
    let cases = [
        (
            r#"mirror("m", "a", [["b", 101]])"#,
            "a percentage is an integer in 0..=100",
        ),
        (
            r#"mirror("m", "a", ["b"])"#,
            "mirrors are [service, percent] pairs",
        ),
        (
            r#"mirror("m", "a", [], #{ max_body: 1 })"#,
            "unknown option `max_body`",
        ),
        (
            r#"mirror("m", "a", [["nope", 10]])"#,
            "names services that are unknown or form a cycle: nope",
        ),
    ];
    for (decl, want) in cases {
        let script = format!(
            "let a = service(\"a\").servers([\"127.0.0.1:1\"]);\nroute(\"r\").rule(path_prefix(\"/\")).to({decl});\n"
        );
        let errs = switchyard::script::build(
            &[switchyard::script::ScriptSource {
                name: "s/a.rhai".into(),
                text: script,
            }],
            &Default::default(),
            &["web".to_string()],
            &Default::default(),
        )
        .err()
        .unwrap_or_else(|| panic!("{decl} built"));
        assert!(errs[0].message.contains(want), "{decl}: {errs:?}");
        assert_eq!(errs[0].line, 2, "{decl}: {errs:?}");
    }
}

/// `POST /api/explain` and replays show which mirrors a request is copied to; an explain runs on
/// a fresh build, so it never shifts which live requests get copied.
#[tokio::test]
async fn explain_shows_the_copies_and_leaves_the_live_share_alone() {
    let (_main, shadow, r) = half_mirrored().await;
    for _ in 0..3 {
        let reply = send(
            r.admin,
            "POST",
            "localhost",
            "/api/explain",
            &[],
            r#"{"url": "http://app.test/x"}"#,
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(
            v["decision"]["outcome"]["mirrors"],
            serde_json::json!(["shadow"]),
            "{v:#}"
        );
        assert!(
            v["summary"]
                .as_str()
                .unwrap_or_default()
                .contains("copied to shadow"),
            "{v:#}"
        );
    }
    // 50%, Traefik's count: the first live request is copied, the second not, the third is.
    for path in ["/1", "/2", "/3"] {
        assert_eq!(get(r.web, "app.test", path).await.status, 200);
    }
    let copies = wait_seen(&shadow, 2, "shadow").await;
    let targets: Vec<&str> = copies.iter().map(|c| c.target.as_str()).collect();
    assert_eq!(targets, ["/1", "/3"]);
    r.shutdown().await;
}
