//! `rate_limit(#{ store })` through the shared store (Debian's redis-server on loopback): two
//! router replicas count one limit together, and without the store each falls back to its own
//! local limiter, answering every request.

use std::time::Duration;

use crate::acme::Redis;
use crate::support::docker::free_port;
use crate::support::*;

async fn statuses(r: &TestRouter, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get(r.web, "limited.test", "/").await.status.as_u16());
    }
    out
}

/// A router on `script` counting shared limits in the store at `url`.
async fn replica(script: &str, url: &str) -> TestRouter {
    let url = url.to_string();
    TestRouter::start_with(&[("10-test.rhai", script)], move |cfg| {
        cfg.tls.store = Some(url)
    })
    .await
}

#[tokio::test]
async fn shared_rate_limits_count_every_replica_and_fall_back_to_local_without_the_store() {
    let mut redis = Redis::start(free_port());
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    // Four a minute per client address, whichever replica the requests reach.
    let script = r#"
route("limited").rule("Host(`limited.test`)")
    .middlewares([rate_limit(#{ average: 4, period: "1m", burst: 4, store: "api" })])
    .to(respond(200, "ok"));
"#;
    let a = replica(script, &url).await;
    let b = replica(script, &url).await;
    assert_eq!(statuses(&a, 2).await, [200, 200]);
    assert_eq!(statuses(&b, 2).await, [200, 200]);
    let refused = get(b.web, "limited.test", "/").await;
    assert_eq!(refused.status.as_u16(), 429);
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=15).contains(&retry), "retry-after {retry}");
    assert_eq!(statuses(&a, 1).await, [429]);

    // The same limit without `store` counts per replica: a router of its own allows four.
    let own = TestRouter::start_with(
        &[("10-test.rhai", &script.replace(", store: \"api\"", ""))],
        |_| {},
    )
    .await;
    assert_eq!(statuses(&own, 5).await, [200, 200, 200, 200, 429]);
    own.shutdown().await;

    // The store goes away: each replica's local limiter answers at once, nothing fails or waits.
    redis.stop().await;
    let started = std::time::Instant::now();
    assert_eq!(statuses(&a, 5).await, [200, 200, 200, 200, 429]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "requests held while the store is down: {:?}",
        started.elapsed()
    );
    let v = get(a.admin, "localhost", "/api/overview").await.json();
    assert_eq!(v["store"]["reachable"], false, "{v:#}");
    a.shutdown().await;
    b.shutdown().await;
}
