"""Write an image stream to a card (or an image file), then read it back and compare.

The pipeline (DESIGN.md "Flashing is a pipeline"): the image is decompressed in other
threads (``pikube.image.xz``: several xz blocks at once, or one reader thread with a short
queue, as bmaptool's) into 1 MiB chunks; the writer looks at every 64 KiB segment and
writes it unless it is all zeros *and* unmapped in the block map, coalescing the rest into
large aligned ``pwrite`` calls.
``fdatasync`` runs every 256 MiB (so the kernel never holds gigabytes of dirty pages and
Ctrl-C loses little) and at the end. A CRC-32 of every written run is kept (a few KB for a
whole card), so the read-back check needs no second decompression.

**An interrupted card never looks bootable.** Before any image data is written, the first
4 KiB of the target (the MBR partition table and a possible GPT header) are overwritten with
zeros and synced. The image's own first 4 KiB are held back in memory and written *last*
(:func:`finish_image`), after the rest of the image, the read-back check and the first-boot
files. A card interrupted at any earlier point has no partition table: the Pi's boot ROM
finds no FAT partition and every OS shows it as an empty, unpartitioned disk. The CLI says
so and asks to run ``pikube flash`` again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import stat
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, cast

from pikube.errors import ImageVerifyError
from pikube.image.blockmap import BlockMap, NoMap

CHUNK = 1 << 20
SEGMENT = 64 << 10
HEAD = 4096  # held back and written last
SYNC_EVERY = 256 << 20
QUEUE_DEPTH = 4  # chunks in flight between a reader thread and the writer

ZERO_SEGMENT = bytes(SEGMENT)

Progress = Callable[[int], None]  # called with the number of image bytes just processed


@dataclass
class WriteResult:
    image_size: int = 0  # bytes of image processed
    written: int = 0  # bytes actually written to the target (head included)
    skipped: int = 0  # zero bytes in unmapped ranges, not written
    runs: list[tuple[int, int, int]] = field(default_factory=list)  # (offset, length, crc32)
    head: bytes = b""  # the image's first bytes, written last by finish_image()
    map_description: str = ""


def threaded_chunks(chunks: Iterable[bytes], depth: int = QUEUE_DEPTH) -> Iterator[bytes]:
    """Produce ``chunks`` in a reader thread through a bounded queue (memory: ``depth`` chunks).

    Decompression (liblzma releases the GIL) then overlaps with writing and hashing.
    Errors in the reader are re-raised in the consumer; stopping early stops the reader.
    """
    q: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def run() -> None:
        try:
            for chunk in chunks:
                while not stop.is_set():
                    try:
                        q.put(("data", chunk), timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("end", None))
        except BaseException as err:
            q.put(("error", err))

    thread = threading.Thread(target=run, name="pikube-image-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "data":
                yield cast(bytes, value)
            elif kind == "error":
                raise cast(BaseException, value)
            else:
                return
    finally:
        stop.set()
        while thread.is_alive():  # unblock a reader waiting on a full queue
            with contextlib.suppress(queue.Empty):
                q.get_nowait()
            thread.join(0.1)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        done = os.pwrite(fd, data, offset)
        data = data[done:]
        offset += done


def is_block_device(target: BinaryIO) -> bool:
    return stat.S_ISBLK(os.fstat(target.fileno()).st_mode)


def write_image(
    chunks: Iterable[bytes],
    target: BinaryIO,
    *,
    size: int,
    block_map: BlockMap | None = None,
    sparse_target: bool = False,
    progress: Progress | None = None,
    sync_every: int = SYNC_EVERY,
) -> WriteResult:
    """Write the image ``chunks`` (``CHUNK`` bytes each, the last shorter) to ``target``.

    ``size`` is the image's uncompressed size; a stream that ends early or runs long raises
    ``ImageVerifyError``. ``sparse_target`` means ``target`` was just truncated to hold
    zeros (a new image file): then every zero segment is skipped, leaving holes. The first
    ``HEAD`` bytes are not written here: see :func:`finish_image`.
    """
    block_map = block_map or NoMap()
    fd = target.fileno()
    result = WriteResult()
    if not sparse_target:
        clear_head(target)  # the old partition table goes first
    if progress:
        progress(0)  # writing has begun: from here on the target is incomplete until the end
    since_sync = 0
    offset = 0
    for chunk in chunks:
        length = len(chunk)
        if offset + length > size:
            raise ImageVerifyError(
                f"the image is longer than its recorded size ({size} bytes)",
                fix="the image file is damaged: fetch it again",
            )
        block_map.feed(offset, chunk)
        view = memoryview(chunk)
        run_start = -1
        pos = HEAD if offset == 0 else 0
        if offset == 0:
            result.head = bytes(chunk[:HEAD])
        while pos < length:
            seg_end = min(pos + SEGMENT, length)
            zero = (
                chunk.startswith(ZERO_SEGMENT, pos)
                if seg_end - pos == SEGMENT
                else chunk.count(0, pos, seg_end) == seg_end - pos
            )
            skip = zero and (sparse_target or block_map.skippable(offset + pos, offset + seg_end))
            if skip:
                if run_start >= 0:
                    since_sync += _write_run(fd, view, offset, run_start, pos, result)
                    run_start = -1
                result.skipped += seg_end - pos
            elif run_start < 0:
                run_start = pos
            pos = seg_end
        if run_start >= 0:
            since_sync += _write_run(fd, view, offset, run_start, length, result)
        offset += length
        if since_sync >= sync_every:
            os.fdatasync(fd)
            since_sync = 0
        if progress:
            progress(length)
    if offset != size:
        raise ImageVerifyError(
            f"the image stream ended after {offset} of {size} bytes",
            fix="the image file is truncated or damaged: fetch it again",
        )
    check = getattr(block_map, "check_complete", None)
    if check:
        check()
    os.fsync(fd)
    result.image_size = offset
    result.map_description = block_map.describe()
    return result


def _write_run(
    fd: int, view: memoryview, base: int, start: int, end: int, result: WriteResult
) -> int:
    data = view[start:end]
    _pwrite_all(fd, data, base + start)
    result.runs.append((base + start, end - start, zlib.crc32(data)))
    result.written += end - start
    return end - start


def finish_image(target: BinaryIO, result: WriteResult) -> None:
    """Write the held-back first bytes (the partition table) and sync: the card is complete."""
    fd = target.fileno()
    if result.head:
        _pwrite_all(fd, memoryview(result.head), 0)
        result.written += len(result.head)
    os.fsync(fd)


def clear_head(target: BinaryIO) -> None:
    """Overwrite the first bytes (partition table) with zeros: the card no longer boots."""
    fd = target.fileno()
    _pwrite_all(fd, memoryview(bytes(HEAD)), 0)
    os.fsync(fd)


BLKFLSBUF = 0x1261  # linux/fs.h: write back and drop a block device's buffer cache


def drop_cache(target: BinaryIO) -> None:
    """Make the read-back read the medium: sync, then drop the cached pages.

    For block devices ``BLKFLSBUF`` invalidates the device's page cache (as ``blockdev
    --flushbufs`` does); ``posix_fadvise(DONTNEED)`` covers files and is a fallback.
    """
    fd = target.fileno()
    os.fsync(fd)
    if is_block_device(target):
        with contextlib.suppress(OSError):
            fcntl.ioctl(fd, BLKFLSBUF, 0)
    with contextlib.suppress(OSError):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def verify_image(
    target: BinaryIO,
    result: WriteResult,
    *,
    head: bool = False,
    progress: Progress | None = None,
) -> None:
    """Read back every written run and compare its CRC-32; ``head`` checks the first bytes.

    Raises ``ImageVerifyError`` naming the first differing range.
    """
    fd = target.fileno()
    drop_cache(target)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    runs = [(0, len(result.head), zlib.crc32(result.head))] if head else result.runs
    for offset, length, crc in runs:
        got = 0
        while got < length:
            n = os.preadv(fd, [view[got:length]], offset + got)
            if n == 0:
                break
            got += n
        if got != length or zlib.crc32(view[:length]) != crc:
            raise ImageVerifyError(
                f"read-back verification failed: bytes {offset}-{offset + length - 1} on the "
                "target differ from the image",
                fix="the card (or reader) may be failing: try another card or reader, and "
                "flash again",
            )
        if progress:
            progress(length)
