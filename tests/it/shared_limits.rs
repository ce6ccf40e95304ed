//! `rate_limit(#{ store })` through the shared store (Debian's redis-server on loopback): two
//! router replicas count one limit together, and without the store each falls back to its own
//! local limiter, answering every request.

use std::time::Duration;

use crate::acme::{redis_cli as cli, Redis};
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

/// Statuses of `n` requests with `X-Key: key` (a bucket of its own per key).
async fn keyed(r: &TestRouter, key: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        let rep = send(r.web, "GET", "limited.test", "/", &[("x-key", key)], "").await;
        out.push(rep.status.as_u16());
    }
    out
}

/// `redis+sentinel://`: the store follows the master Redis Sentinel names. A failover promotes
/// the replica; the router moves to it within seconds, its shared limits count there, and no
/// request fails meanwhile.
#[tokio::test]
async fn a_sentinel_store_follows_a_failover() {
    let dir = tempfile::tempdir().unwrap();
    let master = Redis::start(free_port());
    let replica_port = free_port();
    let standby = Redis::start_with(
        replica_port,
        &[
            "--replicaof",
            "127.0.0.1",
            &master.port.to_string(),
            // A replica writes the master's snapshot: into the test's folder.
            "--dir",
            &dir.path().display().to_string(),
        ],
    );
    let sentinel_port = free_port();
    let conf = dir.path().join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {sentinel_port}\nbind 127.0.0.1\ndir {}\n\
             sentinel monitor mymaster 127.0.0.1 {} 1\n\
             sentinel down-after-milliseconds mymaster 1000\n\
             sentinel failover-timeout mymaster 5000\n",
            dir.path().display(),
            master.port
        ),
    )
    .unwrap();
    let _sentinel = tokio::process::Command::new("redis-server")
        .arg(&conf)
        .arg("--sentinel")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting redis-server --sentinel");
    // The sentinel knows the replica once it has read the master's INFO.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !cli(sentinel_port, &["SENTINEL", "replicas", "mymaster"])
        .contains(&replica_port.to_string())
        || !cli(replica_port, &["INFO", "replication"]).contains("master_link_status:up")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "sentinel never saw the replica"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let script = r#"
route("limited").rule("Host(`limited.test`)")
    .middlewares([rate_limit(#{ average: 4, period: "1m", burst: 4, by: "header:X-Key", store: "api" })])
    .to(respond(200, "ok"));
"#;
    let url = format!("redis+sentinel://127.0.0.1:{sentinel_port}/mymaster/0");
    let r = replica(script, &url).await;
    assert_eq!(keyed(&r, "before", 5).await, [200, 200, 200, 200, 429]);
    assert!(cli(master.port, &["DBSIZE"]).parse::<u64>().unwrap() >= 1);

    // Failover: the replica becomes the master.
    // (Refused with NOGOODSLAVE until the sentinel has judged the replica fit.)
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = cli(sentinel_port, &["SENTINEL", "FAILOVER", "mymaster"]);
        if out == "OK" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "failover refused: {out}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !cli(
        sentinel_port,
        &["SENTINEL", "get-master-addr-by-name", "mymaster"],
    )
    .contains(&replica_port.to_string())
    {
        assert!(std::time::Instant::now() < deadline, "no failover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The router's buckets land on the new master within seconds; every request is answered.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    loop {
        n += 1;
        let key = format!("after-{n}");
        let got = keyed(&r, &key, 1).await;
        assert_eq!(got, [200], "a request failed during the failover");
        if cli(replica_port, &["EXISTS", &bucket_key("api", &key)]) == "1" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the router never wrote to the new master"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(keyed(&r, "settled", 5).await, [200, 200, 200, 200, 429]);
    let v = get(r.admin, "localhost", "/api/overview").await.json();
    assert_eq!(v["store"]["reachable"], true, "{v:#}");
    r.shutdown().await;
    drop(standby);
}

/// The store key of a shared limit's bucket, as the router names it.
fn bucket_key(name: &str, key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{name}\u{1f}{key}").as_bytes(),
    );
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("switchyard:rl:{hex}")
}
