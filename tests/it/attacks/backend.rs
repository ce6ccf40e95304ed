//! The raw backend: a TCP listener that reads requests with a strict parser of its own, logs the
//! exact bytes of every request it received (and of any fragment a connection left behind), and
//! answers `200 ok` keeping the connection alive. The log is what lets a vector say "the backend
//! received exactly these requests". The same code, in `Role::Auth`, is the forward_auth server.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::wire::{self, Framing, Parsed};

/// How long a backend connection waits for more bytes before giving up on it.
const BACKEND_READ_WAIT: Duration = Duration::from_secs(60);
/// Largest head the backend reads (the router's limit is smaller).
const MAX_HEAD: usize = 1024 * 1024;

/// One request (or fragment) as the backend received it.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Which backend connection it came on (1, 2, ...).
    pub conn: usize,
    /// The exact bytes.
    pub raw: Vec<u8>,
    /// Head and body were read whole (false: the connection ended mid-request).
    pub complete: bool,
    /// What a strict server would object to (empty for a clean request).
    pub problems: Vec<String>,
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Seen {
    pub fn clean(&self) -> bool {
        self.complete && self.problems.is_empty()
    }

    /// `METHOD target`.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.target)
    }

    pub fn values(&self, name: &str) -> Vec<&str> {
        wire::values(&self.headers, name)
    }

    /// A short text for tables: `GET /y`, with `!` when unclean and `…` when cut.
    pub fn summary(&self) -> String {
        let mut s = if self.method.is_empty() {
            format!(
                "{:?}",
                String::from_utf8_lossy(&self.raw[..self.raw.len().min(24)])
            )
        } else {
            let target: String = self.target.chars().take(40).collect();
            format!("{} {}", self.method, target)
        };
        if !self.complete {
            s.push('…');
        } else if !self.problems.is_empty() {
            s.push('!');
        }
        s
    }

    /// The whole request as text, for failure messages.
    pub fn dump(&self) -> String {
        let raw = String::from_utf8_lossy(&self.raw[..self.raw.len().min(600)]).into_owned();
        format!(
            "[conn {} complete={} problems={:?}] {:?}",
            self.conn, self.complete, self.problems, raw
        )
    }
}

/// What the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `200 ok` to everything.
    App,
    /// forward_auth: 200 + `X-Auth-User: alice` for `Authorization: Bearer good`, 200 without the
    /// header for `Bearer plain`, 401 otherwise.
    Auth,
}

/// A running raw server and its log.
pub struct RawBackend {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RawBackend {
    pub async fn start(role: Role) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let shared = log.clone();
        let task = tokio::spawn(async move {
            let mut conns = 0usize;
            while let Ok((stream, _)) = listener.accept().await {
                conns += 1;
                tokio::spawn(serve(stream, conns, role, shared.clone()));
            }
        });
        RawBackend { addr, log, task }
    }

    /// The current length of the log (take before a vector, read `since` after).
    pub fn mark(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Everything logged after `mark`.
    pub fn since(&self, mark: usize) -> Vec<Seen> {
        self.log
            .lock()
            .unwrap()
            .get(mark..)
            .map(<[Seen]>::to_vec)
            .unwrap_or_default()
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn push(log: &Mutex<Vec<Seen>>, seen: Seen) {
    log.lock().unwrap().push(seen);
}

/// Reads more bytes into `buf`; false on EOF, error or `BACKEND_READ_WAIT` of silence.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match tokio::time::timeout(BACKEND_READ_WAIT, stream.read(&mut chunk)).await {
        Ok(Ok(n)) if n > 0 => {
            buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
            true
        }
        _ => false,
    }
}

async fn serve(mut stream: TcpStream, conn: usize, role: Role, log: Arc<Mutex<Vec<Seen>>>) {
    let mut buf: Vec<u8> = Vec::new();
    // Bounded: at most 10 000 requests per connection.
    for _ in 0..10_000 {
        // The head.
        let end = loop {
            if let Some(end) = wire::head_end(&buf) {
                break Some(end);
            }
            if buf.len() > MAX_HEAD || !fill(&mut stream, &mut buf).await {
                break None;
            }
        };
        let Some(end) = end else {
            if !buf.is_empty() {
                let mut seen = Seen {
                    conn,
                    raw: std::mem::take(&mut buf),
                    ..Default::default()
                };
                seen.problems
                    .push("connection ended inside the head".into());
                push(&log, seen);
            }
            return;
        };
        let head = wire::parse_head(buf.get(..end).unwrap_or_default());
        let mut seen = Seen {
            conn,
            headers: head.headers.clone(),
            problems: head.problems.clone(),
            ..Default::default()
        };
        let words: Vec<&str> = head.start.split(' ').collect();
        match words.as_slice() {
            [m, t, v] if *v == "HTTP/1.1" || *v == "HTTP/1.0" => {
                seen.method = m.to_string();
                seen.target = t.to_string();
                seen.version = v.to_string();
                // RFC 9112 §3.2: the target is ASCII; a fragment is never sent.
                if let Some(b) = t.bytes().find(|b| !b.is_ascii_graphic() || *b == b'#') {
                    seen.problems.push(format!(
                        "request-target byte 0x{b:02X} is not allowed in a URI"
                    ));
                }
            }
            _ => seen
                .problems
                .push(format!("bad request line {:?}", head.start)),
        }
        if seen.values("host").len() != 1 && seen.version == "HTTP/1.1" {
            seen.problems
                .push(format!("{} Host headers", seen.values("host").len()));
        }
        let framing = wire::request_framing(&head, &mut seen.problems);
        // The body.
        let (used, complete) = match framing {
            Framing::None => (end, true),
            Framing::Length(n) => {
                let mut ok = true;
                while buf.len() < end + n {
                    if !fill(&mut stream, &mut buf).await {
                        ok = false;
                        break;
                    }
                }
                if ok {
                    seen.body = buf.get(end..end + n).unwrap_or_default().to_vec();
                    (end + n, true)
                } else {
                    (buf.len(), false)
                }
            }
            Framing::Chunked => {
                let mut result = (buf.len(), false);
                for _ in 0..100_000 {
                    let mut problems = Vec::new();
                    match wire::parse_chunked(buf.get(end..).unwrap_or_default(), &mut problems) {
                        Parsed::Done(body, n) => {
                            seen.body = body;
                            seen.problems.extend(problems);
                            result = (end + n, true);
                            break;
                        }
                        Parsed::Bad(why) => {
                            seen.problems.push(why);
                            // Cannot be delimited: take what is there and wait for the close.
                            while fill(&mut stream, &mut buf).await {}
                            result = (buf.len(), true);
                            break;
                        }
                        Parsed::Incomplete => {
                            if !fill(&mut stream, &mut buf).await {
                                result = (buf.len(), false);
                                break;
                            }
                        }
                    }
                }
                result
            }
            Framing::UntilClose => {
                while buf.len() < 64 * 1024 * 1024 && fill(&mut stream, &mut buf).await {}
                (buf.len(), true)
            }
        };
        seen.raw = buf.drain(..used.min(buf.len())).collect();
        seen.complete = complete;
        let clean = seen.clean();
        let answer = match role {
            Role::App => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_string(),
            Role::Auth => {
                let auth = seen.values("authorization").first().map(|v| v.to_string());
                match auth.as_deref() {
                    Some("Bearer good") => {
                        "HTTP/1.1 200 OK\r\nX-Auth-User: alice\r\nContent-Length: 0\r\n\r\n"
                            .to_string()
                    }
                    Some("Bearer plain") => {
                        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_string()
                    }
                    _ => "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nContent-Length: 7\r\n\r\ndenied\n"
                        .to_string(),
                }
            }
        };
        push(&log, seen);
        if !complete {
            return;
        }
        if !clean {
            // Framing we cannot trust: answer and close rather than guess where the next
            // request starts.
            let a = answer.replacen("\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1);
            let _ = stream.write_all(a.as_bytes()).await;
            let _ = stream.shutdown().await;
            return;
        }
        if tokio::time::timeout(Duration::from_secs(5), stream.write_all(answer.as_bytes()))
            .await
            .is_err()
        {
            return;
        }
    }
}
