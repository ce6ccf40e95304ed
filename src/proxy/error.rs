//! The one place where a failed request becomes a response.
//!
//! Owns `ProxyError` (which side failed and why) and its mapping to status codes: no route 404,
//! no server 503, refused or reset upstream 502, timeouts 504, bad requests 400, `CONNECT` 405,
//! failing script hooks 500, open circuit breaker 503, request body over a buffering limit 413,
//! response over one 500, unreachable forward-auth server 500. Bodies are short plain text and never carry internals (addresses,
//! script messages); the details go to the log instead.

use bytes::Bytes;
use http::{header, Response, StatusCode};

#[cfg(test)]
use super::body::BodyKind;
use super::body::ProxyBody;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches")]
    NoRoute,
    #[error("service {service:?} has no server available")]
    NoServer { service: String },
    #[error("upstream {server} failed: {reason}")]
    Upstream { server: String, reason: String },
    #[error("upstream {server} timed out ({phase})")]
    UpstreamTimeout { server: String, phase: &'static str },
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("method CONNECT is not allowed")]
    ConnectNotAllowed,
    #[error("script hook failed in route {route:?}: {message}")]
    Hook { route: String, message: String },
    #[error("circuit breaker of route {route:?} is open")]
    CircuitOpen { route: String },
    #[error("request body larger than {limit} bytes")]
    RequestTooLarge { limit: u64 },
    #[error("response of {server} larger than {limit} bytes")]
    ResponseTooLarge { server: String, limit: u64 },
    #[error("forward auth {address} failed: {reason}")]
    AuthServer { address: String, reason: String },
    #[error("reading the request body failed: {0}")]
    RequestBody(String),
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
            ProxyError::Hook { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::CircuitOpen { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::RequestTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::ResponseTooLarge { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::AuthServer { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::RequestBody(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The client-facing answer: status and a short text, nothing internal.
    pub fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
        let text = match &self {
            ProxyError::NoRoute => "404 page not found\n",
            ProxyError::BadRequest(why) => {
                return plain(status, format!("400 Bad Request: {why}\n"));
            }
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
            reason: "connection refused".into(),
        };
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        let resp = e.into_response();
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        let BodyKind::Full(Some(b)) = &resp.body().kind else {
            panic!("full body expected")
        };
        assert_eq!(&b[..], b"502 Bad Gateway\n");
        assert_eq!(ProxyError::NoRoute.status(), StatusCode::NOT_FOUND);
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
