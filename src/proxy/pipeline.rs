//! The middleware phases of one request: the request phase runs a route's (flattened)
//! middlewares in declaration order and either lets the request go on or answers it; the
//! response phase runs the response-side steps in reverse order (the first middleware listed is
//! the outermost, as in Traefik), so a header set by an earlier middleware also lands on the
//! answer of a later one.
//!
//! Invariants: every direct answer (401, 403, 429, redirects, preflights, hook answers) still
//! passes through the response steps recorded before it; a failing hook fails this request only
//! (500, details logged); limiter permits live in the `Plan` and then in the response body, so
//! an in-flight slot is released only when the response is fully sent.

use std::any::Any;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

use super::body::ProxyBody;
use super::compress::{self, CompressOptions, Encoding};
use super::error::{self, ProxyError};
use super::subrequest;
use super::{handler_response, set_path_and_query, Proxy};
use crate::canonical::{self, PathOptions};
use crate::middleware::circuit::CircuitBreaker;
use crate::middleware::{
    Buffering, HookCtx, HookOutcome, HookRequest, HookResponse, LimitKey, Middleware, RequestHook,
    ResponseHook, RetryPolicy,
};
use crate::routing::matcher::canonical_ip;
use crate::table::Route;

/// What the request phase decided for the rest of the request.
#[derive(Default)]
pub(super) struct Plan {
    /// Response-side steps in the order they were met (applied in reverse).
    pub response_steps: Vec<Middleware>,
    /// The request's `Origin`, for CORS on the response.
    pub origin: Option<HeaderValue>,
    pub retry: Option<RetryPolicy>,
    pub breakers: Vec<Arc<CircuitBreaker>>,
    pub compress: Option<(Encoding, Arc<CompressOptions>)>,
    pub buffering: Option<Buffering>,
    /// Limiter permits, released with the response body.
    pub held: Vec<Box<dyn Any + Send + Sync>>,
    pub ctx: Option<HookCtx>,
    /// The server the balancer picked (for `ctx.server` in response hooks).
    pub server: Option<http::uri::Authority>,
    pub is_head: bool,
    /// The user a basic-auth middleware authenticated (for the access log).
    pub user: Option<String>,
    /// Set for a dry run (replay, REPL, explain): nothing leaves the process (forward_auth and
    /// error-page services are not called), the clock is the recorded time, and every step
    /// leaves a note here.
    pub dry: Option<DryNotes>,
    /// The entrypoint's path rules, which a rewritten path must obey too.
    pub path: PathOptions,
    /// The scheme the client used (`https` on a TLS entrypoint), for redirects.
    pub scheme: &'static str,
}

/// What a dry run of the request phase learned, step by step.
#[derive(Debug, Default)]
pub(super) struct DryNotes {
    pub now: Option<Instant>,
    pub notes: Vec<String>,
}

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(1);

impl Plan {
    /// The clock middlewares read: now, or the recorded time in a dry run.
    fn now(&self) -> Instant {
        self.dry
            .as_ref()
            .and_then(|d| d.now)
            .unwrap_or_else(Instant::now)
    }

    /// Adds a note to a dry run's trace (formatted only in a dry run).
    fn note(&mut self, m: &Middleware, what: impl FnOnce() -> String) {
        if let Some(d) = &mut self.dry {
            d.notes.push(format!("{}: {}", m.describe(), what()));
        }
    }

    fn is_dry(&self) -> bool {
        self.dry.is_some()
    }

    /// The hook context, made on first use (most requests never need one).
    fn ctx(&mut self, proxy: &Proxy, route: &Arc<Route>, client_ip: IpAddr) -> &HookCtx {
        let server = self.server.clone();
        let ctx = self.ctx.get_or_insert_with(|| HookCtx {
            route: route.clone(),
            server: None,
            client_ip: canonical_ip(client_ip),
            request_seq: REQUEST_SEQ.fetch_add(1, Ordering::Relaxed),
            store: proxy.store.clone(),
        });
        if server.is_some() {
            ctx.server = server;
        }
        ctx
    }

    /// Records one upstream outcome in every circuit breaker of the route.
    pub fn record(&self, status: Option<u16>, latency: Duration) {
        let now = Instant::now();
        for b in &self.breakers {
            b.record(status, latency, now);
        }
    }
}

/// A small direct answer.
fn answer(status: StatusCode, headers: HeaderMap, body: &str) -> Response<ProxyBody> {
    let mut resp = error::plain(status, body.to_string());
    if body.is_empty() {
        resp.headers_mut().remove(header::CONTENT_TYPE);
    }
    for (name, value) in &headers {
        resp.headers_mut().append(name.clone(), value.clone());
    }
    resp
}

fn limit_key(key: &LimitKey, headers: &HeaderMap, ip: IpAddr) -> String {
    match key {
        LimitKey::ClientIp => canonical_ip(ip).to_string(),
        LimitKey::Header(h) => headers
            .get(h)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default(),
    }
}

/// `Host` as the client sent it (with port), for building redirect URLs.
pub(super) fn raw_host<B>(req: &Request<B>, host: &str) -> String {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_else(|| host.to_string())
}

pub(super) fn path_and_query<B>(req: &Request<B>) -> String {
    req.uri()
        .path_and_query()
        .map_or_else(|| "/".to_string(), |pq| pq.as_str().to_string())
}

pub(super) fn redirect_to(status: StatusCode, location: &str) -> Response<ProxyBody> {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    answer(status, h, "")
}

/// The longest a request waits for the shared store's rate-limit answer before its local
/// limiter decides.
const SHARED_RATE_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// One token of a shared rate limit, from the store; the local limiter decides when the store
/// cannot answer in time (an outage never fails or holds a request).
async fn shared_take(
    store: &dyn crate::middleware::limit::SharedRate,
    name: &str,
    key: &str,
    local: &crate::middleware::limit::RateLimiter,
    now: std::time::Instant,
) -> Result<(), std::time::Duration> {
    let bucket = format!("{name}\u{1f}{key}");
    let asked = store.take(&bucket, local.interval(), local.burst());
    match tokio::time::timeout(SHARED_RATE_WAIT, asked).await {
        Ok(Ok(verdict)) => verdict,
        _ => local.check(key, now),
    }
}

/// Runs the request-side middlewares. `Ok(Some)` is a direct answer.
pub(super) async fn request_phase<B>(
    proxy: &Proxy,
    route: &Arc<Route>,
    req: &mut Request<B>,
    host: &str,
    peer: IpAddr,
    plan: &mut Plan,
) -> Result<Option<Response<ProxyBody>>, ProxyError> {
    let hook_error = |message: String| ProxyError::Hook {
        route: route.name.clone(),
        message,
    };
    plan.is_head = req.method() == Method::HEAD;
    let owned = owned_headers(route);
    drop_spellings(req.headers_mut(), &owned, false);
    let now = plan.now();
    for m in &route.steps {
        match m {
            Middleware::OnRequest(h) => {
                let ctx = plan.ctx(proxy, route, peer).clone();
                let before = plan.is_dry().then(|| path_and_query(req));
                let started = std::time::Instant::now();
                let ran = run_request_hook(h.as_ref(), req, host, peer, &ctx, &plan.path);
                let key = crate::metrics::hook_key(h);
                proxy
                    .metrics
                    .hook(route, key, started.elapsed(), ran.is_err());
                let answer = ran.map_err(hook_error)?;
                plan.note(m, || match (&answer, before) {
                    (Some(a), _) => format!("answered {}", a.status()),
                    (None, Some(b)) if b != path_and_query(req) => {
                        format!("continued; {b} → {}", path_and_query(req))
                    }
                    _ => "continued".to_string(),
                });
                if let Some(answer) = answer {
                    return Ok(Some(answer));
                }
            }
            Middleware::StripPrefix(_)
            | Middleware::StripPrefixRegex(_)
            | Middleware::AddPrefix(_)
            | Middleware::ReplacePath(_)
            | Middleware::ReplacePathRegex(..) => match m.rewrite_path(req.uri().path()) {
                Some(edit) => {
                    let before = req.uri().path().to_string();
                    let query = req.uri().query().map(str::to_string);
                    // The rewritten path obeys the entrypoint's rules as the client's did.
                    let path = match canonical::recheck_rewritten(&edit.path, &plan.path) {
                        Ok(p) => p,
                        Err(e) => {
                            plan.note(m, || format!("path {before} → {}: {e}", edit.path));
                            return Err(ProxyError::BadRequest(e.reason()));
                        }
                    };
                    set_path_and_query(req, path, query.as_deref()).map_err(|()| {
                        hook_error(format!("{} produced an invalid path", m.describe()))
                    })?;
                    if let Some((name, value)) = edit.header {
                        if let Ok(v) = HeaderValue::from_str(&value) {
                            req.headers_mut().insert(name, v);
                        }
                    }
                    plan.note(m, || format!("path {before} → {}", req.uri().path()));
                }
                None => plan.note(m, || format!("path {} unchanged", req.uri().path())),
            },
            Middleware::RedirectScheme(r) => {
                if let Some(loc) =
                    r.location(plan.scheme, &raw_host(req, host), &path_and_query(req))
                {
                    let status = r.status(req.method());
                    plan.note(m, || format!("answered {status} → {loc}"));
                    return Ok(Some(redirect_to(status, &loc)));
                }
                plan.note(m, || "no redirect".to_string());
            }
            Middleware::RedirectRegex(r) => {
                let url = format!(
                    "{}://{}{}",
                    plan.scheme,
                    raw_host(req, host),
                    path_and_query(req)
                );
                if let Some(loc) = r.location(&url) {
                    let status = r.status(req.method());
                    plan.note(m, || format!("answered {status} → {loc}"));
                    return Ok(Some(redirect_to(status, &loc)));
                }
                plan.note(m, || format!("{url} does not match; no redirect"));
            }
            Middleware::RequestHeaders(ops) => {
                ops.apply(req.headers_mut());
                plan.note(m, || "applied".to_string());
            }
            Middleware::ResponseHeaders(_) | Middleware::OnResponse(_) | Middleware::Errors(_) => {
                plan.note(m, || "applies to the response".to_string());
                plan.response_steps.push(m.clone())
            }
            Middleware::Cors(c) => {
                if let Some(headers) = c.preflight(req.method(), req.headers()) {
                    plan.note(m, || "preflight answered 204".to_string());
                    return Ok(Some(answer(StatusCode::NO_CONTENT, headers, "")));
                }
                plan.note(m, || "not a preflight; applies to the response".to_string());
                plan.origin = req.headers().get(header::ORIGIN).cloned();
                plan.response_steps.push(m.clone());
            }
            Middleware::BasicAuth(b) => {
                use crate::middleware::auth::Cached;
                // The cache (or a cheap `{SHA}` check) answers without waiting; a slow hash is
                // checked on the blocking pool so this worker keeps serving other connections.
                // A dry run takes the same path and gets the same answer.
                let verdict = match b.auth.check_cached(req.headers()) {
                    Cached::Allowed(user) => Some(user),
                    Cached::Refused => None,
                    Cached::Unknown(pending) => b.auth.verify(pending).await,
                };
                match verdict {
                    None => {
                        plan.note(m, || "no valid credentials; answered 401".to_string());
                        let mut h = HeaderMap::new();
                        h.insert(header::WWW_AUTHENTICATE, b.auth.challenge());
                        return Ok(Some(answer(
                            StatusCode::UNAUTHORIZED,
                            h,
                            "401 Unauthorized\n",
                        )));
                    }
                    Some(user) => {
                        plan.note(m, || format!("user {user:?} authenticated"));
                        if b.remove_header {
                            req.headers_mut().remove(header::AUTHORIZATION);
                        }
                        if let Some(field) = &b.header_field {
                            if let Ok(v) = HeaderValue::from_str(&user) {
                                req.headers_mut().insert(field.clone(), v);
                            }
                        }
                        plan.user = Some(user);
                    }
                }
            }
            Middleware::IpAllowList(list) => {
                let ip = canonical_ip(peer);
                if !list.allows(peer) {
                    plan.note(m, || format!("{ip} not allowed; answered 403"));
                    return Ok(Some(answer(
                        StatusCode::FORBIDDEN,
                        HeaderMap::new(),
                        "403 Forbidden\n",
                    )));
                }
                plan.note(m, || format!("{ip} allowed"));
            }
            Middleware::RateLimit(r) => {
                let key = limit_key(&r.key, req.headers(), peer);
                let verdict = match (&r.shared, proxy.shared_rate.get()) {
                    // Dry runs count locally: they never reach the store.
                    (Some(name), Some(store)) if !plan.is_dry() => {
                        shared_take(store.as_ref(), name, &key, &r.limiter, now).await
                    }
                    _ => r.limiter.check(&key, now),
                };
                if let Err(wait) = verdict {
                    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                    plan.note(m, || {
                        format!("key {key:?} over the limit; answered 429 (retry after {secs}s)")
                    });
                    let mut h = HeaderMap::new();
                    h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                    return Ok(Some(answer(
                        StatusCode::TOO_MANY_REQUESTS,
                        h,
                        "429 Too Many Requests\n",
                    )));
                }
                plan.note(m, || format!("key {key:?} within the limit"));
            }
            Middleware::InFlightLimit(l) => {
                let key = limit_key(&l.key, req.headers(), peer);
                match l.limiter.try_acquire(&key) {
                    // A dry run holds no request open, so its permit goes at once.
                    Some(permit) if plan.is_dry() => {
                        drop(permit);
                        plan.note(m, || format!("key {key:?} within the limit"));
                    }
                    Some(permit) => plan.held.push(Box::new(permit)),
                    None => {
                        plan.note(m, || format!("key {key:?} at the limit; answered 429"));
                        return Ok(Some(answer(
                            StatusCode::TOO_MANY_REQUESTS,
                            HeaderMap::new(),
                            "429 Too Many Requests\n",
                        )));
                    }
                }
            }
            Middleware::Retry(p) => {
                plan.note(m, || "applies to the upstream exchange".to_string());
                plan.retry = Some(p.clone())
            }
            Middleware::CircuitBreaker(cb) => {
                if !cb.allow(now) {
                    plan.note(m, || "open; answered 503".to_string());
                    return Err(ProxyError::CircuitOpen {
                        route: route.name.clone(),
                    });
                }
                plan.note(m, || "closed".to_string());
                plan.breakers.push(cb.clone());
            }
            Middleware::Compress(opts) => {
                let enc = compress::negotiate(req.headers(), opts);
                plan.note(m, || match enc {
                    Some(e) => format!("{} negotiated for the response", e.token()),
                    None => "client accepts no offered encoding".to_string(),
                });
                if let Some(enc) = enc {
                    plan.compress = Some((enc, opts.clone()));
                }
            }
            Middleware::Buffering(b) => {
                plan.note(m, || "applies to the bodies".to_string());
                plan.buffering = Some(b.clone())
            }
            Middleware::ForwardAuth(f) => {
                if plan.is_dry() {
                    plan.note(m, || {
                        format!("{} not asked in a dry run; assumed to allow", f.address)
                    });
                    continue;
                }
                if let Some(answer) = subrequest::forward_auth(proxy, f, req).await? {
                    return Ok(Some(answer));
                }
            }
            Middleware::PassTlsClientCert(p) => {
                use crate::middleware::client_cert::{ClientChain, CERT_HEADER, INFO_HEADER};
                req.headers_mut().remove(CERT_HEADER);
                req.headers_mut().remove(INFO_HEADER);
                let chain = req.extensions().get::<ClientChain>().cloned();
                let (pem, info) = chain.map_or((None, None), |c| p.values(&c.0));
                let set = pem.is_some() || info.is_some();
                for (name, value) in [(CERT_HEADER, pem), (INFO_HEADER, info)] {
                    if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                        req.headers_mut().insert(name, v);
                    }
                }
                plan.note(m, || {
                    if set {
                        "client certificate passed"
                    } else {
                        "no client certificate"
                    }
                    .to_string()
                });
            }
            // Chains are flattened when the table is compiled.
            Middleware::Chain(..) => {}
        }
    }
    Ok(None)
}

/// Runs the response-side steps (reverse order), then compression.
pub(super) async fn response_phase(
    proxy: &Proxy,
    route: &Arc<Route>,
    plan: &mut Plan,
    mut resp: Response<ProxyBody>,
    peer: IpAddr,
) -> Response<ProxyBody> {
    let steps = std::mem::take(&mut plan.response_steps);
    for step in steps.iter().rev() {
        match step {
            Middleware::ResponseHeaders(ops) => ops.apply(resp.headers_mut()),
            Middleware::Cors(c) => c.apply(plan.origin.as_ref(), resp.headers_mut()),
            Middleware::Errors(pages) if pages.covers(resp.status().as_u16()) => {
                if plan.dry.is_some() {
                    let status = resp.status();
                    plan.note(step, || {
                        format!("{status} would get the page service's answer")
                    });
                    continue;
                }
                if let Some(page) = subrequest::error_page(proxy, pages, resp.status()).await {
                    let mut old = std::mem::replace(&mut resp, page);
                    let body = std::mem::replace(resp.body_mut(), ProxyBody::empty());
                    *resp.body_mut() = body.take_guards_from(old.body_mut());
                }
            }
            Middleware::OnResponse(h) => {
                let ctx = plan.ctx(proxy, route, peer).clone();
                let started = std::time::Instant::now();
                let ran = run_response_hook(h.as_ref(), &mut resp, &ctx);
                let key = crate::metrics::hook_key(h);
                proxy
                    .metrics
                    .hook(route, key, started.elapsed(), ran.is_err());
                if let Err(message) = ran {
                    let e = ProxyError::Hook {
                        route: route.name.clone(),
                        message,
                    };
                    tracing::warn!(error = %e, "request failed");
                    let mut failed = e.into_response();
                    let body = std::mem::replace(failed.body_mut(), ProxyBody::empty());
                    *failed.body_mut() = body.take_guards_from(resp.body_mut());
                    resp = failed;
                }
            }
            _ => {}
        }
    }
    if let Some((enc, opts)) = &plan.compress {
        if compress::compressible(resp.status(), plan.is_head, resp.headers(), opts) {
            compress::apply_headers(resp.headers_mut(), *enc);
            let body = std::mem::replace(resp.body_mut(), ProxyBody::empty());
            *resp.body_mut() = body.compress(*enc);
        }
    }
    let held = std::mem::take(&mut plan.held);
    if held.is_empty() {
        resp
    } else {
        resp.map(|b| b.holding(held))
    }
}

/// Runs one script request hook on `req` (headers are moved in and out, not copied) and writes
/// its edits back. `Some` is a direct answer.
pub(super) fn run_request_hook<B>(
    hook: &dyn RequestHook,
    req: &mut Request<B>,
    host: &str,
    peer: IpAddr,
    ctx: &HookCtx,
    path_options: &PathOptions,
) -> Result<Option<Response<ProxyBody>>, String> {
    let mut hr = HookRequest {
        method: req.method().clone(),
        host: host.to_string(),
        path: req.uri().path().to_string(),
        query: req.uri().query().unwrap_or("").to_string(),
        headers: std::mem::take(req.headers_mut()),
        client_ip: canonical_ip(peer),
    };
    let outcome = hook.on_request(&mut hr, ctx);
    *req.headers_mut() = std::mem::take(&mut hr.headers);
    let outcome = outcome?;
    *req.method_mut() = hr.method;
    if req.uri().path() != hr.path || req.uri().query().unwrap_or("") != hr.query {
        let query = (!hr.query.is_empty()).then_some(hr.query.as_str());
        let path = if req.uri().path() == hr.path {
            hr.path.clone()
        } else {
            canonical::recheck_rewritten(&hr.path, path_options)
                .map_err(|e| format!("hook produced a path the entrypoint refuses: {e}"))?
        };
        set_path_and_query(req, path, query)
            .map_err(|()| "hook produced an invalid path".to_string())?;
    }
    Ok(match outcome {
        HookOutcome::Continue => None,
        HookOutcome::Respond(h) => Some(handler_response(&h)),
    })
}

fn run_response_hook(
    hook: &dyn ResponseHook,
    resp: &mut Response<ProxyBody>,
    ctx: &HookCtx,
) -> Result<(), String> {
    let mut hr = HookResponse {
        status: resp.status(),
        headers: std::mem::take(resp.headers_mut()),
    };
    let out = hook.on_response(&mut hr, ctx);
    *resp.headers_mut() = hr.headers;
    *resp.status_mut() = hr.status;
    out
}

/// Removes client headers that are `names` once `_` is read as `-` (the spelling CGI, PHP, Django
/// and Rails fold into the same variable), and, with `exact`, the names themselves.
pub(super) fn drop_spellings(headers: &mut HeaderMap, names: &[http::HeaderName], exact: bool) {
    if names.is_empty() {
        return;
    }
    let doomed: Vec<http::HeaderName> = headers
        .keys()
        .filter(|k| {
            let k = k.as_str();
            let underscored = k.contains('_');
            (underscored || exact)
                && names.iter().any(|n| {
                    let n = n.as_str();
                    n.len() == k.len()
                        && n.bytes().zip(k.bytes()).all(|(a, b)| {
                            a == b || (a == b'-' && b == b'_') || (a == b'_' && b == b'-')
                        })
                })
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// The headers a route's middlewares set for the backend (`basic_auth` `header_field`,
/// `forward_auth` `auth_response_headers`): a client may not send them under an underscore
/// spelling.
fn owned_headers(route: &Route) -> Vec<http::HeaderName> {
    let mut names = Vec::new();
    for m in &route.steps {
        match m {
            Middleware::BasicAuth(b) => names.extend(b.header_field.iter().cloned()),
            Middleware::ForwardAuth(f) => names.extend(f.auth_response_headers.iter().cloned()),
            _ => {}
        }
    }
    names
}
