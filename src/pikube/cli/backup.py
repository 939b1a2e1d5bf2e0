"""``pikube backup`` and ``pikube restore``: the cluster state to the admin machine and back.

Both run one generic playbook (playbooks/backup.yml, restore.yml) through ``run_site``; the
flavour's role does the datastore's part. The local copies and their sha256 records are
pikube.backup's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pikube.backup import (
    backup_name,
    backups_dir,
    partial_path,
    rotate,
    stale_partials,
    store,
    verify,
)
from pikube.cli.common import RunFlags, cluster_option, info, load, run_options
from pikube.cli.day2 import checked, confirm_destruction
from pikube.cli.up import run_site
from pikube.errors import PikubeError

if TYPE_CHECKING:
    from pikube.config.model import Cluster, Node

SCHEDULE_KEEP = 7  # the timer's default: a week of daily backups on each control plane


@contextlib.contextmanager
def private_files() -> Iterator[None]:
    """Files created meanwhile (the fetched archive, the run's artifacts) are 0600."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def healthy_control_plane(cluster: Cluster) -> Node:
    """The control plane to back up from: with several, the first whose datastore member the
    control planes report healthy (pikube.probe.status.ha_view); else the first."""
    first = cluster.control_plane
    if len(cluster.control_planes) == 1:
        return first
    from pikube.probe.status import ha_view

    view = ha_view(cluster)
    healthy = {m.node for m in view.members if m.healthy} if view is not None else set()
    return next((n for n in cluster.control_planes if n.name in healthy), first)


@click.command()
@cluster_option
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Afterwards keep only the newest N backups of this cluster pikube recorded in "
    "backups/ (with --schedule: on each control plane, default 7).",
)
@click.option(
    "--schedule",
    type=click.Choice(["daily", "off"]),
    default=None,
    help="Instead of backing up now: install (daily) or remove (off) a systemd timer on "
    "every control plane that keeps the last N backups there (/var/backups/pikube).",
)
@run_options(limit=False)
def backup(cluster_file: Path, keep: int | None, schedule: str | None, flags: RunFlags) -> None:
    """Snapshot the cluster state into the state dir's backups/ folder.

    kubeadm: an etcd snapshot from one healthy control plane's member plus /etc/kubernetes/pki,
    checked with `etcdctl snapshot status`; MicroK8s: its datastore backup. The archive
    (0600, in a 0700 folder, it holds private keys) is named CLUSTER-UTCTIME.tar.gz, its
    sha256 recorded next to it in a .sha256 file.
    """
    cluster = load(cluster_file)
    if schedule is not None:
        schedule_backups(cluster, schedule, keep or SCHEDULE_KEEP, flags)
        return
    folder = backups_dir(Path(str(cluster.state_dir)))
    for stale in stale_partials(folder, cluster.name):
        stale.unlink()
    final = folder / backup_name(cluster.name, dt.datetime.now(dt.UTC))
    partial = partial_path(final)
    node = healthy_control_plane(cluster)
    try:
        with private_files():
            run_site(
                cluster,
                command="backup",
                playbook="backup.yml",
                flags=flags,
                limit=node.name,
                extra_vars={
                    "pikube_backup_local_path": str(partial),
                    "pikube_backup_from": node.name,
                },
                retry=lambda _hosts: "pikube backup",
            )
        if flags.check:
            info(checked(True, ""))
            return
        if not partial.is_file():
            raise PikubeError(
                f"the backup run ended but no archive arrived from {node.name}",
                where=str(folder),
                fix="run `pikube backup -v` and read the fetch task's output",
            )
        digest = store(partial, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    info(f"backup of {cluster.name} from {node.name}: {final}")
    info(f"  {final.stat().st_size} bytes, sha256 {digest} (recorded in {final.name}.sha256)")
    if keep is not None:
        for old in rotate(folder, cluster.name, keep):
            info(f"  removed the older backup {old.name} (--keep {keep})")


def schedule_backups(cluster: Cluster, schedule: str, keep: int, flags: RunFlags) -> None:
    run_site(
        cluster,
        command="backup",
        playbook="backup.yml",
        flags=flags,
        limit=",".join(n.name for n in cluster.control_planes),
        extra_vars={"pikube_backup_schedule": schedule, "pikube_backup_keep": keep},
        retry=lambda _hosts: f"pikube backup --schedule {schedule} --keep {keep}",
    )
    done = (
        f"daily backups scheduled on every control plane (pikube-backup.timer), the newest "
        f"{keep} kept in /var/backups/pikube"
        if schedule == "daily"
        else "daily backups unscheduled (the backups in /var/backups/pikube stay)"
    )
    info(checked(flags.check, done))


@click.command()
@cluster_option
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@run_options(limit=False)
def restore(cluster_file: Path, file: Path, yes: bool, flags: RunFlags) -> None:
    """Bring the cluster back to the backup FILE; what was created since is lost.

    FILE must match the sha256 recorded next to it (else exit 5, before any node is
    contacted). kubeadm: on every control plane, etcd and the API server stop, etcd is
    restored from the snapshot (the old data kept as /var/lib/etcd.before-restore-TIME),
    they start again; then every node must be Ready. Asks you to type the cluster name (or
    pass --yes).
    """
    cluster = load(cluster_file)
    digest = verify(file)
    confirm_destruction(
        cluster,
        f"restore cluster {cluster.name} to the backup {file.name}: every object created or "
        "changed since it was taken is lost",
        yes or flags.check,
        f"restore {file}",
    )
    run_site(
        cluster,
        command="restore",
        playbook="restore.yml",
        flags=flags,
        extra_vars={
            "pikube_restore_local_path": str(file.resolve()),
            "pikube_restore_sha256": digest,
        },
        retry=lambda _hosts: f"pikube restore {file} --yes",
    )
    info(checked(flags.check, f"{cluster.name} restored from {file.name}; every node is Ready"))
