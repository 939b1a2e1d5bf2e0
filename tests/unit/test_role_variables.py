"""Roles read only their own variables and the documented cluster-wide ones.

A role that reads another role's variable (``pikube_containerd`` taking
``pikube_node_prep_apt_retries``) breaks when used alone and hides a coupling; a
cluster-wide value lives once, in the group_vars pikube renders. This test lists the
cluster-wide names and checks that each is really rendered (or passed by a lifecycle command).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pikube.config import load_cluster
from pikube.inventory.render import group_vars, host_vars
from pikube.resources import data_path
from tests.factories import base_cluster, write_cluster

# Cluster-wide inventory variables a role may read (README "Inventory variables").
CLUSTER_WIDE = {
    # group_vars rendered from the cluster file
    "pikube_cluster_name",
    "pikube_control_plane_host",
    "pikube_control_plane_ip",
    "pikube_control_plane_endpoint",
    "pikube_vip_address",
    "pikube_apt_proxy",
    "pikube_timezone",
    "pikube_kubernetes_version",
    "pikube_kubernetes_package_repo",
    "pikube_kubeadm_config",
    "pikube_pod_cidr",
    "pikube_service_cidr",
    "pikube_network_subnet",
    "pikube_kubeconfig",
    "pikube_state_dir",
    "pikube_node_iface",
    "pikube_pod_network_role",
    # host_vars
    "pikube_node_ip",
    "pikube_node_role",
}
# Passed by a lifecycle command as extra vars (pikube upgrade / remove-node / reset).
LIFECYCLE_REQUEST = {
    "pikube_upgrade_to",
    "pikube_upgrade_ready_timeout",
    "pikube_remove_node",
    "pikube_remove_force",
    "pikube_reset_purge",
    # playbooks/backup.yml and restore.yml pass them to the backup / restore entry points
    "pikube_backup_remote_path",
    "pikube_backup_install_only",
    "pikube_restore_remote_path",
}
# Set only by the Vagrant rehearsal's inventory.
REHEARSAL = {"pikube_node_is_vm"}
# What one role publishes for the roles after it: containerd's os_vars entry point names its
# package, which the kubeadm flavour installs in the Kubernetes packages' apt run.
PUBLISHED_FACTS = {"pikube_containerd_package"}

ROLES = sorted(p.name for p in data_path("roles").iterdir() if (p / "tasks").is_dir())
NAME = re.compile(r"\bpikube_[a-z0-9_]+\b")
# `  pikube_x_y: value` sets a variable (a role parameter or a fact): not a read.
KEY = re.compile(r"^\s*-?\s*(pikube_[a-z0-9_]+):")


def reads(role: str) -> dict[str, str]:
    """Variable name -> one file of ``role`` that reads it (comments and keys left out)."""
    root = data_path("roles", role)
    found: dict[str, str] = {}
    for folder in ("defaults", "tasks", "handlers", "templates", "vars"):
        for path in sorted((root / folder).rglob("*")) if (root / folder).is_dir() else []:
            if not path.is_file():
                continue
            for line in path.read_text(encoding="utf-8").splitlines():
                code = line.split("#", 1)[0] if not line.lstrip().startswith("{#") else ""
                key = KEY.match(code)
                if key:
                    code = code[key.end() :]
                for name in NAME.findall(code):
                    found.setdefault(name, str(path.relative_to(root)))
    return found


def test_every_listed_cluster_wide_variable_is_rendered(tmp_path: Path, ssh_key: Path) -> None:
    """The list above cannot rot: pikube renders each name for some cluster."""
    rendered: set[str] = set()
    for distribution in ("kubeadm", "microk8s"):
        data = base_cluster(ssh_key, nodes=2, distribution=distribution)
        cluster = load_cluster(write_cluster(tmp_path, data, name=f"{distribution}.yaml"))
        rendered |= set(group_vars(cluster)) | set(host_vars(cluster.nodes[0]))
    ha = base_cluster(ssh_key, nodes=4, distribution="microk8s")  # the VIP's values
    for index, node in enumerate(ha["nodes"][:3]):
        node["role"], node["name"] = "control-plane", f"pi-cp{index + 1}"
    ha["network"]["vip"] = "192.168.1.100"
    rendered |= set(group_vars(load_cluster(write_cluster(tmp_path, ha, name="ha.yaml"))))
    assert not CLUSTER_WIDE - rendered, CLUSTER_WIDE - rendered


@pytest.mark.parametrize("role", ROLES)
def test_role_reads_only_its_own_and_cluster_wide_variables(role: str) -> None:
    allowed = CLUSTER_WIDE | LIFECYCLE_REQUEST | REHEARSAL | PUBLISHED_FACTS | set(ROLES)
    foreign = {
        name: where
        for name, where in reads(role).items()
        if not name.startswith(role + "_") and name not in allowed
    }
    assert not foreign, f"{role} reads other roles' variables: {foreign}"


LIFECYCLE = ("site.yml", "add_node.yml", "remove_node.yml", "reset.yml")


@pytest.mark.parametrize("playbook", [*LIFECYCLE, "upgrade.yml", "backup.yml", "restore.yml"])
def test_lifecycle_playbook_validates_first_and_never_branches_on_the_flavour(
    playbook: str,
) -> None:
    """Each lifecycle playbook imports the one validate play first, and calls the flavour's
    role through its entry points instead of `when: pikube_distribution == ...` branches."""
    import yaml

    text = data_path("playbooks", playbook).read_text(encoding="utf-8")
    plays = yaml.safe_load(text)
    assert plays[0].get("ansible.builtin.import_playbook") == "validate.yml", playbook
    assert not re.search(r"pikube_distribution\s*(==|!=|in\b)", text), playbook


def test_no_role_branches_on_the_flavour() -> None:
    for path in data_path("roles").rglob("*.yml"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"pikube_distribution\s*(==|!=|in\b)", text), path


def test_roles_fall_back_to_pikubes_one_default_version() -> None:
    """Roles used alone (without pikube's group_vars) fall back to a Kubernetes minor; it is
    the Distribution's default, never another one."""
    from pikube.distribution import KUBEADM

    fallback = re.compile(r"pikube_kubernetes_version \| default\('([^']*)'\)")
    fallbacks = {}
    for path in data_path("roles").glob("*/defaults/main.yml"):
        for found in fallback.findall(path.read_text(encoding="utf-8")):
            fallbacks[str(path)] = found
    assert fallbacks and set(fallbacks.values()) == {KUBEADM.default_version}, fallbacks
