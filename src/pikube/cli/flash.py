"""``pikube flash NODE... --device DEV | --output FILE``: SD cards with first-boot config.

Every safety check for every target runs before the first byte is written: block device,
whole disk, removable (or --allow-non-removable), not mounted, not swap, not the running
system, large enough, confirmed (or --yes), opened exclusively. Each NODE pairs with the
--device/--output at the same position.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import click

from pikube.cli.common import cluster_option, info, load
from pikube.cli.image import cache_dir_option, catalog_option, resolve_cache_dir
from pikube.errors import EXIT_INTERRUPTED, FlashRefused, PikubeError

if TYPE_CHECKING:
    from pikube.config.model import Cluster, Node
    from pikube.hostkeys import HostKey
    from pikube.image.catalog import BootLayout
    from pikube.image.flash import FlashReport
    from pikube.image.output import OutputFile


class FlashInterrupted(PikubeError):
    exit_code = EXIT_INTERRUPTED


@dataclass
class Target:
    node: Node
    path: str  # what the user passed
    is_device: bool
    description: str = ""
    handle: BinaryIO | None = None
    write_path: str = ""  # the device, or the temporary file next to --output
    output: OutputFile | None = None  # --output: locked name + its temporary file
    files: dict[str, str] = field(default_factory=dict)
    keys: list[HostKey] = field(default_factory=list)  # the host keys on this card
    report: FlashReport | None = None
    error: BaseException | None = None
    started: bool = False


def resolve_image(
    image_ref: str | None, cluster: Cluster, catalog_file: Path | None, cache_dir: Path | None
) -> tuple[Path, BootLayout, str]:
    """(image file, boot layout, label for people) for --image ID|PATH or cluster.image."""
    from pikube.cli.image import byte_progress
    from pikube.image.catalog import BootLayout, find_image, load_catalog
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
                return as_path, entry.boot, f"{as_path} ({entry.id})"
        return as_path, BootLayout(label=""), str(as_path)
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
    return cached.path, entry.boot, entry.id


@contextmanager
def flash_progress(targets: list[Target]) -> Iterator[Callable[[Target, str, int, int], None]]:
    """Per-target progress bars with throughput and ETA on a terminal (stderr)."""
    if not sys.stderr.isatty():
        yield lambda target, phase, done, total: None
        return
    from pikube.cli.image import bytes_bar

    with bytes_bar() as bar:
        tasks: dict[tuple[str, str], object] = {}
        lock = threading.Lock()

        def update(target: Target, phase: str, done: int, total: int) -> None:
            with lock:
                key = (target.write_path, phase)
                if key not in tasks:
                    tasks[key] = bar.add_task(f"{target.node.name} {phase}", total=total)
                bar.update(tasks[key], advance=done)  # type: ignore[arg-type]

        yield update


def prepare_seed(cluster: Cluster, target: Target) -> None:
    """The node's first-boot files, and the host keys they carry (pinned once written)."""
    from pikube.cloudinit import new_instance_id, read_public_key, render_seed
    from pikube.hostkeys import ensure_host_keys

    state_dir = Path(str(cluster.state_dir))
    target.keys = ensure_host_keys(state_dir, target.node.name)
    target.files = render_seed(
        cluster,
        target.node,
        host_keys=target.keys,
        public_key=read_public_key(cluster),
        instance_id=new_instance_id(target.node.name),
    )


@click.command()
@cluster_option
@click.argument("nodes", nargs=-1, required=True)
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
    from pikube.image.device import check_device, human_size, probe_device
    from pikube.image.flash import check_image, check_tools
    from pikube.image.output import check_output_path, target_identity
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
    targets: list[Target] = []
    for name, path in zip(nodes, paths, strict=True):
        try:
            node = cluster.node(name)
        except KeyError:
            known = ", ".join(n.name for n in cluster.nodes)
            raise click.UsageError(f"no node {name!r} in {cluster_file} (nodes: {known})") from None
        targets.append(Target(node=node, path=path, is_device=bool(devices)))

    # Every safety check, for every target, before anything is written.
    image, layout, image_label = resolve_image(image_ref, cluster, catalog_file, cache_dir)
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
    info(f"image: {image_label}, {human_size(size)} uncompressed")
    for target in targets:
        info(f"  {target.node.name} ({target.node.ip}) -> {target.description}")
    if any(t.is_device for t in targets) and not yes:
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

    # First-boot files before writing, so a missing key or tool cannot leave half a card.
    for target in targets:
        prepare_seed(cluster, target)
    opened: list[Target] = []
    try:
        for target in targets:
            _open_target(target, size, force=force)
            opened.append(target)
        _run(targets, image, layout, verify=verify, parallel=parallel)
        # Cards that were written completely are finished even when another one failed.
        _finish(cluster, [t for t in targets if t.report is not None])
    finally:
        for target in opened:
            if target.output is not None:
                target.output.close()  # removes the partial file unless committed
            elif target.handle:
                target.handle.close()
    _raise_failures(targets)


def _open_target(target: Target, size: int, *, force: bool) -> None:
    from pikube.image.device import open_exclusive
    from pikube.image.output import open_output

    if target.is_device:
        fd = open_exclusive(target.path)
        target.write_path = target.path
        target.handle = os.fdopen(fd, "r+b", buffering=0)
        return
    target.output = open_output(Path(target.path), size, force=force)
    target.write_path = str(target.output.partial)
    target.handle = target.output.handle


def _run(
    targets: list[Target], image: Path, layout: BootLayout, *, verify: bool, parallel: bool
) -> None:
    from pikube.image.flash import flash_image, shared_chunks

    cancel = threading.Event()
    # In parallel, the image is decoded once and the same chunks go to every card.
    shared = shared_chunks(image, len(targets)) if parallel and len(targets) > 1 else None

    with flash_progress(targets) as update:

        def work(target: Target, index: int) -> None:
            def progress(phase: str, done: int, total: int) -> None:
                if not target.started:  # the first call comes once writing has begun
                    target.started = True
                    if not sys.stderr.isatty():
                        info(f"{target.node.name}: writing {target.path} ...")
                if cancel.is_set():
                    raise FlashInterrupted("interrupted")
                update(target, phase, done, total)

            assert target.handle is not None  # noqa: S101 - opened by _open_target
            stream = None if shared is None else shared.stream(index)
            try:
                target.report = flash_image(
                    image,
                    target.handle,
                    target.write_path,
                    sparse_target=not target.is_device,
                    layout=layout,
                    boot_files=target.files,
                    verify=verify,
                    progress=progress,
                    chunks=stream,
                )
            except BaseException as err:  # reported per target below
                target.error = err
            finally:
                if stream is not None:
                    stream.close()  # the other cards no longer wait for this one

        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=len(targets) if parallel else 1, thread_name_prefix="pikube-flash"
        )
        futures: list[concurrent.futures.Future[None]] = []
        try:
            for index, target in enumerate(targets):
                futures.append(pool.submit(work, target, index))
            while not all(f.done() for f in futures):
                concurrent.futures.wait(futures, timeout=0.2)
        except KeyboardInterrupt:
            cancel.set()  # each writer stops at its next chunk
            for future in futures:
                future.cancel()
            while not all(f.done() for f in futures):
                with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: still wait
                    concurrent.futures.wait(futures, timeout=0.2)
            for target in targets:
                if target.report is None and target.error is None:
                    target.error = KeyboardInterrupt()
        finally:
            pool.shutdown(wait=True)
            if shared is not None:
                shared.join()


def _raise_failures(targets: list[Target]) -> None:
    failed = [t for t in targets if t.error is not None]
    if failed:
        _report_incomplete(targets)
        first = failed[0].error
        if isinstance(first, KeyboardInterrupt):
            raise FlashInterrupted("interrupted", fix="run the same pikube flash command again")
        if isinstance(first, PikubeError):
            raise first
        raise PikubeError(f"flashing {failed[0].path} failed: {first}") from first


def _report_incomplete(targets: list[Target]) -> None:
    for target in targets:
        if target.report is not None:
            continue
        if not target.started:
            info(f"{target.node.name}: {target.path} was not touched")
        elif target.is_device:
            reason = target.error.render() if isinstance(target.error, PikubeError) else "stopped"
            info(
                f"{target.node.name}: {target.path} is INCOMPLETE ({reason.splitlines()[0]}): "
                "its partition table was cleared first and is written last, so it will not "
                "boot or mount; flash it again"
            )
        else:
            info(f"{target.node.name}: {target.path} was not written (partial file removed)")


def _finish(cluster: Cluster, targets: list[Target]) -> None:
    from pikube.hostkeys import node_known_hosts, pin_known_hosts
    from pikube.image.device import human_size

    known_hosts = Path(str(cluster.ssh.known_hosts))
    for target in targets:
        report = target.report
        assert report is not None  # noqa: S101 - _run raised otherwise
        if target.output is not None:
            target.output.commit()
        # The card now carries these keys: any other key pinned for the node is stale.
        pin_known_hosts(
            known_hosts,
            node_known_hosts(target.node.name, str(target.node.ip), target.keys),
            replace=True,
        )
        rate = report.image_size / report.seconds / (1 << 20) if report.seconds else 0
        info(
            f"{target.node.name} -> {target.path}: wrote {human_size(report.written)} of "
            f"{human_size(report.image_size)} ({human_size(report.skipped)} of unmapped zeros "
            f"skipped), {'verified' if report.verified else 'NOT verified (--no-verify)'}, "
            f"{report.seconds:.1f} s ({rate:.0f} MiB/s)"
        )
        info(f"  {report.block_map}")
        info(f"  first boot: {', '.join(report.boot_files)}; cmdline: {report.cmdline}")
    if targets:
        info(f"host keys added to {known_hosts}")
