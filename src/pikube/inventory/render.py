"""Render the Ansible inventory and group_vars from the cluster model.

``group_vars`` and ``host_vars`` are pure functions of the model; the Jinja2 templates in
``templates/inventory/`` lay them out. Output is byte-identical for the same model.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from pathlib import Path
from typing import Any

from pikube.config.model import Cluster, Node
from pikube.runner.argv import SshLogin, ssh_common_args
from pikube.templating import AnsibleTemplate, render
from pikube.vrrp import auth_pass_path

GROUPS = {"control-plane": "control_plane", "worker": "workers"}


def ssh_login(cluster: Cluster) -> SshLogin:
    """How pikube logs in to the nodes: Ansible (through ``group_vars``) and the probes."""
    if cluster.ssh.known_hosts is None:  # load_cluster sets it: <state_dir>/known_hosts
        raise ValueError("ssh.known_hosts unset: load the cluster with load_cluster()")
    return SshLogin(cluster.ssh.user, cluster.ssh.private_key, cluster.ssh.known_hosts)


def group_vars(cluster: Cluster) -> dict[str, Any]:
    """Cluster-wide settings for the ``cluster`` group, every one with the ``pikube_`` prefix."""
    state_dir = Path(str(cluster.state_dir))
    login = ssh_login(cluster)
    values: dict[str, Any] = {
        "pikube_cluster_name": cluster.name,
        "pikube_distribution": cluster.distribution,
        "pikube_pod_cidr": str(cluster.pod_cidr),
        "pikube_service_cidr": str(cluster.service_cidr),
        "pikube_network_subnet": str(cluster.network.subnet),
        "pikube_network_gateway": str(cluster.network.gateway),
        "pikube_network_dns": [str(d) for d in cluster.network.dns],
        "pikube_network_domain": cluster.network.domain or "",
        "pikube_control_plane_host": cluster.control_plane.name,
        "pikube_control_plane_ip": str(cluster.control_plane.ip),
        "pikube_control_plane_endpoint": cluster.control_plane_endpoint,
        "pikube_apt_proxy": cluster.apt_proxy or "",
        "pikube_timezone": cluster.timezone or "",
        "pikube_image": cluster.image,
        "pikube_node_iface": NODE_IFACE_EXPR,
        "pikube_state_dir": str(state_dir),
        "pikube_kubeconfig": str(state_dir / "kubeconfig"),
        "ansible_user": login.user,
        "ansible_ssh_private_key_file": str(login.private_key),
        "ansible_ssh_common_args": shlex.join(ssh_common_args(login)),
    }
    values.update(cluster.flavour.group_vars(cluster))
    values.update(vip_vars(cluster))
    return dict(sorted(values.items()))


def vip_vars(cluster: Cluster) -> dict[str, Any]:
    """What roles/pikube_vip reads, for a cluster with network.vip (none without one: the
    site playbook applies the role only when pikube_vip_address is set)."""
    if cluster.network.vip is None:
        return {}
    return {
        "pikube_vip_address": str(cluster.network.vip),
        "pikube_vip_api_port": cluster.flavour.api_port,
        "pikube_vip_auth_pass_file": str(auth_pass_path(Path(str(cluster.state_dir)))),
    }


# The interface that carries the node's address (eth0 on a Pi, the private network on a
# Vagrant VM whose first interface is the provider's NAT), from the gathered facts. Roles
# pass it to flannel's --iface; evaluated lazily by Ansible, so it needs facts gathered.
NODE_IFACE_EXPR = AnsibleTemplate(
    "{{ ansible_facts.interfaces | map('replace', '-', '_') | map('replace', '.', '_')"
    " | map('extract', ansible_facts) | selectattr('ipv4', 'defined')"
    " | selectattr('ipv4.address', 'equalto', pikube_node_ip)"
    " | map(attribute='device') | first }}"
)


def host_vars(node: Node) -> dict[str, Any]:
    """Per-node values. ``pikube_node_ip`` is the node's cluster address; it equals
    ``ansible_host`` on Pis, and roles use it (never the default-route address) for
    kubelet ``--node-ip`` and the API server's advertise address."""
    values: dict[str, Any] = {
        "ansible_host": str(node.ip),
        "pikube_node_ip": str(node.ip),
        "pikube_node_role": node.role,
    }
    if node.model:
        values["pikube_node_model"] = node.model
    if node.mac:
        values["pikube_node_mac"] = node.mac
    return values


def _context(cluster: Cluster) -> dict[str, Any]:
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {g: [] for g in GROUPS.values()}
    for node in cluster.nodes:
        groups[GROUPS[node.role]].append((node.name, host_vars(node)))
    return {"cluster": cluster, "groups": groups, "group_vars": group_vars(cluster)}


def render_inventory(cluster: Cluster) -> str:
    """One self-contained YAML inventory (group_vars inline under ``cluster.vars``)."""
    return render("inventory/hosts.yml.j2", **_context(cluster), inline_vars=True)


def render_inventory_files(cluster: Cluster) -> dict[str, str]:
    """``hosts.yml`` plus ``group_vars/cluster.yml``, relative path -> text."""
    context = _context(cluster)
    return {
        "hosts.yml": render("inventory/hosts.yml.j2", **context, inline_vars=False),
        "group_vars/cluster.yml": render("inventory/group_vars.yml.j2", **context),
    }


def write_files(files: dict[str, str], directory: Path) -> list[Path]:
    """Write each file atomically (temp file + rename) so no half-written file remains."""
    written = []
    for relative, text in files.items():
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(target)
    return written
