"""Day 2 on a highly available MicroK8s lab: three full members behind a VIP and a worker.

`status` names the VIP holder, each dqlite member (from `microk8s status --format yaml`) and
the quorum; `remove-node` refuses to break dqlite's quorum and otherwise takes a control
plane's member out (`microk8s remove-node --force` from another member, `microk8s leave` on
the node); `add-node` joins it back as a full member, a voter again; the worker, joined with
`--worker`, reaches the API through its apiserver-proxy (every control plane), so it stays
Ready when the first control plane is powered off; two of three control planes stopped is
lost quorum (exit 7) for `status` and `doctor`; `upgrade` refreshes the control planes one at
a time, then the worker.

Real CLI, real SSH, Debian's real keepalived and haproxy, the snap/MicroK8s stand-ins with
their datastore on Debian's real etcd in dqlite's place (tests/lab/standins), the real
kubectl. One lab for the module; the steps build on each other in file order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from ipaddress import IPv4Network

import pytest
import yaml

from tests.integration.clusterlab import Pikube, cluster_lab, is_ready
from tests.integration.ha_day2 import (
    CONTROL_PLANES,
    EXIT_QUORUM,
    EXIT_UNREACHABLE,
    NODES,
    WORKER,
    drill,
    holders,
    status_json,
    vip,
    wait_quorum_ok,
)

# Slow tier (PIKUBE_SLOW=1): an HA build, a removal and a re-add, an upgrade of four nodes.
pytestmark = [pytest.mark.lab, pytest.mark.slow]


@pytest.fixture(scope="module")
def pk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pikube]:
    """Four lab nodes: node-1..3 full members behind a VIP, node-4 a worker, on 1.30/stable."""
    with cluster_lab("mkha2", 4, "microk8s", pi=0) as lab:
        data = lab.cluster_data("microk8s")
        assert data["kubernetes"]["channel"] == "1.31/stable", data["kubernetes"]
        data["kubernetes"]["channel"] = "1.30/stable"  # the older channel: the upgrade
        for node in data["nodes"]:
            node["role"] = "control-plane" if node["name"] in CONTROL_PLANES else "worker"
        data["network"]["vip"] = str(IPv4Network(lab.subnet).network_address + 100)
        path = tmp_path_factory.mktemp("mkha-day2") / "cluster.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        yield Pikube(lab, path, "microk8s")


def ips(pk: Pikube) -> dict[str, str]:
    return {n["name"]: n["ip"] for n in yaml.safe_load(pk.cluster.read_text())["nodes"]}


def voters(pk: Pikube, via: str) -> set[str]:
    """The nodes `microk8s status --format yaml` on ``via`` lists as dqlite voters."""
    proc = pk.lab.exec(via, ["/snap/bin/microk8s", "status", "--format", "yaml"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ha = yaml.safe_load(proc.stdout)["high-availability"]
    by_ip = {ip: name for name, ip in ips(pk).items()}
    found = {
        by_ip.get(str(n["address"]).rsplit(":", 1)[0], str(n["address"]))
        for n in ha.get("nodes") or []
        if n.get("role") == "voter"
    }
    return found


def test_up_and_status_show_the_vip_holder_every_member_and_quorum_ok(pk: Pikube) -> None:
    pk.ok("up")
    pk.wait_all_ready(NODES)
    data = wait_quorum_ok(pk)
    plane = data["control_plane"]
    assert plane["vip"] == vip(pk) and plane["datastore"] == "dqlite"
    assert plane["vip_holders"] == holders(pk) and len(plane["vip_holders"]) == 1
    assert {m["node"] for m in plane["members"]} == set(CONTROL_PLANES)
    assert all(m["healthy"] and m["role"] == "voter" for m in plane["members"]), plane
    assert plane["quorum"] == {
        "level": "ok",
        "healthy": 3,
        "total": 3,
        "needed": 2,
        "message": "3/3 dqlite members healthy",
        "fix": None,
    }
    text = pk.ok("status").stdout
    assert f"VIP: {vip(pk)} on {holders(pk)[0]}" in text
    assert "dqlite: ok: 3/3 dqlite members healthy" in text
    for node in CONTROL_PLANES:
        assert voters(pk, node) == set(CONTROL_PLANES)


def test_removing_a_healthy_member_while_another_is_down_is_refused(pk: Pikube) -> None:
    pk.lab.stop("node-3")
    try:
        data = status_json(pk, expect=EXIT_UNREACHABLE)
        quorum = data["control_plane"]["quorum"]
        assert (quorum["level"], quorum["healthy"], quorum["total"]) == ("warning", 2, 3)
        assert "node-3" in quorum["message"]
        runs_before = pk.runs("remove-node")
        proc = pk("remove-node", "node-2", "--yes")
        assert proc.returncode == EXIT_QUORUM, proc.stderr[-3000:]
        assert "refusing to remove node-2" in proc.stderr
        assert "would lose quorum" in proc.stderr and "nothing was changed" in proc.stderr
        assert pk.runs("remove-node") == runs_before  # no playbook ran
        assert voters(pk, "node-1") == set(CONTROL_PLANES)
        assert "node-2" in pk.nodes()
    finally:
        pk.lab.start("node-3")
    wait_quorum_ok(pk)


def test_remove_a_control_plane_then_add_it_back(pk: Pikube) -> None:
    pk.ok("remove-node", "node-3", "--yes")
    # the member really left: the others list two voters, node-3 runs MicroK8s on its own
    # or not at all (reset removes the snap)
    assert voters(pk, "node-1") == voters(pk, "node-2") == {"node-1", "node-2"}
    assert "node-3" not in pk.nodes()
    assert not pk.exists("node-3", "/snap/bin/microk8s")
    data = status_json(pk)
    quorum = data["control_plane"]["quorum"]
    # node-3 is still in cluster.yaml, but no longer a dqlite member: the datastore decides.
    assert (quorum["level"], quorum["healthy"], quorum["total"]) == ("ok", 2, 2)
    pk.ok("add-node", "node-3")
    pk.wait_all_ready(NODES)
    for node in CONTROL_PLANES:  # a voter again, as every member sees it
        assert voters(pk, node) == set(CONTROL_PLANES)
    labels = pk.nodes()["node-3"]["metadata"]["labels"]
    assert "node.kubernetes.io/microk8s-controlplane" in labels
    wait_quorum_ok(pk)


def test_the_worker_stays_ready_when_the_first_control_plane_is_powered_off(
    pk: Pikube,
) -> None:
    """Upstream a worker's kubelet talks to 127.0.0.1:16443, its apiserver-proxy, which
    forwards to every control plane listed in args/traefik/provider.yaml."""
    # The proxy refreshes its list from Endpoints default/kubernetes every 30 s: a control
    # plane added back by the test before shows up within a refresh or two.
    wanted = [f"{ips(pk)[node]}:16443" for node in CONTROL_PLANES]
    deadline = time.monotonic() + 120
    while True:
        endpoints = pk.lab.exec(
            WORKER, ["cat", "/var/snap/microk8s/current/args/traefik/provider.yaml"]
        ).stdout
        if all(address in endpoints for address in wanted):
            break
        assert time.monotonic() < deadline, endpoints
        time.sleep(5)
    kubelet = pk.lab.exec(WORKER, ["cat", "/var/snap/microk8s/current/credentials/kubelet.config"])
    assert "server: https://127.0.0.1:16443" in kubelet.stdout, kubelet.stdout
    pk.lab.stop("node-1")
    try:
        # The API answers through the VIP; a node whose kubelet stopped posting turns
        # Unknown after the grace period: wait past it, then the worker must still be Ready.
        pk.wait_not_ready("node-1", timeout=240)
        time.sleep(10)  # heartbeats of the worker since node-1 went: one more grace window
        found = pk.nodes()
        assert is_ready(found[WORKER]), found[WORKER]["status"]["conditions"]
        assert all(is_ready(found[n]) for n in ("node-2", "node-3"))
    finally:
        pk.lab.start("node-1")
    wait_quorum_ok(pk)
    pk.wait_all_ready(NODES)


def test_two_of_three_control_planes_stopped_is_lost_quorum(pk: Pikube) -> None:
    pk.lab.stop("node-2")
    pk.lab.stop("node-3")
    try:
        proc = pk("status")
        assert proc.returncode == EXIT_QUORUM, proc.stderr[-3000:]
        # node-1's MicroK8s does not answer ready either: its API server has no datastore
        assert "dqlite has lost quorum: 0/3 members healthy, 2 needed" in proc.stderr
        assert "fix: bring back enough control planes" in proc.stderr
        data = status_json(pk, expect=EXIT_QUORUM)
        quorum = data["control_plane"]["quorum"]
        assert (quorum["level"], quorum["healthy"], quorum["total"]) == ("error", 0, 3)
        doctor = pk("doctor")
        assert doctor.returncode == EXIT_QUORUM, doctor.stderr[-3000:]
        assert "quorum:" in doctor.stdout
    finally:
        pk.lab.start("node-2")
        pk.lab.start("node-3")
    wait_quorum_ok(pk)  # a majority back: the datastore commits again, nothing else needed


def test_upgrade_takes_one_control_plane_at_a_time_then_the_worker(pk: Pikube) -> None:
    pk.ok("upgrade", "--to", "1.31", "--yes")
    pk.wait_all_ready(NODES)
    versions = {n: v["status"]["nodeInfo"]["kubeletVersion"][:5] for n, v in pk.nodes().items()}
    assert versions == dict.fromkeys(NODES, "v1.31")
    events = [e for e in pk.events("upgrade") if e.get("pikube_event") == "runner"]
    refreshed = [
        e["host"]
        for e in events
        if e.get("task", "").endswith("Refresh microk8s to 1.31/stable") and e.get("changed")
    ]
    assert refreshed == [*CONTROL_PLANES, WORKER]
    # serial: 1 - every task of a control plane ends before the next one's first task.
    plane = [e for e in events if e.get("play") == "Upgrade the control planes one at a time"]
    order = [e["host"] for e in plane]
    firsts = [order.index(n) for n in CONTROL_PLANES]
    lasts = [len(order) - 1 - order[::-1].index(n) for n in CONTROL_PLANES]
    assert lasts[0] < firsts[1] and lasts[1] < firsts[2], order
    workers = [e for e in events if e.get("play") == "Upgrade the workers one at a time"]
    assert {e["host"] for e in workers} == {WORKER}
    assert events.index(plane[-1]) < events.index(workers[0])
    wait_quorum_ok(pk)
    for node in CONTROL_PLANES:
        assert voters(pk, node) == set(CONTROL_PLANES)


def test_the_drill_reset_then_up_takes_the_vip_down_and_builds_again_behind_it(
    pk: Pikube,
) -> None:
    drill(pk)
