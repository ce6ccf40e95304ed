"""A real websocket client (the `websockets` package) for the websocket example's test.

    python3 ws_client.py URL [COOKIE] [MESSAGE ...]

Opens URL, sends each MESSAGE and reads its echo, closes. Prints one JSON object: the handshake
status, the answering server's name (X-Whoami-Name of the 101 response), the Set-Cookie
header of the handshake if any, and the echoes. Exits 1 with the error on stderr when the
handshake or an echo fails (bounded by timeouts, never hangs).
"""

import json
import sys

from websockets.sync.client import connect


def main() -> int:
    url = sys.argv[1]
    cookie = sys.argv[2] if len(sys.argv) > 2 else ""
    messages = sys.argv[3:]
    headers = {"Cookie": cookie} if cookie else {}
    try:
        with connect(url, additional_headers=headers, open_timeout=10, close_timeout=5) as ws:
            echoes = []
            for m in messages:
                ws.send(m)
                echoes.append(ws.recv(timeout=10))
            resp = ws.response
            print(json.dumps({
                "status": resp.status_code,
                "server": resp.headers.get("X-Whoami-Name"),
                "set_cookie": resp.headers.get("Set-Cookie"),
                "echoes": echoes,
            }))
    except Exception as e:  # the test prints this
        print(f"ws_client: {url}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
