"""``pikube up``: render the inventory, run the site playbook, show what happened per host."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pikube.cli.common import (
    RunFlags,
    RunOutcome,
    cluster_option,
    info,
    load,
    record_outcome,
    run_options,
)
from pikube.distribution import SITE_PLAYBOOK
from pikube.errors import PikubeError
from pikube.probe.boot import DEFAULT_WAIT_BOOT_S

if TYPE_CHECKING:
    from pikube.cli.board import EventHandler, OutputHandler
    from pikube.config.model import Cluster, Node


def playbook_options(flags: RunFlags, limit: str | None, extra_vars: dict[str, object]) -> Any:
    from pikube.runner import PlaybookOptions

    return PlaybookOptions(
        check=flags.check,
        diff=flags.diff,
        limit=limit,
        tags=flags.tags,
        skip_tags=flags.skip_tags,
        verbosity=flags.verbose,
        extra_vars=extra_vars,
    )


def check_limit(cluster: Cluster, limit: str | None, cluster_file: Path) -> None:
    """Plain node names in ``--limit`` must exist (patterns and groups pass to Ansible)."""
    if not limit:
        return
    names = {n.name for n in cluster.nodes}
    groups = {"all", "cluster", "control_plane", "workers"}
    for part in limit.split(","):
        word = part.strip().lstrip("!&")
        if word and word not in names | groups and not any(c in word for c in "*?[~:"):
            raise click.BadParameter(
                f"unknown node {word!r} in {cluster_file}; nodes are: " + ", ".join(sorted(names)),
                param_hint="'--limit'",
            )


def limited_nodes(cluster: Cluster, limit: str | None) -> list[Node]:
    """The nodes named in ``--limit`` (all of them for none, or for groups and patterns)."""
    wanted = {p.strip() for p in (limit or "").split(",") if p.strip()}
    return [n for n in cluster.nodes if not wanted or n.name in wanted] or list(cluster.nodes)


def preflight(cluster: Cluster, limit: str | None) -> None:
    """Run ``pikube doctor``'s checks; stop before any change when one would break `up`."""
    from pikube.config.load import image_catalog
    from pikube.probe.doctor import diagnose
    from pikube.probe.status import probe_nodes

    nodes = limited_nodes(cluster, limit)
    facts = probe_nodes(cluster, nodes, 8.0)
    image_arch = image_catalog().get(cluster.image, {}).get("arch")
    findings = diagnose(cluster, facts, image_arch)
    # Unreachable nodes do not stop `up`: the others are provisioned, and the run ends with
    # exit 6 naming them and how to retry.
    for finding in findings:
        if finding.check == "reachable":
            info(f"  doctor: {finding.node}: not reachable now ({finding.message})")
    blocking = [f for f in findings if f.blocking and f.check != "reachable"]
    for finding in blocking:
        info(
            f"  doctor: {finding.node}: {finding.check}: {finding.message}\n    fix: {finding.fix}"
        )
    if blocking:
        raise PikubeError(
            f"doctor found {len(blocking)} problem(s) that would make `pikube up` fail",
            fix="apply the fixes above (or run with --skip-doctor to try anyway)",
        )


def kubeconfig_path(cluster: Cluster) -> Path:
    """Where the site playbook puts the admin kubeconfig (the inventory says so too)."""
    return Path(str(cluster.state_dir)) / "kubeconfig"


def run_site(
    cluster: Cluster,
    *,
    command: str,
    playbook: str,
    flags: RunFlags,
    limit: str | None = None,
    extra_vars: dict[str, object] | None = None,
    retry: Callable[[list[str]], str] | None = None,
    progress: Callable[[], AbstractContextManager[tuple[EventHandler, OutputHandler]]]
    | None = None,
) -> Any:
    """Run one lifecycle playbook: live board or progress lines, then the per-host table.

    ``limit`` defaults to the user's --limit; the outcome is kept for --json. ``progress``
    replaces the playbook board (``pikube build`` shows its own).
    """
    from pikube.cli.board import run_progress
    from pikube.errors import HostsUnreachable, PlaybookFailed
    from pikube.inventory import render_inventory_files
    from pikube.runner import RunResult, run_playbook, summary_table

    state_dir = Path(str(cluster.state_dir))
    kubeconfig = kubeconfig_path(cluster)
    ensure_cluster_secrets(cluster)
    try:
        with (progress or run_progress)() as (on_event, on_output):
            result = run_playbook(
                playbook,
                inventory_files=render_inventory_files(cluster),
                state_dir=state_dir,
                command=command,
                options=playbook_options(flags, limit or flags.limit, extra_vars or {}),
                on_event=on_event,
                on_output=on_output,
                retry=retry,
            )
    except (PlaybookFailed, HostsUnreachable) as err:
        if isinstance(err.result, RunResult):
            found = kubeconfig if kubeconfig.is_file() else None
            record_outcome(RunOutcome(command, err.result, found))
            info("\n" + summary_table(err.result))
        raise
    record_outcome(RunOutcome(command, result, kubeconfig if kubeconfig.is_file() else None))
    info("\n" + summary_table(result))
    info(f"run directory: {result.run_dir}")
    return result


def ensure_cluster_secrets(cluster: Cluster) -> None:
    """The secrets the playbooks read from the state dir, created once per cluster: the VRRP
    password of a cluster with network.vip (pikube_vip reads the 0600 file with no_log; the
    password never passes through the command line, the inventory or the run directory)."""
    if cluster.network.vip is not None:
        from pikube.vrrp import ensure_auth_pass

        ensure_auth_pass(Path(str(cluster.state_dir)))


skip_doctor_option = click.option(
    "--skip-doctor", is_flag=True, help="Do not run `pikube doctor`'s checks first."
)


@click.command()
@cluster_option
@skip_doctor_option
@click.option(
    "--wait-boot",
    type=click.FloatRange(min=1),
    is_flag=False,
    flag_value=DEFAULT_WAIT_BOOT_S,
    default=None,
    metavar="[SECONDS]",
    help=f"First wait for every node to answer on SSH (just flashed: {DEFAULT_WAIT_BOOT_S} s).",
)
@run_options()
def up(cluster_file: Path, skip_doctor: bool, wait_boot: float | None, flags: RunFlags) -> None:
    """Provision the whole cluster (site playbook), then verify it.

    Ends with a per-host table; the run directory under the state dir keeps the inventory,
    the command line and the event log. Exit 6 when nodes were unreachable (the others
    were provisioned): retry them with --limit.
    """
    cluster = load(cluster_file)
    check_limit(cluster, flags.limit, cluster_file)
    playbook = SITE_PLAYBOOK
    if wait_boot is not None:
        from pikube.cli.status import wait_for_boot

        wait_for_boot(cluster, limited_nodes(cluster, flags.limit), wait_boot)
    if not skip_doctor:
        info("preflight: pikube doctor")
        preflight(cluster, flags.limit)
    run_site(cluster, command="up", playbook=playbook, flags=flags)
    if flags.check:
        info("check mode: nothing was changed")
    else:
        info(f"next: kubectl --kubeconfig {kubeconfig_path(cluster)} get nodes")
