//! The admin listener beside the proxy (default 127.0.0.1:8081): the JSON API the dashboard
//! reads, the dashboard itself (`dashboard.rs`, at `/dashboard/`), live recording control, and
//! `/ping`.
//!
//! Owns the routing of admin requests and their auth (optional basic auth, `--admin.users`;
//! `/ping` stays open for health checks). The views are in `api.rs` (overview, routes,
//! services, middlewares, entrypoints, scripts, catalog), the live explain in `explain.rs`;
//! recording is `GET /api/record`, `POST /api/record/start` with an optional `{"file",
//! "scope"}` body and `POST /api/record/stop` — the one thing the API switches, never routing
//! state. `GET /metrics` is Prometheus' text format, rendered by `crate::metrics`. Must never:
//! change routing state, or share a port with an entrypoint.

pub mod api;
pub mod dashboard;
pub mod explain;
pub mod l4;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::debug;

use crate::control::{BuildStatus, Control};
use crate::middleware::auth::BasicAuth;
use crate::recording::recorder::{Recorder, Scope};
use crate::table::RouteTable;

#[derive(Clone)]
pub struct AdminState {
    pub table: Arc<ArcSwap<RouteTable>>,
    pub status: watch::Receiver<BuildStatus>,
    pub started: std::time::Instant,
    pub recorder: Arc<Recorder>,
    pub control: Arc<Control>,
    /// Entrypoint names and the addresses they listen on.
    pub entrypoints: Vec<(String, SocketAddr)>,
    /// The proxy settings, for explain's dry runs.
    pub settings: crate::proxy::Settings,
    /// `--admin.users`: when set, every request but `/ping` needs one of them.
    pub auth: Option<Arc<BasicAuth>>,
    /// Per-route request rates, sampled by `serve` every `api::RATE_EVERY`.
    pub rates: Arc<api::Rates>,
}

/// Serves the admin API until `shutdown` turns true.
pub async fn serve(listener: TcpListener, state: AdminState, mut shutdown: watch::Receiver<bool>) {
    let sampler = {
        let (rates, control) = (state.rates.clone(), state.control.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(api::RATE_EVERY);
            loop {
                tick.tick().await;
                rates.sample(control.metrics().route_counts());
            }
        })
    };
    let _stop_sampler = AbortOnDrop(sampler);
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a { Ok(x) => x, Err(_) => continue },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let state = state.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10));
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => if let Err(e) = res { debug!(error = %e, "admin connection error") },
                _ = shutdown.wait_for(|s| *s) => {}
            }
        });
    }
}

/// Aborts a task when the admin server returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Largest body `POST /api/explain` reads.
const EXPLAIN_BODY_LIMIT: usize = 64 * 1024;

async fn handle(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    if path != "/ping" {
        if let Some(auth) = &state.auth {
            if auth.authenticate(req.headers()).is_none() {
                let mut resp = text(StatusCode::UNAUTHORIZED, "401 unauthorized\n");
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, auth.challenge());
                return resp;
            }
        }
    }
    if path.starts_with("/api/record") {
        return record(state, req).await;
    }
    if path == "/api/explain/tcp" {
        if req.method() != Method::POST {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "405 method not allowed: POST a connection description\n",
            );
        }
        let body = match read_body(req, EXPLAIN_BODY_LIMIT).await {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        };
        return match l4::explain(state, &body) {
            Ok(v) => json(&v),
            Err(e) => error(StatusCode::BAD_REQUEST, e),
        };
    }
    if path == "/api/explain" {
        if req.method() != Method::POST {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "405 method not allowed: POST a request description\n",
            );
        }
        let body = match read_body(req, EXPLAIN_BODY_LIMIT).await {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        };
        let described = match explain::parse(&body) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        };
        return match explain::explain(state, described).await {
            Ok(v) => json(&v),
            Err((code, msg)) => error(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                msg,
            ),
        };
    }
    answer(state, &req)
}

async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, String> {
    use http_body_util::BodyExt;
    http_body_util::Limited::new(req.into_body(), limit)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| format!("cannot read body: {e}"))
}

/// `/api/routes/NAME` → `NAME`, percent-decoded (route names may hold `@`, `/` is `%2F`).
fn item<'a>(path: &'a str, prefix: &str) -> Option<String> {
    let rest: &'a str = path.strip_prefix(prefix)?;
    if rest.is_empty() {
        return None;
    }
    percent_decode(rest)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn answer(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed\n");
    }
    let path = req.uri().path();
    let query = req.uri().query();
    let list =
        |f: fn(&AdminState, &api::ListQuery) -> serde_json::Value| match api::ListQuery::parse(
            query,
        ) {
            Ok(q) => json(&f(state, &q)),
            Err(e) => error(StatusCode::BAD_REQUEST, e),
        };
    let found = |v: Option<serde_json::Value>, what: &str| match v {
        Some(v) => json(&v),
        None => error(StatusCode::NOT_FOUND, format!("no {what}")),
    };
    if let Some(page) = dashboard::asset(path) {
        return page;
    }
    match path {
        "/ping" => text(StatusCode::OK, "OK\n"),
        "/metrics" => crate::metrics::response(
            &state.control.metrics(),
            &state.table.load(),
            &api::tls_view(state),
        ),
        "/api/overview" => json(&api::overview(state)),
        "/api/routes" => list(api::route_list),
        "/api/services" => list(api::service_list),
        "/api/tcp/routes" => list(l4::tcp_routes),
        "/api/udp/routes" => list(l4::udp_routes),
        "/api/middlewares" => list(api::middleware_list),
        "/api/entrypoints" => list(api::entrypoint_list),
        "/api/catalog" => list(api::catalog),
        "/api/scripts" => json(&api::scripts(state)),
        "/api/certificates" => json(&api::certificates(state)),
        "/api/scripts/source" => match api::script_source(state, query) {
            Ok(v) => found(v, "such script file in the last build"),
            Err(e) => error(StatusCode::BAD_REQUEST, e),
        },
        "/api/version" => json(&serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "commit": env!("SWITCHYARD_GIT_COMMIT"),
            "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
            "uptime_seconds": state.started.elapsed().as_secs(),
        })),
        p if p.starts_with("/api/routes/") => match item(p, "/api/routes/") {
            Some(name) => found(api::route_detail(state, &name), &format!("route {name:?}")),
            None => error(StatusCode::BAD_REQUEST, "bad route name in the path".into()),
        },
        p if p.starts_with("/api/services/") => match item(p, "/api/services/") {
            Some(name) => found(
                api::service_detail(state, &name),
                &format!("service {name:?}"),
            ),
            None => error(
                StatusCode::BAD_REQUEST,
                "bad service name in the path".into(),
            ),
        },
        p if p.starts_with("/api/") => error(
            StatusCode::NOT_FOUND,
            format!("no API path {p} (see docs/admin.md for the list)"),
        ),
        _ => text(StatusCode::NOT_FOUND, "404 page not found\n"),
    }
}

/// Largest body `POST /api/record/start` reads.
const START_BODY_LIMIT: usize = 64 * 1024;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    file: Option<std::path::PathBuf>,
    scope: Option<Scope>,
}

/// `/api/record*`: status, start, stop.
async fn record(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let post = method == Method::POST;
    let get = method == Method::GET || method == Method::HEAD;
    match path.as_str() {
        "/api/record" if get => json(&state.recorder.status()),
        "/api/record/start" if post => {
            let body = match http_body_util::Limited::new(req.into_body(), START_BODY_LIMIT)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("cannot read body: {e}")),
            };
            let start = if body.iter().all(u8::is_ascii_whitespace) {
                StartBody {
                    file: None,
                    scope: None,
                }
            } else {
                match serde_json::from_slice::<StartBody>(&body) {
                    Ok(b) => b,
                    Err(e) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            format!("bad body: {e} (expected {{\"file\": \"...\", \"scope\": \"all|marked\"}})"),
                        )
                    }
                }
            };
            if start.file.is_none() && state.recorder.status().file.is_none() {
                return error(
                    StatusCode::BAD_REQUEST,
                    "no recording file configured: give {\"file\": \"...\"}".to_string(),
                );
            }
            let recorder = state.recorder.clone();
            let started =
                tokio::task::spawn_blocking(move || recorder.start(start.file, start.scope)).await;
            match started {
                Ok(Ok(status)) => json(&status),
                Ok(Err(msg)) => error(StatusCode::INTERNAL_SERVER_ERROR, msg),
                Err(_) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "recording start failed".to_string(),
                ),
            }
        }
        "/api/record/stop" if post => {
            let recorder = state.recorder.clone();
            match tokio::task::spawn_blocking(move || recorder.stop()).await {
                Ok(status) => json(&status),
                Err(_) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "recording stop failed".to_string(),
                ),
            }
        }
        "/api/record" | "/api/record/start" | "/api/record/stop" => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{path} takes {}",
                if path == "/api/record" {
                    "GET or POST"
                } else {
                    "POST"
                }
            ),
        ),
        p if p.starts_with("/api/") => error(
            StatusCode::NOT_FOUND,
            format!("no API path {p} (see docs/admin.md for the list)"),
        ),
        _ => text(StatusCode::NOT_FOUND, "404 page not found\n"),
    }
}

fn error(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    let mut resp = json(&serde_json::json!({ "error": message }));
    *resp.status_mut() = status;
    resp
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn json<T: serde::Serialize>(value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => {
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "500 cannot encode response\n",
        ),
    }
}
