"""The seam between pikube and each Kubernetes flavour and pod network.

A ``Distribution`` (kubeadm, MicroK8s) says everything pikube needs to know about a flavour:
the grammar and default of its version (kubeadm: a minor such as "1.31", MicroK8s: a snap
channel such as "1.31/stable"), its site playbook and Ansible role, the ports it listens on,
the kubectl it runs on the control plane, its upgrade rule and the values its playbooks read
from group_vars. A ``PodNetwork`` (flannel, calico, MicroK8s' own Calico) says which tunnel
its pods encapsulate in, so node preparation and doctor check the same kernel modules.

Everything that depends on the flavour asks these objects; nothing else compares
``cluster.distribution`` with a name. Adding a flavour means one ``Distribution`` here, one
role with the lifecycle entry points (see ``docs/architecture.md``), one lab stand-in, tests.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

import yaml

from pikube.addons import (
    kubeadm_group_vars,
    kubeadm_workloads,
    microk8s_group_vars,
    microk8s_workloads,
)

if TYPE_CHECKING:
    from pikube.config.model import Cluster

# The Kubernetes minor pikube installs when the cluster file names none: the one default.
DEFAULT_MINOR = 31
# pkgs.k8s.io serves 1.24+; pikube's roles and its stand-ins are tested from 1.28 on.
MIN_MINOR = 28


@functools.cache
def memory_cgroup_flags() -> tuple[str, ...]:
    """Kernel command line flags that turn the memory cgroup on (Pi kernels ship it off).

    Every flavour needs it. They live once, as node preparation's default
    (``pikube_node_prep_cgroup_flags``), which adds them on nodes flashed elsewhere; the
    flash writes the same flags into cmdline.txt and doctor reports them missing.
    """
    flags = role_default("pikube_node_prep", "pikube_node_prep_cgroup_flags")
    return tuple(str(flag) for flag in flags)


@functools.cache
def vip_port() -> int:
    """haproxy's port on the control plane's VIP, for every flavour.

    It lives once, as the pikube_vip role's default (``pikube_vip_port``); the kubeconfig,
    the joins and every kubelet reach the API servers through it
    (``Cluster.control_plane_endpoint``).
    """
    return int(role_default("pikube_vip", "pikube_vip_port"))


def etcd_pki() -> str:
    """The folder of kubeadm's etcd certificates on a control plane: the kubeadm role's
    default (``pikube_kubeadm_etcd_pki``), which status and doctor read too."""
    return str(role_default("pikube_kubeadm", "pikube_kubeadm_etcd_pki"))


@functools.cache
def role_default(role: str, name: str) -> Any:
    """A role's default (``roles/ROLE/defaults/main.yml``): facts the roles own and Python
    needs too are read from there, never written twice."""
    from pikube.resources import data_path

    path = data_path("roles", role, "defaults", "main.yml")
    return yaml.safe_load(path.read_text(encoding="utf-8"))[name]


DistributionName = Literal["kubeadm", "microk8s"]
PodNetworkName = Literal["flannel", "calico"]


class VersionError(ValueError):
    """A version, channel or upgrade target pikube cannot use: ``message`` and ``fix``."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


class NoVersionTrack(VersionError):
    """The cluster's channel names no minor (``latest/...``): no upgrade rule applies."""


class UpgradeStepError(VersionError):
    """The upgrade target skips a minor or goes back."""


# The one site playbook `pikube up` runs for every flavour: it calls the flavour's role
# (``Distribution.role``) through its entry points, so a flavour brings no playbook.
SITE_PLAYBOOK = "site.yml"
# site.yml's tags: its play that prepares the nodes, and (inside that play) the flavour's
# packages. `pikube build --until prepared` runs the first without the second.
PREPARE_TAG = "prepare"
FLAVOUR_PACKAGES_TAG = "flavour_packages"


@dataclass(frozen=True)
class Release:
    """A parsed version or channel: ``text`` as the playbooks want it, and its minor.

    ``minor`` is None for a channel without a version track (MicroK8s ``latest/...``).
    """

    text: str
    minor: int | None


@dataclass(frozen=True)
class PodNetwork:
    """One pod network: the tunnel its pods use (modules doctor and node prep check)."""

    name: str
    title: str
    # kernel module -> what needs it
    tunnel_modules: dict[str, str]
    # The role that owns it: tasks/main.yml installs it (kubeadm's bootstrap), tasks/reset.yml
    # removes what it leaves on a node (reset.yml). Rendered as pikube_pod_network_role.
    role: str


POD_NETWORKS: dict[str, PodNetwork] = {
    # The vxlan backend of pikube's manifest (net-conf.json).
    "flannel": PodNetwork(
        "flannel", "flannel", {"vxlan": "flannel's vxlan backend"}, role="pikube_cni_flannel"
    ),
    # pikube's calico-typha manifest keeps upstream's default IP pool,
    # CALICO_IPV4POOL_IPIP Always and CALICO_IPV4POOL_VXLAN Never: an IP-in-IP tunnel.
    "calico": PodNetwork(
        "calico",
        "Calico",
        {"ipip": "calico's default IP pool (IP-in-IP)"},
        role="pikube_cni_calico",
    ),
}
# MicroK8s brings its own Calico, which runs the vxlan backend. MicroK8s installs it; what it
# leaves on a node after the snap is gone (interfaces, /var/lib/calico, cali- chains) is
# Calico's, so Calico's role resets it.
MICROK8S_CALICO = PodNetwork(
    "microk8s-calico",
    "MicroK8s' Calico",
    {"vxlan": "MicroK8s' Calico (vxlan)"},
    role="pikube_cni_calico",
)
DEFAULT_POD_NETWORK = "flannel"


def all_tunnel_modules() -> tuple[str, ...]:
    """Every tunnel module some pod network needs (what doctor's probe reports), sorted."""
    networks = [*POD_NETWORKS.values(), MICROK8S_CALICO]
    return tuple(sorted({m for n in networks for m in n.tunnel_modules}))


@dataclass(frozen=True)
class Distribution:
    """One Kubernetes flavour. Subclasses define the version grammar (``parse``)."""

    name: str
    title: str
    # The kubernetes.* key holding the version ("version" or "channel"), its default.
    version_key: str
    default_version: str
    # kubernetes.* settings that belong to this flavour only.
    settings: tuple[str, ...]
    role: str
    # The ports a node listens on; the first is the API server's.
    ports: tuple[int, ...]
    # argv prefix of kubectl on the control plane (run as root)
    kubectl: tuple[str, ...]
    default_pod_cidr: str
    default_service_cidr: str
    # The group_vars variable the playbooks read the version from.
    version_var: str
    # One regular expression for the version, used by ``parse`` and rendered into
    # group_vars for the validate play; and one for what `pikube upgrade` passes.
    pattern: re.Pattern[str] = field(repr=False)
    upgrade_pattern: re.Pattern[str] = field(repr=False)
    example: str = ""
    # What a control-plane node needs at least: (memory MiB, CPUs), if the flavour checks.
    control_plane_minimum: tuple[int, int] | None = None
    # Boards with this much memory or less cannot run the flavour at all, if it says so.
    low_memory_guard_mb: int | None = None
    # The control planes' replicated datastore (pikube.probe.ha reads its members): kubeadm's
    # stacked etcd, MicroK8s' dqlite.
    datastore: Literal["etcd", "dqlite"] = "etcd"

    @property
    def api_port(self) -> int:
        """The API server's port on every control plane (what haproxy on the VIP fronts)."""
        return self.ports[0]

    def parse(self, text: str) -> Release:  # pragma: no cover - each flavour defines it
        raise NotImplementedError

    def release(self, kubernetes: Any) -> Release:
        """The release a cluster's ``kubernetes`` section asks for (or the default)."""
        return self.parse(getattr(kubernetes, self.version_key, None) or self.default_version)

    def pod_network(self, cni: str | None) -> PodNetwork:
        return POD_NETWORKS[cni or DEFAULT_POD_NETWORK]

    def upgrade_target(self, current: Release, target: str) -> Release:
        """The release ``pikube upgrade --to target`` moves to: the next minor or the same.

        Raises ``VersionError`` for a target that is not a version of this flavour, for a
        cluster whose release has no minor, and for skipping or going back minors.
        """
        wanted = self.parse_upgrade(target)
        if current.minor is None:
            raise NoVersionTrack(
                f"the cluster's {self.version_key} {current.text} has no version track, so "
                "pikube cannot tell which minor it runs or whether the target is the next one",
                f"set kubernetes.{self.version_key} to the track the cluster runs (e.g. "
                f"{self.example}; `snap list microk8s` on the control plane shows it), then "
                "run the upgrade again",
            )
        if wanted.minor is None or wanted.minor - current.minor not in (0, 1):
            raise UpgradeStepError(
                f"cannot upgrade from 1.{current.minor} to {wanted.text}: Kubernetes "
                "upgrades one minor version at a time and never downgrades",
                f"upgrade to 1.{current.minor + 1} first"
                if (wanted.minor or 0) > current.minor
                else "restore from a backup to go back",
            )
        return wanted

    def parse_upgrade(self, target: str) -> Release:  # pragma: no cover - per flavour
        raise NotImplementedError

    def group_vars(self, cluster: Cluster) -> dict[str, Any]:
        """What this flavour's playbooks read, besides the cluster-wide values.

        ``pikube_distribution_checks`` maps a variable to the pattern the validate play
        asserts it against: this module's own grammar, so Ansible holds no second copy.
        """
        network = self.pod_network(cluster.kubernetes.cni)
        return {
            "pikube_distribution_role": self.role,
            "pikube_kubectl": list(self.kubectl),
            "pikube_distribution_checks": {
                self.version_var: anchored(self.pattern),
                **self.extra_checks(),
            },
            "pikube_upgrade_pattern": anchored(self.upgrade_pattern),
            "pikube_node_prep_required_modules": list(network.tunnel_modules),
            "pikube_pod_network_role": network.role,
            **self.flavour_vars(cluster),
        }

    def flavour_vars(self, cluster: Cluster) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def extra_checks(self) -> dict[str, str]:
        return {}

    def addon_workloads(self) -> dict[str, tuple[tuple[str, str], ...]]:
        """Addon word -> the workloads (namespace, "deployment/NAME") `pikube status` reports
        for it."""
        return {}


def anchored(pattern: re.Pattern[str]) -> str:
    """``pattern`` for Ansible's ``match`` test, which anchors only at the start."""
    return f"^(?:{pattern.pattern})$"


def _too_old(minor: int, text: str, key: str, example: str) -> VersionError:
    return VersionError(
        f"Kubernetes {text} is older than pikube supports (1.{MIN_MINOR})",
        f"choose 1.{MIN_MINOR} or newer, e.g. {key}: {example}",
    )


@dataclass(frozen=True)
class Kubeadm(Distribution):
    """Upstream Kubernetes from pkgs.k8s.io: a minor ("1.31") or a patch ("1.31.2")."""

    def parse(self, text: str) -> Release:
        match = self.pattern.fullmatch(str(text))
        if not match:
            raise VersionError(
                f"{text!r} is not a Kubernetes version",
                f"write the minor version as a quoted string, e.g. version: {self.example}",
            )
        minor = int(match.group(1))
        if minor < MIN_MINOR:
            raise _too_old(minor, str(text), "version", self.example)
        return Release(str(text), minor)

    def parse_upgrade(self, target: str) -> Release:
        if not self.upgrade_pattern.fullmatch(target):
            raise VersionError(
                f"{target!r} is not a Kubernetes version, e.g. 1.31 or 1.31.2",
                "pass the next minor version, e.g. --to 1.32",
            )
        return self.parse(target)

    def extra_checks(self) -> dict[str, str]:
        return {"pikube_cni": "^(" + "|".join(POD_NETWORKS) + ")$"}

    def addon_workloads(self) -> dict[str, tuple[tuple[str, str], ...]]:
        return kubeadm_workloads()

    def flavour_vars(self, cluster: Cluster) -> dict[str, Any]:
        return {
            self.version_var: cluster.release.text,
            "pikube_kubernetes_package_repo": cluster.kubernetes.package_repo,
            "pikube_cni": cluster.cni,
            "pikube_kubeadm_config": cluster.kubernetes.kubeadm_config,
            **kubeadm_group_vars(cluster),
        }


# Snap channels are TRACK/RISK[/BRANCH] (snapcraft.io/docs/channels). MicroK8s publishes a
# track per minor ("1.31"), "latest", and per minor a strictly confined "1.31-strict" and an
# EKS-D "1.31-eksd" track. pikube installs the snap with --classic and drives it as classic
# MicroK8s (the microk8s group, /var/snap/microk8s/current paths), so strict tracks are
# refused with the fix; branches are short-lived hotfix builds and not accepted.
MICROK8S_RISKS = ("stable", "candidate", "beta", "edge")


@dataclass(frozen=True)
class MicroK8s(Distribution):
    """Canonical's snap, installed from a channel ("1.31/stable")."""

    def parse(self, text: str) -> Release:
        text = str(text)
        match = self.pattern.fullmatch(text)
        if not match:
            strict = re.fullmatch(r"1\.(\d+)-strict(/[a-z]+)?", text)
            if strict:
                fixed = f"1.{strict.group(1)}{strict.group(2) or '/stable'}"
                raise VersionError(
                    f"{text!r} is a strictly confined MicroK8s channel; pikube installs "
                    "MicroK8s with classic confinement (`snap install --classic`), which "
                    "strict tracks do not support",
                    f"use the classic track of the same version, e.g. channel: {fixed}",
                )
            raise VersionError(
                f"{text!r} is not a MicroK8s snap channel",
                f"write TRACK/RISK, e.g. channel: {self.example} (see `snap info microk8s`)",
            )
        if match.group("minor") is None:
            return Release(text, None)
        minor = int(match.group("minor"))
        if minor < MIN_MINOR:
            raise _too_old(minor, text, "channel", self.example)
        return Release(text, minor)

    def parse_upgrade(self, target: str) -> Release:
        """``--to 1.32`` means the channel 1.32/stable; ``--to 1.32/candidate`` as written."""
        if self.upgrade_pattern.fullmatch(target):
            return self.parse(target)
        if re.fullmatch(r"1\.\d+(-eksd)?", target):
            return self.parse(f"{target}/stable")
        if target.startswith("1.") and "-strict" in target:
            return self.parse(target)  # the strict refusal with its fix
        raise VersionError(
            f"{target!r} is not a MicroK8s version or channel, e.g. 1.31 or 1.31/stable",
            "pass the next minor's track, e.g. --to 1.32 (or 1.32/stable); pikube upgrades "
            "between version tracks, not to latest",
        )

    def pod_network(self, cni: str | None) -> PodNetwork:
        return MICROK8S_CALICO

    def addon_workloads(self) -> dict[str, tuple[tuple[str, str], ...]]:
        return microk8s_workloads()

    def flavour_vars(self, cluster: Cluster) -> dict[str, Any]:
        return {
            self.version_var: cluster.release.text,
            **microk8s_group_vars(cluster),
            # Each node names itself and the control node in /etc/hosts: adding a worker
            # leaves the others untouched.
            "pikube_node_prep_etc_hosts_nodes": [
                "{{ inventory_hostname }}",
                "{{ pikube_control_plane_host }}",
            ],
        }


# kubeadm's preflight minimums for a control-plane node (kubeadm docs, "Before you begin").
KUBEADM_CONTROL_PLANE_MIN_MEMORY_MB = 1700
KUBEADM_CONTROL_PLANE_MIN_CPUS = 2
# MicroK8s's install hook turns on its low memory guard when MemTotal <= 524288 kB (512 MiB)
# (canonical/microk8s snap/hooks/install). MemTotal is below the board's RAM, so every
# 512 MB board gets it: no control plane, and `microk8s status` fails until a worker join.
MICROK8S_LOW_MEMORY_GUARD_MB = 512

# No `{n}` quantifiers: a pattern rendered into group_vars stays free of '{', so it needs no
# !unsafe tag (pikube's inventory holds '{' only in its own expressions).
_MINOR = r"1\.(?P<minor>\d\d)"
KUBEADM = Kubeadm(
    name="kubeadm",
    title="kubeadm",
    version_key="version",
    default_version=f"1.{DEFAULT_MINOR}",
    settings=("version", "cni", "kubeadm_config", "package_repo"),
    role="pikube_kubeadm",
    ports=(6443, 10250),
    kubectl=("kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf"),
    default_pod_cidr="10.244.0.0/16",
    default_service_cidr="10.96.0.0/12",
    version_var="pikube_kubernetes_version",
    pattern=re.compile(r"1\.(\d\d)(\.\d\d?\d?)?"),
    upgrade_pattern=re.compile(r"1\.(\d\d)(\.\d\d?\d?)?"),
    example=f'"1.{DEFAULT_MINOR}"',
    control_plane_minimum=(KUBEADM_CONTROL_PLANE_MIN_MEMORY_MB, KUBEADM_CONTROL_PLANE_MIN_CPUS),
    datastore="etcd",
)
MICROK8S = MicroK8s(
    name="microk8s",
    title="MicroK8s",
    version_key="channel",
    default_version=f"1.{DEFAULT_MINOR}/stable",
    settings=("channel",),
    role="pikube_microk8s",
    ports=(16443, 25000, 10250),
    kubectl=("/snap/bin/microk8s", "kubectl"),
    default_pod_cidr="10.1.0.0/16",
    default_service_cidr="10.152.183.0/24",
    version_var="pikube_microk8s_channel",
    pattern=re.compile(rf"(latest|{_MINOR}(-eksd)?)/(" + "|".join(MICROK8S_RISKS) + ")"),
    upgrade_pattern=re.compile(rf"{_MINOR}(-eksd)?/(" + "|".join(MICROK8S_RISKS) + ")"),
    example=f"1.{DEFAULT_MINOR}/stable",
    low_memory_guard_mb=MICROK8S_LOW_MEMORY_GUARD_MB,
    datastore="dqlite",
)

DISTRIBUTIONS: dict[str, Distribution] = {d.name: d for d in (KUBEADM, MICROK8S)}
if set(DISTRIBUTIONS) != set(get_args(DistributionName)):  # pragma: no cover - import guard
    raise RuntimeError("DistributionName and DISTRIBUTIONS disagree")
if set(POD_NETWORKS) != set(get_args(PodNetworkName)):  # pragma: no cover - import guard
    raise RuntimeError("PodNetworkName and POD_NETWORKS disagree")


def distribution(name: str) -> Distribution:
    """The Distribution called ``name`` (one of ``DISTRIBUTIONS``)."""
    return DISTRIBUTIONS[name]


def owner_of_setting(key: str) -> Distribution | None:
    """The flavour a ``kubernetes.<key>`` setting belongs to, or None if all share it."""
    return next((d for d in DISTRIBUTIONS.values() if key in d.settings), None)


def by_version_key(key: str) -> Distribution:
    return next(d for d in DISTRIBUTIONS.values() if d.version_key == key)
