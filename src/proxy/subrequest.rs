//! Requests the router itself sends on behalf of a request: `forward_auth` (ask an auth server,
//! pass its refusal back or its chosen headers on) and custom error pages (fetch the page for a
//! status from the pages service), plus `collect_limited`, the bounded body reader they and the
//! `buffering` middleware use.
//!
//! Invariants: each is bounded (the upstream response timeout, a body size cap); a failing auth
//! server answers the client with the router's error (`ProxyError::AuthServer`), a failing
//! error-page fetch keeps the original response; neither runs in a dry run (the request phase
//! skips them there).

use std::net::IpAddr;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::body::ProxyBody;
use super::error::ProxyError;
use super::pipeline::{drop_spellings, path_and_query};
use super::upstream::UpBody;
use super::Proxy;
use crate::middleware::{ErrorPages, ForwardAuth};
use crate::routing::RequestView;

/// Error pages and forward-auth answers are read up to this size.
const MAX_PAGE_BYTES: usize = 1 << 20;

/// Reads `body` into memory, failing once it passes `limit` bytes.
pub(super) async fn collect_limited<B>(body: B, limit: u64) -> Result<Bytes, Result<(), String>>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut body = body;
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Err(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if (out.len() + data.len()) as u64 > limit {
                return Err(Ok(()));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

/// Asks the auth server; `Some` is its refusal, passed to the client.
pub(super) async fn forward_auth<B>(
    proxy: &Proxy,
    f: &ForwardAuth,
    req: &mut Request<B>,
) -> Result<Option<Response<ProxyBody>>, ProxyError> {
    let fail = |what: &'static str, source: Option<super::error::Cause>| ProxyError::AuthServer {
        address: f.address.to_string(),
        what,
        source,
    };
    let mut headers = if f.auth_request_headers.is_empty() {
        req.headers().clone()
    } else {
        let mut h = HeaderMap::new();
        for name in &f.auth_request_headers {
            for v in req.headers().get_all(name) {
                h.append(name.clone(), v.clone());
            }
        }
        // The forwarding headers always go along: they say what is being authorised.
        for (name, v) in req.headers() {
            if name.as_str().starts_with("x-forwarded-") {
                h.append(name.clone(), v.clone());
            }
        }
        h
    };
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::HOST);
    let method = HeaderValue::from_str(req.method().as_str())
        .map_err(|e| fail("request method", Some(Box::new(e))))?;
    headers.insert("x-forwarded-method", method);
    if let Ok(uri) = HeaderValue::from_str(&path_and_query(req)) {
        headers.insert("x-forwarded-uri", uri);
    }
    let mut auth_req = Request::new(UpBody::empty());
    *auth_req.uri_mut() = f.address.clone();
    *auth_req.headers_mut() = headers;
    let sent = proxy.client.request(auth_req);
    let resp = match tokio::time::timeout(proxy.settings.upstream_response_timeout, sent).await {
        Err(_) => return Err(fail("timed out", None)),
        Ok(Err(e)) => {
            let failure = super::upstream::classify(e, "auth");
            return Err(fail("exchange", Some(Box::new(failure.error))));
        }
        Ok(Ok(r)) => r,
    };
    if resp.status().is_success() {
        // What the backend sees under these names comes from the auth server, or is absent:
        // the client's own values (in any spelling) never pass.
        drop_spellings(req.headers_mut(), &f.auth_response_headers, true);
        for name in &f.auth_response_headers {
            for v in resp.headers().get_all(name) {
                req.headers_mut().append(name.clone(), v.clone());
            }
        }
        return Ok(None);
    }
    let (mut parts, body) = resp.into_parts();
    let body = match collect_limited(body, f.max_body as u64).await {
        Ok(b) => b,
        Err(_) => Bytes::from_static(b""),
    };
    super::forward::clean_response(&mut parts.headers);
    parts.headers.remove(header::CONTENT_LENGTH);
    Ok(Some(Response::from_parts(parts, ProxyBody::full(body))))
}

/// Fetches the custom page for `status` from the pages service; `None` keeps the original.
pub(super) async fn error_page(
    proxy: &Proxy,
    pages: &ErrorPages,
    status: StatusCode,
) -> Option<Response<ProxyBody>> {
    let service = pages.service.get()?;
    let empty = HeaderMap::new();
    let path = pages.query.replace("{status}", status.as_str());
    let view = RequestView {
        method: &Method::GET,
        host: "",
        path: &path,
        query: None,
        headers: &empty,
        client_ip: IpAddr::from([127, 0, 0, 1]),
    };
    let pick = service.pick(&view, Instant::now()).ok()??;
    let server = pick.at.server()?;
    let uri = http::Uri::builder()
        .scheme("http")
        .authority(server.authority.clone())
        .path_and_query(path.as_str())
        .build()
        .ok()?;
    let mut page_req = Request::new(UpBody::empty());
    *page_req.uri_mut() = uri;
    let sent = proxy.client.request(page_req);
    let resp = tokio::time::timeout(proxy.settings.upstream_response_timeout, sent)
        .await
        .ok()?
        .ok()?;
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let body = collect_limited(resp.into_body(), MAX_PAGE_BYTES as u64)
        .await
        .ok()?;
    let mut out = Response::new(ProxyBody::full(body));
    *out.status_mut() = status;
    if let Some(ct) = content_type {
        out.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    Some(out)
}
