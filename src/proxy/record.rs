//! The proxy's side of live recording: what a request looked like on arrival and what the
//! router did with it, filled in along the live path only while the `Recorder` is on.
//!
//! Invariants: nothing here runs when recording is off (the caller checks `Recorder::is_on`
//! once); nothing here awaits, buffers a body or changes the request (a body is only copied,
//! up to `--record.body-bytes`, as it streams past).

use std::sync::Arc;
use std::time::Instant;

use http::{Request, StatusCode, Uri};

use super::ctx::Peer;
use super::phases::recorded_host;
use crate::recording::format::{RecordedOutcome, RecordedRequest, REDACTED};
use crate::recording::recorder::{now_text, BodyTap, Recorder};
use crate::routing::Server;
use crate::table::Route;

pub(super) use crate::recording::recorder::Pending;

/// The request head as the client sent it (redacted).
pub(super) fn begin<B>(req: &Request<B>, peer: &Peer, recorder: &Recorder) -> Pending {
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| {
            let value = if recorder.redacts(n.as_str()) {
                REDACTED.to_string()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            (n.as_str().to_string(), value)
        })
        .collect();
    Pending {
        started: Instant::now(),
        mark: None,
        tap: None,
        record: RecordedRequest {
            id: 0,
            time: now_text(),
            entrypoint: peer.entrypoint.to_string(),
            client: peer.addr.to_string(),
            method: req.method().to_string(),
            scheme: "http".to_string(),
            host: recorded_host(req),
            path: req.uri().path().to_string(),
            query: req.uri().query().map(str::to_string),
            headers,
            body: None,
            body_truncated: false,
            outcome: Some(RecordedOutcome::default()),
        },
    }
}

pub(super) fn route(p: &mut Pending, route: &Route) {
    p.mark = route.record;
    if let Some(o) = p.record.outcome.as_mut() {
        o.route = Some(route.name.clone());
    }
}

/// The server picked and the target as it leaves for it (a retry overwrites an earlier pick).
pub(super) fn forward(p: &mut Pending, service: &str, server: &Server, uri: &Uri) {
    if let Some(o) = p.record.outcome.as_mut() {
        o.service = Some(service.to_string());
        o.server = Some(server.authority.to_string());
        o.upstream_path = Some(
            uri.path_and_query()
                .map_or_else(|| "/".to_string(), |pq| pq.as_str().to_string()),
        );
    }
}

/// A tap for the body about to stream to the server, when bodies are recorded (a retry keeps
/// the first tap: a replayed body is the same bytes).
pub(super) fn tap_body(p: &mut Pending, recorder: &Recorder) -> Option<Arc<BodyTap>> {
    let cap = recorder.body_bytes();
    if cap == 0 {
        return None;
    }
    Some(
        p.tap
            .get_or_insert_with(|| Arc::new(BodyTap::new(cap)))
            .clone(),
    )
}

/// The response head is ready: final status and time, then off to the writer.
pub(super) fn finish(mut p: Pending, status: StatusCode, recorder: &Recorder) {
    if let Some(tap) = p.tap.take() {
        let (bytes, truncated) = tap.taken();
        if !bytes.is_empty() || truncated {
            use base64::Engine as _;
            p.record.body = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
            p.record.body_truncated = truncated;
        }
    }
    if let Some(o) = p.record.outcome.as_mut() {
        o.status = status.as_u16();
        o.duration_ms = p.started.elapsed().as_secs_f64() * 1000.0;
    }
    recorder.submit(p);
}
