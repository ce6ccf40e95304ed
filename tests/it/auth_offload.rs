//! basic_auth with slow hashes on a one-worker router: bcrypt checks run off the worker's thread
//! (other connections keep being served while a wrong password is being checked), repeated
//! wrong passwords keep failing (from the failure cache) without locking out the right one, and
//! a dry run (the admin explain) decides like live traffic. Ordering only, never timing.

use crate::support::*;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// A router with one worker: `locked.test` behind basic_auth (user `u`, bcrypt at `cost`,
/// password `right`, user forwarded as `X-User`), `open.test` without auth, both to `backend`.
async fn router(backend: &Backend, cost: u32) -> TestRouter {
    let hash = tokio::task::spawn_blocking(move || bcrypt::hash("right", cost).unwrap())
        .await
        .unwrap();
    let script = format!(
        r#"
        let app = service("app").servers({s});
        route("locked").rule(host("locked.test"))
            .middlewares([basic_auth(["u:{hash}"], #{{ header_field: "X-User" }})]).to(app);
        route("open").rule(host("open.test")).to(app);
        "#,
        s = servers(&[backend])
    );
    let r = TestRouter::start_with(&[("10-test.rhai", &script)], |cfg| cfg.workers = 1).await;
    assert!(r.status().ok, "{:?}", r.status());
    r
}

/// Writes a whole request on a new connection (so the router has it before this returns), then
/// reads its response in a task: the status code, or 0 when the connection ended without one.
async fn start_raw(addr: SocketAddr, request: String) -> JoinHandle<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    tokio::spawn(async move {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        let read = async {
            loop {
                let n = s.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
                if message_complete(&out) {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(120), read)
            .await
            .expect("no answer within 120 s");
        let text = String::from_utf8_lossy(&out);
        text.strip_prefix("HTTP/1.1 ")
            .and_then(|t| t.get(..3))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_bcrypt_passwords_do_not_stall_the_worker() {
    let backend = Backend::start("app").await;
    let r = router(&backend, 12).await;

    // Distinct wrong passwords, so each needs its own cost-12 bcrypt check (no cache hit).
    let mut wrong = Vec::new();
    for i in 0..4 {
        let auth = basic("u", &format!("wrong-{i}"));
        let request = format!(
            "GET /api HTTP/1.1\r\nHost: locked.test\r\nAuthorization: {auth}\r\n\
             Connection: close\r\n\r\n"
        );
        wrong.push(start_raw(r.web, request).await);
    }

    // Sent after every wrong-password request was written to the same (only) worker.
    let open = get(r.web, "open.test", "/api").await;
    let pending = wrong.iter().filter(|h| !h.is_finished()).count();
    assert_eq!(open.status, 200, "{open:?}");
    assert_eq!(open.backend(), Some("app"));
    assert!(
        pending >= 1,
        "the unprotected request waited for every bcrypt check"
    );

    for h in wrong {
        assert_eq!(h.await.unwrap(), 401);
    }
    r.shutdown().await;
}

#[tokio::test]
async fn repeated_wrong_password_keeps_failing_and_right_one_gets_in() {
    let backend = Backend::start("app").await;
    let r = router(&backend, 10).await;
    let locked = |auth: String| {
        let web = r.web;
        async move {
            send(
                web,
                "GET",
                "locked.test",
                "/api",
                &[("Authorization", &auth)],
                "",
            )
            .await
        }
    };

    // The first is checked by bcrypt, the rest come from the failure cache: same answer.
    for attempt in 0..5 {
        let w = locked(basic("u", "wrong")).await;
        assert_eq!(w.status, 401, "attempt {attempt}: {w:?}");
        assert_eq!(
            w.header("www-authenticate"),
            Some("Basic realm=\"switchyard\"")
        );
        assert_eq!(w.backend(), None, "attempt {attempt}");
    }

    // The right password right after: a different Authorization value, checked and allowed,
    // twice (the second from the success cache).
    for attempt in 0..2 {
        let ok = locked(basic("u", "right")).await;
        assert_eq!(ok.status, 200, "attempt {attempt}: {ok:?}");
        assert_eq!(ok.backend(), Some("app"));
        let api = ok.json();
        assert_eq!(seen(&api, "x-user"), ["u"], "{api}");
        assert!(seen(&api, "authorization").is_empty(), "{api}");
    }

    // Neither verdict moved.
    let w = locked(basic("u", "wrong")).await;
    assert_eq!(w.status, 401, "{w:?}");
    // A client cannot pass the user header itself.
    let w = send(r.web, "GET", "locked.test", "/api", &[("X-User", "u")], "").await;
    assert_eq!(w.status, 401, "{w:?}");
    r.shutdown().await;
}

#[tokio::test]
async fn dry_run_decides_bcrypt_users_like_live_traffic() {
    let backend = Backend::start("app").await;
    let r = router(&backend, 4).await;
    let explain = |auth: String| {
        let admin = r.admin;
        async move {
            let body = serde_json::json!({
                "url": "http://locked.test/api",
                "headers": { "Authorization": auth },
            })
            .to_string();
            let reply = send(admin, "POST", "localhost", "/api/explain", &[], &body).await;
            assert_eq!(reply.status, 200, "{reply:?}");
            reply.json()
        }
    };

    for _ in 0..2 {
        let v = explain(basic("u", "wrong")).await;
        assert_eq!(v["status"], 401, "{v}");
        let live = send(
            r.web,
            "GET",
            "locked.test",
            "/api",
            &[("Authorization", &basic("u", "wrong"))],
            "",
        )
        .await;
        assert_eq!(live.status, 401);
    }

    let v = explain(basic("u", "right")).await;
    assert_eq!(v["status"], serde_json::Value::Null, "{v}");
    assert_eq!(v["decision"]["outcome"]["kind"], "forward", "{v}");
    let steps = v["decision"]["steps"].to_string();
    assert!(steps.contains(r#"user \"u\" authenticated"#), "{steps}");
    let live = send(
        r.web,
        "GET",
        "locked.test",
        "/api",
        &[("Authorization", &basic("u", "right"))],
        "",
    )
    .await;
    assert_eq!(live.status, 200, "{live:?}");
    r.shutdown().await;
}
