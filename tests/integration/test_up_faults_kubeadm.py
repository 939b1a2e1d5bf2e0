"""The controller killed at several points of a fresh kubeadm `pikube up`, then `up` again.

One lab (node-1 control plane, node-2 worker); each step starts `up` on what the previous
killed run left and kills it further on, at a point named by pikube's own event log (and, for
a command that takes a while on the node, once that command runs there):

1. node prep (containerd being installed): `pikube` SIGKILLed alone; its ansible-playbook
   runs on, so the next `up` must refuse; then that orphan is SIGKILLed as the refusal says;
2. `kubeadm init` running on node-1: ansible-playbook SIGKILLed;
3. the pod network manifest being applied: ansible-playbook SIGKILLed;
4. `kubeadm join` running on node-2: ansible-playbook SIGKILLed;
5. `up` again: converges, every node Ready, the control plane initialised once (the cluster CA
   is the one written during step 2), node-2 joined once (one TLS bootstrap: one
   kubelet-client CSR from a bootstrap token; its Node object never recreated), no join
   token left on a disk; a further `up` changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.clusterlab import (
    Interrupted,
    Pikube,
    cluster_lab,
    start_up,
    task_started,
)

pytestmark = [pytest.mark.lab, pytest.mark.slow]

NODES = ("node-1", "node-2")
CA = "/etc/kubernetes/pki/ca.crt"
JOIN_FILE = "/etc/pikube/kubeadm-join.yaml"
SEEN: dict[str, Any] = {}  # what the kills left, checked after the final run


@pytest.fixture(scope="module")
def pk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pikube]:
    with cluster_lab("kflt", len(NODES), "kubeadm", pi=0) as lab:
        cluster = lab.write_cluster(tmp_path_factory.mktemp("kfaults") / "cluster.yaml", "kubeadm")
        yield Pikube(lab, cluster, "kubeadm")


def ca_fingerprint(pk: Pikube) -> str | None:
    proc = pk.lab.exec("node-1", ["cat", CA])
    return hashlib.sha256(proc.stdout.encode()).hexdigest() if proc.returncode == 0 else None


def bootstrap_csrs(pk: Pikube) -> list[str]:
    """Kubelet client CSRs made with a bootstrap token: one per `kubeadm join` that got there."""
    proc = pk.kubectl("get", "csr", "--output", "json")
    assert proc.returncode == 0, proc.stderr
    return [
        item["spec"].get("username", "")
        for item in json.loads(proc.stdout)["items"]
        if item["spec"].get("username", "").startswith("system:bootstrap:")
    ]


def kill_ansible(run: Interrupted) -> None:
    run.kill("ansible-playbook")
    out = run.log.read_text()
    assert run.process.returncode == 1, out[-3000:]
    assert "ansible-playbook exited with code -9 before finishing" in out, out[-3000:]
    run.wait_group_gone(600)  # Ansible's workers finish their task on the nodes, then let go


def test_pikube_killed_in_node_prep_leaves_a_playbook_a_rerun_refuses_to_race(
    pk: Pikube,
) -> None:
    run = start_up(pk)
    try:
        run.wait_for(task_started("Install kubelet, kubeadm and kubectl"), "the packages' apt run")
        playbook = run.ansible_playbook_pid()
        run.kill("pikube")
        proc = pk("up")
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert f"ansible-playbook pid {playbook}" in proc.stderr
        # As the refusal says: stop what is left of the killed run.
        os.kill(playbook, signal.SIGKILL)
        run.wait_group_gone(600)
    finally:
        run.kill_all()


def test_ansible_killed_while_kubeadm_init_runs(pk: Pikube) -> None:
    run = start_up(pk)
    try:
        run.wait_for(task_started("Initialise the control plane"), "kubeadm init")
        print(
            "kubeadm init:",
            run.wait_on_node("node-1", "kubeadm init", "Initialise the control plane"),
        )
        kill_ansible(run)
    finally:
        run.kill_all()
    run.wait_gone_on("node-1", "kubeadm init")
    SEEN["ca"] = ca_fingerprint(pk)


def test_ansible_killed_while_the_pod_network_is_applied(pk: Pikube) -> None:
    run = start_up(pk)
    try:
        run.wait_for(task_started("Apply the flannel manifest"), "the CNI apply")
        kill_ansible(run)
    finally:
        run.kill_all()
    run.wait_gone_on("node-1", "kubectl.*apply")
    assert ca_fingerprint(pk) == SEEN["ca"]


def test_ansible_killed_while_kubeadm_join_runs(pk: Pikube) -> None:
    run = start_up(pk)
    try:
        run.wait_for(task_started("Join the cluster with kubeadm"), "kubeadm join")
        print(
            "kubeadm join:",
            run.wait_on_node("node-2", "kubeadm join", "Join the cluster with kubeadm"),
        )
        kill_ansible(run)
    finally:
        run.kill_all()
    run.wait_gone_on("node-2", "kubeadm join")


def test_up_after_the_kills_converges_with_one_init_and_one_join(pk: Pikube) -> None:
    proc = pk("up")
    assert proc.returncode == 0, proc.stderr[-4000:]
    nodes = pk.wait_all_ready(NODES)
    assert ca_fingerprint(pk) == SEEN["ca"] is not None  # initialised once: the same CA
    assert len(bootstrap_csrs(pk)) == 1  # node-2 bootstrapped its kubelet once
    SEEN["uids"] = {name: node["metadata"]["uid"] for name, node in nodes.items()}
    # The interrupted join left no join token on node-2's disk.
    assert not pk.exists("node-2", JOIN_FILE)


def test_another_up_changes_nothing(pk: Pikube) -> None:
    proc = pk("up")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert pk.changed() == {n: 0 for n in NODES}
    nodes = pk.nodes()
    assert {name: node["metadata"]["uid"] for name, node in nodes.items()} == SEEN["uids"]
    assert len(bootstrap_csrs(pk)) == 1
