"""``pikube flash NODE... --device DEV | --output FILE``: SD cards with first-boot config.

Every safety check runs before the first byte is written: the tools a flash needs, the
image (its decoded head: MBR and FAT boot partition), and for every target: block device,
whole disk, removable (or --allow-non-removable), not mounted, not swap, not the running
system, large enough, confirmed (or --yes), opened exclusively; or for --output: not the
source, not an existing file (unless --force), locked. Each NODE pairs with the
--device/--output at the same position. This module parses, calls and prints; the writing
(threads, cancellation, partial files) is ``pikube.image.session``'s.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pikube.cli.common import cluster_option, complete_node_name, info, load
from pikube.cli.image import cache_dir_option, catalog_option, resolve_cache_dir
from pikube.errors import FlashRefused, PikubeError

if TYPE_CHECKING:
    from pikube.config.model import Cluster, Node
    from pikube.image.catalog import BootLayout, OsFamily
    from pikube.image.session import FlashTarget


def resolve_image(
    image_ref: str | None, cluster: Cluster, catalog_file: Path | None, cache_dir: Path | None
) -> tuple[Path, BootLayout, str, OsFamily]:
    """(image file, boot layout, label for people, OS family) for --image ID|PATH or
    cluster.image. A file the catalog does not know gets the family of cluster.image."""
    from pikube.cli.image import byte_progress
    from pikube.image.catalog import BootLayout, find_image, image_family, load_catalog
    from pikube.image.download import fetch_image

    catalog = load_catalog(catalog_file)
    ref = image_ref or cluster.image
    as_path = Path(ref).expanduser()
    if image_ref and (as_path.is_file() or "/" in ref or ref.endswith((".xz", ".img"))):
        if not as_path.is_file():
            raise PikubeError(
                f"image file {as_path} does not exist",
                where="--image",
                fix="pass an existing .img/.img.xz file or a catalog id (`pikube image list`)",
            )
        # A file from the catalog (e.g. copied by hand) keeps its entry's boot layout.
        for entry in catalog:
            if entry.filename == as_path.name:
                return as_path, entry.boot, f"{as_path} ({entry.id})", entry.os_family
        return as_path, BootLayout(label=""), str(as_path), image_family(cluster.image, catalog)
    entry = find_image(ref, catalog)
    if not entry.sd_card:
        raise FlashRefused(
            f"image {entry.id} is for virtual machines and rehearsals, not SD cards",
            where="--image" if image_ref else "the cluster file's image:",
            fix="choose a Raspberry Pi image (`pikube image list` marks them)",
        )
    with byte_progress(f"fetch {entry.id}") as progress:
        cached = fetch_image(entry, resolve_cache_dir(cache_dir), progress=progress)
    if cached.downloaded:
        info(f"downloaded and verified {entry.id}")
    return cached.path, entry.boot, entry.id, entry.os_family


@contextmanager
def flash_progress() -> Iterator[Callable[[FlashTarget, str, int, int], None]]:
    """Per-target progress bars with throughput and ETA on a terminal (stderr)."""
    if not sys.stderr.isatty():
        yield lambda target, phase, done, total: None
        return
    from pikube.cli.image import bytes_bar

    with bytes_bar() as bar:
        tasks: dict[tuple[str, str], object] = {}
        lock = threading.Lock()

        def update(target: FlashTarget, phase: str, done: int, total: int) -> None:
            with lock:
                key = (target.write_path, phase)
                if key not in tasks:
                    tasks[key] = bar.add_task(f"{target.name} {phase}", total=total)
                bar.update(tasks[key], advance=done)  # type: ignore[arg-type]

        yield update


def prepare_seed(cluster: Cluster, node: Node, target: FlashTarget, family: OsFamily) -> None:
    """The node's first-boot files for an image of OS ``family``, and the host keys they
    carry (pinned once written)."""
    from pikube.cloudinit import new_instance_id, read_public_key, render_seed
    from pikube.hostkeys import ensure_host_keys

    state_dir = Path(str(cluster.state_dir))
    target.keys = ensure_host_keys(state_dir, node.name)
    target.files = render_seed(
        cluster,
        node,
        host_keys=target.keys,
        public_key=read_public_key(cluster),
        instance_id=new_instance_id(node.name),
        family=family,
    )


@click.command()
@cluster_option
@click.argument("nodes", nargs=-1, required=True, shell_complete=complete_node_name)
@click.option("--device", "devices", multiple=True, help="SD card block device (repeatable).")
@click.option(
    "--output",
    "outputs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Write an image file instead of a card (repeatable).",
)
@click.option("--image", "image_ref", help="Catalog id or .img.xz file (default: cluster.image).")
@catalog_option
@cache_dir_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask before overwriting a device.")
@click.option(
    "--force",
    is_flag=True,
    help="Replace an existing --output file (once the new image is complete and verified).",
)
@click.option(
    "--allow-non-removable",
    is_flag=True,
    help="Allow devices the kernel does not call removable (e.g. some built-in readers).",
)
@click.option("--no-verify", is_flag=True, help="Skip reading the card back after writing.")
@click.option("--parallel", is_flag=True, help="Write all targets at the same time.")
@click.option("--sys-root", type=click.Path(path_type=Path), default="/sys", hidden=True)
@click.option("--proc-root", type=click.Path(path_type=Path), default="/proc", hidden=True)
def flash(
    cluster_file: Path,
    nodes: tuple[str, ...],
    devices: tuple[str, ...],
    outputs: tuple[Path, ...],
    image_ref: str | None,
    catalog_file: Path | None,
    cache_dir: Path | None,
    yes: bool,
    force: bool,
    allow_non_removable: bool,
    no_verify: bool,
    parallel: bool,
    sys_root: Path,
    proc_root: Path,
) -> None:
    """Write the OS image and each NODE's first-boot config (hostname, static address, user,
    SSH key, host keys, cgroup flags) to an SD card or an image file.

    NODE names pair with --device (or --output) values in order:

      pikube flash pi-w1 pi-w2 --device /dev/sdb --device /dev/sdc --parallel
    """
    from pikube.image.flash import interrupt_on_signals, tune_malloc
    from pikube.invoker import adopt_invoker_home

    tune_malloc()  # before any thread starts
    adopt_invoker_home()  # under sudo, `~` is the user's, not root's
    with interrupt_on_signals():  # kill and hang-up stop a flash as Ctrl-C does
        _flash(
            cluster_file,
            nodes,
            devices,
            outputs,
            image_ref=image_ref,
            catalog_file=catalog_file,
            cache_dir=cache_dir,
            yes=yes,
            force=force,
            allow_non_removable=allow_non_removable,
            verify=not no_verify,
            parallel=parallel,
            sys_root=sys_root,
            proc_root=proc_root,
        )


def _flash(
    cluster_file: Path,
    nodes: tuple[str, ...],
    devices: tuple[str, ...],
    outputs: tuple[Path, ...],
    *,
    image_ref: str | None,
    catalog_file: Path | None,
    cache_dir: Path | None,
    yes: bool,
    force: bool,
    allow_non_removable: bool,
    verify: bool,
    parallel: bool,
    sys_root: Path,
    proc_root: Path,
) -> None:
    from pikube.hostkeys import read_known_hosts
    from pikube.image.device import check_device, human_size, probe_device
    from pikube.image.flash import check_image, check_tools
    from pikube.image.output import check_output_path, target_identity
    from pikube.image.session import FlashTarget, failure, flash_targets, incomplete_notes
    from pikube.image.xz import image_size

    if bool(devices) == bool(outputs):
        raise click.UsageError("give either --device or --output (one per NODE)")
    paths = list(devices) if devices else [str(p) for p in outputs]
    if len(paths) != len(nodes):
        raise click.UsageError(
            f"{len(nodes)} node(s) but {len(paths)} target(s): pass one --device/--output per "
            "NODE, in the same order"
        )
    # One file or device has many spellings (./a.img, /abs/a.img, /dev/disk/by-id/...).
    if len({target_identity(p) for p in paths}) != len(paths) or len(set(nodes)) != len(nodes):
        raise click.UsageError("each node and each target may appear only once")
    check_tools()  # a missing tool found after writing would leave half a card
    cluster = load(cluster_file)
    targets: list[FlashTarget] = []
    for name, path in zip(nodes, paths, strict=True):
        try:
            cluster.node(name)
        except KeyError:
            known = ", ".join(n.name for n in cluster.nodes)
            raise click.UsageError(f"no node {name!r} in {cluster_file} (nodes: {known})") from None
        targets.append(FlashTarget(name=name, path=path, is_device=bool(devices)))

    # Every safety check, for every target, before anything is written.
    image, layout, image_label, family = resolve_image(image_ref, cluster, catalog_file, cache_dir)
    size = image_size(image)
    check_image(image, layout, size)  # a gzip file or any non-image never reaches a card
    for target in targets:
        if target.is_device:
            device = probe_device(target.path, sys_root=sys_root, proc_root=proc_root)
            check_device(device, image_size=size, allow_non_removable=allow_non_removable)
            target.description = device.describe()
        else:
            check_output_path(Path(target.path), source=image, force=force)
            target.description = f"{target.path} (image file)"
    read_known_hosts(Path(str(cluster.ssh.known_hosts)))  # the keys can be pinned afterwards
    info(f"image: {image_label}, {human_size(size)} uncompressed")
    for target in targets:
        info(f"  {target.name} ({cluster.node(target.name).ip}) -> {target.description}")
    if any(t.is_device for t in targets) and not yes:
        _confirm()

    # First-boot files before writing, so a missing key cannot leave half a card.
    for target in targets:
        prepare_seed(cluster, cluster.node(target.name), target, family)
    with flash_progress() as update:
        flash_targets(
            targets,
            image,
            layout,
            size,
            verify=verify,
            parallel=parallel,
            force=force,
            progress=update,
            on_start=_started,
        )
    # Cards that were written completely are finished even when another one failed.
    _pin_and_report(cluster, [t for t in targets if t.report is not None])
    error = failure(targets)
    if error is not None:
        for note in incomplete_notes(targets):
            info(note)
        raise error


def _confirm() -> None:
    try:
        confirmed = click.confirm(
            "ALL DATA on the device(s) above will be overwritten. Continue?",
            default=False,
            err=True,
        )
    except click.Abort:
        confirmed = False
    if not confirmed:
        raise FlashRefused(
            "not confirmed: nothing was written",
            where="--device",
            fix="check the devices listed above, then answer y (or pass --yes in scripts)",
        )


def _started(target: FlashTarget) -> None:
    if not sys.stderr.isatty():  # on a terminal, the progress bar says it
        info(f"{target.name}: writing {target.path} ...")


def _pin_and_report(cluster: Cluster, targets: list[FlashTarget]) -> None:
    from pikube.hostkeys import node_known_hosts, pin_known_hosts
    from pikube.image.device import human_size

    known_hosts = Path(str(cluster.ssh.known_hosts))
    for target in targets:
        report = target.report
        assert report is not None  # noqa: S101 - only complete targets are passed
        # The card now carries these keys: any other key pinned for the node is stale.
        ip = str(cluster.node(target.name).ip)
        pin_known_hosts(known_hosts, node_known_hosts(target.name, ip, target.keys), replace=True)
        rate = report.image_size / report.seconds / (1 << 20) if report.seconds else 0
        info(
            f"{target.name} -> {target.path}: wrote {human_size(report.written)} of "
            f"{human_size(report.image_size)} ({human_size(report.skipped)} of unmapped zeros "
            f"skipped), {'verified' if report.verified else 'NOT verified (--no-verify)'}, "
            f"{report.seconds:.1f} s ({rate:.0f} MiB/s)"
        )
        info(f"  {report.block_map}")
        info(f"  first boot: {', '.join(report.boot_files)}; cmdline: {report.cmdline}")
    if targets:
        info(f"host keys added to {known_hosts}")
