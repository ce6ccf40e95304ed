//! A serializable description of a route table: what `check --format json` prints and what
//! `/api/routes` returns. The JSON shape is documented in README and kept stable.

use serde::Serialize;

use super::service::{Service, ServiceKind};
use super::table::{Handler, RouteTable, Target};

/// How a route's middleware appears in listings (`middleware::Middleware` implements it).
pub trait Describe {
    fn describe(&self) -> String;
}

#[derive(Debug, Serialize)]
pub struct TableInfo {
    pub routes: Vec<RouteInfo>,
    pub services: Vec<ServiceInfo>,
}

#[derive(Debug, Serialize)]
pub struct RouteInfo {
    pub name: String,
    pub rule: String,
    pub priority: i64,
    /// Empty means every entrypoint.
    pub entrypoints: Vec<String>,
    /// The route's middlewares in order, e.g. `on_request(Fn("canary"))`.
    pub middlewares: Vec<String>,
    pub target: TargetInfo,
    /// `file:line:col` of the `route(...)` call.
    pub declared_at: String,
    /// `.record(true|false)`, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<bool>,
    /// `.tls(...)`: the route serves TLS requests only (absent: see `cleartext`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<super::RouteTls>,
    /// `.tls(false)`: the route serves cleartext requests only.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cleartext: bool,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TargetInfo {
    Service {
        service: String,
        servers: Vec<String>,
    },
    Respond {
        status: u16,
        body: String,
    },
    Redirect {
        location: String,
        permanent: bool,
    },
}

#[derive(Debug, Serialize)]
pub struct ServiceInfo {
    pub name: String,
    /// `round_robin`, `least_conn`, ..., or `failover` / `weighted` for composite services.
    pub balancer: String,
    pub pass_host_header: bool,
    pub servers: Vec<ServerInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticky_cookie: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<String>,
    /// Composite services: the services they choose between, with weights.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<(String, u32)>,
    /// Mirroring services: each mirror and the percentage of requests copied to it (`children`
    /// holds the main service).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<(String, u32)>,
    pub declared_at: String,
}

#[derive(Debug, Serialize)]
pub struct ServerInfo {
    pub address: String,
    pub weight: u32,
    /// Available to balancers now (active check healthy and not passively ejected).
    pub healthy: bool,
    pub in_flight: u32,
}

impl TableInfo {
    pub fn of<M: Describe>(table: &RouteTable<M>) -> Self {
        let now = std::time::Instant::now();
        let routes = table
            .routes()
            .iter()
            .map(|r| RouteInfo {
                name: r.name.clone(),
                rule: r.rule_text.clone(),
                priority: r.priority,
                entrypoints: r.entrypoints.clone(),
                middlewares: r.middlewares.iter().map(|m| m.describe()).collect(),
                target: match &r.target {
                    Target::Service(s) => TargetInfo::Service {
                        service: s.name.clone(),
                        servers: s.server_addresses(),
                    },
                    Target::Handler(Handler::Respond { status, body, .. }) => TargetInfo::Respond {
                        status: *status,
                        body: body.clone(),
                    },
                    Target::Handler(Handler::Redirect {
                        location,
                        permanent,
                    }) => TargetInfo::Redirect {
                        location: location.clone(),
                        permanent: *permanent,
                    },
                },
                declared_at: r.declared_at.to_string(),
                record: r.record,
                tls: r.tls.clone(),
                cleartext: r.cleartext,
            })
            .collect();
        let services = table
            .services()
            .iter()
            .map(|s| service_info(s, now))
            .collect();
        TableInfo { routes, services }
    }

    /// The human-readable listing `check` prints.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for r in &self.routes {
            let eps = if r.entrypoints.is_empty() {
                "all".to_string()
            } else {
                r.entrypoints.join(",")
            };
            out.push_str(&format!(
                "route {}  priority {}  entrypoints {}  ({})\n",
                r.name, r.priority, eps, r.declared_at
            ));
            out.push_str(&format!("  rule:    {}\n", r.rule));
            if let Some(t) = &r.tls {
                let mut what = vec!["TLS requests only".to_string()];
                what.extend(t.options.as_ref().map(|o| format!("options {o}")));
                what.extend(t.resolver.as_ref().map(|o| format!("resolver {o}")));
                for d in &t.domains {
                    what.push(
                        format!("domain {} {}", d.main, d.sans.join(" "))
                            .trim()
                            .to_string(),
                    );
                }
                out.push_str(&format!("  tls:     {}\n", what.join(", ")));
            } else if r.cleartext {
                out.push_str("  tls:     cleartext requests only\n");
            }
            if !r.middlewares.is_empty() {
                out.push_str(&format!("  middlewares: {}\n", r.middlewares.join(", ")));
            }
            let target = match &r.target {
                TargetInfo::Service { service, servers } => {
                    let list = if servers.is_empty() {
                        "no servers".to_string()
                    } else {
                        servers.join(", ")
                    };
                    format!("service {service} -> {list}")
                }
                TargetInfo::Respond { status, .. } => format!("respond {status}"),
                TargetInfo::Redirect {
                    location,
                    permanent,
                } => {
                    format!("redirect {} {location}", if *permanent { 301 } else { 302 })
                }
            };
            out.push_str(&format!("  target:  {target}\n"));
        }
        for s in &self.services {
            let mut line = format!("service {}  balancer {}", s.name, s.balancer);
            if let Some(c) = &s.sticky_cookie {
                line.push_str(&format!("  sticky cookie {c}"));
            }
            if let Some(h) = &s.health_check {
                line.push_str(&format!("  health check {h}"));
            }
            out.push_str(&format!("{line}  ({})\n", s.declared_at));
            for sv in &s.servers {
                out.push_str(&format!(
                    "  server {}  weight {}{}\n",
                    sv.address,
                    sv.weight,
                    if sv.healthy { "" } else { "  (unavailable)" }
                ));
            }
            for (child, weight) in &s.children {
                out.push_str(&format!("  member {child}  weight {weight}\n"));
            }
            for (mirror, percent) in &s.mirrors {
                out.push_str(&format!("  mirror {mirror}  {percent}% of requests\n"));
            }
        }
        out.push_str(&format!(
            "{} routes, {} services\n",
            self.routes.len(),
            self.services.len()
        ));
        out
    }
}

fn service_info(s: &Service, now: std::time::Instant) -> ServiceInfo {
    let mut info = ServiceInfo {
        name: s.name.clone(),
        balancer: s.balancer_kind(),
        pass_host_header: s.pass_host_header,
        servers: Vec::new(),
        sticky_cookie: None,
        health_check: None,
        children: Vec::new(),
        mirrors: Vec::new(),
        declared_at: s.declared_at.to_string(),
    };
    match &s.kind {
        ServiceKind::Servers(p) => {
            info.servers = p
                .servers
                .iter()
                .zip(&p.states)
                .map(|(sv, st)| ServerInfo {
                    address: sv.url(),
                    weight: sv.weight,
                    healthy: st.available(now),
                    in_flight: st.in_flight(),
                })
                .collect();
            info.sticky_cookie = p.sticky.as_ref().map(|c| c.name.clone());
            info.health_check = p.health.as_ref().map(|h| {
                format!(
                    "GET {} every {:?} (timeout {:?}, healthy {}-{})",
                    h.path, h.interval, h.timeout, h.status.0, h.status.1
                )
            });
        }
        ServiceKind::Failover {
            primary,
            fallback,
            sticky,
        } => {
            info.children = vec![(primary.name.clone(), 1), (fallback.name.clone(), 0)];
            info.sticky_cookie = sticky.as_ref().map(|s| s.cookie.name.clone());
        }
        ServiceKind::Weighted {
            children, sticky, ..
        } => {
            info.children = children.iter().map(|(c, w)| (c.name.clone(), *w)).collect();
            info.sticky_cookie = sticky.as_ref().map(|s| s.cookie.name.clone());
        }
        ServiceKind::Mirror(m) => {
            info.children = vec![(m.main.name.clone(), 1)];
            info.mirrors = m
                .mirrors
                .iter()
                .map(|(c, p)| (c.name.clone(), *p))
                .collect();
        }
    }
    info
}
