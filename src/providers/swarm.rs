//! The Swarm provider: services of a Docker Swarm (read from a manager) become catalog entries
//! (`provider: swarm`).
//!
//! Owns reading services, tasks, nodes and networks (read-only API use), turning one service into
//! entries by Traefik's rules (`entries_from_service`, pure) and what the shared session skeleton
//! (`engine.rs`) needs of this provider: a full list every `refresh`, and also soon after
//! `service` / `node` events (followed for a few seconds) and task container starts and stops.
//!
//! Entries: one per running task (its address on the chosen network, or its node's address when
//! host-networked), or one for the whole service with its VIP when `traefik.swarm.lbswarm` /
//! `traefik.docker.lbswarm` is true (never for dnsrr services). Entries of one service share the
//! name (the normalised service name) and the labels (the service spec's, i.e. compose
//! `deploy.labels`, with Docker's task placeholders such as `{{.Task.Slot}}` expanded per task, so
//! host-networked replicas on one node can each name their own port); `traefik.rhai` combines
//! their servers. Task addresses come from the verbose inspect of swarm-scoped networks
//! (bollard's `Task` model has no network attachments).
//!
//! Invariants: a snapshot is complete; outages, backoff and reporting are `engine.rs`'s (the
//! last catalog stays). A service without a port label or with
//! a malformed label is skipped alone, with a problem naming it. Must never: write to the engine,
//! touch the route table, or send traffic to tasks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use bollard::models::{
    EndpointSpecModeEnum, EventMessage, EventMessageTypeEnum, Network, Node, Service, Task,
    TaskState,
};
use bollard::query_parameters::{
    EventsOptions, InspectNetworkOptions, ListNetworksOptions, ListNodesOptions,
    ListServicesOptions, ListTasksOptions,
};
use bollard::Docker;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::constraints::{Constraint, ConstraintError};
use super::docker::DockerError;
use super::engine::Wake;
use super::labels::{
    join_host_port, label_ci, normalize, parse_go_bool, port_from_labels, short_id,
};
use crate::catalog::ProviderSender;
use crate::catalog::{Catalog, CatalogEntry, ContainerDetail};
use crate::config::{SwarmConfig, TlsFiles};

pub const PROVIDER: &str = "swarm";

/// More services than this are ignored (with a warning): bounds the work of one snapshot.
const MAX_SERVICES: usize = 10_000;
/// Container events of swarm tasks on the manager itself (a task started or stopped).
const TASK_CONTAINER_EVENTS: &[&str] = &["start", "die", "destroy", "health_status"];
const LABEL_TASK_SERVICE: &str = "com.docker.swarm.service.id";

const LABEL_ENABLE: &str = "traefik.enable";
const LABELS_NETWORK: &[&str] = &["traefik.swarm.network", "traefik.docker.network"];
const LABELS_LBSWARM: &[&str] = &["traefik.swarm.lbswarm", "traefik.docker.lbswarm"];
const LABEL_STACK: &str = "com.docker.stack.namespace";

/// Task id → network name → the task's address on it (prefix length stripped).
pub type TaskAddresses = HashMap<String, BTreeMap<String, String>>;

/// Parses `cfg.constraints` (None when there are none).
pub fn constraints(cfg: &SwarmConfig) -> Result<Option<Constraint>, ConstraintError> {
    match cfg.constraints.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(expr) => Constraint::parse(expr).map(Some),
    }
}

/// The network a service's labels ask for: `traefik.swarm.network` or `traefik.docker.network`;
/// both set to different networks is an error naming them (Traefik refuses it too).
fn wanted_network(labels: &BTreeMap<String, String>, who: &str) -> Result<Option<String>, String> {
    let found: Vec<(&str, &str)> = LABELS_NETWORK
        .iter()
        .filter_map(|k| label_ci(labels, k))
        .collect();
    match found.as_slice() {
        [] => Ok(None),
        [(a, av), (b, bv)] if av.trim() != bv.trim() => Err(format!(
            "{who}: labels {a}={av:?} and {b}={bv:?} name different networks; set one"
        )),
        [(_, v), ..] => Ok(Some(v.trim().to_string())),
    }
}

/// `10.0.1.5/24` → `10.0.1.5`.
fn strip_prefix_len(addr: &str) -> &str {
    addr.split('/').next().unwrap_or(addr)
}

/// Values of Docker's service template placeholders for one task.
struct TaskVars<'a> {
    slot: &'a str,
    task_id: &'a str,
    node_id: &'a str,
    service_name: &'a str,
    service_id: &'a str,
}

/// Labels with Docker's service template placeholders (`{{.Task.Slot}}`, `{{.Task.ID}}`,
/// `{{.Node.ID}}`, `{{.Service.Name}}`, `{{.Service.ID}}`, spaces inside the braces allowed)
/// replaced for one task. Docker expands them in a task's env but never in service labels, so
/// replicas sharing a node's network (`--network host`) can listen on
/// `PORT=910{{.Task.Slot}}` and say so with `traefik.port=910{{.Task.Slot}}`. Anything else
/// between braces is left as written.
fn expand_placeholders(
    labels: &BTreeMap<String, String>,
    vars: &TaskVars<'_>,
) -> BTreeMap<String, String> {
    let expand = |v: &str| -> String {
        let mut out = String::with_capacity(v.len());
        let mut rest = v;
        while let Some(start) = rest.find("{{") {
            let (before, from) = rest.split_at(start);
            out.push_str(before);
            let Some(end) = from.find("}}") else {
                out.push_str(from);
                return out;
            };
            let inner = from.get(2..end).unwrap_or_default().trim();
            let value = match inner {
                ".Task.Slot" => Some(vars.slot),
                ".Task.ID" => Some(vars.task_id),
                ".Node.ID" => Some(vars.node_id),
                ".Service.Name" => Some(vars.service_name),
                ".Service.ID" => Some(vars.service_id),
                _ => None,
            };
            match value {
                Some(x) => out.push_str(x),
                None => out.push_str(from.get(..end + 2).unwrap_or_default()),
            }
            rest = from.get(end + 2..).unwrap_or_default();
        }
        out.push_str(rest);
        out
    };
    labels
        .iter()
        .map(|(k, v)| {
            let v = if v.contains("{{") {
                expand(v)
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

fn is_unusable_node_address(addr: &str) -> bool {
    matches!(addr.trim(), "" | "0.0.0.0" | "127.0.0.1" | "::" | "::1")
}

/// The entries of one service (see the module doc). `networks` is by network id; `addresses`
/// holds the tasks' network addresses. `Ok(vec![])` when the service is not exposed or excluded
/// by the constraints; `Ok` with one entry without servers when no task runs; `Err(text)` naming
/// the service and the label for a malformed label or a missing port.
pub fn entries_from_service(
    svc: &Service,
    tasks: &[Task],
    nodes: &HashMap<String, Node>,
    networks: &HashMap<String, Network>,
    addresses: &TaskAddresses,
    cfg: &SwarmConfig,
) -> Result<Vec<CatalogEntry>, String> {
    let constraint = constraints(cfg).map_err(|e| e.to_string())?;
    entries_with(
        svc,
        tasks,
        nodes,
        networks,
        addresses,
        cfg,
        constraint.as_ref(),
    )
}

fn bool_label(
    labels: &BTreeMap<String, String>,
    keys: &[&str],
    who: &str,
) -> Result<Option<bool>, String> {
    for key in keys {
        if let Some((k, v)) = label_ci(labels, key) {
            return parse_go_bool(v).map(Some).ok_or_else(|| {
                format!("{who}: label {k}={v:?} is not a boolean (use true or false)")
            });
        }
    }
    Ok(None)
}

/// What one exposed service says of itself, worked out once for all its entries.
struct ServiceView<'a> {
    id: String,
    /// The service's name as Swarm has it.
    sname: String,
    /// `swarm service NAME (ID)`, for messages.
    who: String,
    /// The entries' name (normalised).
    name: String,
    labels: BTreeMap<String, String>,
    /// Whether labels hold task placeholders (expanded per task).
    templated: bool,
    /// The port of the service's labels (slot 1 standing in for placeholders).
    port: u16,
    lbswarm: bool,
    dnsrr: bool,
    /// Attached networks by name (task template first, then the legacy spec field).
    attached: Vec<String>,
    host_net: bool,
    ingress: Vec<String>,
    stack: Option<String>,
    /// The network label, else `--swarm.network`.
    wanted: Option<String>,
    networks: &'a HashMap<String, Network>,
    cfg: &'a SwarmConfig,
}

impl<'a> ServiceView<'a> {
    /// The view of `svc`; `None` when it is not exposed or the constraints exclude it.
    fn new(
        svc: &Service,
        networks: &'a HashMap<String, Network>,
        cfg: &'a SwarmConfig,
        constraint: Option<&Constraint>,
    ) -> Result<Option<ServiceView<'a>>, String> {
        let id = svc.id.clone().unwrap_or_default();
        let spec = svc.spec.as_ref();
        let sname = spec.and_then(|s| s.name.clone()).unwrap_or_default();
        let who = format!("swarm service {sname} ({})", short_id(&id));
        let labels: BTreeMap<String, String> = spec
            .and_then(|s| s.labels.as_ref())
            .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let enable = bool_label(&labels, &[LABEL_ENABLE], &who)?;
        if !enable.unwrap_or(cfg.exposed_by_default)
            || constraint.is_some_and(|k| !k.matches(&labels))
        {
            return Ok(None);
        }
        let mut name = normalize(&sname);
        if name.is_empty() {
            name = short_id(&id).to_string();
        }
        let (attached, host_net) = attached_networks(svc, networks);
        let wanted = wanted_network(&labels, &who)?.or_else(|| cfg.network.clone());
        let mut view = ServiceView {
            templated: labels.values().any(|v| v.contains("{{")),
            port: 0,
            lbswarm: bool_label(&labels, LABELS_LBSWARM, &who)?.unwrap_or(false),
            dnsrr: svc
                .endpoint
                .as_ref()
                .and_then(|e| e.spec.as_ref())
                .or_else(|| spec.and_then(|s| s.endpoint_spec.as_ref()))
                .and_then(|e| e.mode)
                == Some(EndpointSpecModeEnum::DNSRR),
            attached,
            host_net,
            ingress: networks
                .values()
                .filter(|n| n.ingress == Some(true))
                .filter_map(|n| n.name.clone())
                .collect(),
            stack: labels.get(LABEL_STACK).cloned(),
            wanted,
            id,
            sname,
            who,
            name,
            labels,
            networks,
            cfg,
        };
        // Checked once for the service (with slot 1 standing in for task placeholders), so a
        // bad label is reported even while no task runs; each task's labels are expanded later.
        let vars = view.vars("1", "", "");
        view.port = view.port_of(&expand_placeholders(&view.labels, &vars))?;
        Ok(Some(view))
    }

    fn vars<'v>(&'v self, slot: &'v str, task_id: &'v str, node_id: &'v str) -> TaskVars<'v> {
        TaskVars {
            slot,
            task_id,
            node_id,
            service_name: &self.sname,
            service_id: &self.id,
        }
    }

    /// The port `labels` give; a missing one is an error naming the label to add.
    fn port_of(&self, labels: &BTreeMap<String, String>) -> Result<u16, String> {
        let who = &self.who;
        port_from_labels(labels)
            .map_err(|e| format!("{who}: {e}"))?
            .ok_or_else(|| {
                format!(
                    "{who}: no port: Swarm services need a port label: add \
                     traefik.http.services.{}.loadbalancer.server.port=<port> (or traefik.port)",
                    self.name
                )
            })
    }

    /// A network's name by its id (the id when unknown).
    fn net_name(&self, nid: &str) -> String {
        net_name(self.networks, nid)
    }

    /// The chosen network's address in `addrs` (also tried with the stack prefix), else the
    /// first non-ingress network's by name.
    fn pick(&self, addrs: &BTreeMap<String, String>) -> Option<String> {
        if let Some(w) = &self.wanted {
            if let Some(a) = addrs.get(w) {
                return Some(a.clone());
            }
            let prefixed = self.stack.as_ref().map(|p| format!("{p}_{w}"));
            if let Some(a) = prefixed.and_then(|p| addrs.get(&p)) {
                return Some(a.clone());
            }
        }
        addrs
            .iter()
            .find(|(n, _)| !self.ingress.contains(n))
            .or_else(|| addrs.iter().next())
            .map(|(_, a)| a.clone())
    }

    /// The container detail an entry carries.
    fn detail(&self, cid: String, cname: String, port: u16) -> ContainerDetail {
        ContainerDetail {
            id: cid,
            name: cname,
            service_id: Some(self.id.clone()),
            network_mode: if self.host_net {
                "host".to_string()
            } else {
                self.wanted
                    .clone()
                    .or_else(|| self.attached.first().cloned())
                    .unwrap_or_default()
            },
            ports: vec![port],
            ..Default::default()
        }
    }

    /// An entry with `servers` for `labels`.
    fn entry(
        &self,
        labels: BTreeMap<String, String>,
        servers: Vec<String>,
        d: ContainerDetail,
    ) -> CatalogEntry {
        CatalogEntry {
            name: self.name.clone(),
            provider: PROVIDER.to_string(),
            servers,
            container: Some(d),
            labels,
        }
    }

    /// The one entry of an lbswarm service: its virtual IP on the chosen network.
    fn vip_entry(&self, svc: &Service) -> Result<CatalogEntry, String> {
        let vips: BTreeMap<String, String> = svc
            .endpoint
            .as_ref()
            .and_then(|e| e.virtual_ips.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|v| {
                let nid = v.network_id.as_deref()?;
                let addr = strip_prefix_len(v.addr.as_deref()?);
                (!addr.is_empty()).then(|| (self.net_name(nid), addr.to_string()))
            })
            .collect();
        let vip = self.pick(&vips);
        if vip.is_none() {
            debug!(
                "{}: lbswarm is on but the service has no virtual IP",
                self.who
            );
        }
        if self.templated {
            return Err(format!(
                "{}: labels use task placeholders ({{{{.Task.Slot}}}} ...), which need one \
                 server per task; they cannot be used with lbswarm",
                self.who
            ));
        }
        let mut d = self.detail(self.id.clone(), self.sname.clone(), self.port);
        d.state = "running".to_string();
        d.networks = vips;
        d.address = vip.clone();
        let servers = vip.iter().map(|a| join_host_port(a, self.port)).collect();
        Ok(self.entry(self.labels.clone(), servers, d))
    }

    /// A task's address: its node's (host network; `--swarm.host-address` when the node
    /// reports none usable), else its address on the chosen network.
    fn task_address(
        &self,
        node: Option<&String>,
        nodes: &HashMap<String, Node>,
        addrs: &BTreeMap<String, String>,
    ) -> Option<String> {
        if !self.host_net {
            return self.pick(addrs);
        }
        let node_addr = node
            .and_then(|n| nodes.get(n))
            .and_then(|n| n.status.as_ref())
            .and_then(|s| s.addr.clone())
            .filter(|a| !is_unusable_node_address(a));
        Some(node_addr.unwrap_or_else(|| self.cfg.host_address.clone()))
    }

    /// The entry of one running task.
    fn task_entry(
        &self,
        t: &Task,
        nodes: &HashMap<String, Node>,
        addresses: &TaskAddresses,
    ) -> Result<CatalogEntry, String> {
        let tid = t.id.clone().unwrap_or_default();
        let node = t.node_id.clone();
        let addrs = addresses.get(&tid).cloned().unwrap_or_default();
        let address = self.task_address(node.as_ref(), nodes, &addrs);
        if address.is_none() {
            debug!(task = %short_id(&tid), "{}: task has no address on any network", self.who);
        }
        let slot = t
            .slot
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0);
        let middle = slot
            .map(|s| s.to_string())
            .or_else(|| node.clone())
            .unwrap_or_default();
        let cid = t
            .status
            .as_ref()
            .and_then(|s| s.container_status.as_ref())
            .and_then(|c| c.container_id.clone())
            .unwrap_or_else(|| tid.clone());
        let (labels, port) = if self.templated {
            let slot_text = slot.map(|s| s.to_string()).unwrap_or_default();
            let vars = self.vars(&slot_text, &tid, node.as_deref().unwrap_or_default());
            let expanded = expand_placeholders(&self.labels, &vars);
            let port = self.port_of(&expanded)?;
            (expanded, port)
        } else {
            (self.labels.clone(), self.port)
        };
        let mut d = self.detail(cid, format!("{}.{middle}.{tid}", self.sname), port);
        d.state = "running".to_string();
        d.networks = addrs;
        d.address = address.clone();
        d.task_slot = slot;
        d.node = node;
        let servers = address.iter().map(|a| join_host_port(a, port)).collect();
        Ok(self.entry(labels, servers, d))
    }
}

/// A network's name by its id (the id when unknown).
fn net_name(networks: &HashMap<String, Network>, nid: &str) -> String {
    networks
        .get(nid)
        .and_then(|n| n.name.clone())
        .unwrap_or_else(|| nid.to_string())
}

/// The service's attached networks by name (task template first, then the legacy spec field),
/// and whether it is on the host network.
fn attached_networks(svc: &Service, networks: &HashMap<String, Network>) -> (Vec<String>, bool) {
    let spec = svc.spec.as_ref();
    let template = spec
        .and_then(|s| s.task_template.as_ref())
        .and_then(|t| t.networks.clone());
    let targets: Vec<String> = template
        .clone()
        .or_else(|| spec.and_then(|s| s.networks.clone()))
        .unwrap_or_default()
        .iter()
        .filter_map(|n| n.target.clone())
        .collect();
    let attached: Vec<String> = targets.iter().map(|t| net_name(networks, t)).collect();
    let host_driver = template
        .iter()
        .flatten()
        .filter_map(|n| n.target.as_deref())
        .any(|t| networks.get(t).and_then(|n| n.driver.as_deref()) == Some("host"));
    let host_net = attached.iter().any(|n| n == "host") || host_driver;
    (attached, host_net)
}

/// The running tasks of service `id` (desired running too), by slot then id.
fn running_tasks<'t>(tasks: &'t [Task], id: &str) -> Vec<&'t Task> {
    let mut mine: Vec<&Task> = tasks
        .iter()
        .filter(|t| t.service_id.as_deref() == Some(id))
        .filter(|t| t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING))
        .filter(|t| t.desired_state.is_none_or(|d| d == TaskState::RUNNING))
        .collect();
    mine.sort_by(|a, b| a.slot.cmp(&b.slot).then_with(|| a.id.cmp(&b.id)));
    mine
}

/// The entries of one service: one for its VIP (lbswarm), one per running task, or one without
/// servers while no task runs.
fn entries_with(
    svc: &Service,
    tasks: &[Task],
    nodes: &HashMap<String, Node>,
    networks: &HashMap<String, Network>,
    addresses: &TaskAddresses,
    cfg: &SwarmConfig,
    constraint: Option<&Constraint>,
) -> Result<Vec<CatalogEntry>, String> {
    let Some(view) = ServiceView::new(svc, networks, cfg, constraint)? else {
        return Ok(Vec::new());
    };
    if view.lbswarm && !view.dnsrr && !view.host_net {
        return Ok(vec![view.vip_entry(svc)?]);
    }
    let mut entries = running_tasks(tasks, &view.id)
        .into_iter()
        .map(|t| view.task_entry(t, nodes, addresses))
        .collect::<Result<Vec<_>, _>>()?;
    if entries.is_empty() {
        let d = view.detail(view.id.clone(), view.sname.clone(), view.port);
        entries.push(view.entry(view.labels.clone(), Vec::new(), d));
    }
    Ok(entries)
}

/// Task addresses from the verbose inspect of each swarm-scoped network (`Services.*.Tasks`:
/// task names end with `.<task id>`).
fn addresses_from_network(
    net_name: &str,
    services: &HashMap<String, serde_json::Value>,
    out: &mut TaskAddresses,
) {
    for svc in services.values() {
        let Some(tasks) = svc.get("Tasks").and_then(|t| t.as_array()) else {
            continue;
        };
        for t in tasks {
            let name = t.get("Name").and_then(|v| v.as_str()).unwrap_or_default();
            let ip = t
                .get("EndpointIP")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            let Some(tid) = name.rsplit('.').next().filter(|s| !s.is_empty()) else {
                continue;
            };
            let ip = strip_prefix_len(ip);
            if ip.is_empty() {
                continue;
            }
            out.entry(tid.to_string())
                .or_default()
                .insert(net_name.to_string(), ip.to_string());
        }
    }
}

/// The current catalog of the swarm: services, their running tasks, nodes and networks, turned
/// into entries sorted by name then task slot. Services without running tasks are left out.
pub async fn snapshot(docker: &Docker, cfg: &SwarmConfig) -> Result<Catalog, DockerError> {
    let constraint = constraints(cfg)?;
    snapshot_with(docker, cfg, constraint.as_ref()).await
}

async fn snapshot_with(
    docker: &Docker,
    cfg: &SwarmConfig,
    constraint: Option<&Constraint>,
) -> Result<Catalog, DockerError> {
    let api = |what: &str| {
        let what = what.to_string();
        move |source| DockerError::Api {
            endpoint: cfg.endpoint.clone(),
            what,
            source,
        }
    };
    let mut services = docker
        .list_services(None::<ListServicesOptions>)
        .await
        .map_err(api("listing services (is the endpoint a swarm manager?)"))?;
    if services.len() > MAX_SERVICES {
        warn!(
            services = services.len(),
            max = MAX_SERVICES,
            "too many services: the rest are ignored"
        );
        services.truncate(MAX_SERVICES);
    }
    let mut filters = HashMap::new();
    filters.insert("desired-state".to_string(), vec!["running".to_string()]);
    let tasks = docker
        .list_tasks(Some(ListTasksOptions {
            filters: Some(filters),
        }))
        .await
        .map_err(api("listing tasks"))?;
    let nodes: HashMap<String, Node> = docker
        .list_nodes(None::<ListNodesOptions>)
        .await
        .map_err(api("listing nodes"))?
        .into_iter()
        .filter_map(|n| Some((n.id.clone()?, n)))
        .collect();
    let mut networks: HashMap<String, Network> = docker
        .list_networks(None::<ListNetworksOptions>)
        .await
        .map_err(api("listing networks"))?
        .into_iter()
        .filter_map(|n| Some((n.id.clone()?, n)))
        .collect();
    // Networks services attach to that the list leaves out: the swarm-scoped `host` network
    // (`--network host`) has its own id, not the local host network's. Inspected one by one.
    let unknown: BTreeSet<String> = services
        .iter()
        .filter_map(|s| s.spec.as_ref()?.task_template.as_ref()?.networks.as_ref())
        .flatten()
        .filter_map(|n| n.target.clone())
        .filter(|t| !networks.contains_key(t))
        .collect();
    for nid in unknown.into_iter().take(MAX_SERVICES) {
        let opts = InspectNetworkOptions {
            verbose: false,
            scope: Some("swarm".to_string()),
        };
        match docker.inspect_network(&nid, Some(opts)).await {
            Ok(n) => {
                let net = Network {
                    id: n.id,
                    name: n.name,
                    driver: n.driver,
                    scope: n.scope,
                    ingress: n.ingress,
                    ..Default::default()
                };
                networks.insert(nid, net);
            }
            Err(e) => debug!(network = %nid, error = %e, "cannot inspect a service's network"),
        }
    }
    let mut addresses = TaskAddresses::new();
    for (nid, n) in &networks {
        if n.scope.as_deref() != Some("swarm") {
            continue;
        }
        let opts = InspectNetworkOptions {
            verbose: true,
            scope: Some("swarm".to_string()),
        };
        match docker.inspect_network(nid, Some(opts)).await {
            Ok(full) => {
                let name = n.name.clone().unwrap_or_else(|| nid.clone());
                if let Some(s) = &full.services {
                    addresses_from_network(&name, s, &mut addresses);
                }
            }
            Err(e) => debug!(network = %nid, error = %e, "cannot inspect network"),
        }
    }
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for svc in &services {
        match entries_with(svc, &tasks, &nodes, &networks, &addresses, cfg, constraint) {
            Ok(list) => {
                for e in list {
                    if e.servers.is_empty() {
                        debug!(service = %e.name, "no running task with an address: left out");
                    } else {
                        entries.push(e);
                    }
                }
            }
            // Logged by the watch loop when the catalog changes: a poll must not repeat them.
            Err(problem) => problems.push(format!("{problem}; service skipped")),
        }
    }
    entries.sort_by(|a, b| {
        let key = |e: &CatalogEntry| e.container.as_ref().map(|c| (c.task_slot, c.name.clone()));
        a.name.cmp(&b.name).then_with(|| key(a).cmp(&key(b)))
    });
    Ok(Catalog { entries, problems })
}

fn events_options() -> EventsOptions {
    let mut filters = HashMap::new();
    filters.insert(
        "type".to_string(),
        vec![
            "service".to_string(),
            "node".to_string(),
            "container".to_string(),
        ],
    );
    EventsOptions {
        filters: Some(filters),
        ..Default::default()
    }
}

/// Service and node events, and start/stop of containers that are swarm tasks.
fn relevant(ev: &EventMessage) -> bool {
    match ev.typ {
        Some(EventMessageTypeEnum::SERVICE) | Some(EventMessageTypeEnum::NODE) => true,
        Some(EventMessageTypeEnum::CONTAINER) => {
            let action = ev.action.as_deref().unwrap_or_default();
            let base = action.split(':').next().unwrap_or_default().trim();
            let task = ev
                .actor
                .as_ref()
                .and_then(|a| a.attributes.as_ref())
                .is_some_and(|a| a.contains_key(LABEL_TASK_SERVICE));
            task && TASK_CONTAINER_EVENTS.contains(&base)
        }
        _ => false,
    }
}

/// Watches the swarm until `shutdown` turns true or the control loop goes away, sending a
/// `ProviderReport::Snapshot` whenever the catalog changes (the session skeleton is
/// `engine::run`). Never returns an error.
pub async fn run(cfg: SwarmConfig, reports: ProviderSender, shutdown: watch::Receiver<bool>) {
    let made = constraints(&cfg).map(|constraint| Engine { cfg, constraint });
    super::engine::start(made, reports, shutdown).await;
}

/// What the session skeleton needs of the swarm provider: list every `refresh`; after a service
/// or node event, follow for a while (tasks start over seconds); relist after task containers
/// start or stop.
struct Engine {
    cfg: SwarmConfig,
    constraint: Option<Constraint>,
}

impl super::engine::Source for Engine {
    const PROVIDER: &'static str = PROVIDER;
    const WHAT: &'static str = "swarm manager";

    fn endpoint(&self) -> (&str, Option<&TlsFiles>) {
        (&self.cfg.endpoint, self.cfg.tls.as_ref())
    }

    fn events(&self) -> EventsOptions {
        events_options()
    }

    fn classify(&self, ev: &EventMessage) -> Wake {
        match (relevant(ev), ev.typ) {
            (false, _) => Wake::Ignore,
            (true, Some(EventMessageTypeEnum::CONTAINER)) => Wake::Relist,
            (true, _) => Wake::Follow,
        }
    }

    fn refresh(&self) -> Option<Duration> {
        Some(self.cfg.refresh)
    }

    async fn list(&self, docker: &Docker) -> Result<Catalog, DockerError> {
        snapshot_with(docker, &self.cfg, self.constraint.as_ref()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        EndpointSpec, NetworkAttachmentConfig, NodeStatus, ServiceEndpoint,
        ServiceEndpointVirtualIps, ServiceSpec, TaskSpec, TaskStatus,
    };

    fn cfg() -> SwarmConfig {
        SwarmConfig {
            endpoint: "unix:///nowhere.sock".into(),
            tls: None,
            network: None,
            exposed_by_default: true,
            constraints: None,
            refresh: Duration::from_secs(15),
            host_address: "127.0.0.1".into(),
        }
    }

    fn network(id: &str, name: &str, driver: &str) -> (String, Network) {
        (
            id.to_string(),
            Network {
                id: Some(id.into()),
                name: Some(name.into()),
                driver: Some(driver.into()),
                scope: Some("swarm".into()),
                ingress: Some(name == "ingress"),
                ..Default::default()
            },
        )
    }

    fn networks() -> HashMap<String, Network> {
        [
            network("n-front", "front", "overlay"),
            network("n-back", "shop_back", "overlay"),
            network("n-ing", "ingress", "overlay"),
            network("n-host", "host", "host"),
        ]
        .into_iter()
        .collect()
    }

    fn service(name: &str, labels: &[(&str, &str)], nets: &[&str]) -> Service {
        Service {
            id: Some(format!("{name}-id-0123456789")),
            spec: Some(ServiceSpec {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                task_template: Some(TaskSpec {
                    networks: Some(
                        nets.iter()
                            .map(|n| NetworkAttachmentConfig {
                                target: Some(n.to_string()),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            endpoint: Some(ServiceEndpoint {
                spec: Some(EndpointSpec {
                    mode: Some(EndpointSpecModeEnum::VIP),
                    ..Default::default()
                }),
                virtual_ips: Some(vec![
                    ServiceEndpointVirtualIps {
                        network_id: Some("n-ing".into()),
                        addr: Some("10.0.0.2/24".into()),
                    },
                    ServiceEndpointVirtualIps {
                        network_id: Some("n-front".into()),
                        addr: Some("10.0.1.2/24".into()),
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn task(svc: &Service, slot: i64, state: TaskState, node: &str) -> Task {
        Task {
            id: Some(format!("task{slot}")),
            service_id: svc.id.clone(),
            slot: Some(slot),
            node_id: Some(node.into()),
            desired_state: Some(TaskState::RUNNING),
            status: Some(TaskStatus {
                state: Some(state),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn network_labels_table() {
        type Row<'a> = (&'a [(&'a str, &'a str)], Result<Option<&'a str>, &'a str>);
        let rows: &[Row] = &[
            (&[], Ok(None)),
            (&[("traefik.swarm.network", "back")], Ok(Some("back"))),
            (&[("Traefik.Docker.Network", "front")], Ok(Some("front"))),
            (
                &[
                    ("traefik.swarm.network", "back"),
                    ("traefik.docker.network", "back"),
                ],
                Ok(Some("back")),
            ),
            (
                &[
                    ("traefik.swarm.network", "back"),
                    ("traefik.docker.network", "front"),
                ],
                Err("labels traefik.swarm.network=\"back\" and traefik.docker.network=\"front\" name different networks"),
            ),
        ];
        for (labels, want) in rows {
            let l: BTreeMap<String, String> = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            match (wanted_network(&l, "svc"), want) {
                (Ok(got), Ok(w)) => assert_eq!(got.as_deref(), *w, "{labels:?}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{e}"),
                (got, w) => panic!("{labels:?}: {got:?}, want {w:?}"),
            }
        }
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn network_choice_table() {
        let nets = networks();
        let rows: &[(
            &str,
            &[(&str, &str)],
            Option<&str>,
            &[(&str, &str)],
            Option<&str>,
        )] = &[
            (
                "the label's network",
                &[("traefik.swarm.network", "shop_back")],
                None,
                &[("front", "10.0.1.5"), ("shop_back", "10.0.2.5")],
                Some("10.0.2.5"),
            ),
            (
                "the docker label works too",
                &[("traefik.docker.network", "front")],
                None,
                &[("front", "10.0.1.5"), ("shop_back", "10.0.2.5")],
                Some("10.0.1.5"),
            ),
            (
                "--swarm.network when no label",
                &[],
                Some("shop_back"),
                &[("front", "10.0.1.5"), ("shop_back", "10.0.2.5")],
                Some("10.0.2.5"),
            ),
            (
                "the stack prefix is tried",
                &[
                    ("traefik.swarm.network", "back"),
                    ("com.docker.stack.namespace", "shop"),
                ],
                None,
                &[("front", "10.0.1.5"), ("shop_back", "10.0.2.5")],
                Some("10.0.2.5"),
            ),
            (
                "else the first non-ingress network by name",
                &[],
                None,
                &[("ingress", "10.0.0.5"), ("shop_back", "10.0.2.5")],
                Some("10.0.2.5"),
            ),
            (
                "only ingress: still an address",
                &[],
                None,
                &[("ingress", "10.0.0.5")],
                Some("10.0.0.5"),
            ),
            ("no address at all", &[], None, &[], None),
        ];
        for (case, extra, default_net, addrs, want) in rows {
            let mut labels = vec![("traefik.port", "80")];
            labels.extend_from_slice(extra);
            let svc = service("s", &labels, &["n-front"]);
            let cfg = SwarmConfig {
                network: default_net.map(str::to_string),
                ..cfg()
            };
            let view = ServiceView::new(&svc, &nets, &cfg, None).unwrap().unwrap();
            let addrs: BTreeMap<String, String> = addrs
                .iter()
                .map(|(n, a)| (n.to_string(), a.to_string()))
                .collect();
            assert_eq!(view.pick(&addrs).as_deref(), *want, "{case}");
        }
    }

    #[test]
    fn task_selection_and_host_addresses_table() {
        let svc = service("s", &[("traefik.port", "80")], &["n-front"]);
        let mut other = task(&svc, 9, TaskState::RUNNING, "node1");
        other.service_id = Some("another".into());
        let mut leaving = task(&svc, 4, TaskState::RUNNING, "node1");
        leaving.desired_state = Some(TaskState::SHUTDOWN);
        let tasks = vec![
            task(&svc, 3, TaskState::RUNNING, "node1"),
            task(&svc, 1, TaskState::RUNNING, "node1"),
            task(&svc, 2, TaskState::PREPARING, "node1"),
            other,
            leaving,
        ];
        let slots: Vec<i64> = running_tasks(&tasks, svc.id.as_deref().unwrap())
            .iter()
            .filter_map(|t| t.slot)
            .collect();
        assert_eq!(
            slots,
            vec![1, 3],
            "running, desired running, this service, by slot"
        );

        let nets = networks();
        let host = service("h", &[("traefik.port", "80")], &["n-host"]);
        let c = cfg();
        let view = ServiceView::new(&host, &nets, &c, None).unwrap().unwrap();
        assert!(view.host_net);
        let rows = [
            ("the node's address", "192.0.2.7", Some("192.0.2.7")),
            (
                "0.0.0.0 falls back to --swarm.host-address",
                "0.0.0.0",
                Some("127.0.0.1"),
            ),
            ("127.0.0.1 too", "127.0.0.1", Some("127.0.0.1")),
            ("no address too", "", Some("127.0.0.1")),
        ];
        for (case, node_addr, want) in rows {
            let got = view.task_address(
                Some(&"node1".to_string()),
                &nodes(node_addr),
                &BTreeMap::new(),
            );
            assert_eq!(got.as_deref(), want, "{case}");
        }
    }

    fn addresses(list: &[(&str, &str, &str)]) -> TaskAddresses {
        let mut out = TaskAddresses::new();
        for (t, net, ip) in list {
            out.entry(t.to_string())
                .or_default()
                .insert(net.to_string(), ip.to_string());
        }
        out
    }

    fn nodes(addr: &str) -> HashMap<String, Node> {
        let mut m = HashMap::new();
        m.insert(
            "node1".to_string(),
            Node {
                id: Some("node1".into()),
                status: Some(NodeStatus {
                    addr: Some(addr.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        m
    }

    const PORT: (&str, &str) = ("traefik.http.services.app.loadbalancer.server.port", "8080");

    #[test]
    fn one_entry_per_running_task_with_labels_from_the_spec() {
        let svc = service(
            "shop_web.app",
            &[PORT, ("traefik.http.routers.app.rule", "Host(`a`)")],
            &["n-front", "n-ing"],
        );
        let tasks = vec![
            task(&svc, 2, TaskState::RUNNING, "node1"),
            task(&svc, 1, TaskState::RUNNING, "node1"),
            task(&svc, 3, TaskState::STARTING, "node1"),
            task(&svc, 4, TaskState::FAILED, "node1"),
        ];
        let addrs = addresses(&[
            ("task1", "ingress", "10.0.0.5"),
            ("task1", "front", "10.0.1.5"),
            ("task2", "front", "10.0.1.6"),
            ("task3", "front", "10.0.1.7"),
        ]);
        let es = entries_from_service(
            &svc,
            &tasks,
            &nodes("192.0.2.1"),
            &networks(),
            &addrs,
            &cfg(),
        )
        .unwrap();
        assert_eq!(es.len(), 2, "starting and failed tasks are dropped");
        let servers: Vec<_> = es.iter().flat_map(|e| e.servers.clone()).collect();
        assert_eq!(
            servers,
            vec!["10.0.1.5:8080", "10.0.1.6:8080"],
            "ingress skipped, slot order"
        );
        let e = &es[0];
        assert_eq!(e.name, "shop-web-app");
        assert_eq!(e.provider, "swarm");
        assert_eq!(
            e.labels
                .get("traefik.http.routers.app.rule")
                .map(String::as_str),
            Some("Host(`a`)")
        );
        let d = e.container.as_ref().unwrap();
        assert_eq!(d.service_id, svc.id);
        assert_eq!(d.task_slot, Some(1));
        assert_eq!(d.node.as_deref(), Some("node1"));
        assert_eq!(d.address.as_deref(), Some("10.0.1.5"));
        assert_eq!(d.name, "shop_web.app.1.task1");
        // Another service's tasks are not this one's.
        let other = service("other", &[PORT], &["n-front"]);
        let es = entries_from_service(
            &other,
            &tasks,
            &nodes("192.0.2.1"),
            &networks(),
            &addrs,
            &cfg(),
        )
        .unwrap();
        assert_eq!(es.len(), 1);
        assert!(
            es[0].servers.is_empty(),
            "no running task: one entry without servers"
        );
    }

    #[test]
    fn network_label_and_default_network() {
        let tasks_of = |svc: &Service| vec![task(svc, 1, TaskState::RUNNING, "node1")];
        let addrs = addresses(&[
            ("task1", "front", "10.0.1.5"),
            ("task1", "shop_back", "10.0.2.5"),
        ]);
        let n = nodes("192.0.2.1");
        for key in ["traefik.swarm.network", "traefik.docker.network"] {
            let svc = service(
                "s",
                &[PORT, (key, "back"), (LABEL_STACK, "shop")],
                &["n-front", "n-back"],
            );
            let es = entries_from_service(&svc, &tasks_of(&svc), &n, &networks(), &addrs, &cfg())
                .unwrap();
            assert_eq!(
                es[0].servers,
                vec!["10.0.2.5:8080"],
                "{key} with the stack prefix"
            );
        }
        let svc = service("s", &[PORT], &["n-front", "n-back"]);
        let mut k = cfg();
        k.network = Some("shop_back".into());
        let es = entries_from_service(&svc, &tasks_of(&svc), &n, &networks(), &addrs, &k).unwrap();
        assert_eq!(es[0].servers, vec!["10.0.2.5:8080"]);
        let es =
            entries_from_service(&svc, &tasks_of(&svc), &n, &networks(), &addrs, &cfg()).unwrap();
        assert_eq!(es[0].servers, vec!["10.0.1.5:8080"], "first by name");
    }

    #[test]
    fn lbswarm_uses_the_vip_except_for_dnsrr() {
        let tasks_of = |svc: &Service| {
            vec![
                task(svc, 1, TaskState::RUNNING, "node1"),
                task(svc, 2, TaskState::RUNNING, "node1"),
            ]
        };
        let addrs = addresses(&[
            ("task1", "front", "10.0.1.5"),
            ("task2", "front", "10.0.1.6"),
        ]);
        let n = nodes("192.0.2.1");
        for key in ["traefik.swarm.lbswarm", "traefik.docker.lbswarm"] {
            let svc = service("s", &[PORT, (key, "true")], &["n-front", "n-ing"]);
            let es = entries_from_service(&svc, &tasks_of(&svc), &n, &networks(), &addrs, &cfg())
                .unwrap();
            assert_eq!(es.len(), 1, "{key}");
            assert_eq!(
                es[0].servers,
                vec!["10.0.1.2:8080"],
                "VIP on the non-ingress network, prefix stripped"
            );
            let d = es[0].container.as_ref().unwrap();
            assert_eq!(d.task_slot, None);
            assert_eq!(d.service_id, svc.id);
        }
        let mut svc = service(
            "s",
            &[PORT, ("traefik.swarm.lbswarm", "true")],
            &["n-front"],
        );
        if let Some(e) = svc.endpoint.as_mut() {
            e.spec = Some(EndpointSpec {
                mode: Some(EndpointSpecModeEnum::DNSRR),
                ..Default::default()
            });
            e.virtual_ips = None;
        }
        let es =
            entries_from_service(&svc, &tasks_of(&svc), &n, &networks(), &addrs, &cfg()).unwrap();
        let servers: Vec<_> = es.iter().flat_map(|e| e.servers.clone()).collect();
        assert_eq!(
            servers,
            vec!["10.0.1.5:8080", "10.0.1.6:8080"],
            "dnsrr: per task"
        );
        let svc = service("s", &[PORT, ("traefik.swarm.lbswarm", "yes")], &["n-front"]);
        let err = entries_from_service(&svc, &tasks_of(&svc), &n, &networks(), &addrs, &cfg())
            .unwrap_err();
        assert!(
            err.contains("swarm service s (") && err.contains("lbswarm=\"yes\""),
            "{err}"
        );
    }

    #[test]
    fn missing_port_is_an_error_naming_the_service_and_label() {
        let err_of = |svc: &Service| {
            let tasks = vec![task(svc, 1, TaskState::RUNNING, "node1")];
            on_host(svc, &tasks).unwrap_err()
        };
        let svc = service(
            "api_v2",
            &[("traefik.http.routers.r.rule", "Host(`a`)")],
            &["n-front"],
        );
        let err = err_of(&svc);
        assert!(err.contains("swarm service api_v2 ("), "{err}");
        assert!(
            err.contains("traefik.http.services.api-v2.loadbalancer.server.port"),
            "{err}"
        );
        let err = err_of(&service("p", &[("traefik.port", "x")], &["n-front"]));
        assert!(err.contains("traefik.port=\"x\""), "{err}");
    }

    /// The entries of `svc` with `tasks` on node `node1` at 192.0.2.7, no task addresses.
    fn on_host(svc: &Service, tasks: &[Task]) -> Result<Vec<CatalogEntry>, String> {
        let none = TaskAddresses::new();
        entries_from_service(svc, tasks, &nodes("192.0.2.7"), &networks(), &none, &cfg())
    }

    #[test]
    fn task_placeholders_give_each_host_networked_replica_its_port() {
        let svc = service(
            "echo",
            &[
                ("traefik.port", "910{{.Task.Slot}}"),
                (
                    "traefik.frontend.rule",
                    "Host:{{ .Service.Name }}.localhost",
                ),
                ("note", "{{.Unknown}} and {{.Task.Slot"),
            ],
            &["n-host"],
        );
        let tasks = vec![
            task(&svc, 2, TaskState::RUNNING, "node1"),
            task(&svc, 1, TaskState::RUNNING, "node1"),
        ];
        let es = on_host(&svc, &tasks).unwrap();
        let servers: Vec<_> = es.iter().map(|e| e.servers.clone()).collect();
        assert_eq!(
            servers,
            vec![vec!["192.0.2.7:9101"], vec!["192.0.2.7:9102"]]
        );
        assert_eq!(es[1].labels["traefik.port"], "9102");
        assert_eq!(es[0].labels["traefik.frontend.rule"], "Host:echo.localhost");
        assert_eq!(es[0].labels["note"], "{{.Unknown}} and {{.Task.Slot");
        assert_eq!(es[0].container.as_ref().unwrap().ports, vec![9101]);

        let bad = service("echo", &[("traefik.port", "{{.Task.ID}}")], &["n-host"]);
        let err = on_host(&bad, &tasks).unwrap_err();
        assert!(
            err.contains("swarm service echo") && err.contains("traefik.port"),
            "{err}"
        );
        let lb = service(
            "echo",
            &[
                ("traefik.port", "910{{.Task.Slot}}"),
                ("traefik.swarm.lbswarm", "true"),
            ],
            &["n-front"],
        );
        let err = on_host(&lb, &tasks).unwrap_err();
        assert!(err.contains("lbswarm"), "{err}");
    }

    #[test]
    fn host_network_uses_the_node_address() {
        let svc = service("h", &[("traefik.port", "9001")], &["n-host"]);
        let tasks = vec![task(&svc, 1, TaskState::RUNNING, "node1")];
        let none = TaskAddresses::new();
        let es = entries_from_service(
            &svc,
            &tasks,
            &nodes("192.0.2.7"),
            &networks(),
            &none,
            &cfg(),
        )
        .unwrap();
        assert_eq!(es[0].servers, vec!["192.0.2.7:9001"]);
        assert_eq!(es[0].container.as_ref().unwrap().network_mode, "host");
        let mut k = cfg();
        k.host_address = "127.0.0.2".into();
        for unusable in ["0.0.0.0", "127.0.0.1"] {
            let es = entries_from_service(&svc, &tasks, &nodes(unusable), &networks(), &none, &k)
                .unwrap();
            assert_eq!(es[0].servers, vec!["127.0.0.2:9001"], "{unusable}");
        }
        let lb = service(
            "h",
            &[("traefik.port", "9001"), ("traefik.swarm.lbswarm", "true")],
            &["n-host"],
        );
        let es = entries_from_service(&lb, &tasks, &nodes("192.0.2.7"), &networks(), &none, &cfg())
            .unwrap();
        assert_eq!(
            es[0].servers,
            vec!["192.0.2.7:9001"],
            "host network has no VIP: per task"
        );
    }

    #[test]
    fn exposure_and_constraints() {
        let n = nodes("192.0.2.1");
        let off = service("x", &[PORT, ("traefik.enable", "false")], &["n-front"]);
        let tasks = vec![task(&off, 1, TaskState::RUNNING, "node1")];
        assert!(
            entries_from_service(&off, &tasks, &n, &networks(), &TaskAddresses::new(), &cfg())
                .unwrap()
                .is_empty()
        );
        let mut k = cfg();
        k.exposed_by_default = false;
        let plain = service("x", &[PORT], &["n-front"]);
        assert!(
            entries_from_service(&plain, &tasks, &n, &networks(), &TaskAddresses::new(), &k)
                .unwrap()
                .is_empty()
        );
        k.exposed_by_default = true;
        k.constraints = Some("Label(`team`, `a`)".into());
        assert!(
            entries_from_service(&plain, &tasks, &n, &networks(), &TaskAddresses::new(), &k)
                .unwrap()
                .is_empty()
        );
        let team = service("x", &[PORT, ("team", "a")], &["n-front"]);
        assert_eq!(
            entries_from_service(&team, &tasks, &n, &networks(), &TaskAddresses::new(), &k)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn events_of_interest() {
        use bollard::models::EventActor;
        let ev = |typ, action: &str, task: bool| EventMessage {
            typ: Some(typ),
            action: Some(action.into()),
            actor: Some(EventActor {
                attributes: Some(
                    task.then(|| (LABEL_TASK_SERVICE.to_string(), "x".to_string()))
                        .into_iter()
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(relevant(&ev(
            EventMessageTypeEnum::SERVICE,
            "update",
            false
        )));
        assert!(relevant(&ev(EventMessageTypeEnum::NODE, "update", false)));
        assert!(relevant(&ev(
            EventMessageTypeEnum::CONTAINER,
            "start",
            true
        )));
        assert!(!relevant(&ev(
            EventMessageTypeEnum::CONTAINER,
            "start",
            false
        )));
        assert!(!relevant(&ev(
            EventMessageTypeEnum::CONTAINER,
            "exec_start: sh",
            true
        )));
        assert!(!relevant(&ev(EventMessageTypeEnum::IMAGE, "pull", false)));
    }

    #[test]
    fn task_addresses_from_a_verbose_network_inspect() {
        let services: HashMap<String, serde_json::Value> = serde_json::from_str(
            r#"{"web": {"VIP": "10.0.1.2", "Tasks": [
                {"Name": "web.1.abc123", "EndpointIP": "10.0.1.5"},
                {"Name": "web.2.def456", "EndpointIP": "10.0.1.6/24"},
                {"Name": "", "EndpointIP": "10.0.1.7"}]}}"#,
        )
        .unwrap();
        let mut out = TaskAddresses::new();
        addresses_from_network("front", &services, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out["abc123"]["front"], "10.0.1.5");
        assert_eq!(out["def456"]["front"], "10.0.1.6");
    }
}
