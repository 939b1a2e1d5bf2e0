"""The Vagrant machine plan and VM inventory rendered from the cluster model (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pikube.config import parse_cluster
from pikube.config.model import Cluster
from pikube.errors import ConfigError
from pikube.inventory import render_inventory_files
from pikube.inventory.vagrant import (
    render_vagrant_inventory_files,
    render_vagrant_plan,
)
from pikube.resources import data_path

NODES = """
  - {name: cp, ip: 192.168.56.10, role: control-plane, model: pi5-8gb}
  - {name: w-4g, ip: 192.168.56.11, role: worker, model: pi4-4gb}
  - {name: w-pi3, ip: 192.168.56.12, role: worker, model: pi3b-plus}
  - {name: w-plain, ip: 192.168.56.13, role: worker}
"""


def cluster_text(nodes: str = NODES, distribution: str = "kubeadm", image: str = "") -> str:
    return f"""
name: rehearsal
distribution: {distribution}
network: {{subnet: 192.168.56.0/24, gateway: 192.168.56.1, dns: [192.168.56.1]}}
ssh: {{user: pi, public_key: key.pub, private_key: key}}
{image}
nodes:
{nodes}
"""


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    (tmp_path / "key").write_text("not read by these tests\n")
    (tmp_path / "key").chmod(0o600)
    (tmp_path / "key.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtest test\n")
    return tmp_path


def load(keydir: Path, text: str) -> Cluster:
    return parse_cluster(text, base_dir=keydir)


def test_one_machine_per_node_in_cluster_order_with_address_and_group(keydir: Path) -> None:
    plan = render_vagrant_plan(load(keydir, cluster_text()))
    assert [(m["name"], m["ip"], m["group"]) for m in plan["machines"]] == [
        ("cp", "192.168.56.10", "control_plane"),
        ("w-4g", "192.168.56.11", "workers"),
        ("w-pi3", "192.168.56.12", "workers"),
        ("w-plain", "192.168.56.13", "workers"),
    ]


def test_vm_memory_is_the_pi_models_memory_and_role_defaults_otherwise(keydir: Path) -> None:
    plan = render_vagrant_plan(load(keydir, cluster_text()))
    sizes = {m["name"]: (m["memory_mb"], m["cpus"]) for m in plan["machines"]}
    # Pi 5 8 GB, Pi 4 4 GB, Pi 3 B+ 1 GB; an unknown model gets the worker default.
    assert sizes == {"cp": (8192, 2), "w-4g": (4096, 1), "w-pi3": (1024, 1), "w-plain": (1024, 1)}


def test_control_plane_without_model_gets_kubeadm_minimum(keydir: Path) -> None:
    nodes = "  - {name: cp, ip: 192.168.56.10, role: control-plane}\n"
    plan = render_vagrant_plan(load(keydir, cluster_text(nodes)))
    assert (plan["machines"][0]["memory_mb"], plan["machines"][0]["cpus"]) == (2048, 2)


def test_paths_come_from_the_state_dir_and_pikubes_playbooks(keydir: Path) -> None:
    plan = render_vagrant_plan(load(keydir, cluster_text()))
    state = keydir / ".pikube"
    assert plan["inventory"] == str(state / "vagrant" / "inventory")
    assert plan["known_hosts"] == str(state / "known_hosts")
    assert plan["machines"][1]["host_keys"] == [
        str(state / "hostkeys" / "w-4g" / f"ssh_host_{key_type}_key")
        for key_type in ("ed25519", "ecdsa")
    ]
    assert plan["playbook"] == str(data_path("playbooks", "site.yml"))
    assert plan["ssh_user"] == "pi"
    assert plan["ansible_env"] == {
        "ANSIBLE_ROLES_PATH": str(data_path("roles")),
        # the modules the roles call (pikube_manifest_patch, ...), from the same install
        "ANSIBLE_LIBRARY": str(data_path("plugins", "modules")),
        "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(state / "facts"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(state / "vagrant" / "cp"),
    }
    assert plan["ssh_public_key"] == str(keydir / "key.pub")


@pytest.mark.parametrize(
    ("image", "release"),
    [("", "ubuntu-24.04"), ("image: ubuntu-22.04-server-arm64", "ubuntu-22.04")],
)
def test_boxes_follow_the_pis_os_release(keydir: Path, image: str, release: str) -> None:
    assert render_vagrant_plan(load(keydir, cluster_text(image=image)))["release"] == release


def test_node_on_the_hosts_own_address_is_refused_with_a_fix(keydir: Path) -> None:
    nodes = (
        "  - {name: cp, ip: 192.168.56.10, role: control-plane}\n"
        "  - {name: w1, ip: 192.168.56.1, role: worker}\n"
    )
    text = cluster_text(nodes).replace("gateway: 192.168.56.1", "gateway: 192.168.56.254")
    with pytest.raises(ConfigError) as err:
        render_vagrant_plan(load(keydir, text), file="rehearsal.yaml")
    message = err.value.render()
    assert "nodes[1].ip" in message
    assert "192.168.56.1 is the first address" in message
    assert "rehearsal.yaml" in message


def test_vm_inventory_is_the_pi_inventory_plus_the_vm_flag(keydir: Path) -> None:
    cluster = load(keydir, cluster_text(distribution="microk8s"))
    pi_files = render_inventory_files(cluster)
    vm_files = render_vagrant_inventory_files(cluster)
    assert {k: v for k, v in vm_files.items() if k != "group_vars/all.yml"} == pi_files
    assert yaml.safe_load(vm_files["group_vars/all.yml"]) == {"pikube_node_is_vm": True}


@pytest.mark.parametrize(
    ("distribution", "playbook"), [("kubeadm", "site.yml"), ("microk8s", "site.yml")]
)
def test_vagrant_provisions_with_the_site_playbook_of_the_clusters_flavour(
    keydir: Path, distribution: str, playbook: str
) -> None:
    """A rehearsal runs the one site playbook, as `pikube up` does, for every flavour."""
    plan = render_vagrant_plan(load(keydir, cluster_text(distribution=distribution)))
    assert plan["playbook"] == str(data_path("playbooks", playbook))
