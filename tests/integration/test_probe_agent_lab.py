"""In the lab: status and doctor log in exactly as Ansible does, with a passphrase-protected
key that only a running ssh-agent holds (the everyday setup), and fail cleanly without it.

Runs against the session lab: the test key is added to each node's authorized_keys for this
module and removed after it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pikube.config import load_cluster
from pikube.probe.ssh import command_argv
from pikube.probe.status import ssh_target
from tests.lab import Lab
from tests.lab.fixtures import bin_path, pikube_inventory, run_ansible
from tests.ssh_agent import make_protected_key, ssh_agent_holding

pytestmark = pytest.mark.lab

AUTHORIZED_KEYS = "/home/ubuntu/.ssh/authorized_keys"
COMMENT = "pikube-agent-test"
# What decides how ssh authenticates and whom it trusts (`ssh -G` keywords).
LOGIN_KEYWORDS = (
    "user",
    "hostname",
    "port",
    "identityfile",
    "identitiesonly",
    "identityagent",
    "certificatefile",
    "userknownhostsfile",
    "globalknownhostsfile",
    "stricthostkeychecking",
    "hostkeyalgorithms",
    "pubkeyauthentication",
    "pubkeyacceptedalgorithms",
    "preferredauthentications",
    "passwordauthentication",
    "kbdinteractiveauthentication",
    "hostbasedauthentication",
    "gssapiauthentication",
    "proxycommand",
    "proxyjump",
)


@pytest.fixture(scope="module")
def agent_lab(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """cluster.yaml using the protected key; yields its path, the agent socket and a HOME."""
    work = tmp_path_factory.mktemp("agent")
    key = make_protected_key(work / "keys")
    line = Path(f"{key}.pub").read_text().strip()
    assert line.endswith(COMMENT)
    nodes = [spec.name for spec in lab.nodes()]
    for node in nodes:
        lab.exec(node, ["sh", "-c", f'echo "$1" >> {AUTHORIZED_KEYS}', "-", line], check=True)
    data = lab.cluster_data()
    data["ssh"]["private_key"] = str(key)
    data["ssh"]["public_key"] = f"{key}.pub"
    cluster = work / "cluster.yaml"
    cluster.write_text(yaml.safe_dump(data, sort_keys=False))
    home = work / "home"  # no ~/.ssh keys of the user running the tests
    home.mkdir()
    try:
        with ssh_agent_holding(key, work) as sock:
            yield {"cluster": str(cluster), "sock": sock, "home": str(home), "key": str(key)}
    finally:
        for node in nodes:
            lab.exec(node, ["sed", "-i", f"/ {COMMENT}$/d", AUTHORIZED_KEYS], check=True)


def environment(agent_lab: dict[str, str], with_agent: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    env["HOME"] = agent_lab["home"]
    if with_agent:
        env["SSH_AUTH_SOCK"] = agent_lab["sock"]
    return env


def pikube(
    agent_lab: dict[str, str], *args: str, with_agent: bool
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [bin_path("pikube"), "--cluster", agent_lab["cluster"], *args],
        env=environment(agent_lab, with_agent),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_status_and_doctor_see_every_node_through_the_agent(
    lab: Lab, agent_lab: dict[str, str]
) -> None:
    status = pikube(agent_lab, "status", "--json", with_agent=True)
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)["nodes"]
    assert {r["name"]: r["reachable"] for r in rows} == {n.name: True for n in lab.nodes()}
    doctor = pikube(agent_lab, "doctor", "--json", with_agent=True)
    findings = json.loads(doctor.stdout)
    assert not [f for f in findings if f["check"] == "reachable"], findings
    assert doctor.returncode in (0, 1), doctor.stderr  # 1: a lab fault, never unreachable


def test_without_the_agent_status_and_doctor_report_a_login_failure(
    lab: Lab, agent_lab: dict[str, str]
) -> None:
    status = pikube(agent_lab, "status", with_agent=False)
    doctor = pikube(agent_lab, "doctor", with_agent=False)
    assert status.returncode == doctor.returncode == 6
    for node in lab.nodes():
        assert f"{node.name}: SSH login refused" in status.stderr
    assert doctor.stdout.count("cannot probe: SSH login refused") == len(lab.nodes())
    assert f"ssh-add {agent_lab['key']}" in doctor.stdout
    assert "Traceback" not in status.stderr + doctor.stderr


def ssh_g(argv: list[str], env: dict[str, str]) -> dict[str, str]:
    """``ssh -G`` of ``argv`` (ssh, options..., host): the login settings ssh would use."""
    out = subprocess.run(
        ["ssh", "-G", *argv[1:]], env=env, capture_output=True, text=True, check=True
    ).stdout
    values: dict[str, list[str]] = {}
    for line in out.splitlines():
        keyword, _, value = line.partition(" ")
        values.setdefault(keyword, []).append(value)
    return {k: " | ".join(values.get(k, [])) for k in LOGIN_KEYWORDS}


def test_ansible_logs_in_with_the_probes_ssh_options(
    lab: Lab, agent_lab: dict[str, str], tmp_path: Path
) -> None:
    """Ansible's real ssh command line (from -vvv) and the probe's mean the same login."""
    inventory = pikube_inventory(Path(agent_lab["cluster"]), tmp_path / "inventory")
    env = environment(agent_lab, with_agent=True)
    result = run_ansible(lab, inventory, "node-1", "-m", "ansible.builtin.ping", "-vvv", env=env)
    assert result.returncode == 0 and '"ping": "pong"' in result.stdout, result.stdout
    node = lab.node("node-1")
    executed = re.search(r"SSH: EXEC (ssh .*)$", result.stdout, re.MULTILINE)
    assert executed, result.stdout
    words = shlex.split(executed.group(1))
    ansible_argv = words[: len(words) - 1 - words[::-1].index(node.ip) + 1]  # up to the host
    cluster = load_cluster(Path(agent_lab["cluster"]))
    probe_argv = command_argv(ssh_target(cluster, cluster.node("node-1")), "true")
    probe_argv = [w for w in probe_argv[:-1] if w != "--"]  # drop the command; host stays last
    assert ssh_g(ansible_argv, env) == ssh_g(probe_argv, env)
