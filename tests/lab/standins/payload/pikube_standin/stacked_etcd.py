"""kubeadm's stacked etcd: one etcd member per control-plane node, next to its API server.

Follows kubeadm (k8s.io/kubernetes cmd/kubeadm/app/phases/etcd/local.go, certs/certlist.go,
util/etcd/etcd.go): certificates under /etc/kubernetes/pki/etcd/ (ca, server, peer,
healthcheck-client) plus /etc/kubernetes/pki/apiserver-etcd-client.*, the static Pod manifest
/etc/kubernetes/manifests/etcd.yaml with kubeadm's flags (data dir /var/lib/etcd, client port
2379, peer port 2380), the API server on --etcd-servers=https://127.0.0.1:2379. A joining control
plane finds the cluster's etcd endpoints in the etcd mirror Pods' annotation
``kubeadm.kubernetes.io/etcd.advertise-client-urls``, runs ``member add`` and starts its member
with ``--initial-cluster-state=existing``; ``reset`` removes the node's own member first.
Debian's etcd binary runs instead of the registry.k8s.io/etcd image (pikube_standin.etcd).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from . import common
from .etcd import Etcd, EtcdError

T = TypeVar("T")
UNIT = "pikube-standin-etcd"
ANNOTATION = "kubeadm.kubernetes.io/etcd.advertise-client-urls"


def out(msg: str) -> None:
    print(msg, flush=True)


def client_port() -> int:
    return int(common.env("PIKUBE_STANDIN_ETCD_CLIENT_PORT", "2379"))


def peer_port() -> int:
    return int(common.env("PIKUBE_STANDIN_ETCD_PEER_PORT", "2380"))


def _url(host: str, port: int) -> str:
    return f"https://{host}:{port}"


def local_host(adv: str) -> str:
    """Where this node's API server reaches its etcd: 127.0.0.1 as kubeadm configures it; tests
    running several "nodes" on loopback addresses use each node's own address instead."""
    return adv if ipaddress.ip_address(adv).is_loopback else "127.0.0.1"


def client_url(adv: str) -> str:
    return _url(adv, client_port())


def peer_url(adv: str) -> str:
    return _url(adv, peer_port())


def write_certs(pkidir: Path, node: str, adv: str) -> None:
    """etcd/{ca,server,peer,healthcheck-client} and apiserver-etcd-client, as kubeadm's
    certs phase does (an existing etcd CA, e.g. downloaded from kubeadm-certs, is kept)."""
    from . import pki

    etcd_dir = pkidir / "etcd"
    if (etcd_dir / "ca.crt").exists() and (etcd_dir / "ca.key").exists():
        ca_crt, ca_key = (etcd_dir / "ca.crt").read_bytes(), (etcd_dir / "ca.key").read_bytes()
    else:
        out('[certs] Generating "etcd/ca" certificate and key')
        ca_crt, ca_key = pki.make_ca("etcd-ca")
        pki.write_pair(etcd_dir, "ca", ca_crt, ca_key)
    sans = [node, "localhost", adv, "127.0.0.1", "::1"]
    for base, cn, server, client, alt in (
        ("etcd/server", node, True, True, sans),
        ("etcd/peer", node, True, True, sans),
        ("etcd/healthcheck-client", "kube-etcd-healthcheck-client", False, True, None),
        ("apiserver-etcd-client", "kube-apiserver-etcd-client", False, True, None),
    ):
        out(f'[certs] Generating "{base}" certificate and key')
        if alt:
            out(
                f"[certs] {base} serving cert is signed for DNS names [{node} localhost] "
                f"and IPs [{adv} 127.0.0.1 ::1]"
            )
        crt, key = pki.issue(ca_crt, ca_key, cn, sans=alt, server=server, client=client)
        d, name = (pkidir / base).parent, (pkidir / base).name
        pki.write_pair(d, name, crt, key)


def command(pkidir: Path, node: str, adv: str, initial_cluster: str, state: str) -> list[str]:
    """The etcd container command kubeadm writes (phases/etcd/local.go getEtcdCommand)."""
    pki = pkidir / "etcd"
    local = local_host(adv)
    listen = (
        [client_url(adv)] if local == adv else [_url("127.0.0.1", client_port()), client_url(adv)]
    )
    cmd = [
        "etcd",
        f"--advertise-client-urls={client_url(adv)}",
        f"--cert-file={pki}/server.crt",
        "--client-cert-auth=true",
        f"--data-dir={common.path('/var/lib/etcd')}",
        "--experimental-initial-corrupt-check=true",
        "--experimental-watch-progress-notify-interval=5s",
        f"--initial-advertise-peer-urls={peer_url(adv)}",
        f"--initial-cluster={initial_cluster}",
        f"--key-file={pki}/server.key",
        f"--listen-client-urls={','.join(listen)}",
        f"--listen-peer-urls={peer_url(adv)}",
        f"--name={node}",
        f"--peer-cert-file={pki}/peer.crt",
        "--peer-client-cert-auth=true",
        f"--peer-key-file={pki}/peer.key",
        f"--peer-trusted-ca-file={pki}/ca.crt",
        "--snapshot-count=10000",
        f"--trusted-ca-file={pki}/ca.crt",
    ]
    if state == "existing":
        cmd.insert(
            cmd.index(f"--initial-cluster={initial_cluster}") + 1,
            "--initial-cluster-state=existing",
        )
    return cmd


def apiserver_flags(pkidir: Path, adv: str) -> list[str]:
    return [
        f"--etcd-cafile={pkidir}/etcd/ca.crt",
        f"--etcd-certfile={pkidir}/apiserver-etcd-client.crt",
        f"--etcd-keyfile={pkidir}/apiserver-etcd-client.key",
        f"--etcd-servers={_url(local_host(adv), client_port())}",
    ]


def client(pkidir: Path, endpoints: list[str], timeout: float = 10.0) -> Etcd:
    """kubeadm's etcd client: the etcd CA and the apiserver-etcd-client certificate."""
    return Etcd(
        endpoints,
        ca=pkidir / "etcd/ca.crt",
        cert=pkidir / "apiserver-etcd-client.crt",
        key=pkidir / "apiserver-etcd-client.key",
        timeout=timeout,
    )


def local_client(pkidir: Path, adv: str, timeout: float = 10.0) -> Etcd:
    return client(pkidir, [_url(local_host(adv), client_port())], timeout)


def start_and_wait(pkidir: Path, adv: str, timeout: float) -> None:
    """Start the local member and wait until it answers a linearizable read (it has a leader)."""
    common.service_start(UNIT)
    c = local_client(pkidir, adv, timeout=5.0)

    def healthy() -> bool:
        try:
            c.range("health", count_only=True)
        except EtcdError:
            return False
        return True

    if not common.wait_for(healthy, timeout, interval=0.5):
        raise EtcdError(f"etcd member at {client_url(adv)} did not become healthy")


def mirror_pod(node: str, adv: str, version: str) -> dict[str, Any]:
    """The etcd static Pod's mirror Pod as the kubelet creates it (kubeadm reads its annotation
    to find the cluster's etcd endpoints)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"etcd-{node}",
            "namespace": "kube-system",
            "labels": {"component": "etcd", "tier": "control-plane"},
            # The kubelet marks a mirror Pod (kubelet/types/pod_update.go); `kubectl drain`
            # skips Pods with kubernetes.io/config.mirror (kubectl drain/filters.go), so
            # draining a control plane leaves its static Pods alone, as upstream.
            "annotations": {
                ANNOTATION: client_url(adv),
                "kubernetes.io/config.mirror": f"pikube-standin-etcd-{node}",
                "kubernetes.io/config.source": "file",
            },
        },
        "spec": {
            "nodeName": node,
            "hostNetwork": True,
            "priorityClassName": "system-node-critical",
            "containers": [{"name": "etcd", "image": f"registry.k8s.io/etcd:{version}"}],
        },
        "status": {"phase": "Running", "conditions": []},
    }


def cluster_endpoints(api: Any) -> list[str]:
    """Client URLs of the etcd members, from the etcd mirror Pods (kubeadm's
    getRawEtcdEndpointsFromPodAnnotation)."""
    pods = api.get("/api/v1/namespaces/kube-system/pods?labelSelector=component%3Detcd")
    return [
        p["metadata"]["annotations"][ANNOTATION]
        for p in pods.get("items", [])
        if ANNOTATION in (p["metadata"].get("annotations") or {})
    ]


def with_retries(call: Callable[[], T], seconds: float = 40.0) -> T:
    """kubeadm's etcd client retries membership changes with a backoff (util/etcd/etcd.go,
    etcdBackoff): etcd refuses them with "etcdserver: unhealthy cluster" until every member
    has been up for a few seconds (--strict-reconfig-check)."""
    deadline = time.monotonic() + seconds
    delay = 0.5
    while True:
        try:
            return call()
        except EtcdError:
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def add_member(pkidir: Path, endpoints: list[str], node: str, adv: str) -> str:
    """``member add`` this node's peer URL; returns --initial-cluster for the new member."""
    c = client(pkidir, endpoints)
    me = peer_url(adv)
    existing = c.members()
    if not any(me in (m.get("peerURLs") or []) for m in existing):
        resp = with_retries(lambda: c.member_add([me]))
        members = resp.get("members") or []
    else:  # added by an earlier attempt: start it
        members = existing
    parts = []
    for m in members:
        name = m.get("name") or (node if me in (m.get("peerURLs") or []) else "")
        for u in m.get("peerURLs") or []:
            parts.append(f"{name}={u}")
    return ",".join(parts)


def manifest_flags() -> dict[str, str]:
    """The flags of this node's etcd static Pod manifest ({} when there is none)."""
    import yaml

    man = common.path("/etc/kubernetes/manifests/etcd.yaml")
    if not man.exists():
        return {}
    cmd = yaml.safe_load(man.read_text())["spec"]["containers"][0]["command"]
    return dict(str(c)[2:].split("=", 1) for c in cmd[1:] if "=" in str(c))


def remove_member(pkidir: Path, flags: dict[str, str], endpoints: list[str]) -> str | None:
    """Remove this node's member (kubeadm reset's removeEtcdMember): found by its peer URL,
    through the cluster's endpoints (else the local one). Returns a warning or None."""
    me = flags["initial-advertise-peer-urls"]
    local = flags["listen-client-urls"].split(",")[0]
    c = client(pkidir, [*endpoints, local])
    try:
        members = c.members()
        mine = [m for m in members if me in (m.get("peerURLs") or [])]
        if not mine or len(members) == 1:
            return None  # not a member, or the last one: its data directory goes with it
        with_retries(lambda: c.member_remove(mine[0]["ID"]))
    except EtcdError as e:
        return (
            f"[reset] Failed to remove etcd member: {e.message}\n"
            "Please manually remove this etcd member using etcdctl"
        )
    return None
