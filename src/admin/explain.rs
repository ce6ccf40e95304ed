//! `POST /api/explain`: decide one described request as the live router would, and say why —
//! the same `Decision` and explain trace as `switchyard replay --explain` and the REPL.
//!
//! Invariants: the request is decided on a fresh build of the live table's own inputs
//! (`Control::fresh_build`), never on the live table, so an explain moves no balancer, limiter
//! or health state; nothing is sent anywhere (a dry run); a body that does not describe a
//! request is a 400 saying what is wrong.

use serde::Deserialize;
use serde_json::{json, Value};

use super::AdminState;
use crate::recording::format::parse_adhoc;
use crate::recording::format::RecordedRequest;
use crate::replay::report::{decision_text, explain_text};

/// What a client may send: `{"request": "GET http://host/path H:Name=value"}` (the REPL's
/// form) or the same as fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainBody {
    request: Option<String>,
    method: Option<String>,
    url: Option<String>,
    #[serde(default)]
    headers: Headers,
    client: Option<String>,
    entrypoint: Option<String>,
}

/// `{"X-User": "alice"}` or `[["X-User", "alice"], …]` (repeats allowed).
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum Headers {
    #[default]
    None,
    Map(std::collections::BTreeMap<String, String>),
    List(Vec<(String, String)>),
}

const SHAPE: &str = "expected {\"method\": \"GET\", \"url\": \"http://host/path\", \"headers\": \
                     {\"Name\": \"value\"}, \"client\": \"10.0.0.1\", \"entrypoint\": \"web\"} \
                     or {\"request\": \"GET http://host/path H:Name=value\"}";

/// The body as a request to decide, or what is wrong with it.
pub fn parse(body: &[u8]) -> Result<RecordedRequest, String> {
    let b: ExplainBody =
        serde_json::from_slice(body).map_err(|e| format!("bad body: {e} ({SHAPE})"))?;
    let mut req = match (&b.request, &b.url) {
        (Some(line), None) => {
            if b.method.is_some() {
                return Err("give either \"request\" or \"method\"/\"url\", not both".into());
            }
            parse_adhoc(line.trim())?
        }
        (None, Some(url)) => {
            let method = b.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
            if method.is_empty() || !method.bytes().all(|c| c.is_ascii_alphabetic()) {
                return Err(format!(
                    "\"method\" {method:?} is not a method (GET, POST, …)"
                ));
            }
            if url.split_whitespace().count() != 1 {
                return Err(format!("\"url\" {url:?} is not one URL"));
            }
            parse_adhoc(&format!("{method} {url}"))?
        }
        (Some(_), Some(_)) => {
            return Err("give either \"request\" or \"url\", not both".into());
        }
        (None, None) => return Err(format!("no request: {SHAPE}")),
    };
    let headers = match b.headers {
        Headers::None => Vec::new(),
        Headers::Map(m) => m.into_iter().collect(),
        Headers::List(l) => l,
    };
    for (name, value) in headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!("{name:?} is not a header name"));
        }
        if http::HeaderValue::from_str(&value).is_err() {
            return Err(format!("the value of {name:?} is not a header value"));
        }
        if name.eq_ignore_ascii_case("host") {
            req.headers.retain(|(n, _)| !n.eq_ignore_ascii_case("host"));
        }
        req.headers.push((name, value));
    }
    if let Some(c) = b.client {
        let addr = c
            .parse::<std::net::SocketAddr>()
            .or_else(|_| {
                c.parse::<std::net::IpAddr>()
                    .map(|ip| std::net::SocketAddr::new(ip, 0))
            })
            .map_err(|_| format!("\"client\" {c:?} is not an IP address"))?;
        req.client = addr.to_string();
    }
    if let Some(e) = b.entrypoint {
        req.entrypoint = e;
    }
    Ok(req)
}

/// Decides `req` on a fresh build of the live inputs: `{request, decision, summary, text,
/// trace}`, or the reason it cannot (no successful build yet, an entrypoint that does not
/// exist).
pub async fn explain(state: &AdminState, req: RecordedRequest) -> Result<Value, (u16, String)> {
    if !state.entrypoints.iter().any(|(n, _)| *n == req.entrypoint) {
        let names: Vec<&str> = state.entrypoints.iter().map(|(n, _)| n.as_str()).collect();
        return Err((
            400,
            format!(
                "no entrypoint {:?} (entrypoints: {})",
                req.entrypoint,
                names.join(", ")
            ),
        ));
    }
    let control = state.control.clone();
    let built = tokio::task::spawn_blocking(move || control.fresh_build())
        .await
        .map_err(|e| (500, format!("explain build failed: {e}")))?;
    let built = match built {
        None => return Err((503, "no successful build yet: nothing to explain".into())),
        Some(Err(errors)) => {
            let first = errors.first().map(ToString::to_string).unwrap_or_default();
            return Err((500, format!("rebuilding the live scripts failed: {first}")));
        }
        Some(Ok(b)) => b,
    };
    let table = std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(built.table));
    let proxy = crate::proxy::Proxy::new(
        table,
        state.settings.clone(),
        std::sync::Arc::new(crate::middleware::store::Store::new()),
    );
    let dry = req.to_dry(None).map_err(|e| (400, e))?;
    let decision = proxy.dry_run(dry).await;
    Ok(json!({
        "request": req.line(),
        "summary": decision.summary(),
        "status": decision.status(),
        "trace": explain_text(&decision),
        "text": decision_text(&decision, true),
        "decision": decision,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_describe_the_same_request() {
        let a = parse(br#"{"request": "GET http://api.x.com/v1?a=1 H:X-User=alice C:10.0.0.1"}"#)
            .unwrap();
        let b = parse(
            br#"{"url": "http://api.x.com/v1?a=1", "headers": {"X-User": "alice"}, "client": "10.0.0.1"}"#,
        )
        .unwrap();
        for r in [&a, &b] {
            assert_eq!(r.line(), "GET api.x.com/v1?a=1");
            assert_eq!(r.header("x-user"), Some("alice"));
            assert_eq!(r.client, "10.0.0.1:0");
            assert_eq!(r.entrypoint, "web");
        }
        let c = parse(br#"{"method": "post", "url": "http://a/", "headers": [["x", "1"], ["x", "2"]], "entrypoint": "admin"}"#).unwrap();
        assert_eq!(
            (c.method.as_str(), c.entrypoint.as_str()),
            ("POST", "admin")
        );
        assert_eq!(c.headers.iter().filter(|(n, _)| n == "x").count(), 2);
    }

    #[test]
    fn malformed_bodies_say_what_is_wrong() {
        for (body, says) in [
            (&b"not json"[..], "bad body"),
            (br#"{}"#, "no request"),
            (br#"{"url": "/relative"}"#, "not an absolute URL"),
            (br#"{"url": "http://a/ b"}"#, "not one URL"),
            (
                br#"{"url": "http://a/", "request": "GET http://a/"}"#,
                "not both",
            ),
            (
                br#"{"url": "http://a/", "client": "nope"}"#,
                "not an IP address",
            ),
            (
                br#"{"url": "http://a/", "headers": {"bad name": "v"}}"#,
                "not a header name",
            ),
            (
                br#"{"url": "http://a/", "method": "G E T"}"#,
                "not a method",
            ),
            (br#"{"url": "http://a/", "colour": "red"}"#, "unknown field"),
        ] {
            let e = parse(body).unwrap_err();
            assert!(e.contains(says), "{}: {e}", String::from_utf8_lossy(body));
        }
    }
}
