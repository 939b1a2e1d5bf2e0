"""Rules that relate several fields of ``cluster.yaml``.

They read the raw parsed data defensively (a value that does not parse is skipped here,
because the field-level validation already reports it), so that one ``pikube validate``
lists every problem in the file at once.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from pikube.addons import ADDONS, lb_range_bounds
from pikube.config.model import CONTROL_PLANE_COUNTS, DEFAULT_STATE_DIR
from pikube.config.pimodels import PI_MODELS
from pikube.distribution import DISTRIBUTIONS, KUBEADM, owner_of_setting

# (path, message, fix)
Finding = tuple[tuple[str | int, ...], str, str]


def _ip(value: Any) -> IPv4Address | None:
    try:
        return IPv4Address(str(value))
    except ValueError:
        return None


def _net(value: Any) -> IPv4Network | None:
    try:
        return IPv4Network(str(value))
    except ValueError:
        return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def check_cluster(data: dict[str, Any], base_dir: Path) -> Iterator[Finding]:
    """Yield every cross-field problem in the raw cluster data."""
    distribution = data.get("distribution")
    network = _dict(data.get("network"))
    kubernetes = _dict(data.get("kubernetes"))
    nodes = [n if isinstance(n, dict) else {} for n in (data.get("nodes") or [])]
    if not isinstance(data.get("nodes"), list):
        nodes = []

    yield from _check_distribution_keys(distribution, kubernetes)
    subnet = _net(network.get("subnet"))
    gateway = _ip(network.get("gateway"))
    if subnet and gateway and gateway not in subnet:
        yield (
            ("network", "gateway"),
            f"gateway {gateway} is outside the subnet {subnet}",
            "the gateway must be an address inside network.subnet (your router)",
        )
    yield from _check_nodes(nodes, subnet, gateway)
    yield from _check_vip(network, nodes, subnet, gateway)
    yield from _check_addons(distribution, kubernetes, network)
    yield from _check_lb_range(network, nodes, subnet, gateway)
    yield from _check_cidrs(distribution, kubernetes, subnet)
    yield from _check_roles(distribution, nodes)
    yield from _check_control_plane_count(network, nodes)
    yield from _check_low_memory_guard(distribution, nodes)
    yield from _check_keys(_dict(data.get("ssh")), base_dir)
    state_dir = data.get("state_dir", DEFAULT_STATE_DIR)
    if isinstance(state_dir, str) and state_dir:
        yield from _check_state_dir(resolve_path(state_dir, base_dir))


# Jinja2's openers. Ansible evaluates any string holding one when it uses the value, so a
# value such as "{{ lookup('pipe', 'CMD') }}" would run CMD on the admin machine.
TEMPLATE_MARKERS = ("{{", "{%", "{#")


def string_problem(value: str) -> tuple[str, str] | None:
    """(message, fix) when a string from the cluster file is unsafe anywhere, else None.

    The one rule every string of the file (each key and value, at any depth) obeys,
    whatever field it is: pikube never evaluates a value as a template, and no value carries
    a control character (a newline ends a line in every file a value lands in).
    """
    shown = value if len(value) <= 60 else value[:57] + "..."
    for marker in TEMPLATE_MARKERS:
        if marker in value:
            return (
                f"{shown!r} contains template syntax {marker!r}",
                "write the value itself: pikube never evaluates templates from the cluster "
                "file, and refuses {{ }}, {% %} and {# #} in every value",
            )
    for char in value:
        if unicodedata.category(char) == "Cc":
            return (
                f"{shown!r} contains the control character {char!r}",
                "remove it (a line break or tab inside quotes, or the final newline of a "
                "`|` block)",
            )
    return None


def check_strings(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[Finding]:
    """Apply ``string_problem`` to every key and string value of the raw data."""
    if isinstance(value, str):
        problem = string_problem(value)
        if problem:
            yield (path, *problem)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and (problem := string_problem(key)):
                yield ((*path, key), f"key {problem[0]}", problem[1])
            yield from check_strings(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from check_strings(item, (*path, index))


def _check_distribution_keys(distribution: Any, kubernetes: dict[str, Any]) -> Iterator[Finding]:
    if distribution not in DISTRIBUTIONS:
        return
    for key in kubernetes:
        owner = owner_of_setting(str(key))
        if owner is not None and owner.name != distribution:
            yield (
                ("kubernetes", key),
                f"kubernetes.{key} applies to {owner.name} only, but distribution is "
                f"{distribution}",
                f"remove kubernetes.{key}, or set distribution: {owner.name}",
            )


def _check_nodes(
    nodes: list[dict[str, Any]], subnet: IPv4Network | None, gateway: IPv4Address | None
) -> Iterator[Finding]:
    names: dict[str, int] = {}
    ips: dict[IPv4Address, int] = {}
    for index, node in enumerate(nodes):
        name = node.get("name")
        if isinstance(name, str):
            if name in names:
                yield (
                    ("nodes", index, "name"),
                    f"node name {name!r} is used twice (also nodes[{names[name]}])",
                    "give every node its own hostname",
                )
            names.setdefault(name, index)
        ip = _ip(node.get("ip")) if "ip" in node else None
        if ip is None:
            continue
        if ip in ips:
            yield (
                ("nodes", index, "ip"),
                f"address {ip} is used twice (also nodes[{ips[ip]}])",
                "give every node its own static address",
            )
        ips.setdefault(ip, index)
        if subnet is not None:
            if ip not in subnet:
                yield (
                    ("nodes", index, "ip"),
                    f"address {ip} is outside the subnet {subnet}",
                    "use an address inside network.subnet, or correct the subnet",
                )
            elif subnet.prefixlen < 31 and ip in (subnet.network_address, subnet.broadcast_address):
                which = "network" if ip == subnet.network_address else "broadcast"
                yield (
                    ("nodes", index, "ip"),
                    f"address {ip} is the {which} address of {subnet}",
                    "use a host address inside the subnet",
                )
        if gateway is not None and ip == gateway:
            yield (
                ("nodes", index, "ip"),
                f"address {ip} is the gateway's address",
                "use a free address; network.gateway belongs to your router",
            )


def _check_cidrs(
    distribution: Any, kubernetes: dict[str, Any], subnet: IPv4Network | None
) -> Iterator[Finding]:
    flavour = DISTRIBUTIONS.get(str(distribution), KUBEADM)
    pod = _net(kubernetes.get("pod_cidr", flavour.default_pod_cidr))
    service = _net(kubernetes.get("service_cidr", flavour.default_service_cidr))
    if pod and service and pod.overlaps(service):
        yield (
            ("kubernetes", "service_cidr"),
            f"service CIDR {service} overlaps the pod CIDR {pod}",
            "choose ranges that do not overlap, e.g. pod_cidr 10.244.0.0/16 and "
            "service_cidr 10.96.0.0/12",
        )
    for field, net in (("pod_cidr", pod), ("service_cidr", service)):
        if net and subnet and net.overlaps(subnet):
            where = field if field in kubernetes else None
            yield (
                ("kubernetes", field) if where else ("network", "subnet"),
                f"{field.replace('_', ' ')} {net} overlaps the node subnet {subnet}",
                f"set kubernetes.{field} to a private range your LAN does not use",
            )


def _control_planes(nodes: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    return [(i, n) for i, n in enumerate(nodes) if n.get("role") == "control-plane"]


def _check_roles(distribution: Any, nodes: list[dict[str, Any]]) -> Iterator[Finding]:
    """A control plane exists, and every control plane is a Pi big enough to be one."""
    control = _control_planes(nodes)
    if nodes and not control:
        yield (
            ("nodes",),
            "no node has role: control-plane",
            "mark exactly one node (your Pi with the most memory) as role: control-plane",
        )
    flavour = DISTRIBUTIONS.get(str(distribution))
    if flavour is None or flavour.control_plane_minimum is None:
        return
    min_memory_mb, min_cpus = flavour.control_plane_minimum
    for index, node in control:
        model = PI_MODELS.get(str(node.get("model")))
        if model is None:
            continue
        if model.memory_mb < min_memory_mb:
            yield (
                ("nodes", index, "model"),
                f"{model.description} has {model.memory_mb} MiB of memory, below "
                f"{flavour.title}'s control-plane minimum of {min_memory_mb} MiB",
                "use a Pi with 2 GB or more as control plane, and this one as a worker",
            )
        if model.cpus < min_cpus:
            yield (
                ("nodes", index, "model"),
                f"{model.description} has {model.cpus} CPU, below {flavour.title}'s minimum "
                f"of {min_cpus}",
                "use a Pi with 2 or more cores",
            )


def _check_control_plane_count(
    network: dict[str, Any], nodes: list[dict[str, Any]]
) -> Iterator[Finding]:
    """1, 3 or 5 control planes; more than one share network.vip as their one address."""
    count = len(_control_planes(nodes))
    if count > 1 and count not in CONTROL_PLANE_COUNTS:
        why = (
            f"{count} control-plane nodes: an even count survives no more failures than "
            f"{count - 1} (etcd and dqlite need a majority of members up)"
            if count % 2 == 0 and count < max(CONTROL_PLANE_COUNTS)
            else f"{count} control-plane nodes: pikube builds at most "
            f"{max(CONTROL_PLANE_COUNTS)} (more members slow every write of etcd and dqlite)"
        )
        fix = (
            "mark "
            + ", ".join(map(str, CONTROL_PLANE_COUNTS[:-1]))
            + f" or {CONTROL_PLANE_COUNTS[-1]} nodes as role: control-plane, the others as "
            "role: worker"
        )
        if count - 1 in CONTROL_PLANE_COUNTS[1:] and count + 1 in CONTROL_PLANE_COUNTS:
            # Growing an HA control plane passes an even count of members, never of file
            # entries: the file names the final set, add-node joins one member at a time.
            fix += (
                f"; to grow from {count - 1} to {count + 1} control planes, list both new "
                "ones here, then run `pikube add-node NAME` for each, one after the other"
            )
        yield (("nodes",), why, fix)
    if count > 1 and network.get("vip") is None:
        yield (
            ("network",),
            f"{count} control-plane nodes need network.vip, the one address the kubeconfig, "
            "the joins and every kubelet use",
            "add `vip:` to network: a free address of the subnet that no machine and no DHCP "
            "lease uses, e.g. the one above your nodes' addresses",
        )


def _check_vip(
    network: dict[str, Any],
    nodes: list[dict[str, Any]],
    subnet: IPv4Network | None,
    gateway: IPv4Address | None,
) -> Iterator[Finding]:
    """network.vip is a free host address of the subnet: no node's, the gateway's or a DNS
    server's (keepalived would take it over from that machine)."""
    vip = _ip(network.get("vip")) if network.get("vip") is not None else None
    if vip is None:
        return
    where = ("network", "vip")
    fix = "use a free address of the subnet that no machine and no DHCP lease uses"
    if subnet is not None:
        if vip not in subnet:
            yield (where, f"vip {vip} is outside the subnet {subnet}", fix)
            return
        if subnet.prefixlen < 31 and vip in (subnet.network_address, subnet.broadcast_address):
            which = "network" if vip == subnet.network_address else "broadcast"
            yield (where, f"vip {vip} is the {which} address of {subnet}", fix)
            return
    for held, what in _taken_addresses(network, nodes, gateway):
        if held == vip:
            yield (where, f"vip {vip} is {what}", fix)
            return


def _check_addons(
    distribution: Any, kubernetes: dict[str, Any], network: dict[str, Any]
) -> Iterator[Finding]:
    """kubeadm takes the addon words only; load-balancer needs network.lb_range."""
    addons = kubernetes.get("addons")
    if not isinstance(addons, list):
        return
    words = ", ".join(ADDONS)
    for index, name in enumerate(addons):
        if not isinstance(name, str):
            continue
        if distribution == KUBEADM.name and name not in ADDONS:
            yield (
                ("kubernetes", "addons", index),
                f"kubeadm clusters have no addon {name!r} (names such as dns or "
                "metallb:RANGE are MicroK8s' own)",
                f"use one of {words}",
            )
        addon = ADDONS.get(name)
        if addon is not None and addon.needs_lb_range and network.get("lb_range") is None:
            yield (
                ("kubernetes", "addons", index),
                f"the {name} addon needs network.lb_range, the addresses it gives to "
                "LoadBalancer Services",
                "add `lb_range: FIRST-LAST` to network: free addresses of the subnet that no "
                "machine and no DHCP lease uses, e.g. 192.168.1.240-192.168.1.250",
            )


def _check_lb_range(
    network: dict[str, Any],
    nodes: list[dict[str, Any]],
    subnet: IPv4Network | None,
    gateway: IPv4Address | None,
) -> Iterator[Finding]:
    """network.lb_range lies inside the subnet, clear of its network and broadcast addresses,
    the gateway, the DNS servers, the VIP and every node (MetalLB would answer ARP for them)."""
    value = network.get("lb_range")
    if value is None:
        return
    try:
        first, last = lb_range_bounds(str(value))
    except ValueError:
        return  # the field validation reports it
    where = ("network", "lb_range")
    fix = (
        "choose free addresses of the subnet that no machine, VIP and DHCP lease uses, "
        "e.g. the top of the subnet outside the DHCP pool"
    )
    if subnet is not None:
        if first not in subnet or last not in subnet:
            yield (where, f"lb_range {first}-{last} is not inside the subnet {subnet}", fix)
            return
        for which, address in (
            ("network", subnet.network_address),
            ("broadcast", subnet.broadcast_address),
        ):
            if subnet.prefixlen < 31 and first <= address <= last:
                yield (where, f"lb_range holds {address}, the {which} address of {subnet}", fix)
    vip = _ip(network.get("vip")) if network.get("vip") is not None else None
    taken = [*_taken_addresses(network, nodes, gateway), (vip, "network.vip")]
    for held, what in taken:
        if held is not None and first <= held <= last:
            yield (where, f"lb_range holds {held}, {what}", fix)


def _taken_addresses(
    network: dict[str, Any], nodes: list[dict[str, Any]], gateway: IPv4Address | None
) -> list[tuple[IPv4Address | None, str]]:
    """The addresses other machines answer on, with what each is: a VIP or a load-balancer
    address must be none of them (keepalived or MetalLB would take it over)."""
    dns = network.get("dns")
    return [
        (gateway, "the gateway's address"),
        *(
            (_ip(s), "the address of a DNS server (network.dns)")
            for s in (dns if isinstance(dns, list) else [])
        ),
        *(
            (_ip(n.get("ip")), f"the address of node {n.get('name')!r} (nodes[{i}])")
            for i, n in enumerate(nodes)
        ),
    ]


def _check_low_memory_guard(distribution: Any, nodes: list[dict[str, Any]]) -> Iterator[Finding]:
    """MicroK8s's low memory guard stops every 512 MB board before pikube can join it."""
    flavour = DISTRIBUTIONS.get(str(distribution))
    guard = flavour.low_memory_guard_mb if flavour else None
    if guard is None:
        return
    for index, node in enumerate(nodes):
        model = PI_MODELS.get(str(node.get("model")))
        if model is not None and model.memory_mb <= guard:
            yield (
                ("nodes", index, "model"),
                f"{model.description} has {model.memory_mb} MiB of memory: MicroK8s turns on "
                f"its low memory guard on boards with {guard} MiB or "
                "less, and then `microk8s status` fails, which pikube waits on before the join",
                "use a Pi with 1 GB or more for MicroK8s, or distribution: kubeadm "
                "(where this board can be a worker)",
            )


# Folders of the operating system: pikube writes host keys, run directories and a kubeconfig
# into its state dir, never into one of these or below one of them.
SYSTEM_DIRS = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
)
# Shared top-level folders: fine as the parent of a state dir, never as the state dir itself
# (S108: /tmp is a name to refuse here, not a folder pikube writes to).
SHARED_DIRS = ("/", "/home", "/media", "/mnt", "/opt", "/root", "/srv", "/var", "/tmp")  # noqa: S108


def allowed_owners() -> set[int]:
    """Who may own an existing state dir: the user running pikube, and under sudo, the
    user who ran sudo (their folders stay usable by pikube both with and without sudo)."""
    owners = {os.geteuid()}
    sudo_uid = os.environ.get("SUDO_UID", "")
    if os.geteuid() == 0 and sudo_uid.isdigit():
        owners.add(int(sudo_uid))
    return owners


def _check_state_dir(path: Path) -> Iterator[Finding]:
    where = ("state_dir",)
    real = Path(os.path.realpath(path))
    system = next((d for d in SYSTEM_DIRS if real == Path(d) or Path(d) in real.parents), None)
    if system or str(real) in SHARED_DIRS:
        what = "a system folder"
        if system and real != Path(system):
            what = f"inside the system folder {system}"
        yield (
            where,
            f"state_dir {path} is {what}",
            "use a folder of your own, e.g. the default .pikube next to the cluster file",
        )
        return
    existing = next((p for p in (real, *real.parents) if p.exists()), None)
    if existing is None:
        return
    if not existing.is_dir():
        yield (
            where,
            f"state_dir {path} is a file, not a folder"
            if existing == real
            else f"state_dir {path} cannot be created: {existing} is a file",
            "point state_dir to a folder (pikube creates it if missing)",
        )
        return
    if existing == real:
        owner = real.stat().st_uid
        if owner not in allowed_owners():
            yield (
                where,
                f"state_dir {path} belongs to another user (uid {owner})",
                "use a folder you own, e.g. the default .pikube next to the cluster file",
            )


def resolve_path(value: str | os.PathLike[str], base_dir: Path) -> Path:
    """Expand ``~`` and make a path relative to the cluster file's folder absolute."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def _check_keys(ssh: dict[str, Any], base_dir: Path) -> Iterator[Finding]:
    for field in ("public_key", "private_key"):
        value = ssh.get(field)
        if not isinstance(value, str) or not value:
            continue
        path = resolve_path(value, base_dir)
        if not path.is_file():
            yield (
                ("ssh", field),
                f"{field.replace('_', ' ')} file {path} does not exist",
                "create a key pair with `ssh-keygen -t ed25519` or point to an existing one",
            )
            continue
        if field == "public_key" and not path.read_text(errors="replace").startswith(
            ("ssh-", "ecdsa-", "sk-")
        ):
            yield (
                ("ssh", field),
                f"{path} is not an OpenSSH public key",
                "point ssh.public_key to the .pub file of your key pair",
            )
        if field == "private_key":
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                yield (
                    ("ssh", field),
                    f"private key {path} is readable by others (mode {mode:04o}); "
                    "ssh refuses to use it",
                    f"run: chmod 600 {path}",
                )
