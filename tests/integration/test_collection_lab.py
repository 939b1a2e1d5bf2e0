"""The collection pikube.cluster from a user's own playbook, run with plain `ansible-playbook`
(not the pikube CLI) against lab nodes, exactly as docs/ansible.md shows it.

The collection is built from the repository and installed offline into a throwaway collections
path; the user's folder holds only the inventory `pikube inventory -o` renders and the
documented example playbooks. No pikube ansible.cfg, no roles path into the checkout.
One lab per module (2 nodes, kubeadm stand-ins), the steps build on each other: `prepare.yml`
prepares the nodes (default tier, ~2 min with the lab); the slow tier adds a second run of it
that changes nothing, then `site.yml` builds a Ready cluster and its second run changes nothing
(~4-8 min more).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.collection import BIN, ansible_env, build_collection, doc_examples, install_collection
from tests.integration.clusterlab import LAB_TASK_TIMEOUT, cluster_lab, is_ready
from tests.lab.fixtures import pikube_inventory

pytestmark = pytest.mark.lab

RECAP = re.compile(
    r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE
)


@dataclass
class UserSetup:
    lab: Any
    folder: Path  # the user's folder: inventory/ and the example playbooks
    collections: Path
    state_dir: Path

    def playbook(self, name: str, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
        """`ansible-playbook -i inventory/hosts.yml NAME` in the user's folder."""
        env = ansible_env(
            self.collections,
            # the lab's own SSH control path: sockets of an earlier lab must not be reused
            **self.lab.ansible_env(),
            ANSIBLE_TASK_TIMEOUT=str(LAB_TASK_TIMEOUT),
        )
        return subprocess.run(
            [str(BIN / "ansible-playbook"), "-i", "inventory/hosts.yml", name],
            capture_output=True,
            text=True,
            cwd=self.folder,
            env=env,
            timeout=timeout,
            check=False,
        )


def recap(proc: subprocess.CompletedProcess[str]) -> dict[str, dict[str, int]]:
    return {
        host: {"ok": int(ok), "changed": int(ch), "unreachable": int(un), "failed": int(fa)}
        for host, ok, ch, un, fa in RECAP.findall(proc.stdout)
    }


def changed_tasks(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """`TASK: host` for every `changed:` line of the default callback's output."""
    changed, task = [], ""
    for line in proc.stdout.splitlines():
        if line.startswith("TASK ["):
            task = line[len("TASK [") :].rstrip("* ").rstrip("]")
        elif line.startswith("changed: ["):
            changed.append(f"{task}: {line[len('changed: [') :].split(']')[0]}")
    return changed


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserSetup]:
    with cluster_lab("coll", 2, "kubeadm", pi=0) as lab:
        base = tmp_path_factory.mktemp("collection-user")
        archive = build_collection(base / "build")
        collections = base / "collections"
        install_collection(archive, collections)
        folder = base / "my-cluster"
        cluster = lab.write_cluster(folder / "cluster.yaml", "kubeadm")
        pikube_inventory(cluster, folder / "inventory")
        for name, text in doc_examples().items():
            (folder / name).write_text(text)
        yield UserSetup(lab, folder, collections, Path(lab.cluster_data("kubeadm")["state_dir"]))


def test_prepare_example_prepares_the_nodes(user: UserSetup) -> None:
    proc = user.playbook("prepare.yml")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "[DEPRECATION WARNING]" not in output, output[-4000:]
    counts = recap(proc)
    assert set(counts) == {"node-1", "node-2"}
    assert all(c["changed"] > 0 and c["failed"] == 0 for c in counts.values()), counts
    for node in ("node-1", "node-2"):
        # the example's own value for a role variable, and what the group_vars feed the role
        apt = user.lab.exec(node, ["cat", "/etc/apt/apt.conf.d/80pikube"]).stdout
        assert 'Acquire::Retries "3";' in apt
        proxy = user.lab.exec(node, ["cat", "/etc/apt/apt.conf.d/81pikube-proxy"]).stdout
        assert user.lab.cluster_data("kubeadm")["apt_proxy"] in proxy
        assert user.lab.exec(node, ["hostname"]).stdout.strip() == node
        assert user.lab.exec(node, ["swapon", "--show", "--noheadings"]).stdout.strip() == ""


def assert_second_run_changes_nothing(user: UserSetup, example: str) -> None:
    proc = user.playbook(example)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    counts = {h: c["changed"] for h, c in recap(proc).items()}
    assert counts == {"node-1": 0, "node-2": 0}, changed_tasks(proc)


@pytest.mark.slow
def test_second_run_of_the_prepare_example_changes_nothing(user: UserSetup) -> None:
    assert_second_run_changes_nothing(user, "prepare.yml")


@pytest.mark.slow
def test_site_example_builds_a_ready_kubeadm_cluster(user: UserSetup) -> None:
    proc = user.playbook("site.yml")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "[DEPRECATION WARNING]" not in output, output[-4000:]
    assert all(c["failed"] == 0 for c in recap(proc).values()), recap(proc)
    # the user's own play after pikube's ran on the Ready cluster
    assert re.search(r"node-2\s+Ready", proc.stdout), proc.stdout[-3000:]

    kubeconfig = user.state_dir / "kubeconfig"  # where the group_vars put it
    nodes = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "get", "nodes", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert nodes.returncode == 0, nodes.stderr
    items = json.loads(nodes.stdout)["items"]
    assert {n["metadata"]["name"] for n in items} == {"node-1", "node-2"}
    assert all(is_ready(n) for n in items)


@pytest.mark.slow
def test_second_run_of_the_site_example_changes_nothing(user: UserSetup) -> None:
    # right after site.yml: prepare.yml's own pikube_node_prep_apt_retries would differ
    assert_second_run_changes_nothing(user, "site.yml")
