"""One flash, start to finish: image -> target -> read-back -> first-boot files -> MBR.

The CLI opens the target and runs the safety checks (``pikube.image.device``) first; this
module only ever sees an open file object. Order of writes on the target (see
``pikube.image.writer`` for why): clear the first 4 KiB; the image except its first 4 KiB;
sync; read back and compare; cloud-init seed and cmdline.txt into the FAT partition (read
back and compared, too); finally the first 4 KiB (the partition table); sync; read back.
"""

from __future__ import annotations

import ctypes
import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pikube.errors import ImageVerifyError
from pikube.image.blockmap import BlockMap, BmapMap, StreamMap, bmap_path_for, parse_bmap
from pikube.image.bootfs import (
    edit_cmdline,
    locate_boot_partition,
    read_boot_file,
    write_boot_files,
)
from pikube.image.catalog import BootLayout
from pikube.image.writer import (
    CHUNK,
    clear_head,
    finish_image,
    threaded_chunks,
    verify_image,
    write_image,
)
from pikube.image.xz import image_size, is_xz, iter_decompressed_parallel, iter_raw

# (phase, bytes just done, phase total): phases "write", "verify"
PhaseProgress = Callable[[str, int, int], None]


@dataclass
class FlashReport:
    target: str
    image_size: int
    written: int
    skipped: int
    verified: bool
    block_map: str
    boot_files: list[str]
    cmdline: str
    seconds: float


M_ARENA_MAX = -8  # glibc malloc.h


@functools.cache
def limit_malloc_arenas() -> bool:
    """One malloc arena for all threads, so freed 4 MiB chunks are reused, not scattered.

    With glibc's default (an arena per thread, up to 8 per core) the decoder, reader and
    writer threads each keep their own freed chunks: peak memory of a 2 GiB flash grew from
    ~83 MB to ~112 MB (interpreter included, measured). Call it before starting threads;
    a no-op where mallopt does not exist.
    """
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_ARENA_MAX, 1))
    except (OSError, AttributeError):
        return False


def image_chunks(image: Path) -> Iterator[bytes]:
    """The decompressed image in ``CHUNK`` pieces, produced by a reader thread.

    Multi-block xz files (``xz -T``) decode several blocks at once on several cores.
    """

    limit_malloc_arenas()

    def produce() -> Iterator[bytes]:
        if is_xz(image):
            yield from iter_decompressed_parallel(image, CHUNK)
        else:
            with image.open("rb") as handle:
                yield from iter_raw(handle, CHUNK)

    return threaded_chunks(produce())


def block_map_for(image: Path, size: int) -> BlockMap:
    """The image's ``.bmap`` when there is one next to it, else one computed while streaming."""
    bmap_file = bmap_path_for(image)
    if bmap_file is None:
        return StreamMap(size)
    bmap = parse_bmap(bmap_file)
    if bmap.image_size != size:
        raise ImageVerifyError(
            f"{bmap_file} describes a {bmap.image_size}-byte image, but {image} holds {size} bytes",
            where=str(bmap_file),
            fix="remove the .bmap file or fetch the matching one",
        )
    return BmapMap(bmap, source=str(bmap_file))


def flash_image(
    image: Path,
    target: BinaryIO,
    target_path: str,
    *,
    sparse_target: bool,
    layout: BootLayout,
    boot_files: dict[str, str] | None,
    verify: bool = True,
    progress: PhaseProgress | None = None,
) -> FlashReport:
    """Write ``image`` to the open ``target`` and its first-boot files; see module docs."""
    started = time.monotonic()
    size = image_size(image)

    def phase(name: str, total: int) -> Callable[[int], None] | None:
        if progress is None:
            return None
        return lambda done: progress(name, done, total)

    result = write_image(
        image_chunks(image),
        target,
        size=size,
        block_map=block_map_for(image, size),
        sparse_target=sparse_target,
        progress=phase("write", size),
    )
    if verify:
        verify_image(target, result, progress=phase("verify", result.written))
    written_files: list[str] = []
    cmdline = ""
    if boot_files is not None:
        part = locate_boot_partition(target_path, result.head, layout)
        write_boot_files(part, dict(boot_files), layout.seed_dir)
        cmdline = edit_cmdline(part, layout)
        prefix = f"{layout.seed_dir}/" if layout.seed_dir else ""
        for name, content in boot_files.items():
            if read_boot_file(part, prefix + name) != content.encode():
                raise ImageVerifyError(
                    f"{name} read back from the boot partition differs from what was written",
                    where=f"{target_path} partition {layout.partition}",
                    fix="the card may be failing; flash again or use another card",
                )
            written_files.append(prefix + name)
    finish_image(target, result)
    if verify:
        try:
            verify_image(target, result, head=True)
        except ImageVerifyError:
            clear_head(target)  # a card that failed verification must not look bootable
            raise
    return FlashReport(
        target=target_path,
        image_size=size,
        written=result.written,
        skipped=result.skipped,
        verified=verify,
        block_map=result.map_description,
        boot_files=written_files,
        cmdline=cmdline,
        seconds=time.monotonic() - started,
    )
