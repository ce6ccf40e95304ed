//! The Docker provider: containers of a Docker engine become catalog entries (`provider: docker`).
//!
//! Owns connecting to an engine (unix, tcp, https with client certificates; read-only API use:
//! ping/version, list, inspect, events), turning an inspected container into a `CatalogEntry` by
//! Traefik's rules (`entry_from_inspect`, pure), and what the shared session skeleton
//! (`engine.rs`) needs of this provider: re-list after container and network events.
//!
//! Invariants: a snapshot is always complete (never a patch); outages, backoff and reporting are
//! `engine.rs`'s (the last catalog stays live). A malformed label
//! this module reads (`traefik.enable`, `traefik.port`, the service port label) skips only that
//! container, with a warning naming the container and the label. Entries without servers (not
//! running, paused, unhealthy or starting, no port, no address) are in the catalog only with
//! `allow_empty_services` (their routes answer 503), else they are left out (404), as in Traefik.
//! Must never: write to the engine, touch the route table, or send traffic to containers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use bollard::models::{ContainerInspectResponse, EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::constraints::{Constraint, ConstraintError};
use super::engine::Wake;
use super::labels::{
    is_service_port_label, join_host_port, label_ci, normalize, parse_go_bool, port_from_labels,
    short_id,
};
use crate::catalog::ProviderSender;
use crate::catalog::{Catalog, CatalogEntry, ContainerDetail};
use crate::config::{DockerConfig, TlsFiles};

pub const PROVIDER: &str = "docker";

/// Seconds a single API request (not the event stream's body) may take.
const REQUEST_TIMEOUT_SECS: u64 = 10;
/// Containers inspected at once.
const INSPECT_CONCURRENCY: usize = 8;
/// More containers than this are ignored (with a warning): bounds the work of one snapshot.
const MAX_CONTAINERS: usize = 10_000;
/// `container:<id>` chains followed at most this deep.
const MAX_PEER_HOPS: u8 = 4;

/// Container events that can change the catalog (`health_status` matches `health_status: ...`).
const CONTAINER_EVENTS: &[&str] = &[
    "create",
    "start",
    "restart",
    "die",
    "stop",
    "kill",
    "destroy",
    "pause",
    "unpause",
    "health_status",
    "rename",
    "update",
];
/// Network events that change a container's addresses.
const NETWORK_EVENTS: &[&str] = &["connect", "disconnect"];

const LABEL_ENABLE: &str = "traefik.enable";
const LABEL_NETWORK: &str = "traefik.docker.network";
const LABEL_COMPOSE_PROJECT: &str = "com.docker.compose.project";
const LABEL_COMPOSE_SERVICE: &str = "com.docker.compose.service";

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("docker endpoint {endpoint}: cannot connect: {source}")]
    Connect {
        endpoint: String,
        source: bollard::errors::Error,
    },
    #[error("docker endpoint {endpoint}: {what}: {source}")]
    Api {
        endpoint: String,
        what: String,
        source: bollard::errors::Error,
    },
    #[error("docker endpoint {endpoint}: the event stream ended")]
    StreamEnded { endpoint: String },
    #[error("docker provider: {0}")]
    Constraints(#[from] ConstraintError),
}

/// Parses `cfg.constraints` (None when there are none). `app` calls it before serving so an
/// invalid expression stops the start.
pub fn constraints(cfg: &DockerConfig) -> Result<Option<Constraint>, ConstraintError> {
    match cfg.constraints.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(expr) => Constraint::parse(expr).map(Some),
    }
}

/// A client for `endpoint` (with client-certificate files `tls` for https or tcp), with the
/// API version negotiated down to the engine's (Docker 20.10 speaks 1.41): this is the first
/// request, so an unreachable engine fails here.
pub async fn connect(endpoint: &str, tls: Option<&TlsFiles>) -> Result<Docker, DockerError> {
    let err = |source| DockerError::Connect {
        endpoint: endpoint.to_string(),
        source,
    };
    let version = bollard::API_DEFAULT_VERSION;
    let docker = if endpoint.starts_with("unix://") {
        Docker::connect_with_unix(endpoint, REQUEST_TIMEOUT_SECS, version)
    } else if let Some(tls) = tls.filter(|_| !endpoint.starts_with("http://")) {
        // https:// (config requires the files), or tcp:// with client certificates given.
        Docker::connect_with_ssl(
            endpoint,
            &tls.key,
            &tls.cert,
            &tls.ca,
            REQUEST_TIMEOUT_SECS,
            version,
        )
    } else {
        Docker::connect_with_http(endpoint, REQUEST_TIMEOUT_SECS, version)
    }
    .map_err(err)?;
    docker.negotiate_version().await.map_err(err)
}

/// The current catalog of the engine: running containers (all of them with
/// `allow_empty_services`), inspected and turned into entries, sorted by name then container id.
pub async fn snapshot(docker: &Docker, cfg: &DockerConfig) -> Result<Catalog, DockerError> {
    let constraint = constraints(cfg)?;
    snapshot_with(docker, cfg, constraint.as_ref()).await
}

/// `snapshot` with the constraints already parsed: list, inspect, resolve network peers, translate.
async fn snapshot_with(
    docker: &Docker,
    cfg: &DockerConfig,
    constraint: Option<&Constraint>,
) -> Result<Catalog, DockerError> {
    let ids = container_ids(docker, cfg).await?;
    let containers = inspect_all(docker, cfg, ids).await?;
    let peers = peers_of(docker, &containers).await;
    Ok(catalog_of(&containers, cfg, constraint, &peers))
}

/// What the provider makes of containers described by `docker inspect` output (a JSON array),
/// with no engine: the same translation as a live snapshot (`cfg`'s exposure, constraints,
/// network and host address; network peers only among the given containers).
pub fn from_inspect(json: &str, cfg: &DockerConfig) -> Result<Catalog, String> {
    let containers: Vec<ContainerInspectResponse> = serde_json::from_str(json)
        .map_err(|e| format!("not `docker inspect` output (a JSON array of containers): {e}"))?;
    let constraint = constraints(cfg).map_err(|e| format!("--docker.constraints: {e}"))?;
    let mut peers = HashMap::new();
    for c in &containers {
        add_peer(&mut peers, c);
    }
    Ok(catalog_of(&containers, cfg, constraint.as_ref(), &peers))
}

/// An API failure while doing `what`, as a `DockerError::Api` naming the endpoint.
fn api_error(cfg: &DockerConfig, what: &str) -> impl FnOnce(bollard::errors::Error) -> DockerError {
    let endpoint = cfg.endpoint.clone();
    let what = what.to_string();
    move |source| DockerError::Api {
        endpoint,
        what,
        source,
    }
}

/// The ids of the listed containers (all of them with `allow_empty_services`), at most
/// `MAX_CONTAINERS` (warned when there are more).
async fn container_ids(docker: &Docker, cfg: &DockerConfig) -> Result<Vec<String>, DockerError> {
    // Every container is listed; ones not running are kept only where their routes stay
    // (`--docker.allow-empty-services`, or their own `traefik.docker.allownonrunning` label).
    let list: Vec<_> = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            ..Default::default()
        }))
        .await
        .map_err(api_error(cfg, "listing containers"))?
        .into_iter()
        .filter(|c| {
            use bollard::models::ContainerSummaryStateEnum as S;
            cfg.allow_empty_services
                || matches!(c.state, Some(S::RUNNING | S::PAUSED | S::RESTARTING))
                || c.labels.as_ref().is_some_and(|l| {
                    l.iter().any(|(k, v)| {
                        k.eq_ignore_ascii_case(LABEL_ALLOW_NON_RUNNING)
                            && parse_go_bool(v.trim()) == Some(true)
                    })
                })
        })
        .collect();
    if list.len() > MAX_CONTAINERS {
        warn!(
            containers = list.len(),
            max = MAX_CONTAINERS,
            "too many containers: the rest are ignored"
        );
    }
    Ok(list
        .into_iter()
        .filter_map(|s| s.id)
        .take(MAX_CONTAINERS)
        .collect())
}

/// The containers `ids` inspected, `INSPECT_CONCURRENCY` at once, in list order; one that went
/// away meanwhile is left out, any other failure fails the whole snapshot.
async fn inspect_all(
    docker: &Docker,
    cfg: &DockerConfig,
    ids: Vec<String>,
) -> Result<Vec<ContainerInspectResponse>, DockerError> {
    let mut containers = Vec::with_capacity(ids.len());
    let mut inspected = futures_util::stream::iter(ids)
        .map(|id| async move {
            let r = docker.inspect_container(&id, None).await;
            (id, r)
        })
        .buffered(INSPECT_CONCURRENCY);
    while let Some((id, r)) = inspected.next().await {
        match r {
            Ok(c) => containers.push(c),
            Err(e) if is_not_found(&e) => {
                debug!(container = %id, "container went away during the list")
            }
            Err(e) => {
                let what = format!("inspecting container {}", short_id(&id));
                return Err(api_error(cfg, &what)(e));
            }
        }
    }
    Ok(containers)
}

/// The catalog of inspected containers: their entries (those without servers only with
/// `allow_empty_services`) sorted by name then container id, and a problem per skipped container.
fn catalog_of(
    containers: &[ContainerInspectResponse],
    cfg: &DockerConfig,
    constraint: Option<&Constraint>,
    peers: &HashMap<String, ContainerInspectResponse>,
) -> Catalog {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for c in containers {
        match entry_with(c, cfg, constraint, peers) {
            Ok(Some(e))
                if e.servers.is_empty() && !cfg.allow_empty_services && !allows_non_running(&e) =>
            {
                debug!(container = %e.name, "no servers: left out (allow_empty_services is off)")
            }
            Ok(Some(e)) => entries.push(e),
            Ok(None) => {}
            Err(problem) => {
                warn!("{problem}; skipping this container");
                problems.push(format!("{problem}; container skipped"));
            }
        }
    }
    entries.sort_by(|a, b| {
        let id = |e: &CatalogEntry| e.container.as_ref().map(|c| c.id.clone());
        a.name.cmp(&b.name).then_with(|| id(a).cmp(&id(b)))
    });
    Catalog { entries, problems }
}

/// Listed containers by id and name, plus the targets of `container:<x>` network modes that were
/// not listed (inspected one by one; a failure just leaves that address unknown).
async fn peers_of(
    docker: &Docker,
    containers: &[ContainerInspectResponse],
) -> HashMap<String, ContainerInspectResponse> {
    let mut peers = HashMap::new();
    for c in containers {
        add_peer(&mut peers, c);
    }
    let missing: BTreeSet<String> = containers
        .iter()
        .filter_map(|c| {
            network_mode(c)
                .strip_prefix("container:")
                .map(str::to_string)
        })
        .filter(|t| find_peer(&peers, t).is_none())
        .collect();
    for target in missing.into_iter().take(MAX_CONTAINERS) {
        match docker.inspect_container(&target, None).await {
            Ok(c) => add_peer(&mut peers, &c),
            Err(e) => debug!(container = %target, error = %e, "cannot inspect network peer"),
        }
    }
    peers
}

/// Records `c` under its id and its name (without the leading `/`).
fn add_peer(peers: &mut HashMap<String, ContainerInspectResponse>, c: &ContainerInspectResponse) {
    if let Some(id) = &c.id {
        peers.insert(id.clone(), c.clone());
    }
    if let Some(name) = &c.name {
        peers.insert(name.trim_start_matches('/').to_string(), c.clone());
    }
}

/// `target` as Docker accepts it: full id, name (with or without `/`), or an id prefix.
fn find_peer<'a>(
    peers: &'a HashMap<String, ContainerInspectResponse>,
    target: &str,
) -> Option<&'a ContainerInspectResponse> {
    let bare = target.trim_start_matches('/');
    peers.get(bare).or_else(|| {
        if bare.len() < 12 {
            return None;
        }
        peers
            .values()
            .find(|c| c.id.as_deref().is_some_and(|id| id.starts_with(bare)))
    })
}

/// The engine answered 404: the container is gone.
fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The catalog entry of one inspected container, by Traefik's rules (see the README's "Docker
/// provider" section):
/// - `Ok(None)`: not exposed (`traefik.enable=false`, or `exposed_by_default` off and no
///   `traefik.enable=true`) or excluded by the constraints;
/// - `Err(text)`: a malformed label this provider reads; the text names the container and label;
/// - `Ok(Some(entry))` otherwise, with `servers` empty when the container is not running, paused,
///   unhealthy or starting, or has no port (warned) or no address (warned).
///
/// `peers` holds the containers that `container:<x>` network modes may point at, by id or name.
pub fn entry_from_inspect(
    c: &ContainerInspectResponse,
    cfg: &DockerConfig,
    peers: &HashMap<String, ContainerInspectResponse>,
) -> Result<Option<CatalogEntry>, String> {
    let constraint = constraints(cfg).map_err(|e| e.to_string())?;
    entry_with(c, cfg, constraint.as_ref(), peers)
}

/// `entry_from_inspect` with the constraints already parsed: each decision below, in order.
fn entry_with(
    c: &ContainerInspectResponse,
    cfg: &DockerConfig,
    constraint: Option<&Constraint>,
    peers: &HashMap<String, ContainerInspectResponse>,
) -> Result<Option<CatalogEntry>, String> {
    let who = who(c);
    let labels = labels_of(c);
    if !exposed(&labels, cfg, constraint, &who)? {
        return Ok(None);
    }
    let ports = exposed_tcp_ports(c);
    let port = server_port(&labels, &ports).map_err(|e| format!("{who}: {e}"))?;
    let run = RunState::of(c);
    let address = run
        .running
        .then(|| address_of(c, wanted_network(&labels, cfg).as_deref(), cfg, peers, 0))
        .flatten();
    let ready = run.ready();
    let detail = detail_of(c, &labels, run, ports, address);
    let name = entry_name(
        &detail.name,
        &detail.id,
        detail.compose_project.as_deref(),
        detail.compose_service.as_deref(),
    );
    let bound = port
        .filter(|_| cfg.use_bind_port_ip)
        .and_then(|p| bind_port_server(&detail, p));
    let servers = match (ready, bound) {
        (false, _) => Vec::new(),
        (true, Some(b)) => vec![b],
        (true, None) => servers_of(&detail, &who, &name, port),
    };
    Ok(Some(CatalogEntry {
        name,
        provider: PROVIDER.to_string(),
        servers,
        container: Some(detail),
        labels,
    }))
}

/// The container's name without Docker's leading `/`.
fn container_name(c: &ContainerInspectResponse) -> &str {
    c.name
        .as_deref()
        .unwrap_or_default()
        .trim_start_matches('/')
}

/// `container NAME (SHORT_ID)`, how warnings and problems name a container.
fn who(c: &ContainerInspectResponse) -> String {
    let id = c.id.as_deref().unwrap_or_default();
    format!("container {} ({})", container_name(c), short_id(id))
}

/// Whether a container is served: its `traefik.enable` label (a malformed one is an error
/// naming it), else `exposed_by_default`; and the constraints.
fn exposed(
    labels: &BTreeMap<String, String>,
    cfg: &DockerConfig,
    constraint: Option<&Constraint>,
    who: &str,
) -> Result<bool, String> {
    let enable = match label_ci(labels, LABEL_ENABLE) {
        None => None,
        Some((key, v)) => Some(parse_go_bool(v).ok_or_else(|| {
            format!("{who}: label {key}={v:?} is not a boolean (use true or false)")
        })?),
    };
    Ok(enable.unwrap_or(cfg.exposed_by_default) && constraint.is_none_or(|k| k.matches(labels)))
}

/// The entry's name as Traefik names it: `SERVICE_PROJECT` for compose containers, else the
/// container's name; normalised (the short id when nothing is left).
fn entry_name(cname: &str, id: &str, project: Option<&str>, service: Option<&str>) -> String {
    let raw = match (service, project) {
        (Some(s), Some(p)) => format!("{s}_{p}"),
        _ => cname.to_string(),
    };
    let name = normalize(&raw);
    if name.is_empty() {
        short_id(id).to_string()
    } else {
        name
    }
}

/// The server port: what the port labels ask for (`port_from_labels`; a malformed one is an
/// error naming it), else the lowest exposed TCP port (a published port by its container port).
///
/// Services whose port labels disagree on a container that exposes no port still get a base
/// server (the lowest labelled port): the `traefik` module gives each service its own port on
/// the container's address, as Traefik does.
fn server_port(labels: &BTreeMap<String, String>, ports: &[u16]) -> Result<Option<u16>, String> {
    Ok(port_from_labels(labels)?
        .or(ports.first().copied())
        .or_else(|| lowest_service_port(labels)))
}

/// The lowest `traefik.http.services.<s>.loadbalancer.server.port` that is a port number.
fn lowest_service_port(labels: &BTreeMap<String, String>) -> Option<u16> {
    labels
        .iter()
        .filter(|(k, _)| is_service_port_label(k))
        .filter_map(|(_, v)| v.trim().parse::<u16>().ok().filter(|p| *p != 0))
        .min()
}

/// What the catalog shows of a container: identity, compose labels, state, networks, ports and
/// the address its servers use.
fn detail_of(
    c: &ContainerInspectResponse,
    labels: &BTreeMap<String, String>,
    run: RunState,
    ports: Vec<u16>,
    address: Option<String>,
) -> ContainerDetail {
    ContainerDetail {
        id: c.id.clone().unwrap_or_default(),
        name: container_name(c).to_string(),
        compose_project: labels.get(LABEL_COMPOSE_PROJECT).cloned(),
        compose_service: labels.get(LABEL_COMPOSE_SERVICE).cloned(),
        state: run.status,
        health: run.health,
        network_mode: network_mode(c).to_string(),
        networks: networks_of(c),
        ports,
        host_ports: host_ports_of(c),
        address,
        ..Default::default()
    }
}

/// What the engine says of a container's life.
struct RunState {
    status: String,
    running: bool,
    paused: bool,
    /// `healthy`, `unhealthy`, `starting`; `None` without a health check.
    health: Option<String>,
}

impl RunState {
    /// The state block of `c` (a container without one is stopped, no health check).
    fn of(c: &ContainerInspectResponse) -> RunState {
        let state = c.state.as_ref();
        RunState {
            status: state
                .and_then(|s| s.status)
                .map(|s| s.to_string())
                .unwrap_or_default(),
            running: state.and_then(|s| s.running).unwrap_or(false),
            paused: state.and_then(|s| s.paused).unwrap_or(false),
            health: state
                .and_then(|s| s.health.as_ref())
                .and_then(|h| h.status)
                .map(|h| h.to_string())
                .filter(|h| !h.is_empty() && h != "none"),
        }
    }

    /// Running, not paused, not unhealthy or still starting: it gets servers.
    fn ready(&self) -> bool {
        self.running
            && !self.paused
            && !matches!(self.health.as_deref(), Some("unhealthy") | Some("starting"))
    }
}

const LABEL_ALLOW_NON_RUNNING: &str = "traefik.docker.allownonrunning";

/// Traefik 3.7's `traefik.docker.allownonrunning=true`: keep this container's routers while it
/// is not running, with a service without servers (503), as `--docker.allow-empty-services`
/// does for every container.
fn allows_non_running(e: &CatalogEntry) -> bool {
    label_ci(&e.labels, LABEL_ALLOW_NON_RUNNING)
        .and_then(|(_, v)| parse_go_bool(v.trim()))
        .unwrap_or(false)
}

/// `useBindPortIP`: the published `host_ip:host_port` of `port` when its binding names one IP
/// (not `0.0.0.0` or `::`); `None` falls back to the network address, as Traefik does.
fn bind_port_server(d: &ContainerDetail, port: u16) -> Option<String> {
    d.host_ports.get(&port)?.iter().find_map(|a| {
        let addr: std::net::SocketAddr = a.parse().ok()?;
        (!addr.ip().is_unspecified()).then(|| a.clone())
    })
}

/// The servers of a ready container: `address:port`, or none (logged) when either is missing.
fn servers_of(d: &ContainerDetail, who: &str, name: &str, port: Option<u16>) -> Vec<String> {
    match (d.address.as_deref(), port) {
        (Some(a), Some(p)) => vec![join_host_port(a, p)],
        (_, None) => {
            warn!("{who}: no port: add traefik.http.services.{name}.loadbalancer.server.port or expose a port");
            Vec::new()
        }
        (None, Some(_)) => {
            warn!(
                "{who}: no address: no network with an IP address (network mode {:?})",
                d.network_mode
            );
            Vec::new()
        }
    }
}

/// The network servers are reached on: the `traefik.docker.network` label, else `cfg.network`.
fn wanted_network(labels: &BTreeMap<String, String>, cfg: &DockerConfig) -> Option<String> {
    network_label(labels).or_else(|| cfg.network.clone())
}

/// The `traefik.docker.network` label's value (the name in any case).
fn network_label(labels: &BTreeMap<String, String>) -> Option<String> {
    label_ci(labels, LABEL_NETWORK).map(|(_, v)| v.to_string())
}

/// Where the servers of `c` are reached, following Traefik's `getIPAddress`: host networking →
/// the host address; `container:<x>` → that container's address, with its own network label
/// first (none for an unknown peer or past `MAX_PEER_HOPS` links); else `network_address`.
fn address_of(
    c: &ContainerInspectResponse,
    wanted: Option<&str>,
    cfg: &DockerConfig,
    peers: &HashMap<String, ContainerInspectResponse>,
    hops: u8,
) -> Option<String> {
    let mode = network_mode(c);
    if mode == "host" {
        return Some(cfg.host_address.clone());
    }
    let Some(target) = mode.strip_prefix("container:") else {
        return network_address(c, wanted);
    };
    if hops >= MAX_PEER_HOPS {
        return None;
    }
    let peer = find_peer(peers, target)?;
    let peer_wanted = network_label(&labels_of(peer));
    address_of(
        peer,
        peer_wanted.as_deref().or(wanted),
        cfg,
        peers,
        hops + 1,
    )
}

/// The address of `c` on its own networks: on `wanted` (also tried with the compose project
/// prefix), else on the first network by name (warned when `wanted` is not among them).
fn network_address(c: &ContainerInspectResponse, wanted: Option<&str>) -> Option<String> {
    let networks = networks_of(c);
    if let Some(w) = wanted {
        if let Some(ip) = networks.get(w) {
            return Some(ip.clone());
        }
        let project = labels_of(c).get(LABEL_COMPOSE_PROJECT).cloned();
        if let Some(ip) = project.and_then(|p| networks.get(&format!("{p}_{w}"))) {
            return Some(ip.clone());
        }
        if !networks.is_empty() {
            warn!(
                container = %container_name(c),
                network = %w,
                on = ?networks.keys().collect::<Vec<_>>(),
                "network not found on the container (missing the compose project prefix?); using its first network"
            );
        }
    }
    networks.values().next().cloned()
}

/// The container's labels (none when it has no config).
fn labels_of(c: &ContainerInspectResponse) -> BTreeMap<String, String> {
    c.config
        .as_ref()
        .and_then(|k| k.labels.as_ref())
        .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// `bridge`, `host`, `none`, `container:<x>` or a network name (empty when unknown).
fn network_mode(c: &ContainerInspectResponse) -> &str {
    c.host_config
        .as_ref()
        .and_then(|h| h.network_mode.as_deref())
        .unwrap_or_default()
}

/// Network name → address: the IPv4 one, else (an IPv6-only network) the global IPv6 one, as
/// Traefik reads them; only networks where the container has either.
fn networks_of(c: &ContainerInspectResponse) -> BTreeMap<String, String> {
    let some = |ip: &Option<String>| ip.as_ref().filter(|ip| !ip.is_empty()).cloned();
    c.network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .map(|nets| {
            nets.iter()
                .filter_map(|(name, ep)| {
                    some(&ep.ip_address)
                        .or_else(|| some(&ep.global_ipv6_address))
                        .map(|ip| (name.clone(), ip))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `80/tcp` → 80; `53/udp` and junk → None. A bare number counts as TCP.
fn tcp_port(spec: &str) -> Option<u16> {
    let (port, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    if !proto.eq_ignore_ascii_case("tcp") {
        return None;
    }
    port.parse().ok().filter(|p| *p != 0)
}

/// Exposed TCP ports (image/`--expose` and published), ascending.
fn exposed_tcp_ports(c: &ContainerInspectResponse) -> Vec<u16> {
    let mut ports = BTreeSet::new();
    if let Some(exposed) = c.config.as_ref().and_then(|k| k.exposed_ports.as_ref()) {
        ports.extend(exposed.iter().filter_map(|s| tcp_port(s)));
    }
    if let Some(map) = c.network_settings.as_ref().and_then(|n| n.ports.as_ref()) {
        ports.extend(map.keys().filter_map(|s| tcp_port(s)));
    }
    ports.into_iter().collect()
}

/// Container TCP port → published `host_ip:host_port` addresses.
fn host_ports_of(c: &ContainerInspectResponse) -> BTreeMap<u16, Vec<String>> {
    let mut out = BTreeMap::new();
    let Some(map) = c.network_settings.as_ref().and_then(|n| n.ports.as_ref()) else {
        return out;
    };
    for (spec, bindings) in map {
        let Some(port) = tcp_port(spec) else { continue };
        let addrs: Vec<String> = bindings
            .iter()
            .flatten()
            .filter_map(|b| {
                let host_port: u16 = b.host_port.as_deref()?.parse().ok()?;
                let ip = b
                    .host_ip
                    .as_deref()
                    .filter(|ip| !ip.is_empty())
                    .unwrap_or("0.0.0.0");
                Some(join_host_port(ip, host_port))
            })
            .collect();
        if !addrs.is_empty() {
            out.insert(port, addrs);
        }
    }
    out
}

/// The engine-side event filter: the container and network events in `CONTAINER_EVENTS` and
/// `NETWORK_EVENTS`.
fn events_options() -> EventsOptions {
    let mut filters = HashMap::new();
    filters.insert(
        "type".to_string(),
        vec!["container".to_string(), "network".to_string()],
    );
    filters.insert(
        "event".to_string(),
        CONTAINER_EVENTS
            .iter()
            .chain(NETWORK_EVENTS)
            .map(|s| s.to_string())
            .collect(),
    );
    EventsOptions {
        filters: Some(filters),
        ..Default::default()
    }
}

/// Checked here too: the engine's filter is an optimisation, not something to rely on.
fn relevant(ev: &EventMessage) -> bool {
    let action = ev.action.as_deref().unwrap_or_default();
    let base = action.split(':').next().unwrap_or_default().trim();
    match ev.typ {
        Some(EventMessageTypeEnum::CONTAINER) => CONTAINER_EVENTS.contains(&base),
        Some(EventMessageTypeEnum::NETWORK) => NETWORK_EVENTS.contains(&base),
        _ => false,
    }
}

/// Watches the engine until `shutdown` turns true or the control loop goes away, sending a
/// `ProviderReport::Snapshot` whenever the catalog changes (the session skeleton is
/// `engine::run`). Never returns an error: failures are reported, logged and retried
/// (constraints are validated by the caller before serving; an invalid expression here is
/// logged and the provider stays off).
pub async fn run(cfg: DockerConfig, reports: ProviderSender, shutdown: watch::Receiver<bool>) {
    let made = constraints(&cfg).map(|constraint| Engine { cfg, constraint });
    super::engine::start(made, reports, shutdown).await;
}

/// What the session skeleton needs of the docker provider: relist after container and network
/// events; no polling while events flow.
struct Engine {
    cfg: DockerConfig,
    constraint: Option<Constraint>,
}

impl super::engine::Source for Engine {
    const PROVIDER: &'static str = PROVIDER;
    const WHAT: &'static str = "docker";

    /// `--docker.endpoint` and its client-certificate files.
    fn endpoint(&self) -> (&str, Option<&TlsFiles>) {
        (&self.cfg.endpoint, self.cfg.tls.as_ref())
    }

    /// Container and network events only.
    fn events(&self) -> EventsOptions {
        events_options()
    }

    /// A relevant event re-lists; the rest are ignored.
    fn classify(&self, ev: &EventMessage) -> Wake {
        if relevant(ev) {
            Wake::Relist
        } else {
            Wake::Ignore
        }
    }

    /// No polling: events drive re-lists.
    fn refresh(&self) -> Option<Duration> {
        None
    }

    /// One full snapshot.
    async fn list(&self, docker: &Docker) -> Result<Catalog, DockerError> {
        snapshot_with(docker, &self.cfg, self.constraint.as_ref()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        ContainerConfig, ContainerState, ContainerStateStatusEnum, EndpointSettings, Health,
        HealthStatusEnum, HostConfig, NetworkSettings, PortBinding,
    };

    fn cfg() -> DockerConfig {
        DockerConfig {
            endpoint: "unix:///nowhere.sock".into(),
            ..DockerConfig::offline()
        }
    }

    #[test]
    fn exposure_table() {
        let by_default = cfg();
        let opt_in = DockerConfig {
            exposed_by_default: false,
            ..cfg()
        };
        let prod = Constraint::parse("Label(`env`, `prod`)").unwrap();
        #[allow(clippy::type_complexity)]
        let rows: &[(
            &str,
            &[(&str, &str)],
            &DockerConfig,
            Option<&Constraint>,
            Result<bool, &str>,
        )] = &[
            (
                "no label, exposed by default",
                &[],
                &by_default,
                None,
                Ok(true),
            ),
            ("no label, opt-in", &[], &opt_in, None, Ok(false)),
            (
                "enable=true, opt-in",
                &[("traefik.enable", "true")],
                &opt_in,
                None,
                Ok(true),
            ),
            (
                "Enable=FALSE, any case",
                &[("Traefik.Enable", "FALSE")],
                &by_default,
                None,
                Ok(false),
            ),
            (
                "enable=1 (Go bool)",
                &[("traefik.enable", "1")],
                &opt_in,
                None,
                Ok(true),
            ),
            (
                "enable=yes is malformed",
                &[("traefik.enable", "yes")],
                &by_default,
                None,
                Err("is not a boolean"),
            ),
            (
                "constraint holds",
                &[("env", "prod")],
                &by_default,
                Some(&prod),
                Ok(true),
            ),
            (
                "constraint fails",
                &[("env", "dev")],
                &by_default,
                Some(&prod),
                Ok(false),
            ),
        ];
        for (case, labels, cfg, constraint, want) in rows {
            let labels: BTreeMap<String, String> = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let got = exposed(&labels, cfg, *constraint, "c");
            match (want, got) {
                (Ok(w), Ok(g)) => assert_eq!(*w, g, "{case}"),
                (Err(w), Err(e)) => assert!(e.contains(w), "{case}: {e}"),
                (w, g) => panic!("{case}: want {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn naming_and_readiness_tables() {
        let names = [
            ("plain", "web-1", None, None, "web-1"),
            (
                "compose",
                "demo_api_1",
                Some("demo"),
                Some("api"),
                "api-demo",
            ),
            ("compose service only", "x", None, Some("api"), "x"),
            ("nothing left", "___", None, None, "0123456789ab"),
        ];
        for (case, cname, project, service, want) in names {
            assert_eq!(
                entry_name(cname, "0123456789abcdef", project, service),
                want,
                "{case}"
            );
        }
        let state = |running: bool, paused: bool, health: Option<&str>| RunState {
            status: String::new(),
            running,
            paused,
            health: health.map(str::to_string),
        };
        let ready = [
            ("running", state(true, false, None), true),
            ("healthy", state(true, false, Some("healthy")), true),
            ("unhealthy", state(true, false, Some("unhealthy")), false),
            ("starting", state(true, false, Some("starting")), false),
            ("paused", state(true, true, None), false),
            ("stopped", state(false, false, None), false),
        ];
        for (case, s, want) in ready {
            assert_eq!(s.ready(), want, "{case}");
        }
    }

    /// A running container `name` with `labels`, network mode `mode`, networks and exposed ports.
    fn container(
        name: &str,
        labels: &[(&str, &str)],
        mode: &str,
        nets: &[(&str, &str)],
        exposed: &[&str],
    ) -> ContainerInspectResponse {
        let id = format!(
            "{:0<64}",
            name.replace(|c: char| !c.is_ascii_hexdigit(), "a")
        );
        ContainerInspectResponse {
            id: Some(id),
            name: Some(format!("/{name}")),
            state: Some(ContainerState {
                status: Some(ContainerStateStatusEnum::RUNNING),
                running: Some(true),
                paused: Some(false),
                ..Default::default()
            }),
            config: Some(ContainerConfig {
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                exposed_ports: Some(exposed.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                network_mode: Some(mode.into()),
                ..Default::default()
            }),
            network_settings: Some(NetworkSettings {
                networks: Some(
                    nets.iter()
                        .map(|(n, ip)| {
                            (
                                n.to_string(),
                                // An IPv6 address stands for an IPv6-only network.
                                if ip.contains(':') {
                                    EndpointSettings {
                                        ip_address: Some(String::new()),
                                        global_ipv6_address: Some(ip.to_string()),
                                        ..Default::default()
                                    }
                                } else {
                                    EndpointSettings {
                                        ip_address: Some(ip.to_string()),
                                        ..Default::default()
                                    }
                                },
                            )
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn entry(c: &ContainerInspectResponse, cfg: &DockerConfig) -> CatalogEntry {
        entry_from_inspect(c, cfg, &HashMap::new())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn name_is_normalized_container_name() {
        let c = container(
            "My_App.v2--x",
            &[],
            "bridge",
            &[("bridge", "10.0.0.2")],
            &["80/tcp"],
        );
        let e = entry(&c, &cfg());
        assert_eq!(e.name, "My-App-v2-x");
        assert_eq!(e.provider, "docker");
        assert_eq!(e.servers, vec!["10.0.0.2:80"]);
        let d = e.container.unwrap();
        assert_eq!(d.name, "My_App.v2--x");
        assert_eq!(d.state, "running");
        assert_eq!(d.network_mode, "bridge");
        assert_eq!(d.address.as_deref(), Some("10.0.0.2"));
        assert_eq!(
            d.networks.get("bridge").map(String::as_str),
            Some("10.0.0.2")
        );
        assert_eq!(d.ports, vec![80]);
        assert_eq!(normalize("__a__b__"), "a-b");
    }

    #[test]
    fn compose_service_and_project_name_the_entry() {
        let labels = [
            (LABEL_COMPOSE_PROJECT, "shop"),
            (LABEL_COMPOSE_SERVICE, "web_front"),
            ("Traefik.HTTP.routers.x.rule", "Host(`a`)"),
        ];
        let c = container(
            "shop-web_front-1",
            &labels,
            "shop_default",
            &[("shop_default", "10.1.0.5")],
            &["8080/tcp"],
        );
        let e = entry(&c, &cfg());
        assert_eq!(e.name, "web-front-shop");
        assert_eq!(
            e.labels
                .get("Traefik.HTTP.routers.x.rule")
                .map(String::as_str),
            Some("Host(`a`)"),
            "labels copied as they are"
        );
        let d = e.container.unwrap();
        assert_eq!(d.compose_project.as_deref(), Some("shop"));
        assert_eq!(d.compose_service.as_deref(), Some("web_front"));
    }

    /// One row of `address_table`: a container's network set-up and the address it gets.
    struct AddressCase {
        case: &'static str,
        mode: &'static str,
        nets: &'static [(&'static str, &'static str)],
        /// `traefik.docker.network`.
        label: Option<&'static str>,
        /// `com.docker.compose.project`.
        project: Option<&'static str>,
        /// `cfg.network`.
        network: Option<&'static str>,
        host: &'static str,
        want: Option<&'static str>,
    }

    const NETS: &[(&str, &str)] = &[
        ("front", "10.0.1.2"),
        ("shop_back", "10.0.2.2"),
        ("aaa", "10.0.3.2"),
    ];

    /// The defaults rows override: a container on `NETS`, nothing wanted, host address 127.0.0.1.
    const ROW: AddressCase = AddressCase {
        case: "",
        mode: "front",
        nets: NETS,
        label: None,
        project: None,
        network: None,
        host: "127.0.0.1",
        want: None,
    };

    const ADDRESS_ROWS: &[AddressCase] = &[
        AddressCase {
            case: "host mode: the host address",
            mode: "host",
            nets: &[("host", "")],
            want: Some("127.0.0.1"),
            ..ROW
        },
        AddressCase {
            case: "host mode: an IPv6 host address as it is",
            mode: "host",
            host: "::1",
            want: Some("::1"),
            ..ROW
        },
        AddressCase {
            case: "host mode ignores the network label",
            mode: "host",
            label: Some("front"),
            want: Some("127.0.0.1"),
            ..ROW
        },
        AddressCase {
            case: "an IPv6-only network: its global IPv6 address",
            mode: "v6net",
            nets: &[("v6net", "2001:db8::7")],
            want: Some("2001:db8::7"),
            ..ROW
        },
        AddressCase {
            case: "label names a network",
            label: Some("front"),
            want: Some("10.0.1.2"),
            ..ROW
        },
        AddressCase {
            case: "label with the compose project prefix",
            label: Some("back"),
            project: Some("shop"),
            want: Some("10.0.2.2"),
            ..ROW
        },
        AddressCase {
            case: "label's exact name before the prefixed one",
            nets: &[("back", "10.0.9.2"), ("shop_back", "10.0.2.2")],
            label: Some("back"),
            project: Some("shop"),
            want: Some("10.0.9.2"),
            ..ROW
        },
        AddressCase {
            case: "no project label: no prefix, first network by name",
            label: Some("back"),
            want: Some("10.0.3.2"),
            ..ROW
        },
        AddressCase {
            case: "cfg.network",
            network: Some("shop_back"),
            want: Some("10.0.2.2"),
            ..ROW
        },
        AddressCase {
            case: "label before cfg.network",
            label: Some("front"),
            network: Some("shop_back"),
            want: Some("10.0.1.2"),
            ..ROW
        },
        AddressCase {
            case: "unknown network: first network by name",
            network: Some("missing"),
            want: Some("10.0.3.2"),
            ..ROW
        },
        AddressCase {
            case: "nothing wanted: first network by name",
            want: Some("10.0.3.2"),
            ..ROW
        },
        AddressCase {
            case: "networks without an IP are passed over",
            nets: &[("aaa", ""), ("bbb", "10.0.4.2")],
            want: Some("10.0.4.2"),
            ..ROW
        },
        AddressCase {
            case: "no network with an IP",
            mode: "none",
            nets: &[("none", "")],
            want: None,
            ..ROW
        },
        AddressCase {
            case: "container:NAME: the peer's first network",
            mode: "container:vpn",
            nets: &[],
            want: Some("10.2.0.2"),
            ..ROW
        },
        AddressCase {
            case: "container:/NAME",
            mode: "container:/vpn",
            nets: &[],
            want: Some("10.2.0.2"),
            ..ROW
        },
        AddressCase {
            case: "container:ID-PREFIX (12 characters)",
            mode: "container:111111111111",
            nets: &[],
            want: Some("10.2.0.2"),
            ..ROW
        },
        AddressCase {
            case: "container:SHORT-PREFIX is not looked up",
            mode: "container:11111",
            nets: &[],
            want: None,
            ..ROW
        },
        AddressCase {
            case: "container: the app's network label applies to the peer",
            mode: "container:vpn",
            nets: &[],
            label: Some("b_net"),
            want: Some("10.3.0.2"),
            ..ROW
        },
        AddressCase {
            case: "container: cfg.network applies to the peer",
            mode: "container:vpn",
            nets: &[],
            network: Some("b_net"),
            want: Some("10.3.0.2"),
            ..ROW
        },
        AddressCase {
            case: "container: the peer's own network label first",
            mode: "container:labelled",
            nets: &[],
            label: Some("a_net"),
            want: Some("10.5.0.2"),
            ..ROW
        },
        AddressCase {
            case: "container: a host-networked peer",
            mode: "container:hosty",
            nets: &[],
            want: Some("127.0.0.1"),
            ..ROW
        },
        AddressCase {
            case: "container: a chain of peers",
            mode: "container:chain",
            nets: &[],
            want: Some("10.2.0.2"),
            ..ROW
        },
        AddressCase {
            case: "container: an unknown peer",
            mode: "container:gone",
            nets: &[],
            want: None,
            ..ROW
        },
        AddressCase {
            case: "container: a loop ends after MAX_PEER_HOPS",
            mode: "container:loop",
            nets: &[],
            want: None,
            ..ROW
        },
    ];

    /// The containers `container:<x>` rows point at, each with an id of one repeated digit.
    fn address_peers() -> HashMap<String, ContainerInspectResponse> {
        let two = [("a_net", "10.2.0.2"), ("b_net", "10.3.0.2")];
        let list = [
            ("1", container("vpn", &[], "bridge", &two, &[])),
            (
                "2",
                container(
                    "labelled",
                    &[(LABEL_NETWORK, "b_net")],
                    "bridge",
                    &[("a_net", "10.4.0.2"), ("b_net", "10.5.0.2")],
                    &[],
                ),
            ),
            ("3", container("hosty", &[], "host", &[], &[])),
            ("4", container("chain", &[], "container:vpn", &[], &[])),
            ("5", container("loop", &[], "container:loop", &[], &[])),
        ];
        let mut peers = HashMap::new();
        for (digit, mut c) in list {
            c.id = Some(digit.repeat(64));
            add_peer(&mut peers, &c);
        }
        peers
    }

    #[test]
    fn address_table() {
        let peers = address_peers();
        for row in ADDRESS_ROWS {
            let mut labels = Vec::new();
            labels.extend(row.label.map(|v| (LABEL_NETWORK, v)));
            labels.extend(row.project.map(|v| (LABEL_COMPOSE_PROJECT, v)));
            let c = container("app", &labels, row.mode, row.nets, &[]);
            let cfg = DockerConfig {
                network: row.network.map(str::to_string),
                host_address: row.host.to_string(),
                ..cfg()
            };
            let wanted = wanted_network(&labels_of(&c), &cfg);
            let got = address_of(&c, wanted.as_deref(), &cfg, &peers, 0);
            assert_eq!(got.as_deref(), row.want, "{}", row.case);
        }
    }

    const SVC_A: &str = "traefik.http.services.a.loadbalancer.server.port";
    const SVC_B: &str = "traefik.http.services.b.loadbalancer.server.port";

    /// One row of `port_table`: a container's port labels and ports, its exposed TCP ports and
    /// the server port (or the text of the error).
    struct PortCase {
        case: &'static str,
        labels: &'static [(&'static str, &'static str)],
        exposed: &'static [&'static str],
        /// Container port spec → host port (`""`: no binding).
        published: &'static [(&'static str, &'static str)],
        ports: &'static [u16],
        want: Result<Option<u16>, &'static str>,
    }

    /// The defaults rows override: no labels, `8080/tcp` exposed, the server port 8080.
    const PORT_ROW: PortCase = PortCase {
        case: "",
        labels: &[],
        exposed: &["8080/tcp"],
        published: &[],
        ports: &[8080],
        want: Ok(Some(8080)),
    };

    const PORT_ROWS: &[PortCase] = &[
        PortCase {
            case: "lowest exposed TCP port",
            exposed: &["9090/tcp", "53/udp", "8080/tcp"],
            ports: &[8080, 9090],
            ..PORT_ROW
        },
        PortCase {
            case: "UDP only: no port",
            exposed: &["53/udp"],
            ports: &[],
            want: Ok(None),
            ..PORT_ROW
        },
        PortCase {
            case: "a bare number is TCP",
            exposed: &["7070"],
            ports: &[7070],
            want: Ok(Some(7070)),
            ..PORT_ROW
        },
        PortCase {
            case: "port 0 and junk are passed over",
            exposed: &["0/tcp", "x/tcp", "8080/tcp"],
            ..PORT_ROW
        },
        PortCase {
            case: "published: the container port, not the host port",
            exposed: &[],
            published: &[("8443/tcp", "443")],
            ports: &[8443],
            want: Ok(Some(8443)),
            ..PORT_ROW
        },
        PortCase {
            case: "exposed and published merge",
            exposed: &["9000/tcp"],
            published: &[("8080/tcp", "18080")],
            ports: &[8080, 9000],
            ..PORT_ROW
        },
        PortCase {
            case: "published without a host binding",
            exposed: &[],
            published: &[("8080/tcp", "")],
            ..PORT_ROW
        },
        PortCase {
            case: "service port label before exposed ports",
            labels: &[(SVC_A, "9090")],
            want: Ok(Some(9090)),
            ..PORT_ROW
        },
        PortCase {
            case: "traefik.port before the service label",
            labels: &[("traefik.port", "7000"), (SVC_A, "9090")],
            want: Ok(Some(7000)),
            ..PORT_ROW
        },
        PortCase {
            case: "Traefik.Port in any case",
            labels: &[("Traefik.Port", "7000")],
            want: Ok(Some(7000)),
            ..PORT_ROW
        },
        PortCase {
            case: "two services agreeing",
            labels: &[(SVC_A, "9090"), (SVC_B, "9090")],
            want: Ok(Some(9090)),
            ..PORT_ROW
        },
        PortCase {
            case: "two services disagreeing: lowest exposed",
            labels: &[(SVC_A, "9090"), (SVC_B, "9091")],
            ..PORT_ROW
        },
        PortCase {
            case: "two services disagreeing, nothing exposed: the lowest label (each service keeps its own)",
            labels: &[(SVC_A, "9091"), (SVC_B, "9090")],
            exposed: &[],
            ports: &[],
            want: Ok(Some(9090)),
            ..PORT_ROW
        },
        PortCase {
            case: "label without exposed ports",
            labels: &[(SVC_A, "9090")],
            exposed: &[],
            ports: &[],
            want: Ok(Some(9090)),
            ..PORT_ROW
        },
        PortCase {
            case: "no port at all",
            exposed: &[],
            ports: &[],
            want: Ok(None),
            ..PORT_ROW
        },
        PortCase {
            case: "traefik.port=abc is malformed",
            labels: &[("traefik.port", "abc")],
            want: Err("traefik.port=\"abc\""),
            ..PORT_ROW
        },
        PortCase {
            case: "server.port=0 is malformed",
            labels: &[(SVC_A, "0")],
            want: Err("server.port=\"0\""),
            ..PORT_ROW
        },
    ];

    #[test]
    fn port_table() {
        for row in PORT_ROWS {
            let case = row.case;
            let mut c = container("p", row.labels, "n", &[("n", "10.0.0.9")], row.exposed);
            let bindings = row.published.iter().map(|(spec, host)| {
                let b = PortBinding {
                    host_ip: Some(String::new()),
                    host_port: Some(host.to_string()),
                };
                (spec.to_string(), (!host.is_empty()).then(|| vec![b]))
            });
            if let Some(ns) = c.network_settings.as_mut() {
                ns.ports = Some(bindings.collect());
            }
            let ports = exposed_tcp_ports(&c);
            assert_eq!(ports, row.ports, "{case}: exposed ports");
            match (row.want, server_port(&labels_of(&c), &ports)) {
                (Ok(w), Ok(g)) => assert_eq!(w, g, "{case}"),
                (Err(w), Err(e)) => assert!(e.contains(w), "{case}: {e}"),
                (w, g) => panic!("{case}: want {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn servers_table() {
        type Row = (
            &'static str,
            Option<&'static str>,
            Option<u16>,
            &'static [&'static str],
        );
        let rows: &[Row] = &[
            (
                "address and port",
                Some("10.0.0.2"),
                Some(80),
                &["10.0.0.2:80"],
            ),
            ("IPv6 in brackets", Some("::1"), Some(8001), &["[::1]:8001"]),
            (
                "a host name as it is",
                Some("localhost"),
                Some(80),
                &["localhost:80"],
            ),
            ("no port", Some("10.0.0.2"), None, &[]),
            ("no address", None, Some(80), &[]),
            ("neither", None, None, &[]),
        ];
        for (case, address, port, want) in rows {
            let d = ContainerDetail {
                address: address.map(str::to_string),
                network_mode: "n".into(),
                ..Default::default()
            };
            assert_eq!(servers_of(&d, "c", "svc", *port), *want, "{case}");
        }
    }

    #[test]
    fn bind_port_table() {
        let rows: &[(&[&str], Option<&str>)] = &[
            (&["127.0.0.1:8080"], Some("127.0.0.1:8080")),
            (&["0.0.0.0:8080"], None),
            (&["[::]:8080"], None),
            (
                &["0.0.0.0:8080", "192.168.1.5:9090"],
                Some("192.168.1.5:9090"),
            ),
            (&["[::1]:8080"], Some("[::1]:8080")),
            (&[], None),
        ];
        for (bound, want) in rows {
            let mut d = ContainerDetail::default();
            d.host_ports
                .insert(80, bound.iter().map(|s| s.to_string()).collect());
            assert_eq!(bind_port_server(&d, 80).as_deref(), *want, "{bound:?}");
            assert_eq!(bind_port_server(&d, 81), None);
        }
    }

    #[test]
    fn catalog_table() {
        let nets = [("n", "10.0.0.9")];
        let web = |name: &str| {
            let compose = [
                (LABEL_COMPOSE_PROJECT, "shop"),
                (LABEL_COMPOSE_SERVICE, "web"),
            ];
            container(name, &compose, "n", &nets, &["80/tcp"])
        };
        let plain = |name: &str, labels: &[(&str, &str)], exposed: &[&str]| {
            container(name, labels, "n", &nets, exposed)
        };
        type Row = (
            &'static str,
            Vec<ContainerInspectResponse>,
            bool,
            &'static [&'static str],
            usize,
        );
        let rows: Vec<Row> = vec![
            (
                "sorted by entry name",
                vec![plain("b", &[], &["80/tcp"]), plain("a", &[], &["80/tcp"])],
                false,
                &["a", "b"],
                0,
            ),
            (
                "one entry name: by container id",
                vec![web("web-2"), web("web-1")],
                false,
                &["web-1", "web-2"],
                0,
            ),
            (
                "no servers: left out",
                vec![plain("x", &[], &[])],
                false,
                &[],
                0,
            ),
            (
                "no servers: kept with allow_empty_services",
                vec![plain("x", &[], &[])],
                true,
                &["x"],
                0,
            ),
            (
                "no servers: kept with traefik.docker.allownonrunning",
                vec![
                    plain("x", &[("traefik.docker.allownonrunning", "true")], &[]),
                    plain("y", &[("traefik.docker.allownonrunning", "false")], &[]),
                ],
                false,
                &["x"],
                0,
            ),
            (
                "malformed label: a problem, the others kept",
                vec![
                    plain("bad", &[("traefik.port", "abc")], &["80/tcp"]),
                    plain("good", &[], &["80/tcp"]),
                ],
                false,
                &["good"],
                1,
            ),
            (
                "not exposed: left out, no problem",
                vec![plain("off", &[(LABEL_ENABLE, "false")], &["80/tcp"])],
                false,
                &[],
                0,
            ),
        ];
        for (case, containers, allow_empty, want, problems) in rows {
            let cfg = DockerConfig {
                allow_empty_services: allow_empty,
                ..cfg()
            };
            let got = catalog_of(&containers, &cfg, None, &HashMap::new());
            let names: Vec<&str> = got
                .entries
                .iter()
                .filter_map(|e| e.container.as_ref().map(|d| d.name.as_str()))
                .collect();
            assert_eq!(names, want, "{case}");
            assert_eq!(got.problems.len(), problems, "{case}: {:?}", got.problems);
            for p in &got.problems {
                assert!(p.ends_with("; container skipped"), "{case}: {p}");
            }
        }
    }

    #[test]
    fn host_bindings_are_recorded() {
        let mut c = container("b", &[], "n", &[("n", "10.0.0.3")], &[]);
        let mut ports = HashMap::new();
        ports.insert(
            "80/tcp".to_string(),
            Some(vec![PortBinding {
                host_ip: Some("".into()),
                host_port: Some("8080".into()),
            }]),
        );
        ports.insert("53/udp".to_string(), None);
        if let Some(ns) = c.network_settings.as_mut() {
            ns.ports = Some(ports);
        }
        let d = entry(&c, &cfg()).container.unwrap();
        assert_eq!(d.ports, vec![80]);
        assert_eq!(
            d.host_ports.get(&80),
            Some(&vec!["0.0.0.0:8080".to_string()])
        );
    }

    #[test]
    fn exposure_rules() {
        let nets = [("n", "10.0.0.9")];
        let off = container("x", &[("traefik.enable", "false")], "n", &nets, &["80/tcp"]);
        assert!(entry_from_inspect(&off, &cfg(), &HashMap::new())
            .unwrap()
            .is_none());
        let plain = container("x", &[], "n", &nets, &["80/tcp"]);
        let mut k = cfg();
        k.exposed_by_default = false;
        assert!(entry_from_inspect(&plain, &k, &HashMap::new())
            .unwrap()
            .is_none());
        let on = container("x", &[("traefik.enable", "True")], "n", &nets, &["80/tcp"]);
        assert!(entry_from_inspect(&on, &k, &HashMap::new())
            .unwrap()
            .is_some());
        k.constraints = Some("Label(`team`, `a`)".into());
        assert!(entry_from_inspect(&on, &k, &HashMap::new())
            .unwrap()
            .is_none());
        let team = container(
            "x",
            &[("traefik.enable", "true"), ("team", "a")],
            "n",
            &nets,
            &["80/tcp"],
        );
        assert!(entry_from_inspect(&team, &k, &HashMap::new())
            .unwrap()
            .is_some());
    }

    #[test]
    fn unready_containers_have_no_servers() {
        let nets = [("n", "10.0.0.9")];
        for status in [HealthStatusEnum::UNHEALTHY, HealthStatusEnum::STARTING] {
            let mut c = container("u", &[], "n", &nets, &["80/tcp"]);
            if let Some(s) = c.state.as_mut() {
                s.health = Some(Health {
                    status: Some(status),
                    ..Default::default()
                });
            }
            let e = entry(&c, &cfg());
            assert!(e.servers.is_empty(), "{status}");
            assert_eq!(e.container.unwrap().health, Some(status.to_string()));
        }
        let mut c = container("s", &[], "n", &nets, &["80/tcp"]);
        c.state = Some(ContainerState {
            status: Some(ContainerStateStatusEnum::EXITED),
            running: Some(false),
            ..Default::default()
        });
        let e = entry(&c, &cfg());
        assert!(e.servers.is_empty());
        let d = e.container.unwrap();
        assert_eq!(d.state, "exited");
        assert_eq!(d.address, None, "no address unless running");
    }

    #[test]
    fn malformed_labels_are_errors_naming_container_and_label() {
        let nets = [("n", "10.0.0.9")];
        let c = container("bad", &[("traefik.port", "abc")], "n", &nets, &["80/tcp"]);
        let e = entry_from_inspect(&c, &cfg(), &HashMap::new()).unwrap_err();
        assert!(
            e.contains("container bad (") && e.contains("traefik.port=\"abc\""),
            "{e}"
        );
        let c = container("bad", &[("traefik.enable", "yes")], "n", &nets, &["80/tcp"]);
        let e = entry_from_inspect(&c, &cfg(), &HashMap::new()).unwrap_err();
        assert!(e.contains("traefik.enable=\"yes\""), "{e}");
        let svc = [("traefik.http.services.s.loadbalancer.server.port", "0")];
        let c = container("bad", &svc, "n", &nets, &["80/tcp"]);
        assert!(entry_from_inspect(&c, &cfg(), &HashMap::new())
            .unwrap_err()
            .contains("server.port"));
    }

    #[test]
    fn events_of_interest() {
        let ev = |typ, action: &str| EventMessage {
            typ: Some(typ),
            action: Some(action.into()),
            ..Default::default()
        };
        assert!(relevant(&ev(
            EventMessageTypeEnum::CONTAINER,
            "health_status: healthy"
        )));
        assert!(relevant(&ev(EventMessageTypeEnum::CONTAINER, "start")));
        assert!(!relevant(&ev(
            EventMessageTypeEnum::CONTAINER,
            "exec_start: sh"
        )));
        assert!(relevant(&ev(EventMessageTypeEnum::NETWORK, "connect")));
        assert!(!relevant(&ev(EventMessageTypeEnum::IMAGE, "pull")));
    }
}
