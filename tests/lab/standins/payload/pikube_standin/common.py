"""Shared plumbing of the Kubernetes / MicroK8s stand-ins (runs inside lab nodes).

Every filesystem path and port goes through this module so the same code runs
on a lab node (real paths) and in contract tests on the host (a temp root,
loopback addresses, high ports).  See ../../README.md, "Configuration".
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
LIB_DIR = PACKAGE_DIR.parent


def env(name: str, default: str) -> str:
    return os.environ.get(name, default) or default


def root() -> Path:
    """Prefix for every node path (PIKUBE_STANDIN_ROOT, default /)."""
    return Path(env("PIKUBE_STANDIN_ROOT", "/"))


def path(p: str) -> Path:
    """A node path such as /etc/kubernetes, under the configured root."""
    return root() / p.lstrip("/")


def proc(p: str) -> Path:
    """A /proc path (PIKUBE_STANDIN_PROC replaces /proc, for tests)."""
    return Path(env("PIKUBE_STANDIN_PROC", "/proc")) / p.lstrip("/")


def node_name() -> str:
    return env("PIKUBE_STANDIN_NODE_NAME", socket.gethostname()).lower()


def default_ip() -> str:
    """The node's address: PIKUBE_STANDIN_NODE_IP, else the default-route source."""
    ip = os.environ.get("PIKUBE_STANDIN_NODE_IP")
    if ip:
        return ip
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("10.255.255.255", 9))  # no packet is sent for a UDP connect
        addr: str = s.getsockname()[0]
        if not addr.startswith("127."):
            return addr
    # no default route: the first global IPv4 address, as kubelet's node IP detection would
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["ip", "-o", "-4", "addr", "show", "scope", "global"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout
        for line in out.splitlines():
            parts = line.split()
            if "inet" in parts:
                return parts[parts.index("inet") + 1].split("/")[0]
    return "127.0.0.1"


def apiserver_port() -> int:
    return int(env("PIKUBE_STANDIN_APISERVER_PORT", "6443"))


def installed_version(component: str) -> str:
    """Version baked into the package at build time (e.g. 1.31.13)."""
    override = os.environ.get("PIKUBE_STANDIN_VERSION")
    if override:
        return override
    f = LIB_DIR / "VERSION"
    if f.exists():
        return f.read_text().strip()
    return "1.31.13"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def die(msg: str, code: int = 1) -> int:
    print(msg, file=sys.stderr, flush=True)
    return code


def write_file(p: Path, data: str | bytes, mode: int = 0o644) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(raw)
    os.chmod(tmp, mode)
    os.replace(tmp, p)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --------------------------------------------------------------------------- kubeconfig
def kubeconfig(
    server: str,
    ca_pem: bytes,
    user: str,
    *,
    cert_pem: bytes | None = None,
    key_pem: bytes | None = None,
    token: str | None = None,
    cluster: str = "kubernetes",
    tls_server_name: str | None = None,
) -> str:
    u: dict[str, str] = {}
    if cert_pem is not None and key_pem is not None:
        u = {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}
    if token is not None:
        u["token"] = token
    context = f"{user}@{cluster}"
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {
                    "certificate-authority-data": b64(ca_pem),
                    "server": server,
                    **({"tls-server-name": tls_server_name} if tls_server_name else {}),
                },
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": user}}],
        "current-context": context,
        "preferences": {},
        "users": [{"name": user, "user": u}],
    }
    import yaml

    return str(yaml.safe_dump(doc, sort_keys=False))


def load_kubeconfig(p: Path) -> dict[str, Any]:
    import yaml

    doc = yaml.safe_load(p.read_text())
    cluster = doc["clusters"][0]["cluster"]
    user = doc["users"][0]["user"]
    return {
        "server": cluster["server"],
        "ca": base64.b64decode(cluster["certificate-authority-data"]),
        "cert": base64.b64decode(user["client-certificate-data"])
        if "client-certificate-data" in user
        else None,
        "key": base64.b64decode(user["client-key-data"]) if "client-key-data" in user else None,
        "token": user.get("token"),
        "tls_server_name": cluster.get("tls-server-name"),
    }


# --------------------------------------------------------------------------- HTTP client
class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any] | str, url: str) -> None:
        self.status = status
        self.body = body
        self.url = url
        msg = body.get("message", "") if isinstance(body, dict) else body
        super().__init__(f"{status}: {msg}")


class ServerNameContext(ssl.SSLContext):
    """A client context that checks the server's certificate for a fixed name instead of the
    URL's host: kubeconfig's `tls-server-name` (client-go's rest.TLSClientConfig.ServerName)."""

    server_name = ""

    @classmethod
    def create(cls, server_name: str) -> ServerNameContext:
        ctx = cls(ssl.PROTOCOL_TLS_CLIENT)
        ctx.server_name = server_name
        return ctx

    def wrap_socket(self, sock: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs["server_hostname"] = self.server_name
        return super().wrap_socket(sock, *args, **kwargs)


class Client:
    """Minimal HTTPS client for the API emulator (client cert or bearer token)."""

    def __init__(
        self,
        server: str,
        *,
        ca_pem: bytes | None = None,
        cert_pem: bytes | None = None,
        key_pem: bytes | None = None,
        token: str | None = None,
        insecure: bool = False,
        timeout: float = 10.0,
        server_name: str | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.token = token
        self.timeout = timeout
        ctx = (
            ServerNameContext.create(server_name)
            if server_name
            else ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        )
        if insecure or ca_pem is None:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx.load_verify_locations(cadata=ca_pem.decode())
            ctx.check_hostname = True
        if cert_pem is not None and key_pem is not None:
            tmpdir = path("/run/pikube-standin/tmp")
            tmpdir.mkdir(parents=True, exist_ok=True)
            tmp = tmpdir / f"client-{os.getpid()}-{id(self)}.pem"
            write_file(tmp, cert_pem + key_pem, 0o600)
            try:
                ctx.load_cert_chain(str(tmp))
            finally:
                tmp.unlink()
        self.ctx = ctx

    @classmethod
    def from_kubeconfig(cls, p: Path, **kw: Any) -> Client:
        kc = load_kubeconfig(p)
        return cls(
            kc["server"],
            ca_pem=kc["ca"],
            cert_pem=kc["cert"],
            key_pem=kc["key"],
            token=kc["token"],
            server_name=kc["tls_server_name"],
            **kw,
        )

    def request(
        self, method: str, url: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + url, data=data, method=method)  # noqa: S310
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=self.timeout) as resp:  # noqa: S310
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                parsed: dict[str, Any] | str = json.loads(raw)
            except ValueError:
                parsed = raw.decode(errors="replace")
            raise ApiError(e.code, parsed, url) from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")

    def get(self, url: str) -> Any:
        return self.request("GET", url)

    def post(self, url: str, body: Any) -> Any:
        return self.request("POST", url, body)

    def patch(self, url: str, body: Any) -> Any:
        return self.request("PATCH", url, body, "application/merge-patch+json")

    def delete(self, url: str) -> Any:
        return self.request("DELETE", url)


# --------------------------------------------------------------------------- services
def service_mode() -> str:
    """How stand-ins start daemons: 'systemd' on nodes, 'spawn' in host tests."""
    mode = os.environ.get("PIKUBE_STANDIN_SERVICES")
    if mode:
        return mode
    return "systemd" if Path("/run/systemd/system").is_dir() and root() == Path("/") else "spawn"


def _pidfile(unit: str) -> Path:
    return path(f"/run/pikube-standin/{unit}.pid")


def spawn_argv(unit: str) -> list[str]:
    """argv of the daemon behind a unit in spawn mode (same code as the systemd unit runs)."""
    mod = {
        "kubelet": "pikube_standin.kubelet",
        "pikube-standin-apiserver": "pikube_standin.apiserver",
        "pikube-standin-etcd": "pikube_standin.etcd",
        "snap.microk8s.daemon-kubelite": "pikube_standin.microk8s_daemon",
        "snap.microk8s.daemon-cluster-agent": "pikube_standin.microk8s_agent",
        "snap.microk8s.daemon-k8s-dqlite": "pikube_standin.microk8s_dqlite",
        "snap.microk8s.daemon-apiserver-proxy": "pikube_standin.microk8s_apiserver_proxy",
    }[unit]
    return [sys.executable, "-m", mod]


def service_start(unit: str, *, restart: bool = True) -> None:
    if service_mode() == "systemd":
        subprocess.run(["systemctl", "enable", unit], check=False, capture_output=True)
        subprocess.run(
            ["systemctl", "restart" if restart else "start", unit], check=True, capture_output=True
        )
        return
    if restart:
        service_stop(unit)
    elif service_active(unit):
        return
    logf = path(f"/var/log/pikube-standin/{unit}.log")
    logf.parent.mkdir(parents=True, exist_ok=True)
    envv = dict(os.environ)
    envv["PYTHONPATH"] = str(LIB_DIR) + os.pathsep + envv.get("PYTHONPATH", "")
    with open(logf, "ab") as out:
        proc_ = subprocess.Popen(
            spawn_argv(unit),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=envv,
            start_new_session=True,
        )
    write_file(_pidfile(unit), str(proc_.pid))


def service_active(unit: str) -> bool:
    if service_mode() == "systemd":
        r = subprocess.run(["systemctl", "is-active", "--quiet", unit], check=False)
        return r.returncode == 0
    pf = _pidfile(unit)
    if not pf.exists():
        return False
    try:
        return _alive(int(pf.read_text()))
    except ValueError:
        return False


def _alive(pid: int) -> bool:
    """True while pid runs (a zombie awaiting its reaper counts as gone)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return not stat.split(") ", 1)[1].startswith("Z")


def service_stop(unit: str) -> None:
    if service_mode() == "systemd":
        subprocess.run(["systemctl", "stop", unit], check=False, capture_output=True)
        return
    pf = _pidfile(unit)
    if not pf.exists():
        return
    with contextlib.suppress(ValueError, ProcessLookupError):
        pid = int(pf.read_text())
        os.killpg(pid, signal.SIGTERM)
        for _ in range(50):
            if not _alive(pid):
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    pf.unlink(missing_ok=True)


def start_watchdog() -> None:
    """Tests set PIKUBE_STANDIN_WATCH_PID: daemons exit once that process is gone (even SIGKILL)."""
    pid = os.environ.get("PIKUBE_STANDIN_WATCH_PID")
    if not pid:
        return

    def watch() -> None:
        while True:
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                os._exit(0)
            time.sleep(2)

    import threading

    threading.Thread(target=watch, daemon=True).start()


def rmtree_contents(p: Path) -> None:
    if not p.exists():
        return
    for child in p.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def wait_for(predicate: Any, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return True
        time.sleep(interval)
    return False
