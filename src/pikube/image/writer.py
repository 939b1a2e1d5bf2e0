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


class Broadcast:
    """Produce ``chunks`` in a reader thread for ``count`` consumers, each through its own
    bounded queue (memory: ``depth`` chunks per consumer). The same bytes objects go to all.

    Decompression (liblzma releases the GIL) then overlaps with writing and hashing; with
    several consumers (``flash --parallel``) the image is decoded once for every card and
    the slowest sets the pace. Errors in the reader are re-raised in every consumer. A
    consumer that stops (``close()``: failed, interrupted) is no longer waited for; when
    none is left the reader stops, and closes ``chunks`` (stopping decoder threads).
    """

    def __init__(self, chunks: Iterable[bytes], count: int, depth: int = QUEUE_DEPTH) -> None:
        self._chunks = chunks
        self._queues: list[queue.Queue[tuple[str, object]]] = [
            queue.Queue(maxsize=depth) for _ in range(count)
        ]
        self._live = [True] * count
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _send(self, k: int, item: tuple[str, object]) -> None:
        while self._live[k]:
            try:
                self._queues[k].put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        try:
            for chunk in self._chunks:
                if not any(self._live):
                    return
                for k in range(len(self._queues)):
                    self._send(k, ("data", chunk))
            for k in range(len(self._queues)):
                self._send(k, ("end", None))
        except BaseException as err:  # handed to every consumer
            for k in range(len(self._queues)):
                self._send(k, ("error", err))
        finally:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()

    def stream(self, k: int) -> BroadcastStream:
        """Consumer ``k``'s iterator; starts the reader thread on first use."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="pikube-image-reader", daemon=True
                )
                self._thread.start()
        return BroadcastStream(self, k)

    def _drop(self, k: int) -> None:
        self._live[k] = False
        with contextlib.suppress(queue.Empty):
            while True:  # unblocks a reader waiting on this full queue
                self._queues[k].get_nowait()

    def join(self) -> None:
        """Stop waiting for any consumer and wait for the reader thread to end."""
        for k in range(len(self._live)):
            self._drop(k)
        if self._thread is not None:
            self._thread.join()


class BroadcastStream:
    """One consumer's iterator over a :class:`Broadcast`; ``close()`` even if never used."""

    def __init__(self, broadcast: Broadcast, k: int) -> None:
        self._broadcast = broadcast
        self._k = k
        self._done = False

    def __iter__(self) -> BroadcastStream:
        return self

    def __next__(self) -> bytes:
        if self._done:
            raise StopIteration
        kind, value = self._broadcast._queues[self._k].get()
        if kind == "data":
            return cast(bytes, value)
        self.close()
        if kind == "error":
            raise cast(BaseException, value)
        raise StopIteration

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._broadcast._drop(self._k)


def threaded_chunks(chunks: Iterable[bytes], depth: int = QUEUE_DEPTH) -> Iterator[bytes]:
    """Produce ``chunks`` in a reader thread through one bounded queue (a one-consumer
    :class:`Broadcast`); stopping early stops and joins the reader."""
    broadcast = Broadcast(chunks, 1, depth)
    try:
        yield from broadcast.stream(0)
    finally:
        broadcast.join()


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
