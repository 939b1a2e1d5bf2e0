"""The inventory of a highly available cluster: every control plane in `control_plane`, the
first of the file as the bootstrap node, the VIP as the one API endpoint, and what the
pikube_vip role reads; a cluster without network.vip renders none of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pikube.config import load_cluster
from pikube.distribution import vip_port
from pikube.inventory import render_inventory
from pikube.inventory.render import group_vars
from pikube.vrrp import auth_pass_path
from tests.factories import base_cluster, make_key_pair, write_cluster


def ha_data(key: Path, distribution: str = "kubeadm") -> dict[str, Any]:
    data = base_cluster(key, nodes=4, distribution=distribution)
    for node in data["nodes"][:3]:
        node["role"] = "control-plane"
    data["nodes"][1]["name"], data["nodes"][2]["name"] = "pi-cp2", "pi-cp3"
    data["network"]["vip"] = "192.168.1.100"
    return data


def test_every_control_plane_is_in_the_group_and_the_first_bootstraps(
    tmp_path: Path, ssh_key: Path
) -> None:
    cluster = load_cluster(write_cluster(tmp_path, ha_data(ssh_key)))
    inventory = yaml.safe_load(render_inventory(cluster))["all"]["children"]["cluster"]
    assert list(inventory["children"]["control_plane"]["hosts"]) == ["pi-cp1", "pi-cp2", "pi-cp3"]
    assert list(inventory["children"]["workers"]["hosts"]) == ["pi-w3"]
    values = inventory["vars"]
    assert values["pikube_control_plane_host"] == "pi-cp1" == cluster.control_plane.name
    assert values["pikube_control_plane_ip"] == "192.168.1.101"


@pytest.mark.parametrize(("distribution", "api_port"), [("kubeadm", 6443), ("microk8s", 16443)])
def test_a_vip_is_the_endpoint_and_gives_pikube_vip_its_values(
    tmp_path: Path, ssh_key: Path, distribution: str, api_port: int
) -> None:
    cluster = load_cluster(write_cluster(tmp_path, ha_data(ssh_key, distribution)))
    values = group_vars(cluster)
    assert values["pikube_control_plane_endpoint"] == f"192.168.1.100:{vip_port()}"
    assert vip_port() == 8443  # haproxy's port, the pikube_vip role's default
    assert values["pikube_vip_address"] == "192.168.1.100"
    assert values["pikube_vip_api_port"] == api_port
    assert values["pikube_vip_auth_pass_file"] == str(auth_pass_path(Path(str(cluster.state_dir))))


@pytest.mark.parametrize(("distribution", "api_port"), [("kubeadm", 6443), ("microk8s", 16443)])
def test_without_a_vip_the_endpoint_is_the_control_plane_and_no_vip_value_is_rendered(
    tmp_path: Path, ssh_key: Path, distribution: str, api_port: int
) -> None:
    cluster = load_cluster(write_cluster(tmp_path, base_cluster(ssh_key, 2, distribution)))
    values = group_vars(cluster)
    assert values["pikube_control_plane_endpoint"] == f"192.168.1.101:{api_port}"
    assert not [key for key in values if key.startswith("pikube_vip_")]


def test_the_ha_example_validates_and_renders_three_control_planes_behind_the_vip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    make_key_pair(home / ".ssh")
    monkeypatch.setenv("HOME", str(home))
    example = Path(__file__).resolve().parents[2] / "inventory" / "ha" / "cluster.yaml"
    (tmp_path / "work").mkdir()
    cluster = load_cluster(write_cluster(tmp_path / "work", example.read_text()))
    assert [n.name for n in cluster.control_planes] == ["pi-cp1", "pi-cp2", "pi-cp3"]
    assert group_vars(cluster)["pikube_control_plane_endpoint"] == "192.168.1.100:8443"
