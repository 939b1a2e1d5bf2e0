"""The node-prep probe (module pikube_node_state) reads systemd units in one call and keys
them by the name asked; when it cannot tell (no systemd, a unit missing from the answer), it
says nothing certain, so the tasks that own those units run as before."""

from __future__ import annotations

from typing import Any

from tests.cni import plugin_module

probe = plugin_module("pikube_node_state")

# `systemctl show --property=UnitFileState,ActiveState -- swap.target systemd-timesyncd.service`
# on a fresh lab node (systemd 252): one block per unit, in the order asked, properties in
# systemd's own order; swap.target not masked yet, timesyncd not installed (a container).
SHOW = "ActiveState=active\nUnitFileState=static\n\nActiveState=inactive\nUnitFileState=\n"


def answering(rc: int, out: str) -> Any:
    def run(*argv: str) -> tuple[int, str, str]:
        assert argv[:3] == ("systemctl", "show", "--property=UnitFileState,ActiveState")
        return rc, out, ""

    return run


def test_units_are_keyed_by_the_name_asked_in_order() -> None:
    units = probe.unit_states(["swap.target", "systemd-timesyncd.service"], answering(0, SHOW))
    assert units == {
        "swap.target": {"enabled": "static", "active": "active"},
        "systemd-timesyncd.service": {"enabled": "", "active": "inactive"},
    }


def test_without_systemd_nothing_is_claimed() -> None:
    units = probe.unit_states(["swap.target"], answering(1, ""))
    assert units == {"swap.target": {"enabled": "", "active": ""}}


def test_an_answer_short_of_a_unit_claims_nothing() -> None:
    one_block = "ActiveState=active\nUnitFileState=static\n"
    units = probe.unit_states(["swap.target", "systemd-timesyncd.service"], answering(0, one_block))
    assert all(state == {"enabled": "", "active": ""} for state in units.values())


def test_an_empty_lists_folder_is_no_package_lists_however_new(tmp_path: Any) -> None:
    # A fresh image (debootstrap, a cloud image) ships /var/lib/apt/lists empty, its mtime that
    # of the build: taken for lists refreshed then, apt would be asked to install from nothing.
    (tmp_path / "lists" / "partial").mkdir(parents=True)
    (tmp_path / "lists" / "lock").touch()
    assert probe.apt_lists_age(str(tmp_path)) is None


def test_lists_with_an_index_are_as_old_as_the_success_stamp(tmp_path: Any) -> None:
    import os
    import time

    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "deb.debian.org_debian_dists_bookworm_main_binary-arm64_Packages.lz4").touch()
    assert 0 <= probe.apt_lists_age(str(tmp_path)) < 60  # the folder's mtime: no stamp
    stamp = tmp_path / "periodic" / "update-success-stamp"
    stamp.parent.mkdir()
    stamp.touch()
    old = time.time() - 7200
    os.utime(stamp, (old, old))
    assert 7190 < probe.apt_lists_age(str(tmp_path)) < 7300


def test_no_apt_folder_is_no_package_lists(tmp_path: Any) -> None:
    assert probe.apt_lists_age(str(tmp_path / "missing")) is None
