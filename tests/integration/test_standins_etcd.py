"""The kubeadm stand-in's stacked etcd: three control planes, one etcd cluster (Debian's etcd).

As with kubeadm's stacked etcd topology: `init` starts a local etcd member (TLS from
/etc/kubernetes/pki/etcd) and the API server on it; `join --control-plane` runs `member add`
and starts its member with --initial-cluster-state=existing plus its own API server;
`reset` removes the node's member first. Objects live under /registry/ with resourceVersion =
etcd's mod_revision, every API server serves the same objects, and without an etcd quorum the
API servers answer nothing. Upstream: kubernetes.io "Options for Highly Available topology",
"Creating Highly Available Clusters with kubeadm", etcd "Runtime reconfiguration".
Nodes are FakeNodes on loopback; etcdctl is Debian's (etcd-client).
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from _standins import requires_standin_prereqs, testing

pytestmark = requires_standin_prereqs
FakeNode = testing.FakeNode
KEY_RE = re.compile(r"\[upload-certs\] Using certificate key:\n([0-9a-f]{64})\n")
JOIN_RE = re.compile(
    r"^kubeadm join (\S+) --token ([a-z0-9]{6}\.[a-z0-9]{16}) "
    r"--discovery-token-ca-cert-hash (sha256:[0-9a-f]{64}) $"
)


@contextlib.contextmanager
def three_control_planes(
    base: Path, subnet: str, version: str = "1.31.13"
) -> Iterator[list[FakeNode]]:
    """cp1 inits (--upload-certs, controlPlaneEndpoint = cp1), cp2 and cp3 join as control
    planes with the certificate key."""
    env = {"PIKUBE_STANDIN_VERSION": version}
    cp1 = FakeNode(base, "cp1", f"{subnet}.1", port=testing.free_port(f"{subnet}.1"), extra_env=env)
    config = testing.init_config(cp1, extra_cluster=f"controlPlaneEndpoint: {cp1.ip}:{cp1.port}\n")
    if version != "1.31.13":
        config = config.replace("kubeadm.k8s.io/v1beta4", "kubeadm.k8s.io/v1beta3").replace(
            "v1.31.13", f"v{version}"
        )
    with testing.initialised_cluster(cp1, config, "--upload-certs") as c:
        init: subprocess.CompletedProcess[str] = c["init"]  # type: ignore[assignment]
        assert init.returncode == 0, init.stderr
        key = KEY_RE.search(init.stdout)
        assert key, init.stdout
        nodes = [cp1]
        for i in (2, 3):
            ip = f"{subnet}.{i}"
            n = FakeNode(base, f"cp{i}", ip, port=testing.free_port(ip), extra_env=env)
            c["nodes"].append(n)  # type: ignore[attr-defined]
            join = cp1.kubeadm("token", "create", "--print-join-command")
            m = JOIN_RE.match(join.stdout.rstrip("\n"))
            assert m, join.stdout + join.stderr
            r = n.kubeadm(
                "join",
                m.group(1),
                "--token",
                m.group(2),
                "--discovery-token-ca-cert-hash",
                m.group(3),
                "--control-plane",
                "--certificate-key",
                key.group(1),
            )
            assert r.returncode == 0, r.stdout + r.stderr
            nodes.append(n)
        yield nodes


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[FakeNode]]:
    with three_control_planes(tmp_path_factory.mktemp("kubeadm-etcd"), "127.0.6") as nodes:
        yield nodes


def kubectl_via(node: FakeNode, *args: str) -> subprocess.CompletedProcess[str]:
    """The real kubectl against this node's own API server (not the shared endpoint)."""
    return node.kubectl(f"--server=https://{node.ip}:{node.port}", *args, timeout=60)


def etcdctl(node: FakeNode, *args: str, endpoints: str = "") -> subprocess.CompletedProcess[str]:
    pki = node.root / "etc/kubernetes/pki/etcd"
    return subprocess.run(
        [
            str(testing.etcd_binaries() / "etcdctl"),
            f"--endpoints={endpoints or client_url(node)}",
            f"--cacert={pki / 'ca.crt'}",
            f"--cert={pki / 'healthcheck-client.crt'}",
            f"--key={pki / 'healthcheck-client.key'}",
            "--command-timeout=15s",
            *args,
        ],
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def client_url(node: FakeNode) -> str:
    return f"https://{node.ip}:{node.env['PIKUBE_STANDIN_ETCD_CLIENT_PORT']}"


def members(node: FakeNode) -> dict[str, list[str]]:
    r = etcdctl(node, "member", "list", "-w", "json")
    assert r.returncode == 0, r.stderr
    return {m["name"]: m["peerURLs"] for m in json.loads(r.stdout)["members"]}


def test_every_control_plane_runs_a_member_of_one_etcd_cluster(cluster: list[FakeNode]) -> None:
    assert set(members(cluster[2])) == {"cp1", "cp2", "cp3"}
    for n in cluster:
        pki = n.root / "etc/kubernetes/pki"
        for f in ("ca", "server", "peer", "healthcheck-client"):
            assert (pki / f"etcd/{f}.crt").exists() and (pki / f"etcd/{f}.key").exists()
        assert (pki / "etcd/server.key").stat().st_mode & 0o077 == 0
        manifest = (n.root / "etc/kubernetes/manifests/etcd.yaml").read_text()
        assert f"--name={n.name}" in manifest
        assert ("--initial-cluster-state=existing" in manifest) == (n.name != "cp1")
        api = (n.root / "etc/kubernetes/manifests/kube-apiserver.yaml").read_text()
        assert f"--etcd-servers={client_url(n)}" in api
    # The etcd CA is the cluster's one (shared through kubeadm-certs), not one per node.
    cas = {(n.root / "etc/kubernetes/pki/etcd/ca.crt").read_bytes() for n in cluster}
    assert len(cas) == 1


def test_objects_written_through_any_api_server_are_served_by_all(
    cluster: list[FakeNode],
) -> None:
    for i, n in enumerate(cluster):
        r = kubectl_via(n, "create", "configmap", f"shared-{i}", f"--from-literal=from={n.name}")
        assert r.returncode == 0, r.stderr
    for n in cluster:
        r = kubectl_via(n, "get", "configmap", "-o", "json")
        assert r.returncode == 0, r.stderr
        got = {
            o["metadata"]["name"]: o["data"]["from"]
            for o in json.loads(r.stdout)["items"]
            if o["metadata"]["name"].startswith("shared-")
        }
        assert got == {"shared-0": "cp1", "shared-1": "cp2", "shared-2": "cp3"}
    # A stale write through another server conflicts, as with kube-apiserver + etcd.
    cm = json.loads(kubectl_via(cluster[0], "get", "cm", "shared-0", "-o", "json").stdout)
    assert kubectl_via(cluster[1], "label", "cm", "shared-0", "x=1").returncode == 0
    stale = cluster[2].dir / "stale.json"
    stale.write_text(json.dumps(cm))
    r = kubectl_via(cluster[2], "replace", "-f", str(stale))
    assert r.returncode != 0 and "the object has been modified" in r.stderr


def test_patches_through_every_api_server_at_once_all_land(cluster: list[FakeNode]) -> None:
    """kube-apiserver applies a patch inside GuaranteedUpdate: when etcd's compare-and-swap
    fails (the object moved on after this server's cache read it), it reads the object again
    and re-applies the patch, so a patch naming no resourceVersion never ends in a 409. The
    kubeadm stand-in's mark-control-plane patch racing a kubelet status write failed `init`
    with "the object has been modified" until the stand-in did the same."""
    assert kubectl_via(cluster[0], "create", "configmap", "patched").returncode == 0

    def label(i: int) -> subprocess.CompletedProcess[str]:
        patch = json.dumps({"metadata": {"labels": {f"l{i}": "x"}}})
        return kubectl_via(cluster[i % 3], "patch", "cm", "patched", "--type=merge", "-p", patch)

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(label, range(24)))
    assert [r.stderr for r in results if r.returncode != 0] == []
    got = json.loads(kubectl_via(cluster[1], "get", "cm", "patched", "-o", "json").stdout)
    assert set(got["metadata"]["labels"]) >= {f"l{i}" for i in range(24)}


def test_objects_live_in_etcd_under_registry_with_revisions_as_resource_versions(
    cluster: list[FakeNode],
) -> None:
    r = kubectl_via(cluster[1], "create", "configmap", "in-etcd", "--from-literal=k=v")
    assert r.returncode == 0, r.stderr
    cm = json.loads(kubectl_via(cluster[2], "get", "cm", "in-etcd", "-o", "json").stdout)
    got = etcdctl(cluster[0], "get", "/registry/configmaps/default/in-etcd", "-w", "json")
    assert got.returncode == 0, got.stderr
    kv = json.loads(got.stdout)["kvs"][0]
    assert str(kv["mod_revision"]) == cm["metadata"]["resourceVersion"]
    value = etcdctl(cluster[0], "get", "/registry/configmaps/default/in-etcd", "--print-value-only")
    assert json.loads(value.stdout)["data"] == {"k": "v"}
    nodes = etcdctl(cluster[0], "get", "/registry/nodes/", "--prefix", "--keys-only")
    assert {"/registry/nodes/cp1", "/registry/nodes/cp2", "/registry/nodes/cp3"} <= set(
        nodes.stdout.split()
    )


def test_etcdctl_snapshot_save_works_against_the_cluster(
    cluster: list[FakeNode], tmp_path: Path
) -> None:
    snap = tmp_path / "snapshot.db"
    r = etcdctl(cluster[0], "snapshot", "save", str(snap))
    assert r.returncode == 0, r.stdout + r.stderr
    status = etcdctl(cluster[0], "snapshot", "status", str(snap), "-w", "json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["totalKey"] > 10


def test_two_of_three_members_down_the_api_servers_stop_serving(cluster: list[FakeNode]) -> None:
    cp1, cp2, cp3 = cluster
    for n in (cp2, cp3):
        n.service("stop", "pikube-standin-etcd")
    try:
        r = kubectl_via(cp1, "get", "configmap", "shared-0")
        assert r.returncode != 0
        assert "Error from server" in r.stderr
        w = kubectl_via(cp1, "create", "configmap", "no-quorum")
        assert w.returncode != 0
        health = kubectl_via(cp1, "get", "--raw", "/readyz")
        assert health.returncode != 0
    finally:
        for n in (cp2, cp3):
            n.service("start", "pikube-standin-etcd")
    # One member back is a quorum again (2 of 3): the API answers and the write never happened.
    assert testing.wait_until(
        lambda: kubectl_via(cp1, "get", "configmap", "shared-0").returncode == 0,
        attempts=60,
        interval=1.0,
    )
    assert kubectl_via(cp1, "get", "configmap", "no-quorum").returncode != 0


def test_reset_of_a_control_plane_removes_its_member_first(cluster: list[FakeNode]) -> None:
    cp1, _cp2, cp3 = cluster
    assert testing.wait_until(lambda: set(members(cp1)) == {"cp1", "cp2", "cp3"})
    r = cp3.kubeadm("reset", "-f")
    assert r.returncode == 0, r.stderr
    assert "Removed this node's member from the etcd cluster" in r.stdout
    assert set(members(cp1)) == {"cp1", "cp2"}
    assert not any((cp3.root / "var/lib/etcd").iterdir())
    # Two members left, both up: still a quorum.
    assert kubectl_via(cp1, "create", "configmap", "after-reset").returncode == 0


@pytest.mark.slow
def test_upgrade_apply_then_node_upgrades_each_control_planes_api_server(tmp_path: Path) -> None:
    """kubeadm's HA upgrade: `upgrade apply` on the first control plane, `upgrade node` on the
    others (each restarts its own API server on the shared etcd; objects survive)."""
    new = {"PIKUBE_STANDIN_VERSION": "1.31.13"}
    with three_control_planes(tmp_path, "127.0.7", version="1.30.14") as (cp1, cp2, cp3):
        assert kubectl_via(cp2, "create", "configmap", "before-upgrade").returncode == 0
        ok = cp1.kubeadm("upgrade", "apply", "v1.31.13", "-y", env=new)
        assert ok.returncode == 0, ok.stdout + ok.stderr

        def server_version(n: FakeNode) -> str:
            r = kubectl_via(n, "get", "--raw", "/version")
            return str(json.loads(r.stdout)["gitVersion"]) if r.returncode == 0 else ""

        assert [server_version(n) for n in (cp1, cp2, cp3)] == ["v1.31.13", "v1.30.14", "v1.30.14"]
        for n in (cp2, cp3):
            r = n.kubeadm("upgrade", "node", env=new)
            assert r.returncode == 0, r.stdout + r.stderr
        assert [server_version(n) for n in (cp1, cp2, cp3)] == ["v1.31.13"] * 3
        assert kubectl_via(cp3, "get", "configmap", "before-upgrade").returncode == 0
        assert set(members(cp1)) == {"cp1", "cp2", "cp3"}
