"""The HA probe's parsers and quorum rule, on the real tools' recorded output.

Fixtures and how each was recorded: tests/fixtures/ha/README.md.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from pikube.probe.ha import (
    ControlPlaneAnswer,
    Member,
    control_plane_view,
    etcd_members,
    interfaces_with,
    parse_etcd_health,
    parse_etcd_members,
    parse_microk8s_status,
    probe_script,
    quorum,
    removal_refusal,
    sections,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ha"
# The recorded etcd members ran on 127.0.74.1-3 as cp1-cp3.
NODES = {"127.0.74.1": "cp1", "127.0.74.2": "cp2", "127.0.74.3": "cp3"}


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def etcd_answer(
    node: str, address: str, health: str, *, members: str = "member_list.json"
) -> ControlPlaneAnswer:
    return ControlPlaneAnswer(
        node,
        address,
        True,
        parts={
            "member": ("1", 0),
            "members": (fixture(members), 0),
            "health": (fixture(health), 0),
        },
    )


def down(node: str, address: str) -> ControlPlaneAnswer:
    return ControlPlaneAnswer(node, address, False, "unreachable: no route to host")


def test_etcd_member_ids_come_out_in_the_hex_form_member_remove_takes() -> None:
    members = {m["name"]: m for m in parse_etcd_members(fixture("member_list.json"))}
    assert set(members) == {"cp1", "cp2", "cp3"}
    # etcdctl printed "Member e2590f6bd1ef44d2 removed" for cp3 (member_remove.txt).
    assert f"Member {members['cp3']['id']} removed" in fixture("member_remove.txt")
    assert members["cp2"]["address"] == "127.0.74.2"


def test_a_member_that_never_started_has_no_name_and_is_not_healthy() -> None:
    answer = etcd_answer(
        "cp1", "127.0.74.1", "health_all.json", members="member_list_unstarted.json"
    )
    found = {m.address: m for m in etcd_members([answer], NODES)}
    assert found["127.0.74.3"].healthy is False
    assert found["127.0.74.3"].name == "cp3"  # named after the cluster file's node
    assert "never started" in found["127.0.74.3"].detail
    assert quorum(list(found.values())).level == "warning"


def test_endpoint_health_reports_each_endpoint_with_its_error() -> None:
    health = parse_etcd_health(fixture("health_one_down.json"))
    assert health["127.0.74.1"] == (True, "")
    assert health["127.0.74.3"] == (False, "context deadline exceeded")


@pytest.mark.parametrize(
    ("health", "level", "healthy"),
    [
        ("health_all.json", "ok", 3),
        ("health_one_down.json", "warning", 2),
        ("health_two_down.json", "error", 0),
    ],
)
def test_quorum_of_three_etcd_members(health: str, level: str, healthy: int) -> None:
    members = etcd_members([etcd_answer("cp1", "127.0.74.1", health)], NODES)
    verdict = quorum(members)
    assert (verdict.level, verdict.healthy, verdict.total, verdict.needed) == (level, healthy, 3, 2)
    if level != "ok":
        assert verdict.fix
        assert "cp3" in verdict.message  # the member that is down is named


def test_lost_quorum_says_so_and_how_many_are_needed() -> None:
    members = etcd_members([etcd_answer("cp1", "127.0.74.1", "health_two_down.json")], NODES)
    verdict = quorum(members)
    assert "lost quorum" in verdict.message and "2 needed" in verdict.message
    assert "cp2" in verdict.message and "cp3" in verdict.message


def test_a_healthy_answer_from_one_control_plane_wins_over_anothers_timeout() -> None:
    # cp1 saw cp3 time out; cp2 (reaching cp3) saw it healthy: cp3 is a member that commits.
    answers = [
        etcd_answer("cp1", "127.0.74.1", "health_one_down.json"),
        etcd_answer("cp2", "127.0.74.2", "health_all.json"),
    ]
    assert quorum(etcd_members(answers, NODES)).level == "ok"


def test_without_a_member_list_the_control_planes_local_health_counts() -> None:
    survivor = ControlPlaneAnswer(
        "cp1",
        "127.0.74.1",
        True,
        parts={"member": ("1", 0), "local": (fixture("health_local_two_down.json"), 1)},
    )
    answers = [survivor, down("cp2", "127.0.74.2"), down("cp3", "127.0.74.3")]
    members = etcd_members(answers, NODES)
    assert [m.healthy for m in members] == [False, False, False]
    assert members[1].detail == "unreachable: no route to host"
    assert quorum(members).level == "error"


def test_microk8s_status_yaml_lists_the_dqlite_voters() -> None:
    running, nodes = parse_microk8s_status(fixture("microk8s_status_ha.txt"))
    assert running is True
    assert nodes == [(f"10.77.74.1{i}", "voter") for i in (1, 2, 3)]
    running, nodes = parse_microk8s_status(fixture("microk8s_status_standby.txt"))
    assert nodes[-1] == ("10.77.74.14", "standby")


def test_microk8s_without_quorum_answers_not_running_and_no_members() -> None:
    assert parse_microk8s_status(fixture("microk8s_status_lost_quorum.txt")) == (False, [])


def microk8s_answer(node: str, address: str, status: str) -> ControlPlaneAnswer:
    return ControlPlaneAnswer(
        node, address, True, parts={"member": ("1", 0), "status": (fixture(status), 0)}
    )


MK8S_NODES = {f"10.77.74.1{i}": f"node-{i}" for i in (1, 2, 3)}


def test_dqlite_one_node_down_is_a_warning_naming_it() -> None:
    answers = [
        microk8s_answer("node-1", "10.77.74.11", "microk8s_status_ha.txt"),
        microk8s_answer("node-2", "10.77.74.12", "microk8s_status_ha.txt"),
        down("node-3", "10.77.74.13"),
    ]
    view = control_plane_view("dqlite", None, answers, MK8S_NODES)
    assert view is not None
    assert view.quorum.level == "warning" and "node-3" in view.quorum.message
    assert [m.node for m in view.members] == ["node-1", "node-2", "node-3"]


def test_dqlite_two_nodes_down_is_lost_quorum() -> None:
    answers = [
        microk8s_answer("node-1", "10.77.74.11", "microk8s_status_lost_quorum.txt"),
        down("node-2", "10.77.74.12"),
        down("node-3", "10.77.74.13"),
    ]
    view = control_plane_view("dqlite", None, answers, MK8S_NODES)
    assert view is not None and view.quorum.level == "error"
    assert view.quorum.healthy == 0 and view.quorum.total == 3


def test_the_vip_holder_is_the_node_with_the_address_on_an_interface() -> None:
    assert interfaces_with(fixture("ip_o_addr_vip.txt"), "10.77.74.100") == ["eth0"]
    assert interfaces_with(fixture("ip_o_addr_no_vip.txt"), "10.77.74.100") == []
    # The node's own address is not mistaken for a VIP of the same prefix.
    assert interfaces_with(fixture("ip_o_addr_no_vip.txt"), "10.77.74.1") == []


def test_the_view_names_the_holder_and_flags_no_holder_or_several() -> None:
    def answer(node: str, addr: str) -> ControlPlaneAnswer:
        return ControlPlaneAnswer(
            node,
            "127.0.74." + node[-1],
            True,
            parts={
                "addr": (fixture(addr), 0),
                "member": ("1", 0),
                "members": (fixture("member_list.json"), 0),
                "health": (fixture("health_all.json"), 0),
            },
        )

    vip = IPv4Address("10.77.74.100")
    one = control_plane_view(
        "etcd",
        vip,
        [answer("cp1", "ip_o_addr_no_vip.txt"), answer("cp2", "ip_o_addr_vip.txt")],
        NODES,
    )
    assert one is not None and one.vip_holders == ["cp2"] and one.vip_problem() is None
    none = control_plane_view("etcd", vip, [answer("cp1", "ip_o_addr_no_vip.txt")], NODES)
    assert none is not None and none.vip_problem() is not None
    assert none.vip_problem()[0] == "error"  # type: ignore[index]
    both = control_plane_view(
        "etcd", vip, [answer("cp1", "ip_o_addr_vip.txt"), answer("cp2", "ip_o_addr_vip.txt")], NODES
    )
    assert both is not None and both.vip_problem()[0] == "warning"  # type: ignore[index]


def test_no_view_before_any_control_plane_is_a_datastore_member() -> None:
    fresh = ControlPlaneAnswer("cp1", "127.0.74.1", True, parts={"member": ("", 1)})
    assert control_plane_view("etcd", None, [fresh, down("cp2", "127.0.74.2")], NODES) is None


def test_probe_output_splits_into_sections_with_exit_codes() -> None:
    output = "@@addr\nline one\nline two\n@@rc 0\n@@health\n[]\n@@rc 1\n"
    assert sections(output) == {"addr": ("line one\nline two", 0), "health": ("[]", 1)}
    for datastore in ("etcd", "dqlite"):
        assert "@@member" in probe_script(datastore) and "ip -o addr show" in probe_script(
            datastore
        )


def members(*health: bool | None) -> list[Member]:
    return [Member(f"cp{i}", f"10.0.0.{i}", h, node=f"cp{i}") for i, h in enumerate(health, 1)]


@pytest.mark.parametrize(
    ("health", "remove", "refused"),
    [
        ((True, True, True), "cp1", None),  # 3 -> 2, both healthy
        ((True, True, False), "cp3", None),  # the dead member goes: 2 healthy of 2
        ((True, True, False), "cp1", "would lose quorum"),  # 1 healthy of 2 left
        ((True, False, False), "cp3", "lost quorum"),  # no quorum now: nothing can be removed
        ((True,), "cp1", "last etcd member"),
        ((True, True, True, True, False), "cp1", None),  # 5 -> 4 with 3 healthy, 3 needed
        ((True, True, True, False, False), "cp1", "would lose quorum"),  # 2 healthy of 4
        ((True, True, True, False, False), "cp5", None),  # 3 healthy of 4
    ],
)
def test_removal_keeps_quorum_or_is_refused(
    health: tuple[bool, ...], remove: str, refused: str | None
) -> None:
    reason = removal_refusal(members(*health), remove)
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and refused in reason
