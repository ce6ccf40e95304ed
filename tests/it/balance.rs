//! Round robin and smooth weighted round robin across real backends.

use std::collections::HashMap;

use crate::support::*;

#[tokio::test]
async fn weighted_round_robin_follows_weights_smoothly() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let c = Backend::start("c").await;
    let script = format!(
        r#"
        route("w").rule(host("w.test")).to(service("w").servers([
            #{{ address: "{a}", weight: 3 }},
            #{{ address: "{b}", weight: 1 }},
            #{{ address: "http://{c}", weight: 0 }},
        ]));
        route("rr").rule(host("rr.test")).to(service("rr").servers({all}));
        "#,
        a = a.addr,
        b = b.addr,
        c = c.addr,
        all = servers(&[&a, &b, &c]),
    );
    let r = TestRouter::start(&script).await;
    let mut seq = Vec::new();
    for _ in 0..40 {
        seq.push(
            get(r.web, "w.test", "/")
                .await
                .backend()
                .unwrap()
                .to_string(),
        );
    }
    let count = |n: &str| seq.iter().filter(|s| *s == n).count();
    assert_eq!((count("a"), count("b"), count("c")), (30, 10, 0), "{seq:?}");
    // Smooth: never more than three a's in a row.
    assert!(
        !seq.windows(4).any(|w| w.iter().all(|s| s == "a")),
        "{seq:?}"
    );

    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        *counts
            .entry(
                get(r.web, "rr.test", "/")
                    .await
                    .backend()
                    .unwrap()
                    .to_string(),
            )
            .or_default() += 1;
    }
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10],
        "{counts:?}"
    );
    r.shutdown().await;
}

#[tokio::test]
async fn service_without_servers_is_503() {
    let r = TestRouter::start(
        r#"route("empty").rule(path_prefix("/")).to(service("empty").servers([]));"#,
    )
    .await;
    let resp = get(r.web, "x", "/").await;
    assert_eq!(resp.status, 503);
    assert_eq!(resp.body, "503 Service Unavailable\n");
    r.shutdown().await;
}
