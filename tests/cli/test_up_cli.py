"""`pikube up` through click's CliRunner: options, bad input, and a real run whose nodes
cannot be reached (loopback addresses nobody answers on with a known host key)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pikube.cli.main import cli
from pikube.errors import EXIT_UNREACHABLE, EXIT_USAGE
from tests.factories import base_cluster, loopback_cluster_data, write_cluster


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def loopback_cluster(tmp_path: Path, ssh_key: Path) -> Path:
    return write_cluster(tmp_path, loopback_cluster_data(tmp_path, ssh_key, 2, "pi4-4gb"))


def test_help_lists_the_playbook_options() -> None:
    result = run("up", "--help")
    assert result.exit_code == 0
    for option in ("--check", "--diff", "--limit", "--tags", "-v", "--skip-doctor"):
        assert option in result.stdout


def test_up_is_listed_in_the_command_table() -> None:
    assert "up " in run("--help").stdout


def test_unknown_limit_node_is_a_usage_error(loopback_cluster: Path) -> None:
    result = run("up", "--cluster", str(loopback_cluster), "--limit", "pi-w9", "--skip-doctor")
    assert result.exit_code == EXIT_USAGE
    assert "unknown node 'pi-w9'" in result.stderr and "pi-cp1" in result.stderr
    assert result.stdout == ""


def test_unreachable_nodes_end_with_exit_6_table_and_retry_hint(loopback_cluster: Path) -> None:
    result = run("up", "--cluster", str(loopback_cluster), "--skip-doctor")
    assert result.exit_code == EXIT_UNREACHABLE, result.stderr
    assert result.stdout == ""  # progress and the table go to stderr
    assert "HOST" in result.stderr and "UNREACHABLE" in result.stderr
    assert "pikube up --limit pi-cp1,pi-w1" in result.stderr
    runs = sorted((loopback_cluster.parent / ".pikube" / "runs").iterdir())
    summary = json.loads((runs[-1] / "summary.json").read_text())
    assert summary["hosts"]["pi-cp1"]["unreachable"] == 1
    assert (runs[-1] / "inventory" / "hosts.yml").is_file()


def test_microk8s_cluster_runs_its_site_playbook_with_the_same_table(
    tmp_path: Path, ssh_key: Path
) -> None:
    data = base_cluster(ssh_key, nodes=2, distribution="microk8s")
    data["network"] = {"subnet": "127.0.0.0/8", "gateway": "127.0.0.1", "dns": ["127.0.0.1"]}
    for i, node in enumerate(data["nodes"]):
        node["ip"] = f"127.0.0.{i + 2}"
    data["ssh"]["known_hosts"] = str(tmp_path / "known_hosts")
    (tmp_path / "known_hosts").write_text("")
    cluster = write_cluster(tmp_path, data)
    result = run("up", "--cluster", str(cluster), "--skip-doctor")
    assert result.exit_code == EXIT_UNREACHABLE, result.stderr
    assert "HOST" in result.stderr and "UNREACHABLE" in result.stderr
    runs = sorted((tmp_path / ".pikube" / "runs").iterdir())
    assert "site.yml" in (runs[-1] / "command.txt").read_text()


def test_up_of_an_ha_cluster_gives_the_vrrp_password_to_no_output_or_run_file(
    tmp_path: Path, ssh_key: Path
) -> None:
    data = loopback_cluster_data(tmp_path, ssh_key, 4, "pi4-4gb")
    for node in data["nodes"][:3]:
        node["role"] = "control-plane"
    data["network"]["vip"] = "127.0.0.100"
    cluster = write_cluster(tmp_path, data)
    result = run("up", "--cluster", str(cluster), "--skip-doctor")
    assert result.exit_code == EXIT_UNREACHABLE, result.stderr
    password_file = tmp_path / ".pikube" / "vrrp-auth-pass"
    assert password_file.stat().st_mode & 0o777 == 0o600
    password = password_file.read_text().strip()
    assert len(password) == 8
    run_dir = sorted((tmp_path / ".pikube" / "runs").iterdir())[-1]
    inventory = (run_dir / "inventory" / "group_vars" / "cluster.yml").read_text()
    assert 'pikube_vip_address: "127.0.0.100"' in inventory
    assert f'pikube_vip_auth_pass_file: "{password_file}"' in inventory
    for path in [p for p in run_dir.rglob("*") if p.is_file()]:
        assert password not in path.read_text(errors="replace"), path
    assert password not in result.stderr + result.stdout
    # The next run reuses it: every control plane must keep agreeing on one password.
    run("up", "--cluster", str(cluster), "--skip-doctor")
    assert password_file.read_text().strip() == password
