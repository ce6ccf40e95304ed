#!/usr/bin/env python3
"""A gRPC server and client (PyPI grpcio, generic handlers on raw bytes: no protoc), for
tests/it/grpc.rs.

    grpc_pair.py server PORT          serves /echo.Echo/{Unary,ServerStream,ClientStream,Bidi,Fail,
                                      Slow,Peer} for at most 120 s
    grpc_pair.py client TARGET [CA NAME]   calls each through TARGET (TLS when CA is given, with
                                            NAME as the server name), prints one JSON verdict
    grpc_pair.py peers TARGET N       N concurrent Peer calls (one channel), prints the distinct
                                      peers the server saw (the router's upstream connections)
                                      and the failures, as JSON
"""

import json
import sys
import time
from concurrent import futures

import grpc

SVC = "echo.Echo"


def ident(b):
    return b


def serve(port):
    def unary(req, ctx):
        return b"unary:" + req

    def server_stream(req, ctx):
        for i in range(3):
            yield b"part%d:" % i + req

    def client_stream(reqs, ctx):
        return b"+".join(reqs)

    def bidi(reqs, ctx):
        for r in reqs:
            yield b"echo:" + r

    def fail(req, ctx):
        ctx.abort(grpc.StatusCode.PERMISSION_DENIED, "no entry for " + req.decode())

    def slow(req, ctx):
        time.sleep(3)
        return req

    def peer(req, ctx):
        return ctx.peer().encode()

    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, ident, ident),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, ident, ident),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, ident, ident),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi, ident, ident),
        "Fail": grpc.unary_unary_rpc_method_handler(fail, ident, ident),
        "Slow": grpc.unary_unary_rpc_method_handler(slow, ident, ident),
        "Peer": grpc.unary_unary_rpc_method_handler(peer, ident, ident),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SVC, handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination(timeout=120)


def client(target, ca=None, name=None):
    if ca:
        creds = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
        ch = grpc.secure_channel(target, creds, options=[("grpc.ssl_target_name_override", name),
                                                         ("grpc.default_authority", name)])
    else:
        ch = grpc.insecure_channel(target)
    m = lambda kind, name: getattr(ch, kind)(f"/{SVC}/{name}", request_serializer=ident,
                                             response_deserializer=ident)
    out = {}
    out["unary"] = m("unary_unary", "Unary")(b"hi", timeout=10).decode()
    out["server_stream"] = [r.decode() for r in m("unary_stream", "ServerStream")(b"x", timeout=10)]
    out["client_stream"] = m("stream_unary", "ClientStream")(iter([b"a", b"b", b"c"]), timeout=10).decode()
    out["bidi"] = [r.decode() for r in m("stream_stream", "Bidi")(iter([b"1", b"2"]), timeout=10)]
    try:
        m("unary_unary", "Fail")(b"bob", timeout=10)
        out["fail"] = "no error"
    except grpc.RpcError as e:
        out["fail"] = [e.code().name, e.details()]
    try:
        m("unary_unary", "Slow")(b"z", timeout=10)
        out["slow"] = "no error"
    except grpc.RpcError as e:
        out["slow"] = [e.code().name, e.details()]
    print(json.dumps(out), flush=True)


def peers(target, n):
    ch = grpc.insecure_channel(target)
    call = ch.unary_unary(f"/{SVC}/Peer", request_serializer=ident, response_deserializer=ident)
    futs = [call.future(b"", timeout=10) for _ in range(n)]
    seen, failed = set(), []
    for f in futs:
        try:
            seen.add(f.result().decode())
        except grpc.RpcError as e:
            failed.append([e.code().name, e.details()])
    print(json.dumps({"peers": sorted(seen), "failed": failed}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    elif sys.argv[1] == "peers":
        peers(sys.argv[2], int(sys.argv[3]))
    else:
        client(sys.argv[2], *(sys.argv[3:5] if len(sys.argv) > 4 else []))
