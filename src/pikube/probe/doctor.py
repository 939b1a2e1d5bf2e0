"""Doctor: what users hit most on Pis, found before install, each with its fix.

Checks are pure functions over ``NodeFacts`` so they can be tested on recorded facts. A
finding is ``blocking`` when ``pikube up`` cannot fix it by itself (the preflight stops on
those); the others are reported and fixed by node preparation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

from pikube.config.model import Cluster
from pikube.distribution import memory_cgroup_flags
from pikube.probe.facts import NodeFacts
from pikube.probe.ha import ControlPlaneView

# Findings about the control plane as a whole (VIP, datastore quorum) carry this as node.
CONTROL_PLANE = "control-plane"
MAX_CLOCK_OFFSET_S = 5.0
MIN_FREE_DISK_MB = 2048
ARCH_NAMES = {"aarch64": "arm64", "arm64": "arm64", "x86_64": "amd64", "armv7l": "armhf"}


def pod_network_modules(cluster: Cluster) -> dict[str, str]:
    """Kernel module -> what needs it: the tunnel the cluster's pod network encapsulates in.

    The cluster's ``PodNetwork`` says; node preparation checks the same list
    (``pikube_node_prep_required_modules``, rendered from it into group_vars).
    """
    return dict(cluster.flavour.pod_network(cluster.kubernetes.cni).tunnel_modules)


@dataclass(frozen=True)
class Finding:
    node: str
    check: str
    message: str
    fix: str
    blocking: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "node": self.node,
            "check": self.check,
            "message": self.message,
            "fix": self.fix,
            "blocking": self.blocking,
        }


def is_raspberry_pi(facts: NodeFacts) -> bool:
    return facts.get("device_model").startswith("Raspberry Pi")


def diagnose(cluster: Cluster, nodes: list[NodeFacts], image_arch: str | None) -> list[Finding]:
    """Every finding for the probed ``nodes`` of ``cluster``."""
    findings: list[Finding] = []
    reachable = [n for n in nodes if n.reachable]
    for facts in nodes:
        if not facts.reachable:
            findings.append(
                Finding(
                    facts.name,
                    "reachable",
                    f"cannot probe: {facts.error}",
                    facts.fix or "check power, cabling and address",
                    True,
                )
            )
    for facts in reachable:
        role = cluster.node(facts.name).role
        findings += list(_node_checks(cluster, facts, role, image_arch))
    findings += list(
        _duplicates(
            reachable,
            "hostname",
            "hostname",
            "set a unique hostname; `pikube up` sets it from cluster.yaml",
            blocking=False,
        )
    )
    findings += list(
        _duplicates(
            reachable,
            "machine_id",
            "machine-id",
            "cloned card: run `sudo rm /etc/machine-id && sudo systemd-machine-id-setup` "
            "and reboot",
            blocking=True,
        )
    )
    return findings


def _node_checks(
    cluster: Cluster, facts: NodeFacts, role: str, image_arch: str | None
) -> Iterator[Finding]:
    name = facts.name
    if facts.get("memory_cgroup") == "0":
        yield Finding(
            name,
            "memory-cgroup",
            "the memory cgroup is not enabled (/proc/cgroups)",
            f"`pikube up` adds {' '.join(memory_cgroup_flags())} to cmdline.txt and reboots once",
            False,
        )
    cmdline = facts.get("cmdline_txt")
    if (
        is_raspberry_pi(facts)
        and facts.get("cmdline_file")
        and not all(flag in cmdline.split() for flag in memory_cgroup_flags())
    ):
        yield Finding(
            name,
            "memory-cgroup",
            f"{facts.get('cmdline_file')} lacks {' '.join(memory_cgroup_flags())}: the memory "
            "cgroup will be off after the next boot",
            "`pikube up` adds the flags once and reboots the node",
            False,
        )
    if facts.integer("swap_active"):
        yield Finding(
            name,
            "swap",
            "swap is on (kubelet refuses to run with swap)",
            "`pikube up` turns swap off now and for good",
            False,
        )
    comes_back = [s for s in facts.get("swap_services").split() if s]
    if facts.integer("swap_fstab"):
        comes_back.append("/etc/fstab")
    if comes_back:
        yield Finding(
            name,
            "swap",
            f"swap comes back at boot ({', '.join(comes_back)})",
            "`pikube up` disables these",
            False,
        )
    for module, user in pod_network_modules(cluster).items():
        if facts.get(module) != "0":
            continue
        raspi = "raspi" in facts.get("kernel")
        fix = (
            "install linux-modules-extra-raspi (`pikube up` does on Ubuntu's Pi kernel)"
            if raspi
            else f"install your kernel's extra modules package, or use a kernel with {module}"
        )
        yield Finding(
            name,
            module,
            f"the {module} kernel module is missing ({user} needs it)",
            fix,
            not raspi,
        )
    # Only an offset beyond the measurement's own uncertainty counts (a slow node's shell
    # start is not clock skew).
    if (
        facts.clock_offset is not None
        and abs(facts.clock_offset) - facts.clock_uncertainty > MAX_CLOCK_OFFSET_S
    ):
        yield Finding(
            name,
            "clock",
            f"clock is {facts.clock_offset:+.0f} s off this machine's: certificates "
            "and join tokens will fail",
            "enable time sync (`sudo timedatectl set-ntp true`) or set the clock",
            True,
        )
    elif facts.get("ntp_synced") == "no":
        yield Finding(
            name,
            "clock",
            "clock is not synchronised by NTP",
            "`pikube up` enables systemd-timesyncd; a Pi has no real-time clock",
            False,
        )
    free_mb = facts.integer("disk_free_kb") // 1024
    if facts.get("disk_free_kb") and free_mb < MIN_FREE_DISK_MB:
        yield Finding(
            name,
            "disk",
            f"only {free_mb} MiB free on /",
            f"free space or use a larger card (at least {MIN_FREE_DISK_MB} MiB free)",
            True,
        )
    arch = ARCH_NAMES.get(facts.get("arch"), facts.get("arch"))
    if image_arch and arch and arch != image_arch:
        yield Finding(
            name,
            "arch",
            f"node is {arch} but image {cluster.image} is {image_arch}",
            "choose an image of the node's architecture (`pikube image list`)",
            True,
        )
    minimum = cluster.flavour.control_plane_minimum
    if role == "control-plane" and minimum is not None:
        min_memory_mb, min_cpus = minimum
        if facts.memory_mb and facts.memory_mb < min_memory_mb:
            yield Finding(
                name,
                "resources",
                f"{facts.memory_mb} MiB of memory, below {cluster.flavour.title}'s "
                f"control-plane minimum of {min_memory_mb} MiB",
                "use a Pi with 2 GB or more as control plane",
                True,
            )
        if facts.integer("cpus") and facts.integer("cpus") < min_cpus:
            yield Finding(
                name,
                "resources",
                f"{facts.integer('cpus')} CPU, below {cluster.flavour.title}'s minimum of "
                f"{min_cpus}",
                "use a Pi with 2 or more cores as control plane",
                True,
            )
    yield from _ports(cluster, facts)


def control_plane_findings(view: ControlPlaneView | None) -> list[Finding]:
    """The VIP and the datastore's quorum as findings: a lost quorum blocks, a degraded
    one (a majority but not all healthy) and a VIP on several nodes are notes."""
    if view is None:
        return []
    findings = []
    problem = view.vip_problem()
    if problem is not None:
        level, message, fix = problem
        findings.append(Finding(CONTROL_PLANE, "vip", message, fix, level == "error"))
    quorum = view.quorum
    if quorum.level != "ok":
        findings.append(
            Finding(CONTROL_PLANE, "quorum", quorum.message, quorum.fix, quorum.level == "error")
        )
    return findings


def is_kubernetes_member(facts: NodeFacts) -> bool:
    """The node already runs Kubernetes (so its ports are Kubernetes' own)."""
    return (
        facts.get("kubeadm_initialised") == "1"
        or facts.get("kubelet_joined") == "1"
        or bool(facts.get("microk8s"))
    )


def _ports(cluster: Cluster, facts: NodeFacts) -> Iterator[Finding]:
    if is_kubernetes_member(facts):
        return
    listeners = facts.listeners
    for port in cluster.flavour.ports:
        process = listeners.get(port)
        if process is None:
            continue
        yield Finding(
            facts.name,
            "ports",
            f"port {port} is taken by {process or 'a process'}",
            f"stop the service listening on {port}; Kubernetes needs it",
            True,
        )


def _duplicates(
    nodes: list[NodeFacts], key: str, label: str, fix: str, *, blocking: bool
) -> Iterator[Finding]:
    owners: dict[str, list[str]] = defaultdict(list)
    for facts in nodes:
        value = facts.get(key)
        if value:
            owners[value].append(facts.name)
    for value, names in sorted(owners.items()):
        if len(names) > 1:
            for name in names:
                others = ", ".join(n for n in names if n != name)
                yield Finding(
                    name, label, f"{label} {value} is shared with {others}", fix, blocking
                )
