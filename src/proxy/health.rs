//! Active health checks: one small task per checked server, on the control runtime, asking
//! `GET <path>` every interval over the server's own scheme (`http`, `https` with the pool's
//! TLS transport, `h2c`) and setting the server's `ServerState` healthy or not; the servers of
//! a TCP service with `.health(...)` are checked by a TCP connect.
//!
//! Invariants: checks follow the live table — after every swap `sync` starts tasks for newly
//! checked servers and stops those whose server state left the table or whose settings
//! (check settings, scheme, TLS transport) changed; a server state that a rebuild carried over
//! keeps its task (and so its health). A TLS handshake that fails (a certificate that does not
//! verify) fails the check.
//! A check that times out, cannot connect or gets a status outside the expected range marks the
//! server unhealthy; the next good check marks it healthy again. Health changes are logged.
//! Must never: block the control loop (tasks are spawned, never awaited) or send a check
//! anywhere but the server's own address.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{header, HeaderValue, Request, Uri};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::upstream::{self, UpBody, UpstreamClient};
use crate::balance::ServerState;
use crate::routing::l4::TcpHealth;
use crate::routing::service::{HealthCheck, Server, Transport};
use crate::table::RouteTable;

struct Check {
    /// Held so the state's address (the map key) cannot be reused while the check runs.
    _state: Arc<ServerState>,
    settings: HealthCheck,
    /// The scheme and transport the task checks with.
    target: Target,
    task: JoinHandle<()>,
}

/// Where and how one server is checked.
#[derive(Debug, Clone)]
struct Target {
    server: Server,
    transport: Option<Arc<Transport>>,
}

impl Target {
    /// Whether a task checking `self` checks `other` the same way.
    fn same(&self, other: &Target) -> bool {
        self.server.authority == other.server.authority
            && self.server.scheme == other.server.scheme
            && self.transport.as_ref().map(|t| &t.id) == other.transport.as_ref().map(|t| &t.id)
    }
}

/// Keeps one check task per checked server of the live table.
pub struct HealthChecker {
    runtime: tokio::runtime::Handle,
    client: UpstreamClient,
    checks: Mutex<HashMap<usize, Check>>,
    /// TCP services' checks (a TCP connect), keyed like `checks`.
    tcp_checks: Mutex<HashMap<usize, TcpCheck>>,
}

struct TcpCheck {
    _state: Arc<ServerState>,
    settings: TcpHealth,
    address: String,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for HealthChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthChecker").finish_non_exhaustive()
    }
}

impl HealthChecker {
    pub fn new(runtime: tokio::runtime::Handle) -> HealthChecker {
        let _guard = runtime.enter();
        HealthChecker {
            client: upstream::client(Duration::from_secs(5), Duration::from_secs(30)),
            runtime,
            checks: Mutex::new(HashMap::new()),
            tcp_checks: Mutex::new(HashMap::new()),
        }
    }

    /// Makes the running checks match `table`.
    pub fn sync(&self, table: &RouteTable) {
        let mut wanted: HashMap<usize, (Arc<ServerState>, HealthCheck, Target, String)> =
            HashMap::new();
        for svc in table.services() {
            let Some(pool) = svc.pool() else { continue };
            let Some(hc) = &pool.health else { continue };
            for (server, state) in pool.servers.iter().zip(&pool.states) {
                let target = Target {
                    server: server.clone(),
                    transport: pool.transport.clone(),
                };
                wanted.insert(
                    Arc::as_ptr(state) as usize,
                    (state.clone(), hc.clone(), target, svc.name.clone()),
                );
            }
        }
        self.sync_tcp(table);
        let mut checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        checks.retain(|key, check| {
            let keep = wanted.get(key).is_some_and(|(_, settings, target, _)| {
                *settings == check.settings && target.same(&check.target)
            });
            if !keep {
                check.task.abort();
            }
            keep
        });
        for (key, (state, settings, target, service)) in wanted {
            if checks.contains_key(&key) {
                continue;
            }
            let task = self.runtime.spawn(run_checks(
                self.client.clone(),
                state.clone(),
                settings.clone(),
                target.clone(),
                service,
            ));
            checks.insert(
                key,
                Check {
                    _state: state,
                    settings,
                    target,
                    task,
                },
            );
        }
    }

    /// Makes the running TCP connect checks match `table`'s TCP services.
    fn sync_tcp(&self, table: &RouteTable) {
        let mut wanted: HashMap<usize, (Arc<ServerState>, TcpHealth, String, String)> =
            HashMap::new();
        for route in table.l4().tcp_routes() {
            let svc = &route.service;
            let Some(hc) = svc.health else { continue };
            for (server, state) in svc.pool.servers.iter().zip(&svc.pool.states) {
                wanted.insert(
                    Arc::as_ptr(state) as usize,
                    (state.clone(), hc, server.address.clone(), svc.name.clone()),
                );
            }
        }
        let mut checks = self.tcp_checks.lock().unwrap_or_else(|e| e.into_inner());
        checks.retain(|key, check| {
            let keep = wanted.get(key).is_some_and(|(_, hc, address, _)| {
                *hc == check.settings && *address == check.address
            });
            if !keep {
                check.task.abort();
            }
            keep
        });
        for (key, (state, settings, address, service)) in wanted {
            if checks.contains_key(&key) {
                continue;
            }
            let task = self.runtime.spawn(run_tcp_checks(
                state.clone(),
                settings,
                address.clone(),
                service,
            ));
            checks.insert(
                key,
                TcpCheck {
                    _state: state,
                    settings,
                    address,
                    task,
                },
            );
        }
    }

    /// How many servers are being checked.
    pub fn len(&self) -> usize {
        self.checks.lock().unwrap_or_else(|e| e.into_inner()).len()
            + self
                .tcp_checks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        let checks = self.checks.get_mut().unwrap_or_else(|e| e.into_inner());
        for (_, c) in checks.drain() {
            c.task.abort();
        }
        let tcp = self.tcp_checks.get_mut().unwrap_or_else(|e| e.into_inner());
        for (_, c) in tcp.drain() {
            c.task.abort();
        }
    }
}

/// A TCP service's server checked by connecting every interval.
async fn run_tcp_checks(state: Arc<ServerState>, hc: TcpHealth, address: String, service: String) {
    loop {
        let outcome = match tokio::time::timeout(
            hc.timeout,
            tokio::net::TcpStream::connect(address.as_str()),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no connection within {:?}", hc.timeout)),
        };
        if state.set_active_healthy(outcome.is_ok()) {
            match &outcome {
                Ok(()) => {
                    info!(%service, server = %address, "TCP health check passed; server is back")
                }
                Err(why) => {
                    warn!(%service, server = %address, reason = %why, "TCP health check failed; server taken out")
                }
            }
        }
        tokio::time::sleep(hc.interval).await;
    }
}

async fn run_checks(
    client: UpstreamClient,
    state: Arc<ServerState>,
    hc: HealthCheck,
    target: Target,
    service: String,
) {
    let authority = target.server.url();
    loop {
        let outcome = check_once(&client, &hc, &target).await;
        let healthy = outcome.is_ok();
        if state.set_active_healthy(healthy) {
            match &outcome {
                Ok(()) => {
                    info!(%service, server = %authority, "health check passed; server is back")
                }
                Err(why) => {
                    warn!(%service, server = %authority, reason = %why, "health check failed; server taken out")
                }
            }
        } else if let Err(why) = &outcome {
            debug!(%service, server = %authority, reason = %why, "health check still failing");
        }
        tokio::time::sleep(hc.interval).await;
    }
}

async fn check_once(
    client: &UpstreamClient,
    hc: &HealthCheck,
    target: &Target,
) -> Result<(), String> {
    let authority = &target.server.authority;
    let uri = Uri::builder()
        .scheme(target.server.scheme.as_str())
        .authority(authority.clone())
        .path_and_query(hc.path.as_str())
        .build()
        .map_err(|e| format!("bad check URL: {e}"))?;
    let mut req = Request::new(UpBody::empty());
    *req.uri_mut() = uri;
    if let Some(host) = &hc.host {
        if let Ok(v) = HeaderValue::from_str(host) {
            req.headers_mut().insert(header::HOST, v);
        }
    }
    for (name, value) in &hc.headers {
        req.headers_mut().insert(name.clone(), value.clone());
    }
    let sent = client.request_via(req, target.transport.as_ref());
    let resp = match tokio::time::timeout(hc.timeout, sent).await {
        Err(_) => return Err(format!("no answer within {:?}", hc.timeout)),
        Ok(Err(e)) => return Err(upstream::classify(e, authority.as_str()).error.to_string()),
        Ok(Ok(r)) => r,
    };
    let status = resp.status().as_u16();
    if (hc.status.0..=hc.status.1).contains(&status) {
        Ok(())
    } else {
        Err(format!(
            "status {status}, expected {}-{}",
            hc.status.0, hc.status.1
        ))
    }
}
