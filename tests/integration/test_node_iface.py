"""``pikube_node_iface`` (rendered group var) picks the interface that has the node's IP.

On a Vagrant VM the first interface is the provider's NAT; flannel must use the one that
carries ``pikube_node_ip``. Runs real Ansible (fact gathering on this machine, connection
local) against the group_vars `pikube inventory` renders.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pikube.inventory.render import NODE_IFACE_EXPR

PLAYBOOK = """
- hosts: all
  connection: local
  gather_facts: true
  tasks:
    - ansible.builtin.debug:
        msg: "iface={{ pikube_node_iface }}"
"""


def run(tmp_path: Path, node_ip: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    variables = {
        "pikube_node_iface": NODE_IFACE_EXPR,
        "pikube_node_ip": node_ip,
        "ansible_python_interpreter": sys.executable,
    }
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible-playbook")),
            "--inventory",
            "localhost,",
            "--extra-vars",
            f"@{tmp_path / 'vars.json'}",
            str(tmp_path / "play.yml"),
        ],
        capture_output=True,
        text=True,
        env={"ANSIBLE_NOCOLOR": "1", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )


def test_node_iface_is_the_interface_holding_the_node_ip(tmp_path: Path) -> None:
    result = run(tmp_path, "127.0.0.1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"msg": "iface=lo"' in result.stdout


def test_node_iface_fails_loudly_when_no_interface_has_the_node_ip(tmp_path: Path) -> None:
    result = run(tmp_path, "192.0.2.254")  # TEST-NET-1: on no interface here
    assert result.returncode != 0
    assert "sequence was empty" in result.stdout + result.stderr
