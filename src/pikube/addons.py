"""The cluster's addons: one vocabulary for every flavour, and what each word installs.

``kubernetes.addons`` in cluster.yaml takes the words below (``load-balancer``, ``ingress``,
``storage``, ``metrics``) whatever the distribution. kubeadm installs them from the pinned
manifests of the ``pikube_addons`` role (MetalLB, Traefik, local-path-provisioner,
metrics-server); MicroK8s enables its own addon of the same purpose (``microk8s enable``).
MicroK8s clusters may also name MicroK8s' own addons there (``dns``, ``metallb:RANGE``), as
before. This table is the one place that knows the words, their MicroK8s addons and which
workloads show each addon's health; group_vars carry what the roles need.

The MicroK8s workloads are the ones each addon's manifest deploys in
canonical/microk8s-core-addons, branches 1.30 and 1.31 (c421c775 for 1.31):
addons/metallb/metallb.yaml (DaemonSet ``speaker`` and Deployment ``controller`` in
``metallb-system``), addons/ingress/ingress.yaml (DaemonSet
``nginx-ingress-microk8s-controller`` in ``ingress``), addons/hostpath-storage/storage.yaml
and addons/metrics-server/metrics-server.yaml (Deployments in ``kube-system``); addons.yaml's
``check_status`` names the same workloads.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from pikube.config.model import Cluster


@dataclass(frozen=True)
class Addon:
    """One addon word of cluster.yaml."""

    name: str
    # What kubeadm clusters get (the pikube_addons role's catalog entry of the same name:
    # its pinned manifest and the workloads it waits for, ``kubeadm_workloads``).
    kubeadm: str
    # The MicroK8s addon of the same purpose (`microk8s enable NAME[:ARG]`).
    microk8s: str
    # What that MicroK8s addon runs: (namespace, "deployment|daemonset/NAME"), its health.
    microk8s_workloads: tuple[tuple[str, str], ...]
    needs_lb_range: bool = False


ADDONS: dict[str, Addon] = {
    a.name: a
    for a in (
        Addon(
            "load-balancer",
            "MetalLB (L2)",
            "metallb",
            (("metallb-system", "deployment/controller"), ("metallb-system", "daemonset/speaker")),
            needs_lb_range=True,
        ),
        Addon(
            "ingress",
            "Traefik",
            "ingress",
            (("ingress", "daemonset/nginx-ingress-microk8s-controller"),),
        ),
        Addon(
            "storage",
            "local-path-provisioner",
            "hostpath-storage",
            (("kube-system", "deployment/hostpath-provisioner"),),
        ),
        Addon(
            "metrics",
            "metrics-server",
            "metrics-server",
            (("kube-system", "deployment/metrics-server"),),
        ),
    )
}


@functools.cache
def kubeadm_workloads() -> dict[str, tuple[tuple[str, str], ...]]:
    """Addon word -> its workloads on kubeadm, (namespace, "deployment/NAME"), as the
    pikube_addons role waits for them (its vars/main.yml holds them, once)."""
    from pikube.resources import data_path

    path = data_path("roles", "pikube_addons", "vars", "main.yml")
    catalog = yaml.safe_load(path.read_text(encoding="utf-8"))["pikube_addons_catalog"]
    return {
        name: tuple((str(w["namespace"]), str(w["name"])) for w in entry["workloads"])
        for name, entry in catalog.items()
    }


def microk8s_workloads() -> dict[str, tuple[tuple[str, str], ...]]:
    """Addon word -> the workloads its MicroK8s addon runs, (namespace, "deployment/NAME")."""
    return {a.name: a.microk8s_workloads for a in ADDONS.values()}


def lb_range_bounds(text: str) -> tuple[IPv4Address, IPv4Address]:
    """First and last address of ``network.lb_range``: ``FIRST-LAST`` or a CIDR block.

    Raises ValueError with the reason for anything else.
    """
    text = str(text).strip()
    if "-" in text:
        first_text, _, last_text = text.partition("-")
        first, last = IPv4Address(first_text.strip()), IPv4Address(last_text.strip())
        if last < first:
            raise ValueError(f"the range ends ({last}) before it starts ({first})")
        return first, last
    block = IPv4Network(text)
    return block.network_address, block.broadcast_address


def lb_range_text(text: str) -> str:
    """``network.lb_range`` as MetalLB and MicroK8s' metallb addon take it: FIRST-LAST."""
    first, last = lb_range_bounds(text)
    return f"{first}-{last}"


def requested(cluster: Cluster) -> list[Addon]:
    """The addon words the cluster asks for, in the order of the file."""
    return [ADDONS[name] for name in cluster.kubernetes.addons if name in ADDONS]


def microk8s_addons(cluster: Cluster) -> list[str]:
    """``kubernetes.addons`` as `microk8s enable` arguments: words mapped, native ones kept."""
    lb_range = cluster.network.lb_range
    out = []
    for name in cluster.kubernetes.addons:
        addon = ADDONS.get(name)
        if addon is None:
            out.append(name)
        elif addon.needs_lb_range and lb_range:
            out.append(f"{addon.microk8s}:{lb_range_text(lb_range)}")
        else:
            out.append(addon.microk8s)
    return out


def kubeadm_group_vars(cluster: Cluster) -> dict[str, Any]:
    """What the pikube_addons role reads: the words asked for and the range MetalLB owns."""
    lb_range = cluster.network.lb_range
    return {
        "pikube_addons_enabled": [a.name for a in requested(cluster)],
        "pikube_addons_lb_range": lb_range_text(lb_range) if lb_range else "",
    }


def microk8s_group_vars(cluster: Cluster) -> dict[str, Any]:
    """The MicroK8s role's addons, and the ones pikube disables when they leave the list."""
    return {
        "pikube_microk8s_addons": microk8s_addons(cluster),
        "pikube_microk8s_addons_managed": [a.microk8s for a in ADDONS.values()],
    }
