//! `/api/tcp/routes` and `/api/udp/routes`: the TCP and UDP routes of the live table as
//! `check --format json` lists them, plus `status` (`enabled`, or `warning` when no server of
//! the service is available now) and the counters since the route appeared (`connections`,
//! `open`, `failed`, `bytes_in`, `bytes_out`; for UDP, sessions).

use serde_json::Value;

use super::api::ListQuery;
use super::AdminState;
use crate::routing::describe::{L4ServiceInfo, TcpRouteInfo, UdpRouteInfo};

fn with_stats(mut v: Value, service: &L4ServiceInfo, totals: crate::metrics::L4Totals) -> Value {
    if let Some(o) = v.as_object_mut() {
        let up = service.servers.iter().filter(|s| s.healthy).count();
        o.insert(
            "status".into(),
            Value::from(if up == 0 { "warning" } else { "enabled" }),
        );
        o.insert("servers_up".into(), Value::from(up));
        if let Ok(Value::Object(t)) = serde_json::to_value(totals) {
            o.extend(t);
        }
    }
    v
}

/// `GET /api/tcp/routes`.
pub fn tcp_routes(state: &AdminState, q: &ListQuery) -> Value {
    let table = state.table.load();
    let now = std::time::Instant::now();
    let metrics = state.control.metrics();
    let items = table
        .l4()
        .tcp_routes()
        .iter()
        .filter_map(|r| {
            let info = TcpRouteInfo::of(r, now);
            let v = serde_json::to_value(&info).ok()?;
            Some(with_stats(v, &info.service, metrics.l4_totals(&r.metrics)))
        })
        .collect();
    q.page("tcp_routes", items)
}

/// `GET /api/udp/routes`.
pub fn udp_routes(state: &AdminState, q: &ListQuery) -> Value {
    let table = state.table.load();
    let now = std::time::Instant::now();
    let metrics = state.control.metrics();
    let items = table
        .l4()
        .udp_routes()
        .iter()
        .filter_map(|r| {
            let info = UdpRouteInfo::of(r, now);
            let v = serde_json::to_value(&info).ok()?;
            Some(with_stats(v, &info.service, metrics.l4_totals(&r.metrics)))
        })
        .collect();
    q.page("udp_routes", items)
}

/// What `POST /api/explain/tcp` takes: the connection's facts.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnBody {
    entrypoint: String,
    /// The ClientHello's server name; with `alpn`, or `"tls": true`, the connection is TLS.
    sni: Option<String>,
    #[serde(default)]
    alpn: Vec<String>,
    client: Option<String>,
    tls: Option<bool>,
}

/// `POST /api/explain/tcp`: the TCP route (or HTTP, HTTPS, closed) a connection with these
/// facts would get on the live table, with the routes tried before it and why they did not
/// take it. Reads state only.
pub fn explain(state: &AdminState, body: &[u8]) -> Result<Value, String> {
    let b: ConnBody = serde_json::from_slice(body).map_err(|e| {
        format!(
            "bad body: {e} (expected {{\"entrypoint\": \"websecure\", \"sni\": \"db.example.com\", \
             \"alpn\": [\"h2\"], \"client\": \"10.0.0.1\", \"tls\": true}})"
        )
    })?;
    if !state.entrypoints.iter().any(|(n, _)| *n == b.entrypoint) {
        return Err(format!(
            "unknown entrypoint {:?} (known: {})",
            b.entrypoint,
            state
                .entrypoints
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let client: std::net::IpAddr = match &b.client {
        None => std::net::Ipv4Addr::LOCALHOST.into(),
        Some(c) => c
            .trim()
            .parse()
            .map_err(|_| format!("\"client\" {c:?} is not an IP address"))?,
    };
    let tls = b.tls.unwrap_or(b.sni.is_some() || !b.alpn.is_empty());
    let sni = b
        .sni
        .as_deref()
        .map(|s| s.trim().trim_end_matches('.').to_ascii_lowercase());
    let alpn: Vec<Vec<u8>> = b.alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    let view = crate::routing::l4::ConnView {
        sni: sni.as_deref(),
        alpn: &alpn,
        client_ip: client,
    };
    let https = state.settings.is_tls(&b.entrypoint);
    let table = state.table.load();
    let e = table.l4().explain(&b.entrypoint, &view, tls, https);
    serde_json::to_value(e).map_err(|e| e.to_string())
}
