"""Helpers for the stand-ins' contract tests: "nodes" as temp roots on loopback.

Each FakeNode is a directory used as PIKUBE_STANDIN_ROOT, its own fake /proc
(swaps, sysctls), a listening containerd socket, a 127.0.0.x address and a
node name. The stand-ins run as real processes (/usr/bin/python3, Debian's
python3-yaml and python3-cryptography) and start their daemons in "spawn"
mode instead of systemd. Nothing here is used on lab nodes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .repo import cache_dir, debian_debs, kubectl_debs, run

HERE = Path(__file__).resolve().parent
PAYLOAD = HERE / "payload"
FIXTURES = HERE / "fixtures"
PYTHON = "/usr/bin/python3"


def missing_prerequisites() -> str | None:
    """Why the stand-in tests cannot run on this machine, or None."""
    if not Path(PYTHON).exists():
        return f"{PYTHON} (Debian's python3) is missing"
    r = subprocess.run(
        [PYTHON, "-c", "import yaml, cryptography"], capture_output=True, check=False
    )
    if r.returncode != 0:
        return "apt packages python3-yaml and python3-cryptography are required"
    for tool in ("dpkg-deb", "gpg", "apt-get"):
        if shutil.which(tool) is None:
            return f"{tool} is required"
    return None


def kubectl_binary() -> Path:
    """Debian's real kubectl (kubernetes-client), extracted once into the cache."""
    dest = cache_dir() / "kubectl-amd64" / "usr/bin/kubectl"
    if not dest.exists():
        run(["dpkg-deb", "-x", str(kubectl_debs()["amd64"]), str(dest.parents[2])])
    return dest


def etcd_binaries() -> Path:
    """Debian's etcd and etcdctl (etcd-server, etcd-client), extracted once into the cache;
    returns the directory holding both."""
    root = cache_dir() / "etcd-amd64"
    dest = root / "usr/bin"
    if not (dest / "etcd").exists() or not (dest / "etcdctl").exists():
        for package in ("etcd-server", "etcd-client"):
            run(["dpkg-deb", "-x", str(debian_debs(package, ("amd64",))["amd64"]), str(root)])
    return dest


def wait_until(predicate: Callable[[], bool], attempts: int = 150, interval: float = 0.2) -> bool:
    """Poll a condition (used to wait for effects, never to assert on durations)."""
    for _ in range(attempts):
        if predicate():
            return True
        time.sleep(interval)
    return False


def free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


class FakeNode:
    def __init__(
        self, base: Path, name: str, ip: str, *, port: int, extra_env: dict[str, str] | None = None
    ):
        self.name, self.ip, self.port = name, ip, port
        self.dir = base / name
        self.root = self.dir / "root"
        self.proc = self.dir / "proc"
        for d in ("sys/net/ipv4", "sys/net/bridge"):
            (self.proc / d).mkdir(parents=True, exist_ok=True)
        (self.proc / "swaps").write_text("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n")
        (self.proc / "sys/net/ipv4/ip_forward").write_text("1\n")
        (self.proc / "sys/net/bridge/bridge-nf-call-iptables").write_text("1\n")
        shutil.copy("/proc/meminfo", self.proc / "meminfo")
        sock = self.root / "var/run/containerd/containerd.sock"
        sock.parent.mkdir(parents=True, exist_ok=True)
        self.cri: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.cri.bind(str(sock))
        self.cri.listen(16)
        self.env = {
            **os.environ,
            "PYTHONPATH": str(PAYLOAD),
            "PIKUBE_STANDIN_ROOT": str(self.root),
            "PIKUBE_STANDIN_PROC": str(self.proc),
            "PIKUBE_STANDIN_NODE_NAME": name,
            "PIKUBE_STANDIN_NODE_IP": ip,
            "PIKUBE_STANDIN_BIND_ADDRESS": ip,
            "PIKUBE_STANDIN_APISERVER_PORT": str(port),
            "PIKUBE_STANDIN_SERVICES": "spawn",
            "PIKUBE_STANDIN_HEARTBEAT": "1",
            "PIKUBE_STANDIN_NODE_GRACE": "4",
            "PIKUBE_STANDIN_DISCOVERY_TIMEOUT": "2",
            "PIKUBE_STANDIN_VERSION": "1.31.13",
            "PIKUBE_STANDIN_WATCH_PID": str(os.getpid()),  # daemons die with the test process
            "PIKUBE_STANDIN_KEY_ALGO": "ecdsa",  # kubeadm's ECDSA-P256: far faster keys than RSA
            "PIKUBE_STANDIN_ETCD_BIN": str(etcd_binaries() / "etcd"),
            "PIKUBE_STANDIN_ETCD_CLIENT_PORT": str(free_port(ip)),
            "PIKUBE_STANDIN_ETCD_PEER_PORT": str(free_port(ip)),
            **(extra_env or {}),
        }
        self.env.pop("KUBECONFIG", None)

    def stop_cri(self) -> None:
        if self.cri is not None:
            self.cri.close()
            self.cri = None

    def run(
        self,
        module: str,
        *args: str,
        input: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, "-m", f"pikube_standin.{module}", *args],
            env={**self.env, **(env or {})},
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def kubeadm(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.run("kubeadm", *args, **kw)  # type: ignore[arg-type]

    def service(self, action: str, unit: str) -> None:
        code = f"from pikube_standin import common; common.service_{action}({unit!r})"
        subprocess.run([PYTHON, "-c", code], env=self.env, check=True, timeout=30)

    def kubectl(
        self, *args: str, kubeconfig: Path | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        kc = kubeconfig or self.root / "etc/kubernetes/admin.conf"
        home = self.dir / "home"
        home.mkdir(exist_ok=True)
        return subprocess.run(
            [str(kubectl_binary()), f"--kubeconfig={kc}", *args],
            env={"HOME": str(home), "PATH": os.environ.get("PATH", "")},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def cleanup(self) -> None:
        for unit in (
            "kubelet",
            "pikube-standin-apiserver",
            "pikube-standin-etcd",
            "snap.microk8s.daemon-kubelite",
            "snap.microk8s.daemon-cluster-agent",
            "snap.microk8s.daemon-apiserver-proxy",
        ):
            with contextlib.suppress(subprocess.SubprocessError):
                self.service("stop", unit)
        self.stop_cri()


def init_config(
    node: FakeNode, *, api: str = "kubeadm.k8s.io/v1beta4", extra_cluster: str = ""
) -> str:
    return f"""apiVersion: {api}
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: {node.ip}
  bindPort: {node.port}
nodeRegistration:
  name: {node.name}
---
apiVersion: {api}
kind: ClusterConfiguration
kubernetesVersion: v1.31.13
networking:
  podSubnet: 10.244.0.0/16
  serviceSubnet: 10.96.0.0/12
apiServer:
  certSANs:
  - cp.lab.example
  - 10.99.0.1
{extra_cluster}---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
"""


@contextlib.contextmanager
def initialised_cluster(cp: FakeNode, config: str, *init_args: str) -> Iterator[dict[str, object]]:
    """``kubeadm init`` on ``cp`` from ``config``, then (if it worked) a pod network, as after
    ``kubectl apply -f kube-flannel.yml``. Yields {"cp", "init", "base", "nodes"}: nodes
    added to "nodes" are cleaned up with ``cp``."""
    cfg = cp.dir.parent / "init.yaml"
    cfg.write_text(config)
    res = cp.kubeadm("init", "--config", str(cfg), *init_args)
    if res.returncode == 0:
        cp.kubectl("apply", "-f", str(FIXTURES / "kube-flannel.yml"))
    nodes: list[FakeNode] = []
    try:
        yield {"cp": cp, "init": res, "base": cp.dir.parent, "nodes": nodes}
    finally:
        for node in nodes:
            node.cleanup()
        cp.cleanup()
