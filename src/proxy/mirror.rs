//! Mirroring (Traefik's `mirroring` service): the body a request's copies carry, and the copies
//! themselves, sent after the main server answered and thrown away when they come back.
//!
//! Invariants: a copy never changes what the client gets — it is sent from its own task after
//! the main response head arrived, its answer and its failures only reach metrics and the debug
//! log; a request body is read ahead only up to the largest `max_body_size` a mirroring service
//! under the route's service allows, and a larger body streams on to the main server with the
//! bytes already read in front (that request sends no copies); at most `MAX_IN_FLIGHT` copies
//! run per process, more are dropped (counted), so a slow mirror never piles up memory.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, Method, Request, Uri, Version};
use http_body_util::BodyExt;
use tracing::debug;

use super::error::ProxyError;
use super::exchange::upstream_head;
use super::upstream::{UpBody, UpstreamClient};
use crate::routing::service::{MirrorCopy, Scheme};
use crate::routing::RequestView;

/// Copies in flight in this process at most; more are dropped.
pub const MAX_IN_FLIGHT: usize = 512;

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// One of the `MAX_IN_FLIGHT` places for a copy, given back when dropped (also when the
/// runtime drops the copy's task).
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        if IN_FLIGHT.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a request's copies can carry as body.
#[derive(Debug, Clone)]
pub enum MirrorBody {
    /// The whole body, read into memory.
    Known(Bytes),
    /// Larger than every limit: copies that carry a body are not sent.
    TooLarge,
}

impl MirrorBody {
    /// The body for a copy, or `None` when that copy must not be sent.
    fn for_copy(&self, copy: &MirrorCopy) -> Option<Option<Bytes>> {
        if !copy.body {
            return Some(None);
        }
        match self {
            MirrorBody::Known(b) if b.len() as u64 <= copy.max_body => Some(Some(b.clone())),
            _ => None,
        }
    }
}

/// Reads `body` into memory up to `limit` bytes. A larger body comes back as the bytes read so
/// far in front of the rest of the stream (`TooLarge`), to go to the main server unchanged.
pub(super) async fn read_ahead(
    body: UpBody,
    content_length: Option<u64>,
    limit: u64,
) -> Result<(MirrorBody, UpBody), ProxyError> {
    if content_length.is_some_and(|n| n > limit) {
        return Ok((MirrorBody::TooLarge, body));
    }
    if let UpBody::Full(b) = &body {
        let bytes = b.clone().unwrap_or_default();
        return Ok((MirrorBody::Known(bytes), body));
    }
    let mut body = body;
    let mut read = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ProxyError::ClientBody {
            source: Some(Box::new(e)),
        })?;
        if let Ok(data) = frame.into_data() {
            read.extend_from_slice(&data);
            if read.len() as u64 > limit {
                let prefix = Some(read.freeze());
                return Ok((
                    MirrorBody::TooLarge,
                    UpBody::Prefixed(prefix, Box::new(body)),
                ));
            }
        }
    }
    let bytes = read.freeze();
    Ok((MirrorBody::Known(bytes.clone()), UpBody::Full(Some(bytes))))
}

/// The request a copy repeats: its head as it left the request phase, and the client.
pub(super) struct Original {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub host: String,
    pub client_ip: IpAddr,
}

/// Sends one copy per entry of `copies` from its own task.
pub(super) fn send_copies(
    client: &UpstreamClient,
    original: &Arc<Original>,
    body: Option<&MirrorBody>,
    copies: Vec<MirrorCopy>,
    timeout: Duration,
    metrics: &Arc<crate::metrics::Metrics>,
) {
    for copy in copies {
        let copy_body = match body {
            Some(b) => b.for_copy(&copy),
            None if copy.body => None,
            None => Some(None),
        };
        let Some(copy_body) = copy_body else {
            debug!(service = %copy.service.name, "not mirrored: the request body is larger than max_body_size");
            metrics.mirror(&copy.service.name, "too_large");
            continue;
        };
        let slot = Slot::take();
        if slot.is_none() {
            metrics.mirror(&copy.service.name, "dropped");
            continue;
        }
        let client = client.clone();
        let original = original.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let outcome =
                tokio::time::timeout(timeout, send_copy(&client, &original, &copy, copy_body))
                    .await
                    .unwrap_or("timeout");
            drop(slot);
            metrics.mirror(&copy.service.name, outcome);
        });
    }
}

/// One copy: a server of the mirror service, the request, its answer read and dropped. The
/// outcome is the `outcome` label of `switchyard_mirror_requests_total`.
async fn send_copy(
    client: &UpstreamClient,
    original: &Original,
    copy: &MirrorCopy,
    body: Option<Bytes>,
) -> &'static str {
    let view = RequestView {
        method: &original.method,
        host: &original.host,
        path: original.uri.path(),
        query: original.uri.query(),
        headers: &original.headers,
        client_ip: original.client_ip,
    };
    let svc = &copy.service;
    let Ok(Some(pick)) = svc.pick(&view, Instant::now()) else {
        debug!(service = %svc.name, "not mirrored: no server available");
        return "no_server";
    };
    let (Some(server), Some(state)) = (pick.at.server(), pick.at.state()) else {
        return "no_server";
    };
    let mut headers = original.headers.clone();
    let Ok(uri) = upstream_head(
        &original.uri,
        &mut headers,
        server,
        pick.at.service.pass_host_header,
        false,
    ) else {
        return "error";
    };
    if body.is_none() {
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::TRANSFER_ENCODING);
    }
    let mut up = Request::new(UpBody::Full(body));
    *up.method_mut() = original.method.clone();
    *up.uri_mut() = uri;
    *up.version_mut() = match server.scheme {
        Scheme::H2c => Version::HTTP_2,
        Scheme::Http | Scheme::Https => Version::HTTP_11,
    };
    *up.headers_mut() = headers;
    let _in_flight = state.begin();
    match client
        .request_via(up, pick.at.pool.transport.as_ref())
        .await
    {
        Ok(resp) => {
            let status = resp.status().as_u16();
            // Read to the end so the connection goes back to the pool.
            let drained = resp.into_body().collect().await.is_ok();
            state.record_success();
            state.count_response(status);
            debug!(service = %svc.name, server = server.authority.as_str(), status, "mirrored");
            if drained {
                "sent"
            } else {
                "error"
            }
        }
        Err(e) => {
            debug!(service = %svc.name, server = server.authority.as_str(), error = %e, "mirror copy failed");
            "error"
        }
    }
}
