"""Untrusted input through the real commands: exit 3, `Error: what, in where` + fix, no
traceback, nothing on stdout, and nothing run or written."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pikube.cli.main import cli
from pikube.errors import EXIT_CONFIG
from tests.factories import base_cluster, edited, line_of, write_cluster


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def refused(result: Result) -> str:
    assert result.exit_code == EXIT_CONFIG, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("Error: ")
    assert "fix:" in result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


@pytest.mark.parametrize("command", ["validate", "inventory"])
def test_a_template_in_apt_proxy_is_refused_before_any_inventory(
    tmp_path: Path, ssh_key: Path, command: str
) -> None:
    data = edited(base_cluster(ssh_key), apt_proxy="http://{{lookup('pipe','touch${IFS}x')}}")
    path = write_cluster(tmp_path, data)
    stderr = refused(run(command, "--cluster", str(path)))
    assert f"{path}:{line_of(path.read_text(), 'apt_proxy')} (apt_proxy)" in stderr
    assert "contains template syntax '{{'" in stderr


def test_a_name_with_a_trailing_newline_is_refused(tmp_path: Path, ssh_key: Path) -> None:
    path = write_cluster(tmp_path, edited(base_cluster(ssh_key), **{"nodes.1.name": "pi-w1\n"}))
    stderr = refused(run("validate", "--cluster", str(path)))
    assert "(nodes[1].name): 'pi-w1\\n' contains the control character '\\n'" in stderr


def test_an_alias_bomb_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 12)]
    path.write_text("\n".join(lines) + "\n")
    stderr = refused(run("validate", "--cluster", str(path)))
    assert stderr.startswith(f"Error: YAML alias *a0 is not allowed, in {path}:2\n")


def test_dev_zero_as_the_cluster_file_is_refused() -> None:
    stderr = refused(run("--cluster", "/dev/zero", "validate"))
    assert "cluster file /dev/zero is a device, not a regular file" in stderr


def test_state_dir_etc_is_refused(tmp_path: Path, ssh_key: Path) -> None:
    path = write_cluster(tmp_path, edited(base_cluster(ssh_key), state_dir="/etc"))
    stderr = refused(run("inventory", "--cluster", str(path)))
    assert "(state_dir): state_dir /etc is a system folder" in stderr


@pytest.mark.parametrize("command", [["validate"], ["status"], ["doctor"], ["up", "--check"]])
def test_a_malformed_known_hosts_line_is_a_located_error(
    tmp_path: Path, ssh_key: Path, command: list[str]
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("# pinned\npi-cp1 ssh-ed25519 AAAA-not-base64\n")
    data = edited(base_cluster(ssh_key), **{"ssh.known_hosts": str(known_hosts)})
    # Loopback addresses: should a command go as far as connecting, it reaches nothing.
    data["network"] = {"subnet": "127.77.41.0/24", "gateway": "127.77.41.1", "dns": ["127.0.0.1"]}
    for index, node in enumerate(data["nodes"]):
        node["ip"] = f"127.77.41.{10 + index}"
    path = write_cluster(tmp_path, data)
    stderr = refused(run(*command, "--cluster", str(path)))
    assert stderr.startswith(
        f"Error: the key of type ssh-ed25519 is not valid base64, in {known_hosts}:2\n"
    )
    assert f"ssh-keygen -R HOST -f {known_hosts}" in stderr
    assert not (tmp_path / ".pikube").exists(), "the command went on to write a run directory"
