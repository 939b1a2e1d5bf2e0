"""Streaming decompression with bounded memory, and the uncompressed size of an ``.xz`` file.

``lzma.LZMADecompressor.decompress(data, max_length)`` returns at most ``max_length`` bytes
and keeps the rest of its input buffered, so memory stays at the decoder's dictionary plus
one chunk (about 40 MB for Ubuntu's images); without ``max_length`` a highly compressible
image (gigabytes of zeros) would balloon to the whole output in memory.
"""

from __future__ import annotations

import collections
import io
import lzma
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from pikube.errors import ImageVerifyError

XZ_MAGIC = b"\xfd7zXZ\x00"
XZ_FOOTER_MAGIC = b"YZ"
READ_SIZE = 256 << 10


def is_xz(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(6) == XZ_MAGIC


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("bad multibyte integer in xz index")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def xz_uncompressed_size(path: Path) -> int:
    """Sum the uncompressed sizes recorded in the index of every stream (like ``xz --list``).

    Reads only the footers and indexes at the end of the file. Raises ``ImageVerifyError``
    when the file is not a complete xz file (e.g. truncated).
    """
    return sum(block.size for block in xz_blocks(path))


def image_size(path: Path) -> int:
    """Uncompressed size of an image file (``.xz`` or raw)."""
    return xz_uncompressed_size(path) if is_xz(path) else path.stat().st_size


def iter_decompressed(source: BinaryIO, chunk_size: int, *, name: str = "image") -> Iterator[bytes]:
    """Yield the decompressed stream in pieces of exactly ``chunk_size`` bytes (the last shorter).

    Handles concatenated xz streams and stream padding. Memory: one input block, one output
    chunk and the decoder's dictionary.
    """

    def corrupt(reason: str) -> ImageVerifyError:
        return ImageVerifyError(
            f"{name} is not a valid xz image: {reason}",
            where=name,
            fix="download the image again with `pikube image fetch`",
        )

    decomp = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    started = False  # the current decoder has been fed input
    streams = 0
    carry = b""
    pending: list[bytes] = []
    pending_len = 0
    while True:
        if carry:
            data, carry = carry, b""
        elif decomp.needs_input or not started:
            data = source.read(READ_SIZE)
            if not data:
                if started:
                    raise corrupt("the file ends in the middle of a stream (truncated)")
                if streams == 0:
                    raise corrupt("the file is empty")
                break
        else:
            data = b""
        if not started:
            data = data.lstrip(b"\0")  # stream padding between concatenated streams
            if not data:
                continue
            started = True
        try:
            out = decomp.decompress(data, max_length=chunk_size - pending_len)
        except lzma.LZMAError as err:
            raise corrupt(str(err)) from None
        if out:
            pending.append(out)
            pending_len += len(out)
            if pending_len == chunk_size:
                yield pending[0] if len(pending) == 1 else b"".join(pending)
                pending, pending_len = [], 0
        if decomp.eof:
            streams += 1
            carry = decomp.unused_data
            decomp = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
            started = False
    if pending:
        yield b"".join(pending)


def iter_raw(source: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    """Yield a raw image in pieces of ``chunk_size`` bytes."""
    while True:
        data = source.read(chunk_size)
        if not data:
            return
        while len(data) < chunk_size:
            more = source.read(chunk_size - len(data))
            if not more:
                break
            data += more
        yield data


# --------------------------------------------------------------------------------------
# Parallel decoding of multi-block files (what `xz -T` writes)


@dataclass(frozen=True)
class XzBlock:
    header: bytes  # the 12-byte stream header of the block's stream
    offset: int  # where the block starts in the file
    unpadded: int  # block header + compressed data + check
    size: int  # uncompressed bytes


def xz_blocks(path: Path) -> list[XzBlock]:
    """Every block of every stream, in file order, from the indexes (raises on damage)."""
    streams: list[list[XzBlock]] = []
    with path.open("rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        try:
            while end > 0:
                # Skip stream padding (multiples of four zero bytes).
                handle.seek(end - 4)
                if handle.read(4) == b"\0\0\0\0":
                    end -= 4
                    continue
                if end < 24:
                    raise ValueError("file too short")
                handle.seek(end - 12)
                footer = handle.read(12)
                if footer[10:12] != XZ_FOOTER_MAGIC:
                    raise ValueError("no xz stream footer")
                backward_size = (struct.unpack("<I", footer[4:8])[0] + 1) * 4
                index_start = end - 12 - backward_size
                handle.seek(index_start)
                index = handle.read(backward_size)
                if index[:1] != b"\0":
                    raise ValueError("no xz index")
                count, pos = _varint(index, 1)
                records = []
                for _ in range(count):
                    unpadded, pos = _varint(index, pos)
                    size, pos = _varint(index, pos)
                    records.append((unpadded, size))
                start = index_start - sum((u + 3) // 4 * 4 for u, _ in records) - 12
                handle.seek(start)
                header = handle.read(12)
                if header[:6] != XZ_MAGIC:
                    raise ValueError("stream header not where the index says")
                blocks, offset = [], start + 12
                for unpadded, size in records:
                    blocks.append(XzBlock(header, offset, unpadded, size))
                    offset += (unpadded + 3) // 4 * 4
                streams.append(blocks)
                end = start
        except (ValueError, OSError, struct.error) as err:
            raise ImageVerifyError(
                f"{path} is not a complete xz file ({err})",
                where=str(path),
                fix="download it again (`pikube image fetch`) or check the file",
            ) from None
    return [block for blocks in reversed(streams) for block in blocks]


def block_dict_size(path: Path, block: XzBlock) -> int:
    """The LZMA2 dictionary size a block needs (its decoder's memory), from its header."""
    with path.open("rb") as handle:
        handle.seek(block.offset)
        first = handle.read(1)
        header = first + handle.read((first[0] + 1) * 4 - 1)
    flags = header[1]
    pos = 2
    if flags & 0x40:
        _, pos = _varint(header, pos)
    if flags & 0x80:
        _, pos = _varint(header, pos)
    size = 0
    for _ in range((flags & 0x03) + 1):
        filter_id, pos = _varint(header, pos)
        props_size, pos = _varint(header, pos)
        props = header[pos : pos + props_size]
        pos += props_size
        if filter_id == 0x21 and props:  # LZMA2
            bits = props[0] & 0x3F
            size = 0xFFFFFFFF if bits >= 40 else (2 | (bits & 1)) << (bits // 2 + 11)
    return size


class _BlockReader(io.RawIOBase):
    """One block as a complete single-block xz stream: header, block, index, footer."""

    def __init__(self, path: Path, block: XzBlock) -> None:
        self._file = path.open("rb")
        self._file.seek(block.offset)
        self._left = (block.unpadded + 3) // 4 * 4
        index = bytearray(b"\0" + _encode_varint(1))
        index += _encode_varint(block.unpadded) + _encode_varint(block.size)
        index += b"\0" * (-len(index) % 4)
        index += struct.pack("<I", zlib.crc32(index))
        flags = block.header[6:8]
        backward = struct.pack("<I", len(index) // 4 - 1)
        footer = struct.pack("<I", zlib.crc32(backward + flags)) + backward + flags + b"YZ"
        self._head = block.header
        self._tail = bytes(index) + footer

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._head:
            data, self._head = self._head, b""
            return data
        if self._left:
            data = self._file.read(min(self._left, READ_SIZE if size < 0 else size))
            if not data:
                raise ImageVerifyError("the xz file ended inside a block (truncated)")
            self._left -= len(data)
            return data
        data, self._tail = self._tail, b""
        return data

    def close(self) -> None:
        self._file.close()
        super().close()


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# Memory of the parallel decoders (the flash pipeline must stay well under 100 MB, interpreter
# included): their dictionaries together (liblzma needs a little more than the dictionary
# itself), and the decoded bytes waiting for the consumer across all of them.
DECODER_BUDGET = 24 << 20
WINDOW = 8 << 20


def decode_workers(path: Path, blocks: list[XzBlock], cpus: int | None = None) -> int:
    """How many blocks to decode at once: CPUs, bounded by the decoders' memory."""
    cpus = cpus or os.cpu_count() or 1
    if len(blocks) < 2 or cpus < 2:
        return 1
    dict_size = max(block_dict_size(path, blocks[0]), 1 << 20)
    return max(1, min(cpus, 4, DECODER_BUDGET // (dict_size + dict_size // 8), len(blocks)))


class _Window:
    """Decoded pieces waiting for the consumer, per block, bounded in bytes across blocks.

    Blocks of zeros (most of a Pi image: the unused rest of its partitions) cost nothing to
    keep: their pieces are all the one shared zero chunk. The block being consumed may
    always hold ``floor`` bytes, and every block one piece, so decoding never deadlocks.
    """

    def __init__(self, budget: int, floor: int) -> None:
        self.cond = threading.Condition()
        self.pieces: dict[int, collections.deque[tuple[str, object, int]]] = {}
        self.held: dict[int, int] = {}
        self.total = 0
        self.current = 0
        self.budget = budget
        self.floor = floor
        self.stopped = False

    def open(self, i: int) -> None:
        with self.cond:
            self.pieces[i] = collections.deque()
            self.held[i] = 0

    def _room(self, i: int, cost: int) -> bool:
        if cost == 0 or not self.pieces[i]:
            return True
        if i == self.current and self.held[i] + cost <= self.floor:
            return True
        return self.total + cost <= self.budget

    def put(self, i: int, kind: str, value: object, cost: int = 0) -> bool:
        """Queue a piece for block ``i``; False when the consumer has stopped."""
        with self.cond:
            while not self.stopped and not self._room(i, cost):
                self.cond.wait()
            if self.stopped:
                return False
            self.pieces[i].append((kind, value, cost))
            self.held[i] += cost
            self.total += cost
            self.cond.notify_all()
            return True

    def get(self, i: int) -> tuple[str, object]:
        with self.cond:
            if self.current != i:
                self.current = i
                self.cond.notify_all()  # block i may now use its floor
            while not self.pieces[i]:
                self.cond.wait()
            kind, value, cost = self.pieces[i].popleft()
            self.held[i] -= cost
            self.total -= cost
            self.cond.notify_all()
            return kind, value

    def close(self, i: int) -> None:
        with self.cond:
            self.total -= self.held.pop(i, 0)
            self.pieces.pop(i, None)
            self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()


def iter_decompressed_parallel(
    path: Path, chunk_size: int, *, workers: int | None = None, window: int | None = None
) -> Iterator[bytes]:
    """Like :func:`iter_decompressed`, decoding up to ``workers`` blocks at once (threads;
    liblzma releases the GIL). Chunks come out in order and re-cut to ``chunk_size``.

    Memory: one dictionary per worker, plus at most ``window`` bytes of decoded data waiting
    (a chunk more per block), and none for runs of zeros. Single-block files fall back to
    the sequential decoder.
    """
    blocks = xz_blocks(path)
    workers = workers or decode_workers(path, blocks)
    if workers < 2 or len(blocks) < 2:
        with path.open("rb") as handle:
            yield from iter_decompressed(handle, chunk_size, name=str(path))
        return
    zero = bytes(chunk_size)
    pending_window = _Window(window or WINDOW, floor=2 * chunk_size)

    def decode(i: int) -> None:
        try:
            with _BlockReader(path, blocks[i]) as reader:
                produced = 0
                for piece in iter_decompressed(reader, chunk_size, name=str(path)):  # type: ignore[arg-type]
                    produced += len(piece)
                    cost = len(piece)
                    if cost == chunk_size and piece == zero:
                        piece, cost = zero, 0  # share the one zero chunk; free this one
                    if not pending_window.put(i, "data", piece, cost):
                        return
            if produced != blocks[i].size:
                raise ImageVerifyError(f"{path}: block {i} has the wrong size", where=str(path))
            pending_window.put(i, "end", None)
        except BaseException as err:  # handed to the consumer
            pending_window.put(i, "error", err)

    threads: dict[int, threading.Thread] = {}

    def start(i: int) -> None:
        if i < len(blocks) and i not in threads:
            pending_window.open(i)
            threads[i] = threading.Thread(target=decode, args=(i,), daemon=True)
            threads[i].start()

    pending: list[bytes] = []
    pending_len = 0
    try:
        for i in range(len(blocks)):
            for ahead in range(i, i + workers):
                start(ahead)
            while True:
                kind, value = pending_window.get(i)
                if kind == "end":
                    break
                if kind == "error":
                    raise cast(BaseException, value)
                piece = cast(bytes, value)
                if not pending and len(piece) == chunk_size:
                    yield piece
                    continue
                pending.append(piece)
                pending_len += len(piece)
                while pending_len >= chunk_size:
                    joined = b"".join(pending)
                    yield joined[:chunk_size]
                    rest = joined[chunk_size:]
                    pending, pending_len = ([rest] if rest else []), len(rest)
            pending_window.close(i)
            threads.pop(i).join()
        if pending:
            yield b"".join(pending)
    finally:
        pending_window.stop()
        for thread in threads.values():
            thread.join()
