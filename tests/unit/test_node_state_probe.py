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
