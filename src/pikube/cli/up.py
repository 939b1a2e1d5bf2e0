"""``pikube up``: render the inventory, run the site playbook, show what happened per host."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pikube.cli.common import cluster_option, info, load
from pikube.errors import PikubeError

if TYPE_CHECKING:
    from pikube.config.model import Cluster

SITE_PLAYBOOKS = {"kubeadm": "site.yml", "microk8s": "site_microk8s.yml"}


def playbook_options(
    check: bool,
    diff: bool,
    limit: str | None,
    tags: str | None,
    verbose: int,
    extra_vars: dict[str, object] | None = None,
) -> Any:
    from pikube.runner import PlaybookOptions

    return PlaybookOptions(
        check=check,
        diff=diff,
        limit=limit,
        tags=tags,
        verbosity=verbose,
        extra_vars=extra_vars or {},
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


def preflight(cluster: Cluster, limit: str | None) -> None:
    """Run ``pikube doctor``'s checks; stop before any change when one would break `up`."""
    from pikube.config.load import image_catalog
    from pikube.probe.doctor import diagnose
    from pikube.probe.status import probe_nodes

    wanted = {p.strip() for p in (limit or "").split(",") if p.strip()}
    nodes = [n for n in cluster.nodes if not wanted or n.name in wanted] or list(cluster.nodes)
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


def show_event(event: dict[str, Any]) -> None:
    from pikube.runner import describe_event

    line = describe_event(event)
    if line is not None:
        info(line)


def run_site(
    cluster: Cluster,
    *,
    command: str,
    playbook: str,
    check: bool,
    diff: bool,
    limit: str | None,
    tags: str | None,
    verbose: int,
    extra_vars: dict[str, object] | None = None,
) -> Any:
    """Run one lifecycle playbook through the runner, printing progress and the host table."""
    from pikube.errors import HostsUnreachable, PlaybookFailed
    from pikube.inventory import render_inventory_files
    from pikube.runner import run_playbook, summary_table

    state_dir = Path(str(cluster.state_dir))
    try:
        result = run_playbook(
            playbook,
            inventory_files=render_inventory_files(cluster),
            state_dir=state_dir,
            command=command,
            options=playbook_options(check, diff, limit, tags, verbose, extra_vars),
            on_event=show_event,
            on_output=info,
        )
    except (PlaybookFailed, HostsUnreachable) as err:
        if err.result is not None:
            info("\n" + summary_table(err.result))  # type: ignore[arg-type]
        raise
    info("\n" + summary_table(result))
    info(f"run directory: {result.run_dir}")
    return result


@click.command()
@cluster_option
@click.option("--check", is_flag=True, help="Dry run: report what would change, change nothing.")
@click.option("--diff", is_flag=True, help="Show file changes.")
@click.option("--limit", "-l", metavar="NODES", help="Only these nodes (comma-separated).")
@click.option(
    "--tags", "-t", metavar="TAGS", help="Only these parts (prepare, control_plane, ...)."
)
@click.option("-v", "--verbose", count=True, help="More Ansible output (-vv, -vvv).")
@click.option("--skip-doctor", is_flag=True, help="Do not run `pikube doctor`'s checks first.")
def up(
    cluster_file: Path,
    check: bool,
    diff: bool,
    limit: str | None,
    tags: str | None,
    verbose: int,
    skip_doctor: bool,
) -> None:
    """Provision the whole cluster (site playbook), then verify it.

    Ends with a per-host table; the run directory under the state dir keeps the inventory,
    the command line and the event log. Exit 6 when nodes were unreachable (the others
    were provisioned): retry them with --limit.
    """
    cluster = load(cluster_file)
    check_limit(cluster, limit, cluster_file)
    playbook = SITE_PLAYBOOKS[cluster.distribution]
    from pikube.resources import data_path

    if not data_path("playbooks", playbook).is_file():
        raise PikubeError(
            f"this pikube build cannot provision {cluster.distribution} clusters yet "
            f"(playbooks/{playbook} is missing)",
            where=str(cluster_file),
            fix="use distribution: kubeadm, or a pikube release with MicroK8s support",
        )
    if not skip_doctor:
        info("preflight: pikube doctor")
        preflight(cluster, limit)
    run_site(
        cluster,
        command="up",
        playbook=playbook,
        check=check,
        diff=diff,
        limit=limit,
        tags=tags,
        verbose=verbose,
    )
    kubeconfig = Path(str(cluster.state_dir)) / "kubeconfig"
    if check:
        info("check mode: nothing was changed")
    else:
        info(f"next: kubectl --kubeconfig {kubeconfig} get nodes")
