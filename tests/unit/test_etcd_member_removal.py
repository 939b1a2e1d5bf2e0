"""The kubeadm role removes a control plane's etcd member by its hex ID, and refuses to break
quorum, on etcdctl's real output.

The role's remove entry point runs on localhost (as the control plane that removes the
member) with an `etcdctl` first on PATH that answers `member list` and `endpoint health` with
output recorded from a real etcd 3.4 cluster (tests/fixtures/ha/README.md) and records every
`member remove`. No network, no root.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pikube.resources import data_path

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ha"

PLAY = """---
- name: Remove a control plane from another one
  hosts: cp1
  connection: local
  gather_facts: false
  tasks:
    - name: Run the kubeadm role's etcd member removal
      ansible.builtin.include_role:
        name: pikube_kubeadm
        tasks_from: remove_etcd_member
"""
INVENTORY = """---
all:
  children:
    control_plane:
      hosts:
        cp1: {ansible_host: 127.0.74.1, ansible_python_interpreter: "{python}"}
        cp2: {ansible_host: 127.0.74.2}
        cp3: {ansible_host: 127.0.74.3}
"""
# etcdctl's contract as recorded: `endpoint health` prints its JSON and exits 1 when an
# endpoint is unhealthy; `member remove HEXID` prints what the real one printed.
ETCDCTL = """#!/bin/sh
case "$*" in
  *"member list"*) cat "{members}" ;;
  *"endpoint health"*) cat "{health}"; grep -q '"health":false' "{health}" && exit 1; exit 0 ;;
  *"member remove"*)
    for last in "$@"; do :; done
    echo "$last" >> "{removed}"
    echo "Member $last removed from cluster ce88478985ab5371" ;;
  *) echo "unexpected etcdctl call: $*" >&2; exit 2 ;;
esac
"""


def remove(tmp_path: Path, node: str, health: str) -> tuple[subprocess.CompletedProcess[str], str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    removed = tmp_path / "removed"
    etcdctl = bin_dir / "etcdctl"
    etcdctl.write_text(
        ETCDCTL.format(
            members=FIXTURES / "member_list.json", health=FIXTURES / health, removed=removed
        )
    )
    etcdctl.chmod(0o755)
    (tmp_path / "play.yml").write_text(PLAY)
    (tmp_path / "hosts.yml").write_text(INVENTORY.replace("{python}", sys.executable))
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(tmp_path / "hosts.yml"),
            "-e",
            f"pikube_remove_node={node}",
            "-e",
            "pikube_control_plane_host=cp1",
            str(tmp_path / "play.yml"),
        ],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "ANSIBLE_ROLES_PATH": str(data_path("roles")),
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
        },
        check=False,
    )
    return result, removed.read_text() if removed.exists() else ""


def test_a_dead_control_planes_member_is_removed_by_its_hex_id(tmp_path: Path) -> None:
    result, removed = remove(tmp_path, "cp3", "health_one_down.json")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    # The ID etcdctl itself printed when cp3 was removed from the recorded cluster.
    assert removed.split() == ["e2590f6bd1ef44d2"]
    assert "Member e2590f6bd1ef44d2 removed" in (FIXTURES / "member_remove.txt").read_text()


def test_removing_a_healthy_member_while_another_is_down_is_refused(tmp_path: Path) -> None:
    result, removed = remove(tmp_path, "cp1", "health_one_down.json")
    assert result.returncode == 2, result.stdout[-3000:]
    assert "would leave etcd without quorum" in result.stdout
    assert removed == ""


def test_nothing_is_removed_when_quorum_is_already_lost(tmp_path: Path) -> None:
    result, removed = remove(tmp_path, "cp3", "health_two_down.json")
    assert result.returncode == 2, result.stdout[-3000:]
    assert "0 of 3 members healthy" in result.stdout
    assert removed == ""


def test_a_healthy_cluster_may_drop_a_member(tmp_path: Path) -> None:
    result, removed = remove(tmp_path, "cp1", "health_all.json")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert len(removed.split()) == 1
