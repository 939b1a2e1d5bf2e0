#!/usr/bin/env python3
"""The lab's services on the bridge address, run as one small daemon per lab.

- a threaded static HTTP server on BRIDGE:8080 serving the lab's www directory (the stand-ins'
  signed apt repository and anything else nodes must download);
- a TCP forwarder BRIDGE:3142 -> 127.0.0.1:3142 (the host's apt-cacher-ng), unless the bridge
  address already answers on 3142 (an apt-cacher-ng listening on all addresses).

Standalone on purpose (no imports from the lab package): ``Lab.up`` starts it with
``python3 services.py --bind IP --www DIR`` and ``Lab.down`` kills it by pid.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import signal
import socket
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

HTTP_PORT = 8080
ACNG_PORT = 3142


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write("http: " + (format % args) + "\n")


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _forward(client: socket.socket, target: tuple[str, int]) -> None:
    try:
        upstream = socket.create_connection(target, timeout=10)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
    back.start()
    _pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


def serve_forwarder(bind: str, port: int, target: tuple[str, int]) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((bind, port))
    listener.listen(128)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_forward, args=(client, target), daemon=True).start()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bind", required=True, help="the lab bridge address")
    parser.add_argument("--www", required=True, help="directory served over HTTP")
    parser.add_argument("--no-forward", action="store_true", help="do not forward :3142")
    args = parser.parse_args()

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    if not args.no_forward:
        threading.Thread(
            target=serve_forwarder,
            args=(args.bind, ACNG_PORT, ("127.0.0.1", ACNG_PORT)),
            daemon=True,
        ).start()
    handler = functools.partial(QuietHandler, directory=args.www)
    server = ThreadingHTTPServer((args.bind, HTTP_PORT), handler)
    server.daemon_threads = True
    print(f"serving {args.www} on http://{args.bind}:{HTTP_PORT}", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
