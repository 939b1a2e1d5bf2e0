#!/usr/bin/env python3
"""The lab's services on the bridge address, run as one small daemon per lab.

- a threaded static HTTP server on BRIDGE:8080 serving the lab's www directory (the stand-ins'
  signed apt repository and anything else nodes must download);
- a TCP forwarder BRIDGE:3142 -> 127.0.0.1:3142 (the host's apt-cacher-ng), unless the bridge
  address already answers on 3142 (an apt-cacher-ng listening on all addresses). SIGUSR1 takes
  it down (listener closed, open connections cut: the lab's apt proxy is "down" for its nodes
  only, the shared apt-cacher-ng keeps running), SIGUSR2 brings it back.

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


class Forwarder:
    """BIND:PORT -> TARGET, which can be taken down (refusing, connections cut) and back up."""

    def __init__(self, bind: str, port: int, target: tuple[str, int]) -> None:
        self.address = (bind, port)
        self.target = target
        self.lock = threading.Lock()
        self.listener: socket.socket | None = None
        self.open: set[socket.socket] = set()

    def up(self) -> None:
        with self.lock:
            if self.listener is not None:
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(self.address)
            listener.listen(128)
            self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        print(f"forwarder: up on {self.address}", file=sys.stderr, flush=True)

    def down(self) -> None:
        with self.lock:
            listener, self.listener = self.listener, None
            sockets, self.open = self.open, set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        print(f"forwarder: down ({len(sockets)} sockets cut)", file=sys.stderr, flush=True)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # taken down
            threading.Thread(target=self._forward, args=(client,), daemon=True).start()

    def _forward(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self.lock:
            if self.listener is None:  # went down while connecting
                upstream.close()
                client.close()
                return
            self.open |= {client, upstream}
        back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
        back.start()
        _pipe(client, upstream)
        back.join()
        with self.lock:
            self.open -= {client, upstream}
        client.close()
        upstream.close()


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
        forwarder = Forwarder(args.bind, ACNG_PORT, ("127.0.0.1", ACNG_PORT))
        forwarder.up()
        # Handlers run in the main thread between the HTTP server's polls (every 0.5 s).
        signal.signal(signal.SIGUSR1, lambda signum, frame: forwarder.down())
        signal.signal(signal.SIGUSR2, lambda signum, frame: forwarder.up())
    handler = functools.partial(QuietHandler, directory=args.www)
    server = ThreadingHTTPServer((args.bind, HTTP_PORT), handler)
    server.daemon_threads = True
    print(f"serving {args.www} on http://{args.bind}:{HTTP_PORT}", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
