//! The recording format: one JSON object per line (`RecordedRequest`), what `run --record`
//! writes and `replay`, `repl` and `test` read; and HAR import (browser devtools exports).
//!
//! Invariants: reading never fails as a whole — a malformed or truncated line becomes a
//! `LineError` with its 1-based line number and the rest still loads; fields added later get
//! serde defaults, so old recordings keep loading.
//!
//! Also owns `DryRequest`, the request a dry run (`proxy::dry`) decides: a recorded, typed-in
//! (`parse_adhoc`) or HAR request becomes one with `RecordedRequest::to_dry`.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::{Deserialize, Serialize};

/// One request to decide (the input of `Proxy::dry_run`).
#[derive(Debug, Clone)]
pub struct DryRequest {
    pub entrypoint: String,
    pub method: Method,
    /// Origin form (`/path?query`) or absolute form (`http://host/path`).
    pub uri: String,
    /// As the client sent them, `Host` included.
    pub headers: HeaderMap,
    pub client: SocketAddr,
    /// When it happens, for rate limits and breakers; `None` is now.
    pub at: Option<Instant>,
}

/// What replaces a redacted header's value.
pub const REDACTED: &str = "<redacted>";

/// One recorded request and what the live router did with it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecordedRequest {
    /// Sequence number within the recording (1-based); 0 when unknown.
    #[serde(default)]
    pub id: u64,
    /// RFC 3339 with milliseconds, UTC.
    pub time: String,
    #[serde(default = "default_entrypoint")]
    pub entrypoint: String,
    /// `ip:port` of the client.
    #[serde(default = "default_client")]
    pub client: String,
    pub method: String,
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// The host the router matched on (lowercase, no port).
    pub host: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// In arrival order; duplicates kept; `Host` included.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Base64 of the first bytes of the body, when body recording is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub body_truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<RecordedOutcome>,
}

/// What the live router did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct RecordedOutcome {
    #[serde(default)]
    pub route: Option<String>,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub server: Option<String>,
    pub status: u16,
    /// Path and query as sent to the server (after rewrites), when forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_path: Option<String>,
    /// Until the response head was ready, in milliseconds.
    #[serde(default)]
    pub duration_ms: f64,
}

fn default_entrypoint() -> String {
    "web".to_string()
}
fn default_client() -> String {
    "127.0.0.1:0".to_string()
}
fn default_scheme() -> String {
    "http".to_string()
}

/// A line that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// A loaded recording: the requests that parsed and the lines that did not.
#[derive(Debug, Default)]
pub struct Recording {
    pub requests: Vec<RecordedRequest>,
    pub errors: Vec<LineError>,
}

impl RecordedRequest {
    /// `path?query` as the client sent it.
    pub fn target(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }

    /// `GET api.x.com/v1/users?x=1`
    pub fn line(&self) -> String {
        format!("{} {}{}", self.method, self.host, self.target())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn system_time(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339_weak(&self.time).ok()
    }

    /// The request as a dry run takes it. `Host` is added from `host` when the recording has
    /// none; unreadable header names or values are reported, not dropped silently.
    pub fn to_dry(&self, at: Option<Instant>) -> Result<DryRequest, String> {
        let method = Method::from_bytes(self.method.as_bytes())
            .map_err(|_| format!("invalid method {:?}", self.method))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("invalid header name {name:?}"))?;
            let v = HeaderValue::from_str(value)
                .map_err(|_| format!("invalid value for header {name}"))?;
            headers.append(n, v);
        }
        if !headers.contains_key(http::header::HOST) && !self.host.is_empty() {
            let v = HeaderValue::from_str(&self.host)
                .map_err(|_| format!("invalid host {:?}", self.host))?;
            headers.insert(http::header::HOST, v);
        }
        let client: SocketAddr = self
            .client
            .parse()
            .or_else(|_| {
                self.client
                    .parse::<std::net::IpAddr>()
                    .map(|ip| SocketAddr::new(ip, 0))
            })
            .map_err(|_| format!("invalid client address {:?}", self.client))?;
        Ok(DryRequest {
            entrypoint: self.entrypoint.clone(),
            method,
            uri: self.target(),
            headers,
            client,
            at,
        })
    }
}

/// Maps recorded wall-clock times onto `Instant`s, keeping the gaps between requests (so rate
/// limits replay as they happened): the first request is `base`.
#[derive(Debug)]
pub struct Clock {
    base: Instant,
    first: Option<SystemTime>,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            base: Instant::now(),
            first: None,
        }
    }

    pub fn at(&mut self, req: &RecordedRequest) -> Instant {
        let Some(t) = req.system_time() else {
            return self.base;
        };
        let first = *self.first.get_or_insert(t);
        let gap = t.duration_since(first).unwrap_or(Duration::ZERO);
        self.base.checked_add(gap).unwrap_or(self.base)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Reads a recording: JSON lines, or a HAR file (a JSON object with a `log` member).
pub fn parse(text: &str) -> Recording {
    if text.trim_start().starts_with('{') && looks_like_har(text) {
        return parse_har(text);
    }
    let mut rec = Recording::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<RecordedRequest>(line) {
            Ok(mut r) => {
                if r.id == 0 {
                    r.id = (rec.requests.len() + 1) as u64;
                }
                rec.requests.push(r);
            }
            Err(e) => rec.errors.push(LineError {
                line: i + 1,
                message: line_message(&e),
            }),
        }
    }
    rec
}

/// serde's message without its "at line 1 column N" (every record is one line): the column
/// is kept, the line is the recording's.
fn line_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let message = text
        .rsplit_once(" at line ")
        .map_or(text.as_str(), |(m, _)| m);
    if e.is_eof() {
        format!("truncated record ({message})")
    } else {
        format!("{message} (column {})", e.column())
    }
}

/// Reads a recording file (JSON lines or HAR).
pub fn load(path: &std::path::Path) -> anyhow::Result<Recording> {
    use anyhow::Context as _;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read recording {}", path.display()))?;
    Ok(parse(&text))
}

fn looks_like_har(text: &str) -> bool {
    // A JSON-lines recording's first line is a complete object without a `log` member.
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => v.get("log").is_some(),
        Err(_) => false,
    }
}

#[derive(Deserialize)]
struct Har {
    log: HarLog,
}
#[derive(Deserialize)]
struct HarLog {
    #[serde(default)]
    entries: Vec<serde_json::Value>,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HarEntry {
    #[serde(default)]
    started_date_time: String,
    request: HarRequest,
    #[serde(default)]
    response: Option<HarResponse>,
    #[serde(default)]
    time: Option<f64>,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HarRequest {
    method: String,
    url: String,
    #[serde(default)]
    headers: Vec<HarHeader>,
    #[serde(default)]
    post_data: Option<HarPostData>,
}
#[derive(Deserialize)]
struct HarHeader {
    name: String,
    value: String,
}
#[derive(Deserialize)]
struct HarPostData {
    #[serde(default)]
    text: Option<String>,
}
#[derive(Deserialize)]
struct HarResponse {
    #[serde(default)]
    status: u16,
}

/// HAR entries become recorded requests (entrypoint `web`, client unknown). Entries that cannot
/// be read are reported by their position (`entry N`) as the line number.
fn parse_har(text: &str) -> Recording {
    let mut rec = Recording::default();
    let har: Har = match serde_json::from_str(text) {
        Ok(h) => h,
        Err(e) => {
            rec.errors.push(LineError {
                line: e.line(),
                message: format!("not a HAR file: {e}"),
            });
            return rec;
        }
    };
    for (i, entry) in har.log.entries.into_iter().enumerate() {
        match har_entry(entry, rec.requests.len() as u64 + 1) {
            Ok(r) => rec.requests.push(r),
            Err(message) => rec.errors.push(LineError {
                line: i + 1,
                message: format!("HAR entry {}: {message}", i + 1),
            }),
        }
    }
    rec
}

fn har_entry(value: serde_json::Value, id: u64) -> Result<RecordedRequest, String> {
    use base64::Engine as _;
    let e: HarEntry = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let uri: http::Uri = e
        .request
        .url
        .parse()
        .map_err(|_| format!("invalid url {:?}", e.request.url))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("url {:?} has no host", e.request.url))?
        .to_ascii_lowercase();
    let mut headers: Vec<(String, String)> = e
        .request
        .headers
        .into_iter()
        // HTTP/2 pseudo-headers (`:authority`) are not headers an HTTP/1.1 router sees.
        .filter(|h| !h.name.starts_with(':'))
        .map(|h| (h.name.to_ascii_lowercase(), h.value))
        .collect();
    if !headers.iter().any(|(n, _)| n == "host") {
        let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
        headers.insert(0, ("host".to_string(), authority));
    }
    let body = e
        .request
        .post_data
        .and_then(|p| p.text)
        .filter(|t| !t.is_empty())
        .map(|t| base64::engine::general_purpose::STANDARD.encode(t));
    Ok(RecordedRequest {
        id,
        time: e.started_date_time,
        entrypoint: default_entrypoint(),
        client: default_client(),
        method: e.request.method,
        scheme: uri.scheme_str().unwrap_or("http").to_string(),
        host,
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers,
        body,
        body_truncated: false,
        outcome: e.response.map(|r| RecordedOutcome {
            status: r.status,
            duration_ms: e.time.unwrap_or(0.0),
            ..Default::default()
        }),
    })
}

/// Splits on whitespace, keeping double-quoted stretches (`H:User-Agent="curl 8"`) whole.
pub(crate) fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut started = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    out.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            c => {
                cur.push(c);
                started = true;
            }
        }
    }
    if quoted {
        return Err("unclosed \"".to_string());
    }
    if started {
        out.push(cur);
    }
    Ok(out)
}

/// A typed request: `METHOD URL [H:Name=Value]… [C:ADDR] [E:ENTRYPOINT] [B:TEXT]`. The URL is
/// absolute; its authority becomes the `Host` header. Ids are given by the caller.
pub fn parse_adhoc(line: &str) -> Result<RecordedRequest, String> {
    use base64::Engine as _;
    let words = words(line)?;
    let mut it = words.into_iter();
    let method = it.next().ok_or("a request starts with a method")?;
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("{method:?} is not a method (GET, POST, …)"));
    }
    let url = it
        .next()
        .ok_or("the method needs a URL: GET http://host/path")?;
    let uri: http::Uri = url.parse().map_err(|_| format!("invalid URL {url:?}"))?;
    let (Some(scheme), Some(authority), Some(host)) =
        (uri.scheme_str(), uri.authority(), uri.host())
    else {
        return Err(format!("{url:?} is not an absolute URL (http://host/path)"));
    };
    let mut req = RecordedRequest {
        id: 0,
        time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        entrypoint: "web".to_string(),
        client: "127.0.0.1:0".to_string(),
        method: method.clone(),
        scheme: scheme.to_string(),
        host: host.to_ascii_lowercase(),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers: vec![("host".to_string(), authority.to_string())],
        body: None,
        body_truncated: false,
        outcome: None,
    };
    for word in it {
        if let Some(h) = word.strip_prefix("H:") {
            let (name, value) = h
                .split_once('=')
                .ok_or_else(|| format!("{word:?}: a header is H:Name=Value"))?;
            if name.is_empty() {
                return Err(format!("{word:?}: the header has no name"));
            }
            if name.eq_ignore_ascii_case("host") {
                req.headers.retain(|(n, _)| !n.eq_ignore_ascii_case("host"));
            }
            req.headers.push((name.to_string(), value.to_string()));
        } else if let Some(c) = word.strip_prefix("C:") {
            let addr: std::net::SocketAddr = c
                .parse()
                .or_else(|_| {
                    c.parse::<std::net::IpAddr>()
                        .map(|ip| std::net::SocketAddr::new(ip, 0))
                })
                .map_err(|_| format!("{word:?}: the client is C:IP or C:IP:PORT"))?;
            req.client = addr.to_string();
        } else if let Some(e) = word.strip_prefix("E:") {
            req.entrypoint = e.to_string();
        } else if let Some(b) = word.strip_prefix("B:") {
            req.body = Some(base64::engine::general_purpose::STANDARD.encode(b));
        } else {
            return Err(format!(
                "unexpected {word:?}: headers are H:Name=Value, the client C:ADDR, the \
                 entrypoint E:NAME, the body B:TEXT"
            ));
        }
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_are_reported_and_skipped() {
        let text = concat!(
            r#"{"time":"2026-12-03T07:00:00.000Z","method":"GET","host":"a.com","path":"/x","headers":[["host","a.com"]]}"#,
            "\n",
            "not json\n",
            "\n",
            r#"{"time":"2026-12-03T07:00:01.000Z","method":"GET","host":"b.com","path":"/y","query":"q=1"}"#,
            "\n",
            r#"{"time":"2026-12-03T07:00:02.000Z","method":"GET","ho"#,
        );
        let rec = parse(text);
        assert_eq!(rec.requests.len(), 2);
        assert_eq!(rec.requests[1].target(), "/y?q=1");
        assert_eq!(rec.requests[1].id, 2);
        let lines: Vec<usize> = rec.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 5]);
    }

    #[test]
    fn clock_keeps_gaps() {
        let rec = parse(concat!(
            r#"{"time":"2026-12-03T07:00:00.000Z","method":"GET","host":"a","path":"/"}"#,
            "\n",
            r#"{"time":"2026-12-03T07:00:02.500Z","method":"GET","host":"a","path":"/"}"#,
        ));
        let mut clock = Clock::new();
        let a = clock.at(&rec.requests[0]);
        let b = clock.at(&rec.requests[1]);
        assert_eq!(b - a, Duration::from_millis(2500));
    }

    #[test]
    fn har_entries_import() {
        let har = r#"{"log":{"version":"1.2","entries":[
          {"startedDateTime":"2026-12-03T07:00:00.000Z","time":12.5,
           "request":{"method":"POST","url":"https://api.x.com/v1/users?page=2",
             "headers":[{"name":":authority","value":"api.x.com"},{"name":"Content-Type","value":"application/json"}],
             "postData":{"mimeType":"application/json","text":"{}"}},
           "response":{"status":201}},
          {"startedDateTime":"x","request":{"method":"GET","url":"/relative"}}
        ]}}"#;
        let rec = parse(har);
        assert_eq!(rec.requests.len(), 1, "{:?}", rec.errors);
        let r = &rec.requests[0];
        assert_eq!(r.host, "api.x.com");
        assert_eq!(r.scheme, "https");
        assert_eq!(r.target(), "/v1/users?page=2");
        assert_eq!(r.header("host"), Some("api.x.com"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.outcome.as_ref().map(|o| o.status), Some(201));
        assert_eq!(rec.errors.len(), 1);
        assert_eq!(rec.errors[0].line, 2);
    }
}
