"""Faults during `pikube up` node prep, on one lab node: the apt proxy goes away for 20 s, and
the controller is killed while its playbook runs.

The apt proxy is the lab's own forwarder on BRIDGE:3142 (the shared apt-cacher-ng behind it
keeps serving other labs): taken down just before node prep's first apt task, it refuses every
connection for 20 s. A run that gives up on the first refused download fails the test.

`pikube` SIGKILLed alone leaves its ansible-playbook running on, blind (its event pipe is
gone, it keeps changing the nodes). A second `up` started then would race it on the same
nodes; it must refuse, saying which process still holds the cluster, and run once that ended.
The apt case is in the default tier (~1.5 min with its lab); the kill case is slow-tier.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.clusterlab import Pikube, cluster_lab, start_up, task_started

pytestmark = pytest.mark.lab

OUTAGE_S = 20  # how long the apt proxy is down (the case), not a limit on anything


@pytest.fixture(scope="module")
def pk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pikube]:
    """A fresh 1-node kubeadm lab (no Pi personality: no reboot to wait for)."""
    with cluster_lab("flt", 1, "kubeadm", pi=0) as lab:
        cluster = lab.write_cluster(tmp_path_factory.mktemp("faults") / "cluster.yaml", "kubeadm")
        yield Pikube(lab, cluster, "kubeadm")


def apt_retries(events: list[dict[str, Any]]) -> list[str]:
    """Tasks that were retried after a failed attempt (the callback's retry events)."""
    return [e["task"] for e in events if e.get("pikube_event") == "retry"]


def test_apt_proxy_down_for_20s_during_node_prep_is_retried_not_fatal(pk: Pikube) -> None:
    run = start_up(pk, "--tags", "apt")  # node prep's apt tasks only: the default tier is timed
    try:
        # The task before the first apt task: the outage covers that task's start.
        before_apt = task_started("Write the apt, kernel module and sysctl settings")
        run.wait_for(before_apt, "node prep's apt tasks")
        pk.lab.proxy_down()
        time.sleep(OUTAGE_S)
    finally:
        pk.lab.proxy_up()
    run.process.wait(1500)
    output = run.log.read_text()
    assert run.process.returncode == 0, output[-4000:]
    events = run.events()
    # The outage really hit apt, and the run got through it by retrying.
    retried = apt_retries(events)
    assert any(task.endswith("Install base packages") for task in retried), retried
    summary = {e["pikube_event"]: e for e in events if e.get("pikube_event") == "stats"}
    assert summary["stats"]["hosts"]["node-1"]["failures"] == 0


@pytest.mark.slow  # ~3.5 min: a whole node prep runs on, orphaned, before the re-run
def test_rerun_refuses_while_a_killed_runs_playbook_still_acts_then_runs(pk: Pikube) -> None:
    run = start_up(pk, "--tags", "prepare")
    try:
        run.wait_for(task_started("Install base packages"), "node prep's apt task")
        playbook = run.ansible_playbook_pid()
        run.kill("pikube")
        assert run.process.returncode == -9
        # Its ansible-playbook runs on without anyone reading its events ...
        proc = pk("up", "--tags", "prepare")
        # ... so a new run must not start beside it.
        assert proc.returncode == 1, proc.stderr[-4000:]
        assert "another pikube run is still acting on this cluster" in proc.stderr
        assert f"ansible-playbook pid {playbook}" in proc.stderr
        run.wait_group_gone()
    finally:
        run.kill_all()
    proc = pk("up", "--tags", "prepare")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert pk.changed() == {"node-1": 0}  # the orphan had finished the job


def test_run_lock_file_is_private_and_names_the_last_holder(pk: Pikube) -> None:
    lock = pk.state_dir / "run.lock"
    assert lock.stat().st_mode & 0o777 == 0o600
    assert "ansible-playbook pid" in lock.read_text()
