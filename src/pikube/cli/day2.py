"""Day-2 lifecycle: ``pikube add-node``, ``remove-node``, ``reset`` and ``upgrade``.

Each command checks its request against cluster.yaml, then runs one lifecycle playbook
through ``run_site`` (progress, run directory, per-host table), like ``pikube up``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pikube.cli.common import RunFlags, cluster_option, complete_node_name, info, load, run_options
from pikube.cli.up import run_site
from pikube.errors import EXIT_CONFIG, EXIT_USAGE, HostsUnreachable, PikubeError, QuorumError

if TYPE_CHECKING:
    from pikube.config.model import Cluster, Node
    from pikube.probe.ha import ControlPlaneView


class UntrackedChannel(PikubeError):
    """The cluster file's channel has no version track, so no upgrade rule applies."""

    exit_code = EXIT_CONFIG


class ConfirmationRequired(PikubeError):
    """A destructive command was run without a terminal to confirm on and without --yes."""

    exit_code = EXIT_USAGE


def stdin_is_interactive() -> bool:
    """Whether a person can answer a prompt (tests replace this)."""
    return sys.stdin.isatty()


def confirm_destruction(cluster: Cluster, action: str, yes: bool, command: str) -> None:
    """Ask the user to type the cluster name; refuse when nobody can answer."""
    if yes:
        return
    if not stdin_is_interactive():
        raise ConfirmationRequired(
            f"{action} needs confirmation and stdin is not a terminal",
            fix=f"run `pikube {command} --yes` to confirm from a script",
        )
    info(f"This will {action}.")
    answer = click.prompt(
        f"Type the cluster name ({cluster.name}) to confirm",
        default="",
        show_default=False,
        err=True,  # stdout carries data (--json)
    )
    if answer.strip() != cluster.name:
        raise PikubeError(
            f"not confirmed (typed {answer.strip()!r}, expected {cluster.name!r}); nothing changed"
        )


def find_node(cluster: Cluster, name: str, cluster_file: Path) -> Node:
    for node in cluster.nodes:
        if node.name == name:
            return node
    raise PikubeError(
        f"node {name!r} is not in the cluster file",
        where=str(cluster_file),
        fix="add it to `nodes:` (name, ip, role: worker) first; nodes are: "
        + ", ".join(n.name for n in cluster.nodes),
    )


def control_plane(cluster: Cluster) -> Node:
    return next(n for n in cluster.nodes if n.role == "control-plane")


def run_limit(*nodes: Node) -> str:
    """An add-node or remove-node run's --limit: each node once, in order."""
    return ",".join(dict.fromkeys(n.name for n in nodes))


def serving_members(cluster: Cluster, view: ControlPlaneView | None) -> list[Node]:
    """The control planes whose haproxy backends and keepalived peers an add-node or
    remove-node of a control plane updates: those that answer as healthy datastore members.
    One still to be added (growing from 3 to 5, the fifth is listed before it joins) or down
    is left alone; `pikube up` brings its files in line later. Every control plane when none
    could be asked (the run then stops at its own readiness check)."""
    if view is None:
        return list(cluster.control_planes)
    healthy = {m.node for m in view.members if m.healthy}
    return [n for n in cluster.control_planes if n.name in healthy]


def checked(check: bool, message: str) -> str:
    return "check mode: nothing was changed" if check else message


# --- add-node ------------------------------------------------------------------------------


@click.command("add-node")
@cluster_option
@click.argument("name", shell_complete=complete_node_name)
@run_options(limit=False)
def add_node(cluster_file: Path, name: str, flags: RunFlags) -> None:
    """Prepare NAME (a node already in cluster.yaml) and join it with a fresh token.

    Only NAME and the first control plane are contacted; for a worker, the control plane
    only answers reads and creates the join token, so it reports changed=0 and the other
    nodes are untouched. A control plane (of several) joins as one, with a certificate key
    fresh to this run, and the haproxy and keepalived of every control plane that answers as
    a datastore member list it (those are contacted too); the first control plane is built
    by `pikube up`, not added.
    """
    cluster = load(cluster_file)
    node = find_node(cluster, name, cluster_file)
    cp = control_plane(cluster)
    if node == cp:
        raise PikubeError(
            f"{name} is the first control plane, the one that creates the cluster; add-node "
            "joins other nodes to it",
            where=str(cluster_file),
            fix="use `pikube up` to build the control plane",
        )
    members: list[Node] = []
    if node.role == "control-plane":
        from pikube.probe.status import ha_view

        members = serving_members(cluster, ha_view(cluster))
    playbook = "add_node.yml"
    run_site(
        cluster,
        command="add-node",
        playbook=playbook,
        flags=flags,
        limit=run_limit(node, cp, *members),
        extra_vars={"pikube_add_node": name},
        retry=lambda _hosts: f"pikube add-node {name}",
    )
    info(checked(flags.check, f"{name} joined {cluster.name}"))


# --- remove-node ---------------------------------------------------------------------------


@click.command("remove-node")
@cluster_option
@click.argument("name", shell_complete=complete_node_name)
@click.option(
    "--force",
    is_flag=True,
    help="Drain with --force --ignore-daemonsets --delete-emptydir-data (pods without a "
    "controller and emptyDir data are deleted) and delete the node even if the drain fails or "
    "times out.",
)
@click.option(
    "--drain-timeout",
    type=click.IntRange(min=1),
    default=120,
    show_default=True,
    metavar="S",
    help="Seconds to wait for the drain; without --force a timeout stops the removal.",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@run_options(limit=False)
def remove_node(
    cluster_file: Path, name: str, force: bool, drain_timeout: int, yes: bool, flags: RunFlags
) -> None:
    """Cordon, drain and delete NAME from Kubernetes, then reset the machine.

    A node already gone from Kubernetes skips the Kubernetes part. An unreachable machine
    cannot be reset: the Kubernetes side is still cleaned, and the command exits 6 naming it.
    A control plane (of several) loses its etcd or dqlite member first; a removal that would
    break the datastore's quorum is refused before anything changes (exit 7); the other
    control planes' haproxy and keepalived drop it, and its own stop. Afterwards, delete the
    node from cluster.yaml (or add it back with `pikube add-node`).
    """
    cluster = load(cluster_file)
    node = find_node(cluster, name, cluster_file)
    via: Node = control_plane(cluster)
    members: list[Node] = []
    if node.role != "worker":
        via, members = removable_control_plane(cluster, node, cluster_file)
    confirm_destruction(
        cluster,
        f"remove {name} from cluster {cluster.name} and reset it",
        yes or flags.check,
        "remove-node",
    )
    playbook = "remove_node.yml"
    try:
        run_site(
            cluster,
            command="remove-node",
            playbook=playbook,
            flags=flags,
            limit=run_limit(node, via, *members),
            extra_vars={
                "pikube_remove_node": name,
                "pikube_remove_via": via.name,
                "pikube_remove_force": force,
                "pikube_remove_drain_timeout": drain_timeout,
                "pikube_reset_hosts": name,
            },
            retry=lambda _hosts: f"pikube remove-node {name} --yes",
        )
    except HostsUnreachable as err:
        if err.result is not None and list(err.result.unreachable_hosts) == [name]:  # type: ignore[attr-defined]
            raise HostsUnreachable(
                f"{name} was removed from Kubernetes but could not be reached to reset it "
                "(kubeadm reset, CNI and Kubernetes state are still on that machine)",
                fix=f"when it is back, run `pikube reset --limit {name} --yes`, or reflash it",
            ) from err
        raise
    done = f"{name} removed from {cluster.name}; now delete it from {cluster_file}"
    info(checked(flags.check, done))


def removable_control_plane(
    cluster: Cluster, node: Node, cluster_file: Path
) -> tuple[Node, list[Node]]:
    """The control plane that removes ``node``'s datastore member, and the others whose
    haproxy and keepalived drop it (``serving_members``); refuse what breaks quorum.

    Asks the control planes themselves (``pikube.probe.status.ha_view``) which members are
    healthy, and refuses, before anything changes, the last control plane, the first one (the
    bootstrap node every playbook starts from), and a removal that would lose quorum (exit 7).
    """
    from pikube.probe.ha import removal_refusal
    from pikube.probe.status import ha_view

    if len(cluster.control_planes) == 1:
        raise PikubeError(
            f"{node.name} is the only control plane and cannot be removed from its own cluster",
            where=str(cluster_file),
            fix="use `pikube reset` to take the whole cluster down",
        )
    if node == cluster.control_plane:
        others = [n.name for n in cluster.control_planes if n != node]
        raise PikubeError(
            f"{node.name} is the first control plane, the one pikube's playbooks start from",
            where=str(cluster_file),
            fix=f"move another control plane ({', '.join(others)}) above it in `nodes:`, "
            f"then run `pikube remove-node {node.name}` again",
        )
    view = ha_view(cluster)
    datastore = cluster.flavour.datastore
    if view is None:
        raise QuorumError(
            f"no control plane answered as a {datastore} member, so pikube cannot tell whether "
            f"removing {node.name} keeps quorum; nothing was changed",
            fix="check the control planes with `pikube status`, then try again",
        )
    refusal = removal_refusal(view.members, node.name, datastore)
    if refusal is not None:
        raise QuorumError(
            f"refusing to remove {node.name}: {refusal}; nothing was changed",
            fix=view.quorum.fix
            or "bring the members that are down back first (`pikube status` shows them)",
        )
    members = [n for n in serving_members(cluster, view) if n != node]
    candidates = [n for n in cluster.control_planes if n != node]
    return next((n for n in candidates if n in members), candidates[0]), members


# --- reset ---------------------------------------------------------------------------------


@click.command()
@cluster_option
@click.option("--purge", is_flag=True, help="Also remove the Kubernetes packages or the snap.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@run_options()
def reset(cluster_file: Path, purge: bool, yes: bool, flags: RunFlags) -> None:
    """Tear the cluster down to freshly prepared nodes; `pikube up` then builds a new one.

    Removes cluster membership (kubeadm reset -f / microk8s leave and removal), Kubernetes
    and etcd state, kubelet state, CNI config and interfaces, Kubernetes iptables chains, and
    the fetched kubeconfig. Asks you to type the cluster name (or pass --yes).
    """
    from pikube.cli.up import check_limit

    cluster = load(cluster_file)
    check_limit(cluster, flags.limit, cluster_file)
    targets = flags.limit or "all nodes (" + ", ".join(n.name for n in cluster.nodes) + ")"
    what = "and remove the Kubernetes packages" if purge else ""
    confirm_destruction(
        cluster,
        f"reset cluster {cluster.name} on {targets} {what}".rstrip(),
        yes or flags.check,
        "reset",
    )
    playbook = "reset.yml"
    run_site(
        cluster,
        command="reset",
        playbook=playbook,
        flags=flags,
        extra_vars={"pikube_reset_purge": purge},
    )
    info(
        checked(
            flags.check,
            f"reset done; `pikube up --cluster {cluster_file}` builds a fresh cluster",
        )
    )


# --- upgrade -------------------------------------------------------------------------------


def check_upgrade_target(cluster: Cluster, target: str, cluster_file: Path) -> str:
    """The target as the playbook wants it; refuse skipping or going back minors.

    Exit codes: 2 for a target that is not a version of the cluster's flavour, 1 for one
    that skips or goes back minors, 3 when the cluster file's channel has no version track.
    """
    from pikube.distribution import NoVersionTrack, UpgradeStepError, VersionError

    try:
        return cluster.flavour.upgrade_target(cluster.release, target).text
    except NoVersionTrack as err:
        raise UntrackedChannel(err.message, where=str(cluster_file), fix=err.fix) from None
    except UpgradeStepError as err:
        raise PikubeError(err.message, fix=err.fix) from None
    except VersionError as err:
        raise click.BadParameter(f"{err.message}; {err.fix}", param_hint="'--to'") from None


def update_cluster_file(cluster_file: Path, key: str, old: str, new: str) -> bool:
    """Replace ``key: old`` under ``kubernetes:`` in place (comments kept); False if not simple."""
    text = cluster_file.read_text(encoding="utf-8")
    pattern = re.compile(
        rf"^(?P<indent>[ \t]+){key}:[ \t]*(?P<q>[\"']?){re.escape(old)}(?P=q)"
        r"(?P<rest>[ \t]*(#.*)?)$",
        re.MULTILINE,
    )
    matches = list(pattern.finditer(text))
    if len(matches) != 1:
        return False
    m = matches[0]
    q = m.group("q") or '"'
    line = f"{m.group('indent')}{key}: {q}{new}{q}{m.group('rest')}"
    cluster_file.write_text(text[: m.start()] + line + text[m.end() :], encoding="utf-8")
    return True


@click.command()
@cluster_option
@click.option("--to", "target", required=True, metavar="VERSION", help="e.g. 1.31 (next minor).")
@click.option(
    "--ready-timeout",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    metavar="S",
    help="Seconds each upgraded node may take to come back Ready; then the upgrade stops there.",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@run_options(limit=False)
def upgrade(
    cluster_file: Path, target: str, ready_timeout: int, yes: bool, flags: RunFlags
) -> None:
    """Upgrade Kubernetes by one minor: control plane first, then workers one at a time.

    kubeadm: kubeadm upgrade plan/apply on the control plane, then each worker is drained,
    upgraded, restarted and uncordoned. MicroK8s: snap refresh to the new channel node by
    node. Stops at the first node that does not come back Ready. On success the version in
    cluster.yaml is updated in place (comments kept).
    """
    cluster = load(cluster_file)
    to = check_upgrade_target(cluster, target, cluster_file)
    old = cluster.release.text
    confirm_destruction(
        cluster,
        f"upgrade cluster {cluster.name} from {old} to {to} (nodes are drained)",
        yes or flags.check,
        "upgrade",
    )
    playbook = "upgrade.yml"
    run_site(
        cluster,
        command="upgrade",
        playbook=playbook,
        flags=flags,
        extra_vars={"pikube_upgrade_to": to, "pikube_upgrade_ready_timeout": ready_timeout},
        retry=lambda _hosts: f"pikube upgrade --to {target} --yes",
    )
    key = cluster.flavour.version_key
    if flags.check:
        info("check mode: nothing was changed")
    elif (
        old != to
        and cluster.kubernetes.model_dump().get(key) == old
        and update_cluster_file(cluster_file, key, old, to)
    ):
        info(f"upgraded to {to}; {cluster_file}: kubernetes.{key} is now {to!r}")
    elif old != to:
        info(f'upgraded to {to}; now set kubernetes.{key}: "{to}" in {cluster_file}')
