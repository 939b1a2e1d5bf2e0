"""`pikube up` (MicroK8s, HA) on lab nodes: three control planes and a worker behind a VIP.

The control planes after the first join it as full members (no `--worker`), so the
datastore has three voters and `microk8s status` says `high-availability: yes`; the worker
joins with `--worker`. keepalived and haproxy (real Debian packages, roles/pikube_vip) put
the VIP in front of every API server's 16443, the fetched kubeconfig names VIP:haproxy port,
and the real kubectl keeps answering through it when the node holding the VIP stops.
The datastore is the stand-in's: an etcd cluster across the full members in dqlite's place
(tests/lab/standins/payload/pikube_standin/microk8s_dqlite.py). Slow tier: one 4-node lab.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.clusterlab import Pikube, cluster_lab, is_ready

pytestmark = [pytest.mark.lab, pytest.mark.slow]

CONTROL_PLANES = ("node-1", "node-2", "node-3")
WORKER = "node-4"
# What `microk8s status` prints once dqlite has three voters (status.py print_pretty).
HA_YES = "high-availability: yes"


def ha_cluster(lab: Any, path: Path) -> tuple[Path, str]:
    """The lab's cluster.yaml with node-1..3 as control planes and a VIP: a free address of
    the lab's subnet (the nodes take the low ones)."""
    data = lab.cluster_data("microk8s")
    for node in data["nodes"]:
        node["role"] = "control-plane" if node["name"] in CONTROL_PLANES else "worker"
    vip = str(ipaddress.ip_network(data["network"]["subnet"]).network_address + 100)
    data["network"]["vip"] = vip
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, vip


@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pikube, str]]:
    with cluster_lab("mk8sha", 4, "microk8s", pi=0) as lab:
        cluster, vip = ha_cluster(lab, tmp_path_factory.mktemp("mk8sha") / "cluster.yaml")
        yield Pikube(lab, cluster, "microk8s"), vip


def microk8s_status(pk: Pikube, node: str) -> str:
    proc = pk.lab.exec(node, ["/snap/bin/microk8s", "status"])
    return str(proc.stdout)


def vip_holders(pk: Pikube, vip: str, among: tuple[str, ...] = CONTROL_PLANES) -> list[str]:
    """The running control planes (of ``among``) with the VIP on an interface."""
    return [
        name
        for name in among
        if f" {vip}/32 " in pk.lab.exec(name, ["ip", "-4", "-o", "addr", "show"]).stdout
    ]


def test_up_builds_three_full_members_and_a_worker(ha: tuple[Pikube, str]) -> None:
    pk, vip = ha
    proc = pk("up")
    assert proc.returncode == 0, proc.stderr[-4000:]
    nodes = pk.nodes()  # the real kubectl, through the fetched kubeconfig (the VIP)
    assert set(nodes) == {*CONTROL_PLANES, WORKER}
    assert all(is_ready(n) for n in nodes.values())
    labels = {name: n["metadata"]["labels"] for name, n in nodes.items()}
    assert all("node.kubernetes.io/microk8s-controlplane" in labels[n] for n in CONTROL_PLANES)
    assert "node.kubernetes.io/microk8s-worker" in labels[WORKER]
    kubeconfig = yaml.safe_load(pk.kubeconfig.read_text())
    assert kubeconfig["clusters"][0]["cluster"]["server"] == f"https://{vip}:8443"
    ips = {n["name"]: n["ip"] for n in yaml.safe_load(pk.cluster.read_text())["nodes"]}
    for node in CONTROL_PLANES:  # every member reports the same three voters
        status = microk8s_status(pk, node)
        assert HA_YES in status, status
        masters = status.split("datastore master nodes:", 1)[1].splitlines()[0].split()
        assert sorted(m.rsplit(":", 1)[0] for m in masters) == sorted(
            ips[n] for n in CONTROL_PLANES
        )
        assert ips[WORKER] not in status
    assert len(vip_holders(pk, vip)) == 1


def test_a_rerun_changes_nothing(ha: tuple[Pikube, str]) -> None:
    pk, _vip = ha
    proc = pk("up")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert pk.changed("up") == dict.fromkeys((*CONTROL_PLANES, WORKER), 0)


def test_kubectl_keeps_answering_through_the_vip_when_its_holder_stops(
    ha: tuple[Pikube, str],
) -> None:
    pk, vip = ha
    (holder,) = vip_holders(pk, vip)
    pk.lab.stop(holder)
    start, answered = time.monotonic(), False
    while not answered and time.monotonic() - start < 180:  # a limit, never an assertion on time
        proc = pk.kubectl("get", "nodes", "--output", "name", "--request-timeout=5s")
        answered = proc.returncode == 0 and f"node/{holder}" in proc.stdout
        if not answered:
            time.sleep(1)
    assert answered, f"kubectl through {vip} did not answer after {holder} stopped"
    print(f"failover gap after stopping {holder}: {time.monotonic() - start:.1f} s")
    survivors = tuple(n for n in CONTROL_PLANES if n != holder)
    assert len(vip_holders(pk, vip, survivors)) == 1  # the VIP moved to one of them
    for survivor in survivors:  # two of three voters up: the datastore keeps its quorum
        assert HA_YES in microk8s_status(pk, survivor)
