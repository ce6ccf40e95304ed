//! UDP routing (Traefik's UDP routers): datagrams of a UDP entrypoint go to its route's
//! service, one session per client address.
//!
//! A session is made on a client's first datagram: a server is picked by weight, a socket
//! connected to it is opened, and every datagram of that client goes to that server while the
//! server's answers go back to the client from the entrypoint's address. A session without a
//! datagram either way for the entrypoint's `udp.timeout` ends.
//!
//! Invariants: a session keeps its server until it ends (a reload never moves it); at most
//! `MAX_SESSIONS` sessions per entrypoint (datagrams of further new clients are dropped);
//! the session map's lock is never held across an await.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::routing::l4::UdpRoute;
use crate::table::RouteTable;

/// Sessions one UDP entrypoint holds at most (each holds a socket).
pub const MAX_SESSIONS: usize = 10_000;

/// The largest datagram relayed (the UDP maximum).
const MAX_DATAGRAM: usize = 65_535;

struct Session {
    upstream: Arc<UdpSocket>,
    /// Milliseconds since `epoch` of the last datagram either way.
    last: Arc<AtomicU64>,
    route: Arc<UdpRoute>,
    server: SocketAddr,
    /// Payload bytes from the client, for the access log.
    bytes_in: Arc<AtomicU64>,
}

/// What a UDP entrypoint reports to.
#[derive(Clone)]
pub struct Observers {
    pub metrics: Arc<crate::metrics::Metrics>,
    pub access_log: Option<Arc<crate::access_log::AccessLog>>,
}

/// Serves a UDP entrypoint until `shutdown` turns true.
pub async fn serve(
    table: Arc<ArcSwap<RouteTable>>,
    name: String,
    socket: UdpSocket,
    timeout: Duration,
    observers: Observers,
    mut shutdown: watch::Receiver<bool>,
) {
    let socket = Arc::new(socket);
    let entrypoint: Arc<str> = name.as_str().into();
    let sessions: Arc<Mutex<HashMap<SocketAddr, Session>>> = Arc::default();
    let epoch = Instant::now();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // ICMP errors of earlier sends surface here on some systems: keep serving.
                    debug!(entrypoint = %name, error = %e, "UDP receive failed");
                    continue;
                }
            },
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let data = buf.get(..n).unwrap_or_default();
        let now_ms = epoch.elapsed().as_millis() as u64;
        let existing = {
            let map = sessions.lock().unwrap_or_else(|p| p.into_inner());
            map.get(&client).map(|s| {
                s.last.store(now_ms, Ordering::Relaxed);
                s.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                observers.metrics.udp_datagram(&s.route.metrics, true, n);
                s.upstream.clone()
            })
        };
        let upstream = match existing {
            Some(u) => u,
            None => {
                let full = sessions.lock().unwrap_or_else(|p| p.into_inner()).len() >= MAX_SESSIONS;
                if full {
                    debug!(entrypoint = %name, %client, "UDP session table full; datagram dropped");
                    continue;
                }
                let Some(session) = open_session(&table, &name, client, now_ms).await else {
                    continue;
                };
                let upstream = session.upstream.clone();
                session.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                observers
                    .metrics
                    .udp_datagram(&session.route.metrics, true, n);
                let back = Back {
                    socket: socket.clone(),
                    upstream: upstream.clone(),
                    client,
                    last: session.last.clone(),
                    route: session.route.clone(),
                    server: session.server,
                    bytes_in: session.bytes_in.clone(),
                    entrypoint: entrypoint.clone(),
                };
                sessions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(client, session);
                tokio::spawn(relay_back(
                    back,
                    epoch,
                    timeout,
                    sessions.clone(),
                    observers.clone(),
                    shutdown.clone(),
                ));
                upstream
            }
        };
        if let Err(e) = upstream.send(data).await {
            debug!(entrypoint = %name, %client, error = %e, "UDP send to server failed");
        }
    }
    debug!(entrypoint = %name, "UDP entrypoint stopped");
}

/// A new session for `client`: the entrypoint's route, a server, a socket connected to it.
async fn open_session(
    table: &ArcSwap<RouteTable>,
    entrypoint: &str,
    client: SocketAddr,
    now_ms: u64,
) -> Option<Session> {
    let route = table.load().l4().udp_for(entrypoint).cloned();
    let Some(route) = route else {
        debug!(%entrypoint, %client, "no UDP route on this entrypoint; datagram dropped");
        return None;
    };
    let pool = &route.service.pool;
    let (_, server) = pool.pick(Instant::now())?;
    let target = match tokio::net::lookup_host(server.address.as_str()).await {
        Ok(mut addrs) => addrs.next()?,
        Err(e) => {
            warn!(route = %route.name, server = %server.address, error = %e, "UDP server address does not resolve");
            return None;
        }
    };
    let bind: SocketAddr = if target.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let upstream = match UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(e) => {
            warn!(route = %route.name, error = %e, "cannot open a UDP socket for a session");
            return None;
        }
    };
    if let Err(e) = upstream.connect(target).await {
        debug!(route = %route.name, server = %target, error = %e, "UDP connect failed");
        return None;
    }
    debug!(route = %route.name, %client, server = %target, "UDP session opened");
    Some(Session {
        upstream: Arc::new(upstream),
        last: Arc::new(AtomicU64::new(now_ms)),
        route,
        server: target,
        bytes_in: Arc::new(AtomicU64::new(0)),
    })
}

/// One session's side that carries the server's answers back.
struct Back {
    socket: Arc<UdpSocket>,
    upstream: Arc<UdpSocket>,
    client: SocketAddr,
    last: Arc<AtomicU64>,
    route: Arc<UdpRoute>,
    server: SocketAddr,
    bytes_in: Arc<AtomicU64>,
    entrypoint: Arc<str>,
}

/// The server's answers back to the client, until the session is idle for `timeout`; then the
/// session is logged and counted.
async fn relay_back(
    b: Back,
    epoch: Instant,
    timeout: Duration,
    sessions: Arc<Mutex<HashMap<SocketAddr, Session>>>,
    observers: Observers,
    mut shutdown: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let start = std::time::SystemTime::now();
    let _open = observers.metrics.tcp_open(&b.route.metrics);
    let mut bytes_out = 0u64;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let timeout_ms = timeout.as_millis() as u64;
    let client = b.client;
    loop {
        let idle_for =
            (epoch.elapsed().as_millis() as u64).saturating_sub(b.last.load(Ordering::Relaxed));
        if idle_for >= timeout_ms {
            break;
        }
        let wait = Duration::from_millis(timeout_ms - idle_for);
        let received = tokio::select! {
            r = b.upstream.recv(&mut buf) => Some(r),
            () = tokio::time::sleep(wait) => None,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        match received {
            Some(Ok(n)) => {
                b.last
                    .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                bytes_out += n as u64;
                observers.metrics.udp_datagram(&b.route.metrics, false, n);
                if let Err(e) = b
                    .socket
                    .send_to(buf.get(..n).unwrap_or_default(), client)
                    .await
                {
                    debug!(%client, error = %e, "UDP send to client failed");
                }
            }
            // A refused datagram (ICMP port unreachable): the server is not there now.
            Some(Err(e)) => debug!(%client, error = %e, "UDP receive from server failed"),
            None => {}
        }
    }
    {
        let mut map = sessions.lock().unwrap_or_else(|p| p.into_inner());
        if map
            .get(&client)
            .is_some_and(|s| Arc::ptr_eq(&s.upstream, &b.upstream))
        {
            map.remove(&client);
        }
    }
    let duration = started.elapsed();
    let bytes_in = b.bytes_in.load(Ordering::Relaxed);
    debug!(route = %b.route.name, %client, server = %b.server, bytes_in, bytes_out, "UDP session ended");
    observers
        .metrics
        .tcp_done(&b.route.metrics, "ok", 0, 0, duration);
    if let Some(log) = &observers.access_log {
        log.send_conn(crate::access_log::ConnEntry {
            start,
            client,
            entrypoint: b.entrypoint.clone(),
            protocol: "udp",
            route: b.route.name.clone(),
            service: b.route.service.name.clone(),
            server: Some(b.server.to_string()),
            sni: None,
            tls: "none",
            bytes_in,
            bytes_out,
            duration,
            outcome: "ok",
        });
    }
}
