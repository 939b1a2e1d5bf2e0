"""cluster.yaml rules for a highly available control plane: network.vip and 1, 3 or 5
control planes (each with its line and a fix); 3 or 5 control planes with a VIP load."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from pikube.config import load_cluster
from tests.factories import base_cluster, edited, line_of, write_cluster
from tests.unit.test_config_validation import only, problems_for


@pytest.fixture
def valid(ssh_key: Path) -> dict[str, Any]:
    return base_cluster(ssh_key)


def control_planes(data: dict[str, Any], count: int) -> dict[str, Any]:
    return edited(data, **{f"nodes.{i}.role": "control-plane" for i in range(count)})


def test_a_vip_inside_the_subnet_is_accepted(tmp_path: Path, valid: dict[str, Any]) -> None:
    data = edited(valid, **{"network.vip": "192.168.1.100"})
    cluster = load_cluster(write_cluster(tmp_path, data))
    assert cluster.network.vip == IPv4Address("192.168.1.100")


@pytest.mark.parametrize(
    ("vip", "message"),
    [
        ("10.0.0.100", "is outside the subnet 192.168.1.0/24"),
        ("192.168.1.0", "is the network address"),
        ("192.168.1.255", "is the broadcast address"),
        ("192.168.1.1", "is the gateway's address"),
        ("192.168.1.102", "is the address of node 'pi-w1' (nodes[1])"),
    ],
)
def test_a_vip_that_is_not_free_in_the_subnet_is_refused_at_its_line(
    tmp_path: Path, valid: dict[str, Any], vip: str, message: str
) -> None:
    problems, text = problems_for(tmp_path, edited(valid, **{"network.vip": vip}))
    problem = only(problems, "network.vip")
    assert message in problem.message
    assert problem.line == line_of(text, f"vip: {vip}")
    assert "free address" in problem.fix


def test_a_vip_that_is_a_dns_server_is_refused(tmp_path: Path, valid: dict[str, Any]) -> None:
    data = edited(valid, **{"network.dns": ["192.168.1.53"], "network.vip": "192.168.1.53"})
    problem = only(problems_for(tmp_path, data)[0], "network.vip")
    assert "DNS server" in problem.message


def test_a_vip_that_is_no_address_is_refused(tmp_path: Path, valid: dict[str, Any]) -> None:
    problems, _ = problems_for(tmp_path, edited(valid, **{"network.vip": "192.168.1.300"}))
    assert "192.168.1.300" in only(problems, "network.vip").message


@pytest.mark.parametrize("count", [2, 4])
def test_an_even_number_of_control_planes_is_refused(
    tmp_path: Path, ssh_key: Path, count: int
) -> None:
    data = control_planes(base_cluster(ssh_key, nodes=6), count)
    data["network"]["vip"] = "192.168.1.100"
    problem = only(problems_for(tmp_path, data)[0], "nodes")
    assert f"{count} control-plane nodes" in problem.message and "even" in problem.message
    assert "1, 3 or 5" in problem.fix


def test_four_control_planes_say_how_to_grow_from_three_to_five(
    tmp_path: Path, ssh_key: Path
) -> None:
    # A user adding one control plane at a time edits cluster.yaml to 4: the count applies
    # to the file, so the fix names the flow (both in the file, then add-node each in turn).
    data = control_planes(base_cluster(ssh_key, nodes=6), 4)
    data["network"]["vip"] = "192.168.1.100"
    problem = only(problems_for(tmp_path, data)[0], "nodes")
    assert "to grow from 3 to 5 control planes, list both new ones here" in problem.fix
    assert "`pikube add-node NAME` for each, one after the other" in problem.fix


def test_more_than_five_control_planes_are_refused(tmp_path: Path, ssh_key: Path) -> None:
    data = control_planes(base_cluster(ssh_key, nodes=8), 7)
    data["network"]["vip"] = "192.168.1.100"
    problem = only(problems_for(tmp_path, data)[0], "nodes")
    assert "at most 5" in problem.message


def test_three_control_planes_need_a_vip(tmp_path: Path, valid: dict[str, Any]) -> None:
    problems, text = problems_for(tmp_path, control_planes(valid, 3))
    problem = only(problems, "network")
    assert "network.vip" in problem.message and "add `vip:`" in problem.fix
    assert problem.line == line_of(text, "network:")


def test_every_control_plane_must_be_big_enough(tmp_path: Path, valid: dict[str, Any]) -> None:
    data = edited(control_planes(valid, 3), **{"nodes.2.model": "pi3b-plus"})
    data["network"]["vip"] = "192.168.1.100"
    problem = only(problems_for(tmp_path, data)[0], "nodes[2].model")
    assert "1700 MiB" in problem.message


@pytest.mark.parametrize("count", [3, 5])
def test_three_or_five_control_planes_with_a_vip_load_first_one_bootstraps(
    tmp_path: Path, ssh_key: Path, count: int
) -> None:
    data = control_planes(base_cluster(ssh_key, nodes=6), count)
    data["network"]["vip"] = "192.168.1.100"
    cluster = load_cluster(write_cluster(tmp_path, data))
    assert len(cluster.control_planes) == count
    assert cluster.control_plane == cluster.control_planes[0]
