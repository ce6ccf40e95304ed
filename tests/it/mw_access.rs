//! Redirect, header, CORS and access-control middlewares (redirect_scheme, redirect_regex,
//! request/response headers, cors, basic_auth, ip_allow_list, rate_limit, in_flight_limit,
//! forward_auth, chain) against real whoami backends and a real router: what the client gets
//! and what the backend saw.

use crate::support::*;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha1::Digest as _;

/// A keep-alive client, so that bursts are quick (no new connection per request).
struct Keep(Client<HttpConnector, Full<Bytes>>);

impl Keep {
    fn new() -> Keep {
        Keep(Client::builder(TokioExecutor::new()).build_http())
    }

    async fn get(
        &self,
        addr: SocketAddr,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::builder()
            .uri(format!("http://{addr}{path}"))
            .header("host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::new())).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), self.0.request(req))
            .await
            .expect("request timed out")
            .expect("request failed");
        reply_of(resp).await
    }
}

/// Polls `f` every 20 ms until it is true, at most `limit`.
async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    for _ in 0..1000 {
        if f().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// All build error messages joined, for asserting on a failed build.
fn build_errors(r: &TestRouter) -> String {
    let st = r.status();
    assert!(!st.ok, "build should have failed: {st:?}");
    st.errors
        .iter()
        .map(|e| e.message.clone())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn redirect_scheme_keeps_host_path_and_query() {
    let backend = Backend::start("app").await;
    let script = format!(
        r#"
        let app = service("app").servers({s});
        route("perm").rule(host("perm.test")).middlewares([redirect_scheme("https")]).to(app);
        route("temp").rule(host("temp.test"))
            .middlewares([redirect_scheme("https", #{{ port: 8443, permanent: false }})]).to(app);
        "#,
        s = servers(&[&backend])
    );
    let r = TestRouter::start(&script).await;
    assert!(r.status().ok, "{:?}", r.status());

    let g = get(r.web, "perm.test:8080", "/a/b?q=1").await;
    assert_eq!(g.status, 301, "{g:?}");
    assert_eq!(g.header("location"), Some("https://perm.test/a/b?q=1"));
    assert_eq!(g.backend(), None, "a redirect never reaches the backend");

    let p = send(r.web, "POST", "perm.test:8080", "/form?x=2", &[], "data").await;
    assert_eq!(p.status, 308, "non-GET keeps its method: {p:?}");
    assert_eq!(p.header("location"), Some("https://perm.test/form?x=2"));

    let t = get(r.web, "temp.test", "/p?z=3").await;
    assert_eq!(t.status, 302, "{t:?}");
    assert_eq!(t.header("location"), Some("https://temp.test:8443/p?z=3"));
    r.shutdown().await;
}

#[tokio::test]
async fn redirect_regex_expands_groups_and_passes_non_matches() {
    let backend = Backend::start("app").await;
    let script = format!(
        r#"
        let app = service("app").servers({s});
        route("re").rule(path_prefix("/")).middlewares([
            redirect_regex("^http://www\\.([^/]+)/old/(.*)$", "https://$1/new/$2", true)
        ]).to(app);
        "#,
        s = servers(&[&backend])
    );
    let r = TestRouter::start(&script).await;
    assert!(r.status().ok, "{:?}", r.status());

    let m = get(r.web, "www.example.test", "/old/page?id=7").await;
    assert_eq!(m.status, 301, "{m:?}");
    assert_eq!(
        m.header("location"),
        Some("https://example.test/new/page?id=7")
    );
    assert_eq!(m.backend(), None);

    let n = get(r.web, "example.test", "/old/page").await;
    assert_eq!(n.status, 200, "{n:?}");
    assert_eq!(n.backend(), Some("app"), "a non-matching URL is proxied");
    assert_eq!(n.header("location"), None);
    r.shutdown().await;
}

#[tokio::test]
async fn request_headers_reach_the_backend_and_protected_names_fail_the_build() {
    let backend = Backend::start("app").await;
    let script = format!(
        r#"
        let app = service("app").servers({s});
        route("hdr").rule(path_prefix("/api")).middlewares([
            request_header("X-One", "1"),
            request_headers(#{{
                set: #{{ "X-Api": "v1" }},
                append: #{{ "X-Multi": "second" }},
                remove: ["X-Debug"],
            }}),
        ]).to(app);
        "#,
        s = servers(&[&backend])
    );
    let r = TestRouter::start(&script).await;
    assert!(r.status().ok, "{:?}", r.status());

    let api = send(
        r.web,
        "GET",
        "x",
        "/api",
        &[
            ("X-Multi", "first"),
            ("X-Debug", "secret"),
            ("X-Api", "client"),
        ],
        "",
    )
    .await
    .json();
    assert_eq!(seen(&api, "x-one"), ["1"]);
    assert_eq!(
        seen(&api, "x-api"),
        ["v1"],
        "set replaces the client's value"
    );
    assert_eq!(seen(&api, "x-multi"), ["first", "second"]);
    assert!(seen(&api, "x-debug").is_empty(), "{api}");
    r.shutdown().await;

    for (call, name) in [
        (r#"request_header("Host", "evil.test")"#, "host"),
        (
            r#"request_headers(#{ set: #{ "X-Forwarded-For": "1.2.3.4" } })"#,
            "x-forwarded-for",
        ),
        (
            r#"request_headers(#{ remove: ["X-Forwarded-For"] })"#,
            "x-forwarded-for",
        ),
    ] {
        let bad = TestRouter::start(&format!(
            "route(\"r\").rule(path(\"/\")).middlewares([{call}]).to(respond(200, \"x\"));\n"
        ))
        .await;
        let msg = build_errors(&bad);
        assert!(msg.contains(name), "{call}: {msg}");
        assert_eq!(bad.status().errors[0].line, 1, "{:?}", bad.status());
        bad.shutdown().await;
    }
}

#[tokio::test]
async fn response_headers_reach_the_client_also_on_a_later_401() {
    let backend = Backend::start("app").await;
    let sha = base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(b"pw"));
    let script = format!(
        r#"
        let app = service("app").servers({s});
        route("plain").rule(path_prefix("/plain")).middlewares([
            response_header("X-Frame-Options", "DENY"),
            response_headers(#{{ set: #{{ "X-Edge": "yes" }}, append: #{{ "X-Extra": "a" }} }}),
        ]).to(app);
        route("guarded").rule(path_prefix("/guarded")).middlewares([
            response_header("X-Frame-Options", "DENY"),
            basic_auth(["u:{{SHA}}{sha}"]),
        ]).to(app);
        "#,
        s = servers(&[&backend])
    );
    let r = TestRouter::start(&script).await;
    assert!(r.status().ok, "{:?}", r.status());

    let ok = get(r.web, "x", "/plain").await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.backend(), Some("app"));
    assert_eq!(ok.header("x-frame-options"), Some("DENY"));
    assert_eq!(ok.header("x-edge"), Some("yes"));
    assert_eq!(ok.header("x-extra"), Some("a"));

    let denied = get(r.web, "x", "/guarded").await;
    assert_eq!(denied.status, 401, "{denied:?}");
    assert_eq!(denied.backend(), None);
    assert_eq!(
        denied.header("x-frame-options"),
        Some("DENY"),
        "an earlier response_header also lands on a later middleware's answer"
    );

    let auth = basic("u", "pw");
    let passed = send(
        r.web,
        "GET",
        "x",
        "/guarded",
        &[("Authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(passed.status, 200, "{passed:?}");
    assert_eq!(passed.header("x-frame-options"), Some("DENY"));
    r.shutdown().await;
}

#[tokio::test]
async fn cors_answers_preflights_and_tags_allowed_origins() {
    let backend = Backend::start("app").await;
    let script = format!(
        r#"
        let app = service("app").servers({s});
        route("api").rule(path_prefix("/")).middlewares([cors(#{{
            allow_origins: ["https://app.example.com"],
            allow_methods: ["GET", "POST"],
            max_age: 600,
        }})]).to(app);
        "#,
        s = servers(&[&backend])
    );
    let r = TestRouter::start(&script).await;
    assert!(r.status().ok, "{:?}", r.status());
    let good = "https://app.example.com";
    let other = "https://evil.example.com";

    let pre = send(
        r.web,
        "OPTIONS",
        "x",
        "/api",
        &[("Origin", good), ("Access-Control-Request-Method", "POST")],
        "",
    )
    .await;
    assert_eq!(pre.status, 204, "{pre:?}");
    assert_eq!(pre.header("access-control-allow-origin"), Some(good));
    let methods = pre
        .header("access-control-allow-methods")
        .unwrap_or_default();
    assert!(
        methods.contains("GET") && methods.contains("POST"),
        "{pre:?}"
    );
    assert_eq!(pre.header("access-control-max-age"), Some("600"));
    assert_eq!(
        pre.backend(),
        None,
        "the preflight is answered by the router"
    );

    let refused = send(
        r.web,
        "OPTIONS",
        "x",
        "/api",
        &[("Origin", other), ("Access-Control-Request-Method", "POST")],
        "",
    )
    .await;
    assert_eq!(
        refused.header("access-control-allow-origin"),
        None,
        "{refused:?}"
    );
    assert_eq!(refused.header("access-control-allow-methods"), None);

    let actual = send(r.web, "GET", "x", "/api", &[("Origin", good)], "").await;
    assert_eq!(actual.status, 200);
    assert_eq!(actual.backend(), Some("app"));
    assert_eq!(actual.header("access-control-allow-origin"), Some(good));
    let vary: Vec<&str> = actual
        .headers
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(
        vary.iter().any(|v| v
            .split(',')
            .any(|p| p.trim().eq_ignore_ascii_case("origin"))),
        "{actual:?}"
    );

    let foreign = send(r.web, "GET", "x", "/api", &[("Origin", other)], "").await;
    assert_eq!(foreign.status, 200);
    assert_eq!(foreign.backend(), Some("app"));
    assert_eq!(
        foreign.header("access-control-allow-origin"),
        None,
        "{foreign:?}"
    );
    r.shutdown().await;
}

#[tokio::test]
async fn basic_auth_checks_bcrypt_apr1_and_sha_users() {
    let backend = Backend::start("app").await;
    let bcrypt_hash = bcrypt::hash("bpass", 4).unwrap();
    let sha = base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(b"spass"));
    let apr1 = "$apr1$qHyN1eX4$fa5LkijgGQ1hAX3SGNfXD/";
    let script = format!(
        r#"
        let app = service("app").servers({s});
        let users = ["b:{bcrypt_hash}", "s:{{SHA}}{sha}", "u:{apr1}"];
        route("auth").rule(host("auth.test"))
            .middlewares([basic_auth(users, #{{ realm: "Staff", header_field: "X-User" }})]).to(app);
        route("keep").rule(host("keep.test"))
            .middlewares([basic_auth(users, #{{ remove_header: false }})]).to(app);
        "#,
        s = servers(&[&backend])
    );
    let r = TestRouter::start(&script).await;
    assert!(r.status().ok, "{:?}", r.status());

    let none = get(r.web, "auth.test", "/api").await;
    assert_eq!(none.status, 401, "{none:?}");
    assert_eq!(
        none.header("www-authenticate"),
        Some("Basic realm=\"Staff\"")
    );
    assert_eq!(none.backend(), None);

    let wrong = basic("b", "nope");
    let w = send(
        r.web,
        "GET",
        "auth.test",
        "/api",
        &[("Authorization", &wrong)],
        "",
    )
    .await;
    assert_eq!(w.status, 401, "{w:?}");
    assert_eq!(w.backend(), None);
    let unknown = basic("nobody", "bpass");
    let w = send(
        r.web,
        "GET",
        "auth.test",
        "/api",
        &[("Authorization", &unknown)],
        "",
    )
    .await;
    assert_eq!(w.status, 401, "{w:?}");

    for (user, password) in [("b", "bpass"), ("s", "spass"), ("u", "myPassword")] {
        let auth = basic(user, password);
        let ok = send(
            r.web,
            "GET",
            "auth.test",
            "/api",
            &[("Authorization", &auth)],
            "",
        )
        .await;
        assert_eq!(ok.status, 200, "{user}: {ok:?}");
        assert_eq!(ok.backend(), Some("app"));
        let api = ok.json();
        assert!(seen(&api, "authorization").is_empty(), "{user}: {api}");
        assert_eq!(seen(&api, "x-user"), [user], "{api}");
        // Another user's password never works.
        let cross = basic(user, "myPassword-not");
        let bad = send(
            r.web,
            "GET",
            "auth.test",
            "/api",
            &[("Authorization", &cross)],
            "",
        )
        .await;
        assert_eq!(bad.status, 401, "{user}");
    }

    let auth = basic("u", "myPassword");
    let kept = send(
        r.web,
        "GET",
        "keep.test",
        "/api",
        &[("Authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(kept.status, 200, "{kept:?}");
    let api = kept.json();
    assert_eq!(seen(&api, "authorization"), [auth.as_str()]);
    assert!(
        seen(&api, "x-user").is_empty(),
        "no header_field configured: {api}"
    );
    assert_eq!(
        get(r.web, "keep.test", "/api")
            .await
            .header("www-authenticate"),
        Some("Basic realm=\"switchyard\"")
    );
    r.shutdown().await;

    let bad = TestRouter::start(&format!(
        "route(\"r\").rule(path(\"/\")).middlewares([basic_auth([\"b:{bcrypt_hash}\", \"broken-line\"])]).to(respond(200, \"x\"));\n"
    ))
    .await;
    let msg = build_errors(&bad);
    assert!(msg.contains("line 2"), "{msg}");
    assert!(
        !msg.contains(&bcrypt_hash),
        "hashes never appear in errors: {msg}"
    );
    bad.shutdown().await;
}

#[tokio::test]
async fn ip_allow_list_matches_the_client_address() {
    let backend = Backend::start("app").await;
    let script = format!(
        r#"
        let app = service("app").servers({s});
        route("v4").rule(path_prefix("/v4")).middlewares([ip_allow_list(["127.0.0.1"])]).to(app);
        route("ten").rule(path_prefix("/ten")).middlewares([ip_allow_list(["10.0.0.0/8"])]).to(app);
        route("mapped").rule(path_prefix("/mapped")).middlewares([ip_allow_list(["::ffff:127.0.0.1"])]).to(app);
        "#,
        s = servers(&[&backend])
    );
    let r = TestRouter::start(&script).await;
    assert!(r.status().ok, "{:?}", r.status());

    let a = get(r.web, "x", "/v4").await;
    assert_eq!(
        (a.status.as_u16(), a.backend()),
        (200, Some("app")),
        "{a:?}"
    );
    let t = get(r.web, "x", "/ten").await;
    assert_eq!(t.status, 403, "{t:?}");
    assert_eq!(t.backend(), None);
    let m = get(r.web, "x", "/mapped").await;
    assert_eq!(
        (m.status.as_u16(), m.backend()),
        (200, Some("app")),
        "{m:?}"
    );
    r.shutdown().await;
}

#[tokio::test]
async fn rate_limit_allows_the_burst_then_429_per_key_and_refills() {
    let backend = Backend::start("app").await;
    let script = format!(
        r#"
        let app = service("app").servers({s});
        route("ip").rule(path_prefix("/ip"))
            .middlewares([rate_limit(#{{ average: 5, period: "1s", burst: 5 }})]).to(app);
        route("key").rule(path_prefix("/key"))
            .middlewares([rate_limit(#{{ average: 5, period: "1s", burst: 5, by: "header:X-Key" }})]).to(app);
        "#,
        s = servers(&[&backend])
    );
    let r = TestRouter::start(&script).await;
    assert!(r.status().ok, "{:?}", r.status());
    let c = Keep::new();
    // Warm the connection so the burst below is quick (this costs /key nothing).
    assert_eq!(c.get(r.web, "x", "/", &[]).await.status, 404);

    let started = Instant::now();
    let mut statuses = Vec::new();
    let mut retry_after = Vec::new();
    for _ in 0..20 {
        let reply = c.get(r.web, "x", "/ip", &[]).await;
        if reply.status == 429 {
            retry_after.push(reply.header("retry-after").map(str::to_string));
            assert_eq!(reply.backend(), None);
        }
        statuses.push(reply.status.as_u16());
    }
    let elapsed = started.elapsed();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(&statuses[..5], &[200; 5], "{statuses:?}");
    // One token comes back every 200 ms; the burst normally takes a few ms.
    let refilled = (elapsed.as_millis() / 200) as usize;
    assert!(
        ok >= 5 && ok <= 5 + refilled,
        "{ok} OK in {elapsed:?}: {statuses:?}"
    );
    if elapsed < Duration::from_millis(190) {
        assert_eq!(ok, 5, "{statuses:?}");
        assert_eq!(&statuses[5..], &[429; 15], "{statuses:?}");
    }
    assert!(!retry_after.is_empty());
    for ra in &retry_after {
        let secs: u64 = ra
            .as_deref()
            .expect("429 without Retry-After")
            .parse()
            .unwrap();
        assert!(secs >= 1, "{ra:?}");
    }

    // Keys are independent: exhausting "a" leaves "b" its own burst.
    let key_started = Instant::now();
    let mut a_ok = 0;
    for _ in 0..10 {
        if c.get(r.web, "x", "/key", &[("X-Key", "a")]).await.status == 200 {
            a_ok += 1;
        }
    }
    let refilled = (key_started.elapsed().as_millis() / 200) as usize;
    assert!(a_ok >= 5 && a_ok <= 5 + refilled, "{a_ok} OK for key a");
    for i in 0..5 {
        let b = c.get(r.web, "x", "/key", &[("X-Key", "b")]).await;
        assert_eq!(b.status, 200, "key b request {i}: {b:?}");
    }

    // The bucket refills: within 2 s a request on the exhausted client passes again.
    let passed = eventually(Duration::from_secs(2), || async {
        c.get(r.web, "x", "/ip", &[]).await.status == 200
    })
    .await;
    assert!(passed, "no token came back within 2 s");
    r.shutdown().await;
}

#[tokio::test]
async fn in_flight_limit_refuses_the_third_concurrent_request() {
    let backend = Backend::start("app").await;
    let script = format!(
        r#"
        let app = service("app").servers({s});
        route("slow").rule(path_prefix("/")).middlewares([in_flight_limit(2)]).to(app);
        "#,
        s = servers(&[&backend])
    );
    let r = TestRouter::start(&script).await;
    assert!(r.status().ok, "{:?}", r.status());
    let web = r.web;

    let started = Instant::now();
    let slow = |_: usize| {
        tokio::spawn(async move {
            let reply = get(web, "x", "/api?delay=800ms").await;
            (reply, started.elapsed())
        })
    };
    let first = slow(0);
    let second = slow(1);
    let third = slow(2);
    let mut results = Vec::new();
    for h in [first, second, third] {
        results.push(h.await.unwrap());
    }
    let refused: Vec<_> = results.iter().filter(|(r, _)| r.status == 429).collect();
    let served: Vec<_> = results.iter().filter(|(r, _)| r.status == 200).collect();
    assert_eq!(refused.len(), 1, "{results:?}");
    assert_eq!(served.len(), 2, "{results:?}");
    let (no, refused_at) = refused[0];
    assert_eq!(no.backend(), None);
    assert!(
        *refused_at < Duration::from_millis(800),
        "the third request is refused, not queued: {refused_at:?}"
    );
    for (ok, at) in &served {
        assert_eq!(ok.backend(), Some("app"));
        assert!(*at >= Duration::from_millis(800), "{at:?}");
    }

    // Slots are given back once the responses are sent.
    let passed = eventually(Duration::from_secs(2), || async {
        get(web, "x", "/api").await.status == 200
    })
    .await;
    assert!(passed, "no slot came free after the slow requests finished");
    r.shutdown().await;
}

#[tokio::test]
async fn forward_auth_asks_a_real_auth_server() {
    let backend = Backend::start("app").await;
    let auth = TestRouter::start(
        r#"
        fn check(req) {
            if req.header("X-Token") == "good" {
                return respond(200, "", #{ "X-User": "alice" });
            }
            return respond(401, "denied\n", #{ "WWW-Authenticate": "Bearer" });
        }
        route("auth").rule(path("/auth")).middlewares([on_request(Fn("check"))]).to(respond(500, "no\n"));
        "#,
    )
    .await;
    assert!(auth.status().ok, "{:?}", auth.status());
    let dead = dead_addr().await;
    let script = format!(
        r#"
        let app = service("app").servers({s});
        route("guarded").rule(host("guarded.test")).middlewares([
            forward_auth("http://{a}/auth", #{{ auth_response_headers: ["X-User"] }}),
        ]).to(app);
        route("down").rule(host("down.test")).middlewares([forward_auth("http://{dead}/auth")]).to(app);
        "#,
        s = servers(&[&backend]),
        a = auth.web,
    );
    let r = TestRouter::start(&script).await;
    assert!(r.status().ok, "{:?}", r.status());

    let good = send(
        r.web,
        "GET",
        "guarded.test",
        "/api",
        &[("X-Token", "good"), ("X-User", "mallory")],
        "",
    )
    .await;
    assert_eq!(good.status, 200, "{good:?}");
    assert_eq!(good.backend(), Some("app"));
    let api = good.json();
    assert_eq!(
        seen(&api, "x-user"),
        ["alice"],
        "the auth answer's header replaces the client's: {api}"
    );

    let bad = send(
        r.web,
        "GET",
        "guarded.test",
        "/api",
        &[("X-Token", "bad")],
        "",
    )
    .await;
    assert_eq!(bad.status, 401, "{bad:?}");
    assert_eq!(bad.body, "denied\n");
    assert_eq!(bad.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        bad.backend(),
        None,
        "a refused request never reaches the backend"
    );

    let none = get(r.web, "guarded.test", "/api").await;
    assert_eq!(none.status, 401, "{none:?}");

    let down = send(
        r.web,
        "GET",
        "down.test",
        "/api",
        &[("X-Token", "good")],
        "",
    )
    .await;
    assert_eq!(down.status, 500, "{down:?}");
    assert_eq!(down.backend(), None);
    r.shutdown().await;
    auth.shutdown().await;
}

#[tokio::test]
async fn chains_apply_every_member_and_are_listed_by_name() {
    let backend = Backend::start("app").await;
    let sha = base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(b"pw"));
    let script = format!(
        r#"
        let app = service("app").servers({s});
        let users = ["u:{{SHA}}{sha}"];
        let secure = chain("secure", [ip_allow_list(["127.0.0.1"]), basic_auth(users)]);
        let closed = chain("closed", [ip_allow_list(["10.0.0.0/8"]), basic_auth(users)]);
        route("secure").rule(path_prefix("/secure")).middlewares([secure]).to(app);
        route("closed").rule(path_prefix("/closed")).middlewares([closed]).to(app);
        "#,
        s = servers(&[&backend])
    );
    let r = TestRouter::start(&script).await;
    assert!(r.status().ok, "{:?}", r.status());
    let auth = basic("u", "pw");

    let anon = get(r.web, "x", "/secure").await;
    assert_eq!(
        anon.status, 401,
        "basic_auth in the chain applies: {anon:?}"
    );
    let ok = send(
        r.web,
        "GET",
        "x",
        "/secure",
        &[("Authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.backend(), Some("app"));
    let closed = send(
        r.web,
        "GET",
        "x",
        "/closed",
        &[("Authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(
        closed.status, 403,
        "ip_allow_list in the chain applies: {closed:?}"
    );

    let info = r.route_info("secure").await;
    assert_eq!(
        info["middlewares"],
        serde_json::json!(["chain(\"secure\")"]),
        "{info}"
    );
    r.shutdown().await;
}
