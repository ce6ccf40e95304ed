//! Bytes on the wire: a raw-socket client that writes exact bytes in a chosen pattern and reads
//! back every response, and the small strict HTTP/1 parsers the raw backend and the client share.
//!
//! Every read and write is bounded by a tokio timeout; nothing here loops without a count or a
//! deadline.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long the client waits for the first final response.
pub const RESPONSE_WAIT: Duration = Duration::from_secs(5);

/// How the request bytes are handed to the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writes {
    /// One `write_all`.
    One,
    /// The first byte alone, a pause, then the rest (a limit must not depend on read sizes).
    FirstByteThenRest,
    /// Writes of this many bytes with a short pause between them.
    Chunks(usize),
    /// One write, then the write half is shut down (the client is gone mid-message).
    ThenHalfClose,
}

/// One response as the client read it.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Vec<u8>,
}

/// What the client got for one vector.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Interim (1xx other than 101) statuses, in order.
    pub interim: Vec<u16>,
    /// Final responses, in order (more than one when requests were pipelined).
    pub responses: Vec<Resp>,
    /// The server closed the connection (EOF) while we read.
    pub closed: bool,
    /// The connection was reset (or a write failed because it was).
    pub reset: bool,
    /// No final response within `RESPONSE_WAIT` and the connection still open.
    pub timed_out: bool,
    /// Bytes after the last response that do not parse as one.
    pub garbage: Vec<u8>,
    /// Could not connect at all.
    pub connect_failed: bool,
}

impl Outcome {
    /// The first final status, if any.
    pub fn status(&self) -> Option<u16> {
        self.responses.first().map(|r| r.status)
    }

    /// Closed or reset before any final response.
    pub fn closed_without_response(&self) -> bool {
        self.responses.is_empty() && (self.closed || self.reset)
    }

    /// A short text for tables: `403`, `100>401`, `403,200`, `close`, `reset`, `timeout`.
    pub fn summary(&self) -> String {
        if self.connect_failed {
            return "no-connect".into();
        }
        let mut parts: Vec<String> = Vec::new();
        if !self.interim.is_empty() {
            let i: Vec<String> = self.interim.iter().map(u16::to_string).collect();
            parts.push(format!("{}>", i.join(">")));
        }
        if self.responses.is_empty() {
            let what = if self.reset {
                "reset"
            } else if self.closed {
                "close"
            } else if self.timed_out {
                "timeout"
            } else {
                "none"
            };
            parts.push(what.into());
        } else {
            let s: Vec<String> = self
                .responses
                .iter()
                .map(|r| r.status.to_string())
                .collect();
            parts.push(s.join(","));
        }
        if !self.garbage.is_empty() {
            parts.push("+garbage".into());
        }
        parts.concat()
    }
}

/// Connects to `addr`, writes `bytes` as `writes` says, and reads every response until the
/// connection closes or `settle` has passed after the first final response (at most
/// `RESPONSE_WAIT` for that first one). The connection stays open during `settle`, so a request
/// the server parsed out of our bytes after the first one gets its chance to be forwarded.
pub async fn exchange(addr: SocketAddr, bytes: &[u8], writes: Writes, settle: Duration) -> Outcome {
    let mut out = Outcome::default();
    let mut s = match tokio::time::timeout(RESPONSE_WAIT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        _ => {
            out.connect_failed = true;
            return out;
        }
    };
    let _ = s.set_nodelay(true);
    let started = Instant::now();
    if let Err(e) = write_pattern(&mut s, bytes, writes).await {
        if e.kind() == std::io::ErrorKind::ConnectionReset
            || e.kind() == std::io::ErrorKind::BrokenPipe
        {
            out.reset = true;
        }
    }
    read_responses(&mut s, &mut out, started + RESPONSE_WAIT, settle).await;
    out
}

async fn write_pattern(s: &mut TcpStream, bytes: &[u8], writes: Writes) -> std::io::Result<()> {
    match writes {
        Writes::One => write_bounded(s, bytes).await,
        Writes::ThenHalfClose => {
            write_bounded(s, bytes).await?;
            s.shutdown().await
        }
        Writes::FirstByteThenRest => {
            let (first, rest) = bytes.split_at(1.min(bytes.len()));
            write_bounded(s, first).await?;
            tokio::time::sleep(Duration::from_millis(15)).await;
            write_bounded(s, rest).await
        }
        Writes::Chunks(n) => {
            for (i, chunk) in bytes.chunks(n.max(1)).enumerate() {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
                write_bounded(s, chunk).await?;
            }
            Ok(())
        }
    }
}

/// `write_all` with a deadline.
pub async fn write_bounded(s: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(RESPONSE_WAIT, s.write_all(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "write timed out",
        )),
    }
}

/// Reads responses into `out` until EOF, an error, `first_deadline` without a final response,
/// or `settle` after the first final response.
async fn read_responses(
    s: &mut TcpStream,
    out: &mut Outcome,
    first_deadline: Instant,
    settle: Duration,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut deadline = first_deadline;
    let mut settled_at: Option<Instant> = None;
    // Bounded: every pass either reads bytes or ends; 10 000 reads are far more than any vector.
    for _ in 0..10_000 {
        // Take every whole response out of the buffer.
        loop {
            match parse_response(&buf, false) {
                Parsed::Done(resp, used) => {
                    buf.drain(..used);
                    if (100..200).contains(&resp.status) && resp.status != 101 {
                        out.interim.push(resp.status);
                    } else {
                        out.responses.push(resp);
                        if settled_at.is_none() {
                            let at = Instant::now() + settle;
                            settled_at = Some(at);
                            deadline = at;
                        }
                    }
                }
                Parsed::Incomplete => break,
                Parsed::Bad(_) => {
                    out.garbage.extend_from_slice(&buf);
                    buf.clear();
                    break;
                }
            }
        }
        let n = match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => {
                if out.responses.is_empty() {
                    out.timed_out = true;
                }
                break;
            }
            Ok(Err(e)) => {
                let _ = e;
                out.reset = true;
                break;
            }
            Ok(Ok(0)) => {
                out.closed = true;
                break;
            }
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    // A response whose length was "until close".
    if !buf.is_empty() {
        match parse_response(&buf, out.closed || out.reset) {
            Parsed::Done(resp, _) => {
                if (100..200).contains(&resp.status) && resp.status != 101 {
                    out.interim.push(resp.status);
                } else {
                    out.responses.push(resp);
                }
            }
            _ => out.garbage.extend_from_slice(&buf),
        }
    }
    // Whatever happened, give the server side the whole settle time before anyone looks at the
    // backend's log.
    if let Some(at) = settled_at {
        tokio::time::sleep_until(at).await;
    } else {
        tokio::time::sleep(settle).await;
    }
}

/// Result of parsing one message from the front of a buffer.
pub enum Parsed<T> {
    Incomplete,
    /// The message and how many bytes it used.
    Done(T, usize),
    Bad(String),
}

/// Index just past the first CRLFCRLF.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// A message head split into its start line and header fields, with everything that is not
/// strictly RFC 9112 listed in `problems`.
#[derive(Debug, Clone, Default)]
pub struct Head {
    pub start: String,
    pub headers: Vec<(String, String)>,
    pub problems: Vec<String>,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses `head` (which ends with CRLFCRLF) strictly.
pub fn parse_head(head: &[u8]) -> Head {
    let mut h = Head::default();
    // Drop the empty line's CRLF: every line left ends with LF (the last piece is empty).
    let body = head.strip_suffix(b"\r\n").unwrap_or(head);
    let pieces: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
    let count = pieces.len().saturating_sub(1);
    let mut first = true;
    for line in pieces.into_iter().take(count) {
        let Some(line) = line.strip_suffix(b"\r") else {
            h.problems.push("bare LF line ending".into());
            continue;
        };
        if line.contains(&b'\r') {
            h.problems.push("bare CR inside a line".into());
        }
        if line.contains(&0) {
            h.problems.push("NUL byte".into());
        }
        let text = String::from_utf8_lossy(line).into_owned();
        if first {
            h.start = text;
            first = false;
            continue;
        }
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            h.problems.push(format!("obs-fold line {text:?}"));
            continue;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            h.problems
                .push(format!("header line without colon {text:?}"));
            continue;
        };
        let (name, value) = line.split_at(colon);
        if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
            h.problems.push(format!(
                "bad header name {:?}",
                String::from_utf8_lossy(name)
            ));
        }
        let value = value.get(1..).unwrap_or_default();
        let value = String::from_utf8_lossy(value)
            .trim_matches(|c| c == ' ' || c == '\t')
            .to_string();
        h.headers
            .push((String::from_utf8_lossy(name).into_owned(), value));
    }
    h
}

impl Head {
    pub fn values(&self, name: &str) -> Vec<&str> {
        values(&self.headers, name)
    }
}

/// The values of header `name` (any case) in a parsed header list, in order.
pub fn values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// How a request's body is delimited, as a strict server reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(usize),
    Chunked,
    /// No valid framing: read until the connection closes (and call the request unclean).
    UntilClose,
}

/// The framing of a request head; ambiguities go to `problems`.
pub fn request_framing(head: &Head, problems: &mut Vec<String>) -> Framing {
    let te = head.values("transfer-encoding");
    let cl = head.values("content-length");
    if !te.is_empty() {
        if !cl.is_empty() {
            problems.push("Content-Length together with Transfer-Encoding".into());
        }
        if te.len() > 1 {
            problems.push("more than one Transfer-Encoding header".into());
        }
        let codings: Vec<String> = te
            .iter()
            .flat_map(|v| v.split(','))
            .map(|c| c.trim().to_ascii_lowercase())
            .collect();
        if codings != ["chunked"] {
            problems.push(format!("Transfer-Encoding codings {codings:?}"));
        }
        if codings.last().map(String::as_str) == Some("chunked") {
            return Framing::Chunked;
        }
        return Framing::UntilClose;
    }
    if cl.is_empty() {
        return Framing::None;
    }
    if cl.len() > 1 {
        problems.push(format!("{} Content-Length headers", cl.len()));
    }
    let Some(first) = cl.first() else {
        return Framing::None;
    };
    let plain = !first.is_empty()
        && first.bytes().all(|b| b.is_ascii_digit())
        && (first.len() == 1 || !first.starts_with('0'));
    if !plain {
        problems.push(format!("Content-Length {first:?} is not one plain decimal"));
    }
    if cl.iter().any(|v| v != first) {
        problems.push("differing Content-Length values".into());
        return Framing::UntilClose;
    }
    match first.parse::<usize>() {
        Ok(n) if first.bytes().all(|b| b.is_ascii_digit()) && n <= 64 * 1024 * 1024 => {
            Framing::Length(n)
        }
        _ => Framing::UntilClose,
    }
}

/// Decodes a chunked body from the front of `buf`: (decoded bytes, bytes used). `problems`
/// collects what a strict reader would not accept but could still delimit (extensions are fine).
pub fn parse_chunked(buf: &[u8], problems: &mut Vec<String>) -> Parsed<Vec<u8>> {
    let mut pos = 0usize;
    let mut body = Vec::new();
    // Bounded by the buffer: every pass consumes at least one line.
    for _ in 0..100_000 {
        let rest = buf.get(pos..).unwrap_or_default();
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return if rest.len() > 4096 {
                Parsed::Bad("chunk-size line too long".into())
            } else {
                Parsed::Incomplete
            };
        };
        let line = rest.get(..eol).unwrap_or_default();
        if line.contains(&b'\n') || line.contains(&b'\r') {
            return Parsed::Bad("bare CR/LF in a chunk-size line".into());
        }
        let (size_text, ext) = match line.iter().position(|b| *b == b';') {
            Some(p) => (line.get(..p).unwrap_or_default(), true),
            None => (line, false),
        };
        let _ = ext;
        if size_text.is_empty()
            || size_text.len() > 15
            || !size_text.iter().all(u8::is_ascii_hexdigit)
        {
            return Parsed::Bad(format!(
                "bad chunk size {:?}",
                String::from_utf8_lossy(size_text)
            ));
        }
        let size = usize::from_str_radix(&String::from_utf8_lossy(size_text), 16).unwrap_or(0);
        pos += eol + 2;
        if size == 0 {
            // Trailer section: header lines until an empty line.
            for _ in 0..1000 {
                let rest = buf.get(pos..).unwrap_or_default();
                let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
                    return Parsed::Incomplete;
                };
                let line = rest.get(..eol).unwrap_or_default();
                pos += eol + 2;
                if line.is_empty() {
                    return Parsed::Done(body, pos);
                }
                problems.push(format!("trailer field {:?}", String::from_utf8_lossy(line)));
            }
            return Parsed::Bad("too many trailer lines".into());
        }
        let data_end = pos + size;
        if buf.len() < data_end + 2 {
            return Parsed::Incomplete;
        }
        body.extend_from_slice(buf.get(pos..data_end).unwrap_or_default());
        if buf.get(data_end..data_end + 2) != Some(b"\r\n") {
            return Parsed::Bad("chunk data not followed by CRLF".into());
        }
        pos = data_end + 2;
    }
    Parsed::Bad("too many chunks".into())
}

/// Parses one response from the front of `buf` (leniently: it is the server's output we judge
/// by status). `eof`: the connection is closed, so a body without a length ends here.
pub fn parse_response(buf: &[u8], eof: bool) -> Parsed<Resp> {
    if buf.is_empty() {
        return Parsed::Incomplete;
    }
    if !buf.starts_with(b"HTTP/") && buf.len() >= 5 {
        return Parsed::Bad("not a status line".into());
    }
    let Some(end) = head_end(buf) else {
        return Parsed::Incomplete;
    };
    let head = parse_head(buf.get(..end).unwrap_or_default());
    let mut words = head.start.split(' ');
    let _version = words.next();
    let Some(status) = words.next().and_then(|s| s.parse::<u16>().ok()) else {
        return Parsed::Bad(format!("bad status line {:?}", head.start));
    };
    let rest = buf.get(end..).unwrap_or_default();
    let no_body = (100..200).contains(&status) || status == 204 || status == 304;
    let resp = |body: Vec<u8>| Resp { status, body };
    if no_body {
        return Parsed::Done(resp(Vec::new()), end);
    }
    let chunked = head
        .values("transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let mut problems = Vec::new();
        return match parse_chunked(rest, &mut problems) {
            Parsed::Done(body, used) => Parsed::Done(resp(body), end + used),
            Parsed::Incomplete if eof => Parsed::Done(resp(rest.to_vec()), buf.len()),
            Parsed::Incomplete => Parsed::Incomplete,
            Parsed::Bad(why) => Parsed::Bad(why),
        };
    }
    if let Some(n) = head
        .values("content-length")
        .first()
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return if rest.len() >= n {
            Parsed::Done(resp(rest.get(..n).unwrap_or_default().to_vec()), end + n)
        } else if eof {
            Parsed::Done(resp(rest.to_vec()), buf.len())
        } else {
            Parsed::Incomplete
        };
    }
    if eof {
        Parsed::Done(resp(rest.to_vec()), buf.len())
    } else {
        Parsed::Incomplete
    }
}

/// `GET {target} HTTP/1.1` with `Host: public.test` and the extra header lines.
pub fn get(target: &str, headers: &[&str]) -> Vec<u8> {
    request("GET", target, "public.test", headers, b"")
}

/// A request with `Host: {host}` (none when empty), the given header lines and a body with its
/// `Content-Length` (when the body is not empty).
pub fn request(method: &str, target: &str, host: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
    if !host.is_empty() {
        out.extend_from_slice(format!("Host: {host}\r\n").as_bytes());
    }
    for h in headers {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Concatenates byte pieces (for vectors written as parts).
pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}
