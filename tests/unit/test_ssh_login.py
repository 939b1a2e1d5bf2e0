"""One definition of how pikube logs in over SSH, read back by the real OpenSSH (`ssh -G`).

`ssh -G` prints the configuration ssh would use and exits: no connection is made. The
inventory's options go through shlex (as Ansible splits ``ansible_ssh_common_args``), the
probes' argv goes to ssh as is; both must mean the same paths to OpenSSH, whatever the paths
hold.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from pikube.config import load_cluster
from pikube.errors import ConfigError
from pikube.inventory import group_vars, ssh_login
from pikube.probe.ssh import SshTarget, command_argv
from pikube.runner.argv import SshLogin, ssh_config_value, ssh_login_args
from tests.factories import base_cluster, make_key_pair, write_cluster

pytestmark = pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the OpenSSH client")


def ssh_g(options: list[str], host: str = "192.0.2.1") -> dict[str, list[str]]:
    """``ssh -G``: keyword -> values, as OpenSSH parsed ``options`` (no network involved)."""
    out = subprocess.run(
        ["ssh", "-F", "none", "-G", *options, host], capture_output=True, text=True, check=True
    ).stdout
    parsed: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        parsed.setdefault(key, []).append(value)
    return parsed


ODD_DIR = 'dir with space, 100% "quoted" #hash'


@pytest.fixture
def odd_cluster(tmp_path: Path) -> Path:
    """A cluster whose key and known_hosts sit in a folder with ssh_config syntax in its name."""
    folder = tmp_path / ODD_DIR
    key = make_key_pair(folder)
    data = base_cluster(key, nodes=1)
    data["ssh"]["known_hosts"] = str(folder / "known_hosts")
    return write_cluster(tmp_path, data)


def test_inventory_common_args_reach_ssh_as_the_paths_given(odd_cluster: Path) -> None:
    cluster = load_cluster(odd_cluster)
    common = group_vars(cluster)["ansible_ssh_common_args"]
    seen = ssh_g(shlex.split(common))  # Ansible splits ssh_common_args with shlex
    assert seen["userknownhostsfile"] == [str(cluster.ssh.known_hosts)]
    assert seen["stricthostkeychecking"] == ["true"]


def test_probe_argv_logs_in_with_the_cluster_key_user_and_pinned_hosts(odd_cluster: Path) -> None:
    cluster = load_cluster(odd_cluster)
    login = ssh_login(cluster)
    target = SshTarget("192.0.2.1", login.user, login.private_key, login.known_hosts)
    argv = command_argv(target, "true")
    assert argv[0] == "ssh" and argv[-2:] == ["192.0.2.1", "true"]
    seen = ssh_g(argv[1:-3])  # options only: drop "ssh" and "-- HOST COMMAND"
    assert seen["user"] == ["ubuntu"]
    # -G shows IdentityFile before its %-expansion (ssh expands it when loading the key).
    assert [f.replace("%%", "%") for f in seen["identityfile"]] == [str(cluster.ssh.private_key)]
    assert seen["userknownhostsfile"] == [str(cluster.ssh.known_hosts)]
    assert seen["stricthostkeychecking"] == ["true"]
    assert seen["batchmode"] == ["yes"]  # never prompts; a passphrase key must be in the agent
    # The agent is used as Ansible uses it: keys are not restricted to IdentityFile.
    assert seen["identitiesonly"] == ["no"]
    assert seen["passwordauthentication"] == ["no"]


def test_ansible_and_probes_share_the_login_options() -> None:
    login = SshLogin("pi", Path("/keys/id_ed25519"), Path("/state/known_hosts"))
    args = ssh_login_args(login)
    assert args[-4:] == [
        "-o",
        "UserKnownHostsFile=/state/known_hosts",
        "-o",
        "StrictHostKeyChecking=yes",
    ]
    target = SshTarget("192.0.2.1", "pi", login.private_key, login.known_hosts)
    argv = command_argv(target, "true")
    assert argv[1 : 1 + len(args)] == args


def test_a_control_character_in_a_key_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        ssh_config_value("/keys/id\nProxyCommand=evil")
    assert "control character" in caught.value.render()
