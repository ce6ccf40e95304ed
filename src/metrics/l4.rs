//! TCP and UDP route series: connections and sessions by outcome, open now, bytes and datagrams
//! each way, connection durations. Attached to each TCP/UDP route's `MetricsSlot` with the
//! table, so the proxy counts with atomics only.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use super::{Histogram, Metrics, Text};
use crate::routing::MetricsSlot;
use crate::table::RouteTable;

/// Connection durations: from sub-second probes to long-lived database sessions.
pub const CONN_BUCKETS: &[f64] = &[0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0];

/// How a TCP connection ended (`ConnEntry::outcome` of the access log).
pub const OUTCOMES: [&str; 6] = [
    "ok",
    "refused",
    "no_server",
    "handshake_failed",
    "error",
    "route_removed",
];

/// One TCP or UDP route's counters.
#[derive(Debug)]
pub struct L4Series {
    service: String,
    ended: [AtomicU64; 6],
    open: AtomicI64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    datagrams_in: AtomicU64,
    datagrams_out: AtomicU64,
    duration: Histogram,
}

impl L4Series {
    fn new(service: &str) -> Self {
        L4Series {
            service: service.to_string(),
            ended: Default::default(),
            open: AtomicI64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            datagrams_in: AtomicU64::new(0),
            datagrams_out: AtomicU64::new(0),
            duration: Histogram::new(CONN_BUCKETS),
        }
    }
}

/// Counts a connection or session open while it lives.
pub struct OpenGuard(Arc<L4Series>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

/// What the admin API shows of a TCP/UDP route.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct L4Totals {
    pub connections: u64,
    pub open: i64,
    pub failed: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

fn series(slot: &MetricsSlot) -> Option<&Arc<L4Series>> {
    slot.get::<Arc<L4Series>>()
}

impl Metrics {
    /// Gives every TCP and UDP route of `table` its series (kept across reloads by name).
    pub(super) fn attach_l4(&self, table: &RouteTable) {
        let mut keep = std::collections::HashSet::new();
        let l4 = table.l4();
        for r in l4.tcp_routes() {
            let key = ("tcp", r.name.clone(), r.service.name.clone());
            let s = self.l4_entry(&key);
            r.metrics.set(s);
            keep.insert(key);
        }
        for r in l4.udp_routes() {
            let key = ("udp", r.name.clone(), r.service.name.clone());
            let s = self.l4_entry(&key);
            r.metrics.set(s);
            keep.insert(key);
        }
        self.l4.retain(|k, _| keep.contains(k));
    }

    fn l4_entry(&self, key: &L4Key) -> Arc<L4Series> {
        self.l4
            .entry(key.clone())
            .or_insert_with(|| Arc::new(L4Series::new(&key.2)))
            .clone()
    }

    /// A TCP connection (or UDP session) of the route with `slot` is open until the guard drops.
    pub fn tcp_open(&self, slot: &MetricsSlot) -> Option<OpenGuard> {
        let s = series(slot)?;
        s.open.fetch_add(1, Relaxed);
        Some(OpenGuard(s.clone()))
    }

    /// A TCP connection ended: its outcome, bytes from and to the client, how long it lasted.
    pub fn tcp_done(
        &self,
        slot: &MetricsSlot,
        outcome: &str,
        bytes_in: u64,
        bytes_out: u64,
        took: Duration,
    ) {
        let Some(s) = series(slot) else { return };
        let i = OUTCOMES.iter().position(|o| *o == outcome).unwrap_or(4);
        if let Some(c) = s.ended.get(i) {
            c.fetch_add(1, Relaxed);
        }
        s.bytes_in.fetch_add(bytes_in, Relaxed);
        s.bytes_out.fetch_add(bytes_out, Relaxed);
        s.duration.observe(took);
    }

    /// A datagram of a UDP route's session: from the client (`inbound`) or to it.
    pub fn udp_datagram(&self, slot: &MetricsSlot, inbound: bool, bytes: usize) {
        let Some(s) = series(slot) else { return };
        if inbound {
            s.datagrams_in.fetch_add(1, Relaxed);
            s.bytes_in.fetch_add(bytes as u64, Relaxed);
        } else {
            s.datagrams_out.fetch_add(1, Relaxed);
            s.bytes_out.fetch_add(bytes as u64, Relaxed);
        }
    }

    /// The counters of a TCP/UDP route, for the admin API.
    pub fn l4_totals(&self, slot: &MetricsSlot) -> L4Totals {
        let Some(s) = series(slot) else {
            return L4Totals::default();
        };
        let ended: Vec<u64> = s.ended.iter().map(|c| c.load(Relaxed)).collect();
        L4Totals {
            connections: ended.iter().sum(),
            open: s.open.load(Relaxed),
            failed: ended.iter().skip(1).sum(),
            bytes_in: s.bytes_in.load(Relaxed),
            bytes_out: s.bytes_out.load(Relaxed),
        }
    }

    pub(super) fn render_l4(&self, out: &mut Text) {
        let mut all: Vec<(L4Key, Arc<L4Series>)> = self
            .l4
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        if all.is_empty() {
            return;
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let tcp: Vec<_> = all.iter().filter(|(k, _)| k.0 == "tcp").collect();
        let udp: Vec<_> = all.iter().filter(|(k, _)| k.0 == "udp").collect();
        if !tcp.is_empty() {
            out.head(
                "switchyard_tcp_connections_total",
                "counter",
                "TCP connections a TCP route served, by route, service and outcome (ok, refused, no_server, handshake_failed, error, route_removed).",
            );
            for ((_, route, _), s) in &tcp {
                for (o, c) in OUTCOMES.iter().zip(s.ended.iter()) {
                    out.sample(
                        "switchyard_tcp_connections_total",
                        &[("route", route), ("service", &s.service), ("outcome", o)],
                        c.load(Relaxed) as f64,
                    );
                }
            }
            out.head(
                "switchyard_tcp_connections_open",
                "gauge",
                "TCP connections open now, by route and service.",
            );
            for ((_, route, _), s) in &tcp {
                out.sample(
                    "switchyard_tcp_connections_open",
                    &[("route", route), ("service", &s.service)],
                    s.open.load(Relaxed) as f64,
                );
            }
            out.head(
                "switchyard_tcp_bytes_total",
                "counter",
                "Bytes of ended TCP connections, from the client (in) and to it (out).",
            );
            for ((_, route, _), s) in &tcp {
                for (dir, c) in [("in", &s.bytes_in), ("out", &s.bytes_out)] {
                    out.sample(
                        "switchyard_tcp_bytes_total",
                        &[
                            ("route", route),
                            ("service", &s.service),
                            ("direction", dir),
                        ],
                        c.load(Relaxed) as f64,
                    );
                }
            }
            out.head(
                "switchyard_tcp_connection_duration_seconds",
                "histogram",
                "How long TCP connections lasted, by route and service.",
            );
            for ((_, route, _), s) in &tcp {
                out.histogram(
                    "switchyard_tcp_connection_duration_seconds",
                    &[("route", route), ("service", &s.service)],
                    &s.duration,
                );
            }
        }
        if !udp.is_empty() {
            out.head(
                "switchyard_udp_sessions_total",
                "counter",
                "UDP client sessions that ended, by route and service.",
            );
            for ((_, route, _), s) in &udp {
                out.sample(
                    "switchyard_udp_sessions_total",
                    &[("route", route), ("service", &s.service)],
                    s.ended.iter().map(|c| c.load(Relaxed)).sum::<u64>() as f64,
                );
            }
            out.head(
                "switchyard_udp_sessions_open",
                "gauge",
                "UDP client sessions open now, by route and service.",
            );
            for ((_, route, _), s) in &udp {
                out.sample(
                    "switchyard_udp_sessions_open",
                    &[("route", route), ("service", &s.service)],
                    s.open.load(Relaxed) as f64,
                );
            }
            out.head(
                "switchyard_udp_datagrams_total",
                "counter",
                "UDP datagrams relayed, from clients (in) and to them (out).",
            );
            for ((_, route, _), s) in &udp {
                for (dir, c) in [("in", &s.datagrams_in), ("out", &s.datagrams_out)] {
                    out.sample(
                        "switchyard_udp_datagrams_total",
                        &[
                            ("route", route),
                            ("service", &s.service),
                            ("direction", dir),
                        ],
                        c.load(Relaxed) as f64,
                    );
                }
            }
            out.head(
                "switchyard_udp_bytes_total",
                "counter",
                "UDP payload bytes relayed, from clients (in) and to them (out).",
            );
            for ((_, route, _), s) in &udp {
                for (dir, c) in [("in", &s.bytes_in), ("out", &s.bytes_out)] {
                    out.sample(
                        "switchyard_udp_bytes_total",
                        &[
                            ("route", route),
                            ("service", &s.service),
                            ("direction", dir),
                        ],
                        c.load(Relaxed) as f64,
                    );
                }
            }
        }
    }
}

/// (protocol, route, service).
pub(super) type L4Key = (&'static str, String, String);

/// The registry's TCP/UDP series.
pub(super) type L4Map = DashMap<L4Key, Arc<L4Series>>;
