"""Cluster status: node facts in parallel plus the Kubernetes view from the control plane."""

from __future__ import annotations

import json
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pikube.config.model import Cluster, Node
from pikube.inventory import ssh_login
from pikube.probe.facts import NodeFacts, gather_facts
from pikube.probe.ha import (
    ControlPlaneAnswer,
    ControlPlaneView,
    control_plane_view,
    probe_script,
    sections,
)
from pikube.probe.ssh import ProbeError, SshConnections, SshTarget

STATUS_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class KubeNode:
    name: str
    ready: bool | None
    version: str
    unschedulable: bool = False


@dataclass
class ClusterStatus:
    cluster: Cluster
    nodes: list[NodeFacts]
    api_healthy: bool | None = None
    api_detail: str = ""
    kube_nodes: dict[str, KubeNode] = field(default_factory=dict)
    control_plane: ControlPlaneView | None = None
    addons: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        rows = []
        for facts in self.nodes:
            node = self.cluster.node(facts.name)
            kube = self.kube_nodes.get(facts.name)
            rows.append(
                {
                    "name": facts.name,
                    "address": facts.address,
                    "role": node.role,
                    "reachable": facts.reachable,
                    "error": facts.error or None,
                    "os": facts.get("os") or None,
                    "kernel": facts.get("kernel") or None,
                    "arch": facts.get("arch") or None,
                    "memory_mb": facts.memory_mb if facts.reachable else None,
                    "cpus": facts.integer("cpus") if facts.reachable else None,
                    "kubernetes": {
                        "registered": kube is not None,
                        "version": kube.version if kube else None,
                        "ready": kube.ready if kube else None,
                        "schedulable": (not kube.unschedulable) if kube else None,
                    },
                }
            )
        return {
            "schema": STATUS_SCHEMA_VERSION,
            "cluster": self.cluster.name,
            "distribution": self.cluster.distribution,
            "api": {"healthy": self.api_healthy, "detail": self.api_detail},
            "control_plane": self.control_plane.as_dict() if self.control_plane else None,
            "nodes": rows,
            "addons": self.addons,
        }


def ssh_target(cluster: Cluster, node: Node, timeout: float = 8.0) -> SshTarget:
    """How to reach ``node``: the login Ansible gets from the inventory (``ssh_login``)."""
    login = ssh_login(cluster)
    return SshTarget(
        str(node.ip), login.user, login.private_key, login.known_hosts, timeout=timeout
    )


def probe_nodes(
    cluster: Cluster,
    nodes: list[Node],
    timeout: float = 8.0,
    connections: SshConnections | None = None,
) -> list[NodeFacts]:
    """Facts of ``nodes``, probed in parallel, in the order given."""
    if connections is None:
        with SshConnections() as own:
            return probe_nodes(cluster, nodes, timeout, own)
    with ThreadPoolExecutor(max_workers=max(1, min(32, len(nodes)))) as pool:
        return list(
            pool.map(
                lambda n: gather_facts(n.name, ssh_target(cluster, n, timeout), connections),
                nodes,
            )
        )


def parse_kube_nodes(text: str) -> dict[str, KubeNode]:
    """``kubectl get nodes -o json`` -> name -> KubeNode."""
    result = {}
    for item in json.loads(text).get("items", []):
        name = item["metadata"]["name"]
        ready = None
        for condition in item.get("status", {}).get("conditions", []):
            if condition.get("type") == "Ready":
                ready = condition.get("status") == "True"
        version = item.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", "")
        unschedulable = bool(item.get("spec", {}).get("unschedulable", False))
        result[name] = KubeNode(name, ready, version, unschedulable)
    return result


def kubernetes_view(
    cluster: Cluster, timeout: float, connections: SshConnections
) -> tuple[bool | None, str, dict[str, KubeNode]]:
    """(API healthy?, detail, nodes) as the first control plane that answers SSH sees them."""
    kubectl = shlex.join(["sudo", "-n", *cluster.flavour.kubectl])
    reasons = []
    for node in cluster.control_planes:
        target = ssh_target(cluster, node, timeout)
        try:
            health = connections.run(target, f"{kubectl} get --raw /readyz")
            if health.exit_status != 0:
                detail = (health.stderr.strip().splitlines() or ["not installed"])[-1]
                return False, detail, {}
            listing = connections.run(target, f"{kubectl} get nodes -o json")
            break
        except ProbeError as err:
            reasons.append(f"{node.name}: {err.reason}")
    else:
        return None, "control plane not reachable: " + "; ".join(reasons), {}
    if listing.exit_status != 0:
        return True, "API ready, but listing nodes failed: " + listing.stderr.strip(), {}
    try:
        return True, health.stdout.strip() or "ok", parse_kube_nodes(listing.stdout)
    except (ValueError, KeyError) as err:
        return True, f"unreadable node list: {err}", {}


def is_highly_available(cluster: Cluster) -> bool:
    """More than one control plane, or a VIP in front of them: there is a quorum to show."""
    return len(cluster.control_planes) > 1 or cluster.network.vip is not None


def control_plane_answer(
    cluster: Cluster, node: Node, timeout: float, connections: SshConnections
) -> ControlPlaneAnswer:
    """One control plane's addresses and datastore view (``pikube.probe.ha.probe_script``)."""
    target = ssh_target(cluster, node, timeout)
    try:
        result = connections.run(
            target, "sudo -n sh -s", stdin=probe_script(cluster.flavour.datastore)
        )
    except ProbeError as err:
        return ControlPlaneAnswer(node.name, str(node.ip), False, err.reason)
    return ControlPlaneAnswer(node.name, str(node.ip), True, parts=sections(result.stdout))


def ha_view(
    cluster: Cluster, timeout: float = 8.0, connections: SshConnections | None = None
) -> ControlPlaneView | None:
    """The VIP holder, the datastore's members and quorum; None for a single control plane."""
    if not is_highly_available(cluster):
        return None
    if connections is None:
        with SshConnections() as own:
            return ha_view(cluster, timeout, own)
    planes = cluster.control_planes
    with ThreadPoolExecutor(max_workers=len(planes)) as pool:
        answers = list(
            pool.map(lambda n: control_plane_answer(cluster, n, timeout, connections), planes)
        )
    nodes = {str(n.ip): n.name for n in cluster.nodes}
    return control_plane_view(cluster.flavour.datastore, cluster.network.vip, answers, nodes)


def addon_health(
    workloads: dict[str, tuple[tuple[str, str], ...]], text: str
) -> list[dict[str, Any]]:
    """Each addon's workloads with ready/desired replicas, from ``kubectl get
    deployments,daemonsets -A -o json``; an addon is healthy when every workload exists and
    all its replicas are ready."""
    found: dict[tuple[str, str], tuple[int | None, int | None]] = {}
    for item in json.loads(text).get("items", []):
        status = item.get("status", {})
        if item.get("kind") == "DaemonSet":
            counts = (status.get("numberReady", 0), status.get("desiredNumberScheduled", 0))
        else:
            counts = (status.get("readyReplicas", 0), item.get("spec", {}).get("replicas", 1))
        key = (
            item["metadata"].get("namespace", ""),
            f"{item['kind'].lower()}/{item['metadata']['name']}",
        )
        found[key] = (int(counts[0] or 0), int(counts[1] or 0))
    out = []
    for addon, parts in workloads.items():
        rows: list[dict[str, Any]] = []
        healthy = True
        for ns, name in parts:
            ready, desired = found.get((ns, name), (None, None))
            rows.append({"namespace": ns, "name": name, "ready": ready, "desired": desired})
            healthy = healthy and ready is not None and desired is not None and ready >= desired > 0
        out.append({"name": addon, "healthy": healthy, "workloads": rows})
    return out


def addons_view(
    cluster: Cluster, timeout: float, connections: SshConnections
) -> list[dict[str, Any]]:
    """The health of the addons the cluster file lists, as the control plane sees them."""
    from pikube.addons import requested

    table = cluster.flavour.addon_workloads()
    wanted = {a.name: table[a.name] for a in requested(cluster) if a.name in table}
    if not wanted:
        return []
    target = ssh_target(cluster, cluster.control_plane, timeout)
    kubectl = shlex.join(["sudo", "-n", *cluster.flavour.kubectl])
    try:
        listing = connections.run(target, f"{kubectl} get deployments,daemonsets -A -o json")
        if listing.exit_status == 0:
            return addon_health(wanted, listing.stdout)
    except (ProbeError, ValueError, KeyError):
        pass
    return [{"name": name, "healthy": None, "workloads": []} for name in wanted]


def cluster_status(
    cluster: Cluster, nodes: list[Node] | None = None, timeout: float = 8.0
) -> ClusterStatus:
    selected = nodes or list(cluster.nodes)
    with SshConnections() as connections, ThreadPoolExecutor(max_workers=3) as pool:
        view = pool.submit(kubernetes_view, cluster, timeout, connections)
        planes = pool.submit(ha_view, cluster, timeout, connections)
        facts = probe_nodes(cluster, selected, timeout, connections)
        healthy, detail, kube_nodes = view.result()
        control_plane = planes.result()
        addons = addons_view(cluster, timeout, connections) if healthy else []
    return ClusterStatus(cluster, facts, healthy, detail, kube_nodes, control_plane, addons)
