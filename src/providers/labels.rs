//! Label and naming helpers both engine providers read labels with, by Traefik's rules: a
//! label looked up case-insensitively (`label_ci`), the service port label (`port_from_labels`),
//! Go's boolean syntax (`parse_go_bool`), service names as Traefik normalises them
//! (`normalize`), `host:port` joining with IPv6 brackets, and short container ids.
//! Pure functions, no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Traefik v1's port label (`traefik.port`).
pub const LABEL_PORT_V1: &str = "traefik.port";

pub fn join_host_port(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{host}]:{port}"),
        _ => format!("{host}:{port}"),
    }
}

/// The label `key` looked up case-insensitively (Traefik's label names are), with its spelling.
pub fn label_ci<'a>(labels: &'a BTreeMap<String, String>, key: &str) -> Option<(&'a str, &'a str)> {
    labels
        .get_key_value(key)
        .or_else(|| labels.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)))
        .map(|(k, v)| (k.as_str(), v.as_str()))
}

/// The server port the labels ask for: `traefik.port` (v1), else the
/// `traefik.http.services.<s>.loadbalancer.server.port` labels when they agree on one port
/// (several services with different ports: none, the script picks per service). A label that is
/// not a port number is an error naming it.
pub fn port_from_labels(labels: &BTreeMap<String, String>) -> Result<Option<u16>, String> {
    let parse = |k: &str, v: &str| -> Result<u16, String> {
        v.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("label {k}={v:?} is not a port number (1-65535)"))
    };
    let mut v1 = None;
    let mut services = BTreeSet::new();
    for (k, v) in labels {
        if k.eq_ignore_ascii_case(LABEL_PORT_V1) {
            v1 = Some(parse(k, v)?);
        } else if is_service_port_label(k) {
            services.insert(parse(k, v)?);
        }
    }
    if v1.is_some() {
        return Ok(v1);
    }
    let mut it = services.into_iter();
    Ok(match (it.next(), it.next()) {
        (Some(p), None) => Some(p),
        _ => None,
    })
}

/// Whether `key` is `traefik.{http,tcp,udp}.services.<s>.loadbalancer.server.port` (any case).
pub fn is_service_port_label(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "traefik.http.services.",
        "traefik.tcp.services.",
        "traefik.udp.services.",
    ]
    .iter()
    .find_map(|p| key.strip_prefix(p))
    .and_then(|rest| rest.strip_suffix(".loadbalancer.server.port"))
    .is_some_and(|svc| !svc.is_empty() && !svc.contains('.'))
}

/// Go's `strconv.ParseBool`, which Traefik uses for `traefik.enable`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Traefik's `provider.Normalize`: every run of characters that are not letters or digits becomes
/// one `-`, none at either end.
pub fn normalize(name: &str) -> String {
    name.split(|c: char| !c.is_alphanumeric())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
