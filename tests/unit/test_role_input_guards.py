"""Roles used on their own still refuse values that would break the files they land in.

Each play runs the real role's tasks on localhost in check mode; the guard fails before any
file is templated, and no address but loopback is ever contacted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pikube.resources import data_path
from pikube.templating import to_ansible_yaml

PLAY = """---
- name: Run one role's tasks against localhost
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Include the role
      ansible.builtin.include_role:
        name: {role}
        tasks_from: {tasks}
"""


def run_role(
    tmp_path: Path, role: str, tasks: str, **variables: str
) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAY.format(role=role, tasks=tasks))
    extra = tmp_path / "vars.yml"
    extra.write_text("".join(f"{k}: {to_ansible_yaml(v)}\n" for k, v in variables.items()))
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            "localhost,",
            "--check",
            "-e",
            f"@{extra}",
            str(playbook),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "ANSIBLE_ROLES_PATH": str(data_path("roles"))},
    )


@pytest.mark.parametrize(
    "proxy",
    ['http://h";APT::Update::Pre-Invoke{"touch${IFS}pwned";};"', "http://127.0.0.1:3142\nX"],
)
def test_node_prep_refuses_an_apt_proxy_that_breaks_apt_conf(tmp_path: Path, proxy: str) -> None:
    result = run_role(tmp_path, "pikube_node_prep", "validate", pikube_node_prep_apt_proxy=proxy)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is not a proxy URL" in result.stdout


def test_node_prep_accepts_a_proxy_url(tmp_path: Path) -> None:
    result = run_role(
        tmp_path, "pikube_node_prep", "validate", pikube_node_prep_apt_proxy="http://[fd00::1]:3142"
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "repo",
    ["http://127.0.0.1:9/core:/stable: /", "http://127.0.0.1:9/$(ARCH)", "http://u@127.0.0.1:9/k"],
)
def test_kubeadm_packages_refuses_a_repo_that_breaks_sources_list(
    tmp_path: Path, repo: str
) -> None:
    result = run_role(
        tmp_path, "pikube_kubeadm_packages", "main", pikube_kubeadm_packages_repo=repo
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is not an http(s) repository URL" in result.stdout
    assert "Create the apt keyring folder" not in result.stdout
