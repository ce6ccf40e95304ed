//! Expectations and the runner: one vector is sent on a new connection, the client's outcome and
//! the backend's log since the vector started are judged against its expectation, then a normal
//! request on a new connection must get 200 and reach the backend alone (the router is healthy
//! and nothing was left poisoned in its upstream connections).

use std::net::SocketAddr;
use std::time::Duration;

use super::backend::{RawBackend, Seen};
use super::wire::{self, Outcome, Writes};

/// How long the client keeps its connection open after the first response (so that whatever
/// the server parsed out of the rest of our bytes is forwarded before the log is read).
const SETTLE: Duration = Duration::from_millis(120);
/// The same after the health request.
const HEALTH_SETTLE: Duration = Duration::from_millis(40);

/// A property of the one request the backend received.
#[derive(Debug, Clone)]
pub enum Check {
    /// `METHOD target`, exactly.
    Line(&'static str),
    /// Exactly one field with this name, with exactly this value.
    Header(&'static str, &'static str),
    /// No field with this name.
    NoHeader(&'static str),
    /// No field name contains `_`.
    NoUnderscoreNames,
    /// The de-chunked body.
    Body(&'static [u8]),
}

impl Check {
    fn judge(&self, s: &Seen) -> Result<(), String> {
        match self {
            Check::Line(want) => {
                let got = s.line();
                (got == *want)
                    .then_some(())
                    .ok_or_else(|| format!("backend line {got:?}, want {want:?}"))
            }
            Check::Header(name, want) => {
                let got = s.values(name);
                (got == [*want])
                    .then_some(())
                    .ok_or_else(|| format!("backend {name}: {got:?}, want exactly [{want:?}]"))
            }
            Check::NoHeader(name) => {
                let got = s.values(name);
                got.is_empty()
                    .then_some(())
                    .ok_or_else(|| format!("backend got {name}: {got:?}"))
            }
            Check::NoUnderscoreNames => {
                let bad: Vec<&str> = s
                    .headers
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .filter(|n| n.contains('_'))
                    .collect();
                bad.is_empty()
                    .then_some(())
                    .ok_or_else(|| format!("backend got underscore fields {bad:?}"))
            }
            Check::Body(want) => (s.body == *want).then_some(()).ok_or_else(|| {
                format!(
                    "backend body {:?}, want {:?}",
                    String::from_utf8_lossy(&s.body),
                    String::from_utf8_lossy(want)
                )
            }),
        }
    }
}

/// What a vector must produce.
#[derive(Debug, Clone)]
pub enum Expect {
    /// The client gets exactly this status; the backend sees nothing.
    Refuse(u16),
    /// As `Refuse`, and no `100 Continue` before it.
    RefuseNo100(u16),
    /// The client gets a 4xx or the connection is closed without a response; the backend sees
    /// nothing.
    Reject,
    /// The client gets 200; the backend sees exactly one clean request passing every check.
    Forward(Vec<Check>),
    /// The framing rule: `Reject`, or `Forward` with these checks. Never a 5xx.
    RejectOr(Vec<Check>),
    /// A client's broken body: the client gets a 4xx or a closed connection (never a 5xx); the
    /// backend sees no complete request (the cut fragment of a streamed one may be there).
    ClientFault,
    /// Two requests in one write: the first gets `first`; the backend sees at most one request,
    /// and only `GET {second}`.
    Pipelined { first: u16, second: &'static str },
}

impl Expect {
    /// A short text for tables.
    pub fn summary(&self) -> String {
        match self {
            Expect::Refuse(s) => format!("{s}, backend nothing"),
            Expect::RefuseNo100(s) => format!("{s} without 100, backend nothing"),
            Expect::Reject => "4xx/close, backend nothing".into(),
            Expect::Forward(_) => "200, backend exactly one".into(),
            Expect::RejectOr(_) => "4xx/close, or one clean request".into(),
            Expect::ClientFault => "4xx/close, no complete request".into(),
            Expect::Pipelined { first, second } => format!("{first}, backend only {second}"),
        }
    }
}

/// One attack.
#[derive(Debug, Clone)]
pub struct Vector {
    pub section: u8,
    pub name: String,
    pub bytes: Vec<u8>,
    pub writes: Writes,
    pub expect: Expect,
}

/// One vector's result against one target.
#[derive(Debug, Clone)]
pub struct Row {
    pub section: u8,
    pub name: String,
    /// `client | backend`, e.g. `403 | -` or `200 | GET /y`.
    pub result: String,
    /// The expectation, in short.
    pub want: String,
    pub verdict: Result<(), String>,
}

fn seen_summary(seen: &[Seen]) -> String {
    if seen.is_empty() {
        return "-".into();
    }
    let parts: Vec<String> = seen.iter().map(Seen::summary).collect();
    parts.join(" + ")
}

fn dumps(seen: &[Seen]) -> String {
    let parts: Vec<String> = seen.iter().map(Seen::dump).collect();
    parts.join("\n      ")
}

fn no_5xx(out: &Outcome) -> Result<(), String> {
    match out.responses.iter().find(|r| r.status >= 500) {
        Some(r) => Err(format!(
            "client got {} (a 5xx for the client's input): {:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
        )),
        None => Ok(()),
    }
}

fn rejected(out: &Outcome) -> Result<(), String> {
    no_5xx(out)?;
    match out.status() {
        Some(s) if (400..500).contains(&s) => Ok(()),
        Some(s) => Err(format!("client got {s}, want a 4xx or a close")),
        None if out.closed_without_response() => Ok(()),
        None if out.timed_out => Err("no answer and the connection left open (hung)".into()),
        None => Err(format!("no response ({})", out.summary())),
    }
}

fn nothing(seen: &[Seen]) -> Result<(), String> {
    if seen.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "backend saw {} request(s):\n      {}",
            seen.len(),
            dumps(seen)
        ))
    }
}

fn no_complete(seen: &[Seen]) -> Result<(), String> {
    let complete: Vec<Seen> = seen.iter().filter(|s| s.complete).cloned().collect();
    if complete.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the client was refused but the backend saw a complete request:\n      {}",
            dumps(&complete)
        ))
    }
}

fn forwarded(out: &Outcome, seen: &[Seen], checks: &[Check]) -> Result<(), String> {
    no_5xx(out)?;
    match out.status() {
        Some(200) => {}
        Some(s) => return Err(format!("client got {s}, want 200")),
        None => return Err(format!("client got no response ({})", out.summary())),
    }
    let [one] = seen else {
        return Err(format!(
            "backend saw {} requests, want exactly one:\n      {}",
            seen.len(),
            dumps(seen)
        ));
    };
    if !one.clean() {
        return Err(format!("backend request is not clean: {}", one.dump()));
    }
    for c in checks {
        c.judge(one)
            .map_err(|e| format!("{e}\n      {}", one.dump()))?;
    }
    Ok(())
}

/// Judges one outcome.
pub fn judge(expect: &Expect, out: &Outcome, seen: &[Seen]) -> Result<(), String> {
    match expect {
        Expect::Refuse(want) | Expect::RefuseNo100(want) => {
            if matches!(expect, Expect::RefuseNo100(_)) && out.interim.contains(&100) {
                return Err(format!("client got 100 Continue before {:?}", out.status()));
            }
            match out.status() {
                Some(s) if s == *want => {}
                Some(s) => return Err(format!("client got {s}, want {want}")),
                None => return Err(format!("client got {}, want {want}", out.summary())),
            }
            nothing(seen)
        }
        Expect::Reject => {
            rejected(out)?;
            nothing(seen)
        }
        Expect::Forward(checks) => forwarded(out, seen, checks),
        Expect::RejectOr(checks) => {
            if out.status() == Some(200) {
                forwarded(out, seen, checks)
                    .map_err(|e| format!("forwarded, but not one clean request: {e}"))
            } else {
                rejected(out)?;
                // A body that turns out broken after the head was forwarded leaves a cut
                // fragment at the backend (bodies are streamed); never a complete request.
                no_complete(seen)
            }
        }
        Expect::ClientFault => {
            rejected(out)?;
            no_complete(seen)
        }
        Expect::Pipelined { first, second } => {
            no_5xx(out)?;
            if out.status() != Some(*first) {
                return Err(format!("first response {}, want {first}", out.summary()));
            }
            let want = format!("GET {second}");
            if seen.len() > 1 || seen.iter().any(|s| !s.clean() || s.line() != want) {
                return Err(format!(
                    "backend must see nothing or only {want:?}:\n      {}",
                    dumps(seen)
                ));
            }
            Ok(())
        }
    }
}

/// A normal request on a new connection: 200, and the backend sees exactly it (not a leftover
/// of the vector prepended on a reused upstream connection).
pub async fn health(target: SocketAddr, backend: &RawBackend, n: usize) -> Result<(), String> {
    let path = format!("/__health/{n}");
    let mark = backend.mark();
    let out = wire::exchange(target, &wire::get(&path, &[]), Writes::One, HEALTH_SETTLE).await;
    let seen = backend.since(mark);
    if out.status() != Some(200) {
        return Err(format!(
            "health check afterwards got {} (backend: {})",
            out.summary(),
            seen_summary(&seen)
        ));
    }
    let want = format!("GET {path}");
    let ours: Vec<&Seen> = seen.iter().filter(|s| s.line() == want).collect();
    // A cut fragment of the vector's own streamed body may be logged late (when the router
    // drops that upstream connection); anything else is a leftover reaching the backend.
    let others: Vec<Seen> = seen
        .iter()
        .filter(|s| s.line() != want && (s.complete || ours.iter().any(|o| o.conn == s.conn)))
        .cloned()
        .collect();
    match ours.as_slice() {
        [one] if one.clean() && others.is_empty() => Ok(()),
        _ => Err(format!(
            "health check afterwards: backend saw\n      {}",
            dumps(&seen)
        )),
    }
}

/// Runs one vector (then the health check) against `target`.
pub async fn run_one(target: SocketAddr, backend: &RawBackend, v: &Vector, n: usize) -> Row {
    let mark = backend.mark();
    let out = wire::exchange(target, &v.bytes, v.writes, SETTLE).await;
    let seen = backend.since(mark);
    let mut verdict = judge(&v.expect, &out, &seen);
    let healthy = health(target, backend, n).await;
    if let (Ok(()), Err(e)) = (&verdict, &healthy) {
        verdict = Err(e.clone());
    }
    Row {
        section: v.section,
        name: v.name.clone(),
        result: format!("{} | {}", out.summary(), seen_summary(&seen)),
        want: v.expect.summary(),
        verdict,
    }
}

/// Runs every vector in order.
pub async fn run_all(target: SocketAddr, backend: &RawBackend, vectors: &[Vector]) -> Vec<Row> {
    let mut rows = Vec::with_capacity(vectors.len());
    for (n, v) in vectors.iter().enumerate() {
        rows.push(run_one(target, backend, v, n).await);
    }
    rows
}

/// Prints every row and panics listing the failures, if any.
pub fn report(title: &str, rows: &[Row]) {
    let failed: Vec<&Row> = rows.iter().filter(|r| r.verdict.is_err()).collect();
    println!(
        "{title}: {} vectors, {} pass, {} fail",
        rows.len(),
        rows.len() - failed.len(),
        failed.len()
    );
    for r in rows {
        let mark = if r.verdict.is_ok() { "ok  " } else { "FAIL" };
        println!("  {mark} {:<48} {}", r.name, r.result);
    }
    if failed.is_empty() {
        return;
    }
    let mut msg = format!(
        "{title}: {} of {} vectors failed:\n",
        failed.len(),
        rows.len()
    );
    for r in failed {
        msg.push_str(&format!(
            "  - {} [{}] (want {})\n      {}\n",
            r.name,
            r.result,
            r.want,
            r.verdict.as_ref().err().map(String::as_str).unwrap_or("")
        ));
    }
    panic!("{msg}");
}
