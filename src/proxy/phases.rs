//! The phase list, in one place, shared by live traffic and dry runs:
//!
//! ```text
//! canonicalise ─► route ─► forwarding headers ─► request phase (middlewares; may answer)
//!   ─► target: handler answer | Exchange::service (live: pick + upstream with retries;
//!              dry: pick + the request as it would leave)
//!   ─► response phase (reverse order) ─► (log: RequestCtx::finish, by the caller)
//! ```
//!
//! Owns `Proxy::run_phases`, the `Exchange` seam (the only step a dry run replaces), the
//! canonical request (`canonicalize`: one Host, one path spelling; invariant 16), the route
//! lookup (`find_route`) and the forwarding-header rules as applied before the middlewares.
//!
//! Invariants: there is no other orchestration of these phases — live handling and dry runs
//! both call `run_phases`, so a decision cannot differ between them; every failure becomes a
//! response through `failed` (no panics, no hangs); a route without middlewares skips the
//! request and response phases entirely (its plan is empty).

use std::future::Future;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, Uri, Version};

use super::body::ProxyBody;
use super::ctx::{Peer, RequestCtx};
use super::error::{self, ProxyError};
use super::{forward, handler_response, pipeline, Proxy};
use crate::canonical::{self, PathOptions};
use crate::routing::{Handler, RequestView, Service, Target};
use crate::table::{Route, RouteTable};

/// How the target phase reaches a service: the one step a dry run does differently.
pub(super) trait Exchange<B> {
    /// Called once the request is canonical, before the route lookup (a dry run starts its
    /// explain trace here).
    fn canonical(&mut self, _ctx: &RequestCtx, _req: &Request<B>) {}

    /// Sends (or, dry, describes) the request to a server of `svc`. `Ok(None)` ends the phase
    /// list without a response: a dry run that decided where the request would go.
    fn service(
        &mut self,
        proxy: &Proxy,
        ctx: &mut RequestCtx,
        req: Request<B>,
        svc: &Arc<Service>,
        websocket: bool,
    ) -> impl Future<Output = Result<Option<Response<ProxyBody>>, ProxyError>>;

    /// Who answered the request directly (a dry run's `by`), made only when asked.
    fn answered_by(&mut self, _by: &dyn Fn() -> String) {}
}

impl Proxy {
    /// Runs the phase list for one request. `None` only when the exchange ended it (dry).
    pub(super) async fn run_phases<B, X: Exchange<B>>(
        &self,
        ctx: &mut RequestCtx,
        mut req: Request<B>,
        x: &mut X,
    ) -> Option<Response<ProxyBody>> {
        let routed = match canonicalize(&mut req, &ctx.peer.path).and_then(|host| {
            fronting_check(&ctx.peer, &host)?;
            self.options_check(&ctx.peer, &host)?;
            Ok(host)
        }) {
            Ok(host) => {
                ctx.host = host;
                x.canonical(ctx, &req);
                // ACME HTTP-01 validations are answered before anything else (redirects and
                // routes included), as Traefik does on its challenge entrypoint.
                if let Some(answer) = self.acme_http_challenge(&req).await {
                    x.answered_by(&|| "ACME HTTP-01 challenge".to_string());
                    return Some(answer);
                }
                // An entrypoint that redirects (`redirect-to`) answers every request before
                // routing.
                if let Some(answer) = entrypoint_redirect(ctx, &req, x) {
                    return Some(answer);
                }
                find_route(
                    &ctx.table,
                    &ctx.peer.entrypoint,
                    ctx.peer.tls.is_some(),
                    &req,
                    &ctx.host,
                    ctx.peer.addr.ip(),
                )
            }
            Err(e) => Err(e),
        };
        let route = match routed {
            Ok(r) => r,
            Err(e) => {
                x.answered_by(&|| e.to_string());
                return Some(failed(e, ctx));
            }
        };
        ctx.route = Some(route.clone());
        ctx.observers.routed(&route);
        let websocket = self.forwarding_headers(&mut req, &ctx.peer);
        let answer = if route.steps.is_empty() {
            None
        } else {
            let phase = pipeline::request_phase(
                self,
                &route,
                &mut req,
                &ctx.host,
                ctx.peer.addr.ip(),
                &mut ctx.plan,
            )
            .await;
            if let Some(user) = ctx.plan.user.as_deref() {
                ctx.observers.user(user);
            }
            match phase {
                Ok(None) => None,
                Ok(Some(answer)) => {
                    x.answered_by(&|| "middleware".to_string());
                    Some(Ok(answer))
                }
                Err(e) => {
                    x.answered_by(&|| e.to_string());
                    Some(Err(e))
                }
            }
        };
        let outcome = match answer {
            Some(a) => a,
            None => match &route.target {
                Target::Handler(h) => {
                    x.answered_by(&|| handler_kind(h).to_string());
                    Ok(handler_response(h))
                }
                Target::Service(svc) => match x.service(self, ctx, req, svc, websocket).await {
                    Ok(Some(resp)) => Ok(resp),
                    Ok(None) => return None,
                    Err(e) => {
                        x.answered_by(&|| e.to_string());
                        Err(e)
                    }
                },
            },
        };
        let resp = match outcome {
            Ok(r) => r,
            Err(e) => failed(e, ctx),
        };
        if route.steps.is_empty() {
            return Some(resp);
        }
        Some(pipeline::response_phase(self, &route, &mut ctx.plan, resp, ctx.peer.addr.ip()).await)
    }

    /// Settles the forwarding headers before the middlewares run (as at a Traefik entrypoint):
    /// hooks see what the backend will see, and headers middlewares set (X-Forwarded-Prefix) are
    /// not taken for client spoofing. Returns whether the request asks for a websocket.
    pub(super) fn forwarding_headers<B>(&self, req: &mut Request<B>, peer: &Peer) -> bool {
        // An upgrade is an HTTP/1.1 mechanism: on HTTP/1.0 the headers are dropped as hop-by-hop.
        let websocket =
            req.version() == Version::HTTP_11 && forward::is_websocket_upgrade(req.headers());
        let down = forward::Downstream {
            client_ip: &peer.client_ip,
            trusted: peer.trusted,
            proto: match (websocket, peer.tls.is_some()) {
                (false, false) => "http",
                (false, true) => "https",
                (true, false) => "ws",
                (true, true) => "wss",
            },
            server_name: &self.server_name,
        };
        forward::prepare_request(req.headers_mut(), &down);
        websocket
    }
}

fn handler_kind(h: &Handler) -> &'static str {
    match h {
        Handler::Respond { .. } => "respond",
        Handler::Redirect { .. } => "redirect",
    }
}

/// The route a request takes: the table's lookup, its failures as errors.
pub(super) fn find_route<B>(
    table: &RouteTable,
    entrypoint: &str,
    tls: bool,
    req: &Request<B>,
    host: &str,
    peer: std::net::IpAddr,
) -> Result<Arc<Route>, ProxyError> {
    let view = RequestView {
        method: req.method(),
        host,
        path: req.uri().path(),
        query: req.uri().query(),
        headers: req.headers(),
        client_ip: peer,
    };
    match table.lookup_tls(entrypoint, tls, &view) {
        Ok(Some(route)) => Ok(route.clone()),
        Ok(None) => Err(ProxyError::NoRoute),
        Err(e) => Err(ProxyError::Hook {
            route: e.route,
            message: e.message,
        }),
    }
}

/// Logs a failed request (by whose fault it is) and turns it into its response.
pub(super) fn failed(e: ProxyError, ctx: &RequestCtx) -> Response<ProxyBody> {
    let (peer, method, path) = (ctx.peer.addr, &ctx.method, ctx.uri.path());
    match e.side() {
        error::Side::Client => {
            tracing::debug!(%peer, %method, path, error = %e, "request refused")
        }
        error::Side::Router | error::Side::Upstream => {
            tracing::warn!(%peer, %method, path, error = %e, "request failed")
        }
    }
    if ctx.protocol.is_grpc() {
        return e.into_grpc_response();
    }
    e.into_response()
}

pub(super) fn set_path_and_query<B>(
    req: &mut Request<B>,
    path: String,
    query: Option<&str>,
) -> Result<(), ()> {
    let pq = match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(http::uri::PathAndQuery::try_from(pq).map_err(|_| ())?);
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| ())?;
    Ok(())
}

/// Makes `req` the canonical request every later decision reads, and returns its host
/// (lowercase, without port or trailing dot).
///
/// - The target: an absolute-form URI (`GET http://a.test/x`) names the host (RFC 9112 §3.2.2):
///   its authority replaces any `Host` header and the target becomes origin-form; userinfo in it
///   is refused. Otherwise exactly one valid `Host` (HTTP/1.1 requires one).
/// - The path: canonicalised by the entrypoint's rules (`canonical::canonical_path`); ambiguous
///   spellings are refused with 400.
/// - `CONNECT` is refused (405): the router opens no tunnels.
pub(crate) fn canonicalize<B>(
    req: &mut Request<B>,
    opts: &PathOptions,
) -> Result<String, ProxyError> {
    if req.method() == Method::CONNECT {
        return Err(ProxyError::ConnectNotAllowed);
    }
    let bad_host = |e: canonical::HostError| ProxyError::BadRequest(e.reason());
    let host = if let Some(authority) = req.uri().authority().cloned() {
        let parsed = canonical::parse_host(authority.as_str().as_bytes()).map_err(bad_host)?;
        let value = HeaderValue::from_str(authority.as_str())
            .map_err(|_| ProxyError::BadRequest("invalid request target"))?;
        req.headers_mut().insert(header::HOST, value);
        parsed.host
    } else {
        let mut values = req.headers().get_all(header::HOST).iter();
        match (values.next(), values.next()) {
            (Some(_), Some(_)) => return Err(ProxyError::BadRequest("more than one Host header")),
            (Some(v), None) => canonical::parse_host(v.as_bytes()).map_err(bad_host)?.host,
            (None, _) if req.version() == Version::HTTP_11 => {
                return Err(ProxyError::BadRequest("missing Host header"))
            }
            (None, _) => String::new(),
        }
    };
    let path = req.uri().path();
    let canon_path =
        canonical::canonical_path(path, opts).map_err(|e| ProxyError::BadRequest(e.reason()))?;
    let changed = matches!(canon_path, std::borrow::Cow::Owned(_));
    if changed || req.uri().authority().is_some() {
        let canon_path = canon_path.into_owned();
        let query = req.uri().query().map(str::to_string);
        set_path_and_query(req, canon_path, query.as_deref())
            .map_err(|()| ProxyError::BadRequest("invalid request target"))?;
        // Origin-form from here on: the authority now lives in `Host` only.
        let mut parts = req.uri().clone().into_parts();
        parts.scheme = None;
        parts.authority = None;
        *req.uri_mut() =
            Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest("invalid request target"))?;
    }
    Ok(host)
}

impl Proxy {
    /// The key authorization for `GET /.well-known/acme-challenge/TOKEN` while an ACME order
    /// waits for it.
    async fn acme_http_challenge<B>(&self, req: &Request<B>) -> Option<Response<ProxyBody>> {
        let token = req
            .uri()
            .path()
            .strip_prefix("/.well-known/acme-challenge/")?;
        let key_auth = self.certs.get()?.http_challenge(token).await?;
        let mut resp = Response::new(ProxyBody::full(bytes::Bytes::from(key_auth)));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        Some(resp)
    }
}

/// The redirect of an entrypoint with `redirect-to`, for a canonical request.
fn entrypoint_redirect<B, X: Exchange<B>>(
    ctx: &RequestCtx,
    req: &Request<B>,
    x: &mut X,
) -> Option<Response<ProxyBody>> {
    let r = ctx.peer.redirect.as_ref()?;
    let scheme = if ctx.peer.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let host = pipeline::raw_host(req, &ctx.host);
    let loc = r.location(scheme, &host, &pipeline::path_and_query(req))?;
    let status = r.status(req.method());
    x.answered_by(&|| format!("entrypoint redirect {status} → {loc}"));
    Some(pipeline::redirect_to(status, &loc))
}

impl Proxy {
    /// Refuses a request whose Host would have been served with other named TLS options than
    /// those its connection was set up with (the SNI's): a route's `tls.options` (client
    /// certificates, versions) must not be skipped by sending another Host over a connection
    /// made for a laxer name, as Traefik answers 421.
    fn options_check(&self, peer: &Peer, host: &str) -> Result<(), ProxyError> {
        let (Some(tls), Some(certs)) = (&peer.tls, self.certs.get()) else {
            return Ok(());
        };
        let index = certs.options();
        if index.is_empty() || host.is_empty() {
            return Ok(());
        }
        let want = index.find(Some(host)).map(|c| &c.name);
        if want == tls.options.as_ref() {
            return Ok(());
        }
        Err(ProxyError::Misdirected {
            host: host.to_string(),
            sni: tls.sni.clone().unwrap_or_default(),
        })
    }
}

/// Refuses a request whose Host is not the name its TLS connection was set up for, where the
/// handshake checked a client certificate: the certificate was accepted for the SNI name, and
/// must not open another site's routes (domain fronting). Without client certificates Host
/// alone decides, as in Traefik.
fn fronting_check(peer: &Peer, host: &str) -> Result<(), ProxyError> {
    let Some(tls) = &peer.tls else { return Ok(()) };
    match &tls.sni {
        Some(sni) if tls.client_certs.is_some() && !host.is_empty() && sni != host => {
            Err(ProxyError::Misdirected {
                host: host.to_string(),
                sni: sni.clone(),
            })
        }
        _ => Ok(()),
    }
}

/// The host a request names, as well as it can be told, for a recording of what arrived (the
/// decision itself uses `canonicalize`).
pub(super) fn recorded_host<B>(req: &Request<B>) -> String {
    let raw = match req.uri().authority() {
        Some(a) => a.as_str().as_bytes(),
        None => req
            .headers()
            .get(header::HOST)
            .map_or(&b""[..], |v| v.as_bytes()),
    };
    canonical::parse_host(raw).map_or_else(|_| String::new(), |h| h.host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_request() {
        let opts = PathOptions::default();
        let mut req = Request::builder()
            .uri("http://A.test:8080/x/%2e%2e/y?q=1")
            .header("host", "b.test")
            .body(())
            .unwrap();
        assert_eq!(canonicalize(&mut req, &opts).unwrap(), "a.test");
        assert_eq!(req.uri().to_string(), "/y?q=1");
        assert_eq!(req.headers()["host"], "A.test:8080");
        let mut two = Request::builder()
            .uri("/")
            .header("host", "a.test")
            .header("host", "b.test")
            .body(())
            .unwrap();
        assert!(canonicalize(&mut two, &opts).is_err());
        let mut bad = Request::builder()
            .uri("/a%2fb")
            .header("host", "a.test")
            .body(())
            .unwrap();
        assert!(matches!(
            canonicalize(&mut bad, &opts),
            Err(ProxyError::BadRequest("encoded slash in path"))
        ));
        let mut userinfo = Request::builder().uri("http://u@a.test/").body(()).unwrap();
        assert!(canonicalize(&mut userinfo, &opts).is_err());
    }
}
