"""The cluster's VRRP password: created once in the state dir (0600), reused, never replaced."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pikube.errors import PikubeError
from pikube.vrrp import AUTH_PASS_RE, ensure_auth_pass


def test_the_password_is_created_once_owner_only_and_in_keepaliveds_format(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    path = ensure_auth_pass(state_dir)
    assert path.parent == state_dir
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    password = path.read_text().strip()
    assert AUTH_PASS_RE.fullmatch(password)
    # keepalived keeps at most 8 characters of auth_pass: exactly 8, letters and digits.
    assert len(password) == 8 and password.isalnum()


def test_the_password_is_reused_so_every_control_plane_agrees(tmp_path: Path) -> None:
    first = ensure_auth_pass(tmp_path).read_text()
    path = ensure_auth_pass(tmp_path)
    assert path.read_text() == first


def test_each_cluster_gets_its_own_password(tmp_path: Path) -> None:
    passwords = {ensure_auth_pass(tmp_path / f"c{i}").read_text() for i in range(5)}
    assert len(passwords) == 5


def test_a_loose_mode_is_tightened(tmp_path: Path) -> None:
    path = ensure_auth_pass(tmp_path)
    path.chmod(0o644)
    ensure_auth_pass(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_file_that_is_no_password_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "vrrp-auth-pass"
    path.write_text("not a password at all\n")
    with pytest.raises(PikubeError) as err:
        ensure_auth_pass(tmp_path)
    assert "delete" in (err.value.fix or "")
    assert path.read_text() == "not a password at all\n"
    # The error names the file, never its content.
    assert "not a password" not in str(err.value)
