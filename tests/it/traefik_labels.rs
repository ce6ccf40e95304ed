//! The `traefik` stdlib module: Traefik labels (v1 and v2/v3) of catalog entries become routes,
//! services and middlewares. Fixtures are catalog entries shaped like the Docker provider's
//! output for the compose and stack files of the seed articles (000, 003, 004), checked through
//! the route table; the last tests send real requests to whoami backends behind the labels.

use serde_json::{json, Value};
use switchyard::catalog::{Catalog, CatalogEntry};
use switchyard::routing::TableInfo;
use switchyard::script::{self, Limits, ScriptSource};

use crate::support::*;

const SCRIPT: &str = "import \"traefik\" as t;\nt::routes(catalog);\n";

/// A container entry as the Docker provider reports it: `address` on its network, the exposed
/// `ports`, and `servers` resolved from them (empty when the container is not serving).
fn container(
    name: &str,
    container: &str,
    provider: &str,
    address: &str,
    servers: &[&str],
    labels: Value,
) -> Value {
    json!({
        "name": name,
        "provider": provider,
        "labels": labels,
        "servers": servers,
        "container": {
            "id": format!("{container}-id"),
            "name": container,
            "state": "running",
            "network_mode": "bridge",
            "networks": { "net": address },
            "ports": [80],
            "address": address,
        }
    })
}

struct Outcome {
    table: Value,
    warnings: Vec<String>,
}

impl Outcome {
    fn route(&self, name: &str) -> &Value {
        self.table["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no route {name}: {:#}", self.table["routes"]))
    }

    fn has_route(&self, name: &str) -> bool {
        self.table["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == name)
    }

    fn service(&self, name: &str) -> &Value {
        self.table["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no service {name}: {:#}", self.table["services"]))
    }

    fn servers(&self, name: &str) -> Vec<String> {
        self.service(name)["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["address"].as_str().unwrap().to_string())
            .collect()
    }

    fn route_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.table["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }

    /// The one warning containing every part.
    fn warning(&self, parts: &[&str]) -> &str {
        self.warnings
            .iter()
            .find(|w| parts.iter().all(|p| w.contains(p)))
            .unwrap_or_else(|| panic!("no warning with {parts:?} in {:#?}", self.warnings))
    }
}

fn build_with_script(script: &str, entries: Vec<Value>) -> Outcome {
    build_env(script, entries, None)
}

/// `build_with_script` on a router whose admin API listens on `admin`.
fn build_env(script: &str, entries: Vec<Value>, admin: Option<&str>) -> Outcome {
    let entries: Vec<CatalogEntry> = serde_json::from_value(Value::Array(entries)).unwrap();
    let sources = vec![ScriptSource {
        name: "scripts/10-traefik.rhai".into(),
        text: script.into(),
    }];
    let eps = vec!["web".to_string(), "admin".to_string()];
    let env = script::BuildEnv::new(eps, admin.map(|a| a.parse().unwrap()));
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

fn build_labels(entries: Vec<Value>) -> Outcome {
    build_with_script(SCRIPT, entries)
}

/// Seed 003: a Swarm stack of two replicas with v1 labels, sticky by cookie, `Method:` rule.
#[test]
fn seed_003_v1_sticky_replicas_with_a_method_rule() {
    let labels = json!({
        "traefik.backend.loadbalancer.sticky": "true",
        "traefik.docker.network": "mystack_net",
        "traefik.port": "8080",
        "traefik.frontend.rule": "Method: GET, POST, PUT",
    });
    let out = build_labels(vec![
        container(
            "app-mystack",
            "mystack_app.1.x1",
            "swarm",
            "10.0.1.2",
            &["10.0.1.2:8080"],
            labels.clone(),
        ),
        container(
            "app-mystack",
            "mystack_app.2.x2",
            "swarm",
            "10.0.1.3",
            &["10.0.1.3:8080"],
            labels,
        ),
    ]);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    assert_eq!(out.route_names(), vec!["app-mystack@swarm"]);
    let r = out.route("app-mystack@swarm");
    assert_eq!(
        r["rule"],
        "Method(`GET`) || Method(`POST`) || Method(`PUT`)"
    );
    assert_eq!(r["target"]["service"], "app-mystack@swarm");
    assert_eq!(
        out.servers("app-mystack@swarm"),
        vec!["10.0.1.2:8080", "10.0.1.3:8080"]
    );
    let cookie = out.service("app-mystack@swarm")["sticky_cookie"]
        .as_str()
        .unwrap();
    assert!(cookie.starts_with('_') && cookie.len() == 6, "{cookie}");
}

/// Seed 000: `traefik.backend` names the service (containers sharing it share a service),
/// `traefik.port` picks the port, `Path: /` and `Host:...;PathPrefixStrip:` rules translate.
#[test]
fn seed_000_v1_backend_port_and_frontend_rules() {
    let cats = json!({
        "traefik.docker.network": "app-entry",
        "traefik.backend": "cats",
        "traefik.frontend.rule": "Path: /",
        "traefik.port": "5000",
    });
    let out = build_labels(vec![
        container(
            "cats-app",
            "app_cats.1",
            "swarm",
            "10.0.2.2",
            &["10.0.2.2:80"],
            cats.clone(),
        ),
        container(
            "cats-app",
            "app_cats.2",
            "swarm",
            "10.0.2.3",
            &["10.0.2.3:80"],
            cats,
        ),
        container(
            "shop",
            "shop_1",
            "docker",
            "10.0.2.9",
            &["10.0.2.9:80"],
            json!({
                "traefik.frontend.rule": "Host:shop.example.com,www.shop.example.com;PathPrefixStrip:/api,/api/v1",
                "traefik.port": "9000",
                "traefik.frontend.entryPoints": "web",
                "traefik.frontend.priority": "42",
                "traefik.frontend.passHostHeader": "false",
                "traefik.backend.loadbalancer.stickiness": "true",
                "traefik.backend.loadbalancer.stickiness.cookieName": "shopsrv",
            }),
        ),
    ]);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let r = out.route("cats-app@swarm");
    assert_eq!(r["rule"], "Path(`/`)");
    assert_eq!(r["target"]["service"], "cats@swarm");
    assert_eq!(
        out.servers("cats@swarm"),
        vec!["10.0.2.2:5000", "10.0.2.3:5000"]
    );

    let r = out.route("shop@docker");
    assert_eq!(
        r["rule"],
        "(Host(`shop.example.com`) || Host(`www.shop.example.com`)) && (PathPrefix(`/api`) || PathPrefix(`/api/v1`))"
    );
    assert_eq!(
        r["middlewares"],
        json!(["strip_prefix([\"/api/v1\", \"/api\"])"])
    );
    assert_eq!(r["entrypoints"], json!(["web"]));
    assert_eq!(r["priority"], 42);
    let s = out.service("shop@docker");
    assert_eq!(s["sticky_cookie"], "shopsrv");
    assert_eq!(s["pass_host_header"], false);
    assert_eq!(out.servers("shop@docker"), vec!["10.0.2.9:9000"]);
}

#[test]
fn v1_modifiers_and_matchers_translate() {
    let out = build_labels(vec![container(
        "legacy",
        "legacy_1",
        "docker",
        "10.0.3.2",
        &["10.0.3.2:80"],
        json!({
            "traefik.frontend.rule": "PathStrip:/old;AddPrefix:/v2;Headers: X-Api, 1;Query: a=b",
        }),
    )]);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let r = out.route("legacy@docker");
    assert_eq!(
        r["rule"],
        "Path(`/old`) && Header(`x-api`, `1`) && Query(`a`, `b`)"
    );
    assert_eq!(
        r["middlewares"],
        json!(["strip_prefix([\"/old\"])", "add_prefix(\"/v2\")"])
    );
}

/// Seed 004: v2 routers, services and middlewares; sticky cookie options; `replacepath` on
/// `/wsk`; a `middleware@docker` reference; the service's port label.
#[test]
fn seed_004_v2_router_service_middleware() {
    let labels = json!({
        "traefik.http.routers.socket-router.rule": "PathPrefix(`/wsk`)",
        "traefik.http.services.service01.loadbalancer.server.port": "5000",
        "traefik.http.services.service01.loadbalancer.sticky.cookie": "true",
        "traefik.http.services.service01.loadbalancer.sticky.cookie.name": "io",
        "traefik.http.services.service01.loadbalancer.sticky.cookie.httponly": "true",
        "traefik.http.services.service01.loadbalancer.sticky.cookie.secure": "true",
        "traefik.http.services.service01.loadbalancer.sticky.cookie.samesite": "io",
        "traefik.http.middlewares.socket-replaceprefix.replacepath.path": "/",
        "traefik.http.routers.socket-router.middlewares": "socket-replaceprefix@docker",
    });
    let out = build_labels(vec![
        container(
            "socket-server-wsk",
            "wsk_socket-server_1",
            "docker",
            "10.0.4.2",
            &["10.0.4.2:80"],
            labels.clone(),
        ),
        container(
            "socket-server-wsk",
            "wsk_socket-server_2",
            "docker",
            "10.0.4.3",
            &["10.0.4.3:80"],
            labels,
        ),
    ]);
    assert_eq!(out.route_names(), vec!["socket-router@docker"]);
    let r = out.route("socket-router@docker");
    assert_eq!(r["rule"], "PathPrefix(`/wsk`)");
    assert_eq!(r["middlewares"], json!(["replace_path(\"/\")"]));
    assert_eq!(r["target"]["service"], "service01@docker");
    assert_eq!(
        out.servers("service01@docker"),
        vec!["10.0.4.2:5000", "10.0.4.3:5000"]
    );
    assert_eq!(out.service("service01@docker")["sticky_cookie"], "io");
    // `samesite=io` is not a SameSite value: ignored as Traefik does, with a warning.
    out.warning(&["wsk_socket-server_1", "sticky.cookie.samesite", "ignored"]);
}

/// The HTTP→HTTPS pair every Traefik TLS stack has: a cleartext router that redirects and a
/// `tls` router for the same host. Each serves only its own transport, so the redirect cannot
/// loop; `tls.*` options are kept on the route for the certificate resolver.
#[test]
fn v2_tls_routers_serve_tls_only_and_keep_their_options() {
    let labels = json!({
        "traefik.http.routers.app-http.rule": "Host(`app.test`)",
        "traefik.http.routers.app-http.middlewares": "to-https",
        "traefik.http.middlewares.to-https.redirectscheme.scheme": "https",
        "traefik.http.routers.app.rule": "Host(`app.test`)",
        "traefik.http.routers.app.tls": "true",
        "traefik.http.routers.app.tls.certresolver": "le",
        "traefik.http.routers.app.tls.options": "modern@file",
        "traefik.http.routers.app.tls.domains[0].main": "app.test",
        "traefik.http.routers.app.tls.domains[0].sans": "www.app.test,api.app.test",
        "traefik.http.routers.app.middlewares": "client-cert",
        "traefik.http.middlewares.client-cert.passtlsclientcert.pem": "true",
        "traefik.http.middlewares.client-cert.passtlsclientcert.info.notafter": "true",
        "traefik.http.middlewares.client-cert.passtlsclientcert.info.subject.commonname": "true",
        "traefik.http.routers.other.rule": "Host(`other.test`)",
        "traefik.http.routers.other.tls.certresolver": "le",
        "traefik.http.services.app.loadbalancer.server.port": "80",
        "traefik.http.services.app.loadbalancer.server.scheme": "h2c",
    });
    let mut entry = container(
        "app",
        "app_1",
        "docker",
        "10.0.0.2",
        &["10.0.0.2:80"],
        labels,
    );
    entry["container"]["ports"] = json!([80]);
    let out = build_labels(vec![entry]);
    let app = out.route("app@docker");
    assert_eq!(
        app["tls"],
        json!({"options": "modern", "resolver": "le", "domains": [{"main": "app.test", "sans": ["www.app.test", "api.app.test"]}]})
    );
    assert_eq!(
        app["middlewares"],
        json!(["pass_tls_client_cert(pem, subject, not_after)"])
    );
    assert_eq!(out.route("app-http@docker")["cleartext"], true);
    assert!(out.route("app-http@docker").get("tls").is_none());
    // `server.scheme=h2c` speaks HTTP/2 with prior knowledge to the servers (gRPC).
    assert_eq!(out.servers("app@docker"), vec!["h2c://10.0.0.2:80"]);
    // Any tls.* label makes a TLS router, as in Traefik.
    assert_eq!(out.route("other@docker")["tls"], json!({"resolver": "le"}));
}

#[test]
fn v2_options_case_insensitive_names_and_shared_middlewares() {
    let out = build_labels(vec![
        container(
            "mw",
            "mw_1",
            "docker",
            "10.0.5.2",
            &["10.0.5.2:80"],
            json!({
                "traefik.http.routers.mw.rule": "Path(`/mw`)",
                "traefik.http.middlewares.auth.basicauth.users": "test:$apr1$H6uskkkW$IgXLP6ewTrSuBkTrqE8wj/",
                "traefik.http.middlewares.hdr.headers.customRequestHeaders.X-Script": "yes",
                "traefik.http.middlewares.rl.ratelimit.average": "100",
                "traefik.http.middlewares.rl.ratelimit.burst": "50",
                "traefik.http.middlewares.cmp.compress": "true",
                "traefik.http.middlewares.both.chain.middlewares": "rl@docker,cmp",
                "traefik.http.middlewares.ip.ipwhitelist.sourcerange": "127.0.0.1/32, 10.0.0.0/8",
                "traefik.http.middlewares.err.errors.status": "500-599",
                "traefik.http.middlewares.err.errors.service": "api@docker",
                "traefik.http.middlewares.rs.redirectscheme.scheme": "https",
                "traefik.http.middlewares.rs.redirectscheme.permanent": "true",
            }),
        ),
        container(
            "api",
            "api_1",
            "docker",
            "10.0.5.3",
            &["10.0.5.3:80"],
            json!({
                "Traefik.HTTP.Routers.API.Rule": "Host(`api.example.com`)",
                "traefik.http.routers.api.middlewares": "auth@docker, hdr@swarm, both, ip@file, err, rs",
                "traefik.http.routers.api.entrypoints": "web,websecure",
                "traefik.http.routers.api.priority": "5",
                "traefik.http.services.api.loadbalancer.server.port": "8080",
                "traefik.http.services.api.loadbalancer.healthcheck.path": "/health",
                "traefik.http.services.api.loadbalancer.healthcheck.interval": "5s",
                "traefik.http.services.api.loadbalancer.passhostheader": "false",
            }),
        ),
    ]);
    let r = out.route("api@docker");
    assert_eq!(r["rule"], "Host(`api.example.com`)");
    assert_eq!(r["entrypoints"], json!(["web"]));
    assert_eq!(r["priority"], 5);
    let mws: Vec<&str> = r["middlewares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert_eq!(mws.len(), 6, "{mws:?}");
    assert!(mws[0].starts_with("basic_auth(users: test"), "{mws:?}");
    assert!(mws[1].starts_with("request_headers"), "{mws:?}");
    assert_eq!(mws[2], "chain(\"both\")");
    assert!(mws[3].starts_with("ip_allow_list"), "{mws:?}");
    assert!(
        mws[4].contains("api@docker"),
        "errors page service resolved: {mws:?}"
    );
    assert!(mws[5].starts_with("redirect_scheme"), "{mws:?}");
    let s = out.service("api@docker");
    assert_eq!(s["pass_host_header"], false);
    assert!(
        s["health_check"]
            .as_str()
            .unwrap()
            .contains("/health every 5s"),
        "{s}"
    );
    assert_eq!(out.servers("api@docker"), vec!["10.0.5.3:8080"]);
    // `websecure` is not an entrypoint here: dropped with a warning, `web` kept.
    out.warning(&["router api", "api_1", "websecure"]);
}

#[test]
fn defaults_name_router_and_service_after_the_entry() {
    let out = build_labels(vec![
        json!({ "name": "plain", "servers": ["10.0.6.2:80"] }),
        json!({ "name": "My_App.web", "servers": ["10.0.6.3:80"] }),
        container("stopped", "stopped_1", "docker", "", &[], json!({})),
        container(
            "hidden",
            "hidden_1",
            "docker",
            "10.0.6.4",
            &["10.0.6.4:80"],
            json!({ "traefik.enable": "false" }),
        ),
    ]);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    assert_eq!(
        out.route_names(),
        vec!["My_App.web@file", "plain@file", "stopped@docker"]
    );
    assert_eq!(out.route("plain@file")["rule"], "Host(`plain`)");
    assert_eq!(out.route("My_App.web@file")["rule"], "Host(`my-app-web`)");
    // No servers: the route stays and answers 503.
    assert_eq!(out.route("stopped@docker")["target"]["servers"], json!([]));
    assert_eq!(out.servers("plain@file"), vec!["10.0.6.2:80"]);
}

#[test]
fn options_default_rule_and_exposure() {
    let script = r#"
        import "traefik" as t;
        let names = t::routes(catalog, #{
            default_rule: "Host(`{{ normalize .Name }}.localhost`) || Host(`{{ index .Labels \"alias\" }}`)",
            exposed_by_default: false,
            entrypoints: ["web"],
            rule_syntax: "v2",
        });
        if names != ["on@file"] { throw `declared ${names}`; }
    "#;
    let out = build_with_script(
        script,
        vec![
            json!({ "name": "on", "labels": { "traefik.enable": "true", "alias": "on.example.com" }, "servers": ["10.0.7.2:80"] }),
            json!({ "name": "off", "servers": ["10.0.7.3:80"] }),
        ],
    );
    let r = out.route("on@file");
    assert_eq!(r["rule"], "Host(`on.localhost`) || Host(`on.example.com`)");
    assert_eq!(r["entrypoints"], json!(["web"]));
    assert!(!out.has_route("off@file"));
}

/// Every malformed label is a warning naming the container and the label; that container is
/// skipped and the others keep routing.
#[test]
fn malformed_labels_skip_only_their_container() {
    let good = container(
        "good",
        "good_1",
        "docker",
        "10.0.8.2",
        &["10.0.8.2:80"],
        json!({
            "traefik.http.routers.good.rule": "Host(`good.example.com`)",
        }),
    );
    let bad = |name: &str, labels: Value| {
        container(
            name,
            &format!("{name}_1"),
            "docker",
            "10.0.8.9",
            &["10.0.8.9:80"],
            labels,
        )
    };
    let out = build_labels(vec![
        good,
        bad(
            "badrule",
            json!({ "traefik.http.routers.r1.rule": "Host(`x" }),
        ),
        bad(
            "badport",
            json!({ "traefik.http.services.s2.loadbalancer.server.port": "http" }),
        ),
        bad(
            "badregex",
            json!({ "traefik.http.middlewares.m3.stripprefixregex.regex": "(" }),
        ),
        bad(
            "badtype",
            json!({ "traefik.http.middlewares.m4.teleport.where": "mars" }),
        ),
        bad(
            "badopt",
            json!({ "traefik.http.routers.r5.rule": "Path(`/`)", "traefik.http.routers.r5.colour": "red" }),
        ),
        bad(
            "https",
            json!({ "traefik.http.services.s6.loadbalancer.server.scheme": "ftp" }),
        ),
        bad(
            "dashboard",
            json!({ "traefik.http.routers.r7.service": "noop@internal" }),
        ),
        bad("badv1", json!({ "traefik.frontend.rule": "Hots:a.com" })),
        bad(
            "badsticky",
            json!({ "traefik.http.services.s9.loadbalancer.sticky.cookie.secure": "maybe" }),
        ),
        bad("badbool", json!({ "traefik.enable": "yes" })),
    ]);
    assert_eq!(out.route_names(), vec!["good@docker"]);
    out.warning(&["badrule_1", "traefik.http.routers.r1.rule", "invalid rule"]);
    out.warning(&[
        "badport_1",
        "traefik.http.services.s2.loadbalancer.server.port",
        "not an integer",
    ]);
    out.warning(&[
        "badregex_1",
        "traefik.http.middlewares.m3.stripprefixregex.regex",
    ]);
    out.warning(&[
        "badtype_1",
        "traefik.http.middlewares.m4.teleport.where",
        "not supported",
    ]);
    out.warning(&[
        "badopt_1",
        "traefik.http.routers.r5.colour",
        "unknown router option",
    ]);
    out.warning(&["https_1", "server.scheme", "https"]);
    out.warning(&[
        "dashboard_1",
        "traefik.http.routers.r7.service",
        "noop@internal",
    ]);
    out.warning(&["badv1_1", "traefik.frontend.rule", "Hots"]);
    out.warning(&["badsticky_1", "sticky.cookie.secure", "maybe"]);
    out.warning(&["badbool_1", "traefik.enable"]);
    assert_eq!(out.warnings.len(), 10, "{:#?}", out.warnings);
}

/// `service=api@internal` (the dashboard labels of the Swarm articles) routes to the router's own
/// admin API; with the admin API off the router is skipped with a warning saying why.
#[test]
fn api_internal_routes_to_the_admin_listener() {
    let labels = json!({
        "traefik.http.routers.dashboard.rule": "Host(`proxy.localhost`)",
        "traefik.http.routers.dashboard.service": "api@internal",
        "traefik.http.services.dashboard.loadbalancer.server.port": "8081",
    });
    let entry = || {
        vec![container(
            "proxy",
            "proxy_1",
            "swarm",
            "127.0.0.1",
            &["127.0.0.1:8081"],
            labels.clone(),
        )]
    };
    let on = build_env(SCRIPT, entry(), Some("0.0.0.0:18081"));
    let route = on.table["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "dashboard@swarm")
        .cloned()
        .unwrap_or_else(|| panic!("no dashboard route: {}", on.table));
    assert_eq!(route["target"]["service"], "api@internal", "{route}");
    // All interfaces → the loopback address the router itself can reach.
    assert_eq!(
        route["target"]["servers"],
        json!(["127.0.0.1:18081"]),
        "{route}"
    );
    assert!(on.warnings.is_empty(), "{:#?}", on.warnings);

    let off = build_env(SCRIPT, entry(), None);
    assert!(!off.route_names().iter().any(|n| n.starts_with("dashboard")));
    off.warning(&["router dashboard", "proxy_1", "api@internal", "admin API"]);
}

#[test]
fn references_merges_and_conflicts() {
    let out = build_labels(vec![
        container(
            "x1",
            "x1_1",
            "docker",
            "10.0.9.1",
            &["10.0.9.1:80"],
            json!({
                "traefik.http.routers.same.rule": "Host(`a.example.com`)",
                "traefik.http.middlewares.dup.addprefix.prefix": "/one",
            }),
        ),
        container(
            "x2",
            "x2_1",
            "docker",
            "10.0.9.2",
            &["10.0.9.2:80"],
            json!({
                "traefik.http.routers.same.rule": "Host(`b.example.com`)",
                "traefik.http.middlewares.dup.addprefix.prefix": "/two",
            }),
        ),
        container(
            "user",
            "user_1",
            "docker",
            "10.0.9.3",
            &["10.0.9.3:80"],
            json!({
                "traefik.http.routers.user.rule": "Host(`user.example.com`)",
                "traefik.http.routers.user.middlewares": "dup",
            }),
        ),
        container(
            "missing",
            "missing_1",
            "docker",
            "10.0.9.4",
            &["10.0.9.4:80"],
            json!({
                "traefik.http.routers.missing.rule": "Host(`missing.example.com`)",
                "traefik.http.routers.missing.middlewares": "nowhere@docker",
            }),
        ),
        container(
            "two",
            "two_1",
            "docker",
            "10.0.9.5",
            &["10.0.9.5:80"],
            json!({
                "traefik.http.routers.two.rule": "Host(`two.example.com`)",
                "traefik.http.services.first.loadbalancer.server.port": "81",
                "traefik.http.services.second.loadbalancer.server.port": "82",
            }),
        ),
        container(
            "other",
            "other_1",
            "docker",
            "10.0.9.6",
            &["10.0.9.6:80"],
            json!({
                "traefik.http.routers.other.rule": "Host(`other.example.com`)",
                "traefik.http.routers.other.service": "first@docker",
            }),
        ),
    ]);
    out.warning(&["router same", "x1_1", "x2_1", "dropped"]);
    out.warning(&["middleware dup", "x1_1", "x2_1", "dropped"]);
    out.warning(&["router user", "user_1", "dup"]);
    out.warning(&["router missing", "missing_1", "nowhere"]);
    out.warning(&["router two", "two_1", "several services"]);
    // A router may use a service another container declares.
    assert_eq!(
        out.route("other@docker")["target"]["service"],
        "first@docker"
    );
    assert_eq!(out.servers("first@docker"), vec!["10.0.9.5:81"]);
    assert_eq!(out.route_names(), vec!["other@docker"]);
}

#[test]
fn shipped_default_script_routes_catalog_entries_by_default_rule() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let sources = script::load_dir(&dir).unwrap();
    let entries: Vec<CatalogEntry> = serde_json::from_value(json!([
        { "name": "whoami-demo", "servers": ["127.0.0.1:9001"] },
        { "name": "legacy", "labels": { "traefik.frontend.rule": "Host:legacy.localhost" }, "servers": ["127.0.0.1:9002"] },
    ]))
    .unwrap();
    let built = script::build(
        &sources,
        &Catalog {
            entries,
            problems: Vec::new(),
        },
        &["web".into()],
        &Limits::default(),
    )
    .unwrap_or_else(|errs| panic!("{}", script::error::render_all(&errs)));
    let info = serde_json::to_value(TableInfo::of(&built.table)).unwrap();
    let rule_of = |name: &str| {
        info["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| r["rule"].clone())
    };
    assert_eq!(
        rule_of("whoami-demo@file"),
        Some(json!("Host(`whoami-demo`)"))
    );
    assert_eq!(
        rule_of("legacy@file"),
        Some(json!("Host(`legacy.localhost`)"))
    );
    assert!(rule_of("welcome").is_some());
}

/// Real whoami backends behind labels: two replicas of one compose service (v2 labels: a
/// router by Host and path prefix, a stripprefix middleware, a sticky cookie) and a v1 entry.
#[tokio::test]
async fn labels_route_real_requests_and_sticky_cookies_stick() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let legacy = Backend::start("legacy").await;
    let replica = |be: &Backend, n: u8| {
        let port = be.addr.port().to_string();
        let mut e = container(
            "shop-demo",
            &format!("demo_shop_{n}"),
            "docker",
            "127.0.0.1",
            &[&be.addr.to_string()],
            json!({
                "traefik.http.routers.shop.rule": "Host(`shop.test`) && PathPrefix(`/api`)",
                "traefik.http.routers.shop.middlewares": "strip-api@docker",
                "traefik.http.middlewares.strip-api.stripprefix.prefixes": "/api",
                "traefik.http.services.shop.loadbalancer.server.port": port,
                "traefik.http.services.shop.loadbalancer.sticky.cookie.name": "shop_srv",
                "traefik.http.services.shop.loadbalancer.sticky.cookie.httponly": "true",
                "traefik.http.services.shop.loadbalancer.sticky.cookie.secure": "true",
            }),
        );
        e["container"]["ports"] = json!([be.addr.port()]);
        e
    };
    let mut old = container(
        "legacy",
        "legacy_1",
        "docker",
        "127.0.0.1",
        &[&legacy.addr.to_string()],
        json!({
            "traefik.frontend.rule": "Host:legacy.test;PathPrefixStrip:/old",
            "traefik.port": legacy.addr.port().to_string(),
        }),
    );
    old["container"]["ports"] = json!([legacy.addr.port()]);
    let catalog = serde_json::to_string(&json!([replica(&a, 1), replica(&b, 2), old])).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("catalog.json");
    std::fs::write(&file, catalog).unwrap();
    let r = TestRouter::start_with(&[("10-traefik.rhai", SCRIPT)], |cfg| {
        cfg.catalog = Some(file.clone())
    })
    .await;

    // Host and path as the labels say; the prefix is stripped before the backend sees it.
    let first = get(r.web, "shop.test", "/api/cart").await;
    assert_eq!(first.status, 200, "{first:?}");
    assert!(first.body.contains("GET /cart "), "{}", first.body);
    assert_eq!(get(r.web, "shop.test", "/cart").await.status, 404);
    assert_eq!(get(r.web, "other.test", "/api/cart").await.status, 404);

    // The sticky cookie pins the client to the replica that answered first.
    let set = first.header("set-cookie").unwrap().to_string();
    assert!(set.starts_with("shop_srv="), "{set}");
    assert!(set.contains("HttpOnly") && set.contains("Secure"), "{set}");
    let pinned = first.backend().unwrap().to_string();
    let cookie = set.split(';').next().unwrap().to_string();
    for _ in 0..10 {
        let again = send(
            r.web,
            "GET",
            "shop.test",
            "/api/x",
            &[("cookie", &cookie)],
            "",
        )
        .await;
        assert_eq!(again.backend(), Some(pinned.as_str()));
    }
    // Without the cookie both replicas serve.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10 {
        seen.insert(
            get(r.web, "shop.test", "/api/x")
                .await
                .backend()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(seen.len(), 2, "{seen:?}");

    // The v1 entry: Host + PathPrefixStrip.
    let old = get(r.web, "legacy.test", "/old/page").await;
    assert_eq!(old.backend(), Some("legacy"));
    assert!(old.body.contains("GET /page "), "{}", old.body);
    r.shutdown().await;
}

#[test]
fn label_values_name_routers_services_and_middlewares_case_insensitively() {
    // Traefik reads `…routers.Router1.service=Service1` whatever the case of either side.
    let cases = [
        ("Service1", "Auth", "Chain1"),
        ("SERVICE1", "AUTH@docker", "chain1@docker"),
        ("service1", "auth", "CHAIN1"),
    ];
    for (service, mw, chain) in cases {
        let out = build_labels(vec![container(
            "app",
            "app_1",
            "docker",
            "10.0.6.2",
            &["10.0.6.2:80"],
            json!({
                "traefik.http.routers.Router1.rule": "Host(`a.example.com`)",
                "traefik.http.routers.Router1.service": service,
                "traefik.http.routers.Router1.middlewares": format!("{mw},{chain}"),
                "traefik.http.services.Service1.loadbalancer.server.port": "8080",
                "traefik.http.middlewares.Auth.basicauth.users": "test:$apr1$H6uskkkW$IgXLP6ewTrSuBkTrqE8wj/",
                "traefik.http.middlewares.Chain1.chain.middlewares": "Auth",
                "traefik.http.middlewares.Err.errors.status": "500-599",
                "traefik.http.middlewares.Err.errors.service": service,
            }),
        )]);
        assert!(
            out.warnings.is_empty(),
            "{service} {mw} {chain}: {:?}",
            out.warnings
        );
        let r = out.route("router1@docker");
        assert_eq!(r["rule"], "Host(`a.example.com`)", "{service}");
        assert_eq!(
            r["middlewares"].as_array().map(Vec::len),
            Some(2),
            "{service} {mw} {chain}: {r:#}"
        );
    }
}

#[test]
fn sticky_cookie_names_are_traefiks() {
    let svc = |name: &str| {
        let mut labels = json!({
            "traefik.http.routers.whoami.rule": "Host(`w.example.com`)",
            "traefik.http.services.whoami.loadbalancer.server.port": "80",
            "traefik.http.services.whoami.loadbalancer.sticky.cookie": "true",
        });
        if !name.is_empty() {
            labels["traefik.http.services.whoami.loadbalancer.sticky.cookie.name"] = json!(name);
        }
        let out = build_labels(vec![container(
            "whoami",
            "whoami_1",
            "docker",
            "10.0.7.2",
            &["10.0.7.2:80"],
            labels,
        )]);
        assert!(out.warnings.is_empty(), "{name}: {:?}", out.warnings);
        out.service("whoami@docker")["sticky_cookie"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Invalid characters become `_` (Traefik's sanitizeName), never an error.
    assert_eq!(svc("my cookie;v=1"), "my_cookie_v_1");
    assert_eq!(svc("session.id"), "session.id");
    // No name: Traefik's generated one for service whoami@docker
    // ("_" + sha1("_TRAEFIK_BACKEND_whoami@docker") in hex, 6 characters).
    assert_eq!(svc(""), "_633ff");
}

#[test]
fn a_default_rule_that_cannot_be_made_drops_only_the_router() {
    // The template names a label this container lacks: its default router cannot be made, but
    // its service stays for the router another container declares.
    let script = "import \"traefik\" as t;\n\
                  t::routes(catalog, #{ default_rule: \"Host(`{{ index .Labels \\\"alias\\\" }}`)\" });\n";
    let out = build_with_script(
        script,
        vec![
            container(
                "api",
                "api_1",
                "docker",
                "10.0.8.2",
                &["10.0.8.2:80"],
                json!({}),
            ),
            container(
                "front",
                "front_1",
                "docker",
                "10.0.8.3",
                &["10.0.8.3:80"],
                json!({
                    "traefik.http.routers.front.rule": "Host(`front.example.com`)",
                    "traefik.http.routers.front.service": "api@docker",
                }),
            ),
        ],
    );
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("api_1") && w.contains("no default router, the service stays")),
        "{:?}",
        out.warnings
    );
    assert!(!out.has_route("api@docker"));
    assert_eq!(out.route("front@docker")["target"]["service"], "api@docker");
}

#[test]
fn v1_domain_label_makes_the_default_rule() {
    let out = build_labels(vec![container(
        "My_App",
        "My_App",
        "docker",
        "10.0.9.2",
        &["10.0.9.2:80"],
        json!({ "traefik.port": "80", "traefik.domain": "docker.example.com" }),
    )]);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let routes = out.table["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(routes[0]["rule"], "Host(`my-app.docker.example.com`)");
}

#[test]
fn services_with_different_ports_on_one_container_each_keep_theirs() {
    // A container exposing no port, two services on two ports (the provider gives the entry
    // the lowest labelled port as its base server).
    let out = build_labels(vec![container(
        "multi",
        "multi_1",
        "docker",
        "10.0.10.2",
        &["10.0.10.2:9090"],
        json!({
            "traefik.http.routers.api.rule": "Host(`api.example.com`)",
            "traefik.http.routers.api.service": "api",
            "traefik.http.services.api.loadbalancer.server.port": "9090",
            "traefik.http.routers.admin.rule": "Host(`admin.example.com`)",
            "traefik.http.routers.admin.service": "admin",
            "traefik.http.services.admin.loadbalancer.server.port": "9091",
        }),
    )]);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    assert_eq!(out.servers("api@docker"), vec!["10.0.10.2:9090"]);
    assert_eq!(out.servers("admin@docker"), vec!["10.0.10.2:9091"]);
}

/// `weighted`, `mirroring` and `failover` services in labels: a canary split across two
/// containers' services, a mirror and a failover; a service that is two kinds at once, a member
/// that does not exist and a percentage out of range are each that container's or router's
/// error, with the label named.
#[test]
fn weighted_mirroring_and_failover_services_in_labels() {
    let out = build_labels(vec![
        container(
            "stable",
            "stable_1",
            "docker",
            "10.0.9.1",
            &["10.0.9.1:80"],
            json!({
                "traefik.http.services.stable.loadbalancer.server.port": "80",
                "traefik.http.routers.shop.rule": "Host(`shop.example.com`)",
                "traefik.http.routers.shop.service": "split",
                "traefik.http.services.split.weighted.services[0].name": "stable",
                "traefik.http.services.split.weighted.services[0].weight": "9",
                "traefik.http.services.split.weighted.services[1].name": "Canary@docker",
                "traefik.http.services.split.weighted.services[1].weight": "1",
                "traefik.http.services.split.weighted.sticky.cookie.name": "lane",
                "traefik.http.routers.copy.rule": "Host(`copy.example.com`)",
                "traefik.http.routers.copy.service": "copied",
                "traefik.http.services.copied.mirroring.service": "stable",
                "traefik.http.services.copied.mirroring.mirrors[0].name": "canary",
                "traefik.http.services.copied.mirroring.mirrors[0].percent": "20",
                "traefik.http.services.copied.mirroring.mirrorbody": "false",
                "traefik.http.routers.safe.rule": "Host(`safe.example.com`)",
                "traefik.http.routers.safe.service": "safe",
                "traefik.http.services.safe.failover.service": "canary",
                "traefik.http.services.safe.failover.fallback": "stable",
            }),
        ),
        container(
            "canary",
            "canary_1",
            "docker",
            "10.0.9.2",
            &["10.0.9.2:80"],
            json!({ "traefik.http.services.canary.loadbalancer.server.port": "80" }),
        ),
        container(
            "both",
            "both_1",
            "docker",
            "10.0.9.3",
            &["10.0.9.3:80"],
            json!({
                "traefik.http.services.both.loadbalancer.server.port": "80",
                "traefik.http.services.both.weighted.services[0].name": "stable",
            }),
        ),
        container(
            "lost",
            "lost_1",
            "docker",
            "10.0.9.4",
            &["10.0.9.4:80"],
            json!({
                "traefik.http.routers.lost.rule": "Host(`lost.example.com`)",
                "traefik.http.routers.lost.service": "lost",
                "traefik.http.services.lost.mirroring.service": "stable",
                "traefik.http.services.lost.mirroring.mirrors[0].name": "nowhere",
                "traefik.http.services.lost.mirroring.mirrors[0].percent": "10",
            }),
        ),
        container(
            "over",
            "over_1",
            "docker",
            "10.0.9.5",
            &["10.0.9.5:80"],
            json!({
                "traefik.http.services.over.mirroring.service": "stable",
                "traefik.http.services.over.mirroring.mirrors[0].name": "canary",
                "traefik.http.services.over.mirroring.mirrors[0].percent": "150",
            }),
        ),
    ]);
    let split = out.service("split@docker");
    assert_eq!(split["balancer"], "weighted");
    assert_eq!(
        split["children"],
        json!([["stable@docker", 9], ["canary@docker", 1]]),
        "{split:#}"
    );
    assert_eq!(split["sticky_cookie"], "lane");
    assert_eq!(
        out.route("shop@docker")["target"]["service"],
        "split@docker"
    );
    let copied = out.service("copied@docker");
    assert_eq!(copied["balancer"], "mirroring");
    assert_eq!(copied["children"], json!([["stable@docker", 1]]));
    assert_eq!(copied["mirrors"], json!([["canary@docker", 20]]));
    let safe = out.service("safe@docker");
    assert_eq!(safe["balancer"], "failover");
    assert_eq!(
        safe["children"],
        json!([["canary@docker", 1], ["stable@docker", 0]])
    );
    out.warning(&[
        "both_1",
        "traefik.http.services.both.",
        "one of loadbalancer, weighted, mirroring or failover",
    ]);
    out.warning(&["service lost", "unknown or dropped services", "nowhere"]);
    assert!(!out.has_route("lost@docker"));
    out.warning(&[
        "over_1",
        "traefik.http.services.over.mirroring.mirrors[0].percent",
        "not in 0..=100",
    ]);
}

/// Traefik 1.7 segment labels: one frontend and backend per `traefik.<segment>.*` group, named
/// as Traefik 1.7 names them, each segment's own labels over the container's others.
#[test]
fn v1_segment_labels_make_one_route_and_service_each() {
    let out = build_labels(vec![container(
        "app",
        "app_1",
        "docker",
        "10.0.4.2",
        &["10.0.4.2:80"],
        json!({
            "traefik.frontend.entryPoints": "web",
            "traefik.backend.loadbalancer.stickiness": "true",
            "traefik.site.port": "80",
            "traefik.site.frontend.rule": "Host:www.example.com",
            "traefik.Admin.port": "8080",
            "traefik.Admin.backend": "console",
            "traefik.Admin.frontend.rule": "Host:admin.example.com;PathPrefixStrip:/ui",
            "traefik.Admin.frontend.priority": "7",
            "traefik.Admin.frontend.auth.basic.users": "alice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
        }),
    )]);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    assert_eq!(
        out.route_names(),
        ["admin-app-console@docker", "site-app-site@docker"]
    );
    let site = out.route("site-app-site@docker");
    assert_eq!(site["rule"], "Host(`www.example.com`)");
    assert_eq!(site["target"]["service"], "app-site@docker");
    assert_eq!(site["entrypoints"], json!(["web"]), "the container's label");
    assert_eq!(out.servers("app-site@docker"), vec!["10.0.4.2:80"]);
    let admin = out.route("admin-app-console@docker");
    assert_eq!(
        admin["rule"],
        "Host(`admin.example.com`) && PathPrefix(`/ui`)"
    );
    assert_eq!(admin["priority"], 7);
    assert_eq!(admin["entrypoints"], json!(["web"]));
    let mws = admin["middlewares"].to_string();
    assert!(
        mws.contains("basic_auth") && mws.contains("strip_prefix"),
        "{mws}"
    );
    assert_eq!(out.servers("app-console@docker"), vec!["10.0.4.2:8080"]);
    assert!(out.service("app-console@docker")["sticky_cookie"].is_string());
}

/// Traefik's Redis-backed rate limit (`ratelimit.redis.*`): counted in switchyard's shared
/// store (`--store`), one bucket per middleware; without `redis.*` the limit stays local.
#[test]
fn a_redis_rate_limit_counts_in_the_shared_store() {
    let out = build_labels(vec![container(
        "rl",
        "rl_1",
        "docker",
        "10.0.5.2",
        &["10.0.5.2:80"],
        json!({
            "traefik.http.routers.rl.rule": "Host(`rl.example.com`)",
            "traefik.http.routers.rl.middlewares": "everyone,mine",
            "traefik.http.middlewares.everyone.ratelimit.average": "100",
            "traefik.http.middlewares.everyone.ratelimit.redis.endpoints": "redis:6379",
            "traefik.http.middlewares.everyone.ratelimit.redis.db": "2",
            "traefik.http.middlewares.mine.ratelimit.average": "100",
        }),
    )]);
    let mws = out.route("rl@docker")["middlewares"].clone();
    assert!(
        mws[0].as_str().unwrap().contains("store \"everyone"),
        "{mws:#}"
    );
    assert!(!mws[1].as_str().unwrap().contains("store"), "{mws:#}");
}
