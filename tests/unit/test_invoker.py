"""Under sudo, pikube hands the files it creates to the invoking user, and only those."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from pikube.invoker import adopt_invoker_home, hand_over, sudo_invoker

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


def test_without_sudo_nothing_is_adopted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUDO_USER", raising=False)
    assert sudo_invoker() is None
    monkeypatch.setenv("SUDO_USER", "root")
    assert sudo_invoker() is None


@needs_root
def test_files_outside_the_users_folders_stay_roots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state folder under /srv or /tmp (no folder of the user's above it) is not given
    away: only folders the user already owns make their new contents theirs."""
    nobody = pwd.getpwnam("nobody")
    monkeypatch.setenv("SUDO_USER", "nobody")
    monkeypatch.setenv("HOME", "/root")
    assert adopt_invoker_home() is not None and os.environ["HOME"] == nobody.pw_dir
    deep = tmp_path / "state" / "hostkeys"
    deep.mkdir(parents=True)
    (deep / "key").write_text("secret")
    hand_over(deep / "key")
    assert {p.stat().st_uid for p in (tmp_path, deep, deep / "key")} == {0}
    # Inside a folder of the user's: the new file and its new parents become theirs.
    mine = tmp_path / "mine"
    mine.mkdir()
    os.chown(mine, nobody.pw_uid, nobody.pw_gid)
    (mine / ".pikube").mkdir()
    (mine / ".pikube" / "known_hosts").write_text("")
    hand_over(mine / ".pikube" / "known_hosts")
    assert (mine / ".pikube").stat().st_uid == nobody.pw_uid
    assert (mine / ".pikube" / "known_hosts").stat().st_uid == nobody.pw_uid
    assert tmp_path.stat().st_uid == 0
