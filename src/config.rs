//! Static configuration: command-line flags, `SWITCHYARD_*` environment variables and a TOML file,
//! merged into one `Config`.
//!
//! Precedence: flag > environment variable > TOML file > default. Unknown TOML keys are errors
//! naming the key. Owns parsing of durations, entrypoint addresses and CIDR lists. Must never:
//! start anything; it only describes what `run` and `check` will do.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use ipnet::IpNet;
use serde::Deserialize;

use crate::script::ScriptsOrigin;
use crate::settings::{EntrypointOptions, EntrypointRedirect, Settings};

/// `flags.over(file)`: one concern's settings with each field the flags (or env) left unset
/// taken from the TOML file's table. The concern's struct is the single definition of its flags,
/// env variables and TOML keys (clap's `Args` and serde's `Deserialize` on the same fields), so
/// precedence (flag > env > file) is written once here, and defaults once in its `resolve_*`.
macro_rules! layered {
    ($t:ty { $($field:ident),* $(,)? }) => {
        impl $t {
            fn over(&self, file: Option<&Self>) -> Self {
                let mut out = self.clone();
                if let Some(file) = file {
                    $(
                        if out.$field.is_none() {
                            out.$field = file.$field.clone();
                        }
                    )*
                }
                out
            }
        }
    };
}

/// A TOML value written as a list (`["a", "b"]`) or as comma-separated text (`"a,b"`), read as
/// the text the flag would take.
/// A list in the TOML file: an array of strings or one comma-separated string.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
enum ListOrText {
    List(Vec<String>),
    Text(String),
}

fn list_or_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<ListOrText>::deserialize(d)?.map(|v| match v {
        ListOrText::List(l) => l.join(","),
        ListOrText::Text(t) => t,
    }))
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, schemars::JsonSchema, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Flags shared by `run` and `check`.
#[derive(Debug, Clone, Default, Args)]
pub struct CommonArgs {
    /// TOML file with the same settings as the flags (flags and env vars win).
    #[arg(long, env = "SWITCHYARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Folder of route scripts (`*.rhai`) [default: ./scripts, else the embedded default].
    #[arg(long, env = "SWITCHYARD_SCRIPTS", value_name = "DIR")]
    pub scripts: Option<PathBuf>,
    /// JSON catalog of services, visible to scripts as `catalog`.
    #[arg(long, env = "SWITCHYARD_CATALOG", value_name = "FILE")]
    pub catalog: Option<PathBuf>,
    /// Traefik dynamic configuration (its file provider): a YAML/TOML file or a folder of them,
    /// watched; read by the `traefik` stdlib module like labels (`name@file`).
    #[arg(long, env = "SWITCHYARD_DYNAMIC_CONFIG", value_name = "PATH")]
    pub dynamic_config: Option<PathBuf>,
    /// An entrypoint (repeatable; env: comma-separated) [default: web=0.0.0.0:8080].
    #[arg(
        long = "entrypoint",
        env = "SWITCHYARD_ENTRYPOINTS",
        value_name = "NAME=ADDR",
        value_delimiter = ','
    )]
    pub entrypoints: Vec<String>,
    /// An entrypoint option, also written `--entrypoint.NAME.KEY=VALUE` (repeatable; env:
    /// comma-separated). Keys: `max-connections`, `path.sanitize`, `path.merge-slashes`,
    /// `path.allow-encoded-slash`, `path.allow-encoded-backslash`, `path.allow-encoded-null`,
    /// `path.allow-above-root`, `tls` (terminate TLS; `auto`: TLS and cleartext on one port, by the client's first byte), `tls.min-version`, `tls.max-version`,
    /// `tls.cipher-suites`, `tls.alpn`, `tls.client-auth` (none, require, verify-if-given),
    /// `tls.client-ca`, `tls.strict-sni`, `tls.default-certificate` (CERT:KEY for names no certificate lists), `h2c` (cleartext HTTP/2 with prior knowledge),
    /// `http2.max-concurrent-streams`, `http2.initial-stream-window`,
    /// `http2.initial-connection-window`, `http2.keep-alive-interval`, `redirect-to` (another entrypoint: every request is
    /// redirected there), `redirect-scheme` (default https), `redirect-permanent` (default true),
    /// `udp.timeout` (a UDP entrypoint, `NAME=ADDR/udp`: idle session end), `proxy-protocol.trusted-ips`
    /// (clients that may send a PROXY v1/v2 header), `proxy-protocol.insecure`, `tcp.hello-timeout`,
    /// `tcp.removed-route-grace`.
    #[arg(
        long = "entrypoint-option",
        env = "SWITCHYARD_ENTRYPOINT_OPTIONS",
        value_name = "NAME.KEY=VALUE",
        value_delimiter = ','
    )]
    pub entrypoint_options: Vec<String>,
    /// Log level or tracing filter (e.g. `info`, `debug`, `switchyard=debug`) [default: info].
    #[arg(long, env = "SWITCHYARD_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format [default: text].
    #[arg(long, env = "SWITCHYARD_LOG_FORMAT", value_name = "FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(flatten, next_help_heading = "Docker provider")]
    pub docker: DockerArgs,
    #[command(flatten, next_help_heading = "Swarm provider")]
    pub swarm: SwarmArgs,
    #[command(flatten, next_help_heading = "TLS certificates")]
    pub tls: TlsArgs,
    /// A certificate resolver option, also written `--acme.NAME.KEY=VALUE` (repeatable; env:
    /// comma-separated). Keys: `email`, `ca-server` (ACME directory URL) [default: Let's
    /// Encrypt], `ca-certificate` (roots for a private CA), `http-challenge` (a cleartext
    /// entrypoint), `tls-challenge` (true), `storage` (JSON file) [default: acme-NAME.json],
    /// `key-type` (EC256, EC384), `renew-when-left` (percent of lifetime) [default: 33%],
    /// `retry-base` (first wait after a failure) [default: 1m], `on-demand` (true: order at the
    /// first handshake for a name the scripts' `on_demand(...)` allows), `on-demand-limit`
    /// (COUNT/DURATION) [default: 10/1m].
    #[arg(
        long = "acme",
        env = "SWITCHYARD_ACME",
        value_name = "NAME.KEY=VALUE",
        value_delimiter = ',',
        help_heading = "TLS certificates"
    )]
    pub acme: Vec<String>,
}

/// Certificate files as flags (`--tls.KEY`), env (`SWITCHYARD_TLS_KEY`) and the `[tls]` table of
/// the TOML file: one definition for all three. A pair is written `CERT_FILE:KEY_FILE` (in the
/// file also `{ cert = "…", key = "…" }`); scripts add their own with `tls_certificate`.
#[derive(Debug, Clone, Default, Args, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsArgs {
    /// A certificate (PEM chain, leaf first) and its key served on TLS entrypoints, chosen by
    /// SNI among the names it lists (repeatable; env: comma-separated).
    #[arg(
        id = "tls.certificate",
        long = "tls.certificate",
        env = "SWITCHYARD_TLS_CERTIFICATES",
        value_name = "CERT:KEY",
        value_delimiter = ','
    )]
    #[serde(default, deserialize_with = "cert_pairs")]
    #[schemars(with = "Vec<CertPairText>")]
    pub certificates: Vec<String>,
    /// The certificate served when no other lists the name a client asks for [default: a
    /// self-signed one made at start].
    #[arg(
        id = "tls.default-certificate",
        long = "tls.default-certificate",
        env = "SWITCHYARD_TLS_DEFAULT_CERTIFICATE",
        value_name = "CERT:KEY"
    )]
    #[serde(default, deserialize_with = "cert_pair")]
    #[schemars(with = "Option<CertPairText>")]
    pub default_certificate: Option<String>,
    /// A store every router replica shares — the certificate resolvers' account, certificates,
    /// challenge answers and order locks, and `rate_limit(#{ store })` buckets:
    /// `redis://[user:password@]host:port/db`, `rediss://…` for TLS to Redis, or
    /// `redis+sentinel://[user:password@]host:port[,host:port…]/MASTER/db` to follow the master
    /// Redis Sentinel names.
    #[arg(
        id = "store",
        long = "store",
        env = "SWITCHYARD_STORE",
        value_name = "URL"
    )]
    pub store: Option<String>,
    /// A 32-byte key (raw, 64 hex digits or base64) that seals certificate keys in the store
    /// [default: none: keys are stored unencrypted, with a warning].
    #[arg(
        id = "store.key-file",
        long = "store.key-file",
        env = "SWITCHYARD_STORE_KEY_FILE",
        value_name = "FILE"
    )]
    pub store_key_file: Option<PathBuf>,
    /// PEM file of the CA certificates a `rediss://` store is checked against
    /// [default: the system's roots].
    #[arg(
        id = "store.ca-file",
        long = "store.ca-file",
        env = "SWITCHYARD_STORE_CA_FILE",
        value_name = "FILE"
    )]
    pub store_ca_file: Option<PathBuf>,
}

/// A certificate pair in the TOML file: `"cert:key"` or `{ cert = "…", key = "…" }`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
enum CertPairText {
    Text(String),
    Table { cert: String, key: String },
}

impl CertPairText {
    fn text(self) -> String {
        match self {
            CertPairText::Text(t) => t,
            CertPairText::Table { cert, key } => format!("{cert}:{key}"),
        }
    }
}

fn cert_pairs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Vec::<CertPairText>::deserialize(d)?
        .into_iter()
        .map(CertPairText::text)
        .collect())
}

fn cert_pair<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<CertPairText>::deserialize(d)?.map(CertPairText::text))
}

/// Certificate files, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    pub certificates: Vec<crate::tls::CertFiles>,
    pub default_certificate: Option<crate::tls::CertFiles>,
    /// The shared store's URL (`redis://…`).
    pub store: Option<String>,
    pub store_key_file: Option<PathBuf>,
    /// CA certificates for a `rediss://` store (system roots when absent).
    pub store_ca_file: Option<PathBuf>,
}

/// `CERT:KEY` as files.
fn parse_cert_pair(s: &str, what: &str) -> anyhow::Result<crate::tls::CertFiles> {
    let (cert, key) = s.trim().split_once(':').with_context(|| {
        format!("{what} {s:?}: write CERT_FILE:KEY_FILE, e.g. /certs/a.crt:/certs/a.key")
    })?;
    Ok(crate::tls::CertFiles {
        cert: PathBuf::from(cert.trim()),
        key: PathBuf::from(key.trim()),
    })
}

/// Certificate resolvers: the `[acme.NAME]` tables, then `--acme NAME.KEY=VALUE` flags over
/// them key by key; each checked against the entrypoints.
fn resolve_acme(
    flags: &[String],
    file: Option<&BTreeMap<String, BTreeMap<String, toml::Value>>>,
    entrypoints: &[(String, SocketAddr)],
    options: &BTreeMap<String, EntrypointOptions>,
) -> anyhow::Result<Vec<crate::acme::ResolverConfig>> {
    let mut resolvers: BTreeMap<String, crate::acme::ResolverConfig> = BTreeMap::new();
    let mut set = |name: &str, key: &str, value: &str| -> anyhow::Result<()> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("invalid certificate resolver name {name:?}: use letters, digits, - and _");
        }
        resolvers
            .entry(name.to_string())
            .or_insert_with(|| crate::acme::ResolverConfig::new(name))
            .set(key, value)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("certificate resolver {name:?}"))
    };
    for (name, table) in file.into_iter().flatten() {
        for (key, value) in table {
            let text = match value {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            set(name, key, &text)?;
        }
    }
    for o in flags.iter().filter(|o| !o.trim().is_empty()) {
        let err =
            || format!("invalid --acme {o:?}: write NAME.KEY=VALUE, e.g. le.email=ops@example.com");
        let (target, value) = o.split_once('=').with_context(err)?;
        let (name, key) = target.split_once('.').with_context(err)?;
        set(name, key, value)?;
    }
    let eps: Vec<(String, bool, bool)> = entrypoints
        .iter()
        .map(|(n, _)| {
            let o = options.get(n);
            let tls = o.is_some_and(|o| o.tls.is_some());
            (n.clone(), tls, !tls || o.is_some_and(|o| o.tls_optional))
        })
        .collect();
    let resolvers: Vec<_> = resolvers.into_values().collect();
    for r in &resolvers {
        r.check_modes(&eps).map_err(anyhow::Error::msg)?;
    }
    Ok(resolvers)
}

/// Flags (a non-empty list wins whole) over the `[tls]` table.
fn resolve_tls(args: &TlsArgs, file: Option<&TlsArgs>) -> anyhow::Result<TlsConfig> {
    let none = TlsArgs::default();
    let f = file.unwrap_or(&none);
    let list = if args.certificates.is_empty() {
        &f.certificates
    } else {
        &args.certificates
    };
    Ok(TlsConfig {
        certificates: list
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| parse_cert_pair(s, "--tls.certificate"))
            .collect::<anyhow::Result<_>>()?,
        default_certificate: args
            .default_certificate
            .as_ref()
            .or(f.default_certificate.as_ref())
            .map(|s| parse_cert_pair(s, "--tls.default-certificate"))
            .transpose()?,
        store: match args.store.clone().or_else(|| f.store.clone()) {
            Some(u)
                if u.starts_with("redis://")
                    || u.starts_with("rediss://")
                    || u.starts_with("redis+sentinel://") =>
            {
                Some(u)
            }
            Some(u) => bail!(
                "--store {}: write redis://[user:password@]host:port/db (rediss:// for TLS, \
                 redis+sentinel://host:port[,host:port]/MASTER/db for Sentinel)",
                crate::acme::shared::redact(&u)
            ),
            None => None,
        },
        store_key_file: args
            .store_key_file
            .clone()
            .or_else(|| f.store_key_file.clone()),
        store_ca_file: args
            .store_ca_file
            .clone()
            .or_else(|| f.store_ca_file.clone()),
    })
}

/// Declares a Docker-engine provider's settings struct: flags `--PREFIX.KEY`, env
/// `SWITCHYARD_ENV_KEY` and the `[providers.PREFIX]` table of the TOML file (`key`, snake case),
/// one definition for all three. The connection, network and exposure keys are the same for
/// both providers (written once here); each adds its own keys after them.
macro_rules! engine_args {
    (
        $(#[$meta:meta])*
        $name:ident, $prefix:literal, $env:literal, on: $on:literal, peer: $peer:literal,
        things: $things:literal, network: $network:literal, { $($extra:tt)* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, Args, Deserialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            #[arg(
                help = concat!($on, " (also on when `[providers.", $prefix, "]` is in the file)"),
                id = $prefix,
                long = $prefix,
                env = concat!("SWITCHYARD_", $env)
            )]
            #[serde(skip)]
            pub enabled: bool,
            #[arg(
                help = concat!(
                    "The ", $peer, "'s API endpoint: unix:///path, tcp://host:port or ",
                    "https://host:port [default: $DOCKER_HOST, else unix:///var/run/docker.sock]"
                ),
                id = concat!($prefix, ".endpoint"),
                long = concat!($prefix, ".endpoint"),
                env = concat!("SWITCHYARD_", $env, "_ENDPOINT"),
                value_name = "URL"
            )]
            pub endpoint: Option<String>,
            #[arg(
                help = concat!(
                    "CA certificate that signed the ", $peer, "'s certificate (https endpoints)"
                ),
                id = concat!($prefix, ".tls-ca"),
                long = concat!($prefix, ".tls-ca"),
                env = concat!("SWITCHYARD_", $env, "_TLS_CA"),
                value_name = "FILE"
            )]
            pub tls_ca: Option<PathBuf>,
            #[arg(
                help = concat!("Client certificate for the ", $peer, "'s client-certificate auth"),
                id = concat!($prefix, ".tls-cert"),
                long = concat!($prefix, ".tls-cert"),
                env = concat!("SWITCHYARD_", $env, "_TLS_CERT"),
                value_name = "FILE"
            )]
            pub tls_cert: Option<PathBuf>,
            /// Key of the client certificate.
            #[arg(
                id = concat!($prefix, ".tls-key"),
                long = concat!($prefix, ".tls-key"),
                env = concat!("SWITCHYARD_", $env, "_TLS_KEY"),
                value_name = "FILE"
            )]
            pub tls_key: Option<PathBuf>,
            #[arg(
                help = concat!(
                    "Network whose address servers use when ", $things, " have several and no ",
                    $network, " label"
                ),
                id = concat!($prefix, ".network"),
                long = concat!($prefix, ".network"),
                env = concat!("SWITCHYARD_", $env, "_NETWORK"),
                value_name = "NAME"
            )]
            pub network: Option<String>,
            #[arg(
                help = concat!("Expose ", $things, " without `traefik.enable=true` [default: true]"),
                id = concat!($prefix, ".exposed-by-default"),
                long = concat!($prefix, ".exposed-by-default"),
                env = concat!("SWITCHYARD_", $env, "_EXPOSED_BY_DEFAULT"),
                value_name = "BOOL"
            )]
            pub exposed_by_default: Option<bool>,
            #[arg(
                help = concat!(
                    "Only ", $things,
                    " whose labels satisfy this expression, e.g. \"Label(`env`, `prod`)\""
                ),
                id = concat!($prefix, ".constraints"),
                long = concat!($prefix, ".constraints"),
                env = concat!("SWITCHYARD_", $env, "_CONSTRAINTS"),
                value_name = "EXPR"
            )]
            pub constraints: Option<String>,
            /// Address host-networked servers get when nothing better is known [default: 127.0.0.1].
            #[arg(
                id = concat!($prefix, ".host-address"),
                long = concat!($prefix, ".host-address"),
                env = concat!("SWITCHYARD_", $env, "_HOST_ADDRESS"),
                value_name = "IP"
            )]
            pub host_address: Option<String>,
            $($extra)*
        }
    };
}

engine_args!(
    /// The Docker provider's settings; `resolve_docker` puts the flag (or env) over the file
    /// over the default.
    DockerArgs, "docker", "DOCKER", on: "Discover containers from a Docker engine",
    peer: "daemon", things: "containers", network: "`traefik.docker.network`",
    {
        /// Keep stopped or unhealthy containers' services without servers (503) instead of
        /// dropping them (404) [default: false].
        #[arg(
            long = "docker.allow-empty-services",
            env = "SWITCHYARD_DOCKER_ALLOW_EMPTY_SERVICES",
            value_name = "BOOL"
        )]
        pub allow_empty_services: Option<bool>,
        /// Reach a container at the host address and port its server port is published on
        /// (`-p 127.0.0.1:8080:80`) instead of its network address, when that binding names
        /// one IP (Traefik's `useBindPortIP`) [default: false].
        #[arg(
            long = "docker.use-bind-port-ip",
            env = "SWITCHYARD_DOCKER_USE_BIND_PORT_IP",
            value_name = "BOOL"
        )]
        pub use_bind_port_ip: Option<bool>,
    }
);

engine_args!(
    /// The Swarm provider's settings (the endpoint must be a manager's); `resolve_swarm` puts
    /// the flag (or env) over the file over the default.
    SwarmArgs, "swarm", "SWARM", on: "Discover Swarm services from a manager's API",
    peer: "manager", things: "services", network: "`traefik.swarm.network` / `traefik.docker.network`",
    {
        /// How often services are listed again (events also trigger a list) [default: 15s, min 1s].
        #[arg(
            id = "swarm.refresh",
            long = "swarm.refresh",
            env = "SWITCHYARD_SWARM_REFRESH",
            value_name = "DURATION"
        )]
        pub refresh: Option<String>,
    }
);

/// `[providers]` in the TOML file.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileProviders {
    pub docker: Option<DockerArgs>,
    pub swarm: Option<SwarmArgs>,
}

/// Client-certificate files for an https Docker endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The Docker provider's settings, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfig {
    /// `unix:///var/run/docker.sock`, `tcp://host:port` or `https://host:port`.
    pub endpoint: String,
    pub tls: Option<TlsFiles>,
    pub network: Option<String>,
    pub exposed_by_default: bool,
    pub constraints: Option<String>,
    /// What host-networked containers' servers are addressed as.
    pub host_address: String,
    pub allow_empty_services: bool,
    /// Servers at their published `host_ip:host_port` when the binding names one IP.
    pub use_bind_port_ip: bool,
}

impl DockerConfig {
    /// The defaults, for reading `docker inspect` output without an engine.
    pub fn offline() -> DockerConfig {
        DockerConfig {
            endpoint: String::new(),
            tls: None,
            network: None,
            exposed_by_default: true,
            constraints: None,
            host_address: "127.0.0.1".into(),
            allow_empty_services: false,
            use_bind_port_ip: false,
        }
    }
}

/// The Swarm provider's settings, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmConfig {
    /// A manager: `unix:///var/run/docker.sock`, `tcp://host:port` or `https://host:port`.
    pub endpoint: String,
    pub tls: Option<TlsFiles>,
    pub network: Option<String>,
    pub exposed_by_default: bool,
    pub constraints: Option<String>,
    /// Interval of the full re-list (at least 1 s).
    pub refresh: Duration,
    /// What host-networked tasks are addressed as when their node reports no usable address.
    pub host_address: String,
}

layered!(DockerArgs {
    endpoint,
    tls_ca,
    tls_cert,
    tls_key,
    network,
    exposed_by_default,
    constraints,
    host_address,
    allow_empty_services,
    use_bind_port_ip,
});

layered!(SwarmArgs {
    endpoint,
    tls_ca,
    tls_cert,
    tls_key,
    network,
    exposed_by_default,
    constraints,
    refresh,
    host_address,
});

/// Endpoint (given > `$DOCKER_HOST` > the default socket) and TLS files, checked; `who` is
/// `docker` or `swarm` (flag names and messages).
fn resolve_endpoint(
    who: &str,
    endpoint: Option<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> anyhow::Result<(String, Option<TlsFiles>)> {
    let endpoint = endpoint
        .or_else(|| {
            std::env::var("DOCKER_HOST")
                .ok()
                .filter(|s| !s.trim().is_empty())
        })
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string());
    if !["unix://", "tcp://", "http://", "https://"]
        .iter()
        .any(|p| endpoint.starts_with(p))
    {
        bail!(
            "{who} endpoint {endpoint:?}: use unix:///path, tcp://host:port or https://host:port"
        );
    }
    let tls = match (ca, cert, key) {
        (None, None, None) => None,
        (Some(ca), Some(cert), Some(key)) => Some(TlsFiles { ca, cert, key }),
        _ => bail!(
            "{who} TLS needs all three of --{who}.tls-ca, --{who}.tls-cert and --{who}.tls-key"
        ),
    };
    if endpoint.starts_with("https://") && tls.is_none() {
        bail!("{who} endpoint {endpoint:?} is https: give --{who}.tls-ca, --{who}.tls-cert and --{who}.tls-key");
    }
    Ok((endpoint, tls))
}

/// The address host-networked servers get [default: 127.0.0.1], checked to be an IP.
fn resolve_host_address(who: &str, given: Option<String>) -> anyhow::Result<String> {
    let host_address = given.unwrap_or_else(|| "127.0.0.1".to_string());
    host_address
        .parse::<IpAddr>()
        .with_context(|| format!("{who} host address {host_address:?} is not an IP address"))?;
    Ok(host_address)
}

/// The Docker provider: on with `--docker` or a `[providers.docker]` table.
fn resolve_docker(
    args: &DockerArgs,
    file: Option<&DockerArgs>,
) -> anyhow::Result<Option<DockerConfig>> {
    if !args.enabled && file.is_none() {
        return Ok(None);
    }
    let a = args.over(file);
    let (endpoint, tls) = resolve_endpoint("docker", a.endpoint, a.tls_ca, a.tls_cert, a.tls_key)?;
    Ok(Some(DockerConfig {
        endpoint,
        tls,
        network: a.network,
        exposed_by_default: a.exposed_by_default.unwrap_or(true),
        constraints: a.constraints,
        host_address: resolve_host_address("docker", a.host_address)?,
        allow_empty_services: a.allow_empty_services.unwrap_or(false),
        use_bind_port_ip: a.use_bind_port_ip.unwrap_or(false),
    }))
}

/// The Swarm provider: on with `--swarm` or a `[providers.swarm]` table.
fn resolve_swarm(
    args: &SwarmArgs,
    file: Option<&SwarmArgs>,
) -> anyhow::Result<Option<SwarmConfig>> {
    if !args.enabled && file.is_none() {
        return Ok(None);
    }
    let a = args.over(file);
    let (endpoint, tls) = resolve_endpoint("swarm", a.endpoint, a.tls_ca, a.tls_cert, a.tls_key)?;
    let refresh = duration_or(
        a.refresh.as_deref(),
        Duration::from_secs(15),
        "--swarm.refresh",
    )?;
    if refresh < Duration::from_secs(1) {
        bail!("--swarm.refresh must be at least 1s, got {refresh:?}");
    }
    Ok(Some(SwarmConfig {
        endpoint,
        tls,
        network: a.network,
        exposed_by_default: a.exposed_by_default.unwrap_or(true),
        constraints: a.constraints,
        refresh,
        host_address: resolve_host_address("swarm", a.host_address)?,
    }))
}

/// Flags of `run` only.
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Admin API address, or `off` [default: 127.0.0.1:8081].
    #[arg(
        long,
        help_heading = "Router",
        env = "SWITCHYARD_ADMIN",
        value_name = "ADDR"
    )]
    pub admin: Option<String>,
    /// Basic auth for the admin API and dashboard: htpasswd lines `user:hash` (bcrypt, SHA1,
    /// apr1/MD5), comma-separated [default: none, open to whoever reaches the address].
    #[arg(
        id = "admin.users",
        long = "admin.users",
        help_heading = "Router",
        env = "SWITCHYARD_ADMIN_USERS",
        value_name = "USER:HASH",
        value_delimiter = ','
    )]
    pub admin_users: Vec<String>,
    /// Networks whose X-Forwarded-* headers are kept (comma-separated CIDRs or IPs) [default: none].
    #[arg(
        long,
        help_heading = "Router",
        env = "SWITCHYARD_TRUSTED_IPS",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub trusted_ips: Vec<String>,
    #[command(flatten, next_help_heading = "Timeouts")]
    pub timeouts: TimeoutArgs,
    /// Time in-flight requests get to finish on SIGINT/SIGTERM [default: 10s].
    #[arg(
        long,
        help_heading = "Router",
        env = "SWITCHYARD_GRACE_PERIOD",
        value_name = "DURATION"
    )]
    pub grace_period: Option<String>,
    /// Exit with an error when the scripts do not build at start, instead of serving an empty
    /// table (every request 404) until they are fixed [default: false].
    #[arg(
        long,
        help_heading = "Router",
        env = "SWITCHYARD_REQUIRE_VALID_START",
        value_name = "BOOL"
    )]
    pub require_valid_start: Option<bool>,
    /// Proxy worker threads, each with its own event loop and upstream pool [default: one per CPU].
    #[arg(
        long,
        help_heading = "Router",
        env = "SWITCHYARD_WORKERS",
        value_name = "N"
    )]
    pub workers: Option<usize>,
    /// Largest request head accepted; larger ones get 431 [default: 65536].
    #[arg(
        long,
        help_heading = "Router",
        env = "SWITCHYARD_MAX_HEADER_BYTES",
        value_name = "BYTES"
    )]
    pub max_header_bytes: Option<usize>,
    #[command(flatten, next_help_heading = "Recording")]
    pub record: RecordArgs,
    #[command(flatten, next_help_heading = "Access log")]
    pub access_log: AccessLogArgs,
}

/// Connection timeouts as flags (`--KEY-timeout`), env (`SWITCHYARD_KEY_TIMEOUT`) and the
/// `[timeouts]` table of the TOML file (`KEY`): one definition for all three.
#[derive(Debug, Clone, Default, Args, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeoutArgs {
    /// Time a client has to send a whole request head (slowloris guard) [default: 30s].
    #[arg(long, env = "SWITCHYARD_HEADER_READ_TIMEOUT", value_name = "DURATION")]
    #[serde(rename = "header_read")]
    pub header_read_timeout: Option<String>,
    /// Time an idle keep-alive client connection is kept [default: 180s].
    #[arg(long, env = "SWITCHYARD_IDLE_TIMEOUT", value_name = "DURATION")]
    #[serde(rename = "idle")]
    pub idle_timeout: Option<String>,
    /// Time to connect to a server [default: 5s].
    #[arg(
        long,
        env = "SWITCHYARD_UPSTREAM_CONNECT_TIMEOUT",
        value_name = "DURATION"
    )]
    #[serde(rename = "upstream_connect")]
    pub upstream_connect_timeout: Option<String>,
    /// Time a server has to send its response head [default: 60s].
    #[arg(
        long,
        env = "SWITCHYARD_UPSTREAM_RESPONSE_TIMEOUT",
        value_name = "DURATION"
    )]
    #[serde(rename = "upstream_response")]
    pub upstream_response_timeout: Option<String>,
}

layered!(TimeoutArgs {
    header_read_timeout,
    idle_timeout,
    upstream_connect_timeout,
    upstream_response_timeout,
});

/// Live request recording as flags (`--record.KEY`), env (`SWITCHYARD_RECORD_KEY`) and the
/// `[record]` table of the TOML file (`KEY`, snake case): one definition for all three.
#[derive(Debug, Clone, Default, Args, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordArgs {
    /// Record requests from boot into this JSON-lines file (`switchyard replay` reads it).
    #[arg(
        id = "record",
        long = "record",
        env = "SWITCHYARD_RECORD",
        value_name = "FILE"
    )]
    pub file: Option<PathBuf>,
    /// Which requests: `all` (except routes marked `.record(false)`) or `marked` (only
    /// `.record(true)`) [default: all].
    #[arg(
        id = "record.scope",
        long = "record.scope",
        env = "SWITCHYARD_RECORD_SCOPE",
        value_name = "SCOPE",
        value_enum
    )]
    pub scope: Option<crate::recording::recorder::Scope>,
    /// Headers whose values are recorded as `<redacted>` (comma-separated), or `none`
    /// [default: authorization,cookie,set-cookie,proxy-authorization].
    #[arg(
        id = "record.redact",
        long = "record.redact",
        env = "SWITCHYARD_RECORD_REDACT",
        value_name = "LIST"
    )]
    #[serde(default, deserialize_with = "list_or_text")]
    #[schemars(with = "Option<ListOrText>")]
    pub redact: Option<String>,
    /// Body bytes recorded per request, base64 (0: none) [default: 0].
    #[arg(
        id = "record.body-bytes",
        long = "record.body-bytes",
        env = "SWITCHYARD_RECORD_BODY_BYTES",
        value_name = "N"
    )]
    pub body_bytes: Option<usize>,
    /// Rotate the file past this size (e.g. 10MiB, 512KiB) [default: 100MiB].
    #[arg(
        id = "record.max-size",
        long = "record.max-size",
        env = "SWITCHYARD_RECORD_MAX_SIZE",
        value_name = "SIZE"
    )]
    pub max_size: Option<String>,
    /// Rotated files kept: FILE.1 … FILE.N [default: 3].
    #[arg(
        id = "record.keep",
        long = "record.keep",
        env = "SWITCHYARD_RECORD_KEEP",
        value_name = "N"
    )]
    pub keep: Option<usize>,
}

layered!(RecordArgs {
    file,
    scope,
    redact,
    body_bytes,
    max_size,
    keep,
});

/// Recording settings: flags over the `[record]` table over the defaults.
fn resolve_record(
    args: &RecordArgs,
    file: Option<&RecordArgs>,
) -> anyhow::Result<crate::recording::recorder::RecordConfig> {
    use crate::recording::recorder::{parse_redact, parse_size, RecordConfig};
    let a = args.over(file);
    let d = RecordConfig::default();
    let max_size = match &a.max_size {
        Some(s) => parse_size(s)
            .map_err(anyhow::Error::msg)
            .context("--record.max-size")?,
        None => d.max_size,
    };
    Ok(RecordConfig {
        file: a.file,
        scope: a.scope.unwrap_or(d.scope),
        redact: a.redact.as_deref().map_or(d.redact, parse_redact),
        body_bytes: a.body_bytes.unwrap_or(d.body_bytes),
        max_size,
        keep: a.keep.unwrap_or(d.keep),
    })
}

/// The access log as flags (`--access-log.KEY`), env (`SWITCHYARD_ACCESS_LOG_KEY`) and the
/// `[access_log]` table of the TOML file (`KEY`, snake case; the table's presence turns the log
/// on, `file` absent meaning stdout): one definition for all three.
#[derive(Debug, Clone, Default, Args, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessLogArgs {
    /// Write one access-log line per request to FILE (`-`, or no FILE: stdout).
    #[arg(
        id = "access-log",
        long = "access-log",
        env = "SWITCHYARD_ACCESS_LOG",
        value_name = "FILE",
        num_args = 0..=1,
        default_missing_value = "-"
    )]
    pub file: Option<String>,
    /// Line format: `common` (Traefik's CLF-like line) or `json` (Traefik's field names)
    /// [default: common].
    #[arg(
        id = "access-log.format",
        long = "access-log.format",
        env = "SWITCHYARD_ACCESS_LOG_FORMAT",
        value_name = "FORMAT",
        value_enum
    )]
    pub format: Option<crate::access_log::Format>,
    /// Keep only these statuses (comma-separated codes or ranges, e.g. `400-499,500-599`)
    /// [default: all].
    #[arg(
        id = "access-log.status",
        long = "access-log.status",
        env = "SWITCHYARD_ACCESS_LOG_STATUS",
        value_name = "CODES"
    )]
    #[serde(default, deserialize_with = "list_or_text")]
    #[schemars(with = "Option<ListOrText>")]
    pub status: Option<String>,
    /// Keep only requests slower than this (e.g. `10ms`); with `--access-log.status`, a request
    /// matching either is kept [default: none].
    #[arg(
        id = "access-log.min-duration",
        long = "access-log.min-duration",
        env = "SWITCHYARD_ACCESS_LOG_MIN_DURATION",
        value_name = "DURATION"
    )]
    pub min_duration: Option<String>,
    /// Request headers written (comma-separated); Authorization, Proxy-Authorization, Cookie and
    /// Set-Cookie are always `REDACTED` [default: none].
    #[arg(
        id = "access-log.headers",
        long = "access-log.headers",
        env = "SWITCHYARD_ACCESS_LOG_HEADERS",
        value_name = "NAMES"
    )]
    #[serde(default, deserialize_with = "list_or_text")]
    #[schemars(with = "Option<ListOrText>")]
    pub headers: Option<String>,
    /// Lines queued for the writer; past this, lines are dropped and counted [default: 4096].
    #[arg(
        id = "access-log.buffer",
        long = "access-log.buffer",
        env = "SWITCHYARD_ACCESS_LOG_BUFFER",
        value_name = "N"
    )]
    pub buffer: Option<usize>,
}

layered!(AccessLogArgs {
    file,
    format,
    status,
    min_duration,
    headers,
    buffer,
});

/// Access-log settings: flags over the `[access_log]` table over the defaults.
fn resolve_access_log(
    args: &AccessLogArgs,
    file: Option<&AccessLogArgs>,
) -> anyhow::Result<crate::access_log::AccessLogConfig> {
    use crate::access_log::{parse_headers, parse_status, AccessLogConfig, Output};
    let d = AccessLogConfig::default();
    let on = args.file.is_some() || file.is_some();
    let a = args.over(file);
    let status = match &a.status {
        Some(s) => parse_status(s)
            .map_err(anyhow::Error::msg)
            .context("--access-log.status")?,
        None => d.status,
    };
    let min_duration = match &a.min_duration {
        Some(s) => {
            Some(parse_duration(s).context("--access-log.min-duration")?).filter(|d| !d.is_zero())
        }
        None => None,
    };
    let headers = match &a.headers {
        Some(s) => parse_headers([s.as_str()])
            .map_err(anyhow::Error::msg)
            .context("--access-log.headers")?,
        None => d.headers,
    };
    let buffer = a.buffer.unwrap_or(d.buffer);
    if buffer == 0 {
        bail!("--access-log.buffer must be at least 1");
    }
    Ok(AccessLogConfig {
        output: on.then(|| Output::parse(a.file.as_deref().unwrap_or("-"))),
        format: a.format.unwrap_or(d.format),
        status,
        min_duration,
        headers,
        buffer,
    })
}

/// The JSON Schema of the TOML file (`switchyard schema config`), for editors and checks.
pub fn json_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(FileConfig);
    schema.insert(
        "title".into(),
        "switchyard configuration file (--config)".into(),
    );
    schema.to_value()
}

/// The TOML file. Every key mirrors a flag.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub scripts: Option<PathBuf>,
    pub catalog: Option<PathBuf>,
    pub dynamic_config: Option<PathBuf>,
    pub admin: Option<String>,
    pub admin_users: Option<Vec<String>>,
    pub trusted_ips: Option<Vec<String>>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
    pub grace_period: Option<String>,
    pub require_valid_start: Option<bool>,
    pub max_header_bytes: Option<usize>,
    pub workers: Option<usize>,
    /// `name = "addr"`, or `name = { address = "addr", max-connections = 100, path = { ... } }`.
    pub entrypoints: Option<BTreeMap<String, FileEntrypoint>>,
    pub timeouts: Option<TimeoutArgs>,
    pub providers: Option<FileProviders>,
    pub tls: Option<TlsArgs>,
    /// `[acme.NAME]`: a certificate resolver's options (the keys of `--acme.NAME.KEY`).
    #[schemars(with = "Option<BTreeMap<String, BTreeMap<String, serde_json::Value>>>")]
    pub acme: Option<BTreeMap<String, BTreeMap<String, toml::Value>>>,
    pub record: Option<RecordArgs>,
    pub access_log: Option<AccessLogArgs>,
}

/// An entrypoint in the TOML file: its address, or a table with the address and options (the
/// same keys as `--entrypoint.NAME.KEY`, nested tables joined with dots).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum FileEntrypoint {
    Address(String),
    Table(#[schemars(with = "BTreeMap<String, serde_json::Value>")] BTreeMap<String, toml::Value>),
}

impl FileEntrypoint {
    /// The address and the options as `KEY=VALUE` pairs.
    fn split(&self, name: &str) -> anyhow::Result<(String, Vec<(String, String)>)> {
        match self {
            FileEntrypoint::Address(a) => Ok((a.clone(), Vec::new())),
            FileEntrypoint::Table(t) => {
                let mut address = None;
                let mut options = Vec::new();
                flatten_options("", t, &mut address, &mut options);
                let address = address.with_context(|| {
                    format!("entrypoint {name:?} in the config file has no address")
                })?;
                Ok((address, options))
            }
        }
    }
}

fn flatten_options(
    prefix: &str,
    table: &BTreeMap<String, toml::Value>,
    address: &mut Option<String>,
    out: &mut Vec<(String, String)>,
) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::String(a) if key == "address" => *address = Some(a.clone()),
            toml::Value::Table(t) => {
                let t: BTreeMap<String, toml::Value> =
                    t.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                flatten_options(&key, &t, address, out);
            }
            toml::Value::String(s) => out.push((key, s.clone())),
            other => out.push((key, other.to_string())),
        }
    }
}

/// Sets one entrypoint option from its `KEY` and `VALUE` text.
pub fn apply_entrypoint_option(
    opts: &mut EntrypointOptions,
    key: &str,
    value: &str,
) -> anyhow::Result<()> {
    let flag = |v: &str| -> anyhow::Result<bool> {
        match v.trim().to_ascii_lowercase().as_str() {
            "true" | "on" | "yes" | "1" => Ok(true),
            "false" | "off" | "no" | "0" => Ok(false),
            _ => bail!("{key} takes true or false, got {v:?}"),
        }
    };
    let p = &mut opts.path;
    match key {
        "max-connections" => {
            let n: usize = value
                .trim()
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| {
                    format!("max-connections takes a number above 0, got {value:?}")
                })?;
            opts.max_connections = n;
        }
        "path.sanitize" => p.sanitize = flag(value)?,
        "path.merge-slashes" => p.merge_slashes = flag(value)?,
        "path.allow-encoded-slash" => p.allow_encoded_slash = flag(value)?,
        "path.allow-encoded-backslash" => p.allow_encoded_backslash = flag(value)?,
        "path.allow-encoded-null" => p.allow_encoded_null = flag(value)?,
        "path.allow-above-root" => p.allow_above_root = flag(value)?,
        "tls" => {
            let auto = value.trim().eq_ignore_ascii_case("auto");
            opts.tls_optional = auto;
            opts.tls = (auto || flag(value)?).then(|| opts.tls.take().unwrap_or_default());
        }
        "h2c" => opts.h2c = flag(value)?,
        "udp" => opts.udp = flag(value)?,
        "udp.timeout" => {
            let d = parse_duration(value).with_context(|| format!("entrypoint option {key}"))?;
            if d.is_zero() {
                bail!("udp.timeout must be above 0");
            }
            opts.udp_timeout = d;
        }
        "proxy-protocol.trusted-ips" => {
            opts.proxy_protocol.trusted =
                parse_cidrs(value).with_context(|| format!("entrypoint option {key}"))?;
        }
        "proxy-protocol.insecure" => opts.proxy_protocol.insecure = flag(value)?,
        "tcp.removed-route-grace" => {
            opts.removed_route_grace =
                parse_duration(value).with_context(|| format!("entrypoint option {key}"))?;
        }
        "tcp.hello-timeout" => {
            let d = parse_duration(value).with_context(|| format!("entrypoint option {key}"))?;
            opts.hello_timeout = (!d.is_zero()).then_some(d);
        }
        "http2.initial-stream-window" | "http2.initial-connection-window" => {
            let n = crate::recording::recorder::parse_size(value)
                .ok()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| (65_535..=(1 << 31) - 1).contains(n))
                .with_context(|| {
                    format!("{key} takes a size from 64KiB to 2GiB, e.g. 1MiB, got {value:?}")
                })?;
            if key == "http2.initial-stream-window" {
                opts.h2_stream_window = Some(n);
            } else {
                opts.h2_connection_window = Some(n);
            }
        }
        "http2.keep-alive-interval" => {
            let d = parse_duration(value).with_context(|| format!("entrypoint option {key}"))?;
            opts.h2_keep_alive = (!d.is_zero()).then_some(d);
        }
        "redirect-to" | "redirect-scheme" | "redirect-permanent" => {
            let r = opts.redirect.get_or_insert_with(|| EntrypointRedirect {
                to: String::new(),
                port: 0,
                scheme: "https".into(),
                permanent: true,
            });
            match key {
                "redirect-to" => r.to = value.trim().to_string(),
                "redirect-scheme" => r.scheme = value.trim().to_ascii_lowercase(),
                _ => r.permanent = flag(value)?,
            }
        }
        "http2.max-concurrent-streams" => {
            opts.h2_max_concurrent_streams = value
                .trim()
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| {
                    format!("http2.max-concurrent-streams takes a number above 0, got {value:?}")
                })?;
        }
        _ => match key.strip_prefix("tls.") {
            Some(tls_key) => opts
                .tls
                .get_or_insert_with(Default::default)
                .set(tls_key, value)
                .map_err(anyhow::Error::msg)?,
            None => bail!(
                "unknown entrypoint option {key:?} (known: max-connections, path.sanitize, \
                 path.merge-slashes, path.allow-encoded-slash, path.allow-encoded-backslash, \
                 path.allow-encoded-null, path.allow-above-root, tls, {}, h2c, \
                 http2.max-concurrent-streams, http2.initial-stream-window, \
                 http2.initial-connection-window, http2.keep-alive-interval, redirect-to, \
                 redirect-scheme, redirect-permanent, udp, udp.timeout, \
                 proxy-protocol.trusted-ips, proxy-protocol.insecure, tcp.hello-timeout, \
                 tcp.removed-route-grace)",
                crate::tls::options::KEYS
            ),
        },
    }
    Ok(())
}

/// Rewrites `--entrypoint.NAME.KEY=VALUE` and `--acme.NAME.KEY=VALUE` (or `… VALUE` as the next
/// argument, or a bare flag meaning `true`) into `--entrypoint-option NAME.KEY=VALUE` and
/// `--acme NAME.KEY=VALUE`, the forms clap knows; every other argument is kept as it is.
pub fn expand_entrypoint_flags(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.into_iter().peekable();
    while let Some(arg) = it.next() {
        let text = arg.to_str().unwrap_or_default();
        let (flag, rest) = if let Some(rest) = text.strip_prefix("--entrypoint.") {
            ("--entrypoint-option", rest.to_string())
        } else if let Some(rest) = text.strip_prefix("--acme.") {
            ("--acme", rest.to_string())
        } else {
            out.push(arg);
            continue;
        };
        let rest = rest.as_str();
        let option = if rest.contains('=') {
            rest.to_string()
        } else {
            let value = match it.peek().and_then(|v| v.to_str()) {
                Some(v) if !v.starts_with('-') => {
                    let v = v.to_string();
                    it.next();
                    v
                }
                _ => "true".to_string(),
            };
            format!("{rest}={value}")
        };
        out.push(flag.into());
        out.push(option.into());
    }
    out
}

/// Everything `run` or `check` needs, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub scripts: ScriptsOrigin,
    pub catalog: Option<PathBuf>,
    /// Traefik dynamic configuration files (a file or a folder).
    pub dynamic_config: Option<PathBuf>,
    pub entrypoints: Vec<(String, SocketAddr)>,
    pub admin: Option<SocketAddr>,
    /// htpasswd lines guarding the admin API (empty: no auth).
    pub admin_users: Vec<String>,
    pub settings: Settings,
    pub grace_period: Duration,
    /// Exit when the first build fails (else serve an empty table until the scripts build).
    pub require_valid_start: bool,
    /// Proxy worker threads (at least 1).
    pub workers: usize,
    pub log_level: String,
    pub log_format: LogFormat,
    /// The Docker provider, when on.
    /// Certificate files served on TLS entrypoints.
    pub tls: TlsConfig,
    /// ACME certificate resolvers.
    pub acme: Vec<crate::acme::ResolverConfig>,
    pub docker: Option<DockerConfig>,
    /// The Swarm provider, when on.
    pub swarm: Option<SwarmConfig>,
    /// Live request recording (`record.file`: on from boot).
    pub record: crate::recording::recorder::RecordConfig,
    /// The access log (`access_log.output`: on).
    pub access_log: crate::access_log::AccessLogConfig,
}

impl Config {
    pub fn entrypoint_names(&self) -> Vec<String> {
        self.entrypoints.iter().map(|(n, _)| n.clone()).collect()
    }

    /// What scripts are built against: the entrypoint names (TLS ones marked) and the admin
    /// address.
    pub fn build_env(&self) -> crate::script::BuildEnv {
        let mut env = crate::script::BuildEnv::new(self.entrypoint_names(), self.admin);
        env.tls_entrypoints = self
            .entrypoints
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| self.settings.is_tls(n))
            .collect();
        env.udp_entrypoints = self
            .entrypoints
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| self.settings.entrypoint(n).is_some_and(|o| o.udp))
            .collect();
        env
    }
}

/// Parses `30s`, `500ms`, `2m`, `1h30m`.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    crate::duration::parse(s, crate::duration::Syntax::Standard).map_err(anyhow::Error::msg)
}

/// The flag reference of `switchyard run` as a Markdown table (flag, environment variable,
/// value, description), generated from the flag definitions themselves; `docs/flags.md` holds
/// it and a test keeps it equal, so the docs cannot drift from the flags.
pub fn flag_reference() -> String {
    use clap::Args as _;
    let cmd = RunArgs::augment_args(clap::Command::new("run"));
    let mut out =
        String::from("| flag | environment | value | description |\n| --- | --- | --- | --- |\n");
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let env = arg
            .get_env()
            .map(|e| format!("`{}`", e.to_string_lossy()))
            .unwrap_or_default();
        let value = match arg.get_value_names() {
            Some(names) if arg.get_action().takes_values() => names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        };
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace('|', "\\|");
        out.push_str(&format!("| `--{long}` | {env} | {value} | {help} |\n"));
    }
    out
}

/// Parses `NAME=ADDR`; `ADDR` may be `:8080` (all interfaces).
pub fn parse_entrypoint(s: &str) -> anyhow::Result<(String, SocketAddr)> {
    let (name, addr) = s.split_once('=').with_context(|| {
        format!("invalid entrypoint {s:?}: write NAME=ADDR, e.g. web=0.0.0.0:8080")
    })?;
    Ok((
        name.trim().to_string(),
        parse_addr(addr).with_context(|| format!("invalid entrypoint {s:?}"))?,
    ))
}

/// Whether an entrypoint address names UDP (`:53/udp`, as Traefik writes it).
fn is_udp_address(addr: &str) -> bool {
    addr.trim().to_ascii_lowercase().ends_with("/udp")
}

fn parse_addr(addr: &str) -> anyhow::Result<SocketAddr> {
    let addr = addr.trim();
    // Traefik's `:53/udp` and `:8080/tcp`: the protocol is noted by the caller.
    let lower = addr.to_ascii_lowercase();
    let addr = match lower
        .strip_suffix("/udp")
        .or_else(|| lower.strip_suffix("/tcp"))
    {
        Some(a) => addr.get(..a.len()).unwrap_or(addr),
        None => addr,
    };
    let full = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_string()
    };
    full.parse()
        .with_context(|| format!("invalid address {addr:?}: write IP:PORT, e.g. 127.0.0.1:8080"))
}

/// A comma-separated list of IPs and CIDRs (a TOML array arrives as its text, `["a", "b"]`).
fn parse_cidrs(s: &str) -> anyhow::Result<Vec<IpNet>> {
    s.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|p| p.trim().trim_matches('"').trim_matches('\''))
        .filter(|p| !p.is_empty())
        .map(parse_cidr)
        .collect()
}

fn parse_cidr(s: &str) -> anyhow::Result<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .with_context(|| format!("invalid trusted IP or CIDR {s:?}"))
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))
}

/// `given` parsed as a duration, else `default`; `what` names the setting in errors.
fn duration_or(given: Option<&str>, default: Duration, what: &str) -> anyhow::Result<Duration> {
    match given {
        Some(s) => parse_duration(s).with_context(|| format!("setting {what}")),
        None => Ok(default),
    }
}

/// Merges flags/env (`common`, `run`) over the TOML file over defaults.
pub fn resolve(common: &CommonArgs, run: Option<&RunArgs>) -> anyhow::Result<Config> {
    let file = match &common.config {
        Some(p) => read_file(p)?,
        None => FileConfig::default(),
    };
    let default_run = RunArgs::default();
    let run = run.unwrap_or(&default_run);

    let scripts = match common.scripts.clone().or(file.scripts.clone()) {
        Some(dir) => {
            if !dir.is_dir() {
                bail!("scripts folder {} does not exist", dir.display());
            }
            ScriptsOrigin::Dir(dir)
        }
        None if Path::new("scripts").is_dir() => ScriptsOrigin::Dir(PathBuf::from("./scripts")),
        None => ScriptsOrigin::Embedded,
    };

    let mut entrypoints = Vec::new();
    // Options from the file first, then flags over them, key by key.
    // (entrypoint, key, value, from a flag)
    let mut option_pairs: Vec<(String, String, String, bool)> = Vec::new();
    if let Some(map) = &file.entrypoints {
        for (name, e) in map {
            let (addr, options) = e.split(name)?;
            if common.entrypoints.is_empty() {
                entrypoints.push((
                    name.clone(),
                    parse_addr(&addr).with_context(|| format!("entrypoint {name:?}"))?,
                ));
                if is_udp_address(&addr) {
                    option_pairs.push((name.clone(), "udp".into(), "true".into(), false));
                }
            }
            option_pairs.extend(
                options
                    .into_iter()
                    .map(|(k, v)| (name.clone(), k, v, false)),
            );
        }
    }
    for o in &common.entrypoint_options {
        // The flag's values are split at commas (for the environment variable), so a list value
        // (`proxy-protocol.trusted-ips=a,b`, `tls.cipher-suites=x,y`) arrives in pieces: a piece
        // without `=` continues the value before it.
        if !o.contains('=') {
            if let Some((_, _, value, true)) = option_pairs.last_mut() {
                value.push(',');
                value.push_str(o);
                continue;
            }
        }
        let (target, value) = o.split_once('=').with_context(|| {
            format!("invalid entrypoint option {o:?}: write NAME.KEY=VALUE, e.g. web.max-connections=1000")
        })?;
        let (name, key) = target.split_once('.').with_context(|| {
            format!("invalid entrypoint option {o:?}: write NAME.KEY=VALUE, e.g. web.max-connections=1000")
        })?;
        option_pairs.push((name.to_string(), key.to_string(), value.to_string(), true));
    }
    if !common.entrypoints.is_empty() {
        for e in &common.entrypoints {
            let (name, addr) = parse_entrypoint(e)?;
            if e.split_once('=').is_some_and(|(_, a)| is_udp_address(a)) {
                option_pairs.push((name.clone(), "udp".into(), "true".into(), false));
            }
            entrypoints.push((name, addr));
        }
    } else if file.entrypoints.is_none() {
        entrypoints.push(("web".to_string(), parse_addr("0.0.0.0:8080")?));
    }
    for (i, (name, _)) in entrypoints.iter().enumerate() {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("invalid entrypoint name {name:?}: use letters, digits, - and _");
        }
        if entrypoints.iter().take(i).any(|(n, _)| n == name) {
            bail!("entrypoint {name:?} is given twice");
        }
    }

    let admin = match run.admin.as_ref().or(file.admin.as_ref()) {
        Some(a) if a.eq_ignore_ascii_case("off") => None,
        Some(a) => Some(parse_addr(a).context("admin address")?),
        None => Some(parse_addr("127.0.0.1:8081")?),
    };
    let admin_users: Vec<String> = if run.admin_users.is_empty() {
        file.admin_users.clone().unwrap_or_default()
    } else {
        run.admin_users.clone()
    };
    let admin_users: Vec<String> = admin_users
        .into_iter()
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .collect();
    if !admin_users.is_empty() {
        crate::middleware::auth::BasicAuth::new(&admin_users, "switchyard")
            .map_err(|e| anyhow::anyhow!("--admin.users: {e}"))?;
    }

    let trusted: Vec<String> = if !run.trusted_ips.is_empty() {
        run.trusted_ips.clone()
    } else {
        file.trusted_ips.clone().unwrap_or_default()
    };
    let trusted_ips = trusted
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse_cidr(s))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let mut entrypoint_options: BTreeMap<String, EntrypointOptions> = BTreeMap::new();
    for (name, key, value, from_flag) in &option_pairs {
        if !entrypoints.iter().any(|(n, _)| n == name) {
            if !from_flag {
                // The file's entrypoint was replaced by `--entrypoint` flags.
                continue;
            }
            bail!("entrypoint option {name}.{key}: there is no entrypoint {name:?}");
        }
        let opts = entrypoint_options.entry(name.clone()).or_default();
        apply_entrypoint_option(opts, key, value)
            .with_context(|| format!("entrypoint {name:?}"))?;
    }

    for (name, o) in entrypoint_options.iter_mut() {
        if let Some(r) = &mut o.redirect {
            if r.to.is_empty() {
                bail!("entrypoint {name:?}: redirect-scheme and redirect-permanent go with redirect-to");
            }
            let Some((_, addr)) = entrypoints.iter().find(|(n, _)| *n == r.to) else {
                bail!(
                    "entrypoint {name:?}: redirect-to names no entrypoint {:?} (known: {})",
                    r.to,
                    entrypoints
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            };
            if r.to == *name {
                bail!("entrypoint {name:?} cannot redirect to itself");
            }
            r.port = addr.port();
        }
    }
    for (name, o) in &entrypoint_options {
        if let Some(t) = &o.tls {
            t.check()
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("entrypoint {name:?}"))?;
        }
    }
    let t = run.timeouts.over(file.timeouts.as_ref());
    let d = Settings::default();
    let max_header_bytes = run
        .max_header_bytes
        .or(file.max_header_bytes)
        .unwrap_or(d.max_header_bytes);
    if max_header_bytes < 8192 {
        bail!("max header bytes must be at least 8192, got {max_header_bytes}");
    }
    let settings = Settings {
        header_read_timeout: duration_or(
            t.header_read_timeout.as_deref(),
            d.header_read_timeout,
            "header read timeout",
        )?,
        idle_timeout: duration_or(t.idle_timeout.as_deref(), d.idle_timeout, "idle timeout")?,
        upstream_connect_timeout: duration_or(
            t.upstream_connect_timeout.as_deref(),
            d.upstream_connect_timeout,
            "upstream connect timeout",
        )?,
        upstream_response_timeout: duration_or(
            t.upstream_response_timeout.as_deref(),
            d.upstream_response_timeout,
            "upstream response timeout",
        )?,
        upstream_idle_timeout: d.upstream_idle_timeout,
        max_header_bytes,
        trusted_ips,
        entrypoint_options,
    };
    let grace_period = duration_or(
        run.grace_period.as_deref().or(file.grace_period.as_deref()),
        Duration::from_secs(10),
        "grace period",
    )?;

    let workers = match run.workers.or(file.workers) {
        Some(0) | None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Some(n) => n,
    };

    let docker = resolve_docker(
        &common.docker,
        file.providers.as_ref().and_then(|p| p.docker.as_ref()),
    )?;
    let tls = resolve_tls(&common.tls, file.tls.as_ref())?;
    let acme = resolve_acme(
        &common.acme,
        file.acme.as_ref(),
        &entrypoints,
        &settings.entrypoint_options,
    )?;
    let swarm = resolve_swarm(
        &common.swarm,
        file.providers.as_ref().and_then(|p| p.swarm.as_ref()),
    )?;

    let record = resolve_record(&run.record, file.record.as_ref())?;
    let access_log = resolve_access_log(&run.access_log, file.access_log.as_ref())?;

    Ok(Config {
        record,
        access_log,
        docker,
        swarm,
        tls,
        acme,
        workers,
        scripts,
        catalog: common.catalog.clone().or(file.catalog.clone()),
        dynamic_config: common
            .dynamic_config
            .clone()
            .or(file.dynamic_config.clone()),
        entrypoints,
        admin,
        admin_users,
        settings,
        grace_period,
        require_valid_start: run
            .require_valid_start
            .or(file.require_valid_start)
            .unwrap_or(false),
        log_level: common
            .log_level
            .clone()
            .or(file.log_level.clone())
            .unwrap_or_else(|| "info".to_string()),
        log_format: common.log_format.or(file.log_format).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "admin = \"off\"\n[entrypoints]\nweb = \":9000\"\n[timeouts]\nidle = \"5s\"\n",
        )
        .unwrap();
        let common = CommonArgs {
            config: Some(path.clone()),
            scripts: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let run = RunArgs {
            timeouts: TimeoutArgs {
                idle_timeout: Some("7s".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let cfg = resolve(&common, Some(&run)).unwrap();
        assert_eq!(cfg.admin, None);
        assert_eq!(
            cfg.entrypoints,
            vec![("web".to_string(), "0.0.0.0:9000".parse().unwrap())]
        );
        assert_eq!(cfg.settings.idle_timeout, Duration::from_secs(7));

        std::fs::write(&path, "scripts = \"x\"\nentrypoint = \"web=:1\"\n").unwrap();
        let err = format!("{:#}", resolve(&common, None).unwrap_err());
        assert!(err.contains("unknown field `entrypoint`"), "{err}");
    }

    #[test]
    fn docker_provider_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[providers.docker]\nendpoint = \"tcp://127.0.0.1:2375\"\nexposed_by_default = false\n",
        )
        .unwrap();
        let common = CommonArgs {
            config: Some(path.clone()),
            scripts: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let d = resolve(&common, None).unwrap().docker.unwrap();
        assert_eq!(d.endpoint, "tcp://127.0.0.1:2375");
        assert!(!d.exposed_by_default);
        assert_eq!(d.host_address, "127.0.0.1");
        let mut flags = common.clone();
        flags.docker.endpoint = Some("https://127.0.0.1:2376".into());
        let err = format!("{:#}", resolve(&flags, None).unwrap_err());
        assert!(err.contains("--docker.tls-ca"), "{err}");
        flags.docker.endpoint = Some("ftp://x".into());
        assert!(format!("{:#}", resolve(&flags, None).unwrap_err()).contains("unix:///path"));
        let plain = CommonArgs {
            scripts: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        assert!(resolve(&plain, None).unwrap().docker.is_none());
    }

    #[test]
    fn swarm_provider_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[providers.swarm]\nendpoint = \"tcp://127.0.0.1:2375\"\nrefresh = \"5s\"\nnetwork = \"front\"\n",
        )
        .unwrap();
        let common = CommonArgs {
            config: Some(path.clone()),
            scripts: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let cfg = resolve(&common, None).unwrap();
        assert!(cfg.docker.is_none(), "swarm alone does not turn docker on");
        let s = cfg.swarm.unwrap();
        assert_eq!(s.endpoint, "tcp://127.0.0.1:2375");
        assert_eq!(s.refresh, Duration::from_secs(5));
        assert_eq!(s.network.as_deref(), Some("front"));
        assert!(s.exposed_by_default);
        assert_eq!(s.host_address, "127.0.0.1");

        let mut flags = common.clone();
        flags.swarm.refresh = Some("20s".into());
        flags.swarm.exposed_by_default = Some(false);
        let s = resolve(&flags, None).unwrap().swarm.unwrap();
        assert_eq!(s.refresh, Duration::from_secs(20), "flag wins over file");
        assert!(!s.exposed_by_default);
        flags.swarm.refresh = Some("500ms".into());
        let err = format!("{:#}", resolve(&flags, None).unwrap_err());
        assert!(err.contains("at least 1s"), "{err}");
        flags.swarm.refresh = None;
        flags.swarm.endpoint = Some("https://127.0.0.1:2376".into());
        let err = format!("{:#}", resolve(&flags, None).unwrap_err());
        assert!(err.contains("--swarm.tls-ca"), "{err}");
        flags.swarm.endpoint = None;
        flags.swarm.host_address = Some("nope".into());
        let err = format!("{:#}", resolve(&flags, None).unwrap_err());
        assert!(err.contains("swarm host address"), "{err}");

        let plain = CommonArgs {
            scripts: Some(dir.path().to_path_buf()),
            swarm: SwarmArgs {
                enabled: true,
                ..Default::default()
            },
            ..Default::default()
        };
        let s = resolve(&plain, None).unwrap().swarm.unwrap();
        assert_eq!(s.refresh, Duration::from_secs(15), "default refresh");
        std::fs::write(&path, "[providers.swarm]\nrefesh = \"5s\"\n").unwrap();
        let err = format!("{:#}", resolve(&common, None).unwrap_err());
        assert!(err.contains("unknown field `refesh`"), "{err}");
    }

    #[test]
    fn docker_and_swarm_flags_are_distinct() {
        use clap::{CommandFactory, Parser};
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "x",
            "--docker.endpoint",
            "tcp://127.0.0.1:1",
            "--swarm",
            "--swarm.endpoint",
            "tcp://127.0.0.1:2",
            "--swarm.refresh",
            "3s",
        ])
        .unwrap();
        let (d, s) = (&cli.run.common.docker, &cli.run.common.swarm);
        assert!(!d.enabled && s.enabled);
        assert_eq!(d.endpoint.as_deref(), Some("tcp://127.0.0.1:1"));
        assert_eq!(s.endpoint.as_deref(), Some("tcp://127.0.0.1:2"));
        assert_eq!(s.refresh.as_deref(), Some("3s"));
    }

    #[test]
    fn access_log_flags_file_and_defaults() {
        use crate::access_log::{Format, Output};
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let dir = tempfile::tempdir().unwrap();
        let common = CommonArgs {
            scripts: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let off = resolve(&common, None).unwrap().access_log;
        assert_eq!(off.output, None);
        let cli =
            Cli::try_parse_from(["x", "--access-log", "--access-log.format", "json"]).unwrap();
        let a = resolve(&common, Some(&cli.run)).unwrap().access_log;
        assert_eq!((a.output, a.format), (Some(Output::Stdout), Format::Json));
        let cli = Cli::try_parse_from([
            "x",
            "--access-log=/tmp/a.log",
            "--access-log.status",
            "400-499,500",
            "--access-log.min-duration",
            "10ms",
            "--access-log.headers",
            "X-Request-Id",
        ])
        .unwrap();
        let a = resolve(&common, Some(&cli.run)).unwrap().access_log;
        assert_eq!(a.output, Some(Output::File("/tmp/a.log".into())));
        assert_eq!(a.status.0, vec![(400, 499), (500, 500)]);
        assert_eq!(a.min_duration, Some(Duration::from_millis(10)));
        assert_eq!(a.headers, vec!["X-Request-Id"]);

        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[access_log]\nformat = \"json\"\nstatus = [\"500-599\"]\nheaders = \"X-A,X-B\"\nbuffer = 10\n",
        )
        .unwrap();
        let with_file = CommonArgs {
            config: Some(path.clone()),
            ..common.clone()
        };
        let a = resolve(&with_file, None).unwrap().access_log;
        assert_eq!(
            a.output,
            Some(Output::Stdout),
            "the table alone turns it on"
        );
        assert_eq!((a.format, a.buffer), (Format::Json, 10));
        assert_eq!(a.status.0, vec![(500, 599)]);
        assert_eq!(a.headers, vec!["X-A", "X-B"]);
        std::fs::write(&path, "[access_log]\nstatus = \"5xx\"\n").unwrap();
        let err = format!("{:#}", resolve(&with_file, None).unwrap_err());
        assert!(
            err.contains("--access-log.status") && err.contains("5xx"),
            "{err}"
        );
        std::fs::write(&path, "[access_log]\nfromat = \"json\"\n").unwrap();
        let err = format!("{:#}", resolve(&with_file, None).unwrap_err());
        assert!(err.contains("unknown field `fromat`"), "{err}");
    }

    /// For each concern: one key from the file alone, one key given both ways (the flag wins),
    /// one key given neither way (the default).
    #[test]
    fn every_concern_takes_flag_over_file_over_default() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[timeouts]\nidle = \"5s\"\nheader_read = \"2s\"\n\
             [record]\nkeep = 9\nredact = [\"X-Secret\", \"Cookie\"]\nbody_bytes = 7\n\
             [access_log]\nbuffer = 11\nformat = \"json\"\n\
             [providers.docker]\nnetwork = \"front\"\nhost_address = \"127.0.0.2\"\n\
             [providers.swarm]\nconstraints = \"Label(`a`, `b`)\"\nrefresh = \"3s\"\n",
        )
        .unwrap();
        let common = CommonArgs {
            config: Some(path),
            scripts: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let cli = Cli::try_parse_from([
            "x",
            "--header-read-timeout=4s",
            "--record.body-bytes=3",
            "--access-log.format=common",
            "--docker.host-address=127.0.0.3",
            "--swarm.refresh=4s",
        ])
        .unwrap();
        let mut common = common;
        common.docker = cli.run.common.docker.clone();
        common.swarm = cli.run.common.swarm.clone();
        let c = resolve(&common, Some(&cli.run)).unwrap();
        let d = Settings::default();
        let t = &c.settings;
        assert_eq!(
            (
                t.idle_timeout,
                t.header_read_timeout,
                t.upstream_connect_timeout
            ),
            (
                Duration::from_secs(5),
                Duration::from_secs(4),
                d.upstream_connect_timeout
            ),
            "timeouts"
        );
        let r = &c.record;
        assert_eq!(
            (r.keep, r.body_bytes, r.max_size),
            (
                9,
                3,
                crate::recording::recorder::RecordConfig::default().max_size
            ),
            "record"
        );
        assert_eq!(
            r.redact,
            vec!["x-secret", "cookie"],
            "record.redact as a list"
        );
        let a = &c.access_log;
        assert_eq!(
            (a.buffer, a.format, a.min_duration),
            (11, crate::access_log::Format::Common, None),
            "access log"
        );
        let k = c.docker.as_ref().unwrap();
        assert_eq!(
            (
                k.network.as_deref(),
                k.host_address.as_str(),
                k.exposed_by_default
            ),
            (Some("front"), "127.0.0.3", true),
            "docker"
        );
        let s = c.swarm.as_ref().unwrap();
        assert_eq!(
            (s.constraints.as_deref(), s.refresh, s.host_address.as_str()),
            (Some("Label(`a`, `b`)"), Duration::from_secs(4), "127.0.0.1"),
            "swarm"
        );
    }

    #[test]
    fn entrypoint_options_from_flags_and_file() {
        let args = expand_entrypoint_flags(
            [
                "switchyard",
                "run",
                "--entrypoint.web.max-connections=7",
                "--entrypoint.web.path.merge-slashes",
                "false",
                "--entrypoint.web.path.allow-encoded-slash",
                "--admin",
                "off",
            ]
            .iter()
            .map(std::ffi::OsString::from)
            .collect(),
        );
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args[2..8],
            [
                "--entrypoint-option",
                "web.max-connections=7",
                "--entrypoint-option",
                "web.path.merge-slashes=false",
                "--entrypoint-option",
                "web.path.allow-encoded-slash=true"
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[entrypoints.web]\naddress = \":9000\"\nmax-connections = 50\npath = { merge-slashes = false, allow-above-root = true }\n[entrypoints]\nother = \":9001\"\n",
        )
        .unwrap();
        let common = CommonArgs {
            config: Some(path.clone()),
            entrypoint_options: vec!["web.max-connections=9".into()],
            ..Default::default()
        };
        let cfg = resolve(&common, None).unwrap();
        let web = cfg.settings.entrypoint("web").unwrap();
        assert_eq!(web.max_connections, 9, "the flag wins over the file");
        assert!(!web.path.merge_slashes);
        assert!(web.path.allow_above_root);
        assert!(!web.path.allow_encoded_slash);
        assert!(cfg.settings.entrypoint("other").is_none());
        assert_eq!(cfg.entrypoints.len(), 2);
        let bad = |o: &str| {
            let common = CommonArgs {
                entrypoint_options: vec![o.into()],
                ..Default::default()
            };
            format!("{:#}", resolve(&common, None).unwrap_err())
        };
        assert!(bad("web.max-conections=1").contains("unknown entrypoint option"));
        assert!(bad("web.path.sanitize=maybe").contains("takes true or false"));
        assert!(bad("api.max-connections=1").contains("no entrypoint \"api\""));
        assert!(bad("web=1").contains("NAME.KEY=VALUE"));
        // TLS, HTTP/2 and redirect options, each checked as it is set.
        assert!(bad("web.tls.min-version=1.0").contains("too weak"));
        assert!(bad("web.tls.client-auth=require").contains("tls.client-ca"));
        assert!(bad("web.http2.initial-stream-window=10").contains("64KiB to 2GiB"));
        assert!(bad("web.redirect-to=nowhere").contains("no entrypoint \"nowhere\""));
        assert!(bad("web.redirect-to=web").contains("itself"));
        let common = CommonArgs {
            entrypoints: vec!["web=:8080".into(), "websecure=:8443".into()],
            entrypoint_options: vec![
                "websecure.tls.alpn=http/1.1".into(),
                "websecure.http2.keep-alive-interval=30s".into(),
                "websecure.http2.initial-stream-window=2MiB".into(),
                "web.redirect-to=websecure".into(),
                "web.h2c=true".into(),
            ],
            ..Default::default()
        };
        let cfg = resolve(&common, None).unwrap();
        let secure = cfg.settings.entrypoint("websecure").unwrap();
        assert_eq!(secure.tls.as_ref().unwrap().alpn, vec!["http/1.1"]);
        assert_eq!(secure.h2_keep_alive, Some(Duration::from_secs(30)));
        assert_eq!(secure.h2_stream_window, Some(2 * 1024 * 1024));
        let web = cfg.settings.entrypoint("web").unwrap();
        assert!(web.h2c && web.tls.is_none());
        let r = web.redirect.as_ref().unwrap();
        assert_eq!(
            (r.to.as_str(), r.port, r.scheme.as_str(), r.permanent),
            ("websecure", 8443, "https", true)
        );
        assert_eq!(cfg.build_env().tls_entrypoints, vec!["websecure"]);
    }

    #[test]
    fn certificate_resolvers_from_flags_and_file() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[entrypoints]\nweb = \":80\"\nwebsecure = { address = \":443\", tls = true }\n\
             [acme.le]\nemail = \"a@b.test\"\nhttp-challenge = \"web\"\n",
        )
        .unwrap();
        let args = expand_entrypoint_flags(
            [
                "x",
                "--acme.le.key-type",
                "EC384",
                "--acme.le.storage=/data/le.json",
            ]
            .iter()
            .map(Into::into)
            .collect(),
        );
        let cli = Cli::try_parse_from(args).unwrap();
        let mut common = cli.run.common.clone();
        common.config = Some(path.clone());
        common.scripts = Some(dir.path().to_path_buf());
        let cfg = resolve(&common, None).unwrap();
        let le = &cfg.acme[0];
        assert_eq!(le.email.as_deref(), Some("a@b.test"));
        assert_eq!(le.http_challenge.as_deref(), Some("web"));
        assert_eq!(
            le.key_type,
            crate::acme::KeyType::EcdsaP384,
            "the flag adds to the file"
        );
        assert_eq!(le.storage, PathBuf::from("/data/le.json"));
        std::fs::write(
            &path,
            "[entrypoints]\nweb = \":80\"\n[acme.le]\nhttp-challenge = \"web\"\n",
        )
        .unwrap();
        let mut plain = common.clone();
        plain.acme.clear();
        let err = format!("{:#}", resolve(&plain, None).unwrap_err());
        assert!(err.contains("no entrypoint terminates TLS"), "{err}");
    }

    #[test]
    fn entrypoint_and_duration_parsing() {
        assert_eq!(
            parse_entrypoint("admin=127.0.0.1:81").unwrap().1,
            "127.0.0.1:81".parse().unwrap()
        );
        assert!(parse_entrypoint("web").is_err());
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("10").is_err());
    }
}
