//! The harness judged on its own: the raw backend logs what it should, and the judge fails the
//! outcomes it must fail (so a green section means the router held, not that nothing was
//! checked).

use std::time::Duration;

use super::backend::{RawBackend, Role, Seen};
use super::judge::{judge, Check, Expect};
use super::wire::{self, Outcome, Resp, Writes};

fn status(s: u16) -> Outcome {
    Outcome {
        responses: vec![Resp {
            status: s,
            body: Vec::new(),
        }],
        ..Default::default()
    }
}

fn clean(line: &str) -> Seen {
    let (method, target) = line.split_once(' ').unwrap();
    Seen {
        conn: 1,
        complete: true,
        method: method.into(),
        target: target.into(),
        version: "HTTP/1.1".into(),
        headers: vec![("host".into(), "public.test".into())],
        ..Default::default()
    }
}

#[test]
fn the_judge_fails_what_it_must() {
    let one = [clean("GET /x")];
    let two = [clean("GET /x"), clean("GET /smuggled")];
    let mut cut = clean("POST /f");
    cut.complete = false;
    let mut dirty = clean("POST /f");
    dirty
        .problems
        .push("Content-Length together with Transfer-Encoding".into());

    assert!(judge(&Expect::Refuse(403), &status(403), &[]).is_ok());
    assert!(judge(&Expect::Refuse(403), &status(404), &[]).is_err());
    assert!(judge(&Expect::Refuse(403), &status(403), &[cut.clone()]).is_err());
    let mut continued = status(401);
    continued.interim.push(100);
    assert!(judge(&Expect::Refuse(401), &continued, &[]).is_ok());
    assert!(judge(&Expect::RefuseNo100(401), &continued, &[]).is_err());

    let fwd = Expect::Forward(vec![Check::Line("GET /x"), Check::NoUnderscoreNames]);
    assert!(judge(&fwd, &status(200), &one).is_ok());
    assert!(judge(&fwd, &status(200), &two).is_err(), "a second request");
    assert!(judge(&fwd, &status(200), &[]).is_err(), "nothing forwarded");
    assert!(judge(&fwd, &status(502), &one).is_err());
    let mut underscored = clean("GET /x");
    underscored
        .headers
        .push(("X_Forwarded_For".into(), "1.2.3.4".into()));
    assert!(judge(&fwd, &status(200), &[underscored]).is_err());
    let header = Expect::Forward(vec![Check::Header("x-user", "alice")]);
    let mut both = clean("GET /x");
    both.headers.push(("X-User".into(), "alice".into()));
    both.headers.push(("x-user".into(), "root".into()));
    assert!(judge(&header, &status(200), &[both]).is_err(), "two values");

    let framing = Expect::RejectOr(vec![Check::Body(b"")]);
    assert!(judge(&framing, &status(400), &[]).is_ok());
    assert!(judge(&framing, &status(400), &[cut.clone()]).is_ok());
    assert!(judge(&framing, &status(400), &[clean("POST /f")]).is_err());
    assert!(judge(&framing, &status(200), &[dirty]).is_err());
    assert!(judge(&framing, &status(200), &two).is_err());
    assert!(judge(&framing, &status(500), &[]).is_err(), "a 5xx");
    let hung = Outcome {
        timed_out: true,
        ..Default::default()
    };
    assert!(judge(&framing, &hung, &[]).is_err(), "left hanging");
    let closed = Outcome {
        closed: true,
        ..Default::default()
    };
    assert!(judge(&framing, &closed, &[]).is_ok());

    assert!(judge(&Expect::ClientFault, &status(502), &[]).is_err());
    assert!(judge(&Expect::ClientFault, &status(400), &[cut]).is_ok());

    let pipe = Expect::Pipelined {
        first: 403,
        second: "/second",
    };
    assert!(judge(&pipe, &status(403), &[clean("GET /second")]).is_ok());
    assert!(judge(&pipe, &status(403), &[clean("GET /admin")]).is_err());
}

#[tokio::test]
async fn the_raw_backend_logs_exact_requests_and_flags_ambiguity() {
    let b = RawBackend::start(Role::App).await;
    let settle = Duration::from_millis(50);

    // Two pipelined requests: two entries, exact bytes, bodies delimited.
    let first = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".to_vec();
    let second =
        b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nworld\r\n0\r\n\r\n"
            .to_vec();
    let out = wire::exchange(
        b.addr,
        &[first.clone(), second.clone()].concat(),
        Writes::One,
        settle,
    )
    .await;
    assert_eq!(out.summary(), "200,200");
    let seen = b.since(0);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].raw, first);
    assert_eq!(seen[1].raw, second);
    assert_eq!(seen[0].body, b"hello");
    assert_eq!(seen[1].body, b"world");
    assert!(seen.iter().all(Seen::clean), "{seen:?}");

    // CL with TE, a duplicate CL, obs-fold, a non-ASCII target: logged, not clean.
    for bytes in [
        &b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nz",
        b"GET /c HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
        "GET /caf\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n".as_bytes(),
    ] {
        let mark = b.mark();
        wire::exchange(b.addr, bytes, Writes::One, settle).await;
        let seen = b.since(mark);
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(!seen[0].clean(), "{}", seen[0].dump());
    }

    // A request cut by the sender's close: one incomplete entry.
    let mark = b.mark();
    wire::exchange(
        b.addr,
        b"POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
        Writes::ThenHalfClose,
        settle,
    )
    .await;
    let seen = b.since(mark);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(!seen[0].complete, "{}", seen[0].dump());
}
