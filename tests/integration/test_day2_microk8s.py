"""Day 2 on a MicroK8s lab (3 nodes, node-1 a Pi 4): upgrade 1.30/stable -> 1.31/stable node
by node, remove-node of an unreachable node, reset --limit + add-node, remove-node of a live
node, then the instructor's drill (reset -> up -> Ready with a new cluster CA).

Runs the real CLI over real SSH against systemd-nspawn nodes with the snap and MicroK8s
stand-ins (tests/lab/standins: channels 1.30/stable and 1.31/stable, `snap refresh`,
`microk8s leave`/`remove-node`, single-use join tokens) and the real kubectl through the
fetched kubeconfig. One lab for the module; the steps build on each other in file order.

Slow tier (6-7 minutes), like the kubeadm module (12-16 min): the default tier's budget goes
to the highly available `up` and the addons.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.clusterlab import Pikube, check_remove_of_an_unreachable_node, cluster_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]

NODES = ("node-1", "node-2", "node-3")
SNAP = "/snap/bin/microk8s"
CA = "/var/snap/microk8s/current/certs/ca.crt"
CA_SEEN: list[str] = []


@pytest.fixture(scope="module")
def pk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pikube]:
    """A fresh 3-node lab whose cluster file tracks 1.30/stable (the older channel)."""
    with cluster_lab("m2", 3, "microk8s") as lab:
        path = lab.write_cluster(tmp_path_factory.mktemp("day2mk8s") / "cluster.yaml", "microk8s")
        text = path.read_text()
        assert "channel: 1.31/stable" in text, text
        path.write_text(text.replace("channel: 1.31/stable", "channel: 1.30/stable  # start here"))
        # --skip-doctor for `up`: lab nodes are amd64 containers without vxlan.
        yield Pikube(lab, path, "microk8s")


def ca_fingerprint(pk: Pikube) -> str:
    pem = pk.lab.exec("node-1", ["cat", CA]).stdout
    assert "BEGIN CERTIFICATE" in pem
    return hashlib.sha256(pem.encode()).hexdigest()


def build_and_wait(pk: Pikube) -> dict[str, dict[str, Any]]:
    pk.ok("up")
    found = pk.wait_all_ready(NODES)
    CA_SEEN.append(ca_fingerprint(pk))
    return found


def minors(found: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: n["status"]["nodeInfo"]["kubeletVersion"][:5] for name, n in found.items()}


def tracking(pk: Pikube, node: str) -> str:
    """The channel `snap list` says the node tracks (column Tracking)."""
    proc = pk.lab.exec(node, ["snap", "list", "microk8s"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return str(proc.stdout.splitlines()[-1].split()[3])


def leaves_in(pk: Pikube, command: str) -> set[str]:
    """Hosts on which the last `command` run ran `microk8s leave` and it succeeded."""
    return {
        e["host"]
        for e in pk.events(command)
        if e.get("pikube_event") == "runner"
        and "Leave the MicroK8s cluster" in e.get("task", "")
        and e.get("status") in ("ok", "changed")
        and e.get("changed")
    }


# --- the drill ------------------------------------------------------------------------------


def test_up_on_the_older_channel(pk: Pikube) -> None:
    found = build_and_wait(pk)
    assert set(minors(found).values()) == {"v1.30"}
    assert {tracking(pk, n) for n in NODES} == {"1.30/stable"}


def test_reset_in_check_mode_removes_nothing(pk: Pikube) -> None:
    proc = pk("reset", "--check")  # no --yes needed: a check run changes nothing
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert all(count > 0 for count in pk.changed("reset").values())  # what it would do
    assert all(pk.exists(node, SNAP) for node in NODES)
    assert pk.kubeconfig.exists()
    assert pk.ready_nodes() == set(NODES)


def test_reset_removes_microk8s_and_the_kubeconfig_and_a_second_reset_changes_nothing(
    pk: Pikube,
) -> None:
    assert pk.kubeconfig.exists()
    pk.ok("reset", "--yes")
    # the joined workers left the cluster first (their clustered.lock); the control node has none
    assert leaves_in(pk, "reset") == {"node-2", "node-3"}
    for node in NODES:
        assert not pk.exists(node, SNAP), node
        assert not pk.exists(node, "/var/snap/microk8s"), node
        assert "microk8s" not in pk.lab.exec(node, ["snap", "list"]).stdout
    assert not pk.kubeconfig.exists()
    pk.ok("reset", "--yes")
    assert pk.changed("reset") == {n: 0 for n in NODES}


def test_up_after_reset_is_ready_with_a_new_cluster_ca(pk: Pikube) -> None:
    build_and_wait(pk)
    assert CA_SEEN[-1] != CA_SEEN[-2]


# --- upgrade, remove-node, add-node ---------------------------------------------------------


def test_upgrade_in_check_mode_refreshes_nothing(pk: Pikube) -> None:
    proc = pk("upgrade", "--to", "1.31", "--check")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "check mode: nothing was changed" in proc.stderr
    assert {tracking(pk, n) for n in NODES} == {"1.30/stable"}
    assert set(minors(pk.nodes()).values()) == {"v1.30"}
    assert "channel: 1.30/stable  # start here" in pk.cluster.read_text()


def test_upgrade_refreshes_the_channel_node_by_node(pk: Pikube) -> None:
    proc = pk("upgrade", "--to", "1.32", "--yes")
    assert proc.returncode == 1 and "upgrade to 1.31 first" in proc.stderr
    pk.ok("upgrade", "--to", "1.31", "--yes")
    found = pk.wait_all_ready(NODES)
    assert set(minors(found).values()) == {"v1.31"}
    assert {tracking(pk, n) for n in NODES} == {"1.31/stable"}
    assert 'channel: "1.31/stable"  # start here' in pk.cluster.read_text()
    # Node by node, control plane first: each node's refresh starts only after the node
    # before it was Ready again (the event log keeps the order).
    order = [
        (e["host"], "refresh" if "Refresh microk8s" in e["task"] else "ready")
        for e in pk.events("upgrade")
        if e.get("pikube_event") == "runner"
        and e.get("status") in ("ok", "changed")
        and ("Refresh microk8s" in e.get("task", "") or e.get("task", "").endswith("be Ready"))
    ]
    assert order == [(n, step) for n in NODES for step in ("refresh", "ready")], order
    pk.ok("upgrade", "--to", "1.31", "--yes")
    assert pk.changed("upgrade") == {n: 0 for n in NODES}


def test_remove_node_of_an_unreachable_node_cleans_kubernetes(pk: Pikube) -> None:
    check_remove_of_an_unreachable_node(pk, "node-3", left_behind=SNAP)


def test_reset_limit_then_add_node_leaves_other_hosts_unchanged(pk: Pikube) -> None:
    pk.ok("reset", "--limit", "node-3", "--yes")
    assert set(pk.changed("reset")) == {"node-3"}
    assert leaves_in(pk, "reset") == {"node-3"}
    assert not pk.exists("node-3", SNAP)
    assert pk.exists("node-1", SNAP) and pk.exists("node-2", SNAP)  # the rest untouched
    pk.ok("add-node", "node-3")
    counts = pk.changed("add-node")
    assert counts["node-1"] == 0  # the control node only answered reads and made the token
    assert "node-2" not in counts  # never contacted
    assert counts["node-3"] > 0
    found = pk.wait_all_ready(NODES)
    assert minors(found)["node-3"] == "v1.31"  # installed from the upgraded channel
    assert tracking(pk, "node-3") == "1.31/stable"


def test_remove_node_of_a_live_node_removes_and_resets_it(pk: Pikube) -> None:
    pk.ok("remove-node", "node-3", "--yes")
    assert set(pk.nodes()) == {"node-1", "node-2"}
    assert not pk.exists("node-3", SNAP)
    # Removing it again: already gone from Kubernetes and already reset.
    pk.ok("remove-node", "node-3", "--yes")
    assert pk.changed("remove-node") == {"node-1": 0, "node-3": 0}


def test_drill_again_after_day2_changes_brings_every_node_back(pk: Pikube) -> None:
    pk.ok("reset", "--yes")
    found = build_and_wait(pk)
    assert set(minors(found).values()) == {"v1.31"}
    assert len(set(CA_SEEN)) == len(CA_SEEN)  # every build has its own CA
