"""``pikube status`` and ``pikube doctor``: read-only probes over SSH, host keys verified."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pikube.cli.common import cluster_option, info, load
from pikube.errors import HostsUnreachable, PikubeError, QuorumError

if TYPE_CHECKING:
    from pikube.config.model import Cluster, Node
    from pikube.probe.ha import ControlPlaneView

STATUS_HELP = "JSON schema (version 1) is documented in the README."


def _selected(cluster_file: Path, limit: tuple[str, ...]) -> tuple[Cluster, list[Node]]:
    cluster = load(cluster_file)
    unknown = [n for n in limit if n not in {node.name for node in cluster.nodes}]
    if unknown:
        raise PikubeError(
            f"unknown node {', '.join(unknown)}",
            where=str(cluster_file),
            fix="use names from the nodes list of the cluster file",
        )
    return cluster, [n for n in cluster.nodes if not limit or n.name in limit]


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def control_plane_lines(view: ControlPlaneView) -> str:
    """The VIP holder, each datastore member and the quorum verdict, for people."""
    lines = []
    if view.vip is not None:
        holders = ", ".join(view.vip_holders) or "nobody"
        lines.append(f"VIP: {view.vip} on {holders}")
    quorum = view.quorum
    lines.append(f"{view.datastore}: {quorum.level}: {quorum.message}")
    rows = [["MEMBER", "NODE", "ADDRESS", "ROLE", "HEALTH"]]
    for member in view.members:
        health = "healthy" if member.healthy else f"DOWN ({member.detail})"
        rows.append([member.name, member.node or "-", member.address, member.role, health])
    lines.append(_table(rows))
    if quorum.fix:
        lines.append(f"  fix: {quorum.fix}")
    problem = view.vip_problem()
    if problem is not None:
        lines.append(f"VIP: {problem[0]}: {problem[1]}\n  fix: {problem[2]}")
    return "\n".join(lines)


@click.command(epilog=STATUS_HELP)
@cluster_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--limit", "-l", multiple=True, metavar="NODE", help="Only these nodes.")
@click.option("--timeout", default=8.0, show_default=True, help="SSH timeout per node (s).")
def status(cluster_file: Path, as_json: bool, limit: tuple[str, ...], timeout: float) -> None:
    """Per node: reachable, OS, kernel, arch, memory, role, Kubernetes version and Ready."""
    from pikube.probe.status import cluster_status

    cluster, nodes = _selected(cluster_file, limit)
    result = cluster_status(cluster, nodes, timeout)
    data = result.as_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        rows = [
            ["NODE", "ADDRESS", "ROLE", "SSH", "OS", "KERNEL", "ARCH", "MEM", "VERSION", "READY"]
        ]
        for node in data["nodes"]:
            kube = node["kubernetes"]
            ready = "-" if kube["ready"] is None else ("Ready" if kube["ready"] else "NotReady")
            if kube["registered"] and kube["schedulable"] is False:
                ready += ",SchedulingDisabled"
            rows.append(
                [
                    node["name"],
                    node["address"],
                    node["role"],
                    "ok" if node["reachable"] else "DOWN",
                    node["os"] or "-",
                    node["kernel"] or "-",
                    node["arch"] or "-",
                    f"{node['memory_mb']} MiB" if node["memory_mb"] else "-",
                    kube["version"] or "-",
                    ready,
                ]
            )
        click.echo(_table(rows))
        api = data["api"]
        state = {True: "healthy", False: "not ready", None: "unknown"}[api["healthy"]]
        click.echo(f"\nAPI: {state} ({api['detail']})")
        if result.control_plane is not None:
            click.echo(control_plane_lines(result.control_plane))
        for addon in data["addons"]:
            mark = {True: "healthy", False: "NOT READY", None: "unknown"}[addon["healthy"]]
            parts = ", ".join(
                f"{w['name']} "
                + ("missing" if w["ready"] is None else f"{w['ready']}/{w['desired']} ready")
                for w in addon["workloads"]
            )
            click.echo(f"addon {addon['name']}: {mark}" + (f" ({parts})" if parts else ""))
        for node in data["nodes"]:
            if node["error"]:
                info(f"{node['name']}: {node['error']}")
    if result.control_plane is not None and result.control_plane.quorum.level == "error":
        raise QuorumError(result.control_plane.quorum.message, fix=result.control_plane.quorum.fix)
    if any(not n["reachable"] for n in data["nodes"]):
        down = [n["name"] for n in data["nodes"] if not n["reachable"]]
        raise HostsUnreachable(
            f"{len(down)} node(s) not reachable: {', '.join(down)}",
            fix="check power and network; `pikube doctor` says more",
        )


@click.command()
@cluster_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable findings.")
@click.option("--limit", "-l", multiple=True, metavar="NODE", help="Only these nodes.")
@click.option("--timeout", default=8.0, show_default=True, help="SSH timeout per node (s).")
def doctor(cluster_file: Path, as_json: bool, limit: tuple[str, ...], timeout: float) -> None:
    """Find what breaks Kubernetes on Pis (cgroups, swap, tunnel module, clock...), with fixes.

    Exits 1 when a finding would stop `pikube up`; findings that `up` fixes by itself
    (swap, cgroup flags, NTP) are reported but do not fail. Exits 6 when the only problem
    is nodes that cannot be reached (as `pikube status` does). With several control planes
    it also checks the VIP holder and the datastore's members; lost quorum exits 7.
    """
    from pikube.config.load import image_catalog
    from pikube.probe.doctor import CONTROL_PLANE, control_plane_findings, diagnose
    from pikube.probe.ssh import SshConnections
    from pikube.probe.status import ha_view, probe_nodes

    cluster, nodes = _selected(cluster_file, limit)
    with SshConnections() as connections:
        facts = probe_nodes(cluster, nodes, timeout, connections)
        view = ha_view(cluster, timeout, connections)
        image_arch = image_catalog().get(cluster.image, {}).get("arch")
        findings = diagnose(cluster, facts, image_arch) + control_plane_findings(view)
        if any(f.name == cluster.control_plane.name and f.reachable for f in facts):
            from pikube.probe.arp import lb_range_findings

            findings += lb_range_findings(cluster, timeout, connections)
    if as_json:
        click.echo(json.dumps([f.as_dict() for f in findings], indent=2))
    else:
        for name in [n.name for n in nodes] + ([CONTROL_PLANE] if view is not None else []):
            mine = [f for f in findings if f.node == name]
            mark = "ok" if not mine else ("FAIL" if any(f.blocking for f in mine) else "warn")
            click.echo(f"{name:<20} {mark}")
            for finding in mine:
                level = "error" if finding.blocking else "note "
                click.echo(
                    f"  {level} {finding.check}: {finding.message}\n        fix: {finding.fix}"
                )
    lost = [f for f in findings if f.check == "quorum" and f.blocking]
    if lost:
        raise QuorumError(lost[0].message, fix=lost[0].fix)
    # Unreachable nodes exit 6 as in `pikube status`; a fault found on a node that answered
    # needs a fix first, so it exits 1 even when other nodes were down too.
    down = [f.node for f in findings if f.check == "reachable"]
    unreachable = f"{len(down)} node(s) not reachable: {', '.join(down)}"
    problems = [f for f in findings if f.blocking and f.check != "reachable"]
    if problems:
        raise PikubeError(
            f"doctor found {len(problems)} problem(s) that stop `pikube up`"
            + (f"; {unreachable}" if down else ""),
            fix="apply the fixes listed above, then run `pikube doctor` again",
        )
    if down:
        raise HostsUnreachable(
            unreachable, fix="apply the fixes listed above, then run `pikube doctor` again"
        )


def wait_for_boot(cluster: Cluster, nodes: list[Node], seconds: float) -> None:
    """`pikube up --wait-boot`: show each node as it answers; exit 6 naming those that never do."""
    from pikube.probe.boot import NEVER_UP_CAUSES, wait_for_ssh
    from pikube.probe.status import ssh_target

    info(f"waiting up to {seconds:.0f} s for {len(nodes)} node(s) to answer on SSH")
    targets = {node.name: ssh_target(cluster, node) for node in nodes}
    down = {}
    for event in wait_for_ssh(targets, seconds):
        if event.state == "up":
            info(f"{event.node} up after {event.elapsed:.0f} s")
        elif event.state == "waiting":
            info(f"{event.node}: {event.reason} ({event.elapsed:.0f} s, still waiting)")
        else:
            down[event.node] = event
    never = [f"{n.name} ({down[n.name].reason})" for n in nodes if n.name in down]
    for event in (down[n.name] for n in nodes if n.name in down and down[n.name].fix):
        info(f"  {event.node}: {event.reason}\n    fix: {event.fix}")
    if never:
        raise HostsUnreachable(
            f"{len(never)} node(s) not up after {seconds:.0f} s: {', '.join(never)}",
            fix="a node that never answered is most likely one of: "
            + "; ".join(NEVER_UP_CAUSES)
            + " (a node that answered: its fix is above). Then run `pikube up --wait-boot` again",
        )
