"""`pikube status`, `doctor` and `up --wait-boot` through CliRunner, against loopback
addresses where nothing listens on SSH (each probe is refused at once, by the real ssh)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pikube.cli.main import cli
from pikube.errors import EXIT_UNREACHABLE
from tests.factories import loopback_cluster_data, write_cluster


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def loopback_cluster(tmp_path: Path, ssh_key: Path) -> Path:
    return write_cluster(tmp_path, loopback_cluster_data(tmp_path, ssh_key, 2, "pi4-4gb"))


def test_status_and_doctor_exit_6_for_unreachable_nodes(loopback_cluster: Path) -> None:
    status = run("status", "--cluster", str(loopback_cluster))
    doctor = run("doctor", "--cluster", str(loopback_cluster))
    for result in (status, doctor):
        assert result.exit_code == EXIT_UNREACHABLE, result.stderr
        assert "2 node(s) not reachable: pi-cp1, pi-w1" in result.stderr
        assert "Traceback" not in result.stderr
    assert "pi-cp1: unreachable: connection refused" in status.stderr
    assert "cannot probe: unreachable: connection refused" in doctor.stdout


def test_doctor_json_lists_unreachable_nodes_and_exits_6(loopback_cluster: Path) -> None:
    result = run("doctor", "--json", "--cluster", str(loopback_cluster), "--limit", "pi-w1")
    assert result.exit_code == EXIT_UNREACHABLE
    assert '"check": "reachable"' in result.stdout and '"node": "pi-w1"' in result.stdout
    assert "pi-cp1" not in result.stdout


def test_up_wait_boot_names_nodes_never_up_with_likely_causes(loopback_cluster: Path) -> None:
    result = run("up", "--cluster", str(loopback_cluster), "--wait-boot=1")
    assert result.exit_code == EXIT_UNREACHABLE, result.stderr
    assert "waiting up to 1 s for 2 node(s) to answer on SSH" in result.stderr
    assert "pi-w1: unreachable: connection refused (booting?)" in result.stderr
    assert "2 node(s) not up after 1 s: pi-cp1 (unreachable" in result.stderr
    for cause in ("powered", "cable", "SD card", "address"):
        assert cause in result.stderr
    assert "preflight" not in result.stderr and "HOST" not in result.stderr  # nothing ran
    assert result.stdout == ""


def test_up_wait_boot_limit_waits_only_for_those_nodes(loopback_cluster: Path) -> None:
    result = run("up", "--cluster", str(loopback_cluster), "--wait-boot", "1", "-l", "pi-w1")
    assert result.exit_code == EXIT_UNREACHABLE
    assert "for 1 node(s)" in result.stderr and "pi-cp1" not in result.stderr


def test_up_wait_boot_rejects_a_zero_wait(loopback_cluster: Path) -> None:
    result = run("up", "--cluster", str(loopback_cluster), "--wait-boot=0")
    assert result.exit_code == 2
    assert "Invalid value for '--wait-boot'" in result.stderr and "x>=1" in result.stderr
