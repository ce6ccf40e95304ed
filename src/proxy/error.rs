//! The one place where a failed request becomes a response.
//!
//! Owns `ProxyError` (which side failed and why) and its mapping to status codes: no route 404,
//! no server 503, refused or reset upstream 502, timeouts 504, bad requests 400, `CONNECT` 405,
//! failing script hooks 500, open circuit breaker 503, request body over a buffering limit 413,
//! response over one 500, unreachable forward-auth server 500, a malformed or cut client body 400, a stalled one 408.
//! Each error also says whose fault it is (`Side`): only upstream faults count against a server.
//! A gRPC client (`content-type: application/grpc…`) gets the same error as a gRPC status
//! instead (`into_grpc_response`: HTTP 200, `content-type: application/grpc`, `grpc-status` and
//! `grpc-message` in the head — a "trailers-only" response), never a text page it cannot read.
//! Causes are kept typed (`source`), never flattened into strings. Bodies are short plain text
//! and never carry internals (addresses, script messages); the details go to the log instead.

use bytes::Bytes;
use http::{header, Response, StatusCode};

#[cfg(test)]
use super::body::BodyKind;
use super::body::ProxyBody;

/// A cause carried along for the log (never shown to the client).
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Whose fault a failed request is. Only `Upstream` failures count against a server (passive
/// health, circuit breakers, `switchyard_upstream_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something unusable (malformed head or body, went away, asked for too much).
    Client,
    /// The router's own configuration or scripts failed.
    Router,
    /// A server, the pool of servers, or an auth server failed.
    Upstream,
}

/// `: cause: its cause …` for an error's source chain (empty when there is none).
fn causes(source: &Option<Cause>) -> String {
    let mut out = String::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = source
        .as_deref()
        .map(|e| e as &(dyn std::error::Error + 'static));
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches")]
    NoRoute,
    #[error("service {service:?} has no server available")]
    NoServer { service: String },
    /// A server failed: `what` says at which step, `source` is the cause chain.
    #[error("upstream {server} failed: {what}{}", causes(.source))]
    Upstream {
        server: String,
        what: &'static str,
        source: Option<Cause>,
    },
    #[error("upstream {server} timed out ({phase})")]
    UpstreamTimeout { server: String, phase: &'static str },
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("method CONNECT is not allowed")]
    ConnectNotAllowed,
    /// The Host names another site than the TLS handshake's SNI where that matters (client
    /// certificates were checked for the SNI name): domain fronting.
    #[error("host {host:?} does not match the TLS server name {sni:?}")]
    Misdirected { host: String, sni: String },
    #[error("script hook failed in route {route:?}: {message}")]
    Hook { route: String, message: String },
    #[error("circuit breaker of route {route:?} is open")]
    CircuitOpen { route: String },
    #[error("request body larger than {limit} bytes")]
    RequestTooLarge { limit: u64 },
    #[error("response of {server} larger than {limit} bytes")]
    ResponseTooLarge { server: String, limit: u64 },
    #[error("forward auth {address} failed: {what}{}", causes(.source))]
    AuthServer {
        address: String,
        what: &'static str,
        source: Option<Cause>,
    },
    /// The client's request body failed while it was read or streamed to a server (a malformed
    /// chunk, a body shorter than announced, the client gone).
    #[error("reading the request body failed{}", causes(.source))]
    ClientBody { source: Option<Cause> },
    /// The client stopped sending its request body for the response timeout.
    #[error("the client's request body stalled")]
    ClientTimeout,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoServer { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::ConnectNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::Misdirected { .. } => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::Hook { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::CircuitOpen { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::RequestTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::ResponseTooLarge { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::AuthServer { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::ClientBody { .. } => StatusCode::BAD_REQUEST,
            ProxyError::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// Whose fault it is.
    pub fn side(&self) -> Side {
        match self {
            ProxyError::NoRoute
            | ProxyError::BadRequest(_)
            | ProxyError::ConnectNotAllowed
            | ProxyError::Misdirected { .. }
            | ProxyError::RequestTooLarge { .. }
            | ProxyError::ClientBody { .. }
            | ProxyError::ClientTimeout => Side::Client,
            ProxyError::Hook { .. } => Side::Router,
            ProxyError::NoServer { .. }
            | ProxyError::Upstream { .. }
            | ProxyError::UpstreamTimeout { .. }
            | ProxyError::CircuitOpen { .. }
            | ProxyError::ResponseTooLarge { .. }
            | ProxyError::AuthServer { .. } => Side::Upstream,
        }
    }

    /// The answer to a gRPC client: HTTP 200 with the gRPC status in the headers (a
    /// "trailers-only" response), so gRPC clients see a gRPC error rather than an HTML page:
    /// DEADLINE_EXCEEDED (4) for timeouts, UNAVAILABLE (14) for servers that failed or are
    /// missing, UNIMPLEMENTED (12) with no route, INVALID_ARGUMENT (3) for bad requests,
    /// RESOURCE_EXHAUSTED (8) for limits, INTERNAL (13) otherwise.
    pub fn into_grpc_response(self) -> Response<ProxyBody> {
        let code = match &self {
            ProxyError::UpstreamTimeout { .. } | ProxyError::ClientTimeout => 4,
            ProxyError::NoServer { .. }
            | ProxyError::Upstream { .. }
            | ProxyError::CircuitOpen { .. } => 14,
            ProxyError::NoRoute => 12,
            ProxyError::BadRequest(_)
            | ProxyError::ConnectNotAllowed
            | ProxyError::Misdirected { .. }
            | ProxyError::ClientBody { .. } => 3,
            ProxyError::RequestTooLarge { .. } | ProxyError::ResponseTooLarge { .. } => 8,
            ProxyError::Hook { .. } | ProxyError::AuthServer { .. } => 13,
        };
        let reason = self.status().canonical_reason().unwrap_or("error");
        let mut resp = plain(StatusCode::OK, String::new());
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", http::HeaderValue::from(code));
        if let Ok(v) = http::HeaderValue::from_str(&format!("switchyard: {reason}")) {
            h.insert("grpc-message", v);
        }
        resp
    }

    /// The client-facing answer: status and a short text, nothing internal.
    pub fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
        let text = match &self {
            ProxyError::NoRoute => "404 page not found\n",
            ProxyError::BadRequest(why) => {
                return plain(status, format!("400 Bad Request: {why}\n"));
            }
            ProxyError::ClientBody { .. } => "400 Bad Request: malformed or incomplete body\n",
            _ => "",
        };
        if text.is_empty() {
            let reason = status.canonical_reason().unwrap_or("Error");
            return plain(status, format!("{} {reason}\n", status.as_u16()));
        }
        plain(status, text.to_string())
    }
}

/// A small plain-text response.
pub fn plain(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::METHOD_NOT_ALLOWED {
        resp.headers_mut().insert(
            header::ALLOW,
            http::HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_no_internals() {
        let e = ProxyError::Upstream {
            server: "10.0.0.1:80".into(),
            what: "connect",
            source: Some(Box::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "connection refused",
            ))),
        };
        assert_eq!(
            e.to_string(),
            "upstream 10.0.0.1:80 failed: connect: connection refused"
        );
        assert_eq!(e.side(), Side::Upstream);
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        let resp = e.into_response();
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        let BodyKind::Full(Some(b)) = &resp.body().kind else {
            panic!("full body expected")
        };
        assert_eq!(&b[..], b"502 Bad Gateway\n");
        assert_eq!(ProxyError::NoRoute.status(), StatusCode::NOT_FOUND);
        let grpc = |e: ProxyError| {
            let r = e.into_grpc_response();
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.headers()["content-type"], "application/grpc");
            assert!(r.body().is_end_stream());
            let h = r.headers();
            (
                h["grpc-status"].to_str().unwrap().to_string(),
                h["grpc-message"].to_str().unwrap().to_string(),
            )
        };
        use http_body::Body as _;
        let tls = ProxyError::Upstream {
            server: "10.0.0.1:443".into(),
            what: "connect",
            source: None,
        };
        assert_eq!(grpc(tls), ("14".into(), "switchyard: Bad Gateway".into()));
        let late = ProxyError::UpstreamTimeout {
            server: "10.0.0.1:443".into(),
            phase: "response header",
        };
        assert_eq!(grpc(late).0, "4");
        assert_eq!(grpc(ProxyError::NoRoute).0, "12");
        let none = ProxyError::NoServer {
            service: "s".into(),
        };
        assert_eq!(grpc(none).0, "14");
        assert_eq!(
            ProxyError::UpstreamTimeout {
                server: String::new(),
                phase: "connect"
            }
            .status(),
            StatusCode::GATEWAY_TIMEOUT
        );
    }
}
