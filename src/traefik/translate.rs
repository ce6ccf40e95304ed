//! Traefik's static configuration keys (v1.7, v2, v3) translated into a `switchyard run`
//! command line and the route script that reads Traefik labels (`stdlib/traefik.rhai`) with
//! the same defaults (default rule, default entrypoints, rule syntax, entrypoint TLS).
//!
//! Every key is either translated, ignored as harmless (it only tunes something switchyard
//! does its own way, or nothing that routes: version checks, anonymous usage, tracing) with
//! the reason kept for the log and `--dry-run`, or refused with an error naming the key and
//! what to do instead. Invariants: a key never passes silently; an error never depends on the
//! order keys came in; the output parses as `switchyard run` flags.

use std::collections::BTreeMap;

use super::source::Pair;

/// What a Traefik static configuration becomes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Translation {
    /// `switchyard run` flags (without `run`).
    pub args: Vec<String>,
    /// The route script: Traefik labels read with this configuration's defaults.
    pub script: String,
    /// Keys accepted without effect, as `key: why`.
    pub ignored: Vec<String>,
}

/// One Docker-engine provider (Traefik's `docker` in standalone or Swarm mode, or `swarm`).
#[derive(Debug, Default)]
struct Provider {
    on: bool,
    endpoint: Option<String>,
    exposed_by_default: Option<String>,
    network: Option<String>,
    constraints: Option<String>,
    refresh: Option<String>,
    tls: [Option<String>; 3],
    allow_empty: Option<String>,
    default_rule: Option<String>,
    use_bind_port_ip: Option<String>,
}

#[derive(Debug, Default)]
struct Entrypoint {
    /// `host:port`, with `/udp` for a UDP entrypoint (Traefik's `:53/udp`).
    address: Option<String>,
    options: BTreeMap<String, String>,
    as_default: bool,
    /// `http.tls.*`: resolver, options, domains (as a Rhai map literal's fields).
    tls: BTreeMap<String, String>,
    domains: BTreeMap<usize, (String, String)>,
    /// `http.middlewares` (v2/v3) and v1's `Compress:true` (`compress@internal`): applied to the
    /// routers on this entrypoint, before their own.
    middlewares: Vec<String>,
}

impl Entrypoint {
    fn is_udp(&self) -> bool {
        self.address.as_deref().is_some_and(|a| a.ends_with("/udp"))
    }
}

#[derive(Debug, Default)]
struct State {
    v1: bool,
    entrypoints: BTreeMap<String, Entrypoint>,
    default_entrypoints: Vec<String>,
    docker: Provider,
    swarm: Provider,
    /// Traefik's own entrypoint (`traefik`, :8080) serves the API/dashboard, ping, metrics.
    admin_used: Vec<String>,
    api: bool,
    log_level: Option<String>,
    log_format: Option<String>,
    access_log: Option<Option<String>>,
    access: BTreeMap<&'static str, String>,
    access_headers: Vec<String>,
    trusted_ips: Vec<String>,
    timeouts: BTreeMap<&'static str, String>,
    acme: BTreeMap<String, BTreeMap<String, String>>,
    rule_syntax: Option<String>,
    /// `providers.file.filename|directory`.
    dynamic_config: Option<String>,
    /// Traefik 1 entrypoint certificates (cert, key) by index.
    certificates: BTreeMap<(String, usize), (String, String)>,
    ignored: Vec<String>,
    errors: Vec<String>,
}

/// Translates the settings; every refused key is one error.
pub fn translate(pairs: &[Pair]) -> Result<Translation, Vec<String>> {
    let mut st = State {
        v1: pairs.iter().any(|(k, _)| is_v1_key(k)),
        ..State::default()
    };
    for (k, v) in pairs {
        // `key[N]` items are read through their joined `key` (plain lists) or by the key
        // families that take indexed items (domains).
        if k.ends_with(']') && !k.contains(".domains[") && !k.contains(".certificates[") {
            continue;
        }
        st.key(k, v.trim());
    }
    st.finish()
}

/// Keys only Traefik 1 has.
fn is_v1_key(k: &str) -> bool {
    k == "docker"
        || k.starts_with("docker.")
        || k == "web"
        || k.starts_with("web.")
        || k == "defaultentrypoints"
        || k == "entrypoints"
        || k == "loglevel"
        || k == "traefiklogsfile"
        || k == "accesslogsfile"
}

fn truthy(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "" | "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("{v:?} is not true or false")),
    }
}

/// `:80`, `0.0.0.0:80`, `[::]:443`, `:80/tcp` → `host:port` (all interfaces when no host);
/// `:53/udp` → `0.0.0.0:53/udp`, as switchyard writes a UDP entrypoint.
fn address(v: &str) -> Result<String, String> {
    let v = v.trim_matches('"');
    let (addr, proto) = match v.rsplit_once('/') {
        Some((a, p)) => (a, p.to_ascii_lowercase()),
        None => (v, "tcp".to_string()),
    };
    if proto != "tcp" && proto != "udp" {
        return Err(format!("address {v:?}: unknown protocol {proto:?}"));
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("address {v:?}: write [HOST]:PORT"))?;
    if port.parse::<u16>().is_err() {
        return Err(format!("address {v:?}: {port:?} is not a port"));
    }
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    let suffix = if proto == "udp" { "/udp" } else { "" };
    Ok(format!("{host}:{port}{suffix}"))
}

/// A comma-separated list, trimmed, without empty items.
fn items(v: &str) -> impl Iterator<Item = String> + '_ {
    v.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn log_level(v: &str) -> Result<String, String> {
    Ok(match v.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "fatal" | "panic" => "error",
        other => return Err(format!("unknown log level {other:?}")),
    }
    .to_string())
}

/// A Rhai string literal.
fn rhai_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// Keys accepted without effect, by prefix, and why.
const HARMLESS: &[(&str, &str)] = &[
    (
        "global.",
        "version checks and usage statistics: switchyard sends nothing",
    ),
    ("checknewversion", "switchyard makes no version check"),
    ("sendanonymoususage", "switchyard sends nothing"),
    ("pilot.", "Traefik Pilot does not exist here"),
    ("hub.", "Traefik Hub does not exist here"),
    (
        "tracing",
        "tracing export is not built; the access log and /metrics remain",
    ),
    (
        "api.dashboard",
        "the dashboard is always part of the admin API",
    ),
    ("api.debug", "no debug endpoints"),
    ("api.disabledashboardad", "no ads"),
    ("log.filepath", "logs go to stderr (docker logs)"),
    ("log.nocolor", "colours are used on terminals only"),
    ("log.maxsize", "logs go to stderr"),
    ("log.maxage", "logs go to stderr"),
    ("log.maxbackups", "logs go to stderr"),
    ("log.compress", "logs go to stderr"),
    ("traefiklogsfile", "logs go to stderr"),
    (
        "accesslog.bufferingsize",
        "the access log has its own queue (--access-log.buffer)",
    ),
    (
        "accesslog.fields.",
        "switchyard writes Traefik's fields; per-field keep/drop is not built",
    ),
    (
        "accesslog.filters.retryattempts",
        "not built: filter by status or duration",
    ),
    ("accesslog.addinternals", "internal requests are not logged"),
    (
        "metrics.prometheus.",
        "the admin API's /metrics has fixed buckets and labels",
    ),
    ("metrics.addinternals", "internal requests are not counted"),
    (
        "ping.terminatingstatuscode",
        "/ping answers 200 until shutdown",
    ),
    (
        "providers.providersthrottleduration",
        "changes apply as they come (debounced)",
    ),
    (
        "providers.docker.watch",
        "the Docker provider always watches events",
    ),
    (
        "providers.swarm.watch",
        "the Swarm provider always watches events",
    ),
    (
        "providers.docker.httpclienttimeout",
        "the engine client has its own timeouts",
    ),
    (
        "providers.swarm.httpclienttimeout",
        "the engine client has its own timeouts",
    ),
    ("docker.watch", "the Docker provider always watches events"),
    (
        "serverstransport.maxidleconnsperhost",
        "the upstream pool has its own limit",
    ),
    (
        "serverstransport.forwardingtimeouts.idleconntimeout",
        "the upstream pool has its own idle timeout",
    ),
    (
        "entrypoints.*.transport.respondingtimeouts.writetimeout",
        "no write timeout",
    ),
    (
        "entrypoints.*.transport.lifecycle.requestacceptgracetimeout",
        "no accept grace",
    ),
    (
        "entrypoints.*.transport.keepalivemaxrequests",
        "keep-alive connections serve any number of requests",
    ),
    (
        "entrypoints.*.transport.keepalivemaxtime",
        "keep-alive connections end on --idle-timeout",
    ),
    (
        "entrypoints.*.http3",
        "HTTP/3 is not built: clients use HTTP/2 or HTTP/1.1",
    ),
    (
        "entrypoints.*.http.redirections.entrypoint.priority",
        "the entrypoint redirect runs before any route",
    ),
    ("entrypoints.*.reuseport", "one listener per entrypoint"),
    (
        "certificatesresolvers.*.acme.certificatesduration",
        "renewal follows each certificate's lifetime",
    ),
    (
        "certificatesresolvers.*.acme.preferredchain",
        "the CA's default chain is served",
    ),
    (
        "certificatesresolvers.*.acme.clientresponseheadertimeout",
        "the ACME client has its own timeouts",
    ),
    (
        "certificatesresolvers.*.acme.clienttimeout",
        "the ACME client has its own timeouts",
    ),
    ("core.", "nothing to set"),
];

fn harmless(k: &str) -> Option<&'static str> {
    let generic = generic_key(k);
    HARMLESS.iter().find_map(|(p, why)| {
        let hit = if p.ends_with('.') {
            k.starts_with(p) || generic.starts_with(p)
        } else {
            k == *p
                || generic == *p
                || k.starts_with(&format!("{p}."))
                || generic.starts_with(&format!("{p}."))
        };
        hit.then_some(*why)
    })
}

/// `entrypoints.web.x` → `entrypoints.*.x` (also for resolvers), for the tables above.
fn generic_key(k: &str) -> String {
    let parts: Vec<&str> = k.split('.').collect();
    match parts.as_slice() {
        [root @ ("entrypoints" | "certificatesresolvers"), _, rest @ ..] if !rest.is_empty() => {
            format!("{root}.*.{}", rest.join("."))
        }
        _ => k.to_string(),
    }
}

impl State {
    fn err(&mut self, key: &str, why: impl std::fmt::Display) {
        self.errors.push(format!("--{key}: {why}"));
    }

    fn key(&mut self, k: &str, v: &str) {
        if k == "configfile" {
            return;
        }
        if k != "core.defaultrulesyntax" && k != "metrics.prometheus.entrypoint" {
            if let Some(why) = harmless(k) {
                self.ignored.push(format!("{k}: {why}"));
                return;
            }
        }
        let (root, rest) = k.split_once('.').unwrap_or((k, ""));
        let r = match root {
            "entrypoints" if rest.is_empty() => self.v1_entrypoint(v),
            "entrypoints" => self.entrypoint(rest, v),
            "defaultentrypoints" => {
                self.default_entrypoints = v
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                Ok(())
            }
            "providers" => self.provider(rest, v),
            "docker" => self.v1_docker(rest, v),
            "api" => self.api(rest, v),
            "web" => self.admin("web (the v1 web UI and API)", v),
            "ping" => match rest {
                "" => self.admin("ping", v),
                "entrypoint" => self.on_traefik_entrypoint("ping", v),
                _ => Err("unknown ping option".into()),
            },
            "metrics" => match rest {
                "prometheus" => self.admin("metrics.prometheus", v),
                "prometheus.entrypoint" => self.on_traefik_entrypoint("metrics.prometheus", v),
                _ => Err("only Prometheus metrics are built (/metrics on the admin API)".into()),
            },
            "log" => match rest {
                "level" => log_level(v).map(|l| self.log_level = Some(l)),
                "format" => match v.to_ascii_lowercase().as_str() {
                    f @ ("json" | "common") => {
                        let ours = if f == "json" { "json" } else { "text" };
                        self.log_format = Some(ours.into());
                        Ok(())
                    }
                    _ => Err(format!("unknown log format {v:?} (json, common)")),
                },
                "" => Ok(()),
                _ => Err("unknown log option".into()),
            },
            "loglevel" => log_level(v).map(|l| self.log_level = Some(l)),
            "debug" => truthy(v).map(|on| {
                if on {
                    self.log_level = Some("debug".into());
                }
            }),
            "accesslog" => self.access_log(rest, v),
            "accesslogsfile" => {
                self.access_log = Some(Some(v.to_string()));
                Ok(())
            }
            "certificatesresolvers" => self.resolver(rest, v),
            "core" if rest == "defaultrulesyntax" => match v.to_ascii_lowercase().as_str() {
                s @ ("v2" | "v3") => {
                    self.rule_syntax = Some(s.to_string());
                    Ok(())
                }
                _ => Err(format!("{v:?}: v2 or v3")),
            },
            "serverstransport" | "insecureskipverify" => Err(
                "TLS to servers is set per service in scripts: service(...).transport(#{ ca, \
                 server_name, insecure_skip_verify, cert, key }), or https:// servers are \
                 checked against the system roots"
                    .into(),
            ),
            "acme" => Err("Traefik 1's ACME section: use a v2 certificate resolver \
                 (--certificatesresolvers.NAME.acme.*) with routers' tls.certresolver labels"
                .into()),
            "experimental" => Err("plugins and experimental features are not built".into()),
            "spiffe" => Err("SPIFFE is not built".into()),
            "hostresolver" => Err("CNAME flattening is not built".into()),
            "tcpserverstransport" => match rest {
                "dialtimeout" | "dialkeepalive" | "terminationdelay" => {
                    self.ignored.push(format!(
                        "{k}: TCP servers are dialled with switchyard's own timeouts \
                         (--upstream-connect-timeout) and keep-alive"
                    ));
                    Ok(())
                }
                r if r.starts_with("proxyprotocol") => Err(
                    "set the PROXY protocol per TCP service (loadbalancer.proxyprotocol.version)"
                        .into(),
                ),
                _ => Err(
                    "TLS to TCP servers is not built: switchyard connects to them in \
                     cleartext (or passes the client's TLS through with tls.passthrough)"
                        .into(),
                ),
            },
            _ => Err("unknown Traefik option".into()),
        };
        if let Err(e) = r {
            self.err(k, e);
        }
    }

    /// Something served on Traefik's own entrypoint: switchyard's admin listener.
    fn admin(&mut self, what: &str, v: &str) -> Result<(), String> {
        if truthy(v)? {
            self.admin_used.push(what.to_string());
        }
        Ok(())
    }

    fn on_traefik_entrypoint(&mut self, what: &str, v: &str) -> Result<(), String> {
        if v == "traefik" {
            Ok(())
        } else {
            Err(format!(
                "{what} is served on the admin listener (Traefik's `traefik` entrypoint), not on \
                 entrypoint {v:?}"
            ))
        }
    }

    fn api(&mut self, rest: &str, v: &str) -> Result<(), String> {
        match rest {
            "" => {
                if truthy(v)? {
                    self.api = true;
                    // Traefik 1 serves the API and dashboard on :8080 by itself.
                    if self.v1 {
                        self.admin_used.push("api".into());
                    }
                }
                Ok(())
            }
            "insecure" => self.admin("api.insecure", v),
            "entrypoint" => self.on_traefik_entrypoint("api", v),
            "basepath" => Err("the admin API is served at /".into()),
            _ => Err("unknown api option".into()),
        }
    }

    fn entry(&mut self, name: &str) -> &mut Entrypoint {
        self.entrypoints.entry(name.to_string()).or_default()
    }

    fn entrypoint(&mut self, rest: &str, v: &str) -> Result<(), String> {
        let (name, opt) = rest.split_once('.').unwrap_or((rest, ""));
        let set = |st: &mut State, key: &str, value: &str| {
            st.entry(name)
                .options
                .insert(key.to_string(), value.to_string());
        };
        match opt {
            "address" => {
                let a = address(v)?;
                self.entry(name).address = Some(a);
            }
            "asdefault" => {
                let on = truthy(v)?;
                self.entry(name).as_default = on;
            }
            "http.redirections.entrypoint.to" => set(self, "redirect-to", v),
            "http.redirections.entrypoint.scheme" => set(self, "redirect-scheme", v),
            "http.redirections.entrypoint.permanent" => {
                truthy(v)?;
                set(self, "redirect-permanent", v)
            }
            // Traefik 1: `[entryPoints.http.redirect] entryPoint = "https"`.
            "redirect.entrypoint" => set(self, "redirect-to", v),
            "http.tls" | "tls" => {
                if truthy(v)? {
                    set(self, "tls", "true");
                }
            }
            "http.tls.certresolver" => {
                set(self, "tls", "true");
                self.entry(name).tls.insert("resolver".into(), v.into());
            }
            "http.tls.options" => {
                set(self, "tls", "true");
                let bare = v.split('@').next().unwrap_or(v).to_string();
                self.entry(name).tls.insert("options".into(), bare);
            }
            "http2.maxconcurrentstreams" => set(self, "http2.max-concurrent-streams", v),
            "forwardedheaders.trustedips" => {
                self.trusted_ips.extend(
                    v.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty()),
                );
            }
            "forwardedheaders.insecure" => {
                if truthy(v)? {
                    self.trusted_ips
                        .extend(["0.0.0.0/0".to_string(), "::/0".to_string()]);
                }
            }
            "transport.respondingtimeouts.readtimeout" => {
                self.timeouts.insert("--header-read-timeout", seconds(v));
            }
            "transport.respondingtimeouts.idletimeout" => {
                self.timeouts.insert("--idle-timeout", seconds(v));
            }
            "transport.lifecycle.gracetimeout" => {
                self.timeouts.insert("--grace-period", seconds(v));
            }
            o if o.starts_with("http.tls.domains[") => {
                let inner = &o["http.tls.domains[".len()..];
                let (n, field) = inner
                    .split_once("].")
                    .ok_or("write http.tls.domains[N].main / .sans")?;
                let n: usize = n.parse().map_err(|_| format!("{n:?} is not an index"))?;
                set(self, "tls", "true");
                let d = self.entry(name).domains.entry(n).or_default();
                match field {
                    "main" => d.0 = v.to_string(),
                    "sans" => d.1 = v.to_string(),
                    f if f.starts_with("sans[") => {
                        d.1 = if d.1.is_empty() {
                            v.to_string()
                        } else {
                            format!("{},{v}", d.1)
                        }
                    }
                    _ => return Err("unknown domain field (main, sans)".into()),
                }
            }
            // Traefik 1: `[[entryPoints.https.tls.certificates]] certFile/keyFile`.
            o if o.starts_with("tls.certificates[") => {
                let inner = &o["tls.certificates[".len()..];
                let (n, field) = inner
                    .split_once("].")
                    .ok_or("write tls.certificates[N].certfile / .keyfile")?;
                let n: usize = n.parse().map_err(|_| format!("{n:?} is not an index"))?;
                set(self, "tls", "true");
                let c = self.certificates.entry((name.to_string(), n)).or_default();
                match field {
                    "certfile" => c.0 = v.to_string(),
                    "keyfile" => c.1 = v.to_string(),
                    _ => return Err("unknown certificate field (certFile, keyFile)".into()),
                }
            }
            o if o.starts_with("http.middlewares") => {
                // A list (`a@file,b@docker`) or one item per index (`http.middlewares[0]`).
                let names = v
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_string);
                self.entry(name).middlewares.extend(names);
            }
            // Clients that may send a PROXY protocol header first (HTTP and TCP alike).
            "proxyprotocol" => {
                truthy(v)?;
            }
            "proxyprotocol.trustedips" => {
                let list: Vec<String> = items(v).collect();
                set(self, "proxy-protocol.trusted-ips", &list.join(","))
            }
            "proxyprotocol.insecure" => {
                if truthy(v)? {
                    set(self, "proxy-protocol.insecure", "true")
                }
            }
            "udp.timeout" => set(self, "udp.timeout", &seconds(v)),
            "udp" => {
                truthy(v)?;
            }
            o if o.starts_with("http.encodequerysemicolons")
                || o.starts_with("http.sanitizepath")
                || o.starts_with("http.encodedcharacters") =>
            {
                return Err(
                    "path handling is set with switchyard's path.* entrypoint options".into(),
                )
            }
            _ => return Err("unknown entrypoint option".into()),
        }
        Ok(())
    }

    /// Traefik 1: `--entryPoints='Name:http Address::80 Redirect.EntryPoint:https TLS'`.
    fn v1_entrypoint(&mut self, v: &str) -> Result<(), String> {
        let mut name = None;
        let mut fields = Vec::new();
        for part in v.trim_matches(|c| c == '\'' || c == '"').split_whitespace() {
            let (k, val) = part.split_once(':').unwrap_or((part, ""));
            match k.to_ascii_lowercase().as_str() {
                "name" => name = Some(val.to_string()),
                other => fields.push((other.to_string(), val.to_string())),
            }
        }
        let name = name.ok_or("a Traefik 1 entrypoint needs Name:NAME")?;
        for (k, val) in fields {
            match k.as_str() {
                "address" => self.entry(&name).address = Some(address(&val)?),
                "redirect.entrypoint" => {
                    self.entry(&name).options.insert("redirect-to".into(), val);
                }
                "tls" if val.is_empty() => {
                    self.entry(&name)
                        .options
                        .insert("tls".into(), "true".into());
                }
                "tls" => {
                    return Err(format!(
                        "entrypoint {name}: TLS:CERT,KEY: give the certificate with \
                         --tls.certificate CERT:KEY in switchyard's own flags"
                    ))
                }
                "proxyprotocol.trustedips" => {
                    let list: Vec<String> = items(&val).collect();
                    self.entry(&name)
                        .options
                        .insert("proxy-protocol.trusted-ips".into(), list.join(","));
                }
                "proxyprotocol.insecure" => {
                    if truthy(&val)? {
                        self.entry(&name)
                            .options
                            .insert("proxy-protocol.insecure".into(), "true".into());
                    }
                }
                "compress" => match val.to_ascii_lowercase().as_str() {
                    "true" | "" => self
                        .entry(&name)
                        .middlewares
                        .push("compress@internal".into()),
                    "false" => {}
                    _ => return Err(format!("entrypoint {name}: Compress takes true or false")),
                },
                other => return Err(format!("entrypoint {name}: unknown field {other:?}")),
            }
        }
        Ok(())
    }

    fn provider(&mut self, rest: &str, v: &str) -> Result<(), String> {
        let (kind, opt) = rest.split_once('.').unwrap_or((rest, ""));
        match kind {
            "precedence" => {
                // Ties between providers: switchyard applies Traefik's default order.
                let ours: Vec<String> = v
                    .split(',')
                    .map(|p| p.trim().to_ascii_lowercase())
                    .filter(|p| ["swarm", "docker", "file"].contains(&p.as_str()))
                    .collect();
                let default: Vec<&str> = ["swarm", "docker", "file"]
                    .into_iter()
                    .filter(|p| ours.iter().any(|o| o == p))
                    .collect();
                return if ours == default {
                    self.ignored.push(
                        "providers.precedence: the default order (swarm, docker, file) applies"
                            .to_string(),
                    );
                    Ok(())
                } else {
                    Err("only Traefik's default precedence (swarm, docker, file) is built".into())
                };
            }
            "docker" | "swarm" => {}
            "file" => {
                return match opt {
                    "filename" | "directory" => {
                        if let Some(prev) = self.dynamic_config.replace(v.to_string()) {
                            if prev != v {
                                return Err("give filename or directory, not both".into());
                            }
                        }
                        Ok(())
                    }
                    "watch" | "" | "debugloggeneratedtemplate" => Ok(()),
                    _ => Err("unknown file provider option (filename, directory, watch)".into()),
                }
            }
            other => {
                return Err(format!(
                    "provider {other:?} is not built (docker and swarm are)"
                ))
            }
        }
        // Traefik 2's Swarm mode is the Docker provider with swarmMode=true.
        let swarm_mode = kind == "docker" && opt == "swarmmode";
        if swarm_mode {
            if truthy(v)? {
                self.swarm.on = true;
                self.docker_into_swarm();
                self.rule_syntax.get_or_insert_with(|| "v2".into());
            }
            return Ok(());
        }
        let p = if kind == "swarm" || self.swarm.on && !self.docker.on {
            &mut self.swarm
        } else {
            &mut self.docker
        };
        engine_option(p, opt, v)
    }

    /// `swarmMode` read after other docker.* keys: they were Swarm's all along.
    fn docker_into_swarm(&mut self) {
        if self.docker.on || self.docker.endpoint.is_some() {
            let d = std::mem::take(&mut self.docker);
            let s = &mut self.swarm;
            s.endpoint = s.endpoint.take().or(d.endpoint);
            s.exposed_by_default = s.exposed_by_default.take().or(d.exposed_by_default);
            s.network = s.network.take().or(d.network);
            s.constraints = s.constraints.take().or(d.constraints);
            s.default_rule = s.default_rule.take().or(d.default_rule);
            s.allow_empty = s.allow_empty.take().or(d.allow_empty);
            for (a, b) in s.tls.iter_mut().zip(d.tls) {
                *a = a.take().or(b);
            }
        }
    }

    /// Traefik 1's `--docker.*`.
    fn v1_docker(&mut self, rest: &str, v: &str) -> Result<(), String> {
        match rest {
            "swarmmode" => {
                if truthy(v)? {
                    self.swarm.on = true;
                    self.docker_into_swarm();
                }
                Ok(())
            }
            "domain" => {
                let rule = format!("Host(`{{{{ normalize .Name }}}}.{v}`)");
                let p = if self.swarm.on {
                    &mut self.swarm
                } else {
                    &mut self.docker
                };
                p.default_rule = Some(rule);
                Ok(())
            }
            "constraints" => Err(
                "Traefik 1 constraints (tag==x) are not read: use --providers.docker.constraints \
                 with Label(`key`, `value`) expressions"
                    .into(),
            ),
            "swarmmoderefreshseconds" => {
                let p = &mut self.swarm;
                p.refresh = Some(seconds(v));
                Ok(())
            }
            _ => {
                let p = if self.swarm.on {
                    &mut self.swarm
                } else {
                    &mut self.docker
                };
                engine_option(p, rest, v)
            }
        }
    }

    fn access_log(&mut self, rest: &str, v: &str) -> Result<(), String> {
        match rest {
            "" => {
                if truthy(v)? && self.access_log.is_none() {
                    self.access_log = Some(None);
                }
            }
            "filepath" => self.access_log = Some(Some(v.to_string())),
            "format" => {
                let f = v.to_ascii_lowercase();
                if f != "json" && f != "common" {
                    return Err(format!("unknown format {v:?} (common, json)"));
                }
                self.access_log.get_or_insert(None);
                self.access.insert("--access-log.format", f);
            }
            "filters.statuscodes" => {
                self.access_log.get_or_insert(None);
                self.access.insert("--access-log.status", v.to_string());
            }
            "filters.minduration" => {
                self.access_log.get_or_insert(None);
                self.access.insert("--access-log.min-duration", seconds(v));
            }
            r if r.starts_with("fields.headers.names.") => {
                let name = &r["fields.headers.names.".len()..];
                match v.to_ascii_lowercase().as_str() {
                    "keep" | "redact" => self.access_headers.push(name.to_string()),
                    "drop" => {}
                    _ => return Err(format!("{v:?}: keep, redact or drop")),
                }
            }
            _ => return Err("unknown access log option".into()),
        }
        Ok(())
    }

    fn resolver(&mut self, rest: &str, v: &str) -> Result<(), String> {
        let (name, opt) = rest.split_once('.').unwrap_or((rest, ""));
        let opt = opt
            .strip_prefix("acme.")
            .ok_or("only ACME resolvers (certificatesresolvers.NAME.acme.*) are built")?;
        let (key, value) = match opt {
            "email" => ("email", v.to_string()),
            "caserver" => ("ca-server", v.to_string()),
            "storage" => ("storage", v.to_string()),
            "keytype" => ("key-type", v.to_string()),
            "httpchallenge.entrypoint" => ("http-challenge", v.to_string()),
            "tlschallenge" => ("tls-challenge", truthy(v)?.to_string()),
            "cacertificates" | "cacertificate" => (
                "ca-certificate",
                v.split(',').next().unwrap_or(v).trim().to_string(),
            ),
            "httpchallenge" => return Ok(()),
            o if o.starts_with("dnschallenge") => {
                return Err("DNS-01 is not built: use httpChallenge or tlsChallenge".into())
            }
            o if o.starts_with("eab") => return Err("external account binding is not built".into()),
            _ => return Err("unknown ACME option".into()),
        };
        self.acme
            .entry(name.to_string())
            .or_default()
            .insert(key.to_string(), value);
        Ok(())
    }

    fn finish(mut self) -> Result<Translation, Vec<String>> {
        if self.docker.on && self.swarm.on && self.v1 {
            // v1: `--docker --docker.swarmmode` is one provider in Swarm mode.
            self.docker.on = false;
        }
        let mut args = Vec::new();
        // Entrypoints: Traefik's own (`traefik`) is the admin listener, not a routing one.
        let traefik_ep = self
            .entrypoints
            .remove("traefik")
            .and_then(|e| e.address)
            .unwrap_or_else(|| "0.0.0.0:8080".into());
        if self.entrypoints.is_empty() {
            // Traefik's default: `http` on :80.
            self.entry("http").address = Some("0.0.0.0:80".into());
        }
        // Every Traefik TCP entrypoint serves TLS (for routers with tls) and cleartext on its
        // one port, and h2c with prior knowledge. A UDP entrypoint takes its UDP router only:
        // HTTP and TLS options do not apply to it (Traefik ignores them too).
        for (name, ep) in self.entrypoints.iter_mut() {
            if ep.is_udp() {
                let mut http: Vec<String> = ep
                    .options
                    .keys()
                    .filter(|k| k.as_str() != "udp.timeout")
                    .cloned()
                    .collect();
                ep.options.retain(|k, _| k == "udp.timeout");
                if !ep.tls.is_empty() || !ep.domains.is_empty() {
                    http.push("http.tls".into());
                }
                if !ep.middlewares.is_empty() {
                    http.push("http.middlewares".into());
                }
                if !http.is_empty() {
                    self.ignored.push(format!(
                        "entrypoints.{name}: a UDP entrypoint; its HTTP, TLS and PROXY protocol \
                         options do not apply ({})",
                        http.join(", ")
                    ));
                }
                ep.tls.clear();
                ep.domains.clear();
                ep.middlewares.clear();
                continue;
            }
            ep.options.insert("tls".into(), "auto".into());
            ep.options.insert("h2c".into(), "true".into());
        }
        let names: Vec<String> = self.entrypoints.keys().cloned().collect();
        for (name, ep) in &self.entrypoints {
            let Some(addr) = &ep.address else {
                self.errors.push(format!(
                    "entrypoint {name} has options but no address (--entrypoints.{name}.address)"
                ));
                continue;
            };
            args.push(format!("--entrypoint={name}={addr}"));
            for (k, v) in &ep.options {
                if k == "redirect-to" && !names.contains(v) {
                    self.errors.push(format!(
                        "entrypoint {name} redirects to unknown entrypoint {v:?}"
                    ));
                }
                args.push(format!("--entrypoint.{name}.{k}={v}"));
            }
        }
        if !self.admin_used.is_empty() {
            args.push(format!("--admin={traefik_ep}"));
        } else if !self.api {
            args.push("--admin=off".into());
        }
        for (flag, p) in [("--docker", &self.docker), ("--swarm", &self.swarm)] {
            if !p.on {
                continue;
            }
            args.push(flag.into());
            let mut opt = |name: &str, v: &Option<String>| {
                if let Some(v) = v {
                    args.push(format!("{flag}.{name}={v}"));
                }
            };
            opt("endpoint", &p.endpoint);
            opt("exposed-by-default", &p.exposed_by_default);
            opt("network", &p.network);
            opt("constraints", &p.constraints);
            opt("tls-ca", &p.tls[0]);
            opt("tls-cert", &p.tls[1]);
            opt("tls-key", &p.tls[2]);
            opt("allow-empty-services", &p.allow_empty);
            if flag == "--swarm" {
                opt("refresh", &p.refresh);
            } else {
                opt("use-bind-port-ip", &p.use_bind_port_ip);
            }
        }
        if let Some(d) = &self.dynamic_config {
            args.push(format!("--dynamic-config={d}"));
        }
        if let Some(l) = &self.log_level {
            args.push(format!("--log-level={l}"));
        }
        if let Some(f) = &self.log_format {
            args.push(format!("--log-format={f}"));
        }
        if let Some(file) = &self.access_log {
            args.push(format!("--access-log={}", file.as_deref().unwrap_or("-")));
            for (k, v) in &self.access {
                args.push(format!("{k}={v}"));
            }
            if !self.access_headers.is_empty() {
                args.push(format!(
                    "--access-log.headers={}",
                    self.access_headers.join(",")
                ));
            }
        }
        if !self.trusted_ips.is_empty() {
            self.trusted_ips.sort();
            self.trusted_ips.dedup();
            args.push(format!("--trusted-ips={}", self.trusted_ips.join(",")));
        }
        for (k, v) in &self.timeouts {
            args.push(format!("{k}={v}"));
        }
        for (cert, key) in self.certificates.values() {
            args.push(format!("--tls.certificate={cert}:{key}"));
        }
        for (name, keys) in &self.acme {
            for (k, v) in keys {
                args.push(format!("--acme.{name}.{k}={v}"));
            }
        }
        let script = self.script(&names);
        if !self.errors.is_empty() {
            self.errors.sort();
            return Err(self.errors);
        }
        Ok(Translation {
            args,
            script,
            ignored: self.ignored,
        })
    }

    fn script(&mut self, names: &[String]) -> String {
        let mut opts = Vec::new();
        let rules: Vec<&String> = [&self.docker, &self.swarm]
            .iter()
            .filter(|p| p.on)
            .filter_map(|p| p.default_rule.as_ref())
            .collect();
        if let Some(first) = rules.first() {
            if rules.iter().any(|r| r != first) {
                self.errors.push(
                    "the Docker and Swarm providers have different default rules: switchyard \
                     has one for both"
                        .into(),
                );
            }
            opts.push(format!("default_rule: {}", rhai_str(first)));
        }
        // Traefik's default entrypoints are never UDP ones (cmd/traefik: getDefaultsEntrypoints).
        let mut defaults: Vec<String> = self
            .entrypoints
            .iter()
            .filter(|(_, e)| e.as_default && !e.is_udp())
            .map(|(n, _)| n.clone())
            .collect();
        defaults.extend(self.default_entrypoints.iter().cloned());
        defaults.sort();
        defaults.dedup();
        for d in &defaults {
            if !names.contains(d) {
                self.errors
                    .push(format!("default entrypoint {d:?} is not defined"));
            }
        }
        if !defaults.is_empty() {
            let list: Vec<String> = defaults.iter().map(|d| rhai_str(d)).collect();
            opts.push(format!("entrypoints: [{}]", list.join(", ")));
        }
        if let Some(s) = &self.rule_syntax {
            opts.push(format!("rule_syntax: {}", rhai_str(s)));
        }
        let tls: Vec<String> = self
            .entrypoints
            .iter()
            .filter(|(_, e)| !e.tls.is_empty() || !e.domains.is_empty())
            .map(|(n, e)| {
                let mut fields: Vec<String> = e
                    .tls
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", rhai_str(v)))
                    .collect();
                if !e.domains.is_empty() {
                    let ds: Vec<String> = e
                        .domains
                        .values()
                        .map(|(main, sans)| {
                            let sans: Vec<String> = sans
                                .split(',')
                                .map(str::trim)
                                .filter(|s| !s.is_empty())
                                .map(rhai_str)
                                .collect();
                            format!(
                                "#{{ main: {}, sans: [{}] }}",
                                rhai_str(main),
                                sans.join(", ")
                            )
                        })
                        .collect();
                    fields.push(format!("domains: [{}]", ds.join(", ")));
                }
                format!("{}: #{{ {} }}", rhai_str(n), fields.join(", "))
            })
            .collect();
        if !tls.is_empty() {
            opts.push(format!("entrypoint_tls: #{{ {} }}", tls.join(", ")));
        }
        let mws: Vec<String> = self
            .entrypoints
            .iter()
            .filter(|(_, e)| !e.middlewares.is_empty())
            .map(|(n, e)| {
                let list: Vec<String> = e.middlewares.iter().map(|m| rhai_str(m)).collect();
                format!("{}: [{}]", rhai_str(n), list.join(", "))
            })
            .collect();
        if !mws.is_empty() {
            opts.push(format!("entrypoint_middlewares: #{{ {} }}", mws.join(", ")));
        }
        let exposed = [&self.docker, &self.swarm]
            .iter()
            .filter(|p| p.on)
            .any(|p| {
                p.exposed_by_default
                    .as_deref()
                    .is_some_and(|v| truthy(v) == Ok(false))
            });
        if exposed {
            opts.push("exposed_by_default: false".into());
        }
        let call = if opts.is_empty() {
            "traefik::routes(catalog);".to_string()
        } else {
            format!("traefik::routes(catalog, #{{ {} }});", opts.join(", "))
        };
        format!(
            "// Made by `switchyard traefik` from Traefik's static configuration: Traefik labels\n\
             // are read with its defaults (see docs/traefik.md).\n\
             import \"traefik\" as traefik;\n{call}\n"
        )
    }
}

/// Traefik durations (`10s`, `1m`, a bare number of seconds) as switchyard durations.
fn seconds(v: &str) -> String {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        format!("{v}s")
    } else {
        v.to_string()
    }
}

fn engine_option(p: &mut Provider, opt: &str, v: &str) -> Result<(), String> {
    let v = v.to_string();
    match opt {
        "" => p.on = truthy(&v)?,
        "endpoint" => {
            p.on = true;
            p.endpoint = Some(v)
        }
        "exposedbydefault" => {
            truthy(&v)?;
            p.on = true;
            p.exposed_by_default = Some(v)
        }
        "network" => p.network = Some(v),
        "constraints" => p.constraints = Some(v),
        "defaultrule" => p.default_rule = Some(v),
        "refreshseconds" | "swarmmoderefreshseconds" => p.refresh = Some(seconds(&v)),
        "tls.ca" => p.tls[0] = Some(v),
        "tls.cert" => p.tls[1] = Some(v),
        "tls.key" => p.tls[2] = Some(v),
        "allowemptyservices" => p.allow_empty = Some(v),
        "usebindportip" => {
            truthy(&v)?;
            p.use_bind_port_ip = Some(v);
        }
        "tls.insecureskipverify" => {
            if truthy(&v)? {
                return Err(
                    "the engine's certificate is always verified: give its CA with tls.ca".into(),
                );
            }
        }
        "username" | "password" => {
            return Err("engine basic auth is not built: use TLS client certificates".into())
        }
        _ => return Err("unknown provider option".into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traefik::source::parse_args;

    fn run(flags: &str) -> Result<Translation, Vec<String>> {
        let args: Vec<String> = flags.split_whitespace().map(String::from).collect();
        translate(&parse_args(&args).unwrap())
    }

    fn args(flags: &str) -> String {
        run(flags)
            .unwrap_or_else(|e| panic!("{flags}: {e:?}"))
            .args
            .join(" ")
    }

    #[test]
    fn the_articles_command_lines() {
        let cases = [
            // Traefik 1 on one host, then in Swarm mode (the seeds' stack files).
            (
                "--docker --docker.watch",
                "--entrypoint=http=0.0.0.0:80 --entrypoint.http.h2c=true --entrypoint.http.tls=auto --admin=off --docker",
            ),
            (
                "--api --docker --docker.swarmMode --docker.exposedbydefault=false",
                "--entrypoint=http=0.0.0.0:80 --entrypoint.http.h2c=true --entrypoint.http.tls=auto --admin=0.0.0.0:8080 --swarm --swarm.exposed-by-default=false",
            ),
            (
                "--docker --docker.swarmmode --docker.watch --web --loglevel=DEBUG",
                "--entrypoint=http=0.0.0.0:80 --entrypoint.http.h2c=true --entrypoint.http.tls=auto --admin=0.0.0.0:8080 --swarm --log-level=debug",
            ),
            (
                "--docker --docker.endpoint=tcp://socat:2375 --docker.watch --docker.swarmMode",
                "--entrypoint=http=0.0.0.0:80 --entrypoint.http.h2c=true --entrypoint.http.tls=auto --admin=off --swarm --swarm.endpoint=tcp://socat:2375",
            ),
            // Traefik 2/3 (the fourth article's stack).
            (
                "--api.insecure=true --providers.docker --accesslog --log.level=DEBUG \
                 --entrypoints.web.address=:80",
                "--entrypoint=web=0.0.0.0:80 --entrypoint.web.h2c=true --entrypoint.web.tls=auto --admin=0.0.0.0:8080 --docker --log-level=debug --access-log=-",
            ),
        ];
        for (flags, want) in cases {
            assert_eq!(args(flags), want, "{flags}");
        }
    }

    #[test]
    fn entrypoints_redirects_tls_and_forwarded_headers() {
        let t = run("--entrypoints.web.address=127.0.0.1:8000 \
             --entrypoints.web.http.redirections.entrypoint.to=websecure \
             --entrypoints.web.http.redirections.entrypoint.scheme=https \
             --entrypoints.websecure.address=:8443 \
             --entrypoints.websecure.asDefault=true \
             --entrypoints.websecure.http.tls.certresolver=le \
             --entrypoints.websecure.http.tls.domains[0].main=a.com \
             --entrypoints.websecure.http.tls.domains[0].sans=www.a.com,b.a.com \
             --entrypoints.web.forwardedHeaders.trustedIPs=10.0.0.0/8,127.0.0.1 \
             --entrypoints.websecure.forwardedHeaders.trustedIPs=10.0.0.0/8 \
             --entrypoints.traefik.address=127.0.0.1:9000 --ping \
             --entrypoints.websecure.transport.respondingTimeouts.idleTimeout=90 \
             --providers.swarm.endpoint=tcp://127.0.0.1:2375 --providers.swarm.refreshSeconds=5 \
             --providers.swarm.defaultRule=Host(`{{.Name}}.example.com`) \
             --certificatesresolvers.le.acme.email=ops@a.com \
             --certificatesresolvers.le.acme.storage=/data/acme.json \
             --certificatesresolvers.le.acme.httpchallenge.entrypoint=web")
        .unwrap();
        assert_eq!(
            t.args,
            [
                "--entrypoint=web=127.0.0.1:8000",
                "--entrypoint.web.h2c=true",
                "--entrypoint.web.redirect-scheme=https",
                "--entrypoint.web.redirect-to=websecure",
                "--entrypoint.web.tls=auto",
                "--entrypoint=websecure=0.0.0.0:8443",
                "--entrypoint.websecure.h2c=true",
                "--entrypoint.websecure.tls=auto",
                "--admin=127.0.0.1:9000",
                "--swarm",
                "--swarm.endpoint=tcp://127.0.0.1:2375",
                "--swarm.refresh=5s",
                "--trusted-ips=10.0.0.0/8,127.0.0.1",
                "--idle-timeout=90s",
                "--acme.le.email=ops@a.com",
                "--acme.le.http-challenge=web",
                "--acme.le.storage=/data/acme.json",
            ]
        );
        assert!(
            t.script.contains(
                "traefik::routes(catalog, #{ default_rule: \"Host(`{{.Name}}.example.com`)\", \
                 entrypoints: [\"websecure\"], entrypoint_tls: #{ \"websecure\": #{ resolver: \
                 \"le\", domains: [#{ main: \"a.com\", sans: [\"www.a.com\", \"b.a.com\"] }] } } });"
            ),
            "{}",
            t.script
        );
    }

    #[test]
    fn traefik_1_entrypoints_domain_and_default_entrypoints() {
        // One `--entryPoints` value holds spaces (quoted in the shell).
        let pairs = vec![
            ("docker".to_string(), "true".to_string()),
            ("docker.domain".to_string(), "docker.localhost".to_string()),
            ("defaultentrypoints".to_string(), "http,https".to_string()),
            (
                "entrypoints".to_string(),
                "Name:http Address::80 Redirect.EntryPoint:https".to_string(),
            ),
            (
                "entrypoints".to_string(),
                "Name:https Address::443 TLS".to_string(),
            ),
            ("api".to_string(), "true".to_string()),
        ];
        let t = translate(&pairs).unwrap();
        assert_eq!(
            t.args,
            [
                "--entrypoint=http=0.0.0.0:80",
                "--entrypoint.http.h2c=true",
                "--entrypoint.http.redirect-to=https",
                "--entrypoint.http.tls=auto",
                "--entrypoint=https=0.0.0.0:443",
                "--entrypoint.https.h2c=true",
                "--entrypoint.https.tls=auto",
                "--admin=0.0.0.0:8080",
                "--docker",
            ]
        );
        assert!(t.script.contains(
            "#{ default_rule: \"Host(`{{ normalize .Name }}.docker.localhost`)\", entrypoints: [\"http\", \"https\"] }"
        ), "{}", t.script);
    }

    #[test]
    fn traefik_2_swarm_mode_reads_rules_in_v2_syntax() {
        let t = run("--providers.docker=true --providers.docker.swarmMode=true \
             --providers.docker.exposedbydefault=false --providers.docker.network=proxy")
        .unwrap();
        assert_eq!(
            t.args.join(" "),
            "--entrypoint=http=0.0.0.0:80 --entrypoint.http.h2c=true --entrypoint.http.tls=auto --admin=off --swarm --swarm.exposed-by-default=false --swarm.network=proxy"
        );
        assert!(t.script.contains("rule_syntax: \"v2\""), "{}", t.script);
        assert!(
            t.script.contains("exposed_by_default: false"),
            "{}",
            t.script
        );
    }

    #[test]
    fn refused_keys_name_themselves_and_ignored_ones_say_why() {
        let errs = run("--providers.file.directory=/etc/traefik/dynamic \
             --providers.file.filename=/etc/traefik/dynamic.yml \
             --entrypoints.web.address=:80 --entrypoints.dns.address=:53/sctp \
             --tcpServersTransport.tls.insecureSkipVerify=true \
             --certificatesresolvers.le.acme.dnschallenge.provider=ovh \
             --entrypoints.web.http.redirections.entrypoint.to=nowhere \
             --metrics.datadog=true --nonsense=1")
        .unwrap_err();
        let want = [
            "--certificatesresolvers.le.acme.dnschallenge.provider: DNS-01",
            "--entrypoints.dns.address: address \":53/sctp\": unknown protocol",
            "--metrics.datadog: only Prometheus",
            "--nonsense: unknown Traefik option",
            "--providers.file.filename: give filename or directory, not both",
            "--tcpserverstransport.tls.insecureskipverify: TLS to TCP servers",
            "entrypoint web redirects to unknown entrypoint \"nowhere\"",
        ];
        assert_eq!(errs.len(), want.len(), "{errs:#?}");
        for (e, w) in errs.iter().zip(want) {
            assert!(e.starts_with(w), "{e} (want {w}…)");
        }
        let t = run(
            "--providers.docker --global.checkNewVersion=false --api.dashboard=true \
             --tracing.jaeger=true --entrypoints.web.address=:80 \
             --entrypoints.web.http3=true --metrics.prometheus=true \
             --metrics.prometheus.buckets=0.1,0.3",
        )
        .unwrap();
        assert_eq!(
            t.ignored,
            [
                "global.checknewversion: version checks and usage statistics: switchyard sends nothing",
                "api.dashboard: the dashboard is always part of the admin API",
                "tracing.jaeger: tracing export is not built; the access log and /metrics remain",
                "entrypoints.web.http3: HTTP/3 is not built: clients use HTTP/2 or HTTP/1.1",
                "metrics.prometheus.buckets: the admin API's /metrics has fixed buckets and labels",
            ]
        );
        assert!(t.args.contains(&"--admin=0.0.0.0:8080".to_string()));
    }

    /// The command lines of Traefik's own user guides (docs/content/user-guides/docker-compose:
    /// basic-example, acme-http, acme-tls), as written there.
    #[test]
    fn traefiks_user_guide_command_lines() {
        let basic = "--api.insecure=true --providers.docker=true \
             --providers.docker.exposedbydefault=false --entryPoints.web.address=:80";
        assert!(args(basic).contains("--docker --docker.exposed-by-default=false"));
        let http = "--api.insecure=true --providers.docker=true \
             --providers.docker.exposedbydefault=false --entryPoints.web.address=:80 \
             --entryPoints.websecure.address=:443 \
             --certificatesresolvers.myresolver.acme.httpchallenge=true \
             --certificatesresolvers.myresolver.acme.httpchallenge.entrypoint=web \
             --certificatesresolvers.myresolver.acme.email=postmaster@example.com \
             --certificatesresolvers.myresolver.acme.storage=/letsencrypt/acme.json";
        let a = args(http);
        for want in [
            "--entrypoint=websecure=0.0.0.0:443",
            "--entrypoint.websecure.tls=auto",
            "--admin=0.0.0.0:8080",
            "--acme.myresolver.email=postmaster@example.com",
            "--acme.myresolver.http-challenge=web",
            "--acme.myresolver.storage=/letsencrypt/acme.json",
        ] {
            assert!(a.contains(want), "{want} missing from {a}");
        }
        let tls = "--api.insecure=true --providers.docker=true \
             --providers.docker.exposedbydefault=false --entryPoints.websecure.address=:443 \
             --certificatesresolvers.myresolver.acme.tlschallenge=true \
             --certificatesresolvers.myresolver.acme.email=postmaster@example.com \
             --certificatesresolvers.myresolver.acme.storage=/letsencrypt/acme.json";
        let a = args(tls);
        assert!(a.contains("--acme.myresolver.tls-challenge=true"), "{a}");
        assert!(
            !a.contains("--entrypoint=http="),
            "no default entrypoint: {a}"
        );
    }

    /// Traefik's TCP and UDP entrypoint keys (pkg/config/static/entrypoints.go): a `/udp`
    /// address, `udp.timeout`, `proxyProtocol.trustedIPs` / `insecure`; UDP entrypoints are never
    /// default ones and get no HTTP options.
    #[test]
    fn udp_entrypoints_and_proxy_protocol() {
        let t = run("--providers.docker --entrypoints.web.address=:80 \
             --entrypoints.web.asDefault=true \
             --entrypoints.web.proxyProtocol.trustedIPs=10.0.0.1,192.168.0.0/16 \
             --entrypoints.pg.address=127.0.0.1:5432/tcp \
             --entrypoints.pg.proxyProtocol.insecure=true \
             --entrypoints.dns.address=:53/udp --entrypoints.dns.udp.timeout=10 \
             --entrypoints.dns.asDefault=true \
             --entrypoints.dns.http.redirections.entrypoint.to=web \
             --tcpServersTransport.dialTimeout=10s")
        .unwrap();
        assert_eq!(
            t.args,
            [
                "--entrypoint=dns=0.0.0.0:53/udp",
                "--entrypoint.dns.udp.timeout=10s",
                "--entrypoint=pg=127.0.0.1:5432",
                "--entrypoint.pg.h2c=true",
                "--entrypoint.pg.proxy-protocol.insecure=true",
                "--entrypoint.pg.tls=auto",
                "--entrypoint=web=0.0.0.0:80",
                "--entrypoint.web.h2c=true",
                "--entrypoint.web.proxy-protocol.trusted-ips=10.0.0.1,192.168.0.0/16",
                "--entrypoint.web.tls=auto",
                "--admin=off",
                "--docker",
            ]
        );
        assert!(
            t.script.contains("entrypoints: [\"web\"]"),
            "dns is not a default entrypoint: {}",
            t.script
        );
        assert!(
            t.ignored
                .iter()
                .any(|i| i.starts_with("entrypoints.dns: a UDP entrypoint")
                    && i.contains("redirect-to")),
            "{:?}",
            t.ignored
        );
        assert!(
            t.ignored
                .iter()
                .any(|i| i.starts_with("tcpserverstransport.dialtimeout")),
            "{:?}",
            t.ignored
        );
        // The flags parse as `switchyard run` parses them: dns is a UDP entrypoint there.
        let cfg = crate::traefik::config(&t).unwrap();
        let env = cfg.build_env();
        assert_eq!(env.udp_entrypoints, ["dns"]);
        assert!(env.entrypoints.contains(&"pg".to_string()));
        let web = cfg.settings.entrypoint("web").unwrap();
        assert_eq!(web.proxy_protocol.trusted.len(), 2);
        assert!(
            cfg.settings
                .entrypoint("pg")
                .unwrap()
                .proxy_protocol
                .insecure
        );
    }

    #[test]
    fn provider_precedence_is_accepted_only_in_the_order_that_is_built() {
        let t = run("--providers.docker --providers.precedence=gateway,swarm,docker,file").unwrap();
        assert!(t
            .ignored
            .iter()
            .any(|i| i.starts_with("providers.precedence")));
        assert!(run("--providers.docker --providers.precedence=file,docker").is_err());
    }
}
