"""A highly available control plane seen from its nodes: the VIP holder, datastore members, quorum.

Read from the control planes over the same SSH as the other probes. Nothing here trusts
the cluster file about who is a member: the VIP holder is the node that has the address on
an interface (``ip -o addr``), the members are the ones the datastore lists (etcd: ``etcdctl
member list``; MicroK8s' dqlite: ``microk8s status --format yaml``), and a member is healthy
when the datastore says so (etcd: ``endpoint health``, a committed proposal; dqlite: the node's
MicroK8s answers ready). Parsers and the quorum rule are pure functions over the tools' output
(recorded samples in ``tests/fixtures/ha/``).

The quorum rule, the one place pikube has it: a datastore of N voting members commits while a
majority, ``N // 2 + 1``, is healthy (Raft, which etcd and dqlite both run). All healthy is
ok; fewer but a majority is a warning (one more failure and the API stops); below a majority
the cluster has lost quorum and the API cannot write (an error).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_address
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from pikube.distribution import etcd_pki

Level = Literal["ok", "warning", "error"]

# kubeadm's stacked etcd: its client port on every control plane (the certificates kubeadm
# writes for health checks are under etcd_pki(); its static Pod probes with the same).
ETCD_LOCAL = "https://127.0.0.1:2379"
ETCD_TIMEOUTS = ("--dial-timeout=3s", "--command-timeout=5s")
# `microk8s status` asks dqlite for the members and retries for up to a minute when it cannot
# reach a majority; the probe stops waiting sooner (the node then counts as not answering).
MICROK8S_STATUS_TIMEOUT_S = 30


@dataclass(frozen=True)
class Member:
    """One datastore member, as the datastore reports it."""

    name: str  # etcd: the member name (kubeadm: the node name); dqlite: the address
    address: str  # the IP its peers reach it on
    healthy: bool | None  # None: nobody could tell
    detail: str = ""
    member_id: str = ""  # etcd: hex ID, as `etcdctl member remove` takes it
    role: str = "voter"  # dqlite: voter, standby or spare; etcd: voter or learner
    node: str | None = None  # the cluster file's node at that address, if any

    @property
    def voter(self) -> bool:
        return self.role == "voter"


@dataclass(frozen=True)
class Quorum:
    level: Level
    healthy: int
    total: int
    needed: int
    message: str
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "healthy": self.healthy,
            "total": self.total,
            "needed": self.needed,
            "message": self.message,
            "fix": self.fix or None,
        }


def majority(voters: int) -> int:
    """How many voting members must be healthy for the datastore to commit."""
    return voters // 2 + 1


def quorum(members: Sequence[Member], datastore: str = "etcd") -> Quorum:
    """ok / warning / error for ``members`` (only voters count, as in Raft)."""
    voters = [m for m in members if m.voter]
    total = len(voters)
    healthy = sum(1 for m in voters if m.healthy)
    needed = majority(total)
    unhealthy = ", ".join(m.node or m.name for m in voters if not m.healthy) or "none"
    if total == 0:
        return Quorum(
            "error",
            0,
            0,
            1,
            f"no {datastore} member answered",
            "start the control planes (`pikube status` shows which are down); if they run, "
            f"look at {datastore} on them",
        )
    if healthy == total:
        return Quorum(
            "ok", healthy, total, needed, f"{healthy}/{total} {datastore} members healthy"
        )
    if healthy >= needed:
        return Quorum(
            "warning",
            healthy,
            total,
            needed,
            f"{healthy}/{total} {datastore} members healthy (unhealthy: {unhealthy}); one more "
            f"failure loses quorum",
            "bring the members that are down back (power, network, `pikube doctor`), or "
            "replace a dead one: `pikube remove-node NODE`, then `pikube add-node NODE`",
        )
    return Quorum(
        "error",
        healthy,
        total,
        needed,
        f"{datastore} has lost quorum: {healthy}/{total} members healthy, {needed} needed "
        f"(unhealthy: {unhealthy}); the API cannot store anything",
        f"bring back enough control planes that {needed} of {total} run (power, network); "
        "if they are gone for good, restore the cluster from a backup",
    )


def removal_refusal(members: Sequence[Member], node: str, datastore: str = "etcd") -> str | None:
    """Why removing ``node``'s member would break the datastore, or None when it is safe.

    Removing a member is itself a write the datastore must commit, so it needs quorum now;
    afterwards the remaining voters need a majority of themselves healthy. So a 3-member
    cluster, all healthy, may drop to 2 (both healthy); with one member down, only that
    member may go (2 healthy of the 2 left), never a healthy one (1 healthy of 2 left).
    """
    voters = [m for m in members if m.voter]
    target = [m for m in voters if node in (m.node, m.name)]
    healthy = sum(1 for m in voters if m.healthy)
    if healthy < majority(len(voters)):
        return (
            f"{datastore} has lost quorum ({healthy}/{len(voters)} members healthy): "
            "no member can be removed until a majority runs again"
        )
    if not target:
        return None
    left = len(voters) - 1
    if left == 0:
        return f"{node} is the last {datastore} member: the cluster would be gone"
    healthy_left = healthy - (1 if target[0].healthy else 0)
    if healthy_left < majority(left):
        down = ", ".join(m.node or m.name for m in voters if not m.healthy)
        return (
            f"removing {node} leaves {healthy_left} healthy of {left} {datastore} members "
            f"({majority(left)} needed; down: {down}): the cluster would lose quorum"
        )
    return None


# --- the VIP ------------------------------------------------------------------------------


def interfaces_with(ip_o_addr: str, address: str) -> list[str]:
    """The interfaces ``ip -o addr show`` lists with ``address`` (any prefix length)."""
    wanted = ip_address(address)
    found = []
    for line in ip_o_addr.splitlines():
        fields = line.split()
        # "3: eth0    inet 10.77.74.100/32 scope global eth0\ ..."
        if len(fields) < 4 or fields[2] not in ("inet", "inet6"):
            continue
        try:
            if ip_address(fields[3].split("/", 1)[0]) == wanted:
                found.append(fields[1].split("@", 1)[0])
        except ValueError:
            continue
    return found


# --- etcd ---------------------------------------------------------------------------------


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def parse_etcd_members(text: str) -> list[dict[str, Any]]:
    """``etcdctl member list -w json`` -> members (``id`` in hex, as ``member remove`` wants)."""
    data = json.loads(text)
    members = []
    for item in data.get("members") or []:
        peer = [str(u) for u in item.get("peerURLs") or []]
        client = [str(u) for u in item.get("clientURLs") or []]
        members.append(
            {
                "id": format(int(item["ID"]), "x"),
                "name": str(item.get("name") or ""),
                "peer_urls": peer,
                "client_urls": client,
                "learner": bool(item.get("isLearner", False)),
                "address": _host((client or peer or [""])[0]),
            }
        )
    return members


def parse_etcd_health(text: str) -> dict[str, tuple[bool, str]]:
    """``etcdctl endpoint health [--cluster] -w json`` -> endpoint host -> (healthy, error)."""
    result = {}
    for item in json.loads(text) or []:
        host = _host(str(item.get("endpoint", "")))
        result[host] = (bool(item.get("health")), str(item.get("error") or ""))
    return result


def etcd_script() -> str:
    """What a control plane runs (as root) to report its etcd view, in marked sections.

    etcdctl is the host's if installed, else the one in kubeadm's etcd container (``crictl
    exec``), which mounts the same certificate folder.
    """
    pki = etcd_pki()
    tls = [
        f"--cacert={pki}/ca.crt",
        f"--cert={pki}/healthcheck-client.crt",
        f"--key={pki}/healthcheck-client.key",
        *ETCD_TIMEOUTS,
    ]
    local = shlex.join([f"--endpoints={ETCD_LOCAL}", *tls])
    return f"""
echo @@member; [ -e {pki}/ca.crt ] && echo 1; echo "@@rc $?"
if command -v etcdctl >/dev/null 2>&1; then
  ctl() {{ etcdctl {local} "$@"; }}
elif id=$(crictl ps --name '^etcd$' --state running --quiet 2>/dev/null | head -n 1) \\
    && [ -n "$id" ]; then
  ctl() {{ crictl exec "$id" etcdctl {local} "$@"; }}
else
  ctl() {{ echo "neither etcdctl nor a running etcd container on this node" >&2; return 127; }}
fi
echo @@members; ctl member list -w json 2>/dev/null; echo "@@rc $?"
echo @@health; ctl endpoint health --cluster -w json 2>/dev/null; echo "@@rc $?"
echo @@local; ctl endpoint health -w json 2>&1; echo "@@rc $?"
"""


def microk8s_script() -> str:
    return f"""
echo @@member; [ -x /snap/bin/microk8s ] && echo 1; echo "@@rc $?"
echo @@status
timeout {MICROK8S_STATUS_TIMEOUT_S} /snap/bin/microk8s status --format yaml 2>&1; echo "@@rc $?"
"""


def probe_script(datastore: str) -> str:
    """The whole probe a control plane runs: its addresses, then its datastore view."""
    body = etcd_script() if datastore == "etcd" else microk8s_script()
    return 'set -u\necho @@addr; ip -o addr show; echo "@@rc $?"\n' + body


def sections(output: str) -> dict[str, tuple[str, int | None]]:
    """``@@name`` ... ``@@rc N`` sections of a probe's output -> name -> (text, exit code)."""
    found: dict[str, tuple[str, int | None]] = {}
    name: str | None = None
    lines: list[str] = []
    for line in output.splitlines():
        if line.startswith("@@rc ") and name is not None:
            rc = line[5:].strip()
            found[name] = ("\n".join(lines), int(rc) if rc.isdigit() else None)
            name, lines = None, []
        elif line.startswith("@@") and " " not in line:
            name, lines = line[2:], []
        elif name is not None:
            lines.append(line)
    return found


@dataclass
class ControlPlaneAnswer:
    """One control plane's probe: reached or not, and its sections."""

    node: str
    address: str
    reachable: bool
    error: str = ""
    parts: dict[str, tuple[str, int | None]] = field(default_factory=dict)

    def text(self, name: str) -> str:
        return self.parts.get(name, ("", None))[0]

    def rc(self, name: str) -> int | None:
        return self.parts.get(name, ("", None))[1]


def _health(state: tuple[bool, str] | None, error: str = "") -> tuple[bool, str]:
    """(healthy, detail) from an endpoint health answer, or why there is none."""
    if state is None:
        return False, error or "no answer"
    return state[0], state[1] or ("healthy" if state[0] else "not healthy")


def etcd_members(answers: Sequence[ControlPlaneAnswer], nodes: dict[str, str]) -> list[Member]:
    """Members and their health from the control planes' etcd sections.

    ``nodes`` maps an address to the cluster file's node name. The member list comes from the
    first control plane that gave one; a member's health from any control plane that checked
    it (``--cluster``), else from its own local check; a member nobody could check is not
    healthy (its node is down or its etcd does not answer).
    """
    listed: list[dict[str, Any]] = []
    health: dict[str, tuple[bool, str]] = {}
    for answer in answers:
        if not answer.reachable:
            continue
        if not listed:
            try:
                listed = parse_etcd_members(answer.text("members"))
            except (ValueError, KeyError, TypeError, AttributeError):
                listed = []
        for part in ("health", "local"):
            try:
                for host, state in parse_etcd_health(answer.text(part)).items():
                    host = answer.address if host in ("127.0.0.1", "localhost") else host
                    # A healthy answer wins: a node that cannot reach a peer does not make it sick.
                    if host not in health or state[0]:
                        health[host] = state
            except (ValueError, TypeError, AttributeError):
                continue
    if not listed:  # no member list: the control planes the cluster file names
        return [
            Member(a.node, a.address, *_health(health.get(a.address), a.error), node=a.node)
            for a in answers
        ]
    members = []
    for item in listed:
        address = item["address"]
        if item["client_urls"]:
            healthy, detail = _health(health.get(address))
        else:
            healthy, detail = False, "never started (no client URL)"
        members.append(
            Member(
                item["name"] or nodes.get(address, address),
                address,
                healthy,
                detail,
                member_id=item["id"],
                role="learner" if item["learner"] else "voter",
                node=nodes.get(address),
            )
        )
    return members


# --- MicroK8s' dqlite ---------------------------------------------------------------------


def parse_microk8s_status(text: str) -> tuple[bool, list[tuple[str, str]]]:
    """``microk8s status --format yaml`` -> (running, [(address, role)]) of the datastore."""
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError("not a microk8s status document")
    running = (data.get("microk8s") or {}).get("running")
    ha = data.get("high-availability") or {}
    nodes = ha.get("nodes") or [] if isinstance(ha, dict) else []
    found = []
    for entry in nodes:
        if isinstance(entry, dict) and entry.get("address"):
            host = str(entry["address"]).rsplit(":", 1)[0]
            found.append((host, str(entry.get("role", "voter"))))
    return running is True or str(running).lower() == "true", found


def dqlite_members(answers: Sequence[ControlPlaneAnswer], nodes: dict[str, str]) -> list[Member]:
    """Members from the control planes' ``microk8s status``; a member is healthy when its
    node's MicroK8s answers ready (dqlite reports roles, not health)."""
    running: dict[str, bool] = {}
    listed: list[tuple[str, str]] = []
    for answer in answers:
        if not answer.reachable:
            running[answer.address] = False
            continue
        try:
            ready, members = parse_microk8s_status(answer.text("status"))
        except (ValueError, yaml.YAMLError):
            ready, members = False, []
        running[answer.address] = ready
        if members and not listed:
            listed = members
    if not listed:
        listed = [(a.address, "voter") for a in answers]
    by_address = {a.address: a for a in answers}
    result = []
    for address, role in listed:
        probed = by_address.get(address)
        healthy = running.get(address, False)
        if probed is not None and not probed.reachable:
            detail = f"node not reachable: {probed.error}"
        elif healthy:
            detail = "MicroK8s running"
        else:
            detail = (
                "MicroK8s not running" if probed is not None else "not a node of the cluster file"
            )
        result.append(
            Member(
                nodes.get(address, address),
                address,
                healthy,
                detail,
                role=role,
                node=nodes.get(address),
            )
        )
    return result


def members_of(
    datastore: str, answers: Sequence[ControlPlaneAnswer], nodes: dict[str, str]
) -> list[Member]:
    if datastore == "etcd":
        return etcd_members(answers, nodes)
    return dqlite_members(answers, nodes)


@dataclass
class ControlPlaneView:
    """What ``status`` and ``doctor`` report about an HA control plane."""

    datastore: str
    vip: str | None
    vip_holders: list[str]
    members: list[Member]
    quorum: Quorum
    unreachable: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "vip": self.vip,
            "vip_holders": self.vip_holders,
            "datastore": self.datastore,
            "members": [
                {
                    "name": m.name,
                    "node": m.node,
                    "address": m.address,
                    "role": m.role,
                    "healthy": m.healthy,
                    "detail": m.detail,
                }
                for m in self.members
            ],
            "quorum": self.quorum.as_dict(),
        }

    def vip_problem(self) -> tuple[Level, str, str] | None:
        """(level, message, fix) when the VIP is held by no node or by several."""
        if self.vip is None:
            return None
        if not self.vip_holders:
            return (
                "error",
                f"no control plane holds the VIP {self.vip}: clients and workers cannot "
                "reach the API",
                "check keepalived on the control planes (`systemctl status keepalived`) and "
                "that at least one API server answers",
            )
        if len(self.vip_holders) > 1:
            return (
                "warning",
                f"the VIP {self.vip} is on {len(self.vip_holders)} control planes at once "
                f"({', '.join(self.vip_holders)}): VRRP between them is broken",
                "check that the control planes reach each other (VRRP is IP protocol 112) "
                "and share the same VRRP password",
            )
        return None


def control_plane_view(
    datastore: str,
    vip: IPv4Address | None,
    answers: Sequence[ControlPlaneAnswer],
    nodes: dict[str, str],
) -> ControlPlaneView | None:
    """The view from the control planes' answers; None while no reachable control plane is
    a datastore member yet (nothing installed: no quorum to judge, doctor runs before `up`)."""
    if not any(a.reachable and a.text("member").strip() == "1" for a in answers):
        return None
    holders = [
        a.node
        for a in answers
        if a.reachable and vip is not None and interfaces_with(a.text("addr"), str(vip))
    ]
    members = members_of(datastore, answers, nodes)
    return ControlPlaneView(
        datastore,
        str(vip) if vip is not None else None,
        holders,
        members,
        quorum(members, datastore),
        [a.node for a in answers if not a.reachable],
    )
