"""Inventory rendering: golden output, purity, and acceptance by the real Ansible tools."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pikube.cli.init import render_cluster_template
from pikube.config import load_cluster, parse_cluster
from pikube.inventory import group_vars, render_inventory, render_inventory_files
from pikube.resources import data_path
from tests.factories import (
    large_cluster,
    load_inventory,
    make_key_pair,
    plain_listing,
    write_cluster,
)

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "fixtures" / "golden"
ANSIBLE_BIN = Path(sys.executable).parent


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME with ~/.ssh/id_ed25519, so the example cluster file validates as written."""
    home = tmp_path / "home"
    make_key_pair(home / ".ssh")
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def example(home: Path, tmp_path: Path) -> Path:
    """The repository's example cluster file, copied next to nothing else."""
    work = tmp_path / "work"
    work.mkdir()
    return write_cluster(work, (REPO / "inventory/example/cluster.yaml").read_text())


def normalise(text: str, home: Path, work: Path) -> str:
    return text.replace(str(home), "{HOME}").replace(str(work), "{WORK}")


def check_golden(name: str, text: str) -> None:
    golden = GOLDEN / name
    if os.environ.get("PIKUBE_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), f"{name} differs; PIKUBE_UPDATE_GOLDEN=1 rewrites it"


def test_example_is_what_pikube_init_writes() -> None:
    expected = render_cluster_template("homelab", "kubeadm", "~/.ssh/id_ed25519")
    assert (REPO / "inventory/example/cluster.yaml").read_text() == expected


def test_example_is_the_classic_homelab_build(example: Path) -> None:
    cluster = load_cluster(example)
    assert [(n.role, n.model) for n in cluster.nodes] == [
        ("control-plane", "pi4-2gb"),
        ("worker", "pi4-2gb"),
        ("worker", "pi4-2gb"),
        ("worker", "pi3b-plus"),
    ]
    assert str(cluster.network.subnet).startswith("192.168.")


def test_microk8s_template_validates(home: Path, tmp_path: Path) -> None:
    text = render_cluster_template("lab", "microk8s", "~/.ssh/id_ed25519")
    cluster = load_cluster(write_cluster(tmp_path, text))
    assert cluster.microk8s_channel == "1.31/stable"
    assert cluster.kubernetes.addons == ["dns", "metrics-server"]


def test_inventory_matches_golden(example: Path, home: Path) -> None:
    text = render_inventory(load_cluster(example))
    check_golden("inventory.yml", normalise(text, home, example.parent))


def test_inventory_files_match_golden(example: Path, home: Path) -> None:
    files = render_inventory_files(load_cluster(example))
    assert sorted(files) == ["group_vars/cluster.yml", "hosts.yml"]
    check_golden("hosts.yml", normalise(files["hosts.yml"], home, example.parent))
    check_golden(
        "group_vars_cluster.yml", normalise(files["group_vars/cluster.yml"], home, example.parent)
    )


def test_rendering_is_byte_identical_and_pure(example: Path) -> None:
    first = load_cluster(example)
    second = load_cluster(example)
    assert render_inventory(first) == render_inventory(second)
    assert render_inventory(first) == render_inventory(first)


def test_group_vars_all_carry_the_pikube_prefix(example: Path) -> None:
    names = group_vars(load_cluster(example))
    assert all(k.startswith(("pikube_", "ansible_")) for k in names)
    assert names["ansible_ssh_common_args"].endswith("-o StrictHostKeyChecking=yes")


def test_values_that_look_like_yaml_survive_rendering(ssh_key: Path, tmp_path: Path) -> None:
    text = f"""
name: odd
distribution: kubeadm
kubernetes:
  kubeadm_config:
    ClusterConfiguration:
      apiServer:
        extraArgs: [{{name: "audit-log-path", value: "yes: no # not a comment"}}]
network: {{subnet: 10.0.0.0/24, gateway: 10.0.0.1, dns: [10.0.0.1], domain: "on.lan"}}
ssh: {{public_key: "{ssh_key}.pub", private_key: "{ssh_key}"}}
nodes: [{{name: "no", ip: 10.0.0.2, role: control-plane}}]
"""
    cluster = parse_cluster(text, base_dir=tmp_path)
    rendered = load_inventory(render_inventory(cluster))
    cluster_group = rendered["all"]["children"]["cluster"]
    assert "no" in cluster_group["children"]["control_plane"]["hosts"]
    extra = cluster_group["vars"]["pikube_kubeadm_config"]["ClusterConfiguration"]
    assert extra["apiServer"]["extraArgs"][0]["value"] == "yes: no # not a comment"
    assert cluster_group["vars"]["pikube_network_domain"] == "on.lan"


def test_250_nodes_render_every_host(ssh_key: Path, tmp_path: Path) -> None:
    cluster = load_cluster(write_cluster(tmp_path, large_cluster(ssh_key, 250)))
    rendered = load_inventory(render_inventory(cluster))
    children = rendered["all"]["children"]["cluster"]["children"]
    assert len(children["control_plane"]["hosts"]) == 1
    assert len(children["workers"]["hosts"]) == 249


def ansible_inventory_list(inventory: Path) -> dict[str, Any]:
    result = subprocess.run(
        [str(ANSIBLE_BIN / "ansible-inventory"), "-i", str(inventory), "--list"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true"},
    )
    parsed: dict[str, Any] = plain_listing(json.loads(result.stdout))
    return parsed


@pytest.mark.parametrize("layout", ["single-file", "directory"])
def test_real_ansible_inventory_accepts_the_output(
    example: Path, tmp_path: Path, layout: str
) -> None:
    cluster = load_cluster(example)
    out = tmp_path / "inv"
    if layout == "single-file":
        out.mkdir()
        (out / "inventory.yml").write_text(render_inventory(cluster))
        target = out / "inventory.yml"
    else:
        for relative, text in render_inventory_files(cluster).items():
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            (out / relative).write_text(text)
        target = out / "hosts.yml"
    listing = ansible_inventory_list(target)
    assert listing["cluster"]["children"] == ["control_plane", "workers"]
    assert listing["control_plane"]["hosts"] == ["pi-cp1"]
    assert listing["workers"]["hosts"] == ["pi-w1", "pi-w2", "pi-w3"]
    hostvars = listing["_meta"]["hostvars"]
    assert hostvars["pi-w3"]["ansible_host"] == "192.168.1.113"
    assert hostvars["pi-w3"]["pikube_kubernetes_version"] == "1.31"
    assert hostvars["pi-cp1"]["pikube_control_plane_ip"] == "192.168.1.101"


def test_real_ansible_playbook_syntax_checks_against_the_output(
    example: Path, tmp_path: Path
) -> None:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(render_inventory(load_cluster(example)))
    playbooks = sorted(data_path("playbooks").glob("*.yml"))
    assert playbooks, "no playbooks to syntax-check"
    for playbook in playbooks:
        result = subprocess.run(
            [
                str(ANSIBLE_BIN / "ansible-playbook"),
                "-i",
                str(inventory),
                "--syntax-check",
                str(playbook),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "ANSIBLE_ROLES_PATH": str(data_path("roles"))},
        )
        assert result.returncode == 0, f"{playbook.name}: {result.stderr}"


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")
def test_large_inventory_accepted_by_ansible(ssh_key: Path, tmp_path: Path) -> None:
    cluster = load_cluster(write_cluster(tmp_path, large_cluster(ssh_key, 250)))
    inventory = tmp_path / "big.yml"
    inventory.write_text(render_inventory(cluster))
    listing = ansible_inventory_list(inventory)
    assert len(listing["workers"]["hosts"]) == 249
