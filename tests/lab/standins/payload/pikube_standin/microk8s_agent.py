"""MicroK8s cluster agent stand-in (:25000): accepts `microk8s join` requests.

Contract from https://microk8s.io/docs/clustering and join.py / add_token.py in
https://github.com/canonical/microk8s: tokens live in credentials/cluster-tokens.txt as
"token" (single use) or "token|expiry" (valid until expiry); an unknown, used or
expired token is answered with HTTP 500 {"error": "Invalid token"}.
"""

from __future__ import annotations

import json
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import common, pki
from . import microk8s_dqlite as dqlite
from .etcd import EtcdError
from .microk8s import agent_port, api_port, bind_address, data

LOCK = threading.Lock()
JOIN_LOCK = threading.Lock()


def consume_token(token: str) -> bool:
    f = data() / "credentials/cluster-tokens.txt"
    with LOCK:
        lines = f.read_text().splitlines() if f.exists() else []
        keep, ok = [], False
        now = time.time()
        for line in lines:
            tok, _, exp = line.partition("|")
            if exp and float(exp) < now:
                continue  # expired tokens are dropped
            if tok == token and not ok:
                ok = True
                if exp:
                    keep.append(line)  # tokens with a TTL stay valid until they expire
                continue  # tokens without a TTL are single-use
            keep.append(line)
        common.write_file(f, "".join(x + "\n" for x in keep), 0o600)
    return ok


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, code: int, obj: dict[str, Any]) -> None:
        raw = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        self.reply(404, {"error": "Not found"})

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        try:
            req = json.loads(self.rfile.read(n) or b"{}")
        except ValueError:
            self.reply(400, {"error": "Invalid request"})
            return
        if self.path.rstrip("/") != "/cluster/api/v2.0/join":
            self.reply(404, {"error": "Not found"})
            return
        if (data() / "credentials/join.json").exists() or not consume_token(
            str(req.get("token", ""))
        ):
            self.reply(500, {"error": "Invalid token"})
            return
        certs = data() / "certs"
        ca, ca_key = (certs / "ca.crt").read_bytes(), (certs / "ca.key").read_bytes()
        host = str(req.get("hostname", "")).lower()
        ip = str(req.get("ip") or self.client_address[0])
        crt, key = pki.issue(
            ca, ca_key, f"system:node:{host}", orgs=["system:nodes"], sans=[host, ip]
        )
        resp: dict[str, Any] = {
            "ca": ca.decode(),
            "api": f"{common.default_ip()}:{api_port()}",
            "kubelet_cert": crt.decode(),
            "kubelet_key": key.decode(),
            "api_port": str(api_port()),
            "hostname_override": ip,
        }
        if not req.get("worker"):
            resp["admin_cert"] = (certs / "admin.crt").read_text()
            resp["admin_key"] = (certs / "admin.key").read_text()
            # join_dqlite_master_node(): the cluster's CA key and the datastore to join
            resp["ca_key"] = ca_key.decode()
            try:
                with JOIN_LOCK:  # one datastore member is added at a time
                    resp["voters"], resp["initial_cluster"] = dqlite.add_member(
                        host, str(req.get("dqlite_address") or dqlite.address(ip))
                    )
            except EtcdError as e:
                self.reply(500, {"error": f"Failed to add the node to dqlite: {e.message}"})
                return
        self.reply(200, resp)


def main() -> int:
    common.start_watchdog()
    srv = ThreadingHTTPServer((bind_address(), agent_port()), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(data() / "certs/server.crt"), str(data() / "certs/server.key"))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
    srv.daemon_threads = True
    common.log(f"cluster agent stand-in listening on {bind_address()}:{agent_port()}")
    srv.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
