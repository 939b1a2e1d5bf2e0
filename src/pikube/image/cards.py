"""Cards for nodes, start to finish: pick the image, check every target, render each node's
first-boot files, write them all, pin the host keys the complete cards carry.

``pikube flash`` and ``pikube build`` both call this module; they only parse, confirm and
print. Order (each step before the next, so nothing reaches a card unchecked): the tools a
flash needs; the image (its decoded head: MBR and FAT boot partition); every target (block
device: whole disk, removable unless allowed, not mounted, not swap, not the running system,
large enough; or an output file: not the source, not existing unless ``force``); the
known_hosts file (so the keys can be pinned afterwards); then the caller's confirmation;
then the seeds; then the writing (``pikube.image.session``: threads, cancellation, partial
files). Complete cards are pinned even when another one failed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pikube.errors import FlashRefused, PikubeError
from pikube.image.session import FlashTarget, TargetProgress

if TYPE_CHECKING:
    from pikube.config.model import Cluster, Node
    from pikube.image.catalog import BootLayout, OsFamily
    from pikube.image.download import Progress


@dataclass(frozen=True)
class FlashOptions:
    """How every target of one run is checked and written (the user's flags, once)."""

    verify: bool = True
    parallel: bool = False
    force: bool = False  # replace an existing output file
    allow_non_removable: bool = False
    sys_root: Path = Path("/sys")
    proc_root: Path = Path("/proc")


@dataclass(frozen=True)
class ImageSource:
    """The image to write: its file, boot layout, a label for people, decoded size and the
    OS family its first-boot files are written for."""

    path: Path
    layout: BootLayout
    label: str
    size: int
    family: OsFamily
    downloaded: bool = False


@dataclass
class CardsResult:
    """What a run of :func:`write_cards` became: complete targets (pinned) and the rest."""

    complete: list[FlashTarget]
    notes: list[str]  # what became of each incomplete target, for people
    error: PikubeError | None  # the error to exit with (interrupted: exit 130)


@contextlib.contextmanager
def flash_session() -> Iterator[None]:
    """The process settings a flash needs: malloc tuned before any thread starts, the
    sudo invoker's home as ``~``, SIGTERM/SIGHUP stopping writers as Ctrl-C does."""
    from pikube.image.flash import interrupt_on_signals, tune_malloc
    from pikube.invoker import adopt_invoker_home

    tune_malloc()
    adopt_invoker_home()
    with interrupt_on_signals():
        yield


def resolve_image(
    image_ref: str | None,
    cluster: Cluster,
    catalog_file: Path | None,
    cache_dir: Path,
    *,
    progress: Callable[[str], contextlib.AbstractContextManager[Progress]],
) -> ImageSource:
    """``--image ID|PATH`` or the cluster's ``image:``; a catalog image is fetched (once)
    and verified; the decoded image is checked so a non-image never reaches a card.
    A file the catalog does not know gets the OS family of the cluster's ``image:``."""
    from pikube.image.catalog import BootLayout, find_image, image_family, load_catalog
    from pikube.image.download import fetch_image
    from pikube.image.flash import check_image
    from pikube.image.xz import image_size

    catalog = load_catalog(catalog_file)
    ref = image_ref or cluster.image
    as_path = Path(ref).expanduser()
    downloaded = False
    if image_ref and (as_path.is_file() or "/" in ref or ref.endswith((".xz", ".img"))):
        if not as_path.is_file():
            raise PikubeError(
                f"image file {as_path} does not exist",
                where="--image",
                fix="pass an existing .img/.img.xz file or a catalog id (`pikube image list`)",
            )
        # A file from the catalog (e.g. copied by hand) keeps its entry's boot layout.
        known = [e for e in catalog if e.filename == as_path.name]
        path, layout = as_path, known[0].boot if known else BootLayout(label="")
        label = f"{as_path} ({known[0].id})" if known else str(as_path)
        family = known[0].os_family if known else image_family(cluster.image, catalog)
    else:
        entry = find_image(ref, catalog)
        if not entry.sd_card:
            raise FlashRefused(
                f"image {entry.id} is for virtual machines and rehearsals, not SD cards",
                where="--image" if image_ref else "the cluster file's image:",
                fix="choose a Raspberry Pi image (`pikube image list` marks them)",
            )
        with progress(f"fetch {entry.id}") as on_bytes:
            cached = fetch_image(entry, cache_dir, progress=on_bytes)
        path, layout, label, downloaded = cached.path, entry.boot, entry.id, cached.downloaded
        family = entry.os_family
    size = image_size(path)
    check_image(path, layout, size)  # a gzip file or any non-image never reaches a card
    return ImageSource(path, layout, label, size, family, downloaded)


def check_target(target: FlashTarget, image: ImageSource, options: FlashOptions) -> None:
    """Every safety check for one device or output file; sets its description."""
    from pikube.image.device import check_device, probe_device
    from pikube.image.output import check_output_path

    if target.is_device:
        device = probe_device(target.path, sys_root=options.sys_root, proc_root=options.proc_root)
        check_device(device, image_size=image.size, allow_non_removable=options.allow_non_removable)
        target.description = device.describe()
    else:
        check_output_path(Path(target.path), source=image.path, force=options.force)
        target.description = f"{target.path} (image file)"


def check_known_hosts(cluster: Cluster) -> None:
    """The known_hosts file must be readable and valid before a card carries new keys."""
    from pikube.config.known_hosts import read_known_hosts

    read_known_hosts(Path(str(cluster.ssh.known_hosts)))


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


def write_cards(
    cluster: Cluster,
    targets: list[FlashTarget],
    image: ImageSource,
    options: FlashOptions,
    *,
    progress: TargetProgress,
    on_start: Callable[[FlashTarget], None],
) -> CardsResult:
    """Seeds first (a missing key cannot leave half a card), then write every checked
    target; the keys of each complete card replace whatever was pinned for its node."""
    from pikube.image.session import failure, flash_targets, incomplete_notes

    for target in targets:
        prepare_seed(cluster, cluster.node(target.name), target, image.family)
    flash_targets(
        targets,
        image.path,
        image.layout,
        image.size,
        verify=options.verify,
        parallel=options.parallel,
        force=options.force,
        progress=progress,
        on_start=on_start,
    )
    complete = [t for t in targets if t.report is not None]
    pin_host_keys(cluster, complete)
    return CardsResult(complete, incomplete_notes(targets), failure(targets))


def pin_host_keys(cluster: Cluster, targets: list[FlashTarget]) -> None:
    """The cards now carry these keys: any other key pinned for their nodes is stale."""
    from pikube.hostkeys import node_known_hosts, pin_known_hosts

    known_hosts = Path(str(cluster.ssh.known_hosts))
    for target in targets:
        ip = str(cluster.node(target.name).ip)
        pin_known_hosts(known_hosts, node_known_hosts(target.name, ip, target.keys), replace=True)


def describe_report(target: FlashTarget) -> list[str]:
    """What one complete card became, for people (three lines)."""
    from pikube.image.device import human_size

    report = target.report
    if report is None:
        return [f"{target.name} -> {target.path}: not written"]
    rate = report.image_size / report.seconds / (1 << 20) if report.seconds else 0
    return [
        f"{target.name} -> {target.path}: wrote {human_size(report.written)} of "
        f"{human_size(report.image_size)} ({human_size(report.skipped)} of unmapped zeros "
        f"skipped), {'verified' if report.verified else 'NOT verified (--no-verify)'}, "
        f"{report.seconds:.1f} s ({rate:.0f} MiB/s)",
        f"  {report.block_map}",
        f"  first boot: {', '.join(report.boot_files)}; cmdline: {report.cmdline}",
    ]
