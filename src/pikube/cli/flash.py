"""``pikube flash NODE... --device DEV | --output FILE``: SD cards with first-boot config.

Each NODE pairs with the --device/--output at the same position. This module parses,
confirms and prints; every check, the seeds, the writing and the pinning are
``pikube.image.cards``'s (and its order of checks is documented there).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pikube.cli.common import F, cluster_option, complete_node_name, info, load
from pikube.cli.image import cache_dir_option, catalog_option, resolve_cache_dir
from pikube.errors import FlashRefused

if TYPE_CHECKING:
    from pikube.config.model import Cluster
    from pikube.image.cards import ImageSource
    from pikube.image.session import FlashTarget


def resolve_image(
    image_ref: str | None, cluster: Cluster, catalog_file: Path | None, cache_dir: Path | None
) -> ImageSource:
    """The checked image for --image ID|PATH or cluster.image (fetched with a progress bar)."""
    from pikube.cli.image import byte_progress
    from pikube.image import cards

    image = cards.resolve_image(
        image_ref, cluster, catalog_file, resolve_cache_dir(cache_dir), progress=byte_progress
    )
    if image.downloaded:
        info(f"downloaded and verified {image.label}")
    return image


@contextmanager
def flash_progress() -> Iterator[Callable[[FlashTarget, str, int, int], None]]:
    """Per-target progress bars with throughput and ETA on a terminal (stderr)."""
    if not sys.stderr.isatty():
        yield lambda target, phase, done, total: None
        return
    from pikube.cli.image import bytes_bar

    with bytes_bar() as bar:
        tasks: dict[tuple[str, str], object] = {}
        lock = threading.Lock()  # writers report from their own threads

        def update(target: FlashTarget, phase: str, done: int, total: int) -> None:
            with lock:
                key = (target.write_path, phase)
                if key not in tasks:
                    tasks[key] = bar.add_task(f"{target.name} {phase}", total=total)
                bar.update(tasks[key], advance=done)  # type: ignore[arg-type]

        yield update


def image_options(func: F) -> F:
    """--image, --catalog and --cache-dir: the image a card gets (flash and build)."""
    func = cache_dir_option(func)
    func = catalog_option(func)
    return click.option(
        "--image", "image_ref", help="Catalog id or .img.xz file (default: cluster.image)."
    )(func)


def card_options(func: F) -> F:
    """How cards are checked and written (flash and build): --allow-non-removable,
    --no-verify, and the hidden roots the tests point at a fake sysfs/procfs."""
    func = click.option(
        "--proc-root", type=click.Path(path_type=Path), default="/proc", hidden=True
    )(func)
    func = click.option("--sys-root", type=click.Path(path_type=Path), default="/sys", hidden=True)(
        func
    )
    func = click.option(
        "--no-verify", is_flag=True, help="Skip reading each card back after writing."
    )(func)
    return click.option(
        "--allow-non-removable",
        is_flag=True,
        help="Also use devices the kernel does not call removable (e.g. some built-in readers).",
    )(func)


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
@image_options
@click.option("--yes", "-y", is_flag=True, help="Do not ask before overwriting a device.")
@click.option(
    "--force",
    is_flag=True,
    help="Replace an existing --output file (once the new image is complete and verified).",
)
@card_options
@click.option("--parallel", is_flag=True, help="Write all targets at the same time.")
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
    from pikube.image.cards import (
        FlashOptions,
        check_known_hosts,
        check_target,
        describe_report,
        flash_session,
        write_cards,
    )
    from pikube.image.device import human_size
    from pikube.image.flash import check_tools
    from pikube.image.output import target_identity
    from pikube.image.session import FlashTarget

    options = FlashOptions(
        verify=not no_verify,
        parallel=parallel,
        force=force,
        allow_non_removable=allow_non_removable,
        sys_root=sys_root,
        proc_root=proc_root,
    )
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
    with flash_session():
        check_tools()  # a missing tool found after writing would leave half a card
        cluster = load(cluster_file)
        known = {n.name for n in cluster.nodes}
        for name in nodes:
            if name not in known:
                listing = ", ".join(n.name for n in cluster.nodes)
                raise click.UsageError(f"no node {name!r} in {cluster_file} (nodes: {listing})")
        targets = [
            FlashTarget(name=name, path=path, is_device=bool(devices))
            for name, path in zip(nodes, paths, strict=True)
        ]
        # Every safety check, for every target, before anything is written.
        image = resolve_image(image_ref, cluster, catalog_file, cache_dir)
        for target in targets:
            check_target(target, image, options)
        check_known_hosts(cluster)
        info(f"image: {image.label}, {human_size(image.size)} uncompressed")
        for target in targets:
            info(f"  {target.name} ({cluster.node(target.name).ip}) -> {target.description}")
        if devices and not yes:
            confirm_overwrite()
        with flash_progress() as update:
            result = write_cards(
                cluster, targets, image, options, progress=update, on_start=say_started
            )
    # Cards that were written completely are finished even when another one failed.
    for target in result.complete:
        for line in describe_report(target):
            info(line)
    if result.complete:
        info(f"host keys added to {cluster.ssh.known_hosts}")
    if result.error is not None:
        for note in result.notes:
            info(note)
        raise result.error


def confirm_overwrite(
    what: str = "the device(s) above",
    where: str = "--device",
    fix: str = "check the devices listed above, then answer y (or pass --yes in scripts)",
) -> None:
    """One question before devices are overwritten; anything but yes writes nothing."""
    try:
        confirmed = click.confirm(
            f"ALL DATA on {what} will be overwritten. Continue?",
            default=False,
            err=True,
        )
    except click.Abort:
        confirmed = False
    if not confirmed:
        raise FlashRefused(
            "not confirmed: nothing was written",
            where=where,
            fix=fix,
        )


def say_started(target: FlashTarget) -> None:
    if not sys.stderr.isatty():  # on a terminal, the progress bar says it
        info(f"{target.name}: writing {target.path} ...")
