//! The admin listener: a small read-only JSON API beside the proxy (default 127.0.0.1:8081).
//!
//! Owns `GET /api/routes` (the live table, same shape as `check --format json`), live recording
//! (`GET /api/record`, `POST /api/record/start` with an optional `{"file", "scope"}` body,
//! `POST /api/record/stop`: the one thing the API switches, and never routing state),
//! `GET /api/scripts` (the latest build: time, ok, errors with file:line:col), `GET /api/version`
//! and `GET /ping`. Must never: change routing state, or share a port with an entrypoint.
//! `GET /metrics` is Prometheus' text format, rendered by `crate::metrics`.

use std::convert::Infallible;
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

use crate::control::BuildStatus;
use crate::replay::recorder::{Recorder, Scope};
use crate::routing::{RouteTable, TableInfo};

#[derive(Clone)]
pub struct AdminState {
    pub table: Arc<ArcSwap<RouteTable>>,
    pub status: watch::Receiver<BuildStatus>,
    pub started: std::time::Instant,
    pub recorder: Arc<Recorder>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Serves the admin API until `shutdown` turns true.
pub async fn serve(listener: TcpListener, state: AdminState, mut shutdown: watch::Receiver<bool>) {
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
                async move {
                    if req.uri().path().starts_with("/api/record") {
                        return Ok::<_, Infallible>(record(&state, req).await);
                    }
                    Ok::<_, Infallible>(answer(&state, &req))
                }
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

fn answer(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed\n");
    }
    match req.uri().path() {
        "/ping" => text(StatusCode::OK, "OK\n"),
        "/metrics" => crate::metrics::response(&state.metrics, &state.table.load()),
        "/api/routes" => json(&TableInfo::of(&state.table.load())),
        "/api/scripts" => json(&*state.status.borrow()),
        "/api/version" => json(&serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "commit": env!("SWITCHYARD_GIT_COMMIT"),
            "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
            "uptime_seconds": state.started.elapsed().as_secs(),
        })),
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
        "/api/record" | "/api/record/start" | "/api/record/stop" => {
            text(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed\n")
        }
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
