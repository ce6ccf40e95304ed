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
    /// TCP routes (Traefik's `tcp` routers), in the order they are tried.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tcp_routes: Vec<TcpRouteInfo>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub udp_routes: Vec<UdpRouteInfo>,
}

#[derive(Debug, Serialize)]
pub struct TcpRouteInfo {
    pub name: String,
    pub rule: String,
    pub priority: i64,
    /// Empty means every TCP entrypoint.
    pub entrypoints: Vec<String>,
    /// `passthrough` or `terminate` (absent: cleartext connections only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<super::l4::TcpTls>,
    pub middlewares: Vec<String>,
    pub service: L4ServiceInfo,
    pub declared_at: String,
}

#[derive(Debug, Serialize)]
pub struct UdpRouteInfo {
    pub name: String,
    /// Empty means every UDP entrypoint.
    pub entrypoints: Vec<String>,
    pub service: L4ServiceInfo,
    pub declared_at: String,
}

#[derive(Debug, Serialize)]
pub struct L4ServiceInfo {
    pub name: String,
    pub balancer: &'static str,
    pub servers: Vec<ServerInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<String>,
    pub declared_at: String,
}

fn l4_pool_servers(pool: &super::l4::L4Pool, now: std::time::Instant) -> Vec<ServerInfo> {
    pool.servers
        .iter()
        .zip(&pool.states)
        .map(|(s, st)| ServerInfo {
            address: s.address.clone(),
            weight: s.weight,
            healthy: st.available(now),
            in_flight: st.in_flight(),
        })
        .collect()
}

fn l4_service_text(s: &L4ServiceInfo) -> String {
    let servers: Vec<String> = s
        .servers
        .iter()
        .map(|sv| {
            let mut t = sv.address.clone();
            if sv.weight != 1 {
                t.push_str(&format!(" (weight {})", sv.weight));
            }
            if !sv.healthy {
                t.push_str(" (unavailable)");
            }
            t
        })
        .collect();
    let mut line = format!("  target:  service {} -> {}", s.name, servers.join(", "));
    if let Some(v) = s.proxy_protocol {
        line.push_str(&format!("  PROXY protocol v{v}"));
    }
    if let Some(h) = &s.health_check {
        line.push_str(&format!("  health {h}"));
    }
    line.push('\n');
    line
}

impl TcpRouteInfo {
    pub fn of(r: &super::l4::TcpRoute, now: std::time::Instant) -> Self {
        let s = &r.service;
        TcpRouteInfo {
            name: r.name.clone(),
            rule: r.rule_text.clone(),
            priority: r.priority,
            entrypoints: r.entrypoints.clone(),
            tls: r.tls.clone(),
            middlewares: r.middlewares.iter().map(|m| m.describe()).collect(),
            service: L4ServiceInfo {
                name: s.name.clone(),
                balancer: s.pool.kind(),
                servers: l4_pool_servers(&s.pool, now),
                proxy_protocol: s.proxy_protocol,
                health_check: s.health.map(|h| {
                    format!(
                        "tcp connect every {:?}, timeout {:?}",
                        h.interval, h.timeout
                    )
                }),
                declared_at: s.declared_at.to_string(),
            },
            declared_at: r.declared_at.to_string(),
        }
    }
}

impl UdpRouteInfo {
    pub fn of(r: &super::l4::UdpRoute, now: std::time::Instant) -> Self {
        let s = &r.service;
        UdpRouteInfo {
            name: r.name.clone(),
            entrypoints: r.entrypoints.clone(),
            service: L4ServiceInfo {
                name: s.name.clone(),
                balancer: s.pool.kind(),
                servers: l4_pool_servers(&s.pool, now),
                proxy_protocol: None,
                health_check: None,
                declared_at: s.declared_at.to_string(),
            },
            declared_at: r.declared_at.to_string(),
        }
    }
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
        let l4 = table.l4();
        TableInfo {
            routes,
            services,
            tcp_routes: l4
                .tcp_routes()
                .iter()
                .map(|r| TcpRouteInfo::of(r, now))
                .collect(),
            udp_routes: l4
                .udp_routes()
                .iter()
                .map(|r| UdpRouteInfo::of(r, now))
                .collect(),
        }
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
        for r in &self.tcp_routes {
            let eps = if r.entrypoints.is_empty() {
                "all".to_string()
            } else {
                r.entrypoints.join(",")
            };
            out.push_str(&format!(
                "tcp route {}  priority {}  entrypoints {}  ({})\n",
                r.name, r.priority, eps, r.declared_at
            ));
            out.push_str(&format!("  rule:    {}\n", r.rule));
            let tls = match &r.tls {
                None => "cleartext connections only".to_string(),
                Some(super::l4::TcpTls::Passthrough) => "TLS passthrough".to_string(),
                Some(super::l4::TcpTls::Terminate { .. }) => {
                    "TLS terminated by the router".to_string()
                }
            };
            out.push_str(&format!("  tls:     {tls}\n"));
            if !r.middlewares.is_empty() {
                out.push_str(&format!("  middlewares: {}\n", r.middlewares.join(", ")));
            }
            out.push_str(&l4_service_text(&r.service));
        }
        for r in &self.udp_routes {
            let eps = if r.entrypoints.is_empty() {
                "all".to_string()
            } else {
                r.entrypoints.join(",")
            };
            out.push_str(&format!(
                "udp route {}  entrypoints {}  ({})\n",
                r.name, eps, r.declared_at
            ));
            out.push_str(&l4_service_text(&r.service));
        }
        out.push_str(&format!(
            "{} routes, {} services\n",
            self.routes.len(),
            self.services.len()
        ));
        if !self.tcp_routes.is_empty() || !self.udp_routes.is_empty() {
            out.push_str(&format!(
                "{} TCP routes, {} UDP routes\n",
                self.tcp_routes.len(),
                self.udp_routes.len()
            ));
        }
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
