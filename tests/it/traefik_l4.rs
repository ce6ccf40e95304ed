//! Traefik's TCP and UDP label groups (`traefik.tcp.*`, `traefik.udp.*`) and the `tcp:`/`udp:`
//! sections of its dynamic files, read by the `traefik` stdlib module into `tcp_route`,
//! `tcp_service`, `udp_route` and `udp_service` declarations with Traefik's defaults: a default
//! service named after the container on its port, no default HTTP router for a container with
//! only TCP/UDP labels, priority -1 for HostSNI(`*`), one UDP router per entrypoint. Checked
//! through the built table's TCP/UDP part (the JSON `check --format json` prints), `switchyard
//! check` itself, the static translation (`:53/udp`, PROXY protocol), and one live TCP route.

use std::path::Path;

use serde_json::{json, Value};
use switchyard::catalog::{Catalog, CatalogEntry};
use switchyard::routing::TableInfo;
use switchyard::script::{self, Limits, ScriptSource};

use crate::support::*;

const SCRIPT: &str = "import \"traefik\" as t;\nt::routes(catalog);\n";

/// A running container entry as the Docker provider reports it: `address` on its network, its
/// exposed TCP `ports`, `servers` on the lowest one (none when `ports` is empty).
fn container(name: &str, address: &str, ports: &[u16], labels: Value) -> Value {
    let servers: Vec<String> = ports
        .first()
        .map(|p| format!("{address}:{p}"))
        .into_iter()
        .collect();
    json!({
        "name": name,
        "provider": "docker",
        "labels": labels,
        "servers": servers,
        "container": {
            "id": format!("{name}-id"),
            "name": format!("{name}_1"),
            "state": "running",
            "network_mode": "bridge",
            "networks": { "net": address },
            "ports": ports,
            "address": address,
        }
    })
}

struct Outcome {
    table: Value,
    warnings: Vec<String>,
}

impl Outcome {
    fn list(&self, key: &str) -> Vec<Value> {
        self.table[key].as_array().cloned().unwrap_or_default()
    }

    fn names(&self, key: &str) -> Vec<String> {
        let mut n: Vec<String> = self
            .list(key)
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect();
        n.sort();
        n
    }

    fn tcp(&self, name: &str) -> Value {
        self.list("tcp_routes")
            .into_iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no TCP route {name}: {:#}", self.table))
    }

    fn udp(&self, name: &str) -> Value {
        self.list("udp_routes")
            .into_iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no UDP route {name}: {:#}", self.table))
    }

    /// The one warning containing every part.
    fn warning(&self, parts: &[&str]) -> &str {
        self.warnings
            .iter()
            .find(|w| parts.iter().all(|p| w.contains(p)))
            .unwrap_or_else(|| panic!("no warning with {parts:?} in {:#?}", self.warnings))
    }
}

/// `(address, weight)` of a TCP/UDP route's servers.
fn servers(route: &Value) -> Vec<(String, u64)> {
    route["service"]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["address"].as_str().unwrap().to_string(),
                s["weight"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Builds `SCRIPT` over `entries` with the HTTP/TCP entrypoints web, websecure and pg and the
/// UDP entrypoints dns and syslog.
fn build_entries(entries: Vec<CatalogEntry>) -> Outcome {
    let sources = vec![ScriptSource {
        name: "scripts/10-traefik.rhai".into(),
        text: SCRIPT.into(),
    }];
    let eps: Vec<String> = ["web", "websecure", "pg", "dns", "syslog"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut env = script::BuildEnv::new(eps, None);
    env.udp_entrypoints = vec!["dns".into(), "syslog".into()];
    let built = script::build_with(
        &sources,
        &Catalog {
            entries,
            problems: Vec::new(),
        },
        &env,
        &Limits::default(),
        None,
    )
    .unwrap_or_else(|errs| panic!("build failed:\n{}", script::error::render_all(&errs)));
    Outcome {
        table: serde_json::to_value(TableInfo::of(&built.table)).unwrap(),
        warnings: built.warnings.iter().map(|w| w.message.clone()).collect(),
    }
}

fn build(entries: Vec<Value>) -> Outcome {
    build_entries(serde_json::from_value(Value::Array(entries)).unwrap())
}

#[test]
fn tcp_routers_passthrough_terminate_and_catch_all() {
    let out = build(vec![
        container(
            "pg",
            "10.0.1.2",
            &[5432],
            json!({
                "traefik.tcp.routers.pg.rule": "HostSNI(`db.example.com`)",
                "traefik.tcp.routers.pg.entrypoints": "websecure",
                "traefik.tcp.routers.pg.tls.passthrough": "true",
            }),
        ),
        container(
            "mqtt",
            "10.0.1.3",
            &[80],
            json!({
                "traefik.tcp.routers.mqtt.rule": "HostSNI(`mqtt.example.com`) || HostSNI(`m.example.com`)",
                "traefik.tcp.routers.mqtt.entrypoints": "websecure",
                "traefik.tcp.routers.mqtt.tls.certresolver": "le",
                "traefik.tcp.routers.mqtt.tls.options": "modern@file",
                "traefik.tcp.routers.mqtt.tls.domains[0].main": "mqtt.example.com",
                "traefik.tcp.routers.mqtt.tls.domains[0].sans": "m.example.com, n.example.com",
                "traefik.tcp.routers.mqtt.priority": "7",
                "traefik.tcp.services.broker.loadbalancer.server.port": "8883",
            }),
        ),
        container(
            "redis",
            "10.0.1.4",
            &[6379],
            json!({
                "traefik.tcp.routers.cache.rule": "HostSNI(`*`)",
                "traefik.tcp.routers.cache.entrypoints": "pg",
            }),
        ),
        container(
            "terminated",
            "10.0.1.5",
            &[7000],
            json!({
                "traefik.tcp.routers.t.rule": "HostSNI(`t.example.com`)",
                "traefik.tcp.routers.t.tls": "true",
                "traefik.tcp.routers.t.rulesyntax": "v2",
            }),
        ),
    ]);
    assert_eq!(out.warnings, Vec::<String>::new());
    assert_eq!(
        out.names("tcp_routes"),
        ["cache@docker", "mqtt@docker", "pg@docker", "t@docker"]
    );
    // Containers with only TCP labels get no HTTP router or service (Traefik's rule).
    assert_eq!(out.list("routes"), Vec::<Value>::new());

    let pg = out.tcp("pg@docker");
    assert_eq!(pg["tls"], json!({ "mode": "passthrough" }));
    assert_eq!(pg["entrypoints"], json!(["websecure"]));
    assert_eq!(pg["rule"], "HostSNI(`db.example.com`)");
    assert_eq!(pg["priority"], 25, "the rule's length");
    // The default service: named after the container, on its exposed port.
    assert_eq!(pg["service"]["name"], "pg@docker");
    assert_eq!(servers(&pg), [("10.0.1.2:5432".to_string(), 1)]);

    let mqtt = out.tcp("mqtt@docker");
    assert_eq!(
        mqtt["tls"],
        json!({
            "mode": "terminate",
            "resolver": "le",
            "options": "modern",
            "domains": [{ "main": "mqtt.example.com", "sans": ["m.example.com", "n.example.com"] }],
        })
    );
    assert_eq!(mqtt["priority"], 7);
    // The router without a service label uses the container's only service, on its port.
    assert_eq!(mqtt["service"]["name"], "broker@docker");
    assert_eq!(servers(&mqtt), [("10.0.1.3:8883".to_string(), 1)]);

    // HostSNI(`*`) without TLS: cleartext connections; tried last (priority -1) as in Traefik.
    let cache = out.tcp("cache@docker");
    assert!(cache.get("tls").is_none(), "{cache:#}");
    assert_eq!(cache["priority"], -1);
    assert_eq!(cache["entrypoints"], json!(["pg"]));
    assert_eq!(servers(&cache), [("10.0.1.4:6379".to_string(), 1)]);

    // tls=true terminates with the router's certificates; no entrypoints label: every TCP one.
    let t = out.tcp("t@docker");
    assert_eq!(t["tls"], json!({ "mode": "terminate" }));
    assert_eq!(t["entrypoints"], json!([]));
}

#[test]
fn proxy_protocol_middlewares_and_http_beside_tcp() {
    let out = build(vec![
        container(
            "app",
            "10.0.2.2",
            &[8080],
            json!({
                "traefik.http.routers.app.rule": "Host(`app.example.com`)",
                "traefik.http.services.app.loadbalancer.server.port": "8080",
                "traefik.tcp.routers.admin.rule": "HostSNI(`*`) && ClientIP(`10.0.0.0/8`)",
                "traefik.tcp.routers.admin.entrypoints": "pg",
                "traefik.tcp.routers.admin.service": "admin",
                "traefik.tcp.routers.admin.middlewares": "office@docker, few",
                "traefik.tcp.services.admin.loadbalancer.server.port": "9000",
                "traefik.tcp.services.admin.loadbalancer.proxyprotocol.version": "1",
                "traefik.tcp.middlewares.few.inflightconn.amount": "10",
            }),
        ),
        container(
            "db",
            "10.0.2.3",
            &[5432],
            json!({
                "traefik.tcp.routers.db.rule": "HostSNI(`db.example.com`)",
                "traefik.tcp.routers.db.tls": "true",
                "traefik.tcp.routers.db.middlewares": "office",
                "traefik.tcp.services.db.loadbalancer.proxyprotocol": "true",
                "traefik.tcp.services.db.loadbalancer.healthcheck.interval": "5s",
                "traefik.tcp.services.db.loadbalancer.healthcheck.timeout": "2",
                // Declared here, used by both containers' routers.
                "traefik.tcp.middlewares.office.ipallowlist.sourcerange": "10.0.0.0/8, 192.168.1.7",
            }),
        ),
        container(
            "legacy",
            "10.0.2.4",
            &[25],
            json!({
                "traefik.tcp.routers.smtp.rule": "HostSNI(`*`)",
                "traefik.tcp.routers.smtp.middlewares": "old",
                "traefik.tcp.middlewares.old.ipwhitelist.sourcerange": "172.16.0.0/12",
            }),
        ),
    ]);
    assert_eq!(out.warnings, Vec::<String>::new());
    // HTTP labels beside TCP ones: the HTTP router stays.
    assert_eq!(out.names("routes"), ["app@docker"]);

    let admin = out.tcp("admin@docker");
    assert_eq!(admin["service"]["proxy_protocol"], 1);
    assert_eq!(servers(&admin), [("10.0.2.2:9000".to_string(), 1)]);
    assert_eq!(
        admin["middlewares"],
        json!([
            "ip_allow_list([\"10.0.0.0/8\", \"192.168.1.7/32\"])",
            "in_flight_conn(10)"
        ])
    );
    // An explicit priority-less rule other than HostSNI(`*`) alone: its length.
    assert_eq!(admin["priority"], 38);

    let db = out.tcp("db@docker");
    // `proxyprotocol=true` alone is version 2, Traefik's default.
    assert_eq!(db["service"]["proxy_protocol"], 2);
    let health = db["service"]["health_check"].as_str().unwrap();
    assert!(health.contains("5s") && health.contains("2s"), "{health}");

    let smtp = out.tcp("smtp@docker");
    assert_eq!(
        smtp["middlewares"],
        json!(["ip_allow_list([\"172.16.0.0/12\"])"])
    );
}

#[test]
fn udp_routers_one_per_entrypoint() {
    let out = build(vec![
        container(
            "dns",
            "10.0.3.2",
            &[80],
            json!({
                "traefik.udp.routers.dns.entrypoints": "dns",
                "traefik.udp.services.dns.loadbalancer.server.port": "53",
            }),
        ),
        // No entrypoints label: every UDP entrypoint not taken by a router whose name sorts
        // after it (dns is: syslog only).
        container(
            "syslog",
            "10.0.3.3",
            &[514],
            json!({ "traefik.udp.routers.alogs.service": "syslog" }),
        ),
        // A second router on dns: Traefik keeps the one whose name sorts last (dns > dmz).
        container(
            "other",
            "10.0.3.4",
            &[5353],
            json!({ "traefik.udp.routers.dmz.entrypoints": "dns" }),
        ),
    ]);
    assert_eq!(out.names("routes"), Vec::<String>::new());
    assert_eq!(out.names("udp_routes"), ["alogs@docker", "dns@docker"]);
    let dns = out.udp("dns@docker");
    assert_eq!(dns["entrypoints"], json!(["dns"]));
    assert_eq!(servers(&dns), [("10.0.3.2:53".to_string(), 1)]);
    let logs = out.udp("alogs@docker");
    assert_eq!(logs["entrypoints"], json!(["syslog"]));
    assert_eq!(logs["service"]["name"], "syslog@docker");
    assert_eq!(servers(&logs), [("10.0.3.3:514".to_string(), 1)]);
    out.warning(&[
        "UDP router dmz",
        "container \"other_1\"",
        "entrypoint dns already has UDP router dns@docker",
    ]);
    assert_eq!(out.warnings.len(), 1, "{:#?}", out.warnings);
    // A router without entrypoints whose name sorts last takes every UDP entrypoint, as in
    // Traefik: the others are left without one.
    let out = build(vec![
        container(
            "dns",
            "10.0.3.2",
            &[53],
            json!({ "traefik.udp.routers.dns.entrypoints": "dns" }),
        ),
        container(
            "syslog",
            "10.0.3.3",
            &[514],
            json!({ "traefik.udp.routers.zlogs.service": "syslog" }),
        ),
    ]);
    assert_eq!(out.names("udp_routes"), ["zlogs@docker"]);
    assert_eq!(
        out.udp("zlogs@docker")["entrypoints"],
        json!(["dns", "syslog"])
    );
    out.warning(&[
        "UDP router dns",
        "entrypoint dns already has UDP router zlogs@docker",
    ]);
}

#[test]
fn entrypoints_of_the_other_protocol_are_dropped() {
    let out = build(vec![container(
        "mixed",
        "10.0.4.2",
        &[5432],
        json!({
            "traefik.tcp.routers.db.rule": "HostSNI(`*`)",
            "traefik.tcp.routers.db.entrypoints": "pg,dns,nowhere",
            "traefik.udp.routers.u.entrypoints": "web",
            "traefik.udp.services.u.loadbalancer.server.port": "53",
            "traefik.http.routers.h.rule": "Host(`h.example.com`)",
            "traefik.http.routers.h.entrypoints": "web,syslog",
            "traefik.http.routers.h.service": "h",
            "traefik.http.services.h.loadbalancer.server.port": "80",
        }),
    )]);
    assert_eq!(out.tcp("db@docker")["entrypoints"], json!(["pg"]));
    out.warning(&["TCP router db", "[\"dns\"] are UDP entrypoints"]);
    out.warning(&["TCP router db", "[\"nowhere\"] are not configured here"]);
    // The UDP router names only a TCP entrypoint: skipped.
    assert_eq!(out.names("udp_routes"), Vec::<String>::new());
    out.warning(&["UDP router u", "[\"web\"] are not UDP entrypoints"]);
    out.warning(&["UDP router u", "router skipped"]);
    // HTTP routers never land on a UDP entrypoint either.
    assert_eq!(out.names("routes"), ["h@docker"]);
    out.warning(&["router h", "[\"syslog\"] are UDP entrypoints"]);
}

#[test]
fn malformed_labels_skip_only_their_router_or_service() {
    let out = build(vec![container(
        "shop",
        "10.0.5.2",
        &[80],
        json!({
            "traefik.http.routers.web.rule": "Host(`shop.example.com`)",
            "traefik.http.routers.web.service": "web",
            "traefik.http.services.web.loadbalancer.server.port": "80",
            "traefik.tcp.routers.good.rule": "HostSNI(`*`)",
            "traefik.tcp.routers.good.service": "good",
            "traefik.tcp.services.good.loadbalancer.server.port": "5432",
            "traefik.tcp.routers.badport.rule": "HostSNI(`*`)",
            "traefik.tcp.routers.badport.service": "bad",
            "traefik.tcp.services.bad.loadbalancer.server.port": "abc",
            "traefik.tcp.routers.badtls.rule": "HostSNI(`x.example.com`)",
            "traefik.tcp.routers.badtls.service": "good",
            "traefik.tcp.routers.badtls.tls.colour": "red",
            "traefik.tcp.routers.cleartext.rule": "HostSNI(`y.example.com`)",
            "traefik.tcp.routers.cleartext.service": "good",
            "traefik.tcp.routers.norule.service": "good",
            "traefik.tcp.routers.badrule.rule": "HostSNI(`*`) &&",
            "traefik.tcp.routers.badrule.service": "good",
            "traefik.tcp.routers.badmw.rule": "HostSNI(`*`)",
            "traefik.tcp.routers.badmw.service": "good",
            "traefik.tcp.routers.badmw.middlewares": "limit",
            "traefik.tcp.middlewares.limit.inflightconn.amount": "0",
            "traefik.tcp.services.pp.loadbalancer.proxyprotocol.version": "3",
        }),
    )]);
    // Only the sound routers and services are left, HTTP included.
    assert_eq!(out.names("routes"), ["web@docker"]);
    assert_eq!(out.names("tcp_routes"), ["good@docker"]);
    out.warning(&[
        "container \"shop_1\"",
        "label traefik.tcp.services.bad.loadbalancer.server.port",
        "not an integer",
        "TCP service bad skipped",
    ]);
    out.warning(&[
        "container \"shop_1\"",
        "its TCP service bad was skipped",
        "TCP router badport skipped",
    ]);
    out.warning(&[
        "container \"shop_1\"",
        "label traefik.tcp.routers.badtls.tls.colour",
        "unknown TCP router tls option colour",
    ]);
    out.warning(&[
        "label traefik.tcp.routers.cleartext.rule",
        "only sees cleartext connections",
        "TCP router cleartext skipped",
    ]);
    out.warning(&[
        "label traefik.tcp.routers.norule.rule is missing",
        "TCP router norule skipped",
    ]);
    out.warning(&[
        "label traefik.tcp.routers.badrule.rule",
        "TCP router badrule skipped",
    ]);
    out.warning(&[
        "label traefik.tcp.middlewares.limit.inflightconn.amount",
        "TCP middleware limit skipped",
    ]);
    out.warning(&[
        "TCP router badmw",
        "TCP middleware limit is unknown or was dropped",
    ]);
    out.warning(&[
        "label traefik.tcp.services.pp.loadbalancer.proxyprotocol.version",
        "not 1 or 2",
    ]);
}

#[test]
fn services_merge_across_replicas_and_stopped_ones_route_nothing() {
    let replica = |n: u8| {
        container(
            &format!("pg{n}"),
            &format!("10.0.6.{n}"),
            &[5432],
            json!({
                "traefik.tcp.routers.pg.rule": "HostSNI(`*`)",
                "traefik.tcp.routers.pg.entrypoints": "pg",
                "traefik.tcp.routers.pg.service": "pg",
                "traefik.tcp.services.pg.loadbalancer.server.port": "5432",
            }),
        )
    };
    let mut stopped = container(
        "queue",
        "",
        &[],
        json!({ "traefik.tcp.routers.queue.rule": "HostSNI(`*`)", "traefik.tcp.routers.queue.entrypoints": "web" }),
    );
    stopped["container"]["state"] = json!("exited");
    // Running, but no port anywhere: named in the warning, as Traefik's "port is missing".
    let portless = container(
        "portless",
        "10.0.6.9",
        &[],
        json!({ "traefik.tcp.routers.p.rule": "HostSNI(`*`)" }),
    );
    let out = build(vec![replica(1), replica(2), stopped, portless]);
    assert_eq!(out.names("tcp_routes"), ["pg@docker"]);
    assert_eq!(
        servers(&out.tcp("pg@docker")),
        [
            ("10.0.6.1:5432".to_string(), 1),
            ("10.0.6.2:5432".to_string(), 1)
        ]
    );
    out.warning(&[
        "container \"portless_1\"",
        "no port: add traefik.tcp.services.portless.loadbalancer.server.port",
    ]);
    assert_eq!(out.warnings.len(), 2, "{:#?}", out.warnings);
}

/// A Traefik dynamic file's `tcp:` and `udp:` sections through the file provider: explicit
/// server addresses, `tls: {}` and passthrough, weighted services (one server list weighted so
/// each member gets its share), a TCP middleware referenced as `name@file`.
#[test]
fn dynamic_files_declare_tcp_and_udp() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("l4.yml"),
        r#"
tcp:
  routers:
    db:
      entryPoints: [websecure]
      rule: "HostSNI(`db.example.com`)"
      service: db
      middlewares: ["office@file"]
      tls: {}
    pass:
      rule: "HostSNI(`pass.example.com`)"
      service: split
      tls:
        passthrough: true
    plain:
      entryPoints: [pg]
      rule: "HostSNI(`*`)"
      service: db
  services:
    db:
      loadBalancer:
        proxyProtocol:
          version: 2
        servers:
          - address: "10.0.7.2:5432"
          - address: "10.0.7.3:5432"
    blue:
      loadBalancer:
        servers:
          - address: "10.0.7.10:443"
          - address: "10.0.7.11:443"
    green:
      loadBalancer:
        servers:
          - address: "10.0.7.20:443"
    split:
      weighted:
        services:
          - name: blue
            weight: 3
          - name: green
            weight: 1
  middlewares:
    office:
      ipAllowList:
        sourceRange: ["10.0.0.0/8", "127.0.0.1"]
udp:
  routers:
    dns:
      entryPoints: [dns]
      service: dns
  services:
    dns:
      loadBalancer:
        servers:
          - address: "10.0.7.53:53"
          - address: "10.0.7.54:53"
"#,
    )
    .unwrap();
    let catalog = switchyard::providers::traefik_file::load(dir.path()).unwrap();
    let out = build_entries(catalog.entries);
    assert_eq!(out.warnings, Vec::<String>::new());
    assert_eq!(
        out.names("tcp_routes"),
        ["db@file", "pass@file", "plain@file"]
    );
    let db = out.tcp("db@file");
    assert_eq!(db["tls"], json!({ "mode": "terminate" }));
    assert_eq!(db["entrypoints"], json!(["websecure"]));
    assert_eq!(db["service"]["name"], "db@file");
    assert_eq!(db["service"]["proxy_protocol"], 2);
    assert_eq!(
        servers(&db),
        [
            ("10.0.7.2:5432".to_string(), 1),
            ("10.0.7.3:5432".to_string(), 1)
        ]
    );
    assert_eq!(
        db["middlewares"],
        json!(["ip_allow_list([\"10.0.0.0/8\", \"127.0.0.1/32\"])"])
    );
    assert_eq!(out.tcp("plain@file")["priority"], -1);
    let pass = out.tcp("pass@file");
    assert_eq!(pass["tls"], json!({ "mode": "passthrough" }));
    // blue gets 3/4 of the connections over its two servers, green 1/4.
    assert_eq!(
        servers(&pass),
        [
            ("10.0.7.10:443".to_string(), 3),
            ("10.0.7.11:443".to_string(), 3),
            ("10.0.7.20:443".to_string(), 2)
        ]
    );
    let dns = out.udp("dns@file");
    assert_eq!(
        servers(&dns),
        [
            ("10.0.7.53:53".to_string(), 1),
            ("10.0.7.54:53".to_string(), 1)
        ]
    );
    assert_eq!(out.list("routes"), Vec::<Value>::new());
}

/// Runs the binary in `cwd` with no `SWITCHYARD_*`/`TRAEFIK_*` variable inherited.
fn switchyard(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("SWITCHYARD_") || k.starts_with("TRAEFIK_") {
            cmd.env_remove(key);
        }
    }
    let out = cmd
        .env("HOME", cwd)
        .current_dir(cwd)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("cannot start switchyard");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `switchyard check --format json` over a catalog file: the TCP and UDP routes the labels
/// make, and a malformed label's warning with its subject and label.
#[test]
fn check_prints_the_tcp_and_udp_routes_of_labels() {
    let dir = tempfile::tempdir().unwrap();
    let scripts = dir.path().join("scripts");
    std::fs::create_dir(&scripts).unwrap();
    std::fs::write(scripts.join("10-traefik.rhai"), SCRIPT).unwrap();
    let catalog = json!([
        container(
            "pg",
            "10.0.8.2",
            &[5432],
            json!({
                "traefik.tcp.routers.pg.rule": "HostSNI(`*`)",
                "traefik.tcp.routers.pg.entrypoints": "pg",
                "traefik.tcp.services.pg.loadbalancer.proxyprotocol.version": "2",
            }),
        ),
        container(
            "dns",
            "10.0.8.3",
            &[80],
            json!({
                "traefik.udp.routers.dns.entrypoints": "dns",
                "traefik.udp.routers.dns.service": "dns",
                "traefik.udp.services.dns.loadbalancer.server.port": "53",
                "traefik.udp.services.bad.loadbalancer.server.port": "abc",
            }),
        ),
    ]);
    std::fs::write(dir.path().join("catalog.json"), catalog.to_string()).unwrap();
    let (code, out, err) = switchyard(
        dir.path(),
        &[
            "check",
            "--scripts",
            "scripts",
            "--catalog",
            "catalog.json",
            "--entrypoint",
            "web=127.0.0.1:8080",
            "--entrypoint",
            "pg=127.0.0.1:5432",
            "--entrypoint",
            "dns=127.0.0.1:5353/udp",
            "--format",
            "json",
        ],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["routes"], json!([]), "no HTTP default router: {v:#}");
    let tcp = &v["tcp_routes"][0];
    assert_eq!(tcp["name"], "pg@docker");
    assert_eq!(tcp["rule"], "HostSNI(`*`)");
    assert_eq!(tcp["entrypoints"], json!(["pg"]));
    assert_eq!(tcp["service"]["proxy_protocol"], 2);
    assert_eq!(tcp["service"]["servers"][0]["address"], "10.0.8.2:5432");
    let udp = &v["udp_routes"][0];
    assert_eq!(udp["name"], "dns@docker");
    assert_eq!(udp["entrypoints"], json!(["dns"]));
    assert_eq!(udp["service"]["servers"][0]["address"], "10.0.8.3:53");
    let w = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["label"] == "traefik.udp.services.bad.loadbalancer.server.port")
        .unwrap_or_else(|| panic!("{:#}", v["warnings"]));
    assert_eq!(
        w["subject"],
        json!({ "kind": "container", "name": "dns_1" })
    );
}

/// `switchyard traefik --dry-run` with Traefik's UDP and PROXY protocol entrypoint keys: the
/// command line it prints names `dns` as a UDP entrypoint and the trusted PROXY clients.
#[test]
fn traefik_static_udp_entrypoint_and_proxy_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = switchyard(
        dir.path(),
        &[
            "traefik",
            "--dry-run",
            "--providers.docker",
            "--entrypoints.web.address=:80",
            "--entrypoints.web.proxyProtocol.trustedIPs=10.0.0.1,10.1.0.0/16",
            "--entrypoints.dns.address=:53/udp",
            "--entrypoints.dns.udp.timeout=30s",
        ],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    for want in [
        "--entrypoint=dns=0.0.0.0:53/udp",
        "--entrypoint.dns.udp.timeout=30s",
        "--entrypoint.web.proxy-protocol.trusted-ips=10.0.0.1,10.1.0.0/16",
    ] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    assert!(
        !out.contains("--entrypoint.dns.tls") && !out.contains("--entrypoint.dns.h2c"),
        "{out}"
    );
}

/// A catch-all TCP router from labels carries real connections: an HTTP request sent through
/// the `pg` entrypoint reaches the whoami backend byte for byte.
#[tokio::test]
async fn a_catch_all_tcp_router_carries_connections() {
    let be = Backend::start("tcp-be").await;
    let entry = container(
        "echo",
        "127.0.0.1",
        &[be.addr.port()],
        json!({
            "traefik.tcp.routers.echo.rule": "HostSNI(`*`)",
            "traefik.tcp.routers.echo.entrypoints": "pg",
        }),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("catalog.json");
    std::fs::write(&file, json!([entry]).to_string()).unwrap();
    let r = TestRouter::start_with(&[("10-traefik.rhai", SCRIPT)], |cfg| {
        cfg.catalog = Some(file.clone());
        cfg.entrypoints
            .push(("pg".into(), "127.0.0.1:0".parse().unwrap()));
    })
    .await;
    let pg = r.entrypoint("pg");
    let reply = raw(
        pg,
        b"GET /through-tcp HTTP/1.1\r\nHost: any\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("GET /through-tcp "), "{reply}");
    // The HTTP entrypoint has no route for it: only the TCP router was made.
    assert_eq!(get(r.web, "echo", "/").await.status, 404);
    r.shutdown().await;
}

/// Kills the router process it holds when dropped.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Traefik's own configuration, run as is: a `/udp` entrypoint and a dynamic file's `udp:`
/// section relay datagrams to a UDP echo server and back.
#[tokio::test]
async fn traefik_mode_relays_udp_from_a_dynamic_file() {
    let echo = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..n], from).await;
        }
    });
    let udp_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let web_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("dynamic.yml"),
        format!(
            "udp:\n  routers:\n    dns:\n      entryPoints: [dns]\n      service: dns\n  services:\n    dns:\n      loadBalancer:\n        servers:\n          - address: \"{echo_addr}\"\n"
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("SWITCHYARD_") || k.starts_with("TRAEFIK_") {
            cmd.env_remove(key);
        }
    }
    let _router = Proc(
        cmd.env("HOME", dir.path())
            .current_dir(dir.path())
            .args([
                format!("--entrypoints.web.address=127.0.0.1:{web_port}"),
                format!("--entrypoints.dns.address=127.0.0.1:{udp_port}/udp"),
                "--entrypoints.dns.udp.timeout=5s".to_string(),
                "--providers.file.filename=dynamic.yml".to_string(),
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("cannot start switchyard"),
    );
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(("127.0.0.1", udp_port)).await.unwrap();
    // Until the router is up and its UDP route built (bounded): a datagram, then its echo.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut buf = [0u8; 64];
    let answer = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no echo through the UDP entrypoint"
        );
        let _ = client.send(b"ping").await;
        if let Ok(Ok(n)) =
            tokio::time::timeout(std::time::Duration::from_millis(250), client.recv(&mut buf)).await
        {
            break buf[..n].to_vec();
        }
    };
    assert_eq!(answer, b"ping");
}
