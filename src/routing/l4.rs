//! TCP and UDP routing (Traefik's `tcp` and `udp` routers): the compiled routes, services and
//! per-connection middlewares, and how a connection picks its route.
//!
//! A TCP route matches a connection, not a request: by the SNI name and ALPN protocols of a TLS
//! ClientHello and by the client address (`HostSNI`, `HostSNIRegexp`, `ALPN`, `ClientIP`, parsed
//! by `rule::parse_tcp_rule`). A route with `tls` takes only TLS connections (passthrough: the
//! bytes go to the server untouched; terminate: the router's certificates); a route without
//! takes only cleartext ones, which have no SNI, so only ``HostSNI(`*`)`` can match them (as
//! Traefik). A UDP route has no rule: one per entrypoint.
//!
//! Invariants: the table is immutable once built (only balancer counters, server states and the
//! in-flight counters of `in_flight_conn` change); routes are tried in (priority desc, name asc)
//! order; a pick never returns an unavailable server. Pure data: no sockets, no clocks beyond
//! the `now` a caller passes.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::matcher::{canonical_ip, Matcher};
use super::table::{Location, MetricsSlot, TlsDomain};
use crate::balance::{Algorithm, Balancer, ServerState};

/// What a connection offers the TCP rules.
#[derive(Debug, Clone, Copy)]
pub struct ConnView<'a> {
    /// The ClientHello's server name, lower-cased; `None` for cleartext or a hello without one.
    pub sni: Option<&'a str>,
    /// The ClientHello's ALPN protocols, in the client's order.
    pub alpn: &'a [Vec<u8>],
    pub client_ip: IpAddr,
}

/// Evaluates a TCP rule against a connection.
pub fn conn_matches(m: &Matcher, c: &ConnView<'_>) -> bool {
    match m {
        Matcher::Always => true,
        Matcher::Host(p) => c.sni.is_some_and(|s| p.matches(s)),
        Matcher::HostRegex(p) => c.sni.is_some_and(|s| p.is_match(s)),
        Matcher::ClientIp(net) => net.contains(&canonical_ip(c.client_ip)),
        Matcher::Alpn(proto) => c.alpn.iter().any(|a| a == proto.as_bytes()),
        Matcher::And(a, b) => conn_matches(a, c) && conn_matches(b, c),
        Matcher::Or(a, b) => conn_matches(a, c) || conn_matches(b, c),
        Matcher::Not(a) => !conn_matches(a, c),
        // The TCP parser never produces HTTP matchers.
        _ => false,
    }
}

/// How a TCP route treats TLS.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum TcpTls {
    /// The TLS bytes go to the server as they came; the server holds the certificate.
    Passthrough,
    /// The router terminates TLS with its certificates and sends the cleartext stream.
    Terminate {
        #[serde(skip_serializing_if = "Option::is_none")]
        options: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        resolver: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        domains: Vec<TlsDomain>,
    },
}

/// A per-connection middleware of a TCP route.
#[derive(Debug, Clone)]
pub enum TcpMiddleware {
    /// Only clients in these ranges (Traefik's `ipAllowList`).
    AllowList(Vec<IpNet>),
    /// At most `amount` open connections per client address (Traefik's `inFlightConn`).
    InFlightConn(Arc<InFlightConn>),
}

impl TcpMiddleware {
    pub fn describe(&self) -> String {
        match self {
            TcpMiddleware::AllowList(r) => format!(
                "ip_allow_list([{}])",
                r.iter()
                    .map(|n| format!("{:?}", n.to_string()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            TcpMiddleware::InFlightConn(f) => format!("in_flight_conn({})", f.amount),
        }
    }
}

/// Open connections per client address, capped.
#[derive(Debug)]
pub struct InFlightConn {
    pub amount: u32,
    open: Mutex<HashMap<IpAddr, u32>>,
}

impl InFlightConn {
    pub fn new(amount: u32) -> InFlightConn {
        InFlightConn {
            amount,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A permit while under the cap; the count drops when the permit does.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<ConnPermit> {
        let ip = canonical_ip(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.amount {
            return None;
        }
        *n += 1;
        Some(ConnPermit {
            of: self.clone(),
            ip,
        })
    }

    /// Open connections of `ip` now.
    pub fn open(&self, ip: IpAddr) -> u32 {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&canonical_ip(ip)).copied().unwrap_or(0)
    }
}

/// One counted connection of an `InFlightConn`.
#[derive(Debug)]
pub struct ConnPermit {
    of: Arc<InFlightConn>,
    ip: IpAddr,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut open = self.of.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Why a route's middlewares refused a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotAllowed,
    TooManyConnections,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::NotAllowed => "client not in the allow list",
            Refusal::TooManyConnections => "client over its open-connection limit",
        })
    }
}

/// Runs a route's middlewares for a client: the permits to hold while the connection lives, or
/// why it is refused.
pub fn admit(mws: &[TcpMiddleware], ip: IpAddr) -> Result<Vec<ConnPermit>, Refusal> {
    let mut permits = Vec::new();
    for m in mws {
        match m {
            TcpMiddleware::AllowList(ranges) => {
                let ip = canonical_ip(ip);
                if !ranges.iter().any(|r| r.contains(&ip)) {
                    return Err(Refusal::NotAllowed);
                }
            }
            TcpMiddleware::InFlightConn(f) => match f.enter(ip) {
                Some(p) => permits.push(p),
                None => return Err(Refusal::TooManyConnections),
            },
        }
    }
    Ok(permits)
}

/// One server of a TCP or UDP service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct L4Server {
    /// `host:port`.
    pub address: String,
    pub weight: u32,
}

/// Active health checking of a TCP service: a TCP connect every `interval`, failed after
/// `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpHealth {
    pub interval: Duration,
    pub timeout: Duration,
}

/// Servers behind a weighted round robin, shared by TCP and UDP services.
#[derive(Debug)]
pub struct L4Pool {
    pub servers: Vec<L4Server>,
    pub states: Vec<Arc<ServerState>>,
    balancer: Balancer,
}

impl L4Pool {
    /// `previous`: server states to keep for an identical server list (health survives reloads).
    pub fn new(servers: Vec<L4Server>, previous: Option<&L4Pool>) -> L4Pool {
        let states = match previous {
            Some(p) if p.servers == servers => p.states.clone(),
            _ => servers.iter().map(|_| ServerState::new()).collect(),
        };
        let ids: Vec<(&str, u32)> = servers
            .iter()
            .map(|s| (s.address.as_str(), s.weight))
            .collect();
        let balancer = Balancer::new(Algorithm::RoundRobin, &ids);
        L4Pool {
            servers,
            states,
            balancer,
        }
    }

    /// The next available server, by weight.
    pub fn pick(&self, now: Instant) -> Option<(usize, &L4Server)> {
        let i = self.balancer.pick(&self.states, None, now)?;
        Some((i, self.servers.get(i)?))
    }

    pub fn kind(&self) -> &'static str {
        self.balancer.kind()
    }
}

/// A TCP service: servers, the PROXY protocol header sent to them, health checking.
#[derive(Debug)]
pub struct TcpService {
    pub name: String,
    pub pool: L4Pool,
    /// PROXY protocol version (1 or 2) written before the client's bytes.
    pub proxy_protocol: Option<u8>,
    pub health: Option<TcpHealth>,
    pub declared_at: Location,
}

/// A compiled TCP route.
#[derive(Debug)]
pub struct TcpRoute {
    pub name: String,
    /// The rule as written (shown by the API and `check`).
    pub rule_text: String,
    pub rule: Matcher,
    pub priority: i64,
    /// Empty: every TCP entrypoint.
    pub entrypoints: Vec<String>,
    pub tls: Option<TcpTls>,
    pub middlewares: Vec<TcpMiddleware>,
    pub service: Arc<TcpService>,
    pub declared_at: Location,
    pub metrics: MetricsSlot,
}

impl TcpRoute {
    pub fn on_entrypoint(&self, ep: &str) -> bool {
        self.entrypoints.is_empty() || self.entrypoints.iter().any(|e| e == ep)
    }
}

/// A UDP service: datagrams of a client session go to one server, chosen by weight.
#[derive(Debug)]
pub struct UdpService {
    pub name: String,
    pub pool: L4Pool,
    pub declared_at: Location,
}

/// A compiled UDP route: every datagram of its entrypoints goes to its service.
#[derive(Debug)]
pub struct UdpRoute {
    pub name: String,
    /// Empty: every UDP entrypoint.
    pub entrypoints: Vec<String>,
    pub service: Arc<UdpService>,
    pub declared_at: Location,
    pub metrics: MetricsSlot,
}

/// What one entrypoint has of TCP routes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpOnEntrypoint {
    /// Some route takes TLS connections: the ClientHello must be read before deciding.
    pub tls: bool,
    /// Some route takes cleartext connections.
    pub plain: bool,
}

/// The TCP and UDP routes of one build.
#[derive(Debug, Default)]
pub struct L4Table {
    tcp: Vec<Arc<TcpRoute>>,
    udp: Vec<Arc<UdpRoute>>,
    /// What the TCP routes without entrypoints (every one) take, and those naming each
    /// entrypoint: `tcp_on` answers per connection without walking the routes.
    tcp_any: TcpOnEntrypoint,
    tcp_named: Vec<(String, TcpOnEntrypoint)>,
}

impl TcpOnEntrypoint {
    fn add(&mut self, r: &TcpRoute) {
        if r.tls.is_some() {
            self.tls = true;
        } else {
            self.plain = true;
        }
    }

    /// Some TCP route may take connections here.
    pub fn any(self) -> bool {
        self.tls || self.plain
    }
}

impl L4Table {
    pub fn new(mut tcp: Vec<TcpRoute>, mut udp: Vec<UdpRoute>) -> L4Table {
        tcp.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then_with(|| a.name.cmp(&b.name))
        });
        udp.sort_by(|a, b| a.name.cmp(&b.name));
        let mut tcp_any = TcpOnEntrypoint::default();
        let mut tcp_named: Vec<(String, TcpOnEntrypoint)> = Vec::new();
        for r in &tcp {
            if r.entrypoints.is_empty() {
                tcp_any.add(r);
            }
            for ep in &r.entrypoints {
                match tcp_named.iter_mut().find(|(n, _)| n == ep) {
                    Some((_, on)) => on.add(r),
                    None => {
                        let mut on = TcpOnEntrypoint::default();
                        on.add(r);
                        tcp_named.push((ep.clone(), on));
                    }
                }
            }
        }
        L4Table {
            tcp: tcp.into_iter().map(Arc::new).collect(),
            udp: udp.into_iter().map(Arc::new).collect(),
            tcp_any,
            tcp_named,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tcp.is_empty() && self.udp.is_empty()
    }

    /// TCP routes in the order they are tried.
    pub fn tcp_routes(&self) -> &[Arc<TcpRoute>] {
        &self.tcp
    }

    pub fn udp_routes(&self) -> &[Arc<UdpRoute>] {
        &self.udp
    }

    /// Whether `ep` has TCP routes for TLS and for cleartext connections.
    pub fn tcp_on(&self, ep: &str) -> TcpOnEntrypoint {
        let mut out = self.tcp_any;
        if let Some((_, on)) = self.tcp_named.iter().find(|(n, _)| n == ep) {
            out.tls |= on.tls;
            out.plain |= on.plain;
        }
        out
    }

    /// The first TLS route of `ep` whose rule matches the ClientHello.
    pub fn match_tls(&self, ep: &str, view: &ConnView<'_>) -> Option<&Arc<TcpRoute>> {
        self.tcp
            .iter()
            .find(|r| r.tls.is_some() && r.on_entrypoint(ep) && conn_matches(&r.rule, view))
    }

    /// The first cleartext route of `ep` that takes this client.
    pub fn match_plain(&self, ep: &str, client_ip: IpAddr) -> Option<&Arc<TcpRoute>> {
        let view = ConnView {
            sni: None,
            alpn: &[],
            client_ip,
        };
        self.tcp
            .iter()
            .find(|r| r.tls.is_none() && r.on_entrypoint(ep) && conn_matches(&r.rule, &view))
    }

    /// The UDP route of `ep`.
    pub fn udp_for(&self, ep: &str) -> Option<&Arc<UdpRoute>> {
        self.udp
            .iter()
            .find(|r| r.entrypoints.is_empty() || r.entrypoints.iter().any(|e| e == ep))
    }

    /// A TCP service by name, to carry server state over to the next build.
    pub fn tcp_service(&self, name: &str) -> Option<&Arc<TcpService>> {
        self.tcp.iter().map(|r| &r.service).find(|s| s.name == name)
    }

    pub fn udp_service(&self, name: &str) -> Option<&Arc<UdpService>> {
        self.udp.iter().map(|r| &r.service).find(|s| s.name == name)
    }
}

/// One TCP route as an explain trace shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TraceStep {
    pub route: String,
    pub matched: bool,
    /// Why the route did not take the connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub because: Option<String>,
}

/// What a connection with these facts would get on an entrypoint, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnExplain {
    /// `route ...`, `https` (the entrypoint's HTTPS routes), `http`, or `closed`.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// `passthrough`, `terminate` or `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The servers the balancer may pick now.
    pub servers: Vec<String>,
    pub trace: Vec<TraceStep>,
}

impl L4Table {
    /// Explains the route a connection to `ep` would take: a TLS one (`tls`: its ClientHello
    /// says `view.sni`/`view.alpn`) or a cleartext one. `https`: the entrypoint terminates TLS
    /// for HTTP routes. Reads state only (no balancer moves, no permits taken).
    pub fn explain(&self, ep: &str, view: &ConnView<'_>, tls: bool, https: bool) -> ConnExplain {
        let mut trace = Vec::new();
        let mut chosen: Option<&Arc<TcpRoute>> = None;
        let plain_view = ConnView {
            sni: None,
            alpn: &[],
            client_ip: view.client_ip,
        };
        for r in &self.tcp {
            let because = if !r.on_entrypoint(ep) {
                Some(format!("not on entrypoint {ep:?}"))
            } else if r.tls.is_some() != tls {
                Some(if tls {
                    "takes cleartext connections only".to_string()
                } else {
                    "takes TLS connections only".to_string()
                })
            } else if !conn_matches(&r.rule, if tls { view } else { &plain_view }) {
                Some(format!("rule {} does not match", r.rule_text))
            } else {
                None
            };
            let matched = because.is_none();
            trace.push(TraceStep {
                route: r.name.clone(),
                matched,
                because,
            });
            if matched {
                chosen = Some(r);
                break;
            }
        }
        let Some(route) = chosen else {
            let outcome = match (tls, https) {
                (true, true) => "https",
                (true, false) => "closed",
                (false, _) => "http",
            };
            return ConnExplain {
                outcome: outcome.to_string(),
                route: None,
                tls: None,
                service: None,
                servers: Vec::new(),
                trace,
            };
        };
        let now = Instant::now();
        let pool = &route.service.pool;
        let refused = route.middlewares.iter().find_map(|m| match m {
            TcpMiddleware::AllowList(ranges) => {
                let ip = canonical_ip(view.client_ip);
                (!ranges.iter().any(|r| r.contains(&ip))).then(|| m.describe())
            }
            TcpMiddleware::InFlightConn(f) => {
                (f.open(view.client_ip) >= f.amount).then(|| m.describe())
            }
        });
        ConnExplain {
            outcome: match refused {
                Some(m) => format!("closed by {m}"),
                None => format!("route {}", route.name),
            },
            route: Some(route.name.clone()),
            tls: Some(match route.tls {
                None => "none",
                Some(TcpTls::Passthrough) => "passthrough",
                Some(TcpTls::Terminate { .. }) => "terminate",
            }),
            service: Some(route.service.name.clone()),
            servers: pool
                .servers
                .iter()
                .zip(&pool.states)
                .filter(|(s, st)| s.weight > 0 && st.available(now))
                .map(|(s, _)| s.address.clone())
                .collect(),
            trace,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::rule::{parse_tcp_rule, RuleSyntax};

    fn view<'a>(sni: Option<&'a str>, alpn: &'a [Vec<u8>], ip: &str) -> ConnView<'a> {
        ConnView {
            sni,
            alpn,
            client_ip: ip.parse().unwrap(),
        }
    }

    fn rule(s: &str) -> Matcher {
        parse_tcp_rule(s, RuleSyntax::V3).unwrap()
    }

    #[test]
    fn tcp_rules_match_sni_alpn_and_client() {
        let h2 = vec![b"h2".to_vec()];
        let r = rule("HostSNI(`db.example.com`) && ALPN(`h2`)");
        assert!(conn_matches(
            &r,
            &view(Some("db.example.com"), &h2, "10.0.0.1")
        ));
        assert!(!conn_matches(
            &r,
            &view(Some("db.example.com"), &[], "10.0.0.1")
        ));
        assert!(!conn_matches(
            &r,
            &view(Some("x.example.com"), &h2, "10.0.0.1")
        ));
        let r = rule("HostSNIRegexp(`^[a-z]+\\.example\\.com$`)");
        assert!(conn_matches(
            &r,
            &view(Some("db.example.com"), &[], "10.0.0.1")
        ));
        assert!(!conn_matches(&r, &view(None, &[], "10.0.0.1")));
        let r = rule("HostSNI(`*`) && ClientIP(`10.0.0.0/8`)");
        assert!(conn_matches(&r, &view(None, &[], "10.1.2.3")));
        assert!(conn_matches(&r, &view(None, &[], "::ffff:10.1.2.3")));
        assert!(!conn_matches(&r, &view(None, &[], "192.168.1.1")));
        let r = rule("!HostSNI(`a.com`)");
        assert!(conn_matches(&r, &view(None, &[], "1.1.1.1")));
    }

    #[test]
    fn tcp_rules_refuse_http_matchers_with_a_hint() {
        let e = parse_tcp_rule("Host(`a.com`)", RuleSyntax::V3).unwrap_err();
        assert!(e.message.contains("HTTP matcher"), "{}", e.message);
        let e = parse_tcp_rule("HostSNl(`a.com`)", RuleSyntax::V3).unwrap_err();
        assert!(
            e.message.contains("did you mean \"HostSNI\""),
            "{}",
            e.message
        );
        let e = parse_tcp_rule("ALPN(`acme-tls/1`)", RuleSyntax::V3).unwrap_err();
        assert!(e.message.contains("reserved"), "{}", e.message);
        // v2 takes several names, ORed.
        let r = parse_tcp_rule("HostSNI(`a.com`, `b.com`)", RuleSyntax::V2).unwrap();
        assert!(conn_matches(&r, &view(Some("b.com"), &[], "1.1.1.1")));
        assert!(!conn_matches(&r, &view(Some("c.com"), &[], "1.1.1.1")));
    }

    #[test]
    fn in_flight_conn_counts_per_client_and_releases() {
        let f = Arc::new(InFlightConn::new(2));
        let mws = vec![TcpMiddleware::InFlightConn(f.clone())];
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = admit(&mws, a).unwrap();
        let _p2 = admit(&mws, a).unwrap();
        assert_eq!(admit(&mws, a).unwrap_err(), Refusal::TooManyConnections);
        assert!(admit(&mws, b).is_ok());
        drop(p1);
        assert_eq!(f.open(a), 1);
        assert!(admit(&mws, a).is_ok());
    }

    fn route(
        name: &str,
        rule_text: &str,
        tls: Option<TcpTls>,
        mws: Vec<TcpMiddleware>,
    ) -> TcpRoute {
        TcpRoute {
            name: name.into(),
            rule_text: rule_text.into(),
            rule: rule(rule_text),
            priority: 0,
            entrypoints: vec!["tcp".into()],
            tls,
            middlewares: mws,
            service: Arc::new(TcpService {
                name: format!("{name}-svc"),
                pool: L4Pool::new(
                    vec![L4Server {
                        address: "127.0.0.1:1".into(),
                        weight: 1,
                    }],
                    None,
                ),
                proxy_protocol: None,
                health: None,
                declared_at: Location::default(),
            }),
            declared_at: Location::default(),
            metrics: Default::default(),
        }
    }

    #[test]
    fn explain_says_which_route_takes_a_connection_and_why_others_do_not() {
        let t = L4Table::new(
            vec![
                route(
                    "db",
                    "HostSNI(`db.test`)",
                    Some(TcpTls::Passthrough),
                    vec![],
                ),
                route(
                    "ssh",
                    "HostSNI(`*`)",
                    None,
                    vec![TcpMiddleware::AllowList(vec!["10.0.0.0/8"
                        .parse()
                        .unwrap()])],
                ),
            ],
            vec![],
        );
        let e = t.explain("tcp", &view(Some("db.test"), &[], "10.0.0.1"), true, false);
        assert_eq!(e.outcome, "route db");
        assert_eq!(e.tls, Some("passthrough"));
        assert_eq!(e.servers, vec!["127.0.0.1:1".to_string()]);
        let e = t.explain("tcp", &view(Some("x.test"), &[], "10.0.0.1"), true, true);
        assert_eq!(e.outcome, "https");
        assert!(e.trace.iter().any(|s| s.route == "db"
            && s.because.as_deref() == Some("rule HostSNI(`db.test`) does not match")));
        let e = t.explain("tcp", &view(None, &[], "192.168.0.1"), false, false);
        assert_eq!(e.outcome, "closed by ip_allow_list([\"10.0.0.0/8\"])");
        let e = t.explain("web", &view(None, &[], "10.0.0.1"), false, false);
        assert_eq!(e.outcome, "http");
    }

    #[test]
    fn tcp_on_says_which_entrypoints_look_at_connections_first() {
        let t = L4Table::new(
            vec![
                route(
                    "db",
                    "HostSNI(`db.test`)",
                    Some(TcpTls::Passthrough),
                    vec![],
                ),
                route("ssh", "HostSNI(`*`)", None, vec![]),
            ],
            vec![],
        );
        let on = t.tcp_on("tcp");
        assert!(on.tls && on.plain);
        assert!(
            !t.tcp_on("web").any(),
            "an HTTP-only entrypoint pays no peek"
        );
        let mut everywhere = route("all", "HostSNI(`*`)", None, vec![]);
        everywhere.entrypoints.clear();
        let t = L4Table::new(
            vec![
                route(
                    "db",
                    "HostSNI(`db.test`)",
                    Some(TcpTls::Passthrough),
                    vec![],
                ),
                everywhere,
            ],
            vec![],
        );
        assert_eq!(
            t.tcp_on("web"),
            TcpOnEntrypoint {
                tls: false,
                plain: true
            }
        );
        assert_eq!(
            t.tcp_on("tcp"),
            TcpOnEntrypoint {
                tls: true,
                plain: true
            }
        );
    }

    #[test]
    fn allow_list_checks_the_canonical_address() {
        let mws = vec![TcpMiddleware::AllowList(vec!["127.0.0.0/8"
            .parse()
            .unwrap()])];
        assert!(admit(&mws, "::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert_eq!(
            admit(&mws, "10.0.0.1".parse().unwrap()).unwrap_err(),
            Refusal::NotAllowed
        );
    }
}
