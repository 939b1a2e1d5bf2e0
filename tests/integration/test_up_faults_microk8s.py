"""The controller killed at several points of a fresh MicroK8s `pikube up`, then `up` again.

One lab (node-1 control node, node-2 worker); each step starts `up` on what the previous
killed run left, at a point named by pikube's own event log, once the command of that point
runs on the node (or has already finished there: the stand-ins are quick):

1. `snap install microk8s` started: `pikube` SIGKILLed alone; its ansible-playbook runs on,
   so the next `up` must refuse; then that orphan is SIGKILLed as the refusal says;
2. `microk8s join` started on node-2: ansible-playbook SIGKILLed;
3. `up` again: converges, every node Ready, the control node's CA is the one its first
   install made, node-2 joined once (its Node object is the one the interrupted join
   registered, the run joins nobody, no join token is left unspent); then nothing changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.clusterlab import Pikube, cluster_lab, start_up, task_started
from tests.integration.test_up_microk8s import control_tokens, joins_in

pytestmark = [pytest.mark.lab, pytest.mark.slow]

NODES = ("node-1", "node-2")
CA = "/var/snap/microk8s/current/certs/ca.crt"
SEEN: dict[str, Any] = {}


@pytest.fixture(scope="module")
def pk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pikube]:
    with cluster_lab("mflt", len(NODES), "microk8s", pi=0) as lab:
        cluster = lab.write_cluster(tmp_path_factory.mktemp("mfaults") / "cluster.yaml", "microk8s")
        yield Pikube(lab, cluster, "microk8s")


def ca_fingerprint(pk: Pikube) -> str | None:
    proc = pk.lab.exec("node-1", ["cat", CA])
    return hashlib.sha256(proc.stdout.encode()).hexdigest() if proc.returncode == 0 else None


def test_pikube_killed_during_snap_install_leaves_a_playbook_a_rerun_refuses_to_race(
    pk: Pikube,
) -> None:
    run = start_up(pk)
    try:
        run.wait_for(task_started("Install the microk8s snap"), "the snap install")
        print(
            "snap install on node-1:",
            run.wait_on_node("node-1", "snap install", "Install the microk8s snap"),
        )
        playbook = run.ansible_playbook_pid()
        run.kill("pikube")
        proc = pk("up")
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert f"ansible-playbook pid {playbook}" in proc.stderr
        os.kill(playbook, signal.SIGKILL)  # as the refusal says: stop what is left of it
        run.wait_group_gone(600)
    finally:
        run.kill_all()
    run.wait_gone_on("node-1", "snap install")
    SEEN["ca"] = ca_fingerprint(pk)


def test_ansible_killed_while_microk8s_join_runs(pk: Pikube) -> None:
    run = start_up(pk)
    try:
        run.wait_for(task_started("Join the cluster"), "the join")
        print(
            "microk8s join on node-2:",
            run.wait_on_node("node-2", "microk8s join", "Join the cluster"),
        )
        run.kill("ansible-playbook")
        assert run.process.returncode == 1, run.log.read_text()[-3000:]
        run.wait_group_gone(600)  # Ansible's workers finish their task on the nodes
    finally:
        run.kill_all()
    run.wait_gone_on("node-2", "microk8s join")
    assert ca_fingerprint(pk) == SEEN["ca"]


def test_up_after_the_kills_converges_with_one_install_and_one_join(pk: Pikube) -> None:
    before = {name: node["metadata"]["uid"] for name, node in pk_nodes(pk).items()}
    proc = pk("up")
    assert proc.returncode == 0, proc.stderr[-4000:]
    nodes = pk.wait_all_ready(NODES)
    assert SEEN["ca"] is not None and ca_fingerprint(pk) == SEEN["ca"]
    assert joins_in(pk.events()) == []  # node-2's interrupted join had made it
    assert {name: node["metadata"]["uid"] for name, node in nodes.items()} == before
    assert control_tokens(pk.lab) == []  # no single-use token left unspent


def test_another_up_changes_nothing(pk: Pikube) -> None:
    proc = pk("up")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert pk.changed() == {n: 0 for n in NODES}


def pk_nodes(pk: Pikube) -> dict[str, dict[str, Any]]:
    """The nodes as the control node's own kubectl sees them (no kubeconfig fetched yet)."""
    proc = pk.lab.exec("node-1", ["/snap/bin/microk8s", "kubectl", "get", "nodes", "-o", "json"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {n["metadata"]["name"]: n for n in json.loads(proc.stdout)["items"]}
