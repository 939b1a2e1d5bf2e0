"""One flash, start to finish: image -> target -> read-back -> first-boot files -> MBR.

The CLI opens the target and runs the safety checks (``pikube.image.device``) first; this
module only ever sees an open file object. Order of writes on the target (see
``pikube.image.writer`` for why): clear the first 4 KiB; the image except its first 4 KiB;
sync; read back and compare; cloud-init seed and cmdline.txt into the FAT partition (read
back and compared, too); finally the first 4 KiB (the partition table); sync; read back.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pikube.errors import FlashRefused, ImageVerifyError, PikubeError
from pikube.image.blockmap import BlockMap, BmapMap, StreamMap, bmap_path_for, parse_bmap
from pikube.image.bootfs import (
    FAT_TYPES,
    edit_cmdline,
    fat_label,
    locate_boot_partition,
    partition_entry,
    read_boot_file,
    write_boot_files,
)
from pikube.image.catalog import BootLayout
from pikube.image.writer import (
    CHUNK,
    Broadcast,
    clear_head,
    finish_image,
    threaded_chunks,
    verify_image,
    write_image,
)
from pikube.image.xz import (
    decode_workers,
    image_size,
    is_xz,
    iter_decompressed,
    iter_decompressed_parallel,
    iter_raw,
    xz_blocks,
)

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


M_MMAP_THRESHOLD = -3  # glibc malloc.h
M_ARENA_MAX = -8
MMAP_THRESHOLD = 512 << 10


@functools.cache
def tune_malloc() -> bool:
    """Keep glibc's heap from holding on to freed image chunks and decoder dictionaries.

    One malloc arena for all threads: with glibc's default (an arena per thread, up to 8
    per core) every decoder and writer thread keeps its own freed chunks (a 2 GiB flash
    peaked at ~112 MB instead of ~83 MB). And a fixed mmap threshold: blocks of 512 KiB and
    more (1 MiB chunks, 8 MiB dictionaries) are mapped on their own and given back when
    freed, instead of glibc raising the threshold and reusing its heap, whose holes pinned
    another 4-10 MiB at random (measured: peak 72-83 MiB -> 68-70 MiB, ~10% slower decode
    on 2 cores). Call it before starting threads; a no-op where mallopt does not exist.
    """
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_ARENA_MAX, 1)) and bool(
            libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        )
    except (OSError, AttributeError):
        return False


def _decoded(image: Path) -> tuple[Iterator[bytes], bool]:
    """The decompressed image in ``CHUNK`` pieces, and whether it decodes in its own threads.

    Multi-block xz files (``xz -T``) decode several blocks at once in their own threads;
    single-block files and raw images are read in the caller's thread.
    """
    if is_xz(image):
        blocks = xz_blocks(image)
        workers = decode_workers(image, blocks)
        if workers > 1:
            return iter_decompressed_parallel(image, CHUNK, workers=workers), True

    def produce() -> Iterator[bytes]:
        with image.open("rb") as handle:
            if is_xz(image):
                yield from iter_decompressed(handle, CHUNK, name=str(image))
            else:
                yield from iter_raw(handle, CHUNK)

    return produce(), False


def image_chunks(image: Path) -> Iterator[bytes]:
    """The decompressed image in ``CHUNK`` pieces, decoded while the caller writes."""
    tune_malloc()
    chunks, threaded = _decoded(image)
    return chunks if threaded else threaded_chunks(chunks)


def shared_chunks(image: Path, cards: int) -> Broadcast:
    """One decode of the image for several cards at once (``flash --parallel``): each card
    reads ``.stream(k)``, two chunks deep, so memory is that of a single flash."""
    tune_malloc()
    return Broadcast(_decoded(image)[0], cards, depth=2)


# Compressed formats people download images in, which pikube does not decode: named in
# the refusal, so a user knows what to do with the file.
FOREIGN_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"PK\x03\x04": "zip",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"BZh": "bzip2",
    b"7z\xbc\xaf\x27\x1c": "7-zip",
}
MBR_SECTOR = 512


def _decoded_range(image: Path, start: int, length: int) -> bytes:
    """Bytes ``start`` to ``start + length`` of the decoded image (fewer if it is shorter),
    decoding from the beginning and keeping only those (memory: one chunk)."""
    pieces: list[bytes] = []
    pos = 0
    end = start + length
    with image.open("rb") as handle:
        chunks = (
            iter_decompressed(handle, CHUNK, name=str(image))
            if is_xz(image)
            else iter_raw(handle, CHUNK)
        )
        for chunk in chunks:
            if pos + len(chunk) > start:
                pieces.append(chunk[max(start - pos, 0) : end - pos])
            pos += len(chunk)
            if pos >= end:
                break
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return b"".join(pieces)


def check_image(image: Path, layout: BootLayout, size: int) -> None:
    """Refuse an image that cannot become a bootable card, before a byte is written.

    Decodes only the start of the image: the MBR (it must be an MBR with the catalog's boot
    partition, a FAT partition inside the image) and that partition's first sector (a FAT
    boot sector, with the label the catalog names). A gzip or zip file, a partial
    download or any other file is refused here with ``FlashRefused`` (exit 4); a malformed
    ``.bmap`` next to the image with ``ConfigError`` (exit 3).
    """

    def refuse(what: str, fix: str) -> FlashRefused:
        return FlashRefused(what, where=f"--image {image}", fix=fix)

    with image.open("rb") as handle:
        magic = handle.read(8)
    for prefix, kind in FOREIGN_MAGIC.items():
        if magic.startswith(prefix):
            raise refuse(
                f"{image.name} is a {kind} file; pikube flashes raw .img and xz-compressed "
                ".img.xz images",
                f"decompress it first (e.g. {kind} -d) and pass the .img, or pick an image "
                "from `pikube image list`",
            )
    mbr = _decoded_range(image, 0, MBR_SECTOR)
    try:
        offset, part_size, ptype = partition_entry(mbr, layout.partition)
    except PikubeError:
        raise refuse(
            f"{image.name} has no MBR partition table: it is not a disk image",
            "pass a Raspberry Pi disk image (.img or .img.xz), e.g. one from `pikube image list`",
        ) from None
    if ptype not in FAT_TYPES or part_size == 0 or offset == 0:
        raise refuse(
            f"partition {layout.partition} of {image.name} is not a FAT partition "
            f"(type 0x{ptype:02x})",
            "pick the image's catalog entry (boot.partition names its FAT boot partition)",
        )
    if offset + part_size > size:
        raise refuse(
            f"partition {layout.partition} of {image.name} ends after the image "
            f"(at byte {offset + part_size} of {size}): the image is damaged or truncated",
            "fetch the image again",
        )
    sector = _decoded_range(image, offset, MBR_SECTOR)
    if len(sector) < MBR_SECTOR or sector[510:512] != b"\x55\xaa":
        raise refuse(
            f"partition {layout.partition} of {image.name} holds no FAT file system",
            "fetch the image again, or pick one from `pikube image list`",
        )
    label = fat_label(sector)
    if layout.label and label.upper() != layout.label.upper():
        raise refuse(
            f"the boot partition of {image.name} is labelled {label!r}, expected {layout.label!r}",
            "the image does not match its catalog entry; check boot.label in the catalog",
        )
    block_map_for(image, size)  # a .bmap next to the image is read and checked now, too


# What a flash runs besides Python, and where it comes from (Debian/Ubuntu package).
FLASH_TOOLS = {
    "mcopy": "mtools",
    "mtype": "mtools",
    "mmd": "mtools",
    "ssh-keygen": "openssh-client",
}


def check_tools() -> None:
    """Refuse to start a flash when a tool it needs is missing (``FlashRefused``): found
    after writing, it would leave half a card."""
    missing = [tool for tool in FLASH_TOOLS if shutil.which(tool) is None]
    if missing:
        packages = sorted({FLASH_TOOLS[tool] for tool in missing})
        raise FlashRefused(
            f"{', '.join(missing)} not found: pikube flash needs "
            f"{' and '.join(packages)} (nothing was written)",
            where="PATH",
            fix=f"install {' '.join(packages)}: sudo apt-get install {' '.join(packages)} "
            "(macOS: brew install mtools; ssh-keygen comes with the system)",
        )


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def interrupt_on_signals(
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGHUP),
) -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP (``kill``, a closed terminal) stop a flash the
    way Ctrl-C does: a ``KeyboardInterrupt`` in the main thread, so writers stop at their
    next chunk, partial files are removed and a card is reported as incomplete. Python's
    default for them is to die at once, leaving both behind without a word."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
    chunks: Iterator[bytes] | None = None,
) -> FlashReport:
    """Write ``image`` to the open ``target`` and its first-boot files; see module docs.

    ``chunks`` is the decoded image when it is shared with other targets (:func:`shared_chunks`).
    """
    started = time.monotonic()
    size = image_size(image)

    def phase(name: str, total: int) -> Callable[[int], None] | None:
        if progress is None:
            return None
        return lambda done: progress(name, done, total)

    stream = image_chunks(image) if chunks is None else chunks
    try:
        result = write_image(
            stream,
            target,
            size=size,
            block_map=block_map_for(image, size),
            sparse_target=sparse_target,
            progress=phase("write", size),
        )
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()  # stops the decoder threads now, even when writing failed
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
