"""Static guarantees of pikube's playbooks, roles and ansible.cfg."""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pikube.config import load_cluster
from pikube.distribution import DISTRIBUTIONS, MICROK8S_CALICO, POD_NETWORKS, SITE_PLAYBOOK
from pikube.inventory import render_inventory_files, write_files
from pikube.resources import data_path
from tests.factories import base_cluster, write_cluster

KUBEADM_ROLES = [
    "pikube_node_prep",
    "pikube_containerd",
    "pikube_kubeadm_packages",
    "pikube_kubeadm_control_plane",
    "pikube_kubeadm_worker",
    "pikube_cni_flannel",
    "pikube_cni_calico",
    "pikube_kubeconfig",
    "pikube_verify",
]


def test_ansible_cfg_keeps_host_key_checking_and_speeds_up_ssh() -> None:
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(data_path("ansible.cfg"))
    assert cfg.getboolean("defaults", "host_key_checking")
    assert cfg.getboolean("ssh_connection", "pipelining")
    assert "ControlPersist" in cfg.get("ssh_connection", "ssh_args")
    assert cfg.getint("defaults", "forks") >= 20
    assert cfg.get("defaults", "fact_caching") == "jsonfile"


@pytest.mark.parametrize("role", KUBEADM_ROLES)
def test_every_role_has_the_standard_layout(role: str) -> None:
    root = data_path("roles", role)
    for part in ("defaults/main.yml", "meta/main.yml", "meta/argument_specs.yml", "tasks/main.yml"):
        assert (root / part).is_file(), f"{role}: {part} missing"
    defaults = yaml.safe_load((root / "defaults" / "main.yml").read_text()) or {}
    specs = yaml.safe_load((root / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"].get("options", {})
    for name in defaults:
        assert name.startswith(role + "_"), f"{role}: variable {name} lacks the role prefix"
        assert name in options, f"{role}: {name} is not in meta/argument_specs.yml"


def test_no_galaxy_collections_are_used() -> None:
    # Kubernetes manifests kept in roles' files/ are data, not tasks (MetalLB's CRDs speak of
    # BGP communities).
    roles = [p for p in data_path("roles").rglob("*.yml") if p.parent.name != "files"]
    text = "".join(p.read_text() for p in roles)
    text += "".join(p.read_text() for p in data_path("playbooks").glob("*.yml"))
    for collection in ("community.", "ansible.posix.", "kubernetes.core."):
        assert collection not in text


def test_site_playbook_passes_syntax_check(tmp_path: Path, ssh_key: Path) -> None:
    cluster = load_cluster(write_cluster(tmp_path, base_cluster(ssh_key)))
    write_files(render_inventory_files(cluster), tmp_path / "inventory")
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(data_path("ansible.cfg")),
        "ANSIBLE_ROLES_PATH": str(data_path("roles")),
    }
    for playbook in ("site.yml", "verify.yml"):
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "ansible-playbook"),
                "--syntax-check",
                "-i",
                str(tmp_path / "inventory" / "hosts.yml"),
                str(data_path("playbooks", playbook)),
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_site_playbook_names_no_role_of_a_specific_flavour() -> None:
    """One site playbook drives every flavour through {{ pikube_distribution_role }}'s entry
    points: a new flavour brings a Distribution and a role, never a playbook or a play.

    Flavour roles are each Distribution's role, its helpers (pikube_kubeadm_*) and the pod
    network roles (kubeadm's bootstrap installs one; MicroK8s brings its own).
    """
    networks = [*POD_NETWORKS.values(), MICROK8S_CALICO]
    owners = {d.role for d in DISTRIBUTIONS.values()} | {n.role for n in networks}
    roles = {p.name for p in data_path("roles").iterdir()}
    flavour_roles = owners | {r for r in roles if any(r.startswith(o + "_") for o in owners)}
    plays = yaml.safe_load(data_path("playbooks", SITE_PLAYBOOK).read_text())
    texts = [data_path("playbooks", SITE_PLAYBOOK).read_text()]
    texts += [
        data_path("playbooks", play["ansible.builtin.import_playbook"]).read_text()
        for play in plays
        if "ansible.builtin.import_playbook" in play
    ]
    named = {r for r in flavour_roles for t in texts if re.search(rf"\b{r}\b", t)}
    assert not named, f"the site playbook names flavour roles {sorted(named)}"
    assert [p.name for p in data_path("playbooks").glob("site*.yml")] == [SITE_PLAYBOOK]


def test_microk8s_role_has_the_standard_layout() -> None:
    test_every_role_has_the_standard_layout("pikube_microk8s")


def test_microk8s_site_playbook_passes_syntax_check(tmp_path: Path, ssh_key: Path) -> None:
    cluster = load_cluster(write_cluster(tmp_path, base_cluster(ssh_key, distribution="microk8s")))
    write_files(render_inventory_files(cluster), tmp_path / "inventory")
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(data_path("ansible.cfg")),
        "ANSIBLE_ROLES_PATH": str(data_path("roles")),
    }
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "--syntax-check",
            "-i",
            str(tmp_path / "inventory" / "hosts.yml"),
            str(data_path("playbooks", "site.yml")),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_microk8s_join_token_tasks_are_no_log() -> None:
    """The add-node output (the token) and the join command line never reach the event log."""
    tasks = yaml.safe_load(
        data_path("roles", "pikube_microk8s", "tasks", "join_attempt.yml").read_text()
    )
    by_name = {t["name"]: t for t in tasks}
    assert by_name["Create a single-use join token on the control node"]["no_log"] is True
    assert by_name["Join the cluster"]["no_log"] is True
    config = yaml.safe_load(
        data_path("roles", "pikube_microk8s", "tasks", "kubeconfig.yml").read_text()
    )
    assert config[0]["no_log"] is True  # `microk8s config` holds the admin client key


@pytest.mark.parametrize("playbook", ["site.yml"])
def test_control_plane_guard_holds_whichever_tags_run(playbook: str) -> None:
    """`pikube up --tags control_plane` (no prepare play) must still pass the guard.

    The guard play runs under every tag selection and reads only ansible_play_hosts, never
    a fact that an earlier play sets (absent when that play's tag was not selected).
    """
    plays = yaml.safe_load(data_path("playbooks", playbook).read_text())
    guards = [p for p in plays if str(p.get("name", "")).startswith("Stop when the control")]
    assert len(guards) == 1, playbook
    (guard,) = guards
    assert guard["tags"] == ["always"]
    text = yaml.safe_dump(guard["tasks"])
    assert "ansible_play_hosts" in text
    assert "hostvars" not in text and "set_fact" not in text
