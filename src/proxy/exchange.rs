//! The live exchange with servers: the target phase of live traffic (`Live`, the `Exchange` the
//! listener hands to the phase list) — body buffering, the balancer pick (sticky, health),
//! retries, passive-health and circuit-breaker accounting, the upstream request head (by the
//! server's scheme: `http`/`https` get HTTP/1.1 without `TE`, `h2c` gets HTTP/2 with
//! `te: trailers` when the client sent it), the response head (websocket tunnels, hop-by-hop
//! clean-up, sticky cookie, response buffering).
//!
//! Invariants: retries follow invariant 13 (a connect failure — a failed TLS handshake included
//! — for any method, anything after the request was sent only for idempotent methods, never
//! after a response); a failure the client caused (`ClientFault`: its body broke) is never
//! counted against the server; the upstream head is made by `upstream_head`, which dry runs
//! share; an `https://` server is reached with its pool's `Transport`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tracing::{debug, info, warn};

use super::body::ProxyBody;
use super::ctx::RequestCtx;
use super::error::{ProxyError, Side};
use super::phases::Exchange;
use super::upstream::{self, Failure, UpBody, UpstreamBody};
use super::{forward, mirror, pipeline, record, subrequest, Proxy, Tracker};
use crate::routing::service::{Scheme, Transport};
use crate::routing::{RequestView, Server, Service};
use crate::table::Route;

/// Bodies up to this size are kept in memory when a `retry` middleware may need to send them
/// again; larger (or unknown-length) bodies get one attempt.
const RETRY_BODY_LIMIT: u64 = 1 << 20;

/// The live target phase: sends the request to a server.
pub(super) struct Live {
    /// Keeps shutdown waiting for a websocket tunnel this request opens.
    pub tracker: Tracker,
}

impl Exchange<Incoming> for Live {
    async fn service(
        &mut self,
        proxy: &Proxy,
        ctx: &mut RequestCtx,
        req: Request<Incoming>,
        svc: &Arc<Service>,
        websocket: bool,
    ) -> Result<Option<Response<ProxyBody>>, ProxyError> {
        proxy
            .proxy_service(ctx, req, svc, websocket, &self.tracker)
            .await
            .map(Some)
    }
}

impl Proxy {
    /// Sends the request to a server of `svc`: body buffering, balancer pick (sticky, health),
    /// retries, passive health and circuit-breaker accounting, then the response head.
    async fn proxy_service(
        &self,
        ctx: &mut RequestCtx,
        mut req: Request<Incoming>,
        svc: &Service,
        websocket: bool,
        tracker: &Tracker,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let Some(route) = ctx.route.clone() else {
            return Err(ProxyError::NoRoute);
        };
        let route = route.as_ref();
        let plan = &mut ctx.plan;
        let mut downstream_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let tap = ctx
            .observers
            .rec
            .as_deref_mut()
            .and_then(|r| record::tap_body(r, &self.recorder));
        let fault = upstream::ClientFault::default();
        let mut body = Some(match tap {
            Some(tap) => UpBody::Tapped(body, tap, fault.clone()),
            None => UpBody::Incoming(body, fault.clone()),
        });
        if let Some(limit) = plan.buffering.as_ref().and_then(|b| b.max_request_body) {
            body = Some(UpBody::Full(Some(
                self.buffer_request(body, &parts, limit).await?,
            )));
        }
        let mut attempts = plan.retry.as_ref().map_or(1, |r| r.attempts.max(1));
        // A body sent more than once must be in memory.
        let mut replay: Option<Option<Bytes>> = None;
        if attempts > 1 && !websocket {
            match body.take() {
                Some(UpBody::Full(b)) => replay = Some(b),
                Some(b) if http_body::Body::is_end_stream(&b) => replay = Some(None),
                Some(b)
                    if content_length(&parts.headers).is_some_and(|n| n <= RETRY_BODY_LIMIT) =>
                {
                    replay = Some(Some(
                        self.buffer_request(Some(b), &parts, RETRY_BODY_LIMIT)
                            .await?,
                    ));
                }
                other => {
                    body = other;
                    attempts = 1;
                }
            }
        } else {
            attempts = 1;
        }
        // Mirroring: the head as it is now, and the body read ahead when copies carry it.
        let mut mirror_body = None;
        let original = (!websocket && svc.mirrors_any()).then(|| {
            Arc::new(mirror::Original {
                method: parts.method.clone(),
                uri: parts.uri.clone(),
                headers: parts.headers.clone(),
                host: ctx.host.clone(),
                client_ip: ctx.peer.addr.ip(),
            })
        });
        if let (Some(_), Some(limit)) = (&original, svc.mirror_body_limit()) {
            mirror_body = Some(match (&replay, body.take()) {
                (Some(b), rest) => {
                    body = rest;
                    mirror::MirrorBody::Known(b.clone().unwrap_or_default())
                }
                (None, None) => mirror::MirrorBody::Known(Bytes::new()),
                (None, Some(b)) => {
                    let (m, b) =
                        mirror::read_ahead(b, content_length(&parts.headers), limit).await?;
                    body = Some(b);
                    m
                }
            });
        }
        let mut last_error = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                if let Some(p) = &plan.retry {
                    let factor = 1u32 << (attempt - 1).min(16);
                    tokio::time::sleep(p.initial_interval.saturating_mul(factor)).await;
                }
            }
            let view = RequestView {
                method: &parts.method,
                host: &ctx.host,
                path: parts.uri.path(),
                query: parts.uri.query(),
                headers: &parts.headers,
                client_ip: ctx.peer.addr.ip(),
            };
            let pick = svc
                .pick(&view, Instant::now())
                .map_err(|message| ProxyError::Hook {
                    route: route.name.clone(),
                    message,
                })?;
            let Some(pick) = pick else {
                return Err(last_error.unwrap_or_else(|| ProxyError::NoServer {
                    service: svc.name.clone(),
                }));
            };
            let (Some(server), Some(state)) = (pick.at.server(), pick.at.state()) else {
                return Err(ProxyError::NoServer {
                    service: svc.name.clone(),
                });
            };
            if !route.steps.is_empty() {
                plan.server = Some(server.authority.clone());
            }
            ctx.observers
                .forwarded(&pick.at.service.name, server, &parts.uri);
            let last = attempt + 1 == attempts;
            let headers = if last {
                std::mem::take(&mut parts.headers)
            } else {
                parts.headers.clone()
            };
            let up_body = match &replay {
                Some(b) => UpBody::Full(b.clone()),
                None => body.take().unwrap_or_else(UpBody::empty),
            };
            let in_flight = state.begin();
            let started = Instant::now();
            let sent = self
                .send(
                    &parts,
                    headers,
                    up_body,
                    (server, pick.at.pool.transport.as_ref()),
                    pick.at.service.pass_host_header,
                    websocket,
                )
                .await;
            match sent {
                Ok(resp) => {
                    ctx.observers.origin(resp.status(), resp.headers());
                    state.record_success();
                    state.count_response(resp.status().as_u16());
                    plan.record(Some(resp.status().as_u16()), started.elapsed());
                    debug!(route = %route.name, service = %pick.at.service.name, server = server.authority.as_str(), status = resp.status().as_u16(), "forwarded");
                    if let (Some(original), false) = (&original, pick.mirrors.is_empty()) {
                        mirror::send_copies(
                            &self.client,
                            original,
                            mirror_body.as_ref(),
                            pick.mirrors,
                            self.settings.upstream_response_timeout,
                            &self.metrics,
                        );
                    }
                    return self
                        .finish(
                            resp,
                            tracker,
                            route,
                            server,
                            downstream_upgrade.take(),
                            pick.set_cookies,
                            in_flight,
                            plan,
                        )
                        .await;
                }
                Err(Failure { error, never_sent }) => {
                    drop(in_flight);
                    if error.side() == Side::Client {
                        // The client stalled: not the server's fault.
                        return Err(error);
                    }
                    if fault.is_set() {
                        // The client's body broke the exchange: the server is not to blame and
                        // the body cannot be sent again.
                        return Err(ProxyError::ClientBody {
                            source: Some(Box::new(error)),
                        });
                    }
                    self.metrics.upstream_error(
                        &pick.at.service.name,
                        upstream_error_kind(&error, never_sent),
                    );
                    if let Some(policy) = &pick.at.pool.passive {
                        if state.record_failure(policy, Instant::now()) {
                            warn!(service = %pick.at.service.name, server = server.authority.as_str(), cooldown = ?policy.cooldown, "server ejected after consecutive failures");
                        }
                    }
                    plan.record(None, started.elapsed());
                    let retryable = never_sent || is_idempotent(&parts.method);
                    if last || !retryable {
                        return Err(error);
                    }
                    debug!(route = %route.name, server = server.authority.as_str(), error = %error, attempt, "retrying");
                    self.metrics.retry(&svc.name);
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| ProxyError::NoServer {
            service: svc.name.clone(),
        }))
    }

    async fn buffer_request(
        &self,
        body: Option<UpBody>,
        parts: &http::request::Parts,
        limit: u64,
    ) -> Result<Bytes, ProxyError> {
        if content_length(&parts.headers).is_some_and(|n| n > limit) {
            return Err(ProxyError::RequestTooLarge { limit });
        }
        let Some(body) = body else {
            return Ok(Bytes::new());
        };
        subrequest::collect_limited(body, limit)
            .await
            .map_err(|e| match e {
                Ok(()) => ProxyError::RequestTooLarge { limit },
                Err(why) => ProxyError::ClientBody {
                    source: Some(why.into()),
                },
            })
    }

    /// One exchange with one server (and its pool's TLS transport), up to the response head.
    async fn send(
        &self,
        parts: &http::request::Parts,
        mut headers: http::HeaderMap,
        body: UpBody,
        (server, transport): (&Server, Option<&Arc<Transport>>),
        pass_host_header: bool,
        websocket: bool,
    ) -> Result<Response<UpstreamBody>, Failure> {
        let server_name = server.authority.as_str();
        let uri = upstream_head(
            &parts.uri,
            &mut headers,
            server,
            pass_host_header,
            websocket,
        )
        .map_err(|error| Failure {
            error,
            never_sent: true,
        })?;
        let progress = body.progress();
        let mut up = Request::new(body);
        *up.method_mut() = parts.method.clone();
        *up.uri_mut() = uri;
        *up.version_mut() = match server.scheme {
            Scheme::H2c => Version::HTTP_2,
            Scheme::Http | Scheme::Https => Version::HTTP_11,
        };
        *up.headers_mut() = headers;
        let sent = self.client.request_via(up, transport);
        tokio::pin!(sent);
        // The response clock starts when the client's body has all been sent: a slow upload is
        // the client's (408 once it stalls for the same time), never a slow server.
        let limit = self.settings.upstream_response_timeout;
        let mut wait = limit;
        loop {
            tokio::select! {
                r = &mut sent => {
                    return match r {
                        Err(e) => Err(upstream::classify(e, server_name)),
                        Ok(resp) => Ok(resp),
                    };
                }
                () = tokio::time::sleep(wait) => {}
            }
            let left = match &progress {
                Some(p) => match p.ended_ago() {
                    Some(ago) => limit.checked_sub(ago),
                    None => match limit.checked_sub(p.idle_for()) {
                        Some(left) if !left.is_zero() => Some(left),
                        _ => {
                            return Err(Failure {
                                error: ProxyError::ClientTimeout,
                                never_sent: false,
                            })
                        }
                    },
                },
                None => None,
            };
            match left {
                Some(left) if !left.is_zero() => wait = left,
                _ => {
                    return Err(Failure {
                        error: ProxyError::UpstreamTimeout {
                            server: server_name.to_string(),
                            phase: "response header",
                        },
                        never_sent: false,
                    })
                }
            }
        }
    }

    /// Turns a server's response head into the downstream response: websocket tunnel, header
    /// clean-up, sticky cookie, response buffering.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        mut resp: Response<UpstreamBody>,
        tracker: &Tracker,
        route: &Route,
        server: &Server,
        downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
        set_cookies: Vec<HeaderValue>,
        in_flight: crate::balance::InFlight,
        plan: &pipeline::Plan,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let server_name = server.authority.as_str();
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(downstream) = downstream_upgrade else {
                return Err(ProxyError::Upstream {
                    server: server_name.to_string(),
                    what: "101 to a request that did not ask to upgrade",
                    source: None,
                });
            };
            let upstream = hyper::upgrade::on(&mut resp);
            let (mut parts, _) = resp.into_parts();
            // A client that opens its session with a websocket (socket.io's websocket-only
            // transport) is pinned by the handshake answer.
            for c in set_cookies {
                parts.headers.append(header::SET_COOKIE, c);
            }
            tokio::spawn(tunnel(
                downstream,
                upstream,
                tracker.clone(),
                route.name.clone(),
                in_flight,
            ));
            return Ok(Response::from_parts(parts, ProxyBody::empty()));
        }
        let (mut parts, body) = resp.into_parts();
        forward::clean_response(&mut parts.headers);
        for c in set_cookies {
            parts.headers.append(header::SET_COOKIE, c);
        }
        let body = match plan.buffering.as_ref().and_then(|b| b.max_response_body) {
            None => ProxyBody::upstream(body),
            Some(limit) => match subrequest::collect_limited(body, limit).await {
                Ok(bytes) => {
                    parts.headers.remove(header::TRANSFER_ENCODING);
                    parts
                        .headers
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                    ProxyBody::full(bytes)
                }
                Err(Ok(())) => {
                    return Err(ProxyError::ResponseTooLarge {
                        server: server_name.to_string(),
                        limit,
                    })
                }
                Err(Err(reason)) => {
                    return Err(ProxyError::Upstream {
                        server: server_name.to_string(),
                        what: "response body",
                        source: Some(reason.into()),
                    })
                }
            },
        };
        Ok(Response::from_parts(
            parts,
            body.with_server(Some(in_flight)),
        ))
    }
}

/// The head of the request as it leaves for `server`: the target URI (its scheme tells the
/// upstream client how to speak: `http`, `https` or `h2c`) and the header edits made at the last
/// moment (websocket upgrade headers, `Host` unless passed, `TE` only to HTTP/2 servers —
/// `forward` lets nothing but `te: trailers` through, which gRPC needs). Shared by the live
/// exchange and dry runs.
pub(super) fn upstream_head(
    uri: &Uri,
    headers: &mut http::HeaderMap,
    server: &Server,
    pass_host_header: bool,
    websocket: bool,
) -> Result<Uri, ProxyError> {
    if server.scheme != Scheme::H2c {
        headers.remove(header::TE);
    }
    if websocket {
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    if !pass_host_header {
        headers.remove(header::HOST);
    }
    let path_and_query = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    Uri::builder()
        .scheme(server.scheme.as_str())
        .authority(server.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| ProxyError::BadRequest("invalid request target"))
}

/// The `kind` label of a failed exchange.
fn upstream_error_kind(e: &ProxyError, never_sent: bool) -> crate::metrics::UpstreamErrorKind {
    use crate::metrics::UpstreamErrorKind as K;
    match e {
        ProxyError::UpstreamTimeout { .. } => K::Timeout,
        _ if never_sent => K::Connect,
        _ => K::Other,
    }
}

/// Methods RFC 9110 calls idempotent: safe to send again after the server may have seen them.
fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Copies bytes both ways between an upgraded client and backend until either side closes.
async fn tunnel(
    downstream: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    tracker: Tracker,
    route: String,
    in_flight: crate::balance::InFlight,
) {
    let (down, up) = tokio::join!(downstream, upstream);
    match (down, up) {
        (Ok(down), Ok(up)) => {
            let mut down = TokioIo::new(down);
            let mut up = TokioIo::new(up);
            match tokio::io::copy_bidirectional(&mut down, &mut up).await {
                Ok((from_client, from_server)) => {
                    debug!(%route, from_client, from_server, "websocket closed")
                }
                Err(e) => debug!(%route, error = %e, "websocket ended with an error"),
            }
        }
        (Err(e), _) | (_, Err(e)) => info!(%route, error = %e, "websocket upgrade failed"),
    }
    drop(in_flight);
    drop(tracker);
}
