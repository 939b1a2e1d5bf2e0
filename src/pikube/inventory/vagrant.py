"""Render the machine plan the top-level ``Vagrantfile`` builds its VMs from.

The rehearsal on virtual machines must run exactly what the Pis run, so the Vagrantfile
does not read ``cluster.yaml`` itself: it asks ``pikube vagrant`` for this plan (one VM per
node, same names and addresses) and provisions with the inventory pikube renders
(:func:`render_vagrant_inventory_files`), which is the Pi inventory plus one group var,
``pikube_node_is_vm``, that keeps Pi-only steps (boot firmware, cmdline.txt) off the VMs.

Everything here is pure: paths are derived from the cluster's ``state_dir``; creating the
host keys and files is the caller's job.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from pikube.config.model import Cluster, Node
from pikube.config.pimodels import PI_MODELS
from pikube.distribution import SITE_PLAYBOOK
from pikube.errors import ConfigError, Problem
from pikube.hostkeys import KEY_TYPES, host_key_dir
from pikube.inventory.render import GROUPS, render_inventory_files
from pikube.resources import data_path
from pikube.templating import to_yaml

# VM size for a node without a known Pi model: kubeadm's control-plane minimum is 2 CPUs
# and 1700 MB; workers run a kubelet, kube-proxy and the CNI agent comfortably in 1 GB.
ROLE_DEFAULTS: dict[str, tuple[int, int]] = {  # role -> (memory MB, CPUs)
    "control-plane": (2048, 2),
    "worker": (1024, 1),
}

# Variables the rehearsal adds to the Pi inventory (group_vars/all.yml of the VM inventory).
VM_VARS: dict[str, Any] = {"pikube_node_is_vm": True}

# The release part of a catalog image id: "ubuntu-24.04-server-arm64" -> "ubuntu-24.04".
RELEASE_RE = re.compile(r"^(?P<release>[a-z]+-\d+(\.\d+)?)(-|$)")


def vagrant_dir(cluster: Cluster) -> Path:
    """Where the rehearsal keeps its rendered inventory: ``<state_dir>/vagrant``."""
    return Path(str(cluster.state_dir)) / "vagrant"


def host_key_paths(cluster: Cluster, node: Node) -> list[Path]:
    """The node's pinned host keys (private halves; ``.pub`` next to each).

    The same store as for a flashed card, so a node has one identity on a VM and on a Pi.
    """
    folder = host_key_dir(Path(str(cluster.state_dir)), node.name)
    return [folder / f"ssh_host_{key_type}_key" for key_type in KEY_TYPES]


def vm_size(node: Node) -> tuple[int, int]:
    """(memory MB, CPUs): the Pi model's memory where known, so a 1 GB Pi stays 1 GB."""
    memory, cpus = ROLE_DEFAULTS[node.role]
    model = PI_MODELS.get(node.model or "")
    return (model.memory_mb if model else memory), cpus


def os_release(image: str, *, file: str = "") -> str:
    """The OS release the VMs run, taken from the Pis' image id (``ubuntu-24.04``)."""
    match = RELEASE_RE.match(image)
    if not match:
        raise ConfigError(
            [
                Problem(
                    "image",
                    f"cannot tell the OS release of image {image!r} for the Vagrant boxes",
                    "use a catalog image named like ubuntu-24.04-server-arm64",
                    file=file,
                )
            ],
            file=file,
        )
    return match.group("release")


def check_vagrant_network(cluster: Cluster, *, file: str = "") -> None:
    """Refuse node addresses that the VM network gives to the host itself.

    VirtualBox host-only networks and libvirt networks put the host on the subnet's first
    address, so a node there would collide with the machine running Vagrant.
    """
    host_address = IPv4Address(int(cluster.network.subnet.network_address) + 1)
    problems = [
        Problem(
            f"nodes[{index}].ip",
            f"address {node.ip} is the first address of {cluster.network.subnet}, which "
            "Vagrant's private network gives to the host",
            "use another address for this node in the rehearsal cluster file",
            file=file,
        )
        for index, node in enumerate(cluster.nodes)
        if node.ip == host_address
    ]
    if problems:
        raise ConfigError(problems, file=file)


def render_vagrant_plan(cluster: Cluster, *, file: str = "") -> dict[str, Any]:
    """The JSON-able plan: one machine per node, in cluster order, the last one provisions.

    ``file`` names the cluster file in error messages.
    """
    check_vagrant_network(cluster, file=file)
    machines = []
    for node in cluster.nodes:
        memory, cpus = vm_size(node)
        machines.append(
            {
                "name": node.name,
                "ip": str(node.ip),
                "role": node.role,
                "group": GROUPS[node.role],
                "model": node.model,
                "memory_mb": memory,
                "cpus": cpus,
                "host_keys": [str(path) for path in host_key_paths(cluster, node)],
            }
        )
    return {
        "cluster": cluster.name,
        "distribution": cluster.distribution,
        "release": os_release(cluster.image, file=file),
        "subnet": str(cluster.network.subnet),
        # The one site playbook; it drives the cluster's flavour through its role.
        "playbook": str(data_path("playbooks", SITE_PLAYBOOK)),
        "inventory": str(vagrant_dir(cluster) / "inventory"),
        "known_hosts": str(cluster.ssh.known_hosts),
        "ssh_user": cluster.ssh.user,
        "ssh_public_key": str(cluster.ssh.public_key),
        "vm_vars": dict(VM_VARS),
        "ansible_env": ansible_env(cluster),
        "machines": machines,
    }


def ansible_env(cluster: Cluster) -> dict[str, str]:
    """Environment for the provisioner's ansible-playbook, as pikube's runner sets it.

    Roles and the modules they call (plugins/modules) from the same pikube install as the
    playbook; facts cached per cluster state dir
    (a VM named pi-cp1 must never lend its cached facts to the real pi-cp1); SSH control
    sockets of the rehearsal's own, so none outlives a destroyed VM into a new one.
    """
    state_dir = Path(str(cluster.state_dir))
    return {
        "ANSIBLE_ROLES_PATH": str(data_path("roles")),
        "ANSIBLE_LIBRARY": str(data_path("plugins", "modules")),
        "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(state_dir / "facts"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(vagrant_dir(cluster) / "cp"),
    }


def render_vagrant_inventory_files(cluster: Cluster) -> dict[str, str]:
    """The Pi inventory (``pikube inventory -o``) plus ``group_vars/all.yml`` with VM_VARS."""
    files = render_inventory_files(cluster)
    lines = [
        "---",
        f"# Rehearsal on VMs for cluster {cluster.name}, rendered by `pikube vagrant`.",
        "# Everything else in this inventory is exactly what the Pis get.",
    ]
    lines += [f"{key}: {to_yaml(value)}" for key, value in VM_VARS.items()]
    files["group_vars/all.yml"] = "\n".join(lines) + "\n"
    return files
