//! The table: every attack as (section, name, exact bytes, write pattern, expectation). The same
//! table is replayed against nginx by `nginx_calibration`.
//!
//! Sections: 1 canonical path, 2 ambiguous path → 400, 3 one Host, 4 headers the router owns,
//! 5 client faults, 6 exact limits, 7 framing (regression guards).
//!
//! The routes (see `super::script`): `/admin` allow-listed to 10.0.0.0/8 (403 for us), `/secret`
//! basic auth (alice:secret, `header_field: X-User`), `/api` with `strip_prefix("/api")`, `/fa`
//! forward_auth (`Bearer good` → `X-Auth-User: alice`, `Bearer plain` → 200 without it), Host
//! `internal.test` allow-listed (403), `/café` allow-listed (403), everything else → the raw
//! backend.

use super::judge::{Check, Expect, Vector};
use super::wire::{cat, get, request, Writes};

use Check::*;
use Expect::*;

/// `Authorization` for alice:secret.
pub const ALICE: &str = "Authorization: Basic YWxpY2U6c2VjcmV0";
/// The head limit the table is written for (`max_header_bytes`).
pub const HEAD_LIMIT: usize = 32 * 1024;

fn v(section: u8, name: &str, bytes: Vec<u8>, expect: Expect) -> Vector {
    Vector {
        section,
        name: name.to_string(),
        bytes,
        writes: Writes::One,
        expect,
    }
}

fn w(section: u8, name: &str, bytes: Vec<u8>, writes: Writes, expect: Expect) -> Vector {
    Vector {
        section,
        name: name.to_string(),
        bytes,
        writes,
        expect,
    }
}

/// A request line plus headers on `public.test` padded with one `X-Pad` header to exactly
/// `total` bytes of head (request line, fields and the final CRLFCRLF).
fn head_of_size(target: &str, total: usize) -> Vec<u8> {
    let start = format!("GET {target} HTTP/1.1\r\nHost: public.test\r\nX-Pad: ");
    let end = "\r\n\r\n";
    let pad = total.saturating_sub(start.len() + end.len());
    format!("{start}{}{end}", "p".repeat(pad)).into_bytes()
}

/// A head with `n` header lines in all (Host included).
fn head_with_fields(target: &str, n: usize) -> Vec<u8> {
    let mut s = format!("GET {target} HTTP/1.1\r\nHost: public.test\r\n");
    for i in 1..n {
        s.push_str(&format!("X-F{i}: v\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// A POST on `public.test` with raw extra header lines and a raw body (no framing added).
fn post_raw(target: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    cat(&[
        format!("POST {target} HTTP/1.1\r\nHost: public.test\r\n{headers}\r\n").as_bytes(),
        body,
    ])
}

const CHUNKED_HELLO: &[u8] = b"5\r\nhello\r\n0\r\n\r\n";
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: public.test\r\n\r\n";

pub fn table() -> Vec<Vector> {
    let mut t = Vec::new();

    // 1. Canonical path before any decision, and forwarded canonical.
    for p in [
        "/%61dmin",
        "/ad%6din",
        "//admin",
        "///admin",
        "/./admin",
        "/x/../admin",
        "/x/%2e%2e/admin",
        "/x/%2E./admin",
        "/x/%2E%2e/admin",
        "/x/.%2e/admin",
        "/x/%2e/../admin",
        "/api/../admin",
        "/api/%2e%2e/admin",
        "/public/../admin",
        "/admin/x/..",
    ] {
        t.push(v(
            1,
            &format!("path {p} is /admin"),
            get(p, &[]),
            Refuse(403),
        ));
    }
    // One spelling for non-ASCII paths too: a backend that decodes once reads `/caf%C3%A9` as
    // the raw UTF-8 `/café` the `cafe` route guards.
    for (name, target) in [
        ("raw UTF-8 /café", "/caf\u{e9}"),
        ("/caf%C3%A9", "/caf%C3%A9"),
        ("/caf%c3%a9", "/caf%c3%a9"),
        ("/x/../caf%C3%A9", "/x/../caf%C3%A9"),
    ] {
        t.push(v(
            1,
            &format!("path {name} is /café"),
            get(target, &[]),
            Refuse(403),
        ));
    }
    t.push(v(
        1,
        "path /%73ecret is /secret",
        get("/%73ecret", &[]),
        Refuse(401),
    ));
    t.push(v(
        1,
        "path //secret is /secret",
        get("//secret", &[]),
        Refuse(401),
    ));
    t.push(v(
        1,
        "path /x/../fa is /fa",
        get("/x/../fa", &[]),
        Refuse(401),
    ));
    t.push(v(
        1,
        "path /admin on HTTP/1.0 without Host",
        b"GET /admin HTTP/1.0\r\n\r\n".to_vec(),
        Refuse(403),
    ));
    for (p, want) in [
        ("/api/x/../y", "GET /y"),
        ("/api//x", "GET /x"),
        ("/api/%78", "GET /x"),
        ("/ADMIN", "GET /ADMIN"),
        ("/%41dmin", "GET /Admin"),
        ("/%2561dmin", "GET /%2561dmin"),
        ("/p/%7euser", "GET /p/~user"),
        ("/p/%3f", "GET /p/%3F"),
        ("/p/%c3%a9", "GET /p/%C3%A9"),
        ("/a/./b/../c", "GET /a/c"),
        ("/a//b", "GET /a/b"),
        ("/q?x=/../admin&y=%2f", "GET /q?x=/../admin&y=%2f"),
    ] {
        t.push(v(
            1,
            &format!("path {p} forwarded as {}", &want[4..]),
            get(p, &[]),
            Forward(vec![Line(want)]),
        ));
    }

    // 2. Ambiguous input → 400, backend sees nothing.
    for p in [
        "/a%2Fb",
        "/a%2fb",
        "/admin%2F",
        "/a%5Cb",
        "/a%5cb",
        "/a\\b",
        "/a%00b",
        "/..",
        "/../admin",
        "/a/../../x",
        "/%2e%2e/admin",
        "/x/..;/admin",
        "/..;/admin",
        "/x/.;/admin",
        "/%zz",
        "/%4",
        "/x%",
        "/api./x",
        "/api../x",
        "/api%2e/x",
        "/api%2E%2E/x",
    ] {
        t.push(v(2, &format!("path {p} is 400"), get(p, &[]), Refuse(400)));
    }

    // 3. One Host.
    t.push(v(
        3,
        "absolute-form internal.test beats Host public.test",
        b"GET http://internal.test/ HTTP/1.1\r\nHost: public.test\r\n\r\n".to_vec(),
        Refuse(403),
    ));
    t.push(v(
        3,
        "absolute-form public.test beats Host internal.test",
        b"GET http://public.test/x HTTP/1.1\r\nHost: internal.test\r\n\r\n".to_vec(),
        Forward(vec![
            Line("GET /x"),
            Header("host", "public.test"),
            Header("x-forwarded-host", "public.test"),
        ]),
    ));
    t.push(v(
        3,
        "absolute-form INTERNAL.TEST:8080",
        b"GET http://INTERNAL.TEST:8080/ HTTP/1.1\r\nHost: public.test\r\n\r\n".to_vec(),
        Refuse(403),
    ));
    t.push(v(
        3,
        "absolute-form https://internal.test on http",
        b"GET https://internal.test/ HTTP/1.1\r\nHost: public.test\r\n\r\n".to_vec(),
        Reject,
    ));
    t.push(v(
        3,
        "absolute-form without a path",
        b"GET http://public.test HTTP/1.1\r\nHost: internal.test\r\n\r\n".to_vec(),
        Forward(vec![Line("GET /"), Header("host", "public.test")]),
    ));
    for (name, host_lines) in [
        ("Host a.test:99999", "Host: a.test:99999\r\n"),
        ("Host a.test:8o", "Host: a.test:8o\r\n"),
        ("Host a.test:1:2", "Host: a.test:1:2\r\n"),
        ("Host a.test:", "Host: a.test:\r\n"),
        ("Host u@a.test", "Host: u@a.test\r\n"),
        ("Host u@internal.test", "Host: u@internal.test\r\n"),
        ("Host a.test, b.test", "Host: a.test, b.test\r\n"),
        ("Host a.test/x", "Host: a.test/x\r\n"),
        ("Host internal.test..", "Host: internal.test..\r\n"),
        ("empty Host on HTTP/1.1", "Host: \r\n"),
        ("no Host on HTTP/1.1", ""),
        (
            "two Host headers",
            "Host: public.test\r\nHost: internal.test\r\n",
        ),
        (
            "two identical Host headers",
            "Host: public.test\r\nHost: public.test\r\n",
        ),
    ] {
        t.push(v(
            3,
            &format!("{name} is 400"),
            format!("GET / HTTP/1.1\r\n{host_lines}\r\n").into_bytes(),
            Refuse(400),
        ));
    }
    t.push(v(
        3,
        "absolute-form with userinfo is 400",
        b"GET http://u@a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n".to_vec(),
        Refuse(400),
    ));
    t.push(v(
        3,
        "absolute-form with user:pass@internal.test is 400",
        b"GET http://u:p@internal.test/ HTTP/1.1\r\nHost: public.test\r\n\r\n".to_vec(),
        Refuse(400),
    ));
    for host in [
        "INTERNAL.TEST",
        "internal.test.",
        "Internal.Test:80",
        "internal.test:8080",
    ] {
        t.push(v(
            3,
            &format!("Host {host} is internal"),
            request("GET", "/", host, &[], b""),
            Refuse(403),
        ));
    }
    t.push(v(
        3,
        "X-Forwarded-Host does not pick the route",
        request(
            "GET",
            "/",
            "internal.test",
            &["X-Forwarded-Host: public.test"],
            b"",
        ),
        Refuse(403),
    ));
    t.push(v(
        3,
        "HTTP/1.0 without Host is routed",
        b"GET /old HTTP/1.0\r\n\r\n".to_vec(),
        Forward(vec![Line("GET /old")]),
    ));

    // 4. Headers the router owns.
    for (name, line) in [
        ("X_Forwarded_For", "X_Forwarded_For: 1.2.3.4"),
        ("X-Forwarded_For", "X-Forwarded_For: 1.2.3.4"),
        ("x_forwarded_for lower", "x_forwarded_for: 1.2.3.4"),
        ("X-Forwarded-For spoof", "X-Forwarded-For: 1.2.3.4"),
    ] {
        t.push(v(
            4,
            &format!("{name} is the router's"),
            get("/h", &[line]),
            Forward(vec![
                NoUnderscoreNames,
                Header("x-forwarded-for", "127.0.0.1"),
            ]),
        ));
    }
    for (name, line) in [
        ("X_Real_Ip", "X_Real_Ip: 1.2.3.4"),
        ("X-Real-Ip spoof", "X-Real-Ip: 1.2.3.4"),
    ] {
        t.push(v(
            4,
            &format!("{name} is the router's"),
            get("/h", &[line]),
            Forward(vec![NoUnderscoreNames, Header("x-real-ip", "127.0.0.1")]),
        ));
    }
    t.push(v(
        4,
        "X_Forwarded_Host is dropped",
        get("/h", &["X_Forwarded_Host: evil.test"]),
        Forward(vec![
            NoUnderscoreNames,
            Header("x-forwarded-host", "public.test"),
        ]),
    ));
    t.push(v(
        4,
        "X-Forwarded-Host spoof is the router's",
        get("/h", &["X-Forwarded-Host: evil.test"]),
        Forward(vec![Header("x-forwarded-host", "public.test")]),
    ));
    t.push(v(
        4,
        "Forwarded is dropped",
        get("/h", &["Forwarded: for=1.2.3.4;host=evil.test"]),
        Forward(vec![NoHeader("forwarded")]),
    ));
    t.push(v(
        4,
        "Connection: X-Forwarded-For keeps it",
        get("/h", &["Connection: X-Forwarded-For"]),
        Forward(vec![Header("x-forwarded-for", "127.0.0.1")]),
    ));
    t.push(v(
        4,
        "Connection: Host keeps it",
        get("/h", &["Connection: Host"]),
        Forward(vec![Header("host", "public.test")]),
    ));
    t.push(v(
        4,
        "Connection: X-Real-Ip, X-Forwarded-Host keeps them",
        get(
            "/h",
            &["Connection: keep-alive, X-Real-Ip, X-Forwarded-Host"],
        ),
        Forward(vec![
            Header("x-real-ip", "127.0.0.1"),
            Header("x-forwarded-host", "public.test"),
        ]),
    ));
    for (name, extra) in [
        ("X-Auth-User: mallory", "X-Auth-User: mallory"),
        ("X_Auth_User: mallory", "X_Auth_User: mallory"),
        ("X-Auth_User: mallory", "X-Auth_User: mallory"),
        ("Connection: X-Auth-User", "Connection: X-Auth-User"),
    ] {
        t.push(v(
            4,
            &format!("fa good token, client {name}"),
            get("/fa/x", &["Authorization: Bearer good", extra]),
            Forward(vec![
                Line("GET /fa/x"),
                Header("x-auth-user", "alice"),
                NoUnderscoreNames,
            ]),
        ));
    }
    for (name, extra) in [
        ("X-Auth-User: mallory", "X-Auth-User: mallory"),
        ("X_Auth_User: mallory", "X_Auth_User: mallory"),
    ] {
        t.push(v(
            4,
            &format!("fa token without user header, client {name}"),
            get("/fa/x", &["Authorization: Bearer plain", extra]),
            Forward(vec![NoHeader("x-auth-user"), NoUnderscoreNames]),
        ));
    }
    t.push(v(4, "fa without token", get("/fa/x", &[]), Refuse(401)));
    t.push(v(
        4,
        "fa bad token with X-Auth-User: alice",
        get(
            "/fa/x",
            &["Authorization: Bearer bad", "X-Auth-User: alice"],
        ),
        Refuse(401),
    ));
    for (name, extra) in [
        ("X_User: root", "X_User: root"),
        ("X-User: root", "X-User: root"),
        ("x_user: root", "x_user: root"),
        ("Connection: X-User", "Connection: X-User"),
    ] {
        t.push(v(
            4,
            &format!("secret good credentials, client {name}"),
            get("/secret", &[ALICE, extra]),
            Forward(vec![
                Line("GET /secret"),
                Header("x-user", "alice"),
                NoUnderscoreNames,
                NoHeader("authorization"),
            ]),
        ));
    }
    t.push(v(
        4,
        "secret wrong password",
        get("/secret", &["Authorization: Basic YWxpY2U6bm9wZQ=="]),
        Refuse(401),
    ));
    t.push(v(
        4,
        "secret no credentials with X-User: alice",
        get("/secret", &["X-User: alice"]),
        Refuse(401),
    ));

    // 5. Client faults are not server faults.
    t.extend(client_faults());

    // 6. Exact limits (max_header_bytes = 32768).
    let big = 40 * 1024;
    let long_uri = get(&format!("/{}", "u".repeat(big)), &[]);
    let long_field = get("/big", &[&format!("X-Big: {}", "b".repeat(big))]);
    for (what, bytes) in [("40 KiB URI", &long_uri), ("40 KiB header", &long_field)] {
        for (how, writes) in [
            ("one write", Writes::One),
            ("1 byte then rest", Writes::FirstByteThenRest),
            ("1000-byte writes", Writes::Chunks(1000)),
        ] {
            t.push(w(
                6,
                &format!("{what} in {how} is 431"),
                bytes.clone(),
                writes,
                Refuse(431),
            ));
        }
    }
    for (how, writes) in [
        ("one write", Writes::One),
        ("1000-byte writes", Writes::Chunks(1000)),
    ] {
        t.push(w(
            6,
            &format!("30 KiB head in {how} is 200"),
            head_of_size("/thirty", 30 * 1024),
            writes,
            Forward(vec![Line("GET /thirty")]),
        ));
    }
    t.push(v(
        6,
        "30 KiB URI is 200",
        get(&format!("/{}", "u".repeat(30 * 1024)), &[]),
        Forward(vec![]),
    ));
    t.push(v(
        6,
        "head 64 bytes under the limit is 200",
        head_of_size("/under", HEAD_LIMIT - 64),
        Forward(vec![Line("GET /under")]),
    ));
    t.push(v(
        6,
        "head 64 bytes over the limit is 431",
        head_of_size("/over", HEAD_LIMIT + 64),
        Refuse(431),
    ));
    t.push(v(
        6,
        "100 header fields is 200",
        head_with_fields("/fields100", 100),
        Forward(vec![Line("GET /fields100")]),
    ));
    t.push(v(
        6,
        "101 header fields is 431",
        head_with_fields("/fields101", 101),
        Refuse(431),
    ));
    t.push(v(
        6,
        "500 header fields is 431",
        head_with_fields("/fields500", 500),
        Refuse(431),
    ));
    t.push(v(
        6,
        "Content-Length: 010 reaches the server as 10",
        post_raw("/cl010", "Content-Length: 010\r\n", b"0123456789"),
        Forward(vec![Header("content-length", "10"), Body(b"0123456789")]),
    ));
    t.push(v(
        6,
        "Content-Length: 0000 reaches the server as 0 or none",
        post_raw("/cl0000", "Content-Length: 0000\r\n", b""),
        RejectOr(vec![Line("POST /cl0000"), Body(b"")]),
    ));
    t.push(v(
        6,
        "websocket Upgrade on HTTP/1.0 is not passed",
        b"GET /ws HTTP/1.0\r\nHost: public.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".to_vec(),
        Forward(vec![Line("GET /ws"), NoHeader("upgrade")]),
    ));

    // 7. Framing: 4xx/close, or exactly one clean request.
    t.extend(framing());
    t
}

/// Section 5: bodies the client breaks. POSTs to the public route.
pub fn client_faults() -> Vec<Vector> {
    vec![
        v(
            5,
            "chunk size zz",
            post_raw(
                "/upload",
                "Transfer-Encoding: chunked\r\n",
                b"zz\r\nhello\r\n0\r\n\r\n",
            ),
            ClientFault,
        ),
        v(
            5,
            "chunk overruns its size",
            post_raw(
                "/upload",
                "Transfer-Encoding: chunked\r\n",
                b"5\r\nhelloEXTRA\r\n0\r\n\r\n",
            ),
            ClientFault,
        ),
        v(
            5,
            "chunk size with a bad second chunk",
            post_raw(
                "/upload",
                "Transfer-Encoding: chunked\r\n",
                b"5\r\nhello\r\nq\r\nx\r\n0\r\n\r\n",
            ),
            ClientFault,
        ),
        w(
            5,
            "client closes mid chunked body",
            post_raw("/upload", "Transfer-Encoding: chunked\r\n", b"a\r\nhel"),
            Writes::ThenHalfClose,
            ClientFault,
        ),
        w(
            5,
            "client closes mid Content-Length body",
            post_raw("/upload", "Content-Length: 100\r\n", b"0123456789"),
            Writes::ThenHalfClose,
            ClientFault,
        ),
    ]
}

/// Section 7: framing and parser regression guards.
fn framing() -> Vec<Vector> {
    let mut t = Vec::new();
    let cl_te_body = format!("0\r\n\r\n{SMUGGLED}");
    t.push(v(
        7,
        "CL.TE smuggle (CL covers a hidden request)",
        post_raw(
            "/f",
            &format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                cl_te_body.len()
            ),
            cl_te_body.as_bytes(),
        ),
        RejectOr(vec![Line("POST /f"), Body(b"")]),
    ));
    let te_cl_body = format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len());
    t.push(v(
        7,
        "TE.CL smuggle (chunk holds a request, CL: 4)",
        post_raw(
            "/f",
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
            te_cl_body.as_bytes(),
        ),
        RejectOr(vec![Line("POST /f"), Body(SMUGGLED.as_bytes())]),
    ));
    t.push(v(
        7,
        "TE chunked with Content-Length: 0",
        post_raw(
            "/f",
            "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
            CHUNKED_HELLO,
        ),
        RejectOr(vec![Line("POST /f"), Body(b"hello")]),
    ));
    for (name, lines) in [
        (
            "TE chunked, identity",
            "Transfer-Encoding: chunked, identity\r\n",
        ),
        (
            "TE identity, chunked",
            "Transfer-Encoding: identity, chunked\r\n",
        ),
        (
            "TE 'Transfer-Encoding : chunked'",
            "Transfer-Encoding : chunked\r\n",
        ),
        ("TE xchunked", "Transfer-Encoding: xchunked\r\n"),
        ("TE tab chunked", "Transfer-Encoding:\tchunked\r\n"),
        ("TE Chunked upper-case", "Transfer-Encoding: Chunked\r\n"),
        (
            "TE 'chunked ' trailing space",
            "Transfer-Encoding: chunked \r\n",
        ),
        ("TE 'chunked;x=1'", "Transfer-Encoding: chunked;x=1\r\n"),
        (
            "TE twice",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "TE chunked then identity headers",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        ),
        ("TE identity alone", "Transfer-Encoding: identity\r\n"),
        ("TE gzip alone", "Transfer-Encoding: gzip\r\n"),
        ("TE obs-folded", "Transfer-Encoding:\r\n chunked\r\n"),
        (
            "TE hidden in an obs-fold",
            "X-Foo: a\r\n Transfer-Encoding: chunked\r\n",
        ),
        ("TE with NUL", "Transfer-Encoding: chunked\0\r\n"),
        ("TE vertical tab", "Transfer-Encoding:\x0bchunked\r\n"),
    ] {
        t.push(v(
            7,
            name,
            post_raw("/f", lines, CHUNKED_HELLO),
            RejectOr(vec![Line("POST /f"), Body(b"hello")]),
        ));
    }
    t.push(v(
        7,
        "TE on HTTP/1.0",
        cat(&[
            b"POST /f HTTP/1.0\r\nHost: public.test\r\nTransfer-Encoding: chunked\r\n\r\n",
            CHUNKED_HELLO,
        ]),
        RejectOr(vec![Line("POST /f"), Body(b"hello")]),
    ));
    for (name, lines, body) in [
        (
            "CL 5 and CL 6",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            &b"hello!"[..],
        ),
        ("CL '5, 6'", "Content-Length: 5, 6\r\n", b"hello!"),
        (
            "CL 5 twice",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            b"hello",
        ),
        ("CL '5, 5'", "Content-Length: 5, 5\r\n", b"hello"),
        ("CL +5", "Content-Length: +5\r\n", b"hello"),
        ("CL 0x5", "Content-Length: 0x5\r\n", b"hello"),
        ("CL -5", "Content-Length: -5\r\n", b"hello"),
        ("CL 5.0", "Content-Length: 5.0\r\n", b"hello"),
        ("CL 5 with letters", "Content-Length: 5a\r\n", b"hello"),
        ("CL empty", "Content-Length: \r\n", b"hello"),
        (
            "CL huge",
            "Content-Length: 99999999999999999999999\r\n",
            b"hello",
        ),
        (
            "CL 'Content-Length : 5'",
            "Content-Length : 5\r\n",
            b"hello",
        ),
        ("CL obs-folded", "Content-Length:\r\n 5\r\n", b"hello"),
    ] {
        t.push(v(
            7,
            name,
            post_raw("/f", lines, body),
            RejectOr(vec![Line("POST /f"), Body(b"hello")]),
        ));
    }
    for (name, body) in [
        ("chunk extension 5;ext=1", &b"5;ext=1\r\nhello\r\n0\r\n\r\n"[..]),
        (
            "chunk extension with quoted CRLF",
            b"5;ext=\"a\r\nb\"\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "chunk extension hiding a request",
            b"5;x=\"\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: public.test\r\n\r\n\"\r\nhello\r\n0\r\n\r\n",
        ),
        ("chunk size 0005", b"0005\r\nhello\r\n0\r\n\r\n"),
        (
            "chunk size with 17 leading zeros",
            b"000000000000000005\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "chunk size fffffffffffffffff",
            b"fffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        ),
        ("chunk size '5 '", b"5 \r\nhello\r\n0\r\n\r\n"),
        ("chunk size -5", b"-5\r\nhello\r\n0\r\n\r\n"),
        ("chunk size 0x5", b"0x5\r\nhello\r\n0\r\n\r\n"),
        ("chunk with bare LF", b"5\nhello\n0\n\n"),
        ("chunk data ends in bare LF", b"5\r\nhello\n0\r\n\r\n"),
        ("trailer section", b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"),
        (
            "trailer Content-Length",
            b"5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n",
        ),
    ] {
        t.push(v(
            7,
            name,
            post_raw("/f", "Transfer-Encoding: chunked\r\n", body),
            RejectOr(vec![Line("POST /f"), Body(b"hello")]),
        ));
    }

    // Header-line syntax.
    for (name, lines) in [
        ("obs-fold continuation", "X-A: a\r\n b\r\n"),
        ("obs-fold with tab", "X-A: a\r\n\tb\r\n"),
        ("header name with space", "X A: b\r\n"),
        ("header name with NUL", "X\0A: b\r\n"),
        ("header value with NUL", "X-A: a\0b\r\n"),
        ("header value with bare CR", "X-A: a\rb\r\n"),
        ("header line with bare LF", "X-A: a\nX-B: b\r\n"),
        ("header line without colon", "X-A b\r\n"),
        ("empty header name", ": b\r\n"),
        ("header name with colon", "X:A: b\r\n"),
        ("header name with slash", "X/A: b\r\n"),
        ("header name non-ASCII", "X-\u{e9}: b\r\n"),
    ] {
        t.push(v(
            7,
            name,
            format!("GET /hdr HTTP/1.1\r\nHost: public.test\r\n{lines}\r\n").into_bytes(),
            RejectOr(vec![Line("GET /hdr")]),
        ));
    }
    t.push(v(
        7,
        "bare LF line endings",
        b"GET /bare-lf HTTP/1.1\nHost: public.test\n\n".to_vec(),
        RejectOr(vec![Line("GET /bare-lf")]),
    ));
    t.push(v(
        7,
        "bare CR line endings",
        b"GET /bare-cr HTTP/1.1\rHost: public.test\r\r\n\r\n".to_vec(),
        RejectOr(vec![Line("GET /bare-cr")]),
    ));
    t.push(v(
        7,
        "Host with space before colon",
        b"GET /hdr HTTP/1.1\r\nHost : internal.test\r\n\r\n".to_vec(),
        Reject,
    ));

    // Request-line syntax.
    for (name, line) in [
        ("two spaces in request line", "GET  /rl HTTP/1.1"),
        ("trailing space in request line", "GET /rl HTTP/1.1 "),
        ("missing version", "GET /rl"),
        ("HTTP/2.0 in text", "GET /rl HTTP/2.0"),
        ("HTTP/1.1x", "GET /rl HTTP/1.1x"),
        ("HTTP/1.2", "GET /rl HTTP/1.2"),
        ("HTTP/9.9", "GET /rl HTTP/9.9"),
        ("lower-case http/1.1", "GET /rl http/1.1"),
        ("NUL in the target", "GET /r\0l HTTP/1.1"),
        ("NUL after the method", "GET\0/rl HTTP/1.1"),
        ("tabs as separators", "GET\t/rl\tHTTP/1.1"),
        ("space in the target", "GET /r l HTTP/1.1"),
        ("fragment in the target", "GET /rl#frag HTTP/1.1"),
        ("asterisk-form GET", "GET * HTTP/1.1"),
        ("OPTIONS *", "OPTIONS * HTTP/1.1"),
        ("authority-form GET", "GET public.test:80 HTTP/1.1"),
        ("scheme-less absolute", "GET public.test/rl HTTP/1.1"),
        ("ftp absolute-form", "GET ftp://internal.test/rl HTTP/1.1"),
        ("empty method", " /rl HTTP/1.1"),
    ] {
        t.push(v(
            7,
            name,
            format!("{line}\r\nHost: public.test\r\n\r\n").into_bytes(),
            RejectOr(vec![Line("GET /rl")]),
        ));
    }
    t.push(v(
        7,
        "lower-case method is another method",
        b"get /rl HTTP/1.1\r\nHost: public.test\r\n\r\n".to_vec(),
        RejectOr(vec![Line("get /rl")]),
    ));
    t.push(v(
        7,
        "raw non-ASCII in the target",
        "GET /r\u{e9}l HTTP/1.1\r\nHost: public.test\r\n\r\n"
            .as_bytes()
            .to_vec(),
        RejectOr(vec![Line("GET /r%C3%A9l")]),
    ));
    t.push(v(
        7,
        "empty line before the request line",
        b"\r\nGET /lead HTTP/1.1\r\nHost: public.test\r\n\r\n".to_vec(),
        RejectOr(vec![Line("GET /lead")]),
    ));
    t.push(v(
        7,
        "network-path target //internal.test/x",
        get("//internal.test/x", &[]),
        Forward(vec![
            Line("GET /internal.test/x"),
            Header("host", "public.test"),
        ]),
    ));
    t.push(v(
        7,
        "absolute-form with bad port",
        b"GET http://public.test:99999/ HTTP/1.1\r\nHost: public.test\r\n\r\n".to_vec(),
        Reject,
    ));

    // Upgrades and other protocols.
    let h2c = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n";
    t.push(v(
        7,
        "h2c upgrade is not passed",
        format!("GET /h2c HTTP/1.1\r\nHost: public.test\r\n{h2c}\r\n").into_bytes(),
        RejectOr(vec![
            Line("GET /h2c"),
            NoHeader("upgrade"),
            NoHeader("http2-settings"),
        ]),
    ));
    t.push(v(
        7,
        "h2c upgrade on /admin",
        format!("GET /admin HTTP/1.1\r\nHost: public.test\r\n{h2c}\r\n").into_bytes(),
        Refuse(403),
    ));
    t.push(v(
        7,
        "websocket upgrade on /admin",
        b"GET /admin HTTP/1.1\r\nHost: public.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".to_vec(),
        Refuse(403),
    ));
    t.push(v(
        7,
        "HTTP/2 preface on the HTTP/1 port",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        Reject,
    ));
    t.push(v(
        7,
        "CONNECT a:443 is 405",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n".to_vec(),
        Refuse(405),
    ));
    t.push(v(
        7,
        "CONNECT internal.test:80 is 405",
        b"CONNECT internal.test:80 HTTP/1.1\r\nHost: internal.test:80\r\n\r\n".to_vec(),
        Refuse(405),
    ));

    // Expect: 100-continue on refused routes.
    for (path, extra, status) in [
        ("/secret", "", 401),
        ("/admin", "", 403),
        ("/fa/x", "Authorization: Bearer bad\r\n", 401),
    ] {
        t.push(v(
            7,
            &format!("Expect 100-continue on {path} (no body sent)"),
            format!(
                "POST {path} HTTP/1.1\r\nHost: public.test\r\n{extra}Content-Length: 5\r\nExpect: 100-continue\r\n\r\n"
            )
            .into_bytes(),
            RefuseNo100(status),
        ));
    }
    t.push(v(
        7,
        "Expect 100-continue on /admin with a request as body",
        post_raw(
            "/admin",
            &format!(
                "Content-Length: {}\r\nExpect: 100-continue\r\n",
                SMUGGLED.len()
            ),
            SMUGGLED.as_bytes(),
        ),
        Refuse(403),
    ));
    t.push(v(
        7,
        "refused POST /secret with a request as body",
        post_raw(
            "/secret",
            &format!("Content-Length: {}\r\n", SMUGGLED.len()),
            SMUGGLED.as_bytes(),
        ),
        Refuse(401),
    ));
    t.push(v(
        7,
        "refused chunked POST /admin with a request in the chunk",
        post_raw(
            "/admin",
            "Transfer-Encoding: chunked\r\n",
            te_cl_body.as_bytes(),
        ),
        Refuse(403),
    ));

    // Pipelining after a refused request.
    let second = "GET /second HTTP/1.1\r\nHost: public.test\r\n\r\n";
    for (name, first, status) in [
        (
            "pipelined after a 403",
            "GET /admin HTTP/1.1\r\nHost: public.test\r\n\r\n".to_string(),
            403,
        ),
        (
            "pipelined after a 400",
            "GET /%zz HTTP/1.1\r\nHost: public.test\r\n\r\n".to_string(),
            400,
        ),
        (
            "pipelined after a 401 with a body",
            "POST /secret HTTP/1.1\r\nHost: public.test\r\nContent-Length: 5\r\n\r\nhello"
                .to_string(),
            401,
        ),
        (
            "pipelined after a chunked 403",
            "POST /admin HTTP/1.1\r\nHost: public.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .to_string(),
            403,
        ),
        (
            "pipelined after a 405 CONNECT",
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n".to_string(),
            405,
        ),
        (
            "pipelined after a 400 Host",
            "GET / HTTP/1.1\r\nHost: a.test:1:2\r\n\r\n".to_string(),
            400,
        ),
    ] {
        t.push(v(
            7,
            name,
            format!("{first}{second}").into_bytes(),
            Pipelined {
                first: status,
                second: "/second",
            },
        ));
    }
    t
}
