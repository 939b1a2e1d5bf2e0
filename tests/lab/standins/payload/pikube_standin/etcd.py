"""etcd for the stand-ins: a v3 client over etcd's JSON gRPC gateway, and the static Pod runner.

The client speaks etcd's v3 API through the gRPC gateway every etcd >= 3.4 serves on its client
port (POST /v3/kv/range, /v3/kv/txn, /v3/watch, /v3/cluster/member/*, /v3/maintenance/status;
keys and values base64, 64-bit numbers as strings) with TLS client certificates, like
kube-apiserver's --etcd-cafile/--etcd-certfile/--etcd-keyfile. No third-party module.

``python3 -m pikube_standin.etcd --from-manifest /etc/kubernetes/manifests/etcd.yaml`` runs
Debian's etcd (``PIKUBE_STANDIN_ETCD_BIN``, default /usr/bin/etcd) with the flags kubeadm wrote
into the etcd static Pod manifest, as the kubelet would run the etcd container.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import platform
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import common


class EtcdError(Exception):
    """An error answered by etcd (``message`` as etcdctl prints it) or no etcd reachable."""

    def __init__(self, message: str, code: int = 14) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def unb64(s: str) -> bytes:
    return base64.b64decode(s)


def prefix_end(prefix: str) -> str:
    """etcd's range_end for every key starting with ``prefix`` (clientv3.GetPrefixRangeEnd)."""
    raw = bytearray(prefix.encode())
    for i in range(len(raw) - 1, -1, -1):
        if raw[i] < 0xFF:
            raw[i] += 1
            return b64(bytes(raw[: i + 1]))
    return b64(b"\0")


class Etcd:
    """A v3 client for one or more client URLs (tried in order, like etcdctl --endpoints)."""

    def __init__(
        self,
        endpoints: list[str],
        *,
        ca: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.endpoints = [e.rstrip("/") for e in endpoints if e]
        self.timeout = timeout
        self.ctx: ssl.SSLContext | None = None
        if any(e.startswith("https://") for e in self.endpoints):
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
            if ca is not None:
                ctx.load_verify_locations(cafile=str(ca))
            if cert is not None and key is not None:
                ctx.load_cert_chain(str(cert), str(key))
            self.ctx = ctx

    def _conn(self, endpoint: str, timeout: float) -> http.client.HTTPConnection:
        u = urllib.parse.urlsplit(endpoint)
        host, port = u.hostname or "127.0.0.1", u.port or 2379
        if u.scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=self.ctx)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def call(self, api: str, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """POST /v3/<api>; the first endpoint that answers wins. Raises EtcdError."""
        last = "context deadline exceeded"
        for ep in self.endpoints:
            conn = self._conn(ep, timeout or self.timeout)
            try:
                conn.request(
                    "POST", f"/v3/{api}", json.dumps(body), {"Content-Type": "application/json"}
                )
                resp = conn.getresponse()
                raw = resp.read()
            except (OSError, http.client.HTTPException) as e:
                last = f"dial {ep}: {e}"
                continue
            finally:
                conn.close()
            try:
                doc: dict[str, Any] = json.loads(raw or b"{}")
            except ValueError:
                raise EtcdError(raw.decode(errors="replace")) from None
            if resp.status != 200 or "error" in doc:
                raise EtcdError(
                    str(doc.get("message") or doc.get("error")), int(doc.get("code", 2))
                )
            return doc
        raise EtcdError(last)

    # ---- kv
    def range(
        self,
        key: str,
        *,
        prefix: bool = False,
        count_only: bool = False,
        serializable: bool = False,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"key": b64(key)}
        if prefix:
            body["range_end"] = prefix_end(key)
        if count_only:
            body["count_only"] = True
        if serializable:
            body["serializable"] = True
        return self.call("kv/range", body)

    def get(self, key: str) -> dict[str, Any] | None:
        kvs = self.range(key).get("kvs") or []
        return kvs[0] if kvs else None

    def put(self, key: str, value: bytes | str) -> int:
        return int(
            self.call("kv/put", {"key": b64(key), "value": b64(value)})["header"]["revision"]
        )

    def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]]) -> tuple[bool, int]:
        """A mini-transaction; returns (succeeded, revision after it)."""
        doc = self.call("kv/txn", {"compare": compare, "success": success})
        return bool(doc.get("succeeded")), int(doc["header"]["revision"])

    def watch(self, start_revision: int, stop: Callable[[], bool]) -> Iterator[dict[str, Any]]:
        """Watch every key from ``start_revision``: yields the gateway's ``result`` messages
        (header + events) until the stream ends, ``stop()`` is true or etcd goes away."""
        body = {
            "create_request": {
                "key": b64(b"\0"),
                "range_end": b64(b"\0"),
                "start_revision": str(start_revision),
                "progress_notify": True,
            }
        }
        last = "no endpoint"
        for ep in self.endpoints:
            conn = self._conn(ep, 30.0)  # etcd sends a progress notification every 5 s
            try:
                conn.request("POST", "/v3/watch", json.dumps(body))
                resp = conn.getresponse()
                if resp.status != 200:
                    raise EtcdError(resp.read().decode(errors="replace"))
                while not stop():
                    line = resp.readline()
                    if not line:
                        return
                    doc = json.loads(line)
                    if "error" in doc:
                        raise EtcdError(str(doc["error"].get("message", doc["error"])))
                    yield doc.get("result", {})
                return
            except (OSError, http.client.HTTPException, ValueError) as e:
                last = f"{ep}: {e}"
            finally:
                conn.close()
        raise EtcdError(f"watch: {last}")

    # ---- cluster
    def members(self) -> list[dict[str, Any]]:
        return list(self.call("cluster/member/list", {}).get("members") or [])

    def member_add(self, peer_urls: list[str]) -> dict[str, Any]:
        return self.call("cluster/member/add", {"peerURLs": peer_urls})

    def member_remove(self, member_id: str) -> None:
        self.call("cluster/member/remove", {"ID": member_id})

    def status(self, timeout: float | None = None) -> dict[str, Any]:
        return self.call("maintenance/status", {}, timeout=timeout)


# --------------------------------------------------------------------------- static Pod runner
def etcd_binary() -> str:
    return common.env("PIKUBE_STANDIN_ETCD_BIN", "/usr/bin/etcd")


def supervise(args: list[str]) -> int:
    """Run etcd with ``args`` in the foreground (the service's main process): signals are
    passed on, its exit status returned; in tests it goes with the test process."""
    env = dict(os.environ)
    if platform.machine() in ("aarch64", "arm64"):  # etcd 3.4 runs on arm64 only when told to
        env["ETCD_UNSUPPORTED_ARCH"] = "arm64"
    proc = subprocess.Popen([etcd_binary(), *args], stdin=subprocess.DEVNULL, env=env)
    watched = os.environ.get("PIKUBE_STANDIN_WATCH_PID")
    if watched:  # tests: etcd goes when the test process goes (even after SIGKILL)

        def watchdog() -> None:
            while proc.poll() is None:
                try:
                    os.kill(int(watched), 0)
                except ProcessLookupError:
                    proc.kill()
                    return
                time.sleep(2)

        threading.Thread(target=watchdog, daemon=True).start()

    def forward(signum: int, _frame: Any) -> None:
        proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    rc = proc.wait()
    return rc if rc >= 0 else 128 - rc


def main(argv: list[str] | None = None) -> int:
    import yaml

    args = sys.argv[1:] if argv is None else argv
    if not args:
        args = ["--from-manifest", str(common.path("/etc/kubernetes/manifests/etcd.yaml"))]
    if len(args) != 2 or args[0] != "--from-manifest":
        return common.die("usage: python3 -m pikube_standin.etcd --from-manifest FILE", 2)
    manifest = Path(args[1])
    if not manifest.exists():
        return common.die(f"{manifest} does not exist (kubeadm has not configured etcd)", 1)
    pod = yaml.safe_load(manifest.read_text())
    command = [str(c) for c in pod["spec"]["containers"][0]["command"]]
    return supervise(command[1:])


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main())
