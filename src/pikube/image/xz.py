"""Streaming decompression with bounded memory, and the uncompressed size of an ``.xz`` file.

``lzma.LZMADecompressor.decompress(data, max_length)`` returns at most ``max_length`` bytes
and keeps the rest of its input buffered, so memory stays at the decoder's dictionary plus
one chunk (about 40 MB for Ubuntu's images); without ``max_length`` a highly compressible
image (gigabytes of zeros) would balloon to the whole output in memory.
"""

from __future__ import annotations

import lzma
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pikube.errors import ImageVerifyError

XZ_MAGIC = b"\xfd7zXZ\x00"
XZ_FOOTER_MAGIC = b"YZ"
READ_SIZE = 1 << 20


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
    total = 0
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
                unpadded_total = 0
                for _ in range(count):
                    unpadded, pos = _varint(index, pos)
                    size, pos = _varint(index, pos)
                    unpadded_total += (unpadded + 3) // 4 * 4
                    total += size
                end = index_start - unpadded_total - 12  # blocks, then the stream header
                handle.seek(end)
                if handle.read(6) != XZ_MAGIC:
                    raise ValueError("stream header not where the index says")
        except (ValueError, OSError, struct.error) as err:
            raise ImageVerifyError(
                f"{path} is not a complete xz file ({err})",
                where=str(path),
                fix="download it again (`pikube image fetch`) or check the file",
            ) from None
    return total


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
