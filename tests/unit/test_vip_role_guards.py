"""pikube_vip refuses values that would break keepalived.conf, haproxy.cfg or the health
check script, before anything is installed or written; the VRRP password is never shown.

The role's validate tasks run on localhost in check mode (no address but loopback is used).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_role_input_guards import run_role

PASSWORD = "Ab3dE6gH"


def good(tmp_path: Path) -> dict[str, Any]:
    auth_pass = tmp_path / "vrrp-auth-pass"
    auth_pass.write_text(PASSWORD + "\n")
    auth_pass.chmod(0o600)
    return {
        "pikube_vip_address": "10.0.0.100",
        "pikube_vip_node_address": "10.0.0.11",
        "pikube_vip_interface": "eth0",
        "pikube_vip_backends": [
            {"name": "cp1", "address": "10.0.0.11"},
            {"name": "cp2", "address": "10.0.0.12"},
            {"name": "cp3", "address": "10.0.0.13"},
        ],
        "pikube_vip_auth_pass_file": str(auth_pass),
    }


def test_good_values_pass(tmp_path: Path) -> None:
    result = run_role(tmp_path, "pikube_vip", "validate", **good(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "change",
    [
        {"pikube_vip_address": "10.0.0.100/32 dev eth0\n  10.9.9.9"},  # a second VIP line
        {"pikube_vip_interface": "eth0; touch /tmp/x"},
        {"pikube_vip_port": 6443, "pikube_vip_api_port": 6443},
    ],
)
def test_a_value_that_breaks_a_config_file_is_refused(
    tmp_path: Path, change: dict[str, Any]
) -> None:
    result = run_role(tmp_path, "pikube_vip", "validate", **{**good(tmp_path), **change})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Check the VIP, ports, interface and router id" in result.stdout
    assert "must be IPv4 addresses" in result.stdout


@pytest.mark.parametrize(
    "backends",
    [
        [{"name": "cp1", "address": "10.0.0.11"}, {"name": "cp 2\n", "address": "10.0.0.12"}],
        [{"name": "cp1", "address": "10.0.0.11"}, {"name": "cp2", "address": "10.0.0.100"}],
        [{"name": "cp2", "address": "10.0.0.12"}],  # this node is not among them
    ],
)
def test_bad_backends_are_refused(tmp_path: Path, backends: list[dict[str, str]]) -> None:
    result = run_role(
        tmp_path, "pikube_vip", "validate", **{**good(tmp_path), "pikube_vip_backends": backends}
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "pikube_vip_backends must list every control plane once" in result.stdout


def test_a_missing_password_file_is_refused_with_its_path(tmp_path: Path) -> None:
    values = {**good(tmp_path), "pikube_vip_auth_pass_file": str(tmp_path / "absent")}
    result = run_role(tmp_path, "pikube_vip", "validate", **values)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"no VRRP password file at {tmp_path / 'absent'}" in result.stdout


@pytest.mark.parametrize("password", ["Ab3dE6gH9", 'Ab3"E6gH'])
def test_a_password_keepalived_would_cut_or_misread_is_refused_unshown(
    tmp_path: Path, password: str
) -> None:
    values = good(tmp_path)
    Path(values["pikube_vip_auth_pass_file"]).write_text(password + "\n")
    result = run_role(tmp_path, "pikube_vip", "validate", **values)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "must hold 8 letters or digits" in result.stdout
    assert password not in result.stdout + result.stderr
